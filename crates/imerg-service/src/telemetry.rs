//! The process-wide Prometheus recorder, installed once with the buckets of
//! [`imerg_metrics::TABLE`] (several services in one process, as in tests, share it), and the
//! gauges refreshed in the background (the store's status, the credentials' expiry), the
//! process metrics collected on each scrape, and `imerg_build_info`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use imerg_dataset::Dataset;
use imerg_metrics as m;
use tokio_util::sync::CancellationToken;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::ServiceError;

fn install() -> Result<PrometheusHandle, String> {
    let mut b = PrometheusBuilder::new();
    for m in imerg_metrics::TABLE {
        if let Some(buckets) = m.buckets {
            b = b
                .set_buckets_for_metric(Matcher::Full(m.name.into()), buckets)
                .map_err(|e| e.to_string())?;
        }
    }
    let recorder = b.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    imerg_metrics::describe_all();
    process_collector().describe();
    metrics::gauge!(
        m::BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "revision" => option_env!("IMERG_GIT_REVISION").unwrap_or("unknown"),
    )
    .set(1.0);
    Ok(handle)
}

/// The standard `process_*` metrics (CPU seconds, resident and virtual memory, open and maximum
/// file descriptors, threads, start time), read from /proc on each scrape.
pub(crate) fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Installs the recorder on first use; later calls get the same handle.
pub fn prometheus() -> Result<PrometheusHandle, ServiceError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(install)
        .clone()
        .map_err(ServiceError::Metrics)
}

/// Starts the background gauges until `stop`: the store's status (roles with a repository) and
/// the Earthdata credentials' expiry (when configured).
pub(crate) fn spawn_gauges(
    dataset: Option<Arc<Dataset>>,
    earthdata: Option<Arc<imerg_credentials::EarthdataCredentialProvider>>,
    stop: CancellationToken,
) {
    if let Some(ds) = dataset {
        tokio::spawn(refresh_gauges(ds, stop.clone()));
    }
    if let Some(p) = earthdata {
        tokio::spawn(async move {
            loop {
                if let Some(s) = p.seconds_until_expiry() {
                    metrics::gauge!(m::CREDENTIALS_EXPIRY_SECONDS).set(s);
                }
                if let Some(t) = p.expires_at() {
                    metrics::gauge!(m::CREDENTIALS_EXPIRY_TIMESTAMP).set(t.timestamp() as f64);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(15)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        });
    }
}

/// Status gauges of the store, refreshed every 15 s until `stop`.
async fn refresh_gauges(dataset: Arc<Dataset>, stop: CancellationToken) {
    loop {
        if let Ok(st) = dataset.status_shared().await {
            metrics::gauge!(m::MANIFESTS).set(st.manifests as f64);
            metrics::gauge!(m::LARGEST_MANIFEST_BYTES).set(st.largest_manifest_bytes as f64);
            metrics::gauge!(m::GRANULES_PRESENT).set(st.granules_present as f64);
            if let Some(t) = st.last_granule {
                let lag = (chrono::Utc::now() - t).num_milliseconds() as f64 / 1000.0;
                metrics::gauge!(m::INGEST_LAG_SECONDS).set(lag);
                metrics::gauge!(m::LAST_GRANULE_TIMESTAMP).set(t.timestamp() as f64);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(15)) => {}
            _ = stop.cancelled() => return,
        }
    }
}
