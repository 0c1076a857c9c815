//! The operators' API: backfill jobs ([`jobs`]), kept across restarts beside the repository
//! ([`store`]), and the IngestService gRPC server ([`grpc`]).

pub mod grpc;
pub mod jobs;
pub mod store;

pub use grpc::{IngestApi, job_to_proto};
pub use jobs::{JobError, JobManager, JobPage, JobState, JobStatus};
pub use store::{JobStore, StoreError};
