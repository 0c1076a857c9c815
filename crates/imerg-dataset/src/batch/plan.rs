//! Which granules of a batch to write, decided without the store: each granule is rejected
//! (product, source container, time, layout) or accepted, then each accepted one is compared with
//! what the store holds at its time index (added, duplicate or replaced).

use std::collections::BTreeMap;

use icechunk::format::manifest::Checksum;
use imerg_catalog::ProductProfile;
use imerg_refs::{GranuleRefs, Layout};

use super::{GranuleOutcome, checksum_of, untrusted, version_text};
use crate::DatasetError;

/// The references the store holds for one time step of the first variable: enough to tell the
/// same source version from a replaced one (every chunk is compared, not one: a rewrite within
/// the same second that moves other chunks is a new version, review L6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredRef {
    /// The object the first reference found points at.
    pub url: String,
    /// Per chunk `(lon, lat)`: offset and length; every reference points at `url`.
    pub ranges: BTreeMap<[u64; 2], (u64, u64)>,
    /// True if some chunk holds no virtual reference, or a reference to another object.
    pub mixed: bool,
    pub checksum: Option<Checksum>,
}

/// Which of two versions of a source object is newer, when their checksums say so: only
/// last-modified times are ordered (ETags are not).
fn older(a: &Option<Checksum>, b: &Option<Checksum>) -> bool {
    matches!((a, b), (Some(Checksum::LastModified(x)), Some(Checksum::LastModified(y))) if x.0 < y.0)
}

/// The first step of a plan: every granule checked against the dataset on its own, the accepted
/// ones by time index (the later of two granules with the same time index wins).
#[derive(Debug)]
pub(crate) struct Classified<'a> {
    granules: &'a [GranuleRefs],
    outcomes: Vec<(String, GranuleOutcome)>,
    accepted: BTreeMap<u64, usize>,
}

/// What a batch does: an outcome per granule and the granules to write.
#[derive(Debug)]
pub(crate) struct BatchPlan {
    /// Per granule, in input order: key and outcome.
    pub outcomes: Vec<(String, GranuleOutcome)>,
    /// Positions in the batch of the granules to write (added or replaced), in time order.
    pub to_write: Vec<usize>,
    /// Length of the time axis before the batch.
    pub old_len: u64,
    /// Length of the time axis after the batch.
    pub new_len: u64,
}

impl<'a> Classified<'a> {
    /// Checks each granule's product, source container (`url_prefix`), time index and layout.
    /// `dataset` is the dataset's layout and fingerprint, `None` before its first batch: then the
    /// first granule that passes the other checks sets the layout the rest must match.
    pub(crate) fn new(
        profile: &ProductProfile,
        url_prefix: &str,
        dataset: Option<(&Layout, &str)>,
        granules: &'a [GranuleRefs],
    ) -> Self {
        let mut outcomes: Vec<(String, GranuleOutcome)> = Vec::with_capacity(granules.len());
        let mut reference: Option<(Layout, String)> =
            dataset.map(|(l, fp)| (l.clone(), fp.to_string()));
        let mut accepted: BTreeMap<u64, usize> = BTreeMap::new();
        for (n, g) in granules.iter().enumerate() {
            let reject = |label: &'static str, reason: String| {
                GranuleOutcome::Rejected(DatasetError::Rejected {
                    key: g.key.clone(),
                    label,
                    reason,
                })
            };
            let outcome = if g.product != profile.id {
                Some(reject(
                    "product",
                    format!(
                        "granule of product {:?}, dataset of {:?}",
                        g.product, profile.id
                    ),
                ))
            } else if let Err((label, reason)) = untrusted::check(profile, g, chrono::Utc::now()) {
                Some(reject(label, reason))
            } else if !g.url.starts_with(url_prefix) {
                Some(reject(
                    "source_container",
                    format!(
                        "{} is outside the dataset's source container {url_prefix}",
                        g.url
                    ),
                ))
            } else if let Err(e) =
                icechunk::format::manifest::VirtualChunkLocation::from_url(&g.url)
            {
                // Found here, not while writing: a write-time error would fail the whole batch
                // (review M6).
                Some(reject(
                    "source_container",
                    format!("{} is not a usable reference URL: {e}", g.url),
                ))
            } else {
                match &reference {
                    Some((l, fp)) if *fp != g.fingerprint => Some(reject(
                        "layout",
                        format!(
                            "layout differs from the dataset's: {}",
                            l.differences(&g.layout).join("; ")
                        ),
                    )),
                    Some(_) => None,
                    None => {
                        reference = Some((g.layout.clone(), g.fingerprint.clone()));
                        None
                    }
                }
            };
            match outcome {
                Some(o) => outcomes.push((g.key.clone(), o)),
                None => match accepted.get(&g.time_index).copied() {
                    // Two versions of one granule in a batch: the newer source version wins
                    // (review M2), else the later in the batch.
                    Some(prev) if older(&checksum_of(g), &checksum_of(&granules[prev])) => {
                        outcomes.push((
                            g.key.clone(),
                            GranuleOutcome::Stale {
                                stored: version_text(&checksum_of(&granules[prev])),
                            },
                        ));
                    }
                    prev => {
                        outcomes.push((g.key.clone(), GranuleOutcome::Added));
                        accepted.insert(g.time_index, n);
                        if let Some(prev) = prev {
                            outcomes[prev].1 =
                                if older(&checksum_of(&granules[prev]), &checksum_of(g)) {
                                    GranuleOutcome::Stale {
                                        stored: version_text(&checksum_of(g)),
                                    }
                                } else {
                                    GranuleOutcome::Duplicate
                                };
                        }
                    }
                },
            }
        }
        for (key, o) in &outcomes {
            if let GranuleOutcome::Rejected(e) = o {
                tracing::warn!(%key, reason = e.label(), error = %e, "granule rejected");
            }
        }
        Self {
            granules,
            outcomes,
            accepted,
        }
    }

    /// True if no granule was accepted.
    pub(crate) fn is_empty(&self) -> bool {
        self.accepted.is_empty()
    }

    /// The accepted time indices, ascending.
    pub(crate) fn time_indices(&self) -> impl Iterator<Item = u64> + '_ {
        self.accepted.keys().copied()
    }

    /// The outcomes when nothing is written.
    pub(crate) fn into_outcomes(self) -> Vec<(String, GranuleOutcome)> {
        self.outcomes
    }

    /// Compares each accepted granule with the store before the batch: `old_len` is the length of
    /// the time axis; `stored` holds an entry for every accepted time index that
    /// `granule_present` marks, with the reference at chunk `(t, 0, 0)` of `first_var` (`None` if
    /// that is no virtual reference). A granule not marked present is added; one whose references
    /// match is a duplicate; any other replaces what is stored.
    pub(crate) fn diff(
        self,
        first_var: &str,
        old_len: u64,
        stored: &BTreeMap<u64, Option<StoredRef>>,
    ) -> BatchPlan {
        let Self {
            granules,
            mut outcomes,
            accepted,
        } = self;
        let max_index = accepted.keys().next_back().copied().unwrap_or(0);
        let new_len = old_len.max(max_index + 1);
        let mut to_write: Vec<usize> = Vec::new();
        for (&t, &n) in &accepted {
            let g = &granules[n];
            let Some(existing) = stored.get(&t) else {
                to_write.push(n);
                continue;
            };
            let new_checksum = checksum_of(g);
            let same = match existing {
                Some(r) => {
                    let ranges: BTreeMap<[u64; 2], (u64, u64)> = g
                        .variables
                        .get(first_var)
                        .map(|v| {
                            v.refs
                                .iter()
                                .map(|c| ([c.chunk[1], c.chunk[2]], (c.offset, c.length)))
                                .collect()
                        })
                        .unwrap_or_default();
                    !r.mixed && r.url == g.url && r.ranges == ranges && r.checksum == new_checksum
                }
                None => false,
            };
            if let Some(r) = existing
                .as_ref()
                .filter(|r| older(&new_checksum, &r.checksum))
            {
                // An older version of the object than the one stored (a slow fetch, a
                // redelivered message): the store keeps the newer one (review M2).
                let stored = format!("{} ({})", r.url, version_text(&r.checksum));
                tracing::warn!(
                    key = %g.key, %stored, given = %version_text(&new_checksum),
                    "an older version of a stored granule: kept the stored one"
                );
                outcomes[n].1 = GranuleOutcome::Stale { stored };
                continue;
            }
            if same {
                outcomes[n].1 = GranuleOutcome::Duplicate;
            } else {
                let previous = match existing {
                    Some(r) => format!("{} ({})", r.url, version_text(&r.checksum)),
                    None => "no reference".into(),
                };
                tracing::warn!(
                    key = %g.key, %previous, now = %version_text(&new_checksum),
                    "source object replaced: re-pointing its references"
                );
                outcomes[n].1 = GranuleOutcome::Replaced { previous };
                to_write.push(n);
            }
        }
        BatchPlan {
            outcomes,
            to_write,
            old_len,
            new_len,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use chrono::{DateTime, Duration, Utc};
    use icechunk::format::manifest::SecondsSinceEpoch;
    use imerg_refs::{
        ChunkRef, Codec, CoordArray, Coords, Endian, FillValue, TimeCoord, VariableLayout,
        VariableRefs,
    };
    use serde_json::{Map, json};

    use super::*;

    const PREFIX: &str = "file:///granules/";
    const FIRST_VAR: &str = "precipitation";

    fn profile() -> ProductProfile {
        ProductProfile::final_v07b()
    }

    /// One variable (the one the granules reference), on coordinates named `coords`.
    fn layout(coords: &str) -> Layout {
        Layout {
            variables: vec![VariableLayout {
                name: FIRST_VAR.into(),
                dtype: "float32".into(),
                grid: [3600, 1800],
                chunk: [1, 145, 1800],
                fill_value: FillValue::Float(f64::from(-9999.9f32)),
                codecs: vec![
                    Codec::Bytes {
                        endian: Endian::Little,
                    },
                    Codec::Zlib { level: 6 },
                ],
            }],
            coords_digest: coords.into(),
        }
    }

    fn coord() -> CoordArray {
        CoordArray {
            shape: vec![1],
            values: vec![0.0],
            attributes: Map::new(),
        }
    }

    fn modified() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// A granule at time index `t` in the source container, with one reference per variable
    /// chunk `(t, 0, 0)` at byte `offset`, last modified at `modified()`.
    fn granule(t: u64, offset: u64) -> GranuleRefs {
        let p = profile();
        let start = p.start_of(t);
        let key = p.key(start);
        let layout = layout("grid-a");
        GranuleRefs {
            url: format!("{PREFIX}{key}"),
            key,
            product: p.id.clone(),
            start,
            time_index: t,
            etag: None,
            last_modified: Some(modified()),
            size: 1_000,
            variables: BTreeMap::from([(
                FIRST_VAR.to_string(),
                VariableRefs {
                    zarr: json!({}),
                    refs: vec![ChunkRef {
                        chunk: [t, 0, 0],
                        offset,
                        length: 50,
                    }],
                },
            )]),
            coords: Coords {
                time: TimeCoord {
                    value: 0,
                    bounds: [0, 0],
                    units: "seconds since 1980-01-06 00:00:00 UTC".into(),
                    calendar: "julian".into(),
                    attributes: Map::new(),
                },
                lon: coord(),
                lat: coord(),
                lon_bnds: coord(),
                lat_bnds: coord(),
            },
            fingerprint: layout.fingerprint(),
            layout,
        }
    }

    fn with_layout(mut g: GranuleRefs, coords: &str) -> GranuleRefs {
        g.layout = layout(coords);
        g.fingerprint = g.layout.fingerprint();
        g
    }

    /// What the store holds after `g` was written.
    fn stored(g: &GranuleRefs) -> Option<StoredRef> {
        Some(StoredRef {
            url: g.url.clone(),
            ranges: g.variables[FIRST_VAR]
                .refs
                .iter()
                .map(|r| ([r.chunk[1], r.chunk[2]], (r.offset, r.length)))
                .collect(),
            mixed: false,
            checksum: checksum_of(g),
        })
    }

    fn classify<'a>(dataset: Option<&Layout>, granules: &'a [GranuleRefs]) -> Classified<'a> {
        let fp = dataset.map(Layout::fingerprint);
        Classified::new(&profile(), PREFIX, dataset.zip(fp.as_deref()), granules)
    }

    fn plan(
        dataset: Option<&Layout>,
        granules: &[GranuleRefs],
        old_len: u64,
        store: &[(u64, Option<StoredRef>)],
    ) -> BatchPlan {
        let stored = store.iter().cloned().collect();
        classify(dataset, granules).diff(FIRST_VAR, old_len, &stored)
    }

    fn labels(outcomes: &[(String, GranuleOutcome)]) -> Vec<&'static str> {
        outcomes.iter().map(|(_, o)| o.label()).collect()
    }

    fn rejection(o: &GranuleOutcome) -> (&'static str, String) {
        match o {
            GranuleOutcome::Rejected(e) => (e.label(), e.to_string()),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn granules_out_of_order_are_added_and_written_in_time_order() {
        let gs = [granule(5, 100), granule(3, 100), granule(4, 100)];
        let p = plan(None, &gs, 0, &[]);
        assert_eq!(labels(&p.outcomes), ["added"; 3]);
        let keys: Vec<&str> = p.outcomes.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, [&gs[0].key, &gs[1].key, &gs[2].key], "input order");
        assert_eq!(p.to_write, [1, 2, 0], "written in time order");
        assert_eq!((p.old_len, p.new_len), (0, 6));
    }

    #[test]
    fn an_earlier_granule_does_not_grow_the_axis() {
        let l = layout("grid-a");
        let p = plan(Some(&l), &[granule(3, 100)], 10, &[]);
        assert_eq!(labels(&p.outcomes), ["added"]);
        assert_eq!((p.old_len, p.new_len), (10, 10));
        let p = plan(Some(&l), &[granule(12, 100)], 10, &[]);
        assert_eq!((p.old_len, p.new_len), (10, 13));
    }

    #[test]
    fn a_granule_stored_with_the_same_references_is_a_duplicate() {
        let g = granule(4, 100);
        let p = plan(
            Some(&g.layout),
            std::slice::from_ref(&g),
            5,
            &[(4, stored(&g))],
        );
        assert_eq!(labels(&p.outcomes), ["duplicate"]);
        assert!(p.to_write.is_empty());
    }

    #[test]
    fn a_granule_stored_from_another_source_version_is_replaced() {
        let old = granule(4, 100);
        // Rewritten: new last-modified time (rounded up to the second), new byte ranges.
        let mut new = granule(4, 300);
        new.last_modified = Some(modified() + Duration::milliseconds(2_500));
        let p = plan(
            Some(&new.layout),
            std::slice::from_ref(&new),
            5,
            &[(4, stored(&old))],
        );
        assert_eq!(p.to_write, [0]);
        assert_eq!(p.new_len, 5);
        let GranuleOutcome::Replaced { previous } = &p.outcomes[0].1 else {
            panic!("expected replaced, got {:?}", p.outcomes[0].1);
        };
        let secs = modified().timestamp();
        assert_eq!(previous, &format!("{} (last-modified {secs})", old.url));
        assert_eq!(
            checksum_of(&new),
            Some(Checksum::LastModified(SecondsSinceEpoch(secs as u32 + 3)))
        );

        // Same bytes, another checksum (the object was rewritten with the same content).
        let mut touched = granule(4, 100);
        touched.last_modified = Some(modified() + Duration::seconds(60));
        let p = plan(Some(&old.layout), &[touched], 5, &[(4, stored(&old))]);
        assert_eq!(labels(&p.outcomes), ["replaced"]);

        // Same checksum, another object.
        let mut moved = granule(4, 100);
        moved.url = format!("{PREFIX}elsewhere/{}", moved.key);
        let p = plan(Some(&old.layout), &[moved], 5, &[(4, stored(&old))]);
        assert_eq!(labels(&p.outcomes), ["replaced"]);
    }

    /// Review M2: an older fetch committed after a newer one re-pointed the granule to stale
    /// references. Now the store keeps the newer version, across batches and within one.
    #[test]
    fn an_older_source_version_never_replaces_a_newer_one() {
        let mut newer = granule(4, 300);
        newer.last_modified = Some(modified() + Duration::seconds(10));
        let older = granule(4, 100);
        let p = plan(
            Some(&older.layout),
            std::slice::from_ref(&older),
            5,
            &[(4, stored(&newer))],
        );
        assert_eq!(labels(&p.outcomes), ["stale"]);
        assert!(p.to_write.is_empty());
        let GranuleOutcome::Stale { stored: text } = &p.outcomes[0].1 else {
            unreachable!()
        };
        let secs = modified().timestamp() + 10;
        assert_eq!(text, &format!("{} (last-modified {secs})", newer.url));

        // Both in one batch, the older one last: the newer is written.
        let p = plan(Some(&older.layout), &[newer.clone(), older.clone()], 5, &[]);
        assert_eq!(labels(&p.outcomes), ["added", "stale"]);
        assert_eq!(p.to_write, [0]);
        // The older one first: the newer still wins.
        let p = plan(Some(&older.layout), &[older.clone(), newer.clone()], 5, &[]);
        assert_eq!(labels(&p.outcomes), ["stale", "added"]);
        assert_eq!(p.to_write, [1]);

        // ETags have no order: another ETag replaces.
        let (mut a, mut b) = (granule(4, 100), granule(4, 300));
        (a.last_modified, b.last_modified) = (None, None);
        (a.etag, b.etag) = (Some("\"a\"".into()), Some("\"b\"".into()));
        let l = a.layout.clone();
        let p = plan(Some(&l), &[a], 5, &[(4, stored(&b))]);
        assert_eq!(labels(&p.outcomes), ["replaced"]);
    }

    /// Review L6: "same" compared chunk (t, 0, 0) only, so a rewrite within the same second
    /// that moved the other chunks was taken for a duplicate.
    #[test]
    fn a_rewrite_in_the_same_second_that_moves_any_chunk_is_replaced() {
        let mut two = granule(4, 100);
        two.variables
            .get_mut(FIRST_VAR)
            .unwrap()
            .refs
            .push(ChunkRef {
                chunk: [4, 1, 0],
                offset: 200,
                length: 50,
            });
        let mut moved = two.clone();
        moved.variables.get_mut(FIRST_VAR).unwrap().refs[1].offset = 400;
        let p = plan(Some(&two.layout), &[moved], 5, &[(4, stored(&two))]);
        assert_eq!(labels(&p.outcomes), ["replaced"]);
        let p = plan(
            Some(&two.layout),
            std::slice::from_ref(&two),
            5,
            &[(4, stored(&two))],
        );
        assert_eq!(labels(&p.outcomes), ["duplicate"]);
        // A step whose references do not all point at one object is never "the same".
        let mut mixed = stored(&two);
        mixed.as_mut().unwrap().mixed = true;
        let l = two.layout.clone();
        let p = plan(Some(&l), &[two], 5, &[(4, mixed)]);
        assert_eq!(labels(&p.outcomes), ["replaced"]);
    }

    #[test]
    fn the_checksum_is_the_last_modified_time_else_the_etag() {
        let mut g = granule(4, 100);
        let secs = modified().timestamp() as u32;
        assert_eq!(
            checksum_of(&g),
            Some(Checksum::LastModified(SecondsSinceEpoch(secs)))
        );
        g.last_modified = Some(modified() + Duration::nanoseconds(1));
        assert_eq!(
            checksum_of(&g),
            Some(Checksum::LastModified(SecondsSinceEpoch(secs + 1))),
            "rounded up"
        );
        g.last_modified = None;
        g.etag = Some("\"abc\"".into());
        assert_eq!(
            checksum_of(&g),
            Some(Checksum::ETag(icechunk::storage::ETag("\"abc\"".into())))
        );
        g.etag = None;
        assert_eq!(checksum_of(&g), None);
        assert_eq!(version_text(&None), "no checksum");
    }

    #[test]
    fn a_present_step_without_a_virtual_reference_is_replaced() {
        let g = granule(4, 100);
        let p = plan(Some(&g.layout), std::slice::from_ref(&g), 5, &[(4, None)]);
        assert!(matches!(
            &p.outcomes[0].1,
            GranuleOutcome::Replaced { previous } if previous == "no reference"
        ));
        assert_eq!(p.to_write, [0]);

        // A granule without a reference at chunk (t, 0, 0) never matches what is stored.
        let mut sparse = granule(4, 100);
        sparse.variables.get_mut(FIRST_VAR).unwrap().refs[0].chunk = [4, 1, 0];
        let p = plan(Some(&g.layout), &[sparse], 5, &[(4, stored(&g))]);
        assert_eq!(labels(&p.outcomes), ["replaced"]);
    }

    #[test]
    fn the_later_of_two_granules_at_one_time_index_wins() {
        let gs = [granule(4, 100), granule(7, 100), granule(4, 300)];
        let p = plan(None, &gs, 0, &[]);
        assert_eq!(labels(&p.outcomes), ["duplicate", "added", "added"]);
        assert_eq!(p.to_write, [2, 1]);

        // Both match the stored granule: nothing to write.
        let p = plan(
            Some(&gs[0].layout),
            &[granule(4, 100), granule(4, 100)],
            5,
            &[(4, stored(&gs[0]))],
        );
        assert_eq!(labels(&p.outcomes), ["duplicate", "duplicate"]);
        assert!(p.to_write.is_empty());

        // The later one differs from the stored granule: it replaces it.
        let p = plan(Some(&gs[0].layout), &gs, 8, &[(4, stored(&gs[0]))]);
        assert_eq!(labels(&p.outcomes), ["duplicate", "added", "replaced"]);
        assert_eq!(p.to_write, [2, 1]);
    }

    #[test]
    fn a_granule_of_another_product_is_rejected() {
        let mut g = granule(4, 100);
        g.product = "GPM_3IMERGHHL".into();
        let c = classify(None, std::slice::from_ref(&g));
        assert!(c.is_empty());
        let (label, msg) = rejection(&c.into_outcomes()[0].1);
        assert_eq!(label, "product");
        assert!(msg.contains("GPM_3IMERGHHL"), "{msg}");
    }

    #[test]
    fn a_granule_outside_the_source_container_is_rejected() {
        let mut g = granule(4, 100);
        g.url = format!("s3://other-bucket/{}", g.key);
        let c = classify(None, std::slice::from_ref(&g));
        assert!(c.is_empty());
        let (label, msg) = rejection(&c.into_outcomes()[0].1);
        assert_eq!(label, "source_container");
        assert!(msg.contains(PREFIX), "{msg}");
    }

    #[test]
    fn a_granule_whose_time_index_does_not_match_its_start_is_rejected() {
        let mut g = granule(4, 100);
        g.time_index = 5;
        let c = classify(None, std::slice::from_ref(&g));
        assert!(c.is_empty());
        let (label, msg) = rejection(&c.into_outcomes()[0].1);
        assert_eq!(label, "time_range");
        assert!(msg.contains("time index 5"), "{msg}");
    }

    #[test]
    fn a_granule_of_another_layout_is_rejected() {
        let dataset = layout("grid-a");
        let other = with_layout(granule(4, 100), "grid-b");
        let gs = [other, granule(5, 100)];
        let p = plan(Some(&dataset), &gs, 0, &[]);
        assert_eq!(labels(&p.outcomes), ["rejected", "added"]);
        let (label, msg) = rejection(&p.outcomes[0].1);
        assert_eq!(label, "layout");
        assert!(msg.contains("coordinate values"), "{msg}");
        assert_eq!(p.to_write, [1]);
    }

    #[test]
    fn before_the_first_batch_the_first_accepted_granule_sets_the_layout() {
        // The first granule is rejected for its product, so it does not set the layout; the
        // second does, and the third (another layout) is rejected against it.
        let mut wrong_product = with_layout(granule(3, 100), "grid-b");
        wrong_product.product = "GPM_3IMERGHHE".into();
        let gs = [
            wrong_product,
            granule(4, 100),
            with_layout(granule(5, 100), "grid-b"),
        ];
        let p = plan(None, &gs, 0, &[]);
        assert_eq!(labels(&p.outcomes), ["rejected", "added", "rejected"]);
        assert_eq!(rejection(&p.outcomes[0].1).0, "product");
        assert_eq!(rejection(&p.outcomes[2].1).0, "layout");
        assert_eq!((p.to_write.as_slice(), p.new_len), ([1].as_slice(), 5));
    }

    #[test]
    fn a_batch_with_every_granule_rejected_is_empty() {
        let mut g = granule(4, 100);
        g.product = "x".into();
        let gs = [g.clone(), g];
        let c = classify(None, &gs);
        assert!(c.is_empty());
        assert_eq!(c.time_indices().count(), 0);
        assert_eq!(labels(&c.into_outcomes()), ["rejected", "rejected"]);
    }
}
