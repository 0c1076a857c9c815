//! Backfill jobs: the expected keys of a range from the catalog, minus what the store already
//! holds (read in bulk from `granule_present`), each fetched, virtualized and appended with
//! bounded concurrency. Progress is published on a watch channel; a cancelled job stops taking
//! new granules and lets the ones in flight finish. Re-running a range after a crash skips what
//! was committed, so nothing is doubled.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use imerg_catalog::{ProductProfile, TimeRange};
use imerg_dataset::Dataset;
use imerg_metrics as m;
use imerg_pipeline::{Ingestor, Origin, Stage};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::JobStore;

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn label(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// A failed granule.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    pub key: String,
    pub reason: String,
    pub message: String,
}

/// A job's progress at one moment (and its record in the [`JobStore`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JobStatus {
    pub id: String,
    pub product: String,
    pub range: TimeRange,
    pub state: JobState,
    pub expected: u64,
    pub present_already: u64,
    pub fetched: u64,
    pub committed: u64,
    pub missing_at_source: u64,
    pub failed: u64,
    pub failures: Vec<Failure>,
    pub created: DateTime<Utc>,
    pub finished: Option<DateTime<Utc>>,
    /// The idempotency key it was started with.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// At most this many failures are kept per job (the count is exact).
const MAX_FAILURES_KEPT: usize = 100;
/// Finished jobs kept for GetJob/ListJobs.
const MAX_FINISHED_JOBS: usize = 100;

#[derive(Debug)]
struct Job {
    status: watch::Sender<JobStatus>,
    cancel: watch::Sender<bool>,
}

/// Why a backfill request is refused.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no job {0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    /// Too many jobs run already (`--backfill-max-jobs`).
    #[error("{0}")]
    ResourceExhausted(String),
}

/// Runs backfill jobs against a worker and an appender.
#[derive(Debug)]
pub struct JobManager {
    profile: Arc<ProductProfile>,
    dataset: Arc<Dataset>,
    ingestor: Ingestor,
    /// Granules in flight per job (fetching, parsing or waiting for their commit). Must exceed
    /// the committer's batch size for batches to fill.
    concurrency: usize,
    /// Largest range a single request may ask for, in granules.
    max_granules: u64,
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    /// Every job's task, so shutdown can wait for them.
    tasks: TaskTracker,
    /// Where jobs are kept across restarts (None: in memory only).
    store: Option<JobStore>,
    /// Set when shutdown starts: jobs stopped from then on resume at the next start.
    stopping: CancellationToken,
    /// Jobs that may run at once; a new one beyond is refused (resumed ones always run).
    max_running: usize,
    /// One permit per running job.
    slots: Arc<tokio::sync::Semaphore>,
}

/// Jobs that may run at once by default.
pub const DEFAULT_MAX_RUNNING_JOBS: usize = 4;

/// The most jobs one ListJobs page returns, and the default page size.
pub const MAX_PAGE_SIZE: usize = 1000;
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Least time between two writes of a running job's record.
const SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// One page of jobs, newest first.
#[derive(Debug, Clone)]
pub struct JobPage {
    pub jobs: Vec<JobStatus>,
    /// The token of the next page; None on the last one.
    pub next: Option<String>,
}

/// The order of ListJobs (newest first) as a sortable key, and its page token.
fn order_key(s: &JobStatus) -> (std::cmp::Reverse<DateTime<Utc>>, String) {
    (std::cmp::Reverse(s.created), s.id.clone())
}

fn page_token(s: &JobStatus) -> String {
    format!("{}~{}", s.created.timestamp_micros(), s.id)
}

fn parse_page_token(t: &str) -> Option<(std::cmp::Reverse<DateTime<Utc>>, String)> {
    let (micros, id) = t.split_once('~')?;
    let created = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    Some((std::cmp::Reverse(created), id.to_string()))
}

impl JobManager {
    pub fn new(
        profile: Arc<ProductProfile>,
        dataset: Arc<Dataset>,
        ingestor: Ingestor,
        concurrency: usize,
        max_granules: u64,
    ) -> Self {
        Self {
            profile,
            dataset,
            ingestor,
            concurrency: concurrency.max(1),
            max_granules,
            jobs: Mutex::new(BTreeMap::new()),
            tasks: TaskTracker::new(),
            store: None,
            stopping: CancellationToken::new(),
            max_running: DEFAULT_MAX_RUNNING_JOBS,
            slots: Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_RUNNING_JOBS)),
        }
    }

    /// At most `n` (at least 1) jobs run at once: each holds its worker and commit slots and
    /// its list of time indices (8 bytes per granule), and eight whole-record jobs at once
    /// would compete for the same committer (review L1).
    pub fn with_max_running(mut self, n: usize) -> Self {
        self.max_running = n.max(1);
        self.slots = Arc::new(tokio::sync::Semaphore::new(self.max_running));
        self
    }

    /// Keeps jobs in `store` across restarts; call [`Self::resume`] once at start.
    pub fn with_store(mut self, store: JobStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Loads the stored jobs: finished ones for GetJob/ListJobs, running ones (the service
    /// stopped or died under them) started again under their own id. Returns how many resumed.
    pub async fn resume(self: &Arc<Self>) -> Result<usize, JobError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let records = store
            .load_all()
            .await
            .map_err(|e| JobError::Unavailable(e.to_string()))?;
        let mut resumed = 0;
        for s in records {
            if s.state == JobState::Running {
                tracing::info!(job = %s.id, start = %s.range.start, end = %s.range.end, "resuming a backfill job");
                self.start(s.range, s.request_id.clone(), Some(s)).await?;
                resumed += 1;
            } else {
                let (tx, _) = watch::channel(s.clone());
                let (cancel, _) = watch::channel(false);
                let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
                jobs.insert(s.id.clone(), Arc::new(Job { status: tx, cancel }));
            }
        }
        let pruned = {
            let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            prune(&mut jobs)
        };
        self.forget(pruned);
        Ok(resumed)
    }

    /// Removes pruned jobs' records.
    fn forget(&self, ids: Vec<String>) {
        if let (Some(store), false) = (&self.store, ids.is_empty()) {
            let store = store.clone();
            self.tasks.spawn(async move {
                for id in ids {
                    if let Err(e) = store.delete(&id).await {
                        tracing::warn!(job = %id, error = %e, "could not remove a pruned job's record");
                    }
                }
            });
        }
    }

    pub fn profile(&self) -> &Arc<ProductProfile> {
        &self.profile
    }

    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    /// Checks a request's range: known product, end after start, inside the record, not absurd.
    pub fn validate(
        &self,
        product: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<TimeRange, JobError> {
        if !product.is_empty() && product != self.profile.id {
            return Err(JobError::InvalidArgument(format!(
                "unknown product {product:?}: this service ingests {:?}",
                self.profile.id
            )));
        }
        if end <= start {
            return Err(JobError::InvalidArgument(format!(
                "end ({end}) must be after start ({start})"
            )));
        }
        let record = self.profile.record(Utc::now());
        if end <= record.start || start >= record.end {
            return Err(JobError::InvalidArgument(format!(
                "range {start} .. {end} is outside the product's record ({} .. {})",
                record.start, record.end
            )));
        }
        // An end beyond the record (for a live product: in the future) is clipped to it, so a
        // far-future end neither inflates `expected` nor queues granules that cannot exist yet.
        let range = TimeRange {
            start,
            end: end.min(record.end),
        };
        let n = self.profile.expected_count(range);
        if n > self.max_granules {
            return Err(JobError::InvalidArgument(format!(
                "range holds {n} granules, more than the maximum of {} per request: split it",
                self.max_granules
            )));
        }
        Ok(range)
    }

    /// Starts a backfill of `range` and returns its first status; with a `request_id` seen
    /// before, returns that job instead (running or finished).
    pub async fn backfill(
        self: &Arc<Self>,
        range: TimeRange,
        request_id: Option<String>,
    ) -> Result<JobStatus, JobError> {
        let request_id = request_id.filter(|r| !r.is_empty());
        if let Some(r) = &request_id
            && let Some(s) = self
                .list()
                .into_iter()
                .find(|s| s.request_id.as_deref() == Some(r))
        {
            // The same request later: a live product's end was clipped to a later "now".
            let same = s.range.start == range.start
                && (s.range.end == range.end
                    || (self.profile.record_end.is_none() && range.end >= s.range.end));
            if !same {
                return Err(JobError::InvalidArgument(format!(
                    "request_id {r:?} started job {} for another range ({} to {})",
                    s.id, s.range.start, s.range.end
                )));
            }
            return Ok(s);
        }
        self.start(range, request_id, None).await
    }

    /// Starts (or, with the stored record `previous`, resumes) a job.
    async fn start(
        self: &Arc<Self>,
        range: TimeRange,
        request_id: Option<String>,
        previous: Option<JobStatus>,
    ) -> Result<JobStatus, JobError> {
        if self.tasks.is_closed() {
            return Err(JobError::Unavailable(
                "the service is shutting down: no new backfills".into(),
            ));
        }
        // A running slot, taken at once (two requests cannot both see the last one free); a
        // resumed job runs even without one.
        let slot = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) if previous.is_some() => None,
            Err(_) => {
                return Err(JobError::ResourceExhausted(format!(
                    "{} backfill jobs run already (at most {}): try again when one has finished",
                    self.max_running, self.max_running
                )));
            }
        };
        // Time indices, not granule ids: 8 bytes a granule, where a whole-record list of ids
        // held twice took hundreds of MB per job (review L1). Ids are made as they are needed.
        let expected: Vec<u64> = self.profile.expected(range).map(|g| g.time_index).collect();
        let (from, to) = match (expected.first(), expected.last()) {
            (Some(a), Some(b)) => (*a, b.saturating_add(1)),
            _ => (0, 0),
        };
        let present = self
            .dataset
            .present_in(from, to)
            .await
            .map_err(|e| JobError::Unavailable(format!("reading the store: {e}")))?;
        let expected_len = expected.len();
        let todo: Vec<u64> = expected
            .into_iter()
            .filter(|t| !present.contains(t))
            .collect();
        drop(present);
        let id = previous
            .as_ref()
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), |p| p.id.clone());
        let status = JobStatus {
            id: id.clone(),
            product: self.profile.id.clone(),
            range,
            state: JobState::Running,
            expected: expected_len as u64,
            present_already: expected_len.saturating_sub(todo.len()) as u64,
            fetched: 0,
            committed: 0,
            missing_at_source: 0,
            failed: 0,
            failures: previous
                .as_ref()
                .map(|p| p.failures.clone())
                .unwrap_or_default(),
            created: previous.as_ref().map_or_else(Utc::now, |p| p.created),
            finished: None,
            request_id,
        };
        let (tx, _) = watch::channel(status.clone());
        let (cancel, cancel_rx) = watch::channel(false);
        let job = Arc::new(Job { status: tx, cancel });
        let pruned = {
            let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            jobs.insert(id.clone(), Arc::clone(&job));
            prune(&mut jobs)
        };
        self.forget(pruned);
        if let Some(store) = &self.store {
            // The record exists before the job runs: a crash from here on resumes it.
            store
                .save(&status)
                .await
                .map_err(|e| JobError::Unavailable(e.to_string()))?;
            self.tasks.spawn(persist(
                store.clone(),
                job.status.subscribe(),
                self.stopping.clone(),
            ));
        }
        tracing::info!(job = %id, start = %range.start, end = %range.end, expected = status.expected,
            present_already = status.present_already, "backfill started");
        metrics::gauge!(m::BACKFILL_JOBS, "state" => "running").increment(1.0);
        let me = Arc::clone(self);
        self.tasks.spawn(async move {
            let _slot = slot;
            me.run(job, todo, cancel_rx).await;
        });
        Ok(status)
    }

    async fn run(self: Arc<Self>, job: Arc<Job>, todo: Vec<u64>, cancel: watch::Receiver<bool>) {
        let progress = |f: &dyn Fn(&mut JobStatus)| job.status.send_modify(|s| f(s));
        let profile = Arc::clone(&self.profile);
        futures::stream::iter(todo)
            .filter_map(move |t| futures::future::ready(profile.granule_at_index(t).ok()))
            .take_while(|_| {
                let cancelled = *cancel.borrow();
                async move { !cancelled }
            })
            .map(|g| {
                let ingestor = self.ingestor.clone();
                async move {
                    let r = ingestor.ingest(&g, Origin::Backfill).await;
                    (g.key, r)
                }
            })
            .buffer_unordered(self.concurrency)
            .for_each(|(key, r)| {
                match r {
                    Ok(_) => progress(&|s| {
                        s.fetched += 1;
                        s.committed += 1;
                    }),
                    Err(e) if e.is_gap() => progress(&|s| s.missing_at_source += 1),
                    Err(e) => {
                        let fetched = e.stage == Stage::Append;
                        let (reason, message) = (e.reason.as_str(), e.message);
                        progress(&|s| {
                            if fetched {
                                s.fetched += 1;
                            }
                            fail(s, &key, reason, &message);
                        });
                    }
                }
                self.publish_progress();
                futures::future::ready(())
            })
            .await;
        let cancelled = *cancel.borrow();
        if cancelled && self.stopping.is_cancelled() {
            // Stopped by shutdown, not by an operator: the record stays RUNNING (written by the
            // persist task this wakes) and the next start resumes it.
            job.status.send_modify(|_| {});
            metrics::gauge!(m::BACKFILL_JOBS, "state" => "running").decrement(1.0);
            let s = job.status.borrow().clone();
            tracing::info!(job = %s.id, committed = s.committed,
                "backfill interrupted by shutdown: the next start resumes it");
            return;
        }
        job.status.send_modify(|s| {
            s.state = if cancelled {
                JobState::Cancelled
            } else if s.failed > 0 {
                JobState::Failed
            } else {
                JobState::Succeeded
            };
            s.finished = Some(Utc::now());
        });
        let s = job.status.borrow().clone();
        self.publish_progress();
        metrics::gauge!(m::BACKFILL_JOBS, "state" => "running").decrement(1.0);
        metrics::gauge!(m::BACKFILL_JOBS, "state" => s.state.label()).increment(1.0);
        metrics::counter!(m::BACKFILL_JOBS_FINISHED, "state" => s.state.label()).increment(1);
        tracing::info!(job = %s.id, state = s.state.label(), committed = s.committed, failed = s.failed,
            missing = s.missing_at_source, "backfill finished");
    }

    /// Sets the backfill progress gauges to the sums over every running job (several jobs may
    /// run at once; a finished job no longer counts, so the remaining work drops to zero).
    fn publish_progress(&self) {
        // expected, present_already, committed, missing_at_source, failed
        let mut t = [0u64; 5];
        for j in self.jobs.lock().unwrap_or_else(|p| p.into_inner()).values() {
            let s = j.status.borrow();
            if s.state == JobState::Running {
                for (acc, v) in t.iter_mut().zip([
                    s.expected,
                    s.present_already,
                    s.committed,
                    s.missing_at_source,
                    s.failed,
                ]) {
                    *acc += v;
                }
            }
        }
        for (state, v) in [
            "expected",
            "present_already",
            "committed",
            "missing_at_source",
            "failed",
        ]
        .into_iter()
        .zip(t)
        {
            metrics::gauge!(m::BACKFILL_GRANULES, "state" => state).set(v as f64);
        }
    }

    fn job(&self, id: &str) -> Result<Arc<Job>, JobError> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| JobError::NotFound(id.to_string()))
    }

    pub fn get(&self, id: &str) -> Result<JobStatus, JobError> {
        Ok(self.job(id)?.status.borrow().clone())
    }

    /// A receiver that sees every progress update of the job.
    pub fn watch(&self, id: &str) -> Result<watch::Receiver<JobStatus>, JobError> {
        Ok(self.job(id)?.status.subscribe())
    }

    /// Every job, newest first.
    pub fn list(&self) -> Vec<JobStatus> {
        let mut all: Vec<JobStatus> = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|j| j.status.borrow().clone())
            .collect();
        all.sort_by_key(order_key);
        all
    }

    /// One page of jobs, newest first, optionally only those in `state`: at most `size` (0: the
    /// default, capped at [`MAX_PAGE_SIZE`]) after the one `token` names.
    pub fn page(
        &self,
        size: usize,
        token: &str,
        state: Option<JobState>,
    ) -> Result<JobPage, JobError> {
        let size = match size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = if token.is_empty() {
            None
        } else {
            Some(parse_page_token(token).ok_or_else(|| {
                JobError::InvalidArgument(format!(
                    "page_token {token:?} is not one this service gave"
                ))
            })?)
        };
        let mut matching = self
            .list()
            .into_iter()
            .filter(|s| state.is_none_or(|st| s.state == st))
            .filter(|s| after.as_ref().is_none_or(|a| order_key(s) > *a));
        let jobs: Vec<JobStatus> = matching.by_ref().take(size).collect();
        let next = match (matching.next(), jobs.last()) {
            (Some(_), Some(last)) => Some(page_token(last)),
            _ => None,
        };
        Ok(JobPage { jobs, next })
    }

    /// Stops the job taking new granules; those in flight finish (committed work stays).
    pub fn cancel(&self, id: &str) -> Result<JobStatus, JobError> {
        let job = self.job(id)?;
        let _ = job.cancel.send(true);
        tracing::info!(job = %id, "backfill cancel requested");
        Ok(job.status.borrow().clone())
    }

    /// Cancels every running job (shutdown).
    pub fn cancel_all(&self) {
        for j in self.jobs.lock().unwrap_or_else(|p| p.into_inner()).values() {
            let _ = j.cancel.send(true);
        }
    }

    /// Shutdown: cancels every job and waits until their granules in flight are done (the caller
    /// bounds the wait). New jobs are refused from then on.
    pub async fn drain(&self) {
        self.stopping.cancel();
        self.tasks.close();
        self.cancel_all();
        self.tasks.wait().await;
    }

    /// True while any job is running.
    pub fn any_running(&self) -> bool {
        self.list().iter().any(|j| j.state == JobState::Running)
    }
}

fn fail(s: &mut JobStatus, key: &str, reason: &str, message: &str) {
    s.failed += 1;
    if s.failures.len() < MAX_FAILURES_KEPT {
        s.failures.push(Failure {
            key: key.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
        });
    }
}

/// Writes a job's record as it changes: at once, then at most every [`SAVE_EVERY`], and its
/// final state when it ends.
async fn persist(store: JobStore, mut rx: watch::Receiver<JobStatus>, stopping: CancellationToken) {
    loop {
        let changed = rx.changed().await.is_ok();
        let s = rx.borrow_and_update().clone();
        if let Err(e) = store.save(&s).await {
            tracing::warn!(job = %s.id, error = %e, "could not save the job's record");
        }
        if !changed || s.state != JobState::Running || stopping.is_cancelled() {
            return;
        }
        // Shutdown cuts the pause short: the last progress is written before the process ends.
        tokio::select! {
            _ = tokio::time::sleep(SAVE_EVERY) => {}
            _ = stopping.cancelled() => {}
        }
    }
}

/// Keeps every running job and the newest finished ones; returns the ids removed.
fn prune(jobs: &mut BTreeMap<String, Arc<Job>>) -> Vec<String> {
    let mut finished: Vec<(DateTime<Utc>, String)> = jobs
        .iter()
        .filter_map(|(id, j)| {
            let s = j.status.borrow();
            s.finished.map(|f| (f, id.clone()))
        })
        .collect();
    let mut removed = Vec::new();
    if finished.len() > MAX_FINISHED_JOBS {
        finished.sort();
        for (_, id) in finished.iter().take(finished.len() - MAX_FINISHED_JOBS) {
            jobs.remove(id);
            removed.push(id.clone());
        }
    }
    removed
}
