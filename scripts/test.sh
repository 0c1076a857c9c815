#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs (system packages, the Python
# 3.12 reader venv), then checks formatting and lints and runs every test, the Python interop
# tests included. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh --python
echo "== cargo fmt --check"
cargo fmt --all --check
# The crash-safety tests need the binary's crash points (a test-only feature, never in release
# builds); clippy checks the same feature set, so the build is shared.
features=(--features imerg-ingest/crashpoints)
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets "${features[@]}" --quiet -- -D warnings
echo "== cargo test"
log="$(mktemp)"
set +e
cargo test --workspace "${features[@]}" --no-fail-fast 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary, the last usually a
# doc-test run with nothing in it).
awk '/^test result:/ {p += $4; f += $6} END {printf "%d passed, %d failed\n", p, f}' "$log"
rm -f "$log"
exit "$rc"
