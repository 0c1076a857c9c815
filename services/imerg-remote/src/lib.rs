//! The worker and committer roles across processes: gRPC servers that expose an in-process
//! [`Worker`] / [`Appender`] as WorkerService / CommitService, and clients that implement the
//! same traits by calling them, so the rest of the service does not care where a role runs.
//! Errors keep their meaning across the wire: NOT_FOUND = gap, FAILED_PRECONDITION = bad input /
//! rejected (message starts with the reason label), ABORTED = second writer, UNAVAILABLE = retry.

mod balance;

use std::sync::Arc;
use std::time::Duration;

pub use balance::{AddrError, RESOLVE_EVERY, balanced_channel};

use async_trait::async_trait;
use imerg_pipeline::{AppendError, Appended, Appender, GranuleRefs, WorkError, Worker};
use imerg_proto::{granule_from_proto, granule_to_proto, v1};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

/// Reason labels are a closed set (metrics labels): map a remote one back to it.
fn known_reason(s: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "not_a_granule",
        "not_hdf5",
        "truncated",
        "unreadable",
        "missing_variable",
        "layout",
        "unsupported_filter",
        "filter_mask",
        "coordinates",
        "hdf5",
        "source",
        "internal",
    ];
    KNOWN.iter().find(|k| **k == s).copied().unwrap_or("remote")
}

/// `"<reason>: <message>"`, the FAILED_PRECONDITION message format.
fn split_reason(msg: &str) -> (&str, &str) {
    msg.split_once(": ").unwrap_or(("remote", msg))
}

/// WorkerService around a worker.
#[derive(Debug, Clone)]
pub struct WorkerServer(pub Arc<dyn Worker>);

impl WorkerServer {
    pub fn into_server(self) -> v1::worker_service_server::WorkerServiceServer<Self> {
        v1::worker_service_server::WorkerServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl v1::worker_service_server::WorkerService for WorkerServer {
    async fn virtualize(
        &self,
        req: Request<v1::VirtualizeRequest>,
    ) -> Result<Response<v1::VirtualizeResponse>, Status> {
        let key = req.into_inner().key_or_url;
        match self.0.virtualize(&key).await {
            Ok(g) => Ok(Response::new(v1::VirtualizeResponse {
                granule: Some(granule_to_proto(&g)),
            })),
            Err(WorkError::NotFound { key }) => Err(Status::not_found(key)),
            Err(WorkError::BadInput {
                reason: "not_a_granule",
                message,
            }) => Err(Status::invalid_argument(message)),
            Err(WorkError::BadInput { reason, message }) => {
                Err(Status::failed_precondition(format!("{reason}: {message}")))
            }
            Err(WorkError::Transient { message }) => Err(Status::unavailable(message)),
        }
    }
}

/// CommitService around an appender (the committer).
#[derive(Debug, Clone)]
pub struct CommitServer(pub Arc<dyn Appender>);

impl CommitServer {
    pub fn into_server(self) -> v1::commit_service_server::CommitServiceServer<Self> {
        v1::commit_service_server::CommitServiceServer::new(self)
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
                outcome: a.outcome,
                batch_id: a.batch_id,
                snapshot: a.snapshot,
            })),
            Err(AppendError::Rejected { reason, message }) => {
                Err(Status::failed_precondition(format!("{reason}: {message}")))
            }
            Err(AppendError::Unavailable { reason, message }) if reason == "second_writer" => {
                Err(Status::aborted(message))
            }
            Err(AppendError::Unavailable { message, .. }) => Err(Status::unavailable(message)),
        }
    }
}

fn channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(addr.to_string())?.connect_lazy())
}

/// Longest a virtualize call may take, waiting for a worker included.
const WORKER_CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Workers in other processes: calls spread over every address `addr` names (a comma-separated
/// list of `http://host:port`; names are re-resolved, so a headless Service follows scaling).
#[derive(Debug, Clone)]
pub struct GrpcWorker {
    client: v1::worker_service_client::WorkerServiceClient<Channel>,
}

impl GrpcWorker {
    /// Connects lazily: the workers may start after this process. Needs a Tokio runtime.
    pub fn new(addr: &str) -> Result<Self, AddrError> {
        Ok(Self {
            client: v1::worker_service_client::WorkerServiceClient::new(balanced_channel(addr)?)
                .max_decoding_message_size(64 * 1024 * 1024),
        })
    }
}

#[async_trait]
impl Worker for GrpcWorker {
    async fn virtualize(&self, key: &str) -> Result<GranuleRefs, WorkError> {
        let mut c = self.client.clone();
        let call = c.virtualize(v1::VirtualizeRequest {
            key_or_url: key.to_string(),
        });
        let Ok(resp) = tokio::time::timeout(WORKER_CALL_TIMEOUT, call).await else {
            return Err(WorkError::Transient {
                message: format!("no worker answered within {WORKER_CALL_TIMEOUT:?}"),
            });
        };
        match resp {
            Ok(r) => {
                let p = r.into_inner().granule.ok_or_else(|| WorkError::Transient {
                    message: "worker answered without a granule".into(),
                })?;
                granule_from_proto(&p).map_err(|e| WorkError::BadInput {
                    reason: "internal",
                    message: e.to_string(),
                })
            }
            Err(s) => Err(match s.code() {
                Code::NotFound => WorkError::NotFound { key: key.into() },
                Code::InvalidArgument => WorkError::BadInput {
                    reason: "not_a_granule",
                    message: s.message().into(),
                },
                Code::FailedPrecondition => {
                    let (reason, _) = split_reason(s.message());
                    WorkError::BadInput {
                        reason: known_reason(reason),
                        message: s.message().into(),
                    }
                }
                _ => WorkError::Transient {
                    message: format!("worker: {}", s.message()),
                },
            }),
        }
    }
}

/// The committer in another process.
#[derive(Debug, Clone)]
pub struct GrpcAppender {
    client: v1::commit_service_client::CommitServiceClient<Channel>,
}

impl GrpcAppender {
    /// Connects lazily: the committer may start after this process.
    pub fn new(addr: &str) -> Result<Self, tonic::transport::Error> {
        Ok(Self {
            client: v1::commit_service_client::CommitServiceClient::new(channel(addr)?)
                .max_encoding_message_size(64 * 1024 * 1024),
        })
    }
}

#[async_trait]
impl Appender for GrpcAppender {
    async fn append(&self, granule: GranuleRefs) -> Result<Appended, AppendError> {
        let mut c = self.client.clone();
        match c
            .append(v1::AppendRequest {
                granule: Some(granule_to_proto(&granule)),
            })
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                Ok(Appended {
                    key: r.key,
                    outcome: r.outcome,
                    batch_id: r.batch_id,
                    snapshot: r.snapshot,
                })
            }
            Err(s) => {
                let message = s.message().to_string();
                Err(match s.code() {
                    Code::FailedPrecondition | Code::InvalidArgument => AppendError::Rejected {
                        reason: split_reason(&message).0.to_string(),
                        message,
                    },
                    Code::Aborted => AppendError::Unavailable {
                        reason: "second_writer".into(),
                        message,
                    },
                    _ => AppendError::Unavailable {
                        reason: "committer_unavailable".into(),
                        message,
                    },
                })
            }
        }
    }
}
