//! The directory watcher (the embedded default's listener): scans a local granule directory in
//! the bucket layout for granule files the store does not hold and ingests them. What is present
//! is read from the store in bulk each scan; a file rejected as bad input is retried only once it
//! changes, one that failed for a passing reason (repository or committer down) on the next scan.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use imerg_catalog::ProductProfile;
use imerg_dataset::Dataset;
use imerg_metrics as m;
use imerg_pipeline::{Ingestor, Origin};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the watcher watches and how hard it pushes.
#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    /// The source root (bucket layout below it).
    pub root: PathBuf,
    /// Time between scans.
    pub interval: Duration,
    /// Granules handed to the pipeline at once.
    pub max_in_flight: usize,
}

/// Files of the product's collection under `root` (written atomically: `.partial` files are
/// still being written).
fn granule_files(collection: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(collection)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(walkdir::DirEntry::into_path)
        .filter(|p| p.extension().is_none_or(|x| x != "partial"))
        .collect()
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Remembers what is in flight and which files failed as bad input (by modification time).
#[derive(Debug, Default)]
struct Memo {
    in_flight: BTreeSet<String>,
    failed: HashMap<String, SystemTime>,
}

fn lock(memo: &Mutex<Memo>) -> std::sync::MutexGuard<'_, Memo> {
    memo.lock().unwrap_or_else(|p| p.into_inner())
}

/// Scans until `shutdown` is cancelled, then waits for the granules already handed over.
pub async fn watch_directory(
    cfg: DirectoryConfig,
    profile: Arc<ProductProfile>,
    dataset: Arc<Dataset>,
    ingestor: Ingestor,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_in_flight.max(1)));
    let memo: Arc<Mutex<Memo>> = Arc::default();
    let tracker = TaskTracker::new();
    let collection = cfg.root.join(&profile.collection_path);
    'scan: while !shutdown.is_cancelled() {
        let files = {
            let c = collection.clone();
            tokio::task::spawn_blocking(move || granule_files(&c))
                .await
                .unwrap_or_default()
        };
        let mut candidates = Vec::new();
        for p in files {
            let Ok(rel) = p.strip_prefix(&cfg.root) else {
                continue;
            };
            let key = rel.to_string_lossy().to_string();
            let t = mtime(&p);
            match profile.parse_key(&key) {
                Ok(id) => candidates.push((id, t)),
                Err(e) => {
                    let mut memo = lock(&memo);
                    if let Some(t) = t
                        && memo.failed.get(&key) != Some(&t)
                    {
                        metrics::counter!(m::GRANULES_REJECTED, "reason" => "not_a_granule")
                            .increment(1);
                        tracing::warn!(%key, error = %e, "ignoring a file that is not a granule of the product");
                        memo.failed.insert(key, t);
                    }
                }
            }
        }
        let (Some(lo), Some(hi)) = (
            candidates.iter().map(|(g, _)| g.time_index).min(),
            candidates.iter().map(|(g, _)| g.time_index).max(),
        ) else {
            tokio::select! {
                _ = tokio::time::sleep(cfg.interval) => continue,
                _ = shutdown.cancelled() => break,
            }
        };
        let present = match dataset.present_in(lo, hi.saturating_add(1)).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "reading what the store holds failed; scanning again later");
                tokio::select! {
                    _ = tokio::time::sleep(cfg.interval) => continue,
                    _ = shutdown.cancelled() => break,
                }
            }
        };
        for (id, t) in candidates {
            if present.contains(&id.time_index) {
                continue;
            }
            {
                let mut memo = lock(&memo);
                if t.is_some() && memo.failed.get(&id.key) == t.as_ref() {
                    continue;
                }
                if !memo.in_flight.insert(id.key.clone()) {
                    continue;
                }
            }
            let slot = tokio::select! {
                s = Arc::clone(&slots).acquire_owned() => s,
                _ = shutdown.cancelled() => {
                    lock(&memo).in_flight.remove(&id.key);
                    break 'scan;
                }
            };
            let Ok(slot) = slot else { break 'scan };
            let (ingestor, memo) = (ingestor.clone(), Arc::clone(&memo));
            tracker.spawn(async move {
                let _slot = slot;
                let r = ingestor.ingest(&id, Origin::Watcher).await;
                let mut memo = lock(&memo);
                if let (Err(e), Some(t)) = (&r, t)
                    && !e.is_retryable()
                {
                    tracing::warn!(key = %id.key, reason = %e.reason, "granule not ingested; retried when the file changes");
                    memo.failed.insert(id.key.clone(), t);
                }
                memo.in_flight.remove(&id.key);
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.interval) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    // Let the granules already handed to the pipeline finish.
    tracker.close();
    tracker.wait().await;
    tracing::info!("directory watcher stopped");
}
