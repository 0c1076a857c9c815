//! One-shot ingestion of local granule files (the `append` command): the same ingest path as the
//! running service (a local worker over the source root, the single-writer committer), driven by
//! a list of files instead of a queue.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use imerg_catalog::{ProductProfile, SourceLocation};
use imerg_dataset::{
    CommitterConfig, Dataset, DatasetConfig, DatasetError, RepoLocation, SourceContainer,
    spawn_committer,
};
use imerg_pipeline::{Ingestor, LocalWorker, Origin, Outcome};
use imerg_source::Source;

use crate::ServiceError;

/// How to append.
#[derive(Debug, Clone)]
pub struct AppendOptions {
    pub repo: PathBuf,
    /// The granule directory's root (bucket layout below it): references point into it.
    pub source_root: PathBuf,
    pub batch_size: usize,
    pub manifest_max_bytes: u64,
}

/// What became of each file, in completion order, and how many commits it took.
#[derive(Debug)]
pub struct AppendReport {
    /// `(key or path, outcome or error)`.
    pub results: Vec<(String, Result<Outcome, String>)>,
    pub commits: u64,
    pub dataset: Arc<Dataset>,
}

fn repo_err(repo: &Path) -> impl Fn(DatasetError) -> ServiceError + '_ {
    move |source| ServiceError::repository(&RepoLocation::Local(repo.to_path_buf()), source)
}

/// Appends `files` (paths under `opts.source_root`) into the repository, creating it.
pub async fn append_files(
    profile: ProductProfile,
    files: &[PathBuf],
    opts: &AppendOptions,
) -> Result<AppendReport, ServiceError> {
    let root = std::path::absolute(&opts.source_root)?;
    let location = SourceLocation::Local { root: root.clone() };
    let container = SourceContainer::from_location(&location).map_err(repo_err(&opts.repo))?;
    let mut cfg = DatasetConfig::new(profile.clone(), container);
    cfg.manifest_max_bytes = opts.manifest_max_bytes;
    let repo_location = RepoLocation::Local(opts.repo.clone());
    let _lock = repo_location.lock_writer().map_err(repo_err(&opts.repo))?;
    let dataset = Arc::new(
        Dataset::open_or_create(&repo_location, cfg)
            .await
            .map_err(repo_err(&opts.repo))?,
    );
    let batch = opts.batch_size.max(1);
    let (handle, committer) = spawn_committer(
        Arc::clone(&dataset),
        CommitterConfig {
            max_batch: batch,
            max_age: Duration::from_millis(500),
            ..CommitterConfig::default()
        },
    );
    let stats = Arc::clone(handle.stats());
    let profile = Arc::new(profile);
    let worker = LocalWorker::new(Source::new(&location, None)?, Arc::clone(&profile), 4);
    let ingestor = Ingestor::new(Arc::new(worker), Arc::new(handle));
    let results = futures::stream::iter(files)
        .map(|path| {
            let (profile, root, ingestor) = (Arc::clone(&profile), &root, ingestor.clone());
            async move {
                let id = std::path::absolute(path)
                    .map_err(|e| e.to_string())
                    .and_then(|abs| {
                        abs.strip_prefix(root)
                            .map(|rel| rel.to_string_lossy().to_string())
                            .map_err(|_| format!("not under the source root {}", root.display()))
                    })
                    .and_then(|key| profile.parse_key(&key).map_err(|e| e.to_string()));
                match id {
                    Ok(id) => {
                        let r = ingestor.ingest(&id, Origin::Append).await;
                        (id.key, r.map(|a| a.outcome).map_err(|e| e.to_string()))
                    }
                    Err(e) => (path.display().to_string(), Err(e)),
                }
            }
        })
        .buffer_unordered(batch.saturating_mul(2))
        .collect()
        .await;
    drop(ingestor);
    // Everything asked for has an answer: the committer holds nothing; stop it.
    committer.shutdown(Duration::from_secs(60)).await;
    Ok(AppendReport {
        results,
        commits: stats.commits.load(std::sync::atomic::Ordering::Relaxed),
        dataset,
    })
}
