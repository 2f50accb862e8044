"""Robustness: abrupt disconnects during fan-out, partial requests, fd exhaustion (EMFILE), group limits."""

import asyncio
import socket
import struct
import threading
import time

from herald_helpers import (HOST, OP_BINARY, Publisher, RawWS, apublish, build_frame, expect_silence, http_call,
                            metrics, raw_request, recv, recv_n, run, wait_until, ws_connect, ws_request_bytes)


def rst_close(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_subscriber_churn_during_fanout(herald):
    """Subscribers connect and vanish (RST, FIN, mid-handshake) while messages stream out on two
    workers; a stable subscriber still gets every message in order, and nothing crashes."""
    srv = herald()
    N = 400
    stop = threading.Event()
    errors = []

    def churn():
        i = 0
        while not stop.is_set():
            try:
                mode = i % 4
                if mode == 3:
                    s = socket.create_connection((HOST, srv.port), timeout=5)
                    s.sendall(ws_request_bytes(path="/ws?groups=churn")[:40])  # half a handshake
                    rst_close(s)
                else:
                    c = RawWS.connect(srv.port, "/ws?groups=churn,other", rcvbuf=4096 if mode == 1 else None)
                    if mode == 0:
                        rst_close(c.sock)
                    elif mode == 1:
                        time.sleep(0.01)
                        c.close()
                    else:
                        c.recv_frame(2)  # read one message then FIN
                        c.close()
            except (OSError, AssertionError, TimeoutError) as e:
                if not stop.is_set():
                    errors.append(repr(e))
            i += 1

    async def main():
        async with ws_connect(srv.port, "/ws?groups=churn") as stable:
            threads = [threading.Thread(target=churn, daemon=True) for _ in range(3)]
            for t in threads:
                t.start()
            try:
                async with ws_connect(srv.port, "/publish?group=churn") as pub:
                    for i in range(N):
                        await pub.send(struct.pack("!I", i) + bytes(2000))
                        if i % 20 == 0:
                            await asyncio.sleep(0.01)
                got = await recv_n(stable, N, 60)
                assert [struct.unpack("!I", m[:4])[0] for m in got] == list(range(N))
            finally:
                stop.set()
                for t in threads:
                    await asyncio.to_thread(t.join, 10)
        assert not errors, errors[:5]
    run(main(), 120)
    st, _, body = http_call(srv.port, "GET", "/healthz")
    assert st == 200
    # every churned connection is accounted for and released (only our /metrics request is left)
    wait_until(lambda: metrics(srv.port)["herald_connections_open"] <= 1, 10, 0.1,
               "connections_open to return to 1 after churn")
    wait_until(lambda: metrics(srv.port)["herald_queued_bytes"] == 0, 10, 0.1, "queued_bytes to return to 0")


def test_partial_publish_body_then_disconnect(herald):
    srv = herald()

    async def main():
        async with ws_connect(srv.port, "/ws?groups=pp") as s:
            sk = socket.create_connection((HOST, srv.port), timeout=5)
            sk.sendall(b"POST /publish?group=pp HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                       b"Content-Length: 100\r\n\r\nonly ten b")
            time.sleep(0.1)
            sk.close()
            await apublish(srv.port, "sentinel", group="pp", content_type="text/plain")
            assert await recv(s) == "sentinel", "a truncated POST body was published"
            await expect_silence(s, 0.2)
    run(main())


def test_publish_body_split_across_writes(herald):
    srv = herald()

    async def main():
        async with ws_connect(srv.port, "/ws?groups=split") as s:
            body = "sliced body \u2713".encode()
            req = (b"POST /publish?group=split HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                   b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)) + body
            resp = await asyncio.to_thread(raw_request, srv.port, req, 5, True, 7)
            assert resp.status == 200, resp
            assert await recv(s) == body.decode()
    run(main())


def test_default_max_groups_64(herald):
    srv = herald()
    ok = ",".join(f"g{i}" for i in range(64))
    c = RawWS.connect(srv.port, "/ws?groups=" + ok)
    c.close()
    resp = raw_request(srv.port, ws_request_bytes(path="/ws?groups=" + ok + ",g64"))
    assert resp.status == 400, resp


def test_emfile_does_not_spin_or_crash(herald):
    """With RLIMIT_NOFILE=64 and ~100 connections, accept() hits EMFILE: the server must neither
    crash nor spin on the CPU, and must serve again once connections go away."""
    srv = herald(nofile=64)
    socks = []
    try:
        for _ in range(100):
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect((HOST, srv.port))  # completes from the listen backlog even if not accepted
            except OSError:
                s.close()
                break
            socks.append(s)
        time.sleep(0.5)
        cpu0, t0 = srv.cpu_seconds(), time.monotonic()
        time.sleep(1.5)
        used = (srv.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        assert srv.alive(), "server died at EMFILE"
        assert used < 0.5, f"server burns {used * 100:.0f}% CPU while out of file descriptors"
    finally:
        for s in socks:
            s.close()
    # it recovers and serves again
    wait_until(lambda: _healthy(srv.port), 10, 0.2, "server to serve again after EMFILE")

    async def main():
        async with ws_connect(srv.port, "/ws?groups=e") as sub:
            await apublish(srv.port, "back", group="e", content_type="text/plain")
            assert await recv(sub) == "back"
    run(main())


def _healthy(port):
    try:
        return http_call(port, "GET", "/healthz", timeout=1)[0] == 200
    except OSError:
        return False


def test_many_subscribers_many_groups(herald):
    """300 subscribers over 30 groups, a burst to each group: each subscriber gets its group's messages."""
    srv = herald()

    async def main():
        subs = []
        try:
            for i in range(300):
                subs.append((i % 30, await ws_connect(srv.port, f"/ws?groups=mg{i % 30}")))
            pub = Publisher(srv.port)
            try:
                for g in range(30):
                    for k in range(5):
                        await asyncio.to_thread(pub.publish, f"{g}:{k}", f"mg{g}", "text/plain")
            finally:
                pub.close()

            async def check(g, ws):
                assert await recv_n(ws, 5, 20) == [f"{g}:{k}" for k in range(5)]
            await asyncio.gather(*(check(g, ws) for g, ws in subs))
        finally:
            await asyncio.gather(*(ws.close() for _, ws in subs), return_exceptions=True)
    run(main(), 120)


def test_binary_frame_via_raw_pipeline_burst(herald):
    """Many small frames in one TCP write are all parsed and published in order."""
    srv = herald()

    async def main():
        async with ws_connect(srv.port, "/ws?groups=burst") as s:
            p = RawWS.connect(srv.port, "/publish?group=burst")
            try:
                p.send(b"".join(build_frame(OP_BINARY, struct.pack("!I", i)) for i in range(3000)))
                got = await recv_n(s, 3000, 30)
                assert [struct.unpack("!I", m)[0] for m in got] == list(range(3000))
            finally:
                p.close()
    run(main(), 60)




def test_publish_right_after_handshake_is_received(herald):
    """A subscriber whose handshake has completed is registered: a publish accepted afterwards
    (from another connection, possibly another worker) reaches it. Repeated to shake out races."""
    srv = herald()
    pub = Publisher(srv.port)
    try:
        for i in range(100):
            c = RawWS.connect(srv.port, f"/ws?groups=race{i % 3}")
            try:
                pub.publish(f"r{i}", group=f"race{i % 3}", content_type="text/plain")
                assert c.recv_message(5) == (0x1, f"r{i}".encode()), f"iteration {i}"
            finally:
                c.close()
    finally:
        pub.close()
