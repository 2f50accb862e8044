"""Issue 8, item 4: timers measure the right thing. While herald is the one behind (answers to pipelined
requests waiting to be written, reading paused), only write progress counts: a client that reads its
answers slowly but steadily gets all of them however long that takes; a client that reads nothing is
closed after --write-timeout.
"""

import re
import time

from herald_helpers import read_response
from hostile_helpers import connect, http_get, metric, metric_of, read_until_eof, scrape, slack

N_REQUESTS = 3000
# Read at SLOW_RATE for SLOW_SECONDS (longer than the 10 s head timeout and --write-timeout 10, while the
# answers to the first read's ~2000 requests are still being written), then the rest at full speed.
# Reading all ~23 MB slowly would take half a minute and test nothing more.
SLOW_RATE = 750 * 1024
SLOW_SECONDS = 13.0
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)\r\n", re.I)


class ResponseCounter:
    """Counts complete HTTP responses in a byte stream fed piecewise; every one must be a 200 carrying
    Prometheus text."""

    def __init__(self):
        self.buf = bytearray()
        self.count = 0

    def feed(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end + 2])
            m = CONTENT_LENGTH.search(head)
            assert head.startswith(b"HTTP/1.1 200 ") and m, f"response {self.count}: {head[:200]!r}"
            total = end + 4 + int(m.group(1))
            if len(self.buf) < total:
                return
            assert self.buf[end + 4:end + 10] == b"# HELP", f"response {self.count}: not metrics text"
            del self.buf[:total]
            self.count += 1


def test_pipelined_requests_read_slowly_are_all_answered(herald):
    srv = herald("--write-timeout", "10")
    s = connect(srv.port, rcvbuf=64 * 1024, timeout=slack(5))
    counter = ResponseCounter()
    try:
        s.sendall(http_get("/metrics") * N_REQUESTS)
        t0 = time.monotonic()
        deadline = t0 + SLOW_SECONDS + slack(20)
        allowance, last, slow_bytes = 0.0, t0, 0
        while counter.count < N_REQUESTS:
            now = time.monotonic()
            assert now < deadline, f"only {counter.count} of {N_REQUESTS} answers after {now - t0:.1f}s"
            slow = now - t0 < SLOW_SECONDS
            if slow:
                allowance = min(allowance + (now - last) * SLOW_RATE, 64 * 1024)
                last = now
                if allowance < 4096:
                    time.sleep(0.02)
                    continue
            s.settimeout(max(0.1, deadline - now))
            try:
                d = s.recv(int(allowance) if slow else 1 << 20)
            except ConnectionResetError:
                d = b""
            assert d, (f"the server closed the connection after {counter.count} of {N_REQUESTS} answers, "
                       f"{time.monotonic() - t0:.1f}s into a steady read")
            if slow:
                allowance -= len(d)
                slow_bytes += len(d)
            counter.feed(d)
        elapsed = time.monotonic() - t0
        print(f"{N_REQUESTS} answers in {elapsed:.1f}s, the first {slow_bytes / 1e6:.1f} MB in {SLOW_SECONDS}s")
        assert not counter.buf, f"{len(counter.buf)} bytes after the last answer"
        # still a healthy keep-alive connection
        s.sendall(http_get("/healthz"))
        r, _ = read_response(s, timeout=slack(5))
        assert r.status == 200 and r.body == b"ok\n", r
    finally:
        s.close()


def test_pipelined_requests_never_read_hit_the_write_timeout(herald):
    srv = herald("--write-timeout", "2")
    before = scrape(srv.port)
    s = connect(srv.port, rcvbuf=4096, timeout=slack(5))
    try:
        s.sendall(http_get("/metrics") * N_REQUESTS)     # ~20 MB of answers: far beyond any buffer
        t0 = time.monotonic()
        key = "herald_write_timeouts_total"
        while metric(srv.port, key) == metric_of(before, key):
            assert time.monotonic() - t0 < slack(2 + 4), f"{key} did not increase within {slack(6)}s"
            time.sleep(0.1)
        took = time.monotonic() - t0
        print(f"write timeout after {took:.2f}s")
        assert took > 1.5, f"closed after {took:.2f}s, before --write-timeout 2 without progress"
        data, closed = read_until_eof(s, slack(5))
        assert closed, "the connection is still open after the write timeout"
        answered = data.count(b"HTTP/1.1 200 ")
        assert answered < N_REQUESTS, "all answers arrived although the client never read"
    finally:
        s.close()
