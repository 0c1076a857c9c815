//! `imerg-ingest synth`: writes every granule of a time range into `--out` in the bucket layout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use imerg_catalog::{ProductProfile, TimeRange, parse_time};
use imerg_synth::{H5Format, SynthOptions, write_granule};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// First granule start (inclusive): YYYY-MM-DD, YYYY-MM-DDTHH:MM or RFC 3339, UTC.
    #[arg(long)]
    start: String,
    /// End of the range (exclusive).
    #[arg(long)]
    end: String,
    /// Root directory; granules go to OUT/<collection>/YYYY/DDD/<name>.
    #[arg(long)]
    out: PathBuf,
    /// Deflate level (0-9).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u8).range(0..=9))]
    deflate_level: u8,
    /// Byte-shuffle the data variables before deflate.
    #[arg(long)]
    shuffle: bool,
    /// HDF5 file format: `earliest` (v1 B-tree chunk indexes) or `v110` (extensible / fixed
    /// array chunk indexes).
    #[arg(long, default_value = "earliest")]
    hdf5_format: H5Format,
    /// Give the data variables a fixed (not unlimited) time dimension: with `--hdf5-format v110`
    /// this selects the fixed-array chunk index.
    #[arg(long)]
    fixed_time: bool,
    /// Noisy fields that compress like real IMERG (8-12 MB granules instead of ~1 MB; slower).
    #[arg(long)]
    realistic: bool,
    /// Parallel writers (HDF5 itself is serialized; data generation runs in parallel).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
}

pub fn run(profile: &ProductProfile, args: Args) -> anyhow::Result<ExitCode> {
    let range = TimeRange::new(parse_time(&args.start)?, parse_time(&args.end)?)?;
    let opts = SynthOptions {
        deflate_level: args.deflate_level,
        shuffle: args.shuffle,
        format: args.hdf5_format,
        unlimited_time: !args.fixed_time,
        realistic: args.realistic,
        ..Default::default()
    };
    let granules: Vec<_> = profile.expected(range).collect();
    let next = AtomicUsize::new(0);
    let started = std::time::Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..args.jobs.max(1))
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(g) = granules.get(i) else {
                            return Ok(());
                        };
                        let path = args.out.join(&g.key);
                        write_granule(&path, profile, g.start, &opts)
                            .with_context(|| format!("writing {}", path.display()))?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
        }
        Ok(())
    })?;
    println!(
        "wrote {} granules of {} ({} .. {}) under {} in {:.1} s",
        granules.len(),
        profile.id,
        range.start,
        range.end,
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
