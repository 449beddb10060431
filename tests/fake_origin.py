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
                    them. ?type=png|jpeg|gif|mp4|html|text (default png)
                    picks the leading magic (html serves an HTML page, text
                    plain ASCII). ETag, Last-Modified, Accept-Ranges; Range
                    and If-Range give 206 (or 416) unless ?norange=1. HEAD
                    works.
  /_stats           JSON counters: {"total", "paths", "keys"}; with ?key=K
                    {"key", "count"}; with ?path=P {"path", "count"}.
  /_reset           clears counters and the request log.
  anything else     404, unless a route was added with add_route() (the
                    place for the fake search APIs: see ROUTES below) or
                    ?status/?redirect/?reset answer it.

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
  last_modified=D   Last-Modified override (an HTTP date)

FakeOrigin.set_override(path, **params) forces parameters on every later
request for a path, so the content behind an unchanged URL can change.

Faults are the status, retry_after, delay, drip, stall_after, truncate,
reset and reset_after parameters; the others apply to every request.
"""

import argparse
import functools
import hashlib
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

__all__ = ["FakeOrigin", "body_for", "etag_for", "iter_body", "LAST_MODIFIED"]

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
    "text": b"",
}

CONTENT_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "mp4": "video/mp4",
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

    Each log entry is a dict: time (monotonic s), wall (epoch s), method,
    path (decoded, no query), query (raw string), params (dict, last value
    wins), headers (dict with lower-case names), key (the fail key: ?key or
    the path), ordinal (1-based count of that key), body (bytes).
    """

    def __init__(self, host="127.0.0.1", port=0, verbose=False):
        self.host = host
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
        return "http://%s:%d" % (self.host, self.port)

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
            })
        return ordinal

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


# ---- routes -------------------------------------------------------------------
# Fake search APIs go here: append (prefix, fn) pairs, fn(handler, path,
# params) answering with handler.send_json(...). Example shape:
#
#   def _search_simple(h, path, params):
#       n = int(params.get("n", 10))
#       h.send_json({"results": [{"url": ...} for i in range(n)]})
#   ROUTES.append(("/search/simple", _search_simple))
ROUTES = []


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
