"""Several hauld nodes sharing one job table in PostgreSQL: the work is
shared out and done once, a node that dies or stalls loses its jobs to the
others (fenced: its late writes are refused, no item gets two files), a
cancel reaches the node that runs the job, circuits are shared with one
probe for the whole cluster, /v1/health lists the nodes, and the nodes
ride out a restart of the database.

The module starts its own PostgreSQL with tests/pg_harness.sh and gives
each test a schema of its own (STORE=...?options=-csearch_path=...). It
exits 77 (skipped) only when the PostgreSQL server binaries are missing.

Every node has its own STATE_DIR and DOWNLOAD_DIR (files land on the node
that downloaded them) and NODE_ID node-a, node-b, node-c. LEASE_TIMEOUT is
3 s, its minimum, rather than the default 30 s: rescue, takeover and
fencing all wait for a lease to run out, and a short lease keeps the
module within a few minutes."""

import calendar
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import hauldtest
from hauldtest import body_for

HARNESS = os.path.join(hauldtest.SRCDIR, "tests", "pg_harness.sh")
LEASE_S = 3            # LEASE_TIMEOUT of every node (its minimum; see above)
RESCUE_SLACK_S = 4.0   # a lost node's jobs restart elsewhere within LEASE_S plus this
JOB_TIMEOUT_S = 60.0   # how long a test waits for a job to end
NODES = ("node-a", "node-b", "node-c")

PG = None  # the module's PostgreSQL, started by main()


class PgServer:
    """A throwaway PostgreSQL server from tests/pg_harness.sh."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="hauld-pg-cluster-", dir="/tmp")
        r = subprocess.run(["bash", HARNESS, "start", self.dir], capture_output=True, text=True)
        if r.returncode != 0:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.returncode = r.returncode
            self.reason = (r.stderr or r.stdout).strip()
            self.base_url = None
            return
        self.returncode = 0
        self.reason = None
        self.base_url = r.stdout.strip().splitlines()[-1]

    def url(self, schema):
        """The STORE of a node working in schema."""
        return self.base_url + "?options=" + urllib.parse.quote("-csearch_path=" + schema, safe="")

    def psql(self, sql):
        """Run sql as the superuser; rows as lists of column strings."""
        r = subprocess.run(["bash", HARNESS, "psql", self.dir, "-c", sql], capture_output=True, text=True,
                           timeout=60)
        if r.returncode != 0:
            raise AssertionError("psql %r failed: %s" % (sql, r.stderr))
        return [line.split("|") for line in r.stdout.splitlines() if line]

    def restart(self, pause_s):
        """Stop the server (connections cut), wait pause_s, start it on the
        same port: in the background; returns the Popen."""
        return subprocess.Popen(["bash", HARNESS, "restart", self.dir, str(pause_s)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    @staticmethod
    def restart_errors(proc):
        """What a finished restart() wrote to stderr (its pipe closed)."""
        with proc.stderr:
            return proc.stderr.read()

    def stop(self):
        subprocess.run(["bash", HARNESS, "stop", self.dir], capture_output=True)


def wait_for(predicate, timeout, what):
    """Poll predicate() every 50 ms until it returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("%s not met after %.1f s" % (what, timeout))
        time.sleep(0.05)


def wall_s(rfc3339):
    """Seconds since the epoch of an API time (2024-01-02T03:04:05.678Z)."""
    return calendar.timegm(time.strptime(rfc3339[:19], "%Y-%m-%dT%H:%M:%S")) + float(rfc3339[19:-1] or 0)


def cpu_s(d):
    """CPU seconds node d's process has used so far."""
    with open("/proc/%d/stat" % d.proc.pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(d, name):
    """A gauge of GET /metrics on node d."""
    status, _, data = d.get("/metrics")
    if status != 200:
        raise AssertionError("GET /metrics answered %d" % status)
    text = data.decode() if isinstance(data, bytes) else data
    m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    if not m:
        raise AssertionError("no %s in /metrics" % name)
    return float(m.group(1))


class ClusterTestCase(hauldtest.HauldTestCase):
    """Three nodes (self.nodes: name -> Daemon) on a schema of the test's
    own, against the fake origin."""

    start_daemon = False
    node_env = {}   # settings of every node in a test class

    def setUp(self):
        super().setUp()
        self.schema = "t_" + self._testMethodName[len("test_"):][:50].lower()
        PG.psql("DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s" % (self.schema, self.schema))
        self.nodes = {}
        self.stopped = set()

    def start_nodes(self, names=NODES, **env):
        for name in names:
            settings = {"STORE": PG.url(self.schema), "NODE_ID": name, "LEASE_TIMEOUT": str(LEASE_S)}
            settings.update(self.node_env)
            settings.update(env)
            self.nodes[name] = self.new_daemon(settings)
        self.addCleanup(self._resume_stopped)
        return self.nodes

    def _resume_stopped(self):
        for name in self.stopped:
            d = self.nodes[name]
            if d.running:
                d.signal(signal.SIGCONT)

    def sql(self, query):
        return PG.psql("SET search_path TO %s; %s" % (self.schema, query))

    # -- where things are --

    def item_nodes(self, job_id):
        """{index: node} of the job's items as the table records them."""
        rows = self.sql("SELECT i.idx, i.node FROM items i JOIN jobs j ON j.seq = i.job_seq "
                        "WHERE j.id = '%s'" % job_id)
        return {int(i): n for i, n in rows}

    def runners(self, job_id):
        """Names of the nodes whose log shows the job started there."""
        mark = "job %s: === JOB START ===" % job_id
        return [n for n, d in self.nodes.items() if mark in d.log_text()]

    def wait_runner(self, job_id, timeout=10.0):
        return wait_for(lambda: self.runners(job_id), timeout, "job %s started on a node" % job_id)[0]

    def node_log_has(self, name, text):
        return text in self.nodes[name].log_text()

    def files_of(self, job_id, hidden=False):
        """{relative path: [node names holding it]} of the job's files in
        every node's DOWNLOAD_DIR (part files only with hidden)."""
        found = {}
        for name, d in self.nodes.items():
            root = os.path.join(d.download_dir, job_id)
            for top, _, files in os.walk(root):
                for f in files:
                    if f.startswith(".") != hidden:
                        continue
                    rel = os.path.relpath(os.path.join(top, f), d.download_dir)
                    found.setdefault(rel, []).append(name)
        return found

    def wait_all(self, job_ids, timeout=JOB_TIMEOUT_S, via=None):
        """Wait for every job to end (asked of node via, else of any live
        node); returns {id: job}."""
        out = {}
        for job_id in job_ids:
            d = self.nodes[via] if via else self.live_node()
            out[job_id] = d.wait_job(job_id, timeout=timeout)
        return out

    def live_node(self):
        for name, d in self.nodes.items():
            if d.running and name not in self.stopped:
                return d
        raise AssertionError("no node is running")

    # -- what every run must end with --

    def assert_whole_and_once(self, job_id, specs, count, via=None):
        """The job's count items all succeeded; each one's file is in
        exactly one node's DOWNLOAD_DIR and is byte for byte the origin's
        (size and SHA-256); the job has no other file anywhere. specs:
        {url: (name, size)}. Returns {index: node holding the file}."""
        d = self.nodes[via] if via else self.live_node()
        items = d.items(job_id)
        self.assertEqual(len(items), count, job_id)
        files = self.files_of(job_id)
        where = {}
        for it in items:
            self.assertEqual(it["state"], "succeeded", it)
            name, size = specs[it["url"]]
            holders = files.get(it["path"], [])
            self.assertEqual(len(holders), 1, "item %d of %s: its file %s is on %s"
                             % (it["index"], job_id, it["path"], holders or "no node"))
            with open(os.path.join(self.nodes[holders[0]].download_dir, it["path"]), "rb") as f:
                got = f.read()
            want = body_for(name, size)
            self.assertEqual(len(got), size, it)
            self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(want).hexdigest(), it)
            self.assertEqual(it["sha256"], hashlib.sha256(want).hexdigest(), it)
            self.assertEqual(it.get("node"), holders[0], "the item names another node than the one with its file")
            where[it["index"]] = holders[0]
        extra = set(files) - {it["path"] for it in items}
        self.assertFalse(extra, "job %s has files no item names (a second copy?): %s"
                         % (job_id, {p: files[p] for p in extra}))
        return where

    def urls(self, prefix, n, size, **params):
        """n URLs /file/PREFIX-i.png on the origin; returns (urls, specs)."""
        urls, specs = [], {}
        for i in range(n):
            name = "%s-%d.png" % (prefix, i)
            u = self.file_url(name, size=size, **params)
            urls.append(u)
            specs[u] = (name, size)
        return urls, specs


class SharingTest(ClusterTestCase):
    # two jobs at a time per node: six jobs cannot all go to the node that
    # received them, so the test sees the work shared out
    node_env = {"MAX_CONCURRENT_JOBS": "2", "MAX_CONNECTIONS_PER_SOURCE": "12"}

    def test_three_nodes_share_300_items_each_downloaded_once(self):
        self.start_nodes()
        names = list(self.nodes)
        jobs, specs = [], {}
        for k in range(6):
            urls = []
            for i in range(50):
                name = "share%d-%d.png" % (k, i)
                size = 2000 + 97 * ((k * 50 + i) % 40)
                params = {"delay": "0.2"} if i % 5 == 0 else {}
                u = self.file_url(name, size=size, **params)
                urls.append(u)
                specs[u] = (name, size)
            d = self.nodes[names[k % 3]]  # submitted to the nodes in turn
            jobs.append(d.post_job({"urls": urls, "label": "share%d" % k})["id"])

        ended = self.wait_all(jobs)
        for job_id, job in ended.items():
            self.assertEqual(job["state"], "succeeded", job)
            self.assertEqual(job["progress"]["succeeded"], 50, job)

        paths = self.origin.stats()["paths"]
        self.assertEqual(len(paths), 300, "the origin saw %d distinct paths" % len(paths))
        twice = {p: c for p, c in paths.items() if c != 1}
        self.assertFalse(twice, "downloaded more than once: %s" % twice)

        holders = set()
        for job_id in jobs:
            where = self.assert_whole_and_once(job_id, specs, 50)
            holders |= set(where.values())
            # the table records which node holds each file, as the API shows it
            self.assertEqual(self.item_nodes(job_id), where, "items.node of job %s" % job_id)
        self.assertGreater(len(holders), 1, "every file is on %s: the work was not shared" % holders)


class RescueTest(ClusterTestCase):
    # MAX_CONCURRENT_JOBS stays at its default: the nodes left have room
    # for the lost jobs at once
    node_env = {"MAX_CONNECTIONS_PER_SOURCE": "12"}

    def test_kill9_mid_run_jobs_finish_on_the_others(self):
        self.start_nodes()
        jobs, specs = [], {}
        for k in range(3):
            # 12 items of 3 s each, at most 4 at a time per node: 9 s or more a job,
            # so the nodes left are still busy with theirs when the lease runs out
            urls, sp = self.urls("rescue%d" % k, 12, 6000, drip=2000)
            specs.update(sp)
            jobs.append(self.nodes[NODES[k]].post_job({"urls": urls})["id"])
        victim_job = jobs[0]
        victim = self.wait_runner(victim_job)
        d = self.nodes[victim]
        d.wait_for(lambda: d.get_job(victim_job)["progress"]["succeeded"] >= 1, 15,
                   "a first item of %s done" % victim_job)
        self.assertGreater(metric(d, "hauld_transfers_in_flight"), 0, "no transfer in flight on " + victim)
        deadline = d.get_job(victim_job)["deadline_at"]
        self.assertIsNotNone(deadline)
        done_before = d.get_job(victim_job)["progress"]["succeeded"]
        self.assertLess(done_before, 12)

        killed_at = time.monotonic()
        d.kill9()
        others = [n for n in NODES if n != victim]
        mark = "job %s: taken over from a node whose lease ran out" % victim_job
        taker = wait_for(
            lambda: [n for n in others if self.node_log_has(n, mark)], LEASE_S + RESCUE_SLACK_S,
            "%s taken over within one lease (%d s) plus %.0f s of the kill of %s"
            % (victim_job, LEASE_S, RESCUE_SLACK_S, victim))[0]
        rescued_after = time.monotonic() - killed_at
        sys.stderr.write("\n  %s rescued by %s %.1f s after the kill\n" % (victim_job, taker, rescued_after))

        ended = self.wait_all(jobs, via=taker)
        for job_id, job in ended.items():
            self.assertEqual(job["state"], "succeeded", job)
            self.assertEqual(job["progress"]["succeeded"], 12, job)
            self.assert_whole_and_once(job_id, specs, 12, via=taker)
        self.assertEqual(ended[victim_job]["deadline_at"], deadline, "the rescued job's deadline moved")


class FencingTest(ClusterTestCase):
    node_env = {"MAX_CONCURRENT_JOBS": "1", "MAX_CONNECTIONS_PER_SOURCE": "12"}

    def test_stopped_node_is_fenced_out_when_it_comes_back(self):
        self.start_nodes()
        # 8 items of 6 s each (dripped), 4 at a time per node; a part file
        # appears once 4 KiB came (the content check), after 2 s
        urls, specs = self.urls("fence", 8, 12000, drip=2000)
        job_id = self.nodes["node-a"].post_job({"urls": urls})["id"]
        first = self.wait_runner(job_id)
        d = self.nodes[first]
        wait_for(lambda: any(first in v for v in self.files_of(job_id, hidden=True).values()), 10,
                 "part files of %s on %s" % (job_id, first))

        d.signal(signal.SIGSTOP)
        self.stopped.add(first)
        others = [n for n in NODES if n != first]
        mark = "job %s: taken over from a node whose lease ran out" % job_id
        second = wait_for(
            lambda: [n for n in others if self.node_log_has(n, mark)], LEASE_S + RESCUE_SLACK_S,
            "%s taken over while %s is stopped" % (job_id, first))[0]
        # the job moves on elsewhere: items succeed on the new node
        self.nodes[second].wait_for(lambda: "job %s: SUCCESS" % job_id in self.nodes[second].log_text(), 15,
                                    "an item of %s done on %s" % (job_id, second))

        d.signal(signal.SIGCONT)
        self.stopped.discard(first)
        d.wait_for(lambda: "job %s: its lease went to another node" % job_id in d.log_text(), 5,
                   "%s says it lost the lease of %s" % (first, job_id))

        job = self.nodes[second].wait_job(job_id, timeout=JOB_TIMEOUT_S)
        self.assertEqual(job["state"], "succeeded", job)
        self.assertEqual(job["progress"]["succeeded"], 8, job)
        where = self.assert_whole_and_once(job_id, specs, 8, via=second)
        parts = {p: v for p, v in self.files_of(job_id, hidden=True).items() if first in v}
        self.assertFalse(parts, "%s kept part files of %s: %s" % (first, job_id, parts))
        # the table credits each item to the node that holds its file
        self.assertEqual(self.item_nodes(job_id), where)


class DatabaseRestartTest(ClusterTestCase):
    # a lease (10 s) longer than the outage (about 3 s): every job stays
    # with its node, so the test can ask that no transfer was redone
    node_env = {"MAX_CONCURRENT_JOBS": "1", "MAX_CONNECTIONS_PER_SOURCE": "12", "LEASE_TIMEOUT": "10"}

    def test_postgresql_restart_mid_job(self):
        self.start_nodes()
        jobs, specs = [], {}
        for k in range(3):
            # item i takes 1 + i/2 s (dripped): items end all through the
            # outage, and every job runs past it (6.5 s or more)
            urls = []
            for i in range(12):
                name, size = "pgre%d-%d.png" % (k, i), 1000 + 500 * i
                urls.append(self.file_url(name, size=size, drip=1000))
                specs[urls[-1]] = (name, size)
            jobs.append(self.nodes[NODES[k]].post_job({"urls": urls})["id"])
        busy = {self.wait_runner(job_id) for job_id in jobs}
        wait_for(lambda: all(metric(self.nodes[n], "hauld_transfers_in_flight") > 0 for n in busy), 10,
             "transfers in flight on every node")

        down_at = time.time()
        restart = PG.restart(3)
        health = {n: set() for n in NODES}
        try:
            while restart.poll() is None:
                for n, d in self.nodes.items():
                    health[n].add(d.get("/v1/health")[0])
                time.sleep(0.1)
        finally:
            restart.wait(60)
        up_at = time.time()
        self.assertEqual(restart.returncode, 0, PG.restart_errors(restart))
        for n in busy:
            self.assertIn(503, health[n], "%s's /v1/health never answered 503 while the table could not "
                                          "be written (answers: %s)" % (n, sorted(health[n])))

        for n, d in self.nodes.items():
            d.wait_for(lambda: d.get("/v1/health")[0] == 200, 10, "%s healthy again" % n)
        ended, failed_reads = {}, []
        for job_id in jobs:
            for n, d in self.nodes.items():
                # as a client that tries again after a 503 would
                status, _, job = d.get("/v1/jobs/" + job_id)
                if status != 200:
                    failed_reads.append("%s GET /v1/jobs/%s: %d %s" % (n, job_id, status, job.get("detail")))
            ended[job_id] = wait_for(lambda: self.read_ended(job_id), JOB_TIMEOUT_S, "job %s ended" % job_id)
        for job_id, job in ended.items():
            self.assertEqual(job["state"], "succeeded", job)
            self.assertEqual(job["progress"]["succeeded"], 12, job)
            self.assert_whole_and_once(job_id, specs, 12)
            # the job ran all through the outage
            self.assertLess(wall_s(job["started_at"]), down_at, job)
            self.assertGreater(wall_s(job["finished_at"]), up_at, job)
        twice = {p: c for p, c in self.origin.stats()["paths"].items() if c != 1}
        self.assertFalse(twice, "transfers redone after the restart: %s" % twice)
        for n in busy:
            self.assertIn("the job table is written again", self.nodes[n].log_text(), n)
            self.assert_no_flood(n)
        self.assertFalse(failed_reads, "API reads failed once /v1/health answered 200 again")

    def test_idle_nodes_through_a_restart(self):
        self.start_nodes()
        time.sleep(1.5)  # a heartbeat or two: every node settled and idle
        for n, d in self.nodes.items():  # each node's API keeps a connection to the table
            status, _, data = d.get("/v1/jobs")
            self.assertEqual(status, 200, (n, data))
        cpu = {n: cpu_s(d) for n, d in self.nodes.items()}
        down_at = time.monotonic()
        restart = PG.restart(3)
        health = {n: set() for n in NODES}
        try:
            while restart.poll() is None:
                for n, d in self.nodes.items():
                    health[n].add(d.get("/v1/health")[0])
                time.sleep(0.1)
        finally:
            restart.wait(60)
        self.assertEqual(restart.returncode, 0, PG.restart_errors(restart))
        outage = time.monotonic() - down_at
        for n, d in self.nodes.items():
            # an idle node waits for the table; it does not spin on the lost connection
            used = cpu_s(d) - cpu[n]
            self.assertLess(used, outage / 4, "%s used %.2f s of CPU in the %.1f s outage" % (n, used, outage))
        # work comes in as soon as the database is back
        jobs = {}
        for n, d in self.nodes.items():
            def submitted():
                status, _, job = d.post("/v1/jobs", {"urls": [self.file_url("after-%s.png" % n, size=2000)]})
                return job["id"] if status == 201 else None
            jobs[n] = wait_for(submitted, 5, "a job accepted by %s after the restart" % n)
        for n, d in self.nodes.items():
            # the first read on a connection kept from before the restart is answered
            status, _, data = d.get("/v1/jobs/" + jobs[n])
            self.assertEqual(status, 200, (n, data))
        for n, job_id in jobs.items():
            job = wait_for(lambda: self.read_ended(job_id), 15, "job %s ended" % job_id)
            self.assertEqual(job["state"], "succeeded", job)
        for n in NODES:
            self.assert_no_flood(n)
        for n in NODES:
            self.assertIn(503, health[n], "%s's /v1/health answered only %s while the table could not be "
                                          "reached (an idle node)" % (n, sorted(health[n])))

    def assert_no_flood(self, name, most=5):
        """No error or warning of the node's log repeats more than most
        times (a failure is logged once per change of state). Answers to
        requests are left out: each request has its line (the test's own
        retries of a refused submission)."""
        counts = {}
        for line in self.nodes[name].log_text().splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[2].startswith("httpd: "):
                continue
            if len(parts) == 3 and parts[1] in ("error", "warning"):
                counts[parts[2]] = counts.get(parts[2], 0) + 1
        flood = {text: c for text, c in counts.items() if c > most}
        self.assertFalse(flood, "%s logged the same line over and over: %s" % (name, flood))

    def read_ended(self, job_id):
        status, _, job = self.live_node().get("/v1/jobs/" + job_id)
        return job if status == 200 and job["state"] in hauldtest.TERMINAL_STATES else None


class CancelElsewhereTest(ClusterTestCase):
    node_env = {"MAX_CONCURRENT_JOBS": "1", "MAX_CONNECTIONS_PER_SOURCE": "12"}

    def test_cancel_on_one_node_stops_the_transfers_on_another(self):
        self.start_nodes()
        # 6 items that take 20 s each: still in flight when the cancel comes
        urls, _ = self.urls("cancel", 6, 20000, drip=1000)
        job_id = self.nodes["node-a"].post_job({"urls": urls})["id"]
        runner = self.wait_runner(job_id)
        b = self.nodes[runner]
        b.wait_for(lambda: metric(b, "hauld_transfers_in_flight") >= 4, 10, "transfers in flight on " + runner)
        other = next(n for n in NODES if n != runner)

        t0 = time.monotonic()
        status, _, data = self.nodes[other].post("/v1/jobs/%s/cancel" % job_id)
        took = time.monotonic() - t0
        self.assertEqual(status, 200, data)
        self.assertEqual(data["state"], "cancelled", data)
        self.assertLess(took, 2.0, "the cancel took %.1f s" % took)

        b.wait_for(lambda: "job %s: its lease went to another node" % job_id in b.log_text(), 3,
                   "%s told of the cancel" % runner)
        b.wait_for(lambda: metric(b, "hauld_transfers_in_flight") == 0, 3, "%s's transfers stopped" % runner)
        stopped_at = time.monotonic() - t0
        sys.stderr.write("\n  %s stopped its transfers %.1f s after the cancel\n" % (runner, stopped_at))
        time.sleep(LEASE_S)  # the stopped node must not write over the cancel
        for n, d in self.nodes.items():
            job = d.get_job(job_id)
            self.assertEqual(job["state"], "cancelled", (n, job))
            self.assertEqual(job["progress"]["succeeded"], 0, (n, job))
        self.assertFalse(self.files_of(job_id, hidden=True), "part files left")
        self.assertFalse(self.files_of(job_id), "files of a cancelled job")


class CircuitTest(ClusterTestCase):
    node_env = {"MAX_CONCURRENT_JOBS": "1", "CIRCUIT_BREAKER_THRESHOLD": "3", "CIRCUIT_BREAKER_TIMEOUT": "4",
                "MAX_RETRIES_PER_SOURCE": "0", "MAX_RETRIES_PER_ITEM": "0"}

    def circuit(self, d, host):
        status, _, data = d.get("/v1/circuits")
        self.assertEqual(status, 200, data)
        rows = data["circuits"] if isinstance(data, dict) else data
        return next((c for c in rows if c["source"] == host), None)

    def test_circuit_shared_and_one_probe_cluster_wide(self):
        self.start_nodes()
        host = "127.0.0.1:%d" % self.origin.port
        bad = [self.file_url("down-%d.png" % i, status=503) for i in range(3)]
        trip = self.nodes["node-a"].post_job({"urls": bad})["id"]
        self.nodes["node-a"].wait_job(trip, timeout=20)
        opener = self.runners(trip)[0]
        c = self.circuit(self.nodes[opener], host)
        self.assertIsNotNone(c, "no circuit for %s on %s" % (host, opener))
        self.assertEqual(c["state"], "open", c)
        t_open = time.monotonic()
        tripped_requests = self.origin.count()

        for n, d in self.nodes.items():
            d.wait_for(lambda: (self.circuit(d, host) or {}).get("state") == "open", 2.5,
                       "the circuit of %s open on %s" % (host, n))
        sys.stderr.write("\n  open on every node %.1f s after %s showed it\n"
                         % (time.monotonic() - t_open, opener))
        # the others took it in without writing it back as their own change
        # (which every node would read as news in turn, over and over)
        query = "SELECT state, updated_at FROM circuits WHERE source = '%s'" % host
        row = self.sql(query)
        time.sleep(1.5)
        self.assertEqual(self.sql(query), row, "the circuit was written again while it did not change")

        # one job per node, each item slow (1.5 s) so the probe is alone for a while
        jobs, specs = [], {}
        for k, n in enumerate(NODES):
            urls, sp = self.urls("probe%d" % k, 3, 1500, delay=1.5)
            specs.update(sp)
            jobs.append(self.nodes[n].post_job({"urls": urls})["id"])
        holders = set()
        for job_id in jobs:
            holders.add(self.wait_runner(job_id))
        self.assertEqual(holders, set(NODES), "each node should hold one job of the host")
        self.assertEqual(self.origin.count(), tripped_requests, "a request went out while the circuit was open")

        ended = self.wait_all(jobs)
        for job_id, job in ended.items():
            self.assertEqual(job["state"], "succeeded", job)
        after = [r for r in self.origin.requests() if r["path"].startswith("/file/probe")]
        self.assertEqual(len(after), 9, [r["path"] for r in after])
        first = min(r["time"] for r in after)
        alone = [r["path"] for r in after if r["time"] < first + 1.2]
        self.assertEqual(len(alone), 1, "the half-open probe went out more than once: %s" % alone)
        # the probe came when the open time (4 s) ended, not long after
        self.assertLess(first - t_open, 4 + 2.5, "the probe came %.1f s after the circuit opened"
                        % (first - t_open))


class NodesTest(ClusterTestCase):
    node_env = {"MAX_CONCURRENT_JOBS": "2", "MAX_CONNECTIONS_PER_SOURCE": "12"}

    def nodes_seen(self, d):
        status, _, data = d.get("/v1/health")
        self.assertEqual(status, 200, data)
        return data

    def test_a_new_node_is_listed_within_a_second_or_two(self):
        # a lease of 30 s: heartbeats 10 s apart, yet every node lists a
        # node that just started within a second or two
        self.start_nodes(NODES[:2], LEASE_TIMEOUT="30")
        time.sleep(0.5)
        self.start_nodes(NODES[2:], LEASE_TIMEOUT="30")
        started = time.monotonic()
        for n, d in self.nodes.items():
            d.wait_for(lambda: [x["id"] for x in self.nodes_seen(d)["nodes"]] == list(NODES), 2.5,
                       "%s lists %s, which just started" % (n, NODES[2]))
        sys.stderr.write("\n  every node lists %s %.1f s after it started\n" % (NODES[2], time.monotonic() - started))

    def test_health_lists_the_nodes_and_a_stopped_node_leaves(self):
        self.start_nodes()
        for n, d in self.nodes.items():
            def all_three():
                h = self.nodes_seen(d)
                return h["node"] == n and [x["id"] for x in h["nodes"]] == list(NODES) and \
                    all(x["api_url"] == self.nodes[x["id"]].base_url for x in h["nodes"])
            d.wait_for(all_three, 2 * LEASE_S, "%s lists the three nodes with their API URLs" % n)
            now = time.time()
            for x in self.nodes_seen(d)["nodes"]:
                self.assertLess(abs(now - wall_s(x["heartbeat_at"])), LEASE_S, x)

        # one job per node, still running when node-c stops
        jobs, specs = {}, {}
        for n in NODES:
            urls, sp = self.urls("leave-" + n, 8, 4000, drip=1000)
            specs.update(sp)
            jobs[n] = self.nodes[n].post_job({"urls": urls})["id"]
        leaver = self.wait_runner(jobs["node-c"])
        c = self.nodes[leaver]
        # well into the run: the news of the claims is long past
        c.wait_for(lambda: c.get_job(jobs["node-c"])["progress"]["succeeded"] >= 1, 15,
                   "a first item of the job on " + leaver)
        self.assertGreater(metric(c, "hauld_transfers_in_flight"), 0, "no transfer on " + leaver)
        stopped_at = time.monotonic()
        c.stop(expect_code=0)
        self.assertIn("job %s: parked" % jobs["node-c"], c.log_text())
        rest = [n for n in NODES if n != leaver]
        for n in rest:
            d = self.nodes[n]
            d.wait_for(lambda: leaver not in [x["id"] for x in self.nodes_seen(d)["nodes"]], LEASE_S,
                       "%s no longer listed on %s" % (leaver, n))
        mark = "job %s: === JOB START ===" % jobs["node-c"]
        taker = wait_for(lambda: [n for n in rest if self.node_log_has(n, mark)],
                                             RESCUE_SLACK_S, "the parked job taken by another node")[0]
        sys.stderr.write("\n  the parked job went to %s %.1f s after the stop\n"
                         % (taker, time.monotonic() - stopped_at))
        ended = self.wait_all(jobs.values(), via=taker)
        for job_id, job in ended.items():
            self.assertEqual(job["state"], "succeeded", job)
            self.assert_whole_and_once(job_id, specs, 8, via=taker)


def main():
    global PG
    if not hauldtest.hauld_binary():
        sys.stderr.write("SKIP: no hauld binary (set HAULD to its path)\n")
        sys.exit(hauldtest.EX_SKIP)
    PG = PgServer()
    if PG.returncode == hauldtest.EX_SKIP:
        sys.stderr.write("SKIP: %s\n" % PG.reason)
        sys.exit(hauldtest.EX_SKIP)
    if PG.returncode != 0:
        sys.stderr.write("the PostgreSQL server of the tests did not start:\n%s\n" % PG.reason)
        sys.exit(1)
    stop_once = threading.Lock()

    def stop_pg(*_):
        if stop_once.acquire(blocking=False):
            PG.stop()

    signal.signal(signal.SIGTERM, lambda *a: (stop_pg(), sys.exit(143)))
    try:
        hauldtest.main()
    finally:
        stop_pg()


if __name__ == "__main__":
    main()
