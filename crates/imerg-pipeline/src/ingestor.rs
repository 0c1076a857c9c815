//! The one ingest path: a granule goes to the worker, its references to the appender, and the
//! same metrics move whichever driver (SQS, directory watcher, backfill, `append`) asked.

use std::sync::Arc;
use std::time::Instant;

use imerg_catalog::GranuleId;
use imerg_metrics as m;
use tracing::Instrument as _;

use crate::{Appended, Appender, IngestError, Stage, Worker};

/// Which driver handed a granule in (the `source` label of the ingest metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Origin {
    Sqs,
    Watcher,
    Backfill,
    Append,
    /// The reconciliation sweep (granules that exist at the source but were never announced).
    Reconcile,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqs => "sqs",
            Self::Watcher => "watcher",
            Self::Backfill => "backfill",
            Self::Append => "append",
            Self::Reconcile => "reconcile",
        }
    }
}

/// Runs granules through a worker and an appender. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ingestor {
    worker: Arc<dyn Worker>,
    appender: Arc<dyn Appender>,
}

/// Holds one unit of the in-flight gauge; gives it back when dropped (also on cancellation).
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        metrics::gauge!(m::IN_FLIGHT).increment(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(m::IN_FLIGHT).decrement(1.0);
    }
}

impl Ingestor {
    pub fn new(worker: Arc<dyn Worker>, appender: Arc<dyn Appender>) -> Self {
        Self { worker, appender }
    }

    pub fn worker(&self) -> &Arc<dyn Worker> {
        &self.worker
    }

    pub fn appender(&self) -> &Arc<dyn Appender> {
        &self.appender
    }

    /// Fetches, virtualizes and appends one granule; returns once the commit holding it is
    /// durable. Counts it as received, in flight while it runs, its latency and its result.
    pub async fn ingest(&self, id: &GranuleId, origin: Origin) -> Result<Appended, IngestError> {
        let source = origin.as_str();
        metrics::counter!(m::GRANULES_RECEIVED, "source" => source).increment(1);
        let _in_flight = InFlight::enter();
        let t0 = Instant::now();
        // One granule's way through worker and committer: the root of its trace (or a child of
        // the notification's), carried to the other roles' processes in the RPCs' metadata.
        let span =
            tracing::info_span!("ingest", key = %id.key, source, trace_id = tracing::field::Empty);
        imerg_trace::record_trace_id(&span);
        let r = async {
            let refs = self.worker.virtualize(id).await?;
            imerg_crashpoint::reached(imerg_crashpoint::AFTER_VIRTUALIZE);
            self.appender
                .append(refs)
                .await
                .map_err(|e| e.at(Stage::Append))
        }
        .instrument(span.clone())
        .await;
        metrics::histogram!(m::INGEST_SECONDS, "source" => source)
            .record(t0.elapsed().as_secs_f64());
        let result = match &r {
            Ok(a) => a.outcome.as_str(),
            Err(e) => e.reason.as_str(),
        };
        metrics::counter!(m::GRANULES_INGESTED, "source" => source, "result" => result)
            .increment(1);
        let _in_span = span.enter();
        match &r {
            Ok(a) => tracing::debug!(outcome = a.outcome.as_str(), "granule ingested"),
            Err(e) if !e.is_gap() => {
                tracing::warn!(key = %id.key, source, reason = %e.reason, error = %e, "granule not ingested");
            }
            Err(_) => {}
        }
        r
    }
}
