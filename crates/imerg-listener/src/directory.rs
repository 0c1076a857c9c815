//! The directory watcher (the embedded default's listener): scans a local granule directory in
//! the bucket layout for granule files the store does not hold and ingests them. What is present
//! is read from the store in bulk each scan; a file rejected as bad input is retried only once it
//! changes, one that failed for a passing reason (repository or committer down) after a backoff
//! that doubles from 1 s to 5 min. What it remembers of files that are gone is forgotten.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

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

/// Remembers what is in flight, which files failed as bad input (by modification time) and
/// when to try again those that failed for a passing reason (with how many tries so far).
#[derive(Debug, Default)]
struct Memo {
    in_flight: BTreeSet<String>,
    failed: HashMap<String, SystemTime>,
    retry: HashMap<String, (Instant, u32)>,
}

impl Memo {
    /// Forgets files no longer in the directory (review L12: the memo grew with every file
    /// ever rejected).
    fn forget_missing(&mut self, seen: &BTreeSet<String>) {
        self.failed.retain(|k, _| seen.contains(k));
        self.retry.retain(|k, _| seen.contains(k));
    }

    /// Whether `key` waits for its next try at `now`.
    fn backing_off(&self, key: &str, now: Instant) -> bool {
        self.retry.get(key).is_some_and(|(at, _)| *at > now)
    }

    /// Records a passing failure of `key` at `now`: the next try waits twice as long as the
    /// last (1 s, 2 s, ... 5 min), so an outage is not hammered by every scan (review M7).
    fn failed_for_now(&mut self, key: &str, now: Instant) {
        let tries = self.retry.get(key).map_or(0, |(_, n)| *n);
        let wait = Duration::from_secs(1u64 << tries.min(9)).min(Duration::from_secs(300));
        self.retry
            .insert(key.to_string(), (now + wait, tries.saturating_add(1)));
    }
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
        let mut seen = BTreeSet::new();
        for p in files {
            let Ok(rel) = p.strip_prefix(&cfg.root) else {
                continue;
            };
            let key = rel.to_string_lossy().to_string();
            seen.insert(key.clone());
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
        lock(&memo).forget_missing(&seen);
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
                if t.is_some() && memo.failed.get(&id.key) == t.as_ref()
                    || memo.backing_off(&id.key, Instant::now())
                {
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
                match (&r, t) {
                    (Err(e), _) if e.is_retryable() => {
                        memo.failed_for_now(&id.key, Instant::now());
                    }
                    (Err(e), Some(t)) => {
                        tracing::warn!(key = %id.key, reason = %e.reason, "granule not ingested; retried when the file changes");
                        memo.failed.insert(id.key.clone(), t);
                    }
                    (Err(_), None) => {}
                    (Ok(_), _) => {
                        memo.retry.remove(&id.key);
                    }
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

#[cfg(test)]
mod memo_tests {
    use super::*;

    #[test]
    fn passing_failures_back_off_and_gone_files_are_forgotten() {
        let mut m = Memo::default();
        let t0 = Instant::now();
        m.failed_for_now("a", t0);
        assert!(m.backing_off("a", t0));
        assert!(!m.backing_off("a", t0 + Duration::from_secs(1)));
        m.failed_for_now("a", t0);
        assert!(m.backing_off("a", t0 + Duration::from_secs(1)));
        assert!(!m.backing_off("a", t0 + Duration::from_secs(2)));
        for _ in 0..20 {
            m.failed_for_now("a", t0);
        }
        assert!(
            !m.backing_off("a", t0 + Duration::from_secs(300)),
            "capped at 5 min"
        );
        assert!(!m.backing_off("b", t0));
        m.failed.insert("b".into(), SystemTime::now());
        m.forget_missing(&BTreeSet::from(["c".to_string()]));
        assert!(m.failed.is_empty() && m.retry.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use imerg_catalog::{ProductProfile, SourceLocation, parse_time};
    use imerg_dataset::{
        CommitterConfig, Dataset, DatasetConfig, RepoLocation, SourceContainer, spawn_committer,
    };
    use imerg_pipeline::LocalWorker;

    use super::*;

    fn write(root: &Path, profile: &ProductProfile, t: &str) -> String {
        let start = parse_time(t).unwrap();
        let key = profile.granule_at(start).unwrap().key;
        imerg_synth::write_granule(
            &root.join(&key),
            profile,
            start,
            &imerg_synth::SynthOptions::default(),
        )
        .unwrap();
        key
    }

    /// The local worker, counting the calls per key.
    #[derive(Debug)]
    struct Counting {
        inner: LocalWorker,
        calls: Mutex<HashMap<String, u32>>,
    }

    #[async_trait::async_trait]
    impl imerg_pipeline::Worker for Counting {
        async fn virtualize(
            &self,
            id: &imerg_catalog::GranuleId,
        ) -> Result<imerg_pipeline::GranuleRefs, imerg_pipeline::IngestError> {
            *self
                .calls
                .lock()
                .unwrap()
                .entry(id.key.clone())
                .or_default() += 1;
            self.inner.virtualize(id).await
        }
    }

    async fn present(ds: &Dataset) -> usize {
        ds.present_in(0, u64::MAX / 2).await.unwrap().len()
    }

    /// New files are ingested once; a non-granule file and a bad granule are counted once and not
    /// retried until they change; a bad granule rewritten as a good one is then ingested.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ingests_new_files_once_and_retries_bad_ones_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("granules");
        let profile = ProductProfile::final_v07b();
        write(&root, &profile, "2023-01-01T00:00");
        let location = SourceLocation::Local { root: root.clone() };
        let ds = Arc::new(
            Dataset::open_or_create(
                &RepoLocation::Local(dir.path().join("repo")),
                DatasetConfig::new(
                    profile.clone(),
                    SourceContainer::from_location(&location).unwrap(),
                ),
            )
            .await
            .unwrap(),
        );
        let (handle, committer) = spawn_committer(
            Arc::clone(&ds),
            CommitterConfig {
                max_age: Duration::from_millis(50),
                max_idle: Duration::from_millis(20),
                ..CommitterConfig::default()
            },
        );
        let source = imerg_source::Source::new(&location, None).unwrap();
        let p = Arc::new(profile.clone());
        let worker = Arc::new(Counting {
            inner: LocalWorker::new(source, Arc::clone(&p), 2),
            calls: Mutex::default(),
        });
        let ingestor = Ingestor::new(
            Arc::clone(&worker) as Arc<dyn imerg_pipeline::Worker>,
            Arc::new(handle),
        );
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch_directory(
            DirectoryConfig {
                root: root.clone(),
                interval: Duration::from_millis(50),
                max_in_flight: 4,
            },
            Arc::clone(&p),
            Arc::clone(&ds),
            ingestor,
            stop.clone(),
        ));
        let wait = |n: usize| {
            let ds = Arc::clone(&ds);
            async move {
                for _ in 0..400 {
                    if present(&ds).await >= n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                panic!("{n} granules never arrived");
            }
        };
        wait(1).await;
        // A new granule, a file that is no granule, and a granule that is not HDF5.
        write(&root, &profile, "2023-01-01T00:30");
        let collection = root.join(&profile.collection_path);
        std::fs::write(collection.join("2023/001/README.txt"), "not a granule").unwrap();
        let bad_key = profile
            .granule_at(parse_time("2023-01-01T01:00").unwrap())
            .unwrap()
            .key;
        std::fs::write(root.join(&bad_key), "<html>503</html>").unwrap();
        wait(2).await;
        // Many scans later the bad file was tried once: remembered, not retried.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(present(&ds).await, 2);
        assert_eq!(worker.calls.lock().unwrap().get(&bad_key), Some(&1));
        // Rewritten as a real granule (a new modification time): ingested.
        tokio::time::sleep(Duration::from_millis(20)).await;
        std::fs::remove_file(root.join(&bad_key)).unwrap();
        write(&root, &profile, "2023-01-01T01:00");
        wait(3).await;
        assert_eq!(worker.calls.lock().unwrap().get(&bad_key), Some(&2));
        // Each good granule was fetched once.
        assert!(
            worker
                .calls
                .lock()
                .unwrap()
                .iter()
                .all(|(k, n)| *n == 1 || *k == bad_key)
        );
        stop.cancel();
        task.await.unwrap();
        assert!(committer.shutdown(Duration::from_secs(10)).await);
        assert_eq!(present(&ds).await, 3);
    }
}
