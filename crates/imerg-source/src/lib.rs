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

/// Where granules are read from (one type for the whole workspace).
pub use imerg_catalog::SourceLocation as SourceConfig;

/// One object read by byte ranges (the ranged HDF5 metadata reader's view of a granule): each
/// read is one GET of that range, pinned to the version the HEAD saw where the store supports it.
#[derive(Debug)]
pub struct ObjectRanges {
    store: Arc<dyn ObjectStore>,
    path: ObjPath,
    size: u64,
    version: Option<String>,
}

#[async_trait::async_trait]
impl imerg_hdf5::RangeReader for ObjectRanges {
    async fn read(&self, offset: u64, len: u64) -> imerg_hdf5::Result<Bytes> {
        let io = |detail: String| imerg_hdf5::Hdf5Error::Io {
            offset,
            len,
            detail,
        };
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let opts = object_store::GetOptions {
            range: Some((offset..end).into()),
            if_match: self.version.clone(),
            ..Default::default()
        };
        let got = self
            .store
            .get_opts(&self.path, opts)
            .await
            .map_err(|e| io(e.to_string()))?;
        got.bytes().await.map_err(|e| io(e.to_string()))
    }

    fn size_hint(&self) -> Option<u64> {
        Some(self.size)
    }
}

/// Temporary S3 credentials from somewhere else than the standard AWS chain (Earthdata).
pub type CredentialProvider =
    Arc<dyn object_store::CredentialProvider<Credential = object_store::aws::AwsCredential>>;

/// A configured granule source.
#[derive(Debug, Clone)]
pub struct Source {
    store: Arc<dyn ObjectStore>,
    /// Object path prefix inside `store` (no leading or trailing `/`).
    prefix: String,
    /// URL of the source root, ending in `/`: references point at `url_prefix + key`.
    url_prefix: String,
}

impl Source {
    /// Builds the source. S3 uses the standard AWS credential chain unless `credentials` is
    /// given; transient S3 errors are retried by object_store with exponential backoff and
    /// jitter (bounded: 10 retries within 3 minutes).
    pub fn new(
        cfg: &SourceConfig,
        credentials: Option<CredentialProvider>,
    ) -> Result<Self, SourceError> {
        match cfg {
            SourceConfig::Local { root } => {
                let abs = std::path::absolute(root).map_err(|e| SourceError::Unsupported {
                    url: root.display().to_string(),
                    reason: e.to_string(),
                })?;
                let url_prefix = format!("file://{}/", abs.to_string_lossy().trim_end_matches('/'));
                Ok(Self {
                    store: Arc::new(LocalFileSystem::new()),
                    prefix: abs.to_string_lossy().trim_matches('/').to_string(),
                    url_prefix,
                })
            }
            SourceConfig::S3 {
                bucket,
                prefix,
                region,
                endpoint_url,
                anonymous,
            } => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(object_store::RetryConfig {
                        max_retries: 10,
                        retry_timeout: std::time::Duration::from_secs(180),
                        ..Default::default()
                    });
                if let Some(r) = region {
                    b = b.with_region(r);
                }
                if let Some(e) = endpoint_url {
                    b = b
                        .with_endpoint(e)
                        .with_virtual_hosted_style_request(false)
                        .with_allow_http(imerg_catalog::allow_http(Some(e)));
                }
                if *anonymous {
                    b = b.with_skip_signature(true);
                }
                if let Some(c) = credentials {
                    b = b.with_credentials(c);
                }
                let url = format!("s3://{bucket}/");
                let store = b.build().map_err(|e| SourceError::from_store(&url, e))?;
                let prefix = prefix.trim_matches('/').to_string();
                let url_prefix = if prefix.is_empty() {
                    url
                } else {
                    format!("s3://{bucket}/{prefix}/")
                };
                Ok(Self {
                    store: Arc::new(store),
                    prefix,
                    url_prefix,
                })
            }
        }
    }

    /// URL of the source root, ending in `/`.
    pub fn url_prefix(&self) -> &str {
        &self.url_prefix
    }

    /// URL of a bucket-relative key.
    pub fn url_of(&self, key: &str) -> String {
        format!("{}{}", self.url_prefix, key.trim_start_matches('/'))
    }

    fn path_of(&self, key: &str) -> ObjPath {
        let key = key.trim_start_matches('/');
        if self.prefix.is_empty() {
            ObjPath::from(key)
        } else {
            ObjPath::from(format!("{}/{key}", self.prefix))
        }
    }

    /// The bucket-relative keys of the objects under a key prefix (e.g. one day's directory of a
    /// collection), at most `limit` of them: the reconciliation sweep's view of what exists. A
    /// prefix that does not exist is an empty listing.
    pub async fn list_keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>, SourceError> {
        use futures::TryStreamExt as _;
        let url = self.url_of(prefix);
        let path = self.path_of(prefix.trim_end_matches('/'));
        let root = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut out = Vec::new();
        let mut listing = self.store.list(Some(&path));
        loop {
            match listing.try_next().await {
                Ok(Some(meta)) => {
                    let full = meta.location.to_string();
                    if let Some(key) = full.strip_prefix(&root) {
                        out.push(key.to_string());
                    }
                    if out.len() >= limit {
                        break;
                    }
                }
                Ok(None) => break,
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(SourceError::from_store(&url, e)),
            }
        }
        Ok(out)
    }

    /// The object at a bucket-relative key for byte-range reads: its identity (one HEAD request)
    /// and a reader that fetches only the ranges asked for.
    pub async fn open_ranges(
        &self,
        key: &str,
    ) -> Result<(Arc<ObjectRanges>, SourceObject), SourceError> {
        let url = self.url_of(key);
        let path = self.path_of(key);
        let meta = self
            .store
            .head(&path)
            .await
            .map_err(|e| SourceError::from_store(&url, e))?;
        let object = SourceObject {
            url: url.clone(),
            etag: meta.e_tag.clone(),
            last_modified: Some(meta.last_modified),
            size: meta.size,
        };
        let reader = ObjectRanges {
            store: Arc::clone(&self.store),
            path,
            size: meta.size,
            version: meta.e_tag,
        };
        Ok((Arc::new(reader), object))
    }

    /// Fetches the whole object at a bucket-relative key.
    pub async fn fetch(&self, key: &str) -> Result<Fetched, SourceError> {
        let url = self.url_of(key);
        let got = self
            .store
            .get(&self.path_of(key))
            .await
            .map_err(|e| SourceError::from_store(&url, e))?;
        let meta = got.meta.clone();
        let bytes = got
            .bytes()
            .await
            .map_err(|e| SourceError::from_store(&url, e))?;
        Ok(Fetched {
            object: SourceObject {
                url,
                etag: meta.e_tag,
                last_modified: Some(meta.last_modified),
                size: meta.size,
            },
            bytes,
        })
    }
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
    async fn a_local_source_reads_keys_under_its_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("GPM_L3/x")).unwrap();
        std::fs::write(dir.path().join("GPM_L3/x/g.HDF5"), b"abc").unwrap();
        let s = Source::new(
            &SourceConfig::Local {
                root: dir.path().into(),
            },
            None,
        )
        .unwrap();
        let f = s.fetch("GPM_L3/x/g.HDF5").await.unwrap();
        assert_eq!(&f.bytes[..], b"abc");
        assert_eq!(
            f.object.url,
            format!("file://{}/GPM_L3/x/g.HDF5", dir.path().display())
        );
        assert!(s.url_prefix().ends_with('/'));
        assert!(matches!(
            s.fetch("GPM_L3/x/none").await,
            Err(SourceError::NotFound { .. })
        ));
    }

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
