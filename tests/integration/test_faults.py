"""Robust transfers: every fault class, retries and their timing, circuit
breakers per source, the four levels of timeouts, and the statistics that
tell the story."""

import time

import hauldtest

FAST = {
    "RETRY_BACKOFF_BASE": "0.1",
    "RETRY_BACKOFF_MAX": "5",
    "MAX_RETRIES_PER_SOURCE": "2",  # 3 attempts of each request
    "MAX_RETRIES_PER_ITEM": "0",  # and no further rounds
    "REQUEST_TIMEOUT": "10",
    "CIRCUIT_BREAKER_THRESHOLD": "3",
    "CIRCUIT_BREAKER_TIMEOUT": "60",
}


def source_of(origin):
    return "127.0.0.1:%d" % origin.port


class Retries(hauldtest.HauldTestCase):
    daemon_env = FAST

    def test_503_twice_then_200_succeeds_on_attempt_3(self):
        job = self.run_job({"urls": [self.file_url("r.png", size=3000, fail=2, key="r")]})
        self.assertEqual(job["state"], "succeeded", job)
        (it,) = self.items(job["id"])
        self.assert_item_file(it, "r.png", size=3000)
        self.assertEqual(it["attempts"], 3)
        self.assertEqual(self.origin.count(key="r"), 3)
        self.assertEqual(job["per_source"][0]["retries"], 2)
        self.assertEqual(job["per_source"][0]["attempts"], 3)

    def test_503_always_fails_after_all_retries(self):
        job = self.run_job({"urls": [self.origin.url("/down", status=503)]})
        self.assertEqual(job["state"], "failed")
        (it,) = self.items(job["id"])
        self.assert_item_error(it, "http_5xx")
        self.assertEqual(it["attempts"], 3)
        self.assertEqual(it["http_status"], 503)

    def test_404_fails_once_and_leaves_breaker_closed(self):
        job = self.run_job({"urls": [self.origin.url("/nope%d" % i, status=404) for i in range(5)]})
        self.assertEqual(job["state"], "failed")
        for it in self.items(job["id"]):
            self.assert_item_error(it, "http_4xx")
            self.assertEqual(it["attempts"], 1)
        self.assertEqual(self.origin.count(), 5)
        st, _h, data = self.daemon.get("/v1/circuits")
        (c,) = [c for c in data["circuits"] if c["source"] == source_of(self.origin)]
        self.assertEqual(c["state"], "closed")
        self.assertEqual(c["consecutive_failures"], 0)
        self.assertEqual(c["trips"], 0)

    def test_429_retry_after_is_honoured(self):
        job = self.run_job({"urls": [self.file_url("ra.png", fail=1, key="ra", status=429, retry_after=2)]})
        self.assertEqual(job["state"], "succeeded", job)
        reqs = self.origin.requests(key="ra")
        self.assertEqual(len(reqs), 2)
        gap = reqs[1]["time"] - reqs[0]["time"]
        self.assertGreaterEqual(gap, 2.0, "retried %.2f s after a Retry-After of 2" % gap)
        (it,) = self.items(job["id"])
        self.assertEqual(it["attempts"], 2)

    def test_503_with_retry_after_is_rate_limited_and_not_counted(self):
        d = self.new_daemon(dict(FAST, CIRCUIT_BREAKER_THRESHOLD="1", MAX_RETRIES_PER_SOURCE="0"))
        job = self.run_job({"urls": [self.origin.url("/busy", status=503, retry_after=1)]}, daemon=d)
        (it,) = self.items(job["id"], daemon=d)
        self.assert_item_error(it, "rate_limited")
        st, _h, data = d.get("/v1/circuits")
        (c,) = data["circuits"]
        self.assertEqual(c["state"], "closed")

    def test_truncated_body_is_retried(self):
        job = self.run_job({"urls": [self.file_url("t.png", size=20000, fail=1, key="t", truncate=5000)]})
        self.assertEqual(job["state"], "succeeded", job)
        (it,) = self.items(job["id"])
        self.assert_item_file(it, "t.png", size=20000)
        self.assertEqual(it["attempts"], 2)
        # the retry asked only for the rest, under the validator of the first answer
        second = self.origin.requests(key="t")[1]["headers"]
        self.assertEqual(second.get("range"), "bytes=5000-")
        self.assertTrue(second.get("if-range"), second)

    def test_retry_starts_over_when_range_is_ignored(self):
        job = self.run_job({"urls": [self.file_url("nr.png", size=20000, fail=1, key="nr", truncate=5000,
                                                   norange=1)]})
        (it,) = self.items(job["id"])
        self.assert_item_file(it, "nr.png", size=20000)
        self.assertEqual(it["attempts"], 2)
        job = self.run_job({"urls": [self.file_url("t2.png", size=20000, truncate=5000)]})
        (it,) = self.items(job["id"])
        self.assert_item_error(it, "truncated")
        self.assertEqual(it["attempts"], 3)

    def test_reset_mid_body_and_before_answer(self):
        job = self.run_job({"urls": [self.file_url("rb.png", size=200000, fail=1, key="rb", reset_after=1000),
                                     self.file_url("rn.png", fail=1, key="rn", reset=1)]})
        self.assertEqual(job["state"], "succeeded", job)
        for it in self.items(job["id"]):
            self.assertEqual(it["attempts"], 2, it)
        job = self.run_job({"urls": [self.file_url("rx.png", reset=1)]})
        (it,) = self.items(job["id"])
        self.assert_item_error(it, "connect")

    def test_connection_refused_is_connect(self):
        port = hauldtest.free_port()
        job = self.run_job({"urls": ["http://127.0.0.1:%d/x.png" % port]})
        (it,) = self.items(job["id"])
        self.assert_item_error(it, "connect")
        self.assertEqual(it["attempts"], 3)


class Stalls(hauldtest.HauldTestCase):
    daemon_env = dict(FAST, MIN_DOWNLOAD_SPEED="2000", STALL_TIMEOUT="1", REQUEST_TIMEOUT="30")

    def test_stalled_body_is_aborted_and_retried(self):
        t0 = time.monotonic()
        job = self.run_job({"urls": [self.file_url("s.png", size=50000, fail=1, key="s", stall_after=3000)]})
        self.assertEqual(job["state"], "succeeded", job)
        (it,) = self.items(job["id"])
        self.assert_item_file(it, "s.png", size=50000)
        self.assertEqual(it["attempts"], 2)
        self.assertLess(time.monotonic() - t0, 15)

    def test_always_stalled_ends_stalled(self):
        job = self.run_job({"urls": [self.file_url("s2.png", size=50000, stall_after=100)]}, timeout=40)
        (it,) = self.items(job["id"])
        self.assert_item_error(it, "stalled")

    def test_slow_drip_above_minimum_is_fine(self):
        job = self.run_job({"urls": [self.file_url("d.png", size=8000, drip=4000)]})
        (it,) = self.items(job["id"])
        self.assert_item_file(it, "d.png", size=8000)


class RequestTimeout(hauldtest.HauldTestCase):
    daemon_env = dict(FAST, REQUEST_TIMEOUT="1", MAX_RETRIES_PER_SOURCE="1")

    def test_no_first_byte_is_timeout(self):
        job = self.run_job({"urls": [self.file_url("late.png", delay=4)]})
        (it,) = self.items(job["id"])
        self.assert_item_error(it, "timeout")
        self.assertEqual(it["attempts"], 2)


class Breakers(hauldtest.HauldTestCase):
    daemon_env = dict(FAST, MAX_CONNECTIONS_PER_SOURCE="1")

    def test_dead_source_opens_while_healthy_source_finishes(self):
        # the circuit opens for 60 s, longer than the job has left: its
        # waiting items are skipped at once instead of holding the job
        dead = hauldtest.FakeOrigin().start()
        self.addCleanup(dead.stop)
        dead_urls = [dead.url("/d%d" % i, status=500) for i in range(10)]
        good_urls = [self.file_url("g%d.png" % i, seed=i) for i in range(10)]
        mixed = [u for pair in zip(dead_urls, good_urls) for u in pair]
        job = self.run_job({"urls": mixed, "timeout": 20})
        self.assertEqual(job["state"], "partial", job)
        by_source = {ps["source"]: ps for ps in job["per_source"]}
        good, bad = by_source[source_of(self.origin)], by_source[source_of(dead)]
        self.assertEqual(good["succeeded"], 10)
        self.assertEqual(good["circuit"], "closed")
        self.assertEqual(bad["circuit"], "open")
        self.assertEqual(bad["succeeded"], 0)
        # the threshold's worth of URLs, then nothing more
        self.assertEqual(dead.count(), 3)
        items = self.items(job["id"])
        never = [it for it in items if it["error"] and it["error"]["code"] == "circuit_open"]
        self.assertEqual(len(never), 7)
        for it in never:
            self.assertEqual(it["state"], "skipped")
            self.assertEqual(it["attempts"], 0)
            self.assertIn("after the job's timeout", it["error"]["message"])
        tried = [it for it in items if it["source"] == source_of(dead) and it["attempts"] > 0]
        self.assertEqual(len(tried), 3)
        for it in tried:  # the real error stays, with why it was not tried again
            self.assertEqual(it["error"]["code"], "http_5xx", it)
            self.assertIn("circuit", it["error"]["message"])
        st, _h, data = self.daemon.get("/v1/circuits")
        (c,) = [c for c in data["circuits"] if c["source"] == source_of(dead)]
        self.assertEqual(c["state"], "open")
        self.assertEqual(c["trips"], 1)
        self.assertEqual(c["threshold"], 3)
        self.assertIsNotNone(c["opened_at"])
        self.assertIsNotNone(c["retry_at"])
        self.assertIn("http_5xx", c["last_error"])

        st, _h, stats = self.daemon.get("/v1/stats")
        self.assertEqual(st, 200)
        s_dead = stats["sources"][source_of(dead)]
        self.assertEqual((s_dead["attempts"], s_dead["failures"], s_dead["successes"]), (3, 3, 0))
        self.assertEqual(s_dead["circuit"], "open")
        s_good = stats["sources"][source_of(self.origin)]
        self.assertEqual((s_good["attempts"], s_good["successes"]), (10, 10))
        self.assertEqual(s_good["bytes"], 10 * 1024)
        self.assertEqual(stats["total_attempts"], 13)
        self.assertEqual(stats["total_successes"], 10)
        self.assertEqual(stats["total_retries"], 0)  # the retries waited for the circuit: none was made

        # a new job against the open circuit is skipped without a request
        job = self.run_job({"urls": [dead.url("/again", status=500)], "timeout": 20})
        (it,) = self.items(job["id"])
        self.assert_item_error(it, "circuit_open", state="skipped")
        self.assertEqual(dead.count(), 3)

        # reset closes it and requests flow again
        st, _h, entry = self.daemon.post("/v1/circuits/%s/reset" % source_of(dead))
        self.assertEqual(st, 200, entry)
        self.assertEqual(entry["state"], "closed")
        self.run_job({"urls": [dead.url("/after", status=404)]})
        self.assertEqual(dead.count(), 4)
        self.assert_problem(self.daemon.post("/v1/circuits/nowhere.example/reset"), 404)

    def test_half_open_probe_closes_circuit(self):
        d = self.new_daemon(dict(FAST, MAX_CONNECTIONS_PER_SOURCE="1", CIRCUIT_BREAKER_THRESHOLD="2",
                                 CIRCUIT_BREAKER_TIMEOUT="1", MAX_RETRIES_PER_SOURCE="0"))
        job = self.run_job({"urls": [self.origin.url("/e%d" % i, status=500) for i in range(2)]}, daemon=d)
        st, _h, data = d.get("/v1/circuits")
        self.assertEqual(data["circuits"][0]["state"], "open")
        time.sleep(1.2)
        job = self.run_job({"urls": [self.file_url("probe.png")]}, daemon=d)
        self.assertEqual(job["state"], "succeeded")
        st, _h, data = d.get("/v1/circuits")
        self.assertEqual(data["circuits"][0]["state"], "closed")

    def test_aborted_half_open_probe_lets_the_next_probe_go(self):
        d = self.new_daemon(dict(FAST, MAX_CONNECTIONS_PER_SOURCE="1", CIRCUIT_BREAKER_THRESHOLD="2",
                                 CIRCUIT_BREAKER_TIMEOUT="1", MAX_RETRIES_PER_SOURCE="0"))
        self.run_job({"urls": [self.origin.url("/e%d" % i, status=500) for i in range(2)]}, daemon=d)
        time.sleep(1.2)
        # the probe hangs and its job is cancelled: it gave no verdict
        job = d.post_job({"urls": [self.file_url("hang.png", delay=30)]})
        d.wait_for(lambda: d.get_job(job["id"])["progress"]["running"] > 0, timeout=10)
        st, _h, data = d.post("/v1/jobs/%s/cancel" % job["id"])
        self.assertEqual(st, 200, data)
        job = self.run_job({"urls": [self.file_url("next.png")]}, daemon=d)
        self.assertEqual(job["state"], "succeeded", job)
        st, _h, data = d.get("/v1/circuits")
        self.assertEqual(data["circuits"][0]["state"], "closed")


class Deadlines(hauldtest.HauldTestCase):
    daemon_env = FAST

    def test_job_deadline(self):
        urls = [self.file_url("slow%d.png" % i, delay=30) for i in range(3)] + [self.file_url("quick.png")]
        job = self.daemon.post_job({"urls": urls, "timeout": 4})
        t0 = time.monotonic()
        job = self.daemon.wait_job(job["id"], timeout=20)
        elapsed = time.monotonic() - t0
        self.assertEqual(job["state"], "timed_out", job)
        self.assertEqual(job["error"]["code"], "job_timeout")
        self.assertLess(elapsed, 6.5, "timed out %.1f s after submission, deadline 4 s" % elapsed)
        self.assertGreaterEqual(elapsed, 3.5)
        items = self.items(job["id"])
        self.assert_item_file(items[3], "quick.png")
        for it in items[:3]:
            self.assert_item_error(it, "job_timeout", state="skipped")
        self.assertEqual(job["per_source"][0]["state"], "timed_out")

    def test_source_deadline_spares_other_sources(self):
        # explicit URLs have a source deadline only when the job sets one
        other = hauldtest.FakeOrigin().start()
        self.addCleanup(other.stop)
        urls = [self.file_url("late%d.png" % i, delay=20) for i in range(2)] + \
               [other.url("/file/fine.png", size=1024)]
        d = self.daemon
        job = self.run_job({"urls": urls, "source_timeout": 2}, daemon=d, timeout=20)
        self.assertEqual(job["state"], "partial", job)
        by_source = {ps["source"]: ps for ps in job["per_source"]}
        self.assertEqual(by_source[source_of(self.origin)]["state"], "timed_out")
        self.assertEqual(by_source[source_of(self.origin)]["error"]["code"], "source_timeout")
        self.assertEqual(by_source[source_of(other)]["state"], "done")
        items = self.items(job["id"], daemon=d)
        for it in items[:2]:
            self.assert_item_error(it, "source_timeout", state="skipped")
        self.assertEqual(items[2]["state"], "succeeded")


class Cancel(hauldtest.HauldTestCase):
    daemon_env = FAST

    def test_cancel_stops_transfers_at_once(self):
        job = self.daemon.post_job({"urls": [self.file_url("c%d.png" % i, size=10 ** 6, drip=20000)
                                             for i in range(3)]})
        self.daemon.wait_for(lambda: self.daemon.get_job(job["id"])["progress"]["running"] > 0, timeout=10)
        t0 = time.monotonic()
        st, _h, data = self.daemon.post("/v1/jobs/%s/cancel" % job["id"])
        self.assertEqual(st, 200, data)
        self.assertEqual(data["state"], "cancelled")
        self.assertLess(time.monotonic() - t0, 1.0)
        for it in self.items(job["id"]):
            self.assert_item_error(it, "cancelled", state="skipped")
        self.assert_problem(self.daemon.post("/v1/jobs/%s/cancel" % job["id"]), 409)

    def test_retry_and_delete(self):
        # three failures in a row would open the circuit at FAST's threshold of 3
        self.daemon = self.new_daemon(dict(FAST, CIRCUIT_BREAKER_THRESHOLD="10"))
        job = self.run_job({"urls": [self.file_url("again.png", fail=3, key="again"), self.file_url("ok.png")]})
        self.assertEqual(job["state"], "partial")
        st, _h, data = self.daemon.post("/v1/jobs/%s/retry" % job["id"])
        self.assertEqual(st, 200, data)
        self.assertIn(data["state"], ("queued", "running", "succeeded"))
        job = self.daemon.wait_job(job["id"])
        self.assertEqual(job["state"], "succeeded", job)
        items = self.items(job["id"])
        self.assert_item_file(items[0], "again.png")
        self.assertEqual(self.origin.count(key="again"), 4)
        st, _h, _d = self.daemon.delete("/v1/jobs/%s" % job["id"])
        self.assertEqual(st, 204)
        self.assert_problem(self.daemon.get("/v1/jobs/%s" % job["id"]), 404)
        self.assertTrue(self.item_path(items[0]))  # files stay

    def test_conflicts_on_active_job(self):
        job = self.daemon.post_job({"urls": [self.file_url("hold.png", delay=5)]})
        self.assert_problem(self.daemon.post("/v1/jobs/%s/retry" % job["id"]), 409)
        self.assert_problem(self.daemon.delete("/v1/jobs/%s" % job["id"]), 409)
        self.daemon.post("/v1/jobs/%s/cancel" % job["id"])


if __name__ == "__main__":
    hauldtest.main()
