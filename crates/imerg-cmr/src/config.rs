//! Configuration of the CMR granule search: endpoint, collection, page size, the per-sweep caps
//! that bound a broken server, timeouts, retry policy and the optional Earthdata bearer token.
//! The token never appears in `Debug` output or error messages.

use std::fmt;
use std::time::Duration;

/// NASA's operational CMR (the search path `/search/granules.umm_json` is appended).
pub const DEFAULT_URL: &str = "https://cmr.earthdata.nasa.gov";
/// CMR's largest page ("default is 10, max is 2000").
pub const MAX_PAGE_SIZE: u32 = 2000;
/// Granules per page requested by default.
pub const DEFAULT_PAGE_SIZE: u32 = MAX_PAGE_SIZE;
/// Granules one search may return by default: about 57 years of half-hourly granules, far more
/// than a sweep window; only a broken server or a far too wide window reaches it.
pub const DEFAULT_MAX_GRANULES: usize = 1_000_000;
/// Largest response body read per page. A page of 2,000 UMM-G records is about 8-10 MB (a
/// measured listing: 39 MB for ~9,600 granules).
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Timeout of one HTTP request (connect + response + body).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts per page (the first one included) before a transient failure is returned.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Backoff before the first retry; doubles with every further retry.
pub const DEFAULT_RETRY_BASE_DELAY: Duration = Duration::from_millis(500);
/// Upper bound of one backoff (jitter and `Retry-After` included).
pub const DEFAULT_RETRY_MAX_DELAY: Duration = Duration::from_secs(30);

/// What to search and how far to go.
///
/// `Debug` prints `token: Some("[redacted]")`.
#[derive(Clone, PartialEq, Eq)]
pub struct CmrConfig {
    /// The CMR root, for example `https://cmr.earthdata.nasa.gov` (a trailing `/search` or `/`
    /// is accepted). Must be `https://`; plain `http://` only to a loopback host (tests).
    pub url: String,
    /// Collection short name, for example `GPM_3IMERGHH` (Final), `GPM_3IMERGHHL` (Late),
    /// `GPM_3IMERGHHE` (Early).
    pub short_name: String,
    /// Collection version, for example `07`.
    pub version: String,
    /// Granules per page, 1..=2000.
    pub page_size: u32,
    /// Most granules one [`granules`](crate::CmrClient::granules) call collects; beyond it the
    /// search fails with [`CmrError::TooManyGranules`](crate::CmrError::TooManyGranules).
    pub max_granules: usize,
    /// Most pages one call requests; `None` derives it from the other two: enough full pages
    /// for `max_granules`, plus one (the empty page that may end a search). A server that keeps
    /// sending short pages with a `CMR-Search-After` header stops here
    /// ([`CmrError::TooManyPages`](crate::CmrError::TooManyPages)).
    pub max_pages: Option<u32>,
    /// Largest response body read per page; a larger one is
    /// [`CmrError::BodyTooLarge`](crate::CmrError::BodyTooLarge).
    pub max_body_bytes: usize,
    /// Timeout of one HTTP request, body included.
    pub timeout: Duration,
    /// Attempts per page, the first included (0 is treated as 1). Only transient failures are
    /// retried: connection errors, timeouts, HTTP 408, 429 and 5xx.
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles with every further retry, plus up to 50% jitter.
    pub retry_base_delay: Duration,
    /// Upper bound of one backoff.
    pub retry_max_delay: Duration,
    /// Earthdata Login bearer token, sent as `Authorization: Bearer <token>` when present
    /// (public collections need none; restricted ones are hidden without it).
    pub token: Option<String>,
}

impl CmrConfig {
    /// A search of collection `short_name` version `version` on [`DEFAULT_URL`], every other
    /// field at its default and no token.
    pub fn new(short_name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            url: DEFAULT_URL.to_owned(),
            short_name: short_name.into(),
            version: version.into(),
            page_size: DEFAULT_PAGE_SIZE,
            max_granules: DEFAULT_MAX_GRANULES,
            max_pages: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            timeout: DEFAULT_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_base_delay: DEFAULT_RETRY_BASE_DELAY,
            retry_max_delay: DEFAULT_RETRY_MAX_DELAY,
            token: None,
        }
    }

    /// Replaces the CMR root URL.
    #[must_use]
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Replaces the page size.
    #[must_use]
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size;
        self
    }

    /// Replaces the granule cap.
    #[must_use]
    pub fn with_max_granules(mut self, max_granules: usize) -> Self {
        self.max_granules = max_granules;
        self
    }

    /// Sets an explicit page cap.
    #[must_use]
    pub fn with_max_pages(mut self, max_pages: u32) -> Self {
        self.max_pages = Some(max_pages);
        self
    }

    /// Replaces the per-page body cap.
    #[must_use]
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Replaces the per-request timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Replaces the number of attempts per page.
    #[must_use]
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Replaces the backoff bounds (first retry delay, maximum delay).
    #[must_use]
    pub fn with_retry_delays(mut self, base: Duration, max: Duration) -> Self {
        self.retry_base_delay = base;
        self.retry_max_delay = max;
        self
    }

    /// Sets the bearer token (trimmed when the client is built).
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The page cap in force: `max_pages`, or enough full pages for `max_granules` plus one.
    pub fn effective_max_pages(&self) -> u32 {
        self.max_pages.unwrap_or_else(|| {
            let per_page = usize::try_from(self.page_size.max(1)).unwrap_or(usize::MAX);
            let full = self.max_granules.div_ceil(per_page);
            u32::try_from(full).unwrap_or(u32::MAX).saturating_add(1)
        })
    }
}

impl fmt::Debug for CmrConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CmrConfig")
            .field("url", &self.url)
            .field("short_name", &self.short_name)
            .field("version", &self.version)
            .field("page_size", &self.page_size)
            .field("max_granules", &self.max_granules)
            .field("max_pages", &self.max_pages)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("retry_base_delay", &self.retry_base_delay)
            .field("retry_max_delay", &self.retry_max_delay)
            .field("token", &self.token.as_ref().map(|_| crate::REDACTED))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_derived_page_cap() {
        let c = CmrConfig::new("GPM_3IMERGHH", "07");
        assert_eq!(c.url, DEFAULT_URL);
        assert_eq!(c.page_size, 2000);
        assert_eq!(c.token, None);
        assert_eq!(c.effective_max_pages(), 501);
        let c = c.with_page_size(10).with_max_granules(25);
        assert_eq!(c.effective_max_pages(), 4);
        assert_eq!(c.clone().with_max_pages(7).effective_max_pages(), 7);
        assert_eq!(c.with_page_size(0).effective_max_pages(), 26);
    }

    #[test]
    fn debug_redacts_the_token() {
        let c = CmrConfig::new("GPM_3IMERGHH", "07").with_token("edl-very-secret-123");
        let dbg = format!("{c:?} {c:#?}");
        assert!(!dbg.contains("edl-very-secret-123"), "{dbg}");
        assert!(dbg.contains("redacted"), "{dbg}");
    }
}
