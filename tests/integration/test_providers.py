"""Query sources against the fake search providers (tests/fake_origin.py):
listing pages while the job needs candidates, replacing failed ones, each
end-of-results signal and limit, headers only to a source's download hosts
(also across redirects), USER_AGENT, max_query_length, optional secrets and
requests_per_second.

Most sources are the shipped examples of etc/sources.d with their search
URL pointed at the fake provider, so the files users install are what is
tested. How many pages a source listed and why its listing stopped are in
its per_source entry (`pages`, `listing`) and in the daemon's "listed N
candidates in P pages (why)" log line; both are checked."""

import json
import os
import re
import urllib.parse

import hauldtest
from fake_origin import FakeOrigin, provider_result_kind

FAST = {
    "RETRY_BACKOFF_BASE": "0.05",
    "RETRY_BACKOFF_MAX": "0.2",
    "MAX_RETRIES_PER_SOURCE": "1",
    "MAX_RETRIES_PER_ITEM": "0",
}

SHIPPED_DIR = os.path.join(hauldtest.SRCDIR, "etc", "sources.d")

# the real API's prefix in a shipped search_url -> the fake provider's
API_PREFIX = {
    "openverse": ("https://api.openverse.org/", "/api/openverse/"),
    "wikimedia-commons": ("https://commons.wikimedia.org/", "/api/wikimedia/"),
    "pixabay": ("https://pixabay.com/api/", "/api/pixabay/"),
    "google-cse": ("https://www.googleapis.com/", "/api/google/"),
}

# the query parameter that tells a provider's pages apart
PAGE_PARAM = {"openverse": "page", "pixabay": "page", "wikimedia": "gsroffset", "google": "start"}

UA = "hauld-it/1.0 (+http://ops.example.invalid/bot; ops@example.invalid)"


def shipped(name, origin, extra="", **changes):
    """The example source etc/sources.d/NAME.json with its search URL on
    origin's fake provider, extra appended to the URL's query (e.g.
    "&total=12"), and changes applied (a None value drops the field).
    requests_per_second is dropped unless changes set it: the shipped
    rates would make each test take minutes."""
    with open(os.path.join(SHIPPED_DIR, name + ".json")) as f:
        spec = json.load(f)
    real, fake = API_PREFIX[name]
    assert spec["search_url"].startswith(real), spec["search_url"]
    spec["search_url"] = origin.base_url + fake + spec["search_url"][len(real):] + extra
    spec.pop("requests_per_second", None)
    for k, v in changes.items():
        if v is None:
            spec.pop(k, None)
        else:
            spec[k] = v
    return spec


def searches(origin, provider):
    """The origin's log entries of listing requests to a fake provider."""
    return [e for e in origin.requests() if e["path"].startswith("/api/%s/" % provider)]


def pages(origin, provider):
    """The page parameter of each listing request to provider, in order."""
    return [int(e["params"][PAGE_PARAM[provider]]) for e in searches(origin, provider)]


def downloads(origin, prefix=""):
    """The origin's log entries of /file/PREFIX... requests."""
    return [e for e in origin.requests() if e["path"].startswith("/file/" + prefix)]


def listing_end(daemon, job_id, source):
    """(candidates, pages, why) of the log line saying how a source's
    listing ended cleanly, or None when there is none."""
    m = re.search(r"job %s: source %s listed (\d+) candidates in (\d+) pages? \((\w+)\)"
                  % (re.escape(job_id), re.escape(source)), daemon.log_text())
    return (int(m.group(1)), int(m.group(2)), m.group(3)) if m else None


def result_index(url):
    """i of a fake provider's /file/<provider>-<query>-<i>.<ext> URL."""
    name = urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]
    return int(name.rsplit(".", 1)[0].rsplit("-", 1)[1])


class ProviderTestCase(hauldtest.HauldTestCase):
    start_daemon = False

    def start_with(self, env=None, **sources):
        d = hauldtest.Daemon(dict(FAST, **(env or {})), start=False)
        self._daemons.append(d)
        self.addCleanup(d.stop)
        for name, spec in sources.items():
            d.write_source(name, spec)
        d.start()
        return d

    def second_origin(self):
        """Another FakeOrigin on its own port whose URLs name "localhost":
        a second host (self.origin's URLs name 127.0.0.1)."""
        o = FakeOrigin(url_host="localhost").start()
        self.addCleanup(o.stop)
        return o

    def per_source(self, job, name):
        return {ps["source"]: ps for ps in job["per_source"]}[name]

    def assert_clean_end(self, d, job, source, pages_listed, why):
        """The source's listing ended on its own signal: the source is done,
        without an error, and the log says after how many pages and why."""
        ps = self.per_source(job, source)
        self.assertEqual(ps["state"], "done", ps)
        self.assertIsNone(ps["error"], ps)
        self.assertEqual(ps["circuit"], "closed", ps)
        self.assertEqual((ps["pages"], ps["listing"]), (pages_listed, why), ps)
        end = listing_end(d, job["id"], source)
        self.assertIsNotNone(end, "no 'listed ... candidates' line for %s" % source)
        self.assertEqual(end[1:], (pages_listed, why), end)
        self.assertEqual(end[0], ps["items"], (end, ps))

    def assert_items_as_listed(self, d, job, provider, n):
        """The job's items are results 0..n-1 of the fake provider: images
        succeeded with the origin's bytes, HTML and audio invalid_content."""
        items = self.items(job["id"], daemon=d)
        self.assertEqual(sorted(result_index(it["url"]) for it in items), list(range(n)))
        for it in items:
            i = result_index(it["url"])
            kind = provider_result_kind(i)
            if kind in ("html", "mp3"):
                self.assert_item_error(it, "invalid_content")
            else:
                name = urllib.parse.urlsplit(it["url"]).path.rsplit("/", 1)[-1]
                self.assert_item_file(it, name, size=800 + (i % 50) * 10, seed=i, type=kind, daemon=d)
        good = sum(provider_result_kind(i) not in ("html", "mp3") for i in range(n))
        self.assertEqual(job["progress"]["succeeded"], good, job)
        self.assertEqual(job["progress"]["failed"], n - good, job)
        self.assertEqual(job["state"], "succeeded" if good == n else "partial", job)


class Refill(ProviderTestCase):
    """Pages are listed while the job needs candidates, and again to
    replace candidates that failed."""

    def test_wikimedia_any_file_type_lists_on_until_max_images(self):
        # every file type: of each 5 results only the first is a bitmap
        # (then audio, video, drawing, office), and with ACCEPT_CONTENT=image
        # the other four fail; max 4 needs the bitmaps 0, 5, 10 and 15
        spec = shipped("wikimedia-commons", self.origin, per_page=5)
        spec["search_url"] = spec["search_url"].replace("filetype%3Abitmap%20", "")
        d = self.start_with({"ACCEPT_CONTENT": "image"}, **{"wikimedia-commons": spec})
        job = d.post_job({"query": "harbour", "sources": ["wikimedia-commons"], "max": 4})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(job["state"], "succeeded", job)
        self.assertEqual(job["progress"]["succeeded"], 4, job)
        items = self.items(job["id"], daemon=d)
        ok = [it for it in items if it["state"] == "succeeded"]
        self.assertEqual(sorted(result_index(it["url"]) for it in ok), [0, 5, 10, 15])
        for it in ok:
            self.assertTrue(it["content_type"].startswith("image/"), it)
        failed = [it for it in items if it["state"] == "failed"]
        self.assertGreaterEqual(len(failed), 12)  # the non-bitmaps of pages 1 to 3
        for it in failed:
            self.assert_item_error(it, "invalid_content")
            self.assertNotEqual(result_index(it["url"]) % 5, 0, it)
        for it in items:
            if it["state"] == "skipped":
                self.assert_item_error(it, "max_reached", state="skipped")
        # pages were listed to replace the failed candidates, and no more
        self.assertEqual(pages(self.origin, "wikimedia"), [0, 5, 10, 15])
        ps = self.per_source(job, "wikimedia-commons")
        self.assertEqual(ps["state"], "done", ps)
        self.assertIsNone(ps["error"], ps)
        self.assertEqual((ps["items"], ps["succeeded"], ps["failed"]), (len(items), 4, len(failed)), ps)
        # WIKIMEDIA_USER_AGENT is unset: no header of the source's, so every
        # request carries the default USER_AGENT
        agents = {e["headers"].get("user-agent") for e in self.origin.requests()}
        self.assertEqual(len(agents), 1, agents)
        self.assertTrue(agents.pop().startswith("hauld/"))

    def test_wikimedia_bitmaps_only_lists_just_enough_pages(self):
        d = self.start_with(**{"wikimedia-commons": shipped("wikimedia-commons", self.origin, per_page=5)})
        job = d.post_job({"query": "harbour", "sources": ["wikimedia-commons"], "max": 7})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(job["state"], "succeeded", job)
        self.assertEqual(job["progress"]["succeeded"], 7, job)
        self.assertEqual(job["progress"]["failed"], 0, job)
        # 7 candidates at 5 a page: two pages, and no third
        self.assertEqual(pages(self.origin, "wikimedia"), [0, 5])
        for e in searches(self.origin, "wikimedia"):
            self.assertEqual(e["params"]["gsrsearch"], "filetype:bitmap harbour")

    def test_openverse_replaces_html_and_audio(self):
        # results 6 (HTML) and 10 (audio) fail: max 10 needs result 11, on page 3
        d = self.start_with(openverse=shipped("openverse", self.origin, per_page=5))
        job = d.post_job({"query": "red fox", "sources": ["openverse"], "max": 10})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(job["state"], "succeeded", job)
        self.assertEqual(job["progress"]["succeeded"], 10, job)
        items = self.items(job["id"], daemon=d)
        ok = sorted(result_index(it["url"]) for it in items if it["state"] == "succeeded")
        self.assertEqual(ok, [0, 1, 2, 3, 4, 5, 7, 8, 9, 11])
        for it in items:
            if it["state"] == "failed":
                self.assert_item_error(it, "invalid_content")
                self.assertIn(result_index(it["url"]), (6, 10))
        self.assertEqual(job["progress"]["failed"], 2, job)
        self.assertEqual(pages(self.origin, "openverse"), [1, 2, 3])
        self.assertEqual({e["params"]["q"] for e in searches(self.origin, "openverse")}, {"red fox"})

    def test_web_pages_first_do_not_stop_the_source(self):
        # the five best hits are web pages, downloaded one at a time, under
        # the default CIRCUIT_BREAKER_THRESHOLD (5): the images after them
        # (5, 7, 8; 6 is HTML too) are still what the job gets
        spec = shipped("openverse", self.origin, "&html_first=5", per_page=10, max_connections=1)
        d = self.start_with(openverse=spec)
        job = d.post_job({"query": "heron", "sources": ["openverse"], "max": 3})
        job = d.wait_job(job["id"], timeout=30)
        items = self.items(job["id"], daemon=d)
        self.assertEqual(job["state"], "succeeded", (job, [(it["url"], it["error"]) for it in items]))
        ok = sorted(result_index(it["url"]) for it in items if it["state"] == "succeeded")
        self.assertEqual(ok, [5, 7, 8])
        for it in items:
            if it["state"] == "failed":
                self.assert_item_error(it, "invalid_content")
                self.assertEqual(provider_result_kind(result_index(it["url"]), 5), "html", it)
        self.assertEqual(self.per_source(job, "openverse")["circuit"], "closed", job)


class EndOfResults(ProviderTestCase):
    """Each end-of-results signal and limit ends the listing without the
    source failing, and no page after the end is requested."""

    def test_openverse_empty_page(self):
        # without `total`, only the empty page 3 says the 10 results are all
        spec = shipped("openverse", self.origin, "&total=10", per_page=5, total=None)
        d = self.start_with(openverse=spec)
        job = d.post_job({"query": "owl", "sources": ["openverse"], "max": 50})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(pages(self.origin, "openverse"), [1, 2, 3])
        self.assert_clean_end(d, job, "openverse", 3, "exhausted")
        self.assert_items_as_listed(d, job, "openverse", 10)  # result 6 is HTML: partial

    def test_openverse_result_count_reached(self):
        d = self.start_with(openverse=shipped("openverse", self.origin, "&total=10", per_page=5))
        job = d.post_job({"query": "owl", "sources": ["openverse"], "max": 50})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(pages(self.origin, "openverse"), [1, 2])
        self.assert_clean_end(d, job, "openverse", 2, "exhausted")
        self.assert_items_as_listed(d, job, "openverse", 10)

    def test_pixabay_total_hits_reached(self):
        # 6 hits, all images, at 3 a page: page 2 reaches totalHits
        d = self.start_with({"PIXABAY_KEY": "k-5f2e9a41c7"},
                            pixabay=shipped("pixabay", self.origin, "&total=6", per_page=3))
        job = d.post_job({"query": "tulip", "sources": ["pixabay"], "max": 50})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(pages(self.origin, "pixabay"), [1, 2])
        self.assert_clean_end(d, job, "pixabay", 2, "exhausted")
        self.assert_items_as_listed(d, job, "pixabay", 6)
        # the key is in the URL: never in the log nor the API
        self.assertEqual({e["params"]["key"] for e in searches(self.origin, "pixabay")}, {"k-5f2e9a41c7"})
        self.assertNotIn("k-5f2e9a41c7", d.log_text())
        self.assertNotIn("k-5f2e9a41c7", json.dumps(d.get_job(job["id"])))

    def test_pixabay_end_status_past_the_last_page(self):
        # without `total`, page 3 (2 hits) is not the end; page 4 answers
        # 400 "page is out of valid range", which end_status [400] reads as
        # the end
        spec = shipped("pixabay", self.origin, "&total=12", per_page=5, total=None)
        d = self.start_with({"PIXABAY_KEY": "k-5f2e9a41c7"}, pixabay=spec)
        job = d.post_job({"query": "tulip", "sources": ["pixabay"], "max": 50})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(pages(self.origin, "pixabay"), [1, 2, 3, 4])
        self.assert_clean_end(d, job, "pixabay", 3, "exhausted")
        self.assert_items_as_listed(d, job, "pixabay", 12)  # 6 HTML, 10 audio

    def test_a_page_that_failed_once_is_retried(self):
        # the first listing request answers 503, its retry the page: the
        # listing goes on, and the source ends without an error
        spec = shipped("openverse", self.origin, "&total=10&fail=1&key=ov-list", per_page=5)
        d = self.start_with(openverse=spec)
        job = d.post_job({"query": "owl", "sources": ["openverse"], "max": 50})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(pages(self.origin, "openverse"), [1, 1, 2])
        self.assert_clean_end(d, job, "openverse", 2, "exhausted")
        self.assert_items_as_listed(d, job, "openverse", 10)

    def test_pixabay_bad_key_on_page_one_fails_the_source(self):
        d = self.start_with({"PIXABAY_KEY": "invalid"}, pixabay=shipped("pixabay", self.origin))
        job = d.post_job({"query": "tulip", "sources": ["pixabay"], "max": 5})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(job["state"], "failed", job)
        ps = self.per_source(job, "pixabay")
        self.assertEqual(ps["state"], "failed", ps)
        self.assertEqual(ps["error"]["code"], "http_4xx", ps)
        self.assertEqual(ps["items"], 0, ps)
        self.assertIsNone(listing_end(d, job["id"], "pixabay"))
        # a 4xx is not retried, and page 1 is never past the end
        self.assertEqual(pages(self.origin, "pixabay"), [1])

    def test_openverse_max_pages(self):
        d = self.start_with(openverse=shipped("openverse", self.origin, per_page=5, max_pages=2))
        job = d.post_job({"query": "owl", "sources": ["openverse"], "max": 50})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(pages(self.origin, "openverse"), [1, 2])
        self.assert_clean_end(d, job, "openverse", 2, "page_limit")
        self.assert_items_as_listed(d, job, "openverse", 10)

    def test_google_max_results_stops_at_start_91(self):
        # the shipped file as is: 10 a page, max_results 100, of 250 results
        d = self.start_with({"GOOGLE_CSE_KEY": "gk-1", "GOOGLE_CSE_CX": "cx-1"},
                            **{"google-cse": shipped("google-cse", self.origin)})
        job = d.post_job({"query": "lighthouse", "sources": ["google-cse"], "max": 200})
        job = d.wait_job(job["id"], timeout=45)
        self.assertEqual(pages(self.origin, "google"), list(range(1, 92, 10)))
        for e in searches(self.origin, "google"):
            self.assertEqual(e["params"]["num"], "10")
        self.assert_clean_end(d, job, "google-cse", 10, "result_limit")
        self.assert_items_as_listed(d, job, "google", 100)

    def test_google_no_items_key_is_an_empty_page(self):
        # 3 results: page 1 holds them, page 2 (start=11) has no "items" key
        spec = shipped("google-cse", self.origin, "&total=3", total=None)
        d = self.start_with({"GOOGLE_CSE_KEY": "gk-1", "GOOGLE_CSE_CX": "cx-1"}, **{"google-cse": spec})
        job = d.post_job({"query": "lighthouse", "sources": ["google-cse"], "max": 20})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(pages(self.origin, "google"), [1, 11])
        self.assert_clean_end(d, job, "google-cse", 2, "exhausted")
        self.assert_items_as_listed(d, job, "google", 3)


class Headers(ProviderTestCase):
    """A source's headers go with its listings and with downloads from its
    download_hosts only; a redirect to another host leaves them behind."""

    def test_headers_only_to_declared_download_hosts(self):
        other = self.second_origin()  # "localhost": the declared host
        media = "&total=6&media=%s,%s" % (other.base_url, self.origin.base_url)
        spec = shipped("openverse", self.origin, media, per_page=3, headers={"X-Api-Key": "{env:HAULD_IT_KEY}"},
                       download_hosts=["localhost"])
        # results 0, 2, 4 are on localhost, 1, 3, 5 on 127.0.0.1; result 2
        # redirects to 127.0.0.1, result 4 to another path on localhost
        other.set_override("/file/openverse-gull-2.gif",
                           redirect=self.origin.url("/file/moved.png", size=900))
        other.set_override("/file/openverse-gull-4.jpg",
                           redirect=other.url("/file/moved-here.png", size=950))
        d = self.start_with({"HAULD_IT_KEY": "sk-71d0c3"}, openverse=spec)
        job = d.post_job({"query": "gull", "sources": ["openverse"], "max": 6})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(job["state"], "succeeded", job)
        items = {result_index(it["url"]): it for it in self.items(job["id"], daemon=d)}
        self.assert_item_file(items[2], "moved.png", size=900, daemon=d)
        self.assert_item_file(items[4], "moved-here.png", size=950, daemon=d)

        def key_of(e):
            return e["headers"].get("x-api-key")
        self.assertEqual(pages(self.origin, "openverse"), [1, 2])
        for e in searches(self.origin, "openverse"):
            self.assertEqual(key_of(e), "sk-71d0c3", e["query"])
        on_declared = downloads(other)
        self.assertEqual(sorted(e["path"] for e in on_declared),
                         ["/file/moved-here.png", "/file/openverse-gull-0.png", "/file/openverse-gull-2.gif",
                          "/file/openverse-gull-4.jpg"])
        for e in on_declared:
            self.assertEqual(key_of(e), "sk-71d0c3", e["path"])
        elsewhere = downloads(self.origin)
        self.assertEqual(sorted(e["path"] for e in elsewhere),
                         ["/file/moved.png", "/file/openverse-gull-1.jpg", "/file/openverse-gull-3.png",
                          "/file/openverse-gull-5.gif"])
        for e in elsewhere:
            self.assertIsNone(key_of(e), e["path"])

    def test_user_agent_setting_and_a_source_of_its_own(self):
        other = self.second_origin()
        media = "&total=20&media=%s,%s" % (other.base_url, self.origin.base_url)
        # Wikimedia (bitmaps: results 0, 5, 10, 15) with its optional
        # WIKIMEDIA_USER_AGENT set, media on localhost (declared) and
        # 127.0.0.1; result 10 redirects from localhost to 127.0.0.1
        wiki = shipped("wikimedia-commons", self.origin, media, download_hosts=["localhost"])
        other.set_override("/file/wikimedia-dunes-10.jpg",
                           redirect=self.origin.url("/file/moved.png", size=900))
        plain = shipped("openverse", self.origin, "&total=4")
        own = "dunes-bot/2.0 (https://ops.example.invalid/dunes)"
        d = self.start_with({"USER_AGENT": UA, "WIKIMEDIA_USER_AGENT": own},
                            **{"wikimedia-commons": wiki, "openverse": plain})
        job = d.post_job({"query": "dunes", "sources": ["wikimedia-commons", "openverse"], "max": 8})
        job = d.wait_job(job["id"], timeout=30)
        self.assertEqual(job["state"], "succeeded", job)
        self.assertEqual(job["progress"]["succeeded"], 8, job)

        def agents(entries):
            return {e["headers"].get("user-agent") for e in entries}
        self.assertEqual(agents(searches(self.origin, "openverse")), {UA})
        self.assertEqual(agents(downloads(self.origin, "openverse-")), {UA})
        self.assertEqual(agents(searches(self.origin, "wikimedia")), {own})
        self.assertEqual(sorted(e["path"] for e in downloads(other)),
                         ["/file/wikimedia-dunes-0.png", "/file/wikimedia-dunes-10.jpg"])
        self.assertEqual(agents(downloads(other)), {own})
        elsewhere = downloads(self.origin, "wikimedia-") + downloads(self.origin, "moved")
        self.assertEqual(sorted(e["path"] for e in elsewhere),
                         ["/file/moved.png", "/file/wikimedia-dunes-15.png", "/file/wikimedia-dunes-5.gif"])
        self.assertEqual(agents(elsewhere), {UA})

    def test_optional_secret(self):
        token = "ov-tok-93be1d"
        spec = shipped("openverse", self.origin, "&total=3", per_page=5)
        for env, want in (({"OPENVERSE_TOKEN": None}, None), ({"OPENVERSE_TOKEN": ""}, None),
                          ({"OPENVERSE_TOKEN": token}, "Bearer " + token)):
            with self.subTest(env=env):
                self.origin.reset_stats()
                d = self.start_with(env, openverse=spec)
                st, _h, data = d.get("/v1/sources")
                self.assertEqual(st, 200, data)
                self.assertTrue(data["sources"][0]["available"], data)
                job = d.post_job({"query": "moth", "sources": ["openverse"], "max": 3})
                job = d.wait_job(job["id"], timeout=30)
                self.assertEqual(job["state"], "succeeded", job)
                self.assertEqual(job["progress"]["succeeded"], 3, job)
                self.assertEqual([e["headers"].get("authorization") for e in searches(self.origin, "openverse")],
                                 [want])
                # no download_hosts: the token stays with the API
                self.assertEqual({e["headers"].get("authorization") for e in downloads(self.origin)}, {None})
                self.assertNotIn(token, d.log_text())
                d.stop()


class Limits(ProviderTestCase):

    def test_max_query_length(self):
        # the shipped Pixabay file allows 100 characters (Pixabay's own limit)
        d = self.start_with({"PIXABAY_KEY": "k-1"}, pixabay=shipped("pixabay", self.origin, "&total=3", per_page=3),
                            openverse=shipped("openverse", self.origin, "&total=3"))
        for q in ("a" * 101, "\u00e9" * 101, "b" * 256):
            ans = d.request("POST", "/v1/jobs", body={"query": q, "sources": ["openverse", "pixabay"]})
            data = self.assert_problem(ans, 400, field="query")
            self.assertIn("pixabay", json.dumps(data))
        self.assertEqual(self.origin.count(), 0)
        # at the limit, counted in characters: 100 "é" are 200 bytes
        for q in ("a" * 100, "\u00e9" * 100):
            job = d.post_job({"query": q, "sources": ["pixabay"], "max": 3})
            job = d.wait_job(job["id"], timeout=30)
            self.assertEqual(job["state"], "succeeded", job)
            self.assertEqual(searches(self.origin, "pixabay")[-1]["params"]["q"], q)
        # other sources take longer queries
        job = d.post_job({"query": "c" * 150, "sources": ["openverse"], "max": 3})
        self.assertEqual(d.wait_job(job["id"], timeout=30)["state"], "succeeded")

    def test_rate_shared_by_listing_and_downloads_across_jobs(self):
        # 2 requests a second, a burst of 2: in any two requests after the
        # first two, half a second passes; two jobs of 2 pages and 4
        # downloads each make 12 requests, 5 s at least. The downloads
        # share the bucket because their host is the source's own
        # (download_hosts).
        spec = shipped("openverse", self.origin, "&total=4", per_page=2, requests_per_second=2,
                       download_hosts=["127.0.0.1"])
        d = self.start_with(openverse=spec)
        jobs = [d.post_job({"query": q, "sources": ["openverse"], "max": 4}) for q in ("kite", "wren")]
        for job in jobs:
            job = d.wait_job(job["id"], timeout=30)
            self.assertEqual(job["state"], "succeeded", job)
            self.assertEqual(job["progress"]["succeeded"], 4, job)
        log = self.origin.requests()
        self.assertEqual(len(log), 12, [e["path"] for e in log])
        self.assertEqual(len(searches(self.origin, "openverse")), 4)
        times = [e["time"] for e in log]
        for k in range(len(times) - 2):
            self.assertGreaterEqual(times[k + 2] - times[k], 0.45,
                                    "requests %d and %d came %.3f s apart" % (k, k + 2, times[k + 2] - times[k]))
        span = times[-1] - times[0]
        self.assertGreaterEqual(span, 4.9)
        self.assertLess(span, 9.0)

    def test_rate_paces_listing_not_downloads_from_other_hosts(self):
        # the files are on a host the source does not own (the search goes
        # to "localhost", the files come from "127.0.0.1"): only the search
        # requests take from its requests_per_second
        # (results 0..5 are all images: see provider_result_kind)
        spec = shipped("openverse", self.origin, "&total=6", per_page=3, requests_per_second=1)
        self.assertIn("://127.0.0.1:", spec["search_url"])
        spec["search_url"] = spec["search_url"].replace("://127.0.0.1:", "://localhost:", 1)
        d = self.start_with(openverse=spec)
        job = d.wait_job(d.post_job({"query": "moth", "sources": ["openverse"], "max": 6})["id"], timeout=30)
        self.assertEqual(job["state"], "succeeded", job)
        lists = [e["time"] for e in searches(self.origin, "openverse")]
        self.assertEqual(len(lists), 2)
        self.assertGreaterEqual(lists[1] - lists[0], 0.9)
        files = sorted(e["time"] for e in self.origin.requests() if e["path"].startswith("/file/"))
        self.assertEqual(len(files), 6)
        # the three downloads of one page go together, not a second apart
        self.assertLess(files[2] - files[0], 0.9, files)

    def test_rate_paces_downloads_from_the_search_host(self):
        # files on the search URL's own host are the source's: they take
        # from its requests_per_second too, a second apart
        spec = shipped("openverse", self.origin, "&total=3", per_page=3, requests_per_second=1)
        d = self.start_with(openverse=spec)
        job = d.wait_job(d.post_job({"query": "moth", "sources": ["openverse"], "max": 3})["id"], timeout=30)
        self.assertEqual(job["state"], "succeeded", job)
        files = sorted(e["time"] for e in self.origin.requests() if e["path"].startswith("/file/"))
        self.assertEqual(len(files), 3)
        self.assertGreaterEqual(files[2] - files[0], 1.8, files)
        st, _h, stats = d.get("/v1/stats")
        self.assertEqual(st, 200)
        own = stats["sources"]["openverse"]
        self.assertEqual((own["downloads"]["attempts"], own["downloads"]["successes"]), (3, 3), own)


if __name__ == "__main__":
    hauldtest.main()
