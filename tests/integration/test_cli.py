"""hauldctl, the command-line client, driven as a user drives it: the real
binary ($HAULDCTL, else $HAULD_BUILDDIR/hauldctl) against a real daemon
and the fake origin. Each test asserts what the user sees: the exit
status, stdout (ids, tables, the API's JSON unchanged) and the message on
stderr. Also the daemon's own command line: an unknown flag is a usage
error (64), and both --help texts point to the manual pages. What hauldctl
sends is checked too: its POSTs without a body carry no form-like
Content-Type, which the daemon refuses from web pages."""

import fcntl
import hashlib
import http.server
import json
import os
import pty
import shutil
import struct
import subprocess
import termios
import tempfile
import threading
import time
import unittest

import hauldtest

TOKEN = "cli-test-token-0123456789"
CLI_TIMEOUT = 60.0
EX_USAGE = 64
TOKEN_FILE_MAX = 4096


def hauldctl_binary():
    """$HAULDCTL, else hauldctl next to the daemon under test."""
    if os.environ.get("HAULDCTL"):
        return os.environ["HAULDCTL"]
    if os.environ.get("HAULD_BUILDDIR"):
        return os.path.join(os.environ["HAULD_BUILDDIR"], "hauldctl")
    hauld = hauldtest.hauld_binary()
    return os.path.join(os.path.dirname(hauld), "hauldctl") if hauld else None


class CliTestCase(hauldtest.HauldTestCase):
    daemon_env = {"MAX_RETRIES_PER_SOURCE": "0", "MAX_RETRIES_PER_ITEM": "0", "RETRY_BACKOFF_BASE": "0"}

    def setUp(self):
        super().setUp()
        self.binary = hauldctl_binary()
        self.assertTrue(self.binary and os.access(self.binary, os.X_OK),
                        "no hauldctl binary at %r (set HAULDCTL)" % self.binary)
        self.cwd = tempfile.mkdtemp(prefix="hauldctl-it-")
        self.addCleanup(shutil.rmtree, self.cwd, True)

    def ctl(self, *args, daemon=None, url=None, stdin=None, env=None, timeout=CLI_TIMEOUT):
        """Run hauldctl ARGS against daemon (default self.daemon) with
        HAULD_URL set; returns CompletedProcess with text stdout/stderr."""
        e = {k: v for k, v in os.environ.items() if k not in ("HAULD_URL", "HAULD_TOKEN_FILE")}
        if url is None:
            url = "http://127.0.0.1:%d" % (daemon or self.daemon).port
        e["HAULD_URL"] = url
        e.update(env or {})
        return subprocess.run([self.binary] + list(args), input=stdin, capture_output=True, text=True,
                              env=e, cwd=self.cwd, timeout=timeout)

    def assert_exit(self, p, code):
        self.assertEqual(p.returncode, code, "exit %d, expected %d\nstdout: %s\nstderr: %s"
                         % (p.returncode, code, p.stdout, p.stderr))
        return p

    def submit(self, *urls, **kw):
        """A job through the API; returns its id."""
        return self.daemon.post_job(dict({"urls": list(urls)}, **kw))["id"]

    def json_lines(self, text):
        return [json.loads(line) for line in text.splitlines() if line.strip()]


class Submit(CliTestCase):
    def test_wait_succeeds_and_files_are_there(self):
        a, b = self.file_url("a.png", size=3000), self.file_url("b.png", size=7000)
        p = self.assert_exit(self.ctl("submit", "--wait", "--label", "cli", a, b), 0)
        job_id = p.stdout.strip()
        self.assertRegex(job_id, r"^[0-9A-Z]{26}$")
        self.assertIn("succeeded", p.stderr)
        job = self.daemon.get_job(job_id)
        self.assertEqual((job["state"], job["label"]), ("succeeded", "cli"))
        items = self.items(job_id)
        self.assert_item_file(items[0], "a.png", 3000)
        self.assert_item_file(items[1], "b.png", 7000)

    def test_wait_on_a_failing_job_exits_1(self):
        bad = self.origin.url("/file/gone.png", status=404)
        p = self.assert_exit(self.ctl("submit", "--wait", bad), 1)
        job_id = p.stdout.strip()
        self.assertEqual(self.daemon.get_job(job_id)["state"], "failed")
        self.assertIn("failed", p.stderr)

    def test_wait_on_a_partial_job_exits_1(self):
        p = self.assert_exit(self.ctl("submit", "--wait", self.file_url("ok.png"),
                                      self.origin.url("/file/x.png", status=500)), 1)
        self.assertEqual(self.daemon.get_job(p.stdout.strip())["state"], "partial")

    def test_urls_from_stdin_with_options(self):
        urls = [self.file_url("s%d.png" % i) for i in range(3)]
        text = "\n%s\n  \n%s\r\n%s" % tuple(urls)  # blank lines and CRLF
        p = self.assert_exit(self.ctl("submit", "-", "--priority", "-3", "--max", "2", "--timeout", "90",
                                      stdin=text), 0)
        job = self.daemon.get_job(p.stdout.strip())
        self.assertEqual((job["priority"], job["max"], job["timeout"]), (-3, 2, 90))
        job = self.daemon.wait_job(job["id"])
        self.assertEqual([it["url"] for it in self.items(job["id"])], urls)

    def test_json_prints_the_created_job(self):
        p = self.assert_exit(self.ctl("submit", "--json", self.file_url("j.png")), 0)
        docs = self.json_lines(p.stdout)
        self.assertEqual(len(docs), 1)
        self.assertEqual(docs[0]["id"], self.daemon.get_job(docs[0]["id"])["id"])
        self.assertIn(docs[0]["state"], ("queued", "running", "succeeded"))

    def test_idempotency_key(self):
        u = self.file_url("idem.png")
        first = self.assert_exit(self.ctl("submit", "--idempotency-key", "k-1", u), 0).stdout
        again = self.assert_exit(self.ctl("submit", "--idempotency-key", "k-1", u), 0).stdout
        self.assertEqual(first, again)
        p = self.assert_exit(self.ctl("submit", "--idempotency-key", "k-1", u + "&other=1"), 2)
        self.assertIn("Idempotency-Key", p.stderr)

    def test_validation_errors_name_the_field(self):
        p = self.assert_exit(self.ctl("submit", "--max", "0", self.file_url("v.png")), 2)
        self.assertIn("Bad Request", p.stderr)
        self.assertRegex(p.stderr, r"(?m)^  max: .*1\.\.10000")
        p = self.assert_exit(self.ctl("submit", "--priority", "11", "ftp://example.org/x"), 2)
        self.assertRegex(p.stderr, r"(?m)^  urls\[0\]: ")
        self.assertRegex(p.stderr, r"(?m)^  priority: ")
        p = self.assert_exit(self.ctl("submit", "--query", "cats", "--source", "nosuch"), 2)
        self.assertRegex(p.stderr, r"(?m)^  sources\[0\]: ")

    def test_usage_errors_exit_2_with_a_hint(self):
        cases = [
            ("submit",),
            ("submit", "--source", "s", self.file_url("u.png")),
            ("submit", "--query", "cats"),
            ("submit", "--query", "cats", "--source", "s", self.file_url("u.png")),
            ("submit", "--max", "ten", self.file_url("u.png")),
            ("submit", "--timeout", "soon", self.file_url("u.png")),
            ("submit", "--bogus", self.file_url("u.png")),
            ("submit", "-"),  # nothing on stdin
            ("show",),
            ("show", "a", "b"),
            ("ls", "--limit"),
            ("ls", "extra"),
            ("get", "ID", "minus-one"),
            ("nosuchcommand",),
            ("--nosuchflag", "ls"),
            (),
        ]
        for args in cases:
            p = self.ctl(*args, stdin="")
            self.assertEqual(p.returncode, 2, (args, p.stdout, p.stderr))
            self.assertEqual(len(p.stderr.splitlines()), 1, (args, p.stderr))
            self.assertIn("--help", p.stderr, args)
            self.assertEqual(p.stdout, "", args)
        # nothing reached the server
        st, _h, data = self.daemon.get("/v1/jobs")
        self.assertEqual(data["jobs"], [])


class Listing(CliTestCase):
    def make_jobs(self):
        """5 succeeded and 2 failed jobs, oldest first."""
        ids = []
        for i in range(7):
            url = self.origin.url("/file/f%d.png" % i, status=404) if i in (2, 5) else self.file_url("l%d.png" % i)
            ids.append(self.submit(url, label="n%d" % i))
        for job_id in ids:
            self.daemon.wait_job(job_id)
        return ids

    def test_pages_state_filter_and_json(self):
        ids = self.make_jobs()
        newest_first = list(reversed(ids))
        # --all follows next_cursor over 3 pages; --json prints each page as the API sent it
        p = self.assert_exit(self.ctl("ls", "--limit", "3", "--all", "--json"), 0)
        pages = self.json_lines(p.stdout)
        self.assertEqual([len(pg["jobs"]) for pg in pages], [3, 3, 1])
        self.assertIsNone(pages[-1]["next_cursor"])
        self.assertEqual([j["id"] for pg in pages for j in pg["jobs"]], newest_first)
        # without --all: the first page, and a note that there is more
        p = self.assert_exit(self.ctl("ls", "--limit", "3"), 0)
        lines = p.stdout.splitlines()
        self.assertEqual(lines[0].split()[:3], ["ID", "STATE", "ITEMS"])
        self.assertEqual([ln.split()[0] for ln in lines[1:]], newest_first[:3])
        self.assertIn("--all", p.stderr)
        # the table: state, items done/total, label
        row = [ln for ln in lines if ln.startswith(ids[6])][0].split()
        self.assertEqual(row[1:3], ["succeeded", "1/1"])
        self.assertEqual(row[-1], "n6")
        # --state, repeatable
        p = self.assert_exit(self.ctl("ls", "--state", "failed"), 0)
        self.assertEqual([ln.split()[0] for ln in p.stdout.splitlines()[1:]], [ids[5], ids[2]])
        p = self.assert_exit(self.ctl("ls", "--state", "failed", "--state", "succeeded", "--limit", "2",
                                      "--all", "--json"), 0)
        self.assertEqual(sum(len(pg["jobs"]) for pg in self.json_lines(p.stdout)), 7)
        # the server's validation, shown with its field
        p = self.assert_exit(self.ctl("ls", "--state", "bogus"), 2)
        self.assertRegex(p.stderr, r"(?m)^  state: ")
        p = self.assert_exit(self.ctl("ls", "--limit", "501"), 2)
        self.assertRegex(p.stderr, r"(?m)^  limit: ")

    def test_label_filters(self):
        mine = [self.submit(self.file_url("lab%d.png" % i), label="mine") for i in range(2)]
        other = self.submit(self.file_url("other.png"), label="other")
        self.submit(self.file_url("none.png"))
        p = self.assert_exit(self.ctl("ls", "--label", "mine", "--json"), 0)
        pages = self.json_lines(p.stdout)
        self.assertEqual([j["id"] for j in pages[0]["jobs"]], list(reversed(mine)))
        lines = self.assert_exit(self.ctl("ls", "--label", "other"), 0).stdout.splitlines()
        self.assertEqual([ln.split()[0] for ln in lines[1:]], [other])
        self.assertEqual(lines[1].split()[-1], "other")
        # a label with spaces and non-ASCII characters goes through escaped
        odd = self.submit(self.file_url("odd.png"), label="caf\u00e9 & co")
        p = self.assert_exit(self.ctl("ls", "--label", "caf\u00e9 & co", "--json"), 0)
        self.assertEqual([j["id"] for j in self.json_lines(p.stdout)[0]["jobs"]], [odd])
        # no job has it: only the header, exit 0
        p = self.assert_exit(self.ctl("ls", "--label", "nobody"), 0)
        self.assertEqual(len(p.stdout.splitlines()), 1, p.stdout)
        # with --state, both filters hold
        for job_id in mine:
            self.daemon.wait_job(job_id)
        p = self.assert_exit(self.ctl("ls", "--label", "mine", "--state", "failed", "--json"), 0)
        self.assertEqual(self.json_lines(p.stdout)[0]["jobs"], [])
        # a label longer than any label can be: the server's 400, exit 2
        p = self.assert_exit(self.ctl("ls", "--label", "x" * 1025), 2)
        self.assertRegex(p.stderr, r"(?m)^  label: ")

    def test_show_and_items_json_match_the_api(self):
        job_id = self.submit(self.file_url("m1.png", size=2000), self.origin.url("/file/m2.png", status=404))
        self.daemon.wait_job(job_id)
        p = self.assert_exit(self.ctl("show", "--json", job_id), 0)
        self.assertEqual(json.loads(p.stdout), self.daemon.get_job(job_id))
        self.assertEqual(p.stdout.count("\n"), 1)
        p = self.assert_exit(self.ctl("items", job_id, "--json"), 0)
        st, _h, api = self.daemon.get("/v1/jobs/%s/items?limit=1000" % job_id)
        self.assertEqual(self.json_lines(p.stdout), [api])
        p = self.assert_exit(self.ctl("items", job_id, "--json", "--state", "failed"), 0)
        self.assertEqual([it["index"] for it in self.json_lines(p.stdout)[0]["items"]], [1])

    def test_show_and_items_for_people(self):
        job_id = self.submit(self.file_url("p1.png", size=2048), self.origin.url("/file/p2.png", status=404))
        self.daemon.wait_job(job_id)
        out = self.assert_exit(self.ctl("show", job_id), 0).stdout
        self.assertRegex(out, r"(?m)^id: +%s$" % job_id)
        self.assertRegex(out, r"(?m)^state: +partial$")
        self.assertRegex(out, r"(?m)^progress: +2/2 items \(1 succeeded, 1 failed, 0 skipped")
        self.assertRegex(out, r"(?m)^created: +\d{4}-\d\d-\d\dT[0-9:.]+Z \(")
        self.assertIn("2.0 KiB", out)
        lines = self.assert_exit(self.ctl("items", job_id), 0).stdout.splitlines()
        self.assertEqual(lines[0].split(), ["#", "STATE", "BYTES", "SOURCE", "ERROR", "FILE"])
        ok, bad = lines[1].split(), lines[2].split()
        self.assertEqual(ok[:4], ["0", "succeeded", "2.0", "KiB"])
        self.assertTrue(ok[-1].endswith("/p1.png"), lines[1])
        self.assertEqual(bad[:2], ["1", "failed"])
        self.assertIn("http_4xx", bad)

    def test_show_says_how_many_sources_are_not_shown(self):
        # the job object carries the first 100 per_source entries; show
        # says how many more there are and where to read them
        urls = [{"url": self.origin.url("/gone%d" % i, status=404), "source": "lbl-%03d" % i} for i in range(103)]
        job = self.run_job({"urls": urls}, timeout=60)
        out = self.assert_exit(self.ctl("show", job["id"]), 0).stdout
        self.assertIn("lbl-099", out)
        self.assertNotIn("lbl-100", out)
        self.assertRegex(out, r"(?m)^\.\.\. and 3 more \(GET /v1/jobs/%s/sources lists them all\)$" % job["id"])
        # no such line when every source is shown
        small = self.run_job({"urls": urls[:2]})
        self.assertNotIn("more (GET", self.assert_exit(self.ctl("show", small["id"]), 0).stdout)

    def test_not_found_exits_4(self):
        missing = "01KB0000000000000000000000"
        for args in (("show", missing), ("items", missing), ("cancel", missing), ("retry", missing),
                     ("pause", missing), ("resume", missing), ("rm", missing), ("watch", missing),
                     ("get", missing, "0"), ("show", "not-an-id"), ("reset", "nosuch.example")):
            p = self.ctl(*args)
            self.assertEqual(p.returncode, 4, (args, p.stderr))
            self.assertIn("Not Found", p.stderr, args)
            self.assertEqual(p.stdout, "", args)


class Watch(CliTestCase):
    daemon_env = dict(CliTestCase.daemon_env, MAX_CONNECTIONS_PER_SOURCE="1")

    def slow_job(self, fail_last=False):
        urls = [self.file_url("w%d.png" % i, size=20000, drip=20000) for i in range(3)]
        if fail_last:
            urls.append(self.origin.url("/file/w-bad.png", status=500))
        return self.submit(*urls)

    def test_lines_when_not_a_terminal(self):
        job_id = self.slow_job()
        p = self.assert_exit(self.ctl("watch", job_id), 0)
        lines = p.stdout.splitlines()
        self.assertTrue(lines[0].startswith("job %s " % job_id), lines)
        self.assertTrue(lines[-1].startswith("job %s succeeded 3/3 items" % job_id), lines)
        kinds = [ln.split()[0] for ln in lines]
        self.assertIn("progress", kinds[:-1], lines)
        done = sorted(ln.split()[2] for ln in lines if ln.startswith("item "))
        self.assertEqual(done, ["0", "1", "2"], lines)
        for ln in lines:
            if ln.startswith("item "):
                self.assertIn(" succeeded ", ln)
        # nothing drawn for a terminal
        self.assertNotIn("\r", p.stdout)
        self.assertNotIn("\x1b", p.stdout)

    def test_a_job_that_ends_badly_exits_1(self):
        job_id = self.slow_job(fail_last=True)
        p = self.assert_exit(self.ctl("watch", job_id), 1)
        self.assertTrue(p.stdout.splitlines()[-1].startswith("job %s partial" % job_id), p.stdout)
        self.assertRegex(p.stdout, r"(?m)^item %s 3 failed .*http_5xx" % job_id)

    def test_json_events_end_with_the_job(self):
        job_id = self.slow_job()
        p = self.assert_exit(self.ctl("watch", "--json", job_id), 0)
        events = self.json_lines(p.stdout)
        self.assertEqual(events[0]["id"], job_id)
        self.assertEqual(events[-1]["id"], job_id)
        self.assertEqual(events[-1]["state"], "succeeded")
        self.assertEqual(events[-1], self.daemon.get_job(job_id))
        self.assertTrue(any("total" in e and e.get("job_id") == job_id for e in events), events)
        self.assertEqual(sorted(e["index"] for e in events if "index" in e), [0, 1, 2])

    def test_a_redrawn_line_on_a_terminal(self):
        job_id = self.slow_job()
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("HAULD_URL", "HAULD_TOKEN_FILE")}
        proc = subprocess.Popen([self.binary, "--url", "http://127.0.0.1:%d" % self.daemon.port, "watch", job_id],
                                stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other end closed
                break
            if not chunk:
                break
            out += chunk
        os.close(master)
        self.assertEqual(proc.wait(CLI_TIMEOUT), 0, proc.stderr.read())
        proc.stderr.close()
        text = out.decode()
        draws = text.split("\r\x1b[K")
        bars = [d for d in draws if d.startswith("[")]
        self.assertGreaterEqual(len(bars), 2, text)
        for bar in bars:
            self.assertLessEqual(len(bar), 100, bar)
            self.assertRegex(bar, r"^\[[#-]{10,40}\] +\d+%  \d/3 items  ")
        self.assertRegex(bars[-1], r"100%  3/3 items")
        self.assertRegex(text.rstrip(), r"job %s succeeded: 3 succeeded, 0 failed, 0 skipped of 3; "
                         r"58\.6 KiB in \d+s$" % job_id)

    def test_a_finished_job_returns_at_once(self):
        job_id = self.submit(self.file_url("done.png"))
        self.daemon.wait_job(job_id)
        started = time.monotonic()
        p = self.assert_exit(self.ctl("watch", job_id), 0)
        self.assertLess(time.monotonic() - started, 5.0)
        self.assertEqual(p.stdout.splitlines(), [p.stdout.splitlines()[0]])
        self.assertTrue(p.stdout.startswith("job %s succeeded" % job_id))


class Changes(CliTestCase):
    def stalled_job(self):
        job_id = self.submit(self.file_url("stall.png", size=100000, stall_after=1000, stall_for=60))
        self.daemon.wait_job(job_id, states="running")
        return job_id

    def test_cancel_then_show_says_cancelled(self):
        job_id = self.stalled_job()
        p = self.assert_exit(self.ctl("cancel", job_id), 0)
        self.assertEqual(p.stdout.split()[0], job_id)
        self.daemon.wait_job(job_id)
        self.assertRegex(self.assert_exit(self.ctl("show", job_id), 0).stdout, r"(?m)^state: +cancelled$")
        # a finished job cannot be cancelled: 409, exit 3, the problem's detail
        p = self.assert_exit(self.ctl("cancel", job_id), 3)
        self.assertIn("Conflict", p.stderr)
        self.assertIn("does not allow", p.stderr)

    def test_rm_a_running_job_is_a_conflict_then_rm_works(self):
        job_id = self.stalled_job()
        p = self.assert_exit(self.ctl("rm", job_id), 3)
        self.assertIn("Conflict", p.stderr)
        self.assert_exit(self.ctl("cancel", job_id), 0)
        self.daemon.wait_job(job_id)
        p = self.assert_exit(self.ctl("rm", job_id), 0)
        self.assertEqual(p.stdout, "")
        self.assert_exit(self.ctl("show", job_id), 4)

    def test_pause_then_resume(self):
        job_id = self.stalled_job()
        p = self.assert_exit(self.ctl("pause", job_id), 0)
        self.assertEqual(p.stdout, "%s paused\n" % job_id)
        self.assertEqual(self.daemon.get_job(job_id)["state"], "paused")
        self.assertRegex(self.assert_exit(self.ctl("show", job_id), 0).stdout, r"(?m)^state: +paused$")
        # paused already: 409, exit 3
        p = self.assert_exit(self.ctl("pause", job_id), 3)
        self.assertIn("Conflict", p.stderr)
        self.assertEqual(p.stdout, "")
        p = self.assert_exit(self.ctl("resume", "--json", job_id), 0)
        job = json.loads(p.stdout)
        self.assertEqual(job["id"], job_id)
        self.assertIn(job["state"], ("queued", "running"))
        self.daemon.wait_job(job_id, states="running")
        # running, not paused: resume is a conflict
        p = self.assert_exit(self.ctl("resume", job_id), 3)
        self.assertIn("Conflict", p.stderr)
        self.assert_exit(self.ctl("cancel", job_id), 0)
        self.daemon.wait_job(job_id)
        # finished: neither pause nor resume
        self.assert_exit(self.ctl("pause", job_id), 3)
        self.assert_exit(self.ctl("resume", job_id), 3)

    def test_retry_runs_failed_items_again(self):
        url = self.file_url("flaky.png", fail=1, key="flaky-cli")
        job_id = self.submit(url)
        self.assertEqual(self.daemon.wait_job(job_id)["state"], "failed")
        p = self.assert_exit(self.ctl("retry", "--json", job_id), 0)
        self.assertEqual(json.loads(p.stdout)["id"], job_id)
        self.assert_exit(self.ctl("watch", job_id), 0)
        self.assert_item_file(self.items(job_id)[0], "flaky.png")


class System(CliTestCase):
    def test_health(self):
        p = self.assert_exit(self.ctl("health"), 0)
        st, _h, api = self.daemon.get("/v1/health")
        self.assertEqual(p.stdout, "ok (hauld %s)\n" % api["version"])
        p = self.assert_exit(self.ctl("--json", "health"), 0)
        self.assertEqual(json.loads(p.stdout), api)

    def test_circuits_reset_and_stats(self):
        job_id = self.submit(self.file_url("c.png", size=4096))
        self.daemon.wait_job(job_id)
        source = self.items(job_id)[0]["source"]
        lines = self.assert_exit(self.ctl("circuits"), 0).stdout.splitlines()
        self.assertEqual(lines[0].split()[:2], ["SOURCE", "STATE"])
        self.assertEqual(lines[1].split()[:2], [source, "closed"])
        p = self.assert_exit(self.ctl("circuits", "--json"), 0)
        self.assertEqual(json.loads(p.stdout), self.daemon.get("/v1/circuits")[2])
        p = self.assert_exit(self.ctl("reset", source), 0)
        self.assertEqual(p.stdout, "%s closed\n" % source)
        out = self.assert_exit(self.ctl("stats"), 0).stdout
        self.assertRegex(out, r"(?m)^attempts: +1 \(1 succeeded, 0 failed, 0 retries\)$")
        self.assertRegex(out, r"(?m)^bytes: +4\.0 KiB$")
        self.assertRegex(out, r"(?m)^jobs: .*succeeded 1")
        self.assertRegex(out, r"(?m)^%s +1 +1 +0 +0 +4\.0 KiB +closed$" % source.replace(".", r"\."))
        stats = json.loads(self.assert_exit(self.ctl("stats", "--json"), 0).stdout)
        self.assertEqual((stats["total_attempts"], stats["total_bytes"]), (1, 4096))

    def test_stats_reset(self):
        job_id = self.submit(self.file_url("r.png", size=2048))
        self.daemon.wait_job(job_id)
        self.assertEqual(self.daemon.get("/v1/stats")[2]["total_attempts"], 1)
        out = self.assert_exit(self.ctl("stats", "--reset"), 0).stdout
        self.assertRegex(out, r"(?m)^attempts: +0 \(0 succeeded, 0 failed, 0 retries\)$")
        self.assertRegex(out, r"(?m)^bytes: +0 B$")
        self.assertRegex(out, r"(?m)^jobs: .*succeeded 1")  # jobs are not statistics
        st, _h, stats = self.daemon.get("/v1/stats")
        self.assertEqual((stats["total_attempts"], stats["total_bytes"]), (0, 0))
        # a download after the reset counts from zero; --json prints the answer of the reset
        self.daemon.wait_job(self.submit(self.file_url("r2.png", size=1000)))
        p = self.assert_exit(self.ctl("stats", "--reset", "--json"), 0)
        self.assertEqual(json.loads(p.stdout)["total_attempts"], 0)
        self.assertEqual(self.daemon.get("/v1/stats")[2]["total_bytes"], 0)
        p = self.assert_exit(self.ctl("stats", "--reset", "extra"), 2)
        self.assertIn("--help", p.stderr)

    def test_unreachable_server_exits_69(self):
        url = "http://127.0.0.1:%d" % hauldtest.free_port()
        for args in (("health",), ("ls",), ("watch", "01KB0000000000000000000000"),
                     ("submit", self.file_url("u.png"))):
            p = self.ctl(*args, url=url)
            self.assertEqual(p.returncode, 69, (args, p.stderr))
            self.assertIn("cannot reach hauld", p.stderr)
        p = self.assert_exit(self.ctl("health", url="unix:%s/none.sock" % self.cwd), 69)
        self.assertIn("cannot reach hauld", p.stderr)

    def test_bad_url_is_a_usage_error(self):
        for url in ("ftp://127.0.0.1:1", "127.0.0.1:8080", "unix:relative.sock", "http://"):
            p = self.ctl("health", url=url)
            self.assertEqual(p.returncode, 2, (url, p.stderr))
            self.assertIn("--url", p.stderr)

    def test_url_option_wins_over_the_environment(self):
        good = "http://127.0.0.1:%d" % self.daemon.port
        p = self.ctl("--url", good, "health", url="http://127.0.0.1:%d" % hauldtest.free_port())
        self.assert_exit(p, 0)
        self.assert_exit(self.ctl("health", "--url", good, url="http://127.0.0.1:1"), 0)

    def test_help_and_version(self):
        p = self.assert_exit(self.ctl("--help"), 0)
        self.assertIn("hauldctl(1)", p.stdout.splitlines()[-1])
        for cmd in ("submit", "ls", "show", "items", "watch", "cancel", "retry", "pause", "resume", "rm",
                    "get", "circuits", "reset", "stats", "health"):
            self.assertRegex(p.stdout, r"(?m)^  %s " % cmd)
            q = self.assert_exit(self.ctl(cmd, "--help"), 0)
            self.assertTrue(q.stdout.startswith("Usage: hauldctl %s" % cmd), q.stdout)
            self.assertEqual(self.assert_exit(self.ctl("help", cmd), 0).stdout, q.stdout)
        p = self.assert_exit(self.ctl("--version"), 0)
        self.assertRegex(p.stdout, r"^hauldctl \d+\.\d+\.\d+\n$")


class GetFile(CliTestCase):
    def finished(self, *urls):
        job_id = self.submit(*urls)
        self.daemon.wait_job(job_id)
        return job_id

    def test_saves_under_the_servers_name(self):
        job_id = self.finished(self.file_url("photo.png", size=5000))
        p = self.assert_exit(self.ctl("get", job_id, "0"), 0)
        self.assertEqual(p.stdout, "photo.png\n")
        with open(os.path.join(self.cwd, "photo.png"), "rb") as f:
            data = f.read()
        self.assertTrue(data == self.expected_body("photo.png", 5000), "the file differs from the origin's")
        self.assertEqual(hashlib.sha256(data).hexdigest(), self.items(job_id)[0]["sha256"])
        self.assertEqual(sorted(os.listdir(self.cwd)), ["photo.png"])
        # again: the name is taken, exit 73, the first file kept
        p = self.assert_exit(self.ctl("get", job_id, "0"), 73)
        self.assertIn("--force", p.stderr)
        self.assertEqual(sorted(os.listdir(self.cwd)), ["photo.png"])

    def test_output_options(self):
        job_id = self.finished(self.file_url("o.png", size=3000))
        want = self.expected_body("o.png", 3000)
        p = self.assert_exit(self.ctl("get", job_id, "0", "-o", "named.bin"), 0)
        self.assertEqual(p.stdout, "named.bin\n")
        with open(os.path.join(self.cwd, "named.bin"), "rb") as f:
            self.assertTrue(f.read() == want)
        # into a directory, under the server's name
        os.mkdir(os.path.join(self.cwd, "d"))
        p = self.assert_exit(self.ctl("get", job_id, "0", "-o", "d"), 0)
        self.assertEqual(p.stdout, "d/o.png\n")
        self.assertTrue(os.path.isfile(os.path.join(self.cwd, "d", "o.png")))
        # --force replaces
        with open(os.path.join(self.cwd, "named.bin"), "w") as f:
            f.write("old")
        self.assert_exit(self.ctl("get", job_id, "0", "-o", "named.bin", "--force"), 0)
        with open(os.path.join(self.cwd, "named.bin"), "rb") as f:
            self.assertTrue(f.read() == want)
        # -o -: the bytes on stdout
        p = subprocess.run([self.binary, "--url", "http://127.0.0.1:%d" % self.daemon.port, "get", job_id, "0",
                            "-o", "-"], capture_output=True, cwd=self.cwd, timeout=CLI_TIMEOUT)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout == want, "stdout differs from the origin's bytes")

    def test_errors(self):
        job_id = self.finished(self.file_url("ok.png"), self.origin.url("/file/bad.png", status=404))
        # the failed item has no file: 409, exit 3, nothing left behind
        p = self.assert_exit(self.ctl("get", job_id, "1"), 3)
        self.assertIn("Conflict", p.stderr)
        self.assertIn("failed", p.stderr)
        self.assertEqual(p.stdout, "")
        # no such item
        p = self.assert_exit(self.ctl("get", job_id, "7"), 4)
        self.assertIn("Not Found", p.stderr)
        self.assertEqual(os.listdir(self.cwd), [])
        # usage
        for args in (("get", job_id), ("get", job_id, "-1"), ("get", job_id, "x")):
            self.assertEqual(self.ctl(*args).returncode, 2, args)

    def test_refuses_to_overwrite_an_existing_output(self):
        target = os.path.join(self.cwd, "keep.png")
        with open(target, "w") as f:
            f.write("mine")
        p = self.assert_exit(self.ctl("get", "01KB0000000000000000000000", "0", "-o", target), 73)
        self.assertIn("--force", p.stderr)
        with open(target) as f:
            self.assertEqual(f.read(), "mine")
        self.assertEqual(os.listdir(self.cwd), ["keep.png"])  # no temporary file left


class RecordingServer(http.server.ThreadingHTTPServer):
    """Answers every request 200 with a job-like JSON body and keeps the
    request line and headers of each."""

    def __init__(self):
        self.seen = []
        super().__init__(("127.0.0.1", 0), self.Handler)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n)
            self.server.seen.append((self.command, self.path, dict(self.headers), body))
            data = json.dumps({"id": "01KB0000000000000000000000", "state": "paused",
                               "total_attempts": 0, "source": "x", "jobs": {}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass


class Sent(CliTestCase):
    """What hauldctl puts on the wire for a POST without a body."""
    start_daemon = False

    def test_bodiless_posts_carry_no_form_type(self):
        server = RecordingServer()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        url = "http://127.0.0.1:%d" % server.server_address[1]
        job = "01KB0000000000000000000000"
        for args in (("cancel", job), ("retry", job), ("pause", job), ("resume", job), ("reset", "x"),
                     ("stats", "--reset")):
            self.assert_exit(self.ctl(*args, url=url), 0)
        self.assertEqual([(m, p) for m, p, _h, _b in server.seen],
                         [("POST", "/v1/jobs/%s/%s" % (job, a)) for a in ("cancel", "retry", "pause", "resume")]
                         + [("POST", "/v1/circuits/x/reset"), ("POST", "/v1/stats/reset")])
        for _m, path, headers, body in server.seen:
            names = {k.lower() for k in headers}
            self.assertNotIn("content-type", names, (path, headers))
            self.assertNotIn("origin", names, (path, headers))
            self.assertEqual((headers.get("Content-Length"), body), ("0", b""), path)


class Token(CliTestCase):
    start_daemon = False

    def setUp(self):
        super().setUp()
        self.daemon = self.new_daemon(token=TOKEN)
        self.token_path = self.daemon.env_overrides["API_TOKEN_FILE"]

    def write(self, name, data, mode="w"):
        path = os.path.join(self.cwd, name)
        with open(path, mode) as f:
            f.write(data)
        return path

    def test_without_a_token_exit_3_and_say_so(self):
        p = self.assert_exit(self.ctl("ls"), 3)
        self.assertIn("Unauthorized", p.stderr)
        self.assertIn("--token-file", p.stderr)
        self.assertIn("HAULD_TOKEN_FILE", p.stderr)
        # health never needs one
        self.assert_exit(self.ctl("health"), 0)

    def test_with_the_token_file(self):
        self.assert_exit(self.ctl("ls", "--token-file", self.token_path), 0)
        self.assert_exit(self.ctl("--token-file", self.token_path, "ls"), 0)
        self.assert_exit(self.ctl("ls", env={"HAULD_TOKEN_FILE": self.token_path}), 0)
        p = self.assert_exit(self.ctl("submit", "--wait", self.file_url("t.png"),
                                      env={"HAULD_TOKEN_FILE": self.token_path}), 0)
        st, _h, job = self.daemon.get("/v1/jobs/" + p.stdout.strip(), headers={"Authorization": "Bearer " + TOKEN})
        self.assertEqual((st, job["state"]), (200, "succeeded"))

    def test_a_wrong_token_is_refused(self):
        wrong = self.write("wrong", "not-the-token\n")
        p = self.assert_exit(self.ctl("ls", "--token-file", wrong), 3)
        self.assertIn("refused the token", p.stderr)
        self.assertIn(wrong, p.stderr)
        self.assertNotIn("not-the-token", p.stderr)

    def test_token_file_limits(self):
        # at the limit: the token padded with whitespace to exactly 4096 bytes
        exact = self.write("exact", TOKEN + " " * (TOKEN_FILE_MAX - len(TOKEN) - 1) + "\n")
        self.assertEqual(os.path.getsize(exact), TOKEN_FILE_MAX)
        self.assert_exit(self.ctl("ls", "--token-file", exact), 0)
        over = self.write("over", TOKEN + " " * (TOKEN_FILE_MAX - len(TOKEN)) + "\n")
        p = self.assert_exit(self.ctl("ls", "--token-file", over), 2)
        self.assertIn("larger than 4096 bytes", p.stderr)
        bad = [("empty", "\n\n", "empty"), ("spaced", "two words\n", "printable ASCII"),
               ("ctrl", "tok\x01en\n", "printable ASCII")]
        for name, data, why in bad:
            p = self.assert_exit(self.ctl("ls", "--token-file", self.write(name, data)), 2)
            self.assertIn(why, p.stderr, name)
        p = self.assert_exit(self.ctl("ls", "--token-file", self.cwd), 2)
        self.assertIn("not a regular file", p.stderr)
        p = self.assert_exit(self.ctl("ls", "--token-file", os.path.join(self.cwd, "missing")), 2)
        self.assertIn("No such file", p.stderr)


class UnixSocket(CliTestCase):
    start_daemon = False

    def test_talks_over_a_unix_socket(self):
        tmp = tempfile.mkdtemp(prefix="hauldctl-unix-")
        self.addCleanup(shutil.rmtree, tmp, True)
        sock = os.path.join(tmp, "api.sock")
        env = {k: v for k, v in os.environ.items() if k not in hauldtest._SCRUB}
        env.update(STATE_DIR=os.path.join(tmp, "state"), SOURCES_DIR=tmp, LOG_LEVEL="debug")
        os.mkdir(env["STATE_DIR"])
        with open(os.path.join(tmp, "hauld.log"), "wb") as log:
            proc = subprocess.Popen([hauldtest.hauld_binary(), "--config", "/dev/null", "LISTEN=unix:" + sock],
                                    env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.addCleanup(proc.wait, 10)
        self.addCleanup(proc.terminate)
        deadline = time.monotonic() + 10
        while self.ctl("health", url="unix:" + sock).returncode != 0:
            self.assertIsNone(proc.poll(), "hauld exited")
            self.assertLess(time.monotonic(), deadline, "no answer on the unix socket")
            time.sleep(0.05)
        p = self.assert_exit(self.ctl("ls", "--json", url="unix:" + sock), 0)
        self.assertEqual(json.loads(p.stdout), {"jobs": [], "next_cursor": None})


class DaemonFlags(unittest.TestCase):
    """hauld's own command line (not hauldctl's)."""

    def setUp(self):
        self.hauld = hauldtest.hauld_binary()

    def run_hauld(self, *args):
        return subprocess.run([self.hauld] + list(args), capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)

    def test_unknown_flag_is_a_usage_error(self):
        for args in (("--no-such-flag",), ("-x",), ("--config",)):
            p = self.run_hauld(*args)
            self.assertEqual(p.returncode, EX_USAGE, (args, p.stderr))
            self.assertIn("Usage: hauld", p.stderr)

    def test_a_bad_setting_is_still_78(self):
        p = self.run_hauld("--config", "/dev/null", "--check-config", "MAX_RETRIES_PER_ITEM=x")
        self.assertEqual(p.returncode, 78, p.stderr)

    def test_help_points_to_the_manual(self):
        p = self.run_hauld("--help")
        self.assertEqual(p.returncode, 0)
        self.assertIn("hauld(8)", p.stdout.splitlines()[-1])
        self.assertIn("hauld.conf(5)", p.stdout.splitlines()[-1])


if __name__ == "__main__":
    hauldtest.main()
