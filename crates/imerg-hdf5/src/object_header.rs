//! Object headers (version 1 and version 2 "OHDR"), with their continuation blocks, read into a
//! flat list of messages. Continuation chains are bounded and checked for cycles.

use std::collections::HashSet;

use bytes::Bytes;

use crate::cursor::{Cur, Sizes, verify_checksum};
use crate::error::{Hdf5Error, Result};
use crate::reader::{AHEAD_HEADER, Fetcher};

/// One header message: type, flags and its bytes.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub kind: u16,
    pub flags: u8,
    pub data: Bytes,
}

pub(crate) const MSG_CONTINUATION: u16 = 0x10;
/// Most continuation blocks followed for one header.
const MAX_CONTINUATIONS: usize = 1024;
/// Largest header block (chunk) accepted.
const MAX_HEADER_BLOCK: u64 = 1 << 20;

fn block_len(what: &'static str, len: u64) -> Result<u64> {
    if len > MAX_HEADER_BLOCK {
        return Err(Hdf5Error::LimitExceeded {
            what,
            value: len,
            limit: MAX_HEADER_BLOCK,
        });
    }
    Ok(len)
}

/// Reads every message of the object header at `addr`.
pub(crate) async fn read_object_header(
    f: &Fetcher,
    s: Sizes,
    addr: u64,
    depth: &mut u32,
) -> Result<Vec<Message>> {
    let eof = f.eof();
    let head_len = 16.min(eof.saturating_sub(addr)).max(1);
    let head = f
        .read_ahead(depth, "object header", addr, head_len, AHEAD_HEADER)
        .await?;
    let mut out = Vec::new();
    let mut pending: Vec<(u64, u64)> = Vec::new();
    let v2 = head.starts_with(b"OHDR");
    let mut crt_order = false;
    if v2 {
        // Version 2: prefix, then chunk 0.
        let prefix_max = 4 + 1 + 1 + 16 + 4 + 8;
        let pre = f
            .read(depth, "object header", addr, prefix_max.min(eof - addr))
            .await?;
        let mut c = Cur::new(&pre, addr, "object header");
        c.skip(4)?;
        let version = c.u8()?;
        if version != 2 {
            return Err(Hdf5Error::UnsupportedVersion {
                what: "object header",
                address: addr,
                version,
            });
        }
        let flags = c.u8()?;
        crt_order = flags & 0x04 != 0;
        if flags & 0x20 != 0 {
            c.skip(16)?;
        }
        if flags & 0x10 != 0 {
            c.skip(4)?;
        }
        let size = block_len("object header chunk", c.uvar(1 << (flags & 0x03))?)?;
        let prefix = c.pos() as u64;
        let start = addr + prefix;
        // Messages, then a 4-byte checksum over the whole chunk.
        let total = prefix + size;
        let full = f.read(depth, "object header", addr, total + 4).await?;
        verify_checksum(&full, total as usize, "object header", addr)?;
        let body = full.slice(prefix as usize..);
        parse_v2_messages(s, &body, start, size, crt_order, &mut out, &mut pending)?;
    } else {
        let mut c = Cur::new(&head, addr, "object header");
        let version = c.u8()?;
        if version != 1 {
            return Err(Hdf5Error::BadSignature {
                what: "object header",
                address: addr,
                found: format!("version byte {version}"),
                expected: "OHDR or version 1",
            });
        }
        c.skip(1)?;
        let _nmsgs = c.u16()?;
        c.skip(4)?;
        let size = block_len("object header chunk", u64::from(c.u32()?))?;
        let start = addr + 16;
        let body = f.read(depth, "object header", start, size).await?;
        parse_v1_messages(s, &body, start, &mut out, &mut pending)?;
    }
    let mut seen: HashSet<u64> = HashSet::from([addr]);
    let mut followed = 0usize;
    while !pending.is_empty() {
        // All continuations known at this point are independent: fetch them together.
        let wave = std::mem::take(&mut pending);
        for (a, _) in &wave {
            if !seen.insert(*a) {
                return Err(Hdf5Error::Cycle {
                    what: "object header continuation",
                    address: *a,
                });
            }
        }
        followed += wave.len();
        if followed > MAX_CONTINUATIONS {
            return Err(Hdf5Error::LimitExceeded {
                what: "object header continuations",
                value: followed as u64,
                limit: MAX_CONTINUATIONS as u64,
            });
        }
        let start_depth = *depth;
        let reads = wave.iter().map(|(a, len)| async move {
            let mut d = start_depth;
            let len = block_len("object header continuation", *len)?;
            let data = f
                .read(&mut d, "object header continuation", *a, len)
                .await?;
            Ok::<_, Hdf5Error>((*a, data, d))
        });
        for (a, data, d) in futures::future::try_join_all(reads).await? {
            *depth = (*depth).max(d);
            if v2 {
                let mut c = Cur::new(&data, a, "object header continuation");
                c.signature("OCHK", "object header continuation")?;
                verify_checksum(
                    &data,
                    data.len().saturating_sub(4),
                    "object header continuation",
                    a,
                )?;
                let size = (data.len() as u64).checked_sub(8).ok_or_else(|| {
                    Hdf5Error::malformed("object header continuation", "shorter than 8 bytes")
                })?;
                let body = data.slice(4..);
                parse_v2_messages(s, &body, a + 4, size, crt_order, &mut out, &mut pending)?;
            } else {
                parse_v1_messages(s, &data, a, &mut out, &mut pending)?;
            }
        }
    }
    Ok(out)
}

fn continuation(data: &[u8], base: u64, s: Sizes) -> Result<(u64, u64)> {
    let mut c = Cur::new(data, base, "continuation message");
    let a = c
        .addr(s)?
        .ok_or_else(|| Hdf5Error::malformed("continuation message", "undefined address"))?;
    let len = c.length(s)?;
    Ok((a, len))
}

fn push_message(
    s: Sizes,
    kind: u16,
    flags: u8,
    data: Bytes,
    base: u64,
    out: &mut Vec<Message>,
    pending: &mut Vec<(u64, u64)>,
) -> Result<()> {
    if kind == MSG_CONTINUATION {
        pending.push(continuation(&data, base, s)?);
    } else if kind != 0 {
        out.push(Message { kind, flags, data });
    }
    Ok(())
}

fn parse_v1_messages(
    s: Sizes,
    body: &Bytes,
    base: u64,
    out: &mut Vec<Message>,
    pending: &mut Vec<(u64, u64)>,
) -> Result<()> {
    let mut c = Cur::new(body, base, "object header message");
    while c.remaining() >= 8 {
        let kind = c.u16()?;
        let size = usize::from(c.u16()?);
        let flags = c.u8()?;
        c.skip(3)?;
        let start = c.pos();
        c.skip(size)?;
        let data = body.slice(start..start + size);
        push_message(s, kind, flags, data, base + start as u64, out, pending)?;
    }
    Ok(())
}

fn parse_v2_messages(
    s: Sizes,
    body: &Bytes,
    base: u64,
    size: u64,
    crt_order: bool,
    out: &mut Vec<Message>,
    pending: &mut Vec<(u64, u64)>,
) -> Result<()> {
    let size = usize::try_from(size)
        .ok()
        .filter(|n| *n <= body.len())
        .ok_or_else(|| Hdf5Error::malformed("object header", "chunk larger than read"))?;
    let body = body.slice(..size);
    let hdr = if crt_order { 6 } else { 4 };
    let mut c = Cur::new(&body, base, "object header message");
    while c.remaining() >= hdr {
        let kind = u16::from(c.u8()?);
        let msize = usize::from(c.u16()?);
        let flags = c.u8()?;
        if crt_order {
            c.skip(2)?;
        }
        let start = c.pos();
        c.skip(msize)?;
        let data = body.slice(start..start + msize);
        push_message(s, kind, flags, data, base + start as u64, out, pending)?;
    }
    Ok(())
}
