"""permessage-deflate (RFC 7692, issue 11) against the real binary.

Independent clients: Python `websockets` (compression="deflate", its own zlib compressor and
decompressor) and raw sockets with Python's zlib for what a library would not send (fragmented
compressed frames, RSV1 where it is forbidden, bombs, corrupt data), and to look at the RSV1 bit
of what herald sends. Node's `ws` and a real browser are in tests/web.
"""

import asyncio
import json
import os
import random
import struct
import time
import zlib

import pytest
import websockets

from herald_helpers import (HOST, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS,
                            build_frame, http_call, metrics, publish, run, wait_until, ws_connect)

EXT = ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
TAIL = b"\x00\x00\xff\xff"
MIN_SIZE = 128  # --compression-min-size default


def json_payload(n, seed=0):
    """n bytes of realistic, compressible JSON-ish text (valid UTF-8, with some non-ASCII)."""
    rnd = random.Random(seed)
    words = ["order", "shipped", "payment", "received", "caf\u00e9", "na\u00efve", "\u2713", "build"]
    parts = []
    size = 0
    while size < n:
        s = json.dumps({"id": rnd.randrange(10**6), "user": f"user{rnd.randrange(1000)}",
                        "title": " ".join(rnd.choice(words) for _ in range(5))}, ensure_ascii=False)
        parts.append(s)
        size += len(s.encode())
    b = ",".join(parts).encode()[:n]
    while True:  # cut on a character boundary
        try:
            b.decode()
            return b
        except UnicodeDecodeError:
            b = b[:-1] + b"x"


def binary_payload(n, seed=0):
    rnd = random.Random(seed)
    half = rnd.randbytes(n // 2)
    return half + bytes(n - len(half))  # incompressible half, then zeros


def deflate_raw(data, wbits=15, level=6):
    c = zlib.compressobj(level, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


def inflate_raw(data):
    d = zlib.decompressobj(-15)
    return d.decompress(data + TAIL) + d.flush()


# ---------------------------------------------------------------- a raw client that sees RSV1

def parse_frame(buf):
    """(fin, rsv, opcode, payload), consumed — or (None, 0). Unlike herald_helpers'
    parser, RSV1 is allowed (on data frames only)."""
    if len(buf) < 2:
        return None, 0
    b0, b1 = buf[0], buf[1]
    assert not b1 & 0x80
    n, off = b1 & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None, 0
        n, off = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None, 0
        n, off = struct.unpack("!Q", buf[2:10])[0], 10
    if len(buf) < off + n:
        return None, 0
    fin, rsv, op = bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF
    assert rsv in (0, 4), f"RSV2/RSV3 set: {b0:#x}"
    assert not (rsv and op >= 8), "RSV1 on a control frame"
    return (fin, rsv, op, bytes(buf[off:off + n])), off + n


class PmdRaw(RawWS):
    @classmethod
    def open(cls, port, path, offer="permessage-deflate; client_max_window_bits"):
        ws = cls.connect(port, path, extra=[("Sec-WebSocket-Extensions", offer)] if offer else ())
        ws.ext = ws.response.header("sec-websocket-extensions")
        return ws

    def recv_msg(self, timeout=5.0):
        """(opcode, compressed?, payload as received, payload inflated)."""
        deadline = time.monotonic() + timeout
        parts, first = [], None
        while True:
            while True:
                f, used = parse_frame(self.buf)
                if f:
                    del self.buf[:used]
                    break
                assert self._fill(deadline), "EOF while waiting for a message"
            fin, rsv, op, payload = f
            if op in (OP_PING, OP_PONG):
                continue
            assert op != OP_CLOSE, f"close {payload[:2].hex()} {payload[2:]!r}"
            if first is None:
                first = (op, rsv)
            else:
                assert op == OP_CONT and rsv == 0
            parts.append(payload)
            if fin:
                data = b"".join(parts)
                comp = bool(first[1])
                return first[0], comp, data, inflate_raw(data) if comp else data


def stats(port):
    st, _, body = http_call(port, "GET", "/stats")
    assert st == 200
    return json.loads(body)


# ---------------------------------------------------------------- negotiation

A = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


@pytest.mark.parametrize("offer,answer", [
    ("permessage-deflate", A),
    ("permessage-deflate; client_max_window_bits", A),
    ("permessage-deflate; server_no_context_takeover; client_no_context_takeover", A),
    ("permessage-deflate; server_max_window_bits=10; client_max_window_bits=12",
     A + "; server_max_window_bits=10; client_max_window_bits=12"),
    ("permessage-deflate; foo, permessage-deflate; server_max_window_bits=99, permessage-deflate", A),
    ("permessage-deflate; foo=1", None),
    ("permessage-deflate; server_max_window_bits", None),
    ("permessage-deflate; client_no_context_takeover; client_no_context_takeover", None),
    ("x-webkit-deflate-frame", None),
    ("permessage-deflate; server_max_window_bits=\"", None),
])
def test_negotiation(herald, offer, answer):
    h = herald()
    for path in ("/ws?groups=n", "/publish?group=n"):
        ws = PmdRaw.open(h.port, path, offer)
        assert ws.ext == answer, (offer, ws.ext)
        ws.ping_roundtrip()  # the handshake never fails because of an offer
        ws.close()


def test_compression_off(herald):
    h = herald("--compression", "off")
    ws = PmdRaw.open(h.port, "/ws?groups=a")
    assert ws.ext is None
    ws.send_frame(OP_TEXT, deflate_raw(b"hello"), rsv=4)  # RSV1 without the extension
    ws.expect_close(1002)
    st, _, body = http_call(h.port, "GET", "/stats")
    assert json.loads(body)["deflate_messages"] == 0


# ---------------------------------------------------------------- every size, both clients

SIZES = sorted({0, 1, 2, 100, MIN_SIZE - 1, MIN_SIZE, MIN_SIZE + 1, 125, 126, 127, 255, 256, 257,
                1000, 1024, 4096, 32767, 32768, 32769, 65535, 65536, 65537, 262144,
                1048576 - 1, 1048576} | {1 << k for k in range(0, 21)})


def test_every_size_text_and_binary_mixed_subscribers(herald):
    """One group, three subscribers: websockets with deflate, websockets without, and a raw
    socket with the extension that checks RSV1. HTTP publishes of every size, text and binary."""
    h = herald()

    async def main():
        async with ws_connect(h.port, "/ws?groups=s", compression="deflate") as zs, \
                ws_connect(h.port, "/ws?groups=s") as plain:
            assert zs.response_headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
            assert "Sec-WebSocket-Extensions" not in plain.response_headers
            raw = PmdRaw.open(h.port, "/ws?groups=s")
            busy = 0
            for i, n in enumerate(SIZES):
                for text in (True, False):
                    body = json_payload(n, i) if text else binary_payload(n, i)
                    await asyncio.to_thread(publish, h.port, body, "s",
                                            "application/json" if text else "application/octet-stream")
                    want = body.decode() if text else body
                    assert await asyncio.wait_for(zs.recv(), 10) == want, (n, text)
                    assert await asyncio.wait_for(plain.recv(), 10) == want, (n, text)
                    op, comp, wire, data = await asyncio.to_thread(raw.recv_msg, 10)
                    assert (op, data) == (OP_TEXT if text else OP_BINARY, body), (n, text)
                    if n < MIN_SIZE:
                        assert not comp, f"{n} B is under --compression-min-size"
                    elif text and n >= 256 and comp:
                        assert len(wire) < n * 0.8, (n, len(wire))
                    elif text and n >= 256:
                        # plain only from a worker that found the other one compressing it
                        now = stats(h.port)["deflate_busy"]
                        assert now > busy, f"{n} B of text sent uncompressed"
                        busy = now
                    if comp:
                        assert len(wire) < n
            raw.close()
    run(main(), timeout=120)
    s = stats(h.port)
    assert s["deflate_messages"] > 0 and s["deflate_bytes_out"] < s["deflate_bytes_in"]
    assert 0 < s["deflate_ratio"] < 1


def test_websockets_publisher_compressed_every_size(herald):
    """A websockets publisher negotiates deflate and compresses what it sends (context takeover on
    its side): herald inflates; subscribers with and without deflate get the exact payloads."""
    h = herald()
    sizes = [0, 1, 127, 128, 129, 1024, 65536, 1048576]

    async def main():
        async with ws_connect(h.port, "/ws?groups=p", compression="deflate") as zs, \
                ws_connect(h.port, "/ws?groups=p") as plain, \
                ws_connect(h.port, "/publish?group=p", compression="deflate") as pub:
            for i, n in enumerate(sizes):
                for text in (True, False):
                    body = json_payload(n, i).decode() if text else binary_payload(n, i)
                    await pub.send(body)
                    assert await asyncio.wait_for(zs.recv(), 10) == body
                    assert await asyncio.wait_for(plain.recv(), 10) == body
    run(main(), timeout=60)
    s = stats(h.port)
    assert s["inflate_messages"] >= 8 and s["inflate_bytes_out"] > s["inflate_bytes_in"]
    assert s["memory"]["deflate"] > 0


def test_largest_answer_websockets_every_parameter(herald):
    """The longest negotiation answer (every parameter, two-digit window bits) reaches a compliant
    client whole: a 128-byte buffer once cut it to "client_max_window_bits=1", and websockets then
    refused the handshake. A compressed message round-trips through publisher and subscriber."""
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
    h = herald()

    def factory():
        return [ClientPerMessageDeflateFactory(client_no_context_takeover=True,
                                               server_max_window_bits=15,
                                               client_max_window_bits=15)]
    body = json_payload(4096, 7).decode()

    async def main():
        async with ws_connect(h.port, "/ws?groups=big", extensions=factory()) as sub, \
                ws_connect(h.port, "/publish?group=big", extensions=factory()) as pub:
            for ws in (sub, pub):
                assert ws.response_headers["Sec-WebSocket-Extensions"].endswith(
                    "server_max_window_bits=15; client_max_window_bits=15")
                assert ws.extensions, "permessage-deflate not in use"
            await pub.send(body)
            assert await asyncio.wait_for(sub.recv(), 10) == body
    run(main())
    s = stats(h.port)
    assert s["inflate_messages"] >= 1 and s["deflate_messages"] >= 1


def test_compress_once_per_message_and_format(herald):
    """30 deflate subscribers (10 raw, 10 json, 10 msgpack) and one publish: three compressions
    (one per format), 30 compressed deliveries."""
    h = herald()

    async def main():
        subs = []
        for fmt in ("raw", "json", "msgpack"):
            for _ in range(10):
                subs.append(await ws_connect(h.port, f"/ws?groups=o&format={fmt}",
                                             compression="deflate"))
        body = json_payload(4000)
        await asyncio.to_thread(publish, h.port, body, "o", "application/json")
        got = [await asyncio.wait_for(s.recv(), 10) for s in subs]
        assert all(g == body.decode() for g in got[:10])
        for g in got[10:20]:
            assert json.loads(g)["data"] == body.decode()
        for s in subs:
            await s.close()
    run(main())
    s = stats(h.port)
    assert s["deflate_messages"] == 3, s
    # a worker that finds another compressing the same frame sends it plain (deflate_busy)
    assert s["deflate_deliveries"] == 30 or 0 < s["deflate_deliveries"] < 30 and s["deflate_busy"], s


def test_compressed_once_with_workers_racing(herald):
    """4 workers with deflate subscribers each (raw and json), 100 messages of 50 KB published
    back to back: every message and format is compressed exactly once on the node (a worker that
    finds the build claimed sends that delivery plain instead of compressing it again), and every
    subscriber gets every payload intact."""
    h = herald(workers=4)
    nmsg, size = 100, 50_000
    base = json_payload(size, 0).decode()
    bodies = [f"{i:05d}" + base[5:] for i in range(nmsg)]

    async def main():
        subs = [await ws_connect(h.port, f"/ws?groups=race&format={fmt}", compression="deflate")
                for fmt in ("raw", "json") for _ in range(8)]
        async with ws_connect(h.port, "/publish?group=race") as pub:
            for b in bodies:
                await pub.send(b)
        for i, s in enumerate(subs):
            for b in bodies:
                got = await asyncio.wait_for(s.recv(), 20)
                assert (got if i < 8 else json.loads(got)["data"]) == b
        for s in subs:
            await s.close()
    run(main(), timeout=60)
    s = stats(h.port)
    builds = s["deflate_messages"] + s["deflate_not_smaller"]
    assert builds == 2 * nmsg, s
    assert s["deflate_messages"] == 2 * nmsg, s
    assert s["deflate_deliveries"] <= 16 * nmsg, s
    assert s["deflate_deliveries"] + s["deflate_busy"] * 8 >= 16 * nmsg, s


def test_broadcast_to_all_and_history_replay(herald):
    h = herald("--history", "10")
    body = json_payload(2000, 7)

    async def main():
        publish(h.port, body, "r", "application/json")
        st = stats(h.port)
        async with ws_connect(h.port, f"/ws?groups=r&since=r:0&epoch={st['epoch']}&format=json",
                              compression="deflate") as zs:
            env = json.loads(await asyncio.wait_for(zs.recv(), 5))
            assert env["data"] == body.decode() and env["offset"] == 1
            raw = PmdRaw.open(h.port, "/ws")
            await asyncio.to_thread(publish, h.port, body, None, "application/json")
            assert await asyncio.wait_for(zs.recv(), 5) is not None
            op, comp, _, data = await asyncio.to_thread(raw.recv_msg)
            assert comp and data == body and op == OP_TEXT
            raw.close()
    run(main())


def test_server_max_window_bits_honoured(herald):
    """server_max_window_bits=9: frames compressed standalone never reach back further than
    their length, so payloads up to 512 B are compressed and larger ones are sent plain."""
    h = herald()
    raw = PmdRaw.open(h.port, "/ws?groups=w", "permessage-deflate; server_max_window_bits=9")
    assert raw.ext.endswith("server_max_window_bits=9")
    for n, compressed in ((400, True), (512, True), (513, False), (5000, False)):
        body = json_payload(n)
        publish(h.port, body, "w", "application/json")
        op, comp, wire, data = raw.recv_msg()
        assert data == body and comp == compressed, (n, comp)
        if comp:
            d = zlib.decompressobj(-9)  # a 512 B window must be enough
            assert d.decompress(wire + TAIL) == body
    raw.close()


# ---------------------------------------------------------------- inflating what clients send

def test_fragmented_compressed_publish(herald):
    """RSV1 on the first frame only; each message compressed on its own (herald's answer always
    carries client_no_context_takeover)."""
    h = herald()
    sub = PmdRaw.open(h.port, "/ws?groups=f", offer=None)
    pub = PmdRaw.open(h.port, "/publish?group=f")
    assert "client_no_context_takeover" in pub.ext
    msgs = [json_payload(3000, 1), json_payload(3000, 1), json_payload(100, 2), b"", b"x"]
    for m in msgs:
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        z = c.compress(m) + c.flush(zlib.Z_SYNC_FLUSH)
        z = z[:-4]
        cuts = [0, len(z) // 3, 2 * len(z) // 3, len(z)]
        for k in range(3):
            op = OP_TEXT if k == 0 else OP_CONT
            pub.send_frame(op, z[cuts[k]:cuts[k + 1]], fin=(k == 2), rsv=4 if k == 0 else 0)
        op, comp, _, data = sub.recv_msg()
        assert (op, comp, data) == (OP_TEXT, False, m)
    pub.close()
    sub.close()


def test_context_takeover_refused_by_the_answer(herald):
    """A client that keeps its compression context although the answer said
    client_no_context_takeover: its second message reaches back into the first, which herald no
    longer holds: 1007, never a wrong message."""
    h = herald()
    sub = PmdRaw.open(h.port, "/ws?groups=k", offer=None)
    pub = PmdRaw.open(h.port, "/publish?group=k")
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    m = json_payload(3000, 1)
    pub.send_frame(OP_TEXT, (c.compress(m) + c.flush(zlib.Z_SYNC_FLUSH))[:-4], rsv=4)
    assert sub.recv_msg()[3] == m
    pub.send_frame(OP_TEXT, (c.compress(m) + c.flush(zlib.Z_SYNC_FLUSH))[:-4], rsv=4)
    pub.expect_close(1007)
    sub.close()


def test_empty_compressed_payload_is_an_empty_message(herald):
    """RSV1 on a zero-length payload (not what zlib produces for an empty message, 0x00, but seen in
    the wild): an empty message."""
    h = herald()
    sub = PmdRaw.open(h.port, "/ws?groups=e", offer=None)
    pub = PmdRaw.open(h.port, "/publish?group=e")
    for m in (b"first message", None, b"first message again"):
        if m is None:
            pub.send_frame(OP_TEXT, b"", rsv=4)
            assert sub.recv_msg()[3] == b""
            continue
        pub.send_frame(OP_TEXT, deflate_raw(m), rsv=4)
        assert sub.recv_msg()[3] == m
    pub.close()
    sub.close()


def test_client_no_context_takeover_and_bfinal(herald):
    """A client that resets per message, and one that ends messages with a final block (RFC 7692
    7.2.3.4): both inflate."""
    h = herald()
    sub = PmdRaw.open(h.port, "/ws?groups=b", offer=None)
    pub = PmdRaw.open(h.port, "/publish?group=b", "permessage-deflate; client_no_context_takeover")
    assert "client_no_context_takeover" in pub.ext
    for i in range(3):
        body = json_payload(500, i)
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        z = c.compress(body) + c.flush()  # BFINAL=1
        pub.send_frame(OP_BINARY, z + b"\x00", rsv=4)
        assert sub.recv_msg()[3] == body
    pub.close()
    sub.close()


def test_subscriber_inflaters_freed_after_each_message(herald):
    """200 subscribers each send one compressed message: their inflaters (~40 KiB each) are freed
    when the message ends, so the deflate memory kind is back at its baseline (the workers'
    compressors), not 200 windows higher, while they all stay connected."""
    h = herald()
    base = stats(h.port)["memory"]["deflate"]
    subs = []
    try:
        for i in range(200):
            s = PmdRaw.open(h.port, "/ws?groups=m")
            assert "client_no_context_takeover" in s.ext
            s.send_frame(OP_TEXT, deflate_raw(json_payload(2000, i)), rsv=4)
            subs.append(s)
        for s in subs:
            s.ping_roundtrip()  # after its message: inflated and checked
        st = stats(h.port)
        assert st["inflate_messages"] >= 200
        assert st["memory"]["deflate"] <= base + 64 * 1024, (base, st["memory"]["deflate"])
    finally:
        for s in subs:
            s.close()


def test_subscriber_compressed_messages_read_and_ignored(herald):
    h = herald()
    s = PmdRaw.open(h.port, "/ws?groups=i")
    s.send_frame(OP_TEXT, deflate_raw(b"just saying hi " * 50), rsv=4)
    s.ping_roundtrip()
    s.send_frame(OP_TEXT, deflate_raw(b"\xff\xfe not utf-8"), rsv=4)
    s.expect_close(1007)


@pytest.mark.parametrize("case,code", [
    ("rsv1_ping", 1002), ("rsv1_continuation", 1002), ("rsv2", 1002), ("bad_utf8", 1007),
    ("bad_utf8_split", 1007), ("corrupt", 1007), ("truncated_utf8", 1007),
    ("garbage_after_final_block", 1007), ("garbage_after_final_block_split", 1007),
])
def test_bad_compressed_input(herald, case, code):
    h = herald()
    ws = PmdRaw.open(h.port, "/publish?group=x")
    if case == "rsv1_ping":
        ws.send_frame(OP_PING, b"p", rsv=4)
    elif case == "rsv1_continuation":
        ws.send_frame(OP_TEXT, deflate_raw(b"ab"), fin=False, rsv=4)
        ws.send_frame(OP_CONT, deflate_raw(b"cd"), rsv=4)
    elif case == "rsv2":
        ws.send_frame(OP_TEXT, deflate_raw(b"ab"), rsv=2)
    elif case == "bad_utf8":
        ws.send_frame(OP_TEXT, deflate_raw(b"ok so far \xc3\x28"), rsv=4)
    elif case == "bad_utf8_split":
        z = deflate_raw(b"a" * 100 + b"\xed\xa0\x80" + b"b" * 100)  # a surrogate, mid-message
        ws.send_frame(OP_TEXT, z[:5], fin=False, rsv=4)
        ws.send_frame(OP_CONT, z[5:])
    elif case == "corrupt":
        ws.send_frame(OP_BINARY, b"\xff\xff\xff\xff\x13\x37", rsv=4)
    elif case == "truncated_utf8":
        ws.send_frame(OP_TEXT, deflate_raw("caf\u00e9".encode()[:-1]), rsv=4)
    elif case.startswith("garbage_after_final_block"):
        # a whole message in a final block, then bytes herald would otherwise have dropped
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        z = c.compress(b"the message") + c.flush()
        if case.endswith("split"):
            ws.send_frame(OP_BINARY, z + b"\x00", fin=False, rsv=4)
            ws.send_frame(OP_CONT, b"more data")
        else:
            ws.send_frame(OP_BINARY, z + b"\x00more data", rsv=4)
    ws.expect_close(code)


def test_rsv1_without_negotiation(herald):
    h = herald()
    ws = PmdRaw.open(h.port, "/publish?group=x", offer=None)
    ws.send_frame(OP_TEXT, deflate_raw(b"hello"), rsv=4)
    ws.expect_close(1002)


def bomb(n):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    z = bytearray()
    chunk = bytes(1 << 20)
    for _ in range(n >> 20):
        z += c.compress(chunk)
    z += c.flush(zlib.Z_SYNC_FLUSH)
    return bytes(z[:-4])


def test_publisher_bomb_closed_1009_rss_flat(herald):
    """64 MiB of zeros in ~64 KiB: the inflated size counts against --max-message-size (1 MiB)
    as it grows; close 1009 without allocating past it."""
    h = herald()
    sub = PmdRaw.open(h.port, "/ws?groups=bomb", offer=None)
    z = bomb(64 << 20)
    assert len(z) < 128 * 1024
    before = h.rss_kb()
    pub = PmdRaw.open(h.port, "/publish?group=bomb")
    pub.send_frame(OP_BINARY, z, rsv=4)
    pub.expect_close(1009)
    grown = h.rss_kb() - before
    assert grown < 4 * 1024, f"RSS grew {grown} KiB"
    sub.ping_roundtrip()
    with pytest.raises(TimeoutError):
        sub.recv_msg(timeout=0.3)
    assert stats(h.port)["messages_published"] == 0


def test_subscriber_bombs_count_against_the_frame_rate(herald):
    """A subscriber's messages go nowhere, but each 16 KiB it makes herald inflate counts as a frame
    against --client-frame-rate (100/s): 1 MiB inflated from ~1 KiB = 64 frames, so the second
    such message within a second closes it with 1008."""
    h = herald()
    s = PmdRaw.open(h.port, "/ws?groups=bomb3")
    z = deflate_raw(bytes(1 << 20), level=9)
    assert len(z) < 2048
    for _ in range(3):
        try:
            s.send_frame(OP_BINARY, z, rsv=4)
        except OSError:
            break
    s.expect_close(1008)
    assert stats(h.port)["inflate_bytes_out"] <= 2 * (1 << 20) + 16384 * 40


def test_subscriber_partial_chunks_add_up_against_the_frame_rate(herald):
    """Messages that each inflate to just under 16 KiB are charged too: the inflated bytes add up
    per connection (80 messages x 16,000 bytes = 80 frames + 78 charged > 100/s: 1008). Counting
    only full 16 KiB chunks per data event charged them nothing."""
    h = herald()
    s = PmdRaw.open(h.port, "/ws?groups=partial")
    z = deflate_raw(bytes(16000), level=9)
    s.sock.sendall(b"".join(build_frame(OP_BINARY, z, rsv=4) for _ in range(80)))
    s.expect_close(1008)
    st = stats(h.port)
    assert st["rate_limited"] >= 1


def test_subscriber_bomb_large_limit_rss_flat(herald):
    """With --max-message-size 128m (and no frame rate limit) a subscriber's 64 MiB-inflating
    message is legal: it is inflated in 16 KiB steps, checked and dropped, so memory stays flat."""
    h = herald("--max-message-size", "128m", "--client-frame-rate", "0")
    s = PmdRaw.open(h.port, "/ws?groups=bomb2")
    z = bomb(64 << 20)
    before = h.rss_kb()
    s.send_frame(OP_BINARY, z, rsv=4)
    s.ping_roundtrip(timeout=20)
    grown = h.rss_kb() - before
    assert grown < 4 * 1024, f"RSS grew {grown} KiB"
    st = stats(h.port)
    assert st["inflate_bytes_out"] == 64 << 20
    # a subscriber's inflater goes when its message ends (client_no_context_takeover)
    assert st["memory"]["deflate"] == 0
    s.send_close(1000)
    s.expect_close(1000)
