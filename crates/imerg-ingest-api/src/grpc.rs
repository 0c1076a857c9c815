//! The IngestService gRPC server: Backfill, WatchJob, GetJob, ListJobs, CancelJob, GetStatus.
//! Operator RPCs that change things (Backfill, CancelJob) need the bearer token; without a
//! configured token they are accepted from loopback peers only.

use std::pin::Pin;
use std::sync::Arc;

use std::collections::HashMap;

use futures::Stream;
use imerg_metrics as m;
use imerg_proto::{from_timestamp, to_timestamp, v1};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::jobs::{JobError, JobManager, JobState, JobStatus};

/// The shortest time between two messages of a `WatchJob` stream.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// The IngestService implementation.
#[derive(Debug, Clone)]
pub struct IngestApi {
    jobs: Arc<JobManager>,
    /// Operator bearer token (a secret: never logged).
    token: Option<Arc<str>>,
    /// The reconciliation sweeps' last report, when this process runs them.
    sweeps: Option<Arc<imerg_listener::SweepState>>,
    /// The native store writer's status, when this process runs it.
    native: Option<Arc<std::sync::Mutex<imerg_native::NativeStatus>>>,
}

impl IngestApi {
    pub fn new(jobs: Arc<JobManager>, token: Option<String>) -> Self {
        Self {
            jobs,
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
            sweeps: None,
            native: None,
        }
    }

    /// Reports the native store writer's status in GetStatus.
    pub fn with_native(
        mut self,
        native: Arc<std::sync::Mutex<imerg_native::NativeStatus>>,
    ) -> Self {
        self.native = Some(native);
        self
    }

    /// Reports the reconciliation sweeps' last result in GetStatus.
    pub fn with_sweeps(mut self, sweeps: Arc<imerg_listener::SweepState>) -> Self {
        self.sweeps = Some(sweeps);
        self
    }

    pub fn into_server(self) -> v1::ingest_service_server::IngestServiceServer<Self> {
        v1::ingest_service_server::IngestServiceServer::new(self)
    }

    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if imerg_remote::bearer_or_loopback(req, self.token.as_deref()) {
            Ok(())
        } else {
            metrics::counter!(m::UNAUTHENTICATED).increment(1);
            Err(error(
                Code::Unauthenticated,
                if self.token.is_some() {
                    "this RPC needs the operator bearer token (authorization: Bearer <token>)"
                } else {
                    "no operator token is configured: this RPC is accepted from loopback only"
                },
                "UNAUTHENTICATED",
            ))
        }
    }
}

/// The `domain` of the `google.rpc.ErrorInfo` every IngestService error carries.
pub const ERROR_DOMAIN: &str = "imerg.ingest.v1";

/// A status with a `google.rpc.ErrorInfo` detail: `reason` is machine-readable
/// (UPPER_SNAKE_CASE, AIP-193), the message is for people.
fn error(code: Code, message: impl Into<String>, reason: &str) -> Status {
    Status::with_error_details(
        code,
        message.into(),
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()),
    )
}

fn status_of(e: JobError) -> Status {
    match e {
        JobError::InvalidArgument(m) => error(Code::InvalidArgument, m, "INVALID_ARGUMENT"),
        JobError::NotFound(m) => error(Code::NotFound, format!("no job {m}"), "JOB_NOT_FOUND"),
        JobError::Unavailable(m) => error(Code::Unavailable, m, "UNAVAILABLE"),
        JobError::ResourceExhausted(m) => error(Code::ResourceExhausted, m, "TOO_MANY_JOBS"),
    }
}

fn state_to_proto(s: JobState) -> v1::JobState {
    match s {
        JobState::Running => v1::JobState::Running,
        JobState::Succeeded => v1::JobState::Succeeded,
        JobState::Failed => v1::JobState::Failed,
        JobState::Cancelled => v1::JobState::Cancelled,
    }
}

fn state_from_proto(s: i32) -> Option<JobState> {
    match v1::JobState::try_from(s).ok()? {
        v1::JobState::Running => Some(JobState::Running),
        v1::JobState::Succeeded => Some(JobState::Succeeded),
        v1::JobState::Failed => Some(JobState::Failed),
        v1::JobState::Cancelled => Some(JobState::Cancelled),
        v1::JobState::Unspecified => None,
    }
}

fn duration(seconds: f64) -> prost_types::Duration {
    let s = seconds.max(0.0);
    prost_types::Duration {
        seconds: s.trunc() as i64,
        nanos: (s.fract() * 1e9) as i32,
    }
}

/// The wire form of a job.
pub fn job_to_proto(s: &JobStatus) -> v1::Job {
    v1::Job {
        id: s.id.clone(),
        product: s.product.clone(),
        range: Some(v1::TimeRange {
            start_time: Some(to_timestamp(s.range.start)),
            end_time: Some(to_timestamp(s.range.end)),
        }),
        state: state_to_proto(s.state) as i32,
        expected: s.expected,
        present_already: s.present_already,
        fetched: s.fetched,
        committed: s.committed,
        missing_at_source: s.missing_at_source,
        failed: s.failed,
        failures: s
            .failures
            .iter()
            .map(|f| v1::GranuleFailure {
                key: f.key.clone(),
                reason: f.reason.clone(),
                message: f.message.clone(),
            })
            .collect(),
        create_time: Some(to_timestamp(s.created)),
        end_time: s.finished.map(to_timestamp),
        request_id: s.request_id.clone().unwrap_or_default(),
    }
}

type JobStream = Pin<Box<dyn Stream<Item = Result<v1::WatchJobResponse, Status>> + Send>>;

#[tonic::async_trait]
impl v1::ingest_service_server::IngestService for IngestApi {
    async fn backfill(
        &self,
        req: Request<v1::BackfillRequest>,
    ) -> Result<Response<v1::BackfillResponse>, Status> {
        self.authorize(&req)?;
        let r = req.into_inner();
        let time = |t: &Option<prost_types::Timestamp>, name: &str| {
            t.as_ref().and_then(from_timestamp).ok_or_else(|| {
                error(
                    Code::InvalidArgument,
                    format!("{name} is missing or invalid"),
                    "INVALID_ARGUMENT",
                )
            })
        };
        let range = self
            .jobs
            .validate(
                &r.product,
                time(&r.start_time, "start_time")?,
                time(&r.end_time, "end_time")?,
            )
            .map_err(status_of)?;
        let request_id = (!r.request_id.is_empty()).then_some(r.request_id);
        let job = self
            .jobs
            .backfill(range, request_id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(v1::BackfillResponse {
            job: Some(job_to_proto(&job)),
        }))
    }

    type WatchJobStream = JobStream;

    async fn watch_job(
        &self,
        req: Request<v1::WatchJobRequest>,
    ) -> Result<Response<JobStream>, Status> {
        let rx = self.jobs.watch(&req.into_inner().id).map_err(status_of)?;
        // The current state first, then the latest state at most once per WATCH_INTERVAL
        // (changes in between are coalesced: a job commits hundreds of granules a second),
        // ending after the final state.
        let stream = futures::stream::unfold(
            (rx, false, None::<tokio::time::Instant>),
            |(mut rx, done, sent)| async move {
                if done {
                    return None;
                }
                if let Some(sent) = sent {
                    if rx.changed().await.is_err() {
                        return None;
                    }
                    let finished = rx.borrow().state != JobState::Running;
                    if !finished {
                        tokio::time::sleep_until(sent + WATCH_INTERVAL).await;
                    }
                }
                let s = rx.borrow_and_update().clone();
                let finished = s.state != JobState::Running;
                let now = tokio::time::Instant::now();
                let msg = v1::WatchJobResponse {
                    job: Some(job_to_proto(&s)),
                };
                Some((Ok(msg), (rx, finished, Some(now))))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_job(
        &self,
        req: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::GetJobResponse>, Status> {
        let s = self.jobs.get(&req.into_inner().id).map_err(status_of)?;
        Ok(Response::new(v1::GetJobResponse {
            job: Some(job_to_proto(&s)),
        }))
    }

    async fn list_jobs(
        &self,
        req: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let r = req.into_inner();
        let size = usize::try_from(r.page_size).map_err(|_| {
            error(
                Code::InvalidArgument,
                "page_size must not be negative",
                "INVALID_ARGUMENT",
            )
        })?;
        let page = self
            .jobs
            .page(size, &r.page_token, state_from_proto(r.state))
            .map_err(status_of)?;
        Ok(Response::new(v1::ListJobsResponse {
            jobs: page.jobs.iter().map(job_to_proto).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn cancel_job(
        &self,
        req: Request<v1::CancelJobRequest>,
    ) -> Result<Response<v1::CancelJobResponse>, Status> {
        self.authorize(&req)?;
        let s = self.jobs.cancel(&req.into_inner().id).map_err(status_of)?;
        Ok(Response::new(v1::CancelJobResponse {
            job: Some(job_to_proto(&s)),
        }))
    }

    async fn get_status(
        &self,
        _req: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::GetStatusResponse>, Status> {
        let st = self.jobs.dataset().status_shared().await.map_err(|e| {
            error(
                Code::Unavailable,
                format!("reading the store: {e}"),
                "STORE_UNAVAILABLE",
            )
        })?;
        let lag = st.last_granule.map_or(0.0, |t| {
            (chrono::Utc::now() - t).num_milliseconds() as f64 / 1000.0
        });
        Ok(Response::new(v1::GetStatusResponse {
            product: st.product.clone(),
            time_len: st.time_len,
            first_granule_time: st.first_granule.map(to_timestamp),
            last_granule_time: st.last_granule.map(to_timestamp),
            granules_present: st.granules_present,
            gaps: st
                .gaps
                .iter()
                .map(|g| v1::Gap {
                    start_time: Some(to_timestamp(g.start)),
                    end_time: Some(to_timestamp(g.end)),
                    granules: g.granules,
                })
                .collect(),
            commits: st.commits,
            last_commit_id: st
                .last_commit
                .as_ref()
                .map(|c| c.id.clone())
                .unwrap_or_default(),
            last_commit_time: st.last_commit.as_ref().map(|c| to_timestamp(c.time)),
            ingest_lag: Some(duration(lag)),
            manifests: st.manifests,
            largest_manifest_bytes: st.largest_manifest_bytes,
            manifest_max_bytes: st.manifest_max_bytes,
            last_sweep: self
                .sweeps
                .as_ref()
                .and_then(|s| s.last())
                .map(|r| v1::ReconcileSweep {
                    end_time: Some(to_timestamp(r.finished)),
                    window_start_time: Some(to_timestamp(r.window_start)),
                    window_end_time: Some(to_timestamp(r.window_end)),
                    expected: r.expected,
                    present: r.present,
                    found: r.found,
                    ingested: r.ingested,
                    failed: r.failed,
                    still_missing: r.still_missing,
                    overdue: r.overdue,
                    missing: r.missing,
                    inventory_error: r.inventory_error.unwrap_or_default(),
                }),
            native: self
                .native
                .as_ref()
                .and_then(|n| n.lock().ok().map(|s| s.clone()))
                .map(|n| v1::NativeStore {
                    virtual_snapshot: n.virtual_snapshot.unwrap_or_default(),
                    native_snapshot: n.native_snapshot.unwrap_or_default(),
                    granules_present: n.granules_present,
                    lag: Some(duration(n.lag_seconds)),
                    last_update_time: n.last_update.map(to_timestamp),
                    last_error: n.last_error.unwrap_or_default(),
                }),
        }))
    }
}
