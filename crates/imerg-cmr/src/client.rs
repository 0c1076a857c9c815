//! The CMR granule search client: one `granules.umm_json` query paged with `CMR-Search-After`,
//! bounded by page and granule caps, with per-page retries (exponential backoff and jitter) on
//! transient failures, capped response bodies and an optional bearer token.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use imerg_retry::error_body;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Response, StatusCode, Url};
use tracing::{debug, info};

use crate::granule::{CmrGranule, parse_page};
use crate::{CmrConfig, CmrError, MAX_PAGE_SIZE};

/// Request and response header carrying CMR's opaque paging cursor.
pub const SEARCH_AFTER_HEADER: &str = "cmr-search-after";
/// Response header with the total number of matches.
pub const HITS_HEADER: &str = "cmr-hits";
/// The path appended to the CMR root.
const SEARCH_PATH: &str = "search/granules.umm_json";
/// Bytes of an error response read for its message.
const MAX_ERROR_BODY_BYTES: usize = 4096;
/// Characters of an error response body kept in [`CmrError::Status`].
/// Longest `CMR-Search-After` value accepted (real ones are a short JSON array).
const MAX_SEARCH_AFTER_BYTES: usize = 4096;
/// The connect phase gets at most this much of the request timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Searches one collection's granules in CMR. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), imerg_cmr::CmrError> {
/// use chrono::{TimeDelta, Utc};
/// use imerg_cmr::{CmrClient, CmrConfig};
///
/// let client = CmrClient::new(CmrConfig::new("GPM_3IMERGHHE", "07"))?;
/// let end = Utc::now();
/// for g in client.granules(end - TimeDelta::days(2), end).await? {
///     println!("{} {:?} {:?}", g.granule_ur, g.temporal_start, g.s3_urls);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CmrClient {
    http: reqwest::Client,
    search_url: Url,
    short_name: String,
    version: String,
    authorization: Option<HeaderValue>,
    /// Kept only to scrub it from error bodies a server might echo it in.
    token: Option<String>,
    page_size: u32,
    max_granules: usize,
    max_pages: u32,
    max_body_bytes: usize,
    max_attempts: u32,
    retry_base_delay: Duration,
    retry_max_delay: Duration,
}

impl fmt::Debug for CmrClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CmrClient")
            .field("search_url", &self.search_url.as_str())
            .field("short_name", &self.short_name)
            .field("version", &self.version)
            .field("token", &self.token.as_ref().map(|_| crate::REDACTED))
            .field("page_size", &self.page_size)
            .field("max_granules", &self.max_granules)
            .field("max_pages", &self.max_pages)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// What one successful page request returned.
struct PageResponse {
    granules: Vec<CmrGranule>,
    hits: Option<u64>,
    search_after: Option<HeaderValue>,
}

/// A failed attempt and, for 429/503, the server's `Retry-After`.
type AttemptError = imerg_retry::Failure<CmrError>;

impl CmrClient {
    /// Validates the configuration (URL `https://` or loopback `http://`, page size 1..=2000,
    /// non-zero caps, non-empty collection, a header-safe token) and builds the HTTP client
    /// (rustls, the platform's trust store).
    pub fn new(config: CmrConfig) -> Result<Self, CmrError> {
        let search_url = search_url(&config.url)?;
        let invalid = |what: &str| Err(CmrError::InvalidConfig(what.to_owned()));
        if config.short_name.trim().is_empty() {
            return invalid("short_name is empty");
        }
        if config.version.trim().is_empty() {
            return invalid("version is empty");
        }
        if !(1..=MAX_PAGE_SIZE).contains(&config.page_size) {
            return Err(CmrError::InvalidConfig(format!(
                "page_size {} is outside 1..={MAX_PAGE_SIZE}",
                config.page_size
            )));
        }
        if config.max_granules == 0 {
            return invalid("max_granules is 0");
        }
        if config.max_pages == Some(0) {
            return invalid("max_pages is 0");
        }
        if config.max_body_bytes == 0 {
            return invalid("max_body_bytes is 0");
        }
        let token = match config.token.as_deref().map(str::trim) {
            None => None,
            Some("") => return Err(CmrError::InvalidToken),
            // Visible ASCII and inner spaces/tabs only: what `HeaderValue` accepts without
            // surprises (it would take non-ASCII bytes as opaque).
            Some(t)
                if !t
                    .bytes()
                    .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic()) =>
            {
                return Err(CmrError::InvalidToken);
            }
            Some(t) => Some(t.to_owned()),
        };
        let authorization = match &token {
            None => None,
            Some(t) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| CmrError::InvalidToken)?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(MAX_CONNECT_TIMEOUT))
            // CMR does not redirect searches; a redirect would also carry the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("imerg-ingest/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(CmrError::Client)?;
        Ok(Self {
            max_pages: config.effective_max_pages(),
            http,
            search_url,
            short_name: config.short_name.trim().to_owned(),
            version: config.version.trim().to_owned(),
            authorization,
            token,
            page_size: config.page_size,
            max_granules: config.max_granules,
            max_body_bytes: config.max_body_bytes,
            max_attempts: config.max_attempts.max(1),
            retry_base_delay: config.retry_base_delay,
            retry_max_delay: config.retry_max_delay,
        })
    }

    /// The search endpoint, without query string.
    pub fn search_url(&self) -> &str {
        self.search_url.as_str()
    }

    /// Every granule of the collection whose time range overlaps `[start, end]` (CMR's
    /// `temporal`, inclusive, to the second), sorted by start date.
    ///
    /// Pages are requested with `page_size` and linked by the `CMR-Search-After` header (never
    /// `page_num`). The search ends at the first page that is empty, has no `CMR-Search-After`
    /// header, or brings the total to `CMR-Hits`. It fails, returning nothing, with
    /// [`CmrError::TooManyGranules`] as soon as `CMR-Hits` or the granules collected exceed
    /// `max_granules`, and with [`CmrError::TooManyPages`] when the server still sends a cursor
    /// after the page cap. Each page is retried on transient failures up to `max_attempts`.
    pub async fn granules(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<CmrGranule>, CmrError> {
        if end < start {
            return Err(CmrError::InvalidRange { start, end });
        }
        let temporal = format!(
            "{},{}",
            start.to_rfc3339_opts(SecondsFormat::Secs, true),
            end.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        let mut url = self.search_url.clone();
        url.query_pairs_mut()
            .append_pair("short_name", &self.short_name)
            .append_pair("version", &self.version)
            .append_pair("temporal", &temporal)
            .append_pair("sort_key", "start_date")
            .append_pair("page_size", &self.page_size.to_string());

        let mut granules: Vec<CmrGranule> = Vec::new();
        let mut search_after: Option<HeaderValue> = None;
        for page in 1..=self.max_pages {
            let response = self.fetch_page(&url, search_after.as_ref(), page).await?;
            let count = response.granules.len();
            if let Some(hits) = response.hits
                && hits > u64::try_from(self.max_granules).unwrap_or(u64::MAX)
            {
                return Err(CmrError::TooManyGranules {
                    limit: self.max_granules,
                    fetched: granules.len(),
                    hits: Some(hits),
                });
            }
            if count > self.max_granules - granules.len() {
                return Err(CmrError::TooManyGranules {
                    limit: self.max_granules,
                    fetched: granules.len() + count,
                    hits: response.hits,
                });
            }
            granules.extend(response.granules);
            debug!(
                short_name = %self.short_name,
                page,
                count,
                total = granules.len(),
                hits = response.hits,
                more = response.search_after.is_some(),
                "CMR granule page"
            );
            let reached_hits = response
                .hits
                .is_some_and(|hits| u64::try_from(granules.len()).unwrap_or(u64::MAX) >= hits);
            match response.search_after {
                Some(cursor) if count > 0 && !reached_hits => search_after = Some(cursor),
                _ => {
                    info!(
                        short_name = %self.short_name,
                        version = %self.version,
                        temporal = %temporal,
                        pages = page,
                        granules = granules.len(),
                        "CMR granule search done"
                    );
                    return Ok(granules);
                }
            }
        }
        Err(CmrError::TooManyPages {
            limit: self.max_pages,
            fetched: granules.len(),
        })
    }

    /// One page, retried on transient failures.
    async fn fetch_page(
        &self,
        url: &Url,
        search_after: Option<&HeaderValue>,
        page: u32,
    ) -> Result<PageResponse, CmrError> {
        let what = format!("CMR granule search (page {page})");
        imerg_retry::retry(self.retry_policy(), &what, CmrError::is_transient, |_| {
            self.fetch_once(url, search_after, page)
        })
        .await
        .map_err(|gave_up| match gave_up {
            imerg_retry::GaveUp::Final(e) => e,
            imerg_retry::GaveUp::Exhausted { attempts, last } => CmrError::RetriesExhausted {
                attempts,
                last: Box::new(last),
            },
        })
    }

    fn retry_policy(&self) -> imerg_retry::Policy {
        imerg_retry::Policy {
            max_attempts: self.max_attempts,
            base_delay: self.retry_base_delay,
            max_delay: self.retry_max_delay,
        }
    }

    async fn fetch_once(
        &self,
        url: &Url,
        search_after: Option<&HeaderValue>,
        page: u32,
    ) -> Result<PageResponse, AttemptError> {
        let mut request = self
            .http
            .get(url.clone())
            .header(header::ACCEPT, "application/json")
            .header("client-id", "imerg-ingest");
        if let Some(authorization) = &self.authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        if let Some(cursor) = search_after {
            request = request.header(SEARCH_AFTER_HEADER, cursor.clone());
        }
        let mut response = request.send().await.map_err(|e| self.transport(e, page))?;
        let status = response.status();
        let headers = response.headers();
        let retry_after = retry_after(headers);
        if !status.is_success() {
            let (body, _) = read_body(&mut response, MAX_ERROR_BODY_BYTES)
                .await
                .unwrap_or_default();
            return Err(AttemptError {
                error: CmrError::Status {
                    url: self.search_url.to_string(),
                    page,
                    status: status.as_u16(),
                    body: error_body(&body, self.token.as_deref()),
                },
                retry_after: match status {
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => retry_after,
                    _ => None,
                },
            });
        }
        let malformed = |reason: String| CmrError::MalformedResponse {
            url: self.search_url.to_string(),
            page,
            reason,
        };
        let header_hits = match headers.get(HITS_HEADER) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or_else(|| malformed("CMR-Hits header is not a number".to_owned()))?,
            ),
        };
        let next = match headers.get(HeaderName::from_static(SEARCH_AFTER_HEADER)) {
            Some(v) if v.len() > MAX_SEARCH_AFTER_BYTES => {
                return Err(malformed(format!(
                    "CMR-Search-After header longer than {MAX_SEARCH_AFTER_BYTES} bytes"
                ))
                .into());
            }
            Some(v) if v.is_empty() => None,
            Some(v) => Some(v.clone()),
            None => None,
        };
        let too_large = || CmrError::BodyTooLarge {
            url: self.search_url.to_string(),
            page,
            limit: self.max_body_bytes,
        };
        if response
            .content_length()
            .is_some_and(|len| len > u64::try_from(self.max_body_bytes).unwrap_or(u64::MAX))
        {
            return Err(too_large().into());
        }
        let (body, truncated) = read_body(&mut response, self.max_body_bytes)
            .await
            .map_err(|e| self.transport(e, page))?;
        if truncated {
            return Err(too_large().into());
        }
        // A full page is megabytes of JSON: parse it off the async worker threads.
        let parsed = tokio::task::spawn_blocking(move || parse_page(&body))
            .await
            .map_err(|e| malformed(format!("parser task failed: {e}")))?
            .map_err(malformed)?;
        Ok(PageResponse {
            hits: header_hits.or(parsed.hits),
            granules: parsed.granules,
            search_after: next,
        })
    }

    fn transport(&self, e: reqwest::Error, page: u32) -> AttemptError {
        let error = if e.is_builder() {
            CmrError::Client(e.without_url())
        } else {
            let kind = if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connect error"
            } else {
                "request error"
            };
            let e = e.without_url();
            CmrError::Transport {
                url: self.search_url.to_string(),
                page,
                kind,
                detail: error_chain(&e),
                error: e,
            }
        };
        error.into()
    }
}

/// The search endpoint under the configured CMR root (`…/search/granules.umm_json`).
fn search_url(raw: &str) -> Result<Url, CmrError> {
    let invalid = |reason: String| CmrError::InvalidUrl {
        url: raw.to_owned(),
        reason,
    };
    let mut url = Url::parse(raw.trim()).map_err(|e| invalid(e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(invalid(
                "plain http would expose the search and the bearer token; use https".to_owned(),
            ));
        }
        other => return Err(invalid(format!("unsupported scheme {other:?}"))),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "must be the CMR root, without query or fragment".to_owned(),
        ));
    }
    if url.cannot_be_a_base() {
        return Err(invalid("not a base URL".to_owned()));
    }
    let path = url.path().trim_end_matches('/');
    let root = path.strip_suffix("/search").unwrap_or(path);
    let full = format!("{root}/{SEARCH_PATH}");
    url.set_path(&full);
    Ok(url)
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

/// Reads at most `limit` bytes; the flag says whether there was more.
async fn read_body(
    response: &mut Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let expected = response
        .content_length()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0);
    let mut body = Vec::with_capacity(expected.min(limit));
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn search_url_is_built_under_the_root() {
        for (root, want) in [
            (
                "https://cmr.earthdata.nasa.gov",
                "https://cmr.earthdata.nasa.gov/search/granules.umm_json",
            ),
            (
                "https://cmr.earthdata.nasa.gov/search/",
                "https://cmr.earthdata.nasa.gov/search/granules.umm_json",
            ),
            (
                "https://cmr.uat.earthdata.nasa.gov/",
                "https://cmr.uat.earthdata.nasa.gov/search/granules.umm_json",
            ),
            (
                "http://127.0.0.1:9/proxy",
                "http://127.0.0.1:9/proxy/search/granules.umm_json",
            ),
        ] {
            assert_eq!(search_url(root).unwrap().as_str(), want, "{root}");
        }
        for bad in [
            "http://cmr.earthdata.nasa.gov",
            "ftp://x/y",
            "not a url",
            "https://cmr.earthdata.nasa.gov/?a=b",
            "mailto:x@y",
        ] {
            assert!(
                matches!(search_url(bad), Err(CmrError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn config_is_validated_and_debug_redacts_the_token() {
        let ok = CmrConfig::new("GPM_3IMERGHH", "07").with_token(" secret-tok-9 \n");
        let client = CmrClient::new(ok.clone()).unwrap();
        assert!(!format!("{client:?}").contains("secret-tok-9"));
        for bad in [
            ok.clone().with_page_size(0),
            ok.clone().with_page_size(2001),
            ok.clone().with_max_granules(0),
            ok.clone().with_max_pages(0),
            ok.clone().with_max_body_bytes(0),
            CmrConfig::new(" ", "07"),
            CmrConfig::new("GPM_3IMERGHH", ""),
        ] {
            let err = CmrClient::new(bad).unwrap_err();
            assert!(matches!(err, CmrError::InvalidConfig(_)), "{err}");
        }
        for token in ["", "  ", "bad\u{1}token", "naïve"] {
            let err = CmrClient::new(ok.clone().with_token(token)).unwrap_err();
            assert!(matches!(err, CmrError::InvalidToken), "{err}");
            assert!(!err.to_string().contains("token\u{1}"));
        }
    }
}
