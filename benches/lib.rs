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

/// Median of a sample (sorted copy).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}
