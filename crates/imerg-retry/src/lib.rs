//! How this project's HTTP clients (Earthdata credentials, CMR search) retry and report: the
//! retry loop ([`retry`]), the delay before the next attempt (exponential backoff, jitter, the
//! server's `Retry-After`, a ceiling) and the start of an error body fit for a message (one
//! line, short, the secret scrubbed).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// A failed attempt: its error, and the delay the server asked for (`Retry-After`).
#[derive(Debug)]
pub struct Failure<E> {
    pub error: E,
    pub retry_after: Option<Duration>,
}

impl<E> From<E> for Failure<E> {
    fn from(error: E) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

/// How many attempts in all, and the backoff between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

/// Why [`retry`] gave up.
#[derive(Debug)]
pub enum GaveUp<E> {
    /// A failure not worth retrying, or the only attempt allowed: the error as it is.
    Final(E),
    /// Every one of `attempts` (more than one) attempts failed transiently; the last error.
    Exhausted { attempts: u32, last: E },
}

/// Runs `attempt` (given its number, from 1) until it succeeds, fails with an error that
/// `is_transient` does not accept, or `policy.max_attempts` attempts failed. Between attempts it
/// logs a warning (`what` failed; retrying) and sleeps [`backoff_delay`].
pub async fn retry<T, E, Fut>(
    policy: Policy,
    what: &str,
    is_transient: impl Fn(&E) -> bool,
    mut attempt: impl FnMut(u32) -> Fut,
) -> Result<T, GaveUp<E>>
where
    E: std::fmt::Display,
    Fut: std::future::Future<Output = Result<T, Failure<E>>>,
{
    let mut n = 1;
    loop {
        let failure = match attempt(n).await {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        let error = failure.error;
        if !is_transient(&error) || n >= policy.max_attempts.max(1) {
            return Err(if n == 1 || !is_transient(&error) {
                GaveUp::Final(error)
            } else {
                GaveUp::Exhausted {
                    attempts: n,
                    last: error,
                }
            });
        }
        let delay = backoff_delay(
            n,
            policy.base_delay,
            policy.max_delay,
            failure.retry_after,
            random_fraction(),
        );
        tracing::warn!(
            attempt = n,
            max_attempts = policy.max_attempts,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            error = %error,
            "{what} failed; retrying"
        );
        tokio::time::sleep(delay).await;
        n += 1;
    }
}

/// What a scrubbed secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Characters of an error body kept in a message.
pub const MAX_ERROR_BODY_CHARS: usize = 200;

/// The delay after the `failed`-th failed attempt: `base * 2^(failed-1)` capped at `max`, plus up
/// to half of that again as jitter (`fraction` in `[0, 1)`), capped at `max`; at least the
/// server's `Retry-After` when it gave one (also capped at `max`).
pub fn backoff_delay(
    failed: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
    fraction: f64,
) -> Duration {
    let exponent = failed.saturating_sub(1).min(30);
    let exp = base.saturating_mul(1 << exponent).min(max);
    let jitter = exp.mul_f64(0.5 * fraction.clamp(0.0, 1.0));
    let delay = exp.saturating_add(jitter).min(max);
    match retry_after {
        Some(ra) => delay.max(ra.min(max)),
        None => delay,
    }
}

/// A pseudo-random number in `[0, 1)` from std's randomly keyed hasher (no RNG dependency; this
/// only spreads retries of several processes apart).
pub fn random_fraction() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The start of an error body for a message: `secret` (if any, and not empty) scrubbed, white
/// space collapsed to single spaces, at most [`MAX_ERROR_BODY_CHARS`] characters.
pub fn error_body(body: &[u8], secret: Option<&str>) -> String {
    let text = String::from_utf8_lossy(body);
    let text = match secret {
        Some(t) if !t.is_empty() => text.replace(t, REDACTED),
        _ => text.into_owned(),
    };
    let mut out = String::new();
    for (i, word) in text.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() > MAX_ERROR_BODY_CHARS {
            break;
        }
    }
    if out.chars().count() > MAX_ERROR_BODY_CHARS {
        out = out.chars().take(MAX_ERROR_BODY_CHARS).collect();
        out.push('…');
    }
    if out.is_empty() {
        out.push_str("(empty body)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_bounded_jitter() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        assert_eq!(backoff_delay(1, base, max, None, 0.0), base);
        let most = backoff_delay(1, base, max, None, 0.999_999);
        assert!(
            most > Duration::from_millis(149) && most <= Duration::from_millis(150),
            "{most:?}"
        );
        assert_eq!(
            backoff_delay(3, base, max, None, 0.0),
            Duration::from_millis(400)
        );
        assert_eq!(backoff_delay(10, base, max, None, 0.5), max);
        assert_eq!(backoff_delay(u32::MAX, base, max, None, 0.5), max);
        assert_eq!(
            backoff_delay(1, base, max, Some(Duration::from_secs(1)), 0.0),
            Duration::from_secs(1)
        );
        assert_eq!(
            backoff_delay(1, base, max, Some(Duration::from_secs(60)), 0.0),
            max
        );
        for _ in 0..100 {
            let f = random_fraction();
            assert!((0.0..1.0).contains(&f), "{f}");
        }
    }

    #[test]
    fn error_body_is_short_single_line_and_scrubbed() {
        let body = format!("bad token {}\n\n  {}", "tok-123", "x".repeat(1000));
        let out = error_body(body.as_bytes(), Some("tok-123"));
        assert!(!out.contains("tok-123"), "{out}");
        assert!(out.starts_with("bad token [redacted] xxx"), "{out}");
        assert!(!out.contains('\n'));
        assert_eq!(out.chars().count(), MAX_ERROR_BODY_CHARS + 1);
        assert_eq!(error_body(b"", Some("t")), "(empty body)");
        assert_eq!(error_body(b"a  b", None), "a b");
        assert_eq!(error_body(b"x", Some("")), "x");
    }
}
