//! One batch of granules, one commit: what happened to each granule, the checksum a reference
//! carries, and `prepare`, which reads what the plan needs, plans, and writes the plan to a fresh
//! session that `write::commit` then commits.

mod plan;
mod untrusted;
mod write;

use std::collections::BTreeMap;

use icechunk::Store;
use icechunk::format::ChunkIndices;
use icechunk::format::manifest::{Checksum, ChunkPayload, SecondsSinceEpoch};
use icechunk::format::snapshot::SnapshotProperties;
use icechunk::storage::ETag;
use imerg_refs::GranuleRefs;

use crate::store_io::{self, Presence};
use crate::{DatasetConfig, DatasetError, history};
pub(crate) use plan::BatchPlan;
use plan::{Classified, StoredRef};
pub(crate) use write::commit;

/// What happened to one granule of a batch.
#[derive(Debug, Clone)]
pub enum GranuleOutcome {
    /// Newly written at its time position.
    Added,
    /// Already present with a different source version: references re-pointed.
    Replaced { previous: String },
    /// Already present with the same references: nothing written.
    Duplicate,
    /// An older version of the source object than the one stored (by last-modified time):
    /// nothing written, the store keeps the newer one. `stored` names it.
    Stale { stored: String },
    /// Not written; the reason says why.
    Rejected(DatasetError),
}

impl GranuleOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Replaced { .. } => "replaced",
            Self::Duplicate => "duplicate",
            Self::Stale { .. } => "stale",
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

/// A batch applied to a fresh session but not committed yet (see
/// [`Dataset::prepare_batch`](crate::Dataset::prepare_batch)).
pub struct PreparedBatch {
    pub(crate) batch_id: String,
    pub(crate) outcomes: Vec<(String, GranuleOutcome)>,
    /// `None` when nothing changes.
    pub(crate) commit: Option<PendingCommit>,
}

/// A session with a batch's changes, and the message and properties to commit them with.
pub(crate) struct PendingCommit {
    pub store: Store,
    pub message: String,
    pub properties: SnapshotProperties,
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

fn version_text(c: &Option<Checksum>) -> String {
    match c {
        Some(Checksum::ETag(e)) => format!("etag {}", e.0),
        Some(Checksum::LastModified(s)) => format!("last-modified {}", s.0),
        None => "no checksum".into(),
    }
}

/// Plans `granules` against the store of a fresh writable session and writes the plan into it.
pub(crate) async fn prepare(
    store: Store,
    cfg: &DatasetConfig,
    granules: &[GranuleRefs],
    batch_id: &str,
) -> Result<PreparedBatch, DatasetError> {
    let profile = &cfg.profile;
    let root = store_io::root_info(&store).await?;
    let classified = Classified::new(
        profile,
        &cfg.source.url_prefix,
        root.as_ref().map(|r| (&r.layout, r.fingerprint.as_str())),
        granules,
    );
    if classified.is_empty() {
        return Ok(PreparedBatch::unchanged(
            batch_id,
            classified.into_outcomes(),
        ));
    }

    let old_len = store_io::time_len(&store, profile).await?;
    let presence = Presence::read(&store, classified.time_indices()).await?;
    let first_spec = profile
        .layout
        .variables
        .first()
        .ok_or_else(|| DatasetError::Config("profile has no variables".into()))?;
    let first_var = &first_spec.name;
    let first_path = store_io::array_path(first_var)?;
    let grid = (
        profile.layout.grid.n_lon.div_ceil(first_spec.chunk[1]),
        profile.layout.grid.n_lat.div_ceil(first_spec.chunk[2]),
    );
    let mut stored = BTreeMap::new();
    for t in classified.time_indices().filter(|t| presence.contains(*t)) {
        stored.insert(t, stored_ref(&store, &first_path, t, grid).await?);
    }
    let plan = classified.diff(first_var, old_len, &stored);
    if plan.to_write.is_empty() {
        return Ok(PreparedBatch::unchanged(batch_id, plan.outcomes));
    }

    write::apply(
        &store,
        profile,
        root.map(|r| r.time_units),
        granules,
        &plan,
        presence,
    )
    .await?;
    let (message, properties) = history::commit_properties(profile, granules, &plan, batch_id);
    Ok(PreparedBatch {
        batch_id: batch_id.into(),
        outcomes: plan.outcomes,
        commit: Some(PendingCommit {
            store,
            message,
            properties,
        }),
    })
}

/// The references of time step `t` of the array at `path`, whose chunk grid is
/// `n_lon` x `n_lat`; `None` if none is virtual.
async fn stored_ref(
    store: &Store,
    path: &icechunk::format::Path,
    t: u64,
    (n_lon, n_lat): (u64, u64),
) -> Result<Option<StoredRef>, DatasetError> {
    let t = u32::try_from(t).map_err(|_| DatasetError::Inconsistent(format!("time index {t}")))?;
    let session = store.session();
    let s = session.read().await;
    let mut found: Option<StoredRef> = None;
    let mut mixed = false;
    for i in 0..n_lon {
        for j in 0..n_lat {
            let idx = ChunkIndices(vec![t, i as u32, j as u32]);
            match s
                .get_chunk_ref(path, &idx)
                .await
                .map_err(DatasetError::ic)?
            {
                Some(ChunkPayload::Virtual(r)) => {
                    let url = r.location.url().to_string();
                    let entry = found.get_or_insert_with(|| StoredRef {
                        url: url.clone(),
                        ranges: BTreeMap::new(),
                        mixed: false,
                        checksum: r.checksum.clone(),
                    });
                    mixed |= entry.url != url || entry.checksum != r.checksum;
                    entry.ranges.insert([i, j], (r.offset, r.length));
                }
                // A chunk a granule did not store (all fill) is absent; any other payload means
                // the step was not written by this service from one object.
                None => {}
                Some(_) => mixed = true,
            }
        }
    }
    Ok(found.map(|mut r| {
        r.mixed = mixed;
        r
    }))
}
