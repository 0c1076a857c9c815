//! References read back through the store: after each commit the service reads a sample of the
//! new chunks from their source objects and decodes them, so a source object replaced behind
//! the store's back is caught (metric); `verify` does the same for a range on demand and names
//! the granule.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

mod common;

use common::{InProcess, bin, keys, series, synth};

/// Waits for a series of the in-process services' metrics to reach `at_least`.
fn wait_for(server: &InProcess, name: &str, labels: &[(&str, &str)], at_least: f64) -> String {
    let t0 = Instant::now();
    loop {
        let (_, m) = server.get("/metrics");
        if series(&m, name, labels).is_some_and(|v| v >= at_least) {
            return m;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{name}{labels:?} < {at_least}: {m}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_source_replaced_behind_the_stores_back_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let granules = data.join("granules");
    synth(&granules, "2022-03-01T00:00", "2022-03-01T01:00");
    // Batches wait 3 s: the granule is virtualized, then its source changes before the commit.
    let server = InProcess::start(
        data,
        &[
            "--watch-interval",
            "100ms",
            "--batch-age",
            "3s",
            "--batch-idle",
            "3s",
            "--validate-sample",
            "8",
        ],
    );
    wait_for(&server, "imerg_granules_virtualized_total", &[], 2.0);
    let k = keys("2022-03-01T00:00", "2022-03-01T01:00");
    let replaced = granules.join(&k[1]);
    // Another day's bytes under this name (a new modification time, other contents).
    let other = data.join("other");
    synth(&other, "2022-03-02T00:30", "2022-03-02T01:00");
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::copy(
        other.join(&keys("2022-03-02T00:30", "2022-03-02T01:00")[0]),
        &replaced,
    )
    .unwrap();
    let m = wait_for(
        &server,
        "imerg_validation_failures_total",
        &[("reason", "source")],
        1.0,
    );
    assert!(
        series(&m, "imerg_validated_chunks_total", &[("result", "ok")]).is_some_and(|v| v >= 1.0),
        "the untouched granule's chunks read back: {m}"
    );
    server.stop().unwrap();

    // On demand: `verify` names the granule and fails; the other one reads back.
    let out = bin()
        .args([
            "verify",
            "--json",
            "--start",
            "2022-03-01",
            "--end",
            "2022-03-02",
            "--repo",
        ])
        .arg(data.join("repo"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["key"], k[0].as_str());
    assert_eq!(lines[0]["chunks"], 88);
    assert_eq!(
        lines[0]["failed"].as_array().unwrap().len(),
        0,
        "{}",
        lines[0]
    );
    assert_eq!(lines[1]["key"], k[1].as_str());
    assert_eq!(
        lines[1]["failed"].as_array().unwrap().len(),
        88,
        "{}",
        lines[1]
    );
    assert_eq!(lines[1]["failed"][0]["reason"], "source", "{}", lines[1]);
    // A sample reads fewer chunks.
    let out = bin()
        .args([
            "verify",
            "--sample",
            "4",
            "--start",
            "2022-03-01T00:00",
            "--end",
            "2022-03-01T00:30",
            "--repo",
        ])
        .arg(data.join("repo"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("OK "),
        "{out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(4 chunks)"),
        "{out:?}"
    );
}
