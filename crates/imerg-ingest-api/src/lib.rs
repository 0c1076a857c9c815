//! The operators' API: backfill jobs ([`jobs`]) and the IngestService gRPC server ([`grpc`]).

pub mod grpc;
pub mod jobs;

pub use grpc::{IngestApi, job_to_proto};
pub use jobs::{JobError, JobManager, JobState, JobStatus};
