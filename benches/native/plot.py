"""Bar chart of read_bench.py results: per case, the median read time of the virtual and the native
store (log scale, whiskers = fastest and slowest run, native/virtual ratio above the pair), and
the store reads under data variables in a second panel.

Usage: plot.py RESULTS.jsonl OUT.png [--label TEXT] [--title TEXT]
Reads the lines with "bench": "native-read" (the last line per case and store wins; --label keeps
only lines of that label). Needs matplotlib only (the bench venv:
~/.cache/imerg-ingest/bench-venv/bin/pip install matplotlib==3.11.2).
"""

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STORES = ("virtual", "native")
COLORS = {"virtual": "#4c72b0", "native": "#dd8452"}


def load(path: str, label: str | None) -> tuple[list, dict]:
    rows: dict = {}
    order: list = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            if r.get("bench") != "native-read" or (label is not None and r.get("label") != label):
                continue
            if r["case"] not in order:
                order.append(r["case"])
            rows[(r["case"], r["store"])] = r
    cases = [c for c in order if all((c, s) in rows for s in STORES)]
    return cases, rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("results")
    p.add_argument("out")
    p.add_argument("--label")
    p.add_argument("--title", default="IMERG reads: virtual store vs native time-series store")
    a = p.parse_args()
    cases, rows = load(a.results, a.label)
    if not cases:
        raise SystemExit(f"no case with both stores in {a.results}")

    fig, (ax_t, ax_n) = plt.subplots(1, 2, figsize=(4 + 1.9 * len(cases), 4.8))
    width = 0.38
    xs = range(len(cases))
    for k, store in enumerate(STORES):
        pos = [x + (k - 0.5) * width for x in xs]
        med = [rows[(c, store)]["median"]["read_s"] for c in cases]
        lo = [m - min(r["read_s"] for r in rows[(c, store)]["runs"]) for c, m in zip(cases, med)]
        hi = [max(r["read_s"] for r in rows[(c, store)]["runs"]) - m for c, m in zip(cases, med)]
        ax_t.bar(pos, med, width, yerr=[lo, hi], capsize=3, label=store, color=COLORS[store])
        reads = [max(rows[(c, store)]["median"]["data_reads"], 0.8) for c in cases]
        ax_n.bar(pos, reads, width, label=store, color=COLORS[store])
    for x, c in zip(xs, cases):
        v, n = (rows[(c, s)]["median"]["read_s"] for s in STORES)
        ratio = n / v if v else None
        text = "" if ratio is None else (f"x{ratio:.0f}" if ratio >= 10 else f"x{ratio:.2g}")
        ax_t.annotate(text, (x, max(v, n)), textcoords="offset points",
                      xytext=(0, 10), ha="center", fontsize=8)
    labels = [f"{c}\n({rows[(c, 'native')]['steps']} steps)" for c in cases]
    for ax, ylabel in ((ax_t, "read time, s (median; log)"), (ax_n, "store reads of data keys (log)")):
        ax.set_yscale("log")
        ax.set_xticks(list(xs), labels, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8)
    r0 = rows[(cases[0], "native")]
    fig.suptitle(a.title, fontsize=10)
    n_runs = sorted({len(rows[(c, s)]["runs"]) for c in cases for s in STORES})
    runs = f"{n_runs[0]}" if len(n_runs) == 1 else f"{n_runs[0]}-{n_runs[-1]}"
    fig.text(0.5, 0.01, f"{r0.get('cores')} cores, zarr pipeline {r0.get('zarr_pipeline')}, "
             f"{runs} cold runs per bar{', ' + a.label if a.label else ''}",
             ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    fig.savefig(a.out, dpi=120)
    print(a.out)


if __name__ == "__main__":
    main()
