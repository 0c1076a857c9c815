//! The cached, self-refreshing credential provider, usable directly or as object_store's
//! `AwsCredentialProvider`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use object_store::CredentialProvider;
use object_store::aws::{AwsCredential, AwsCredentialProvider};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::{CredentialsError, EarthdataClient, EarthdataConfig, TemporaryCredentials};

/// `expires_at_ms` before the first successful fetch.
const NO_EXPIRATION: i64 = i64::MIN;
/// Longest pause between refresh attempts while falling back to still-valid credentials.
const MAX_FAILURE_COOLDOWN: Duration = Duration::from_secs(30);

/// Temporary S3 credentials from Earthdata, cached and refreshed shortly before they expire.
///
/// * The credentials are fetched on first use and again once
///   `now >= expiration - refresh_margin` (but never before half of the remaining lifetime has
///   passed, so a margin longer than the lifetime does not turn into a request per call).
/// * Concurrent callers share one refresh: one caller fetches (under a refresh lock) while the
///   others keep using the cached credentials as long as they are valid, so a burst of S3
///   requests at refresh time makes exactly one HTTP request and none waits for it (review L8:
///   the cache lock used to be held across a fetch that can take 20 s). Only without valid
///   credentials (the first fetch, or after expiry) do callers wait for the fetch.
/// * If a refresh fails while the cached credentials have not expired yet, the failure is
///   logged and the cached credentials are returned; the refresh is tried again after a short
///   cooldown (`min(30 s, refresh_margin / 4)`). Once they have expired, the error is returned.
///
/// Pass it to `AmazonS3Builder::with_credentials` with [`Self::into_aws_provider`], or keep an
/// `Arc<EarthdataCredentialProvider>` (it coerces to
/// [`AwsCredentialProvider`]) to also read [`Self::expires_at`] for a metric.
pub struct EarthdataCredentialProvider {
    client: EarthdataClient,
    refresh_margin: Duration,
    /// Held only to read or replace the cached credentials, never across a fetch.
    cache: std::sync::Mutex<Cache>,
    /// Held across a fetch: one refresh at a time.
    refreshing: Mutex<()>,
    /// The cached credentials' expiration in Unix milliseconds, readable without the async lock.
    expires_at_ms: AtomicI64,
}

#[derive(Default)]
struct Cache {
    current: Option<Current>,
    /// After a failed refresh with a fallback: do not try again before this.
    retry_not_before: Option<DateTime<Utc>>,
}

struct Current {
    creds: Arc<TemporaryCredentials>,
    aws: Arc<AwsCredential>,
    refresh_at: DateTime<Utc>,
}

type Pair = (Arc<TemporaryCredentials>, Arc<AwsCredential>);

impl Current {
    fn pair(&self) -> (Arc<TemporaryCredentials>, Arc<AwsCredential>) {
        (Arc::clone(&self.creds), Arc::clone(&self.aws))
    }
}

impl EarthdataCredentialProvider {
    /// Builds the provider (and its HTTP client); nothing is fetched until first use.
    pub fn new(config: &EarthdataConfig) -> Result<Self, CredentialsError> {
        Ok(Self::with_client(
            EarthdataClient::new(config)?,
            config.refresh_margin,
        ))
    }

    /// A provider around an existing client.
    pub fn with_client(client: EarthdataClient, refresh_margin: Duration) -> Self {
        Self {
            client,
            refresh_margin,
            cache: std::sync::Mutex::new(Cache::default()),
            refreshing: Mutex::new(()),
            expires_at_ms: AtomicI64::new(NO_EXPIRATION),
        }
    }

    /// Wraps the provider for `object_store::aws::AmazonS3Builder::with_credentials`.
    pub fn into_aws_provider(self) -> AwsCredentialProvider {
        Arc::new(self)
    }

    /// The current credentials, fetched or refreshed first when needed.
    pub async fn current(&self) -> Result<Arc<TemporaryCredentials>, CredentialsError> {
        self.get().await.map(|(creds, _)| creds)
    }

    /// The expiration of the last credentials obtained (`None` before the first successful
    /// fetch). Does not wait and does not fetch.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        match self.expires_at_ms.load(Ordering::Relaxed) {
            NO_EXPIRATION => None,
            ms => DateTime::from_timestamp_millis(ms),
        }
    }

    /// Seconds until [`Self::expires_at`] (negative once expired), for a gauge.
    pub fn seconds_until_expiry(&self) -> Option<f64> {
        self.expires_at()
            .map(|t| (t - Utc::now()).num_milliseconds() as f64 / 1000.0)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached pair if it needs no refresh now; else whether it is still valid (usable
    /// while another caller refreshes).
    fn cached(&self) -> Result<(Arc<TemporaryCredentials>, Arc<AwsCredential>), Option<Pair>> {
        let cache = self.cache();
        let now = Utc::now();
        let Some(current) = &cache.current else {
            return Err(None);
        };
        let cooling_down = cache.retry_not_before.is_some_and(|t| now < t);
        if now < current.refresh_at || (cooling_down && now < current.creds.expiration) {
            return Ok(current.pair());
        }
        Err((now < current.creds.expiration).then(|| current.pair()))
    }

    async fn get(
        &self,
    ) -> Result<(Arc<TemporaryCredentials>, Arc<AwsCredential>), CredentialsError> {
        let _refreshing = match self.cached() {
            Ok(pair) => return Ok(pair),
            // Valid but due: refresh if nobody else is, else use them meanwhile.
            Err(Some(valid)) => match self.refreshing.try_lock() {
                Ok(guard) => guard,
                Err(_) => return Ok(valid),
            },
            // None or expired: wait for the refresh (someone else's, or ours).
            Err(None) => {
                let guard = self.refreshing.lock().await;
                if let Ok(pair) = self.cached() {
                    return Ok(pair);
                }
                guard
            }
        };
        match self.client.fetch().await {
            Ok(creds) => {
                let now = Utc::now();
                let refresh_at = refresh_time(now, creds.expiration, self.refresh_margin);
                let expires_in = creds.expiration - now;
                if refresh_at > creds.expiration - to_delta(self.refresh_margin) {
                    warn!(
                        refresh_margin_s = self.refresh_margin.as_secs_f64(),
                        lifetime_s = expires_in.num_seconds(),
                        "refresh margin exceeds half of the credentials' lifetime; refreshing at half-life instead"
                    );
                }
                info!(
                    expiration = %creds.expiration,
                    expires_in_s = expires_in.num_seconds(),
                    refresh_at = %refresh_at,
                    "refreshed Earthdata S3 credentials"
                );
                self.expires_at_ms
                    .store(creds.expiration.timestamp_millis(), Ordering::Relaxed);
                let current = Current {
                    aws: Arc::new(creds.to_aws()),
                    creds: Arc::new(creds),
                    refresh_at,
                };
                let pair = current.pair();
                let mut cache = self.cache();
                cache.current = Some(current);
                cache.retry_not_before = None;
                Ok(pair)
            }
            Err(error) => {
                let now = Utc::now();
                let mut cache = self.cache();
                let Some(current) = cache.current.as_ref().filter(|c| now < c.creds.expiration)
                else {
                    return Err(error);
                };
                let cooldown = MAX_FAILURE_COOLDOWN.min(self.refresh_margin / 4);
                warn!(
                    error = %error,
                    expiration = %current.creds.expiration,
                    retry_in_s = cooldown.as_secs_f64(),
                    "refreshing Earthdata S3 credentials failed; using the current ones until they expire"
                );
                let pair = current.pair();
                cache.retry_not_before = Some(now + to_delta(cooldown));
                Ok(pair)
            }
        }
    }
}

/// `expiration - margin`, but not before half of the remaining lifetime.
fn refresh_time(now: DateTime<Utc>, expiration: DateTime<Utc>, margin: Duration) -> DateTime<Utc> {
    let halfway = now + (expiration - now) / 2;
    let by_margin = expiration
        .checked_sub_signed(to_delta(margin))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    by_margin.max(halfway)
}

fn to_delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

impl fmt::Debug for EarthdataCredentialProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EarthdataCredentialProvider")
            .field("client", &self.client)
            .field("refresh_margin", &self.refresh_margin)
            .field("expires_at", &self.expires_at())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl CredentialProvider for EarthdataCredentialProvider {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        self.get()
            .await
            .map(|(_, aws)| aws)
            .map_err(|e| object_store::Error::Generic {
                store: "Earthdata",
                source: Box::new(e),
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use chrono::TimeZone;

    #[test]
    fn refresh_time_uses_the_margin_unless_it_exceeds_half_the_lifetime() {
        let now = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let hour = now + TimeDelta::hours(1);
        assert_eq!(
            refresh_time(now, hour, Duration::from_secs(300)),
            now + TimeDelta::minutes(55)
        );
        assert_eq!(
            refresh_time(now, hour, Duration::from_secs(7200)),
            now + TimeDelta::minutes(30)
        );
        assert_eq!(
            refresh_time(now, hour, Duration::MAX),
            now + TimeDelta::minutes(30)
        );
    }

    #[tokio::test]
    async fn expires_at_is_none_before_the_first_fetch() {
        let config = EarthdataConfig::new("t").unwrap();
        let provider = EarthdataCredentialProvider::new(&config).unwrap();
        assert_eq!(provider.expires_at(), None);
        assert_eq!(provider.seconds_until_expiry(), None);
        let dbg = format!("{provider:?}");
        assert!(dbg.contains("EarthdataCredentialProvider"), "{dbg}");
    }
}
