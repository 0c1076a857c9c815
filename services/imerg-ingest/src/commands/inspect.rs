//! `imerg-ingest inspect --layout`: how a granule's HDF5 file is laid out, as a reader that
//! fetches only metadata sees it (the pure-Rust reader of `imerg-hdf5`): size, superblock
//! version, each variable's storage layout, chunk index type, filter pipeline and per-chunk filter
//! masks, the byte ranges that are not chunk data (metadata and free space), and what reading the
//! metadata cost (GETs, bytes, dependent round trips). One JSON object per input per line.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use imerg_catalog::{Location, SourceLocation};
use imerg_hdf5::{ChunkIndex, RangeReader, ReadOptions, StorageLayout};
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Report the storage layout (the report this command makes).
    #[arg(long, required = true)]
    layout: bool,
    /// Size of the reader's first read from offset 0, in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    first_read: u64,
    /// Granule files (paths, file:// URLs) or s3:// URLs (credentials and endpoint from the
    /// standard AWS_* variables).
    #[arg(required = true, value_name = "PATH_OR_URL")]
    inputs: Vec<String>,
}

async fn reader(input: &str) -> anyhow::Result<Arc<dyn RangeReader>> {
    Ok(match Location::parse(input)? {
        Location::Local(p) => Arc::new(imerg_hdf5::FileReader::open(Path::new(&p))?),
        Location::S3 { bucket, prefix } => {
            let source = imerg_source::Source::new(
                &SourceLocation::S3 {
                    bucket,
                    prefix: String::new(),
                    region: None,
                    endpoint_url: std::env::var("AWS_ENDPOINT_URL").ok(),
                    anonymous: false,
                },
                None,
            )?;
            let (r, _) = source.open_ranges(&prefix).await?;
            r
        }
    })
}

fn index_name(layout: &StorageLayout) -> (&'static str, Option<&'static str>) {
    match layout {
        StorageLayout::Compact { .. } => ("compact", None),
        StorageLayout::Contiguous { .. } => ("contiguous", None),
        StorageLayout::Chunked { index, .. } => (
            "chunked",
            Some(match index {
                ChunkIndex::BTreeV1 { .. } => "btree_v1",
                ChunkIndex::SingleChunk { .. } => "single_chunk",
                ChunkIndex::Implicit { .. } => "implicit",
                ChunkIndex::FixedArray { .. } => "fixed_array",
                ChunkIndex::ExtensibleArray { .. } => "extensible_array",
                ChunkIndex::BTreeV2 { .. } => "btree_v2",
                #[allow(unreachable_patterns)]
                _ => "other",
            }),
        ),
    }
}

/// `[offset, offset + len)` ranges sorted and merged.
fn merged(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (o, l) in ranges {
        let end = o.saturating_add(l);
        match out.last_mut() {
            Some((po, pl)) if o <= po.saturating_add(*pl) => {
                *pl = (*pl).max(end.saturating_sub(*po));
            }
            _ => out.push((o, l)),
        }
    }
    out
}

fn ranges_json(r: &[(u64, u64)]) -> Value {
    Value::Array(
        r.iter()
            .map(|(o, l)| json!({"offset": o, "len": l}))
            .collect(),
    )
}

async fn inspect(input: &str, first_read: u64) -> anyhow::Result<Value> {
    let reader = reader(input).await?;
    let size = reader.size_hint().context("the object's size is unknown")?;
    let opts = ReadOptions {
        first_read,
        ..ReadOptions::default()
    };
    let index = imerg_hdf5::read_imerg(Arc::clone(&reader), opts).await?;
    let mut chunk_ranges = Vec::new();
    let datasets: Vec<Value> = index
        .datasets
        .iter()
        .map(|d| {
            let (layout, idx) = index_name(&d.layout);
            let mut masks: BTreeMap<String, u64> = BTreeMap::new();
            for c in &d.chunks {
                *masks.entry(c.filter_mask.to_string()).or_default() += 1;
                chunk_ranges.push((c.address, c.size));
            }
            if let StorageLayout::Contiguous {
                address: Some(a),
                size,
            } = &d.layout
            {
                chunk_ranges.push((*a, *size));
            }
            json!({
                "path": d.path,
                "dtype": format!("{:?}", d.dtype),
                "shape": d.shape,
                "layout": layout,
                "index": idx,
                "chunk_shape": d.chunk_shape(),
                "filters": d.filters.iter().map(|f| json!({
                    "id": f.id, "name": f.name, "flags": f.flags, "client_data": f.client_data,
                })).collect::<Vec<_>>(),
                "chunks": d.chunks.len(),
                "chunk_bytes": d.chunks.iter().map(|c| c.size).sum::<u64>(),
                "filter_masks": masks,
            })
        })
        .collect();
    let data = merged(chunk_ranges);
    // Everything that is not chunk (or contiguous) data: metadata, free space, other objects.
    let mut other = Vec::new();
    let mut at = 0u64;
    for (o, l) in &data {
        if *o > at {
            other.push((at, o - at));
        }
        at = at.max(o.saturating_add(*l));
    }
    if at < size {
        other.push((at, size - at));
    }
    let metadata = merged(index.stats.structure_reads.clone());
    let s = &index.stats;
    Ok(json!({
        "input": input,
        "size": size,
        "superblock_version": index.superblock.version,
        "datasets": datasets,
        "metadata_ranges": ranges_json(&metadata),
        "metadata_bytes": metadata.iter().map(|(_, l)| l).sum::<u64>(),
        "non_chunk_ranges": ranges_json(&other),
        "non_chunk_bytes": other.iter().map(|(_, l)| l).sum::<u64>(),
        "fetch": {
            "first_read": first_read,
            "gets": s.gets,
            "bytes": s.bytes,
            "fraction": if size > 0 { s.bytes as f64 / size as f64 } else { 0.0 },
            "round_trips": s.round_trips,
        },
    }))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.layout {
        bail!("say what to inspect: --layout");
    }
    let mut failed = 0usize;
    super::block_on(async {
        let mut out = std::io::stdout().lock();
        for input in &args.inputs {
            let line = match inspect(input, args.first_read).await {
                Ok(v) => v,
                Err(e) => {
                    failed += 1;
                    json!({"input": input, "error": format!("{e:#}")})
                }
            };
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
