"""A fault-injecting HTTP/1.1 reverse proxy to put between the service and an S3 test server (moto).

  python fault_proxy.py --upstream http://127.0.0.1:PORT --port 0 [--seed N]

Prints one line, `listening on http://127.0.0.1:NNNN`, once it accepts connections, then serves
until killed. Stdlib only. The Rust integration tests point the service's S3 endpoint at it to
provoke ambiguous commits (the write applied, the client told it failed), 5xx answers, connection
resets, hangs and slow bodies (docs/reliability.md: M5, L14). Its ancestor is
benches/ranged/range_proxy.py (counting, rate limit, latency).

Forwarding: every method, with the request's headers and body, Host unchanged (SigV4 signs the
Host the client used, the proxy's host:port; moto does not check signatures). Chunked request
bodies are de-chunked and sent with a Content-Length; `Expect: 100-continue` is answered by the
proxy. Responses are streamed back with their status, headers and body. Hop-by-hop headers are
not passed on: clients keep their connections alive even though moto's dev server answers
`Connection: close` every time (so each forwarded request opens a new upstream connection; one
per client connection is kept when the upstream allows it).

Control API, on the same port, never forwarded:
  POST /__fault/rules[?seed=N]  replaces the rules with a JSON list (and reseeds the draws if asked)
  GET  /__fault/rules           the rules, with `times` as what is left of it
  GET  /__fault/log             [{method, path (with the query), status (as sent to the client, null
                                 if none), fault (mode or null), upstream_status (moto's, null if
                                 not forwarded), t (seconds since start)}], the last 100000
  POST /__fault/clear           no more rules; hanging requests are released (connection closed)
  GET  /__fault/stats           {"total": n, "none": n, "<mode>": n, ...}

A rule: {"method": "PUT" (or a list; any if absent), "path": a regex searched in path+query,
"mode": ..., "times": N (unlimited if absent), "probability": 0..1 (1), "status": int,
"seconds": float, "bytes_per_second": int, "code"/"message": the S3 error's (by status: 503
SlowDown, 500 InternalError, 412 PreconditionFailed, ...)}. Modes:
  error               answer `status` (503) with an S3 XML error, without forwarding
  forward_then_error  forward (the write is applied), drop moto's answer, answer `status` (500)
  reset               close the connection with an RST (SO_LINGER 0), without forwarding
  forward_then_reset  forward, then reset
  hang                never answer, for `seconds` (3600) or until /__fault/clear (a new rule set
                      does not release it); then close the connection (FIN)
  slow                forward, send the response body at `bytes_per_second` (1000)
  delay               wait `seconds` (1), then forward
Rules are tried in order; the first that matches, has `times` left and wins its draw applies
(and loses one of its `times`). Draws come from one random.Random(--seed, default 0), made only
for probabilities strictly between 0 and 1, so a sequential run is reproducible.
"""

import argparse
import collections
import http.client
import json
import random
import re
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from urllib.parse import parse_qs, urlsplit

MODES = ("error", "forward_then_error", "reset", "forward_then_reset", "hang", "slow", "delay")
DEFAULT_STATUS = {"error": 503, "forward_then_error": 500}
S3_CODES = {400: "InvalidRequest", 403: "AccessDenied", 404: "NoSuchKey", 409: "OperationAborted",
            412: "PreconditionFailed", 429: "SlowDown", 500: "InternalError",
            501: "NotImplemented", 502: "BadGateway", 503: "SlowDown", 504: "GatewayTimeout"}
HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
       "proxy-authorization", "te", "trailer", "trailers", "transfer-encoding", "upgrade"}
LOG_CAP = 100_000
PIECE = 64 * 1024
UPSTREAM_TIMEOUT = 600.0


class BadRule(ValueError):
    pass


def parse_rule(r):
    if not isinstance(r, dict):
        raise BadRule(f"a rule is a JSON object, not {r!r}")
    unknown = set(r) - {"method", "path", "mode", "times", "probability", "status", "seconds",
                        "bytes_per_second", "code", "message"}
    if unknown:
        raise BadRule(f"unknown rule fields {sorted(unknown)}")
    mode = r.get("mode")
    if mode not in MODES:
        raise BadRule(f"mode must be one of {MODES}, not {mode!r}")
    m = r.get("method")
    methods = None if m is None else {x.upper() for x in ([m] if isinstance(m, str) else m)}
    try:
        path = None if r.get("path") is None else re.compile(r["path"])
    except re.error as e:
        raise BadRule(f"path: {e}")
    default_seconds = 3600.0 if mode == "hang" else 1.0
    times = None if r.get("times") is None else int(r["times"])
    return {"method": methods, "path": path, "mode": mode, "times": times,
            "probability": float(r.get("probability", 1.0)),
            "status": int(r.get("status", DEFAULT_STATUS.get(mode, 500))),
            "seconds": float(r.get("seconds", default_seconds)),
            "bytes_per_second": max(1, int(r.get("bytes_per_second", 1000))),
            "code": r.get("code"), "message": r.get("message"), "hits": 0}


def show_rule(r):
    return dict(r, path=r["path"].pattern if r["path"] else None,
                method=sorted(r["method"]) if r["method"] else None)


class State:
    """Rules, log and counters, shared by the connection threads."""

    def __init__(self, upstream, seed):
        self.upstream = upstream
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.rules = []
        self.log = collections.deque(maxlen=LOG_CAP)
        self.stats = collections.Counter({m: 0 for m in ("total", "none") + MODES})
        self.release = threading.Event()  # set (and replaced) by /__fault/clear
        self.t0 = time.monotonic()

    def begin(self, method, path):
        """Picks the rule for a request and records it; returns (rule or None, log entry)."""
        with self.lock:
            chosen = None
            for r in self.rules:
                if r["method"] is not None and method not in r["method"]:
                    continue
                if r["path"] is not None and not r["path"].search(path):
                    continue
                if r["times"] is not None and r["times"] <= 0:
                    continue
                p = r["probability"]
                if p <= 0 or (p < 1 and self.rng.random() >= p):
                    continue
                if r["times"] is not None:
                    r["times"] -= 1
                r["hits"] += 1
                chosen = r
                break
            mode = chosen["mode"] if chosen else None
            entry = {"method": method, "path": path, "status": None, "fault": mode,
                     "upstream_status": None, "t": round(time.monotonic() - self.t0, 6)}
            self.log.append(entry)
            self.stats["total"] += 1
            self.stats[mode or "none"] += 1
            return chosen, entry

    def clear(self):
        with self.lock:
            self.rules = []
            self.release.set()
            self.release = threading.Event()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fault-proxy"
    disable_nagle_algorithm = True

    def setup(self):
        super().setup()
        self.up = None  # the upstream connection, opened on the first forwarded request
        self.up_used = False
        self.rst = False

    def finish(self):
        try:
            super().finish()
        finally:
            if self.up is not None:
                self.up.close()
            if self.rst:  # SO_LINGER 0: close() sends an RST, not a FIN
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.connection.close()

    def log_message(self, *args):
        pass

    # ---- one request ---------------------------------------------------------------------

    def dispatch(self):
        st = self.server.state
        try:
            body, dechunked = self.read_body()
        except ValueError:  # a bad chunk size or Content-Length
            return self.send_error(400, "bad request body framing")
        if urlsplit(self.path).path.startswith("/__fault/"):
            return self.control(st, body)
        rule, entry = st.begin(self.command, self.path)
        mode = rule["mode"] if rule else None
        try:
            if mode == "error":
                self.send_fault(rule, entry)
            elif mode in ("reset", "hang"):
                if mode == "hang":
                    with st.lock:
                        release = st.release
                    release.wait(rule["seconds"])
                self.close_connection = True
                self.rst = mode == "reset"
            elif mode in ("forward_then_error", "forward_then_reset"):
                resp = self.forward(body, dechunked, entry)
                if resp is not None:
                    self.drain(resp)
                if mode == "forward_then_error":
                    self.send_fault(rule, entry)
                else:
                    self.close_connection = self.rst = True
            else:
                if mode == "delay":
                    time.sleep(rule["seconds"])
                resp = self.forward(body, dechunked, entry)
                if resp is None:
                    self.send_fault({"status": 502, "code": "BadGateway",
                                     "message": "fault proxy: upstream unreachable"}, entry)
                else:
                    self.relay(resp, entry, rule["bytes_per_second"] if mode == "slow" else None)
        except (ConnectionError, socket.timeout, OSError):
            self.close_connection = True  # the client went away, or the upstream in mid-body

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = dispatch

    def read_body(self):
        """The request body (de-chunked) and whether it was chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline(65537).split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts), True
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
        n = int(self.headers.get("Content-Length") or 0)
        return (self.rfile.read(n) if n else b""), False

    def forward(self, body, dechunked, entry):
        """Sends the request upstream; returns the response, or None if the upstream fails."""
        named = {t.strip().lower() for t in self.headers.get("Connection", "").split(",")}
        headers = [(k, v) for k, v in self.headers.items()
                   if k.lower() not in HOP and k.lower() not in named and k.lower() != "expect"]
        if dechunked:
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(body))))
        if self.headers.get("Host") is None:
            headers.append(("Host", "%s:%d" % self.server.state.upstream))
        for _ in range(2):
            reused = self.up is not None and self.up_used
            if self.up is None:
                self.up = http.client.HTTPConnection(*self.server.state.upstream,
                                                     timeout=UPSTREAM_TIMEOUT)
                self.up_used = False
            try:
                self.up.putrequest(self.command, self.path, skip_host=True,
                                   skip_accept_encoding=True)
                for k, v in headers:
                    self.up.putheader(k, v)
                self.up.endheaders(body)
                resp = self.up.getresponse()
                self.up_used = True
                entry["upstream_status"] = resp.status
                return resp
            except (http.client.HTTPException, OSError, ValueError) as e:  # ValueError: bad URL
                self.up.close()
                self.up = None
                # A kept-alive connection the upstream closed meanwhile: once more, on a new one.
                if not (reused and isinstance(e, (http.client.RemoteDisconnected,
                                                  ConnectionResetError, BrokenPipeError))):
                    return None
        return None

    def drain(self, resp):
        try:
            resp.read()
        except (http.client.HTTPException, OSError):
            self.up.close()
            self.up = None

    def relay(self, resp, entry, bytes_per_second=None):
        """Streams the upstream response to the client (at `bytes_per_second` if given)."""
        no_body = self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
        length = resp.getheader("Content-Length")
        chunked = not no_body and length is None
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP:
                self.send_header(k, v)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        entry["status"] = resp.status
        if no_body:
            self.drain(resp)
            return
        piece = PIECE if bytes_per_second is None else max(1, min(PIECE, bytes_per_second // 10))
        t0, sent = time.monotonic(), 0
        try:
            while True:
                data = resp.read(piece)
                if not data:
                    break
                if bytes_per_second is not None:
                    wait = t0 + (sent + len(data)) / bytes_per_second - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                sent += len(data)
        except (http.client.HTTPException, socket.timeout) as e:
            self.up.close()  # upstream cut the body short: so must we
            self.up = None
            raise ConnectionError(f"upstream body: {e!r}")
        except OSError:
            self.up.close()  # the client went away; the upstream body is left unread
            self.up = None
            raise
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def send_fault(self, rule, entry):
        status = rule["status"]
        code = rule.get("code") or S3_CODES.get(status, "InternalError")
        message = rule.get("message") or "injected by fault_proxy"
        rid = "FAULT%012d" % len(self.server.state.log)
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s'
                '</Message><RequestId>%s</RequestId></Error>' % (code, message, rid)).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amz-request-id", rid)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        entry["status"] = status
        if self.command != "HEAD":
            self.wfile.write(body)

    # ---- control API ---------------------------------------------------------------------

    def control(self, st, body):
        parts = urlsplit(self.path)
        route = (self.command, parts.path.rstrip("/"))
        try:
            if route == ("POST", "/__fault/rules"):
                raw = json.loads(body or b"[]")
                if not isinstance(raw, list):
                    raise BadRule("the rules are a JSON list")
                rules = [parse_rule(r) for r in raw]
                seed = parse_qs(parts.query).get("seed")
                with st.lock:
                    st.rules = rules
                    if seed:
                        st.rng.seed(int(seed[-1]))
                out = {"rules": len(rules)}
            elif route == ("GET", "/__fault/rules"):
                with st.lock:
                    out = [show_rule(r) for r in st.rules]
            elif route == ("GET", "/__fault/log"):
                with st.lock:
                    out = [dict(e) for e in st.log]
            elif route == ("POST", "/__fault/clear"):
                st.clear()
                out = {"ok": True}
            elif route == ("GET", "/__fault/stats"):
                with st.lock:
                    out = dict(st.stats)
            else:
                return self.send_json(404, {"error": f"no control endpoint {route}"})
        except (ValueError, TypeError) as e:  # BadRule, JSON, int()/float()
            return self.send_json(400, {"error": str(e)})
        self.send_json(200, out)

    def send_json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def server_bind(self):
        TCPServer.server_bind(self)  # not HTTPServer's: its getfqdn() may wait on DNS
        self.server_name, self.server_port = self.server_address[:2]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", required=True, help="http://HOST:PORT of the S3 server")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the probability draws")
    args = ap.parse_args(argv)
    up = urlsplit(args.upstream if "//" in args.upstream else "http://" + args.upstream)
    server = Server(("127.0.0.1", args.port), Handler)
    server.state = State((up.hostname, up.port or 80), args.seed)
    print("listening on http://127.0.0.1:%d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
