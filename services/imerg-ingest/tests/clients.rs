//! What clients that know nothing of this project meet: a generic gRPC client
//! (tests/python/grpc_generic_client.py, the way grpcui, Postman or evans work) learns every
//! service from reflection v1alpha, checks that v1 lists the same, and calls every RPC.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

#[test]
fn a_generic_client_lists_and_calls_every_rpc_through_reflection() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::Server::spawn(dir.path(), &["--demo"], &[]);
    server.wait_added(48);
    let addr = server.grpc.trim_start_matches("http://").to_string();
    // The demo's day: the job finds every granule present already.
    let out = common::python_script(
        "grpc_generic_client.py",
        &[
            addr.as_str(),
            "2025-09-30T00:00:00Z",
            "2025-10-01T00:00:00Z",
        ],
        &[],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let services = report["services"].as_object().unwrap();
    let ours: Vec<&String> = services
        .keys()
        .filter(|k| k.starts_with("imerg."))
        .collect();
    assert_eq!(ours.len(), 3, "{report}");
    assert!(services.contains_key("grpc.health.v1.Health"), "{report}");
    let v1: Vec<&str> = report["reflection_v1_services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    for s in &ours {
        assert!(v1.contains(&s.as_str()), "reflection v1 lacks {s}: {v1:?}");
    }
    // Every RPC was called: the operators' ones succeed, the internal ones refuse an empty
    // request on its content (not UNIMPLEMENTED, not a transport error).
    let calls = report["calls"].as_object().unwrap();
    let mut called = 0;
    for (svc, methods) in services.iter().filter(|(k, _)| k.starts_with("imerg.")) {
        for m in methods.as_array().unwrap() {
            let m = m.as_str().unwrap();
            let short = svc.rsplit('.').next().unwrap();
            let (key, want) = if short == "IngestService" {
                (m.to_string(), "OK")
            } else {
                (format!("{short}.{m}"), "INVALID_ARGUMENT")
            };
            assert_eq!(calls[&key]["code"], want, "{key}: {report}");
            called += 1;
        }
    }
    assert_eq!(called, 8, "{report}");
    assert_eq!(calls["GetStatus"]["granules_present"], 48, "{report}");
    assert_eq!(
        calls["WatchJob"]["state"], "JOB_STATE_SUCCEEDED",
        "{report}"
    );
    assert_eq!(calls["ListJobs"]["jobs"], 1, "{report}");
    server.signal("-TERM");
    assert!(server.child.wait().unwrap().success());
}

/// `backfill --watch` as an operator runs it: on a terminal (a pseudo-terminal from `script`) a
/// progress bar with the count, rate and ETA, then the final state; in a pipe, the first and
/// final states and at most one line per `--progress-every` in between, not one per granule.
#[test]
fn backfill_watch_shows_a_bar_on_a_terminal_and_few_lines_in_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    common::synth(
        &dir.path().join("granules"),
        "2023-03-03T00:00",
        "2023-03-03T12:00",
    );
    let mut server = common::Server::spawn(dir.path(), &["--watch", "false"], &[]);
    let bin = env!("CARGO_BIN_EXE_imerg-ingest");
    let piped = common::bin()
        .args(["backfill", "--server", &server.grpc, "--watch"])
        .args(["--start", "2023-03-03T00:00", "--end", "2023-03-03T06:00"])
        .args(["--progress-every", "1h"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&piped.stdout);
    assert!(piped.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("running"), "{text}");
    assert!(
        lines[1].contains("succeeded") && lines[1].contains("committed 12"),
        "{text}"
    );

    let cmd = format!(
        "{bin} backfill --server {} --watch --start 2023-03-03T06:00 --end 2023-03-03T12:00",
        server.grpc
    );
    let tty = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{text}");
    assert!(text.contains("granules"), "a bar: {text}");
    assert!(text.contains("ETA"), "a bar: {text}");
    assert!(text.contains("succeeded"), "{text}");
    assert!(text.contains("committed 12"), "{text}");
    server.signal("-TERM");
    assert!(server.child.wait().unwrap().success());
}

/// The status page at `/` as a person sees it: the Late demo (yesterday's granules) and a
/// backfill job, rendered by headless Chromium; the words that matter are in the page and in the
/// screenshot's text (OCR), and the numbers in the HTML are the store's.
#[test]
fn the_status_page_shows_coverage_lag_jobs_and_commits_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::Server::spawn(dir.path(), &["--demo", "--product", "late"], &[]);
    server.wait_added(48);
    // A job over a day the source does not have: it ends with every granule missing.
    let out = common::bin()
        .args(["backfill", "--server", &server.grpc, "--product-id", "late"])
        .args([
            "--start",
            "2026-01-01",
            "--end",
            "2026-01-01T03:00",
            "--watch",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let (code, html) = server.get("/");
    assert_eq!(code, 200);
    for want in [
        "GPM IMERG Late Precipitation",
        "of the record: 48 of ",
        "0 gaps",
        "behind now",
        "Running jobs: 0",
        "2026-01-01 00:00 UTC to 2026-01-01 03:00 UTC",
        "succeeded",
        "Recent commits (1 in all)",
        "48 granule(s) of late",
    ] {
        assert!(html.contains(want), "{want:?} not in {html}");
    }

    // A range that runs ten years into the future is clipped to now: about a day's granules are
    // expected, not 175,000 that cannot exist yet (review L2).
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1))
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let out = common::bin()
        .args(["backfill", "--server", &server.grpc, "--json"])
        .args(["--start", &yesterday, "--end", "2036-01-01"])
        .output()
        .unwrap();
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = job["expected"].as_u64().unwrap();
    assert!((47..=49).contains(&expected), "{job}");
    common::bin()
        .args(["backfill", "--server", &server.grpc, "--cancel"])
        .arg(job["id"].as_str().unwrap())
        .output()
        .unwrap();

    let png = dir.path().join("status.png");
    let url = format!("http://{}/", server.http);
    common::python_script(
        "check_status_page.py",
        &[
            url.as_str(),
            png.to_str().unwrap(),
            "coverage",
            "granules",
            "gaps",
            "lag",
            "behind",
            "jobs",
            "commits",
        ],
        &[],
    );
    assert!(std::fs::metadata(&png).unwrap().len() > 10_000);
    server.signal("-TERM");
    assert!(server.child.wait().unwrap().success());
}
