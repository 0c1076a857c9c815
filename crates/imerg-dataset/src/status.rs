//! The read model at the branch tip: which time steps hold a granule, the gaps between them, and
//! the commits and manifests behind them.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use icechunk::repository::VersionInfo;
use icechunk::{Repository, Store};
use imerg_catalog::ProductProfile;
use serde::Serialize;

use crate::arrays::{PRESENT, TIME_CHUNK};
use crate::store_io;
use crate::{DatasetConfig, DatasetError};

/// What `status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub product: String,
    /// Length of the time axis (time index of the last position + 1).
    pub time_len: u64,
    pub first_granule: Option<DateTime<Utc>>,
    pub last_granule: Option<DateTime<Utc>>,
    pub granules_present: u64,
    /// Missing stretches between the first and last granule: `[start, end)` and their count.
    pub gaps: Vec<Gap>,
    pub commits: u64,
    pub last_commit: Option<CommitInfo>,
    /// The newest commits (up to [`RECENT_COMMITS`]), newest first.
    pub recent_commits: Vec<CommitInfo>,
    pub manifests: u64,
    pub largest_manifest_bytes: u64,
    pub manifest_bytes: u64,
    pub manifest_max_bytes: u64,
    pub references: u64,
}

/// Commits listed in [`Status::recent_commits`].
pub const RECENT_COMMITS: usize = 10;

#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub granules: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommitInfo {
    pub id: String,
    pub time: DateTime<Utc>,
    pub message: String,
}

/// Which time indices in `[from, to)` hold a granule, from the `granule_present` chunks of a store
/// whose time axis is `len` long.
pub(crate) async fn present_in(
    store: &Store,
    len: u64,
    from: u64,
    to: u64,
) -> Result<BTreeSet<u64>, DatasetError> {
    let to = to.min(len);
    let mut out = BTreeSet::new();
    if from >= to {
        return Ok(out);
    }
    for k in from / TIME_CHUNK..=(to - 1) / TIME_CHUNK {
        let Some(raw) = store_io::get_chunk(store, &format!("{PRESENT}/c/{k}")).await? else {
            continue;
        };
        for (j, flag) in raw.iter().enumerate() {
            let t = k * TIME_CHUNK + j as u64;
            if *flag != 0 && (from..to).contains(&t) {
                out.insert(t);
            }
        }
    }
    Ok(out)
}

/// The missing stretches between the first and last present time index.
fn gaps(profile: &ProductProfile, present: &BTreeSet<u64>) -> Vec<Gap> {
    let mut gaps = Vec::new();
    if let Some(&a) = present.first() {
        // (`range(a + 1..=last)` would panic on a store holding a single granule.)
        let mut prev = a;
        for &t in present.iter().skip(1) {
            if t > prev + 1 {
                gaps.push(Gap {
                    start: profile.start_of(prev + 1),
                    end: profile.start_of(t),
                    granules: t - prev - 1,
                });
            }
            prev = t;
        }
    }
    gaps
}

/// Time range, granules present, gaps, commits and manifests of `store`, a read-only session at
/// the tip of the configured branch of `repo`.
pub(crate) async fn status(
    repo: &Repository,
    cfg: &DatasetConfig,
    store: &Store,
) -> Result<Status, DatasetError> {
    let profile = &cfg.profile;
    let len = store_io::time_len(store, profile).await?;
    let present = present_in(store, len, 0, len).await?;
    let first = present.first().copied();
    let last = present.last().copied();
    let gaps = gaps(profile, &present);
    let history: Vec<_> = repo
        .ancestry(&VersionInfo::BranchTipRef(cfg.branch.clone()))
        .await
        .map_err(DatasetError::ic)?
        .try_collect()
        .await
        .map_err(DatasetError::ic)?;
    let recent_commits: Vec<CommitInfo> = history
        .iter()
        .take(RECENT_COMMITS)
        .map(|s| CommitInfo {
            id: s.id.to_string(),
            time: s.flushed_at,
            message: s.message.clone(),
        })
        .collect();
    let last_commit = recent_commits.first().cloned();
    let tip = repo
        .lookup_branch(&cfg.branch)
        .await
        .map_err(DatasetError::ic)?;
    let files: Vec<_> = repo
        .lookup_manifest_files(&tip)
        .await
        .map_err(DatasetError::ic)?
        .collect();
    Ok(Status {
        product: profile.id.clone(),
        time_len: len,
        first_granule: first.map(|t| profile.start_of(t)),
        last_granule: last.map(|t| profile.start_of(t)),
        granules_present: present.len() as u64,
        gaps,
        // The repository's initial snapshot is not a commit of ours.
        commits: history.len().saturating_sub(1) as u64,
        last_commit,
        recent_commits,
        manifests: files.len() as u64,
        largest_manifest_bytes: files.iter().map(|f| f.size_bytes).max().unwrap_or(0),
        manifest_bytes: files.iter().map(|f| f.size_bytes).sum(),
        manifest_max_bytes: cfg.manifest_max_bytes,
        references: files.iter().map(|f| u64::from(f.num_chunk_refs)).sum(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn gaps_lie_between_the_first_and_last_granule() {
        let p = ProductProfile::final_v07b();
        assert!(gaps(&p, &BTreeSet::new()).is_empty());
        assert!(gaps(&p, &BTreeSet::from([7])).is_empty());
        assert!(gaps(&p, &BTreeSet::from([3, 4, 5])).is_empty());
        let g = gaps(&p, &BTreeSet::from([10, 12, 13, 17]));
        let got: Vec<_> = g.iter().map(|g| (g.start, g.end, g.granules)).collect();
        assert_eq!(
            got,
            [
                (p.start_of(11), p.start_of(12), 1),
                (p.start_of(14), p.start_of(17), 3),
            ]
        );
    }
}
