//! `imerg-ingest virtualize`: prints the exact virtual references of granule files or URLs, as
//! one JSON object per granule per line (`--json`) or a short summary.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use imerg_catalog::ProductProfile;
use imerg_pipeline::Reason;
use imerg_refs::GranuleRefs;
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON object per granule per line (errors as {"key", "error", "reason"}).
    #[arg(long)]
    json: bool,
    /// Granule files (local paths or file:// URLs) or s3:// URLs.
    #[arg(required = true, value_name = "PATH_OR_URL")]
    inputs: Vec<String>,
}

/// The `--json` form of a granule, as documented in README.md.
pub fn granule_json(g: &GranuleRefs) -> serde_json::Value {
    let variables: serde_json::Map<String, serde_json::Value> = g
        .variables
        .iter()
        .map(|(name, v)| (name.clone(), json!({"zarr": v.zarr, "refs": v.refs})))
        .collect();
    json!({
        "key": g.key,
        "product": g.product,
        "start": g.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "time_index": g.time_index,
        "etag": g.etag,
        "url": g.url,
        "size": g.size,
        "last_modified": g.last_modified,
        "fingerprint": g.fingerprint,
        "variables": variables,
        "coords": g.coords,
    })
}

/// The `reason` field of a failure: the pipeline's reason, with fetch failures named `fetch`
/// as this command always has.
fn reason_label(r: Reason) -> &'static str {
    match r {
        Reason::Transient | Reason::Source => "fetch",
        other => other.as_str(),
    }
}

pub fn run(profile: ProductProfile, args: Args) -> anyhow::Result<ExitCode> {
    let profile = Arc::new(profile);
    let mut failed = 0usize;
    super::block_on(async {
        let mut out = std::io::stdout().lock();
        for input in &args.inputs {
            let line = match imerg_pipeline::virtualize_url(Arc::clone(&profile), input).await {
                Ok(g) if args.json => granule_json(&g).to_string(),
                Ok(g) => {
                    let per: Vec<String> = g
                        .variables
                        .iter()
                        .map(|(n, v)| format!("{n} {}", v.refs.len()))
                        .collect();
                    format!(
                        "OK {} t={} {} {} refs ({}) fingerprint {}",
                        g.key,
                        g.time_index,
                        g.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        g.ref_count(),
                        per.join(", "),
                        &g.fingerprint[..16]
                    )
                }
                Err(e) => {
                    failed += 1;
                    let key = profile
                        .parse_any(input)
                        .map_or_else(|_| input.clone(), |id| id.key);
                    let (error, reason) = (e.message, reason_label(e.reason));
                    tracing::warn!(%key, %reason, %error, "granule rejected");
                    if args.json {
                        json!({"key": key, "input": input, "error": error, "reason": reason})
                            .to_string()
                    } else {
                        format!("FAILED {input}: {error}")
                    }
                }
            };
            // A closed stdout (e.g. piped into `head`) ends the listing quietly.
            if writeln!(out, "{line}").is_err() {
                break;
            }
        }
    })?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
