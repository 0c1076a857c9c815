//! End-to-end backfill throughput on local files, in one process like the embedded default:
//! catalog -> presence check -> fetch (local object store) -> HDF5 parse -> committer batches ->
//! Icechunk commits, for one day (48 granules) and ten days (480), each into a fresh repository.
//! Run: `cargo bench -p imerg-benches --bench backfill`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use imerg_benches::median;
use imerg_catalog::{ProductProfile, TimeRange, parse_time};
use imerg_dataset::{
    CommitterConfig, Dataset, DatasetConfig, RepoLocation, SourceContainer, spawn_committer,
};
use imerg_ingest_api::{JobManager, JobState};
use imerg_pipeline::{Ingestor, LocalWorker};
use imerg_source::{Source, SourceConfig};
use imerg_synth::{SynthOptions, write_granule};

const REPS: usize = 3;

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("bucket");
    let profile = ProductProfile::final_v07b();
    let start = parse_time("2024-03-01").unwrap();
    let all: Vec<_> = profile
        .expected(TimeRange::new(start, start + chrono::Duration::days(10)).unwrap())
        .collect();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for part in all.chunks(all.len().div_ceil(2)) {
            let (src, profile) = (&src, &profile);
            s.spawn(move || {
                for g in part {
                    write_granule(
                        &src.join(&g.key),
                        profile,
                        g.start,
                        &SynthOptions::default(),
                    )
                    .unwrap();
                }
            });
        }
    });
    println!(
        "wrote {} granules in {:.1} s",
        all.len(),
        t0.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for (label, days) in [("one day", 1i64), ("ten days", 10)] {
        let mut rates = Vec::new();
        for rep in 0..REPS {
            let repo = tmp.path().join(format!("repo-{days}-{rep}"));
            let secs = rt.block_on(async {
                let source = Source::new(&SourceConfig::Local { root: src.clone() }, None).unwrap();
                let cfg =
                    DatasetConfig::new(profile.clone(), SourceContainer::local(&src).unwrap());
                let ds = Arc::new(
                    Dataset::open_or_create(&RepoLocation::Local(repo.clone()), cfg)
                        .await
                        .unwrap(),
                );
                let (handle, committer) = spawn_committer(
                    Arc::clone(&ds),
                    CommitterConfig {
                        max_batch: 240,
                        max_age: Duration::from_secs(2),
                        ..Default::default()
                    },
                );
                let p = Arc::new(profile.clone());
                let ingestor = Ingestor::new(
                    Arc::new(LocalWorker::new(source, Arc::clone(&p), 4)),
                    Arc::new(handle),
                );
                let jobs = Arc::new(JobManager::new(
                    p,
                    Arc::clone(&ds),
                    ingestor,
                    512,
                    1_000_000,
                ));
                let range = TimeRange::new(start, start + chrono::Duration::days(days)).unwrap();
                let t0 = Instant::now();
                let job = jobs.backfill(range, None).await.unwrap();
                let mut rx = jobs.watch(&job.id).unwrap();
                let done = rx
                    .wait_for(|s| s.state != JobState::Running)
                    .await
                    .unwrap()
                    .clone();
                let secs = t0.elapsed().as_secs_f64();
                assert_eq!(done.committed, (days * 48) as u64, "{done:?}");
                drop(jobs);
                committer.join.abort();
                secs
            });
            rates.push((days * 48) as f64 / secs);
            println!(
                "  {label} rep {rep}: {secs:.2} s, {:.0} granules/s",
                (days * 48) as f64 / secs
            );
            std::fs::remove_dir_all(&repo).unwrap();
        }
        let r = median(&rates);
        println!("{label}: median {r:.0} granules/s ({} granules)", days * 48);
        rows.push(
            serde_json::json!({"range": label, "granules": days * 48, "median_granules_per_s": r}),
        );
    }
    println!(
        "peak RSS of the whole bench process: {} MiB",
        imerg_synth::rss::peak_bytes() / 1048576
    );
    println!(
        "{}",
        serde_json::json!({"bench": "backfill", "reps": REPS, "results": rows})
    );
}
