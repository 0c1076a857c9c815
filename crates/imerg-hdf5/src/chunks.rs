//! Chunk index enumeration: every stored chunk's (offset in elements, file address, stored size,
//! filter mask), from a v1 B-tree (layout v3), or from the layout-v4 indexes: single chunk,
//! implicit, fixed array, extensible array and v2 B-tree. Chunk data is never read.

use crate::btree::{v1_leaf_entries, v2_records};
use crate::cursor::{Cur, Sizes, bounded, log2_floor, verify_checksum};
use crate::error::{Hdf5Error, Result};
use crate::messages::ChunkIndex;
use crate::reader::{AHEAD_HEADER, Fetcher};

/// Where one stored chunk is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChunkLocation {
    /// Offset of the chunk's first element, per dimension (a multiple of the chunk shape).
    pub offset: Vec<u64>,
    /// File address of the stored bytes.
    pub address: u64,
    /// Stored (filtered) size in bytes.
    pub size: u64,
    /// Bit `i` set: filter `i` of the pipeline was skipped for this chunk.
    pub filter_mask: u32,
}

/// What enumeration needs to know about the dataset.
#[derive(Debug)]
pub(crate) struct ChunkGrid<'a> {
    pub dims: &'a [u64],
    pub max_dims: &'a [Option<u64>],
    pub chunk: &'a [u64],
    pub element_size: u32,
    pub filtered: bool,
}

impl ChunkGrid<'_> {
    fn rank(&self) -> usize {
        self.chunk.len()
    }

    fn nominal_bytes(&self) -> Result<u64> {
        self.chunk
            .iter()
            .try_fold(u64::from(self.element_size), |a, c| a.checked_mul(*c))
            .ok_or_else(|| Hdf5Error::malformed("chunk shape", "chunk size overflows"))
    }

    /// Chunks along each dimension at the maximum extent (`None`: unlimited).
    fn max_chunks(&self) -> Vec<Option<u64>> {
        self.max_dims
            .iter()
            .zip(self.chunk)
            .map(|(m, c)| m.map(|m| m.div_ceil((*c).max(1))))
            .collect()
    }

    /// Element offsets of linear chunk index `i` (HDF5's array indexes: the unlimited dimension,
    /// if any, is moved first, the others keep their order, row-major over the maximum chunk
    /// counts).
    fn offsets_of(&self, mut i: u64) -> Result<Vec<u64>> {
        let maxc = self.max_chunks();
        let unlim = maxc.iter().position(Option::is_none);
        let mut order: Vec<usize> = (0..self.rank()).filter(|d| Some(*d) != unlim).collect();
        if let Some(u) = unlim {
            order.insert(0, u);
        }
        let mut scaled = vec![0u64; self.rank()];
        for (pos, d) in order.iter().enumerate().rev() {
            let n = maxc.get(*d).copied().flatten();
            match n {
                Some(n) if pos > 0 => {
                    let n = n.max(1);
                    if let Some(x) = scaled.get_mut(*d) {
                        *x = i % n;
                    }
                    i /= n;
                }
                _ => {
                    if let Some(x) = scaled.get_mut(*d) {
                        *x = i;
                    }
                    i = 0;
                }
            }
        }
        scaled
            .iter()
            .zip(self.chunk)
            .map(|(s, c)| {
                s.checked_mul(*c)
                    .ok_or_else(|| Hdf5Error::malformed("chunk index", "offset overflows"))
            })
            .collect()
    }

    fn scaled_to_offsets(&self, scaled: &[u64]) -> Result<Vec<u64>> {
        scaled
            .iter()
            .zip(self.chunk)
            .map(|(s, c)| {
                s.checked_mul(*c)
                    .ok_or_else(|| Hdf5Error::malformed("chunk index", "offset overflows"))
            })
            .collect()
    }

    fn max_linear(&self) -> Option<u64> {
        self.max_chunks()
            .iter()
            .try_fold(1u64, |a, n| n.and_then(|n| a.checked_mul(n)))
    }
}

/// Decodes one chunk-address element of a fixed or extensible array.
fn array_element(
    c: &mut Cur<'_>,
    s: Sizes,
    elsize: usize,
    grid: &ChunkGrid<'_>,
) -> Result<Option<(u64, u64, u32)>> {
    let a = c.addr(s)?;
    let (size, mask) = if grid.filtered {
        let len_size = elsize
            .checked_sub(usize::from(s.offset) + 4)
            .filter(|n| (1..=8).contains(n))
            .ok_or_else(|| Hdf5Error::malformed("chunk array", format!("element size {elsize}")))?;
        (c.uvar(len_size)?, c.u32()?)
    } else {
        (grid.nominal_bytes()?, 0)
    };
    Ok(a.map(|a| (a, size, mask)))
}

/// Every stored chunk of a dataset, sorted by offset.
pub(crate) async fn enumerate(
    f: &Fetcher,
    s: Sizes,
    grid: &ChunkGrid<'_>,
    index: &ChunkIndex,
    depth: &mut u32,
) -> Result<Vec<ChunkLocation>> {
    let opts = f.options().clone();
    if grid.chunk.contains(&0) || grid.chunk.len() != grid.dims.len() {
        return Err(Hdf5Error::malformed(
            "chunk shape",
            format!("{:?} for dimensions {:?}", grid.chunk, grid.dims),
        ));
    }
    let rank = grid.rank();
    let mut out = Vec::new();
    match index {
        ChunkIndex::BTreeV1 { address: None }
        | ChunkIndex::SingleChunk { address: None, .. }
        | ChunkIndex::Implicit { address: None }
        | ChunkIndex::FixedArray { address: None, .. }
        | ChunkIndex::ExtensibleArray { address: None }
        | ChunkIndex::BTreeV2 { address: None } => {}
        ChunkIndex::BTreeV1 { address: Some(a) } => {
            let key_size = 8 + 8 * (rank + 1);
            let entries = v1_leaf_entries(
                f,
                s,
                *a,
                1,
                key_size,
                depth,
                opts.max_nodes,
                opts.max_chunks,
            )
            .await?;
            for e in entries {
                let mut c = Cur::new(&e.key, 0, "v1 B-tree chunk key");
                let size = u64::from(c.u32()?);
                let mask = c.u32()?;
                let mut offset = Vec::with_capacity(rank);
                for _ in 0..rank {
                    offset.push(c.u64()?);
                }
                out.push(ChunkLocation {
                    offset,
                    address: e.child,
                    size,
                    filter_mask: mask,
                });
            }
        }
        ChunkIndex::SingleChunk {
            address: Some(a),
            filtered,
        } => {
            let (size, mask) = match filtered {
                Some((size, mask)) => (*size, *mask),
                None => (grid.nominal_bytes()?, 0),
            };
            out.push(ChunkLocation {
                offset: vec![0; rank],
                address: *a,
                size,
                filter_mask: mask,
            });
        }
        ChunkIndex::Implicit { address: Some(a) } => {
            let n = grid
                .max_linear()
                .ok_or_else(|| Hdf5Error::malformed("implicit index", "unlimited dimension"))?;
            bounded("implicit index chunks", n, opts.max_chunks)?;
            let size = grid.nominal_bytes()?;
            for i in 0..n {
                let address = i
                    .checked_mul(size)
                    .and_then(|x| x.checked_add(*a))
                    .ok_or_else(|| Hdf5Error::malformed("implicit index", "address overflows"))?;
                out.push(ChunkLocation {
                    offset: grid.offsets_of(i)?,
                    address,
                    size,
                    filter_mask: 0,
                });
            }
        }
        ChunkIndex::FixedArray {
            address: Some(a), ..
        } => fixed_array(f, s, grid, *a, depth, &mut out).await?,
        ChunkIndex::ExtensibleArray { address: Some(a) } => {
            extensible_array(f, s, grid, *a, depth, &mut out).await?
        }
        ChunkIndex::BTreeV2 { address: Some(a) } => {
            let recs = v2_records(f, s, *a, depth, opts.max_nodes, opts.max_chunks).await?;
            let o = usize::from(s.offset);
            for r in recs.records {
                let mut c = Cur::new(&r, 0, "v2 B-tree chunk record");
                let address = c
                    .addr(s)?
                    .ok_or_else(|| Hdf5Error::malformed("v2 B-tree chunk record", "address"))?;
                let (size, mask) = match recs.kind {
                    10 => (grid.nominal_bytes()?, 0),
                    11 => {
                        let len_size = r
                            .len()
                            .checked_sub(o + 4 + 8 * rank)
                            .filter(|n| (1..=8).contains(n))
                            .ok_or_else(|| {
                                Hdf5Error::malformed("v2 B-tree chunk record", "record size")
                            })?;
                        (c.uvar(len_size)?, c.u32()?)
                    }
                    k => {
                        return Err(Hdf5Error::malformed(
                            "v2 B-tree chunk index",
                            format!("record type {k}"),
                        ));
                    }
                };
                let mut scaled = Vec::with_capacity(rank);
                for _ in 0..rank {
                    scaled.push(c.u64()?);
                }
                out.push(ChunkLocation {
                    offset: grid.scaled_to_offsets(&scaled)?,
                    address,
                    size,
                    filter_mask: mask,
                });
            }
        }
    }
    out.sort();
    Ok(out)
}

async fn fixed_array(
    f: &Fetcher,
    s: Sizes,
    grid: &ChunkGrid<'_>,
    addr: u64,
    depth: &mut u32,
    out: &mut Vec<ChunkLocation>,
) -> Result<()> {
    let o = u64::from(s.offset);
    let hlen = 4 + 4 + u64::from(s.length) + o + 4;
    let head = f
        .read_ahead(depth, "fixed array header", addr, hlen, AHEAD_HEADER)
        .await?;
    let mut c = Cur::new(&head, addr, "fixed array header");
    c.signature("FAHD", "fixed array header")?;
    verify_checksum(
        &head,
        (hlen as usize).saturating_sub(4),
        "fixed array header",
        addr,
    )?;
    let version = c.u8()?;
    if version != 0 {
        return Err(Hdf5Error::UnsupportedVersion {
            what: "fixed array header",
            address: addr,
            version,
        });
    }
    c.skip(1)?;
    let elsize = usize::from(c.u8()?);
    let page_bits = c.u8()?;
    let nelmts = c.length(s)?;
    let dblk = c
        .addr(s)?
        .ok_or_else(|| Hdf5Error::malformed("fixed array header", "no data block"))?;
    let max = f.options().max_chunks;
    let n = bounded("fixed array elements", nelmts, max)?;
    if let Some(m) = grid.max_linear()
        && nelmts > m
    {
        return Err(Hdf5Error::malformed(
            "fixed array header",
            format!("{nelmts} elements for {m} chunks"),
        ));
    }
    if page_bits >= 32 {
        return Err(Hdf5Error::malformed("fixed array header", "page bits"));
    }
    let page = 1usize << page_bits;
    let prefix = 4 + 1 + 1 + o;
    let el_bytes = (n as u64)
        .checked_mul(elsize as u64)
        .ok_or_else(|| Hdf5Error::malformed("fixed array", "size overflows"))?;
    let mut elements: Vec<(u64, bytes::Bytes)> = Vec::new();
    if n <= page {
        let data = f
            .read(depth, "fixed array data block", dblk, prefix + el_bytes + 4)
            .await?;
        let mut c = Cur::new(&data, dblk, "fixed array data block");
        c.signature("FADB", "fixed array data block")?;
        verify_checksum(
            &data,
            data.len().saturating_sub(4),
            "fixed array data block",
            dblk,
        )?;
        elements.push((0, data.slice(prefix as usize..)));
    } else {
        let npages = n.div_ceil(page);
        let bitmap = npages.div_ceil(8) as u64;
        let pages_at = dblk + prefix + bitmap + 4;
        let total = el_bytes + 4 * npages as u64;
        let data = f
            .read(depth, "fixed array data block pages", pages_at, total)
            .await?;
        let mut pos = 0usize;
        for p in 0..npages {
            let count = page.min(n - p * page);
            let page_bytes = data.get(pos..).unwrap_or(&[]);
            verify_checksum(
                page_bytes,
                count * elsize,
                "fixed array data block page",
                pages_at + pos as u64,
            )?;
            elements.push(((p * page) as u64, data.slice(pos..)));
            pos += count * elsize + 4;
        }
    }
    for (first, data) in elements {
        let mut c = Cur::new(&data, 0, "fixed array elements");
        let count = page.min(n - first as usize);
        for k in 0..count {
            if let Some((address, size, mask)) = array_element(&mut c, s, elsize, grid)? {
                out.push(ChunkLocation {
                    offset: grid.offsets_of(first + k as u64)?,
                    address,
                    size,
                    filter_mask: mask,
                });
            }
        }
    }
    Ok(())
}

struct SuperBlockInfo {
    ndblks: u64,
    dblk_nelmts: u64,
    start_idx: u64,
}

async fn extensible_array(
    f: &Fetcher,
    s: Sizes,
    grid: &ChunkGrid<'_>,
    addr: u64,
    depth: &mut u32,
    out: &mut Vec<ChunkLocation>,
) -> Result<()> {
    let o = u64::from(s.offset);
    let l = u64::from(s.length);
    let hlen = 4 + 1 + 1 + 6 + 6 * l + o + 4;
    let head = f
        .read_ahead(depth, "extensible array header", addr, hlen, AHEAD_HEADER)
        .await?;
    let mut c = Cur::new(&head, addr, "extensible array header");
    c.signature("EAHD", "extensible array header")?;
    verify_checksum(
        &head,
        (hlen as usize).saturating_sub(4),
        "extensible array header",
        addr,
    )?;
    let version = c.u8()?;
    if version != 0 {
        return Err(Hdf5Error::UnsupportedVersion {
            what: "extensible array header",
            address: addr,
            version,
        });
    }
    c.skip(1)?;
    let elsize = usize::from(c.u8()?);
    let max_bits = c.u8()?;
    let idx_elmts = u64::from(c.u8()?);
    let dblk_min = u64::from(c.u8()?);
    let sblk_min_ptrs = u64::from(c.u8()?);
    let page_bits = c.u8()?;
    for _ in 0..6 {
        c.length(s)?;
    }
    let Some(iblock) = c.addr(s)? else {
        return Ok(());
    };
    if max_bits == 0
        || max_bits > 64
        || !dblk_min.is_power_of_two()
        || !sblk_min_ptrs.is_power_of_two()
        || u32::from(max_bits) < log2_floor(dblk_min)
    {
        return Err(Hdf5Error::malformed(
            "extensible array header",
            format!("max bits {max_bits}, data block min {dblk_min}, pointers {sblk_min_ptrs}"),
        ));
    }
    let nsblks = 1 + u64::from(max_bits) - u64::from(log2_floor(dblk_min));
    let mut sinfo = Vec::new();
    let (mut start_idx, mut start_dblk) = (0u64, 0u64);
    let mut dblk_starts = Vec::new();
    for u in 0..nsblks {
        let ndblks = 1u64.checked_shl((u / 2) as u32).unwrap_or(u64::MAX);
        let dblk_nelmts =
            (1u64.checked_shl(u.div_ceil(2) as u32).unwrap_or(u64::MAX)).saturating_mul(dblk_min);
        sinfo.push(SuperBlockInfo {
            ndblks,
            dblk_nelmts,
            start_idx,
        });
        dblk_starts.push(start_dblk);
        start_idx = start_idx.saturating_add(ndblks.saturating_mul(dblk_nelmts));
        start_dblk = start_dblk.saturating_add(ndblks);
    }
    let iblock_sblks = 2 * u64::from(log2_floor(sblk_min_ptrs));
    let ndblk_addrs = 2 * (sblk_min_ptrs - 1);
    let nsblk_addrs = nsblks.saturating_sub(iblock_sblks);
    let arr_off = usize::from(max_bits).div_ceil(8);
    let ilen = 4 + 1 + 1 + o + idx_elmts * elsize as u64 + (ndblk_addrs + nsblk_addrs) * o + 4;
    let data = f
        .read(depth, "extensible array index block", iblock, ilen)
        .await?;
    let mut c = Cur::new(&data, iblock, "extensible array index block");
    c.signature("EAIB", "extensible array index block")?;
    verify_checksum(
        &data,
        data.len().saturating_sub(4),
        "extensible array index block",
        iblock,
    )?;
    c.skip(2 + o as usize)?;
    let max = f.options().max_chunks;
    let mut push = |i: u64, e: Option<(u64, u64, u32)>| -> Result<()> {
        if let Some((address, size, mask)) = e {
            if out.len() as u64 >= max {
                return Err(Hdf5Error::LimitExceeded {
                    what: "extensible array chunks",
                    value: out.len() as u64 + 1,
                    limit: max,
                });
            }
            out.push(ChunkLocation {
                offset: grid.offsets_of(i)?,
                address,
                size,
                filter_mask: mask,
            });
        }
        Ok(())
    };
    for i in 0..idx_elmts {
        let e = array_element(&mut c, s, elsize, grid)?;
        push(i, e)?;
    }
    // Data blocks: (first element index, elements, address).
    let mut dblocks: Vec<(u64, u64, u64)> = Vec::new();
    let mut dblk_addrs = Vec::new();
    for _ in 0..ndblk_addrs {
        dblk_addrs.push(c.addr(s)?);
    }
    let mut sblk_addrs = Vec::new();
    for _ in 0..nsblk_addrs {
        sblk_addrs.push(c.addr(s)?);
    }
    for (u, si) in sinfo.iter().enumerate().take(iblock_sblks as usize) {
        let first = dblk_starts.get(u).copied().unwrap_or(0);
        for k in 0..si.ndblks {
            let slot = usize::try_from(first + k).unwrap_or(usize::MAX);
            if let Some(Some(a)) = dblk_addrs.get(slot) {
                dblocks.push((
                    idx_elmts + si.start_idx + k * si.dblk_nelmts,
                    si.dblk_nelmts,
                    *a,
                ));
            }
        }
    }
    let page = 1u64.checked_shl(u32::from(page_bits)).unwrap_or(u64::MAX);
    // Secondary blocks, all at once.
    let sblks: Vec<(usize, u64)> = sblk_addrs
        .iter()
        .enumerate()
        .filter_map(|(k, a)| a.map(|a| (iblock_sblks as usize + k, a)))
        .collect();
    if !sblks.is_empty() {
        let d0 = *depth;
        let sinfo = &sinfo;
        let reads = sblks.iter().map(|(u, a)| async move {
            let mut d = d0;
            let si = sinfo
                .get(*u)
                .ok_or_else(|| Hdf5Error::malformed("extensible array", "super block index"))?;
            if si.dblk_nelmts > page {
                return Err(Hdf5Error::Unsupported(
                    "paged extensible array data blocks".into(),
                ));
            }
            let n = bounded("extensible array data blocks", si.ndblks, max)?;
            let len = 4 + 2 + o + arr_off as u64 + n as u64 * o + 4;
            let data = f
                .read(&mut d, "extensible array secondary block", *a, len)
                .await?;
            let mut c = Cur::new(&data, *a, "extensible array secondary block");
            c.signature("EASB", "extensible array secondary block")?;
            verify_checksum(
                &data,
                data.len().saturating_sub(4),
                "extensible array secondary block",
                *a,
            )?;
            c.skip(2 + o as usize + arr_off)?;
            let mut found = Vec::new();
            for k in 0..si.ndblks {
                if let Some(b) = c.addr(s)? {
                    found.push((
                        idx_elmts + si.start_idx + k * si.dblk_nelmts,
                        si.dblk_nelmts,
                        b,
                    ));
                }
            }
            Ok::<_, Hdf5Error>((found, d))
        });
        for (found, d) in futures::future::try_join_all(reads).await? {
            *depth = (*depth).max(d);
            dblocks.extend(found);
        }
    }
    // Data blocks, all at once.
    let d0 = *depth;
    let reads = dblocks.iter().map(|(first, n, a)| async move {
        let mut d = d0;
        if *n > page {
            return Err(Hdf5Error::Unsupported(
                "paged extensible array data blocks".into(),
            ));
        }
        let n = bounded("extensible array data block elements", *n, max)?;
        let len = 4 + 2 + o + arr_off as u64 + (n * elsize) as u64 + 4;
        let data = f
            .read(&mut d, "extensible array data block", *a, len)
            .await?;
        Ok::<_, Hdf5Error>((*first, n, *a, data, d))
    });
    for (first, n, a, data, d) in futures::future::try_join_all(reads).await? {
        *depth = (*depth).max(d);
        let mut c = Cur::new(&data, a, "extensible array data block");
        c.signature("EADB", "extensible array data block")?;
        verify_checksum(
            &data,
            data.len().saturating_sub(4),
            "extensible array data block",
            a,
        )?;
        c.skip(2 + o as usize + arr_off)?;
        for k in 0..n as u64 {
            let e = array_element(&mut c, s, elsize, grid)?;
            push(first + k, e)?;
        }
    }
    Ok(())
}
