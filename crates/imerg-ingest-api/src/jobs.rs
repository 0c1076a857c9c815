//! Backfill jobs: the expected keys of a range from the catalog, minus what the store already
//! holds (read in bulk from `granule_present`), each fetched, virtualized and appended with
//! bounded concurrency. Progress is published on a watch channel; a cancelled job stops taking
//! new granules and lets the ones in flight finish. Re-running a range after a crash skips what
//! was committed, so nothing is doubled.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use imerg_catalog::{GranuleId, ProductProfile, TimeRange};
use imerg_dataset::Dataset;
use imerg_metrics as m;
use imerg_pipeline::{Ingestor, Origin, Stage};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone)]
pub struct Failure {
    pub key: String,
    pub reason: String,
    pub message: String,
}

/// A job's progress at one moment.
#[derive(Debug, Clone)]
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
        let range = TimeRange { start, end };
        let n = self.profile.expected_count(range);
        if n > self.max_granules {
            return Err(JobError::InvalidArgument(format!(
                "range holds {n} granules, more than the maximum of {} per request: split it",
                self.max_granules
            )));
        }
        Ok(range)
    }

    /// Starts a backfill of `range` and returns its first status.
    pub async fn backfill(self: &Arc<Self>, range: TimeRange) -> Result<JobStatus, JobError> {
        if self.tasks.is_closed() {
            return Err(JobError::Unavailable(
                "the service is shutting down: no new backfills".into(),
            ));
        }
        let expected: Vec<GranuleId> = self.profile.expected(range).collect();
        let (from, to) = match (expected.first(), expected.last()) {
            (Some(a), Some(b)) => (a.time_index, b.time_index + 1),
            _ => (0, 0),
        };
        let present = self
            .dataset
            .present_in(from, to)
            .await
            .map_err(|e| JobError::Unavailable(format!("reading the store: {e}")))?;
        let todo: Vec<GranuleId> = expected
            .iter()
            .filter(|g| !present.contains(&g.time_index))
            .cloned()
            .collect();
        let id = uuid::Uuid::new_v4().to_string();
        let status = JobStatus {
            id: id.clone(),
            product: self.profile.id.clone(),
            range,
            state: JobState::Running,
            expected: expected.len() as u64,
            present_already: (expected.len() - todo.len()) as u64,
            fetched: 0,
            committed: 0,
            missing_at_source: 0,
            failed: 0,
            failures: Vec::new(),
            created: Utc::now(),
            finished: None,
        };
        let (tx, _) = watch::channel(status.clone());
        let (cancel, cancel_rx) = watch::channel(false);
        let job = Arc::new(Job { status: tx, cancel });
        {
            let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            jobs.insert(id.clone(), Arc::clone(&job));
            prune(&mut jobs);
        }
        tracing::info!(job = %id, start = %range.start, end = %range.end, expected = status.expected,
            present_already = status.present_already, "backfill started");
        metrics::gauge!(m::BACKFILL_JOBS, "state" => "running").increment(1.0);
        let me = Arc::clone(self);
        self.tasks
            .spawn(async move { me.run(job, todo, cancel_rx).await });
        Ok(status)
    }

    async fn run(
        self: Arc<Self>,
        job: Arc<Job>,
        todo: Vec<GranuleId>,
        cancel: watch::Receiver<bool>,
    ) {
        let progress = |f: &dyn Fn(&mut JobStatus)| job.status.send_modify(|s| f(s));
        futures::stream::iter(todo)
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

    pub fn list(&self) -> Vec<JobStatus> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|j| j.status.borrow().clone())
            .collect()
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

/// Keeps every running job and the newest finished ones.
fn prune(jobs: &mut BTreeMap<String, Arc<Job>>) {
    let mut finished: Vec<(DateTime<Utc>, String)> = jobs
        .iter()
        .filter_map(|(id, j)| {
            let s = j.status.borrow();
            s.finished.map(|f| (f, id.clone()))
        })
        .collect();
    if finished.len() > MAX_FINISHED_JOBS {
        finished.sort();
        for (_, id) in finished.iter().take(finished.len() - MAX_FINISHED_JOBS) {
            jobs.remove(id);
        }
    }
}
