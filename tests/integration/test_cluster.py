"""Cluster through Redis (issue 5; docs/cluster.md): herald --broker redis://HOST:PORT[/DB].

A real redis-server (Debian package) runs on a free 127.0.0.1 port per test; two or three herald
nodes point at it. Checked here:
  - a publish on any node (HTTP or WebSocket publisher, group or broadcast-to-all) reaches the
    subscribers of its group on every node exactly once, in order per publisher, groups isolated;
    payloads and opcodes unchanged;
  - one order everywhere: the same offset for the same message on every node, offsets 1..N from
    Redis (INCR of herald:off:<group>), one epoch = Redis's herald:epoch (also in /stats); a client
    can move to another node mid-stream and recover with no gap;
  - a subscriber's 101 waits for the node's SUBSCRIBE, so a publish on another node right after the
    101 reaches it; a node subscribes in Redis only to groups with local subscribers (also after a
    reconnect), and a publish is one Redis command (EVAL) however many nodes there are;
  - Redis killed mid-test: local publishes still reach local subscribers (under a "local-..."
    epoch), /healthz says degraded, /stats "broker":"down", herald_broker_up 0, errors counted,
    nothing crashes; Redis restarted on the same port: back to ok within a few seconds, reconnects
    counted, cross-node delivery again, a recovery with the pre-outage epoch gets recovery_failed;
    publishes accepted while Redis was dying and a Redis that hangs instead of dying;
  - the DB number in the URL is honoured; bad URLs exit 1; --broker from the config file and the
    environment; without --broker nothing needs Redis.
Every wait is bounded; only 127.0.0.1 is contacted.
"""

import asyncio
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import clean_env, herald_bin
from herald_helpers import (envelope_sub_path, HOST, Publisher, expect_silence, http_call, metrics, recv, recv_n, run,
                            wait_until, ws_connect)

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli")

_names = itertools.count()


def fresh(prefix="c"):
    """A group name unique in this module (Redis is fresh per test anyway)."""
    return f"{prefix}{next(_names)}"


# ---------------------------------------------------------------------------
# Redis: a tiny RESP client and a server we can kill and restart on the same port
# ---------------------------------------------------------------------------

class RedisError(Exception):
    pass


class RespClient:
    """Minimal blocking RESP2 client (one connection, one database)."""

    def __init__(self, port, db=0, timeout=5.0):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.f = self.sock.makefile("rb")
        if db:
            self.cmd("SELECT", db)

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.f.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError(f"redis closed the connection ({line!r})")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RedisError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RedisError(f"bad RESP line {line!r}")

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


class RedisServer:
    """One redis-server on 127.0.0.1:port, no persistence. kill() = SIGKILL, start() again on the
    same port; stop() at teardown, always by PID."""

    def __init__(self, tmpdir, port=None, aof=False, extra=()):
        self.tmpdir = tmpdir
        self.port = port or free_port()
        self.proc = None
        self.starts = 0
        self.aof = aof  # append-only file, fsync'd on every write: survives a SIGKILL
        self.extra = list(extra)  # more redis-server arguments (replicaof, cluster mode...)

    def start(self, timeout=10.0):
        assert self.proc is None or self.proc.poll() is not None, "redis-server already running"
        if not os.path.exists(REDIS_SERVER):
            pytest.fail("redis-server not found: install the Debian package redis-server "
                        "(`apt-get install redis-server`)")
        self.starts += 1
        log = os.path.join(self.tmpdir, f"redis-{self.port}-{self.starts}.log")
        deadline = time.monotonic() + timeout
        while True:
            with open(log, "wb") as out:
                self.proc = subprocess.Popen(
                    [REDIS_SERVER, "--port", str(self.port), "--bind", HOST, "--save", "",
                     "--appendonly", "yes" if self.aof else "no", "--appendfsync", "always",
                     "--dir", self.tmpdir, "--daemonize", "no", "--logfile", ""] + self.extra,
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    c = RespClient(self.port, timeout=1.0)
                    try:
                        if c.cmd("PING") == "PONG":
                            return self
                    finally:
                        c.close()
                except (OSError, ConnectionError, RedisError):
                    pass
                time.sleep(0.02)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if time.monotonic() >= deadline:
                with open(log, "rb") as f:
                    tail = f.read()[-2000:].decode("utf-8", "replace")
                pytest.fail(f"redis-server did not start on {HOST}:{self.port} within {timeout}s\n{tail}")
            time.sleep(0.1)  # port still busy (e.g. just killed): try again until the deadline

    def kill(self):
        """SIGKILL, like a crash: no goodbye to the clients beyond the kernel closing the sockets."""
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout=10)

    def url(self, db=None):
        return f"redis://{HOST}:{self.port}" + (f"/{db}" if db is not None else "")

    def cmd(self, *args, db=0):
        c = RespClient(self.port, db=db)
        try:
            return c.cmd(*args)
        finally:
            c.close()

    def numsub(self, group):
        r = self.cmd("PUBSUB", "NUMSUB", f"herald:0:g:{group}")
        return int(r[1])

    def eval_calls(self):
        info = self.cmd("INFO", "commandstats").decode()
        for ln in info.splitlines():
            if ln.startswith("cmdstat_eval:"):
                return int(ln.split("calls=", 1)[1].split(",", 1)[0])
        return 0


@pytest.fixture
def redis(tmp_path):
    d = tempfile.mkdtemp(prefix="redis-", dir=str(tmp_path))
    r = RedisServer(d).start()
    yield r
    r.stop()


# ---------------------------------------------------------------------------
# herald nodes
# ---------------------------------------------------------------------------

def stats(port):
    st, _, body = http_call(port, "GET", "/stats", timeout=5)
    assert st == 200, st
    return json.loads(body)


def healthz(port):
    st, _, body = http_call(port, "GET", "/healthz", timeout=5)
    return st, body


def wait_broker(node, state, timeout=10.0):
    wait_until(lambda: stats(node.port).get("broker") == state, timeout=timeout,
               what=f"/stats broker == {state!r} on node :{node.port}")


def start_nodes(herald, redis, n=2, db=None, extra=()):
    nodes = [herald("--broker", redis.url(db), *extra, workers=2) for _ in range(n)]
    for node in nodes:
        wait_broker(node, "up")
    return nodes


def metric(port, name):
    return metrics(port).get(name, 0.0)


# /ws?groups=...&format=...&since=...&epoch=... (json envelopes by default)
sub = envelope_sub_path


def env(frame):
    """A json envelope {group, offset, epoch, data} (not a notice)."""
    assert isinstance(frame, str), f"expected a json text frame, got {frame!r:.80}"
    d = json.loads(frame)
    assert "type" not in d, f"expected an envelope, got a notice: {frame}"
    assert {"group", "offset", "epoch", "data"} <= set(d), frame
    return d


def publish_all(port, group, bodies):
    """One keep-alive HTTP publisher (= one publisher for ordering)."""
    p = Publisher(port)
    try:
        for b in bodies:
            p.publish(b, group=group, content_type="text/plain")
    finally:
        p.close()


async def apublish_all(port, group, bodies):
    await asyncio.to_thread(publish_all, port, group, bodies)


async def ws_publish_all(port, group, bodies):
    path = "/publish" if group is None else f"/publish?group={group}"
    async with ws_connect(port, path) as pub:
        for b in bodies:
            await pub.send(b)
        # a ping round trip: everything sent before it was read by the server
        await asyncio.wait_for(await pub.ping(), 5)


async def ws_send_sync(ws, data):
    """Send on a WebSocket publisher, then a ping round trip: the server has read (and queued or
    sequenced) the message before anything published after this call."""
    await ws.send(data)
    await asyncio.wait_for(await ws.ping(), 5)


async def recv_envs(ws, n, timeout=15.0):
    return [env(f) for f in await recv_n(ws, n, timeout)]


async def move_mid_stream(pub, from_port, to_port, g, n, at=400):
    """A client reads a fast stream of n messages (sent on pub) on from_port, leaves after `at`
    of them and reconnects to to_port with since/epoch: asserts the two parts join without gap
    or duplicate, offsets 1..n. Returns the envelopes."""
    c = await ws_connect(from_port, sub(g))

    async def stream():
        for k in range(n):
            await pub.send(f"s{k}")
            if k % 100 == 99:
                await asyncio.sleep(0.005)
    t = asyncio.create_task(stream())
    first = await recv_envs(c, at, 20)
    await c.close()  # gone in the middle of the stream
    last = first[-1]
    c2 = await ws_connect(to_port, sub(g, since=f"{g}:{last['offset']}", epoch=last["epoch"]))
    try:
        rest = await recv_envs(c2, n - at, 30)
        await t
        await expect_silence(c2, 0.3)
    finally:
        await c2.close()
    allm = first + rest
    assert [d["data"] for d in allm] == [f"s{k}" for k in range(n)], "gap or duplicate at the seam"
    assert [d["offset"] for d in allm] == list(range(1, n + 1))
    return allm


def redis_epoch(redis, db=0):
    e = redis.cmd("GET", "herald:epoch", db=db)
    assert e is not None, "herald:epoch is not set in Redis"
    return e.decode()


async def probe_epochs(nodes, group=None):
    """Every node's epoch, from envelopes of one message published once (on nodes[0])."""
    g = group or fresh("probe")
    subs = [await ws_connect(n.port, sub(g)) for n in nodes]
    try:
        await apublish_all(nodes[0].port, g, ["probe"])
        got = [env(await recv(s, 5)) for s in subs]
    finally:
        for s in subs:
            await s.close()
    assert all(d["data"] == "probe" and d["group"] == g for d in got), got
    assert len({d["offset"] for d in got}) == 1, f"one message, different offsets per node: {got}"
    return [d["epoch"] for d in got]


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["http://x", "redis://", "redis://h:0", "redis://h:1/x",
                                 "redis://h:65536", "redis://:6379", "redis://h:1/-1", "redis://h:x"])
def test_bad_broker_url_exits_1_with_a_message(url):
    p = subprocess.run([herald_bin(), "--listen", f"{HOST}:0", "--broker", url], env=clean_env(),
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=15)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 1, f"--broker {url}: exit {p.returncode}, expected 1\nstderr: {err}"
    assert "broker" in err and "listening on" not in err, f"--broker {url}: stderr {err!r}"


def test_without_broker_single_node_no_redis(herald):
    node = herald()
    st, body = healthz(node.port)
    assert (st, body) == (200, b"ok\n")
    assert stats(node.port)["broker"] == "none"
    assert metric(node.port, "herald_broker_up") == 0
    g = fresh("solo")

    async def main():
        async with ws_connect(node.port, sub(g)) as s:
            await apublish_all(node.port, g, ["a", "b"])
            got = await recv_envs(s, 2)
            assert [(d["data"], d["offset"]) for d in got] == [("a", 1), ("b", 2)]
    run(main(), 30)
    assert metric(node.port, "herald_broker_published_total") == 0
    assert metric(node.port, "herald_broker_received_total") == 0


def test_nodes_report_broker_up(redis, herald):
    nodes = start_nodes(herald, redis, 2)
    for n in nodes:
        assert healthz(n.port) == (200, b"ok\n")
        assert stats(n.port)["broker"] == "up"
        m = metrics(n.port)
        assert m.get("herald_broker_up") == 1, m
        assert m.get("herald_broker_reconnects_total", 0) >= 1, "the first connection is counted"
        for k in ("herald_broker_errors_total", "herald_broker_published_total",
                  "herald_broker_received_total"):
            assert k in m, f"{k} missing from /metrics"


# ---------------------------------------------------------------------------
# delivery across nodes
# ---------------------------------------------------------------------------

def test_every_subscriber_gets_its_groups_once_in_order_on_every_node(redis, herald):
    nodes = start_nodes(herald, redis, 3)
    A, B, C = fresh("A"), fresh("B"), fresh("C")
    K = 40
    evals0 = redis.eval_calls()

    # publishers: (node index, transport, group or None, prefix)
    pubs = []
    for i in range(3):
        pubs.append((i, "http", A, f"A-h{i}"))
        pubs.append((i, "ws", B, f"B-w{i}"))
    pubs.append((1, "http", C, "C-h1"))  # C has subscribers on node 0 only
    pubs.append((2, "http", None, "ALL-h2"))
    pubs.append((0, "ws", None, "ALL-w0"))
    bodies = {pfx: [f"{pfx}-{k}" for k in range(K)] for _, _, _, pfx in pubs}

    def expected(groups):
        out = []
        for _, _, g, pfx in pubs:
            if g is None or g in groups:
                out += bodies[pfx]
        return out

    async def main():
        subs = []  # (node index, groups set, ws)
        for i, n in enumerate(nodes):
            for gs in ([A], [B], [A, B], [], [C] if i == 0 else [B]):
                ws = await ws_connect(n.port, sub(",".join(gs) if gs else None))
                subs.append((i, set(gs), ws))
        try:
            tasks = []
            for i, kind, g, pfx in pubs:
                f = apublish_all if kind == "http" else ws_publish_all
                tasks.append(asyncio.create_task(f(nodes[i].port, g, bodies[pfx])))
            results = await asyncio.gather(
                *(recv_envs(ws, len(expected(gs)), 30) for _, gs, ws in subs))
            await asyncio.gather(*tasks)
            await asyncio.gather(*(expect_silence(ws, 0.5) for _, _, ws in subs))
        finally:
            for _, _, ws in subs:
                await ws.close()
        return [(i, gs, got) for (i, gs, _), got in zip(subs, results)]

    results = run(main(), 60)
    seen = {}      # body -> (group, offset): must be the same on every node
    epochs = set()
    per_group_order = {}  # group -> list of bodies in offset order (first subscriber seen)
    for i, gs, got in results:
        want = expected(gs)
        bodies_got = [d["data"] for d in got]
        assert sorted(bodies_got) == sorted(want), \
            f"node {i} groups {sorted(gs)}: not exactly once (missing " \
            f"{sorted(set(want) - set(bodies_got))[:5]}, extra/dup {len(bodies_got) - len(set(bodies_got))})"
        for d in got:
            pfx = d["data"].rsplit("-", 1)[0]
            g = next(p[2] for p in pubs if p[3] == pfx)
            assert d["group"] == g, f"node {i}: {d} delivered with the wrong group"
            key = (d["group"], d["offset"])
            assert seen.setdefault(d["data"], key) == key, \
                f"{d['data']}: {seen[d['data']]} on one node, {key} on node {i}"
            epochs.add(d["epoch"])
        for pfx in {d["data"].rsplit("-", 1)[0] for d in got}:
            ks = [int(d["data"].rsplit("-", 1)[1]) for d in got if d["data"].startswith(pfx + "-")]
            assert ks == list(range(K)), f"node {i} groups {sorted(gs)}: {pfx} out of order: {ks}"
        by_group = {}
        for d in got:
            by_group.setdefault(d["group"], []).append(d)
        for g, ds in by_group.items():
            offs = [d["offset"] for d in ds]
            assert offs == list(range(1, len(ds) + 1)), \
                f"node {i}: offsets of {g} are not 1..{len(ds)} in delivery order: {offs}"
            order = [d["data"] for d in ds]
            assert per_group_order.setdefault(g, order) == order, f"node {i}: another order for {g}"
    assert len(epochs) == 1, f"nodes disagree on the epoch: {epochs}"
    assert epochs == {redis_epoch(redis)}, "the cluster's epoch is Redis's herald:epoch"
    assert [stats(n.port).get("epoch") for n in nodes] == [redis_epoch(redis)] * 3
    assert redis.cmd("GET", f"herald:off:{A}") == str(3 * K).encode()
    assert redis.cmd("GET", f"herald:off:{C}") == str(K).encode()
    # one Redis command per publish, however many nodes subscribe
    total = K * len(pubs)
    assert redis.eval_calls() - evals0 == total
    published = [metric(n.port, "herald_broker_published_total") for n in nodes]
    assert sum(published) == total, published
    received = [metric(n.port, "herald_broker_received_total") for n in nodes]
    # node 0: A, B, C and broadcasts; nodes 1, 2: A, B and broadcasts (never C)
    assert received == [total, total - K, total - K], received


def test_subscribe_then_publish_immediately_on_the_other_node(redis, herald):
    nodes = start_nodes(herald, redis, 2)
    pubs = [Publisher(n.port) for n in nodes]

    async def main():
        for i in range(20):
            g = fresh("imm")
            here, there = nodes[i % 2], pubs[(i + 1) % 2]
            t0 = time.monotonic()
            async with ws_connect(here.port, sub(g)) as s:
                took = time.monotonic() - t0
                # the 101 is only sent once the node's SUBSCRIBE is confirmed: publish right now
                await asyncio.to_thread(there.publish, f"now-{i}", g, "text/plain")
                d = env(await recv(s, 5))
                assert (d["group"], d["offset"], d["data"]) == (g, 1, f"now-{i}"), (i, d)
                assert took < 1.5, f"round {i}: the 101 took {took:.2f}s (confirmation, not a timeout)"
    try:
        run(main(), 60)
    finally:
        for p in pubs:
            p.close()


def test_second_local_subscriber_and_second_node_of_a_group(redis, herald):
    """Joining a group a node is already subscribed to, or subscribing on a second node, keeps the
    others' delivery exactly once (one Redis subscription per node, not per client)."""
    nodes = start_nodes(herald, redis, 2)
    g = fresh("join")

    async def main():
        async with ws_connect(nodes[0].port, sub(g)) as a1:
            await apublish_all(nodes[1].port, g, ["m1"])
            assert env(await recv(a1))["data"] == "m1"
            async with ws_connect(nodes[0].port, sub(g)) as a2, \
                    ws_connect(nodes[1].port, sub(g)) as b1:
                await apublish_all(nodes[1].port, g, ["m2"])
                await apublish_all(nodes[0].port, g, ["m3"])
                # two publishers on two nodes: either order, but the same one for everybody
                seen = []
                for s in (a1, a2, b1):
                    got = await recv_envs(s, 2)
                    assert sorted(d["data"] for d in got) == ["m2", "m3"], got
                    assert [d["offset"] for d in got] == [2, 3], got
                    seen.append([d["data"] for d in got])
                assert seen[0] == seen[1] == seen[2], seen
                await asyncio.gather(*(expect_silence(s, 0.3) for s in (a1, a2, b1)))
            # the others left: a1 still gets everything, once
            await apublish_all(nodes[1].port, g, ["m4"])
            d = env(await recv(a1))
            assert (d["data"], d["offset"]) == ("m4", 4)
            await expect_silence(a1, 0.3)
    run(main(), 30)


def test_redis_subscriptions_follow_local_subscribers(redis, herald):
    nodes = start_nodes(herald, redis, 2)
    g, pub_only = fresh("ns"), fresh("pubonly")

    def numsub_is(group, n):
        wait_until(lambda: redis.numsub(group) == n, timeout=5,
                   what=f"PUBSUB NUMSUB herald:0:g:{group} == {n} (now {redis.numsub(group)})")

    async def main():
        assert redis.numsub(g) == 0
        a1 = await ws_connect(nodes[0].port, sub(g))
        numsub_is(g, 1)
        a2 = await ws_connect(nodes[0].port, sub(g))
        b1 = await ws_connect(nodes[1].port, sub(g))
        numsub_is(g, 2)  # one subscription per node
        await a1.close()
        await asyncio.sleep(0.3)
        assert redis.numsub(g) == 2, "node 0 still has a subscriber"
        await a2.close()
        numsub_is(g, 1)
        await b1.close()
        numsub_is(g, 0)
        # publishing needs no subscription
        await apublish_all(nodes[0].port, pub_only, ["x"])
        await apublish_all(nodes[1].port, pub_only, ["y"])
        await asyncio.sleep(0.2)
        assert redis.numsub(pub_only) == 0
        assert redis.cmd("GET", f"herald:off:{pub_only}") == b"2"
    run(main(), 30)


def test_payload_kinds_and_group_names_cross_nodes_byte_exact(redis, herald):
    """Raw subscribers on the other node get what was published, byte for byte, with its opcode:
    empty, UTF-8 text, binary with every byte value (':' and NUL included), a large binary; group
    names with ':' '.' '_' '-' and of the maximum length (128)."""
    nodes = start_nodes(herald, redis, 2)
    long_g = ("L" * 120) + fresh("x")[-8:].rjust(8, "0")
    assert len(long_g) == 128
    groups = ["a:b:c", "x.y_z-1", long_g]
    big = os.urandom(300 * 1024)
    payloads = [(b"", "text/plain"), ("héllo ✓ 0:t".encode(), "text/plain; charset=utf-8"),
                (bytes(range(256)) * 4, "application/octet-stream"), (big, None),
                (b"", "application/octet-stream")]

    async def main():
        for g in groups:
            async with ws_connect(nodes[1].port, sub(g, fmt=None)) as s:
                p = Publisher(nodes[0].port)
                try:
                    for body, ct in payloads:
                        await asyncio.to_thread(p.publish, body, g, ct)
                finally:
                    p.close()
                got = await recv_n(s, len(payloads), 15)
                for (body, ct), m in zip(payloads, got):
                    text = ct is not None and ct.startswith("text/")
                    want = body.decode() if text else body
                    assert type(m) is type(want) and m == want, \
                        f"group {g[:20]}: got {type(m).__name__} {m[:40]!r}, want {want[:40]!r}"
                await expect_silence(s, 0.2)
            assert redis.cmd("GET", f"herald:off:{g}") == str(len(payloads)).encode()
    run(main(), 40)


def test_broker_from_config_file_and_environment(redis, herald, tmp_path):
    cfg = tmp_path / "herald.json"
    cfg.write_text(json.dumps({"broker": redis.url()}))
    a = herald("--config", str(cfg))
    b = herald(env_extra={"HERALD_BROKER": redis.url()})
    for n in (a, b):
        wait_broker(n, "up")
    g = fresh("cfg")

    async def main():
        async with ws_connect(b.port, sub(g)) as s:
            await apublish_all(a.port, g, ["via-config"])
            assert env(await recv(s))["data"] == "via-config"
    run(main(), 20)


def test_resume_ahead_of_this_node_waits_for_the_missing_messages(redis, herald):
    """A client that read further on another node than this node's copy of the stream has reached
    (since above its last offset: the node is a few messages behind) is held until they arrive, then
    goes on from since, no spurious unknown_offset. If they never come, the hold ends after ~2 s
    with unknown_offset and the node's last offset."""
    n0, n1 = start_nodes(herald, redis, 2, extra=("--history", "100"))
    g = fresh("ahead")

    async def main():
        keep1 = await ws_connect(n1.port, sub(g))  # node 1 follows g
        try:
            publish_all(n0.port, g, [f"a{k}" for k in range(5)])  # offsets 1..5
            first = await recv_envs(keep1, 5)
            epoch = first[-1]["epoch"]
            # as if the client had read up to offset 7 on node 0 while node 1 has seen 5
            async def connect():
                return await ws_connect(n1.port, sub(g, since=f"{g}:7", epoch=epoch))
            resume = asyncio.create_task(connect())
            await asyncio.sleep(0.3)
            assert not resume.done(), "the resume was answered before node 1 reached offset 7"
            publish_all(n0.port, g, [f"b{k}" for k in range(4)])  # offsets 6..9
            ws = await resume
            got = await recv_envs(ws, 2)
            assert [(d["offset"], d["data"]) for d in got] == [(8, "b2"), (9, "b3")]
            await expect_silence(ws, 0.3)
            await ws.close()
            # offsets that never come: told after the hold, with node 1's last offset
            t0 = time.monotonic()
            ws = await ws_connect(n1.port, sub(g, since=f"{g}:50", epoch=epoch))
            d = json.loads(await recv(ws, 5))
            assert (d.get("type"), d.get("reason"), d.get("offset")) == ("recovery_failed", "unknown_offset", 9), d
            assert time.monotonic() - t0 >= 1.5
            await ws.close()
        finally:
            await keep1.close()
    run(main(), 30)


def test_client_moves_to_another_node_mid_stream_and_recovers_without_gap(redis, herald):
    """Offsets are the cluster's: a client reading a fast stream on node 0 reconnects to node 1 with
    since/epoch and continues with no gap and no duplicate."""
    n0, n1 = start_nodes(herald, redis, 2, extra=("--history", "5000"))
    g = fresh("move")
    N = 1500

    async def main():
        keep1 = await ws_connect(n1.port, sub(g))  # node 1 follows the group (and keeps history)
        pub = await ws_connect(n0.port, f"/publish?group={g}")
        try:
            allm = await move_mid_stream(pub, n0.port, n1.port, g, N)
            assert len({d["epoch"] for d in allm}) == 1
            other = await recv_envs(keep1, N, 30)
            assert [(d["offset"], d["data"]) for d in other] == [(d["offset"], d["data"]) for d in allm]
        finally:
            for s in (keep1, pub):
                await s.close()
    run(main(), 60)


def test_recovery_on_a_node_that_stopped_following_is_never_silent(redis, herald):
    """Issue 9's first scenario: a subscriber on node B reads offsets 1-5 and leaves (B unsubscribes
    from the group), three messages are published on A, the subscriber comes back to B with
    since=g:5. B did not see 6-8: it must replay them or say recovery_failed, never answer with
    nothing. (Until history lives in Redis it says too_old, with the cluster's epoch.) The same for
    since=g:0, and on A, which published them but, with no subscriber of its own, never followed the
    group."""
    a, b = start_nodes(herald, redis, 2, extra=("--history", "100"))
    g = fresh("stale")

    async def main():
        s = await ws_connect(b.port, sub(g))
        await apublish_all(a.port, g, [f"m{k}" for k in range(1, 6)])
        got = await recv_envs(s, 5)
        await s.close()
        assert [d["offset"] for d in got] == [1, 2, 3, 4, 5]
        epoch = got[-1]["epoch"]
        # B has unsubscribed once its last subscriber left; publishes on A no longer reach it
        await asyncio.sleep(0.3)
        await apublish_all(a.port, g, ["m6", "m7", "m8"])
        for node, since in ((b, 5), (b, 0), (a, 5)):
            c = await ws_connect(node.port, sub(g, since=f"{g}:{since}", epoch=epoch))
            try:
                first = await recv(c, 5)
                d = json.loads(first)
                if d.get("type") == "recovery_failed":
                    assert (d["group"], d["reason"], d["epoch"]) == (g, "too_old", epoch), d
                else:  # a replay, once history lives in Redis: exactly what was missed
                    rest = [first] + await recv_n(c, 8 - since - 1, 5)
                    assert [env(f)["offset"] for f in rest] == list(range(since + 1, 9))
                # live messages follow either way
                await apublish_all(a.port, g, [f"live{since}"])
                while True:
                    e = env(await recv(c, 5))
                    if e["data"] == f"live{since}":
                        break
            finally:
                await c.close()
    run(main(), 60)


def test_recovery_on_any_node_replays_from_redis(redis, herald):
    """Issue 9: history lives in Redis (a stream per group, trimmed to --history), so a client
    recovers on a node that was not following the group -- the one it left, or one that never saw
    the group -- with exactly what it missed, then live messages, no gap, no duplicate."""
    a, b, c = start_nodes(herald, redis, 3, extra=("--history", "100"))
    g = fresh("any")

    async def main():
        s = await ws_connect(b.port, sub(g))
        await apublish_all(a.port, g, [f"m{k}" for k in range(1, 6)])
        got = await recv_envs(s, 5)
        await s.close()
        epoch = got[-1]["epoch"]
        await asyncio.sleep(0.3)  # B has unsubscribed
        await apublish_all(a.port, g, ["m6", "m7", "m8"])
        missed = [(6, "m6"), (7, "m7"), (8, "m8")]
        for node in (b, c):
            r = await ws_connect(node.port, sub(g, since=f"{g}:5", epoch=epoch))
            try:
                rep = await recv_envs(r, len(missed))
                assert [(d["offset"], d["data"]) for d in rep] == missed
                assert {d["epoch"] for d in rep} == {epoch}
                await expect_silence(r, 0.3)
                live = (missed[-1][0] + 1, f"live-{node.port}")
                await apublish_all(a.port, g, [live[1]])
                d = env(await recv(r, 5))
                assert (d["offset"], d["data"]) == live
                missed.append(live)  # the next node's client missed it too
            finally:
                await r.close()
    run(main(), 60)


def test_fetch_from_redis_is_bounded_by_the_nodes_history(redis, herald):
    """The stream in Redis is as long as the publishing node's --history; a node with a shorter one
    fetches only its newest --history entries: a recovery within them replays, one before them is
    told too_old (never a partial replay)."""
    a = start_nodes(herald, redis, 1, extra=("--history", "100"))[0]
    c = start_nodes(herald, redis, 1, extra=("--history", "10"))[0]
    g = fresh("bound")

    async def main():
        await apublish_all(a.port, g, [f"m{k}" for k in range(1, 51)])
        epoch = stats(a.port)["epoch"]
        r = await ws_connect(c.port, sub(g, since=f"{g}:45", epoch=epoch))
        try:
            assert [d["offset"] for d in await recv_envs(r, 5)] == [46, 47, 48, 49, 50]
            await expect_silence(r, 0.3)
        finally:
            await r.close()
        r = await ws_connect(c.port, sub(g, since=f"{g}:5", epoch=epoch))
        try:
            d = json.loads(await recv(r, 5))
            assert (d.get("type"), d.get("group"), d.get("reason")) == ("recovery_failed", g, "too_old"), d
        finally:
            await r.close()
    run(main(), 60)


def test_recovery_on_another_node_mid_stream_has_no_gap_or_duplicate(redis, herald):
    """A client reading a fast stream on node A reconnects to node B, which has no subscriber of
    the group: B fills its record from Redis while live messages keep coming."""
    a, b = start_nodes(herald, redis, 2, extra=("--history", "5000"))
    g = fresh("seam")
    N = 1500

    async def main():
        pub = await ws_connect(a.port, f"/publish?group={g}")
        try:
            await move_mid_stream(pub, a.port, b.port, g, N)
        finally:
            await pub.close()
    run(main(), 60)


def test_recovery_across_a_redis_restart_with_aof(tmp_path, herald):
    """With Redis persistence (AOF) a Redis restart keeps offsets, epoch and history: a client that
    missed messages during the outage window recovers them on a node that was not following the
    group, with no recovery_failed."""
    redis = RedisServer(str(tmp_path), aof=True).start()
    try:
        a, b = start_nodes(herald, redis, 2, extra=("--history", "100"))
        g = fresh("aof")

        async def main():
            s = await ws_connect(b.port, sub(g))
            await apublish_all(a.port, g, ["m1", "m2", "m3"])
            got = await recv_envs(s, 3)
            await s.close()
            epoch = got[-1]["epoch"]
            await asyncio.sleep(0.3)
            await apublish_all(a.port, g, ["m4", "m5"])
            # a 200 in cluster mode means queued for Redis: wait until Redis has them
            deadline = time.monotonic() + 5
            while redis.cmd("GET", f"herald:off:{g}") != b"5":
                assert time.monotonic() < deadline, "the publishes did not reach Redis"
                await asyncio.sleep(0.02)
            redis.kill()
            redis.start()
            for node in (a, b):
                wait_broker(node, "up", timeout=15)
            r = await ws_connect(b.port, sub(g, since=f"{g}:3", epoch=epoch))
            try:
                rep = await recv_envs(r, 2)
                assert [(d["offset"], d["data"], d["epoch"]) for d in rep] == \
                    [(4, "m4", epoch), (5, "m5", epoch)]
                await apublish_all(a.port, g, ["m6"])
                d = env(await recv(r, 5))
                assert (d["offset"], d["data"], d["epoch"]) == (6, "m6", epoch)
            finally:
                await r.close()
        run(main(), 60)
    finally:
        redis.stop()


# ---------------------------------------------------------------------------
# Redis outage
# ---------------------------------------------------------------------------

def test_redis_killed_and_restarted_mid_test(redis, herald):
    nodes = start_nodes(herald, redis, 2, extra=("--history", "100"))
    n0, n1 = nodes
    g, late = fresh("out"), fresh("late")
    m_before = [metrics(n.port) for n in nodes]

    async def main():
        s0 = await ws_connect(n0.port, sub(g))
        s1 = await ws_connect(n1.port, sub(g))
        all0 = await ws_connect(n0.port, sub(None))
        all1 = await ws_connect(n1.port, sub(None))
        wpub0 = await ws_connect(n0.port, f"/publish?group={g}")
        try:
            # before: cross-node
            await apublish_all(n0.port, g, ["before-0"])
            await ws_send_sync(wpub0, "before-1")
            for s in (s0, s1):
                got = await recv_envs(s, 2)
                assert [(d["data"], d["offset"]) for d in got] == [("before-0", 1), ("before-1", 2)]
            epoch0 = got[0]["epoch"]

            # ---- Redis dies
            await asyncio.to_thread(redis.kill)
            await asyncio.to_thread(wait_broker, n0, "down", 5)
            await asyncio.to_thread(wait_broker, n1, "down", 5)
            for n in nodes:
                assert healthz(n.port) == (200, b"degraded: cluster broker unreachable\n")
                m = metrics(n.port)
                assert m["herald_broker_up"] == 0
            # local publishes reach local subscribers (HTTP, WebSocket, broadcast), not the other node
            await apublish_all(n0.port, g, ["local0-http"])
            await ws_send_sync(wpub0, "local0-ws")
            await apublish_all(n1.port, g, ["local1-http"])
            await apublish_all(n0.port, None, ["local0-all"])
            got0 = await recv_envs(s0, 3)
            assert [d["data"] for d in got0] == ["local0-http", "local0-ws", "local0-all"]
            assert all(d["epoch"] != epoch0 for d in got0), "history diverged: the epoch must change"
            assert all(d["epoch"].startswith("local-") for d in got0), got0
            assert stats(n0.port)["epoch"] == got0[0]["epoch"]
            assert [d["data"] for d in await recv_envs(s1, 1)] == ["local1-http"]
            assert [d["data"] for d in await recv_envs(all0, 1)] == ["local0-all"]
            # a new subscriber during the outage is not held back, and gets local messages
            t0 = time.monotonic()
            async with ws_connect(n1.port, sub(g)) as s1b:
                assert time.monotonic() - t0 < 1.5
                await apublish_all(n1.port, g, ["local1-again"])
                assert [d["data"] for d in await recv_envs(s1b, 1)] == ["local1-again"]
            assert [d["data"] for d in await recv_envs(s1, 1)] == ["local1-again"]
            # a group first subscribed during the outage, on both nodes (resubscribed later)
            l0 = await ws_connect(n0.port, sub(late))
            l1 = await ws_connect(n1.port, sub(late))
            await asyncio.gather(*(expect_silence(s, 0.3) for s in (s0, s1, all0, all1)))
            await asyncio.sleep(0.7)  # a few reconnect attempts fail meanwhile
            for n, mb in zip(nodes, m_before):
                assert n.alive(), "a node died while Redis was down"
                m = metrics(n.port)
                assert m["herald_broker_errors_total"] > mb["herald_broker_errors_total"], \
                    "broker errors not counted"
                assert stats(n.port)["broker"] == "down"

            # ---- Redis is back (empty: no persistence)
            await asyncio.to_thread(redis.start)
            t_restart = time.monotonic()
            for n in nodes:
                await asyncio.to_thread(
                    wait_until, lambda n=n: healthz(n.port) == (200, b"ok\n"), 8.0, 0.05,
                    f"/healthz ok again on :{n.port}")
            assert time.monotonic() - t_restart < 8
            for n, mb in zip(nodes, m_before):
                m = metrics(n.port)
                assert stats(n.port)["broker"] == "up"
                assert m["herald_broker_up"] == 1
                assert m["herald_broker_reconnects_total"] >= mb["herald_broker_reconnects_total"] + 1
            # cross-node delivery again, both ways, HTTP and WebSocket publishers (two publishers
            # on two nodes: no order between them, but one order for everybody)
            await apublish_all(n1.port, g, ["after-1"])
            await ws_send_sync(wpub0, "after-0")
            got = {}
            for name, s in (("s0", s0), ("s1", s1)):
                got[name] = await recv_envs(s, 2, 10)
                assert sorted(d["data"] for d in got[name]) == ["after-0", "after-1"], got[name]
            assert [(d["data"], d["offset"], d["epoch"]) for d in got["s0"]] == \
                [(d["data"], d["offset"], d["epoch"]) for d in got["s1"]], "nodes disagree after recovery"
            epoch2 = got["s0"][0]["epoch"]
            assert epoch2 != epoch0, "history was lost: the epoch must change"
            assert epoch2 == redis_epoch(redis), "the epoch of the new Redis, on every node"
            assert [stats(n.port)["epoch"] for n in nodes] == [epoch2, epoch2]
            assert [d["offset"] for d in got["s0"]] == [1, 2], "offsets come from the new Redis"
            # broadcasts and the group first subscribed during the outage cross nodes again
            await apublish_all(n1.port, None, ["after-all"])
            await apublish_all(n0.port, late, ["late-1"])
            for s in (all0, all1):
                assert [d["data"] for d in await recv_envs(s, 1)] == ["after-all"]
            for s in (l0, l1):  # group subscribers get broadcasts too
                assert sorted(d["data"] for d in await recv_envs(s, 2)) == ["after-all", "late-1"]
            for s in (s0, s1):
                assert [d["data"] for d in await recv_envs(s, 1)] == ["after-all"]
            await asyncio.gather(*(expect_silence(s, 0.3) for s in (s0, s1, all0, all1, l0, l1)))
            # a client recovering with the pre-outage epoch is told recovery failed
            async with ws_connect(n1.port, sub(g, since=f"{g}:2", epoch=epoch0)) as r:
                first = json.loads(await recv(r, 5))
                assert first.get("type") == "recovery_failed", first
                assert first["group"] == g and first["reason"] == "epoch", first
                assert first["epoch"] == epoch2, first
            for s in (l0, l1):
                await s.close()
        finally:
            for s in (s0, s1, all0, all1, wpub0):
                await s.close()
    run(main(), 45)
    for n in nodes:
        assert n.alive()


def test_dropped_redis_connections_reconnect_and_keep_the_epoch(redis, herald):
    """Redis stays up but drops the nodes' connections (CLIENT KILL): the nodes reconnect by
    themselves; the counters survived, so offsets continue and the epoch stays the same."""
    nodes = start_nodes(herald, redis, 2)
    g = fresh("ck")

    async def main():
        async with ws_connect(nodes[0].port, sub(g)) as s0, ws_connect(nodes[1].port, sub(g)) as s1:
            await apublish_all(nodes[1].port, g, ["k1", "k2"])
            before = [await recv_envs(s, 2) for s in (s0, s1)]
            epoch = before[0][0]["epoch"]
            rec = [metric(n.port, "herald_broker_reconnects_total") for n in nodes]
            killed = redis.cmd("CLIENT", "KILL", "TYPE", "pubsub")
            assert killed >= 2, f"expected the nodes' subscription connections, killed {killed}"
            for n, r in zip(nodes, rec):
                await asyncio.to_thread(
                    wait_until, lambda n=n, r=r: metric(n.port, "herald_broker_reconnects_total") > r
                    and stats(n.port)["broker"] == "up", 8.0, 0.05, f"node :{n.port} reconnected")
                assert n.alive()
            await apublish_all(nodes[0].port, g, ["k3"])
            for s in (s0, s1):
                d = env(await recv(s, 5))
                assert (d["data"], d["offset"], d["epoch"]) == ("k3", 3, epoch), d
            assert [stats(n.port)["epoch"] for n in nodes] == [epoch, epoch]
    run(main(), 30)

def test_node_started_while_redis_is_down(tmp_path, herald):
    r = RedisServer(str(tmp_path))  # port chosen, not started yet
    try:
        node = herald("--broker", r.url())
        assert healthz(node.port) == (200, b"degraded: cluster broker unreachable\n")
        assert stats(node.port)["broker"] == "down"
        g = fresh("early")

        async def local():
            async with ws_connect(node.port, sub(g)) as s:
                await apublish_all(node.port, g, ["alone"])
                assert env(await recv(s))["data"] == "alone"
        run(local(), 20)
        assert metric(node.port, "herald_broker_errors_total") >= 1
        r.start()
        wait_until(lambda: healthz(node.port) == (200, b"ok\n"), timeout=8, what="healthz ok")
        other = herald("--broker", r.url())
        wait_broker(other, "up")

        async def cross():
            async with ws_connect(node.port, sub(g)) as s:
                await apublish_all(other.port, g, ["from-other"])
                assert env(await recv(s))["data"] == "from-other"
        run(cross(), 20)
    finally:
        r.stop()


def test_epoch_is_shared_by_a_node_started_after_an_outage(redis, herald):
    """The epoch is the cluster's: a node started after an outage must agree with the nodes that
    lived through it, else clients cannot move between nodes with since/epoch."""
    n0, n1 = start_nodes(herald, redis, 2)

    async def main():
        e = await probe_epochs([n0, n1])
        assert e[0] == e[1], e
        redis.kill()
        for n in (n0, n1):
            await asyncio.to_thread(wait_broker, n, "down", 5)
        redis.start()
        for n in (n0, n1):
            await asyncio.to_thread(wait_broker, n, "up", 8)
        n2 = herald("--broker", redis.url())
        await asyncio.to_thread(wait_broker, n2, "up", 8)
        e = await probe_epochs([n0, n1, n2])
        assert len(set(e)) == 1, f"nodes disagree on the epoch after an outage: {e}"
    run(main(), 40)


def test_after_reconnect_only_groups_with_local_subscribers_are_subscribed(redis, herald):
    nodes = start_nodes(herald, redis, 2)
    kept, left = fresh("kept"), fresh("left")
    pub_only, pub_outage = fresh("pubonly"), fresh("puboutage")

    async def main():
        k0 = await ws_connect(nodes[0].port, sub(kept))
        try:
            async with ws_connect(nodes[0].port, sub(left)) as s:
                await apublish_all(nodes[1].port, left, ["x"])
                assert env(await recv(s))["data"] == "x"
            await apublish_all(nodes[0].port, pub_only, ["y"])
            await asyncio.to_thread(wait_until, lambda: redis.numsub(left) == 0, 5, 0.02,
                                    "unsubscribed from the group its last subscriber left")
            redis.kill()
            for n in nodes:
                await asyncio.to_thread(wait_broker, n, "down", 5)
            # a local publish during the outage to a group nobody subscribes to on this node
            await apublish_all(nodes[1].port, pub_outage, ["z"])
            redis.start()
            for n in nodes:
                await asyncio.to_thread(wait_broker, n, "up", 8)
            await asyncio.to_thread(wait_until, lambda: redis.numsub(kept) == 1, 5, 0.02,
                                    f"node 0 resubscribed to {kept}")
            await asyncio.sleep(0.3)
            subs = {g: redis.numsub(g) for g in (kept, left, pub_only, pub_outage)}
            assert subs == {kept: 1, left: 0, pub_only: 0, pub_outage: 0}, \
                f"after the reconnect the nodes subscribe to groups without local subscribers: {subs}"
            before = [metric(n.port, "herald_broker_received_total") for n in nodes]
            await apublish_all(nodes[1].port, left, ["nobody-listens"])
            await apublish_all(nodes[1].port, kept, ["k"])
            assert env(await recv(k0))["data"] == "k"
            after = [metric(n.port, "herald_broker_received_total") for n in nodes]
            assert [a - b for a, b in zip(after, before)] == [1, 0], (before, after)
        finally:
            await k0.close()
    run(main(), 40)


def test_publish_right_after_recovery_reaches_every_node(redis, herald):
    """Once a node says ok again, its existing subscribers must be subscribed again: a publish made
    right then reaches them (on the publishing node as well as on the others)."""
    nodes = start_nodes(herald, redis, 2)
    groups = [fresh("rr") for _ in range(5)]

    async def main():
        subs = [[await ws_connect(n.port, sub(g)) for g in groups] for n in nodes]
        try:
            redis.kill()
            for n in nodes:
                await asyncio.to_thread(wait_broker, n, "down", 5)
            redis.start()
            for n in nodes:
                await asyncio.to_thread(
                    wait_until, lambda n=n: healthz(n.port) == (200, b"ok\n"), 8.0, 0.005,
                    f"/healthz ok again on :{n.port}")
            pubs = [Publisher(n.port) for n in nodes]
            try:
                for i, g in enumerate(groups):
                    await asyncio.to_thread(pubs[i % 2].publish, f"r{i}", g, "text/plain")
            finally:
                for p in pubs:
                    p.close()
            missing = []
            for ni, row in enumerate(subs):
                for g, i, s in zip(groups, range(len(groups)), row):
                    try:
                        d = env(await recv(s, 3))
                        assert d["data"] == f"r{i}", d
                    except asyncio.TimeoutError:
                        missing.append((f"node {ni}", g, f"published on node {i % 2}"))
            assert not missing, f"lost right after /healthz said ok: {missing}"
        finally:
            for row in subs:
                for s in row:
                    await s.close()
    run(main(), 40)


# ---------------------------------------------------------------------------
# database number
# ---------------------------------------------------------------------------

def test_database_number_in_url_is_honoured(redis, herald):
    nodes = start_nodes(herald, redis, 2, db=3)
    g = fresh("db")

    async def main():
        async with ws_connect(nodes[1].port, sub(g)) as s:
            await apublish_all(nodes[0].port, g, ["d1", "d2", "d3"])
            got = await recv_envs(s, 3)
            assert [(d["data"], d["offset"]) for d in got] == [("d1", 1), ("d2", 2), ("d3", 3)]
            return got[0]["epoch"]
    epoch = run(main(), 30)
    if REDIS_CLI:
        out = subprocess.run([REDIS_CLI, "-h", HOST, "-p", str(redis.port), "-n", "3", "GET",
                              f"herald:off:{g}"], capture_output=True, timeout=10)
        assert out.stdout.decode().strip() == "3", out
        out = subprocess.run([REDIS_CLI, "-h", HOST, "-p", str(redis.port), "-n", "0", "EXISTS",
                              f"herald:off:{g}"], capture_output=True, timeout=10)
        assert out.stdout.decode().strip() == "0", out
    assert redis.cmd("GET", f"herald:off:{g}", db=3) == b"3"
    assert redis.cmd("GET", f"herald:off:{g}", db=0) is None, "the offset key went to db 0"
    assert redis.cmd("EXISTS", "herald:epoch", db=0) == 0
    assert epoch == redis_epoch(redis, db=3)


def test_publishes_pending_in_a_dying_redis_still_reach_local_subscribers(redis, herald):
    """Redis stops answering (SIGSTOP) and then dies (SIGKILL): the publishes a node accepted
    meanwhile (200) are local publishes during a broker failure, so its local subscribers get them."""
    n0, n1 = start_nodes(herald, redis, 2)
    g = fresh("pend")

    async def main():
        async with ws_connect(n0.port, sub(g)) as s0, ws_connect(n1.port, sub(g)) as s1:
            await apublish_all(n1.port, g, ["ok-before"])
            assert env(await recv(s0))["data"] == "ok-before"
            assert env(await recv(s1))["data"] == "ok-before"
            redis.proc.send_signal(signal.SIGSTOP)
            try:
                await apublish_all(n0.port, g, ["p1", "p2", "p3"])  # each answered 200
                await asyncio.sleep(0.3)
            finally:
                redis.kill()
            await asyncio.to_thread(wait_broker, n0, "down", 5)
            got = []
            try:
                for _ in range(3):
                    got.append(env(await recv(s0, 3))["data"])
            except asyncio.TimeoutError:
                pass
            assert got == ["p1", "p2", "p3"], \
                f"accepted publishes lost for the publishing node's own subscribers: got {got}"
            await expect_silence(s0, 0.3)
    run(main(), 30)


def test_frozen_redis_is_a_broker_failure(redis, herald):
    """A Redis that stops answering without closing its connections (SIGSTOP: a hung server or a
    network partition) is down too: within 10 s /healthz says degraded and local publishes reach
    local subscribers again; when it answers again (SIGCONT), back to ok."""
    n0, n1 = start_nodes(herald, redis, 2)
    g = fresh("frozen")

    async def main():
        async with ws_connect(n0.port, sub(g)) as s0:
            redis.proc.send_signal(signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                try:
                    await asyncio.to_thread(
                        wait_until, lambda: healthz(n0.port)[1].startswith(b"degraded"), 10.0, 0.1,
                        "/healthz degraded while Redis does not answer")
                finally:
                    frozen_for = time.monotonic() - t0
                await apublish_all(n0.port, g, ["while-frozen"])
                got = []
                try:
                    while True:
                        got.append(env(await recv(s0, 2))["data"])
                        if got[-1] == "while-frozen":
                            break
                except asyncio.TimeoutError:
                    pass
                assert got[-1:] == ["while-frozen"], f"local publish during the freeze: got {got}"
            finally:
                redis.proc.send_signal(signal.SIGCONT)
            assert frozen_for < 10.5
            await asyncio.to_thread(
                wait_until, lambda: healthz(n0.port) == (200, b"ok\n"), 10.0, 0.05, "/healthz ok again")
    run(main(), 40)


def test_clusters_on_different_databases_of_one_redis_are_isolated(redis, herald):
    """Redis Pub/Sub ignores the database number; two clusters told to use db 1 and db 2 of one Redis
    must still not hear each other (their offsets come from different keys and would collide)."""
    a = start_nodes(herald, redis, 1, db=1)[0]
    b = start_nodes(herald, redis, 1, db=2)[0]
    g = fresh("iso")

    async def main():
        async with ws_connect(a.port, sub(g)) as sa, ws_connect(b.port, sub(g)) as sb:
            await apublish_all(b.port, g, ["from-db2"])
            d = env(await recv(sb))
            assert (d["data"], d["offset"]) == ("from-db2", 1)
            await apublish_all(a.port, g, ["from-db1"])
            got = [env(await recv(sa))]
            try:
                got.append(env(await recv(sa, 0.5)))
            except asyncio.TimeoutError:
                pass
            assert [(x["data"], x["offset"]) for x in got] == [("from-db1", 1)], \
                f"the db-1 cluster received the db-2 cluster's message: {got}"
    run(main(), 20)


def test_deflate_compressed_once_per_node_after_the_broker(herald, redis):
    """A publish on node A reaches deflate subscribers on A and B: each node compresses the
    message once, after the broker (Redis carries the plain payload)."""
    a, b = start_nodes(herald, redis)
    body = json.dumps([{"id": i, "title": "payment received", "user": f"u{i}"} for i in range(50)])

    async def main():
        subs = []
        for node in (a, b, b):
            subs.append(await ws_connect(node.port, "/ws?groups=zc", compression="deflate"))
        wait_until(lambda: metric(a.port, "herald_subscribers_open") == 1, what="sub on A")
        time.sleep(0.3)  # both nodes' SUBSCRIBE confirmed (the 101 waited for it)
        async with ws_connect(a.port, "/publish?group=zc", compression="deflate") as pub:
            await pub.send(body)
        for s in subs:
            assert await recv(s) == body
            await s.close()
    run(main())
    sa, sb = stats(a.port), stats(b.port)
    assert sa["deflate_messages"] == 1 and sb["deflate_messages"] == 1, (sa, sb)
    assert sa["deflate_deliveries"] == 1, (sa, sb)
    # B's two subscribers may sit on two workers racing for the build: the loser sends plain
    assert sb["deflate_deliveries"] == 2 or sb["deflate_deliveries"] == 1 and sb["deflate_busy"] == 1, sb


def test_fresh_sse_stream_on_a_node_not_following_the_group_starts_at_the_cluster_offset(
        redis, herald):
    """A fresh /sse join on a node that does not follow the group yet: its record there says 0
    (or an old offset), so the stream's first id waits for the broker's confirmation and fill,
    like a /ws 101 does, and is the cluster's last offset. Resuming from it loses nothing and
    replays nothing."""
    from sse_client import open_stream
    a, b = start_nodes(herald, redis, 2, extra=("--history", "3"))
    g = fresh("ssefresh")
    publish_all(a.port, g, [f"m{k}" for k in range(1, 6)])
    # a 200 means accepted, not yet in Redis (the EVAL follows): the join below must see all five
    wait_until(lambda: redis.cmd("GET", f"herald:off:{g}") == b"5", timeout=5, what="offset 5 in Redis")
    epoch = redis_epoch(redis)
    s = open_stream(b.port, f"/sse?groups={g}")
    assert s.last_id == f"{epoch}/5", s.raw[:300]
    s.silence(0.3)  # nothing from before the join arrives as new
    s.close()
    time.sleep(0.3)  # B leaves the group once its only subscriber is gone
    r = open_stream(b.port, f"/sse?groups={g}", headers=[("Last-Event-ID", f"{epoch}/5")])
    r.silence(0.3)  # no recovery_failed, no replay
    publish_all(a.port, g, ["m6"])
    ev = r.events(1)
    assert ev == [{"event": "message", "data": "m6", "id": f"{epoch}/6"}]
    r.close()
