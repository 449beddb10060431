"""What an operator reads and tunes: the scheduler's log lines (JOB START,
CONFIG, DOWNLOADING, SUCCESS, RETRY, TIMEOUT, CIRCUIT BREAKER, JOB COMPLETE,
STATISTICS, DOWNLOAD STATS, SOURCE STATS) with their fields, LOG_FILE_LINES,
LOG_FORMAT=json, the retry delays as the origin sees them, the circuit's
growing open time, the statistics endpoints, and the environment profiles
under etc/profiles.

The retry timing tests use RETRY_BACKOFF_BASE=0.5 (or 0.25) instead of the
default 1 s to keep them short: the schedule is the same, halved (0.5, 1,
2 s instead of 1, 2, 4 s)."""

import json
import os
import re
import socket
import subprocess
import tempfile
import time

import hauldtest

# The design's recommended settings per environment (etc/profiles/*.conf).
PROFILES = {
    "development": {"MAX_CONCURRENT_SOURCES": "5", "SOURCE_TIMEOUT": "20", "REQUEST_TIMEOUT": "10",
                    "MAX_RETRIES_PER_SOURCE": "2", "MIN_DOWNLOAD_SPEED": "2048", "STALL_TIMEOUT": "20"},
    "production": {"MAX_CONCURRENT_SOURCES": "5", "SOURCE_TIMEOUT": "30", "REQUEST_TIMEOUT": "15",
                   "MAX_RETRIES_PER_SOURCE": "3", "MIN_DOWNLOAD_SPEED": "1024", "STALL_TIMEOUT": "30"},
    "slow-network": {"MAX_CONCURRENT_SOURCES": "3", "SOURCE_TIMEOUT": "60", "REQUEST_TIMEOUT": "30",
                     "MAX_RETRIES_PER_SOURCE": "5", "MIN_DOWNLOAD_SPEED": "512", "STALL_TIMEOUT": "60"},
}

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|warning|error) (.*)$")
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SECS = r"\d+\.\ds"
RATE = r"\d+(\.\d)? (B|KB|MB)/s"


def thousands(n):
    return "{:,}".format(n)


def mb(n):
    return "%.2f MB" % (n / 1048576.0)


class Search:
    """Fake search APIs on a FakeOrigin: /search/good lists files of SIZE
    bytes on the same origin (5 per page, each answered after `delay`
    seconds), /search/slow the same files answered after 8 s,
    /search/broken always answers 500."""

    def __init__(self, origin, size=600000, delay=0.3):
        self.origin = origin
        self.size = size
        self.delay = delay
        origin.add_route("/search/", self.answer)

    def answer(self, handler, path, params):
        kind = path.rsplit("/", 1)[-1]
        if kind == "broken":
            handler.send_json({"error": "down"}, status=500)
            return
        page = int(params.get("page", "1"))
        first = (page - 1) * 5
        delay = 8 if kind == "slow" else self.delay
        handler.send_json({"results": [{"url": self.url(i, delay)} for i in range(first, first + 5)]})

    def url(self, i, delay):
        return self.origin.url("/file/good-%03d.png" % i, size=self.size, seed=i, delay=delay)

    def source(self, kind):
        return {"search_url": self.origin.base_url + "/search/" + kind + "?q={query}&page={page}",
                "per_page": 5, "items": "/results", "url": "/url"}


class LogReader:
    """The daemon's text log as (level, message) pairs."""

    def __init__(self, daemon):
        self.entries = []
        for raw in daemon.log_text().splitlines():
            m = TEXT_LINE.match(raw)
            if m:
                self.entries.append((m.group(1), m.group(2)))

    def find(self, pattern, level=None):
        """Entries whose message matches the regex pattern (from its start)."""
        rx = re.compile(pattern)
        return [(i, lv, msg) for i, (lv, msg) in enumerate(self.entries)
                if rx.match(msg) and (level is None or lv == level)]

    def one(self, case, pattern, level="info"):
        found = self.find(pattern, level)
        case.assertEqual(len(found), 1, "want one %s line matching %r, got %r\n%s"
                         % (level, pattern, found, self.dump()))
        return found[0]

    def dump(self):
        return "\n".join("%s %s" % e for e in self.entries)


class OperatorCase(hauldtest.HauldTestCase):
    start_daemon = False

    def daemon_with(self, env, sources=None, **kw):
        d = hauldtest.Daemon(env, start=False, **kw)
        self._daemons.append(d)
        self.addCleanup(d.stop)
        for name, spec in (sources or {}).items():
            d.write_source(name, spec)
        d.start()
        return d

    def assert_in_order(self, indices):
        self.assertEqual(list(indices), sorted(indices), "lines out of order: %r" % (indices,))


class JobLines(OperatorCase):
    """Every line of a job, with its fields, from a real run."""

    def test_query_job_lines(self):
        search = Search(self.origin)
        env = {"MAX_CONCURRENT_SOURCES": "4", "SOURCE_TIMEOUT": "25", "GLOBAL_JOB_TIMEOUT": "120",
               "REQUEST_TIMEOUT": "7", "MAX_RETRIES_PER_SOURCE": "2", "MAX_RETRIES_PER_ITEM": "1",
               "MIN_DOWNLOAD_SPEED": "2048", "STALL_TIMEOUT": "20", "CIRCUIT_BREAKER_THRESHOLD": "6",
               "CIRCUIT_BREAKER_TIMEOUT": "45", "RETRY_BACKOFF_BASE": "0.2", "LOG_LEVEL": "info"}
        d = self.daemon_with(env, {"good": search.source("good"), "broken": search.source("broken")})
        job = self.run_job({"query": "cars", "sources": ["good", "broken"], "max": 3}, daemon=d)
        self.assertEqual(job["state"], "succeeded", job)
        jid = job["id"]
        p = "job %s: " % re.escape(jid)
        log = LogReader(d)

        start = log.one(self, p + r"=== JOB START === \| Query: cars \| Sources: \[good, broken\] \| Max: 3")
        configs = [
            log.one(self, p + re.escape("CONFIG: MAX_CONCURRENT_SOURCES=4, SOURCE_TIMEOUT=25s, "
                                        "GLOBAL_TIMEOUT=120s") + "$"),
            log.one(self, p + re.escape("CONFIG: REQUEST_TIMEOUT=7s, MAX_RETRIES_PER_SOURCE=2, "
                                        "MAX_RETRIES_PER_ITEM=1") + "$"),
            log.one(self, p + re.escape("CONFIG: MIN_DOWNLOAD_SPEED=2048 bytes/s, STALL_TIMEOUT=20s") + "$"),
            log.one(self, p + re.escape("CONFIG: CIRCUIT_BREAKER_THRESHOLD=6, CIRCUIT_BREAKER_TIMEOUT=45s")
                    + "$"),
        ]
        # the broken source's listing is retried: Attempt 2 of 1 + MAX_RETRIES_PER_SOURCE
        log.one(self, p + r"RETRY listing broken page 1, Attempt 2/3 after 0\.2s \(http_5xx: HTTP 500\)$")

        items = self.items(jid, daemon=d)
        done = [it for it in items if it["state"] == "succeeded"]
        self.assertEqual(len(done), 3)
        file_lines = []
        for it in done:
            file_lines.append(log.one(self, p + r"DOWNLOADING: good \| Item %d \| URL: %s$"
                                      % (it["index"], re.escape(it["url"]))))
            name = os.path.basename(it["path"])
            file_lines.append(log.one(self, p + r"SUCCESS: Downloaded: %s \(%s bytes in %s at %s\) from good$"
                                      % (re.escape(name), thousands(600000), SECS, RATE)))

        total = 3 * 600000
        end = [
            log.one(self, p + r"=== JOB COMPLETE === succeeded \| Downloaded: 3 \| Images: 3 \| Videos: 0 "
                    r"\| in %s$" % SECS),
            log.one(self, p + r"STATISTICS \| Success: good \| Failed: broken$"),
            log.one(self, p + r"DOWNLOAD STATS \| Attempts: 3, Successes: 3, Failures: 0, Skipped: %d, "
                    r"Retries: 0$" % job["progress"]["skipped"]),
            log.one(self, p + re.escape("DOWNLOAD STATS | Total Bytes: %s (%s)" % (thousands(total), mb(total)))
                    + "$"),
            log.one(self, p + re.escape("SOURCE STATS | good: Attempts=3, Success=3, Fail=0, Bytes=%s, "
                                        "Circuit=CLOSED" % thousands(total)) + "$"),
            log.one(self, p + re.escape("SOURCE STATS | broken: Attempts=0, Success=0, Fail=0, Bytes=0, "
                                        "Circuit=CLOSED") + "$"),
        ]
        self.assertEqual(thousands(total), "1,800,000")
        self.assertEqual(mb(total), "1.72 MB")
        self.assert_in_order([start[0]] + [c[0] for c in configs] + [min(f[0] for f in file_lines)])
        self.assert_in_order([max(f[0] for f in file_lines)] + [e[0] for e in end])

    def test_url_job_retry_and_timeout_lines(self):
        # RETRY_JITTER=0: the delays are exactly 0.5 s, then 1 s
        env = {"RETRY_BACKOFF_BASE": "0.5", "RETRY_JITTER": "0", "REQUEST_TIMEOUT": "1",
               "MIN_DOWNLOAD_SPEED": "1024", "STALL_TIMEOUT": "2", "MAX_RETRIES_PER_SOURCE": "3",
               "MAX_RETRIES_PER_ITEM": "0", "CIRCUIT_BREAKER_THRESHOLD": "50", "LOG_LEVEL": "info"}
        d = self.daemon_with(env)
        ok = self.file_url("ok.png", size=245678)
        flaky = self.file_url("flaky.png", size=3000, fail=2, key="flaky")
        slow = self.file_url("slow.png", size=3000, delay=3, fail=1, key="slow")
        drip = self.file_url("drip.png", size=3000, drip=300, fail=1, key="drip")
        vid = self.file_url("clip.mp4", size=5000, type="mp4")
        job = self.run_job({"urls": [ok, flaky, slow, drip, vid]}, daemon=d)
        self.assertEqual(job["state"], "succeeded", job)
        p = "job %s: " % re.escape(job["id"])
        log = LogReader(d)

        log.one(self, p + re.escape("RETRY Attempt 2/4 for %s after 0.5s (http_5xx: HTTP 503)" % flaky) + "$")
        log.one(self, p + re.escape("RETRY Attempt 3/4 for %s after 1.0s (http_5xx: HTTP 503)" % flaky) + "$")
        # TIMEOUT names the timeout that fired, at warning
        log.one(self, p + re.escape("TIMEOUT %s: no data for " % slow) + r"1\.\d s \(REQUEST_TIMEOUT\)$",
                level="warning")
        log.one(self, p + re.escape("RETRY Attempt 2/4 for %s after 0.5s (timeout: no data for " % slow))
        log.one(self, p + re.escape("TIMEOUT %s: " % drip) + r"\d+ B/s over 2\.\d s \(STALL_TIMEOUT\), below MIN_DOWNLOAD_SPEED$",
                level="warning")
        log.one(self, p + re.escape("RETRY Attempt 2/4 for %s after 0.5s (stalled: " % drip))
        for url in (ok, flaky, slow, drip, vid):
            self.assertEqual(len(log.find(p + r"DOWNLOADING: 127\.0\.0\.1:%d \| Item \d \| URL: %s$"
                                          % (self.origin.port, re.escape(url)))),
                             {ok: 1, flaky: 3, slow: 2, drip: 2, vid: 1}[url], url)
        log.one(self, p + r"SUCCESS: Downloaded: ok\.png \(245,678 bytes in %s at %s\) from 127\.0\.0\.1:%d$"
                % (SECS, RATE, self.origin.port))
        log.one(self, p + r"SUCCESS: Downloaded: clip\.mp4 \(5,000 bytes in %s at %s\) from 127\.0\.0\.1:%d$"
                % (SECS, RATE, self.origin.port))
        log.one(self, p + r"=== JOB START === \| URLs: 5 on 1 host \| Max: 5$")
        log.one(self, p + r"=== JOB COMPLETE === succeeded \| Downloaded: 5 \| Images: 4 \| Videos: 1 \| in ")
        log.one(self, p + r"STATISTICS \| Success: 127\.0\.0\.1:%d \| Failed: none$" % self.origin.port)
        log.one(self, p + r"DOWNLOAD STATS \| Attempts: 9, Successes: 5, Failures: 0, Skipped: 0, Retries: 4$")
        total = 245678 + 3 * 3000 + 5000
        log.one(self, p + re.escape("DOWNLOAD STATS | Total Bytes: %s (%s)" % (thousands(total), mb(total))))
        log.one(self, p + re.escape("SOURCE STATS | 127.0.0.1:%d: Attempts=9, Success=5, Fail=0, Bytes=%s, "
                                    "Circuit=CLOSED" % (self.origin.port, thousands(total))) + "$")

    def test_job_timeout_line(self):
        d = self.daemon_with({"LOG_LEVEL": "info"})
        job = self.run_job({"urls": [self.file_url("later.png", delay=8)], "timeout": 1}, daemon=d)
        self.assertEqual(job["state"], "timed_out", job)
        p = "job %s: " % re.escape(job["id"])
        log = LogReader(d)
        log.one(self, p + r"TIMEOUT job: the job's timeout \(1 s\) passed$", level="warning")
        log.one(self, p + r"=== JOB COMPLETE === timed_out \| Downloaded: 0 \| Images: 0 \| Videos: 0 \| in ")

    def test_connect_timeout_line(self):
        # a listener whose accept queue is full drops the SYN: the
        # connection is never made, and REQUEST_TIMEOUT (1 s) ends it
        lst = socket.socket()
        self.addCleanup(lst.close)
        lst.bind(("127.0.0.1", 0))
        lst.listen(0)
        port = lst.getsockname()[1]
        for _ in range(3):
            c = socket.socket()
            self.addCleanup(c.close)
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
        d = self.daemon_with({"REQUEST_TIMEOUT": "1", "MAX_RETRIES_PER_SOURCE": "0",
                              "MAX_RETRIES_PER_ITEM": "0", "LOG_LEVEL": "info"})
        url = "http://127.0.0.1:%d/never.png" % port
        job = self.run_job({"urls": [url]}, daemon=d)
        (item,) = self.items(job["id"], daemon=d)
        self.assert_item_error(item, "timeout")
        self.assertTrue(item["error"]["message"].endswith(" (REQUEST_TIMEOUT)"), item)
        log = LogReader(d)
        log.one(self, "job %s: " % re.escape(job["id"]) + re.escape("TIMEOUT %s: " % url)
                + r".* \(REQUEST_TIMEOUT\)$", level="warning")

    def test_source_timeout_line(self):
        """A query source whose files take 8 s ends at SOURCE_TIMEOUT (1 s)
        with "TIMEOUT source NAME: ... (SOURCE_TIMEOUT 1 s)", before the
        job's own timeout (3 s) would end it."""
        search = Search(self.origin, size=1000, delay=0)
        d = self.daemon_with({"REQUEST_TIMEOUT": "2", "SOURCE_TIMEOUT": "1", "LOG_LEVEL": "info"},
                             {"slow": search.source("slow")})
        job = self.run_job({"query": "cars", "sources": ["slow"], "max": 2, "timeout": 3}, daemon=d)
        p = "job %s: " % re.escape(job["id"])
        log = LogReader(d)
        log.one(self, p + r"TIMEOUT source slow: the source's time ran out \(SOURCE_TIMEOUT 1 s\)$",
                level="warning")
        (ps,) = job["per_source"]
        self.assertEqual((ps["state"], ps["error"]["code"]), ("timed_out", "source_timeout"), job)


class CircuitLines(OperatorCase):
    """A circuit (explicit URLs: one per host) that opens, grows its open
    time (CIRCUIT_BREAKER_GROWTH) up to CIRCUIT_BREAKER_MAX_TIMEOUT, and
    closes on a good probe."""

    ENV = {"CIRCUIT_BREAKER_THRESHOLD": "2", "CIRCUIT_BREAKER_TIMEOUT": "1", "CIRCUIT_BREAKER_GROWTH": "3",
           "CIRCUIT_BREAKER_MAX_TIMEOUT": "2.5", "MAX_RETRIES_PER_SOURCE": "0", "MAX_RETRIES_PER_ITEM": "0",
           "MAX_CONNECTIONS_PER_SOURCE": "1", "LOG_LEVEL": "info"}

    @property
    def host(self):
        return "127.0.0.1:%d" % self.origin.port

    def circuit(self, d):
        st, _h, data = d.get("/v1/circuits")
        self.assertEqual(st, 200, data)
        (c,) = [c for c in data["circuits"] if c["source"] == self.host]
        return c

    def open_dead_circuit(self, d):
        h = re.escape(self.host)
        job = self.run_job({"urls": [self.origin.url("/dead/%d" % i, status=500) for i in range(2)]}, daemon=d)
        self.assertEqual(job["state"], "failed", job)
        log = LogReader(d)
        log.one(self, r"CIRCUIT BREAKER opened for %s after 2 failures \(http_5xx\); probe in 1\.0 s$" % h,
                level="warning")
        log.one(self, r"job %s: SOURCE STATS \| %s: Attempts=2, Success=0, Fail=2, Bytes=0, Circuit=OPEN$"
                % (re.escape(job["id"]), h))
        log.one(self, r"job %s: STATISTICS \| Success: none \| Failed: %s$" % (re.escape(job["id"]), h))
        self.assertEqual(self.circuit(d)["open_s"], 1.0)

    def test_open_grow_to_the_cap_and_close(self):
        h = re.escape(self.host)
        d = self.daemon_with(self.ENV)
        self.open_dead_circuit(d)
        time.sleep(1.2)
        # the probe fails: open again for 1 s x 3, capped at 2.5 s
        job = self.run_job({"urls": [self.origin.url("/dead/probe", status=500)]}, daemon=d)
        self.assertEqual(job["state"], "failed", job)
        log = LogReader(d)
        log.one(self, r"CIRCUIT BREAKER opened for %s after 3 failures \(http_5xx\); probe in 2\.5 s$" % h,
                level="warning")
        c = self.circuit(d)
        self.assertEqual((c["state"], c["open_s"], c["trips"]), ("open", 2.5, 2))
        # a job meanwhile waits for the next probe, which succeeds
        t0 = time.monotonic()
        job = self.run_job({"urls": [self.file_url("alive.png", size=2000)]}, daemon=d)
        self.assertEqual(job["state"], "succeeded", job)
        self.assertGreater(time.monotonic() - t0, 1.5)
        log = LogReader(d)
        log.one(self, r"CIRCUIT BREAKER closed for %s \(probe succeeded\)$" % h)
        log.one(self, r"job %s: SOURCE STATS \| %s: Attempts=1, Success=1, Fail=0, Bytes=2,000, Circuit=CLOSED$"
                % (re.escape(job["id"]), h))
        self.assertEqual(self.circuit(d)["state"], "closed")

    def test_growth_1_keeps_the_open_time(self):
        d = self.daemon_with(dict(self.ENV, CIRCUIT_BREAKER_GROWTH="1"))
        self.open_dead_circuit(d)
        time.sleep(1.2)
        self.run_job({"urls": [self.origin.url("/dead/probe", status=500)]}, daemon=d)
        LogReader(d).one(self, r"CIRCUIT BREAKER opened for %s after 3 failures \(http_5xx\); probe in 1\.0 s$"
                         % re.escape(self.host), level="warning")
        self.assertEqual(self.circuit(d)["open_s"], 1.0)

    def test_a_failed_probe_reopens_even_for_a_url_counted_before(self):
        """Two dead URLs open the circuit; their retries wait for it. The
        first retry to go is the half-open probe and fails: the circuit
        must open again (HALF-OPEN -> failure -> OPEN), with the grown open
        time, although the probe's URL counted once already."""
        d = self.daemon_with(dict(self.ENV, MAX_RETRIES_PER_SOURCE="1", RETRY_BACKOFF_BASE="1.2",
                                  RETRY_JITTER="0"))
        job = self.run_job({"urls": [self.origin.url("/dead/%d" % i, status=500) for i in range(2)]}, daemon=d)
        self.assertEqual(job["state"], "failed", job)
        log = LogReader(d)
        log.one(self, r"CIRCUIT BREAKER opened for %s after 2 failures \(http_5xx\); probe in 1\.0 s$"
                % re.escape(self.host), level="warning")
        log.one(self, r"CIRCUIT BREAKER opened for %s after 3 failures \(http_5xx\); probe in 2\.5 s$"
                % re.escape(self.host), level="warning")
        c = self.circuit(d)
        self.assertEqual(c["state"], "open")
        self.assertGreaterEqual(c["trips"], 2)

    def test_half_open_is_logged(self):
        """The design's "CIRCUIT BREAKER half-open" line, before the probe's
        "closed" line."""
        d = self.daemon_with(self.ENV)
        self.open_dead_circuit(d)
        time.sleep(1.2)
        self.run_job({"urls": [self.file_url("alive.png")]}, daemon=d)
        log = LogReader(d)
        half = log.one(self, r"CIRCUIT BREAKER half-open for %s" % re.escape(self.host))
        closed = log.one(self, r"CIRCUIT BREAKER closed for %s \(probe succeeded\)$" % re.escape(self.host))
        self.assert_in_order([half[0], closed[0]])


class FileLines(OperatorCase):
    def run_two_files(self, d):
        job = self.run_job({"urls": [self.file_url("a.png"), self.file_url("b.png", fail=1, key="b")]},
                           daemon=d)
        self.assertEqual(job["state"], "succeeded", job)
        return job["id"]

    def test_file_lines_on_by_default(self):
        d = self.daemon_with({"LOG_LEVEL": "info", "RETRY_BACKOFF_BASE": "0.1"})
        jid = self.run_two_files(d)
        log = LogReader(d)
        self.assertEqual(len(log.find("job %s: DOWNLOADING: " % jid, "info")), 3)
        self.assertEqual(len(log.find("job %s: SUCCESS: Downloaded: " % jid, "info")), 2)

    def test_file_lines_false_drops_downloading_and_success(self):
        d = self.daemon_with({"LOG_LEVEL": "info", "LOG_FILE_LINES": "false", "RETRY_BACKOFF_BASE": "0.1"})
        jid = self.run_two_files(d)
        log = LogReader(d)
        self.assertEqual(log.find("job %s: (DOWNLOADING|SUCCESS)" % jid), [], log.dump())
        # the job's other lines stay
        log.one(self, "job %s: === JOB START ===" % jid)
        log.one(self, "job %s: RETRY Attempt 2/4 for " % jid)
        log.one(self, "job %s: === JOB COMPLETE === succeeded \\| Downloaded: 2" % jid)
        log.one(self, "job %s: DOWNLOAD STATS \\| Attempts: 3, Successes: 2" % jid)

    def test_file_lines_false_moves_them_to_debug(self):
        d = self.daemon_with({"LOG_LEVEL": "debug", "LOG_FILE_LINES": "false", "RETRY_BACKOFF_BASE": "0.1"})
        jid = self.run_two_files(d)
        log = LogReader(d)
        self.assertEqual(len(log.find("job %s: DOWNLOADING: " % jid, "debug")), 3)
        self.assertEqual(len(log.find("job %s: SUCCESS: Downloaded: " % jid, "debug")), 2)
        self.assertEqual(log.find("job %s: (DOWNLOADING|SUCCESS)" % jid, "info"), [])


class JsonLines(OperatorCase):
    # a label that would break a naive formatter: quotes, backslash, newline,
    # tab, a control character, non-ASCII
    LABEL = 'say "hi" \\ new\nline\ttab \x01 caf\u00e9 \u2603'

    def json_lines(self, d, prefix=""):
        out = []
        for raw in d.log_text().splitlines():
            if raw.startswith("==== start"):  # the harness's own marker
                continue
            self.assertTrue(raw.startswith(prefix), raw)
            try:
                o = json.loads(raw[len(prefix):])
            except ValueError as e:
                self.fail("not JSON (%s): %r" % (e, raw))
            self.assertIsInstance(o, dict, raw)
            out.append(o)
        self.assertGreater(len(out), 10)
        return out

    def check_fields(self, lines, jid):
        about_job = 0
        for o in lines:
            self.assertLessEqual(set(o), {"time", "level", "message", "job"}, o)
            self.assertRegex(o["time"], RFC3339_MS)
            self.assertIn(o["level"], ("debug", "info", "warning", "error"))
            m = re.match(r"job ([^ :]+): ", o["message"])
            if m:
                self.assertEqual(o.get("job"), m.group(1), o)
                about_job += o["job"] == jid
            else:
                self.assertNotIn("job", o)
        return about_job

    def test_json_lines(self):
        d = self.daemon_with({"LOG_FORMAT": "json", "LOG_LEVEL": "info", "CIRCUIT_BREAKER_THRESHOLD": "1",
                              "MAX_RETRIES_PER_SOURCE": "0", "MAX_RETRIES_PER_ITEM": "0"})
        job = self.run_job({"urls": [self.file_url("a.png")], "label": self.LABEL}, daemon=d)
        self.assertEqual(job["state"], "succeeded", job)
        # a warning: one failure opens the origin's circuit
        failed = self.run_job({"urls": [self.origin.url("/x", status=500)]}, daemon=d)
        self.assertEqual(failed["state"], "failed", failed)
        lines = self.json_lines(d)
        self.assertGreaterEqual(self.check_fields(lines, job["id"]), 12)
        start = [o for o in lines if o.get("job") == job["id"] and "=== JOB START ===" in o["message"]]
        self.assertEqual(len(start), 1)
        self.assertTrue(start[0]["message"].endswith("| Label: " + self.LABEL), start[0])
        self.assertEqual(start[0]["level"], "info")
        warn = [o for o in lines if o["message"].startswith("CIRCUIT BREAKER opened for ")]
        self.assertEqual(len(warn), 1)
        self.assertEqual(warn[0]["level"], "warning")
        self.assertTrue(any(o["message"].startswith("job %s: SUCCESS: Downloaded: a.png" % job["id"])
                            for o in lines))

    def test_json_under_journald_keeps_the_priority(self):
        d = self.daemon_with({"LOG_FORMAT": "json", "LOG_LEVEL": "info", "CIRCUIT_BREAKER_THRESHOLD": "1",
                              "MAX_RETRIES_PER_SOURCE": "0", "MAX_RETRIES_PER_ITEM": "0",
                              "JOURNAL_STREAM": "8:12345"})
        job = self.run_job({"urls": [self.file_url("a.png")]}, daemon=d)
        self.assertEqual(job["state"], "succeeded")
        failed = self.run_job({"urls": [self.origin.url("/x", status=500)]}, daemon=d)
        self.assertEqual(failed["state"], "failed")
        prio = {"debug": 7, "info": 6, "warning": 4, "error": 3}
        seen = set()
        for raw in d.log_text().splitlines():
            if raw.startswith("==== start"):
                continue
            m = re.match(r"^<(\d)>(\{.*\})$", raw)
            self.assertIsNotNone(m, raw)
            o = json.loads(m.group(2))
            self.assertEqual(int(m.group(1)), prio[o["level"]], raw)
            self.assertRegex(o["time"], RFC3339_MS)
            seen.add(o["level"])
        self.assertEqual(seen, {"info", "warning"})

    def test_reload_switches_the_format(self):
        tmp = tempfile.mkdtemp(prefix="hauld-conf-")
        self.addCleanup(subprocess.call, ["rm", "-rf", tmp])
        conf = os.path.join(tmp, "hauld.conf")
        with open(conf, "w") as f:
            f.write("LOG_FORMAT=text\n")
        d = self.daemon_with({"LOG_LEVEL": None}, args=["--config", conf])
        self.assertEqual(self.config_format(d), "text")
        with open(conf, "w") as f:
            f.write("LOG_FORMAT=json\n")
        d.reload()
        d.wait_for(lambda: self.config_format(d) == "json", timeout=5, what="LOG_FORMAT=json in force")
        job = self.run_job({"urls": [self.file_url("a.png")]}, daemon=d)
        text = d.log_text()
        self.assertRegex(text, r'(?m)^\{"time":"[^"]+","level":"info","message":"config: reloaded')
        after = text[text.index('"config: reloaded'):].splitlines()[1:]
        about = [json.loads(raw) for raw in after if job["id"] in raw]
        self.assertGreaterEqual(len(about), 10)
        self.assertTrue(all(o["job"] == job["id"] for o in about))

    @staticmethod
    def config_format(d):
        return d.get("/v1/config")[2]["LOG_FORMAT"]

    def test_text_under_journald(self):
        d = self.daemon_with({"LOG_LEVEL": "info", "JOURNAL_STREAM": "8:12345"})
        job = self.run_job({"urls": [self.file_url("a.png")], "label": "two\nlines"}, daemon=d)
        text = d.log_text()
        self.assertIn("<6>job %s: === JOB START === | URLs: 1 on 1 host | Max: 1 | Label: two\\nlines\n"
                      % job["id"], text)
        for raw in text.splitlines():
            if not raw.startswith("==== start"):
                self.assertRegex(raw, r"^<[3467]>\S")


class RetryTiming(OperatorCase):
    """Delays between the attempts of one URL, from the times the fake
    origin received them. RETRY_BACKOFF_BASE=0.5 halves the design's 1, 2,
    4 s to keep the test short. An observed gap is the delay plus the time
    to answer and to start the next request: a little longer, never
    shorter."""

    EARLY, LATE = 0.03, 0.4  # s of slack below and above

    def gaps(self, key):
        times = [e["time"] for e in self.origin.requests(key=key)]
        return [b - a for a, b in zip(times, times[1:])]

    def run_failing(self, env, keys, fail=3):
        d = self.daemon_with(dict({"RETRY_BACKOFF_BASE": "0.5", "MAX_RETRIES_PER_SOURCE": "3",
                                   "MAX_RETRIES_PER_ITEM": "0", "CIRCUIT_BREAKER_THRESHOLD": "100",
                                   "LOG_LEVEL": "info"}, **env))
        urls = [self.file_url("%s.png" % k, fail=fail, key=k) for k in keys]
        job = self.run_job({"urls": urls}, daemon=d, timeout=60)
        self.assertEqual(job["state"], "succeeded", job)
        return d

    def assert_gaps(self, key, want, jitter):
        got = self.gaps(key)
        self.assertEqual(len(got), len(want), got)
        for g, w in zip(got, want):
            self.assertGreaterEqual(g, w * (1 - jitter) - self.EARLY, "gaps %r, want %r +-%g" % (got, want, jitter))
            self.assertLessEqual(g, w * (1 + jitter) + self.LATE, "gaps %r, want %r +-%g" % (got, want, jitter))

    def test_default_jitter_keeps_the_schedule(self):
        # RETRY_JITTER at its default, 0.1
        self.run_failing({}, ["a", "b"])
        for k in ("a", "b"):
            self.assert_gaps(k, [0.5, 1.0, 2.0], 0.1)

    def test_no_jitter_is_the_exact_schedule(self):
        d = self.run_failing({"RETRY_JITTER": "0"}, ["a"])
        self.assert_gaps("a", [0.5, 1.0, 2.0], 0.0)
        log = LogReader(d)
        for n, after in ((2, "0.5"), (3, "1.0"), (4, "2.0")):
            log.one(self, r"job \S+: RETRY Attempt %d/4 for \S+ after %ss \(http_5xx: HTTP 503\)$"
                    % (n, re.escape(after)))

    def test_full_jitter_spreads_the_delays(self):
        """RETRY_JITTER=1 spreads each delay over 0..2x: among 12 gaps some
        leave the +-10% band (all 12 stay in it with a chance below 1e-4)."""
        keys = ["a", "b", "c", "d"]
        self.run_failing({"RETRY_JITTER": "1"}, keys)
        outside = 0
        for k in keys:
            for g, w in zip(self.gaps(k), [0.5, 1.0, 2.0]):
                outside += not (w * 0.9 - self.EARLY <= g <= w * 1.1 + self.LATE)
        self.assertGreater(outside, 0)

    def test_a_new_round_waits_the_next_step(self):
        """After a round of 1 + MAX_RETRIES_PER_SOURCE attempts, the item's
        next round starts at the next step of the backoff: 0.25, 0.5, 1 s
        within the round, then 2 s (the design's 1, 2, 4, then 8 s)."""
        self.run_failing({"RETRY_BACKOFF_BASE": "0.25", "RETRY_JITTER": "0", "MAX_RETRIES_PER_ITEM": "1"},
                         ["r"], fail=4)
        self.assert_gaps("r", [0.25, 0.5, 1.0, 2.0], 0.0)


class Statistics(OperatorCase):
    """GET /v1/stats keeps downloads and listings apart, /metrics too, and
    POST /v1/stats/reset zeroes both while circuits stay as they are."""

    def setUp(self):
        super().setUp()
        search = Search(self.origin, size=2000, delay=0)
        env = {"MAX_RETRIES_PER_SOURCE": "1", "MAX_RETRIES_PER_ITEM": "0", "RETRY_BACKOFF_BASE": "0.1",
               "CIRCUIT_BREAKER_THRESHOLD": "2", "CIRCUIT_BREAKER_TIMEOUT": "600"}
        self.d = self.daemon_with(env, {"good": search.source("good"), "broken": search.source("broken")})
        job = self.run_job({"query": "cars", "sources": ["good"], "max": 3}, daemon=self.d)
        self.assertEqual(job["state"], "succeeded", job)
        # two failed listing requests open broken's circuit
        job = self.run_job({"query": "cars", "sources": ["broken"], "max": 3}, daemon=self.d)
        self.assertEqual(job["state"], "failed", job)
        self.assertEqual(self.origin.count(path="/search/good"), 1)
        self.assertEqual(self.origin.count(path="/search/broken"), 2)

    def test_stats_keep_downloads_and_listings_apart(self):
        st, _h, s = self.d.get("/v1/stats")
        self.assertEqual(st, 200, s)
        dl, ls = s["downloads"], s["listings"]
        self.assertEqual((dl["attempts"], dl["successes"], dl["failures"], dl["bytes"]), (3, 3, 0, 6000))
        self.assertEqual((ls["attempts"], ls["successes"], ls["failures"], ls["retries"]), (3, 1, 2, 1))
        # total_* count files only
        self.assertEqual((s["total_attempts"], s["total_successes"], s["total_failures"], s["total_retries"],
                          s["total_bytes"]), (3, 3, 0, 0, 6000))
        good, broken = s["sources"]["good"], s["sources"]["broken"]
        self.assertEqual((good["downloads"]["attempts"], good["listings"]["attempts"]), (3, 1))
        self.assertEqual((good["attempts"], good["successes"], good["bytes"]), (3, 3, 6000))
        self.assertEqual((broken["downloads"]["attempts"], broken["listings"]["attempts"],
                          broken["listings"]["failures"]), (0, 2, 2))
        self.assertEqual(broken["attempts"], 0)
        self.assertEqual((good["circuit"], broken["circuit"]), ("closed", "open"))

    def test_metrics_keep_downloads_and_listings_apart(self):
        st, _h, text = self.d.get("/metrics")
        self.assertEqual(st, 200)
        text = text.decode() if isinstance(text, bytes) else text
        help_dl = re.search(r"^# HELP hauld_downloads_total (.*)$", text, re.M)
        self.assertIsNotNone(help_dl, text)
        self.assertIn("media files (not listing requests)", help_dl.group(1))
        self.assertRegex(text, r"(?m)^# HELP hauld_listings_total .*listing")
        self.assertRegex(text, r"(?m)^# TYPE hauld_downloads_total counter$")
        self.assertRegex(text, r"(?m)^# TYPE hauld_listings_total counter$")
        want = {
            'hauld_downloads_total{source="good",result="success"}': 3,
            'hauld_downloads_total{source="good",result="failure"}': 0,
            'hauld_downloads_total{source="broken",result="failure"}': 0,
            'hauld_listings_total{source="good",result="success"}': 1,
            'hauld_listings_total{source="broken",result="failure"}': 2,
            'hauld_listings_total{source="broken",result="success"}': 0,
            'hauld_circuit_state{source="broken"}': 2,
        }
        for series, value in want.items():
            self.assertRegex(text, r"(?m)^%s %d$" % (re.escape(series), value))

    def zeroed(self):
        s = self.d.get("/v1/stats")[2]
        return s if s["downloads"]["attempts"] == 0 and s["listings"]["attempts"] == 0 else None

    def test_reset_zeroes_counters_and_keeps_circuits(self):
        st, _h, s = self.d.post("/v1/stats/reset")
        self.assertEqual(st, 200, s)
        # what the API reads of the scheduler is republished within 100 ms
        s = self.d.wait_for(self.zeroed, timeout=2, what="statistics zeroed")
        for answer in (s,):
            for part in ("downloads", "listings"):
                self.assertEqual(set(answer[part].values()), {0}, answer)
            for k in ("total_attempts", "total_successes", "total_failures", "total_retries", "total_bytes"):
                self.assertEqual(answer[k], 0, k)
            for name in ("good", "broken"):
                src = answer["sources"][name]
                self.assertEqual(set(src["downloads"].values()) | set(src["listings"].values()), {0}, src)
            self.assertEqual(answer["sources"]["broken"]["circuit"], "open")
        st, _h, data = self.d.get("/v1/circuits")
        (c,) = [c for c in data["circuits"] if c["source"] == "broken"]
        self.assertEqual((c["state"], c["trips"]), ("open", 1))
        self.assertIn("statistics reset by request", self.d.log_text())


class Profiles(OperatorCase):
    """etc/profiles/*.conf: each loads, holds the design's values, and can
    be layered under local settings."""

    def profile(self, name):
        return os.path.join(hauldtest.SRCDIR, "etc", "profiles", name + ".conf")

    def check_config(self, path, env=None):
        tmp = tempfile.mkdtemp(prefix="hauld-profile-")
        self.addCleanup(subprocess.call, ["rm", "-rf", tmp])
        full = {k: v for k, v in os.environ.items() if k not in hauldtest._SCRUB}
        full.update({"STATE_DIR": tmp, "SOURCES_DIR": tmp})
        full.update(env or {})
        return subprocess.run([hauldtest.hauld_binary(), "--check-config", "--config", path], env=full,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=30)

    def settings(self, path):
        out = {}
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    k, _, v = line.partition("=")
                    out[k] = v
        return out

    def test_every_profile_passes_check_config(self):
        found = sorted(f[:-5] for f in os.listdir(os.path.dirname(self.profile("x"))) if f.endswith(".conf"))
        self.assertEqual(found, sorted(PROFILES))
        for name, want in PROFILES.items():
            r = self.check_config(self.profile(name))
            self.assertEqual(r.returncode, 0, "%s: %s" % (name, r.stderr))
            self.assertIn("configuration OK", r.stdout)
            self.assertEqual(self.settings(self.profile(name)), want, name)
            with open(self.profile(name)) as f:
                self.assertIn("Use it ", f.read(), "%s says when to use it" % name)

    def test_a_bad_line_after_a_profile_fails_the_check(self):
        tmp = tempfile.mkdtemp(prefix="hauld-profile-")
        self.addCleanup(subprocess.call, ["rm", "-rf", tmp])
        path = os.path.join(tmp, "hauld.conf")
        with open(self.profile("production")) as f, open(path, "w") as out:
            text = f.read()
            out.write(text + "STALL_TIMEOUT=0\n")
        r = self.check_config(path)
        self.assertEqual(r.returncode, 78, r.stderr)
        self.assertIn("%s:%d: STALL_TIMEOUT: must be a number of seconds in 1..3600"
                      % (path, text.count("\n") + 1), r.stderr)

    def config_of(self, d):
        st, _h, cfg = d.get("/v1/config")
        self.assertEqual(st, 200, cfg)
        return cfg

    def test_profile_as_config_with_local_settings_in_the_environment(self):
        # the systemd way: ExecStart=hauld --config PROFILE, and the local
        # hauld.conf as EnvironmentFile=: the environment wins over the file
        d = self.daemon_with({"REQUEST_TIMEOUT": "12", "LOG_LEVEL": "info"},
                             args=["--config", self.profile("slow-network")])
        cfg = self.config_of(d)
        self.assertEqual(cfg["REQUEST_TIMEOUT"], "12")
        for k in ("MAX_CONCURRENT_SOURCES", "SOURCE_TIMEOUT", "MAX_RETRIES_PER_SOURCE", "MIN_DOWNLOAD_SPEED",
                  "STALL_TIMEOUT"):
            self.assertEqual(cfg[k], PROFILES["slow-network"][k], k)
        self.assertEqual(cfg["MAX_RETRIES_PER_ITEM"], "2")  # not in the profile: the default

    def test_profile_copied_above_local_lines(self):
        # one file: the profile's lines, then local ones; the last line of a key wins
        tmp = tempfile.mkdtemp(prefix="hauld-profile-")
        self.addCleanup(subprocess.call, ["rm", "-rf", tmp])
        path = os.path.join(tmp, "hauld.conf")
        with open(self.profile("development")) as f, open(path, "w") as out:
            out.write(f.read() + "\n# local\nSTALL_TIMEOUT=25\nLOG_FORMAT=json\n")
        self.assertEqual(self.check_config(path).returncode, 0)
        d = self.daemon_with({"LOG_LEVEL": "info"}, args=["--config", path])
        cfg = self.config_of(d)
        self.assertEqual((cfg["STALL_TIMEOUT"], cfg["REQUEST_TIMEOUT"], cfg["LOG_FORMAT"]), ("25", "10", "json"))


if __name__ == "__main__":
    hauldtest.main()
