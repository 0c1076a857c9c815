//! The native repository: created with manifests split along time, a writable store on its
//! branch, commits that record which virtual snapshot they reflect (`imerg_native` commit
//! property), and reading that record back: the newest complete state, and the regions a batch
//! rechunk already finished.

use std::collections::HashMap;
use std::sync::Arc;

use futures::TryStreamExt;
use icechunk::config::{
    ManifestConfig, ManifestSplitCondition, ManifestSplitDim, ManifestSplitDimCondition,
    ManifestSplittingConfig,
};
use icechunk::conflicts::detector::ConflictDetector;
use icechunk::format::snapshot::{SnapshotInfo, SnapshotProperties};
use icechunk::repository::VersionInfo;
use icechunk::session::SessionErrorKind;
use icechunk::{Repository, RepositoryConfig, Store};
use imerg_dataset::RepoLocation;
use serde_json::{Value, json};
use tokio::sync::RwLock;

use crate::NativeError;

/// The commit property recording what a native commit did.
pub const PROP: &str = "imerg_native";

/// Manifests split every this many time blocks: an update rewrites one small manifest per
/// data variable.
const SPLIT_BLOCKS: u32 = 8;

/// What a native commit says it reflects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The native snapshot.
    pub native_snapshot: String,
    /// The virtual snapshot whose data the native store holds (completely).
    pub virtual_snapshot: String,
    pub time: chrono::DateTime<chrono::Utc>,
}

/// The kinds of native commits.
pub(crate) mod kind {
    /// The follower applied every change up to `virtual_snapshot`.
    pub const FOLLOW: &str = "follow";
    /// Part of a follower update too large for one commit (one block); not a complete state.
    pub const FOLLOW_PART: &str = "follow-part";
    /// A batch rechunk finished one region.
    pub const REGION: &str = "rechunk-region";
    /// A batch rechunk of the whole record finished: the store reflects `virtual_snapshot`.
    pub const RECHUNK_COMPLETE: &str = "rechunk-complete";
}

/// The native Icechunk repository.
#[derive(Debug, Clone)]
pub struct NativeRepo {
    repo: Arc<Repository>,
    branch: String,
}

impl NativeRepo {
    /// Opens the repository at `location`, creating it if there is none.
    pub async fn open_or_create(location: &RepoLocation) -> Result<Self, NativeError> {
        let storage = location.storage().await?;
        let exists = Repository::exists(Arc::clone(&storage), None)
            .await
            .map_err(NativeError::ic)?;
        if !exists {
            let split = ManifestSplittingConfig {
                split_sizes: Some(vec![(
                    ManifestSplitCondition::AnyArray,
                    vec![ManifestSplitDim {
                        condition: ManifestSplitDimCondition::DimensionName("^time$".into()),
                        num_chunks: SPLIT_BLOCKS,
                    }],
                )]),
            };
            let config = RepositoryConfig {
                manifest: Some(ManifestConfig {
                    splitting: Some(split),
                    ..Default::default()
                }),
                ..Default::default()
            };
            Repository::create(Arc::clone(&storage))
                .config(config)
                .execute()
                .await
                .map_err(NativeError::ic)?;
            tracing::info!(location = ?location, "created the native repository");
        }
        let repo = Repository::open(storage)
            .execute()
            .await
            .map_err(NativeError::ic)?;
        Ok(Self {
            repo: Arc::new(repo),
            branch: "main".into(),
        })
    }

    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// A store on a fresh writable session at the branch tip.
    pub async fn writable(&self) -> Result<Store, NativeError> {
        let s = self
            .repo
            .writable_session(&self.branch)
            .await
            .map_err(NativeError::ic)?;
        Ok(Store::from_session(Arc::new(RwLock::new(s))).await)
    }

    /// Commits `store`'s session with `record` as the `imerg_native` property. A branch that
    /// moved meanwhile (another rechunk job on a disjoint region) is rebased onto; a real
    /// conflict is an error and the caller starts the region again.
    pub async fn commit(
        &self,
        store: &Store,
        message: &str,
        record: Value,
    ) -> Result<String, NativeError> {
        let session = store.session();
        let mut s = session.write().await;
        let mut props = SnapshotProperties::new();
        props.insert(PROP.to_string(), record);
        for _ in 0..8 {
            let result = s
                .commit(message)
                .properties(props.clone())
                .allow_empty(true)
                .execute()
                .await;
            match result {
                Ok(id) => return Ok(id.to_string()),
                Err(e) if matches!(e.kind(), SessionErrorKind::Conflict { .. }) => {
                    s.rebase(&ConflictDetector)
                        .await
                        .map_err(|e| NativeError::Repository(format!("rebase: {e}")))?;
                }
                Err(e) => return Err(NativeError::ic(e)),
            }
        }
        Err(NativeError::Repository(
            "the branch kept moving: gave up after 8 rebases".into(),
        ))
    }

    /// Visits the `imerg_native` records of the branch's commits, newest first, until `visit`
    /// returns false.
    async fn walk(
        &self,
        mut visit: impl FnMut(&SnapshotInfo, &Value) -> bool,
    ) -> Result<(), NativeError> {
        let mut stream = std::pin::pin!(
            self.repo
                .ancestry(&VersionInfo::BranchTipRef(self.branch.clone()))
                .await
                .map_err(NativeError::ic)?
        );
        while let Some(info) = stream.try_next().await.map_err(NativeError::ic)? {
            if let Some(rec) = info.metadata.get(PROP)
                && !visit(&info, rec)
            {
                break;
            }
        }
        Ok(())
    }

    /// The newest complete state: the virtual snapshot the newest `follow` or
    /// `rechunk-complete` commit reflects. None for a store no one completed yet.
    pub async fn applied(&self) -> Result<Option<Applied>, NativeError> {
        let mut found = None;
        self.walk(|info, rec| {
            if matches!(
                rec["kind"].as_str(),
                Some(kind::FOLLOW | kind::RECHUNK_COMPLETE)
            ) && let Some(v) = rec["virtual_snapshot"].as_str()
            {
                found = Some(Applied {
                    native_snapshot: info.id.to_string(),
                    virtual_snapshot: v.to_string(),
                    time: info.flushed_at,
                });
                return false;
            }
            true
        })
        .await?;
        Ok(found)
    }

    /// The regions `(block, column)` batch rechunks finished, with the virtual snapshot each
    /// reflects (the newest if done more than once).
    pub async fn finished_regions(&self) -> Result<HashMap<(u64, u64), String>, NativeError> {
        let mut out = HashMap::new();
        self.walk(|_, rec| {
            if rec["kind"] == kind::REGION
                && let (Some(b), Some(c), Some(v)) = (
                    rec["block"].as_u64(),
                    rec["column"].as_u64(),
                    rec["virtual_snapshot"].as_str(),
                )
            {
                out.entry((b, c)).or_insert_with(|| v.to_string());
            }
            true
        })
        .await?;
        Ok(out)
    }
}

/// The `imerg_native` record of a commit.
pub(crate) fn record(kind: &str, virtual_snapshot: &str, extra: Value) -> Value {
    let mut v = json!({"kind": kind, "virtual_snapshot": virtual_snapshot});
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}
