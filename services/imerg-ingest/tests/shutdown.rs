//! Shutdown by ownership, as a real process receives it: with granules stuck on a committer that
//! never answers, SIGTERM turns readiness off at once and the process still exits within twice
//! `--shutdown-grace`; a second SIGTERM exits at once.

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
    let server = Server::spawn(
        data,
        &[
            "--roles",
            "listener,worker",
            "--committer-addr",
            &committer,
            "--watch-interval",
            "100ms",
            "--shutdown-grace",
            grace,
        ],
        &[],
    );
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
