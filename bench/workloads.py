"""The workloads of bench/run: what each one runs, in which order, and
what it checks; each returns its figures for results.py. Every timed run
is preceded by `sync`, every workload writes on its own fresh file system
(harness.Scratch), and the tools alternate with the first one rotating."""
import contextlib
import http.client
import json
import os
import sqlite3
import subprocess
import threading
import time

from harness import (TERMINAL, TINY, Blackhole, Hauld, Postgres, Scratch, count_files, cpu_s, drop, free_port,
                     log, median, pct, perf_record, png_bytes, rmtree, rss_kib, run_child, run_hauld_job,
                     timed_sync, tiny_job, wait_port, write_png, wrk)

WORKLOADS = ("large", "small", "submit", "list", "latency", "api", "jobs", "cluster")
# what each workload runs besides hauld (nginx serves the files of all)
WORKLOAD_TOOLS = {"small": ("curl", "aria2c"), "large": ("curl", "aria2c"), "submit": ("wrk",),
                  "list": ("wrk",), "latency": ("wrk",), "api": ("aria2c", "wrk"), "jobs": (), "cluster": ()}
# sparse image size per workload (GiB): room for every file a workload keeps
# at once (small keeps 3 tools x 5 rounds x 5,000 files), and ext4's default
# of one inode per 16 KiB gives 65,536 inodes per GiB
FS_GIB = {"large": 4, "small": 4, "submit": 4, "list": 2, "latency": 4, "api": 1, "jobs": 2, "cluster": 4}
# the 1-client submission latency before the read side and group commit
# (RESULTS.md of a28b94f: 2,000 sequential POSTs on one keep-alive connection)
SUBMIT_BEFORE_P50_MS = 2.45
SUBMIT_BEFORE_P99_MS = 5.06
SUBMIT_SETTINGS = {"MAX_CONCURRENT_JOBS": "32"}  # the default, said out loud
LATENCY_TRANSFERS = 16
LATENCY_PACE_S = 0.005  # the paced client sends one GET every 5 ms
LATENCY_CONNS = 4  # wrk's connections in the latency workload
WARM_S = 2  # untimed wrk run before each measured one
DRAIN_S = 5  # after a submit run: jobs done per second over this long
# where --perf can record (cluster runs several daemons at once)
PERF_WORKLOADS = tuple(w for w in WORKLOADS if w != "cluster")


# ---------------------------------------------------------------- transfers

TRANSFER_TOOLS = ("curl", "aria2", "hauld")


def transfer_files(www, name, count, size):
    """count PNG files of size bytes under www/name, in the page cache."""
    d = os.path.join(www, name)
    log(f"{name}: generating {count} x {size} bytes")
    rnd = os.urandom(size)
    names = []
    for i in range(count):
        fn = f"f{i:05d}.png"
        names.append(fn)
        # rotate the noise so every file differs beyond its header
        k = (i * 7919) % size
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, fn), "wb") as f:
            f.write(png_bytes(i, size, rnd[k:] + rnd[:k]))
    # warm the page cache once, untimed
    subprocess.run(["cat"] + [os.path.join(d, fn) for fn in names], stdout=subprocess.DEVNULL)
    return names


def run_tool(a, tool, name, r, out, urls, names, urls_txt):
    """One timed run of tool into out; verified. Returns (seconds, CPU s)."""
    count, expect = len(urls), len(urls) * a.cfg[name + "_size"]
    if tool == "curl":
        cfg = os.path.join(os.path.dirname(urls_txt), f"{name}-curl.cfg")
        with open(cfg, "w") as f:
            for u, fn in zip(urls, names):
                f.write(f'url = "{u}"\noutput = "{out}/{fn}"\n')
        t, rc, cpu, err = run_child([a.tools["curl"], "--parallel", "--parallel-max", "16", "-s", "-K", cfg])
        root = out
    elif tool == "aria2":
        t, rc, cpu, err = run_child([a.tools["aria2c"], "-j", "16", "-x", "1", "-s", "1", "-i", urls_txt,
                                     "-d", out, "--allow-overwrite=true", "--auto-file-renaming=false",
                                     "--file-allocation=none", "--disk-cache=0", "--enable-mmap=false",
                                     "--no-conf=true", "-q", "--console-log-level=error",
                                     "--summary-interval=0", "--auto-save-interval=0",
                                     "--remote-time=false", "--conditional-get=false",
                                     "--download-result=hide", "--max-tries=1"])
        root = out
    else:
        h = Hauld(a.hauld, out, {"DOWNLOAD_DIR": os.path.join(out, "downloads")})
        try:
            os.sync()  # what the daemon's start-up wrote
            with perf_record(a, name, name, h.pid):
                t, job, cpu = run_hauld_job(h, urls)
        finally:
            h.stop()
        pr = job.get("progress", {})
        if job["state"] != "succeeded" or pr.get("succeeded") != count:
            raise RuntimeError(f"{name} hauld round {r}: state={job['state']} succeeded={pr.get('succeeded')} "
                               f"error={job.get('error')} (log {out}.log)")
        rc, err, root = 0, "", os.path.join(out, "downloads")
    n, b = count_files(root)
    if rc != 0 or n != count or b != expect:
        raise RuntimeError(f"{name} {tool} round {r}: rc={rc} files={n}/{count} bytes={b}/{expect} {err[:300]}")
    return t, cpu


def transfer_workload(a, nginx, tmp, name, rounds):
    """curl, aria2 and hauld alternating over rounds, the first tool
    rotating; each run on the workload's fresh file system, `sync` before
    it, `sync -f` of its folder timed right after it."""
    count, size = a.cfg[name + "_n"], a.cfg[name + "_size"]
    names = transfer_files(os.path.join(tmp, "www"), name, count, size)
    urls = [nginx.url(f"{name}/{fn}") for fn in names]
    urls_txt = os.path.join(tmp, f"{name}-urls.txt")
    with open(urls_txt, "w") as f:
        f.write("".join(u + "\n" for u in urls))
    res = {t: {"s": [], "sync": [], "cpu": []} for t in TRANSFER_TOOLS}
    with Scratch(a, tmp, name, FS_GIB[name]) as fs:
        res["fs"] = fs.describe()
        for r in range(rounds):
            for tool in TRANSFER_TOOLS[r % 3:] + TRANSFER_TOOLS[:r % 3]:
                out = os.path.join(fs.dir, f"{name}-{tool}-{r}")
                os.makedirs(out)
                os.sync()
                t, cpu = run_tool(a, tool, name, r, out, urls, names, urls_txt)
                ts = timed_sync(out)
                res[tool]["s"].append(t)
                res[tool]["sync"].append(ts)
                res[tool]["cpu"].append(cpu)
                log(f"{name} round {r + 1}/{rounds} {tool:5s} {t:8.3f} s, then sync -f {ts:.3f} s"
                    f"  (cpu {cpu:.2f} s)")
                # Many small files stay until the workload ends (with its
                # file system): deleting thousands of files makes ext4's
                # inode allocator skip the recently deleted inodes for a
                # while, and whichever tool runs next would pay for it.
                if count <= 1000:
                    drop(out, out + ".log")
    rmtree(os.path.join(tmp, "www", name))
    return res


# ---------------------------------------------------------------- submit

# POST /v1/jobs: every answer must be 201; wrk's threads count the others
# and done() prints how many there were and the first one.
SUBMIT_LUA = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
local threads = {{}}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  bad = 0
  first = ""
end
function response(status, headers, body)
  if status ~= 201 then
    bad = bad + 1
    if first == "" then first = status .. " " .. string.sub(body or "", 1, 200) end
  end
end
function done(summary, latency, requests)
  local n, what = 0, ""
  for _, t in ipairs(threads) do
    n = n + t:get("bad")
    if what == "" then what = t:get("first") end
  end
  io.write(string.format("not-201: %d %s\\n", n, what))
end
"""


def submit_run(a, nginx, fs, conns, r, lua):
    """A fresh daemon and STATE_DIR: WARM_S of wrk, sync, then the measured
    run; every job POSTed must be in the table."""
    sd = os.path.join(fs.dir, f"submit-c{conns}-{r}")
    h = Hauld(a.hauld, sd, SUBMIT_SETTINGS)
    try:
        url = h.url("/v1/jobs")
        warm = wrk(a.tools["wrk"], url, a.cfg["warm_s"], conns, 2, lua)
        os.sync()
        with perf_record(a, "submit", f"submit-c{conns}", h.pid):
            w = wrk(a.tools["wrk"], url, a.cfg["seconds"], conns, 2, lua)
        w["states"] = {k: v for k, v in h.get_json("/v1/stats")["jobs"].items() if v}
        w["jobs"] = sum(w["states"].values())
        # how fast the queued jobs run once the submissions stop
        time.sleep(DRAIN_S)
        done = sum(v for k, v in h.get_json("/v1/stats")["jobs"].items() if k not in ("queued", "running"))
        w["drain_per_s"] = (done - sum(v for k, v in w["states"].items() if k not in ("queued", "running"))) / DRAIN_S
        if w["jobs"] < warm["requests"] + w["requests"]:
            raise RuntimeError(f"submit: {warm['requests'] + w['requests']} answered 201 but the table holds "
                               f"{w['jobs']} jobs")
        w["db_mib"] = sum(os.path.getsize(os.path.join(sd, f)) for f in os.listdir(sd)
                          if f.startswith("jobs.db")) / 1048576
    finally:
        h.stop()
        drop(sd, sd + ".log")
    log(f"submit round {r + 1} c{conns:<2d} {w['rps']:9.0f} jobs/s  p50 {w['p50_ms']:.2f} ms  "
        f"p99 {w['p99_ms']:.2f} ms  ({w['jobs']} jobs in the table, {w['db_mib']:.1f} MiB; then "
        f"{w['drain_per_s']:.0f} jobs/s done)")
    return w


def submit_workload(a, nginx, tmp, rounds):
    """1 connection and 16, alternating which goes first, each on a fresh
    daemon: jobs/s, latency and the 16/1 ratio per round."""
    lua = os.path.join(tmp, "submit.lua")
    body = json.dumps({"urls": [nginx.url(TINY)], "max": 1})
    with open(lua, "w") as f:
        f.write(SUBMIT_LUA.format(body=json.dumps(body)))
    res = {"c1": [], "c16": []}
    with Scratch(a, tmp, "submit", FS_GIB["submit"]) as fs:
        res["fs"] = fs.describe()
        for r in range(rounds):
            for conns in ((1, 16) if r % 2 == 0 else (16, 1)):
                res[f"c{conns}"].append(submit_run(a, nginx, fs, conns, r, lua))
    return res


# ---------------------------------------------------------------- list

def fill_jobs(db, template_id, n):
    """n copies of the job template_id (and its items) in the job table,
    each with its own id and created n ms apart: the columns are read from
    the table itself, so the rows follow whatever schema the daemon made."""
    con = sqlite3.connect(db, isolation_level=None)
    try:
        jcols = [c[1] for c in con.execute("PRAGMA table_info(jobs)")]
        icols = [c[1] for c in con.execute("PRAGMA table_info(items)")]
        job = dict(zip(jcols, con.execute(f"SELECT {', '.join(jcols)} FROM jobs WHERE id = ?",
                                          (template_id,)).fetchone()))
        items = [dict(zip(icols, row)) for row in
                 con.execute(f"SELECT {', '.join(icols)} FROM items WHERE job_seq = ?", (job["seq"],))]
        jins = [c for c in jcols if c != "seq"]
        jsql = f"INSERT INTO jobs ({', '.join(jins)}) VALUES ({', '.join('?' * len(jins))})"
        isql = f"INSERT INTO items ({', '.join(icols)}) VALUES ({', '.join('?' * len(icols))})"
        con.execute("BEGIN")
        for i in range(1, n + 1):
            j = dict(job, id=template_id[:10] + f"{i:016d}", idempotency_key=None)
            for k in ("created_at", "started_at", "finished_at"):
                if j.get(k) is not None:
                    j[k] += i
            seq = con.execute(jsql, [j[c] for c in jins]).lastrowid
            con.executemany(isql, [[seq if c == "job_seq" else it[c] for c in icols] for it in items])
        con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def list_workload(a, nginx, tmp, njobs, rounds):
    """wrk -t2 -c16 on GET /v1/jobs?limit=20 and on GET /v1/jobs/{id},
    alternating, over njobs finished jobs."""
    res = {"list": [], "byid": []}
    with Scratch(a, tmp, "list", FS_GIB["list"]) as fs:
        res["fs"] = fs.describe()
        sd = os.path.join(fs.dir, "list-hauld")
        h = Hauld(a.hauld, sd)
        try:
            first = tiny_job(h, nginx)
        finally:
            h.stop()
        t0 = time.monotonic()
        fill_jobs(os.path.join(sd, "jobs.db"), first, njobs - 1)
        res["fill_s"] = time.monotonic() - t0
        log(f"list: {njobs:,} jobs in the table in {res['fill_s']:.1f} s")
        h = Hauld(a.hauld, sd)
        try:
            res["jobs"] = h.job_count()
            page = h.get_json("/v1/jobs?limit=20")
            if res["jobs"] != njobs or len(page["jobs"]) != 20:
                raise RuntimeError(f"list: {res['jobs']} jobs in the table, a page of {len(page['jobs'])}")
            byid = page["jobs"][10]["id"]
            urls = {"list": h.url("/v1/jobs?limit=20"), "byid": h.url(f"/v1/jobs/{byid}")}
            for k, u in urls.items():
                wrk(a.tools["wrk"], u, a.cfg["warm_s"], 16)
            for r in range(rounds):
                for k in (("list", "byid") if r % 2 == 0 else ("byid", "list")):
                    os.sync()
                    with perf_record(a, "list", f"list-{k}", h.pid):
                        w = wrk(a.tools["wrk"], urls[k], a.cfg["seconds"], 16)
                    res[k].append(w)
                    log(f"list round {r + 1}/{rounds} {k:5s} {w['rps']:9.0f} req/s  p50 {w['p50_ms']:.2f} ms  "
                        f"p99 {w['p99_ms']:.2f} ms")
        finally:
            h.stop()
    return res


# ---------------------------------------------------------------- latency under load

def paced_gets(h, path, seconds):
    """One keep-alive connection, one GET every LATENCY_PACE_S, each timed
    from send to the last byte: {n, p50_ms, p99_ms, max_ms}."""
    c = h.conn()
    lat = []
    now = time.perf_counter()
    end, nxt = now + seconds, now
    while now < end:
        t0 = time.perf_counter()
        c.request("GET", path)
        rsp = c.getresponse()
        rsp.read()
        dt = time.perf_counter() - t0
        if rsp.status != 200:
            raise RuntimeError(f"GET {path}: {rsp.status}")
        lat.append(dt * 1000)
        nxt += LATENCY_PACE_S
        now = time.perf_counter()
        if nxt > now:
            time.sleep(nxt - now)
            now = time.perf_counter()
    c.close()
    return {"n": len(lat), "p50_ms": median(lat), "p99_ms": pct(lat, 99), "max_ms": max(lat)}


def running_items(h, job_id):
    return h.get_json(f"/v1/jobs/{job_id}")["progress"]["running"]


def wait_running(h, job_id, n, timeout=15):
    end = time.monotonic() + timeout
    while running_items(h, job_id) != n:
        if time.monotonic() > end:
            raise RuntimeError(f"latency: {running_items(h, job_id)} transfers running, not {n}")
        time.sleep(0.05)


def latency_round(a, nginx, fs, r, urls):
    sd = os.path.join(fs.dir, f"latency-{r}")
    h = Hauld(a.hauld, sd, {"DOWNLOAD_DIR": os.path.join(sd, "downloads")})
    res = {}
    try:
        idle = tiny_job(h, nginx)
        os.sync()
        res["idle"] = paced_gets(h, f"/v1/jobs/{idle}", a.cfg["seconds"])
        job = h.post_job({"urls": urls, "label": "bench-latency"})
        wait_running(h, job["id"], LATENCY_TRANSFERS)
        time.sleep(1)  # past the start of the transfers
        with perf_record(a, "latency", "latency", h.pid):
            res["load"] = paced_gets(h, f"/v1/jobs/{job['id']}", a.cfg["seconds"])
        res["wrk"] = wrk(a.tools["wrk"], h.url(f"/v1/jobs/{job['id']}"), a.cfg["seconds"], LATENCY_CONNS)
        left = running_items(h, job["id"])
        if left != LATENCY_TRANSFERS:
            raise RuntimeError(f"latency: only {left} transfers were still running at the end: "
                               "the files are too small for the measurement")
        h.request("POST", f"/v1/jobs/{job['id']}/cancel", b"{}")
    finally:
        h.stop()
        drop(sd, sd + ".log")
    log(f"latency round {r + 1}: idle p50 {res['idle']['p50_ms']:.2f} p99 {res['idle']['p99_ms']:.2f} ms; "
        f"{LATENCY_TRANSFERS} transfers: p50 {res['load']['p50_ms']:.2f} p99 {res['load']['p99_ms']:.2f} "
        f"max {res['load']['max_ms']:.2f} ms; wrk -c{LATENCY_CONNS} {res['wrk']['rps']:.0f} req/s "
        f"p99 {res['wrk']['p99_ms']:.2f} ms")
    return res


def latency_workload(a, nginx, tmp, rounds):
    """GET /v1/jobs/{id} while LATENCY_TRANSFERS rate-limited transfers
    run: the files are sized so that they last through both measurements."""
    rate, secs = a.cfg["slow_rate"], a.cfg["seconds"]
    size = rate * (3 + 2 * secs + 6)  # ramp, paced client, wrk, margin
    names = [f"slow/s{i:02d}.png" for i in range(LATENCY_TRANSFERS)]
    for i, n in enumerate(names):
        write_png(os.path.join(tmp, "www", n), i, size, sparse=True)
    urls = [nginx.url(n) for n in names]
    res = {"rounds": [], "size": size}
    with Scratch(a, tmp, "latency", FS_GIB["latency"]) as fs:
        res["fs"] = fs.describe()
        for r in range(rounds):
            res["rounds"].append(latency_round(a, nginx, fs, r, urls))
    rmtree(os.path.join(tmp, "www", "slow"))
    return res


# ---------------------------------------------------------------- api (vs aria2)

def api_workload(a, nginx, tmp, rounds):
    res = {"hauld": [], "aria2": []}
    with Scratch(a, tmp, "api", FS_GIB["api"]) as fs:
        res["fs"] = fs.describe()
        h = Hauld(a.hauld, os.path.join(fs.dir, "api-hauld"))
        rpc_port = free_port()
        aria = subprocess.Popen([a.tools["aria2c"], "--enable-rpc", f"--rpc-listen-port={rpc_port}",
                                 "--rpc-listen-all=false", "--no-conf=true", "-q", "-d",
                                 os.path.join(fs.dir, "api-aria2")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            job_id = tiny_job(h, nginx)
            wait_port(rpc_port)
            body = json.dumps({"jsonrpc": "2.0", "id": "bench", "method": "aria2.getGlobalStat"})
            c = http.client.HTTPConnection("127.0.0.1", rpc_port, timeout=10)
            c.request("POST", "/jsonrpc", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            probe = json.loads(r.read())
            c.close()
            if r.status != 200 or "numActive" not in probe.get("result", {}):
                raise RuntimeError(f"aria2 rpc probe: {r.status} {probe}")
            lua = os.path.join(tmp, "aria2-rpc.lua")
            with open(lua, "w") as f:
                f.write('wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n'
                        % json.dumps(body))
            hurl = h.url(f"/v1/jobs/{job_id}")
            aurl = f"http://127.0.0.1:{rpc_port}/jsonrpc"
            for r in range(rounds):
                for tool in (("hauld", "aria2") if r % 2 == 0 else ("aria2", "hauld")):
                    os.sync()
                    with perf_record(a, "api", "api", h.pid) if tool == "hauld" else contextlib.nullcontext():
                        w = wrk(a.tools["wrk"], hurl if tool == "hauld" else aurl, a.cfg["api_s"], 32, 2,
                                None if tool == "hauld" else lua)
                    res[tool].append(w)
                    log(f"api round {r + 1}/{rounds} {tool:5s} {w['rps']:10.0f} req/s  p50 {w['p50_ms']:.2f} ms")
        finally:
            h.stop()
            aria.terminate()
            aria.wait()
    return res


# ---------------------------------------------------------------- jobs (RSS, list)

def post_many(h, doc, n, threads=8):
    body = json.dumps(doc).encode()
    errors = []
    per = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]

    def worker(k):
        c = h.conn()
        try:
            for _ in range(k):
                st, data = h.request("POST", "/v1/jobs", body, c)
                if st != 201:
                    errors.append((st, data[:200]))
                    return
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
        finally:
            c.close()

    ts = [threading.Thread(target=worker, args=(k,)) for k in per]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise RuntimeError(f"post_many: {errors[:3]}")
    return time.monotonic() - t0


def list_latency(h, n):
    c = h.conn()
    lat = []
    for i in range(n + 10):
        t0 = time.monotonic()
        st, data = h.request("GET", "/v1/jobs?limit=50", conn=c)
        dt = time.monotonic() - t0
        if st != 200 or len(json.loads(data)["jobs"]) != 50:
            raise RuntimeError(f"list: {st}")
        if i >= 10:
            lat.append(dt)
    c.close()
    return median(lat) * 1000


def jobs_workload(a, tmp, small_n, big_n, list_n):
    bh = Blackhole()
    res = {}
    with Scratch(a, tmp, "jobs", FS_GIB["jobs"]) as fs:
        res["fs"] = fs.describe()
        sd = os.path.join(fs.dir, "jobs-hauld")
        h = Hauld(a.hauld, sd, {"MAX_CONCURRENT_JOBS": "1", "MAX_CONCURRENT_SOURCES": "1",
                                "REQUEST_TIMEOUT": "3600", "STALL_TIMEOUT": "3600",
                                "SOURCE_TIMEOUT": "86400", "GLOBAL_JOB_TIMEOUT": "86400",
                                "MAX_RETRIES_PER_ITEM": "0", "MAX_RETRIES_PER_SOURCE": "0"})
        try:
            doc = {"urls": [f"http://127.0.0.1:{bh.port}/never.png"], "max": 1}
            first = h.post_job(doc)
            end = time.monotonic() + 5
            while h.get_json(f"/v1/jobs/{first['id']}")["state"] != "running" and time.monotonic() < end:
                time.sleep(0.05)
            time.sleep(0.5)
            res["rss0_kib"] = rss_kib(h.pid)
            res["load_small_s"] = post_many(h, doc, small_n - 1)
            res["rss_small_kib"] = rss_kib(h.pid)
            res["list_small_ms"] = list_latency(h, list_n)
            log(f"jobs: {small_n} jobs, RSS {res['rss_small_kib'] / 1024:.1f} MiB, "
                f"list p50 {res['list_small_ms']:.2f} ms")
            with perf_record(a, "jobs", "jobs", h.pid):
                t = post_many(h, doc, big_n - small_n)
            res["load_big_s"] = t
            res["load_rate"] = (big_n - small_n) / t
            time.sleep(1.0)
            res["rss_big_kib"] = rss_kib(h.pid)
            res["list_big_ms"] = list_latency(h, list_n)
            jobs = h.get_json("/v1/stats").get("jobs", {})
            res["queued"] = jobs.get("queued")
            res["running"] = jobs.get("running")
            res["first_state"] = h.get_json(f"/v1/jobs/{first['id']}")["state"]
            res["db_bytes"] = sum(os.path.getsize(os.path.join(sd, f)) for f in os.listdir(sd)
                                  if f.startswith("jobs.db"))
            log(f"jobs: {big_n} jobs in {t:.1f} s ({res['load_rate']:.0f}/s, 8 threads), RSS "
                f"{res['rss_big_kib'] / 1024:.1f} MiB, list p50 {res['list_big_ms']:.2f} ms, "
                f"queued={res['queued']} running={res['running']} first={res['first_state']}")
            if res["queued"] is not None and res["queued"] + (res["running"] or 0) < big_n * 0.99:
                raise RuntimeError(f"jobs: only {res['queued']} queued of {big_n}: jobs did not stay queued")
        finally:
            h.stop()
            bh.close()
    return res


# ---------------------------------------------------------------- cluster

CLUSTER_JOBS = 30  # the files are split into this many jobs: a job runs on one node


def cluster_run(a, pg, out, urls, nodes, size):
    """Start `nodes` daemons (PostgreSQL when pg, else one on SQLite), POST
    the URLs as CLUSTER_JOBS jobs to the nodes in turn, poll GET /v1/stats
    on the first node every 20 ms until every job ended. Returns (seconds,
    daemon CPU seconds, {node: items}, median ms from a job's creation to
    its start)."""
    schema = os.path.basename(out).replace("-", "_")
    per_node_jobs = -(-CLUSTER_JOBS // nodes)
    hs = []
    try:
        if pg:
            pg.sql(f"CREATE SCHEMA {schema}")
        for n in range(nodes):
            settings = {"DOWNLOAD_DIR": os.path.join(out, f"node{n}", "downloads"),
                        "MAX_CONCURRENT_JOBS": str(per_node_jobs)}
            if pg:
                settings.update({"STORE": pg.store(schema), "NODE_ID": f"node{n}"})
            hs.append(Hauld(a.hauld, os.path.join(out, f"node{n}"), settings))
        conns = [h.conn() for h in hs]
        step = -(-len(urls) // CLUSTER_JOBS)
        cpu0 = [cpu_s(h.pid) for h in hs]
        t0 = time.monotonic()
        for k in range(CLUSTER_JOBS):
            hs[k % nodes].post_job({"urls": urls[k * step:(k + 1) * step], "label": "bench"}, conns[k % nodes])
        while True:
            st, data = hs[0].request("GET", "/v1/stats", conn=conns[0])
            if st != 200:
                raise RuntimeError(f"GET /v1/stats: {st} {data[:200]!r}")
            jobs = json.loads(data)["jobs"]
            if sum(jobs.get(x, 0) for x in TERMINAL) >= CLUSTER_JOBS:
                break
            time.sleep(0.02)
        t = time.monotonic() - t0
        cpu = sum(cpu_s(h.pid) - c for h, c in zip(hs, cpu0))
        for c in conns:
            c.close()
        if jobs.get("succeeded") != CLUSTER_JOBS:
            raise RuntimeError(f"cluster {out}: jobs {jobs} (logs {out}/node*.log)")
        spread, wait_ms = {}, float("nan")
        if pg:
            spread = {n: int(c) for n, c in pg.sql(f"SELECT node, count(*) FROM {schema}.items GROUP BY node")}
            waits = [float(w) for (w,) in pg.sql(f"SELECT started_at - created_at FROM {schema}.jobs")]
            wait_ms = median(waits)
    finally:
        for h in hs:
            h.stop()
    n, b = 0, 0
    for k in range(nodes):
        nk, bk = count_files(os.path.join(out, f"node{k}", "downloads"))
        n, b = n + nk, b + bk
    if n != len(urls) or b != len(urls) * size:
        raise RuntimeError(f"cluster {out}: files={n}/{len(urls)} bytes={b}/{len(urls) * size}")
    return t, cpu, spread, wait_ms


def cluster_workload(a, nginx, tmp, count, size, rounds, nodes=3):
    names = transfer_files(os.path.join(tmp, "www"), "cluster", count, size)
    urls = [nginx.url(f"cluster/{fn}") for fn in names]
    pg = Postgres(tmp)
    res = {"sqlite1": [], "pg1": [], f"pg{nodes}": [], "cpu": {}, "spread": [], "wait_ms": [], "nodes": nodes}
    order = ["sqlite1", "pg1", f"pg{nodes}"]
    kept = []
    fs = Scratch(a, tmp, "cluster", FS_GIB["cluster"])
    res["fs"] = fs.describe()
    try:
        for r in range(rounds):
            for run in order[r % 3:] + order[:r % 3]:
                out = os.path.join(fs.dir, f"cluster-{run}-{r}")
                os.makedirs(out)
                os.sync()
                t, cpu, spread, wait_ms = cluster_run(a, None if run == "sqlite1" else pg, out, urls,
                                                      nodes if run == f"pg{nodes}" else 1, size)
                res[run].append(t)
                res["cpu"].setdefault(run, []).append(cpu)
                if run == f"pg{nodes}":
                    res["spread"].append(spread)
                if run == "pg1":
                    res["wait_ms"].append(wait_ms)
                log(f"cluster round {r + 1}/{rounds} {run:7s} {t:8.3f} s  (cpu {cpu:.2f} s)"
                    + (f"  items per node {spread}" if run == f"pg{nodes}" else ""))
                os.sync()
                kept.append(out)  # as in transfer_workload: many small files stay until the end
    finally:
        pg.stop()
        drop(*kept)
        fs.__exit__(None, None, None)
        rmtree(os.path.join(tmp, "www", "cluster"))
    return res


def run_workloads(a, nginx, tmp):
    R, cfg, only = {}, a.cfg, a.only
    if "large" in only:
        R["large"] = transfer_workload(a, nginx, tmp, "large", a.rounds)
    if "small" in only:
        R["small"] = transfer_workload(a, nginx, tmp, "small", a.rounds)
    if "submit" in only:
        R["submit"] = submit_workload(a, nginx, tmp, a.wrk_rounds)
    if "list" in only:
        R["list"] = list_workload(a, nginx, tmp, cfg["list_jobs"], a.wrk_rounds)
    if "latency" in only:
        R["latency"] = latency_workload(a, nginx, tmp, a.wrk_rounds)
    if "api" in only:
        R["api"] = api_workload(a, nginx, tmp, a.wrk_rounds)
    if "jobs" in only:
        R["jobs"] = jobs_workload(a, tmp, cfg["small_jobs"], cfg["big_jobs"], cfg["list_n"])
    if "cluster" in only:
        R["cluster"] = cluster_workload(a, nginx, tmp, cfg["cluster_n"], 4096, a.rounds)
    return R
