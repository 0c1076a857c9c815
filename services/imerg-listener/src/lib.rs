//! The SQS listener: long-polls the queue in batches, turns each message into granule keys
//! (imerg-notify), hands them to the worker and the committer, and deletes the message only once
//! every granule it names is durable in the store (or already there). While a message is in
//! flight its visibility is extended, up to a cap. A message that cannot be processed (malformed,
//! unknown shape, bad granule, object missing) is left alone so the queue's redrive policy moves
//! it to the dead-letter queue; the listener keeps going.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use futures::StreamExt as _;
use imerg_catalog::ProductProfile;
use imerg_metrics as m;
use imerg_notify::{Action, Notification, parse_message};
use imerg_pipeline::{Appender, Worker};
use tokio::sync::watch;

/// How the listener polls and holds messages.
#[derive(Debug, Clone)]
pub struct SqsConfig {
    pub queue_url: String,
    /// An SQS-compatible endpoint (a local server); None = AWS.
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    /// Long-poll wait (seconds, at most 20).
    pub wait_seconds: i32,
    /// Messages per receive (at most 10).
    pub max_messages: i32,
    /// Visibility timeout set on receive and on each extension (seconds).
    pub visibility_timeout: i32,
    /// Extend visibility this often while a message is in flight.
    pub extend_every: Duration,
    /// Stop extending after this long (the message then reappears and is retried or dead-lettered).
    pub visibility_cap: Duration,
    /// Messages processed at once.
    pub max_in_flight: usize,
}

impl SqsConfig {
    pub fn new(queue_url: impl Into<String>) -> Self {
        Self {
            queue_url: queue_url.into(),
            endpoint_url: None,
            region: None,
            wait_seconds: 20,
            max_messages: 10,
            visibility_timeout: 120,
            extend_every: Duration::from_secs(60),
            visibility_cap: Duration::from_secs(1800),
            max_in_flight: 64,
        }
    }
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageOutcome {
    /// Every granule it names is durable (or there was nothing to do): delete it.
    Done { granules: usize },
    /// Leave it: it reappears after the visibility timeout and, after the redrive count, moves
    /// to the dead-letter queue. The reason is the metric label.
    Keep { reason: String, message: String },
}

/// Builds the SQS client from the standard AWS chain plus the configured endpoint and region.
pub async fn client(cfg: &SqsConfig) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(r) = &cfg.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    if let Some(e) = &cfg.endpoint_url {
        loader = loader.endpoint_url(e);
    }
    Client::new(&loader.load().await)
}

/// Processes one message body: every granule it announces must become durable.
pub async fn handle_body(
    body: &str,
    profile: &ProductProfile,
    worker: &dyn Worker,
    appender: &dyn Appender,
) -> MessageOutcome {
    let notes = match parse_message(body) {
        Ok(n) => n,
        Err(e) => {
            metrics::counter!(m::GRANULES_REJECTED, "reason" => e.reason()).increment(1);
            return MessageOutcome::Keep {
                reason: e.reason().into(),
                message: e.to_string(),
            };
        }
    };
    let mut keys = Vec::new();
    for n in notes {
        let (reference, action) = match n {
            Notification::Test => continue,
            Notification::Object { key, action, .. } => (key, action),
            Notification::Granule { reference, action } => (reference, action),
        };
        match profile.parse_any(&reference) {
            Ok(id) if action == Action::Removed => {
                // The store keeps its references (they fail loudly on read once the object is
                // gone); removals are counted and logged for operators.
                metrics::counter!(m::GRANULES_RECEIVED, "source" => "sqs_removed").increment(1);
                tracing::warn!(key = %id.key, "source object removed; the store keeps its references");
            }
            Ok(id) => keys.push(id.key),
            Err(e) => {
                metrics::counter!(m::GRANULES_RECEIVED, "source" => "sqs_ignored").increment(1);
                tracing::info!(%reference, reason = %e, "ignoring an object that is not a granule of the product");
            }
        }
    }
    let mut done = 0;
    for key in keys {
        metrics::counter!(m::GRANULES_RECEIVED, "source" => "sqs").increment(1);
        let refs = match worker.virtualize(&key).await {
            Ok(r) => r,
            Err(e) => {
                return MessageOutcome::Keep {
                    reason: e.reason().into(),
                    message: e.to_string(),
                };
            }
        };
        if let Err(e) = appender.append(refs).await {
            return MessageOutcome::Keep {
                reason: e.reason().into(),
                message: e.to_string(),
            };
        }
        done += 1;
    }
    MessageOutcome::Done { granules: done }
}

/// Long-polls the queue until `shutdown`; in-flight messages finish (or are left undeleted).
pub async fn run(
    cfg: SqsConfig,
    profile: Arc<ProductProfile>,
    worker: Arc<dyn Worker>,
    appender: Arc<dyn Appender>,
    mut shutdown: watch::Receiver<bool>,
) {
    let sqs = client(&cfg).await;
    let permits = Arc::new(tokio::sync::Semaphore::new(cfg.max_in_flight.max(1)));
    let mut in_flight = futures::stream::FuturesUnordered::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let receive = sqs
            .receive_message()
            .queue_url(&cfg.queue_url)
            .max_number_of_messages(cfg.max_messages)
            .wait_time_seconds(cfg.wait_seconds)
            .visibility_timeout(cfg.visibility_timeout)
            .send();
        let resp = tokio::select! {
            r = receive => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let messages = match resp {
            Ok(r) => r.messages.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "receiving from SQS failed; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        for msg in messages {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                break;
            };
            let (sqs, cfg, profile, worker, appender) = (
                sqs.clone(),
                cfg.clone(),
                Arc::clone(&profile),
                Arc::clone(&worker),
                Arc::clone(&appender),
            );
            in_flight.push(tokio::spawn(async move {
                let _permit = permit;
                let id = msg.message_id.clone().unwrap_or_default();
                let Some(receipt) = msg.receipt_handle.clone() else { return };
                let body = msg.body.clone().unwrap_or_default();
                let extender = {
                    let (sqs, cfg, receipt) = (sqs.clone(), cfg.clone(), receipt.clone());
                    tokio::spawn(async move {
                        let started = tokio::time::Instant::now();
                        loop {
                            tokio::time::sleep(cfg.extend_every).await;
                            if started.elapsed() >= cfg.visibility_cap {
                                return;
                            }
                            let _ = sqs
                                .change_message_visibility()
                                .queue_url(&cfg.queue_url)
                                .receipt_handle(&receipt)
                                .visibility_timeout(cfg.visibility_timeout)
                                .send()
                                .await;
                        }
                    })
                };
                let outcome = handle_body(&body, &profile, worker.as_ref(), appender.as_ref()).await;
                extender.abort();
                match outcome {
                    MessageOutcome::Done { granules } => {
                        match sqs
                            .delete_message()
                            .queue_url(&cfg.queue_url)
                            .receipt_handle(&receipt)
                            .send()
                            .await
                        {
                            Ok(_) => tracing::info!(message_id = %id, granules, "message done and deleted"),
                            Err(e) => tracing::warn!(message_id = %id, error = %aws_sdk_sqs::error::DisplayErrorContext(&e),
                                "deleting a processed message failed; it will be redelivered (idempotent)"),
                        }
                    }
                    MessageOutcome::Keep { reason, message } => {
                        tracing::warn!(message_id = %id, %reason, error = %message,
                            "message left on the queue (retried, then dead-lettered)");
                    }
                }
            }));
        }
        // Reap finished handlers without waiting.
        while let Some(Some(_)) = futures::FutureExt::now_or_never(in_flight.next()) {}
    }
    while in_flight.next().await.is_some() {}
    tracing::info!("SQS listener stopped");
}
