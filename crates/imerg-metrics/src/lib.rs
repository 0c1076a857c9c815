//! Every metric imerg-ingest exports: one constant per name, so the code, the alert rules and the
//! dashboard (deploy/) agree, and [`describe_all`] to register help texts and units.

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
/// Commit attempts that failed (retried or not).
pub const COMMIT_FAILURES: &str = "imerg_commit_failures_total";
/// Conflicts on the branch: another writer is committing. Must stay 0.
pub const SECOND_WRITER: &str = "imerg_second_writer_detected_total";
/// Now minus the start time of the newest granule in the store.
pub const INGEST_LAG_SECONDS: &str = "imerg_ingest_lag_seconds";
/// Granules being fetched, virtualized or waiting for their commit.
pub const IN_FLIGHT: &str = "imerg_granules_in_flight";
/// Backfill progress of running jobs, by `state` (expected, present_already, committed,
/// missing_at_source, failed).
pub const BACKFILL_GRANULES: &str = "imerg_backfill_granules";
/// Backfill jobs by `state` (running, succeeded, failed, cancelled).
pub const BACKFILL_JOBS: &str = "imerg_backfill_jobs";
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

/// Registers help texts and units with the installed recorder.
pub fn describe_all() {
    describe_counter!(
        GRANULES_RECEIVED,
        "Granules that entered the pipeline, by source"
    );
    describe_counter!(GRANULES_VIRTUALIZED, "Granules fetched and virtualized");
    describe_counter!(
        GRANULES_COMMITTED,
        "Granules durable in the store, by outcome"
    );
    describe_counter!(GRANULES_REJECTED, "Granules rejected, by reason");
    describe_counter!(GRANULES_MISSING, "Expected granules absent from the source");
    describe_counter!(
        BYTES_FETCHED,
        Unit::Bytes,
        "Bytes of granule objects fetched"
    );
    describe_histogram!(FETCH_SECONDS, Unit::Seconds, "Granule fetch latency");
    describe_histogram!(PARSE_SECONDS, Unit::Seconds, "HDF5 virtualization latency");
    describe_histogram!(COMMIT_SECONDS, Unit::Seconds, "Latency of one batch commit");
    describe_histogram!(BATCH_GRANULES, "Granules per committed batch");
    describe_counter!(COMMITS, "Commits made");
    describe_counter!(COMMIT_FAILURES, "Failed commit attempts");
    describe_counter!(
        SECOND_WRITER,
        "Branch conflicts: another writer is committing"
    );
    describe_gauge!(
        INGEST_LAG_SECONDS,
        Unit::Seconds,
        "Now minus the newest granule's start time"
    );
    describe_gauge!(IN_FLIGHT, "Granules in the pipeline");
    describe_gauge!(
        BACKFILL_GRANULES,
        "Backfill progress of running jobs, by state"
    );
    describe_gauge!(BACKFILL_JOBS, "Backfill jobs, by state");
    describe_gauge!(MANIFESTS, "Manifests referenced by the branch tip");
    describe_gauge!(
        LARGEST_MANIFEST_BYTES,
        Unit::Bytes,
        "Largest manifest of the branch tip"
    );
    describe_gauge!(
        MANIFEST_MAX_BYTES,
        Unit::Bytes,
        "Configured manifest size limit"
    );
    describe_gauge!(GRANULES_PRESENT, "Granules present in the store");
    describe_gauge!(
        CREDENTIALS_EXPIRY_SECONDS,
        Unit::Seconds,
        "Seconds until source credentials expire"
    );
    describe_counter!(
        UNAUTHENTICATED,
        "Operator requests rejected for a missing or wrong token"
    );
    describe_counter!(SQS_MESSAGES, "SQS messages handled, by outcome and reason");
    describe_histogram!(
        SQS_MESSAGE_LAG_SECONDS,
        Unit::Seconds,
        "From a notification's SentTimestamp to its deletion (granules durable)"
    );
    describe_counter!(SQS_RECEIVE_ERRORS, "Failed SQS receive calls");
    describe_counter!(
        SQS_VISIBILITY_EXTENSIONS,
        "Visibility extensions of in-flight messages"
    );
    describe_gauge!(SQS_IN_FLIGHT, "SQS messages being processed");
}

/// Every metric name, for checks that alert rules and dashboards only use exported metrics.
pub const ALL: &[&str] = &[
    GRANULES_RECEIVED,
    GRANULES_VIRTUALIZED,
    GRANULES_COMMITTED,
    GRANULES_REJECTED,
    GRANULES_MISSING,
    BYTES_FETCHED,
    FETCH_SECONDS,
    PARSE_SECONDS,
    COMMIT_SECONDS,
    BATCH_GRANULES,
    COMMITS,
    COMMIT_FAILURES,
    SECOND_WRITER,
    INGEST_LAG_SECONDS,
    IN_FLIGHT,
    BACKFILL_GRANULES,
    BACKFILL_JOBS,
    MANIFESTS,
    LARGEST_MANIFEST_BYTES,
    MANIFEST_MAX_BYTES,
    GRANULES_PRESENT,
    CREDENTIALS_EXPIRY_SECONDS,
    UNAUTHENTICATED,
    SQS_MESSAGES,
    SQS_MESSAGE_LAG_SECONDS,
    SQS_RECEIVE_ERRORS,
    SQS_VISIBILITY_EXTENSIONS,
    SQS_IN_FLIGHT,
];
