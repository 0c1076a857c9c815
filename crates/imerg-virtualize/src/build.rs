//! The one builder both readers feed: from "what the file says" (a [`GranuleSource`]: the
//! groups, datasets, datatypes, storage layouts, filter pipelines, fill values, attributes, stored
//! chunks and coordinate values), it checks everything against the product profile and builds the
//! [`GranuleRefs`]: references, Zarr metadata, coordinates and layout fingerprint.
//!
//! libhdf5 (through hdf5-metno) and the pure-Rust ranged reader (imerg-hdf5) each implement the
//! source traits; the checks, their order and the error each one gives live only here, so the
//! two paths cannot drift apart.

use std::collections::BTreeMap;

use imerg_catalog::{GranuleId, ProductProfile, VariableSpec};
use imerg_refs::{
    ChunkRef, Codec, CoordArray, Coords, Endian, FillValue, GranuleRefs, Layout, SourceObject,
    TimeCoord, TimeUnits, VariableLayout, VariableRefs, array_metadata,
};
use serde_json::{Map, Value};

use crate::VirtualizeError;

/// A dataset's element type, as far as the checks need it.
#[derive(Debug, Clone)]
pub(crate) struct TypeInfo {
    /// The Zarr v3 name of a numeric type ("float32", "int16", ...).
    pub zarr: Option<&'static str>,
    /// How errors show the type (libhdf5's type descriptor, e.g. `Float(U4)`).
    pub desc: String,
    pub big_endian: bool,
    /// A 4-byte IEEE float.
    pub is_f32: bool,
}

/// A dataset's storage layout: its chunk shape, or the name of the other layout.
#[derive(Debug, Clone)]
pub(crate) enum Storage {
    Chunked(Vec<u64>),
    /// Compact, contiguous or virtual (the name errors show).
    NotChunked(&'static str),
}

/// One filter of a dataset's pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FilterInfo {
    Shuffle,
    Deflate(u32),
    Fletcher32,
    Szip,
    NBit,
    ScaleOffset,
    User(i64),
}

/// One stored chunk, as the file's chunk index lists it.
#[derive(Debug, Clone)]
pub(crate) struct StoredChunk {
    /// Offset of its first element, per dimension.
    pub offset: Vec<u64>,
    pub addr: u64,
    pub size: u64,
    pub filter_mask: u32,
}

/// An opened granule.
pub(crate) trait GranuleSource {
    /// The group at `name`, or `None` if there is no such link.
    fn group(&self, name: &str) -> Result<Option<Box<dyn GroupSource + '_>>, VirtualizeError>;
}

/// An opened group.
pub(crate) trait GroupSource {
    /// True if the group has a link of this name.
    fn has(&self, name: &str) -> bool;
    /// The dataset behind the link `name` (which exists).
    fn dataset(&self, name: &str) -> Result<Box<dyn VariableSource + '_>, VirtualizeError>;
}

/// An opened dataset. Errors name the granule key and the dataset.
pub(crate) trait VariableSource {
    fn shape(&self) -> Vec<u64>;
    fn dtype(&self) -> Result<TypeInfo, VirtualizeError>;
    fn storage(&self) -> Storage;
    fn filters(&self) -> Vec<FilterInfo>;
    /// The `_FillValue` attribute if present, else the dataset's own fill value (`None` if
    /// undefined), as a float or an integer.
    fn fill_value(&self, as_float: bool) -> Result<Option<FillValue>, VirtualizeError>;
    /// All user attributes as JSON (see [`crate::attrs::RESERVED`]).
    fn attributes(&self) -> Result<Map<String, Value>, VirtualizeError>;
    /// A string attribute, whatever its string type (`None` if absent or not a string).
    fn string_attr(&self, name: &str) -> Result<Option<String>, VirtualizeError>;
    /// Every stored chunk, in the order of the chunk index.
    fn chunks(&self) -> Result<Vec<StoredChunk>, VirtualizeError>;
    /// All values as f32 (the dataset is float32).
    fn read_f32(&self) -> Result<Vec<f32>, VirtualizeError>;
    /// All values converted to i64.
    fn read_i64(&self) -> Result<Vec<i64>, VirtualizeError>;
}

/// Checks a granule against the profile and builds its references.
pub(crate) fn build_granule(
    file: &dyn GranuleSource,
    size: u64,
    id: &GranuleId,
    source: &SourceObject,
    profile: &ProductProfile,
) -> Result<GranuleRefs, VirtualizeError> {
    let key = id.key.as_str();
    let layout = &profile.layout;
    let Some(group) = file.group(&layout.group)? else {
        return Err(VirtualizeError::MissingGroup {
            key: key.into(),
            group: layout.group.clone(),
        });
    };
    let coords = read_coords(&*group, key, id, profile)?;
    let mut variables = BTreeMap::new();
    let mut var_layouts = Vec::with_capacity(layout.variables.len());
    for spec in &layout.variables {
        if !group.has(&spec.name) {
            return Err(VirtualizeError::MissingVariable {
                key: key.into(),
                variable: format!("{}/{}", layout.group, spec.name),
            });
        }
        let ds = group.dataset(&spec.name)?;
        let (vl, attributes, refs) = read_variable(&*ds, key, spec, profile, id.time_index, size)?;
        variables.insert(
            spec.name.clone(),
            VariableRefs {
                zarr: array_metadata(&vl, 1, &attributes),
                refs,
            },
        );
        var_layouts.push(vl);
    }
    let layout = Layout {
        variables: var_layouts,
        coords_digest: coords.spatial_digest(),
    };
    let fingerprint = layout.fingerprint();
    Ok(GranuleRefs {
        key: key.to_string(),
        url: source.url.clone(),
        product: id.product.clone(),
        start: id.start,
        time_index: id.time_index,
        etag: source.etag.clone(),
        last_modified: source.last_modified,
        size,
        variables,
        coords,
        layout,
        fingerprint,
    })
}

type VariableParts = (VariableLayout, Map<String, Value>, Vec<ChunkRef>);

fn read_variable(
    ds: &dyn VariableSource,
    key: &str,
    spec: &VariableSpec,
    profile: &ProductProfile,
    time_index: u64,
    file_size: u64,
) -> Result<VariableParts, VirtualizeError> {
    let name = spec.name.as_str();
    let layout_err =
        |what: &'static str, found: String, expected: String| VirtualizeError::Layout {
            key: key.into(),
            variable: name.into(),
            what,
            found,
            expected,
        };
    let grid = [profile.layout.grid.n_lon, profile.layout.grid.n_lat];

    let shape = ds.shape();
    if shape != [1, grid[0], grid[1]] {
        return Err(layout_err(
            "shape",
            format!("{shape:?}"),
            format!("[1, {}, {}]", grid[0], grid[1]),
        ));
    }
    let dtype = ds.dtype()?;
    let zdtype = dtype.zarr.unwrap_or("unsupported");
    if zdtype != spec.dtype {
        return Err(layout_err(
            "dtype",
            format!("{} ({zdtype})", dtype.desc),
            spec.dtype.clone(),
        ));
    }
    let endian = if dtype.big_endian {
        Endian::Big
    } else {
        Endian::Little
    };
    let chunk = match ds.storage() {
        Storage::Chunked(chunk) => chunk,
        Storage::NotChunked(found) => {
            return Err(layout_err(
                "storage layout",
                found.to_string(),
                "chunked".into(),
            ));
        }
    };
    if chunk != spec.chunk {
        return Err(layout_err(
            "chunk shape",
            format!("{chunk:?}"),
            format!("{:?}", spec.chunk),
        ));
    }
    let elementsize = u32::try_from(imerg_refs::dtype_size(zdtype)).unwrap_or(0);
    let mut codecs = vec![Codec::Bytes { endian }];
    for f in ds.filters() {
        let unsupported = |filter: String| VirtualizeError::UnsupportedFilter {
            key: key.into(),
            variable: name.into(),
            filter,
        };
        codecs.push(match f {
            FilterInfo::Shuffle => Codec::Shuffle { elementsize },
            FilterInfo::Deflate(level) => Codec::Zlib { level },
            FilterInfo::Fletcher32 => {
                return Err(VirtualizeError::Fletcher32 {
                    key: key.into(),
                    variable: name.into(),
                });
            }
            FilterInfo::Szip => return Err(unsupported("szip".into())),
            FilterInfo::NBit => return Err(unsupported("nbit".into())),
            FilterInfo::ScaleOffset => return Err(unsupported("scale-offset".into())),
            FilterInfo::User(id) => return Err(unsupported(format!("with id {id}"))),
        });
    }

    let fill_value = ds
        .fill_value(zdtype.starts_with("float"))?
        .ok_or_else(|| layout_err("_FillValue", "absent".into(), "a fill value".into()))?;
    let attributes = ds.attributes()?;

    let stored = ds.chunks()?;
    let mut refs = Vec::with_capacity(stored.len());
    let mut seen = std::collections::BTreeSet::new();
    for ci in stored {
        if ci.filter_mask != 0 {
            return Err(VirtualizeError::FilterMaskSkips {
                key: key.into(),
                variable: name.into(),
                offset: ci.offset,
                mask: ci.filter_mask,
            });
        }
        let end = ci.addr.saturating_add(ci.size);
        if ci.size == 0 || end > file_size {
            return Err(VirtualizeError::ChunkOutsideFile {
                key: key.into(),
                variable: name.into(),
                offset: ci.offset,
                start: ci.addr,
                end,
                size: file_size,
            });
        }
        let chunk_pos = chunk_position(&ci.offset, &grid, &spec.chunk).map_err(|reason| {
            VirtualizeError::ChunkIndex {
                key: key.into(),
                variable: name.into(),
                offset: ci.offset.clone(),
                reason,
            }
        })?;
        if !seen.insert(chunk_pos) {
            return Err(VirtualizeError::ChunkIndex {
                key: key.into(),
                variable: name.into(),
                offset: ci.offset.clone(),
                reason: "is stored twice".into(),
            });
        }
        refs.push(ChunkRef {
            chunk: [time_index, chunk_pos[0], chunk_pos[1]],
            offset: ci.addr,
            length: ci.size,
        });
    }
    let layout = VariableLayout {
        name: name.into(),
        dtype: zdtype.into(),
        grid,
        chunk: spec.chunk,
        fill_value,
        codecs,
    };
    Ok((layout, attributes, refs))
}

/// Slack for a compressed chunk over its raw size: deflate's worst case adds 5 bytes per 16 KiB
/// block plus a few bytes of header.
const COMPRESSED_SLACK: u64 = 1024;

/// A coordinate's storage, checked before libhdf5 reads it (review H2): contiguous, compact, or
/// chunked through shuffle and deflate only, with no stored chunk larger than its raw size (plus
/// deflate's overhead). A deflate stream inflates at most about 1032:1, so this bounds what
/// libhdf5's filter allocates for a crafted chunk (a bomb) to about a thousand times the chunk,
/// instead of what the stream holds. `width` is the element size in bytes.
fn bounded_storage(ds: &dyn VariableSource, width: u64) -> Result<(), String> {
    let chunk = match ds.storage() {
        Storage::Chunked(chunk) => chunk,
        Storage::NotChunked("Contiguous" | "Compact") => return Ok(()),
        Storage::NotChunked(found) => return Err(format!("storage layout is {found}")),
    };
    for f in ds.filters() {
        if !matches!(f, FilterInfo::Shuffle | FilterInfo::Deflate(_)) {
            return Err(format!(
                "filter {f:?} on a coordinate (only shuffle and deflate)"
            ));
        }
    }
    let raw = chunk
        .iter()
        .try_fold(width, |n, c| n.checked_mul(*c))
        .and_then(|n| n.checked_add(COMPRESSED_SLACK))
        .ok_or_else(|| format!("chunk shape {chunk:?} is too large"))?;
    let stored = ds.chunks().map_err(|e| e.to_string())?;
    match stored.iter().find(|c| c.size > raw) {
        Some(c) => Err(format!(
            "a stored chunk of {} bytes exceeds the {raw} bytes its {chunk:?} values can take",
            c.size
        )),
        None => Ok(()),
    }
}

/// The `(lon, lat)` chunk index of a chunk stored at element offset `offset` (`time, lon, lat`)
/// of a `grid`-sized granule chunked `chunk`: the offset must be the granule's only time step,
/// a multiple of the chunk shape and inside the grid (a corrupt or crafted chunk index would
/// otherwise overwrite another chunk's reference or fail the whole commit, review M6).
fn chunk_position(offset: &[u64], grid: &[u64; 2], chunk: &[u64; 3]) -> Result<[u64; 2], String> {
    let [t, lon, lat] = offset[..] else {
        return Err(format!("has {} dimensions, expected 3", offset.len()));
    };
    if t != 0 {
        return Err("is not at the granule's one time step".into());
    }
    let mut pos = [0; 2];
    for (d, (o, n)) in [lon, lat].into_iter().zip(grid).enumerate() {
        let c = chunk[d + 1];
        if c == 0 || o % c != 0 {
            return Err(format!("is not on the chunk shape {chunk:?}"));
        }
        if o >= *n {
            return Err(format!("is outside the {} x {} grid", grid[0], grid[1]));
        }
        pos[d] = o / c;
    }
    Ok(pos)
}

fn read_f32_coord(
    group: &dyn GroupSource,
    key: &str,
    name: &str,
    shape: &[u64],
) -> Result<CoordArray, VirtualizeError> {
    let cerr = |reason: String| VirtualizeError::Coordinate {
        key: key.into(),
        name: name.into(),
        reason,
    };
    if !group.has(name) {
        return Err(cerr("missing".into()));
    }
    let ds = group.dataset(name)?;
    let found = ds.shape();
    if found != shape {
        return Err(cerr(format!("shape is {found:?}, expected {shape:?}")));
    }
    let dtype = ds.dtype()?;
    if !dtype.is_f32 {
        return Err(cerr(format!("dtype is {}, expected float32", dtype.desc)));
    }
    bounded_storage(&*ds, 4).map_err(cerr)?;
    let values = ds.read_f32()?;
    let attributes = ds.attributes()?;
    Ok(CoordArray {
        shape: shape.to_vec(),
        values,
        attributes,
    })
}

fn read_coords(
    group: &dyn GroupSource,
    key: &str,
    id: &GranuleId,
    profile: &ProductProfile,
) -> Result<Coords, VirtualizeError> {
    let (n_lon, n_lat) = (profile.layout.grid.n_lon, profile.layout.grid.n_lat);
    let lon = read_f32_coord(group, key, "lon", &[n_lon])?;
    let lat = read_f32_coord(group, key, "lat", &[n_lat])?;
    let lon_bnds = read_f32_coord(group, key, "lon_bnds", &[n_lon, 2])?;
    let lat_bnds = read_f32_coord(group, key, "lat_bnds", &[n_lat, 2])?;

    let terr = |reason: String| VirtualizeError::Time {
        key: key.into(),
        reason,
    };
    for name in ["time", "time_bnds"] {
        if !group.has(name) {
            return Err(terr(format!("variable {name} is missing")));
        }
    }
    // The shapes first: a file can declare 2^40 time steps with no storage, and reading them
    // would allocate what it declares (reliability review H1).
    let elements = |ds: &dyn VariableSource| {
        ds.shape()
            .iter()
            .try_fold(1u64, |n, d| n.checked_mul(*d))
            .unwrap_or(u64::MAX)
    };
    let tds = group.dataset("time")?;
    if elements(&*tds) != 1 {
        return Err(terr(format!("shape is {:?}, expected [1]", tds.shape())));
    }
    let bds = group.dataset("time_bnds")?;
    if elements(&*bds) != 2 {
        return Err(terr(format!(
            "time_bnds shape is {:?}, expected [1, 2]",
            bds.shape()
        )));
    }
    for ds in [&tds, &bds] {
        bounded_storage(&**ds, 8).map_err(&terr)?;
    }
    let values = tds.read_i64()?;
    let [value] = values[..] else {
        return Err(terr(format!("has {} values, expected 1", values.len())));
    };
    let bvalues = bds.read_i64()?;
    let [b0, b1] = bvalues[..] else {
        return Err(terr(format!(
            "time_bnds has {} values, expected 2",
            bvalues.len()
        )));
    };
    let units = tds
        .string_attr("units")?
        .ok_or_else(|| terr("has no units attribute".into()))?;
    let calendar = tds
        .string_attr("calendar")?
        .unwrap_or_else(|| "standard".into());
    let parsed = TimeUnits::parse(&units).map_err(|e| terr(e.to_string()))?;
    let Some(t) = parsed.to_datetime(value) else {
        return Err(terr(format!(
            "value {value} ({units}) is outside the dates this reader can represent"
        )));
    };
    if t != id.start {
        return Err(terr(format!(
            "value {value} ({units}) is {t}, but the granule's name says it starts at {}",
            id.start
        )));
    }
    let mut attributes = tds.attributes()?;
    attributes.remove("units");
    attributes.remove("calendar");
    Ok(Coords {
        time: TimeCoord {
            value,
            bounds: [b0, b1],
            units,
            calendar,
            attributes,
        },
        lon,
        lat,
        lon_bnds,
        lat_bnds,
    })
}
