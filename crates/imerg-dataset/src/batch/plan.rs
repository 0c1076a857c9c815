//! Which granules of a batch to write, decided without the store: each granule is rejected
//! (product, source container, time, layout) or accepted, then each accepted one is compared with
//! what the store holds at its time index (added, duplicate or replaced).

use std::collections::BTreeMap;

use icechunk::format::manifest::Checksum;
use imerg_catalog::ProductProfile;
use imerg_refs::{GranuleRefs, Layout};

use super::{GranuleOutcome, checksum_of, version_text};
use crate::DatasetError;

/// The reference the store holds at chunk `(t, 0, 0)` of the first variable: enough to tell the
/// same source version from a replaced one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredRef {
    pub url: String,
    pub offset: u64,
    pub length: u64,
    pub checksum: Option<Checksum>,
}

/// The first step of a plan: every granule checked against the dataset on its own, the accepted
/// ones by time index (the later of two granules with the same time index wins).
#[derive(Debug)]
pub(crate) struct Classified<'a> {
    granules: &'a [GranuleRefs],
    outcomes: Vec<(String, GranuleOutcome)>,
    accepted: BTreeMap<u64, usize>,
}

/// What a batch does: an outcome per granule and the granules to write.
#[derive(Debug)]
pub(crate) struct BatchPlan {
    /// Per granule, in input order: key and outcome.
    pub outcomes: Vec<(String, GranuleOutcome)>,
    /// Positions in the batch of the granules to write (added or replaced), in time order.
    pub to_write: Vec<usize>,
    /// Length of the time axis before the batch.
    pub old_len: u64,
    /// Length of the time axis after the batch.
    pub new_len: u64,
}

impl<'a> Classified<'a> {
    /// Checks each granule's product, source container (`url_prefix`), time index and layout.
    /// `dataset` is the dataset's layout and fingerprint, `None` before its first batch: then the
    /// first granule that passes the other checks sets the layout the rest must match.
    pub(crate) fn new(
        profile: &ProductProfile,
        url_prefix: &str,
        dataset: Option<(&Layout, &str)>,
        granules: &'a [GranuleRefs],
    ) -> Self {
        let mut outcomes: Vec<(String, GranuleOutcome)> = Vec::with_capacity(granules.len());
        let mut reference: Option<(Layout, String)> =
            dataset.map(|(l, fp)| (l.clone(), fp.to_string()));
        let mut accepted: BTreeMap<u64, usize> = BTreeMap::new();
        for (n, g) in granules.iter().enumerate() {
            let reject = |label: &'static str, reason: String| {
                GranuleOutcome::Rejected(DatasetError::Rejected {
                    key: g.key.clone(),
                    label,
                    reason,
                })
            };
            let outcome = if g.product != profile.id {
                Some(reject(
                    "product",
                    format!(
                        "granule of product {:?}, dataset of {:?}",
                        g.product, profile.id
                    ),
                ))
            } else if !g.url.starts_with(url_prefix) {
                Some(reject(
                    "source_container",
                    format!(
                        "{} is outside the dataset's source container {url_prefix}",
                        g.url
                    ),
                ))
            } else if profile.start_of(g.time_index) != g.start {
                Some(reject(
                    "time_range",
                    format!(
                        "time index {} does not match start {}",
                        g.time_index, g.start
                    ),
                ))
            } else {
                match &reference {
                    Some((l, fp)) if *fp != g.fingerprint => Some(reject(
                        "layout",
                        format!(
                            "layout differs from the dataset's: {}",
                            l.differences(&g.layout).join("; ")
                        ),
                    )),
                    Some(_) => None,
                    None => {
                        reference = Some((g.layout.clone(), g.fingerprint.clone()));
                        None
                    }
                }
            };
            match outcome {
                Some(o) => outcomes.push((g.key.clone(), o)),
                None => {
                    outcomes.push((g.key.clone(), GranuleOutcome::Added));
                    if let Some(prev) = accepted.insert(g.time_index, n) {
                        outcomes[prev].1 = GranuleOutcome::Duplicate;
                    }
                }
            }
        }
        for (key, o) in &outcomes {
            if let GranuleOutcome::Rejected(e) = o {
                tracing::warn!(%key, reason = e.label(), error = %e, "granule rejected");
            }
        }
        Self {
            granules,
            outcomes,
            accepted,
        }
    }

    /// True if no granule was accepted.
    pub(crate) fn is_empty(&self) -> bool {
        self.accepted.is_empty()
    }

    /// The accepted time indices, ascending.
    pub(crate) fn time_indices(&self) -> impl Iterator<Item = u64> + '_ {
        self.accepted.keys().copied()
    }

    /// The outcomes when nothing is written.
    pub(crate) fn into_outcomes(self) -> Vec<(String, GranuleOutcome)> {
        self.outcomes
    }

    /// Compares each accepted granule with the store before the batch: `old_len` is the length of
    /// the time axis; `stored` holds an entry for every accepted time index that
    /// `granule_present` marks, with the reference at chunk `(t, 0, 0)` of `first_var` (`None` if
    /// that is no virtual reference). A granule not marked present is added; one whose references
    /// match is a duplicate; any other replaces what is stored.
    pub(crate) fn diff(
        self,
        first_var: &str,
        old_len: u64,
        stored: &BTreeMap<u64, Option<StoredRef>>,
    ) -> BatchPlan {
        let Self {
            granules,
            mut outcomes,
            accepted,
        } = self;
        let max_index = accepted.keys().next_back().copied().unwrap_or(0);
        let new_len = old_len.max(max_index + 1);
        let mut to_write: Vec<usize> = Vec::new();
        for (&t, &n) in &accepted {
            let g = &granules[n];
            let Some(existing) = stored.get(&t) else {
                to_write.push(n);
                continue;
            };
            let first_ref = g
                .variables
                .get(first_var)
                .and_then(|v| v.refs.iter().find(|r| r.chunk[1] == 0 && r.chunk[2] == 0));
            let new_checksum = checksum_of(g);
            let same = match (existing, first_ref) {
                (Some(r), Some(fr)) => {
                    r.url == g.url
                        && r.offset == fr.offset
                        && r.length == fr.length
                        && r.checksum == new_checksum
                }
                _ => false,
            };
            if same {
                outcomes[n].1 = GranuleOutcome::Duplicate;
            } else {
                let previous = match existing {
                    Some(r) => format!("{} ({})", r.url, version_text(&r.checksum)),
                    None => "no reference".into(),
                };
                tracing::warn!(
                    key = %g.key, %previous, now = %version_text(&new_checksum),
                    "source object replaced: re-pointing its references"
                );
                outcomes[n].1 = GranuleOutcome::Replaced { previous };
                to_write.push(n);
            }
        }
        BatchPlan {
            outcomes,
            to_write,
            old_len,
            new_len,
        }
    }
}
