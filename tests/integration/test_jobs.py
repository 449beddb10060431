"""URL jobs end to end: submit, run, files on disk, the job table across
restarts, listing and paging, and the daemon's own limits."""

import os
import time
import urllib.parse

import hauldtest


class UrlJobs(hauldtest.HauldTestCase):
    daemon_env = {"MAX_CONNECTIONS_PER_SOURCE": "8"}

    def test_forty_urls_succeed_with_exact_files(self):
        urls = [self.file_url("img%02d.png" % i, size=1000 + 997 * i, seed=i) for i in range(40)]
        job = self.daemon.post_job({"urls": urls, "label": "forty"})
        self.assertEqual(job["state"], "queued")
        self.assertEqual(job["progress"]["total"], 40)
        job = self.daemon.wait_job(job["id"], timeout=60)
        self.assertEqual(job["state"], "succeeded", job)
        self.assertEqual(job["progress"]["succeeded"], 40)
        self.assertEqual(job["progress"]["percent"], 100.0)
        self.assertEqual(job["progress"]["bytes"], sum(1000 + 997 * i for i in range(40)))
        self.assertIsNotNone(job["started_at"])
        self.assertIsNotNone(job["finished_at"])
        items = self.items(job["id"])
        self.assertEqual(len(items), 40)
        for i, it in enumerate(items):
            self.assertEqual(it["index"], i)
            self.assert_item_file(it, "img%02d.png" % i, size=1000 + 997 * i, seed=i)
            self.assertEqual(it["attempts"], 1)
            self.assertEqual(it["http_status"], 200)
            self.assertEqual(it["content_type"], "image/png")
            self.assertTrue(it["path"].startswith(job["id"] + "/127.0.0.1:%d/" % self.origin.port), it)
            self.assertGreaterEqual(it["duration_ms"], 0)
        # no part file is left anywhere
        for root, _dirs, files in os.walk(self.daemon.download_dir):
            self.assertEqual([f for f in files if f.endswith(".part")], [], root)
        # per_source reflects the host
        (ps,) = job["per_source"]
        self.assertEqual(ps["source"], "127.0.0.1:%d" % self.origin.port)
        self.assertEqual(ps["state"], "done")
        self.assertEqual((ps["items"], ps["succeeded"], ps["attempts"]), (40, 40, 40))

    def test_job_survives_restart(self):
        job = self.run_job({"urls": [self.file_url("keep.png", size=4321)]})
        self.assertEqual(job["state"], "succeeded")
        self.daemon.restart()
        again = self.daemon.get_job(job["id"])
        for key in ("id", "state", "created_at", "finished_at", "progress", "label", "max"):
            self.assertEqual(again[key], job[key], key)
        (it,) = self.items(job["id"])
        self.assert_item_file(it, "keep.png", size=4321)

    def test_names_and_duplicates(self):
        a = self.file_url("same.png", size=2000)
        job = self.run_job({"urls": [
            a, a,
            {"url": self.file_url("x", size=3000, seed=1), "filename": "chosen.png"},
            self.file_url("same.png", size=2000, seed=9),  # same name, other content
            self.file_url("same.png", size=2000, key="k"),  # other URL, same content as a
        ]})
        self.assertEqual(job["state"], "succeeded", job)
        items = self.items(job["id"])
        self.assert_item_error(items[1], "duplicate", state="skipped")
        self.assertTrue(items[2]["path"].endswith("/chosen.png"), items[2])
        # same name, other content: one keeps the name, the other gets a variant
        names = sorted(it["path"].rsplit("/", 1)[1] for it in (items[0], items[3]))
        self.assertEqual(names, ["same-1.png", "same.png"])
        # identical content is stored once
        self.assertEqual(items[4]["path"], items[0]["path"])
        self.assertEqual(items[4]["sha256"], items[0]["sha256"])
        self.assertEqual(self.origin.count(path="/file/same.png"), 3)  # the repeated URL once

    def test_failed_and_partial_states(self):
        job = self.run_job({"urls": [self.origin.url("/missing", status=404)]})
        self.assertEqual(job["state"], "failed")
        self.assertEqual(job["error"]["code"], "all_failed")
        job = self.run_job({"urls": [self.file_url("ok.png"), self.origin.url("/gone", status=410)]})
        self.assertEqual(job["state"], "partial")
        items = self.items(job["id"])
        self.assert_item_error(items[1], "http_4xx")
        self.assertEqual(items[1]["http_status"], 410)
        # the node that holds a file is named; an item without a file names none
        status, _, health = self.daemon.get("/v1/health")
        self.assertEqual(status, 200, health)
        self.assertTrue(health["node"])
        self.assertEqual(items[0]["node"], health["node"], items[0])
        self.assertNotIn("node", items[1])

    def test_max_limits_successes(self):
        urls = [self.file_url("m%d.png" % i, seed=i) for i in range(10)]
        job = self.run_job({"urls": urls, "max": 3})
        self.assertEqual(job["state"], "succeeded", job)
        self.assertEqual(job["progress"]["succeeded"], 3)
        self.assertEqual(job["progress"]["skipped"], 7)
        self.assertEqual(self.origin.count(), 3)

    def test_priority_then_age(self):
        # one job at a time: the queue is taken by priority, then age
        d = self.new_daemon({"MAX_CONCURRENT_JOBS": "1"})
        blocker = d.post_job({"urls": [self.file_url("slow.png", delay=1)]})
        low = d.post_job({"urls": [self.file_url("low.png")], "priority": -5})
        first = d.post_job({"urls": [self.file_url("first.png")], "priority": 5})
        second = d.post_job({"urls": [self.file_url("second.png")], "priority": 5})
        for j in (blocker, low, first, second):
            d.wait_job(j["id"])
        order = sorted((d.get_job(j["id"])["started_at"], name) for j, name in
                       ((low, "low"), (first, "first"), (second, "second")))
        self.assertEqual([n for _t, n in order], ["first", "second", "low"])

    def test_content_check(self):
        d = self.new_daemon({"ACCEPT_CONTENT": "image"})
        job = self.run_job({"urls": [self.file_url("page.jpg", type="html", ctype="image/jpeg"),
                                     self.file_url("real.jpg", type="jpeg")]}, daemon=d)
        items = self.items(job["id"], daemon=d)
        self.assert_item_error(items[0], "invalid_content")
        self.assertIsNone(items[0]["path"])
        self.assertEqual(items[1]["content_type"], "image/jpeg")
        job_dir = os.path.join(d.download_dir, job["id"])
        names = [f for _r, _d, fs in os.walk(job_dir) for f in fs]
        self.assertEqual(names, ["real.jpg"])

    def test_too_large(self):
        d = self.new_daemon({"MAX_FILE_SIZE": "10K"})
        job = self.run_job({"urls": [self.file_url("big.png", size=20000),
                                     self.file_url("bigc.png", size=20000, chunked=1),
                                     self.file_url("fits.png", size=10240)]}, daemon=d)
        items = self.items(job["id"], daemon=d)
        self.assert_item_error(items[0], "too_large")
        self.assert_item_error(items[1], "too_large")
        self.assertEqual(items[0]["attempts"], 1)
        self.assert_item_file(items[2], "fits.png", size=10240, daemon=d)


class Listing(hauldtest.HauldTestCase):
    def test_pages_without_duplicates(self):
        ids = set()
        for i in range(120):
            ids.add(self.daemon.post_job({"urls": [self.origin.url("/x%d" % i, status=404)],
                                          "label": str(i)})["id"])
        seen, cursor, pages = [], None, 0
        while True:
            path = "/v1/jobs?limit=50" + ("&cursor=" + cursor if cursor else "")
            st, _h, data = self.daemon.get(path)
            self.assertEqual(st, 200, data)
            seen += [j["id"] for j in data["jobs"]]
            pages += 1
            cursor = data["next_cursor"]
            if not cursor:
                break
        self.assertEqual(pages, 3)
        self.assertEqual(len(seen), 120)
        self.assertEqual(set(seen), ids)
        labels = [int(self.daemon.get_job(i)["label"]) for i in seen[:3]]
        self.assertEqual(labels, sorted(labels, reverse=True))  # newest first

    def test_label_filter(self):
        d = self.daemon
        ids = {name: [d.post_job({"urls": [self.file_url("%s%d.png" % (name, i))], "label": name})["id"]
                      for i in range(3)] for name in ("nightly", "night", "other thing")}
        for name, want in ids.items():
            st, _h, data = d.get("/v1/jobs?" + urllib.parse.urlencode({"label": name}))
            self.assertEqual(st, 200, data)
            self.assertEqual([j["id"] for j in data["jobs"]], list(reversed(want)))  # newest first
        st, _h, data = d.get("/v1/jobs?label=night&limit=2")
        self.assertEqual(len(data["jobs"]), 2)
        st, _h, more = d.get("/v1/jobs?label=night&limit=2&cursor=" + data["next_cursor"])
        self.assertEqual([j["id"] for j in more["jobs"]], [ids["night"][0]])
        for job_id in ids["night"]:
            d.wait_job(job_id)
        st, _h, data = d.get("/v1/jobs?label=night&state=succeeded")
        self.assertEqual(len(data["jobs"]), 3)
        st, _h, data = d.get("/v1/jobs?label=night&state=failed")
        self.assertEqual(data["jobs"], [])
        self.assert_problem(d.get("/v1/jobs?label=" + "x" * 1025), 400, field="label")

    def test_state_filter_and_bad_parameters(self):
        job = self.run_job({"urls": [self.file_url("f.png")]})
        st, _h, data = self.daemon.get("/v1/jobs?state=succeeded&state=failed")
        self.assertEqual(st, 200)
        self.assertIn(job["id"], [j["id"] for j in data["jobs"]])
        st, _h, data = self.daemon.get("/v1/jobs?state=queued")
        self.assertNotIn(job["id"], [j["id"] for j in data["jobs"]])
        self.assert_problem(self.daemon.get("/v1/jobs?state=bogus"), 400)
        self.assert_problem(self.daemon.get("/v1/jobs?limit=0"), 400)
        self.assert_problem(self.daemon.get("/v1/jobs?limit=501"), 400)
        self.assert_problem(self.daemon.get("/v1/jobs?cursor=%%%"), 400)
        self.assert_problem(self.daemon.get("/v1/jobs/NOPE"), 404)
        self.assert_problem(self.daemon.get("/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV"), 404)

    def test_list_shows_each_job_as_get_does_also_after_a_retry(self):
        # a listing answers finished jobs from the texts it keeps; a job
        # retried and finished again must show its new end there too
        ok = self.run_job({"urls": [self.file_url("l.png")]})
        bad = self.run_job({"urls": [self.origin.url("/gone", status=404)]})
        for _ in range(2):  # the second listing reads the kept texts
            st, _h, data = self.daemon.get("/v1/jobs?limit=10")
            self.assertEqual(st, 200)
            listed = {j["id"]: j for j in data["jobs"]}
            self.assertEqual(listed[ok["id"]], self.daemon.get_job(ok["id"]))
            self.assertEqual(listed[bad["id"]], self.daemon.get_job(bad["id"]))
        first_end = listed[bad["id"]]["finished_at"]
        time.sleep(0.01)  # finished_at has millisecond steps
        st, _h, _data = self.daemon.post("/v1/jobs/%s/retry" % bad["id"])
        self.assertIn(st, (200, 202))
        again = self.daemon.wait_job(bad["id"])
        self.assertNotEqual(again["finished_at"], first_end)
        st, _h, data = self.daemon.get("/v1/jobs?limit=10")
        listed = {j["id"]: j for j in data["jobs"]}
        self.assertEqual(listed[bad["id"]], again)
        self.assertEqual(listed[bad["id"]], self.daemon.get_job(bad["id"]))

    def test_items_paging(self):
        urls = [self.origin.url("/p%d" % i, status=404) for i in range(25)]
        job = self.run_job({"urls": urls})
        st, _h, page = self.daemon.get("/v1/jobs/%s/items?limit=10" % job["id"])
        self.assertEqual(st, 200, page)
        self.assertEqual([it["index"] for it in page["items"]], list(range(10)))
        self.assertIsNotNone(page["next_cursor"])
        st, _h, page2 = self.daemon.get("/v1/jobs/%s/items?limit=10&cursor=%s" % (job["id"], page["next_cursor"]))
        self.assertEqual([it["index"] for it in page2["items"]], list(range(10, 20)))
        self.assertEqual(len(self.items(job["id"], state="failed")), 25)

    def test_per_source_head_and_all_sources(self):
        # 130 labels, each its own per_source entry: the job object shows
        # the first 100 and how many there are; /sources pages through all
        n = 130
        urls = [{"url": self.file_url("s%03d.png" % i) if i % 10 else self.origin.url("/gone%d" % i, status=404),
                 "source": "lbl-%03d" % i} for i in range(n)]
        job = self.run_job({"urls": urls}, timeout=60)
        self.assertEqual(job["state"], "partial", job)
        self.assertEqual(len(job["per_source"]), 100)
        self.assertEqual(job["per_source_total"], n)
        self.assertEqual([p["source"] for p in job["per_source"]], ["lbl-%03d" % i for i in range(100)])
        seen, cursor = [], None
        while True:
            path = "/v1/jobs/%s/sources?limit=50" % job["id"] + ("&cursor=%s" % cursor if cursor else "")
            st, _h, page = self.daemon.get(path)
            self.assertEqual(st, 200, page)
            self.assertEqual(page["per_source_total"], n)
            self.assertLessEqual(len(page["per_source"]), 50)
            seen += page["per_source"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        self.assertEqual([p["source"] for p in seen], ["lbl-%03d" % i for i in range(n)])
        for i, p in enumerate(seen):
            self.assertEqual((p["items"], p["succeeded"], p["failed"]), (1, 0, 1) if i % 10 == 0 else (1, 1, 0), p)
        # by the entry's state: each label's source is done (its item failed,
        # not the source); none failed
        st, _h, done = self.daemon.get("/v1/jobs/%s/sources?state=done&limit=1000" % job["id"])
        self.assertEqual((st, len(done["per_source"]), done["next_cursor"]), (200, n, None), done)
        st, _h, failed = self.daemon.get("/v1/jobs/%s/sources?state=failed&state=timed_out" % job["id"])
        self.assertEqual((st, failed["per_source"], failed["next_cursor"]), (200, [], None), failed)
        # faults: bad parameters, no such job
        for bad in ("limit=0", "limit=1001", "state=nope", "cursor=x"):
            self.assert_problem(self.daemon.get("/v1/jobs/%s/sources?%s" % (job["id"], bad)), 400)
        self.assert_problem(self.daemon.get("/v1/jobs/0000000000NOSUCHJOB0000000/sources"), 404)


class Validation(hauldtest.HauldTestCase):
    def test_bad_bodies_answer_400_and_daemon_lives(self):
        bad = [
            b"", b"{", b"[]", b'{"urls": []}', b'{"urls": ["ftp://x/y"]}',
            b'{"urls": ["http://a/b"], "max": 0}', b'{"urls": ["http://a/b"], "bogus": 1}',
            b'{"urls": ["http://a/b"], "urls": ["http://a/c"]}', b'{"query": "cats"}',
            b'{"urls": ["http://a/b"], "label": "' + b"x" * 257 + b'"}', b'{"urls": ["\xff"]}',
            b'{"urls": ["http://a/b"], "priority": 11}', b'{"urls": ["http://a/b"], "timeout": 0}',
            b"[" * 40 + b"]" * 40,
        ]
        for body in bad:
            ans = self.daemon.request("POST", "/v1/jobs", body=body,
                                      headers={"Content-Type": "application/json"})
            self.assert_problem(ans, 400)
        st, _h, data = self.daemon.get("/v1/health")
        self.assertEqual(st, 200)
        self.assertEqual(data["status"], "ok")

    def test_field_named(self):
        ans = self.daemon.request("POST", "/v1/jobs", body={"urls": ["http://a/b"], "max": 10001})
        self.assert_problem(ans, 400, field="max")

    def test_not_json_and_too_big(self):
        ans = self.daemon.request("POST", "/v1/jobs", body=b"urls=1",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assert_problem(ans, 415)
        d = self.new_daemon({"MAX_REQUEST_BODY": "1K"})
        big = b'{"urls": ["http://a/' + b"b" * 2000 + b'"]}'
        ans = d.request("POST", "/v1/jobs", body=big, headers={"Content-Type": "application/json"})
        self.assert_problem(ans, 413)

    def test_unknown_route_and_method(self):
        self.assert_problem(self.daemon.get("/v1/nothing"), 404)
        st, headers, _data = self.daemon.request("PUT", "/v1/jobs")
        self.assertEqual(st, 405)
        self.assertIn("POST", headers.get("Allow", ""))

    def test_created_answer(self):
        st, headers, job = self.daemon.request("POST", "/v1/jobs", body={"urls": [self.file_url("c.png")]})
        self.assertEqual(st, 201)
        self.assertEqual(headers["Location"], "/v1/jobs/" + job["id"])
        for key in ("id", "state", "query", "sources", "max", "label", "priority", "timeout",
                    "created_at", "started_at", "finished_at", "deadline_at", "progress",
                    "per_source", "error"):
            self.assertIn(key, job)
        self.assertEqual(job["max"], 1)  # a URL job: every URL it names
        self.assertEqual(job["timeout"], 300)
        for key in ("bytes_expected", "speed_bps", "eta_s"):
            self.assertIn(key, job["progress"])


if __name__ == "__main__":
    hauldtest.main()
