//! What the store holds besides the virtual references: the root group's attributes (product,
//! layout and fingerprint), the native coordinate arrays (`time`, `time_bnds`, `lat`, `lon` and
//! bounds) and `granule_present`, with their Zarr metadata and chunk encoding (gzip).

use std::io::{Read, Write};

use imerg_catalog::ProductProfile;
use imerg_refs::{Coords, GranuleRefs, Layout, TimeUnits};
use serde_json::{Map, Value, json};

use crate::{DatasetError, cf};

/// Chunk length of `time`, `time_bnds` and `granule_present`: 131,072 half hours (7.5 years),
/// so the full Final record's time axis is 4 chunks.
pub const TIME_CHUNK: u64 = 131_072;

/// Per-time-step flag: 1 where a granule has been ingested, 0 where it is missing.
pub const PRESENT: &str = "granule_present";

/// Root attribute holding the dataset's layout (JSON) and its fingerprint.
pub(crate) const ATTR_LAYOUT: &str = "imerg_layout";
pub(crate) const ATTR_FINGERPRINT: &str = "imerg_layout_fingerprint";
pub(crate) const ATTR_PRODUCT: &str = "imerg_product";
pub(crate) const ATTR_TIME_UNITS: &str = "imerg_time_units";

fn codecs(endian: bool) -> Value {
    let bytes = if endian {
        json!({"name": "bytes", "configuration": {"endian": "little"}})
    } else {
        json!({"name": "bytes"})
    };
    json!([bytes, {"name": "gzip", "configuration": {"level": 5}}])
}

fn array(
    shape: &[u64],
    chunk: &[u64],
    dtype: &str,
    fill: Value,
    dims: &[&str],
    attributes: Map<String, Value>,
) -> Value {
    json!({
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
        "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunk}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill,
        "codecs": codecs(dtype != "uint8"),
        "attributes": attributes,
        "dimension_names": dims,
        "storage_transformers": [],
    })
}

/// Root group: what the dataset is (CF attributes, see [`crate::cf`]), and the layout every
/// granule must match. The product profile and the layout are JSON text, not nested objects:
/// netCDF attributes are flat.
pub(crate) fn root_metadata(
    profile: &ProductProfile,
    layout: &Layout,
    time_units: &str,
) -> Result<Value, DatasetError> {
    let text = |r: serde_json::Result<String>| {
        r.map_err(|e| DatasetError::Inconsistent(format!("root attributes: {e}")))
    };
    let mut attributes = cf::root_attributes(profile);
    attributes.insert(
        ATTR_PRODUCT.into(),
        json!(text(serde_json::to_string(profile))?),
    );
    attributes.insert(
        ATTR_LAYOUT.into(),
        json!(text(serde_json::to_string(layout))?),
    );
    attributes.insert(ATTR_FINGERPRINT.into(), json!(layout.fingerprint()));
    attributes.insert(ATTR_TIME_UNITS.into(), json!(time_units));
    Ok(json!({
        "zarr_format": 3,
        "node_type": "group",
        "attributes": attributes,
    }))
}

/// `time`: int64 values in the files' own units, decoded by xarray with the proleptic Gregorian
/// calendar (the files say `julian`, kept as `source_calendar`: their values are plain elapsed
/// seconds since the GPS epoch, so the Gregorian reading gives the granule start times).
fn time_metadata(len: u64, coords: &Coords) -> Value {
    let mut attrs = coords.time.attributes.clone();
    attrs.insert("units".into(), json!(coords.time.units));
    attrs.insert("calendar".into(), json!("proleptic_gregorian"));
    attrs.insert("source_calendar".into(), json!(coords.time.calendar));
    attrs.insert("bounds".into(), json!("time_bnds"));
    cf::add_coordinate_attributes("time", &mut attrs);
    array(&[len], &[TIME_CHUNK], "int64", json!(0), &["time"], attrs)
}

fn time_bnds_metadata(len: u64, coords: &Coords) -> Value {
    let mut attrs = Map::new();
    attrs.insert("units".into(), json!(coords.time.units));
    attrs.insert("calendar".into(), json!("proleptic_gregorian"));
    cf::add_coordinate_attributes("time_bnds", &mut attrs);
    array(
        &[len, 2],
        &[TIME_CHUNK / 2, 2],
        "int64",
        json!(0),
        &["time", "nv"],
        attrs,
    )
}

fn present_metadata(len: u64) -> Value {
    let mut attrs = Map::new();
    attrs.insert(
        "long_name".into(),
        json!("granule ingested at this time step"),
    );
    attrs.insert("flag_values".into(), json!([0, 1]));
    attrs.insert("flag_meanings".into(), json!("missing ingested"));
    array(&[len], &[TIME_CHUNK], "uint8", json!(0), &["time"], attrs)
}

/// A float32 coordinate stored in one chunk.
fn coord_metadata(
    name: &str,
    shape: &[u64],
    dims: &[&str],
    attributes: &Map<String, Value>,
) -> Value {
    let mut attributes = attributes.clone();
    cf::add_coordinate_attributes(name, &mut attributes);
    array(shape, shape, "float32", json!("NaN"), dims, attributes)
}

/// Everything the store holds before its first references, built from the first granule written:
/// the root group, the data variables', `time`, `time_bnds` and `granule_present` metadata for
/// `len` steps, and the spatial coordinates' metadata and values. `(key, bytes)` in write order.
pub(crate) fn initial_objects(
    profile: &ProductProfile,
    g: &GranuleRefs,
    len: u64,
) -> Result<Vec<(String, Vec<u8>)>, DatasetError> {
    let json =
        |v: &Value| serde_json::to_vec(v).map_err(|e| DatasetError::Inconsistent(e.to_string()));
    let mut out = vec![(
        "zarr.json".to_string(),
        json(&root_metadata(profile, &g.layout, &g.coords.time.units)?)?,
    )];
    for (name, v) in &g.variables {
        let mut meta = with_time_len(&v.zarr, len);
        cf::add_to_array_metadata(name, &mut meta, true);
        out.push((format!("{name}/zarr.json"), json(&meta)?));
    }
    out.push((
        "time/zarr.json".into(),
        json(&time_metadata(len, &g.coords))?,
    ));
    out.push((
        "time_bnds/zarr.json".into(),
        json(&time_bnds_metadata(len, &g.coords))?,
    ));
    out.push((
        format!("{PRESENT}/zarr.json"),
        json(&present_metadata(len))?,
    ));
    for (name, c) in g.coords.spatial() {
        let dims: Vec<&str> = match name {
            "lon" => vec!["lon"],
            "lat" => vec!["lat"],
            "lon_bnds" => vec!["lon", "nv"],
            _ => vec!["lat", "nv"],
        };
        out.push((
            format!("{name}/zarr.json"),
            json(&coord_metadata(name, &c.shape, &dims, &c.attributes))?,
        ));
        let key = if c.shape.len() == 2 {
            format!("{name}/c/0/0")
        } else {
            format!("{name}/c/0")
        };
        out.push((key, f32_chunk(&c.values)));
    }
    Ok(out)
}

/// Shape of an array's `zarr.json`.
pub(crate) fn shape_of(meta: &Value) -> Result<Vec<u64>, DatasetError> {
    meta["shape"]
        .as_array()
        .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
        .ok_or_else(|| DatasetError::Inconsistent(format!("zarr.json without a shape: {meta}")))
}

/// The same metadata with the time dimension set to `len`.
pub(crate) fn with_time_len(meta: &Value, len: u64) -> Value {
    let mut m = meta.clone();
    if let Some(s) = m["shape"].as_array_mut().and_then(|a| a.first_mut()) {
        *s = json!(len);
    }
    m
}

pub(crate) fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(5));
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(raw);
    enc.finish().unwrap_or_default()
}

pub(crate) fn gunzip(data: &[u8]) -> Result<Vec<u8>, DatasetError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .map_err(|e| DatasetError::Inconsistent(format!("corrupt gzip chunk: {e}")))?;
    Ok(out)
}

/// Encoded chunk `k` of `time`: every value of the chunk, computed from the profile, so the chunk
/// is written once when the axis first reaches it and never rewritten.
pub(crate) fn time_chunk(k: u64, profile: &ProductProfile, units: &TimeUnits) -> Vec<u8> {
    let raw: Vec<u8> = (k * TIME_CHUNK..(k + 1) * TIME_CHUNK)
        .flat_map(|i| units.value_of(profile.start_of(i)).to_le_bytes())
        .collect();
    gzip(&raw)
}

/// Encoded chunk `k` of `time_bnds` (`TIME_CHUNK / 2` rows of `[start, end]`).
pub(crate) fn time_bnds_chunk(k: u64, profile: &ProductProfile, units: &TimeUnits) -> Vec<u8> {
    let rows = TIME_CHUNK / 2;
    let cadence = chrono::Duration::minutes(i64::from(profile.cadence_minutes));
    let raw: Vec<u8> = (k * rows..(k + 1) * rows)
        .flat_map(|i| {
            let s = profile.start_of(i);
            [units.value_of(s), units.value_of(s + cadence)]
        })
        .flat_map(i64::to_le_bytes)
        .collect();
    gzip(&raw)
}

/// Encoded float32 values.
fn f32_chunk(values: &[f32]) -> Vec<u8> {
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    gzip(&raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_chunks_hold_the_granule_starts() {
        let p = ProductProfile::final_v07b();
        let u = TimeUnits::parse("seconds since 1980-01-06 00:00:00 UTC").unwrap();
        let raw = gunzip(&time_chunk(1, &p, &u)).unwrap();
        let first = i64::from_le_bytes(raw[..8].try_into().unwrap());
        assert_eq!(u.to_datetime(first), Some(p.start_of(TIME_CHUNK)));
        let b = gunzip(&time_bnds_chunk(0, &p, &u)).unwrap();
        let v: Vec<i64> = b
            .chunks(8)
            .take(4)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(v[1] - v[0], 1800);
        assert_eq!(v[2], v[1]);
        let m = with_time_len(&present_metadata(5), 9);
        assert_eq!(shape_of(&m).unwrap(), vec![9]);
    }
}
