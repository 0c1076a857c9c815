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
            Ok(r) => {
                imerg_crashpoint::reached(imerg_crashpoint::AFTER_VIRTUALIZE);
                r
            }
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

/// What the listener last learned about its queue, for the readiness endpoint.
#[derive(Debug, Default)]
pub struct QueueHealth {
    /// None until the first call answered; then the last call's error, if any.
    last: std::sync::Mutex<Option<Result<(), String>>>,
}

impl QueueHealth {
    fn set(&self, r: Result<(), String>) {
        if let Ok(mut g) = self.last.lock() {
            *g = Some(r);
        }
    }

    /// Ok when the last call to the queue succeeded.
    pub fn check(&self) -> Result<(), String> {
        match self.last.lock().map(|g| g.clone()) {
            Ok(Some(r)) => r,
            Ok(None) => Err("the SQS queue has not answered yet".into()),
            Err(_) => Err("queue health lock poisoned".into()),
        }
    }
}

/// Long-polls the queue until `shutdown`; in-flight messages finish (or are left undeleted).
pub async fn run(
    cfg: SqsConfig,
    profile: Arc<ProductProfile>,
    worker: Arc<dyn Worker>,
    appender: Arc<dyn Appender>,
    health: Arc<QueueHealth>,
    mut shutdown: watch::Receiver<bool>,
) {
    let sqs = client(&cfg).await;
    // One cheap call first: a wrong queue URL or missing permission shows at start (and in
    // readiness), not after the first long poll.
    match sqs
        .get_queue_attributes()
        .queue_url(&cfg.queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
    {
        Ok(a) => {
            health.set(Ok(()));
            let depth = a
                .attributes
                .as_ref()
                .and_then(|m| {
                    m.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
                })
                .cloned()
                .unwrap_or_default();
            tracing::info!(queue = %cfg.queue_url, depth, "SQS listener started");
        }
        Err(e) => {
            let e = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
            metrics::counter!(m::SQS_RECEIVE_ERRORS).increment(1);
            tracing::error!(queue = %cfg.queue_url, error = %e, "the SQS queue does not answer; retrying");
            health.set(Err(e));
        }
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(cfg.max_in_flight.max(1)));
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut backoff = Duration::from_millis(500);
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Receive only what can be processed now: messages wait in the queue, not in memory.
        let free = permits
            .available_permits()
            .min(usize::try_from(cfg.max_messages.clamp(1, 10)).unwrap_or(10));
        if free == 0 {
            let _ = in_flight.next().await;
            continue;
        }
        let receive = sqs
            .receive_message()
            .queue_url(&cfg.queue_url)
            .max_number_of_messages(i32::try_from(free).unwrap_or(1))
            .wait_time_seconds(cfg.wait_seconds)
            .visibility_timeout(cfg.visibility_timeout)
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp,
            )
            .send();
        let resp = tokio::select! {
            r = receive => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let messages = match resp {
            Ok(r) => {
                health.set(Ok(()));
                backoff = Duration::from_millis(500);
                r.messages.unwrap_or_default()
            }
            Err(e) => {
                let e = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
                metrics::counter!(m::SQS_RECEIVE_ERRORS).increment(1);
                tracing::warn!(error = %e, retry_in = ?backoff, "receiving from SQS failed");
                health.set(Err(e));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|s| *s) => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        if !messages.is_empty() {
            imerg_crashpoint::reached(imerg_crashpoint::AFTER_RECEIVE);
        }
        for msg in messages {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                break;
            };
            let ctx = (
                sqs.clone(),
                cfg.clone(),
                Arc::clone(&profile),
                Arc::clone(&worker),
                Arc::clone(&appender),
            );
            in_flight.push(tokio::spawn(async move {
                let _permit = permit;
                handle_message(msg, ctx).await;
            }));
        }
        // Reap finished handlers without waiting.
        while let Some(Some(_)) = futures::FutureExt::now_or_never(in_flight.next()) {}
    }
    while in_flight.next().await.is_some() {}
    tracing::info!("SQS listener stopped");
}

type Ctx = (
    Client,
    SqsConfig,
    Arc<ProductProfile>,
    Arc<dyn Worker>,
    Arc<dyn Appender>,
);

/// One message: extend its visibility while its granules are processed, delete it once they are
/// durable, or leave it for a retry and the redrive policy.
async fn handle_message(
    msg: aws_sdk_sqs::types::Message,
    (sqs, cfg, profile, worker, appender): Ctx,
) {
    let id = msg.message_id.clone().unwrap_or_default();
    let Some(receipt) = msg.receipt_handle.clone() else {
        return;
    };
    let sent_ms: Option<i64> = msg
        .attributes
        .as_ref()
        .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp))
        .and_then(|v| v.parse().ok());
    let body = msg.body.clone().unwrap_or_default();
    metrics::gauge!(m::SQS_IN_FLIGHT).increment(1.0);
    let extender = {
        let (sqs, cfg, receipt) = (sqs.clone(), cfg.clone(), receipt.clone());
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(cfg.extend_every).await;
                if started.elapsed() >= cfg.visibility_cap {
                    return;
                }
                let r = sqs
                    .change_message_visibility()
                    .queue_url(&cfg.queue_url)
                    .receipt_handle(&receipt)
                    .visibility_timeout(cfg.visibility_timeout)
                    .send()
                    .await;
                if r.is_ok() {
                    metrics::counter!(m::SQS_VISIBILITY_EXTENSIONS).increment(1);
                }
            }
        })
    };
    let outcome = handle_body(&body, &profile, worker.as_ref(), appender.as_ref()).await;
    extender.abort();
    match outcome {
        MessageOutcome::Done { granules } => {
            if granules > 0 {
                imerg_crashpoint::reached(imerg_crashpoint::AFTER_COMMIT);
            }
            match sqs
                .delete_message()
                .queue_url(&cfg.queue_url)
                .receipt_handle(&receipt)
                .send()
                .await
            {
                Ok(_) => {
                    metrics::counter!(m::SQS_MESSAGES, "outcome" => "deleted", "reason" => "")
                        .increment(1);
                    let lag_seconds =
                        sent_ms.map(|sent| now_ms().saturating_sub(sent).max(0) as f64 / 1000.0);
                    if let Some(lag) = lag_seconds {
                        metrics::histogram!(m::SQS_MESSAGE_LAG_SECONDS).record(lag);
                    }
                    tracing::info!(message_id = %id, granules, lag_seconds, "message done and deleted");
                }
                Err(e) => {
                    metrics::counter!(m::SQS_MESSAGES, "outcome" => "delete_failed", "reason" => "")
                        .increment(1);
                    tracing::warn!(message_id = %id, error = %aws_sdk_sqs::error::DisplayErrorContext(&e),
                        "deleting a processed message failed; it will be redelivered (idempotent)");
                }
            }
        }
        MessageOutcome::Keep { reason, message } => {
            metrics::counter!(m::SQS_MESSAGES, "outcome" => "kept", "reason" => reason.clone())
                .increment(1);
            tracing::warn!(message_id = %id, %reason, error = %message, body = %truncate(&body, 512),
                "message left on the queue (retried, then dead-lettered)");
        }
    }
    metrics::gauge!(m::SQS_IN_FLIGHT).decrement(1.0);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
