//! The gRPC API as the ecosystem's tools judge it: `buf lint` (STANDARD rules, no exceptions)
//! and `buf breaking` against proto/api-baseline.binpb, the API as last released, which a
//! breaking change fails (shown on a copy of proto/ with a field renamed). buf comes from npm
//! (@bufbuild/buf, installed on first use under ~/.cache/imerg-ingest); a machine where it cannot
//! be installed fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BUF_VERSION: &str = "1.75.0";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The buf binary: `$IMERG_BUF`, or npm's @bufbuild/buf installed under the cache.
fn buf() -> PathBuf {
    if let Some(p) = std::env::var_os("IMERG_BUF") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").expect("HOME");
    let dir = Path::new(&home).join(format!(".cache/imerg-ingest/buf-{BUF_VERSION}"));
    let bin = dir.join("node_modules/.bin/buf");
    if !bin.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&dir)
            .arg(format!("@bufbuild/buf@{BUF_VERSION}"))
            .output()
            .unwrap_or_else(|e| {
                panic!("buf comes from npm (@bufbuild/buf), and npm cannot run here: {e}")
            });
        assert!(
            out.status.success() && bin.exists(),
            "npm install @bufbuild/buf@{BUF_VERSION} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    bin
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(buf())
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_api_passes_buf_lint_and_breaking_and_breaking_catches_a_renamed_field() {
    let root = root();
    let lint = run(&root, &["lint"]);
    assert!(lint.status.success(), "buf lint:\n{}", text(&lint));
    let breaking = run(
        &root,
        &["breaking", "--against", "proto/api-baseline.binpb"],
    );
    assert!(
        breaking.status.success(),
        "buf breaking against the released API:\n{}",
        text(&breaking)
    );

    // A copy of the API with one field renamed is a breaking change.
    let copy = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(root.join("proto"))
        .arg(root.join("buf.yaml"))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    let ingest = copy.path().join("proto/imerg/ingest/v1/ingest.proto");
    let proto = std::fs::read_to_string(&ingest).unwrap();
    assert!(proto.contains("string request_id = 4;"));
    std::fs::write(
        &ingest,
        proto.replace("string request_id = 4;", "string request_key = 4;"),
    )
    .unwrap();
    let broken = run(
        copy.path(),
        &["breaking", "--against", "proto/api-baseline.binpb"],
    );
    assert!(!broken.status.success(), "{}", text(&broken));
    assert!(text(&broken).contains("request_id"), "{}", text(&broken));
}
