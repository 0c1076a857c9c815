//! The committer role's interface, and the in-process committer as its implementation.

use async_trait::async_trait;
use imerg_dataset::{CommitterHandle, DatasetError, GranuleOutcome};
use imerg_refs::GranuleRefs;

use crate::{IngestError, Outcome, Reason};

/// A granule made durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub key: String,
    pub outcome: Outcome,
    pub batch_id: String,
    pub snapshot: String,
}

/// Makes references durable; returns once the commit holding them is.
#[async_trait]
pub trait Appender: Send + Sync + std::fmt::Debug + 'static {
    async fn append(&self, granule: GranuleRefs) -> Result<Appended, IngestError>;
}

/// What the store's error means for the granule.
pub fn reason_of(e: &DatasetError) -> Reason {
    match e {
        DatasetError::Rejected { label, .. } => Reason::from_label(label),
        DatasetError::SecondWriter { .. } => Reason::SecondWriter,
        DatasetError::Icechunk(_) => Reason::Icechunk,
        DatasetError::Inconsistent(_) => Reason::Inconsistent,
        DatasetError::Config(_) => Reason::Config,
        DatasetError::Shutdown => Reason::Shutdown,
        #[allow(unreachable_patterns)]
        _ => Reason::Internal,
    }
}

/// The in-process committer as an [`Appender`].
#[async_trait]
impl Appender for CommitterHandle {
    async fn append(&self, granule: GranuleRefs) -> Result<Appended, IngestError> {
        let r = CommitterHandle::append(self, granule)
            .await
            .map_err(|e| IngestError::new(reason_of(&e), e.to_string()))?;
        let outcome = match &r.outcome {
            GranuleOutcome::Added => Outcome::Added,
            GranuleOutcome::Replaced { .. } => Outcome::Replaced,
            GranuleOutcome::Duplicate => Outcome::Duplicate,
            GranuleOutcome::Stale { .. } => Outcome::Stale,
            GranuleOutcome::Rejected(e) => {
                return Err(IngestError::new(reason_of(e), e.to_string()));
            }
        };
        Ok(Appended {
            key: r.key,
            outcome,
            batch_id: r.batch_id,
            snapshot: r.snapshot,
        })
    }
}
