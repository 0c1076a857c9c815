//! The `native` role: one writer that keeps the native store within `lag` of the virtual store.
//! It polls the virtual branch; once the oldest virtual commit the native store does not reflect
//! is `lag` old, it applies every change since the snapshot the native store records (Icechunk's
//! diff: new, late and replaced granules alike), one commit per time block, the last recording
//! the virtual snapshot. A crash between commits repeats the update from the recorded snapshot:
//! writing a step twice writes the same values, so nothing is applied twice in effect.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use icechunk::repository::VersionInfo;
use imerg_dataset::Dataset;
use imerg_metrics as m;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::changes::{changed_steps, present_steps};
use crate::repo::{kind, record};
use crate::writer::{BlockJob, MAX_FRAMES, sync_metadata, write_block};
use crate::{NativeError, NativeLayout, NativeRepo, WriteStats};

/// How the follower runs.
#[derive(Debug, Clone)]
pub struct FollowerConfig {
    /// How long a virtual commit may wait before the native store gets it (updates batch
    /// everything that arrived meanwhile).
    pub lag: Duration,
    /// How often the virtual branch is looked at.
    pub poll: Duration,
    pub layout: NativeLayout,
    /// Snapshot expiry and garbage collection of the native repository (each update leaves the
    /// previous version of the current block's shards behind); None: never.
    pub maintenance: Option<imerg_dataset::MaintenanceConfig>,
}

impl Default for FollowerConfig {
    fn default() -> Self {
        Self {
            lag: Duration::from_secs(24 * 3600),
            poll: Duration::from_secs(30),
            layout: NativeLayout::default(),
            maintenance: None,
        }
    }
}

/// What the follower last saw, for `GetStatus` and `status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NativeStatus {
    /// The virtual snapshot the native store reflects.
    pub virtual_snapshot: Option<String>,
    pub native_snapshot: Option<String>,
    /// Age of the oldest virtual commit not reflected yet (0 when caught up).
    pub lag_seconds: f64,
    /// Granules the native store holds (present at `virtual_snapshot`).
    pub granules_present: u64,
    pub last_update: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// When the oldest virtual commit after `applied` (or the first, if None) was made; None if
/// every commit up to `tip` is applied.
async fn oldest_unapplied(
    virt: &Dataset,
    tip: &str,
    applied: Option<&str>,
) -> Result<Option<DateTime<Utc>>, NativeError> {
    let id = icechunk::format::SnapshotId::try_from(tip)
        .map_err(|e| NativeError::Config(e.to_string()))?;
    let mut stream = std::pin::pin!(
        virt.repository()
            .ancestry(&VersionInfo::SnapshotId(id))
            .await
            .map_err(NativeError::ic)?
    );
    let mut oldest = None;
    while let Some(info) = stream.try_next().await.map_err(NativeError::ic)? {
        if Some(info.id.to_string().as_str()) == applied || info.parent_id.is_none() {
            break;
        }
        oldest = Some(info.flushed_at);
    }
    Ok(oldest)
}

/// The native store's coverage and lag as its commits record them, against the virtual store's
/// branch tip now (for `status` and a starting follower).
pub async fn native_status(
    virt: &Dataset,
    native: &NativeRepo,
) -> Result<NativeStatus, NativeError> {
    let tip = virt.branch_tip().await?;
    let applied = native.applied().await?;
    let v = applied.as_ref().map(|a| a.virtual_snapshot.clone());
    let lag = match oldest_unapplied(virt, &tip, v.as_deref()).await? {
        Some(t) => (Utc::now() - t).to_std().unwrap_or_default().as_secs_f64(),
        None => 0.0,
    };
    let granules_present = match &v {
        Some(v) => present_steps(virt, v, 0, u64::MAX).await?.len() as u64,
        None => 0,
    };
    Ok(NativeStatus {
        virtual_snapshot: v,
        native_snapshot: applied.as_ref().map(|a| a.native_snapshot.clone()),
        lag_seconds: lag,
        granules_present,
        last_update: applied.map(|a| a.time),
        last_error: None,
    })
}

/// The native writer.
#[derive(Debug, Clone)]
pub struct Follower {
    virt: Arc<Dataset>,
    native: NativeRepo,
    cfg: FollowerConfig,
    status: Arc<Mutex<NativeStatus>>,
    last_maintenance: Arc<Mutex<Option<Instant>>>,
}

impl Follower {
    pub fn new(virt: Arc<Dataset>, native: NativeRepo, cfg: FollowerConfig) -> Self {
        Self {
            virt,
            native,
            cfg,
            status: Arc::default(),
            last_maintenance: Arc::default(),
        }
    }

    /// Expiry and garbage collection of the native repository, at most every `every`.
    async fn maintain(&self) {
        let Some(cfg) = &self.cfg.maintenance else {
            return;
        };
        let due = self
            .last_maintenance
            .lock()
            .map(|l| l.is_none_or(|t| t.elapsed() >= cfg.every))
            .unwrap_or(false);
        if !due {
            return;
        }
        match imerg_dataset::maintenance::run_on_repository(self.native.repository(), cfg).await {
            Ok(r) => tracing::info!(
                snapshots_released = r.snapshots_released,
                bytes_deleted = r.bytes_deleted,
                "native repository maintenance"
            ),
            Err(e) => tracing::warn!(error = %e, "native repository maintenance failed"),
        }
        if let Ok(mut l) = self.last_maintenance.lock() {
            *l = Some(Instant::now());
        }
    }

    /// A handle on the follower's status, updated as it runs.
    pub fn status(&self) -> Arc<Mutex<NativeStatus>> {
        Arc::clone(&self.status)
    }

    fn set_status(&self, f: impl FnOnce(&mut NativeStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    /// Runs until `shutdown`; an update in progress is finished or abandoned at the next column
    /// (its commits so far are partial and are repeated on the next start).
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(lag = ?self.cfg.lag, "native writer following the virtual store");
        metrics::gauge!(m::NATIVE_LAG_TARGET_SECONDS).set(self.cfg.lag.as_secs_f64());
        match native_status(&self.virt, &self.native).await {
            Ok(st) => {
                metrics::gauge!(m::NATIVE_GRANULES_PRESENT).set(st.granules_present as f64);
                metrics::gauge!(m::NATIVE_LAG_SECONDS).set(st.lag_seconds);
                self.set_status(|s| *s = st);
            }
            Err(e) => tracing::warn!(error = %e, "reading the native store's status"),
        }
        loop {
            let wait = match self.step().await {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(error = %e, "native update failed; trying again");
                    metrics::counter!(m::NATIVE_UPDATES, "outcome" => "error").increment(1);
                    self.set_status(|s| s.last_error = Some(e.to_string()));
                    self.cfg.poll
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!("native writer stopped");
    }

    /// One look at the virtual store: update if the lag is reached. Returns how long to wait.
    async fn step(&self) -> Result<Duration, NativeError> {
        let tip = self.virt.branch_tip().await?;
        let applied = self.native.applied().await?;
        let applied_v = applied.as_ref().map(|a| a.virtual_snapshot.clone());
        if applied_v.as_deref() == Some(tip.as_str()) {
            metrics::gauge!(m::NATIVE_LAG_SECONDS).set(0.0);
            self.set_status(|s| {
                s.lag_seconds = 0.0;
                s.virtual_snapshot = applied_v.clone();
                s.native_snapshot = applied.as_ref().map(|a| a.native_snapshot.clone());
            });
            return Ok(self.cfg.poll);
        }
        let Some(oldest) = oldest_unapplied(&self.virt, &tip, applied_v.as_deref()).await? else {
            return Ok(self.cfg.poll);
        };
        let age = (Utc::now() - oldest).to_std().unwrap_or_default();
        metrics::gauge!(m::NATIVE_LAG_SECONDS).set(age.as_secs_f64());
        self.set_status(|s| s.lag_seconds = age.as_secs_f64());
        if age < self.cfg.lag {
            return Ok(self.cfg.poll.min(self.cfg.lag - age));
        }
        self.update_to(&tip, applied_v.as_deref()).await?;
        self.maintain().await;
        Ok(Duration::ZERO)
    }

    /// Applies every virtual change up to the branch tip now, whatever the lag; returns what it
    /// wrote (None if already current).
    pub async fn update_now(&self) -> Result<Option<WriteStats>, NativeError> {
        let tip = self.virt.branch_tip().await?;
        let applied = self.native.applied().await?;
        let applied_v = applied.map(|a| a.virtual_snapshot);
        if applied_v.as_deref() == Some(tip.as_str()) {
            return Ok(None);
        }
        self.update_to(&tip, applied_v.as_deref()).await.map(Some)
    }

    async fn update_to(&self, tip: &str, applied: Option<&str>) -> Result<WriteStats, NativeError> {
        let started = Instant::now();
        let steps: BTreeSet<u64> = match applied {
            Some(from) => match changed_steps(&self.virt, from, tip).await? {
                Some(s) => s,
                None => present_steps(&self.virt, tip, 0, u64::MAX).await?,
            },
            None => present_steps(&self.virt, tip, 0, u64::MAX).await?,
        };
        let layout = self.cfg.layout;
        let mut by_block: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for t in &steps {
            by_block.entry(layout.block_of(*t)).or_default().push(*t);
        }
        let vstore = self.virt.store_at(tip).await?;
        let mut stats = WriteStats::default();
        let blocks = by_block.len();
        let mut last = None;
        if blocks == 0 {
            let store = self.native.writable().await?;
            sync_metadata(&store, &vstore, &layout).await?;
            last = Some(
                self.native
                    .commit(
                        &store,
                        "native: metadata",
                        record(kind::FOLLOW, tip, json!({"steps": 0})),
                    )
                    .await?,
            );
        }
        for (i, (block, block_steps)) in by_block.into_iter().enumerate() {
            let store = self.native.writable().await?;
            let arrays = sync_metadata(&store, &vstore, &layout).await?;
            let job = BlockJob {
                block,
                columns: None,
                steps: &block_steps,
                compact_above: MAX_FRAMES,
            };
            let s = write_block(&store, &vstore, &layout, &arrays, job).await?;
            stats += s;
            let complete = i + 1 == blocks;
            let (k, msg) = if complete {
                (
                    kind::FOLLOW,
                    format!(
                        "native: {} steps up to the virtual snapshot {tip}",
                        steps.len()
                    ),
                )
            } else {
                (
                    kind::FOLLOW_PART,
                    format!("native: block {block} ({} steps)", block_steps.len()),
                )
            };
            let rec = record(k, tip, json!({"block": block, "steps": block_steps.len()}));
            last = Some(self.native.commit(&store, &msg, rec).await?);
        }
        let elapsed = started.elapsed();
        metrics::histogram!(m::NATIVE_UPDATE_SECONDS).record(elapsed.as_secs_f64());
        metrics::counter!(m::NATIVE_BYTES_WRITTEN).increment(stats.bytes_written);
        metrics::counter!(m::NATIVE_STEPS_APPLIED).increment(stats.values_written);
        metrics::counter!(m::NATIVE_UPDATES, "outcome" => "ok").increment(1);
        metrics::gauge!(m::NATIVE_LAG_SECONDS).set(0.0);
        let present = self
            .virt
            .present_in_store(&vstore, 0, u64::MAX)
            .await
            .map(|p| p.len())
            .unwrap_or_default();
        metrics::gauge!(m::NATIVE_GRANULES_PRESENT).set(present as f64);
        let present = present as u64;
        tracing::info!(
            steps = steps.len(),
            blocks,
            bytes = stats.bytes_written,
            shards = stats.shards_written,
            seconds = elapsed.as_secs_f64(),
            virtual_snapshot = %tip,
            "native store updated"
        );
        self.set_status(|s| {
            s.virtual_snapshot = Some(tip.to_string());
            s.native_snapshot = last;
            s.lag_seconds = 0.0;
            s.last_update = Some(Utc::now());
            s.last_error = None;
            s.granules_present = present;
        });
        Ok(stats)
    }
}
