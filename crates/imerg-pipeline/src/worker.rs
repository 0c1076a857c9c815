//! The worker role: a granule's bytes are fetched and parsed (HDF5, on the blocking pool) into
//! references. One function, [`fetch_then_parse`], does it for the service's worker and for the
//! `virtualize` command alike, with the same metrics and error classification.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use imerg_catalog::{GranuleId, ProductProfile};
use imerg_metrics as m;
use imerg_refs::GranuleRefs;
use imerg_source::{Fetched, Source, SourceError};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::{IngestError, Reason};

/// Turns a granule into references.
#[async_trait]
pub trait Worker: Send + Sync + std::fmt::Debug + 'static {
    async fn virtualize(&self, id: &GranuleId) -> Result<GranuleRefs, IngestError>;
}

/// Fetches from a [`Source`] and parses on the blocking pool, at most `concurrency` at a time
/// (bounding memory: each granule's bytes are held until parsed).
#[derive(Debug)]
pub struct LocalWorker {
    source: Source,
    profile: Arc<ProductProfile>,
    permits: Semaphore,
    /// Virtualize from ranged reads of the metadata (None: fetch whole objects).
    ranged: Option<Ranged>,
}

/// How the worker reads only the metadata it needs.
#[derive(Debug, Clone)]
pub struct Ranged {
    pub options: imerg_virtualize::RangedOptions,
    /// One granule in this many is virtualized the whole-object way too and compared (the
    /// oracle, in production); 0 = never.
    pub verify_one_in: u64,
}

impl LocalWorker {
    pub fn new(source: Source, profile: Arc<ProductProfile>, concurrency: usize) -> Self {
        Self {
            source,
            profile,
            permits: Semaphore::new(concurrency.max(1)),
            ranged: None,
        }
    }

    /// Reads only the HDF5 metadata each granule needs (a few ranged GETs), falling back to the
    /// whole object for granules the ranged reader declines.
    pub fn with_ranged_reads(mut self, ranged: Ranged) -> Self {
        self.ranged = Some(ranged);
        self
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    pub fn profile(&self) -> &Arc<ProductProfile> {
        &self.profile
    }
}

#[async_trait]
impl Worker for LocalWorker {
    async fn virtualize(&self, id: &GranuleId) -> Result<GranuleRefs, IngestError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| IngestError::new(Reason::Shutdown, "worker shutting down"))?;
        let span = tracing::info_span!("granule", key = %id.key);
        async {
            if let Some(r) = &self.ranged
                && let Some(done) = self.ranged_reads(id, r).await
            {
                return done;
            }
            self.fetch_any_label(id).await
        }
        .instrument(span)
        .await
    }
}

impl LocalWorker {
    /// The granule from ranged reads; `None` to use the whole object instead (the object is not
    /// under its expected key, or the ranged reader declined it: counted by reason).
    async fn ranged_reads(
        &self,
        id: &GranuleId,
        r: &Ranged,
    ) -> Option<Result<GranuleRefs, IngestError>> {
        static SEEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let reader = self.source.ranges(&id.key);
        let refs = match read_ranged(&reader, id, &self.profile, &r.options).await {
            RangedRead::Read(read) => read.0,
            RangedRead::Whole { .. } => return None,
            RangedRead::Rejected(e) => return Some(Err(e)),
        };
        let n = SEEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if r.verify_one_in > 0 && n.is_multiple_of(r.verify_one_in) {
            // The oracle: the whole object through libhdf5 must give the same references.
            match self.fetch_any_label(id).await {
                Ok(whole) if whole == refs => {
                    // The whole-object path counted this granule as virtualized already.
                    metrics::counter!(m::RANGED_ORACLE_CHECKS, "result" => "match").increment(1);
                    return Some(Ok(refs));
                }
                Ok(whole) => {
                    metrics::counter!(m::RANGED_ORACLE_CHECKS, "result" => "mismatch").increment(1);
                    tracing::error!(key = %id.key, "ranged reads and the whole object disagree: using the whole object's references");
                    return Some(Ok(whole));
                }
                Err(e) => {
                    tracing::warn!(key = %id.key, error = %e, "the oracle check could not run")
                }
            }
        }
        metrics::counter!(m::GRANULES_VIRTUALIZED).increment(1);
        Some(Ok(refs))
    }

    /// The granule under its expected key; when that object does not exist, under the
    /// product's other version labels (a name whose label switched keeps its position), before
    /// calling it missing.
    async fn fetch_any_label(&self, id: &GranuleId) -> Result<GranuleRefs, IngestError> {
        let profile = Arc::clone(&self.profile);
        let first =
            fetch_then_parse(self.source.fetch(&id.key), id.clone(), Arc::clone(&profile)).await;
        if !first.as_ref().is_err_and(IngestError::is_gap) {
            return first;
        }
        for alt in profile.alternate_keys(id) {
            let Ok(alt_id) = profile.parse_key(&alt) else {
                continue;
            };
            match fetch_then_parse(self.source.fetch(&alt), alt_id, Arc::clone(&profile)).await {
                Err(e) if e.is_gap() => continue,
                other => {
                    tracing::info!(expected = %id.key, found = %alt, "granule found under another version label");
                    return other;
                }
            }
        }
        metrics::counter!(m::GRANULES_MISSING).increment(1);
        first
    }
}

/// Virtualizes a granule given by path or URL (`file://`, `s3://` with the standard AWS
/// variables), outside any configured source: the `virtualize` command.
pub async fn virtualize_url(
    profile: Arc<ProductProfile>,
    input: &str,
) -> Result<GranuleRefs, IngestError> {
    virtualize_url_with(profile, input, None)
        .await
        .map(|(g, _)| g)
}

/// How one granule's object was read, and what that cost (as the client counted it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchCost {
    /// Read by ranges (true) or whole.
    pub ranged: bool,
    /// Why the ranged reader declined, when it did and the whole object was read after it.
    pub fallback: Option<&'static str>,
    pub gets: u64,
    pub bytes: u64,
    /// Dependent round trips of the ranged reads (1 for a whole-object GET).
    pub round_trips: u32,
}

/// [`virtualize_url`], by ranged reads of the metadata when `ranged` is given (falling back to
/// the whole object as the worker does), with what the reads cost.
pub async fn virtualize_url_with(
    profile: Arc<ProductProfile>,
    input: &str,
    ranged: Option<&imerg_virtualize::RangedOptions>,
) -> Result<(GranuleRefs, FetchCost), IngestError> {
    let id = profile
        .parse_any(input)
        .map_err(|e| IngestError::new(Reason::NotAGranule, e.to_string()))?;
    let mut cost = FetchCost::default();
    if let Some(opts) = ranged {
        let reader = imerg_source::ranges_url(input)
            .map_err(|e| IngestError::new(reason_of(&e), e.to_string()))?;
        match read_ranged(&reader, &id, &profile, opts).await {
            RangedRead::Read(read) => {
                let (refs, stats) = *read;
                metrics::counter!(m::GRANULES_VIRTUALIZED).increment(1);
                let cost = FetchCost {
                    ranged: true,
                    fallback: None,
                    gets: stats.gets,
                    bytes: stats.bytes,
                    round_trips: stats.round_trips,
                };
                return Ok((refs, cost));
            }
            RangedRead::Whole { declined } => cost.fallback = declined,
            RangedRead::Rejected(e) => return Err(e),
        }
    }
    let fetched = imerg_source::fetch_url(input).await;
    if let Ok(f) = &fetched {
        cost.gets += 1;
        cost.bytes += f.bytes.len() as u64;
        cost.round_trips = 1;
    }
    let r = fetch_then_parse(async { fetched }, id, profile).await;
    if r.as_ref().is_err_and(IngestError::is_gap) {
        metrics::counter!(m::GRANULES_MISSING).increment(1);
    }
    r.map(|g| (g, cost))
}

/// What ranged reads made of a granule.
enum RangedRead {
    /// Its references, and what the reads cost.
    Read(Box<(GranuleRefs, imerg_hdf5::FetchStats)>),
    /// The whole object decides: the object is not under this name or is too large (the
    /// whole-object path gives that verdict without reading a body), or the ranged reader
    /// declined it (`declined`, counted by reason).
    Whole { declined: Option<&'static str> },
    /// Bad input, rejected (counted by reason).
    Rejected(IngestError),
}

/// Virtualizes a granule from ranged reads of `reader`: the one ranged path of the worker and
/// of the `virtualize` command, with its metrics. The object's size and version come from the
/// first response (no HEAD request).
async fn read_ranged(
    reader: &Arc<imerg_source::ObjectRanges>,
    id: &GranuleId,
    profile: &Arc<ProductProfile>,
    opts: &imerg_virtualize::RangedOptions,
) -> RangedRead {
    let object = imerg_refs::SourceObject {
        url: reader.url().to_string(),
        etag: None,
        last_modified: None,
        size: 0,
    };
    let t0 = Instant::now();
    let got = imerg_virtualize::virtualize_ranged(
        reader.clone(),
        id.clone(),
        object,
        Arc::clone(profile),
        opts,
    )
    .await;
    metrics::histogram!(m::PARSE_SECONDS).record(t0.elapsed().as_secs_f64());
    match got {
        Ok((refs, stats)) => {
            metrics::histogram!(m::RANGED_GETS).record(stats.gets as f64);
            metrics::histogram!(m::RANGED_BYTES).record(stats.bytes as f64);
            metrics::histogram!(m::RANGED_ROUND_TRIPS).record(f64::from(stats.round_trips));
            metrics::counter!(m::BYTES_FETCHED).increment(stats.bytes);
            RangedRead::Read(Box::new((refs, stats)))
        }
        Err(_) if reader.not_found() || reader.too_large() => RangedRead::Whole { declined: None },
        Err(e) if e.falls_back() => {
            metrics::counter!(m::RANGED_FALLBACKS, "reason" => e.reason()).increment(1);
            tracing::info!(key = %id.key, reason = e.reason(), error = %e, "ranged reads declined: reading the whole object");
            RangedRead::Whole {
                declined: Some(e.reason()),
            }
        }
        Err(e) => {
            let reason = Reason::from_label(e.reason());
            metrics::counter!(m::GRANULES_REJECTED, "reason" => reason.as_str()).increment(1);
            tracing::warn!(key = %id.key, %reason, error = %e, "granule rejected");
            RangedRead::Rejected(IngestError::new(reason, e.to_string()))
        }
    }
}

/// What a fetch error means for the granule.
fn reason_of(e: &SourceError) -> Reason {
    match e {
        SourceError::NotFound { .. } => Reason::NotFound,
        SourceError::TooLarge { .. } => Reason::TooLarge,
        SourceError::Unsupported { .. } => Reason::Source,
        _ => Reason::Transient,
    }
}

/// Fetch, then parse: the worker's whole job, metered.
async fn fetch_then_parse(
    fetch: impl Future<Output = Result<Fetched, SourceError>>,
    id: GranuleId,
    profile: Arc<ProductProfile>,
) -> Result<GranuleRefs, IngestError> {
    let t0 = Instant::now();
    let fetched = match fetch.await {
        Ok(f) => f,
        Err(e) => {
            let reason = reason_of(&e);
            // Bad input found by the fetch (an oversized object) is a rejection like one found
            // by the parse; a missing object is counted by the caller.
            if reason.is_bad_input() {
                metrics::counter!(m::GRANULES_REJECTED, "reason" => reason.as_str()).increment(1);
                tracing::warn!(key = %id.key, %reason, error = %e, "granule rejected");
            }
            return Err(IngestError::new(reason, format!("{}: {e}", id.key)));
        }
    };
    metrics::histogram!(m::FETCH_SECONDS).record(t0.elapsed().as_secs_f64());
    metrics::counter!(m::BYTES_FETCHED).increment(fetched.bytes.len() as u64);
    let t1 = Instant::now();
    let key = id.key.clone();
    // Held until the parse (and libhdf5's copy of the bytes) is done.
    let _budget = fetched.budget;
    let refs =
        imerg_virtualize::virtualize_bytes_blocking(fetched.bytes, id, fetched.object, profile)
            .await;
    metrics::histogram!(m::PARSE_SECONDS).record(t1.elapsed().as_secs_f64());
    match refs {
        Ok(g) => {
            metrics::counter!(m::GRANULES_VIRTUALIZED).increment(1);
            Ok(g)
        }
        Err(e) => {
            let reason = Reason::from_label(e.reason());
            metrics::counter!(m::GRANULES_REJECTED, "reason" => reason.as_str()).increment(1);
            tracing::warn!(%key, %reason, error = %e, "granule rejected");
            Err(IngestError::new(reason, e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After the Late run's switch to V07C, a granule still named V07B is found under that name,
    /// at the same position; a granule under neither name is missing.
    #[tokio::test]
    async fn a_granule_under_the_other_version_label_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let profile = ProductProfile::late_v07();
        let start = imerg_catalog::parse_time("2026-03-10T12:00").unwrap();
        let id = profile.granule_at(start).unwrap();
        assert!(id.key.contains(".V07C."), "{}", id.key);
        let old_name = profile.key_with_label(start, "V07B");
        imerg_synth::write_granule(
            &dir.path().join(&old_name),
            &profile,
            start,
            &imerg_synth::SynthOptions::default(),
        )
        .unwrap();
        let source = Source::new(
            &imerg_catalog::SourceLocation::Local {
                root: dir.path().to_path_buf(),
            },
            None,
        )
        .unwrap();
        let worker = LocalWorker::new(source, Arc::new(profile.clone()), 1);
        let g = worker.virtualize(&id).await.unwrap();
        assert_eq!(g.key, old_name);
        assert_eq!(g.time_index, id.time_index);
        let later = profile
            .granule_at(start + chrono::Duration::minutes(30))
            .unwrap();
        let e = worker.virtualize(&later).await.unwrap_err();
        assert!(e.is_gap(), "{e:?}");
    }
}
