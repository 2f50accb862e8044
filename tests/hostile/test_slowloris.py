"""Issue 8, item 3: slowloris. A request head must be complete --header-timeout after its first byte and
a POST body must arrive within --body-timeout + Content-Length / --body-min-rate after its head, however
the bytes trickle in (an inactivity timer is reset by every byte and bounds nothing). Late requests get
408 and the connection is closed.

The trickling clients run side by side in threads, with well-behaved controls that must not be cut.
"""

import time
from concurrent.futures import ThreadPoolExecutor

from herald_helpers import OP_TEXT, RawWS, parse_head, read_response
from hostile_helpers import connect, http_get, metric_of, scrape, slack, trickle

HEADER_TIMEOUT = 2.0


def answer_status(r):
    head = r.answer.partition(b"\r\n\r\n")[0]
    assert head, f"no answer from the server (sent {r.sent} bytes)"
    status, _, headers = parse_head(head)
    return status, dict(headers)


def assert_408_and_closed(r, low, high, what):
    status, headers = answer_status(r)
    assert status == 408, f"{what}: expected 408, got {r.answer[:200]!r}"
    assert headers.get("connection", "").lower() == "close", f"{what}: 408 without Connection: close"
    took = r.closed_after()
    assert low < took < high, f"{what}: closed {took:.2f}s after its first byte, expected {low}-{high}s"
    return took


def keepalive_after_idle(port, idle):
    """Two requests on one connection with `idle` seconds of silence between them: the head deadline
    starts at a head's first byte, not when the connection or its silence began."""
    s = connect(port, timeout=slack(5))
    try:
        s.sendall(http_get("/healthz"))
        first, rest = read_response(s, timeout=slack(5))
        time.sleep(idle)
        s.sendall(http_get("/healthz"))
        second, _ = read_response(s, rest, timeout=slack(5))
        return first.status, second.status
    finally:
        s.close()


def test_head_trickle_is_cut_at_the_header_deadline(herald):
    srv = herald("--header-timeout", HEADER_TIMEOUT)
    before = scrape(srv.port)
    slow_head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40   # 1 byte/s: over a minute
    quick_head = http_get("/healthz", extra="Connection: close\r\n")
    quick_chunks = [quick_head[i:i + 5] for i in range(0, len(quick_head), 5)]
    with ThreadPoolExecutor(6) as ex:
        slow = [ex.submit(trickle, srv.port, [bytes([b]) for b in slow_head], 1.0, 8) for _ in range(4)]
        # a whole head trickled over ~0.8 s (< 2 s): answered
        quick = ex.submit(trickle, srv.port, quick_chunks, 0.8 / len(quick_chunks), 8)
        idle = ex.submit(keepalive_after_idle, srv.port, HEADER_TIMEOUT + 0.5)
        slow, quick, idle = [f.result() for f in slow], quick.result(), idle.result()
    took = [assert_408_and_closed(r, 1.5, slack(3.5, 1.5), "slowloris head") for r in slow]
    print("slow heads closed after", [f"{t:.2f}s" for t in took])
    assert all(r.sent <= 5 for r in slow), "the slow heads were kept open for more than 5 bytes"
    assert answer_status(quick)[0] == 200, f"a head completed within the deadline was refused: {quick.answer!r}"
    assert idle == (200, 200), f"keep-alive request after an idle gap answered {idle}"
    after = scrape(srv.port)
    key = 'herald_request_timeouts_total{phase="head"}'
    assert metric_of(after, key) - before.get(key, 0) == len(slow), f"{key}: {metric_of(after, key)}"


def test_body_trickle_is_cut_at_the_rate_deadline(herald):
    """--body-timeout 1 --body-min-rate 1000, Content-Length 2000: the body is due 1 + 2000/1000 = 3 s
    after the head. 20 bytes every 0.2 s (100 B/s) are cut then; 2000 bytes over ~1.5 s are published."""
    srv = herald("--body-timeout", "1", "--body-min-rate", "1000")
    group = "slowbody"
    sub = RawWS.connect(srv.port, f"/ws?groups={group}")
    try:
        before = scrape(srv.port)

        def post(body_chunks, interval):
            prefix = (f"POST /publish?group={group} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                      f"Content-Length: 2000\r\nConnection: close\r\n\r\n").encode()
            return trickle(srv.port, body_chunks, interval, 8, prefix=prefix)

        with ThreadPoolExecutor(2) as ex:
            slow = ex.submit(post, [b"s" * 20] * 100, 0.2)
            ok = ex.submit(post, [b"k" * 200] * 10, 0.15)
            slow, ok = slow.result(), ok.result()
        took = assert_408_and_closed(slow, 2.5, slack(4.5, 1.5), "slow body")
        print(f"slow body closed {took:.2f}s after its head, {slow.sent} bytes sent")
        assert answer_status(ok)[0] == 200, f"a body within its deadline was refused: {ok.answer[:200]!r}"
        assert sub.recv_message(slack(5)) == (OP_TEXT, b"k" * 2000)
        try:
            f = sub.recv_frame(0.3)
            raise AssertionError(f"the cut body was published: {f!r}")
        except TimeoutError:
            pass
    finally:
        sub.close()
    after = scrape(srv.port)
    key = 'herald_request_timeouts_total{phase="body"}'
    assert metric_of(after, key) - before.get(key, 0) == 1, f"{key}: {metric_of(after, key)}"
