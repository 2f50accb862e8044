"""Plain HTTP endpoints (/healthz, /metrics, /stats, /), keep-alive, and the command line."""

import asyncio
import json
import socket
import subprocess

import pytest

from herald_helpers import (COUNTERS, GAUGES, HOST, RawWS, apublish, build_frame, http_call, metrics,
                            parse_prometheus, read_response, recv_n, run, wait_until, ws_connect)
from conftest import clean_env, herald_bin

FLAGS = ["--listen", "--workers", "--max-message-size", "--queue-limit", "--write-timeout", "--slow-policy",
         "--ping-interval", "--idle-timeout", "--max-header-size", "--max-groups", "--shutdown-timeout",
         "--help", "--version"]


@pytest.fixture(scope="module")
def srv(herald_module):
    return herald_module()


# ---------------------------------------------------------------- endpoints

def test_healthz(srv):
    st, h, body = http_call(srv.port, "GET", "/healthz")
    assert st == 200 and body == b"ok\n"


def test_status_page(srv):
    st, h, body = http_call(srv.port, "GET", "/")
    assert st == 200
    assert "text/html" in h.get("Content-Type", ""), h
    assert len(body) > 0


def test_metrics_format_and_names(srv):
    st, h, body = http_call(srv.port, "GET", "/metrics")
    assert st == 200
    assert h.get("Content-Type", "").startswith("text/plain"), h
    samples, types = parse_prometheus(body.decode())
    for name in COUNTERS:
        assert name in samples, f"missing metric {name}"
        assert types.get(name) == "counter", f"# TYPE {name} should be counter, got {types.get(name)}"
        assert samples[name] >= 0
    for name in GAUGES:
        assert name in samples, f"missing metric {name}"
        assert types.get(name) == "gauge", f"# TYPE {name} should be gauge, got {types.get(name)}"


def test_stats_json(srv):
    st, h, body = http_call(srv.port, "GET", "/stats")
    assert st == 200
    assert "application/json" in h.get("Content-Type", ""), h
    obj = json.loads(body)
    assert isinstance(obj, dict)
    for name in COUNTERS + GAUGES:
        key = name[len("herald_"):]
        if key.endswith("_total"):
            key = key[:-len("_total")]
        assert key in obj, f"/stats lacks {key!r}: {sorted(obj)}"
        assert isinstance(obj[key], (int, float)) and not isinstance(obj[key], bool), (key, obj[key])


def test_counters_move(srv):
    async def main():
        before = metrics(srv.port)
        async with ws_connect(srv.port, "/ws?groups=cm") as s1, ws_connect(srv.port, "/ws?groups=cm") as s2:
            mid = metrics(srv.port)
            assert mid["herald_connections_open"] >= 2
            assert mid["herald_connections_accepted_total"] >= before["herald_connections_accepted_total"] + 2
            for i in range(3):
                await apublish(srv.port, "p" * 100, group="cm", content_type="text/plain")
            assert await recv_n(s1, 3) == ["p" * 100] * 3
            assert await recv_n(s2, 3) == ["p" * 100] * 3
            async with ws_connect(srv.port, "/publish?group=cm") as pub:
                await pub.send(b"s" * 1000)
                assert await recv_n(s1, 1) == [b"s" * 1000]
                assert await recv_n(s2, 1) == [b"s" * 1000]
            after = metrics(srv.port)
            d = {k: after[k] - before[k] for k in COUNTERS}
            assert d["herald_messages_published_total"] == 4, d
            assert d["herald_deliveries_total"] == 8, d
            assert d["herald_bytes_out_total"] >= 6 * 100 + 2 * 1000, d
            assert d["herald_bytes_in_total"] >= 1000, d
        # both subscribers gone again
        wait_until(lambda: metrics(srv.port)["herald_connections_open"] <= mid["herald_connections_open"] - 2,
                   5, 0.05, "connections_open to drop after closing")
    run(main())


def test_failure_counters_move(srv):
    before = metrics(srv.port)
    s = socket.create_connection((HOST, srv.port), timeout=5)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Version: 13\r\n\r\n")  # no key
    resp, _ = read_response(s)
    s.close()
    assert resp.status == 400
    c = RawWS.connect(srv.port, "/ws")
    c.send(build_frame(0x1, b"x", mask=False))
    c.expect_close(1002)
    c.close()
    after = metrics(srv.port)
    assert after["herald_handshakes_failed_total"] >= before["herald_handshakes_failed_total"] + 1
    assert after["herald_protocol_errors_total"] >= before["herald_protocol_errors_total"] + 1


def test_stats_agree_with_metrics(srv):
    m = metrics(srv.port)
    st, _, body = http_call(srv.port, "GET", "/stats")
    obj = json.loads(body)
    # monotonic counters: /stats taken later is >= /metrics taken earlier
    for name in ["herald_messages_published_total", "herald_deliveries_total"]:
        key = name[len("herald_"):-len("_total")]
        assert obj[key] >= m[name]


# ---------------------------------------------------------------- keep-alive

def test_keepalive_two_requests_one_connection(srv):
    s = socket.create_connection((HOST, srv.port), timeout=5)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        r1, rest = read_response(s)
        assert r1.status == 200 and r1.body == b"ok\n"
        assert "close" not in r1.header("connection", "").lower()
        s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
        r2, rest = read_response(s, rest)
        assert r2.status == 200
        json.loads(r2.body)
        body = b'{"a":1}'
        s.sendall(b"POST /publish?group=ka HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        r3, rest = read_response(s, rest)
        assert r3.status == 200, r3
        assert json.loads(r3.body) == {"ok": True, "group": "ka", "bytes": len(body)}
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        r4, rest = read_response(s, rest)
        assert r4.status == 200
    finally:
        s.close()


def test_pipelined_requests(srv):
    s = socket.create_connection((HOST, srv.port), timeout=5)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"POST /publish?group=pl HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                  b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nde"
                  b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        r1, rest = read_response(s)
        r2, rest = read_response(s, rest)
        r3, rest = read_response(s, rest)
        r4, rest = read_response(s, rest, expect_close=True)
        assert r1.status == 200 and r1.body == b"ok\n"
        assert r2.status == 200 and json.loads(r2.body) == {"ok": True, "group": "pl", "bytes": 3}
        assert r3.status == 200 and json.loads(r3.body) == {"ok": True, "group": None, "bytes": 2}
        assert r4.status == 200 and r4.closed, "Connection: close not honoured"
    finally:
        s.close()


def test_connection_close_honoured(srv):
    s = socket.create_connection((HOST, srv.port), timeout=5)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        r, _ = read_response(s, expect_close=True)
        assert r.status == 200 and r.closed
    finally:
        s.close()


def test_http_then_upgrade_on_same_connection(srv):
    """A keep-alive connection may upgrade on a later request."""
    s = socket.create_connection((HOST, srv.port), timeout=5)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        r1, rest = read_response(s)
        assert r1.status == 200
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        r2, rest = read_response(s, rest)
        assert r2.status == 101
        c = RawWS(s, rest, r2)
        c.ping_roundtrip(b"upgraded")
    finally:
        s.close()


def test_http_publish_many_connections_parallel(srv):
    async def main():
        async with ws_connect(srv.port, "/ws?groups=par") as s:
            N = 60
            await asyncio.gather(*(apublish(srv.port, f"x{i}", group="par", content_type="text/plain")
                                   for i in range(N)))
            got = await recv_n(s, N, 20)
            assert sorted(got) == sorted(f"x{i}" for i in range(N))
    run(main())


# ---------------------------------------------------------------- command line

def cli(*args, timeout=10):
    p = subprocess.run([herald_bin()] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout, env=clean_env())
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def test_help_mentions_every_flag():
    rc, out, err = cli("--help")
    assert rc == 0, (rc, err)
    text = out + err
    for f in FLAGS:
        assert f in text, f"--help does not mention {f}"
    for w in ("close", "drop-oldest"):
        assert w in text


def test_version():
    rc, out, err = cli("--version")
    assert rc == 0
    assert "0.1.0" in out + err


@pytest.mark.parametrize("args", [
    ["--workers", "abc"],
    ["--workers", "-1"],
    ["--workers"],
    ["--max-message-size", "abc"],
    ["--max-message-size", "-5"],
    ["--max-message-size", "10x"],
    ["--queue-limit", "lots"],
    ["--write-timeout", "soon"],
    ["--write-timeout", "-1"],
    ["--slow-policy", "ignore"],
    ["--ping-interval", "x"],
    ["--idle-timeout", "-3"],
    ["--max-header-size", "big"],
    ["--max-groups", "many"],
    ["--shutdown-timeout", "nan?"],
    ["--listen", "nonsense"],
    ["--listen", "127.0.0.1:99999"],
    ["--listen", "127.0.0.1:-1"],
    ["--bogus-flag"],
    ["positional"],
], ids=lambda a: " ".join(a))
def test_bad_flag_values_exit_2(args):
    try:
        rc, out, err = cli(*(args + ["--listen", "127.0.0.1:0"] if args[0] != "--listen" else args), timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"herald started with bad arguments {args} instead of exiting with status 2")
    assert rc == 2, f"{args}: exit status {rc}, expected 2 (stderr: {err!r})"
    assert err.strip(), f"{args}: no message on stderr"


def test_size_suffix_k(herald):
    srv = herald("--max-message-size", "1k")
    st, _, _ = http_call(srv.port, "POST", "/publish?group=k", body=b"a" * 1024)
    assert st == 200
    st, _, _ = http_call(srv.port, "POST", "/publish?group=k", body=b"a" * 1025)
    assert st == 413


def test_size_suffix_m_and_fractional_seconds(herald):
    srv = herald("--max-message-size", "2m", "--queue-limit", "8m", "--write-timeout", "0.5",
                 "--shutdown-timeout", "1.5", "--ping-interval", "10.25", "--workers", "3")
    st, _, _ = http_call(srv.port, "POST", "/publish?group=m", body=b"a" * (2 * 1024 * 1024))
    assert st == 200
    st, _, _ = http_call(srv.port, "POST", "/publish?group=m", body=b"a" * (2 * 1024 * 1024 + 1))
    assert st == 413


def test_listen_port_printed_and_used(herald):
    srv = herald()
    assert srv.host == "127.0.0.1" and srv.port > 0


@pytest.mark.parametrize("nofile", [4, 5])
def test_too_few_descriptors_to_start_exits_1(nofile):
    """A descriptor limit too small for a worker's epoll, eventfd or listener: herald says so and
    exits with status 1 (a worker that failed to set up is cleaned up without touching what it
    never opened: no crash, no close of descriptor 0)."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    p = subprocess.run([herald_bin(), "--listen", "127.0.0.1:0", "--workers", "1"], env=clean_env(),
                       capture_output=True, timeout=10, preexec_fn=limit)
    err = p.stderr.decode()
    assert p.returncode == 1, f"RLIMIT_NOFILE {nofile}: exit status {p.returncode} (stderr: {err!r})"
    assert "cannot set up worker 0: Too many open files" in err, err
