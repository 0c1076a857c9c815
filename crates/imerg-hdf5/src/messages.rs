//! Decoders of the object-header messages a dataset or group description needs: datatype,
//! dataspace, data layout (v3, v4), filter pipeline (v1, v2), fill value (old and new), attribute
//! (v1-v3), link, link info, attribute info, symbol table. Each works on one message's bytes.

use crate::cursor::{Cur, Sizes};
use crate::error::{Hdf5Error, Result};

/// Byte order of a numeric datatype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    Little,
    Big,
}

/// An HDF5 datatype, as far as this reader distinguishes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datatype {
    Integer {
        size: u32,
        signed: bool,
        order: ByteOrder,
    },
    Float {
        size: u32,
        order: ByteOrder,
    },
    /// Fixed-length string of `size` bytes (`utf8`: character set is UTF-8, else ASCII).
    FixedString {
        size: u32,
        utf8: bool,
    },
    /// Variable-length string (data in the global heap).
    VarLenString {
        utf8: bool,
    },
    /// Any other class (compound, enum, reference, array, ...): reported, not decoded.
    Other {
        class: u8,
        size: u32,
    },
}

impl Datatype {
    /// Size of one element in the file.
    pub fn size(&self) -> u32 {
        match self {
            Self::Integer { size, .. }
            | Self::Float { size, .. }
            | Self::FixedString { size, .. }
            | Self::Other { size, .. } => *size,
            Self::VarLenString { .. } => 16,
        }
    }

    /// The Zarr v3 data type name of numeric types ("float32", "int16", ...).
    pub fn zarr_name(&self) -> Option<&'static str> {
        Some(match self {
            Self::Float { size: 4, .. } => "float32",
            Self::Float { size: 8, .. } => "float64",
            Self::Integer {
                size, signed: true, ..
            } => match size {
                1 => "int8",
                2 => "int16",
                4 => "int32",
                8 => "int64",
                _ => return None,
            },
            Self::Integer {
                size,
                signed: false,
                ..
            } => match size {
                1 => "uint8",
                2 => "uint16",
                4 => "uint32",
                8 => "uint64",
                _ => return None,
            },
            _ => return None,
        })
    }

    pub fn byte_order(&self) -> Option<ByteOrder> {
        match self {
            Self::Integer { order, .. } | Self::Float { order, .. } => Some(*order),
            _ => None,
        }
    }
}

pub(crate) fn parse_datatype(c: &mut Cur<'_>) -> Result<Datatype> {
    let cv = c.u8()?;
    let (class, version) = (cv & 0x0f, cv >> 4);
    if !(1..=5).contains(&version) {
        return Err(Hdf5Error::UnsupportedVersion {
            what: "datatype message",
            address: c.base,
            version,
        });
    }
    let b0 = c.u8()?;
    let _b1 = c.u8()?;
    let _b2 = c.u8()?;
    let size = c.u32()?;
    let order = if b0 & 1 == 1 {
        ByteOrder::Big
    } else {
        ByteOrder::Little
    };
    Ok(match class {
        0 => {
            c.skip(4)?; // bit offset, precision
            Datatype::Integer {
                size,
                signed: b0 & 0x08 != 0,
                order,
            }
        }
        1 => {
            if b0 & 0x40 != 0 {
                return Err(Hdf5Error::Unsupported(
                    "VAX floating-point byte order".into(),
                ));
            }
            c.skip(12)?;
            Datatype::Float { size, order }
        }
        3 => Datatype::FixedString {
            size,
            utf8: (b0 >> 4) & 0x0f == 1,
        },
        9 if b0 & 0x0f == 1 => Datatype::VarLenString {
            utf8: (_b1 & 0x0f) == 1,
        },
        other => Datatype::Other { class: other, size },
    })
}

/// A dataspace: current and maximum dimensions (`None` = unlimited).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dataspace {
    pub dims: Vec<u64>,
    pub max_dims: Vec<Option<u64>>,
    /// A null dataspace (no elements at all).
    pub null: bool,
}

impl Dataspace {
    /// Number of elements, refusing more than `limit`.
    pub fn elements(&self, limit: u64) -> Result<u64> {
        if self.null {
            return Ok(0);
        }
        let mut n: u64 = 1;
        for d in &self.dims {
            n = n.checked_mul(*d).ok_or(Hdf5Error::LimitExceeded {
                what: "dataspace elements",
                value: u64::MAX,
                limit,
            })?;
        }
        if n > limit {
            return Err(Hdf5Error::LimitExceeded {
                what: "dataspace elements",
                value: n,
                limit,
            });
        }
        Ok(n)
    }
}

const MAX_RANK: u8 = 32;

pub(crate) fn parse_dataspace(c: &mut Cur<'_>, s: Sizes) -> Result<Dataspace> {
    let version = c.u8()?;
    let rank = c.u8()?;
    let flags = c.u8()?;
    let mut null = false;
    match version {
        1 => {
            c.skip(5)?;
        }
        2 => {
            let kind = c.u8()?;
            null = kind == 2;
        }
        v => {
            return Err(Hdf5Error::UnsupportedVersion {
                what: "dataspace message",
                address: c.base,
                version: v,
            });
        }
    }
    if rank > MAX_RANK {
        return Err(Hdf5Error::LimitExceeded {
            what: "dataspace rank",
            value: u64::from(rank),
            limit: u64::from(MAX_RANK),
        });
    }
    let mut dims = Vec::with_capacity(usize::from(rank));
    for _ in 0..rank {
        dims.push(c.length(s)?);
    }
    let mut max_dims = Vec::with_capacity(usize::from(rank));
    for d in &dims {
        if flags & 1 != 0 {
            let m = c.length(s)?;
            let unlimited = m == u64::MAX || (s.length < 8 && m == (1u64 << (8 * s.length)) - 1);
            max_dims.push((!unlimited).then_some(m));
        } else {
            max_dims.push(Some(*d));
        }
    }
    Ok(Dataspace {
        dims,
        max_dims,
        null,
    })
}

/// How a chunked dataset indexes its chunks (layout message v3 implies a v1 B-tree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkIndex {
    BTreeV1 {
        address: Option<u64>,
    },
    SingleChunk {
        address: Option<u64>,
        /// (stored size, filter mask) of a filtered single chunk.
        filtered: Option<(u64, u32)>,
    },
    Implicit {
        address: Option<u64>,
    },
    FixedArray {
        address: Option<u64>,
        page_bits: u8,
    },
    ExtensibleArray {
        address: Option<u64>,
    },
    BTreeV2 {
        address: Option<u64>,
    },
}

impl ChunkIndex {
    /// Short name for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BTreeV1 { .. } => "btree-v1",
            Self::SingleChunk { .. } => "single-chunk",
            Self::Implicit { .. } => "implicit",
            Self::FixedArray { .. } => "fixed-array",
            Self::ExtensibleArray { .. } => "extensible-array",
            Self::BTreeV2 { .. } => "btree-v2",
        }
    }
}

/// Storage layout of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageLayout {
    Compact {
        size: u64,
        /// The raw data, stored in the layout message itself.
        data: Vec<u8>,
    },
    Contiguous {
        address: Option<u64>,
        size: u64,
    },
    Chunked {
        /// Chunk shape in elements (without the trailing element-size dimension).
        chunk: Vec<u64>,
        element_size: u32,
        index: ChunkIndex,
        /// Layout message version (3 or 4).
        version: u8,
    },
}

pub(crate) fn parse_layout(c: &mut Cur<'_>, s: Sizes) -> Result<StorageLayout> {
    let version = c.u8()?;
    if !(3..=5).contains(&version) {
        return Err(Hdf5Error::UnsupportedVersion {
            what: "data layout message",
            address: c.base,
            version,
        });
    }
    let class = c.u8()?;
    match class {
        0 => {
            let size = c.u16()?;
            let data = c.bytes(usize::from(size))?.to_vec();
            Ok(StorageLayout::Compact {
                size: u64::from(size),
                data,
            })
        }
        1 => {
            let address = c.addr(s)?;
            let size = c.length(s)?;
            Ok(StorageLayout::Contiguous { address, size })
        }
        2 if version == 3 => {
            let ndims = c.u8()?;
            if !(2..=MAX_RANK + 1).contains(&ndims) {
                return Err(Hdf5Error::malformed(
                    "data layout message",
                    format!("chunk dimensionality {ndims}"),
                ));
            }
            let address = c.addr(s)?;
            let mut dims = Vec::with_capacity(usize::from(ndims));
            for _ in 0..ndims {
                dims.push(u64::from(c.u32()?));
            }
            let element_size = dims.pop().unwrap_or(0) as u32;
            Ok(StorageLayout::Chunked {
                chunk: dims,
                element_size,
                index: ChunkIndex::BTreeV1 { address },
                version,
            })
        }
        2 => {
            let flags = c.u8()?;
            let ndims = c.u8()?;
            if !(2..=MAX_RANK + 1).contains(&ndims) {
                return Err(Hdf5Error::malformed(
                    "data layout message",
                    format!("chunk dimensionality {ndims}"),
                ));
            }
            let enc = usize::from(c.u8()?);
            if !(1..=8).contains(&enc) {
                return Err(Hdf5Error::malformed(
                    "data layout message",
                    format!("dimension size encoded in {enc} bytes"),
                ));
            }
            let mut dims = Vec::with_capacity(usize::from(ndims));
            for _ in 0..ndims {
                dims.push(c.uvar(enc)?);
            }
            let element_size = u32::try_from(dims.pop().unwrap_or(0)).map_err(|_| {
                Hdf5Error::malformed("data layout message", "element size over 4 GiB")
            })?;
            let kind = c.u8()?;
            let index = match kind {
                1 => {
                    let filtered = if flags & 0x02 != 0 {
                        let size = c.length(s)?;
                        let mask = c.u32()?;
                        Some((size, mask))
                    } else {
                        None
                    };
                    ChunkIndex::SingleChunk {
                        address: c.addr(s)?,
                        filtered,
                    }
                }
                2 => ChunkIndex::Implicit {
                    address: c.addr(s)?,
                },
                3 => {
                    let page_bits = c.u8()?;
                    ChunkIndex::FixedArray {
                        address: c.addr(s)?,
                        page_bits,
                    }
                }
                4 => {
                    c.skip(5)?;
                    ChunkIndex::ExtensibleArray {
                        address: c.addr(s)?,
                    }
                }
                5 => {
                    c.skip(6)?;
                    ChunkIndex::BTreeV2 {
                        address: c.addr(s)?,
                    }
                }
                k => {
                    return Err(Hdf5Error::malformed(
                        "data layout message",
                        format!("chunk index type {k}"),
                    ));
                }
            };
            Ok(StorageLayout::Chunked {
                chunk: dims,
                element_size,
                index,
                version,
            })
        }
        3 => Err(Hdf5Error::Unsupported(
            "virtual dataset (VDS) storage layout".into(),
        )),
        k => Err(Hdf5Error::malformed(
            "data layout message",
            format!("layout class {k}"),
        )),
    }
}

/// One filter of a pipeline, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub id: u16,
    pub name: Option<String>,
    pub flags: u16,
    pub client_data: Vec<u32>,
}

/// A filter, interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKind {
    Deflate { level: u32 },
    Shuffle { element_size: u32 },
    Fletcher32,
    Szip,
    NBit,
    ScaleOffset,
    Other(u16),
}

impl Filter {
    pub fn kind(&self) -> FilterKind {
        let first = self.client_data.first().copied();
        match self.id {
            1 => FilterKind::Deflate {
                level: first.unwrap_or(0),
            },
            2 => FilterKind::Shuffle {
                element_size: first.unwrap_or(0),
            },
            3 => FilterKind::Fletcher32,
            4 => FilterKind::Szip,
            5 => FilterKind::NBit,
            6 => FilterKind::ScaleOffset,
            other => FilterKind::Other(other),
        }
    }

    /// True if the filter is optional (its failure does not fail the write).
    pub fn optional(&self) -> bool {
        self.flags & 1 != 0
    }
}

const MAX_FILTERS: u8 = 32;
const MAX_CLIENT_VALUES: u16 = 256;

pub(crate) fn parse_filters(c: &mut Cur<'_>) -> Result<Vec<Filter>> {
    let version = c.u8()?;
    let n = c.u8()?;
    if n > MAX_FILTERS {
        return Err(Hdf5Error::LimitExceeded {
            what: "filters in pipeline",
            value: u64::from(n),
            limit: u64::from(MAX_FILTERS),
        });
    }
    if version == 1 {
        c.skip(6)?;
    } else if version != 2 {
        return Err(Hdf5Error::UnsupportedVersion {
            what: "filter pipeline message",
            address: c.base,
            version,
        });
    }
    let mut out = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let id = c.u16()?;
        let name_len = if version == 1 || id >= 256 {
            c.u16()?
        } else {
            0
        };
        let flags = c.u16()?;
        let nvalues = c.u16()?;
        if nvalues > MAX_CLIENT_VALUES {
            return Err(Hdf5Error::LimitExceeded {
                what: "filter client values",
                value: u64::from(nvalues),
                limit: u64::from(MAX_CLIENT_VALUES),
            });
        }
        let name = if name_len > 0 {
            let mut len = usize::from(name_len);
            if version == 1 {
                len = len.div_ceil(8) * 8;
            }
            let raw = c.bytes(len)?;
            let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
            Some(String::from_utf8_lossy(raw.get(..end).unwrap_or(raw)).into_owned())
        } else {
            None
        };
        let mut client_data = Vec::with_capacity(usize::from(nvalues));
        for _ in 0..nvalues {
            client_data.push(c.u32()?);
        }
        if version == 1 && nvalues % 2 == 1 {
            c.skip(4)?;
        }
        out.push(Filter {
            id,
            name,
            flags,
            client_data,
        });
    }
    Ok(out)
}

/// Whether a dataset's fill value is defined, as libhdf5's `H5Pfill_value_defined` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FillDefined {
    /// Explicitly undefined: no fill value at all.
    Undefined,
    /// The library default (zero bytes).
    #[default]
    Default,
    /// A value set by the writer (its bytes are in [`crate::DatasetInfo::fill_value`]).
    User,
}

/// New-style fill value message: whether a value is defined, and its bytes if the writer set one.
pub(crate) fn parse_fill_value(c: &mut Cur<'_>) -> Result<(FillDefined, Option<Vec<u8>>)> {
    let version = c.u8()?;
    match version {
        1 | 2 => {
            c.skip(2)?; // allocation time, write time
            let defined = c.u8()?;
            if version == 2 && defined == 0 {
                return Ok((FillDefined::Undefined, None));
            }
            let size = c.u32()?;
            if size == 0 {
                return Ok((FillDefined::Default, None));
            }
            Ok((FillDefined::User, Some(c.bytes(size as usize)?.to_vec())))
        }
        3 => {
            let flags = c.u8()?;
            if flags & 0x10 != 0 {
                return Ok((FillDefined::Undefined, None));
            }
            if flags & 0x20 == 0 {
                return Ok((FillDefined::Default, None));
            }
            let size = c.u32()?;
            if size == 0 {
                return Ok((FillDefined::Default, None));
            }
            Ok((FillDefined::User, Some(c.bytes(size as usize)?.to_vec())))
        }
        v => Err(Hdf5Error::UnsupportedVersion {
            what: "fill value message",
            address: c.base,
            version: v,
        }),
    }
}

/// Old fill value message (type 4).
pub(crate) fn parse_old_fill_value(c: &mut Cur<'_>) -> Result<Option<Vec<u8>>> {
    let size = c.u32()?;
    if size == 0 {
        return Ok(None);
    }
    Ok(Some(c.bytes(size as usize)?.to_vec()))
}

/// An attribute as stored: its value bytes still raw (vlen strings point into the global heap).
#[derive(Debug, Clone)]
pub(crate) struct RawAttribute {
    pub name: String,
    pub dtype: Datatype,
    pub space: Dataspace,
    pub data: Vec<u8>,
}

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

pub(crate) fn parse_attribute(c: &mut Cur<'_>, s: Sizes) -> Result<RawAttribute> {
    let version = c.u8()?;
    let flags = c.u8()?;
    if !(1..=3).contains(&version) {
        return Err(Hdf5Error::UnsupportedVersion {
            what: "attribute message",
            address: c.base,
            version,
        });
    }
    if version > 1 && flags & 0x03 != 0 {
        return Err(Hdf5Error::Unsupported(
            "attribute with a shared datatype or dataspace".into(),
        ));
    }
    let name_len = usize::from(c.u16()?);
    let dt_len = usize::from(c.u16()?);
    let ds_len = usize::from(c.u16()?);
    if version == 3 {
        c.skip(1)?; // name character set
    }
    let (name_len_p, dt_len_p, ds_len_p) = if version == 1 {
        (pad8(name_len), pad8(dt_len), pad8(ds_len))
    } else {
        (name_len, dt_len, ds_len)
    };
    let raw = c.bytes(name_len_p)?;
    let raw = raw.get(..name_len).unwrap_or(raw);
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    let name = String::from_utf8_lossy(raw.get(..end).unwrap_or(raw)).into_owned();
    let dt_bytes = c.bytes(dt_len_p)?;
    let dtype = parse_datatype(&mut Cur::new(dt_bytes, c.base, "attribute datatype"))?;
    let ds_bytes = c.bytes(ds_len_p)?;
    let space = parse_dataspace(&mut Cur::new(ds_bytes, c.base, "attribute dataspace"), s)?;
    let n = space.elements(1 << 20)?;
    let want = n
        .checked_mul(u64::from(dtype.size()))
        .ok_or_else(|| Hdf5Error::malformed("attribute message", "value size overflows"))?;
    let want = usize::try_from(want)
        .map_err(|_| Hdf5Error::malformed("attribute message", "value too large"))?;
    let data = c.bytes(want.min(c.remaining()))?.to_vec();
    if data.len() < want {
        return Err(Hdf5Error::malformed(
            "attribute message",
            format!("{name}: value is {} bytes, needs {want}", data.len()),
        ));
    }
    Ok(RawAttribute {
        name,
        dtype,
        space,
        data,
    })
}

/// Where a link points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkTarget {
    /// Object header address.
    Hard(u64),
    Soft(String),
    External {
        file: String,
        path: String,
    },
    Other(u8),
}

/// A named link of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub target: LinkTarget,
}

pub(crate) fn parse_link(c: &mut Cur<'_>, s: Sizes) -> Result<Link> {
    let version = c.u8()?;
    if version != 1 {
        return Err(Hdf5Error::UnsupportedVersion {
            what: "link message",
            address: c.base,
            version,
        });
    }
    let flags = c.u8()?;
    let kind = if flags & 0x08 != 0 { c.u8()? } else { 0 };
    if flags & 0x04 != 0 {
        c.skip(8)?;
    }
    if flags & 0x10 != 0 {
        c.skip(1)?;
    }
    let len_size = 1usize << (flags & 0x03);
    let name_len = c.uvar(len_size)?;
    let name_len = usize::try_from(name_len)
        .ok()
        .filter(|n| *n <= c.remaining())
        .ok_or_else(|| Hdf5Error::malformed("link message", "name longer than message"))?;
    let name = String::from_utf8_lossy(c.bytes(name_len)?).into_owned();
    let target = match kind {
        0 => LinkTarget::Hard(
            c.addr(s)?
                .ok_or_else(|| Hdf5Error::malformed("link message", "undefined address"))?,
        ),
        1 => {
            let n = usize::from(c.u16()?);
            LinkTarget::Soft(String::from_utf8_lossy(c.bytes(n)?).into_owned())
        }
        64 => {
            let n = usize::from(c.u16()?);
            let raw = c.bytes(n)?;
            let mut parts = raw.get(1..).unwrap_or(&[]).split(|b| *b == 0);
            let file = String::from_utf8_lossy(parts.next().unwrap_or(&[])).into_owned();
            let path = String::from_utf8_lossy(parts.next().unwrap_or(&[])).into_owned();
            LinkTarget::External { file, path }
        }
        k => LinkTarget::Other(k),
    };
    Ok(Link { name, target })
}

/// Link info / attribute info: (fractal heap address, name-index v2 B-tree address).
pub(crate) fn parse_dense_info(
    c: &mut Cur<'_>,
    s: Sizes,
    what: &'static str,
    creation_index_size: usize,
) -> Result<(Option<u64>, Option<u64>)> {
    let version = c.u8()?;
    if version != 0 {
        return Err(Hdf5Error::UnsupportedVersion {
            what,
            address: c.base,
            version,
        });
    }
    let flags = c.u8()?;
    if flags & 1 != 0 {
        c.skip(creation_index_size)?;
    }
    let heap = c.addr(s)?;
    let btree = c.addr(s)?;
    Ok((heap, btree))
}
