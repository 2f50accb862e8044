"""Slow subscribers: bounded queues, --slow-policy close|drop-oldest, --write-timeout, bounded memory,
and other subscribers unaffected."""

import asyncio
import http.client
import os
import struct
import threading
import time

from herald_helpers import (MiB, OP_BINARY, OP_CLOSE, OP_PING, RawWS, metrics, run, wait_until,
                            ws_connect)

MSG = 64 * 1024
QUEUE_LIMIT = 1048576
WINDOW = 8  # messages the publisher may be ahead of the *fast* subscriber (512 KiB < queue limit)

# Under ASan freed blocks sit in a quarantine (256 MB by default) and would look like a leak of
# everything published; keep it small so that RSS still measures what the server holds on to.
SAN_ENV = {"ASAN_OPTIONS": "quarantine_size_mb=8"}


class RssSampler(threading.Thread):
    def __init__(self, srv):
        super().__init__(daemon=True)
        self.srv, self.stop_evt, self.max_kb, self.samples = srv, threading.Event(), 0, 0

    def run(self):
        while not self.stop_evt.is_set():
            try:
                self.max_kb = max(self.max_kb, self.srv.rss_kb())
                self.samples += 1
            except OSError:
                return
            time.sleep(0.02)

    def stop(self):
        self.stop_evt.set()
        self.join(5)


def stuck_subscribers(srv, group, n):
    """Subscribers with a tiny receive buffer that never read."""
    return [RawWS.connect(srv.port, f"/ws?groups={group}", rcvbuf=4096) for _ in range(n)]


async def paced_traffic(srv, group, nmsg, latency_bound):
    """Publish nmsg binary messages of MSG bytes through a streaming publisher while a normal
    websockets subscriber reads; the publisher never runs more than WINDOW messages ahead of it.
    Returns (seconds, max latency)."""
    filler = os.urandom(MSG - 8)
    sent_at = {}
    got = 0
    cond = asyncio.Condition()
    max_lat = 0.0
    async with ws_connect(srv.port, f"/ws?groups={group}") as sub, \
            ws_connect(srv.port, f"/publish?group={group}") as pub:
        # make sure the subscriber is registered: one probe message
        await pub.send(b"probe")
        assert await asyncio.wait_for(sub.recv(), 10) == b"probe"

        async def reader():
            nonlocal got, max_lat
            for i in range(nmsg):
                try:
                    m = await asyncio.wait_for(sub.recv(), latency_bound)
                except asyncio.TimeoutError:
                    raise AssertionError(f"fast subscriber waited > {latency_bound}s for message {i} "
                                         f"(a slow subscriber is delaying others)")
                assert isinstance(m, bytes) and len(m) == MSG, f"message {i}: len {len(m)}"
                seq = struct.unpack("!Q", m[:8])[0]
                assert seq == i, f"fast subscriber got seq {seq}, expected {i} (loss/reorder)"
                assert m[8:] == filler
                max_lat = max(max_lat, time.monotonic() - sent_at[seq])
                async with cond:
                    got = i + 1
                    cond.notify_all()

        async def writer():
            for i in range(nmsg):
                async with cond:
                    await cond.wait_for(lambda: i - got < WINDOW)
                sent_at[i] = time.monotonic()
                await pub.send(struct.pack("!Q", i) + filler)

        t0 = time.monotonic()
        await asyncio.gather(reader(), writer())
        el = time.monotonic() - t0
        assert max_lat < latency_bound, f"max delivery latency {max_lat:.2f}s"
        # the fast subscriber is still healthy
        await asyncio.wait_for(await sub.ping(b"still-here"), 5)
        return el, max_lat


def drain(c, timeout=20.0):
    """Read everything a stuck client has until EOF. Returns (frames, saw_eof)."""
    frames = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            f = c.recv_frame(max(0.01, deadline - time.monotonic()), partial_ok=True)
        except TimeoutError:
            return frames, False
        if f is None:
            return frames, True
        frames.append(f)
        if f.opcode == OP_CLOSE:
            # server-initiated close: it must close TCP after it (we do not have to answer)
            try:
                c.expect_eof(10)
                return frames, True
            except AssertionError:
                return frames, False
    return frames, False


def check_rss(srv, sampler, baseline_kb, what):
    grew_mb = (sampler.max_kb - baseline_kb) / 1024
    print(f"{what}: RSS baseline {baseline_kb / 1024:.1f} MB, peak {sampler.max_kb / 1024:.1f} MB, "
          f"{sampler.samples} samples")
    assert sampler.samples > 5, "RSS sampler did not run"
    assert sampler.max_kb < 200 * 1024, f"{what}: server RSS peaked at {sampler.max_kb / 1024:.0f} MB"
    assert grew_mb < 40, (f"{what}: server RSS grew by {grew_mb:.0f} MB (baseline {baseline_kb / 1024:.0f} MB) "
                          f"while a bounded server should hold only a few MB")


def test_slow_policy_close(herald):
    srv = herald("--queue-limit", QUEUE_LIMIT, "--slow-policy", "close", env_extra=SAN_ENV)
    nmsg = 64 * MiB // MSG
    stuck = stuck_subscribers(srv, "slow", 5)
    try:
        baseline = srv.rss_kb()
        sampler = RssSampler(srv)
        sampler.start()
        try:
            el, lat = run(paced_traffic(srv, "slow", nmsg, 8.0 if srv.sanitized else 4.0), 240)
        finally:
            sampler.stop()
        check_rss(srv, sampler, baseline, "slow-policy close")
        m = wait_until(lambda: (lambda m: m if m.get("herald_slow_consumer_closes_total", 0) >= len(stuck)
                                else None)(metrics(srv.port)), 10, 0.1, "slow_consumer_closes_total >= 5")
        assert m["herald_slow_consumer_closes_total"] >= len(stuck)
        for c in stuck:
            frames, eof = drain(c)
            assert eof, "slow consumer was counted as closed but its TCP connection stays open"
            closes = [f for f in frames if f.opcode == OP_CLOSE]
            for f in closes:
                assert f.close_code == 1008, f"slow consumer closed with {f.close_code}, expected 1008"
            # data frames that did arrive are complete and in order
            seqs = [struct.unpack("!Q", f.payload[:8])[0] for f in frames if f.opcode == OP_BINARY
                    and len(f.payload) == MSG]
            assert seqs == sorted(seqs)
    finally:
        for c in stuck:
            c.close()


def test_slow_policy_drop_oldest(herald):
    srv = herald("--queue-limit", QUEUE_LIMIT, "--slow-policy", "drop-oldest", env_extra=SAN_ENV)
    nmsg = 64 * MiB // MSG
    stuck = stuck_subscribers(srv, "slowd", 20)
    try:
        baseline = srv.rss_kb()
        sampler = RssSampler(srv)
        sampler.start()
        try:
            run(paced_traffic(srv, "slowd", nmsg, 8.0 if srv.sanitized else 4.0), 240)
        finally:
            sampler.stop()
        check_rss(srv, sampler, baseline, "slow-policy drop-oldest (20 stuck subscribers)")
        m = metrics(srv.port)
        assert m.get("herald_messages_dropped_total", 0) > 0, m
        assert m.get("herald_slow_consumer_closes_total", 0) == 0, m
        assert m.get("herald_connections_open", 0) >= len(stuck), m
        bound = len(stuck) * (QUEUE_LIMIT + 2 * MSG)
        assert 0 < m.get("herald_queued_bytes", 0) <= bound, \
            f"queued_bytes {m.get('herald_queued_bytes')} should be >0 and <= {bound} with {len(stuck)} stuck clients"
        # each stuck subscriber is still open; what it gets is whole messages, in order, ending with the newest
        for idx, c in enumerate(stuck):
            last = -1
            deadline = time.monotonic() + 30
            while last != nmsg - 1:
                assert time.monotonic() < deadline, f"stuck subscriber {idx} never got the newest message"
                f = c.recv_frame(10)
                assert f is not None, f"stuck subscriber {idx} was closed under drop-oldest"
                assert f.opcode != OP_CLOSE, f"stuck subscriber {idx} got close {f.close_code} under drop-oldest"
                if f.opcode == OP_PING:
                    continue
                if f.opcode == OP_BINARY and f.payload == b"probe":
                    continue
                assert f.opcode == OP_BINARY and f.fin and len(f.payload) == MSG, f
                seq = struct.unpack("!Q", f.payload[:8])[0]
                assert seq > last, f"subscriber {idx}: seq {seq} after {last}"
                last = seq
            c.ping_roundtrip(b"alive")
    finally:
        for c in stuck:
            c.close()
    # all queues released once the stuck clients are gone
    wait_until(lambda: metrics(srv.port)["herald_queued_bytes"] == 0, 10, 0.1, "queued_bytes to return to 0")
    wait_until(lambda: metrics(srv.port)["herald_connections_open"] <= 1, 10, 0.1, "connections_open to drop")


def test_write_timeout_closes_stuck_client(herald):
    srv = herald("--write-timeout", "1", "--queue-limit", 64 * MiB, "--slow-policy", "close",
                 env_extra=SAN_ENV)
    stuck = stuck_subscribers(srv, "wt", 1)[0]
    try:
        nmsg = 16 * MiB // MSG
        run(paced_traffic(srv, "wt", nmsg, 8.0 if srv.sanitized else 4.0), 120)
        t_end = time.monotonic()
        m = wait_until(lambda: (lambda m: m if m.get("herald_write_timeouts_total", 0) >= 1 else None)(
            metrics(srv.port)), 10, 0.1, "herald_write_timeouts_total >= 1")
        waited = time.monotonic() - t_end
        assert m.get("herald_slow_consumer_closes_total", 0) == 0, \
            f"queue limit (64 MiB) should not have been reached: {m}"
        assert waited < 8, f"write timeout of 1 s took {waited:.1f}s to act"
        frames, eof = drain(stuck)
        assert eof, "write-timed-out connection is still open"
    finally:
        stuck.close()


def test_stuck_client_does_not_block_http(herald):
    """With a stuck subscriber, HTTP publishes still answer promptly and others still receive."""
    srv = herald("--queue-limit", QUEUE_LIMIT, "--slow-policy", "drop-oldest")
    stuck = stuck_subscribers(srv, "h", 3)
    try:
        async def main():
            async with ws_connect(srv.port, "/ws?groups=h") as sub:
                conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
                body = os.urandom(MSG)
                try:
                    for i in range(200):  # 12.5 MiB
                        t0 = time.monotonic()
                        await asyncio.to_thread(conn.request, "POST", "/publish?group=h", body,
                                                {"Content-Type": "application/octet-stream"})
                        r = await asyncio.to_thread(conn.getresponse)
                        r.read()
                        assert r.status == 200
                        assert time.monotonic() - t0 < 5, "HTTP publish blocked by a stuck subscriber"
                        m = await asyncio.wait_for(sub.recv(), 5)
                        assert m == body
                finally:
                    conn.close()
        run(main(), 120)
    finally:
        for c in stuck:
            c.close()
