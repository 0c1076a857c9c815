//! Snapshot expiry and garbage collection, so the repository's metadata and superseded manifests
//! do not grow without bound: every commit rewrites the newest manifest split of each array and
//! adds a snapshot to the repo info; expiry drops snapshots older than the retention and GC deletes
//! what only they referenced.

use std::num::{NonZeroU16, NonZeroUsize};
use std::time::Duration;

use icechunk::ops::expiration::{ExpiredRefAction, expire};
use icechunk::ops::gc::{GCConfig, garbage_collect};

use crate::{Dataset, DatasetError};

/// When and how far back to clean.
#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    /// Keep snapshots (and what they reference) younger than this.
    pub retention: Duration,
    /// Run at most this often (checked after each batch).
    pub every: Duration,
}

/// What one maintenance run did.
#[derive(Debug, Clone, Default)]
pub struct MaintenanceReport {
    pub snapshots_released: u64,
    pub manifests_deleted: u64,
    pub snapshots_deleted: u64,
    pub bytes_deleted: u64,
}

fn nz16(v: u16) -> NonZeroU16 {
    NonZeroU16::new(v).unwrap_or(NonZeroU16::MIN)
}

fn nzusize(v: usize) -> NonZeroUsize {
    NonZeroUsize::new(v).unwrap_or(NonZeroUsize::MIN)
}

/// Expires snapshots older than the retention, then garbage-collects unreachable objects older
/// than it. Branch tips are never expired.
pub async fn run(
    dataset: &Dataset,
    cfg: &MaintenanceConfig,
) -> Result<MaintenanceReport, DatasetError> {
    let repo = dataset.repository();
    let cutoff = chrono::Utc::now()
        - chrono::Duration::from_std(cfg.retention).unwrap_or(chrono::Duration::days(7));
    let am = std::sync::Arc::clone(repo.asset_manager());
    let retries = repo.config().repo_update_retries();
    let n = repo.config().num_updates_per_repo_info_file();
    let expired = expire(
        std::sync::Arc::clone(&am),
        cutoff,
        ExpiredRefAction::Ignore,
        ExpiredRefAction::Ignore,
        Some(retries),
        n,
    )
    .await
    .map_err(DatasetError::ic)?;
    let gc = GCConfig::clean_all(
        cutoff,
        cutoff,
        None,
        nz16(50),
        nzusize(256 * 1024 * 1024),
        nzusize(1024 * 1024 * 1024),
        nz16(16),
        nz16(16),
        nz16(50),
        None,
        false,
    );
    let summary = garbage_collect(am, &gc, Some(retries), n)
        .await
        .map_err(DatasetError::ic)?;
    Ok(MaintenanceReport {
        snapshots_released: expired.released_snapshots.len() as u64,
        manifests_deleted: summary.manifests_deleted,
        snapshots_deleted: summary.snapshots_deleted,
        bytes_deleted: summary.bytes_deleted,
    })
}
