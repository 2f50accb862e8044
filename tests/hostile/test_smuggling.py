"""Issue 8, item 2: no request smuggling.

Behind a keep-alive proxy, a request whose body framing the proxy and herald could read differently
lets one client's bytes become another request. herald refuses every ambiguous or unsupported framing
(400, or 501 for a transfer coding it does not implement, 411 for chunked alone) and closes the
connection, so no byte after such a head is ever parsed as a request.
"""

import pytest

from herald_helpers import OP_TEXT, RawWS, publish, read_response
from hostile_helpers import connect, http_get, slack

# A request hidden where a body could be: answered (404) only if the server parsed it as a request.
SMUGGLED = http_get("/smuggled")


def hidden_publish(group, body=b"smuggled!"):
    return (f"POST /publish?group={group} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def chunked(data):
    return b"%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n"


def head(request_line, *headers):
    return (request_line + "\r\nHost: x\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


def exchange(port, data):
    """Sends data in one write; returns the first response, what came after it, and whether the server
    closed the connection (waiting up to a few seconds for that)."""
    s = connect(port, timeout=slack(5))
    try:
        s.sendall(data)
        resp, rest = read_response(s, timeout=slack(5), expect_close=True)
        return resp, rest
    finally:
        s.close()


WS_HEADERS = ("Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
              "Sec-WebSocket-Version: 13")

# (id, bytes sent, status): every one of them must be refused and the connection closed.
REFUSED = [
    ("get-content-length", head("GET /healthz HTTP/1.1", f"Content-Length: {len(SMUGGLED)}") + SMUGGLED, 400),
    ("head-content-length", head("HEAD /healthz HTTP/1.1", f"Content-Length: {len(SMUGGLED)}") + SMUGGLED, 400),
    ("upgrade-content-length", head("GET /ws?groups=s HTTP/1.1", *WS_HEADERS, f"Content-Length: {len(SMUGGLED)}")
     + SMUGGLED, 400),
    ("get-chunked", head("GET /healthz HTTP/1.1", "Transfer-Encoding: chunked") + chunked(SMUGGLED), 400),
    ("get-te-identity", head("GET /metrics HTTP/1.1", "Transfer-Encoding: identity") + SMUGGLED, 400),
    ("get-duplicate-cl-zero", head("GET /healthz HTTP/1.1", "Content-Length: 0", "Content-Length: 0")
     + SMUGGLED, 400),
    ("post-duplicate-cl-equal", head("POST /publish?group=s HTTP/1.1", "Content-Length: 5", "Content-Length: 5")
     + b"hello" + SMUGGLED, 400),
    ("post-duplicate-cl-differ", head("POST /publish?group=s HTTP/1.1", "Content-Length: 5",
                                      f"Content-Length: {5 + len(SMUGGLED)}") + b"hello" + SMUGGLED, 400),
    ("post-cl-and-te", head("POST /publish?group=s HTTP/1.1", "Content-Length: 5", "Transfer-Encoding: chunked")
     + chunked(b"hello") + SMUGGLED, 400),
    ("post-te-and-cl", head("POST /publish?group=s HTTP/1.1", "Transfer-Encoding: chunked", "Content-Length: 5")
     + chunked(b"hello") + SMUGGLED, 400),
    ("post-chunked", head("POST /publish?group=s HTTP/1.1", "Transfer-Encoding: chunked")
     + chunked(b"hello") + SMUGGLED, 411),
    ("post-gzip-chunked", head("POST /publish?group=s HTTP/1.1", "Transfer-Encoding: gzip, chunked")
     + chunked(b"hello") + SMUGGLED, 501),
    ("post-te-identity", head("POST /publish?group=s HTTP/1.1", "Transfer-Encoding: identity", "Content-Length: 5")
     + b"hello" + SMUGGLED, 400),
    ("post-identity-only", head("POST /publish?group=s HTTP/1.1", "Transfer-Encoding: identity")
     + b"hello" + SMUGGLED, 501),
    # line endings: a bare LF ends a line for herald but maybe not for a proxy in front
    ("bare-lf-ends-head", b"POST /publish?group=s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\nhello"
     + SMUGGLED, 400),
    ("bare-lf-in-headers", b"GET /healthz HTTP/1.1\nHost: x\r\n\r\n" + SMUGGLED, 400),
    # RFC 9112 3.2: an HTTP/1.1 request has exactly one Host
    ("no-host", b"POST /publish?group=s HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello" + SMUGGLED, 400),
    ("two-hosts", head("GET /healthz HTTP/1.1", "Host: y") + SMUGGLED, 400),
]


@pytest.fixture(scope="module")
def srv(herald_module):
    return herald_module()


@pytest.mark.parametrize("data,status", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_ambiguous_framing_refused_and_closed(srv, data, status):
    resp, rest = exchange(srv.port, data)
    assert resp.status == status, f"expected {status}, got {resp!r}"
    assert (resp.header("connection") or "").lower() == "close", f"no Connection: close on {resp!r}"
    assert resp.closed, f"the server kept the connection open after {status}"
    assert rest == b"", f"bytes after the {status} response (a smuggled request was answered?): {rest[:200]!r}"


@pytest.mark.parametrize("carrier", ["get-content-length", "head-content-length", "get-chunked"])
def test_publish_hidden_in_a_get_body_is_not_delivered(srv, carrier):
    """The issue's repro: a POST /publish hidden in the body of GET /healthz reached the subscribers."""
    group = "smuggle-" + carrier
    hidden = hidden_publish(group)
    data = {
        "get-content-length": head("GET /healthz HTTP/1.1", f"Content-Length: {len(hidden)}") + hidden,
        "head-content-length": head("HEAD /healthz HTTP/1.1", f"Content-Length: {len(hidden)}") + hidden,
        "get-chunked": head("GET /healthz HTTP/1.1", "Transfer-Encoding: chunked") + chunked(hidden),
    }[carrier]
    sub = RawWS.connect(srv.port, f"/ws?groups={group}")
    try:
        resp, rest = exchange(srv.port, data)
        assert resp.status == 400, resp
        assert resp.closed, "the server kept the connection open after 400"
        assert rest == b"", f"the hidden request was answered: {rest[:200]!r}"
        publish(srv.port, "legit", group=group, content_type="text/plain")
        assert sub.recv_message(slack(5)) == (OP_TEXT, b"legit"), "the hidden publish was delivered"
    finally:
        sub.close()


def test_get_with_content_length_zero_keeps_alive(srv):
    """Content-Length: 0 frames an empty body exactly: no ambiguity, so 200 and keep-alive; the pipelined
    request behind it is answered on the same connection."""
    s = connect(srv.port, timeout=slack(5))
    try:
        s.sendall(head("GET /healthz HTTP/1.1", "Content-Length: 0") + http_get("/healthz"))
        first, rest = read_response(s, timeout=slack(5))
        second, rest = read_response(s, rest, timeout=slack(5))
        for r in (first, second):
            assert r.status == 200 and r.body == b"ok\n", r
            assert (r.header("connection") or "keep-alive").lower() == "keep-alive", r
    finally:
        s.close()
