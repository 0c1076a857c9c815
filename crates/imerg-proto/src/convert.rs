//! Conversions between the wire messages and the Rust model (timestamps, granule references).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use imerg_refs::{ChunkRef, GranuleRefs, VariableRefs};

use crate::internal;

/// A message that does not hold a valid granule.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("field {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

pub fn to_timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn from_timestamp(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(t.seconds, u32::try_from(t.nanos).ok()?)
        .single()
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

pub fn granule_to_proto(g: &GranuleRefs) -> internal::v1::GranuleRefs {
    internal::v1::GranuleRefs {
        key: g.key.clone(),
        product: g.product.clone(),
        start: Some(to_timestamp(g.start)),
        time_index: g.time_index,
        etag: g.etag.clone(),
        url: g.url.clone(),
        size: g.size,
        fingerprint: g.fingerprint.clone(),
        variables: g
            .variables
            .iter()
            .map(|(name, v)| internal::v1::VariableRefs {
                name: name.clone(),
                zarr_json: v.zarr.to_string(),
                refs: v
                    .refs
                    .iter()
                    .map(|r| internal::v1::ChunkRef {
                        chunk: r.chunk.to_vec(),
                        offset: r.offset,
                        length: r.length,
                    })
                    .collect(),
            })
            .collect(),
        coords_json: json(&g.coords),
        layout_json: json(&g.layout),
        last_modified: g.last_modified.map(to_timestamp),
    }
}

pub fn granule_from_proto(p: &internal::v1::GranuleRefs) -> Result<GranuleRefs, ConvertError> {
    let invalid = |field: &'static str, e: serde_json::Error| ConvertError::Invalid {
        field,
        reason: e.to_string(),
    };
    let start = p
        .start
        .as_ref()
        .and_then(from_timestamp)
        .ok_or(ConvertError::Missing("start"))?;
    let mut variables = BTreeMap::new();
    for v in &p.variables {
        let refs = v
            .refs
            .iter()
            .map(|r| {
                let chunk: [u64; 3] =
                    r.chunk
                        .clone()
                        .try_into()
                        .map_err(|_| ConvertError::Invalid {
                            field: "variables.refs.chunk",
                            reason: format!("{} indices, expected 3", r.chunk.len()),
                        })?;
                Ok(ChunkRef {
                    chunk,
                    offset: r.offset,
                    length: r.length,
                })
            })
            .collect::<Result<Vec<_>, ConvertError>>()?;
        variables.insert(
            v.name.clone(),
            VariableRefs {
                zarr: serde_json::from_str(&v.zarr_json)
                    .map_err(|e| invalid("variables.zarr_json", e))?,
                refs,
            },
        );
    }
    Ok(GranuleRefs {
        key: p.key.clone(),
        url: p.url.clone(),
        product: p.product.clone(),
        start,
        time_index: p.time_index,
        etag: p.etag.clone(),
        last_modified: p.last_modified.as_ref().and_then(from_timestamp),
        size: p.size,
        variables,
        coords: serde_json::from_str(&p.coords_json).map_err(|e| invalid("coords_json", e))?,
        layout: serde_json::from_str(&p.layout_json).map_err(|e| invalid("layout_json", e))?,
        fingerprint: p.fingerprint.clone(),
    })
}
