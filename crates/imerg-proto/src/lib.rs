//! The gRPC API, in proto/: `imerg.ingest.v1` (the operators' IngestService) and
//! `imerg.ingest.internal.v1` (CommitService and WorkerService, which the roles call on each
//! other): generated messages, clients and servers, the descriptor set for reflection, and
//! conversions between the wire form of a granule and [`imerg_refs::GranuleRefs`].

#[allow(clippy::all, clippy::pedantic, missing_debug_implementations)]
pub mod v1 {
    tonic::include_proto!("imerg.ingest.v1");
}

/// The roles' own services (not for operators' tools).
pub mod internal {
    #[allow(clippy::all, clippy::pedantic, missing_debug_implementations)]
    pub mod v1 {
        tonic::include_proto!("imerg.ingest.internal.v1");
    }
}

/// Encoded `FileDescriptorSet` of every proto file, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("imerg_ingest_v1_descriptor");

mod convert;

pub use convert::{
    ConvertError, from_timestamp, granule_from_proto, granule_to_proto, to_timestamp,
};
