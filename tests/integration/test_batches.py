"""Jobs of many explicit URLs never drop healthy work: max defaults to the
URLs given, one host's failures do not open its circuit when its other
URLs succeed, SOURCE_TIMEOUT does not cut an explicit-URL job, an open
circuit defers its items until its probe decides, a job ends at once when
max is reached, MAX_CONCURRENT_SOURCES is per job, and the error codes of
docs/api.md are the ones hauld writes.

Where a default timing would take minutes, the test scales the settings
down (backoffs of tens of milliseconds, open times of seconds, timeouts of
one or two seconds) and says so; the rule under test is the same."""

import datetime
import os
import re
import time
import unittest
import urllib.parse

import hauldtest

# Backoffs scaled down from 1 s base / 60 s cap: the retry counts stay
# the defaults (MAX_RETRIES_PER_SOURCE=3, MAX_RETRIES_PER_ITEM=2).
QUICK_BACKOFF = {"RETRY_BACKOFF_BASE": "0.05", "RETRY_BACKOFF_MAX": "0.4"}


def source_of(origin):
    return "127.0.0.1:%d" % origin.port


def wall(ts):
    """An RFC 3339 time of the API as seconds since the epoch."""
    return datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def job_seconds(job):
    return wall(job["finished_at"]) - wall(job["started_at"])


def circuit(daemon, name):
    st, _h, data = daemon.get("/v1/circuits")
    assert st == 200, data
    found = [c for c in data["circuits"] if c["source"] == name]
    return found[0] if found else None


def part_files(root):
    out = []
    for d, _dirs, files in os.walk(root):
        out += [os.path.join(d, f) for f in files if f.endswith(".part")]
    return out


class Search:
    """A fake search API on an origin: /search/NAME lists `total` image
    URLs of its own (/file/NAME-Q-I.png) in pages of per_page."""

    def __init__(self, origin, total=20):
        self.origin = origin
        self.total = total
        origin.add_route("/search/", self.answer)

    def answer(self, handler, path, params):
        name = path.rsplit("/", 1)[-1]
        page = int(params.get("page", "1"))
        per_page = int(params.get("per_page", "5"))
        q = params.get("q", "")
        first = (page - 1) * per_page
        results = [{"url": self.origin.url("/file/%s-%s-%d.png" % (name, q, i), size=1200, seed=i)}
                   for i in range(first, min(first + per_page, self.total))]
        handler.send_json({"results": results})

    def source(self, name, per_page=5, **params):
        """A source file listing /search/NAME; params (e.g. delay=60) go
        into its search URL, so the origin applies them to each page."""
        extra = "".join("&%s=%s" % kv for kv in sorted(params.items()))
        return {"search_url": self.origin.base_url + "/search/" + name +
                "?q={query}&page={page}&per_page={per_page}" + extra,
                "per_page": per_page, "items": "/results", "url": "/url"}

    def listings(self, name, q=None):
        """The origin's log entries of NAME's listing requests (for query q)."""
        return [r for r in self.origin.requests(path="/search/" + name)
                if q is None or r["params"].get("q") == q]


class BatchCase(hauldtest.HauldTestCase):
    start_daemon = False

    def setUp(self):
        super().setUp()
        self.search = Search(self.origin)

    def start(self, env=None, **sources):
        d = hauldtest.Daemon(env, start=False)
        self._daemons.append(d)
        self.addCleanup(d.stop)
        for name, spec in sources.items():
            d.write_source(name, spec)
        d.start()
        return d


# ---- 1. max defaults to the URLs given ---------------------------------------

class MaxDefaults(BatchCase):

    def test_80_urls_without_max_all_download(self):
        d = self.start()
        urls = [self.file_url("m%02d.png" % i, seed=i) for i in range(80)]
        job = d.post_job({"urls": urls})
        self.assertEqual(job["max"], 80, job)
        job = d.wait_job(job["id"], timeout=60)
        self.assertEqual(job["state"], "succeeded", job)
        self.assertEqual(job["max"], 80)
        self.assertEqual(job["progress"]["succeeded"], 80, job["progress"])
        self.assertEqual(job["progress"]["skipped"], 0, job["progress"])
        items = d.items(job["id"])
        self.assertEqual(len(items), 80)
        for i, it in enumerate(items):
            self.assert_item_file(it, "m%02d.png" % i, seed=i, daemon=d)

    def test_explicit_max_below_the_urls_skips_the_rest_as_max_reached(self):
        d = self.start(dict(MAX_CONNECTIONS_PER_SOURCE="1"))
        urls = [self.file_url("e%02d.png" % i, seed=i) for i in range(12)]
        job = d.post_job({"urls": urls, "max": 3})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(job["state"], "succeeded", job)  # max_reached does not make it partial
        self.assertIsNone(job["error"], job)
        self.assertEqual(job["progress"]["succeeded"], 3, job["progress"])
        self.assertEqual(job["progress"]["skipped"], 9, job["progress"])
        items = d.items(job["id"])
        for it in items[3:]:
            self.assert_item_error(it, "max_reached", state="skipped")
            self.assertEqual(it["attempts"], 0, it)
        self.assertEqual(self.origin.count(), 3)  # no request beyond max

    def test_defaults_with_a_query_and_their_edges(self):
        d = self.start(None, pics=self.search.source("pics"))
        urls = [self.file_url("q%d.png" % i, delay=30) for i in range(3)]
        cases = [({"urls": urls}, 3),
                 ({"query": "x", "sources": ["pics"]}, 50),
                 ({"query": "x", "sources": ["pics"], "urls": urls}, 53),
                 ({"query": "x", "sources": ["pics"], "urls": urls, "max": 1}, 1)]
        for body, want in cases:
            job = d.post_job(body)
            self.assertEqual(job["max"], want, body)
            self.assertEqual(d.get_job(job["id"])["max"], want, body)
            d.post("/v1/jobs/%s/cancel" % job["id"])
        # 10000 URLs and a query: capped at the largest max, 10000
        many = [self.origin.url("/file/n%05d.png" % i, delay=30) for i in range(10000)]
        job = d.post_job({"query": "x", "sources": ["pics"], "urls": many})
        self.assertEqual(job["max"], 10000)
        d.post("/v1/jobs/%s/cancel" % job["id"])
        for bad in (0, 10001):
            self.assert_problem(d.request("POST", "/v1/jobs", body={"urls": urls, "max": bad}), 400,
                                field="max")


# ---- 2. one host, a few failing URLs ---------------------------------------

class FailuresAmongHealthy(BatchCase):

    def test_five_failing_urls_among_80_do_not_open_the_circuit(self):
        # retry counts are the defaults (4 attempts a round, 3 rounds), the
        # backoffs scaled down to 50..400 ms; CIRCUIT_BREAKER_THRESHOLD is
        # the default 5: had each attempt counted, it would open
        d = self.start(dict(QUICK_BACKOFF))
        attempts = (1 + 3) * (1 + 2)
        bad = set(range(0, 80, 16))
        urls = [self.origin.url("/file/b%02d.png" % i, status=500) if i in bad
                else self.file_url("h%02d.png" % i, seed=i) for i in range(80)]

        # the healthy files alone, for the time they take
        healthy = d.post_job({"urls": [u for i, u in enumerate(urls) if i not in bad]})
        healthy = d.wait_job(healthy["id"], timeout=60)
        self.assertEqual(healthy["state"], "succeeded", healthy)
        healthy_s = job_seconds(healthy)

        job = d.post_job({"urls": urls})
        job = d.wait_job(job["id"], timeout=60)
        self.assertEqual(job["state"], "partial", job)
        self.assertEqual(job["progress"]["succeeded"], 75, job["progress"])
        self.assertEqual(job["progress"]["failed"], 5, job["progress"])
        self.assertEqual(job["progress"]["skipped"], 0, job["progress"])
        items = d.items(job["id"])
        for i, it in enumerate(items):
            if i in bad:
                self.assert_item_error(it, "http_5xx")
                self.assertEqual(it["attempts"], attempts, it)
                self.assertEqual(self.origin.count(path="/file/b%02d.png" % i), attempts)
            else:
                self.assert_item_file(it, "h%02d.png" % i, seed=i, daemon=d)
        c = circuit(d, source_of(self.origin))
        self.assertEqual(c["state"], "closed", c)
        self.assertEqual(c["trips"], 0, c)
        self.assertEqual(job["per_source"][0]["circuit"], "closed")

        # each failing URL waited its backoffs: 3 rounds of 50+100+200 ms
        # and 2 new rounds of 400 ms, each delay jittered to 50..100 %
        least, most = 0.5 * (3 * 0.35 + 2 * 0.4), 3 * 0.35 + 2 * 0.4
        for i in bad:
            reqs = self.origin.requests(path="/file/b%02d.png" % i)
            span = reqs[-1]["time"] - reqs[0]["time"]
            self.assertGreaterEqual(span, least - 0.05, "item %d retried over %.2f s" % (i, span))
        took = job_seconds(job)
        self.assertLess(took, healthy_s + most + 3.0,
                        "the job took %.1f s; the healthy files %.1f s and the retries at most %.1f s"
                        % (took, healthy_s, most))


# ---- 3. SOURCE_TIMEOUT does not cut explicit URLs ---------------------------

class ExplicitUrlsAndSourceTimeout(BatchCase):

    def test_more_work_than_source_timeout_on_one_host_is_not_cut(self):
        # SOURCE_TIMEOUT scaled from 30 s to 1 s; the job's work on its one
        # host (6 files of 0.5 s, one connection) is three times as long
        d = self.start(dict(SOURCE_TIMEOUT="1", MAX_CONNECTIONS_PER_SOURCE="1"))
        urls = [self.file_url("st%d.png" % i, seed=i, delay=0.5) for i in range(6)]
        job = d.post_job({"urls": urls})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(job["state"], "succeeded", job)
        self.assertGreaterEqual(job_seconds(job), 2.9, job)
        (ps,) = job["per_source"]
        self.assertEqual(ps["state"], "done", ps)
        self.assertIsNone(ps["error"], ps)
        for i, it in enumerate(d.items(job["id"])):
            self.assert_item_file(it, "st%d.png" % i, seed=i, daemon=d)
            self.assertEqual(it["attempts"], 1, it)
        self.assertNotIn("TIMEOUT source", d.log_text())


# ---- 4, 5, 12. circuits defer their items -------------------------------------

class CircuitsDefer(BatchCase):

    def test_half_open_sends_one_probe_then_the_waiting_items(self):
        # CIRCUIT_BREAKER_THRESHOLD 2 and CIRCUIT_BREAKER_TIMEOUT 2 s (from
        # 5 and 60 s); no retries, so the two failing URLs fail once each
        d = self.start(dict(QUICK_BACKOFF, CIRCUIT_BREAKER_THRESHOLD="2", CIRCUIT_BREAKER_TIMEOUT="2",
                            MAX_RETRIES_PER_SOURCE="0", MAX_RETRIES_PER_ITEM="0"))
        urls = [self.origin.url("/bad%d" % i, status=500) for i in range(2)] + \
               [self.file_url("w%d.png" % i, seed=i, delay=0.5) for i in range(8)]
        job = d.post_job({"urls": urls, "timeout": 60})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(job["state"], "partial", job)
        items = d.items(job["id"])
        for it in items[:2]:
            self.assert_item_error(it, "http_5xx")
        for i, it in enumerate(items[2:]):
            self.assert_item_file(it, "w%d.png" % i, seed=i, daemon=d)
            self.assertEqual(it["attempts"], 1, it)
        c = circuit(d, source_of(self.origin))
        self.assertEqual((c["state"], c["trips"]), ("closed", 1), c)

        opened = max(r["time"] for r in self.origin.requests() if r["path"].startswith("/bad"))
        # the files asked for after the circuit opened: those in flight
        # when it opened finished (two, or three when a slot freed by the
        # first failure started one more), the rest waited
        files = [r["time"] for r in self.origin.requests() if r["path"].startswith("/file/w")]
        self.assertEqual(len(files), 8, files)
        later = sorted(t for t in files if t > opened + 1.0)
        self.assertIn(len(later), (5, 6), files)
        probe = later[0]
        self.assertGreaterEqual(probe - opened, 1.9, "the probe went %.2f s after the opening"
                                % (probe - opened))
        # the probe alone until it answered (0.5 s), then the others
        self.assertGreaterEqual(later[1] - probe, 0.45, "a second request %.2f s after the probe"
                                % (later[1] - probe))
        self.assertIn("CIRCUIT BREAKER closed for %s (probe succeeded)" % source_of(self.origin),
                      d.log_text())

    def test_failed_probe_opens_the_circuit_again_and_the_others_keep_waiting(self):
        # CIRCUIT_BREAKER_TIMEOUT 1 s, THRESHOLD 3; the host stays dead. The
        # probe at 1 s fails: open again for 2 s; the probe at 3 s fails:
        # open for 4 s, past the job's 6 s deadline, so the items still
        # waiting are skipped then. Nothing but the probes reaches the host.
        d = self.start(dict(QUICK_BACKOFF, CIRCUIT_BREAKER_THRESHOLD="3", CIRCUIT_BREAKER_TIMEOUT="1",
                            MAX_RETRIES_PER_SOURCE="3", MAX_RETRIES_PER_ITEM="0"))
        dead = hauldtest.FakeOrigin().start()
        self.addCleanup(dead.stop)
        host = source_of(dead)
        job = d.post_job({"urls": [dead.url("/x%d" % i, status=500) for i in range(6)], "timeout": 6})
        d.wait_for(lambda: (circuit(d, host) or {}).get("state") == "open", timeout=10,
                   what="the circuit of %s open" % host)
        opened = time.monotonic()
        first = dead.count()
        job = d.wait_job(job["id"], timeout=20)
        later = [r["time"] - opened for r in dead.requests()[first:]]
        self.assertEqual(len(later), 2, "requests after the opening, in s from it: %s"
                         % ", ".join("%.2f" % t for t in later))
        self.assertGreaterEqual(later[0], 0.8, later)
        self.assertGreaterEqual(later[1] - later[0], 1.8, later)  # open twice as long
        c = circuit(d, host)
        self.assertEqual((c["state"], c["trips"]), ("open", 3), c)
        self.assertEqual(job["state"], "failed", job)
        for it in d.items(job["id"]):
            self.assertEqual(it["error"]["code"], "http_5xx", it)
            self.assertLess(it["attempts"], 4, it)  # none spent its attempts against the open circuit
        self.assertTrue(any(it["state"] == "skipped" and "the circuit of %s is open" % host
                            in it["error"]["message"] for it in d.items(job["id"])))

    def test_dead_host_open_past_the_deadline_skips_at_once(self):
        # CIRCUIT_BREAKER_THRESHOLD 3 (from 5): it opens for 60 s, the job
        # has 20 s; no request is made after the opening
        d = self.start(dict(QUICK_BACKOFF, CIRCUIT_BREAKER_THRESHOLD="3", MAX_RETRIES_PER_ITEM="0"))
        dead = hauldtest.FakeOrigin().start()
        self.addCleanup(dead.stop)
        host = source_of(dead)
        t0 = time.monotonic()
        job = d.post_job({"urls": [dead.url("/d%d" % i, status=500) for i in range(10)], "timeout": 20})
        job = d.wait_job(job["id"], timeout=30)
        self.assertLess(time.monotonic() - t0, 5.0, "the job waited for its deadline")
        self.assertEqual(job["state"], "failed", job)
        self.assertEqual(job["error"]["code"], "all_failed", job)
        items = d.items(job["id"])
        tried = [it for it in items if it["attempts"] > 0]
        never = [it for it in items if it["attempts"] == 0]
        # the threshold's worth, and at most the others in flight then
        # (MAX_CONNECTIONS_PER_SOURCE - 1)
        self.assertGreaterEqual(len(tried), 3)
        self.assertLessEqual(len(tried), 3 + 4 - 1)
        self.assertEqual(dead.count(), sum(it["attempts"] for it in tried))
        for it in tried:  # their real error stays, with why they were not tried again
            self.assertIn(it["state"], ("failed", "skipped"), it)
            self.assertEqual(it["error"]["code"], "http_5xx", it)
            self.assertIn("the circuit of %s is open" % host, it["error"]["message"])
        for it in never:
            self.assert_item_error(it, "circuit_open", state="skipped")
            self.assertIn("the circuit of %s is open" % host, it["error"]["message"])
            self.assertIn("after the job's timeout", it["error"]["message"])
        c = circuit(d, host)
        self.assertEqual((c["state"], c["trips"]), ("open", 1), c)

    def test_dead_host_open_shorter_than_the_job_waits_and_recovers(self):
        # CIRCUIT_BREAKER_TIMEOUT 2 s (from 60 s), the job has 30 s: the
        # items wait for the probe instead of being skipped, and hold no
        # transfer slot meanwhile (MAX_CONCURRENT_DOWNLOADS 2: the healthy
        # host's files go while they wait)
        d = self.start(dict(QUICK_BACKOFF, CIRCUIT_BREAKER_THRESHOLD="3", CIRCUIT_BREAKER_TIMEOUT="2",
                            MAX_RETRIES_PER_SOURCE="2", MAX_RETRIES_PER_ITEM="0",
                            MAX_CONCURRENT_DOWNLOADS="2"))
        dead = hauldtest.FakeOrigin().start()
        self.addCleanup(dead.stop)
        host = source_of(dead)
        paths = ["/file/r%d.png" % i for i in range(6)]
        for p in paths:
            dead.set_override(p, status="500")
        healthy = [self.file_url("ok%d.png" % i, seed=i, delay=0.2) for i in range(4)]
        job = d.post_job({"urls": [dead.url(p, size=1024) for p in paths] + healthy, "timeout": 30})
        d.wait_for(lambda: (circuit(d, host) or {}).get("state") == "open", timeout=10,
                   what="the circuit of %s open" % host)
        opened = time.monotonic()
        before = dead.count()
        for p in paths:
            dead.set_override(p)  # the host recovers
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(job["state"], "succeeded", job)
        items = d.items(job["id"])
        for i, it in enumerate(items[:6]):
            self.assert_item_file(it, "r%d.png" % i, daemon=d)
        for i, it in enumerate(items[6:]):
            self.assert_item_file(it, "ok%d.png" % i, seed=i, daemon=d)
        after = [r["time"] for r in dead.requests()][before:]
        self.assertEqual(len(after), 6, after)  # each item once more, after the probe
        self.assertGreaterEqual(min(after) - opened, 1.5, "a request %.2f s after the opening"
                                % (min(after) - opened))
        ok_times = [r["time"] for r in self.origin.requests() if r["path"].startswith("/file/ok")]
        self.assertEqual(len(ok_times), 4)
        self.assertLess(max(ok_times), min(after), "the healthy host's files waited for the probe")
        c = circuit(d, host)
        self.assertEqual((c["state"], c["trips"]), ("closed", 1), c)

    def test_retry_of_a_finished_job_while_the_circuit_is_open_waits_for_it(self):
        # CIRCUIT_BREAKER_THRESHOLD 2, CIRCUIT_BREAKER_TIMEOUT 3 s; each
        # URL answers 503 once, then 200
        d = self.start(dict(QUICK_BACKOFF, CIRCUIT_BREAKER_THRESHOLD="2", CIRCUIT_BREAKER_TIMEOUT="3",
                            MAX_RETRIES_PER_SOURCE="0", MAX_RETRIES_PER_ITEM="0"))
        urls = [self.file_url("rt%d.png" % i, seed=i, fail=1, key="rt%d" % i) for i in range(3)]
        job = d.post_job({"urls": urls})
        job = d.wait_job(job["id"], timeout=20)
        self.assertEqual(job["state"], "failed", job)
        c = circuit(d, source_of(self.origin))
        self.assertEqual(c["state"], "open", c)

        retried_at = time.time()
        st, _h, data = d.post("/v1/jobs/%s/retry" % job["id"])
        self.assertEqual(st, 200, data)
        self.assertIn(data["state"], ("queued", "running"), data)
        self.assertEqual(circuit(d, source_of(self.origin))["state"], "open")
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(job["state"], "succeeded", job)
        for i, it in enumerate(d.items(job["id"])):
            self.assert_item_file(it, "rt%d.png" % i, seed=i, daemon=d)
            self.assertEqual(it["attempts"], 1, it)  # its attempts since the retry
        for i in range(3):
            (first, second) = self.origin.requests(key="rt%d" % i)
            self.assertGreaterEqual(second["wall"], wall(c["retry_at"]) - 0.1,
                                    "item %d was tried before the circuit's probe time" % i)
            self.assertGreater(second["wall"], retried_at)
        self.assertEqual(circuit(d, source_of(self.origin))["state"], "closed")


# ---- 6, 7. max reached, hung sources ---------------------------------------------

class HungSources(BatchCase):

    def test_max_reached_ends_the_job_while_a_listing_hangs(self):
        d = self.start(None, fast=self.search.source("fast"), hung=self.search.source("hung", delay=60))
        job = d.post_job({"query": "cat", "sources": ["hung", "fast"], "max": 5})
        job = d.wait_job(job["id"], timeout=20)
        self.assertEqual(job["state"], "succeeded", job)
        self.assertIsNone(job["error"], job)
        self.assertEqual(job["progress"]["succeeded"], 5, job["progress"])
        self.assertLess(job_seconds(job), 5.0, job)
        self.assertEqual(len(self.search.listings("hung")), 1)  # it was asked, and never answered
        by = {ps["source"]: ps for ps in job["per_source"]}
        self.assertEqual(by["fast"]["succeeded"], 5)
        hung = by["hung"]
        self.assertEqual(hung["state"], "done", hung)
        self.assertEqual(hung["listing"], "max_reached", hung)
        self.assertEqual(hung["pages"], 0, hung)
        self.assertEqual(hung["items"], 0, hung)
        # it ended within a second of the fifth file's end
        ok = [it for it in d.items(job["id"]) if it["state"] == "succeeded"]
        ends = []
        for it in ok:
            (req,) = self.origin.requests(path=urllib.parse.urlsplit(it["url"]).path)
            ends.append(req["wall"] + it["duration_ms"] / 1000.0)
        late = wall(job["finished_at"]) - max(ends)
        self.assertLess(late, 1.0, "the job ended %.2f s after max was reached" % late)
        self.assertEqual(part_files(d.download_dir), [])
        self.assertEqual(sorted(os.listdir(os.path.join(d.download_dir, job["id"]))), ["fast"])

    def test_url_job_after_a_job_with_hung_sources_finishes_at_once(self):
        # MAX_CONCURRENT_SOURCES 2: the first job's two hung sources use it
        # up; it bounds that job only
        d = self.start(dict(MAX_CONCURRENT_SOURCES="2"), h1=self.search.source("h1", delay=60),
                       h2=self.search.source("h2", delay=60))
        first = d.post_job({"query": "dog", "sources": ["h1", "h2"]})
        self.assertTrue(self.origin.wait_for(1, path="/search/h1") and
                        self.origin.wait_for(1, path="/search/h2"), "the hung listings were not asked")
        second = d.post_job({"urls": [self.file_url("after%d.png" % i, seed=i) for i in range(3)]})
        second = d.wait_job(second["id"], timeout=20)
        self.assertEqual(second["state"], "succeeded", second)
        self.assertLess(job_seconds(second), 3.0, second)
        self.assertEqual(d.get_job(first["id"])["state"], "running")
        st, _h, data = d.post("/v1/jobs/%s/cancel" % first["id"])
        self.assertEqual(st, 200, data)


# ---- 8. stalls and source timeouts -----------------------------------------------

class Stalls(BatchCase):
    # STALL_TIMEOUT and SOURCE_TIMEOUT both scaled from 30 s to 2 s,
    # MIN_DOWNLOAD_SPEED the default 1024 B/s
    ENV = dict(QUICK_BACKOFF, STALL_TIMEOUT="2", SOURCE_TIMEOUT="2", MIN_DOWNLOAD_SPEED="1024",
               MAX_RETRIES_PER_SOURCE="1", MAX_RETRIES_PER_ITEM="0")

    def test_slow_download_is_stalled_and_retried_not_source_timeout(self):
        d = self.start(self.ENV)
        job = d.post_job({"urls": [self.file_url("slow.png", size=100000, drip=500)]})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(job["state"], "failed", job)
        (it,) = d.items(job["id"])
        self.assert_item_error(it, "stalled")
        self.assertEqual(it["attempts"], 2, it)
        self.assertIn("below MIN_DOWNLOAD_SPEED", it["error"]["message"])
        self.assertGreaterEqual(job_seconds(job), 3.5, job)  # two stalls: past SOURCE_TIMEOUT
        (ps,) = job["per_source"]
        self.assertEqual(ps["state"], "done", ps)
        self.assertEqual(self.origin.count(path="/file/slow.png"), 2)
        self.assertEqual(len(re.findall(r"RETRY Attempt 2/2 for \S*slow.png\S* after \S+ \(stalled: ",
                                        d.log_text())), 1)

    def test_query_source_download_is_cut_by_source_timeout(self):
        # 2000 B/s is above MIN_DOWNLOAD_SPEED; the 100 KB file takes 50 s
        d = self.start(self.ENV, drip=self.search.source("drip", per_page=1))
        self.origin.add_route("/search/drip", lambda h, path, p: h.send_json(
            {"results": [{"url": self.file_url("qslow.png", size=100000, drip=2000)}]}))
        job = d.post_job({"query": "slow", "sources": ["drip"], "max": 1})
        job = d.wait_job(job["id"], timeout=10)
        self.assertEqual(job["state"], "failed", job)
        (it,) = d.items(job["id"])
        self.assert_item_error(it, "source_timeout", state="skipped")
        self.assertIn("SOURCE_TIMEOUT 2 s", it["error"]["message"])
        (ps,) = job["per_source"]
        self.assertEqual(ps["state"], "timed_out", ps)
        self.assertEqual(ps["error"]["code"], "source_timeout", ps)
        self.assertLess(job_seconds(job), 4.0, job)
        self.assertEqual(part_files(d.download_dir), [])

    def test_hung_listing_of_a_query_source_ends_at_source_timeout(self):
        # only SOURCE_TIMEOUT scaled down (2 s): STALL_TIMEOUT (30 s) and
        # REQUEST_TIMEOUT (15 s) would end the listing much later
        d = self.start(dict(SOURCE_TIMEOUT="2"), hung=self.search.source("hung", delay=60))
        job = d.post_job({"query": "slow", "sources": ["hung"]})
        job = d.wait_job(job["id"], timeout=10)
        self.assertEqual(job["state"], "failed", job)
        (ps,) = job["per_source"]
        self.assertEqual(ps["state"], "timed_out", ps)
        self.assertEqual(ps["error"]["code"], "source_timeout", ps)
        self.assertIn("SOURCE_TIMEOUT 2 s", ps["error"]["message"])
        self.assertLess(job_seconds(job), 4.0, job)


# ---- 9. per-job limits ------------------------------------------------------------

class JobLimits(BatchCase):

    def test_job_limits_show_and_take_effect(self):
        # MAX_RETRIES_PER_ITEM 0: a job's max_retries is the retries of each
        # request (MAX_RETRIES_PER_SOURCE); rounds come on top of it
        d = self.start(dict(QUICK_BACKOFF, MAX_RETRIES_PER_SOURCE="2", MAX_RETRIES_PER_ITEM="0"))
        # request_timeout 1 s cuts the late answer before the 2 s stall
        # window could; the drip sends every 0.1 s, too slow for 2 s
        limits = {"source_timeout": 20, "request_timeout": 1, "stall_timeout": 2, "max_retries": 0}
        urls = [self.origin.url("/busy", status=503),
                self.file_url("late.png", delay=3),
                self.file_url("drip.png", size=50000, drip=500)]
        job = d.post_job(dict(limits, urls=urls))
        for k, v in limits.items():
            self.assertEqual(job[k], v, job)
        t0 = time.monotonic()
        job = d.wait_job(job["id"], timeout=30)
        self.assertLess(time.monotonic() - t0, 8.0)
        for k, v in limits.items():
            self.assertEqual(job[k], v, job)
        busy, late, drip = d.items(job["id"])
        self.assert_item_error(busy, "http_5xx")
        self.assertEqual(busy["attempts"], 1, busy)
        self.assert_item_error(late, "timeout")
        self.assertEqual(late["attempts"], 1, late)
        self.assert_item_error(drip, "stalled")
        self.assertEqual(drip["attempts"], 1, drip)
        self.assertIn("job %s: CONFIG: MAX_CONCURRENT_SOURCES=5, SOURCE_TIMEOUT=20s" % job["id"], d.log_text())

        # the same without them: the settings apply
        job = d.post_job({"urls": [self.origin.url("/busy2", status=503)]})
        for k in limits:
            self.assertIsNone(job[k], job)
        job = d.wait_job(job["id"], timeout=30)
        (busy,) = d.items(job["id"])
        self.assertEqual(busy["attempts"], 3, busy)

        # source_timeout bounds an explicit-URL job's host when set
        job = d.post_job({"urls": [self.file_url("long.png", delay=20)], "source_timeout": 1.5,
                          "request_timeout": 30})
        job = d.wait_job(job["id"], timeout=20)
        (it,) = d.items(job["id"])
        self.assert_item_error(it, "source_timeout", state="skipped")
        self.assertLess(job_seconds(job), 4.0, job)

        # their ranges, at and past the edges
        url = [self.file_url("edge.png")]
        for field, bad in (("source_timeout", 0), ("source_timeout", 86401), ("request_timeout", 0.05),
                           ("request_timeout", 3601), ("stall_timeout", 0.5), ("stall_timeout", 3601),
                           ("max_retries", -1), ("max_retries", 101), ("max_retries", 1.5),
                           ("source_timeout", "10")):
            self.assert_problem(d.request("POST", "/v1/jobs", body={"urls": url, field: bad}), 400,
                                field=field)
        job = d.post_job({"urls": url, "source_timeout": 86400, "request_timeout": 3600, "stall_timeout": 3600,
                          "max_retries": 100})
        self.assertEqual((job["source_timeout"], job["request_timeout"], job["stall_timeout"],
                          job["max_retries"]), (86400, 3600, 3600, 100))
        job = d.post_job({"urls": url, "request_timeout": 0.1, "stall_timeout": 1, "source_timeout": 1,
                          "max_retries": 0})
        self.assertEqual((job["request_timeout"], job["max_retries"]), (0.1, 0))


# ---- 10. MAX_CONCURRENT_SOURCES per job, MAX_CONCURRENT_JOBS ------------------------

class Concurrency(BatchCase):

    def test_max_concurrent_sources_is_per_job(self):
        # listings of 1.5 s each; MAX_CONCURRENT_SOURCES 1
        d = self.start(dict(MAX_CONCURRENT_SOURCES="1"), slow=self.search.source("slow", delay=1.5),
                       quick=self.search.source("quick"))
        self.search.total = 2
        a = d.post_job({"query": "one", "sources": ["slow"]})
        b = d.post_job({"query": "two", "sources": ["slow"]})
        a, b = d.wait_job(a["id"], timeout=20), d.wait_job(b["id"], timeout=20)
        self.assertEqual((a["state"], b["state"]), ("succeeded", "succeeded"), (a, b))
        (la,), (lb,) = self.search.listings("slow", "one")[:1], self.search.listings("slow", "two")[:1]
        # both asked before either answered
        self.assertLess(abs(la["time"] - lb["time"]), 1.4,
                        "the second job's listing waited %.2f s for the first's" % abs(la["time"] - lb["time"]))

        # within one job, one query source at a time
        c = d.post_job({"query": "three", "sources": ["slow", "quick"]})
        c = d.wait_job(c["id"], timeout=20)
        self.assertEqual(c["state"], "succeeded", c)
        (ls,), (lq,) = self.search.listings("slow", "three")[:1], self.search.listings("quick", "three")[:1]
        self.assertGreaterEqual(lq["time"] - ls["time"], 1.4,
                                "the job's second source started %.2f s after its first" % (lq["time"] - ls["time"]))

    def test_max_concurrent_jobs_holds_the_second_job_queued(self):
        d = self.start(dict(MAX_CONCURRENT_JOBS="1"), slow=self.search.source("slow", delay=1.5))
        self.search.total = 2
        a = d.post_job({"query": "first", "sources": ["slow"]})
        b = d.post_job({"query": "second", "sources": ["slow"]})
        d.wait_for(lambda: d.get_job(a["id"])["state"] == "running", timeout=5, what="the first job running")
        self.assertEqual(d.get_job(b["id"])["state"], "queued")
        a = d.wait_job(a["id"], timeout=20)
        b = d.wait_job(b["id"], timeout=20)
        self.assertEqual((a["state"], b["state"]), ("succeeded", "succeeded"), (a, b))
        (lb,) = self.search.listings("slow", "second")[:1]
        self.assertGreaterEqual(lb["wall"], wall(a["finished_at"]) - 0.05)
        self.assertGreaterEqual(wall(b["started_at"]), wall(a["finished_at"]) - 0.05)


# ---- 11. circuits of configured sources -----------------------------------------

class CircuitList(BatchCase):

    def test_configured_sources_are_listed_from_the_start(self):
        d = self.start(None, alpha=self.search.source("alpha"), beta=self.search.source("beta"))
        st, _h, data = d.get("/v1/circuits")
        self.assertEqual(st, 200, data)
        self.assertEqual([c["source"] for c in data["circuits"]], ["alpha", "beta"])
        for c in data["circuits"]:
            self.assertEqual(c["state"], "closed", c)
            self.assertEqual((c["consecutive_failures"], c["trips"]), (0, 0), c)
            self.assertIsNone(c["retry_at"], c)
        job = d.post_job({"urls": [self.file_url("c.png")]})
        self.assertEqual(d.wait_job(job["id"])["state"], "succeeded")
        st, _h, data = d.get("/v1/circuits")
        self.assertEqual(sorted(c["source"] for c in data["circuits"]),
                         sorted(["alpha", "beta", source_of(self.origin)]))


# ---- 13. the documented error codes ------------------------------------------------

def _read(rel):
    with open(os.path.join(hauldtest.SRCDIR, rel), encoding="utf-8") as f:
        return f.read()


def codes_written():
    """Every error code the daemon writes on an item, a per_source entry
    or a job: the fault classes of retry.c, and the literal codes work.c,
    jobrun.c, sched.c and the request parser pass."""
    codes = set(re.findall(r'\[RC_[A-Z_0-9]+\] = \{"([a-z_0-9]+)"', _read("daemon/retry.c")))
    codes.discard("ok")
    calls = (r'jobrun_item_(?:failed|skipped)\([^;]*?"([a-z_0-9]+)"',
             r'close_group\([^;]*?"([a-z_0-9]+)"',
             r'jobrun_skip_(?:rest|all)\([^;]*?"([a-z_0-9]+)"',
             r'job_end\([^;]*?"([a-z_0-9]+)"',
             r'icode = "([a-z_0-9]+)"',
             r'\*ret_code = "([a-z_0-9]+)"',
             r'job_error_set\([^;]*?"([a-z_0-9]+)"')
    for rel in ("daemon/work.c", "daemon/jobrun.c", "daemon/sched.c", "api/job_request.c"):
        text = _read(rel)
        for pat in calls:
            codes.update(m for m in re.findall(pat, text, re.S) if m not in ("s",))
    return codes


def codes_documented():
    """The codes of the table under "### Error codes" in docs/api.md."""
    text = _read("docs/api.md")
    at = text.find("### Error codes")
    assert at >= 0, "docs/api.md has no \"### Error codes\" section"
    section = text[at:text.find("\n#", at + 4)]
    return set(re.findall(r"^\| `([a-z_0-9]+)` \|", section, re.M))


class DocumentedCodes(unittest.TestCase):

    def test_docs_list_every_code_hauld_writes_and_no_other(self):
        written, documented = codes_written(), codes_documented()
        self.assertIn("max_reached", written)  # the scan finds what it should
        self.assertIn("http_5xx", written)
        self.assertEqual(sorted(written - documented), [], "written by hauld, missing from docs/api.md")
        self.assertEqual(sorted(documented - written), [], "in docs/api.md, never written by hauld")


if __name__ == "__main__":
    hauldtest.main()
