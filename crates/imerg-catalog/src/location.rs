//! Where things live: the one parser of `s3://bucket/prefix` and local paths, and the
//! [`SourceLocation`] every crate uses for "where granules are read from" (the source, the
//! repository's virtual chunk container and the service configuration all describe it the same).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A parsed location: an S3 (or S3-compatible) bucket and key prefix, or a local path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `s3://bucket[/prefix]`: the prefix has no leading or trailing `/` (empty for the root).
    S3 { bucket: String, prefix: String },
    /// A path (a `file://` URL is accepted and stripped).
    Local(PathBuf),
}

/// Why a location does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("{0:?}: an s3:// URL needs a bucket name")]
    NoBucket(String),
    #[error("{0:?}: the location is empty")]
    Empty(String),
}

impl Location {
    /// Parses `s3://bucket[/prefix]`, `file:///path` or a plain path.
    pub fn parse(s: &str) -> Result<Self, LocationError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(LocationError::Empty(s.into()));
        }
        match t.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(LocationError::NoBucket(s.into()));
                }
                Ok(Self::S3 {
                    bucket: bucket.into(),
                    prefix: prefix.trim_matches('/').into(),
                })
            }
            None => Ok(Self::Local(PathBuf::from(
                t.strip_prefix("file://").unwrap_or(t),
            ))),
        }
    }
}

/// Requests to an S3-compatible endpoint go over plain HTTP only when it says so.
pub fn allow_http(endpoint_url: Option<&str>) -> bool {
    endpoint_url.is_some_and(|e| e.starts_with("http://"))
}

/// Where granules are read from: a local directory or an S3 (or S3-compatible) bucket, both in
/// the bucket layout (`<root>/<collection>/YYYY/DDD/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceLocation {
    Local {
        root: PathBuf,
    },
    S3 {
        bucket: String,
        /// Key prefix under the bucket (empty for the bucket root).
        prefix: String,
        region: Option<String>,
        /// S3-compatible endpoint (`http://127.0.0.1:9000`); requests then use path style.
        endpoint_url: Option<String>,
        /// Unsigned requests (public buckets).
        anonymous: bool,
    },
}

impl SourceLocation {
    /// A source from its URL or path plus the S3 options (ignored for a local directory).
    pub fn parse(
        s: &str,
        region: Option<String>,
        endpoint_url: Option<String>,
        anonymous: bool,
    ) -> Result<Self, LocationError> {
        Ok(match Location::parse(s)? {
            Location::S3 { bucket, prefix } => Self::S3 {
                bucket,
                prefix,
                region,
                endpoint_url,
                anonymous,
            },
            Location::Local(root) => Self::Local { root },
        })
    }

    /// The local root directory, for a local source.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        match self {
            Self::Local { root } => Some(root),
            Self::S3 { .. } => None,
        }
    }

    /// Whether requests go over plain HTTP (an `http://` endpoint).
    pub fn allow_http(&self) -> bool {
        match self {
            Self::Local { .. } => false,
            Self::S3 { endpoint_url, .. } => allow_http(endpoint_url.as_deref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            Location::parse("s3://b/p/q/").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: "p/q".into()
            }
        );
        assert_eq!(
            Location::parse("s3://b").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            Location::parse("file:///tmp/x").unwrap(),
            Location::Local("/tmp/x".into())
        );
        assert_eq!(
            Location::parse("rel/dir").unwrap(),
            Location::Local("rel/dir".into())
        );
        assert!(matches!(
            Location::parse("s3:///x"),
            Err(LocationError::NoBucket(_))
        ));
        assert!(matches!(Location::parse(" "), Err(LocationError::Empty(_))));
    }

    #[test]
    fn source_location_keeps_the_s3_options() {
        let s = SourceLocation::parse(
            "s3://b/pre",
            Some("r".into()),
            Some("http://h".into()),
            true,
        )
        .unwrap();
        assert!(s.allow_http());
        assert!(s.local_root().is_none());
        let l = SourceLocation::parse("/data", None, Some("http://h".into()), false).unwrap();
        assert_eq!(l.local_root(), Some(std::path::Path::new("/data")));
        assert!(!l.allow_http());
    }
}
