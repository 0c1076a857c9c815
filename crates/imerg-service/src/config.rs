//! The service's one configuration type: every option is a command-line flag, an `IMERG_*`
//! environment variable and a key of an optional TOML file (precedence: flag, then variable,
//! then file, then the default stated once, on the field). [`ServiceConfig::validate`] checks it
//! once, across fields, and derives the typed [`Settings`] the service runs on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use imerg_catalog::{Location, ProductProfile, SourceLocation};
use imerg_dataset::{CommitterConfig, MaintenanceConfig, RepoLocation};
use imerg_listener::{DirectoryConfig, SqsConfig};
use serde::{Deserialize, Serialize};

/// A secret (a bearer token): shown nowhere, not in `Debug`, logs or errors.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

/// A role a process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every role below.
    All,
    /// Granule notifications (SQS) and the local directory watcher.
    Listener,
    /// Fetch + parse (WorkerService).
    Worker,
    /// The single writer (CommitService).
    Committer,
    /// IngestService: backfill jobs and status.
    Api,
    /// The native time-series store's writer (needs --native-repo; `all` runs it when
    /// --native-repo is given).
    Native,
}

/// A role name, as `--roles` and `IMERG_ROLES` take it (spaces around it and case ignored).
fn parse_role(s: &str) -> Result<Role, String> {
    <Role as clap::ValueEnum>::from_str(s.trim(), true).map_err(|_| {
        format!("unknown role {s:?}: use all or a list of listener, worker, committer, api, native")
    })
}

/// Which roles this process runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles {
    pub listener: bool,
    pub worker: bool,
    pub committer: bool,
    pub api: bool,
    /// The native store writer, where --native-repo says which store.
    pub native: bool,
}

impl Roles {
    pub fn of(list: &[Role]) -> Self {
        let mut r = Self::default();
        for role in list {
            match role {
                Role::All => {
                    r = Self {
                        listener: true,
                        worker: true,
                        committer: true,
                        api: true,
                        native: true,
                    }
                }
                Role::Listener => r.listener = true,
                Role::Worker => r.worker = true,
                Role::Committer => r.committer = true,
                Role::Api => r.api = true,
                Role::Native => r.native = true,
            }
        }
        r
    }

    /// Roles that hand granules to a worker and the committer.
    pub fn drives_pipeline(self) -> bool {
        self.api || self.listener
    }

    /// Roles that read the repository.
    pub fn uses_repository(self) -> bool {
        self.committer || self.drives_pipeline()
    }
}

/// Durations as people write them (`30s`, `250ms`, `7d`) in the TOML file.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

/// Everything `imerg-ingest serve` can be told. Field names are the TOML keys; `--help` lists
/// each flag with its variable.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Roles to run in this process: `all`, or a comma-separated list of listener, worker,
    /// committer, api. Roles in the same process call each other directly; a role that runs
    /// elsewhere is reached over gRPC (--worker-addr, --committer-addr).
    #[arg(
        long,
        env = "IMERG_ROLES",
        value_parser = parse_role,
        value_delimiter = ',',
        default_value = "all"
    )]
    pub roles: Vec<Role>,
    /// WorkerService address(es), when this process does not run the worker role: a
    /// comma-separated list of http://host:port. Names are re-resolved every 15 s and calls
    /// spread over every address (a Kubernetes headless Service reaches every worker pod).
    #[arg(long, env = "IMERG_WORKER_ADDR")]
    pub worker_addr: Option<String>,
    /// CommitService address, when this process does not run the committer role.
    #[arg(long, env = "IMERG_COMMITTER_ADDR")]
    pub committer_addr: Option<String>,
    /// Longest an Append call to a committer in another process may take (its batch age and
    /// commit retries included): past it the granule fails as `committer_unavailable` and is
    /// retried, instead of waiting forever on a committer that no longer answers.
    #[arg(long, env = "IMERG_COMMITTER_TIMEOUT", default_value = "2m", value_parser = humantime::parse_duration)]
    #[serde(with = "duration_text")]
    pub committer_timeout: Duration,
    /// `/healthz` fails when one libhdf5 parse has run for longer than this (libhdf5 cannot be
    /// interrupted; a crafted file can loop it and stall every parse): the orchestrator then
    /// restarts the process.
    #[arg(long, env = "IMERG_PARSE_STUCK_AFTER", default_value = "5m", value_parser = humantime::parse_duration)]
    #[serde(with = "duration_text")]
    pub parse_stuck_after: Duration,
    /// Base directory of the embedded default: repository in DATA_DIR/repo, granules in
    /// DATA_DIR/granules.
    #[arg(long, env = "IMERG_DATA_DIR", default_value = "imerg-data")]
    pub data_dir: PathBuf,
    /// Repository location: a directory or s3://bucket/prefix (default DATA_DIR/repo).
    #[arg(long, env = "IMERG_REPO")]
    pub repo: Option<String>,
    /// S3-compatible endpoint of the repository bucket.
    #[arg(long, env = "IMERG_REPO_ENDPOINT")]
    pub repo_endpoint: Option<String>,
    /// Region of the repository bucket.
    #[arg(long, env = "IMERG_REPO_REGION")]
    pub repo_region: Option<String>,
    /// The native time-series store (a directory or s3://bucket/prefix, on the repository's
    /// endpoint and region), rechunked from the virtual store and kept within --native-lag of
    /// it by this process (the `native` role; `--roles all` runs it when this is given).
    #[arg(long, env = "IMERG_NATIVE_REPO")]
    pub native_repo: Option<String>,
    /// How long a virtual commit may wait before the native store gets it: each update applies
    /// everything committed meanwhile, so a longer lag writes fewer, larger updates
    /// (docs/native-store.md has the measured cost per lag).
    #[arg(long, env = "IMERG_NATIVE_LAG", default_value = "24h", value_parser = humantime::parse_duration)]
    #[serde(with = "duration_text")]
    pub native_lag: Duration,
    /// Lossy native store: keep this many of float32's 23 mantissa bits (as `rechunk
    /// --keep-mantissa-bits`; the same value for both). Default: lossless.
    #[arg(long, env = "IMERG_NATIVE_KEEP_MANTISSA_BITS", value_parser = clap::value_parser!(u8).range(1..=23))]
    pub native_keep_mantissa_bits: Option<u8>,
    /// How often the native writer looks at the virtual store's branch.
    #[arg(long, env = "IMERG_NATIVE_POLL", default_value = "30s", value_parser = humantime::parse_duration)]
    #[serde(with = "duration_text")]
    pub native_poll: Duration,
    /// Granule source: a directory or s3://bucket[/prefix] in the bucket layout
    /// (default DATA_DIR/granules).
    #[arg(long, env = "IMERG_SOURCE")]
    pub source: Option<String>,
    /// S3-compatible endpoint of the source bucket.
    #[arg(long, env = "IMERG_SOURCE_ENDPOINT")]
    pub source_endpoint: Option<String>,
    /// Region of the source bucket.
    #[arg(long, env = "IMERG_SOURCE_REGION")]
    pub source_region: Option<String>,
    /// Read the source bucket without signing requests.
    #[arg(long, env = "IMERG_SOURCE_ANONYMOUS")]
    pub source_anonymous: bool,
    /// Earthdata Login bearer token, for temporary S3 credentials to NASA's bucket (a secret;
    /// prefer the _FILE form). The ecosystem's EARTHDATA_TOKEN is read when this is not given.
    #[arg(long, env = "IMERG_EARTHDATA_TOKEN", hide_env_values = true)]
    pub earthdata_token: Option<Secret>,
    /// File holding the Earthdata Login bearer token, read again before every credentials
    /// fetch: a rotated secret is used without a restart.
    #[arg(long, env = "IMERG_EARTHDATA_TOKEN_FILE")]
    pub earthdata_token_file: Option<PathBuf>,
    /// Earthdata Login username: with --earthdata-password, tokens are minted (and renewed when
    /// refused) instead of given.
    #[arg(long, env = "EARTHDATA_USERNAME")]
    pub earthdata_username: Option<String>,
    /// Earthdata Login password (a secret).
    #[arg(long, env = "EARTHDATA_PASSWORD", hide_env_values = true)]
    pub earthdata_password: Option<Secret>,
    /// A .netrc file whose `machine urs.earthdata.nasa.gov` entry gives the Earthdata Login
    /// username and password (as earthaccess and GDAL read it).
    #[arg(long, env = "NETRC")]
    pub earthdata_netrc: Option<PathBuf>,
    /// Earthdata Login, where a username and password mint tokens.
    #[arg(long, env = "IMERG_EARTHDATA_LOGIN_URL", default_value = imerg_credentials::DEFAULT_LOGIN_URL)]
    pub earthdata_login_url: String,
    /// The s3credentials endpoint that exchanges the token for temporary S3 credentials.
    #[arg(long, env = "IMERG_EARTHDATA_URL", default_value = imerg_credentials::DEFAULT_URL)]
    pub earthdata_url: String,
    /// gRPC listen address (IngestService, health, reflection).
    #[arg(long, env = "IMERG_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// HTTP listen address for /metrics, /healthz and /readyz.
    #[arg(long, env = "IMERG_HTTP_ADDR", default_value = "127.0.0.1:9464")]
    pub http_addr: SocketAddr,
    /// SQS queue of new-granule notifications (S3 events, SNS, EventBridge, CMR) for the
    /// listener role.
    #[arg(long, env = "IMERG_SQS_QUEUE_URL")]
    pub sqs_queue_url: Option<String>,
    /// SQS-compatible endpoint (a local server).
    #[arg(long, env = "IMERG_SQS_ENDPOINT")]
    pub sqs_endpoint: Option<String>,
    /// Region of the SQS queue.
    #[arg(long, env = "IMERG_SQS_REGION")]
    pub sqs_region: Option<String>,
    /// Long-poll wait, seconds (0 to 20).
    #[arg(long, env = "IMERG_SQS_WAIT_SECONDS", default_value_t = 20)]
    pub sqs_wait_seconds: i32,
    /// Visibility timeout set on receive and extended (every half of it, up to 30 minutes)
    /// while a message is in flight, seconds.
    #[arg(long, env = "IMERG_SQS_VISIBILITY_TIMEOUT", default_value_t = 120)]
    pub sqs_visibility_timeout: i32,
    /// Watch a local source directory for new granule files (listener role).
    #[arg(long, env = "IMERG_WATCH", default_value_t = true, action = clap::ArgAction::Set)]
    pub watch: bool,
    /// Time between two scans of the watched directory.
    #[arg(long, env = "IMERG_WATCH_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(with = "duration_text")]
    pub watch_interval: Duration,
    /// Granules per commit.
    #[arg(long, env = "IMERG_BATCH_SIZE", default_value_t = 240)]
    pub batch_size: usize,
    /// Commit a partial batch once its oldest granule waited this long.
    #[arg(long, env = "IMERG_BATCH_AGE", default_value = "2s", value_parser = humantime::parse_duration)]
    #[serde(with = "duration_text")]
    pub batch_age: Duration,
    /// Commit a partial batch once no granule arrived for this long (a burst has ended).
    #[arg(long, env = "IMERG_BATCH_IDLE", default_value = "250ms", value_parser = humantime::parse_duration)]
    #[serde(with = "duration_text")]
    pub batch_idle: Duration,
    /// Granules fetched and parsed at once (each holds its bytes in memory until parsed).
    #[arg(long, env = "IMERG_WORKER_CONCURRENCY", default_value_t = 4)]
    pub worker_concurrency: usize,
    /// Granules in flight per backfill job (fetching, parsing or waiting for their commit); at
    /// least --batch-size for batches to fill.
    #[arg(long, env = "IMERG_BACKFILL_CONCURRENCY", default_value_t = 512)]
    pub backfill_concurrency: usize,
    /// Largest backfill request, in granules.
    #[arg(long, env = "IMERG_BACKFILL_MAX_GRANULES", default_value_t = 600_000)]
    pub backfill_max_granules: u64,
    /// Backfill jobs that may run at once: one more is refused (RESOURCE_EXHAUSTED,
    /// TOO_MANY_JOBS) until one has finished. Jobs resumed after a restart always run.
    #[arg(long, env = "IMERG_BACKFILL_MAX_JOBS", default_value_t = 4)]
    pub backfill_max_jobs: usize,
    /// Operator bearer token for Backfill and CancelJob (a secret; prefer the _FILE form). With
    /// no token those RPCs are accepted from loopback only.
    #[arg(long, env = "IMERG_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<Secret>,
    /// File holding the operator bearer token.
    #[arg(long, env = "IMERG_OPERATOR_TOKEN_FILE")]
    pub operator_token_file: Option<PathBuf>,
    /// Internal token that the roles send each other and check on CommitService and
    /// WorkerService (a secret; prefer the _FILE form). The same value on every role of a
    /// deployment. Without it, internal RPCs are accepted from loopback only.
    #[arg(long, env = "IMERG_INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<Secret>,
    /// File holding the internal token.
    #[arg(long, env = "IMERG_INTERNAL_TOKEN_FILE")]
    pub internal_token_file: Option<PathBuf>,
    /// TLS on the gRPC port: this certificate chain (PEM), with --tls-key-file. Operators' and
    /// the other roles' clients then connect with `https://` and verify it.
    #[arg(long, env = "IMERG_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert-file.
    #[arg(long, env = "IMERG_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// The CA certificate (PEM) that signed the other roles' certificates: peers given as
    /// `https://host:port` (--worker-addr, --committer-addr) are reached over TLS and verified
    /// as `host` with it.
    #[arg(long, env = "IMERG_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// Serve gRPC beyond loopback without the tokens its services need (operator token for the
    /// api role, internal token for committer and worker). Without this flag such a
    /// configuration is refused: behind a sidecar proxy or `kubectl port-forward` every caller
    /// looks like loopback, which is all an unset token checks.
    #[arg(long, env = "IMERG_INSECURE_NO_AUTH")]
    #[serde(default)]
    pub insecure_no_auth: bool,
    /// Largest manifest before it rolls over along time (used when creating the repository).
    #[arg(long, env = "IMERG_MANIFEST_MAX_BYTES", default_value_t = imerg_dataset::DEFAULT_MANIFEST_MAX_BYTES)]
    pub manifest_max_bytes: u64,
    /// Cap of Icechunk's manifest cache, in references.
    #[arg(long, env = "IMERG_MANIFEST_CACHE_REFS", default_value_t = imerg_dataset::DEFAULT_MANIFEST_CACHE_REFS)]
    pub manifest_cache_refs: u64,
    /// Virtualize from ranged reads of the HDF5 metadata (superblock, object headers, chunk
    /// indexes: a few GETs, a few percent of the object) instead of fetching whole granules; a
    /// granule the ranged reader declines (metadata too scattered, a format feature it does not
    /// read) is fetched whole (imerg_ranged_fallbacks_total). Off unless given.
    #[arg(long, env = "IMERG_RANGED_READS")]
    pub ranged_reads: bool,
    /// With --ranged-reads, one granule in this many is also virtualized from the whole object
    /// and compared (imerg_ranged_oracle_checks_total{result="mismatch"} must stay 0; on a
    /// mismatch the whole object's references are used). 0 = never.
    #[arg(long, env = "IMERG_RANGED_VERIFY_ONE_IN", default_value_t = 100)]
    pub ranged_verify_one_in: u64,
    /// Largest source object read, in bytes: a bigger one (no IMERG granule is over ~20 MB) is
    /// rejected as `too_large` before its body is read.
    #[arg(long, env = "IMERG_MAX_OBJECT_BYTES", default_value_t = imerg_source::DEFAULT_MAX_OBJECT_BYTES)]
    pub max_object_bytes: u64,
    /// Bytes of whole granule objects the worker holds at once, counted twice (the bytes and
    /// libhdf5's copy): a fetch waits for its share before reading the body. Bounds the worker's
    /// memory whatever --worker-concurrency and --max-object-bytes are.
    #[arg(long, env = "IMERG_WORKER_MEMORY_BUDGET", default_value_t = 1024 * 1024 * 1024)]
    pub worker_memory_budget: u64,
    /// With --ranged-reads, a granule whose metadata needs more dependent round trips than this
    /// is fetched whole instead (imerg_ranged_fallbacks_total{reason="too_scattered"}).
    #[arg(long, env = "IMERG_RANGED_MAX_ROUND_TRIPS", default_value_t = imerg_virtualize::RangedOptions::default().max_round_trips)]
    pub ranged_max_round_trips: u32,
    /// With --ranged-reads, a granule whose metadata needs more than this fraction of the
    /// object's bytes is fetched whole instead (the reads stop as soon as they pass it).
    #[arg(long, env = "IMERG_RANGED_MAX_FRACTION", default_value_t = imerg_virtualize::RangedOptions::default().max_fetched_fraction)]
    pub ranged_max_fraction: f64,
    /// Run a reconciliation sweep this often (in the process with the api role): granules that
    /// exist at the source (or in CMR, with --cmr-url) over the trailing --reconcile-window but
    /// not in the store are ingested through the normal path; what is still missing is published
    /// (GetStatus, imerg_reconcile_*). Off unless given.
    #[arg(long, env = "IMERG_RECONCILE_EVERY", value_parser = humantime::parse_duration)]
    #[serde(with = "duration_text::option")]
    pub reconcile_every: Option<Duration>,
    /// The trailing window each sweep checks (ending now, or at the end of a closed record).
    #[arg(long, env = "IMERG_RECONCILE_WINDOW", default_value = "7d", value_parser = humantime::parse_duration)]
    #[serde(with = "duration_text")]
    pub reconcile_window: Duration,
    /// CMR's search endpoint (https://cmr.earthdata.nasa.gov), asked by each sweep for the
    /// product's granules in its window (collection short name and version from the profile).
    #[arg(long, env = "IMERG_CMR_URL")]
    pub cmr_url: Option<String>,
    /// Chunks read back through the store after each commit (fetched from their source objects
    /// and decoded), spread over the commit's new references: a source object replaced behind
    /// the store's back, or bytes that do not decode, show as imerg_validation_failures_total
    /// and a log line with the granule's key. 0 = off.
    #[arg(long, env = "IMERG_VALIDATE_SAMPLE", default_value_t = 4)]
    pub validate_sample: usize,
    /// Expire snapshots superseded longer ago than this and garbage-collect (at least 1h): the
    /// repository's metadata stays bounded, and readers keep what they opened within it.
    #[arg(long, env = "IMERG_SNAPSHOT_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    #[serde(with = "duration_text::option")]
    pub snapshot_retention: Option<Duration>,
    /// How often expiry and garbage collection run.
    #[arg(long, env = "IMERG_MAINTENANCE_EVERY", default_value = "1h", value_parser = humantime::parse_duration)]
    #[serde(with = "duration_text")]
    pub maintenance_every: Duration,
    /// How long shutdown waits for in-flight granules before abandoning them, and again for the
    /// final commit: a process stops within twice this (uncommitted work is not acknowledged and
    /// is picked up again after restart).
    #[arg(long, env = "IMERG_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    #[serde(with = "duration_text")]
    pub shutdown_grace: Duration,
    /// The product (from the global --product / --product-profile options).
    #[arg(skip = ProductProfile::final_v07b())]
    #[serde(skip, default = "ProductProfile::final_v07b")]
    pub profile: ProductProfile,
}

/// The configuration is wrong; the message says which option and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
}

fn invalid(s: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(s.into())
}

/// What the service runs on: the configuration checked and turned into each part's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub profile: ProductProfile,
    pub roles: Roles,
    pub source: SourceLocation,
    /// Largest source object read (bytes).
    pub max_object_bytes: u64,
    pub worker_memory_budget: u64,
    pub repo: RepoLocation,
    pub worker_addr: Option<String>,
    pub committer_addr: Option<String>,
    pub committer_timeout: Duration,
    pub parse_stuck_after: Duration,
    /// TLS on the gRPC port: certificate chain and private key files (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The CA (PEM file) for `https://` peers.
    pub tls_ca: Option<PathBuf>,
    /// The SQS queue, when this process listens to one.
    pub sqs: Option<SqsConfig>,
    /// The local directory watcher, when this process runs it.
    pub watch: Option<DirectoryConfig>,
    pub committer: CommitterConfig,
    pub manifest_max_bytes: u64,
    pub manifest_cache_refs: u64,
    pub worker_concurrency: usize,
    pub backfill_concurrency: usize,
    pub backfill_max_granules: u64,
    pub backfill_max_jobs: usize,
    pub operator_token: Option<Secret>,
    /// The token internal RPCs carry and check (None: loopback callers only).
    pub internal_token: Option<Secret>,
    pub earthdata: Option<imerg_credentials::EarthdataConfig>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub shutdown_grace: Duration,
    /// Ranged reads of the metadata (worker role), when asked for.
    pub ranged: Option<imerg_pipeline::Ranged>,
    /// The reconciliation sweep, when this process runs it (api role, --reconcile-every).
    pub reconcile: Option<imerg_listener::ReconcileConfig>,
    pub cmr_url: Option<String>,
    /// The native store writer, when this process runs it.
    pub native: Option<NativeSettings>,
}

/// Where the native store is and how closely it follows.
#[derive(Debug, Clone)]
pub struct NativeSettings {
    pub repo: RepoLocation,
    pub lag: Duration,
    pub poll: Duration,
    /// Lossy mode (None: lossless).
    pub keep_mantissa_bits: Option<u8>,
}

/// The shortest `--snapshot-retention` accepted.
const MIN_SNAPSHOT_RETENTION: Duration = Duration::from_secs(3600);

/// A token given as a value or as a file (not both), trimmed; None when absent or empty.
fn token_from(
    value: Option<&Secret>,
    file: Option<&Path>,
    what: &str,
) -> Result<Option<Secret>, ConfigError> {
    let token = match (value, file) {
        (Some(_), Some(_)) => {
            return Err(invalid(format!(
                "give the {what} token once: --{what}-token or --{what}-token-file"
            )));
        }
        (Some(t), None) => Some(Secret::new(t.expose().trim())),
        (None, Some(f)) => {
            let t = read_secret(f, &format!("{what} token"))?;
            if t.expose().is_empty() {
                // An empty file is a broken mount, not "no token" (review M10).
                return Err(invalid(format!(
                    "the {what} token file {} is empty",
                    f.display()
                )));
            }
            Some(t)
        }
        (None, None) => None,
    };
    Ok(token.filter(|t| !t.expose().is_empty()))
}

fn read_secret(path: &Path, what: &str) -> Result<Secret, ConfigError> {
    let s = std::fs::read_to_string(path).map_err(|e| {
        invalid(format!(
            "reading the {what} file {}: {}",
            path.display(),
            e.kind()
        ))
    })?;
    Ok(Secret::new(s.trim()))
}

impl ServiceConfig {
    /// The Earthdata credentials configuration, from exactly one of: a token
    /// (`--earthdata-token`, or the ecosystem's `EARTHDATA_TOKEN`), a token file, a username and
    /// password, or a .netrc entry for Earthdata Login. None when none is given.
    fn earthdata(&self) -> Result<Option<imerg_credentials::EarthdataConfig>, ConfigError> {
        self.earthdata_with_env(|name| std::env::var(name).ok())
    }

    /// [`Self::earthdata`] with the environment given (tests).
    fn earthdata_with_env(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<imerg_credentials::EarthdataConfig>, ConfigError> {
        use imerg_credentials::EarthdataConfig;
        let env_token = env("EARTHDATA_TOKEN").filter(|t| !t.trim().is_empty());
        let login = match (&self.earthdata_username, &self.earthdata_password) {
            (Some(u), Some(p)) => Some((u.clone(), p.expose().to_string())),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "--earthdata-username and --earthdata-password go together",
                ));
            }
        };
        let given = [
            self.earthdata_token.is_some(),
            self.earthdata_token_file.is_some(),
            login.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(invalid(
                "give Earthdata credentials once: a token, a token file, or a username and password",
            ));
        }
        let config = if let Some(t) = &self.earthdata_token {
            Some(EarthdataConfig::from_token_value(
                t.expose(),
                "IMERG_EARTHDATA_TOKEN",
            ))
        } else if let Some(f) = &self.earthdata_token_file {
            Some(EarthdataConfig::from_token_file(f))
        } else if let Some((u, p)) = login {
            Some(EarthdataConfig::from_login(&u, &p))
        } else if let Some(t) = env_token {
            Some(EarthdataConfig::from_token_value(&t, "EARTHDATA_TOKEN"))
        } else if let Some(netrc) = &self.earthdata_netrc {
            imerg_credentials::netrc_login(netrc, imerg_credentials::NETRC_MACHINE)
                .map_err(|e| invalid(e.to_string()))?
                .map(|(u, p)| EarthdataConfig::from_login(&u, &p))
        } else {
            None
        };
        config
            .transpose()
            .map_err(|e| invalid(e.to_string()))
            .map(|c| {
                c.map(|c| {
                    c.with_url(self.earthdata_url.clone())
                        .with_login_url(self.earthdata_login_url.clone())
                })
            })
    }

    /// Overlays a TOML file onto this configuration: a key of the file sets its option unless
    /// that option came from the command line or the environment (`matches` tells which).
    /// Unknown keys are errors.
    pub fn with_file(self, path: &Path, matches: &clap::ArgMatches) -> Result<Self, ConfigError> {
        let file_err = |message: String| ConfigError::File {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.kind().to_string()))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| file_err(e.to_string()))?;
        let profile = self.profile.clone();
        let mut merged = serde_json::to_value(&self).map_err(|e| file_err(e.to_string()))?;
        let Some(obj) = merged.as_object_mut() else {
            return Err(file_err("internal: configuration is not an object".into()));
        };
        for (key, value) in table {
            let id = key.replace('-', "_");
            let given = matches!(
                matches
                    .try_get_raw(&id)
                    .ok()
                    .flatten()
                    .and_then(|_| matches.value_source(&id)),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if !given {
                let v = serde_json::to_value(&value).map_err(|e| file_err(e.to_string()))?;
                obj.insert(id, v);
            }
        }
        let mut cfg: Self = serde_json::from_value(merged).map_err(|e| file_err(e.to_string()))?;
        cfg.profile = profile;
        Ok(cfg)
    }

    /// Checks the configuration once, across fields, and derives the settings.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let roles = Roles::of(&self.roles);
        if roles == Roles::default() {
            return Err(invalid("--roles names no role"));
        }
        if self.worker_memory_budget < 1024 * 1024 {
            return Err(invalid("--worker-memory-budget must be at least 1 MiB"));
        }
        if self.max_object_bytes == 0 {
            return Err(invalid("--max-object-bytes must be above 0"));
        }
        if self.roles.contains(&Role::Native) && self.native_repo.is_none() {
            return Err(invalid("the native role needs --native-repo"));
        }
        if self.native_poll.is_zero() {
            return Err(invalid("--native-poll must be above 0"));
        }
        if self.ranged_max_fraction.is_nan()
            || self.ranged_max_fraction <= 0.0
            || self.ranged_max_round_trips == 0
        {
            return Err(invalid(
                "--ranged-max-fraction must be above 0 and --ranged-max-round-trips at least 1",
            ));
        }
        let source_text = match &self.source {
            Some(s) => s.clone(),
            None => self.data_dir.join("granules").to_string_lossy().to_string(),
        };
        let source = SourceLocation::parse(
            &source_text,
            self.source_region.clone(),
            self.source_endpoint.clone(),
            self.source_anonymous,
        )
        .map_err(|e| invalid(format!("--source: {e}")))?;
        let repo_text = match &self.repo {
            Some(s) => s.clone(),
            None => self.data_dir.join("repo").to_string_lossy().to_string(),
        };
        match Location::parse(&repo_text).map_err(|e| invalid(format!("--repo: {e}")))? {
            Location::S3 { prefix, .. } if prefix.is_empty() => {
                return Err(invalid(
                    "--repo: an S3 repository needs a prefix: s3://bucket/prefix",
                ));
            }
            _ => {}
        }
        let repo = RepoLocation::parse(
            &repo_text,
            self.repo_region.clone(),
            self.repo_endpoint.clone(),
        );
        if roles.drives_pipeline() && !roles.worker && self.worker_addr.is_none() {
            return Err(invalid(
                "these roles hand granules to a worker: add the worker role or --worker-addr",
            ));
        }
        if roles.drives_pipeline() && !roles.committer && self.committer_addr.is_none() {
            return Err(invalid(
                "these roles hand granules to the committer: add the committer role or --committer-addr",
            ));
        }
        if !(0..=20).contains(&self.sqs_wait_seconds) {
            return Err(invalid(format!(
                "--sqs-wait-seconds {} is outside 0..=20 (SQS's long-poll limit)",
                self.sqs_wait_seconds
            )));
        }
        let visibility = u64::try_from(self.sqs_visibility_timeout)
            .ok()
            .filter(|v| (1..=43_200).contains(v))
            .ok_or_else(|| {
                invalid(format!(
                    "--sqs-visibility-timeout {} is outside 1..=43200 seconds (SQS's limit)",
                    self.sqs_visibility_timeout
                ))
            })?;
        for (name, v) in [
            ("--batch-size", self.batch_size),
            ("--worker-concurrency", self.worker_concurrency),
            ("--backfill-concurrency", self.backfill_concurrency),
        ] {
            if v == 0 {
                return Err(invalid(format!("{name} must be at least 1")));
            }
        }
        if self.backfill_max_jobs == 0 {
            return Err(invalid("--backfill-max-jobs must be at least 1"));
        }
        if self.committer_timeout.is_zero() || self.parse_stuck_after.is_zero() {
            return Err(invalid(
                "--committer-timeout and --parse-stuck-after must be above 0",
            ));
        }
        if self.shutdown_grace.is_zero() {
            return Err(invalid("--shutdown-grace must be more than 0"));
        }
        if self.reconcile_every.is_some_and(|d| d.is_zero()) || self.reconcile_window.is_zero() {
            return Err(invalid(
                "--reconcile-every and --reconcile-window must be more than 0",
            ));
        }
        if self.watch_interval.is_zero() {
            return Err(invalid("--watch-interval must be more than 0"));
        }
        if roles.api && self.backfill_concurrency < self.batch_size {
            tracing::warn!(
                backfill_concurrency = self.backfill_concurrency,
                batch_size = self.batch_size,
                "--backfill-concurrency is below --batch-size: a backfill's batches cannot fill"
            );
        }
        let operator_token = token_from(
            self.operator_token.as_ref(),
            self.operator_token_file.as_deref(),
            "operator",
        )?;
        let internal_token = token_from(
            self.internal_token.as_ref(),
            self.internal_token_file.as_deref(),
            "internal",
        )?;
        // Review M10: without a token, "loopback" is the only check, and a bind beyond
        // loopback is exactly where callers may only look like loopback.
        if !self.grpc_addr.ip().is_loopback() && !self.insecure_no_auth {
            let missing = [
                (roles.api && operator_token.is_none(), "operator"),
                (
                    (roles.committer || roles.worker) && internal_token.is_none(),
                    "internal",
                ),
            ];
            if let Some((_, what)) = missing.iter().find(|(m, _)| *m) {
                return Err(invalid(format!(
                    "--grpc-addr {} is reachable beyond loopback but no {what} token is set: give --{what}-token-file, bind 127.0.0.1, or pass --insecure-no-auth",
                    self.grpc_addr
                )));
            }
        }
        let earthdata = self.earthdata()?;
        let sqs = match (&self.sqs_queue_url, roles.listener) {
            (Some(url), true) => Some(SqsConfig {
                queue_url: url.clone(),
                endpoint_url: self.sqs_endpoint.clone(),
                region: self.sqs_region.clone(),
                wait_seconds: self.sqs_wait_seconds,
                visibility_timeout: Duration::from_secs(visibility),
            }),
            _ => None,
        };
        let watch = match (&source, self.watch && roles.listener) {
            (SourceLocation::Local { root }, true) => Some(DirectoryConfig {
                root: root.clone(),
                interval: self.watch_interval,
                max_in_flight: self.backfill_concurrency,
            }),
            _ => None,
        };
        // Expiry must not take what a reader opened a moment ago (review L7).
        if let Some(r) = self.snapshot_retention
            && r < MIN_SNAPSHOT_RETENTION
        {
            return Err(invalid(format!(
                "--snapshot-retention {} is too short: at least 1h, so that expiry never removes \
                 snapshots a reader opened moments ago (7d is the deployment's value)",
                humantime::format_duration(r)
            )));
        }
        let committer = CommitterConfig {
            max_batch: self.batch_size,
            max_age: self.batch_age,
            max_idle: self.batch_idle,
            channel_capacity: self.batch_size.saturating_mul(2),
            maintenance: self.snapshot_retention.map(|retention| MaintenanceConfig {
                retention,
                every: self.maintenance_every,
            }),
            validate_sample: self.validate_sample,
            ..CommitterConfig::default()
        };
        Ok(Settings {
            profile: self.profile.clone(),
            roles,
            source,
            max_object_bytes: self.max_object_bytes,
            worker_memory_budget: self.worker_memory_budget,
            repo,
            worker_addr: self.worker_addr.clone(),
            committer_addr: self.committer_addr.clone(),
            committer_timeout: self.committer_timeout,
            parse_stuck_after: self.parse_stuck_after,
            tls: self.tls_cert_file.clone().zip(self.tls_key_file.clone()),
            tls_ca: self.tls_ca_file.clone(),
            sqs,
            watch,
            committer,
            manifest_max_bytes: self.manifest_max_bytes,
            manifest_cache_refs: self.manifest_cache_refs,
            worker_concurrency: self.worker_concurrency,
            backfill_concurrency: self.backfill_concurrency,
            backfill_max_granules: self.backfill_max_granules,
            backfill_max_jobs: self.backfill_max_jobs,
            operator_token,
            internal_token,
            earthdata,
            grpc_addr: self.grpc_addr,
            http_addr: self.http_addr,
            shutdown_grace: self.shutdown_grace,
            reconcile: match (self.reconcile_every, roles.api) {
                (Some(every), true) => Some(imerg_listener::ReconcileConfig {
                    every,
                    window: self.reconcile_window,
                    max_in_flight: self.backfill_concurrency,
                    list_limit: 1000,
                }),
                _ => None,
            },
            cmr_url: self.cmr_url.clone(),
            native: match (&self.native_repo, roles.native) {
                (Some(r), true) => Some(NativeSettings {
                    repo: RepoLocation::parse(
                        r,
                        self.repo_region.clone(),
                        self.repo_endpoint.clone(),
                    ),
                    lag: self.native_lag,
                    poll: self.native_poll,
                    keep_mantissa_bits: self.native_keep_mantissa_bits,
                }),
                _ => None,
            },
            ranged: self.ranged_reads.then(|| imerg_pipeline::Ranged {
                options: {
                    let mut o = imerg_virtualize::RangedOptions {
                        max_round_trips: self.ranged_max_round_trips,
                        max_fetched_fraction: self.ranged_max_fraction,
                        ..Default::default()
                    };
                    // One producer's granules share a layout: start each read with the blocks
                    // the previous granule needed.
                    o.read.hints = Some(std::sync::Arc::new(imerg_hdf5::LayoutHints::new()));
                    o
                },
                verify_one_in: self.ranged_verify_one_in,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, FromArgMatches as _, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        cfg: ServiceConfig,
    }

    fn parse(args: &[&str]) -> (ServiceConfig, clap::ArgMatches) {
        let m = Cli::command()
            .try_get_matches_from(std::iter::once("x").chain(args.iter().copied()))
            .unwrap();
        (Cli::from_arg_matches(&m).unwrap().cfg, m)
    }

    #[test]
    fn defaults_validate_to_the_embedded_default() {
        let (cfg, _) = parse(&[]);
        let s = cfg.validate().unwrap();
        assert_eq!(s.roles, Roles::of(&[Role::All]));
        assert!(matches!(s.source, SourceLocation::Local { .. }));
        assert!(s.watch.is_some());
        assert!(s.sqs.is_none());
        assert_eq!(s.committer.max_batch, 240);
        assert_eq!(s.committer.channel_capacity, 480);
    }

    #[test]
    fn roles_take_a_list() {
        let (cfg, _) = parse(&[
            "--roles",
            "listener,worker",
            "--committer-addr",
            "http://c:1",
        ]);
        let s = cfg.validate().unwrap();
        assert!(s.roles.listener && s.roles.worker && !s.roles.committer && !s.roles.api);
        let (cfg, _) = parse(&["--roles", "committer, API, Worker"]);
        let s = cfg.validate().unwrap();
        assert!(s.roles.committer && s.roles.api && !s.roles.listener);
        let (cfg, _) = parse(&["--roles", "api"]);
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("--worker-addr"), "{e}");
        assert!(parse_err(&["--roles", "listner"]).contains("listner"));
    }

    fn parse_err(args: &[&str]) -> String {
        Cli::command()
            .try_get_matches_from(std::iter::once("x").chain(args.iter().copied()))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn cross_field_checks() {
        for (args, needle) in [
            (&["--sqs-wait-seconds", "21"][..], "0..=20"),
            (&["--sqs-visibility-timeout", "0"], "1..=43200"),
            (&["--batch-size", "0"], "--batch-size"),
            (&["--repo", "s3://bucket"], "prefix"),
            (&["--repo", "s3:///x"], "bucket"),
            (&["--shutdown-grace", "0s"], "shutdown-grace"),
            (&["--snapshot-retention", "0s"], "at least 1h"),
            (&["--snapshot-retention", "59m"], "at least 1h"),
            (
                &["--operator-token", "a", "--operator-token-file", "/x"],
                "once",
            ),
            // Review M10: beyond loopback, every token the roles' services check is needed.
            (&["--grpc-addr", "0.0.0.0:50051"], "no operator token"),
            (
                &["--grpc-addr", "0.0.0.0:50051", "--operator-token", "t"],
                "no internal token",
            ),
            (&["--backfill-max-jobs", "0"], "--backfill-max-jobs"),
            (&["--committer-timeout", "0s"], "--committer-timeout"),
        ] {
            let (cfg, _) = parse(args);
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        // Both tokens, or the explicit opt-out, or loopback: accepted.
        for args in [
            &[
                "--grpc-addr",
                "0.0.0.0:50051",
                "--operator-token",
                "t",
                "--internal-token",
                "u",
            ][..],
            &["--grpc-addr", "0.0.0.0:50051", "--insecure-no-auth"],
            &[
                "--grpc-addr",
                "0.0.0.0:50051",
                "--roles",
                "native",
                "--native-repo",
                "n",
            ],
            &["--grpc-addr", "127.0.0.1:50051"],
        ] {
            let (cfg, _) = parse(args);
            assert!(cfg.validate().is_ok(), "{args:?}");
        }
        // An empty token file is a broken mount, not "no token".
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("token");
        std::fs::write(&empty, "\n").unwrap();
        let (cfg, _) = parse(&["--operator-token-file", empty.to_str().unwrap()]);
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
    }

    #[test]
    fn earthdata_credentials_come_from_one_source() {
        let dir = tempfile::tempdir().unwrap();
        let netrc = dir.path().join("netrc");
        std::fs::write(
            &netrc,
            "machine urs.earthdata.nasa.gov login alice password pw-xyz\n",
        )
        .unwrap();
        let netrc_arg = netrc.to_str().unwrap();
        let (cfg, _) = parse(&["--earthdata-netrc", netrc_arg]);
        let e = cfg.validate().unwrap().earthdata.unwrap();
        assert!(
            matches!(&e.source, imerg_credentials::TokenSource::Login { username, .. } if username == "alice"),
            "{e:?}"
        );
        assert!(!format!("{e:?}").contains("pw-xyz"));
        let (cfg, _) = parse(&[
            "--earthdata-username",
            "bob",
            "--earthdata-password",
            "pw",
            "--earthdata-login-url",
            "http://127.0.0.1:1",
        ]);
        let e = cfg.validate().unwrap().earthdata.unwrap();
        assert!(
            matches!(&e.source, imerg_credentials::TokenSource::Login { login_url, .. } if login_url == "http://127.0.0.1:1"),
            "{e:?}"
        );
        for (args, needle) in [
            (&["--earthdata-username", "bob"][..], "go together"),
            (
                &[
                    "--earthdata-token",
                    "t",
                    "--earthdata-username",
                    "bob",
                    "--earthdata-password",
                    "pw",
                ],
                "once",
            ),
        ] {
            let (cfg, _) = parse(args);
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        // The ecosystem's EARTHDATA_TOKEN, when no IMERG_ variable or flag gives one.
        let (cfg, _) = parse(&[]);
        let env = |name: &str| (name == "EARTHDATA_TOKEN").then(|| "edl-token-xyz".to_string());
        let e = cfg.earthdata_with_env(env).unwrap().unwrap();
        assert_eq!(e.token, "edl-token-xyz");
        assert!(matches!(e.source, imerg_credentials::TokenSource::Value));
        let (cfg, _) = parse(&["--earthdata-token", "flag-token"]);
        assert_eq!(
            cfg.earthdata_with_env(env).unwrap().unwrap().token,
            "flag-token"
        );
        // A .netrc without Earthdata Login's machine gives no credentials.
        std::fs::write(&netrc, "machine other login a password b\n").unwrap();
        let (cfg, _) = parse(&["--earthdata-netrc", netrc_arg]);
        assert!(cfg.validate().unwrap().earthdata.is_none());
    }

    #[test]
    fn sqs_settings_are_derived_once() {
        let (cfg, _) = parse(&[
            "--sqs-queue-url",
            "http://q",
            "--sqs-visibility-timeout",
            "60",
        ]);
        let s = cfg.validate().unwrap();
        let sqs = s.sqs.unwrap();
        assert_eq!(sqs.listener().lease.extend_every, Duration::from_secs(30));
        // A committer-only process ignores the shared queue settings.
        let (cfg, _) = parse(&["--roles", "committer", "--sqs-queue-url", "http://q"]);
        assert!(cfg.validate().unwrap().sqs.is_none());
    }

    #[test]
    fn file_fills_what_flags_do_not_say_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "batch_size = 7\nbatch_age = \"9s\"\nroles = [\"committer\", \"api\", \"worker\"]\nworker-concurrency = 3\n",
        )
        .unwrap();
        let (cfg, m) = parse(&["--batch-size", "5"]);
        let cfg = cfg.with_file(&f, &m).unwrap();
        assert_eq!(cfg.batch_size, 5, "the flag wins");
        assert_eq!(cfg.batch_age, Duration::from_secs(9));
        assert_eq!(cfg.worker_concurrency, 3);
        assert_eq!(cfg.roles, vec![Role::Committer, Role::Api, Role::Worker]);
        std::fs::write(&f, "batch_sise = 7\n").unwrap();
        let (cfg, m) = parse(&[]);
        let e = cfg.with_file(&f, &m).unwrap_err().to_string();
        assert!(e.contains("batch_sise"), "{e}");
    }

    #[test]
    fn secrets_never_show() {
        let (cfg, _) = parse(&["--operator-token", "hunter2"]);
        assert!(!format!("{cfg:?}").contains("hunter2"));
        assert!(!format!("{:?}", cfg.validate().unwrap()).contains("hunter2"));
    }
}
