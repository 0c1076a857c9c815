//! A received message's lease: while its granules are processed its visibility is extended
//! (every half visibility timeout, up to a cap), and the extension stops when the [`Lease`] is
//! dropped, whichever way the handler ends (done, failed, panicked or cancelled).

use std::sync::Arc;
use std::time::Duration;

use imerg_metrics as m;
use tokio_util::task::AbortOnDropHandle;

use crate::Queue;

/// Every lease deadline, derived from the one visibility timeout so they cannot drift apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Set on receive and on each extension.
    pub visibility_timeout: Duration,
    /// Extend this often: half the visibility timeout, so one failed call still leaves time.
    pub extend_every: Duration,
    /// Stop extending after this long: the message then reappears and is retried or, after the
    /// redrive count, dead-lettered (a granule stuck this long is stuck).
    pub cap: Duration,
}

impl LeaseSettings {
    /// The default cap on extensions.
    pub const DEFAULT_CAP: Duration = Duration::from_secs(1800);

    pub fn from_visibility_timeout(visibility_timeout: Duration) -> Self {
        let visibility_timeout = visibility_timeout.max(Duration::from_secs(1));
        Self {
            visibility_timeout,
            extend_every: (visibility_timeout / 2).max(Duration::from_secs(1)),
            cap: Self::DEFAULT_CAP,
        }
    }
}

/// Holds a message: extends its visibility until dropped.
#[derive(Debug)]
pub struct Lease {
    _task: AbortOnDropHandle<()>,
}

impl Lease {
    pub fn start(queue: Arc<dyn Queue>, receipt: String, settings: LeaseSettings) -> Self {
        let task = tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(settings.extend_every).await;
                if started.elapsed() >= settings.cap {
                    return;
                }
                if queue
                    .extend(&receipt, settings.visibility_timeout)
                    .await
                    .is_ok()
                {
                    metrics::counter!(m::SQS_VISIBILITY_EXTENSIONS).increment(1);
                }
            }
        });
        Self {
            _task: AbortOnDropHandle::new(task),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryQueue;

    #[tokio::test(start_paused = true)]
    async fn extends_until_dropped_and_up_to_the_cap() {
        let q = Arc::new(MemoryQueue::new(5, Duration::from_millis(10)));
        q.send("x");
        let vt = Duration::from_secs(10);
        let got = q.receive(1, vt).await.unwrap();
        let mut s = LeaseSettings::from_visibility_timeout(vt);
        assert_eq!(s.extend_every, Duration::from_secs(5));
        s.cap = Duration::from_secs(60);
        let lease = Lease::start(q.clone(), got[0].receipt.clone(), s);
        // 30 s later the message is still hidden: extended every 5 s.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(q.receive(1, vt).await.unwrap().is_empty());
        let (_, ext) = q.counts();
        assert!(ext >= 5, "{ext}");
        drop(lease);
        // Dropped: no more extensions; it reappears after the visibility timeout.
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(q.counts().1, ext);
        assert_eq!(q.receive(1, vt).await.unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_the_cap() {
        let q = Arc::new(MemoryQueue::new(5, Duration::from_millis(10)));
        q.send("x");
        let vt = Duration::from_secs(10);
        let got = q.receive(1, vt).await.unwrap();
        let mut s = LeaseSettings::from_visibility_timeout(vt);
        s.cap = Duration::from_secs(20);
        let _lease = Lease::start(q.clone(), got[0].receipt.clone(), s);
        tokio::time::sleep(Duration::from_secs(40)).await;
        // Held for the cap (20 s) plus one visibility timeout, then visible again.
        assert_eq!(q.receive(1, vt).await.unwrap().len(), 1);
    }
}
