"""Helpers shared by the hostile-client tests, on top of tests/integration/herald_helpers.py.

Everything a test needs but cannot get is a failure, never a skip: a missing metric, a missing
helper binary or an unusable loopback address all fail with a message that says what is missing.
"""

import select
import socket
import threading
import time

from conftest import binary_is_sanitized, herald_bin
from herald_helpers import HOST, OP_PING, build_frame, parse_prometheus, read_response

# ASan/TSan builds are ~3-10x slower: counts shrink and time margins grow, the assertions stay.
SANITIZED = binary_is_sanitized(herald_bin())

# ASan keeps freed blocks in a quarantine (256 MB by default) that would look like growth; a small one
# keeps VmRSS meaningful. Harmless for other builds.
SMALL_QUARANTINE = {"ASAN_OPTIONS": "quarantine_size_mb=1"}


def scaled(n, divisor=4, minimum=1):
    """n in a normal build, n/divisor in a sanitized one."""
    return max(minimum, n // divisor) if SANITIZED else n


def slack(seconds, factor=3.0):
    """A time bound: as given in a normal build, factor times looser in a sanitized one."""
    return seconds * factor if SANITIZED else seconds


def http_get(path, host="x", extra=""):
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def connect(port, host=HOST, rcvbuf=None, timeout=5.0, family=socket.AF_INET):
    """A TCP connection with TCP_NODELAY; rcvbuf (set before connect, so the window stays small) makes a
    client that does not read fill its buffers quickly."""
    s = socket.socket(family, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_until_eof(sock, timeout):
    """Everything the peer sends until it closes. Returns (bytes, closed): closed is False when the
    peer was still open at the deadline. A reset counts as closed."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while True:
        rem = deadline - time.monotonic()
        if rem <= 0:
            return bytes(data), False
        sock.settimeout(rem)
        try:
            d = sock.recv(1 << 20)
        except socket.timeout:
            return bytes(data), False
        except (ConnectionResetError, BrokenPipeError):
            return bytes(data), True
        if not d:
            return bytes(data), True
        data += d


def tcp_wmem_max():
    """Largest send buffer TCP autotuning may give a socket: what a client that never reads must fill
    before anything waits in the server's own queue."""
    with open("/proc/sys/net/ipv4/tcp_wmem") as f:
        return int(f.read().split()[2])


# --------------------------------------------------------------------------
# ping floods
# --------------------------------------------------------------------------

FILL_LEN = 125      # the largest ping payload: the most pong bytes per ping


def fill_payload(i):
    return (b"F%07d" % i).ljust(FILL_LEN, b".")


def fill_count():
    """Enough 127-byte pongs to fill the largest send buffer autotuning can give the server's socket, a
    client's small receive buffer and then some: past this, pongs can only wait in the server."""
    return (tcp_wmem_max() + 512 * 1024) // (FILL_LEN + 2)


def ping_flood_bytes(n_fill, n_empty, last=None):
    """The issue's attack as one buffer of masked frames: n_fill 125-byte pings (numbered) to fill the
    kernel buffers, then n_empty empty pings (2-byte pongs that cost a naive server ~300 bytes each),
    then one ping carrying `last`."""
    fill = b"".join(build_frame(OP_PING, fill_payload(i)) for i in range(n_fill))
    tail = build_frame(OP_PING, last) if last is not None else b""
    return fill + build_frame(OP_PING, b"") * n_empty + tail


# --------------------------------------------------------------------------
# metrics and process state
# --------------------------------------------------------------------------

def scrape(port, host=HOST):
    """/metrics as {sample: value}, over IPv4 or IPv6 (host "::1")."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = connect(port, host, family=family)
    try:
        s.sendall(http_get("/metrics", extra="Connection: close\r\n"))
        r, _ = read_response(s, timeout=10)
    finally:
        s.close()
    assert r.status == 200, f"/metrics answered {r!r}"
    return parse_prometheus(r.body.decode())[0]


def metric_of(samples, name):
    """One sample; a missing name fails: the issue 8 metrics are part of the contract under test."""
    assert name in samples, f"metric {name} missing from /metrics"
    return samples[name]


def metric(port, name):
    return metric_of(scrape(port), name)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class RssWatch(threading.Thread):
    """Samples a process's VmRSS every 20 ms; peak_kb is the highest seen. Use as a context manager."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.baseline_kb = rss_kb(pid)
        self.peak_kb = self.baseline_kb
        self.samples = 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                self.peak_kb = max(self.peak_kb, rss_kb(self.pid))
            except (OSError, AssertionError):
                return
            self.samples += 1
            time.sleep(0.02)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self._halt.set()
        self.join(5)

    def assert_growth_below(self, mib, what):
        grew = (self.peak_kb - self.baseline_kb) / 1024
        assert self.samples >= 5, f"{what}: the RSS sampler did not run"
        assert grew < mib, (f"{what}: server RSS grew by {grew:.1f} MiB (baseline "
                            f"{self.baseline_kb / 1024:.1f} MiB, peak {self.peak_kb / 1024:.1f} MiB), "
                            f"bound {mib} MiB")


# --------------------------------------------------------------------------
# worker responsiveness
# --------------------------------------------------------------------------

def healthz_seconds(port, timeout):
    """Seconds for GET /healthz on a fresh connection (the kernel spreads fresh connections over the
    workers' SO_REUSEPORT listeners, so a few of them reach every worker)."""
    t0 = time.monotonic()
    s = connect(port, timeout=timeout)
    try:
        s.sendall(http_get("/healthz", extra="Connection: close\r\n"))
        data, _ = read_until_eof(s, timeout)
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"ok\n"), f"/healthz answered {data[:100]!r}"
    return time.monotonic() - t0


class HealthProbe(threading.Thread):
    """While a hostile client runs: every round, `fanout` fresh /healthz requests (so both workers are
    almost surely asked). Records the slowest answer; a failure or timeout counts as `timeout` s.
    `request(timeout)` makes one request and returns its seconds (default: plain HTTP to port)."""

    def __init__(self, port, fanout=4, interval=0.05, timeout=10.0, request=None):
        super().__init__(daemon=True)
        self.fanout, self.interval, self.timeout = fanout, interval, timeout
        self.request = request or (lambda t: healthz_seconds(port, t))
        self.worst = 0.0
        self.requests = 0
        self.errors = []
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            for _ in range(self.fanout):
                try:
                    t = self.request(self.timeout)
                except Exception as e:   # any failure to answer is what we are looking for
                    self.errors.append(repr(e))
                    t = self.timeout
                self.worst = max(self.worst, t)
                self.requests += 1
            self._halt.wait(self.interval)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self._halt.set()
        self.join(self.timeout + 5)

    def assert_fast(self, bound, what):
        assert self.requests >= 8, f"{what}: only {self.requests} /healthz probes ran"
        assert not self.errors, f"{what}: /healthz failed during the attack: {self.errors[:3]}"
        assert self.worst < bound, (f"{what}: a fresh GET /healthz took {self.worst:.2f}s (bound {bound}s): "
                                    f"the attacked worker stalled")


# --------------------------------------------------------------------------
# slow clients
# --------------------------------------------------------------------------

class Trickle:
    """What happened to a request sent a little at a time: t_first (its first byte went out), t_closed
    (the server closed; None if still open at the deadline), the answer bytes, the bytes we sent."""

    def __init__(self):
        self.t_first = self.t_closed = None
        self.answer = b""
        self.sent = 0

    def closed_after(self):
        assert self.t_closed is not None, (f"the server was still open at the deadline after {self.sent} "
                                           f"bytes, answer so far {self.answer[:120]!r}")
        return self.t_closed - self.t_first


def trickle(port, chunks, interval, deadline_s, prefix=b""):
    """Sends prefix at once, then one chunk per interval, reading whatever the server answers, until the
    server closes or deadline_s after the start. Returns a Trickle (t_first is when prefix, or the first
    chunk, went out). A failed send means the server is gone: it ends the trickle like EOF."""
    s = connect(port)
    r = Trickle()
    end = time.monotonic() + deadline_s
    pending = list(chunks)
    next_send = time.monotonic()
    try:
        if prefix:
            s.sendall(prefix)
            r.t_first, r.sent = time.monotonic(), len(prefix)
            next_send += interval
        while time.monotonic() < end:
            now = time.monotonic()
            if pending and now >= next_send:
                chunk = pending.pop(0)
                try:
                    s.sendall(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    r.t_closed = time.monotonic()
                    return r
                r.t_first = r.t_first or now
                r.sent += len(chunk)
                next_send += interval
            wait = max(0.0, min(end, next_send if pending else end) - time.monotonic())
            if not select.select([s], [], [], wait)[0]:
                continue
            try:
                d = s.recv(65536)
            except ConnectionResetError:
                d = b""
            if not d:
                r.t_closed = time.monotonic()
                return r
            r.answer += d
        return r
    finally:
        s.close()
