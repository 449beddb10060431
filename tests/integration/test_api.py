"""The v1 API's contract: guards (token, Host, CORS), every route's
statuses, the live event streams, connection limits, SSRF refusals and
metrics. Paging and most body validation live in test_jobs.py."""

import json
import resource
import socket
import threading
import time

import hauldtest

TOKEN = "s3cret-token-for-tests"
IDLE_CONNECTIONS = 300
HALF_SENT = 30
HEALTH_DEADLINE_S = 2.0


def raw_request(port, data, timeout=5.0):
    """Send bytes as they are (with Connection: close); return all that
    comes back before the server closes or timeout passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:  # the server may answer and close before the body is in
            pass
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        return out


class Guards(hauldtest.HauldTestCase):
    def token_daemon(self, env=None):
        """A daemon whose API_TOKEN_FILE is a file in its own temp dir."""
        return self.new_daemon(env, token=TOKEN)

    def test_token_required_except_health(self):
        d = self.token_daemon()
        for path in ("/v1/jobs", "/v1/stats", "/v1/config", "/v1/circuits", "/v1/sources", "/metrics"):
            ans = d.get(path)
            self.assert_problem(ans, 401)
            self.assertEqual(ans[1].get("WWW-Authenticate"), "Bearer", path)
        # the dashboard's shell holds no data: it asks for the token itself
        for path in ("/", "/app.js", "/app.css", "/favicon.svg"):
            self.assertEqual(d.get(path)[0], 200, path)
        self.assert_problem(d.get("/v1/jobs", headers={"Authorization": "Bearer wrong"}), 401)
        for guess in (TOKEN[:-1], TOKEN + "x", TOKEN[:-1] + "X", "", TOKEN + TOKEN):
            self.assert_problem(d.get("/v1/jobs", headers={"Authorization": "Bearer " + guess}), 401)
        self.assert_problem(d.get("/v1/jobs", headers={"Authorization": "Basic " + TOKEN}), 401)
        self.assert_problem(d.post("/v1/jobs", {"urls": ["http://a/b"]}), 401)
        st, _h, data = d.get("/v1/health")
        self.assertEqual((st, data["status"]), (200, "ok"))
        auth = {"Authorization": "Bearer " + TOKEN}
        st, _h, data = d.get("/v1/jobs", headers=auth)
        self.assertEqual(st, 200, data)

    def test_config_masks_the_token(self):
        d = self.token_daemon()
        st, _h, raw = d.request("GET", "/v1/config", headers={"Authorization": "Bearer " + TOKEN})
        self.assertEqual(st, 200)
        self.assertNotIn(TOKEN, json.dumps(raw))
        self.assertEqual(raw.get("API_TOKEN"), "***", raw)
        self.assertIn("MAX_CONCURRENT_DOWNLOADS", raw)

    def test_foreign_host_is_421(self):
        d = self.new_daemon({"ALLOWED_HOSTS": "hauld.example, other.example:8443"})
        for host in ("evil.example", "evil.example:%d" % d.port, "127.0.0.1.evil.example", "10.0.0.1",
                     "other.example:9999", "[::2]:80"):
            self.assert_problem(d.get("/v1/jobs", headers={"Host": host}), 421)
        for host in ("127.0.0.1:%d" % d.port, "localhost:%d" % d.port, "localhost", "LOCALHOST.",
                     "app.localhost", "[::1]:%d" % d.port, "127.1.2.3", "hauld.example",
                     "hauld.example:%d" % d.port, "other.example:8443"):
            st, _h, data = d.get("/v1/jobs", headers={"Host": host})
            self.assertEqual(st, 200, (host, data))
        # the Host check comes before the token: even health is refused
        self.assert_problem(d.get("/v1/health", headers={"Host": "evil.example"}), 421)

    def test_cors_only_for_listed_origins(self):
        d = self.new_daemon({"CORS_ORIGINS": "http://ui.example, https://dash.example:8443"})
        st, h, _ = d.get("/v1/jobs", headers={"Origin": "http://ui.example"})
        self.assertEqual(st, 200)
        self.assertEqual(h.get("Access-Control-Allow-Origin"), "http://ui.example")
        self.assertIn("Location", h.get("Access-Control-Expose-Headers", ""))
        self.assertIn("Origin", h.get("Vary", ""))
        st, h, _ = d.get("/v1/jobs", headers={"Origin": "http://evil.example"})
        self.assertEqual(st, 200)
        self.assertIsNone(h.get("Access-Control-Allow-Origin"))
        # errors carry the headers too, so a browser can read them
        st, h, _ = d.get("/v1/nothing", headers={"Origin": "https://dash.example:8443"})
        self.assertEqual(st, 404)
        self.assertEqual(h.get("Access-Control-Allow-Origin"), "https://dash.example:8443")

    def test_preflight_on_every_route(self):
        d = self.new_daemon({"CORS_ORIGINS": "http://ui.example"})
        pre = {"Origin": "http://ui.example", "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "content-type, idempotency-key"}
        for path, method in (("/v1/jobs", "POST"), ("/v1/jobs/X/cancel", "POST"), ("/v1/health", "GET"),
                             ("/v1/jobs/X", "DELETE"), ("/v1/events", "GET"), ("/metrics", "GET")):
            st, h, _ = d.request("OPTIONS", path, headers=pre)
            self.assertEqual(st, 204, path)
            self.assertIn(method, h.get("Access-Control-Allow-Methods", ""), path)
            self.assertIn("Idempotency-Key", h.get("Access-Control-Allow-Headers", ""), path)
            self.assertEqual(h.get("Access-Control-Allow-Origin"), "http://ui.example", path)
        # an unlisted origin gets no CORS grant, only Allow
        st, h, _ = d.request("OPTIONS", "/v1/jobs", headers=dict(pre, Origin="http://evil.example"))
        self.assertEqual(st, 204)
        self.assertIsNone(h.get("Access-Control-Allow-Origin"))
        self.assertIn("POST", h.get("Allow", ""))
        self.assert_problem(d.request("OPTIONS", "/v1/nothing", headers=pre), 404)

    def test_preflight_needs_no_token(self):
        d = self.token_daemon({"CORS_ORIGINS": "http://ui.example"})
        st, h, _ = d.request("OPTIONS", "/v1/jobs", headers={
            "Origin": "http://ui.example", "Access-Control-Request-Method": "POST"})
        self.assertEqual(st, 204)
        self.assertIn("Authorization", h.get("Access-Control-Allow-Headers", ""))


class Statuses(hauldtest.HauldTestCase):
    UNKNOWN = "01ARZ3NDEKTSV4RRFFQ69G5FAV"

    def test_health_and_read_routes(self):
        d = self.daemon
        st, _h, data = d.get("/v1/health")
        self.assertEqual(st, 200)
        self.assertEqual(data["status"], "ok")
        self.assertTrue(data["version"])
        for path, key in (("/v1/jobs", "jobs"), ("/v1/circuits", "circuits"), ("/v1/sources", "sources")):
            st, h, data = d.get(path)
            self.assertEqual(st, 200, path)
            self.assertTrue(h["Content-Type"].startswith("application/json"), path)
            self.assertIn(key, data)
        st, _h, data = d.get("/v1/stats")
        self.assertEqual(st, 200)
        for key in ("uptime_s", "jobs", "total_attempts", "total_successes", "total_failures",
                    "total_retries", "total_bytes", "sources"):
            self.assertIn(key, data)
        # HEAD answers like GET without a body
        st, h, data = d.request("HEAD", "/v1/health")
        self.assertEqual(st, 200)
        self.assertFalse(data)

    def test_sources_shape(self):
        d = hauldtest.Daemon(start=False)
        self._daemons.append(d)
        self.addCleanup(d.stop)
        d.write_source("pics", {"search_url": self.origin.base_url + "/s?q={query}&page={page}",
                                "items": "/results", "url": "/url", "per_page": 7,
                                "max_connections": 2, "requests_per_second": 3})
        d.start()
        st, _h, data = d.get("/v1/sources")
        self.assertEqual(st, 200, data)
        (src,) = data["sources"]
        self.assertEqual(src["name"], "pics")
        self.assertEqual(src["kind"], "search")
        self.assertEqual(src["per_page"], 7)
        self.assertEqual(src["max_connections"], 2)
        self.assertEqual(src["requests_per_second"], 3)
        self.assertIs(src["available"], True)
        self.assertNotIn("unavailable_reason", src)
        self.assert_problem(d.post("/v1/jobs", {"query": "x", "sources": ["pics", "nope"]}), 400,
                            field="sources[1]")

    def test_404s(self):
        d = self.daemon
        for method, path in (("GET", "/v1/jobs/" + self.UNKNOWN), ("GET", "/v1/jobs/not-an-id"),
                             ("GET", "/v1/jobs/%s/items" % self.UNKNOWN),
                             ("GET", "/v1/jobs/%s/events" % self.UNKNOWN),
                             ("GET", "/v1/jobs/x%2Fy/events"),
                             ("POST", "/v1/jobs/%s/cancel" % self.UNKNOWN),
                             ("POST", "/v1/jobs/%s/retry" % self.UNKNOWN),
                             ("DELETE", "/v1/jobs/" + self.UNKNOWN),
                             ("POST", "/v1/circuits/nowhere/reset"),
                             ("GET", "/v1"), ("GET", "/v2/jobs"), ("GET", "/v1/jobs/a/b/c")):
            self.assert_problem(d.request(method, path), 404)

    def test_405_with_allow(self):
        d = self.daemon
        for method, path, allowed in (("PUT", "/v1/jobs", "POST"), ("DELETE", "/v1/health", "GET"),
                                      ("POST", "/v1/jobs/%s" % self.UNKNOWN, "DELETE"),
                                      ("GET", "/v1/jobs/%s/cancel" % self.UNKNOWN, "POST"),
                                      ("POST", "/v1/events", "GET"), ("PATCH", "/metrics", "GET")):
            ans = d.request(method, path)
            self.assert_problem(ans, 405)
            self.assertIn(allowed, ans[1].get("Allow", ""), (method, path))

    def test_413_with_and_without_content_length(self):
        d = self.new_daemon({"MAX_REQUEST_BODY": "1K"})
        big = b'{"urls": ["http://a/' + b"b" * 3000 + b'"]}'
        self.assert_problem(d.request("POST", "/v1/jobs", body=big,
                                      headers={"Content-Type": "application/json"}), 413)
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 500]), big[i:i + 500])
                          for i in range(0, len(big), 500)) + b"0\r\n\r\n"
        out = raw_request(d.port, b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                          b"Connection: close\r\n\r\n" + chunks)
        self.assertTrue(out.startswith(b"HTTP/1.1 413"), out[:200])
        self.assertIn(b"application/problem+json", out)

    @staticmethod
    def body_of(size):
        """A valid job request of exactly size bytes (its URL's path pads it)."""
        body = {"urls": ["http://127.0.0.1:9/"]}
        body["urls"][0] += "x" * (size - len(json.dumps(body)))
        raw = json.dumps(body).encode()
        assert len(raw) == size, len(raw)
        return raw

    def test_413_at_the_limit(self):
        d = self.new_daemon({"MAX_REQUEST_BODY": "1K"})
        json_type = {"Content-Type": "application/json"}
        # with Content-Length: exactly MAX_REQUEST_BODY is taken, one byte more is not
        st, _h, data = d.request("POST", "/v1/jobs", body=self.body_of(1024), headers=json_type)
        self.assertEqual(st, 201, data)
        self.assert_problem(d.request("POST", "/v1/jobs", body=self.body_of(1025), headers=json_type), 413)
        # chunked, with no length announced: the same edge, found while reading
        for size, want in ((1024, b"HTTP/1.1 201"), (1025, b"HTTP/1.1 413")):
            raw = self.body_of(size)
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(raw[i:i + 300]), raw[i:i + 300])
                              for i in range(0, len(raw), 300)) + b"0\r\n\r\n"
            out = raw_request(d.port, b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                              b"Connection: close\r\n\r\n" + chunks)
            self.assertTrue(out.startswith(want), (size, out[:200]))

    def test_label_limit(self):
        d = self.daemon
        url = "http://127.0.0.1:9/x"
        for label in ("x" * 256, "\u00e9" * 256):  # 256 characters, also as 512 bytes of UTF-8
            st, _h, job = d.post("/v1/jobs", {"urls": [url], "label": label})
            self.assertEqual(st, 201, job)
            self.assertEqual(job["label"], label)
        for label in ("x" * 257, "\u00e9" * 257):
            self.assert_problem(d.post("/v1/jobs", {"urls": [url], "label": label}), 400, field="label")

    def test_415(self):
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx", None):
            headers = {"Content-Type": ctype} if ctype else {}
            self.assert_problem(self.daemon.request("POST", "/v1/jobs", body=b'{"urls": ["http://a/b"]}',
                                                    headers=headers), 415)
        st, _h, _d = self.daemon.request("POST", "/v1/jobs", body=b'{"urls": ["http://a/b"]}',
                                         headers={"Content-Type": "application/json; charset=utf-8"})
        self.assertEqual(st, 201)

    def test_idempotency(self):
        d = self.daemon
        body = {"urls": [self.file_url("idem.png")], "label": "once"}
        key = {"Idempotency-Key": "k-123"}
        st, h1, first = d.post("/v1/jobs", body, headers=key)
        self.assertEqual(st, 201, first)
        # a replay answers as the first did: 201 and the same Location
        st, h2, again = d.post("/v1/jobs", body, headers=key)
        self.assertEqual(st, 201, again)
        self.assertEqual(again["id"], first["id"])
        self.assertEqual(h2["Location"], h1["Location"])
        # the same request in other whitespace and key order is the same request
        text = '{ "label" : "once",\n  "urls" : [ %s ] }' % json.dumps(body["urls"][0])
        st, h3, third = d.post("/v1/jobs", text, headers=dict(key, **{"Content-Type": "application/json"}))
        self.assertEqual(st, 201, third)
        self.assertEqual(third["id"], first["id"])
        self.assert_problem(d.post("/v1/jobs", dict(body, label="twice"), headers=key), 422)
        self.assert_problem(d.post("/v1/jobs", body, headers={"Idempotency-Key": "x" * 129}), 400,
                            field="Idempotency-Key")
        st, _h, data = d.get("/v1/jobs")
        self.assertEqual(len(data["jobs"]), 1)

    def test_409s(self):
        d = self.daemon
        job = self.run_job({"urls": [self.file_url("done.png")]})
        self.assert_problem(d.post("/v1/jobs/%s/cancel" % job["id"]), 409)
        running = d.post_job({"urls": [self.file_url("slow.png", delay=5)]})
        self.assert_problem(d.post("/v1/jobs/%s/retry" % running["id"]), 409)
        self.assert_problem(d.delete("/v1/jobs/%s" % running["id"]), 409)
        st, _h, cancelled = d.post("/v1/jobs/%s/cancel" % running["id"])
        self.assertEqual(st, 200)
        d.wait_job(running["id"], "cancelled")
        st, _h, _ = d.delete("/v1/jobs/%s" % job["id"])
        self.assertEqual(st, 204)
        self.assert_problem(d.get("/v1/jobs/%s" % job["id"]), 404)

    def test_json_limits(self):
        d = self.daemon
        nested = b'{"urls": [{"url": "http://a/b", "filename": ' + b"[" * 31 + b"]" * 31 + b"}]}"
        self.assert_problem(d.request("POST", "/v1/jobs", body=nested,
                                      headers={"Content-Type": "application/json"}), 400)
        deep = b'{"urls": ' + b"[" * 40 + b"]" * 40 + b"}"
        self.assert_problem(d.request("POST", "/v1/jobs", body=deep,
                                      headers={"Content-Type": "application/json"}), 400)
        for bad in (b'{"urls": ["http://a/\xc3\x28"]}', b'{"urls": ["http://a/\xed\xa0\x80"]}',
                    b'{"label": "\xc0\xaf", "urls": ["http://a/b"]}', b'{"urls": ["http://a/b"]}\x00',
                    b'{"urls": ["http://a/b"], "max": 1, "max": 2}', b'{"urls": ["http://a/b"]} {}'):
            self.assert_problem(d.request("POST", "/v1/jobs", body=bad,
                                          headers={"Content-Type": "application/json"}), 400)

    def test_metrics_names(self):
        self.run_job({"urls": [self.file_url("m.png"), self.origin.url("/gone", status=404)]})
        st, h, text = self.daemon.get("/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(h["Content-Type"].startswith("text/plain; version=0.0.4"), h["Content-Type"])
        text = text.decode()
        src = "127.0.0.1:%d" % self.origin.port
        for line in ('hauld_jobs{state="queued"}', 'hauld_jobs{state="partial"} 1',
                     'hauld_downloads_total{source="%s",result="success"} 1' % src,
                     'hauld_downloads_total{source="%s",result="failure"} 1' % src,
                     'hauld_download_bytes_total{source="%s"} 1024' % src,
                     'hauld_retries_total{source="%s"}' % src,
                     'hauld_circuit_state{source="%s"} 0' % src,
                     "# TYPE hauld_download_duration_seconds histogram",
                     'hauld_download_duration_seconds_bucket{le="+Inf"} 2',
                     "hauld_download_duration_seconds_count 2",
                     "hauld_download_duration_seconds_sum "):
            self.assertIn(line, text)
        # cumulative buckets never go down
        counts = [int(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                  if l.startswith("hauld_download_duration_seconds_bucket")]
        self.assertGreater(len(counts), 2)
        self.assertEqual(counts, sorted(counts))
        for family in ("hauld_jobs", "hauld_downloads_total", "hauld_download_bytes_total",
                       "hauld_retries_total", "hauld_circuit_state"):
            self.assertIn("# TYPE %s " % family, text)


class Streams(hauldtest.HauldTestCase):
    STREAMS_MAX = 256  # SSE_STREAMS_MAX (api/sse.c)

    def open_stream(self):
        sock = socket.create_connection(("127.0.0.1", self.daemon.port), timeout=10)
        sock.sendall(b"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
        return sock, head.split(b"\r\n", 1)[0]

    def test_stream_limit_then_room_again(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 1024:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
        socks = []
        try:
            for _ in range(self.STREAMS_MAX):
                sock, status = self.open_stream()
                socks.append(sock)
                self.assertIn(b" 200 ", status)
            sock, status = self.open_stream()
            sock.close()
            self.assertIn(b" 503 ", status)
            st, _h, _d = self.daemon.get("/v1/health")
            self.assertEqual(st, 200)
            socks.pop().close()
            # a client that leaves frees its place at once, not at the next
            # keep-alive (15 s later)
            self.daemon.wait_for(lambda: b" 200 " in self._try_stream(), timeout=5, what="a free stream")
        finally:
            for sock in socks:
                sock.close()

    def _try_stream(self):
        sock, status = self.open_stream()
        sock.close()
        return status

    # the streams all come from 127.0.0.1: the cap per address would refuse
    # them before the stream limit does
    daemon_env = {"MAX_RETRIES_PER_SOURCE": "0", "MAX_RETRIES_PER_ITEM": "0",
                  "API_MAX_CONNECTIONS_PER_IP": "1024"}

    def job_urls(self, n=4, size=150000, drip=300000):
        return [self.file_url("s%d.png" % i, size=size, seed=i, drip=drip) for i in range(n)]

    def collect(self, path, headers=None, timeout=20.0):
        return list(self.daemon.events(path, timeout=timeout, headers=headers))

    def test_job_stream_sees_job_item_progress_and_closes(self):
        job = self.daemon.post_job({"urls": self.job_urls() + [self.origin.url("/bad", status=404)]})
        t0 = time.monotonic()
        evs = self.collect("/v1/jobs/%s/events" % job["id"])
        self.assertLess(time.monotonic() - t0, 15)
        names = [e["event"] for e in evs]
        self.assertEqual(names[0], "job")  # the job as it was on connecting
        self.assertEqual(names[-1], "job")
        self.assertEqual(evs[-1]["data"]["state"], "partial")
        items = [e["data"] for e in evs if e["event"] == "item"]
        self.assertEqual(sorted(it["index"] for it in items), [0, 1, 2, 3, 4])
        self.assertEqual({it["state"] for it in items}, {"succeeded", "failed"})
        self.assertIn("progress", names)
        for e in evs:
            self.assertTrue(e["id"].isdigit(), e)
        ids = [int(e["id"]) for e in evs]
        self.assertEqual(ids, sorted(ids))
        prog = [e["data"] for e in evs if e["event"] == "progress"]
        for p in prog:
            for key in ("total", "pending", "running", "succeeded", "failed", "skipped", "bytes", "percent"):
                self.assertIn(key, p)

    def test_late_client_gets_the_terminal_job_and_close(self):
        job = self.run_job({"urls": [self.file_url("late.png")]})
        evs = self.collect("/v1/jobs/%s/events" % job["id"], timeout=5)
        self.assertEqual([e["event"] for e in evs], ["job"])
        self.assertEqual(evs[0]["data"]["state"], "succeeded")
        self.assertEqual(evs[0]["data"]["id"], job["id"])

    def test_resume_with_last_event_id(self):
        job = self.daemon.post_job({"urls": self.job_urls(3)})
        evs = self.collect("/v1/jobs/%s/events" % job["id"])
        items = [e for e in evs if e["event"] == "item"]
        self.assertEqual(len(items), 3)
        cut = int(items[0]["id"])
        for headers, path in (({"Last-Event-ID": str(cut)}, ""), (None, "?last_event_id=%d" % cut)):
            again = self.collect("/v1/jobs/%s/events%s" % (job["id"], path), headers=headers)
            self.assertTrue(again, "a resume after the end replays what came later")
            self.assertTrue(all(int(e["id"]) > cut for e in again), again)
            self.assertEqual(len([e for e in again if e["event"] == "item"]), 2)
            self.assertEqual(again[-1]["event"], "job")
            self.assertEqual(again[-1]["data"]["state"], "succeeded")
        # 0: every event kept, from the job's first
        again = self.collect("/v1/jobs/%s/events" % job["id"], headers={"Last-Event-ID": "0"})
        self.assertEqual(len([e for e in again if e["event"] == "item"]), 3)
        self.assertEqual(again[-1]["data"]["state"], "succeeded")
        self.assert_problem(self.daemon.get("/v1/jobs/%s/events" % job["id"],
                                            headers={"Last-Event-ID": "abc"}), 400)

    def test_resume_with_an_id_from_an_earlier_run(self):
        # ids restart at 1 with the daemon, so a browser reconnecting after a
        # restart sends an id past the newest: it resumes from the oldest kept
        # instead of waiting (silently) for ids this run has not reached
        stale = {"Last-Event-ID": "999999999"}
        done = self.run_job({"urls": [self.file_url("before.png")]})
        got = []
        try:
            for e in self.daemon.events("/v1/events", timeout=3, headers=stale):
                got.append(e)
                if e["event"] == "job" and e["data"]["state"] == "succeeded":
                    break
        except OSError:  # silence for 3 s
            pass
        self.assertIn(done["id"], [e["data"]["id"] for e in got if e["event"] == "job"], got)
        job = self.daemon.post_job({"urls": self.job_urls(2)})
        try:
            evs = self.collect("/v1/jobs/%s/events" % job["id"], headers=stale, timeout=5)
        except OSError:
            self.fail("the job stream stayed silent after a Last-Event-ID from an earlier run")
        self.assertEqual(evs[-1]["event"], "job")
        self.assertEqual(evs[-1]["data"]["state"], "succeeded")
        self.assertEqual(len([e for e in evs if e["event"] == "item"]), 2)
        self.assertTrue(all(int(e["id"]) < 999999999 for e in evs), evs)

    def test_progress_is_coalesced(self):
        urls = [self.file_url("p%d.png" % i, size=2000, seed=i, delay=0.01 * i) for i in range(40)]
        job = self.daemon.post_job({"urls": urls})
        evs = []
        stamps = []
        for e in self.daemon.events("/v1/jobs/%s/events" % job["id"], timeout=20):
            evs.append(e)
            if e["event"] == "progress":
                stamps.append(time.monotonic())
        self.assertEqual(len([e for e in evs if e["event"] == "item"]), 40)
        # at most 4 a second: any 5 consecutive progress events span >= ~1 s
        for i in range(len(stamps) - 4):
            self.assertGreaterEqual(stamps[i + 4] - stamps[i], 0.9, stamps)

    def test_all_jobs_stream_has_circuit_events(self):
        d = self.new_daemon({"CIRCUIT_BREAKER_THRESHOLD": "2", "MAX_RETRIES_PER_ITEM": "0", "MAX_RETRIES_PER_SOURCE": "0",
                             "MAX_CONNECTIONS_PER_SOURCE": "1"})
        got = []

        def reader():
            # last_event_id=0: every event kept, so none is missed while connecting
            for e in d.events("/v1/events?last_event_id=0", timeout=15):
                got.append(e)
                if e["event"] == "circuit" and e["data"]["state"] == "open":
                    return

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        d.post_job({"urls": [self.origin.url("/dead%d" % i, status=500) for i in range(4)]})
        t.join(20)
        self.assertFalse(t.is_alive(), "no open circuit event within 20 s: %r" % got)
        circuits = [e for e in got if e["event"] == "circuit"]
        self.assertTrue(circuits, got)
        c = circuits[-1]["data"]
        self.assertEqual(c["source"], "127.0.0.1:%d" % self.origin.port)
        for key in ("state", "consecutive_failures", "threshold", "trips", "opened_at", "retry_at",
                    "last_error"):
            self.assertIn(key, c)
        self.assertIn("job", {e["event"] for e in got})
        self.assertIn("item", {e["event"] for e in got})
        for e in got:
            if e["event"] in ("item", "progress"):
                self.assertIn("job_id", e["data"])

    def test_keepalive_and_stop_with_open_streams(self):
        d = self.new_daemon()
        conns = []
        for path in ("/v1/events", "/v1/events", "/v1/jobs/%s/events" % d.post_job(
                {"urls": [self.file_url("hold.png", delay=30)]})["id"]):
            s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
            s.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n" % path.encode())
            head = s.recv(4096)
            self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
            self.assertIn(b"text/event-stream", head)
            conns.append(s)
        # the daemon answers other requests while the streams wait
        st, _h, _ = d.get("/v1/health", timeout=2)
        self.assertEqual(st, 200)
        t0 = time.monotonic()
        d.stop(expect_code=0)
        self.assertLess(time.monotonic() - t0, 5)
        for s in conns:
            s.settimeout(2)
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass
            s.close()


class Limits(hauldtest.HauldTestCase):
    # every connection comes from 127.0.0.1: the cap per address would refuse
    # them before the total does (test_hardening.py tests that cap)
    daemon_env = {"API_MAX_CONNECTIONS_PER_IP": "1024"}

    def test_idle_and_half_sent_connections_do_not_starve_the_api(self):
        want = IDLE_CONNECTIONS + HALF_SENT + 64
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < want:
            if hard != resource.RLIM_INFINITY and hard < want:
                self.skipTest("RLIMIT_NOFILE hard limit %d is below %d" % (hard, want))
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        for _ in range(IDLE_CONNECTIONS):
            socks.append(socket.create_connection(("127.0.0.1", self.daemon.port), timeout=5))
        for i in range(HALF_SENT):
            s = socket.create_connection(("127.0.0.1", self.daemon.port), timeout=5)
            part = [b"GET /v1/heal", b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n"
                    b"Content-Type: application/json\r\n\r\n{\"urls\"", b"GET /v1/jobs HTTP/1.1\r\nHost: x"][i % 3]
            s.sendall(part)
            socks.append(s)
        t0 = time.monotonic()
        st, _h, data = self.daemon.get("/v1/health", timeout=HEALTH_DEADLINE_S)
        self.assertEqual(st, 200, data)
        self.assertLess(time.monotonic() - t0, HEALTH_DEADLINE_S)
        st, _h, _ = self.daemon.get("/v1/jobs", timeout=HEALTH_DEADLINE_S)
        self.assertEqual(st, 200)


class Ssrf(hauldtest.HauldTestCase):
    daemon_env = {"ALLOW_PRIVATE_ADDRESSES": "false", "MAX_RETRIES_PER_SOURCE": "0", "MAX_RETRIES_PER_ITEM": "0"}

    # A redirect from an allowed host into loopback is not tested: no host
    # this test can serve resolves to a public address. The engine checks
    # the peer of every socket libcurl opens (CURLOPT_OPENSOCKETFUNCTION),
    # so a redirect hop meets the same check as the first request.

    def test_loopback_in_every_spelling_is_blocked(self):
        p = self.origin.port
        spellings = ["127.0.0.1", "localhost", "2130706433", "0x7f000001", "0177.0.0.1", "127.1",
                     "[::1]", "[::ffff:127.0.0.1]", "0.0.0.0", "LOCALHOST", "0",
                     "[0:0:0:0:0:ffff:7f00:1]", "017700000001", "0x7f.1", "[::]"]
        urls = ["http://%s:%d/file/x%d.png" % (host, p, i) for i, host in enumerate(spellings)]
        urls.append("http://10.0.0.1:%d/file/private.png" % p)
        urls.append("http://169.254.169.254/latest/meta-data/")
        st, _h, job = self.daemon.post("/v1/jobs", {"urls": urls})
        if st == 400:  # refused up front is as good: no request was made
            self.assertEqual(self.origin.count(), 0)
            return
        self.assertEqual(st, 201, job)
        job = self.daemon.wait_job(job["id"])
        self.assertEqual(job["state"], "failed", job)
        for it in self.items(job["id"]):
            self.assert_item_error(it, "blocked_address")
        self.assertEqual(self.origin.count(), 0)


class Dashboard(hauldtest.HauldTestCase):
    """The page's files; tests/browser/test_dashboard.py drives the page."""

    def test_page_and_assets_are_served_with_a_strict_policy(self):
        want = {"/": "text/html", "/app.js": "text/javascript", "/app.css": "text/css",
                "/favicon.svg": "image/svg+xml"}
        bodies = {}
        for path, ctype in want.items():
            st, headers, body = self.daemon.get(path)
            self.assertEqual(st, 200, path)
            self.assertTrue(headers["Content-Type"].startswith(ctype), (path, headers["Content-Type"]))
            csp = headers.get("Content-Security-Policy", "")
            for rule in ("default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
                         "object-src 'none'", "frame-ancestors 'none'"):
                self.assertIn(rule, csp, path)
            self.assertNotIn("unsafe-inline", csp, path)
            self.assertEqual(headers.get("X-Content-Type-Options"), "nosniff", path)
            bodies[path] = body.decode() if isinstance(body, bytes) else body
        page, script = bodies["/"], bodies["/app.js"]
        # no inline script or style for the policy to refuse
        self.assertNotIn("<style", page)
        self.assertNotIn(" style=", page)
        self.assertRegex(page, r'<script src="/app.js" defer></script>')
        # built on the public API, never writing API data as HTML, no token in a URL
        for route in ("/v1/stats", "/v1/circuits", "/v1/jobs", "/v1/events", "/v1/sources"):
            self.assertIn(route, script)
        self.assertNotIn("innerHTML", script)
        self.assertNotIn("EventSource", script)
        st, headers, _ = self.daemon.request("POST", "/")
        self.assertEqual(st, 405)


class TerminalCache(hauldtest.HauldTestCase):
    """GET /v1/jobs/{id} keeps the text of terminal jobs; it must never
    outlive a retry or a delete."""
    daemon_env = {"MAX_RETRIES_PER_SOURCE": "0", "MAX_RETRIES_PER_ITEM": "0", "CIRCUIT_BREAKER_THRESHOLD": "100"}

    def test_get_after_retry_is_not_the_cached_terminal_job(self):
        d = self.daemon
        url = self.file_url("flaky.png", fail=1, key="cache-retry")
        job = self.run_job({"urls": [url]})
        self.assertEqual(job["state"], "failed", job)
        for _ in range(3):  # the first read fills the cache, the others are answered from it
            st, _h, again = d.get("/v1/jobs/%s" % job["id"])
            self.assertEqual((st, again), (200, job))
        st, _h, listed = d.get("/v1/jobs")
        self.assertEqual(listed["jobs"], [job])
        st, _h, retried = d.post("/v1/jobs/%s/retry" % job["id"])
        self.assertEqual(st, 200, retried)
        self.assertIn(retried["state"], ("queued", "running", "succeeded"), retried)
        st, _h, now = d.get("/v1/jobs/%s" % job["id"])
        self.assertEqual(st, 200)
        self.assertNotEqual(now["state"], "failed", now)
        if now["state"] in ("queued", "running"):
            self.assertIsNone(now["finished_at"], now)
        done = d.wait_job(job["id"])
        self.assertEqual(done["state"], "succeeded", done)
        st, _h, again = d.get("/v1/jobs/%s" % job["id"])
        self.assertEqual((st, again), (200, done))
        st, _h, listed = d.get("/v1/jobs")
        self.assertEqual(listed["jobs"], [done])
        st, _h, _ = d.delete("/v1/jobs/%s" % job["id"])
        self.assertEqual(st, 204)
        self.assert_problem(d.get("/v1/jobs/%s" % job["id"]), 404)
        st, _h, listed = d.get("/v1/jobs")
        self.assertEqual(listed["jobs"], [])

    def test_concurrent_reads_during_retry_end_on_the_new_state(self):
        d = self.daemon
        job = self.run_job({"urls": [self.file_url("again.png", fail=1, key="cache-race")]})
        self.assertEqual(job["state"], "failed", job)
        stop = threading.Event()
        errors = []

        def reader():
            while not stop.is_set():
                st, _h, _data = d.get("/v1/jobs/%s" % job["id"])
                if st != 200:
                    errors.append(st)

        threads = [threading.Thread(target=reader, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.2)
        st, _h, _ = d.post("/v1/jobs/%s/retry" % job["id"])
        self.assertEqual(st, 200)
        done = d.wait_job(job["id"])
        time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(10)
        self.assertEqual(errors, [])
        self.assertEqual(done["state"], "succeeded", done)
        st, _h, again = d.get("/v1/jobs/%s" % job["id"])
        self.assertEqual((st, again), (200, done))


if __name__ == "__main__":
    hauldtest.main()
