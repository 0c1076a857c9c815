#!/usr/bin/env bash
# Checks and installs what building imerg-ingest (and, with --test, testing it) needs on a Debian
# machine, idempotently. It says what it will install before doing it; every message is a
# "setup: ..." line on stderr.
#   Rust: checks that cargo is on PATH (or in ~/.cargo/bin, then added to PATH) and new enough
#     (Cargo.toml's rust-version; rustup installs the toolchain rust-toolchain.toml pins by
#     itself); it never installs Rust, it says how.
#   system packages (apt-get, as root or with sudo): libhdf5-dev + pkg-config (HDF5 for
#     hdf5-metno), protobuf-compiler (gRPC codegen)
#   with --test (scripts/test.sh; --python is the same): promtool for tests/deploy (package
#     promtool, or prometheus before Debian 13), chromium and tesseract-ocr (the status page
#     checked as a person sees it, tests/python/check_status_page.py), openssl (the TLS test's
#     certificates), and a venv of Python 3.12
#     or newer (icechunk 2.x wheels need it) with the real reader stack,
#     tests/python/requirements.txt, in ~/.cache/imerg-ingest/venv-<requirements hash>-py3.X
#     (IMERG_VENV overrides the path, IMERG_PYTHON_BIN the interpreter; Debian's python3 gets its
#     python3.X-venv package); warns when cargo-nextest is missing (the tests then run with
#     `cargo test`).
# Source it (`. scripts/setup.sh [--test]`) to get PATH, CARGO_TARGET_DIR and, with --test,
# IMERG_PYTHON exported.
set -euo pipefail

_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_test=0
case "${1:-}" in
  --test | --python) _test=1 ;;
  "") ;;
  *)
    echo "setup: unknown option '$1' (usage: . scripts/setup.sh [--test])" >&2
    exit 2
    ;;
esac
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/imerg-ingest/target}"

# ---- Rust: checked, never installed (rustup is a per-user install that changes the shell's PATH).
_rust_min="$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$_root/Cargo.toml" | head -n1)"
_rust_pin=""
[ -f "$_root/rust-toolchain.toml" ] &&
  _rust_pin="$(sed -n 's/^channel *= *"\([^"]*\)".*/\1/p' "$_root/rust-toolchain.toml" | head -n1)"
if [ -n "$_rust_min" ]; then
  _rust_need="Rust $_rust_min or newer (rust-version in Cargo.toml)"
else
  _rust_need="Rust ${_rust_pin:-stable} (the toolchain in rust-toolchain.toml)"
fi
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  {
    echo "setup: cargo is not installed (not on PATH, not in ~/.cargo/bin): imerg-ingest needs $_rust_need."
    echo "setup: get Rust with rustup, which also installs the toolchain rust-toolchain.toml pins${_rust_pin:+ ($_rust_pin)} on the first build:"
    echo "setup:   curl https://sh.rustup.rs -sSf | sh     (then open a new shell, or run: . \"\$HOME/.cargo/env\")"
    echo "setup:   or, on Debian 13 (trixie) and newer: sudo apt-get install rustup   (it replaces Debian's cargo and rustc packages)"
    echo "setup: then run this script again."
  } >&2
  exit 1
fi
# rustup's cargo runs the toolchain rust-toolchain.toml pins; any other cargo (Debian's cargo
# package, for one) must be new enough by itself.
if ! { command -v rustup >/dev/null 2>&1 && [ "$(command -v cargo)" -ef "$(command -v rustup)" ]; } &&
  [ -n "$_rust_min" ]; then
  _cargo_ver="$(cargo --version 2>/dev/null | awk '{print $2}')"
  _cargo_ver="${_cargo_ver%%-*}"
  if [ -z "$_cargo_ver" ] ||
    [ "$(printf '%s\n%s\n' "$_rust_min" "$_cargo_ver" | sort -V | head -n1)" != "$_rust_min" ]; then
    {
      echo "setup: $(command -v cargo) is cargo ${_cargo_ver:-of an unknown version}, not managed by rustup: imerg-ingest needs $_rust_need."
      echo "setup: install rustup (curl https://sh.rustup.rs -sSf | sh, or on Debian 13 and newer: sudo apt-get install rustup)"
      echo "setup: and run this script again."
    } >&2
    exit 1
  fi
fi
if [ "$_test" = 1 ] && ! command -v cargo-nextest >/dev/null 2>&1; then
  {
    echo "setup: warning: cargo-nextest is not installed: the tests still run, with plain \`cargo test\` (one test binary after the other, slower)."
    echo "setup:   to install it: cargo install cargo-nextest --locked   (or a prebuilt binary: curl -LsSf https://get.nexte.st/latest/linux | tar zxf - -C \${CARGO_HOME:-~/.cargo}/bin)"
  } >&2
fi

# ---- What to install: decided in full first, then said in one go, then done.
_need_apt=()
for pkg in libhdf5-dev pkg-config protobuf-compiler; do
  dpkg -s "$pkg" >/dev/null 2>&1 || _need_apt+=("$pkg")
done

_venv=""
if [ "$_test" = 1 ]; then
  # promtool, for the alert-rule checks of the deployment test: its own package from Debian 13 on,
  # part of the prometheus package before (which would also install the Prometheus server).
  if ! command -v promtool >/dev/null 2>&1; then
    if apt-cache show promtool >/dev/null 2>&1; then _need_apt+=(promtool); else _need_apt+=(prometheus); fi
  fi
  # Headless Chromium and tesseract's OCR: the status page test (tests/python/check_status_page.py).
  command -v chromium >/dev/null 2>&1 || _need_apt+=(chromium)
  command -v tesseract >/dev/null 2>&1 || _need_apt+=(tesseract-ocr)
  # The openssl CLI: the TLS test's certificates (services/imerg-ingest/tests/tls.rs).
  command -v openssl >/dev/null 2>&1 || _need_apt+=(openssl)

  # Python 3.12 or newer: IMERG_PYTHON_BIN alone when set; otherwise pyenv's builds (3.12 first, as
  # CI has used, then newer; the newest patch of each), /usr/local's, then python3 on PATH and
  # Debian's. Each candidate is run: pyenv's shim answers `command -v` whatever it selects.
  _cands=()
  if [ -n "${IMERG_PYTHON_BIN:-}" ]; then
    _cands=("$IMERG_PYTHON_BIN")
  else
    _pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
    _pyenv_vers=()
    for _d in "$_pyenv_root"/versions/3.*; do
      [[ "${_d##*/}" =~ ^3\.(1[2-9]|[2-9][0-9])\.[0-9]+$ ]] && _pyenv_vers+=("${_d##*/}")
    done
    if [ "${#_pyenv_vers[@]}" -gt 0 ]; then
      while IFS= read -r _v; do
        _cands+=("$_pyenv_root/versions/$_v/bin/python3")
      done < <(printf '%s\n' "${_pyenv_vers[@]}" | sort -t. -k2,2n -k3,3nr)
    fi
    for _minor in 12 13 14 15 16 17 18 19; do _cands+=("/usr/local/bin/python3.$_minor"); done
    _cands+=("$(command -v python3 || true)" /usr/bin/python3)
  fi
  _py=""
  _py_ver=""
  _tried=()
  _seen=" "
  for _cand in "${_cands[@]}"; do
    if [ -z "$_cand" ] || [ ! -x "$_cand" ]; then continue; fi
    case "$_seen" in *" $_cand "*) continue ;; esac
    _seen="$_seen$_cand "
    if _py_ver="$("$_cand" -c 'import sys; assert sys.version_info >= (3, 12); print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"; then
      _py="$_cand"
      break
    fi
    _tried+=("$_cand ($("$_cand" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || echo "does not run"))")
  done
  if [ -z "$_py" ]; then
    _tried_s="$(printf '%s, ' "${_tried[@]}")"
    _tried_s="${_tried_s%, }"
    {
      if [ -n "${IMERG_PYTHON_BIN:-}" ]; then
        echo "setup: IMERG_PYTHON_BIN=$IMERG_PYTHON_BIN is not a Python 3.12 or newer${_tried_s:+: $_tried_s}."
      else
        echo "setup: no Python 3.12 or newer found (the test venv needs it: icechunk 2.x wheels need 3.12 or newer)."
        echo "setup: looked at ${_pyenv_root}/versions/3.1[2-9].*, /usr/local/bin/python3.1[2-9], python3 on PATH and /usr/bin/python3${_tried_s:+; found: $_tried_s}."
      fi
      echo "setup: get one, then run this script again:"
      echo "setup:   Debian 13 (trixie) and newer: its python3 is 3.13 (sudo apt-get install python3; this script adds python3.13-venv)"
      echo "setup:   Debian 12 and older: pyenv (https://github.com/pyenv/pyenv#installation), then: pyenv install 3.12"
      echo "setup:   or any Python 3.12 or newer: IMERG_PYTHON_BIN=/path/to/python3 ./scripts/test.sh"
    } >&2
    exit 1
  fi
  _req="$_root/tests/python/requirements.txt"
  _hash="$(sha256sum "$_req" | cut -c1-12)"
  _venv="${IMERG_VENV:-$HOME/.cache/imerg-ingest/venv-$_hash-py$_py_ver}"
  # The venv is complete once pip has installed everything, for these requirements and this Python.
  _stamp="$_hash py$_py_ver"
  if [ -x "$_venv/bin/python" ] && [ "$(cat "$_venv/.complete" 2>/dev/null)" = "$_stamp" ]; then
    _venv_ready=1
  else
    _venv_ready=0
    # Debian's Python keeps ensurepip (which `python -m venv` needs) in python3.X-venv.
    if ! "$_py" -c 'import ensurepip' >/dev/null 2>&1; then
      case "$(readlink -f "$_py")" in
        /usr/bin/*) dpkg -s "python$_py_ver-venv" >/dev/null 2>&1 || _need_apt+=("python$_py_ver-venv") ;;
      esac
    fi
  fi
fi

if [ "${#_need_apt[@]}" -gt 0 ]; then
  _sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "setup: missing system packages and no sudo: as root, run apt-get install ${_need_apt[*]}" >&2
      exit 1
    fi
    _sudo="sudo"
  fi
  echo "setup: will install system packages with ${_sudo:+sudo }apt-get: ${_need_apt[*]}" >&2
fi
if [ -n "$_venv" ] && [ "$_venv_ready" = 0 ]; then
  echo "setup: will create the Python $_py_ver venv $_venv (from $_py) with pip install -r ${_req#"$_root"/} (about 90 packages, 900 MB; a minute or a few)" >&2
fi

if [ "${#_need_apt[@]}" -gt 0 ]; then
  # env: sudo does not pass the caller's environment on.
  $_sudo apt-get update -qq
  $_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${_need_apt[@]}" >/dev/null
fi
if [ -n "$_venv" ]; then
  if [ "$_venv_ready" = 0 ]; then
    rm -rf "$_venv"
    "$_py" -m venv "$_venv"
    "$_venv/bin/pip" install -q --disable-pip-version-check -r "$_req"
    echo "$_stamp" >"$_venv/.complete"
    echo "setup: the Python venv is ready: $_venv" >&2
  fi
  export IMERG_PYTHON="$_venv/bin/python"
fi
