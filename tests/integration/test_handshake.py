"""Opening handshake (RFC 6455 4.2) and HTTP error statuses from docs/interface.md."""

import asyncio
import base64
import os
import re
import socket
import time

import pytest
import websockets.exceptions

from herald_helpers import (HOST, OP_PING, RawWS, accept_for, build_frame, http_call, metrics, raw_request, read_response, run, ws_connect,
                            ws_request_bytes)

MAX_HEADER = 1024
MAX_GROUPS = 4
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.fixture(scope="module")
def srv(herald_module):
    return herald_module("--max-header-size", str(MAX_HEADER), "--max-groups", str(MAX_GROUPS))


def upgrade_ok(resp):
    assert resp.status == 101, resp
    assert resp.header("upgrade", "").lower() == "websocket", resp
    assert "upgrade" in [t.strip().lower() for t in resp.header("connection", "").split(",")], resp
    return resp


def handshake(srv, **kw):
    kw.setdefault("host", f"127.0.0.1:{srv.port}")
    s = socket.create_connection((HOST, srv.port), timeout=5)
    s.sendall(ws_request_bytes(**kw))
    resp, rest = read_response(s, timeout=5)
    return s, resp, rest


def expect_error(srv, data, status, chunked_send=None):
    resp = raw_request(srv.port, data, timeout=5, expect_close=True, chunked_send=chunked_send)
    assert resp.status == status, f"expected {status}, got {resp!r}"
    assert "close" in resp.header("connection", "").lower(), f"error response without Connection: close: {resp!r}"
    assert resp.closed, f"server kept the connection open after a {status}"
    return resp


# ---------------------------------------------------------------- successful handshakes

def test_rfc_sample_key_accept(srv):
    s, resp, _ = handshake(srv, key=RFC_KEY)
    try:
        upgrade_ok(resp)
        assert resp.header("sec-websocket-accept") == RFC_ACCEPT
        assert resp.header("sec-websocket-extensions") is None
    finally:
        s.close()


def test_deflate_negotiated_subprotocols_not(srv):
    """permessage-deflate is accepted (always with server_no_context_takeover: one compressed frame
    is shared by every subscriber, and client_no_context_takeover: no inflate window outlives a
    message); an unknown extension and subprotocols are not."""
    s, resp, _ = handshake(srv, extra=[("Sec-WebSocket-Extensions", "x-unknown, permessage-deflate; client_max_window_bits"),
                                       ("Sec-WebSocket-Protocol", "chat, superchat")])
    try:
        upgrade_ok(resp)
        assert resp.header("sec-websocket-extensions") == \
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        proto = resp.header("sec-websocket-protocol")
        assert proto is None or proto in ("chat", "superchat")
    finally:
        s.close()
    s, resp, _ = handshake(srv, extra=[("Sec-WebSocket-Extensions", "x-unknown; a=1")])
    try:
        upgrade_ok(resp)
        assert resp.header("sec-websocket-extensions") is None, "only permessage-deflate is known"
    finally:
        s.close()


def test_websockets_with_compression_offer_still_works(srv):
    async def main():
        async with ws_connect(srv.port, "/ws?groups=cmp", compression="deflate") as s:
            await asyncio.wait_for(await s.ping(b"x"), 5)
    run(main())


@pytest.mark.parametrize("kw", [
    dict(upgrade="WebSocket"),
    dict(upgrade="WEBSOCKET"),
    dict(connection="keep-alive, Upgrade"),
    dict(connection="Upgrade, keep-alive"),
    dict(connection="upgrade"),
    dict(connection="keep-alive,upgrade"),
    dict(path="/ws?groups=a,b"),
    dict(path="/publish?group=a"),
    dict(path="/publish"),
    dict(host="localhost"),
], ids=lambda kw: repr(kw))
def test_handshake_variants_accepted(srv, kw):
    s, resp, _ = handshake(srv, key=RFC_KEY, **kw)
    try:
        upgrade_ok(resp)
        assert resp.header("sec-websocket-accept") == RFC_ACCEPT
    finally:
        s.close()


def test_header_names_case_insensitive_and_whitespace(srv):
    req = ("GET /ws HTTP/1.1\r\nhost: 127.0.0.1\r\nUPGRADE:   websocket  \r\nconnection:Upgrade\r\n"
           f"sec-websocket-key: {RFC_KEY}\r\nSEC-WEBSOCKET-VERSION: 13\r\nX-Extra: y\r\n\r\n").encode()
    s = socket.create_connection((HOST, srv.port), timeout=5)
    try:
        s.sendall(req)
        resp, _ = read_response(s)
        upgrade_ok(resp)
        assert resp.header("sec-websocket-accept") == RFC_ACCEPT
    finally:
        s.close()


def test_headers_one_byte_per_write(srv):
    key = base64.b64encode(os.urandom(16)).decode()
    req = ws_request_bytes(path="/ws?groups=slowhs", host=f"127.0.0.1:{srv.port}", key=key,
                           extra=[("User-Agent", "byte-by-byte")])
    s = socket.create_connection((HOST, srv.port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for i in range(len(req)):
            s.sendall(req[i:i + 1])
            time.sleep(0.001)
        resp, rest = read_response(s)
        upgrade_ok(resp)
        assert resp.header("sec-websocket-accept") == accept_for(key)
        c = RawWS(s, rest, resp)
        c.ping_roundtrip(b"after-slow-handshake")
    finally:
        s.close()


def test_bytes_pipelined_after_handshake(srv):
    """A masked ping in the same send() as the request gets its pong."""
    c = RawWS.connect(srv.port, "/ws?groups=pipe", pipelined=build_frame(OP_PING, b"pipelined!"))
    try:
        c.expect_pong(b"pipelined!")
    finally:
        c.close()


def test_pipelined_frames_to_publisher_are_published(srv):
    async def main():
        async with ws_connect(srv.port, "/ws?groups=pipe2") as sub:
            frames = build_frame(0x1, b"one") + build_frame(OP_PING, b"pp") + build_frame(0x2, b"two")
            c = RawWS.connect(srv.port, "/publish?group=pipe2", pipelined=frames)
            try:
                c.expect_pong(b"pp")
                assert await asyncio.wait_for(sub.recv(), 5) == "one"
                assert await asyncio.wait_for(sub.recv(), 5) == b"two"
            finally:
                c.close()
    run(main())


# ---------------------------------------------------------------- handshake failures

def req(**kw):
    return ws_request_bytes(**kw)


B64_15 = base64.b64encode(b"x" * 15).decode()
B64_17 = base64.b64encode(b"x" * 17).decode()

HANDSHAKE_ERRORS = {
    "missing-host": (req(drop=("host",)), 400),
    "missing-key": (req(drop=("key",)), 400),
    "bad-key-not-base64": (req(key="not base64 at all!"), 400),
    "bad-key-15-bytes": (req(key=B64_15), 400),
    "bad-key-17-bytes": (req(key=B64_17), 400),
    "empty-key": (req(key=""), 400),
    "no-upgrade-header": (req(drop=("upgrade",)), 426),
    "upgrade-not-websocket": (req(upgrade="h2c"), 400),
    "connection-without-upgrade": (req(connection="keep-alive"), 400),
    "no-connection-header": (req(drop=("connection",)), 400),
    "http-1.0": (req(proto="HTTP/1.0"), 400),
    "garbage-request-line": (b"HELLO\r\n\r\n", 400),
    "garbage-binary": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n", 400),
    "request-line-no-version": (b"GET /ws\r\nHost: x\r\n\r\n", 400),
    "header-without-colon": (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade websocket\r\n\r\n", 400),
}


@pytest.mark.parametrize("case", sorted(HANDSHAKE_ERRORS))
def test_handshake_error(srv, case):
    data, status = HANDSHAKE_ERRORS[case]
    expect_error(srv, data, status)


@pytest.mark.parametrize("case", ["missing-key", "http-1.0", "no-upgrade-header", "bad-key-15-bytes"])
def test_handshake_error_on_publish_endpoint(srv, case):
    data, status = HANDSHAKE_ERRORS[case]
    expect_error(srv, data.replace(b"GET /ws ", b"GET /publish?group=g "), status)


def test_version_12_is_426_with_version_header(srv):
    resp = expect_error(srv, req(version="12"), 426)
    assert resp.header("sec-websocket-version", "").replace(" ", "") == "13", resp


def test_unknown_http_version(srv):
    resp = raw_request(srv.port, req(proto="HTTP/9.9"), expect_close=True)
    assert resp.status in (400, 505), resp
    assert resp.closed


def test_version_missing(srv):
    resp = raw_request(srv.port, req(drop=("version",)), expect_close=True)
    assert resp.status in (400, 426), resp
    assert resp.closed


def test_no_upgrade_426_has_upgrade_header(srv):
    resp = expect_error(srv, req(drop=("upgrade",)), 426)
    assert resp.header("upgrade", "").lower() == "websocket", resp
    resp = expect_error(srv, req(drop=("upgrade", "connection", "key", "version")), 426)
    assert resp.header("upgrade", "").lower() == "websocket", resp


@pytest.mark.parametrize("method,path,allowed", [
    ("POST", "/ws", {"GET"}),
    ("PUT", "/ws", {"GET"}),
    ("PUT", "/publish", {"GET", "POST"}),
    ("DELETE", "/publish?group=a", {"GET", "POST"}),
    ("POST", "/healthz", {"GET"}),
    ("POST", "/metrics", {"GET"}),
    ("POST", "/stats", {"GET"}),
])
def test_wrong_method_405_with_allow(srv, method, path, allowed):
    data = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").encode()
    resp = expect_error(srv, data, 405)
    allow = {m.strip().upper() for m in resp.header("allow", "").split(",") if m.strip()}
    assert allowed <= allow, f"Allow: {resp.header('allow')!r} should list {allowed}"


def test_unknown_path_404(srv):
    expect_error(srv, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404)
    expect_error(srv, req(path="/wsx"), 404)
    expect_error(srv, req(path="/ws/extra"), 404)


def test_websockets_library_sees_404(srv):
    async def main():
        try:
            async with ws_connect(srv.port, "/does-not-exist"):
                pass
        except websockets.exceptions.InvalidStatusCode as e:
            assert e.status_code == 404
        else:
            raise AssertionError("handshake to an unknown path succeeded")
    run(main())


def test_oversize_head_431(srv):
    data = req(extra=[("X-Filler", "f" * (MAX_HEADER + 100))])
    expect_error(srv, data, 431)


def test_oversize_unterminated_head_431(srv):
    """The server must not wait for the end of a head that is already too large."""
    data = b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"f" * (MAX_HEADER * 3)
    expect_error(srv, data, 431)


def test_head_just_under_limit_ok(srv):
    base = req(extra=[("X-Filler", "")])
    pad = MAX_HEADER - len(base) - 16
    s, resp, _ = handshake(srv, extra=[("X-Filler", "f" * pad)])
    try:
        upgrade_ok(resp)
    finally:
        s.close()


# ---------------------------------------------------------------- group names

BAD_GROUPS = {
    "space": "a%20b",
    "raw-plus": "a+b",
    "129-chars": "g" * 129,
    "empty": "",
    "empty-item": "a,,b",
    "trailing-comma": "a,",
    "leading-comma": ",a",
    "encoded-empty-item": "a%2C%2Cb",
    "unicode": "%C3%A9t%C3%A9",
    "slash": "a%2Fb",
    "star": "a*",
    "too-many": ",".join(f"g{i}" for i in range(MAX_GROUPS + 1)),
}


@pytest.mark.parametrize("case", sorted(BAD_GROUPS))
def test_bad_group_names_400(srv, case):
    expect_error(srv, req(path="/ws?groups=" + BAD_GROUPS[case]), 400)


def test_bad_group_on_streaming_publisher_400(srv):
    expect_error(srv, req(path="/publish?group=a%20b"), 400)
    expect_error(srv, req(path="/publish?group=" + "g" * 129), 400)
    expect_error(srv, req(path="/publish?group="), 400)


@pytest.mark.parametrize("groups", [
    "g" * 128, "Az09._:-", "a,b,c,d", "a%2Cb", "a,a",
])
def test_good_group_names(srv, groups):
    s, resp, _ = handshake(srv, path="/ws?groups=" + groups)
    try:
        upgrade_ok(resp)
    finally:
        s.close()


# ---------------------------------------------------------------- POST /publish errors

def post(path, body, headers):
    hs = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return f"POST {path} HTTP/1.1\r\nHost: x\r\n{hs}\r\n".encode() + body


@pytest.mark.parametrize("ctype", ["text/plain", "application/json", "text/html; charset=utf-8"])
@pytest.mark.parametrize("body", [b"\xff", b"ok\xc0\xafok", b"\xed\xa0\x80", b"trunc\xe2\x82"])
def test_publish_invalid_utf8_text_400(srv, ctype, body):
    expect_error(srv, post("/publish?group=u", body, [("Content-Type", ctype),
                                                      ("Content-Length", str(len(body)))]), 400)


def test_publish_invalid_utf8_binary_ok(srv):
    st, _, body = http_call(srv.port, "POST", "/publish?group=u", body=b"\xff\xc0",
                            headers={"Content-Type": "application/octet-stream"})
    assert st == 200, body


def test_publish_without_content_length_411(srv):
    expect_error(srv, post("/publish?group=a", b"", [("Content-Type", "text/plain")]), 411)


def test_publish_chunked_411(srv):
    body = b"5\r\nhello\r\n0\r\n\r\n"
    expect_error(srv, post("/publish?group=a", body, [("Content-Type", "text/plain"),
                                                      ("Transfer-Encoding", "chunked")]), 411)


@pytest.mark.parametrize("group", ["a%20b", "", "g" * 129, "%C3%A9", "a,b"])
def test_publish_invalid_group_400(srv, group):
    expect_error(srv, post("/publish?group=" + group, b"hi", [("Content-Type", "text/plain"),
                                                              ("Content-Length", "2")]), 400)


def test_bad_content_length_400(srv):
    expect_error(srv, post("/publish?group=a", b"hi", [("Content-Length", "abc")]), 400)
    expect_error(srv, post("/publish?group=a", b"hi", [("Content-Length", "-2")]), 400)


# ---------------------------------------------------------------- after all that

def test_server_survives_and_counts_failures(srv):
    m = metrics(srv.port)
    assert m.get("herald_handshakes_failed_total", 0) > 0, m
    st, _, body = http_call(srv.port, "GET", "/healthz")
    assert st == 200 and body == b"ok\n"


def test_many_bad_requests_in_parallel(srv):
    """A burst of mixed bad requests in parallel: every one gets an answer, nothing crashes."""
    cases = [v[0] for v in HANDSHAKE_ERRORS.values()] * 4

    async def one(data):
        r, w = await asyncio.open_connection(HOST, srv.port)
        try:
            w.write(data)
            await w.drain()
            head = await asyncio.wait_for(r.readexactly(12), 10)
            assert re.match(rb"HTTP/1\.[01] 4\d\d", head), head
        finally:
            w.close()
    async def main():
        await asyncio.gather(*(one(d) for d in cases))
    run(main())
