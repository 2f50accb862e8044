"""Delivery semantics: groups, broadcast-to-all, ordering, exactly-once across workers."""

import asyncio

import pytest

from herald_helpers import (OP_BINARY, OP_TEXT, Publisher, RawWS, apublish, build_frame, close_payload,
                            raw_request, ws_request_bytes,
                            expect_silence, recv, recv_n, run, sub_path, ws_connect)


@pytest.fixture(scope="module")
def srv(herald_module):
    return herald_module()


def test_group_isolation(srv):
    async def main():
        async with ws_connect(srv.port, sub_path("a")) as sa, ws_connect(srv.port, sub_path("b")) as sb:
            pub = Publisher(srv.port)
            try:
                pub.publish("for-a-1", group="a", content_type="text/plain")
                pub.publish("for-b-1", group="b", content_type="text/plain")
                pub.publish("for-a-2", group="a", content_type="text/plain")
            finally:
                pub.close()
            # one publisher => ordered; if b had received a's message it would come first
            assert await recv(sb) == "for-b-1"
            assert await recv(sa) == "for-a-1"
            assert await recv(sa) == "for-a-2"
            await expect_silence(sb, 0.3)
    run(main())


def test_multi_group_subscription(srv):
    async def main():
        async with ws_connect(srv.port, sub_path("a,b")) as sab, \
                ws_connect(srv.port, sub_path("a%2Cb")) as senc, \
                ws_connect(srv.port, sub_path("b")) as sb, \
                ws_connect(srv.port, sub_path("c")) as sc:
            pub = Publisher(srv.port)
            try:
                pub.publish("m1", group="a", content_type="text/plain")
                pub.publish("m2", group="b", content_type="text/plain")
                pub.publish("m3", group="c", content_type="text/plain")
                pub.publish("m4", group="a", content_type="text/plain")
            finally:
                pub.close()
            assert await recv_n(sab, 2) == ["m1", "m2"]
            assert await recv_n(senc, 2) == ["m1", "m2"], "percent-encoded comma must split groups"
            assert await recv(sab) == "m4"
            assert await recv(senc) == "m4"
            assert await recv(sb) == "m2"
            assert await recv(sc) == "m3"
            await expect_silence(sab, 0.2)
            await expect_silence(sb, 0.2)
    run(main())


def test_duplicate_groups_are_merged(srv):
    async def main():
        async with ws_connect(srv.port, sub_path("d,d,d")) as s:
            pub = Publisher(srv.port)
            try:
                pub.publish("x1", group="d", content_type="text/plain")
                pub.publish("x2", group="d", content_type="text/plain")
            finally:
                pub.close()
            # a duplicate delivery of x1 would arrive before x2
            assert await recv_n(s, 2) == ["x1", "x2"]
            await expect_silence(s, 0.2)
    run(main())


def test_broadcast_reaches_everyone_and_groupless_get_only_broadcasts(srv):
    async def main():
        async with ws_connect(srv.port, sub_path("a")) as sa, \
                ws_connect(srv.port, sub_path("a,b")) as sab, \
                ws_connect(srv.port, "/ws") as s0, \
                ws_connect(srv.port, "/ws?") as s1:
            pub = Publisher(srv.port)
            try:
                r = pub.publish("only-a", group="a", content_type="text/plain")
                assert r.get("ok") is True and r.get("group") == "a"
                r = pub.publish("to-all", group=None, content_type="text/plain")
                assert r.get("ok") is True and "group" in r and r["group"] is None, r
            finally:
                pub.close()
            assert await recv_n(sa, 2) == ["only-a", "to-all"]
            assert await recv_n(sab, 2) == ["only-a", "to-all"]
            # group-less subscribers: first (and only) message is the broadcast
            assert await recv(s0) == "to-all"
            assert await recv(s1) == "to-all"
            await expect_silence(s0, 0.2)
    run(main())


def test_streaming_broadcast_without_group(srv):
    async def main():
        async with ws_connect(srv.port, sub_path("zz")) as sz, ws_connect(srv.port, "/ws") as s0, \
                ws_connect(srv.port, "/publish") as pub:
            await pub.send("everyone")
            assert await recv(sz) == "everyone"
            assert await recv(s0) == "everyone"
    run(main())


def test_http_publish_order(srv):
    N = 300

    async def main():
        async with ws_connect(srv.port, sub_path("ord")) as s1, ws_connect(srv.port, sub_path("ord")) as s2:
            def pubs():
                p = Publisher(srv.port)
                try:
                    for i in range(N):
                        p.publish(f"ord-{i}", group="ord", content_type="text/plain")
                finally:
                    p.close()
            t = asyncio.create_task(asyncio.to_thread(pubs))
            want = [f"ord-{i}" for i in range(N)]
            assert await recv_n(s1, N, 30) == want
            assert await recv_n(s2, N, 30) == want
            await t
    run(main())


def test_streaming_publish_order_and_opcodes(srv):
    N = 2000

    async def main():
        async with ws_connect(srv.port, sub_path("sord")) as s1, ws_connect(srv.port, sub_path("sord")) as s2, \
                ws_connect(srv.port, "/publish?group=sord") as pub:
            async def send_all():
                for i in range(N):
                    if i % 3 == 0:
                        await pub.send(f"seq-{i}".encode())  # binary
                    else:
                        await pub.send(f"seq-{i}")  # text
            t = asyncio.create_task(send_all())
            want = [f"seq-{i}".encode() if i % 3 == 0 else f"seq-{i}" for i in range(N)]
            got1 = await recv_n(s1, N, 30)
            got2 = await recv_n(s2, N, 30)
            await t
            for got in (got1, got2):
                for i, (g, w) in enumerate(zip(got, want)):
                    assert type(g) is type(w) and g == w, f"message {i}: got {g!r}, want {w!r}"
    run(main(), 90)


def test_publisher_never_receives_messages(srv):
    async def main():
        async with ws_connect(srv.port, sub_path("self")) as sub, \
                ws_connect(srv.port, "/publish?group=self") as pub, \
                ws_connect(srv.port, "/publish") as pub_all:
            await pub.send("from-stream")
            await pub_all.send("stream-broadcast")
            await apublish(srv.port, "http-to-self", group="self", content_type="text/plain")
            await apublish(srv.port, "http-broadcast", content_type="text/plain")
            got = await recv_n(sub, 4)
            assert sorted(got) == sorted(["from-stream", "stream-broadcast", "http-to-self", "http-broadcast"])
            # everything has been fanned out by now; the publishers must have nothing
            await asyncio.wait_for(await pub.ping(b"p"), 5)
            await asyncio.wait_for(await pub_all.ping(b"p"), 5)
            await expect_silence(pub, 0.3)
            await expect_silence(pub_all, 0.1)
    run(main())


def test_publisher_raw_gets_only_pong(srv):
    """Byte-level: a streaming publisher's socket carries nothing but our pong."""
    async def main():
        async with ws_connect(srv.port, sub_path("rawp")) as sub:
            p = RawWS.connect(srv.port, "/publish?group=rawp")
            try:
                p.send_text("hello")
                await apublish(srv.port, "bcast", content_type="text/plain")
                assert sorted(await recv_n(sub, 2)) == ["bcast", "hello"]
                p.send_frame(0x9, b"only-this")
                f = p.recv_frame(5)
                assert f is not None and f.opcode == 0xA and f.payload == b"only-this", f
            finally:
                p.close()
    run(main())


def test_exactly_once_across_workers(srv):
    """~20 subscribers (spread over both workers) each get every message exactly once, in order."""
    NSUB, N = 20, 150

    async def main():
        subs = []
        try:
            for i in range(NSUB):
                groups = ["eo", "eo,eo2", "eo2,eo", "eo,x%2Cy"][i % 4]
                subs.append(await ws_connect(srv.port, sub_path(groups)))
            raws = [RawWS.connect(srv.port, sub_path("eo")) for _ in range(2)]

            def pubs():
                p = Publisher(srv.port)
                try:
                    for i in range(N):
                        p.publish(f"eo-{i}", group="eo", content_type="text/plain")
                    p.publish("END", group="eo", content_type="text/plain")
                finally:
                    p.close()

            async def stream_pub():
                async with ws_connect(srv.port, "/publish?group=eo") as sp:
                    for i in range(N):
                        await sp.send(f"st-{i}".encode())
                    await sp.send(b"SEND")

            t1 = asyncio.create_task(asyncio.to_thread(pubs))
            t2 = asyncio.create_task(stream_pub())
            want_http = [f"eo-{i}" for i in range(N)] + ["END"]
            want_stream = [f"st-{i}".encode() for i in range(N)] + [b"SEND"]

            async def check(ws):
                got = await recv_n(ws, 2 * (N + 1), 30)
                assert [m for m in got if isinstance(m, str)] == want_http
                assert [m for m in got if isinstance(m, bytes)] == want_stream
            await asyncio.gather(*(check(ws) for ws in subs))
            await t1
            await t2
            for r in raws:
                got = [r.recv_message(10) for _ in range(2 * (N + 1))]
                assert [p.decode() for op, p in got if op == OP_TEXT] == want_http
                assert [p for op, p in got if op == OP_BINARY] == want_stream
            # nothing extra afterwards (a late duplicate would show up here)
            await asyncio.gather(*(expect_silence(ws, 0.3) for ws in subs))
            for r in raws:
                r.ping_roundtrip(b"after")
                r.close()
        finally:
            await asyncio.gather(*(ws.close() for ws in subs), return_exceptions=True)
    run(main(), 120)


def test_subscriber_data_messages_are_ignored(srv):
    async def main():
        async with ws_connect(srv.port, sub_path("ign")) as s1, ws_connect(srv.port, sub_path("ign")) as s2:
            await s1.send("subscriber talking")
            await s1.send(b"\x00\x01")
            await apublish(srv.port, "real", group="ign", content_type="text/plain")
            assert await recv(s2) == "real"
            assert await recv(s1) == "real"
    run(main())


def test_messages_before_publisher_close_are_delivered(srv):
    async def main():
        async with ws_connect(srv.port, sub_path("pc")) as s:
            p = RawWS.connect(srv.port, "/publish?group=pc")
            try:
                frames = b"".join(build_frame(OP_TEXT, f"last-{i}".encode()) for i in range(100))
                p.send(frames + build_frame(0x8, close_payload(1000)))
                p.expect_close(1000)
            finally:
                p.close()
            assert await recv_n(s, 100) == [f"last-{i}" for i in range(100)]
    run(main())


def test_publisher_vanishing_mid_message_publishes_nothing(srv):
    async def main():
        async with ws_connect(srv.port, sub_path("pv")) as s:
            p = RawWS.connect(srv.port, "/publish?group=pv")
            p.send_frame(OP_TEXT, b"half", fin=False)
            p.send(build_frame(OP_BINARY, b"x" * 500)[:100])  # and a truncated frame
            p.close()
            await apublish(srv.port, "sentinel", group="pv", content_type="text/plain")
            assert await recv(s) == "sentinel"
            await expect_silence(s, 0.2)
    run(main())


def test_percent_encoded_group_names(srv):
    async def main():
        async with ws_connect(srv.port, "/ws?groups=%61%62") as sab, \
                ws_connect(srv.port, "/ws?groups=x%3Ay.z") as sxy:
            pub = Publisher(srv.port)
            try:
                pub.publish("to-ab", group="ab", content_type="text/plain")  # plain name
                pub.conn.request("POST", "/publish?group=x%3ay%2ez", body=b"to-x:y.z",
                                 headers={"Content-Type": "text/plain", "Content-Length": "8"})
                r = pub.conn.getresponse()
                body = r.read()
                assert r.status == 200, body
            finally:
                pub.close()
            assert await recv(sab) == "to-ab"
            assert await recv(sxy) == "to-x:y.z"
    run(main())


def test_max_groups_counts_entries_as_written(herald):
    """--max-groups bounds the entries of groups= as written, in one pass: a repeated name counts
    each time (docs/interface.md), while the subscription itself holds it once."""
    srv = herald("--max-groups", "2")
    for groups, status in (("a,b", 101), ("a,a", 101), ("a,b,c", 400), ("a,a,a", 400)):
        resp = raw_request(srv.port, ws_request_bytes(sub_path(groups)), expect_close=status != 101)
        assert resp.status == status, (groups, resp.status, resp.body)
