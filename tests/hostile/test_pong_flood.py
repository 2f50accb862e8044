"""Issue 8, item 1: a ping flood from a client that never reads its pongs.

RFC 6455 5.5.3 lets a server answer only the latest of several pings; herald keeps at most one pong
waiting per connection and gives it the payload of the newest ping. The attack: fill the kernel
buffers with 125-byte pings (their pongs are what the kernel holds), then send tens of thousands of
empty pings. A server that queues one pong per ping (behind every other queued control frame) spends
seconds of its worker on it and holds ~300 bytes of memory per 2-byte pong.
"""

import fcntl
import socket
import struct
import termios
import time

import pytest

from herald_helpers import OP_PING, OP_PONG, RawWS, build_frame
from hostile_helpers import (FILL_LEN, SMALL_QUARANTINE, HealthProbe, RssWatch, fill_count, fill_payload, metric,
                             metric_of, ping_flood_bytes, scaled, scrape, slack)

LAST = b"the very last ping"


def fill_index(payload):
    """The index of a fill ping's payload (see ping_flood_bytes), or None for any other payload."""
    if len(payload) == FILL_LEN and payload[:1] == b"F":
        return int(payload[1:8])
    return None


def _tcp_queues(server_port, client_port):
    """(tx_queue, rx_queue) of the server's end of our connection, from /proc/net/tcp."""
    want = (f":{server_port:04X}", f":{client_port:04X}")
    with open("/proc/net/tcp") as f:
        for ln in f.readlines()[1:]:
            fields = ln.split()
            if fields[1].endswith(want[0]) and fields[2].endswith(want[1]):
                tx, rx = fields[4].split(":")
                return int(tx, 16), int(rx, 16)
    return None


def wait_server_consumed(server_port, sock, timeout):
    """Until the server has read every byte we sent (our send queue and its receive queue are empty):
    the flood has been processed, not just sent. Returns the seconds it took."""
    t0 = time.monotonic()
    client_port = sock.getsockname()[1]
    while True:
        unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        q = _tcp_queues(server_port, client_port)
        assert q is not None, "the server's end of the flooding connection is gone from /proc/net/tcp"
        if unsent == 0 and q[1] == 0:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, (f"the server did not read the flood within {timeout}s "
                                                 f"({unsent} bytes unsent, {q[1]} unread)")
        time.sleep(0.02)


def read_pongs_until_last(ws, timeout):
    """Reads (at last) what the server kept for us: pongs up to the one carrying LAST, then a short
    quiet period. Returns the list of pong payloads."""
    pongs = []
    deadline = time.monotonic() + timeout
    while not pongs or pongs[-1] != LAST:
        f = ws.recv_frame(max(0.01, deadline - time.monotonic()))
        assert f is not None, f"EOF after {len(pongs)} pongs, before the pong of the last ping"
        assert f.opcode == OP_PONG, f"unexpected {f!r} after {len(pongs)} pongs"
        pongs.append(f.payload)
    try:
        f = ws.recv_frame(0.3)
        raise AssertionError(f"a frame after the pong of the last ping: {f!r}")
    except TimeoutError:
        pass
    return pongs


@pytest.mark.parametrize("path", ["/publish?group=flood", "/ws?groups=flood"], ids=["publisher", "subscriber"])
def test_ping_flood_coalesces_pongs(herald, path):
    """The flood of a client that never reads: its worker keeps answering, memory stays flat, and when the
    client reads at last it finds a handful of pongs for its ~50k pings, the last one with its last
    ping's payload."""
    srv = herald("--client-frame-rate", "0", env_extra=SMALL_QUARANTINE)   # coalescing, not rate limits
    n_fill, n_empty = fill_count(), scaled(50000)
    data = ping_flood_bytes(n_fill, n_empty, LAST)
    ws = RawWS.connect(srv.port, path, rcvbuf=4096, timeout=10)
    try:
        ws.ping_roundtrip(b"warm")
        before = scrape(srv.port)   # the metric is checked last: behaviour first
        with RssWatch(srv.pid) as rss, HealthProbe(srv.port) as probe:
            ws.sock.settimeout(30)
            try:
                ws.sock.sendall(data)
            except socket.timeout:
                raise AssertionError("the server stopped reading the flood: it must coalesce the pongs "
                                     "of a client that does not read, not stall its input")
            took = wait_server_consumed(srv.port, ws.sock, timeout=slack(30))
            time.sleep(0.3)
        print(f"flood: {n_fill} fill + {n_empty} empty pings, processed {took:.2f}s after sending; "
              f"worst /healthz {probe.worst * 1000:.0f} ms over {probe.requests} probes; "
              f"RSS {rss.baseline_kb} -> peak {rss.peak_kb} kB")
        probe.assert_fast(slack(0.5), "ping flood")
        rss.assert_growth_below(slack(4, 2), "ping flood")

        pongs = read_pongs_until_last(ws, timeout=slack(20))
        # Pongs come in ping order: the fill pings' first, then the empty pings' and the last one's. The
        # kernel held some fill pongs; every other pong had to wait in the server, where a new ping
        # replaces the waiting pong's payload. A server may also merge the pongs of one read (none has
        # started), so the empty part yields about one pong per read of ~64 KiB: a few, not one per ping.
        fills = [fill_index(p) for p in pongs if fill_index(p) is not None]
        rest = pongs[len(fills):]
        print(f"{len(pongs)} pongs: {len(fills)} for fill pings, {len(rest)} for the {n_empty + 1} others")
        assert all(fill_index(p) is None for p in rest), "a fill ping's pong after a later ping's"
        assert fills == sorted(set(fills)), "pongs out of ping order (or repeated)"
        assert set(rest) <= {b"", LAST}, f"pong payloads that no ping carried: {set(rest) - {b'', LAST}}"
        assert len(rest) <= 32, (f"{len(rest)} pongs for the {n_empty + 1} pings after the fill: pongs must "
                                 f"coalesce")
        # the connection is healthy and the coalescing is visible
        ws.ping_roundtrip(b"after the flood")
        coalesced = (metric(srv.port, "herald_pongs_coalesced_total")
                     - before.get("herald_pongs_coalesced_total", 0))
        assert coalesced >= n_empty // 2, f"herald_pongs_coalesced_total rose by {coalesced} for {n_empty} pings"
    finally:
        ws.close()


def test_publisher_control_frames_are_rate_limited(herald):
    """Publishers' data frames are not limited, but their control frames count against
    --client-frame-rate like a subscriber's: a ping-flooding publisher is closed 1008."""
    srv = herald("--client-frame-rate", "50")
    before = scrape(srv.port)
    pub = RawWS.connect(srv.port, "/publish?group=ratelimit")
    try:
        pub.send(b"".join(build_frame(OP_PING, fill_payload(i)) for i in range(300)))
        f = pub.expect_close(1008, timeout=slack(5))
        assert f.close_reason == b"client frame rate limit", f.close_reason
    finally:
        pub.close()
    after = scrape(srv.port)
    assert (metric_of(after, "herald_rate_limited_total")
            - metric_of(before, "herald_rate_limited_total")) >= 1
