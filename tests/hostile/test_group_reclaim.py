"""Issue 8, item 6: group records are reclaimed. A group with no subscribers, no kept history and no
publish for --group-linger is forgotten (herald_live_groups falls, herald_groups_reclaimed_total rises,
memory is reused), without ever repeating an offset; --max-live-groups caps how many exist at once
(503 + Retry-After past it).
"""

import json
import time
from concurrent.futures import ThreadPoolExecutor

from herald_helpers import RawWS, read_response, wait_until, ws_request_bytes
from hostile_helpers import SMALL_QUARANTINE, connect, metric, metric_of, rss_kb, scaled, scrape, slack

LINGER = 1.0


def post_bytes(group, body=b"x"):
    return (f"POST /publish?group={group} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def publish_pipelined(port, groups, batch=500):
    """One small message to each group, pipelined in batches on one keep-alive connection. Returns the
    list of (status, response) in order."""
    out = []
    s = connect(port, timeout=slack(10))
    try:
        for i in range(0, len(groups), batch):
            part = groups[i:i + batch]
            s.sendall(b"".join(post_bytes(g) for g in part))
            rest = b""
            for _ in part:
                r, rest = read_response(s, rest, timeout=slack(10))
                out.append((r.status, r))
            assert rest == b""
    finally:
        s.close()
    return out


def publish_to_all(port, groups, conns=4):
    """publish_pipelined over a few connections at once; every answer must be 200."""
    with ThreadPoolExecutor(conns) as ex:
        results = list(ex.map(lambda k: publish_pipelined(port, groups[k::conns]), range(conns)))
    bad = [r for res in results for st, r in res if st != 200]
    assert not bad, f"{len(bad)} publishes refused, first: {bad[0]!r}"


def wait_reclaimed(port, at_most=10, timeout=None):
    """Until herald_live_groups is back to near 0 (the sweep runs after --group-linger)."""
    return wait_until(lambda: metric(port, "herald_live_groups") <= at_most, timeout=timeout or slack(LINGER + 5),
                      interval=0.1, what=f"herald_live_groups <= {at_most}")


# glibc gives each worker thread its own arena, and which arena a freed record returns to decides how
# RSS moves: round to round it jumps by MiBs either way. With one arena, reuse (or its absence: ~100
# bytes per group that is never freed) shows directly.
ONE_ARENA = {**SMALL_QUARANTINE, "MALLOC_ARENA_MAX": "1"}


def test_idle_groups_are_reclaimed_and_memory_reused(herald):
    srv = herald("--group-linger", LINGER, env_extra=ONE_ARENA)
    n = scaled(40000)       # a server that keeps every record grows ~4 MiB per round
    rss = []
    for rnd in range(3):
        before = scrape(srv.port)
        t0 = time.monotonic()
        publish_to_all(srv.port, [f"round{rnd}.g{i}" for i in range(n)])
        took = time.monotonic() - t0
        peak = metric(srv.port, "herald_live_groups")
        wait_reclaimed(srv.port)
        reclaimed = metric(srv.port, "herald_groups_reclaimed_total") - before.get("herald_groups_reclaimed_total", 0)
        rss.append(rss_kb(srv.pid))
        print(f"round {rnd}: {n} groups published in {took:.1f}s, live right after {peak:.0f}, "
              f"reclaimed {reclaimed:.0f}, RSS {rss[-1]} kB")
        assert reclaimed >= n, f"round {rnd}: herald_groups_reclaimed_total rose by {reclaimed}, expected >= {n}"
    # round 0 warms the allocator up (TSan's per-thread caches hand out fresh memory once); from then on
    # each round must reuse what the previous one freed
    grew = (rss[2] - rss[1]) / 1024
    assert grew < slack(2, 2), (f"RSS grew by {grew:.1f} MiB over another round of {n} new groups: the "
                                f"previous round's records were not reused (RSS after each round: {rss} kB)")


def test_offsets_never_repeat_after_reclaim(herald):
    srv = herald("--group-linger", LINGER)
    group = "offsets"

    def subscribe():
        return RawWS.connect(srv.port, f"/ws?groups={group}&format=json")

    def publish_and_receive(sub, bodies):
        publish_pipelined(srv.port, [group] * len(bodies))
        envs = [json.loads(sub.recv_message(slack(5))[1]) for _ in bodies]
        return [e["offset"] for e in envs], {e["epoch"] for e in envs}

    sub = subscribe()
    try:
        offsets, epochs = publish_and_receive(sub, ["a", "b", "c"])
        assert offsets == [1, 2, 3], offsets
    finally:
        sub.close()
    before = scrape(srv.port)
    key = "herald_groups_reclaimed_total"
    wait_until(lambda: metric(srv.port, key) > before.get(key, 0), timeout=slack(LINGER + 5), interval=0.1,
               what=f"the unused group to be reclaimed ({key})")
    sub = subscribe()
    try:
        offsets2, epochs2 = publish_and_receive(sub, ["d"])
    finally:
        sub.close()
    print(f"before reclaim: offsets 1-3, epoch {epochs}; after: offset {offsets2}, epoch {epochs2}")
    assert offsets2[0] > 3, f"offset {offsets2[0]} repeated after the group was reclaimed (expected 4)"


def try_upgrade(port, path):
    s = connect(port, timeout=slack(5))
    try:
        s.sendall(ws_request_bytes(path=path, host=f"127.0.0.1:{port}"))
        r, _ = read_response(s, timeout=slack(5), expect_close=False)
        return r
    finally:
        s.close()


def test_max_live_groups_refuses_then_recovers(herald):
    cap = 100
    srv = herald("--max-live-groups", cap, "--group-linger", LINGER, "--max-groups", cap)
    groups = [f"cap.g{i}" for i in range(cap)]
    # a subscriber keeps all of them live while we probe the cap
    holder = RawWS.connect(srv.port, "/ws?groups=" + ",".join(groups))
    try:
        publish_to_all(srv.port, groups)
        for what, resp in [("POST to a new group", publish_pipelined(srv.port, ["cap.new"])[0][1]),
                           ("upgrade to a new group", try_upgrade(srv.port, "/ws?groups=cap.new"))]:
            assert resp.status == 503, f"{what} with {cap} live groups: {resp!r}"
            assert resp.header("retry-after"), f"{what}: 503 without Retry-After: {resp!r}"
        assert publish_pipelined(srv.port, ["cap.g7"])[0][0] == 200, "an existing group refused at the cap"
        failed = metric_of(scrape(srv.port), 'herald_requests_failed_total{status="503"}')
        assert failed >= 2, f'herald_requests_failed_total{{status="503"}} = {failed}'
    finally:
        holder.close()

    def new_group_accepted():
        st, r = publish_pipelined(srv.port, ["cap.new"])[0]
        assert st in (200, 503), r
        return st == 200
    wait_until(new_group_accepted, timeout=slack(LINGER + 5), interval=0.2,
               what="a new group to be accepted once the idle ones are reclaimed")
    r = try_upgrade(srv.port, "/ws?groups=cap.other")
    assert r.status == 101, f"upgrade to a new group after the reclaim: {r!r}"
