//! `imerg-ingest`: one binary, one subcommand per job. This file parses the command line, sets up
//! logging and dispatches; each subcommand lives in `commands/`.

mod commands;
mod product;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// Keeps an Icechunk virtual Zarr dataset of GPM IMERG half-hourly precipitation up to date.
#[derive(Debug, Parser)]
#[command(name = "imerg-ingest", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    product: product::ProductArgs,
    /// Log format: `text` for people, `json` for log pipelines. Levels come from RUST_LOG.
    #[arg(long, env = "IMERG_LOG_FORMAT", default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write synthetic granules for a time range into a directory in the bucket layout.
    Synth(commands::synth::Args),
    /// Print the exact virtual references of granule files or URLs.
    Virtualize(commands::virtualize::Args),
    /// Virtualize granule files and commit them into a local repository (creating it).
    Append(commands::append::Args),
    /// Show what a repository holds: time range, granules, gaps, commits, manifests.
    Status(commands::status::Args),
    /// Run the service (with no configuration: every role in one process, local repository,
    /// local granule directory watched for new files).
    Serve(Box<commands::serve::Args>),
    /// Start, watch, list or cancel backfill jobs on a running service.
    Backfill(commands::backfill::Args),
    /// Build a store from synthetic references (no file reads) through the committer, reporting
    /// per-commit latency and memory: scale runs up to the full record.
    Simulate(commands::simulate::Args),
    /// Report a granule's HDF5 layout as a metadata-only reader sees it (JSON per input).
    Inspect(commands::inspect::Args),
    /// Read a time range's references back through the store (fetch from the source, decode).
    Verify(commands::verify::Args),
    /// Rechunk a virtual repository's time range into the native time-series repository
    /// (resumable; `--shard I/N` for parallel jobs).
    Rechunk(commands::rechunk::Args),
    /// Print the selected product profile as JSON (a starting point for --product-profile).
    Profile,
}

/// An OTLP/HTTP trace exporter when the standard `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` is set
/// (and `OTEL_SDK_DISABLED` is not `true`); the exporter reads the other `OTEL_*` variables
/// (headers, timeout) itself. Spans are sent from the SDK's own batch thread.
fn otlp_provider() -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    if !configured || std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v == "true") {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("warning: OTLP trace export disabled: {e}");
            return None;
        }
    };
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "imerg-ingest".into());
    Some(
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .build(),
            )
            .build(),
    )
}

/// Log levels when RUST_LOG is not set. The service logs at `info`, except Icechunk's warning on
/// every open that a local-filesystem repository is unsafe for concurrent writers (the service is
/// the single writer by design). The other commands print their own results for a person to
/// read: only their warnings and errors are logged, and none of Icechunk's (its errors reach the
/// command as errors; its log lines are internals, such as cancelled manifest pre-loads at exit
/// or the `unsafe_use_metadata` note on every local repository created).
const SERVICE_LOG_LEVELS: &str = "info,icechunk_arrow_object_store=error";
const COMMAND_LOG_LEVELS: &str =
    "warn,icechunk=off,icechunk_storage=off,icechunk_arrow_object_store=off";

fn init_logging(
    format: LogFormat,
    default_levels: &str,
) -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_levels));
    let provider = otlp_provider();
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("imerg-ingest")));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let _ = match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    provider
}

/// glibc gives threads that allocate their own malloc arenas (up to 8 per core) and keeps freed
/// memory in each: the native writer's decodes on tokio's blocking pool grew `rechunk` of 24
/// granules to 612 MB against 158 MB with two arenas (docs/native-store.md). Two arenas, set
/// before any thread starts; `MALLOC_ARENA_MAX` in the environment still decides if given.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let serve_matches = matches
        .subcommand_matches("serve")
        .cloned()
        .unwrap_or_default();
    let levels = match cli.command {
        Command::Serve(_) => SERVICE_LOG_LEVELS,
        _ => COMMAND_LOG_LEVELS,
    };
    let tracer_provider = init_logging(cli.log_format, levels);
    let result = (|| -> anyhow::Result<std::process::ExitCode> {
        let profile = cli.product.load()?;
        match cli.command {
            Command::Synth(args) => commands::synth::run(&profile, args),
            Command::Virtualize(args) => commands::virtualize::run(profile, args),
            Command::Append(args) => commands::append::run(profile, args),
            Command::Status(args) => commands::status::run(profile, args),
            Command::Serve(args) => commands::serve::run(profile, *args, &serve_matches),
            Command::Backfill(args) => commands::backfill::run(args),
            Command::Simulate(args) => commands::simulate::run(profile, args),
            Command::Verify(args) => commands::verify::run(profile, args),
            Command::Inspect(args) => commands::inspect::run(args),
            Command::Rechunk(args) => commands::rechunk::run(profile, args),
            Command::Profile => {
                println!("{}", serde_json::to_string_pretty(&profile)?);
                Ok(std::process::ExitCode::SUCCESS)
            }
        }
    })();
    if let Some(p) = tracer_provider {
        // Flush the spans still queued.
        let _ = p.shutdown();
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
