"""A counting, rate-limiting HTTP/1.1 reverse proxy to put in front of an S3 test server (moto).

  python range_proxy.py --upstream 127.0.0.1:PORT [--listen 127.0.0.1:0] [--rate-mbit 0]
                        [--latency-ms 0]

Prints one line, `listening http://127.0.0.1:NNNN`, once it accepts connections, then serves
until SIGTERM or SIGINT. Stdlib only (asyncio).

Requests are forwarded verbatim, Host header included (SigV4 signs it: clients sign for the
proxy's host:port; moto does not check signatures). Each client connection gets its own
upstream connection, kept alive as long as both sides keep theirs. Request bodies framed by
Content-Length or chunked transfer coding; response bodies framed by Content-Length, chunked,
none (HEAD, 1xx, 204, 304) or the closing of the connection. Interim 1xx responses (e.g. 100
Continue) are passed on.

Every proxied request is recorded:
  {"id", "conn", "method", "path" (without the query), "query", "range" (the Range header or
   null), "status", "req_body_bytes", "resp_body_bytes" (payload bytes, without chunk framing),
   "t_start" (request head received), "t_first_byte" (first response byte sent to the client),
   "t_end" (response fully sent)}     -- times in the proxy's time.monotonic() seconds.

Control endpoints, answered by the proxy itself:
  GET  /__proxy/log            the records, as a JSON array
  POST /__proxy/reset          clears the records
  POST /__proxy/rate?mbit=N    sets the download rate limit (0: unlimited)
  POST /__proxy/latency?ms=N   sets the extra delay before each response (0: none)

The rate limit is one token bucket shared by all connections: response body bytes to the
clients (the download direction) at N Mbit/s = N * 1e6 / 8 bytes/s, sent in pieces of at most
16 KiB, with a 64 KiB burst. `--rate-mbit 100` models a 100 Mbit/s link from a machine outside
the bucket's region; `--latency-ms` (off by default) adds a fixed delay before each response's
first byte, a stand-in for that link's round-trip time.
"""

import argparse
import asyncio
import json
import signal
import sys
import time
from urllib.parse import parse_qs, urlsplit

PIECE = 16 * 1024  # largest piece sent at once under a rate limit
UNLIMITED_PIECE = 256 * 1024
BURST = 64 * 1024
HEAD_LIMIT = 1 << 20  # largest request or response head accepted


class TokenBucket:
    """Bytes per second shared by every connection. Tokens may go negative: a taker reserves
    its bytes at once and sleeps until the bucket has paid them back, so takers are served in
    order of arrival and the total never exceeds the rate (plus the burst)."""

    def __init__(self, mbit=0.0):
        self.set_mbit(mbit)

    def set_mbit(self, mbit):
        self.mbit = float(mbit)
        self.rate = self.mbit * 1e6 / 8.0
        self.tokens = float(BURST)
        self.stamp = time.monotonic()

    async def take(self, n):
        if self.rate <= 0:
            return
        now = time.monotonic()
        self.tokens = min(float(BURST), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)


class Proxy:
    def __init__(self, upstream_host, upstream_port, mbit, latency_ms):
        self.upstream = (upstream_host, upstream_port)
        self.bucket = TokenBucket(mbit)
        self.latency_s = latency_ms / 1000.0
        self.records = []
        self.next_id = 0
        self.next_conn = 0

    # ---- client connections ------------------------------------------------------------

    async def handle_client(self, c_reader, c_writer):
        conn = self.next_conn
        self.next_conn += 1
        upstream = None  # (reader, writer), opened on the first proxied request
        try:
            while True:
                head = await read_head(c_reader)
                if head is None:
                    break
                t_start = time.monotonic()
                method, target, version, headers = parse_request_head(head)
                close_after = wants_close(version, headers)
                if urlsplit(target).path.startswith("/__proxy/"):
                    await discard_body(c_reader, headers)
                    await self.control(c_writer, method, target)
                    if close_after:
                        break
                    continue
                if upstream is None:
                    try:
                        upstream = await asyncio.open_connection(*self.upstream, limit=HEAD_LIMIT)
                    except OSError as e:
                        await discard_body(c_reader, headers)
                        self.record(conn, method, target, headers, 502, 0, 0, t_start,
                                    time.monotonic(), time.monotonic())
                        await send_simple(c_writer, 502, f"upstream: {e}\n".encode(), close=True)
                        break
                keep = await self.forward(conn, c_reader, c_writer, upstream, head, method,
                                          target, headers, t_start)
                if not keep or close_after:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError):
            pass
        except asyncio.CancelledError:  # shutting down: end this connection quietly
            pass
        finally:
            for w in ([c_writer] + ([upstream[1]] if upstream else [])):
                w.close()
            for w in ([c_writer] + ([upstream[1]] if upstream else [])):
                try:
                    await w.wait_closed()
                except (ConnectionError, OSError):
                    pass

    async def forward(self, conn, c_reader, c_writer, upstream, head, method, target, headers,
                      t_start):
        """One request and its response. Returns whether both connections may be reused."""
        u_reader, u_writer = upstream
        rec = self.record(conn, method, target, headers, None, 0, 0, t_start, None, None)
        u_writer.write(head)
        pump = asyncio.create_task(pump_body(c_reader, u_writer, headers, rec))
        expect_continue = header(headers, "expect", "").lower() == "100-continue"
        sent_continue = False
        try:
            # Interim responses, then the final one.
            while True:
                r_head = await read_head(u_reader)
                if r_head is None:  # upstream closed without an answer: so do we
                    pump.cancel()
                    return False
                status, r_version, r_headers = parse_response_head(r_head)
                if self.latency_s and rec["t_first_byte"] is None:
                    await asyncio.sleep(self.latency_s)
                c_writer.write(r_head)
                await c_writer.drain()
                if rec["t_first_byte"] is None:
                    rec["t_first_byte"] = time.monotonic()
                if 100 <= status < 200 and status != 101:
                    sent_continue = sent_continue or status == 100
                    continue
                break
            rec["status"] = status
            keep = not wants_close(r_version, r_headers)
            if not pump.done() and expect_continue and not sent_continue:
                # Final answer without 100 Continue: the client will not send the body.
                pump.cancel()
                keep = False
            elif not await pump:
                return False
            # The response body.
            if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
                pass
            elif "chunked" in header(r_headers, "transfer-encoding", "").lower():
                await copy_chunked(u_reader, c_writer, rec, "resp_body_bytes", self.bucket)
            elif header(r_headers, "content-length") is not None:
                n = int(header(r_headers, "content-length"))
                await copy_exact(u_reader, c_writer, n, rec, "resp_body_bytes", self.bucket)
            else:
                await copy_to_eof(u_reader, c_writer, rec, "resp_body_bytes", self.bucket)
                keep = False
            await c_writer.drain()
            rec["t_end"] = time.monotonic()
            return keep
        finally:
            if not pump.done():
                pump.cancel()

    def record(self, conn, method, target, headers, status, req_bytes, resp_bytes, t_start,
               t_first_byte, t_end):
        parts = urlsplit(target)
        rec = {"id": self.next_id, "conn": conn, "method": method, "path": parts.path,
               "query": parts.query, "range": header(headers, "range"), "status": status,
               "req_body_bytes": req_bytes, "resp_body_bytes": resp_bytes, "t_start": t_start,
               "t_first_byte": t_first_byte, "t_end": t_end}
        self.next_id += 1
        self.records.append(rec)
        return rec

    # ---- control endpoints -------------------------------------------------------------

    async def control(self, writer, method, target):
        parts = urlsplit(target)
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            if parts.path == "/__proxy/log" and method == "GET":
                body = json.dumps(self.records).encode()
            elif parts.path == "/__proxy/reset" and method == "POST":
                self.records = []
                body = b'{"ok": true}'
            elif parts.path == "/__proxy/rate" and method == "POST":
                self.bucket.set_mbit(float(q["mbit"]))
                body = json.dumps({"mbit": self.bucket.mbit}).encode()
            elif parts.path == "/__proxy/latency" and method == "POST":
                self.latency_s = float(q["ms"]) / 1000.0
                body = json.dumps({"ms": self.latency_s * 1000.0}).encode()
            else:
                await send_simple(writer, 404, b'{"error": "no such control endpoint"}')
                return
        except (KeyError, ValueError) as e:
            await send_simple(writer, 400, json.dumps({"error": repr(e)}).encode())
            return
        await send_simple(writer, 200, body)


# ---- HTTP/1.1 framing ----------------------------------------------------------------------

async def read_head(reader):
    """The bytes of a request or response head (through the blank line), or None at EOF
    before its first byte. Empty lines before a request line are skipped (RFC 9112 2.2)."""
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                return None
            raise
        if line != b"\r\n":
            break
    lines = [line]
    while line != b"\r\n":
        line = await reader.readuntil(b"\r\n")
        lines.append(line)
    return b"".join(lines)


def parse_headers(lines):
    headers = []
    for line in lines:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return headers


def parse_request_head(head):
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    return method.upper(), target, version, parse_headers(lines[1:])


def parse_response_head(head):
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    return int(parts[1]), parts[0], parse_headers(lines[1:])


def header(headers, name, default=None):
    for k, v in headers:
        if k == name:
            return v
    return default


def wants_close(version, headers):
    tokens = {t.strip().lower() for t in header(headers, "connection", "").split(",")}
    if version.upper() == "HTTP/1.0":
        return "keep-alive" not in tokens
    return "close" in tokens


async def send(writer, data, rec, field, bucket):
    """Write `data` to a client, throttled by `bucket` (None: unthrottled), counting it."""
    if bucket is None or bucket.rate <= 0:
        writer.write(data)
        rec[field] += len(data)
        await writer.drain()
        return
    for i in range(0, len(data), PIECE):
        piece = data[i:i + PIECE]
        await bucket.take(len(piece))
        writer.write(piece)
        rec[field] += len(piece)
        await writer.drain()


def piece_size(bucket):
    return PIECE if bucket is not None and bucket.rate > 0 else UNLIMITED_PIECE


async def copy_exact(reader, writer, n, rec, field, bucket=None):
    while n > 0:
        data = await reader.read(min(n, piece_size(bucket)))
        if not data:
            raise ConnectionError("body cut short")
        n -= len(data)
        await send(writer, data, rec, field, bucket)


async def copy_to_eof(reader, writer, rec, field, bucket=None):
    while True:
        data = await reader.read(piece_size(bucket))
        if not data:
            return
        await send(writer, data, rec, field, bucket)


async def copy_chunked(reader, writer, rec, field, bucket=None):
    """Relay a chunked body as it is framed, counting (and throttling) only chunk data."""
    while True:
        line = await reader.readuntil(b"\r\n")
        writer.write(line)
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while True:  # trailer section, then the blank line
                t = await reader.readuntil(b"\r\n")
                writer.write(t)
                if t == b"\r\n":
                    await writer.drain()
                    return
        await copy_exact(reader, writer, size, rec, field, bucket)
        writer.write(await reader.readexactly(2))


async def copy_body(reader, writer, headers, rec, field):
    """The request body, client to upstream (never throttled)."""
    if "chunked" in header(headers, "transfer-encoding", "").lower():
        await copy_chunked(reader, writer, rec, field)
    elif header(headers, "content-length") is not None:
        await copy_exact(reader, writer, int(header(headers, "content-length")), rec, field)
    await writer.drain()


async def pump_body(c_reader, u_writer, headers, rec):
    """The request body, client to upstream. Returns whether it went through whole; if not,
    closes the upstream connection, so that a wait for the response ends too."""
    try:
        await copy_body(c_reader, u_writer, headers, rec, "req_body_bytes")
        return True
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
            ValueError):
        u_writer.close()
        return False


async def discard_body(reader, headers):
    class Sink:
        def write(self, _):
            pass

        async def drain(self):
            pass
    await copy_body(reader, Sink(), headers, {"n": 0}, "n")


async def send_simple(writer, status, body, close=False):
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 502: "Bad Gateway"}[status]
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "")
            + "\r\n")
    writer.write(head.encode() + body)
    await writer.drain()


# ---- main ----------------------------------------------------------------------------------

def host_port(s, default_host="127.0.0.1"):
    host, _, port = s.rpartition(":")
    return (host or default_host).strip("[]"), int(port)


async def serve(args):
    up_host, up_port = host_port(args.upstream)
    proxy = Proxy(up_host, up_port, args.rate_mbit, args.latency_ms)
    host, port = host_port(args.listen)
    server = await asyncio.start_server(proxy.handle_client, host, port, limit=HEAD_LIMIT)
    bound = server.sockets[0].getsockname()
    print(f"listening http://{bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()  # open keep-alive connections are cancelled when the loop ends


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", required=True, help="HOST:PORT of the S3 server")
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free one)")
    ap.add_argument("--rate-mbit", type=float, default=0.0,
                    help="download rate limit in Mbit/s (0: unlimited)")
    ap.add_argument("--latency-ms", type=float, default=0.0,
                    help="extra delay before each response's first byte (0: none)")
    args = ap.parse_args(argv)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
