//! One native chunk as a sequence of zstd frames, each holding a run of time steps. A zstd stream
//! of several frames decodes to their concatenation (Zarr's `zstd` codec reads it as one chunk),
//! so an update re-encodes only the frames its steps fall in: appending steps to a block splits
//! the trailing fill frame into a data frame and a shorter fill frame, and never decodes the rest.
//! Fill frames (steps with no granule) are recognised by their bytes, which depend only on their
//! length.

use std::collections::{BTreeMap, HashMap};

use crate::NativeError;

/// A run of time steps `[start, start + len)` of one chunk, encoded as one zstd frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub start: u32,
    pub len: u32,
    pub bytes: Vec<u8>,
    /// True if every value is the fill value.
    pub fill: bool,
}

/// Encodes frames for one array's chunks: the step size, the fill element and the level, with
/// the fill frames already made.
#[derive(Debug)]
pub(crate) struct FrameCodec {
    step_bytes: usize,
    fill_element: Vec<u8>,
    level: i32,
    fills: HashMap<u32, Vec<u8>>,
}

impl FrameCodec {
    pub fn new(step_bytes: usize, fill_element: Vec<u8>, level: i32) -> Self {
        Self {
            step_bytes,
            fill_element,
            level,
            fills: HashMap::new(),
        }
    }

    fn compress(&self, raw: &[u8]) -> Result<Vec<u8>, NativeError> {
        zstd::bulk::compress(raw, self.level).map_err(|e| NativeError::Codec(e.to_string()))
    }

    /// A frame's values: exactly its steps' bytes (no more is ever inflated).
    fn decode(&self, f: &Frame) -> Result<Vec<u8>, NativeError> {
        let want = f.len as usize * self.step_bytes;
        let raw = zstd::bulk::decompress(&f.bytes, want)
            .map_err(|e| NativeError::Corrupt(format!("native frame: {e}")))?;
        if raw.len() != want {
            return Err(NativeError::Corrupt(
                "native frame has the wrong size".into(),
            ));
        }
        Ok(raw)
    }

    /// The frame of `len` steps of fill values.
    fn fill_bytes(&mut self, len: u32) -> Result<Vec<u8>, NativeError> {
        if let Some(b) = self.fills.get(&len) {
            return Ok(b.clone());
        }
        let elements = self.step_bytes / self.fill_element.len().max(1) * len as usize;
        let raw: Vec<u8> = self
            .fill_element
            .iter()
            .copied()
            .cycle()
            .take(elements * self.fill_element.len())
            .collect();
        let b = self.compress(&raw)?;
        self.fills.insert(len, b.clone());
        Ok(b)
    }

    fn fill_frame(&mut self, start: u32, len: u32) -> Result<Frame, NativeError> {
        Ok(Frame {
            start,
            len,
            bytes: self.fill_bytes(len)?,
            fill: true,
        })
    }

    /// A chunk no one wrote yet: one fill frame over the whole block.
    pub fn empty(&mut self, block: u32) -> Result<Vec<Frame>, NativeError> {
        Ok(vec![self.fill_frame(0, block)?])
    }

    /// Splits a stored chunk into its frames; the frames must cover exactly `block` steps.
    pub fn parse(&mut self, chunk: &[u8], block: u32) -> Result<Vec<Frame>, NativeError> {
        let bad = |what: String| NativeError::Corrupt(format!("native chunk: {what}"));
        let mut frames = Vec::new();
        let (mut off, mut start) = (0usize, 0u32);
        while off < chunk.len() {
            let rest = &chunk[off..];
            let n = zstd::zstd_safe::find_frame_compressed_size(rest)
                .map_err(|c| bad(format!("not a zstd frame at byte {off} (code {c})")))?;
            let frame = &rest[..n.min(rest.len())];
            let content = zstd::zstd_safe::get_frame_content_size(frame)
                .ok()
                .flatten()
                .ok_or_else(|| bad(format!("frame at byte {off} has no content size")))?;
            let step = self.step_bytes as u64;
            if step == 0 || content % step != 0 {
                return Err(bad(format!("frame of {content} bytes is not whole steps")));
            }
            let len = u32::try_from(content / step)
                .ok()
                .filter(|l| start.checked_add(*l).is_some_and(|e| e <= block))
                .ok_or_else(|| bad(format!("frames cover more than {block} steps")))?;
            let fill = self.fill_bytes(len)?.as_slice() == frame;
            frames.push(Frame {
                start,
                len,
                bytes: frame.to_vec(),
                fill,
            });
            start += len;
            off += n;
        }
        if start != block {
            return Err(bad(format!("frames cover {start} of {block} steps")));
        }
        Ok(frames)
    }

    /// The frames with the steps of `updates` (step within the block -> that step's values,
    /// `step_bytes` long) replaced. Frames no update falls in are kept as they are; a fill frame
    /// is split around its new steps; a data frame is decoded, patched and re-encoded.
    pub fn apply(
        &mut self,
        frames: Vec<Frame>,
        updates: &BTreeMap<u32, &[u8]>,
    ) -> Result<Vec<Frame>, NativeError> {
        let mut out = Vec::with_capacity(frames.len() + 2);
        for f in frames {
            let end = f.start + f.len;
            let ups: Vec<(u32, &[u8])> =
                updates.range(f.start..end).map(|(s, v)| (*s, *v)).collect();
            if ups.is_empty() {
                out.push(f);
            } else if f.fill {
                let mut cur = f.start;
                let mut i = 0;
                while i < ups.len() {
                    let first = ups[i].0;
                    if first > cur {
                        out.push(self.fill_frame(cur, first - cur)?);
                    }
                    let mut raw = Vec::new();
                    let mut j = i;
                    while j < ups.len() && ups[j].0 == first + (j - i) as u32 {
                        raw.extend_from_slice(ups[j].1);
                        j += 1;
                    }
                    let len = (j - i) as u32;
                    out.push(Frame {
                        start: first,
                        len,
                        bytes: self.compress(&raw)?,
                        fill: false,
                    });
                    cur = first + len;
                    i = j;
                }
                if cur < end {
                    out.push(self.fill_frame(cur, end - cur)?);
                }
            } else {
                let mut raw = self.decode(&f)?;
                for (s, v) in ups {
                    let at = (s - f.start) as usize * self.step_bytes;
                    raw[at..at + self.step_bytes].copy_from_slice(v);
                }
                out.push(Frame {
                    start: f.start,
                    len: f.len,
                    bytes: self.compress(&raw)?,
                    fill: false,
                });
            }
        }
        Ok(out)
    }
}

impl FrameCodec {
    /// The frames with every run of consecutive data frames merged into one frame, if there are
    /// more than `max` frames: each update adds a frame, and short frames compress worse (no
    /// shared context) and cost a little to read, so a chunk is compacted once it has many.
    pub fn compact(&mut self, frames: Vec<Frame>, max: usize) -> Result<Vec<Frame>, NativeError> {
        if frames.len() <= max {
            return Ok(frames);
        }
        let mut out: Vec<Frame> = Vec::new();
        let mut run: Vec<Frame> = Vec::new();
        let flush =
            |run: &mut Vec<Frame>, out: &mut Vec<Frame>, this: &Self| -> Result<(), NativeError> {
                match run.len() {
                    0 => {}
                    1 => out.append(run),
                    _ => {
                        let start = run[0].start;
                        let mut len = 0u32;
                        let mut raw = Vec::new();
                        for f in run.drain(..) {
                            raw.extend_from_slice(&this.decode(&f)?);
                            len += f.len;
                        }
                        out.push(Frame {
                            start,
                            len,
                            bytes: this.compress(&raw)?,
                            fill: false,
                        });
                    }
                }
                Ok(())
            };
        for f in frames {
            if f.fill {
                flush(&mut run, &mut out, self)?;
                out.push(f);
            } else {
                run.push(f);
            }
        }
        flush(&mut run, &mut out, self)?;
        Ok(out)
    }
}

/// The stored chunk: its frames back to back, or None if every step is fill (the shard then
/// marks the chunk empty and readers see the fill value).
pub(crate) fn encode(frames: &[Frame]) -> Option<Vec<u8>> {
    if frames.iter().all(|f| f.fill) {
        return None;
    }
    Some(
        frames
            .iter()
            .flat_map(|f| f.bytes.iter().copied())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn decode(b: &[u8], len: usize) -> Vec<u8> {
        // What a reader does: the frames as one zstd stream.
        let mut out = Vec::new();
        zstd::stream::copy_decode(b, &mut out).unwrap();
        assert_eq!(out.len(), len);
        out
    }

    #[test]
    fn appends_split_the_fill_frame_and_late_steps_patch_in_place() {
        let fill = (-9999.9f32).to_le_bytes().to_vec();
        let mut c = FrameCodec::new(8, fill.clone(), 3);
        let frames = c.empty(10).unwrap();
        assert!(encode(&frames).is_none());
        let step = |v: f32| [v.to_le_bytes(), v.to_le_bytes()].concat();
        let (s3, s4, s7) = (step(3.0), step(4.0), step(7.0));
        let ups = BTreeMap::from([(3, &s3[..]), (4, &s4[..]), (7, &s7[..])]);
        let frames = c.apply(frames, &ups).unwrap();
        let kinds: Vec<_> = frames.iter().map(|f| (f.start, f.len, f.fill)).collect();
        assert_eq!(
            kinds,
            [
                (0, 3, true),
                (3, 2, false),
                (5, 2, true),
                (7, 1, false),
                (8, 2, true)
            ]
        );
        let bytes = encode(&frames).unwrap();
        let raw = decode(&bytes, 80);
        assert_eq!(&raw[24..40], [s3.clone(), s4.clone()].concat());
        assert_eq!(&raw[0..4], &fill[..]);
        // Read back and replace step 4: only its frame changes.
        let parsed = c.parse(&bytes, 10).unwrap();
        assert_eq!(parsed, frames);
        let s4b = step(40.0);
        let again = c.apply(parsed, &BTreeMap::from([(4, &s4b[..])])).unwrap();
        assert_eq!(again[0], frames[0]);
        assert_eq!(again[3..], frames[3..]);
        let raw = decode(&encode(&again).unwrap(), 80);
        assert_eq!(&raw[32..40], &s4b[..]);
        assert_eq!(&raw[56..64], &s7[..]);
    }

    #[test]
    fn compaction_merges_runs_of_data_frames_and_keeps_the_values() {
        let mut c = FrameCodec::new(4, vec![0xff; 4], 3);
        let mut frames = c.empty(12).unwrap();
        let vals: Vec<[u8; 4]> = (0..12u32).map(|i| (i * 7).to_le_bytes()).collect();
        for s in [0u32, 1, 2, 5, 6, 9] {
            frames = c
                .apply(frames, &BTreeMap::from([(s, &vals[s as usize][..])]))
                .unwrap();
        }
        let before = zstd::stream::decode_all(&encode(&frames).unwrap()[..]).unwrap();
        assert!(frames.len() > 6, "{}", frames.len());
        let same = c.compact(frames.clone(), 100).unwrap();
        assert_eq!(same, frames, "under the limit nothing changes");
        let compacted = c.compact(frames, 2).unwrap();
        let kinds: Vec<_> = compacted.iter().map(|f| (f.start, f.len, f.fill)).collect();
        assert_eq!(
            kinds,
            [
                (0, 3, false),
                (3, 2, true),
                (5, 2, false),
                (7, 2, true),
                (9, 1, false),
                (10, 2, true)
            ]
        );
        let after = zstd::stream::decode_all(&encode(&compacted).unwrap()[..]).unwrap();
        assert_eq!(after, before);
    }

    #[test]
    fn chunks_that_do_not_cover_the_block_are_corrupt() {
        let mut c = FrameCodec::new(4, vec![0, 0, 0, 0], 3);
        let frames = c.empty(5).unwrap();
        let mut b = frames[0].bytes.clone();
        assert!(c.parse(&b, 6).is_err());
        b.extend_from_slice(&frames[0].bytes);
        assert!(c.parse(&b, 5).is_err());
        assert!(c.parse(b"not zstd", 5).is_err());
    }
}
