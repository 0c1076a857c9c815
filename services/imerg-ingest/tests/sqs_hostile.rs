//! Hostile granules over SQS, against the real stack (moto on loopback) and the real binary in a
//! child process (an abort or an OOM kill would end it, not the test): HDF5 files crafted by
//! `tests/python/hostile_granules.py` from good synthetic granules (a 2^40-step `time`, `time`
//! in external storage naming `/etc/hostname`, `Grid` as an external link, `lon` as a soft link
//! or a virtual dataset, a deflate bomb in `lon`, chunk indices out of the grid or duplicated in
//! the B-tree, a `time` beyond the calendar, an attribute claiming 2^40 values), an object over
//! the size cap and a file name alias. Each bad message is kept with its reason until the
//! dead-letter queue takes it, the alias is ignored, the process stays up, and every good granule
//! lands (review H2, M1, M6, L3, L4, L5; issue #12).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::aws::{ENVS, Stack};
use common::{Server, aws_env, keys, python, python_script, series, synth};

/// The variants used, with the reason each must be rejected with.
const VARIANTS: &[(&str, &str)] = &[
    ("huge_time", "coordinates"),
    ("external_time", "external_data"),
    ("external_link_grid", "external_data"),
    ("soft_link_lon", "external_data"),
    ("vds_lon", "external_data"),
    ("lon_deflate_bomb", "coordinates"),
    ("chunk_index_out_of_range", "chunk_index"),
    ("chunk_index_duplicated", "chunk_index"),
    ("time_far_future", "coordinates"),
    ("huge_attribute", "hdf5"),
];

/// The file of `variant` made from the good granule `good` into `out`.
fn hostile(good: &Path, out: &Path, variant: &str) -> Vec<u8> {
    let o = python_script("hostile_granules.py", &[good, out], &[]);
    let path = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["variant"] == variant)
        .unwrap_or_else(|| panic!("no variant {variant}"))["path"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::read(path).unwrap()
}

#[test]
fn hostile_granules_over_sqs_are_rejected_alone_and_the_process_stays_up() {
    aws_env();
    let py = python();
    let stack = Stack::start(&py, 2);
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    synth(&good, "2024-04-01T00:00", "2024-04-01T08:00");
    let k = keys("2024-04-01T00:00", "2024-04-01T08:00");
    let read = |key: &str| std::fs::read(good.join(key)).unwrap();

    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut args = stack.serve_args(true);
    args.extend(["--max-object-bytes".into(), "4000000".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Server::spawn(&data, &args, ENVS);

    // The good granules first: the first one of an empty store sets its layout.
    for key in &k[0..3] {
        stack.put(key, &read(key));
    }
    stack.wait_until(Duration::from_secs(120), 0, |s| s["granules_present"] == 3);

    // Each hostile file at its own time slot, made from the good granule of that slot (so its
    // name and time agree and only the hostile change is wrong).
    for (n, (variant, _)) in VARIANTS.iter().enumerate() {
        let key = &k[3 + n];
        let out = dir.path().join(format!("hostile-{variant}"));
        stack.put(key, &hostile(&good.join(key), &out, variant));
    }
    let large = 3 + VARIANTS.len();
    stack.put(&k[large], &vec![0u8; 6_000_000]);
    // An alias of the next slot's name ("+" for the minute field's leading zero): ignored.
    let alias_of = &k[large + 1];
    let alias = alias_of.replace(".0", ".+");
    assert_ne!(&alias, alias_of);
    stack.put(&alias, &read(alias_of));
    let last_good = &k[large + 2];
    stack.put(last_good, &read(last_good));

    let poison = VARIANTS.len() as u64 + 1;
    let st = stack.wait_until(Duration::from_secs(180), poison, |s| {
        s["granules_present"] == 4
    });
    assert_eq!(st["last_granule"], "2024-04-01T07:30:00Z", "{st}");

    // Still up, alive and ready; nothing panicked.
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the service exited"
    );
    assert_eq!(server.get("/healthz").0, 200);
    assert_eq!(server.get("/readyz").0, 200);
    let (_, m) = server.get("/metrics");
    let mut reasons: Vec<&str> = VARIANTS.iter().map(|(_, r)| *r).collect();
    reasons.push("too_large");
    for reason in reasons {
        let rejected = series(&m, "imerg_granules_rejected_total", &[("reason", reason)]);
        assert!(rejected.is_some_and(|n| n >= 1.0), "{reason}: {m}");
        let kept = series(
            &m,
            "imerg_sqs_messages_total",
            &[("outcome", "kept"), ("reason", reason)],
        );
        assert!(kept.is_some_and(|n| n >= 1.0), "{reason}: {m}");
    }
    let ignored = series(
        &m,
        "imerg_granules_received_total",
        &[("source", "sqs_ignored")],
    );
    assert!(
        ignored.is_some_and(|n| n >= 1.0),
        "the alias is ignored: {m}"
    );

    // The dead-letter queue holds exactly the hostile messages.
    let mut bodies = Vec::new();
    let t0 = Instant::now();
    while bodies.len() < poison as usize && t0.elapsed() < Duration::from_secs(20) {
        for b in stack.dead_bodies() {
            if !bodies.contains(&b) {
                bodies.push(b);
            }
        }
    }
    let all = bodies.join("\n").replace("%2F", "/");
    for key in &k[3..=large] {
        assert!(all.contains(key.as_str()), "{key} not dead-lettered: {all}");
    }
    for key in k[0..3].iter().chain([last_good]) {
        assert!(!all.contains(key.as_str()), "{key} dead-lettered: {all}");
    }
    server.signal("-TERM");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}

/// The generator makes what it says: each variant has its one hostile change, as h5py sees it,
/// and is otherwise the good granule (`tests/python/test_hostile_granules.py`).
#[test]
fn the_hostile_granules_are_what_they_claim_to_be() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), "2024-04-01T00:00", "2024-04-01T00:30");
    let good = dir
        .path()
        .join(&keys("2024-04-01T00:00", "2024-04-01T00:30")[0]);
    python_script("test_hostile_granules.py", &[good], &[]);
}
