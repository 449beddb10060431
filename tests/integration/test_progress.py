"""Live progress, resuming and pausing, as a user of the API sees them:
the job's and the running item's bytes grow during a slow download and end
at the file's size; the event stream's progress events come at most about
4 a second; a retry shows as an item event; /metrics counts transfers in
flight; a part file survives a graceful stop, a kill -9 and a pause, and
is resumed with Range where it ended (from zero when the origin's copy
changed)."""

import hashlib
import os
import re
import threading
import time

import hauldtest
from hauldtest import body_for, etag_for

DRIP = 100000       # bytes per second the origin sends a slow file at
VALIDATOR_XATTR = "user.hauld.validator"
SLOW = 600000       # a file of about 6 s at DRIP
BIG = 1000000       # the file interrupted in the resume and pause tests
BIG_DRIP = 150000


class EventReader(threading.Thread):
    """Reads an SSE stream on its own thread into self.events, each as
    (monotonic time, event dict), until the stream ends."""

    def __init__(self, daemon, path):
        super().__init__(daemon=True)
        self.d = daemon
        self.path = path
        self.events = []
        self.lock = threading.Lock()
        self.started_stream = threading.Event()
        self.error = None

    def run(self):
        try:
            for ev in self.d.events(self.path, timeout=30):
                self.started_stream.set()
                with self.lock:
                    self.events.append((time.monotonic(), ev))
        except Exception as e:  # reported by the test that reads it
            self.error = e
        finally:
            self.started_stream.set()

    def of(self, name):
        with self.lock:
            return [(t, ev) for t, ev in self.events if ev.get("event") == name]


def metrics(d):
    """{series: value} of GET /metrics ('name{labels}' or 'name')."""
    st, _, body = d.get("/metrics")
    assert st == 200, body
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


class ProgressCase(hauldtest.HauldTestCase):

    def source_dir(self, job_id, d=None):
        return os.path.join((d or self.daemon).download_dir, job_id, "127.0.0.1:%d" % self.origin.port)

    def part_size(self, job_id, d=None):
        """Bytes in the job's part files (0: none)."""
        try:
            names = os.listdir(self.source_dir(job_id, d))
        except FileNotFoundError:
            return 0
        total = 0
        for n in names:
            if n.endswith(".part"):
                try:
                    total += os.stat(os.path.join(self.source_dir(job_id, d), n)).st_size
                except FileNotFoundError:
                    pass
        return total


class LiveProgress(ProgressCase):

    def test_job_and_item_progress_grow_during_a_slow_download(self):
        job = self.daemon.post_job({"urls": [self.file_url("slow.png", size=SLOW, drip=DRIP)]})
        job_id = job["id"]
        self.daemon.wait_for(lambda: self.daemon.get_job(job_id)["progress"]["bytes"] > 0,
                             what="the first bytes")
        samples = []  # (time, job progress, item)
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end:
            j = self.daemon.get_job(job_id)
            (item,) = self.items(job_id)
            samples.append((time.monotonic(), j, item))
            time.sleep(0.25)
        self.assertGreaterEqual(len(samples), 8)
        for (t0, j0, i0), (t1, j1, i1) in zip(samples, samples[1:]):
            self.assertGreaterEqual(j1["progress"]["bytes"], j0["progress"]["bytes"], "job bytes went down")
            self.assertGreaterEqual(i1["bytes"], i0["bytes"], "item bytes went down")
        for k, (t0, j0, _) in enumerate(samples):
            later = [s for s in samples[k:] if s[0] - t0 >= 1.0]
            if later:
                self.assertGreater(later[0][1]["progress"]["bytes"], j0["progress"]["bytes"],
                                   "no progress over a second")
        running = [(j, i) for _, j, i in samples if j["state"] == "running" and i["state"] == "running"]
        self.assertTrue(running, "never seen running")
        for j, item in running:
            p = j["progress"]
            self.assertEqual(p["running"], 1)
            self.assertGreater(item["bytes"], 0, item)
            self.assertEqual(item["bytes_expected"], SLOW, item)
            self.assertIsInstance(item["speed_bps"], int)
            self.assertEqual(p["bytes_expected"], SLOW, p)
            self.assertLessEqual(p["bytes"], SLOW)
            # one item: the job's bytes are its bytes; the items are read
            # after the job, by a request of their own, so they may be ahead
            self.assertLessEqual(p["bytes"], item["bytes"], "one item: the job's bytes are its bytes")
        # speed and eta once the transfer has run a while
        _, j, item = samples[-1]
        self.assertGreater(item["speed_bps"], DRIP / 4, item)
        self.assertGreater(j["progress"]["speed_bps"], DRIP / 4, j["progress"])
        self.assertLess(j["progress"]["speed_bps"], DRIP * 4, j["progress"])
        self.assertIsInstance(j["progress"]["eta_s"], (int, float), j["progress"])
        left = (SLOW - j["progress"]["bytes"]) / DRIP
        self.assertGreater(j["progress"]["eta_s"], 0)
        self.assertLess(abs(j["progress"]["eta_s"] - left), max(2.0, left), j["progress"])

        job = self.daemon.wait_job(job_id, timeout=30)
        self.assertEqual(job["state"], "succeeded", job)
        (item,) = self.items(job_id)
        self.assertEqual(job["progress"]["bytes"], os.path.getsize(self.item_path(item)))
        self.assertEqual(job["progress"]["bytes"], SLOW)
        self.assertEqual(job["progress"]["bytes_expected"], SLOW)
        self.assertEqual(item["bytes"], SLOW)
        self.assertEqual(item["resumed_from"], 0)

    def test_sse_progress_events_are_at_most_about_four_a_second(self):
        job = self.daemon.post_job({"urls": [self.file_url("sse.png", size=SLOW, drip=DRIP)]})
        reader = EventReader(self.daemon, "/v1/jobs/%s/events" % job["id"])
        reader.start()
        self.daemon.wait_for(lambda: len(reader.of("progress")) >= 1, what="a progress event")
        time.sleep(3.0)
        events = reader.of("progress")
        t0 = events[0][0]
        window = [(t, ev["data"]) for t, ev in events if t - t0 <= 3.0]
        self.assertLessEqual(len(window), 3 * 4 + 1, "%d progress events in 3 s" % len(window))
        self.assertGreaterEqual(len(window), 4, "%d progress events in 3 s of transfer" % len(window))
        for t, _ in window:  # no burst either: at most 5 in any one second
            self.assertLessEqual(sum(1 for u, _ in window if t <= u < t + 1.0), 5)
        byts = [d["bytes"] for _, d in window]
        self.assertEqual(byts, sorted(byts), "progress bytes went down")
        self.assertGreater(byts[-1], byts[0])
        for _, d in window:
            self.assertEqual(d["job_id"], job["id"])
            if d["bytes"] > 0:  # the size is known from the origin's answer on
                self.assertEqual(d["bytes_expected"], SLOW, window)
            self.assertIn("speed_bps", d)
            self.assertIn("eta_s", d)
        self.daemon.post("/v1/jobs/%s/cancel" % job["id"])
        reader.join(10)
        self.assertIsNone(reader.error)

    def test_a_retry_is_an_item_event_with_a_retry_object(self):
        d = self.new_daemon({"RETRY_BACKOFF_BASE": "0.2", "MAX_RETRIES_PER_SOURCE": "2"})
        reader = EventReader(d, "/v1/events")
        reader.start()
        reader.started_stream.wait(5)
        time.sleep(0.2)
        job = d.post_job({"urls": [self.file_url("r.png", size=2000, fail=1, key="r")]})
        job = d.wait_job(job["id"])
        self.assertEqual(job["state"], "succeeded", job)
        d.wait_for(lambda: any(ev["data"].get("state") == "succeeded" for _, ev in reader.of("item")),
                   what="the item's success event")
        retries = [ev["data"] for _, ev in reader.of("item") if "retry" in ev["data"]]
        self.assertEqual(len(retries), 1, reader.of("item"))
        r = retries[0]
        self.assertEqual(r["job_id"], job["id"])
        self.assertEqual(r["index"], 0)
        self.assertEqual(r["retry"]["attempt"], 1)
        self.assertEqual(r["retry"]["reason"], "http_5xx")
        self.assertIsInstance(r["retry"]["delay_s"], (int, float))
        self.assertGreater(r["retry"]["delay_s"], 0)
        self.assertLessEqual(r["retry"]["delay_s"], 1.0)
        self.assertEqual(self.origin.count(key="r"), 2)

    def test_metrics_count_transfers_in_flight(self):
        _, _, health = self.daemon.get("/v1/health")
        job = self.daemon.post_job({"urls": [self.file_url("m.png", size=SLOW, drip=DRIP)]})
        m = self.daemon.wait_for(lambda: (lambda m: m if m.get("hauld_bytes_in_flight", 0) > 0 else None)(
            metrics(self.daemon)), what="bytes in flight")
        self.assertGreaterEqual(m["hauld_transfers_in_flight"], 1)
        self.assertEqual(m['hauld_jobs{state="running"}'], 1)
        self.assertEqual(m['hauld_build_info{version="%s"}' % health["version"]], 1)
        self.daemon.wait_job(job["id"], timeout=30)
        m = self.daemon.wait_for(lambda: (lambda m: m if m["hauld_transfers_in_flight"] == 0 else None)(
            metrics(self.daemon)), what="no transfer in flight")
        self.assertEqual(m["hauld_bytes_in_flight"], 0)
        self.assertEqual(m['hauld_jobs{state="running"}'], 0)
        self.assertEqual(m['hauld_jobs{state="succeeded"}'], 1)


class Resume(ProgressCase):
    """A part file kept across a stop is resumed with Range where it ended."""

    def start_big(self, name, d=None):
        d = d or self.daemon
        job = d.post_job({"urls": [self.file_url(name, size=BIG, drip=BIG_DRIP)]})
        path = "/file/" + name
        d.wait_for(lambda: self.origin.bytes_served(path) >= 300000, timeout=20, what="300 kB served")
        return job["id"], path

    def resume_checks(self, job_id, path, part, before):
        """After the restart: one Range request from the part's end, the
        rest served once, the file whole, resumed_from the part's size."""
        job = self.daemon.wait_job(job_id, timeout=40)
        self.assertEqual(job["state"], "succeeded", job)
        after = self.origin.requests(path)[before:]
        self.assertEqual(len(after), 1, [r["headers"].get("range") for r in after])
        self.assertEqual(after[0]["headers"].get("range"), "bytes=%d-" % part)
        self.assertEqual(after[0]["headers"].get("if-range"), etag_for(path[6:], BIG))
        self.assertEqual(after[0]["sent"], BIG - part, "the origin sent more than the rest")
        self.assertLess(self.origin.bytes_served(path), 2 * BIG)
        (item,) = self.items(job_id)
        want = body_for(path[6:], BIG)
        self.assertEqual(item["sha256"], hashlib.sha256(want).hexdigest())
        with open(self.item_path(item), "rb") as f:
            self.assertTrue(f.read() == want, "the resumed file is not the origin's")
        self.assertEqual(item["bytes"], BIG)
        self.assertEqual(job["progress"]["bytes"], BIG)
        self.assertEqual(self.part_size(job_id), 0, "a part file stayed")
        self.assertEqual(item["resumed_from"], part, item)
        self.assertNotIn(VALIDATOR_XATTR, os.listxattr(self.item_path(item)))

    def test_the_validator_is_kept_with_a_part_and_never_with_a_file(self):
        # a body in progress has its validator beside it (what a later start
        # resumes by); a file, small or large, keeps none
        job_id, _path = self.start_big("v.png")
        d = self.source_dir(job_id)
        parts = [n for n in os.listdir(d) if n.endswith(".part")]
        self.assertEqual(len(parts), 1, parts)
        self.assertEqual(os.getxattr(os.path.join(d, parts[0]), VALIDATOR_XATTR).decode(),
                         etag_for("v.png", BIG))
        job = self.daemon.wait_job(job_id, timeout=30)
        self.assertEqual(job["state"], "succeeded", job)
        small = self.run_job({"urls": [self.file_url("s.png", size=4096)]})
        for jid in (job_id, small["id"]):
            (item,) = self.items(jid)
            self.assertEqual(item["state"], "succeeded", item)
            self.assertNotIn(VALIDATOR_XATTR, os.listxattr(self.item_path(item)), item)

    def interrupt(self, kill):
        job_id, path = self.start_big("big.png")
        if kill:
            self.daemon.kill9()
        else:
            self.daemon.stop(expect_code=0)
        part = self.part_size(job_id)
        self.assertGreater(part, 0, "no part file kept")
        self.assertLess(part, BIG)
        return job_id, path, part, self.origin.count(path)

    def test_sigterm_then_restart_resumes_the_part(self):
        job_id, path, part, before = self.interrupt(kill=False)
        self.daemon.start()
        self.resume_checks(job_id, path, part, before)

    def test_kill9_then_restart_resumes_the_part(self):
        job_id, path, part, before = self.interrupt(kill=True)
        self.daemon.start()
        self.resume_checks(job_id, path, part, before)

    def test_a_changed_etag_restarts_from_zero(self):
        job_id, path, part, before = self.interrupt(kill=False)
        self.origin.set_override(path, seed="1", drip="0")  # new bytes, new ETag
        self.daemon.start()
        job = self.daemon.wait_job(job_id, timeout=40)
        self.assertEqual(job["state"], "succeeded", job)
        after = self.origin.requests(path)[before:]
        self.assertEqual(after[0]["headers"].get("range"), "bytes=%d-" % part)
        self.assertEqual(after[0]["headers"].get("if-range"), etag_for(path[6:], BIG))
        self.assertEqual(after[-1]["sent"], BIG, "the whole new file is fetched")
        (item,) = self.items(job_id)
        want = body_for(path[6:], BIG, seed="1")
        self.assertEqual(item["sha256"], hashlib.sha256(want).hexdigest())
        with open(self.item_path(item), "rb") as f:
            self.assertTrue(f.read() == want, "the file mixes the old and the new content")
        self.assertEqual(item["resumed_from"], 0)
        self.assertEqual(job["progress"]["bytes"], BIG)


class Pause(ProgressCase):

    def test_pause_stops_the_transfer_and_resume_continues_the_part(self):
        job = self.daemon.post_job({"urls": [self.file_url("p.png", size=BIG, drip=BIG_DRIP)]})
        job_id, path = job["id"], "/file/p.png"
        self.daemon.wait_for(lambda: self.origin.bytes_served(path) >= 200000, timeout=20, what="200 kB")
        st, _, j = self.daemon.post("/v1/jobs/%s/pause" % job_id)
        self.assertEqual(st, 200, j)
        self.assertEqual(j["state"], "paused")
        # the origin sees the connection closed, and no transfer stays
        self.daemon.wait_for(lambda: self.origin.requests(path)[-1]["done"], timeout=5,
                             what="the origin's answer cut off")
        self.assertTrue(self.origin.requests(path)[-1]["client_closed"])
        self.assertLess(self.origin.requests(path)[-1]["sent"], BIG)
        self.daemon.wait_for(lambda: metrics(self.daemon)["hauld_transfers_in_flight"] == 0, timeout=5,
                             what="no transfer in flight")
        count = self.origin.count(path)
        time.sleep(1.5)
        self.assertEqual(self.origin.count(path), count, "a paused job fetched again")
        m = metrics(self.daemon)
        self.assertEqual(m["hauld_transfers_in_flight"], 0)
        self.assertEqual(m['hauld_jobs{state="paused"}'], 1)
        j = self.daemon.get_job(job_id)
        self.assertEqual(j["state"], "paused")
        self.assertEqual(j["progress"]["running"], 0, j["progress"])
        (item,) = self.items(job_id)
        self.assertEqual(item["state"], "pending", item)
        part = self.part_size(job_id)
        self.assertGreater(part, 0, "the part file was not kept")

        st, _, j = self.daemon.post("/v1/jobs/%s/resume" % job_id)
        self.assertEqual(st, 200, j)
        self.assertIn(j["state"], ("queued", "running"))
        job = self.daemon.wait_job(job_id, timeout=40)
        self.assertEqual(job["state"], "succeeded", job)
        after = self.origin.requests(path)[count:]
        self.assertEqual([r["headers"].get("range") for r in after], ["bytes=%d-" % part])
        self.assertEqual(after[0]["sent"], BIG - part)
        (item,) = self.items(job_id)
        self.assertEqual(item["sha256"], hashlib.sha256(body_for("p.png", BIG)).hexdigest())
        self.assertEqual(job["progress"]["bytes"], BIG)
        self.assertEqual(item["resumed_from"], part, item)

    def test_pause_a_queued_job(self):
        d = self.new_daemon({"MAX_CONCURRENT_JOBS": "1"})
        blocker = d.post_job({"urls": [self.file_url("blocker.png", size=BIG, drip=BIG_DRIP)]})
        d.wait_job(blocker["id"], states="running")
        job = d.post_job({"urls": [self.file_url("later.png", size=3000)]})
        self.assertEqual(d.get_job(job["id"])["state"], "queued")
        st, _, j = d.post("/v1/jobs/%s/pause" % job["id"])
        self.assertEqual(st, 200, j)
        self.assertEqual(j["state"], "paused")
        st, _, _ = d.post("/v1/jobs/%s/cancel" % blocker["id"])
        self.assertEqual(st, 200)
        time.sleep(1.0)  # the slot is free, yet a paused job does not start
        self.assertEqual(d.get_job(job["id"])["state"], "paused")
        d.restart()  # nor after a restart
        time.sleep(0.5)
        self.assertEqual(d.get_job(job["id"])["state"], "paused")
        self.assertEqual(self.origin.count("/file/later.png"), 0)
        st, _, j = d.post("/v1/jobs/%s/resume" % job["id"])
        self.assertEqual(st, 200, j)
        self.assertIn(j["state"], ("queued", "running"))
        self.assertEqual(d.wait_job(job["id"])["state"], "succeeded")

    def test_409_when_the_state_does_not_allow_it(self):
        done = self.run_job({"urls": [self.file_url("done.png", size=1000)]})
        self.assertEqual(done["state"], "succeeded")
        data = self.assert_problem(self.daemon.post("/v1/jobs/%s/pause" % done["id"]), 409)
        self.assertTrue(re.search("state", data["detail"]), data)
        self.assert_problem(self.daemon.post("/v1/jobs/%s/resume" % done["id"]), 409)
        running = self.daemon.post_job({"urls": [self.file_url("run.png", size=SLOW, drip=DRIP)]})
        self.daemon.wait_job(running["id"], states="running")
        self.assert_problem(self.daemon.post("/v1/jobs/%s/resume" % running["id"]), 409)
        self.assertEqual(self.daemon.post("/v1/jobs/%s/pause" % running["id"])[0], 200)
        self.assert_problem(self.daemon.post("/v1/jobs/%s/pause" % running["id"]), 409)
        self.assertEqual(self.daemon.post("/v1/jobs/%s/cancel" % running["id"])[0], 200)
        self.assert_problem(self.daemon.post("/v1/jobs/%s/resume" % running["id"]), 409)
        self.assert_problem(self.daemon.post("/v1/jobs/%s/pause" % ("0" * 26)), 404)
        self.assert_problem(self.daemon.post("/v1/jobs/%s/resume" % ("0" * 26)), 404)


if __name__ == "__main__":
    hauldtest.main()
