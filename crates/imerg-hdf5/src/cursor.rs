//! A bounds-checked little-endian cursor over one metadata structure. Every read returns a typed
//! error when the structure is shorter than its fields say; nothing indexes unchecked.

use crate::error::{Hdf5Error, Result};

/// Sizes of file addresses ("offsets") and lengths, from the superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub offset: u8,
    pub length: u8,
}

#[derive(Debug, Clone)]
pub(crate) struct Cur<'a> {
    buf: &'a [u8],
    pos: usize,
    /// File address of `buf[0]` (for messages).
    pub(crate) base: u64,
    what: &'static str,
}

impl<'a> Cur<'a> {
    pub(crate) fn new(buf: &'a [u8], base: u64, what: &'static str) -> Self {
        Self {
            buf,
            pos: 0,
            base,
            what,
        }
    }

    fn short(&self, n: usize) -> Hdf5Error {
        Hdf5Error::malformed(
            self.what,
            format!(
                "structure at {} is {} bytes, needs {} more at {}",
                self.base,
                self.buf.len(),
                n,
                self.pos
            ),
        )
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.short(n))?;
        let s = self.buf.get(self.pos..end).ok_or_else(|| self.short(n))?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn skip(&mut self, n: usize) -> Result<()> {
        self.bytes(n).map(|_| ())
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?.first().copied().unwrap_or(0))
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(self.uvar(2)? as u16)
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(self.uvar(4)? as u32)
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        self.uvar(8)
    }

    /// An unsigned little-endian integer of `n` (0..=8) bytes.
    pub(crate) fn uvar(&mut self, n: usize) -> Result<u64> {
        if n > 8 {
            return Err(Hdf5Error::malformed(
                self.what,
                format!("integer field of {n} bytes"),
            ));
        }
        let b = self.bytes(n)?;
        Ok(b.iter()
            .rev()
            .fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
    }

    /// A file address; `None` for the undefined address (all bits set).
    pub(crate) fn addr(&mut self, s: Sizes) -> Result<Option<u64>> {
        let n = usize::from(s.offset);
        let v = self.uvar(n)?;
        let undef = if n >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * n)) - 1
        };
        Ok((v != undef).then_some(v))
    }

    pub(crate) fn length(&mut self, s: Sizes) -> Result<u64> {
        self.uvar(usize::from(s.length))
    }

    pub(crate) fn signature(&mut self, sig: &'static str, what: &'static str) -> Result<()> {
        let address = self.base + self.pos as u64;
        let found = self.bytes(sig.len())?;
        if found != sig.as_bytes() {
            return Err(Hdf5Error::BadSignature {
                what,
                address,
                found: String::from_utf8_lossy(found).into_owned(),
                expected: sig,
            });
        }
        Ok(())
    }
}

/// Bytes needed to encode values up to `n` (HDF5's `H5VM_limit_enc_size`).
pub(crate) fn limit_enc_size(n: u64) -> usize {
    (log2_floor(n) / 8) as usize + 1
}

/// floor(log2(n)), 0 for 0.
pub(crate) fn log2_floor(n: u64) -> u32 {
    if n == 0 { 0 } else { 63 - n.leading_zeros() }
}

/// Converts a file-derived count to `usize`, refusing more than `limit`.
pub(crate) fn bounded(what: &'static str, value: u64, limit: u64) -> Result<usize> {
    if value > limit {
        return Err(Hdf5Error::LimitExceeded { what, value, limit });
    }
    usize::try_from(value).map_err(|_| Hdf5Error::LimitExceeded {
        what,
        value,
        limit: usize::MAX as u64,
    })
}

/// Bob Jenkins' lookup3 `hashlittle`, the checksum of HDF5's version-2 structures
/// (`H5_checksum_lookup3` with an initial value of 0).
pub(crate) fn lookup3(data: &[u8]) -> u32 {
    fn word(b: &[u8]) -> u32 {
        b.iter()
            .enumerate()
            .fold(0u32, |acc, (i, x)| acc | (u32::from(*x) << (8 * i)))
    }
    let mut a = 0xdead_beef_u32.wrapping_add(data.len() as u32);
    let (mut b, mut c) = (a, a);
    let mut k = data;
    while k.len() > 12 {
        let (blk, rest) = k.split_at(12);
        a = a.wrapping_add(word(blk.get(0..4).unwrap_or(&[])));
        b = b.wrapping_add(word(blk.get(4..8).unwrap_or(&[])));
        c = c.wrapping_add(word(blk.get(8..12).unwrap_or(&[])));
        a = a.wrapping_sub(c) ^ c.rotate_left(4);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a) ^ a.rotate_left(6);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b) ^ b.rotate_left(8);
        b = b.wrapping_add(a);
        a = a.wrapping_sub(c) ^ c.rotate_left(16);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a) ^ a.rotate_left(19);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b) ^ b.rotate_left(4);
        b = b.wrapping_add(a);
        k = rest;
    }
    if k.is_empty() {
        return c;
    }
    a = a.wrapping_add(word(k.get(0..4.min(k.len())).unwrap_or(&[])));
    if k.len() > 4 {
        b = b.wrapping_add(word(k.get(4..8.min(k.len())).unwrap_or(&[])));
    }
    if k.len() > 8 {
        c = c.wrapping_add(word(k.get(8..).unwrap_or(&[])));
    }
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(24));
    c
}

/// Checks the lookup3 checksum stored at `data[end..end + 4]` over `data[..end]`.
pub(crate) fn verify_checksum(
    data: &[u8],
    end: usize,
    what: &'static str,
    address: u64,
) -> Result<()> {
    let body = data
        .get(..end)
        .ok_or_else(|| Hdf5Error::malformed(what, "checksum outside the structure"))?;
    let stored = data
        .get(end..end + 4)
        .ok_or_else(|| Hdf5Error::malformed(what, "checksum outside the structure"))?;
    let stored = u32::from_le_bytes([
        stored.first().copied().unwrap_or(0),
        stored.get(1).copied().unwrap_or(0),
        stored.get(2).copied().unwrap_or(0),
        stored.get(3).copied().unwrap_or(0),
    ]);
    let computed = lookup3(body);
    if stored != computed {
        return Err(Hdf5Error::Checksum {
            what,
            address,
            stored,
            computed,
        });
    }
    Ok(())
}
