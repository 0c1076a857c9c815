//! `imerg-ingest simulate`: builds a store for any time range from synthetic references
//! ([`imerg_synth::refs`]: real key names, realistic offsets and lengths, no file reads), committed
//! in backfill-sized batches through the same committer the service uses. Prints one JSON line per
//! commit (references already stored, commit latency, process memory) and a summary line.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imerg_catalog::{ProductProfile, TimeRange, parse_time};
use imerg_dataset::{
    CommitterConfig, Dataset, DatasetConfig, MaintenanceConfig, RepoLocation, SourceContainer,
    spawn_committer,
};
use imerg_synth::{refs::synthetic_refs, rss};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Repository directory (created if missing).
    #[arg(long)]
    repo: PathBuf,
    /// First granule start (inclusive).
    #[arg(long, default_value = "1998-01-01")]
    start: String,
    /// End of the range (exclusive). Default: the end of the product's record.
    #[arg(long)]
    end: Option<String>,
    /// Granules per commit (one backfill batch).
    #[arg(long, default_value_t = 480)]
    batch_size: usize,
    #[arg(long, default_value_t = imerg_dataset::DEFAULT_MANIFEST_MAX_BYTES)]
    manifest_max_bytes: u64,
    /// Cap of Icechunk's manifest cache, in references.
    #[arg(long, default_value_t = imerg_dataset::DEFAULT_MANIFEST_CACHE_REFS)]
    manifest_cache_refs: u64,
    /// Expire snapshots older than this and garbage-collect, every --maintenance-every.
    #[arg(long, value_parser = humantime::parse_duration)]
    snapshot_retention: Option<Duration>,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    maintenance_every: Duration,
    /// Point the references into this local directory (bucket layout, `file://<dir>/<key>`)
    /// instead of the product's bucket, so granules appended later with `append --source-root`
    /// (real files) share the store's virtual chunk container. The simulated files need not exist.
    #[arg(long)]
    source_root: Option<PathBuf>,
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |rd| {
        rd.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

pub fn run(profile: ProductProfile, args: Args) -> anyhow::Result<ExitCode> {
    super::block_on(run_async(profile, args))?
}

async fn run_async(profile: ProductProfile, args: Args) -> anyhow::Result<ExitCode> {
    let start = parse_time(&args.start)?;
    let end = match &args.end {
        Some(e) => parse_time(e)?,
        None => profile.record(chrono::Utc::now()).end,
    };
    let range = TimeRange::new(start, end)?;
    let container = match &args.source_root {
        Some(root) => SourceContainer::local(root)?,
        None => SourceContainer::for_profile(&profile),
    };
    let mut cfg = DatasetConfig::new(profile.clone(), container.clone());
    cfg.manifest_max_bytes = args.manifest_max_bytes;
    cfg.manifest_cache_refs = args.manifest_cache_refs;
    let dataset =
        Arc::new(Dataset::open_or_create(&RepoLocation::Local(args.repo.clone()), cfg).await?);
    let batch_size = args.batch_size.max(1);
    let (handle, committer) = spawn_committer(
        Arc::clone(&dataset),
        CommitterConfig {
            max_batch: batch_size,
            max_age: Duration::from_secs(60),
            max_idle: Duration::from_millis(500),
            channel_capacity: batch_size,
            maintenance: args.snapshot_retention.map(|retention| MaintenanceConfig {
                retention,
                every: args.maintenance_every,
            }),
            ..Default::default()
        },
    );
    let mut granules = synthetic_refs(&profile, range, &container.url_prefix);
    let refs_per_granule = profile.layout.refs_per_granule();
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    let mut stored = 0u64;
    for n in 0u64.. {
        let batch: Vec<_> = granules.by_ref().take(batch_size).collect();
        if batch.is_empty() {
            break;
        }
        let batch_len = batch.len() as u64;
        let t0 = Instant::now();
        let receipts = futures::future::join_all(batch.into_iter().map(|g| handle.append(g))).await;
        let seconds = t0.elapsed().as_secs_f64();
        if let Some(Err(e)) = receipts.iter().find(|r| r.is_err()) {
            anyhow::bail!("commit {n} failed: {e}");
        }
        writeln!(
            out,
            "{}",
            json!({
                "commit": n,
                "granules_before": stored,
                "refs_before": stored * refs_per_granule,
                "granules": batch_len,
                "seconds": seconds,
                "rss_bytes": rss::current_bytes(),
                "elapsed_s": started.elapsed().as_secs_f64(),
            })
        )?;
        stored += batch_len;
    }
    let stats = Arc::clone(handle.stats());
    drop(handle);
    committer.join.await?;
    // One last pass once the writes stop, as the scheduled one would do an interval later.
    let repo_bytes_before_final_maintenance = dir_bytes(&args.repo);
    let mut final_maintenance = serde_json::Value::Null;
    if let Some(retention) = args.snapshot_retention {
        let t0 = Instant::now();
        let cfg = MaintenanceConfig {
            retention,
            every: args.maintenance_every,
        };
        let r = imerg_dataset::maintenance::run(&dataset, &cfg).await?;
        final_maintenance = json!({
            "seconds": t0.elapsed().as_secs_f64(),
            "snapshots_released": r.snapshots_released,
            "manifests_deleted": r.manifests_deleted,
            "snapshots_deleted": r.snapshots_deleted,
            "bytes_deleted": r.bytes_deleted,
            "repo_info_backups_deleted": r.repo_info_backups_deleted,
            "repo_info_backup_bytes_deleted": r.repo_info_backup_bytes_deleted,
        });
    }
    let st = dataset.status().await?;
    let repo_bytes = dir_bytes(&args.repo);
    let repo_dirs: BTreeMap<String, u64> = std::fs::read_dir(&args.repo)?
        .flatten()
        .map(|e| {
            let p = e.path();
            let bytes = if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            };
            (e.file_name().to_string_lossy().to_string(), bytes)
        })
        .collect();
    writeln!(
        out,
        "{}",
        json!({"summary": {
            "granules": stored,
            "references": stored * refs_per_granule,
            "commits": stats.commits.load(std::sync::atomic::Ordering::Relaxed),
            "wall_s": started.elapsed().as_secs_f64(),
            "peak_rss_bytes": rss::peak_bytes(),
            "repo_bytes": repo_bytes,
            "repo_dirs": repo_dirs,
            "repo_bytes_before_final_maintenance": repo_bytes_before_final_maintenance,
            "final_maintenance": final_maintenance,
            "commits_in_history": st.commits,
            "manifests": st.manifests,
            "largest_manifest_bytes": st.largest_manifest_bytes,
            "manifest_bytes": st.manifest_bytes,
            "manifest_bytes_per_reference": st.manifest_bytes as f64 / (stored * refs_per_granule).max(1) as f64,
            "repo_bytes_per_reference": repo_bytes as f64 / (stored * refs_per_granule).max(1) as f64,
            "granules_present": st.granules_present,
        }})
    )?;
    Ok(ExitCode::SUCCESS)
}
