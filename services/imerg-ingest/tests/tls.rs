//! TLS on the gRPC port (review M10): with `--tls-cert-file`/`--tls-key-file` the committer
//! serves gRPC over TLS only; a plaintext client is refused, the operator CLI connects with
//! `https://` and `--tls-ca-file`, and a listener in another process hands its granules to the
//! committer over TLS, verifying its certificate. The certificates come from the openssl CLI
//! (a CA and a server certificate for localhost).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::{Server, bin, keys, synth};

/// A CA and a certificate for `localhost` / 127.0.0.1 signed by it, in `dir`: (ca, cert, key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl CLI is needed to make the test certificates");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=imerg-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[test]
fn grpc_over_tls_refuses_plaintext_and_carries_the_roles_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let (ca, cert, key) = (
        ca.to_str().unwrap().to_string(),
        cert.to_str().unwrap().to_string(),
        key.to_str().unwrap().to_string(),
    );
    let cdata = dir.path().join("committer");
    std::fs::create_dir_all(&cdata).unwrap();
    let committer = Server::spawn(
        &cdata,
        &[
            "--roles",
            "committer,api,worker",
            "--watch",
            "false",
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
        ],
        &[],
    );
    let port = committer.grpc.rsplit(':').next().unwrap().to_string();
    let https = format!("https://127.0.0.1:{port}");

    // Plaintext is refused.
    let plain = bin()
        .args(["backfill", "--list", "--server", &committer.grpc])
        .output()
        .unwrap();
    assert!(!plain.status.success(), "plaintext was served");
    // The CLI over TLS, verifying the certificate; without the CA it cannot.
    let list = bin()
        .args([
            "backfill",
            "--list",
            "--server",
            &https,
            "--tls-ca-file",
            &ca,
        ])
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let no_ca = bin()
        .args(["backfill", "--list", "--server", &https])
        .output()
        .unwrap();
    assert!(!no_ca.status.success());
    assert!(String::from_utf8_lossy(&no_ca.stderr).contains("--tls-ca-file"));

    // A listener in another process appends over TLS.
    let granules = cdata.join("granules");
    let ldata = dir.path().join("listener");
    std::fs::create_dir_all(&ldata).unwrap();
    let repo = cdata.join("repo");
    let _listener = Server::spawn(
        &ldata,
        &[
            "--roles",
            "listener,worker",
            "--repo",
            repo.to_str().unwrap(),
            "--source",
            granules.to_str().unwrap(),
            "--watch-interval",
            "100ms",
            "--committer-addr",
            &https,
            "--tls-ca-file",
            &ca,
        ],
        &[],
    );
    synth(&granules, "2024-09-01T00:00", "2024-09-01T01:00");
    assert_eq!(keys("2024-09-01T00:00", "2024-09-01T01:00").len(), 2);
    committer.wait_added(2);
}
