//! The two role interfaces the service is built from, and their in-process implementations:
//! a [`Worker`] turns a granule key into references (fetch + HDF5 parse), an [`Appender`] makes
//! references durable (the committer). Run in one process the roles call each other directly;
//! split into processes, gRPC clients implement the same traits.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use imerg_catalog::ProductProfile;
use imerg_dataset::{CommitterHandle, DatasetError, GranuleOutcome};
use imerg_metrics as m;
pub use imerg_refs::GranuleRefs;
use imerg_source::{Source, SourceError};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

/// Why a worker could not produce references.
#[derive(Debug, thiserror::Error, Clone)]
pub enum WorkError {
    /// The object does not exist: a gap, not a failure.
    #[error("{key}: not found at the source")]
    NotFound { key: String },
    /// Bad input that will not get better by retrying (not a granule, not HDF5, truncated, ...).
    #[error("{message}")]
    BadInput {
        reason: &'static str,
        message: String,
    },
    /// Worth retrying later (network, throttling, shutdown).
    #[error("{message}")]
    Transient { message: String },
}

impl WorkError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::BadInput { reason, .. } => reason,
            Self::Transient { .. } => "transient",
        }
    }
}

/// Why an appender could not make a granule durable.
#[derive(Debug, thiserror::Error, Clone)]
pub enum AppendError {
    /// The granule does not fit the dataset.
    #[error("{message}")]
    Rejected { reason: String, message: String },
    /// Could not commit now (commit failures, second writer, shutdown).
    #[error("{message}")]
    Unavailable { reason: String, message: String },
}

impl AppendError {
    pub fn reason(&self) -> &str {
        match self {
            Self::Rejected { reason, .. } | Self::Unavailable { reason, .. } => reason,
        }
    }
}

/// A granule made durable.
#[derive(Debug, Clone)]
pub struct Appended {
    pub key: String,
    /// `added`, `replaced` or `duplicate`.
    pub outcome: String,
    pub batch_id: String,
    pub snapshot: String,
}

/// Turns a granule key (bucket-relative) into references.
#[async_trait]
pub trait Worker: Send + Sync + std::fmt::Debug + 'static {
    async fn virtualize(&self, key: &str) -> Result<GranuleRefs, WorkError>;
}

/// Makes references durable; returns once the commit holding them is.
#[async_trait]
pub trait Appender: Send + Sync + std::fmt::Debug + 'static {
    async fn append(&self, granule: GranuleRefs) -> Result<Appended, AppendError>;
}

/// Fetches from a [`Source`] and parses on the blocking pool, at most `concurrency` at a time
/// (bounding memory: each granule's bytes are held until parsed).
#[derive(Debug)]
pub struct LocalWorker {
    source: Source,
    profile: Arc<ProductProfile>,
    permits: Semaphore,
}

impl LocalWorker {
    pub fn new(source: Source, profile: Arc<ProductProfile>, concurrency: usize) -> Self {
        Self {
            source,
            profile,
            permits: Semaphore::new(concurrency.max(1)),
        }
    }

    pub fn source(&self) -> &Source {
        &self.source
    }
}

#[async_trait]
impl Worker for LocalWorker {
    async fn virtualize(&self, key_or_url: &str) -> Result<GranuleRefs, WorkError> {
        let id = self
            .profile
            .parse_any(key_or_url)
            .map_err(|e| WorkError::BadInput {
                reason: "not_a_granule",
                message: e.to_string(),
            })?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| WorkError::Transient {
                message: "worker shutting down".into(),
            })?;
        let span = tracing::info_span!("granule", key = %id.key);
        self.fetch_and_parse(id).instrument(span).await
    }
}

impl LocalWorker {
    async fn fetch_and_parse(
        &self,
        id: imerg_catalog::GranuleId,
    ) -> Result<GranuleRefs, WorkError> {
        let t0 = Instant::now();
        let fetched = match self.source.fetch(&id.key).await {
            Ok(f) => f,
            Err(SourceError::NotFound { .. }) => {
                metrics::counter!(m::GRANULES_MISSING).increment(1);
                return Err(WorkError::NotFound { key: id.key });
            }
            Err(e @ SourceError::Unsupported { .. }) => {
                return Err(WorkError::BadInput {
                    reason: "source",
                    message: e.to_string(),
                });
            }
            Err(e) => {
                return Err(WorkError::Transient {
                    message: e.to_string(),
                });
            }
        };
        metrics::histogram!(m::FETCH_SECONDS).record(t0.elapsed().as_secs_f64());
        metrics::counter!(m::BYTES_FETCHED).increment(fetched.bytes.len() as u64);
        let t1 = Instant::now();
        let key = id.key.clone();
        let refs = imerg_virtualize::virtualize_bytes_blocking(
            fetched.bytes,
            id,
            fetched.object,
            Arc::clone(&self.profile),
        )
        .await;
        metrics::histogram!(m::PARSE_SECONDS).record(t1.elapsed().as_secs_f64());
        match refs {
            Ok(g) => {
                metrics::counter!(m::GRANULES_VIRTUALIZED).increment(1);
                Ok(g)
            }
            Err(e) => {
                let reason = e.reason();
                metrics::counter!(m::GRANULES_REJECTED, "reason" => reason).increment(1);
                tracing::warn!(%key, reason, error = %e, "granule rejected");
                Err(WorkError::BadInput {
                    reason,
                    message: e.to_string(),
                })
            }
        }
    }
}

/// The in-process committer as an [`Appender`].
#[async_trait]
impl Appender for CommitterHandle {
    async fn append(&self, granule: GranuleRefs) -> Result<Appended, AppendError> {
        match CommitterHandle::append(self, granule).await {
            Ok(r) => {
                let outcome = match &r.outcome {
                    GranuleOutcome::Replaced { .. } => "replaced",
                    GranuleOutcome::Duplicate => "duplicate",
                    _ => "added",
                };
                Ok(Appended {
                    key: r.key,
                    outcome: outcome.into(),
                    batch_id: r.batch_id,
                    snapshot: r.snapshot,
                })
            }
            Err(e @ DatasetError::Rejected { .. }) => Err(AppendError::Rejected {
                reason: e.label().into(),
                message: e.to_string(),
            }),
            Err(e) => Err(AppendError::Unavailable {
                reason: e.label().into(),
                message: e.to_string(),
            }),
        }
    }
}
