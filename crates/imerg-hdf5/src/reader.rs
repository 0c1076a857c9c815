//! Ranged reads: the [`RangeReader`] trait (one implementation per storage), an in-memory and a
//! local-file implementation, and the per-granule [`Fetcher`] that every parser goes through.
//!
//! The fetcher keeps a bounded block cache (aligned blocks of [`ReadOptions::block_size`]),
//! merges the missing blocks of one read into one GET, fetches a block only once even when
//! several reads want it at the same time (the others wait for it), and accounts for three
//! costs: GET requests, bytes fetched and *dependent round trips*. Round trips are counted as the
//! reads were executed: the first read (and the tail read beside it) is at depth 1; a GET issued
//! by a read whose inputs were available at depth `d` is at depth `d + 1`; data found in the
//! cache, or waited for while another read fetched it, is available at the depth it arrived
//! at. The final depth is the length of the longest chain of requests that each waited for the
//! one before, which is what a server's log shows (services/imerg-ingest/tests/ranged.rs
//! checks this against a counting proxy). Layout hints ([`LayoutHints`]) let a granule's
//! reads start with the blocks the previous granule of the same producer needed.

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

    /// The object's size, when known: up front (a local file, a size from the notification) or
    /// learnt from the first read's response (an S3 `Content-Range`).
    fn size_hint(&self) -> Option<u64> {
        None
    }

    /// Reads the last `len` bytes (the whole object if it is shorter): returns their offset and
    /// the bytes. Storage that can ask for a suffix (an HTTP `Range: bytes=-N`) does so without
    /// knowing the size, so the tail read can share the first read's round trip.
    async fn read_suffix(&self, len: u64) -> Result<(u64, Bytes)> {
        let size = self.size_hint().ok_or_else(|| {
            Hdf5Error::Unsupported("a suffix read needs the object's size".into())
        })?;
        let start = size.saturating_sub(len);
        Ok((start, self.read(start, size - start).await?))
    }

    /// What the storage said about the object (size and version), once known.
    fn observed(&self) -> Option<ObjectMeta> {
        self.size_hint().map(|size| ObjectMeta {
            size,
            version: None,
            modified_unix_nanos: None,
        })
    }
}

/// An object's size and version as its storage reported them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    /// The version the reads were pinned to (an ETag), if the storage has one.
    pub version: Option<String>,
    /// Last modification, nanoseconds since the Unix epoch.
    pub modified_unix_nanos: Option<i64>,
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

/// Bytes fetched with a structure's fixed-size head so that its body (an object header's
/// messages, a fixed or extensible array's first block) usually comes in the same request.
pub(crate) const AHEAD_HEADER: u64 = 1024;
/// The same for B-tree and symbol-table nodes, whose entries follow a short head (a v1 chunk
/// B-tree leaf of IMERG's 25 chunks is about 1.3 KB).
pub(crate) const AHEAD_NODE: u64 = 2048;

/// Tuning and safety limits of one granule read.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Size of the first read, from offset 0 (superblock and, usually, the root group).
    pub first_read: u64,
    /// Bytes read from the end of the object together with the first read, in the same round
    /// trip (0: none), through [`RangeReader::read_suffix`]. libhdf5 writes metadata that changes
    /// at close (B-tree nodes, heaps, grown object headers) near the end of the file.
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
    /// Where earlier objects of the same producer kept the metadata needed after the first
    /// read: fetched right after it, concurrently with the parse (None: no hints).
    pub hints: Option<Arc<LayoutHints>>,
    /// Most bytes fetched on hints per object.
    pub max_hinted_bytes: u64,
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
            hints: None,
            max_hinted_bytes: 512 * 1024,
        }
    }
}

/// Layout hints: the metadata ranges an object of one producer needed beyond its first read,
/// remembered from the last object read (offsets in its first half from the start, the rest
/// from the end, as libhdf5 puts metadata written at close at the end). Files of one producer
/// share their layout, so the next object's reads can start one round trip early: the hinted
/// blocks are fetched as soon as the object's size is known, concurrently with the parse, and
/// the parse finds them in the cache. A wrong hint costs bytes only: hinted blocks are real
/// bytes of the object being read.
#[derive(Debug, Default)]
pub struct LayoutHints {
    ranges: Mutex<Vec<HintRange>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HintRange {
    /// Offset from the start of the object, length.
    FromStart(u64, u64),
    /// Distance of its start from the end of the object, length.
    FromEnd(u64, u64),
}

impl LayoutHints {
    /// Most ranges remembered.
    const MAX_RANGES: usize = 256;

    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers what the read of an object of `size` bytes needed beyond `skip` (its first
    /// read) and its tail read, from its [`FetchStats::structure_reads`].
    pub fn learn(&self, stats: &FetchStats, size: u64, skip: u64, tail: u64) {
        let tail_start = size.saturating_sub(tail);
        let mut out: Vec<HintRange> = stats
            .structure_reads
            .iter()
            .filter(|(o, l)| o.saturating_add(*l) > skip && (tail == 0 || *o < tail_start))
            .filter(|(o, l)| o.saturating_add(*l) <= size)
            .map(|&(o, l)| {
                if o < size / 2 {
                    HintRange::FromStart(o, l)
                } else {
                    HintRange::FromEnd(size - o, l)
                }
            })
            .collect();
        out.sort_by_key(|r| match r {
            HintRange::FromStart(o, _) => (0, *o),
            HintRange::FromEnd(d, _) => (1, *d),
        });
        out.dedup();
        out.truncate(Self::MAX_RANGES);
        if let Ok(mut r) = self.ranges.lock() {
            *r = out;
        }
    }

    /// The hinted ranges for an object of `size` bytes, absolute, within it.
    fn ranges_for(&self, size: u64) -> Vec<(u64, u64)> {
        let Ok(r) = self.ranges.lock() else {
            return Vec::new();
        };
        r.iter()
            .filter_map(|h| match *h {
                HintRange::FromStart(o, l) => Some((o, l)),
                HintRange::FromEnd(d, l) => size.checked_sub(d).map(|o| (o, l)),
            })
            .filter(|(o, l)| o.saturating_add(*l) <= size && *l > 0)
            .collect()
    }

    /// Whether anything was learnt yet.
    pub fn is_empty(&self) -> bool {
        self.ranges.lock().map_or(true, |r| r.is_empty())
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
    /// Blocks being fetched, with the reads waiting for them.
    inflight: HashMap<u64, Vec<futures::channel::oneshot::Sender<()>>>,
    order: VecDeque<u64>,
    bytes: u64,
}

/// Blocks one read is fetching: removed from the in-flight set when the read ends, however it
/// ends, which wakes the reads waiting for them (their senders are dropped).
struct Inflight<'a> {
    cache: &'a Mutex<Cache>,
    blocks: &'a [u64],
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        if let Ok(mut c) = self.cache.lock() {
            for b in self.blocks {
                c.inflight.remove(b);
            }
        }
    }
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

    /// The first read: `first_read` bytes from offset 0 and, concurrently, the last `tail_read`
    /// bytes, both at depth 1. Returns the head (shorter if the object is). Afterwards the end of
    /// the file is the object's size if the reader learnt it.
    pub(crate) async fn first(&self) -> Result<Bytes> {
        let len = self.opts.first_read.max(self.opts.block_size);
        let want_tail =
            self.opts.tail_read > 0 && self.reader.size_hint().is_none_or(|size| size > len);
        let head = self.get(0, len, 1);
        let data = if want_tail {
            let tail = async {
                let (start, data) = self.reader.read_suffix(self.opts.tail_read).await?;
                self.count(start, data.len() as u64, 1);
                Ok::<_, Hdf5Error>((start, data))
            };
            let (data, (start, t)) = futures::future::try_join(head, tail).await?;
            self.insert(start, &t, 1);
            data
        } else {
            head.await?
        };
        self.insert(0, &data, 1);
        if let Some(size) = self.reader.size_hint() {
            self.set_eof(size);
        }
        Ok(data)
    }

    /// Starts fetching the blocks the layout hints name (at depth 2, once the first read told
    /// the object's size): they are marked in flight at once, so reads issued meanwhile wait for
    /// them instead of fetching them again. The returned future does the GETs; run it
    /// concurrently with the parse. Failures are ignored (the parse then reads for itself).
    pub(crate) fn prefetch_hints(&self) -> impl std::future::Future<Output = ()> + '_ {
        let mut owned: Vec<u64> = Vec::new();
        if let (Some(h), Some(size)) = (&self.opts.hints, self.reader.size_hint()) {
            let bs = self.opts.block_size.max(1);
            let mut blocks: Vec<u64> = h
                .ranges_for(size.min(self.eof()))
                .into_iter()
                .flat_map(|(o, l)| (o / bs)..=((o + l - 1) / bs))
                .collect();
            blocks.sort_unstable();
            blocks.dedup();
            let budget = self.opts.max_hinted_bytes / bs;
            if let Ok(mut c) = self.cache.lock() {
                for b in blocks {
                    if owned.len() as u64 >= budget {
                        break;
                    }
                    if c.blocks.contains_key(&b) || c.inflight.contains_key(&b) {
                        continue;
                    }
                    c.inflight.insert(b, Vec::new());
                    owned.push(b);
                }
            }
        }
        async move {
            // Failures are left to the parse, which then reads for itself.
            let _ = self.fetch_blocks(&owned, 2).await;
        }
    }

    /// Fetches `blocks` (sorted, already marked in flight by the caller), one GET per run of
    /// contiguous blocks, concurrently, at `depth`, and caches what arrives. However it ends
    /// (done, failed or dropped), the blocks stop being in flight and the reads waiting for them
    /// wake up. Returns the first failure.
    async fn fetch_blocks(&self, blocks: &[u64], depth: u32) -> Result<()> {
        let _inflight = Inflight {
            cache: &self.cache,
            blocks,
        };
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &b in blocks {
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == b => *last = b,
                _ => runs.push((b, b)),
            }
        }
        let (bs, eof) = (self.opts.block_size.max(1), self.eof());
        let gets = runs.iter().map(|(first, last)| {
            let start = first * bs;
            let stop = ((last + 1) * bs).min(eof);
            async move {
                (
                    start,
                    self.get(start, stop.saturating_sub(start), depth).await,
                )
            }
        });
        let mut outcome = Ok(());
        for (start, got) in futures::future::join_all(gets).await {
            match got {
                Ok(data) => self.insert(start, &data, depth),
                Err(e) if outcome.is_ok() => outcome = Err(e),
                Err(_) => {}
            }
        }
        outcome
    }

    async fn get(&self, offset: u64, len: u64, depth: u32) -> Result<Bytes> {
        let data = self.reader.read(offset, len).await?;
        self.count(offset, data.len() as u64, depth);
        Ok(data)
    }

    fn count(&self, offset: u64, len: u64, depth: u32) {
        if let Ok(mut s) = self.stats.lock() {
            s.gets += 1;
            s.bytes += len;
            s.round_trips = s.round_trips.max(depth);
            s.requests.push(GetRecord { offset, len, depth });
        }
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
        self.read_ahead(depth, what, offset, len, 0).await
    }

    /// [`Self::read`], fetching at least `ahead` bytes from `offset` (up to the end of the file)
    /// in the same request: for a structure's fixed-size head whose variable-size body follows
    /// it, so that the body does not cost another round trip.
    pub(crate) async fn read_ahead(
        &self,
        depth: &mut u32,
        what: &str,
        offset: u64,
        len: u64,
        ahead: u64,
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
        let fetch_end = end.max(offset.saturating_add(ahead).min(eof));
        let (b0, b1) = (offset / bs, (fetch_end - 1) / bs);
        let needed_last = (end - 1) / bs;
        let next = *depth + 1;
        // Up to two passes: blocks another read was already fetching are waited for, and
        // fetched here only if that read failed.
        for _pass in 0..2 {
            let mut missing = Vec::new();
            let mut waits = Vec::new();
            {
                let mut c = self
                    .cache
                    .lock()
                    .map_err(|_| Hdf5Error::malformed("cache", "poisoned lock"))?;
                for b in b0..=b1 {
                    if c.blocks.contains_key(&b) {
                        continue;
                    }
                    match c.inflight.get_mut(&b) {
                        // Read-ahead blocks are not worth waiting for.
                        Some(waiters) if b <= needed_last => {
                            let (tx, rx) = futures::channel::oneshot::channel::<()>();
                            waiters.push(tx);
                            waits.push(rx);
                        }
                        Some(_) => {}
                        None => {
                            c.inflight.insert(b, Vec::new());
                            missing.push(b);
                        }
                    }
                }
            }
            if !missing.is_empty() {
                self.fetch_blocks(&missing, next).await?;
            }
            for rx in waits {
                let _ = rx.await;
            }
            let complete = self
                .cache
                .lock()
                .is_ok_and(|c| (b0..=needed_last).all(|b| c.blocks.contains_key(&b)));
            if complete {
                break;
            }
        }
        // Available once the last of its blocks is, and never before the read was issued.
        let mut avail = *depth;
        {
            let c = self
                .cache
                .lock()
                .map_err(|_| Hdf5Error::malformed("cache", "poisoned lock"))?;
            for b in b0..=needed_last {
                if let Some((_, ready)) = c.blocks.get(&b) {
                    avail = avail.max(*ready);
                }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A reader whose GETs take one scheduling turn (like a network request), so that reads
    /// issued together overlap.
    #[derive(Debug)]
    struct Slow(MemReader);

    #[async_trait]
    impl RangeReader for Slow {
        async fn read(&self, offset: u64, len: u64) -> Result<Bytes> {
            let mut yielded = false;
            futures::future::poll_fn(|cx| {
                if yielded {
                    std::task::Poll::Ready(())
                } else {
                    yielded = true;
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                }
            })
            .await;
            self.0.read(offset, len).await
        }

        fn size_hint(&self) -> Option<u64> {
            self.0.size_hint()
        }
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    fn opts() -> ReadOptions {
        ReadOptions {
            first_read: 4096,
            block_size: 4096,
            ..ReadOptions::default()
        }
    }

    #[test]
    fn a_block_wanted_by_two_reads_at_once_is_fetched_once() {
        let reader = Arc::new(Slow(MemReader::new(data(64 * 1024))));
        let f = Fetcher::new(reader.clone(), opts());
        futures::executor::block_on(async {
            f.first().await.unwrap();
            let (mut d1, mut d2) = (1, 1);
            let (a, b) = futures::future::join(
                f.read(&mut d1, "a", 20_000, 100),
                f.read(&mut d2, "b", 20_100, 100),
            )
            .await;
            assert_eq!(a.unwrap()[..], data(64 * 1024)[20_000..20_100]);
            assert_eq!(b.unwrap()[..], data(64 * 1024)[20_100..20_200]);
            // Both available after the same single round trip.
            assert_eq!((d1, d2), (2, 2));
        });
        let s = f.stats();
        assert_eq!(s.gets, 2, "{:?}", s.requests);
        assert_eq!(reader.0.counts().0, 2);
        assert_eq!(s.round_trips, 2);
    }

    #[test]
    fn cached_data_is_available_when_it_arrived_not_earlier() {
        let f = Fetcher::new(Arc::new(MemReader::new(data(64 * 1024))), opts());
        futures::executor::block_on(async {
            f.first().await.unwrap();
            let mut deep = 3;
            f.read(&mut deep, "late", 30_000, 10).await.unwrap();
            assert_eq!(deep, 4);
            // A read issued at depth 1 finds the block, but only as it arrived (depth 4).
            let mut d = 1;
            f.read(&mut d, "cached", 30_010, 10).await.unwrap();
            assert_eq!(d, 4);
        });
    }

    #[test]
    fn read_ahead_fetches_the_body_with_the_head() {
        let f = Fetcher::new(Arc::new(MemReader::new(data(64 * 1024))), opts());
        futures::executor::block_on(async {
            f.first().await.unwrap();
            let mut d = 1;
            // A 16-byte head 40 bytes before a block boundary; 1 KiB ahead takes the next block.
            f.read_ahead(&mut d, "head", 8192 - 40, 16, 1024)
                .await
                .unwrap();
            let mut d2 = d;
            f.read(&mut d2, "body", 8192 - 24, 600).await.unwrap();
            assert_eq!((d, d2), (2, 2));
        });
        assert_eq!(f.stats().gets, 2);
    }

    #[test]
    fn the_tail_read_shares_the_first_round_trip_and_tells_the_size() {
        #[derive(Debug)]
        struct NoSizeUntilRead {
            inner: MemReader,
            seen: std::sync::OnceLock<u64>,
        }
        #[async_trait]
        impl RangeReader for NoSizeUntilRead {
            async fn read(&self, offset: u64, len: u64) -> Result<Bytes> {
                let _ = self.seen.set(self.inner.size_hint().unwrap());
                self.inner.read(offset, len).await
            }
            async fn read_suffix(&self, len: u64) -> Result<(u64, Bytes)> {
                let size = self.inner.size_hint().unwrap();
                let _ = self.seen.set(size);
                let start = size.saturating_sub(len);
                Ok((start, self.inner.read(start, len).await?))
            }
            fn size_hint(&self) -> Option<u64> {
                self.seen.get().copied()
            }
        }
        let reader = Arc::new(NoSizeUntilRead {
            inner: MemReader::new(data(100_000)),
            seen: std::sync::OnceLock::new(),
        });
        let f = Fetcher::new(
            reader,
            ReadOptions {
                tail_read: 8192,
                ..opts()
            },
        );
        assert_eq!(f.eof(), u64::MAX);
        futures::executor::block_on(async {
            f.first().await.unwrap();
            assert_eq!(f.eof(), 100_000);
            let mut d = 1;
            f.read(&mut d, "near the end", 99_000, 500).await.unwrap();
            assert_eq!(d, 1, "the tail read already held it");
        });
        let s = f.stats();
        assert_eq!((s.gets, s.round_trips), (2, 1));
    }

    #[test]
    fn layout_hints_fetch_what_the_previous_object_needed_one_round_trip_early() {
        let hints = Arc::new(LayoutHints::new());
        let o = ReadOptions {
            hints: Some(hints.clone()),
            ..opts()
        };
        // A chain: a structure at 20 000 points to one near the end (relative to the end).
        let walk = |size: usize| {
            let f = Fetcher::new(Arc::new(MemReader::new(data(size))), o.clone());
            futures::executor::block_on(async {
                f.first().await.unwrap();
                let ((), d) = futures::future::join(f.prefetch_hints(), async {
                    let mut d = 1;
                    f.read(&mut d, "first", 20_000, 64).await.unwrap();
                    f.read(&mut d, "second", size as u64 - 3_000, 64)
                        .await
                        .unwrap();
                    d
                })
                .await;
                (d, f.stats())
            })
        };
        let (d, stats) = walk(80_000);
        assert_eq!(d, 3);
        assert!(hints.is_empty());
        hints.learn(&stats, 80_000, 4096, 0);
        assert!(!hints.is_empty());
        // The next object is longer: its end-relative structure moved with its end.
        let (d, stats) = walk(90_000);
        assert_eq!(d, 2, "{:?}", stats.requests);
        assert_eq!(stats.round_trips, 2);
    }
}
