//! Deployment checks: runs tests/deploy/check_deploy.py (the test venv's Python) over Dockerfile,
//! .dockerignore and deploy/ with this build's binary and the metric names the service exports
//! (`imerg_metrics::ALL`). The checker validates the manifests against the Kubernetes, KEDA and
//! Prometheus Operator schemas, runs promtool on the alerts and dashboard queries, cfn-lint on the
//! infrastructure template, hadolint on the Dockerfile, and checks the runtime image's packages
//! against the binary's shared libraries. A missing tool fails the test; nothing is skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn deployment_files_match_the_service() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("tests/deploy/check_deploy.py");
    let out = Command::new(common::python())
        .arg(&script)
        .arg("--root")
        .arg(&root)
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_imerg-ingest"))
        .arg("--metrics")
        .arg(imerg_metrics::ALL.join(","))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("OK"),
        "check_deploy.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// scripts/setup.sh's decisions for a newcomer (Rust missing or too old, which packages each
/// mode installs, Python 3.12 or newer, the venv's name): tests/scripts/check_setup.sh runs it
/// against stand-ins for apt, cargo and Python, since the real ones would change this machine.
#[test]
fn setup_checks_rust_and_python_and_installs_test_tools_only_for_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // A newcomer's shell: none of the variables cargo sets for its tests (CARGO_TARGET_DIR,
    // CARGO_HOME, RUSTUP_TOOLCHAIN...).
    let out = Command::new("bash")
        .arg(root.join("tests/scripts/check_setup.sh"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains(" passed, 0 failed"), "{text}");
}
