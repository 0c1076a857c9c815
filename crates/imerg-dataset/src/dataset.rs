//! The dataset in an Icechunk repository: open or create it, apply a batch of granules in one
//! commit (position from each granule's time index, duplicates as no-ops, replaced sources
//! re-pointed, other layouts rejected), find whether a batch already landed, and read status.
//! [`Dataset`] is the facade; the work is done in `open`, `batch`, `history` and `status`.

use std::collections::BTreeSet;
use std::sync::Arc;

use icechunk::repository::VersionInfo;
use icechunk::{Repository, Store};
use imerg_catalog::ProductProfile;
use imerg_refs::GranuleRefs;
use tokio::sync::RwLock;

use crate::batch::{self, BatchOutcome, PreparedBatch};
use crate::status::{self, Status};
use crate::{DatasetConfig, DatasetError, RepoLocation, history, open, store_io};

/// One IMERG dataset in one Icechunk repository.
#[derive(Debug)]
pub struct Dataset {
    repo: Repository,
    cfg: DatasetConfig,
}

impl Dataset {
    /// Opens the repository, or creates it (with the source container and manifest splitting
    /// persisted in its config) if there is none.
    pub async fn open_or_create(
        location: &RepoLocation,
        cfg: DatasetConfig,
    ) -> Result<Self, DatasetError> {
        let repo = open::open_or_create(location, &cfg).await?;
        Ok(Self { repo, cfg })
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

    /// Time range, granules present, gaps, commits and manifests at the branch tip.
    pub async fn status(&self) -> Result<Status, DatasetError> {
        let store = self.store(false).await?;
        status::status(&self.repo, &self.cfg, &store).await
    }
}
