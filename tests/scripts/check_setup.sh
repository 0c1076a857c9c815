#!/usr/bin/env bash
# Checks scripts/setup.sh's decisions without installing anything and without running the real
# cargo, apt-get or pip: each case runs it from a copy of the files it reads (Cargo.toml,
# rust-toolchain.toml, tests/python/requirements.txt), under a throwaway HOME and PYENV_ROOT, with a
# PATH of stand-ins (cargo, rustup, dpkg, apt-cache, apt-get, sudo, id, promtool, chromium,
# tesseract, cargo-nextest, pyenv Pythons that run setup.sh's probes in this machine's python3 as
# another version and fake `-m venv` and pip) plus the coreutils it needs. Checked: the Rust check
# and its advice, ~/.cargo/bin, the minimum version for a cargo that is not rustup's, the nextest
# warning, which system packages each mode installs (promtool, chromium and tesseract-ocr only
# with --test), that it says what it installs
# before doing it, the choice of Python 3.12 or newer, the venv's name and idempotence, exit codes.
# Not covered here: /usr/local/bin and /usr/bin Pythons (they are this machine's), Debian's
# python3.X-venv package. Usage: bash tests/scripts/check_setup.sh (ends with "N passed, N failed").
# The stand-ins' bodies are single-quoted on purpose: they expand when the stand-ins run.
# shellcheck disable=SC2016
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

# ---- the sandbox: a copy of what setup.sh reads, coreutils, stand-ins.
mkdir -p "$work/repo/scripts" "$work/repo/tests/python" "$work/tools" "$work/stubs"
cp "$repo/scripts/setup.sh" "$work/repo/scripts/"
cp "$repo/Cargo.toml" "$work/repo/"
[ -f "$repo/rust-toolchain.toml" ] && cp "$repo/rust-toolchain.toml" "$work/repo/"
cp "$repo/tests/python/requirements.txt" "$work/repo/tests/python/"
for t in bash env sed awk sort head cut cat readlink rm mkdir ln grep sha256sum dirname basename chmod touch; do
  ln -s "$(command -v "$t")" "$work/tools/$t"
done
rust_min="$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$repo/Cargo.toml" | head -n1)"
req_hash="$(sha256sum "$repo/tests/python/requirements.txt" | cut -c1-12)"

stub() { # stub DIR NAME BODY: a bash script DIR/NAME
  mkdir -p "$work/$1"
  printf '#!/usr/bin/env bash\n%s\n' "$3" >"$work/$1/$2"
  chmod +x "$work/$1/$2"
}
# Every call a stand-in gets is logged on stderr, in order with setup.sh's own lines.
stub stubs dpkg 'if [ "$1" = -s ]; then
  for p in ${FAKE_INSTALLED:-}; do [ "$p" = "$2" ] && exit 0; done
fi
exit 1'
stub stubs apt-cache 'if [ "$1 $2" = "show promtool" ] && [ "${FAKE_HAS_PROMTOOL:-0}" = 1 ]; then
  echo "Package: promtool"; exit 0
fi
exit 100'
stub stubs apt-get 'echo "CALL apt-get $*" >&2'
stub stubs sudo 'echo "CALL sudo" >&2; exec "$@"'
stub stubs id 'if [ "$1" = -u ]; then echo "${FAKE_UID:-0}"; else echo "uid=${FAKE_UID:-0}"; fi'
# A cargo that is not rustup's (Debian's cargo package, say).
stub cargo-plain cargo 'echo "CALL cargo $*" >&2
[ "$1" = --version ] && echo "cargo ${FAKE_CARGO_VERSION:-1.0.0} (0000000 2026-01-01)"
exit 0'
# rustup and its cargo proxy (one file, as rustup installs them).
stub cargo-rustup rustup 'echo "CALL $(basename "$0") $*" >&2'
ln -s rustup "$work/cargo-rustup/cargo"
stub promtool promtool ''
stub chromium chromium ''
stub tesseract tesseract ''
stub openssl openssl ''
stub nextest cargo-nextest ''

# The Python stand-ins run setup.sh's probes (`-c CODE`) in a real Python with sys.version_info
# and sys.version set to the version they fake; they fake `-m venv` and its pip.
real_python="$(python3 -c 'import sys; print(sys.executable)')"
fake_python() { # fake_python PATH VERSION
  mkdir -p "$(dirname "$1")"
  cat >"$1" <<EOF
#!/usr/bin/env bash
ver=$2
real_python=$real_python
EOF
  cat >>"$1" <<'EOF'
if [ "$1" = -c ]; then
  IFS=. read -r major minor patch <<<"${ver%%[!0-9.]*}"
  exec "$real_python" -c "import sys; sys.version_info = ($major, $minor, $patch, 'final', 0); sys.version = '$ver (fake)'
$2"
fi
if [ "$1 $2" = "-m venv" ]; then
  echo "CALL python $ver -m venv $3" >&2
  mkdir -p "$3/bin"
  ln -sf "$0" "$3/bin/python"
  printf '#!/usr/bin/env bash\necho "CALL pip $*" >&2\n' >"$3/bin/pip"
  chmod +x "$3/bin/pip"
  exit 0
fi
exit 1
EOF
  chmod +x "$1"
}

# run_setup NAME [setup.sh args]: runs setup.sh, sourced by a bash that then prints what it
# exported, in a fresh HOME; output (stdout + stderr, in order) in $out, exit code in $rc.
# The environment comes from FAKE_* variables, CARGO (plain|rustup|home|none), PROMTOOL,
# CHROMIUM, TESSERACT and NEXTEST (1 = on PATH, the default), PYENV_VERSIONS, and the optional
# IMERG_PYTHON_BIN and IMERG_VENV.
run_setup() {
  local name="$1"
  shift
  local home="$work/home-$name" pyenv="$work/pyenv-$name" path="$work/stubs"
  mkdir -p "$home" "$pyenv/versions"
  case "${CARGO:-rustup}" in
    plain) path="$work/cargo-plain:$path" ;;
    rustup) path="$work/cargo-rustup:$path" ;;
    home) mkdir -p "$home/.cargo" && cp -a "$work/cargo-rustup" "$home/.cargo/bin" ;;
    none) ;;
  esac
  [ "${PROMTOOL:-1}" = 1 ] && path="$work/promtool:$path"
  [ "${CHROMIUM:-1}" = 1 ] && path="$work/chromium:$path"
  [ "${TESSERACT:-1}" = 1 ] && path="$work/tesseract:$path"
  [ "${OPENSSL:-1}" = 1 ] && path="$work/openssl:$path"
  [ "${NEXTEST:-1}" = 1 ] && path="$work/nextest:$path"
  for v in ${PYENV_VERSIONS:-3.12.1}; do
    fake_python "$pyenv/versions/$v/bin/python3" "$v"
  done
  set +e
  out="$(cd "$work/repo" && HOME="$home" PYENV_ROOT="$pyenv" PATH="$path:$work/tools" \
    IMERG_PYTHON_BIN="${IMERG_PYTHON_BIN:-}" IMERG_VENV="${IMERG_VENV:-}" \
    FAKE_INSTALLED="${FAKE_INSTALLED-libhdf5-dev pkg-config protobuf-compiler}" \
    "$work/tools/bash" -c '. scripts/setup.sh "$@" && echo "EXPORT PATH=$PATH" &&
      echo "EXPORT CARGO_TARGET_DIR=$CARGO_TARGET_DIR" && echo "EXPORT IMERG_PYTHON=${IMERG_PYTHON:-}"' _ "$@" 2>&1)"
  rc=$?
  set -e
  last_home="$home"
}

check() { # check DESCRIPTION CONDITION...: one assertion
  local what="$1"
  shift
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    printf 'FAIL: %s\n--- output:\n%s\n---\n' "$what" "$out"
  fi
}
has() { grep -qF -- "$1" <<<"$out"; }
hasnt() { ! grep -qF -- "$1" <<<"$out"; }
line_of() { grep -nF -- "$1" <<<"$out" | head -n1 | cut -d: -f1; }
before() { # before A B: A's first line comes before B's
  local a b
  a="$(line_of "$1")"
  b="$(line_of "$2")"
  [ -n "$a" ] && [ -n "$b" ] && [ "$a" -lt "$b" ]
}
rc_is() { [ "$rc" -eq "$1" ]; }

# ---- Rust
CARGO=none run_setup no-cargo
check "no cargo: exit 1" rc_is 1
check "no cargo: rustup's installer" has "curl https://sh.rustup.rs -sSf | sh"
check "no cargo: Debian's rustup package" has "apt-get install rustup"
check "no cargo: the minimum version" has "Rust $rust_min or newer"
check "no cargo: nothing installed" hasnt "CALL apt-get"

CARGO=home run_setup cargo-in-home
check "cargo in ~/.cargo/bin: found" rc_is 0
check "cargo in ~/.cargo/bin: added to PATH" has "EXPORT PATH=$last_home/.cargo/bin:"
check "rustup's cargo is not run (rust-toolchain.toml decides)" hasnt "CALL cargo"

CARGO=plain FAKE_CARGO_VERSION=1.85.1 run_setup old-cargo
check "cargo older than rust-version: exit 1" rc_is 1
check "cargo older than rust-version: says which" has "cargo 1.85.1"
check "cargo older than rust-version: advises rustup" has "sh.rustup.rs"

CARGO=plain FAKE_CARGO_VERSION=9.0.0 run_setup new-cargo
check "cargo newer than rust-version: accepted" rc_is 0

run_setup default-target
check "CARGO_TARGET_DIR defaults under ~/.cache" has "EXPORT CARGO_TARGET_DIR=$last_home/.cache/imerg-ingest/target"

run_setup bad-option --bogus
check "unknown option: exit 2" rc_is 2

# ---- system packages
PROMTOOL=0 CHROMIUM=0 TESSERACT=0 FAKE_INSTALLED="pkg-config" run_setup run-mode
check "run mode: installs the missing build packages only" has "CALL apt-get install -y -qq libhdf5-dev protobuf-compiler"
check "run mode: no promtool/prometheus" hasnt "prometheus"
check "run mode: no chromium" hasnt "chromium"
check "run mode: no tesseract-ocr" hasnt "tesseract"
check "run mode: says what it installs first" before "setup: will install system packages with apt-get: libhdf5-dev protobuf-compiler" "CALL apt-get update"
check "run mode: no Python venv" has "EXPORT IMERG_PYTHON="
check "run mode: no pip" hasnt "CALL pip"
check "run mode: no nextest warning" hasnt "cargo-nextest"

PROMTOOL=0 FAKE_HAS_PROMTOOL=1 run_setup test-promtool --test
check "--test on Debian 13+: the promtool package" has "CALL apt-get install -y -qq promtool"
PROMTOOL=0 FAKE_HAS_PROMTOOL=0 run_setup test-prometheus --test
check "--test before Debian 13: the prometheus package" has "CALL apt-get install -y -qq prometheus"
PROMTOOL=0 FAKE_HAS_PROMTOOL=0 run_setup python-flag --python
check "--python is --test" has "CALL apt-get install -y -qq prometheus"
CHROMIUM=0 TESSERACT=0 OPENSSL=0 FAKE_INSTALLED="pkg-config" run_setup test-browser --test
check "--test: chromium, tesseract-ocr and openssl with the missing build packages" has "CALL apt-get install -y -qq libhdf5-dev protobuf-compiler chromium tesseract-ocr openssl"
check "--test: says so first" before "setup: will install system packages with apt-get: libhdf5-dev protobuf-compiler chromium tesseract-ocr" "CALL apt-get update"
PROMTOOL=0 FAKE_HAS_PROMTOOL=1 CHROMIUM=0 run_setup test-chromium --test
check "--test without chromium: chromium only" has "CALL apt-get install -y -qq promtool chromium"
TESSERACT=0 run_setup test-tesseract --test
check "--test without tesseract: tesseract-ocr only" has "CALL apt-get install -y -qq tesseract-ocr"

run_setup nothing-missing --test
check "nothing missing: no apt-get" hasnt "CALL apt-get"

FAKE_UID=1000 FAKE_INSTALLED="" run_setup with-sudo
check "not root: sudo apt-get" has "CALL sudo"
check "not root: says sudo" has "with sudo apt-get"
rm "$work/stubs/sudo"
FAKE_UID=1000 FAKE_INSTALLED="" run_setup without-sudo
check "not root, no sudo: exit 1" rc_is 1
check "not root, no sudo: says to run as root" has "as root, run apt-get install libhdf5-dev pkg-config protobuf-compiler"
stub stubs sudo 'echo "CALL sudo" >&2; exec "$@"'

# ---- nextest
NEXTEST=0 run_setup no-nextest --test
check "no cargo-nextest with --test: warning" has "warning: cargo-nextest is not installed"
check "no cargo-nextest with --test: how to install" has "cargo install cargo-nextest --locked"
check "no cargo-nextest: still succeeds" rc_is 0

# ---- Python
PYENV_VERSIONS="3.11.7 3.12.1 3.12.10 3.13.0 3.13.0t" run_setup pyenv-choice --test
check "pyenv: 3.12 first, its newest patch" has "CALL python 3.12.10 -m venv"
check "venv named by requirements hash and Python minor" has "EXPORT IMERG_PYTHON=$last_home/.cache/imerg-ingest/venv-$req_hash-py3.12/bin/python"
check "says the venv and the requirements file before creating it" before "will create the Python 3.12 venv $last_home/.cache/imerg-ingest/venv-$req_hash-py3.12" "CALL python 3.12.10 -m venv"
check "names the requirements file" has "pip install -r tests/python/requirements.txt"
check "pip installs the requirements" has "CALL pip install -q --disable-pip-version-check -r $work/repo/tests/python/requirements.txt"
check "the venv is stamped complete" grep -qx "$req_hash py3.12" "$last_home/.cache/imerg-ingest/venv-$req_hash-py3.12/.complete"
# The same HOME again: nothing to do.
out_again="$(cd "$work/repo" && HOME="$last_home" PYENV_ROOT="$work/pyenv-pyenv-choice" PATH="$work/nextest:$work/promtool:$work/chromium:$work/tesseract:$work/openssl:$work/cargo-rustup:$work/stubs:$work/tools" \
  FAKE_INSTALLED="libhdf5-dev pkg-config protobuf-compiler" "$work/tools/bash" scripts/setup.sh --test 2>&1)"
out="$out_again"
check "second run: no pip, no venv, silent" test -z "$out_again"

PYENV_VERSIONS="3.13.0 3.14.2" run_setup pyenv-newer --test
check "pyenv without 3.12: the next minor" has "CALL python 3.13.0 -m venv"
check "pyenv without 3.12: a py3.13 venv" has "venv-$req_hash-py3.13/bin/python"

fake_python "$work/py/python3.13" 3.13.5
IMERG_PYTHON_BIN="$work/py/python3.13" run_setup python-bin --test
check "IMERG_PYTHON_BIN is used" has "CALL python 3.13.5 -m venv"

fake_python "$work/py/python3.11" 3.11.2
IMERG_PYTHON_BIN="$work/py/python3.11" run_setup python-too-old --test
check "IMERG_PYTHON_BIN too old: exit 1" rc_is 1
check "IMERG_PYTHON_BIN too old: says which" has "3.11.2"
check "no Python: pyenv advice" has "pyenv install 3.12"
check "no Python: Debian 13 advice" has "python3.13-venv"
check "no Python: nothing installed" hasnt "CALL apt-get"

IMERG_VENV="$work/my-venv" run_setup imerg-venv --test
check "IMERG_VENV is the venv path" has "EXPORT IMERG_PYTHON=$work/my-venv/bin/python"

echo "check_setup: $passed passed, $failed failed"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
