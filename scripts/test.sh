#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs (scripts/setup.sh --test: system
# packages, promtool, the Python 3.12-or-newer reader venv; Rust itself must be there, setup.sh says
# how to get it), then checks formatting and lints and runs every test, the Python interop tests
# included. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR/..
. scripts/setup.sh --test
echo "== cargo fmt --check"
cargo fmt --all --check
# The crash-safety tests need the binary's crash points (a test-only feature, never in release
# builds); clippy checks the same feature set, so the build is shared.
features=(--features imerg-ingest/crashpoints)
echo "== cargo clippy --all-targets -- -D warnings (the first build takes ~15 minutes on 2 cores)"
cargo clippy --workspace --all-targets "${features[@]}" -- -D warnings
echo "== tests"
log="$(mktemp)"
set +e
if command -v cargo-nextest >/dev/null 2>&1; then
  # Each test in its own process, binaries side by side, the longest first (.config/nextest.toml).
  echo "== cargo nextest run (and the doc tests)"
  cargo nextest run --workspace "${features[@]}" --no-fail-fast 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  cargo test --workspace "${features[@]}" --doc 2>&1 | tee -a "$log"
  rc_doc=${PIPESTATUS[0]}
  set -e
  # One closing line for the whole suite: nextest's summary plus the doc tests.
  awk '/Summary \[/ {for (i = 1; i <= NF; i++) if ($i ~ /^passed/) p += $(i-1); for (i = 1; i <= NF; i++) if ($i ~ /^failed/) f += $(i-1)}
       /^test result:/ {p += $4; f += $6}
       END {printf "%d passed, %d failed\n", p, f}' "$log"
  rm -f "$log"
  [ "$rc" -eq 0 ] && [ "$rc_doc" -eq 0 ]
  exit $?
fi
echo "== cargo test (cargo-nextest is not installed: test binaries run one after the other)"
cargo test --workspace "${features[@]}" --no-fail-fast 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary, the last usually a
# doc-test run with nothing in it).
awk '/^test result:/ {p += $4; f += $6} END {printf "%d passed, %d failed\n", p, f}' "$log"
rm -f "$log"
exit "$rc"
