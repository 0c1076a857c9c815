//! A granule handed to the committer is untrusted input (CommitService accepts it from the
//! network): before its references can land, everything the store relies on is checked against
//! the granule's own layout and the product, with checked arithmetic. A granule that fails is
//! rejected alone, with the reason; the rest of its batch lands.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use imerg_catalog::ProductProfile;
use imerg_refs::GranuleRefs;

/// Why a granule is refused: a metric label and a message for people.
pub(crate) type Refusal = (&'static str, String);

/// How far in the future an open-ended product's granule may start (clock skew, early files).
const FUTURE_SLACK_HOURS: i64 = 24;

/// Checks `g` against its layout and the product; `now` bounds open-ended products.
pub(crate) fn check(
    profile: &ProductProfile,
    g: &GranuleRefs,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    if g.layout.fingerprint() != g.fingerprint {
        return Err((
            "layout",
            "the fingerprint does not match the granule's own layout".into(),
        ));
    }
    if g.url.split('/').any(|seg| seg == "..") || g.key.split('/').any(|seg| seg == "..") {
        return Err((
            "source_container",
            "the URL or key climbs out of its directory (`..`)".into(),
        ));
    }
    let index = profile
        .check_start(g.start)
        .map_err(|e| ("time_range", e.to_string()))?;
    if index != g.time_index {
        return Err((
            "time_range",
            format!(
                "time index {} does not match start {}",
                g.time_index, g.start
            ),
        ));
    }
    if profile.record_end.is_none() && g.start > now + chrono::Duration::hours(FUTURE_SLACK_HOURS) {
        return Err((
            "time_range",
            format!("starts {}, more than a day after now", g.start),
        ));
    }
    match profile.parse_key(&g.key) {
        Ok(id) if id.time_index == g.time_index => {}
        Ok(id) => {
            return Err((
                "time_range",
                format!(
                    "the key names time index {}, the granule says {}",
                    id.time_index, g.time_index
                ),
            ));
        }
        Err(e) => return Err(("not_a_granule", e.to_string())),
    }
    let declared: BTreeSet<&str> = g.layout.variables.iter().map(|v| v.name.as_str()).collect();
    let given: BTreeSet<&str> = g.variables.keys().map(String::as_str).collect();
    if declared != given {
        return Err((
            "layout",
            format!("variables {given:?} do not match the layout's {declared:?}"),
        ));
    }
    for v in &g.layout.variables {
        let Some(refs) = g.variables.get(&v.name) else {
            continue;
        };
        // Chunks along lon and lat: ceil(grid / chunk), checked.
        let per_dim = |i: usize| -> Option<u64> {
            let c = *v.chunk.get(i + 1)?;
            (c > 0).then(|| v.grid[i].div_ceil(c))
        };
        let (Some(n_lon), Some(n_lat)) = (per_dim(0), per_dim(1)) else {
            return Err(("layout", format!("{}: a chunk dimension is 0", v.name)));
        };
        let mut seen: BTreeSet<[u64; 3]> = BTreeSet::new();
        for r in &refs.refs {
            let [t, i, j] = r.chunk;
            if t != g.time_index || i >= n_lon || j >= n_lat {
                return Err((
                    "chunk_index",
                    format!(
                        "{}: chunk {:?} is outside time index {} and the {n_lon} x {n_lat} chunk grid",
                        v.name, r.chunk, g.time_index
                    ),
                ));
            }
            if !seen.insert(r.chunk) {
                return Err((
                    "chunk_index",
                    format!("{}: chunk {:?} is referenced twice", v.name, r.chunk),
                ));
            }
            let end = r.offset.checked_add(r.length);
            if r.length == 0 || end.is_none_or(|e| e > g.size) {
                return Err((
                    "chunk_range",
                    format!(
                        "{}: chunk {:?} bytes {}+{} lie outside the {}-byte object",
                        v.name, r.chunk, r.offset, r.length, g.size
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use imerg_synth::refs::RefsGenerator;

    use super::*;

    fn label(profile: &ProductProfile, g: &GranuleRefs) -> &'static str {
        check(profile, g, imerg_catalog::parse_time("2026-12-01").unwrap())
            .err()
            .map_or("ok", |(l, _)| l)
    }

    /// Every way a granule from the network can lie about itself is refused with its reason.
    #[test]
    fn a_granule_that_lies_about_itself_is_refused() {
        let p = ProductProfile::final_v07b();
        let gen_ = RefsGenerator::new(&p, "s3://bucket/");
        let good = gen_.granule(1000);
        assert_eq!(label(&p, &good), "ok");

        let mut g = good.clone();
        g.fingerprint = "0".repeat(64);
        assert_eq!(
            label(&p, &g),
            "layout",
            "fingerprint not recomputed from the layout"
        );

        let mut g = good.clone();
        g.time_index += 1;
        assert_eq!(label(&p, &g), "time_range", "time index and start disagree");

        let mut g = good.clone();
        let first = g.variables.values_mut().next().unwrap();
        first.refs[0].chunk[1] = 1 << 40;
        assert_eq!(label(&p, &g), "chunk_index", "chunk outside the grid");

        let mut g = good.clone();
        let first = g.variables.values_mut().next().unwrap();
        first.refs[0].chunk[0] = 7;
        assert_eq!(label(&p, &g), "chunk_index", "chunk at another time index");

        let mut g = good.clone();
        let first = g.variables.values_mut().next().unwrap();
        let dup = first.refs[0];
        first.refs.push(dup);
        assert_eq!(label(&p, &g), "chunk_index", "the same chunk twice");

        let mut g = good.clone();
        let first = g.variables.values_mut().next().unwrap();
        first.refs[0].offset = u64::MAX - 1;
        assert_eq!(label(&p, &g), "chunk_range", "offset + length overflows");

        let mut g = good.clone();
        g.url = format!("s3://bucket/{}/../../secret", g.key);
        assert_eq!(label(&p, &g), "source_container", "`..` in the URL");

        let mut g = good.clone();
        g.size = 10;
        assert_eq!(label(&p, &g), "chunk_range", "bytes beyond the object");

        let mut g = good.clone();
        g.variables.remove("precipitation");
        assert_eq!(label(&p, &g), "layout", "a variable missing");

        // Outside the record (Final ended 2025-09-30), and far in the future for a live run.
        let mut g = gen_.granule(0);
        g.start = imerg_catalog::parse_time("2026-01-01").unwrap();
        assert_eq!(label(&p, &g), "time_range");
        let late = ProductProfile::late_v07();
        let lg = RefsGenerator::new(&late, "s3://bucket/");
        let soon =
            late.first_index_at_or_after(imerg_catalog::parse_time("2026-12-01T12:00").unwrap());
        assert_eq!(label(&late, &lg.granule(soon)), "ok");
        let later = late.first_index_at_or_after(imerg_catalog::parse_time("2026-12-05").unwrap());
        assert_eq!(
            label(&late, &lg.granule(later)),
            "time_range",
            "days in the future"
        );
    }
}
