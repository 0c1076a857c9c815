//! A committer outage seen from an SQS listener in another process, on moto's SQS (review M7):
//! each failed message used to come back after the visibility timeout and fail again, so a
//! backlog reached the dead-letter queue within minutes of an outage. Now the listener stops
//! receiving while the failure may pass, hides the failed messages for its pause and probes
//! with one message at a time: after the outage every granule lands and nothing is
//! dead-lettered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

mod common;

use common::aws::{ENVS, Stack};
use common::{Server, aws_env, keys, python, series, synth};

#[test]
fn a_committer_outage_does_not_drain_the_queue_into_the_dead_letter_queue() {
    aws_env();
    let py = python();
    // The production redrive count.
    let stack = Stack::start(&py, 5);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    synth(&src, "2024-07-01T00:00", "2024-07-01T10:00");
    let k = keys("2024-07-01T00:00", "2024-07-01T10:00");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let committer_addr = format!("127.0.0.1:{port}");
    let base = stack.serve_args(true);
    let base: Vec<&str> = base.iter().map(String::as_str).collect();
    let committer_args = [&base[..], &["--roles", "committer"]].concat();

    // The committer creates the repository, then goes down.
    let cdata = dir.path().join("committer");
    std::fs::create_dir_all(&cdata).unwrap();
    let mut committer = Server::spawn_at(&cdata, &committer_addr, &committer_args, ENVS);
    stack.put(&k[0], &std::fs::read(src.join(&k[0])).unwrap());
    let ldata = dir.path().join("listener");
    std::fs::create_dir_all(&ldata).unwrap();
    let to_committer = format!("http://{committer_addr}");
    let listener_args = [
        &base[..],
        &[
            "--roles",
            "listener,worker",
            "--committer-addr",
            &to_committer,
        ],
    ]
    .concat();
    let listener = Server::spawn(&ldata, &listener_args, ENVS);
    stack.wait_until(Duration::from_secs(120), 0, |s| s["granules_present"] == 1);
    committer.signal("-KILL");
    committer.child.wait().unwrap();

    // 19 notifications during a 20 s outage (the visibility timeout is 2 s: ten of them).
    for key in &k[1..] {
        stack.put(key, &std::fs::read(src.join(key)).unwrap());
    }
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        assert_eq!(stack.dead(), 0, "dead-lettered during the outage");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, m) = listener.get("/metrics");
    assert!(
        series(
            &m,
            "imerg_sqs_messages_total",
            &[("outcome", "kept"), ("reason", "committer_unavailable")]
        )
        .is_some_and(|n| n >= 1.0),
        "the outage was seen: {m}"
    );

    // The committer comes back on its address: everything lands, nothing is dead-lettered.
    let _committer = Server::spawn_at(&cdata, &committer_addr, &committer_args, ENVS);
    let st = stack.wait_until(Duration::from_secs(180), 0, |s| {
        s["granules_present"] == k.len()
    });
    assert_eq!(st["gaps"].as_array().unwrap().len(), 0, "{st}");
    let log = std::fs::read_to_string(&listener.log).unwrap();
    assert!(log.contains("receiving again"), "{log}");
}
