"""Tests of range_proxy.py's framing, log and rate limit against a fake upstream on loopback.
`python -m pytest test_range_proxy.py` or `python test_range_proxy.py` (stdlib only)."""

import asyncio
import http.client
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BIG = 1_000_000


async def fake_upstream(reader, writer):
    """Answers by path: /cl, /chunked, /close (close-delimited), /nobody (204), /echo (the
    request body's length, Content-Length or chunked), /continue (100 Continue first), /big."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            break
        lines = head.decode().split("\r\n")
        method, path, _ = lines[0].split(" ")
        path = path.split("?")[0]
        hdrs = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        if hdrs.get("expect") == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = b""
        if "content-length" in hdrs:
            body = await reader.readexactly(int(hdrs["content-length"]))
        elif hdrs.get("transfer-encoding") == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        if path == "/cl":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + (b"" if method == "HEAD" else b"hello"))
        elif path == "/chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\nX-Trailer: 1\r\n\r\n")
        elif path == "/nobody":
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        elif path in ("/echo", "/continue"):
            out = str(len(body)).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(out), out))
        elif path == "/big":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG + b"x" * BIG)
        elif path == "/close":
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            await writer.drain()
            break
        await writer.drain()
    writer.close()


def start_upstream():
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box = {}

    def run():
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(fake_upstream, "127.0.0.1", 0))
        box["port"] = server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()
    threading.Thread(target=run, daemon=True).start()
    ready.wait(10)
    return box["port"]


class Proxy:
    def __init__(self, upstream_port, *extra):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "range_proxy.py"), "--upstream",
             f"127.0.0.1:{upstream_port}", *extra], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        assert line.startswith("listening http://127.0.0.1:"), line
        self.port = int(line.rsplit(":", 1)[1])

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def call(self, method, path):
        c = self.conn()
        c.request(method, path)
        r = c.getresponse()
        body = r.read()
        c.close()
        assert r.status == 200, (r.status, body)
        return json.loads(body)

    def stop(self):
        self.proc.terminate()
        assert self.proc.wait(10) == 0


def test_framing_and_log():
    p = Proxy(start_upstream())
    try:
        c = p.conn()  # one keep-alive connection for all of these
        c.request("GET", "/cl?x=1", headers={"Range": "bytes=0-4"})
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"hello")
        c.request("HEAD", "/cl")
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"")
        c.request("GET", "/chunked")
        r = c.getresponse()
        assert r.read() == b"abcdefg"
        c.request("GET", "/nobody")
        r = c.getresponse()
        assert (r.status, r.read()) == (204, b"")
        c.request("POST", "/echo", body=b"z" * 1000)
        assert c.getresponse().read() == b"1000"
        c.request("POST", "/echo", body=iter([b"ab", b"cde"]), encode_chunked=True)
        assert c.getresponse().read() == b"5"
        c.request("PUT", "/continue", body=b"q" * 70000, headers={"Expect": "100-continue"})
        assert c.getresponse().read() == b"70000"
        c.request("GET", "/close")
        r = c.getresponse()
        assert r.read() == b"until the end"
        c.close()

        log = p.call("GET", "/__proxy/log")
        assert [(r["method"], r["path"], r["status"], r["req_body_bytes"], r["resp_body_bytes"])
                for r in log] == [
            ("GET", "/cl", 200, 0, 5), ("HEAD", "/cl", 200, 0, 0), ("GET", "/chunked", 200, 0, 7),
            ("GET", "/nobody", 204, 0, 0), ("POST", "/echo", 200, 1000, 4),
            ("POST", "/echo", 200, 5, 1), ("PUT", "/continue", 200, 70000, 5),
            ("GET", "/close", 200, 0, 13)]
        assert log[0]["query"] == "x=1" and log[0]["range"] == "bytes=0-4"
        assert len({r["conn"] for r in log}) == 1
        for r in log:
            assert r["t_start"] <= r["t_first_byte"] <= r["t_end"]
        assert p.call("POST", "/__proxy/reset") == {"ok": True}
        assert p.call("GET", "/__proxy/log") == []
    finally:
        p.stop()


def test_rate_limit():
    p = Proxy(start_upstream(), "--rate-mbit", "0")
    try:
        assert p.call("POST", "/__proxy/rate?mbit=20") == {"mbit": 20.0}
        t0 = time.monotonic()
        threads = []
        for _ in range(2):  # two connections share the bucket: 2 MB at 2.5 MB/s ~ 0.8 s
            def get():
                c = p.conn()
                c.request("GET", "/big")
                assert len(c.getresponse().read()) == BIG
                c.close()
            threads.append(threading.Thread(target=get))
            threads[-1].start()
        for t in threads:
            t.join()
        took = time.monotonic() - t0
        assert 0.7 < took < 3.0, took
        p.call("POST", "/__proxy/rate?mbit=0")
        t0 = time.monotonic()
        c = p.conn()
        c.request("GET", "/big")
        assert len(c.getresponse().read()) == BIG
        assert time.monotonic() - t0 < 0.5
        log = p.call("GET", "/__proxy/log")
        assert [r["resp_body_bytes"] for r in log] == [BIG] * 3
    finally:
        p.stop()


if __name__ == "__main__":
    n = 0
    for name, fn in sorted(globals().items()):
        if name.startswith("test_") and callable(fn):
            fn()
            n += 1
    print(f"{n} passed, 0 failed")
