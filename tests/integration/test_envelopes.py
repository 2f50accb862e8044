"""Message envelopes (issue 5): /ws?format=raw|json|msgpack.

json:    text frame {"group":"g"|null,"offset":N,"epoch":"E","data":"..."}, binary payloads base64
         with "binary":true.
msgpack: binary frame, a map group/offset/epoch/data (data str for text, bin for binary).
raw:     byte-identical to what was published (the default).
Offsets: per group from 1, +1 per message, one order for every subscriber on every worker, also
with two publishers (HTTP and WebSocket) racing on the same group; broadcasts to all have their own
sequence. Every wait is bounded.
"""

import asyncio
import base64
import itertools
import json
import re
import threading

import pytest

from herald_helpers import (OP_BINARY, OP_TEXT, Publisher, RawWS, apublish, expect_silence,
                            metrics, raw_request, recv, recv_n, run, ws_connect,
                            ws_request_bytes)

try:
    import msgpack
except ImportError:  # pragma: no cover - Debian python3-msgpack is installed by the test setup
    msgpack = None

EPOCH_RE = re.compile(r"^[0-9a-f]{16}$")
_names = itertools.count()


def fresh(prefix="g"):
    """A group name no other test of the module uses (so its offsets start at 1)."""
    return f"{prefix}{next(_names)}"


def sub(groups=None, fmt=None):
    q = []
    if groups is not None:
        q.append("groups=" + groups)
    if fmt is not None:
        q.append("format=" + fmt)
    return "/ws" + ("?" + "&".join(q) if q else "")


# ---------------------------------------------------------------------------
# msgpack decoding: python3-msgpack when present, else a hand decoder for the fixed schema
# ---------------------------------------------------------------------------

def _mp_decode(b, i=0):
    t = b[i]
    if t <= 0x7F:
        return t, i + 1
    if 0x80 <= t <= 0x8F or t in (0xDE, 0xDF):
        if t <= 0x8F:
            n, i = t & 0x0F, i + 1
        elif t == 0xDE:
            n, i = int.from_bytes(b[i + 1:i + 3], "big"), i + 3
        else:
            n, i = int.from_bytes(b[i + 1:i + 5], "big"), i + 5
        pairs = []
        for _ in range(n):
            k, i = _mp_decode(b, i)
            v, i = _mp_decode(b, i)
            pairs.append((k, v))
        return pairs, i
    if 0xA0 <= t <= 0xBF:
        n = t & 0x1F
        return b[i + 1:i + 1 + n].decode("utf-8"), i + 1 + n
    if t == 0xC0:
        return None, i + 1
    sizes = {0xD9: 1, 0xDA: 2, 0xDB: 4}  # str8/16/32
    if t in sizes:
        w = sizes[t]
        n = int.from_bytes(b[i + 1:i + 1 + w], "big")
        s = i + 1 + w
        return b[s:s + n].decode("utf-8"), s + n
    bins = {0xC4: 1, 0xC5: 2, 0xC6: 4}
    if t in bins:
        w = bins[t]
        n = int.from_bytes(b[i + 1:i + 1 + w], "big")
        s = i + 1 + w
        return bytes(b[s:s + n]), s + n
    uints = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
    if t in uints:
        w = uints[t]
        return int.from_bytes(b[i + 1:i + 1 + w], "big"), i + 1 + w
    raise AssertionError(f"unexpected msgpack type byte {t:#x} at {i}")


def mp_pairs(frame):
    """Decode one msgpack envelope into an ordered list of (key, value)."""
    assert isinstance(frame, bytes), f"msgpack envelope must be a binary frame, got {frame!r:.80}"
    if msgpack is not None:
        pairs = msgpack.unpackb(frame, raw=False, object_pairs_hook=list, strict_map_key=False)
        assert isinstance(pairs, list), pairs
        hand, end = _mp_decode(frame)  # the hand decoder must agree (it checks the exact types)
        assert end == len(frame) and hand == pairs, (hand, pairs)
        return pairs
    pairs, end = _mp_decode(frame)
    assert end == len(frame), "trailing bytes after the msgpack envelope"
    return pairs


def mp_env(frame):
    pairs = mp_pairs(frame)
    assert [k for k, _ in pairs] == ["group", "offset", "epoch", "data"], pairs
    return dict(pairs)


def json_env(frame):
    assert isinstance(frame, str), f"json envelope must be a text frame, got {frame!r:.80}"
    d = json.loads(frame)
    assert isinstance(d, dict), d
    want = {"group", "offset", "epoch", "data"} | ({"binary"} if "binary" in d else set())
    assert set(d) == want, f"unexpected keys in {frame!r:.200}"
    if "binary" in d:
        assert d["binary"] is True, frame
    assert isinstance(d["offset"], int) and d["offset"] >= 1, frame
    assert EPOCH_RE.match(d["epoch"]), frame
    return d


def json_data(d):
    """The payload an envelope carries: bytes for binary, str for text."""
    return base64.b64decode(d["data"], validate=True) if d.get("binary") else d["data"]


@pytest.fixture(scope="module")
def srv(herald_module):
    return herald_module()


# ---------------------------------------------------------------------------
# json
# ---------------------------------------------------------------------------

TEXTS = [
    "hello",
    "",
    'say "hi"',
    "back\\slash \\\\ \\n not-a-newline",
    "ctl:\n\r\t\b\f\x00\x01\x1f\x7f end",
    "".join(chr(c) for c in range(0x20)),
    "caf\u00e9 \u20ac \U0001f600 \u2028\u2029 \ufeff \u65e5\u672c\u8a9e",
    '{"looks":"like json","n":[1,2]}',
    "</script><!-- & ' ",
]


def test_json_text_envelopes(srv):
    g = fresh("jt")

    async def main():
        async with ws_connect(srv.port, sub(g, "json")) as s:
            pub = Publisher(srv.port)
            try:
                for t in TEXTS:
                    pub.publish(t.encode("utf-8"), group=g, content_type="text/plain; charset=utf-8")
            finally:
                pub.close()
            frames = await recv_n(s, len(TEXTS))
            envs = [json_env(f) for f in frames]
            epoch = envs[0]["epoch"]
            for i, (t, d) in enumerate(zip(TEXTS, envs)):
                assert d["group"] == g
                assert d["offset"] == i + 1, f"offsets of a fresh group start at 1 and go +1: {envs}"
                assert d["epoch"] == epoch
                assert "binary" not in d
                assert d["data"] == t, f"payload {i} changed: {t!r} -> {d['data']!r}"
            # the documented key order and compact form, byte for byte
            assert frames[0] == ('{"group":"%s","offset":1,"epoch":"%s","data":"hello"}' % (g, epoch))
            await expect_silence(s, 0.2)
    run(main())


def test_json_large_text(srv):
    g = fresh("jl")
    body = ("\"\\\n\u00e9" * 20000) + "x" * 70000  # ~190 KB, escapes expand it well beyond 64 KiB

    async def main():
        async with ws_connect(srv.port, sub(g, "json")) as s:
            await apublish(srv.port, body.encode(), group=g, content_type="text/plain")
            d = json_env(await recv(s, 10))
            assert d["data"] == body and d["offset"] == 1
    run(main())


def test_json_binary_base64(srv):
    g = fresh("jb")
    payloads = [b"\x00", b"\xff\xfe\xfd", bytes(range(256)), b"", b"ab", b"plain ascii but binary",
                bytes(range(256)) * 300]

    async def main():
        async with ws_connect(srv.port, sub(g, "json")) as s:
            pub = Publisher(srv.port)
            try:
                for p in payloads:
                    pub.publish(p, group=g, content_type="application/octet-stream")
            finally:
                pub.close()
            frames = await recv_n(s, len(payloads))
            for i, (p, f) in enumerate(zip(payloads, frames)):
                d = json_env(f)  # a text frame even for binary payloads
                assert d.get("binary") is True, f
                assert d["offset"] == i + 1
                assert base64.b64decode(d["data"], validate=True) == p
                assert d["data"] == base64.b64encode(p).decode(), "standard base64 with padding"
            f0 = json.loads(frames[0])
            assert list(f0) == ["group", "offset", "epoch", "binary", "data"], list(f0)
    run(main())


def test_broadcast_envelope_has_null_group_and_own_sequence(srv):
    g = fresh("bc")

    async def main():
        async with ws_connect(srv.port, sub(None, "json")) as s_all, \
                ws_connect(srv.port, sub(g, "json")) as s_g, \
                ws_connect(srv.port, sub(None, "msgpack")) as s_mp:
            pub = Publisher(srv.port)
            try:
                pub.publish("to everyone 1", content_type="text/plain")
                pub.publish("only group", group=g, content_type="text/plain")
                pub.publish(b"\x01\x02", content_type="application/octet-stream")
            finally:
                pub.close()
            a1, a2 = [json_env(x) for x in await recv_n(s_all, 2)]
            assert a1["group"] is None and a2["group"] is None
            assert a1["data"] == "to everyone 1"
            assert a2["binary"] is True and base64.b64decode(a2["data"]) == b"\x01\x02"
            # broadcasts have their own sequence (other tests of the module may have broadcast before)
            assert a2["offset"] == a1["offset"] + 1
            g1, g2, g3 = [json_env(x) for x in await recv_n(s_g, 3)]
            assert (g1["group"], g1["offset"]) == (None, a1["offset"])
            assert (g2["group"], g2["offset"], g2["data"]) == (g, 1, "only group")
            assert (g3["group"], g3["offset"]) == (None, a2["offset"])
            m1, m2 = [mp_env(x) for x in await recv_n(s_mp, 2)]
            assert m1 == {"group": None, "offset": a1["offset"], "epoch": a1["epoch"], "data": "to everyone 1"}
            assert m2 == {"group": None, "offset": a2["offset"], "epoch": a1["epoch"], "data": b"\x01\x02"}
            # the HTTP answer still says group null
            res = await apublish(srv.port, "x", content_type="text/plain")
            assert res["group"] is None
            a3 = json_env(await recv(s_all))
            assert a3["offset"] == a2["offset"] + 1
            await expect_silence(s_all, 0.2)
    run(main())


def test_offsets_consecutive_per_group_and_independent(srv):
    ga, gb, gc = fresh("oa"), fresh("ob"), fresh("oc")
    seq = [ga, gb, ga, ga, gc, gb, ga, gc, gb, gb]

    async def main():
        async with ws_connect(srv.port, sub(f"{ga},{gb},{gc}", "json")) as s_all, \
                ws_connect(srv.port, sub(gb, "json")) as s_b:
            pub = Publisher(srv.port)
            try:
                for i, g in enumerate(seq):
                    pub.publish(f"m{i}", group=g, content_type="text/plain")
            finally:
                pub.close()
            envs = [json_env(f) for f in await recv_n(s_all, len(seq))]
            counters = {ga: 0, gb: 0, gc: 0}
            for i, (g, d) in enumerate(zip(seq, envs)):
                counters[g] += 1
                assert (d["group"], d["offset"], d["data"]) == (g, counters[g], f"m{i}"), envs
            assert len({d["epoch"] for d in envs}) == 1
            bs = [json_env(f) for f in await recv_n(s_b, 4)]
            assert [d["offset"] for d in bs] == [1, 2, 3, 4]
            assert [d["data"] for d in bs] == [f"m{i}" for i, g in enumerate(seq) if g == gb]
    run(main())


def test_ws_publisher_gets_offsets_too(srv):
    g = fresh("wp")

    async def main():
        async with ws_connect(srv.port, sub(g, "json")) as s, \
                ws_connect(srv.port, f"/publish?group={g}") as p:
            await p.send("text one")
            await p.send(b"\x00bin")
            await apublish(srv.port, "http three", group=g, content_type="text/plain")
            d1, d2, d3 = [json_env(f) for f in await recv_n(s, 3)]
            assert (d1["offset"], d1["data"]) == (1, "text one")
            assert (d2["offset"], d2.get("binary"), json_data(d2)) == (2, True, b"\x00bin")
            assert (d3["offset"], d3["data"]) == (3, "http three")
    run(main())


# ---------------------------------------------------------------------------
# msgpack
# ---------------------------------------------------------------------------

def test_msgpack_envelopes(srv):
    g = fresh("mp")
    texts = ["hi", "", "caf\u00e9 \U0001f600 \"q\" \\ \n\x00", "x" * 40, "y" * 300, "z" * 70000]
    bins = [b"\x00\x01\xff", b"", bytes(range(256)) * 300]

    async def main():
        async with ws_connect(srv.port, sub(g, "msgpack")) as s, \
                ws_connect(srv.port, sub(g, "json")) as sj:
            pub = Publisher(srv.port)
            try:
                for t in texts:
                    pub.publish(t.encode(), group=g, content_type="text/plain")
                for b in bins:
                    pub.publish(b, group=g, content_type="application/octet-stream")
            finally:
                pub.close()
            frames = await recv_n(s, len(texts) + len(bins))
            jframes = [json_env(f) for f in await recv_n(sj, len(texts) + len(bins))]
            epoch = jframes[0]["epoch"]
            for i, (want, f) in enumerate(zip(texts + bins, frames)):
                d = mp_env(f)
                assert d["group"] == g
                assert d["offset"] == i + 1
                assert d["epoch"] == epoch, "json and msgpack subscribers see the same epoch"
                # str for text messages, bin for binary ones
                assert type(d["data"]) is type(want), (i, type(d["data"]))
                assert d["data"] == want
    run(main())


def test_msgpack_exact_bytes(srv):
    g = fresh("mx")

    async def main():
        async with ws_connect(srv.port, sub(g, "msgpack")) as s, ws_connect(srv.port, sub(g, "json")) as sj:
            await apublish(srv.port, "hi", group=g, content_type="text/plain")
            f = await recv(s)
            epoch = json_env(await recv(sj))["epoch"]
            gb, eb = g.encode(), epoch.encode()
            want = (b"\x84" + b"\xa5group" + bytes([0xA0 | len(gb)]) + gb + b"\xa6offset\x01"
                    + b"\xa5epoch" + bytes([0xA0 | len(eb)]) + eb + b"\xa4data\xa2hi")
            assert f == want
    run(main())


# ---------------------------------------------------------------------------
# raw and format selection
# ---------------------------------------------------------------------------

def test_raw_unchanged_next_to_enveloped_subscribers(srv):
    g = fresh("raw")
    msgs = [("text", "plain \u00e9 \"x\"".encode()), ("bin", bytes(range(256))), ("text", b""), ("bin", b"")]

    async def main():
        async with ws_connect(srv.port, sub(g)) as s_def, \
                ws_connect(srv.port, sub(g, "raw")) as s_raw, \
                ws_connect(srv.port, sub(g, "json")) as s_json, \
                ws_connect(srv.port, sub(g, "msgpack")) as s_mp:
            rw = RawWS.connect(srv.port, sub(g, "raw"))
            try:
                pub = Publisher(srv.port)
                try:
                    for kind, body in msgs:
                        pub.publish(body, group=g,
                                    content_type="text/plain" if kind == "text" else "application/octet-stream")
                finally:
                    pub.close()
                for s in (s_def, s_raw):
                    got = await recv_n(s, len(msgs))
                    for (kind, body), m in zip(msgs, got):
                        if kind == "text":
                            assert m == body.decode(), "raw text must be unchanged"
                        else:
                            assert m == body, "raw binary must be unchanged"
                for kind, body in msgs:  # byte-exact, with the right opcode
                    op, payload = await asyncio.to_thread(rw.recv_message, 5.0)
                    assert op == (OP_TEXT if kind == "text" else OP_BINARY)
                    assert payload == body
                assert len(await recv_n(s_json, len(msgs))) == len(msgs)
                assert len(await recv_n(s_mp, len(msgs))) == len(msgs)
            finally:
                rw.close()
    run(main())


@pytest.mark.parametrize("fmt", ["xml", "JSON", "Raw", "", "json,msgpack", "msgpack%00", "raw2", "j"])
def test_bad_format_is_400(srv, fmt):
    resp = raw_request(srv.port, ws_request_bytes(path=f"/ws?groups=a&format={fmt}"))
    assert resp.status == 400, resp


@pytest.mark.parametrize("fmt", ["raw", "json", "msgpack", "js%6Fn"])
def test_good_formats_upgrade(srv, fmt):
    r = RawWS.connect(srv.port, f"/ws?groups=a&format={fmt}")
    r.close()


# ---------------------------------------------------------------------------
# one order everywhere: subscribers on both workers, two concurrent publishers
# ---------------------------------------------------------------------------

def worker_conns(port):
    m = metrics(port)
    return {k: v for k, v in m.items() if k.startswith("herald_worker_connections{")}


def test_same_offsets_and_order_on_both_workers_with_concurrent_publishers(herald):
    h = herald(workers=2)
    g = "race"
    n_http, n_ws = 400, 400
    total = n_http + n_ws

    def http_publisher():
        p = Publisher(h.port)
        try:
            for i in range(n_http):
                p.publish(f"h-{i}", group=g, content_type="text/plain")
        finally:
            p.close()

    def ws_publisher():
        r = RawWS.connect(h.port, f"/publish?group={g}")
        try:
            for i in range(n_ws):
                r.send_text(f"w-{i}")
            r.send_close(1000)
            r.expect_close(1000, timeout=10)
        finally:
            r.close()

    async def main():
        formats = ["json", "json", "msgpack", "raw", "json", "msgpack", "raw", "json", "json", "msgpack"]
        subs = []
        try:
            for f in formats:
                subs.append((f, await ws_connect(h.port, sub(g, f))))
            # the kernel spreads connections over the workers: make sure both have subscribers
            # (each count may include the /metrics request itself: ask for 2)
            while True:
                counts = await asyncio.to_thread(worker_conns, h.port)
                assert len(counts) == 2, counts
                if min(counts.values()) >= 2:
                    break
                assert len(subs) < 60, f"connections never reached both workers: {counts}"
                f = formats[len(subs) % len(formats)]
                subs.append((f, await ws_connect(h.port, sub(g, f))))

            t1 = threading.Thread(target=http_publisher)
            t2 = threading.Thread(target=ws_publisher)
            t1.start()
            t2.start()
            results = await asyncio.gather(*(recv_n(s, total, timeout=60) for _, s in subs))
            await asyncio.to_thread(t1.join, 30)
            await asyncio.to_thread(t2.join, 30)
            assert not t1.is_alive() and not t2.is_alive()

            ref = None
            for (f, _), frames in zip(subs, results):
                if f == "json":
                    envs = [json_env(x) for x in frames]
                    seq = [(d["offset"], d["data"]) for d in envs]
                elif f == "msgpack":
                    envs = [mp_env(x) for x in frames]
                    seq = [(d["offset"], d["data"]) for d in envs]
                else:
                    seq = [(None, x) for x in frames]
                if f != "raw":
                    assert [o for o, _ in seq] == list(range(1, total + 1)), \
                        f"{f} subscriber: offsets are not 1..{total} in order"
                    assert len({d["epoch"] for d in envs}) == 1
                datas = [d for _, d in seq]
                # each publisher's own order is kept
                hs = [d for d in datas if d.startswith("h-")]
                ws_ = [d for d in datas if d.startswith("w-")]
                assert hs == [f"h-{i}" for i in range(n_http)]
                assert ws_ == [f"w-{i}" for i in range(n_ws)]
                if ref is None:
                    ref = datas
                else:
                    # one interleaving for everybody, whatever the worker or the format
                    assert datas == ref, "subscribers saw different orders of the same group"
            # the two publishers did interleave (otherwise the test proves little)
            switches = sum(1 for a, b in zip(ref, ref[1:]) if a[0] != b[0])
            assert switches >= 1, "publishers did not overlap"
            for _, s in subs:
                await expect_silence(s, 0.05)
        finally:
            for _, s in subs:
                await s.close()
    run(main(), timeout=120)
