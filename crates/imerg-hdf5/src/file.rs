//! The file: superblock (v0-v3), path resolution through groups (old-style symbol tables with
//! v1 B-tree group nodes and a local heap; new-style compact links or dense links in a fractal
//! heap indexed by a v2 B-tree) and dataset descriptions ([`DatasetInfo`]).

use std::sync::Arc;

use crate::btree::{v1_leaf_entries, v2_records};
use crate::chunks::{ChunkGrid, ChunkLocation, enumerate};
use crate::cursor::{Cur, Sizes, verify_checksum};
use crate::error::{Hdf5Error, Result};
use crate::heaps::{FractalHeap, global_heap_object, heap_string, local_heap};
use crate::messages::{
    Dataspace, Datatype, FillDefined, Filter, Link, LinkTarget, RawAttribute, StorageLayout,
    parse_attribute, parse_dataspace, parse_datatype, parse_dense_info, parse_fill_value,
    parse_filters, parse_layout, parse_link, parse_old_fill_value,
};
use crate::object_header::{Message, read_object_header};
use crate::reader::{AHEAD_NODE, FetchStats, Fetcher, RangeReader, ReadOptions};

const SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// What the superblock says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub version: u8,
    pub sizes: Sizes,
    /// End-of-file address (the file's logical size).
    pub eof: u64,
    /// Root group object header.
    pub root: u64,
    /// v0/v1: group leaf node K (symbol table nodes hold up to 2K entries).
    pub group_leaf_k: u16,
}

/// An attribute value, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Strings(Vec<String>),
    Ints(Vec<i64>),
    Uints(Vec<u64>),
    Floats(Vec<f64>),
    /// A datatype this reader does not decode (named in the string).
    Unsupported(String),
}

/// One attribute of an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub name: String,
    /// The attribute's datatype in the file (tells fixed from variable-length strings).
    pub dtype: Datatype,
    pub shape: Vec<u64>,
    pub value: AttrValue,
}

/// Everything a virtualizer needs to know about one dataset, read from metadata only.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetInfo {
    pub path: String,
    pub header_address: u64,
    pub dtype: Datatype,
    pub shape: Vec<u64>,
    /// Maximum dimensions (`None`: unlimited).
    pub max_shape: Vec<Option<u64>>,
    pub layout: StorageLayout,
    pub filters: Vec<Filter>,
    /// The dataset's fill value bytes (little-endian as stored), if defined.
    pub fill_value: Option<Vec<u8>>,
    /// Whether a fill value is defined at all (libhdf5's `H5Pfill_value_defined`).
    pub fill_defined: FillDefined,
    pub attributes: Vec<Attribute>,
    /// Stored chunks, sorted by offset (empty unless chunked).
    pub chunks: Vec<ChunkLocation>,
    /// The round trip after which this dataset's data was located (its object header and chunk
    /// index read): reads of its values can start right after it, without waiting for other
    /// datasets.
    pub located_at: u32,
}

impl DatasetInfo {
    /// Chunk shape, if chunked.
    pub fn chunk_shape(&self) -> Option<&[u64]> {
        match &self.layout {
            StorageLayout::Chunked { chunk, .. } => Some(chunk),
            _ => None,
        }
    }

    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }

    /// The fill value as a number (floats and integers of the dataset's type).
    pub fn fill_value_f64(&self) -> Option<f64> {
        let b = self.fill_value.as_deref()?;
        decode_numbers(&self.dtype, b).and_then(|v| match v {
            AttrValue::Floats(x) => x.first().copied(),
            AttrValue::Ints(x) => x.first().map(|i| *i as f64),
            AttrValue::Uints(x) => x.first().map(|i| *i as f64),
            _ => None,
        })
    }
}

fn decode_numbers(dt: &Datatype, data: &[u8]) -> Option<AttrValue> {
    use crate::messages::ByteOrder;
    let (size, order) = match dt {
        Datatype::Integer { size, order, .. } | Datatype::Float { size, order } => {
            (*size as usize, *order)
        }
        _ => return None,
    };
    if !matches!(size, 1 | 2 | 4 | 8) {
        return None;
    }
    let words = data.chunks_exact(size).map(|w| {
        let mut b = [0u8; 8];
        for (i, x) in w.iter().enumerate() {
            let at = if order == ByteOrder::Big {
                size - 1 - i
            } else {
                i
            };
            if let Some(slot) = b.get_mut(at) {
                *slot = *x;
            }
        }
        u64::from_le_bytes(b)
    });
    Some(match dt {
        Datatype::Float { .. } => AttrValue::Floats(
            words
                .map(|w| {
                    if size == 4 {
                        f64::from(f32::from_bits(w as u32))
                    } else {
                        f64::from_bits(w)
                    }
                })
                .collect(),
        ),
        Datatype::Integer { signed: true, .. } => AttrValue::Ints(
            words
                .map(|w| {
                    let shift = 64 - 8 * size as u32;
                    ((w << shift) as i64) >> shift
                })
                .collect(),
        ),
        _ => AttrValue::Uints(words.collect()),
    })
}

fn parse_superblock(buf: &[u8]) -> Result<Superblock> {
    let mut at = None;
    let mut off = 0usize;
    while off + 8 <= buf.len() {
        if buf.get(off..off + 8) == Some(SIGNATURE.as_slice()) {
            at = Some(off);
            break;
        }
        off = if off == 0 { 512 } else { off * 2 };
    }
    let at = at.ok_or(Hdf5Error::NotHdf5 {
        searched: buf.len() as u64,
    })?;
    if at != 0 {
        return Err(Hdf5Error::Unsupported(format!(
            "user block: superblock at offset {at}"
        )));
    }
    let mut c = Cur::new(buf, 0, "superblock");
    c.skip(8)?;
    let version = c.u8()?;
    let sizes_ok = |s: Sizes| matches!(s.offset, 2 | 4 | 8) && matches!(s.length, 2 | 4 | 8);
    match version {
        0 | 1 => {
            c.skip(4)?;
            let sizes = Sizes {
                offset: c.u8()?,
                length: c.u8()?,
            };
            if !sizes_ok(sizes) {
                return Err(Hdf5Error::malformed("superblock", format!("{sizes:?}")));
            }
            c.skip(1)?;
            let group_leaf_k = c.u16()?;
            c.skip(2 + 4)?;
            if version == 1 {
                c.skip(4)?;
            }
            let base = c.addr(sizes)?.unwrap_or(0);
            c.addr(sizes)?;
            let eof = c
                .addr(sizes)?
                .ok_or_else(|| Hdf5Error::malformed("superblock", "undefined EOF"))?;
            c.addr(sizes)?;
            c.addr(sizes)?; // link name offset
            let root = c
                .addr(sizes)?
                .ok_or_else(|| Hdf5Error::malformed("superblock", "no root group"))?;
            if base != 0 {
                return Err(Hdf5Error::Unsupported(format!("base address {base}")));
            }
            Ok(Superblock {
                version,
                sizes,
                eof,
                root,
                group_leaf_k,
            })
        }
        2 | 3 => {
            let sizes = Sizes {
                offset: c.u8()?,
                length: c.u8()?,
            };
            if !sizes_ok(sizes) {
                return Err(Hdf5Error::malformed("superblock", format!("{sizes:?}")));
            }
            c.skip(1)?;
            let base = c.addr(sizes)?.unwrap_or(0);
            c.addr(sizes)?; // extension
            let eof = c
                .addr(sizes)?
                .ok_or_else(|| Hdf5Error::malformed("superblock", "undefined EOF"))?;
            let root = c
                .addr(sizes)?
                .ok_or_else(|| Hdf5Error::malformed("superblock", "no root group"))?;
            verify_checksum(buf, c.pos(), "superblock", 0)?;
            if base != 0 {
                return Err(Hdf5Error::Unsupported(format!("base address {base}")));
            }
            Ok(Superblock {
                version,
                sizes,
                eof,
                root,
                group_leaf_k: 0,
            })
        }
        v => Err(Hdf5Error::UnsupportedVersion {
            what: "superblock",
            address: 0,
            version: v,
        }),
    }
}

/// An HDF5 file opened for metadata reads.
#[derive(Debug, Clone)]
pub struct Hdf5File {
    f: Arc<Fetcher>,
    sb: Superblock,
    /// Round-trip depth after the first read.
    base_depth: u32,
}

fn shared_check(m: &Message, what: &str) -> Result<()> {
    if m.flags & 0x02 != 0 {
        return Err(Hdf5Error::Unsupported(format!("shared {what} message")));
    }
    Ok(())
}

impl Hdf5File {
    /// Opens a file: one read of `opts.first_read` bytes from offset 0 (and of the object's
    /// tail, concurrently, if `opts.tail_read` asks for it).
    pub async fn open(reader: Arc<dyn RangeReader>, opts: ReadOptions) -> Result<Self> {
        let f = Arc::new(Fetcher::new(Arc::clone(&reader), opts));
        let head = f.first().await?;
        let known = reader.size_hint();
        let sb = match parse_superblock(&head) {
            Ok(sb) => sb,
            // An object that ends inside its superblock: truncated, not malformed.
            Err(Hdf5Error::Malformed { .. }) if (head.len() as u64) < f.options().first_read => {
                let mut padded = head.to_vec();
                padded.resize(head.len().saturating_add(4096), 0);
                match parse_superblock(&padded) {
                    Ok(_) => {
                        return Err(Hdf5Error::Truncated {
                            what: "superblock".into(),
                            needed: head.len() as u64 + 1,
                            size: head.len() as u64,
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        if let Some(size) = known
            && size < sb.eof
        {
            return Err(Hdf5Error::Truncated {
                what: "file (superblock end-of-file address)".into(),
                needed: sb.eof,
                size,
            });
        }
        f.set_eof(sb.eof);
        Ok(Self {
            f,
            sb,
            base_depth: 1,
        })
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// Reads `len` bytes of dataset data at `offset` through this file's block cache and cost
    /// accounting. `after` is the round trip at which the address was known (for example
    /// `stats().round_trips` once the metadata is read); returns the bytes and the round trip at
    /// which they are available. Reads issued concurrently with the same `after` share one round
    /// trip.
    pub async fn read_data(&self, offset: u64, len: u64, after: u32) -> Result<(Vec<u8>, u32)> {
        let mut d = after;
        let b = self.f.read(&mut d, "dataset data", offset, len).await?;
        Ok((b.to_vec(), d))
    }

    /// Fetches what the layout hints ([`crate::ReadOptions::hints`]) name, concurrently with
    /// whatever reads run meanwhile (join it with the parse); does nothing without hints.
    pub fn prefetch_hints(&self) -> impl std::future::Future<Output = ()> + '_ {
        self.f.prefetch_hints()
    }

    /// Requests, bytes and round trips so far.
    pub fn stats(&self) -> FetchStats {
        self.f.stats()
    }

    fn s(&self) -> Sizes {
        self.sb.sizes
    }

    /// Links of the group whose object header is at `addr`, sorted by name.
    async fn group_links_at(&self, addr: u64, depth: &mut u32) -> Result<Vec<Link>> {
        let s = self.s();
        let f = &*self.f;
        let msgs = read_object_header(f, s, addr, depth).await?;
        let mut links = Vec::new();
        for m in &msgs {
            match m.kind {
                0x11 => {
                    let mut c = Cur::new(&m.data, 0, "symbol table message");
                    let btree = c
                        .addr(s)?
                        .ok_or_else(|| Hdf5Error::malformed("symbol table message", "no B-tree"))?;
                    let heap_addr = c
                        .addr(s)?
                        .ok_or_else(|| Hdf5Error::malformed("symbol table message", "no heap"))?;
                    // The heap and the B-tree (then its symbol-table nodes) are independent:
                    // fetch them together.
                    let d0 = *depth;
                    let opts = f.options();
                    let entry_size = 2 * usize::from(s.offset) + 24;
                    let (heap, nodes) = futures::future::try_join(
                        async {
                            let mut d = d0;
                            local_heap(f, s, heap_addr, &mut d).await.map(|h| (h, d))
                        },
                        async {
                            let mut d = d0;
                            let entries = v1_leaf_entries(
                                f,
                                s,
                                btree,
                                0,
                                usize::from(s.length),
                                &mut d,
                                opts.max_nodes,
                                opts.max_nodes,
                            )
                            .await?;
                            // Symbol table nodes, all at once.
                            let d1 = d;
                            let reads = entries.iter().map(|e| async move {
                                let mut d = d1;
                                let head = f
                                    .read_ahead(&mut d, "symbol table node", e.child, 8, AHEAD_NODE)
                                    .await?;
                                let mut c = Cur::new(&head, e.child, "symbol table node");
                                c.signature("SNOD", "symbol table node")?;
                                c.skip(2)?;
                                let n = usize::from(c.u16()?);
                                let body = f
                                    .read(
                                        &mut d,
                                        "symbol table node",
                                        e.child + 8,
                                        (n * entry_size) as u64,
                                    )
                                    .await?;
                                Ok::<_, Hdf5Error>((body, n, d))
                            });
                            futures::future::try_join_all(reads).await
                        },
                    )
                    .await?;
                    let (heap, dh) = heap;
                    *depth = (*depth).max(dh);
                    for (body, n, d) in nodes {
                        *depth = (*depth).max(d);
                        let mut c = Cur::new(&body, 0, "symbol table entry");
                        for _ in 0..n {
                            let name_off = c.uvar(usize::from(s.offset))?;
                            let obj = c.addr(s)?.ok_or_else(|| {
                                Hdf5Error::malformed("symbol table entry", "undefined address")
                            })?;
                            c.skip(24)?;
                            links.push(Link {
                                name: heap_string(&heap, name_off)?,
                                target: LinkTarget::Hard(obj),
                            });
                        }
                    }
                }
                0x06 => links.push(parse_link(&mut Cur::new(&m.data, 0, "link message"), s)?),
                0x02 => {
                    let (heap, btree) = parse_dense_info(
                        &mut Cur::new(&m.data, 0, "link info message"),
                        s,
                        "link info message",
                        8,
                    )?;
                    if let (Some(heap), Some(btree)) = (heap, btree) {
                        for m in self.dense_objects(heap, btree, 4, 7, depth).await? {
                            links.push(parse_link(&mut Cur::new(&m, 0, "link message"), s)?);
                        }
                    }
                }
                _ => {}
            }
        }
        links.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(links)
    }

    /// Objects of a fractal heap listed by a name-index v2 B-tree whose records hold a heap ID
    /// of `id_len` bytes at `id_at`.
    async fn dense_objects(
        &self,
        heap: u64,
        btree: u64,
        id_at: usize,
        id_len: usize,
        depth: &mut u32,
    ) -> Result<Vec<bytes::Bytes>> {
        let (s, f) = (self.s(), &*self.f);
        let opts = f.options();
        let d0 = *depth;
        let (h, recs) = futures::future::try_join(
            async {
                let mut d = d0;
                FractalHeap::open(f, s, heap, &mut d).await.map(|h| (h, d))
            },
            async {
                let mut d = d0;
                v2_records(f, s, btree, &mut d, opts.max_nodes, opts.max_nodes)
                    .await
                    .map(|r| (r, d))
            },
        )
        .await?;
        let ((h, dh), (recs, dr)) = (h, recs);
        *depth = (*depth).max(dh).max(dr);
        let d0 = *depth;
        let h = &h;
        let reads = recs.records.iter().map(|r| async move {
            let mut d = d0;
            let id = r
                .get(id_at..id_at + id_len)
                .ok_or_else(|| Hdf5Error::malformed("name index record", "too short"))?;
            h.get(f, id, &mut d).await.map(|b| (b, d))
        });
        let mut out = Vec::new();
        for (b, d) in futures::future::try_join_all(reads).await? {
            *depth = (*depth).max(d);
            out.push(b);
        }
        Ok(out)
    }

    /// Resolves an absolute path to an object header address.
    async fn resolve(&self, path: &str, depth: &mut u32) -> Result<u64> {
        let mut addr = self.sb.root;
        let mut so_far = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            so_far.push('/');
            so_far.push_str(part);
            let links = self.group_links_at(addr, depth).await?;
            let link =
                links
                    .into_iter()
                    .find(|l| l.name == part)
                    .ok_or_else(|| Hdf5Error::NotFound {
                        path: so_far.clone(),
                    })?;
            addr = match link.target {
                LinkTarget::Hard(a) => a,
                LinkTarget::Soft(t) => {
                    return Err(Hdf5Error::Unsupported(format!("soft link {so_far} -> {t}")));
                }
                LinkTarget::External { file, path } => {
                    return Err(Hdf5Error::Unsupported(format!(
                        "external link {so_far} -> {file}:{path}"
                    )));
                }
                LinkTarget::Other(k) => {
                    return Err(Hdf5Error::Unsupported(format!("link type {k} at {so_far}")));
                }
            };
        }
        Ok(addr)
    }

    /// The links of the group at `path`.
    pub async fn links(&self, path: &str) -> Result<Vec<Link>> {
        let mut d = self.base_depth;
        let addr = self.resolve(path, &mut d).await?;
        self.group_links_at(addr, &mut d).await
    }

    /// The dataset at `path`.
    pub async fn dataset(&self, path: &str) -> Result<DatasetInfo> {
        let mut d = self.base_depth;
        let addr = self.resolve(path, &mut d).await?;
        self.dataset_at(path, addr, &mut d).await
    }

    /// Several datasets of one group, read concurrently (one group lookup, then every dataset's
    /// header, chunk index and attribute values in parallel chains).
    pub async fn datasets(&self, group: &str, names: &[&str]) -> Result<Vec<DatasetInfo>> {
        let mut d = self.base_depth;
        let gaddr = self.resolve(group, &mut d).await?;
        let links = self.group_links_at(gaddr, &mut d).await?;
        let d0 = d;
        let group = group.trim_end_matches('/');
        let reads = names.iter().map(|name| {
            let links = &links;
            async move {
                let path = format!("{group}/{name}");
                let link = links
                    .iter()
                    .find(|l| l.name == *name)
                    .ok_or_else(|| Hdf5Error::NotFound { path: path.clone() })?;
                let LinkTarget::Hard(addr) = link.target else {
                    return Err(Hdf5Error::Unsupported(format!("{path} is not a hard link")));
                };
                let mut d = d0;
                self.dataset_at(&path, addr, &mut d).await
            }
        });
        futures::future::try_join_all(reads).await
    }

    async fn dataset_at(&self, path: &str, addr: u64, depth: &mut u32) -> Result<DatasetInfo> {
        let (s, f) = (self.s(), &*self.f);
        let msgs = read_object_header(f, s, addr, depth).await?;
        let mut space: Option<Dataspace> = None;
        let mut dtype = None;
        let mut layout = None;
        let mut filters = Vec::new();
        let mut fill_new = None;
        let mut fill_old = None;
        let mut raw_attrs: Vec<RawAttribute> = Vec::new();
        let mut dense_attrs = None;
        for m in &msgs {
            let mut c = Cur::new(&m.data, 0, "object header message");
            match m.kind {
                0x01 => {
                    shared_check(m, "dataspace")?;
                    space = Some(parse_dataspace(&mut c, s)?);
                }
                0x03 => {
                    shared_check(m, "datatype")?;
                    dtype = Some(parse_datatype(&mut c)?);
                }
                0x04 => fill_old = parse_old_fill_value(&mut c)?,
                0x05 => {
                    shared_check(m, "fill value")?;
                    fill_new = Some(parse_fill_value(&mut c)?);
                }
                0x07 => {
                    return Err(Hdf5Error::Unsupported(format!(
                        "{path}: external data storage"
                    )));
                }
                0x08 => layout = Some(parse_layout(&mut c, s)?),
                0x0B => {
                    shared_check(m, "filter pipeline")?;
                    filters = parse_filters(&mut c)?;
                }
                0x0C => raw_attrs.push(parse_attribute(&mut c, s)?),
                0x15 => {
                    let (heap, btree) = parse_dense_info(&mut c, s, "attribute info message", 2)?;
                    if let (Some(h), Some(b)) = (heap, btree) {
                        dense_attrs = Some((h, b));
                    }
                }
                _ => {}
            }
        }
        let wrong = |detail: &str| Hdf5Error::WrongObject {
            path: path.to_string(),
            detail: detail.to_string(),
        };
        let space = space.ok_or_else(|| wrong("not a dataset (no dataspace message)"))?;
        let dtype = dtype.ok_or_else(|| wrong("not a dataset (no datatype message)"))?;
        let layout = layout.ok_or_else(|| wrong("not a dataset (no layout message)"))?;
        space.elements(f.options().max_elements)?;
        let (fill_defined, fill_value) = match fill_new {
            Some(new) => new,
            None => match fill_old {
                Some(old) => (FillDefined::User, Some(old)),
                None => (FillDefined::Default, None),
            },
        };

        // Chunk index and attribute values are independent chains.
        let d0 = *depth;
        let chunks_fut = async {
            let mut d = d0;
            let chunks = match &layout {
                StorageLayout::Chunked {
                    chunk,
                    element_size,
                    index,
                    ..
                } => {
                    let grid = ChunkGrid {
                        dims: &space.dims,
                        max_dims: &space.max_dims,
                        chunk,
                        element_size: *element_size,
                        filtered: !filters.is_empty(),
                    };
                    let chunks = enumerate(f, s, &grid, index, &mut d).await?;
                    let eof = f.eof();
                    for ch in &chunks {
                        if ch.address.checked_add(ch.size).is_none_or(|e| e > eof) {
                            return Err(Hdf5Error::AddressOutOfRange {
                                what: format!("{path}: chunk {:?}", ch.offset),
                                address: ch.address,
                                eof,
                            });
                        }
                    }
                    chunks
                }
                _ => Vec::new(),
            };
            Ok::<_, Hdf5Error>((chunks, d))
        };
        let attrs_fut = async {
            let mut d = d0;
            if let Some((h, b)) = dense_attrs {
                for m in self.dense_objects(h, b, 0, 8, &mut d).await? {
                    raw_attrs.push(parse_attribute(
                        &mut Cur::new(&m, 0, "attribute message"),
                        s,
                    )?);
                }
            }
            let mut attributes = Vec::with_capacity(raw_attrs.len());
            for a in &raw_attrs {
                attributes.push(self.decode_attribute(a, &mut d).await?);
            }
            Ok::<_, Hdf5Error>((attributes, d))
        };
        let ((chunks, dc), (attributes, da)) =
            futures::future::try_join(chunks_fut, attrs_fut).await?;
        *depth = (*depth).max(dc).max(da);
        Ok(DatasetInfo {
            path: path.to_string(),
            header_address: addr,
            dtype,
            shape: space.dims,
            max_shape: space.max_dims,
            layout,
            filters,
            fill_value,
            fill_defined,
            attributes,
            chunks,
            located_at: dc,
        })
    }

    async fn decode_attribute(&self, a: &RawAttribute, depth: &mut u32) -> Result<Attribute> {
        let (s, f) = (self.s(), &*self.f);
        let value = match &a.dtype {
            Datatype::Integer { .. } | Datatype::Float { .. } => decode_numbers(&a.dtype, &a.data)
                .unwrap_or_else(|| AttrValue::Unsupported(format!("{:?}", a.dtype))),
            Datatype::FixedString { size, .. } => {
                let size = (*size as usize).max(1);
                AttrValue::Strings(
                    a.data
                        .chunks(size)
                        .map(|w| {
                            let end = w.iter().position(|b| *b == 0).unwrap_or(w.len());
                            String::from_utf8_lossy(w.get(..end).unwrap_or(w))
                                .trim_end_matches(' ')
                                .to_string()
                        })
                        .collect(),
                )
            }
            Datatype::VarLenString { .. } => {
                let el = 4 + usize::from(s.offset) + 4;
                let mut out = Vec::new();
                for w in a.data.chunks_exact(el) {
                    let mut c = Cur::new(w, 0, "variable-length string");
                    let len = c.u32()? as usize;
                    let coll = c.addr(s)?;
                    let idx = c.u32()?;
                    let Some(coll) = coll else {
                        out.push(String::new());
                        continue;
                    };
                    let obj = global_heap_object(f, s, coll, idx, depth).await?;
                    let raw = obj.get(..len.min(obj.len())).unwrap_or(&[]);
                    out.push(String::from_utf8_lossy(raw).into_owned());
                }
                AttrValue::Strings(out)
            }
            other => AttrValue::Unsupported(format!("{other:?}")),
        };
        Ok(Attribute {
            name: a.name.clone(),
            dtype: a.dtype.clone(),
            shape: a.space.dims.clone(),
            value,
        })
    }
}
