//! Brings the metadata of a store written by an earlier version up to the current attributes
//! (CF-1.10 on the root group and every array, provenance as JSON text), in one commit of its
//! own, at the committer's start. References, coordinates and chunks are untouched; a store that
//! is current is left alone (no commit).

use serde_json::{Value, json};

use crate::arrays::{self, ATTR_LAYOUT};
use crate::batch::{PendingCommit, commit};
use crate::{Dataset, DatasetError, cf, store_io};

/// Coordinates that get a `long_name`.
const COORDS: [&str; 6] = ["time", "time_bnds", "lat", "lon", "lat_bnds", "lon_bnds"];

/// Is the root group's metadata current (flat provenance, the current CF version)?
fn is_current(root: &Value) -> bool {
    let a = &root["attributes"];
    a[ATTR_LAYOUT].is_string() && a["Conventions"] == json!(cf::CONVENTIONS)
}

impl Dataset {
    /// Rewrites the root group's and every array's attributes to the current form if the store
    /// predates it; returns the snapshot of that commit, or None when nothing needed changing.
    pub async fn upgrade_attributes(&self) -> Result<Option<String>, DatasetError> {
        let store = self.writable_store().await?;
        let Some(root) = store_io::get_json(&store, "zarr.json").await? else {
            return Ok(None);
        };
        if is_current(&root) {
            return Ok(None);
        }
        let Some(info) = store_io::root_info(&store).await? else {
            return Ok(None);
        };
        let time_units = root["attributes"][arrays::ATTR_TIME_UNITS]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut new_root =
            arrays::root_metadata(&self.config().profile, &info.layout, &time_units)?;
        // Attributes the current version does not write (an operator's own) stay.
        if let (Some(old), Some(new)) = (
            root["attributes"].as_object(),
            new_root["attributes"].as_object_mut(),
        ) {
            for (k, v) in old {
                new.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        store_io::set_json(&store, "zarr.json", &new_root).await?;
        let variables = self
            .config()
            .profile
            .layout
            .variables
            .iter()
            .map(|v| (v.name.as_str(), true));
        let coords = COORDS.iter().map(|c| (*c, false));
        for (name, is_variable) in variables.chain(coords) {
            let key = format!("{name}/zarr.json");
            if let Some(mut meta) = store_io::get_json(&store, &key).await? {
                let before = meta.clone();
                cf::add_to_array_metadata(name, &mut meta, is_variable);
                if meta != before {
                    store_io::set_json(&store, &key, &meta).await?;
                }
            }
        }
        let mut properties = icechunk::format::snapshot::SnapshotProperties::new();
        properties.insert("imerg_attributes".into(), json!(cf::CONVENTIONS));
        let snapshot = commit(
            PendingCommit {
                store,
                message: format!("imerg-ingest: attributes upgraded to {}", cf::CONVENTIONS),
                properties,
            },
            &self.config().branch,
        )
        .await?;
        Ok(Some(snapshot))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::test_support::{granule, open, shifted};

    /// A store as the previous version wrote it: provenance as nested objects, CF-1.8, data
    /// variables with the files' attributes only.
    async fn make_legacy(ds: &Dataset) {
        let store = ds.writable_store().await.unwrap();
        let mut root = store_io::get_json(&store, "zarr.json")
            .await
            .unwrap()
            .unwrap();
        let a = root["attributes"].as_object_mut().unwrap();
        for k in [ATTR_LAYOUT, arrays::ATTR_PRODUCT] {
            let text = a[k].as_str().unwrap().to_string();
            a.insert(k.into(), serde_json::from_str(&text).unwrap());
        }
        a.insert("Conventions".into(), json!("CF-1.8"));
        a.insert("operator_note".into(), json!("kept"));
        for k in ["institution", "references", "license", "doi", "comment"] {
            a.remove(k);
        }
        store_io::set_json(&store, "zarr.json", &root)
            .await
            .unwrap();
        let mut p = store_io::get_json(&store, "precipitation/zarr.json")
            .await
            .unwrap()
            .unwrap();
        let attrs = p["attributes"].as_object_mut().unwrap();
        attrs.remove("standard_name");
        attrs.remove("long_name");
        attrs.insert("units".into(), json!("mm/hr"));
        store_io::set_json(&store, "precipitation/zarr.json", &p)
            .await
            .unwrap();
        commit(
            PendingCommit {
                store,
                message: "legacy".into(),
                properties: Default::default(),
            },
            &ds.config().branch,
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_store_of_the_previous_version_is_upgraded_once_and_keeps_ingesting() {
        let dir = tempfile::tempdir().unwrap();
        let (src, repo) = (dir.path().join("src"), dir.path().join("repo"));
        let ds = open(&repo, &src).await;
        assert_eq!(ds.upgrade_attributes().await.unwrap(), None, "empty store");
        let g = granule(&src, "2020-01-01T00:00:00Z");
        ds.commit_batch(std::slice::from_ref(&g), "b1")
            .await
            .unwrap();
        assert_eq!(
            ds.upgrade_attributes().await.unwrap(),
            None,
            "current store"
        );

        make_legacy(&ds).await;
        let snapshot = ds.upgrade_attributes().await.unwrap().expect("upgraded");
        assert_eq!(ds.branch_tip().await.unwrap(), snapshot);
        let store = ds.read_store().await.unwrap();
        let root = store_io::get_json(&store, "zarr.json")
            .await
            .unwrap()
            .unwrap();
        let a = &root["attributes"];
        assert!(is_current(&root), "{a}");
        assert_eq!(a["operator_note"], "kept");
        assert!(
            a["references"]
                .as_str()
                .unwrap()
                .contains("10.5067/GPM/IMERG/3B-HH/07")
        );
        let p = store_io::get_json(&store, "precipitation/zarr.json")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p["attributes"]["standard_name"], "lwe_precipitation_rate");
        assert_eq!(p["attributes"]["units"], "mm h-1");
        assert_eq!(ds.upgrade_attributes().await.unwrap(), None, "only once");

        // The layout still matches: the next granule lands.
        let next = ds
            .commit_batch(&[shifted(&g, 1, &src)], "b2")
            .await
            .unwrap();
        assert!(next.committed);
        assert_eq!(ds.present_in(0, u64::MAX).await.unwrap().len(), 2);
    }
}
