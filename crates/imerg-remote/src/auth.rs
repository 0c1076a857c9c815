//! Who may call the internal services (CommitService, WorkerService): with a shared internal
//! token configured, callers that send it (`authorization: Bearer <token>`, compared in constant
//! time); without one, loopback peers only (the embedded default, where every role is in one
//! process or on one machine). Anything else is UNAUTHENTICATED, counted, and never told the
//! token.

use std::sync::Arc;

use imerg_metrics as m;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

/// The server side: a tonic interceptor.
#[derive(Clone)]
pub struct InternalAuth {
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for InternalAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalAuth")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl InternalAuth {
    /// `token`: the shared internal token (None or empty: loopback callers only).
    pub fn new(token: Option<&str>) -> Self {
        Self {
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
        }
    }
}

/// Does `req` carry `authorization: Bearer <token>` (compared in constant time), or, with no
/// token configured, come from a loopback peer? The one rule of every bearer-token check here
/// (the internal services, and the operators' RPCs of IngestService).
pub fn bearer_or_loopback<T>(req: &Request<T>, token: Option<&str>) -> bool {
    match token {
        Some(token) => req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes())),
        None => req.remote_addr().is_some_and(|a| a.ip().is_loopback()),
    }
}

impl tonic::service::Interceptor for InternalAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        if bearer_or_loopback(&req, self.token.as_deref()) {
            return Ok(req);
        }
        metrics::counter!(m::UNAUTHENTICATED).increment(1);
        Err(Status::unauthenticated(if self.token.is_some() {
            "internal RPC without the internal token (IMERG_INTERNAL_TOKEN_FILE on every role)"
        } else {
            "no internal token is configured: internal RPCs are accepted from loopback only"
        }))
    }
}

/// The client side: the header every internal call carries (None without a token).
pub(crate) fn bearer(token: Option<&str>) -> Option<MetadataValue<tonic::metadata::Ascii>> {
    let t = token.filter(|t| !t.is_empty())?;
    let mut v: MetadataValue<tonic::metadata::Ascii> = format!("Bearer {t}").parse().ok()?;
    v.set_sensitive(true);
    Some(v)
}
