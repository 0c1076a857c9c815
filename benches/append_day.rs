//! Appending one day (48 granules, 4,224 references) in one commit onto an empty store and onto a
//! store already holding a year, through `Dataset::commit_batch` (the committer's write path).
//! Reports the median commit time and the peak RSS of a fresh process that opens the store and
//! commits the day (each repetition on a fresh copy of the store).
//! Run: `cargo bench -p imerg-benches --bench append_day`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Instant;

use imerg_benches::median;
use imerg_catalog::{ProductProfile, TimeRange, parse_time};
use imerg_dataset::{Dataset, DatasetConfig, RepoLocation, SourceContainer};
use imerg_refs::{GranuleRefs, SourceObject};
use imerg_synth::{SynthOptions, refs::shift, rss, write_range};

const REPS: usize = 9;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// Child mode: open the store at `dir`, append the day from `day.json`, print seconds and peak RSS.
/// Peak RSS is measured in a fresh process so nothing of the prefill or of earlier reps counts.
fn child(dir: &str, day_json: &str, max_bytes: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let day: Vec<GranuleRefs> = serde_json::from_slice(&std::fs::read(day_json).unwrap()).unwrap();
    let profile = ProductProfile::final_v07b();
    let container =
        SourceContainer::local(Path::new(&day_json.replace("day.json", "bucket"))).unwrap();
    let mut cfg = DatasetConfig::new(profile, container);
    cfg.manifest_max_bytes = max_bytes;
    let (t, tp) = rt.block_on(async {
        let ds = Dataset::open_or_create(&RepoLocation::Local(dir.into()), cfg)
            .await
            .unwrap();
        let t0 = Instant::now();
        let prepared = ds.prepare_batch(&day, "bench").await.unwrap();
        let tp = t0.elapsed().as_secs_f64();
        let out = ds.commit_prepared(prepared).await.unwrap();
        assert!(out.committed);
        (t0.elapsed().as_secs_f64(), tp)
    });
    println!("{t} {} {tp}", rss::peak_bytes());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        return child(&args[i + 1], &args[i + 2], args[i + 3].parse().unwrap());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("bucket");
    let profile = ProductProfile::final_v07b();
    let day_start = parse_time("2021-01-01").unwrap();
    let range = TimeRange::new(day_start, day_start + chrono::Duration::days(1)).unwrap();
    let paths = write_range(&src, &profile, range, &SynthOptions::default()).unwrap();
    let container = SourceContainer::local(&src).unwrap();
    let day: Vec<GranuleRefs> = paths
        .iter()
        .map(|p| {
            let key = p.strip_prefix(&src).unwrap().to_string_lossy().to_string();
            let id = profile.parse_key(&key).unwrap();
            let meta = std::fs::metadata(p).unwrap();
            let obj = SourceObject {
                url: container.url_of(&key),
                etag: None,
                last_modified: Some(meta.modified().unwrap().into()),
                size: meta.len(),
            };
            imerg_virtualize::virtualize_path(p, &id, &obj, &profile).unwrap()
        })
        .collect();
    let refs: usize = day.iter().map(GranuleRefs::ref_count).sum();
    let day_json = tmp.path().join("day.json");
    std::fs::write(&day_json, serde_json::to_vec(&day).unwrap()).unwrap();
    let max_bytes: u64 = std::env::var("APPEND_DAY_MANIFEST_MAX_BYTES")
        .map_or(imerg_dataset::DEFAULT_MANIFEST_MAX_BYTES, |v| {
            v.parse().unwrap()
        });
    println!("one day: {} granules, {refs} references", day.len());

    let mut rows = Vec::new();
    let stores: Vec<(String, i64)> = match std::env::var("APPEND_DAY_PREFILL") {
        Ok(v) => vec![(format!("{v}-day store"), v.parse().unwrap())],
        Err(_) => vec![("empty store".into(), 0), ("one-year store".into(), 365)],
    };
    for (label, prefill_days) in stores {
        let base = tmp.path().join(format!("base-{prefill_days}"));
        let mut cfg = DatasetConfig::new(profile.clone(), container.clone());
        cfg.manifest_max_bytes = max_bytes;
        let started = Instant::now();
        let st = rt.block_on(async {
            let ds = Dataset::open_or_create(&RepoLocation::Local(base.clone()), cfg.clone())
                .await
                .unwrap();
            let granules_per_day = 24 * 60 / i64::from(profile.cadence_minutes);
            for d in 0..prefill_days {
                let shifted: Vec<_> = day
                    .iter()
                    .map(|g| shift(g, &profile, (d - prefill_days) * granules_per_day).unwrap())
                    .collect();
                ds.commit_batch(&shifted, &format!("prefill-{d}"))
                    .await
                    .unwrap();
            }
            ds.status().await.unwrap()
        });
        println!(
            "{label}: prefilled {prefill_days} days in {:.1} s: {} manifests, largest {} bytes (limit {max_bytes}), {:.2} bytes per chunk ref",
            started.elapsed().as_secs_f64(),
            st.manifests,
            st.largest_manifest_bytes,
            st.manifest_bytes as f64 / st.references.max(1) as f64
        );
        let mut times = Vec::new();
        let mut peaks = Vec::new();
        for rep in 0..REPS {
            let work = tmp.path().join(format!("rep-{prefill_days}-{rep}"));
            copy_dir(&base, &work);
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .arg("--child")
                .arg(&work)
                .arg(&day_json)
                .arg(max_bytes.to_string())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let line = String::from_utf8(out.stdout).unwrap();
            let v: Vec<f64> = line
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            let (t, peak) = (v[0], v[1]);
            if std::env::var_os("APPEND_DAY_VERBOSE").is_some() {
                eprintln!(
                    "  rep {rep}: prepare {:.1} ms, total {:.1} ms",
                    v[2] * 1e3,
                    t * 1e3
                );
            }
            times.push(t);
            peaks.push(peak);
            std::fs::remove_dir_all(&work).unwrap();
        }
        let (mt, mp) = (median(&times), median(&peaks));
        println!(
            "{label}: append one day: median {:.1} ms (min {:.1}, max {:.1}), peak RSS median {:.0} MiB",
            mt * 1e3,
            times.iter().copied().fold(f64::INFINITY, f64::min) * 1e3,
            times.iter().copied().fold(0.0, f64::max) * 1e3,
            mp / 1048576.0
        );
        rows.push(serde_json::json!({"store": label, "prefill_days": prefill_days, "median_s": mt, "peak_rss_bytes": mp}));
    }
    println!(
        "{}",
        serde_json::json!({"bench": "append_day", "reps": REPS, "results": rows})
    );
}
