//! Ranged reads: the [`RangeReader`] trait (one implementation per storage), an in-memory and a
//! local-file implementation, and the per-granule [`Fetcher`] that every parser goes through.
//!
//! The fetcher keeps a bounded block cache (aligned blocks of [`ReadOptions::block_size`]),
//! merges the missing blocks of one read into one GET, and accounts for three costs: GET
//! requests, bytes fetched and *dependent round trips*. Round trips are counted on a logical
//! clock: the first read happens at depth 1; a read whose address was learnt from data available
//! at depth `d` is at depth `d + 1` unless all its blocks are already cached. Reads issued
//! concurrently from the same depth share one round trip, so the final depth is the length of
//! the critical path of requests, whatever the real scheduling was.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use crate::error::{Hdf5Error, Result};

/// One storage object read by byte ranges (an S3 object, a local file, a buffer).
#[async_trait]
pub trait RangeReader: Send + Sync + fmt::Debug {
    /// Reads `len` bytes at `offset`. Returns fewer bytes only when the object ends first (an
    /// empty buffer at or past its end).
    async fn read(&self, offset: u64, len: u64) -> Result<Bytes>;

    /// The object's size, when known without a request.
    fn size_hint(&self) -> Option<u64> {
        None
    }
}

/// A reader over a buffer in memory, counting its requests and bytes.
#[derive(Debug, Default)]
pub struct MemReader {
    data: Bytes,
    gets: AtomicU64,
    bytes: AtomicU64,
}

impl MemReader {
    pub fn new(data: impl Into<Bytes>) -> Self {
        Self {
            data: data.into(),
            ..Self::default()
        }
    }

    /// (GET requests, bytes returned) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.gets.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

fn slice_of(data: &Bytes, offset: u64, len: u64) -> Bytes {
    let size = data.len() as u64;
    let start = offset.min(size);
    let end = offset.saturating_add(len).min(size);
    match (usize::try_from(start), usize::try_from(end)) {
        (Ok(s), Ok(e)) => data.slice(s..e),
        _ => Bytes::new(),
    }
}

#[async_trait]
impl RangeReader for MemReader {
    async fn read(&self, offset: u64, len: u64) -> Result<Bytes> {
        let out = slice_of(&self.data, offset, len);
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    fn size_hint(&self) -> Option<u64> {
        Some(self.data.len() as u64)
    }
}

/// A reader over a local file (positional reads; blocking, meant for tests and tools).
#[derive(Debug)]
pub struct FileReader {
    file: std::fs::File,
    size: u64,
}

impl FileReader {
    pub fn open(path: &std::path::Path) -> Result<Self> {
        let io = |e: std::io::Error| Hdf5Error::Io {
            offset: 0,
            len: 0,
            detail: format!("{}: {e}", path.display()),
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        Ok(Self { file, size })
    }
}

#[async_trait]
impl RangeReader for FileReader {
    async fn read(&self, offset: u64, len: u64) -> Result<Bytes> {
        use std::os::unix::fs::FileExt;
        let end = offset.saturating_add(len).min(self.size);
        let n = end.saturating_sub(offset);
        let n = usize::try_from(n).map_err(|_| Hdf5Error::LimitExceeded {
            what: "read length",
            value: n,
            limit: usize::MAX as u64,
        })?;
        let mut buf = vec![0u8; n];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| Hdf5Error::Io {
                offset,
                len,
                detail: e.to_string(),
            })?;
        Ok(Bytes::from(buf))
    }

    fn size_hint(&self) -> Option<u64> {
        Some(self.size)
    }
}

/// Tuning and safety limits of one granule read.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Size of the first read, from offset 0 (superblock and, usually, the root group).
    pub first_read: u64,
    /// Bytes read from the end of the object together with the first read (0: none). Needs the
    /// object size from [`RangeReader::size_hint`]. libhdf5 writes metadata that changes at
    /// close (B-tree nodes, heaps, grown object headers) near the end of the file.
    pub tail_read: u64,
    /// Cache block size: later reads are rounded out to aligned blocks of this size.
    pub block_size: u64,
    /// Bound of the block cache of one granule.
    pub max_cache_bytes: u64,
    /// Largest single metadata structure read (a heap, a B-tree node...).
    pub max_read: u64,
    /// Most chunks one dataset may declare or list.
    pub max_chunks: u64,
    /// Most structures (B-tree nodes, heap blocks, header blocks) visited for one dataset.
    pub max_nodes: u64,
    /// Most elements a dataspace may declare.
    pub max_elements: u64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            first_read: 256 * 1024,
            tail_read: 0,
            block_size: 16 * 1024,
            max_cache_bytes: 8 * 1024 * 1024,
            max_read: 4 * 1024 * 1024,
            max_chunks: 1 << 20,
            max_nodes: 1 << 16,
            max_elements: 1 << 36,
        }
    }
}

/// One GET issued by the fetcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetRecord {
    pub offset: u64,
    pub len: u64,
    /// Dependent round trip this request belongs to (1 = the first read).
    pub depth: u32,
}

/// What reading one granule's metadata cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchStats {
    pub gets: u64,
    pub bytes: u64,
    /// Length of the longest chain of dependent requests.
    pub round_trips: u32,
    /// Every GET, in issue order.
    pub requests: Vec<GetRecord>,
    /// Every metadata structure read (offset, length), before rounding to cache blocks.
    pub structure_reads: Vec<(u64, u64)>,
}

#[derive(Debug, Default)]
struct Cache {
    blocks: HashMap<u64, (Bytes, u32)>,
    order: VecDeque<u64>,
    bytes: u64,
}

/// The per-granule caching, counting front of a [`RangeReader`].
pub struct Fetcher {
    reader: Arc<dyn RangeReader>,
    opts: ReadOptions,
    cache: Mutex<Cache>,
    stats: Mutex<FetchStats>,
    eof: AtomicU64,
}

impl fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetcher")
            .field("reader", &self.reader)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    pub fn new(reader: Arc<dyn RangeReader>, opts: ReadOptions) -> Self {
        let eof = reader.size_hint().unwrap_or(u64::MAX);
        Self {
            reader,
            opts,
            cache: Mutex::new(Cache::default()),
            stats: Mutex::new(FetchStats::default()),
            eof: AtomicU64::new(eof),
        }
    }

    pub fn options(&self) -> &ReadOptions {
        &self.opts
    }

    /// The end of the file as far as known (object size, then the superblock's EOF address).
    pub fn eof(&self) -> u64 {
        self.eof.load(Ordering::Relaxed)
    }

    pub(crate) fn set_eof(&self, eof: u64) {
        self.eof.fetch_min(eof, Ordering::Relaxed);
    }

    pub fn stats(&self) -> FetchStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The first read: `first_read` bytes from offset 0, at depth 1. Returns what was read
    /// (shorter if the object is).
    pub(crate) async fn first(&self) -> Result<Bytes> {
        let len = self.opts.first_read.max(self.opts.block_size);
        let bs = self.opts.block_size.max(1);
        let tail = match self.reader.size_hint() {
            Some(size) if self.opts.tail_read > 0 && size > len => {
                let start = (size.saturating_sub(self.opts.tail_read).max(len) / bs) * bs;
                Some((start, size - start))
            }
            _ => None,
        };
        let head = self.get(0, len, 1);
        let data = match tail {
            Some((start, n)) => {
                let (data, t) = futures::future::try_join(head, self.get(start, n, 1)).await?;
                self.insert(start, &t, 1);
                data
            }
            None => head.await?,
        };
        self.insert(0, &data, 1);
        Ok(data)
    }

    async fn get(&self, offset: u64, len: u64, depth: u32) -> Result<Bytes> {
        let data = self.reader.read(offset, len).await?;
        if let Ok(mut s) = self.stats.lock() {
            s.gets += 1;
            s.bytes += data.len() as u64;
            s.round_trips = s.round_trips.max(depth);
            s.requests.push(GetRecord {
                offset,
                len: data.len() as u64,
                depth,
            });
        }
        Ok(data)
    }

    fn insert(&self, offset: u64, data: &Bytes, depth: u32) {
        let bs = self.opts.block_size.max(1);
        let Ok(mut c) = self.cache.lock() else { return };
        let mut pos = 0u64;
        while pos < data.len() as u64 {
            let abs = offset + pos;
            let end = ((abs / bs) + 1) * bs;
            let take = (end - abs).min(data.len() as u64 - pos);
            // Only whole blocks (or the file's last, short block) are cached.
            if abs.is_multiple_of(bs) && (take == bs || pos + take == data.len() as u64) {
                let (Ok(s), Ok(e)) = (usize::try_from(pos), usize::try_from(pos + take)) else {
                    return;
                };
                let idx = abs / bs;
                if let std::collections::hash_map::Entry::Vacant(v) = c.blocks.entry(idx) {
                    v.insert((data.slice(s..e), depth));
                    c.order.push_back(idx);
                    c.bytes += take;
                }
            }
            pos += take;
        }
        while c.bytes > self.opts.max_cache_bytes {
            let Some(old) = c.order.pop_front() else {
                break;
            };
            if let Some((b, _)) = c.blocks.remove(&old) {
                c.bytes -= b.len() as u64;
            }
        }
    }

    /// Reads `len` bytes at absolute `offset`, for a reader whose inputs were available at
    /// `*depth`; updates `*depth` to when the result is available.
    pub(crate) async fn read(
        &self,
        depth: &mut u32,
        what: &str,
        offset: u64,
        len: u64,
    ) -> Result<Bytes> {
        if len > self.opts.max_read {
            return Err(Hdf5Error::LimitExceeded {
                what: "metadata read length",
                value: len,
                limit: self.opts.max_read,
            });
        }
        let eof = self.eof();
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Hdf5Error::AddressOutOfRange {
                what: what.to_string(),
                address: offset,
                eof,
            })?;
        if offset >= eof || end > eof {
            if offset >= eof {
                return Err(Hdf5Error::AddressOutOfRange {
                    what: what.to_string(),
                    address: offset,
                    eof,
                });
            }
            return Err(Hdf5Error::Truncated {
                what: what.to_string(),
                needed: end,
                size: eof,
            });
        }
        if len == 0 {
            return Ok(Bytes::new());
        }
        if let Ok(mut s) = self.stats.lock() {
            s.structure_reads.push((offset, len));
        }
        let bs = self.opts.block_size.max(1);
        let (b0, b1) = (offset / bs, (end - 1) / bs);
        // Which blocks are missing, and when the cached ones became available.
        let mut missing = Vec::new();
        let mut avail = *depth;
        {
            let c = self
                .cache
                .lock()
                .map_err(|_| Hdf5Error::malformed("cache", "poisoned lock"))?;
            for b in b0..=b1 {
                match c.blocks.get(&b) {
                    Some((_, ready)) => avail = avail.max((*ready).min(*depth + 1)),
                    None => missing.push(b),
                }
            }
        }
        if !missing.is_empty() {
            let next = *depth + 1;
            avail = avail.max(next);
            // Contiguous runs of missing blocks, one GET each, concurrently.
            let mut runs: Vec<(u64, u64)> = Vec::new();
            for b in missing {
                match runs.last_mut() {
                    Some((_, last)) if *last + 1 == b => *last = b,
                    _ => runs.push((b, b)),
                }
            }
            let gets = runs.iter().map(|(first, last)| {
                let start = first * bs;
                let stop = ((last + 1) * bs).min(eof);
                async move {
                    let data = self.get(start, stop - start, next).await?;
                    Ok::<_, Hdf5Error>((start, data))
                }
            });
            for (start, data) in futures::future::try_join_all(gets).await? {
                self.insert(start, &data, next);
            }
        }
        *depth = avail;
        self.assemble(what, offset, len)
    }

    fn assemble(&self, what: &str, offset: u64, len: u64) -> Result<Bytes> {
        let bs = self.opts.block_size.max(1);
        let end = offset + len;
        let c = self
            .cache
            .lock()
            .map_err(|_| Hdf5Error::malformed("cache", "poisoned lock"))?;
        let short = |have: u64| Hdf5Error::Truncated {
            what: what.to_string(),
            needed: end,
            size: have,
        };
        let (b0, b1) = (offset / bs, (end - 1) / bs);
        if b0 == b1 {
            let (blk, _) = c.blocks.get(&b0).ok_or_else(|| short(offset))?;
            let s = offset - b0 * bs;
            if s + len > blk.len() as u64 {
                return Err(short(b0 * bs + blk.len() as u64));
            }
            return Ok(slice_of(blk, s, len));
        }
        let mut out = BytesMut::with_capacity(usize::try_from(len).unwrap_or(0));
        for b in b0..=b1 {
            let (blk, _) = c.blocks.get(&b).ok_or_else(|| short(b * bs))?;
            let s = offset.max(b * bs) - b * bs;
            let e = end.min((b + 1) * bs) - b * bs;
            if e > blk.len() as u64 {
                return Err(short(b * bs + blk.len() as u64));
            }
            out.extend_from_slice(&slice_of(blk, s, e - s));
        }
        Ok(out.freeze())
    }
}
