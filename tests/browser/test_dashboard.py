"""The dashboard at GET / in a real headless Chromium (selenium and
chromedriver), against the real daemon and the fake origin of the
integration tests.

What a person sees is asserted: the token prompt, field errors next to
their fields, bytes growing without a reload, the actions a job allows, a
file fetched through its link, paging, filters, keyboard-only use and a
400 px layout without horizontal scrolling. Every test fails on a console
error or a Content-Security-Policy violation, except the HTTP errors it
provokes on purpose. Screenshots of the main views go to
$HAULD_BUILDDIR/browser-screenshots/.

Needs Debian's chromium, chromium-driver and python3-selenium (./dev
installs them); HAULD_CHROMIUM and HAULD_CHROMEDRIVER name other binaries.
Without them, or when Chromium cannot start here, the suite says why and
exits 77 (skipped).
"""

import base64
import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import zlib

EX_SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
SYSTEM_PYTHON = "/usr/bin/python3"


def _import_selenium():
    """selenium, from this interpreter or Debian's (a python3 first on PATH
    may be another one, without Debian's packages)."""
    if importlib.util.find_spec("selenium"):
        return
    if os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PYTHON) and os.access(SYSTEM_PYTHON, os.X_OK) \
            and not os.environ.get("HAULD_BROWSER_REEXEC"):
        os.environ["HAULD_BROWSER_REEXEC"] = "1"
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON] + sys.argv)
    sys.stderr.write("SKIP: python3-selenium is not installed (./dev installs it)\n")
    sys.exit(EX_SKIP)


_import_selenium()

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import hauldtest  # noqa: E402

TOKEN = "dashboard-test-token-0123456789"
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,900")
WAIT_S = 15.0
SHOT_MAX_HEIGHT = 4000
FAST = {
    "RETRY_BACKOFF_BASE": "0.05",
    "RETRY_BACKOFF_MAX": "0.2",
    "MAX_RETRIES_PER_SOURCE": "0",
    "MAX_RETRIES_PER_ITEM": "0",
}


def screenshot_dir():
    base = os.environ.get("HAULD_BUILDDIR") or os.path.join(hauldtest.SRCDIR, "build")
    d = os.path.join(base, "browser-screenshots")
    os.makedirs(d, exist_ok=True)
    return d


def tiny_png(w=16, h=12):
    """A real PNG image (a gradient), so the thumbnail can be decoded."""
    raw = b"".join(b"\0" + b"".join(bytes((x * 15 % 256, y * 20 % 256, 160)) for x in range(w))
                   for y in range(h))

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


PNG = tiny_png()


# ---- the browser ------------------------------------------------------------------

_browser = None
_download_dir = None


def browser():
    """One Chromium for the whole suite; each test has its own daemon, so
    its own origin (port) and sessionStorage."""
    global _browser, _download_dir
    if _browser:
        return _browser
    chromium = os.environ.get("HAULD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("HAULD_CHROMEDRIVER") or shutil.which("chromedriver")
    if not chromium or not driver:
        raise unittest.SkipTest("chromium and chromium-driver are not installed (./dev installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for f in CHROME_FLAGS:
        opts.add_argument(f)
    opts.add_argument("--user-data-dir=" + tempfile.mkdtemp(prefix="hauld-chromium-"))
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    try:
        _browser = webdriver.Chrome(service=Service(driver), options=opts)
    except WebDriverException as e:
        why = str(e).strip().splitlines()[0]
        try:  # a missing library, say, shows when the binary runs alone
            p = subprocess.run([chromium, "--headless", "--no-sandbox", "--version"], capture_output=True,
                               text=True, timeout=30)
            why += " (%s: %s)" % (os.path.basename(chromium), (p.stderr or p.stdout or "exit %d" % p.returncode)
                                  .strip().splitlines()[-1])
        except (OSError, subprocess.SubprocessError) as e2:
            why += " (%s)" % e2
        raise unittest.SkipTest("Chromium cannot start here: %s" % why)
    _download_dir = tempfile.mkdtemp(prefix="hauld-downloads-")
    _browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": _download_dir})
    _browser.set_script_timeout(WAIT_S)
    return _browser


def tearDownModule():
    global _browser
    if _browser:
        _browser.quit()
        _browser = None
    if _download_dir:
        shutil.rmtree(_download_dir, ignore_errors=True)


class DashboardCase(hauldtest.HauldTestCase):
    daemon_env = FAST
    token = None  # the daemon's API token, if any
    sources = ("openverse",)  # query sources written before the daemon starts

    # -- set-up --

    def setUp(self):
        self.b = browser()
        self.origin = hauldtest.FakeOrigin().start()
        self.addCleanup(self.origin.stop)
        self.origin.add_route("/img/", lambda h, path, params: h.send_simple(200, PNG, "image/png"))
        self.allowed = []  # (status or net::ERR_ name, URL regex) of failed loads a test provokes
        self.b.get("about:blank")
        self.b.get_log("browser")
        self.b.get_log("performance")
        self.daemon = self.start_daemon_with(self.daemon_env)
        self.addCleanup(self.check_console)  # before the daemon stops (cleanups run last first)
        for f in os.listdir(_download_dir):
            os.unlink(os.path.join(_download_dir, f))

    def start_daemon_with(self, env):
        d = hauldtest.Daemon(env, start=False)
        self._daemons.append(d)
        self.addCleanup(d.stop)
        for name in self.sources:
            d.write_source(name, {
                "search_url": self.origin.base_url + "/api/openverse/v1/images/?q={query}&page={page}"
                "&page_size={per_page}",
                "per_page": 20, "items": "/results", "url": "/url", "total": "/result_count"})
        if self.token:
            d.use_token(self.token)
        return d.start()

    def allow(self, status, path=r".*"):
        self.allowed.append((status, re.compile(path)))

    def check_console(self):
        """No console error and no CSP violation, but the HTTP errors the
        test provoked on purpose."""
        bad = []
        for e in self.b.get_log("browser"):
            msg = e.get("message", "")
            if "Content Security Policy" in msg or "Content-Security-Policy" in msg:
                bad.append(msg)
                continue
            if e.get("level") not in ("SEVERE", "ERROR"):
                continue
            m = re.search(r"(\S+) - Failed to load resource: (?:the server responded with a status of (\d+)|"
                          r"(net::ERR_\w+))", msg)
            if m and any(str(st) in (m.group(2), m.group(3)) and rx.search(m.group(1)) for st, rx in self.allowed):
                continue
            bad.append(msg)
        self.b.get("about:blank")
        self.assertEqual(bad, [], "the browser console has errors")

    # -- the API, as the test's own client --

    def api(self, method, path, body=None, expect=None):
        headers = {"Authorization": "Bearer " + self.token} if self.token else {}
        st, _h, data = self.daemon.request(method, path, body, headers=headers)
        if expect is not None:
            self.assertEqual(st, expect, (method, path, data))
        return data

    def post_job(self, body):
        return self.api("POST", "/v1/jobs", body, expect=201)

    def wait_job(self, job_id, states=hauldtest.TERMINAL_STATES, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            j = self.api("GET", "/v1/jobs/" + job_id, expect=200)
            if j["state"] in states:
                return j
            self.assertLess(time.monotonic(), deadline, "job %s still %s" % (job_id, j["state"]))
            time.sleep(0.05)

    # -- the page --

    def open(self, path="/", live=True):
        """Load the page afresh (also when only the #fragment differs)."""
        self.b.get(self.daemon.base_url + path)
        if self.js("return performance.getEntriesByType('navigation')[0].name") != self.b.current_url:
            self.b.refresh()
        if live:
            self.wait_for(lambda: self.js("return document.getElementById('conn').dataset.state") == "live",
                          "the event stream to be live")

    def js(self, script, *args):
        return self.b.execute_script(script, *args)

    def wait_for(self, fn, what, timeout=WAIT_S):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                v = fn()
                if v:
                    return v
            except WebDriverException as e:
                last = e
            time.sleep(0.1)
        self.fail("%s: not seen after %.0f s%s" % (what, timeout, " (%s)" % last if last else ""))

    def find(self, css, root=None):
        return (root or self.b).find_element(By.CSS_SELECTOR, css)

    def finds(self, css, root=None):
        return (root or self.b).find_elements(By.CSS_SELECTOR, css)

    def text(self, css):
        return self.find(css).text

    def row(self, job_id):
        return self.wait_for(lambda: self.finds('li.job[data-id="%s"]' % job_id), "the row of job %s" % job_id)[0]

    def row_state(self, job_id):
        return self.js("const r = document.querySelector('li.job[data-id=\"' + arguments[0] + '\"]');"
                       "return r ? r.dataset.state : null", job_id)

    def wait_row_state(self, job_id, state):
        self.wait_for(lambda: self.row_state(job_id) == state, "job %s %s on the page" % (job_id, state))

    def click_action(self, root, action):
        b = self.wait_for(lambda: self.finds('button[data-action="%s"]' % action, root),
                          "a %s button" % action)[0]
        b.click()

    def confirm(self, ok=True):
        self.wait_for(lambda: self.js("return document.getElementById('confirm-dialog').open"), "the confirmation")
        self.find("#confirm-ok" if ok else "#confirm-cancel").click()
        self.wait_for(lambda: not self.js("return document.getElementById('confirm-dialog').open"),
                      "the confirmation to close")

    def shot(self, name, full=False):
        """A screenshot of the viewport, or of the whole page (up to
        SHOT_MAX_HEIGHT px)."""
        path = os.path.join(screenshot_dir(), name + ".png")
        if not full:
            self.b.save_screenshot(path)
            return
        size = self.b.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], SHOT_MAX_HEIGHT), "scale": 1}
        png = self.b.execute_cdp_cmd("Page.captureScreenshot",
                                     {"format": "png", "captureBeyondViewport": True, "clip": clip})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(png))

    def row_ids(self):
        return self.js("return [...document.querySelectorAll('#jobs li.job')].map(li => li.dataset.id)")

    def no_horizontal_scroll(self, what):
        sw, cw = self.js("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        self.assertLessEqual(sw, cw, "%s scrolls sideways: %d px of content in %d px" % (what, sw, cw))

    def bar_parts(self, root):
        """{class: width in %} of a progress bar's segments."""
        return self.js("const out = {}; for (const s of arguments[0].querySelectorAll('.bar > span'))"
                       " out[s.className] = (out[s.className] || 0) + parseFloat(s.style.width || '0');"
                       "return out;", root)

    def network_requests(self):
        """Requests the page sent, from Chromium's performance log:
        [(url, headers)]."""
        out = []
        for e in self.b.get_log("performance"):
            m = json.loads(e["message"])["message"]
            if m.get("method") == "Network.requestWillBeSent":
                r = m["params"]["request"]
                out.append((r["url"], {k.lower(): v for k, v in r.get("headers", {}).items()}))
        return out

    def downloaded(self, name, timeout=WAIT_S):
        path = os.path.join(_download_dir, name)
        self.wait_for(lambda: os.path.exists(path) and not os.path.exists(path + ".crdownload"),
                      "%s in the download folder" % name, timeout)
        with open(path, "rb") as f:
            return f.read()

    def set_width(self, width, height=1000):
        self.b.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
        self.addCleanup(lambda: self.b.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {}))


class WithToken(DashboardCase):
    token = TOKEN

    def test_prompt_wrong_token_right_token_and_live_events(self):
        self.allow(401, r"/v1/")
        self.open(live=False)
        dialog = self.find("#token-dialog")
        self.wait_for(lambda: dialog.get_attribute("open") is not None, "the token prompt")
        self.assertIn("requires an API token", self.text("#token-why"))
        self.assertEqual(self.js("return document.getElementById('conn').dataset.state"), "locked")
        self.assertIn("needs an API token", self.text("#banner"))
        self.shot("token-prompt")

        # a wrong token: a clear message, the prompt stays
        self.find("#token-input").send_keys("not-the-token" + Keys.ENTER)
        self.wait_for(lambda: "Wrong token" in self.text("#token-err"), "the wrong-token message")
        self.assertIsNotNone(dialog.get_attribute("open"))

        # the right one: sources, jobs, statistics and the stream come
        inp = self.find("#token-input")
        inp.clear()
        inp.send_keys(TOKEN + Keys.ENTER)
        self.wait_for(lambda: dialog.get_attribute("open") is None, "the prompt to close")
        self.wait_for(lambda: self.js("return document.getElementById('conn').dataset.state") == "live",
                      "the event stream")
        self.wait_for(lambda: self.finds('#sources-pick input[value="openverse"]'), "the sources to choose from")
        self.wait_for(lambda: self.finds('#sources li[data-source="openverse"]'), "the configured source's circuit")
        self.assertTrue(self.find("#banner").get_attribute("hidden") is not None)
        self.assertEqual(self.js("return sessionStorage.getItem('hauld.token')"), TOKEN)

        # events come live over the token-carrying stream
        events0 = int(self.js("return document.getElementById('conn').dataset.events || '0'"))
        job = self.post_job({"urls": [self.file_url("slow.bin", size=400000, drip=80000)], "label": "dripping"})
        row = self.row(job["id"])
        first = self.wait_for(lambda: int(row.get_attribute("data-bytes") or 0), "bytes of the running job")
        self.wait_for(lambda: int(row.get_attribute("data-bytes")) > first + 50000, "more bytes, live")
        self.assertGreater(int(self.js("return document.getElementById('conn').dataset.events")), events0)
        self.wait_row_state(job["id"], "succeeded")

        # the token went as a header and never in a URL
        reqs = self.network_requests()
        streams = [h for u, h in reqs if u.endswith("/v1/events")]
        self.assertTrue(streams, reqs)
        self.assertEqual(streams[-1].get("authorization"), "Bearer " + TOKEN)
        self.assertFalse([u for u, _ in reqs if TOKEN in u])

        # a reload keeps the tab's token: no prompt
        self.open()
        self.assertIsNone(self.find("#token-dialog").get_attribute("open"))

        # changing it to a wrong one is refused and the right one stays in use
        self.find("#token-btn").click()
        self.find("#token-input").send_keys("still-wrong" + Keys.ENTER)
        self.wait_for(lambda: "Wrong token" in self.text("#token-err"), "the wrong-token message")
        self.find("#token-cancel").click()
        self.assertEqual(self.js("return sessionStorage.getItem('hauld.token')"), TOKEN)

    def test_thumbnail_and_file_fetched_with_the_token(self):
        self.allow(401, r"/v1/")
        job = self.post_job({"urls": [self.origin.url("/img/photo.png"), self.file_url("notes.gif", 3000, type="gif")]})
        self.wait_job(job["id"])
        self.b.get(self.daemon.base_url + "/")
        self.js("sessionStorage.setItem('hauld.token', arguments[0])", TOKEN)
        self.open("/#/job/" + job["id"])
        img = self.wait_for(lambda: self.finds('#items tr[data-index="0"] img.thumb'), "the thumbnail")[0]
        self.wait_for(lambda: self.js("return arguments[0].complete && arguments[0].naturalWidth", img) == 16,
                      "the thumbnail decoded from the file endpoint")
        self.assertTrue(img.get_attribute("src").startswith("blob:"), img.get_attribute("src"))
        self.find('#items tr[data-index="1"] a.file-link').click()
        self.assertEqual(self.downloaded("notes.gif"), self.expected_body("notes.gif", 3000, type="gif"))


class Jobs(DashboardCase):
    def test_submit_invalid_then_valid(self):
        self.allow(400, r"/v1/jobs$")
        self.open()
        urls = self.find("#urls")
        urls.send_keys(self.file_url("a.png", 500) + "\n\nftp://example.invalid/x")
        self.find("#max").send_keys("0")
        self.find("#submit-btn").click()
        err = self.wait_for(lambda: self.find("#urls-err").text, "the URLs field's error")
        self.assertIn("Line 3", err)
        self.assertIn("scheme must be http or https", err)
        self.assertIn("1..10000", self.text("#max-err"))
        for field in ("urls", "max"):
            box = self.find('.field[data-field="%s"]' % field)
            self.assertEqual(self.find("#%s" % field, box).get_attribute("aria-invalid"), "true")
            self.assertTrue(self.find("#%s-err" % field, box).is_displayed())
            self.assertIn("%s-err" % field, self.find("#" + field).get_attribute("aria-describedby"))
        self.assertEqual(self.js("return document.activeElement.id"), "urls")
        self.shot("submit-errors")
        self.assertEqual(self.api("GET", "/v1/jobs")["jobs"], [])

        # a query with no source chosen: the error is at the sources
        urls.clear()
        self.find("#max").clear()
        self.find("#query").send_keys("red cars")
        self.find("#submit-btn").click()
        self.wait_for(lambda: self.find("#sources-err").text, "the sources field's error")
        self.assertFalse(self.find("#urls-err").is_displayed())

        # valid: the job shows up with its label and ends succeeded
        self.find("#query").clear()
        urls.send_keys(self.file_url("a.png", 500) + "\n" + self.file_url("b.png", 700))
        self.find("#label").send_keys("from the form")
        self.find("#priority").send_keys("3")
        self.find("#submit-btn").click()
        link = self.wait_for(lambda: self.finds("#submit-ok a"), "the submitted job's link")[0]
        job_id = link.get_attribute("href").rsplit("/", 1)[1]
        job = self.api("GET", "/v1/jobs/" + job_id, expect=200)
        self.assertEqual((job["label"], job["priority"], job["progress"]["total"]), ("from the form", 3, 2))
        row = self.row(job_id)
        self.assertIn("from the form", row.text)
        self.wait_row_state(job_id, "succeeded")
        self.assertEqual(self.bar_parts(row), {"ok": 100.0})
        self.assertEqual(self.find("#urls").get_attribute("value"), "")
        for field in ("urls", "max", "sources"):
            self.assertFalse(self.find("#%s-err" % field).is_displayed())

    def test_drip_grows_live_then_pause_resume_cancel(self):
        job = self.post_job({"urls": [self.file_url("big.bin", size=600000, drip=60000),
                                      self.file_url("small.mp4", 300, type="mp4")], "label": "slow one"})
        self.open()
        row = self.row(job["id"])
        self.wait_row_state(job["id"], "running")
        seen = [self.wait_for(lambda: int(row.get_attribute("data-bytes") or 0) > 0, "bytes arriving") and
                int(row.get_attribute("data-bytes"))]
        for _ in range(2):
            self.wait_for(lambda: int(row.get_attribute("data-bytes")) > seen[-1] + 30000, "the bytes to grow")
            seen.append(int(row.get_attribute("data-bytes")))
        self.assertRegex(self.find(".job-nums", row).text, r"KiB/s")
        self.assertEqual(self.js("return performance.getEntriesByType('navigation').length"), 1)
        self.shot("jobs-running-1280")

        # the detail's item shows its bytes live too
        self.find(".job-title a", row).click()
        cell = lambda: self.find('#items tr[data-index="0"] td.bytes').text  # noqa: E731
        first = self.wait_for(lambda: "of" in cell() and cell(), "the item's bytes of its size")
        self.wait_for(lambda: cell() != first, "the item's bytes to move")
        self.b.back()
        row = self.row(job["id"])

        self.click_action(row, "pause")
        self.wait_row_state(job["id"], "paused")
        self.assertEqual(sorted(b.get_attribute("data-action") for b in self.finds(".actions button", row)),
                         ["cancel", "resume"])
        self.click_action(row, "resume")
        self.wait_for(lambda: self.row_state(job["id"]) in ("queued", "running"), "the job resumed")
        self.click_action(row, "cancel")
        self.wait_row_state(job["id"], "cancelled")
        parts = self.bar_parts(row)
        self.assertLess(parts.get("ok", 0), 100.0, parts)
        self.assertEqual(self.api("GET", "/v1/jobs/" + job["id"])["state"], "cancelled")
        self.assertEqual(sorted(b.get_attribute("data-action") for b in self.finds(".actions button", row)),
                         ["delete", "retry"])

    def test_retry_delete_with_confirmation_and_a_failed_action(self):
        self.allow(404, r"/v1/jobs/")
        job = self.post_job({"urls": [self.file_url("flaky.png", 400, status=404, fail=1, key="flaky")],
                             "label": "flaky"})
        self.wait_job(job["id"])
        self.open()
        row = self.row(job["id"])
        self.wait_row_state(job["id"], "failed")
        parts = self.bar_parts(row)
        self.assertEqual(parts.get("ok", 0), 0, parts)
        self.assertEqual(parts.get("fail"), 100.0, parts)

        self.click_action(row, "retry")
        self.wait_row_state(job["id"], "succeeded")

        # delete asks first; Cancel keeps the job
        self.click_action(row, "delete")
        self.assertIn(job["id"], self.text("#confirm-text"))
        self.confirm(ok=False)
        self.assertEqual(self.row_state(job["id"]), "succeeded")
        self.click_action(row, "delete")
        self.confirm(ok=True)
        self.wait_for(lambda: not self.finds('li.job[data-id="%s"]' % job["id"]), "the row to go")
        self.assertEqual(self.daemon.get("/v1/jobs/" + job["id"])[0], 404)

        # an action the API refuses shows the problem's detail
        other = self.post_job({"urls": [self.file_url("gone.png", status=404)]})
        self.wait_job(other["id"])
        row = self.row(other["id"])
        self.wait_row_state(other["id"], "failed")
        self.api("DELETE", "/v1/jobs/" + other["id"], expect=204)
        self.click_action(row, "retry")
        self.wait_for(lambda: "no such job" in self.find(".msg", row).text, "the problem's detail in the row")
        self.assertIn("Could not retry", self.find(".msg", row).text)

    def test_page_through_120_jobs_and_filter(self):
        ids = [self.post_job({"urls": [self.file_url("p%d.png" % i, status=404)], "label": "bulk"})["id"]
               for i in range(120)]
        ok = self.post_job({"urls": [self.file_url("fine.png", 300)], "label": "fine"})
        for i in (ids[-1], ok["id"]):
            self.wait_job(i)
        self.open()
        label = self.find("#f-label")
        label.send_keys("bulk" + Keys.ENTER)
        seen = []
        for want in (50, 50, 20):
            self.wait_for(lambda: len(self.row_ids()) == want and self.row_ids()[0] not in seen, "a page of %d" % want)
            seen += self.row_ids()
            if want == 20:
                self.assertFalse(self.find("#next").is_enabled())
            else:
                self.find("#next").click()
        self.assertEqual(sorted(seen), sorted(ids))
        self.assertEqual(seen, list(reversed(ids)), "newest first")
        self.find("#prev").click()
        self.wait_for(lambda: self.row_ids() == seen[50:100], "the second page again")
        self.assertIn("51–100", self.text("#page-info"))

        # by state: only the succeeded one; by state and label
        label.clear()
        label.send_keys(Keys.ENTER)
        self.find('#f-state option[value="succeeded"]').click()
        self.wait_for(lambda: self.row_ids() == [ok["id"]], "only the succeeded job")
        self.find('#f-state option[value="failed"]').click()
        self.wait_for(lambda: len(self.row_ids()) == 50 and ok["id"] not in self.row_ids(), "failed jobs only")
        self.assertEqual({self.row_state(i) for i in self.row_ids()}, {"failed"})
        label.send_keys("fine" + Keys.ENTER)
        self.wait_for(lambda: self.row_ids() == [], "no failed job labelled fine")
        self.find("#f-clear").click()
        self.wait_for(lambda: len(self.row_ids()) == 50 and self.row_ids()[0] == ok["id"], "everything again")

        # the header's counts filter too
        self.find('#counts button[data-filter="succeeded"]').click()
        self.wait_for(lambda: self.row_ids() == [ok["id"]], "the succeeded count's jobs")

    def test_keyboard_only_submit(self):
        self.open()
        body = self.find("body")
        body.click()
        actions = ActionChains(self.b)
        for _ in range(80):
            if self.js("return document.activeElement.id") == "urls":
                break
            actions.send_keys(Keys.TAB).perform()
        self.assertEqual(self.js("return document.activeElement.id"), "urls", "Tab never reached the URLs")
        url = self.file_url("typed.mp4", 321, type="mp4")
        ActionChains(self.b).send_keys(url).perform()
        for _ in range(40):
            if self.js("return document.activeElement.id") == "submit-btn":
                break
            ActionChains(self.b).send_keys(Keys.TAB).perform()
        self.assertEqual(self.js("return document.activeElement.id"), "submit-btn")
        ActionChains(self.b).send_keys(Keys.ENTER).perform()
        link = self.wait_for(lambda: self.finds("#submit-ok a"), "the submitted job")[0]
        job_id = link.get_attribute("href").rsplit("/", 1)[1]
        self.wait_row_state(job_id, "succeeded")
        # and into its detail by keyboard: the row's link, then Enter
        self.row(job_id)
        self.js("document.querySelector('li.job[data-id=\"' + arguments[0] + '\"] .job-title a').focus()", job_id)
        ActionChains(self.b).send_keys(Keys.ENTER).perform()
        self.wait_for(lambda: self.js("return document.activeElement.id") == "detail-h", "focus on the job's heading")
        self.wait_for(lambda: self.finds('#items tr[data-index="0"] a.file-link'), "the item's file link")


class Files(DashboardCase):
    def test_items_file_link_thumbnail_and_archive(self):
        job = self.post_job({"urls": [self.origin.url("/img/photo.png"), self.file_url("doc.gif", 2048, type="gif"),
                                      self.file_url("missing.png", status=404)], "label": "files"})
        self.wait_job(job["id"])
        items = {it["index"]: it for it in self.daemon.items(job["id"])}
        self.open()
        self.find('li.job[data-id="%s"] .job-title a' % job["id"]).click()
        self.wait_for(lambda: len(self.finds("#items tbody tr")) == 3, "the job's three items")
        r0 = self.find('#items tr[data-index="0"]')
        self.assertIn("succeeded", r0.text)
        self.assertIn(items[0]["sha256"][:12], r0.text)
        self.assertEqual(self.find(".sha summary", r0).get_attribute("title"), items[0]["sha256"])
        r2 = self.find('#items tr[data-index="2"]')
        self.assertIn("http_4xx", r2.text)
        self.assertIn("404", r2.text)
        self.assertFalse(self.finds("a.file-link", r2), "a failed item has no file link")

        # by state
        self.find('#i-state option[value="failed"]').click()
        self.wait_for(lambda: [tr.get_attribute("data-index") for tr in self.finds("#items tbody tr")] == ["2"],
                      "only the failed item")
        self.find('#i-state option[value=""]').click()
        self.wait_for(lambda: len(self.finds("#items tbody tr")) == 3, "all items again")

        # a thumbnail of the image, the file through its link
        img = self.wait_for(lambda: self.finds('#items tr[data-index="0"] img.thumb'), "the thumbnail")[0]
        self.wait_for(lambda: self.js("return arguments[0].complete && arguments[0].naturalWidth", img) == 16,
                      "the thumbnail decoded from the file endpoint")
        self.shot("job-detail-1280")
        link = self.find('#items tr[data-index="1"] a.file-link')
        self.assertEqual(link.get_attribute("href"),
                         self.daemon.base_url + "/v1/jobs/%s/items/1/file" % job["id"])
        link.click()
        self.assertEqual(self.downloaded("doc.gif"), self.expected_body("doc.gif", 2048, type="gif"))
        archive = self.find("#archive")
        self.assertTrue(archive.is_displayed())
        self.assertEqual(archive.get_attribute("href"), self.daemon.base_url + "/v1/jobs/%s/archive" % job["id"])
        archive.click()
        tar = self.downloaded(job["id"] + ".tar")
        self.assertIn(PNG, tar)


class System(DashboardCase):
    daemon_env = dict(FAST, CIRCUIT_BREAKER_THRESHOLD="2", CIRCUIT_BREAKER_TIMEOUT="600")

    def test_sources_from_the_start_circuit_reset_and_statistics_reset(self):
        self.open()
        src = self.wait_for(lambda: self.finds('#sources li[data-source="openverse"]'), "the configured source")[0]
        self.assertEqual(src.get_attribute("data-state"), "closed")
        self.assertFalse(self.finds("button", src), "a closed circuit offers no reset")

        good = self.post_job({"urls": [self.file_url("ok%d.png" % i, 300) for i in range(3)]})
        self.wait_job(good["id"])
        self.wait_for(lambda: self.find("#stats-totals").get_attribute("data-successes") == "3",
                      "three downloads in the statistics")
        bad = self.post_job({"urls": [self.file_url("down%d.png" % i, status=503) for i in range(3)]})
        self.wait_job(bad["id"])
        host = "127.0.0.1:%d" % self.origin.port
        li = lambda: self.find('#sources li[data-source="%s"]' % host)  # noqa: E731
        self.wait_for(lambda: li().get_attribute("data-state") == "open", "the host's circuit open")
        self.assertIn("next probe", li().text)
        self.assertIn("failures in a row", li().text)
        self.wait_row_state(bad["id"], "failed")
        self.wait_for(lambda: self.find("#stats-totals").get_attribute("data-failures") == "3",
                      "three failed downloads in the statistics")
        self.assertIn("3 ok · 3 failed", li().text)
        self.js("document.getElementById('src-h').scrollIntoView()")
        self.shot("sources-open-circuit-1280")
        self.find('button[data-action="reset"]', li()).click()
        self.wait_for(lambda: li().get_attribute("data-state") == "closed", "the circuit closed")
        circuits = {c["source"]: c for c in self.api("GET", "/v1/circuits")["circuits"]}
        self.assertEqual(circuits[host]["state"], "closed")

        self.find("#stats-reset").click()
        self.confirm(ok=True)
        self.wait_for(lambda: self.find("#stats-totals").get_attribute("data-successes") == "0",
                      "the statistics at zero")
        self.assertEqual(self.api("GET", "/v1/stats")["total_successes"], 0)
        self.assertIn("Statistics reset", self.text("#stats-msg"))

    def test_stream_resumes_with_last_event_id_after_a_restart(self):
        # the stream and the calls made while hauld is away fail, as they must
        self.allow("net::ERR_INCOMPLETE_CHUNKED_ENCODING", r"/v1/events$")
        self.allow("net::ERR_CONNECTION_REFUSED")
        self.allow("net::ERR_EMPTY_RESPONSE")
        self.open()
        first = self.post_job({"urls": [self.file_url("one.png", 300)]})
        self.wait_row_state(first["id"], "succeeded")
        self.b.get_log("performance")
        self.daemon.restart()
        self.wait_for(lambda: self.js("return document.getElementById('conn').dataset.state") == "live",
                      "the stream live again", timeout=20)
        second = self.post_job({"urls": [self.file_url("two.png", 300)]})
        self.wait_row_state(second["id"], "succeeded")
        again = [h for u, h in self.network_requests() if u.endswith("/v1/events")]
        self.assertTrue(again, "no new event stream request")
        self.assertRegex(again[0].get("last-event-id", ""), r"^\d+$", again[0])


class Layout(DashboardCase):
    def test_400px_and_1920px(self):
        job = self.post_job({"urls": [self.origin.url("/img/a-rather-long-file-name-for-a-narrow-screen.png"),
                                      self.file_url("x" * 80 + ".png", status=404)],
                             "label": "a label that is rather long for a phone screen"})
        self.post_job({"urls": [self.file_url("going.bin", size=300000, drip=30000)], "label": "still going"})
        self.wait_job(job["id"])
        self.set_width(400, 900)
        self.open()
        self.row(job["id"])
        self.no_horizontal_scroll("the job list at 400 px")
        self.shot("jobs-400", full=True)
        self.find("#submit-btn").click()
        self.wait_for(lambda: self.find("#urls-err").text, "an error")
        self.no_horizontal_scroll("the form with an error at 400 px")
        self.open("/#/job/" + job["id"])
        self.wait_for(lambda: len(self.finds("#items tbody tr")) == 2, "the items")
        self.no_horizontal_scroll("a job's items at 400 px")
        self.shot("job-detail-400", full=True)
        self.set_width(1920, 1080)
        self.open()
        self.row(job["id"])
        self.no_horizontal_scroll("the job list at 1920 px")
        self.shot("jobs-1920")
        self.open("/#/job/" + job["id"])
        self.wait_for(lambda: len(self.finds("#items tbody tr")) == 2, "the items")
        self.shot("job-detail-1920")


def main():
    try:
        browser()
    except unittest.SkipTest as e:
        sys.stderr.write("SKIP: %s\n" % e)
        sys.exit(EX_SKIP)
    hauldtest.main()


if __name__ == "__main__":
    main()
