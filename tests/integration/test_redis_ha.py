"""Issue 9: the broker on a Sentinel-managed master and on a Redis Cluster (docs/cluster.md).

Real Redis processes on free 127.0.0.1 ports, started and stopped by PID here:
  - Sentinel: a master, a replica and three sentinels (`redis-server CONF --sentinel`, the same
    binary Debian's redis-sentinel package runs). Two herald nodes find the master through the
    sentinels; the master is SIGKILLed mid-stream: /healthz says degraded, herald follows the
    promoted replica within a bounded time, publishes resume across nodes, and the messages written
    before the failover (replicated) are recovered with the same epoch.
  - Redis Cluster: three masters (`--cluster-enabled yes`, `redis-cli --cluster create`) and one
    replica. Groups on every shard (keys and channels by {group} hash tag, sharded Pub/Sub),
    broadcasts to all, history on the owning shard, recovery on a node that never saw the group,
    bad URLs; then a CLUSTER FAILOVER of a shard under traffic: herald follows the new master with
    no message lost and no duplicate.
Every wait is bounded.
"""

import asyncio
import os
import subprocess
import time

import pytest

from conftest import clean_env, herald_bin
from herald_helpers import HOST, expect_silence, http_call, metrics, recv, run, wait_until, ws_connect
from test_cluster import (REDIS_CLI, REDIS_SERVER, RedisError, RedisServer, RespClient, apublish_all, env,
                          free_port, fresh, healthz, publish_all, recv_envs, stats, sub, wait_broker)


def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slot_of_group(g):
    """herald's keys for a group are herald:off:{g}, herald:h:{g}: the slot is the group's."""
    return crc16(g.encode()) & 16383


def wait_for(pred, timeout, what, interval=0.1):
    wait_until(pred, timeout=timeout, interval=interval, what=what)


def try_cmd(port, *args):
    try:
        c = RespClient(port, timeout=2.0)
        try:
            return c.cmd(*args)
        finally:
            c.close()
    except (OSError, ConnectionError, RedisError):
        return None


# ---------------------------------------------------------------------------
# Sentinel
# ---------------------------------------------------------------------------

class Sentinel:
    def __init__(self, tmpdir, master_port, name="mymaster"):
        self.port = free_port()
        self.dir = os.path.join(tmpdir, f"sentinel-{self.port}")
        os.makedirs(self.dir)
        self.conf = os.path.join(self.dir, "sentinel.conf")
        with open(self.conf, "w") as f:
            f.write(f"port {self.port}\nbind {HOST}\ndir {self.dir}\n"
                    f"sentinel monitor {name} {HOST} {master_port} 2\n"
                    f"sentinel down-after-milliseconds {name} 1000\n"
                    f"sentinel failover-timeout {name} 10000\n"
                    f"sentinel parallel-syncs {name} 1\n")
        self.proc = None

    def start(self):
        self.log = open(os.path.join(self.dir, "log"), "wb")
        self.proc = subprocess.Popen([REDIS_SERVER, self.conf, "--sentinel"], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: try_cmd(self.port, "PING") == "PONG", 10, f"sentinel on :{self.port}")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def link(st, role, kind=None):
    return [x for x in st.get("broker_links", []) if x["role"] == role and (kind is None or x["kind"] == kind)]


def master_port_seen(node):
    st = stats(node.port)
    links = link(st, "master", "commands")
    if st.get("broker") != "up" or not links or not all(x["up"] for x in links):
        return None
    return int(links[0]["addr"].rsplit(":", 1)[1])


@pytest.fixture
def sentinel_setup(tmp_path):
    d = str(tmp_path)
    master = RedisServer(d).start()
    replica = RedisServer(d, extra=["--replicaof", HOST, str(master.port)]).start()
    sentinels = []
    try:
        wait_for(lambda: b"master_link_status:up" in (try_cmd(replica.port, "INFO", "replication") or b""),
                 15, "the replica in sync")
        sentinels = [Sentinel(d, master.port).start() for _ in range(3)]
        # a failover needs the sentinels to know each other (hello messages every 2 s) and the replica
        wait_for(lambda: all(len(try_cmd(s.port, "SENTINEL", "SENTINELS", "mymaster") or []) == 2 and
                             len(try_cmd(s.port, "SENTINEL", "REPLICAS", "mymaster") or []) == 1
                             for s in sentinels), 20, "three sentinels that know each other and the replica")
        yield master, replica, sentinels
    finally:
        for s in sentinels:
            s.stop()
        replica.stop()
        master.stop()


def test_broker_url_errors_exit_1():
    for url in ["redis-sentinel://127.0.0.1:26379", "redis-sentinel://127.0.0.1:26379/bad name",
                "redis-sentinel://,127.0.0.1/m", "redis-cluster://127.0.0.1:7000/0",
                "redis://a:1,b:2", "redis-cluster://"]:
        p = subprocess.run([herald_bin(), "--listen", "127.0.0.1:0", "--broker", url], env=clean_env(),
                           capture_output=True, timeout=10)
        assert p.returncode == 1, (url, p.returncode, p.stderr)
        assert b"--broker" in p.stderr, (url, p.stderr)


def test_sentinel_failover_mid_stream(sentinel_setup, herald):
    master, replica, sentinels = sentinel_setup
    url = "redis-sentinel://" + ",".join(f"{HOST}:{s.port}" for s in sentinels) + "/mymaster"
    n0, n1 = [herald("--broker", url, "--history", "1000", workers=2) for _ in range(2)]
    for n in (n0, n1):
        wait_broker(n, "up")
        assert master_port_seen(n) == master.port, stats(n.port)["broker_links"]
    st = stats(n0.port)
    assert st["broker_mode"] == "sentinel"
    assert link(st, "sentinel") and link(st, "sentinel")[0]["up"], st["broker_links"]
    g = fresh("sent")

    async def main():
        s = await ws_connect(n1.port, sub(g))
        try:
            await apublish_all(n0.port, g, [f"m{k}" for k in range(1, 31)])
            before = await recv_envs(s, 30)
            assert [d["offset"] for d in before] == list(range(1, 31))
            epoch = before[0]["epoch"]
            # the writes reached the replica before the master dies
            assert master.cmd("WAIT", 1, 5000) >= 1
            t0 = time.monotonic()
            master.kill()
            # no master: degraded, and said so
            wait_for(lambda: healthz(n0.port)[1].startswith(b"degraded"), 5, "/healthz degraded on node 0")
            for n in (n0, n1):
                wait_for(lambda n=n: master_port_seen(n) == replica.port, 30,
                         f"node :{n.port} following the promoted replica")
            took = time.monotonic() - t0
            assert took < 30
            assert healthz(n0.port) == (200, b"ok\n")
            assert try_cmd(replica.port, "ROLE")[0] == b"master"
            assert stats(n0.port)["broker_failovers"] >= 1
            assert metrics(n1.port).get("herald_broker_failovers_total", 0) >= 1
            # publishes resume through the new master and reach the other node
            await apublish_all(n0.port, g, [f"m{k}" for k in range(31, 41)])
            after = [d for d in await recv_envs(s, 10) if d["data"].startswith("m")]
            assert [(d["offset"], d["epoch"]) for d in after] == [(k, epoch) for k in range(31, 41)], after
            # what was written before the failover is recoverable, with the same epoch, on any node
            for n in (n0, n1):
                c = await ws_connect(n.port, sub(g, since=f"{g}:10", epoch=epoch))
                try:
                    got = await recv_envs(c, 30)
                    assert [(d["offset"], d["data"]) for d in got] == [(k, f"m{k}") for k in range(11, 41)]
                    await expect_silence(c, 0.3)
                finally:
                    await c.close()
            print(f"sentinel failover followed in {took:.2f}s")
        finally:
            await s.close()
    run(main(), 120)


# ---------------------------------------------------------------------------
# Redis Cluster
# ---------------------------------------------------------------------------

CLUSTER_ARGS = ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]


class RedisCluster:
    """Three masters (slots split by redis-cli) and one replica of the first."""

    def __init__(self, tmpdir):
        self.tmpdir = tmpdir
        self.nodes = []
        self.bus = {}
        for i in range(4):
            # the cluster bus needs a port of its own: by default port + 10000, which may be taken
            # or out of range, so both are chosen free
            port = free_port()
            self.bus[port] = free_port()
            self.nodes.append(RedisServer(tmpdir, port=port,
                                          extra=CLUSTER_ARGS + ["--cluster-port", str(self.bus[port]),
                                                                "--cluster-config-file", f"nodes-{port}.conf"]))
        self.masters, self.replica = self.nodes[:3], self.nodes[3]

    def start(self):
        for n in self.nodes:
            n.start()
        if not REDIS_CLI:
            pytest.fail("redis-cli not found: install the Debian package redis-tools")
        p = subprocess.run([REDIS_CLI, "--cluster", "create"] + [f"{HOST}:{m.port}" for m in self.masters] +
                           ["--cluster-yes"], capture_output=True, timeout=60)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        for m in self.masters:
            wait_for(lambda m=m: b"cluster_state:ok" in (try_cmd(m.port, "CLUSTER", "INFO") or b""), 20,
                     f"cluster_state ok on :{m.port}")
        first = self.masters[0]
        self.first_id = first.cmd("CLUSTER", "MYID").decode()
        self.replica.cmd("CLUSTER", "MEET", HOST, first.port, self.bus[first.port])
        wait_for(lambda: self.first_id.encode() in (try_cmd(self.replica.port, "CLUSTER", "NODES") or b""), 20,
                 "the replica meeting the cluster")
        wait_for(lambda: try_cmd(self.replica.port, "CLUSTER", "REPLICATE", self.first_id) == "OK", 20,
                 "the replica attached to the first master")
        wait_for(lambda: b"master_link_status:up" in (try_cmd(self.replica.port, "INFO", "replication") or b""),
                 20, "the replica in sync")
        return self

    def owner(self, slot):
        """The master port serving a slot, per CLUSTER SLOTS on any master."""
        for m in self.nodes:
            r = try_cmd(m.port, "CLUSTER", "SLOTS")
            if r:
                for lo, hi, master, *_ in r:
                    if lo <= slot <= hi:
                        return master[1]
        raise AssertionError(f"no owner for slot {slot}")

    def url(self, n=2):
        return "redis-cluster://" + ",".join(f"{HOST}:{m.port}" for m in self.masters[:n])

    def stop(self):
        for n in self.nodes:
            n.stop()


@pytest.fixture
def cluster(tmp_path):
    c = RedisCluster(str(tmp_path))
    try:
        yield c.start()
    finally:
        c.stop()


def groups_on_every_shard(cluster, prefix):
    """One fresh group name per master, by slot."""
    want = {m.port: None for m in cluster.masters}
    i = 0
    ranges = {}
    for lo, hi, master, *_ in cluster.masters[0].cmd("CLUSTER", "SLOTS"):
        ranges[(lo, hi)] = master[1]
    while any(v is None for v in want.values()):
        g = f"{prefix}{i}"
        i += 1
        s = slot_of_group(g)
        port = next(p for (lo, hi), p in ranges.items() if lo <= s <= hi)
        if want[port] is None:
            want[port] = g
    return want  # master port -> group


def test_redis_cluster_groups_on_every_shard(cluster, herald):
    n0, n1 = [herald("--broker", cluster.url(), "--history", "100", workers=2) for _ in range(2)]
    for n in (n0, n1):
        wait_broker(n, "up")
    st = stats(n0.port)
    assert st["broker_mode"] == "cluster"
    masters = link(st, "master")
    assert len(masters) == 6 and all(x["up"] for x in masters), st["broker_links"]
    assert {int(x["addr"].rsplit(":", 1)[1]) for x in masters} == {m.port for m in cluster.masters}
    shard_groups = groups_on_every_shard(cluster, fresh("shard"))
    groups = list(shard_groups.values())

    async def main():
        s = await ws_connect(n1.port, sub(",".join(groups)))
        alls = await ws_connect(n1.port, sub(None))
        try:
            for g in groups:
                await apublish_all(n0.port, g, [f"{g}-{k}" for k in range(1, 11)])
            await apublish_all(n0.port, None, ["everyone-1", "everyone-2"])
            got = await recv_envs(s, 30 + 2)
            for g in groups:
                mine = [d for d in got if d["group"] == g]
                assert [(d["offset"], d["data"]) for d in mine] == [(k, f"{g}-{k}") for k in range(1, 11)], g
            assert [d["data"] for d in got if d["data"].startswith("everyone")] == ["everyone-1", "everyone-2"]
            assert [d["data"] for d in await recv_envs(alls, 2)] == ["everyone-1", "everyone-2"]
            await expect_silence(s, 0.3)
        finally:
            await s.close()
            await alls.close()
    run(main(), 60)
    # each group's history and counter live on its own shard; its channel is sharded there
    for port, g in shard_groups.items():
        c = RespClient(port)
        try:
            assert c.cmd("XLEN", f"herald:h:{{{g}}}") == 10, (port, g)
            assert c.cmd("GET", f"herald:off:{{{g}}}") == b"10"
            assert c.cmd("PUBSUB", "SHARDNUMSUB", f"herald:0:g:{{{g}}}")[1] == 0  # n1 left
        finally:
            c.close()
    # a node that never saw the groups recovers them from their shards
    n2 = herald("--broker", cluster.url(1), "--history", "100", workers=1)
    wait_broker(n2, "up")
    epoch = stats(n0.port)["epoch"]
    assert stats(n2.port)["epoch"] == epoch

    async def recover():
        since = ",".join(f"{g}:4" for g in groups)
        c = await ws_connect(n2.port, sub(",".join(groups), since=since, epoch=epoch))
        try:
            got = await recv_envs(c, 18)
            for g in groups:
                assert [d["offset"] for d in got if d["group"] == g] == list(range(5, 11)), g
            await expect_silence(c, 0.3)
        finally:
            await c.close()
    run(recover(), 30)
    assert stats(n2.port)["broker_fetches"] >= 3


async def stream_under_change(pub_node, sub_node, g, n, steps, pause):
    """Publishes n messages to g on pub_node (one HTTP publish each), running steps[k]() (in a
    thread; a falsy result fails) after the k-th; a subscriber on sub_node must get all of them
    once, in order, offsets 1..n, one epoch."""
    s = await ws_connect(sub_node.port, sub(g))
    try:
        async def publish():
            for k in range(1, n + 1):
                await asyncio.to_thread(publish_all, pub_node.port, g, [f"x{k}"])
                if k in steps:
                    assert await asyncio.to_thread(steps[k]) is not False, f"step {k}"
                await asyncio.sleep(pause)
        t = asyncio.create_task(publish())
        got = await recv_envs(s, n, 60)
        await t
        await expect_silence(s, 0.5)
        assert [d["data"] for d in got] == [f"x{k}" for k in range(1, n + 1)], "lost, duplicated or reordered"
        assert [d["offset"] for d in got] == list(range(1, n + 1))
        assert len({d["epoch"] for d in got}) == 1
    finally:
        await s.close()


def test_redis_cluster_failover_under_traffic(cluster, herald):
    """A CLUSTER FAILOVER moves the first master's slots to its replica while a publisher writes to a
    group on that shard: herald follows the new master (redirections, then the new slot map) and
    every message arrives once, offsets without gap."""
    n0, n1 = [herald("--broker", cluster.url(), "--history", "1000", workers=2) for _ in range(2)]
    for n in (n0, n1):
        wait_broker(n, "up")
    first = cluster.masters[0]
    g = groups_on_every_shard(cluster, fresh("fo"))[first.port]
    N = 300

    run(stream_under_change(n0, n1, g, N, {100: lambda: cluster.replica.cmd("CLUSTER", "FAILOVER") == "OK"},
                            pause=0.01), 120)
    assert try_cmd(cluster.replica.port, "ROLE")[0] == b"master"
    for n in (n0, n1):
        wait_for(lambda n=n: cluster.replica.port in {int(x["addr"].rsplit(":", 1)[1])
                                                      for x in link(stats(n.port), "master") if x["up"]},
                 15, f"node :{n.port} connected to the promoted replica")
        # the former master leaves the nodes' connections once nothing is pending on it
        wait_for(lambda n=n: first.port not in {int(x["addr"].rsplit(":", 1)[1])
                                                for x in stats(n.port)["broker_links"]},
                 15, f"node :{n.port} closing the former master")
    st = stats(n0.port)
    assert st["broker_failovers"] + st["broker_redirections"] >= 1, st

    # broadcasts to all (their slot, 1320, was on the failed-over shard) and the group still flow
    async def after():
        alls = await ws_connect(n1.port, sub(None))
        s = await ws_connect(n1.port, sub(g))
        try:
            await apublish_all(n0.port, None, ["all-after"])
            await apublish_all(n0.port, g, ["g-after"])
            assert [d["data"] for d in await recv_envs(alls, 1)] == ["all-after"]
            got = await recv_envs(s, 2)
            assert sorted(d["data"] for d in got) == ["all-after", "g-after"]
            assert [d["offset"] for d in got if d["group"] == g] == [N + 1]
            await expect_silence(alls, 0.3)
        finally:
            await alls.close()
            await s.close()
    run(after(), 30)


def test_redis_cluster_reshard_under_traffic(cluster, herald):
    """A group's slot migrates from one master to another (IMPORTING/MIGRATING, MIGRATE of its keys,
    SETSLOT NODE) while a publisher writes to it: publishes follow ASK and MOVED (and wait out
    TRYAGAIN), the subscription follows the slot, and every message arrives once, in order, under
    one epoch."""
    n0, n1 = [herald("--broker", cluster.url(), "--history", "1000", workers=2) for _ in range(2)]
    for n in (n0, n1):
        wait_broker(n, "up")
    src, dst = cluster.masters[1], cluster.masters[2]
    g = groups_on_every_shard(cluster, fresh("rs"))[src.port]
    slot = slot_of_group(g)
    src_id, dst_id = src.cmd("CLUSTER", "MYID").decode(), dst.cmd("CLUSTER", "MYID").decode()
    N = 300

    def migrate_keys():
        while True:
            keys = src.cmd("CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not keys:
                return
            assert src.cmd("MIGRATE", HOST, dst.port, "", 0, 5000, "KEYS", *keys) == "OK"

    steps = {
        50: lambda: (dst.cmd("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id),
                     src.cmd("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)),
        120: migrate_keys,
        200: lambda: [m.cmd("CLUSTER", "SETSLOT", slot, "NODE", dst_id) for m in (dst, src, cluster.masters[0])],
    }

    run(stream_under_change(n0, n1, g, N, steps, pause=0.005), 120)
    assert cluster.owner(slot) == dst.port
    assert dst.cmd("GET", f"herald:off:{{{g}}}") == str(N).encode()
    assert stats(n0.port)["broker_redirections"] >= 1
    assert stats(n0.port)["broker"] == "up"
