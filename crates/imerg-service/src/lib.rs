//! The running service as a library: [`run`] (or [`Service::bind`] then [`Service::run`]) does
//! everything `imerg-ingest serve` does, in-process, until its shutdown future resolves.
//!
//! With the default configuration every role runs in one process on loopback (the embedded
//! default): a local repository, a local granule directory in the bucket layout watched for new
//! files, the committer, the worker, the IngestService gRPC API and the HTTP endpoints. Roles in
//! one process call each other directly; a role elsewhere is reached over gRPC.
//!
//! Shutdown is by ownership: readiness and gRPC health go false first, the drivers (SQS
//! listener, directory watcher, backfill jobs) are cancelled and get `--shutdown-grace` to finish
//! their granules, then the committer makes its final commit and the servers stop, within
//! `--shutdown-grace` again. Nothing is acknowledged before its commit.

pub mod append;
mod config;
mod grpc;
mod http;
mod reconcile;
mod status_page;
mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use imerg_catalog::ProductProfile;
use imerg_dataset::{
    Committer, CommitterHandle, Dataset, DatasetConfig, DatasetError, RepoLocation,
    SourceContainer, spawn_committer,
};
use imerg_ingest_api::{IngestApi, JobManager};
use imerg_listener::{Queue, QueueHealth, SqsQueue};
use imerg_metrics as m;
use imerg_pipeline::{Appender, Ingestor, LocalWorker, Worker};
use imerg_source::Source;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{ConfigError, NativeSettings, Role, Roles, Secret, ServiceConfig, Settings};
pub use telemetry::prometheus;

/// Why the service could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The text holds the cause (not a `#[source]`, which error reports would print twice).
    #[error("the repository {location}: {error}")]
    Repository {
        location: String,
        error: Box<DatasetError>,
    },
    #[error("the granule source: {0}")]
    Source(#[from] imerg_source::SourceError),
    #[error("Earthdata credentials: {0}")]
    Credentials(#[from] Box<imerg_credentials::CredentialsError>),
    #[error("a peer address: {0}")]
    Peer(String),
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("the gRPC server: {0}")]
    Grpc(String),
    #[error("the native store: {0}")]
    Native(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ServiceError {
    /// The repository at `location` failed with `source`.
    pub fn repository(location: &RepoLocation, source: DatasetError) -> Self {
        let location = match location {
            RepoLocation::Local(p) => p.display().to_string(),
            RepoLocation::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
        };
        Self::Repository {
            location,
            error: Box::new(source),
        }
    }
}

/// A configured service with its ports bound and its roles built, not yet running.
#[derive(Debug)]
pub struct Service {
    settings: Settings,
    profile: Arc<ProductProfile>,
    grpc: TcpListener,
    http: TcpListener,
    dataset: Option<Arc<Dataset>>,
    committer: Option<(CommitterHandle, Committer)>,
    local_worker: Option<Arc<dyn Worker>>,
    ingestor: Option<Ingestor>,
    jobs: Option<Arc<JobManager>>,
    earthdata: Option<Arc<imerg_credentials::EarthdataCredentialProvider>>,
    /// A queue given in place of the configured SQS queue (tests: [`imerg_listener::MemoryQueue`]).
    queue: Option<Arc<dyn Queue>>,
    /// The granule source, for the reconciliation sweep's listings.
    source: Arc<Source>,
    /// The native store's writer, when this process runs it.
    native: Option<imerg_native::Follower>,
    /// The local repository's one-writer lock, held while the committer runs.
    _writer_lock: Option<imerg_dataset::WriterLock>,
}

/// Runs the service described by `config` until `shutdown` resolves, then stops as described
/// in the crate documentation.
pub async fn run(
    config: ServiceConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServiceError> {
    Service::bind(config).await?.run(shutdown).await
}

impl Service {
    /// Validates the configuration, binds the gRPC and HTTP ports (port 0 picks a free one) and
    /// builds this process's roles (opening or creating the repository).
    pub async fn bind(config: ServiceConfig) -> Result<Self, ServiceError> {
        let settings = config.validate()?;
        let profile = Arc::new(settings.profile.clone());
        let roles = settings.roles;
        if settings.operator_token.is_none() && roles.api {
            tracing::warn!(
                "no operator token configured: Backfill and CancelJob are accepted from loopback only"
            );
        }
        if let Some(root) = settings.source.local_root() {
            std::fs::create_dir_all(root)?;
        }
        let earthdata = settings
            .earthdata
            .as_ref()
            .map(imerg_credentials::EarthdataCredentialProvider::new)
            .transpose()
            .map_err(Box::new)?
            .map(Arc::new);
        let source = Source::new(
            &settings.source,
            earthdata
                .clone()
                .map(|p| p as imerg_source::CredentialProvider),
        )?
        .with_max_object_bytes(settings.max_object_bytes)
        .with_memory_budget(settings.worker_memory_budget);
        let repo = &settings.repo;
        let writer_lock = if roles.committer {
            repo.lock_writer()
                .map_err(|e| ServiceError::repository(repo, e))?
        } else {
            None
        };
        let dataset = if roles.committer {
            let container = SourceContainer::from_location(&settings.source)
                .map_err(|e| ServiceError::repository(repo, e))?;
            let mut dcfg = DatasetConfig::new((*profile).clone(), container);
            dcfg.manifest_max_bytes = settings.manifest_max_bytes;
            dcfg.manifest_cache_refs = settings.manifest_cache_refs;
            let ds = Dataset::open_or_create(repo, dcfg)
                .await
                .map_err(|e| ServiceError::repository(repo, e))?;
            Some(Arc::new(ds))
        } else if roles.drives_pipeline() || settings.native.is_some() {
            // The committer (another process) creates it.
            let ds = Dataset::wait_for(repo, (*profile).clone(), Duration::from_secs(60))
                .await
                .map_err(|e| ServiceError::repository(repo, e))?;
            Some(Arc::new(ds))
        } else {
            None
        };
        metrics::gauge!(m::MANIFEST_MAX_BYTES).set(settings.manifest_max_bytes as f64);
        let committer = match (&dataset, roles.committer) {
            (Some(ds), true) => Some(spawn_committer(Arc::clone(ds), settings.committer.clone())),
            _ => None,
        };
        let listing_source = Arc::new(source.clone());
        let local_worker: Option<Arc<dyn Worker>> = roles.worker.then(|| {
            let w = LocalWorker::new(source, Arc::clone(&profile), settings.worker_concurrency);
            let w = match &settings.ranged {
                Some(r) => w.with_ranged_reads(r.clone()),
                None => w,
            };
            Arc::new(w) as Arc<dyn Worker>
        });
        let internal_token = settings.internal_token.as_ref().map(|t| t.expose());
        let ingestor = if roles.drives_pipeline() {
            // TLS toward https:// peers, verified with the configured CA.
            let client_tls = match &settings.tls_ca {
                Some(p) => Some(imerg_remote::ClientTls::new(std::fs::read(p).map_err(
                    |e| ServiceError::Peer(format!("--tls-ca-file {}: {e}", p.display())),
                )?)),
                None => None,
            };
            let worker: Arc<dyn Worker> = match (&local_worker, &settings.worker_addr) {
                (Some(w), _) => Arc::clone(w),
                (None, Some(addr)) => Arc::new(
                    imerg_remote::GrpcWorker::new(addr, internal_token, client_tls.as_ref())
                        .map_err(|e| ServiceError::Peer(format!("--worker-addr: {e}")))?,
                ),
                (None, None) => return Err(ConfigError::Invalid("no worker".into()).into()),
            };
            let appender: Arc<dyn Appender> = match (&committer, &settings.committer_addr) {
                (Some((h, _)), _) => Arc::new(h.clone()),
                (None, Some(addr)) => Arc::new(
                    imerg_remote::GrpcAppender::new(addr, internal_token, client_tls.as_ref())
                        .map_err(|e| ServiceError::Peer(format!("--committer-addr: {e}")))?
                        .with_timeout(settings.committer_timeout),
                ),
                (None, None) => return Err(ConfigError::Invalid("no committer".into()).into()),
            };
            Some(Ingestor::new(worker, appender))
        } else {
            None
        };
        let jobs = match (&dataset, &ingestor, roles.api) {
            (Some(ds), Some(ing), true) => {
                let manager = JobManager::new(
                    Arc::clone(&profile),
                    Arc::clone(ds),
                    ing.clone(),
                    settings.backfill_concurrency,
                    settings.backfill_max_granules,
                )
                .with_max_running(settings.backfill_max_jobs);
                // Jobs are kept beside the repository: a restart keeps their history and
                // resumes the ones that were running.
                let manager = match imerg_ingest_api::JobStore::beside(&settings.repo) {
                    Ok(store) => manager.with_store(store),
                    Err(e) => {
                        tracing::warn!(error = %e, "backfill jobs are kept in memory only");
                        manager
                    }
                };
                let manager = Arc::new(manager);
                match manager.resume().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(jobs = n, "backfill jobs resumed"),
                    Err(e) => tracing::warn!(error = %e, "could not load the stored backfill jobs"),
                }
                Some(manager)
            }
            _ => None,
        };
        let grpc = TcpListener::bind(settings.grpc_addr)
            .await
            .map_err(|source| ServiceError::Bind {
                what: "gRPC",
                addr: settings.grpc_addr,
                source,
            })?;
        let http = TcpListener::bind(settings.http_addr)
            .await
            .map_err(|source| ServiceError::Bind {
                what: "HTTP",
                addr: settings.http_addr,
                source,
            })?;
        let native = match (&settings.native, &dataset) {
            (Some(n), Some(ds)) => {
                let repo = imerg_native::NativeRepo::open_or_create(&n.repo)
                    .await
                    .map_err(|e| ServiceError::Native(e.to_string()))?;
                Some(imerg_native::Follower::new(
                    Arc::clone(ds),
                    repo,
                    imerg_native::FollowerConfig {
                        lag: n.lag,
                        poll: n.poll,
                        maintenance: settings.committer.maintenance.clone(),
                        layout: imerg_native::NativeLayout {
                            keep_mantissa_bits: n.keep_mantissa_bits,
                            ..Default::default()
                        },
                    },
                ))
            }
            _ => None,
        };
        Ok(Self {
            _writer_lock: writer_lock,
            settings,
            profile,
            grpc,
            http,
            dataset,
            committer,
            local_worker,
            ingestor,
            jobs,
            earthdata,
            queue: None,
            source: listing_source,
            native,
        })
    }

    /// Listens to `queue` instead of the configured SQS queue (listener role only).
    pub fn with_queue(mut self, queue: Arc<dyn Queue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// The settings the configuration validated into.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Where the gRPC server listens.
    pub fn grpc_addr(&self) -> Result<SocketAddr, ServiceError> {
        Ok(self.grpc.local_addr()?)
    }

    /// Where the HTTP endpoints listen.
    pub fn http_addr(&self) -> Result<SocketAddr, ServiceError> {
        Ok(self.http.local_addr()?)
    }

    /// Serves until `shutdown` resolves, then shuts down within twice `--shutdown-grace`.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServiceError> {
        let Self {
            settings,
            profile,
            grpc,
            http,
            dataset,
            committer,
            local_worker,
            ingestor,
            jobs,
            earthdata,
            queue,
            source,
            native,
            // Held (not dropped) until `run` returns.
            _writer_lock,
        } = self;
        let grace = settings.shutdown_grace;
        let prometheus = telemetry::prometheus()?;
        if let Some(latency) = profile.expected_latency().and_then(|d| d.to_std().ok()) {
            metrics::gauge!(m::EXPECTED_LATENCY_SECONDS).set(latency.as_secs_f64());
        }
        let earthdata_token = settings
            .earthdata
            .as_ref()
            .map(|e| e.token.clone())
            .filter(|t| !t.is_empty());
        let ready = Arc::new(AtomicBool::new(true));
        let drivers = CancellationToken::new();
        let driver_tasks = TaskTracker::new();
        let background = CancellationToken::new();

        // gRPC: the roles' services, health, reflection.
        let sweeps = settings
            .reconcile
            .as_ref()
            .map(|_| Arc::new(imerg_listener::SweepState::default()));
        let api = jobs.as_ref().map(|j| {
            let api = IngestApi::new(
                Arc::clone(j),
                settings
                    .operator_token
                    .as_ref()
                    .map(|t| t.expose().to_string()),
            );
            let api = match &sweeps {
                Some(s) => api.with_sweeps(Arc::clone(s)),
                None => api,
            };
            match &native {
                Some(f) => api.with_native(f.status()),
                None => api,
            }
        });
        let commit_server = committer
            .as_ref()
            .map(|(h, _)| imerg_remote::CommitServer(Arc::new(h.clone()) as Arc<dyn Appender>));
        let worker_server = local_worker
            .as_ref()
            .map(|w| imerg_remote::WorkerServer::new(Arc::clone(w), Arc::clone(&profile)));
        let internal_auth =
            imerg_remote::InternalAuth::new(settings.internal_token.as_ref().map(|t| t.expose()));
        let server_tls = match &settings.tls {
            Some((cert, key)) => {
                imerg_remote::install_tls_provider();
                let read = |p: &std::path::PathBuf, what: &str| {
                    std::fs::read(p)
                        .map_err(|e| ServiceError::Grpc(format!("{what} {}: {e}", p.display())))
                };
                Some(tonic::transport::ServerTlsConfig::new().identity(
                    tonic::transport::Identity::from_pem(
                        read(cert, "--tls-cert-file")?,
                        read(key, "--tls-key-file")?,
                    ),
                ))
            }
            None => None,
        };
        let (router, health) =
            grpc::router(api, commit_server, worker_server, internal_auth, server_tls).await?;
        let grpc_stop = CancellationToken::new();
        let mut grpc_task = tokio::spawn(router.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc),
            grpc_stop.clone().cancelled_owned(),
        ));

        // HTTP: /metrics, /healthz, /readyz.
        let queue = match (queue, &settings.sqs, settings.roles.listener) {
            (Some(q), _, true) => Some(q),
            (None, Some(sqs), true) => Some(Arc::new(
                SqsQueue::connect(
                    &sqs.queue_url,
                    sqs.endpoint_url.as_deref(),
                    sqs.region.as_deref(),
                    sqs.wait_seconds,
                )
                .await,
            ) as Arc<dyn Queue>),
            _ => None,
        };
        let queue_health = queue.as_ref().map(|_| Arc::new(QueueHealth::default()));
        let http_stop = CancellationToken::new();
        let liveness = Arc::new(http::Liveness::new(settings.parse_stuck_after));
        if let Some((_, c)) = &committer {
            liveness.watch("committer", c.finished());
        }
        let mut http_task = tokio::spawn(
            axum::serve(
                http,
                http::router(http::State {
                    prometheus,
                    dataset: dataset.clone(),
                    queue: queue_health.clone(),
                    ready: Arc::clone(&ready),
                    jobs: jobs.clone(),
                    liveness: Arc::clone(&liveness),
                    readiness: Arc::default(),
                }),
            )
            .with_graceful_shutdown(http_stop.clone().cancelled_owned())
            .into_future(),
        );

        // Background gauges.
        telemetry::spawn_gauges(dataset.clone(), earthdata, background.clone());

        // The drivers: local directory watcher and SQS listener.
        if let (Some(w), Some(ds), Some(ing)) = (&settings.watch, &dataset, &ingestor) {
            driver_tasks.spawn(liveness.supervise(
                "directory watcher",
                imerg_listener::watch_directory(
                    w.clone(),
                    Arc::clone(&profile),
                    Arc::clone(ds),
                    ing.clone(),
                    drivers.child_token(),
                ),
            ));
        }
        if let (Some(queue), Some(health_of_queue), Some(ing)) = (queue, &queue_health, &ingestor) {
            let listener = settings
                .sqs
                .as_ref()
                .map(imerg_listener::SqsConfig::listener)
                .unwrap_or_default();
            driver_tasks.spawn(liveness.supervise(
                "SQS listener",
                imerg_listener::run(
                    queue,
                    listener,
                    Arc::clone(&profile),
                    ing.clone(),
                    Arc::clone(health_of_queue),
                    drivers.child_token(),
                ),
            ));
        }
        if let (Some(rc), Some(state), Some(ds), Some(ing)) =
            (&settings.reconcile, &sweeps, &dataset, &ingestor)
        {
            let reconciler = imerg_listener::Reconciler {
                cfg: rc.clone(),
                profile: Arc::clone(&profile),
                dataset: Arc::clone(ds),
                source: Arc::clone(&source),
                inventory: reconcile::inventory(&settings, &profile, earthdata_token.as_deref()),
                ingestor: ing.clone(),
            };
            driver_tasks.spawn(liveness.supervise(
                "reconciliation sweep",
                reconciler.run(Arc::clone(state), drivers.child_token()),
            ));
        }
        if let Some(f) = native {
            driver_tasks.spawn(liveness.supervise("native writer", f.run(drivers.child_token())));
        }
        driver_tasks.close();
        tracing::info!(roles = ?settings.roles, repo = ?settings.repo, "serving");

        let mut failed = None;
        tokio::select! {
            () = shutdown => {}
            r = &mut grpc_task => {
                let e = match r {
                    Ok(Ok(())) => "stopped".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::error!(error = %e, "the gRPC server stopped: shutting down");
                failed = Some(ServiceError::Grpc(e));
            }
        }

        // Phase 1: stop taking work, let in-flight granules finish (up to the grace period).
        tracing::info!(
            ?grace,
            "shutting down: not ready; no new work; finishing in-flight granules"
        );
        ready.store(false, Ordering::SeqCst);
        health.not_serving().await;
        drivers.cancel();
        let drain = async {
            if let Some(j) = &jobs {
                j.drain().await;
            }
            driver_tasks.wait().await;
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(
                "shutdown grace period over: abandoning in-flight granules (not acknowledged; they will be retried)"
            );
        }
        drop(ingestor);
        drop(jobs);

        // Phase 2: the final commit and the servers (up to the grace period again).
        let deadline = tokio::time::Instant::now() + grace;
        grpc_stop.cancel();
        if let Some((handle, c)) = committer {
            drop(handle);
            if c.shutdown(grace).await {
                tracing::info!("final commit done");
            }
        }
        if tokio::time::timeout_at(deadline, &mut grpc_task)
            .await
            .is_err()
        {
            tracing::warn!("gRPC calls still open at the deadline: closed");
            grpc_task.abort();
        }
        background.cancel();
        http_stop.cancel();
        if tokio::time::timeout(Duration::from_secs(1), &mut http_task)
            .await
            .is_err()
        {
            http_task.abort();
        }
        tracing::info!("stopped");
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
