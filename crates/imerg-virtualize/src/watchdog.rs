//! How long the oldest libhdf5 parse of this process has been running. libhdf5 cannot be
//! interrupted, and a crafted file can loop it while it holds the library's global lock, which
//! stalls every other parse: the service's `/healthz` fails when the oldest parse is older than
//! its limit, so that the orchestrator restarts the process (review M8).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static RUNNING: Mutex<BTreeMap<u64, Instant>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A parse in progress; dropping it (also by a panic) ends it.
#[derive(Debug)]
pub(crate) struct Parse(u64);

impl Parse {
    pub(crate) fn start() -> Self {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Instant::now());
        Self(id)
    }
}

impl Drop for Parse {
    fn drop(&mut self) {
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0);
    }
}

/// How long the oldest running parse has run, `None` if none runs.
pub fn oldest_parse() -> Option<Duration> {
    RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .min()
        .map(Instant::elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_running_parse_is_reported_until_it_ends() {
        let a = Parse::start();
        std::thread::sleep(Duration::from_millis(20));
        let b = Parse::start();
        assert!(oldest_parse().is_some_and(|d| d >= Duration::from_millis(20)));
        drop(a);
        assert!(oldest_parse().is_some_and(|d| d < Duration::from_millis(20)));
        drop(b);
        // Other tests of this crate may parse concurrently: only ours are known to be gone.
    }
}
