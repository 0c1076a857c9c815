//! The data model of a virtualized granule: what the worker produces and the committer writes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Layout, layout::hex};

/// One chunk reference: chunk grid index `(t, i, j)` in the dataset, byte range in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub chunk: [u64; 3],
    pub offset: u64,
    pub length: u64,
}

/// A data variable of one granule: its Zarr metadata (for one time step) and its references.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariableRefs {
    /// The array's `zarr.json` as it would be written, with a time length of 1.
    pub zarr: serde_json::Value,
    pub refs: Vec<ChunkRef>,
}

/// A float32 coordinate array (lon, lat and their bounds) with its attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoordArray {
    pub shape: Vec<u64>,
    pub values: Vec<f32>,
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// The granule's time coordinate as stored in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeCoord {
    /// Stored value (int32 in the file) in `units`.
    pub value: i64,
    pub bounds: [i64; 2],
    /// Units exactly as in the file, e.g. `seconds since 1980-01-06 00:00:00 UTC`.
    pub units: String,
    /// Calendar as in the file (`julian` for IMERG).
    pub calendar: String,
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// Coordinates of a granule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coords {
    pub time: TimeCoord,
    pub lon: CoordArray,
    pub lat: CoordArray,
    pub lon_bnds: CoordArray,
    pub lat_bnds: CoordArray,
}

impl Coords {
    /// SHA-256 (hex) of the spatial coordinate values, in a fixed order.
    pub fn spatial_digest(&self) -> String {
        let mut h = Sha256::new();
        for (name, c) in self.spatial() {
            h.update(name.as_bytes());
            for v in &c.values {
                h.update(v.to_le_bytes());
            }
        }
        hex(&h.finalize())
    }

    /// The spatial coordinates with their names, in store order.
    pub fn spatial(&self) -> [(&'static str, &CoordArray); 4] {
        [
            ("lon", &self.lon),
            ("lat", &self.lat),
            ("lon_bnds", &self.lon_bnds),
            ("lat_bnds", &self.lat_bnds),
        ]
    }
}

/// The source object a granule was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceObject {
    /// URL the references point at (`s3://bucket/key`, `file:///dir/key`).
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_modified: Option<DateTime<Utc>>,
    pub size: u64,
}

/// Everything the store needs to add one granule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GranuleRefs {
    /// Object key relative to the bucket.
    pub key: String,
    /// URL the references point at (inside a virtual chunk container).
    pub url: String,
    pub product: String,
    pub start: DateTime<Utc>,
    pub time_index: u64,
    /// ETag of the source object, if known (references carry it so a replaced object fails loudly).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_modified: Option<DateTime<Utc>>,
    /// Size of the source object in bytes.
    pub size: u64,
    pub variables: BTreeMap<String, VariableRefs>,
    pub coords: Coords,
    pub layout: Layout,
    /// `layout.fingerprint()`, kept so consumers need not recompute it.
    pub fingerprint: String,
}

impl GranuleRefs {
    /// Total number of chunk references.
    pub fn ref_count(&self) -> usize {
        self.variables.values().map(|v| v.refs.len()).sum()
    }
}
