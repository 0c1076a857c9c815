//! The single-writer commit service: takes granules from a bounded channel, batches them by count
//! and age, applies each batch in one commit, and tells every waiting caller only once the commit
//! holding its granule is durable. Failed commits are retried on a fresh session; first the
//! branch's recent history is searched for the batch id, since an ambiguous failure may have
//! landed (its callers then get what the plan said). A conflict, or a branch tip that is not the
//! one this committer left, means a second writer and fails the batch loudly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use imerg_refs::GranuleRefs;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::maintenance::{self, MaintenanceConfig};
use crate::{BatchOutcome, GranuleOutcome};
use crate::{ChunkToVerify, Dataset, DatasetError};
use imerg_metrics as m;

/// How the committer batches and retries.
#[derive(Debug, Clone)]
pub struct CommitterConfig {
    /// Commit when this many granules are waiting.
    pub max_batch: usize,
    /// Commit when the oldest waiting granule is this old.
    pub max_age: Duration,
    /// Commit a partial batch when no new granule arrived for this long (a burst has ended);
    /// a steady stream, like a backfill, keeps filling the batch up to `max_batch` / `max_age`.
    pub max_idle: Duration,
    /// Capacity of the request channel (callers wait when it is full).
    pub channel_capacity: usize,
    /// Attempts per batch before its granules are failed back to their callers.
    pub commit_attempts: u32,
    /// Snapshot expiry and garbage collection; `None` = off.
    pub maintenance: Option<MaintenanceConfig>,
    /// Chunks read back through the store (fetched from their source, decoded) after each
    /// commit, spread over the batch's new references; 0 = off. Runs beside the committer, one
    /// validation at a time (a commit that finds one still running skips its sample).
    pub validate_sample: usize,
}

impl Default for CommitterConfig {
    fn default() -> Self {
        Self {
            max_batch: 480,
            max_age: Duration::from_secs(2),
            max_idle: Duration::from_millis(250),
            channel_capacity: 1024,
            commit_attempts: 4,
            maintenance: None,
            validate_sample: 0,
        }
    }
}

/// What a caller gets back once its granule is durable (or known to be there already).
#[derive(Debug, Clone)]
pub struct AppendReceipt {
    pub key: String,
    pub outcome: GranuleOutcome,
    pub batch_id: String,
    pub snapshot: String,
}

struct Request {
    granule: GranuleRefs,
    reply: oneshot::Sender<Result<AppendReceipt, DatasetError>>,
}

/// Counters of the committer, for metrics and tests.
#[derive(Debug, Default)]
pub struct CommitterStats {
    pub commits: AtomicU64,
    pub batches: AtomicU64,
    pub granules_added: AtomicU64,
    pub granules_replaced: AtomicU64,
    pub granules_duplicate: AtomicU64,
    pub granules_rejected: AtomicU64,
    pub commit_failures: AtomicU64,
    pub ambiguous_landed: AtomicU64,
    pub second_writer: AtomicU64,
}

/// Sends granules to the committer. Cheap to clone; the committer stops (after committing what
/// it holds) when [`Committer::shutdown`] is called or every handle is dropped.
#[derive(Debug, Clone)]
pub struct CommitterHandle {
    tx: mpsc::Sender<Request>,
    stats: Arc<CommitterStats>,
}

impl CommitterHandle {
    /// Queues a granule and waits until the commit holding it is durable.
    pub async fn append(&self, granule: GranuleRefs) -> Result<AppendReceipt, DatasetError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { granule, reply })
            .await
            .map_err(|_| DatasetError::Shutdown)?;
        rx.await.map_err(|_| DatasetError::Shutdown)?
    }

    pub fn stats(&self) -> &Arc<CommitterStats> {
        &self.stats
    }
}

/// The running committer task.
#[derive(Debug)]
pub struct Committer {
    pub join: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
    finished: CancellationToken,
}

impl Committer {
    /// Cancelled when the committer task has ended, normally or by a panic: while the service
    /// runs, that is a dead committer (its liveness check reports it).
    pub fn finished(&self) -> CancellationToken {
        self.finished.clone()
    }

    /// The final commit, explicitly: stops taking granules (later appends fail with
    /// [`DatasetError::Shutdown`]), commits what is queued, and returns true once that commit is
    /// durable, or false if it took longer than `deadline` (the task is then aborted: nothing of
    /// the unfinished batch was acknowledged, so its granules are retried after a restart).
    pub async fn shutdown(self, deadline: Duration) -> bool {
        self.stop.cancel();
        let mut join = self.join;
        match tokio::time::timeout(deadline, &mut join).await {
            Ok(_) => true,
            Err(_) => {
                join.abort();
                tracing::warn!(
                    ?deadline,
                    "the final commit did not finish in time: abandoned"
                );
                false
            }
        }
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("key", &self.granule.key)
            .finish()
    }
}

/// Starts the committer for `dataset`. There must be exactly one per dataset branch.
pub fn spawn_committer(
    dataset: Arc<Dataset>,
    cfg: CommitterConfig,
) -> (CommitterHandle, Committer) {
    let (tx, rx) = mpsc::channel(cfg.channel_capacity.max(1));
    let stats = Arc::new(CommitterStats::default());
    let stop = CancellationToken::new();
    let finished = CancellationToken::new();
    let guard = finished.clone().drop_guard();
    let task = run(dataset, cfg, rx, Arc::clone(&stats), stop.clone());
    let join = tokio::spawn(async move {
        // Dropped when the task ends, by return or by panic.
        let _guard = guard;
        task.await;
    });
    (
        CommitterHandle { tx, stats },
        Committer {
            join,
            stop,
            finished,
        },
    )
}

async fn run(
    dataset: Arc<Dataset>,
    cfg: CommitterConfig,
    mut rx: mpsc::Receiver<Request>,
    stats: Arc<CommitterStats>,
    stop: CancellationToken,
) {
    let mut next_maintenance = cfg.maintenance.as_ref().map(|m| Instant::now() + m.every);
    let mut maintaining: Option<tokio::task::JoinHandle<()>> = None;
    let mut closed = false;
    let mut stopping = false;
    let validating = Arc::new(AtomicBool::new(false));
    // A store written by an earlier version gets the current attributes first.
    match dataset.upgrade_attributes().await {
        Ok(Some(snapshot)) => tracing::info!(%snapshot, "store attributes upgraded"),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "could not upgrade the store's attributes"),
    }
    // Months completed before tagging existed, or whose tagging failed last time.
    match dataset.tag_all_completed_months(chrono::Utc::now()).await {
        Ok(tags) if !tags.is_empty() => {
            metrics::counter!(m::MONTHS_TAGGED).increment(tags.len() as u64);
            tracing::info!(count = tags.len(), first = %tags[0], "completed months tagged");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not tag completed months"),
    }
    // The branch tip this committer expects before each batch (see `commit_with_retries`).
    let mut tip = dataset.branch_tip().await.ok();
    while !closed {
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = stop.cancelled(), if !stopping => {
                // Refuse new granules; what is queued still arrives, then `None`.
                rx.close();
                stopping = true;
                continue;
            }
        };
        let Some(first) = first else { break };
        let deadline = Instant::now() + cfg.max_age;
        let mut batch = vec![first];
        while batch.len() < cfg.max_batch {
            let idle = (Instant::now() + cfg.max_idle).min(deadline);
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => batch.push(r),
                    None => { closed = true; break; }
                },
                _ = tokio::time::sleep_until(idle) => break,
            }
        }
        let written = commit(&dataset, &cfg, batch, &stats, &mut tip).await;
        if cfg.validate_sample > 0 && !written.is_empty() {
            validate_in_background(&dataset, &written, cfg.validate_sample, &validating);
        }
        // Maintenance runs beside the commits, one run at a time, within a time limit: a slow
        // expiry or GC on a large repository no longer holds up every caller (review L15).
        // Commits during it are safe: GC only deletes objects older than the retention (1h at
        // least), and Icechunk retries repository-info updates that race.
        if let (Some(m), Some(at)) = (&cfg.maintenance, next_maintenance)
            && Instant::now() >= at
            && maintaining
                .as_ref()
                .is_none_or(tokio::task::JoinHandle::is_finished)
        {
            let every = m.every;
            let (dataset, m) = (Arc::clone(&dataset), m.clone());
            maintaining = Some(tokio::spawn(async move {
                match tokio::time::timeout(MAINTENANCE_TIME_LIMIT, maintenance::run(&dataset, &m))
                    .await
                {
                    Ok(Ok(r)) => tracing::info!(?r, "maintenance done"),
                    Ok(Err(e)) => tracing::error!(error = %e, "maintenance failed"),
                    Err(_) => tracing::error!(
                        limit = ?MAINTENANCE_TIME_LIMIT,
                        "maintenance did not finish in time: abandoned, tried again next time"
                    ),
                }
            }));
            next_maintenance = Some(Instant::now() + every);
        }
    }
    if let Some(m) = maintaining.filter(|m| !m.is_finished()) {
        // Nothing of a maintenance run is acknowledged to anyone: stopping it loses nothing.
        m.abort();
    }
    tracing::info!("committer stopped");
}

/// Longest a maintenance run (expiry, GC, pruning) may take before it is abandoned.
const MAINTENANCE_TIME_LIMIT: Duration = Duration::from_secs(3600);

/// Commits a batch; returns the granules whose references it wrote (added or replaced).
async fn commit(
    dataset: &Dataset,
    cfg: &CommitterConfig,
    batch: Vec<Request>,
    stats: &CommitterStats,
    tip: &mut Option<String>,
) -> Vec<GranuleRefs> {
    let batch_id = uuid::Uuid::new_v4().to_string();
    imerg_crashpoint::fault(imerg_crashpoint::COMMITTER_BATCH);
    let granules: Vec<GranuleRefs> = batch.iter().map(|r| r.granule.clone()).collect();
    let span = tracing::info_span!("commit", %batch_id, granules = granules.len());
    let written = commit_with_retries(dataset, cfg, batch, stats, batch_id, &granules, tip)
        .instrument(span)
        .await;
    granules
        .into_iter()
        .zip(written)
        .filter_map(|(g, w)| w.then_some(g))
        .collect()
}

/// Up to `n` chunks spread over `written`: granules evenly across the batch, variables and
/// chunk positions in turn.
fn sample(written: &[GranuleRefs], n: usize) -> Vec<ChunkToVerify> {
    let mut out: Vec<ChunkToVerify> = Vec::new();
    for i in 0..n.min(written.len().saturating_mul(4)) {
        let Some(g) =
            written.get(i.saturating_mul(written.len()) / n.max(1) % written.len().max(1))
        else {
            continue;
        };
        let vars: Vec<_> = g.variables.iter().collect();
        let Some((name, v)) = vars.get(i % vars.len().max(1)) else {
            continue;
        };
        let Some(r) = v.refs.get(i.saturating_mul(7) % v.refs.len().max(1)) else {
            continue;
        };
        let c = ChunkToVerify {
            variable: (*name).clone(),
            chunk: r.chunk,
            key: g.key.clone(),
        };
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// Reads a sample of the new references back through the store, beside the committer; a
/// failure is a metric and a log line naming the granule. Skipped while one is still running.
fn validate_in_background(
    dataset: &Arc<Dataset>,
    written: &[GranuleRefs],
    n: usize,
    busy: &Arc<AtomicBool>,
) {
    if busy.swap(true, Ordering::SeqCst) {
        return;
    }
    let chunks = sample(written, n);
    let (dataset, busy) = (Arc::clone(dataset), Arc::clone(busy));
    tokio::spawn(async move {
        match dataset.verify_chunks(&chunks).await {
            Ok(results) => {
                for (c, r) in chunks.iter().zip(results) {
                    match r {
                        Ok(()) => {
                            metrics::counter!(m::VALIDATED_CHUNKS, "result" => "ok").increment(1);
                        }
                        Err(e) => {
                            metrics::counter!(m::VALIDATED_CHUNKS, "result" => e.reason())
                                .increment(1);
                            metrics::counter!(m::VALIDATION_FAILURES, "reason" => e.reason())
                                .increment(1);
                            tracing::error!(key = %c.key, variable = %c.variable, chunk = ?c.chunk,
                                reason = e.reason(), error = %e, "post-commit validation failed");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "post-commit validation could not read the store"),
        }
        busy.store(false, Ordering::SeqCst);
    });
}

async fn commit_with_retries(
    dataset: &Dataset,
    cfg: &CommitterConfig,
    batch: Vec<Request>,
    stats: &CommitterStats,
    batch_id: String,
    granules: &[GranuleRefs],
    tip: &mut Option<String>,
) -> Vec<bool> {
    stats.batches.fetch_add(1, Ordering::Relaxed);
    // The branch tip this process left: anything else there means another writer committed
    // between two batches, which a commit's own conflict check cannot see (review M5b).
    if let Some(expected) = tip.clone() {
        match dataset.branch_tip().await {
            Ok(actual) if actual != expected => {
                let e = DatasetError::SecondWriter {
                    branch: dataset.config().branch.clone(),
                    expected,
                    actual: actual.clone(),
                };
                second_writer(stats, &e);
                *tip = Some(actual);
                fail_all(batch, &e);
                return Vec::new();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not read the branch tip before a batch"),
        }
    }
    let mut last_err = DatasetError::Shutdown;
    for attempt in 1..=cfg.commit_attempts.max(1) {
        let started = std::time::Instant::now();
        let result = match dataset.prepare_batch(granules, &batch_id).await {
            Ok(prepared) => {
                let planned = prepared.outcomes.clone();
                dataset
                    .commit_prepared(prepared)
                    .await
                    .map_err(|e| (e, Some(planned)))
            }
            Err(e) => Err((e, None)),
        };
        let outcome = match result {
            Ok(outcome) => outcome,
            Err((e, planned)) => {
                // The commit may have landed although it failed (a response lost after S3
                // applied the write, whose retry then conflicts with our own new snapshot):
                // the batch id in the branch's history says so. Then its callers get what the
                // plan said, neither a failure nor a second-writer alarm (review M5c, L14).
                let found = match planned {
                    Some(_) => dataset.find_batch(&batch_id, 64).await,
                    None => Ok(None),
                };
                match (found, planned) {
                    (Ok(Some(snapshot)), Some(outcomes)) => {
                        stats.ambiguous_landed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%snapshot, error = %e, "the failed commit had landed");
                        BatchOutcome {
                            batch_id: batch_id.clone(),
                            snapshot,
                            committed: true,
                            outcomes,
                        }
                    }
                    (found, _) => {
                        if let Err(fe) = found {
                            tracing::warn!(error = %fe, "could not search history for the batch");
                        }
                        if matches!(e, DatasetError::SecondWriter { .. }) {
                            second_writer(stats, &e);
                            fail_all(batch, &e);
                            return Vec::new();
                        }
                        stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!(m::COMMIT_FAILURES).increment(1);
                        tracing::warn!(attempt, error = %e, "commit failed");
                        last_err = e;
                        tokio::time::sleep(backoff(attempt)).await;
                        continue;
                    }
                }
            }
        };
        if outcome.committed {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::COMMITS).increment(1);
            metrics::gauge!(m::LAST_COMMIT_TIMESTAMP)
                .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
            metrics::histogram!(m::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
            metrics::histogram!(m::BATCH_GRANULES).record(granules.len() as f64);
        }
        tracing::info!(
            snapshot = %outcome.snapshot,
            committed = outcome.committed,
            seconds = started.elapsed().as_secs_f64(),
            "batch durable"
        );
        *tip = Some(outcome.snapshot.clone());
        let written: Vec<bool> = outcome
            .outcomes
            .iter()
            .map(|(_, o)| matches!(o, GranuleOutcome::Added | GranuleOutcome::Replaced { .. }))
            .collect();
        let tag_at = outcome.committed.then(|| outcome.snapshot.clone());
        reply_all(batch, outcome, stats);
        if let Some(snapshot) = tag_at {
            tag_months(dataset, granules, &written, &snapshot).await;
        }
        return written;
    }
    tracing::error!(error = %last_err, "batch failed after retries");
    fail_all(batch, &last_err);
    Vec::new()
}

/// Counts and reports a second writer.
fn second_writer(stats: &CommitterStats, e: &DatasetError) {
    stats.second_writer.fetch_add(1, Ordering::Relaxed);
    metrics::counter!(m::SECOND_WRITER).increment(1);
    tracing::error!(error = %e, "SECOND WRITER DETECTED: batch not committed");
}

/// Tags the months the batch completed (after the replies: tagging never delays an ack). A
/// failure is logged; the next commit into the month tries again.
async fn tag_months(dataset: &Dataset, granules: &[GranuleRefs], written: &[bool], snapshot: &str) {
    let indices = granules
        .iter()
        .zip(written)
        .filter_map(|(g, &w)| w.then_some(g.time_index));
    match dataset
        .tag_completed_months(indices, snapshot, chrono::Utc::now())
        .await
    {
        Ok(tags) => {
            for tag in tags {
                metrics::counter!(m::MONTHS_TAGGED).increment(1);
                tracing::info!(%tag, %snapshot, "month complete: tagged");
            }
        }
        Err(e) => tracing::warn!(error = %e, %snapshot, "could not tag completed months"),
    }
}

/// Exponential backoff with jitter: 100 ms, 200 ms, 400 ms, ... capped at 5 s.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * base / 512;
    Duration::from_millis(base / 2 + jitter)
}

fn reply_all(batch: Vec<Request>, outcome: BatchOutcome, stats: &CommitterStats) {
    for (req, (key, o)) in batch.into_iter().zip(outcome.outcomes) {
        let counter = match &o {
            GranuleOutcome::Added => &stats.granules_added,
            GranuleOutcome::Replaced { .. } => &stats.granules_replaced,
            GranuleOutcome::Duplicate | GranuleOutcome::Stale { .. } => &stats.granules_duplicate,
            GranuleOutcome::Rejected(_) => &stats.granules_rejected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        match &o {
            GranuleOutcome::Rejected(e) => {
                metrics::counter!(m::GRANULES_REJECTED, "reason" => e.label()).increment(1);
            }
            other => {
                metrics::counter!(m::GRANULES_COMMITTED, "outcome" => other.label()).increment(1);
            }
        }
        let reply = match o {
            GranuleOutcome::Rejected(e) => Err(e),
            o => Ok(AppendReceipt {
                key,
                outcome: o,
                batch_id: outcome.batch_id.clone(),
                snapshot: outcome.snapshot.clone(),
            }),
        };
        // A caller that stopped waiting is fine: its granule is committed anyway.
        let _ = req.reply.send(reply);
    }
}

fn fail_all(batch: Vec<Request>, e: &DatasetError) {
    for req in batch {
        let _ = req.reply.send(Err(e.clone()));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path;

    use super::*;
    use crate::test_support::{granule, open, shifted};

    /// `n` granules at consecutive time steps (one synthetic file, the rest moved copies).
    fn granules(src: &Path, n: u64) -> Vec<GranuleRefs> {
        let g = granule(src, "2022-07-01T00:00:00Z");
        (0..n).map(|s| shifted(&g, s, src)).collect()
    }

    /// Appends `g` in its own task, `at` after `t0`; resolves to the receipt and when it came.
    fn append_at(
        handle: &CommitterHandle,
        g: GranuleRefs,
        t0: Instant,
        at: Duration,
    ) -> tokio::task::JoinHandle<(AppendReceipt, Duration)> {
        let h = handle.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(t0 + at).await;
            let receipt = h.append(g).await.unwrap();
            (receipt, t0.elapsed())
        })
    }

    /// Sizes of consecutive runs of receipts that share a batch id, and when each run was
    /// acknowledged (the same for every receipt of a batch).
    async fn batches(
        tasks: Vec<tokio::task::JoinHandle<(AppendReceipt, Duration)>>,
    ) -> Vec<(usize, Duration)> {
        let mut out: Vec<(String, usize, Duration)> = Vec::new();
        for t in tasks {
            let (receipt, acked) = t.await.unwrap();
            assert_eq!(receipt.outcome.label(), "added");
            match out.last_mut() {
                Some((id, n, at)) if *id == receipt.batch_id => {
                    *n += 1;
                    assert_eq!(*at, acked, "one batch, one acknowledgement time");
                }
                _ => out.push((receipt.batch_id, 1, acked)),
            }
        }
        out.into_iter().map(|(_, n, at)| (n, at)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_is_committed_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (src, repo) = (dir.path().join("src"), dir.path().join("repo"));
        let gs = granules(&src, 7);
        let ds = Arc::new(open(&repo, &src).await);
        let hour = Duration::from_secs(3600);
        let (handle, committer) = spawn_committer(
            Arc::clone(&ds),
            CommitterConfig {
                max_batch: 3,
                max_age: hour,
                max_idle: hour,
                ..Default::default()
            },
        );
        let t0 = Instant::now();
        let tasks = gs
            .into_iter()
            .map(|g| append_at(&handle, g, t0, Duration::ZERO))
            .collect();
        // Two full batches go at once; the remainder waits for the idle / age limit.
        assert_eq!(
            batches(tasks).await,
            [(3, Duration::ZERO), (3, Duration::ZERO), (1, hour)]
        );
        assert_eq!(handle.stats().batches.load(Ordering::Relaxed), 3);
        assert_eq!(handle.stats().commits.load(Ordering::Relaxed), 3);
        assert_eq!(ds.status().await.unwrap().granules_present, 7);
        drop(handle);
        committer.join.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_is_committed_when_the_stream_pauses_or_its_oldest_granule_is_old() {
        let dir = tempfile::tempdir().unwrap();
        let (src, repo) = (dir.path().join("src"), dir.path().join("repo"));
        let mut gs = granules(&src, 10).into_iter();
        let ds = Arc::new(open(&repo, &src).await);
        let (handle, committer) = spawn_committer(
            Arc::clone(&ds),
            CommitterConfig {
                max_batch: 100,
                max_age: Duration::from_millis(900),
                max_idle: Duration::from_millis(300),
                ..Default::default()
            },
        );
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        // A burst of three, 100 ms apart, then a pause: committed 300 ms after the last.
        for at in [0, 100, 200] {
            tasks.push(append_at(&handle, gs.next().unwrap(), t0, ms(at)));
        }
        // A steady stream from 2 s, 200 ms apart (never idle for 300 ms): the first batch is
        // committed when its oldest granule is 900 ms old, the rest when the stream ends.
        for at in [2_000, 2_200, 2_400, 2_600, 2_800, 3_000, 3_200] {
            tasks.push(append_at(&handle, gs.next().unwrap(), t0, ms(at)));
        }
        assert_eq!(
            batches(tasks).await,
            [(3, ms(500)), (5, ms(2_900)), (2, ms(3_500))]
        );
        assert_eq!(handle.stats().commits.load(Ordering::Relaxed), 3);
        drop(handle);
        committer.join.await.unwrap();
    }
}
