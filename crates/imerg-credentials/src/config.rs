//! Configuration of the Earthdata `s3credentials` client: endpoint, bearer token, refresh and
//! retry policy. The token never appears in `Debug` output or error messages.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::token::TokenSource;

/// The GES DISC endpoint that hands out temporary S3 credentials for its `us-west-2` bucket.
pub const DEFAULT_URL: &str = "https://data.gesdisc.earthdata.nasa.gov/s3credentials";
/// Refresh this long before the credentials expire.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Attempts per fetch (the first one included) before a transient failure is returned.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Timeout of one HTTP request (connect + response + body).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Backoff before the first retry; doubles with every further retry.
pub const DEFAULT_RETRY_BASE_DELAY: Duration = Duration::from_millis(500);
/// Upper bound of one backoff (jitter and `Retry-After` included).
pub const DEFAULT_RETRY_MAX_DELAY: Duration = Duration::from_secs(20);

/// Where and how to fetch temporary S3 credentials.
///
/// `Debug` prints `token: "[redacted]"`.
#[derive(Clone, PartialEq, Eq)]
pub struct EarthdataConfig {
    /// The `s3credentials` endpoint. Must be `https://` (plain `http://` is accepted only for
    /// loopback hosts, for tests).
    pub url: String,
    /// Earthdata Login bearer token, sent as `Authorization: Bearer <token>`.
    pub token: String,
    /// Credentials are refreshed once `now >= expiration - refresh_margin`.
    pub refresh_margin: Duration,
    /// Attempts per fetch, the first included (0 is treated as 1). Only transient failures are
    /// retried: connection errors, timeouts, HTTP 408, 429 and 5xx.
    pub max_attempts: u32,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// Backoff before the first retry; doubles with every further retry, plus up to 50% jitter.
    pub retry_base_delay: Duration,
    /// Upper bound of one backoff.
    pub retry_max_delay: Duration,
    /// Where `token` came from, and where a new one comes from (a file read again before every
    /// fetch, a login that mints one).
    pub source: TokenSource,
}

/// The token could not be read or is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The token file could not be read.
    #[error("cannot read the Earthdata token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The environment variable is not set or not UTF-8.
    #[error("cannot read the Earthdata token from environment variable {name}: {source}")]
    TokenEnv {
        /// The variable's name.
        name: String,
        /// Why.
        #[source]
        source: std::env::VarError,
    },
    /// The token is empty after trimming white space.
    #[error("the Earthdata token from {origin} is empty")]
    EmptyToken {
        /// Where it came from (a file path, an environment variable's name, or "value").
        origin: String,
    },
    /// The token contains characters an HTTP header cannot carry (control characters, non-ASCII).
    #[error(
        "the Earthdata token from {origin} contains characters not allowed in an HTTP header \
         (control or non-ASCII characters)"
    )]
    InvalidToken {
        /// Where it came from.
        origin: String,
    },
}

impl EarthdataConfig {
    /// A configuration with the given token (trimmed) and every other field at its default.
    pub fn new(token: &str) -> Result<Self, ConfigError> {
        Self::from_token_value(token, "value")
    }

    /// Reads the token from a file (for example a mounted secret); surrounding white space and
    /// the trailing newline are removed.
    pub fn from_token_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
            path: path.to_path_buf(),
            source,
        })?;
        let token = check_token(&text, &path.display().to_string())?;
        Ok(Self::with_token(
            token,
            TokenSource::File(path.to_path_buf()),
        ))
    }

    /// Reads the token from the environment variable `name` (trimmed).
    pub fn from_env_var(name: &str) -> Result<Self, ConfigError> {
        let value = std::env::var(name).map_err(|source| ConfigError::TokenEnv {
            name: name.to_owned(),
            source,
        })?;
        Self::from_token_value(&value, name)
    }

    /// Takes a token value already read from somewhere (an environment variable's value, a
    /// command-line flag); `origin` names that place in error messages. The value is trimmed.
    pub fn from_token_value(value: &str, origin: &str) -> Result<Self, ConfigError> {
        Ok(Self::with_token(
            check_token(value, origin)?,
            TokenSource::Value,
        ))
    }

    /// An Earthdata Login account: a token is minted from it (at
    /// [`crate::DEFAULT_LOGIN_URL`], see [`Self::with_login_url`]) before the first fetch, and
    /// again whenever the s3credentials endpoint refuses the token.
    pub fn from_login(username: &str, password: &str) -> Result<Self, ConfigError> {
        if username.trim().is_empty() || password.is_empty() {
            return Err(ConfigError::EmptyToken {
                origin: "the Earthdata Login username or password".into(),
            });
        }
        Ok(Self::with_token(
            String::new(),
            TokenSource::Login {
                username: username.trim().to_owned(),
                password: password.to_owned(),
                login_url: crate::token::DEFAULT_LOGIN_URL.to_owned(),
            },
        ))
    }

    fn with_token(token: String, source: TokenSource) -> Self {
        Self {
            url: DEFAULT_URL.to_owned(),
            token,
            refresh_margin: DEFAULT_REFRESH_MARGIN,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry_base_delay: DEFAULT_RETRY_BASE_DELAY,
            retry_max_delay: DEFAULT_RETRY_MAX_DELAY,
            source,
        }
    }

    /// Replaces Earthdata Login's URL (where a login mints tokens); other sources ignore it.
    #[must_use]
    pub fn with_login_url(mut self, url: impl Into<String>) -> Self {
        if let TokenSource::Login { login_url, .. } = &mut self.source {
            *login_url = url.into();
        }
        self
    }

    /// Replaces the endpoint URL.
    #[must_use]
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Replaces the refresh margin.
    #[must_use]
    pub fn with_refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    /// Replaces the number of attempts per fetch.
    #[must_use]
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Replaces the per-request timeout.
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Replaces the backoff bounds (first retry delay, maximum delay).
    #[must_use]
    pub fn with_retry_delays(mut self, base: Duration, max: Duration) -> Self {
        self.retry_base_delay = base;
        self.retry_max_delay = max;
        self
    }
}

/// A token trimmed of surrounding white space, or why it cannot be sent: empty, or holding
/// characters an HTTP header cannot carry. `origin` names where it came from in the error.
pub(crate) fn check_token(value: &str, origin: &str) -> Result<String, ConfigError> {
    let token = value.trim();
    if token.is_empty() {
        return Err(ConfigError::EmptyToken {
            origin: origin.to_owned(),
        });
    }
    // Visible ASCII and inner spaces/tabs only: what `HeaderValue` accepts without surprises.
    if !token
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
    {
        return Err(ConfigError::InvalidToken {
            origin: origin.to_owned(),
        });
    }
    Ok(token.to_owned())
}

impl fmt::Debug for EarthdataConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EarthdataConfig")
            .field("url", &self.url)
            .field("token", &crate::REDACTED)
            .field("refresh_margin", &self.refresh_margin)
            .field("max_attempts", &self.max_attempts)
            .field("request_timeout", &self.request_timeout)
            .field("retry_base_delay", &self.retry_base_delay)
            .field("retry_max_delay", &self.retry_max_delay)
            .field("source", &self.source)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn value_is_trimmed_and_defaults_apply() {
        let c = EarthdataConfig::new("  abc.def-ghi \n").unwrap();
        assert_eq!(c.token, "abc.def-ghi");
        assert_eq!(c.url, DEFAULT_URL);
        assert_eq!(c.refresh_margin, Duration::from_secs(300));
        assert_eq!(c.max_attempts, 5);
        assert_eq!(c.request_timeout, Duration::from_secs(20));
    }

    #[test]
    fn empty_and_invalid_tokens_are_rejected_without_echoing_them() {
        assert!(matches!(
            EarthdataConfig::new(" \n\t"),
            Err(ConfigError::EmptyToken { .. })
        ));
        let err = EarthdataConfig::from_token_value("sec\u{1}ret", "EARTHDATA_TOKEN").unwrap_err();
        assert!(matches!(err, ConfigError::InvalidToken { .. }));
        let msg = err.to_string();
        assert!(msg.contains("EARTHDATA_TOKEN"), "{msg}");
        assert!(!msg.contains("sec"), "{msg}");
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let path = std::env::temp_dir().join(format!(
            "imerg-credentials-token-{}.txt",
            std::process::id()
        ));
        std::fs::write(&path, "file-token-xyz\n").unwrap();
        let c = EarthdataConfig::from_token_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(c.token, "file-token-xyz");

        let err = EarthdataConfig::from_token_file(&path).unwrap_err();
        assert!(matches!(err, ConfigError::TokenFile { .. }), "{err}");
    }

    #[test]
    fn missing_env_var_is_an_error() {
        let err =
            EarthdataConfig::from_env_var("IMERG_CREDENTIALS_TEST_SURELY_UNSET_VAR").unwrap_err();
        assert!(matches!(err, ConfigError::TokenEnv { .. }), "{err}");
    }

    #[test]
    fn debug_redacts_the_token() {
        let c = EarthdataConfig::new("very-secret-token-123").unwrap();
        let dbg = format!("{c:?} {c:#?}");
        assert!(!dbg.contains("very-secret-token-123"), "{dbg}");
        assert!(dbg.contains("redacted"), "{dbg}");
        assert!(dbg.contains(DEFAULT_URL), "{dbg}");
    }
}
