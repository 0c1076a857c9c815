//! Why a granule could not be virtualized: one variant per kind of bad input, each naming the key
//! and what is wrong, plus a short stable reason label for metrics.

/// A granule that cannot be turned into references.
#[derive(Debug, thiserror::Error)]
pub enum VirtualizeError {
    #[error(
        "{key}: not an HDF5 file (no HDF5 signature at offset 0, 512, 1024, ...; {size} bytes)"
    )]
    NotHdf5 { key: String, size: u64 },
    #[error("{key}: truncated HDF5 file ({size} bytes): {detail}")]
    Truncated {
        key: String,
        size: u64,
        detail: String,
    },
    #[error("{key}: HDF5 could not open the file: {detail}")]
    Open { key: String, detail: String },
    #[error("{key}: missing group {group:?}")]
    MissingGroup { key: String, group: String },
    #[error("{key}: missing variable {variable:?}")]
    MissingVariable { key: String, variable: String },
    #[error("{key}: {variable}: {what} is {found}, the product expects {expected}")]
    Layout {
        key: String,
        variable: String,
        what: &'static str,
        found: String,
        expected: String,
    },
    #[error(
        "{key}: {variable}: HDF5 filter {filter} cannot be expressed as a Zarr codec (supported: shuffle, deflate)"
    )]
    UnsupportedFilter {
        key: String,
        variable: String,
        filter: String,
    },
    #[error(
        "{key}: {variable}: fletcher32 checksums are rejected: each stored chunk ends in a 4-byte checksum that no codec in the users' Zarr stack strips in HDF5's layout"
    )]
    Fletcher32 { key: String, variable: String },
    #[error(
        "{key}: {variable}: chunk at {offset:?} skips filters (mask {mask:#x}); the array's codecs cannot describe it"
    )]
    FilterMaskSkips {
        key: String,
        variable: String,
        offset: Vec<u64>,
        mask: u32,
    },
    #[error(
        "{key}: {variable}: chunk at {offset:?} lies outside the file (bytes {start}..{end} of {size})"
    )]
    ChunkOutsideFile {
        key: String,
        variable: String,
        offset: Vec<u64>,
        start: u64,
        end: u64,
        size: u64,
    },
    #[error("{key}: {variable}: chunk at {offset:?} {reason}")]
    ChunkIndex {
        key: String,
        variable: String,
        offset: Vec<u64>,
        reason: String,
    },
    #[error("{key}: {name} is {what}: a granule's data must be stored inside it")]
    ExternalData {
        key: String,
        name: String,
        what: String,
    },
    #[error("{key}: time: {reason}")]
    Time { key: String, reason: String },
    #[error("{key}: coordinate {name}: {reason}")]
    Coordinate {
        key: String,
        name: String,
        reason: String,
    },
    #[error("{key}: HDF5 error reading {context}: {detail}")]
    Hdf5 {
        key: String,
        context: String,
        detail: String,
    },
    #[error(
        "{key}: ranged metadata read is too scattered ({round_trips} dependent round trips, {bytes} of {size} bytes wanted); read the whole object instead"
    )]
    TooScattered {
        key: String,
        round_trips: u32,
        bytes: u64,
        size: u64,
    },
    #[error(
        "{key}: the ranged reader cannot read this granule ({detail}); read the whole object instead"
    )]
    RangedUnsupported { key: String, detail: String },
    #[error("virtualization task failed: {0}")]
    Task(String),
}

impl VirtualizeError {
    /// True if the ranged path gave up on a granule that the whole-object path may still read
    /// ([`Self::TooScattered`], [`Self::RangedUnsupported`]): the caller should fall back to
    /// [`crate::virtualize_bytes_blocking`] on the whole object. Every other error is a verdict
    /// on the granule itself, the same as the whole-object path would give.
    pub fn falls_back(&self) -> bool {
        matches!(
            self,
            Self::TooScattered { .. } | Self::RangedUnsupported { .. }
        )
    }

    /// Short, stable label for metrics and logs (`rejected{reason=...}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotHdf5 { .. } => "not_hdf5",
            Self::Truncated { .. } => "truncated",
            Self::Open { .. } => "unreadable",
            Self::MissingGroup { .. } | Self::MissingVariable { .. } => "missing_variable",
            Self::Layout { .. } => "layout",
            Self::UnsupportedFilter { .. } | Self::Fletcher32 { .. } => "unsupported_filter",
            Self::FilterMaskSkips { .. } => "filter_mask",
            Self::ChunkOutsideFile { .. } => "truncated",
            Self::ChunkIndex { .. } => "chunk_index",
            Self::ExternalData { .. } => "external_data",
            Self::Time { .. } | Self::Coordinate { .. } => "coordinates",
            Self::Hdf5 { .. } => "hdf5",
            Self::TooScattered { .. } => "too_scattered",
            Self::RangedUnsupported { .. } => "ranged_unsupported",
            Self::Task(_) => "internal",
        }
    }
}
