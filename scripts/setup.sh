#!/usr/bin/env bash
# Installs what building and testing imerg-ingest needs on a fresh Debian machine, idempotently:
#   system packages: libhdf5-dev + pkg-config (HDF5 1.10 for hdf5-metno), protobuf-compiler (gRPC codegen),
#   prometheus (promtool, for tests/deploy)
#   with --python: a Python 3.12 venv with the real reader stack (tests/python/requirements.txt)
# Source it (`. scripts/setup.sh [--python]`) to get CARGO_TARGET_DIR and IMERG_PYTHON exported.
set -euo pipefail

_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/imerg-ingest/target}"

_need_apt=()
for pkg in libhdf5-dev pkg-config protobuf-compiler; do
  dpkg -s "$pkg" >/dev/null 2>&1 || _need_apt+=("$pkg")
done
# promtool, for the alert-rule checks of the deployment test (Debian ships it in prometheus).
command -v promtool >/dev/null 2>&1 || _need_apt+=(prometheus)
if [ "${#_need_apt[@]}" -gt 0 ]; then
  echo "setup: installing system packages: ${_need_apt[*]}" >&2
  _sudo=""; [ "$(id -u)" -eq 0 ] || _sudo="sudo"
  $_sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $_sudo apt-get install -y -qq "${_need_apt[@]}" >/dev/null
fi

if [ "${1:-}" = "--python" ]; then
  _req="$_root/tests/python/requirements.txt"
  _hash="$(sha256sum "$_req" | cut -c1-12)"
  _venv="${IMERG_VENV:-$HOME/.cache/imerg-ingest/venv-$_hash}"
  if [ ! -x "$_venv/bin/python" ] || [ ! -f "$_venv/.complete" ]; then
    _py=""
    # pyenv's shim answers `command -v` even when 3.12 is not the selected version: try each
    # candidate for real.
    for cand in "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 "$(command -v python3.12 || true)"; do
      if [ -n "$cand" ] && [ -x "$cand" ] && "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
        _py="$cand"; break
      fi
    done
    if [ -z "$_py" ]; then
      echo "setup: Python 3.12 not found (icechunk 2.x wheels need it); install it with pyenv" >&2
      exit 1
    fi
    echo "setup: creating the Python venv $_venv with $_py" >&2
    rm -rf "$_venv"
    "$_py" -m venv "$_venv"
    "$_venv/bin/pip" install -q --disable-pip-version-check -r "$_req"
    touch "$_venv/.complete"
  fi
  export IMERG_PYTHON="$_venv/bin/python"
fi
