#!/usr/bin/env python3
"""Side-by-side benchmark driver for herald (called by bench/run.sh).

Runs the scenarios of issue 3 (S1-S5) against herald and the peers (Node.js ws,
nginx + Nchan, Go + gorilla/websocket), one server at a time on 127.0.0.1, each
started fresh for its scenario and stopped by PID afterwards. The load comes
from build/herald-bench (--json). Server CPU and memory are sampled here from
/proc for the whole server process tree (nginx runs a master and workers), so
every server is measured the same way; herald-bench's own single-PID figures
are kept in the raw JSON for cross-checking.

Prints one markdown table (rows = metrics, columns = servers, ratio to herald)
plus herald's worker/pinning table, the ring microbenchmark and the herald-only
extra stages (envelope encoders, TLS vs cleartext, 2-node Redis cluster vs 1,
envelope formats under S2-style load, 1 node vs 3 nodes on one Redis and on a Redis
Cluster, permessage-deflate, SSE vs WebSocket on S1 and S3; --no-extras / --extras LIST), and writes
them with the machine info to bench/results/latest.md (raw runs: latest.jsonl).
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BENCH = os.path.join(ROOT, "bench")
BUILD = os.path.join(BENCH, ".build")
HERALD = os.path.join(ROOT, "build", "herald")
HBENCH = os.path.join(ROOT, "build", "herald-bench")
NPROC = os.cpu_count() or 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

SERVERS = ["herald", "node", "nchan", "gorilla"]
LABEL = {"herald": "herald", "node": "Node ws", "nchan": "nginx+Nchan", "gorilla": "Go gorilla"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- /proc
def proc_children(pid):
    """Direct and indirect children of pid (scan of /proc; no CONFIG_PROC_CHILDREN here)."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
            ppid = int(s[s.rindex(")") + 2:].split()[1])
            kids.setdefault(ppid, []).append(int(d))
        except (OSError, ValueError):
            pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def proc_cpu(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        fields = s[s.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    except (OSError, ValueError, IndexError):
        return None


def proc_mem_kb(pid):
    """(rss_kb, pss_kb): PSS splits pages shared between nginx's processes fairly."""
    rss = pss = None
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        try:
            with open(f"/proc/{pid}/statm") as f:
                rss = int(f.read().split()[1]) * PAGE_KB
                pss = rss
        except OSError:
            pass
    return rss, pss


class Sampler(threading.Thread):
    """Samples CPU (and, for idle runs, memory) of a process tree every `period` s."""

    def __init__(self, pids, period=0.05, mem=False):
        super().__init__(daemon=True)
        self.pids, self.period, self.mem = list(pids), period, mem
        self.samples = []  # (t, cpu_s, rss_kb, pss_kb)
        self.dead_cpu = 0.0
        self.last = {}
        self.stop_ev = threading.Event()

    def sample(self):
        total = 0.0
        for p in self.pids:
            c = proc_cpu(p)
            if c is None:  # exited: keep its last known CPU
                c = self.last.get(p, 0.0)
            self.last[p] = c
            total += c
        rss = pss = None
        if self.mem:
            rss = pss = 0
            for p in self.pids:
                r, s = proc_mem_kb(p)
                rss += r or 0
                pss += s or 0
        self.samples.append((time.monotonic(), total, rss, pss))

    def run(self):
        n = 0
        while not self.stop_ev.is_set():
            self.sample()
            n += 1
            self.stop_ev.wait(self.period if not self.mem else max(self.period, 0.25))

    def stop(self):
        self.stop_ev.set()
        self.join(2)
        self.sample()

    def cpu_at(self, t):
        s = self.samples
        if not s:
            return None
        if t <= s[0][0]:
            return s[0][1]
        for a, b in zip(s, s[1:]):
            if a[0] <= t <= b[0]:
                if b[0] == a[0]:
                    return b[1]
                return a[1] + (b[1] - a[1]) * (t - a[0]) / (b[0] - a[0])
        return s[-1][1]

    def mem_before(self, t):
        best = None
        for smp in self.samples:
            if smp[0] <= t and smp[3] is not None:
                best = smp
        return best


# --------------------------------------------------------------------------- servers
def port_free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class PortPool:
    def __init__(self, base=21000):
        self.next = base

    def get(self):
        for _ in range(2000):
            p = self.next
            self.next += 1
            if self.next > 29000:
                self.next = 21000
            if port_free(p):
                return p
        raise RuntimeError("no free port")


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_NO_PROXY_TLS = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                            urllib.request.HTTPSHandler(context=ssl._create_unverified_context()))


class Server:
    def __init__(self, name, port, workdir, workers=None, cpus=None, extra=None, tls=False, env=None):
        """extra: more herald arguments (e.g. --tls-cert/--tls-key, --broker); tls: /healthz is https;
        env: more environment variables (the node peer's PERMESSAGE_DEFLATE=1)."""
        self.name, self.port, self.workdir = name, port, workdir
        self.env = dict(env or {})
        self.workers, self.cpus = workers, cpus
        self.extra, self.tls = list(extra or []), tls
        self.proc = None
        self.tree = []
        self.logpath = os.path.join(workdir, f"{name}-{port}.log")

    def command(self):
        w = self.workers or NPROC
        if self.name == "herald":
            cmd = [HERALD, "--listen", f"127.0.0.1:{self.port}", "--workers", str(w)] + self.extra
        elif self.name == "node":
            cmd = ["node", os.path.join(BENCH, "peers", "node", "server.js"), str(self.port)]
        elif self.name == "nchan":
            d = os.path.join(self.workdir, f"nchan-{self.port}")
            cmd = [os.path.join(BENCH, "peers", "nchan", "run.sh"), d, str(self.port), str(w)]
        elif self.name == "gorilla":
            cmd = [os.path.join(BUILD, "gorilla-peer"), "-addr", f"127.0.0.1:{self.port}"]
        else:
            raise ValueError(self.name)
        if self.cpus is not None:
            cmd = ["taskset", "-c", self.cpus] + cmd
        return cmd

    def healthz(self, timeout=1):
        """(status, body) of GET /healthz (https without certificate check for a TLS server)."""
        opener = _NO_PROXY_TLS if self.tls else _NO_PROXY
        url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/healthz"
        with opener.open(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")

    def wait_healthz_ok(self, timeout=15):
        """Wait until /healthz answers exactly "ok\n" (a cluster node says "degraded: ..." until its
        broker is up). Returns the last body seen (or error) if it never did."""
        deadline, last = time.monotonic() + timeout, "no answer"
        while time.monotonic() < deadline:
            try:
                st, body = self.healthz()
                if st == 200 and body == "ok\n":
                    return None
                last = f"{st} {body.strip()}"
            except (OSError, ValueError) as e:
                last = str(e)
            time.sleep(0.1)
        return last

    def start(self, timeout=15):
        logf = open(self.logpath, "w")
        self.proc = subprocess.Popen(self.command(), stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir,
                                     env=dict(os.environ, **self.env) if self.env else None)
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: "
                                   f"{open(self.logpath).read()[-500:]}")
            try:
                if self.healthz()[0] == 200:
                    break
            except (OSError, ValueError):
                time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"{self.name} did not answer /healthz in {timeout}s")
        time.sleep(0.3)
        self.tree = [self.proc.pid] + proc_children(self.proc.pid)
        if self.name == "nchan":
            want = self.workers or NPROC
            t_end = time.monotonic() + 5
            while len(self.tree) < 1 + want and time.monotonic() < t_end:
                time.sleep(0.1)
                self.tree = [self.proc.pid] + proc_children(self.proc.pid)
        return self

    def stop(self, timeout=8):
        if not self.proc or self.proc.poll() is not None:
            return
        kids = proc_children(self.proc.pid)  # recorded now: ours, since we started their parent
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"  {self.name}: no exit {timeout}s after SIGTERM, SIGKILL pid {self.proc.pid}")
            self.proc.kill()
            self.proc.wait(5)
        for k in kids:
            try:
                os.kill(k, 0)
            except OSError:
                continue
            time.sleep(0.5)
            try:
                os.kill(k, signal.SIGKILL)
                log(f"  {self.name}: killed leftover child pid {k}")
            except OSError:
                pass


# --------------------------------------------------------------------------- scenarios
def scenarios(quick, duration_override=None):
    d = duration_override or (3 if quick else 10)
    common = ["--size", "128", "--connect-concurrency", "256", "--connect-timeout", "15"]
    sc = {
        "S1": dict(desc=f"5,000 subscribers, 1 x 128 B broadcast/s, {d:g} s",
                   args=["--subscribers", "5000", "--publishers", "1", "--groups", "1",
                         "--rate", "1", "--duration", str(d)]),
        "S2": dict(desc=f"10,000 subscribers, 128 B at 100 msg/s, {d:g} s",
                   args=["--subscribers", "10000", "--publishers", "1", "--groups", "1",
                         "--rate", "100", "--duration", str(d),
                         "--source-ips", "4"]),
        "S3": dict(desc=f"1,000 subscribers, 128 B, saturation (window 64), {d:g} s",
                   args=["--subscribers", "1000", "--publishers", "1", "--groups", "1",
                         "--saturate", "--window", "64", "--duration", str(d), "--warmup", "1"]),
        "S4": dict(desc=f"100 groups x 50 subscribers, 100 publishers, 2,000 msg/s total, 128 B, {d:g} s",
                   args=["--subscribers", "5000", "--publishers", "100", "--groups", "100",
                         "--rate", "2000", "--duration", str(d)]),
        "S5": dict(desc=("18,000" if not quick else "5,000") + " idle subscribers: memory per connection",
                   args=["--subscribers", "18000" if not quick else "5000", "--idle",
                         "--duration", "4" if not quick else "2", "--source-ips", "4",
                         "--connect-concurrency", "512"]),
    }
    for v in sc.values():
        for i in range(0, len(common), 2):
            if common[i] not in v["args"]:
                v["args"] += common[i:i + 2]
    return sc


def run_bench(args, server, threads, client_cpus, runlog):
    """Run herald-bench against a started server, or a list of started cluster nodes
    (--ports A,B --server-pid PA,PB; CPU sampled over all their trees); returns the merged result dict."""
    nodes = list(server) if isinstance(server, (list, tuple)) else [server]
    target = (["--port", str(nodes[0].port)] if len(nodes) == 1
              else ["--ports", ",".join(str(n.port) for n in nodes)])
    cmd = [HBENCH, "--host", "127.0.0.1"] + target + ["--json", "--threads", str(threads),
           "--server-pid", ",".join(str(n.proc.pid) for n in nodes)] + args
    if client_cpus is not None:
        cmd = ["taskset", "-c", client_cpus] + cmd
    idle = "--idle" in args
    dur = float(args[args.index("--duration") + 1])
    warm = float(args[args.index("--warmup") + 1]) if "--warmup" in args else 0.0
    subs = int(args[args.index("--subscribers") + 1])
    limit = 60 + dur + warm + subs / 500.0
    sampler = Sampler([p for n in nodes for p in n.tree], mem=idle)
    if idle:
        sampler.sample()  # empty-server memory, before any connection
    sampler.start()
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=limit)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:  # subprocess.run kills its child on timeout
        rc, out, err = -9, e.stdout or "", f"herald-bench timed out after {limit:.0f}s"
        out = out if isinstance(out, str) else out.decode(errors="replace")
    t_end = time.monotonic()
    sampler.stop()
    runlog.write(f"$ {' '.join(cmd)}\nrc={rc}\n{out}{err}\n")
    res = {"rc": rc, "cmd": " ".join(cmd), "load1_before": load0, "stderr": err.strip()[-400:]}
    line = next((l for l in out.splitlines() if l.startswith("{")), None)
    if line:
        try:
            res.update(json.loads(line))
        except ValueError:
            res["parse_error"] = line[:200]
    if "connect_seconds" in res:
        start = t0 + res["connect_seconds"] + warm
        if idle:
            # memory: empty server vs. all subscribers connected (last sample in the idle window)
            first = sampler.samples[0]
            at = sampler.mem_before(start + dur - 0.05)
            ok = res.get("connections_ok") or 0
            if at and first[3] is not None and ok:
                res["tree_pss_empty_kb"] = first[3]
                res["tree_rss_empty_kb"] = first[2]
                res["tree_pss_kb"] = at[3]
                res["tree_rss_kb"] = at[2]
                res["tree_pss_per_conn_bytes"] = (at[3] - first[3]) * 1024.0 / ok
                res["tree_rss_per_conn_bytes"] = (at[2] - first[2]) * 1024.0 / ok
        else:
            end = start + (res.get("measured_seconds") or dur)
            c0, c1 = sampler.cpu_at(start), sampler.cpu_at(min(end, t_end))
            if c0 is not None and c1 is not None:
                res["tree_cpu_seconds"] = c1 - c0
                d = res.get("delivered") or 0
                res["tree_cpu_us_per_1k"] = (c1 - c0) * 1e9 / d if d else None
    res["load1_after"] = os.getloadavg()[0]
    return res


# --------------------------------------------------------------------------- table
def fmt_num(v, kind):
    if v is None:
        return "n/a"
    if kind == "pct":
        return f"{v:.1f} %" if v < 99.95 or v >= 100 else f"{v:.2f} %"
    if kind == "ms":
        return f"{v:.0f} ms" if v >= 100 else f"{v:.1f} ms" if v >= 10 else f"{v:.2f} ms"
    if kind == "rate":
        return f"{v / 1e6:.2f}M/s" if v >= 1e6 else f"{v / 1e3:.0f}k/s" if v >= 1e3 else f"{v:.0f}/s"
    if kind == "us":
        return f"{v:.0f} µs" if v >= 10 else f"{v:.1f} µs"
    if kind == "bytes":
        return f"{v / 1024:.1f} KiB" if abs(v) >= 1024 else f"{v:.0f} B"
    if kind == "mib":
        return f"{v / 1024:.1f} MiB"
    if kind == "s":
        return f"{v:.2f} s"
    if kind == "int":
        return f"{v:,.0f}"
    return str(v)


def metric_rows():
    """(scenario, label, extractor, kind, better) ; better: 'high' | 'low' | None"""
    def pct(r):
        e = r.get("expected")
        return 100.0 * r["delivered"] / e if e else None

    def get(k):
        return lambda r: r.get(k)

    def lat(k):  # a latency means nothing when nothing was delivered
        return lambda r: r.get(k) if r.get("delivered") else None

    def anomalies(r):
        keys = ("lost", "duplicated", "out_of_order", "disconnects", "protocol_errors", "connections_failed")
        bad = {k: r.get(k) for k in keys if r.get(k)}
        return ", ".join(f"{k} {v:,}" for k, v in bad.items()) if bad else "none"

    return [
        ("S1", "S1 delivered", pct, "pct", "high"),
        ("S1", "S1 p50 latency", lat("p50_ms"), "ms", "low"),
        ("S1", "S1 p99 latency", lat("p99_ms"), "ms", "low"),
        ("S1", "S1 server CPU per 1k deliveries", get("tree_cpu_us_per_1k"), "us", "low"),
        ("S2", "S2 delivered", pct, "pct", "high"),
        ("S2", "S2 deliveries/s", get("deliveries_per_sec"), "rate", "high"),
        ("S2", "S2 p99 latency", lat("p99_ms"), "ms", "low"),
        ("S2", "S2 server CPU per 1k deliveries", get("tree_cpu_us_per_1k"), "us", "low"),
        ("S3", "S3 deliveries/s (saturation)", get("deliveries_per_sec"), "rate", "high"),
        ("S3", "S3 p99 latency", lat("p99_ms"), "ms", "low"),
        ("S3", "S3 server CPU per 1k deliveries", get("tree_cpu_us_per_1k"), "us", "low"),
        ("S4", "S4 delivered", pct, "pct", "high"),
        ("S4", "S4 p99 latency", lat("p99_ms"), "ms", "low"),
        ("S4", "S4 server CPU per 1k deliveries", get("tree_cpu_us_per_1k"), "us", "low"),
        ("S5", "S5 idle connections ok", get("connections_ok"), "int", "high"),
        ("S5", "S5 connect time", get("connect_seconds"), "s", "low"),
        ("S5", "S5 server memory (PSS) per idle connection", get("tree_pss_per_conn_bytes"), "bytes", "low"),
        ("S5", "S5 empty server memory (PSS)", get("tree_pss_empty_kb"), "mib", "low"),
        ("*", "anomalies (lost, dup, out of order, disconnects, failed)", anomalies, "text", None),
    ]


def render_table(results, servers, scen_list):
    """results[(scenario, server)] = dict"""
    head = ["metric"] + [LABEL[s] for s in servers]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---"] + ["---:"] * len(servers)) + " |"]
    for sc, label, fn, kind, better in metric_rows():
        if sc == "*":
            for s2 in scen_list:
                cells = []
                for s in servers:
                    r = results.get((s2, s))
                    cells.append(fn(r) if r and "delivered" in r else "n/a" if r is None else
                                 "failed: " + (r.get("stderr") or "no output")[:80].replace("|", "/"))
                lines.append(f"| {s2} anomalies | " + " | ".join(cells) + " |")
            continue
        if sc not in scen_list:
            continue
        base = results.get((sc, "herald"))
        bv = fn(base) if base and "connections_ok" in base else None
        cells = []
        for s in servers:
            r = results.get((sc, s))
            v = fn(r) if r and "connections_ok" in r else None
            cell = fmt_num(v, kind)
            if s != "herald" and bv not in (None, 0) and v is not None and kind != "text":
                cell += f" ({v / bv:.2f}×)"
            cells.append(cell)
        arrow = " ↑" if better == "high" else " ↓" if better == "low" else ""
        lines.append(f"| {label}{arrow} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- extra herald-only stages
# TLS vs cleartext, cluster (Redis broker) 2 nodes vs 1, envelope formats under S2-style load,
# envelope encoders (build/herald-envbench): the sections of BENCHMARKS.md after the side-by-side
# table. herald only, every server fresh on 127.0.0.1 and stopped by PID, every step time-bounded.
EXTRAS = ["envbench", "tls", "cluster", "formats", "cluster3", "deflate", "sse"]  # run and report order (as in BENCHMARKS.md)
DEFLATEBENCH = os.path.join(ROOT, "build", "herald-deflatebench")
ENVBENCH = os.path.join(ROOT, "build", "herald-envbench")
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
EXTRA_WORKERS = 2  # BENCHMARKS.md: herald --workers 2 for the TLS, cluster and format runs


def extras_plan(quick, duration_override=None):
    d = f"{duration_override or (2 if quick else 5):g}"
    idle_n, idle_d = ("2000", "2") if quick else ("5000", "4")
    return {
        "s3": ["--subscribers", "1000", "--saturate", "--window", "64", "--duration", d, "--warmup", "1"],
        "idle": ["--subscribers", idle_n, "--idle", "--duration", idle_d],
        "cluster": ["--subscribers", "2000", "--groups", "1", "--rate", "200", "--duration", d],
        "format": lambda f: ["--subscribers", "10000", "--rate", "100", "--size", "128", "--duration", d,
                             "--source-ips", "4", "--format", f],
        "envbench_iters": 200000 if quick else 1000000,
        # cluster3 (issue 9): S2-style = many subscribers per message at a moderate rate, over 10 groups
        # (not 1) so a Redis Cluster spreads them over its 3 shards (4/3/3 slots' owners for g0..g9);
        # S4-style = S4 itself (100 groups x 50 subscribers, 100 publishers, 2,000 msg/s) at 5 s.
        # Group counts are not multiples of 3: herald-bench puts subscriber i in group i mod G on node
        # i mod 3, so G = 3k would put each group on one node only; 10 and 100 spread every group over
        # all three nodes, so every node follows every group (the costly case for a broker).
        "c3_s2": ["--subscribers", "6000", "--publishers", "10", "--groups", "10", "--rate", "500",
                  "--size", "128", "--duration", d, "--source-ips", "4"],
        "c3_s4": ["--subscribers", "5000", "--publishers", "100", "--groups", "100", "--rate", "2000",
                  "--size", "128", "--duration", d],
        # permessage-deflate: every row's payload is JSON notifications (--payload json)
        "deflate_wire": ["--subscribers", "1000", "--rate", "20", "--size", "1024", "--payload", "json",
                         "--duration", d],
        "deflate_s3": ["--subscribers", "1000", "--saturate", "--window", "64", "--size", "128",
                       "--payload", "json", "--duration", d, "--warmup", "1"],
        "deflate_s3k": ["--subscribers", "1000", "--saturate", "--window", "64", "--size", "1024",
                        "--payload", "json", "--duration", d, "--warmup", "1"],
        "deflate_s2": ["--subscribers", "10000", "--rate", "100", "--size", "128", "--payload", "json",
                       "--duration", d, "--source-ips", "4"],
    }


def rel(cmd):
    """A command line (str or list) with paths under the repository made relative."""
    parts = cmd.split(" ") if isinstance(cmd, str) else list(cmd)
    return " ".join(shlex.quote(c[len(ROOT) + 1:] if c.startswith(ROOT + "/") else c) for c in parts)


def extra_anomalies(r):
    keys = ("lost", "duplicated", "out_of_order", "disconnects", "protocol_errors", "connections_failed",
            "invalid", "size_mismatch", "unexpected", "skipped")
    bad = {k: r.get(k) for k in keys if r.get(k)}
    return ", ".join(f"{k} {v:,}" for k, v in bad.items()) if bad else "none"


def failed_text(r):
    return "failed: " + (r.get("stderr") or "no output")[:100].replace("|", "/").replace("\n", " ")


def ratio(v, base):
    return f" ({v / base:.2f}×)" if v is not None and base not in (None, 0) else ""


class Redis:
    """redis-server on a free loopback port, no persistence, in workdir; stopped by PID.
    extra: more redis-server arguments (cluster mode)."""

    def __init__(self, port, workdir, extra=()):
        self.port, self.workdir, self.proc = port, workdir, None
        self.extra = list(extra)
        self.logpath = os.path.join(workdir, f"redis-{port}.log")

    def command(self):
        return [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.workdir, "--daemonize", "no", "--logfile", ""] + self.extra

    def ping(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")

    def start(self, timeout=10):
        if not os.path.exists(REDIS):
            raise RuntimeError("redis-server not found (Debian package redis-server)")
        logf = open(self.logpath, "w")
        self.proc = subprocess.Popen(self.command(), stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir)
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: "
                                   f"{open(self.logpath).read()[-400:]}")
            try:
                if self.ping():
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING in {timeout}s")

    def stop(self, timeout=10):
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"  redis-server: no exit {timeout}s after SIGTERM, SIGKILL pid {self.proc.pid}")
            self.proc.kill()
            self.proc.wait(5)


def run_nodes(stage, tag, args, node_extras, ports, workdir, threads, runlog, raw, tls=False, need_ok=False):
    """Start len(node_extras) fresh herald nodes (--workers 2 + each node's extra arguments), wait
    for /healthz (exactly "ok\\n" with need_ok), run herald-bench against them, stop them by PID."""
    nodes = [Server("herald", ports.get(), workdir, workers=EXTRA_WORKERS, extra=ex, tls=tls)
             for ex in node_extras]
    r = {"stage": stage, "tag": tag, "server": "herald", "bench_args": " ".join(args),
         "herald_cmds": [rel(n.command()) for n in nodes]}
    try:
        try:
            for n in nodes:
                n.start()
            if need_ok:
                for n in nodes:
                    bad = n.wait_healthz_ok(15)
                    if bad is not None:
                        raise RuntimeError(f"node :{n.port} /healthz not ok after 15 s: {bad}")
        except RuntimeError as e:
            log(f"  {stage} {tag}: cannot start: {e}")
            r.update({"rc": -1, "stderr": f"server did not start: {e}"})
            raw.append(r)
            return r
        r.update(run_bench(args, nodes, threads, None, runlog))
    finally:
        for n in reversed(nodes):
            n.stop()
    r["cmd"] = rel(r.get("cmd", ""))
    raw.append(r)
    if "connections_ok" in r:
        log(f"  {stage} {tag:>22}: ok {r.get('connections_ok')} delivered {r.get('delivered')}/{r.get('expected')} "
            f"{r.get('deliveries_per_sec') or 0:.0f}/s p99 {r.get('p99_ms')} ms cpu/1k {r.get('tree_cpu_us_per_1k')} "
            f"rss/conn {r.get('server_rss_per_conn_bytes')}")
    else:
        log(f"  {stage} {tag}: FAILED rc={r.get('rc')} {r.get('stderr', '')[-300:]}")
    time.sleep(1)
    return r


def commands_list(rows):
    out = ["", "Commands as run (ports and PIDs are this run's):", ""]
    for label, r in rows:
        if r is None:
            continue
        srv = "; ".join(f"`{c}`" for c in r.get("herald_cmds", []))
        out.append(f"- {label}: {srv}" + (f"; `{r['cmd']}`" if r.get("cmd") else ""))
    loads = [r.get("load1_before") for _, r in rows if r and r.get("load1_before") is not None]
    if loads:
        out.append(f"\n1-minute load average at the start of these runs: {min(loads):.2f}–{max(loads):.2f}")
    return out


def stage_tls(plan, ctx):
    tmp = tempfile.mkdtemp(prefix="tls-", dir=ctx["workdir"])
    ossl = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "k.pem", "-out", "c.pem", "-days", "1", "-subj", "/CN=localhost"]
    out = ["\n## TLS vs cleartext (herald --workers 2; TLS: --tls-cert c.pem --tls-key k.pem, "
           "self-signed P-256)\n",
           f"Certificate: `{' '.join(ossl)}` (in a temporary directory). herald-bench `--tls`: OpenSSL "
           "client, no certificate check, a full handshake per connection. Ratios: TLS to cleartext.\n"]
    try:
        p = subprocess.run(ossl, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(p.stdout.strip()[-300:])
    except (OSError, subprocess.TimeoutExpired, RuntimeError) as e:
        log(f"  tls: no certificate: {e}")
        return out + [f"TLS stage skipped: cannot make a certificate with openssl: {e}"]
    tls_extra = ["--tls-cert", os.path.join(tmp, "c.pem"), "--tls-key", os.path.join(tmp, "k.pem")]
    rows = []
    for kind, args in (("S3", plan["s3"]), ("idle", plan["idle"])):
        for tls in (False, True):
            label = f"{kind} {'TLS' if tls else 'cleartext'}"
            r = run_nodes("tls", label, args + (["--tls"] if tls else []), [tls_extra if tls else []],
                          ctx["ports"], ctx["workdir"], ctx["threads"], ctx["runlog"], ctx["raw"], tls=tls)
            rows.append((label, r))
    out.append("| run | herald | herald-bench | deliveries/s | p99 | server CPU per 1k deliveries "
               "| herald-bench CPU (whole run) | server RSS per idle connection (herald-bench) | server PSS per idle connection "
               "| anomalies |")
    out.append("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    base = {}
    for label, r in rows:
        kind, tls = label.split()[0], label.endswith("TLS")
        herald = "`--workers 2 --tls-cert c.pem --tls-key k.pem`" if tls else "`--workers 2`"
        cmd = f"`herald-bench {r['bench_args']}`"
        if "connections_ok" not in r:
            out.append(f"| {label} | {herald} | {cmd} | {failed_text(r)} | | | | | | |")
            continue
        b = base.get(kind) if tls else None
        idle = kind == "idle"

        def cell(key, fmt, show=True):
            v = r.get(key)
            if not show:
                return ""
            return fmt_num(v, fmt) + (ratio(v, b.get(key)) if b else "")
        out.append(f"| {label} | {herald} | {cmd} | {cell('deliveries_per_sec', 'rate', not idle)} | "
                   f"{fmt_num(r.get('p99_ms'), 'ms') if not idle else ''} | "
                   f"{cell('tree_cpu_us_per_1k', 'us', not idle)} | {cell('client_cpu_seconds', 's')} | "
                   f"{cell('server_rss_per_conn_bytes', 'bytes', idle)} | "
                   f"{cell('tree_pss_per_conn_bytes', 'bytes', idle)} | {extra_anomalies(r)} |")
        if not tls:
            base[kind] = r
    return out + commands_list(rows)


def stage_cluster(plan, ctx):
    out = ["\n## Cluster: 2 nodes vs 1 (herald --workers 2, Redis broker on loopback)\n"]
    redis = Redis(ctx["ports"].get(), ctx["workdir"])
    try:
        redis.start()
    except (RuntimeError, OSError) as e:
        log(f"  cluster: {e}")
        return out + [f"Cluster stage skipped: {e}"]
    url = f"redis://127.0.0.1:{redis.port}"
    out.append(f"`{rel(redis.command())}` (stopped by PID at the end); every node waited on until its "
               "`/healthz` body is `ok` (not `degraded`); with `--ports A,B` subscribers alternate between the "
               "nodes and the publisher is on A; server CPU is summed over all nodes (Redis's own CPU is in "
               "the JSON as `redis_cpu_seconds`, whole run).\n")
    rows = []
    try:
        for label, extras in (("1 node, no broker", [[]]),
                              ("1 node, Redis broker", [["--broker", url]]),
                              ("2 nodes, Redis broker", [["--broker", url], ["--broker", url]])):
            c0 = proc_cpu(redis.proc.pid)
            r = run_nodes("cluster", label, plan["cluster"], extras, ctx["ports"], ctx["workdir"], ctx["threads"],
                          ctx["runlog"], ctx["raw"], need_ok=True)
            c1 = proc_cpu(redis.proc.pid)
            if c0 is not None and c1 is not None:
                r["redis_cpu_seconds"] = round(c1 - c0, 3)
            rows.append((label, r))
    finally:
        redis.stop()
    out.append("| run | herald (each node) | herald-bench | deliveries/s | delivered | p50 / p99 "
               "| server CPU per 1k deliveries (all nodes) | anomalies |")
    out.append("| --- | --- | --- | ---: | ---: | ---: | ---: | --- |")
    base = rows[0][1] if rows and "connections_ok" in rows[0][1] else {}
    for label, r in rows:
        herald = "`--workers 2`" if "no broker" in label else "`--workers 2 --broker redis://127.0.0.1:PORT`"
        ports = "--ports A,B " if label.startswith("2") else ""
        cmd = f"`herald-bench {ports}{r['bench_args']}`"
        if "connections_ok" not in r:
            out.append(f"| {label} | {herald} | {cmd} | {failed_text(r)} | | | | |")
            continue
        out.append(f"| {label} | {herald} | {cmd} | {delivery_cells(r, base)} |")
    return out + commands_list(rows)


def delivery_cells(r, base):
    """deliveries/s | delivered | p50 / p99 | server CPU per 1k (ratio to base) | anomalies."""
    e = r.get("expected") or 0
    cpu = r.get("tree_cpu_us_per_1k")
    return (f"{fmt_num(r.get('deliveries_per_sec'), 'rate')} | "
            f"{fmt_num(100.0 * r['delivered'] / e if e else None, 'pct')} | "
            f"{fmt_num(r.get('p50_ms'), 'ms')} / {fmt_num(r.get('p99_ms'), 'ms')} | "
            f"{fmt_num(cpu, 'us')}{ratio(cpu, base.get('tree_cpu_us_per_1k')) if r is not base else ''} | "
            f"{extra_anomalies(r)}")


def stage_formats(plan, ctx):
    out = ["\n## Envelope formats under S2-style load (herald --workers 2)\n",
           "Every subscriber asks for the format (`/ws?groups=g0&format=F`); herald-bench unwraps JSON/msgpack "
           "envelopes to the payload. Ratios: to raw.\n"]
    rows = []
    for f in ("raw", "json", "msgpack"):
        rows.append((f, run_nodes("formats", f, plan["format"](f), [[]], ctx["ports"], ctx["workdir"],
                                  ctx["threads"], ctx["runlog"], ctx["raw"])))
    out.append("| format | herald-bench | deliveries/s | delivered | p50 / p99 | server CPU per 1k deliveries "
               "| anomalies |")
    out.append("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    base = rows[0][1] if "connections_ok" in rows[0][1] else {}
    for f, r in rows:
        cmd = f"`herald-bench {r['bench_args']}`"
        if "connections_ok" not in r:
            out.append(f"| {f} | {cmd} | {failed_text(r)} | | | | |")
            continue
        out.append(f"| {f} | {cmd} | {delivery_cells(r, base)} |")
    return out + commands_list(rows)


def stage_sse(plan, ctx):
    """Issue 12: S1 and S3 with Server-Sent Events subscribers against WebSocket ones, same server
    flags, one after the other in the same run; the ratio is SSE's server CPU per delivery over
    WebSocket's (target: within 1.5x)."""
    out = ["\n## SSE vs WebSocket subscribers, S1 and S3 (herald --workers 2)\n",
           "The same scenario with `herald-bench --sse` (subscribers read `GET /sse?groups=g0`; the bench "
           "payload is binary, so each event is `event: binary` + base64) right after the WebSocket run. "
           "Ratios: SSE to WebSocket.\n"]
    sc = scenarios(ctx["quick"], ctx["duration"])
    rows = []
    for kind in ("S1", "S3"):
        for sse in (False, True):
            label = f"{kind} {'SSE' if sse else 'WebSocket'}"
            rows.append((label, run_nodes("sse", label, sc[kind]["args"] + (["--sse"] if sse else []), [[]],
                                          ctx["ports"], ctx["workdir"], ctx["threads"], ctx["runlog"], ctx["raw"])))
    out.append("| run | herald-bench | deliveries/s | delivered | p50 / p99 | server CPU per 1k deliveries "
               "| anomalies |")
    out.append("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    base = {}
    for label, r in rows:
        kind, sse = label.split()[0], label.endswith("SSE")
        cmd = f"`herald-bench {r['bench_args']}`"
        if "connections_ok" not in r:
            out.append(f"| {label} | {cmd} | {failed_text(r)} | | | | |")
            continue
        b = base.get(kind, {}) if sse else r
        out.append(f"| {label} | {cmd} | {delivery_cells(r, b)} |")
        if not sse:
            base[kind] = r
    return out + commands_list(rows)


# --------------------------------------------------------------------------- cluster3 (issue 9)
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def resp_cmd(port, *args, timeout=2):
    """One Redis command on 127.0.0.1:port; returns the decoded reply (bytes, int, list, or an
    Exception instance for an error reply). Enough RESP2 for CLUSTER INFO/SLOTS/KEYSLOT."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        req = f"*{len(args)}\r\n".encode()
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            req += f"${len(b)}\r\n".encode() + b + b"\r\n"
        s.sendall(req)
        f = s.makefile("rb")

        def read():
            line = f.readline()
            if not line:
                raise OSError("connection closed")
            t, rest = line[:1], line[1:-2]
            if t == b"+":
                return rest
            if t == b"-":
                return RuntimeError(rest.decode(errors="replace"))
            if t == b":":
                return int(rest)
            if t == b"$":
                n = int(rest)
                return None if n < 0 else f.read(n + 2)[:-2]
            if t == b"*":
                n = int(rest)
                return None if n < 0 else [read() for _ in range(n)]
            raise OSError(f"bad RESP reply {line[:40]!r}")
        return read()


class RedisCluster3:
    """A Redis Cluster of three masters on loopback (no replicas), slots split evenly by
    `redis-cli --cluster create`. Each master's cluster-bus port is chosen free (the default,
    port + 10000, may be taken); every process is stopped by PID."""

    def __init__(self, ports, workdir):
        self.nodes = []
        for _ in range(3):
            p, bus = ports.get(), ports.get()
            self.nodes.append(Redis(p, workdir, extra=[
                "--cluster-enabled", "yes", "--cluster-node-timeout", "2000", "--cluster-port", str(bus),
                "--cluster-config-file", f"nodes-{p}.conf"]))
        self.create_cmd = [REDIS_CLI, "--cluster", "create"] + [f"127.0.0.1:{n.port}" for n in self.nodes] + \
            ["--cluster-yes"]

    def url(self):
        return "redis-cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self):
        try:
            for n in self.nodes:
                n.start()
            if not os.path.exists(REDIS_CLI):
                raise RuntimeError("redis-cli not found (Debian package redis-tools)")
            p = subprocess.run(self.create_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=60)
            if p.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {p.stdout.strip()[-400:]}")
            deadline = time.monotonic() + 20
            for n in self.nodes:
                while b"cluster_state:ok" not in (self._try(n.port, "CLUSTER", "INFO") or b""):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cluster_state not ok on :{n.port} after 20 s")
                    time.sleep(0.1)
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            self.stop()
            raise
        return self

    @staticmethod
    def _try(port, *args):
        try:
            r = resp_cmd(port, *args)
            return None if isinstance(r, Exception) else r
        except OSError:
            return None

    def shard_of_groups(self, groups):
        """{master port: number of the groups whose hash slot it owns} (herald's keys and sharded
        channels carry the group as their {hash tag}, so a group's slot is CLUSTER KEYSLOT <group>)."""
        slots = resp_cmd(self.nodes[0].port, "CLUSTER", "SLOTS")
        count = {n.port: 0 for n in self.nodes}
        for g in groups:
            s = resp_cmd(self.nodes[0].port, "CLUSTER", "KEYSLOT", g)
            for lo, hi, master, *_ in slots:
                if lo <= s <= hi:
                    count[master[1]] = count.get(master[1], 0) + 1
        return count

    def stop(self):
        for n in reversed(self.nodes):
            n.stop()


def stage_cluster3(plan, ctx):
    """1 node (no broker) vs 3 nodes on one Redis vs 3 nodes on a 3-master Redis Cluster, S2- and
    S4-style loads; Redis CPU summed over every redis-server of the row's deployment."""
    hist = ["--history", "100"]
    out = ["\n## Cluster: 1 node vs 3 nodes on one Redis vs 3 nodes on a Redis Cluster (issue 9)\n"]
    single = Redis(ctx["ports"].get(), ctx["workdir"])
    rcl = RedisCluster3(ctx["ports"], ctx["workdir"])
    try:
        single.start()
        rcl.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        single.stop()
        log(f"  cluster3: {e}")
        return out + [f"cluster3 stage skipped: {e}"]
    out.append(f"One Redis: `{rel(single.command())}`. Redis Cluster: three masters "
               f"`{rel(rcl.nodes[0].command())}` (and likewise, each with its own free bus port), then "
               f"`{rel(rcl.create_cmd)}`; no replicas. All stopped by PID at the end. Every herald node: "
               f"`--workers {EXTRA_WORKERS} --history 100` (so each publish also appends to the group's Redis "
               "stream), waited on until `/healthz` is exactly `ok`. With three nodes subscribers alternate "
               "between the nodes (`--ports A,B,C`) and so do publishers (`--pub-ports-all`); every group has "
               "subscribers on every node. Server CPU is summed over all nodes; Redis CPU = utime+stime of "
               "every redis-server of the row's deployment over the whole row (node start to node stop) "
               "divided by the messages herald-bench published. Ratios: to the 1-node row of the same load.\n")
    rows, idle = [], []
    try:
        for load, key in (("S2-style", "c3_s2"), ("S4-style", "c3_s4")):
            groups = [f"g{i}" for i in range(int(plan[key][plan[key].index("--groups") + 1]))]
            try:
                spread = rcl.shard_of_groups(groups)
                out.append(f"- {load}: groups per Redis Cluster master (by hash slot): "
                           f"{' / '.join(str(v) for v in spread.values())}")
            except (OSError, TypeError, ValueError) as e:
                out.append(f"- {load}: groups per master: unknown ({e})")
            for label, extras, procs in (
                    ("1 node, no broker", [hist], []),
                    ("3 nodes, one Redis", [hist + ["--broker", f"redis://127.0.0.1:{single.port}"]] * 3, [single]),
                    ("3 nodes, Redis Cluster", [hist + ["--broker", rcl.url()]] * 3, rcl.nodes)):
                args = plan[key] + (["--pub-ports-all"] if len(extras) > 1 else [])
                every = [single] + rcl.nodes
                c0 = {x.proc.pid: proc_cpu(x.proc.pid) for x in every}
                w0 = time.monotonic()
                r = run_nodes("cluster3", f"{load} {label}", args, extras, ctx["ports"], ctx["workdir"],
                              ctx["threads"], ctx["runlog"], ctx["raw"], need_ok=True)
                wall = time.monotonic() - w0
                c1 = {x.proc.pid: proc_cpu(x.proc.pid) for x in every}
                used = {p: c1[p] - c0[p] for p in c0 if c0[p] is not None and c1[p] is not None}
                if procs:
                    rc = sum(used.get(x.proc.pid, 0.0) for x in procs)
                    r["redis_cpu_seconds"] = round(rc, 3)
                    r["redis_cpu_seconds_each"] = {x.port: round(used.get(x.proc.pid, 0.0), 3) for x in procs}
                    pub = r.get("published")
                    r["redis_cpu_us_per_publish"] = rc * 1e6 / pub if pub else None
                else:  # nothing goes through Redis: what the idle deployments cost per second
                    idle.append((wall, used.get(single.proc.pid, 0.0),
                                 sum(used.get(x.proc.pid, 0.0) for x in rcl.nodes)))
                r["load"], r["row"] = load, label
                rows.append((f"{load}, {label}", r))
    finally:
        rcl.stop()
        single.stop()
    out.append("")
    out.append("| load | run | herald-bench | deliveries/s | delivered | p50 / p99 "
               "| server CPU per 1k deliveries (all nodes) | Redis CPU per publish (all redis-servers) | anomalies |")
    out.append("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    base = {}
    for _, r in rows:
        cmd = f"`herald-bench {'--ports A,B,C ' if r['row'].startswith('3') else ''}{r['bench_args']}`"
        if r["row"].startswith("1"):  # the baseline of this load's rows (none if it failed)
            base = r if "connections_ok" in r else {}
        if "connections_ok" not in r:
            out.append(f"| {r['load']} | {r['row']} | {cmd} | {failed_text(r)} | | | | | |")
            continue
        cells = delivery_cells(r, base).split(" | ")
        rp = r.get("redis_cpu_us_per_publish")
        redis_cell = (f"{fmt_num(rp, 'us')} ({r['redis_cpu_seconds']:.2f} s / {r.get('published', 0):,})"
                      if rp is not None else "—")
        out.append(f"| {r['load']} | {r['row']} | {cmd} | {' | '.join(cells[:4])} | {redis_cell} | {cells[4]} |")
    if idle:
        wall = sum(x[0] for x in idle)
        out.append(f"\nIdle Redis CPU during the 1-node rows (nothing routed through Redis, {wall:.0f} s): one Redis "
                   f"{sum(x[1] for x in idle) * 1e3 / wall:.1f} ms/s, the Redis Cluster "
                   f"{sum(x[2] for x in idle) * 1e3 / wall:.1f} ms/s (its cluster bus); included in the "
                   "per-publish figures above.")
    return out + commands_list(rows)


def stage_envbench(plan, ctx):
    cmd = [ENVBENCH, str(plan["envbench_iters"])]
    out = [f"\n## Envelope encoders (`{rel(cmd)}`)\n"]
    r = {"stage": "envbench", "cmd": rel(cmd)}
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=180)
        r["rc"], text = p.returncode, p.stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        r["rc"], text = -1, f"herald-envbench failed: {e}"
    ctx["runlog"].write(f"$ {r['cmd']}\nrc={r['rc']}\n{text}\n")
    table = [l for l in text.splitlines() if l.startswith("|")]
    if len(table) > 2:  # header, separator, rows -> one dict per row in the JSON
        head = [c.strip() for c in table[0].strip("|").split("|")]
        r["rows"] = [dict(zip(head, (c.strip() for c in l.strip("|").split("|")))) for l in table[2:]]
    else:
        r["output"] = text[-1000:]
    ctx["raw"].append(r)
    log(f"  envbench: rc {r['rc']}, {len(r.get('rows', []))} rows")
    return out + [text]


def run_peer(stage, tag, name, env, args, ctx):
    """One run against a peer server (e.g. the node peer with PERMESSAGE_DEFLATE=1), started fresh
    with both cores and stopped by PID."""
    srv = Server(name, ctx["ports"].get(), ctx["workdir"], env=env)
    r = {"stage": stage, "tag": tag, "server": name, "bench_args": " ".join(args),
         "herald_cmds": [" ".join(f"{k}={v}" for k, v in env.items()) + " " + rel(srv.command())]}
    try:
        try:
            srv.start()
        except RuntimeError as e:
            log(f"  {stage} {tag}: cannot start: {e}")
            r.update({"rc": -1, "stderr": f"server did not start: {e}"})
            ctx["raw"].append(r)
            return r
        r.update(run_bench(args, srv, ctx["threads"], None, ctx["runlog"]))
    finally:
        srv.stop()
    r["cmd"] = rel(r.get("cmd", ""))
    ctx["raw"].append(r)
    log(f"  {stage} {tag}: delivered {r.get('delivered')}/{r.get('expected')} cpu/1k {r.get('tree_cpu_us_per_1k')}")
    time.sleep(1)
    return r


def stage_deflate(plan, ctx):
    out = ["\n## permessage-deflate (issue 11; herald --workers 2)\n",
           "Every subscriber of a `--deflate` row offers permessage-deflate and inflates every message "
           "(herald-bench, libdeflate). Payloads: `--payload json` (notifications with varying ids, names, "
           "times; a 24-byte bench header first) in every row, with and without the extension. Wire bytes "
           "= WebSocket bytes the subscribers read per delivery. Ratios: to the same row without deflate; "
           "the Node ws row: to herald's deflate S3.\n"]
    rows = []
    names = {"wire": "1 KB JSON, 1,000 subscribers, 20 msg/s", "s3": "S3", "s3k": "S3 with 1 KB JSON",
             "s2": "S2"}
    for kind in ("wire", "s3", "s3k", "s2"):
        for z in (False, True):
            label = names[kind] + (" deflate" if z else "")
            args = plan[f"deflate_{kind}"] + (["--deflate"] if z else [])
            rows.append((label, run_nodes("deflate", label, args, [[]], ctx["ports"], ctx["workdir"],
                                          ctx["threads"], ctx["runlog"], ctx["raw"])))
    if os.path.isdir(os.path.join(BENCH, "peers", "node", "node_modules", "ws")):
        rows.append(("S3 with 1 KB JSON deflate, Node ws (perMessageDeflate)",
                     run_peer("deflate", "node-s3k", "node", {"PERMESSAGE_DEFLATE": "1"},
                              plan["deflate_s3k"] + ["--deflate"], ctx)))
    out.append("| run | herald-bench | delivered | deliveries/s | p99 | wire bytes per delivery "
               "| server CPU per 1k deliveries | anomalies |")
    out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    base = {}
    for label, r in rows:
        cmd = f"`herald-bench {r['bench_args']}`"
        if "connections_ok" not in r:
            out.append(f"| {label} | {cmd} | {failed_text(r)} | | | | | |")
            continue
        if "deflate" not in label:
            base = r
        ref = base if "Node" not in label else next(x for l, x in rows if l == "S3 with 1 KB JSON deflate")
        e = r.get("expected") or 0
        cpu, wire = r.get("tree_cpu_us_per_1k"), r.get("wire_bytes_per_delivery")
        out.append(f"| {label} | {cmd} | {fmt_num(100.0 * r['delivered'] / e if e else None, 'pct')} | "
                   f"{fmt_num(r.get('deliveries_per_sec'), 'rate')} | {fmt_num(r.get('p99_ms'), 'ms')} | "
                   f"{fmt_num(wire, 'bytes')}{ratio(wire, ref.get('wire_bytes_per_delivery')) if r is not ref else ''} | "
                   f"{fmt_num(cpu, 'us')}{ratio(cpu, ref.get('tree_cpu_us_per_1k')) if r is not ref else ''} | "
                   f"{extra_anomalies(r)} |")
    out += commands_list(rows)
    cmd = [DEFLATEBENCH, "0.5"]
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=180)
        text = p.stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        text = f"herald-deflatebench failed: {e}"
    ctx["runlog"].write(f"$ {rel(cmd)}\n{text}\n")
    out += [f"\nCompressor choice (`{rel(cmd)}`: ratio = compressed/original, ns per input byte):\n", text]
    return out


def run_extras(which, quick, duration_override, ctx):
    """Runs the selected stages in order; returns the markdown lines of their sections."""
    plan = extras_plan(quick, duration_override)
    stages = {"tls": stage_tls, "cluster": stage_cluster, "formats": stage_formats, "envbench": stage_envbench,
              "cluster3": stage_cluster3, "deflate": stage_deflate, "sse": stage_sse}
    ctx = dict(ctx, quick=quick, duration=duration_override)
    out = []
    for name in EXTRAS:
        if name in which:
            log(f"extra stage: {name}")
            out += stages[name](plan, ctx)
    return out


# --------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 s scenarios, 5,000 idle subscribers, 1M ring items; "
                    "extras: 2 s runs, 2,000 idle subscribers, 200k encoder iterations")
    ap.add_argument("--only", default=",".join(SERVERS), help="servers, comma list: " + ",".join(SERVERS))
    ap.add_argument("--scenarios", default="S1,S2,S3,S4,S5", help="comma list, or none (only the extra stages)")
    ap.add_argument("--duration", type=float, help="override each scenario's duration (s)")
    ap.add_argument("--threads", type=int, default=1, help="herald-bench event-loop threads")
    ap.add_argument("--no-ring", action="store_true", help="skip the ring microbenchmark")
    ap.add_argument("--no-workers", action="store_true", help="skip herald's S3 workers/taskset table")
    ap.add_argument("--no-extras", action="store_true",
                    help="skip the extra herald-only stages (envelope encoders, TLS, cluster, formats, cluster3, "
                    "deflate, SSE)")
    ap.add_argument("--extras", default=",".join(EXTRAS),
                    help="extra herald-only stages to run, comma list of " + ",".join(EXTRAS) +
                    " (default all; they run whenever herald is in --only, whatever --scenarios says)")
    ap.add_argument("--out", default=os.path.join(BENCH, "results", "latest.md"))
    a = ap.parse_args()

    servers = [s.strip() for s in a.only.split(",") if s.strip()]
    for s in servers:
        if s not in SERVERS:
            ap.error(f"unknown server {s!r}")
    servers = [s for s in SERVERS if s in servers]
    scen = scenarios(a.quick, a.duration)
    scen_list = [s.strip().upper() for s in a.scenarios.split(",") if s.strip() and s.strip().lower() != "none"]
    for s in scen_list:
        if s not in scen:
            ap.error(f"unknown scenario {s!r}")
    scen_list = [s for s in scen if s in scen_list]
    extras = [] if a.no_extras else [s.strip().lower() for s in a.extras.split(",") if s.strip()]
    for s in extras:
        if s not in EXTRAS:
            ap.error(f"unknown extra stage {s!r} (known: {','.join(EXTRAS)})")
    if "herald" not in servers:
        extras = []  # herald-only stages

    workdir = tempfile.mkdtemp(prefix="herald-bench-")
    runlog = open(os.path.join(workdir, "runs.log"), "w")
    ports = PortPool()
    t_start = time.time()
    load_before = open("/proc/loadavg").read().strip()
    machine = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": NPROC,
        "kernel": platform.release(),
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
        "loadavg_before": load_before,
        "quick": a.quick,
        "extras": extras,
        "herald_git": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                     stdout=subprocess.PIPE, text=True).stdout.strip(),
    }
    log(f"bench: {machine['nproc']} CPUs, kernel {machine['kernel']}, load {load_before}; logs in {workdir}")

    results, raw = {}, []

    def on_term(signum, frame):  # stop cleanly: `finally` blocks stop the running server
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    # correctness gate: group isolation, opcodes, raw payloads, no echo to the
    # publisher, no history for late subscribers (bench/peers/check.js)
    checks = {}
    for name in servers:
        srv = Server(name, ports.get(), workdir)
        try:
            srv.start()
            p = subprocess.run(["node", os.path.join(BENCH, "peers", "check.js"), str(srv.port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
            fails = [l for l in p.stdout.splitlines() if l.startswith("FAIL")]
            if p.returncode == 0:
                checks[name] = "pass"
            elif name == "nchan" and fails and all(
                    l.startswith(("FAIL pubA", "FAIL pubB")) and "queued messages" in l for l in fails):
                checks[name] = "pass (publisher gets channel-info replies)"
            else:
                checks[name] = "FAIL"
            runlog.write(f"check {name}:\n{p.stdout}\n")
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            checks[name] = "FAIL"
            runlog.write(f"check {name}: {e}\n")
        finally:
            srv.stop()
        log(f"check {name}: {checks[name]}")

    def one(sc, name, workers=None, server_cpus=None, client_cpus=None, tag=None):
        srv = Server(name, ports.get(), workdir, workers=workers, cpus=server_cpus)
        label = tag or name
        try:
            srv.start()
        except RuntimeError as e:
            log(f"  {sc} {label}: cannot start: {e}")
            return {"rc": -1, "stderr": f"server did not start: {e}"}
        try:
            r = run_bench(scen[sc]["args"], srv, a.threads, client_cpus, runlog)
        finally:
            srv.stop()
        r.update({"scenario": sc, "server": name, "tag": label, "workers": workers,
                  "server_cpus": server_cpus, "client_cpus": client_cpus})
        raw.append(r)
        if "delivered" in r:
            log(f"  {sc} {label:>10}: ok {r.get('connections_ok')} delivered "
                f"{r.get('delivered')}/{r.get('expected')} {r.get('deliveries_per_sec', 0):.0f}/s "
                f"p99 {r.get('p99_ms')} ms cpu/1k {r.get('tree_cpu_us_per_1k')} "
                f"(hb {r.get('server_cpu_us_per_1k')}) mem/conn {r.get('tree_pss_per_conn_bytes')}")
        else:
            log(f"  {sc} {label:>10}: FAILED rc={r.get('rc')} {r.get('stderr', '')[-300:]}")
        time.sleep(1)
        return r

    for sc in scen_list:
        log(f"{sc}: {scen[sc]['desc']}")
        for name in servers:
            results[(sc, name)] = one(sc, name)

    # herald: workers 1 vs 2 and pinning, on S3
    workers_rows = []
    if not a.no_workers and "herald" in servers and "S3" in scen_list and NPROC >= 2:
        log("S3 herald: workers and pinning")
        for w, scpu, ccpu, label in [(1, None, None, "--workers 1"),
                                     (2, None, None, "--workers 2"),
                                     (1, "0", "1", "--workers 1, server on CPU 0, herald-bench on CPU 1"),
                                     (2, "0", "1", "--workers 2, both on CPU 0, herald-bench on CPU 1")]:
            r = one("S3", "herald", workers=w, server_cpus=scpu, client_cpus=ccpu, tag=f"w{w}{'p' if scpu else ''}")
            workers_rows.append((label, r))

    ring_out = ""
    if not a.no_ring:
        log("ring microbenchmark")
        rb = os.path.join(BUILD, "ring_bench")
        rargs = ["--items", "1000000", "--reps", "1"] if a.quick else ["--items", "10000000", "--reps", "3"]
        try:
            p = subprocess.run([rb] + rargs, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240)
            ring_out = p.stdout
        except (OSError, subprocess.TimeoutExpired) as e:
            ring_out = f"ring_bench failed: {e}"

    extra_out = []
    if extras:
        extra_out = run_extras(extras, a.quick, a.duration,
                               dict(ports=ports, workdir=workdir, threads=a.threads, runlog=runlog, raw=raw))

    machine["loadavg_after"] = open("/proc/loadavg").read().strip()
    machine["wall_seconds"] = round(time.time() - t_start)

    out = []
    out.append("# herald side-by-side benchmark\n")
    out.append(f"- date: {machine['date']}; herald commit {machine['herald_git']}")
    out.append(f"- machine: {machine['nproc']} CPUs ({machine['cpu']}), kernel {machine['kernel']}")
    out.append(f"- load average before: {machine['loadavg_before']}; after: {machine['loadavg_after']}")
    out.append(f"- run: `bench/run.sh {' '.join(sys.argv[1:])}`, {machine['wall_seconds']} s wall"
               f"{' (QUICK: short durations, not comparable to full runs)' if a.quick else ''}")
    out.append(f"- load generator: build/herald-bench --threads {a.threads}, same machine; servers on 127.0.0.1, "
               f"one at a time, fresh for every scenario; herald --workers {NPROC}, nginx worker_processes "
               f"{NPROC}, Go GOMAXPROCS default ({NPROC}), Node single-threaded")
    out.append("- server CPU and memory: sampled from /proc over the whole server process tree during the "
               "measured phase (PSS for memory, so nginx's shared pages count once)\n")
    out.append("## Scenarios\n")
    for sc in scen_list:
        out.append(f"- {sc}: {scen[sc]['desc']}: `herald-bench {' '.join(scen[sc]['args'])}`")
    out.append("\n## Results (↑ higher is better, ↓ lower is better; peers' ratio to herald in parentheses)\n")
    out.append(render_table(results, servers, scen_list))
    out.append("| correctness check (bench/peers/check.js) | " + " | ".join(checks.get(s, "n/a") for s in servers) + " |")
    loads = []
    for sc in scen_list:
        v = [r.get("load1_before") for r in raw if r.get("scenario") == sc and r.get("load1_before") is not None]
        if v:
            loads.append(f"{sc} {min(v):.2f}–{max(v):.2f}")
    if loads:
        out.append("\n1-minute load average at the start of each run (the machine is shared): " + "; ".join(loads))
    if workers_rows:
        out.append("\n## herald, S3 saturation: workers and CPU pinning (taskset)\n")
        out.append("| herald configuration | deliveries/s | p99 | server CPU per 1k deliveries | delivered |")
        out.append("| --- | ---: | ---: | ---: | ---: |")
        for label, r in workers_rows:
            if "delivered" in r:
                e = r.get("expected") or 0
                out.append(f"| {label} | {fmt_num(r.get('deliveries_per_sec'), 'rate')} | "
                           f"{fmt_num(r.get('p99_ms'), 'ms')} | {fmt_num(r.get('tree_cpu_us_per_1k'), 'us')} | "
                           f"{fmt_num(100.0 * r['delivered'] / e if e else None, 'pct')} |")
            else:
                out.append(f"| {label} | failed | | | |")
    if ring_out:
        out.append("\n## Ring microbenchmark (bench/ring/ring_bench.c)\n")
        out.append(ring_out.strip())
    out += extra_out
    if "nchan" in servers:
        out.append("\nNotes: nginx+Nchan answers every websocket publish with a channel-info text message to the "
                   "publisher (not the message itself; none of the directives of the Debian build, nchan 1.3.6, turns it off); herald-bench counts those as "
                   "'unexpected' and they are not part of any metric above.")
    text = "\n".join(out) + "\n"
    print(text)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(text)
    with open(os.path.splitext(a.out)[0] + ".jsonl", "w") as f:
        f.write(json.dumps({"machine": machine}) + "\n")
        for r in raw:
            f.write(json.dumps(r) + "\n")
    log(f"written: {a.out} (raw: {os.path.splitext(a.out)[0]}.jsonl; server logs: {workdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
