//! One fetch of temporary credentials from the `s3credentials` endpoint: the HTTP request with
//! the bearer token, error classification, and retries with exponential backoff and jitter.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use imerg_retry::error_body;
use reqwest::header::{self, HeaderValue};
use reqwest::{Response, StatusCode, Url};
use tracing::debug;

use crate::token::Tokens;
use crate::{CredentialsError, EarthdataConfig, TemporaryCredentials, parse_credentials};

/// Largest response body read (the real answer is well under 2 KB).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Characters of an error response body kept in [`CredentialsError::Status`].
/// The connect phase gets at most this much of the request timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Fetches temporary credentials, without caching (see
/// [`EarthdataCredentialProvider`](crate::EarthdataCredentialProvider) for that). Cheap to clone.
#[derive(Clone)]
pub struct EarthdataClient {
    http: reqwest::Client,
    url: Url,
    /// The bearer token and where a new one comes from.
    tokens: Arc<Tokens>,
    max_attempts: u32,
    retry_base_delay: Duration,
    retry_max_delay: Duration,
}

impl fmt::Debug for EarthdataClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EarthdataClient")
            .field("url", &self.url.as_str())
            .field("token", &crate::REDACTED)
            .field("max_attempts", &self.max_attempts)
            .field("retry_base_delay", &self.retry_base_delay)
            .field("retry_max_delay", &self.retry_max_delay)
            .finish_non_exhaustive()
    }
}

/// A failed attempt and, for 429/503, the server's `Retry-After`.
type AttemptError = imerg_retry::Failure<CredentialsError>;

impl EarthdataClient {
    /// Validates the URL (`https://`, or `http://` to a loopback host) and builds the HTTP client
    /// (rustls, the platform's trust store).
    pub fn new(config: &EarthdataConfig) -> Result<Self, CredentialsError> {
        let url = check_url(&config.url)?;
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(MAX_CONNECT_TIMEOUT))
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("imerg-ingest/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(CredentialsError::Client)?;
        Ok(Self {
            http,
            url,
            tokens: Arc::new(Tokens::new(config.source.clone(), &config.token)),
            max_attempts: config.max_attempts.max(1),
            retry_base_delay: config.retry_base_delay,
            retry_max_delay: config.retry_max_delay,
        })
    }

    /// The endpoint.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// Fetches a new set of credentials, retrying transient failures (transport errors, HTTP
    /// 408, 429, 5xx) up to `max_attempts` in all. When every attempt failed transiently the
    /// error is [`CredentialsError::RetriesExhausted`] around the last one; any other error is
    /// returned as it is, at once.
    pub async fn fetch(&self) -> Result<TemporaryCredentials, CredentialsError> {
        let policy = imerg_retry::Policy {
            max_attempts: self.max_attempts,
            base_delay: self.retry_base_delay,
            max_delay: self.retry_max_delay,
        };
        let attempt = |renew: bool| {
            imerg_retry::retry(
                policy,
                "fetching Earthdata S3 credentials",
                CredentialsError::is_transient,
                move |_| self.fetch_once(renew),
            )
        };
        let result = match attempt(false).await {
            // A refused token that can be replaced (a rotated file, a login): once more with a
            // new one.
            Err(imerg_retry::GaveUp::Final(e))
                if e.is_unauthorized() && self.tokens.renewable() =>
            {
                debug!("the Earthdata token was refused: renewing it");
                attempt(true).await
            }
            other => other,
        };
        result.map_err(|gave_up| match gave_up {
            imerg_retry::GaveUp::Final(e) => e,
            imerg_retry::GaveUp::Exhausted { attempts, last } => {
                CredentialsError::RetriesExhausted {
                    attempts,
                    last: Box::new(last),
                }
            }
        })
    }

    async fn fetch_once(&self, renew: bool) -> Result<TemporaryCredentials, AttemptError> {
        debug!(url = %self.url, "requesting Earthdata S3 credentials");
        let token = self.tokens.bearer(&self.http, renew).await?;
        let mut authorization = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| CredentialsError::InvalidToken)?;
        authorization.set_sensitive(true);
        let mut response = self
            .http
            .get(self.url.clone())
            .header(header::AUTHORIZATION, authorization)
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry_after = retry_after(&response);
        let (body, truncated) = read_body(&mut response)
            .await
            .map_err(|e| self.transport(e))?;
        if !status.is_success() {
            return Err(AttemptError {
                error: CredentialsError::Status {
                    url: self.url.to_string(),
                    status: status.as_u16(),
                    body: error_body(&body, Some(&token)),
                },
                retry_after: match status {
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => retry_after,
                    _ => None,
                },
            });
        }
        if truncated {
            return Err(CredentialsError::MalformedJson {
                url: self.url.to_string(),
                reason: format!("response body larger than {MAX_BODY_BYTES} bytes"),
            }
            .into());
        }
        let creds = parse_credentials(&body, self.url.as_str(), content_type.as_deref())?;
        if creds.expiration <= Utc::now() {
            return Err(CredentialsError::AlreadyExpired {
                url: self.url.to_string(),
                expiration: creds.expiration,
            }
            .into());
        }
        Ok(creds)
    }

    fn transport(&self, e: reqwest::Error) -> AttemptError {
        let error = if e.is_builder() {
            CredentialsError::Client(e.without_url())
        } else {
            let kind = if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connect error"
            } else {
                "request error"
            };
            let e = e.without_url();
            CredentialsError::Transport {
                url: self.url.to_string(),
                kind,
                detail: error_chain(&e),
                error: e,
            }
        };
        error.into()
    }
}

/// An error and its causes, joined with ": ".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

fn check_url(raw: &str) -> Result<Url, CredentialsError> {
    let invalid = |reason: String| CredentialsError::InvalidUrl {
        url: raw.to_owned(),
        reason,
    };
    let url = Url::parse(raw).map_err(|e| invalid(e.to_string()))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(invalid(
            "plain http would send the bearer token unencrypted; use https".to_owned(),
        )),
        other => Err(invalid(format!("unsupported scheme {other:?}"))),
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads at most [`MAX_BODY_BYTES`]; the flag says whether there was more.
async fn read_body(response: &mut Response) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_BODY_BYTES - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn urls_must_be_https_except_loopback() {
        for ok in [
            "https://data.gesdisc.earthdata.nasa.gov/s3credentials",
            "http://127.0.0.1:8080/s3credentials",
            "http://localhost/x",
            "http://[::1]:1/x",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in ["http://example.com/s3credentials", "ftp://x/y", "not a url"] {
            let err = check_url(bad).unwrap_err();
            assert!(matches!(err, CredentialsError::InvalidUrl { .. }), "{bad}");
        }
    }

    #[test]
    fn client_debug_redacts_the_token() {
        let config = EarthdataConfig::new("client-secret-token").unwrap();
        let client = EarthdataClient::new(&config).unwrap();
        let dbg = format!("{client:?}");
        assert!(!dbg.contains("client-secret-token"), "{dbg}");
    }
}
