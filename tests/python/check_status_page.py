"""Checks an HTML page the way a person sees it: headless Chromium loads URL once, dumps the DOM
after the load event and takes a screenshot to OUT_PNG; tesseract reads the screenshot. Every WORD
must be in the DOM's visible text (tags, <head>, <script>, <style>, <template>, <noscript> and
elements with the `hidden` attribute or an inline display:none / visibility:hidden dropped; text
hidden by a style sheet is only caught by the OCR check) and in the screenshot's OCR text, both
case-insensitive after collapsing whitespace, as a plain substring. The screenshot must not be blank
(see png_info: at least MIN_CONTENT_ROWS content rows).

Usage: check_status_page.py [--timeout S] [--window-size W,H] [--scale F] URL OUT_PNG WORD [WORD...]
Prints one JSON object on stdout: dom_words and ocr_words ({word: found}), ocr_text (its first 2000
characters), png_bytes, png ({width, height, content_rows}), title, http_status, dom_file (the
dumped DOM, saved beside OUT_PNG), seconds, and error when a tool failed. Exit 0 when every word
was found in both and the screenshot is not blank; 1 otherwise (with the reasons on stderr); 2 for
bad arguments.

Needs Debian's chromium and tesseract-ocr (`. scripts/setup.sh --test` installs them); only the
standard library. IMERG_CHROMIUM overrides the browser (default /usr/bin/chromium, else chromium on
PATH); tesseract is taken from PATH. Chromium runs with a fresh profile, without the background
networking that a closed network refuses, and is killed (its whole process group) after --timeout
seconds; so is tesseract."""

import argparse
import html.parser
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib

MIN_CONTENT_ROWS = 10
OCR_TEXT_CHARS = 2000


def log(msg):
    print(f"check_status_page: {msg}", file=sys.stderr)


def norm(text):
    return " ".join(text.split()).lower()


class VisibleText(html.parser.HTMLParser):
    """The text a DOM dump shows in the page body, block elements separated by spaces."""

    SKIP = {"head", "script", "style", "template", "noscript", "title"}
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
            "source", "track", "wbr"}
    BLOCK = {"address", "article", "aside", "blockquote", "body", "br", "caption", "dd", "details",
             "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form",
             "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol",
             "option", "p", "pre", "section", "summary", "table", "tbody", "td", "tfoot", "th",
             "thead", "tr", "ul"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []
        self.title = []
        self.in_title = False
        self.skip_tag = None
        self.skip_depth = 0

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self.in_title = True
        if tag in self.BLOCK:
            self.parts.append(" ")
        if tag in self.VOID:
            return
        if self.skip_tag is not None:
            if tag == self.skip_tag:
                self.skip_depth += 1
            return
        a = dict(attrs)
        style = re.sub(r"\s+", "", (a.get("style") or "").lower())
        if (tag in self.SKIP or "hidden" in a or "display:none" in style
                or "visibility:hidden" in style):
            self.skip_tag, self.skip_depth = tag, 1

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False
        if tag in self.BLOCK:
            self.parts.append(" ")
        if self.skip_tag == tag:
            self.skip_depth -= 1
            if self.skip_depth == 0:
                self.skip_tag = None

    def handle_data(self, data):
        if self.in_title:
            self.title.append(data)
        if self.skip_tag is None:
            self.parts.append(data)


def png_info(path):
    """Width, height and content_rows, read with zlib and without unfiltering (which is slow in
    pure Python): the rows whose filtered scanline is not one pixel's bytes repeated after its
    first pixel. A row of one colour filters to that whatever the filter, so a one-colour image
    has 0; a row equal to the one above can too (the Up filter), so it is a lower bound of the
    rows that are not one colour (about 60% of them for a page of text and tables). None for
    PNGs this does not read (bit depths under 8, interlaced)."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat, ihdr = 8, [], None
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", chunk)
        elif ctype == b"IDAT":
            idat.append(chunk)
        elif ctype == b"IEND":
            break
        pos += 12 + length
    if ihdr is None:
        raise ValueError("PNG without IHDR")
    width, height, depth, color, _, _, interlace = ihdr
    info = {"width": width, "height": height, "content_rows": None}
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(color)
    if channels is None or depth < 8 or interlace:
        return info
    bpp = channels * depth // 8
    stride = 1 + width * bpp
    raw = zlib.decompress(b"".join(idat))
    if len(raw) < stride * height:
        raise ValueError("PNG image data is truncated")
    flat_tail = width - 1
    content = 0
    for y in range(height):
        row = raw[y * stride + 1 + bpp:(y + 1) * stride]
        if row != row[:bpp] * flat_tail:
            content += 1
    info["content_rows"] = content
    return info


def run(cmd, timeout, env=None):
    """Runs cmd in its own process group; kills the group after timeout seconds (TimeoutError)."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.communicate()
        raise TimeoutError(f"{os.path.basename(cmd[0])} did not finish in {timeout:g} s: killed")
    # Chromium's helpers leave with the browser; this makes sure none outlive it.
    _kill_group(proc.pid)
    return proc.returncode, out, err


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def tail(stderr_bytes, lines=15):
    text = stderr_bytes.decode("utf-8", "replace")
    # Chromium's complaints about the missing D-Bus say nothing about the page.
    kept = [ln for ln in text.splitlines() if "dbus" not in ln.lower()]
    return "\n".join(kept[-lines:])


def find_chromium():
    env = os.environ.get("IMERG_CHROMIUM")
    if env:
        return env if os.access(env, os.X_OK) else None
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds for Chromium, and again for tesseract (default 60)")
    ap.add_argument("--window-size", default="1280,1000",
                    help="the viewport in CSS pixels, W,H (default 1280,1000)")
    ap.add_argument("--scale", type=float, default=2.0,
                    help="device scale factor: 2 makes the screenshot 2W x 2H, text OCR reads well")
    ap.add_argument("url")
    ap.add_argument("out_png")
    ap.add_argument("words", nargs="+", metavar="word")
    args = ap.parse_args()
    if not re.fullmatch(r"\d+,\d+", args.window_size):
        ap.error("--window-size must be W,H")
    words = [norm(w) for w in args.words]
    if not all(words):
        ap.error("a WORD is empty")

    started = time.monotonic()
    out_png = os.path.abspath(args.out_png)
    dom_file = os.path.splitext(out_png)[0] + ".dom.html"
    result = {"url": args.url, "dom_words": {w: False for w in words},
              "ocr_words": {w: False for w in words}, "ocr_text": "", "png_bytes": 0,
              "png": None, "title": None, "http_status": None, "dom_file": None}

    def finish(problems):
        result["seconds"] = round(time.monotonic() - started, 2)
        print(json.dumps(result, indent=1))
        for p in problems:
            log(p)
        sys.exit(1 if problems else 0)

    def fail(msg):
        result["error"] = msg
        finish([msg])

    chromium = find_chromium()
    if chromium is None:
        fail("no Chromium: " + (f"IMERG_CHROMIUM={os.environ['IMERG_CHROMIUM']} is not executable"
                                if os.environ.get("IMERG_CHROMIUM") else
                                "/usr/bin/chromium is missing and chromium is not on PATH")
             + " (Debian: apt-get install chromium, or . scripts/setup.sh --test)")
    tesseract = shutil.which("tesseract")
    if tesseract is None:
        fail("no tesseract on PATH (Debian: apt-get install tesseract-ocr, or"
             " . scripts/setup.sh --test)")

    # The page itself first, without proxies: a clear error instead of Chromium's error page.
    if args.url.startswith(("http://", "https://")):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(args.url, timeout=min(args.timeout, 15)) as resp:
                result["http_status"] = resp.status
        except urllib.error.HTTPError as e:
            result["http_status"] = e.code
            fail(f"{args.url} answered HTTP {e.code} {e.reason}")
        except (urllib.error.URLError, OSError) as e:
            fail(f"cannot fetch {args.url}: {getattr(e, 'reason', e)}")

    # One Chromium run: the DOM after load on stdout, the screenshot to OUT_PNG.
    os.makedirs(os.path.dirname(out_png), exist_ok=True)
    if os.path.exists(out_png):
        os.remove(out_png)
    with tempfile.TemporaryDirectory(prefix="check-status-page-") as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
               "--hide-scrollbars", f"--window-size={args.window_size}",
               f"--force-device-scale-factor={args.scale:g}", f"--screenshot={out_png}",
               "--dump-dom", args.url]
        try:
            rc, dom, err = run(cmd, args.timeout)
        except TimeoutError as e:
            fail(f"{e} ({' '.join(cmd)})")
        except OSError as e:
            fail(f"cannot run {chromium}: {e}")
    if rc != 0:
        fail(f"chromium exited with {rc}:\n{tail(err)}")
    dom = dom.decode("utf-8", "replace")
    with open(dom_file, "w", encoding="utf-8") as f:
        f.write(dom)
    result["dom_file"] = dom_file
    if "<body" not in dom.lower():
        fail(f"chromium dumped no DOM for {args.url}:\n{tail(err)}")
    if not os.path.exists(out_png):
        fail(f"chromium wrote no screenshot to {out_png}:\n{tail(err)}")
    result["png_bytes"] = os.path.getsize(out_png)

    parser = VisibleText()
    parser.feed(dom)
    parser.close()
    text = norm("".join(parser.parts))
    result["title"] = " ".join("".join(parser.title).split())
    result["dom_words"] = {w: w in text for w in words}

    env = dict(os.environ)
    env.setdefault("OMP_THREAD_LIMIT", "1")  # faster than OpenMP's threads on small machines
    try:
        rc, ocr, err = run([tesseract, out_png, "stdout"], args.timeout, env=env)
    except TimeoutError as e:
        fail(str(e))
    if rc != 0:
        fail(f"tesseract exited with {rc}: {tail(err)}")
    ocr = ocr.decode("utf-8", "replace")
    result["ocr_text"] = ocr[:OCR_TEXT_CHARS]
    ocr_norm = norm(ocr)
    result["ocr_words"] = {w: w in ocr_norm for w in words}

    problems = []
    try:
        result["png"] = png_info(out_png)
        rows = result["png"]["content_rows"]
        if rows is not None and rows < MIN_CONTENT_ROWS:
            problems.append(f"the screenshot {out_png} looks blank: {rows} content rows"
                            f" (pixel rows that are not one colour; at least {MIN_CONTENT_ROWS}"
                            " wanted)")
    except (ValueError, zlib.error, struct.error) as e:
        problems.append(f"cannot read the screenshot {out_png}: {e}")
    missing_dom = [w for w in words if not result["dom_words"][w]]
    missing_ocr = [w for w in words if not result["ocr_words"][w]]
    if missing_dom:
        problems.append(f"not in the page's visible text (DOM, {dom_file}): "
                        + ", ".join(repr(w) for w in missing_dom))
    if missing_ocr:
        problems.append(f"not in the screenshot's OCR text ({out_png}): "
                        + ", ".join(repr(w) for w in missing_ocr))
    finish(problems)


if __name__ == "__main__":
    main()
