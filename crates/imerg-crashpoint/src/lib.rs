//! Named crash points for the crash-safety tests. The service calls [`reached`] at the points
//! where a crash matters (after a message is received, after a granule is virtualized, during a
//! commit, after a commit before the message is deleted). When the environment variable
//! `IMERG_CRASH_AT` names that point, the process kills itself with SIGKILL there: no destructors,
//! no flush, no graceful shutdown, exactly like an OOM kill or a node loss.
//!
//! `IMERG_CRASH_AT=POINT[@N][+MS]`: crash the N-th time (default 1) POINT is reached, MS
//! milliseconds later (default 0; the kill then comes from another thread while the caller goes
//! on, e.g. into the commit it was about to make).
//!
//! `IMERG_FAULT_AT=POINT:hang|panic` makes the thread that reaches POINT ([`fault`]) hang
//! forever or panic there instead, for the supervision tests (a stuck HDF5 parse, a dead
//! committer task).
//!
//! Compiled in only with the `enabled` feature (the binary's `crashpoints` feature, which the test
//! command turns on): in every other build [`reached`] is an empty function and `IMERG_CRASH_AT`
//! is ignored, so no production binary can be made to kill itself.

#[cfg(feature = "enabled")]
use std::sync::OnceLock;
#[cfg(feature = "enabled")]
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The environment variable that arms a crash point.
pub const ENV: &str = "IMERG_CRASH_AT";

/// After the listener received a batch of messages, before it handles any of them.
pub const AFTER_RECEIVE: &str = "after_receive";
/// After a granule was virtualized, before it is handed to the committer.
pub const AFTER_VIRTUALIZE: &str = "after_virtualize";
/// When the committer starts writing a commit (use `+MS` to land inside it).
pub const DURING_COMMIT: &str = "during_commit";
/// After a message's granules are durable, before the message is deleted.
pub const AFTER_COMMIT: &str = "after_commit";

/// When the native writer has written some of an update's shards, before its commit.
pub const NATIVE_MID_UPDATE: &str = "native_mid_update";

/// Fault point: inside a libhdf5 parse, on the blocking thread (`hang` stands for a crafted
/// file that loops libhdf5).
pub const HDF5_PARSE: &str = "hdf5_parse";
/// Fault point: in the committer task, before it commits a batch (`panic` stands for a panic
/// inside Icechunk).
pub const COMMITTER_BATCH: &str = "committer_batch";

/// Fault point: at the start of a maintenance run (`hang` stands for an expiry or GC that
/// takes hours on a large repository).
pub const MAINTENANCE: &str = "maintenance";

/// The environment variable that arms a fault point.
pub const FAULT_ENV: &str = "IMERG_FAULT_AT";

/// Every point the service defines.
pub const ALL: &[&str] = &[
    AFTER_RECEIVE,
    AFTER_VIRTUALIZE,
    DURING_COMMIT,
    AFTER_COMMIT,
    NATIVE_MID_UPDATE,
];

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(feature = "enabled"), allow(dead_code))]
struct Spec {
    point: String,
    nth: u64,
    delay: Duration,
}

#[cfg_attr(not(feature = "enabled"), allow(dead_code))]
fn parse(s: &str) -> Option<Spec> {
    let (rest, delay) = match s.split_once('+') {
        Some((r, ms)) => (r, Duration::from_millis(ms.trim().parse().ok()?)),
        None => (s, Duration::ZERO),
    };
    let (point, nth) = match rest.split_once('@') {
        Some((p, n)) => (p, n.trim().parse().ok()?),
        None => (rest, 1),
    };
    let point = point.trim();
    (!point.is_empty() && nth > 0).then(|| Spec {
        point: point.into(),
        nth,
        delay,
    })
}

#[cfg(feature = "enabled")]
fn spec() -> Option<&'static Spec> {
    static SPEC: OnceLock<Option<Spec>> = OnceLock::new();
    SPEC.get_or_init(|| std::env::var(ENV).ok().as_deref().and_then(parse))
        .as_ref()
}

/// Whether this build has crash points (the `enabled` feature).
pub const ENABLED: bool = cfg!(feature = "enabled");

/// Marks that the service reached `point`: without the `enabled` feature, nothing.
#[cfg(not(feature = "enabled"))]
#[inline(always)]
pub fn reached(_point: &str) {}

/// True when `IMERG_CRASH_AT` or `IMERG_FAULT_AT` is set although this build cannot honour it
/// (worth a warning).
pub fn requested_but_disabled() -> bool {
    !ENABLED && (std::env::var_os(ENV).is_some() || std::env::var_os(FAULT_ENV).is_some())
}

/// `IMERG_FAULT_AT` as (point, action), read once.
fn fault_spec() -> Option<&'static (String, String)> {
    static FAULT: std::sync::OnceLock<Option<(String, String)>> = std::sync::OnceLock::new();
    FAULT
        .get_or_init(|| {
            let v = std::env::var(FAULT_ENV).ok()?;
            let (p, a) = v.split_once(':')?;
            Some((p.trim().to_string(), a.trim().to_string()))
        })
        .as_ref()
}

/// Whether `IMERG_FAULT_AT` is `point:action` (always false without the `enabled` feature):
/// for async code, which must not block its thread to hang.
pub fn armed(point: &str, action: &str) -> bool {
    ENABLED && fault_spec().is_some_and(|(p, a)| p == point && a == action)
}

/// Marks a fault point: without the `enabled` feature, nothing.
#[cfg(not(feature = "enabled"))]
#[inline(always)]
pub fn fault(_point: &str) {}

/// Marks a fault point; hangs or panics there if `IMERG_FAULT_AT` says so.
#[cfg(feature = "enabled")]
pub fn fault(point: &str) {
    if armed(point, "hang") {
        eprintln!("imerg-ingest: fault point {point}: hanging");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if armed(point, "panic") {
        panic!("fault point {point}: panic as IMERG_FAULT_AT asks")
    }
}

/// Marks that the service reached `point`; SIGKILLs the process if `IMERG_CRASH_AT` says so.
#[cfg(feature = "enabled")]
pub fn reached(point: &str) {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let Some(spec) = spec() else { return };
    if spec.point != point {
        return;
    }
    let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    if n != spec.nth {
        return;
    }
    eprintln!(
        "imerg-ingest: crash point {point} reached (#{n}): SIGKILL in {} ms",
        spec.delay.as_millis()
    );
    if spec.delay.is_zero() {
        kill_self();
    } else {
        let delay = spec.delay;
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            kill_self();
        });
    }
}

#[cfg(feature = "enabled")]
fn kill_self() {
    // SAFETY: kill(2) on our own pid with a valid signal number; it has no memory effects.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_point_count_and_delay() {
        assert_eq!(
            parse("during_commit@2+20"),
            Some(Spec {
                point: "during_commit".into(),
                nth: 2,
                delay: Duration::from_millis(20)
            })
        );
        assert_eq!(
            parse("after_receive"),
            Some(Spec {
                point: "after_receive".into(),
                nth: 1,
                delay: Duration::ZERO
            })
        );
        assert_eq!(parse("x@0"), None);
        assert_eq!(parse("x@two"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn unarmed_points_do_nothing() {
        // IMERG_CRASH_AT is not set for unit tests: reaching a point returns.
        for p in ALL {
            reached(p);
        }
        fault(HDF5_PARSE);
        fault(COMMITTER_BATCH);
    }
}
