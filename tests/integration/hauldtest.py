"""Integration test harness for hauld (standard library unittest only).

A test module looks like:

    import hauldtest

    class JobsTest(hauldtest.HauldTestCase):
        daemon_env = {"MAX_RETRIES_PER_ITEM": "1"}

        def test_one_file(self):
            job = self.run_job({"urls": [self.file_url("a.png", size=5000)]})
            self.assertEqual(job["state"], "succeeded")
            self.assert_item_file(self.items(job["id"])[0], "a.png", 5000)

    if __name__ == "__main__":
        hauldtest.main()

automake runs each tests/integration/test_*.py with HAULD (the binary) and
HAULD_SRCDIR set; main() exits 0 pass, 1 fail, 77 skip (no binary).
HAULD_KEEP_TMP=1 keeps each daemon's temp directory.

Resource limits: Daemon(..., preexec_fn=with_rlimits(FSIZE=n)) (or
self.new_daemon(env, preexec_fn=...)) runs the daemon under
setrlimit(RLIMIT_FSIZE, n), e.g. to make its file writes fail with EFBIG.

The contract: every answer Daemon.request() (get, post, delete and the
helpers on them) and Daemon.events() receive is checked against
docs/openapi.yaml (contract.py): its status, headers, Content-Type and
JSON body, each event's name and data, and a JSON body the daemon
accepted against the operation's request schema. An answer the document
does not describe fails the test with a message naming the route, the
status and the schema's place in the document.
"""

import hashlib
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("HAULD_SRCDIR") or os.path.dirname(os.path.dirname(HERE))
# $HAULD_SRCDIR first, then this file's own tree (VPATH builds, a stale
# HAULD_SRCDIR)
for _p in reversed((os.path.join(SRCDIR, "tests", "integration"), os.path.join(SRCDIR, "tests"),
                    HERE, os.path.dirname(HERE))):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from fake_origin import FakeOrigin, body_for, etag_for  # noqa: E402
import contract  # noqa: E402

__all__ = ["Daemon", "DaemonError", "HauldTestCase", "FakeOrigin", "body_for", "etag_for",
           "TERMINAL_STATES", "hauld_binary", "free_port", "with_rlimits", "main"]

TERMINAL_STATES = ("succeeded", "partial", "failed", "cancelled", "timed_out")
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
POLL_S = 0.05
EX_SKIP = 77

# Inherited environment that would change the daemon's settings: every
# config key, and systemd's variables (socket activation, credentials).
_SCRUB = (
    "MAX_CONCURRENT_SOURCES", "SOURCE_TIMEOUT", "GLOBAL_JOB_TIMEOUT", "REQUEST_TIMEOUT",
    "MAX_RETRIES_PER_SOURCE", "MAX_RETRIES_PER_ITEM", "MIN_DOWNLOAD_SPEED", "STALL_TIMEOUT",
    "CIRCUIT_BREAKER_THRESHOLD", "CIRCUIT_BREAKER_TIMEOUT", "LISTEN", "STATE_DIR", "STORE",
    "DOWNLOAD_DIR", "SOURCES_DIR", "API_TOKEN_FILE", "CORS_ORIGINS", "ALLOWED_HOSTS",
    "MAX_CONCURRENT_DOWNLOADS", "MAX_CONNECTIONS_PER_SOURCE", "RETRY_BACKOFF_BASE",
    "RETRY_BACKOFF_MAX", "MAX_FILE_SIZE", "ACCEPT_CONTENT", "ALLOW_PRIVATE_ADDRESSES",
    "MAX_REQUEST_BODY", "JOB_RETENTION", "LOG_LEVEL", "MAX_CONCURRENT_JOBS", "USER_AGENT", "NODE_ID", "NODE_URL", "LEASE_TIMEOUT",
    "RETRY_JITTER", "CIRCUIT_BREAKER_GROWTH", "CIRCUIT_BREAKER_MAX_TIMEOUT", "LOG_FORMAT",
    "LOG_FILE_LINES", "JOURNAL_STREAM",
    "API_THREADS", "API_MAX_CONNECTIONS", "API_MAX_CONNECTIONS_PER_IP", "API_HEADER_TIMEOUT",
    "PROXY", "PROXY_TRUSTED",
    "STATE_DIRECTORY", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID",
    "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID",
    "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy",
)


class DaemonError(Exception):
    pass


def hauld_binary():
    """The daemon under test: $HAULD, else a build in the source tree;
    None when there is none."""
    cands = [os.environ.get("HAULD")] if os.environ.get("HAULD") else \
        [os.path.join(SRCDIR, "build", "hauld"), os.path.join(SRCDIR, "hauld")]
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def free_port():
    """A loopback port that was free a moment ago (bind to 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_rlimits(**limits):
    """A preexec_fn for Daemon that applies resource limits to the daemon
    process only: with_rlimits(FSIZE=1536 * 1024, NOFILE=64) calls
    setrlimit(RLIMIT_FSIZE, (n, n)) and so on (soft and hard limit)."""
    pairs = [(getattr(resource, "RLIMIT_" + name.upper()), int(n)) for name, n in limits.items()]

    def apply():
        for res, n in pairs:
            resource.setrlimit(res, (n, n))
    return apply


def _decode(headers, data):
    ctype = headers.get("Content-Type", "")
    if data and ("json" in ctype):
        try:
            return json.loads(data)
        except ValueError:
            return data
    return data


class Daemon:
    """One hauld process with its own temp STATE_DIR and loopback port.

    env: settings overriding the harness defaults (a None value removes
    the key). The process runs as
    `$HAULD --config /dev/null LISTEN=127.0.0.1:PORT` with stdout and
    stderr in <tmp>/hauld.log. preexec_fn runs in the child before exec
    (each start), e.g. with_rlimits(FSIZE=...).
    """

    def __init__(self, env=None, args=(), start=True, preexec_fn=None):
        self.binary = hauld_binary()
        if not self.binary:
            raise unittest.SkipTest("no hauld binary (set HAULD)")
        self.tmp = tempfile.mkdtemp(prefix="hauld-it-")
        self.state_dir = os.path.join(self.tmp, "state")
        self.sources_dir = os.path.join(self.tmp, "sources")
        self.log_path = os.path.join(self.tmp, "hauld.log")
        os.mkdir(self.state_dir)
        os.mkdir(self.sources_dir)
        self.env_overrides = dict(env or {})
        self.args = list(args)
        self.preexec_fn = preexec_fn
        self.port = free_port()
        self.proc = None
        self.returncode = None
        self.starts = 0
        if start:
            try:
                self.start()
            except BaseException:
                self.cleanup()  # the exception carries the log
                raise

    # -- paths --

    @property
    def download_dir(self):
        return self.env_overrides.get("DOWNLOAD_DIR") or os.path.join(self.state_dir, "downloads")

    @property
    def base_url(self):
        return "http://127.0.0.1:%d" % self.port

    def environ(self):
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        env.update({
            "STATE_DIR": self.state_dir,
            "SOURCES_DIR": self.sources_dir,
            "ALLOW_PRIVATE_ADDRESSES": "true",
            "LOG_LEVEL": "debug",
        })
        for k, v in self.env_overrides.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return env

    def use_token(self, token):
        """API_TOKEN_FILE: a 0600 file in this daemon's temp dir holding
        token (before start); returns its path."""
        path = os.path.join(self.tmp, "api-token")
        with open(path, "w") as f:
            f.write(token + "\n")
        os.chmod(path, 0o600)
        self.env_overrides["API_TOKEN_FILE"] = path
        return path

    def write_source(self, name, spec):
        """SOURCES_DIR/NAME.json (before start, or followed by reload())."""
        spec = dict(spec)
        spec.setdefault("name", name)
        with open(os.path.join(self.sources_dir, name + ".json"), "w") as f:
            json.dump(spec, f, indent=2)

    # -- lifecycle --

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=READY_TIMEOUT):
        """Start and wait for GET /v1/health to answer 200. A fresh daemon
        whose port was taken in the meantime gets another port."""
        for attempt in range(3):
            self._spawn()
            try:
                return self.wait_ready(timeout)
            except DaemonError:
                if self.starts == 1 and attempt < 2 and self._port_was_busy():
                    self.port = free_port()
                    continue
                raise

    def spawn(self):
        """Start the process without waiting for it to answer (e.g. to
        watch its sd_notify messages first); wait_ready() then waits."""
        self._spawn()
        return self

    def _spawn(self):
        if self.running:
            raise DaemonError("already running")
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(b"==== start %d: port %d\n" % (self.starts, self.port))
        log.flush()
        cmd = [self.binary, "--config", "/dev/null", "LISTEN=127.0.0.1:%d" % self.port] + self.args
        try:
            self.proc = subprocess.Popen(cmd, env=self.environ(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp,
                                         preexec_fn=self.preexec_fn)
        finally:
            log.close()
        self.returncode = None

    def _port_was_busy(self):
        tail = self.log_tail(2000).lower()
        return "in use" in tail or "eaddrinuse" in tail

    def wait_ready(self, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise DaemonError("hauld exited with %s before it was ready\n%s"
                                  % (self.returncode, self.log_tail()))
            try:
                status, _, _ = self.request("GET", "/v1/health", timeout=1.0)
                if status == 200:
                    return self
                last = "health answered %d" % status
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            time.sleep(POLL_S)
        self.kill9()
        raise DaemonError("hauld not ready after %.0f s (%s)\n%s" % (timeout, last, self.log_tail()))

    def stop(self, expect_code=None, timeout=STOP_TIMEOUT):
        """SIGTERM, wait up to timeout, then SIGKILL. Returns the exit
        status (negative: killed by that signal). With expect_code, raises
        AssertionError unless the daemon exited with it in time."""
        if self.proc is None:
            return self.returncode
        killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                killed = True
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        self.proc = None
        report = self.sanitizer_report()
        if report:
            raise AssertionError("hauld's sanitizers reported:\n%s" % report)
        if expect_code is not None:
            if killed:
                raise AssertionError("hauld did not stop within %.0f s of SIGTERM\n%s"
                                     % (timeout, self.log_tail()))
            if self.returncode != expect_code:
                raise AssertionError("hauld exited with %s, expected %s\n%s"
                                     % (self.returncode, expect_code, self.log_tail()))
        return self.returncode

    SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "WARNING: ThreadSanitizer",
                       "runtime error:")

    def sanitizer_report(self):
        """The first sanitizer report in the log (ASan, LSan, TSan, UBSan),
        or None: a sanitizer build fails any test whose daemon had one."""
        text = self.log_text()
        for mark in self.SANITIZER_MARKS:
            at = text.find(mark)
            if at >= 0:
                return text[max(0, at - 200):at + 4000]
        return None

    def kill9(self):
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.returncode = self.proc.returncode
        self.proc = None
        return self.returncode

    def restart(self, env=None, kill=False, timeout=READY_TIMEOUT):
        """Stop (SIGTERM, or SIGKILL with kill=True) and start again with
        the same STATE_DIR and port; env updates the overrides."""
        if kill:
            self.kill9()
        else:
            self.stop()
        if env:
            self.env_overrides.update(env)
        self._spawn()
        return self.wait_ready(timeout)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self):
        self.signal(signal.SIGHUP)

    def cleanup(self, keep=False):
        """Stop the daemon and remove its temp directory (unless keep or
        HAULD_KEEP_TMP is set)."""
        self.stop()
        if keep or os.environ.get("HAULD_KEEP_TMP"):
            return
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()

    # -- the log --

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, limit=20000):
        text = self.log_text()
        if len(text) > limit:
            text = "...\n" + text[-limit:]
        return "---- hauld log (%s) ----\n%s---- end of log ----" % (self.log_path, text)

    # -- the API --

    def request(self, method, path, body=None, headers=None, timeout=10.0):
        """(status, headers, data): data is parsed JSON when the answer is
        JSON, else the raw bytes. A dict or list body is sent as JSON; str
        and bytes as they are."""
        hdrs = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        self._check_contract(method, path, resp.status, resp.headers, data, body)
        return resp.status, resp.headers, _decode(resp.headers, data)

    def _check_contract(self, method, path, status, headers, data, sent):
        c = contract.shared()
        c.check_answer(method, path, status, headers, data)
        if 200 <= status < 300 and sent:
            try:
                request = json.loads(sent)
            except ValueError:
                return
            c.check_request(method, path, request)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def _expect(self, status, want, what, data):
        if status != want:
            raise AssertionError("%s answered %d, expected %d: %r" % (what, status, want, data))

    def post_job(self, body, expect=201, headers=None):
        status, _, data = self.post("/v1/jobs", body, headers=headers)
        self._expect(status, expect, "POST /v1/jobs", data)
        return data

    def get_job(self, job_id):
        status, _, data = self.get("/v1/jobs/" + urllib.parse.quote(job_id, safe=""))
        self._expect(status, 200, "GET /v1/jobs/" + job_id, data)
        return data

    def items(self, job_id, state=None, limit=500):
        """Every item of a job, following next_cursor."""
        out, cursor = [], None
        while True:
            q = {"limit": limit}
            if state:
                q["state"] = state
            if cursor:
                q["cursor"] = cursor
            path = "/v1/jobs/%s/items?%s" % (urllib.parse.quote(job_id, safe=""), urllib.parse.urlencode(q))
            status, _, data = self.get(path)
            self._expect(status, 200, "GET " + path, data)
            out += data["items"]
            cursor = data.get("next_cursor")
            if not cursor:
                return out

    def wait_job(self, job_id, states=TERMINAL_STATES, timeout=30.0):
        """Poll GET /v1/jobs/{id} every 50 ms until its state is in states."""
        if isinstance(states, str):
            states = (states,)
        deadline = time.monotonic() + timeout
        job = None
        while True:
            job = self.get_job(job_id)
            if job.get("state") in states:
                return job
            if time.monotonic() >= deadline:
                raise AssertionError("job %s still %r after %.1f s (waiting for %s): %s"
                                     % (job_id, job.get("state"), timeout, "/".join(states),
                                        json.dumps(job, indent=1)))
            if not self.running:
                raise DaemonError("hauld died while waiting for job %s\n%s" % (job_id, self.log_tail()))
            time.sleep(POLL_S)

    def wait_for(self, predicate, timeout=10.0, what="condition"):
        """Poll predicate() every 50 ms until it returns something true."""
        deadline = time.monotonic() + timeout
        while True:
            v = predicate()
            if v:
                return v
            if time.monotonic() >= deadline:
                raise AssertionError("%s not met after %.1f s" % (what, timeout))
            time.sleep(POLL_S)

    def events(self, path, timeout=10.0, headers=None):
        """Read an SSE stream; yields dicts {event, id, data} (data parsed
        as JSON when it is) until the server closes it or timeout passes
        between events."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        c = contract.shared()
        try:
            conn.request("GET", path, headers=dict(headers or {}, Accept="text/event-stream"))
            resp = conn.getresponse()
            if resp.status != 200:
                data = resp.read()
                c.check_answer("GET", path, resp.status, resp.headers, data)
                raise AssertionError("GET %s answered %d: %r" % (path, resp.status, data))
            c.check_answer("GET", path, resp.status, resp.headers, b"")
            ev = {}
            while True:
                line = resp.readline()  # decodes a chunked body
                if not line:
                    return
                line = line.decode("utf-8").rstrip("\r\n")
                if not line:
                    if "data" in ev:
                        try:
                            ev["data"] = json.loads(ev["data"])
                        except ValueError:
                            raise contract.ContractError("GET %s: the data of a %r event is not JSON: %r"
                                                         % (path, ev.get("event"), ev["data"]))
                        c.check_event(path, ev.get("event"), ev["data"], ev.get("id"))
                        yield ev
                    ev = {}
                    continue
                if line.startswith(":"):
                    continue
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "data" and "data" in ev:
                    ev["data"] += "\n" + value
                else:
                    ev[field] = value
        finally:
            conn.close()


class HauldTestCase(unittest.TestCase):
    """Starts a FakeOrigin (self.origin) and, unless start_daemon is False,
    a Daemon (self.daemon) with daemon_env for each test. A failing test
    prints the logs of the daemons it started."""

    daemon_env = {}
    start_daemon = True

    def run(self, result=None):
        self._daemons = []
        if result is None:
            result = self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        try:
            return super().run(result)
        finally:
            failed = len(result.failures) + len(result.errors) > before
            for d in self._daemons:
                if failed:
                    sys.stderr.write("\n%s: %s\n" % (self.id(), d.log_tail()))
                d.cleanup(keep=failed and bool(os.environ.get("HAULD_KEEP_TMP")))

    def setUp(self):
        super().setUp()
        self.origin = FakeOrigin().start()
        self.addCleanup(self.origin.stop)
        self.daemon = self.new_daemon(self.daemon_env) if self.start_daemon else None

    def new_daemon(self, env=None, token=None, **kw):
        """Another daemon, stopped after the test and logged on failure;
        with token, it asks for that API token (Daemon.use_token)."""
        d = Daemon(env, start=False, **kw)
        self._daemons.append(d)
        self.addCleanup(d.stop)
        if token:
            d.use_token(token)
        d.start()
        return d

    # -- URLs on the fake origin --

    def file_url(self, name, size=1024, **params):
        """/file/NAME on the fake origin; params as in fake_origin.py."""
        return self.origin.url("/file/" + urllib.parse.quote(name), size=size, **params)

    @staticmethod
    def expected_body(name, size=1024, seed=0, type="png"):
        return body_for(name, size, seed, type)

    # -- jobs --

    def run_job(self, body, timeout=30.0, daemon=None):
        """Submit a job and wait for a terminal state; returns the job."""
        d = daemon or self.daemon
        job = d.post_job(body)
        return d.wait_job(job["id"], timeout=timeout)

    def items(self, job_id, daemon=None, **kw):
        return (daemon or self.daemon).items(job_id, **kw)

    def item_path(self, item, daemon=None):
        return os.path.join((daemon or self.daemon).download_dir, item["path"])

    # -- assertions --

    def assert_item_file(self, item, name, size=1024, seed=0, type="png", daemon=None):
        """The item succeeded and its file holds exactly the origin's bytes."""
        self.assertEqual(item["state"], "succeeded", item)
        want = body_for(name, size, seed, type)
        with open(self.item_path(item, daemon), "rb") as f:
            got = f.read()
        self.assertEqual(len(got), len(want), item)
        self.assertTrue(got == want, "file content differs from the origin's: %r" % item)
        self.assertEqual(item.get("bytes"), size, item)
        if item.get("sha256"):
            self.assertEqual(item["sha256"], hashlib.sha256(want).hexdigest(), item)

    def assert_item_error(self, item, code, state="failed"):
        self.assertEqual(item["state"], state, item)
        self.assertIsNotNone(item.get("error"), item)
        self.assertEqual(item["error"]["code"], code, item)

    def assert_problem(self, answer, status, field=None):
        """answer is request()'s tuple; checks an RFC 9457 problem with
        that status (and, with field, a validation error naming it)."""
        st, headers, data = answer
        self.assertEqual(st, status, data)
        self.assertTrue(headers.get("Content-Type", "").startswith("application/problem+json"),
                        headers.get("Content-Type"))
        self.assertIsInstance(data, dict, data)
        self.assertEqual(data.get("status"), status, data)
        self.assertTrue(data.get("title"), data)
        if field is not None:
            self.assertIn(field, [e.get("field") for e in data.get("errors", [])], data)
        return data


def main(module="__main__"):
    """Run the module's tests; exit 0 pass, 1 fail, 77 skip (automake)."""
    if not hauld_binary():
        sys.stderr.write("SKIP: no hauld binary (set HAULD to its path)\n")
        sys.exit(EX_SKIP)
    prog = unittest.main(module=module, exit=False, verbosity=2)
    r = prog.result
    if not r.wasSuccessful():
        sys.exit(1)
    if r.testsRun and len(r.skipped) == r.testsRun:
        sys.exit(EX_SKIP)
    sys.exit(0)
