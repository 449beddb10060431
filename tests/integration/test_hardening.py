"""What an adversarial client or a careless operator can do to hauld, and
what hauld answers: slow clients holding connections (slowloris),
ambiguous request framing (smuggling), other sites' pages changing state
(CSRF), settings files that are no files, a reload changing what needs a
restart, source labels borrowing a query source's name, scriptable content
passing as an image, and answers whose headers are too large or too many.
"""

import json
import os
import re
import select
import socket
import subprocess
import time

import hauldtest

FAST = {"RETRY_BACKOFF_BASE": "0.05", "RETRY_BACKOFF_MAX": "0.1"}
CHECK_TIMEOUT = 10.0   # s a --check-config may take before it counts as blocked
HEADER_TIMEOUT = 10.0  # API_HEADER_TIMEOUT's default
PER_IP = 64            # API_MAX_CONNECTIONS_PER_IP's default
SLOW_ADDR = "127.0.0.2"  # the slow clients' source address: the probes use 127.0.0.1


def raw_exchange(port, data, timeout=5.0):
    """Send data on a fresh connection; (bytes answered until the server
    closed, whether it closed within timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    out = b""
    closed = False
    try:
        s.sendall(data)
        while True:
            b = s.recv(65536)
            if not b:
                closed = True
                break
            out += b
    except socket.timeout:
        pass
    finally:
        s.close()
    return out, closed


def parse_answer(raw):
    """(status, headers dict with lower-case names, body) of a raw answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


# ---- slow clients ---------------------------------------------------------------

def open_slow(test, port, n):
    """n connections to port from SLOW_ADDR, non-blocking; each a dict with
    its socket, when it opened, when the server closed it and how many
    bytes it sent."""
    conns = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        test.addCleanup(s.close)
        s.bind((SLOW_ADDR, 0))
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        conns.append({"sock": s, "opened": time.monotonic(), "closed": None, "sent": 0})
    return conns


def mark_closed(c, now):
    if c["closed"] is None:
        c["closed"] = now


def drip(conns, request):
    """One more byte of request on each open connection."""
    for c in conns:
        if c["closed"] is not None or c["sent"] >= len(request):
            continue
        try:
            c["sock"].send(request[c["sent"]:c["sent"] + 1])
            c["sent"] += 1
        except BlockingIOError:
            pass
        except OSError:
            mark_closed(c, time.monotonic())


def watch(conns, wait):
    """Note the connections the server closes within wait seconds."""
    live = [c for c in conns if c["closed"] is None]
    if not live:
        time.sleep(wait)
        return
    readable, _, _ = select.select([c["sock"] for c in live], [], [], wait)
    now = time.monotonic()
    for c in live:
        if c["sock"] not in readable:
            continue
        try:
            if c["sock"].recv(4096) == b"":
                mark_closed(c, now)
        except BlockingIOError:
            pass
        except OSError:
            mark_closed(c, now)


class SlowClients(hauldtest.HauldTestCase):
    """300 connections from one address, each sending one byte a second,
    never finishing their headers, for 15 s: far over the per-address cap
    and past the header deadline."""

    CONNECTIONS = 300
    DRIP_S = 15.0

    def probe(self):
        t0 = time.monotonic()
        status, _, _ = self.daemon.get("/v1/health", timeout=5.0)
        return status, time.monotonic() - t0

    def test_slow_headers_are_cut_at_their_deadline_and_health_answers(self):
        request = b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"x" * 200
        start = time.monotonic()
        conns = open_slow(self, self.daemon.port, self.CONNECTIONS)
        probes = []
        next_drip = next_probe = start
        while time.monotonic() - start < self.DRIP_S:
            now = time.monotonic()
            if now >= next_drip:
                drip(conns, request)
                next_drip += 1.0
            if now >= next_probe:
                probes.append(self.probe())
                next_probe += 0.5
            watch(conns, 0.05)
        # every probe answered, and fast, the whole time
        self.assertGreaterEqual(len(probes), 25, probes)
        for status, took in probes:
            self.assertEqual(status, 200, probes)
            self.assertLess(took, 1.0, probes)
        # past the per-address cap, closed at once; the rest at their deadline
        held = [c for c in conns if c["closed"] is None or c["closed"] - c["opened"] > 2.0]
        self.assertGreater(len(held), 0)
        self.assertLessEqual(len(held), PER_IP)
        for c in held:
            self.assertIsNotNone(c["closed"], "a slow connection outlived its header deadline")
            lived = c["closed"] - c["opened"]
            self.assertGreaterEqual(lived, HEADER_TIMEOUT - 0.5, lived)
            self.assertLess(lived, HEADER_TIMEOUT + 2.0, lived)
            self.assertLess(c["sent"], len(request))  # they never finished their headers
        # the log sums the closings up, a line per 10 s window (they may
        # straddle two); no line per connection
        summary = re.compile(r"httpd: closed (\d+) connections? in the last 10 s: no complete request "
                             r"headers within 10 s")

        def summed():
            return sum(int(n) for n in summary.findall(self.daemon.log_text()))
        self.daemon.wait_for(lambda: summed() >= len(held), timeout=12.0,
                             what="the summaries of the connections closed")
        self.assertEqual(summed(), len(held))
        warnings = [line for line in self.daemon.log_text().splitlines() if " warning httpd: " in line]
        self.assertLessEqual(len(warnings), 9, "\n".join(warnings))

    def test_a_request_that_finishes_its_headers_in_time_is_answered(self):
        # slow, but within the deadline: a byte every 50 ms
        request = b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        s = socket.create_connection(("127.0.0.1", self.daemon.port), timeout=5.0)
        self.addCleanup(s.close)
        for i in range(len(request)):
            s.send(request[i:i + 1])
            time.sleep(0.05)
        status, _, body = parse_answer(s.recv(65536))
        self.assertEqual(status, 200)
        self.assertIn(b'"status"', body)


class SlowClientsSettings(hauldtest.HauldTestCase):
    daemon_env = {"API_HEADER_TIMEOUT": "2", "API_MAX_CONNECTIONS_PER_IP": "3"}

    def test_settings_apply_and_show(self):
        _, _, cfg = self.daemon.get("/v1/config")
        self.assertEqual(cfg["API_HEADER_TIMEOUT"], "2")
        self.assertEqual(cfg["API_MAX_CONNECTIONS_PER_IP"], "3")
        self.assertEqual(cfg["API_THREADS"], "4")
        self.assertEqual(cfg["API_MAX_CONNECTIONS"], "1024")
        conns = open_slow(self, self.daemon.port, 5)
        drip(conns, b"GET /")
        while any(c["closed"] is None for c in conns) and time.monotonic() - conns[0]["opened"] < 6.0:
            watch(conns, 0.1)
        lived = sorted(c["closed"] - c["opened"] for c in conns if c["closed"] is not None)
        self.assertEqual(len(lived), 5, lived)
        self.assertLess(lived[1], 1.0, lived)  # the cap held three; two were refused at once
        for t in lived[2:]:
            self.assertGreater(t, 1.5, lived)  # the other three at their 2 s deadline
            self.assertLess(t, 3.5, lived)
        self.assertEqual(self.daemon.get("/v1/health")[0], 200)


# ---- framing ------------------------------------------------------------------------

class Framing(hauldtest.HauldTestCase):
    def job_body(self):
        return json.dumps({"urls": [self.file_url("framed.png")]}).encode()

    def headers(self, *extra):
        return ("POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                % self.daemon.port + "".join(h + "\r\n" for h in extra) + "\r\n").encode()

    def assert_refused(self, data):
        raw, closed = raw_exchange(self.daemon.port, data)
        status, headers, body = parse_answer(raw)
        self.assertEqual(status, 400, raw)
        self.assertTrue(headers["content-type"].startswith("application/problem+json"), headers)
        self.assertIn("length is ambiguous", json.loads(body)["detail"])
        self.assertTrue(closed, "the connection stays open after an ambiguous request")
        self.assertEqual(self.daemon.get("/v1/jobs")[2]["jobs"], [])

    def test_conflicting_content_lengths_refused_before_the_body(self):
        n = len(self.job_body())
        # no body sent at all: the answer comes from the headers alone
        self.assert_refused(self.headers("Content-Length: %d" % n, "Content-Length: %d" % (n + 40)))

    def test_content_length_with_transfer_encoding_refused(self):
        body = self.job_body()
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        self.assert_refused(self.headers("Content-Length: %d" % len(body), "Transfer-Encoding: chunked")
                            + chunked)
        self.assert_refused(self.headers("Transfer-Encoding: chunked", "Content-Length: 5") + chunked)
        self.assert_refused(self.headers("Transfer-Encoding: gzip, chunked") + chunked)
        self.assert_refused(self.headers("Transfer-Encoding: chunked", "Transfer-Encoding: chunked") + chunked)

    def test_one_content_length_works(self):
        body = self.job_body()
        raw, _ = raw_exchange(self.daemon.port, self.headers("Content-Length: %d" % len(body),
                                                             "Connection: close") + body)
        status, _, answer = parse_answer(raw)
        self.assertEqual(status, 201, raw)
        self.daemon.wait_job(json.loads(answer)["id"], "succeeded")
        # a repeat of the same length is no conflict; chunked alone is fine too
        raw, _ = raw_exchange(self.daemon.port, self.headers("Content-Length: %d" % len(body),
                                                             "Content-Length: %d" % len(body),
                                                             "Connection: close") + body)
        self.assertEqual(parse_answer(raw)[0], 201, raw)
        raw, _ = raw_exchange(self.daemon.port, self.headers("Transfer-Encoding: chunked", "Connection: close")
                              + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        self.assertEqual(parse_answer(raw)[0], 201, raw)


# ---- other sites' pages ------------------------------------------------------------------

EVIL = "https://evil.example"


class CrossSite(hauldtest.HauldTestCase):
    daemon_env = dict(FAST, MAX_RETRIES_PER_ITEM="0", MAX_RETRIES_PER_SOURCE="0")

    def failed_job(self, d=None):
        d = d or self.daemon
        job = d.post_job({"urls": [self.origin.url("/gone.png", status=404, key="gone")]})
        return d.wait_job(job["id"], "failed")

    def own_origin(self, d=None):
        return "http://127.0.0.1:%d" % (d or self.daemon).port

    def attempts(self):
        """Requests of the failed job's URL the origin saw."""
        return self.origin.count(key="gone")

    def wait_attempts(self, job_id, n):
        """Wait for the job to have failed again, after n requests in all."""
        self.daemon.wait_for(lambda: self.attempts() == n and
                             self.daemon.get_job(job_id)["state"] == "failed",
                             timeout=15, what="attempt %d failed" % n)

    def test_cross_site_simple_posts_are_refused(self):
        job = self.failed_job()
        paths = ("/v1/jobs/%s/retry" % job["id"], "/v1/circuits/127.0.0.1:%d/reset" % self.origin.port)
        for path in paths:
            # a page on another site: 403, whatever the body
            self.assert_problem(self.daemon.post(path, "x", headers={"Origin": EVIL,
                                                                     "Content-Type": "text/plain"}), 403)
            self.assert_problem(self.daemon.post(path, None, headers={"Origin": EVIL}), 403)
            # no Origin, but a body only a form sends: 415
            self.assert_problem(self.daemon.post(path, "x", headers={"Content-Type": "text/plain"}), 415)
            self.assert_problem(self.daemon.post(path, "a=1", headers={
                "Content-Type": "application/x-www-form-urlencoded"}), 415)
            self.assert_problem(self.daemon.post(path, "--b--\r\n", headers={
                "Content-Type": "multipart/form-data; boundary=b"}), 415)
        self.assert_problem(self.daemon.delete("/v1/jobs/" + job["id"], headers={"Origin": EVIL}), 403)
        # nothing happened
        time.sleep(0.3)
        self.assertEqual(self.daemon.get_job(job["id"])["state"], "failed")
        self.assertEqual(self.attempts(), 1)
        # reads are not refused
        self.assertEqual(self.daemon.get("/v1/jobs/" + job["id"], headers={"Origin": EVIL})[0], 200)

    def test_form_bodies_refused_on_any_route(self):
        for path in ("/v1/jobs", "/v1/stats/reset", "/v1/no/such/route"):
            self.assert_problem(self.daemon.post(path, "q=1", headers={"Content-Type": "text/plain; charset=utf-8"}),
                                415)
        self.assert_problem(self.daemon.post("/v1/jobs", json.dumps({"urls": [self.file_url("a.png")]}),
                                             headers={"Content-Type": "text/plain"}), 415)
        self.assertEqual(self.daemon.get("/v1/jobs")[2]["jobs"], [])

    def test_same_origin_and_plain_clients_still_work(self):
        job = self.failed_job()
        path = "/v1/jobs/%s/retry" % job["id"]
        # the dashboard: same origin, JSON
        st, _, data = self.daemon.post(path, {}, headers={"Origin": self.own_origin()})
        self.assertEqual(st, 200, data)
        self.wait_attempts(job["id"], 2)
        # curl -X POST: no Content-Type, no Origin
        st, _, data = self.daemon.post(path)
        self.assertEqual(st, 200, data)
        self.wait_attempts(job["id"], 3)
        # hauldctl and curl -d '': an empty urlencoded body, no Origin
        st, _, data = self.daemon.post(path, b"", headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(st, 200, data)
        self.wait_attempts(job["id"], 4)
        # ... but not from a page
        self.assert_problem(self.daemon.post(path, b"", headers={
            "Content-Type": "application/x-www-form-urlencoded", "Origin": self.own_origin()}), 415)
        # a same-origin JSON job
        st, _, data = self.daemon.post("/v1/jobs", {"urls": [self.file_url("same.png")]},
                                       headers={"Origin": self.own_origin()})
        self.assertEqual(st, 201, data)
        self.daemon.wait_job(data["id"], "succeeded")

    def test_listed_origin_allowed_and_token_does_not_help_others(self):
        token_path = os.path.join(self.daemon.tmp, "token")
        with open(token_path, "w") as f:
            f.write("s3cret\n")
        d = self.new_daemon(dict(self.daemon_env, CORS_ORIGINS="https://app.example",
                                 API_TOKEN_FILE=token_path))
        auth = {"Authorization": "Bearer s3cret"}
        st, _, job = d.post("/v1/jobs", {"urls": [self.origin.url("/gone2.png", status=404)]}, headers=auth)
        self.assertEqual(st, 201, job)
        d.wait_for(lambda: d.get("/v1/jobs/" + job["id"], headers=auth)[2]["state"] == "failed",
                   timeout=30, what="the job failing")
        path = "/v1/jobs/%s/retry" % job["id"]
        self.assert_problem(d.post(path, {}, headers=dict(auth, Origin=EVIL)), 403)
        st, h, data = d.post(path, {}, headers=dict(auth, Origin="https://app.example"))
        self.assertEqual(st, 200, data)
        self.assertEqual(h.get("Access-Control-Allow-Origin"), "https://app.example")


# ---- settings files -----------------------------------------------------------------------

class SettingsFiles(hauldtest.HauldTestCase):
    start_daemon = False

    def setUp(self):
        super().setUp()
        self.d = hauldtest.Daemon(start=False)
        self.addCleanup(self.d.cleanup)

    def check(self, *args, env=None):
        """hauld --check-config ARGS: (exit status, output); fails the test if
        it does not finish within CHECK_TIMEOUT."""
        environ = self.d.environ()
        environ.update(env or {})
        t0 = time.monotonic()
        p = subprocess.run([self.d.binary, "--check-config"] + list(args), env=environ,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=CHECK_TIMEOUT)
        self.assertLess(time.monotonic() - t0, 5.0, "hauld took its time: it blocked")
        return p.returncode, p.stdout.decode("utf-8", "replace")

    def path(self, name):
        return os.path.join(self.d.tmp, name)

    def test_devices_fifos_and_directories_fail_at_once_naming_why(self):
        fifo = self.path("fifo.conf")
        os.mkfifo(fifo)
        cases = [("/dev/zero", "/dev/zero: is not a regular file (it is a character device)"),
                 (fifo, "%s: is not a regular file (it is a FIFO)" % fifo),
                 (self.d.tmp, "%s: is a directory" % self.d.tmp),
                 (self.path("none.conf"), "cannot be opened: No such file or directory")]
        for conf, message in cases:
            rc, out = self.check("--config", conf)
            self.assertEqual(rc, 78, out)
            self.assertIn(message, out)
            self.assertNotIn("Input/output error", out)
            self.assertNotIn(": :", out)

    def test_symlink_to_a_regular_file_and_the_null_device_are_fine(self):
        real = self.path("real.conf")
        with open(real, "w") as f:
            f.write("MAX_RETRIES_PER_ITEM=3\n")
        os.symlink(real, self.path("link.conf"))
        rc, out = self.check("--config", self.path("link.conf"))
        self.assertEqual(rc, 0, out)
        rc, out = self.check("--config", "/dev/null")
        self.assertEqual(rc, 0, out)

    def test_config_file_over_one_mib_refused(self):
        big = self.path("big.conf")
        with open(big, "w") as f:
            f.write("#" * (1024 * 1024) + "\n")
        rc, out = self.check("--config", big)
        self.assertEqual(rc, 78, out)
        self.assertIn("is larger than 1048576 bytes", out)

    def test_token_file_that_is_no_file(self):
        fifo = self.path("token.fifo")
        os.mkfifo(fifo)
        for token, message in ((self.d.tmp, "is a directory"), (fifo, "is not a regular file (it is a FIFO)"),
                               ("/dev/zero", "is not a regular file (it is a character device)")):
            rc, out = self.check("--config", "/dev/null", "API_TOKEN_FILE=" + token)
            self.assertEqual(rc, 78, out)
            self.assertIn("API_TOKEN_FILE: %s %s" % (token, message), out)

    def test_sources_dir_must_exist(self):
        missing = self.path("no-sources")
        rc, out = self.check("--config", "/dev/null", env={"SOURCES_DIR": missing})
        self.assertEqual(rc, 78, out)
        self.assertIn("SOURCES_DIR: %s does not exist" % missing, out)
        # and the daemon does not start either
        p = subprocess.run([self.d.binary, "--config", "/dev/null", "LISTEN=127.0.0.1:%d" % self.d.port],
                           env=dict(self.d.environ(), SOURCES_DIR=missing), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=CHECK_TIMEOUT)
        self.assertEqual(p.returncode, 78, p.stdout)
        # an empty directory is fine: no query sources
        rc, out = self.check("--config", "/dev/null")
        self.assertEqual(rc, 0, out)
        self.assertIn("0 query sources", out)


# ---- reload -----------------------------------------------------------------------------

class FileDaemon(hauldtest.Daemon):
    """A daemon whose LISTEN comes from its settings file, not from the
    command line (a flag would win over the file), so a reload can try to
    change it."""

    def __init__(self, text, **kw):
        super().__init__(start=False, **kw)
        self.conf = os.path.join(self.tmp, "hauld.conf")
        self.write_conf(text)

    def write_conf(self, text):
        with open(self.conf + ".new", "w") as f:
            f.write(text.replace("@PORT@", str(self.port)))
        os.rename(self.conf + ".new", self.conf)

    def _spawn(self):
        self.starts += 1
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([self.binary, "--config", self.conf], env=self.environ(),
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.tmp)
        self.returncode = None


class ReloadRestartKeys(hauldtest.HauldTestCase):
    start_daemon = False

    def test_reload_keeps_what_takes_a_restart_and_applies_the_rest(self):
        d = FileDaemon("LISTEN=127.0.0.1:@PORT@\nMAX_RETRIES_PER_ITEM=1\n", env=FAST)
        self.addCleanup(d.cleanup)
        d.start()
        before = d.get("/v1/config")[2]
        other_port = hauldtest.free_port()
        other_store = os.path.join(d.tmp, "elsewhere", "jobs.db")
        d.write_conf("LISTEN=127.0.0.1:%d\nSTORE=sqlite:%s\nMAX_RETRIES_PER_ITEM=4\n" % (other_port, other_store))
        n = d.log_text().count("config: reloaded")
        d.reload()
        d.wait_for(lambda: d.log_text().count("config: reloaded") > n, what="the reload")
        text = d.log_text()
        for key in ("LISTEN", "STORE"):
            lines = [line for line in text.splitlines() if "config: %s changed" % key in line]
            self.assertEqual(len(lines), 1, text)
            self.assertIn(" warning ", lines[0])
            self.assertIn("takes a restart", lines[0])
        self.assertNotIn("MAX_RETRIES_PER_ITEM changed", text)
        cfg = d.get("/v1/config")[2]
        self.assertEqual(cfg["LISTEN"], before["LISTEN"])
        self.assertEqual(cfg["STORE"], before["STORE"])
        self.assertEqual(cfg["MAX_RETRIES_PER_ITEM"], "4")
        # the job table stays the one both the API and the scheduler use
        job = d.post_job({"urls": [self.file_url("after-reload.png")]})
        job = d.wait_job(job["id"], timeout=15)
        self.assertEqual(job["state"], "succeeded", job)
        self.assertFalse(os.path.exists(other_store))
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", other_port), timeout=1.0).close()
        # the new MAX_RETRIES_PER_ITEM is the one in effect: 1 + 4 rounds
        job = d.post_job({"urls": [self.origin.url("/flaky.png", status=503)]})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(job["state"], "failed", job)

    def test_reload_with_missing_sources_dir_fails_and_keeps_settings(self):
        d = FileDaemon("LISTEN=127.0.0.1:@PORT@\nMAX_RETRIES_PER_ITEM=1\n")
        self.addCleanup(d.cleanup)
        d.start()
        d.write_conf("LISTEN=127.0.0.1:@PORT@\nMAX_RETRIES_PER_ITEM=4\n")
        os.rmdir(d.sources_dir)
        n = d.log_text().count("reload failed")
        d.reload()
        d.wait_for(lambda: d.log_text().count("reload failed") > n, what="the failed reload")
        self.assertIn("SOURCES_DIR: %s does not exist" % d.sources_dir, d.log_text())
        self.assertEqual(d.get("/v1/config")[2]["MAX_RETRIES_PER_ITEM"], "1")


# ---- names ------------------------------------------------------------------------------

class LabelCollision(hauldtest.HauldTestCase):
    start_daemon = False

    def test_label_naming_a_query_source_refused(self):
        d = hauldtest.Daemon(start=False)
        d.write_source("stock", {"search_url": self.origin.base_url + "/search?q={query}&page={page}",
                                 "items": "/results", "url": "/url"})
        self._daemons.append(d)
        d.start()
        self.assert_problem(d.post("/v1/jobs", {"urls": [self.file_url("a.png"),
                                                         {"url": self.file_url("b.png"), "source": "stock"}]}),
                            400, field="urls[1].source")
        self.assertEqual(d.get("/v1/jobs")[2]["jobs"], [])
        job = d.post_job({"urls": [{"url": self.file_url("b.png"), "source": "stock-mirror"}]})
        job = d.wait_job(job["id"])
        self.assertEqual(job["state"], "succeeded", job)
        self.assertEqual(job["per_source"][0]["source"], "stock-mirror", job)


# ---- scriptable content -------------------------------------------------------------------

SVG = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
       b'<script>fetch("/v1/jobs",{method:"DELETE"})</script><rect width="10" height="10"/></svg>\n')


class ScriptableContent(hauldtest.HauldTestCase):
    start_daemon = False

    def setUp(self):
        super().setUp()
        self.origin.add_route("/svg/", lambda h, path, p: h.send_simple(200, SVG, "image/svg+xml"))

    def run_svg(self, env):
        d = self.new_daemon(dict(FAST, MAX_RETRIES_PER_ITEM="0", **env))
        job = self.run_job({"urls": [self.origin.url("/svg/icon.svg")]}, daemon=d)
        return d, job, self.items(job["id"], daemon=d)[0]

    def test_svg_with_script_is_no_image(self):
        _, job, it = self.run_svg({})
        self.assertEqual(job["state"], "failed", job)
        self.assert_item_error(it, "invalid_content")
        self.assertIn("image/svg+xml", it["error"]["message"])
        self.assertEqual(it["attempts"], 1)

    def test_svg_accepted_when_named(self):
        d, job, it = self.run_svg({"ACCEPT_CONTENT": "image,image/svg+xml"})
        self.assertEqual(job["state"], "succeeded", job)
        with open(self.item_path(it, daemon=d), "rb") as f:
            self.assertEqual(f.read(), SVG)
        self.assertTrue(it["path"].endswith(".svg"), it)


# ---- answers with too much header ------------------------------------------------------------

class BadResponses(hauldtest.HauldTestCase):
    daemon_env = dict(FAST, MAX_RETRIES_PER_SOURCE="3", MAX_RETRIES_PER_ITEM="2",
                      CIRCUIT_BREAKER_THRESHOLD="2")

    def test_huge_or_countless_headers_are_bad_response_not_retried(self):
        job = self.run_job({"urls": [self.file_url("huge.png", big_header=200 * 1000, key="huge"),
                                     self.file_url("many.png", many_headers=5000, key="many")]})
        self.assertEqual(job["state"], "failed", job)
        items = {it["url"].split("?")[0].rsplit("/", 1)[1]: it for it in self.items(job["id"])}
        for name, words in (("huge.png", "header line is over"), ("many.png", "more than 500 header lines")):
            it = items[name]
            self.assert_item_error(it, "bad_response")
            self.assertIn(words, it["error"]["message"])
            self.assertNotIn("memory", it["error"]["message"].lower())
            self.assertEqual(it["attempts"], 1, it)
        self.assertEqual(self.origin.count(key="huge"), 1)
        self.assertEqual(self.origin.count(key="many"), 1)
        # both counted against the source's circuit: two of two open it
        circuits = self.daemon.get("/v1/circuits")[2]["circuits"]
        self.assertEqual(len(circuits), 1, circuits)
        self.assertEqual(circuits[0]["state"], "open", circuits)
        self.assertIn("bad_response", circuits[0]["last_error"] or "", circuits)

    def test_many_ordinary_headers_are_fine(self):
        job = self.run_job({"urls": [self.file_url("some.png", many_headers=100, big_header=4000)]})
        self.assertEqual(job["state"], "succeeded", job)


if __name__ == "__main__":
    hauldtest.main()
