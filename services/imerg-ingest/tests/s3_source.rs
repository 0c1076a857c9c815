//! Granules read from an S3-compatible bucket: a real S3 server on loopback (moto, from the test
//! venv), granules uploaded to it, `serve --source s3://bucket --source-endpoint ...`, a backfill
//! over gRPC, and the Python reader resolving the `s3://` references through the authorized
//! container (whose endpoint the repository persisted).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Server, check_store, http, moto, present, python, synth};
use futures::StreamExt as _;
use imerg_proto::{to_timestamp, v1};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_from_an_s3_bucket() {
    let py = python();
    let (_moto, s3) = moto(&py);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("copy");
    synth(&local, "2024-01-10T00:00", "2024-01-10T01:30");
    assert_eq!(http(&s3, "PUT", "/imerg-src", b""), 200, "create bucket");
    let profile = imerg_catalog::ProductProfile::final_v07b();
    let range = imerg_catalog::TimeRange::new(
        imerg_catalog::parse_time("2024-01-10T00:00").unwrap(),
        imerg_catalog::parse_time("2024-01-10T01:30").unwrap(),
    )
    .unwrap();
    let granules: Vec<_> = profile.expected(range).collect();
    for g in &granules {
        let body = std::fs::read(local.join(&g.key)).unwrap();
        assert_eq!(
            http(&s3, "PUT", &format!("/imerg-src/{}", g.key), &body),
            200
        );
    }

    let endpoint = format!("http://{s3}");
    let server = Server::spawn(
        dir.path(),
        &[
            "--source",
            "s3://imerg-src",
            "--source-endpoint",
            &endpoint,
            "--source-region",
            "us-east-1",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    let grpc = server.grpc.trim_start_matches("http://").to_string();
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = v1::ingest_service_client::IngestServiceClient::new(ch);
    // No token configured: accepted from loopback.
    let job = c
        .backfill(v1::BackfillRequest {
            product: String::new(),
            start_time: Some(to_timestamp(range.start)),
            end_time: Some(to_timestamp(range.end + chrono::Duration::minutes(30))),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let mut stream = c
        .watch_job(v1::WatchJobRequest { id: job.id })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(j) = stream.next().await {
        last = Some(j.unwrap().job.unwrap());
    }
    let done = last.unwrap();
    assert_eq!(
        (done.committed, done.missing_at_source, done.failed),
        (3, 1, 0),
        "{done:?}"
    );

    check_store(
        dir.path(),
        &serde_json::json!({
            "repo": dir.path().join("repo"),
            "container": "s3://imerg-src/",
            "s3_credentials": {"access_key_id": "test", "secret_access_key": "test"},
            "time_len": granules.last().unwrap().time_index + 1,
            "present": present(&local, &[("2024-01-10T00:00", "2024-01-10T01:30")]),
            "gaps": [],
        }),
    );
}
