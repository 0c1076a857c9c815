//! Writes a plan into a writable session (the dataset's metadata on its first batch, the time
//! axis grown, stale references of replaced granules dropped, new references, `granule_present`)
//! and commits the session, where a moved branch means a second writer.

use std::collections::HashSet;

use icechunk::Store;
use icechunk::format::ChunkIndices;
use icechunk::format::manifest::{VirtualChunkLocation, VirtualChunkRef};
use icechunk::session::SessionErrorKind;
use icechunk::store::SetVirtualRefsResult;
use imerg_catalog::ProductProfile;
use imerg_refs::{GranuleRefs, TimeUnits};

use super::plan::BatchPlan;
use super::{GranuleOutcome, PendingCommit, checksum_of};
use crate::DatasetError;
use crate::arrays::{self, PRESENT, TIME_CHUNK};
use crate::store_io::{self, Presence, array_path};

/// Writes the plan's granules. `time_units` are the dataset's, `None` before its first batch
/// (then the first granule written initializes the dataset); `presence` holds the
/// `granule_present` chunks of the accepted time indices, as read before planning.
pub(super) async fn apply(
    store: &Store,
    profile: &ProductProfile,
    time_units: Option<TimeUnits>,
    granules: &[GranuleRefs],
    plan: &BatchPlan,
    mut presence: Presence,
) -> Result<(), DatasetError> {
    let Some(&first) = plan.to_write.first() else {
        return Ok(());
    };
    match time_units {
        Some(units) => {
            if plan.new_len > plan.old_len {
                grow(store, profile, &units, plan.old_len, plan.new_len).await?;
            }
        }
        None => {
            let g = &granules[first];
            for (key, bytes) in arrays::initial_objects(profile, g, plan.new_len)? {
                store_io::set(store, &key, bytes).await?;
            }
            let units = TimeUnits::parse(&g.coords.time.units)
                .map_err(|e| DatasetError::Inconsistent(e.to_string()))?;
            grow(store, profile, &units, 0, plan.new_len).await?;
        }
    }
    delete_stale_refs(store, profile, granules, plan).await?;
    write_refs(store, profile, granules, &plan.to_write).await?;
    for &n in &plan.to_write {
        presence.insert(granules[n].time_index);
    }
    presence.write(store).await
}

/// Grows every time-dimensioned array from `cur` to `new` steps and writes the `time` and
/// `time_bnds` chunks the axis reaches for the first time.
async fn grow(
    store: &Store,
    profile: &ProductProfile,
    units: &TimeUnits,
    cur: u64,
    new: u64,
) -> Result<(), DatasetError> {
    let mut names: Vec<String> = profile
        .layout
        .variables
        .iter()
        .map(|v| v.name.clone())
        .collect();
    names.extend(["time".into(), "time_bnds".into(), PRESENT.into()]);
    for name in &names {
        let key = format!("{name}/zarr.json");
        let meta = store_io::get_json(store, &key)
            .await?
            .ok_or_else(|| DatasetError::Inconsistent(format!("{key} is missing")))?;
        store_io::set_json(store, &key, &arrays::with_time_len(&meta, new)).await?;
    }
    let first_new_chunk = if cur == 0 {
        0
    } else {
        (cur - 1) / TIME_CHUNK + 1
    };
    for k in first_new_chunk..=(new - 1) / TIME_CHUNK {
        store_io::set(
            store,
            &format!("time/c/{k}"),
            arrays::time_chunk(k, profile, units),
        )
        .await?;
    }
    let rows = TIME_CHUNK / 2;
    let first_new_bchunk = if cur == 0 { 0 } else { (cur - 1) / rows + 1 };
    for k in first_new_bchunk..=(new - 1) / rows {
        store_io::set(
            store,
            &format!("time_bnds/c/{k}/0"),
            arrays::time_bnds_chunk(k, profile, units),
        )
        .await?;
    }
    Ok(())
}

/// A replaced source may store fewer chunks than the version it replaces: drops the old
/// references the new version does not overwrite (they would point at the new object with the
/// old checksum, or read stale ranges).
async fn delete_stale_refs(
    store: &Store,
    profile: &ProductProfile,
    granules: &[GranuleRefs],
    plan: &BatchPlan,
) -> Result<(), DatasetError> {
    let grid = &profile.layout.grid;
    for &n in &plan.to_write {
        let g = &granules[n];
        if !matches!(plan.outcomes[n].1, GranuleOutcome::Replaced { .. }) {
            continue;
        }
        for var in &profile.layout.variables {
            let path = array_path(&var.name)?;
            let new: HashSet<[u64; 3]> = g
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
    Ok(())
}

/// Writes the references of the granules at positions `to_write`, one call per variable.
async fn write_refs(
    store: &Store,
    profile: &ProductProfile,
    granules: &[GranuleRefs],
    to_write: &[usize],
) -> Result<(), DatasetError> {
    for var in &profile.layout.variables {
        let path = array_path(&var.name)?;
        let mut refs = Vec::with_capacity(to_write.len() * 25);
        for &n in to_write {
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
    Ok(())
}

/// Commits a prepared session on `branch` and returns the new snapshot id. A branch that moved
/// since the session started means a second writer: [`DatasetError::SecondWriter`].
pub(crate) async fn commit(pending: PendingCommit, branch: &str) -> Result<String, DatasetError> {
    let PendingCommit {
        store,
        message,
        properties,
    } = pending;
    let session = store.session();
    let mut s = session.write().await;
    let expected = s.snapshot_id().to_string();
    imerg_crashpoint::reached(imerg_crashpoint::DURING_COMMIT);
    let result = s
        .commit(message)
        .properties(properties)
        .max_concurrent_nodes(8)
        .execute()
        .await;
    match result {
        Ok(id) => Ok(id.to_string()),
        Err(e) => match e.kind() {
            SessionErrorKind::Conflict {
                expected_parent,
                actual_parent,
            } => Err(DatasetError::SecondWriter {
                branch: branch.to_string(),
                expected: expected_parent.as_ref().map_or(expected, |p| p.to_string()),
                actual: actual_parent
                    .as_ref()
                    .map_or_else(|| "?".into(), |p| p.to_string()),
            }),
            _ => Err(DatasetError::ic(e)),
        },
    }
}
