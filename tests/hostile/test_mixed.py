"""Issue 8: hostile connections beside normal ones. 1,000 ordinary subscribers receive a steady stream
(HTTP publishes at 50 msg/s for 8 s) while, on the same server, a ping flooder never reads its pongs,
slowloris clients trickle request heads, a pipelining client never reads its /metrics answers and a
client keeps sending invalid frames. Every subscriber must get every message, in order, and the p99
publish -> receive latency must stay low.

The subscribers are raw sockets multiplexed with epoll in two reader processes (1,000 websockets
clients in one Python process would measure Python, not herald).
"""

import functools
import multiprocessing
import select
import threading
import time
import traceback
from array import array

from herald_helpers import OP_PING, OP_PONG, OP_TEXT, Publisher, RawWS, build_frame, take_frames
from hostile_helpers import (SANITIZED, connect, fill_count, http_get, metric_of, ping_flood_bytes, scaled, scrape,
                             slack, trickle)

GROUP = "mixed"
RATE = 50                       # messages per second
SECONDS = 8.0
N_SUBS = scaled(1000, 4)
READERS = 2
P99_BOUND = 1.0 if SANITIZED else 0.25
PAYLOAD_LEN = 100


# --------------------------------------------------------------------------
# normal subscribers (reader processes)
# --------------------------------------------------------------------------

def reader_main(port, n_subs, n_msgs, deadline, conn):
    """Runs in a child process: subscribes n_subs raw sockets, reports "ready", then reads until every
    socket has n_msgs messages or the deadline, and sends back (counts, errors, latencies as bytes).
    Anything unexpected is sent back as its traceback instead."""
    try:
        subs = [RawWS.connect(port, f"/ws?groups={GROUP}", timeout=10) for _ in range(n_subs)]
        conn.send("ready")
        conn.send(read_stream(subs, n_msgs, deadline))
    except BaseException:
        conn.send(traceback.format_exc())


def read_stream(subs, n_msgs, deadline):
    ep = select.epoll()
    by_fd = {}
    for k, ws in enumerate(subs):
        ws.sock.setblocking(False)
        ep.register(ws.sock.fileno(), select.EPOLLIN)
        by_fd[ws.sock.fileno()] = k
    counts = [0] * len(subs)
    bufs = [bytearray(ws.buf) for ws in subs]
    lat = array("d")
    errors = []
    done = 0
    while done < len(subs) and time.monotonic() < deadline:
        for fd, _ in ep.poll(0.1):
            k = by_fd[fd]
            try:
                d = subs[k].sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                d = b""
                errors.append(f"subscriber {k}: {e!r}")
            if not d:
                errors.append(f"subscriber {k}: closed by the server after {counts[k]} messages")
                ep.unregister(fd)
                continue
            now = time.monotonic()
            buf = bufs[k]
            buf += d
            for f in take_frames(buf):
                if f.opcode == OP_PING:
                    # herald pings a client silent for --ping-interval (25 s), which a slow
                    # (sanitized, parallel) run can reach: answer it as a real client does
                    subs[k].sock.sendall(build_frame(OP_PONG, f.payload))
                    continue
                if f.opcode != OP_TEXT or not f.fin:
                    errors.append(f"subscriber {k}: unexpected {f!r}")
                    continue
                seq, ts = f.payload.split(b" ", 2)[:2]
                if int(seq) != counts[k]:
                    errors.append(f"subscriber {k}: message {int(seq)} where {counts[k]} was due")
                counts[k] = int(seq) + 1
                lat.append(now - float(ts))
                if counts[k] == n_msgs:
                    done += 1
    for ws in subs:
        ws.close()
    return counts, errors[:20], lat.tobytes()


def expect_from(pipe, timeout, what):
    assert pipe.poll(timeout), f"a reader process did not {what} within {timeout:.0f}s"
    got = pipe.recv()
    assert not isinstance(got, str) or got == "ready", f"a reader process failed:\n{got}"
    return got


# --------------------------------------------------------------------------
# hostile clients (threads of the test process)
# --------------------------------------------------------------------------

class Hostile(threading.Thread):
    """Repeats one attack until stopped; counts rounds and keeps the first unexpected error."""

    def __init__(self, port, stop, attack):
        super().__init__(daemon=True)
        self.port, self.stop, self.attack = port, stop, attack
        self.rounds = 0
        self.unexpected = []

    def run(self):
        while not self.stop.is_set():
            try:
                self.attack(self)
                self.rounds += 1
            except (OSError, TimeoutError):
                time.sleep(0.01)        # the server closed on us: that is its right, go again
            except AssertionError as e:
                self.unexpected.append(str(e))
                return


EMPTY_PINGS = build_frame(OP_PING, b"") * 10000         # 60 KB


@functools.lru_cache(maxsize=1)
def kernel_fill():
    return ping_flood_bytes(fill_count(), 0)


def ping_flood(h):
    """The issue's ping flood: fills the kernel buffers with 125-byte pings, then sends empty pings
    without end, never reading a pong."""
    ws = RawWS.connect(h.port, "/publish?group=hostile", rcvbuf=4096)
    try:
        ws.sock.settimeout(5.0)
        ws.send(kernel_fill())
        while not h.stop.is_set():
            ws.send(EMPTY_PINGS)
            time.sleep(0.005)
    finally:
        ws.close()


SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 60


def slowloris(h):
    """One byte a second; the head deadline (2 s here) ends it, and we start over."""
    r = trickle(h.port, [bytes([b]) for b in SLOW_HEAD], 1.0, 6)
    assert r.t_closed is not None and r.answer.startswith(b"HTTP/1.1 408"), \
        f"slowloris not cut with 408: {r.answer[:80]!r}"


def pipeline_never_read(h):
    """2000 pipelined GET /metrics, never read; held until the write timeout (4 s here) can end it."""
    s = connect(h.port, rcvbuf=4096)
    try:
        s.sendall(http_get("/metrics") * 2000)
        h.stop.wait(5)
    finally:
        s.close()


BAD_FRAMES = [
    (build_frame(OP_TEXT, b"unmasked", mask=False), 1002),
    (build_frame(OP_TEXT, b"rsv", rsv=4), 1002),
    (build_frame(0x3, b"reserved opcode"), 1002),
    (build_frame(OP_TEXT, b"\xff\xfe not utf-8"), 1007),
    (build_frame(OP_PING, b"x" * 126), 1002),
]


def bad_frames(h):
    frame, code = BAD_FRAMES[h.rounds % len(BAD_FRAMES)]
    ws = RawWS.connect(h.port, "/ws?groups=hostile")
    try:
        ws.send(frame)
        ws.expect_close(code, timeout=slack(5))
    finally:
        ws.close()
    time.sleep(0.05)


# --------------------------------------------------------------------------

def test_normal_subscribers_unaffected_by_hostile_neighbours(herald):
    srv = herald("--header-timeout", "2", "--write-timeout", "4", "--client-frame-rate", "0")
    n_msgs = int(RATE * SECONDS)
    before = scrape(srv.port)
    ctx = multiprocessing.get_context("fork")     # before any thread of ours exists
    readers = []
    deadline = time.monotonic() + 30 + slack(SECONDS + 20)
    for _ in range(READERS):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=reader_main, args=(srv.port, N_SUBS // READERS, n_msgs, deadline, child))
        p.start()
        readers.append((p, parent))
    stop = threading.Event()
    hostiles = {}
    kernel_fill()                       # built before the clock starts
    try:
        for _, pipe in readers:
            assert expect_from(pipe, slack(30), "subscribe its share") == "ready"
        for name, attack, copies in [("ping flood", ping_flood, 1), ("slowloris", slowloris, 4),
                                     ("pipeline never read", pipeline_never_read, 1),
                                     ("bad frames", bad_frames, 1)]:
            hostiles[name] = [Hostile(srv.port, stop, attack) for _ in range(copies)]
        for hs in hostiles.values():
            for h in hs:
                h.start()
        time.sleep(0.5)                 # the attacks are under way

        pub = Publisher(srv.port)
        t0 = time.monotonic()
        for i in range(n_msgs):
            delay = t0 + i / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            body = f"{i:06d} {time.monotonic():.6f} ".ljust(PAYLOAD_LEN, "x")
            pub.publish(body, group=GROUP, content_type="text/plain")
        pub.close()

        results = []
        for p, pipe in readers:
            results.append(expect_from(pipe, max(1.0, deadline - time.monotonic()), "finish"))
            p.join(10)
    finally:
        stop.set()
        for hs in hostiles.values():
            for h in hs:
                h.join(10)
        for p, _ in readers:
            if p.is_alive():
                p.kill()

    counts = [c for r in results for c in r[0]]
    errors = [e for r in results for e in r[1]]
    lat = sorted(x for r in results for x in array("d", r[2]))
    p99 = lat[int(len(lat) * 0.99)] if lat else float("inf")
    print(f"{len(counts)} subscribers x {n_msgs} messages: p50 {lat[len(lat) // 2] * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms; hostile rounds "
          + ", ".join(f"{k} {sum(h.rounds for h in v)}" for k, v in hostiles.items()))
    assert not errors, f"normal subscribers saw: {errors[:5]}"
    short = [c for c in counts if c != n_msgs]
    assert not short, f"{len(short)} subscribers missed messages (e.g. got {short[:5]} of {n_msgs})"
    assert p99 < P99_BOUND, f"p99 publish->receive latency {p99 * 1000:.0f} ms (bound {P99_BOUND * 1000:.0f} ms)"

    # the attacks really ran and met the limits
    for name, hs in hostiles.items():
        unexpected = [u for h in hs for u in h.unexpected]
        assert not unexpected, f"{name}: {unexpected[0]}"
    assert sum(h.rounds for h in hostiles["slowloris"]) >= 4, "the slowloris clients were not cut by 408"
    assert sum(h.rounds for h in hostiles["bad frames"]) >= 20, "too few invalid frames were refused"
    after = scrape(srv.port)
    grew = {k: metric_of(after, k) - before.get(k, 0)
            for k in ("herald_pongs_coalesced_total", 'herald_request_timeouts_total{phase="head"}',
                      "herald_protocol_errors_total", "herald_write_timeouts_total")}
    print("metrics:", grew)
    assert all(v > 0 for v in grew.values()), f"a hostile client left no trace in /metrics: {grew}"
