"""Plots `imerg-ingest simulate` JSON lines: commit latency and process RSS against references
already stored. Usage: plot_simulate.py OUT.png RUN.jsonl[=label] [RUN.jsonl[=label] ...]"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out = sys.argv[1]
fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
for arg in sys.argv[2:]:
    path, _, label = arg.partition("=")
    rows = [json.loads(l) for l in open(path) if l.startswith('{"commit"')]
    x = [r["refs_before"] / 1e6 for r in rows]
    ax1.plot(x, [r["seconds"] for r in rows], ".", markersize=2, label=label or path)
    ax2.plot(x, [r["rss_bytes"] / 2**20 for r in rows], "-", label=label or path)
ax1.set_ylabel("commit latency (s), 480 granules")
ax2.set_ylabel("process RSS (MiB)")
ax2.set_xlabel("references already in the store (millions)")
ax1.legend()
ax1.grid(alpha=0.3)
ax2.grid(alpha=0.3)
fig.suptitle("imerg-ingest simulate: the full Final record (42.8 M references), 2 cores")
fig.tight_layout()
fig.savefig(out, dpi=110)
