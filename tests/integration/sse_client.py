"""An independent Server-Sent Events client on a raw socket, for the /sse tests: it reads the
stream the way the WHATWG EventSource parser does (fields, comments, the last event ID buffer,
no dispatch for an event without data) and keeps the raw bytes for byte-exact checks."""

import socket
import ssl
import time

from herald_helpers import HOST


class SSEStream:
    def __init__(self, port, path, headers=(), rcvbuf=None, timeout=5.0, ssl_ctx=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((HOST, port))
        if ssl_ctx is not None:
            self.sock = ssl_ctx.wrap_socket(self.sock, server_hostname=HOST)
        hdrs = [("Host", f"{HOST}:{port}"), ("Accept", "text/event-stream")] + list(headers)
        req = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n"
        self.sock.sendall(req.encode("latin-1"))
        self.raw = b""        # body bytes received so far
        self.eof = False
        self.last_id = ""     # the browser's last event ID string
        self.comments = 0
        self._pos = 0         # parse position in raw
        self._data, self._event, self._id_buf = None, "", None
        self._pending = []    # events parsed but not handed out yet
        self.joined = []      # "joined" events dispatched (the first event of a stream)
        head = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in head:
            if time.monotonic() > deadline:
                raise AssertionError("no response head")
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.raw = rest

    def body_json(self):
        """For a refusal: the JSON body (Content-Length delimited)."""
        import json
        n = int(self.headers.get("content-length", "0"))
        while len(self.raw) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.raw += chunk
        return json.loads(self.raw[:n])

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, ssl.SSLError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.raw += chunk
        return True

    def _parse(self):
        """Consumes complete lines; returns the events dispatched (dicts)."""
        out = []
        while True:
            rest = self.raw[self._pos:]
            i = min([k for k in (rest.find(b"\n"), rest.find(b"\r")) if k >= 0], default=-1)
            if i < 0:
                return out
            line = rest[:i].decode("utf-8")
            step = i + 1
            if rest[i:i + 2] == b"\r\n":
                step = i + 2
            self._pos += step
            if line == "":
                if self._id_buf is not None:
                    self.last_id = self._id_buf
                if self._data is not None:
                    data = "\n".join(self._data)
                    ev = {"event": self._event or "message", "data": data, "id": self.last_id}
                    # herald's first event ("joined": every group's position in its id) is kept
                    # aside, so tests read messages with events() as before
                    (self.joined if ev["event"] == "joined" else out).append(ev)
                self._data, self._event = None, ""
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            field, sep, value = line.partition(":")
            if sep and value.startswith(" "):
                value = value[1:]
            if field == "data":
                self._data = (self._data or []) + [value]
            elif field == "event":
                self._event = value
            elif field == "id" and "\0" not in value:
                self._id_buf = value

    def events(self, n, timeout=5.0):
        """The next n dispatched events."""
        got, self._pending = self._pending, []
        deadline = time.monotonic() + timeout
        while True:
            got.extend(self._parse())
            if len(got) >= n:
                self._pending = got[n:]
                return got[:n]
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                raise AssertionError(f"got {len(got)} of {n} events (eof={self.eof}): {got}")
            self._fill(min(left, 0.5))

    def silence(self, seconds=0.3):
        """No event dispatched for this long."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.eof:
            self._fill(deadline - time.monotonic())
        got, self._pending = self._pending + self._parse(), []
        assert not got, f"unexpected events: {got}"

    def read_until_eof(self, timeout=10.0):
        """Reads to the end of the stream; returns the events dispatched on the way."""
        got, self._pending = self._pending, []
        deadline = time.monotonic() + timeout
        while not self.eof:
            if time.monotonic() > deadline:
                raise AssertionError("stream did not end")
            self._fill(0.5)
            got.extend(self._parse())
        got.extend(self._parse())
        return got

    def close(self):
        self.sock.close()


def open_stream(port, path, headers=(), **kw):
    """Opens a stream and waits for its first id (sent once every group is joined)."""
    s = SSEStream(port, path, headers, **kw)
    assert s.status == 200, (s.status, s.raw[:300])
    deadline = time.monotonic() + 5
    while not s.last_id:
        s._pending.extend(s._parse())
        if time.monotonic() > deadline or s.eof:
            raise AssertionError(f"no first id: {s.raw[:300]!r}")
        s._fill(0.5)
    return s
