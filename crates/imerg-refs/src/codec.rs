//! The HDF5 filter pipelines a Zarr v3 reader can decode, written as Zarr codecs, and a decoder for
//! them (bytes -> numcodecs.shuffle -> numcodecs.zlib), used to check references byte for byte.

use std::io::Read;

use serde::{Deserialize, Serialize};

/// Byte order of the stored elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endian {
    Little,
    Big,
}

/// One codec of the chain, in encoding order (array -> bytes -> filters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "codec", rename_all = "snake_case")]
pub enum Codec {
    /// Array to bytes (`bytes`), with the stored byte order.
    Bytes { endian: Endian },
    /// HDF5 shuffle == `numcodecs.shuffle`.
    Shuffle { elementsize: u32 },
    /// HDF5 deflate is a zlib stream == `numcodecs.zlib` (not `gzip`).
    Zlib { level: u32 },
}

impl Codec {
    /// The codec as it appears in a Zarr v3 `zarr.json`.
    pub fn to_zarr_json(&self) -> serde_json::Value {
        match self {
            Codec::Bytes { endian } => serde_json::json!({
                "name": "bytes", "configuration": {"endian": endian}
            }),
            Codec::Shuffle { elementsize } => serde_json::json!({
                "name": "numcodecs.shuffle", "configuration": {"elementsize": elementsize}
            }),
            Codec::Zlib { level } => serde_json::json!({
                "name": "numcodecs.zlib", "configuration": {"level": level}
            }),
        }
    }

    /// Reads a codec back from its `zarr.json` form (None for codecs this project never writes).
    pub fn from_zarr_json(v: &serde_json::Value) -> Option<Codec> {
        let conf = &v["configuration"];
        Some(match v["name"].as_str()? {
            "bytes" => Codec::Bytes {
                endian: match conf["endian"].as_str() {
                    Some("big") => Endian::Big,
                    _ => Endian::Little,
                },
            },
            "numcodecs.shuffle" => Codec::Shuffle {
                elementsize: u32::try_from(conf["elementsize"].as_u64()?).ok()?,
            },
            "numcodecs.zlib" => Codec::Zlib {
                level: u32::try_from(conf["level"].as_u64()?).ok()?,
            },
            _ => return None,
        })
    }

    /// The part of the codec that decoding depends on. A zlib stream decodes the same whatever
    /// level wrote it, so the level is not part of a dataset's layout fingerprint.
    pub fn decode_identity(&self) -> Codec {
        match self {
            Codec::Zlib { .. } => Codec::Zlib { level: 0 },
            other => other.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("zlib stream is corrupt: {0}")]
    Zlib(#[from] std::io::Error),
    #[error("decoded chunk has {got} bytes, expected {expected}")]
    Size { got: usize, expected: usize },
    #[error("codec chain must start with `bytes`")]
    NoBytesCodec,
}

/// Decodes one stored chunk with `codecs` into little-endian element bytes: `expected_len` bytes
/// of elements `dtype_size` bytes wide.
pub fn decode_chunk(
    codecs: &[Codec],
    stored: &[u8],
    dtype_size: usize,
    expected_len: usize,
) -> Result<Vec<u8>, CodecError> {
    if !matches!(codecs.first(), Some(Codec::Bytes { .. })) {
        return Err(CodecError::NoBytesCodec);
    }
    let mut data = stored.to_vec();
    for codec in codecs.iter().rev() {
        data = match codec {
            Codec::Zlib { .. } => {
                // Stored bytes come from outside: inflate at most one byte more than a chunk
                // can hold (a deflate bomb then fails the size check instead of exhausting
                // memory).
                let mut out = Vec::with_capacity(expected_len);
                let limit = u64::try_from(expected_len)
                    .unwrap_or(u64::MAX)
                    .saturating_add(1);
                flate2::read::ZlibDecoder::new(&data[..])
                    .take(limit)
                    .read_to_end(&mut out)?;
                out
            }
            Codec::Shuffle { elementsize } => unshuffle(&data, *elementsize as usize),
            Codec::Bytes { endian } => {
                if data.len() != expected_len {
                    return Err(CodecError::Size {
                        got: data.len(),
                        expected: expected_len,
                    });
                }
                if *endian == Endian::Big && dtype_size > 1 {
                    for el in data.chunks_mut(dtype_size) {
                        el.reverse();
                    }
                }
                data
            }
        };
    }
    Ok(data)
}

/// Inverse of the HDF5 / numcodecs byte shuffle: byte k of every element was stored in plane k.
fn unshuffle(data: &[u8], elementsize: usize) -> Vec<u8> {
    if elementsize <= 1 || !data.len().is_multiple_of(elementsize) {
        return data.to_vec();
    }
    let n = data.len() / elementsize;
    let mut out = vec![0u8; data.len()];
    for (k, plane) in data.chunks_exact(n).enumerate() {
        for (i, b) in plane.iter().enumerate() {
            out[i * elementsize + k] = *b;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A deflate bomb (a few KB inflating to 256 MiB) stops at the chunk's size plus one byte:
    /// a size error, not an allocation of what the stream claims.
    #[test]
    fn a_deflate_bomb_is_cut_at_the_chunk_size() {
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..256 {
            enc.write_all(&zeros).unwrap();
        }
        let stored = enc.finish().unwrap();
        assert!(stored.len() < 512 * 1024, "{}", stored.len());
        let codecs = [
            Codec::Bytes {
                endian: Endian::Little,
            },
            Codec::Zlib { level: 9 },
        ];
        match decode_chunk(&codecs, &stored, 4, 4000) {
            Err(CodecError::Size { got, expected }) => assert_eq!((got, expected), (4001, 4000)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decodes_shuffled_zlib() {
        let values: Vec<f32> = (0..100).map(|i| i as f32 * 0.5).collect();
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        // shuffle
        let n = values.len();
        let mut shuffled = vec![0u8; raw.len()];
        for i in 0..n {
            for k in 0..4 {
                shuffled[k * n + i] = raw[i * 4 + k];
            }
        }
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
        enc.write_all(&shuffled).unwrap();
        let stored = enc.finish().unwrap();
        let codecs = [
            Codec::Bytes {
                endian: Endian::Little,
            },
            Codec::Shuffle { elementsize: 4 },
            Codec::Zlib { level: 6 },
        ];
        assert_eq!(decode_chunk(&codecs, &stored, 4, raw.len()).unwrap(), raw);
        assert!(decode_chunk(&codecs, &stored[..10], 4, raw.len()).is_err());
        assert_eq!(
            codecs[2].to_zarr_json(),
            serde_json::json!({"name": "numcodecs.zlib", "configuration": {"level": 6}})
        );
    }
}
