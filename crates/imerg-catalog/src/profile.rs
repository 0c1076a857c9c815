//! Product profiles and granule identities: time <-> key <-> URL <-> time index, in both directions,
//! and the list of expected granules for a time range.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::{CatalogError, LayoutSpec};

/// A version label used in file names during one period of granule start times (a "label
/// period"). The periods follow each other in list order; the boundary between two neighbours is
/// the earlier one's `until` or, equivalently, the later one's `since` (the form profiles were
/// written in before `until` existed; both are accepted, and they must agree when both are given).
/// The first period is open towards the past, the last one towards the future.
///
/// A label switch changes only file names: a granule keeps its position (time index) whatever its
/// label, and parsing accepts every label of the profile at any time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionLabel {
    pub label: String,
    /// Start of this label's period (inclusive); None: from the previous period's `until`, or
    /// from the beginning for the first label.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// End of this label's period (exclusive); None: up to the next label's `since`, or
    /// open-ended for the last label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

impl VersionLabel {
    /// A label with no boundary of its own (a single-label profile, or the open-ended last one).
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            since: None,
            until: None,
        }
    }

    /// A label used for granules starting at or after `since`.
    pub fn since(label: impl Into<String>, since: DateTime<Utc>) -> Self {
        Self {
            since: Some(since),
            ..Self::new(label)
        }
    }

    /// A label used for granules starting before `until`.
    pub fn until(label: impl Into<String>, until: DateTime<Utc>) -> Self {
        Self {
            until: Some(until),
            ..Self::new(label)
        }
    }
}

/// `versions` in a profile file: a list of [`VersionLabel`] objects (the usual form), a list whose
/// items may also be bare label strings, or one label string (`"version": "V07B"`).
fn deserialize_versions<'de, D>(d: D) -> Result<Vec<VersionLabel>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error as _;
    let one = |v: serde_json::Value| -> Result<VersionLabel, D::Error> {
        match v {
            serde_json::Value::String(label) => Ok(VersionLabel::new(label)),
            other => serde_json::from_value(other).map_err(D::Error::custom),
        }
    };
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Array(items) => items.into_iter().map(one).collect(),
        serde_json::Value::String(label) => Ok(vec![VersionLabel::new(label)]),
        other => Err(D::Error::custom(format!(
            "versions must be a list of labels or a label string, not {other}"
        ))),
    }
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
    /// Version labels in file names, as consecutive label periods (see [`VersionLabel`]): the
    /// period a granule's start falls in names it. Parsing accepts any of them. A profile file
    /// may also give one label as `"version": "V07B"`.
    #[serde(alias = "version", deserialize_with = "deserialize_versions")]
    pub versions: Vec<VersionLabel>,
    /// File extension without the dot (`HDF5`, `RT-H5`).
    pub extension: String,
    /// Start of the first granule: time index 0.
    pub first_granule: DateTime<Utc>,
    /// End of the record (exclusive), if production has ended.
    #[serde(default)]
    pub record_end: Option<DateTime<Utc>>,
    pub cadence_minutes: u32,
    /// How long after the end of its half hour a granule is normally published (near-real-time
    /// runs: the p95 latency). The service's default for lag alerts and for calling a granule
    /// "still missing" (see [`ProductProfile::due_at`]); None for products published in bursts
    /// (Final).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_latency_minutes: Option<u32>,
    pub layout: LayoutSpec,
    /// The collection's DOI (`10.5067/...`), cited in the store's `references` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doi: Option<String>,
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
    utc_hm(y, m, d, 0, 0)
}

fn utc_hm(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    // The built-in dates are valid calendar dates; fall back to the epoch rather than panic.
    Utc.with_ymd_and_hms(y, m, d, h, min, 0)
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
            versions: vec![VersionLabel::new("V07B")],
            extension: "HDF5".into(),
            first_granule: utc(1998, 1, 1),
            record_end: Some(utc(2025, 10, 1)),
            cadence_minutes: 30,
            expected_latency_minutes: None,
            layout: LayoutSpec::imerg_v07(),
            doi: Some("10.5067/GPM/IMERG/3B-HH/07".into()),
        }
    }

    /// Late run (near real time), as GES DISC publishes it in the protected bucket: file names
    /// `3B-HHR-L.MS.MRG.3IMERG.….V07B.HDF5`, labelled `V07C` from the granule starting
    /// 2026-03-03T14:00Z on (same collection, same algorithm: a packaging change). The record
    /// starts 1998-01-01 (V07 reprocessed the TRMM era) and is open-ended; p95 latency 14.7 h.
    /// PPS's NRT server names the same files `….RT-H5`: set `extension` for a mirror of it.
    pub fn late_v07() -> Self {
        Self {
            id: "late".into(),
            title:
                "GPM IMERG Late Precipitation L3 Half Hourly 0.1 x 0.1 degree V07 (GPM_3IMERGHHL)"
                    .into(),
            collection_path: "GPM_L3/GPM_3IMERGHHL.07".into(),
            file_prefix: "3B-HHR-L.MS.MRG.3IMERG".into(),
            // The `since` form, not `until`: a profile printed by this code then also loads,
            // with the same meaning, in builds that predate `until`.
            versions: vec![
                VersionLabel::new("V07B"),
                VersionLabel::since("V07C", utc_hm(2026, 3, 3, 14, 0)),
            ],
            extension: "HDF5".into(),
            record_end: None,
            expected_latency_minutes: Some(882),
            doi: Some("10.5067/GPM/IMERG/3B-HH-L/07".into()),
            ..Self::final_v07b()
        }
    }

    /// Early run (near real time): like [`ProductProfile::late_v07`], file names
    /// `3B-HHR-E.…`, `V07C` from the granule starting 2026-03-04T00:00Z on; p95 latency 4.6 h.
    pub fn early_v07() -> Self {
        Self {
            id: "early".into(),
            title:
                "GPM IMERG Early Precipitation L3 Half Hourly 0.1 x 0.1 degree V07 (GPM_3IMERGHHE)"
                    .into(),
            collection_path: "GPM_L3/GPM_3IMERGHHE.07".into(),
            file_prefix: "3B-HHR-E.MS.MRG.3IMERG".into(),
            versions: vec![
                VersionLabel::new("V07B"),
                VersionLabel::since("V07C", utc_hm(2026, 3, 4, 0, 0)),
            ],
            expected_latency_minutes: Some(276),
            doi: Some("10.5067/GPM/IMERG/3B-HH-E/07".into()),
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

    /// A profile from its JSON form (the serde form of this struct), checked with
    /// [`ProductProfile::validate`]. Profiles written before label periods and latencies existed
    /// load unchanged.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let profile: Self = serde_json::from_str(text)?;
        profile
            .validate()
            .map_err(<serde_json::Error as serde::de::Error>::custom)?;
        Ok(profile)
    }

    /// Checks what serde cannot: at least one version label, labels usable in a file name, label
    /// periods that follow each other in time (each but the last ends, by its `until` or the
    /// next one's `since`, and the two agree when both are given), a non-zero cadence.
    pub fn validate(&self) -> Result<(), CatalogError> {
        let bad = |reason: String| CatalogError::InvalidProfile {
            product: self.id.clone(),
            reason,
        };
        if self.cadence_minutes == 0 || self.cadence_minutes > 24 * 60 {
            return Err(bad(format!(
                "cadence_minutes must be 1 to 1440 (file names hold times of one day), not {}",
                self.cadence_minutes
            )));
        }
        self.validate_layout().map_err(bad)?;
        if self.versions.is_empty() {
            return Err(bad("versions lists no label".into()));
        }
        for v in &self.versions {
            if v.label.is_empty() || v.label.contains(['.', '/']) || v.label.trim() != v.label {
                return Err(bad(format!(
                    "version label {:?} cannot appear in a file name (empty, '.', '/' or spaces)",
                    v.label
                )));
            }
        }
        let mut previous: Option<DateTime<Utc>> = None;
        for (i, v) in self.versions.iter().enumerate() {
            let next_since = self.versions.get(i + 1).and_then(|n| n.since);
            let end = match (v.until, next_since) {
                (Some(u), Some(s)) if u != s => {
                    return Err(bad(format!(
                        "label {:?} has until {u} but the next label starts (since) {s}",
                        v.label
                    )));
                }
                (u, s) => u.or(s),
            };
            let last = i + 1 == self.versions.len();
            match (end, last) {
                (Some(e), true) => {
                    return Err(bad(format!(
                        "the last label {:?} must be open-ended, it ends {e} (end a record with record_end)",
                        v.label
                    )));
                }
                (None, false) => {
                    return Err(bad(format!(
                        "label {:?} has no end: give it `until` or give the next label `since`",
                        v.label
                    )));
                }
                (Some(e), false) => {
                    if previous.is_some_and(|p| e <= p) {
                        return Err(bad(format!(
                            "label periods are out of order: {:?} ends {e}, not after the previous label's end",
                            v.label
                        )));
                    }
                    previous = Some(e);
                }
                (None, true) => {}
            }
        }
        Ok(())
    }

    /// The layout's numbers are divisors and allocation sizes everywhere (`div_ceil(chunk)`,
    /// chunks per granule): a grid of 1 to 2^20 cells a side, at least one variable, unique
    /// names, chunks of one time step and 1 to the grid's size a side (review L16).
    fn validate_layout(&self) -> Result<(), String> {
        const MAX_SIDE: u64 = 1 << 20;
        let l = &self.layout;
        if l.group.is_empty() {
            return Err("layout.group is empty".into());
        }
        for (side, n) in [("n_lon", l.grid.n_lon), ("n_lat", l.grid.n_lat)] {
            if !(1..=MAX_SIDE).contains(&n) {
                return Err(format!(
                    "layout.grid.{side} must be 1 to {MAX_SIDE}, not {n}"
                ));
            }
        }
        if l.variables.is_empty() {
            return Err("layout.variables lists no variable".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for v in &l.variables {
            if v.name.is_empty() || !names.insert(v.name.as_str()) {
                return Err(format!(
                    "variable name {:?} is empty or given twice",
                    v.name
                ));
            }
            let [t, lon, lat] = v.chunk;
            if t != 1 || !(1..=l.grid.n_lon).contains(&lon) || !(1..=l.grid.n_lat).contains(&lat) {
                return Err(format!(
                    "{}: chunk {:?} must be [1, 1..={}, 1..={}] (one time step, inside the grid)",
                    v.name, v.chunk, l.grid.n_lon, l.grid.n_lat
                ));
            }
        }
        Ok(())
    }

    /// Time between two granules.
    pub fn cadence(&self) -> Duration {
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
        let cadence_s = self.cadence().num_seconds().max(1);
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
    /// Beyond the calendar (absurd indexes or cadences) it saturates at the latest time chrono
    /// knows instead of panicking.
    pub fn start_of(&self, time_index: u64) -> DateTime<Utc> {
        let steps = i32::try_from(time_index).unwrap_or(i32::MAX);
        self.cadence()
            .checked_mul(steps)
            .and_then(|offset| self.first_granule.checked_add_signed(offset))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// End (exclusive) of the label period at `index`: its `until`, else the next one's `since`.
    fn period_end(&self, index: usize) -> Option<DateTime<Utc>> {
        let v = self.versions.get(index)?;
        v.until
            .or_else(|| self.versions.get(index + 1).and_then(|n| n.since))
    }

    /// Index in `versions` of the label period `start` falls in (0 for an empty list).
    fn period_index(&self, start: DateTime<Utc>) -> usize {
        (0..self.versions.len())
            .find(|&i| self.period_end(i).is_none_or(|end| start < end))
            .unwrap_or(self.versions.len().saturating_sub(1))
    }

    /// The version label that names a granule starting at `start`: the label of the period it
    /// falls in.
    pub fn version_for(&self, start: DateTime<Utc>) -> &str {
        self.versions
            .get(self.period_index(start))
            .map_or("", |v| v.label.as_str())
    }

    /// File name of the granule starting at `start` (not checked against the record).
    pub fn file_name(&self, start: DateTime<Utc>) -> String {
        self.file_name_with_label(start, self.version_for(start))
    }

    /// File name of the granule starting at `start` under a given version label, whatever the
    /// label periods say.
    pub fn file_name_with_label(&self, start: DateTime<Utc>, label: &str) -> String {
        let end = start
            .checked_add_signed(self.cadence() - Duration::seconds(1))
            .unwrap_or(start);
        let minutes = start.hour() * 60 + start.minute();
        format!(
            "{}.{}-S{}-E{}.{:04}.{}.{}",
            self.file_prefix,
            start.format("%Y%m%d"),
            start.format("%H%M%S"),
            end.format("%H%M%S"),
            minutes,
            label,
            self.extension
        )
    }

    /// Object key (bucket-relative) of the granule starting at `start`.
    pub fn key(&self, start: DateTime<Utc>) -> String {
        self.key_with_label(start, self.version_for(start))
    }

    /// Object key of the granule starting at `start` under a given version label.
    pub fn key_with_label(&self, start: DateTime<Utc>, label: &str) -> String {
        format!(
            "{}/{:04}/{:03}/{}",
            self.collection_path,
            start.year(),
            start.ordinal(),
            self.file_name_with_label(start, label)
        )
    }

    /// Every key the granule starting at `start` may have, in the order a fetch should try
    /// them: the key its label period gives ([`ProductProfile::key`]) first, then the same
    /// granule under each other label of the profile, nearest period first. One element for a
    /// single-label profile (Final).
    pub fn candidate_keys(&self, start: DateTime<Utc>) -> Vec<String> {
        let here = self.period_index(start);
        let mut order: Vec<usize> = (0..self.versions.len()).collect();
        // Nearest period first; between two equally near ones, the later (newer) label.
        order.sort_by_key(|&i| (i.abs_diff(here), std::cmp::Reverse(i)));
        let mut labels: Vec<&str> = Vec::with_capacity(order.len());
        for i in order {
            if let Some(v) = self.versions.get(i)
                && !labels.contains(&v.label.as_str())
            {
                labels.push(v.label.as_str());
            }
        }
        labels
            .into_iter()
            .map(|l| self.key_with_label(start, l))
            .collect()
    }

    /// The keys the same granule has under the profile's other version labels: what a fetch
    /// tries, in order, when no object exists under `id.key` before it calls the granule missing
    /// (a label switch renames files from an instant that may not be exactly the configured
    /// one). Empty for a single-label profile (Final). Whichever key is found, the granule keeps
    /// `id.time_index`.
    pub fn alternate_keys(&self, id: &GranuleId) -> Vec<String> {
        let mut keys = self.candidate_keys(id.start);
        keys.retain(|k| *k != id.key);
        keys
    }

    /// How long after the end of its half hour a granule is normally published, if the profile
    /// says ([`ProductProfile::expected_latency_minutes`]).
    pub fn expected_latency(&self) -> Option<Duration> {
        self.expected_latency_minutes
            .map(|m| Duration::minutes(i64::from(m)))
    }

    /// When the granule starting at `start` is due: the end of its period plus the expected
    /// latency. A granule not found after that is late ("still missing"); before it, its
    /// absence is normal. None without an expected latency (or beyond the calendar).
    pub fn due_at(&self, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        start
            .checked_add_signed(self.cadence())?
            .checked_add_signed(self.expected_latency()?)
    }

    /// The part of the record whose granules are due at `now` (see [`ProductProfile::due_at`]):
    /// what a "still missing" check compares with the store. None without an expected latency.
    pub fn due_range(&self, now: DateTime<Utc>) -> Option<TimeRange> {
        let latest_due_start = now
            .checked_sub_signed(self.cadence())?
            .checked_sub_signed(self.expected_latency()?)?;
        // Starts are whole minutes: `s <= latest_due_start` is `s < latest_due_start + 1 s`.
        let mut end = latest_due_start.checked_add_signed(Duration::seconds(1))?;
        if let Some(record_end) = self.record_end {
            end = end.min(record_end);
        }
        Some(TimeRange {
            start: self.first_granule,
            end: end.max(self.first_granule),
        })
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
        // chrono and `u32::parse` accept spaces, one-digit fields and signs: only the one
        // spelling this profile writes names a granule, so that no alias (or control character)
        // reaches a key (review L5).
        let canonical = self.file_name_with_label(start, version);
        if name != canonical {
            return Err(bad(format!(
                "is not written the canonical way, {canonical:?}"
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
        let cadence_s = self.cadence().num_seconds().max(1);
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
            // Aliases the field parsers accept (review L5): a sign, spaces.
            (good.replace(".0000.", ".+000."), "canonical"),
            (good.replace("S000000", "S 00000"), "canonical"),
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
        assert_eq!(
            k,
            "GPM_L3/GPM_3IMERGHHL.07/2026/091/3B-HHR-L.MS.MRG.3IMERG.20260401-S010000-E012959.0060.V07C.HDF5"
        );
        assert!(late.key(t("2025-04-01")).contains(".V07B.HDF5"));
        assert_eq!(late.parse_key(&k).unwrap().start, t("2026-04-01T01:00:00Z"));
        let early = ProductProfile::early_v07();
        assert!(early.key(t("2025-04-01")).contains("GPM_3IMERGHHE.07"));
        assert!(
            early
                .key(t("2025-04-01"))
                .contains("/3B-HHR-E.MS.MRG.3IMERG.20250401-")
        );
        assert!(early.parse_key(&k).is_err());
        for p in [&late, &early] {
            assert_eq!(p.record_end, None, "{} is open-ended", p.id);
            assert_eq!(p.first_granule, t("1998-01-01"));
            let json = serde_json::to_string(p).unwrap();
            assert_eq!(&ProductProfile::from_json(&json).unwrap(), p);
        }
        assert_eq!(late.expected_latency(), Some(Duration::minutes(882)));
        assert_eq!(early.expected_latency(), Some(Duration::minutes(276)));
        // PPS's extension is a profile option.
        let pps = ProductProfile {
            extension: "RT-H5".into(),
            ..late.clone()
        };
        let rt = pps.key(t("2026-04-01T01:00:00Z"));
        assert!(rt.ends_with(".V07C.RT-H5"), "{rt}");
        assert_eq!(
            pps.parse_key(&rt).unwrap().time_index,
            late.parse_key(&k).unwrap().time_index
        );
        assert!(
            late.parse_key(&rt)
                .unwrap_err()
                .to_string()
                .contains("extension")
        );
    }

    /// (profile, last V07B start, first V07C start): the switch instants of the facts.
    fn switches() -> [(ProductProfile, &'static str, &'static str); 2] {
        [
            (
                ProductProfile::late_v07(),
                "2026-03-03T13:30:00Z",
                "2026-03-03T14:00:00Z",
            ),
            (
                ProductProfile::early_v07(),
                "2026-03-03T23:30:00Z",
                "2026-03-04T00:00:00Z",
            ),
        ]
    }

    #[test]
    fn labels_switch_at_the_configured_instant() {
        for (p, last_b, first_c) in switches() {
            assert_eq!(p.version_for(t(last_b)), "V07B", "{}", p.id);
            assert_eq!(p.version_for(t(first_c)), "V07C", "{}", p.id);
            assert_eq!(p.version_for(t(first_c) - Duration::seconds(1)), "V07B");
            assert_eq!(p.version_for(t("1998-01-01")), "V07B");
            assert_eq!(p.version_for(t("2030-01-01")), "V07C");
            // The expected keys of a range across the switch follow the label periods.
            let range = TimeRange::new(
                t(last_b) - Duration::hours(1),
                t(first_c) + Duration::hours(1),
            )
            .unwrap();
            let got: Vec<_> = p.expected(range).collect();
            assert_eq!(got.len(), 5);
            assert_eq!(p.expected_count(range), 5);
            let labels: Vec<&str> = got
                .iter()
                .map(|g| if g.key.contains(".V07B.") { "B" } else { "C" })
                .collect();
            assert_eq!(labels, ["B", "B", "B", "C", "C"], "{}", p.id);
            for w in got.windows(2) {
                assert_eq!(
                    w[1].time_index,
                    w[0].time_index + 1,
                    "one time axis across the switch"
                );
            }
            let b = &got[2];
            assert_eq!(b.start, t(last_b));
            assert!(b.key.ends_with(".V07B.HDF5"), "{}", b.key);
            assert!(got[3].key.ends_with(".V07C.HDF5"), "{}", got[3].key);
        }
    }

    #[test]
    fn either_label_parses_to_the_same_position_on_both_sides_of_each_switch() {
        for (p, last_b, first_c) in switches() {
            let range = TimeRange::new(
                t(last_b) - Duration::hours(2),
                t(first_c) + Duration::hours(2),
            )
            .unwrap();
            for g in p.expected(range) {
                // Round trip of the expected key, as key, URL and bare name.
                assert_eq!(p.parse_key(&g.key).unwrap(), g);
                assert_eq!(p.parse_any(&p.url_of_key(&g.key)).unwrap(), g);
                let name = g.key.rsplit('/').next().unwrap();
                assert_eq!(p.parse_any(name).unwrap(), g);
                assert_eq!(p.candidate_keys(g.start)[0], g.key);
                // The other label's key: same granule, same position, its own key.
                let alt = p.alternate_keys(&g);
                assert_eq!(alt.len(), 1, "{alt:?}");
                assert_ne!(alt[0], g.key);
                assert_eq!(
                    alt[0].replace(".V07B.", ".V07C."),
                    g.key.replace(".V07B.", ".V07C.")
                );
                let other = p.parse_key(&alt[0]).unwrap();
                assert_eq!(other.time_index, g.time_index);
                assert_eq!(other.start, g.start);
                assert_eq!(other.key, alt[0]);
                assert_eq!(p.alternate_keys(&other), vec![g.key.clone()]);
                assert_eq!(p.granule_at_index(g.time_index).unwrap(), g);
            }
            // Far from the switch, the unexpected label still parses (a granule renamed late,
            // or a mirror that kept old names).
            let old_c = p.key_with_label(t("2010-06-01T12:00:00Z"), "V07C");
            assert_eq!(
                p.parse_key(&old_c).unwrap().start,
                t("2010-06-01T12:00:00Z")
            );
            let new_b = p.key_with_label(t("2026-06-01T12:00:00Z"), "V07B");
            assert_eq!(
                p.parse_key(&new_b).unwrap().time_index,
                p.check_start(t("2026-06-01T12:00:00Z")).unwrap()
            );
            assert!(p.parse_key(&new_b.replace("V07B", "V07D")).is_err());
        }
    }

    #[test]
    fn final_has_one_label_no_alternates_and_no_latency() {
        let p = ProductProfile::final_v07b();
        let g = p.granule_at(t("2024-07-01")).unwrap();
        assert_eq!(p.candidate_keys(g.start), vec![g.key.clone()]);
        assert!(p.alternate_keys(&g).is_empty());
        assert_eq!(p.expected_latency(), None);
        assert_eq!(p.due_at(g.start), None);
        assert_eq!(p.due_range(t("2025-01-01")), None);
        assert_eq!(p.version_for(t("2030-01-01")), "V07B");
        assert!(p.validate().is_ok());
    }

    #[test]
    fn final_json_is_unchanged_and_older_profile_files_still_load() {
        let p = ProductProfile::final_v07b();
        let v = serde_json::to_value(&p).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "id",
            "title",
            "bucket_url",
            "collection_path",
            "file_prefix",
            "versions",
            "extension",
            "first_granule",
            "record_end",
            "cadence_minutes",
            "layout",
            // Added with the CF attributes: optional, and builds that predate it ignore it
            // (unknown fields are not refused).
            "doi",
        ];
        want.sort_unstable();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        assert_eq!(
            keys_sorted, want,
            "Final's JSON has exactly the fields it had, plus the DOI"
        );
        assert_eq!(
            v["versions"],
            serde_json::json!([{"label": "V07B", "since": null}])
        );
        assert_eq!(ProductProfile::from_json(&v.to_string()).unwrap(), p);

        // The Late profile as the code before label periods printed it: `since` labels, RT-H5,
        // no latency. It loads with the meaning it had.
        let mut old = serde_json::to_value(ProductProfile::late_v07()).unwrap();
        let obj = old.as_object_mut().unwrap();
        obj.remove("expected_latency_minutes");
        obj.insert("extension".into(), "RT-H5".into());
        obj.insert(
            "versions".into(),
            serde_json::json!([{"label": "V07B", "since": null}, {"label": "V07C", "since": "2026-03-01T00:00:00Z"}]),
        );
        let loaded = ProductProfile::from_json(&old.to_string()).unwrap();
        assert_eq!(loaded.expected_latency_minutes, None);
        assert_eq!(loaded.version_for(t("2026-02-28T23:30:00Z")), "V07B");
        assert_eq!(loaded.version_for(t("2026-03-01")), "V07C");
        assert!(loaded.key(t("2026-03-01")).ends_with(".V07C.RT-H5"));

        // A single label as a string, and bare strings in the list.
        let mut single = v.clone();
        let o = single.as_object_mut().unwrap();
        o.remove("versions");
        o.insert("version".into(), "V07B".into());
        assert_eq!(ProductProfile::from_json(&single.to_string()).unwrap(), p);
        let mut bare = v.clone();
        bare["versions"] = serde_json::json!(["V07B"]);
        assert_eq!(ProductProfile::from_json(&bare.to_string()).unwrap(), p);
    }

    #[test]
    fn label_periods_given_with_until_mean_the_same_as_with_since() {
        let early = ProductProfile::early_v07();
        let mut v = serde_json::to_value(&early).unwrap();
        v["versions"] = serde_json::json!([
            {"label": "V07B", "until": "2026-03-04T00:00:00Z"},
            {"label": "V07C"}
        ]);
        let with_until = ProductProfile::from_json(&v.to_string()).unwrap();
        // Both boundaries given and equal is fine too.
        v["versions"] = serde_json::json!([
            {"label": "V07B", "until": "2026-03-04T00:00:00Z"},
            {"label": "V07C", "since": "2026-03-04T00:00:00Z"}
        ]);
        let with_both = ProductProfile::from_json(&v.to_string()).unwrap();
        let range = TimeRange::new(t("2026-03-03T20:00:00Z"), t("2026-03-04T04:00:00Z")).unwrap();
        let want: Vec<_> = early.expected(range).collect();
        assert_eq!(with_until.expected(range).collect::<Vec<_>>(), want);
        assert_eq!(with_both.expected(range).collect::<Vec<_>>(), want);
        // The `until` form round-trips through JSON.
        let json = serde_json::to_string(&with_until).unwrap();
        assert!(
            json.contains("\"until\":\"2026-03-04T00:00:00Z\""),
            "{json}"
        );
        assert_eq!(ProductProfile::from_json(&json).unwrap(), with_until);

        // Three periods, a label coming back: each granule takes its period's label, and the
        // alternates list each other label once, nearest period first.
        v["versions"] = serde_json::json!([
            {"label": "V07A", "until": "2020-01-01T00:00:00Z"},
            {"label": "V07B", "until": "2026-03-04T00:00:00Z"},
            {"label": "V07C", "until": "2027-01-01T00:00:00Z"},
            {"label": "V07B"}
        ]);
        let three = ProductProfile::from_json(&v.to_string()).unwrap();
        assert_eq!(three.version_for(t("2019-12-31T23:30:00Z")), "V07A");
        assert_eq!(three.version_for(t("2020-01-01")), "V07B");
        assert_eq!(three.version_for(t("2026-03-04")), "V07C");
        assert_eq!(three.version_for(t("2027-01-01")), "V07B");
        let labels = |start: &str| -> Vec<String> {
            three
                .candidate_keys(t(start))
                .iter()
                .map(|k| k.split('.').rev().nth(1).unwrap().to_string())
                .collect()
        };
        assert_eq!(labels("2026-06-01"), ["V07C", "V07B", "V07A"]);
        assert_eq!(labels("2022-06-01"), ["V07B", "V07C", "V07A"]);
        assert_eq!(labels("2019-06-01"), ["V07A", "V07B", "V07C"]);
    }

    #[test]
    fn inconsistent_label_periods_are_refused_with_reasons() {
        let base = serde_json::to_value(ProductProfile::late_v07()).unwrap();
        let cases = [
            (serde_json::json!([]), "no label"),
            (
                serde_json::json!([{"label": "V07B"}, {"label": "V07C"}]),
                "has no end",
            ),
            (
                serde_json::json!([{"label": "V07B", "until": "2026-03-03T14:00:00Z"}]),
                "open-ended",
            ),
            (
                serde_json::json!([{"label": "V07B", "until": "2026-03-03T14:00:00Z"}, {"label": "V07C", "since": "2026-03-04T00:00:00Z"}]),
                "but the next label starts",
            ),
            (
                serde_json::json!([{"label": "A", "until": "2026-03-03T14:00:00Z"}, {"label": "B", "until": "2020-01-01T00:00:00Z"}, {"label": "C"}]),
                "out of order",
            ),
            (serde_json::json!([{"label": "V07.B"}]), "file name"),
            (serde_json::json!([{"label": ""}]), "file name"),
            (serde_json::json!(42), "list of labels"),
            (
                serde_json::json!([{"label": "V07B", "until": "soon"}]),
                "input",
            ),
            (serde_json::json!([{"nolabel": 1}]), "label"),
        ];
        for (versions, want) in cases {
            let mut v = base.clone();
            v["versions"] = versions.clone();
            let err = ProductProfile::from_json(&v.to_string())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(want),
                "{versions}: {err:?} should mention {want:?}"
            );
        }
        let mut v = base.clone();
        v["cadence_minutes"] = 0.into();
        let err = ProductProfile::from_json(&v.to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains("cadence"), "{err}");
        // Review L16: a zero chunk side was a division by zero later (`div_ceil(0)`).
        for (path, value, want) in [
            (
                "/layout/variables/0/chunk",
                serde_json::json!([1, 0, 1800]),
                "chunk",
            ),
            (
                "/layout/variables/0/chunk",
                serde_json::json!([0, 145, 1800]),
                "chunk",
            ),
            (
                "/layout/variables/0/chunk",
                serde_json::json!([1, 3601, 1800]),
                "chunk",
            ),
            ("/layout/grid/n_lon", serde_json::json!(0), "n_lon"),
            ("/layout/variables", serde_json::json!([]), "no variable"),
            (
                "/layout/variables/1/name",
                serde_json::json!("precipitation"),
                "twice",
            ),
        ] {
            let mut v = base.clone();
            *v.pointer_mut(path).unwrap() = value;
            let err = ProductProfile::from_json(&v.to_string())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(want),
                "{path}: {err:?} should mention {want:?}"
            );
        }
        for junk in [
            "",
            "null",
            "[]",
            "{}",
            "\"late\"",
            "{\"versions\": null}",
            "{\"id\": 1}",
        ] {
            assert!(ProductProfile::from_json(junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn granules_are_due_after_their_half_hour_plus_the_expected_latency() {
        let early = ProductProfile::early_v07();
        let s = t("2026-03-04T00:00:00Z");
        // End of the half hour (00:30) + 4 h 36 min.
        assert_eq!(early.due_at(s), Some(t("2026-03-04T05:06:00Z")));
        let due = early.due_range(t("2026-03-04T05:06:00Z")).unwrap();
        assert_eq!(due.start, early.first_granule);
        assert_eq!(early.expected(due).last().unwrap().start, s);
        let not_yet = early.due_range(t("2026-03-04T05:05:59Z")).unwrap();
        assert_eq!(
            early.expected(not_yet).last().unwrap().start,
            t("2026-03-03T23:30:00Z")
        );
        let late = ProductProfile::late_v07();
        assert_eq!(late.due_at(s), Some(t("2026-03-04T15:12:00Z")));
        // Before the record nothing is due; far future times do not panic.
        let before = late.due_range(t("1998-01-01T01:00:00Z")).unwrap();
        assert_eq!(late.expected_count(before), 0);
        assert_eq!(late.due_at(DateTime::<Utc>::MAX_UTC), None);
        assert!(
            late.due_range(DateTime::<Utc>::MIN_UTC)
                .is_none_or(|r| late.expected_count(r) == 0)
        );
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
