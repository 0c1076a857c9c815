//! `imerg-ingest serve`: the thin adapter from the command line to [`imerg_service::run`]:
//! flags, variables and an optional TOML file become one `ServiceConfig`; SIGTERM or Ctrl-C
//! starts the graceful shutdown, and a second one exits at once.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use imerg_catalog::ProductProfile;
use imerg_service::{Service, ServiceConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    service: ServiceConfig,
    /// A TOML file with any of the options above, keys named like the long flags (`batch_size =
    /// 240`, `shutdown_grace = "30s"`, `roles = ["committer", "api"]`). Flags and variables win
    /// over the file; unknown keys are errors.
    #[arg(long, env = "IMERG_CONFIG")]
    config: Option<PathBuf>,
    /// Write a day of synthetic granules into the source directory first.
    #[arg(long)]
    demo: bool,
}

pub fn run(
    profile: ProductProfile,
    args: Args,
    matches: &clap::ArgMatches,
) -> anyhow::Result<ExitCode> {
    if imerg_crashpoint::requested_but_disabled() {
        tracing::warn!(
            "{} is set but this build has no crash points (build with --features crashpoints)",
            imerg_crashpoint::ENV
        );
    }
    let mut cfg = args.service;
    cfg.profile = profile;
    if let Some(file) = &args.config {
        cfg = cfg.with_file(file, matches)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let service = Service::bind(cfg).await?;
        let settings = service.settings();
        if args.demo {
            let root = settings
                .source
                .local_root()
                .context("--demo writes granules into a local --source directory")?
                .to_path_buf();
            let profile = settings.profile.clone();
            tokio::task::spawn_blocking(move || demo_granules(&profile, &root)).await??;
        }
        println!(
            "imerg-ingest serving {}: gRPC on {}, metrics on http://{}/metrics",
            settings.profile.id,
            service.grpc_addr()?,
            service.http_addr()?
        );
        service.run(shutdown_signal()).await?;
        anyhow::Ok(())
    });
    // Work still running (an HDF5 parse that hangs) does not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result.map(|()| ExitCode::SUCCESS)
}

/// SIGTERM or Ctrl-C; after it, a second one exits at once.
async fn shutdown_signal() {
    wait_for_signal().await;
    tokio::spawn(async {
        wait_for_signal().await;
        eprintln!("imerg-ingest: second signal: exiting now");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
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
