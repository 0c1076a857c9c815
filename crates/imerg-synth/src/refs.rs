//! Synthetic references: the [`GranuleRefs`] the virtualizer would produce for a granule, made
//! without writing or reading a file. Keys and URLs are real, and offsets and lengths are
//! realistic: a header, then each variable's chunks back to back, 20 KB - 400 KB each. Layout, Zarr
//! metadata and coordinates are the product's. This lets simulations and benchmarks build stores
//! far bigger than the files one could write (the full Final record is about 450,000 granules).

use std::collections::BTreeMap;

use imerg_catalog::{CatalogError, ProductProfile, TimeRange};
use imerg_refs::{
    ChunkRef, Codec, CoordArray, Coords, Endian, FillValue, GranuleRefs, Layout, TimeCoord,
    VariableLayout, VariableRefs, array_metadata,
};

use crate::data::{FILL_F32, FILL_I16};
use crate::{TIME_UNITS, grid_centres, mix};

/// Makes the synthetic references of one product's granules. What every granule shares (layout,
/// Zarr metadata, coordinates) is built once, so each granule costs only its references.
#[derive(Debug, Clone)]
pub struct RefsGenerator {
    profile: ProductProfile,
    url_prefix: String,
    layout: Layout,
    fingerprint: String,
    zarr: BTreeMap<String, serde_json::Value>,
    coords: Coords,
}

impl RefsGenerator {
    /// A generator for `profile`'s granules. Each granule's URL is `url_prefix` followed by its
    /// key: `profile.bucket_url` for the product's bucket, `file:///dir/` for a local copy.
    pub fn new(profile: &ProductProfile, url_prefix: &str) -> Self {
        let g = &profile.layout.grid;
        let (lon, lat) = grid_centres(g.n_lon as usize, g.n_lat as usize, 0.0);
        let bnds = |v: &[f32]| {
            v.iter()
                .flat_map(|x| [x - 0.05, x + 0.05])
                .collect::<Vec<_>>()
        };
        let coord = |values: Vec<f32>, shape: Vec<u64>| CoordArray {
            shape,
            values,
            attributes: serde_json::Map::new(),
        };
        let coords = Coords {
            time: TimeCoord {
                value: 0,
                bounds: [0, 1800],
                units: TIME_UNITS.into(),
                calendar: "julian".into(),
                attributes: serde_json::Map::new(),
            },
            lon_bnds: coord(bnds(&lon), vec![g.n_lon, 2]),
            lat_bnds: coord(bnds(&lat), vec![g.n_lat, 2]),
            lon: coord(lon, vec![g.n_lon]),
            lat: coord(lat, vec![g.n_lat]),
        };
        let variables: Vec<VariableLayout> = profile
            .layout
            .variables
            .iter()
            .map(|v| VariableLayout {
                name: v.name.clone(),
                dtype: v.dtype.clone(),
                grid: [g.n_lon, g.n_lat],
                chunk: v.chunk,
                fill_value: if v.dtype == "int16" {
                    FillValue::Int(i64::from(FILL_I16))
                } else {
                    FillValue::Float(f64::from(FILL_F32))
                },
                codecs: vec![
                    Codec::Bytes {
                        endian: Endian::Little,
                    },
                    Codec::Zlib { level: 6 },
                ],
            })
            .collect();
        let zarr = variables
            .iter()
            .map(|v| {
                (
                    v.name.clone(),
                    array_metadata(v, 1, &serde_json::Map::new()),
                )
            })
            .collect();
        let layout = Layout {
            variables,
            coords_digest: coords.spatial_digest(),
        };
        Self {
            profile: profile.clone(),
            url_prefix: url_prefix.to_string(),
            fingerprint: layout.fingerprint(),
            layout,
            zarr,
            coords,
        }
    }

    /// The references of the granule at `time_index`. Lengths and the header size are derived
    /// from the time index, so the same index always gives the same references.
    pub fn granule(&self, time_index: u64) -> GranuleRefs {
        let profile = &self.profile;
        let start = profile.start_of(time_index);
        let key = profile.key(start);
        let grid = &profile.layout.grid;
        let mut offset = 60_000 + mix(time_index) % 40_000;
        let mut variables = BTreeMap::new();
        for (n, v) in profile.layout.variables.iter().enumerate() {
            let mut refs = Vec::new();
            for i in 0..grid.n_lon.div_ceil(v.chunk[1]) {
                for j in 0..grid.n_lat.div_ceil(v.chunk[2]) {
                    let length = 20_000 + mix(time_index * 131 + n as u64 * 17 + i) % 380_000;
                    refs.push(ChunkRef {
                        chunk: [time_index, i, j],
                        offset,
                        length,
                    });
                    offset += length;
                }
            }
            variables.insert(
                v.name.clone(),
                VariableRefs {
                    zarr: self.zarr.get(&v.name).cloned().unwrap_or_default(),
                    refs,
                },
            );
        }
        GranuleRefs {
            url: format!("{}{key}", self.url_prefix),
            key,
            product: profile.id.clone(),
            start,
            time_index,
            etag: Some(format!(
                "\"{:032x}\"",
                mix(time_index) as u128 * 0x1_0000_0001
            )),
            // NASA writes a granule a few hours after its end (Final: months; the value only
            // needs to be realistic in size, a second-resolution time).
            last_modified: Some(start + chrono::Duration::hours(4)),
            size: offset,
            variables,
            coords: self.coords.clone(),
            layout: self.layout.clone(),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

/// The synthetic references of every granule of `range` (clipped to the product's record), in
/// time order. They are made lazily, one granule at a time, so a whole record fits in memory
/// batch by batch. See [`RefsGenerator::new`] for `url_prefix`.
pub fn synthetic_refs(
    profile: &ProductProfile,
    range: TimeRange,
    url_prefix: &str,
) -> impl Iterator<Item = GranuleRefs> + use<> {
    let first = profile.first_index_at_or_after(range.start);
    let indices = first..first + profile.expected_count(range);
    let generator = RefsGenerator::new(profile, url_prefix);
    indices.map(move |i| generator.granule(i))
}

/// Why [`shift`] could not move a granule.
#[derive(Debug, thiserror::Error)]
pub enum ShiftError {
    #[error("{key} moved by {steps} time steps would start before the record")]
    BeforeRecord { key: String, steps: i64 },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("URL {url} does not end with its key {key}")]
    UrlWithoutKey { url: String, key: String },
}

/// A copy of `g` (a granule of `profile`) moved by `steps` time steps of the product's cadence
/// (negative: back in time). Start, time index, key, URL and every chunk index move together.
/// The URL keeps `g`'s prefix. Everything else, the source's size, ETag and last-modified time
/// included, is copied unchanged. The copy points at an object that need not exist, which is all
/// a writer needs: it never reads the source.
pub fn shift(
    g: &GranuleRefs,
    profile: &ProductProfile,
    steps: i64,
) -> Result<GranuleRefs, ShiftError> {
    let url_prefix = g
        .url
        .strip_suffix(&g.key)
        .ok_or_else(|| ShiftError::UrlWithoutKey {
            url: g.url.clone(),
            key: g.key.clone(),
        })?;
    let time_index =
        g.time_index
            .checked_add_signed(steps)
            .ok_or_else(|| ShiftError::BeforeRecord {
                key: g.key.clone(),
                steps,
            })?;
    let id = profile.granule_at_index(time_index)?;
    let mut s = g.clone();
    s.url = format!("{url_prefix}{}", id.key);
    s.key = id.key;
    s.start = id.start;
    s.time_index = id.time_index;
    for v in s.variables.values_mut() {
        for r in &mut v.refs {
            r.chunk[0] = s.time_index;
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use imerg_catalog::parse_time;

    use super::*;

    const PREFIX: &str = "file:///data/bucket/";

    fn day(profile: &ProductProfile, date: &str) -> Vec<GranuleRefs> {
        let start = parse_time(date).unwrap();
        let range = TimeRange::new(start, start + chrono::Duration::days(1)).unwrap();
        synthetic_refs(profile, range, PREFIX).collect()
    }

    #[test]
    fn every_granule_of_the_range_with_88_references() {
        let p = ProductProfile::final_v07b();
        let gs = day(&p, "2010-06-01");
        assert_eq!(gs.len(), 48);
        assert_eq!(p.layout.refs_per_granule(), 88);
        for (g, id) in gs.iter().zip(p.expected(TimeRange {
            start: gs[0].start,
            end: gs[0].start + chrono::Duration::days(1),
        })) {
            assert_eq!(
                (g.time_index, &g.start, &g.key),
                (id.time_index, &id.start, &id.key)
            );
            assert_eq!(g.url, format!("{PREFIX}{}", id.key));
            assert_eq!(g.product, p.id);
            assert_eq!(g.ref_count(), 88);
            assert_eq!(g.fingerprint, g.layout.fingerprint());
        }
    }

    #[test]
    fn chunks_start_with_the_time_index_and_lie_back_to_back() {
        let p = ProductProfile::final_v07b();
        let g = RefsGenerator::new(&p, PREFIX).granule(12_345);
        assert_eq!(g.variables.len(), p.layout.variables.len());
        let mut end = None;
        // Stored in the layout's order: a header, then one variable after the other.
        for spec in &p.layout.variables {
            let (name, v) = (&spec.name, &g.variables[&spec.name]);
            assert!(!v.zarr.is_null(), "{name} has Zarr metadata");
            assert_eq!(v.refs.len() as u64, spec.chunks_per_granule(&p.layout.grid));
            for r in &v.refs {
                assert_eq!(r.chunk[0], 12_345);
                assert!((20_000..400_000).contains(&r.length), "{r:?}");
                if let Some(end) = end {
                    assert_eq!(r.offset, end, "{name}: no gap, no overlap");
                }
                end = Some(r.offset + r.length);
            }
        }
        assert_eq!(end, Some(g.size), "the last chunk ends the file");
    }

    #[test]
    fn the_same_index_gives_the_same_references() {
        let p = ProductProfile::final_v07b();
        let a = RefsGenerator::new(&p, PREFIX);
        let b = RefsGenerator::new(&p, PREFIX);
        assert_eq!(a.granule(7), b.granule(7));
        assert_ne!(a.granule(7).size, a.granule(8).size);
    }

    #[test]
    fn shifting_moves_index_key_url_and_chunks_together() {
        let p = ProductProfile::final_v07b();
        let g = &day(&p, "2021-01-01")[3];
        let back = shift(g, &p, -365 * 48).unwrap();
        let expected = p
            .granule_at(parse_time("2020-01-02T01:30:00Z").unwrap())
            .unwrap();
        assert_eq!(
            (back.time_index, back.start, &back.key),
            (expected.time_index, expected.start, &expected.key)
        );
        assert_eq!(back.url, format!("{PREFIX}{}", expected.key));
        assert!(
            back.variables
                .values()
                .flat_map(|v| &v.refs)
                .all(|r| r.chunk[0] == expected.time_index)
        );
        assert_eq!((back.size, &back.etag), (g.size, &g.etag));
        assert_eq!(shift(&back, &p, 365 * 48).unwrap(), *g);
    }

    #[test]
    fn shifting_out_of_the_record_or_with_a_foreign_url_fails() {
        let p = ProductProfile::final_v07b();
        let g = RefsGenerator::new(&p, PREFIX).granule(2);
        assert!(matches!(
            shift(&g, &p, -3),
            Err(ShiftError::BeforeRecord { .. })
        ));
        let mut odd = g.clone();
        odd.url = "file:///elsewhere/granule.h5".into();
        assert!(matches!(
            shift(&odd, &p, 1),
            Err(ShiftError::UrlWithoutKey { .. })
        ));
    }
}
