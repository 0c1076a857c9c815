//! The Icechunk virtual dataset of one IMERG product: its layout (four virtual data variables
//! shaped `(time, lon, lat)`, native coordinates, a per-step `granule_present` flag), appends by
//! time position in batches with one commit each, manifest rollover along `time`, and the
//! single-writer committer that acknowledges a granule only once its commit is durable.

mod arrays;
mod batch;
pub mod cf;
mod committer;
mod config;
mod dataset;
mod error;
mod history;
pub mod maintenance;
mod open;
mod status;
mod store_io;
mod tags;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod test_support;
mod upgrade;
mod verify;

pub use arrays::{PRESENT, TIME_CHUNK};
pub use batch::{BatchOutcome, GranuleOutcome, PreparedBatch};
pub use committer::{
    AppendReceipt, Committer, CommitterConfig, CommitterHandle, CommitterStats, spawn_committer,
};
pub use config::{
    BYTES_PER_REF, DEFAULT_MANIFEST_CACHE_REFS, DEFAULT_MANIFEST_MAX_BYTES,
    DEFAULT_SNAPSHOT_CACHE_NODES, DatasetConfig, RepoLocation, SourceContainer, SourceKind,
    WriterLock,
};
pub use dataset::Dataset;
pub use error::DatasetError;
pub use history::LIST_GRANULES_UP_TO;
pub use maintenance::{MaintenanceConfig, MaintenanceReport};
pub use status::{CommitInfo, Gap, Status};
pub use store_io::is_not_found;
pub use tags::month_tag;
pub use verify::{ChunkToVerify, VerifyError};
