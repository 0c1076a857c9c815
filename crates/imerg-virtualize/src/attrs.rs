//! HDF5 attributes (read by libhdf5) as JSON values (strings fixed or variable length, integers, floats, scalars or
//! 1-D arrays), skipping the netCDF/HDF5 bookkeeping attributes that mean nothing in Zarr. The
//! JSON shaping helpers are shared with the ranged reader so both give the same values.

use hdf5::types::{TypeDescriptor, VarLenAscii, VarLenUnicode};
use serde_json::{Map, Value, json};

/// Attributes that belong to HDF5 dimension scales or the netCDF-4 data model, not to users.
pub(crate) const RESERVED: &[&str] = &[
    "_FillValue",
    "DIMENSION_LIST",
    "REFERENCE_LIST",
    "CLASS",
    "NAME",
    "_Netcdf4Dimid",
    "_Netcdf4Coordinates",
    "_nc3_strict",
    "_NCProperties",
];

/// All user attributes of an HDF5 object, as JSON.
pub(crate) fn attributes(loc: &hdf5::Location) -> hdf5::Result<Map<String, Value>> {
    let mut out = Map::new();
    for name in loc.attr_names()? {
        if RESERVED.contains(&name.as_str()) {
            continue;
        }
        let attr = loc.attr(&name)?;
        if let Some(v) = attr_value(&attr)? {
            out.insert(name, v);
        }
    }
    Ok(out)
}

/// A string attribute, whatever its string type (None if absent or not a string).
pub(crate) fn string_attr(loc: &hdf5::Location, name: &str) -> hdf5::Result<Option<String>> {
    if !loc.attr_names()?.iter().any(|n| n == name) {
        return Ok(None);
    }
    Ok(match attr_value(&loc.attr(name)?)? {
        Some(Value::String(s)) => Some(s),
        _ => None,
    })
}

/// The most bytes an attribute's values may take in memory. IMERG's longest attribute (the
/// granule's `FileHeader`) is under 2 KiB; a file's dataspace and type sizes are untrusted, and
/// their product is the buffer libhdf5 is handed (review L4).
pub(crate) const MAX_ATTRIBUTE_BYTES: usize = 1 << 20;

/// `count` elements of `width` bytes, if that fits [`MAX_ATTRIBUTE_BYTES`].
pub(crate) fn attribute_bytes(count: usize, width: usize) -> Option<usize> {
    count
        .checked_mul(width.max(1))
        .filter(|b| *b <= MAX_ATTRIBUTE_BYTES)
}

fn attr_value(attr: &hdf5::Attribute) -> hdf5::Result<Option<Value>> {
    let dtype = attr.dtype()?;
    let (count, width) = (attr.size().max(1), dtype.size());
    if attribute_bytes(count, width).is_none() {
        return Err(hdf5::Error::from(format!(
            "attribute {:?} declares {count} values of {width} bytes, over the {MAX_ATTRIBUTE_BYTES}-byte limit",
            attr.name()
        )));
    }
    let scalar = attr.is_scalar() || attr.size() == 1;
    let v = match dtype.to_descriptor()? {
        TypeDescriptor::VarLenUnicode => {
            let v: Vec<VarLenUnicode> = attr.read_raw()?;
            strings(v.iter().map(|s| s.as_str().to_string()).collect(), scalar)
        }
        TypeDescriptor::VarLenAscii => {
            let v: Vec<VarLenAscii> = attr.read_raw()?;
            strings(v.iter().map(|s| s.as_str().to_string()).collect(), scalar)
        }
        TypeDescriptor::FixedAscii(n) | TypeDescriptor::FixedUnicode(n) => {
            strings(read_fixed_strings(attr, &dtype, n)?, scalar)
        }
        TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) => {
            let v: Vec<i64> = attr.read_raw()?;
            numbers(v.into_iter().map(|x| json!(x)).collect(), scalar)
        }
        TypeDescriptor::Float(_) => {
            let v: Vec<f64> = attr.read_raw()?;
            numbers(v.into_iter().map(float_json).collect(), scalar)
        }
        _ => return Ok(None),
    };
    Ok(Some(v))
}

/// A float attribute value as JSON: a number, or its name ("NaN", "inf") if not finite.
pub(crate) fn float_json(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        json!(x.to_string())
    }
}

/// String values: one string for a scalar (or one-element) attribute, else an array.
pub(crate) fn strings(v: Vec<String>, scalar: bool) -> Value {
    match (scalar, v.len()) {
        (true, 1) => Value::String(v.into_iter().next().unwrap_or_default()),
        _ => Value::Array(v.into_iter().map(Value::String).collect()),
    }
}

/// Number values: one number for a scalar (or one-element) attribute, else an array.
pub(crate) fn numbers(v: Vec<Value>, scalar: bool) -> Value {
    match (scalar, v.len()) {
        (true, 1) => v.into_iter().next().unwrap_or(Value::Null),
        _ => Value::Array(v),
    }
}

/// Fixed-length strings (netCDF text attributes) read with their own file type as memory type.
fn read_fixed_strings(
    attr: &hdf5::Attribute,
    dtype: &hdf5::Datatype,
    width: usize,
) -> hdf5::Result<Vec<String>> {
    let count = attr.size().max(1);
    let len = attribute_bytes(count, width).ok_or_else(|| {
        hdf5::Error::from("a fixed-string attribute over the size limit".to_string())
    })?;
    let mut buf = vec![0u8; len];
    hdf5::sync::sync(|| {
        // SAFETY: `buf` holds `count` elements of the attribute's own `width`-byte string type.
        let rc = unsafe { hdf5_sys::h5a::H5Aread(attr.id(), dtype.id(), buf.as_mut_ptr().cast()) };
        if rc < 0 {
            return Err(hdf5::Error::query()
                .unwrap_or_else(|_| hdf5::Error::from("H5Aread of a fixed string failed")));
        }
        Ok(())
    })?;
    Ok(buf
        .chunks(width.max(1))
        .map(|c| {
            let end = c.iter().position(|b| *b == 0).unwrap_or(c.len());
            String::from_utf8_lossy(&c[..end]).trim_end().to_string()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review L4: `width * count` came from the file unchecked, then went to `H5Aread`.
    #[test]
    fn attribute_sizes_are_checked_and_capped() {
        assert_eq!(attribute_bytes(1, 2048), Some(2048));
        assert_eq!(attribute_bytes(4, 0), Some(4));
        assert_eq!(attribute_bytes(1, MAX_ATTRIBUTE_BYTES + 1), None);
        assert_eq!(attribute_bytes(1 << 44, 1 << 20), None);
        assert_eq!(attribute_bytes(usize::MAX, 2), None);
    }
}
