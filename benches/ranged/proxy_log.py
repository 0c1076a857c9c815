"""Summaries of range_proxy.py's request log (pure functions, stdlib only).

A record is one proxied request, as served by `GET /__proxy/log`:
  {"id", "conn", "method", "path", "query", "range", "status", "req_body_bytes",
   "resp_body_bytes", "t_start", "t_first_byte", "t_end"}
(times are the proxy's monotonic seconds; t_end is null for a request that got no response).

Usage as a script: `python proxy_log.py http://127.0.0.1:PORT` (or a JSON file of records)
prints per_object() of the log as JSON.
"""

import heapq
import json
import sys

COUNTED_METHODS = ("GET", "HEAD")


def round_trips(records):
    """The longest chain of dependent requests among `records` (those of ONE object path).

    Request r depends on q when q had been fully answered before r was sent
    (q.t_end <= r.t_start): depth(r) = 1 + max(depth(q) for such q), or 1. Requests that
    overlap in time are concurrent and do not add to the chain. Only GET and HEAD count;
    requests without a t_end (no response) are left out. Returns max depth (0 if none).
    """
    rs = [r for r in records
          if r.get("method") in COUNTED_METHODS and r.get("t_end") is not None]
    # In order of start; every q with q.t_end <= r.t_start comes before r in this order
    # (q.t_start <= q.t_end <= r.t_start, ties broken by t_end).
    rs.sort(key=lambda r: (r["t_start"], r["t_end"]))
    pending = []  # heap of (t_end, depth) of the requests seen but not yet known finished
    finished_max = 0  # max depth of the requests finished by the current t_start
    best = 0
    for r in rs:
        while pending and pending[0][0] <= r["t_start"]:
            finished_max = max(finished_max, heapq.heappop(pending)[1])
        depth = 1 + finished_max
        heapq.heappush(pending, (r["t_end"], depth))
        best = max(best, depth)
    return best


def per_object(records):
    """path -> {"gets", "heads", "bytes" (response body bytes of the GETs), "round_trips"}."""
    by_path = {}
    for r in records:
        by_path.setdefault(r["path"], []).append(r)
    out = {}
    for path, rs in sorted(by_path.items()):
        gets = [r for r in rs if r["method"] == "GET"]
        out[path] = {
            "gets": len(gets),
            "heads": sum(1 for r in rs if r["method"] == "HEAD"),
            "bytes": sum(r.get("resp_body_bytes") or 0 for r in gets),
            "round_trips": round_trips(rs),
        }
    return out


def fetch_log(proxy_url):
    """The proxy's log (GET /__proxy/log) as a list of records."""
    import urllib.request
    with urllib.request.urlopen(proxy_url.rstrip("/") + "/__proxy/log") as resp:
        return json.load(resp)


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    src = argv[1]
    if src.startswith("http://"):
        records = fetch_log(src)
    else:
        with open(src) as f:
            records = json.load(f)
    print(json.dumps(per_object(records), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
