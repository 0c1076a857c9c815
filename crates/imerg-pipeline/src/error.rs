//! The one error a granule meets on its way into the store, whatever the driver or the role.

use crate::Reason;

/// Why a granule did not land: a closed [`Reason`] (the metric label and wire code), a message
/// that names the granule and the problem, and the stage that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct IngestError {
    pub reason: Reason,
    pub message: String,
    pub stage: Stage,
}

/// Where on the ingest path a granule stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Fetching or parsing (the worker): nothing was virtualized.
    Virtualize,
    /// Making the references durable (the committer): the granule was virtualized.
    Append,
}

impl IngestError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            stage: Stage::Virtualize,
        }
    }

    /// The same error, as met at `stage`.
    pub fn at(self, stage: Stage) -> Self {
        Self { stage, ..self }
    }

    /// The same input may succeed later (see [`Reason::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        self.reason.is_retryable()
    }

    /// The granule is absent at the source: a gap, not a failure.
    pub fn is_gap(&self) -> bool {
        self.reason == Reason::NotFound
    }
}
