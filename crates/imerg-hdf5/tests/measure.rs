//! Read-cost measurements for docs/ranged-reads.md (ignored by default: run with
//! `cargo test -p imerg-hdf5 --test measure -- --ignored --nocapture`). For synthetic granules in
//! each format option and h5py-written files it prints, per read configuration: GETs, bytes
//! fetched (% of the file), dependent round trips, and where the metadata structures are.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use imerg_catalog::ProductProfile;
use imerg_hdf5::{GranuleIndex, ReadOptions};
use imerg_synth::{H5Format, SynthOptions, write_granule};

/// Metadata structure reads merged into ranges (gap below 1 KiB joins), with the file span.
fn layout(idx: &GranuleIndex, size: u64) -> String {
    let mut r = idx.stats.structure_reads.clone();
    r.sort();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (o, l) in r {
        match merged.last_mut() {
            Some((s, e)) if o <= *e + 1024 => *e = (*e).max(o + l),
            _ => merged.push((o, o + l)),
        }
    }
    let bytes: u64 = merged.iter().map(|(s, e)| e - s).sum();
    let gaps: Vec<u64> = merged.windows(2).map(|w| w[1].0 - w[0].1).collect();
    let first = merged.first().map(|m| m.0).unwrap_or(0);
    let last = merged.last().map(|m| m.1).unwrap_or(0);
    format!(
        "{} metadata ranges, {} B of structures, span {:.1}%-{:.1}% of file, median gap {} KiB, max gap {} KiB; ranges {:?}",
        merged.len(),
        bytes,
        100.0 * first as f64 / size as f64,
        100.0 * last as f64 / size as f64,
        median(&gaps) / 1024,
        gaps.iter().max().copied().unwrap_or(0) / 1024,
        merged
            .iter()
            .map(|(s, e)| format!("{}K+{}", s / 1024, e - s))
            .collect::<Vec<_>>()
    )
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn sweep(label: &str, path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let size = bytes.len() as u64;
    let mut first = true;
    for (first_read, block, tail) in [
        (64 << 10, 4 << 10, 0),
        (64 << 10, 16 << 10, 0),
        (256 << 10, 4 << 10, 0),
        (256 << 10, 16 << 10, 0),
        (256 << 10, 64 << 10, 0),
        (256 << 10, 16 << 10, 256 << 10),
        (1 << 20, 16 << 10, 0),
        (1 << 20, 16 << 10, 1 << 20),
    ] {
        let opts = ReadOptions {
            first_read,
            block_size: block,
            tail_read: tail,
            ..ReadOptions::default()
        };
        let idx = common::read(bytes.clone(), opts);
        if first {
            println!("{label}: {}", layout(&idx, size));
            first = false;
        }
        let s = &idx.stats;
        println!(
            "| {label} | {} | first {} KiB, block {} KiB, tail {} KiB | {} | {:.1}% ({} KiB) | {} |",
            size,
            first_read >> 10,
            block >> 10,
            tail >> 10,
            s.gets,
            100.0 * s.bytes as f64 / size as f64,
            s.bytes >> 10,
            s.round_trips
        );
    }
}

#[test]
#[ignore = "measurement for the docs"]
fn measure() {
    let dir = tempfile::tempdir().unwrap();
    let profile = ProductProfile::final_v07b();
    let start = imerg_catalog::parse_time("2001-05-06T10:30:00Z").unwrap();
    for (label, opts) in [
        ("synth earliest d6", SynthOptions::default()),
        (
            "synth earliest shuffle d4",
            SynthOptions {
                shuffle: true,
                deflate_level: 4,
                ..SynthOptions::default()
            },
        ),
        (
            "synth v110 unlimited",
            SynthOptions {
                format: H5Format::V110,
                ..SynthOptions::default()
            },
        ),
        (
            "synth v110 fixed-time",
            SynthOptions {
                format: H5Format::V110,
                unlimited_time: false,
                ..SynthOptions::default()
            },
        ),
    ] {
        let path = dir.path().join(format!("{label}.h5"));
        write_granule(&path, &profile, start, &opts).unwrap();
        sweep(label, &path);
    }
    if let Ok(py) = std::env::var("IMERG_PYTHON") {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/h5py_writer.py");
        for libver in ["earliest", "v110", "latest"] {
            let path = dir.path().join(format!("h5py-{libver}.h5"));
            let o = std::process::Command::new(&py)
                .arg(&script)
                .arg(&path)
                .arg(libver)
                .output()
                .unwrap();
            assert!(o.status.success());
            sweep(&format!("h5py {libver}"), &path);
        }
    }
}
