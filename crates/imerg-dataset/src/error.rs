//! Errors of the dataset writer and the committer.

/// Why a granule or a batch could not be written.
#[derive(Debug, thiserror::Error, Clone)]
pub enum DatasetError {
    /// The granule does not fit the dataset (another layout, other coordinates, other product).
    #[error("{key}: rejected: {reason}")]
    Rejected {
        key: String,
        /// Stable label for metrics: `layout`, `product`, `source_container`, `time_range`.
        label: &'static str,
        reason: String,
    },
    /// Another writer moved the branch: never overwrite, report loudly.
    #[error(
        "second writer detected: branch {branch} moved from {expected} to {actual} during a commit"
    )]
    SecondWriter {
        branch: String,
        expected: String,
        actual: String,
    },
    /// The repository could not be read or written.
    #[error("icechunk: {0}")]
    Icechunk(String),
    /// The store holds something this version does not understand.
    #[error("dataset is inconsistent: {0}")]
    Inconsistent(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The committer stopped before the granule's batch was durable.
    #[error("committer is shut down")]
    Shutdown,
}

impl DatasetError {
    pub(crate) fn ic(e: impl std::fmt::Display) -> Self {
        Self::Icechunk(e.to_string())
    }

    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Rejected { label, .. } => label,
            Self::SecondWriter { .. } => "second_writer",
            Self::Icechunk(_) => "icechunk",
            Self::Inconsistent(_) => "inconsistent",
            Self::Config(_) => "config",
            Self::Shutdown => "shutdown",
        }
    }
}
