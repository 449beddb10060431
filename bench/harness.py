"""The machinery of bench/run: the tools it installs and starts (nginx,
hauld, wrk, perf, a throwaway PostgreSQL), the fresh file system each
workload writes on, and small helpers. Nothing here decides what is
measured: that is workloads.py."""
import contextlib
import http.client
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
PG_HARNESS = os.path.join(TOP, "tests", "pg_harness.sh")
TERMINAL = {"succeeded", "partial", "failed", "cancelled", "timed_out"}
PNG_SIG = b"\x89PNG\r\n\x1a\n"
TINY = "tiny/t.png"  # a 1 KiB PNG on the nginx: the file of submitted jobs
TINY_SIZE = 1024


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- tools

def find_tool(name):
    p = shutil.which(name)
    if p:
        return p
    for d in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None


def ensure_tools(needed):
    """The paths of the tools bench/run uses: those in needed are installed
    (Debian packages) when missing, the others looked up only."""
    want = {"nginx": "nginx", "aria2c": "aria2", "wrk": "wrk", "curl": "curl", "perf": "linux-perf",
            "mkfs.ext4": "e2fsprogs", "losetup": "mount"}
    missing = [pkg for exe, pkg in want.items() if exe in needed and not find_tool(exe)]
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        log("installing", " ".join(missing))
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing,
                       check=True, env=env, stdout=subprocess.DEVNULL)
    return {exe: find_tool(exe) for exe in want}


def first_line(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        out = (r.stdout or "") + (r.stderr or "")
        return out.strip().splitlines()[0] if out.strip() else "?"
    except Exception as e:  # noqa: BLE001
        return f"? ({e})"


# ---------------------------------------------------------------- helpers

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def rmtree(p):
    shutil.rmtree(p, ignore_errors=True)


def drop(*paths):
    """Remove a round's outputs and flush them, so the next tool starts clean."""
    for p in paths:
        if os.path.isdir(p):
            rmtree(p)
        elif os.path.exists(p):
            os.unlink(p)
    os.sync()


def timed_sync(path):
    """`sync -f path`: flush the file system holding path; returns seconds."""
    t0 = time.monotonic()
    subprocess.run(["sync", "-f", path], check=True)
    return time.monotonic() - t0


def count_files(root):
    n = total = 0
    for d, _, files in os.walk(root):
        for f in files:
            if f.startswith(".") or f.endswith(".aria2"):
                continue
            n += 1
            total += os.path.getsize(os.path.join(d, f))
    return n, total


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def pct(xs, p):
    """The p-th percentile (nearest rank) of xs."""
    s = sorted(xs)
    return s[max(0, math.ceil(len(s) * p / 100) - 1)] if s else float("nan")


def png_bytes(index, size, rnd):
    """Bytes that libmagic calls image/png: signature, IHDR, then noise that
    differs per file (so no two files share a SHA-256)."""
    ihdr = struct.pack(">IIBBBBB", 64, 64, 8, 6, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    head = PNG_SIG + chunk + struct.pack(">Q", index)
    return (head + rnd[: size - len(head)])[:size]


def write_png(path, index, size, sparse=False):
    """A PNG header then noise, or (sparse) then a hole up to size."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        if sparse:
            f.write(png_bytes(index, 64, os.urandom(64)))
            f.truncate(size)
        else:
            f.write(png_bytes(index, size, os.urandom(size)))


# ---------------------------------------------------------------- scratch file systems

class Scratch:
    """A fresh file system for one workload's writes: a sparse image file in
    the temp dir, mkfs.ext4 (inode tables written now, so no lazy init runs
    in the background during the rounds), a loop device with direct I/O (so
    the page cache does not hold each block twice), mounted at self.dir.
    Without root or a loop device (or with --no-loop) self.dir is a plain
    folder in the temp dir and self.why says why."""

    def __init__(self, a, tmp, name, gib):
        self.dir = os.path.join(tmp, "fs-" + name)
        self.img = self.dev = None
        self.why = None
        self.mounted = False
        os.makedirs(self.dir)
        if a.no_loop:
            self.why = "--no-loop was given"
        elif os.geteuid() != 0:
            self.why = "not running as root"
        else:
            try:
                self._mount(a, tmp, name, gib)
            except (OSError, subprocess.CalledProcessError) as e:
                err = getattr(e, "stderr", None) or str(e)
                self.why = f"loop mount failed: {err.strip()[:200]}"
                self._undo()
        if self.why:
            log(f"{name}: no fresh file system ({self.why}): writing into {self.dir}")
        else:
            log(f"{name}: fresh ext4 of {gib} GiB on {self.dev} ({self.dio}) at {self.dir}")

    def _mount(self, a, tmp, name, gib):
        run = dict(check=True, capture_output=True, text=True)
        self.img = os.path.join(tmp, f"fs-{name}.img")
        with open(self.img, "wb") as f:
            f.truncate(gib << 30)
        subprocess.run([a.tools["mkfs.ext4"], "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0,nodiscard",
                        self.img], **run)
        try:
            self.dev = subprocess.run([a.tools["losetup"], "--find", "--show", "--direct-io=on", self.img],
                                      **run).stdout.strip()
        except subprocess.CalledProcessError:
            self.dev = subprocess.run([a.tools["losetup"], "--find", "--show", self.img], **run).stdout.strip()
        try:
            with open(f"/sys/block/{os.path.basename(self.dev)}/loop/dio") as f:
                self.dio = "direct I/O" if f.read().strip() == "1" else "buffered I/O"
        except OSError:
            self.dio = "I/O mode unknown"
        subprocess.run(["mount", "-t", "ext4", self.dev, self.dir], **run)
        self.mounted = True

    def _undo(self):
        if self.mounted:
            for _ in range(50):
                if subprocess.run(["umount", self.dir], capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)
            self.mounted = False
        if self.dev:
            subprocess.run([find_tool("losetup") or "losetup", "-d", self.dev], capture_output=True)
            self.dev = None
        if self.img and os.path.exists(self.img):
            os.unlink(self.img)
        self.img = None

    def describe(self):
        if self.why:
            return f"a folder in the temp dir ({self.why})"
        return f"a fresh ext4 on a loop device ({self.dio})"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.sync()
        self._undo()
        rmtree(self.dir)
        return False


# ---------------------------------------------------------------- perf

@contextlib.contextmanager
def perf_record(a, workload, label, pid):
    """`perf record` of pid for the duration of the block, when --perf names
    this workload; the file is perf-LABEL.data in --perf-dir."""
    if a.perf != workload:
        yield
        return
    os.makedirs(a.perf_dir, exist_ok=True)
    out = os.path.join(a.perf_dir, f"perf-{label}.data")
    errf = os.path.join(a.perf_dir, f"perf-{label}.log")
    with open(errf, "w") as err:
        p = subprocess.Popen([a.tools["perf"], "record"] + shlex.split(a.perf_args) + ["-p", str(pid), "-o", out],
                             stdout=err, stderr=err)
    time.sleep(0.5)  # perf attaches to the process's threads
    if p.poll() is not None:
        with open(errf) as f:
            raise RuntimeError(f"perf cannot record here (exit {p.returncode}): {f.read().strip()[:500]}")
    try:
        yield
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(120)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log(f"perf: {out} (perf report -i {out} --no-children --sort dso,sym; messages in {errf})")
        a.perf_files.append(out)


# ---------------------------------------------------------------- nginx

NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    open_file_cache max=20000 inactive=300s;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    types {{ image/png png; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {www};
        location / {{ }}
        location /slow/ {{ limit_rate {slow_rate}; }}
    }}
}}
"""


class Nginx:
    """nginx on a free loopback port serving www; under /slow/ each
    connection gets at most slow_rate bytes/s."""

    def __init__(self, exe, tmp, www, slow_rate):
        self.port = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(tmp=tmp, port=self.port, www=www, slow_rate=slow_rate))
        self.proc = subprocess.Popen([exe, "-p", tmp, "-c", conf, "-e", os.path.join(tmp, "nginx-error.log")],
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "nginx.out"), "w"))
        wait_port(self.port)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}/{path}"

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------- hauld

class Hauld:
    """One daemon with its own STATE_DIR (and so an empty job table, unless
    one is already there)."""

    def __init__(self, exe, state_dir, settings=None):
        self.port = free_port()
        self.state_dir = state_dir
        os.makedirs(state_dir, exist_ok=True)
        srcdir = os.path.join(state_dir, "sources.d")
        os.makedirs(srcdir, exist_ok=True)
        base = {
            "LISTEN": f"127.0.0.1:{self.port}",
            "STATE_DIR": state_dir,
            "SOURCES_DIR": srcdir,
            "ALLOW_PRIVATE_ADDRESSES": "true",
            "MAX_CONNECTIONS_PER_SOURCE": "16",
            "SOURCE_TIMEOUT": "3600",
            "GLOBAL_JOB_TIMEOUT": "7200",
        }
        base.update(settings or {})
        args = [exe, "--config", "/dev/null"] + [f"{k}={v}" for k, v in base.items()]
        self.logf = open(os.path.join(os.path.dirname(state_dir.rstrip("/")),
                                      os.path.basename(state_dir.rstrip("/")) + ".log"), "w")
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=self.logf)
        end = time.monotonic() + 30
        while True:
            try:
                st, _ = self.request("GET", "/v1/health")
                if st == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"hauld did not start (see {self.logf.name})")
            time.sleep(0.02)

    @property
    def pid(self):
        return self.proc.pid

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def request(self, method, path, body=None, conn=None):
        c = conn or self.conn()
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        c.request(method, path, body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        if conn is None:
            c.close()
        return r.status, data

    def get_json(self, path, conn=None):
        st, data = self.request("GET", path, conn=conn)
        if st != 200:
            raise RuntimeError(f"GET {path}: {st} {data[:300]!r}")
        return json.loads(data)

    def post_job(self, doc, conn=None):
        st, data = self.request("POST", "/v1/jobs", json.dumps(doc).encode(), conn)
        if st != 201:
            raise RuntimeError(f"POST /v1/jobs: {st} {data[:300]!r}")
        return json.loads(data)

    def job_count(self):
        return sum(self.get_json("/v1/stats")["jobs"].values())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


def run_hauld_job(h, urls, poll=0.02):
    """POST one job holding all URLs, poll GET /v1/jobs/{id} every 20 ms until
    terminal. Returns (seconds, job, daemon CPU seconds)."""
    c = h.conn()
    cpu0 = cpu_s(h.pid)
    t0 = time.monotonic()
    job = h.post_job({"urls": urls, "max": len(urls), "label": "bench"}, c)
    path = f"/v1/jobs/{job['id']}"
    while job["state"] not in TERMINAL:
        time.sleep(poll)
        job = h.get_json(path, c)
    t = time.monotonic() - t0
    cpu = cpu_s(h.pid) - cpu0
    c.close()
    return t, job, cpu


def tiny_job(h, nginx):
    """One finished job of the tiny file: its id."""
    _, job, _ = run_hauld_job(h, [nginx.url(TINY)])
    if job["state"] != "succeeded":
        raise RuntimeError(f"a job of {nginx.url(TINY)} ended {job['state']}: {job.get('error')}")
    return job["id"]


def run_child(cmd):
    """Run cmd to its end: (seconds, exit code, CPU seconds, stderr)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    t = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return t, p.returncode, ru.ru_utime + ru.ru_stime, err.decode(errors="replace")


# ---------------------------------------------------------------- wrk

WRK_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def wrk_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise RuntimeError(f"wrk: cannot read the duration {text!r}")
    return float(m.group(1)) * WRK_UNITS_MS[m.group(2)]


def wrk(exe, url, seconds, conns=32, threads=2, script=None):
    """One wrk --latency run: {rps, requests, p50_ms, p99_ms, timeouts,
    not201}. A run with non-2xx answers, socket errors other than timeouts,
    or (with SUBMIT_LUA) any answer but 201 raises."""
    cmd = [exe, f"-t{min(threads, conns)}", f"-c{conns}", f"-d{seconds}s", "--latency"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    not201 = re.search(r"not-201: (\d+)(.*)", out)
    if not m or not n or bad or (errs and any(int(x) for x in errs.groups()[:3])):
        raise RuntimeError(f"wrk {url}: bad run:\n{out}")
    if not201 and int(not201.group(1)):
        raise RuntimeError(f"wrk {url}: {not201.group(1)} answers were not 201, the first:{not201.group(2)}")
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    return {"rps": float(m.group(1)), "requests": int(n.group(1)), "p50_ms": wrk_ms(lat["50"]),
            "p99_ms": wrk_ms(lat["99"]), "timeouts": int(errs.group(4)) if errs else 0}


# ---------------------------------------------------------------- blackhole, PostgreSQL

class Blackhole:
    """A listening socket that never accepts: connections complete in the
    backlog, the request is sent, no byte ever comes back."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


class Postgres:
    """A throwaway PostgreSQL from tests/pg_harness.sh, in the temp dir."""

    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "pg")
        r = subprocess.run(["bash", PG_HARNESS, "start", self.dir], capture_output=True, text=True)
        if r.returncode != 0:
            rmtree(self.dir)
            raise RuntimeError(f"pg_harness: {(r.stderr or r.stdout).strip()}")
        self.url = r.stdout.strip().splitlines()[-1]

    def store(self, schema):
        return f"{self.url}?options=-csearch_path%3D{schema}"

    def sql(self, query):
        r = subprocess.run(["bash", PG_HARNESS, "psql", self.dir, "-c", query], capture_output=True,
                           text=True, check=True)
        return [line.split("|") for line in r.stdout.splitlines() if line]

    def stop(self):
        subprocess.run(["bash", PG_HARNESS, "stop", self.dir], capture_output=True)
