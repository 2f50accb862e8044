"""Graceful shutdown: SIGTERM/SIGINT → close every WebSocket after its queued data, exit 0 quickly.

docs/interface.md (issue 2): SIGTERM and SIGINT → close 1001. Issue 4 refines SIGTERM into a graceful
drain: close 1012 spread over --drain-window (SIGINT stays 1001). A binary that advertises
--drain-window in --help is held to the refined rule, otherwise to the original one.
"""

import asyncio
import os
import signal
import subprocess
import time

import pytest

from conftest import clean_env, herald_bin
from herald_helpers import OP_TEXT, Publisher, RawWS, expect_ws_close, recv_n, run, ws_connect

DRAIN = 0.5


def _has_drain_window():
    p = subprocess.run([herald_bin(), "--help"], capture_output=True, timeout=10, env=clean_env())
    return b"--drain-window" in p.stdout + p.stderr


HAS_DRAIN = _has_drain_window()
DRAIN_ARGS = ["--drain-window", str(DRAIN)] if HAS_DRAIN else []


def close_code_for(sig):
    return 1012 if (sig == signal.SIGTERM and HAS_DRAIN) else 1001


def extra_time(sig):
    return DRAIN if (sig == signal.SIGTERM and HAS_DRAIN) else 0.0


def wait_exit(srv, limit):
    t0 = time.monotonic()
    try:
        rc = srv.wait(limit + 5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"herald still running {limit + 5}s after the signal")
    took = time.monotonic() - t0
    assert rc == 0, f"exit status {rc} after shutdown signal"
    return took


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_closes_everyone_after_queued_messages(herald, sig):
    srv = herald(*DRAIN_ARGS)
    N = 50
    code = close_code_for(sig)

    async def main():
        groups = ["g", "g", None, "g,h", "h"]
        subs = [await ws_connect(srv.port, "/ws" if g is None else f"/ws?groups={g}") for g in groups]
        raws = [RawWS.connect(srv.port, "/ws?groups=g"), RawWS.connect(srv.port, "/ws")]
        pub_stream = await ws_connect(srv.port, "/publish?group=g")
        try:
            pub = Publisher(srv.port)
            try:
                for i in range(N):
                    pub.publish(f"m{i}", content_type="text/plain")  # broadcast to all
            finally:
                pub.close()
            t0 = time.monotonic()
            srv.signal(sig)
            want = [f"m{i}" for i in range(N)]

            async def check(ws):
                assert await recv_n(ws, N, 10) == want, "messages published before the signal were lost"
                await expect_ws_close(ws, code, 10)
            await asyncio.gather(*(check(ws) for ws in subs))
            await expect_ws_close(pub_stream, code, 10)
            for r in raws:
                got = [r.recv_message(10) for _ in range(N)]
                assert got == [(OP_TEXT, w.encode()) for w in want]
                r.expect_close(code, 10, reply=True)
                r.close()
            took = await asyncio.to_thread(wait_exit, srv, 5)
            limit = 6.0 + extra_time(sig)
            assert time.monotonic() - t0 < limit, f"exit took {time.monotonic() - t0:.1f}s after the signal"
            return took
        finally:
            for r in raws:
                r.close()
            await asyncio.gather(*(ws.close() for ws in subs + [pub_stream]), return_exceptions=True)
    run(main(), 60)


def test_sigterm_idle_server_exits_fast(herald):
    srv = herald()
    srv.signal(signal.SIGTERM)
    took = wait_exit(srv, 5)
    assert took < 3.0, f"idle server took {took:.1f}s to exit"


def test_sigterm_with_stuck_client_bounded_by_shutdown_timeout(herald):
    """A subscriber that never reads cannot hold the process past --shutdown-timeout."""
    srv = herald("--shutdown-timeout", "1", "--slow-policy", "drop-oldest", *DRAIN_ARGS)
    stuck = RawWS.connect(srv.port, "/ws?groups=s", rcvbuf=4096)
    try:
        async def main():
            async with ws_connect(srv.port, "/ws?groups=s") as live:
                body = os.urandom(64 * 1024)
                pub = Publisher(srv.port)
                try:
                    for _ in range(100):  # 6.25 MiB: fills kernel buffers + queue of the stuck one
                        pub.publish(body, group="s", content_type="application/octet-stream")
                        assert await asyncio.wait_for(live.recv(), 5) == body
                finally:
                    pub.close()
                t0 = time.monotonic()
                srv.signal(signal.SIGTERM)
                await expect_ws_close(live, close_code_for(signal.SIGTERM), 5)
                await asyncio.to_thread(wait_exit, srv, 5)
                took = time.monotonic() - t0
                limit = 4.0 + extra_time(signal.SIGTERM)
                assert took < limit, f"exit took {took:.1f}s with --shutdown-timeout 1"
        run(main(), 60)
    finally:
        stuck.close()


def test_no_new_connections_after_sigterm(herald):
    srv = herald("--shutdown-timeout", "2", "--slow-policy", "drop-oldest", *DRAIN_ARGS)
    stuck = RawWS.connect(srv.port, "/ws?groups=s", rcvbuf=4096)
    try:
        pub = Publisher(srv.port)
        body = os.urandom(64 * 1024)
        for _ in range(100):
            pub.publish(body, group="s")
        pub.close()
        srv.signal(signal.SIGTERM)
        time.sleep(0.3)
        if srv.alive():
            # still flushing the stuck client: new WebSocket handshakes must not be served
            try:
                c = RawWS.connect(srv.port, "/ws", timeout=1.0)
            except (OSError, AssertionError, TimeoutError):
                pass
            else:
                c.close()
                pytest.fail("a new WebSocket was accepted after SIGTERM")
        wait_exit(srv, 5)
    finally:
        stuck.close()
