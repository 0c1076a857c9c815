"""Checks fault_proxy.py in front of a real moto server, with boto3 as the client.

  python tests/python/test_fault_proxy.py      (the venv with moto[server] and boto3)

Starts moto (`python -m moto.server -H 127.0.0.1 -p PORT`, as services/imerg-ingest/tests/common
does) and the proxy, then checks pass-through (keep-alive, Host, chunked bodies, multipart,
conditional PUTs), every fault mode, `times`, seeded `probability`, the log and the stats.
Prints one line per check; exits non-zero on the first failure.
"""

import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import botocore.exceptions
from botocore.config import Config

HERE = os.path.dirname(os.path.abspath(__file__))
PROXY = os.path.join(HERE, "fault_proxy.py")
BUCKET = "fault-test"
AUTH = ("AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=0")
CHILDREN = []


def check(cond, what):
    if not cond:
        print(f"FAIL {what}", flush=True)
        raise SystemExit(1)
    print(f"ok   {what}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto():
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    CHILDREN.append(p)
    t0 = time.monotonic()
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() - t0 > 30 or p.poll() is not None:
                raise SystemExit("moto_server did not start")
            time.sleep(0.2)


def start_proxy(upstream, seed=7):
    p = subprocess.Popen([sys.executable, PROXY, "--upstream", upstream, "--port", "0",
                          "--seed", str(seed)], stdout=subprocess.PIPE, text=True)
    CHILDREN.append(p)
    line = p.stdout.readline().strip()
    if not line.startswith("listening on http://127.0.0.1:"):
        raise SystemExit(f"proxy said {line!r}")
    return line.split("listening on ", 1)[1]


def s3(endpoint, read_timeout=10):
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
        aws_secret_access_key="test",
        # One attempt, no retry: botocore's `max_attempts` counts retries (1 means two requests).
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"},
                      s3={"addressing_style": "path"}, read_timeout=read_timeout, connect_timeout=5))


def control(proxy, method, path, obj=None):
    host, port = proxy.split("//")[1].split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    body = None if obj is None else json.dumps(obj).encode()
    c.request(method, path, body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = json.loads(r.read())
    c.close()
    if r.status != 200:
        raise SystemExit(f"{method} {path}: {r.status} {data}")
    return data


def rules(proxy, rs, seed=None):
    control(proxy, "POST", "/__fault/rules" + (f"?seed={seed}" if seed is not None else ""), rs)


def fails(fn, kind):
    """Runs fn; returns (the exception or None, seconds taken)."""
    t0 = time.monotonic()
    try:
        fn()
        return None, time.monotonic() - t0
    except kind as e:
        return e, time.monotonic() - t0


def status_of(e):
    return e.response["ResponseMetadata"]["HTTPStatusCode"] if e is not None else None


def exists(client, key):
    try:
        client.head_object(Bucket=BUCKET, Key=key)
        return True
    except botocore.exceptions.ClientError as e:
        if status_of(e) == 404:
            return False
        raise


class Echo(BaseHTTPRequestHandler):
    """A stand-in upstream answering with the request it got: headers and body length."""
    protocol_version = "HTTP/1.1"

    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        out = json.dumps({"headers": self.headers.items(), "len": len(body),
                          "body": body.decode("latin-1")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.send_header("X-Dup", "1")
        self.send_header("X-Dup", "2")
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_PUT = do_POST = answer

    def log_message(self, *a):
        pass


def framing():
    echo = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    proxy = start_proxy(f"http://127.0.0.1:{echo.server_address[1]}")
    port = int(proxy.rsplit(":", 1)[1])
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.putrequest("PUT", "/b/k?x=1", skip_accept_encoding=True)
    c.putheader("Transfer-Encoding", "chunked")
    c.putheader("Expect", "100-continue")
    c.putheader("If-None-Match", "*")
    c.endheaders()
    c.send(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n")
    r = c.getresponse()
    got = json.loads(r.read())
    h = {k.lower(): v for k, v in got["headers"]}
    check(r.status == 200 and got["body"] == "hello world" and h.get("content-length") == "11"
          and "transfer-encoding" not in h and "expect" not in h,
          "a chunked request body is de-chunked and sent with Content-Length; Expect is dropped")
    check(h.get("host") == f"127.0.0.1:{port}", f"the Host header reaches upstream unchanged "
          f"({h.get('host')})")
    check(h.get("if-none-match") == "*", "If-None-Match is forwarded")
    check(r.getheader("X-Dup") == "1, 2", "repeated response headers are kept")
    sock = c.sock
    c.request("GET", "/again")
    r = c.getresponse()
    r.read()
    check(r.status == 200 and c.sock is sock, "the client connection is kept alive")
    echo.shutdown()


def main():
    framing()
    moto = start_moto()
    proxy = start_proxy(moto)
    print(f"moto at {moto}, proxy at {proxy}", flush=True)
    direct, via = s3(moto), s3(proxy)
    expected = {}  # fault mode -> requests it should have affected

    def expect(mode, n=1):
        expected[mode] = expected.get(mode, 0) + n

    # -- pass-through -------------------------------------------------------------------------
    via.create_bucket(Bucket=BUCKET)
    via.put_object(Bucket=BUCKET, Key="a", Body=b"alpha")
    check(direct.get_object(Bucket=BUCKET, Key="a")["Body"].read() == b"alpha",
          "PUT through the proxy lands in moto (Host of the proxy accepted by moto)")
    check(via.get_object(Bucket=BUCKET, Key="a")["Body"].read() == b"alpha", "GET through the proxy")
    check(via.head_object(Bucket=BUCKET, Key="a")["ContentLength"] == 5, "HEAD through the proxy")
    keys = [o["Key"] for o in via.list_objects_v2(Bucket=BUCKET)["Contents"]]
    check(keys == ["a"], "ListObjectsV2 (a query string) through the proxy")
    r = via.get_object(Bucket=BUCKET, Key="a", Range="bytes=1-3")
    check(r["Body"].read() == b"lph" and r["ResponseMetadata"]["HTTPStatusCode"] == 206,
          "ranged GET through the proxy: 206")
    big = os.urandom(11 * 1024 * 1024)
    from boto3.s3.transfer import TransferConfig
    via.upload_fileobj(io.BytesIO(big), BUCKET, "big", Config=TransferConfig(
        multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024,
        max_concurrency=2))
    check(direct.get_object(Bucket=BUCKET, Key="big")["Body"].read() == big,
          "a multipart upload (POST ?uploads, PUT parts, POST complete) through the proxy")
    check(via.get_object(Bucket=BUCKET, Key="big")["Body"].read() == big,
          "an 11 MiB GET through the proxy")
    port = int(proxy.rsplit(":", 1)[1])
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.putrequest("PUT", f"/{BUCKET}/chunked", skip_accept_encoding=True)
    c.putheader("Authorization", AUTH)
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders()
    c.send(b"4\r\nchun\r\n3\r\nked\r\n0\r\n\r\n")
    r = c.getresponse()
    r.read()
    c.close()
    check(r.status == 200 and direct.get_object(Bucket=BUCKET, Key="chunked")["Body"].read()
          == b"chunked", "a chunked PUT to moto through the proxy")

    # -- conditional PUTs ---------------------------------------------------------------------
    via.put_object(Bucket=BUCKET, Key="cond", Body=b"1", IfNoneMatch="*")
    e, _ = fails(lambda: via.put_object(Bucket=BUCKET, Key="cond", Body=b"2", IfNoneMatch="*"),
                 botocore.exceptions.ClientError)
    check(status_of(e) == 412, f"second If-None-Match: * PUT gets 412 through the proxy ({e})")
    etag = direct.head_object(Bucket=BUCKET, Key="cond")["ETag"]
    e, _ = fails(lambda: via.put_object(Bucket=BUCKET, Key="cond", Body=b"3", IfMatch='"nope"'),
                 botocore.exceptions.ClientError)
    check(status_of(e) == 412, "If-Match with a stale ETag gets 412 through the proxy")
    via.put_object(Bucket=BUCKET, Key="cond", Body=b"4", IfMatch=etag)
    check(direct.get_object(Bucket=BUCKET, Key="cond")["Body"].read() == b"4",
          "If-Match with the current ETag succeeds through the proxy")

    # -- error --------------------------------------------------------------------------------
    rules(proxy, [{"method": "PUT", "path": "/e1$", "mode": "error"}])
    e, _ = fails(lambda: via.put_object(Bucket=BUCKET, Key="e1", Body=b"x"),
                 botocore.exceptions.ClientError)
    expect("error")
    check(status_of(e) == 503 and e.response["Error"]["Code"] == "SlowDown",
          f"error: 503 SlowDown ({e})")
    check(not exists(direct, "e1"), "error: nothing written")
    check(via.get_object(Bucket=BUCKET, Key="a")["Body"].read() == b"alpha",
          "error: a rule for PUT leaves GET alone")
    rules(proxy, [{"path": "/e2$", "mode": "error", "status": 500, "code": "InternalError"}])
    e, _ = fails(lambda: via.get_object(Bucket=BUCKET, Key="e2"), botocore.exceptions.ClientError)
    expect("error")
    check(status_of(e) == 500 and e.response["Error"]["Code"] == "InternalError",
          "error: status and code as asked")

    # -- forward_then_error: the ambiguous commit ---------------------------------------------
    rules(proxy, [{"method": "PUT", "path": "/fte$", "mode": "forward_then_error"}])
    e, _ = fails(lambda: via.put_object(Bucket=BUCKET, Key="fte", Body=b"applied"),
                 botocore.exceptions.ClientError)
    expect("forward_then_error")
    check(status_of(e) == 500, f"forward_then_error: the client gets 500 ({e})")
    check(direct.get_object(Bucket=BUCKET, Key="fte")["Body"].read() == b"applied",
          "forward_then_error: the object is in moto all the same")
    rules(proxy, [{"method": "PUT", "path": "/fte-cond$", "mode": "forward_then_error",
                   "times": 1}])
    e, _ = fails(lambda: via.put_object(Bucket=BUCKET, Key="fte-cond", Body=b"1",
                                        IfNoneMatch="*"), botocore.exceptions.ClientError)
    expect("forward_then_error")
    e2, _ = fails(lambda: via.put_object(Bucket=BUCKET, Key="fte-cond", Body=b"1",
                                         IfNoneMatch="*"), botocore.exceptions.ClientError)
    check(status_of(e) == 500 and status_of(e2) == 412,
          "forward_then_error on a conditional PUT: 500, and its retry gets 412")

    # -- reset, forward_then_reset ------------------------------------------------------------
    conn_errors = (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)
    rules(proxy, [{"method": "PUT", "path": "/r1$", "mode": "reset"},
                  {"method": "PUT", "path": "/r2$", "mode": "forward_then_reset"}])
    e, _ = fails(lambda: via.put_object(Bucket=BUCKET, Key="r1", Body=b"x"), conn_errors)
    expect("reset")
    check(e is not None, f"reset: the client sees the connection drop ({type(e).__name__}: {e})")
    check(not exists(direct, "r1"), "reset: nothing written")
    e, _ = fails(lambda: via.put_object(Bucket=BUCKET, Key="r2", Body=b"x"), conn_errors)
    expect("forward_then_reset")
    check(e is not None, f"forward_then_reset: the connection drops ({type(e).__name__})")
    check(exists(direct, "r2"), "forward_then_reset: the object is written")
    check(via.get_object(Bucket=BUCKET, Key="a")["Body"].read() == b"alpha",
          "after resets the proxy still serves")
    # The RST itself, seen on a raw socket.
    rules(proxy, [{"path": "/rst$", "mode": "reset"}])
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(f"GET /{BUCKET}/rst HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\n\r\n".encode())
    try:
        got = s.recv(100)
        rst = False
    except ConnectionResetError:
        rst, got = True, None
    s.close()
    expect("reset")
    check(rst, f"reset: the socket gets an RST, not a FIN (recv -> {got!r})")

    # -- hang ---------------------------------------------------------------------------------
    rules(proxy, [{"method": "GET", "path": "/a$", "mode": "hang"}])
    e, took = fails(lambda: s3(proxy, read_timeout=1).get_object(Bucket=BUCKET, Key="a"),
                    botocore.exceptions.ReadTimeoutError)
    expect("hang")
    check(e is not None and took < 3, f"hang: the client times out after its read_timeout "
          f"({took:.2f} s)")
    hung = [x for x in control(proxy, "GET", "/__fault/log") if x["fault"] == "hang"]
    check(len(hung) == 1 and hung[0]["status"] is None, "hang: logged, with no status")
    control(proxy, "POST", "/__fault/clear")
    check(control(proxy, "GET", "/__fault/rules") == [], "clear: no rules left")
    check(via.get_object(Bucket=BUCKET, Key="a")["Body"].read() == b"alpha",
          "hang: after clear the proxy serves again")
    # A hang released by clear closes its connection.
    rules(proxy, [{"path": "/a$", "mode": "hang"}])
    box = {}
    t = threading.Thread(target=lambda: box.update(r=fails(
        lambda: s3(proxy, read_timeout=30).get_object(Bucket=BUCKET, Key="a"), conn_errors)))
    t.start()
    time.sleep(0.5)
    expect("hang")
    control(proxy, "POST", "/__fault/clear")
    t.join(10)
    check(not t.is_alive() and box["r"][0] is not None and box["r"][1] < 5,
          f"hang: clear closes a hanging connection ({type(box['r'][0]).__name__})")
    rules(proxy, [{"path": "/a$", "mode": "hang", "seconds": 0.5}])
    e, took = fails(lambda: via.get_object(Bucket=BUCKET, Key="a"), conn_errors)
    expect("hang")
    check(e is not None and 0.4 < took < 3, f"hang with seconds: closed after them ({took:.2f} s)")

    # -- slow, delay --------------------------------------------------------------------------
    payload = os.urandom(4000)
    direct.put_object(Bucket=BUCKET, Key="s", Body=payload)
    rules(proxy, [{"method": "GET", "path": "/s$", "mode": "slow", "bytes_per_second": 4000}])
    t0 = time.monotonic()
    r = via.get_object(Bucket=BUCKET, Key="s")
    head_took = time.monotonic() - t0
    body = r["Body"].read()
    took = time.monotonic() - t0
    expect("slow")
    check(body == payload and 0.8 < took < 3 and head_took < 0.5,
          f"slow: 4000 B at 4000 B/s, headers at once ({head_took:.2f} s), body in {took:.2f} s")
    rules(proxy, [{"method": "GET", "path": "/s$", "mode": "delay", "seconds": 0.7}])
    t0 = time.monotonic()
    body = via.get_object(Bucket=BUCKET, Key="s")["Body"].read()
    took = time.monotonic() - t0
    expect("delay")
    check(body == payload and 0.7 <= took < 2, f"delay: 0.7 s, then forwarded ({took:.2f} s)")

    # -- times --------------------------------------------------------------------------------
    rules(proxy, [{"method": "PUT", "path": "/t$", "mode": "error", "times": 2}])
    got = []
    for _ in range(4):
        e, _ = fails(lambda: via.put_object(Bucket=BUCKET, Key="t", Body=b"x"),
                     botocore.exceptions.ClientError)
        got.append(status_of(e) or 200)
    expect("error", 2)
    check(got == [503, 503, 200, 200], f"times: 2 affected, then through ({got})")
    left = control(proxy, "GET", "/__fault/rules")
    check(left[0]["times"] == 0 and left[0]["hits"] == 2, "times: GET /__fault/rules shows 0 left")

    # -- probability, seeded ------------------------------------------------------------------
    def pattern(px, seed=None):
        rules(px, [{"method": "HEAD", "path": "/a$", "mode": "error", "probability": 0.5}],
              seed=seed)
        client = via if px == proxy else s3(px)
        out = ""
        for _ in range(24):
            e, _ = fails(lambda: client.head_object(Bucket=BUCKET, Key="a"),
                         botocore.exceptions.ClientError)
            out += "x" if e is not None else "."
        control(px, "POST", "/__fault/clear")
        return out

    p1 = pattern(proxy, seed=7)
    expect("error", p1.count("x"))
    p2 = pattern(proxy, seed=7)
    expect("error", p2.count("x"))
    other = start_proxy(moto, seed=7)
    p3 = pattern(other)
    p4 = pattern(proxy, seed=8)
    expect("error", p4.count("x"))
    check("x" in p1 and "." in p1, f"probability 0.5: some affected, some not ({p1})")
    check(p1 == p2 == p3, f"probability: the same seed gives the same sequence, reseeded or "
          f"a new proxy with --seed 7 ({p2}, {p3})")
    check(p4 != p1, f"probability: another seed, another sequence ({p4})")
    rules(proxy, [{"path": "/a$", "mode": "error", "probability": 0.0},
                  {"path": "/a$", "mode": "delay", "seconds": 0}])
    via.head_object(Bucket=BUCKET, Key="a")
    expect("delay")
    check(control(proxy, "GET", "/__fault/log")[-1]["fault"] == "delay",
          "rules in order: a rule that loses its draw passes to the next")
    control(proxy, "POST", "/__fault/clear")

    # -- log, stats, bad rules ----------------------------------------------------------------
    log = control(proxy, "GET", "/__fault/log")
    stats = control(proxy, "GET", "/__fault/stats")
    check(all(set(x) >= {"method", "path", "status", "fault", "t"} for x in log)
          and not any(x["path"].startswith("/__fault/") for x in log),
          f"log: {len(log)} entries with method, path, status, fault, t; no control requests")
    check(all(x["t"] <= y["t"] for x, y in zip(log, log[1:])), "log: in order of arrival")
    fte = [x for x in log if x["path"].endswith("/fte")][0]
    check(fte == dict(fte, method="PUT", status=500, fault="forward_then_error",
                      upstream_status=200), f"log: the ambiguous commit ({fte})")
    err = [x for x in log if x["path"].endswith("/e1")][0]
    check(err["status"] == 503 and err["upstream_status"] is None,
          "log: an error without forwarding has no upstream_status")
    counted = {m: sum(1 for x in log if x["fault"] == m) for m in expected}
    check(all(stats[m] == n for m, n in expected.items()) and counted == expected,
          f"stats and log agree with the faults injected ({expected})")
    check(stats["total"] == len(log) and stats["none"] == sum(x["fault"] is None for x in log),
          f"stats: total {stats['total']}, none {stats['none']}")
    host, port_s = proxy.split("//")[1].split(":")
    c = http.client.HTTPConnection(host, int(port_s), timeout=5)
    c.request("POST", "/__fault/rules", body=b'[{"mode": "explode"}]')
    r = c.getresponse()
    msg = r.read()
    check(r.status == 400, f"a bad rule is refused with 400 ({msg.decode()})")
    print("all fault_proxy checks passed", flush=True)


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in CHILDREN:
            p.terminate()
        for p in CHILDREN:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
