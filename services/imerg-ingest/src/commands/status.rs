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
    /// Print the status as one JSON object.
    #[arg(long)]
    json: bool,
}

fn ts(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

pub fn run(profile: ProductProfile, args: Args) -> anyhow::Result<ExitCode> {
    let st = super::block_on(async {
        let ds = Dataset::open(
            &RepoLocation::parse(
                &args.repo,
                args.repo_region.clone(),
                args.repo_endpoint.clone(),
            ),
            profile,
        )
        .await?;
        ds.status().await
    })??;
    if args.json {
        println!("{}", serde_json::to_string(&st)?);
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
    Ok(ExitCode::SUCCESS)
}
