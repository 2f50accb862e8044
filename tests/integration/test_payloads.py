"""Payload bytes/opcodes unchanged: Content-Type rules, sizes 0..1 MiB, size limits."""

import asyncio
import json
import os
import random

import pytest

from herald_helpers import (MiB, OP_BINARY, OP_TEXT, RawWS, apublish, build_frame, expect_ws_close,
                            http_call, publish_path, recv, run, sub_path, ws_connect)

SIZES = [0, 1, 125, 126, 127, 65535, 65536, 65537, MiB]


@pytest.fixture(scope="module")
def srv(herald_module):
    return herald_module()


def text_of(n, seed=0):
    # valid UTF-8 of exactly n bytes, with multi-byte characters (not only ASCII)
    rnd = random.Random(seed)
    chunks, size = [], 0
    alphabet = ["a", "Z", "\u00e9", "\u20ac", "\U0001f600", " "]
    while size < n:
        c = rnd.choice(alphabet)
        b = len(c.encode())
        if size + b > n:
            c = "x" * (n - size)
            b = n - size
        chunks.append(c)
        size += b
    s = "".join(chunks)
    assert len(s.encode()) == n
    return s


@pytest.mark.parametrize("ctype,expect_text", [
    ("text/plain", True),
    ("text/html;charset=utf-8", True),
    ("text/html; charset=utf-8", True),
    ("Text/Plain", True),
    ("application/json", True),
    ("application/json; charset=utf-8", True),
    ("text/csv", True),
    ("application/octet-stream", False),
    ("image/png", False),
    ("application/javascript", False),
    (None, False),
])
def test_content_type_selects_opcode(srv, ctype, expect_text):
    body = "héllo wörld {\"k\": 1}"

    async def main():
        async with ws_connect(srv.port, sub_path("ct")) as s:
            r = RawWS.connect(srv.port, sub_path("ct"))
            try:
                res = await apublish(srv.port, body, group="ct", content_type=ctype)
                assert res == {"ok": True, "group": "ct", "bytes": len(body.encode())}, res
                m = await recv(s)
                if expect_text:
                    assert m == body, f"{ctype!r} must give a text frame, got {m!r}"
                else:
                    assert m == body.encode(), f"{ctype!r} must give a binary frame, got {m!r}"
                op, payload = r.recv_message()
                assert op == (OP_TEXT if expect_text else OP_BINARY)
                assert payload == body.encode()
            finally:
                r.close()
    run(main())


def test_publish_response_json(srv):
    st, h, body = http_call(srv.port, "POST", "/publish?group=resp", body=b"12345",
                            headers={"Content-Type": "application/octet-stream"})
    assert st == 200
    assert json.loads(body) == {"ok": True, "group": "resp", "bytes": 5}
    st, h, body = http_call(srv.port, "POST", "/publish", body=b"123",
                            headers={"Content-Type": "text/plain"})
    assert st == 200
    assert json.loads(body) == {"ok": True, "group": None, "bytes": 3}


@pytest.mark.parametrize("size", SIZES)
def test_http_sizes(srv, size):
    binary = os.urandom(size)
    text = text_of(size, seed=size)

    async def main():
        async with ws_connect(srv.port, sub_path("sz")) as s:
            r = RawWS.connect(srv.port, sub_path("sz"))  # checks minimal length encoding, unmasked
            try:
                res = await apublish(srv.port, binary, group="sz", content_type="application/octet-stream")
                assert res["bytes"] == size
                res = await apublish(srv.port, text, group="sz", content_type="text/plain; charset=utf-8")
                assert res["bytes"] == size
                m = await recv(s, 20)
                assert isinstance(m, bytes) and m == binary, f"binary payload of {size} bytes corrupted"
                m = await recv(s, 20)
                assert isinstance(m, str) and m == text, f"text payload of {size} bytes corrupted"
                assert r.recv_message(20) == (OP_BINARY, binary)
                assert r.recv_message(20) == (OP_TEXT, text.encode())
            finally:
                r.close()
    run(main(), 90)


@pytest.mark.parametrize("size", SIZES)
def test_streaming_sizes(srv, size):
    binary = os.urandom(size)
    text = text_of(size, seed=size + 1)

    async def main():
        async with ws_connect(srv.port, sub_path("ssz")) as s, \
                ws_connect(srv.port, "/publish?group=ssz") as pub:
            r = RawWS.connect(srv.port, sub_path("ssz"))
            try:
                await pub.send(binary)
                await pub.send(text)
                m = await recv(s, 20)
                assert isinstance(m, bytes) and m == binary
                m = await recv(s, 20)
                assert isinstance(m, str) and m == text
                assert r.recv_message(20) == (OP_BINARY, binary)
                assert r.recv_message(20) == (OP_TEXT, text.encode())
            finally:
                r.close()
    run(main(), 90)


def test_raw_streaming_1mib_in_fragments(srv):
    """A 1 MiB (== limit) message sent as 16 fragments is delivered whole."""
    data = os.urandom(MiB)

    async def main():
        async with ws_connect(srv.port, sub_path("frag1m")) as s:
            p = RawWS.connect(srv.port, "/publish?group=frag1m")
            try:
                step = MiB // 16
                for i in range(16):
                    op = OP_BINARY if i == 0 else 0
                    p.send_frame(op, data[i * step:(i + 1) * step], fin=(i == 15))
                m = await recv(s, 20)
                assert m == data
            finally:
                p.close()
    run(main(), 60)


def test_http_over_limit_413(srv):
    body = b"x" * (MiB + 1)
    st, h, resp = http_call(srv.port, "POST", "/publish?group=big", body=body,
                            headers={"Content-Type": "application/octet-stream"})
    assert st == 413, (st, resp)
    # server still fine, and exactly the limit is accepted
    st, h, resp = http_call(srv.port, "POST", "/publish?group=big", body=b"y" * MiB,
                            headers={"Content-Type": "application/octet-stream"})
    assert st == 200, (st, resp)


def test_http_over_limit_413_nothing_delivered(srv):
    async def main():
        async with ws_connect(srv.port, sub_path("big2")) as s:
            st, _, _ = await asyncio.to_thread(http_call, srv.port, "POST", publish_path("big2"),
                                               b"z" * (MiB + 1), {"Content-Type": "text/plain"})
            assert st == 413
            await apublish(srv.port, "small", group="big2", content_type="text/plain")
            assert await recv(s) == "small"
    run(main())


def test_streaming_over_limit_1009(srv):
    async def main():
        async with ws_connect(srv.port, sub_path("big3")) as s:
            async with ws_connect(srv.port, "/publish?group=big3") as pub:
                await pub.send(b"q" * (MiB + 1))
                await expect_ws_close(pub, 1009, 10)
            await apublish(srv.port, "after", group="big3", content_type="text/plain")
            assert await recv(s) == "after", "the oversize message must not be delivered"
    run(main())


def test_streaming_over_limit_fragmented_1009(srv):
    p = RawWS.connect(srv.port, "/publish?group=big4")
    try:
        half = MiB // 2
        p.send_frame(OP_BINARY, b"a" * half, fin=False)
        p.send_frame(0, b"b" * half, fin=False)
        try:
            p.send_frame(0, b"c", fin=True)
        except OSError:
            pass
        p.expect_close(1009, 10)
    finally:
        p.close()


def test_streaming_raw_header_over_limit_1009(srv):
    """Length in the header alone exceeds the limit: closed without waiting for the payload."""
    p = RawWS.connect(srv.port, "/publish?group=big5")
    try:
        p.send(build_frame(OP_BINARY, b"", length=MiB + 1)[:14])  # header + mask key only
        p.expect_close(1009, 10)
    finally:
        p.close()
