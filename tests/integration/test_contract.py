"""The API's contract, docs/openapi.yaml, against the daemon itself: the
document names every route of the daemon's route table and nothing else,
each path answers exactly the methods the document gives it, the daemon
serves the document byte for byte, the checker hauldtest runs on every
answer does fail on a wrong one, and the error answers (400, 401, 403, 404,
405, 409, 413, 415, 421, 422, 503), the file answers (206, 304, 416) and
every kind of live event fit the document."""

import json
import os
import re
import resource
import socket
import urllib.parse

import contract
import hauldtest

TOKEN = "contract-token-0123456789"
STREAMS_MAX = 256  # SSE_STREAMS_MAX (api/sse.c)
SAMPLE = {"id": "01KB0000000000000000000000", "index": "0", "source": "example.org"}


def route_table():
    """(METHOD, pattern) of every route in api/httpd.c's routes[], its "{}"
    written as the document's {name}-less "{}"."""
    with open(os.path.join(hauldtest.SRCDIR, "api", "httpd.c")) as f:
        text = f.read()
    table = text[text.index("static const struct route routes[] = {"):]
    table = table[:table.index("\n};")]
    routes = set(re.findall(r'\{"([A-Z]+)", "([^"]+)", \w+, [\w| ]+\}', table))
    if not routes:
        raise AssertionError("no routes found in api/httpd.c")
    return routes


def unnamed(template):
    return re.sub(r"\{[^}/]+\}", "{}", template)


def sample_path(template):
    return re.sub(r"\{([^}/]+)\}", lambda m: SAMPLE[m.group(1)], template)


class Document(hauldtest.HauldTestCase):
    daemon_env = {"MAX_RETRIES_PER_SOURCE": "0", "MAX_RETRIES_PER_ITEM": "0"}

    def setUp(self):
        super().setUp()
        self.contract = contract.Contract.load()

    def test_every_route_is_documented_and_nothing_else(self):
        table = route_table()
        documented = {(m, unnamed(t)) for m, t in self.contract.operations() if m != "HEAD"}
        self.assertEqual(sorted(table - documented), [], "routes the document lacks")
        self.assertEqual(sorted(documented - table), [], "operations the daemon does not have")
        # a documented HEAD is a GET route's (microhttpd answers HEAD for each GET)
        for m, t in self.contract.operations():
            if m == "HEAD":
                self.assertIn(("GET", unnamed(t)), table, t)

    def test_each_path_allows_what_the_document_says(self):
        for template, item in self.contract.doc["paths"].items():
            st, headers, _data = self.daemon.request("OPTIONS", sample_path(template))
            self.assertEqual(st, 204, template)
            allowed = {m.strip() for m in headers["Allow"].split(",")}
            want = {m.upper() for m in item if m in ("get", "post", "delete", "head")} | {"OPTIONS"}
            if "GET" in want:
                want.add("HEAD")
            self.assertEqual(allowed, want, template)

    def test_the_served_document_is_docs_openapi_yaml(self):
        st, headers, data = self.daemon.get("/v1/openapi.yaml")
        self.assertEqual(st, 200)
        self.assertEqual(headers["Content-Type"], "application/yaml")
        self.assertEqual(headers["Cache-Control"], "no-store")
        with open(contract.default_path(), "rb") as f:
            self.assertTrue(data == f.read(), "GET /v1/openapi.yaml differs from docs/openapi.yaml "
                            "(%d bytes served)" % len(data))
        st, headers, data = self.daemon.request("HEAD", "/v1/openapi.yaml")
        self.assertEqual((st, data), (200, b""))
        self.assertEqual(int(headers["Content-Length"]), len(self.contract.text))

    def test_its_version_is_the_daemons(self):
        st, _h, health = self.daemon.get("/v1/health")
        self.assertEqual(self.contract.doc["info"]["version"], health["version"])

    def test_a_config_key_the_document_lacks_would_fail(self):
        # every setting is listed: the daemon's keys are exactly the document's
        st, _h, cfg = self.daemon.get("/v1/config")
        schema = self.contract.doc["components"]["schemas"]["Config"]
        self.assertEqual(sorted(cfg), sorted(schema["required"]))


class Checker(hauldtest.HauldTestCase):
    """The checker itself fails on answers that do not fit."""
    daemon_env = {"MAX_RETRIES_PER_SOURCE": "0", "MAX_RETRIES_PER_ITEM": "0"}

    def setUp(self):
        super().setUp()
        self.contract = contract.Contract.load()
        job = self.daemon.post_job({"urls": [self.file_url("c.png", size=2000)], "label": "c"})
        self.job = self.daemon.wait_job(job["id"])
        self.path = "/v1/jobs/" + self.job["id"]
        self.json = {"Content-Type": "application/json", "Cache-Control": "no-store"}

    def check(self, method, path, status, headers, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.contract.check_answer(method, path, status, headers, data)

    def assert_caught(self, method, path, status, headers, body, *words):
        with self.assertRaises(contract.ContractError) as cm:
            self.check(method, path, status, headers, body)
        msg = str(cm.exception)
        for w in words:
            self.assertIn(w, msg)
        return msg

    def test_the_real_answer_fits(self):
        self.check("GET", self.path, 200, self.json, self.job)

    def test_an_undocumented_field(self):
        bad = dict(self.job, colour="red")
        msg = self.assert_caught("GET", self.path, 200, self.json, bad, "GET /v1/jobs/{id} answered 200",
                                 "'colour' was unexpected", "#/components/responses/JobAnswer")
        self.assertIn("schema path: additionalProperties", msg)

    def test_a_nested_undocumented_field(self):
        bad = json.loads(json.dumps(self.job))
        bad["progress"]["fraction"] = 0.5
        self.assert_caught("GET", self.path, 200, self.json, bad, "at $.progress", "'fraction' was unexpected")

    def test_a_missing_field_a_wrong_type_a_wrong_enum(self):
        bad = dict(self.job)
        del bad["deadline_at"]
        self.assert_caught("GET", self.path, 200, self.json, bad, "'deadline_at' is a required property")
        bad = dict(self.job, max="10")
        self.assert_caught("GET", self.path, 200, self.json, bad, "at $.max", "'10' is not of type 'integer'")
        bad = dict(self.job, state="done")
        self.assert_caught("GET", self.path, 200, self.json, bad, "at $.state", "'done' is not one of")
        bad = dict(self.job, created_at="2026-11-30 10:00:00")
        self.assert_caught("GET", self.path, 200, self.json, bad, "at $.created_at")

    def test_long_arrays_are_checked_element_by_element(self):
        # the checker remembers the valid elements of long arrays: a bad one
        # among many good ones (names apart) is still found
        entry = self.job["per_source"][0]
        n = contract.MEMO_MIN * 2
        path = self.path + "/sources"
        many = {"per_source": [dict(entry, source="h%d.example" % i) for i in range(n)],
                "per_source_total": n, "next_cursor": None}
        self.check("GET", path, 200, self.json, many)
        self.check("GET", path, 200, self.json, many)
        for field, value, words in (("circuit", "ajar", "'ajar' is not one of"),
                                    ("source", 5, "5 is not of type 'string'"),
                                    ("bytes", -1, "-1 is less than the minimum of 0"),
                                    ("lost", True, "'lost' was unexpected")):
            bad = json.loads(json.dumps(many))
            bad["per_source"][n - 5][field] = value
            self.assert_caught("GET", path, 200, self.json, bad, "at $.per_source[%d]" % (n - 5), words)

    def test_a_problem_with_a_stray_field_or_not_json(self):
        problem = {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "no such job"}
        ptype = {"Content-Type": "application/problem+json", "Cache-Control": "no-store"}
        self.check("GET", self.path, 404, ptype, problem)
        self.assert_caught("GET", self.path, 404, ptype, dict(problem, code=7), "answered 404",
                           "'code' was unexpected")
        self.assert_caught("GET", self.path, 404, ptype, b"<html>", "the body is not JSON")
        # a problem sent as plain JSON
        self.assert_caught("GET", self.path, 404, self.json, problem, "Content-Type 'application/json'",
                           "application/problem+json")

    def test_headers_statuses_and_bodies_the_document_does_not_have(self):
        created = dict(self.json)
        self.assert_caught("POST", "/v1/jobs", 201, created, self.job, "lacks the header Location")
        created["Location"] = "/jobs/x"
        self.assert_caught("POST", "/v1/jobs", 201, created, self.job, "header Location")
        self.assert_caught("GET", self.path, 200, {"Content-Type": "application/json"}, self.job,
                           "lacks the header Cache-Control")
        self.assert_caught("DELETE", self.path, 204, {"Cache-Control": "no-store"}, b"{}",
                           "with a body, but")
        self.assert_caught("PUT", self.path, 200, self.json, self.job, "no PUT operation")
        self.assert_caught("GET", "/v1/jobs", 202, self.json, {"jobs": []}, "answered 202")

    def test_events(self):
        self.contract.check_event("/v1/events", "circuit", {
            "source": "a", "state": "closed", "consecutive_failures": 0, "threshold": 5, "trips": 0,
            "opened_at": None, "retry_at": None, "open_s": 60.0, "last_error": None}, "12")
        with self.assertRaises(contract.ContractError) as cm:
            self.contract.check_event(self.path + "/events", "circuit", {})
        self.assertIn("documents item, job, progress", str(cm.exception))
        item = self.daemon.items(self.job["id"])[0]
        self.contract.check_event("/v1/events", "item", dict(item, job_id=self.job["id"]))
        with self.assertRaises(contract.ContractError) as cm:
            self.contract.check_event("/v1/events", "item", item)
        self.assertIn("'job_id' is a required property", str(cm.exception))
        with self.assertRaises(contract.ContractError) as cm:
            self.contract.check_event("/v1/events", "item", dict(item, job_id=self.job["id"], extra=1))
        self.assertIn("'extra' was unexpected", str(cm.exception))
        with self.assertRaises(contract.ContractError):
            self.contract.check_event("/v1/events", "job", self.job, "x1")

    def test_a_request_the_schema_would_refuse(self):
        self.contract.check_request("POST", "/v1/jobs", {"urls": ["http://example.org/a"], "max": 3})
        with self.assertRaises(contract.ContractError) as cm:
            self.contract.check_request("POST", "/v1/jobs", {"urls": ["http://example.org/a"], "max": 0})
        self.assertIn("request the daemon accepted", str(cm.exception))

    def test_the_harness_checks_every_answer(self):
        # hauldtest's requests go through the shared contract: a stricter
        # one makes an ordinary answer fail there
        text = self.contract.text
        for field, after in ((b"version", b""), (b"label", b"        priority:\n")):
            old = b"        %s:\n          type: string\n%s" % (field, after)
            self.assertEqual(text.count(old), 1, old)
            text = text.replace(old, b"        %s:\n          type: string\n          pattern: '^never$'\n%s"
                                % (field, after))
        saved = contract._shared
        contract._shared = contract.Contract(text)
        try:
            with self.assertRaises(contract.ContractError) as cm:
                self.daemon.get("/v1/health")
            self.assertIn("GET /v1/health answered 200", str(cm.exception))
            self.assertIn("at $.version", str(cm.exception))
            with self.assertRaises(contract.ContractError) as cm:
                list(self.daemon.events("/v1/jobs/%s/events" % self.job["id"], timeout=5))
            self.assertIn("the data of a 'job' event", str(cm.exception))
            self.assertIn("at $.label", str(cm.exception))
        finally:
            contract._shared = saved


class Problems(hauldtest.HauldTestCase):
    """Error answers, each checked against the document by the harness."""
    daemon_env = {"MAX_RETRIES_PER_SOURCE": "0", "MAX_RETRIES_PER_ITEM": "0", "MAX_REQUEST_BODY": "1K",
                  "API_MAX_CONNECTIONS_PER_IP": "1024"}

    def test_400(self):
        data = self.assert_problem(self.daemon.post("/v1/jobs", {"urls": ["ftp://x"], "max": 0}), 400, "max")
        self.assertIn("urls[0]", [e["field"] for e in data["errors"]])
        self.assert_problem(self.daemon.get("/v1/jobs?limit=0&state=bogus"), 400, "limit")
        self.assert_problem(self.daemon.get("/v1/jobs/%s/items?cursor=x" % SAMPLE["id"]), 400, "cursor")
        self.assert_problem(self.daemon.post("/v1/jobs", {"urls": ["http://a.example/"]},
                                             headers={"Idempotency-Key": "with space"}), 400, "Idempotency-Key")
        self.assert_problem(self.daemon.get("/v1/events", headers={"Last-Event-ID": "x"}), 400, "Last-Event-ID")

    def test_403_421(self):
        self.assert_problem(self.daemon.post("/v1/jobs", {"urls": ["http://a.example/"]},
                                             headers={"Origin": "http://evil.example"}), 403)
        self.assert_problem(self.daemon.get("/v1/jobs", headers={"Host": "evil.example"}), 421)

    def test_404_405(self):
        self.assert_problem(self.daemon.get("/v1/jobs/" + SAMPLE["id"]), 404)
        self.assert_problem(self.daemon.get("/v1/jobs/not-an-id"), 404)
        self.assert_problem(self.daemon.get("/v1/nothing/here"), 404)
        self.assert_problem(self.daemon.post("/v1/circuits/nosuch.example/reset"), 404)
        self.assert_problem(self.daemon.get("/v1/jobs/%s/items/0/file" % SAMPLE["id"]), 404)
        answer = self.daemon.request("PUT", "/v1/jobs", body={})
        self.assert_problem(answer, 405)
        self.assertEqual(answer[1]["Allow"], "OPTIONS, POST, GET, HEAD")

    def test_409_422(self):
        job = self.daemon.post_job({"urls": [self.file_url("x.png")]},
                                   headers={"Idempotency-Key": "contract-1"})
        self.daemon.wait_job(job["id"])
        self.assert_problem(self.daemon.post("/v1/jobs/%s/cancel" % job["id"]), 409)
        self.assert_problem(self.daemon.post("/v1/jobs/%s/resume" % job["id"]), 409)
        again = self.daemon.post("/v1/jobs", {"urls": [self.file_url("x.png")]},
                                 headers={"Idempotency-Key": "contract-1"})
        self.assertEqual((again[0], again[1]["Location"]), (201, "/v1/jobs/" + job["id"]))
        self.assert_problem(self.daemon.post("/v1/jobs", {"urls": [self.file_url("y.png")]},
                                             headers={"Idempotency-Key": "contract-1"}), 422)

    def test_413_415(self):
        big = {"urls": ["http://a.example/" + "x" * 2000]}
        self.assert_problem(self.daemon.post("/v1/jobs", big), 413)
        self.assert_problem(self.daemon.post("/v1/jobs", "{}", headers={"Content-Type": "text/plain"}), 415)
        self.assert_problem(self.daemon.post("/v1/jobs", "{}", headers={"Content-Type": "application/xml"}), 415)

    def test_503_too_many_event_streams(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 1024:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
        socks = []
        try:
            for _ in range(STREAMS_MAX):
                s = socket.create_connection(("127.0.0.1", self.daemon.port), timeout=10)
                socks.append(s)
                s.sendall(b"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = s.recv(4096)
                    self.assertTrue(chunk, "a stream closed before its headers")
                    head += chunk
                self.assertIn(b" 200 ", head.split(b"\r\n", 1)[0])
            answer = self.daemon.get("/v1/events")
            data = self.assert_problem(answer, 503)
            self.assertEqual(answer[1]["Retry-After"], "5")
            self.assertIn("too many event streams", data["detail"])
        finally:
            for s in socks:
                s.close()


class Unauthorized(hauldtest.HauldTestCase):
    start_daemon = False

    def setUp(self):
        super().setUp()
        self.daemon = self.new_daemon(token=TOKEN)

    def test_401_and_the_public_routes(self):
        answer = self.daemon.get("/v1/jobs")
        self.assert_problem(answer, 401)
        self.assertEqual(answer[1]["WWW-Authenticate"], "Bearer")
        self.assert_problem(self.daemon.post("/v1/jobs/%s/pause" % SAMPLE["id"]), 401)
        for path in ("/v1/health", "/v1/openapi.yaml", "/"):
            self.assertEqual(self.daemon.get(path)[0], 200, path)
        st, _h, cfg = self.daemon.get("/v1/config", headers={"Authorization": "Bearer " + TOKEN})
        self.assertEqual((st, cfg["API_TOKEN"]), (200, "***"))


class Answers(hauldtest.HauldTestCase):
    """Successful answers of every kind, through the harness's checks."""
    daemon_env = {"MAX_RETRIES_PER_SOURCE": "0", "MAX_RETRIES_PER_ITEM": "0",
                  "CIRCUIT_BREAKER_THRESHOLD": "1"}

    def test_files_ranges_and_archive(self):
        job = self.run_job({"urls": [self.file_url("f.png", size=3000)]})
        path = "/v1/jobs/%s/items/0/file" % job["id"]
        st, h, body = self.daemon.get(path)
        self.assertEqual((st, len(body)), (200, 3000))
        st, h, body = self.daemon.get(path, headers={"Range": "bytes=0-99"})
        self.assertEqual((st, h["Content-Range"], len(body)), (206, "bytes 0-99/3000", 100))
        st, _h, body = self.daemon.get(path, headers={"If-None-Match": h["ETag"]})
        self.assertEqual((st, body), (304, b""))
        answer = self.daemon.get(path, headers={"Range": "bytes=5000-"})
        self.assert_problem(answer, 416)
        self.assertEqual(answer[1]["Content-Range"], "bytes */3000")
        st, _h, body = self.daemon.request("HEAD", path)
        self.assertEqual((st, body), (200, b""))
        st, h, body = self.daemon.get("/v1/jobs/%s/archive" % job["id"])
        self.assertEqual((st, h["Content-Type"]), (200, "application/x-tar"))
        self.assertEqual(self.daemon.request("HEAD", "/v1/jobs/%s/archive" % job["id"])[0], 200)
        self.assertEqual(self.daemon.delete("/v1/jobs/" + job["id"])[0], 204)

    def test_pause_resume_stats_and_the_rest(self):
        job = self.daemon.post_job({"urls": [self.file_url("s.png", size=100000, stall_after=1000,
                                                            stall_for=30)]})
        self.daemon.wait_job(job["id"], states="running")
        for action, state in (("pause", "paused"), ("resume", None), ("cancel", None)):
            st, _h, data = self.daemon.post("/v1/jobs/%s/%s" % (job["id"], action))
            self.assertEqual(st, 200, data)
            if state:
                self.assertEqual(data["state"], state)
        self.daemon.wait_job(job["id"])
        self.assertEqual(self.daemon.post("/v1/jobs/%s/retry" % job["id"])[0], 200)
        for path in ("/v1/stats", "/v1/circuits", "/v1/sources", "/v1/config", "/metrics", "/",
                     "/app.js", "/app.css", "/favicon.svg", "/v1/jobs?state=running&state=queued",
                     "/v1/jobs/%s/items?state=pending&limit=1" % job["id"]):
            self.assertEqual(self.daemon.get(path)[0], 200, path)
        st, _h, stats = self.daemon.post("/v1/stats/reset")
        self.assertEqual((st, stats["total_attempts"]), (200, 0))
        host = urllib.parse.urlsplit(self.origin.url("/")).netloc
        st, _h, circuit = self.daemon.post("/v1/circuits/%s/reset" % host)
        self.assertEqual((st, circuit["state"]), (200, "closed"))

    def test_every_kind_of_event(self):
        seen = {}
        # another host (a source of its own), whose circuit opens at its first failure
        bad = self.origin.url("/file/down.png", status=500).replace("127.0.0.1", "localhost", 1)
        stream = self.daemon.events("/v1/events", timeout=10)
        job = self.daemon.post_job({"urls": [self.file_url("e.png", size=50000, drip=100000), bad]})
        for ev in stream:  # each one checked by the harness
            seen[ev["event"]] = ev
            if ev["event"] == "job" and ev["data"]["id"] == job["id"] and ev["data"]["finished_at"]:
                if "circuit" in seen:
                    break
        self.assertEqual(sorted(seen), ["circuit", "item", "job", "progress"])
        self.assertEqual(seen["circuit"]["data"]["state"], "open")
        events = list(self.daemon.events("/v1/jobs/%s/events?last_event_id=0" % job["id"]))
        self.assertEqual(events[-1]["event"], "job")
        self.assertEqual(events[-1]["data"]["state"], "partial")


if __name__ == "__main__":
    hauldtest.main()
