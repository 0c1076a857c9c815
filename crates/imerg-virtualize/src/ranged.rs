//! The ranged path: a granule's metadata read with byte-range requests by the pure-Rust reader
//! (imerg-hdf5), its coordinate values read and decoded from their own (contiguous, compact or
//! chunked + deflate/shuffle) storage, then fed to the same builder as the libhdf5 path, so both
//! give the same [`GranuleRefs`] or the same error.
//!
//! Fallback contract: [`VirtualizeError::TooScattered`] (the read would cost more round trips or
//! bytes than [`RangedOptions`] allows) and [`VirtualizeError::RangedUnsupported`] (a format
//! feature the pure reader does not implement, or a failed range read) mean "read the whole
//! object with [`crate::virtualize_bytes_blocking`] instead"; see
//! [`VirtualizeError::falls_back`]. Every other error is the same verdict, with the same reason,
//! as the whole-object path.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use imerg_catalog::{GranuleId, ProductProfile};
use imerg_hdf5::{
    AttrValue, Attribute, ByteOrder, DatasetInfo, Datatype, FetchStats, FillDefined, FilterKind,
    Hdf5Error, Hdf5File, LinkTarget, RangeReader, ReadOptions, StorageLayout,
};
use imerg_refs::{FillValue, GranuleRefs, SourceObject};
use serde_json::{Map, Value, json};

use crate::VirtualizeError;
use crate::attrs::{RESERVED, float_json, numbers, strings};
use crate::build::{
    FilterInfo, GranuleSource, GroupSource, Storage, StoredChunk, TypeInfo, VariableSource,
    build_granule,
};

/// The coordinates whose values the builder reads.
const COORDINATES: [&str; 6] = ["lon", "lat", "lon_bnds", "lat_bnds", "time", "time_bnds"];

/// Most elements of one coordinate variable the ranged path decodes.
const MAX_COORD_ELEMENTS: u64 = 1 << 22;

/// How the ranged path reads, and when it gives up in favour of the whole object.
#[derive(Debug, Clone)]
pub struct RangedOptions {
    /// The metadata reader's first read, block size and safety limits.
    pub read: ReadOptions,
    /// Most dependent round trips (metadata, then coordinate values) before giving up.
    pub max_round_trips: u32,
    /// Most bytes fetched, as a fraction of the object's size, before giving up.
    pub max_fetched_fraction: f64,
}

impl Default for RangedOptions {
    fn default() -> Self {
        Self {
            read: ReadOptions::default(),
            max_round_trips: 8,
            max_fetched_fraction: 0.5,
        }
    }
}

/// A reader that refuses to fetch more than a fraction of the object (so a scattered granule
/// stops early). The budget applies once the object's size is known (after the first read).
#[derive(Debug)]
struct BudgetReader {
    inner: Arc<dyn RangeReader>,
    /// Fraction of the object that may be fetched; 1.0 or more: no limit.
    fraction: f64,
    /// The size to assume when the storage does not say (from the notification).
    size: Option<u64>,
    wanted: AtomicU64,
    exceeded: AtomicBool,
}

impl BudgetReader {
    fn size(&self) -> Option<u64> {
        self.inner.size_hint().or(self.size)
    }

    fn budget(&self) -> u64 {
        match self.size() {
            // Rounded down; the fraction is a configuration value, not file data.
            Some(size) if self.fraction < 1.0 => (self.fraction.max(0.0) * size as f64) as u64,
            _ => u64::MAX,
        }
    }

    fn take(&self, offset: u64, len: u64) -> imerg_hdf5::Result<()> {
        let wanted = self
            .wanted
            .fetch_add(len, Ordering::Relaxed)
            .saturating_add(len);
        let budget = self.budget();
        if wanted > budget {
            self.exceeded.store(true, Ordering::Relaxed);
            return Err(Hdf5Error::Io {
                offset,
                len,
                detail: format!("byte budget of {budget} exceeded"),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl RangeReader for BudgetReader {
    async fn read(&self, offset: u64, len: u64) -> imerg_hdf5::Result<bytes::Bytes> {
        self.take(offset, len)?;
        self.inner.read(offset, len).await
    }

    async fn read_suffix(&self, len: u64) -> imerg_hdf5::Result<(u64, bytes::Bytes)> {
        self.take(u64::MAX, len)?;
        self.inner.read_suffix(len).await
    }

    fn size_hint(&self) -> Option<u64> {
        self.size()
    }

    fn observed(&self) -> Option<imerg_hdf5::ObjectMeta> {
        self.inner.observed()
    }
}

/// Virtualizes a granule from byte-range reads of its object: the same [`GranuleRefs`] as
/// [`crate::virtualize_bytes`] on the whole object, plus what the reads cost.
///
/// The object's size comes from the reader's size hint, else from `object.size`. Errors
/// for which [`VirtualizeError::falls_back`] is true mean: read the whole object instead.
pub async fn virtualize_ranged(
    reader: Arc<dyn RangeReader>,
    id: GranuleId,
    object: SourceObject,
    profile: Arc<ProductProfile>,
    opts: &RangedOptions,
) -> Result<(GranuleRefs, FetchStats), VirtualizeError> {
    let key = id.key.clone();
    let budget_reader = Arc::new(BudgetReader {
        inner: reader,
        fraction: opts.max_fetched_fraction,
        size: (object.size > 0).then_some(object.size),
        wanted: AtomicU64::new(0),
        exceeded: AtomicBool::new(false),
    });
    let over_budget = || budget_reader.exceeded.load(Ordering::Relaxed);
    let opened = Hdf5File::open(budget_reader.clone(), opts.read.clone()).await;
    // The object's size and version: from the first read's response where the storage gives
    // them (no HEAD request first), else from what the caller knew.
    let mut object = object;
    if let Some(seen) = budget_reader.observed() {
        object.size = seen.size;
        if seen.version.is_some() {
            object.etag = seen.version;
        }
        if let Some(ns) = seen.modified_unix_nanos {
            object.last_modified = Some(chrono::DateTime::from_timestamp_nanos(ns));
        }
    }
    let size = object.size;
    let scattered = |round_trips: u32| VirtualizeError::TooScattered {
        key: key.clone(),
        round_trips,
        bytes: budget_reader.wanted.load(Ordering::Relaxed),
        size,
    };
    let ctx = ErrCtx {
        key: key.clone(),
        size,
    };
    let file = match opened {
        Ok(f) => f,
        Err(_) if over_budget() => return Err(scattered(1)),
        Err(e) => return Err(ctx.map(&e, &key)),
    };
    if size == 0 {
        return Err(VirtualizeError::RangedUnsupported {
            key: key.clone(),
            detail: "the object's size is unknown".into(),
        });
    }
    // The parse, and concurrently the blocks earlier granules needed after their first read.
    let prefetch = file.prefetch_hints();
    let parse = read_group(&file, &profile, &ctx);
    let (group, ()) = futures::future::join(parse, prefetch).await;
    let group = match group {
        Ok(g) => g,
        Err(_) if over_budget() => return Err(scattered(file.stats().round_trips)),
        Err(e) => return Err(e),
    };
    let stats = file.stats();
    let fetched_too_much = (stats.bytes as f64) > opts.max_fetched_fraction * size as f64;
    if over_budget() || stats.round_trips > opts.max_round_trips || fetched_too_much {
        return Err(scattered(stats.round_trips));
    }
    let granule = RangedGranule {
        group_name: profile.layout.group.clone(),
        group,
    };
    let refs = build_granule(&granule, size, &id, &object, &profile)?;
    if let Some(hints) = &opts.read.hints {
        hints.learn(&stats, size, opts.read.first_read, opts.read.tail_read);
    }
    Ok((refs, stats))
}

/// The product's group: its links, the datasets the builder needs, and the coordinates'
/// values, each dataset in its own chain of reads (a coordinate's values are read as soon as its
/// own chunk index is known). `None` if the file has no such group.
async fn read_group(
    file: &Hdf5File,
    profile: &ProductProfile,
    ctx: &ErrCtx,
) -> Result<Option<RangedGroup>, VirtualizeError> {
    let group_path = format!("/{}", profile.layout.group.trim_matches('/'));
    let links = match file.links(&group_path).await {
        Ok(links) => links,
        Err(Hdf5Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(ctx.map(&e, &profile.layout.group)),
    };
    // Every link counts as present (as for libhdf5); only hard links are read, so a soft or
    // external link the builder asks for falls back (`RangedUnsupported`).
    let names: Vec<String> = links.iter().map(|l| l.name.clone()).collect();
    let wanted: Vec<&str> = COORDINATES
        .iter()
        .copied()
        .chain(profile.layout.variables.iter().map(|v| v.name.as_str()))
        .filter(|n| {
            links
                .iter()
                .any(|l| l.name == *n && matches!(l.target, LinkTarget::Hard(_)))
        })
        .collect();
    let read = futures::future::join_all(wanted.iter().map(|name| {
        let path = format!("{group_path}/{name}");
        async move {
            let info = file.dataset(&path).await;
            let values = match &info {
                Ok(i) if COORDINATES.contains(name) => {
                    Some(read_values(file, i, i.located_at).await)
                }
                _ => None,
            };
            (name.to_string(), info, values)
        }
    }))
    .await;
    let mut datasets: BTreeMap<String, imerg_hdf5::Result<DatasetInfo>> = BTreeMap::new();
    let mut data: BTreeMap<String, Result<Vec<u8>, DataError>> = BTreeMap::new();
    for (name, info, values) in read {
        if let Some(v) = values {
            data.insert(name.clone(), v);
        }
        datasets.insert(name, info);
    }
    Ok(Some(RangedGroup {
        ctx: ctx.clone(),
        links: names,
        datasets,
        data,
    }))
}

/// What error mapping needs: the key and the object's size.
#[derive(Debug, Clone)]
struct ErrCtx {
    key: String,
    size: u64,
}

impl ErrCtx {
    /// The verdict for a reader error: bad input keeps the whole-object path's reason,
    /// anything the pure reader cannot handle falls back.
    fn map(&self, e: &Hdf5Error, context: &str) -> VirtualizeError {
        let key = self.key.clone();
        match e {
            Hdf5Error::NotHdf5 { .. } => VirtualizeError::NotHdf5 {
                key,
                size: self.size,
            },
            Hdf5Error::Truncated { .. } => VirtualizeError::Truncated {
                key,
                size: self.size,
                detail: e.to_string(),
            },
            Hdf5Error::WrongObject { .. } => VirtualizeError::Hdf5 {
                key,
                context: context.to_string(),
                detail: e.to_string(),
            },
            _ => VirtualizeError::RangedUnsupported {
                key,
                detail: format!("{context}: {e}"),
            },
        }
    }
}

/// Why a coordinate's values could not be read.
#[derive(Debug)]
enum DataError {
    Read(Hdf5Error),
    Unsupported(String),
}

struct RangedGranule {
    group_name: String,
    group: Option<RangedGroup>,
}

impl GranuleSource for RangedGranule {
    fn group(&self, name: &str) -> Result<Option<Box<dyn GroupSource + '_>>, VirtualizeError> {
        if name != self.group_name {
            return Ok(None);
        }
        Ok(self
            .group
            .as_ref()
            .map(|g| Box::new(g) as Box<dyn GroupSource + '_>))
    }
}

struct RangedGroup {
    ctx: ErrCtx,
    links: Vec<String>,
    datasets: BTreeMap<String, imerg_hdf5::Result<DatasetInfo>>,
    data: BTreeMap<String, Result<Vec<u8>, DataError>>,
}

impl GroupSource for &RangedGroup {
    fn has(&self, name: &str) -> bool {
        self.links.iter().any(|l| l == name)
    }

    fn dataset(&self, name: &str) -> Result<Box<dyn VariableSource + '_>, VirtualizeError> {
        match self.datasets.get_key_value(name) {
            Some((name, Ok(info))) => Ok(Box::new(RangedVar {
                ctx: &self.ctx,
                name,
                info,
                data: self.data.get(name),
            })),
            Some((name, Err(e))) => Err(self.ctx.map(e, name)),
            None => Err(VirtualizeError::RangedUnsupported {
                key: self.ctx.key.clone(),
                detail: format!("{name}: not a hard link, not read"),
            }),
        }
    }
}

struct RangedVar<'a> {
    ctx: &'a ErrCtx,
    name: &'a str,
    info: &'a DatasetInfo,
    data: Option<&'a Result<Vec<u8>, DataError>>,
}

/// libhdf5's type descriptor, as hdf5-metno prints it (`Float(U4)`, `Integer(U2)`, ...).
fn describe(dt: &Datatype) -> String {
    match dt {
        Datatype::Integer {
            size, signed: true, ..
        } => format!("Integer(U{size})"),
        Datatype::Integer { size, .. } => format!("Unsigned(U{size})"),
        Datatype::Float { size, .. } => format!("Float(U{size})"),
        Datatype::FixedString { size, utf8: false } => format!("FixedAscii({size})"),
        Datatype::FixedString { size, utf8: true } => format!("FixedUnicode({size})"),
        Datatype::VarLenString { utf8: false } => "VarLenAscii".into(),
        Datatype::VarLenString { utf8: true } => "VarLenUnicode".into(),
        Datatype::Other { class, size } => format!("class {class} ({size} bytes)"),
    }
}

/// One element of a numeric type: as a float and as an integer (HDF5's conversions).
fn element(dt: &Datatype, b: &[u8]) -> Option<(f64, i64)> {
    let (size, order) = match dt {
        Datatype::Integer { size, order, .. } | Datatype::Float { size, order } => {
            (usize::try_from(*size).ok()?, *order)
        }
        _ => return None,
    };
    let b = b.get(..size)?;
    let mut le = [0u8; 8];
    for (i, x) in b.iter().enumerate() {
        let at = if order == ByteOrder::Big {
            size - 1 - i
        } else {
            i
        };
        *le.get_mut(at)? = *x;
    }
    Some(match dt {
        Datatype::Float { size: 4, .. } => {
            let v = f64::from(f32::from_le_bytes([le[0], le[1], le[2], le[3]]));
            (v, v as i64)
        }
        Datatype::Float { size: 8, .. } => {
            let v = f64::from_le_bytes(le);
            (v, v as i64)
        }
        Datatype::Integer { signed, .. } => {
            let bits = u32::try_from(size).ok()?.checked_mul(8)?;
            let raw = u64::from_le_bytes(le);
            if *signed && bits < 64 {
                let shift = 64 - bits;
                let v = ((raw << shift) as i64) >> shift;
                (v as f64, v)
            } else if *signed {
                (raw as i64 as f64, raw as i64)
            } else {
                (raw as f64, i64::try_from(raw).unwrap_or(i64::MAX))
            }
        }
        _ => return None,
    })
}

/// An attribute as JSON, exactly as [`crate::attrs`] shapes what libhdf5 returns.
fn attr_json(a: &Attribute) -> Option<Value> {
    let count = a
        .shape
        .iter()
        .try_fold(1u64, |n, d| n.checked_mul(*d))
        .unwrap_or(0);
    let scalar = a.shape.is_empty() || count == 1;
    Some(match &a.value {
        AttrValue::Strings(v) => {
            let fixed = matches!(a.dtype, Datatype::FixedString { .. });
            let v = v
                .iter()
                .map(|s| {
                    if fixed {
                        s.trim_end().to_string()
                    } else {
                        s.split('\0').next().unwrap_or_default().to_string()
                    }
                })
                .collect();
            strings(v, scalar)
        }
        AttrValue::Ints(v) => numbers(v.iter().map(|x| json!(x)).collect(), scalar),
        AttrValue::Uints(v) => numbers(
            v.iter()
                .map(|x| json!(i64::try_from(*x).unwrap_or(i64::MAX)))
                .collect(),
            scalar,
        ),
        AttrValue::Floats(v) => numbers(v.iter().copied().map(float_json).collect(), scalar),
        AttrValue::Unsupported(_) => return None,
    })
}

impl RangedVar<'_> {
    fn unsupported(&self, detail: impl std::fmt::Display) -> VirtualizeError {
        VirtualizeError::RangedUnsupported {
            key: self.ctx.key.clone(),
            detail: format!("{}: {detail}", self.name),
        }
    }

    fn hdf5(&self, detail: impl Into<String>) -> VirtualizeError {
        VirtualizeError::Hdf5 {
            key: self.ctx.key.clone(),
            context: self.name.to_string(),
            detail: detail.into(),
        }
    }

    fn values(&self) -> Result<&[u8], VirtualizeError> {
        match self.data {
            Some(Ok(v)) => Ok(v),
            Some(Err(DataError::Read(e))) => Err(self.ctx.map(e, self.name)),
            Some(Err(DataError::Unsupported(d))) => Err(self.unsupported(d)),
            None => Err(self.unsupported("values not read")),
        }
    }

    fn numbers(&self) -> Result<Vec<(f64, i64)>, VirtualizeError> {
        let size = usize::try_from(self.info.dtype.size()).unwrap_or(0).max(1);
        self.values()?
            .chunks_exact(size)
            .map(|b| {
                element(&self.info.dtype, b).ok_or_else(|| {
                    self.hdf5(format!(
                        "cannot convert {} to a number",
                        describe(&self.info.dtype)
                    ))
                })
            })
            .collect()
    }
}

impl VariableSource for RangedVar<'_> {
    fn shape(&self) -> Vec<u64> {
        self.info.shape.clone()
    }

    fn dtype(&self) -> Result<TypeInfo, VirtualizeError> {
        let dt = &self.info.dtype;
        Ok(TypeInfo {
            zarr: dt.zarr_name(),
            desc: describe(dt),
            big_endian: dt.byte_order() == Some(ByteOrder::Big),
            is_f32: matches!(dt, Datatype::Float { size: 4, .. }),
        })
    }

    fn storage(&self) -> Storage {
        match &self.info.layout {
            StorageLayout::Chunked { chunk, .. } => Storage::Chunked(chunk.clone()),
            StorageLayout::Compact { .. } => Storage::NotChunked("Compact"),
            StorageLayout::Contiguous { .. } => Storage::NotChunked("Contiguous"),
        }
    }

    fn filters(&self) -> Vec<FilterInfo> {
        self.info
            .filters
            .iter()
            .map(|f| match f.kind() {
                FilterKind::Shuffle { .. } => FilterInfo::Shuffle,
                FilterKind::Deflate { level } => FilterInfo::Deflate(level),
                FilterKind::Fletcher32 => FilterInfo::Fletcher32,
                FilterKind::Szip => FilterInfo::Szip,
                FilterKind::NBit => FilterInfo::NBit,
                FilterKind::ScaleOffset => FilterInfo::ScaleOffset,
                FilterKind::Other(id) => FilterInfo::User(i64::from(id)),
            })
            .collect()
    }

    fn fill_value(&self, as_float: bool) -> Result<Option<FillValue>, VirtualizeError> {
        let pick = |v: Option<(f64, i64)>| {
            if as_float {
                FillValue::Float(v.map_or(f64::NAN, |x| x.0))
            } else {
                FillValue::Int(v.map_or(0, |x| x.1))
            }
        };
        if let Some(a) = self.info.attribute("_FillValue") {
            let first = match &a.value {
                AttrValue::Floats(v) => v.first().map(|x| (*x, *x as i64)),
                AttrValue::Ints(v) => v.first().map(|x| (*x as f64, *x)),
                AttrValue::Uints(v) => v
                    .first()
                    .map(|x| (*x as f64, i64::try_from(*x).unwrap_or(i64::MAX))),
                other => {
                    return Err(self.hdf5(format!(
                        "_FillValue cannot be converted to a number: {other:?}"
                    )));
                }
            };
            return Ok(Some(pick(first)));
        }
        Ok(match self.info.fill_defined {
            FillDefined::Undefined => None,
            FillDefined::Default => Some(pick(Some((0.0, 0)))),
            FillDefined::User => {
                let bytes = self.info.fill_value.as_deref().unwrap_or_default();
                let v = element(&self.info.dtype, bytes)
                    .ok_or_else(|| self.unsupported("fill value of a non-numeric type"))?;
                Some(pick(Some(v)))
            }
        })
    }

    fn attributes(&self) -> Result<Map<String, Value>, VirtualizeError> {
        let mut out = Map::new();
        for a in &self.info.attributes {
            if RESERVED.contains(&a.name.as_str()) {
                continue;
            }
            if let Some(v) = attr_json(a) {
                out.insert(a.name.clone(), v);
            }
        }
        Ok(out)
    }

    fn string_attr(&self, name: &str) -> Result<Option<String>, VirtualizeError> {
        Ok(match self.info.attribute(name).and_then(attr_json) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        })
    }

    fn chunks(&self) -> Result<Vec<StoredChunk>, VirtualizeError> {
        Ok(self
            .info
            .chunks
            .iter()
            .map(|c| StoredChunk {
                offset: c.offset.clone(),
                addr: c.address,
                size: c.size,
                filter_mask: c.filter_mask,
            })
            .collect())
    }

    fn read_f32(&self) -> Result<Vec<f32>, VirtualizeError> {
        Ok(self.numbers()?.into_iter().map(|(f, _)| f as f32).collect())
    }

    fn read_i64(&self) -> Result<Vec<i64>, VirtualizeError> {
        Ok(self.numbers()?.into_iter().map(|(_, i)| i).collect())
    }
}

/// Reads and decodes all values of a dataset (element bytes in the file's byte order), as one
/// wave of reads issued after round trip `after` (when the dataset's chunks were located).
async fn read_values(
    file: &Hdf5File,
    info: &DatasetInfo,
    after: u32,
) -> Result<Vec<u8>, DataError> {
    let unsupported = |d: String| DataError::Unsupported(d);
    let es = u64::from(info.dtype.size());
    let n = info
        .shape
        .iter()
        .try_fold(1u64, |a, d| a.checked_mul(*d))
        .filter(|n| *n <= MAX_COORD_ELEMENTS)
        .ok_or_else(|| unsupported(format!("shape {:?} is too large", info.shape)))?;
    let total = n
        .checked_mul(es)
        .and_then(|t| usize::try_from(t).ok())
        .ok_or_else(|| unsupported("size overflows".into()))?;
    let es_usize = usize::try_from(es).map_err(|_| unsupported("element size".into()))?;
    // Unwritten elements read as the fill value (zeros by default), as libhdf5 returns them.
    let fill = match (&info.fill_value, info.fill_defined) {
        (Some(f), FillDefined::User) if f.len() == es_usize => f.clone(),
        _ => vec![0u8; es_usize],
    };
    match &info.layout {
        StorageLayout::Compact { data, .. } => data
            .get(..total)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| unsupported(format!("compact data holds {} bytes", data.len()))),
        StorageLayout::Contiguous { address: None, .. } => Ok(fill.repeat(total / es_usize.max(1))),
        StorageLayout::Contiguous {
            address: Some(a), ..
        } => {
            let (b, _) = file
                .read_data(*a, total as u64, after)
                .await
                .map_err(DataError::Read)?;
            Ok(b)
        }
        StorageLayout::Chunked { chunk, .. } => {
            let mut out = fill.repeat(total / es_usize.max(1));
            let chunk_elems = chunk
                .iter()
                .try_fold(1u64, |a, d| a.checked_mul(*d))
                .filter(|c| *c <= MAX_COORD_ELEMENTS)
                .ok_or_else(|| unsupported(format!("chunk shape {chunk:?} is too large")))?;
            let chunk_bytes = usize::try_from(chunk_elems.saturating_mul(es))
                .map_err(|_| unsupported("chunk size".into()))?;
            let reads = info
                .chunks
                .iter()
                .map(|c| file.read_data(c.address, c.size, after));
            let stored = futures::future::try_join_all(reads)
                .await
                .map_err(DataError::Read)?;
            for (c, (raw, _)) in info.chunks.iter().zip(stored) {
                let decoded = unfilter(info, raw, c.filter_mask, es_usize, chunk_bytes)
                    .map_err(unsupported)?;
                place(&mut out, &decoded, &info.shape, chunk, &c.offset, es_usize)
                    .map_err(unsupported)?;
            }
            Ok(out)
        }
    }
}

/// Undoes a chunk's filter pipeline (last filter first, skipping those its mask says were
/// skipped): deflate, shuffle and fletcher32.
fn unfilter(
    info: &DatasetInfo,
    mut data: Vec<u8>,
    mask: u32,
    es: usize,
    expected: usize,
) -> Result<Vec<u8>, String> {
    for (i, f) in info.filters.iter().enumerate().rev() {
        let skipped = u32::try_from(i)
            .ok()
            .and_then(|i| 1u32.checked_shl(i))
            .is_some_and(|bit| mask & bit != 0);
        if skipped {
            continue;
        }
        data = match f.kind() {
            FilterKind::Deflate { .. } => {
                let mut out = Vec::with_capacity(expected);
                let limit = u64::try_from(expected)
                    .unwrap_or(u64::MAX)
                    .saturating_add(1);
                flate2::read::ZlibDecoder::new(data.as_slice())
                    .take(limit)
                    .read_to_end(&mut out)
                    .map_err(|e| format!("deflate: {e}"))?;
                out
            }
            FilterKind::Shuffle { .. } => unshuffle(&data, es),
            FilterKind::Fletcher32 => {
                let keep = data.len().saturating_sub(4);
                data.truncate(keep);
                data
            }
            other => return Err(format!("cannot decode filter {other:?}")),
        };
    }
    if data.len() != expected {
        return Err(format!(
            "decoded chunk has {} bytes, expected {expected}",
            data.len()
        ));
    }
    Ok(data)
}

/// HDF5 shuffle, undone: byte `b` of element `i` is at `b * n + i`.
fn unshuffle(data: &[u8], es: usize) -> Vec<u8> {
    if es <= 1 {
        return data.to_vec();
    }
    let n = data.len() / es;
    let mut out = data.to_vec();
    for i in 0..n {
        for b in 0..es {
            if let (Some(dst), Some(src)) = (out.get_mut(i * es + b), data.get(b * n + i)) {
                *dst = *src;
            }
        }
    }
    out
}

/// Copies the in-bounds elements of a decoded chunk at element `offset` into `out` (row-major
/// over `shape`).
fn place(
    out: &mut [u8],
    decoded: &[u8],
    shape: &[u64],
    chunk: &[u64],
    offset: &[u64],
    es: usize,
) -> Result<(), String> {
    if chunk.len() != shape.len() || offset.len() != shape.len() {
        return Err(format!(
            "chunk {chunk:?} at {offset:?} does not match the shape {shape:?}"
        ));
    }
    let rank = shape.len();
    let mut idx = vec![0u64; rank];
    for (j, el) in decoded.chunks_exact(es).enumerate() {
        // Multi-index of element j within the chunk.
        let mut rest = j as u64;
        for d in (0..rank).rev() {
            let c = chunk.get(d).copied().unwrap_or(1).max(1);
            if let Some(x) = idx.get_mut(d) {
                *x = rest % c;
            }
            rest /= c;
        }
        let mut linear = 0u64;
        let mut inside = true;
        for d in 0..rank {
            let g = offset
                .get(d)
                .copied()
                .unwrap_or(0)
                .checked_add(idx.get(d).copied().unwrap_or(0));
            let s = shape.get(d).copied().unwrap_or(0);
            match g {
                Some(g) if g < s => linear = linear.saturating_mul(s).saturating_add(g),
                _ => {
                    inside = false;
                    break;
                }
            }
        }
        if !inside {
            continue;
        }
        let at = usize::try_from(linear)
            .ok()
            .and_then(|l| l.checked_mul(es))
            .ok_or_else(|| "element offset overflows".to_string())?;
        let dst = out
            .get_mut(at..at.saturating_add(es))
            .ok_or_else(|| "element outside the dataset".to_string())?;
        dst.copy_from_slice(el);
    }
    Ok(())
}
