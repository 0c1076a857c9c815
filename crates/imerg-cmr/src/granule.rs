//! One granule of a CMR search, and the parsing of a `granules.umm_json` page into granules.
//!
//! Parsing is strict where the sweep depends on it (the page is JSON with an `items` array,
//! every item has a string `umm.GranuleUR`) and lenient elsewhere: an optional field of an
//! unexpected shape is treated as absent rather than failing the whole page.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

/// UMM-G `RelatedUrls` types that point at the granule's data file.
const DATA_URL_TYPES: [&str; 2] = ["GET DATA", "GET DATA VIA DIRECT ACCESS"];

/// A granule CMR holds, reduced to what reconciliation needs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CmrGranule {
    /// `umm.GranuleUR`, unique within the provider (GES DISC uses
    /// `GPM_3IMERGHH.07:3B-HHR.MS.MRG…V07B.HDF5`).
    pub granule_ur: String,
    /// `umm.DataGranule.Identifiers[IdentifierType = "ProducerGranuleId"].Identifier`, when
    /// present (usually the file name).
    pub producer_granule_id: Option<String>,
    /// `meta.concept-id` (`G…-GES_DISC`).
    pub concept_id: Option<String>,
    /// `meta.revision-id`: with the granule UR, the idempotency key of an update.
    pub revision_id: Option<u64>,
    /// `umm.TemporalExtent.RangeDateTime.BeginningDateTime` (or `SingleDateTimeValue`), when
    /// present and RFC 3339. CMR's `temporal` matches granules *overlapping* the window, so
    /// this may lie slightly before the window's start.
    pub temporal_start: Option<DateTime<Utc>>,
    /// `s3://` data URLs (`RelatedUrls` of type "GET DATA VIA DIRECT ACCESS" or "GET DATA"),
    /// in CMR's order.
    pub s3_urls: Vec<String>,
    /// `https://` data URLs of the same types, in CMR's order.
    pub https_urls: Vec<String>,
}

impl CmrGranule {
    /// Every data URL, S3 first: each one is a candidate for the catalog's
    /// `ProductProfile::parse_any`.
    pub fn data_urls(&self) -> impl Iterator<Item = &str> {
        self.s3_urls
            .iter()
            .chain(&self.https_urls)
            .map(String::as_str)
    }
}

/// A parsed page: its granules and the body's `hits` (total matches), when present.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) granules: Vec<CmrGranule>,
    pub(crate) hits: Option<u64>,
}

#[derive(Deserialize)]
struct RawPage {
    #[serde(default)]
    hits: Value,
    items: Vec<RawItem>,
}

#[derive(Deserialize)]
struct RawItem {
    #[serde(default)]
    meta: Value,
    umm: RawUmm,
}

#[derive(Deserialize)]
struct RawUmm {
    #[serde(rename = "GranuleUR")]
    granule_ur: String,
    #[serde(rename = "DataGranule", default)]
    data_granule: Value,
    #[serde(rename = "TemporalExtent", default)]
    temporal_extent: Value,
    #[serde(rename = "RelatedUrls", default)]
    related_urls: Value,
}

/// Parses one `granules.umm_json` body. The error is a parser message (never the body).
pub(crate) fn parse_page(body: &[u8]) -> Result<Page, String> {
    let raw: RawPage = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let granules = raw.items.into_iter().map(granule).collect();
    Ok(Page {
        granules,
        hits: raw.hits.as_u64(),
    })
}

fn granule(item: RawItem) -> CmrGranule {
    let umm = item.umm;
    let producer_granule_id = umm
        .data_granule
        .get("Identifiers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|id| id.get("IdentifierType").and_then(Value::as_str) == Some("ProducerGranuleId"))
        .and_then(|id| id.get("Identifier"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let temporal_start = umm
        .temporal_extent
        .pointer("/RangeDateTime/BeginningDateTime")
        .or_else(|| umm.temporal_extent.get("SingleDateTimeValue"))
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc));
    let mut s3_urls = Vec::new();
    let mut https_urls = Vec::new();
    for related in umm.related_urls.as_array().into_iter().flatten() {
        let Some(kind) = related.get("Type").and_then(Value::as_str) else {
            continue;
        };
        if !DATA_URL_TYPES.contains(&kind) {
            continue;
        }
        let Some(url) = related.get("URL").and_then(Value::as_str) else {
            continue;
        };
        let list = if has_scheme(url, "s3://") {
            &mut s3_urls
        } else if has_scheme(url, "https://") {
            &mut https_urls
        } else {
            continue;
        };
        if !list.iter().any(|u| u == url) {
            list.push(url.to_owned());
        }
    }
    CmrGranule {
        granule_ur: umm.granule_ur,
        producer_granule_id,
        concept_id: item
            .meta
            .get("concept-id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        revision_id: item.meta.get("revision-id").and_then(Value::as_u64),
        temporal_start,
        s3_urls,
        https_urls,
    }
}

fn has_scheme(url: &str, scheme: &str) -> bool {
    url.get(..scheme.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const NAME: &str = "3B-HHR.MS.MRG.3IMERG.20240101-S000000-E002959.0000.V07B.HDF5";

    fn item() -> Value {
        serde_json::json!({
            "meta": {"concept-type": "granule", "concept-id": "G2900000001-GES_DISC",
                     "revision-id": 3, "native-id": format!("GPM_3IMERGHH.07:{NAME}"),
                     "provider-id": "GES_DISC"},
            "umm": {
                "GranuleUR": format!("GPM_3IMERGHH.07:{NAME}"),
                "TemporalExtent": {"RangeDateTime": {
                    "BeginningDateTime": "2024-01-01T00:00:00.000Z",
                    "EndingDateTime": "2024-01-01T00:29:59.999Z"}},
                "DataGranule": {"DayNightFlag": "Unspecified", "Identifiers": [
                    {"Identifier": "abc", "IdentifierType": "LocalVersionId"},
                    {"Identifier": NAME, "IdentifierType": "ProducerGranuleId"}]},
                "RelatedUrls": [
                    {"URL": format!("https://data.gesdisc.earthdata.nasa.gov/data/GPM_L3/GPM_3IMERGHH.07/2024/001/{NAME}"), "Type": "GET DATA"},
                    {"URL": format!("s3://gesdisc-cumulus-prod-protected/GPM_L3/GPM_3IMERGHH.07/2024/001/{NAME}"), "Type": "GET DATA VIA DIRECT ACCESS"},
                    {"URL": "https://gpm1.gesdisc.eosdis.nasa.gov/opendap/x", "Type": "USE SERVICE API"},
                    {"URL": "https://example.com/doc.pdf", "Type": "VIEW RELATED INFORMATION"},
                    {"URL": "ftp://old/x", "Type": "GET DATA"},
                    {"Type": "GET DATA"},
                    "not an object"
                ]
            }
        })
    }

    #[test]
    fn parses_a_ges_disc_item() {
        let body = serde_json::json!({"hits": 1, "took": 5, "items": [item()]}).to_string();
        let page = parse_page(body.as_bytes()).unwrap();
        assert_eq!(page.hits, Some(1));
        let g = &page.granules[0];
        assert_eq!(g.granule_ur, format!("GPM_3IMERGHH.07:{NAME}"));
        assert_eq!(g.producer_granule_id.as_deref(), Some(NAME));
        assert_eq!(g.concept_id.as_deref(), Some("G2900000001-GES_DISC"));
        assert_eq!(g.revision_id, Some(3));
        assert_eq!(
            g.temporal_start.unwrap().to_rfc3339(),
            "2024-01-01T00:00:00+00:00"
        );
        assert_eq!(g.s3_urls.len(), 1);
        assert!(g.s3_urls[0].starts_with("s3://gesdisc-cumulus-prod-protected/"));
        assert_eq!(g.https_urls.len(), 1);
        assert!(g.https_urls[0].ends_with(NAME));
        assert_eq!(g.data_urls().count(), 2);
        assert!(g.data_urls().next().unwrap().starts_with("s3://"));
    }

    #[test]
    fn optional_fields_of_odd_shapes_are_absent_not_errors() {
        let body = serde_json::json!({"items": [{
            "meta": "weird",
            "umm": {"GranuleUR": "g1", "TemporalExtent": {"RangeDateTime": {"BeginningDateTime": "yesterday"}},
                    "DataGranule": {"Identifiers": {"not": "a list"}}, "RelatedUrls": 7}
        }, {
            "umm": {"GranuleUR": "g2", "TemporalExtent": {"SingleDateTimeValue": "2024-01-01T00:30:00Z"}}
        }]})
        .to_string();
        let page = parse_page(body.as_bytes()).unwrap();
        assert_eq!(page.hits, None);
        let g = &page.granules[0];
        assert_eq!(g.granule_ur, "g1");
        assert_eq!(g.producer_granule_id, None);
        assert_eq!(g.concept_id, None);
        assert_eq!(g.temporal_start, None);
        assert!(g.s3_urls.is_empty() && g.https_urls.is_empty());
        assert!(page.granules[1].temporal_start.is_some());
    }

    #[test]
    fn structural_problems_are_errors() {
        for bad in [
            &b"<html>login</html>"[..],
            b"{\"items\": [",
            b"{\"errors\": [\"boom\"]}",
            b"{\"items\": null}",
            b"{\"items\": [{\"umm\": {}}]}",
            b"{\"items\": [{\"umm\": {\"GranuleUR\": 5}}]}",
            b"[]",
            b"",
        ] {
            assert!(parse_page(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
