//! The command-line interface as operators' scripts use it: `synth` writes the bucket layout,
//! `virtualize --json` prints one object per granule per line with the documented fields, errors
//! as objects, and exit codes that say whether anything failed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{bin, synth, synth_with};

#[test]
fn synth_then_virtualize_json() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), "2021-03-04T05:00", "2021-03-04T06:00");
    let day = dir.path().join("GPM_L3/GPM_3IMERGHH.07/2021/063");
    let mut files: Vec<_> = std::fs::read_dir(&day)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2);
    assert!(files[0].ends_with("3B-HHR.MS.MRG.3IMERG.20210304-S050000-E052959.0300.V07B.HDF5"));

    let junk = day.join("3B-HHR.MS.MRG.3IMERG.20210304-S060000-E062959.0360.V07B.HDF5");
    std::fs::write(&junk, b"not hdf5 at all").unwrap();
    let out = bin()
        .arg("virtualize")
        .arg("--json")
        .args(&files)
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "one input failed");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (g, minute) in lines[..2].iter().zip([0, 30]) {
        assert_eq!(g["product"], "final");
        assert_eq!(g["start"], format!("2021-03-04T05:{minute:02}:00Z"));
        let t = g["time_index"].as_u64().unwrap();
        assert_eq!(t, (365 * 23 + 6 + 62) * 48 + 10 + minute / 30);
        assert!(
            g["key"]
                .as_str()
                .unwrap()
                .starts_with("GPM_L3/GPM_3IMERGHH.07/2021/063/")
        );
        assert!(g["etag"].is_string());
        let vars = g["variables"].as_object().unwrap();
        assert_eq!(vars.len(), 4);
        let n: usize = vars
            .values()
            .map(|v| v["refs"].as_array().unwrap().len())
            .sum();
        assert_eq!(n, 88);
        let r = &vars["precipitation"]["refs"][0];
        assert_eq!(r["chunk"][0].as_u64(), Some(t));
        assert!(r["offset"].as_u64().unwrap() > 0 && r["length"].as_u64().unwrap() > 0);
        assert_eq!(
            vars["precipitation"]["zarr"]["shape"],
            serde_json::json!([1, 3600, 1800])
        );
        assert_eq!(g["coords"]["time"]["calendar"], "julian");
        assert_eq!(g["coords"]["lat"]["values"].as_array().unwrap().len(), 1800);
    }
    assert_eq!(lines[2]["reason"], "not_hdf5");
    assert!(
        lines[2]["error"]
            .as_str()
            .unwrap()
            .contains("not an HDF5 file")
    );
    assert!(
        lines[2]["key"]
            .as_str()
            .unwrap()
            .ends_with(".0360.V07B.HDF5")
    );

    // Human summary and a usage error.
    let out = bin().arg("virtualize").arg(&files[0]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("OK GPM_L3/"));
    let out = bin()
        .args([
            "synth",
            "--start",
            "2021-03-05",
            "--end",
            "2021-03-04",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("end"));
}

#[test]
fn profile_prints_loadable_json() {
    let out = bin()
        .args(["--product", "late", "profile"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("late.json");
    std::fs::write(&p, &out.stdout).unwrap();
    let again = bin()
        .arg("--product-profile")
        .arg(&p)
        .arg("profile")
        .output()
        .unwrap();
    assert_eq!(again.stdout, out.stdout);
    let bad = bin()
        .args(["--product", "nope", "profile"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn simulate_reports_every_commit_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let out = bin()
        .args([
            "simulate",
            "--start",
            "2010-06-01",
            "--end",
            "2010-06-02",
            "--batch-size",
            "20",
            "--repo",
        ])
        .arg(&repo)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "3 commits (20 + 20 + 8) and a summary");
    assert_eq!(lines[1]["refs_before"], 20 * 88);
    assert!(
        lines[2]["seconds"].as_f64().unwrap() > 0.0 && lines[2]["rss_bytes"].as_u64().unwrap() > 0
    );
    let s = &lines[3]["summary"];
    assert_eq!(
        (
            s["granules"].as_u64(),
            s["references"].as_u64(),
            s["commits"].as_u64()
        ),
        (Some(48), Some(4224), Some(3))
    );
    let bpr = s["manifest_bytes_per_reference"].as_f64().unwrap();
    assert!(bpr > 5.0 && bpr < 30.0, "{bpr} bytes per reference");
    let st = bin()
        .args(["status", "--json", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["granules_present"], 48);
    assert_eq!(st["commits"], 3);
}

/// `inspect --layout` reports each variable's layout, index type, filters and chunks, the byte
/// ranges that are not chunk data, and what reading only the metadata cost; a file that is no
/// HDF5 is reported with its error and the exit code says so.
#[test]
fn inspect_layout_reports_indexes_filters_and_metadata_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("g");
    synth_with(
        &root,
        "2024-01-01T00:00",
        "2024-01-01T00:30",
        &["--hdf5-format", "v110", "--shuffle"],
    );
    let key = &common::keys("2024-01-01T00:00", "2024-01-01T00:30")[0];
    let path = root.join(key);
    let junk = dir.path().join("junk.HDF5");
    std::fs::write(&junk, b"<html>503</html>").unwrap();
    let out = bin()
        .args(["inspect", "--layout"])
        .arg(&path)
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let g = &lines[0];
    assert_eq!(g["size"], std::fs::metadata(&path).unwrap().len());
    assert_eq!(g["superblock_version"], 3, "{g}");
    let p = &g["datasets"][0];
    assert_eq!(p["path"], "/Grid/precipitation");
    assert_eq!(p["layout"], "chunked");
    assert_eq!(p["index"], "extensible_array", "{p}");
    assert_eq!(p["chunks"], 25);
    assert_eq!(p["filter_masks"]["0"], 25);
    let filters: Vec<u64> = p["filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_u64().unwrap())
        .collect();
    assert_eq!(filters, vec![2, 1], "shuffle then deflate: {p}");
    let total: u64 = g["datasets"].as_array().unwrap()[..4]
        .iter()
        .map(|d| d["chunks"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 88);
    assert!(g["non_chunk_bytes"].as_u64().unwrap() > 0);
    assert!(
        g["metadata_ranges"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    );
    assert!(g["fetch"]["gets"].as_u64().unwrap() >= 1);
    assert!(g["fetch"]["round_trips"].as_u64().unwrap() >= 1);
    assert!(
        lines[1]["error"]
            .as_str()
            .unwrap()
            .contains("not an HDF5 file"),
        "{}",
        lines[1]
    );
}

/// What a person runs and reads: every one-shot subcommand, run on a fresh local repository,
/// prints its result on stdout and nothing on stderr (no Icechunk log lines about cancelled
/// manifest pre-loads, no `unsafe_use_metadata` note when a repository is created).
#[test]
fn every_subcommand_keeps_stderr_clean() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("granules");
    synth(&src, "2021-03-04T05:00", "2021-03-04T06:00");
    let day = src.join("GPM_L3/GPM_3IMERGHH.07/2021/063");
    let files: Vec<_> = std::fs::read_dir(&day)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let repo = dir.path().join("repo");
    let native = dir.path().join("native");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (repo_s, native_s, src_s) = (path(&repo), path(&native), path(&src));
    let range = ["--start", "2021-03-04T05:00", "--end", "2021-03-04T06:00"];
    let mut runs: Vec<Vec<String>> = vec![
        vec!["profile".into()],
        vec![
            "synth".into(),
            "--out".into(),
            path(&dir.path().join("more")),
        ],
        vec!["append".into(), "--repo".into(), repo_s.clone()],
        vec!["status".into(), "--repo".into(), repo_s.clone()],
        vec!["virtualize".into(), "--json".into()],
        vec!["inspect".into(), "--layout".into()],
        vec!["verify".into(), "--repo".into(), repo_s.clone()],
        vec![
            "rechunk".into(),
            "--from".into(),
            repo_s.clone(),
            "--to".into(),
            native_s,
        ],
        vec![
            "simulate".into(),
            "--repo".into(),
            path(&dir.path().join("sim")),
            "--source-root".into(),
            src_s,
        ],
        vec!["status".into(), "--repo".into(), repo_s],
    ];
    for r in &mut runs {
        match r[0].as_str() {
            "append" | "virtualize" | "inspect" => {
                r.extend(files.iter().map(|f| path(f)));
            }
            "verify" | "rechunk" | "simulate" | "synth" => {
                r.extend(range.iter().map(|s| s.to_string()))
            }
            _ => {}
        }
    }
    for args in &runs {
        let out = bin().args(args).output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
        assert!(!stdout.trim().is_empty(), "{args:?} printed nothing");
        // Progress lines (stderr, as progress goes) are all a run without a terminal adds.
        let noise: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.starts_with("rechunk: "))
            .collect();
        assert!(noise.is_empty(), "{args:?} wrote to stderr:\n{stderr}");
    }
}

/// Review M5a: Icechunk's local storage has no conditional writes, so a second writer on the
/// same directory (the documented `append` beside a running `serve`) could replace commits the
/// first had acknowledged. The committer holds `<repo>.writer.lock`; a second writer is refused
/// with one clear line, and the lock goes with the process.
#[test]
fn a_second_writer_on_a_local_repository_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The embedded default's granule directory (its repository's container).
    let src = data.join("granules");
    common::synth(&src, "2024-04-01T00:00", "2024-04-01T00:30");
    let granule = src.join(&common::keys("2024-04-01T00:00", "2024-04-01T00:30")[0]);
    let mut server = common::Server::spawn(&data, &[], &[]);
    let repo = data.join("repo");
    let append = || {
        common::bin()
            .args(["append", "--repo"])
            .arg(&repo)
            .arg("--source-root")
            .arg(&src)
            .arg(&granule)
            .output()
            .unwrap()
    };
    let out = append();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let says = "another process writes to the repository";
    assert_eq!(stderr.matches(says).count(), 1, "{stderr}");
    assert!(stderr.contains("repo.writer.lock"), "{stderr}");
    // A second service on the same data directory is refused the same way.
    let second = common::bin()
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains(says));
    server.signal("-KILL");
    server.child.wait().unwrap();
    let out = append();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Review L7: `append --snapshot-retention 0s` expired what a reader had just opened; an hour
/// is the least accepted (`serve` refuses the same, and keeps 7d by default).
#[test]
fn append_refuses_a_retention_under_an_hour() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["append", "--snapshot-retention", "0s", "--repo"])
        .arg(dir.path().join("repo"))
        .arg(dir.path().join("x.HDF5"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 1h"), "{stderr}");
}
