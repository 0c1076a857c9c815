//! The worker and committer roles across processes: gRPC servers that expose an in-process
//! [`Worker`] / [`Appender`] as WorkerService / CommitService, and clients that implement the
//! same traits by calling them, so the rest of the service does not care where a role runs.
//! Errors keep their meaning across the wire: the [`Reason`] travels as a
//! `google.rpc.ErrorInfo` detail (domain [`ERROR_DOMAIN`]), and the status code says what kind of
//! failure it is (NOT_FOUND = gap, INVALID_ARGUMENT / FAILED_PRECONDITION = bad input or
//! rejected, ABORTED = second writer, UNAVAILABLE = retry).

mod auth;
mod balance;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use auth::{InternalAuth, bearer_or_loopback};
pub use balance::{AddrError, RESOLVE_EVERY, balanced_channel};

use async_trait::async_trait;
use imerg_catalog::{GranuleId, ProductProfile};
use imerg_pipeline::{Appended, Appender, GranuleRefs, IngestError, Outcome, Reason, Worker};
use imerg_proto::internal::v1;
use imerg_proto::{granule_from_proto, granule_to_proto};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// The `domain` of every `google.rpc.ErrorInfo` this service sends.
pub const ERROR_DOMAIN: &str = "imerg.ingest.internal.v1";

/// The one mapping of an ingest error onto a gRPC status, its reason attached as ErrorInfo.
pub fn to_status(e: &IngestError) -> Status {
    let code = match e.reason {
        Reason::NotFound => Code::NotFound,
        Reason::NotAGranule => Code::InvalidArgument,
        Reason::SecondWriter => Code::Aborted,
        r if r.is_retryable() => Code::Unavailable,
        _ => Code::FailedPrecondition,
    };
    Status::with_error_details(
        code,
        e.message.clone(),
        ErrorDetails::with_error_info(e.reason.as_str(), ERROR_DOMAIN, HashMap::new()),
    )
}

/// The ingest error a status stands for: the ErrorInfo reason when the peer sent one, otherwise
/// what the code says (`fallback` for codes that say nothing more, e.g. a dead peer).
pub fn from_status(s: &Status, fallback: Reason) -> IngestError {
    let reason = match s.get_details_error_info() {
        Some(info) if info.domain == ERROR_DOMAIN => Reason::from_label(&info.reason),
        _ => match s.code() {
            Code::NotFound => Reason::NotFound,
            Code::InvalidArgument => Reason::NotAGranule,
            Code::Aborted => Reason::SecondWriter,
            Code::FailedPrecondition => Reason::Remote,
            // A message over the peer's size limit fails the same way every time: not a
            // reason to retry (review L10).
            Code::ResourceExhausted | Code::OutOfRange => Reason::TooLarge,
            _ => fallback,
        },
    };
    IngestError::new(reason, s.message())
}

/// WorkerService around a worker.
#[derive(Debug, Clone)]
pub struct WorkerServer {
    worker: Arc<dyn Worker>,
    profile: Arc<ProductProfile>,
}

impl WorkerServer {
    pub fn new(worker: Arc<dyn Worker>, profile: Arc<ProductProfile>) -> Self {
        Self { worker, profile }
    }

    /// The server, every call checked by `auth`.
    pub fn into_server(
        self,
        auth: InternalAuth,
    ) -> tonic::service::interceptor::InterceptedService<
        v1::worker_service_server::WorkerServiceServer<Self>,
        InternalAuth,
    > {
        tonic::service::interceptor::InterceptedService::new(
            v1::worker_service_server::WorkerServiceServer::new(self)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            auth,
        )
    }
}

#[tonic::async_trait]
impl v1::worker_service_server::WorkerService for WorkerServer {
    async fn virtualize(
        &self,
        req: Request<v1::VirtualizeRequest>,
    ) -> Result<Response<v1::VirtualizeResponse>, Status> {
        let key = req.into_inner().key_or_url;
        let id = self
            .profile
            .parse_any(&key)
            .map_err(|e| to_status(&IngestError::new(Reason::NotAGranule, e.to_string())))?;
        match self.worker.virtualize(&id).await {
            Ok(g) => Ok(Response::new(v1::VirtualizeResponse {
                granule: Some(granule_to_proto(&g)),
            })),
            Err(e) => Err(to_status(&e)),
        }
    }
}

fn outcome_to_proto(o: Outcome) -> v1::Outcome {
    match o {
        Outcome::Added => v1::Outcome::Added,
        Outcome::Replaced => v1::Outcome::Replaced,
        Outcome::Duplicate => v1::Outcome::Duplicate,
        Outcome::Stale => v1::Outcome::Stale,
        _ => v1::Outcome::Unspecified,
    }
}

fn outcome_from_proto(o: i32) -> Option<Outcome> {
    match v1::Outcome::try_from(o).ok()? {
        v1::Outcome::Added => Some(Outcome::Added),
        v1::Outcome::Replaced => Some(Outcome::Replaced),
        v1::Outcome::Duplicate => Some(Outcome::Duplicate),
        v1::Outcome::Stale => Some(Outcome::Stale),
        v1::Outcome::Unspecified => None,
    }
}

/// CommitService around an appender (the committer).
#[derive(Debug, Clone)]
pub struct CommitServer(pub Arc<dyn Appender>);

impl CommitServer {
    /// The server, every call checked by `auth`.
    pub fn into_server(
        self,
        auth: InternalAuth,
    ) -> tonic::service::interceptor::InterceptedService<
        v1::commit_service_server::CommitServiceServer<Self>,
        InternalAuth,
    > {
        tonic::service::interceptor::InterceptedService::new(
            v1::commit_service_server::CommitServiceServer::new(self)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            auth,
        )
    }
}

#[tonic::async_trait]
impl v1::commit_service_server::CommitService for CommitServer {
    async fn append(
        &self,
        req: Request<v1::AppendRequest>,
    ) -> Result<Response<v1::AppendResponse>, Status> {
        let p = req
            .into_inner()
            .granule
            .ok_or_else(|| Status::invalid_argument("granule is missing"))?;
        let g = granule_from_proto(&p).map_err(|e| Status::invalid_argument(e.to_string()))?;
        match self.0.append(g).await {
            Ok(a) => Ok(Response::new(v1::AppendResponse {
                key: a.key,
                outcome: outcome_to_proto(a.outcome) as i32,
                batch_id: a.batch_id,
                snapshot: a.snapshot,
            })),
            Err(e) => Err(to_status(&e)),
        }
    }
}

/// A role-to-role endpoint: connects within 5 s, and HTTP/2 pings every 30 s (answered within
/// 10 s, also while idle) find a peer that vanished without closing its connection (a lost node,
/// a partition) instead of waiting on it forever (review M8).
pub(crate) fn tune(e: Endpoint) -> Endpoint {
    e.connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
}

/// TLS toward the other roles: the CA certificate (PEM) that signed their certificates. Peers
/// named `https://host:port` are reached over TLS and must present a certificate for `host`
/// signed by it; `http://` peers stay plaintext (review M10).
#[derive(Clone)]
pub struct ClientTls {
    ca_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .finish()
    }
}

/// Makes ring the process's TLS provider (once; later calls do nothing). rustls panics at the
/// first handshake when more than one provider is compiled in and none is installed, and this
/// dependency tree has two (ring, for tonic; aws-lc-rs, for the AWS SDK). Call before any TLS
/// configuration is built.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl ClientTls {
    pub fn new(ca_pem: Vec<u8>) -> Self {
        install_tls_provider();
        Self { ca_pem }
    }

    /// The endpoint of `addr`: for `https://`, with TLS verifying the peer as the URL's host
    /// (which needs `tls`).
    pub fn endpoint(addr: &str, tls: Option<&ClientTls>) -> Result<Endpoint, PeerError> {
        let e = Endpoint::from_shared(addr.to_string())?;
        if !addr.starts_with("https://") {
            return Ok(e);
        }
        let tls = tls.ok_or_else(|| PeerError::NoCa(addr.to_string()))?;
        let host = e.uri().host().unwrap_or_default().to_string();
        Ok(tls.apply(e, &host)?)
    }

    /// `e` with TLS verifying the peer as `host`.
    pub fn apply(&self, e: Endpoint, host: &str) -> Result<Endpoint, tonic::transport::Error> {
        e.tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
                .domain_name(host),
        )
    }
}

/// Why a peer address cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Addr(#[from] AddrError),
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0} is https:// but no CA is configured (--tls-ca-file)")]
    NoCa(String),
}

fn channel(addr: &str, tls: Option<&ClientTls>) -> Result<Channel, PeerError> {
    Ok(tune(ClientTls::endpoint(addr, tls)?).connect_lazy())
}

/// The largest message between roles, both ways (a granule's references with their Zarr
/// metadata are about 60 kB; the limit leaves room for any layout a profile allows). The
/// servers decode and the clients encode with the same limit (review L10).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Longest an Append call may take by default (see [`GrpcAppender::with_timeout`]).
pub const APPEND_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest a virtualize call may take, waiting for a worker included.
const WORKER_CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Workers in other processes: calls spread over every address `addr` names (a comma-separated
/// list of `http://host:port`; names are re-resolved, so a headless Service follows scaling).
#[derive(Debug, Clone)]
pub struct GrpcWorker {
    client: v1::worker_service_client::WorkerServiceClient<Channel>,
    bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl GrpcWorker {
    /// Connects lazily: the workers may start after this process. Needs a Tokio runtime.
    /// `token`: the internal token the workers check (None: they accept loopback callers).
    pub fn new(
        addr: &str,
        token: Option<&str>,
        tls: Option<&ClientTls>,
    ) -> Result<Self, AddrError> {
        Ok(Self {
            client: v1::worker_service_client::WorkerServiceClient::new(balanced_channel(
                addr,
                tls.cloned(),
            )?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
            bearer: auth::bearer(token),
        })
    }
}

/// A request with the caller's trace context and, when configured, the internal token.
fn internal_request<T>(
    message: T,
    bearer: &Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
) -> Request<T> {
    let mut req = imerg_trace::request(message);
    if let Some(b) = bearer {
        req.metadata_mut().insert("authorization", b.clone());
    }
    req
}

#[async_trait]
impl Worker for GrpcWorker {
    async fn virtualize(&self, id: &GranuleId) -> Result<GranuleRefs, IngestError> {
        let mut c = self.client.clone();
        let call = c.virtualize(internal_request(
            v1::VirtualizeRequest {
                key_or_url: id.key.clone(),
            },
            &self.bearer,
        ));
        let Ok(resp) = tokio::time::timeout(WORKER_CALL_TIMEOUT, call).await else {
            return Err(IngestError::new(
                Reason::Transient,
                format!(
                    "{}: no worker answered within {WORKER_CALL_TIMEOUT:?}",
                    id.key
                ),
            ));
        };
        let p = resp
            .map_err(|s| from_status(&s, Reason::Transient))?
            .into_inner()
            .granule
            .ok_or_else(|| {
                IngestError::new(Reason::Internal, "worker answered without a granule")
            })?;
        granule_from_proto(&p).map_err(|e| IngestError::new(Reason::Internal, e.to_string()))
    }
}

/// The committer in another process.
#[derive(Debug, Clone)]
pub struct GrpcAppender {
    client: v1::commit_service_client::CommitServiceClient<Channel>,
    bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    timeout: Duration,
}

impl GrpcAppender {
    /// Connects lazily: the committer may start after this process. `token`: the internal
    /// token the committer checks.
    pub fn new(
        addr: &str,
        token: Option<&str>,
        tls: Option<&ClientTls>,
    ) -> Result<Self, PeerError> {
        Ok(Self {
            client: v1::commit_service_client::CommitServiceClient::new(channel(addr, tls)?)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            bearer: auth::bearer(token),
            timeout: APPEND_CALL_TIMEOUT,
        })
    }

    /// The deadline of each Append call: past it, the granule fails as
    /// `committer_unavailable` (retried later), and the call is dropped.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

#[async_trait]
impl Appender for GrpcAppender {
    async fn append(&self, granule: GranuleRefs) -> Result<Appended, IngestError> {
        let mut c = self.client.clone();
        let mut req = internal_request(
            v1::AppendRequest {
                granule: Some(granule_to_proto(&granule)),
            },
            &self.bearer,
        );
        // Sent as grpc-timeout too: the committer's side gives up at the same moment.
        req.set_timeout(self.timeout);
        let Ok(r) = tokio::time::timeout(self.timeout, c.append(req)).await else {
            return Err(IngestError::new(
                Reason::CommitterUnavailable,
                format!(
                    "{}: the committer did not answer within {:?}",
                    granule.key, self.timeout
                ),
            ));
        };
        let r = r
            .map_err(|s| match s.code() {
                // The deadline sent with the call expired on the way (tonic's own timer can
                // fire before ours): the same failure, said the same way.
                Code::DeadlineExceeded | Code::Cancelled => IngestError::new(
                    Reason::CommitterUnavailable,
                    format!(
                        "{}: the committer did not answer within {:?}",
                        granule.key, self.timeout
                    ),
                ),
                _ => from_status(&s, Reason::CommitterUnavailable),
            })?
            .into_inner();
        let outcome = outcome_from_proto(r.outcome).ok_or_else(|| {
            IngestError::new(
                Reason::Internal,
                format!("the committer answered an unknown outcome {}", r.outcome),
            )
        })?;
        Ok(Appended {
            key: r.key,
            outcome,
            batch_id: r.batch_id,
            snapshot: r.snapshot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_https_peer_needs_a_ca() {
        assert!(matches!(
            ClientTls::endpoint("https://localhost:1", None),
            Err(PeerError::NoCa(_))
        ));
        assert!(ClientTls::endpoint("http://localhost:1", None).is_ok());
    }

    #[test]
    fn every_reason_survives_the_wire() {
        for r in Reason::ALL {
            let e = IngestError::new(*r, format!("k: {r}"));
            let back = from_status(&to_status(&e), Reason::Transient);
            assert_eq!(back, e);
        }
    }

    #[test]
    fn a_plain_status_maps_by_code() {
        let s = Status::not_found("x");
        assert_eq!(from_status(&s, Reason::Transient).reason, Reason::NotFound);
        let s = Status::unavailable("down");
        assert_eq!(
            from_status(&s, Reason::CommitterUnavailable).reason,
            Reason::CommitterUnavailable
        );
        let s = Status::aborted("conflict");
        assert_eq!(
            from_status(&s, Reason::Transient).reason,
            Reason::SecondWriter
        );
        // Review L10: a message over the peer's limit fails the same way every time.
        let s = Status::resource_exhausted("message length too large");
        assert_eq!(
            from_status(&s, Reason::CommitterUnavailable).reason,
            Reason::TooLarge
        );
        assert!(!Reason::TooLarge.is_retryable());
    }
}
