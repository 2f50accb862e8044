"""History and recovery (issue 5): --history N, --history-ttl, /ws?...&since=g:OFF&epoch=E.

A recovering subscriber gets the kept messages of each listed group with offset > OFF, then the
live ones, with no gap and no duplicate across the seam. When that is impossible the first message
for that group is a JSON text frame
  {"type":"recovery_failed","group":"g","reason":"epoch|too_old|unknown_offset","epoch":E,"offset":LAST}
and the group goes live. since entries must be group:digits naming requested groups (else 400).
The epoch is random per process start. Every wait is bounded.
"""

import asyncio
import base64
import itertools
import json
import re
import signal
import threading
import time

import pytest

from herald_helpers import (envelope_sub_path, Publisher, RawWS, apublish, expect_silence, raw_request,
                            recv, recv_n, run, ws_connect, ws_request_bytes)

EPOCH_RE = re.compile(r"^[0-9a-f]{16}$")
_names = itertools.count()


def fresh(prefix="h"):
    return f"{prefix}{next(_names)}"


# /ws?groups=...&format=...&since=...&epoch=... (json envelopes by default)
sub = envelope_sub_path


def env(frame):
    """A json envelope (not a notice)."""
    assert isinstance(frame, str), f"expected a json text frame, got {frame!r:.80}"
    d = json.loads(frame)
    assert "type" not in d, f"expected an envelope, got a notice: {frame}"
    assert set(d) <= {"group", "offset", "epoch", "data", "binary"}, frame
    if d.get("binary"):
        d["data"] = base64.b64decode(d["data"])
    return d


def notice(frame):
    assert isinstance(frame, str), f"the recovery notice must be a text frame, got {frame!r:.80}"
    d = json.loads(frame)
    assert d.get("type") == "recovery_failed", f"expected a recovery_failed notice, got {frame}"
    assert set(d) == {"type", "group", "reason", "epoch", "offset"}, frame
    assert EPOCH_RE.match(d["epoch"]), frame
    return d


def publish_n(port, group, n, prefix="m"):
    p = Publisher(port)
    try:
        for i in range(n):
            p.publish(f"{prefix}{i}", group=group, content_type="text/plain")
    finally:
        p.close()


async def apublish_n(port, group, n, prefix="m"):
    await asyncio.to_thread(publish_n, port, group, n, prefix)


async def get_epoch(port):
    """The node's epoch, read from a json envelope on a probe group (/stats does not expose it)."""
    g = fresh("probe")
    async with ws_connect(port, sub(g)) as s:
        await apublish(port, "probe", group=g, content_type="text/plain")
        d = env(await recv(s))
        assert EPOCH_RE.match(d["epoch"]), d
        return d["epoch"]


def expect_status(port, path, status=400):
    resp = raw_request(port, ws_request_bytes(path=path))
    assert resp.status == status, f"{path} -> {resp!r}, expected {status}"


@pytest.fixture(scope="module")
def srv(herald_module):
    return herald_module("--history", "100")


# ---------------------------------------------------------------------------
# replay
# ---------------------------------------------------------------------------

def test_basic_replay_then_live(srv):
    g = fresh("basic")

    async def main():
        async with ws_connect(srv.port, sub(g)) as s:
            await apublish_n(srv.port, g, 5)
            first = [env(f) for f in await recv_n(s, 5)]
        assert [d["offset"] for d in first] == [1, 2, 3, 4, 5]
        epoch = first[0]["epoch"]
        await apublish_n(srv.port, g, 3, prefix="missed")  # offsets 6..8 while away
        async with ws_connect(srv.port, sub(g, since=f"{g}:5", epoch=epoch)) as s:
            got = [env(f) for f in await recv_n(s, 3)]
            assert [(d["offset"], d["data"]) for d in got] == [(6, "missed0"), (7, "missed1"), (8, "missed2")]
            assert all(d["epoch"] == epoch and d["group"] == g for d in got)
            await apublish(srv.port, "live", group=g, content_type="text/plain")
            d = env(await recv(s))
            assert (d["offset"], d["data"]) == (9, "live")
            await expect_silence(s, 0.3)
        # since 0: everything kept (history 100 > 9)
        async with ws_connect(srv.port, sub(g, since=f"{g}:0", epoch=epoch)) as s:
            got = [env(f) for f in await recv_n(s, 9)]
            assert [d["offset"] for d in got] == list(range(1, 10))
            assert [d["data"] for d in got] == [f"m{i}" for i in range(5)] + \
                [f"missed{i}" for i in range(3)] + ["live"]
            await expect_silence(s, 0.3)
    run(main())


def test_since_equal_to_last_replays_nothing(srv):
    g = fresh("eq")

    async def main():
        epoch = await get_epoch(srv.port)
        await apublish_n(srv.port, g, 4)
        async with ws_connect(srv.port, sub(g, since=f"{g}:4", epoch=epoch)) as s:
            await expect_silence(s, 0.3)
            await apublish(srv.port, "next", group=g, content_type="text/plain")
            d = env(await recv(s))
            assert (d["offset"], d["data"]) == (5, "next")
        # a group never published, since 0: up to date, no notice
        g2 = fresh("never")
        async with ws_connect(srv.port, sub(g2, since=f"{g2}:0", epoch=epoch)) as s:
            await expect_silence(s, 0.3)
            await apublish(srv.port, "first", group=g2, content_type="text/plain")
            assert env(await recv(s))["offset"] == 1
    run(main())


def test_replay_several_groups_and_unlisted_groups_go_live(srv):
    ga, gb, gc = fresh("ma"), fresh("mb"), fresh("mc")

    async def main():
        epoch = await get_epoch(srv.port)
        for g in (ga, gb, gc):
            await apublish_n(srv.port, g, 4, prefix=g + "-")
        async with ws_connect(srv.port, sub(f"{ga},{gb},{gc}", since=f"{ga}:2,{gb}:0", epoch=epoch)) as s:
            got = [env(f) for f in await recv_n(s, 2 + 4)]
            by = {}
            for d in got:
                by.setdefault(d["group"], []).append((d["offset"], d["data"]))
            assert by == {ga: [(3, f"{ga}-2"), (4, f"{ga}-3")],
                          gb: [(i + 1, f"{gb}-{i}") for i in range(4)]}, by
            # gc was not in since: nothing replayed, live from now on
            await expect_silence(s, 0.3)
            for g in (gc, ga, gb):
                await apublish(srv.port, "live-" + g, group=g, content_type="text/plain")
            live = [env(f) for f in await recv_n(s, 3)]
            assert [(d["group"], d["offset"]) for d in live] == [(gc, 5), (ga, 5), (gb, 5)]
            await expect_silence(s, 0.2)
    run(main())


def test_replay_in_msgpack_and_raw_formats(srv):
    g = fresh("fmt")

    async def main():
        epoch = await get_epoch(srv.port)
        p = Publisher(srv.port)
        try:
            p.publish("t1", group=g, content_type="text/plain")
            p.publish(b"\x00\x01", group=g, content_type="application/octet-stream")
            p.publish("t3", group=g, content_type="text/plain")
        finally:
            p.close()
        async with ws_connect(srv.port, sub(g, fmt="raw", since=f"{g}:1", epoch=epoch)) as s:
            assert await recv_n(s, 2) == [b"\x00\x01", "t3"]
            await expect_silence(s, 0.2)
        async with ws_connect(srv.port, sub(g, fmt="msgpack", since=f"{g}:0", epoch=epoch)) as s:
            frames = await recv_n(s, 3)
            assert all(isinstance(f, bytes) for f in frames)
            # the data bytes are at the end of each map: check the tail and the offset byte
            assert frames[0].endswith(b"\xa4data\xa2t1") and b"\xa6offset\x01" in frames[0]
            assert frames[1].endswith(b"\xa4data\xc4\x02\x00\x01") and b"\xa6offset\x02" in frames[1]
            assert frames[2].endswith(b"\xa4data\xa2t3") and b"\xa6offset\x03" in frames[2]
    run(main())


def test_group_name_with_colons(srv):
    g = fresh("ns:sub:")  # group names may contain ':' -- the offset is after the last one

    async def main():
        epoch = await get_epoch(srv.port)
        await apublish_n(srv.port, g, 3)
        async with ws_connect(srv.port, sub(g, since=f"{g}:1", epoch=epoch)) as s:
            got = [env(f) for f in await recv_n(s, 2)]
            assert [(d["group"], d["offset"]) for d in got] == [(g, 2), (g, 3)]
            await expect_silence(s, 0.2)
    run(main())


def test_recovery_does_not_replay_broadcasts(srv):
    g = fresh("nb")

    async def main():
        epoch = await get_epoch(srv.port)
        await apublish(srv.port, "g1", group=g, content_type="text/plain")
        await apublish(srv.port, "to all", content_type="text/plain")
        await apublish(srv.port, "g2", group=g, content_type="text/plain")
        async with ws_connect(srv.port, sub(g, since=f"{g}:0", epoch=epoch)) as s:
            got = [env(f) for f in await recv_n(s, 2)]
            assert [(d["group"], d["data"]) for d in got] == [(g, "g1"), (g, "g2")]
            await expect_silence(s, 0.3)
    run(main())


# ---------------------------------------------------------------------------
# the acceptance case: reconnect in the middle of a fast stream
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [1, 2])
def test_reconnect_mid_stream_recovers_with_no_gap(herald, workers):
    total = 5000
    h = herald("--history", str(total), workers=workers)
    g = "stream"
    progress = {"sent": 0, "done": False, "error": None}

    def publisher():
        # a WebSocket streaming publisher, as fast as it can, in its own thread; it lets the
        # GIL go now and then (~0.5 ms every 64 messages) so that the subscriber, in this same
        # Python process, reads and reconnects while the stream is still running
        try:
            r = RawWS.connect(h.port, f"/publish?group={g}")
            try:
                for i in range(total):
                    r.send_text(f"s-{i}")
                    progress["sent"] = i + 1
                    if i % 64 == 63:
                        time.sleep(0.0005)
                r.send_close(1000)
                r.expect_close(1000, timeout=20)
            finally:
                r.close()
        except Exception as e:  # reported by the test body
            progress["error"] = e
        finally:
            progress["done"] = True

    async def main():
        received = []          # (offset, data) over every connection, in arrival order
        epoch = None
        seams = []             # publisher progress at each reconnect
        # drop points (messages received so far): early ones so that some land while the
        # publisher is still streaming, later ones for seams under a full inbox
        drops = {20, 60, 150, 300, 600, 1000, 1500, 2200, 3000, 4000, 4900}
        ws = await ws_connect(h.port, sub(g))
        t = threading.Thread(target=publisher)
        t.start()
        try:
            deadline = time.monotonic() + 60
            kinds = itertools.cycle(["close", "abort"])
            while not received or received[-1][0] < total:
                assert time.monotonic() < deadline, \
                    f"stuck at offset {received[-1][0] if received else 0} of {total}"
                try:
                    f = await asyncio.wait_for(ws.recv(), 10)
                except asyncio.TimeoutError:
                    raise AssertionError(f"no message for 10 s at offset {received[-1][0] if received else 0}, "
                                         f"publisher sent {progress['sent']} (error {progress['error']!r})")
                d = env(f)
                assert d["group"] == g
                epoch = epoch or d["epoch"]
                assert d["epoch"] == epoch
                received.append((d["offset"], d["data"]))
                if len(received) in drops and received[-1][0] < total:
                    # drop the connection mid-stream (clean close or a TCP abort), reconnect at once
                    if next(kinds) == "close":
                        await ws.close()
                    else:
                        ws.transport.abort()
                    seams.append(progress["sent"])
                    last = received[-1][0]
                    ws = await ws_connect(h.port, sub(g, since=f"{g}:{last}", epoch=epoch))
        finally:
            await ws.close()
            await asyncio.to_thread(t.join, 30)
        assert progress["error"] is None, progress["error"]
        offsets = [o for o, _ in received]
        if offsets != list(range(1, total + 1)):
            seen, dups, gaps = set(), [], []
            for o in offsets:
                if o in seen:
                    dups.append(o)
                seen.add(o)
            gaps = sorted(set(range(1, total + 1)) - seen)
            disorder = [(a, b) for a, b in zip(offsets, offsets[1:]) if b != a + 1][:10]
            raise AssertionError(f"recovered stream is not 1..{total} exactly once: {len(dups)} duplicates "
                                 f"(first {dups[:10]}), {len(gaps)} missing (first {gaps[:10]}), "
                                 f"breaks {disorder}, seams at publisher progress {seams}")
        assert [d for _, d in received] == [f"s-{i}" for i in range(total)]
        assert len(seams) >= 5
        # the point of the test: at least one reconnect happened while the stream was still running
        assert any(s < total for s in seams), f"every reconnect came after the stream ended: {seams}"
        print(f"seams at publisher progress: {seams}")
    run(main(), timeout=120)


# ---------------------------------------------------------------------------
# recovery that cannot be served
# ---------------------------------------------------------------------------

def test_too_old_notice_first_then_live(herald):
    h = herald("--history", "10")
    g = "old"

    async def main():
        epoch = await get_epoch(h.port)
        await apublish_n(h.port, g, 50)
        for fmt in ("json", "msgpack", "raw"):
            async with ws_connect(h.port, sub(g, fmt=fmt, since=f"{g}:1", epoch=epoch)) as s:
                n = notice(await recv(s))
                assert n == {"type": "recovery_failed", "group": g, "reason": "too_old",
                             "epoch": epoch, "offset": 50}, n
                await expect_silence(s, 0.3)  # nothing replayed after a failed recovery
        # the last 10 (41..50) are kept: since 40 works, since 39 does not
        async with ws_connect(h.port, sub(g, since=f"{g}:40", epoch=epoch)) as s:
            got = [env(f) for f in await recv_n(s, 10)]
            assert [d["offset"] for d in got] == list(range(41, 51))
            await expect_silence(s, 0.2)
        async with ws_connect(h.port, sub(g, since=f"{g}:39", epoch=epoch)) as s:
            assert notice(await recv(s))["reason"] == "too_old"
            await apublish(h.port, "after", group=g, content_type="text/plain")
            d = env(await recv(s))
            assert (d["offset"], d["data"]) == (51, "after")
            await expect_silence(s, 0.2)
    run(main())


def test_without_history_only_since_last_succeeds(herald):
    h = herald()  # --history 0 (default)
    g = "nohist"

    async def main():
        epoch = await get_epoch(h.port)
        await apublish_n(h.port, g, 3)
        async with ws_connect(h.port, sub(g, since=f"{g}:2", epoch=epoch)) as s:
            n = notice(await recv(s))
            assert (n["reason"], n["offset"]) == ("too_old", 3)
        async with ws_connect(h.port, sub(g, since=f"{g}:3", epoch=epoch)) as s:
            await expect_silence(s, 0.3)
            await apublish(h.port, "x", group=g, content_type="text/plain")
            assert env(await recv(s))["offset"] == 4
    run(main())


def test_wrong_or_missing_epoch(srv):
    g = fresh("ep")

    async def main():
        epoch = await get_epoch(srv.port)
        await apublish_n(srv.port, g, 7)
        wrong = "0123456789abcdef" if epoch != "0123456789abcdef" else "fedcba9876543210"
        bad = [wrong, None, "", epoch + "0", epoch[:-1]]
        if epoch.upper() != epoch:
            bad.append(epoch.upper())  # epochs compare exactly
        for i, e in enumerate(bad):
            async with ws_connect(srv.port, sub(g, since=f"{g}:3", epoch=e)) as s:
                n = notice(await recv(s))
                # offset: the group's last offset (7, then one more live message per round)
                assert n == {"type": "recovery_failed", "group": g, "reason": "epoch",
                             "epoch": epoch, "offset": 7 + i}, (e, n)
                await expect_silence(s, 0.2)
                await apublish(srv.port, "live", group=g, content_type="text/plain")
                d = env(await recv(s))
                assert d["data"] == "live" and d["epoch"] == epoch
        # the notice names each failed group; a group recovered fine in the same request gets no notice
        g2 = fresh("ep2")
        await apublish_n(srv.port, g2, 2)
        async with ws_connect(srv.port, sub(f"{g},{g2}", since=f"{g}:1,{g2}:1", epoch=wrong)) as s:
            ns = [notice(f) for f in await recv_n(s, 2)]
            assert sorted(n["group"] for n in ns) == sorted([g, g2])
            assert all(n["reason"] == "epoch" for n in ns)
            await expect_silence(s, 0.2)
    run(main())


def test_unknown_offset(srv):
    g = fresh("fut")

    async def main():
        epoch = await get_epoch(srv.port)
        await apublish_n(srv.port, g, 5)
        async with ws_connect(srv.port, sub(g, since=f"{g}:6", epoch=epoch)) as s:
            n = notice(await recv(s))
            assert n == {"type": "recovery_failed", "group": g, "reason": "unknown_offset",
                         "epoch": epoch, "offset": 5}, n
            await expect_silence(s, 0.2)
            await apublish(srv.port, "six", group=g, content_type="text/plain")
            d = env(await recv(s))
            assert (d["offset"], d["data"]) == (6, "six")
        async with ws_connect(srv.port, sub(g, since=f"{g}:10000000000000000000", epoch=epoch)) as s:
            n = notice(await recv(s))
            assert (n["reason"], n["offset"]) == ("unknown_offset", 6)
        g2 = fresh("fut-empty")
        async with ws_connect(srv.port, sub(g2, since=f"{g2}:1", epoch=epoch)) as s:
            n = notice(await recv(s))
            assert (n["group"], n["reason"], n["offset"]) == (g2, "unknown_offset", 0)
    run(main())


def test_mixed_outcomes_in_one_request(herald):
    h = herald("--history", "5")
    ok, old, fut, live = "ok", "old", "fut", "live"

    async def main():
        epoch = await get_epoch(h.port)
        for g in (ok, old, fut, live):
            await apublish_n(h.port, g, 8, prefix=g)
        path = sub(f"{ok},{old},{fut},{live}", since=f"{ok}:6,{old}:1,{fut}:9", epoch=epoch)
        async with ws_connect(h.port, path) as s:
            frames = await recv_n(s, 2 + 1 + 1)
            notices = [json.loads(f) for f in frames if '"type"' in f]
            envs = [env(f) for f in frames if '"type"' not in f]
            assert sorted((n["group"], n["reason"]) for n in notices) == [(fut, "unknown_offset"), (old, "too_old")]
            assert [(d["group"], d["offset"]) for d in envs] == [(ok, 7), (ok, 8)]
            await expect_silence(s, 0.3)
    run(main())


def test_history_ttl_expiry(herald):
    h = herald("--history", "100", "--history-ttl", "0.5")
    g = "ttl"

    async def main():
        epoch = await get_epoch(h.port)
        await apublish_n(h.port, g, 3)
        t_pub = time.monotonic()
        # right away: still kept
        async with ws_connect(h.port, sub(g, since=f"{g}:1", epoch=epoch)) as s:
            got = [env(f) for f in await recv_n(s, 2)]
            assert [d["offset"] for d in got] == [2, 3]
        assert time.monotonic() - t_pub < 0.5, "too slow to check the young history (machine overloaded?)"
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t_pub)))
        async with ws_connect(h.port, sub(g, since=f"{g}:1", epoch=epoch)) as s:
            n = notice(await recv(s))
            assert n == {"type": "recovery_failed", "group": g, "reason": "too_old",
                         "epoch": epoch, "offset": 3}, n
            await expect_silence(s, 0.2)
        # since == last is still fine after expiry
        async with ws_connect(h.port, sub(g, since=f"{g}:3", epoch=epoch)) as s:
            await expect_silence(s, 0.3)
            await apublish(h.port, "fresh", group=g, content_type="text/plain")
            assert env(await recv(s))["offset"] == 4
        # the new message is kept, the old ones are not
        async with ws_connect(h.port, sub(g, since=f"{g}:3", epoch=epoch)) as s:
            assert env(await recv(s))["data"] == "fresh"
    run(main())


# ---------------------------------------------------------------------------
# refused requests
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/ws?groups=a&since=b:1&epoch=E",            # group not requested
    "/ws?groups=a,b&since=a:1,c:2&epoch=E",
    "/ws?since=a:1&epoch=E",                      # no groups at all
    "/ws?groups=ab&since=a:1",                    # a prefix is not the group
    "/ws?groups=a&since=A:1",                     # names are case sensitive
])
def test_since_for_group_not_requested_is_400(srv, path):
    expect_status(srv.port, path)


@pytest.mark.parametrize("since", [
    "a", "a:", ":1", "a:x", "a:-1", "a:+1", "a:1.5", "a:0x10", "a:1;b:2", "a:1,,b:2", ",a:1",
    "a:1,", "a:1%20", "%20a:1", "a%3A", "a:1:", "a:%00", "a:1%00",
])
def test_malformed_since_is_400(srv, since):
    expect_status(srv.port, f"/ws?groups=a,b&since={since}&epoch=E")


@pytest.mark.parametrize("path", [
    "/ws?groups=a,b&since=a:1,b:2&epoch=E",
    "/ws?groups=a,b&since=b:0&epoch=E",
    "/ws?groups=a%2Cb&since=a%3A1%2Cb%3A2&epoch=E",   # percent-encoded
    "/ws?groups=a,a&since=a:3&epoch=E",
    "/ws?groups=a&since=a:007",
])
def test_well_formed_since_upgrades(srv, path):
    r = RawWS.connect(srv.port, path)
    r.close()


def test_bad_since_or_epoch_encoding_is_400(srv):
    expect_status(srv.port, "/ws?groups=a&since=a%3&epoch=E")
    expect_status(srv.port, "/ws?groups=a&since=a:1&epoch=%zz")


# ---------------------------------------------------------------------------
# restart
# ---------------------------------------------------------------------------

def test_restart_gives_a_new_epoch(herald):
    g = "rs"
    h1 = herald("--history", "100")

    async def first():
        async with ws_connect(h1.port, sub(g)) as s:
            await apublish_n(h1.port, g, 3)
            got = [env(f) for f in await recv_n(s, 3)]
        return got[0]["epoch"]

    e1 = run(first())
    h1.signal(signal.SIGTERM)
    assert h1.wait(15) == 0
    h2 = herald("--history", "100")

    async def second():
        e2 = await get_epoch(h2.port)
        assert e2 != e1, "a restarted node must not reuse the epoch (its history is gone)"
        await apublish_n(h2.port, g, 1)  # offsets restart at 1 in the new epoch
        async with ws_connect(h2.port, sub(g, since=f"{g}:3", epoch=e1)) as s:
            n = notice(await recv(s))
            assert n == {"type": "recovery_failed", "group": g, "reason": "epoch", "epoch": e2, "offset": 1}, n
            await expect_silence(s, 0.2)
        async with ws_connect(h2.port, sub(g, since=f"{g}:0", epoch=e2)) as s:
            d = env(await recv(s))
            assert (d["offset"], d["epoch"], d["data"]) == (1, e2, "m0")
    run(second())


@pytest.mark.parametrize("route", ["/ws", "/sse"])
def test_epoch_length_limit_is_the_same_on_both_routes(srv, route):
    """?epoch= takes up to 64 bytes on /ws and on /sse alike (the longest epoch a cluster's Redis may
    hold, and what an SSE id can carry): a 64-byte stale epoch is a resume that failed (recovery_failed
    "epoch", after the 101 or the 200), a 65-byte one a 400."""
    from sse_client import SSEStream
    g = fresh()
    publish_n(srv.port, g, 2)
    for n, ok in ((64, True), (65, False)):
        path = f"{route}?groups={g}&since={g}:1&epoch={'e' * n}"
        if route == "/sse":
            s = SSEStream(srv.port, path)
            try:
                assert s.status == (200 if ok else 400), (n, s.status, s.raw[:200])
                if ok:
                    ev = s.events(1)[0]
                    assert ev["event"] == "recovery_failed", ev
                    assert json.loads(ev["data"])["reason"] == "epoch", ev
            finally:
                s.close()
        elif ok:
            ws = RawWS.connect(srv.port, path + "&format=json")
            try:
                f = ws.recv_frame()
                assert f is not None and f.opcode == 1, f
                assert notice(f.payload.decode())["reason"] == "epoch"
            finally:
                ws.sock.close()
        else:
            resp = raw_request(srv.port, ws_request_bytes(path + "&format=json"))
            assert resp.status == 400, (n, resp.status, resp.body)
