"""Helpers shared by the herald integration tests.

Everything here is an *independent* client implementation: a tiny RFC 6455
frame builder/parser on raw sockets (for malformed input and byte-exact
checks), plain HTTP on raw sockets / http.client, and thin wrappers around the
Python ``websockets`` 10.4 asyncio client.  Only 127.0.0.1 is ever contacted.
"""

import asyncio
import base64
import hashlib
import http.client
import json
import os
import re
import socket
import struct
import time
import urllib.parse

import websockets
import websockets.client
import websockets.exceptions

HOST = "127.0.0.1"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

MiB = 1024 * 1024


# --------------------------------------------------------------------------
# generic
# --------------------------------------------------------------------------

def run(coro, timeout=60):
    """Run an async test body with a hard overall time bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def wait_until(pred, timeout=5.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def accept_for(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


# --------------------------------------------------------------------------
# frames
# --------------------------------------------------------------------------

def mask_bytes(key, data):
    n = len(data)
    if n == 0:
        return b""
    rep = key * (n // 4) + key[: n % 4]
    return (int.from_bytes(data, "little") ^ int.from_bytes(rep, "little")).to_bytes(n, "little")


def build_frame(opcode, payload=b"", fin=True, rsv=0, mask=True, mask_key=None,
                length=None, len_form=None):
    """Build one frame.  rsv is a 3-bit value (RSV1=4, RSV2=2, RSV3=1).
    length overrides the advertised payload length; len_form forces 7/16/64-bit."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    mbit = 0x80 if mask else 0
    if len_form is None:
        len_form = 7 if n <= 125 else (16 if n <= 0xFFFF else 64)
    if len_form == 7:
        hdr = struct.pack("!BB", b0, mbit | n)
    elif len_form == 16:
        hdr = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask:
        if mask_key is None:
            mask_key = os.urandom(4)
        return hdr + mask_key + mask_bytes(mask_key, payload)
    return hdr + payload


def close_payload(code=None, reason=b""):
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode()
    return struct.pack("!H", code) + reason


class Frame:
    __slots__ = ("fin", "rsv", "opcode", "payload")

    def __init__(self, fin, rsv, opcode, payload):
        self.fin, self.rsv, self.opcode, self.payload = fin, rsv, opcode, payload

    @property
    def close_code(self):
        assert self.opcode == OP_CLOSE
        if len(self.payload) >= 2:
            return struct.unpack("!H", self.payload[:2])[0]
        return None

    @property
    def close_reason(self):
        return self.payload[2:]

    def __repr__(self):
        p = self.payload if len(self.payload) <= 40 else self.payload[:40] + b"..."
        return f"Frame(fin={self.fin}, rsv={self.rsv}, op={self.opcode:#x}, len={len(self.payload)}, {p!r})"


def parse_server_frame(buf):
    """Parse one server frame from buf. Returns (Frame, consumed) or (None, 0) when incomplete.
    Asserts the server-side rules: unmasked, minimal length encoding, no RSV."""
    if len(buf) < 2:
        return None, 0
    b0, b1 = buf[0], buf[1]
    assert not (b1 & 0x80), "server frame is masked (RFC 6455 5.1 forbids it)"
    n = b1 & 0x7F
    off = 2
    if n == 126:
        if len(buf) < 4:
            return None, 0
        n = struct.unpack("!H", buf[2:4])[0]
        assert n >= 126, f"non-minimal 16-bit length encoding for {n} bytes"
        off = 4
    elif n == 127:
        if len(buf) < 10:
            return None, 0
        n = struct.unpack("!Q", buf[2:10])[0]
        assert n > 0xFFFF, f"non-minimal 64-bit length encoding for {n} bytes"
        assert n < (1 << 63)
        off = 10
    if len(buf) < off + n:
        return None, 0
    f = Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, bytes(buf[off:off + n]))
    assert f.rsv == 0, f"server frame has RSV bits set: {f!r}"
    assert f.opcode in (0, 1, 2, 8, 9, 10), f"server sent reserved opcode: {f!r}"
    if f.opcode >= 8:
        assert f.fin and len(f.payload) <= 125, f"bad server control frame {f!r}"
    return f, off + n


# --------------------------------------------------------------------------
# raw HTTP
# --------------------------------------------------------------------------

class RawResponse:
    def __init__(self, status, reason, headers, body, raw, closed):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (lower-name, value)
        self.body = body
        self.raw = raw
        self.closed = closed  # server closed the connection after the response

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def __repr__(self):
        return f"RawResponse({self.status} {self.reason!r}, headers={self.headers}, body={self.body[:200]!r}, closed={self.closed})"



def take_frames(buf):
    """Yields every complete server frame at the start of buf (a bytearray), removing each from
    buf; an incomplete frame stays for the next read."""
    while True:
        f, used = parse_server_frame(buf)
        if f is None:
            return
        del buf[:used]
        yield f

def parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"^HTTP/1\.[01] (\d{3})(?: (.*))?$", lines[0])
    assert m, f"bad status line {lines[0]!r}"
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        k, sep, v = line.partition(":")
        assert sep, f"bad header line {line!r}"
        headers.append((k.strip().lower(), v.strip()))
    return int(m.group(1)), m.group(2) or "", headers


def read_response(sock, buf=b"", timeout=5.0, expect_close=None):
    """Read one HTTP response from sock. Returns (RawResponse, leftover bytes).
    If expect_close is True we also wait (up to timeout) for EOF and record it."""
    deadline = time.monotonic() + timeout
    eof = False

    def more():
        nonlocal eof
        rem = deadline - time.monotonic()
        if rem <= 0:
            raise TimeoutError("timed out reading HTTP response; got %r" % (buf[:300],))
        sock.settimeout(rem)
        try:
            d = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            d = b""
        if not d:
            eof = True
        return d

    while b"\r\n\r\n" not in buf:
        d = more()
        if not d:
            raise AssertionError("connection closed before a complete response head; got %r" % (buf,))
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    status, reason, headers = parse_head(head)
    cl = None
    for k, v in headers:
        if k == "content-length":
            cl = int(v)
    if status == 101 or status == 204 or status == 304 or (100 <= status < 200):
        cl = 0
    if cl is None:
        # read until close
        while not eof:
            rest += more()
        body, rest = rest, b""
    else:
        while len(rest) < cl:
            d = more()
            if not d:
                raise AssertionError(f"EOF in body: wanted {cl}, got {len(rest)}")
            rest += d
        body, rest = rest[:cl], rest[cl:]
    closed = eof
    if expect_close and not eof:
        try:
            while True:
                d = more()
                if not d:
                    closed = True
                    break
                rest += d
        except TimeoutError:
            closed = False
    return RawResponse(status, reason, headers, body, head, closed), rest


def raw_request(port, data, timeout=5.0, expect_close=True, chunked_send=None):
    """Send raw bytes (one or many writes) and read one response."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if chunked_send:
                for i in range(0, len(data), chunked_send):
                    s.sendall(data[i:i + chunked_send])
                    time.sleep(0.001)
            else:
                s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp, _ = read_response(s, timeout=timeout, expect_close=expect_close)
        return resp
    finally:
        s.close()


def ws_request_bytes(path="/ws", host="127.0.0.1", key="dGhlIHNhbXBsZSBub25jZQ==", version="13",
                     upgrade="websocket", connection="Upgrade", method="GET", proto="HTTP/1.1",
                     extra=(), drop=()):
    hdrs = []
    if host is not None and "host" not in drop:
        hdrs.append(("Host", host))
    if upgrade is not None and "upgrade" not in drop:
        hdrs.append(("Upgrade", upgrade))
    if connection is not None and "connection" not in drop:
        hdrs.append(("Connection", connection))
    if key is not None and "key" not in drop:
        hdrs.append(("Sec-WebSocket-Key", key))
    if version is not None and "version" not in drop:
        hdrs.append(("Sec-WebSocket-Version", version))
    hdrs.extend(extra)
    out = f"{method} {path} {proto}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n"
    return out.encode("latin-1")


def http_call(port, method, path, body=None, headers=None, timeout=10.0):
    """One plain HTTP request with http.client. Returns (status, headers(HTTPMessage), body bytes)."""
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.headers, r.read()
    finally:
        c.close()


def publish_path(group):
    if group is None:
        return "/publish"
    return "/publish?group=" + urllib.parse.quote(group, safe="")


class Publisher:
    """HTTP publisher on one keep-alive connection (= one publisher for ordering)."""

    def __init__(self, port, timeout=10.0):
        self.port = port
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        self.sock_id = None

    def publish(self, body, group=None, content_type=None, expect=200):
        if isinstance(body, str):
            body = body.encode()
        h = {"Content-Length": str(len(body))}
        if content_type is not None:
            h["Content-Type"] = content_type
        self.conn.request("POST", publish_path(group), body=body, headers=h)
        r = self.conn.getresponse()
        data = r.read()
        if self.sock_id is None:
            self.sock_id = id(self.conn.sock)
        else:
            # http.client silently reconnects; ordering tests need ONE connection
            assert id(self.conn.sock) == self.sock_id, "server dropped the keep-alive publish connection"
        assert r.status == expect, f"publish -> {r.status} {data!r}, expected {expect}"
        if r.status == 200:
            return json.loads(data)
        return data

    def close(self):
        self.conn.close()


def publish(port, body, group=None, content_type=None, expect=200):
    p = Publisher(port)
    try:
        return p.publish(body, group=group, content_type=content_type, expect=expect)
    finally:
        p.close()


# --------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------

METRIC_LINE = re.compile(
    r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+]?(?:[0-9.]+(?:[eE][-+]?[0-9]+)?|NaN|[+-]?Inf))(\s+-?\d+)?$")

COUNTERS = [
    "herald_connections_accepted_total", "herald_messages_published_total", "herald_deliveries_total",
    "herald_bytes_in_total", "herald_bytes_out_total", "herald_messages_dropped_total",
    "herald_slow_consumer_closes_total", "herald_handshakes_failed_total", "herald_protocol_errors_total",
    "herald_write_timeouts_total", "herald_idle_timeouts_total",
]
GAUGES = ["herald_connections_open", "herald_queued_bytes"]


def parse_prometheus(text):
    """Strict-ish parser for the Prometheus text format 0.0.4. Returns (samples, types)."""
    samples, types = {}, {}
    for ln in text.split("\n"):
        if not ln.strip():
            continue
        if ln.startswith("#"):
            parts = ln.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                assert parts[3].strip() in ("counter", "gauge", "histogram", "summary", "untyped"), ln
                types[parts[2]] = parts[3].strip()
            continue
        m = METRIC_LINE.match(ln)
        assert m, f"unparseable metrics line: {ln!r}"
        key = m.group(1) + (m.group(2) or "")
        samples[key] = float(m.group(3))
    return samples, types


def metrics(port):
    st, hdrs, body = http_call(port, "GET", "/metrics")
    assert st == 200, st
    samples, _ = parse_prometheus(body.decode())
    return samples


# --------------------------------------------------------------------------
# raw WebSocket client
# --------------------------------------------------------------------------

class RawWS:
    """Minimal blocking WebSocket client over a raw socket."""

    def __init__(self, sock, buf=b"", response=None):
        self.sock = sock
        self.buf = bytearray(buf)
        self.response = response
        self.eof = False

    @classmethod
    def connect(cls, port, path="/ws", rcvbuf=None, timeout=5.0, extra=(), key=None, pipelined=b""):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        s.connect((HOST, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = key or base64.b64encode(os.urandom(16)).decode()
        s.sendall(ws_request_bytes(path=path, host=f"127.0.0.1:{port}", key=key, extra=extra) + pipelined)
        resp, rest = read_response(s, timeout=timeout)
        if resp.status != 101:
            s.close()
            raise AssertionError(f"handshake for {path} failed: {resp!r}")
        assert resp.header("sec-websocket-accept") == accept_for(key), resp
        return cls(s, rest, resp)

    # -- sending
    def send(self, data):
        self.sock.sendall(data)

    def send_frame(self, opcode, payload=b"", **kw):
        self.sock.sendall(build_frame(opcode, payload, **kw))

    def send_text(self, text):
        self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text)

    def send_binary(self, data):
        self.send_frame(OP_BINARY, data)

    def send_close(self, code=1000, reason=b""):
        self.send_frame(OP_CLOSE, close_payload(code, reason))

    # -- receiving
    def _fill(self, deadline):
        rem = deadline - time.monotonic()
        if rem <= 0:
            raise TimeoutError(f"timed out waiting for data (buffered {len(self.buf)} bytes)")
        self.sock.settimeout(rem)
        try:
            d = self.sock.recv(1 << 20)
        except ConnectionResetError:
            d = b""
        except socket.timeout:
            raise TimeoutError(f"timed out waiting for data (buffered {len(self.buf)} bytes)")
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def recv_frame(self, timeout=5.0, partial_ok=False):
        """Next frame, or None at EOF. partial_ok: EOF inside a frame is not an error (a server
        abandoning a stuck connection cannot finish the frame it was writing)."""
        deadline = time.monotonic() + timeout
        while True:
            f, used = parse_server_frame(self.buf)
            if f is not None:
                del self.buf[:used]
                return f
            if self.eof or not self._fill(deadline):
                assert partial_ok or not self.buf, f"EOF in the middle of a frame ({len(self.buf)} bytes left)"
                return None

    def recv_message(self, timeout=5.0, auto_pong=True):
        """Next complete data message as (opcode, payload); pings are answered, pongs skipped.
        A close frame raises AssertionError (use expect_close for those)."""
        deadline = time.monotonic() + timeout
        parts, op = [], None
        while True:
            f = self.recv_frame(max(0.0, deadline - time.monotonic()))
            assert f is not None, "EOF while waiting for a message"
            if f.opcode == OP_PING:
                if auto_pong:
                    self.send_frame(OP_PONG, f.payload)
                continue
            if f.opcode == OP_PONG:
                continue
            if f.opcode == OP_CLOSE:
                raise AssertionError(f"got close {f.close_code} {f.close_reason!r} while waiting for a message")
            if op is None:
                assert f.opcode in (OP_TEXT, OP_BINARY), f"continuation without start from server: {f!r}"
                op = f.opcode
            else:
                assert f.opcode == OP_CONT, f"server interleaved a new message into a fragmented one: {f!r}"
            parts.append(f.payload)
            if f.fin:
                return op, b"".join(parts)

    def expect_pong(self, payload, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            f = self.recv_frame(max(0.0, deadline - time.monotonic()))
            assert f is not None, "EOF while waiting for pong"
            if f.opcode == OP_PONG:
                assert f.payload == payload, f"pong payload {f.payload!r} != ping payload {payload!r}"
                return
            assert f.opcode == OP_PING, f"unexpected frame while waiting for pong: {f!r}"

    def ping_roundtrip(self, payload=b"rt", timeout=5.0):
        self.send_frame(OP_PING, payload)
        self.expect_pong(payload, timeout)

    def expect_close(self, code, timeout=5.0, allow_data=False, reply=False):
        """Read until the server's close frame; assert its code; then require TCP EOF."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.recv_frame(max(0.0, deadline - time.monotonic()))
            assert f is not None, f"EOF without a close frame (expected close {code})"
            if f.opcode == OP_CLOSE:
                break
            if f.opcode in (OP_PING, OP_PONG):
                continue
            assert allow_data, f"unexpected frame before close: {f!r}"
        got = f.close_code
        if isinstance(code, (set, tuple, list)):
            assert got in code, f"close code {got} (reason {f.close_reason!r}), expected one of {code}"
        else:
            assert got == code, f"close code {got} (reason {f.close_reason!r}), expected {code}"
        if got is not None:
            try:
                f.close_reason.decode("utf-8")
            except UnicodeDecodeError:
                raise AssertionError(f"server close reason is not UTF-8: {f.close_reason!r}")
        if reply:
            try:
                self.send_frame(OP_CLOSE, f.payload[:2])
            except OSError:
                pass
        self.expect_eof(max(0.5, deadline - time.monotonic()))
        return f

    def expect_eof(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not self.eof:
            try:
                if not self._fill(deadline):
                    break
            except TimeoutError:
                raise AssertionError(f"server did not close the TCP connection within {timeout}s")
        assert not self.buf, f"data after the close frame: {bytes(self.buf[:50])!r}"

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# websockets (independent client library)
# --------------------------------------------------------------------------

def ws_url(port, path):
    return f"ws://{HOST}:{port}{path}"


def ws_connect(port, path="/ws", **kw):
    opts = dict(ping_interval=None, max_size=None, max_queue=None, compression=None,
                open_timeout=10, close_timeout=5)
    opts.update(kw)
    return websockets.client.connect(ws_url(port, path), **opts)


def envelope_sub_path(groups=None, fmt="json", since=None, epoch=None):
    """/ws with groups, format (json envelopes by default), since and epoch."""
    q = []
    if groups is not None:
        q.append("groups=" + groups)
    if fmt is not None:
        q.append("format=" + fmt)
    if since is not None:
        q.append("since=" + since)
    if epoch is not None:
        q.append("epoch=" + epoch)
    return "/ws" + ("?" + "&".join(q) if q else "")


def sub_path(groups=None):
    if groups is None:
        return "/ws"
    return "/ws?groups=" + groups


async def recv(ws, timeout=5.0):
    return await asyncio.wait_for(ws.recv(), timeout)


async def recv_n(ws, n, timeout=10.0):
    out = []
    async def go():
        for _ in range(n):
            out.append(await ws.recv())
    try:
        await asyncio.wait_for(go(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"received only {len(out)} of {n} messages within {timeout}s")
    return out


async def expect_silence(ws, timeout=0.3):
    try:
        m = await asyncio.wait_for(ws.recv(), timeout)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"unexpected message {m[:80]!r}")


async def apublish(port, body, group=None, content_type=None, expect=200):
    return await asyncio.to_thread(publish, port, body, group, content_type, expect)


async def expect_ws_close(ws, code, timeout=5.0):
    """Wait for the server to close a websockets connection; assert the received close code."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.exceptions.ConnectionClosed as e:
        assert e.rcvd is not None, f"connection closed without a close frame from the server ({e})"
        assert e.rcvd.code == code, f"close code {e.rcvd.code} ({e.rcvd.reason!r}), expected {code}"
        return e
    except asyncio.TimeoutError:
        raise AssertionError(f"server did not close within {timeout}s (expected {code})")
