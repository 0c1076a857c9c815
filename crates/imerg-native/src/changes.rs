//! Which time steps the virtual store changed between two snapshots: Icechunk's diff of the
//! transaction logs, every chunk of a `(time, lon, lat)` array naming its time index. That
//! covers new granules, late ones and replaced ones (re-pointed references) alike. When the diff
//! cannot be made (the older snapshot was expired away), the caller re-applies every present
//! step instead: slower, never wrong.

use std::collections::BTreeSet;

use icechunk::format::SnapshotId;
use icechunk::repository::VersionInfo;
use imerg_dataset::Dataset;

use crate::NativeError;

fn snapshot(id: &str) -> Result<VersionInfo, NativeError> {
    SnapshotId::try_from(id)
        .map(VersionInfo::SnapshotId)
        .map_err(|e| NativeError::Config(format!("snapshot id {id:?}: {e}")))
}

/// The time steps whose data chunks changed from `from` to `to` (`from` excluded), or None if
/// Icechunk cannot diff them.
pub async fn changed_steps(
    virt: &Dataset,
    from: &str,
    to: &str,
) -> Result<Option<BTreeSet<u64>>, NativeError> {
    if from == to {
        return Ok(Some(BTreeSet::new()));
    }
    let diff = match virt
        .repository()
        .diff(&snapshot(from)?, &snapshot(to)?)
        .await
    {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(%from, %to, error = %e, "cannot diff the virtual snapshots: every present step is re-applied");
            return Ok(None);
        }
    };
    Ok(Some(
        diff.updated_chunks
            .values()
            .flatten()
            .filter(|c| c.0.len() == 3)
            .filter_map(|c| c.0.first().map(|t| u64::from(*t)))
            .collect(),
    ))
}

/// Every time step holding a granule in the virtual store at `snapshot`, in `[from, to)`.
pub async fn present_steps(
    virt: &Dataset,
    snapshot: &str,
    from: u64,
    to: u64,
) -> Result<BTreeSet<u64>, NativeError> {
    let store = virt.store_at(snapshot).await?;
    Ok(virt.present_in_store(&store, from, to).await?)
}
