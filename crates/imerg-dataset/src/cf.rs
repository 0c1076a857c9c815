//! CF attributes: what CF-aware tools (xarray, cf_xarray, netCDF writers, Panoply) expect on the
//! dataset and on each variable, besides the files' own attributes, which are kept. Provenance
//! is flat (strings and numbers only) so that `ds.to_netcdf()` can write every attribute.

use imerg_catalog::ProductProfile;
use serde_json::{Map, Value, json};

/// The CF version the attributes follow.
pub const CONVENTIONS: &str = "CF-1.10";

/// Who produces IMERG and who distributes the granules.
pub const INSTITUTION: &str = "NASA Goddard Space Flight Center, Precipitation Processing System \
    (PPS); granules distributed by the Goddard Earth Sciences Data and Information Services \
    Center (GES DISC)";

/// NASA's data policy, in the words a `license` attribute needs.
pub const LICENSE: &str = "NASA Earth science data are free and open, with no restriction on \
    use (https://www.earthdata.nasa.gov/engage/open-data-services-software-policies); please \
    cite the data set DOI in `references`";

/// How the dimensions are ordered and how to draw a map the right way up.
pub const ORDER_COMMENT: &str = "Data variables are (time, lon, lat), as in the IMERG files: \
    draw maps with lon across and lat up, e.g. \
    ds.precipitation.sel(time=t).plot(x=\"lon\", y=\"lat\") or .transpose(\"time\", \"lat\", \"lon\")";

/// Root group attributes besides the provenance (`imerg_*`) ones.
pub(crate) fn root_attributes(profile: &ProductProfile) -> Map<String, Value> {
    let source_url = format!("{}{}", profile.bucket_url, profile.collection_path);
    let references = match &profile.doi {
        Some(doi) => format!(
            "Huffman, G. J., et al.: {title}, Greenbelt, MD, Goddard Earth Sciences Data and \
             Information Services Center (GES DISC), https://doi.org/{doi}",
            title = profile.title
        ),
        None => format!("{} (no DOI in the product profile)", profile.title),
    };
    let mut a = Map::new();
    a.insert("title".into(), json!(profile.title));
    a.insert("institution".into(), json!(INSTITUTION));
    a.insert(
        "source".into(),
        json!(format!(
            "GPM IMERG V07 half-hourly HDF5 granules at {source_url}, read in place through \
             virtual chunk references"
        )),
    );
    a.insert("references".into(), json!(references));
    if let Some(doi) = &profile.doi {
        a.insert("doi".into(), json!(doi));
    }
    a.insert("license".into(), json!(LICENSE));
    a.insert(
        "history".into(),
        json!(format!(
            "imerg-ingest {}: virtual references to the source granules, one time step per \
             granule at the position its start time gives it",
            env!("CARGO_PKG_VERSION")
        )),
    );
    a.insert("Conventions".into(), json!(CONVENTIONS));
    a.insert("comment".into(), json!(ORDER_COMMENT));
    a.insert(
        "time_coverage_note".into(),
        json!(
            "time is a regular axis from the product's first granule; data variables are NaN \
             and granule_present is 0 where a granule is missing"
        ),
    );
    a.insert("product_id".into(), json!(profile.id));
    a
}

/// A unit string in UDUNITS form: the files' `mm/hr` becomes `mm h-1` (`hr` is not a UDUNITS
/// symbol everywhere); anything else is kept.
pub fn udunits(units: &str) -> String {
    match units.trim() {
        "mm/hr" | "mm/h" | "mm hr-1" | "mm hr^-1" => "mm h-1".into(),
        "%" => "percent".into(),
        other => other.into(),
    }
}

/// CF standard name of an IMERG variable, where CF has one.
fn standard_name(variable: &str) -> Option<&'static str> {
    match variable {
        "precipitation" | "precipitationUncal" | "IRprecipitation" | "MWprecipitation" => {
            Some("lwe_precipitation_rate")
        }
        // A standard-name modifier: the standard error of the estimate.
        "randomError" => Some("lwe_precipitation_rate standard_error"),
        _ => None,
    }
}

/// Adds CF attributes to a data variable's own (`long_name` from `LongName`, `units` in UDUNITS
/// form, `standard_name` where CF has one); the file's attributes stay as they are.
pub(crate) fn add_variable_attributes(variable: &str, attrs: &mut Map<String, Value>) {
    if !attrs.contains_key("long_name") {
        let long = attrs
            .get("LongName")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| variable.to_string());
        attrs.insert("long_name".into(), json!(long));
    }
    let units = attrs
        .get("units")
        .or_else(|| attrs.get("Units"))
        .and_then(Value::as_str)
        .map(udunits);
    if let Some(u) = units {
        attrs.insert("units".into(), json!(u));
    }
    if let Some(name) = standard_name(variable) {
        attrs.insert("standard_name".into(), json!(name));
    }
}

/// Adds `long_name` to a coordinate (`lat`, `lon`, `time` and their bounds) that lacks one.
pub(crate) fn add_coordinate_attributes(name: &str, attrs: &mut Map<String, Value>) {
    let long = match name {
        "lat" => "latitude",
        "lon" => "longitude",
        "time" => "start time of the half-hour granule",
        "lat_bnds" => "latitude bounds",
        "lon_bnds" => "longitude bounds",
        "time_bnds" => "time bounds of the half-hour granule",
        _ => return,
    };
    attrs
        .entry("long_name")
        .or_insert_with(|| json!(long.to_string()));
}

/// Adds the CF attributes to an array's `zarr.json` (`attributes` of a data variable or a
/// coordinate); arrays that have them already are unchanged.
pub(crate) fn add_to_array_metadata(name: &str, meta: &mut Value, is_variable: bool) {
    if let Some(attrs) = meta.get_mut("attributes").and_then(|a| a.as_object_mut()) {
        if is_variable {
            add_variable_attributes(name, attrs);
        } else {
            add_coordinate_attributes(name, attrs);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn precipitation_gets_a_standard_name_and_udunits() {
        let mut a = Map::new();
        a.insert("Units".into(), json!("mm/hr"));
        a.insert("units".into(), json!("mm/hr"));
        a.insert(
            "LongName".into(),
            json!("Merged satellite-gauge precipitation estimate"),
        );
        add_variable_attributes("precipitation", &mut a);
        assert_eq!(a["standard_name"], "lwe_precipitation_rate");
        assert_eq!(a["units"], "mm h-1");
        assert_eq!(a["Units"], "mm/hr", "the file's own attribute is kept");
        assert_eq!(
            a["long_name"],
            "Merged satellite-gauge precipitation estimate"
        );

        let mut q = Map::new();
        q.insert("units".into(), json!("1"));
        add_variable_attributes("precipitationQualityIndex", &mut q);
        assert_eq!(q.get("standard_name"), None, "no CF standard name exists");
        assert_eq!(q["long_name"], "precipitationQualityIndex");
        assert_eq!(q["units"], "1");
    }

    #[test]
    fn root_attributes_are_flat_and_cite_the_doi() {
        for p in [
            ProductProfile::final_v07b(),
            ProductProfile::late_v07(),
            ProductProfile::early_v07(),
        ] {
            let a = root_attributes(&p);
            for (k, v) in &a {
                assert!(v.is_string(), "{k} is not a string: {v}");
            }
            let doi = p.doi.clone().unwrap();
            assert!(a["references"].as_str().unwrap().contains(&doi));
            for k in ["title", "institution", "source", "license", "history"] {
                assert!(a.contains_key(k), "{} lacks {k}", p.id);
            }
            assert_eq!(a["Conventions"], CONVENTIONS);
        }
    }
}
