//! Shutdown by ownership, as a real process receives it: with granules stuck on a committer that
//! never answers, SIGTERM turns readiness off at once and the process still exits within twice
//! `--shutdown-grace`; a second SIGTERM exits at once. And supervision (review M8): a committer
//! that never answers fails each call at `--committer-timeout`; a dead committer task or a stuck
//! libhdf5 parse fails `/healthz`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::{Server, keys, series, synth};

/// A TCP server that accepts connections and never says a word (a hung peer).
fn black_hole() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    format!("http://{addr}")
}

/// A repository holding one granule, and more granules in the source directory: a listener
/// process whose committer is the black hole, with granules in flight.
fn stuck_listener(data: &Path, grace: &str) -> Server {
    stuck_listener_with(data, grace, &[])
}

/// [`stuck_listener`] with more flags.
fn stuck_listener_with(data: &Path, grace: &str, more: &[&str]) -> Server {
    let granules = data.join("granules");
    synth(&granules, "2022-02-02T00:00", "2022-02-02T02:00");
    let first = granules.join(&keys("2022-02-02T00:00", "2022-02-02T00:30")[0]);
    let out = common::bin()
        .arg("append")
        .arg("--repo")
        .arg(data.join("repo"))
        .arg(&first)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committer = black_hole();
    let args = [
        "--roles",
        "listener,worker",
        "--committer-addr",
        &committer,
        "--watch-interval",
        "100ms",
        "--shutdown-grace",
        grace,
    ];
    let server = Server::spawn(data, &[&args[..], more].concat(), &[]);
    let t0 = Instant::now();
    loop {
        let (_, m) = server.get("/metrics");
        if series(&m, "imerg_granules_in_flight", &[]).is_some_and(|v| v >= 1.0) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "nothing in flight: {m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// The server's overall health ("" service) as a gRPC health Watch stream reports it, one
/// status name per message.
fn watch_health(grpc: &str) -> std::sync::mpsc::Receiver<String> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = grpc.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let channel = tonic::transport::Endpoint::from_shared(addr)
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut c = HealthClient::new(channel);
            let mut stream = c
                .watch(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap()
                .into_inner();
            while let Ok(Some(m)) = stream.message().await {
                let name = ServingStatus::try_from(m.status)
                    .map_or("?", |s| s.as_str_name())
                    .to_string();
                if tx.send(name).is_err() {
                    return;
                }
            }
        });
    });
    rx
}

fn wait_exit(server: &mut Server, within: Duration) -> (std::process::ExitStatus, Duration) {
    let t0 = Instant::now();
    loop {
        if let Some(st) = server.child.try_wait().unwrap() {
            return (st, t0.elapsed());
        }
        assert!(
            t0.elapsed() < within,
            "still running {within:?} after SIGTERM: {}",
            std::fs::read_to_string(&server.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_with_a_hung_committer_exits_within_twice_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = stuck_listener(dir.path(), "2s");
    let health = watch_health(&server.grpc);
    assert_eq!(
        health.recv_timeout(Duration::from_secs(10)).unwrap(),
        "SERVING"
    );
    server.signal("-TERM");
    // Readiness goes false first, while in-flight granules still get their grace period; gRPC
    // health says NOT_SERVING to clients that watch it (load balancers, Kubernetes probes).
    std::thread::sleep(Duration::from_millis(300));
    let (code, body) = server.get("/readyz");
    assert_eq!((code, body.trim()), (503, "shutting down"));
    assert_eq!(
        health.recv_timeout(Duration::from_secs(5)).unwrap(),
        "NOT_SERVING"
    );
    let (status, took) = wait_exit(&mut server, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(
        took <= Duration::from_millis(4_000 + 1_500),
        "took {took:?}, more than 2 x 2 s (+ margin)"
    );
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("shutdown grace period over"), "{log}");
}

#[test]
fn a_second_sigterm_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = stuck_listener(dir.path(), "60s");
    server.signal("-TERM");
    std::thread::sleep(Duration::from_millis(300));
    server.signal("-TERM");
    let (status, took) = wait_exit(&mut server, Duration::from_secs(5));
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// A committer that accepts connections and never answers (a lost node): each Append fails at
/// `--committer-timeout` as `committer_unavailable`, and nothing stays in flight forever.
#[test]
fn a_committer_that_never_answers_fails_each_call_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let server = stuck_listener_with(dir.path(), "2s", &["--committer-timeout", "2s"]);
    let t0 = Instant::now();
    loop {
        let (_, m) = server.get("/metrics");
        let failed = series(
            &m,
            "imerg_granules_ingested_total",
            &[("source", "watcher"), ("result", "committer_unavailable")],
        );
        if failed.is_some_and(|n| n >= 1.0) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no deadline: {m}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("did not answer within 2s"), "{log}");
}

/// Polls `/healthz` until it answers 503 with `says` in its body.
fn wait_unhealthy(server: &Server, says: &str) {
    let t0 = Instant::now();
    loop {
        let (code, body) = server.get("/healthz");
        if code == 503 {
            assert!(body.contains(says), "{body}");
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "still healthy: {code} {body}\n{}",
            std::fs::read_to_string(&server.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The committer task panics (standing for a panic inside Icechunk): every append would fail
/// from then on, so `/healthz` fails and the orchestrator restarts the process.
#[test]
fn a_dead_committer_fails_the_liveness_check() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(
        dir.path(),
        &["--watch-interval", "100ms"],
        &[("IMERG_FAULT_AT", "committer_batch:panic")],
    );
    assert_eq!(server.get("/healthz").0, 200);
    synth(
        &dir.path().join("granules"),
        "2022-02-02T00:00",
        "2022-02-02T00:30",
    );
    wait_unhealthy(&server, "critical task stopped: committer");
}

/// A libhdf5 parse that never returns (a crafted file can loop libhdf5 while it holds its global
/// lock): `/healthz` fails once it has run longer than `--parse-stuck-after`.
#[test]
fn a_stuck_hdf5_parse_fails_the_liveness_check() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(
        dir.path(),
        &["--watch-interval", "100ms", "--parse-stuck-after", "2s"],
        &[("IMERG_FAULT_AT", "hdf5_parse:hang")],
    );
    assert_eq!(server.get("/healthz").0, 200);
    synth(
        &dir.path().join("granules"),
        "2022-02-02T00:00",
        "2022-02-02T00:30",
    );
    wait_unhealthy(&server, "an HDF5 parse has run for");
    // Alive in every other respect: it still answers.
    assert_eq!(server.get("/metrics").0, 200);
}

/// Review L15: maintenance ran inline in the committer, without a time limit, so an expiry or
/// GC that takes hours held up every caller. Here maintenance hangs for good: appends go on.
#[test]
fn a_maintenance_run_that_never_ends_does_not_hold_up_commits() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(
        dir.path(),
        &[
            "--watch-interval",
            "100ms",
            "--maintenance-every",
            "1s",
            "--batch-age",
            "200ms",
        ],
        &[("IMERG_FAULT_AT", "maintenance:hang")],
    );
    let granules = dir.path().join("granules");
    synth(&granules, "2022-02-02T00:00", "2022-02-02T00:30");
    server.wait_added(1);
    // The first maintenance run starts after the next batch, 1 s on, and never ends.
    std::thread::sleep(Duration::from_millis(1500));
    synth(&granules, "2022-02-02T00:30", "2022-02-02T01:00");
    server.wait_added(2);
    std::thread::sleep(Duration::from_millis(500));
    synth(&granules, "2022-02-02T01:00", "2022-02-02T02:00");
    server.wait_added(4);
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("fault point maintenance: hanging"), "{log}");
}
