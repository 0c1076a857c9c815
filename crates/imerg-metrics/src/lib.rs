//! Every metric imerg-ingest exports: one constant per name, so the code, the alert rules and the
//! dashboard (deploy/) agree, and one [`TABLE`] with each metric's kind, unit, help text and
//! histogram buckets, from which [`describe_all`], [`ALL`] and the exporter's buckets come.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Granules that entered the pipeline, by `source` (backfill, watcher, sqs).
pub const GRANULES_RECEIVED: &str = "imerg_granules_received_total";
/// Granules fetched and virtualized.
pub const GRANULES_VIRTUALIZED: &str = "imerg_granules_virtualized_total";
/// Granules durable in the store, by `outcome` (added, replaced, duplicate).
pub const GRANULES_COMMITTED: &str = "imerg_granules_committed_total";
/// Granules rejected, by `reason` (not_hdf5, truncated, layout, unsupported_filter, ...).
pub const GRANULES_REJECTED: &str = "imerg_granules_rejected_total";
/// Granules expected but absent from the source (gaps).
pub const GRANULES_MISSING: &str = "imerg_granules_missing_at_source_total";
/// Bytes of granule objects fetched.
pub const BYTES_FETCHED: &str = "imerg_bytes_fetched_total";
/// Fetch latency.
pub const FETCH_SECONDS: &str = "imerg_fetch_seconds";
/// HDF5 parse (virtualize) latency.
pub const PARSE_SECONDS: &str = "imerg_parse_seconds";
/// Commit latency (one batch).
pub const COMMIT_SECONDS: &str = "imerg_commit_seconds";
/// Granules per committed batch.
pub const BATCH_GRANULES: &str = "imerg_batch_granules";
/// Commits made.
pub const COMMITS: &str = "imerg_commits_total";
/// 1, labelled with the build's `version` and `revision` (git commit, when the build knew it).
pub const BUILD_INFO: &str = "imerg_build_info";
/// RPCs handled by this process's gRPC server, by `grpc_service`, `grpc_method` and
/// `grpc_code` (the go-grpc-prometheus names).
pub const GRPC_SERVER_HANDLED: &str = "grpc_server_handled_total";
/// Time to the response of an RPC (its headers, for streams), by `grpc_service` and
/// `grpc_method`.
pub const GRPC_SERVER_HANDLING_SECONDS: &str = "grpc_server_handling_seconds";
/// Months tagged complete (`<product>-<label>-<YYYY-MM>`).
pub const MONTHS_TAGGED: &str = "imerg_months_tagged_total";
/// Commit attempts that failed (retried or not).
pub const COMMIT_FAILURES: &str = "imerg_commit_failures_total";
/// Conflicts on the branch: another writer is committing. Must stay 0.
pub const SECOND_WRITER: &str = "imerg_second_writer_detected_total";
/// Now minus the start time of the newest granule in the store.
pub const INGEST_LAG_SECONDS: &str = "imerg_ingest_lag_seconds";
/// End-to-end time of one granule through the ingest path (fetch, parse, commit), by `source`.
pub const INGEST_SECONDS: &str = "imerg_granule_ingest_seconds";
/// Granules through the ingest path, by `source` and `result` (an outcome: added, replaced,
/// duplicate; or the reason it did not land: not_hdf5, not_found, transient, ...).
pub const GRANULES_INGESTED: &str = "imerg_granules_ingested_total";
/// Chunks read back through the store after a commit (or by `verify`), by `result` (ok, or the
/// reason: missing, source, decode, metadata).
pub const VALIDATED_CHUNKS: &str = "imerg_validated_chunks_total";
/// Chunks that did not read back (the source object changed behind the store's back, or the
/// bytes do not decode), by `reason`. Must stay 0.
pub const VALIDATION_FAILURES: &str = "imerg_validation_failures_total";
/// Reconciliation sweeps, by `result` (ok, error).
pub const RECONCILE_SWEEPS: &str = "imerg_reconcile_sweeps_total";
/// Granules a sweep found at the source (or in CMR) that the store did not hold.
pub const RECONCILE_FOUND: &str = "imerg_reconcile_found_total";
/// Granules of the last sweep's window still missing after it.
pub const RECONCILE_MISSING: &str = "imerg_reconcile_missing_granules";
/// Of those, the granules older than the product's expected latency: they should exist by now.
pub const RECONCILE_OVERDUE: &str = "imerg_reconcile_overdue_granules";
/// When the last sweep finished (Unix seconds).
pub const RECONCILE_LAST_SWEEP: &str = "imerg_reconcile_last_sweep_timestamp_seconds";
/// The product's expected latency (from its profile), for alert thresholds; absent for products
/// without one (Final).
pub const EXPECTED_LATENCY_SECONDS: &str = "imerg_product_expected_latency_seconds";
/// GET requests per granule virtualized by ranged reads (metadata only).
pub const RANGED_GETS: &str = "imerg_ranged_gets_per_granule";
/// Bytes fetched per granule virtualized by ranged reads.
pub const RANGED_BYTES: &str = "imerg_ranged_bytes_per_granule";
/// Dependent round trips per granule virtualized by ranged reads.
pub const RANGED_ROUND_TRIPS: &str = "imerg_ranged_round_trips_per_granule";
/// Granules the ranged reader handed to the whole-object path, by `reason` (too_scattered,
/// ranged_unsupported).
pub const RANGED_FALLBACKS: &str = "imerg_ranged_fallbacks_total";
/// Ranged results checked against the whole-object path, by `result` (match, mismatch). A
/// mismatch must stay 0.
pub const RANGED_ORACLE_CHECKS: &str = "imerg_ranged_oracle_checks_total";
/// Granules being fetched, virtualized or waiting for their commit.
pub const IN_FLIGHT: &str = "imerg_granules_in_flight";
/// Backfill progress of running jobs, by `state` (expected, present_already, committed,
/// missing_at_source, failed).
pub const BACKFILL_GRANULES: &str = "imerg_backfill_granules";
/// Backfill jobs by `state` (running, succeeded, failed, cancelled).
pub const BACKFILL_JOBS: &str = "imerg_backfill_jobs";
/// Backfill jobs that finished, by `state` (succeeded, failed, cancelled): a counter, for
/// `increase()` (the `imerg_backfill_jobs` gauge counts them too, for compatibility).
pub const BACKFILL_JOBS_FINISHED: &str = "imerg_backfill_jobs_finished_total";
/// Start time of the newest granule in the store (Unix seconds): alert on `time() - ...`.
pub const LAST_GRANULE_TIMESTAMP: &str = "imerg_last_granule_timestamp_seconds";
/// When this process's committer last made a commit durable (Unix seconds).
pub const LAST_COMMIT_TIMESTAMP: &str = "imerg_last_commit_timestamp_seconds";
/// When the Earthdata S3 credentials in use expire (Unix seconds).
pub const CREDENTIALS_EXPIRY_TIMESTAMP: &str = "imerg_credentials_expiry_timestamp_seconds";
/// Manifests referenced by the branch tip.
pub const MANIFESTS: &str = "imerg_manifests";
/// Size of the largest manifest of the branch tip.
pub const LARGEST_MANIFEST_BYTES: &str = "imerg_largest_manifest_bytes";
/// The configured manifest size limit.
pub const MANIFEST_MAX_BYTES: &str = "imerg_manifest_max_bytes";
/// Granules present in the store.
pub const GRANULES_PRESENT: &str = "imerg_granules_present";
/// Seconds until the source credentials expire (Earthdata temporary credentials).
pub const CREDENTIALS_EXPIRY_SECONDS: &str = "imerg_credentials_expiry_seconds";
/// Requests to operator RPCs rejected for a missing or wrong token.
pub const UNAUTHENTICATED: &str = "imerg_unauthenticated_requests_total";

/// SQS messages handled, by `outcome` (deleted, kept, delete_failed) and `reason` (for kept:
/// malformed, unknown_shape, not_hdf5, truncated, layout, missing, ...; "" otherwise).
pub const SQS_MESSAGES: &str = "imerg_sqs_messages_total";
/// End-to-end lag of a notification: from the queue's SentTimestamp to the message's deletion
/// (its granules durable in the store).
pub const SQS_MESSAGE_LAG_SECONDS: &str = "imerg_sqs_message_lag_seconds";
/// Receive calls to SQS that failed (queue unreachable, permissions); readiness fails meanwhile.
pub const SQS_RECEIVE_ERRORS: &str = "imerg_sqs_receive_errors_total";
/// Visibility extensions of messages still in flight.
pub const SQS_VISIBILITY_EXTENSIONS: &str = "imerg_sqs_visibility_extensions_total";
/// Messages being processed by the listener (received, not yet deleted or released).
pub const SQS_IN_FLIGHT: &str = "imerg_sqs_messages_in_flight";
/// Age of the oldest virtual commit the native store does not reflect yet (0 when caught up).
pub const NATIVE_LAG_SECONDS: &str = "imerg_native_lag_seconds";
/// The configured --native-lag: the lag alert compares against it.
pub const NATIVE_LAG_TARGET_SECONDS: &str = "imerg_native_lag_target_seconds";
/// Wall time of one native update (all its commits).
pub const NATIVE_UPDATE_SECONDS: &str = "imerg_native_update_seconds";
/// Bytes of shards the native writer wrote.
pub const NATIVE_BYTES_WRITTEN: &str = "imerg_native_bytes_written_total";
/// Time steps (per data variable) the native writer applied.
pub const NATIVE_STEPS_APPLIED: &str = "imerg_native_steps_applied_total";
/// Native updates, by outcome (`ok`, `error`).
pub const NATIVE_UPDATES: &str = "imerg_native_updates_total";
/// Time steps of the virtual store the native store holds (granule_present at its snapshot).
pub const NATIVE_GRANULES_PRESENT: &str = "imerg_native_granules_present";

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub help: &'static str,
    /// Histogram buckets (upper bounds); `None` for counters and gauges.
    pub buckets: Option<&'static [f64]>,
}

/// Latencies from a millisecond to a minute.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Granules per batch, up to a few commits' worth.
const COUNTS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 24.0, 48.0, 96.0, 240.0, 480.0, 960.0];
/// Small counts (requests, round trips per granule).
const SMALL: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 24.0, 32.0,
];
/// Bytes per granule, 16 KiB to 16 MiB.
const BYTES: &[f64] = &[
    16384.0, 65536.0, 131072.0, 262144.0, 524288.0, 1048576.0, 2097152.0, 4194304.0, 8388608.0,
    16777216.0,
];
/// Notification lag, from half a second to an hour.
const LAG: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

const fn counter(name: &'static str, unit: Option<Unit>, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        unit,
        help,
        buckets: None,
    }
}
const fn gauge(name: &'static str, unit: Option<Unit>, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Gauge,
        unit,
        help,
        buckets: None,
    }
}
const fn histogram(
    name: &'static str,
    unit: Option<Unit>,
    help: &'static str,
    buckets: &'static [f64],
) -> Metric {
    Metric {
        name,
        kind: Kind::Histogram,
        unit,
        help,
        buckets: Some(buckets),
    }
}

/// Every metric, once.
pub const TABLE: &[Metric] = &[
    counter(
        GRANULES_RECEIVED,
        None,
        "Granules that entered the pipeline, by source",
    ),
    counter(
        GRANULES_VIRTUALIZED,
        None,
        "Granules fetched and virtualized",
    ),
    counter(
        GRANULES_COMMITTED,
        None,
        "Granules durable in the store, by outcome",
    ),
    counter(GRANULES_REJECTED, None, "Granules rejected, by reason"),
    counter(
        GRANULES_MISSING,
        None,
        "Expected granules absent from the source",
    ),
    counter(
        BYTES_FETCHED,
        Some(Unit::Bytes),
        "Bytes of granule objects fetched",
    ),
    histogram(
        FETCH_SECONDS,
        Some(Unit::Seconds),
        "Granule fetch latency",
        SECONDS,
    ),
    histogram(
        PARSE_SECONDS,
        Some(Unit::Seconds),
        "HDF5 virtualization latency",
        SECONDS,
    ),
    histogram(
        COMMIT_SECONDS,
        Some(Unit::Seconds),
        "Latency of one batch commit",
        SECONDS,
    ),
    histogram(BATCH_GRANULES, None, "Granules per committed batch", COUNTS),
    histogram(
        INGEST_SECONDS,
        Some(Unit::Seconds),
        "One granule through fetch, parse and commit, by source",
        SECONDS,
    ),
    counter(
        GRANULES_INGESTED,
        None,
        "Granules through the ingest path, by source and result (outcome or reason)",
    ),
    counter(
        VALIDATED_CHUNKS,
        None,
        "Chunks read back through the store after a commit, by result",
    ),
    counter(
        VALIDATION_FAILURES,
        None,
        "Chunks that did not read back through the store, by reason",
    ),
    counter(RECONCILE_SWEEPS, None, "Reconciliation sweeps, by result"),
    counter(
        RECONCILE_FOUND,
        None,
        "Granules a sweep found at the source that the store did not hold",
    ),
    gauge(
        RECONCILE_MISSING,
        None,
        "Granules of the last sweep's window still missing",
    ),
    gauge(
        RECONCILE_OVERDUE,
        None,
        "Missing granules older than the product's expected latency",
    ),
    gauge(
        RECONCILE_LAST_SWEEP,
        Some(Unit::Seconds),
        "When the last reconciliation sweep finished (Unix time)",
    ),
    gauge(
        EXPECTED_LATENCY_SECONDS,
        Some(Unit::Seconds),
        "The product's expected latency, from its profile",
    ),
    histogram(
        RANGED_GETS,
        None,
        "GET requests per granule virtualized by ranged reads",
        SMALL,
    ),
    histogram(
        RANGED_BYTES,
        Some(Unit::Bytes),
        "Bytes fetched per granule virtualized by ranged reads",
        BYTES,
    ),
    histogram(
        RANGED_ROUND_TRIPS,
        None,
        "Dependent round trips per granule virtualized by ranged reads",
        SMALL,
    ),
    counter(
        RANGED_FALLBACKS,
        None,
        "Granules the ranged reader handed to the whole-object path, by reason",
    ),
    counter(
        RANGED_ORACLE_CHECKS,
        None,
        "Ranged results checked against the whole-object path, by result",
    ),
    counter(COMMITS, None, "Commits made"),
    counter(COMMIT_FAILURES, None, "Failed commit attempts"),
    gauge(
        BUILD_INFO,
        None,
        "Always 1: the running build's version and revision as labels",
    ),
    counter(
        GRPC_SERVER_HANDLED,
        None,
        "RPCs handled, by service, method and status code",
    ),
    histogram(
        GRPC_SERVER_HANDLING_SECONDS,
        Some(Unit::Seconds),
        "Time to an RPC's response, by service and method",
        &[0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 60.0],
    ),
    counter(
        MONTHS_TAGGED,
        None,
        "Months tagged once every granule in them landed",
    ),
    counter(
        SECOND_WRITER,
        None,
        "Branch conflicts: another writer is committing",
    ),
    gauge(
        INGEST_LAG_SECONDS,
        Some(Unit::Seconds),
        "Now minus the newest granule's start time",
    ),
    gauge(IN_FLIGHT, None, "Granules in the pipeline"),
    gauge(
        BACKFILL_GRANULES,
        None,
        "Backfill progress of running jobs, by state",
    ),
    gauge(BACKFILL_JOBS, None, "Backfill jobs, by state"),
    counter(
        BACKFILL_JOBS_FINISHED,
        None,
        "Backfill jobs finished, by final state",
    ),
    gauge(
        LAST_GRANULE_TIMESTAMP,
        Some(Unit::Seconds),
        "Start time of the newest granule in the store, Unix seconds",
    ),
    gauge(
        LAST_COMMIT_TIMESTAMP,
        Some(Unit::Seconds),
        "When the last commit became durable, Unix seconds",
    ),
    gauge(
        CREDENTIALS_EXPIRY_TIMESTAMP,
        Some(Unit::Seconds),
        "When the Earthdata S3 credentials expire, Unix seconds",
    ),
    gauge(MANIFESTS, None, "Manifests referenced by the branch tip"),
    gauge(
        LARGEST_MANIFEST_BYTES,
        Some(Unit::Bytes),
        "Largest manifest of the branch tip",
    ),
    gauge(
        MANIFEST_MAX_BYTES,
        Some(Unit::Bytes),
        "Configured manifest size limit",
    ),
    gauge(GRANULES_PRESENT, None, "Granules present in the store"),
    gauge(
        CREDENTIALS_EXPIRY_SECONDS,
        Some(Unit::Seconds),
        "Seconds until source credentials expire",
    ),
    counter(
        UNAUTHENTICATED,
        None,
        "Operator requests rejected for a missing or wrong token",
    ),
    counter(
        SQS_MESSAGES,
        None,
        "SQS messages handled, by outcome and reason",
    ),
    histogram(
        SQS_MESSAGE_LAG_SECONDS,
        Some(Unit::Seconds),
        "From a notification's SentTimestamp to its deletion (granules durable)",
        LAG,
    ),
    counter(SQS_RECEIVE_ERRORS, None, "Failed SQS receive calls"),
    counter(
        SQS_VISIBILITY_EXTENSIONS,
        None,
        "Visibility extensions of in-flight messages",
    ),
    gauge(SQS_IN_FLIGHT, None, "SQS messages being processed"),
    gauge(
        NATIVE_LAG_SECONDS,
        Some(Unit::Seconds),
        "Age of the oldest virtual commit the native store does not reflect yet",
    ),
    gauge(
        NATIVE_LAG_TARGET_SECONDS,
        Some(Unit::Seconds),
        "The native writer's configured lag (--native-lag)",
    ),
    histogram(
        NATIVE_UPDATE_SECONDS,
        Some(Unit::Seconds),
        "Wall time of one native store update",
        LAG,
    ),
    counter(
        NATIVE_BYTES_WRITTEN,
        Some(Unit::Bytes),
        "Shard bytes written to the native store",
    ),
    counter(
        NATIVE_STEPS_APPLIED,
        None,
        "Time steps of data variables applied to the native store",
    ),
    counter(NATIVE_UPDATES, None, "Native store updates, by outcome"),
    gauge(
        NATIVE_GRANULES_PRESENT,
        None,
        "Granules the native store reflects",
    ),
];

/// Every metric name, for checks that alert rules and dashboards only use exported metrics.
pub static ALL: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| TABLE.iter().map(|m| m.name).collect());

/// Registers help texts and units with the installed recorder.
pub fn describe_all() {
    for m in TABLE {
        match (m.kind, m.unit) {
            (Kind::Counter, Some(u)) => describe_counter!(m.name, u, m.help),
            (Kind::Counter, None) => describe_counter!(m.name, m.help),
            (Kind::Gauge, Some(u)) => describe_gauge!(m.name, u, m.help),
            (Kind::Gauge, None) => describe_gauge!(m.name, m.help),
            (Kind::Histogram, Some(u)) => describe_histogram!(m.name, u, m.help),
            (Kind::Histogram, None) => describe_histogram!(m.name, m.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_once_and_histograms_have_buckets() {
        let mut names: Vec<&str> = TABLE.iter().map(|m| m.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "a metric is listed twice");
        for m in TABLE {
            // Ours, or the standard gRPC server metrics under their usual names.
            assert!(
                m.name.starts_with("imerg_") || m.name.starts_with("grpc_server_"),
                "{}",
                m.name
            );
            assert_eq!(m.kind == Kind::Histogram, m.buckets.is_some(), "{}", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
        }
    }
}
