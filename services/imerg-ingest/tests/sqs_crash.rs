//! Crash safety over SQS: the service is SIGKILLed (IMERG_CRASH_AT, see imerg-crashpoint) after
//! receiving, after virtualizing, in the middle of a commit and after a commit before the
//! message is deleted, then restarted. Each time every granule ends up in the store exactly once
//! (its references and coordinates once, in place), the Python reader finds the store equal to
//! the source files, and every message is eventually deleted (none dead-lettered).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::ExitStatusExt as _;
use std::time::{Duration, Instant};

mod common;

use common::aws::{ENVS, Stack};
use common::{Server, check_store, keys, metric, python, synth};

const START: &str = "2024-03-01T00:00";
const END: &str = "2024-03-01T03:00";
const GRANULES: u64 = 6;

/// Runs the crash at `spec`, restarts, checks the store; returns the first life's log and the
/// second life's metrics.
fn crash_and_recover(spec: &str, point: &str) -> (String, String) {
    let py = python();
    let stack = Stack::start(&py, 10);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("copy");
    synth(&local, START, END);
    for k in keys(START, END) {
        stack.put(&k, &std::fs::read(local.join(&k)).unwrap());
    }
    let args: Vec<String> = stack.serve_args(true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // First life: killed at the crash point.
    let mut envs = ENVS.to_vec();
    envs.push(("IMERG_CRASH_AT", spec));
    let mut first = Server::spawn(dir.path(), &args, &envs);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = first.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{spec}: the crash point was never reached"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        status.signal(),
        Some(9),
        "{spec}: not SIGKILLed: {status:?}"
    );
    let log = std::fs::read_to_string(&first.log).unwrap();
    assert!(
        log.contains(&format!("crash point {point} reached")),
        "{spec}: {log}"
    );

    // Second life: everything lands once, every message is deleted.
    let second = Server::spawn(dir.path(), &args, ENVS);
    let st = stack.wait_until(Duration::from_secs(120), 0, |s| {
        s["granules_present"] == GRANULES
    });
    assert_eq!(st["gaps"], serde_json::json!([]), "{spec}: {st}");
    // 88 references per granule plus the coordinate chunks (time, time_bnds, granule_present:
    // 4 chunks each at this date's axis length; lat, lon and their bounds: 1 each): a granule
    // written twice would not add references (positions are fixed), a lost one would remove 88.
    assert_eq!(st["references"], 88 * GRANULES + 16, "{spec}: {st}");
    let (_, metrics) = second.get("/metrics");
    drop(second);
    check_store(dir.path(), &stack.expect(&local, &[(START, END)], &st));
    (log, metrics)
}

#[test]
fn sigkill_after_receive() {
    let (_, metrics) = crash_and_recover("after_receive", "after_receive");
    // Nothing was committed before the kill: the second life added every granule.
    assert_eq!(
        metric(
            &metrics,
            "imerg_granules_committed_total{outcome=\"added\"}"
        ),
        GRANULES as f64,
        "{metrics}"
    );
}

#[test]
fn sigkill_after_virtualize() {
    crash_and_recover("after_virtualize@2", "after_virtualize");
}

#[test]
fn sigkill_during_commit() {
    // 10 ms into the first commit: its objects are being written to S3 when the process dies.
    let (first_life, _) = crash_and_recover("during_commit@1+10", "during_commit");
    assert!(
        !first_life.contains("batch durable"),
        "the commit finished before the kill: {first_life}"
    );
}

#[test]
fn sigkill_after_commit_before_delete() {
    let (_, metrics) = crash_and_recover("after_commit", "after_commit");
    // The committed message came back and found its granule already there.
    assert!(
        metric(
            &metrics,
            "imerg_granules_committed_total{outcome=\"duplicate\"}"
        ) >= 1.0,
        "{metrics}"
    );
}
