//! Where the repository lives, which source prefix its references point into (the virtual chunk
//! container), and how big a manifest may grow before it rolls over along `time`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use icechunk::config::{
    Credentials, ManifestSplitCondition, ManifestSplitDim, ManifestSplitDimCondition,
    ManifestSplittingConfig, S3Credentials, S3Options,
};
use icechunk::virtual_chunks::VirtualChunkContainer;
use icechunk::{ObjectStoreConfig, Storage};
use imerg_catalog::{Location, ProductProfile, SourceLocation};

use crate::DatasetError;

/// Bytes one virtual reference takes in a manifest on disk, rounded up: `imerg-ingest simulate`
/// over the full Final record measured 18.09 (zstd, locations compressed against the container
/// prefix, realistic offsets and lengths); with 18 the largest manifest came out 9 % over the
/// limit, so splits are sized with 20.
pub const BYTES_PER_REF: u64 = 20;

/// The one-writer lock of a local repository (see [`RepoLocation::lock_writer`]).
#[derive(Debug)]
pub struct WriterLock {
    _file: std::fs::File,
}

/// Where the Icechunk repository is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    /// A directory on the local filesystem (the embedded default).
    Local(PathBuf),
    /// An S3 (or S3-compatible) bucket and prefix. Credentials come from the standard AWS
    /// environment variables.
    S3 {
        bucket: String,
        prefix: String,
        region: Option<String>,
        endpoint_url: Option<String>,
        allow_http: bool,
    },
}

impl RepoLocation {
    /// Parses `s3://bucket/prefix` or a local path (the one parser: [`imerg_catalog::Location`]).
    /// Something that is no location at all (an empty string, `s3://` without a bucket) becomes
    /// a local path that fails to open with its name; the service's configuration rejects it
    /// before that.
    pub fn parse(s: &str, region: Option<String>, endpoint_url: Option<String>) -> Self {
        match Location::parse(s) {
            Ok(Location::S3 { bucket, prefix }) => Self::S3 {
                bucket,
                prefix,
                allow_http: imerg_catalog::allow_http(endpoint_url.as_deref()),
                region,
                endpoint_url,
            },
            Ok(Location::Local(p)) => Self::Local(p),
            Err(_) => Self::Local(PathBuf::from(s)),
        }
    }

    /// Takes the one-writer lock of a local repository: an exclusive lock on the file
    /// `<repo>.writer.lock` beside it, held until the returned value is dropped (the OS drops
    /// it when the process dies, even by SIGKILL). Icechunk's local storage has no conditional
    /// writes, so two committers on one directory would both pass its conflict check and the
    /// second would silently replace the first's commit (review M5a). S3 needs no lock: its
    /// conditional writes turn a second writer into a conflict. `Ok(None)` there.
    pub fn lock_writer(&self) -> Result<Option<WriterLock>, DatasetError> {
        let Self::Local(dir) = self else {
            return Ok(None);
        };
        let mut name = dir.as_os_str().to_owned();
        name.push(".writer.lock");
        let path = PathBuf::from(name);
        let io = |e: std::io::Error| {
            DatasetError::Config(format!("cannot lock {}: {e}", path.display()))
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(WriterLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Err(DatasetError::Config(format!(
                "another process writes to the repository {} (it holds {}): one writer per repository",
                dir.display(),
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// The Icechunk storage at this location (the directory is created if missing).
    pub async fn storage(&self) -> Result<Arc<dyn Storage + Send + Sync>, DatasetError> {
        match self {
            Self::Local(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| DatasetError::Config(format!("{}: {e}", dir.display())))?;
                icechunk::new_local_filesystem_storage(dir)
                    .await
                    .map_err(DatasetError::ic)
            }
            Self::S3 {
                bucket,
                prefix,
                region,
                endpoint_url,
                allow_http,
            } => {
                if prefix.is_empty() {
                    return Err(DatasetError::Config(
                        "an S3 repository needs a prefix: s3://bucket/prefix".into(),
                    ));
                }
                icechunk::new_s3_object_store_storage(
                    s3_options(
                        region.as_deref(),
                        endpoint_url.as_deref(),
                        *allow_http,
                        false,
                    ),
                    bucket.clone(),
                    Some(prefix.clone()),
                    Some(S3Credentials::FromEnv),
                    vec![],
                    vec![],
                )
                .await
                .map_err(DatasetError::ic)
            }
        }
    }
}

fn s3_options(
    region: Option<&str>,
    endpoint_url: Option<&str>,
    allow_http: bool,
    anonymous: bool,
) -> S3Options {
    let mut o = S3Options::default()
        .with_allow_http(allow_http)
        .with_anonymous(anonymous);
    if let Some(r) = region {
        o = o.with_region(r);
    }
    if let Some(e) = endpoint_url {
        o = o.with_endpoint_url(e).with_force_path_style(true);
    }
    o
}

/// The virtual chunk container every reference points into: its URL prefix and how readers
/// reach it. Persisted in the repository config, so readers only authorize it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceContainer {
    /// `s3://bucket/` or `file:///abs/dir/` (always ends in `/`).
    pub url_prefix: String,
    pub kind: SourceKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    LocalFileSystem,
    S3 {
        region: Option<String>,
        endpoint_url: Option<String>,
        allow_http: bool,
        anonymous: bool,
    },
}

impl SourceContainer {
    /// A local directory holding granules in the bucket layout.
    pub fn local(root: &Path) -> Result<Self, DatasetError> {
        let abs = std::path::absolute(root)
            .map_err(|e| DatasetError::Config(format!("{}: {e}", root.display())))?;
        let mut s = abs.to_string_lossy().trim_end_matches('/').to_string();
        s.push('/');
        Ok(Self {
            url_prefix: format!("file://{s}"),
            kind: SourceKind::LocalFileSystem,
        })
    }

    /// The container of a configured source: its root directory or `s3://bucket/prefix/`.
    pub fn from_location(location: &SourceLocation) -> Result<Self, DatasetError> {
        match location {
            SourceLocation::Local { root } => Self::local(root),
            SourceLocation::S3 {
                bucket,
                prefix,
                region,
                endpoint_url,
                anonymous,
            } => {
                let prefix = prefix.trim_matches('/');
                let url = if prefix.is_empty() {
                    format!("s3://{bucket}/")
                } else {
                    format!("s3://{bucket}/{prefix}/")
                };
                Ok(Self::s3(
                    &url,
                    region.clone(),
                    endpoint_url.clone(),
                    *anonymous,
                ))
            }
        }
    }

    /// The product's own bucket (NASA's, us-west-2, by default).
    pub fn for_profile(profile: &ProductProfile) -> Self {
        Self::s3(&profile.bucket_url, Some("us-west-2".into()), None, false)
    }

    /// An S3 or S3-compatible bucket (`s3://bucket/`).
    pub fn s3(
        url_prefix: &str,
        region: Option<String>,
        endpoint_url: Option<String>,
        anonymous: bool,
    ) -> Self {
        let mut p = url_prefix.trim_end_matches('/').to_string();
        p.push('/');
        Self {
            url_prefix: p,
            kind: SourceKind::S3 {
                allow_http: imerg_catalog::allow_http(endpoint_url.as_deref()),
                region,
                endpoint_url,
                anonymous,
            },
        }
    }

    /// URL of a bucket-relative key inside the container.
    pub fn url_of(&self, key: &str) -> String {
        format!("{}{}", self.url_prefix, key.trim_start_matches('/'))
    }

    /// The container as a repository's config records it.
    pub(crate) fn from_icechunk(c: &VirtualChunkContainer) -> Self {
        let kind = match &c.store {
            ObjectStoreConfig::S3(o) | ObjectStoreConfig::S3Compatible(o) => SourceKind::S3 {
                region: o.region.clone(),
                endpoint_url: o.endpoint_url.clone(),
                allow_http: o.allow_http,
                anonymous: o.anonymous,
            },
            _ => SourceKind::LocalFileSystem,
        };
        Self {
            url_prefix: c.url_prefix().to_string(),
            kind,
        }
    }

    pub(crate) fn to_icechunk(&self) -> Result<VirtualChunkContainer, DatasetError> {
        let store = match &self.kind {
            SourceKind::LocalFileSystem => ObjectStoreConfig::LocalFileSystem(PathBuf::new()),
            SourceKind::S3 {
                region,
                endpoint_url,
                allow_http,
                anonymous,
            } => {
                let opts = s3_options(
                    region.as_deref(),
                    endpoint_url.as_deref(),
                    *allow_http,
                    *anonymous,
                );
                if endpoint_url.is_some() {
                    ObjectStoreConfig::S3Compatible(opts)
                } else {
                    ObjectStoreConfig::S3(opts)
                }
            }
        };
        VirtualChunkContainer::new(self.url_prefix.clone(), store).map_err(DatasetError::Config)
    }

    /// Read access for this process (status checks and tests read chunks back).
    pub(crate) fn credentials(&self) -> HashMap<String, Option<Credentials>> {
        let c = match &self.kind {
            SourceKind::LocalFileSystem => Credentials::LocalFileSystemAccess,
            SourceKind::S3 {
                anonymous: true, ..
            } => Credentials::S3(S3Credentials::Anonymous),
            SourceKind::S3 { .. } => Credentials::S3(S3Credentials::FromEnv),
        };
        HashMap::from([(self.url_prefix.clone(), Some(c))])
    }
}

/// How the dataset is written.
#[derive(Debug, Clone)]
pub struct DatasetConfig {
    pub profile: ProductProfile,
    pub source: SourceContainer,
    /// Largest manifest (bytes) before it rolls over to a new split along `time`.
    pub manifest_max_bytes: u64,
    /// Cap of Icechunk's in-memory manifest cache, in references.
    pub manifest_cache_refs: u64,
    /// Cap of Icechunk's in-memory snapshot cache, in nodes (arrays and groups).
    pub snapshot_cache_nodes: u64,
    /// Branch the writer commits to.
    pub branch: String,
}

/// Default cap of Icechunk's manifest cache (references). Every commit puts the manifests it
/// wrote into the cache, so in a long-running writer it fills with superseded versions; the cap
/// bounds that memory. 200,000 references hold the active split of every array many times over.
pub const DEFAULT_MANIFEST_CACHE_REFS: u64 = 200_000;

/// Default cap of Icechunk's snapshot cache (nodes). Icechunk weighs a cached snapshot by its
/// node count (a dozen here) against a default of 500,000, so a writer kept every snapshot it
/// committed, each listing every manifest (105 KB for the full record): memory grew with every
/// commit. 240 nodes keep the last ~20 snapshots; the writer only reads the branch tip.
pub const DEFAULT_SNAPSHOT_CACHE_NODES: u64 = 240;

/// Default manifest size limit: 256 KiB. A commit rewrites the newest split of every array it
/// touches, so the split size sets the per-commit cost. Measured with `cargo bench -p
/// imerg-benches --bench append_day` (one day onto a 120-day store): 64 KiB 45 ms, 256 KiB 78 ms,
/// 2 MiB 322 ms, 16 MiB 555 ms per commit. At the 20 bytes per reference assumed here a split
/// holds ~13,100 references: 524 half hours (11 days) of `precipitation`, about 930 manifests
/// per array for the full record, each small enough that reading one time step fetches a
/// quarter megabyte per array.
pub const DEFAULT_MANIFEST_MAX_BYTES: u64 = 256 * 1024;

impl DatasetConfig {
    pub fn new(profile: ProductProfile, source: SourceContainer) -> Self {
        Self {
            profile,
            source,
            manifest_max_bytes: DEFAULT_MANIFEST_MAX_BYTES,
            manifest_cache_refs: DEFAULT_MANIFEST_CACHE_REFS,
            snapshot_cache_nodes: DEFAULT_SNAPSHOT_CACHE_NODES,
            branch: "main".into(),
        }
    }

    /// Time steps per manifest split for an array with `refs_per_step` references per step.
    pub fn split_steps(&self, refs_per_step: u64) -> u32 {
        let steps = self.manifest_max_bytes / (BYTES_PER_REF * refs_per_step.max(1));
        u32::try_from(steps.max(1)).unwrap_or(u32::MAX)
    }

    /// One split rule per data variable, sized so each manifest stays under the limit.
    pub(crate) fn splitting(&self) -> ManifestSplittingConfig {
        let grid = &self.profile.layout.grid;
        let rules = self
            .profile
            .layout
            .variables
            .iter()
            .map(|v| {
                (
                    ManifestSplitCondition::NameMatches {
                        regex: format!("^{}$", regex_escape(&v.name)),
                    },
                    vec![ManifestSplitDim {
                        condition: ManifestSplitDimCondition::DimensionName("^time$".into()),
                        num_chunks: self.split_steps(v.chunks_per_granule(grid)),
                    }],
                )
            })
            .collect();
        ManifestSplittingConfig {
            split_sizes: Some(rules),
        }
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$#&-~".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sizes_follow_the_byte_limit() {
        let c = DatasetConfig::new(
            ProductProfile::final_v07b(),
            SourceContainer::local(Path::new("/data")).unwrap(),
        );
        assert_eq!(c.split_steps(25), 256 * 1024 / (20 * 25));
        assert_eq!(c.source.url_prefix, "file:///data/");
        assert_eq!(
            c.source.url_of("GPM_L3/x.HDF5"),
            "file:///data/GPM_L3/x.HDF5"
        );
        assert_eq!(regex_escape("a.b"), "a\\.b");
        assert_eq!(
            RepoLocation::parse("s3://b/p/q/", None, Some("http://127.0.0.1:9".into())),
            RepoLocation::S3 {
                bucket: "b".into(),
                prefix: "p/q".into(),
                region: None,
                endpoint_url: Some("http://127.0.0.1:9".into()),
                allow_http: true
            }
        );
    }
}
