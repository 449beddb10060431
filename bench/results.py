"""The RESULTS.md that bench/run writes: the figures against the targets
(median and min-max over rounds, the ratio, the target, met or not), the
details per round, the machine and the method. The section "Where a target
is missed, and why" is written by hand and kept as it is."""
import hashlib
import os
import platform
import re
import sqlite3
import subprocess
import sys

from harness import HERE, TINY_SIZE, TOP, first_line, median
from workloads import (CLUSTER_JOBS, DRAIN_S, LATENCY_CONNS, LATENCY_PACE_S, LATENCY_TRANSFERS, SUBMIT_BEFORE_P50_MS,
                       SUBMIT_BEFORE_P99_MS, TRANSFER_TOOLS, WORKLOADS)


MISSED_HEAD = "## Where a target is missed, and why"
MISSED_PLACEHOLDER = f"""{MISSED_HEAD}

Written by hand after a run: for each **no** above, the measurement that
explains it (a profile from `bench/run --perf WORKLOAD`), not a guess.
bench/run keeps this section as it is when it rewrites the file.
"""


def kept_section(paths):
    """The hand-written section of the first of paths that has one, as it is."""
    for p in paths:
        try:
            with open(p) as f:
                text = f.read()
        except OSError:
            continue
        i = text.find(MISSED_HEAD)
        if i < 0:
            continue
        j = text.find("\n## ", i + len(MISSED_HEAD))
        return text[i:] if j < 0 else text[i:j + 1]
    return MISSED_PLACEHOLDER


def machine(tmp):
    info = {"date": subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip(),
            "nproc": os.cpu_count(), "kernel": platform.release()}
    with open("/proc/cpuinfo") as f:
        m = re.search(r"model name\s*:\s*(.*)", f.read())
        info["cpu"] = m.group(1).strip() if m else "?"
    with open("/proc/meminfo") as f:
        m = re.search(r"MemTotal:\s*(\d+)", f.read())
        info["mem"] = f"{int(m.group(1)) / 1024 / 1024:.1f} GiB" if m else "?"
    df = subprocess.run(["df", "-T", tmp], capture_output=True, text=True).stdout.splitlines()
    info["fs"] = f"{df[-1].split()[1]} ({df[-1].split()[0]})" if len(df) > 1 else "?"
    return info


def versions(a, tools):
    v = {"hauld": first_line([a.hauld, "--version"]),
         "curl": first_line([tools["curl"], "--version"]),
         "aria2": first_line([tools["aria2c"], "--version"]),
         "nginx": first_line([tools["nginx"], "-v"]),
         "wrk": first_line([tools["wrk"], "-v"]),
         "python": platform.python_version(),
         "sqlite (python, fills the list workload's table)": sqlite3.sqlite_version}
    if a.perf:
        v["perf"] = first_line([tools["perf"], "--version"])
    with open(a.hauld, "rb") as f:
        v["hauld_sha256"] = hashlib.sha256(f.read()).hexdigest()[:16]
    try:
        head = subprocess.run(["git", "-C", TOP, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", TOP, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        v["git"] = head + (" + uncommitted changes" if dirty else "")
    except OSError:
        v["git"] = "?"
    return v


def fmt(x, nd=3):
    return "n/a" if x is None or x != x else f"{x:.{nd}f}"


def seq(ws, key, nd):
    """key of each of ws, comma-separated."""
    return ", ".join(fmt(w[key], nd) for w in ws)


def spread(xs, nd=3):
    """median (min-max) of xs."""
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return fmt(xs[0], nd)
    return f"{fmt(median(xs), nd)} ({fmt(min(xs), nd)}-{fmt(max(xs), nd)})"


def ratio(hs, rs, nd=2):
    """median(hs) / median(rs), and the range of the per-round ratios."""
    m = median(hs) / median(rs)
    per = [h / r for h, r in zip(hs, rs)]
    return m, (fmt(m, nd) if len(per) < 2 else f"{fmt(m, nd)} (rounds {fmt(min(per), nd)}-{fmt(max(per), nd)})")


def yn(ok):
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def transfer_refs(r):
    return {"durable curl": ("curl --parallel 16 + sync -f",
                             [c + s for c, s in zip(r["curl"]["s"], r["curl"]["sync"])]),
            "curl": ("curl --parallel 16", r["curl"]["s"]),
            "aria2": ("aria2c -j 16", r["aria2"]["s"])}


def size_label(n):
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def rows_transfer(row, R, cfg):
    # (workload, reference, target ratio or None)
    plan = (("large", "durable curl", 1.1), ("large", "curl", None), ("large", "aria2", None),
            ("small", "curl", 1.0), ("small", "durable curl", None), ("small", "aria2", 0.3))
    for w, ref, target in plan:
        if w not in R:
            continue
        label = f"{cfg[w + '_n']:,} x {size_label(cfg[w + '_size'])}"
        name, rs = transfer_refs(R[w])[ref]
        hs = R[w]["hauld"]["s"]
        m, cell = ratio(hs, rs)
        row(f"{label}: hauld / {name} (s)", spread(hs), f"{name}: {spread(rs)}", cell,
            f"≤ {target}" if target else "(none)", yn(m <= target) if target else "n/a")


def rows_service(row, R, cfg):
    if "submit" in R:
        c1, c16 = R["submit"]["c1"], R["submit"]["c16"]
        r1, r16 = [w["rps"] for w in c1], [w["rps"] for w in c16]
        m, cell = ratio(r16, r1)
        row("job submissions, 16 clients (jobs/s; wrk -t2 -c16 POST /v1/jobs)", spread(r16, 0),
            f"1 client: {spread(r1, 0)}", f"16/1 {cell}", "≥ 5,000/s and 16/1 ≥ 5",
            yn(median(r16) >= 5000 and m >= 5))
        p50, p99 = [w["p50_ms"] for w in c1], [w["p99_ms"] for w in c1]
        row("submission latency, 1 client (ms; wrk -t1 -c1)", f"p50 {spread(p50, 2)}, p99 {spread(p99, 2)}",
            f"before: p50 {SUBMIT_BEFORE_P50_MS}, p99 {SUBMIT_BEFORE_P99_MS}",
            f"p99 {fmt(median(p99) / SUBMIT_BEFORE_P99_MS, 2)}", "not worse",
            yn(median(p50) <= SUBMIT_BEFORE_P50_MS and median(p99) <= SUBMIT_BEFORE_P99_MS))
    if "list" in R:
        r = R["list"]
        ls, bs = [w["rps"] for w in r["list"]], [w["rps"] for w in r["byid"]]
        _, cell = ratio(ls, bs)
        row(f"GET /v1/jobs?limit=20, 16 clients, {r['jobs']:,} jobs (req/s)", spread(ls, 0),
            f"GET /v1/jobs/{{id}}: {spread(bs, 0)}", cell, "≥ 20,000/s", yn(median(ls) >= 20000))
    if "latency" in R:
        rr = R["latency"]["rounds"]
        lp, ip = [x["load"]["p99_ms"] for x in rr], [x["idle"]["p99_ms"] for x in rr]
        _, cell = ratio(lp, ip)
        row(f"GET /v1/jobs/{{id}} p99 while {LATENCY_TRANSFERS} transfers run (ms)", spread(lp, 2),
            f"idle: {spread(ip, 2)}", cell, "< 5 ms", yn(median(lp) < 5))


def rows_kept(row, R, cfg):
    if "api" in R:
        r = R["api"]
        hs, as_ = [w["rps"] for w in r["hauld"]], [w["rps"] for w in r["aria2"]]
        m, cell = ratio(hs, as_)
        row("API reads (req/s, wrk -t2 -c32): hauld GET /v1/jobs/{id} / aria2.getGlobalStat", spread(hs, 0),
            f"aria2: {spread(as_, 0)}", cell, "≥ 1.5", yn(m >= 1.5))
    if "jobs" in R:
        r = R["jobs"]
        q = r["list_big_ms"] / r["list_small_ms"]
        row(f"list latency {cfg['big_jobs']:,} / {cfg['small_jobs']:,} jobs (median ms)", fmt(r["list_big_ms"], 2),
            f"{fmt(r['list_small_ms'], 2)}", fmt(q, 2), "≤ 2", yn(q <= 2))
        growth = (r["rss_big_kib"] - r["rss0_kib"]) / 1024
        row(f"RSS growth for {cfg['big_jobs']:,} queued jobs (MiB)", fmt(growth, 1),
            f"{r['rss0_kib'] / 1024:.1f} → {r['rss_big_kib'] / 1024:.1f}", "", "< 50", yn(growth < 50))
    if "cluster" in R:
        r = R["cluster"]
        k = r["nodes"]
        m1, ms = median(r["pg1"]), median(r["sqlite1"])
        _, cell = ratio(r[f"pg{k}"], r["pg1"])
        row(f"{cfg['cluster_n']:,} x 4 KiB on 1 node vs {k} nodes, one PostgreSQL (s)", spread(r[f"pg{k}"]),
            f"1 node: {spread(r['pg1'])}", cell, "(none)", "n/a")
        row("claim overhead per item: 1 node on PostgreSQL vs SQLite (ms)",
            fmt((m1 - ms) * 1000 / cfg["cluster_n"], 3), f"SQLite: {spread(r['sqlite1'])} s", "", "(none)", "n/a")


def details(L, R, cfg):
    L.append("\n## Details\n")
    for w in ("large", "small"):
        if w not in R:
            continue
        r = R[w]
        L.append(f"**{w}** ({cfg[w + '_n']:,} files of {cfg[w + '_size']:,} bytes), seconds per round (the tools "
                 "alternate, the first one rotating); `sync -f` is the flush of the tool's folder timed right "
                 "after it:\n")
        L.append("| tool | rounds | median (min-max) | then sync -f (median) | CPU s (median) |")
        L.append("|---|---|---|---|---|")
        for t in TRANSFER_TOOLS:
            L.append(f"| {t} | {', '.join(f'{x:.3f}' for x in r[t]['s'])} | {spread(r[t]['s'])} | "
                     f"{median(r[t]['sync']):.3f} | {median(r[t]['cpu']):.2f} |")
        L.append("")
    if "submit" in R:
        L.append("**submit**, per run (each on a fresh daemon and STATE_DIR):\n")
        L.append("| clients | round | jobs/s | p50 ms | p99 ms | timeouts | jobs in the table by state | "
                 "job table MiB | then jobs done/s |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for c in ("c1", "c16"):
            for i, w in enumerate(R["submit"][c]):
                states = ", ".join(f"{k} {v:,}" for k, v in w["states"].items())
                L.append(f"| {c[1:]} | {i + 1} | {w['rps']:.0f} | {w['p50_ms']:.2f} | {w['p99_ms']:.2f} | "
                         f"{w['timeouts']} | {states} | {w['db_mib']:.1f} | {w.get('drain_per_s', 0):.0f} |")
        L.append("")
    if "list" in R:
        r = R["list"]
        L.append(f"**list** ({r['jobs']:,} jobs, table filled in {r['fill_s']:.1f} s), wrk -t2 -c16 per round:\n")
        L.append("| request | req/s | p50 ms | p99 ms |")
        L.append("|---|---|---|---|")
        for k, label in (("list", "GET /v1/jobs?limit=20"), ("byid", "GET /v1/jobs/{id}")):
            L.append(f"| {label} | {seq(r[k], 'rps', 0)} | {seq(r[k], 'p50_ms', 2)} | {seq(r[k], 'p99_ms', 2)} |")
        L.append("")
    if "latency" in R:
        r = R["latency"]
        L.append(f"**latency** ({LATENCY_TRANSFERS} files of {r['size'] >> 20} MiB at "
                 f"{cfg['slow_rate'] >> 10} KiB/s each), per round:\n")
        L.append("| round | idle p50 / p99 ms | under load p50 / p99 / max ms (requests) | "
                 f"wrk -c{LATENCY_CONNS} under load: req/s, p50 / p99 ms |")
        L.append("|---|---|---|---|")
        for i, x in enumerate(r["rounds"]):
            L.append(f"| {i + 1} | {x['idle']['p50_ms']:.2f} / {x['idle']['p99_ms']:.2f} | "
                     f"{x['load']['p50_ms']:.2f} / {x['load']['p99_ms']:.2f} / {x['load']['max_ms']:.2f} "
                     f"({x['load']['n']}) | {x['wrk']['rps']:.0f}, {x['wrk']['p50_ms']:.2f} / "
                     f"{x['wrk']['p99_ms']:.2f} |")
        L.append("")
    if "api" in R:
        r = R["api"]
        L.append(f"**api**: hauld GET /v1/jobs/{{id}} req/s per round {seq(r['hauld'], 'rps', 0)} "
                 f"(p50 ms {seq(r['hauld'], 'p50_ms', 2)}); aria2 aria2.getGlobalStat {seq(r['aria2'], 'rps', 0)} "
                 f"(p50 ms {seq(r['aria2'], 'p50_ms', 2)}).\n")
    if "jobs" in R:
        r = R["jobs"]
        L.append(f"**jobs**: RSS {r['rss0_kib'] / 1024:.1f} MiB with one (blocked) running job, "
                 f"{r['rss_small_kib'] / 1024:.1f} MiB at {cfg['small_jobs']:,} jobs, "
                 f"{r['rss_big_kib'] / 1024:.1f} MiB at {cfg['big_jobs']:,}; "
                 f"{cfg['big_jobs'] - cfg['small_jobs']:,} POSTs from 8 keep-alive connections took "
                 f"{r['load_big_s']:.1f} s ({r['load_rate']:.0f} jobs/s); job table "
                 f"{r['db_bytes'] / 1048576:.1f} MiB; /v1/stats then: queued={r['queued']}, "
                 f"running={r['running']}; first job {r['first_state']}.\n")
    if "cluster" in R:
        r = R["cluster"]
        k = r["nodes"]
        L.append(f"**cluster** ({cfg['cluster_n']} files in {CLUSTER_JOBS} jobs), seconds per round:\n")
        L.append("| run | rounds | median (min-max) | daemons' CPU s (median) |")
        L.append("|---|---|---|---|")
        for run, label in (("sqlite1", "1 node, SQLite"), ("pg1", "1 node, PostgreSQL"),
                           (f"pg{k}", f"{k} nodes, PostgreSQL")):
            L.append(f"| {label} | {', '.join(f'{x:.3f}' for x in r[run])} | {spread(r[run])} | "
                     f"{median(r['cpu'][run]):.2f} |")
        L.append(f"\nItems per node in the {k}-node rounds: {'; '.join(str(x) for x in r['spread'])}. "
                 f"A job's wait from creation to its claim on 1 node (median over jobs, per round): "
                 f"{', '.join(f'{x:.1f} ms' for x in r['wait_ms'])}.\n")


def method(L, R, cfg):
    fss = {w: R[w]["fs"] for w in WORKLOADS if w in R}
    plain = {w: d for w, d in fss.items() if "loop device" not in d}
    L.append("## Method\n")
    L.append("The rules every workload follows:\n")
    L.append("""- Speed goals are ratios against curl and aria2 (or against hauld's own figures) measured in the same
  run, on the same machine, one after the other: never against figures from another run.
- A file-heavy figure moves 2-3x with the file system's state, so every workload writes on a file system made
  for it: a sparse image file in the temp dir, `mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0`
  (inode tables written at once, so no lazy initialisation runs in the background), attached to a loop device
  with direct I/O (the page cache does not hold each block twice) and mounted in the temp dir; unmounted and
  deleted when the workload ends.""")
    if plain:
        L.append("  **Not so in this run** for " + "; ".join(f"{w}: {d}" for w, d in plain.items())
                 + ": those wrote into the temp dir on the machine's own file system, whose state they share "
                   "with everything else on it.")
    L.append(f"""- `sync` runs before every timed run (so no tool pays for another's write-back) and after it; the
  tools alternate within a round and the first one rotates from round to round.
- Every figure is given as median (min-max) over the rounds: {cfg['rounds']} for the transfer workloads,
  {cfg['wrk_rounds']} for the others; a ratio is the ratio of the medians, with the range of the ratios of the
  runs of the same round. "met" is decided on the medians.
- Files are served by nginx (1 worker, sendfile on, access_log off, keepalive_requests 10,000,000,
  open_file_cache) on a free loopback port, from the temp dir on the machine's own file system; the page cache
  is warmed once before the rounds. Every file starts with a PNG signature and IHDR chunk, so hauld runs with
  its default ACCEPT_CONTENT (the content check is part of what is timed); the rest is random and differs per
  file.
- hauld: a fresh daemon with a fresh STATE_DIR for each run (STATE_DIR is a start-up setting), on the
  workload's file system. Settings: ALLOW_PRIVATE_ADDRESSES=true MAX_CONNECTIONS_PER_SOURCE=16
  SOURCE_TIMEOUT=3600 GLOBAL_JOB_TIMEOUT=7200, all else default (MAX_CONCURRENT_DOWNLOADS=32,
  MAX_CONCURRENT_JOBS=32, API_THREADS=4, LOG_LEVEL=info to a file), unless a workload says otherwise.
  Start-up is never timed.
""")
    L.append("Each workload:\n")
    L.append(f"""- **large**, **small** ({cfg['large_n']:,} x 8 MiB, {cfg['small_n']:,} x 4 KiB): in each round curl,
  aria2 and hauld each download every file into a fresh folder. curl: `curl --parallel --parallel-max 16 -s -K
  cfg` (one `url`/`output` pair per file); right after it, `sync -f FOLDER` is timed: curl + sync is the durable
  curl, whose files are on disk as hauld's are when its job ends. aria2: `aria2c -j 16 -x 1 -s 1 -i urls.txt -d
  OUT --allow-overwrite=true --auto-file-renaming=false --file-allocation=none --disk-cache=0
  --enable-mmap=false --no-conf=true -q --summary-interval=0 --auto-save-interval=0 --remote-time=false
  --conditional-get=false --max-tries=1` (`--disk-cache=0` turns off its 16 MiB write cache). hauld: the clock
  runs from the POST of one job holding every URL (max = number of URLs) until GET /v1/jobs/{{id}}, polled every
  20 ms on a keep-alive connection, shows a terminal state; hauld flushes each file and its folder and commits
  with SQLite synchronous=FULL before it calls a file done, so its `sync -f` afterwards finds little left.
  Every run must leave exactly N files of N x size bytes (and hauld's job `succeeded`, progress.succeeded = N),
  else the run stops. Large files are removed after each run; the small files stay until the workload ends,
  because deleting thousands of files makes ext4's inode allocator skip recently deleted inodes for a while
  and the next tool would pay for that.
- **submit**: wrk with a Lua script POSTing `{{"urls": [TINY], "max": 1}}` to /v1/jobs, where TINY is a
  {TINY_SIZE}-byte PNG on the nginx (each job is then run by hauld; the same file every time, so a job's
  download finds the file already there with the same SHA-256 and keeps one copy: the disk holds the job table
  and one file). The script counts every answer that is not 201; one such answer voids the run, as do socket
  errors other than timeouts. 1 client is `wrk -t1 -c1` (wrk needs a thread per connection), 16 clients
  `wrk -t2 -c16`; each run on a fresh daemon and STATE_DIR: {cfg['warm_s']} s of the same load as warm-up,
  `sync`, then {cfg['seconds']} s measured with --latency; the order of the two alternates per round. After a run
  the table must hold at least every job answered 201; then, with no more submissions, the jobs finished
  over {DRAIN_S} s give the rate at which queued jobs run ("then jobs done/s"). hauld answers a POST only once its job is durable (group
  commit). The 1-client latency is compared with {SUBMIT_BEFORE_P50_MS} / {SUBMIT_BEFORE_P99_MS} ms (p50 / p99), measured
  before the read side and group commit by 2,000 sequential POSTs on one keep-alive Python http.client
  connection (a client that adds ~0.1 ms of its own that wrk does not).
- **list**: one daemon runs one job of TINY to the end; it is stopped and its job table is filled to
  {cfg['list_jobs']:,} jobs with Python's sqlite3 module: copies of that finished job and its item, each with its own
  id and created 1 ms apart, the columns read from the table the daemon made (so the rows follow its schema,
  daemon/store_sqlite.c's migrations); a daemon is started on it (it opens an existing table as it is). Then
  `wrk -t2 -c16 --latency` on GET /v1/jobs?limit=20 and on GET /v1/jobs/{{id}} (the 11th job of that page),
  {cfg['warm_s']} s of warm-up each, then {cfg['seconds']} s per measurement, alternating.
- **latency**: {LATENCY_TRANSFERS} files on the nginx served at {cfg['slow_rate'] >> 10} KiB/s per connection (nginx limit_rate),
  sized to last through the measurements, as one job (MAX_CONNECTIONS_PER_SOURCE=16: {LATENCY_TRANSFERS} transfers in
  flight, checked before and after). A client on one keep-alive connection sends GET /v1/jobs/{{id}} of that job
  every {LATENCY_PACE_S * 1000:.0f} ms for {cfg['seconds']} s and times each request from send to last byte (Python http.client,
  which adds its own ~0.1 ms); then `wrk -t2 -c{LATENCY_CONNS} --latency` on the same URL for {cfg['seconds']} s. Reference:
  the same paced client on the same daemon before the transfers start, on a finished job (nothing running).
- **api**: `wrk -t2 -c32 -d{cfg['api_s']}s` on hauld's GET /v1/jobs/{{id}} (one finished 1-item job) vs
  aria2c --enable-rpc's `aria2.getGlobalStat` (POST /jsonrpc by a wrk Lua script); alternating. Non-2xx
  answers void a run.
- **jobs**: hauld with MAX_CONCURRENT_JOBS=1 and MAX_CONCURRENT_SOURCES=1; the first job points at a socket
  that listens but never accepts (REQUEST_TIMEOUT/STALL_TIMEOUT 3600 s), so it stays running and every later
  job stays queued.
  VmRSS from /proc/PID/status is read with that one job running, after {cfg['small_jobs']:,} jobs and after
  {cfg['big_jobs']:,} jobs (POSTed from 8 keep-alive connections, then 1 s of quiet). List latency: median of
  {cfg['list_n']} sequential GET /v1/jobs?limit=50 (after 10 warm-up requests) at each size.
- **cluster**: {cfg['cluster_n']:,} x 4 KiB files on nginx as {CLUSTER_JOBS} jobs, POSTed to the nodes in turn; the
  clock runs from the first POST until GET /v1/stats on the first node counts every job ended (polled every 20 ms).
  Three runs per round, the first rotating: 1 node on SQLite, 1 node on PostgreSQL, 3 nodes on the same PostgreSQL
  (tests/pg_harness.sh: a throwaway server in the temp dir, fsync off; a schema per run), all on this machine, each
  node with its own STATE_DIR and DOWNLOAD_DIR, MAX_CONCURRENT_JOBS = jobs / nodes rounded up, the settings of the
  hauld runs above otherwise (MAX_CONNECTIONS_PER_SOURCE=16 for the cluster, each node taking its share rounded up).
  Every job must end succeeded and the nodes' folders hold every file. The claim overhead per item is (1 node on
  PostgreSQL - 1 node on SQLite) / files: what the shared table (claims, leases, heartbeats, NOTIFY, the writes
  over the network) costs a node per item.
- Profiles: `bench/run --perf WORKLOAD` runs that workload alone for one round and records `perf record
  {cfg['perf_args']} -p PID` of the daemon during its measured part (files perf-LABEL.data); figures taken under
  perf are printed, not written here. On a virtual machine without a PMU perf samples cpu-clock.
""")


def report(a, info, vers, R, cfg):
    L = []
    L.append("# hauld benchmark results\n")
    L.append(f"Produced by `bench/run{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` with the daemon "
             f"built from {vers['git']}. Benchmarks only: nothing here is a test.\n")
    L.append("## Machine\n")
    L.append(f"- date: {info['date']}")
    L.append(f"- nproc: {info['nproc']}; CPU: {info['cpu']}; memory: {info['mem']}; kernel {info['kernel']}")
    L.append(f"- temp dir: `{cfg['tmp']}` on {info['fs']} (nginx's files, images of the workloads' file systems)")
    for w in WORKLOADS:
        if w in R:
            L.append(f"- {w} wrote on {R[w]['fs']}")
    L.append("\n## Versions\n")
    for k, v in vers.items():
        L.append(f"- {k}: {v}")
    L.append("\n## Results against the targets\n")
    L.append("Each figure: median (min-max) over the rounds.\n")
    L.append("| measure | hauld | reference | ratio | target | met |")
    L.append("|---|---|---|---|---|---|")

    def row(measure, hv, rv, q, target, ok):
        L.append(f"| {measure} | {hv} | {rv} | {q} | {target} | {ok} |")

    rows_transfer(row, R, cfg)
    rows_service(row, R, cfg)
    rows_kept(row, R, cfg)
    missing = [w for w in WORKLOADS if w not in R]
    if missing:
        L.append(f"\nNot run: {', '.join(missing)}.")
    L.append("")
    L.append(kept_section([a.out, os.path.join(HERE, "RESULTS.md")]).rstrip("\n"))
    details(L, R, cfg)
    method(L, R, cfg)
    return "\n".join(L) + "\n"
