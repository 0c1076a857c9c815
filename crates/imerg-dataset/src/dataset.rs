//! The dataset in an Icechunk repository: open or create it, apply a batch of granules in one
//! commit (position from each granule's time index, duplicates as no-ops, replaced sources
//! re-pointed, other layouts rejected), find whether a batch already landed, and read status.
//! [`Dataset`] is the facade; the work is done in `open`, `batch`, `history` and `status`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use icechunk::repository::VersionInfo;
use icechunk::{Repository, Store};
use imerg_catalog::ProductProfile;
use imerg_refs::GranuleRefs;
use tokio::sync::RwLock;

use crate::batch::{self, BatchOutcome, PreparedBatch};
use crate::status::{self, Status};
use crate::{DatasetConfig, DatasetError, RepoLocation, history, open, store_io};

/// How often [`Dataset::wait_for`] tries to open the repository.
const WAIT_STEP: Duration = Duration::from_millis(500);

/// One IMERG dataset in one Icechunk repository.
#[derive(Debug)]
pub struct Dataset {
    repo: Repository,
    cfg: DatasetConfig,
    /// The last status computed, with when (see [`Dataset::status_shared`]).
    last_status: tokio::sync::Mutex<Option<(Arc<Status>, std::time::Instant)>>,
}

/// How long a computed status is served without looking at the branch tip again.
const STATUS_FRESH_FOR: Duration = Duration::from_secs(1);

impl Dataset {
    /// Opens the repository, or creates it (with the source container and manifest splitting
    /// persisted in its config) if there is none.
    pub async fn open_or_create(
        location: &RepoLocation,
        cfg: DatasetConfig,
    ) -> Result<Self, DatasetError> {
        let repo = open::open_or_create(location, &cfg).await?;
        Ok(Self {
            repo,
            cfg,
            last_status: tokio::sync::Mutex::new(None),
        })
    }

    /// Opens an existing repository for reading and writing, taking its source container from
    /// the repository's own config.
    pub async fn open(
        location: &RepoLocation,
        profile: ProductProfile,
    ) -> Result<Self, DatasetError> {
        let cfg = open::existing_config(location, profile).await?;
        Self::open_or_create(location, cfg).await
    }

    /// Opens a repository another process creates (the committer's), as [`Dataset::open`] does,
    /// trying again every 500 ms until `timeout` has passed. The error then says how long it
    /// waited and why the last try failed.
    pub async fn wait_for(
        location: &RepoLocation,
        profile: ProductProfile,
        timeout: Duration,
    ) -> Result<Self, DatasetError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let e = match Self::open(location, profile.clone()).await {
                Ok(d) => return Ok(d),
                Err(e) => e,
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(DatasetError::Config(format!(
                    "the repository {location:?} did not appear within {timeout:?}: {e}"
                )));
            }
            tokio::time::sleep(WAIT_STEP.min(deadline - now)).await;
        }
    }

    pub fn config(&self) -> &DatasetConfig {
        &self.cfg
    }

    /// The Icechunk repository itself (prefer the dataset's own methods, such as
    /// [`Dataset::branch_tip`]).
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The snapshot id at the tip of the configured branch.
    pub async fn branch_tip(&self) -> Result<String, DatasetError> {
        self.repo
            .lookup_branch(&self.cfg.branch)
            .await
            .map(|id| id.to_string())
            .map_err(DatasetError::ic)
    }

    /// A read-only store at the branch tip.
    pub(crate) async fn read_store(&self) -> Result<Store, DatasetError> {
        self.store(false).await
    }

    /// A writable store on a fresh session at the branch tip.
    pub(crate) async fn writable_store(&self) -> Result<Store, DatasetError> {
        self.store(true).await
    }

    /// A store on a fresh session at the branch tip: writable, or read-only.
    async fn store(&self, writable: bool) -> Result<Store, DatasetError> {
        let session = if writable {
            self.repo.writable_session(&self.cfg.branch).await
        } else {
            self.repo
                .readonly_session(&VersionInfo::BranchTipRef(self.cfg.branch.clone()))
                .await
        }
        .map_err(DatasetError::ic)?;
        Ok(Store::from_session(Arc::new(RwLock::new(session))).await)
    }

    /// Applies a batch in one commit. Granules that do not fit are rejected individually; the
    /// rest land together. `batch_id` is recorded in the commit's properties.
    pub async fn commit_batch(
        &self,
        granules: &[GranuleRefs],
        batch_id: &str,
    ) -> Result<BatchOutcome, DatasetError> {
        let prepared = self.prepare_batch(granules, batch_id).await?;
        self.commit_prepared(prepared).await
    }

    /// First half of [`Dataset::commit_batch`]: a fresh session on the branch tip with the
    /// batch's changes applied, not yet committed.
    pub async fn prepare_batch(
        &self,
        granules: &[GranuleRefs],
        batch_id: &str,
    ) -> Result<PreparedBatch, DatasetError> {
        batch::prepare(self.store(true).await?, &self.cfg, granules, batch_id).await
    }

    /// Second half of [`Dataset::commit_batch`]: commits a prepared batch. A branch that moved
    /// since the batch was prepared means a second writer: [`DatasetError::SecondWriter`].
    pub async fn commit_prepared(
        &self,
        prepared: PreparedBatch,
    ) -> Result<BatchOutcome, DatasetError> {
        let PreparedBatch {
            batch_id,
            outcomes,
            commit,
        } = prepared;
        let (snapshot, committed) = match commit {
            Some(pending) => (batch::commit(pending, &self.cfg.branch).await?, true),
            None => (self.branch_tip().await?, false),
        };
        Ok(BatchOutcome {
            batch_id,
            snapshot,
            committed,
            outcomes,
        })
    }

    /// The snapshot that recorded `batch_id`, searching the newest `depth` commits of the branch
    /// (used after an ambiguous commit failure: the write may have landed).
    pub async fn find_batch(
        &self,
        batch_id: &str,
        depth: usize,
    ) -> Result<Option<String>, DatasetError> {
        history::find_batch(&self.repo, &self.cfg.branch, batch_id, depth).await
    }

    /// Which time indices in `[from, to)` hold a granule, read in bulk from `granule_present`
    /// (one chunk per 131,072 steps) at the branch tip.
    pub async fn present_in(&self, from: u64, to: u64) -> Result<BTreeSet<u64>, DatasetError> {
        let store = self.store(false).await?;
        let len = store_io::time_len(&store, &self.cfg.profile).await?;
        status::present_in(&store, len, from, to).await
    }

    /// A read-only store at snapshot `id` (virtual chunks readable with the dataset's
    /// credentials).
    pub async fn store_at(&self, id: &str) -> Result<Store, DatasetError> {
        let id = icechunk::format::SnapshotId::try_from(id)
            .map_err(|e| DatasetError::Config(format!("snapshot id {id:?}: {e}")))?;
        let session = self
            .repo
            .readonly_session(&VersionInfo::SnapshotId(id))
            .await
            .map_err(DatasetError::ic)?;
        Ok(Store::from_session(Arc::new(RwLock::new(session))).await)
    }

    /// Which time indices in `[from, to)` hold a granule in `store` (a store of this dataset at
    /// any snapshot, see [`Dataset::store_at`]).
    pub async fn present_in_store(
        &self,
        store: &Store,
        from: u64,
        to: u64,
    ) -> Result<BTreeSet<u64>, DatasetError> {
        let len = store_io::time_len(store, &self.cfg.profile).await?;
        status::present_in(store, len, from, to).await
    }

    /// Time range, granules present, gaps, commits and manifests at the branch tip.
    pub async fn status(&self) -> Result<Status, DatasetError> {
        let store = self.store(false).await?;
        status::status(&self.repo, &self.cfg, &store).await
    }

    /// [`Dataset::status`] for unauthenticated callers (GetStatus): computed once per branch
    /// move and shared. Within a second of the last computation it is served as is; after,
    /// one read of the branch tip tells whether it still holds. Concurrent callers wait for one
    /// computation instead of each reading the store (review L9).
    pub async fn status_shared(&self) -> Result<Arc<Status>, DatasetError> {
        let mut last = self.last_status.lock().await;
        if let Some((s, at)) = last.as_ref() {
            if at.elapsed() < STATUS_FRESH_FOR {
                return Ok(Arc::clone(s));
            }
            let tip = self.branch_tip().await?;
            if s.last_commit.as_ref().is_some_and(|c| c.id == tip) {
                let s = Arc::clone(s);
                *last = Some((Arc::clone(&s), std::time::Instant::now()));
                return Ok(s);
            }
        }
        let s = Arc::new(self.status().await?);
        *last = Some((Arc::clone(&s), std::time::Instant::now()));
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::test_support::{granule, open};

    #[tokio::test]
    async fn branch_tip_follows_the_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (src, repo) = (dir.path().join("src"), dir.path().join("repo"));
        let ds = open(&repo, &src).await;
        let initial = ds.branch_tip().await.unwrap();
        let st = ds.status().await.unwrap();
        assert_eq!(st.last_commit.map(|c| c.id), Some(initial.clone()));

        let g = granule(&src, "2020-01-01T00:00:00Z");
        let out = ds
            .commit_batch(std::slice::from_ref(&g), "b1")
            .await
            .unwrap();
        assert!(out.committed);
        let tip = ds.branch_tip().await.unwrap();
        assert_ne!(tip, initial);
        assert_eq!(tip, out.snapshot);
        // A batch that changes nothing reports the tip.
        let again = ds
            .commit_batch(std::slice::from_ref(&g), "b2")
            .await
            .unwrap();
        assert_eq!((again.committed, again.snapshot), (false, tip));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_opens_a_repository_created_while_it_waits() {
        let dir = tempfile::tempdir().unwrap();
        let (src, repo) = (dir.path().join("src"), dir.path().join("repo"));
        let location = RepoLocation::Local(repo.clone());
        let creator = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1_200)).await;
            open(&repo, &src).await;
        });
        let started = tokio::time::Instant::now();
        let ds = Dataset::wait_for(
            &location,
            ProductProfile::final_v07b(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        creator.await.unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(1_200) && waited <= Duration::from_millis(2_000),
            "opened after {waited:?}"
        );
        assert!(
            ds.config().source.url_prefix.ends_with("/src/"),
            "source container taken from the repository: {}",
            ds.config().source.url_prefix
        );
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_gives_up_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let location = RepoLocation::Local(dir.path().join("never"));
        let started = tokio::time::Instant::now();
        let err = Dataset::wait_for(
            &location,
            ProductProfile::final_v07b(),
            Duration::from_millis(1_750),
        )
        .await
        .unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_millis(1_750));
        assert_eq!(err.label(), "config");
        let msg = err.to_string();
        assert!(msg.contains("did not appear within 1.75s"), "{msg}");
        assert!(msg.contains("no repository at"), "{msg}");
    }
}
