//! Opening the repository: create it (with the source container and manifest splitting persisted)
//! if there is none, check that it holds the dataset's virtual chunk container, or read the
//! configuration of one another process created.

use std::sync::Arc;

use icechunk::config::{CachingConfig, ManifestConfig};
use icechunk::{Repository, RepositoryConfig};
use imerg_catalog::ProductProfile;

use crate::config::SourceContainer;
use crate::{DatasetConfig, DatasetError, RepoLocation};

/// Opens the repository at `location`, creating it first if there is none, and checks that its
/// config has a virtual chunk container for `cfg.source`.
pub(crate) async fn open_or_create(
    location: &RepoLocation,
    cfg: &DatasetConfig,
) -> Result<Repository, DatasetError> {
    let storage = location.storage().await?;
    let runtime = RepositoryConfig {
        caching: Some(CachingConfig {
            num_chunk_refs: Some(cfg.manifest_cache_refs),
            num_snapshot_nodes: Some(cfg.snapshot_cache_nodes),
            ..Default::default()
        }),
        ..Default::default()
    };
    let exists = Repository::exists(Arc::clone(&storage), None)
        .await
        .map_err(DatasetError::ic)?;
    if !exists {
        let mut persisted = RepositoryConfig {
            manifest: Some(ManifestConfig {
                splitting: Some(cfg.splitting()),
                max_concurrent_manifest_fetches_during_commit: Some(8),
                ..Default::default()
            }),
            ..Default::default()
        };
        persisted
            .set_virtual_chunk_container(cfg.source.to_icechunk()?)
            .map_err(DatasetError::Config)?;
        Repository::create(Arc::clone(&storage))
            .config(persisted)
            .execute()
            .await
            .map_err(DatasetError::ic)?;
        tracing::info!(location = ?location, container = %cfg.source.url_prefix, "created repository");
    }
    let repo = Repository::open(storage)
        .config(runtime)
        .authorize_virtual_chunk_access(cfg.source.credentials())
        .execute()
        .await
        .map_err(DatasetError::ic)?;
    check_container(&repo, &cfg.source)?;
    Ok(repo)
}

/// The repository must know the source container, or no reference could be written or read.
fn check_container(repo: &Repository, source: &SourceContainer) -> Result<(), DatasetError> {
    if repo
        .config()
        .get_virtual_chunk_container(&source.url_prefix)
        .is_some()
    {
        return Ok(());
    }
    Err(DatasetError::Config(format!(
        "the repository has no virtual chunk container for {} (its containers: {:?})",
        source.url_prefix,
        repo.config()
            .virtual_chunk_containers
            .as_ref()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    )))
}

/// The dataset config of an existing repository: `profile`, with the source container taken from
/// the repository's own config.
pub(crate) async fn existing_config(
    location: &RepoLocation,
    profile: ProductProfile,
) -> Result<DatasetConfig, DatasetError> {
    let storage = location.storage().await?;
    let exists = Repository::exists(Arc::clone(&storage), None)
        .await
        .map_err(DatasetError::ic)?;
    if !exists {
        return Err(DatasetError::Config(format!(
            "no repository at {location:?}"
        )));
    }
    let persisted = Repository::fetch_config(Arc::clone(&storage))
        .await
        .map_err(DatasetError::ic)?
        .map(|(c, _)| c)
        .unwrap_or_default();
    let container = persisted
        .virtual_chunk_containers
        .as_ref()
        .and_then(|m| m.values().next().cloned())
        .ok_or_else(|| {
            DatasetError::Config("the repository has no virtual chunk container".into())
        })?;
    let source = SourceContainer::from_icechunk(&container);
    Ok(DatasetConfig::new(profile, source))
}
