//! `imerg-ingest verify`: reads the references of a time range back through the store, as a
//! reader would: each chunk is fetched from its source object by Icechunk (which checks the
//! object's recorded version) and decoded with the array's codecs. One line per granule; exit
//! code 1 if any chunk did not read back.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use imerg_catalog::{ProductProfile, TimeRange, parse_time};
use imerg_dataset::{Dataset, RepoLocation};
use serde_json::json;

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
    /// Start of the range (inclusive), e.g. 2024-07-01 or 2024-07-01T12:00.
    #[arg(long)]
    start: String,
    /// End of the range (exclusive).
    #[arg(long)]
    end: String,
    /// Chunks read per granule, spread over its variables (default: all 88).
    #[arg(long)]
    sample: Option<usize>,
    /// One JSON object per granule per line.
    #[arg(long)]
    json: bool,
}

pub fn run(profile: ProductProfile, args: Args) -> anyhow::Result<ExitCode> {
    let range = TimeRange::new(parse_time(&args.start)?, parse_time(&args.end)?)?;
    super::block_on(async move {
        let ds = Dataset::open(
            &RepoLocation::parse(
                &args.repo,
                args.repo_region.clone(),
                args.repo_endpoint.clone(),
            ),
            profile.clone(),
        )
        .await
        .with_context(|| format!("opening {}", args.repo))?;
        let from = profile.first_index_at_or_after(range.start);
        let to = profile.first_index_at_or_after(range.end);
        let present = ds.present_in(from, to).await?;
        let mut failed_granules = 0usize;
        let mut out = std::io::stdout().lock();
        for t in present {
            let key = profile.granule_at_index(t).map(|g| g.key)?;
            let mut chunks = ds.granule_chunks(t, &key);
            if let Some(n) = args.sample.filter(|n| *n > 0 && *n < chunks.len()) {
                let step = chunks.len() / n;
                chunks = chunks.into_iter().step_by(step.max(1)).take(n).collect();
            }
            let results = ds.verify_chunks(&chunks).await?;
            let failures: Vec<_> = chunks
                .iter()
                .zip(&results)
                .filter_map(|(c, r)| r.as_ref().err().map(|e| (c, e)))
                .collect();
            if !failures.is_empty() {
                failed_granules += 1;
            }
            let line = if args.json {
                json!({
                    "key": key,
                    "time_index": t,
                    "chunks": chunks.len(),
                    "failed": failures.iter().map(|(c, e)| json!({
                        "variable": c.variable, "chunk": c.chunk,
                        "reason": e.reason(), "error": e.to_string(),
                    })).collect::<Vec<_>>(),
                })
                .to_string()
            } else if let Some((c, e)) = failures.first() {
                format!(
                    "FAILED {key}: {} of {} chunks; first {} {:?}: {e}",
                    failures.len(),
                    chunks.len(),
                    c.variable,
                    c.chunk
                )
            } else {
                format!("OK {key} ({} chunks)", chunks.len())
            };
            if writeln!(out, "{line}").is_err() {
                break;
            }
        }
        anyhow::Ok(if failed_granules == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })?
}
