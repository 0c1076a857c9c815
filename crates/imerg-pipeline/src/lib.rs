//! The seam between the service's roles, and the one ingest path every driver uses.
//!
//! A [`Worker`] turns a granule into references (fetch + HDF5 parse), an [`Appender`] makes
//! references durable (the committer). In one process the roles call each other directly; split
//! into processes, gRPC clients implement the same traits. The [`Ingestor`] is the single place
//! that runs "granule -> worker -> appender" with its metrics and outcome classification: the SQS
//! listener, the directory watcher, backfill jobs and the `append` command all call it.

mod appender;
mod error;
mod ingestor;
mod reason;
mod worker;

pub use appender::{Appended, Appender};
pub use error::{IngestError, Stage};
pub use imerg_catalog::GranuleId;
pub use imerg_refs::GranuleRefs;
pub use ingestor::{Ingestor, Origin};
pub use reason::{Outcome, Reason};
pub use worker::{FetchCost, LocalWorker, Ranged, Worker, virtualize_url, virtualize_url_with};
