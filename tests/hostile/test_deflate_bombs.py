"""docs/security.md item 10: compression bombs (permessage-deflate).

The attack: clients that negotiate permessage-deflate and send small frames that inflate to the
maximum message size, over and over: publishers (whose messages herald would store) and
subscribers (whose messages go nowhere but must still be inflated to be checked). Without the
bounds, each ~1 KiB frame costs herald 1 MiB of memory (publisher) or of inflating (both), and a
handful of attackers stall a worker or grow RSS without limit.

Expected: publishers' bombs close with 1009 before anything past --max-message-size is stored;
subscribers are closed with 1008 by --client-frame-rate (every 16 KiB inflated counts as a frame);
RSS stays within what the publishers may legitimately hold (--max-message-size each while a
message grows), /healthz stays fast, and normal deflate subscribers beside the attack
get every message.
"""

import asyncio
import threading
import time
import zlib

from herald_helpers import OP_BINARY, RawWS, build_frame, publish, run, ws_connect
from hostile_helpers import (SANITIZED, SMALL_QUARANTINE, HealthProbe, RssWatch, healthz_seconds, metric,
                             scaled, slack)

EXT = ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")


def bomb(n):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (c.compress(bytes(n)) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


def attacker(port, path, z, rounds, codes, lock, reconnects=5):
    """Connects `reconnects` times in a row; each time sends bombs until closed."""
    for _ in range(reconnects):
        ws = RawWS.connect(port, path, extra=[EXT])
        assert ws.response.header("sec-websocket-extensions", "").startswith("permessage-deflate")
        try:
            for _ in range(rounds):
                ws.send_frame(OP_BINARY, z, rsv=4)
        except OSError:
            pass  # closed under us: what we expect
        f = ws.expect_close((1008, 1009), timeout=slack(10))
        with lock:
            codes.append(f.close_code)
        ws.close()


def test_bombs_from_publishers_and_subscribers(herald):
    h = herald(env_extra=SMALL_QUARANTINE)  # ASan: freed memory must not look like growth
    legal = bomb(1 << 20)          # exactly --max-message-size: ~1 KiB on the wire
    over = bomb(2 << 20)           # twice the limit: ~2 KiB
    big = bomb(64 << 20)           # 64 MiB: ~64 KiB
    assert len(legal) < 2048 and len(over) < 4096 and len(big) < 128 * 1024
    n = scaled(20, minimum=6)
    codes, lock = [], threading.Lock()
    got = []

    async def normal():
        subs = [await ws_connect(h.port, "/ws?groups=calm", compression="deflate") for _ in range(20)]
        for i in range(20):
            await asyncio.to_thread(publish, h.port, ('{"n":%d,"pad":"%s"}' % (i, "x" * 300)).encode(),
                                    "calm", "application/json")
        for s in subs:
            for _ in range(20):
                got.append(await asyncio.wait_for(s.recv(), slack(10)))
            await s.close()

    with RssWatch(h.pid) as rss, HealthProbe(h.port) as probe:
        threads = []
        for i in range(n):
            # publishers: messages over the limit (1009); subscribers: legal sizes, but every
            # 16 KiB inflated counts against the frame rate (1008)
            path = "/publish?group=boom" if i % 2 else "/ws?groups=boom"
            payload = (big if i % 4 == 1 else over) if i % 2 else legal
            threads.append(threading.Thread(target=attacker, args=(h.port, path, payload, 20, codes, lock)))
        for t in threads:
            t.start()
        run(normal(), timeout=slack(30))
        for t in threads:
            t.join(slack(30))
        deadline = time.monotonic() + slack(5)
        while probe.requests < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert len(got) == 400, f"normal subscribers got {len(got)} of 400 messages"
    assert len(codes) == 5 * n, f"{len(codes)} of {5 * n} attacks saw their close"
    assert codes.count(1009) == 5 * (n // 2) and codes.count(1008) == 5 * (n - n // 2), codes
    # Each publisher may hold up to --max-message-size (1 MiB) while its message grows, as it could
    # by sending 1 MiB uncompressed; allocator slack doubles that at most. Unbounded inflating
    # would be 64 MiB per 64 KiB bomb. Sanitizers' shadow memory and allocators: 3x.
    rss.assert_growth_below((2 * (n // 2) + 8) * (3 if SANITIZED else 1), "compression bombs")
    probe.assert_fast(slack(1.0), "compression bombs")
    assert metric(h.port, "herald_messages_published_total") == 20


def test_publisher_inflate_flood_keeps_the_worker_responsive(herald):
    """docs/security.md item 10: a publisher sends 1,000 legal messages of ~1 KiB that each inflate
    to 1 MiB (--max-message-size) in one burst. Without a per-read bound one read of 64 KiB meant
    ~60 MiB of inflating before the worker looked at anything else (/healthz took ~0.5 s); with
    4 MiB of inflated output per read event the rest of the read waits for the next loop pass, so
    /healthz on the same (only) worker stays fast while the flood is worked through, and every
    message is still published."""
    h = herald("--workers", "1", env_extra=SMALL_QUARANTINE)
    z = bomb(1 << 20)
    assert len(z) < 2048
    n = 1000
    pub = RawWS.connect(h.port, "/publish?group=flood", extra=[EXT])
    flood = b"".join(build_frame(OP_BINARY, z, rsv=4) for _ in range(n))
    sender = threading.Thread(target=pub.sock.sendall, args=(flood,), daemon=True)
    sender.start()
    while metric(h.port, "herald_inflate_messages_total") < 10:  # the flood is being inflated
        time.sleep(0.005)
    probes = []
    for _ in range(20):
        probes.append(healthz_seconds(h.port, 10))
        time.sleep(0.01)
    done_during = metric(h.port, "herald_inflate_messages_total")
    deadline = time.monotonic() + slack(20)
    while metric(h.port, "herald_inflate_messages_total") < n:
        assert time.monotonic() < deadline, "the flood was not worked through"
        time.sleep(0.05)
    sender.join(5)
    assert done_during < n, "the flood ended before the probes did: nothing was measured"
    worst = max(probes)
    assert worst < slack(0.1), f"GET /healthz took {worst * 1000:.0f} ms during the inflate flood"
    assert metric(h.port, "herald_published_ws_total") == n
    pub.send_close(1000)
    pub.expect_close(1000)
