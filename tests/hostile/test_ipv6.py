"""Issue 8: --max-conns-per-ip counts IPv6 clients per --ipv6-prefix network. Only ::1 exists on a test
machine, so this checks the limit over IPv6 at all (one address is in every prefix): two connections
from ::1 are served, the third gets 429 and is closed, and a slot frees when one closes.
"""

import socket

import pytest

from conftest import Herald
from herald_helpers import read_response, wait_until, ws_request_bytes
from hostile_helpers import connect, http_get, metric_of, scrape, slack

V6 = "::1"


def require_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind((V6, 0))
    except OSError as e:
        pytest.fail(f"IPv6 loopback {V6} is not usable on this machine ({e}): the IPv6 tests need it")


def connect6(port):
    return connect(port, V6, timeout=slack(5), family=socket.AF_INET6)


class Herald6(Herald):
    """The integration Herald, listening on [::1] (its readiness probe speaks IPv4)."""

    def _wait_healthy(self, timeout=20.0):
        def healthy():
            try:
                return scrape(self.port, V6) is not None
            except (OSError, AssertionError):
                assert self.alive(), f"herald exited: {self.stderr_text()[-2000:]}"
                return False
        wait_until(healthy, timeout=timeout, interval=0.05, what="/metrics over [::1]")


@pytest.fixture
def herald6(tmp_path):
    servers = []

    def start(*args):
        require_ipv6_loopback()
        srv = Herald6(["--listen", f"[{V6}]:0", *args], tmpdir=str(tmp_path))
        servers.append(srv)
        return srv
    yield start
    problems = [p for s in servers for p in s.stop()]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def upgrade6(port):
    """A subscriber over IPv6; returns (status, socket kept open on 101)."""
    s = connect6(port)
    s.sendall(ws_request_bytes(path="/ws?groups=v6", host=f"[{V6}]:{port}"))
    r, _ = read_response(s, timeout=slack(5), expect_close=False)
    if r.status != 101:
        s.close()
        return r.status, None
    return r.status, s


@pytest.mark.parametrize("prefix", ["128", "64", "0"])
def test_third_connection_from_ipv6_loopback_gets_429(herald6, prefix):
    srv = herald6("--max-conns-per-ip", "2", "--ipv6-prefix", prefix)
    held = []

    def admitted():
        st, s = upgrade6(srv.port)
        assert st in (101, 429), st
        if s:
            held.append(s)
        return s is not None

    try:
        # the readiness probe's connection may not be released yet: retry, bounded
        for _ in range(2):
            wait_until(admitted, timeout=slack(5), interval=0.05, what="an IPv6 subscriber under the limit")
        s = connect6(srv.port)
        try:
            s.sendall(http_get("/healthz"))
            r, _ = read_response(s, timeout=slack(5), expect_close=True)
        finally:
            s.close()
        assert r.status == 429, f"third connection from {V6} with --max-conns-per-ip 2: {r!r}"
        assert r.closed and (r.header("connection") or "").lower() == "close", r
        held.pop().close()
        wait_until(admitted, timeout=slack(5), interval=0.05, what="a slot after closing one")
    finally:
        for s in held:
            s.close()
    samples = wait_until(lambda: _scrape_or_none(srv.port), timeout=slack(5), what="/metrics once the slots free")
    assert metric_of(samples, 'herald_requests_failed_total{status="429"}') >= 1


def _scrape_or_none(port):
    try:
        return scrape(port, V6)
    except (OSError, AssertionError):
        return None
