//! Heaps: the local heap (names of old-style groups), the global heap (variable-length attribute
//! values) and the fractal heap (dense link and attribute storage: managed objects in direct
//! blocks under a root direct or indirect block, and tiny objects inside the heap ID).

use bytes::Bytes;

use crate::cursor::{Cur, Sizes, limit_enc_size, log2_floor, verify_checksum};
use crate::error::{Hdf5Error, Result};
use crate::reader::{AHEAD_HEADER, Fetcher};

/// The data segment of the local heap at `addr`.
pub(crate) async fn local_heap(f: &Fetcher, s: Sizes, addr: u64, depth: &mut u32) -> Result<Bytes> {
    let len = 8 + 2 * u64::from(s.length) + u64::from(s.offset);
    let head = f.read(depth, "local heap", addr, len).await?;
    let mut c = Cur::new(&head, addr, "local heap");
    c.signature("HEAP", "local heap")?;
    let version = c.u8()?;
    if version != 0 {
        return Err(Hdf5Error::UnsupportedVersion {
            what: "local heap",
            address: addr,
            version,
        });
    }
    c.skip(3)?;
    let size = c.length(s)?;
    let _free = c.length(s)?;
    let data = c
        .addr(s)?
        .ok_or_else(|| Hdf5Error::malformed("local heap", "undefined data segment address"))?;
    f.read(depth, "local heap data segment", data, size).await
}

/// The NUL-terminated string at `offset` of a local heap's data segment.
pub(crate) fn heap_string(heap: &[u8], offset: u64) -> Result<String> {
    let start = usize::try_from(offset)
        .ok()
        .filter(|o| *o < heap.len())
        .ok_or_else(|| Hdf5Error::malformed("local heap", format!("name offset {offset}")))?;
    let rest = heap.get(start..).unwrap_or(&[]);
    let end = rest
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| Hdf5Error::malformed("local heap", "unterminated name"))?;
    Ok(String::from_utf8_lossy(rest.get(..end).unwrap_or(&[])).into_owned())
}

/// Object `index` of the global heap collection at `addr`.
pub(crate) async fn global_heap_object(
    f: &Fetcher,
    s: Sizes,
    addr: u64,
    index: u32,
    depth: &mut u32,
) -> Result<Bytes> {
    let hlen = 8 + u64::from(s.length);
    // A collection is at least 4 KiB: fetch it whole with its header.
    let head = f
        .read_ahead(depth, "global heap collection", addr, hlen, 4096)
        .await?;
    let mut c = Cur::new(&head, addr, "global heap collection");
    c.signature("GCOL", "global heap collection")?;
    let version = c.u8()?;
    if version != 1 {
        return Err(Hdf5Error::UnsupportedVersion {
            what: "global heap collection",
            address: addr,
            version,
        });
    }
    c.skip(3)?;
    let size = c.length(s)?;
    let data = f.read(depth, "global heap collection", addr, size).await?;
    let mut c = Cur::new(&data, addr, "global heap collection");
    c.skip(hlen as usize)?;
    let obj_head = 8 + usize::from(s.length);
    while c.remaining() >= obj_head {
        let idx = c.u16()?;
        c.skip(6)?;
        let osize = c.length(s)?;
        if idx == 0 {
            break;
        }
        let n = usize::try_from(osize)
            .ok()
            .filter(|n| *n <= c.remaining())
            .ok_or_else(|| Hdf5Error::malformed("global heap object", format!("size {osize}")))?;
        let p = c.pos();
        if u32::from(idx) == index {
            return Ok(data.slice(p..p + n));
        }
        c.skip(n.div_ceil(8) * 8.min(c.remaining()))?;
    }
    Err(Hdf5Error::malformed(
        "global heap",
        format!("object {index} not in collection {addr}"),
    ))
}

/// An opened fractal heap: its parameters and the direct blocks of its managed space.
#[derive(Debug)]
pub(crate) struct FractalHeap {
    id_len: usize,
    off_size: usize,
    len_size: usize,
    /// (heap offset of the block, block size, file address)
    direct: Vec<(u64, u64, u64)>,
}

impl FractalHeap {
    pub(crate) async fn open(f: &Fetcher, s: Sizes, addr: u64, depth: &mut u32) -> Result<Self> {
        let (o, l) = (u64::from(s.offset), u64::from(s.length));
        let hlen = 4 + 1 + 2 + 2 + 1 + 4 + l + o + l + o + 8 * l + 2 + l + l + 2 + 2 + o + 2 + 4;
        let head = f
            .read_ahead(depth, "fractal heap header", addr, hlen, AHEAD_HEADER)
            .await?;
        let mut c = Cur::new(&head, addr, "fractal heap header");
        c.signature("FRHP", "fractal heap header")?;
        verify_checksum(
            &head,
            (hlen as usize).saturating_sub(4),
            "fractal heap header",
            addr,
        )?;
        let version = c.u8()?;
        if version != 0 {
            return Err(Hdf5Error::UnsupportedVersion {
                what: "fractal heap header",
                address: addr,
                version,
            });
        }
        let id_len = usize::from(c.u16()?);
        let filter_len = c.u16()?;
        let _flags = c.u8()?;
        let max_man = u64::from(c.u32()?);
        c.length(s)?; // next huge id
        c.addr(s)?; // huge object B-tree
        c.length(s)?; // free space
        c.addr(s)?; // free-space manager
        for _ in 0..8 {
            c.length(s)?;
        }
        let width = u64::from(c.u16()?);
        let start = c.length(s)?;
        let max_direct = c.length(s)?;
        let max_heap_bits = c.u16()?;
        let _start_rows = c.u16()?;
        let root = c.addr(s)?;
        let rows = c.u16()?;
        if filter_len != 0 {
            return Err(Hdf5Error::Unsupported("filtered fractal heap".into()));
        }
        if width == 0
            || width > 65536
            || !start.is_power_of_two()
            || !max_direct.is_power_of_two()
            || max_direct < start
            || max_heap_bits > 64
        {
            return Err(Hdf5Error::malformed(
                "fractal heap header",
                format!("width {width}, start block {start}, max direct block {max_direct}"),
            ));
        }
        let off_size = usize::from(max_heap_bits).div_ceil(8);
        let len_size = ((log2_floor(max_direct) as usize).div_ceil(8)).min(limit_enc_size(max_man));
        let mut heap = Self {
            id_len,
            off_size,
            len_size,
            direct: Vec::new(),
        };
        let Some(root) = root else { return Ok(heap) };
        if rows == 0 {
            heap.direct.push((0, start, root));
            return Ok(heap);
        }
        // Root indirect block: rows x width child entries.
        let max_direct_rows = u64::from(log2_floor(max_direct) - log2_floor(start)) + 2;
        let direct_rows = u64::from(rows).min(max_direct_rows);
        if u64::from(rows) > max_direct_rows {
            return Err(Hdf5Error::Unsupported(
                "fractal heap with nested indirect blocks".into(),
            ));
        }
        let n = direct_rows * width;
        let ilen = 4 + 1 + o + off_size as u64 + n * o + 4;
        let data = f
            .read(depth, "fractal heap indirect block", root, ilen)
            .await?;
        let mut c = Cur::new(&data, root, "fractal heap indirect block");
        c.signature("FHIB", "fractal heap indirect block")?;
        verify_checksum(
            &data,
            data.len().saturating_sub(4),
            "fractal heap indirect block",
            root,
        )?;
        c.skip(1)?;
        c.addr(s)?;
        c.uvar(off_size)?;
        let mut heap_off = 0u64;
        for row in 0..direct_rows {
            let size = if row == 0 {
                start
            } else {
                start
                    .checked_shl(u32::try_from(row - 1).unwrap_or(64))
                    .ok_or_else(|| Hdf5Error::malformed("fractal heap", "row size overflows"))?
            };
            for _ in 0..width {
                if let Some(a) = c.addr(s)? {
                    heap.direct.push((heap_off, size, a));
                }
                heap_off = heap_off
                    .checked_add(size)
                    .ok_or_else(|| Hdf5Error::malformed("fractal heap", "offset overflows"))?;
            }
        }
        Ok(heap)
    }

    /// The object with heap ID `id`.
    pub(crate) async fn get(&self, f: &Fetcher, id: &[u8], depth: &mut u32) -> Result<Bytes> {
        let mut c = Cur::new(id, 0, "fractal heap ID");
        let b0 = c.u8()?;
        if b0 >> 6 != 0 {
            return Err(Hdf5Error::malformed("fractal heap ID", "version"));
        }
        match (b0 >> 4) & 0x03 {
            0 => {
                let off = c.uvar(self.off_size)?;
                let len = c.uvar(self.len_size)?;
                let (boff, bsize, baddr) = self
                    .direct
                    .iter()
                    .find(|(o, sz, _)| off >= *o && off - *o < *sz)
                    .copied()
                    .ok_or_else(|| {
                        Hdf5Error::malformed("fractal heap", format!("no block holds offset {off}"))
                    })?;
                if (off - boff).saturating_add(len) > bsize {
                    return Err(Hdf5Error::malformed(
                        "fractal heap",
                        "object runs past its block",
                    ));
                }
                f.read(depth, "fractal heap object", baddr + (off - boff), len)
                    .await
            }
            2 => {
                let (len, skip) = if self.id_len > 18 {
                    let b1 = c.u8()?;
                    ((usize::from(b0 & 0x0f) << 8 | usize::from(b1)) + 1, 2)
                } else {
                    (usize::from(b0 & 0x0f) + 1, 1)
                };
                id.get(skip..skip + len)
                    .map(Bytes::copy_from_slice)
                    .ok_or_else(|| Hdf5Error::malformed("fractal heap ID", "tiny object length"))
            }
            _ => Err(Hdf5Error::Unsupported("huge fractal heap objects".into())),
        }
    }
}
