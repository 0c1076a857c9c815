//! The native store's chunking: time blocks of 2,880 half hours (60 days) by 10 x 10 cells, in
//! shards of 180 x 180 cells, zstd frames inside each chunk; and the data variables' `zarr.json`
//! made from the virtual store's (same shape, dtype, fill value, attributes, dimension names).
//! docs/native-store.md says why these numbers.

use serde_json::{Value, json};

use crate::NativeError;

/// The chunking of the native store's data variables, dimension order `(time, lon, lat)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeLayout {
    /// Time steps per chunk (and per shard): one block.
    pub block: u64,
    /// Cells per chunk along `(lon, lat)`.
    pub tile: [u64; 2],
    /// Cells per shard along `(lon, lat)`: a multiple of `tile`.
    pub shard: [u64; 2],
    /// zstd level of the frames.
    pub level: i32,
    /// Lossy mode: float32 values keep this many mantissa bits (of 23), rounded to nearest as
    /// numcodecs' BitRound does; fill values, NaN and infinities stay exact. None: lossless.
    pub keep_mantissa_bits: Option<u8>,
}

impl Default for NativeLayout {
    fn default() -> Self {
        Self {
            block: 2_880,
            tile: [10, 10],
            shard: [180, 180],
            level: 3,
            keep_mantissa_bits: None,
        }
    }
}

impl NativeLayout {
    /// Chunks per shard along `(lon, lat)`.
    pub fn tiles_per_shard(&self) -> [u64; 2] {
        [
            self.shard[0] / self.tile[0].max(1),
            self.shard[1] / self.tile[1].max(1),
        ]
    }

    /// Chunks in one shard.
    pub fn chunks_per_shard(&self) -> usize {
        let [a, b] = self.tiles_per_shard();
        usize::try_from(a.saturating_mul(b)).unwrap_or(usize::MAX)
    }

    /// Values in one chunk for one time step.
    pub fn tile_cells(&self) -> usize {
        usize::try_from(self.tile[0].saturating_mul(self.tile[1])).unwrap_or(usize::MAX)
    }

    /// The block holding time index `t`.
    pub fn block_of(&self, t: u64) -> u64 {
        t / self.block.max(1)
    }

    /// A data variable's native `zarr.json` from its virtual one: the chunk grid and codecs
    /// change, everything else (shape, dtype, fill value, attributes, dimension names) is kept.
    pub fn data_array_metadata(&self, virtual_meta: &Value) -> Result<Value, NativeError> {
        let mut m = virtual_meta.clone();
        let obj = m.as_object_mut().ok_or_else(|| {
            NativeError::Metadata("a data variable's zarr.json is not an object".into())
        })?;
        obj.insert(
            "chunk_grid".into(),
            json!({"name": "regular", "configuration": {
                "chunk_shape": [self.block, self.shard[0], self.shard[1]]}}),
        );
        if let (Some(bits), Some(attrs)) = (
            self.keep_mantissa_bits,
            obj.get_mut("attributes").and_then(Value::as_object_mut),
        ) && virtual_meta["data_type"] == "float32"
        {
            // Readers can tell a lossy store: the values were rounded to this many bits.
            attrs.insert("imerg_native_keep_mantissa_bits".into(), json!(bits));
        }
        obj.insert(
            "codecs".into(),
            json!([{"name": "sharding_indexed", "configuration": {
                "chunk_shape": [self.block, self.tile[0], self.tile[1]],
                "codecs": [
                    {"name": "bytes", "configuration": {"endian": "little"}},
                    {"name": "zstd", "configuration": {"level": self.level, "checksum": false}}
                ],
                "index_codecs": [
                    {"name": "bytes", "configuration": {"endian": "little"}},
                    {"name": "crc32c"}
                ],
                "index_location": "end"
            }}]),
        );
        Ok(m)
    }
}

/// What the writer needs to know of one data variable: its grid and element encoding.
#[derive(Debug, Clone)]
pub struct DataArray {
    pub name: String,
    /// `[time, lon, lat]`.
    pub shape: [u64; 3],
    /// Bytes per element (little endian in both stores).
    pub dtype_size: usize,
    /// A floating-point type (the lossy mode rounds only these).
    pub is_float: bool,
    /// One element holding the fill value, little endian.
    pub fill: Vec<u8>,
    /// The virtual store's chunk shape `[1, lon, lat]`.
    pub virtual_chunk: [u64; 3],
    /// The virtual store's codecs.
    pub virtual_codecs: Vec<imerg_refs::Codec>,
}

impl DataArray {
    /// Reads a data variable's description from its virtual `zarr.json`.
    pub fn from_virtual(name: &str, meta: &Value) -> Result<Self, NativeError> {
        let bad = |what: &str| NativeError::Metadata(format!("{name}: {what}"));
        let dims = |key: &str| -> Result<[u64; 3], NativeError> {
            let v: Vec<u64> = meta
                .pointer(key)
                .and_then(Value::as_array)
                .ok_or_else(|| bad(&format!("no {key}")))?
                .iter()
                .map(|d| d.as_u64().ok_or_else(|| bad("dimensions are not integers")))
                .collect::<Result<_, _>>()?;
            <[u64; 3]>::try_from(v).map_err(|_| bad("not three dimensions"))
        };
        let shape = dims("/shape")?;
        let virtual_chunk = dims("/chunk_grid/configuration/chunk_shape")?;
        if virtual_chunk[0] != 1 || virtual_chunk[2] != shape[2] || virtual_chunk[1] == 0 {
            return Err(bad(
                "virtual chunks must be one time step of whole latitude rows",
            ));
        }
        let dtype = meta["data_type"].as_str().unwrap_or_default();
        let fill = &meta["fill_value"];
        let fill: Vec<u8> = match dtype {
            "float32" => {
                let v = match fill {
                    Value::String(s) if s == "NaN" => f32::NAN,
                    v => v
                        .as_f64()
                        .ok_or_else(|| bad("fill_value is not a number"))?
                        as f32,
                };
                v.to_le_bytes().to_vec()
            }
            "int16" => {
                let v = fill
                    .as_i64()
                    .and_then(|v| i16::try_from(v).ok())
                    .ok_or_else(|| bad("fill_value is not an int16"))?;
                v.to_le_bytes().to_vec()
            }
            "int32" => {
                let v = fill
                    .as_i64()
                    .and_then(|v| i32::try_from(v).ok())
                    .ok_or_else(|| bad("fill_value is not an int32"))?;
                v.to_le_bytes().to_vec()
            }
            other => return Err(bad(&format!("data type {other:?} is not supported"))),
        };
        let virtual_codecs = meta["codecs"]
            .as_array()
            .ok_or_else(|| bad("no codecs"))?
            .iter()
            .map(|c| imerg_refs::Codec::from_zarr_json(c).ok_or_else(|| bad("unknown codec")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name: name.to_string(),
            shape,
            dtype_size: fill.len(),
            is_float: dtype == "float32",
            fill,
            virtual_chunk,
            virtual_codecs,
        })
    }

    /// Bytes of one time step of one chunk.
    pub fn step_bytes(&self, layout: &NativeLayout) -> usize {
        layout.tile_cells().saturating_mul(self.dtype_size)
    }

    /// Shard columns (along lon) and rows (along lat).
    pub fn shard_grid(&self, layout: &NativeLayout) -> [u64; 2] {
        [
            self.shape[1].div_ceil(layout.shard[0].max(1)),
            self.shape[2].div_ceil(layout.shard[1].max(1)),
        ]
    }
}

/// Rounds little-endian float32 values in place to `keep` mantissa bits (round half to even on
/// the dropped bits, as numcodecs' BitRound), leaving `fill`, NaN and infinities untouched.
pub fn round_mantissa(values: &mut [u8], keep: u8, fill: &[u8]) {
    let keep = u32::from(keep.min(23));
    if keep == 23 {
        return;
    }
    let drop = 23 - keep;
    let mask = (u32::MAX >> drop) << drop;
    let half = (1u32 << (drop - 1)) - 1;
    for v in values.chunks_exact_mut(4) {
        if v == fill {
            continue;
        }
        let bits = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
        if !f32::from_bits(bits).is_finite() {
            continue;
        }
        let rounded = bits.wrapping_add(((bits >> drop) & 1) + half) & mask;
        v.copy_from_slice(&rounded.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mantissa_rounding_keeps_fill_and_bounds_the_error() {
        let fill = (-9999.9f32).to_le_bytes();
        let vals = [1.234_567_f32, -9999.9, 0.0, 3.0e-3, f32::NAN, 1.0e6];
        let mut b: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        round_mantissa(&mut b, 7, &fill);
        let got: Vec<f32> = b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(got[1], -9999.9, "fill untouched");
        assert_eq!(got[2], 0.0);
        assert!(got[4].is_nan());
        for i in [0, 3, 5] {
            let rel = ((got[i] - vals[i]) / vals[i]).abs();
            assert!(rel <= 2f32.powi(-8), "{} -> {} ({rel})", vals[i], got[i]);
            assert_eq!(
                got[i].to_bits() & ((1 << 16) - 1),
                0,
                "16 low mantissa bits cleared"
            );
        }
        let m = NativeLayout {
            keep_mantissa_bits: Some(7),
            ..Default::default()
        }
        .data_array_metadata(&virtual_meta())
        .unwrap();
        assert_eq!(m["attributes"]["imerg_native_keep_mantissa_bits"], 7);
    }

    fn virtual_meta() -> Value {
        json!({"zarr_format": 3, "node_type": "array", "shape": [100, 3600, 1800],
            "data_type": "float32",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, 145, 1800]}},
            "fill_value": -9999.900390625,
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                       {"name": "numcodecs.zlib", "configuration": {"level": 6}}],
            "attributes": {"units": "mm/hr"}, "dimension_names": ["time", "lon", "lat"]})
    }

    #[test]
    fn native_metadata_keeps_all_but_chunks_and_codecs() {
        let l = NativeLayout::default();
        let v = virtual_meta();
        let n = l.data_array_metadata(&v).unwrap();
        for k in [
            "shape",
            "data_type",
            "fill_value",
            "attributes",
            "dimension_names",
        ] {
            assert_eq!(n[k], v[k], "{k}");
        }
        assert_eq!(
            n["chunk_grid"]["configuration"]["chunk_shape"],
            json!([2880, 180, 180])
        );
        assert_eq!(
            n["codecs"][0]["configuration"]["chunk_shape"],
            json!([2880, 10, 10])
        );
        let a = DataArray::from_virtual("precipitation", &v).unwrap();
        assert_eq!(a.fill, (-9999.9f32).to_le_bytes().to_vec());
        assert_eq!(a.shard_grid(&l), [20, 10]);
        assert_eq!(l.chunks_per_shard(), 324);
    }

    #[test]
    fn unsupported_virtual_chunking_is_refused() {
        let mut v = virtual_meta();
        v["chunk_grid"]["configuration"]["chunk_shape"] = json!([2, 145, 1800]);
        assert!(DataArray::from_virtual("p", &v).is_err());
    }
}
