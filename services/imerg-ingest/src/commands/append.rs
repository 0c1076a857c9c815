//! `imerg-ingest append`: virtualizes granule files and commits them into a local repository
//! (creating it) through the same committer the service uses, in batches.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use imerg_catalog::ProductProfile;
use imerg_dataset::{
    CommitterConfig, Dataset, DatasetConfig, RepoLocation, SourceContainer, spawn_committer,
};

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
    /// After appending, expire snapshots older than this (e.g. `7d`, `12h`, `0s`) and garbage
    /// collect what only they referenced. Off unless given.
    #[arg(long, value_parser = humantime::parse_duration)]
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
    let root = match &args.source_root {
        Some(r) => std::path::absolute(r)?,
        None => infer_root(&profile, &args.granules[0])?,
    };
    let source = SourceContainer::local(&root)?;
    let mut cfg = DatasetConfig::new(profile.clone(), source.clone());
    cfg.manifest_max_bytes = args.manifest_max_bytes;
    let dataset = Arc::new(
        Dataset::open_or_create(&RepoLocation::Local(args.repo.clone()), cfg)
            .await
            .with_context(|| format!("opening {}", args.repo.display()))?,
    );
    let (handle, committer) = spawn_committer(
        Arc::clone(&dataset),
        CommitterConfig {
            max_batch: args.batch_size.max(1),
            max_age: Duration::from_millis(500),
            ..Default::default()
        },
    );
    let profile = Arc::new(profile);
    let started = std::time::Instant::now();
    let results: Vec<(String, Result<&'static str, String>)> =
        futures::stream::iter(args.granules.clone())
            .map(|path| {
                let (profile, root) = (Arc::clone(&profile), root.clone());
                async move {
                    let shown = path.display().to_string();
                    let abs =
                        std::path::absolute(&path).map_err(|e| (shown.clone(), e.to_string()))?;
                    let key = abs
                        .strip_prefix(&root)
                        .map_err(|_| {
                            (
                                shown.clone(),
                                format!("not under the source root {}", root.display()),
                            )
                        })?
                        .to_string_lossy()
                        .to_string();
                    let id = profile
                        .parse_key(&key)
                        .map_err(|e| (shown.clone(), e.to_string()))?;
                    let fetched = imerg_source::fetch_url(&abs.to_string_lossy())
                        .await
                        .map_err(|e| (shown.clone(), e.to_string()))?;
                    imerg_virtualize::virtualize_bytes_blocking(
                        fetched.bytes,
                        id,
                        fetched.object,
                        profile,
                    )
                    .await
                    .map_err(|e| (shown, e.to_string()))
                }
            })
            .buffer_unordered(4)
            .map(|r| {
                let handle = handle.clone();
                async move {
                    match r {
                        Ok(g) => {
                            let key = g.key.clone();
                            match handle.append(g).await {
                                Ok(receipt) => (key, Ok(receipt.outcome.label())),
                                Err(e) => (key, Err(e.to_string())),
                            }
                        }
                        Err((input, e)) => (input, Err(e)),
                    }
                }
            })
            .buffer_unordered(args.batch_size.max(1) * 2)
            .collect()
            .await;
    let stats = Arc::clone(handle.stats());
    drop(handle);
    committer.join.await?;
    if let Some(retention) = args.snapshot_retention {
        let cfg = imerg_dataset::MaintenanceConfig {
            retention,
            every: retention,
        };
        let report = imerg_dataset::maintenance::run(&dataset, &cfg).await?;
        eprintln!("maintenance: {report:?}");
    }
    let mut failed = 0;
    let mut counts = std::collections::BTreeMap::<&str, u64>::new();
    for (key, r) in &results {
        match r {
            Ok(label) => *counts.entry(label).or_default() += 1,
            Err(e) => {
                failed += 1;
                eprintln!("FAILED {key}: {e}");
            }
        }
    }
    eprintln!(
        "appended {} granule(s) in {:.1} s: {:?}, {} failed, {} commit(s)",
        results.len(),
        started.elapsed().as_secs_f64(),
        counts,
        failed,
        stats.commits.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
