"""SQS load benchmark: a burst of notifications (default ten days, 480 granules) through the
production path on a real S3 + SQS server on loopback (moto): granules uploaded to a bucket whose
notifications go to a queue with a dead-letter queue, `imerg-ingest serve` listening to the queue,
reading the granules from the bucket and committing into a repository on the same S3.

Measures: time until every granule is durable and the queue is empty, commits, the service's peak
RSS (VmHWM), and the end-to-end lag of each notification (SentTimestamp -> message deleted, from
the listener's `lag_seconds` log field): median, p95, max.

Usage (test venv, release binary):
    python benches/sqs_load.py --bin ~/.cache/imerg-ingest/target/release/imerg-ingest \
        [--start 2024-06-01 --days 10] [--mode burst|live] [--granules-cache DIR] [--out FILE]

`burst`: every notification is queued before the service starts (a backlog after an outage);
`live`: the service runs while the objects are uploaded as fast as possible.
Prints one JSON object (and appends it to --out)."""

import argparse
import json
import os
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--start", default="2024-06-01")
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--mode", choices=["burst", "live"], default="burst")
    ap.add_argument("--granules-cache", default=os.path.expanduser("~/.cache/imerg-ingest/load-granules"))
    ap.add_argument("--out")
    a = ap.parse_args()

    start = time.strptime(a.start, "%Y-%m-%d")
    end = time.strftime("%Y-%m-%d", time.gmtime(time.mktime(start) - time.timezone + a.days * 86400))
    cache = os.path.join(a.granules_cache, f"{a.start}_{end}")
    if not os.path.isdir(cache):
        t0 = time.time()
        subprocess.run(
            [a.bin, "synth", "--start", a.start, "--end", end, "--deflate-level", "1", "--out", cache + ".tmp"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        os.rename(cache + ".tmp", cache)
        print(f"synthesized {a.days} days in {time.time() - t0:.0f} s", file=sys.stderr)
    files = []
    for root, _, names in os.walk(cache):
        for n in names:
            files.append(os.path.relpath(os.path.join(root, n), cache))
    files.sort()

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
        print(json.dumps(result))
        if a.out:
            with open(a.out, "a") as fh:
                fh.write(json.dumps(result) + "\n")
    finally:
        moto.proc.kill()


if __name__ == "__main__":
    main()
