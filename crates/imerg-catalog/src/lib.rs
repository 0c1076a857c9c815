//! Granule catalog: IMERG product profiles and the mapping between a granule's start time, its
//! object key, its URL and its position (time index) in the dataset.
//!
//! Everything product-specific is configuration ([`ProductProfile`], serde-loadable); the built-in
//! default is the Final run, half-hourly, V07B. Names follow the real ones exactly, e.g.
//! `GPM_L3/GPM_3IMERGHH.07/1998/001/3B-HHR.MS.MRG.3IMERG.19980101-S000000-E002959.0000.V07B.HDF5`.
//! The near-real-time runs (Early, Late) are built in too: open-ended, with an expected latency,
//! and file names whose version label changes at a configured instant ([`VersionLabel`] periods;
//! a granule keeps one position whatever its label, and
//! [`ProductProfile::alternate_keys`] gives its key under the other labels).

mod error;
mod layout;
mod location;
mod profile;

pub use error::CatalogError;
pub use layout::{GridSpec, LayoutSpec, VariableSpec};
pub use location::{Location, LocationError, SourceLocation, allow_http};
pub use profile::{GranuleId, ProductProfile, TimeRange, VersionLabel, parse_time};
