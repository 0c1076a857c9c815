//! The process-wide Prometheus recorder, installed once with the buckets of
//! [`imerg_metrics::TABLE`]: several services in one process (tests) share it.

use std::sync::OnceLock;

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
    Ok(handle)
}

/// Installs the recorder on first use; later calls get the same handle.
pub fn prometheus() -> Result<PrometheusHandle, ServiceError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(install)
        .clone()
        .map_err(ServiceError::Metrics)
}
