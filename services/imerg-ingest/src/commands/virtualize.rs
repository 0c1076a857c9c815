//! `imerg-ingest virtualize`: prints the exact virtual references of granule files or URLs, as
//! one JSON object per granule per line (`--json`) or a short summary. `--ranged-reads` reads
//! only the metadata (as `serve --ranged-reads` does), `--concurrency` keeps several granules in
//! flight; each JSON line then says what its reads cost (`fetch`).

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
    /// Read only the HDF5 metadata by byte ranges (falling back to the whole object when the
    /// ranged reader declines), as `serve --ranged-reads`.
    #[arg(long)]
    ranged_reads: bool,
    /// Granules virtualized at once (output keeps the input order).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// Bytes of the ranged reader's first read from offset 0.
    #[arg(long, default_value_t = imerg_hdf5::ReadOptions::default().first_read)]
    first_read: u64,
    /// Bytes read from the object's end in the same round trip as the first read (0: none).
    #[arg(long, default_value_t = imerg_hdf5::ReadOptions::default().tail_read)]
    tail_read: u64,
    /// Do not remember where the previous granules kept their metadata (layout hints).
    #[arg(long)]
    no_layout_hints: bool,
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
    use futures::StreamExt as _;
    let profile = Arc::new(profile);
    let ranged = args.ranged_reads.then(|| {
        let mut o = imerg_virtualize::RangedOptions::default();
        o.read.first_read = args.first_read;
        o.read.tail_read = args.tail_read;
        if !args.no_layout_hints {
            o.read.hints = Some(Arc::new(imerg_hdf5::LayoutHints::new()));
        }
        o
    });
    let mut failed = 0usize;
    super::block_on(async {
        let mut out = std::io::stdout().lock();
        let mut results = futures::stream::iter(args.inputs.iter())
            .map(|input| {
                let profile = Arc::clone(&profile);
                let ranged = ranged.as_ref();
                async move {
                    let t0 = std::time::Instant::now();
                    let r = imerg_pipeline::virtualize_url_with(profile, input, ranged).await;
                    (input, r, t0.elapsed())
                }
            })
            .buffered(usize::from(args.concurrency));
        while let Some((input, result, took)) = results.next().await {
            let line = match result {
                Ok((g, cost)) if args.json => {
                    let mut v = granule_json(&g);
                    v["fetch"] = json!({
                        "mode": if cost.ranged { "ranged" } else { "whole" },
                        "fallback": cost.fallback,
                        "gets": cost.gets,
                        "bytes": cost.bytes,
                        "round_trips": cost.round_trips,
                        "seconds": took.as_secs_f64(),
                    });
                    v.to_string()
                }
                Ok((g, _)) => {
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
