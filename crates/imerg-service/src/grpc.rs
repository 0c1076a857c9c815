//! The gRPC server of a process: the services of the roles it runs (IngestService, CommitService,
//! WorkerService), `grpc.health.v1` (each served service, and "" for the whole server) and
//! reflection (v1 and v1alpha).

use std::time::Duration;

use imerg_ingest_api::IngestApi;
use imerg_proto::{internal, v1};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::ServiceError;

/// The health of the services a process serves, turned off as shutdown starts.
pub(crate) struct Health {
    reporter: HealthReporter,
    served: Vec<&'static str>,
}

impl Health {
    /// Every served service, and the server as a whole, NOT_SERVING.
    pub(crate) async fn not_serving(&self) {
        for name in &self.served {
            self.reporter
                .set_service_status(*name, ServingStatus::NotServing)
                .await;
        }
        self.reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }
}

/// The server's routes, every RPC through [`imerg_trace::RpcLayer`].
pub(crate) type GrpcRouter = tonic::transport::server::Router<
    tower::layer::util::Stack<imerg_trace::RpcLayer, tower::layer::util::Identity>,
>;

/// The routes of the services given, with health and reflection.
pub(crate) async fn router(
    api: Option<IngestApi>,
    commit: Option<imerg_remote::CommitServer>,
    worker: Option<imerg_remote::WorkerServer>,
    internal_auth: imerg_remote::InternalAuth,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<(GrpcRouter, Health), ServiceError> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    // Reflection v1 for grpcurl, and v1alpha for the tools that only ask for it (grpcui,
    // Postman, evans).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(imerg_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| ServiceError::Grpc(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServiceError::Grpc(e.to_string()))?;
    let mut served = Vec::new();
    if api.is_some() {
        reporter
            .set_serving::<v1::ingest_service_server::IngestServiceServer<IngestApi>>()
            .await;
        served.push("imerg.ingest.v1.IngestService");
    }
    if commit.is_some() {
        reporter
            .set_serving::<internal::v1::commit_service_server::CommitServiceServer<imerg_remote::CommitServer>>()
            .await;
        served.push("imerg.ingest.internal.v1.CommitService");
    }
    if worker.is_some() {
        reporter
            .set_serving::<internal::v1::worker_service_server::WorkerServiceServer<imerg_remote::WorkerServer>>()
            .await;
        served.push("imerg.ingest.internal.v1.WorkerService");
    }
    // Bounded per connection, and HTTP/2 pings find clients that vanished without closing
    // (review L9). No whole-call timeout: WatchJob streams for as long as a job runs.
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        // Review M10: tokens then travel encrypted.
        server = server
            .tls_config(tls)
            .map_err(|e| ServiceError::Grpc(format!("TLS: {e}")))?;
    }
    let router = server
        .concurrency_limit_per_connection(256)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .layer(imerg_trace::RpcLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_optional_service(api.map(IngestApi::into_server))
        .add_optional_service(commit.map(|c| c.into_server(internal_auth.clone())))
        .add_optional_service(worker.map(|w| w.into_server(internal_auth)));
    Ok((router, Health { reporter, served }))
}
