"""/ws?format=json&joined=1: one {"type":"joined","group":g,"offset":N,"epoch":E} text notice per
plainly joined group, ahead of any message of that group, N being the group's last offset the
subscriber joins after. It lets a client resume a group that has delivered nothing to it yet
(since=g:N). Groups recovered with since get no notice (their position is the since). joined=1
with another format, or a joined value other than 0/1, is a 400. Standalone and in a cluster
(the notice waits for the group's record to be filled from Redis)."""

import itertools
import json
import re

import pytest

from herald_helpers import apublish, envelope_sub_path, expect_silence, raw_request, recv, run, \
    ws_connect, ws_request_bytes
from test_cluster import RedisServer, apublish_all, redis, start_nodes  # noqa: F401 (fixture)

EPOCH_RE = re.compile(r"^[0-9a-f]{16}$")
_names = itertools.count()


def fresh(prefix="j"):
    return f"{prefix}{next(_names)}"


def path(groups, since=None, epoch=None, joined="1", fmt="json"):
    p = envelope_sub_path(groups, fmt=fmt, since=since, epoch=epoch)
    return p + (f"&joined={joined}" if joined is not None else "")


def joined(frame):
    d = json.loads(frame)
    assert d.get("type") == "joined", f"expected a joined notice, got {frame}"
    assert set(d) == {"type", "group", "offset", "epoch"}, frame
    assert EPOCH_RE.match(d["epoch"]), frame
    return d


def env(frame):
    d = json.loads(frame)
    assert "type" not in d, f"expected an envelope, got {frame}"
    return d


@pytest.mark.parametrize("query,why", [
    ("groups=a&joined=1", b"joined=1 needs format=json"),
    ("groups=a&format=raw&joined=1", b"joined=1 needs format=json"),
    ("groups=a&format=msgpack&joined=1", b"joined=1 needs format=json"),
    ("groups=a&format=json&joined=2", b"joined must be 0 or 1"),
    ("groups=a&format=json&joined=", b"joined must be 0 or 1"),
    ("groups=a&format=json&joined=yes", b"joined must be 0 or 1"),
])
def test_bad_joined_is_400(herald, query, why):
    h = herald()
    r = raw_request(h.port, ws_request_bytes("/ws?" + query))
    assert r.status == 400 and why in r.body, (r.status, r.body)


def test_joined_0_and_absent_send_no_notice(herald):
    h = herald()
    g = fresh()

    async def main():
        for j in ("0", None):
            async with ws_connect(h.port, path(g, joined=j)) as s:
                await apublish(h.port, "x", group=g, content_type="text/plain")
                assert env(await recv(s))["data"] == "x"
    run(main())


def test_standalone_notice_per_group_then_messages_after_it(herald):
    h = herald("--history", "10")
    busy, quiet = fresh("busy"), fresh("quiet")

    async def main():
        for i in range(3):
            await apublish(h.port, f"b{i}", group=busy, content_type="text/plain")
        async with ws_connect(h.port, path(f"{busy},{quiet}")) as s:
            n1, n2 = joined(await recv(s)), joined(await recv(s))
            assert (n1["group"], n1["offset"]) == (busy, 3), n1
            assert (n2["group"], n2["offset"]) == (quiet, 0), n2
            assert n1["epoch"] == n2["epoch"]
            await expect_silence(s, 0.2)
            await apublish(h.port, "q1", group=quiet, content_type="text/plain")
            d = env(await recv(s))
            assert (d["group"], d["offset"], d["data"], d["epoch"]) == (quiet, 1, "q1", n2["epoch"])
            epoch = n2["epoch"]
        # the quiet group's position from the notice resumes it across a disconnection
        await apublish(h.port, "q2", group=quiet, content_type="text/plain")
        async with ws_connect(h.port, path(f"{busy},{quiet}", since=f"{quiet}:1", epoch=epoch)) as s:
            frames = [json.loads(await recv(s)) for _ in range(2)]
            by_type = {("joined" if f.get("type") == "joined" else "msg"): f for f in frames}
            assert by_type["joined"]["group"] == busy and by_type["joined"]["offset"] == 3
            assert (by_type["msg"]["group"], by_type["msg"]["offset"], by_type["msg"]["data"]) == \
                (quiet, 2, "q2")
            await expect_silence(s, 0.2)
    run(main())


def test_since_groups_get_no_notice_and_failed_recovery_keeps_its_notice(herald):
    h = herald("--history", "10")
    g = fresh()

    async def main():
        await apublish(h.port, "m1", group=g, content_type="text/plain")
        async with ws_connect(h.port, path(g, since=f"{g}:0", epoch="0000000000000000")) as s:
            d = json.loads(await recv(s))
            assert d["type"] == "recovery_failed" and d["reason"] == "epoch", d
            await expect_silence(s, 0.2)
    run(main())


def test_cluster_notice_carries_the_offset_redis_knows(redis, herald):  # noqa: F811
    """Node B never followed the group: its notice must carry the offset the cluster reached on A,
    and messages published on A afterwards follow it, none skipped."""
    a, b = start_nodes(herald, redis, 2, extra=("--history", "100"))
    g, other = fresh("cl"), fresh("clq")

    async def main():
        await apublish_all(a.port, g, ["m1", "m2", "m3"])
        async with ws_connect(b.port, path(f"{g},{other}")) as s:
            n1, n2 = joined(await recv(s, 5)), joined(await recv(s, 5))
            assert {(n1["group"], n1["offset"]), (n2["group"], n2["offset"])} == {(g, 3), (other, 0)}
            await apublish_all(a.port, g, ["m4"])
            await apublish_all(a.port, other, ["o1"])
            got = sorted((e["group"], e["offset"], e["data"]) for e in
                         [env(await recv(s, 5)), env(await recv(s, 5))])
            assert got == sorted([(g, 4, "m4"), (other, 1, "o1")])
            epoch = n1["epoch"]
        # the notice's position resumes on the other node
        await apublish_all(b.port, other, ["o2"])
        async with ws_connect(a.port, path(other, since=f"{other}:1", epoch=epoch)) as s:
            d = env(await recv(s, 5))
            assert (d["offset"], d["data"]) == (2, "o2")
    run(main(), 60)
