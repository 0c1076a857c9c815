//! Zarr v3 `sharding_indexed` with the index at the end: the chunks back to back, then per chunk
//! (C order) its offset and length as little-endian u64 (both `u64::MAX` for an empty chunk),
//! then the CRC32C of that index (`crc32c` index codec).

use crate::NativeError;

const EMPTY: u64 = u64::MAX;

/// The chunks of a stored shard (None where empty), checking the index and its checksum.
pub(crate) fn decode(shard: &[u8], chunks: usize) -> Result<Vec<Option<&[u8]>>, NativeError> {
    let bad = |what: &str| NativeError::Corrupt(format!("shard: {what}"));
    let index_len = chunks
        .checked_mul(16)
        .and_then(|n| n.checked_add(4))
        .ok_or_else(|| bad("index too large"))?;
    let body_len = shard
        .len()
        .checked_sub(index_len)
        .ok_or_else(|| bad("shorter than its index"))?;
    let (body, index) = shard.split_at(body_len);
    let (entries, crc) = index.split_at(chunks * 16);
    let stored = u32::from_le_bytes(crc.try_into().map_err(|_| bad("no checksum"))?);
    if crc32c::crc32c(entries) != stored {
        return Err(bad("index checksum mismatch"));
    }
    entries
        .chunks_exact(16)
        .map(|e| {
            let word = |r: std::ops::Range<usize>| {
                e.get(r)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_le_bytes)
            };
            let (off, len) = (word(0..8), word(8..16));
            match (off, len) {
                (Some(EMPTY), Some(EMPTY)) => Ok(None),
                (Some(off), Some(len)) => {
                    let end = off
                        .checked_add(len)
                        .ok_or_else(|| bad("chunk out of range"))?;
                    let (off, end) = (
                        usize::try_from(off).map_err(|_| bad("chunk out of range"))?,
                        usize::try_from(end).map_err(|_| bad("chunk out of range"))?,
                    );
                    body.get(off..end)
                        .map(Some)
                        .ok_or_else(|| bad("chunk out of range"))
                }
                _ => Err(bad("truncated index")),
            }
        })
        .collect()
}

/// A shard of these chunks (None where empty), or None if all are empty.
pub(crate) fn encode(chunks: &[Option<Vec<u8>>]) -> Option<Vec<u8>> {
    if chunks.iter().all(Option::is_none) {
        return None;
    }
    let body: usize = chunks.iter().flatten().map(Vec::len).sum();
    let mut out = Vec::with_capacity(body + chunks.len() * 16 + 4);
    let mut index = Vec::with_capacity(chunks.len() * 16);
    for c in chunks {
        match c {
            Some(b) => {
                index.extend_from_slice(&(out.len() as u64).to_le_bytes());
                index.extend_from_slice(&(b.len() as u64).to_le_bytes());
                out.extend_from_slice(b);
            }
            None => {
                index.extend_from_slice(&EMPTY.to_le_bytes());
                index.extend_from_slice(&EMPTY.to_le_bytes());
            }
        }
    }
    let crc = crc32c::crc32c(&index);
    out.extend_from_slice(&index);
    out.extend_from_slice(&crc.to_le_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shards_round_trip_and_a_flipped_index_bit_is_caught() {
        let chunks = vec![Some(b"abc".to_vec()), None, Some(b"defg".to_vec())];
        let s = encode(&chunks).unwrap();
        let back = decode(&s, 3).unwrap();
        assert_eq!(back, vec![Some(&b"abc"[..]), None, Some(&b"defg"[..])]);
        let mut bad = s.clone();
        let at = bad.len() - 10;
        bad[at] ^= 1;
        assert!(decode(&bad, 3).is_err());
        assert!(decode(&s[..10], 3).is_err());
        assert!(encode(&[None, None]).is_none());
    }
}
