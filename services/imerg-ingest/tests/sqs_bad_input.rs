//! Bad input over SQS, against the real stack (moto on loopback): malformed JSON, a message of an
//! unknown shape, a key that is not a granule, an object that is not HDF5, a truncated HDF5 file,
//! a granule of another layout and an object deleted before it is read. Each is counted with its
//! reason, the poison messages reach the dead-letter queue after the redrive count, and the good
//! granules around them are ingested normally. Also: readiness fails while the queue is
//! unreachable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

mod common;

use common::aws::Stack;
use common::{InProcess, aws_env, keys, metric, metric_opt, python, synth, synth_with};

#[test]
fn bad_input_is_counted_dead_lettered_and_does_not_stop_good_granules() {
    aws_env();
    let py = python();
    let stack = Stack::start(&py, 2);
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let other = dir.path().join("other");
    synth(&good, "2024-04-01T00:00", "2024-04-01T01:30");
    // Another layout: byte-shuffled variables (a different filter pipeline).
    synth_with(
        &other,
        "2024-04-01T01:30",
        "2024-04-01T02:00",
        &["--shuffle"],
    );
    let k = keys("2024-04-01T00:00", "2024-04-01T03:30");
    let read = |root: &std::path::Path, key: &str| std::fs::read(root.join(key)).unwrap();

    // The good granules first: the first granule of an empty store sets its layout, and a
    // granule of another layout must be the odd one out.
    for key in &k[0..3] {
        stack.put(key, &read(&good, key));
    }
    let args = stack.serve_args(true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = InProcess::start(dir.path(), &args);
    let three = |s: &serde_json::Value| s["granules_present"] == 3;
    stack.wait_until(Duration::from_secs(120), 0, three);
    first.stop().unwrap();
    // The service runs in this process: its counters go on; what follows is measured from here.
    let added_before = metric(
        &imerg_service::prometheus().unwrap().render(),
        "imerg_granules_committed_total{outcome=\"added\"}",
    );

    // Then the bad input, queued while the service is down (so the deleted object is gone
    // before anything reads it), with the service started again.
    stack.put(&k[3], &read(&other, &k[3]));
    stack.put(&k[4], b"this is not an HDF5 file, whatever its name says");
    let whole = read(&good, &k[0]);
    stack.put(&k[5], &whole[..whole.len() / 2]);
    // Uploaded (so notified), then deleted before the service reads it.
    stack.put(&k[6], &read(&good, &k[0]));
    stack.delete(&k[6]);
    stack.put(
        "GPM_L3/GPM_3IMERGHH.07/2024/092/README.txt",
        b"not a granule",
    );
    stack.send("{\"Records\": [ this is not json");
    stack.send(r#"{"hello": "world", "granule?": false}"#);

    let server = InProcess::start(dir.path(), &args);
    // Poison: malformed, unknown shape, other layout, not HDF5, truncated, deleted = 6.
    let st = stack.wait_until(Duration::from_secs(120), 6, three);
    assert_eq!(st["first_granule"], "2024-04-01T00:00:00Z", "{st}");
    assert_eq!(st["last_granule"], "2024-04-01T01:00:00Z", "{st}");

    let (_, m) = server.get("/metrics");
    // Every poison message is kept (then dead-lettered) with its reason; a missing object is
    // not a rejected granule, the others are.
    for reason in [
        "malformed_json",
        "unknown_shape",
        "layout",
        "not_hdf5",
        "truncated",
        "not_found",
    ] {
        // At least once: SQS counts a receive whose handling the redrive then cuts short.
        let kept = format!("imerg_sqs_messages_total{{outcome=\"kept\",reason=\"{reason}\"}}");
        assert!(metric(&m, &kept) >= 1.0, "{reason}: {m}");
        let rejected = format!("imerg_granules_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(
            metric_opt(&m, &rejected).unwrap_or(0.0) >= 1.0,
            reason != "not_found",
            "{reason}: {m}"
        );
    }
    assert!(
        metric(&m, "imerg_granules_received_total{source=\"sqs_ignored\"}") >= 1.0,
        "{m}"
    );
    // Nothing of the bad input was committed (the three good granules came in the first life).
    assert_eq!(
        metric(&m, "imerg_granules_committed_total{outcome=\"added\"}"),
        added_before,
        "nothing of the bad input was committed: {m}"
    );
    // The dead-letter queue holds the poison messages themselves, for an operator to look at.
    let mut bodies = Vec::new();
    let t0 = Instant::now();
    while bodies.len() < 6 && t0.elapsed() < Duration::from_secs(20) {
        for b in stack.dead_bodies() {
            if !bodies.contains(&b) {
                bodies.push(b);
            }
        }
    }
    // S3 event notifications URL-encode the key.
    let all = bodies.join("\n").replace("%2F", "/");
    for needle in [
        k[3].as_str(),
        &k[4],
        &k[5],
        &k[6],
        "this is not json",
        "hello",
    ] {
        assert!(all.contains(needle), "{needle} not dead-lettered: {all}");
    }
    for key in &k[0..3] {
        assert!(!all.contains(key.as_str()), "{key} dead-lettered: {all}");
    }
    // Still serving and ready.
    assert_eq!(server.get("/readyz").0, 200);
}

#[test]
fn readiness_fails_while_the_queue_is_unreachable() {
    aws_env();
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let server = InProcess::start(
        dir.path(),
        &[
            "--watch",
            "false",
            "--sqs-queue-url",
            &format!("{endpoint}/123456789012/granules"),
            "--sqs-endpoint",
            &endpoint,
            "--sqs-region",
            "us-east-1",
            "--sqs-wait-seconds",
            "1",
        ],
    );
    let t0 = Instant::now();
    loop {
        // 503 from the start ("has not answered yet"), then with the connection error.
        let (code, body) = server.get("/readyz");
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("SQS queue unreachable"), "{body}");
        if body.contains("Connection refused") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{code} {body}");
        std::thread::sleep(Duration::from_millis(250));
    }
    // Alive all the same (the queue may come back), and the failures are counted.
    assert_eq!(server.get("/healthz").0, 200);
    let (_, m) = server.get("/metrics");
    assert!(metric(&m, "imerg_sqs_receive_errors_total") >= 1.0, "{m}");
}
