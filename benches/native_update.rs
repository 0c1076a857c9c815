//! What keeping the native store current costs per appended granule, against re-processing the
//! trailing time block on every update (dynamical.org's approach), measured in one run.
//!
//! Setup: one day of real synthetic granules (48 files); the virtual store holds the first month
//! of a 60-day native block (1,440 half-hourly steps) whose steps reference those files in turn.
//! The native store is filled to `k` steps of the block (unmeasured catch-up), then one follower
//! update of `B` new granules is measured (B = 2, 12, 48: lags of 1 h, 6 h, 1 day), at
//! k = 240, 720 and 1200 (the middles of the month's thirds: the cost is linear in k, so their mean
//! is the month's mean). The peer re-processes the trailing block `[block start, k)` from the
//! virtual store into a fresh native store (a `rechunk` of that range), measured at the same k;
//! on an hourly schedule it does that once per 2 granules. CPU seconds are the process's
//! user + system time (/proc/self/stat), bytes are shard bytes written.
//!
//! Run: `cargo bench -p imerg-benches --bench native_update` (about 15 min, ~25 GB of scratch
//! under $TMPDIR). Appends JSON lines to benches/results-native-update.jsonl.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

use imerg_catalog::{ProductProfile, TimeRange};
use imerg_dataset::{Dataset, DatasetConfig, RepoLocation, SourceContainer};
use imerg_native::{Follower, FollowerConfig, NativeLayout, NativeRepo, RechunkOptions};
use imerg_refs::{GranuleRefs, SourceObject};
use imerg_synth::{SynthOptions, refs::shift, write_range};
use serde_json::json;

const MONTH: u64 = 1_440;
const FILLS: [u64; 3] = [240, 720, 1_200];
const BATCHES: [u64; 3] = [2, 12, 48];

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // After the command name: state is field 0, utime 11, stime 12 (clock ticks of 1/100 s).
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

struct Cost {
    cpu: f64,
    wall: f64,
    bytes: u64,
}

async fn measure<F: std::future::Future<Output = u64>>(f: F) -> Cost {
    let (c0, t0) = (cpu_seconds(), Instant::now());
    let bytes = f.await;
    Cost {
        cpu: cpu_seconds() - c0,
        wall: t0.elapsed().as_secs_f64(),
        bytes,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let profile = ProductProfile::final_v07b();
    let layout = NativeLayout::default();
    let dir = tempfile::tempdir().unwrap();
    let (src, vrepo) = (dir.path().join("src"), dir.path().join("virtual"));
    let b0 = 134 * layout.block;
    let day = TimeRange::new(profile.start_of(b0), profile.start_of(b0 + 48)).unwrap();
    let files = write_range(&src, &profile, day, &SynthOptions::default()).unwrap();
    let container = SourceContainer::local(&src).unwrap();
    let day_refs: Vec<GranuleRefs> = files
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let id = profile.granule_at_index(b0 + i as u64).unwrap();
            let meta = std::fs::metadata(path).unwrap();
            let object = SourceObject {
                url: container.url_of(&id.key),
                etag: None,
                last_modified: Some(meta.modified().unwrap().into()),
                size: meta.len(),
            };
            imerg_virtualize::virtualize_path(path, &id, &object, &profile).unwrap()
        })
        .collect();
    let cfg = DatasetConfig::new(profile.clone(), container);
    let virt = Arc::new(
        Dataset::open_or_create(&RepoLocation::Local(vrepo), cfg)
            .await
            .unwrap(),
    );
    // The month: step i references the file of step i mod 48.
    let month: Vec<GranuleRefs> = (0..MONTH)
        .map(|i| {
            let g = &day_refs[(i % 48) as usize];
            let mut s = shift(g, &profile, (i - i % 48) as i64).unwrap();
            s.url = g.url.clone();
            s
        })
        .collect();

    let native_dir = dir.path().join("native");
    let native = NativeRepo::open_or_create(&RepoLocation::Local(native_dir))
        .await
        .unwrap();
    let follower = Follower::new(Arc::clone(&virt), native.clone(), FollowerConfig::default());
    let mut landed = 0u64;
    let mut land = async |to: u64| {
        for c in month[landed as usize..to as usize].chunks(480) {
            virt.commit_batch(c, "bench").await.unwrap();
        }
        landed = to;
    };

    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/results-native-update.jsonl"
        ))
        .unwrap();
    let mut rows = Vec::new();
    for k in FILLS {
        // Catch the native store up to k steps (not measured).
        land(k).await;
        follower.update_now().await.unwrap();
        let mut at = k;
        for b in BATCHES {
            land(at + b).await;
            let c = measure(async { follower.update_now().await.unwrap().unwrap().bytes_written })
                .await;
            at += b;
            let row = json!({
                "bench": "native_update", "approach": "incremental", "fill_steps": k,
                "batch_granules": b, "cpu_seconds": c.cpu, "wall_seconds": c.wall,
                "bytes_written": c.bytes,
                "cpu_seconds_per_granule": c.cpu / b as f64,
                "bytes_per_granule": c.bytes as f64 / b as f64,
            });
            writeln!(out, "{row}").unwrap();
            println!("{row}");
            rows.push(row);
        }
        // The peer: re-process the trailing block [b0, b0 + k) into a fresh store.
        if k <= 720 {
            let fresh_dir = dir.path().join(format!("reprocess-{k}"));
            let fresh = NativeRepo::open_or_create(&RepoLocation::Local(fresh_dir.clone()))
                .await
                .unwrap();
            let opts = RechunkOptions {
                start: Some(b0),
                end: Some(b0 + k),
                layout,
                ..Default::default()
            };
            let mut progress = |_: u64, _: u64, _: &imerg_native::WriteStats| {};
            let c = measure(async {
                imerg_native::rechunk::rechunk(&virt, &fresh, &opts, &mut progress)
                    .await
                    .unwrap()
                    .stats
                    .bytes_written
            })
            .await;
            let row = json!({
                "bench": "native_update", "approach": "reprocess_trailing_block", "fill_steps": k,
                "cpu_seconds": c.cpu, "wall_seconds": c.wall, "bytes_written": c.bytes,
                "granules_per_second": k as f64 / c.wall,
                "granules_per_cpu_second": k as f64 / c.cpu,
                "peak_rss_bytes": imerg_synth::rss::peak_bytes(),
                // Hourly updates: one re-process per 2 granules.
                "cpu_seconds_per_granule_hourly": c.cpu / 2.0,
                "bytes_per_granule_hourly": c.bytes as f64 / 2.0,
            });
            writeln!(out, "{row}").unwrap();
            println!("{row}");
            rows.push(row);
            drop(fresh);
            std::fs::remove_dir_all(fresh_dir).unwrap();
        }
    }
    println!("\n| approach | k (fill) | B | CPU s / granule | MB written / granule |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        let (cpu, bytes) = if r["approach"] == "incremental" {
            (
                r["cpu_seconds_per_granule"].as_f64(),
                r["bytes_per_granule"].as_f64(),
            )
        } else {
            (
                r["cpu_seconds_per_granule_hourly"].as_f64(),
                r["bytes_per_granule_hourly"].as_f64(),
            )
        };
        println!(
            "| {} | {} | {} | {:.3} | {:.1} |",
            r["approach"].as_str().unwrap(),
            r["fill_steps"],
            r["batch_granules"]
                .as_u64()
                .map_or("2 (hourly)".into(), |b| b.to_string()),
            cpu.unwrap(),
            bytes.unwrap() / 1e6
        );
    }
}
