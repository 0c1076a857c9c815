//! Ranged reads in the service: with `--ranged-reads` the worker reads only each granule's HDF5
//! metadata (a few GETs, a small part of the object), checks itself against the whole-object
//! path (the oracle, here on every granule), and the store the Python reader opens holds the
//! source values.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

mod common;

use common::{InProcess, check_store, present, python, series, synth};

#[test]
fn the_worker_reads_only_the_metadata_and_agrees_with_the_whole_object() {
    python();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let granules = data.join("granules");
    synth(&granules, "2021-09-01T00:00", "2021-09-01T02:00");
    let sizes: Vec<u64> = common::keys("2021-09-01T00:00", "2021-09-01T02:00")
        .iter()
        .map(|k| std::fs::metadata(granules.join(k)).unwrap().len())
        .collect();
    let server = InProcess::start(
        data,
        &[
            "--ranged-reads",
            "--ranged-verify-one-in",
            "1",
            "--watch-interval",
            "100ms",
            "--batch-age",
            "200ms",
        ],
    );
    let t0 = Instant::now();
    let m = loop {
        let (_, m) = server.get("/metrics");
        if series(
            &m,
            "imerg_granules_committed_total",
            &[("outcome", "added")],
        ) == Some(4.0)
        {
            break m;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{m}");
        std::thread::sleep(Duration::from_millis(100));
    };
    server.stop().unwrap();
    let s = |name: &str, labels: &[(&str, &str)]| series(&m, name, labels);
    assert_eq!(
        s("imerg_ranged_gets_per_granule_count", &[]),
        Some(4.0),
        "{m}"
    );
    assert_eq!(
        s("imerg_ranged_oracle_checks_total", &[("result", "match")]),
        Some(4.0),
        "{m}"
    );
    assert_eq!(
        s(
            "imerg_ranged_oracle_checks_total",
            &[("result", "mismatch")]
        ),
        None,
        "{m}"
    );
    assert_eq!(
        s(
            "imerg_ranged_fallbacks_total",
            &[("reason", "too_scattered")]
        ),
        None,
        "{m}"
    );
    // A few GETs and a part of each object (the synthetic granules are small, so the part is
    // larger than on real 8-11 MB ones; docs/ranged-reads.md).
    let gets = s("imerg_ranged_gets_per_granule_sum", &[]).unwrap();
    assert!(gets <= 4.0 * 8.0, "{gets} GETs for 4 granules");
    let bytes = s("imerg_ranged_bytes_per_granule_sum", &[]).unwrap();
    let total: u64 = sizes.iter().sum();
    assert!(bytes < 0.6 * total as f64, "{bytes} of {total} bytes");
    let last = imerg_catalog::ProductProfile::final_v07b()
        .granule_at(imerg_catalog::parse_time("2021-09-01T01:30").unwrap())
        .unwrap();
    check_store(
        data,
        &serde_json::json!({
            "repo": data.join("repo"),
            "container": format!("file://{}/", granules.display()),
            "time_len": last.time_index + 1,
            "present": present(&granules, &[("2021-09-01T00:00", "2021-09-01T02:00")]),
            "gaps": [],
        }),
    );
}
