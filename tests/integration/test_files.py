"""Getting the downloaded files over the API: GET /v1/jobs/{id}/items/{index}/file
(whole, HEAD, one range, conditional, its errors, the token, and paths that
would leave DOWNLOAD_DIR) and GET /v1/jobs/{id}/archive (a tar of the
job's finished files, read back with Python's tarfile)."""

import email.utils
import hashlib
import io
import os
import sqlite3
import tarfile
import urllib.parse

import hauldtest
from hauldtest import body_for

SIZE = 5000


def file_path(job_id, index):
    return "/v1/jobs/%s/items/%d/file" % (job_id, index)


def http_date(path):
    return email.utils.formatdate(os.stat(path).st_mtime, usegmt=True)


def disposition_name(value):
    """The file name a Content-Disposition value gives: filename*
    (RFC 8187, UTF-8'') over filename."""
    parts = [p.strip() for p in value.split(";")]
    assert parts[0] == "attachment", value
    params = dict(p.split("=", 1) for p in parts[1:])
    if "filename*" in params:
        charset, _, encoded = params["filename*"].partition("''")
        assert charset.upper() == "UTF-8", value
        return urllib.parse.unquote(encoded, encoding="utf-8", errors="strict")
    return params["filename"].strip('"')


class FilesCase(hauldtest.HauldTestCase):
    daemon_env = {"MAX_RETRIES_PER_ITEM": "0", "MAX_RETRIES_PER_SOURCE": "0", "ACCEPT_CONTENT": "any"}

    def one_file(self, name="a.png", size=SIZE, **params):
        """A finished job with one file; (job id, item, the file's bytes)."""
        job = self.run_job({"urls": [self.file_url(name, size=size, **params)]})
        self.assertEqual(job["state"], "succeeded", job)
        (item,) = self.items(job["id"])
        return job["id"], item, body_for(name, size, type=params.get("type", "png"))

    def tamper(self, job_id, index, **columns):
        """Change an item's row in the job table behind the daemon's back."""
        db = sqlite3.connect(os.path.join(self.daemon.state_dir, "jobs.db"), timeout=10)
        try:
            sets = ", ".join("%s = ?" % k for k in columns)
            cur = db.execute("UPDATE items SET %s WHERE idx = ? AND job_seq = "
                             "(SELECT seq FROM jobs WHERE id = ?)" % sets,
                             list(columns.values()) + [index, job_id])
            db.commit()
            self.assertEqual(cur.rowcount, 1)
        finally:
            db.close()


class ItemFile(FilesCase):

    def test_whole_file_with_its_headers(self):
        job_id, item, want = self.one_file()
        st, h, body = self.daemon.get(file_path(job_id, 0))
        self.assertEqual(st, 200, body)
        self.assertTrue(body == want, "the answer is not the file's bytes")
        self.assertEqual(h["Content-Length"], str(SIZE))
        self.assertEqual(h["Content-Type"], item["content_type"])
        self.assertEqual(h["Content-Type"], "image/png")
        self.assertEqual(h["ETag"], '"%s"' % hashlib.sha256(want).hexdigest())
        self.assertEqual(h["ETag"], '"%s"' % item["sha256"])
        self.assertEqual(h["Last-Modified"], http_date(self.item_path(item)))
        self.assertEqual(h["Accept-Ranges"], "bytes")
        self.assertEqual(h["Content-Disposition"], 'attachment; filename="a.png"')
        self.assertEqual(h["X-Content-Type-Options"], "nosniff")
        self.assertEqual(h["Content-Security-Policy"], "sandbox")
        self.assertEqual(h["Cache-Control"], "no-store")
        self.assertIsNone(h.get("Content-Range"))

    def test_head_has_the_headers_and_no_body(self):
        job_id, item, _ = self.one_file()
        st, h, body = self.daemon.request("HEAD", file_path(job_id, 0))
        self.assertEqual(st, 200)
        self.assertEqual(body, b"")
        self.assertEqual(h["Content-Length"], str(SIZE))
        self.assertEqual(h["ETag"], '"%s"' % item["sha256"])
        self.assertEqual(h["Accept-Ranges"], "bytes")

    def test_a_file_larger_than_a_buffer_is_whole(self):
        size = 3 * 1024 * 1024 + 17
        job_id, item, want = self.one_file("big.png", size=size)
        st, h, body = self.daemon.get(file_path(job_id, 0), timeout=30)
        self.assertEqual(st, 200)
        self.assertEqual(len(body), size)
        self.assertEqual(hashlib.sha256(body).hexdigest(), item["sha256"])

    def test_one_range(self):
        job_id, item, want = self.one_file()
        cases = {
            "bytes=100-199": (100, 200),
            "bytes=4900-": (4900, SIZE),
            "bytes=-50": (SIZE - 50, SIZE),
            "bytes=4990-99999": (4990, SIZE),  # the end is clamped to the file
            "bytes=-99999": (0, SIZE),         # more than the file: all of it
            "bytes=0-0": (0, 1),
            "BYTES=10-19": (10, 20),           # the unit is case-insensitive
        }
        for rng, (a, b) in cases.items():
            with self.subTest(range=rng):
                st, h, body = self.daemon.get(file_path(job_id, 0), headers={"Range": rng})
                self.assertEqual(st, 206, body)
                self.assertTrue(body == want[a:b], "206 for %s is not the file's bytes %d..%d" % (rng, a, b))
                self.assertEqual(h["Content-Range"], "bytes %d-%d/%d" % (a, b - 1, SIZE))
                self.assertEqual(h["Content-Length"], str(b - a))
                self.assertEqual(h["ETag"], '"%s"' % item["sha256"])
                self.assertEqual(h["Content-Type"], "image/png")

    def test_several_ranges_or_a_malformed_one_get_the_whole_file(self):
        job_id, _, want = self.one_file()
        for rng in ("bytes=0-9,20-29", "bytes=abc", "items=0-10", "bytes=20-10", "bytes=5", "bytes=1-2x"):
            with self.subTest(range=rng):
                st, h, body = self.daemon.get(file_path(job_id, 0), headers={"Range": rng})
                self.assertEqual(st, 200, body)
                self.assertTrue(body == want)
                self.assertIsNone(h.get("Content-Range"))

    def test_unsatisfiable_range_is_416(self):
        job_id, _, _ = self.one_file()
        for rng in ("bytes=5000-", "bytes=5000-6000", "bytes=-0", "bytes=99999-"):
            with self.subTest(range=rng):
                answer = self.daemon.get(file_path(job_id, 0), headers={"Range": rng})
                self.assert_problem(answer, 416)
                self.assertEqual(answer[1]["Content-Range"], "bytes */%d" % SIZE)

    def test_if_range(self):
        job_id, item, want = self.one_file()
        etag = '"%s"' % item["sha256"]
        modified = http_date(self.item_path(item))
        cases = [
            (etag, 206),
            ('"0000"', 200),                                  # another version: the whole file
            ("W/" + etag, 200),                               # a weak tag never matches If-Range
            (modified, 206),
            ("Thu, 01 Jan 1970 00:00:00 GMT", 200),
            ("not a date", 200),
        ]
        for if_range, status in cases:
            with self.subTest(if_range=if_range):
                st, h, body = self.daemon.get(file_path(job_id, 0),
                                              headers={"Range": "bytes=10-19", "If-Range": if_range})
                self.assertEqual(st, status, body)
                self.assertTrue(body == (want[10:20] if status == 206 else want))

    def test_if_none_match_is_304(self):
        job_id, item, want = self.one_file()
        etag = '"%s"' % item["sha256"]
        for inm in (etag, '"x", ' + etag, "W/" + etag, "*"):
            with self.subTest(if_none_match=inm):
                st, h, body = self.daemon.get(file_path(job_id, 0), headers={"If-None-Match": inm})
                self.assertEqual(st, 304, body)
                self.assertEqual(body, b"")
                self.assertEqual(h["ETag"], etag)
        st, _, body = self.daemon.get(file_path(job_id, 0), headers={"If-None-Match": '"other"'})
        self.assertEqual(st, 200)
        self.assertTrue(body == want)

    def test_if_modified_since(self):
        job_id, item, want = self.one_file()
        modified = http_date(self.item_path(item))
        st, _, body = self.daemon.get(file_path(job_id, 0), headers={"If-Modified-Since": modified})
        self.assertEqual(st, 304)
        st, _, body = self.daemon.get(file_path(job_id, 0),
                                      headers={"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"})
        self.assertEqual(st, 200)
        self.assertTrue(body == want)
        # If-None-Match decides when both are sent
        st, _, _ = self.daemon.get(file_path(job_id, 0),
                                   headers={"If-None-Match": '"other"', "If-Modified-Since": modified})
        self.assertEqual(st, 200)

    def test_non_ascii_name_in_content_disposition(self):
        name = "café \"ü\".png"
        job_id, item, want = self.one_file(name)
        st, h, body = self.daemon.get(file_path(job_id, 0))
        self.assertEqual(st, 200)
        value = h["Content-Disposition"]
        self.assertIn("filename*=UTF-8''", value)
        self.assertEqual(disposition_name(value), os.path.basename(item["path"]))
        fallback = value.split('filename="', 1)[1].split('"', 1)[0]
        self.assertTrue(all(0x20 <= ord(c) < 0x7F for c in fallback), value)

    def test_other_content_types_are_sent_as_stored(self):
        job_id, item, want = self.one_file("page.html", type="html")
        st, h, body = self.daemon.get(file_path(job_id, 0))
        self.assertEqual(st, 200)
        self.assertEqual(h["Content-Type"], item["content_type"])
        self.assertEqual(h["Content-Security-Policy"], "sandbox")
        self.assertEqual(h["X-Content-Type-Options"], "nosniff")
        self.assertTrue(h["Content-Disposition"].startswith("attachment;"))


class ItemFileErrors(FilesCase):

    def test_unknown_job(self):
        data = self.assert_problem(self.daemon.get(file_path("0" * 26, 0)), 404)
        self.assertIn("job", data["detail"])
        self.assert_problem(self.daemon.get("/v1/jobs/nope/items/0/file"), 404)

    def test_unknown_item(self):
        job_id, _, _ = self.one_file()
        for index in ("1", "9999", "10000", "99999999999999999999", "-1", "x", "0x0"):
            with self.subTest(index=index):
                data = self.assert_problem(self.daemon.get("/v1/jobs/%s/items/%s/file" % (job_id, index)), 404)
                self.assertIn("no item", data["detail"])

    def test_file_deleted_on_disk(self):
        job_id, item, _ = self.one_file()
        os.unlink(self.item_path(item))
        data = self.assert_problem(self.daemon.get(file_path(job_id, 0)), 404)
        self.assertIn("missing on disk", data["detail"])
        st, _, body = self.daemon.request("HEAD", file_path(job_id, 0))
        self.assertEqual((st, body), (404, b""))

    def test_item_not_finished_is_409(self):
        job = self.daemon.post_job({"urls": [self.file_url("slow.png", size=400000, drip=40000)]})
        self.daemon.wait_for(lambda: self.items(job["id"])[0]["state"] == "running", what="item running")
        data = self.assert_problem(self.daemon.get(file_path(job["id"], 0)), 409)
        self.assertIn("running", data["detail"])
        self.daemon.post("/v1/jobs/%s/cancel" % job["id"])

    def test_failed_item_is_409(self):
        job = self.run_job({"urls": [self.origin.url("/file/gone.png", status=404)]})
        self.assertEqual(job["state"], "failed", job)
        data = self.assert_problem(self.daemon.get(file_path(job["id"], 0)), 409)
        self.assertIn("failed", data["detail"])

    def test_method_not_allowed(self):
        job_id, _, _ = self.one_file()
        st, h, _ = self.daemon.post(file_path(job_id, 0))
        self.assertEqual(st, 405)
        self.assertIn("GET", h["Allow"])
        self.assertIn("HEAD", h["Allow"])

    def test_a_file_of_another_node_is_409(self):
        job_id, _, _ = self.one_file()
        _, _, health = self.daemon.get("/v1/health")
        db = sqlite3.connect(os.path.join(self.daemon.state_dir, "jobs.db"), timeout=10)
        try:
            (node,) = db.execute("SELECT node FROM items").fetchone()
        finally:
            db.close()
        self.assertEqual(node, health["node"], "the item is not this node's")
        self.tamper(job_id, 0, node="node-b")
        data = self.assert_problem(self.daemon.get(file_path(job_id, 0)), 409)
        self.assertIn("node-b", data["detail"])
        self.tamper(job_id, 0, node=health["node"])
        self.assertEqual(self.daemon.get(file_path(job_id, 0))[0], 200)


class PathEscape(FilesCase):
    """Whatever the table says, only regular files below DOWNLOAD_DIR are
    served; everything else is refused (403) and logged."""

    def setUp(self):
        super().setUp()
        self.outside = os.path.join(self.daemon.tmp, "secret.txt")
        with open(self.outside, "wb") as f:
            f.write(b"SECRET outside DOWNLOAD_DIR\n")

    def assert_refused(self, job_id):
        answer = self.daemon.get(file_path(job_id, 0))
        self.assertNotIn(b"SECRET", answer[2] if isinstance(answer[2], bytes) else b"")
        self.assert_problem(answer, 403)
        self.assertNotIn("root:", repr(answer[2]))

    def test_dot_dot_in_the_stored_path(self):
        job_id, _, _ = self.one_file()
        for bad in ("../../etc/passwd", "../secret.txt", "../../secret.txt", "/etc/passwd",
                    job_id + "/../../secret.txt", job_id + "//x.png", "./" + job_id, ""):
            with self.subTest(path=bad):
                self.tamper(job_id, 0, path=bad)
                self.assert_refused(job_id)
        self.assertIn("refused to serve", self.daemon.log_text())

    def test_symlink_to_a_file_outside(self):
        job_id, item, _ = self.one_file()
        path = self.item_path(item)
        os.unlink(path)
        os.symlink(self.outside, path)
        self.assert_refused(job_id)

    def test_symlinked_directory_on_the_way(self):
        job_id, item, _ = self.one_file()
        path = self.item_path(item)
        outdir = os.path.join(self.daemon.tmp, "elsewhere")
        os.mkdir(outdir)
        os.rename(self.outside, os.path.join(outdir, os.path.basename(path)))
        srcdir = os.path.dirname(path)
        os.unlink(path)
        os.rmdir(srcdir)
        os.symlink(outdir, srcdir)
        self.assert_refused(job_id)

    def test_not_a_regular_file(self):
        job_id, item, _ = self.one_file()
        path = self.item_path(item)
        os.unlink(path)
        os.mkfifo(path)  # opening a FIFO must not hang the server
        self.assert_refused(job_id)
        os.unlink(path)
        os.mkdir(path)
        self.assert_refused(job_id)


class Token(FilesCase):
    start_daemon = False

    def setUp(self):
        super().setUp()
        self.daemon = self.new_daemon(token="s3cret-token")
        self.auth = {"Authorization": "Bearer s3cret-token"}

    def test_file_and_archive_need_the_token(self):
        job = self.daemon.post_job({"urls": [self.file_url("t.png", size=SIZE)]}, headers=self.auth)

        def finished():
            _, _, j = self.daemon.get("/v1/jobs/" + job["id"], headers=self.auth)
            return j["state"] in hauldtest.TERMINAL_STATES and j
        self.assertEqual(self.daemon.wait_for(finished, what="job finished")["state"], "succeeded")
        for path in (file_path(job["id"], 0), "/v1/jobs/%s/archive" % job["id"]):
            with self.subTest(path=path):
                self.assert_problem(self.daemon.get(path), 401)
                self.assert_problem(self.daemon.get(path, headers={"Authorization": "Bearer nope"}), 401)
                self.assertEqual(self.daemon.request("HEAD", path)[0], 401)
                st, _, body = self.daemon.get(path, headers=self.auth)
                self.assertEqual(st, 200)
                self.assertGreater(len(body), 0)
        st, _, body = self.daemon.get(file_path(job["id"], 0), headers=self.auth)
        self.assertTrue(body == body_for("t.png", SIZE))


class Archive(FilesCase):

    def get_tar(self, job_id):
        st, h, body = self.daemon.get("/v1/jobs/%s/archive" % job_id, timeout=30)
        self.assertEqual(st, 200, body)
        self.assertEqual(h["Content-Type"], "application/x-tar")
        self.assertEqual(h["Content-Disposition"], 'attachment; filename="%s.tar"' % job_id)
        self.assertEqual(len(body) % 10240, 0, "the archive does not end on a whole record")
        tar = tarfile.open(fileobj=io.BytesIO(body), mode="r:")
        self.addCleanup(tar.close)
        return tar

    def members(self, tar):
        """{name: sha256} of the regular files in the archive."""
        out = {}
        for m in tar.getmembers():
            self.assertTrue(m.isfile(), m.name)
            self.assertNotIn(m.name, out, "an entry appears twice")
            out[m.name] = hashlib.sha256(tar.extractfile(m).read()).hexdigest()
        return out

    def expected(self, job_id, items):
        return {it["path"][len(job_id) + 1:]: it["sha256"] for it in items if it["state"] == "succeeded"}

    def test_exactly_the_finished_files(self):
        urls = [self.file_url("a.png", size=SIZE), self.file_url("b.jpg", size=70000, type="jpeg"),
                self.origin.url("/file/gone.png", status=404), self.file_url("empty.png", size=0, type="text"),
                self.file_url("c.gif", size=1 << 20, type="gif")]
        job = self.run_job({"urls": urls})
        self.assertEqual(job["state"], "partial", job)
        items = self.items(job["id"])
        want = self.expected(job["id"], items)
        self.assertEqual(len(want), 4)
        got = self.members(self.get_tar(job["id"]))
        self.assertEqual(got, want)
        for name in got:
            self.assertTrue(name.startswith("127.0.0.1:%d/" % self.origin.port), name)

    def test_long_and_non_ascii_names_use_pax(self):
        long_name = "x" * 180 + ".png"
        names = [long_name, "ünïcødé 名前.png"]
        job = self.run_job({"urls": [self.file_url(n, size=3000 + i) for i, n in enumerate(names)]})
        self.assertEqual(job["state"], "succeeded", job)
        items = self.items(job["id"])
        got = self.members(self.get_tar(job["id"]))
        self.assertEqual(got, self.expected(job["id"], items))
        self.assertEqual(sorted(os.path.basename(n) for n in got), sorted(names))

    def test_a_shared_file_is_in_once(self):
        url = self.file_url("same.png", size=SIZE)
        job = self.run_job({"urls": [url, url]})
        items = self.items(job["id"])
        got = self.members(self.get_tar(job["id"]))
        self.assertEqual(got, self.expected(job["id"], items))
        self.assertEqual(len(got), len({it["path"] for it in items if it["state"] == "succeeded"}))

    def test_no_finished_file_is_an_empty_archive(self):
        job = self.run_job({"urls": [self.origin.url("/file/gone.png", status=404)]})
        self.assertEqual(job["state"], "failed", job)
        tar = self.get_tar(job["id"])
        self.assertEqual(tar.getmembers(), [])

    def test_missing_or_refused_files_are_left_out(self):
        job = self.run_job({"urls": [self.file_url("k%d.png" % i, size=2000 + i) for i in range(4)]})
        items = self.items(job["id"])
        os.unlink(self.item_path(items[1]))
        self.tamper(job["id"], 2, path="../../etc/passwd")
        got = self.members(self.get_tar(job["id"]))
        want = self.expected(job["id"], [items[0], items[3]])
        self.assertEqual(got, want)

    def test_files_of_another_node_are_left_out(self):
        job = self.run_job({"urls": [self.file_url("n%d.png" % i, size=2000 + i) for i in range(3)]})
        items = self.items(job["id"])
        self.tamper(job["id"], 1, node="node-b")
        got = self.members(self.get_tar(job["id"]))
        self.assertEqual(got, self.expected(job["id"], [items[0], items[2]]))

    def test_unknown_job_is_404(self):
        self.assert_problem(self.daemon.get("/v1/jobs/%s/archive" % ("0" * 26)), 404)
        self.assert_problem(self.daemon.get("/v1/jobs/nope/archive"), 404)

    def test_head(self):
        job_id, _, _ = self.one_file()
        st, h, body = self.daemon.request("HEAD", "/v1/jobs/%s/archive" % job_id)
        self.assertEqual(st, 200)
        self.assertEqual(body, b"")
        self.assertEqual(h["Content-Type"], "application/x-tar")

    def test_many_files_across_pages(self):
        n = 150  # more than one page of items
        job = self.run_job({"urls": [self.file_url("m%03d.png" % i, size=100 + i) for i in range(n)]},
                           timeout=60)
        self.assertEqual(job["state"], "succeeded", job)
        items = self.items(job["id"])
        got = self.members(self.get_tar(job["id"]))
        self.assertEqual(len(got), n)
        self.assertEqual(got, self.expected(job["id"], items))


if __name__ == "__main__":
    hauldtest.main()
