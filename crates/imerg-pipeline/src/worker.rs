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
}

impl LocalWorker {
    pub fn new(source: Source, profile: Arc<ProductProfile>, concurrency: usize) -> Self {
        Self {
            source,
            profile,
            permits: Semaphore::new(concurrency.max(1)),
        }
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
        fetch_then_parse(
            self.source.fetch(&id.key),
            id.clone(),
            Arc::clone(&self.profile),
        )
        .instrument(span)
        .await
    }
}

/// Virtualizes a granule given by path or URL (`file://`, `s3://` with the standard AWS
/// variables), outside any configured source: the `virtualize` command.
pub async fn virtualize_url(
    profile: Arc<ProductProfile>,
    input: &str,
) -> Result<GranuleRefs, IngestError> {
    let id = profile
        .parse_any(input)
        .map_err(|e| IngestError::new(Reason::NotAGranule, e.to_string()))?;
    fetch_then_parse(imerg_source::fetch_url(input), id, profile).await
}

/// What a fetch error means for the granule.
fn reason_of(e: &SourceError) -> Reason {
    match e {
        SourceError::NotFound { .. } => Reason::NotFound,
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
            if reason == Reason::NotFound {
                metrics::counter!(m::GRANULES_MISSING).increment(1);
            }
            return Err(IngestError::new(reason, format!("{}: {e}", id.key)));
        }
    };
    metrics::histogram!(m::FETCH_SECONDS).record(t0.elapsed().as_secs_f64());
    metrics::counter!(m::BYTES_FETCHED).increment(fetched.bytes.len() as u64);
    let t1 = Instant::now();
    let key = id.key.clone();
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
