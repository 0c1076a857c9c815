//! The queue listener: receives only what it has free slots for, hands each message to a
//! [`MessageHandler`], and deletes a message once every granule it names is durable. Receive
//! errors back off (the queue's state is published for readiness); cancellation stops receiving
//! and lets the messages in flight finish.
//!
//! A failure that may pass (committer or source down, credentials expired) opens a
//! [`Breaker`]: the listener stops receiving for a pause that doubles from 1 s to 2 min, hides
//! the failed messages for that pause (a visibility change is not a receive), then probes with
//! one message at a time until one succeeds. An outage therefore costs each message about one
//! receive, not one per visibility timeout, and the backlog does not drain into the
//! dead-letter queue (review M7).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;

use imerg_catalog::ProductProfile;
use imerg_metrics as m;
use imerg_notify::{Action, Notification, parse_message};
use imerg_pipeline::{Ingestor, Origin};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::{Lease, LeaseSettings, Queue, Received};

/// Where the SQS queue is and how it is polled (the service's configuration maps onto this).
#[derive(Debug, Clone)]
pub struct SqsConfig {
    pub queue_url: String,
    /// An SQS-compatible endpoint (a local server); None = AWS.
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    /// Long-poll wait (seconds, at most 20).
    pub wait_seconds: i32,
    /// Visibility timeout set on receive and on each extension.
    pub visibility_timeout: Duration,
}

impl SqsConfig {
    pub fn new(queue_url: impl Into<String>) -> Self {
        Self {
            queue_url: queue_url.into(),
            endpoint_url: None,
            region: None,
            wait_seconds: 20,
            visibility_timeout: Duration::from_secs(120),
        }
    }

    /// The listener settings these imply.
    pub fn listener(&self) -> ListenerConfig {
        ListenerConfig {
            lease: LeaseSettings::from_visibility_timeout(self.visibility_timeout),
            ..ListenerConfig::default()
        }
    }
}

/// How the listener takes messages.
#[derive(Debug, Clone, Copy)]
pub struct ListenerConfig {
    /// Messages per receive (at most 10 for SQS).
    pub max_messages: usize,
    /// Messages processed at once: the listener receives only what it has free slots for, so
    /// messages wait in the queue, not in memory.
    pub max_in_flight: usize,
    pub lease: LeaseSettings,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            max_messages: 10,
            max_in_flight: 64,
            lease: LeaseSettings::from_visibility_timeout(Duration::from_secs(120)),
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
    Keep {
        reason: &'static str,
        message: String,
    },
}

/// Processes one message body: every granule it announces must become durable.
pub async fn handle_body(
    body: &str,
    profile: &ProductProfile,
    ingestor: &Ingestor,
) -> MessageOutcome {
    let notes = match parse_message(body) {
        Ok(n) => n,
        Err(e) => {
            metrics::counter!(m::GRANULES_REJECTED, "reason" => e.reason()).increment(1);
            return MessageOutcome::Keep {
                reason: e.reason(),
                message: e.to_string(),
            };
        }
    };
    let mut granules = Vec::new();
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
            Ok(id) => granules.push(id),
            Err(e) => {
                metrics::counter!(m::GRANULES_RECEIVED, "source" => "sqs_ignored").increment(1);
                tracing::info!(%reference, reason = %e, "ignoring an object that is not a granule of the product");
            }
        }
    }
    // A message may name many granules (an S3 event holds up to 1000 records): they are
    // ingested a few at a time, not one after another (review L13).
    let total = granules.len();
    let mut results = futures::stream::iter(granules)
        .map(|id| async move { ingestor.ingest(&id, Origin::Sqs).await })
        .buffer_unordered(GRANULES_PER_MESSAGE_AT_ONCE);
    let mut first_error = None;
    while let Some(r) = results.next().await {
        if let (Err(e), None) = (r, &first_error) {
            first_error = Some(e);
        }
    }
    match first_error {
        Some(e) => MessageOutcome::Keep {
            reason: e.reason.as_str(),
            message: e.message,
        },
        None => MessageOutcome::Done { granules: total },
    }
}

/// Granules of one message ingested at once.
const GRANULES_PER_MESSAGE_AT_ONCE: usize = 8;

/// The longest pause of the [`Breaker`].
const MAX_PAUSE: Duration = Duration::from_secs(120);

/// Stops receiving while failures may pass: see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    state: std::sync::Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    /// Consecutive pauses (0: closed).
    opened: u32,
    /// No receiving before this.
    until: Option<tokio::time::Instant>,
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A passing failure at `now`: opens (or, after a failed probe, doubles) the pause, and
    /// returns when it ends. Failures of messages received before the pause began share it.
    pub(crate) fn trip(&self, now: tokio::time::Instant) -> tokio::time::Instant {
        let mut st = self.lock();
        match st.until {
            Some(until) if until > now => until,
            _ => {
                let pause = Duration::from_secs(1u64 << st.opened.min(7)).min(MAX_PAUSE);
                st.opened = st.opened.saturating_add(1);
                let until = now + pause;
                st.until = Some(until);
                tracing::warn!(?pause, "a passing failure: not receiving for a while");
                until
            }
        }
    }

    /// A message succeeded: receive normally again.
    pub(crate) fn reset(&self) {
        let mut st = self.lock();
        if st.opened > 0 {
            tracing::info!("receiving again");
        }
        *st = BreakerState::default();
    }

    /// When receiving may resume (`None`: now), and whether to probe with one message.
    fn gate(&self) -> (Option<tokio::time::Instant>, bool) {
        let st = self.lock();
        (st.until, st.opened > 0)
    }
}

/// What the listener last learned about its queue, for the readiness endpoint.
#[derive(Debug, Default)]
pub struct QueueHealth {
    /// None until the first call answered; then the last call's error, if any.
    last: std::sync::Mutex<Option<Result<(), String>>>,
}

impl QueueHealth {
    fn set(&self, r: Result<(), String>) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
    }

    /// Ok when the last call to the queue succeeded.
    pub fn check(&self) -> Result<(), String> {
        match self.last.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            Some(r) => r,
            None => Err("the SQS queue has not answered yet".into()),
        }
    }
}

/// Handles one received message: holds its lease while its granules are ingested, deletes it once
/// they are durable, or leaves it for a retry and the redrive policy.
#[derive(Debug, Clone)]
struct MessageHandler {
    queue: Arc<dyn Queue>,
    lease: LeaseSettings,
    profile: Arc<ProductProfile>,
    ingestor: Ingestor,
    breaker: Arc<Breaker>,
}

/// Gives back the in-flight gauge unit when the handler ends, however it ends.
struct InFlightMessage;

impl InFlightMessage {
    fn enter() -> Self {
        metrics::gauge!(m::SQS_IN_FLIGHT).increment(1.0);
        Self
    }
}

impl Drop for InFlightMessage {
    fn drop(&mut self) {
        metrics::gauge!(m::SQS_IN_FLIGHT).decrement(1.0);
    }
}

impl MessageHandler {
    async fn handle(&self, msg: Received) {
        let _in_flight = InFlightMessage::enter();
        // The sender's trace, when it put one in the message's attributes.
        let span = tracing::info_span!("sqs_message", message_id = %msg.id, trace_id = tracing::field::Empty);
        if let Some(cx) = imerg_trace::parent_from_attributes(&msg.trace) {
            imerg_trace::set_parent(&span, cx);
        }
        imerg_trace::record_trace_id(&span);
        let outcome = {
            let _lease = Lease::start(Arc::clone(&self.queue), msg.receipt.clone(), self.lease);
            handle_body(&msg.body, &self.profile, &self.ingestor)
                .instrument(span)
                .await
        };
        let id = &msg.id;
        match outcome {
            MessageOutcome::Done { granules } => {
                if granules > 0 {
                    self.breaker.reset();
                    imerg_crashpoint::reached(imerg_crashpoint::AFTER_COMMIT);
                }
                match self.queue.delete(&msg.receipt).await {
                    Ok(()) => {
                        metrics::counter!(m::SQS_MESSAGES, "outcome" => "deleted", "reason" => "")
                            .increment(1);
                        let lag_seconds = msg
                            .sent_ms
                            .map(|sent| now_ms().saturating_sub(sent).max(0) as f64 / 1000.0);
                        if let Some(lag) = lag_seconds {
                            metrics::histogram!(m::SQS_MESSAGE_LAG_SECONDS).record(lag);
                        }
                        tracing::info!(message_id = %id, granules, lag_seconds, "message done and deleted");
                    }
                    Err(e) => {
                        metrics::counter!(m::SQS_MESSAGES, "outcome" => "delete_failed", "reason" => "")
                            .increment(1);
                        tracing::warn!(message_id = %id, error = %e,
                            "deleting a processed message failed; it will be redelivered (idempotent)");
                    }
                }
            }
            MessageOutcome::Keep { reason, message } => {
                metrics::counter!(m::SQS_MESSAGES, "outcome" => "kept", "reason" => reason)
                    .increment(1);
                // The body is outside input: logged escaped and cut short.
                let body = truncate(&msg.body, 512);
                if imerg_pipeline::Reason::from_label(reason).is_retryable() {
                    let now = tokio::time::Instant::now();
                    let until = self.breaker.trip(now);
                    // Until the pause ends, and a second more: a probe then takes another.
                    let hide = until.saturating_duration_since(now) + Duration::from_secs(1);
                    if let Err(e) = self.queue.extend(&msg.receipt, hide).await {
                        tracing::warn!(message_id = %id, error = %e, "could not hide the message for the pause");
                    }
                    tracing::warn!(message_id = %id, %reason, error = %message, body = ?body, retry_in = ?hide,
                        "message left on the queue for a passing failure: retried after the pause");
                } else {
                    tracing::warn!(message_id = %id, %reason, error = %message, body = ?body,
                        "message left on the queue (retried, then dead-lettered)");
                }
            }
        }
    }
}

/// Long-polls `queue` until `shutdown` is cancelled; the messages in flight then finish (their
/// granules commit and they are deleted) or are left undeleted if the caller stops waiting.
pub async fn run(
    queue: Arc<dyn Queue>,
    cfg: ListenerConfig,
    profile: Arc<ProductProfile>,
    ingestor: Ingestor,
    health: Arc<QueueHealth>,
    shutdown: CancellationToken,
) {
    // One cheap call first: a wrong queue URL or missing permission shows at start (and in
    // readiness), not after the first long poll.
    match queue.depth().await {
        Ok(depth) => {
            health.set(Ok(()));
            tracing::info!(queue = %queue.name(), depth, "SQS listener started");
        }
        Err(e) => {
            metrics::counter!(m::SQS_RECEIVE_ERRORS).increment(1);
            tracing::error!(queue = %queue.name(), error = %e, "the SQS queue does not answer; retrying");
            health.set(Err(e.0));
        }
    }
    let breaker = Arc::new(Breaker::default());
    let handler = MessageHandler {
        queue: Arc::clone(&queue),
        lease: cfg.lease,
        profile,
        ingestor,
        breaker: Arc::clone(&breaker),
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_in_flight.max(1)));
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(500);
    while !shutdown.is_cancelled() {
        // While the breaker is open, wait; then probe with one message at a time.
        let (paused_until, probing) = breaker.gate();
        if let Some(until) = paused_until.filter(|u| *u > tokio::time::Instant::now()) {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        // Receive only what can be processed now.
        let free = slots.available_permits().min(cfg.max_messages.clamp(1, 10));
        let free = if probing { free.min(1) } else { free };
        if free == 0 {
            tokio::select! {
                p = Arc::clone(&slots).acquire_owned() => drop(p),
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        let resp = tokio::select! {
            r = queue.receive(free, cfg.lease.visibility_timeout) => r,
            _ = shutdown.cancelled() => break,
        };
        let messages = match resp {
            Ok(m) => {
                health.set(Ok(()));
                backoff = Duration::from_millis(500);
                m
            }
            Err(e) => {
                metrics::counter!(m::SQS_RECEIVE_ERRORS).increment(1);
                tracing::warn!(error = %e, retry_in = ?backoff, "receiving from SQS failed");
                health.set(Err(e.0));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        if !messages.is_empty() {
            imerg_crashpoint::reached(imerg_crashpoint::AFTER_RECEIVE);
        }
        for msg in messages {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            if probing {
                // The probe runs before anything else is received.
                handler.handle(msg).await;
                drop(slot);
                continue;
            }
            let handler = handler.clone();
            tracker.spawn(async move {
                let _slot = slot;
                handler.handle(msg).await;
            });
        }
    }
    tracker.close();
    tracker.wait().await;
    tracing::info!("SQS listener stopped");
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use imerg_catalog::GranuleId;
    use imerg_pipeline::{Appended, Appender, GranuleRefs, IngestError, Outcome, Reason, Worker};

    use super::*;
    use crate::MemoryQueue;

    /// One real granule's references, virtualized once from a synthetic HDF5 file.
    fn template(profile: &ProductProfile) -> GranuleRefs {
        let dir = tempfile::tempdir().unwrap();
        let start = imerg_catalog::parse_time("2024-01-01T00:00").unwrap();
        let id = profile.granule_at(start).unwrap();
        let path = dir.path().join(&id.key);
        imerg_synth::write_granule(&path, profile, start, &imerg_synth::SynthOptions::default())
            .unwrap();
        // On a runtime of its own (the test's runs on paused time).
        let profile = Arc::new(profile.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(imerg_pipeline::virtualize_url(
                profile,
                &path.to_string_lossy(),
            ))
            .unwrap()
        })
        .join()
        .unwrap()
    }

    /// Returns the template re-keyed to the granule asked for; keys containing ".0030." fail
    /// as not HDF5.
    #[derive(Debug)]
    struct TestWorker(GranuleRefs);

    #[async_trait]
    impl Worker for TestWorker {
        async fn virtualize(&self, id: &GranuleId) -> Result<GranuleRefs, IngestError> {
            if id.key.contains(".0030.") {
                return Err(IngestError::new(
                    Reason::NotHdf5,
                    format!("{}: not HDF5", id.key),
                ));
            }
            let mut g = self.0.clone();
            g.key.clone_from(&id.key);
            g.time_index = id.time_index;
            Ok(g)
        }
    }

    /// Takes `delay` to "commit" and records each key it made durable.
    #[derive(Debug)]
    struct SlowAppender {
        delay: Duration,
        done: Mutex<BTreeMap<String, u32>>,
    }

    #[async_trait]
    impl Appender for SlowAppender {
        async fn append(&self, g: GranuleRefs) -> Result<Appended, IngestError> {
            tokio::time::sleep(self.delay).await;
            *self.done.lock().unwrap().entry(g.key.clone()).or_default() += 1;
            Ok(Appended {
                key: g.key,
                outcome: Outcome::Added,
                batch_id: "b".into(),
                snapshot: "s".into(),
            })
        }
    }

    fn s3_event(key: &str) -> String {
        format!(
            r#"{{"Records":[{{"eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"b"}},"object":{{"key":"{key}"}}}}}}]}}"#
        )
    }

    fn key(profile: &ProductProfile, t: &str) -> String {
        profile
            .granule_at(imerg_catalog::parse_time(t).unwrap())
            .unwrap()
            .key
    }

    struct Rig {
        queue: Arc<MemoryQueue>,
        appender: Arc<SlowAppender>,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    fn rig(profile: &ProductProfile, delay: Duration, max_in_flight: usize) -> Rig {
        let queue = Arc::new(MemoryQueue::new(2, Duration::from_millis(50)));
        let appender = Arc::new(SlowAppender {
            delay,
            done: Mutex::default(),
        });
        let ingestor = Ingestor::new(
            Arc::new(TestWorker(template(profile))),
            Arc::clone(&appender) as Arc<dyn Appender>,
        );
        let cfg = ListenerConfig {
            max_messages: 10,
            max_in_flight,
            lease: LeaseSettings::from_visibility_timeout(Duration::from_secs(2)),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            Arc::clone(&queue) as Arc<dyn Queue>,
            cfg,
            Arc::new(profile.clone()),
            ingestor,
            Arc::new(QueueHealth::default()),
            stop.clone(),
        ));
        Rig {
            queue,
            appender,
            stop,
            task,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deletes_after_durable_and_leaves_bad_messages_to_the_redrive() {
        let profile = ProductProfile::final_v07b();
        // Commits take 5 s, more than the 2 s visibility: the lease must hold the messages.
        let r = rig(&profile, Duration::from_secs(5), 8);
        let good = [
            key(&profile, "2024-01-01T00:00"),
            key(&profile, "2024-01-01T01:00"),
        ];
        for k in &good {
            r.queue.send(s3_event(k));
        }
        r.queue.send("{not json");
        r.queue.send(s3_event(&key(&profile, "2024-01-01T00:30")));
        for _ in 0..600 {
            if r.queue.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(r.queue.is_empty(), "{} left", r.queue.len());
        let done = r.appender.done.lock().unwrap().clone();
        assert_eq!(done.len(), 2, "{done:?}");
        assert!(
            done.values().all(|n| *n == 1),
            "each good granule once: {done:?}"
        );
        let (deletes, extensions) = r.queue.counts();
        assert_eq!(deletes, 2);
        assert!(extensions >= 4, "{extensions}");
        let dead = r.queue.dead_letters();
        assert_eq!(dead.len(), 2, "{dead:?}");
        assert!(dead.iter().any(|b| b.contains("not json")));
        r.stop.cancel();
        r.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn receives_only_what_it_has_slots_for_and_drains_on_cancel() {
        let profile = ProductProfile::final_v07b();
        let r = rig(&profile, Duration::from_secs(3), 2);
        for h in 0..6 {
            r.queue
                .send(s3_event(&key(&profile, &format!("2024-01-02T0{h}:00"))));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(r.queue.in_flight(), 2, "two slots, two messages taken");
        // Cancel: nothing new is taken; the two in flight finish and are deleted.
        r.stop.cancel();
        r.task.await.unwrap();
        assert_eq!(r.queue.counts().0, 2);
        assert_eq!(r.queue.len(), 4);
        assert_eq!(r.appender.done.lock().unwrap().len(), 2);
    }
}
