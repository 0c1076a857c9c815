//! Typed reads and writes of the store's keys: JSON metadata, gzip chunks, the root group's
//! layout and time units, the length of the time axis, and `granule_present`.

use std::collections::BTreeMap;

use icechunk::Store;
use icechunk::format::{ByteRange, Path};
use icechunk::session::SessionErrorKind;
use imerg_catalog::ProductProfile;
use imerg_refs::{Layout, TimeUnits};
use serde_json::Value;

use crate::DatasetError;
use crate::arrays::{self, ATTR_FINGERPRINT, ATTR_LAYOUT, ATTR_TIME_UNITS, PRESENT, TIME_CHUNK};

/// The Icechunk path of a top-level array.
pub(crate) fn array_path(name: &str) -> Result<Path, DatasetError> {
    Path::new(&format!("/{name}")).map_err(DatasetError::ic)
}

/// A key that is absent, or whose array does not exist yet.
pub fn is_not_found(e: &icechunk::store::StoreError) -> bool {
    use icechunk::store::StoreErrorKind;
    matches!(
        e.kind(),
        StoreErrorKind::NotFound(_)
            | StoreErrorKind::SessionError(SessionErrorKind::NodeNotFound { .. })
    )
}

pub(crate) async fn get_json(store: &Store, key: &str) -> Result<Option<Value>, DatasetError> {
    match store.get(key, &ByteRange::ALL).await {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| DatasetError::Inconsistent(format!("{key}: {e}"))),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(DatasetError::ic(e)),
    }
}

pub(crate) async fn set_json(store: &Store, key: &str, v: &Value) -> Result<(), DatasetError> {
    let bytes = serde_json::to_vec(v).map_err(|e| DatasetError::Inconsistent(e.to_string()))?;
    set(store, key, bytes).await
}

pub(crate) async fn set(store: &Store, key: &str, bytes: Vec<u8>) -> Result<(), DatasetError> {
    store.set(key, bytes.into()).await.map_err(DatasetError::ic)
}

/// A gzip-encoded chunk, decoded; `None` if it was never written.
pub(crate) async fn get_chunk(store: &Store, key: &str) -> Result<Option<Vec<u8>>, DatasetError> {
    match store.get(key, &ByteRange::ALL).await {
        Ok(b) => arrays::gunzip(&b).map(Some),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(DatasetError::ic(e)),
    }
}

/// What the root group says about an initialized dataset.
#[derive(Debug, Clone)]
pub(crate) struct RootInfo {
    /// The layout every granule must match, and its fingerprint.
    pub layout: Layout,
    pub fingerprint: String,
    pub time_units: TimeUnits,
}

/// The dataset's layout and time units, if it has been initialized.
pub(crate) async fn root_info(store: &Store) -> Result<Option<RootInfo>, DatasetError> {
    let Some(root) = get_json(store, "zarr.json").await? else {
        return Ok(None);
    };
    let attrs = &root["attributes"];
    // JSON text since the attributes became flat; an object in stores written before.
    let layout: Layout = match &attrs[ATTR_LAYOUT] {
        serde_json::Value::String(text) => serde_json::from_str(text),
        other => serde_json::from_value(other.clone()),
    }
    .map_err(|e| DatasetError::Inconsistent(format!("root layout attribute: {e}")))?;
    let fingerprint = attrs[ATTR_FINGERPRINT]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let time_units = TimeUnits::parse(attrs[ATTR_TIME_UNITS].as_str().unwrap_or_default())
        .map_err(|e| DatasetError::Inconsistent(e.to_string()))?;
    Ok(Some(RootInfo {
        layout,
        fingerprint,
        time_units,
    }))
}

/// Length of the time axis: the time dimension of the profile's first variable (0 before the
/// first batch).
pub(crate) async fn time_len(store: &Store, profile: &ProductProfile) -> Result<u64, DatasetError> {
    let Some(first) = profile.layout.variables.first() else {
        return Err(DatasetError::Config("profile has no variables".into()));
    };
    match get_json(store, &format!("{}/zarr.json", first.name)).await? {
        Some(m) => Ok(arrays::shape_of(&m)?.first().copied().unwrap_or(0)),
        None => Ok(0),
    }
}

/// Decoded `granule_present` chunks (one byte per time step, `TIME_CHUNK` steps each), by chunk
/// index.
#[derive(Debug, Default)]
pub(crate) struct Presence(BTreeMap<u64, Vec<u8>>);

impl Presence {
    /// Reads the chunks holding `time_indices`; a chunk never written reads as all zeros.
    pub(crate) async fn read(
        store: &Store,
        time_indices: impl IntoIterator<Item = u64>,
    ) -> Result<Self, DatasetError> {
        let mut chunks: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for t in time_indices {
            let k = t / TIME_CHUNK;
            if let std::collections::btree_map::Entry::Vacant(e) = chunks.entry(k) {
                let mut raw = get_chunk(store, &format!("{PRESENT}/c/{k}"))
                    .await?
                    .unwrap_or_default();
                raw.resize(TIME_CHUNK as usize, 0);
                e.insert(raw);
            }
        }
        Ok(Self(chunks))
    }

    /// Whether time index `t` holds a granule (false if its chunk was not read).
    pub(crate) fn contains(&self, t: u64) -> bool {
        self.0
            .get(&(t / TIME_CHUNK))
            .and_then(|c| c.get((t % TIME_CHUNK) as usize))
            .is_some_and(|flag| *flag != 0)
    }

    /// Marks time index `t` present (if its chunk was read).
    pub(crate) fn insert(&mut self, t: u64) {
        if let Some(flag) = self
            .0
            .get_mut(&(t / TIME_CHUNK))
            .and_then(|c| c.get_mut((t % TIME_CHUNK) as usize))
        {
            *flag = 1;
        }
    }

    /// Writes back every chunk read.
    pub(crate) async fn write(&self, store: &Store) -> Result<(), DatasetError> {
        for (k, raw) in &self.0 {
            set(store, &format!("{PRESENT}/c/{k}"), arrays::gzip(raw)).await?;
        }
        Ok(())
    }
}
