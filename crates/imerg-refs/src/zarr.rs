//! Zarr v3 metadata documents (`zarr.json`) for the dataset's arrays and groups, including the
//! `_FillValue` encoding xarray needs to mask missing values.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::{FillValue, VariableLayout};

/// `_FillValue` as xarray's Zarr backend expects it: for floats the base64 of the little-endian
/// float64 of the value (a plain number makes `open_zarr` fail); for integers the plain number.
pub fn encode_fill_value_attr(fill: FillValue) -> Value {
    match fill {
        FillValue::Int(v) => json!(v),
        FillValue::Float(v) => {
            json!(base64::engine::general_purpose::STANDARD.encode(v.to_le_bytes()))
        }
    }
}

fn fill_value_json(fill: FillValue) -> Value {
    match fill {
        FillValue::Int(v) => json!(v),
        FillValue::Float(v) if v.is_nan() => json!("NaN"),
        FillValue::Float(v) => json!(v),
    }
}

/// The `zarr.json` of a data variable shaped `(time_len, lon, lat)`. `attributes` are the
/// variable's own; `_FillValue` is set from the layout.
pub fn array_metadata(
    var: &VariableLayout,
    time_len: u64,
    attributes: &Map<String, Value>,
) -> Value {
    let mut attrs = attributes.clone();
    attrs.insert("_FillValue".into(), encode_fill_value_attr(var.fill_value));
    json!({
        "zarr_format": 3,
        "node_type": "array",
        "shape": [time_len, var.grid[0], var.grid[1]],
        "data_type": var.dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": var.chunk}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill_value_json(var.fill_value),
        "codecs": var.codecs.iter().map(|c| c.to_zarr_json()).collect::<Vec<_>>(),
        "attributes": attrs,
        "dimension_names": ["time", "lon", "lat"],
        "storage_transformers": [],
    })
}

/// The `zarr.json` of a group.
pub fn group_metadata(attributes: &Map<String, Value>) -> Value {
    json!({"zarr_format": 3, "node_type": "group", "attributes": attributes})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Codec, Endian};

    #[test]
    fn float_fill_value_is_base64_of_le_float64() {
        let v = encode_fill_value_attr(FillValue::Float(f64::from(-9999.9f32)));
        assert_eq!(v, json!("AAAAQPOHw8A="));
        assert_eq!(encode_fill_value_attr(FillValue::Int(-9999)), json!(-9999));
    }

    #[test]
    fn array_metadata_matches_what_readers_need() {
        let var = VariableLayout {
            name: "precipitation".into(),
            dtype: "float32".into(),
            grid: [3600, 1800],
            chunk: [1, 145, 1800],
            fill_value: FillValue::Float(f64::from(-9999.9f32)),
            codecs: vec![
                Codec::Bytes {
                    endian: Endian::Little,
                },
                Codec::Shuffle { elementsize: 4 },
                Codec::Zlib { level: 4 },
            ],
        };
        let mut a = Map::new();
        a.insert("CodeMissingValue".into(), json!("-9999.9"));
        let m = array_metadata(&var, 7, &a);
        assert_eq!(m["shape"], json!([7, 3600, 1800]));
        assert_eq!(m["fill_value"], json!(-9999.900390625));
        assert_eq!(m["attributes"]["_FillValue"], json!("AAAAQPOHw8A="));
        assert_eq!(m["attributes"]["CodeMissingValue"], json!("-9999.9"));
        assert_eq!(m["codecs"][1]["name"], json!("numcodecs.shuffle"));
        assert_eq!(m["dimension_names"], json!(["time", "lon", "lat"]));
    }
}
