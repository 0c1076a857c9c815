#!/usr/bin/env bash
# Runs the service with no cloud at all (the embedded default): every role in one process on
# loopback, a local repository in ./imerg-data/repo and a local granule directory in
# ./imerg-data/granules (bucket layout) that is watched for new files. --demo first writes a day
# of synthetic granules there, which the service then ingests. Extra arguments go to `serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
cargo build --release --quiet -p imerg-ingest
exec "$CARGO_TARGET_DIR/release/imerg-ingest" serve --demo "$@"
