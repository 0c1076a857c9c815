"""The ranged-read benchmark: three ways of virtualizing the same granules from an S3 test
server, side by side in one run, counted by the server's side.

  python benches/ranged/run.py [--bin PATH] [--count 200 | --quick] [--format earliest|v110]
                               [--shuffle] [--rates 0,100] [--concurrency 8]

  (a) ranged        imerg-ingest virtualize --json --ranged-reads --concurrency 8 s3://...
  (b) whole         imerg-ingest virtualize --json --concurrency 8 s3://...
  (c) virtualizarr  vz_run.py --executor process --concurrency 8 (VirtualiZarr 2.8's HDFParser
                    over obstore's S3Store)

Any python 3 runs this script (stdlib only); moto, the uploads and vz_run.py run with the bench
venv's python (`--python`, default ~/.cache/imerg-ingest/bench-venv/bin/python, see README.md).

What it does:
 1. Granules: `imerg-ingest synth --realistic` (~10 MB each), half-hourly from 2020-01-01T00:00,
    cached under ~/.cache/imerg-ingest/bench-granules/realistic-FORMAT[-shuffle]/ (only the
    missing ones are written).
 2. moto (`python -m moto.server`) on a free port, the granules uploaded straight to it (not
    counted) as s3://imerg/granules/<file name>, then range_proxy.py in front of it.
 3. For each rate (`POST /__proxy/rate`; 0 = unthrottled), for each method: the proxy's log
    reset, all granules virtualized with N in flight, the wall time of the whole run, then
    from the proxy's log per object: GETs, HEADs, body bytes, round trips (proxy_log).
    Client seconds per granule: the CLI's fetch.seconds, vz_run.py's seconds.
 4. Memory: (a) and (b) again, unthrottled, with 1 in flight; (rss@N - rss@1) / (N - 1) is
    the memory per in-flight granule.
 5. Checks: (a) and (b) give the same `variables` for every granule, in every run; (a)'s
    fallbacks to the whole object are counted; (c)'s reference count matches ours.
 6. A Markdown table on stdout, and every raw number appended as JSON lines to
    benches/results-ranged.jsonl (`--results`; `--no-record` for none).

Peak RSS is measured by GNU time (`/usr/bin/time -f %M`), not by os.wait4 here: a child that
Python spawns (vfork + exec) inherits this process's peak RSS in its ru_maxrss, so wait4 would
report at least run.py's own size. For (c), the column is the largest process (vz_run.py's
summary: its largest worker); "tree RSS" is the sampled sum over the whole process tree (every
50 ms), which is what 8 worker processes really cost.

Why vz_run.py runs with `--executor process`: h5py serializes every HDF5 call, the reads it
makes through VirtualiZarr's file-like reader included, behind one global lock, so with threads
only one request would ever be in flight however many granules are; 8 worker processes give
the 8 granules in flight the requirement asks for (at the cost of 8 interpreters' memory).
Its granules/s is taken from its own summary (the pool started and imports done beforehand);
the wall time of the whole process, imports included, is recorded too (process_wall_s).
"""

import argparse
import datetime as dt
import filecmp
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import proxy_log  # noqa: E402

BUCKET = "imerg"
PREFIX = "granules/"
T0 = dt.datetime(2020, 1, 1, 0, 0)
STEP = dt.timedelta(minutes=30)
METHODS = ["ranged", "whole", "virtualizarr"]
LABEL = {"ranged": "(a) ranged", "whole": "(b) whole object", "virtualizarr": "(c) VirtualiZarr"}
NAME_RE = re.compile(r"3B-HHR\.MS\.MRG\.3IMERG\.(\d{8})-S(\d{6})-E\d{6}\.\d{4}\.V\d\d[A-Z]\.HDF5$")
CREDS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
         "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---- granules ----------------------------------------------------------------------------

def granules(args):
    """The `count` granule files (sorted by time), written by `synth` if not cached."""
    name = f"realistic-{args.format}" + ("-shuffle" if args.shuffle else "")
    root = os.path.join(args.cache, name)
    os.makedirs(root, exist_ok=True)

    def present():
        found = {}
        for d, _, files in os.walk(root):
            for f in files:
                m = NAME_RE.search(f)
                if m:
                    found[dt.datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S")] = \
                        os.path.join(d, f)
        return found

    want = [T0 + i * STEP for i in range(args.count)]
    found = present()
    missing = [i for i, t in enumerate(want) if t not in found]
    if missing:
        for d, _, files in os.walk(root):  # leftovers of an interrupted synth
            for f in files:
                if f.endswith(".partial"):
                    os.remove(os.path.join(d, f))
        start, end = want[missing[0]], want[-1] + STEP
        cmd = [args.bin, "synth", "--start", start.strftime("%Y-%m-%dT%H:%M"),
               "--end", end.strftime("%Y-%m-%dT%H:%M"), "--out", root, "--realistic",
               "--hdf5-format", args.format, "--jobs", str(args.synth_jobs)]
        if args.shuffle:
            cmd.append("--shuffle")
        log(f"writing {args.count - missing[0]} granules (~1.5 s each): {' '.join(cmd)}")
        t = time.monotonic()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        log(f"  done in {time.monotonic() - t:.0f} s")
        found = present()
    else:
        log(f"granules: {args.count} cached in {root}")
    lost = [t for t in want if t not in found]
    if lost:
        sys.exit(f"synth did not write {len(lost)} granules, e.g. {lost[0]}")
    return [found[t] for t in want]


# ---- services ------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=60):
    end = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def http(method, url):
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


class Services:
    """moto and range_proxy.py, started here and stopped on exit."""

    def __init__(self, args, workdir):
        self.procs = []
        self.args = args
        self.workdir = workdir

    def start(self):
        py = self.args.python
        self.moto_port = free_port()
        self.moto_url = f"http://127.0.0.1:{self.moto_port}"
        moto_log = open(os.path.join(self.workdir, "moto.log"), "wb")
        self.procs.append(subprocess.Popen(
            [py, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.moto_port)],
            stdout=moto_log, stderr=subprocess.STDOUT, env=child_env(), start_new_session=True))
        wait_http(self.moto_url + "/")
        proxy_err = open(os.path.join(self.workdir, "proxy.log"), "wb")
        p = subprocess.Popen([py, os.path.join(HERE, "range_proxy.py"),
                              "--upstream", f"127.0.0.1:{self.moto_port}"],
                             stdout=subprocess.PIPE, stderr=proxy_err, text=True,
                             start_new_session=True)
        self.procs.append(p)
        line = p.stdout.readline().strip()
        if not line.startswith("listening "):
            raise RuntimeError(f"range_proxy.py: {line!r} (see {self.workdir}/proxy.log)")
        self.proxy_url = line.split(" ", 1)[1]
        log(f"moto {self.moto_url}, proxy {self.proxy_url}")

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # proxy control
    def reset(self):
        http("POST", self.proxy_url + "/__proxy/reset")

    def rate(self, mbit):
        http("POST", f"{self.proxy_url}/__proxy/rate?mbit={mbit}")

    def records(self):
        return proxy_log.fetch_log(self.proxy_url)


def child_env(extra=None):
    """The environment without any AWS_* of the caller's, plus moto's test credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(CREDS)
    env.update(extra or {})
    return env


def upload(args, svc, files):
    cmd = [args.python, os.path.join(HERE, "upload.py"), "--endpoint", svc.moto_url,
           "--bucket", BUCKET, "--prefix", PREFIX] + files
    t = time.monotonic()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=child_env())
    keys = out.stdout.split()
    log(f"uploaded {len(keys)} granules to moto in {time.monotonic() - t:.0f} s (not counted)")
    return keys


# ---- one run -------------------------------------------------------------------------------

class TreeRss:
    """Samples the summed RSS of a process's descendants (not the process itself)."""

    def __init__(self, pid, interval=0.05):
        self.pid, self.interval, self.peak = pid, interval, 0
        self.stop_ev = threading.Event()
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def descendants(self, pid):
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            try:
                for tid in os.listdir(f"/proc/{p}/task"):
                    with open(f"/proc/{p}/task/{tid}/children") as f:
                        kids = [int(x) for x in f.read().split()]
                    out += kids
                    todo += kids
            except OSError:
                pass
        return out

    def run(self):
        while not self.stop_ev.is_set():
            total = 0
            for p in self.descendants(self.pid):
                try:
                    with open(f"/proc/{p}/statm") as f:
                        total += int(f.read().split()[1]) * self.page
                except OSError:
                    pass
            self.peak = max(self.peak, total)
            self.stop_ev.wait(self.interval)

    def stop(self):
        self.stop_ev.set()
        self.thread.join()
        return self.peak


def run_measured(cmd, env, workdir, tag, timeout):
    """Runs `cmd` under GNU time; returns (stdout lines, stderr text, exit code, wall seconds,
    peak RSS bytes of the command (its largest process), sampled peak RSS of its tree)."""
    out_path = os.path.join(workdir, f"{tag}.out")
    err_path = os.path.join(workdir, f"{tag}.err")
    rss_path = os.path.join(workdir, f"{tag}.rss")
    timed = ["/usr/bin/time", "-f", "%M", "-o", rss_path, "--"] + cmd if HAVE_TIME else cmd
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t = time.monotonic()
        p = subprocess.Popen(timed, stdout=out, stderr=err, env=env, start_new_session=True)
        sampler = TreeRss(p.pid)
        try:
            _, status, ru = os.wait4(p.pid, 0) if timeout is None else wait4_timeout(p, timeout)
        finally:
            tree = sampler.stop()
        wall = time.monotonic() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    if HAVE_TIME:
        with open(rss_path) as f:  # "Command exited with non-zero status N" may come first
            rss = int(f.read().split()[-1]) * 1024
    else:
        rss = ru.ru_maxrss * 1024  # includes run.py's own peak (see the docstring)
    with open(out_path) as f:
        lines = [json.loads(ln) for ln in f if ln.strip().startswith("{")]
    with open(err_path, errors="replace") as f:
        err_text = f.read()
    return lines, err_text, p.returncode, wall, rss, tree


def wait4_timeout(p, timeout):
    timer = threading.Timer(timeout, lambda: os.killpg(p.pid, signal.SIGKILL))
    timer.start()
    try:
        return os.wait4(p.pid, 0)
    finally:
        timer.cancel()


def rust_cmd(args, method, urls, concurrency):
    cmd = [args.bin, "virtualize", "--json", "--concurrency", str(concurrency)]
    if method == "ranged":
        cmd.append("--ranged-reads")
    return cmd + args.cli_arg + urls


def run_method(args, svc, workdir, method, keys, concurrency, rate, endpoint_var):
    tag = f"{method}-r{rate}-c{concurrency}"
    urls = [f"s3://{BUCKET}/{k}" for k in keys]
    if method == "virtualizarr":
        keys_file = os.path.join(workdir, "keys.txt")
        cmd = [args.python, os.path.join(HERE, "vz_run.py"), "--endpoint", svc.proxy_url,
               "--bucket", BUCKET, "--concurrency", str(concurrency), "--executor", "process",
               "--keys-file", keys_file]
        env = child_env()
    else:
        cmd = rust_cmd(args, method, urls, concurrency)
        env = child_env({endpoint_var: svc.proxy_url})
    svc.reset()
    lines, err, code, wall, rss, tree = run_measured(cmd, env, workdir, tag, args.timeout)
    recs = svc.records()
    with open(os.path.join(workdir, f"{tag}.proxy.json"), "w") as f:
        json.dump(recs, f)
    per_obj = {}
    for path, s in proxy_log.per_object(recs).items():
        per_obj[urllib.parse.unquote(path.lstrip("/")).split("/", 1)[-1]] = s

    run = {"kind": "run", "method": method, "rate_mbit": rate, "concurrency": concurrency,
           "exit_code": code, "process_wall_s": wall, "peak_rss_bytes": rss,
           "tree_rss_sampled_bytes": tree, "granules": len(keys)}
    rows, errors, extra_paths = {}, [], sorted(set(per_obj) - set(keys))
    if method == "virtualizarr":
        summary = [ln for ln in lines if "total_seconds" in ln]
        rows = {ln["key"]: ln for ln in lines if "key" in ln}
        if summary:
            s = summary[-1]
            run["wall_s"] = s["total_seconds"]
            run["peak_rss_bytes"] = s["peak_rss_bytes"]  # its largest worker
            run["time_peak_rss_bytes"] = rss
        errors = [{"key": k, "error": r["error"]} for k, r in rows.items() if not r["ok"]]
    else:
        run["wall_s"] = wall
        for i, ln in enumerate(lines):  # in input order; the URL says which, if given
            u = ln.get("input") or ln.get("url") or ""
            k = (u[len(f"s3://{BUCKET}/"):] if u.startswith(f"s3://{BUCKET}/")
                 else keys[i] if i < len(keys) else ln.get("key"))
            if "error" in ln:
                errors.append({"key": k, "error": ln["error"], "reason": ln.get("reason")})
            else:
                rows[k] = ln
    run["granules_per_s"] = len(keys) / run["wall_s"] if run.get("wall_s") else None
    if code != 0 and not errors:
        errors.append({"key": None, "error": f"exit code {code}: {err[-2000:]}"})

    per = {f: [] for f in ("key", "size", "gets", "heads", "bytes", "round_trips",
                           "client_s", "client_gets", "client_bytes", "client_round_trips",
                           "mode", "fallback", "refs")}
    for k in keys:
        s = per_obj.get(k, {"gets": 0, "heads": 0, "bytes": 0, "round_trips": 0})
        r = rows.get(k)
        per["key"].append(k)
        per["size"].append(args.sizes[k])
        for f in ("gets", "heads", "bytes", "round_trips"):
            per[f].append(s[f])
        if method == "virtualizarr":
            per["client_s"].append(r and r["seconds"])
            per["refs"].append(r and r["refs"])
            for f in ("client_gets", "client_bytes", "client_round_trips", "mode", "fallback"):
                per[f].append(None)
        else:
            fe = (r or {}).get("fetch") or {}
            per["client_s"].append(fe.get("seconds"))
            per["client_gets"].append(fe.get("gets"))
            per["client_bytes"].append(fe.get("bytes"))
            per["client_round_trips"].append(fe.get("round_trips"))
            per["mode"].append(fe.get("mode"))
            per["fallback"].append(fe.get("fallback"))
            per["refs"].append(sum(len(v["refs"]) for v in r["variables"].values())
                               if r else None)
    run["per_granule"] = per
    run["server"] = server_load(recs)
    if method != "virtualizarr":  # what the CLI counted against what the server saw
        run["client_server_differ"] = {
            f: sum(1 for c, sv in zip(per["client_" + f], per[f]) if c is not None and c != sv)
            for f in ("gets", "bytes", "round_trips")}
    run["errors"] = errors
    run["other_paths"] = extra_paths
    if method == "ranged":
        run["fallbacks"] = sum(1 for m, fb in zip(per["mode"], per["fallback"])
                               if fb is not None or m == "whole")
    variables = {k: r["variables"] for k, r in rows.items()} if method != "virtualizarr" else None
    log(f"  {LABEL[method]:17} {rate:>3} Mbit/s  {concurrency} in flight: "
        f"{run['granules_per_s'] or 0:6.2f} granules/s, "
        f"{statistics.median(per['bytes']) / 1e6:7.3f} MB/granule, "
        f"peak RSS {run['peak_rss_bytes'] / 2**20:.0f} MiB, errors {len(errors)}"
        + (f"; server {run['server']['requests_per_s']:.0f} requests/s, "
           f"{run['server']['request_s_median'] * 1000:.0f} ms each (median)"
           if run["server"] and run["server"]["requests_per_s"] else "")
        + (f", fallbacks {run['fallbacks']}" if method == "ranged" else "")
        + (f"; client/server counts differ for {run['client_server_differ']} granules"
           if any(run.get("client_server_differ", {}).values()) else ""))
    return run, variables


def server_load(recs):
    """What the test server was asked: requests per second over the run, the median request
    time (request head received to response sent) and the mean number of requests in flight.
    moto answers a bounded number of requests per second (one Python process, a new connection
    per request): when the requests per second stay flat from 1 to 8 granules in flight while
    the request time grows, the server, not the client, sets the pace."""
    rs = [r for r in recs if r["method"] in proxy_log.COUNTED_METHODS and r["t_end"] is not None]
    if not rs:
        return None
    span = max(r["t_end"] for r in rs) - min(r["t_start"] for r in rs)
    busy = [r["t_end"] - r["t_start"] for r in rs]
    return {"requests": len(rs), "requests_per_s": len(rs) / span if span > 0 else None,
            "request_s_median": statistics.median(busy),
            "in_flight_mean": sum(busy) / span if span > 0 else None}


def pick_endpoint_var(args, svc, key):
    """Which environment variable object_store takes the endpoint from: one granule (whole
    object, not counted) with AWS_ENDPOINT_URL, then AWS_ENDPOINT if the proxy saw nothing."""
    candidates = ([args.endpoint_var] if args.endpoint_var != "auto"
                  else ["AWS_ENDPOINT_URL", "AWS_ENDPOINT"])
    for var in candidates:
        svc.reset()
        p = subprocess.run(rust_cmd(args, "whole", [f"s3://{BUCKET}/{key}"], 1),
                           env=child_env({var: svc.proxy_url}), capture_output=True, text=True,
                           timeout=120)
        seen = [r for r in svc.records() if r["method"] == "GET"]
        if p.returncode == 0 and seen:
            log(f"endpoint from {var}: works (the proxy saw {len(seen)} GET)")
            return var
        log(f"endpoint from {var}: exit {p.returncode}, proxy saw {len(seen)} GETs: "
            f"{(p.stdout + p.stderr)[-500:]}")
    sys.exit("no environment variable gave the CLI the proxy's endpoint")


# ---- the report ----------------------------------------------------------------------------

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(run):
    p = run["per_granule"]
    pct = [b / s * 100 for b, s in zip(p["bytes"], p["size"])]
    return {
        "method": run["method"], "rate_mbit": run["rate_mbit"],
        "concurrency": run["concurrency"],
        "bytes_median": med(p["bytes"]), "bytes_total": sum(p["bytes"]),
        "pct_of_object_median": med(pct),
        "gets_median": med(p["gets"]), "heads_median": med(p["heads"]),
        "gets_total": sum(p["gets"]), "heads_total": sum(p["heads"]),
        "round_trips_median": med(p["round_trips"]), "round_trips_max": max(p["round_trips"]),
        "client_s_median": med(p["client_s"]),
        "granules_per_s": run["granules_per_s"], "peak_rss_bytes": run["peak_rss_bytes"],
        "tree_rss_sampled_bytes": run["tree_rss_sampled_bytes"],
        "errors": len(run["errors"]), "fallbacks": run.get("fallbacks"),
    }


def fmt_bytes(n):
    return "–" if n is None else f"{n / 1e6:.3f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def fmt_num(x):
    return "–" if x is None else f"{x:g}" if float(x).is_integer() else f"{x:.1f}"


def table(summaries):
    head = ("| method | link | bytes / granule (median) | % of object | GETs (+HEADs) | "
            "round trips median / max | client s / granule | granules/s | peak RSS | "
            "tree RSS (sampled) |")
    out = [head, "|" + " --- |" * head.count(" | ") + " --- |"]
    for s in summaries:
        link = "unthrottled" if not s["rate_mbit"] else f"{s['rate_mbit']:g} Mbit/s"
        heads = f" (+{fmt_num(s['heads_median'])})" if s["heads_median"] else ""
        rss = f"{s['peak_rss_bytes'] / 2**20:.0f} MiB"
        if s["method"] == "virtualizarr":
            rss += " (largest of 8 processes)"
        out.append(
            f"| {LABEL[s['method']]} | {link} | {fmt_bytes(s['bytes_median'])} | "
            f"{s['pct_of_object_median']:.2f} % | {fmt_num(s['gets_median'])}{heads} | "
            f"{fmt_num(s['round_trips_median'])} / {s['round_trips_max']} | "
            f"{s['client_s_median']:.3f} | {s['granules_per_s']:.2f} | {rss} | "
            f"{s['tree_rss_sampled_bytes'] / 2**20:.0f} MiB |")
    return "\n".join(out)


def ratio(a, b):
    return a / b if a is not None and b else None


# ---- main ----------------------------------------------------------------------------------

def default_bin():
    rel = os.path.join(REPO, "target", "release", "imerg-ingest")
    return rel if os.path.exists(rel) else os.path.join(REPO, "target", "debug", "imerg-ingest")


def build_kind(path):
    real = os.path.realpath(path)
    for kind in ("release", "debug"):
        if f"/target/{kind}/" in real:
            return kind
    for kind in ("release", "debug"):
        cand = os.path.join(REPO, "target", kind, "imerg-ingest")
        if os.path.exists(cand) and filecmp.cmp(cand, real, shallow=False):
            return kind  # a copy of it
    return "unknown"


def sha256_prefix(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def git(*a):
    try:
        return subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


HAVE_TIME = os.access("/usr/bin/time", os.X_OK)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=default_bin(), help="the imerg-ingest binary "
                    "(default: target/release/imerg-ingest if built, else target/debug/)")
    ap.add_argument("--build", choices=["debug", "release"],
                    help="the binary's profile, for the record (default: from its path under "
                    "target/, or from its being identical to target/{release,debug}/'s)")
    ap.add_argument("--python", default=os.path.expanduser(
        "~/.cache/imerg-ingest/bench-venv/bin/python"), help="the bench venv's python")
    ap.add_argument("--count", type=int, default=200, help="granules (default %(default)s)")
    ap.add_argument("--quick", action="store_true", help="24 granules (a fast check)")
    ap.add_argument("--format", choices=["earliest", "v110"], default="earliest")
    ap.add_argument("--shuffle", action="store_true")
    ap.add_argument("--synth-jobs", type=int, default=2)
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/imerg-ingest/bench-granules"))
    ap.add_argument("--rates", default="0,100", help="Mbit/s, 0 = unthrottled")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--concurrency", type=int, default=8, help="granules in flight")
    ap.add_argument("--no-memory", action="store_true",
                    help="skip the 1-in-flight runs of (a) and (b)")
    ap.add_argument("--endpoint-var", default="auto",
                    help="AWS_ENDPOINT_URL, AWS_ENDPOINT or auto (try them in that order)")
    ap.add_argument("--cli-arg", action="append", default=[],
                    help="extra argument for `imerg-ingest virtualize` (repeatable), e.g. "
                    "--cli-arg=--no-layout-hints")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    ap.add_argument("--results", default=os.path.join(REPO, "benches", "results-ranged.jsonl"))
    ap.add_argument("--no-record", action="store_true", help="append nothing to --results")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args()
    if args.quick:
        args.count = 24
    args.bin = os.path.abspath(args.bin)
    rates = [float(r) for r in args.rates.split(",")]
    rates = [int(r) if r.is_integer() else r for r in rates]
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            ap.error(f"unknown method {m}")
    if not os.path.exists(args.bin):
        ap.error(f"no binary at {args.bin}")
    if not HAVE_TIME:
        log("warning: no /usr/bin/time; peak RSS from wait4 includes run.py's own")

    meta = {
        "bench": "ranged", "run_id": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "bin": args.bin, "build": args.build or build_kind(args.bin),
        "nproc": os.cpu_count(), "granules": args.count, "format": args.format,
        "shuffle": args.shuffle, "concurrency": args.concurrency, "quick": args.quick,
        "cli_args": args.cli_arg, "bin_sha256": sha256_prefix(args.bin),
        "bin_mtime": dt.datetime.fromtimestamp(os.path.getmtime(args.bin), dt.timezone.utc)
        .isoformat(timespec="seconds"),
        "loadavg_start": os.getloadavg(),
    }
    files = granules(args)
    args.sizes = {PREFIX + os.path.basename(f): os.path.getsize(f) for f in files}

    workdir = tempfile.mkdtemp(prefix="bench-ranged-")
    svc = Services(args, workdir)
    records = []
    try:
        svc.start()
        keys = upload(args, svc, files)
        if sorted(keys) != sorted(args.sizes):
            sys.exit(f"upload printed unexpected keys: {keys[:3]}...")
        with open(os.path.join(workdir, "keys.txt"), "w") as f:
            f.write("\n".join(keys) + "\n")
        svc.rate(0)
        endpoint_var = pick_endpoint_var(args, svc, keys[0])
        meta["endpoint_var"] = endpoint_var

        runs, variables = [], {}
        for rate in rates:
            svc.rate(rate)
            for m in methods:
                run, var = run_method(args, svc, workdir, m, keys, args.concurrency, rate,
                                      endpoint_var)
                runs.append(run)
                variables[(m, rate, args.concurrency)] = var
        mem_runs = []
        if not args.no_memory:
            svc.rate(0)
            for m in [m for m in methods if m != "virtualizarr"]:
                run, var = run_method(args, svc, workdir, m, keys, 1, 0, endpoint_var)
                mem_runs.append(run)
                variables[(m, 0, 1)] = var
    finally:
        svc.stop()
        if args.keep:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    meta["loadavg_end"] = os.getloadavg()

    # ---- checks
    checks = {"mismatches": [], "compared": 0}
    whole = [v for (m, _, _), v in variables.items() if m == "whole" and v]
    ref = whole[0] if whole else None
    if ref:
        for (m, rate, conc), v in variables.items():
            if m not in ("ranged", "whole") or v is None or v is ref:
                continue
            for k in keys:
                if k in v and k in ref:
                    checks["compared"] += 1
                    if v[k] != ref[k]:
                        checks["mismatches"].append({"method": m, "rate_mbit": rate,
                                                     "concurrency": conc, "key": k})
    checks["fallbacks"] = {f"{r['rate_mbit']}Mbit-c{r['concurrency']}": r["fallbacks"]
                           for r in runs + mem_runs if r["method"] == "ranged"}
    checks["errors"] = {f"{r['method']}-{r['rate_mbit']}Mbit-c{r['concurrency']}":
                        r["errors"][:5] for r in runs + mem_runs if r["errors"]}
    vz = next((r for r in runs if r["method"] == "virtualizarr"), None)
    rs = next((r for r in runs if r["method"] != "virtualizarr"), None)
    if vz and rs:
        checks["refs_count_differs_vz"] = [
            k for k, a, b in zip(keys, rs["per_granule"]["refs"], vz["per_granule"]["refs"])
            if a != b]

    summaries = [summarize(r) for r in runs]
    by = {(s["method"], s["rate_mbit"]): s for s in summaries}
    ratios = {}
    for rate in rates:
        a, b, c = (by.get((m, rate)) for m in METHODS)
        if a and b:
            ratios[f"bytes_whole_over_ranged@{rate}"] = ratio(b["bytes_total"], a["bytes_total"])
            ratios[f"gps_ranged_over_whole@{rate}"] = ratio(a["granules_per_s"], b["granules_per_s"])
        if a and c:
            ratios[f"bytes_vz_over_ranged@{rate}"] = ratio(c["bytes_total"], a["bytes_total"])
            ratios[f"gps_ranged_over_vz@{rate}"] = ratio(a["granules_per_s"], c["granules_per_s"])
    memory = {}
    for m in ("ranged", "whole"):
        r1 = next((r for r in mem_runs if r["method"] == m), None)
        rn = next((r for r in runs if r["method"] == m and r["rate_mbit"] == 0), None)
        if r1 and rn and args.concurrency > 1:
            memory[m] = {"rss_1_bytes": r1["peak_rss_bytes"],
                         f"rss_{args.concurrency}_bytes": rn["peak_rss_bytes"],
                         "per_in_flight_bytes": (rn["peak_rss_bytes"] - r1["peak_rss_bytes"])
                         / (args.concurrency - 1),
                         "granules_per_s_1": r1["granules_per_s"]}

    # ---- the report
    print(f"\n### {args.count} granules ({args.format}{', shuffle' if args.shuffle else ''}, "
          f"median {statistics.median(args.sizes.values()) / 1e6:.1f} MB), "
          f"{args.concurrency} in flight; {meta['build']} build {meta['bin']}, commit "
          f"{meta['commit']}{' (dirty)' if meta['git_dirty'] else ''}, nproc {meta['nproc']}, "
          f"load average {meta['loadavg_start'][0]:.1f} at the start, "
          f"{meta['loadavg_end'][0]:.1f} at the end\n")
    print(table(summaries))
    print()
    top = max(rates)
    for rate in rates:
        parts = []
        for key, label in (("bytes_whole_over_ranged", "bytes (b)/(a)"),
                           ("bytes_vz_over_ranged", "bytes (c)/(a)"),
                           ("gps_ranged_over_whole", "granules/s (a)/(b)"),
                           ("gps_ranged_over_vz", "granules/s (a)/(c)")):
            v = ratios.get(f"{key}@{rate}")
            if v is not None:
                parts.append(f"{label} = {v:.1f}" if v >= 10 else f"{label} = {v:.2f}")
        link = "unthrottled" if not rate else f"{rate:g} Mbit/s"
        print(f"- {link}: " + ", ".join(parts))
    targets = []
    for key in ("bytes_whole_over_ranged", "bytes_vz_over_ranged"):
        v = ratios.get(f"{key}@{top}")
        if v is not None:
            targets.append((f"{key} >= 10", v >= 10))
    for key in ("gps_ranged_over_whole", "gps_ranged_over_vz"):
        v = ratios.get(f"{key}@{top}")
        if v is not None and top:
            targets.append((f"{key} > 1 at {top:g} Mbit/s", v > 1))
    print("- targets: " + ", ".join(f"{n}: {'met' if ok else 'MISSED'}" for n, ok in targets))
    for m, x in memory.items():
        print(f"- memory {LABEL[m]}: peak RSS {x['rss_1_bytes'] / 2**20:.0f} MiB with 1 in "
              f"flight, {x[f'rss_{args.concurrency}_bytes'] / 2**20:.0f} MiB with "
              f"{args.concurrency}: {x['per_in_flight_bytes'] / 2**20:.1f} MiB per granule in "
              f"flight")
    print(f"- checks: (a) = (b) variables for {checks['compared'] - len(checks['mismatches'])}"
          f" of {checks['compared']} granule runs compared; (a) fallbacks "
          f"{checks['fallbacks']}; errors {checks['errors'] or 'none'}; reference counts of "
          f"(c) differing from ours: {len(checks.get('refs_count_differs_vz', []))}; "
          f"endpoint from {meta['endpoint_var']}")

    if not args.no_record:
        with open(args.results, "a") as f:
            for r in runs + mem_runs:
                f.write(json.dumps({**meta, **r}) + "\n")
            f.write(json.dumps({**meta, "kind": "summary", "rows": summaries, "ratios": ratios,
                                "memory": memory, "checks": checks,
                                "targets": dict(targets)}) + "\n")
        log(f"appended to {args.results}")
    ok = not checks["mismatches"] and not checks["errors"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
