//! A granule's layout as far as decoding depends on it (dtypes, grid, chunk shapes, fill values,
//! codec chains, coordinate values), its fingerprint, and a readable list of differences.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Codec;

/// A variable's fill value, typed like the variable.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FillValue {
    Int(i64),
    Float(f64),
}

impl FillValue {
    fn canonical(&self) -> String {
        match self {
            FillValue::Int(v) => format!("i{v}"),
            FillValue::Float(v) => format!("f{:016x}", v.to_bits()),
        }
    }
}

/// One data variable's layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariableLayout {
    pub name: String,
    /// Zarr v3 data type (`float32`, `int16`, ...).
    pub dtype: String,
    /// Horizontal shape `(lon, lat)`.
    pub grid: [u64; 2],
    /// Chunk shape `(time, lon, lat)`.
    pub chunk: [u64; 3],
    pub fill_value: FillValue,
    /// Codec chain in encoding order, starting with `bytes`.
    pub codecs: Vec<Codec>,
}

impl VariableLayout {
    /// Element size in bytes of the variable's dtype.
    pub fn dtype_size(&self) -> usize {
        dtype_size(&self.dtype)
    }

    /// Bytes of one decoded chunk.
    pub fn chunk_bytes(&self) -> usize {
        let n: u64 = self.chunk.iter().product();
        usize::try_from(n).unwrap_or(usize::MAX) * self.dtype_size()
    }

    fn canonical(&self) -> String {
        let codecs: Vec<Codec> = self.codecs.iter().map(Codec::decode_identity).collect();
        format!(
            "{}|{}|{:?}|{:?}|{}|{}",
            self.name,
            self.dtype,
            self.grid,
            self.chunk,
            self.fill_value.canonical(),
            serde_json::to_string(&codecs).unwrap_or_default()
        )
    }
}

/// Element size of a Zarr v3 numeric data type (0 if unknown).
pub fn dtype_size(dtype: &str) -> usize {
    match dtype {
        "int8" | "uint8" | "bool" => 1,
        "int16" | "uint16" | "float16" => 2,
        "int32" | "uint32" | "float32" => 4,
        "int64" | "uint64" | "float64" => 8,
        _ => 0,
    }
}

/// The layout of a whole granule: its data variables and a digest of its coordinate values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub variables: Vec<VariableLayout>,
    /// SHA-256 (hex) of lon, lat, lon_bnds, lat_bnds values.
    pub coords_digest: String,
}

impl Layout {
    /// Hex SHA-256 of everything decoding depends on. Equal fingerprints mean a granule's refs
    /// can be read with the dataset's metadata. The deflate level is left out on purpose: a zlib
    /// stream decodes identically whatever level wrote it.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for v in &self.variables {
            h.update(v.canonical().as_bytes());
            h.update(b"\n");
        }
        h.update(self.coords_digest.as_bytes());
        hex(&h.finalize())
    }

    /// Human-readable differences from `other` (empty when the fingerprints agree).
    pub fn differences(&self, other: &Layout) -> Vec<String> {
        let mut out = Vec::new();
        let names = |l: &Layout| {
            l.variables
                .iter()
                .map(|v| v.name.clone())
                .collect::<Vec<_>>()
        };
        if names(self) != names(other) {
            out.push(format!("variables {:?} vs {:?}", names(self), names(other)));
        }
        for a in &self.variables {
            let Some(b) = other.variables.iter().find(|b| b.name == a.name) else {
                continue;
            };
            if a.dtype != b.dtype {
                out.push(format!("{}: dtype {} vs {}", a.name, a.dtype, b.dtype));
            }
            if a.grid != b.grid {
                out.push(format!("{}: grid {:?} vs {:?}", a.name, a.grid, b.grid));
            }
            if a.chunk != b.chunk {
                out.push(format!(
                    "{}: chunk shape {:?} vs {:?}",
                    a.name, a.chunk, b.chunk
                ));
            }
            if a.fill_value.canonical() != b.fill_value.canonical() {
                out.push(format!(
                    "{}: fill value {:?} vs {:?}",
                    a.name, a.fill_value, b.fill_value
                ));
            }
            let ca: Vec<Codec> = a.codecs.iter().map(Codec::decode_identity).collect();
            let cb: Vec<Codec> = b.codecs.iter().map(Codec::decode_identity).collect();
            if ca != cb {
                out.push(format!(
                    "{}: codecs {} vs {}",
                    a.name,
                    describe(&a.codecs),
                    describe(&b.codecs)
                ));
            }
        }
        if self.coords_digest != other.coords_digest {
            out.push(format!(
                "coordinate values (lon, lat, bounds) differ: digest {} vs {}",
                short(&self.coords_digest),
                short(&other.coords_digest)
            ));
        }
        out
    }
}

fn describe(codecs: &[Codec]) -> String {
    codecs
        .iter()
        .map(|c| match c {
            Codec::Bytes { endian } => format!("bytes({endian:?})"),
            Codec::Shuffle { elementsize } => format!("shuffle({elementsize})"),
            Codec::Zlib { level } => format!("zlib({level})"),
        })
        .collect::<Vec<_>>()
        .join("+")
}

fn short(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Endian;

    fn layout(level: u32, shuffle: bool) -> Layout {
        let mut codecs = vec![Codec::Bytes {
            endian: Endian::Little,
        }];
        if shuffle {
            codecs.push(Codec::Shuffle { elementsize: 4 });
        }
        codecs.push(Codec::Zlib { level });
        Layout {
            variables: vec![VariableLayout {
                name: "precipitation".into(),
                dtype: "float32".into(),
                grid: [3600, 1800],
                chunk: [1, 145, 1800],
                fill_value: FillValue::Float(f64::from(-9999.9f32)),
                codecs,
            }],
            coords_digest: "abc".into(),
        }
    }

    #[test]
    fn level_does_not_change_the_fingerprint_but_shuffle_does() {
        assert_eq!(
            layout(4, false).fingerprint(),
            layout(6, false).fingerprint()
        );
        assert!(layout(4, false).differences(&layout(6, false)).is_empty());
        assert_ne!(
            layout(4, false).fingerprint(),
            layout(4, true).fingerprint()
        );
        let d = layout(4, false).differences(&layout(4, true));
        assert_eq!(
            d,
            vec!["precipitation: codecs bytes(Little)+zlib(4) vs bytes(Little)+shuffle(4)+zlib(4)"]
        );
        let mut other = layout(4, false);
        other.variables[0].chunk = [1, 100, 1800];
        other.coords_digest = "abd".into();
        let d = layout(4, false).differences(&other);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].contains("chunk shape [1, 145, 1800] vs [1, 100, 1800]"));
        assert!(d[1].contains("coordinate values"));
    }
}
