"""Limits with clear answers (issue 4): connections per IP (429), client frames per second (close 1008),
new upgrades per second (503 + Retry-After) including the reconnect-storm acceptance test, and the
observability metrics that go with them."""

import asyncio
import base64
import json
import os
import socket
import sys
import time

import websockets.exceptions

from herald_helpers import (HOST, OP_PING, OP_PONG, OP_TEXT, Publisher, RawWS, build_frame, http_call, metrics,
                            parse_prometheus, raw_request, read_response, recv, recv_n, run, wait_until,
                            ws_connect, ws_request_bytes)


def upgrade_request(port, path):
    key = base64.b64encode(os.urandom(16)).decode()
    return ws_request_bytes(path=path, host=f"127.0.0.1:{port}", key=key)


def try_upgrade(port, path="/ws", timeout=5.0):
    """One upgrade attempt. Returns (RawResponse, socket or None): the socket is kept open on 101."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    s.sendall(upgrade_request(port, path))
    resp, _ = read_response(s, timeout=timeout, expect_close=False)
    if resp.status == 101:
        return resp, s
    s.close()
    return resp, None


# --------------------------------------------------------------------------
# --max-conns-per-ip
# --------------------------------------------------------------------------

def test_max_conns_per_ip(herald):
    srv = herald("--max-conns-per-ip", "3")
    subs = [RawWS.connect(srv.port, "/ws?groups=ip") for _ in range(2)]
    pub = RawWS.connect(srv.port, "/publish?group=ip")       # the third connection from 127.0.0.1
    extra = []
    try:
        # the 4th concurrent connection: refused with 429 and closed, whatever it asks for
        for data in (upgrade_request(srv.port, "/ws?groups=ip"),
                     b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                     b"POST /publish?group=ip HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
                     b""):
            resp = raw_request(srv.port, data, expect_close=True)
            assert resp.status == 429, resp
            assert resp.closed, "429 must close the connection"
            assert (resp.header("connection") or "").lower() == "close"
        # the established ones are unaffected
        pub.send_text("still here")
        for s in subs:
            assert s.recv_message(5) == (OP_TEXT, b"still here")

        # closing one frees a slot (the server notices the close asynchronously: retry, bounded)
        subs.pop().close()

        def slot_free():
            resp, s = try_upgrade(srv.port, "/ws?groups=ip")
            if s is not None:
                extra.append(s)
                return True
            assert resp.status == 429, resp
            time.sleep(0.05)
            return False
        wait_until(slot_free, timeout=5, what="a connection slot after closing one")
        # and we are at the limit again
        assert raw_request(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").status == 429
    finally:
        for s in subs:
            s.close()
        pub.close()
        for s in extra:
            s.close()

    def metrics_when_free():
        try:
            st, _, body = http_call(srv.port, "GET", "/metrics")
        except OSError:
            return None
        return body if st == 200 else None
    body = wait_until(metrics_when_free, timeout=5, what="/metrics after closing everything")
    samples, _ = parse_prometheus(body.decode())
    assert samples['herald_requests_failed_total{status="429"}'] >= 5


def test_max_conns_per_ip_zero_means_unlimited(herald):
    srv = herald()
    conns = [RawWS.connect(srv.port, "/ws") for _ in range(50)]
    try:
        assert http_call(srv.port, "GET", "/healthz")[0] == 200
    finally:
        for c in conns:
            c.close()


# --------------------------------------------------------------------------
# --client-frame-rate
# --------------------------------------------------------------------------

def test_subscriber_over_frame_rate_is_closed_1008(herald):
    srv = herald("--client-frame-rate", "10")
    bystander = RawWS.connect(srv.port, "/ws?groups=fr")
    noisy = RawWS.connect(srv.port, "/ws?groups=fr")
    try:
        noisy.send(b"".join(build_frame(OP_PING, b"p%d" % i) for i in range(50)))
        f = noisy.expect_close(1008, timeout=5)
        assert f.close_code == 1008
        # others are not affected
        bystander.ping_roundtrip(b"fine")
        Publisher(srv.port).publish("after", group="fr", content_type="text/plain")
        assert bystander.recv_message(5) == (OP_TEXT, b"after")
    finally:
        bystander.close()
        noisy.close()


def test_subscriber_data_frames_count_too(herald):
    srv = herald("--client-frame-rate", "10")
    noisy = RawWS.connect(srv.port, "/ws")
    try:
        for i in range(30):
            try:
                noisy.send_text(f"chatter {i}")
            except OSError:
                break
        noisy.expect_close(1008, timeout=5)
    finally:
        noisy.close()


def test_subscriber_under_frame_rate_stays_open(herald):
    srv = herald("--client-frame-rate", "10")
    ws = RawWS.connect(srv.port, "/ws")
    try:
        t_end = time.monotonic() + 2.5
        n = 0
        while time.monotonic() < t_end:        # ~4 frames per second, well under 10
            ws.ping_roundtrip(b"slow%d" % n)
            n += 1
            time.sleep(0.25)
        assert n >= 8
        Publisher(srv.port).publish("ok", content_type="text/plain")
        assert ws.recv_message(5) == (OP_TEXT, b"ok")
    finally:
        ws.close()


def test_default_frame_rate_is_100(herald):
    srv = herald()
    calm = RawWS.connect(srv.port, "/ws")
    noisy = RawWS.connect(srv.port, "/ws")
    try:
        for i in range(50):                     # 50 in a burst: allowed by the default
            calm.send_frame(OP_PING, b"c%d" % i)
        # Pongs for a burst may coalesce (RFC 6455 5.5.3): they come in order
        # and the last one answers the last ping.
        last = -1
        while last < 49:
            f = calm.recv_frame(5)
            assert f is not None and f.opcode == OP_PONG, f"expected a pong, got {f!r}"
            i = int(f.payload[1:])
            assert i > last, f"pong c{i} after c{last}"
            last = i
        noisy.send(b"".join(build_frame(OP_PING, b"n%d" % i) for i in range(300)))
        noisy.expect_close(1008, timeout=5)
        calm.ping_roundtrip(b"still open")
    finally:
        calm.close()
        noisy.close()


def test_publisher_is_not_frame_limited(herald):
    srv = herald("--client-frame-rate", "10")
    N = 500

    async def main():
        async with ws_connect(srv.port, "/ws?groups=stream") as sub:
            async with ws_connect(srv.port, "/publish?group=stream") as pub:
                for i in range(N):
                    await pub.send(f"s{i}")
                got = await recv_n(sub, N, timeout=20)
                assert got == [f"s{i}" for i in range(N)]
                await pub.ping()                  # the publisher is still open
                await pub.send("last")
                assert await recv(sub) == "last"
    run(main())


# --------------------------------------------------------------------------
# --accept-rate
# --------------------------------------------------------------------------

def test_accept_rate_503_with_retry_after(herald):
    RATE = 5
    srv = herald("--accept-rate", str(RATE))
    stable = RawWS.connect(srv.port, "/ws?groups=ar")
    held = []
    try:
        statuses = {"/ws?groups=ar": [], "/publish?group=ar": []}
        t0 = time.monotonic()
        for i in range(40):
            path = "/ws?groups=ar" if i % 2 == 0 else "/publish?group=ar"
            resp, s = try_upgrade(srv.port, path)
            statuses[path].append(resp.status)
            if s is not None:
                held.append(s)
            else:
                assert resp.status == 503, resp
                ra = resp.header("retry-after")
                assert ra is not None and ra.isdigit() and int(ra) >= 1, resp
                assert (resp.header("connection") or "").lower() == "close"
        took = time.monotonic() - t0
        accepted = sum(st == 101 for v in statuses.values() for st in v)
        windows = int(took) + 2                 # the budget is per second; the burst may straddle seconds
        assert accepted <= RATE * windows, (accepted, took, statuses)
        for path, v in statuses.items():
            assert 503 in v, (path, v)
        # plain HTTP is not an upgrade: not rate limited; established connections are unaffected
        for _ in range(20):
            assert http_call(srv.port, "GET", "/healthz")[0] == 200
        Publisher(srv.port).publish("through", group="ar", content_type="text/plain")
        assert stable.recv_message(5) == (OP_TEXT, b"through")
        stable.ping_roundtrip()
        m = metrics(srv.port)
        assert m['herald_requests_failed_total{status="503"}'] == sum(
            st == 503 for v in statuses.values() for st in v)

        # a later second has a new budget
        def accepted_again():
            resp, s = try_upgrade(srv.port, "/ws")
            if s is not None:
                held.append(s)
                return True
            time.sleep(0.1)
            return False
        wait_until(accepted_again, timeout=4, what="an upgrade in a later second")
    finally:
        stable.close()
        for s in held:
            s.close()


BURST_SCRIPT = r"""
import base64, json, os, selectors, socket, sys, time
port, total, rate, conc = (int(x) for x in sys.argv[1:5])
sel = selectors.DefaultSelector()
stats = {"101": 0, "503": 0, "other": 0, "errors": 0, "retry_after_missing": 0, "statuses": {}}
held = []
started = inflight = 0
t0 = time.monotonic()
deadline = t0 + 40

def req():
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /ws?groups=burst HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()

def done(s, kind):
    global inflight
    inflight -= 1
    sel.unregister(s)
    if kind == "101":
        held.append(s)
    else:
        s.close()

while (started < total or inflight) and time.monotonic() < deadline:
    due = min(total, int((time.monotonic() - t0) * rate) + 1)
    while started < due and inflight < conc:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", port))
        started += 1
        if err not in (0, 115):  # EINPROGRESS
            stats["errors"] += 1
            s.close()
            continue
        inflight += 1
        sel.register(s, selectors.EVENT_WRITE, [b"", False])
    for key, ev in sel.select(timeout=0.002):
        s, st = key.fileobj, key.data
        if not st[1]:
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                stats["errors"] += 1
                done(s, "err")
                continue
            try:
                s.send(req())
            except OSError:
                stats["errors"] += 1
                done(s, "err")
                continue
            st[1] = True
            sel.modify(s, selectors.EVENT_READ, st)
            continue
        try:
            d = s.recv(4096)
        except OSError:
            d = b""
        if not d:
            stats["errors"] += 1
            done(s, "err")
            continue
        st[0] += d
        if b"\r\n\r\n" in st[0]:
            head = st[0].split(b"\r\n\r\n")[0].decode("latin-1")
            code = head.split(" ")[1]
            stats["statuses"][code] = stats["statuses"].get(code, 0) + 1
            if code == "101":
                stats["101"] += 1
            elif code == "503":
                stats["503"] += 1
                if "\r\nretry-after:" not in head.lower():
                    stats["retry_after_missing"] += 1
            else:
                stats["other"] += 1
            done(s, code if code == "101" else "x")
stats["elapsed"] = time.monotonic() - t0
stats["unfinished"] = inflight + (total - started)
print(json.dumps(stats), flush=True)
sys.stdin.read()   # hold the accepted connections until the test is done
"""


def test_reconnect_storm_keeps_subscribers_fast(herald):
    """Issue 4 acceptance: a burst of thousands of connection attempts (2,000 in a few seconds,
    --accept-rate 200) while 5 established subscribers receive a message published every 50 ms:
    each arrives, in order, with low publish->receive latency; the overflow gets 503 + Retry-After."""
    RATE, TOTAL, PACE = 200, 2000, 600
    srv = herald("--accept-rate", str(RATE))
    asan = srv.sanitized
    NSUB = 5

    async def main():
        subs = [await ws_connect(srv.port, "/ws?groups=lat") for _ in range(NSUB)]
        pub = await ws_connect(srv.port, "/publish?group=lat")
        lat = [[] for _ in range(NSUB)]
        seqs = [[] for _ in range(NSUB)]

        async def reader(k):
            ws = subs[k]
            while True:
                try:
                    m = await ws.recv()
                except websockets.exceptions.ConnectionClosed:
                    return
                now = time.monotonic()
                d = json.loads(m)
                if d["i"] < 0:
                    return
                seqs[k].append(d["i"])
                lat[k].append(now - d["t"])

        readers = [asyncio.create_task(reader(k)) for k in range(NSUB)]
        burst = await asyncio.create_subprocess_exec(
            sys.executable, "-c", BURST_SCRIPT, str(srv.port), str(TOTAL), str(PACE), "400",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        stats_line = asyncio.create_task(burst.stdout.readline())
        sent = 0
        try:
            t_start = time.monotonic()
            after_burst = None
            while True:
                await pub.send(json.dumps({"i": sent, "t": time.monotonic()}))
                sent += 1
                await asyncio.sleep(0.05)
                if stats_line.done() and after_burst is None:
                    after_burst = time.monotonic()
                if after_burst is not None and time.monotonic() - after_burst > 0.5:
                    break
                assert time.monotonic() - t_start < 45, "burst did not finish within 45 s"
            stats = json.loads((await stats_line).decode())
            await pub.send(json.dumps({"i": -1, "t": 0}))
            await asyncio.wait_for(asyncio.gather(*readers), 15)

            # the burst's accepted connections are really established (and counted)
            def subscriber_gauge():
                return metrics(srv.port)['herald_connections{state="subscriber"}'] == NSUB + stats["101"]
            await asyncio.to_thread(wait_until, subscriber_gauge, 5, 0.05, "subscriber gauge")
        finally:
            if burst.returncode is None:
                burst.stdin.close()
                try:
                    await asyncio.wait_for(burst.wait(), 10)
                except asyncio.TimeoutError:
                    burst.kill()
                    await burst.wait()
            await pub.close()
            for ws in subs:
                await ws.close()
        return stats, sent, lat, seqs

    stats, sent, lat, seqs = run(main(), timeout=90)
    info = f"burst={stats} sent={sent}"
    assert stats["unfinished"] == 0, info
    assert stats["errors"] == 0, info
    assert stats["other"] == 0, info
    assert stats["101"] + stats["503"] == TOTAL, info
    assert stats["retry_after_missing"] == 0, info
    windows = int(stats["elapsed"]) + 2
    assert 0 < stats["101"] <= RATE * windows, info
    assert stats["503"] >= TOTAL - RATE * windows, info
    assert sent >= 40, info
    for k in range(NSUB):
        assert seqs[k] == list(range(sent)), f"subscriber {k} lost or reordered messages: {info}"
    all_lat = sorted(x for v in lat for x in v)
    p99 = all_lat[int(len(all_lat) * 0.99) - 1]
    worst = all_lat[-1]
    bound = 2.0 if asan else 0.5
    print(f"reconnect storm: {info}; latency p50 {all_lat[len(all_lat) // 2] * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, max {worst * 1000:.1f} ms")
    assert p99 < bound, f"p99 publish->receive latency {p99 * 1000:.1f} ms during the burst (max {worst * 1000:.1f} ms); {info}"
    assert worst < 2 * bound + 1, f"max latency {worst * 1000:.1f} ms; {info}"


# --------------------------------------------------------------------------
# observability
# --------------------------------------------------------------------------

def test_metrics_latency_histogram_connections_and_workers(herald):
    srv = herald()
    st, hdrs, body = http_call(srv.port, "GET", "/metrics")
    assert st == 200
    assert hdrs["Content-Type"].startswith("text/plain")
    s0, types = parse_prometheus(body.decode())
    assert types.get("herald_delivery_latency_seconds") == "histogram", types
    assert types.get("herald_connections") == "gauge", types
    assert types.get("herald_worker_busy_seconds_total") == "counter", types
    assert 'herald_worker_busy_seconds_total{worker="0"}' in s0
    assert 'herald_worker_busy_seconds_total{worker="1"}' in s0

    N = 30

    async def main():
        subs = [await ws_connect(srv.port, "/ws?groups=m") for _ in range(3)]
        async with ws_connect(srv.port, "/publish?group=m") as pub:
            m = metrics(srv.port)
            assert m['herald_connections{state="subscriber"}'] == 3, m
            assert m['herald_connections{state="publisher"}'] == 1, m
            for i in range(N):
                await pub.send(f"x{i}")
            for ws in subs:
                await recv_n(ws, N)
        for ws in subs:
            await ws.close()
    run(main())

    def settled():
        m = metrics(srv.port)
        return m if m['herald_connections{state="subscriber"}'] == 0 else None
    s1 = wait_until(settled, timeout=5, what="subscribers gone from herald_connections")
    assert s1['herald_connections{state="publisher"}'] == 0

    # histogram: cumulative buckets, +Inf == _count, the new deliveries observed
    buckets = sorted(((float(k.split('le="')[1].split('"')[0]), v) for k, v in s1.items()
                      if k.startswith("herald_delivery_latency_seconds_bucket{")), key=lambda kv: kv[0])
    assert len(buckets) >= 5 and buckets[-1][0] == float("inf"), buckets
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), f"buckets are not cumulative: {buckets}"
    assert s1["herald_delivery_latency_seconds_count"] == buckets[-1][1]
    delta = s1["herald_delivery_latency_seconds_count"] - s0["herald_delivery_latency_seconds_count"]
    assert delta >= 3 * N, (delta, 3 * N)
    assert s1["herald_delivery_latency_seconds_sum"] >= 0
    for w in ("0", "1"):
        k = f'herald_worker_busy_seconds_total{{worker="{w}"}}'
        assert s1[k] >= s0[k]
    assert sum(s1[f'herald_worker_busy_seconds_total{{worker="{w}"}}'] for w in "01") > 0
