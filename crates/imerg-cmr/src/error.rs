//! Errors of a CMR granule search. None of them carries the bearer token: error bodies are
//! scrubbed of it, and request URLs never contain it (it travels only in a header).

use chrono::{DateTime, Utc};

/// Why a granule search failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CmrError {
    /// The configured CMR URL is not usable.
    #[error("invalid CMR URL {url:?}: {reason}")]
    InvalidUrl {
        /// The configured URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token is empty or cannot be sent in an HTTP header.
    #[error("the Earthdata token is empty or contains characters not allowed in an HTTP header")]
    InvalidToken,
    /// A configuration value is out of range (page size, caps, empty collection name).
    #[error("invalid CMR search configuration: {0}")]
    InvalidConfig(String),
    /// The requested time window ends before it starts.
    #[error("invalid temporal range: end {end} is before start {start}")]
    InvalidRange {
        /// Window start.
        start: DateTime<Utc>,
        /// Window end.
        end: DateTime<Utc>,
    },
    /// The HTTP client could not be built (TLS initialisation).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// CMR answered with a status other than 2xx.
    #[error("CMR {url}: HTTP {status} on page {page}: {body}")]
    Status {
        /// The search endpoint (no query string).
        url: String,
        /// The page being fetched (1-based).
        page: u32,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body (at most ~200 characters, single line, the token
        /// removed if the server echoed it).
        body: String,
    },
    /// The request failed below HTTP: connection, TLS, timeout, interrupted body.
    #[error("CMR {url}: {kind} on page {page}: {detail}")]
    Transport {
        /// The search endpoint.
        url: String,
        /// The page being fetched (1-based).
        page: u32,
        /// "timeout", "connect error" or "request error".
        kind: &'static str,
        /// The client's error and its causes, joined with ": ".
        detail: String,
        /// The client's error (its causes are already in `detail`, so it is not the `source`).
        error: reqwest::Error,
    },
    /// A response body was larger than the configured cap (announced or read).
    #[error("CMR {url}: response body of page {page} exceeds {limit} bytes")]
    BodyTooLarge {
        /// The search endpoint.
        url: String,
        /// The page (1-based).
        page: u32,
        /// The cap (`max_body_bytes`).
        limit: usize,
    },
    /// A 2xx response is not a UMM-JSON search result (HTML, truncated JSON, no `items`, a
    /// granule without `GranuleUR`).
    #[error("CMR {url}: malformed response on page {page}: {reason}")]
    MalformedResponse {
        /// The search endpoint.
        url: String,
        /// The page (1-based).
        page: u32,
        /// What is wrong (parser message or header problem; never the body itself).
        reason: String,
    },
    /// The search matches more granules than `max_granules`: narrow the window or raise the cap.
    /// Detected from `CMR-Hits` before paging when the server announces it, otherwise while
    /// paging. No partial result is returned.
    #[error(
        "CMR search matches more than {limit} granules ({fetched} fetched{}); narrow the \
         temporal window or raise max_granules",
        hits.map(|h| format!(", CMR-Hits {h}")).unwrap_or_default()
    )]
    TooManyGranules {
        /// The cap.
        limit: usize,
        /// Granules collected when the search stopped.
        fetched: usize,
        /// The `CMR-Hits` header of the last page, when it had one.
        hits: Option<u64>,
    },
    /// The server kept sending `CMR-Search-After` past the page cap (a broken or hostile
    /// server, or short pages). No partial result is returned.
    #[error(
        "CMR search still not finished after {limit} pages ({fetched} granules); the server \
         keeps sending CMR-Search-After"
    )]
    TooManyPages {
        /// The cap.
        limit: u32,
        /// Granules collected when the search stopped.
        fetched: usize,
    },
    /// A transient failure persisted through every attempt of one page.
    #[error("CMR: giving up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        last: Box<CmrError>,
    },
}

impl CmrError {
    /// Whether the same search may succeed later: transport errors, HTTP 408, 429 and 5xx, and
    /// retries exhausted on one of those. Other 4xx, malformed responses, caps and configuration
    /// errors are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Status { status, .. } => is_transient_status(*status),
            Self::RetriesExhausted { last, .. } => last.is_transient(),
            _ => false,
        }
    }

    /// The HTTP status of the (last) failed response, if CMR answered with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::RetriesExhausted { last, .. } => last.status(),
            _ => None,
        }
    }
}

/// 408, 429 and 5xx.
pub(crate) fn is_transient_status(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}
