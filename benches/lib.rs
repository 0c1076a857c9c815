//! Shared fixtures for the benchmarks: synthetic granules made by the project's own generator.

use imerg_catalog::{GranuleId, ProductProfile, parse_time};
use imerg_refs::SourceObject;
use imerg_synth::{SynthOptions, write_granule};

/// One synthetic granule's bytes with its identity and source description.
#[derive(Debug)]
pub struct GranuleFixture {
    pub bytes: Vec<u8>,
    pub id: GranuleId,
    pub source: SourceObject,
    pub profile: ProductProfile,
}

/// Writes one granule (Final V07B, 1998 filters: deflate 6, no shuffle) and reads it back.
pub fn granule_fixture(start: &str, opts: &SynthOptions) -> std::io::Result<GranuleFixture> {
    let profile = ProductProfile::final_v07b();
    let id = parse_time(start)
        .and_then(|t| profile.granule_at(t))
        .map_err(std::io::Error::other)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(&id.key);
    write_granule(&path, &profile, id.start, opts).map_err(std::io::Error::other)?;
    let bytes = std::fs::read(&path)?;
    let source = SourceObject {
        url: profile.url_of_key(&id.key),
        etag: Some("\"bench\"".into()),
        last_modified: None,
        size: bytes.len() as u64,
    };
    Ok(GranuleFixture {
        bytes,
        id,
        source,
        profile,
    })
}

/// A copy of `g` moved by `days` whole days: new start, time index, key, URL and chunk indices.
/// The references then point at objects that need not exist, which is all a writer benchmark
/// needs (the writer never reads the source).
pub fn shift_days(
    g: &imerg_refs::GranuleRefs,
    days: i64,
    profile: &ProductProfile,
    url_prefix: &str,
) -> imerg_refs::GranuleRefs {
    let mut s = g.clone();
    s.start = g.start + chrono::Duration::days(days);
    let steps = days * 24 * 60 / i64::from(profile.cadence_minutes);
    s.time_index = (g.time_index as i64 + steps) as u64;
    s.key = profile.key(s.start);
    s.url = format!("{url_prefix}{}", s.key);
    for v in s.variables.values_mut() {
        for r in &mut v.refs {
            r.chunk[0] = s.time_index;
        }
    }
    s
}

/// Peak resident set size of this process, in bytes (Linux `VmHWM`).
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// Median of a sample (sorted copy).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}
