//! Where backfill jobs are kept across restarts: one small JSON object per job beside the
//! repository (`<repository>.jobs/<id>.json`: a sibling directory for a local repository, a
//! sibling prefix in the same bucket for S3), written when a job starts, at most every few
//! seconds while it runs, and when it ends. The committer's restart loads them: finished jobs keep
//! their history, running ones resume.

use std::sync::Arc;

use futures::TryStreamExt as _;
use imerg_dataset::RepoLocation;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};

use crate::jobs::JobStatus;

/// The jobs of one repository.
#[derive(Debug, Clone)]
pub struct JobStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

/// A job record could not be written, read or removed.
#[derive(Debug, thiserror::Error)]
#[error("job store: {0}")]
pub struct StoreError(String);

impl JobStore {
    /// The job store beside the repository at `location`.
    pub fn beside(location: &RepoLocation) -> Result<Self, StoreError> {
        let e = |e: object_store::Error| StoreError(e.to_string());
        match location {
            RepoLocation::Local(dir) => {
                let mut name = dir.file_name().unwrap_or_default().to_os_string();
                name.push(".jobs");
                let jobs = dir.with_file_name(name);
                std::fs::create_dir_all(&jobs)
                    .map_err(|err| StoreError(format!("{}: {err}", jobs.display())))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&jobs).map_err(e)?;
                Ok(Self {
                    store: Arc::new(fs),
                    prefix: Path::default(),
                })
            }
            RepoLocation::S3 {
                bucket,
                prefix,
                region,
                endpoint_url,
                allow_http,
            } => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_allow_http(*allow_http);
                if let Some(r) = region {
                    b = b.with_region(r);
                }
                if let Some(u) = endpoint_url {
                    b = b.with_endpoint(u).with_virtual_hosted_style_request(false);
                }
                Ok(Self {
                    store: Arc::new(b.build().map_err(e)?),
                    prefix: Path::from(format!("{}.jobs", prefix.trim_end_matches('/'))),
                })
            }
        }
    }

    fn path(&self, id: &str) -> Path {
        self.prefix.clone().join(format!("{id}.json"))
    }

    /// Writes a job's record (replacing the previous one).
    pub async fn save(&self, s: &JobStatus) -> Result<(), StoreError> {
        let body = serde_json::to_vec(s).map_err(|e| StoreError(e.to_string()))?;
        self.store
            .put(&self.path(&s.id), body.into())
            .await
            .map(|_| ())
            .map_err(|e| StoreError(e.to_string()))
    }

    /// Removes a job's record (a pruned job).
    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        match self.store.delete(&self.path(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError(e.to_string())),
        }
    }

    /// Every job record; one that does not parse is skipped with a warning.
    pub async fn load_all(&self) -> Result<Vec<JobStatus>, StoreError> {
        let metas: Vec<_> = self
            .store
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        let mut out = Vec::new();
        for m in metas {
            if !m.location.as_ref().ends_with(".json") {
                continue;
            }
            let bytes = self
                .store
                .get(&m.location)
                .await
                .map_err(|e| StoreError(e.to_string()))?
                .bytes()
                .await
                .map_err(|e| StoreError(e.to_string()))?;
            match serde_json::from_slice::<JobStatus>(&bytes) {
                Ok(s) => out.push(s),
                Err(e) => {
                    tracing::warn!(object = %m.location, error = %e, "skipping an unreadable job record");
                }
            }
        }
        Ok(out)
    }
}
