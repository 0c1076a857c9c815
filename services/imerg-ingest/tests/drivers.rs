//! One ingest path: the directory watcher, backfill jobs, the queue listener and `append` each
//! hand granules to the same Ingestor, so the same metrics move by the same amounts for each
//! (received, ingested by result, in flight back to zero, latency histograms, virtualized,
//! committed). The service runs in-process; the queue is the in-memory one with SQS's semantics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{InProcess, keys, series, service_config, synth};
use imerg_proto::{to_timestamp, v1};

/// What every driver must have moved, after `n` granules through it.
fn expect_moved(before: &str, after: &str, source: &str, n: f64) {
    let d = |name: &str, labels: &[(&str, &str)]| {
        let a = series(after, name, labels)
            .unwrap_or_else(|| panic!("{name}{labels:?} missing after {source}:\n{after}"));
        a - series(before, name, labels).unwrap_or(0.0)
    };
    let src = [("source", source)];
    assert_eq!(
        d("imerg_granules_received_total", &src),
        n,
        "{source}: received"
    );
    assert_eq!(
        d(
            "imerg_granules_ingested_total",
            &[("source", source), ("result", "added")]
        ),
        n,
        "{source}: ingested"
    );
    assert_eq!(
        d("imerg_granule_ingest_seconds_count", &src),
        n,
        "{source}: latency"
    );
    assert_eq!(
        d("imerg_granules_virtualized_total", &[]),
        n,
        "{source}: virtualized"
    );
    assert_eq!(
        d("imerg_granules_committed_total", &[("outcome", "added")]),
        n,
        "{source}: committed"
    );
    assert_eq!(
        d("imerg_fetch_seconds_count", &[]),
        n,
        "{source}: fetch latency"
    );
    assert_eq!(
        d("imerg_parse_seconds_count", &[]),
        n,
        "{source}: parse latency"
    );
    assert!(
        d("imerg_commit_seconds_count", &[]) >= 1.0,
        "{source}: commit latency"
    );
    assert_eq!(
        series(after, "imerg_granules_in_flight", &[]),
        Some(0.0),
        "{source}: in flight back to 0"
    );
}

fn metrics() -> String {
    imerg_service::prometheus().unwrap().render()
}

fn wait_present(server: &InProcess, n: u64) {
    let t0 = Instant::now();
    loop {
        let (_, m) = server.get("/metrics");
        // The committed counter moves once the commit is durable.
        if series(
            &m,
            "imerg_granules_committed_total",
            &[("outcome", "added")],
        )
        .is_some_and(|v| v >= n as f64)
            && series(&m, "imerg_granules_in_flight", &[]) == Some(0.0)
        {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "not {n} committed: {m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_driver_moves_the_same_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let granules = data.join("granules");
    let fast = [
        "--watch-interval",
        "100ms",
        "--batch-age",
        "100ms",
        "--batch-idle",
        "50ms",
    ];

    // The directory watcher: two granules already in the source directory.
    synth(&granules, "2021-06-01T00:00", "2021-06-01T01:00");
    let before = metrics();
    let server = InProcess::start(data, &fast);
    wait_present(&server, 2);
    server.stop().unwrap();
    let after = metrics();
    expect_moved(&before, &after, "watcher", 2.0);

    // The rest with the watcher off.
    synth(&granules, "2021-06-02T00:00", "2021-06-02T01:00");
    synth(&granules, "2021-06-03T00:00", "2021-06-03T01:00");
    let queue = Arc::new(imerg_listener::MemoryQueue::new(
        3,
        Duration::from_millis(100),
    ));
    let mut args = fast.to_vec();
    args.extend(["--watch", "false"]);
    let server = InProcess::start_with(service_config(data, &args), Some(queue.clone()));

    // A backfill job.
    let before = metrics();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let job = rt.block_on(async {
        let mut c = v1::ingest_service_client::IngestServiceClient::connect(server.grpc.clone())
            .await
            .unwrap();
        let t = |s: &str| Some(to_timestamp(imerg_catalog::parse_time(s).unwrap()));
        let job = c
            .backfill(v1::BackfillRequest {
                product: String::new(),
                start_time: t("2021-06-02T00:00"),
                end_time: t("2021-06-02T01:00"),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        loop {
            let j = c
                .get_job(v1::GetJobRequest { id: job.id.clone() })
                .await
                .unwrap()
                .into_inner()
                .job
                .unwrap();
            if j.state != v1::JobState::Running as i32 {
                break j;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert_eq!((job.committed, job.failed), (2, 0), "{job:?}");
    let after = metrics();
    expect_moved(&before, &after, "backfill", 2.0);

    // The queue listener: one S3 event per granule.
    let before = metrics();
    for k in keys("2021-06-03T00:00", "2021-06-03T01:00") {
        queue.send(format!(
            r#"{{"Records":[{{"eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"b"}},"object":{{"key":"{k}"}}}}}}]}}"#
        ));
    }
    let t0 = Instant::now();
    while !queue.is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the queue did not drain"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = metrics();
    expect_moved(&before, &after, "sqs", 2.0);
    assert_eq!(queue.counts().0, 2, "both messages deleted");
    server.stop().unwrap();

    // `append`, in-process through the library function the command calls.
    synth(&granules, "2021-06-04T00:00", "2021-06-04T01:00");
    let files: Vec<_> = keys("2021-06-04T00:00", "2021-06-04T01:00")
        .iter()
        .map(|k| granules.join(k))
        .collect();
    let before = metrics();
    let report = rt
        .block_on(imerg_service::append::append_files(
            imerg_catalog::ProductProfile::final_v07b(),
            &files,
            &imerg_service::append::AppendOptions {
                repo: data.join("repo"),
                source_root: granules.clone(),
                batch_size: 480,
                manifest_max_bytes: imerg_dataset::DEFAULT_MANIFEST_MAX_BYTES,
            },
        ))
        .unwrap();
    assert!(
        report.results.iter().all(|(_, r)| r.is_ok()),
        "{:?}",
        report.results
    );
    let after = metrics();
    expect_moved(&before, &after, "append", 2.0);
}
