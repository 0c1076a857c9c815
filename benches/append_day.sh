#!/usr/bin/env bash
# Append one real day (48 synthetic granules, 4,224 references) with `imerg-ingest append` onto an
# empty store, a one-year store and the full-record store (both built with `simulate`, their
# references in the same local virtual chunk container as the real day), REPS times each on a
# fresh `cp -a` copy of the store. Records the commit time the committer logs ("batch durable",
# fetch + parse excluded) and the process's peak RSS (`/usr/bin/time -v`), then medians.
#
# Usage: benches/append_day.sh [WORK_DIR]   (default /tmp/imerg-append-day; needs ~6 GB free)
#   IMERG_BIN   the binary (default $CARGO_TARGET_DIR/release/imerg-ingest)
#   REPS        repetitions per store (default 5)
#   STORES      which stores (default "empty year full")
#   OUT         results file (default benches/results-append-day.jsonl)
# The appended copies of the last repetition stay as WORK_DIR/<store>-appended (reader.py).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=${1:-/tmp/imerg-append-day}
bin=${IMERG_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/imerg-ingest/target}/release/imerg-ingest}
reps=${REPS:-5}
stores=${STORES:-empty year full}
out=${OUT:-$here/results-append-day.jsonl}
day_start=2025-09-30 # the record's last day: appended where the record ends
day_end=2025-10-01
year_start=2024-09-30

mkdir -p "$work"
src=${SRC:-$work/src} # SRC: the granule directory the stores were built with
if [ ! -d "$src/GPM_L3" ]; then
    "$bin" synth --start "$day_start" --end "$day_end" --deflate-level 1 --out "$src" >&2
fi
mapfile -t granules < <(find "$src/GPM_L3" -name '*.HDF5' | sort)
[ "${#granules[@]}" = 48 ] || { echo "expected 48 granules under $src, found ${#granules[@]}" >&2; exit 1; }

build() { # name start: simulate [start, day_start) into WORK/name unless already there
    local name=$1 start=$2
    if [ ! -d "$work/$name" ]; then
        echo "building the $name store ($start .. $day_start)" >&2
        "$bin" simulate --repo "$work/$name" --source-root "$src" --start "$start" \
            --end "$day_start" > "$work/$name.simulate.jsonl"
        tail -1 "$work/$name.simulate.jsonl" >&2
    fi
}

: > "$out"
for store in $stores; do
    case $store in
        empty) ;;
        year) build year "$year_start" ;;
        full) build full 1998-01-01 ;;
        *) echo "unknown store $store" >&2; exit 2 ;;
    esac
    for rep in $(seq 1 "$reps"); do
        dst=$work/$store-appended
        rm -rf "$dst"
        if [ "$store" != empty ]; then cp -a "$work/$store" "$dst"; fi
        sync
        /usr/bin/time -v -o "$work/time.txt" "$bin" --log-format json append --repo "$dst" \
            --source-root "$src" --batch-size 48 "${granules[@]}" 2> "$work/append.log"
        python3 - "$store" "$rep" "$work/append.log" "$work/time.txt" >> "$out" <<'EOF'
import json, re, sys
store, rep, log, tim = sys.argv[1:]
commits = [json.loads(l) for l in open(log) if l.startswith("{")]
durable = [c["fields"] for c in commits if c.get("fields", {}).get("message") == "batch durable"]
assert len(durable) == 1, f"expected one commit, got {len(durable)}"
t = open(tim).read()
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) * 1024
wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", t).groups()
wall_s = int(wall[0] or 0) * 3600 + int(wall[1]) * 60 + float(wall[2])
print(json.dumps({"store": store, "rep": int(rep), "commit_s": durable[0]["seconds"],
                  "peak_rss_bytes": rss, "process_wall_s": wall_s}))
EOF
        tail -1 "$out" >&2
    done
done

python3 - "$out" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["store"], []).append(r)
summary = {}
for s, rs in by.items():
    summary[s] = {
        "reps": len(rs),
        "commit_s_median": statistics.median(r["commit_s"] for r in rs),
        "peak_rss_bytes_median": statistics.median(r["peak_rss_bytes"] for r in rs),
        "process_wall_s_median": statistics.median(r["process_wall_s"] for r in rs),
    }
if "year" in summary and "full" in summary:
    y, f = summary["year"], summary["full"]
    summary["full_over_year"] = {
        "commit_time": f["commit_s_median"] / y["commit_s_median"],
        "peak_rss": f["peak_rss_bytes_median"] / y["peak_rss_bytes_median"],
    }
line = json.dumps({"summary": summary})
open(sys.argv[1], "a").write(line + "\n")
print(line)
EOF
