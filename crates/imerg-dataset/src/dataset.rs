//! The dataset in an Icechunk repository: open or create it, apply a batch of granules in one
//! commit (position from each granule's time index, duplicates as no-ops, replaced sources
//! re-pointed, other layouts rejected), find whether a batch already landed, and read status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use icechunk::config::{CachingConfig, ManifestConfig};
use icechunk::format::manifest::{
    Checksum, ChunkPayload, SecondsSinceEpoch, VirtualChunkLocation, VirtualChunkRef,
};
use icechunk::format::snapshot::SnapshotProperties;
use icechunk::format::{ByteRange, ChunkIndices, Path};
use icechunk::repository::VersionInfo;
use icechunk::session::SessionErrorKind;
use icechunk::storage::ETag;
use icechunk::store::SetVirtualRefsResult;
use icechunk::{Repository, RepositoryConfig, Store};
use imerg_refs::{GranuleRefs, Layout, TimeUnits};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::RwLock;

use crate::arrays::{self, ATTR_FINGERPRINT, ATTR_LAYOUT, ATTR_TIME_UNITS, PRESENT, TIME_CHUNK};
use crate::{DatasetConfig, DatasetError, RepoLocation};

/// What happened to one granule of a batch.
#[derive(Debug, Clone)]
pub enum GranuleOutcome {
    /// Newly written at its time position.
    Added,
    /// Already present with a different source version: references re-pointed.
    Replaced { previous: String },
    /// Already present with the same references: nothing written.
    Duplicate,
    /// Not written; the reason says why.
    Rejected(DatasetError),
}

impl GranuleOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Replaced { .. } => "replaced",
            Self::Duplicate => "duplicate",
            Self::Rejected(_) => "rejected",
        }
    }
}

/// The result of applying a batch.
#[derive(Debug, Clone)]
pub struct BatchOutcome {
    pub batch_id: String,
    /// The snapshot holding the batch: the new commit, the one found after an ambiguous failure,
    /// or the branch tip when the batch changed nothing.
    pub snapshot: String,
    /// True if a commit was made (or found) for this batch.
    pub committed: bool,
    /// Per granule, in input order: key and outcome.
    pub outcomes: Vec<(String, GranuleOutcome)>,
}

/// A batch applied to a fresh session but not committed yet (see [`Dataset::prepare_batch`]).
pub struct PreparedBatch {
    batch_id: String,
    outcomes: Vec<(String, GranuleOutcome)>,
    /// The session's store, commit message and properties; `None` when nothing changes.
    commit: Option<(Store, String, SnapshotProperties)>,
}

impl std::fmt::Debug for PreparedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedBatch")
            .field("batch_id", &self.batch_id)
            .field("outcomes", &self.outcomes.len())
            .field("changes", &self.commit.is_some())
            .finish()
    }
}

impl PreparedBatch {
    fn unchanged(batch_id: &str, outcomes: Vec<(String, GranuleOutcome)>) -> Self {
        Self {
            batch_id: batch_id.into(),
            outcomes,
            commit: None,
        }
    }
}

/// What `status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub product: String,
    /// Length of the time axis (time index of the last position + 1).
    pub time_len: u64,
    pub first_granule: Option<DateTime<Utc>>,
    pub last_granule: Option<DateTime<Utc>>,
    pub granules_present: u64,
    /// Missing stretches between the first and last granule: `[start, end)` and their count.
    pub gaps: Vec<Gap>,
    pub commits: u64,
    pub last_commit: Option<CommitInfo>,
    pub manifests: u64,
    pub largest_manifest_bytes: u64,
    pub manifest_bytes: u64,
    pub manifest_max_bytes: u64,
    pub references: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub granules: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommitInfo {
    pub id: String,
    pub time: DateTime<Utc>,
    pub message: String,
}

/// Batch properties recorded on every commit.
pub(crate) const PROP_BATCH_ID: &str = "imerg_batch_id";

/// One IMERG dataset in one Icechunk repository.
#[derive(Debug)]
pub struct Dataset {
    repo: Repository,
    cfg: DatasetConfig,
}

fn array_path(name: &str) -> Result<Path, DatasetError> {
    Path::new(&format!("/{name}")).map_err(DatasetError::ic)
}

/// The checksum a reference carries, which readers check on every read so that a replaced
/// source object fails loudly instead of returning other bytes: the object's last-modified time,
/// rounded up to the second (object stores change it on every write of the object, and a
/// rounded-down time fails `If-Unmodified-Since`), else its ETag. Last-modified is a 4-byte
/// integer in the manifest where an ETag is a ~34-character string: 1.2 bytes per reference
/// over the full record, after compression (BENCHMARKS.md). It is also the only checksum that
/// works for `file://` sources: Icechunk 2.3.1 strips the quotes of an ETag before object_store's
/// local backend compares it with its own quoted one, so a local ETag never matches.
fn checksum_of(g: &GranuleRefs) -> Option<Checksum> {
    g.last_modified
        .map(|t| {
            let secs = t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0);
            Checksum::LastModified(SecondsSinceEpoch(u32::try_from(secs).unwrap_or(u32::MAX)))
        })
        .or_else(|| g.etag.as_ref().map(|e| Checksum::ETag(ETag(e.clone()))))
}

/// Batches up to this many granules list every granule (key, ETag, outcome) in the commit's
/// properties; larger ones (backfill) record time-index ranges, the first and last key and a
/// digest of the keys and ETags instead. Every snapshot's properties live in the repository's
/// info object, which each commit rewrites, so per-commit metadata must stay small; the ETag of
/// every granule is in its references anyway.
pub const LIST_GRANULES_UP_TO: usize = 64;

fn granule_properties(
    granules: &[GranuleRefs],
    written: &[usize],
    outcomes: &[(String, GranuleOutcome)],
) -> Value {
    if written.len() <= LIST_GRANULES_UP_TO {
        return Value::Array(
            written
                .iter()
                .map(|&n| {
                    let g = &granules[n];
                    json!({"key": g.key, "etag": g.etag, "outcome": outcomes[n].1.label()})
                })
                .collect(),
        );
    }
    let mut idx: Vec<u64> = written.iter().map(|&n| granules[n].time_index).collect();
    idx.sort_unstable();
    let mut ranges: Vec<[u64; 2]> = Vec::new();
    for t in idx {
        match ranges.last_mut() {
            Some(r) if r[1] == t => r[1] = t + 1,
            _ => ranges.push([t, t + 1]),
        }
    }
    let mut keyed: Vec<(&str, &str)> = written
        .iter()
        .map(|&n| {
            (
                granules[n].key.as_str(),
                granules[n].etag.as_deref().unwrap_or(""),
            )
        })
        .collect();
    keyed.sort_unstable();
    let digest = {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for (k, e) in &keyed {
            h.update(k.as_bytes());
            h.update(b" ");
            h.update(e.as_bytes());
            h.update(b"\n");
        }
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    json!({
        "count": written.len(),
        "time_index_ranges": ranges,
        "first_key": keyed.first().map(|k| k.0),
        "last_key": keyed.last().map(|k| k.0),
        "keys_etags_digest": digest,
    })
}

/// A key that is absent, or whose array does not exist yet.
fn is_not_found(e: &icechunk::store::StoreError) -> bool {
    use icechunk::store::StoreErrorKind;
    matches!(
        e.kind(),
        StoreErrorKind::NotFound(_)
            | StoreErrorKind::SessionError(SessionErrorKind::NodeNotFound { .. })
    )
}

fn version_text(c: &Option<Checksum>) -> String {
    match c {
        Some(Checksum::ETag(e)) => format!("etag {}", e.0),
        Some(Checksum::LastModified(s)) => format!("last-modified {}", s.0),
        None => "no checksum".into(),
    }
}

impl Dataset {
    /// Opens the repository, or creates it (with the source container and manifest splitting
    /// persisted in its config) if there is none.
    pub async fn open_or_create(
        location: &RepoLocation,
        cfg: DatasetConfig,
    ) -> Result<Self, DatasetError> {
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
        if repo
            .config()
            .get_virtual_chunk_container(&cfg.source.url_prefix)
            .is_none()
        {
            return Err(DatasetError::Config(format!(
                "the repository has no virtual chunk container for {} (its containers: {:?})",
                cfg.source.url_prefix,
                repo.config()
                    .virtual_chunk_containers
                    .as_ref()
                    .map(|m| m.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
            )));
        }
        Ok(Self { repo, cfg })
    }

    /// Opens an existing repository for reading and writing, taking its source container from
    /// the repository's own config.
    pub async fn open(
        location: &RepoLocation,
        profile: imerg_catalog::ProductProfile,
    ) -> Result<Self, DatasetError> {
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
        let source = crate::config::SourceContainer::from_icechunk(&container);
        Self::open_or_create(location, DatasetConfig::new(profile, source)).await
    }

    pub fn config(&self) -> &DatasetConfig {
        &self.cfg
    }

    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    async fn store(&self, writable: bool) -> Result<Store, DatasetError> {
        let session = if writable {
            self.repo.writable_session(&self.cfg.branch).await
        } else {
            self.repo
                .readonly_session(&VersionInfo::BranchTipRef(self.cfg.branch.clone()))
                .await
        }
        .map_err(DatasetError::ic)?;
        Ok(Store::from_session(Arc::new(RwLock::new(session))).await)
    }

    async fn get_json(store: &Store, key: &str) -> Result<Option<Value>, DatasetError> {
        match store.get(key, &ByteRange::ALL).await {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| DatasetError::Inconsistent(format!("{key}: {e}"))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(DatasetError::ic(e)),
        }
    }

    async fn set_json(store: &Store, key: &str, v: &Value) -> Result<(), DatasetError> {
        let bytes = serde_json::to_vec(v).map_err(|e| DatasetError::Inconsistent(e.to_string()))?;
        store.set(key, bytes.into()).await.map_err(DatasetError::ic)
    }

    async fn get_chunk(store: &Store, key: &str) -> Result<Option<Vec<u8>>, DatasetError> {
        match store.get(key, &ByteRange::ALL).await {
            Ok(b) => arrays::gunzip(&b).map(Some),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(DatasetError::ic(e)),
        }
    }

    /// The dataset's layout and time units, if it has been initialized.
    async fn known(store: &Store) -> Result<Option<(Layout, String, TimeUnits)>, DatasetError> {
        let Some(root) = Self::get_json(store, "zarr.json").await? else {
            return Ok(None);
        };
        let attrs = &root["attributes"];
        let layout: Layout = serde_json::from_value(attrs[ATTR_LAYOUT].clone())
            .map_err(|e| DatasetError::Inconsistent(format!("root layout attribute: {e}")))?;
        let fp = attrs[ATTR_FINGERPRINT]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let units = TimeUnits::parse(attrs[ATTR_TIME_UNITS].as_str().unwrap_or_default())
            .map_err(|e| DatasetError::Inconsistent(e.to_string()))?;
        Ok(Some((layout, fp, units)))
    }

    async fn time_len(&self, store: &Store) -> Result<u64, DatasetError> {
        let Some(first) = self.cfg.profile.layout.variables.first() else {
            return Err(DatasetError::Config("profile has no variables".into()));
        };
        match Self::get_json(store, &format!("{}/zarr.json", first.name)).await? {
            Some(m) => Ok(arrays::shape_of(&m)?.first().copied().unwrap_or(0)),
            None => Ok(0),
        }
    }

    /// Writes the root group, the coordinates and the arrays' metadata from the first granule.
    async fn initialize(
        &self,
        store: &Store,
        g: &GranuleRefs,
        len: u64,
    ) -> Result<(), DatasetError> {
        let root = arrays::root_metadata(&self.cfg.profile, &g.layout, &g.coords.time.units);
        Self::set_json(store, "zarr.json", &root).await?;
        for (name, v) in &g.variables {
            Self::set_json(
                store,
                &format!("{name}/zarr.json"),
                &arrays::with_time_len(&v.zarr, len),
            )
            .await?;
        }
        Self::set_json(
            store,
            "time/zarr.json",
            &arrays::time_metadata(len, &g.coords),
        )
        .await?;
        Self::set_json(
            store,
            "time_bnds/zarr.json",
            &arrays::time_bnds_metadata(len, &g.coords),
        )
        .await?;
        Self::set_json(
            store,
            &format!("{PRESENT}/zarr.json"),
            &arrays::present_metadata(len),
        )
        .await?;
        for (name, c) in g.coords.spatial() {
            let dims: Vec<&str> = match name {
                "lon" => vec!["lon"],
                "lat" => vec!["lat"],
                "lon_bnds" => vec!["lon", "nv"],
                _ => vec!["lat", "nv"],
            };
            Self::set_json(
                store,
                &format!("{name}/zarr.json"),
                &arrays::coord_metadata(&c.shape, &dims, &c.attributes),
            )
            .await?;
            let key = if c.shape.len() == 2 {
                format!("{name}/c/0/0")
            } else {
                format!("{name}/c/0")
            };
            store
                .set(&key, arrays::f32_chunk(&c.values).into())
                .await
                .map_err(DatasetError::ic)?;
        }
        Ok(())
    }

    /// Grows every time-dimensioned array from `cur` to `new` steps and writes the `time` and
    /// `time_bnds` chunks the axis reaches for the first time.
    async fn grow(
        &self,
        store: &Store,
        units: &TimeUnits,
        cur: u64,
        new: u64,
    ) -> Result<(), DatasetError> {
        let mut names: Vec<String> = self
            .cfg
            .profile
            .layout
            .variables
            .iter()
            .map(|v| v.name.clone())
            .collect();
        names.extend(["time".into(), "time_bnds".into(), PRESENT.into()]);
        for name in &names {
            let key = format!("{name}/zarr.json");
            let meta = Self::get_json(store, &key)
                .await?
                .ok_or_else(|| DatasetError::Inconsistent(format!("{key} is missing")))?;
            Self::set_json(store, &key, &arrays::with_time_len(&meta, new)).await?;
        }
        let first_new_chunk = if cur == 0 {
            0
        } else {
            (cur - 1) / TIME_CHUNK + 1
        };
        for k in first_new_chunk..=(new - 1) / TIME_CHUNK {
            store
                .set(
                    &format!("time/c/{k}"),
                    arrays::time_chunk(k, &self.cfg.profile, units).into(),
                )
                .await
                .map_err(DatasetError::ic)?;
        }
        let rows = TIME_CHUNK / 2;
        let first_new_bchunk = if cur == 0 { 0 } else { (cur - 1) / rows + 1 };
        for k in first_new_bchunk..=(new - 1) / rows {
            store
                .set(
                    &format!("time_bnds/c/{k}/0"),
                    arrays::time_bnds_chunk(k, &self.cfg.profile, units).into(),
                )
                .await
                .map_err(DatasetError::ic)?;
        }
        Ok(())
    }

    /// Applies a batch in one commit. Granules that do not fit are rejected individually; the
    /// rest land together. `batch_id` is recorded in the commit's properties.
    pub async fn commit_batch(
        &self,
        granules: &[GranuleRefs],
        batch_id: &str,
    ) -> Result<BatchOutcome, DatasetError> {
        let prepared = self.prepare_batch(granules, batch_id).await?;
        self.commit_prepared(prepared).await
    }

    /// First half of [`Dataset::commit_batch`]: a fresh session on the branch tip with the
    /// batch's changes applied, not yet committed.
    pub async fn prepare_batch(
        &self,
        granules: &[GranuleRefs],
        batch_id: &str,
    ) -> Result<PreparedBatch, DatasetError> {
        let profile = &self.cfg.profile;
        let prefix = &self.cfg.source.url_prefix;
        let store = self.store(true).await?;
        let known = Self::known(&store).await?;
        let mut outcomes: Vec<(String, GranuleOutcome)> = Vec::with_capacity(granules.len());
        let mut reference: Option<(Layout, String)> =
            known.as_ref().map(|(l, fp, _)| (l.clone(), fp.clone()));
        // Accepted granules by time index (a later duplicate in the batch wins).
        let mut accepted: BTreeMap<u64, usize> = BTreeMap::new();
        for (n, g) in granules.iter().enumerate() {
            let reject = |label: &'static str, reason: String| {
                GranuleOutcome::Rejected(DatasetError::Rejected {
                    key: g.key.clone(),
                    label,
                    reason,
                })
            };
            let outcome = if g.product != profile.id {
                Some(reject(
                    "product",
                    format!(
                        "granule of product {:?}, dataset of {:?}",
                        g.product, profile.id
                    ),
                ))
            } else if !g.url.starts_with(prefix.as_str()) {
                Some(reject(
                    "source_container",
                    format!(
                        "{} is outside the dataset's source container {prefix}",
                        g.url
                    ),
                ))
            } else if profile.start_of(g.time_index) != g.start {
                Some(reject(
                    "time_range",
                    format!(
                        "time index {} does not match start {}",
                        g.time_index, g.start
                    ),
                ))
            } else {
                match &reference {
                    Some((l, fp)) if *fp != g.fingerprint => Some(reject(
                        "layout",
                        format!(
                            "layout differs from the dataset's: {}",
                            l.differences(&g.layout).join("; ")
                        ),
                    )),
                    Some(_) => None,
                    None => {
                        reference = Some((g.layout.clone(), g.fingerprint.clone()));
                        None
                    }
                }
            };
            match outcome {
                Some(o) => outcomes.push((g.key.clone(), o)),
                None => {
                    outcomes.push((g.key.clone(), GranuleOutcome::Added));
                    if let Some(prev) = accepted.insert(g.time_index, n) {
                        outcomes[prev].1 = GranuleOutcome::Duplicate;
                    }
                }
            }
        }
        for (key, o) in &outcomes {
            if let GranuleOutcome::Rejected(e) = o {
                tracing::warn!(%key, reason = e.label(), error = %e, "granule rejected");
            }
        }
        if accepted.is_empty() {
            return Ok(PreparedBatch::unchanged(batch_id, outcomes));
        }

        let cur_len = self.time_len(&store).await?;
        let max_index = accepted.keys().next_back().copied().unwrap_or(0);
        let new_len = cur_len.max(max_index + 1);

        // Presence of the accepted time indices, chunk by chunk.
        let mut present: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for &t in accepted.keys() {
            let k = t / TIME_CHUNK;
            if let std::collections::btree_map::Entry::Vacant(e) = present.entry(k) {
                let raw = Self::get_chunk(&store, &format!("{PRESENT}/c/{k}"))
                    .await?
                    .unwrap_or_default();
                let mut raw = raw;
                raw.resize(TIME_CHUNK as usize, 0);
                e.insert(raw);
            }
        }
        let first_var = array_path(
            &profile
                .layout
                .variables
                .first()
                .ok_or_else(|| DatasetError::Config("profile has no variables".into()))?
                .name,
        )?;
        let mut to_write: Vec<usize> = Vec::new();
        for (&t, &n) in &accepted {
            let g = &granules[n];
            let was_present = present
                .get(&(t / TIME_CHUNK))
                .is_some_and(|c| c[(t % TIME_CHUNK) as usize] != 0);
            if !was_present {
                to_write.push(n);
                continue;
            }
            let existing = {
                let session = store.session();
                let s = session.read().await;
                s.get_chunk_ref(&first_var, &ChunkIndices(vec![t as u32, 0, 0]))
                    .await
                    .map_err(DatasetError::ic)?
            };
            let first_ref = g
                .variables
                .get(first_var.as_str().trim_start_matches('/'))
                .and_then(|v| v.refs.iter().find(|r| r.chunk[1] == 0 && r.chunk[2] == 0));
            let new_checksum = checksum_of(g);
            let same = match (&existing, first_ref) {
                (Some(ChunkPayload::Virtual(r)), Some(fr)) => {
                    r.location.url() == g.url
                        && r.offset == fr.offset
                        && r.length == fr.length
                        && r.checksum == new_checksum
                }
                _ => false,
            };
            if same {
                outcomes[n].1 = GranuleOutcome::Duplicate;
            } else {
                let previous = match &existing {
                    Some(ChunkPayload::Virtual(r)) => {
                        format!("{} ({})", r.location.url(), version_text(&r.checksum))
                    }
                    _ => "no reference".into(),
                };
                tracing::warn!(
                    key = %g.key, %previous, now = %version_text(&new_checksum),
                    "source object replaced: re-pointing its references"
                );
                outcomes[n].1 = GranuleOutcome::Replaced { previous };
                to_write.push(n);
            }
        }
        if to_write.is_empty() {
            return Ok(PreparedBatch::unchanged(batch_id, outcomes));
        }

        // Write: initialize, grow, references, presence.
        let units = match &known {
            Some((_, _, u)) => *u,
            None => {
                let g = &granules[to_write[0]];
                self.initialize(&store, g, new_len).await?;
                TimeUnits::parse(&g.coords.time.units)
                    .map_err(|e| DatasetError::Inconsistent(e.to_string()))?
            }
        };
        if known.is_none() {
            self.grow(&store, &units, 0, new_len).await?;
        } else if new_len > cur_len {
            self.grow(&store, &units, cur_len, new_len).await?;
        }
        // A replaced source may store fewer chunks than the version it replaces: drop the old
        // references the new version does not overwrite (they would point at the new object with
        // the old checksum, or read stale ranges).
        let grid = &profile.layout.grid;
        for &n in &to_write {
            let g = &granules[n];
            if !matches!(outcomes[n].1, GranuleOutcome::Replaced { .. }) {
                continue;
            }
            for var in &profile.layout.variables {
                let path = array_path(&var.name)?;
                let new: std::collections::HashSet<[u64; 3]> = g
                    .variables
                    .get(&var.name)
                    .map(|v| v.refs.iter().map(|r| r.chunk).collect())
                    .unwrap_or_default();
                let stale: Vec<ChunkIndices> = (0..grid.n_lon.div_ceil(var.chunk[1]))
                    .flat_map(|i| (0..grid.n_lat.div_ceil(var.chunk[2])).map(move |j| (i, j)))
                    .filter(|(i, j)| !new.contains(&[g.time_index, *i, *j]))
                    .map(|(i, j)| ChunkIndices(vec![g.time_index as u32, i as u32, j as u32]))
                    .collect();
                if !stale.is_empty() {
                    let session = store.session();
                    let mut s = session.write().await;
                    s.delete_chunks(&path, stale)
                        .await
                        .map_err(DatasetError::ic)?;
                }
            }
        }
        for var in &profile.layout.variables {
            let path = array_path(&var.name)?;
            let mut refs = Vec::with_capacity(to_write.len() * 25);
            for &n in &to_write {
                let g = &granules[n];
                let checksum = checksum_of(g);
                let location = VirtualChunkLocation::from_url(&g.url).map_err(DatasetError::ic)?;
                let Some(v) = g.variables.get(&var.name) else {
                    return Err(DatasetError::Inconsistent(format!(
                        "{}: no references for {}",
                        g.key, var.name
                    )));
                };
                for r in &v.refs {
                    refs.push((
                        ChunkIndices(r.chunk.iter().map(|c| *c as u32).collect()),
                        VirtualChunkRef {
                            location: location.clone(),
                            offset: r.offset,
                            length: r.length,
                            checksum: checksum.clone(),
                        },
                    ));
                }
            }
            match store
                .set_virtual_refs(&path, true, refs)
                .await
                .map_err(DatasetError::ic)?
            {
                SetVirtualRefsResult::Done => {}
                SetVirtualRefsResult::FailedRefs(failed) => {
                    return Err(DatasetError::Inconsistent(format!(
                        "{} references of {} match no virtual chunk container",
                        failed.len(),
                        var.name
                    )));
                }
            }
        }
        for &n in &to_write {
            let t = granules[n].time_index;
            if let Some(c) = present.get_mut(&(t / TIME_CHUNK)) {
                c[(t % TIME_CHUNK) as usize] = 1;
            }
        }
        for (k, raw) in &present {
            store
                .set(&format!("{PRESENT}/c/{k}"), arrays::gzip(raw).into())
                .await
                .map_err(DatasetError::ic)?;
        }

        // Commit.
        let written = granule_properties(granules, &to_write, &outcomes);
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for (_, o) in &outcomes {
            *counts.entry(o.label()).or_default() += 1;
        }
        let first = &granules[to_write[0]];
        let mut props = SnapshotProperties::new();
        props.insert(PROP_BATCH_ID.into(), json!(batch_id));
        props.insert("imerg_granules".into(), written);
        props.insert("imerg_counts".into(), json!(counts));
        props.insert("imerg_time_len".into(), json!(new_len));
        let message = format!(
            "imerg-ingest: {} granule(s) of {} from {}",
            to_write.len(),
            profile.id,
            first
                .start
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        Ok(PreparedBatch {
            batch_id: batch_id.into(),
            outcomes,
            commit: Some((store, message, props)),
        })
    }

    /// Second half of [`Dataset::commit_batch`]: commits a prepared batch. A branch that moved
    /// since the batch was prepared means a second writer: [`DatasetError::SecondWriter`].
    pub async fn commit_prepared(
        &self,
        prepared: PreparedBatch,
    ) -> Result<BatchOutcome, DatasetError> {
        let PreparedBatch {
            batch_id,
            outcomes,
            commit,
        } = prepared;
        let Some((store, message, props)) = commit else {
            return self.unchanged(&batch_id, outcomes).await;
        };
        let session = store.session();
        let mut s = session.write().await;
        let expected = s.snapshot_id().to_string();
        imerg_crashpoint::reached(imerg_crashpoint::DURING_COMMIT);
        let result = s
            .commit(message)
            .properties(props)
            .max_concurrent_nodes(8)
            .execute()
            .await;
        match result {
            Ok(id) => Ok(BatchOutcome {
                batch_id,
                snapshot: id.to_string(),
                committed: true,
                outcomes,
            }),
            Err(e) => match e.kind() {
                SessionErrorKind::Conflict {
                    expected_parent,
                    actual_parent,
                } => Err(DatasetError::SecondWriter {
                    branch: self.cfg.branch.clone(),
                    expected: expected_parent.as_ref().map_or(expected, |p| p.to_string()),
                    actual: actual_parent
                        .as_ref()
                        .map_or_else(|| "?".into(), |p| p.to_string()),
                }),
                _ => Err(DatasetError::ic(e)),
            },
        }
    }

    async fn unchanged(
        &self,
        batch_id: &str,
        outcomes: Vec<(String, GranuleOutcome)>,
    ) -> Result<BatchOutcome, DatasetError> {
        let tip = self
            .repo
            .lookup_branch(&self.cfg.branch)
            .await
            .map_err(DatasetError::ic)?;
        Ok(BatchOutcome {
            batch_id: batch_id.into(),
            snapshot: tip.to_string(),
            committed: false,
            outcomes,
        })
    }

    /// The snapshot that recorded `batch_id`, searching the newest `depth` commits of the branch
    /// (used after an ambiguous commit failure: the write may have landed).
    pub async fn find_batch(
        &self,
        batch_id: &str,
        depth: usize,
    ) -> Result<Option<String>, DatasetError> {
        let mut stream = std::pin::pin!(
            self.repo
                .ancestry(&VersionInfo::BranchTipRef(self.cfg.branch.clone()))
                .await
                .map_err(DatasetError::ic)?
        );
        let mut seen = 0;
        while let Some(info) = stream.try_next().await.map_err(DatasetError::ic)? {
            if info.metadata.get(PROP_BATCH_ID).and_then(Value::as_str) == Some(batch_id) {
                return Ok(Some(info.id.to_string()));
            }
            seen += 1;
            if seen >= depth {
                break;
            }
        }
        Ok(None)
    }

    /// Which time indices in `[from, to)` hold a granule, read in bulk from `granule_present`
    /// (one chunk per 131,072 steps) at the branch tip.
    pub async fn present_in(&self, from: u64, to: u64) -> Result<BTreeSet<u64>, DatasetError> {
        let store = self.store(false).await?;
        let len = self.time_len(&store).await?;
        Self::present_in_store(&store, len, from, to).await
    }

    async fn present_in_store(
        store: &Store,
        len: u64,
        from: u64,
        to: u64,
    ) -> Result<BTreeSet<u64>, DatasetError> {
        let to = to.min(len);
        let mut out = BTreeSet::new();
        if from >= to {
            return Ok(out);
        }
        for k in from / TIME_CHUNK..=(to - 1) / TIME_CHUNK {
            let Some(raw) = Self::get_chunk(store, &format!("{PRESENT}/c/{k}")).await? else {
                continue;
            };
            for (j, flag) in raw.iter().enumerate() {
                let t = k * TIME_CHUNK + j as u64;
                if *flag != 0 && (from..to).contains(&t) {
                    out.insert(t);
                }
            }
        }
        Ok(out)
    }

    /// Time range, granules present, gaps, commits and manifests at the branch tip.
    pub async fn status(&self) -> Result<Status, DatasetError> {
        let profile = &self.cfg.profile;
        let store = self.store(false).await?;
        let len = self.time_len(&store).await?;
        let present = Self::present_in_store(&store, len, 0, len).await?;
        let first = present.first().copied();
        let last = present.last().copied();
        let mut gaps = Vec::new();
        if let Some(a) = first {
            // (`range(a + 1..=last)` would panic on a store holding a single granule.)
            let mut prev = a;
            for &t in present.iter().skip(1) {
                if t > prev + 1 {
                    gaps.push(Gap {
                        start: profile.start_of(prev + 1),
                        end: profile.start_of(t),
                        granules: t - prev - 1,
                    });
                }
                prev = t;
            }
        }
        let history: Vec<_> = self
            .repo
            .ancestry(&VersionInfo::BranchTipRef(self.cfg.branch.clone()))
            .await
            .map_err(DatasetError::ic)?
            .try_collect()
            .await
            .map_err(DatasetError::ic)?;
        let last_commit = history.first().map(|s| CommitInfo {
            id: s.id.to_string(),
            time: s.flushed_at,
            message: s.message.clone(),
        });
        let tip = self
            .repo
            .lookup_branch(&self.cfg.branch)
            .await
            .map_err(DatasetError::ic)?;
        let files: Vec<_> = self
            .repo
            .lookup_manifest_files(&tip)
            .await
            .map_err(DatasetError::ic)?
            .collect();
        Ok(Status {
            product: profile.id.clone(),
            time_len: len,
            first_granule: first.map(|t| profile.start_of(t)),
            last_granule: last.map(|t| profile.start_of(t)),
            granules_present: present.len() as u64,
            gaps,
            // The repository's initial snapshot is not a commit of ours.
            commits: history.len().saturating_sub(1) as u64,
            last_commit,
            manifests: files.len() as u64,
            largest_manifest_bytes: files.iter().map(|f| f.size_bytes).max().unwrap_or(0),
            manifest_bytes: files.iter().map(|f| f.size_bytes).sum(),
            manifest_max_bytes: self.cfg.manifest_max_bytes,
            references: files.iter().map(|f| u64::from(f.num_chunk_refs)).sum(),
        })
    }
}
