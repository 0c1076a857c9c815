//! `imerg-ingest serve`: the long-running service. With no configuration every role runs in one
//! process on loopback (embedded default): a local repository, a local granule directory in the
//! bucket layout watched for new files, the committer, the worker, the IngestService gRPC API and
//! the HTTP endpoints `/metrics`, `/healthz` and `/readyz`. In one process the roles call each
//! other directly (no gRPC between them). SIGTERM / Ctrl-C stops taking work, lets in-flight
//! granules finish and commits what the committer holds; nothing is acknowledged before its commit.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use imerg_catalog::ProductProfile;
use imerg_dataset::{
    CommitterConfig, Dataset, DatasetConfig, MaintenanceConfig, RepoLocation, SourceContainer,
    spawn_committer,
};
use imerg_ingest_api::{IngestApi, JobManager};
use imerg_metrics as m;
use imerg_pipeline::{Appender, LocalWorker, Worker};
use imerg_source::{Source, SourceConfig};
use tokio::sync::{Semaphore, watch};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Roles to run in this process: `all`, or a comma-separated list of listener, worker,
    /// committer, api. Roles in the same process call each other directly; a role that runs
    /// elsewhere is reached over gRPC (--worker-addr, --committer-addr).
    #[arg(long, env = "IMERG_ROLES", default_value = "all")]
    roles: String,
    /// WorkerService address(es), when this process does not run the worker role: a
    /// comma-separated list of http://host:port. Names are re-resolved every 15 s and calls
    /// spread over every address (a Kubernetes headless Service reaches every worker pod).
    #[arg(long, env = "IMERG_WORKER_ADDR")]
    worker_addr: Option<String>,
    /// CommitService address, when this process does not run the committer role.
    #[arg(long, env = "IMERG_COMMITTER_ADDR")]
    committer_addr: Option<String>,
    /// Base directory of the embedded default: repository in DATA_DIR/repo, granules in
    /// DATA_DIR/granules.
    #[arg(long, env = "IMERG_DATA_DIR", default_value = "imerg-data")]
    data_dir: PathBuf,
    /// Repository location: a directory or s3://bucket/prefix (default DATA_DIR/repo).
    #[arg(long, env = "IMERG_REPO")]
    repo: Option<String>,
    /// S3-compatible endpoint of the repository bucket.
    #[arg(long, env = "IMERG_REPO_ENDPOINT")]
    repo_endpoint: Option<String>,
    #[arg(long, env = "IMERG_REPO_REGION")]
    repo_region: Option<String>,
    /// Granule source: a directory or s3://bucket[/prefix] in the bucket layout
    /// (default DATA_DIR/granules).
    #[arg(long, env = "IMERG_SOURCE")]
    source: Option<String>,
    /// S3-compatible endpoint of the source bucket.
    #[arg(long, env = "IMERG_SOURCE_ENDPOINT")]
    source_endpoint: Option<String>,
    #[arg(long, env = "IMERG_SOURCE_REGION")]
    source_region: Option<String>,
    /// Earthdata Login bearer token, for temporary S3 credentials to NASA's bucket (a secret;
    /// prefer the _FILE form).
    #[arg(long, env = "IMERG_EARTHDATA_TOKEN", hide_env_values = true)]
    earthdata_token: Option<String>,
    /// File holding the Earthdata Login bearer token.
    #[arg(long, env = "IMERG_EARTHDATA_TOKEN_FILE")]
    earthdata_token_file: Option<PathBuf>,
    /// The s3credentials endpoint that exchanges the token for temporary S3 credentials.
    #[arg(long, env = "IMERG_EARTHDATA_URL", default_value = imerg_credentials::DEFAULT_URL)]
    earthdata_url: String,
    /// Read the source bucket without signing requests.
    #[arg(long, env = "IMERG_SOURCE_ANONYMOUS")]
    source_anonymous: bool,
    /// gRPC listen address (IngestService, health, reflection).
    #[arg(long, env = "IMERG_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    grpc_addr: SocketAddr,
    /// HTTP listen address for /metrics, /healthz and /readyz.
    #[arg(long, env = "IMERG_HTTP_ADDR", default_value = "127.0.0.1:9464")]
    http_addr: SocketAddr,
    /// SQS queue of new-granule notifications (S3 events, SNS, EventBridge, CMR) for the
    /// listener role.
    #[arg(long, env = "IMERG_SQS_QUEUE_URL")]
    sqs_queue_url: Option<String>,
    /// SQS-compatible endpoint (a local server).
    #[arg(long, env = "IMERG_SQS_ENDPOINT")]
    sqs_endpoint: Option<String>,
    #[arg(long, env = "IMERG_SQS_REGION")]
    sqs_region: Option<String>,
    /// Long-poll wait, seconds (at most 20).
    #[arg(long, env = "IMERG_SQS_WAIT_SECONDS", default_value_t = 20)]
    sqs_wait_seconds: i32,
    /// Visibility timeout set on receive and extended while a message is in flight, seconds.
    #[arg(long, env = "IMERG_SQS_VISIBILITY_TIMEOUT", default_value_t = 120)]
    sqs_visibility_timeout: i32,
    /// Watch a local source directory for new granule files.
    #[arg(long, env = "IMERG_WATCH", default_value_t = true, action = clap::ArgAction::Set)]
    watch: bool,
    #[arg(long, env = "IMERG_WATCH_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    watch_interval: Duration,
    /// Write a day of synthetic granules into the source directory first.
    #[arg(long)]
    demo: bool,
    /// Granules per commit.
    #[arg(long, env = "IMERG_BATCH_SIZE", default_value_t = 240)]
    batch_size: usize,
    /// Commit a partial batch once its oldest granule waited this long.
    #[arg(long, env = "IMERG_BATCH_AGE", default_value = "2s", value_parser = humantime::parse_duration)]
    batch_age: Duration,
    /// Commit a partial batch once no granule arrived for this long (a burst has ended).
    #[arg(long, env = "IMERG_BATCH_IDLE", default_value = "250ms", value_parser = humantime::parse_duration)]
    batch_idle: Duration,
    /// Granules fetched and parsed at once (each holds its bytes in memory until parsed).
    #[arg(long, env = "IMERG_WORKER_CONCURRENCY", default_value_t = 4)]
    worker_concurrency: usize,
    /// Granules in flight per backfill job (fetching, parsing or waiting for their commit).
    #[arg(long, env = "IMERG_BACKFILL_CONCURRENCY", default_value_t = 512)]
    backfill_concurrency: usize,
    /// Largest backfill request, in granules.
    #[arg(long, env = "IMERG_BACKFILL_MAX_GRANULES", default_value_t = 600_000)]
    backfill_max_granules: u64,
    /// Operator bearer token for Backfill and CancelJob (a secret; prefer the _FILE form). With
    /// no token those RPCs are accepted from loopback only.
    #[arg(long, env = "IMERG_OPERATOR_TOKEN", hide_env_values = true)]
    operator_token: Option<String>,
    /// File holding the operator bearer token.
    #[arg(long, env = "IMERG_OPERATOR_TOKEN_FILE")]
    operator_token_file: Option<PathBuf>,
    /// Largest manifest before it rolls over along time (used when creating the repository).
    #[arg(long, env = "IMERG_MANIFEST_MAX_BYTES", default_value_t = imerg_dataset::DEFAULT_MANIFEST_MAX_BYTES)]
    manifest_max_bytes: u64,
    /// Cap of Icechunk's manifest cache, in references.
    #[arg(long, env = "IMERG_MANIFEST_CACHE_REFS", default_value_t = imerg_dataset::DEFAULT_MANIFEST_CACHE_REFS)]
    manifest_cache_refs: u64,
    /// Expire snapshots older than this and garbage-collect (e.g. 7d). Off unless given.
    #[arg(long, env = "IMERG_SNAPSHOT_RETENTION", value_parser = humantime::parse_duration)]
    snapshot_retention: Option<Duration>,
    /// How often expiry and garbage collection run.
    #[arg(long, env = "IMERG_MAINTENANCE_EVERY", default_value = "1h", value_parser = humantime::parse_duration)]
    maintenance_every: Duration,
    /// How long shutdown waits for in-flight granules before abandoning them (uncommitted work is
    /// simply not acknowledged and is picked up again after restart).
    #[arg(long, env = "IMERG_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
}

fn source_config(args: &Args) -> SourceConfig {
    let s = args
        .source
        .clone()
        .unwrap_or_else(|| args.data_dir.join("granules").to_string_lossy().to_string());
    match s.strip_prefix("s3://") {
        Some(rest) => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            SourceConfig::S3 {
                bucket: bucket.into(),
                prefix: prefix.into(),
                region: args.source_region.clone(),
                endpoint_url: args.source_endpoint.clone(),
                anonymous: args.source_anonymous,
            }
        }
        None => SourceConfig::Local {
            root: PathBuf::from(s.strip_prefix("file://").unwrap_or(&s)),
        },
    }
}

fn container_of(cfg: &SourceConfig, source: &Source) -> SourceContainer {
    match cfg {
        SourceConfig::Local { root } => SourceContainer::local(root).unwrap_or(SourceContainer {
            url_prefix: source.url_prefix().to_string(),
            kind: imerg_dataset::SourceKind::LocalFileSystem,
        }),
        SourceConfig::S3 {
            region,
            endpoint_url,
            anonymous,
            ..
        } => SourceContainer::s3(
            source.url_prefix(),
            region.clone(),
            endpoint_url.clone(),
            *anonymous,
        ),
    }
}

/// Which roles this process runs.
#[derive(Debug, Clone, Copy, Default)]
struct Roles {
    listener: bool,
    worker: bool,
    committer: bool,
    api: bool,
}

impl Roles {
    fn parse(s: &str) -> anyhow::Result<Self> {
        let mut r = Self::default();
        for part in s.split(',').map(str::trim) {
            match part {
                "all" => {
                    r = Self {
                        listener: true,
                        worker: true,
                        committer: true,
                        api: true,
                    }
                }
                "listener" => r.listener = true,
                "worker" => r.worker = true,
                "committer" => r.committer = true,
                "api" => r.api = true,
                other => anyhow::bail!(
                    "unknown role {other:?}: use all or a list of listener, worker, committer, api"
                ),
            }
        }
        Ok(r)
    }

    /// Roles that hand granules to a worker and the committer.
    fn drives_pipeline(self) -> bool {
        self.api || self.listener
    }
}

/// Opens a repository another process (the committer) creates, waiting for it.
async fn open_existing(
    location: &RepoLocation,
    profile: &ProductProfile,
) -> anyhow::Result<Dataset> {
    let mut last = None;
    for _ in 0..120 {
        match Dataset::open(location, profile.clone()).await {
            Ok(d) => return Ok(d),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(anyhow::anyhow!(
        "the repository {location:?} did not appear within 60 s: {last:?}"
    ))
}

pub fn run(profile: ProductProfile, args: Args) -> anyhow::Result<ExitCode> {
    super::block_on(serve(profile, args))?
}

async fn serve(profile: ProductProfile, args: Args) -> anyhow::Result<ExitCode> {
    let seconds = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];
    let counts = [1.0, 2.0, 5.0, 10.0, 24.0, 48.0, 96.0, 240.0, 480.0, 960.0];
    let lag = [
        0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    ];
    let full = metrics_exporter_prometheus::Matcher::Full;
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(full(m::FETCH_SECONDS.into()), &seconds)?
        .set_buckets_for_metric(full(m::PARSE_SECONDS.into()), &seconds)?
        .set_buckets_for_metric(full(m::COMMIT_SECONDS.into()), &seconds)?
        .set_buckets_for_metric(full(m::BATCH_GRANULES.into()), &counts)?
        .set_buckets_for_metric(full(m::SQS_MESSAGE_LAG_SECONDS.into()), &lag)?
        .install_recorder()
        .context("installing the metrics recorder")?;
    m::describe_all();
    let profile = Arc::new(profile);
    let token = match (&args.operator_token, &args.operator_token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading the operator token file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => {
            tracing::warn!(
                "no operator token configured: Backfill and CancelJob are accepted from loopback only"
            );
            None
        }
    };

    let src_cfg = source_config(&args);
    if let (true, SourceConfig::Local { root }) = (args.demo, &src_cfg) {
        demo_granules(&profile, root)?;
    }
    if let SourceConfig::Local { root } = &src_cfg {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    }
    let roles = Roles::parse(&args.roles)?;
    let earthdata = match (&args.earthdata_token, &args.earthdata_token_file) {
        (Some(t), _) => Some(imerg_credentials::EarthdataConfig::from_token_value(
            t,
            "IMERG_EARTHDATA_TOKEN",
        )?),
        (None, Some(f)) => Some(imerg_credentials::EarthdataConfig::from_token_file(f)?),
        (None, None) => None,
    }
    .map(|c| c.with_url(args.earthdata_url.clone()))
    .map(|c| imerg_credentials::EarthdataCredentialProvider::new(&c))
    .transpose()?
    .map(Arc::new);
    let source = Source::new(
        &src_cfg,
        earthdata
            .clone()
            .map(|p| p as imerg_source::CredentialProvider),
    )?;
    if let Some(p) = earthdata.clone() {
        tokio::spawn(async move {
            loop {
                if let Some(s) = p.seconds_until_expiry() {
                    metrics::gauge!(m::CREDENTIALS_EXPIRY_SECONDS).set(s);
                }
                tokio::time::sleep(Duration::from_secs(15)).await;
            }
        });
    }
    let repo_location = RepoLocation::parse(
        &args
            .repo
            .clone()
            .unwrap_or_else(|| args.data_dir.join("repo").to_string_lossy().to_string()),
        args.repo_region.clone(),
        args.repo_endpoint.clone(),
    );
    let dataset: Option<Arc<Dataset>> = if roles.committer {
        let mut dcfg = DatasetConfig::new((*profile).clone(), container_of(&src_cfg, &source));
        dcfg.manifest_max_bytes = args.manifest_max_bytes;
        dcfg.manifest_cache_refs = args.manifest_cache_refs;
        Some(Arc::new(
            Dataset::open_or_create(&repo_location, dcfg)
                .await
                .with_context(|| format!("opening the repository {repo_location:?}"))?,
        ))
    } else if roles.drives_pipeline() {
        Some(Arc::new(open_existing(&repo_location, &profile).await?))
    } else {
        None
    };
    metrics::gauge!(m::MANIFEST_MAX_BYTES).set(args.manifest_max_bytes as f64);
    let mut committer_task = None;
    let local_appender: Option<Arc<dyn Appender>> = match (&dataset, roles.committer) {
        (Some(ds), true) => {
            let (handle, task) = spawn_committer(
                Arc::clone(ds),
                CommitterConfig {
                    max_batch: args.batch_size.max(1),
                    max_age: args.batch_age,
                    max_idle: args.batch_idle,
                    channel_capacity: args.batch_size.max(1) * 2,
                    maintenance: args.snapshot_retention.map(|retention| MaintenanceConfig {
                        retention,
                        every: args.maintenance_every,
                    }),
                    ..Default::default()
                },
            );
            committer_task = Some(task);
            Some(Arc::new(handle))
        }
        _ => None,
    };
    let local_worker: Option<Arc<dyn Worker>> = roles.worker.then(|| {
        Arc::new(LocalWorker::new(
            source,
            Arc::clone(&profile),
            args.worker_concurrency,
        )) as Arc<dyn Worker>
    });
    let appender: Option<Arc<dyn Appender>> = match (&local_appender, &args.committer_addr) {
        (Some(a), _) => Some(Arc::clone(a)),
        (None, Some(addr)) if roles.drives_pipeline() => {
            Some(Arc::new(imerg_remote::GrpcAppender::new(addr)?) as Arc<dyn Appender>)
        }
        (None, None) if roles.drives_pipeline() => {
            anyhow::bail!(
                "--roles {} needs --committer-addr (no committer role here)",
                args.roles
            )
        }
        _ => None,
    };
    let worker: Option<Arc<dyn Worker>> = match (&local_worker, &args.worker_addr) {
        (Some(w), _) => Some(Arc::clone(w)),
        (None, Some(addr)) if roles.drives_pipeline() => {
            Some(Arc::new(imerg_remote::GrpcWorker::new(addr)?) as Arc<dyn Worker>)
        }
        (None, None) if roles.drives_pipeline() => {
            anyhow::bail!(
                "--roles {} needs --worker-addr (no worker role here)",
                args.roles
            )
        }
        _ => None,
    };
    let jobs = match (&dataset, &worker, &appender, roles.api) {
        (Some(ds), Some(w), Some(a), true) => Some(Arc::new(JobManager::new(
            Arc::clone(&profile),
            Arc::clone(ds),
            Arc::clone(w),
            Arc::clone(a),
            args.backfill_concurrency,
            args.backfill_max_granules,
        ))),
        _ => None,
    };

    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    // gRPC: the roles' services + health + reflection.
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(imerg_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_optional_service(
            jobs.as_ref()
                .map(|j| IngestApi::new(Arc::clone(j), token.clone()).into_server()),
        )
        .add_optional_service(
            local_appender
                .as_ref()
                .map(|a| imerg_remote::CommitServer(Arc::clone(a)).into_server()),
        )
        .add_optional_service(
            local_worker
                .as_ref()
                .map(|w| imerg_remote::WorkerServer(Arc::clone(w)).into_server()),
        );
    if jobs.is_some() {
        health_reporter
            .set_serving::<imerg_proto::v1::ingest_service_server::IngestServiceServer<IngestApi>>()
            .await;
    }
    if local_appender.is_some() {
        health_reporter
            .set_serving::<imerg_proto::v1::commit_service_server::CommitServiceServer<imerg_remote::CommitServer>>()
            .await;
    }
    if local_worker.is_some() {
        health_reporter
            .set_serving::<imerg_proto::v1::worker_service_server::WorkerServiceServer<imerg_remote::WorkerServer>>()
            .await;
    }
    let grpc_listener = tokio::net::TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("binding gRPC on {}", args.grpc_addr))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let mut grpc_shutdown = shutdown_rx.clone();
    let grpc = tokio::spawn(router.serve_with_incoming_shutdown(
        tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
        async move {
            let _ = grpc_shutdown.wait_for(|s| *s).await;
        },
    ));

    // HTTP: /metrics, /healthz, /readyz.
    let http_listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding HTTP on {}", args.http_addr))?;
    let http_addr = http_listener.local_addr()?;
    let queue_health = (args.sqs_queue_url.is_some() && roles.listener)
        .then(|| Arc::new(imerg_listener::QueueHealth::default()));
    let http = tokio::spawn(crate::http::serve(
        http_listener,
        crate::http::State {
            prometheus,
            dataset: dataset.clone(),
            queue: queue_health.clone(),
        },
        shutdown_rx.clone(),
    ));
    println!(
        "imerg-ingest serving {}: gRPC on {grpc_addr}, metrics on http://{http_addr}/metrics",
        profile.id
    );
    tracing::info!(%grpc_addr, %http_addr, repo = ?repo_location, "serving");

    // Status gauges, refreshed periodically.
    let gauges = dataset
        .as_ref()
        .map(|ds| tokio::spawn(refresh_gauges(Arc::clone(ds), shutdown_rx.clone())));

    // The local directory watcher (embedded default).
    let watcher = match (
        &src_cfg,
        args.watch && roles.listener,
        &dataset,
        &worker,
        &appender,
    ) {
        (SourceConfig::Local { root }, true, Some(ds), Some(w), Some(a)) => {
            Some(tokio::spawn(watch_directory(
                root.clone(),
                Arc::clone(&profile),
                Arc::clone(ds),
                Arc::clone(w),
                Arc::clone(a),
                args.watch_interval,
                args.backfill_concurrency,
                shutdown_rx.clone(),
            )))
        }
        _ => None,
    };

    // The SQS listener.
    let sqs = match (&args.sqs_queue_url, &queue_health, &worker, &appender) {
        (Some(url), Some(health), Some(w), Some(a)) => {
            let mut c = imerg_listener::SqsConfig::new(url.clone());
            c.endpoint_url = args.sqs_endpoint.clone();
            c.region = args.sqs_region.clone();
            c.wait_seconds = args.sqs_wait_seconds.clamp(0, 20);
            c.visibility_timeout = args.sqs_visibility_timeout.max(1);
            c.extend_every =
                Duration::from_secs(u64::try_from(c.visibility_timeout / 2).unwrap_or(1).max(1));
            Some(tokio::spawn(imerg_listener::run(
                c,
                Arc::clone(&profile),
                Arc::clone(w),
                Arc::clone(a),
                Arc::clone(health),
                shutdown_rx.clone(),
            )))
        }
        _ => None,
    };

    shutdown_signal().await;
    tracing::info!("shutting down: no new work; finishing in-flight granules");
    let _ = shutdown_tx.send(true);
    if let Some(j) = &jobs {
        j.cancel_all();
    }
    let grace = tokio::time::sleep(args.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            _ = &mut grace => {
                tracing::warn!("shutdown grace period over: abandoning in-flight granules (not acknowledged; they will be retried)");
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if !jobs.as_ref().is_some_and(|j| j.any_running())
                    && watcher.as_ref().is_none_or(|w| w.is_finished())
                    && sqs.as_ref().is_none_or(|l| l.is_finished())
                {
                    break;
                }
            }
        }
    }
    drop(jobs);
    drop(appender);
    drop(local_appender);
    drop(worker);
    drop(local_worker);
    if let Some(w) = watcher {
        w.abort();
    }
    if let Some(l) = sqs {
        l.abort();
    }
    // The gRPC server holds a CommitServer (an appender): stop it before waiting for the
    // committer to drain.
    let _ = grpc.await;
    if let Some(task) = committer_task {
        let _ = tokio::time::timeout(args.shutdown_grace, task.join).await;
    }
    let _ = http.await;
    if let Some(g) = gauges {
        g.abort();
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Writes the last day of the product's record (or yesterday for open-ended products) into
/// `root`, skipping files already there.
fn demo_granules(profile: &ProductProfile, root: &Path) -> anyhow::Result<()> {
    let end = profile
        .record_end
        .unwrap_or_else(|| chrono::Utc::now() - chrono::Duration::days(1));
    let start = end - chrono::Duration::days(1);
    let range = imerg_catalog::TimeRange::new(start, end)?;
    let mut written = 0;
    for g in profile.expected(range) {
        let path = root.join(&g.key);
        if !path.exists() {
            imerg_synth::write_granule(
                &path,
                profile,
                g.start,
                &imerg_synth::SynthOptions::default(),
            )?;
            written += 1;
        }
    }
    println!(
        "demo: {written} synthetic granules written under {}",
        root.display()
    );
    Ok(())
}

async fn refresh_gauges(dataset: Arc<Dataset>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Ok(st) = dataset.status().await {
            metrics::gauge!(m::MANIFESTS).set(st.manifests as f64);
            metrics::gauge!(m::LARGEST_MANIFEST_BYTES).set(st.largest_manifest_bytes as f64);
            metrics::gauge!(m::GRANULES_PRESENT).set(st.granules_present as f64);
            if let Some(t) = st.last_granule {
                let lag = (chrono::Utc::now() - t).num_milliseconds() as f64 / 1000.0;
                metrics::gauge!(m::INGEST_LAG_SECONDS).set(lag);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(15)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

fn granule_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            granule_files(&p, out);
        } else if p.extension().is_none_or(|x| x != "partial") {
            out.push(p);
        }
    }
}

/// Scans `root` for granule files the store does not hold and ingests them. What is present is
/// read from the store in bulk each scan; files that failed are retried only once they change.
#[allow(clippy::too_many_arguments)]
async fn watch_directory(
    root: PathBuf,
    profile: Arc<ProductProfile>,
    dataset: Arc<Dataset>,
    worker: Arc<dyn Worker>,
    appender: Arc<dyn Appender>,
    interval: Duration,
    max_in_flight: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let in_flight: Arc<std::sync::Mutex<BTreeSet<String>>> = Arc::default();
    let failed: Arc<std::sync::Mutex<HashMap<String, SystemTime>>> = Arc::default();
    let collection = root.join(&profile.collection_path);
    loop {
        if *shutdown.borrow() {
            break;
        }
        let mut files = Vec::new();
        granule_files(&collection, &mut files);
        let mut candidates = Vec::new();
        for p in files {
            let Ok(rel) = p.strip_prefix(&root) else {
                continue;
            };
            let key = rel.to_string_lossy().to_string();
            match profile.parse_key(&key) {
                Ok(id) => candidates.push((id, p)),
                Err(e) => {
                    let mtime = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
                    let mut f = failed.lock().unwrap_or_else(|x| x.into_inner());
                    if mtime.is_some() && f.get(&key) != mtime.as_ref() {
                        metrics::counter!(m::GRANULES_REJECTED, "reason" => "not_a_granule")
                            .increment(1);
                        tracing::warn!(%key, error = %e, "ignoring a file that is not a granule of the product");
                        if let Some(t) = mtime {
                            f.insert(key, t);
                        }
                    }
                }
            }
        }
        if let (Some(lo), Some(hi)) = (
            candidates.iter().map(|(g, _)| g.time_index).min(),
            candidates.iter().map(|(g, _)| g.time_index).max(),
        ) {
            let present = dataset.present_in(lo, hi + 1).await.unwrap_or_default();
            for (id, path) in candidates {
                if present.contains(&id.time_index) {
                    continue;
                }
                let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                {
                    let f = failed.lock().unwrap_or_else(|x| x.into_inner());
                    if mtime.is_some() && f.get(&id.key) == mtime.as_ref() {
                        continue;
                    }
                }
                if !in_flight
                    .lock()
                    .unwrap_or_else(|x| x.into_inner())
                    .insert(id.key.clone())
                {
                    continue;
                }
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    break;
                };
                let (worker, appender) = (Arc::clone(&worker), Arc::clone(&appender));
                let (in_flight, failed) = (Arc::clone(&in_flight), Arc::clone(&failed));
                tokio::spawn(async move {
                    let _permit = permit;
                    metrics::counter!(m::GRANULES_RECEIVED, "source" => "watcher").increment(1);
                    metrics::gauge!(m::IN_FLIGHT).increment(1.0);
                    let r = match worker.virtualize(&id.key).await {
                        Ok(g) => appender
                            .append(g)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    metrics::gauge!(m::IN_FLIGHT).decrement(1.0);
                    if let (Err(e), Some(t)) = (&r, mtime) {
                        tracing::warn!(key = %id.key, error = %e, "granule not ingested; retried when the file changes");
                        failed
                            .lock()
                            .unwrap_or_else(|x| x.into_inner())
                            .insert(id.key.clone(), t);
                    }
                    in_flight
                        .lock()
                        .unwrap_or_else(|x| x.into_inner())
                        .remove(&id.key);
                });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    // Let the granules already handed to the pipeline finish.
    let _ = permits
        .acquire_many(u32::try_from(max_in_flight.max(1)).unwrap_or(u32::MAX))
        .await;
}
