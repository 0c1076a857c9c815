//! Typed errors of the metadata reader. Every problem found in a file (malformed, hostile or
//! simply using a feature this reader does not implement) maps to one variant; nothing panics.

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Hdf5Error>;

/// What went wrong while reading HDF5 metadata.
#[derive(Debug, thiserror::Error)]
pub enum Hdf5Error {
    /// The range reader failed (network, file system).
    #[error("read of {len} bytes at offset {offset} failed: {detail}")]
    Io {
        offset: u64,
        len: u64,
        detail: String,
    },
    /// No HDF5 signature at offset 0, 512, 1024, ... within the first read.
    #[error("not an HDF5 file: no signature found in the first {searched} bytes")]
    NotHdf5 { searched: u64 },
    /// The object is shorter than the file claims, or a structure runs past its end.
    #[error("truncated: {what} needs bytes up to {needed}, but the file has {size}")]
    Truncated {
        what: String,
        needed: u64,
        size: u64,
    },
    /// An address points outside the file.
    #[error("{what}: address {address} is outside the file (end of file {eof})")]
    AddressOutOfRange {
        what: String,
        address: u64,
        eof: u64,
    },
    /// A structure does not start with the signature it must have.
    #[error("{what} at {address}: bad signature {found:?}, expected {expected:?}")]
    BadSignature {
        what: &'static str,
        address: u64,
        found: String,
        expected: &'static str,
    },
    /// A version number this reader does not know.
    #[error("{what} at {address}: unsupported version {version}")]
    UnsupportedVersion {
        what: &'static str,
        address: u64,
        version: u8,
    },
    /// A format feature this reader deliberately does not support (external storage, virtual
    /// datasets, external links, shared messages, ...).
    #[error("unsupported HDF5 feature: {0}")]
    Unsupported(String),
    /// A structurally invalid value (counts, sizes, encodings).
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// A declared size or count exceeds the reader's limits (protects memory).
    #[error("{what}: {value} exceeds the limit of {limit}")]
    LimitExceeded {
        what: &'static str,
        value: u64,
        limit: u64,
    },
    /// A version-2 structure whose stored checksum does not match its bytes.
    #[error(
        "{what} at {address}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
    )]
    Checksum {
        what: &'static str,
        address: u64,
        stored: u32,
        computed: u32,
    },
    /// A pointer structure (B-tree, heap, continuation chain) visits the same address twice.
    #[error("cycle detected in {what}: address {address} visited twice")]
    Cycle { what: &'static str, address: u64 },
    /// A path component does not exist.
    #[error("{path}: not found")]
    NotFound { path: String },
    /// The object at a path is not what was asked for (a group where a dataset was expected...).
    #[error("{path}: {detail}")]
    WrongObject { path: String, detail: String },
}

impl Hdf5Error {
    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            detail: detail.into(),
        }
    }
}
