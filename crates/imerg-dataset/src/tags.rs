//! Month tags: once every granule of a calendar month is in the store, the snapshot that
//! completed it is tagged `<product>-<version label>-<YYYY-MM>` (`final-v07b-1998-01`). A tag is
//! a named, immutable pointer that snapshot expiry and garbage collection keep, so a citation of
//! a month stays valid after the snapshot ids around it have expired. A month is complete when
//! every step from its first to its last half hour, clipped to the product's record, is present;
//! the current month of a live product is therefore never tagged before it ends.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use imerg_catalog::ProductProfile;

use crate::{Dataset, DatasetError};

/// The tag of the month starting at `month_start`: product id, the version label of the
/// month's first granule (lowercase) and the month.
pub fn month_tag(profile: &ProductProfile, month_start: DateTime<Utc>) -> String {
    let first = month_start.max(profile.first_granule);
    format!(
        "{}-{}-{:04}-{:02}",
        profile.id,
        profile.version_for(first).to_lowercase(),
        month_start.year(),
        month_start.month()
    )
}

/// First instant of the month holding `t`.
fn month_start(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .single()
}

/// First instant of the month after the one starting at `start`.
fn next_month(start: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let (y, m) = if start.month() == 12 {
        (start.year().checked_add(1)?, 1)
    } else {
        (start.year(), start.month() + 1)
    };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single()
}

/// The time-index range `[from, to)` of the month starting at `start`, clipped to the record,
/// or None while the month has not ended (or lies outside the record).
fn month_steps(
    profile: &ProductProfile,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<(u64, u64)> {
    let end = next_month(start)?;
    if end > now {
        return None;
    }
    let record = profile.record(now);
    let end = end.min(record.end);
    let from = profile.first_index_at_or_after(start.max(record.start));
    let to = profile.first_index_at_or_after(end);
    (to > from).then_some((from, to))
}

impl Dataset {
    /// Tags every complete month of the store at the branch tip that has no tag yet (months
    /// completed before tagging existed, or whose tagging failed); returns the tags created.
    pub async fn tag_all_completed_months(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, DatasetError> {
        let store = self.read_store().await?;
        let len = crate::store_io::time_len(&store, &self.config().profile).await?;
        let tip = self.branch_tip().await?;
        let profile = &self.config().profile;
        // One index a month is enough to name it.
        let mut indices = Vec::new();
        let mut m = month_start(profile.first_granule);
        while let Some(start) = m {
            let i = profile.first_index_at_or_after(start);
            if i >= len {
                break;
            }
            indices.push(i);
            m = next_month(start);
        }
        self.tag_completed_months(indices, &tip, now).await
    }

    /// Tags each month touched by `time_indices` that is complete at `snapshot` and not tagged
    /// yet; returns the tags created. Called by the committer after each durable commit.
    pub async fn tag_completed_months(
        &self,
        time_indices: impl IntoIterator<Item = u64>,
        snapshot: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, DatasetError> {
        let profile = &self.config().profile;
        let mut months: BTreeSet<DateTime<Utc>> = BTreeSet::new();
        for i in time_indices {
            if let Some(m) = month_start(profile.start_of(i)) {
                months.insert(m);
            }
        }
        let candidates: Vec<(String, u64, u64)> = months
            .into_iter()
            .filter_map(|m| {
                let (from, to) = month_steps(profile, m, now)?;
                Some((month_tag(profile, m), from, to))
            })
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let tags = self
            .repository()
            .list_tags()
            .await
            .map_err(DatasetError::ic)?;
        let candidates: Vec<_> = candidates
            .into_iter()
            .filter(|(tag, _, _)| !tags.contains(tag))
            .collect();
        let (Some(lo), Some(hi)) = (
            candidates.iter().map(|c| c.1).min(),
            candidates.iter().map(|c| c.2).max(),
        ) else {
            return Ok(Vec::new());
        };
        // One read of `granule_present` for every candidate month.
        let store = self.store_at(snapshot).await?;
        let present = self.present_in_store(&store, lo, hi).await?;
        let id = icechunk::format::SnapshotId::try_from(snapshot)
            .map_err(|e| DatasetError::Config(format!("snapshot id {snapshot:?}: {e}")))?;
        let mut created = Vec::new();
        for (tag, from, to) in candidates {
            if u64::try_from(present.range(from..to).count()).ok() != Some(to - from) {
                continue;
            }
            match self.repository().create_tag(&tag, &id).await {
                Ok(()) => created.push(tag),
                // Another committer run (a retried batch) made it first: the month is tagged.
                Err(icechunk::repository::RepositoryError {
                    kind:
                        icechunk::repository::RepositoryErrorKind::Ref(
                            icechunk::refs::RefErrorKind::TagAlreadyExists(_),
                        ),
                    ..
                }) => {}
                Err(e) => return Err(DatasetError::ic(e)),
            }
        }
        Ok(created)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        imerg_catalog::parse_time(s).unwrap()
    }

    #[test]
    fn tags_name_the_product_label_and_month() {
        let f = ProductProfile::final_v07b();
        assert_eq!(month_tag(&f, t("1998-01-01")), "final-v07b-1998-01");
        let late = ProductProfile::late_v07();
        assert_eq!(month_tag(&late, t("2026-02-01")), "late-v07b-2026-02");
        assert_eq!(month_tag(&late, t("2026-04-01")), "late-v07c-2026-04");
    }

    #[test]
    fn a_month_is_complete_only_once_it_has_ended_and_within_the_record() {
        let f = ProductProfile::final_v07b();
        let now = t("2026-12-01");
        // January 1998: 31 days of 48 steps from index 0.
        assert_eq!(month_steps(&f, t("1998-01-01"), now), Some((0, 1488)));
        // September 2025, the Final record's last month, ends with the record.
        let (from, to) = month_steps(&f, t("2025-09-01"), now).unwrap();
        assert_eq!(to - from, 30 * 48);
        assert_eq!(
            month_steps(&f, t("2025-10-01"), now),
            None,
            "after the record"
        );
        let late = ProductProfile::late_v07();
        assert_eq!(
            month_steps(&late, t("2026-12-01"), now),
            None,
            "the current month"
        );
        assert!(month_steps(&late, t("2026-11-01"), now).is_some());
        assert_eq!(next_month(t("1999-12-01")), Some(t("2000-01-01")));
    }
}

#[cfg(test)]
mod repository_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use crate::test_support::{granule, open, shifted};
    use crate::{MaintenanceConfig, maintenance};

    /// January 1998 lands in two commits: the month is tagged by the one that completes it, the
    /// tag survives expiry and garbage collection of everything older than now, and reads back
    /// the whole month.
    #[tokio::test]
    async fn the_commit_completing_a_month_is_tagged_and_outlives_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let (src, repo) = (dir.path().join("src"), dir.path().join("repo"));
        let ds = open(&repo, &src).await;
        let g = granule(&src, "1998-01-01T00:00:00Z");
        let month: Vec<_> = (0..1488).map(|i| shifted(&g, i, &src)).collect();
        // And one step of February, which stays incomplete.
        let feb = shifted(&g, 1488, &src);
        let now = imerg_catalog::parse_time("2026-12-01").unwrap();

        let first = ds.commit_batch(&month[..1487], "b1").await.unwrap();
        let none = ds
            .tag_completed_months(
                month[..1487].iter().map(|g| g.time_index),
                &first.snapshot,
                now,
            )
            .await
            .unwrap();
        assert!(none.is_empty(), "one step missing: {none:?}");

        let mut rest = vec![month[1487].clone(), feb.clone()];
        let second = ds.commit_batch(&rest, "b2").await.unwrap();
        let tags = ds
            .tag_completed_months(rest.iter().map(|g| g.time_index), &second.snapshot, now)
            .await
            .unwrap();
        assert_eq!(tags, vec!["final-v07b-1998-01".to_string()]);
        // Tagging again (a retried batch, a restart) creates nothing.
        assert!(ds.tag_all_completed_months(now).await.unwrap().is_empty());

        // Re-ingest a January step so that the tagged snapshot is no longer the tip, then expire
        // and collect everything older than now.
        rest[0].last_modified = rest[0]
            .last_modified
            .map(|t| t + chrono::Duration::seconds(5));
        let third = ds.commit_batch(&rest[..1], "b3").await.unwrap();
        assert!(third.committed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        maintenance::run(
            &ds,
            &MaintenanceConfig {
                retention: Duration::ZERO,
                every: Duration::ZERO,
            },
        )
        .await
        .unwrap();
        let tagged = ds
            .repository()
            .lookup_tag("final-v07b-1998-01")
            .await
            .unwrap();
        assert_eq!(tagged.to_string(), second.snapshot);
        let store = ds.store_at(&tagged.to_string()).await.unwrap();
        let present = ds.present_in_store(&store, 0, 1489).await.unwrap();
        assert_eq!(present.len(), 1489, "the tag still reads the whole month");
    }
}
