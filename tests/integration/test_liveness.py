"""Liveness: --ping-interval pings silent clients, --idle-timeout closes them (1001)."""

import asyncio
import time

import pytest

from herald_helpers import OP_CLOSE, OP_PING, OP_PONG, RawWS, apublish, metrics, recv, run, wait_until, ws_connect

ARGS = ("--ping-interval", "0.3", "--idle-timeout", "1")


@pytest.fixture(scope="module")
def srv(herald_module):
    return herald_module(*ARGS)


@pytest.mark.parametrize("path", ["/ws?groups=idle", "/publish?group=idle"])
def test_silent_client_gets_pings_then_idle_close(srv, path):
    c = RawWS.connect(srv.port, path)
    t0 = time.monotonic()
    pings = []
    try:
        while True:
            f = c.recv_frame(6)
            assert f is not None, "TCP closed without a close frame"
            now = time.monotonic() - t0
            if f.opcode == OP_PING:
                pings.append(now)
                continue
            assert f.opcode == OP_CLOSE, f"unexpected frame {f!r}"
            assert f.close_code == 1001, f"idle close code {f.close_code}, expected 1001"
            t_close = now
            break
        assert pings, "server closed an idle client without pinging it first"
        assert pings[0] < 1.0, f"first ping after {pings[0]:.2f}s with --ping-interval 0.3"
        assert 0.8 <= t_close <= 3.0, f"idle close after {t_close:.2f}s with --idle-timeout 1"
        c.expect_eof(3)
    finally:
        c.close()
    m = metrics(srv.port)
    assert m.get("herald_idle_timeouts_total", 0) >= 1, m


def test_client_answering_pings_stays_open(srv):
    c = RawWS.connect(srv.port, "/ws?groups=live")
    try:
        pings = 0
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            try:
                f = c.recv_frame(max(0.05, end - time.monotonic()))
            except TimeoutError:
                break
            assert f is not None and f.opcode == OP_PING, f"expected only pings, got {f!r}"
            pings += 1
            c.send_frame(OP_PONG, f.payload)
        assert pings >= 2, f"only {pings} pings in 2.5s with --ping-interval 0.3"
        c.ping_roundtrip(b"still")
    finally:
        c.close()


def test_client_sending_its_own_traffic_stays_open(srv):
    """Traffic from the client (here: its own pings) is not silence, even if server pings go unanswered."""
    c = RawWS.connect(srv.port, "/publish?group=live2")
    try:
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            c.send_frame(OP_PING, b"me")
            c.expect_pong(b"me")  # skips server pings without answering them
            time.sleep(0.2)
        c.ping_roundtrip(b"still")
    finally:
        c.close()


def test_websockets_client_autopong_stays_connected(srv):
    async def main():
        async with ws_connect(srv.port, "/ws?groups=auto") as s, ws_connect(srv.port, "/ws") as s0:
            await asyncio.sleep(2.5)
            assert s.open and s0.open, "auto-ponging client was closed"
            await apublish(srv.port, "after-2.5s", group="auto", content_type="text/plain")
            await apublish(srv.port, "bcast", content_type="text/plain")
            assert await recv(s) == "after-2.5s"
            assert await recv(s) == "bcast"
            assert await recv(s0) == "bcast"
    run(main())


def test_idle_close_counts_and_frees_connection(srv):
    base = metrics(srv.port)
    conns = [RawWS.connect(srv.port, "/ws") for _ in range(5)]
    try:
        for c in conns:
            while True:
                f = c.recv_frame(6)
                assert f is not None
                if f.opcode == OP_CLOSE:
                    assert f.close_code == 1001
                    break
            c.expect_eof(3)
    finally:
        for c in conns:
            c.close()
    wait_until(lambda: metrics(srv.port).get("herald_idle_timeouts_total", 0)
               >= base.get("herald_idle_timeouts_total", 0) + 5, 5, 0.1, "idle_timeouts_total += 5")


def _backlog(port, group, nmsg, size):
    """A subscriber that does not read while nmsg messages of size bytes are published to it."""
    c = RawWS.connect(port, f"/ws?groups={group}", rcvbuf=4096)
    body = bytes(size)
    pub = RawWS.connect(port, f"/publish?group={group}")
    try:
        for i in range(nmsg):
            pub.send_frame(0x2, i.to_bytes(8, "big") + body[8:])
        pub.ping_roundtrip(b"sync")  # all of it has been read by the server
    finally:
        pub.close()
    return c


@pytest.mark.parametrize("kind", ["pong", "close"])
def test_control_frames_overtake_backlog(herald, kind):
    """Pongs and close frames go out ahead of queued data frames that have not started
    (so a backlog never makes a live client look dead). 8 MiB are queued for a client that does
    not read; at most ~4 MiB can sit in kernel buffers, so the reply must arrive well before the end."""
    srv = herald("--queue-limit", str(64 * 1024 * 1024), "--slow-policy", "drop-oldest")
    nmsg, size = 128, 64 * 1024
    c = _backlog(srv.port, "bl", nmsg, size)
    try:
        time.sleep(0.2)
        if kind == "pong":
            c.send_frame(OP_PING, b"jump")
        else:
            c.send_close(1000)
        last_seq = -1
        while True:
            f = c.recv_frame(20, partial_ok=(kind == "close"))
            assert f is not None, "EOF before the control reply"
            if f.opcode == 0x2:
                last_seq = int.from_bytes(f.payload[:8], "big")
                continue
            if f.opcode == OP_PING:
                continue
            if kind == "pong":
                assert f.opcode == OP_PONG and f.payload == b"jump", f
            else:
                assert f.opcode == OP_CLOSE and f.close_code == 1000, f
            break
        assert last_seq < nmsg - 1, f"{kind} only arrived after the whole backlog (last seq {last_seq})"
        if kind == "close":
            # nothing but EOF after a close frame
            assert c.recv_frame(10, partial_ok=True) is None
    finally:
        c.close()
