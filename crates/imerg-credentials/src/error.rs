//! Errors of fetching and parsing temporary credentials. None of them carries the bearer token
//! or any part of the credentials themselves.

/// Why temporary credentials could not be obtained.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The configured endpoint is not a usable URL.
    #[error("invalid s3credentials URL {url:?}: {reason}")]
    InvalidUrl {
        /// The configured URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token cannot be sent in an HTTP header.
    #[error("the Earthdata token contains characters not allowed in an HTTP header")]
    InvalidToken,
    /// No token could be had from its source (an unreadable token file, a login Earthdata
    /// refused); the text names the source, never a secret.
    #[error("Earthdata token: {0}")]
    Token(String),
    /// The HTTP client could not be built (TLS initialisation).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The endpoint answered with a status other than 2xx.
    #[error("s3credentials {url}: HTTP {status}: {body}")]
    Status {
        /// The endpoint.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body (at most ~200 characters, single line, the token
        /// removed if the server echoed it).
        body: String,
    },
    /// The request failed below HTTP: connection, TLS, timeout, interrupted body.
    #[error("s3credentials {url}: {kind}: {detail}")]
    Transport {
        /// The endpoint.
        url: String,
        /// "timeout", "connect error" or "request error".
        kind: &'static str,
        /// The client's error and its causes, joined with ": " (for example "error sending
        /// request: client error (Connect): tcp connect error: Connection refused").
        detail: String,
        /// The client's error (its causes are already in `detail`, so it is not the `source`).
        error: reqwest::Error,
    },
    /// The response is not a JSON object (for example an HTML login page).
    #[error("s3credentials {url}: malformed JSON response: {reason}")]
    MalformedJson {
        /// The endpoint.
        url: String,
        /// What is wrong (parser message, content type, body size; never the body itself).
        reason: String,
    },
    /// A required field is absent, null, empty or not a string.
    #[error("s3credentials {url}: response field `{field}` is {problem}")]
    MissingField {
        /// The endpoint.
        url: String,
        /// The JSON field name (`accessKeyId`, `secretAccessKey`, `sessionToken`, `expiration`).
        field: &'static str,
        /// "missing", "null", "empty" or "not a string".
        problem: &'static str,
    },
    /// The `expiration` field is not a timestamp this crate understands.
    #[error("s3credentials {url}: unparsable expiration {value:?}")]
    Expiration {
        /// The endpoint.
        url: String,
        /// The field's value.
        value: String,
    },
    /// The credentials returned had already expired (clock skew or a broken endpoint).
    #[error("s3credentials {url}: credentials already expired at {expiration}")]
    AlreadyExpired {
        /// The endpoint.
        url: String,
        /// Their expiration.
        expiration: chrono::DateTime<chrono::Utc>,
    },
    /// A transient failure persisted through every attempt.
    #[error("s3credentials: giving up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        last: Box<CredentialsError>,
    },
}

impl CredentialsError {
    /// Whether retrying the same request may succeed: transport errors, HTTP 408, 429 and 5xx.
    /// 401/403 (a bad or expired token) and malformed responses are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Status { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// The HTTP status of the (last) failed response, if the endpoint answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::RetriesExhausted { last, .. } => last.status(),
            _ => None,
        }
    }

    /// Whether the endpoint rejected the token (HTTP 401 or 403): the token must be renewed.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self.status(), Some(401 | 403))
    }
}
