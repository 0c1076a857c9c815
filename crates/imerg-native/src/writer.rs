//! Writing time steps into the native store: the metadata copied from the virtual store (root
//! group, coordinates and `granule_present` verbatim, data variables re-chunked), then, per data
//! variable, block and shard column, the virtual chunks of those steps decoded (off the async
//! threads) and their values put into the column's chunks as new zstd frames, and the column's
//! shards written back. Memory per column: its compressed shards plus one sub-batch of decoded
//! steps (`SUB_BATCH` x 180 lon x 1800 lat values).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use icechunk::Store;
use icechunk::format::ByteRange;
use serde_json::Value;

use crate::frames::{self, Frame, FrameCodec};
use crate::layout::{DataArray, NativeLayout};
use crate::{NativeError, shard};

/// Time steps decoded from the virtual store at a time, per column.
pub const SUB_BATCH: usize = 48;

/// A chunk with more frames than this after a follower update is compacted (runs of data frames
/// merged): short frames compress several times worse than one long frame (BENCHMARKS.md,
/// "Native store"), merging costs a decode and encode of the chunk's data.
pub const MAX_FRAMES: usize = 16;

/// Virtual chunks fetched concurrently.
const FETCH_CONCURRENCY: usize = 16;

/// What writing some steps cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// (variable, step) pairs applied.
    pub values_written: u64,
    /// Shard objects written.
    pub shards_written: u64,
    /// Bytes of the shards written.
    pub bytes_written: u64,
    /// Virtual chunks read and decoded.
    pub virtual_chunks_read: u64,
}

impl std::ops::AddAssign for WriteStats {
    fn add_assign(&mut self, o: Self) {
        self.values_written += o.values_written;
        self.shards_written += o.shards_written;
        self.bytes_written += o.bytes_written;
        self.virtual_chunks_read += o.virtual_chunks_read;
    }
}

/// The key of a data variable's shard.
fn shard_key(name: &str, block: u64, column: u64, row: u64) -> String {
    format!("{name}/c/{block}/{column}/{row}")
}

async fn get(store: &Store, key: &str) -> Result<Option<Bytes>, NativeError> {
    match store.get(key, &ByteRange::ALL).await {
        Ok(b) => Ok(Some(b)),
        Err(e) if imerg_dataset::is_not_found(&e) => Ok(None),
        Err(e) => Err(NativeError::store(key, e)),
    }
}

async fn set(store: &Store, key: &str, bytes: Bytes) -> Result<(), NativeError> {
    store
        .set(key, bytes)
        .await
        .map_err(|e| NativeError::store(key, e))
}

/// Sets `key` in the native store to `bytes` unless it already holds them.
async fn set_if_changed(native: &Store, key: &str, bytes: Bytes) -> Result<bool, NativeError> {
    if get(native, key).await?.as_deref() == Some(&bytes[..]) {
        return Ok(false);
    }
    set(native, key, bytes).await?;
    Ok(true)
}

/// The virtual store's top-level arrays, with their metadata.
async fn virtual_arrays(virt: &Store) -> Result<Vec<(String, Value)>, NativeError> {
    let names: Vec<String> = virt
        .list_dir("")
        .await
        .map_err(|e| NativeError::store("/", e))?
        .try_collect()
        .await
        .map_err(|e| NativeError::store("/", e))?;
    let mut out = Vec::new();
    for name in names {
        if name == "zarr.json" {
            continue;
        }
        let key = format!("{name}/zarr.json");
        let Some(b) = get(virt, &key).await? else {
            continue;
        };
        let meta: Value =
            serde_json::from_slice(&b).map_err(|e| NativeError::Metadata(format!("{key}: {e}")))?;
        if meta["node_type"] == "array" {
            out.push((name, meta));
        }
    }
    Ok(out)
}

/// A data variable: three dimensions `(time, lon, lat)`. Everything else is a coordinate (or a
/// per-step flag) and is copied as it is.
fn is_data_variable(meta: &Value) -> bool {
    meta["dimension_names"] == serde_json::json!(["time", "lon", "lat"])
}

/// Every chunk key of a (small, native) array of the virtual store, from its shape and chunks.
fn chunk_keys(name: &str, meta: &Value) -> Vec<String> {
    let dims = |p: &str| -> Vec<u64> {
        meta.pointer(p)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default()
    };
    let (shape, chunk) = (
        dims("/shape"),
        dims("/chunk_grid/configuration/chunk_shape"),
    );
    if shape.len() != chunk.len() || chunk.contains(&0) {
        return Vec::new();
    }
    let mut keys = vec![String::new()];
    for (s, c) in shape.iter().zip(&chunk) {
        let n = s.div_ceil(*c).max(1);
        keys = keys
            .iter()
            .flat_map(|k| (0..n).map(move |i| format!("{k}/{i}")))
            .collect();
    }
    keys.into_iter().map(|k| format!("{name}/c{k}")).collect()
}

/// Makes the native store's metadata and coordinates equal to the virtual store's (data
/// variables re-chunked) and returns the data variables.
pub async fn sync_metadata(
    native: &Store,
    virt: &Store,
    layout: &NativeLayout,
) -> Result<Vec<Arc<DataArray>>, NativeError> {
    let root = get(virt, "zarr.json")
        .await?
        .ok_or_else(|| NativeError::Metadata("the virtual store has no root group".into()))?;
    set_if_changed(native, "zarr.json", root).await?;
    let mut data = Vec::new();
    for (name, meta) in virtual_arrays(virt).await? {
        let key = format!("{name}/zarr.json");
        if is_data_variable(&meta) {
            let native_meta = layout.data_array_metadata(&meta)?;
            let bytes = serde_json::to_vec(&native_meta)
                .map_err(|e| NativeError::Metadata(e.to_string()))?;
            set_if_changed(native, &key, bytes.into()).await?;
            data.push(Arc::new(DataArray::from_virtual(&name, &meta)?));
        } else {
            let bytes =
                serde_json::to_vec(&meta).map_err(|e| NativeError::Metadata(e.to_string()))?;
            set_if_changed(native, &key, bytes.into()).await?;
            for k in chunk_keys(&name, &meta) {
                if let Some(b) = get(virt, &k).await? {
                    set_if_changed(native, &k, b).await?;
                }
            }
        }
    }
    data.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(data)
}

/// One shard column of one block of one data variable, and the steps to write into it.
#[derive(Debug, Clone)]
pub struct ColumnJob {
    pub array: Arc<DataArray>,
    pub block: u64,
    pub column: u64,
    /// Absolute time indices inside the block, ascending.
    pub steps: Vec<u64>,
    /// Compact a chunk that has more frames than this after the update (see [`MAX_FRAMES`]); 1
    /// merges every run of data frames (the batch rechunk, which writes a region once).
    pub compact_above: usize,
}

/// The decoded values of one step for the lon range `[lon0, lon1)`, every latitude:
/// `(lon - lon0) * n_lat + lat` elements, or None if the virtual store holds no chunk there.
async fn read_virtual_step(
    virt: &Store,
    a: &DataArray,
    step: u64,
    (lon0, lon1): (u64, u64),
    keep_mantissa_bits: Option<u8>,
) -> Result<(Vec<u8>, u64), NativeError> {
    let cl = a.virtual_chunk[1];
    let n_lat = usize::try_from(a.shape[2]).map_err(|_| NativeError::Metadata("grid".into()))?;
    let width = usize::try_from(lon1 - lon0).map_err(|_| NativeError::Metadata("grid".into()))?;
    let row = n_lat * a.dtype_size;
    let mut out: Vec<u8> = a.fill.iter().copied().cycle().take(width * row).collect();
    let chunk_len = usize::try_from(cl).map_err(|_| NativeError::Metadata("grid".into()))? * row;
    let (first, last) = (lon0 / cl, (lon1 - 1) / cl);
    let mut read = 0;
    for k in first..=last {
        let key = format!("{}/c/{step}/{k}/0", a.name);
        let Some(stored) = get(virt, &key).await? else {
            continue;
        };
        read += 1;
        let codecs = a.virtual_codecs.clone();
        let size = a.dtype_size;
        let fill = a.fill.clone();
        let lossy = keep_mantissa_bits.filter(|_| size == 4 && a.is_float);
        let decoded = tokio::task::spawn_blocking(move || {
            let mut d = imerg_refs::decode_chunk(&codecs, &stored, size, chunk_len)?;
            if let Some(bits) = lossy {
                crate::layout::round_mantissa(&mut d, bits, &fill);
            }
            Ok::<_, imerg_refs::CodecError>(d)
        })
        .await
        .map_err(|e| NativeError::Codec(e.to_string()))?
        .map_err(|e| NativeError::Codec(format!("{key}: {e}")))?;
        let (c0, c1) = (k * cl, (k + 1) * cl);
        for lon in c0.max(lon0)..c1.min(lon1) {
            let src = usize::try_from(lon - c0).unwrap_or(0) * row;
            let dst = usize::try_from(lon - lon0).unwrap_or(0) * row;
            out[dst..dst + row].copy_from_slice(&decoded[src..src + row]);
        }
    }
    Ok((out, read))
}

/// The values of one chunk (`tile` cells at `[lon_t, lat_t]` of the grid) in one decoded step.
fn tile_slab(
    a: &DataArray,
    layout: &NativeLayout,
    step_values: &[u8],
    lon0: u64,
    lon1: u64,
    lon_t: u64,
    lat_t: u64,
) -> Vec<u8> {
    let size = a.dtype_size;
    let n_lat = a.shape[2];
    let [tx, ty] = layout.tile;
    let mut slab = Vec::with_capacity(layout.tile_cells() * size);
    for x in 0..tx {
        let lon = lon_t * tx + x;
        let lat0 = lat_t * ty;
        let inside = if lon < lon1 && lon >= lon0 {
            ty.min(n_lat.saturating_sub(lat0))
        } else {
            0
        };
        if inside > 0 {
            let at = (usize::try_from((lon - lon0) * n_lat + lat0).unwrap_or(0)) * size;
            let n = usize::try_from(inside).unwrap_or(0) * size;
            slab.extend_from_slice(&step_values[at..at + n]);
        }
        for _ in inside..ty {
            slab.extend_from_slice(&a.fill);
        }
    }
    slab
}

/// Writes the steps of `job` into the native store (uncommitted).
pub async fn write_column(
    native: &Store,
    virt: &Store,
    layout: &NativeLayout,
    job: &ColumnJob,
) -> Result<WriteStats, NativeError> {
    let a = &job.array;
    let [_, rows] = a.shard_grid(layout);
    let [tpx, tpy] = layout.tiles_per_shard();
    let per_shard = layout.chunks_per_shard();
    let block = u32::try_from(layout.block).map_err(|_| NativeError::Metadata("block".into()))?;
    let lon0 = job.column * layout.shard[0];
    let lon1 = (lon0 + layout.shard[0]).min(a.shape[1]);
    let mut codec = FrameCodec::new(a.step_bytes(layout), a.fill.clone(), layout.level);
    let mut stats = WriteStats::default();

    // The column's chunks as frames, shard by shard (row along lat), chunks in C order.
    let mut tiles: Vec<Vec<Vec<Frame>>> = Vec::new();
    let mut existed = Vec::new();
    for row in 0..rows {
        let key = shard_key(&a.name, job.block, job.column, row);
        let stored = get(native, &key).await?;
        existed.push(stored.is_some());
        let mut shard_tiles = Vec::with_capacity(per_shard);
        match stored {
            Some(b) => {
                for c in shard::decode(&b, per_shard)? {
                    shard_tiles.push(match c {
                        Some(c) => codec.parse(c, block)?,
                        None => codec.empty(block)?,
                    });
                }
            }
            None => {
                for _ in 0..per_shard {
                    shard_tiles.push(codec.empty(block)?);
                }
            }
        }
        tiles.push(shard_tiles);
    }

    for sub in job.steps.chunks(SUB_BATCH) {
        let decoded: Vec<(u64, Vec<u8>, u64)> = futures::stream::iter(sub.iter().copied())
            .map(|t| async move {
                read_virtual_step(virt, a, t, (lon0, lon1), layout.keep_mantissa_bits)
                    .await
                    .map(|(v, n)| (t, v, n))
            })
            .buffered(FETCH_CONCURRENCY.min(sub.len()).max(1))
            .try_collect()
            .await?;
        stats.virtual_chunks_read += decoded.iter().map(|d| d.2).sum::<u64>();
        stats.values_written += decoded.len() as u64;
        let (array, lay) = (Arc::clone(a), *layout);
        let block_start = job.block * layout.block;
        let column = job.column;
        let moved = std::mem::take(&mut tiles);
        let (back, c) = tokio::task::spawn_blocking(move || {
            let mut tiles = moved;
            for (row, shard_tiles) in tiles.iter_mut().enumerate() {
                for (k, frames) in shard_tiles.iter_mut().enumerate() {
                    let (i, j) = (k as u64 / tpy, k as u64 % tpy);
                    let lon_t = column * tpx + i;
                    let lat_t = row as u64 * tpy + j;
                    let slabs: Vec<(u32, Vec<u8>)> = decoded
                        .iter()
                        .map(|(t, v, _)| {
                            (
                                (t - block_start) as u32,
                                tile_slab(&array, &lay, v, lon0, lon1, lon_t, lat_t),
                            )
                        })
                        .collect();
                    let updates: BTreeMap<u32, &[u8]> =
                        slabs.iter().map(|(s, v)| (*s, v.as_slice())).collect();
                    *frames = codec.apply(std::mem::take(frames), &updates)?;
                }
            }
            Ok::<_, NativeError>((tiles, codec))
        })
        .await
        .map_err(|e| NativeError::Codec(e.to_string()))??;
        tiles = back;
        codec = c;
    }

    let compact_above = job.compact_above;
    let tiles = tokio::task::spawn_blocking(move || {
        tiles
            .into_iter()
            .map(|shard_tiles| {
                shard_tiles
                    .into_iter()
                    .map(|f| codec.compact(f, compact_above))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| NativeError::Codec(e.to_string()))??;
    for (row, shard_tiles) in tiles.into_iter().enumerate() {
        let key = shard_key(&a.name, job.block, job.column, row as u64);
        let chunks: Vec<Option<Vec<u8>>> = shard_tiles.iter().map(|f| frames::encode(f)).collect();
        match shard::encode(&chunks) {
            Some(bytes) => {
                stats.shards_written += 1;
                stats.bytes_written += bytes.len() as u64;
                set(native, &key, bytes.into()).await?;
            }
            None if existed.get(row).copied().unwrap_or(false) => {
                native
                    .delete(&key)
                    .await
                    .map_err(|e| NativeError::store(&key, e))?;
            }
            None => {}
        }
    }
    Ok(stats)
}

/// What [`write_block`] writes: `steps` (all inside `block`) into the shard columns `columns`
/// (None: all of them), compacting chunks with more than `compact_above` frames.
#[derive(Debug, Clone, Copy)]
pub struct BlockJob<'a> {
    pub block: u64,
    pub columns: Option<&'a [u64]>,
    pub steps: &'a [u64],
    pub compact_above: usize,
}

/// Writes a block's steps of every data variable, one shard column at a time (uncommitted).
pub async fn write_block(
    native: &Store,
    virt: &Store,
    layout: &NativeLayout,
    arrays: &[Arc<DataArray>],
    job: BlockJob<'_>,
) -> Result<WriteStats, NativeError> {
    let mut stats = WriteStats::default();
    if job.steps.is_empty() {
        return Ok(stats);
    }
    for a in arrays {
        let all: Vec<u64> = (0..a.shard_grid(layout)[0]).collect();
        for &column in job.columns.unwrap_or(&all) {
            let column_job = ColumnJob {
                array: Arc::clone(a),
                block: job.block,
                column,
                steps: job.steps.to_vec(),
                compact_above: job.compact_above,
            };
            stats += write_column(native, virt, layout, &column_job).await?;
            imerg_crashpoint::reached(imerg_crashpoint::NATIVE_MID_UPDATE);
        }
    }
    Ok(stats)
}

/// One element of the native store: `array` at `(t, lon, lat)`, little-endian bytes (the fill
/// value where nothing was written). For checks and tests; readers use Zarr.
pub async fn read_element(
    native: &Store,
    a: &DataArray,
    layout: &NativeLayout,
    t: u64,
    lon: u64,
    lat: u64,
) -> Result<Vec<u8>, NativeError> {
    let block = layout.block_of(t);
    let (column, row) = (lon / layout.shard[0], lat / layout.shard[1]);
    let key = shard_key(&a.name, block, column, row);
    let Some(stored) = get(native, &key).await? else {
        return Ok(a.fill.clone());
    };
    let [_, tpy] = layout.tiles_per_shard();
    let (i, j) = (
        (lon % layout.shard[0]) / layout.tile[0],
        (lat % layout.shard[1]) / layout.tile[1],
    );
    let k = usize::try_from(i * tpy + j).map_err(|_| NativeError::Metadata("grid".into()))?;
    let chunks = shard::decode(&stored, layout.chunks_per_shard())?;
    let Some(Some(chunk)) = chunks.get(k) else {
        return Ok(a.fill.clone());
    };
    let step = a.step_bytes(layout);
    let mut raw = Vec::new();
    zstd::stream::copy_decode(*chunk, &mut raw).map_err(|e| NativeError::Corrupt(e.to_string()))?;
    let (x, y) = (lon % layout.tile[0], lat % layout.tile[1]);
    let at = usize::try_from(t % layout.block).unwrap_or(0) * step
        + usize::try_from(x * layout.tile[1] + y).unwrap_or(0) * a.dtype_size;
    raw.get(at..at + a.dtype_size)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| NativeError::Corrupt("chunk shorter than its block".into()))
}
