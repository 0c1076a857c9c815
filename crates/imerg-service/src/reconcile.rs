//! The reconciliation sweep's inventory: CMR's granule search for the product's collection (its
//! short name and version from the profile), answering with the granules' data URLs.

use std::sync::Arc;

use imerg_catalog::ProductProfile;

use crate::Settings;

/// CMR's granule search as the sweep's inventory: the data URLs of the product's granules.
#[derive(Debug)]
struct CmrInventory(imerg_cmr::CmrClient);

#[async_trait::async_trait]
impl imerg_listener::Inventory for CmrInventory {
    async fn references(&self, range: imerg_catalog::TimeRange) -> Result<Vec<String>, String> {
        // CMR's temporal range is inclusive: stop a second before the window's end.
        let end = range.end - chrono::Duration::seconds(1);
        let granules = self
            .0
            .granules(range.start, end)
            .await
            .map_err(|e| e.to_string())?;
        Ok(granules
            .iter()
            .flat_map(|g| {
                g.data_urls()
                    .map(String::from)
                    .chain(g.producer_granule_id.clone())
                    .chain(std::iter::once(g.granule_ur.clone()))
            })
            .collect())
    }

    fn name(&self) -> &str {
        "CMR"
    }
}

/// The CMR inventory the sweep asks, when `--cmr-url` is given: the collection's short name and
/// version come from the profile's collection path (`GPM_L3/GPM_3IMERGHHL.07` -> `GPM_3IMERGHHL`,
/// `07`).
pub(crate) fn inventory(
    settings: &Settings,
    profile: &ProductProfile,
    token: Option<&str>,
) -> Option<Arc<dyn imerg_listener::Inventory>> {
    let url = settings.cmr_url.as_ref()?;
    let collection = profile.collection_path.rsplit('/').next()?;
    let (short_name, version) = collection.rsplit_once('.')?;
    let mut cfg = imerg_cmr::CmrConfig::new(short_name, version).with_url(url.clone());
    if let Some(t) = token {
        cfg = cfg.with_token(t);
    }
    match imerg_cmr::CmrClient::new(cfg) {
        Ok(c) => Some(Arc::new(CmrInventory(c))),
        Err(e) => {
            tracing::warn!(error = %e, "the CMR client could not be built: the sweep lists the source only");
            None
        }
    }
}
