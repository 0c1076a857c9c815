//! The virtualized granule, shared by every part of the pipeline: its chunk references, the Zarr v3
//! metadata the store holds for each variable, its coordinates, and a layout description whose
//! fingerprint decides whether a granule fits a dataset. Also the codec chain needed to decode a
//! referenced chunk (used to verify references against HDF5 itself).

mod codec;
mod layout;
mod model;
mod time;
mod zarr;

pub use codec::{Codec, CodecError, Endian, decode_chunk};
pub use layout::{FillValue, Layout, VariableLayout, dtype_size};
pub use model::{ChunkRef, CoordArray, Coords, GranuleRefs, SourceObject, TimeCoord, VariableRefs};
pub use time::{TimeUnits, TimeUnitsError};
pub use zarr::{array_metadata, encode_fill_value_attr, group_metadata};
