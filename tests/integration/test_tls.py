"""TLS (issue 4): --tls-cert/--tls-key serve https:// and wss:// on the listener.

A self-signed P-256 certificate for IP 127.0.0.1 is generated at test time with the openssl CLI; the
clients (Python ssl, http.client, websockets) trust exactly that certificate. The conftest fixture
waits for /healthz over plain HTTP, so TLS servers are started by the small helper below (listening
line on stderr, then /healthz over https), and stopped with SIGTERM: exit 0, no sanitizer report.
"""

import asyncio
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import time

import pytest
import websockets.client
import websockets.exceptions

from conftest import LISTEN_RE, SANITIZER_PATTERNS, binary_is_sanitized, clean_env, herald_bin
from herald_helpers import (HOST, OP_BINARY, OP_TEXT, RawWS, accept_for, build_frame, expect_ws_close, parse_prometheus,
                            read_response, recv, recv_n, run, ws_request_bytes)


# --------------------------------------------------------------------------
# certificate and server helpers
# --------------------------------------------------------------------------

def make_cert(d, name="c"):
    cert, key = os.path.join(d, f"{name}.pem"), os.path.join(d, f"{name}-key.pem")
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr.decode()
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tls"))
    cert, key = make_cert(d)
    cert2, key2 = make_cert(d, "other")
    return {"cert": cert, "key": key, "other_cert": cert2, "other_key": key2, "dir": d}


def client_ctx(cafile):
    ctx = ssl.create_default_context(cafile=cafile)   # verifies the chain and the IP SAN
    return ctx


class TlsHerald:
    def __init__(self, args, tmpdir, cafile, workers=2):
        self.binary = herald_bin()
        self.ctx = client_ctx(cafile)
        self.args = ["--listen", f"{HOST}:0", "--workers", str(workers)] + [str(a) for a in args]
        self.stderr_path = os.path.join(tmpdir, f"herald-tls-{os.getpid()}-{id(self)}.stderr")
        self._err = open(self.stderr_path, "wb")
        env = clean_env()
        env["ASAN_OPTIONS"] = ":".join(x for x in [env.get("ASAN_OPTIONS", ""), "detect_leaks=1"] if x)
        self.proc = subprocess.Popen([self.binary] + self.args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._err, env=env)
        self.pid = self.proc.pid
        self.stopped = False
        deadline = time.monotonic() + 20
        while True:
            m = LISTEN_RE.search(self.stderr_text())
            if m:
                self.port = int(m.group(2))
                break
            if self.proc.poll() is not None:
                pytest.fail(f"TLS herald exited {self.proc.returncode}: {self.stderr_text()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"TLS herald did not print its listening line: {self.stderr_text()}")
            time.sleep(0.01)
        assert "TLS" in m.string[m.end():].split("\n")[0], "listening line should say TLS"
        last = None
        while time.monotonic() < deadline:
            try:
                st, _, body = self.https("GET", "/healthz", timeout=2)
                if st == 200:
                    break
                last = st
            except (OSError, http.client.HTTPException) as e:
                last = e
            time.sleep(0.05)
        else:
            pytest.fail(f"https /healthz did not answer 200 ({last!r}): {self.stderr_text()}")

    @property
    def sanitized(self):
        return binary_is_sanitized(self.binary)

    def stderr_text(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.proc.poll() is None

    def https(self, method, path, body=None, headers=None, timeout=10):
        c = http.client.HTTPSConnection(HOST, self.port, context=self.ctx, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, r.headers, r.read()
        finally:
            c.close()

    def publish(self, body, group=None, content_type="text/plain"):
        if isinstance(body, str):
            body = body.encode()
        h = {"Content-Length": str(len(body))}
        if content_type:
            h["Content-Type"] = content_type
        st, _, data = self.https("POST", "/publish" + (f"?group={group}" if group else ""), body, h)
        assert st == 200, (st, data)
        return json.loads(data)

    def metrics(self):
        st, _, body = self.https("GET", "/metrics")
        assert st == 200
        return parse_prometheus(body.decode())[0]

    def wss(self, path, **kw):
        opts = dict(ping_interval=None, max_size=None, max_queue=None, compression=None,
                    open_timeout=20, close_timeout=5, ssl=self.ctx)
        opts.update(kw)
        return websockets.client.connect(f"wss://{HOST}:{self.port}{path}", **opts)

    def raw_tls_ws(self, path, timeout=5):
        s = socket.create_connection((HOST, self.port), timeout=timeout)
        t = self.ctx.wrap_socket(s, server_hostname=HOST)
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        t.sendall(ws_request_bytes(path=path, host=f"{HOST}:{self.port}", key=key))
        resp, rest = read_response(t, timeout=timeout)
        assert resp.status == 101, resp
        assert resp.header("sec-websocket-accept") == accept_for(key)
        return RawWS(t, rest, resp)

    def send_signal(self, sig):
        """A signal the test sends on purpose: exiting after it is not a problem."""
        self.signalled = sig
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Signal, require exit 0 and no sanitizer report. Returns a list of problems."""
        if self.stopped:
            return []
        self.stopped = True
        problems = []
        if self.proc.poll() is not None and getattr(self, "signalled", None):
            if self.proc.returncode != 0:
                problems.append(f"exited with status {self.proc.returncode} after {self.signalled!r}")
        elif self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problems.append(f"did not exit within {timeout}s of {sig.name}")
        else:
            problems.append(f"exited on its own with status {self.proc.returncode}")
        self._err.close()
        err = self.stderr_text()
        if self.proc.returncode != 0 and not problems:
            problems.append(f"exit status {self.proc.returncode} after {sig.name}")
        for pat in SANITIZER_PATTERNS:
            if pat in err:
                problems.append(f"sanitizer report ({pat})")
        if problems:
            problems.append(f"args {self.args}\nstderr:\n{err[-6000:]}")
        return problems


@pytest.fixture
def tls_herald(certs, tmp_path):
    servers = []

    def start(*args, workers=2):
        srv = TlsHerald(["--tls-cert", certs["cert"], "--tls-key", certs["key"], *args], str(tmp_path),
                        certs["cert"], workers=workers)
        servers.append(srv)
        return srv
    yield start
    problems = []
    for s in servers:
        problems += s.stop()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def run_herald(args, timeout=20):
    p = subprocess.run([herald_bin()] + args, capture_output=True, timeout=timeout, env=clean_env(),
                       stdin=subprocess.DEVNULL)
    err = p.stderr.decode("utf-8", "replace")
    for pat in SANITIZER_PATTERNS:
        assert pat not in err, err
    return p.returncode, err


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------

def test_https_healthz_metrics_and_status_page(tls_herald):
    srv = tls_herald()
    st, hdrs, body = srv.https("GET", "/healthz")
    assert (st, body) == (200, b"ok\n")
    m = srv.metrics()
    assert "herald_connections_open" in m
    st, hdrs, body = srv.https("GET", "/")
    assert st == 200 and hdrs["Content-Type"].startswith("text/html")
    # keep-alive over TLS: several requests on one connection
    c = http.client.HTTPSConnection(HOST, srv.port, context=srv.ctx, timeout=10)
    try:
        for _ in range(5):
            c.request("GET", "/healthz")
            r = c.getresponse()
            assert (r.status, r.read()) == (200, b"ok\n")
    finally:
        c.close()


def test_wss_subscribe_https_publish_roundtrip(tls_herald):
    srv = tls_herald()

    async def main():
        async with srv.wss("/ws?groups=t") as sub, srv.wss("/ws") as everyone:
            r = await asyncio.to_thread(srv.publish, "hello over TLS", "t")
            assert r == {"ok": True, "group": "t", "bytes": 14}
            assert await recv(sub) == "hello over TLS"
            await asyncio.to_thread(srv.publish, b"\x00\x01\x02", None, "application/octet-stream")
            assert await recv(sub) == b"\x00\x01\x02"
            assert await recv(everyone) == b"\x00\x01\x02"
    run(main())
    m = srv.metrics()
    assert m['herald_deliveries_by_transport_total{transport="wss"}'] >= 3, m


def test_large_and_many_small_messages_in_order_over_tls(tls_herald):
    srv = tls_herald()
    big = os.urandom(300 * 1024)
    N = 2000

    async def main():
        async with srv.wss("/ws?groups=big") as sub:
            raw = await asyncio.to_thread(srv.raw_tls_ws, "/ws?groups=big")
            try:
                await asyncio.to_thread(srv.publish, big, "big", "application/octet-stream")
                assert await recv(sub, 20) == big
                op, payload = await asyncio.to_thread(raw.recv_message, 20)
                assert (op, payload == big) == (OP_BINARY, True)
                # many small ones from a wss publisher, in order, to both clients
                async with srv.wss("/publish?group=big") as pub:
                    for i in range(N):
                        await pub.send(f"s{i}")
                    await pub.send(big)            # a large one after many small ones
                got = await recv_n(sub, N + 1, timeout=30)
                assert got[:N] == [f"s{i}" for i in range(N)]
                assert got[N] == big
                for i in range(N):
                    op, payload = await asyncio.to_thread(raw.recv_message, 10)
                    assert (op, payload) == (OP_TEXT, f"s{i}".encode())
                op, payload = await asyncio.to_thread(raw.recv_message, 20)
                assert payload == big
            finally:
                raw.close()
    run(main(), timeout=90)


def test_many_wss_subscribers(tls_herald):
    srv = tls_herald()
    N = 100

    async def main():
        subs = await asyncio.gather(*(srv.wss("/ws?groups=fan") for _ in range(N)))
        try:
            for i in range(5):
                await asyncio.to_thread(srv.publish, f"f{i}", "fan")
            got = await asyncio.gather(*(recv_n(ws, 5, 20) for ws in subs))
            assert all(g == [f"f{i}" for i in range(5)] for g in got)
        finally:
            await asyncio.gather(*(ws.close() for ws in subs), return_exceptions=True)
    run(main())


def read_until_closed(sock, timeout=5.0):
    """Everything the server sends before closing; fails if it keeps the connection open."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        try:
            d = sock.recv(65536)
        except ConnectionResetError:
            return data
        except socket.timeout:
            raise AssertionError(f"server kept the connection open {timeout}s (got {data[:100]!r})")
        if not d:
            return data
        data += d
        assert time.monotonic() < deadline


@pytest.mark.parametrize("payload", [
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\nabc",
    ws_request_bytes(path="/ws"),
    os.urandom(600),
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",     # a truncated ClientHello, then FIN
])
def test_plaintext_or_garbage_to_tls_port_is_refused(tls_herald, payload):
    srv = tls_herald()
    async def sub_main():
        async with srv.wss("/ws?groups=p") as sub:
            s = socket.create_connection((HOST, srv.port), timeout=5)
            try:
                s.sendall(payload)
                if payload.startswith(b"\x16"):
                    try:
                        s.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass  # the server already dropped it (random bytes can start with 0x16)
                data = await asyncio.to_thread(read_until_closed, s)
            finally:
                s.close()
            assert not data.startswith(b"HTTP/1.1 200"), data
            assert not data.startswith(b"HTTP/1.1 101"), data
            # the server is fine: TLS clients still work
            await asyncio.to_thread(srv.publish, "after garbage", "p")
            assert await recv(sub) == "after garbage"
    run(sub_main())
    assert srv.alive()


def test_plaintext_http_client_fails_cleanly(tls_herald):
    srv = tls_herald()
    c = http.client.HTTPConnection(HOST, srv.port, timeout=5)
    try:
        with pytest.raises((http.client.HTTPException, ConnectionError, socket.timeout, OSError)):
            c.request("GET", "/healthz")
            r = c.getresponse()
            r.read()
            if r.status == 200:
                raise AssertionError("plaintext HTTP answered 200 on a TLS port")
            raise http.client.HTTPException(f"refused with {r.status}")
    finally:
        c.close()
    assert srv.https("GET", "/healthz")[0] == 200


def test_abandoned_tls_handshakes_do_not_hurt(tls_herald):
    srv = tls_herald()
    socks = []
    try:
        for _ in range(20):                  # connect and say nothing
            socks.append(socket.create_connection((HOST, srv.port), timeout=5))
        for _ in range(20):                  # start a handshake and vanish
            s = socket.create_connection((HOST, srv.port), timeout=5)
            s.sendall(b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03" + os.urandom(40))
            s.close()
        for _ in range(3):
            assert srv.https("GET", "/healthz")[0] == 200
    finally:
        for s in socks:
            s.close()


def test_wss_shutdown_sigterm_1012(tls_herald):
    srv = tls_herald("--drain-window", "0.3")

    async def main():
        subs = [await srv.wss("/ws?groups=d") for _ in range(5)]
        for i in range(20):
            await asyncio.to_thread(srv.publish, f"q{i}", "d")
        srv.send_signal(signal.SIGTERM)
        for ws in subs:
            assert await recv_n(ws, 20, 10) == [f"q{i}" for i in range(20)]
            await expect_ws_close(ws, 1012, 10)
    run(main())
    problems = srv.stop(timeout=15)
    assert not problems, "\n".join(problems)


def test_wss_shutdown_sigint_1001(tls_herald):
    srv = tls_herald()

    async def main():
        subs = [await srv.wss("/ws") for _ in range(3)]
        srv.send_signal(signal.SIGINT)
        for ws in subs:
            await expect_ws_close(ws, 1001, 10)
    run(main())
    problems = srv.stop(sig=signal.SIGINT, timeout=15)
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------
# bad TLS configuration
# --------------------------------------------------------------------------

def test_cert_without_key_exits_2(certs):
    rc, err = run_herald(["--listen", f"{HOST}:0", "--tls-cert", certs["cert"]])
    assert rc == 2, (rc, err)
    assert "tls" in err.lower() and "listening" not in err
    rc, err = run_herald(["--listen", f"{HOST}:0", "--tls-key", certs["key"]])
    assert rc == 2, (rc, err)
    assert "tls" in err.lower() and "listening" not in err


@pytest.mark.parametrize("which", ["missing_cert", "missing_key", "garbage_cert", "key_of_other_cert",
                                   "cert_as_key"])
def test_unusable_tls_files_fail_with_message(certs, which):
    d = certs["dir"]
    garbage = os.path.join(d, "garbage.pem")
    with open(garbage, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    cert, key = {
        "missing_cert": (os.path.join(d, "nope.pem"), certs["key"]),
        "missing_key": (certs["cert"], os.path.join(d, "nope-key.pem")),
        "garbage_cert": (garbage, certs["key"]),
        "key_of_other_cert": (certs["cert"], certs["other_key"]),
        "cert_as_key": (certs["cert"], certs["cert"]),
    }[which]
    rc, err = run_herald(["--listen", f"{HOST}:0", "--tls-cert", cert, "--tls-key", key], timeout=20)
    assert rc != 0, f"herald started with {which}: {err}"
    assert "listening" not in err
    assert err.strip(), "no message on stderr"
    if which.startswith("missing"):
        assert os.path.basename(cert if which == "missing_cert" else key) in err, err


# --------------------------------------------------------------------------
# refusals are answered over TLS, with their HTTP status
# --------------------------------------------------------------------------

def tls_exchange(srv, data, timeout=5):
    """TLS handshake, send data, return everything until the server closes."""
    s = socket.create_connection((HOST, srv.port), timeout=timeout)
    t = srv.ctx.wrap_socket(s, server_hostname=HOST)
    try:
        if data:
            t.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                d = t.recv(65536)
            except (ssl.SSLZeroReturnError, ConnectionResetError):
                break
            if not d:
                break
            out += d
        return out
    finally:
        t.close()


def test_handshake_refusals_over_tls(tls_herald):
    srv = tls_herald("--publish-key", "tls-key", "--jwt-secret", "tls-secret",
                     "--allowed-origins", "https://ok.example")
    assert tls_exchange(srv, ws_request_bytes(path="/ws")).startswith(b"HTTP/1.1 401")
    assert tls_exchange(srv, ws_request_bytes(path="/publish")).startswith(b"HTTP/1.1 401")
    assert tls_exchange(srv, ws_request_bytes(path="/ws", extra=[("Origin", "https://evil.example")])
                        ).startswith(b"HTTP/1.1 403")
    st, hdrs, _ = srv.https("POST", "/publish", b"x", {"Content-Length": "1"})
    assert st == 401 and hdrs["WWW-Authenticate"] == 'Bearer realm="herald"'
    st, _, _ = srv.https("POST", "/publish", b"x", {"Content-Length": "1", "Authorization": "Bearer tls-key"})
    assert st == 200


def test_accept_rate_503_over_tls(tls_herald):
    srv = tls_herald("--accept-rate", "2")
    statuses, held = [], []
    try:
        for _ in range(8):
            s = socket.create_connection((HOST, srv.port), timeout=5)
            t = srv.ctx.wrap_socket(s, server_hostname=HOST)
            held.append(t)
            t.sendall(ws_request_bytes(path="/ws"))
            resp, _ = read_response(t, timeout=5)
            statuses.append(resp.status)
            if resp.status == 503:
                assert resp.header("retry-after"), resp
    finally:
        for t in held:
            t.close()
    assert 503 in statuses, statuses
    assert set(statuses) <= {101, 503}, statuses


def test_max_conns_per_ip_429_over_tls(tls_herald):
    """The per-IP refusal is decided at accept time, before the TLS handshake; a TLS client must
    still get a readable HTTP 429 (as a cleartext client does), not a connection dropped mid-handshake."""
    srv = tls_herald("--max-conns-per-ip", "1")
    # The fixture's own readiness probe may still hold the single slot for a moment: the
    # server releases it when it reads that connection's EOF, asynchronously.
    deadline = time.monotonic() + 5
    while True:
        try:
            first = srv.raw_tls_ws("/ws")
            break
        except AssertionError as e:
            if "429" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        try:
            out = tls_exchange(srv, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        except (ssl.SSLError, OSError) as e:
            raise AssertionError(f"over-limit TLS connection got no 429, the TLS handshake failed: {e!r}")
        assert out.startswith(b"HTTP/1.1 429"), out[:200]
    finally:
        first.close()


def test_deflate_over_tls(tls_herald):
    """permessage-deflate over wss: a compressed publisher and a compressed subscriber; the
    compressed frame goes through the same TLS write path."""
    srv = tls_herald()
    body = json.dumps([{"id": i, "title": "order shipped", "user": f"user{i}"} for i in range(60)])

    async def main():
        async with srv.wss("/ws?groups=z", compression="deflate") as sub, \
                srv.wss("/publish?group=z", compression="deflate") as pub:
            assert sub.response_headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
            await pub.send(body)
            assert await recv(sub) == body
    run(main())
    st, _, data = srv.https("GET", "/stats")
    s = json.loads(data)
    assert s["deflate_messages"] == 1 and s["deflate_bytes_out"] < len(body) / 2, s
    assert s["inflate_messages"] == 1, s


def test_deflate_inflate_budget_over_tls(tls_herald):
    """A wss publisher's burst of compressed messages that each inflate to 1 MiB: past the 4 MiB
    inflate budget of a read the rest waits for the next loop pass (reading paused); over TLS the
    resume also has to pick up what OpenSSL already decrypted. Every message is published, and
    /healthz answers meanwhile."""
    srv = tls_herald(workers=1)
    n = 200

    async def main():
        async with srv.wss("/publish?group=tb", compression="deflate") as pub:
            for _ in range(n):
                await pub.send(bytes(1 << 20))
            st, _, body = srv.https("GET", "/healthz")
            assert st == 200 and body == b"ok\n"
            deadline = time.monotonic() + 30
            while True:
                s = json.loads(srv.https("GET", "/stats")[2])
                if s["inflate_messages"] >= n:
                    break
                assert time.monotonic() < deadline, f"the burst stalled: {s['inflate_messages']} of {n}"
                await asyncio.sleep(0.05)
            assert s["published_ws"] == n, s
    run(main(), timeout=60)


# --------------------------------------------------------------------------
# the TLS 1.3 hand-off (tls.c, tls13rec.c): an idle TLS 1.3 connection's SSL object is freed and
# herald protects its records itself; Python's ssl module is the independent peer.
# --------------------------------------------------------------------------

class TlsMemory:
    """The memory view's `tls` kind, read over one kept-alive connection: a fresh connection per read
    would count its own TLS state, which is OpenSSL's whole SSL or the handed-off few hundred bytes
    depending on whether the request came before the hand-off (timing). One warm-up request first."""
    def __init__(self, srv):
        self.c = http.client.HTTPSConnection(HOST, srv.port, context=srv.ctx, timeout=10)
        self()
        time.sleep(0.2)

    def __call__(self):
        self.c.request("GET", "/stats")
        r = self.c.getresponse()
        assert r.status == 200
        return json.loads(r.read())["memory"]["tls"]

    def close(self):
        self.c.close()


def tls_ws(srv, path, ctx=None, timeout=5):
    """A raw WebSocket over a TLS socket of the given client context (default: the server's)."""
    s = socket.create_connection((HOST, srv.port), timeout=timeout)
    t = (ctx or srv.ctx).wrap_socket(s, server_hostname=HOST)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    t.sendall(ws_request_bytes(path=path, host=f"{HOST}:{srv.port}", key=key))
    resp, rest = read_response(t, timeout=timeout)
    assert resp.status == 101, resp
    return RawWS(t, rest, resp)


def wait_subscribers(srv, n, timeout=5):
    deadline = time.monotonic() + timeout
    while srv.metrics()["herald_subscribers_open"] != n:
        assert time.monotonic() < deadline, f"subscribers_open stays {srv.metrics()['herald_subscribers_open']}"
        time.sleep(0.05)


def test_long_lived_tls13_subscribers_after_the_handoff(tls_herald):
    """Idle TLS 1.3 subscribers hold a few hundred bytes of TLS state instead of OpenSSL's ~15 KB
    (so the hand-off happened), and keep receiving: small and large messages (many records), pings,
    again after a pause, in order."""
    srv = tls_herald()
    n = 20
    tls_memory = TlsMemory(srv)
    base = tls_memory()
    subs = [tls_ws(srv, "/ws?groups=ho") for _ in range(n)]
    try:
        for s in subs:
            assert s.sock.version() == "TLSv1.3"
        time.sleep(0.4)  # idle: the tick hands off any not handed off on the spot
        per = (tls_memory() - base) / n
        assert per < 1000, f"{per:.0f} bytes of TLS state per idle TLS 1.3 subscriber: no hand-off?"
        big = os.urandom(200 * 1024)
        srv.publish("first after the hand-off", group="ho")
        srv.publish(big, "ho", "application/octet-stream")
        for s in subs:
            assert s.recv_message(10) == (OP_TEXT, b"first after the hand-off")
            assert s.recv_message(20) == (OP_BINARY, big)
            s.ping_roundtrip(b"still here")
        time.sleep(0.3)
        for i in range(50):
            srv.publish(f"m{i}", group="ho")
        for s in subs:
            assert [s.recv_message(10)[1] for _ in range(50)] == [f"m{i}".encode() for i in range(50)]
        m = srv.metrics()
        assert m['herald_deliveries_by_transport_total{transport="wss"}'] >= n * 52, m
    finally:
        for s in subs:
            s.close()


def test_tls12_client_stays_on_openssl(tls_herald, certs):
    """TLS 1.2 has no hand-off: its connections stay with OpenSSL, and work as before."""
    srv = tls_herald()
    ctx = client_ctx(certs["cert"])
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    tls_memory = TlsMemory(srv)
    base = tls_memory()
    subs = [tls_ws(srv, "/ws?groups=t12", ctx=ctx) for _ in range(5)]
    try:
        assert all(s.sock.version() == "TLSv1.2" for s in subs)
        time.sleep(0.3)
        per = (tls_memory() - base) / 5
        assert per > 4000, f"{per:.0f} bytes per TLS 1.2 connection: OpenSSL's SSL should still be there"
        srv.publish("over TLS 1.2", group="t12")
        for s in subs:
            assert s.recv_message(10) == (OP_TEXT, b"over TLS 1.2")
            s.ping_roundtrip()
    finally:
        for s in subs:
            s.close()


def test_client_close_notify_after_the_handoff_ends_the_connection(tls_herald):
    srv = tls_herald()
    sub = tls_ws(srv, "/ws?groups=cn")
    wait_subscribers(srv, 1)
    time.sleep(0.3)
    sub.sock.settimeout(5)
    try:
        sub.sock.unwrap()  # our close_notify; herald ends the stream and closes
    except (ssl.SSLError, OSError):
        pass  # herald closes without answering with its own close_notify: EOF here is fine
    wait_subscribers(srv, 0)
    assert srv.metrics()["herald_connections_open"] <= 1  # only the /metrics request itself


def tls_over_memory(srv, path):
    """A TLS 1.3 WebSocket client over memory BIOs, so the test sees (and can spoil) its records."""
    sock = socket.create_connection((HOST, srv.port), timeout=5)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = srv.ctx.wrap_bio(incoming, outgoing, server_hostname=HOST)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            incoming.write(sock.recv(65536))
    sock.sendall(outgoing.read())
    tls.write(ws_request_bytes(path=path, host=f"{HOST}:{srv.port}"))
    sock.sendall(outgoing.read())
    got = b""
    while b"\r\n\r\n" not in got:
        d = sock.recv(65536)
        assert d, "closed before the 101"
        incoming.write(d)
        try:
            got += tls.read(65536)
        except ssl.SSLWantReadError:
            pass
    assert got.startswith(b"HTTP/1.1 101"), got
    return sock, tls, outgoing


def read_until_eof(sock, timeout=5):
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            break
    return False


@pytest.mark.parametrize("spoil", ["flip_body", "flip_tag", "flip_header_length", "replay",
                                   "cleartext_alert", "truncated_then_eof"])
def test_bad_record_after_the_handoff_closes(tls_herald, spoil):
    """After the hand-off herald checks every record itself: a forged or altered record, a replayed
    one, a cleartext record, or a stream cut inside a record closes the connection, and the others
    carry on."""
    srv = tls_herald()
    errors_before = srv.metrics()["herald_tls_record_errors_total"]
    other = tls_ws(srv, "/ws?groups=bad")
    sock, tls, outgoing = tls_over_memory(srv, "/ws?groups=bad")
    wait_subscribers(srv, 2)
    time.sleep(0.3)  # idle: handed off
    tls.write(build_frame(0x9, b"ping one"))
    good = outgoing.read()
    sock.sendall(good)  # one good record first: the server reads under the right key and sequence
    tls.write(build_frame(0x9, b"ping two"))
    rec = bytearray(outgoing.read())
    if spoil == "flip_body":
        rec[8] ^= 1
    elif spoil == "flip_tag":
        rec[-1] ^= 0x80
    elif spoil == "flip_header_length":
        rec[4] ^= 1
        rec += b"\0" * 2
    elif spoil == "replay":
        rec = bytearray(good)
    elif spoil == "cleartext_alert":
        rec = bytearray(b"\x15\x03\x03\x00\x02\x02\x28")
    if spoil == "truncated_then_eof":
        sock.sendall(bytes(rec[:len(rec) // 2]))
        sock.shutdown(socket.SHUT_WR)
    else:
        sock.sendall(bytes(rec))
    assert read_until_eof(sock), f"{spoil}: the connection stayed open"
    sock.close()
    wait_subscribers(srv, 1)
    srv.publish("others carry on", group="bad")
    assert other.recv_message(10) == (OP_TEXT, b"others carry on")
    other.close()
    # A bad record is counted; a stream cut inside a record is an end, not an attack.
    errors = srv.metrics()["herald_tls_record_errors_total"] - errors_before
    assert errors == (0 if spoil == "truncated_then_eof" else 1), f"{spoil}: {errors} record errors counted"


def test_resumed_tls13_session_is_handed_off_too(tls_herald):
    """A client resuming a TLS 1.3 session (PSK, no certificate) gets the same hand-off: its traffic
    secrets come from the resumption's key schedule, and its records still open on both sides.
    One worker, and one resumption before measuring: a worker's first TLS connection, and the
    process's first resumption, allocate OpenSSL state once (~16 KB), which must not land between
    the two measurements."""
    srv = tls_herald(workers=1)

    def resumed(session):
        s = socket.create_connection((HOST, srv.port), timeout=5)
        t = srv.ctx.wrap_socket(s, server_hostname=HOST, session=session)
        t.sendall(ws_request_bytes(path="/ws?groups=res", host=f"{HOST}:{srv.port}"))
        resp, rest = read_response(t, timeout=5)
        assert resp.status == 101, resp
        assert t.session_reused
        return RawWS(t, rest, resp)

    first = tls_ws(srv, "/ws?groups=res")
    srv.publish("for the ticket", group="res")  # reading data also takes the session tickets
    assert first.recv_message(10) == (OP_TEXT, b"for the ticket")
    session = first.sock.session
    first.close()
    assert session is not None and session.has_ticket
    warm = resumed(session)
    srv.publish("warm", group="res")
    assert warm.recv_message(10) == (OP_TEXT, b"warm")
    session = warm.sock.session
    warm.close()
    tls_memory = TlsMemory(srv)
    base = tls_memory()
    sub = resumed(session)
    try:
        time.sleep(0.3)
        assert tls_memory() - base < 1500, "no hand-off for the resumed session?"
        srv.publish("resumed", group="res")
        assert sub.recv_message(10) == (OP_TEXT, b"resumed")
        sub.ping_roundtrip(b"after resumption")
    finally:
        sub.close()
