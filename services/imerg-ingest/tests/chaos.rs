//! Real SIGKILLs at random moments (issue #12): the service in a child process, with an SQS
//! backlog on moto and a backfill running, is killed at seeded random times and restarted, five
//! times, then left to finish. Exactly once is checked where doubling would show: every granule
//! is written by exactly one commit of the branch's history (the commits' own granule lists, as
//! Icechunk's Python reader sees them), no batch id is committed twice, the queue is drained with
//! nothing dead-lettered, and the backfill job (resumed after each kill) ends SUCCEEDED. The seed
//! is `IMERG_CHAOS_SEED` if set, else drawn; it is printed, and every assertion names it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

mod common;

use common::aws::{ENVS, Stack, enc};
use common::{Server, aws_env, keys, python, synth};
use imerg_proto::{to_timestamp, v1};

/// xorshift64*: a small seeded generator (the test needs reproducible draws, not quality).
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

async fn client(
    grpc: &str,
) -> v1::ingest_service_client::IngestServiceClient<tonic::transport::Channel> {
    v1::ingest_service_client::IngestServiceClient::connect(grpc.to_string())
        .await
        .unwrap()
}

#[test]
fn random_sigkills_during_an_sqs_backlog_and_a_backfill_lose_and_double_nothing() {
    aws_env();
    let seed: u64 = std::env::var("IMERG_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("chaos seed: {seed} (rerun with IMERG_CHAOS_SEED={seed})");
    let mut draws = Draws(seed);
    let py = python();
    // Kills cost receives: a redrive count no kill sequence here reaches.
    let stack = Stack::start(&py, 50);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    synth(&src, "2024-08-01T00:00", "2024-08-02T00:00");
    let k = keys("2024-08-01T00:00", "2024-08-02T00:00");
    let read = |key: &str| std::fs::read(src.join(key)).unwrap();
    // The second half is only in the bucket (its notifications purged): the backfill finds it.
    // The first half is announced: an SQS backlog, which the backfill's range overlaps.
    for key in &k[24..] {
        stack.put(key, &read(key));
    }
    let (code, body) = stack.sqs(&format!("Action=PurgeQueue&QueueUrl={}", enc(&stack.queue)));
    assert_eq!(code, 200, "{body}");
    std::thread::sleep(Duration::from_secs(1));
    for key in &k[..24] {
        stack.put(key, &read(key));
    }

    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let args = stack.serve_args(true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for round in 0..5 {
        let mut server = Server::spawn(&data, &args, ENVS);
        if round == 0 {
            block_on(async {
                let mut c = client(&server.grpc).await;
                c.backfill(v1::BackfillRequest {
                    product: String::new(),
                    start_time: Some(to_timestamp(
                        imerg_catalog::parse_time("2024-08-01T00:00").unwrap(),
                    )),
                    end_time: Some(to_timestamp(
                        imerg_catalog::parse_time("2024-08-02T00:00").unwrap(),
                    )),
                    request_id: "chaos".into(),
                })
                .await
                .unwrap();
            });
        }
        let after = Duration::from_millis(200 + draws.next() % 2500);
        std::thread::sleep(after);
        server.signal("-KILL");
        server.child.wait().unwrap();
        eprintln!("seed {seed}: round {round}: SIGKILL after {after:?}");
    }

    // Left to finish.
    let server = Server::spawn(&data, &args, ENVS);
    let st = stack.wait_until(Duration::from_secs(300), 0, |s| {
        s["granules_present"] == k.len()
    });
    assert!(
        st["references"].as_u64().unwrap() >= 88 * k.len() as u64,
        "seed {seed}: {st}"
    );
    let t0 = Instant::now();
    let job = loop {
        let jobs = block_on(async {
            let mut c = client(&server.grpc).await;
            c.list_jobs(v1::ListJobsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .jobs
        });
        assert_eq!(
            jobs.len(),
            1,
            "seed {seed}: one job, resumed under its id: {jobs:?}"
        );
        if jobs[0].state != v1::JobState::Running as i32 {
            break jobs[0].clone();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "seed {seed}: the job is still running: {jobs:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        job.state,
        v1::JobState::Succeeded as i32,
        "seed {seed}: {job:?}"
    );
    let writes = stack.writes_per_granule();
    for key in &k {
        assert_eq!(
            writes.get(key),
            Some(&1),
            "seed {seed}: {key} written once: {writes:?}"
        );
    }
    assert_eq!(stack.dead(), 0, "seed {seed}");
}
