"""Query sources: listing search APIs page by page, `max` across sources,
failing and empty sources, hostile file names, and bad source files."""

import os
import subprocess
import urllib.parse

import hauldtest

FAST = {
    "RETRY_BACKOFF_BASE": "0.05",
    "RETRY_BACKOFF_MAX": "1",
    "MAX_RETRIES_PER_SOURCE": "2",
    "MAX_RETRIES_PER_ITEM": "0",
}


class SearchOrigin:
    """Fake search APIs on a FakeOrigin: /search/good lists distinct image
    URLs on the same origin, /search/broken always answers 500,
    /search/empty has no results, /search/hostile lists hostile names."""

    def __init__(self, origin, total=100):
        self.origin = origin
        self.total = total
        self.pages = []
        origin.add_route("/search/", self.answer)

    def answer(self, handler, path, params):
        kind = path.rsplit("/", 1)[-1]
        page = int(params.get("page", "1"))
        per_page = int(params.get("per_page", "10"))
        self.pages.append((kind, page, params.get("q")))
        if kind == "broken":
            handler.send_json({"error": "down"}, status=500)
            return
        if kind == "empty":
            handler.send_json({"results": []})
            return
        if kind == "hostile":
            names = ["..%2F..%2Fescape.png", "%2e%2e", ".hidden.png", "a%5Cb.png", "%00nul.png",
                     "x" * 300 + ".png", "%E2%80%AEgnp.exe", "ok%20name.png"]
            results = [{"url": self.origin.base_url + "/file/" + n + "?size=700&seed=%d" % i}
                       for i, n in enumerate(names)]
            handler.send_json({"results": results if page == 1 else []})
            return
        first = (page - 1) * per_page
        results = [{"url": self.origin.url("/file/good-%03d.png" % i, size=1500, seed=i)}
                   for i in range(first, min(first + per_page, self.total))]
        handler.send_json({"results": results, "page": page})

    def source(self, kind, **extra):
        spec = {
            "search_url": self.origin.base_url + "/search/" + kind +
            "?q={query}&page={page}&per_page={per_page}",
            "per_page": 5,
            "items": "/results",
            "url": "/url",
        }
        spec.update(extra)
        return spec


class QueryJobs(hauldtest.HauldTestCase):
    start_daemon = False

    def start_with_sources(self, env=None, **sources):
        d = hauldtest.Daemon(dict(FAST, **(env or {})), start=False)
        self._daemons.append(d)
        self.addCleanup(d.stop)
        for name, spec in sources.items():
            d.write_source(name, spec)
        d.start()
        return d

    def setUp(self):
        super().setUp()
        self.search = SearchOrigin(self.origin)

    def test_max_filled_by_good_source_despite_broken_and_empty(self):
        d = self.start_with_sources(good=self.search.source("good"), broken=self.search.source("broken"),
                                    empty=self.search.source("empty"))
        job = d.post_job({"query": "red cars", "sources": ["good", "broken", "empty"], "max": 12})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(job["state"], "succeeded", job)
        self.assertEqual(job["progress"]["succeeded"], 12)
        items = self.items(job["id"], daemon=d)
        ok = [it for it in items if it["state"] == "succeeded"]
        self.assertEqual(len(ok), 12)
        for it in ok:
            self.assertEqual(it["source"], "good")
            self.assertTrue(it["path"].startswith(job["id"] + "/good/"), it)
            name = urllib.parse.urlparse(it["url"]).path.rsplit("/", 1)[-1]
            seed = int(name[5:8])
            self.assert_item_file(it, name, size=1500, seed=seed, daemon=d)
        by_source = {ps["source"]: ps for ps in job["per_source"]}
        self.assertEqual(by_source["broken"]["state"], "failed")
        self.assertEqual(by_source["broken"]["error"]["code"], "http_5xx")
        self.assertEqual(by_source["empty"]["state"], "done")
        self.assertEqual(by_source["empty"]["items"], 0)
        # at most 1 + MAX_RETRIES_PER_SOURCE listing requests for the broken
        # source: the job ends as soon as max is reached, its retries with it
        self.assertIn(len([p for p in self.search.pages if p[0] == "broken"]), (1, 2, 3))
        # pages fetched until max candidates: 12 at 5 per page is 3 pages
        self.assertEqual([p[1] for p in self.search.pages if p[0] == "good"], [1, 2, 3])
        self.assertEqual({p[2] for p in self.search.pages}, {"red cars"})
        self.assertEqual(d.get_job(job["id"])["query"], "red cars")

    def test_failing_downloads_are_filled_in(self):
        # good lists 20 URLs; the first five answer 404, so later candidates fill in
        self.search.total = 20

        def broken_first(handler, path, params):
            handler.send_json({"results": [{"url": self.origin.url("/dead%d" % i, status=404)} for i in range(5)]
                               if params.get("page") == "1" else []})
        self.origin.add_route("/search/dead", broken_first)
        d = self.start_with_sources(good=self.search.source("good"), dead=self.search.source("dead"))
        job = d.post_job({"query": "x", "sources": ["dead", "good"], "max": 8})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(job["state"], "succeeded", job)
        self.assertEqual(job["progress"]["succeeded"], 8)
        # the job ends once max is reached: each dead candidate either
        # failed on its 404 or was still waiting then (skipped max_reached),
        # depending on how fast good's files came in
        dead = [it for it in self.items(job["id"], daemon=d) if "/dead" in it["url"]]
        self.assertEqual(len(dead), 5)
        for it in dead:
            if it["state"] == "failed":
                self.assert_item_error(it, "http_4xx")
            else:
                self.assert_item_error(it, "max_reached", state="skipped")
        self.assertEqual(job["progress"]["failed"], sum(it["state"] == "failed" for it in dead))
        self.assertTrue(all("/dead" not in it["url"] for it in self.items(job["id"], daemon=d)
                            if it["state"] == "succeeded"))

    def test_paging_until_empty_page(self):
        self.search.total = 7
        d = self.start_with_sources(good=self.search.source("good"))
        job = d.post_job({"query": "few", "sources": ["good"], "max": 50})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(job["state"], "succeeded", job)
        self.assertEqual(job["progress"]["total"], 7)
        self.assertEqual([p[1] for p in self.search.pages], [1, 2, 3])

    def test_unknown_source_is_400_and_sources_listed(self):
        d = self.start_with_sources(good=self.search.source("good"))
        ans = d.request("POST", "/v1/jobs", body={"query": "x", "sources": ["good", "nope"]})
        self.assert_problem(ans, 400, field="sources[1]")
        st, _h, data = d.get("/v1/sources")
        self.assertEqual(st, 200, data)
        self.assertEqual([s["name"] for s in data["sources"]], ["good"])
        self.assertEqual(data["sources"][0]["kind"], "search")

    def test_missing_secret_makes_source_unavailable(self):
        spec = self.search.source("good")
        spec["headers"] = {"Authorization": "Bearer {env:HAULD_TEST_NO_SUCH_TOKEN}"}
        d = self.start_with_sources(locked=spec)
        st, _h, data = d.get("/v1/sources")
        self.assertEqual(st, 200, data)
        self.assertFalse(data["sources"][0]["available"])
        job = d.post_job({"query": "x", "sources": ["locked"]})
        job = d.wait_job(job["id"])
        self.assertEqual(job["state"], "failed")
        self.assertEqual(job["per_source"][0]["error"]["code"], "source_unavailable")
        self.assertEqual(self.search.pages, [])

    def test_hostile_names_stay_inside_the_source_folder(self):
        d = self.start_with_sources(env={"ACCEPT_CONTENT": "any"}, hostile=self.search.source("hostile"))
        job = d.post_job({"query": "x", "sources": ["hostile"]})
        job = d.wait_job(job["id"], timeout=30)
        items = self.items(job["id"], daemon=d)
        self.assertEqual(len(items), 8)
        folder = os.path.realpath(os.path.join(d.download_dir, job["id"], "hostile"))
        for it in items:
            self.assertEqual(it["state"], "succeeded", it)
            full = os.path.realpath(os.path.join(d.download_dir, it["path"]))
            self.assertEqual(os.path.dirname(full), folder, it)
            base = os.path.basename(full)
            self.assertFalse(base.startswith("."), base)
            self.assertLessEqual(len(base.encode()), 255)
            self.assertNotIn("\u202e", base)
        self.assertEqual(sorted(os.listdir(os.path.join(d.download_dir, job["id"]))), ["hostile"])
        self.assertEqual(len(os.listdir(folder)), 8)

    def test_bad_source_file_stops_start_up(self):
        d = hauldtest.Daemon(FAST, start=False)
        self._daemons.append(d)
        d.write_source("bad", {"search_url": "ftp://x/{query}", "items": "/r", "url": "/u"})
        proc = subprocess.run([hauldtest.hauld_binary(), "--config", "/dev/null", "--check-config"],
                              env=d.environ(), capture_output=True, text=True, timeout=10)
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("bad.json", proc.stderr)
        self.assertIn("search_url", proc.stderr)

    def test_bad_setting_stops_start_up(self):
        d = hauldtest.Daemon(FAST, start=False)
        self._daemons.append(d)
        proc = subprocess.run([hauldtest.hauld_binary(), "--config", "/dev/null", "--check-config",
                               "MAX_CONCURRENT_SOURCES=0"],
                              env=d.environ(), capture_output=True, text=True, timeout=10)
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("MAX_CONCURRENT_SOURCES", proc.stderr)


class StoreSetting(hauldtest.HauldTestCase):
    start_daemon = False

    def test_unreachable_store_fails_without_showing_its_password(self):
        d = hauldtest.Daemon(FAST, start=False)
        self._daemons.append(d)
        port = hauldtest.free_port()  # nothing listens there
        proc = subprocess.run([hauldtest.hauld_binary(), "--config", "/dev/null",
                               "STORE=postgresql://hauld:s3cret@127.0.0.1:%d/hauld" % port],
                              env=d.environ(), capture_output=True, text=True, timeout=20)
        self.assertNotEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("cannot open the job table postgresql://hauld:***@127.0.0.1", proc.stderr)
        self.assertNotIn("s3cret", proc.stderr)

    def test_store_of_an_unknown_kind_is_a_config_error(self):
        d = hauldtest.Daemon(FAST, start=False)
        self._daemons.append(d)
        proc = subprocess.run([hauldtest.hauld_binary(), "--config", "/dev/null",
                               "STORE=mysql://hauld:s3cret@db.example/hauld"],
                              env=d.environ(), capture_output=True, text=True, timeout=10)
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("STORE", proc.stderr)
        self.assertNotIn("s3cret", proc.stderr)


if __name__ == "__main__":
    hauldtest.main()
