#!/usr/bin/env python3
"""The job table fails while a job runs: nothing is lost.

Each case runs a job of NFILES slow files, breaks the SQLite job table in
the middle of it, and checks what a user sees: /v1/health answers 503 with
a reason, POST /v1/jobs 503 with Retry-After, transfers go on into files,
and once the fault clears (or after a restart) every item that succeeded
has its file, the job's end is recorded as it happened, nothing stays
"running" past its deadline, and the failure was logged once, not once per
retry.

The faults:
- the table's file system full (STATE_DIR on a small tmpfs, filled with a
  file of zeros): needs root to mount;
- the table read-only: `chattr +i` on jobs.db and jobs.db-wal, which makes
  every write through the descriptors SQLite holds fail with EPERM
  (SQLITE_IOERR), for root too. chmod 0444 would not do: permissions are
  checked when a file is opened, not on each write, and root passes them
  anyway. An immutable jobs.db-shm is not a fault SQLite can survive:
  SQLite maps that file, and writing a mapped page of an immutable file on
  ext4 is a SIGBUS that kills the process (a disk does not do that), so it
  stays writable. chattr +i needs root (CAP_LINUX_IMMUTABLE) and a file
  system with the flag (ext4, xfs, btrfs, tmpfs since Linux 6.0);
- the file deleted, or replaced by another job table, while hauld runs;
- kill -9 while writes fail, then the fault cleared and hauld started
  again.
A case whose fault cannot be made on this machine is skipped with the
reason printed."""

import datetime
import errno
import os
import subprocess
import sys
import time
import unittest

import hauldtest

NFILES = 40
FSIZE = 6000
DRIP = 12000          # bytes/s: half a second a file
PER_HOST = 4          # MAX_CONNECTIONS_PER_SOURCE: the job takes about NFILES / PER_HOST / 2 s
JOB_TIMEOUT = 120     # s, the job's deadline
TMPFS_SIZE = "3m"
FAULT_WAIT = 20.0     # s for the daemon to notice a fault
TABLE_FAIL_LOG = "sched: the job table cannot be written"
TABLE_BACK_LOG = "sched: the job table is written again"
TABLE_GONE_LOG = "sched: the job table's file was deleted or replaced"


def utc_seconds(stamp):
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def note(text):
    sys.stderr.write("  [%s]\n" % text)


class ReadOnly:
    """Makes the job table's files refuse writes (chattr +i on jobs.db and
    jobs.db-wal), and undoes it."""

    def __init__(self, state_dir):
        self.dir = state_dir
        self.files = [os.path.join(state_dir, n) for n in ("jobs.db", "jobs.db-wal")]
        self.applied = False

    def unsupported(self):
        """None when chattr +i works here, else why not."""
        if os.geteuid() != 0:
            return "chattr +i needs root, and chmod does not stop writes through open descriptors"
        probe = os.path.join(self.dir, "immutable-probe")
        open(probe, "w").close()
        try:
            r = subprocess.run(["chattr", "+i", probe], capture_output=True, text=True)
            if r.returncode != 0:
                return "chattr +i is not supported here: %s" % r.stderr.strip()
            subprocess.run(["chattr", "-i", probe], check=True)
        except FileNotFoundError:
            return "no chattr on this machine"
        finally:
            os.unlink(probe)
        return None

    def apply(self):
        self.applied = True
        subprocess.run(["chattr", "+i"] + self.files, check=True)

    def undo(self):
        if self.applied:
            self.applied = False
            subprocess.run(["chattr", "-i"] + [f for f in self.files if os.path.exists(f)], check=True)


class StoreFaultCase(hauldtest.HauldTestCase):
    start_daemon = False

    # -- the daemon and the job --

    def make_daemon(self, start=True, **env):
        d = hauldtest.Daemon(dict({"MAX_CONNECTIONS_PER_SOURCE": str(PER_HOST),
                                   "RETRY_BACKOFF_BASE": "0.1"}, **env), start=False)
        self._daemons.append(d)
        self.addCleanup(d.stop)
        if start:
            d.start()
        return d

    def names(self, tag):
        return ["%s-%02d.png" % (tag, i) for i in range(NFILES)]

    def submit(self, d, tag):
        urls = [self.file_url(n, size=FSIZE, drip=DRIP, key="%s-%d" % (tag, i))
                for i, n in enumerate(self.names(tag))]
        return d.post_job({"urls": urls, "timeout": JOB_TIMEOUT})

    def succeeded(self, d, job_id):
        """Items the job table says succeeded: {index: path}."""
        return {it["index"]: it["path"] for it in d.items(job_id, state="succeeded")}

    def wait_written(self, d, job_id, n):
        return d.wait_for(lambda: len(self.succeeded(d, job_id)) >= n and self.succeeded(d, job_id),
                          timeout=30.0, what="%d items recorded as succeeded" % n)

    def assert_still_recorded(self, d, job_id, before):
        now = self.succeeded(d, job_id)
        for index, path in before.items():
            self.assertEqual(now.get(index), path, "item %d, recorded before the fault" % index)

    def files_on_disk(self, d, job_id):
        """Paths (relative to DOWNLOAD_DIR) of the whole files under the
        job's folder; part files apart."""
        out = set()
        top = os.path.join(d.download_dir, job_id)
        for root, _dirs, files in os.walk(top):
            for f in files:
                if not f.endswith(".part"):
                    out.add(os.path.relpath(os.path.join(root, f), d.download_dir))
        return out

    def wait_files(self, d, job_id, n, timeout=60.0):
        return d.wait_for(lambda: len(self.files_on_disk(d, job_id)) >= n, timeout=timeout,
                          what="%d files on disk" % n)

    # -- what a user sees during a fault --

    def wait_unhealthy(self, d, why):
        def check():
            status, _, body = d.get("/v1/health")
            return (status, body) if status == 503 else None
        status, body = d.wait_for(check, timeout=FAULT_WAIT, what="GET /v1/health answering 503")
        self.assertEqual(body.get("status"), "unavailable", body)
        self.assertIn(why, body.get("reason", ""), body)
        return body

    def assert_refuses_jobs(self, d, why):
        answer = d.post("/v1/jobs", {"urls": [self.file_url("refused.png")]})
        problem = self.assert_problem(answer, 503)
        self.assertTrue(answer[1].get("Retry-After"), "503 without Retry-After: %r" % dict(answer[1]))
        self.assertIn(why, problem.get("detail", ""), problem)

    def assert_healthy(self, d):
        status, _, body = d.get("/v1/health")
        self.assertEqual(status, 200, body)

    def count_log(self, d, text):
        return d.log_text().count(text)

    # -- nothing lost --

    def assert_nothing_lost(self, d, job_id, tag, ended_by=None):
        """The job succeeded, each of its NFILES items has its own file with
        the origin's bytes, the files on disk are exactly the items' (no
        duplicate, no part file), no job is left running, and a cancel
        now answers 409. ended_by: the job's end was recorded as at or
        before this wall time."""
        job = d.get_job(job_id)
        self.assertEqual(job["state"], "succeeded", job)
        self.assertLessEqual(utc_seconds(job["finished_at"]), utc_seconds(job["deadline_at"]), job)
        if ended_by is not None:
            self.assertLessEqual(utc_seconds(job["finished_at"]), ended_by + 0.05,
                                 "the end was recorded when it was written, not when it happened: %r" % job)
        self.assertEqual(job["progress"]["succeeded"], NFILES, job)
        items = sorted(d.items(job_id), key=lambda it: it["index"])
        self.assertEqual(len(items), NFILES)
        names = self.names(tag)
        for it in items:
            self.assert_item_file(it, names[it["index"]], FSIZE, daemon=d)
        paths = {it["path"] for it in items}
        self.assertEqual(len(paths), NFILES, "two items share a file")
        self.assertEqual(self.files_on_disk(d, job_id), paths, "the files on disk are not the items' files")
        status, _, running = d.get("/v1/jobs?state=running")
        self.assertEqual((status, running["jobs"]), (200, []), running)
        answer = d.post("/v1/jobs/%s/cancel" % job_id)
        self.assert_problem(answer, 409)
        self.assertEqual(d.get_job(job_id)["state"], "succeeded")
        return job, items


class TableFull(StoreFaultCase):
    """STATE_DIR on a small tmpfs that fills up mid-job."""

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            note("skipped: mounting a tmpfs needs root")
            raise unittest.SkipTest("mounting a tmpfs needs root")
        self.d = self.make_daemon(start=False)
        self.d.env_overrides["DOWNLOAD_DIR"] = os.path.join(self.d.tmp, "downloads")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + TMPFS_SIZE, "hauld-test", self.d.state_dir],
                           capture_output=True, text=True)
        if r.returncode != 0:
            note("skipped: mount -t tmpfs failed: %s" % r.stderr.strip())
            raise unittest.SkipTest("mount -t tmpfs failed: %s" % r.stderr.strip())
        self.addCleanup(self.unmount)
        self.fill = os.path.join(self.d.state_dir, "fill")
        self.d.start()

    def unmount(self):
        self.d.stop()
        subprocess.run(["umount", self.d.state_dir], check=True)

    def fill_up(self):
        """Write zeros until the file system is full; returns the bytes."""
        n = 0
        block = b"\0" * 65536
        with open(self.fill, "wb", buffering=0) as f:
            while True:
                try:
                    n += f.write(block)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
        for piece in (4096, 512, 1):  # the last pages too
            with open(self.fill, "ab", buffering=0) as f:
                try:
                    while True:
                        n += f.write(b"\0" * piece)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
        return n

    def test_table_full_mid_job(self):
        d = self.d
        job_id = self.submit(d, "full")["id"]
        before = self.wait_written(d, job_id, 3)
        filled = self.fill_up()
        health = self.wait_unhealthy(d, "cannot be written")
        self.assertIn("No space left on device", health["reason"], "the reason names the cause")
        self.assert_refuses_jobs(d, "cannot be written")
        on_disk_at_fault = len(self.files_on_disk(d, job_id))
        self.wait_files(d, job_id, NFILES)  # transfers go on
        time.sleep(3.0)  # several retries of the write (0.1, 0.2, 0.4, 0.8, 1.6 s)
        self.wait_unhealthy(d, "cannot be written")
        self.assert_still_recorded(d, job_id, before)
        os.unlink(self.fill)
        freed = time.time()
        job = d.wait_job(job_id, timeout=30.0)
        self.assert_healthy(d)
        self.assert_nothing_lost(d, job_id, "full", ended_by=freed)
        self.assertEqual(self.count_log(d, TABLE_FAIL_LOG), 1, "the failure is logged once")
        self.assertEqual(self.count_log(d, TABLE_BACK_LOG), 1, "the recovery is logged once")
        d.post_job({"urls": [self.file_url("after.png")]})  # taking jobs again
        note("table full mid-job: %d items, %d recorded before the fault, %d files on disk when it "
             "began, %d files and %d records after it cleared (%d bytes of zeros; job %s)"
             % (NFILES, len(before), on_disk_at_fault, len(self.files_on_disk(d, job_id)),
                job["progress"]["succeeded"], filled, job["state"]))


class TableReadOnly(StoreFaultCase):
    """jobs.db and jobs.db-wal refuse writes mid-job."""

    def setUp(self):
        super().setUp()
        self.d = self.make_daemon()
        self.ro = ReadOnly(self.d.state_dir)
        why = self.ro.unsupported()
        if why:
            note("skipped: " + why)
            raise unittest.SkipTest(why)
        self.addCleanup(self.ro.undo)

    def test_table_read_only_mid_job(self):
        d = self.d
        job_id = self.submit(d, "ro")["id"]
        before = self.wait_written(d, job_id, 3)
        self.ro.apply()
        self.wait_unhealthy(d, "cannot be written")
        self.assert_refuses_jobs(d, "cannot be written")
        on_disk_at_fault = len(self.files_on_disk(d, job_id))
        self.wait_files(d, job_id, NFILES)
        time.sleep(3.0)
        self.wait_unhealthy(d, "cannot be written")
        self.ro.undo()
        cleared = time.time()
        job = d.wait_job(job_id, timeout=30.0)
        self.assert_healthy(d)
        self.assert_nothing_lost(d, job_id, "ro", ended_by=cleared)
        self.assertEqual(self.count_log(d, TABLE_FAIL_LOG), 1, "the failure is logged once")
        self.assertEqual(self.count_log(d, TABLE_BACK_LOG), 1, "the recovery is logged once")
        note("table read-only (chattr +i) mid-job: %d items, %d recorded before the fault, %d files on disk when "
             "it began, %d files and %d records after it cleared"
             % (NFILES, len(before), on_disk_at_fault, len(self.files_on_disk(d, job_id)),
                job["progress"]["succeeded"]))

    def test_kill9_while_writes_fail(self):
        """Writes fail, hauld is killed, the fault is cleared, hauld starts
        again: what was recorded before the fault is still there, the job
        resumes and ends, and no file is there twice."""
        d = self.d
        job_id = self.submit(d, "k9")["id"]
        before = self.wait_written(d, job_id, 5)
        self.ro.apply()
        self.wait_unhealthy(d, "cannot be written")
        self.wait_files(d, job_id, len(before) + 8)  # done, never recorded
        unrecorded = len(self.files_on_disk(d, job_id)) - len(before)
        d.kill9()
        self.ro.undo()
        d.start()
        self.assert_still_recorded(d, job_id, before)
        self.assertIn(d.get_job(job_id)["state"], ("queued", "running", "succeeded"))
        job = d.wait_job(job_id, timeout=60.0)
        self.assert_nothing_lost(d, job_id, "k9")
        note("kill -9 while writes fail (chattr +i): %d items, %d recorded before the fault, %d more files on "
             "disk unrecorded at the kill; after the restart %d files and %d records (%d requests)"
             % (NFILES, len(before), unrecorded, len(self.files_on_disk(d, job_id)),
                job["progress"]["succeeded"], self.origin.count()))


class TableGone(StoreFaultCase):
    """The table's file deleted, or another moved over it, while hauld
    runs: hauld says so (log, health) and takes no new work rather than
    writing on into a file nobody will read, and the API does not make a
    new empty table beside it."""

    def setUp(self):
        super().setUp()
        self.d = self.make_daemon(MAX_CONCURRENT_JOBS="1")
        self.db = os.path.join(self.d.state_dir, "jobs.db")

    def start_two_jobs(self, tag):
        """A running job, and a second one queued behind it."""
        d = self.d
        first = self.submit(d, tag)["id"]
        self.queued_key = "queued-" + tag
        queued = d.post_job({"urls": [self.file_url("queued-%s.png" % tag, key=self.queued_key)]})["id"]
        self.assertEqual(d.get_job(queued)["state"], "queued")
        before = self.wait_written(d, first, 3)
        return first, queued, before

    def assert_gone_while_running(self, first, queued):
        d = self.d
        d.wait_for(lambda: TABLE_GONE_LOG in d.log_text(), timeout=FAULT_WAIT,
                   what="the log saying the table's file is gone")
        self.wait_unhealthy(d, "deleted or replaced")
        self.assert_refuses_jobs(d, "deleted or replaced")
        self.wait_files(d, first, NFILES)  # the running job's transfers go on
        time.sleep(2.5)  # more than a check period
        self.assertEqual(self.origin.count(key=self.queued_key), 0,
                         "the queued job started after the table's file went away")
        for path in ("/v1/jobs/" + first, "/v1/jobs/" + queued, "/v1/jobs"):
            status, _, body = d.get(path)
            self.assertIn(status, (200, 503), "%s answered %d: %r" % (path, status, body))
        self.assertEqual(self.count_log(d, TABLE_GONE_LOG), 1)
        self.wait_unhealthy(d, "deleted or replaced")

    def test_table_deleted_mid_job(self):
        d = self.d
        first, queued, before = self.start_two_jobs("del")
        for suffix in ("", "-wal", "-shm"):
            os.unlink(self.db + suffix)
        self.assert_gone_while_running(first, queued)
        self.assertFalse(os.path.exists(self.db), "the API made a new table beside the deleted one")
        files = self.files_on_disk(d, first)
        d.stop(expect_code=0)
        d.start()
        # the table went with the file: a new, empty one
        for job_id in (first, queued):
            status, _, body = d.get("/v1/jobs/" + job_id)
            self.assertEqual(status, 404, body)
        self.assertEqual(self.files_on_disk(d, first), files, "the files stay")
        job = self.run_job({"urls": [self.file_url("new.png")]}, daemon=d)
        self.assertEqual(job["state"], "succeeded", job)
        note("table deleted mid-job: %d items, %d recorded before; %d files on disk stay; after the "
             "restart the job is unknown (404) in a new empty table" % (NFILES, len(before), len(files)))

    def test_table_replaced_mid_job(self):
        d = self.d
        other = self.make_daemon()
        kept = self.run_job({"urls": [self.file_url("other.png")]}, daemon=other)
        other.stop(expect_code=0)
        first, queued, before = self.start_two_jobs("rep")
        os.rename(os.path.join(other.state_dir, "jobs.db"), self.db)
        self.assert_gone_while_running(first, queued)
        status, _, body = d.get("/v1/jobs/" + kept["id"])
        self.assertNotEqual(status, 200, "the API reads the new file while the scheduler writes the old "
                            "one: %r" % body)
        files = self.files_on_disk(d, first)
        d.stop(expect_code=0)
        beside = sorted(n for n in os.listdir(d.state_dir) if n.startswith("jobs.db-"))
        # our write-ahead log was moved aside, not left for the new file
        self.assertTrue(any(n.startswith("jobs.db-wal.detached-") for n in beside), beside)
        self.assertNotIn("jobs.db-wal", beside)
        d.start()
        # the table is the one moved in, as it was: its job, not ours
        seen = [d.get("/v1/jobs/" + job_id)[0] for job_id in (kept["id"], first, queued)]
        self.assertEqual(seen, [200, 404, 404],
                         "after the restart GET of the moved-in table's job, then of ours, answered %r; "
                         "left beside the moved-in jobs.db at the stop: %r" % (seen, beside))
        self.assertEqual(d.get_job(kept["id"])["state"], "succeeded")
        self.assertEqual(self.files_on_disk(d, first), files, "the files stay")
        job = self.run_job({"urls": [self.file_url("new.png")]}, daemon=d)
        self.assertEqual(job["state"], "succeeded", job)
        note("table replaced mid-job: %d items, %d recorded before; %d files on disk stay; after the "
             "restart the table is the one moved in" % (NFILES, len(before), len(files)))


if __name__ == "__main__":
    hauldtest.main()
