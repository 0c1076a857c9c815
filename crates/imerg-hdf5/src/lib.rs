//! imerg-hdf5: a pure-Rust HDF5 *metadata* reader over ranged reads.
//!
//! From byte-range reads only (see [`RangeReader`]), it finds for each dataset its datatype,
//! shape, storage layout, filter pipeline, fill value, attributes and every stored chunk's
//! (offset, address, size, filter mask), without reading chunk data. It supports what NASA GPM
//! IMERG granules and the project's synthetic granules use: superblock v0/v2/v3, object header
//! v1/v2 with continuations, old-style groups (symbol tables) and new-style groups (compact or
//! dense links in a fractal heap), layout messages v3/v4 and every chunk index HDF5 1.10 writes
//! (v1 B-tree, single chunk, implicit, fixed array, extensible array, v2 B-tree).
//!
//! Everything read from the file is untrusted: arithmetic is checked, allocations are bounded by
//! [`ReadOptions`], pointer cycles are detected and addresses past the end of the file are
//! rejected; external storage, external links and virtual datasets give a typed error.
//!
//! Entry points: [`Hdf5File::open`], then [`Hdf5File::datasets`]; or [`read_imerg`] for the
//! ten IMERG variables and coordinates under `/Grid` at once.
#![forbid(unsafe_code)]

mod btree;
mod chunks;
mod cursor;
mod error;
mod file;
mod heaps;
mod messages;
mod object_header;
mod reader;

use std::sync::Arc;

pub use chunks::ChunkLocation;
pub use cursor::Sizes;
pub use error::{Hdf5Error, Result};
pub use file::{AttrValue, Attribute, DatasetInfo, Hdf5File, Superblock};
pub use messages::{
    ByteOrder, ChunkIndex, Datatype, FillDefined, Filter, FilterKind, Link, LinkTarget,
    StorageLayout,
};
pub use reader::{
    FetchStats, Fetcher, FileReader, GetRecord, LayoutHints, MemReader, ObjectMeta, RangeReader,
    ReadOptions,
};

/// IMERG's data variables under `/Grid`.
pub const IMERG_VARIABLES: [&str; 4] = [
    "precipitation",
    "randomError",
    "probabilityLiquidPrecipitation",
    "precipitationQualityIndex",
];

/// IMERG's coordinate variables under `/Grid`.
pub const IMERG_COORDINATES: [&str; 6] =
    ["time", "lon", "lat", "lon_bnds", "lat_bnds", "time_bnds"];

/// The metadata of one IMERG granule, and what reading it cost.
#[derive(Debug, Clone)]
pub struct GranuleIndex {
    pub superblock: Superblock,
    /// The four data variables then the six coordinates, in the order of [`IMERG_VARIABLES`]
    /// and [`IMERG_COORDINATES`].
    pub datasets: Vec<DatasetInfo>,
    pub stats: FetchStats,
}

/// Reads the metadata of the IMERG variables and coordinates under `/Grid`, concurrently.
pub async fn read_imerg(reader: Arc<dyn RangeReader>, opts: ReadOptions) -> Result<GranuleIndex> {
    let file = Hdf5File::open(reader, opts).await?;
    let names: Vec<&str> = IMERG_VARIABLES
        .iter()
        .chain(IMERG_COORDINATES.iter())
        .copied()
        .collect();
    let datasets = file.datasets("/Grid", &names).await?;
    Ok(GranuleIndex {
        superblock: file.superblock().clone(),
        datasets,
        stats: file.stats(),
    })
}
