//! The native time-series store: the virtual store's data variables rechunked into long time
//! chunks (a point over the whole record in ~170 chunk reads instead of 486,480), written by one
//! writer that follows the virtual store. Each native commit records the virtual snapshot it
//! reflects, so the writer resumes after a crash and never applies a change twice.
//!
//! - [`layout`]: chunk and shard shapes, the data variables' `zarr.json`.
//! - `frames`, `shard`: the chunk encoding (zstd frames, appended without re-encoding).
//! - [`writer`]: copying metadata and writing steps, one shard column at a time.
//! - [`repo`]: the native repository, what it reflects, commits.
//! - [`changes`]: which time steps changed between two virtual snapshots.
//! - [`rechunk`]: the batch rechunk, by regions, resumable, shardable across jobs.
//! - [`follow`]: the `native` role: keeps the store within a lag of the virtual store.

pub mod changes;
pub mod follow;
mod frames;
pub mod layout;
pub mod rechunk;
pub mod repo;
mod shard;
pub mod writer;

pub use follow::{Follower, FollowerConfig, NativeStatus, native_status};
pub use layout::NativeLayout;
pub use rechunk::{RechunkOptions, RechunkReport, ShardOf};
pub use repo::{Applied, NativeRepo};
pub use writer::WriteStats;

/// What went wrong writing the native store.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("{key}: {message}")]
    Store { key: String, message: String },
    #[error("repository: {0}")]
    Repository(String),
    #[error("metadata: {0}")]
    Metadata(String),
    #[error("codec: {0}")]
    Codec(String),
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error("the virtual store: {0}")]
    Virtual(#[from] imerg_dataset::DatasetError),
    #[error("{0}")]
    Config(String),
}

impl NativeError {
    pub(crate) fn store(key: &str, e: impl std::fmt::Display) -> Self {
        Self::Store {
            key: key.to_string(),
            message: e.to_string(),
        }
    }

    pub(crate) fn ic(e: impl std::fmt::Display) -> Self {
        Self::Repository(e.to_string())
    }
}
