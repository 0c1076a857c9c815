//! HTTP endpoints for operators and Kubernetes: `/` (the status page for people), `/metrics`
//! (Prometheus text format), `/healthz` (the process is alive: its critical tasks run and no
//! libhdf5 parse is stuck; else 503, and the orchestrator restarts it) and `/readyz` (not
//! shutting down, the repository answers within 5 s, and the SQS queue answered the listener's
//! last call).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::routing::get;
use imerg_dataset::Dataset;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::status_page;

/// What the handlers need.
#[derive(Clone)]
pub(crate) struct State {
    pub prometheus: PrometheusHandle,
    /// The repository, for roles that use it (readiness checks it).
    pub dataset: Option<Arc<Dataset>>,
    /// The SQS listener's view of its queue, when this process listens.
    pub queue: Option<Arc<imerg_listener::QueueHealth>>,
    /// False from the moment shutdown starts: load balancers stop sending work first.
    pub ready: Arc<AtomicBool>,
    /// The backfill jobs, when this process runs the API role.
    pub jobs: Option<Arc<imerg_ingest_api::JobManager>>,
    /// The critical tasks and the parse limit `/healthz` checks.
    pub liveness: Arc<Liveness>,
    /// The repository's last answer to `/readyz`, reused for a second: the endpoint is
    /// unauthenticated, and each call would otherwise read the branch tip (review L9).
    pub readiness: Arc<tokio::sync::Mutex<Option<(std::time::Instant, Answer)>>>,
}

/// An HTTP status and body.
type Answer = (StatusCode, String);

/// How long `/readyz` reuses the repository's last answer.
const READINESS_FRESH_FOR: Duration = Duration::from_secs(1);

/// What `/healthz` checks: the critical tasks (each with a token cancelled when it ends, by
/// return or by panic) and how long one libhdf5 parse may run (review M8).
#[derive(Debug)]
pub(crate) struct Liveness {
    tasks: std::sync::Mutex<Vec<(&'static str, CancellationToken)>>,
    parse_stuck_after: Duration,
}

impl Liveness {
    pub(crate) fn new(parse_stuck_after: Duration) -> Self {
        Self {
            tasks: std::sync::Mutex::new(Vec::new()),
            parse_stuck_after,
        }
    }

    /// Watches a critical task: `finished` is cancelled when it ends.
    pub(crate) fn watch(&self, name: &'static str, finished: CancellationToken) {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, finished));
    }

    /// A critical task that runs `task`, watched as `name`.
    pub(crate) fn supervise<F>(
        &self,
        name: &'static str,
        task: F,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let finished = CancellationToken::new();
        self.watch(name, finished.clone());
        let guard = finished.drop_guard();
        async move {
            let _guard = guard;
            task.await;
        }
    }

    /// Why the process is not alive, `None` if it is.
    fn problem(&self) -> Option<String> {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((name, _)) = tasks.iter().find(|(_, t)| t.is_cancelled()) {
            return Some(format!("critical task stopped: {name}"));
        }
        match imerg_virtualize::oldest_parse() {
            Some(age) if age > self.parse_stuck_after => Some(format!(
                "an HDF5 parse has run for {}s (limit {}s): libhdf5 is stuck",
                age.as_secs(),
                self.parse_stuck_after.as_secs()
            )),
            _ => None,
        }
    }
}

/// The status page (see [`crate::status_page`]).
async fn status_page(AxumState(s): AxumState<State>) -> axum::response::Html<String> {
    let (status, error) = match &s.dataset {
        Some(ds) => match status_page::current(ds).await {
            Ok(st) => (Some(st), None),
            Err(e) => (None, Some(e)),
        },
        None => (None, None),
    };
    let jobs = s.jobs.as_ref().map(|j| j.list()).unwrap_or_default();
    axum::response::Html(status_page::render(
        s.dataset.as_deref(),
        status.as_deref(),
        error.as_deref(),
        &jobs,
        chrono::Utc::now(),
    ))
}

async fn metrics_text(AxumState(s): AxumState<State>) -> String {
    crate::telemetry::process_collector().collect();
    s.prometheus.render()
}

async fn healthz(AxumState(s): AxumState<State>) -> (StatusCode, String) {
    // While shutting down, tasks end on purpose: that is no failure.
    let stopping = !s.ready.load(Ordering::SeqCst);
    match s.liveness.problem().filter(|_| !stopping) {
        Some(p) => {
            tracing::error!(problem = %p, "not alive");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{p}\n"))
        }
        None => (StatusCode::OK, "ok\n".into()),
    }
}

async fn readyz(AxumState(s): AxumState<State>) -> (StatusCode, String) {
    if !s.ready.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    if let Some(Err(e)) = s.queue.as_ref().map(|q| q.check()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("SQS queue unreachable: {e}\n"),
        );
    }
    let Some(dataset) = s.dataset else {
        return (
            StatusCode::OK,
            "ready (no repository in this role)\n".into(),
        );
    };
    let mut last = s.readiness.lock().await;
    if let Some((at, answer)) = last.as_ref()
        && at.elapsed() < READINESS_FRESH_FOR
    {
        return answer.clone();
    }
    let branch = dataset.config().branch.clone();
    let answer = match tokio::time::timeout(Duration::from_secs(5), dataset.branch_tip()).await {
        Ok(Ok(tip)) => (StatusCode::OK, format!("ready: {branch} at {tip}\n")),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("repository unreachable: {e}\n"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "repository did not answer within 5 s\n".into(),
        ),
    };
    *last = Some((std::time::Instant::now(), answer.clone()));
    answer
}

/// The router of the HTTP port.
pub(crate) fn router(state: State) -> axum::Router {
    axum::Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}
