//! What each commit records about its batch (batch id, its granules or a digest of them, outcome
//! counts, time length), and the search of the branch's history for a batch id.

use std::collections::BTreeMap;

use futures::TryStreamExt as _;
use icechunk::Repository;
use icechunk::format::snapshot::SnapshotProperties;
use icechunk::repository::VersionInfo;
use imerg_catalog::ProductProfile;
use imerg_refs::GranuleRefs;
use serde_json::{Value, json};

use crate::batch::BatchPlan;
use crate::{DatasetError, GranuleOutcome};

/// The commit property holding the batch id.
const PROP_BATCH_ID: &str = "imerg_batch_id";

/// Batches up to this many granules list every granule (key, ETag, outcome) in the commit's
/// properties; larger ones (backfill) record time-index ranges, the first and last key and a
/// digest of the keys and ETags instead. Every snapshot's properties live in the repository's
/// info object, which each commit rewrites, so per-commit metadata must stay small; the ETag of
/// every granule is in its references anyway.
pub const LIST_GRANULES_UP_TO: usize = 64;

/// The commit message and properties of a planned batch that writes something.
pub(crate) fn commit_properties(
    profile: &ProductProfile,
    granules: &[GranuleRefs],
    plan: &BatchPlan,
    batch_id: &str,
) -> (String, SnapshotProperties) {
    let written = granule_properties(granules, &plan.to_write, &plan.outcomes);
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, o) in &plan.outcomes {
        *counts.entry(o.label()).or_default() += 1;
    }
    let mut props = SnapshotProperties::new();
    props.insert(PROP_BATCH_ID.into(), json!(batch_id));
    props.insert("imerg_granules".into(), written);
    props.insert("imerg_counts".into(), json!(counts));
    props.insert("imerg_time_len".into(), json!(plan.new_len));
    let first = plan.to_write.first().map(|&n| &granules[n]);
    let message = format!(
        "imerg-ingest: {} granule(s) of {} from {}",
        plan.to_write.len(),
        profile.id,
        first
            .map(|g| { g.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true) })
            .unwrap_or_default()
    );
    (message, props)
}

/// The written granules (positions `written` in the batch): listed one by one up to
/// [`LIST_GRANULES_UP_TO`], else summarised.
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

/// The snapshot that recorded `batch_id` among the newest `depth` commits of `branch`.
pub(crate) async fn find_batch(
    repo: &Repository,
    branch: &str,
    batch_id: &str,
    depth: usize,
) -> Result<Option<String>, DatasetError> {
    let mut stream = std::pin::pin!(
        repo.ancestry(&VersionInfo::BranchTipRef(branch.to_string()))
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
