//! Snapshot expiry and garbage collection, so the repository's metadata and superseded manifests
//! do not grow without bound: every commit rewrites the newest manifest split of each array and
//! adds a snapshot to the repo info; expiry drops snapshots older than the retention and GC deletes
//! what only they referenced.
//!
//! Icechunk 2.3.1 also copies the repository info object to `overwritten/repo.<time>.<id>` before
//! every update (each commit, expiry, GC) and nothing deletes these copies (icechunk issue #1852).
//! The only reader is the ops log, which follows the `repo_before_updates` chain (one pointer per
//! `num_updates_per_repo_info_file` updates); [`prune_repo_info_backups`] deletes the other copies
//! once they are older than the retention, keeping the chain and the copies that can still become
//! part of it.

use std::collections::HashSet;
use std::num::{NonZeroU16, NonZeroUsize};
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use icechunk::asset_manager::AssetManager;
use icechunk::format::{OVERWRITTEN_FILES_PATH, REPO_INFO_FILE_PATH};
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
    /// Copies of past repository info objects deleted from `overwritten/`.
    pub repo_info_backups_deleted: u64,
    pub repo_info_backup_bytes_deleted: u64,
}

/// How many of the oldest entries of the repository info's update list keep their backups: the
/// entry at position `num_updates_per_repo_info_file` becomes the ops log's chain pointer when the
/// list overflows, so a commit landing while the prune runs cannot point at a deleted copy.
const CHAIN_CANDIDATES: usize = 64;

/// Deletes copies of past repository info objects (`overwritten/repo.*`) created before `cutoff`,
/// except those the ops log reads: every file of the `repo_before_updates` chain, and the backups
/// of the oldest [`CHAIN_CANDIDATES`] updates in the current file (the next chain pointers).
/// Returns (objects, bytes) deleted.
pub async fn prune_repo_info_backups(
    am: &AssetManager,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> Result<(u64, u64), DatasetError> {
    let (info, _) = am.fetch_repo_info().await.map_err(DatasetError::ic)?;
    let mut keep = HashSet::new();
    let updates: Vec<Option<String>> = info
        .latest_updates()
        .map_err(DatasetError::ic)?
        .map(|u| u.map(|(_, _, path)| path.map(str::to_string)))
        .collect::<Result<_, _>>()
        .map_err(DatasetError::ic)?;
    keep.extend(
        updates
            .iter()
            .rev()
            .take(CHAIN_CANDIDATES)
            .flatten()
            .cloned(),
    );
    let mut next = info
        .repo_before_updates()
        .map_err(DatasetError::ic)?
        .map(str::to_string);
    while let Some(name) = next {
        if !keep.insert(name.clone()) {
            break;
        }
        next = match am.fetch_repo_info_backup(&name).await {
            Ok((older, _)) => older
                .repo_before_updates()
                .map_err(DatasetError::ic)?
                .map(str::to_string),
            // Already gone (an older chain was cut by hand): nothing further to protect.
            Err(e) => {
                tracing::warn!(backup = %name, error = %e, "ops log chain ends early");
                None
            }
        };
    }
    let storage = am.storage();
    let ctx = am.storage_context();
    let prefix = format!("{REPO_INFO_FILE_PATH}.");
    let doomed: Vec<(String, u64)> = storage
        .list_objects(&ctx, OVERWRITTEN_FILES_PATH)
        .await
        .map_err(DatasetError::ic)?
        .try_filter(|li| {
            std::future::ready(
                li.id.starts_with(&prefix) && li.created_at < cutoff && !keep.contains(&li.id),
            )
        })
        .map_ok(|li| (li.id, li.size_bytes))
        .try_collect()
        .await
        .map_err(DatasetError::ic)?;
    if doomed.is_empty() {
        return Ok((0, 0));
    }
    let res = storage
        .delete_objects(
            &ctx,
            OVERWRITTEN_FILES_PATH,
            futures::stream::iter(doomed).boxed(),
        )
        .await
        .map_err(DatasetError::ic)?;
    Ok((res.deleted_objects, res.deleted_bytes))
}

fn nz16(v: u16) -> NonZeroU16 {
    NonZeroU16::new(v).unwrap_or(NonZeroU16::MIN)
}

fn nzusize(v: usize) -> NonZeroUsize {
    NonZeroUsize::new(v).unwrap_or(NonZeroUsize::MIN)
}

/// Where expiry may stop so that nothing superseded less than the retention ago goes: on each
/// branch, the newest snapshot created before `cutoff` (it was the tip until its child came,
/// possibly just now; the snapshots before it were superseded before `cutoff`). The earliest of
/// these over all branches, `None` if no branch has a snapshot before `cutoff`.
///
/// Icechunk's `expire(older_than)` measures a snapshot's age from its creation, so on a quiet
/// branch (the Final run commits once a month) the tip replaced a second ago was expired at once
/// and its objects collected under a reader that had just opened it (review M4).
async fn superseded_before(
    repo: &icechunk::Repository,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, DatasetError> {
    let mut bound: Option<chrono::DateTime<chrono::Utc>> = None;
    for branch in repo.list_branches().await.map_err(DatasetError::ic)? {
        let history = repo
            .ancestry(&icechunk::repository::VersionInfo::BranchTipRef(branch))
            .await
            .map_err(DatasetError::ic)?;
        futures::pin_mut!(history);
        while let Some(info) = history.try_next().await.map_err(DatasetError::ic)? {
            if info.flushed_at < cutoff {
                bound = Some(bound.map_or(info.flushed_at, |b| b.min(info.flushed_at)));
                break;
            }
        }
    }
    Ok(bound)
}

/// Expires snapshots superseded more than the retention ago, garbage-collects unreachable
/// objects older than it, then prunes old repository info backups. Branch tips, and any
/// snapshot that was a tip within the retention, are never expired.
pub async fn run(
    dataset: &Dataset,
    cfg: &MaintenanceConfig,
) -> Result<MaintenanceReport, DatasetError> {
    run_on_repository(dataset.repository(), cfg).await
}

/// [`run`] on any repository (the native store's writer cleans its own repository with it).
pub async fn run_on_repository(
    repo: &icechunk::Repository,
    cfg: &MaintenanceConfig,
) -> Result<MaintenanceReport, DatasetError> {
    if imerg_crashpoint::armed(imerg_crashpoint::MAINTENANCE, "hang") {
        tracing::warn!("fault point maintenance: hanging");
        std::future::pending::<()>().await;
    }
    let cutoff = chrono::Utc::now()
        - chrono::Duration::from_std(cfg.retention).unwrap_or(chrono::Duration::days(7));
    let am = std::sync::Arc::clone(repo.asset_manager());
    let retries = repo.config().repo_update_retries();
    let n = repo.config().num_updates_per_repo_info_file();
    let released = match superseded_before(repo, cutoff).await? {
        Some(older_than) => expire(
            std::sync::Arc::clone(&am),
            older_than,
            ExpiredRefAction::Ignore,
            ExpiredRefAction::Ignore,
            Some(retries),
            n,
        )
        .await
        .map_err(DatasetError::ic)?
        .released_snapshots
        .len() as u64,
        None => 0,
    };
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
    let summary = garbage_collect(std::sync::Arc::clone(&am), &gc, Some(retries), n)
        .await
        .map_err(DatasetError::ic)?;
    let (backups, backup_bytes) = prune_repo_info_backups(&am, cutoff).await?;
    Ok(MaintenanceReport {
        snapshots_released: released,
        manifests_deleted: summary.manifests_deleted,
        snapshots_deleted: summary.snapshots_deleted,
        bytes_deleted: summary.bytes_deleted,
        repo_info_backups_deleted: backups,
        repo_info_backup_bytes_deleted: backup_bytes,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use futures::TryStreamExt as _;
    use icechunk::{Repository, RepositoryConfig, new_local_filesystem_storage};

    use super::*;

    async fn ops_log(repo: &Repository) -> Vec<String> {
        let (stream, _, _) = repo.ops_log().await.unwrap();
        stream
            .map_ok(|(t, u, _)| format!("{t} {u:?}"))
            .try_collect()
            .await
            .unwrap()
    }

    async fn backups(repo: &Repository) -> usize {
        repo.asset_manager()
            .list_overwritten_objects()
            .await
            .unwrap()
            .try_filter(|id| std::future::ready(id.starts_with("repo.")))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len()
    }

    async fn commits(repo: &Repository, from: usize, to: usize) {
        for i in from..to {
            let mut session = repo.writable_session("main").await.unwrap();
            let path = format!("/g{i}").try_into().unwrap();
            session
                .add_group(
                    path,
                    Bytes::from_static(b"{\"zarr_format\":3,\"node_type\":\"group\"}"),
                )
                .await
                .unwrap();
            session
                .commit(format!("commit {i}"))
                .execute()
                .await
                .unwrap();
        }
    }

    /// A repository in `dir` whose repo info file holds 5 updates (chains grow fast).
    async fn five_updates_per_file(
        dir: &std::path::Path,
    ) -> (Arc<dyn icechunk::Storage + Send + Sync>, Repository) {
        let storage = new_local_filesystem_storage(dir).await.unwrap();
        let config = RepositoryConfig {
            num_updates_per_repo_info_file: Some(5),
            ..Default::default()
        };
        let repo = Repository::create(Arc::clone(&storage))
            .config(config)
            .execute()
            .await
            .unwrap();
        (storage, repo)
    }

    /// With 5 updates per repo info file and 40 commits the ops log spans a chain of files;
    /// pruning deletes the other backups and the ops log, later commits and reopening still work.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pruning_backups_keeps_the_ops_log_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, repo) = five_updates_per_file(dir.path()).await;
        commits(&repo, 0, 100).await;
        let log = ops_log(&repo).await;
        assert_eq!(log.len(), 101, "100 commits and the creation");
        let before = backups(&repo).await;
        assert!(before >= 100, "{before} backups");

        // Nothing is old enough yet.
        let past = chrono::Utc::now() - chrono::Duration::hours(1);
        assert_eq!(
            prune_repo_info_backups(repo.asset_manager(), past)
                .await
                .unwrap(),
            (0, 0)
        );
        let cutoff = chrono::Utc::now() + chrono::Duration::seconds(5);
        let (deleted, bytes) = prune_repo_info_backups(repo.asset_manager(), cutoff)
            .await
            .unwrap();
        assert!(deleted > 0 && bytes > 0);
        let after = backups(&repo).await;
        assert_eq!(after, before - deleted as usize);
        // 5 entries of the current file, 20 chain files at most.
        assert!(after <= 5 + 20, "{after} backups left");
        assert_eq!(ops_log(&repo).await, log);

        // Later commits, another prune, and a fresh open still see the whole history.
        commits(&repo, 100, 110).await;
        let cutoff = chrono::Utc::now() + chrono::Duration::seconds(5);
        prune_repo_info_backups(repo.asset_manager(), cutoff)
            .await
            .unwrap();
        let reopened = Repository::open(storage).execute().await.unwrap();
        let log = ops_log(&reopened).await;
        assert_eq!(log.len(), 111);
        assert!(backups(&reopened).await <= 5 + 25);
    }

    /// Review M3: after a prune, each later commit shifts the ops log's chain onto other
    /// backups, and the pruned ones cut it short: after 1 to 4 more commits (n = 5) the log
    /// ended early (the first test only looked after 0 and 10, where the chains line up).
    /// What holds, at every shift: every update since the prune's cutoff is still in the log,
    /// newest first, and so is at least the whole current file and its first chain file. What
    /// went before the cutoff may be cut, as the snapshots of that age are expired.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_prune_every_update_within_the_retention_stays_in_the_ops_log() {
        let dir = tempfile::tempdir().unwrap();
        let (_, repo) = five_updates_per_file(dir.path()).await;
        commits(&repo, 0, 60).await;
        let cutoff = chrono::Utc::now() + chrono::Duration::seconds(1);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        prune_repo_info_backups(repo.asset_manager(), cutoff)
            .await
            .unwrap();
        for k in 1..=11 {
            commits(&repo, 59 + k, 60 + k).await;
            let log = ops_log(&repo).await;
            assert!(
                log.len() >= 10,
                "after {k} more commits: {} entries",
                log.len()
            );
            // The updates since the cutoff are the newest k, then the older ones follow.
            let fresh = ops_log_since(&repo, cutoff).await;
            assert_eq!(fresh, k, "after {k} more commits");
        }
    }

    /// Review M4: expiry measured a snapshot's age from its creation, so on a quiet branch the
    /// tip replaced a moment ago (created long before) was expired and collected at once, under
    /// a reader that had just opened it. Now only what was superseded before the cutoff goes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_tip_replaced_a_moment_ago_stays_readable() {
        let dir = tempfile::tempdir().unwrap();
        let (_, repo) = five_updates_per_file(dir.path()).await;
        commits(&repo, 0, 4).await;
        let replaced = repo.lookup_branch("main").await.unwrap();
        // Old by creation, but the tip until the next commit.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        commits(&repo, 4, 5).await;
        let cfg = MaintenanceConfig {
            retention: Duration::from_secs(1),
            every: Duration::from_secs(1),
        };
        let report = run_on_repository(&repo, &cfg).await.unwrap();
        assert!(report.snapshots_released >= 1, "{report:?}");
        let version = icechunk::repository::VersionInfo::SnapshotId(replaced);
        let session = repo.readonly_session(&version).await.unwrap();
        let path: icechunk::format::Path = "/g3".try_into().unwrap();
        assert!(
            session.get_node(&path).await.is_ok(),
            "the replaced tip is gone"
        );
    }

    /// How many updates of the ops log happened at or after `t`.
    async fn ops_log_since(repo: &Repository, t: chrono::DateTime<chrono::Utc>) -> usize {
        let (stream, _, _) = repo.ops_log().await.unwrap();
        stream
            .try_filter(|(at, _, _)| std::future::ready(*at >= t))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len()
    }
}
