//! The reconciliation sweep: notifications get lost (CMR subscriptions are at-least-once, not
//! exactly-complete; queues get purged), so on a schedule the service compares what the store
//! holds over a trailing window with what exists: the source's day prefixes (S3 ListObjectsV2 or a
//! local directory) and, optionally, an inventory such as CMR's granule search. Granules that
//! exist but are missing go through the normal ingest path; what is still missing afterwards, and
//! how much of it is overdue (older than the product's expected latency), is published.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use imerg_catalog::{GranuleId, ProductProfile, TimeRange};
use imerg_dataset::Dataset;
use imerg_metrics as m;
use imerg_pipeline::{Ingestor, Origin};
use imerg_source::Source;
use tokio_util::sync::CancellationToken;

/// Another view of what exists (CMR's granule search): references (URLs, keys or file names)
/// of the granules it knows in a range.
#[async_trait]
pub trait Inventory: Send + Sync + std::fmt::Debug + 'static {
    async fn references(&self, range: TimeRange) -> Result<Vec<String>, String>;
    /// For logs and the report.
    fn name(&self) -> &str;
}

/// When and how far back the sweep looks.
#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    /// Time between sweeps.
    pub every: Duration,
    /// The trailing window a sweep checks, ending now (or at the end of a closed record).
    pub window: Duration,
    /// Granules ingested at once.
    pub max_in_flight: usize,
    /// Most keys listed per day prefix (a day holds 48 granules).
    pub list_limit: usize,
}

/// What a sweep found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    pub finished: DateTime<Utc>,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    /// Granules the window should hold.
    pub expected: u64,
    /// Of those, already in the store before the sweep.
    pub present: u64,
    /// Missing granules found at the source or in the inventory.
    pub found: u64,
    /// Of those, ingested now.
    pub ingested: u64,
    /// Of those, not ingested (bad input, fetch failure): counted and logged by the ingest path.
    pub failed: u64,
    /// Granules of the window still missing after the sweep.
    pub still_missing: u64,
    /// Of those, older than the product's expected latency (they should exist by now).
    pub overdue: u64,
    /// The first still-missing granules' keys (at most 100).
    pub missing: Vec<String>,
    /// Why the inventory could not be asked, if it could not.
    pub inventory_error: Option<String>,
}

/// The last sweep's report, shared with GetStatus.
#[derive(Debug, Default)]
pub struct SweepState(Mutex<Option<SweepReport>>);

impl SweepState {
    pub fn last(&self) -> Option<SweepReport> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, r: SweepReport) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
    }
}

/// Everything a sweep uses.
#[derive(Debug, Clone)]
pub struct Reconciler {
    pub cfg: ReconcileConfig,
    pub profile: Arc<ProductProfile>,
    pub dataset: Arc<Dataset>,
    pub source: Arc<Source>,
    pub inventory: Option<Arc<dyn Inventory>>,
    pub ingestor: Ingestor,
}

/// The directory of a key (`GPM_L3/<collection>/YYYY/DDD/`).
fn day_prefix(key: &str) -> &str {
    key.rfind('/').map_or("", |i| &key[..=i])
}

impl Reconciler {
    /// The window ending now, or at the end of a closed record, clipped to the record.
    pub fn window(&self, now: DateTime<Utc>) -> Option<TimeRange> {
        let record = self.profile.record(now);
        let end = record.end.min(now);
        let back = chrono::Duration::from_std(self.cfg.window).unwrap_or(chrono::Duration::days(7));
        let start = record.start.max(end - back);
        (start < end).then_some(TimeRange { start, end })
    }

    /// One sweep over the window ending at `now`; stops early (with what it did) when cancelled.
    pub async fn sweep(
        &self,
        now: DateTime<Utc>,
        stop: &CancellationToken,
    ) -> Result<SweepReport, String> {
        let Some(window) = self.window(now) else {
            return Ok(SweepReport {
                finished: Utc::now(),
                window_start: now,
                window_end: now,
                expected: 0,
                present: 0,
                found: 0,
                ingested: 0,
                failed: 0,
                still_missing: 0,
                overdue: 0,
                missing: Vec::new(),
                inventory_error: None,
            });
        };
        let expected: Vec<GranuleId> = self.profile.expected(window).collect();
        let (Some(lo), Some(hi)) = (
            expected.first().map(|g| g.time_index),
            expected.last().map(|g| g.time_index),
        ) else {
            return Err("the window holds no granule".into());
        };
        let present = self
            .dataset
            .present_in(lo, hi.saturating_add(1))
            .await
            .map_err(|e| format!("reading the store: {e}"))?;
        let missing: BTreeMap<u64, &GranuleId> = expected
            .iter()
            .filter(|g| !present.contains(&g.time_index))
            .map(|g| (g.time_index, g))
            .collect();
        // What exists: the day prefixes of the missing granules, listed.
        let mut found: BTreeMap<u64, GranuleId> = BTreeMap::new();
        let days: BTreeSet<&str> = missing.values().map(|g| day_prefix(&g.key)).collect();
        for day in days {
            if stop.is_cancelled() {
                break;
            }
            let keys = self
                .source
                .list_keys(day, self.cfg.list_limit)
                .await
                .map_err(|e| format!("listing {day}: {e}"))?;
            for key in keys {
                if let Ok(id) = self.profile.parse_key(&key)
                    && missing.contains_key(&id.time_index)
                {
                    found.entry(id.time_index).or_insert(id);
                }
            }
        }
        // ... and what the inventory knows.
        let mut inventory_error = None;
        if let Some(inv) = &self.inventory {
            match inv.references(window).await {
                Ok(refs) => {
                    for r in refs {
                        if let Ok(id) = self.profile.parse_any(&r)
                            && missing.contains_key(&id.time_index)
                        {
                            found.entry(id.time_index).or_insert(id);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(inventory = inv.name(), error = %e, "the inventory did not answer; the sweep uses the source listing only");
                    inventory_error = Some(e);
                }
            }
        }
        metrics::counter!(m::RECONCILE_FOUND).increment(found.len() as u64);
        if !found.is_empty() {
            tracing::info!(
                found = found.len(),
                missing = missing.len(),
                "reconciliation: ingesting granules that were never announced"
            );
        }
        let results: Vec<(u64, bool)> = futures::stream::iter(found.values().cloned())
            .take_until(stop.cancelled())
            .map(|id| {
                let ingestor = self.ingestor.clone();
                async move {
                    let ok = ingestor.ingest(&id, Origin::Reconcile).await.is_ok();
                    (id.time_index, ok)
                }
            })
            .buffer_unordered(self.cfg.max_in_flight.max(1))
            .collect()
            .await;
        let landed: BTreeSet<u64> = results
            .iter()
            .filter(|(_, ok)| *ok)
            .map(|(t, _)| *t)
            .collect();
        let still: Vec<&&GranuleId> = missing
            .iter()
            .filter(|(t, _)| !landed.contains(t))
            .map(|(_, g)| g)
            .collect();
        let overdue = still
            .iter()
            .filter(|g| self.profile.due_at(g.start).is_some_and(|due| due <= now))
            .count() as u64;
        Ok(SweepReport {
            finished: Utc::now(),
            window_start: window.start,
            window_end: window.end,
            expected: expected.len() as u64,
            present: present.len() as u64,
            found: found.len() as u64,
            ingested: landed.len() as u64,
            failed: results.len().saturating_sub(landed.len()) as u64,
            still_missing: still.len() as u64,
            overdue,
            missing: still.iter().take(100).map(|g| g.key.clone()).collect(),
            inventory_error,
        })
    }

    /// Sweeps every `cfg.every` (the first at once) until `stop`, publishing each report.
    pub async fn run(self, state: Arc<SweepState>, stop: CancellationToken) {
        loop {
            match self.sweep(Utc::now(), &stop).await {
                Ok(r) => {
                    metrics::counter!(m::RECONCILE_SWEEPS, "result" => "ok").increment(1);
                    metrics::gauge!(m::RECONCILE_MISSING).set(r.still_missing as f64);
                    metrics::gauge!(m::RECONCILE_OVERDUE).set(r.overdue as f64);
                    metrics::gauge!(m::RECONCILE_LAST_SWEEP).set(r.finished.timestamp() as f64);
                    tracing::info!(
                        expected = r.expected,
                        present = r.present,
                        found = r.found,
                        ingested = r.ingested,
                        failed = r.failed,
                        still_missing = r.still_missing,
                        overdue = r.overdue,
                        "reconciliation sweep done"
                    );
                    state.set(r);
                }
                Err(e) => {
                    metrics::counter!(m::RECONCILE_SWEEPS, "result" => "error").increment(1);
                    tracing::warn!(error = %e, "reconciliation sweep failed; next one as scheduled");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.every) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_prefix_is_the_directory() {
        assert_eq!(day_prefix("GPM_L3/C/2026/063/a.HDF5"), "GPM_L3/C/2026/063/");
        assert_eq!(day_prefix("a.HDF5"), "");
    }
}
