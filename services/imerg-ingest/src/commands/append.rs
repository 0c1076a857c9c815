//! `imerg-ingest append`: virtualizes granule files and commits them into a local repository
//! (creating it) through the same ingest path the service uses (local worker, committer), in
//! batches.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use imerg_catalog::ProductProfile;
use imerg_service::append::{AppendOptions, append_files};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Repository directory (created if missing).
    #[arg(long)]
    repo: PathBuf,
    /// Root of the granule directory in the bucket layout; references point to
    /// `file://<source-root>/<key>`. Default: inferred from the first granule's path.
    #[arg(long)]
    source_root: Option<PathBuf>,
    /// Granules per commit.
    #[arg(long, default_value_t = 480)]
    batch_size: usize,
    /// Largest manifest in bytes before it rolls over along `time`.
    #[arg(long, default_value_t = imerg_dataset::DEFAULT_MANIFEST_MAX_BYTES)]
    manifest_max_bytes: u64,
    /// After appending, expire snapshots superseded longer ago than this (e.g. `7d`, `12h`; at
    /// least 1h, so that no reader loses what it opened moments ago) and garbage collect what
    /// only they referenced. Off unless given.
    #[arg(long, value_parser = parse_retention)]
    snapshot_retention: Option<Duration>,
    /// Granule files to append.
    #[arg(required = true, value_name = "GRANULE")]
    granules: Vec<PathBuf>,
}

/// The directory above the collection path of a granule in the bucket layout.
fn infer_root(profile: &ProductProfile, path: &Path) -> anyhow::Result<PathBuf> {
    let abs = std::path::absolute(path)?;
    let s = abs.to_string_lossy();
    let marker = format!("/{}/", profile.collection_path);
    match s.find(&marker) {
        Some(pos) => Ok(PathBuf::from(&s[..pos])),
        None => bail!(
            "{} is not in the bucket layout (no {marker}); pass --source-root",
            path.display()
        ),
    }
}

pub fn run(profile: ProductProfile, args: Args) -> anyhow::Result<ExitCode> {
    super::block_on(run_async(profile, args))?
}

async fn run_async(profile: ProductProfile, args: Args) -> anyhow::Result<ExitCode> {
    let source_root = match &args.source_root {
        Some(r) => std::path::absolute(r)?,
        None => infer_root(&profile, &args.granules[0])?,
    };
    let started = std::time::Instant::now();
    let report = append_files(
        profile,
        &args.granules,
        &AppendOptions {
            repo: args.repo.clone(),
            source_root,
            batch_size: args.batch_size,
            manifest_max_bytes: args.manifest_max_bytes,
        },
    )
    .await
    .with_context(|| format!("appending into {}", args.repo.display()))?;
    if let Some(retention) = args.snapshot_retention {
        let cfg = imerg_dataset::MaintenanceConfig {
            retention,
            every: retention,
        };
        let m = imerg_dataset::maintenance::run(&report.dataset, &cfg).await?;
        println!("maintenance: {m:?}");
    }
    let mut failed = 0;
    let mut counts = std::collections::BTreeMap::<&str, u64>::new();
    for (key, r) in &report.results {
        match r {
            Ok(outcome) => *counts.entry(outcome.as_str()).or_default() += 1,
            Err(e) => {
                failed += 1;
                eprintln!("FAILED {key}: {e}");
            }
        }
    }
    println!(
        "appended {} granule(s) in {:.1} s: {:?}, {} failed, {} commit(s)",
        report.results.len(),
        started.elapsed().as_secs_f64(),
        counts,
        failed,
        report.commits
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A retention of at least an hour (review L7: `0s` expired what a reader had just opened).
fn parse_retention(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(3600) {
        return Err(format!(
            "{s} is too short: at least 1h, so that expiry never removes snapshots a reader opened moments ago"
        ));
    }
    Ok(d)
}
