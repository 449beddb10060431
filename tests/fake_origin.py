#!/usr/bin/env python3
"""A scripted fake HTTP origin for hauld's integration tests.

Python 3 standard library only. The request's path and query choose the
answer, so a test builds the fault it wants into the URL it hands the
daemon:

    origin = FakeOrigin().start()
    url = origin.url("/file/a.png", size=5000, fail=2, key="a")
    ...
    assert origin.count(key="a") == 3
    origin.stop()

Standalone: ``python3 tests/fake_origin.py --port 0`` prints the port on
its first line and serves until SIGINT/SIGTERM.

Paths
  /file/NAME        deterministic bytes of ?size=N (default 1024) derived
                    from NAME and ?seed=S (default 0); body_for() recomputes
                    them. ?type=png|jpeg|gif|mp4|mp3|html|text (default
                    png) picks the leading magic (mp3 an ID3-tagged audio
                    frame, html an HTML page, text plain ASCII). ETag, Last-Modified, Accept-Ranges; Range
                    and If-Range give 206 (or 416) unless ?norange=1. HEAD
                    works.
  /_stats           JSON counters: {"total", "paths", "keys"}; with ?key=K
                    {"key", "count"}; with ?path=P {"path", "count"}.
  /_reset           clears counters and the request log.
  /api/openverse/v1/images/   fake search APIs answering in each
  /api/wikimedia/w/api.php    provider's documented response format; see
  /api/pixabay/               "Fake providers" below
  /api/google/customsearch/v1
  anything else     404, unless a route was added with add_route() (see
                    ROUTES below) or ?status/?redirect/?reset answer it.

Parameters (combinable, on any path)
  status=N          answer N with a small text body (204/304: no body)
  retry_after=V     add "Retry-After: V" (with a fault: only when it fires)
  fail=N&key=K      the faults below apply only to the first N requests
                    carrying key K (default key: the path); later requests
                    are served normally. With fail and no other fault the
                    fault is status 503. Counters are per key.
  delay=S           sleep S seconds (float) before the headers
  drip=BPS          send the body at about BPS bytes per second
  stall_after=N     send N body bytes, then hang without closing until the
                    client goes away (or stall_for=S, default 120 s)
  truncate=N        Content-Length says the full size; close after N bytes
  reset=1           close the connection without an answer (empty reply);
                    reset=rst does so with a TCP RST
  reset_after=N     send N body bytes then RST (SO_LINGER 0)
  chunked=1         Transfer-Encoding: chunked, no Content-Length
  ctype=T           Content-Type override (ctype=none: no Content-Type)
  disposition=D     Content-Disposition header
  redirect=URL      302 to URL (redirect_status=301|303|307|308 to vary)
  etag=E            ETag override (quoted as given)
  big_header=N      add one header "X-Big: " with a value of N bytes
  many_headers=N    add N headers "X-Many-<i>: <i>"
  last_modified=D   Last-Modified override (an HTTP date)

FakeOrigin.set_override(path, **params) forces parameters on every later
request for a path, so the content behind an unchanged URL can change.

ProxyRecorder
  A forwarding HTTP proxy on loopback that records what it is asked to
  carry: proxy = ProxyRecorder().start(); proxy.url is "http://127.0.0.1:P"
  (for PROXY or http_proxy); proxy.requests() lists {"method", "target"
  (the absolute URL asked for), "headers"}; proxy.count(). It forwards
  plain http:// requests to their target and answers CONNECT (tunnels)
  and anything not in absolute form with 405 and 400, recorded all the
  same.

Faults are the status, retry_after, delay, drip, stall_after, truncate,
reset and reset_after parameters; the others apply to every request.

Fake providers
  Each answers a search like the real API, with result i (0-based, in
  rank order) of a query pointing at /file/<provider>-<query>-<i>.<ext> on
  this origin (size 800..1290 bytes, seed i), so the daemon downloads what
  it listed. Most results are images (png, jpeg, gif in turn); result i is
  an HTML page behind an image-like URL when i % 7 == 6 and an ID3-tagged
  audio body when i % 11 == 10 (html wins when both hold), so content
  checks and the replacement of failed candidates can be tested.
  provider_result_url(origin, provider, query, i) rebuilds a URL (origin:
  a FakeOrigin, or media_base(BASE) for a ?media= base) and
  provider_result_kind(i) its kind. Every provider takes ?total=N (how many
  results the query matches; default 45, Google 250) on top of its own
  parameters, so a source file's search_url can choose it, and
  ?media=BASE[,BASE...]: result i's media URL is on BASE number i % n
  (each "http://host:port", e.g. another FakeOrigin's base_url) instead
  of this origin, so one listing can point at several hosts. Openverse,
  Pixabay and Google also take ?html_first=N: results 0..N-1 are HTML
  pages (a search whose best hits are web pages);
  provider_result_kind(i, N) says the same.

  openverse  GET /api/openverse/v1/images/?q=&page=&page_size=
             {"result_count", "page_count", "page_size", "page", "results":
             [{"id", "title", "url", "thumbnail", "creator", "license",
             "provider", "source", "filetype"}]}. page_size 1..20 without
             an Authorization header (above: 401), 1..500 with one;
             page 1..20 (above: 400 {"detail": ...}); a page past the
             results has "results": [].
  wikimedia  GET /api/wikimedia/w/api.php?action=query&format=json
             &generator=search&gsrsearch=&gsrnamespace=6&gsrlimit=
             &gsroffset=&prop=imageinfo&iiprop=url[&iiurlwidth=W]
             {"batchcomplete": "", "continue": {"gsroffset", "continue":
             "gsroffset||"}, "query": {"pages": {"<pageid>": {"pageid",
             "ns": 6, "title", "index", "imagerepository", "imageinfo":
             [{"url", "descriptionurl", "descriptionshorturl"[, "thumburl",
             "thumbwidth", "thumbheight"]}]}}}}, the pages keyed by page id
             in page-id order (rank is "index"). The query's files are of
             every kind (bitmap, audio, video, drawing, office: result i's
             kind cycles through them, i % 5) unless gsrsearch holds
             "filetype:bitmap", which keeps the bitmaps only (each then an
             image). The last page has no "continue"; a page past the
             results has no "query" key at all. gsrlimit 1..500;
             gsroffset + gsrlimit over 10000 answers {"error": {"code":
             "search-offset-limit", ...}} with no "query".
  pixabay    GET /api/pixabay/?key=&q=&image_type=&page=&per_page=
             {"total", "totalHits", "hits": [{"id", "pageURL", "type",
             "tags", "previewURL", "webformatURL", "largeImageURL",
             "imageWidth", "imageHeight"}]}; totalHits is at most 500; the
             X-RateLimit-Limit/-Remaining/-Reset headers. Errors are
             text/plain "[ERROR 400] ...": a missing key or key=invalid, q
             over 100 characters, per_page outside 3..200, and a page past
             totalHits ('"page" is out of valid range.').
  google     GET /api/google/customsearch/v1?key=&cx=&q=&searchType=image
             &num=&start=
             {"kind": "customsearch#search", "queries": {"request": [...],
             "nextPage": [...]}, "searchInformation": {"totalResults":
             "<string>"}, "items": [{"kind", "title", "link", "displayLink",
             "mime", "fileFormat", "image": {...}}]}. num 1..10 and
             start + num - 1 <= 100, else 400 {"error": {"code": 400,
             "status": "INVALID_ARGUMENT", ...}}; "nextPage" only while the
             next start is within both the total and the first 100; no
             "items" key when the page holds no result. A missing key or
             cx answers 400 too.
"""

import argparse
import functools
import hashlib
import http.client
import json
import select
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["FakeOrigin", "ProxyRecorder", "body_for", "etag_for", "iter_body", "LAST_MODIFIED",
           "media_base", "provider_result_kind", "provider_result_url"]

LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"
STALL_MAX_S = 120.0
PIECE = 64 * 1024          # bytes per write when not dripping
FILLER_PERIOD = 65521      # prime, so the filler does not line up with pieces
DEFAULT_SIZE = 1024

FAULT_PARAMS = ("status", "retry_after", "delay", "drip", "stall_after",
                "truncate", "reset", "reset_after")


# ---- deterministic bodies ---------------------------------------------------

def _png_header():
    ihdr = struct.pack(">IIBBBBB", 640, 480, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF))


_HEADERS = {
    "png": _png_header(),
    "jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00",
    "gif": b"GIF89a\x80\x02\xe0\x01\x00\x00\x00",
    "mp4": b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2avc1mp41",
    # an ID3v2.4 tag, then an MPEG-1 Layer III frame header: audio, not an image
    "mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x64\x00",
    "text": b"",
}

CONTENT_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "mp4": "video/mp4",
    "mp3": "audio/mpeg",
    "html": "text/html; charset=utf-8",
    "text": "text/plain; charset=utf-8",
}

_TEXT_TABLE = bytes((b"abcdefghijklmnopqrstuvwxyz    \n"[i % 31]) for i in range(256))


def _header(name, type_):
    if type_ == "html":
        title = name.replace("<", "").replace(">", "").replace("&", "")
        return ("<!DOCTYPE html>\n<html><head><title>%s</title></head><body>\n<p>"
                % title).encode("utf-8", "replace")
    if type_ not in _HEADERS:
        raise ValueError("unknown type %r" % type_)
    return _HEADERS[type_]


@functools.lru_cache(maxsize=64)
def _filler(name, seed, text):
    """FILLER_PERIOD bytes from sha256(name, seed, i); ASCII when text."""
    out = bytearray()
    i = 0
    while len(out) < FILLER_PERIOD:
        out += hashlib.sha256(("%s\0%s\0%d" % (name, seed, i)).encode()).digest()
        i += 1
    block = bytes(out[:FILLER_PERIOD])
    return block.translate(_TEXT_TABLE) if text else block


def iter_body(name, size, seed=0, type="png", start=0, end=None, piece=PIECE):
    """Yield bytes [start, end) of body_for(name, size, seed, type) in
    pieces of at most `piece` bytes, without building the whole body."""
    end = size if end is None else min(end, size)
    head = _header(name, type)
    filler = _filler(name, str(seed), type in ("html", "text"))
    pos = start
    while pos < end:
        n = min(piece, end - pos)
        if pos < len(head):
            chunk = head[pos:min(len(head), pos + n)]
        else:
            off = (pos - len(head)) % FILLER_PERIOD
            chunk = filler[off:off + n]
            while len(chunk) < n:
                chunk += filler[:n - len(chunk)]
        yield chunk
        pos += len(chunk)


def body_for(name, size, seed=0, type="png"):
    """The exact bytes /file/NAME?size=SIZE&seed=SEED&type=TYPE serves."""
    return b"".join(iter_body(name, size, seed, type))


def etag_for(name, size, seed=0, type="png"):
    h = hashlib.sha1(("%s\0%d\0%s\0%s" % (name, size, seed, type)).encode()).hexdigest()
    return '"%s"' % h[:16]


def _parse_range(value, size):
    """Single "bytes=a-b" range -> (start, end_exclusive); None to ignore
    the header; "unsatisfiable" for a 416."""
    if not value or not value.startswith("bytes=") or "," in value:
        return None
    spec = value[6:].strip()
    first, sep, last = spec.partition("-")
    if not sep:
        return None
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return "unsatisfiable"
            return (max(0, size - n), size)
        a = int(first)
        b = int(last) if last else size - 1
    except ValueError:
        return None
    if a < 0 or (last and b < a):
        return None
    if a >= size:
        return "unsatisfiable"
    return (a, min(b, size - 1) + 1)


# ---- the server ---------------------------------------------------------------

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeOrigin/1"
    origin = None  # set on a per-origin subclass

    # -- plumbing --

    def setup(self):
        super().setup()
        self.origin._conn_opened(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.origin._conn_closed(self.connection)

    def log_message(self, fmt, *args):
        if self.origin.verbose:
            sys.stderr.write("fake_origin: %s %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def _drain_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _write(self, data):
        if not data:
            return
        if self._chunked:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.wfile.write(data)

    def _sleep(self, seconds):
        """Sleep; False when the origin is stopping."""
        return not self.origin._stopping.wait(max(0.0, seconds))

    # -- helpers for routes --

    def send_simple(self, status, body=b"", ctype="text/plain; charset=utf-8", headers=None):
        """A complete answer with Content-Length; honours ctype=/disposition=
        /retry_after already collected for this request."""
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self._common_headers(ctype, headers)
        no_body = status in (204, 304) or status < 200
        if not no_body:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and not no_body:
            self.wfile.write(body)

    def send_json(self, obj, status=200, headers=None):
        self.send_simple(status, json.dumps(obj).encode(), "application/json", headers)

    def _common_headers(self, default_ctype, headers=None):
        p = self.params
        ctype = p.get("ctype", default_ctype)
        if ctype and ctype != "none":
            self.send_header("Content-Type", ctype)
        if "disposition" in p:
            self.send_header("Content-Disposition", p["disposition"])
        if self._fault and "retry_after" in p:
            self.send_header("Retry-After", p["retry_after"])
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "big_header" in p:
            self.send_header("X-Big", "b" * int(p["big_header"]))
        for i in range(int(p.get("many_headers", 0))):
            self.send_header("X-Many-%d" % i, str(i))
        if self.close_connection:
            self.send_header("Connection", "close")

    # -- the answer --

    def _dispatch(self):
        self._chunked = False
        self._fault = False
        self.request_body = self._drain_body()
        url = urllib.parse.urlsplit(self.path)
        self.route_path = urllib.parse.unquote(url.path)
        self.params = {k: v[-1] for k, v in
                       urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        p = self.params
        p.update(self.origin.overrides_for(self.route_path))

        if self.route_path == "/_stats":
            return self._answer_stats()
        if self.route_path == "/_reset":
            self.origin.reset_stats()
            return self.send_json({"ok": True})

        ordinal = self.origin._record(self, self.route_path, p)
        self._fault = "fail" not in p or ordinal <= int(p["fail"])
        if "fail" in p and self._fault and not any(k in p for k in FAULT_PARAMS if k != "retry_after"):
            p.setdefault("status", "503")
        if not self._fault:
            for k in FAULT_PARAMS:
                p.pop(k, None)

        if "delay" in p and not self._sleep(float(p["delay"])):
            return self._abort(rst=False)
        if "reset" in p:
            return self._abort(rst=p["reset"] == "rst")
        if "status" in p:
            status = int(p["status"])
            return self.send_simple(status, "status %d\n" % status)
        if "redirect" in p:
            return self.send_simple(int(p.get("redirect_status", 302)), "redirect\n",
                                    headers={"Location": p["redirect"]})
        for prefix, fn in self.origin._routes:
            if self.route_path.startswith(prefix):
                return fn(self, self.route_path, p)
        if self.route_path.startswith("/file/"):
            return self._answer_file(self.route_path[len("/file/"):])
        return self.send_simple(404, "not found\n")

    def _answer_stats(self):
        p = self.params
        if "key" in p:
            return self.send_json({"key": p["key"], "count": self.origin.count(key=p["key"])})
        if "path" in p:
            return self.send_json({"path": p["path"], "count": self.origin.count(p["path"])})
        return self.send_json(self.origin.stats())

    def _answer_file(self, name):
        p = self.params
        size = int(p.get("size", DEFAULT_SIZE))
        seed = p.get("seed", "0")
        type_ = p.get("type", "png")
        if type_ not in CONTENT_TYPES:
            return self.send_simple(400, "unknown type\n")
        etag = p.get("etag", etag_for(name, size, seed, type_))
        last_modified = p.get("last_modified", LAST_MODIFIED)
        norange = p.get("norange") == "1"
        chunked = p.get("chunked") == "1"

        start, end, status = 0, size, 200
        rng = None if norange else _parse_range(self.headers.get("Range"), size)
        if_range = self.headers.get("If-Range")
        if rng is not None and if_range is not None and if_range not in (etag, last_modified):
            rng = None
        if rng == "unsatisfiable":
            return self.send_simple(416, "range not satisfiable\n",
                                    headers={"Content-Range": "bytes */%d" % size})
        if rng is not None:
            start, end, status = rng[0], rng[1], 206

        faulting = any(k in p for k in ("truncate", "stall_after", "reset_after"))
        if faulting:
            self.close_connection = True
        self.send_response(status)
        self._common_headers(CONTENT_TYPES[type_], {
            "ETag": etag,
            "Last-Modified": last_modified,
        })
        if not norange:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end - 1, size))
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if self.command == "HEAD":
            return
        self._chunked = chunked
        self._send_body(iter_body(name, size, seed, type_, start, end, self._piece_size()))

    def _piece_size(self):
        drip = float(self.params.get("drip", 0) or 0)
        return max(1, int(drip / 10)) if drip > 0 else PIECE

    def _send_body(self, pieces):
        p = self.params
        limit, action = None, None
        for k in ("reset_after", "truncate", "stall_after"):
            if k in p:
                limit, action = int(p[k]), k
                break
        drip = float(p.get("drip", 0) or 0)
        sent = 0
        try:
            for piece in pieces:
                if limit is not None and sent + len(piece) > limit:
                    piece = piece[:limit - sent]
                self._write(piece)
                sent += len(piece)
                self.origin._note_sent(self, len(piece))
                if drip > 0 and not self._sleep(len(piece) / drip):
                    return self._abort(rst=False)
                if limit is not None and sent >= limit:
                    break
            if action is None:
                if self._chunked:
                    self.wfile.write(b"0\r\n\r\n")
                return
            self.wfile.flush()
            if action == "stall_after":
                self._stall(float(p.get("stall_for", STALL_MAX_S)))
                return self._abort(rst=False)
            if action == "reset_after":
                return self._abort(rst=True)
            self.close_connection = True  # truncate: a plain close
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            self.origin._note_end(self, client_closed=True)
        finally:
            self.origin._note_end(self)

    def _stall(self, seconds):
        """Hold the connection open, sending nothing, until the client
        closes it, the origin stops, or `seconds` pass."""
        deadline = time.monotonic() + seconds
        sock = self.connection
        while not self.origin._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            r, _, _ = select.select([sock], [], [], min(0.2, left))
            if r:
                try:
                    if sock.recv(1, socket.MSG_PEEK) == b"":
                        return
                except OSError:
                    return
                time.sleep(0.05)  # the client sent data: keep stalling

    def _abort(self, rst):
        """Close without (more of) an answer; with rst, abortively."""
        self.close_connection = True
        try:
            if rst:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # the fd really closes when rfile does (in finish()), before
            # socketserver's shutdown(SHUT_WR) could send a FIN
            self.connection.close()
        except OSError:
            pass


class FakeOrigin:
    """The fake origin, in-process. Thread-safe counters and request log.

    url_host: the host name its URLs (base_url, url()) use, default host:
    FakeOrigin(url_host="localhost") listens on 127.0.0.1 but names
    itself "localhost", a second host form for tests of per-host rules.

    Each log entry is a dict: time (monotonic s), wall (epoch s), method,
    path (decoded, no query), query (raw string), params (dict, last value
    wins), headers (dict with lower-case names), key (the fail key: ?key or
    the path), ordinal (1-based count of that key), body (bytes).
    Also sent (body bytes written so far), client_closed (the client
    went away before the body was whole) and done (the answer is over,
    whole or not).
    """

    def __init__(self, host="127.0.0.1", port=0, verbose=False, url_host=None):
        self.host = host
        self.url_host = url_host or host
        self._want_port = port
        self.verbose = verbose
        self._lock = threading.Lock()
        self._log = []
        self._paths = {}
        self._keys = {}
        self._conns = set()
        self._stopping = threading.Event()
        self._server = None
        self._thread = None
        # (prefix, fn(handler, path, params)) tried before /file/; the fake
        # search APIs register here (see ROUTES).
        self._routes = list(ROUTES)
        self._overrides = {}

    # -- lifecycle --

    def start(self):
        handler = type("Handler", (_Handler,), {"origin": self})
        self._server = _Server((self.host, self._want_port), handler)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="fake-origin", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if not self._server:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)
        self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def base_url(self):
        return "http://%s:%d" % (self.url_host, self.port)

    def url(self, path, **params):
        """Absolute URL of path; keyword arguments become query parameters
        (added to any already in path). None values are left out."""
        q = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        if q:
            path += ("&" if "?" in path else "?") + q
        return self.base_url + path

    def set_override(self, path, **params):
        """From now on, requests for path (decoded, no query) behave as if
        they carried these query parameters, over the URL's own: e.g.
        seed="1" changes a file's bytes and ETag behind an unchanged URL.
        No params: back to the URL's own."""
        with self._lock:
            if params:
                self._overrides[path] = {k: str(v) for k, v in params.items()}
            else:
                self._overrides.pop(path, None)

    def overrides_for(self, path):
        with self._lock:
            return dict(self._overrides.get(path, {}))

    def add_route(self, prefix, fn):
        """fn(handler, path, params) answers requests whose path starts with
        prefix, e.g. with handler.send_json(obj)."""
        self._routes.insert(0, (prefix, fn))

    # -- counters and log --

    def _conn_opened(self, conn):
        with self._lock:
            self._conns.add(conn)

    def _conn_closed(self, conn):
        with self._lock:
            self._conns.discard(conn)

    def _record(self, h, path, params):
        key = params.get("key", path)
        with self._lock:
            self._paths[path] = self._paths.get(path, 0) + 1
            self._keys[key] = self._keys.get(key, 0) + 1
            ordinal = self._keys[key]
            self._log.append({
                "time": time.monotonic(),
                "wall": time.time(),
                "method": h.command,
                "path": path,
                "query": urllib.parse.urlsplit(h.path).query,
                "params": dict(params),
                "headers": {k.lower(): v for k, v in h.headers.items()},
                "key": key,
                "ordinal": ordinal,
                "body": h.request_body,
                "sent": 0,
                "client_closed": False,
                "done": False,
            })
            h._log_entry = self._log[-1]
        return ordinal

    def _note_sent(self, h, n):
        entry = getattr(h, "_log_entry", None)
        if entry is not None:
            with self._lock:
                entry["sent"] += n

    def _note_end(self, h, client_closed=False):
        entry = getattr(h, "_log_entry", None)
        if entry is not None:
            with self._lock:
                entry["client_closed"] = entry["client_closed"] or client_closed
                entry["done"] = True

    def bytes_served(self, path=None, key=None):
        """Body bytes written for path (or key; with neither, all)."""
        with self._lock:
            return sum(e["sent"] for e in self._log
                       if (path is None or e["path"] == path) and (key is None or e["key"] == key))

    def count(self, path=None, key=None):
        """Requests to path, or carrying key; with neither, all requests
        (the /_stats and /_reset endpoints are not counted)."""
        with self._lock:
            if key is not None:
                return self._keys.get(key, 0)
            if path is not None:
                return self._paths.get(path, 0)
            return len(self._log)

    def requests(self, path=None, key=None):
        """Copies of the log entries, oldest first, optionally filtered."""
        with self._lock:
            return [dict(e) for e in self._log
                    if (path is None or e["path"] == path) and (key is None or e["key"] == key)]

    def wait_for(self, n, path=None, key=None, timeout=10.0):
        """Wait until count(path, key) >= n; returns whether it got there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(path, key) >= n:
                return True
            time.sleep(0.02)
        return self.count(path, key) >= n

    def stats(self):
        with self._lock:
            return {"total": len(self._log), "paths": dict(self._paths), "keys": dict(self._keys)}

    def reset_stats(self):
        with self._lock:
            self._log.clear()
            self._paths.clear()
            self._keys.clear()


# ---- a recording proxy ------------------------------------------------------------

HOP_BY_HOP = ("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
              "te", "trailer", "transfer-encoding", "upgrade")
PROXY_BODY_MAX = 64 * 1024 * 1024  # a forwarded answer is read whole: tests send small files


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ProxyRecorder/1"
    proxy = None  # set on a per-recorder subclass

    def log_message(self, fmt, *args):
        pass

    def do_CONNECT(self):
        self.proxy._record(self)
        self._answer(405, b"tunnels are not recorded\n")

    def do_GET(self):
        self._forward()

    def do_HEAD(self):
        self._forward()

    def _answer(self, status, body, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self):
        self.proxy._record(self)
        url = urllib.parse.urlsplit(self.path)
        if url.scheme != "http" or not url.hostname:
            return self._answer(400, b"not a proxy request\n")
        hdrs = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=30)
        try:
            conn.request(self.command, urllib.parse.urlunsplit(("", "", url.path or "/", url.query, "")),
                         headers=hdrs)
            resp = conn.getresponse()
            body = resp.read(PROXY_BODY_MAX)
            headers = [(k, v) for k, v in resp.getheaders()
                       if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
            self._answer(resp.status, body, headers)
        except OSError as e:
            self._answer(502, ("cannot reach %s: %s\n" % (url.netloc, e)).encode())
        finally:
            conn.close()


class ProxyRecorder:
    """A loopback forwarding proxy that records each request it carries
    (see "ProxyRecorder" at the top of this file)."""

    def __init__(self, host="127.0.0.1", port=0):
        self.host = host
        self._want_port = port
        self._lock = threading.Lock()
        self._log = []
        self._server = None
        self._thread = None

    def start(self):
        handler = type("ProxyHandler", (_ProxyHandler,), {"proxy": self})
        self._server = _Server((self.host, self._want_port), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="proxy-recorder", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if not self._server:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._server = None

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    def _record(self, h):
        with self._lock:
            self._log.append({"method": h.command, "target": h.path,
                              "headers": {k.lower(): v for k, v in h.headers.items()}})

    def requests(self):
        with self._lock:
            return [dict(e) for e in self._log]

    def count(self):
        with self._lock:
            return len(self._log)


# ---- routes -------------------------------------------------------------------
# (prefix, fn) pairs every FakeOrigin answers before /file/, fn(handler,
# path, params) answering with handler.send_json(...) or send_simple(...):
# the fake providers below. A test adds its own with add_route().
ROUTES = []


# ---- fake providers -------------------------------------------------------------

PROVIDER_DEFAULT_TOTAL = 45
IMAGE_TYPES = ("png", "jpeg", "gif")
EXTENSIONS = {"png": "png", "jpeg": "jpg", "gif": "gif"}


def provider_result_kind(i, html_first=0):
    """What result i of any fake provider serves: an image type, "html"
    or "mp3" (html_first: the provider's ?html_first)."""
    if i < html_first or i % 7 == 6:
        return "html"
    if i % 11 == 10:
        return "mp3"
    return IMAGE_TYPES[i % 3]


def _slug(query):
    s = "".join(c if c.isalnum() else "-" for c in query.lower()).strip("-")
    return (s or "q")[:24]


def provider_result_url(origin, provider, query, i, kind=None):
    """The media URL result i of query has at provider, on origin."""
    kind = kind or provider_result_kind(i)
    ext = EXTENSIONS.get(kind, "jpg")  # non-images hide behind image names
    return origin.url("/file/%s-%s-%d.%s" % (provider, _slug(query), i, ext),
                      size=800 + (i % 50) * 10, seed=i, type=kind)


class media_base:
    """A ?media= base URL ("http://host:port") with FakeOrigin's url()."""

    def __init__(self, base):
        self.base_url = base.rstrip("/")

    url = FakeOrigin.url


def _media(h, p, i):
    """Where result i's media lives: the ?media= base number i % n, else
    this origin."""
    bases = [b for b in p.get("media", "").split(",") if b]
    return media_base(bases[i % len(bases)]) if bases else h.origin


def _kind(p, i):
    """provider_result_kind(i) under the request's ?html_first."""
    return provider_result_kind(i, max(0, _int_param(p, "html_first", 0) or 0))


def _int_param(params, name, default):
    try:
        return int(params.get(name, default))
    except ValueError:
        return None


def _total(params, default=PROVIDER_DEFAULT_TOTAL):
    t = _int_param(params, "total", default)
    return max(0, t if t is not None else default)


def _openverse(h, path, p):
    if path.rstrip("/") != "/api/openverse/v1/images":
        return h.send_json({"detail": "Not found."}, status=404)
    page = _int_param(p, "page", 1)
    size = _int_param(p, "page_size", 20)
    if page is None or not 1 <= page <= 20:
        return h.send_json({"detail": {"page": ["Ensure this value is less than or equal to 20."]}},
                           status=400)
    authed = bool(h.headers.get("Authorization"))
    if size is None or size < 1 or size > 500:
        return h.send_json({"detail": {"page_size": ["Ensure this value is between 1 and 500."]}},
                           status=400)
    if size > 20 and not authed:
        return h.send_json({"detail": "Authentication credentials were not provided."}, status=401)
    q = p.get("q", "")
    total = _total(p)
    first = (page - 1) * size
    results = []
    for i in range(first, min(first + size, total)):
        kind = _kind(p, i)
        results.append({
            "id": "ov-%s-%d" % (_slug(q), i),
            "title": "%s %d" % (q, i),
            "url": provider_result_url(_media(h, p, i), "openverse", q, i, kind),
            "thumbnail": h.origin.url("/file/openverse-thumb-%d.jpg" % i, size=300, type="jpeg"),
            "creator": "creator %d" % i,
            "license": "by",
            "license_version": "4.0",
            "provider": "flickr",
            "source": "flickr",
            "filetype": EXTENSIONS.get(kind, "jpg"),
        })
    h.send_json({"result_count": total, "page_count": min(20, -(-total // size)),
                 "page_size": size, "page": page, "results": results})


WIKIMEDIA_KINDS = ("bitmap", "audio", "video", "drawing", "office")
WIKIMEDIA_FILES = {"audio": ("ogg", "mp3"), "video": ("webm", "mp4"),
                   "drawing": ("svg", "text"), "office": ("pdf", "text")}


def _wikimedia(h, path, p):
    q_full = p.get("gsrsearch", "")
    bitmaps_only = "filetype:bitmap" in q_full.split()
    q = " ".join(w for w in q_full.split() if not w.startswith("filetype:"))
    limit = _int_param(p, "gsrlimit", 10)
    offset = _int_param(p, "gsroffset", 0)
    if p.get("action") != "query" or p.get("generator") != "search" or limit is None or offset is None:
        return h.send_json({"error": {"code": "badvalue", "info": "Unrecognized parameters."},
                            "servedby": "fake"})
    limit = max(1, min(limit, 500))
    if offset + limit > 10000:
        return h.send_json({"error": {"code": "search-offset-limit",
                                      "info": "Could not retrieve results past 10000."},
                            "servedby": "fake"})
    total = _total(p)
    # the query's files, in rank order: (rank, kind of file)
    files = [(i, WIKIMEDIA_KINDS[i % 5]) for i in range(total)]
    if bitmaps_only:
        files = [f for f in files if f[1] == "bitmap"]
    window = files[offset:offset + limit]
    if not window:
        return h.send_json({"batchcomplete": ""})
    width = _int_param(p, "iiurlwidth", 0) or 0
    pages = {}
    for rank, (i, kind) in enumerate(window, start=offset + 1):
        if kind == "bitmap":
            url = provider_result_url(_media(h, p, i), "wikimedia", q, i, IMAGE_TYPES[i % 3])
            ext = url.rsplit("?", 1)[0].rsplit(".", 1)[-1]
        else:
            ext, body = WIKIMEDIA_FILES[kind]
            url = _media(h, p, i).url("/file/wikimedia-%s-%d.%s" % (_slug(q), i, ext),
                                      size=900, seed=i, type=body)
        title = "File:%s %d.%s" % (q.title() or "Q", i, ext)
        info = {"url": url,
                "descriptionurl": h.origin.base_url + "/wiki/" + urllib.parse.quote(title),
                "descriptionshorturl": h.origin.base_url + "/w/index.php?curid=%d" % (1000 + i)}
        if width > 0:
            info.update({"thumburl": h.origin.url("/file/wikimedia-thumb-%d-%dpx.jpg" % (i, width),
                                                  size=600, seed=i, type="jpeg"),
                         "thumbwidth": width, "thumbheight": width * 3 // 4})
        pages[1000 + i] = {"pageid": 1000 + i, "ns": 6, "title": title, "index": rank,
                           "imagerepository": "local", "imageinfo": [info]}
    answer = {"batchcomplete": ""}
    if offset + len(window) < len(files):
        answer["continue"] = {"gsroffset": offset + len(window), "continue": "gsroffset||"}
    answer["query"] = {"pages": {str(k): pages[k] for k in sorted(pages)}}
    h.send_json(answer)


def _pixabay_error(h, text):
    h.send_simple(400, "[ERROR 400] %s" % text)


def _pixabay(h, path, p):
    key = p.get("key", "")
    if not key or key == "invalid":
        return _pixabay_error(h, "Invalid or missing API key (https://pixabay.com/api/docs/).")
    q = p.get("q", "")
    if len(q) > 100:
        return _pixabay_error(h, '"q" exceeds the maximum length of 100 characters.')
    page = _int_param(p, "page", 1)
    per_page = _int_param(p, "per_page", 20)
    if per_page is None or not 3 <= per_page <= 200:
        return _pixabay_error(h, '"per_page" is out of valid range.')
    total = _total(p)
    hits_total = min(total, 500)
    if page is None or page < 1 or (page - 1) * per_page >= max(hits_total, 1):
        return _pixabay_error(h, '"page" is out of valid range.')
    first = (page - 1) * per_page
    hits = []
    for i in range(first, min(first + per_page, hits_total)):
        hits.append({
            "id": 100000 + i,
            "pageURL": "https://pixabay.com/photos/%s-%d/" % (_slug(q), 100000 + i),
            "type": "photo",
            "tags": q,
            "previewURL": h.origin.url("/file/pixabay-preview-%d.jpg" % i, size=300, type="jpeg"),
            "webformatURL": h.origin.url("/file/pixabay-web-%d.jpg" % i, size=500, type="jpeg"),
            "largeImageURL": provider_result_url(_media(h, p, i), "pixabay", q, i, _kind(p, i)),
            "imageWidth": 4000,
            "imageHeight": 3000,
        })
    h.send_json({"total": total, "totalHits": hits_total, "hits": hits},
                headers={"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "99",
                         "X-RateLimit-Reset": "60"})


GOOGLE_MIME = {"png": "image/png", "jpg": "image/jpeg", "gif": "image/gif"}  # as indexed


def _google_error(h, message):
    h.send_json({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT",
                           "errors": [{"message": message, "domain": "global", "reason": "badRequest"}]}},
                status=400)


def _google(h, path, p):
    if not p.get("key") or not p.get("cx"):
        return _google_error(h, "Request contains an invalid argument.")
    q = p.get("q", "")
    num = _int_param(p, "num", 10)
    start = _int_param(p, "start", 1)
    if num is None or not 1 <= num <= 10 or start is None or start < 1 or start + num - 1 > 100:
        return _google_error(h, "Request contains an invalid argument.")
    total = _total(p, 250)

    def query_info(first, count):
        return {"title": "Google Custom Search - %s" % q, "totalResults": str(total),
                "searchTerms": q, "count": count, "startIndex": first, "inputEncoding": "utf8",
                "outputEncoding": "utf8", "safe": "off", "cx": p["cx"], "searchType": "image"}

    items = []
    for i in range(start - 1, min(start - 1 + num, total)):
        kind = _kind(p, i)
        link = provider_result_url(_media(h, p, i), "google", q, i, kind)
        items.append({"kind": "customsearch#result", "title": "%s %d" % (q, i),
                      "htmlTitle": "<b>%s</b> %d" % (q, i), "link": link,
                      "displayLink": "%s:%d" % (h.origin.host, h.origin.port),
                      "snippet": "%s %d" % (q, i),
                      "mime": GOOGLE_MIME[EXTENSIONS.get(kind, "jpg")],
                      "fileFormat": GOOGLE_MIME[EXTENSIONS.get(kind, "jpg")],
                      "image": {"contextLink": h.origin.base_url + "/page/%d" % i,
                                "height": 480, "width": 640, "byteSize": 800 + (i % 50) * 10,
                                "thumbnailLink": h.origin.url("/file/google-thumb-%d.jpg" % i,
                                                              size=300, type="jpeg"),
                                "thumbnailHeight": 90, "thumbnailWidth": 120}})
    queries = {"request": [query_info(start, len(items))]}
    nxt = start + num
    if nxt <= total and nxt + num - 1 <= 100:
        queries["nextPage"] = [query_info(nxt, num)]
    if start > 1:
        queries["previousPage"] = [query_info(max(1, start - num), num)]
    answer = {"kind": "customsearch#search",
              "url": {"type": "application/json",
                      "template": "https://www.googleapis.com/customsearch/v1?q={searchTerms}"},
              "queries": queries,
              "context": {"title": "fake engine"},
              "searchInformation": {"searchTime": 0.12, "formattedSearchTime": "0.12",
                                    "totalResults": str(total),
                                    "formattedTotalResults": "{:,}".format(total)}}
    if items:
        answer["items"] = items
    h.send_json(answer)


ROUTES += [
    ("/api/openverse/", _openverse),
    ("/api/wikimedia/w/api.php", _wikimedia),
    ("/api/pixabay/", _pixabay),
    ("/api/google/customsearch/v1", _google),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)

    origin = FakeOrigin(args.host, args.port, args.verbose).start()
    print(origin.port, flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1.0):
        pass
    origin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
