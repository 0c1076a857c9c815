//! CF-style time units (`seconds since 1980-01-06 00:00:00 UTC`): parse them and convert between
//! stored values and UTC instants.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("cannot read time units {units:?}: {reason}")]
pub struct TimeUnitsError {
    pub units: String,
    pub reason: String,
}

/// `<unit> since <epoch>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeUnits {
    pub seconds_per_unit: i64,
    pub epoch: DateTime<Utc>,
}

impl TimeUnits {
    pub fn parse(units: &str) -> Result<Self, TimeUnitsError> {
        let err = |reason: &str| TimeUnitsError {
            units: units.to_string(),
            reason: reason.to_string(),
        };
        let (unit, since) = units
            .split_once(" since ")
            .ok_or_else(|| err("expected '<unit> since <date>'"))?;
        let seconds_per_unit = match unit.trim() {
            "seconds" | "second" | "s" | "sec" | "secs" => 1,
            "minutes" | "minute" | "min" | "mins" => 60,
            "hours" | "hour" | "h" | "hr" | "hrs" => 3600,
            "days" | "day" | "d" => 86_400,
            _ => return Err(err("unit must be seconds, minutes, hours or days")),
        };
        let mut s = since.trim();
        for suffix in [" UTC", "Z", " GMT", "+00:00", " +00:00"] {
            if let Some(x) = s.strip_suffix(suffix) {
                s = x.trim_end();
            }
        }
        let naive = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
            .or_else(|| {
                NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .ok()
                    .map(|d| d.and_time(chrono::NaiveTime::MIN))
            })
            .ok_or_else(|| err("epoch is not a date and time"))?;
        Ok(Self {
            seconds_per_unit,
            epoch: Utc.from_utc_datetime(&naive),
        })
    }

    /// The instant a stored value stands for, `None` when it lies outside the dates chrono can
    /// represent (a value read from a file is untrusted: no arithmetic on it may overflow).
    pub fn to_datetime(&self, value: i64) -> Option<DateTime<Utc>> {
        let seconds = value.checked_mul(self.seconds_per_unit)?;
        self.epoch
            .checked_add_signed(Duration::try_seconds(seconds)?)
    }

    /// The stored value of an instant (rounded down to whole units).
    pub fn value_of(&self, t: DateTime<Utc>) -> i64 {
        (t - self.epoch)
            .num_seconds()
            .div_euclid(self.seconds_per_unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gps_epoch_seconds() {
        let u = TimeUnits::parse("seconds since 1980-01-06 00:00:00 UTC").unwrap();
        let t = Utc.with_ymd_and_hms(1998, 1, 1, 0, 30, 0).unwrap();
        let v = u.value_of(t);
        assert_eq!(v, 567_648_000 + 1800); // checked with Python datetime
        assert_eq!(u.to_datetime(v), Some(t));
        assert!(TimeUnits::parse("fortnights since 1980-01-06").is_err());
        assert!(TimeUnits::parse("seconds after 1980").is_err());
    }

    /// Review L3: values beyond chrono's range were a panic (`epoch + Duration`).
    #[test]
    fn values_beyond_the_calendar_are_none_not_a_panic() {
        let days = TimeUnits::parse("days since 1980-01-06 00:00:00 UTC").unwrap();
        assert_eq!(days.to_datetime(i64::from(i32::MAX)), None);
        assert_eq!(days.to_datetime(i64::MAX), None);
        assert_eq!(days.to_datetime(i64::MIN), None);
        let secs = TimeUnits::parse("seconds since 1980-01-06").unwrap();
        assert_eq!(secs.to_datetime(i64::MAX), None);
        assert!(secs.to_datetime(0).is_some());
    }
}
