#!/usr/bin/env bash
# Runs imerg-ingest's main job with no cloud at all: writes a few hours of synthetic granules into a
# local directory in the bucket layout and prints the exact virtual references of each.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
cargo build --release --quiet -p imerg-ingest
bin="$CARGO_TARGET_DIR/release/imerg-ingest"
data="${IMERG_DEMO_DIR:-$PWD/demo-data}"
"$bin" synth --start 2024-07-01T00:00 --end 2024-07-01T03:00 --out "$data/granules"
"$bin" virtualize "$data"/granules/GPM_L3/GPM_3IMERGHH.07/2024/183/*.HDF5
