//! Reading references back through the store: a virtual chunk is fetched from its source object
//! by Icechunk's own read path (which checks the object's recorded version: a source replaced
//! behind the store's back fails here) and decoded with the array's codecs. Used after each
//! commit on a small sample (the committer) and on demand over a time range (`verify`).

use std::collections::HashMap;

use icechunk::format::ByteRange;
use icechunk::store::Store;
use imerg_refs::{Codec, decode_chunk};
use serde_json::Value;

use crate::store_io::{get_json, is_not_found};
use crate::{Dataset, DatasetError};

/// One chunk to read back, and the granule it belongs to (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkToVerify {
    pub variable: String,
    /// Chunk index `[time, lon, lat]`.
    pub chunk: [u64; 3],
    pub key: String,
}

/// Why a chunk did not read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The store holds no reference for the chunk.
    #[error("no reference in the store")]
    Missing,
    /// Fetching through the reference failed: the source object changed (its version no
    /// longer matches the reference's), was removed, or could not be read.
    #[error("reading the source object failed: {0}")]
    Source(String),
    /// The bytes did not decode with the array's codecs.
    #[error("decoding failed: {0}")]
    Decode(String),
    /// The array's metadata could not be read or understood.
    #[error("array metadata: {0}")]
    Metadata(String),
}

impl VerifyError {
    /// Short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Source(_) => "source",
            Self::Decode(_) => "decode",
            Self::Metadata(_) => "metadata",
        }
    }
}

/// What decoding a chunk of one array needs.
#[derive(Debug, Clone)]
struct ArrayCodecs {
    codecs: Vec<Codec>,
    dtype_size: usize,
    chunk_len: usize,
}

fn array_codecs(meta: &Value) -> Result<ArrayCodecs, VerifyError> {
    let bad = |what: &str| VerifyError::Metadata(what.to_string());
    let dtype_size: usize = match meta["data_type"].as_str() {
        Some("float32" | "int32" | "uint32") => 4,
        Some("int16" | "uint16") => 2,
        Some("float64" | "int64" | "uint64") => 8,
        Some("int8" | "uint8") => 1,
        _ => return Err(bad("unknown data_type")),
    };
    let shape = meta["chunk_grid"]["configuration"]["chunk_shape"]
        .as_array()
        .ok_or_else(|| bad("no chunk_shape"))?;
    let mut chunk_len = dtype_size;
    for d in shape {
        let d = d
            .as_u64()
            .ok_or_else(|| bad("chunk_shape is not integers"))?;
        chunk_len = usize::try_from(d)
            .ok()
            .and_then(|d| chunk_len.checked_mul(d))
            .ok_or_else(|| bad("chunk_shape too large"))?;
    }
    let codecs = meta["codecs"]
        .as_array()
        .ok_or_else(|| bad("no codecs"))?
        .iter()
        .map(|c| Codec::from_zarr_json(c).ok_or_else(|| bad("unknown codec")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ArrayCodecs {
        codecs,
        dtype_size,
        chunk_len,
    })
}

async fn verify_one(store: &Store, c: &ChunkToVerify, a: &ArrayCodecs) -> Result<(), VerifyError> {
    let key = format!(
        "{}/c/{}/{}/{}",
        c.variable, c.chunk[0], c.chunk[1], c.chunk[2]
    );
    let bytes = match store.get(&key, &ByteRange::ALL).await {
        Ok(b) => b,
        Err(e) if is_not_found(&e) => return Err(VerifyError::Missing),
        Err(e) => return Err(VerifyError::Source(e.to_string())),
    };
    decode_chunk(&a.codecs, &bytes, a.dtype_size, a.chunk_len)
        .map(|_| ())
        .map_err(|e| VerifyError::Decode(e.to_string()))
}

impl Dataset {
    /// Every chunk a granule at `time_index` references: each variable of the profile's layout,
    /// every chunk along the grid.
    pub fn granule_chunks(&self, time_index: u64, key: &str) -> Vec<ChunkToVerify> {
        let layout = &self.config().profile.layout;
        let mut out = Vec::new();
        for v in &layout.variables {
            let per = |n: u64, c: u64| n.div_ceil(c.max(1));
            let (nlon, nlat) = (
                per(layout.grid.n_lon, v.chunk[1]),
                per(layout.grid.n_lat, v.chunk[2]),
            );
            for i in 0..nlon {
                for j in 0..nlat {
                    out.push(ChunkToVerify {
                        variable: v.name.clone(),
                        chunk: [time_index, i, j],
                        key: key.to_string(),
                    });
                }
            }
        }
        out
    }

    /// Reads each chunk back at the branch tip and decodes it; one result per chunk, in order.
    pub async fn verify_chunks(
        &self,
        chunks: &[ChunkToVerify],
    ) -> Result<Vec<Result<(), VerifyError>>, DatasetError> {
        let store = self.read_store().await?;
        let mut arrays: HashMap<String, Result<ArrayCodecs, VerifyError>> = HashMap::new();
        let mut out = Vec::with_capacity(chunks.len());
        for c in chunks {
            if !arrays.contains_key(&c.variable) {
                let meta = get_json(&store, &format!("{}/zarr.json", c.variable)).await?;
                let a = meta
                    .as_ref()
                    .ok_or_else(|| VerifyError::Metadata("no such array".into()))
                    .and_then(array_codecs);
                arrays.insert(c.variable.clone(), a);
            }
            let r = match arrays.get(&c.variable) {
                Some(Ok(a)) => verify_one(&store, c, a).await,
                Some(Err(e)) => Err(e.clone()),
                None => Err(VerifyError::Metadata("no such array".into())),
            };
            out.push(r);
        }
        Ok(out)
    }
}
