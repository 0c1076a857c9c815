//! The queue the listener reads, as a trait of four calls: [`SqsQueue`] is Amazon SQS (or a
//! compatible server), [`MemoryQueue`] an in-process queue with the same visibility and redrive
//! semantics for tests (it runs on Tokio's clock, so paused time drives it).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use tokio::time::Instant;

/// A message as received: its body, the handle that deletes or extends it, and when it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub id: String,
    pub receipt: String,
    pub body: String,
    /// When the queue accepted it (ms since the Unix epoch), for the end-to-end lag.
    pub sent_ms: Option<i64>,
    /// Its string message attributes of trace context (`traceparent`, `tracestate`), if the
    /// sender set them.
    pub trace: std::collections::HashMap<String, String>,
}

/// A call to the queue failed; the text is the queue's own explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueueError(pub String);

/// What the listener needs from a queue. Whoever receives a message owns it until it deletes it
/// or its visibility runs out; then the queue hands it out again (and after the redrive count,
/// to the dead-letter queue).
#[async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug + 'static {
    /// Up to `max` messages (long-polling), each hidden from others for `visibility`.
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Received>, QueueError>;
    /// Removes a processed message.
    async fn delete(&self, receipt: &str) -> Result<(), QueueError>;
    /// Keeps a message hidden for `visibility` from now.
    async fn extend(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError>;
    /// A cheap call that shows the queue answers; the approximate number of messages waiting.
    async fn depth(&self) -> Result<u64, QueueError>;
    /// The queue's name or URL, for logs.
    fn name(&self) -> &str;
}

/// Amazon SQS, or an SQS-compatible server.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
    /// Long-poll wait, seconds (0..=20).
    wait_seconds: i32,
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX).max(1)
}

impl SqsQueue {
    /// Builds the client from the standard AWS chain plus an endpoint and region, if given.
    pub async fn connect(
        url: &str,
        endpoint_url: Option<&str>,
        region: Option<&str>,
        wait_seconds: i32,
    ) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = region {
            loader = loader.region(aws_config::Region::new(r.to_string()));
        }
        if let Some(e) = endpoint_url {
            loader = loader.endpoint_url(e);
        }
        Self {
            client: Client::new(&loader.load().await),
            url: url.to_string(),
            wait_seconds: wait_seconds.clamp(0, 20),
        }
    }
}

fn err<E: std::error::Error + 'static>(e: &E) -> QueueError {
    QueueError(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
}

#[async_trait]
impl Queue for SqsQueue {
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Received>, QueueError> {
        let r = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(i32::try_from(max.clamp(1, 10)).unwrap_or(10))
            .wait_time_seconds(self.wait_seconds)
            .visibility_timeout(secs(visibility))
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_attribute_names("traceparent")
            .message_attribute_names("tracestate")
            .send()
            .await
            .map_err(|e| err(&e))?;
        Ok(r.messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let sent_ms = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                    .and_then(|v| v.parse().ok());
                let trace = m
                    .message_attributes
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, v.string_value?)))
                    .collect();
                Some(Received {
                    id: m.message_id.unwrap_or_default(),
                    receipt: m.receipt_handle?,
                    body: m.body.unwrap_or_default(),
                    sent_ms,
                    trace,
                })
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err(&e))
    }

    async fn extend(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs(visibility))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err(&e))
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        let a = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| err(&e))?;
        Ok(a.attributes
            .as_ref()
            .and_then(|m| m.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    fn name(&self) -> &str {
        &self.url
    }
}

#[derive(Debug)]
struct Entry {
    id: String,
    body: String,
    /// Hidden until then (None = visible).
    hidden_until: Option<Instant>,
    /// The handle of the current receive; older handles no longer work.
    receipt: Option<String>,
    receives: u32,
    sent_ms: i64,
}

#[derive(Debug, Default)]
struct State {
    messages: VecDeque<Entry>,
    dead: Vec<String>,
    next: u64,
    deletes: u64,
    extensions: u64,
}

/// An in-process queue with SQS's semantics: visibility timeouts, receipt handles that expire
/// with their receive, and a redrive policy (`max_receives`, then the dead-letter list).
#[derive(Debug)]
pub struct MemoryQueue {
    state: Mutex<State>,
    max_receives: u32,
    /// How long an empty receive waits (the long poll).
    wait: Duration,
}

impl MemoryQueue {
    pub fn new(max_receives: u32, wait: Duration) -> Self {
        Self {
            state: Mutex::default(),
            max_receives: max_receives.max(1),
            wait,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a message.
    pub fn send(&self, body: impl Into<String>) {
        let mut s = self.lock();
        s.next += 1;
        let id = format!("m{}", s.next);
        let sent_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        s.messages.push_back(Entry {
            id,
            body: body.into(),
            hidden_until: None,
            receipt: None,
            receives: 0,
            sent_ms,
        });
    }

    /// Messages still on the queue (visible or in flight).
    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages received and not yet visible again (in someone's hands).
    pub fn in_flight(&self) -> usize {
        let now = Instant::now();
        self.lock()
            .messages
            .iter()
            .filter(|e| e.hidden_until.is_some_and(|t| t > now))
            .count()
    }

    /// Bodies moved to the dead-letter list by the redrive policy.
    pub fn dead_letters(&self) -> Vec<String> {
        self.lock().dead.clone()
    }

    /// Successful deletes and visibility extensions so far.
    pub fn counts(&self) -> (u64, u64) {
        let s = self.lock();
        (s.deletes, s.extensions)
    }

    fn take_visible(&self, max: usize, visibility: Duration) -> Vec<Received> {
        let now = Instant::now();
        let mut s = self.lock();
        let st = &mut *s;
        let mut out = Vec::new();
        let mut i = 0;
        while i < st.messages.len() && out.len() < max {
            let visible = st.messages[i].hidden_until.is_none_or(|t| t <= now);
            if !visible {
                i += 1;
                continue;
            }
            if st.messages[i].receives >= self.max_receives {
                if let Some(e) = st.messages.remove(i) {
                    st.dead.push(e.body);
                }
                continue;
            }
            st.next += 1;
            let receipt = format!("r{}", st.next);
            let e = &mut st.messages[i];
            e.receives += 1;
            e.hidden_until = Some(now + visibility);
            e.receipt = Some(receipt.clone());
            out.push(Received {
                id: e.id.clone(),
                receipt,
                body: e.body.clone(),
                sent_ms: Some(e.sent_ms),
                trace: Default::default(),
            });
            i += 1;
        }
        out
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Received>, QueueError> {
        let deadline = Instant::now() + self.wait;
        loop {
            let got = self.take_visible(max.max(1), visibility);
            if !got.is_empty() || Instant::now() >= deadline {
                return Ok(got);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        let mut s = self.lock();
        let before = s.messages.len();
        s.messages.retain(|e| e.receipt.as_deref() != Some(receipt));
        if s.messages.len() == before {
            return Err(QueueError(format!("receipt handle {receipt} is not valid")));
        }
        s.deletes += 1;
        Ok(())
    }

    async fn extend(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError> {
        let mut s = self.lock();
        let now = Instant::now();
        let e = s
            .messages
            .iter_mut()
            .find(|e| e.receipt.as_deref() == Some(receipt))
            .ok_or_else(|| QueueError(format!("receipt handle {receipt} is not valid")))?;
        e.hidden_until = Some(now + visibility);
        s.extensions += 1;
        Ok(())
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        Ok(self.len() as u64)
    }

    fn name(&self) -> &str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn visibility_and_redrive() {
        let q = MemoryQueue::new(2, Duration::from_secs(1));
        q.send("a");
        let first = q.receive(10, Duration::from_secs(30)).await.unwrap();
        assert_eq!(first.len(), 1);
        // Hidden while in flight.
        assert!(
            q.receive(10, Duration::from_secs(30))
                .await
                .unwrap()
                .is_empty()
        );
        tokio::time::advance(Duration::from_secs(31)).await;
        let second = q.receive(10, Duration::from_secs(30)).await.unwrap();
        assert_eq!(second.len(), 1);
        // The first receipt expired with its receive.
        assert!(q.delete(&first[0].receipt).await.is_err());
        tokio::time::advance(Duration::from_secs(31)).await;
        // Received twice already: dead-lettered on the next receive.
        assert!(
            q.receive(10, Duration::from_secs(30))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(q.dead_letters(), vec!["a".to_string()]);
        assert!(q.is_empty());
    }
}
