//! Granule sources: fetch an object's bytes together with what identifies its version (ETag,
//! last-modified, size) from a local directory (`file://` or a path) or an S3 bucket, through
//! object_store. A missing object is its own error kind: for a backfill it is a gap, not a failure.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use imerg_refs::SourceObject;
use object_store::{
    ObjectStore, ObjectStoreExt as _, local::LocalFileSystem, path::Path as ObjPath,
};

/// Why an object could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{url}: object not found")]
    NotFound { url: String },
    #[error("{url}: unsupported source URL ({reason})")]
    Unsupported { url: String, reason: String },
    #[error("{url}: {source}")]
    Store {
        url: String,
        #[source]
        source: object_store::Error,
    },
}

impl SourceError {
    fn from_store(url: &str, e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => Self::NotFound { url: url.into() },
            other => Self::Store {
                url: url.into(),
                source: other,
            },
        }
    }
}

/// An object's bytes and identity.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Bytes,
    pub object: SourceObject,
}

/// Where a URL's object lives: the store and the path inside it.
fn resolve(url: &str) -> Result<(Arc<dyn ObjectStore>, ObjPath, String), SourceError> {
    let unsupported = |reason: String| SourceError::Unsupported {
        url: url.into(),
        reason,
    };
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| unsupported("expected s3://bucket/key".into()))?;
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| SourceError::from_store(url, e))?;
        return Ok((Arc::new(store), ObjPath::from(key), url.to_string()));
    }
    let local = url.strip_prefix("file://").unwrap_or(url);
    if local.contains("://") {
        return Err(unsupported(
            "only file:// and s3:// URLs and local paths are supported".into(),
        ));
    }
    let abs = std::path::absolute(Path::new(local))
        .map_err(|e| unsupported(format!("cannot make the path absolute: {e}")))?;
    let path = ObjPath::from_absolute_path(&abs).map_err(|e| unsupported(e.to_string()))?;
    Ok((
        Arc::new(LocalFileSystem::new()),
        path,
        format!("file://{}", abs.display()),
    ))
}

/// Fetches a whole object given by URL (`s3://bucket/key`, `file:///abs/path`) or local path.
/// S3 credentials and endpoint come from the standard `AWS_*` environment variables.
pub async fn fetch_url(url: &str) -> Result<Fetched, SourceError> {
    let (store, path, canonical) = resolve(url)?;
    let got = store
        .get(&path)
        .await
        .map_err(|e| SourceError::from_store(url, e))?;
    let meta = got.meta.clone();
    let bytes = got
        .bytes()
        .await
        .map_err(|e| SourceError::from_store(url, e))?;
    Ok(Fetched {
        object: SourceObject {
            url: canonical,
            etag: meta.e_tag,
            last_modified: Some(meta.last_modified),
            size: meta.size,
        },
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_files_have_an_etag_and_missing_ones_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        std::fs::write(&p, b"hello").unwrap();
        let f = fetch_url(p.to_str().unwrap()).await.unwrap();
        assert_eq!(&f.bytes[..], b"hello");
        assert_eq!(f.object.size, 5);
        assert!(f.object.etag.is_some());
        assert!(f.object.url.starts_with("file:///"));
        let again = fetch_url(&f.object.url).await.unwrap();
        assert_eq!(again.object, f.object);
        let missing = fetch_url(dir.path().join("nope").to_str().unwrap()).await;
        assert!(
            matches!(missing, Err(SourceError::NotFound { .. })),
            "{missing:?}"
        );
        assert!(matches!(
            fetch_url("https://example.invalid/x").await,
            Err(SourceError::Unsupported { .. })
        ));
    }
}
