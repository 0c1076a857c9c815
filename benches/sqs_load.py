"""SQS load benchmark: a burst of notifications (default ten days, 480 granules) through the
production path on a real S3 + SQS server on loopback (moto): granules uploaded to a bucket whose
notifications go to a queue with a dead-letter queue, `imerg-ingest serve` listening to the queue,
reading the granules from the bucket and committing into a repository on the same S3.

Measures: time until every granule is durable and the queue is empty, commits, the service's peak
RSS (VmHWM), and the end-to-end lag of each notification (SentTimestamp -> message deleted, from
the listener's `lag_seconds` log field): median, p95, max.

Usage (test venv, release binary):
    python benches/sqs_load.py --bin ~/.cache/imerg-ingest/target/release/imerg-ingest \
        [--start 2024-06-01 --days 10] [--mode burst|live] [--clone-days N] \
        [--granules-cache DIR] [--out FILE]

`burst`: every notification is queued before the service starts (a backlog after an outage);
`live`: the service runs while the objects are uploaded as fast as possible.
Prints one JSON object (and appends it to --out).

Granules are cached under --granules-cache in START_END/ (the bucket layout), so later runs over
the same range skip making them. By default every granule is synthesized with `imerg-ingest synth`
(libhdf5 deflates ~100 MB of fields per granule: 0.25 to 1 s each on the project's 2-core machine
depending on its load, up to 80 minutes for `--days 100`).
`--clone-days N` (0 = off) synthesizes only the first N days (cached as START_START+N/, the tree a
`--days N` run uses) and makes every other granule by copying the synthesized granule of the same
half-hour slot (day index modulo N) and rewriting, in place with h5py, its `Grid/time` and
`Grid/time_bnds` values to the new start (seconds since the epoch in the file's `units`, computed
as synth does and checked against the source granule's name first); the copy is stored under the
new granule's key. A few clones are checked with `imerg-ingest virtualize` before anything runs.
Cloned granules share their chunk bytes (and their `FileHeader` attribute still names the source
granule); the service reads only the metadata and the time values plus whole objects, so the load
is the same as with synthesized granules. A tree built this way is marked by a START_END.cloned
file next to it, and the result line then carries `cloned_from_days`."""

import argparse
import datetime as dt
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import http.client
import xml.etree.ElementTree as ET

SIG = "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/{}/aws4_request, SignedHeaders=host, Signature=0"
ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        t0 = time.time()
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.time() - t0 > 30:
                    raise SystemExit("moto did not start")
                time.sleep(0.2)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def req(self, method, path, body=b"", service="s3", headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        h = {"Authorization": SIG.format(service)}
        h.update(headers or {})
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        if r.status >= 300:
            raise SystemExit(f"{method} {path}: {r.status} {data[:300]!r}")
        return data

    def sqs(self, **form):
        body = urllib.parse.urlencode(form).encode()
        return self.req(
            "POST", "/", body, "sqs", {"Content-Type": "application/x-www-form-urlencoded"}
        ).decode()

    def queue_depth(self, url):
        xml = self.sqs(Action="GetQueueAttributes", QueueUrl=url, **{"AttributeName.1": "All"})
        root = ET.fromstring(xml)
        vals = {}
        for a in root.iter():
            if a.tag.endswith("Attribute"):
                name = [c.text for c in a if c.tag.endswith("Name")][0]
                value = [c.text for c in a if c.tag.endswith("Value")][0]
                vals[name] = value
        return int(vals["ApproximateNumberOfMessages"]) + int(
            vals["ApproximateNumberOfMessagesNotVisible"]
        )


COLLECTION = "GPM_L3/GPM_3IMERGHH.07"
SLOT = dt.timedelta(minutes=30)
NAME_RE = re.compile(r"3B-HHR\.MS\.MRG\.3IMERG\.(\d{8})-S(\d{6})-E(\d{6})\.(\d{4})\.V07B\.HDF5$")


def granule_key(t):
    """Bucket key of the half-hourly Final granule starting at `t` (UTC), as `synth` names it."""
    e = t + SLOT - dt.timedelta(seconds=1)
    return (
        f"{COLLECTION}/{t:%Y}/{t.timetuple().tm_yday:03d}/"
        f"3B-HHR.MS.MRG.3IMERG.{t:%Y%m%d}-S{t:%H%M%S}-E{e:%H%M%S}.{t.hour * 60 + t.minute:04d}.V07B.HDF5"
    )


def key_start(key):
    m = NAME_RE.search(key)
    if not m:
        raise SystemExit(f"not a granule name: {key}")
    return dt.datetime.strptime(m[1] + m[2], "%Y%m%d%H%M%S").replace(tzinfo=dt.timezone.utc)


def time_value(t, units):
    """`t` in the file's time units, as synth computes it: whole seconds since the epoch."""
    m = re.fullmatch(r"seconds since (\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})(?: UTC)?", units)
    if not m:
        raise SystemExit(f"unexpected time units {units!r}")
    epoch = dt.datetime.strptime(f"{m[1]} {m[2]}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.timezone.utc)
    return int((t - epoch).total_seconds())


def synthesize(binary, start, end, cache):
    t0 = time.time()
    shutil.rmtree(cache + ".tmp", ignore_errors=True)
    subprocess.run(
        [binary, "synth", "--start", start, "--end", end, "--deflate-level", "1", "--out", cache + ".tmp"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    os.rename(cache + ".tmp", cache)
    print(f"synthesized {start}..{end} in {time.time() - t0:.0f} s", file=sys.stderr)


def tree(root):
    out = []
    for r, _, names in os.walk(root):
        for n in names:
            out.append(os.path.relpath(os.path.join(r, n), root))
    return sorted(out)


def clone_tree(binary, start, days, clone_days, seed, cache):
    """Build START_END/ from the synthesized first `clone_days` days in `seed` (see the docstring)."""
    import h5py  # only this path needs it

    t0 = time.time()
    first = dt.datetime.strptime(start, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
    per_day = int(dt.timedelta(days=1) / SLOT)
    seed_keys = [granule_key(first + i * SLOT) for i in range(clone_days * per_day)]
    if tree(seed) != sorted(seed_keys):
        raise SystemExit(f"{seed} does not hold exactly the granules this script names; delete it")
    # The source granules' time values, checked against their names.
    seed_bounds = {}
    for k in seed_keys:
        with h5py.File(os.path.join(seed, k), "r") as h:
            units = h["Grid/time"].attrs["units"]
            units = units.decode() if isinstance(units, bytes) else str(units)
            want = time_value(key_start(k), units)
            tv, tb = h["Grid/time"][...], h["Grid/time_bnds"][...]
            if tv.shape != (1,) or tb.shape != (1, 2) or int(tv[0]) != want or int(tb[0, 0]) != want:
                raise SystemExit(f"{k}: time {tv} / time_bnds {tb}, expected {want} ({units})")
            seed_bounds[k] = (units, int(tb[0, 1]) - int(tb[0, 0]))

    tmp = cache + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    clones = []
    for i in range(days * per_day):
        t = first + i * SLOT
        key = granule_key(t)
        src_key = seed_keys[i % len(seed_keys)]
        dst = os.path.join(tmp, key)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(os.path.join(seed, src_key), dst)
        if key == src_key:
            continue
        units, width = seed_bounds[src_key]
        v = time_value(t, units)
        with h5py.File(dst, "r+") as h:
            h["Grid/time"][0] = v
            h["Grid/time_bnds"][0] = [v, v + width]
        clones.append(dst)
    # The service refuses a granule whose time value does not match its name: check a few.
    for f in clones[:1] + clones[len(clones) // 2 : len(clones) // 2 + 1] + clones[-1:]:
        r = subprocess.run([binary, "virtualize", f], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"virtualize {f} failed ({r.returncode}): {r.stderr[-2000:]}")
    os.rename(tmp, cache)
    with open(cache + ".cloned", "w") as fh:
        json.dump({"clone_days": clone_days, "seed": os.path.basename(seed), "clones": len(clones)}, fh)
        fh.write("\n")
    print(f"cloned {len(clones)} granules from {clone_days} day(s) in {time.time() - t0:.0f} s", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--start", default="2024-06-01")
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--mode", choices=["burst", "live"], default="burst")
    ap.add_argument(
        "--clone-days", type=int, default=0,
        help="synthesize only the first N days and clone the rest (0: synthesize every granule)",
    )
    ap.add_argument("--granules-cache", default=os.path.expanduser("~/.cache/imerg-ingest/load-granules"))
    ap.add_argument("--out")
    a = ap.parse_args()

    start = time.strptime(a.start, "%Y-%m-%d")
    end = time.strftime("%Y-%m-%d", time.gmtime(time.mktime(start) - time.timezone + a.days * 86400))
    cache = os.path.join(a.granules_cache, f"{a.start}_{end}")
    if not os.path.isdir(cache):
        if 0 < a.clone_days < a.days:
            seed_end = time.strftime(
                "%Y-%m-%d", time.gmtime(time.mktime(start) - time.timezone + a.clone_days * 86400)
            )
            seed = os.path.join(a.granules_cache, f"{a.start}_{seed_end}")
            if not os.path.isdir(seed):
                synthesize(a.bin, a.start, seed_end, seed)
            clone_tree(a.bin, a.start, a.days, a.clone_days, seed, cache)
        else:
            synthesize(a.bin, a.start, end, cache)
    else:
        print(f"reusing {cache}", file=sys.stderr)
    cloned_from = None
    if os.path.exists(cache + ".cloned"):
        with open(cache + ".cloned") as fh:
            cloned_from = json.load(fh)["clone_days"]
        if not a.clone_days:
            print(f"note: {cache} was built with --clone-days {cloned_from}", file=sys.stderr)
    files = tree(cache)

    moto = Moto()
    try:
        for b in ("imerg-src", "imerg-repo"):
            moto.req("PUT", f"/{b}")
        moto.sqs(Action="CreateQueue", QueueName="granules-dlq")
        xml = moto.sqs(Action="CreateQueue", QueueName="granules")
        queue = ET.fromstring(xml).find(".//{*}QueueUrl").text
        moto.sqs(
            Action="SetQueueAttributes",
            QueueUrl=queue,
            **{
                "Attribute.1.Name": "RedrivePolicy",
                "Attribute.1.Value": json.dumps(
                    {
                        "deadLetterTargetArn": "arn:aws:sqs:us-east-1:123456789012:granules-dlq",
                        "maxReceiveCount": "5",
                    }
                ),
            },
        )
        moto.req(
            "PUT",
            "/imerg-src?notification",
            b'<?xml version="1.0" encoding="UTF-8"?><NotificationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><QueueConfiguration><Id>granules</Id><Queue>arn:aws:sqs:us-east-1:123456789012:granules</Queue><Event>s3:ObjectCreated:*</Event></QueueConfiguration></NotificationConfiguration>',
        )

        def upload():
            t0 = time.time()
            for f in files:
                with open(os.path.join(cache, f), "rb") as fh:
                    moto.req("PUT", f"/imerg-src/{f}", fh.read())
            return time.time() - t0

        data = tempfile.mkdtemp(prefix="imerg-load-")
        log_path = os.path.join(data, "serve.log")
        upload_s = None
        if a.mode == "burst":
            upload_s = upload()
            print(f"uploaded {len(files)} granules in {upload_s:.0f} s", file=sys.stderr)
        env = dict(os.environ, **ENV)
        serve = subprocess.Popen(
            [
                a.bin, "serve", "--log-format", "json", "--data-dir", data,
                "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--watch", "false",
                "--repo", "s3://imerg-repo/store", "--repo-endpoint", moto.endpoint, "--repo-region", "us-east-1",
                "--source", "s3://imerg-src", "--source-endpoint", moto.endpoint, "--source-region", "us-east-1",
                "--sqs-queue-url", queue, "--sqs-endpoint", moto.endpoint, "--sqs-region", "us-east-1",
                "--sqs-wait-seconds", "2",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=open(log_path, "w"),
            text=True,
        )
        line = serve.stdout.readline()
        assert line.startswith("imerg-ingest serving"), line
        t_start = time.time()
        if a.mode == "live":
            upload_s = upload()
            print(f"uploaded {len(files)} granules in {upload_s:.0f} s", file=sys.stderr)

        def status():
            r = subprocess.run(
                [a.bin, "status", "--json", "--repo", "s3://imerg-repo/store",
                 "--repo-endpoint", moto.endpoint, "--repo-region", "us-east-1"],
                env=env, capture_output=True, text=True,
            )
            return json.loads(r.stdout) if r.returncode == 0 else None

        peak_rss_kb = 0
        while True:
            with open(f"/proc/{serve.pid}/status") as fh:
                for l in fh:
                    if l.startswith("VmHWM"):
                        peak_rss_kb = int(l.split()[1])
            st = status()
            if st and st["granules_present"] == len(files) and moto.queue_depth(queue) == 0:
                break
            if time.time() - t_start > 1800:
                raise SystemExit(f"not drained after 30 min: {st}")
            time.sleep(1)
        drained_s = time.time() - t_start
        print(f"drained in {drained_s:.0f} s (peak RSS {peak_rss_kb / 1024:.0f} MB)", file=sys.stderr)
        serve.terminate()
        serve.wait(timeout=120)
        lags = []
        for l in open(log_path):
            try:
                rec = json.loads(l)
            except ValueError:
                continue
            f = rec.get("fields", {})
            if f.get("message") == "message done and deleted" and f.get("granules", 0) > 0:
                lags.append(float(f["lag_seconds"]))
        lags.sort()
        result = {
            "mode": a.mode,
            "notifications": len(files),
            "upload_seconds": round(upload_s, 1),
            "drained_seconds": round(drained_s, 1),
            "granules_per_second": round(len(files) / drained_s, 1),
            "commits": st["commits"],
            "granules_present": st["granules_present"],
            "peak_rss_mb": round(peak_rss_kb / 1024, 1),
            "lag_seconds": {
                "count": len(lags),
                "median": round(statistics.median(lags), 2),
                "p95": round(lags[int(0.95 * (len(lags) - 1))], 2),
                "max": round(lags[-1], 2),
            },
        }
        if cloned_from:
            result["cloned_from_days"] = cloned_from
        print(json.dumps(result))
        if a.out:
            with open(a.out, "a") as fh:
                fh.write(json.dumps(result) + "\n")
    finally:
        moto.proc.kill()


if __name__ == "__main__":
    main()
