//! `imerg-ingest status`: what the store holds: time range, granules present, gaps, commits and
//! manifests (count, largest size against the limit).

use std::process::ExitCode;

use imerg_catalog::ProductProfile;
use imerg_dataset::{Dataset, RepoLocation};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Repository directory (or s3://bucket/prefix).
    #[arg(long, env = "IMERG_REPO")]
    repo: String,
    /// S3-compatible endpoint of an s3:// repository (a local server); default AWS.
    #[arg(long, env = "IMERG_REPO_ENDPOINT")]
    repo_endpoint: Option<String>,
    /// Region of an s3:// repository.
    #[arg(long, env = "IMERG_REPO_REGION")]
    repo_region: Option<String>,
    /// The native time-series store (directory or s3://bucket/prefix): report its coverage and
    /// its lag behind this repository.
    #[arg(long, env = "IMERG_NATIVE_REPO")]
    native_repo: Option<String>,
    /// Print the status as one JSON object.
    #[arg(long)]
    json: bool,
    /// Also ask a running service (gRPC, e.g. http://127.0.0.1:50051) for its last
    /// reconciliation sweep: what it found, ingested and what is still missing.
    #[arg(long)]
    server: Option<String>,
}

/// The last sweep of the service at `server` (None when it runs no sweeps).
async fn last_sweep(server: &str) -> anyhow::Result<Option<imerg_proto::v1::ReconcileSweep>> {
    use anyhow::Context as _;
    let mut c =
        imerg_proto::v1::ingest_service_client::IngestServiceClient::connect(server.to_string())
            .await
            .with_context(|| format!("connecting to {server}"))?;
    Ok(c.get_status(imerg_proto::v1::GetStatusRequest {})
        .await?
        .into_inner()
        .last_sweep)
}

fn sweep_json(s: &imerg_proto::v1::ReconcileSweep) -> serde_json::Value {
    let t =
        |t: &Option<prost_types::Timestamp>| ts(t.as_ref().and_then(imerg_proto::from_timestamp));
    serde_json::json!({
        "finished": t(&s.end_time), "window_start": t(&s.window_start_time),
        "window_end": t(&s.window_end_time), "expected": s.expected, "present": s.present,
        "found": s.found, "ingested": s.ingested, "failed": s.failed,
        "still_missing": s.still_missing, "overdue": s.overdue, "missing": s.missing,
        "inventory_error": s.inventory_error,
    })
}

fn native_json(n: &imerg_native::NativeStatus) -> serde_json::Value {
    serde_json::json!({
        "virtual_snapshot": n.virtual_snapshot, "native_snapshot": n.native_snapshot,
        "granules_present": n.granules_present, "lag_seconds": n.lag_seconds,
        "last_update": n.last_update.map(|t| ts(Some(t))),
    })
}

fn ts(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

pub fn run(profile: ProductProfile, args: Args) -> anyhow::Result<ExitCode> {
    let (st, sweep, native) = super::block_on(async {
        let ds = Dataset::open(
            &RepoLocation::parse(
                &args.repo,
                args.repo_region.clone(),
                args.repo_endpoint.clone(),
            ),
            profile,
        )
        .await?;
        let st = ds.status().await?;
        let sweep = match &args.server {
            Some(s) => last_sweep(s).await?,
            None => None,
        };
        let native = match &args.native_repo {
            Some(n) => {
                let loc =
                    RepoLocation::parse(n, args.repo_region.clone(), args.repo_endpoint.clone());
                let repo = imerg_native::NativeRepo::open_or_create(&loc).await?;
                Some(imerg_native::native_status(&ds, &repo).await?)
            }
            None => None,
        };
        anyhow::Ok((st, sweep, native))
    })??;
    if args.json {
        let mut v = serde_json::to_value(&st)?;
        if let (Some(s), Some(o)) = (&sweep, v.as_object_mut()) {
            o.insert("last_sweep".into(), sweep_json(s));
        }
        if let (Some(n), Some(o)) = (&native, v.as_object_mut()) {
            o.insert("native".into(), native_json(n));
        }
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("product     {}", st.product);
    println!(
        "time range  {} .. {} (time axis length {})",
        ts(st.first_granule),
        ts(st.last_granule),
        st.time_len
    );
    println!("granules    {} present", st.granules_present);
    println!(
        "gaps        {} ({} granules missing)",
        st.gaps.len(),
        st.gaps.iter().map(|g| g.granules).sum::<u64>()
    );
    for g in st.gaps.iter().take(20) {
        println!(
            "            {} .. {} ({})",
            ts(Some(g.start)),
            ts(Some(g.end)),
            g.granules
        );
    }
    if st.gaps.len() > 20 {
        println!("            ... {} more (see --json)", st.gaps.len() - 20);
    }
    match &st.last_commit {
        Some(c) => println!(
            "commits     {} (last {} at {}: {})",
            st.commits,
            c.id,
            ts(Some(c.time)),
            c.message
        ),
        None => println!("commits     0"),
    }
    println!(
        "manifests   {}, largest {} bytes (limit {}), {} bytes in all, {} chunk refs",
        st.manifests,
        st.largest_manifest_bytes,
        st.manifest_max_bytes,
        st.manifest_bytes,
        st.references
    );
    if let Some(s) = &sweep {
        let j = sweep_json(s);
        println!(
            "last sweep  {} over {} .. {}: {} expected, {} present, {} found, {} ingested, {} failed; {} still missing ({} overdue)",
            j["finished"].as_str().unwrap_or("-"),
            j["window_start"].as_str().unwrap_or("-"),
            j["window_end"].as_str().unwrap_or("-"),
            s.expected,
            s.present,
            s.found,
            s.ingested,
            s.failed,
            s.still_missing,
            s.overdue
        );
        for k in s.missing.iter().take(10) {
            println!("            missing {k}");
        }
    } else if args.server.is_some() {
        println!("last sweep  none (the service runs no reconciliation, or has not swept yet)");
    }
    if let Some(n) = &native {
        println!(
            "native      {} granules, reflects virtual snapshot {} (updated {}), lag {:.0} s",
            n.granules_present,
            n.virtual_snapshot.as_deref().unwrap_or("- (not built yet)"),
            ts(n.last_update),
            n.lag_seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}
