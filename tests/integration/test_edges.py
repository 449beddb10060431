"""Edge and fault paths the other suites leave out, each checked by what a
user sees: a disk that refuses writes (RLIMIT_FSIZE), content that counts
against a breaker without a retry, redirects (same origin, too many, to
other schemes), JOB_RETENTION pruning, Content-Disposition names, empty
bodies, a 2,000-URL job, priority over a queued job, a host that does not
resolve, and Retry-After given as an HTTP date."""

import calendar
import email.utils
import hashlib
import math
import os
import time
import urllib.parse

import hauldtest

FAST = {
    "RETRY_BACKOFF_BASE": "0.1",
    "RETRY_BACKOFF_MAX": "5",
    "MAX_RETRIES_PER_SOURCE": "2",
    "MAX_RETRIES_PER_ITEM": "0",
    "REQUEST_TIMEOUT": "10",
}

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def source_of(origin):
    return "127.0.0.1:%d" % origin.port


def files_under(top):
    """Every regular file below top, as paths relative to it."""
    out = []
    for root, _dirs, files in os.walk(top):
        for f in files:
            out.append(os.path.relpath(os.path.join(root, f), top))
    return sorted(out)


def parse_rfc3339(s):
    """'2026-11-30T10:00:00.123Z' -> epoch seconds (float)."""
    base, _, frac = s.rstrip("Z").partition(".")
    t = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    return t + (float("0." + frac) if frac else 0.0)


class DiskErrors(hauldtest.HauldTestCase):
    """The daemon ignores SIGXFSZ: over RLIMIT_FSIZE a write fails with
    EFBIG and only that item ends `io`."""

    start_daemon = False
    LIMIT = 1536 * 1024  # the job table (jobs.db, its WAL) must stay below it

    def test_write_error_fails_one_item_with_io_and_daemon_carries_on(self):
        d = self.new_daemon(FAST, preexec_fn=hauldtest.with_rlimits(FSIZE=self.LIMIT))
        big, small = 3 * 1024 * 1024, 100 * 1024
        job = self.run_job({"urls": [self.file_url("big.png", size=big, key="big"),
                                     self.file_url("small.png", size=small)]}, daemon=d, timeout=40)
        self.assertEqual(job["state"], "partial", job)
        items = self.items(job["id"], daemon=d)
        self.assert_item_error(items[0], "io")
        self.assertIsNone(items[0]["path"], items[0])
        # io is not retried: a full disk does not get better by asking again
        self.assertEqual(items[0]["attempts"], 1, items[0])
        self.assertEqual(self.origin.count(key="big"), 1)
        self.assert_item_file(items[1], "small.png", size=small, daemon=d)
        # a local disk problem says nothing about the origin: its breaker stays closed
        st, _h, data = d.get("/v1/circuits")
        (c,) = [c for c in data["circuits"] if c["source"] == source_of(self.origin)]
        self.assertEqual((c["state"], c["consecutive_failures"]), ("closed", 0), c)
        # neither the part file nor its .meta stays; only the good file is there
        job_dir = os.path.join(d.download_dir, job["id"])
        self.assertEqual(files_under(job_dir), [os.path.join(source_of(self.origin), "small.png")])
        # the daemon is alive and keeps working
        st, _h, data = d.get("/v1/health")
        self.assertEqual(st, 200, data)
        self.assertEqual(data["status"], "ok")
        job = self.run_job({"urls": [self.file_url("after.png", size=5000, seed=7)]}, daemon=d)
        self.assertEqual(job["state"], "succeeded", job)
        (it,) = self.items(job["id"], daemon=d)
        self.assert_item_file(it, "after.png", size=5000, seed=7, daemon=d)
        self.assertTrue(d.running)


class ContentAndBreaker(hauldtest.HauldTestCase):
    daemon_env = dict(FAST, CIRCUIT_BREAKER_THRESHOLD="2", CIRCUIT_BREAKER_TIMEOUT="60",
                      MAX_CONNECTIONS_PER_SOURCE="1", ACCEPT_CONTENT="image")

    def test_invalid_content_counts_for_breaker_without_retry(self):
        urls = [self.file_url("page%d.png" % i, type="html", key="h%d" % i) for i in range(3)]
        # the circuit's next probe (60 s) comes after the job's deadline: the
        # third URL is skipped at once rather than waiting for it
        job = self.run_job({"urls": urls, "timeout": 20})
        self.assertEqual(job["state"], "failed", job)
        items = self.items(job["id"])
        for it in items[:2]:
            self.assert_item_error(it, "invalid_content")
            self.assertEqual(it["attempts"], 1, it)
            self.assertIsNone(it["path"], it)
        self.assert_item_error(items[2], "circuit_open", state="skipped")
        self.assertEqual(items[2]["attempts"], 0, items[2])
        self.assertEqual([self.origin.count(key="h%d" % i) for i in range(3)], [1, 1, 0])
        self.assertEqual(job["per_source"][0]["circuit"], "open", job)
        st, _h, data = self.daemon.get("/v1/circuits")
        self.assertEqual(st, 200, data)
        (c,) = [c for c in data["circuits"] if c["source"] == source_of(self.origin)]
        self.assertEqual(c["state"], "open", c)
        self.assertEqual(c["trips"], 1, c)
        self.assertIn("invalid_content", c["last_error"] or "", c)
        # nothing landed in the job's folder
        self.assertEqual(files_under(os.path.join(self.daemon.download_dir, job["id"])), [])


class Redirects(hauldtest.HauldTestCase):
    daemon_env = FAST

    def chain(self, hops, target):
        """A URL that redirects `hops` times (each hop its own key) before
        reaching target."""
        url = target
        for k in reversed(range(hops)):
            url = self.origin.url("/hop/%d" % k, redirect=url, key="hop%d-%d" % (hops, k))
        return url

    def test_redirect_on_same_origin_stores_the_target(self):
        job = self.run_job({"urls": [
            self.file_url("moved.png", redirect=self.file_url("target.png", size=5000, seed=3)),
            self.origin.url("/rel", redirect="/file/rel.png?size=2000&seed=4"),
            self.origin.url("/perm", redirect=self.file_url("perm.png", size=3000, seed=5),
                            redirect_status=308),
        ]})
        self.assertEqual(job["state"], "succeeded", job)
        items = self.items(job["id"])
        self.assert_item_file(items[0], "target.png", size=5000, seed=3)
        self.assert_item_file(items[1], "rel.png", size=2000, seed=4)
        self.assert_item_file(items[2], "perm.png", size=3000, seed=5)
        for it in items:
            self.assertEqual(it["attempts"], 1, it)
            self.assertEqual(it["http_status"], 200, it)
            self.assertTrue(it["path"].endswith(".png"), it)

    def test_five_redirects_pass_six_fail_without_retry(self):
        job = self.run_job({"urls": [self.chain(5, self.file_url("end5.png", size=1500, seed=1)),
                                     self.chain(6, self.file_url("end6.png", size=1500, seed=2))]})
        self.assertEqual(job["state"], "partial", job)
        items = self.items(job["id"])
        self.assert_item_file(items[0], "end5.png", size=1500, seed=1)
        self.assertEqual(self.origin.count(path="/file/end5.png"), 1)
        bad = items[1]
        self.assertEqual(bad["state"], "failed", bad)
        self.assertIsNotNone(bad["error"], bad)
        # observed code: http_4xx (engine.c classify_curl: CURLE_TOO_MANY_REDIRECTS)
        self.assertEqual(bad["error"]["code"], "http_4xx", bad)
        self.assertEqual(bad["attempts"], 1, bad)
        self.assertIsNone(bad["path"], bad)
        self.assertEqual(self.origin.count(key="hop6-0"), 1)  # not retried
        self.assertEqual(self.origin.count(path="/file/end6.png"), 0)

    def test_redirect_to_other_scheme_fails_without_retry(self):
        ftp_port = hauldtest.free_port()
        job = self.run_job({"urls": [
            self.origin.url("/toftp", redirect="ftp://127.0.0.1:%d/x.png" % ftp_port, key="ftp"),
            self.origin.url("/tofile", redirect="file:///etc/passwd", key="file"),
        ]})
        self.assertEqual(job["state"], "failed", job)
        for it, key in zip(self.items(job["id"]), ("ftp", "file")):
            self.assertEqual(it["state"], "failed", it)
            self.assertIsNotNone(it["error"], it)
            # observed code: http_4xx (CURLE_UNSUPPORTED_PROTOCOL)
            self.assertEqual(it["error"]["code"], "http_4xx", it)
            self.assertEqual(it["attempts"], 1, it)
            self.assertIsNone(it["path"], it)
            self.assertEqual(self.origin.count(key=key), 1, key)
        self.assertEqual(files_under(os.path.join(self.daemon.download_dir, job["id"])), [])


class Retention(hauldtest.HauldTestCase):
    daemon_env = dict(FAST, JOB_RETENTION="1", MAX_CONCURRENT_JOBS="1")

    def test_finished_job_is_pruned_and_its_file_stays(self):
        job = self.run_job({"urls": [self.file_url("kept.png", size=4000, seed=2)]})
        self.assertEqual(job["state"], "succeeded", job)
        finished = parse_rfc3339(job["finished_at"])
        job_dir = os.path.join(self.daemon.download_dir, job["id"])
        self.assertEqual(files_under(job_dir), [os.path.join(source_of(self.origin), "kept.png")])
        path = "/v1/jobs/" + job["id"]
        self.daemon.wait_for(lambda: self.daemon.get(path)[0] == 404, timeout=5,
                             what="job pruned after JOB_RETENTION=1")
        gone = time.time()
        # not before it was older than JOB_RETENTION (1 s; 0.2 s of slack for clock rounding)
        self.assertGreaterEqual(gone - finished, 0.8, "pruned %.2f s after it finished" % (gone - finished))
        st, _h, data = self.daemon.get("/v1/jobs?limit=500")
        self.assertEqual(st, 200, data)
        self.assertNotIn(job["id"], [j["id"] for j in data["jobs"]])
        self.assert_problem(self.daemon.get(path + "/items"), 404)
        with open(os.path.join(job_dir, source_of(self.origin), "kept.png"), "rb") as f:
            self.assertTrue(f.read() == self.expected_body("kept.png", size=4000, seed=2))

    def test_running_and_queued_jobs_are_never_pruned(self):
        running = self.daemon.post_job({"urls": [self.file_url("slow.png", delay=3.5)]})
        self.daemon.wait_job(running["id"], states="running", timeout=10)
        queued = self.daemon.post_job({"urls": [self.file_url("later.png")]})
        t_end = time.monotonic() + 2.5  # well over twice JOB_RETENTION
        while time.monotonic() < t_end:
            for j, want in ((running, "running"), (queued, "queued")):
                st, _h, data = self.daemon.get("/v1/jobs/" + j["id"])
                self.assertEqual(st, 200, "active job %s pruned: %r" % (want, data))
                self.assertEqual(data["state"], want, data)
            time.sleep(0.2)
        for j in (running, queued):
            done = self.daemon.wait_job(j["id"], timeout=20)
            self.assertEqual(done["state"], "succeeded", done)


class ContentDisposition(hauldtest.HauldTestCase):
    daemon_env = FAST

    def test_names_from_the_header_and_the_job(self):
        job = self.run_job({"urls": [
            self.file_url("url0.png", seed=1, disposition='attachment; filename="from-header.png"'),
            self.file_url("url1.png", seed=2, disposition="attachment; filename*=UTF-8''caf%C3%A9.png"),
            {"url": self.file_url("url2.png", seed=3,
                                  disposition='attachment; filename="hdr.png"; filename*=UTF-8\'\'hdr2.png'),
             "filename": "chosen.png"},
            self.file_url("url3.png", seed=4,
                          disposition='attachment; filename="fallback.png"; filename*=UTF-8\'\'na%C3%AFve.png'),
            self.file_url("url4.png", seed=5, disposition='attachment; filename="../../escape.png"'),
        ]})
        self.assertEqual(job["state"], "succeeded", job)
        items = self.items(job["id"])
        src = source_of(self.origin)
        want = ["from-header.png", "caf\u00e9.png", "chosen.png", "na\u00efve.png", "escape.png"]
        for i, (it, name) in enumerate(zip(items, want)):
            self.assertEqual(it["path"], "%s/%s/%s" % (job["id"], src, name), it)
            self.assert_item_file(it, "url%d.png" % i, seed=i + 1)
        # on disk under exactly these (UTF-8) names, nothing elsewhere
        on_disk = os.listdir(os.fsencode(os.path.join(self.daemon.download_dir, job["id"], src)))
        self.assertEqual(sorted(on_disk), sorted(n.encode("utf-8") for n in want))
        self.assertEqual(files_under(self.daemon.download_dir),
                         sorted(os.path.join(job["id"], src, n) for n in want))


class EmptyBody(hauldtest.HauldTestCase):
    daemon_env = FAST

    def test_empty_body_accepted_with_any(self):
        d = self.new_daemon(dict(FAST, ACCEPT_CONTENT="any"))
        job = self.run_job({"urls": [self.file_url("empty.png", size=0),
                                     self.file_url("emptyc.png", size=0, chunked=1)]}, daemon=d)
        self.assertEqual(job["state"], "succeeded", job)
        items = self.items(job["id"], daemon=d)
        for it in items:
            self.assertEqual(it["state"], "succeeded", it)
            self.assertEqual(it["bytes"], 0, it)
            self.assertEqual(it["sha256"], EMPTY_SHA256, it)
            self.assertEqual(it["attempts"], 1, it)
            self.assertIsNotNone(it["path"], it)
            self.assertEqual(os.path.getsize(self.item_path(it, daemon=d)), 0, it)
        # identical (empty) content is stored once, like any duplicate
        self.assertEqual(job["progress"]["bytes"], 0, job)

    def test_empty_body_is_invalid_content_by_default(self):
        job = self.run_job({"urls": [self.file_url("void.png", size=0, key="void")]})
        self.assertEqual(job["state"], "failed", job)
        (it,) = self.items(job["id"])
        self.assert_item_error(it, "invalid_content")
        self.assertEqual(it["attempts"], 1, it)
        self.assertEqual(self.origin.count(key="void"), 1)
        self.assertEqual(files_under(os.path.join(self.daemon.download_dir, job["id"])), [])


class SameContentTogether(hauldtest.HauldTestCase):
    """Identical bodies that finish at the same moment (the origin holds
    both answers for 0.3 s) under different names are still stored once,
    as when they finish one after the other (test_jobs)."""

    daemon_env = dict(FAST, MAX_CONNECTIONS_PER_SOURCE="16")

    def test_identical_bodies_finishing_together_are_stored_once(self):
        urls = []
        for i in range(8):
            for k, name in (("a", "one%d.png" % i), ("b", "two%d.png" % i)):
                urls.append({"url": self.file_url("p%d.png" % i, size=200, seed=i, delay=0.3, key="p%d%s" % (i, k)),
                             "filename": name})
        job = self.run_job({"urls": urls})
        self.assertEqual(job["state"], "succeeded", job)
        items = self.items(job["id"])
        for a, b in zip(items[::2], items[1::2]):
            self.assertEqual(a["sha256"], b["sha256"], (a, b))
            self.assertEqual(a["path"], b["path"], "same content stored twice: %r %r" % (a, b))
        self.assertEqual(len(files_under(os.path.join(self.daemon.download_dir, job["id"]))), 8)


class BigJob(hauldtest.HauldTestCase):
    daemon_env = dict(FAST, MAX_CONNECTIONS_PER_SOURCE="16")
    N = 2000
    SIZE = 200

    def test_two_thousand_urls(self):
        t0 = time.monotonic()
        urls = [self.file_url("f%04d.png" % i, size=self.SIZE, seed=i) for i in range(self.N)]
        job = self.daemon.post_job({"urls": urls, "max": self.N})
        self.assertEqual(job["progress"]["total"], self.N)
        samples = []
        while True:
            j = self.daemon.get_job(job["id"])
            p = j["progress"]
            samples.append(p)
            self.assertEqual(p["total"], self.N, p)
            self.assertEqual(p["pending"] + p["running"] + p["succeeded"] + p["failed"] + p["skipped"],
                             self.N, p)
            if j["state"] in hauldtest.TERMINAL_STATES:
                break
            self.assertLess(time.monotonic() - t0, 60, "2,000 URLs not done in 60 s: %r" % p)
            time.sleep(0.1)
        self.assertEqual(j["state"], "succeeded", j)
        for a, b in zip(samples, samples[1:]):
            for k in ("succeeded", "bytes", "percent"):
                self.assertLessEqual(a[k], b[k], "progress went backwards in %s: %r -> %r" % (k, a, b))
        mid = [p for p in samples if 0 < p["succeeded"] < self.N]
        self.assertGreaterEqual(len(mid), 2, "too few samples while running: %r" % samples)
        self.assertLess(mid[0]["succeeded"], mid[-1]["succeeded"], mid)
        self.assertEqual(j["progress"]["succeeded"], self.N)
        self.assertEqual(j["progress"]["bytes"], self.N * self.SIZE)
        self.assertEqual(j["progress"]["percent"], 100.0)
        # items page fully with the cursor, at an odd page size
        seen, cursor, pages = [], None, 0
        while True:
            q = {"limit": 137}
            if cursor:
                q["cursor"] = cursor
            st, _h, page = self.daemon.get("/v1/jobs/%s/items?%s" % (job["id"], urllib.parse.urlencode(q)))
            self.assertEqual(st, 200, page)
            seen += page["items"]
            pages += 1
            cursor = page["next_cursor"]
            if not cursor:
                break
        self.assertEqual(pages, math.ceil(self.N / 137))
        self.assertEqual([it["index"] for it in seen], list(range(self.N)))
        for it in seen:
            self.assertEqual((it["state"], it["bytes"]), ("succeeded", self.SIZE), it)
        for i in range(0, self.N, 97):
            self.assert_item_file(seen[i], "f%04d.png" % i, size=self.SIZE, seed=i)
        self.assertEqual(len(files_under(os.path.join(self.daemon.download_dir, job["id"]))), self.N)
        self.assertEqual(self.origin.count(), self.N)


class Priority(hauldtest.HauldTestCase):
    # one job at a time: a queued job waits, and the queue is taken by priority
    daemon_env = dict(FAST, MAX_CONCURRENT_JOBS="1", MAX_CONNECTIONS_PER_SOURCE="2")

    def test_high_priority_overtakes_a_queued_big_job(self):
        d = self.daemon
        blocker = d.post_job({"urls": [self.file_url("block.png", delay=1.5)]})
        d.wait_job(blocker["id"], states="running", timeout=10)
        low = d.post_job({"urls": [self.file_url("low%02d.png" % i, seed=i) for i in range(30)],
                          "priority": -3})
        high = d.post_job({"urls": [self.file_url("high.png", seed=99)], "priority": 3})
        self.assertEqual(d.get_job(low["id"])["state"], "queued", "the low job was not held back")
        jobs = {name: d.wait_job(j["id"], timeout=30) for name, j in
                (("blocker", blocker), ("low", low), ("high", high))}
        for name, j in jobs.items():
            self.assertEqual(j["state"], "succeeded", (name, j))
        self.assertLess(parse_rfc3339(jobs["high"]["started_at"]), parse_rfc3339(jobs["low"]["started_at"]),
                        jobs)
        # what the origin saw: the high job's file before any of the low job's
        order = [r["path"] for r in self.origin.requests()]
        first_low = min(i for i, p in enumerate(order) if p.startswith("/file/low"))
        self.assertLess(order.index("/file/high.png"), first_low, order)


class Unresolvable(hauldtest.HauldTestCase):
    daemon_env = dict(FAST, MAX_RETRIES_PER_SOURCE="2")

    def check(self, d):
        t0 = time.monotonic()
        job = self.run_job({"urls": ["http://nonexistent.invalid/x.png"]}, daemon=d, timeout=40)
        self.assertEqual(job["state"], "failed", job)
        self.assertEqual(job["error"]["code"], "all_failed", job)
        (it,) = self.items(job["id"], daemon=d)
        self.assert_item_error(it, "connect")
        self.assertEqual(it["attempts"], 3, it)  # 1 + MAX_RETRIES_PER_SOURCE
        self.assertEqual(job["per_source"][0]["source"], "nonexistent.invalid", job)
        self.assertEqual(job["per_source"][0]["retries"], 2, job)
        self.assertLess(time.monotonic() - t0, 30)

    def test_host_that_does_not_resolve_is_connect(self):
        self.check(self.daemon)

    def test_same_without_private_addresses(self):
        self.check(self.new_daemon(dict(self.daemon_env, ALLOW_PRIVATE_ADDRESSES="false")))


class RetryAfterDate(hauldtest.HauldTestCase):
    daemon_env = FAST

    def test_http_date_is_honoured(self):
        when = math.ceil(time.time()) + 2  # 2..3 s from now, on a whole second
        date = email.utils.formatdate(when, usegmt=True)  # IMF-fixdate
        job = self.run_job({"urls": [self.file_url("rad.png", size=3000, fail=1, key="rad", status=503,
                                                   retry_after=date)]})
        self.assertEqual(job["state"], "succeeded", job)
        reqs = self.origin.requests(key="rad")
        self.assertEqual(len(reqs), 2, reqs)
        gap = reqs[1]["time"] - reqs[0]["time"]
        self.assertGreaterEqual(gap, 1.5, "retried %.2f s after Retry-After: %s" % (gap, date))
        self.assertGreaterEqual(reqs[1]["wall"], when - 0.5, "retried before the date %s" % date)
        self.assertLess(gap, 10, "retried %.2f s after Retry-After: %s" % (gap, date))
        (it,) = self.items(job["id"])
        self.assert_item_file(it, "rad.png", size=3000)
        self.assertEqual(it["attempts"], 2, it)

    def test_far_http_date_is_capped_by_backoff_max(self):
        d = self.new_daemon(dict(FAST, RETRY_BACKOFF_MAX="1.5"))
        date = email.utils.formatdate(time.time() + 3600, usegmt=True)
        job = self.run_job({"urls": [self.file_url("far.png", fail=1, key="far", status=429,
                                                   retry_after=date)]}, daemon=d)
        self.assertEqual(job["state"], "succeeded", job)
        reqs = self.origin.requests(key="far")
        self.assertEqual(len(reqs), 2, reqs)
        gap = reqs[1]["time"] - reqs[0]["time"]
        self.assertGreaterEqual(gap, 1.0, "retried %.2f s after an hour's Retry-After" % gap)
        self.assertLess(gap, 6.0, "Retry-After of an hour not capped by RETRY_BACKOFF_MAX=1.5: %.2f s" % gap)


if __name__ == "__main__":
    hauldtest.main()
