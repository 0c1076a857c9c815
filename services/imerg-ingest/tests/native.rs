//! The native time-series store, end to end: granules of three days (the second missing)
//! appended to the virtual store out of order
//! and with a duplicate, the service's `native` role following it and SIGKILLed in the middle of
//! an update (crash point `native_mid_update`), then a late granule, a new one and a replaced one
//! appended, the writer restarted; its lag metric returns to 0, `status` and `GetStatus` report
//! the native store's coverage, and the Python reader finds the native store equal to the virtual
//! store, value for value and bit for bit. Then `rechunk` builds a second native store from
//! scratch (two `--shard` jobs, one re-run) that reads back the same.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{Server, bin, keys, metric_opt, python, synth, synth_with};

/// Runs `cmd`, asserts it succeeded, returns its stdout.
fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn append(repo: &Path, files: &[PathBuf]) {
    run_ok(
        bin()
            .args(["append", "--repo"])
            .arg(repo)
            .arg("--source-root")
            .arg(repo.parent().unwrap().join("granules"))
            .args(files),
    );
}

fn status_json(virt: &Path, native: &Path) -> serde_json::Value {
    let out = run_ok(
        bin()
            .args(["status", "--json", "--repo"])
            .arg(virt)
            .arg("--native-repo")
            .arg(native),
    );
    serde_json::from_slice(&out).unwrap()
}

/// Runs tests/python/compare_native.py and returns its last line (JSON).
fn compare(dir: &Path, virt: &Path, container: &Path, native: &Path) -> serde_json::Value {
    let expect = serde_json::json!({
        "virtual_repo": virt,
        "container": format!("file://{}/", container.display()),
        "native_repo": native,
    });
    let path = dir.join(format!(
        "compare-{}.json",
        native.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&path, expect.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/compare_native.py");
    let out = Command::new(python())
        .arg(script)
        .arg(&path)
        // zarr's fused codec pipeline reads sharded arrays ~2.5x faster (compare_native.py).
        .env("IMERG_COMPARE_ZARR_PIPELINE", "fused")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim_end().lines().last().unwrap()).unwrap()
}

#[test]
fn the_native_store_follows_the_virtual_store_through_a_crash_and_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (granules, virt, native) = (
        data.join("granules"),
        data.join("repo"),
        data.join("native"),
    );
    // Three days: six granules on the first, none on the second, six on the third.
    synth(&granules, "2020-01-01", "2020-01-01T03:00");
    synth(&granules, "2020-01-03", "2020-01-03T03:00");
    let replacement = data.join("replacement");
    synth_with(
        &replacement,
        "2020-01-01T01:00",
        "2020-01-01T01:30",
        &["--realistic"],
    );
    let all: Vec<PathBuf> = keys("2020-01-01", "2020-01-01T03:00")
        .iter()
        .chain(&keys("2020-01-03", "2020-01-03T03:00"))
        .map(|k| granules.join(k))
        .collect();
    // Shuffled, with a duplicate; 01-03 00:00 (late) and 01-03 02:30 (new) come later, 01-01
    // 01:30 never (a gap, besides the whole second day).
    let order = [7usize, 2, 9, 0, 4, 1, 8, 2, 10, 5];
    append(
        &virt,
        &order.iter().map(|i| all[*i].clone()).collect::<Vec<_>>(),
    );

    // The writer, killed in the middle of its first update (80 columns: 4 variables x 20).
    let native_args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--roles",
            "native",
            "--repo",
            virt.to_str().unwrap(),
            "--native-repo",
            native.to_str().unwrap(),
            "--native-lag",
            "0s",
            "--native-poll",
            "200ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let args = native_args(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut first = Server::spawn(data, &args, &[("IMERG_CRASH_AT", "native_mid_update@30")]);
    let started = Instant::now();
    let exit = loop {
        if let Some(s) = first.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the writer did not reach its crash point (a build without --features imerg-ingest/crashpoints?)"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!exit.success(), "killed, not stopped: {exit:?}");
    let log = std::fs::read_to_string(&first.log).unwrap();
    assert!(log.contains("crash point native_mid_update"), "{log}");
    let st = status_json(&virt, &native);
    assert!(
        st["native"]["virtual_snapshot"].is_null(),
        "a killed update recorded nothing: {st}"
    );

    // Meanwhile the virtual store gets a late granule, a new one and a replaced one.
    append(&virt, &[all[6].clone(), all[11].clone()]);
    let key_0100 = &keys("2020-01-01T01:00", "2020-01-01T01:30")[0];
    std::fs::copy(replacement.join(key_0100), granules.join(key_0100)).unwrap();
    append(&virt, &[granules.join(key_0100)]);

    let second = Server::spawn(data, &args, &[]);
    let started = Instant::now();
    let virtual_tip = loop {
        let st = status_json(&virt, &native);
        let tip = st["last_commit"]["id"].as_str().unwrap().to_string();
        if st["native"]["virtual_snapshot"] == tip.as_str() {
            break tip;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the native store did not catch up: {st}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let (_, metrics) = second.get("/metrics");
    assert_eq!(
        metric_opt(&metrics, "imerg_native_lag_seconds"),
        Some(0.0),
        "{metrics}"
    );
    let st = status_json(&virt, &native);
    assert_eq!(st["native"]["granules_present"], 11, "{st}");
    assert_eq!(st["native"]["lag_seconds"], 0.0, "{st}");
    assert_eq!(st["native"]["virtual_snapshot"], virtual_tip.as_str());

    let result = compare(data, &virt, &granules, &native);
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(
        result["compared_steps"], 102,
        "11 granules and the 91 missing steps between them: {result}"
    );
    drop(second);

    // The batch rechunk of the same virtual store, as two jobs and a re-run, reads the same.
    let rechunked = data.join("rechunked");
    let run = |extra: &[&str]| -> serde_json::Value {
        let out = run_ok(
            bin()
                .args(["rechunk", "--json", "--from"])
                .arg(&virt)
                .arg("--to")
                .arg(&rechunked)
                .args(extra),
        );
        serde_json::from_slice(&out).unwrap()
    };
    let a = run(&["--shard", "0/2"]);
    let b = run(&["--shard", "1/2"]);
    assert_eq!(
        a["regions"].as_u64().unwrap() + b["regions"].as_u64().unwrap(),
        20
    );
    let again = run(&[]);
    assert_eq!(again["regions_written"], 0, "everything was done: {again}");
    assert_eq!(again["regions_skipped"], 20, "{again}");
    assert_eq!(again["complete"], true, "{again}");
    let result = compare(data, &virt, &granules, &rechunked);
    assert_eq!(result["ok"], true, "{result}");
}
