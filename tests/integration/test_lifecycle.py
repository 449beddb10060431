"""Life under systemd: sd_notify (READY, STATUS, WATCHDOG, RELOADING,
STOPPING), socket activation, SIGHUP reloads, and what a stop or a crash in
the middle of a job leaves behind: the job resumes after the restart, every
file is whole and byte for byte the origin's, no part file stays, and a
part file is resumed with Range only while the origin's copy is the same."""

import os
import re
import shutil
import signal
import socket
import subprocess
import time

import hauldtest
from hauldtest import body_for

NOTIFY_TIMEOUT = 10.0
RESTART_TIMEOUT = 20.0


class NotifySocket:
    """The NOTIFY_SOCKET end systemd would hold: an AF_UNIX datagram socket
    bound in a temp directory. Keeps every message as (monotonic time,
    list of KEY=VALUE lines)."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []

    def close(self):
        self.sock.close()

    def _recv(self, timeout):
        self.sock.settimeout(max(0.001, timeout))
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        msg = (time.monotonic(), data.decode("utf-8", "replace").splitlines())
        self.messages.append(msg)
        return msg

    def wait_line(self, pred, timeout=NOTIFY_TIMEOUT, what="message", since=None):
        """Receive until a message has a line for which pred(line) is true
        (or equals pred, when pred is a string); returns (time, lines).
        With since, messages already received from that index count too."""
        test = (lambda line: line == pred) if isinstance(pred, str) else pred
        for msg in self.messages[since:] if since is not None else ():
            if any(test(line) for line in msg[1]):
                return msg
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no sd_notify %s within %.0f s; got %r"
                                     % (what if not isinstance(pred, str) else pred, timeout,
                                        [m[1] for m in self.messages]))
            msg = self._recv(left)
            if msg and any(test(line) for line in msg[1]):
                return msg

    def collect(self, seconds):
        """Everything received during the next `seconds`."""
        start = len(self.messages)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._recv(deadline - time.monotonic())
        return self.messages[start:]

    def drain(self):
        while self._recv(0.001):
            pass

    def lines(self, since=0):
        return [line for _, lines in self.messages[since:] for line in lines]


class LifecycleCase(hauldtest.HauldTestCase):
    start_daemon = False

    def unstarted_daemon(self, env=None, args=()):
        """A Daemon not yet started, stopped and logged like new_daemon()'s."""
        d = hauldtest.Daemon(env, args=args, start=False)
        self._daemons.append(d)
        self.addCleanup(d.stop)
        return d

    def notify_daemon(self, env=None, watchdog_usec=None):
        """A daemon with a NOTIFY_SOCKET (and WATCHDOG_USEC when given),
        spawned but not waited for; WATCHDOG_PID stays unset, which
        sd_watchdog_enabled() takes as "this process"."""
        d = self.unstarted_daemon(env)
        ns = NotifySocket(d.tmp)
        self.addCleanup(ns.close)
        d.env_overrides["NOTIFY_SOCKET"] = ns.path
        if watchdog_usec:
            d.env_overrides["WATCHDOG_USEC"] = str(watchdog_usec)
        d.spawn()
        return d, ns

    def log_count(self, d, text):
        return d.log_text().count(text)


# ---- sd_notify ------------------------------------------------------------------

class Notify(LifecycleCase):

    def test_ready_only_when_health_answers(self):
        d, ns = self.notify_daemon()
        ns.wait_line("READY=1")
        # no retry: READY=1 promises the API answers now
        st, _h, data = d.request("GET", "/v1/health", timeout=5.0)
        self.assertEqual(st, 200, data)
        self.assertEqual(data["status"], "ok")

    def test_status_lines(self):
        d, ns = self.notify_daemon()
        ns.wait_line("READY=1")
        ns.wait_line(lambda l: l.startswith("STATUS=") and len(l) > len("STATUS="), what="STATUS=",
                     since=0)
        # the periodic line operations.md shows: "3 running, 12 queued, 17 transfers"
        ns.wait_line(lambda l: re.match(r"STATUS=\d+ running, \d+ queued, \d+ transfers$", l),
                     timeout=12.0, what="STATUS=N running, N queued, N transfers", since=0)

    def test_watchdog_at_half_of_watchdog_usec(self):
        d, ns = self.notify_daemon(watchdog_usec=1000000)
        ns.wait_line("READY=1")
        window = ns.collect(3.0)
        pings = [t for t, lines in window if "WATCHDOG=1" in lines]
        # every 0.5 s: 6 in 3 s; at least 4 on a loaded machine, and no flood
        self.assertGreaterEqual(len(pings), 4, "WATCHDOG=1 %d times in 3 s: %r"
                                % (len(pings), [m[1] for m in window]))
        self.assertLessEqual(len(pings), 10, "WATCHDOG=1 %d times in 3 s" % len(pings))

    def test_no_watchdog_without_watchdog_usec(self):
        d, ns = self.notify_daemon()
        ns.wait_line("READY=1")
        self.assertNotIn("WATCHDOG=1", [l for _, ls in ns.collect(1.5) for l in ls])

    def test_watchdog_keeps_pinging_while_transfers_run(self):
        d, ns = self.notify_daemon(watchdog_usec=1000000)
        ns.wait_line("READY=1")
        d.wait_ready()
        job = d.post_job({"urls": [self.file_url("w%d.png" % i, size=300000, drip=100000)
                                   for i in range(4)]})
        d.wait_job(job["id"], "running")
        window = ns.collect(2.0)
        pings = [t for t, lines in window if "WATCHDOG=1" in lines]
        self.assertGreaterEqual(len(pings), 2, [m[1] for m in window])

    def test_reloading_then_ready_on_sighup(self):
        d, ns = self.notify_daemon()
        ns.wait_line("READY=1")
        ns.drain()
        since = len(ns.messages)
        d.reload()
        ns.wait_line("READY=1", what="READY=1 after SIGHUP")
        lines = ns.lines(since)
        self.assertIn("RELOADING=1", lines)
        self.assertLess(lines.index("RELOADING=1"), lines.index("READY=1"), lines)
        self.assertTrue(d.running)
        self.assertEqual(d.get("/v1/health")[0], 200)

    def test_stopping_on_sigterm(self):
        d, ns = self.notify_daemon()
        ns.wait_line("READY=1")
        d.signal(signal.SIGTERM)
        ns.wait_line("STOPPING=1")
        self.assertEqual(d.stop(expect_code=0), 0)


# ---- socket activation -------------------------------------------------------------

class SocketActivation(LifecycleCase):
    """systemd-socket-activate binds the address, waits for the first
    connection, then execs hauld with LISTEN_FDS=1 (as hauld.socket does).
    It hands the child only the variables given with -E."""

    def activate(self, d, address, extra=()):
        tool = shutil.which("systemd-socket-activate")
        if not tool:
            self.skipTest("systemd-socket-activate not installed (package systemd)")
        cmd = [tool, "-l", address]
        for k in ("STATE_DIR", "SOURCES_DIR", "ALLOW_PRIVATE_ADDRESSES", "LOG_LEVEL"):
            cmd += ["-E", "%s=%s" % (k, d.environ()[k])]
        cmd += [d.binary, "--config", "/dev/null"] + list(extra)
        log = open(d.log_path, "ab")
        try:
            d.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, cwd=d.tmp)
        finally:
            log.close()
        d.starts += 1

    def wait_listening(self, port, timeout=NOTIFY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.fail("nothing listens on 127.0.0.1:%d" % port)

    def test_serves_the_passed_socket_and_ignores_listen(self):
        d = self.unstarted_daemon()
        d.port = hauldtest.free_port()
        # LISTEN names a port nobody serves: answers can only come from
        # the socket systemd-socket-activate passes
        self.activate(d, "127.0.0.1:%d" % d.port, ["LISTEN=127.0.0.1:1"])
        self.wait_listening(d.port)
        pid = d.proc.pid
        try:
            st, _h, data = d.request("GET", "/v1/health", timeout=NOTIFY_TIMEOUT)
        except OSError as e:
            self.fail("no answer on the socket systemd-socket-activate passed (%r); LISTEN used instead?"
                      % e)
        self.assertEqual(st, 200, data)
        job = d.post_job({"urls": [self.file_url("sa.png", size=4000)]})
        job = d.wait_job(job["id"])
        self.assertEqual(job["state"], "succeeded", job)
        self.assert_item_file(self.items(job["id"], daemon=d)[0], "sa.png", 4000, daemon=d)
        self.assertTrue(d.running)
        self.assertEqual(d.proc.pid, pid)  # exec'd in place, as under systemd
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", 1), 1.0).close()
        self.assertIn("the socket from systemd", d.log_text())
        self.assertEqual(d.stop(expect_code=0), 0)

    def test_refuses_a_passed_socket_on_a_non_loopback_address_without_token(self):
        # A non-loopback interface address may not exist on a test machine
        # (loopback-only containers), but the wildcard 0.0.0.0 is
        # non-loopback too and always bindable: hauld must judge the
        # address the passed socket is bound to, not LISTEN, and refuse to
        # serve it without a token (exit 78). We connect to it through
        # 127.0.0.1 only to trigger the activation.
        d = self.unstarted_daemon()
        d.port = hauldtest.free_port()
        self.activate(d, "0.0.0.0:%d" % d.port, ["LISTEN=127.0.0.1:1"])
        self.wait_listening(d.port)
        try:
            socket.create_connection(("127.0.0.1", d.port), 2.0).close()
        except OSError:
            pass
        try:
            code = d.proc.wait(NOTIFY_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail("hauld serves a socket on 0.0.0.0 without a token\n" + d.log_tail())
        self.assertEqual(code, 78, d.log_tail())
        self.assertIn("reachable from the network", d.log_text())


# ---- SIGHUP -------------------------------------------------------------------------

class Reload(LifecycleCase):
    daemon_env = {"RETRY_BACKOFF_BASE": "0.1"}

    def source(self):
        return {"search_url": self.origin.base_url + "/search?q={query}&page={page}",
                "items": "/results", "url": "/url"}

    def wait_reloaded(self, d, text, before):
        d.wait_for(lambda: self.log_count(d, text) > before, timeout=NOTIFY_TIMEOUT,
                   what="log line %r" % text)

    def test_new_source_listed_after_sighup(self):
        d = self.new_daemon()
        pid = d.proc.pid
        st, _h, data = d.get("/v1/sources")
        self.assertEqual(st, 200, data)
        self.assertNotIn("newsrc", [s["name"] for s in data["sources"]])
        d.write_source("newsrc", self.source())
        d.reload()
        d.wait_for(lambda: "newsrc" in [s["name"] for s in d.get("/v1/sources")[2]["sources"]],
                   timeout=NOTIFY_TIMEOUT, what="newsrc in GET /v1/sources")
        self.assertEqual(d.proc.pid, pid)
        self.assertEqual(d.starts, 1)

    def test_new_source_accepted_by_jobs_after_sighup(self):
        d = self.new_daemon()
        pid = d.proc.pid
        body = {"query": "x", "sources": ["newsrc"]}
        # api.md: sources are "names from GET /v1/sources"; an unknown one is a 400
        self.assert_problem(d.post("/v1/jobs", body), 400)
        d.write_source("newsrc", self.source())
        self.assert_problem(d.post("/v1/jobs", body), 400)  # not before the reload
        d.reload()
        d.wait_for(lambda: d.post("/v1/jobs", body)[0] == 201, timeout=NOTIFY_TIMEOUT,
                   what="POST /v1/jobs with sources [newsrc] answering 201")
        self.assertEqual(d.proc.pid, pid)

    def write_config(self, d, text):
        path = os.path.join(d.tmp, "hauld.conf")
        with open(path + ".new", "w") as f:
            f.write(text)
        os.rename(path + ".new", path)
        return path

    def attempts_of_a_503(self, d, key):
        job = d.post_job({"urls": [self.origin.url("/down-" + key, status=503, key=key)]})
        job = d.wait_job(job["id"])
        self.assertEqual(job["state"], "failed", job)
        return self.items(job["id"], daemon=d)[0]["attempts"]

    def config_daemon(self):
        d = self.unstarted_daemon(self.daemon_env)
        path = self.write_config(d, "MAX_RETRIES_PER_ITEM=0\nMAX_RETRIES_PER_SOURCE=0\n"
                                   "CIRCUIT_BREAKER_THRESHOLD=100\n")
        d.args = ["--config", path]  # the later --config wins over the harness's /dev/null
        d.start()
        self.assertEqual(self.attempts_of_a_503(d, "a"), 1)
        self.write_config(d, "MAX_RETRIES_PER_ITEM=1\nMAX_RETRIES_PER_SOURCE=0\nCIRCUIT_BREAKER_THRESHOLD=100\n")
        n = self.log_count(d, "config: reloaded")
        d.reload()
        self.wait_reloaded(d, "config: reloaded", n)
        return d

    def test_broken_reload_keeps_running_with_the_previous_settings(self):
        d = self.config_daemon()
        pid = d.proc.pid
        self.assertEqual(self.attempts_of_a_503(d, "b"), 2)  # the reload took
        self.write_config(d, "MAX_RETRIES_PER_ITEM=banana\nMAX_RETRIES_PER_SOURCE=0\nCIRCUIT_BREAKER_THRESHOLD=100\n")
        n = self.log_count(d, "config: reload failed; the previous settings stay")
        d.reload()
        self.wait_reloaded(d, "config: reload failed; the previous settings stay", n)
        self.assertRegex(d.log_text(), r"config: \S*hauld\.conf:1: MAX_RETRIES_PER_ITEM: ")
        self.assertTrue(d.running)
        self.assertEqual(d.proc.pid, pid)
        self.assertEqual(d.get("/v1/health")[0], 200)
        self.assertEqual(self.attempts_of_a_503(d, "c"), 2)  # the reloaded settings, not the first

    def test_reload_shows_in_effective_config(self):
        # api.md: GET /v1/config is "the effective configuration"
        d = self.config_daemon()
        self.assertEqual(d.get("/v1/config")[2]["MAX_RETRIES_PER_ITEM"], "1")
        self.write_config(d, "MAX_RETRIES_PER_ITEM=banana\n")
        n = self.log_count(d, "reload failed")
        d.reload()
        self.wait_reloaded(d, "reload failed", n)
        self.assertEqual(d.get("/v1/config")[2]["MAX_RETRIES_PER_ITEM"], "1")


# ---- stop and crash in the middle of a job -------------------------------------------

NFILES = 20
FSIZE = 200 * 1024
DRIP = 100000          # bytes/s: about 2 s a file, 4 at a time, 5 rounds
INTERRUPT = {"MAX_CONNECTIONS_PER_SOURCE": "4", "RETRY_BACKOFF_BASE": "0.1"}


class Interrupted(LifecycleCase):

    def setUp(self):
        super().setUp()
        self.d = self.new_daemon(INTERRUPT)
        self.source = "127.0.0.1:%d" % self.origin.port

    def name(self, i):
        return "f%02d.png" % i

    def submit(self):
        job = self.d.post_job({"urls": [self.file_url(self.name(i), size=FSIZE, drip=DRIP)
                                        for i in range(NFILES)]})
        return job["id"]

    def wait_midway(self, job_id):
        """Until some items are done, some running, and part files hold
        bytes: the moment to pull the plug."""
        def midway():
            p = self.d.get_job(job_id)["progress"]
            return 2 <= p["succeeded"] < NFILES - 4 and p["running"] > 0 and self.part_files(job_id)
        self.d.wait_for(midway, timeout=20.0, what="job midway")

    def job_dir(self, job_id):
        return os.path.join(self.d.download_dir, job_id, self.source)

    def part_files(self, job_id):
        """{name: size} of the part files with bytes in them."""
        out = {}
        try:
            names = os.listdir(self.job_dir(job_id))
        except FileNotFoundError:
            return out
        for n in names:
            if n.endswith(".part"):
                try:
                    size = os.stat(os.path.join(self.job_dir(job_id), n)).st_size
                except FileNotFoundError:
                    continue
                if size > 0:
                    out[n] = size
        return out

    def restart_and_finish(self, job_id, kill):
        self.d.restart(kill=kill, timeout=RESTART_TIMEOUT)
        state = self.d.get_job(job_id)["state"]
        self.assertIn(state, ("queued", "running"), "the job after the restart")
        job = self.d.wait_job(job_id, timeout=40.0)
        self.assertEqual(job["state"], "succeeded", job)
        return job

    def assert_all_files(self, job_id):
        items = self.items(job_id, daemon=self.d)
        self.assertEqual(len(items), NFILES)
        paths = set()
        for it in items:
            name = self.name(int(it["index"]))
            self.assertIn("/file/%s?" % name, it["url"])
            self.assert_item_file(it, name, FSIZE, daemon=self.d)
            self.assertEqual(os.path.dirname(it["path"]), os.path.join(job_id, self.source), it)
            paths.add(os.path.basename(it["path"]))
        self.assertEqual(len(paths), NFILES, "two items share a file")
        on_disk = sorted(os.listdir(self.job_dir(job_id)))
        self.assertEqual(on_disk, sorted(paths), "exactly one file per item, no part file")
        self.assertEqual(os.listdir(os.path.join(self.d.download_dir, job_id)), [self.source])

    def test_sigterm_mid_job_parks_and_resumes(self):
        job_id = self.submit()
        self.wait_midway(job_id)
        t0 = time.monotonic()
        self.d.stop(expect_code=0, timeout=10.0)
        took = time.monotonic() - t0
        self.assertLess(took, 5.0, "SIGTERM took %.1f s" % took)
        self.assertIn("job %s: parked with" % job_id, self.d.log_text())
        self.restart_and_finish(job_id, kill=False)
        self.assert_all_files(job_id)

    def crash_mid_job(self):
        job_id = self.submit()
        self.wait_midway(job_id)
        self.d.kill9()
        parts = self.part_files(job_id)
        self.assertTrue(parts, "kill -9 mid-transfer left no part file with bytes")
        seen = self.origin.count()
        return job_id, parts, seen

    def test_kill9_mid_job_recovers(self):
        job_id, _parts, _seen = self.crash_mid_job()
        self.restart_and_finish(job_id, kill=True)
        self.assertIn("interrupted by the last stop will resume", self.d.log_text())
        self.assert_all_files(job_id)

    def test_kill9_mid_job_resumes_part_files_with_range(self):
        job_id, parts, seen = self.crash_mid_job()
        self.restart_and_finish(job_id, kill=True)
        self.assert_all_files(job_id)
        after = self.origin.requests()[seen:]
        for part, size in sorted(parts.items()):
            idx = int(part.split(".")[1])  # ".N.part": N is the item's index
            path = "/file/" + self.name(idx)
            ranges = [r["headers"].get("range") for r in after if r["path"] == path]
            self.assertTrue(ranges, "%s (%d bytes) was not fetched again" % (path, size))
            starts = [int(m.group(1)) for m in (re.match(r"bytes=(\d+)-$", r or "") for r in ranges) if m]
            self.assertTrue(any(0 < s <= size for s in starts),
                            "%s: %d bytes were in %s, yet the requests after the restart asked for %r"
                            % (path, size, part, ranges))


class ChangedOrigin(LifecycleCase):
    """A part file left by a crash is worth resuming only while the origin
    serves the same bytes: a new ETag, or an origin that ignores Range,
    means starting again from zero."""

    SIZE = 400 * 1024

    def setUp(self):
        super().setUp()
        self.d = self.new_daemon({"RETRY_BACKOFF_BASE": "0.1"})
        self.dir = None

    def crash_mid_file(self, name, **params):
        job = self.d.post_job({"urls": [self.file_url(name, size=self.SIZE, drip=DRIP, **params)]})
        job_id = job["id"]
        self.dir = os.path.join(self.d.download_dir, job_id, "127.0.0.1:%d" % self.origin.port)

        def part_size():
            try:
                return sum(os.stat(os.path.join(self.dir, n)).st_size
                           for n in os.listdir(self.dir) if n.endswith(".part"))
            except FileNotFoundError:
                return 0
        self.d.wait_for(lambda: part_size() >= 100000, timeout=20.0, what="100 kB in the part file")
        self.d.kill9()
        return job_id

    def finish(self, job_id):
        self.d.restart(kill=True, timeout=RESTART_TIMEOUT)
        job = self.d.wait_job(job_id, timeout=30.0)
        self.assertEqual(job["state"], "succeeded", job)
        (it,) = self.items(job_id, daemon=self.d)
        self.assertEqual(sorted(os.listdir(self.dir)), [os.path.basename(it["path"])])
        return it

    def test_new_etag_restarts_from_zero(self):
        job_id = self.crash_mid_file("ch.png")
        # same URL, new bytes and a new ETag; no drip, to keep it short
        self.origin.set_override("/file/ch.png", seed="1", drip="0",
                                 last_modified="Thu, 01 Jan 2026 00:00:00 GMT")
        it = self.finish(job_id)
        want = body_for("ch.png", self.SIZE, seed="1")
        self.assertNotEqual(want, body_for("ch.png", self.SIZE))
        with open(self.item_path(it, self.d), "rb") as f:
            got = f.read()
        self.assertEqual(len(got), len(want))
        self.assertTrue(got == want, "the file mixes the old and the new content")
        self.assert_item_file(it, "ch.png", self.SIZE, seed="1", daemon=self.d)

    def test_origin_ignoring_range_restarts_from_zero(self):
        job_id = self.crash_mid_file("nr.png", norange=1)
        it = self.finish(job_id)
        self.assert_item_file(it, "nr.png", self.SIZE, daemon=self.d)


if __name__ == "__main__":
    hauldtest.main()
