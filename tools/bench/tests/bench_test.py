#!/usr/bin/env python3
"""Correctness tests of herald-bench itself (run by CTest).

  bench_test.py --bench PATH fake-clean|fake-faults|fake-groups|fake-saturate|fake-idle|args
  bench_test.py --bench PATH --herald PATH herald|herald-tls|herald-json|herald-msgpack|herald-cluster|herald-deflate|herald-sse

The fake-* cases run herald-bench against fake_server.py, which injects
drops, duplicates and reorderings and counts exactly what it did; the test
asserts that herald-bench's JSON report agrees with those counts. No timing
is asserted anywhere. The herald case runs a small clean load against the
real server and expects zero loss, duplication and reordering; the other
herald-* cases do the same over TLS (self-signed certificate made by the
openssl CLI), with JSON/msgpack envelopes, and against two cluster nodes
sharing a redis-server (failing, saying what to install, when redis-server or
openssl is missing: a test that cannot run must not pass as skipped).
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = os.path.join(HERE, "fake_server.py")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def eq(report, key, want, what=None):
    got = report.get(key)
    check(got == want, "%s == %s (got %r)" % (what or key, want, got))


def start_server(cmd, pattern):
    """Starts a server that prints `... listening on 127.0.0.1:PORT` on stderr."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        m = re.search(pattern, line)
        if m:
            # keep draining stderr so a chatty server never blocks on the pipe
            threading.Thread(target=lambda: [sys.stderr.write("server: " + l)
                                             for l in proc.stderr], daemon=True).start()
            return proc, int(m.group(1))
    proc.kill()
    proc.wait()
    sys.exit("server did not report its port: %s" % " ".join(cmd))


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bench(path, port, *args, expect_rc=0):
    """port: a number (--port) or a list of them (--ports A,B)."""
    where = (["--ports", ",".join(str(p) for p in port)] if isinstance(port, (list, tuple))
             else ["--port", str(port)])
    cmd = [path] + where + ["--json"] + [str(a) for a in args]
    print("$ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    sys.stderr.write(r.stderr)
    print(r.stdout.strip())
    check(r.returncode == expect_rc, "exit status %d (got %d)" % (expect_rc, r.returncode))
    if r.returncode != 0:
        return {}
    return json.loads(r.stdout)


class Fake:
    def __init__(self, *flags):
        self.tmp = tempfile.mkdtemp(prefix="hb-fake-")
        self.stats_file = os.path.join(self.tmp, "stats.json")
        cmd = [sys.executable, FAKE, "--stats-file", self.stats_file] + list(flags)
        self.proc, self.port = start_server(cmd, r"listening on 127\.0\.0\.1:(\d+)")

    def finish(self):
        stop(self.proc)
        with open(self.stats_file) as f:
            s = json.load(f)
        print("fake server counted: %s" % json.dumps(s))
        return s


def agree(r, s, subs_total, pubs_total, disconnects=0):
    """herald-bench's counts against the fake server's ground truth."""
    eq(r, "connections_ok", subs_total + pubs_total)
    eq(r, "connections_failed", 0)
    eq(r, "published", s["published"], "published (fake received)")
    eq(r, "expected", s["routed"], "expected (fake routed)")
    eq(r, "lost", s["dropped"], "lost (fake dropped)")
    eq(r, "delivered", s["routed"] - s["dropped"], "delivered (routed - dropped)")
    eq(r, "duplicated", s["duplicated"], "duplicated (fake duplicated)")
    eq(r, "out_of_order", s["reordered"], "out_of_order (fake reordered)")
    eq(r, "invalid", 0)
    eq(r, "unexpected", 0)
    eq(r, "protocol_errors", 0)
    eq(r, "disconnects", disconnects)
    check(s["unmasked_frames"] == 0, "every client frame was masked")
    check(s["pongs_bad"] == 0, "no pong with a wrong payload")
    check(s["client_closes"] == subs_total + pubs_total, "every connection sent a close frame")


def case_fake_clean(a):
    f = Fake("--ping", "--fragment-every", "7", "--split-every", "23")
    r = bench(a.bench, f.port, "--subscribers", 20, "--publishers", 1, "--rate", 200,
              "--duration", 1)
    s = f.finish()
    if not r:
        return
    agree(r, s, 20, 1)
    eq(r, "lost", 0)
    check(r["delivered"] > 0, "some deliveries")
    check(s["fragmented"] > 0 and s["split"] > 0, "fragments and split writes happened")
    eq(r, "pings_answered", s["pings_sent"], "pings_answered (fake pinged)")
    eq(s, "pongs_ok", s["pings_sent"], "fake got every pong")
    check(r["p50_ms"] > 0 and r["max_ms"] >= r["p99_ms"] >= r["p50_ms"], "latency quantiles ordered")


def case_fake_faults(a):
    f = Fake("--drop-every", "13", "--dup-every", "17", "--reorder-every", "5")
    r = bench(a.bench, f.port, "--subscribers", 12, "--publishers", 1, "--rate", 150,
              "--duration", 1)
    s = f.finish()
    if not r:
        return
    agree(r, s, 12, 1)
    check(s["dropped"] > 0 and s["duplicated"] > 0 and s["reordered"] > 0, "all faults happened")


def case_fake_kick(a):
    f = Fake("--kick-after", "40", "--reorder-every", "6")
    r = bench(a.bench, f.port, "--subscribers", 5, "--publishers", 1, "--rate", 100,
              "--duration", 1)
    s = f.finish()
    if not r:
        return
    eq(s, "kicked", 1, "fake kicked one subscriber")
    agree(r, s, 5, 1, disconnects=1)
    check(r["lost"] > 0, "the kicked subscriber's messages are lost")
    check("1008" in (r.get("first_error") or ""), "the close code is reported")


def case_fake_groups(a):
    f = Fake("--drop-every", "11", "--dup-every", "7", "--reorder-every", "4",
             "--fragment-every", "9", "--ping")
    r = bench(a.bench, f.port, "--subscribers", 30, "--publishers", 6, "--groups", 3,
              "--rate", 240, "--duration", 1, "--threads", 2, "--source-ips", 3,
              "--connect-concurrency", 4)
    s = f.finish()
    if not r:
        return
    agree(r, s, 30, 6)
    check(s["dropped"] > 0 and s["duplicated"] > 0 and s["reordered"] > 0, "all faults happened")
    eq(r, "pings_answered", s["pings_sent"], "pings_answered (fake pinged)")


def case_fake_saturate(a):
    f = Fake("--drop-every", "50", "--dup-every", "31", "--reorder-every", "9")
    r = bench(a.bench, f.port, "--subscribers", 8, "--publishers", 2, "--saturate",
              "--window", 8, "--duration", 1, "--grace", 0.5)
    s = f.finish()
    if not r:
        return
    agree(r, s, 8, 2)
    check(r["published"] > 0, "published something")
    check(r["deliveries_per_sec"] > 0, "deliveries/s reported")
    # every dropped message (the same k for all subscribers) pins a window slot
    check(r["window_timeouts"] > 0, "window slots of dropped messages timed out")


def case_fake_idle(a):
    f = Fake()
    r = bench(a.bench, f.port, "--subscribers", 25, "--idle", "--duration", 0.3,
              "--server-pid", f.proc.pid)
    s = f.finish()
    if not r:
        return
    eq(r, "connections_ok", 25)
    eq(r, "published", 0)
    eq(s, "subscribers", 25, "fake saw 25 subscribers")
    check(isinstance(r["server_rss_kb"], int) and r["server_rss_kb"] > 0, "server RSS reported")


def case_args(a):
    def run(*args):
        return subprocess.run([a.bench] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=30).returncode
    for bad in (["--size", "10"], ["--host", "10.0.0.1"], ["--bogus"], ["--port", "0"],
                ["--rate", "x"], ["--publishers", "0"], ["--saturate", "--idle"], ["extra"],
                ["--format", "xml"], ["--ports", "1,,2"], ["--ports", "1,70000"],
                ["--ports", ",".join(["9"] * 65)], ["--port", "1", "--ports", "2,3"],
                ["--pub-ports-all"], ["--server-pid", "1,x"]):
        check(run(*bad) == 2, "exit 2 for %s" % " ".join(bad))
    check(run("--help") == 0, "exit 0 for --help")
    usage = subprocess.run([a.bench, "--help"], stdout=subprocess.PIPE, text=True).stdout
    for opt in ("--tls", "--ports", "--pub-ports-all", "--format"):
        check(opt in usage, "--help documents %s" % opt)
    # a port nobody listens on: every connection fails -> setup failure
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    check(run("--port", str(port), "--subscribers", "3", "--duration", "0.1") == 1,
          "exit 1 when nothing accepts connections")
    # a server that accepts TCP but never answers the upgrade: bounded by
    # --connect-timeout, then a setup failure (subprocess timeout = hang)
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(16)
    try:
        r = subprocess.run([a.bench, "--port", str(mute.getsockname()[1]), "--subscribers", "3",
                            "--connect-timeout", "0.3", "--json"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=30)
    finally:
        mute.close()
    check(r.returncode == 1, "exit 1 when handshakes time out (got %d)" % r.returncode)
    check("timed out" in r.stderr, "the timeout is named on stderr")


def case_herald(a):
    if not a.herald or not os.access(a.herald, os.X_OK):
        sys.exit("no herald binary: %r" % a.herald)
    proc, port = start_server([a.herald, "--listen", "127.0.0.1:0"],
                              r"listening on [0-9.]+:(\d+)")
    try:
        r = bench(a.bench, port, "--subscribers", 50, "--publishers", 2, "--groups", 2,
                  "--rate", 200, "--duration", 2, "--server-pid", proc.pid)
    finally:
        stop(proc)
    if not r:
        return
    eq(r, "connections_ok", 52)
    eq(r, "connections_failed", 0)
    check(r["published"] > 0, "published something")
    eq(r, "expected", r["published"] * 25, "expected == published x 25")
    eq(r, "delivered", r["expected"], "delivered == expected")
    for k in ("lost", "duplicated", "out_of_order", "invalid", "unexpected", "disconnects",
              "protocol_errors"):
        eq(r, k, 0)
    check(isinstance(r["server_cpu_seconds"], float), "server CPU reported")


def clean(r, subs_per_group, what=""):
    """A load on a healthy server: every expected delivery, nothing else."""
    check(r["published"] > 0, "published something" + what)
    eq(r, "expected", r["published"] * subs_per_group,
       "expected == published x %d%s" % (subs_per_group, what))
    eq(r, "delivered", r["expected"], "delivered == expected" + what)
    for k in ("lost", "duplicated", "out_of_order", "invalid", "unexpected", "size_mismatch",
              "disconnects", "protocol_errors", "skipped"):
        eq(r, k, 0, k + what)


def need_herald(a):
    if not a.herald or not os.access(a.herald, os.X_OK):
        sys.exit("no herald binary: %r" % a.herald)


def cannot_run(why):
    """A dependency is missing: fail loudly (scripts/deps.sh test installs it)."""
    sys.exit("FAIL cannot run: " + why)


def case_herald_tls(a):
    need_herald(a)
    openssl = shutil.which("openssl")
    if not openssl:
        cannot_run("no openssl command to make a test certificate")
    tmp = tempfile.mkdtemp(prefix="hb-tls-")
    key, cert = os.path.join(tmp, "k.pem"), os.path.join(tmp, "c.pem")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=localhost"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc, port = start_server([a.herald, "--listen", "127.0.0.1:0", "--tls-cert", cert,
                               "--tls-key", key], r"listening on [0-9.]+:(\d+)")
    try:
        r = bench(a.bench, port, "--tls", "--subscribers", 50, "--publishers", 2, "--groups", 2,
                  "--rate", 200, "--duration", 2, "--threads", 2, "--server-pid", proc.pid)
        idle = bench(a.bench, port, "--tls", "--idle", "--subscribers", 40, "--duration", 0.3,
                     "--server-pid", proc.pid)
        # without --tls the server refuses the cleartext handshake: a setup failure
        plain = subprocess.run([a.bench, "--port", str(port), "--subscribers", "2",
                                "--connect-timeout", "2", "--duration", "0.1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    finally:
        stop(proc)
    check(plain.returncode == 1, "cleartext against a TLS server: exit 1 (got %d)" % plain.returncode)
    if r:
        eq(r, "tls", True)
        eq(r, "connections_ok", 52)
        eq(r, "connections_failed", 0)
        clean(r, 25)
    if idle:
        eq(idle, "connections_ok", 40, "idle TLS connections_ok")
        check(isinstance(idle["server_rss_per_conn_bytes"], float),
              "server_rss_per_conn_bytes reported for idle TLS")


def case_herald_format(a, fmt):
    need_herald(a)
    proc, port = start_server([a.herald, "--listen", "127.0.0.1:0"], r"listening on [0-9.]+:(\d+)")
    runs = []
    try:
        # sizes: base64 without/with 1/2 padding characters, msgpack bin 8/16
        for size in (128, 100, 1000):
            runs.append((size, bench(a.bench, port, "--format", fmt, "--size", size,
                                     "--subscribers", 30, "--publishers", 2, "--groups", 2,
                                     "--rate", 200, "--duration", 1, "--server-pid", proc.pid)))
        # the raw path: the server must not wrap anything then
        raw = bench(a.bench, port, "--format", "raw", "--subscribers", 10, "--publishers", 1,
                    "--rate", 100, "--duration", 0.5)
    finally:
        stop(proc)
    for size, r in runs:
        if not r:
            continue
        eq(r, "format", fmt, "format (size %d)" % size)
        eq(r, "connections_ok", 32, "connections_ok (size %d)" % size)
        clean(r, 15, " (size %d)" % size)
    if raw:
        eq(raw, "format", "raw")
        clean(raw, 10, " (raw)")


def case_herald_deflate(a):
    """--deflate: every subscriber negotiates permessage-deflate and inflates; JSON payloads of
    several sizes (below and above herald's --compression-min-size), raw and json envelopes. The
    wire bytes per delivery must drop well below the payload size for a 1 KB notification, and
    --compression off must make --deflate fail at the handshake."""
    need_herald(a)
    proc, port = start_server([a.herald, "--listen", "127.0.0.1:0"], r"listening on [0-9.]+:(\d+)")
    runs = []
    try:
        for size, fmt in ((100, "raw"), (1024, "raw"), (20000, "raw"), (1024, "json")):
            runs.append((size, fmt, bench(a.bench, port, "--deflate", "--payload", "json", "--size", size,
                                          "--format", fmt, "--subscribers", 30, "--publishers", 2,
                                          "--groups", 2, "--rate", 200, "--duration", 1,
                                          "--server-pid", proc.pid)))
    finally:
        stop(proc)
    for size, fmt, r in runs:
        what = " (size %d, %s)" % (size, fmt)
        if not r:
            continue
        eq(r, "deflate", True, "deflate" + what)
        eq(r, "connections_ok", 32, "connections_ok" + what)
        clean(r, 15, what)
        if size == 1024 and fmt == "raw":
            check(r["wire_bytes_per_delivery"] < 0.6 * size,
                  "1 KB JSON compressed on the wire: %s bytes per delivery" % r["wire_bytes_per_delivery"])
    proc, port = start_server([a.herald, "--listen", "127.0.0.1:0", "--compression", "off"],
                              r"listening on [0-9.]+:(\d+)")
    try:
        off = subprocess.run([a.bench, "--port", str(port), "--deflate", "--subscribers", "2",
                              "--connect-timeout", "2", "--duration", "0.1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    finally:
        stop(proc)
    check(off.returncode == 1, "--deflate against --compression off: exit 1 (got %d)" % off.returncode)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_healthy(port, deadline):
    """Polls /healthz until the node says ok (its broker connected)."""
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=2) as resp:
                last = resp.read().decode(errors="replace")
        except Exception as e:  # 503 while degraded, or not up yet
            last = getattr(e, "read", lambda: str(e).encode())().decode(errors="replace")
        if last.startswith("ok"):
            return True
        time.sleep(0.1)
    print("node on port %d not healthy: %r" % (port, last))
    return False


def case_herald_cluster(a):
    need_herald(a)
    redis = shutil.which("redis-server")
    if not redis:
        cannot_run("redis-server is not installed (apt-get install redis-server)")
    rport = free_port()
    rproc = subprocess.Popen([redis, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nodes = []
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", rport), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        for _ in range(2):
            nodes.append(start_server([a.herald, "--listen", "127.0.0.1:0", "--workers", "1",
                                       "--broker", "redis://127.0.0.1:%d" % rport],
                                      r"listening on [0-9.]+:(\d+)"))
        ports = [p for _, p in nodes]
        pids = ",".join(str(pr.pid) for pr, _ in nodes)
        time.sleep(0.5)
        deadline = time.monotonic() + 15
        healthy = all(wait_healthy(p, deadline) for p in ports)
        check(healthy, "both nodes report /healthz ok")
        if not healthy:
            return
        r = bench(a.bench, ports, "--subscribers", 40, "--publishers", 2, "--rate", 200,
                  "--duration", 2, "--server-pid", pids)
        # publishers spread over the nodes too; 3 groups over 2 nodes, so every
        # group has subscribers on both and publishers on either
        r2 = bench(a.bench, ports, "--pub-ports-all", "--subscribers", 42, "--publishers", 3,
                   "--groups", 3, "--rate", 210, "--duration", 1)
    finally:
        for pr, _ in nodes:
            stop(pr)
        stop(rproc)
    if r:
        eq(r, "nodes", 2)
        eq(r, "connections_ok", 42)
        clean(r, 40)
        check(isinstance(r["server_cpu_seconds"], float) and r["server_rss_kb"] > 0,
              "server CPU and RSS summed over both PIDs")
    if r2:
        eq(r2, "connections_ok", 45, "connections_ok (--pub-ports-all)")
        clean(r2, 14, " (--pub-ports-all)")


def case_herald_sse(a):
    """--sse against herald: every delivery counted once, in rate and saturation modes and with
    JSON payloads, and --sse refuses envelope formats and --deflate."""
    need_herald(a)
    proc, port = start_server([a.herald, "--listen", "127.0.0.1:0"], r"listening on [0-9.]+:(\d+)")
    try:
        r = bench(a.bench, port, "--subscribers", 50, "--publishers", 2, "--groups", 2,
                  "--rate", 200, "--duration", 2, "--server-pid", proc.pid, "--sse")
        r2 = bench(a.bench, port, "--subscribers", 20, "--saturate", "--window", 16,
                   "--duration", 1, "--sse")
        r3 = bench(a.bench, port, "--subscribers", 10, "--rate", 100, "--duration", 1,
                   "--sse", "--payload", "json")
    finally:
        stop(proc)
    if r:
        eq(r, "connections_ok", 52)
        clean(r, 25, " (--sse)")
    if r2:
        clean(r2, 20, " (--sse --saturate)")
    if r3:
        clean(r3, 10, " (--sse --payload json)")
    p = subprocess.run([a.bench, "--port", "1", "--sse", "--format", "json"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
    eq({"rc": p.returncode}, "rc", 2, "--sse --format json is refused")
    p = subprocess.run([a.bench, "--port", "1", "--sse", "--deflate"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
    eq({"rc": p.returncode}, "rc", 2, "--sse --deflate is refused")
    check("WebSocket extension" in p.stderr, "--sse --deflate says why: " + p.stderr.strip())


CASES = {
    "fake-clean": case_fake_clean, "fake-faults": case_fake_faults,
    "fake-groups": case_fake_groups, "fake-kick": case_fake_kick, "fake-saturate": case_fake_saturate,
    "fake-idle": case_fake_idle, "args": case_args, "herald": case_herald,
    "herald-tls": case_herald_tls, "herald-cluster": case_herald_cluster,
    "herald-json": lambda a: case_herald_format(a, "json"),
    "herald-msgpack": lambda a: case_herald_format(a, "msgpack"),
    "herald-deflate": case_herald_deflate,
    "herald-sse": case_herald_sse,
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bench", required=True)
    p.add_argument("--herald")
    p.add_argument("case", choices=sorted(CASES))
    a = p.parse_args()
    CASES[a.case](a)
    if failures:
        print("%d check(s) failed" % len(failures))
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
