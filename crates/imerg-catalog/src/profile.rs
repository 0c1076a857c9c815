//! Product profiles and granule identities: time <-> key <-> URL <-> time index, in both directions,
//! and the list of expected granules for a time range.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::{CatalogError, LayoutSpec};

/// A version label used in file names, from a given time on (`since` = None: from the start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionLabel {
    pub label: String,
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
}

/// Everything that distinguishes one IMERG product from another. Pure configuration: load one from
/// JSON with [`ProductProfile::from_json`] or take a built-in with [`ProductProfile::builtin`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductProfile {
    /// Short id used on the command line and in the store (`final`, `late`, `early`).
    pub id: String,
    pub title: String,
    /// Bucket (or any root) the collection lives under, ending in `/`.
    pub bucket_url: String,
    /// Collection path inside the bucket, e.g. `GPM_L3/GPM_3IMERGHH.07`.
    pub collection_path: String,
    /// File name prefix before the date, e.g. `3B-HHR.MS.MRG.3IMERG`.
    pub file_prefix: String,
    /// Version labels in file names; the last one whose `since` is not after a granule's start
    /// names it. Parsing accepts any of them.
    pub versions: Vec<VersionLabel>,
    /// File extension without the dot (`HDF5`, `RT-H5`).
    pub extension: String,
    /// Start of the first granule: time index 0.
    pub first_granule: DateTime<Utc>,
    /// End of the record (exclusive), if production has ended.
    #[serde(default)]
    pub record_end: Option<DateTime<Utc>>,
    pub cadence_minutes: u32,
    pub layout: LayoutSpec,
}

/// One granule of a product: where it is and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GranuleId {
    pub product: String,
    pub start: DateTime<Utc>,
    /// Position along `time` in the dataset: (start - first_granule) / cadence.
    pub time_index: u64,
    /// Object key relative to the bucket: `GPM_L3/GPM_3IMERGHH.07/YYYY/DDD/<name>`.
    pub key: String,
}

/// A half-open time range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl TimeRange {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Self, CatalogError> {
        if end < start {
            return Err(CatalogError::EmptyRange { start, end });
        }
        Ok(Self { start, end })
    }
}

fn utc(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    // The built-in dates are valid calendar dates; fall back to the epoch rather than panic.
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

impl ProductProfile {
    /// Final run, half-hourly, V07B: the built-in default.
    pub fn final_v07b() -> Self {
        Self {
            id: "final".into(),
            title:
                "GPM IMERG Final Precipitation L3 Half Hourly 0.1 x 0.1 degree V07 (GPM_3IMERGHH)"
                    .into(),
            bucket_url: "s3://gesdisc-cumulus-prod-protected/".into(),
            collection_path: "GPM_L3/GPM_3IMERGHH.07".into(),
            file_prefix: "3B-HHR.MS.MRG.3IMERG".into(),
            versions: vec![VersionLabel {
                label: "V07B".into(),
                since: None,
            }],
            extension: "HDF5".into(),
            first_granule: utc(1998, 1, 1),
            record_end: Some(utc(2025, 10, 1)),
            cadence_minutes: 30,
            layout: LayoutSpec::imerg_v07(),
        }
    }

    /// Late run (near real time). The extension, start date and the V07C switch date are not
    /// verified against real files: override with a profile file when they are.
    pub fn late_v07() -> Self {
        Self {
            id: "late".into(),
            title:
                "GPM IMERG Late Precipitation L3 Half Hourly 0.1 x 0.1 degree V07 (GPM_3IMERGHHL)"
                    .into(),
            collection_path: "GPM_L3/GPM_3IMERGHHL.07".into(),
            file_prefix: "3B-HHR-L.MS.MRG.3IMERG".into(),
            versions: vec![
                VersionLabel {
                    label: "V07B".into(),
                    since: None,
                },
                VersionLabel {
                    label: "V07C".into(),
                    since: Some(utc(2026, 3, 1)),
                },
            ],
            extension: "RT-H5".into(),
            record_end: None,
            ..Self::final_v07b()
        }
    }

    /// Early run (near real time); same caveats as [`ProductProfile::late_v07`].
    pub fn early_v07() -> Self {
        Self {
            id: "early".into(),
            title:
                "GPM IMERG Early Precipitation L3 Half Hourly 0.1 x 0.1 degree V07 (GPM_3IMERGHHE)"
                    .into(),
            collection_path: "GPM_L3/GPM_3IMERGHHE.07".into(),
            file_prefix: "3B-HHR-E.MS.MRG.3IMERG".into(),
            ..Self::late_v07()
        }
    }

    /// A built-in profile by id: `final`, `late` or `early`.
    pub fn builtin(id: &str) -> Result<Self, CatalogError> {
        match id {
            "final" => Ok(Self::final_v07b()),
            "late" => Ok(Self::late_v07()),
            "early" => Ok(Self::early_v07()),
            other => Err(CatalogError::UnknownProduct(other.into())),
        }
    }

    /// A profile from its JSON form (the serde form of this struct).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    fn cadence(&self) -> Duration {
        Duration::minutes(i64::from(self.cadence_minutes))
    }

    fn record_end_text(&self) -> String {
        self.record_end
            .map_or_else(|| "ongoing".to_string(), |e| e.to_rfc3339())
    }

    /// Checks that `start` is a granule start of this product: on the cadence, inside the record.
    pub fn check_start(&self, start: DateTime<Utc>) -> Result<u64, CatalogError> {
        let offset = start - self.first_granule;
        let out_of_record = || CatalogError::OutOfRecord {
            product: self.id.clone(),
            start,
            first: self.first_granule,
            end: self.record_end_text(),
        };
        if offset < Duration::zero() || self.record_end.is_some_and(|end| start >= end) {
            return Err(out_of_record());
        }
        let cadence_s = self.cadence().num_seconds();
        let secs = offset.num_seconds();
        if secs % cadence_s != 0 || offset.subsec_nanos() != 0 {
            return Err(CatalogError::OffCadence {
                product: self.id.clone(),
                start,
                cadence_minutes: self.cadence_minutes,
            });
        }
        u64::try_from(secs / cadence_s).map_err(|_| out_of_record())
    }

    /// Start time of the granule at a time index.
    pub fn start_of(&self, time_index: u64) -> DateTime<Utc> {
        let steps = i64::try_from(time_index).unwrap_or(i64::MAX / 2);
        self.first_granule + self.cadence() * i32::try_from(steps).unwrap_or(i32::MAX)
    }

    /// The version label that names a granule starting at `start`.
    pub fn version_for(&self, start: DateTime<Utc>) -> &str {
        self.versions
            .iter()
            .rev()
            .find(|v| v.since.is_none_or(|s| s <= start))
            .or(self.versions.first())
            .map_or("", |v| v.label.as_str())
    }

    /// File name of the granule starting at `start` (not checked against the record).
    pub fn file_name(&self, start: DateTime<Utc>) -> String {
        let end = start + self.cadence() - Duration::seconds(1);
        let minutes = start.hour() * 60 + start.minute();
        format!(
            "{}.{}-S{}-E{}.{:04}.{}.{}",
            self.file_prefix,
            start.format("%Y%m%d"),
            start.format("%H%M%S"),
            end.format("%H%M%S"),
            minutes,
            self.version_for(start),
            self.extension
        )
    }

    /// Object key (bucket-relative) of the granule starting at `start`.
    pub fn key(&self, start: DateTime<Utc>) -> String {
        format!(
            "{}/{:04}/{:03}/{}",
            self.collection_path,
            start.year(),
            start.ordinal(),
            self.file_name(start)
        )
    }

    /// Full URL of a key in the product's bucket.
    pub fn url_of_key(&self, key: &str) -> String {
        format!("{}{}", self.bucket_url, key)
    }

    /// Full URL of the granule starting at `start`.
    pub fn url(&self, start: DateTime<Utc>) -> String {
        self.url_of_key(&self.key(start))
    }

    /// The granule identity for a start time (checked: on cadence, inside the record).
    pub fn granule_at(&self, start: DateTime<Utc>) -> Result<GranuleId, CatalogError> {
        let time_index = self.check_start(start)?;
        Ok(GranuleId {
            product: self.id.clone(),
            start,
            time_index,
            key: self.key(start),
        })
    }

    /// The granule at a time index.
    pub fn granule_at_index(&self, time_index: u64) -> Result<GranuleId, CatalogError> {
        self.granule_at(self.start_of(time_index))
    }

    /// Parses a granule file name (no directory) of this product and returns its identity.
    pub fn parse_file_name(&self, name: &str) -> Result<GranuleId, CatalogError> {
        let bad = |reason: String| CatalogError::BadFileName {
            product: self.id.clone(),
            name: name.to_string(),
            reason,
        };
        let rest = name
            .strip_prefix(&self.file_prefix)
            .and_then(|r| r.strip_prefix('.'))
            .ok_or_else(|| bad(format!("does not start with {:?}", self.file_prefix)))?;
        // YYYYMMDD-SHHMMSS-EHHMMSS.MMMM.
        const FIXED: usize = 30;
        if rest.len() < FIXED || !rest.is_char_boundary(FIXED) {
            return Err(bad("is too short for YYYYMMDD-SHHMMSS-EHHMMSS.MMMM".into()));
        }
        let (stamp, tail) = rest.split_at(FIXED);
        let b = stamp.as_bytes();
        if b[8] != b'-' || b[9] != b'S' || b[16] != b'-' || b[17] != b'E' || b[24] != b'.' {
            return Err(bad(
                "does not have the form YYYYMMDD-SHHMMSS-EHHMMSS.MMMM".into()
            ));
        }
        if b[29] != b'.' {
            return Err(bad("has no '.' after the minute-of-day field".into()));
        }
        let date = NaiveDate::parse_from_str(&stamp[0..8], "%Y%m%d")
            .map_err(|e| bad(format!("has an invalid date {:?}: {e}", &stamp[0..8])))?;
        let hms = |s: &str, what: &str| {
            chrono::NaiveTime::parse_from_str(s, "%H%M%S")
                .map_err(|e| bad(format!("has an invalid {what} time {s:?}: {e}")))
        };
        let start_t = hms(&stamp[10..16], "start")?;
        let end_t = hms(&stamp[18..24], "end")?;
        let minutes: u32 = stamp[25..29].parse().map_err(|_| {
            bad(format!(
                "has a non-numeric minute field {:?}",
                &stamp[25..29]
            ))
        })?;
        let start = Utc.from_utc_datetime(&NaiveDateTime::new(date, start_t));
        let expected_end = (start + self.cadence() - Duration::seconds(1)).time();
        if end_t != expected_end {
            return Err(bad(format!(
                "has end time {} but a granule starting at {} ends at {}",
                &stamp[18..24],
                &stamp[10..16],
                expected_end.format("%H%M%S")
            )));
        }
        if minutes != start.hour() * 60 + start.minute() {
            return Err(bad(format!(
                "has minute field {:04} but its start time {} is minute {:04} of the day",
                minutes,
                &stamp[10..16],
                start.hour() * 60 + start.minute()
            )));
        }
        let (version, ext) = tail
            .split_once('.')
            .ok_or_else(|| bad("has no version and extension".into()))?;
        if !self.versions.iter().any(|v| v.label == version) {
            let known: Vec<&str> = self.versions.iter().map(|v| v.label.as_str()).collect();
            return Err(bad(format!(
                "has version {version:?}, the profile knows {known:?}"
            )));
        }
        if ext != self.extension {
            return Err(bad(format!(
                "has extension {ext:?}, expected {:?}",
                self.extension
            )));
        }
        let time_index = self.check_start(start)?;
        Ok(GranuleId {
            product: self.id.clone(),
            start,
            time_index,
            key: format!(
                "{}/{:04}/{:03}/{}",
                self.collection_path,
                start.year(),
                start.ordinal(),
                name
            ),
        })
    }

    /// Parses an object key, URL (`s3://bucket/key`, `file:///dir/key`) or path that contains the
    /// collection path, and checks the `YYYY/DDD` directories against the file name.
    pub fn parse_key(&self, input: &str) -> Result<GranuleId, CatalogError> {
        let marker = format!("{}/", self.collection_path);
        let Some(pos) = input.find(&marker) else {
            return Err(CatalogError::WrongCollection {
                product: self.id.clone(),
                key: input.to_string(),
                collection: self.collection_path.clone(),
            });
        };
        let key = &input[pos..];
        let rel = &key[marker.len()..];
        let mut parts = rel.splitn(3, '/');
        let (year, doy, name) = match (parts.next(), parts.next(), parts.next()) {
            (Some(y), Some(d), Some(n)) if !n.contains('/') => (y, d, n),
            _ => {
                return Err(CatalogError::BadFileName {
                    product: self.id.clone(),
                    name: rel.to_string(),
                    reason: "is not of the form YYYY/DDD/<granule name>".into(),
                });
            }
        };
        let id = self.parse_file_name(name)?;
        let expected = format!("{:04}/{:03}", id.start.year(), id.start.ordinal());
        if format!("{year}/{doy}") != expected {
            return Err(CatalogError::DirectoryMismatch {
                product: self.id.clone(),
                key: key.to_string(),
                dir: format!("{year}/{doy}"),
                expected,
            });
        }
        Ok(id)
    }

    /// Parses anything naming a granule: a key or URL with the collection path, or else a bare
    /// file name / a path whose last component is a granule name.
    pub fn parse_any(&self, input: &str) -> Result<GranuleId, CatalogError> {
        if input.contains(&format!("{}/", self.collection_path)) {
            return self.parse_key(input);
        }
        let name = input.rsplit('/').next().unwrap_or(input);
        self.parse_file_name(name)
    }

    /// The record's range: `[first_granule, record_end)` (open-ended products end at `now`).
    pub fn record(&self, now: DateTime<Utc>) -> TimeRange {
        TimeRange {
            start: self.first_granule,
            end: self.record_end.unwrap_or(now),
        }
    }

    /// Every granule expected in `[range.start, range.end)`, clipped to the record, in time order.
    pub fn expected(&self, range: TimeRange) -> impl Iterator<Item = GranuleId> + '_ {
        let first = self.first_index_at_or_after(range.start);
        let end = match self.record_end {
            Some(e) if e < range.end => e,
            _ => range.end,
        };
        let last = self.first_index_at_or_after(end);
        (first..last).filter_map(move |i| self.granule_at_index(i).ok())
    }

    /// Number of granules [`ProductProfile::expected`] yields for `range`.
    pub fn expected_count(&self, range: TimeRange) -> u64 {
        let end = match self.record_end {
            Some(e) if e < range.end => e,
            _ => range.end,
        };
        self.first_index_at_or_after(end)
            .saturating_sub(self.first_index_at_or_after(range.start))
    }

    /// Smallest time index whose start is at or after `t` (0 before the record).
    pub fn first_index_at_or_after(&self, t: DateTime<Utc>) -> u64 {
        let offset = (t - self.first_granule).num_seconds();
        if offset <= 0 {
            return 0;
        }
        let cadence_s = self.cadence().num_seconds();
        u64::try_from((offset + cadence_s - 1) / cadence_s).unwrap_or(0)
    }
}

/// Parses a time given as `YYYY-MM-DD` (midnight UTC), `YYYY-MM-DDTHH:MM[:SS]` (UTC) or RFC 3339.
pub fn parse_time(input: &str) -> Result<DateTime<Utc>, CatalogError> {
    let s = input.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(Utc.from_utc_datetime(&t));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN)));
    }
    Err(CatalogError::BadTime {
        input: input.to_string(),
        reason: "expected YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS] (UTC) or RFC 3339".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    #[test]
    fn matches_the_seed_make_url_reference() {
        let p = ProductProfile::final_v07b();
        assert_eq!(
            p.url(t("1998-01-01")),
            "s3://gesdisc-cumulus-prod-protected/GPM_L3/GPM_3IMERGHH.07/1998/001/3B-HHR.MS.MRG.3IMERG.19980101-S000000-E002959.0000.V07B.HDF5"
        );
        assert_eq!(
            p.key(t("2020-12-31T23:30:00Z")),
            "GPM_L3/GPM_3IMERGHH.07/2020/366/3B-HHR.MS.MRG.3IMERG.20201231-S233000-E235959.1410.V07B.HDF5"
        );
    }

    #[test]
    fn round_trips_every_granule_of_a_leap_day() {
        let p = ProductProfile::final_v07b();
        let range = TimeRange::new(t("2000-02-29"), t("2000-03-01")).unwrap();
        let all: Vec<_> = p.expected(range).collect();
        assert_eq!(all.len(), 48);
        for g in &all {
            let back = p.parse_key(&p.url_of_key(&g.key)).unwrap();
            assert_eq!(&back, g);
            assert_eq!(p.start_of(g.time_index), g.start);
        }
        assert_eq!(all[0].time_index, (365 + 365 + 31 + 28) * 48);
    }

    #[test]
    fn full_final_record_is_486480_granules() {
        let p = ProductProfile::final_v07b();
        let n = p.expected_count(p.record(Utc::now()));
        assert_eq!(n, 486_480);
        assert_eq!(n * p.layout.refs_per_granule(), 42_810_240);
        let last = p.granule_at_index(n - 1).unwrap();
        assert_eq!(last.start, t("2025-09-30T23:30:00Z"));
        assert!(matches!(
            p.granule_at_index(n),
            Err(CatalogError::OutOfRecord { .. })
        ));
    }

    #[test]
    fn rejects_keys_that_are_not_granules_with_reasons() {
        let p = ProductProfile::final_v07b();
        let good = "GPM_L3/GPM_3IMERGHH.07/1998/001/3B-HHR.MS.MRG.3IMERG.19980101-S000000-E002959.0000.V07B.HDF5";
        assert!(p.parse_key(good).is_ok());
        let cases = [
            (good.replace("GPM_3IMERGHH.07", "GPM_3IMERGHHL.07"), "collection path"),
            (good.replace("1998/001", "1998/002"), "does not match the granule date"),
            (good.replace("E002959", "E003000"), "ends at 002959"),
            (good.replace(".0000.", ".0030."), "minute field"),
            (good.replace("V07B", "V06B"), "version \"V06B\""),
            (good.replace(".HDF5", ".nc4"), "extension"),
            (good.replace("S000000", "S001500").replace("E002959", "E004459").replace(".0000.", ".0015."), "cadence"),
            (good.replace("19980101", "19971231").replace("1998/001", "1997/365"), "outside the product's record"),
            (good.replace("19980101", "19980230"), "invalid date"),
            ("GPM_L3/GPM_3IMERGHH.07/1998/001/README.txt".to_string(), "does not start with"),
            ("GPM_L3/GPM_3IMERGHH.07/1998/3B-HHR.MS.MRG.3IMERG.19980101-S000000-E002959.0000.V07B.HDF5".to_string(), "YYYY/DDD"),
        ];
        for (key, want) in cases {
            let err = p.parse_key(&key).unwrap_err().to_string();
            assert!(err.contains(want), "{key}: {err:?} should mention {want:?}");
        }
    }

    #[test]
    fn parses_urls_paths_and_bare_names() {
        let p = ProductProfile::final_v07b();
        let name = "3B-HHR.MS.MRG.3IMERG.20210615-S123000-E125959.0750.V07B.HDF5";
        let id = p.parse_any(name).unwrap();
        assert_eq!(id.key, format!("GPM_L3/GPM_3IMERGHH.07/2021/166/{name}"));
        assert_eq!(p.parse_any(&format!("/tmp/x/{name}")).unwrap(), id);
        assert_eq!(
            p.parse_any(&format!(
                "file:///data/GPM_L3/GPM_3IMERGHH.07/2021/166/{name}"
            ))
            .unwrap(),
            id
        );
    }

    #[test]
    fn late_and_early_profiles_use_their_own_names() {
        let late = ProductProfile::late_v07();
        let k = late.key(t("2026-04-01T01:00:00Z"));
        assert!(k.starts_with("GPM_L3/GPM_3IMERGHHL.07/2026/091/3B-HHR-L.MS.MRG.3IMERG.20260401-S010000-E012959.0060.V07C.RT-H5"), "{k}");
        assert!(late.key(t("2025-04-01")).contains(".V07B.RT-H5"));
        assert_eq!(late.parse_key(&k).unwrap().start, t("2026-04-01T01:00:00Z"));
        let early = ProductProfile::early_v07();
        assert!(early.key(t("2025-04-01")).contains("GPM_3IMERGHHE.07"));
        assert!(early.parse_key(&k).is_err());
        let json = serde_json::to_string(&late).unwrap();
        assert_eq!(ProductProfile::from_json(&json).unwrap(), late);
    }

    #[test]
    fn expected_clips_to_the_record_and_to_the_cadence() {
        let p = ProductProfile::final_v07b();
        let r = TimeRange::new(t("2025-09-30T22:10:00Z"), t("2026-01-01")).unwrap();
        let got: Vec<_> = p.expected(r).map(|g| g.start).collect();
        assert_eq!(
            got,
            vec![
                t("2025-09-30T22:30:00Z"),
                t("2025-09-30T23:00:00Z"),
                t("2025-09-30T23:30:00Z")
            ]
        );
        assert_eq!(p.expected_count(r), 3);
        assert!(TimeRange::new(t("2020-01-02"), t("2020-01-01")).is_err());
        assert!(parse_time("yesterday").is_err());
    }
}
