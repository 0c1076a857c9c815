//! The virtualizer: reads an IMERG HDF5 granule (from bytes in memory or a local path) and returns
//! its exact chunk references, the Zarr v3 metadata of each data variable, its coordinates and its
//! layout fingerprint ([`imerg_refs::GranuleRefs`]). Every check against the product profile fails
//! with a [`VirtualizeError`] that names the key and what is wrong; nothing panics.
//!
//! HDF5 serializes every call on one global lock, so async callers must use
//! [`virtualize_bytes_blocking`] (a blocking-pool task), never call the sync functions on an
//! async worker thread.
//!
//! [`virtualize_ranged`] reads the same granule with byte-range requests instead (the pure-Rust
//! metadata reader imerg-hdf5; no libhdf5, no whole-object download) and returns the same
//! [`imerg_refs::GranuleRefs`]. Both paths feed one builder (`build.rs`) with what the file says,
//! so they apply the same checks and give the same errors; libhdf5 is the oracle in the tests.
//! When the ranged path gives up ([`VirtualizeError::falls_back`]), read the whole object.

mod attrs;
mod build;
mod error;
mod metno;
mod open;
mod ranged;
mod watchdog;

use std::path::Path;

use imerg_catalog::{GranuleId, ProductProfile};
use imerg_refs::{GranuleRefs, SourceObject};

pub use error::VirtualizeError;
pub use ranged::{RangedOptions, virtualize_ranged};
pub use watchdog::oldest_parse;

/// Virtualizes a granule held in memory (the whole object's bytes).
pub fn virtualize_bytes(
    bytes: &[u8],
    id: &GranuleId,
    source: &SourceObject,
    profile: &ProductProfile,
) -> Result<GranuleRefs, VirtualizeError> {
    let _parse = watchdog::Parse::start();
    imerg_crashpoint::fault(imerg_crashpoint::HDF5_PARSE);
    let file = open::open_bytes(&id.key, bytes)?;
    read_granule(&file, bytes.len() as u64, id, source, profile)
}

/// Virtualizes a granule file on the local filesystem.
pub fn virtualize_path(
    path: &Path,
    id: &GranuleId,
    source: &SourceObject,
    profile: &ProductProfile,
) -> Result<GranuleRefs, VirtualizeError> {
    let _parse = watchdog::Parse::start();
    imerg_crashpoint::fault(imerg_crashpoint::HDF5_PARSE);
    let (file, size) = open::open_path(&id.key, path)?;
    read_granule(&file, size, id, source, profile)
}

/// [`virtualize_bytes`] on tokio's blocking pool, for async callers.
pub async fn virtualize_bytes_blocking<B>(
    bytes: B,
    id: GranuleId,
    source: SourceObject,
    profile: std::sync::Arc<ProductProfile>,
) -> Result<GranuleRefs, VirtualizeError>
where
    B: AsRef<[u8]> + Send + 'static,
{
    tokio::task::spawn_blocking(move || virtualize_bytes(bytes.as_ref(), &id, &source, &profile))
        .await
        .map_err(|e| VirtualizeError::Task(e.to_string()))?
}

fn read_granule(
    file: &hdf5::File,
    size: u64,
    id: &GranuleId,
    source: &SourceObject,
    profile: &ProductProfile,
) -> Result<GranuleRefs, VirtualizeError> {
    let src = metno::MetnoGranule {
        file,
        key: id.key.as_str(),
    };
    build::build_granule(&src, size, id, source, profile)
}
