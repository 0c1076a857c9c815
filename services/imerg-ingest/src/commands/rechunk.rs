//! `imerg-ingest rechunk`: the batch rechunk of a virtual repository's time range into the native
//! time-series repository (created if missing), one region (60-day block x 180-degree-tenths
//! column) per commit, resumable by re-running the same command, shardable across jobs with
//! `--shard I/N`. A progress bar on a terminal, plain lines otherwise; the summary (granules per
//! second, bytes, peak memory) last, as JSON with `--json`.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use imerg_catalog::{ProductProfile, parse_time};
use imerg_dataset::{Dataset, RepoLocation};
use imerg_native::{NativeRepo, RechunkOptions, ShardOf, WriteStats};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The virtual repository (directory or s3://bucket/prefix).
    #[arg(long = "from")]
    from: String,
    /// The native repository (directory or s3://bucket/prefix), created if missing.
    #[arg(long = "to")]
    to: String,
    /// First granule start to rechunk (inclusive), e.g. 2024-07-01; default the record's start.
    #[arg(long)]
    start: Option<String>,
    /// End of the range (exclusive); default the record's end.
    #[arg(long)]
    end: Option<String>,
    /// Take every N-th region starting at I (0-based), for N jobs on disjoint regions.
    #[arg(long, value_name = "I/N")]
    shard: Option<ShardOf>,
    /// Read this virtual snapshot instead of the branch tip (jobs of one sharded run share it).
    #[arg(long, env = "IMERG_RECHUNK_VIRTUAL_SNAPSHOT")]
    virtual_snapshot: Option<String>,
    /// S3-compatible endpoint of s3:// repositories (a local server); default AWS.
    #[arg(long, env = "IMERG_REPO_ENDPOINT")]
    repo_endpoint: Option<String>,
    /// Region of s3:// repositories.
    #[arg(long, env = "IMERG_REPO_REGION")]
    repo_region: Option<String>,
    /// Lossy mode: keep this many of float32's 23 mantissa bits (dynamical.org keeps 7); fill
    /// values stay exact. The store's data variables say so in `imerg_native_keep_mantissa_bits`.
    /// Give the native writer (`serve --native-keep-mantissa-bits`) the same value. Default:
    /// lossless.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=23))]
    keep_mantissa_bits: Option<u8>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Progress on stderr: a bar on a terminal, a line per tenth of the regions otherwise.
fn reporter(started: Instant) -> impl FnMut(u64, u64, &WriteStats) + Send {
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} regions  {msg}  eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut last_tenth = 0;
    move |done, total, stats| {
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let rate = stats.values_written as f64 / secs;
        let msg = format!(
            "{:.1} variable-steps/s, {:.1} MB written",
            rate,
            stats.bytes_written as f64 / 1e6
        );
        match &bar {
            Some(b) => {
                b.set_length(total);
                b.set_position(done);
                b.set_message(msg);
            }
            None => {
                let tenth = (done * 10).checked_div(total).unwrap_or(10);
                if tenth > last_tenth || done == total {
                    last_tenth = tenth;
                    eprintln!("rechunk: {done}/{total} regions, {msg}");
                }
            }
        }
    }
}

pub fn run(profile: ProductProfile, args: Args) -> anyhow::Result<ExitCode> {
    let location =
        |s: &str| RepoLocation::parse(s, args.repo_region.clone(), args.repo_endpoint.clone());
    let index = |s: &Option<String>| -> anyhow::Result<Option<u64>> {
        s.as_deref()
            .map(|s| Ok(profile.first_index_at_or_after(parse_time(s)?)))
            .transpose()
    };
    let opts = RechunkOptions {
        start: index(&args.start)?,
        end: index(&args.end)?,
        shard: args.shard,
        // An empty value (the Job manifest's default) means the branch tip.
        virtual_snapshot: args.virtual_snapshot.clone().filter(|s| !s.is_empty()),
        layout: imerg_native::NativeLayout {
            keep_mantissa_bits: args.keep_mantissa_bits,
            ..Default::default()
        },
    };
    super::block_on(async move {
        let virt = Dataset::open(&location(&args.from), profile.clone())
            .await
            .with_context(|| format!("opening the virtual repository {}", args.from))?;
        let native = NativeRepo::open_or_create(&location(&args.to))
            .await
            .with_context(|| format!("opening the native repository {}", args.to))?;
        let started = Instant::now();
        let mut progress = reporter(started);
        let report = imerg_native::rechunk::rechunk(&virt, &native, &opts, &mut progress).await?;
        let secs = report.elapsed.as_secs_f64().max(1e-9);
        let granules_written = report.stats.values_written as f64 / 4.0;
        let summary = json!({
            "virtual_snapshot": report.virtual_snapshot,
            "granules": report.granules,
            "regions": report.regions,
            "regions_written": report.regions_written,
            "regions_skipped": report.regions_skipped,
            "variable_steps_written": report.stats.values_written,
            "virtual_chunks_read": report.stats.virtual_chunks_read,
            "shards_written": report.stats.shards_written,
            "bytes_written": report.stats.bytes_written,
            "seconds": secs,
            "granules_per_second": granules_written / secs,
            "peak_rss_bytes": imerg_synth::rss::peak_bytes(),
            "complete": report.completed,
        });
        if args.json {
            println!("{summary}");
        } else {
            println!(
                "rechunked {} granules ({} of {} regions written, {} already done) in {:.1} s: \
                 {:.2} granules/s, {:.1} MB written, peak memory {:.0} MiB",
                report.granules,
                report.regions_written,
                report.regions,
                report.regions_skipped,
                secs,
                granules_written / secs,
                report.stats.bytes_written as f64 / 1e6,
                imerg_synth::rss::peak_bytes() as f64 / (1 << 20) as f64,
            );
        }
        Ok(ExitCode::SUCCESS)
    })?
}
