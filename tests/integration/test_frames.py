"""RFC 6455 framing on raw sockets: ping/pong, fragmentation, every protocol-error class with its
close code, close handshake echo, UTF-8 validation (fail-fast), message size limit."""

import asyncio
import os

import pytest

from herald_helpers import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS, apublish,
                            build_frame, close_payload, expect_silence, recv, run, sub_path, ws_connect)

LIMIT = 1000
ENDPOINTS = ["/ws?groups=pe", "/publish?group=pe-none"]


@pytest.fixture(scope="module")
def srv(herald_module):
    return herald_module("--max-message-size", str(LIMIT))


@pytest.fixture(params=ENDPOINTS, ids=["sub", "pub"])
def endpoint(request):
    return request.param


def check_error(srv, path, frames, code, timeout=5.0):
    c = RawWS.connect(srv.port, path)
    try:
        for fr in frames:
            try:
                c.send(fr)
            except OSError:
                break
        c.expect_close(code, timeout)
    finally:
        c.close()


# ---------------------------------------------------------------- ping / pong

@pytest.mark.parametrize("payload", [b"", b"hello", bytes(range(125)), "ünïcödé".encode()])
def test_ping_pong_same_payload(srv, endpoint, payload):
    c = RawWS.connect(srv.port, endpoint)
    try:
        c.send_frame(OP_PING, payload)
        c.expect_pong(payload)
        # a second one on the same connection
        c.send_frame(OP_PING, payload[::-1])
        c.expect_pong(payload[::-1])
    finally:
        c.close()


def test_unsolicited_pong_ignored(srv, endpoint):
    c = RawWS.connect(srv.port, endpoint)
    try:
        c.send_frame(OP_PONG, b"unsolicited")
        c.send_frame(OP_PONG, b"")
        c.ping_roundtrip(b"still-alive")
    finally:
        c.close()


def test_websockets_ping(srv):
    async def main():
        async with ws_connect(srv.port, sub_path("wsp")) as s, ws_connect(srv.port, "/publish?group=wsp") as p:
            for payload in (b"abc", b"", os.urandom(125)):
                await asyncio.wait_for(await s.ping(payload), 5)
                await asyncio.wait_for(await p.ping(payload), 5)
    run(main())


def test_masked_frames_split_across_tcp_writes(srv):
    """A frame delivered byte by byte must be reassembled (server reads are incremental)."""
    c = RawWS.connect(srv.port, "/ws")
    try:
        fr = build_frame(OP_PING, b"byte-by-byte")
        for i in range(len(fr)):
            c.send(fr[i:i + 1])
        c.expect_pong(b"byte-by-byte")
    finally:
        c.close()


# ---------------------------------------------------------------- fragmentation

def test_fragmented_text_with_interleaved_pings(srv):
    async def main():
        async with ws_connect(srv.port, sub_path("frag")) as s:
            r = RawWS.connect(srv.port, sub_path("frag"))
            p = RawWS.connect(srv.port, "/publish?group=frag")
            try:
                p.send_frame(OP_TEXT, b"Hello, ", fin=False)
                p.send_frame(OP_PING, b"p1")
                p.expect_pong(b"p1")  # answered while the message is still open
                p.send_frame(OP_CONT, b"wor", fin=False)
                p.send_frame(OP_PING, b"p2")
                p.send_frame(OP_CONT, b"", fin=False)  # empty fragment is legal
                p.send_frame(OP_CONT, b"ld! \xc3", fin=False)  # UTF-8 char split across fragments
                p.send_frame(OP_CONT, b"\xa9", fin=True)
                p.expect_pong(b"p2")
                want = "Hello, world! \u00e9"
                assert await recv(s) == want
                assert r.recv_message() == (OP_TEXT, want.encode())
                # it was one message: the next one is a new message
                p.send_frame(OP_TEXT, b"next")
                assert await recv(s) == "next"
                assert r.recv_message() == (OP_TEXT, b"next")
            finally:
                p.close()
                r.close()
    run(main())


def test_fragmented_binary_and_utf8_byte_per_fragment(srv):
    async def main():
        async with ws_connect(srv.port, sub_path("frag2")) as s:
            p = RawWS.connect(srv.port, "/publish?group=frag2")
            try:
                data = bytes(range(256)) * 3
                p.send_frame(OP_BINARY, data[:1], fin=False)
                for i in range(1, len(data), 100):
                    p.send_frame(OP_CONT, data[i:i + 100], fin=False)
                p.send_frame(OP_CONT, b"", fin=True)
                assert await recv(s) == data
                text = "\u20ac\U0001f600\u00e9a".encode()
                p.send_frame(OP_TEXT, text[:1], fin=False)
                for i in range(1, len(text)):
                    p.send_frame(OP_CONT, text[i:i + 1], fin=(i == len(text) - 1))
                assert await recv(s) == text.decode()
            finally:
                p.close()
    run(main())


def test_message_exactly_at_limit_delivered(srv):
    async def main():
        async with ws_connect(srv.port, sub_path("lim")) as s:
            p = RawWS.connect(srv.port, "/publish?group=lim")
            try:
                p.send_frame(OP_BINARY, b"a" * LIMIT)
                p.send_frame(OP_TEXT, b"b" * 600, fin=False)
                p.send_frame(OP_CONT, b"c" * 400, fin=True)
                assert await recv(s) == b"a" * LIMIT
                assert await recv(s) == "b" * 600 + "c" * 400
            finally:
                p.close()
    run(main())


# ---------------------------------------------------------------- protocol errors → 1002

PROTO_1002 = {
    "unmasked-text": [build_frame(OP_TEXT, b"hi", mask=False)],
    "unmasked-ping": [build_frame(OP_PING, b"hi", mask=False)],
    "unmasked-close": [build_frame(OP_CLOSE, close_payload(1000), mask=False)],
    "rsv1": [build_frame(OP_TEXT, b"hi", rsv=4)],
    "rsv2": [build_frame(OP_TEXT, b"hi", rsv=2)],
    "rsv3": [build_frame(OP_TEXT, b"hi", rsv=1)],
    "rsv-all-binary": [build_frame(OP_BINARY, b"hi", rsv=7)],
    "rsv1-ping": [build_frame(OP_PING, b"hi", rsv=4)],
    "ping-126": [build_frame(OP_PING, b"p" * 126)],
    "pong-126": [build_frame(OP_PONG, b"p" * 126)],
    "close-126": [build_frame(OP_CLOSE, close_payload(1000, b"r" * 124))],
    "fragmented-ping": [build_frame(OP_PING, b"hi", fin=False)],
    "fragmented-pong": [build_frame(OP_PONG, b"hi", fin=False)],
    "fragmented-close": [build_frame(OP_CLOSE, close_payload(1000), fin=False)],
    "continuation-without-start": [build_frame(OP_CONT, b"x", fin=True)],
    "continuation-without-start-nofin": [build_frame(OP_CONT, b"x", fin=False)],
    "text-while-fragmented": [build_frame(OP_TEXT, b"a", fin=False), build_frame(OP_TEXT, b"b", fin=True)],
    "binary-while-fragmented": [build_frame(OP_TEXT, b"a", fin=False), build_frame(OP_BINARY, b"b", fin=True)],
    "binary-while-fragmented-binary": [build_frame(OP_BINARY, b"a", fin=False),
                                       build_frame(OP_BINARY, b"b", fin=False)],
    "continuation-after-complete": [build_frame(OP_TEXT, b"a", fin=True), build_frame(OP_CONT, b"b")],
    "close-1-byte": [build_frame(OP_CLOSE, b"\x03")],
}
for _op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF):
    PROTO_1002[f"reserved-opcode-{_op:x}"] = [build_frame(_op, b"x")]
    PROTO_1002[f"reserved-opcode-{_op:x}-empty"] = [build_frame(_op, b"")]
PROTO_1002["reserved-opcode-mid-fragment"] = [build_frame(OP_TEXT, b"a", fin=False), build_frame(0x3, b"")]
for _code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535):
    PROTO_1002[f"close-code-{_code}"] = [build_frame(OP_CLOSE, close_payload(_code))]


@pytest.mark.parametrize("case", sorted(PROTO_1002))
def test_protocol_error_1002(srv, endpoint, case):
    check_error(srv, endpoint, PROTO_1002[case], 1002)


def test_protocol_error_after_valid_traffic(srv):
    """A good message first, then a bad frame: still 1002 (state machine, not first-frame only)."""
    c = RawWS.connect(srv.port, "/publish?group=pe-none")
    try:
        c.send_frame(OP_TEXT, b"fine")
        c.ping_roundtrip(b"x")
        c.send_frame(OP_TEXT, b"x", mask=False)
        c.expect_close(1002)
    finally:
        c.close()


def test_huge_64bit_length_rejected(srv, endpoint):
    # most significant bit of a 64-bit length must be 0 (RFC 6455 5.2); either way it is over the limit
    fr = build_frame(OP_BINARY, b"", length=1 << 63)[:14]
    check_error(srv, endpoint, [fr], (1002, 1009))


# ---------------------------------------------------------------- UTF-8 → 1007

BAD_UTF8 = {
    "ff": b"\xff",
    "fe": b"abc\xfe",
    "overlong-slash": b"\xc0\xaf",
    "overlong-3": b"\xe0\x80\xaf",
    "overlong-4": b"\xf0\x80\x80\xaf",
    "surrogate": b"\xed\xa0\x80",
    "above-10ffff": b"\xf4\x90\x80\x80",
    "f5": b"\xf5\x80\x80\x80",
    "lone-continuation": b"a\x80b",
    "truncated-at-end": b"abc\xe2\x82",
    "truncated-then-ascii": b"\xe2\x82a",
}


@pytest.mark.parametrize("case", sorted(BAD_UTF8))
def test_text_invalid_utf8_1007(srv, endpoint, case):
    check_error(srv, endpoint, [build_frame(OP_TEXT, BAD_UTF8[case])], 1007)


@pytest.mark.parametrize("case", sorted(BAD_UTF8))
def test_text_invalid_utf8_in_fragments_1007(srv, endpoint, case):
    bad = BAD_UTF8[case]
    frames = [build_frame(OP_TEXT, b"ok ", fin=False), build_frame(OP_CONT, bad, fin=False),
              build_frame(OP_CONT, b" end", fin=True)]
    check_error(srv, endpoint, frames, 1007)


FAIL_FAST = {
    "ff": b"hello\xff",
    "overlong": b"hello\xc0",
    "surrogate-prefix": b"hello\xed\xa0",
    "above-10ffff-prefix": b"hello\xf4\x90",
    "f8": b"\xf8",
    "lone-continuation": b"\x80",
}


@pytest.mark.parametrize("case", sorted(FAIL_FAST))
def test_text_invalid_utf8_fails_fast(srv, endpoint, case):
    """An invalid byte in the FIRST fragment of an unfinished message → 1007 before the message ends."""
    check_error(srv, endpoint, [build_frame(OP_TEXT, FAIL_FAST[case], fin=False)], 1007)


@pytest.mark.parametrize("first,second", [(b"ok\xed", b"\xa0\x80"), (b"\xf4", b"\x90"), (b"\xe2\x82", b"a")],
                         ids=["surrogate", "above-10ffff", "truncated"])
def test_text_invalid_utf8_across_fragment_boundary_fails_fast(srv, endpoint, first, second):
    """The invalid sequence starts in one fragment and is completed (wrongly) in the next, which is not final."""
    frames = [build_frame(OP_TEXT, first, fin=False), build_frame(OP_CONT, second, fin=False)]
    check_error(srv, endpoint, frames, 1007)


def test_valid_utf8_prefix_not_rejected_early(srv):
    """A fragment ending in an incomplete (but valid so far) sequence must not be rejected."""
    async def main():
        async with ws_connect(srv.port, sub_path("u8ok")) as s:
            p = RawWS.connect(srv.port, "/publish?group=u8ok")
            try:
                p.send_frame(OP_TEXT, b"x\xf0\x9f", fin=False)
                p.ping_roundtrip(b"mid")
                p.send_frame(OP_CONT, b"\x98", fin=False)
                p.ping_roundtrip(b"mid2")
                p.send_frame(OP_CONT, b"\x80y", fin=True)
                assert await recv(s) == "x\U0001f600y"
            finally:
                p.close()
    run(main())


def test_invalid_utf8_in_binary_is_fine(srv):
    async def main():
        async with ws_connect(srv.port, sub_path("u8bin")) as s:
            p = RawWS.connect(srv.port, "/publish?group=u8bin")
            try:
                p.send_frame(OP_BINARY, b"\xff\xfe\xed\xa0\x80")
                assert await recv(s) == b"\xff\xfe\xed\xa0\x80"
            finally:
                p.close()
    run(main())


def test_close_reason_invalid_utf8_1007(srv, endpoint):
    check_error(srv, endpoint, [build_frame(OP_CLOSE, close_payload(1000, b"bad \xff reason"))], 1007)


# ---------------------------------------------------------------- size limit → 1009

def test_too_big_single_frame_1009(srv, endpoint):
    check_error(srv, endpoint, [build_frame(OP_BINARY, b"x" * (LIMIT + 1))], 1009)


def test_too_big_text_frame_1009(srv, endpoint):
    check_error(srv, endpoint, [build_frame(OP_TEXT, b"x" * (LIMIT + 1))], 1009)


def test_too_big_fragmented_1009(srv, endpoint):
    frames = [build_frame(OP_TEXT, b"a" * 600, fin=False), build_frame(OP_CONT, b"b" * 401, fin=True)]
    check_error(srv, endpoint, frames, 1009)


def test_too_big_fragmented_unfinished_1009(srv, endpoint):
    frames = [build_frame(OP_BINARY, b"a" * 600, fin=False), build_frame(OP_CONT, b"b" * 600, fin=False)]
    check_error(srv, endpoint, frames, 1009)


def test_too_big_not_delivered(srv):
    async def main():
        async with ws_connect(srv.port, sub_path("big")) as s:
            check_error(srv, "/publish?group=big", [build_frame(OP_BINARY, b"x" * (LIMIT + 1))], 1009)
            await apublish(srv.port, "after", group="big", content_type="text/plain")
            assert await recv(s) == "after"
    run(main())


# ---------------------------------------------------------------- close handshake

@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999])
def test_valid_close_echoed(srv, endpoint, code):
    c = RawWS.connect(srv.port, endpoint)
    try:
        c.send_close(code, b"")
        c.expect_close(code)
    finally:
        c.close()


def test_close_with_reason_echoed(srv, endpoint):
    c = RawWS.connect(srv.port, endpoint)
    try:
        c.send_close(1000, "bye \u2713".encode())
        c.expect_close(1000)
    finally:
        c.close()


def test_close_with_max_reason_echoed(srv, endpoint):
    c = RawWS.connect(srv.port, endpoint)
    try:
        c.send_close(4001, b"r" * 123)  # 125-byte payload: the maximum
        c.expect_close(4001)
    finally:
        c.close()


def test_empty_close_answered_with_1000(srv, endpoint):
    c = RawWS.connect(srv.port, endpoint)
    try:
        c.send_frame(OP_CLOSE, b"")
        f = c.expect_close((1000, None))
        # interface.md: "1000 when the client sent none"
        assert f.close_code == 1000, f"empty close answered with {f!r}, contract says 1000"
    finally:
        c.close()


def test_close_in_the_middle_of_fragmented_message(srv, endpoint):
    c = RawWS.connect(srv.port, endpoint)
    try:
        c.send_frame(OP_TEXT, b"part", fin=False)
        c.send_close(1000)
        c.expect_close(1000)
    finally:
        c.close()


def test_frames_after_close_are_ignored(srv):
    async def main():
        async with ws_connect(srv.port, sub_path("aftc")) as s:
            c = RawWS.connect(srv.port, "/publish?group=aftc")
            try:
                c.send(build_frame(OP_CLOSE, close_payload(1000)) + build_frame(OP_TEXT, b"ghost"))
                c.expect_close(1000)
            finally:
                c.close()
            await apublish(srv.port, "real", group="aftc", content_type="text/plain")
            assert await recv(s) == "real", "a frame sent after the close frame was delivered"
            await expect_silence(s, 0.2)
    run(main())


def test_websockets_client_close(srv):
    async def main():
        ws = await ws_connect(srv.port, sub_path("wsc"))
        await asyncio.wait_for(ws.close(4321, "done"), 5)
        assert ws.close_code == 4321, f"server did not echo 4321 (got {ws.close_code})"
    run(main())
