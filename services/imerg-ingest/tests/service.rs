//! The service end to end on loopback: the service in-process (`imerg_service`) with a separate
//! gRPC client for Backfill / WatchJob / GetJob / CancelJob / GetStatus, tokens and bad
//! requests, /metrics parsed by the reference Prometheus parser with counters matching what
//! happened, a cancelled job, a re-run that doubles nothing, a graceful stop and the Python
//! reader on the resulting store; then as real processes: a SIGKILL mid-backfill followed by a
//! restart that finishes the range, SIGTERM, roles in separate processes, OTLP export.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;

use common::{InProcess, Server, check_store, present, python, synth};
use futures::StreamExt as _;
use imerg_proto::{to_timestamp, v1};
use tonic::Code;

const TOKEN: &str = "operator-s3cret";

/// serve with the token and small batches, watcher off.
fn start(data: &Path) -> Server {
    start_with(data, &[])
}

fn args_with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--watch",
        "false",
        "--operator-token",
        TOKEN,
        "--backfill-max-granules",
        "2000",
        "--backfill-concurrency",
        "4",
        "--batch-age",
        "300ms",
        "--shutdown-grace",
        "10s",
    ];
    args.extend_from_slice(extra);
    args
}

fn start_with(data: &Path, extra: &[&str]) -> Server {
    Server::spawn(data, &args_with(extra), &[])
}

type Client = v1::ingest_service_client::IngestServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Auth>,
>;

#[derive(Clone)]
struct Auth(Option<String>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        Ok(req)
    }
}

async fn client(grpc: &str, token: Option<&str>) -> Client {
    let ch = tonic::transport::Endpoint::from_shared(grpc.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    v1::ingest_service_client::IngestServiceClient::with_interceptor(
        ch,
        Auth(token.map(String::from)),
    )
}

fn t(s: &str) -> Option<prost_types::Timestamp> {
    Some(to_timestamp(imerg_catalog::parse_time(s).unwrap()))
}

fn req(start: &str, end: &str) -> v1::BackfillRequest {
    v1::BackfillRequest {
        product: String::new(),
        start_time: t(start),
        end_time: t(end),
        request_id: String::new(),
    }
}

/// Starts a backfill and returns its job.
async fn start_job(c: &mut Client, r: v1::BackfillRequest) -> v1::Job {
    c.backfill(r).await.unwrap().into_inner().job.unwrap()
}

async fn watch_to_end(c: &mut Client, id: &str) -> v1::Job {
    let mut stream = c
        .watch_job(v1::WatchJobRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    let mut n = 0;
    while let Some(j) = stream.next().await {
        last = Some(j.unwrap().job.unwrap());
        n += 1;
    }
    assert!(n >= 1);
    let last = last.unwrap();
    assert_ne!(
        last.state,
        v1::JobState::Running as i32,
        "the stream ends with a final state"
    );
    last
}

/// One sample parsed by prometheus_client; a missing series fails the test.
fn metric(samples: &serde_json::Value, key: &str) -> f64 {
    samples
        .get(key)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or_else(|| panic!("no series {key} in {samples}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_over_grpc_end_to_end() {
    let py = python();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let granules = data.join("granules");
    let profile = imerg_catalog::ProductProfile::final_v07b();
    synth(&granules, "2021-05-05T00:00", "2021-05-05T06:00");
    synth(&granules, "2021-05-07T00:00", "2021-05-07T06:00");
    // A granule name whose object is not HDF5.
    let junk = profile.key(imerg_catalog::parse_time("2021-05-05T06:00").unwrap());
    std::fs::write(
        granules.join(&junk),
        b"<html>503 Service Unavailable</html>",
    )
    .unwrap();

    let server = InProcess::start(&data, &args_with(&[]));
    assert_eq!(server.get("/healthz").0, 200);
    assert_eq!(server.get("/readyz").0, 200);

    // Tokens.
    let mut anon = client(&server.grpc, None).await;
    let e = anon
        .backfill(req("2021-05-05", "2021-05-06"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(!e.message().contains(TOKEN));
    let mut wrong = client(&server.grpc, Some("guess")).await;
    assert_eq!(
        wrong
            .backfill(req("2021-05-05", "2021-05-06"))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(
        wrong
            .cancel_job(v1::CancelJobRequest { id: "x".into() })
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    // Reading needs no token.
    assert_eq!(
        anon.list_jobs(v1::ListJobsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .jobs
            .len(),
        0
    );

    // Bad requests.
    let mut c = client(&server.grpc, Some(TOKEN)).await;
    for (r, says) in [
        (req("2021-05-06", "2021-05-05"), "must be after start"),
        (
            req("1990-01-01", "1990-01-02"),
            "outside the product's record",
        ),
        (req("2010-01-01", "2012-01-01"), "more than the maximum"),
        (
            v1::BackfillRequest {
                product: "late".into(),
                ..req("2021-05-05", "2021-05-06")
            },
            "unknown product",
        ),
        (
            v1::BackfillRequest {
                start_time: None,
                ..req("2021-05-05", "2021-05-06")
            },
            "start_time is missing",
        ),
    ] {
        let e = c.backfill(r).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains(says),
            "{:?} should say {says:?}",
            e.message()
        );
    }
    assert_eq!(
        c.get_job(v1::GetJobRequest { id: "nope".into() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // Errors say their reason machine-readably (google.rpc.ErrorInfo).
    {
        use tonic_types::StatusExt as _;
        let e = c
            .backfill(req("1990-01-01", "1990-01-02"))
            .await
            .unwrap_err();
        let info = e.get_details_error_info().unwrap();
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("INVALID_ARGUMENT", "imerg.ingest.v1")
        );
        let e = c
            .get_job(v1::GetJobRequest { id: "nope".into() })
            .await
            .unwrap_err();
        assert_eq!(e.get_details_error_info().unwrap().reason, "JOB_NOT_FOUND");
    }

    // A backfill: 12 granules, one object that is not HDF5, 3 missing at the source.
    let job = start_job(&mut c, req("2021-05-05T00:00", "2021-05-05T08:00")).await;
    assert_eq!((job.expected, job.present_already), (16, 0));
    let done = watch_to_end(&mut c, &job.id).await;
    assert_eq!(done.state, v1::JobState::Failed as i32, "{done:?}");
    assert_eq!(
        (done.committed, done.missing_at_source, done.failed),
        (12, 3, 1),
        "{done:?}"
    );
    assert_eq!(done.failures[0].reason, "not_hdf5");
    assert!(done.failures[0].key.ends_with(".0360.V07B.HDF5"));

    // /metrics parses as Prometheus text and counts what happened.
    let (code, text) = server.get("/metrics");
    assert_eq!(code, 200);
    let mfile = data.join("metrics.txt");
    std::fs::write(&mfile, &text).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/check_metrics.py");
    let out = Command::new(&py).arg(&script).arg(&mfile).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        metric(&samples, "imerg_granules_committed_total{outcome=added}"),
        12.0,
        "{samples}"
    );
    assert_eq!(
        metric(&samples, "imerg_granules_rejected_total{reason=not_hdf5}"),
        1.0
    );
    assert_eq!(
        metric(&samples, "imerg_granules_missing_at_source_total{}"),
        3.0
    );
    assert_eq!(
        metric(&samples, "imerg_granules_received_total{source=backfill}"),
        16.0
    );
    assert_eq!(metric(&samples, "imerg_granules_virtualized_total{}"), 12.0);
    assert!(metric(&samples, "imerg_commits_total{}") >= 1.0);
    assert_eq!(
        metric(&samples, "imerg_unauthenticated_requests_total{}"),
        3.0
    );
    assert!(metric(&samples, "imerg_commit_seconds_count{}") >= 1.0);
    // The build and the process, as every Prometheus exporter reports them.
    let build: Vec<_> = samples
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("imerg_build_info{revision="))
        .collect();
    assert_eq!(build.len(), 1, "{samples}");
    assert!(
        build[0]
            .0
            .ends_with(&format!(",version={}}}", env!("CARGO_PKG_VERSION"))),
        "{samples}"
    );
    assert_eq!(build[0].1.as_f64(), Some(1.0));
    assert!(metric(&samples, "process_resident_memory_bytes{}") > 1e6);
    // Timestamps, not "time since" (Prometheus's practice): alert on time() - ....
    assert!(metric(&samples, "imerg_last_commit_timestamp_seconds{}") > 1.7e9);
    // Every RPC, by method and code (go-grpc-prometheus names).
    let rpc = |method: &str, code: &str| {
        format!(
            "grpc_server_handled_total{{grpc_code={code},grpc_method={method},grpc_service=imerg.ingest.v1.IngestService}}"
        )
    };
    assert!(metric(&samples, &rpc("Backfill", "OK")) >= 1.0, "{samples}");
    assert_eq!(metric(&samples, &rpc("Backfill", "UNAUTHENTICATED")), 2.0);
    assert_eq!(metric(&samples, &rpc("CancelJob", "UNAUTHENTICATED")), 1.0);
    assert!(
        metric(
            &samples,
            "grpc_server_handling_seconds_count{grpc_method=Backfill,grpc_service=imerg.ingest.v1.IngestService}"
        ) >= 3.0
    );
    assert!(metric(&samples, "process_open_fds{}") >= 3.0);
    assert!(metric(&samples, "process_start_time_seconds{}") > 1.7e9);
    // Backfill progress sums the running jobs: none once this one ended.
    let t0 = std::time::Instant::now();
    loop {
        let (_, text) = server.get("/metrics");
        if text.contains("imerg_backfill_granules{state=\"expected\"} 0\n") {
            assert!(
                text.contains("imerg_backfill_jobs{state=\"failed\"} 1\n"),
                "{text}"
            );
            assert!(
                text.contains("imerg_backfill_jobs_finished_total{state=\"failed\"} 1\n"),
                "{text}"
            );
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "{text}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Re-running the range doubles nothing.
    let again = start_job(&mut c, req("2021-05-05T00:00", "2021-05-05T08:00")).await;
    assert_eq!(again.present_already, 12);
    let again = watch_to_end(&mut c, &again.id).await;
    assert_eq!(
        (again.committed, again.missing_at_source, again.failed),
        (0, 3, 1)
    );

    // Cancel: stops taking granules; what was committed stays; a re-run finishes the rest.
    let job = start_job(&mut c, req("2021-05-07T00:00", "2021-05-07T06:00")).await;
    c.cancel_job(v1::CancelJobRequest { id: job.id.clone() })
        .await
        .unwrap();
    let cancelled = watch_to_end(&mut c, &job.id).await;
    assert_eq!(
        cancelled.state,
        v1::JobState::Cancelled as i32,
        "{cancelled:?}"
    );
    assert!(cancelled.committed < 12, "{cancelled:?}");
    let listed = c
        .list_jobs(v1::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.jobs.len(), 3);
    assert!(listed.next_page_token.is_empty());
    // Newest first, a page at a time, filtered by state.
    let first = c
        .list_jobs(v1::ListJobsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.jobs.len(), 2);
    assert_eq!(first.jobs[0].id, job.id, "newest first");
    let second = c
        .list_jobs(v1::ListJobsRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.jobs.len(), 1);
    assert!(second.next_page_token.is_empty());
    assert_eq!(second.jobs[0].id, listed.jobs[2].id);
    let only_cancelled = c
        .list_jobs(v1::ListJobsRequest {
            state: v1::JobState::Cancelled as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only_cancelled.jobs.len(), 1);
    assert_eq!(
        c.list_jobs(v1::ListJobsRequest {
            page_token: "not a token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err()
        .code(),
        Code::InvalidArgument
    );
    let rest = start_job(&mut c, req("2021-05-07T00:00", "2021-05-07T06:00")).await;
    assert_eq!(rest.present_already, cancelled.committed);
    let rest = watch_to_end(&mut c, &rest.id).await;
    assert_eq!(rest.committed + cancelled.committed, 12);

    let st = c
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.granules_present, 24);
    assert_eq!(st.gaps.len(), 1);
    assert!(st.ingest_lag.unwrap().seconds > 0 && st.manifests > 0);

    // A request_id makes starting idempotent: a retried request gets the first job.
    let mut r = req("2021-05-05T00:00", "2021-05-05T08:00");
    r.request_id = "nightly-2021-05-05".into();
    let a = start_job(&mut c, r.clone()).await;
    let b = start_job(&mut c, r.clone()).await;
    assert_eq!(a.id, b.id);
    assert_eq!(b.request_id, "nightly-2021-05-05");
    r.end_time = t("2021-05-05T09:00");
    assert_eq!(
        c.backfill(r).await.unwrap_err().code(),
        Code::InvalidArgument,
        "the same request_id for another range"
    );
    watch_to_end(&mut c, &a.id).await;

    // A graceful stop.
    server.stop().unwrap();

    // The Python reader sees the source values.
    let gap = profile
        .granule_at(imerg_catalog::parse_time("2021-05-06T00:00").unwrap())
        .unwrap();
    let last = profile
        .granule_at(imerg_catalog::parse_time("2021-05-07T05:30").unwrap())
        .unwrap();
    let present = present(
        &granules,
        &[
            ("2021-05-05T00:00", "2021-05-05T06:00"),
            ("2021-05-07T00:00", "2021-05-07T06:00"),
        ],
    );
    check_store(
        &data,
        &serde_json::json!({
            "repo": data.join("repo"),
            "container": format!("file://{}/", granules.display()),
            "time_len": last.time_index + 1,
            "present": present,
            "gaps": [gap.time_index],
        }),
    );
}

/// SIGKILL in the middle of a backfill, then a restart: the job (kept beside the repository)
/// resumes under its own id and finishes the range, nothing doubled; a re-run finds everything
/// present; then SIGTERM exits cleanly and the Python reader sees the source values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_backfill_then_the_restart_resumes_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let granules = data.join("granules");
    synth(&granules, "2021-05-08T00:00", "2021-05-08T06:00");
    let mut server = start(&data);
    let mut c = client(&server.grpc, Some(TOKEN)).await;
    let job = start_job(&mut c, req("2021-05-08T00:00", "2021-05-08T06:00")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let running = c
        .get_job(v1::GetJobRequest { id: job.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    server.signal("-KILL");
    let _ = server.child.wait();
    assert_eq!(
        running.state,
        v1::JobState::Running as i32,
        "killed while running: {running:?}"
    );
    drop(server);
    let mut server = start(&data);
    let mut c = client(&server.grpc, Some(TOKEN)).await;
    let resumed = watch_to_end(&mut c, &job.id).await;
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("resuming a backfill job"), "{log}");
    assert_eq!(resumed.state, v1::JobState::Succeeded as i32, "{resumed:?}");
    assert_eq!(resumed.create_time, job.create_time, "the same job");
    assert_eq!(
        resumed.present_already + resumed.committed,
        12,
        "{resumed:?}"
    );
    let rerun = start_job(&mut c, req("2021-05-08T00:00", "2021-05-08T06:00")).await;
    assert_eq!(rerun.present_already, 12);
    let rerun = watch_to_end(&mut c, &rerun.id).await;
    assert_eq!(rerun.committed, 0);
    let st = c
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.granules_present, 12);
    // Both jobs are listed after the restart.
    let listed = c
        .list_jobs(v1::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(listed.len(), 2);

    // SIGTERM: a clean exit.
    server.signal("-TERM");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    let profile = imerg_catalog::ProductProfile::final_v07b();
    let last = profile
        .granule_at(imerg_catalog::parse_time("2021-05-08T05:30").unwrap())
        .unwrap();
    check_store(
        &data,
        &serde_json::json!({
            "repo": data.join("repo"),
            "container": format!("file://{}/", granules.display()),
            "time_len": last.time_index + 1,
            "present": present(&granules, &[("2021-05-08T00:00", "2021-05-08T06:00")]),
            "gaps": [],
        }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_in_separate_processes_talk_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    synth(
        &data.join("granules"),
        "2022-08-08T00:00",
        "2022-08-08T03:00",
    );
    // The roles share an internal token: they send it on every internal call and refuse calls
    // without it.
    let internal = ["--internal-token", "internal-s3cret"];
    let committer = start_with(&data, &[&["--roles", "committer"][..], &internal].concat());
    let worker = start_with(&data, &[&["--roles", "worker"][..], &internal].concat());
    let api = start_with(
        &data,
        &[
            &[
                "--roles",
                "api",
                "--worker-addr",
                &worker.grpc,
                "--committer-addr",
                &committer.grpc,
            ][..],
            &internal,
        ]
        .concat(),
    );
    let mut c = client(&api.grpc, Some(TOKEN)).await;
    let job = start_job(&mut c, req("2022-08-08T00:00", "2022-08-08T04:00")).await;
    let done = watch_to_end(&mut c, &job.id).await;
    assert_eq!(
        (done.committed, done.missing_at_source, done.failed),
        (6, 2, 0),
        "{done:?}"
    );
    let st = c
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.granules_present, 6);
    // Each process serves only its own role's service.
    let mut to_worker = client(&worker.grpc, Some(TOKEN)).await;
    assert_eq!(
        to_worker
            .list_jobs(v1::ListJobsRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::Unimplemented
    );
    // Without the internal token, or with another one, the internal services refuse.
    for token in [None, Some("guess")] {
        use imerg_proto::internal::v1 as internal_v1;
        let ch = tonic::transport::Endpoint::from_shared(worker.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut w = internal_v1::worker_service_client::WorkerServiceClient::new(ch);
        let mut r = tonic::Request::new(internal_v1::VirtualizeRequest {
            key_or_url: "GPM_L3/x".into(),
        });
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let e = w.virtualize(r).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{token:?}: {e:?}");
        assert!(!e.message().contains("internal-s3cret"));
    }
    let (_, wm) = worker.get("/metrics");
    assert!(
        wm.contains("imerg_unauthenticated_requests_total 2"),
        "{wm}"
    );
    // The committer counted the commits, the worker the virtualizations.
    let (_, cm) = committer.get("/metrics");
    assert!(
        cm.contains("imerg_granules_committed_total{outcome=\"added\"} 6"),
        "{cm}"
    );
    let (_, wm) = worker.get("/metrics");
    assert!(wm.contains("imerg_granules_virtualized_total 6"), "{wm}");
    assert_eq!(worker.get("/readyz").0, 200);
}

/// Two worker processes behind one `--worker-addr` list (one of them by name, resolved like a
/// headless Service): a backfill's granules spread over both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_over_several_workers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    synth(
        &data.join("granules"),
        "2022-08-09T00:00",
        "2022-08-09T06:00",
    );
    let committer = start_with(&data, &["--roles", "committer"]);
    let w1 = start_with(&data, &["--roles", "worker"]);
    let w2 = start_with(&data, &["--roles", "worker"]);
    let workers = format!("{},{}", w1.grpc.replace("127.0.0.1", "localhost"), w2.grpc);
    let api = start_with(
        &data,
        &[
            "--roles",
            "api",
            "--worker-addr",
            &workers,
            "--committer-addr",
            &committer.grpc,
        ],
    );
    let mut c = client(&api.grpc, Some(TOKEN)).await;
    let job = start_job(&mut c, req("2022-08-09T00:00", "2022-08-09T06:00")).await;
    let done = watch_to_end(&mut c, &job.id).await;
    assert_eq!((done.committed, done.failed), (12, 0), "{done:?}");
    let count = |s: &Server| {
        let (_, m) = s.get("/metrics");
        m.lines()
            .find_map(|l| l.strip_prefix("imerg_granules_virtualized_total "))
            .map_or(0.0, |v| v.parse::<f64>().unwrap())
    };
    let (n1, n2) = (count(&w1), count(&w2));
    assert_eq!(n1 + n2, 12.0, "{n1} + {n2}");
    assert!(n1 > 0.0 && n2 > 0.0, "not spread: {n1} / {n2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    synth(
        &data.join("granules"),
        "2023-03-03T00:00",
        "2023-03-03T01:00",
    );
    let (endpoint, bodies) = common::otlp::collector();
    let mut server = Server::spawn(
        &data,
        &[
            "--watch",
            "false",
            "--operator-token",
            TOKEN,
            "--batch-age",
            "200ms",
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_SERVICE_NAME", "imerg-ingest-test"),
        ],
    );
    let mut c = client(&server.grpc, Some(TOKEN)).await;
    let job = start_job(&mut c, req("2023-03-03T00:00", "2023-03-03T01:00")).await;
    let done = watch_to_end(&mut c, &job.id).await;
    assert_eq!(done.committed, 2);
    server.signal("-TERM");
    assert!(server.child.wait().unwrap().success());
    let mut all = Vec::new();
    while let Ok((head, body)) = bodies.recv_timeout(Duration::from_secs(5)) {
        assert!(head.starts_with("POST /v1/traces"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/x-protobuf"),
            "{head}"
        );
        all.extend(body);
    }
    let has = |s: &str| all.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(has("imerg-ingest-test"), "service name exported");
    assert!(has("granule"), "per-granule spans exported");
    assert!(has("commit"), "per-commit spans exported");
}

/// One granule through three processes (listener watching a directory, worker, committer, each
/// its own OTEL_SERVICE_NAME): its trace has spans in all three, joined by the traceparent the
/// gRPC calls carry, and the listener's JSON log lines carry the same trace id.
#[test]
fn one_granule_is_one_trace_across_listener_worker_and_committer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let (endpoint, bodies) = common::otlp::collector();
    let otel = |name: &'static str| {
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".to_string()),
            ("OTEL_SERVICE_NAME", name.to_string()),
        ]
    };
    let spawn = |args: &[&str], name: &'static str| {
        let mut e = otel(name).to_vec();
        // The granule's own log line is at debug.
        e.push(("RUST_LOG", "info,imerg_pipeline=debug".to_string()));
        let refs: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Server::spawn(&data, args, &refs)
    };
    let mut committer = spawn(&["--roles", "committer"], "imerg-committer");
    let mut worker = spawn(&["--roles", "worker"], "imerg-worker");
    let mut listener = spawn(
        &[
            "--roles",
            "listener",
            "--worker-addr",
            &worker.grpc,
            "--committer-addr",
            &committer.grpc,
            "--watch-interval",
            "200ms",
            "--log-format",
            "json",
        ],
        "imerg-listener",
    );
    synth(
        &data.join("granules"),
        "2023-05-05T00:00",
        "2023-05-05T00:30",
    );
    committer.wait_added(1);
    for s in [&mut listener, &mut worker, &mut committer] {
        s.signal("-TERM");
        assert!(s.child.wait().unwrap().success());
    }
    let mut all = Vec::new();
    while let Ok((_, body)) = bodies.recv_timeout(Duration::from_secs(3)) {
        all.push(body);
    }
    let traces = common::otlp::traces(&all);
    let full: Vec<_> = traces
        .iter()
        .filter(|(_, (services, _))| services.len() == 3)
        .collect();
    assert_eq!(
        full.len(),
        1,
        "one trace in all three processes: {traces:#?}"
    );
    let (trace_id, (services, names)) = full[0];
    assert_eq!(
        services.iter().map(String::as_str).collect::<Vec<_>>(),
        ["imerg-committer", "imerg-listener", "imerg-worker"]
    );
    for n in ["ingest", "granule", "CommitService/Append"] {
        assert!(names.iter().any(|x| x.contains(n)), "{n} not in {names:?}");
    }
    let log = std::fs::read_to_string(&listener.log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.starts_with('{') && l.contains(&format!("\"trace_id\":\"{trace_id}\""))),
        "no JSON log line with trace_id {trace_id}:\n{log}"
    );
}

/// Review L1 and issue #12 (load): eight whole-record Backfill requests at once. Each job used
/// to hold its granule ids twice (hundreds of MB), with no limit on jobs. Now at most
/// `--backfill-max-jobs` (default 4) run, the others are refused with RESOURCE_EXHAUSTED
/// (TOO_MANY_JOBS) and say so, and the process's peak RSS stays bounded; it is printed for the
/// README.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_whole_record_backfills_at_once_are_limited_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), &[], &[]);
    let mut calls = Vec::new();
    for _ in 0..8 {
        let grpc = server.grpc.clone();
        calls.push(tokio::spawn(async move {
            let mut c = client(&grpc, None).await;
            c.backfill(req("1998-01-01T00:00:00Z", "2025-10-01T00:00:00Z"))
                .await
        }));
    }
    let (mut started, mut refused) = (Vec::new(), 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(r) => started.push(r.into_inner().job.unwrap()),
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(e.message().contains("at most 4"), "{}", e.message());
                refused += 1;
            }
        }
    }
    assert_eq!((started.len(), refused), (4, 4));
    for j in &started {
        assert_eq!(j.expected, 486_480, "{j:?}");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    eprintln!(
        "peak RSS with 4 whole-record backfills running: {} MiB",
        peak_kib / 1024
    );
    assert!(peak_kib < 1024 * 1024, "peak RSS {peak_kib} KiB");
    let mut c = client(&server.grpc, None).await;
    for j in &started {
        c.cancel_job(v1::CancelJobRequest { id: j.id.clone() })
            .await
            .unwrap();
    }
}
