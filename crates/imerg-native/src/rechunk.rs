//! The batch rechunk: the virtual store's present steps in a time range, written into the native
//! store one region (time block x shard column, every data variable) per commit. Each region
//! commit records the virtual snapshot it reflects, so a re-run skips regions already done
//! (unless the virtual store changed them since) and finishes the rest. `--shard I/N` takes every
//! N-th region: N jobs write disjoint regions of one repository, rebasing onto each other's
//! commits (Icechunk's conflict detector passes disjoint chunk writes).

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::time::{Duration, Instant};

use imerg_dataset::Dataset;
use serde_json::json;

use crate::changes::{changed_steps, present_steps};
use crate::repo::{kind, record};
use crate::writer::{BlockJob, sync_metadata, write_block};
use crate::{NativeError, NativeLayout, NativeRepo, WriteStats};

/// `I/N`: this job takes regions `I, I+N, I+2N, ...` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardOf {
    pub index: u64,
    pub count: u64,
}

impl FromStr for ShardOf {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected I/N with 0 <= I < N, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<u64>().map_err(|_| bad())?,
            n.trim().parse::<u64>().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

/// What to rechunk.
#[derive(Debug, Clone, Default)]
pub struct RechunkOptions {
    /// Time indices `[start, end)`; None for the whole record.
    pub start: Option<u64>,
    pub end: Option<u64>,
    pub shard: Option<ShardOf>,
    /// The virtual snapshot to read (default: the branch tip when the run starts). Jobs of one
    /// sharded run should share it.
    pub virtual_snapshot: Option<String>,
    pub layout: NativeLayout,
}

/// What a rechunk did.
#[derive(Debug, Clone, Default)]
pub struct RechunkReport {
    pub virtual_snapshot: String,
    pub regions: u64,
    pub regions_written: u64,
    pub regions_skipped: u64,
    /// Present time steps in the range.
    pub granules: u64,
    pub stats: WriteStats,
    pub elapsed: Duration,
    /// True if this run recorded the store as complete at `virtual_snapshot`.
    pub completed: bool,
}

/// Progress of a run: regions handled so far, of how many, and granule-steps written.
pub type Progress<'a> = &'a mut (dyn FnMut(u64, u64, &WriteStats) + Send);

/// Whether a region is done relative to the run's virtual snapshot: written at it, or at an
/// earlier one whose changes since do not touch the region's block.
struct Done<'a> {
    virt: &'a Dataset,
    target: &'a str,
    layout: NativeLayout,
    changed_since: HashMap<String, Option<BTreeSet<u64>>>,
}

impl<'a> Done<'a> {
    fn new(virt: &'a Dataset, target: &'a str, layout: NativeLayout) -> Self {
        Self {
            virt,
            target,
            layout,
            changed_since: HashMap::new(),
        }
    }

    async fn is_done(
        &mut self,
        finished: &HashMap<(u64, u64), String>,
        (block, column): (u64, u64),
    ) -> Result<bool, NativeError> {
        let Some(at) = finished.get(&(block, column)) else {
            return Ok(false);
        };
        if !self.changed_since.contains_key(at) {
            let c = changed_steps(self.virt, at, self.target).await?;
            self.changed_since.insert(at.clone(), c);
        }
        let lo = block * self.layout.block;
        Ok(self
            .changed_since
            .get(at)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.range(lo..lo + self.layout.block).next().is_none()))
    }
}

/// Rechunks as `opts` says, reporting progress after each region.
pub async fn rechunk(
    virt: &Dataset,
    native: &NativeRepo,
    opts: &RechunkOptions,
    progress: Progress<'_>,
) -> Result<RechunkReport, NativeError> {
    let started = Instant::now();
    let layout = opts.layout;
    let v = match &opts.virtual_snapshot {
        Some(v) => v.clone(),
        None => virt.branch_tip().await?,
    };
    let vstore = virt.store_at(&v).await?;
    let (from, to) = (opts.start.unwrap_or(0), opts.end.unwrap_or(u64::MAX));
    let present = present_steps(virt, &v, from, to).await?;
    let mut report = RechunkReport {
        virtual_snapshot: v.clone(),
        granules: present.len() as u64,
        ..Default::default()
    };

    // The regions with something to write, in (block, column) order.
    let probe = native.writable().await?;
    let arrays = sync_metadata(&probe, &vstore, &layout).await?;
    drop(probe);
    let Some(columns) = arrays.first().map(|a| a.shard_grid(&layout)[0]) else {
        return Err(NativeError::Metadata(
            "the virtual store has no data variables".into(),
        ));
    };
    let blocks: BTreeSet<u64> = present.iter().map(|t| layout.block_of(*t)).collect();
    let all: Vec<(u64, u64)> = blocks
        .iter()
        .flat_map(|b| (0..columns).map(move |c| (*b, c)))
        .collect();
    let regions: Vec<(u64, u64)> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| opts.shard.is_none_or(|s| *i as u64 % s.count == s.index))
        .map(|(_, r)| *r)
        .collect();
    report.regions = regions.len() as u64;

    let mut done = Done::new(virt, &v, layout);
    let finished = native.finished_regions().await?;
    for (n, region) in regions.iter().copied().enumerate() {
        let (block, column) = region;
        if done.is_done(&finished, region).await? {
            report.regions_skipped += 1;
            progress(n as u64 + 1, report.regions, &report.stats);
            continue;
        }
        let lo = block * layout.block;
        let hi = lo + layout.block;
        let steps: Vec<u64> = present.range(lo.max(from)..hi.min(to)).copied().collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let store = native.writable().await?;
            let arrays = sync_metadata(&store, &vstore, &layout).await?;
            let job = BlockJob {
                block,
                columns: Some(&[column]),
                steps: &steps,
                // Written once: one frame per run of data.
                compact_above: 1,
            };
            let stats = write_block(&store, &vstore, &layout, &arrays, job).await?;
            let rec = record(
                kind::REGION,
                &v,
                json!({"block": block, "column": column, "steps": steps.len()}),
            );
            let msg = format!(
                "rechunk: block {block} column {column} ({} steps)",
                steps.len()
            );
            match native.commit(&store, &msg, rec).await {
                Ok(_) => {
                    report.stats += stats;
                    report.regions_written += 1;
                    break;
                }
                Err(e) if attempt < 3 => {
                    tracing::warn!(block, column, error = %e, "region commit failed; writing it again");
                }
                Err(e) => return Err(e),
            }
        }
        progress(n as u64 + 1, report.regions, &report.stats);
    }

    // The whole record: once every region (this job's and the other jobs') is done, the store
    // reflects `v` completely, and the follower starts from there.
    if opts.start.is_none() && opts.end.is_none() {
        let finished = native.finished_regions().await?;
        let mut complete = true;
        for r in &all {
            if !done.is_done(&finished, *r).await? {
                complete = false;
                break;
            }
        }
        if complete {
            let store = native.writable().await?;
            sync_metadata(&store, &vstore, &layout).await?;
            native
                .commit(
                    &store,
                    &format!("rechunk complete at the virtual snapshot {v}"),
                    record(kind::RECHUNK_COMPLETE, &v, json!({"steps": present.len()})),
                )
                .await?;
            report.completed = true;
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shard_of_parses_and_checks() {
        assert_eq!(
            "1/4".parse::<ShardOf>().unwrap(),
            ShardOf { index: 1, count: 4 }
        );
        for bad in ["4/4", "1/0", "x/2", "3"] {
            assert!(bad.parse::<ShardOf>().is_err(), "{bad}");
        }
    }
}
