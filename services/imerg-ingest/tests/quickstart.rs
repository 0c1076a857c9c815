//! The scientists' first step, as the README shows it: the embedded demo ingests a day, then
//! `examples/quickstart.py` opens its store with icechunk + xarray and saves a map and a time
//! series as PNGs, printing the citation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

/// Width and height from a PNG's IHDR chunk (after checking the signature).
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn the_quickstart_draws_a_map_and_a_time_series_from_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::Server::spawn(dir.path(), &["--demo"], &[]);
    server.wait_added(48);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart.py");
    let out_dir = dir.path().join("pictures");
    let out = Command::new(common::python())
        .arg(&script)
        .arg(dir.path())
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("48 granules from 2025-09-30T00:00"),
        "{stdout}"
    );
    assert!(
        stdout.contains("https://doi.org/10.5067/GPM/IMERG/3B-HH/07"),
        "{stdout}"
    );
    assert!(stdout.contains("(48 steps, max "), "{stdout}");
    // A reader sees no warnings: icechunk's log lines are filtered, nothing is deprecated.
    assert!(stderr.trim().is_empty(), "{stderr}");
    assert_eq!(png_size(&out_dir.join("quickstart-map.png")), (800, 400));
    assert_eq!(png_size(&out_dir.join("quickstart-series.png")), (800, 280));
    // The series is not flat: the wettest cell of the map is wet in its own half hour.
    let max: f64 = stdout
        .split("max ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(max > 1.0, "{stdout}");
    server.signal("-TERM");
    assert!(server.child.wait().unwrap().success());
}
