#!/usr/bin/env bash
# Runs the service with no cloud at all (the embedded default): every role in one process on
# loopback, a local repository in ./imerg-data/repo and a local granule directory in
# ./imerg-data/granules (bucket layout) that is watched for new files. --demo first writes a day
# of synthetic granules there, which the service then ingests. Extra arguments go to `serve`.
# First, scripts/setup.sh checks Rust and installs the build's system packages (nothing only the
# tests need), then this builds the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR/..
. scripts/setup.sh
echo "== cargo build --release -p imerg-ingest: the first release build takes 10-25 minutes on 2 cores (later ones only what changed); the binary goes to $CARGO_TARGET_DIR/release/imerg-ingest" >&2
cargo build --release -p imerg-ingest
exec "$CARGO_TARGET_DIR/release/imerg-ingest" serve --demo "$@"
