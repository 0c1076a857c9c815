//! Notifications on a real SQS queue (moto on loopback): a bucket configured to notify the queue,
//! granules uploaded to it, `serve`'s listener receiving the S3 events (and the s3:TestEvent),
//! the granules landing in the store, processed messages deleted, an object of another product
//! ignored, and a poison message moved to the dead-letter queue by the redrive policy while the
//! listener keeps going. The end-to-end test runs as in production: two days uploaded in random
//! order (some twice), the repository on the same S3, references to `s3://` URLs, and the
//! Python reader comparing the store with the source files. The service runs in-process
//! (`imerg_service`), except where a test counts exact receives.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

mod common;

use common::aws::{ENVS, Stack};
use common::{
    InProcess, Server, aws_env, check_store, keys, metric, metric_opt, python, synth, synth_with,
};

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn granules_announced_on_sqs_are_ingested_and_their_messages_deleted() {
    aws_env();
    let py = python();
    let stack = Stack::start(&py, 2);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("copy");
    synth(&local, "2024-02-01T00:00", "2024-02-01T01:30");
    // Uploads: the bucket notifies the queue (one S3 event per object), plus an object of
    // another product and a poison message that is not JSON.
    for k in keys("2024-02-01T00:00", "2024-02-01T01:30") {
        stack.put(&k, &std::fs::read(local.join(&k)).unwrap());
    }
    stack.put("GPM_L3/GPM_3IMERGHHL.07/2024/032/other-product.RT-H5", b"x");
    stack.send("{this is not json");

    let server = InProcess::start(dir.path(), &args(&stack.serve_args(false)));
    let repo = dir.path().join("repo");
    let t0 = std::time::Instant::now();
    loop {
        let out = common::bin()
            .args(["status", "--json", "--repo"])
            .arg(&repo)
            .output()
            .unwrap();
        if out.status.success() {
            let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if st["granules_present"] == 3 && stack.pending() == 0 && stack.dead() == 1 {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "not done: pending {}, dead-lettered {}",
            stack.pending(),
            stack.dead()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(stack.dead_bodies(), vec!["{this is not json".to_string()]);
    let (code, ready) = server.get("/readyz");
    assert_eq!(code, 200, "{ready}");
    let (_, metrics) = server.get("/metrics");
    assert!(
        metric(
            &metrics,
            "imerg_granules_rejected_total{reason=\"malformed_json\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "imerg_sqs_messages_total{outcome=\"kept\",reason=\"malformed_json\"}"
        ) >= 2.0,
        "received twice before the redrive: {metrics}"
    );
    // At least once: a message may be redelivered, never lost.
    assert!(
        metric(&metrics, "imerg_granules_received_total{source=\"sqs\"}") >= 3.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "imerg_granules_received_total{source=\"sqs_ignored\"}"
        ) >= 1.0,
        "{metrics}"
    );
    // The granule messages and the other product's (ignored) were deleted; their lag recorded.
    assert!(
        metric(
            &metrics,
            "imerg_sqs_messages_total{outcome=\"deleted\",reason=\"\"}"
        ) >= 4.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "imerg_sqs_message_lag_seconds_count") >= 4.0,
        "{metrics}"
    );
}

/// Two days uploaded in random order, ten of them twice, with the repository on S3: the store
/// the Python reader opens equals the source files, the queue drains, commits are batched.
#[test]
fn two_days_shuffled_and_duplicated_end_to_end_on_s3() {
    aws_env();
    let py = python();
    let stack = Stack::start(&py, 5);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("copy");
    // Deflate level 1 keeps the generator fast; the layout is the same at any level.
    synth_with(
        &local,
        "2024-02-01",
        "2024-02-03",
        &["--deflate-level", "1"],
    );
    let mut all = keys("2024-02-01", "2024-02-03");
    assert_eq!(all.len(), 96);
    // A fixed shuffle (LCG), then ten keys again: S3 notifies every upload.
    let mut x: u64 = 0x5eed;
    for i in (1..all.len()).rev() {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        all.swap(i, usize::try_from(x >> 33).unwrap() % (i + 1));
    }
    let mut uploads = all.clone();
    uploads.extend(all.iter().step_by(9).take(10).cloned());
    // The service runs while the uploads arrive, as it would in production.
    let server = InProcess::start(dir.path(), &args(&stack.serve_args(true)));
    for k in &uploads {
        stack.put(k, &std::fs::read(local.join(k)).unwrap());
    }
    let st = stack.wait_until(Duration::from_secs(240), 0, |s| s["granules_present"] == 96);
    assert_eq!(st["gaps"], serde_json::json!([]), "{st}");
    assert_eq!(st["first_granule"], "2024-02-01T00:00:00Z", "{st}");
    assert_eq!(st["last_granule"], "2024-02-02T23:30:00Z", "{st}");
    let commits = st["commits"].as_u64().unwrap();
    assert!(
        commits <= 40,
        "{commits} commits for 96 granules: not batched"
    );
    let (_, metrics) = server.get("/metrics");
    // Every granule in place: 88 references each plus the coordinate chunks (time, time_bnds,
    // granule_present), read from the store, the source of truth (this process's counters also
    // count the other tests' services).
    assert_eq!(st["references"], 96 * 88 + 16, "{st}");
    assert!(
        metric(
            &metrics,
            "imerg_granules_committed_total{outcome=\"added\"}"
        ) >= 96.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "imerg_granules_received_total{source=\"sqs\"}") >= 106.0,
        "{metrics}"
    );
    drop(server);
    check_store(
        dir.path(),
        &stack.expect(&local, &[("2024-02-01", "2024-02-03")], &st),
    );
}

/// Update and Delete: a re-uploaded object with other bytes re-points the granule's references
/// (the reader then sees the new file), a CMR "Update" for unchanged bytes is a no-op, and a CMR
/// "Delete" is counted while the store keeps the granule.
#[test]
fn updates_re_point_references_and_deletes_are_counted() {
    aws_env();
    let py = python();
    let stack = Stack::start(&py, 3);
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (dir.path().join("v1"), dir.path().join("v2"));
    synth(&v1, "2024-05-01T00:00", "2024-05-01T01:00");
    // The same granules written again at another deflate level: same layout, other offsets.
    synth_with(
        &v2,
        "2024-05-01T00:00",
        "2024-05-01T01:00",
        &["--deflate-level", "1"],
    );
    let k = keys("2024-05-01T00:00", "2024-05-01T01:00");
    for key in &k {
        stack.put(key, &std::fs::read(v1.join(key)).unwrap());
    }
    let server = InProcess::start(dir.path(), &args(&stack.serve_args(true)));
    stack.wait_until(Duration::from_secs(60), 0, |s| s["granules_present"] == 2);

    // New bytes for the first granule (S3 event), then CMR messages naming both granules.
    stack.put(&k[0], &std::fs::read(v2.join(&k[0])).unwrap());
    stack.send(&format!(
        r#"{{"action": "Update", "location": "s3://imerg-src/{}"}}"#,
        k[1]
    ));
    let name = k[1].rsplit('/').next().unwrap();
    stack.send(&format!(
        r#"{{"event-type": "Delete", "granule-ur": "{name}"}}"#
    ));
    let t0 = std::time::Instant::now();
    let m = loop {
        let (_, m) = server.get("/metrics");
        if metric_opt(&m, "imerg_granules_committed_total{outcome=\"replaced\"}") == Some(1.0)
            && metric_opt(&m, "imerg_granules_received_total{source=\"sqs_removed\"}") == Some(1.0)
            && stack.pending() == 0
        {
            break m;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{m}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        metric(&m, "imerg_granules_committed_total{outcome=\"duplicate\"}") >= 1.0,
        "the unchanged granule's Update is a no-op: {m}"
    );
    assert_eq!(stack.dead(), 0);
    let st = stack.status().unwrap();
    assert_eq!(st["granules_present"], 2, "{st}");
    drop(server);
    // The reader sees the new bytes of the first granule and the old ones of the second.
    let mut expect = stack.expect(&v1, &[("2024-05-01T00:00", "2024-05-01T01:00")], &st);
    expect["present"][0]["path"] = serde_json::json!(v2.join(&k[0]));
    check_store(dir.path(), &expect);
}

/// A message whose granule takes longer than the visibility timeout (a slow commit) keeps its
/// visibility extended: it is received once, not redelivered to a second handler meanwhile. A
/// process of its own: it counts exact receives, which other tests in this binary would add to.
#[test]
fn visibility_is_extended_while_a_granule_is_in_flight() {
    let py = python();
    let stack = Stack::start(&py, 5);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("copy");
    synth(&local, "2024-07-01T00:00", "2024-07-01T00:30");
    let k = keys("2024-07-01T00:00", "2024-07-01T00:30");
    stack.put(&k[0], &std::fs::read(local.join(&k[0])).unwrap());
    let mut a = stack.serve_args(true);
    // Visibility 2 s (extended every second); the committer waits 6 s before committing.
    let age = a.iter().position(|x| x == "--batch-age").unwrap();
    a[age + 1] = "6s".into();
    a.extend(["--batch-idle", "6s"].map(String::from));
    let server = Server::spawn(dir.path(), &args(&a), ENVS);
    stack.wait_until(Duration::from_secs(60), 0, |s| s["granules_present"] == 1);
    let (_, m) = server.get("/metrics");
    assert!(
        metric(&m, "imerg_sqs_visibility_extensions_total") >= 3.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "imerg_granules_received_total{source=\"sqs\"}"),
        1.0,
        "received once: {m}"
    );
    assert_eq!(
        metric(
            &m,
            "imerg_sqs_messages_total{outcome=\"deleted\",reason=\"\"}"
        ),
        2.0,
        "the granule's message and the s3:TestEvent: {m}"
    );
}

/// A notification that carries a W3C `traceparent` message attribute (as an upstream that
/// traces sends it): the granule's spans join that trace, as children of the sender's span.
#[test]
fn a_traceparent_in_the_message_attributes_parents_the_granule_trace() {
    aws_env();
    let py = python();
    let stack = Stack::start(&py, 3);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("copy");
    synth(&local, "2024-03-01T00:00", "2024-03-01T00:30");
    let key = keys("2024-03-01T00:00", "2024-03-01T00:30").remove(0);
    // Into a bucket that announces nothing: the only message is ours.
    stack.create_bucket("imerg-quiet");
    stack.put_in(
        "imerg-quiet",
        &key,
        &std::fs::read(local.join(&key)).unwrap(),
    );
    let (endpoint, bodies) = common::otlp::collector();
    let mut serve = stack.serve_args(false);
    let at = serve.iter().position(|a| a == "s3://imerg-src").unwrap();
    serve[at] = "s3://imerg-quiet".into();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let sender_span = "00f067aa0ba902b7";
    let mut server = common::Server::spawn(
        dir.path(),
        &args(&serve),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_SERVICE_NAME", "imerg-sqs"),
        ],
    );
    stack.send_with_attributes(
        &format!(
            r#"{{"Records":[{{"eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"imerg-quiet"}},"object":{{"key":"{key}"}}}}}}]}}"#
        ),
        &[("traceparent", &format!("00-{trace_id}-{sender_span}-01"))],
    );
    server.wait_added(1);
    let t0 = std::time::Instant::now();
    while stack.pending() > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "message not deleted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    server.signal("-TERM");
    assert!(server.child.wait().unwrap().success());
    let mut all = Vec::new();
    while let Ok((_, body)) = bodies.recv_timeout(Duration::from_secs(3)) {
        all.push(body);
    }
    let traces = common::otlp::traces(&all);
    let (services, names) = traces
        .get(trace_id)
        .unwrap_or_else(|| panic!("no span in the sender's trace: {traces:#?}"));
    assert!(services.contains("imerg-sqs"), "{services:?}");
    for n in ["sqs_message", "ingest", "granule"] {
        assert!(names.contains(n), "{n} not in {names:?}");
    }
}

/// Review L13: a message's granules were ingested one after another, so an S3 event with 1000
/// records could outlive its lease. Now 8 at a time: a 1000-record event (24 granules, each
/// named about 42 times, as repeated events of one object would) is received once, every granule
/// lands, and the message is deleted.
#[test]
fn a_thousand_record_event_is_received_once_and_deleted() {
    let py = python();
    let stack = Stack::start(&py, 5);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("copy");
    synth(&local, "2024-07-02T00:00", "2024-07-02T12:00");
    let k = keys("2024-07-02T00:00", "2024-07-02T12:00");
    for key in &k {
        stack.put(key, &std::fs::read(local.join(key)).unwrap());
    }
    let server = Server::spawn(dir.path(), &args(&stack.serve_args(true)), ENVS);
    stack.wait_until(Duration::from_secs(120), 0, |s| {
        s["granules_present"] == k.len()
    });
    let records: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                r#"{{"eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"imerg-src"}},"object":{{"key":"{}"}}}}}}"#,
                k[i % k.len()]
            )
        })
        .collect();
    let (_, before) = server.get("/metrics");
    let received = |m: &str| metric(m, "imerg_granules_received_total{source=\"sqs\"}");
    let deleted = |m: &str| {
        metric(
            m,
            "imerg_sqs_messages_total{outcome=\"deleted\",reason=\"\"}",
        )
    };
    stack.send(&format!(r#"{{"Records":[{}]}}"#, records.join(",")));
    let t0 = std::time::Instant::now();
    let m = loop {
        let (_, m) = server.get("/metrics");
        if deleted(&m) > deleted(&before) {
            break m;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "not deleted: {m}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(
        received(&m) - received(&before),
        1000.0,
        "received once: {m}"
    );
    assert_eq!(deleted(&m) - deleted(&before), 1.0, "{m}");
    assert_eq!(
        metric_opt(&m, "imerg_sqs_messages_total{outcome=\"kept\",reason=\"\"}").unwrap_or(0.0),
        0.0
    );
    assert_eq!(stack.pending(), 0);
}
