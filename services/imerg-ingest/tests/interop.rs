//! Interop with the real reader: two days of synthetic granules appended by the CLI in several
//! commits, in shuffled order, with a duplicate and a one-granule gap; then Python icechunk +
//! xarray open the store and compare every value with h5py's reads of the source files
//! (tests/python/check_store.py). Needs the Python venv (3.12 or newer) that scripts/test.sh builds
//! (IMERG_PYTHON); without it the test fails, it is never skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::{bin, check_store, python, synth};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if p.extension().is_some_and(|x| x == "HDF5") {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn python_reader_sees_the_source_values() {
    // Fail fast, before the long part, if the reader venv is missing.
    python();
    let dir = tempfile::tempdir().unwrap();
    let (src, repo) = (dir.path().join("bucket"), dir.path().join("repo"));
    synth(&src, "2020-02-28", "2020-03-01");
    let all = files(&src);
    assert_eq!(all.len(), 96);
    let gap = all
        .iter()
        .position(|p| p.to_string_lossy().contains("20200229-S120000"))
        .unwrap();
    let mut order: Vec<usize> = (0..all.len()).filter(|i| *i != gap).collect();
    // Deterministic shuffle.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let parts = [&order[..30], &order[30..70], &order[70..]];
    for (n, part) in parts.iter().enumerate() {
        let mut paths: Vec<&PathBuf> = part.iter().map(|i| &all[*i]).collect();
        if n == 2 {
            paths.push(&all[order[3]]); // a duplicate of an earlier run's granule
        }
        run(bin()
            .args(["append", "--batch-size", "16", "--repo"])
            .arg(&repo)
            .args(paths));
    }

    let st: serde_json::Value =
        serde_json::from_str(&run(bin().args(["status", "--json", "--repo"]).arg(&repo))).unwrap();
    assert_eq!(st["granules_present"], 95);
    assert_eq!(st["gaps"].as_array().unwrap().len(), 1);
    assert_eq!(st["gaps"][0]["start"], "2020-02-29T12:00:00Z");
    let commits = st["commits"].as_u64().unwrap();
    assert!(
        (6..=12).contains(&commits),
        "{commits} commits for 95 granules in batches of 16"
    );

    let index = |p: &Path| -> (u64, String) {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let profile = imerg_catalog::ProductProfile::final_v07b();
        let id = profile.parse_file_name(&name).unwrap();
        (
            id.time_index,
            id.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
    };
    let present: Vec<serde_json::Value> = order
        .iter()
        .map(|i| {
            let (t, start) = index(&all[*i]);
            serde_json::json!({"time_index": t, "start": start, "path": all[*i]})
        })
        .collect();
    let (gap_t, _) = index(&all[gap]);
    let last_t = present
        .iter()
        .map(|p| p["time_index"].as_u64().unwrap())
        .max()
        .unwrap();
    let expect = serde_json::json!({
        "repo": repo,
        "container": format!("file://{}/", src.display()),
        "time_len": last_t + 1,
        "present": present,
        "gaps": [gap_t],
    });
    check_store(dir.path(), &expect);
}
