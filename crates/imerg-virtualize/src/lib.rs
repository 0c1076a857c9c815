//! The virtualizer: reads an IMERG HDF5 granule (from bytes in memory or a local path) and returns
//! its exact chunk references, the Zarr v3 metadata of each data variable, its coordinates and its
//! layout fingerprint ([`imerg_refs::GranuleRefs`]). Every check against the product profile fails
//! with a [`VirtualizeError`] that names the key and what is wrong; nothing panics.
//!
//! HDF5 serializes every call on one global lock, so async callers must use
//! [`virtualize_bytes_blocking`] (a blocking-pool task), never call the sync functions on an
//! async worker thread.

mod attrs;
mod error;
mod open;

use std::collections::BTreeMap;
use std::path::Path;

use hdf5::types::{FloatSize, IntSize, TypeDescriptor};
use imerg_catalog::{GranuleId, ProductProfile, VariableSpec};
use imerg_refs::{
    ChunkRef, Codec, CoordArray, Coords, Endian, FillValue, GranuleRefs, Layout, SourceObject,
    TimeCoord, TimeUnits, VariableLayout, VariableRefs, array_metadata,
};

pub use error::VirtualizeError;

/// Virtualizes a granule held in memory (the whole object's bytes).
pub fn virtualize_bytes(
    bytes: &[u8],
    id: &GranuleId,
    source: &SourceObject,
    profile: &ProductProfile,
) -> Result<GranuleRefs, VirtualizeError> {
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

fn h5err(key: &str, context: &str) -> impl Fn(hdf5::Error) -> VirtualizeError {
    let (key, context) = (key.to_string(), context.to_string());
    move |e| VirtualizeError::Hdf5 {
        key: key.clone(),
        context: context.clone(),
        detail: e.to_string(),
    }
}

fn read_granule(
    file: &hdf5::File,
    size: u64,
    id: &GranuleId,
    source: &SourceObject,
    profile: &ProductProfile,
) -> Result<GranuleRefs, VirtualizeError> {
    let key = id.key.as_str();
    let layout = &profile.layout;
    if !file.link_exists(&layout.group) {
        return Err(VirtualizeError::MissingGroup {
            key: key.into(),
            group: layout.group.clone(),
        });
    }
    let group = file
        .group(&layout.group)
        .map_err(h5err(key, &layout.group))?;
    let coords = read_coords(&group, key, id, profile)?;
    let mut variables = BTreeMap::new();
    let mut var_layouts = Vec::with_capacity(layout.variables.len());
    for spec in &layout.variables {
        if !group.link_exists(&spec.name) {
            return Err(VirtualizeError::MissingVariable {
                key: key.into(),
                variable: format!("{}/{}", layout.group, spec.name),
            });
        }
        let ds = group.dataset(&spec.name).map_err(h5err(key, &spec.name))?;
        let (vl, attributes, refs) = read_variable(&ds, key, spec, profile, id.time_index, size)?;
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

fn zarr_dtype(desc: &TypeDescriptor) -> Option<&'static str> {
    Some(match desc {
        TypeDescriptor::Float(FloatSize::U4) => "float32",
        TypeDescriptor::Float(FloatSize::U8) => "float64",
        TypeDescriptor::Integer(IntSize::U1) => "int8",
        TypeDescriptor::Integer(IntSize::U2) => "int16",
        TypeDescriptor::Integer(IntSize::U4) => "int32",
        TypeDescriptor::Integer(IntSize::U8) => "int64",
        TypeDescriptor::Unsigned(IntSize::U1) => "uint8",
        TypeDescriptor::Unsigned(IntSize::U2) => "uint16",
        TypeDescriptor::Unsigned(IntSize::U4) => "uint32",
        TypeDescriptor::Unsigned(IntSize::U8) => "uint64",
        _ => return None,
    })
}

type VariableParts = (
    VariableLayout,
    serde_json::Map<String, serde_json::Value>,
    Vec<ChunkRef>,
);

fn read_variable(
    ds: &hdf5::Dataset,
    key: &str,
    spec: &VariableSpec,
    profile: &ProductProfile,
    time_index: u64,
    file_size: u64,
) -> Result<VariableParts, VirtualizeError> {
    let name = spec.name.as_str();
    let err = h5err(key, name);
    let layout_err =
        |what: &'static str, found: String, expected: String| VirtualizeError::Layout {
            key: key.into(),
            variable: name.into(),
            what,
            found,
            expected,
        };
    let grid = [profile.layout.grid.n_lon, profile.layout.grid.n_lat];

    let shape: Vec<u64> = ds.shape().iter().map(|d| *d as u64).collect();
    if shape != [1, grid[0], grid[1]] {
        return Err(layout_err(
            "shape",
            format!("{shape:?}"),
            format!("[1, {}, {}]", grid[0], grid[1]),
        ));
    }
    let dtype = ds.dtype().map_err(&err)?;
    let desc = dtype.to_descriptor().map_err(&err)?;
    let zdtype = zarr_dtype(&desc).unwrap_or("unsupported");
    if zdtype != spec.dtype {
        return Err(layout_err(
            "dtype",
            format!("{desc:?} ({zdtype})"),
            spec.dtype.clone(),
        ));
    }
    let endian = match dtype.byte_order() {
        hdf5::datatype::ByteOrder::BigEndian => Endian::Big,
        _ => Endian::Little,
    };
    let Some(chunk) = ds.chunk() else {
        return Err(layout_err(
            "storage layout",
            format!("{:?}", ds.layout()),
            "chunked".into(),
        ));
    };
    let chunk: Vec<u64> = chunk.iter().map(|c| *c as u64).collect();
    if chunk != spec.chunk {
        return Err(layout_err(
            "chunk shape",
            format!("{chunk:?}"),
            format!("{:?}", spec.chunk),
        ));
    }
    let elementsize = imerg_refs::dtype_size(zdtype) as u32;
    let mut codecs = vec![Codec::Bytes { endian }];
    for f in ds.filters() {
        let unsupported = |filter: String| VirtualizeError::UnsupportedFilter {
            key: key.into(),
            variable: name.into(),
            filter,
        };
        codecs.push(match f {
            hdf5::filters::Filter::Shuffle => Codec::Shuffle { elementsize },
            hdf5::filters::Filter::Deflate(level) => Codec::Zlib {
                level: u32::from(level),
            },
            hdf5::filters::Filter::Fletcher32 => {
                return Err(VirtualizeError::Fletcher32 {
                    key: key.into(),
                    variable: name.into(),
                });
            }
            hdf5::filters::Filter::SZip(..) => return Err(unsupported("szip".into())),
            hdf5::filters::Filter::NBit => return Err(unsupported("nbit".into())),
            hdf5::filters::Filter::ScaleOffset(_) => {
                return Err(unsupported("scale-offset".into()));
            }
            hdf5::filters::Filter::User(id, _) => {
                return Err(unsupported(format!("with id {id}")));
            }
        });
    }

    let fill_value = read_fill_value(ds, zdtype)
        .map_err(&err)?
        .ok_or_else(|| layout_err("_FillValue", "absent".into(), "a fill value".into()))?;
    let attributes = attrs::attributes(ds).map_err(&err)?;

    let n = ds.num_chunks().unwrap_or(0);
    let mut refs = Vec::with_capacity(n);
    for i in 0..n {
        let ci = ds
            .chunk_info(i)
            .ok_or_else(|| err(hdf5::Error::from(format!("chunk_info({i}) failed"))))?;
        if ci.filter_mask != 0 {
            return Err(VirtualizeError::FilterMaskSkips {
                key: key.into(),
                variable: name.into(),
                offset: ci.offset.clone(),
                mask: ci.filter_mask,
            });
        }
        let end = ci.addr.saturating_add(ci.size);
        if ci.size == 0 || end > file_size {
            return Err(VirtualizeError::ChunkOutsideFile {
                key: key.into(),
                variable: name.into(),
                offset: ci.offset.clone(),
                start: ci.addr,
                end,
                size: file_size,
            });
        }
        let idx = |d: usize| ci.offset.get(d).copied().unwrap_or(0) / spec.chunk[d];
        refs.push(ChunkRef {
            chunk: [time_index, idx(1), idx(2)],
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

/// The `_FillValue` attribute if present, else the dataset's own fill value.
fn read_fill_value(ds: &hdf5::Dataset, zdtype: &str) -> hdf5::Result<Option<FillValue>> {
    let is_float = zdtype.starts_with("float");
    if ds.attr_names()?.iter().any(|n| n == "_FillValue") {
        let a = ds.attr("_FillValue")?;
        return Ok(Some(if is_float {
            FillValue::Float(a.read_raw::<f64>()?.first().copied().unwrap_or(f64::NAN))
        } else {
            FillValue::Int(a.read_raw::<i64>()?.first().copied().unwrap_or(0))
        }));
    }
    let dcpl = ds.dcpl()?;
    Ok(if is_float {
        dcpl.get_fill_value_as::<f64>()?.map(FillValue::Float)
    } else {
        dcpl.get_fill_value_as::<i64>()?.map(FillValue::Int)
    })
}

fn read_f32_coord(
    group: &hdf5::Group,
    key: &str,
    name: &str,
    shape: &[u64],
) -> Result<CoordArray, VirtualizeError> {
    let cerr = |reason: String| VirtualizeError::Coordinate {
        key: key.into(),
        name: name.into(),
        reason,
    };
    if !group.link_exists(name) {
        return Err(cerr("missing".into()));
    }
    let ds = group.dataset(name).map_err(h5err(key, name))?;
    let found: Vec<u64> = ds.shape().iter().map(|d| *d as u64).collect();
    if found != shape {
        return Err(cerr(format!("shape is {found:?}, expected {shape:?}")));
    }
    let desc = ds
        .dtype()
        .and_then(|d| d.to_descriptor())
        .map_err(h5err(key, name))?;
    if desc != TypeDescriptor::Float(FloatSize::U4) {
        return Err(cerr(format!("dtype is {desc:?}, expected float32")));
    }
    let values: Vec<f32> = ds.read_raw().map_err(h5err(key, name))?;
    let attributes = attrs::attributes(&ds).map_err(h5err(key, name))?;
    Ok(CoordArray {
        shape: shape.to_vec(),
        values,
        attributes,
    })
}

fn read_coords(
    group: &hdf5::Group,
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
        if !group.link_exists(name) {
            return Err(terr(format!("variable {name} is missing")));
        }
    }
    let tds = group.dataset("time").map_err(h5err(key, "time"))?;
    let values: Vec<i64> = tds.read_raw().map_err(h5err(key, "time"))?;
    let [value] = values[..] else {
        return Err(terr(format!("has {} values, expected 1", values.len())));
    };
    let bds = group
        .dataset("time_bnds")
        .map_err(h5err(key, "time_bnds"))?;
    let bvalues: Vec<i64> = bds.read_raw().map_err(h5err(key, "time_bnds"))?;
    let [b0, b1] = bvalues[..] else {
        return Err(terr(format!(
            "time_bnds has {} values, expected 2",
            bvalues.len()
        )));
    };
    let units = attrs::string_attr(&tds, "units")
        .map_err(h5err(key, "time"))?
        .ok_or_else(|| terr("has no units attribute".into()))?;
    let calendar = attrs::string_attr(&tds, "calendar")
        .map_err(h5err(key, "time"))?
        .unwrap_or_else(|| "standard".into());
    let parsed = TimeUnits::parse(&units).map_err(|e| terr(e.to_string()))?;
    let t = parsed.to_datetime(value);
    if t != id.start {
        return Err(terr(format!(
            "value {value} ({units}) is {t}, but the granule's name says it starts at {}",
            id.start
        )));
    }
    let mut attributes = attrs::attributes(&tds).map_err(h5err(key, "time"))?;
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
