"""Write rounds (src/coalesce.h, conn_flush_dirty): a worker writes its dirty sockets oldest first in
slices of at most 1 ms, reading its sockets and inbox between slices, so messages published while a
round runs join the queues of sockets it has not reached yet. Whatever the interleaving, every
subscriber gets every message once and in order; rounds of single frames are never held, and a
round over hundreds of sockets spans several slices (herald_write_{rounds,slices,holds}_total)."""

import json
import resource
import selectors
import socket
import struct
import time

from herald_helpers import Publisher, http_call, metrics, read_response, sub_path, ws_request_bytes

N_SUBS = 1500   # 750 per worker: a round takes several 1 ms slices
N_MSGS = 80


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        assert hard == resource.RLIM_INFINITY or hard >= need, \
            f"this test needs {need} descriptors; the hard limit is {hard}"
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def subscribe(port, group):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(ws_request_bytes(sub_path(group)))
    resp, rest = read_response(s, expect_close=False)
    assert resp.status == 101, resp.status
    s.setblocking(False)
    return s, rest


def frames(buf):
    """Complete unmasked server frames at the start of buf: (list of (opcode, payload), rest)."""
    out, i = [], 0
    while len(buf) - i >= 2:
        op, ln = buf[i] & 0x0F, buf[i + 1] & 0x7F
        hdr = 2
        if ln == 126:
            if len(buf) - i < 4:
                break
            ln, hdr = struct.unpack(">H", buf[i + 2:i + 4])[0], 4
        assert ln < 65536, "no large frames in this test"
        if len(buf) - i < hdr + ln:
            break
        out.append((op, bytes(buf[i + hdr:i + hdr + ln])))
        i += hdr + ln
    return out, buf[i:]


class Subscribers:
    """N raw WebSocket subscribers read through one selector."""

    def __init__(self, port, group, n):
        self.socks, self.bufs = [], []
        for _ in range(n):
            s, rest = subscribe(port, group)
            self.socks.append(s)
            self.bufs.append(bytearray(rest))
        self.got = [[] for _ in self.socks]
        self.sel = selectors.DefaultSelector()

    def read_until(self, count, timeout):
        """Reads until every subscriber has `count` text messages; returns how many fell short."""
        short = {i for i, g in enumerate(self.got) if len(g) < count}
        for i in short:
            self.sel.register(self.socks[i], selectors.EVENT_READ, i)
        deadline = time.monotonic() + timeout
        while short and time.monotonic() < deadline:
            for key, _ in self.sel.select(timeout=0.5):
                i = key.data
                data = key.fileobj.recv(65536)
                assert data, f"subscriber {i} was closed after {len(self.got[i])} messages"
                self.bufs[i] += data
                fr, self.bufs[i] = frames(self.bufs[i])
                self.got[i] += [p.decode() for op, p in fr if op == 1]
                if len(self.got[i]) >= count:
                    self.sel.unregister(key.fileobj)
                    short.discard(i)
        for i in short:
            self.sel.unregister(self.socks[i])
        return len(short)

    def close(self):
        for s in self.socks:
            s.close()


def test_rounds_over_many_subscribers(herald):
    raise_nofile(N_SUBS + 256)
    srv = herald(nofile=N_SUBS + 256)
    subs = Subscribers(srv.port, "fan", N_SUBS)
    try:
        # A server that keeps up: messages 20 ms apart, each written to 1,500 sockets (750 per
        # worker) with one frame per write. However long a round takes here, nothing is held.
        m0 = metrics(srv.port)
        pub = Publisher(srv.port)
        try:
            for k in range(20):
                pub.publish(f"c{k:03d}", group="fan", content_type="text/plain")
                time.sleep(0.02)
        finally:
            pub.close()
        assert subs.read_until(20, 30) == 0
        m1 = metrics(srv.port)
        assert m1["herald_write_holds_total"] == m0["herald_write_holds_total"], \
            "a round of single frames was held"
        assert m1["herald_write_rounds_total"] - m0["herald_write_rounds_total"] >= 20

        # A burst, published back to back while the subscribers are not read: rounds over 750
        # sockets per worker take several 1 ms slices, and later messages arrive mid-round.
        pub = Publisher(srv.port)
        try:
            for k in range(N_MSGS):
                pub.publish(f"m{k:03d}", group="fan", content_type="text/plain")
        finally:
            pub.close()
        assert subs.read_until(20 + N_MSGS, 60) == 0
        m2 = metrics(srv.port)
        want = [f"c{k:03d}" for k in range(20)] + [f"m{k:03d}" for k in range(N_MSGS)]
        bad = [i for i, g in enumerate(subs.got) if g != want]
        assert not bad, (f"{len(bad)} of {N_SUBS} subscribers did not get the messages once and "
                         f"in order; first: {subs.got[bad[0]][:6]}... ({len(subs.got[bad[0]])})")
        assert (m2["herald_deliveries_total"] - m0["herald_deliveries_total"]
                == N_SUBS * (20 + N_MSGS))
        rounds = m2["herald_write_rounds_total"] - m1["herald_write_rounds_total"]
        slices = m2["herald_write_slices_total"] - m1["herald_write_slices_total"]
        print(f"burst: {rounds:.0f} rounds in {slices:.0f} slices")
        assert slices > rounds, "no round of 750 sockets took more than one 1 ms slice"
    finally:
        subs.close()


def test_messages_written_on_writable_are_released_while_idle(herald):
    """Frames that waited for a full socket are written when it turns writable (EPOLLOUT), outside
    any write round; the worker then goes idle. Their messages must still be released at the end of
    that loop pass, not when the worker next writes a round."""
    srv = herald("--history", "0", "--queue-limit", "64m", workers=1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", srv.port))
    s.sendall(ws_request_bytes(sub_path("big")))
    resp, rest = read_response(s, expect_close=False)
    assert resp.status == 101
    size, count = 256 * 1024, 40
    pub = Publisher(srv.port)
    try:
        for k in range(count):
            pub.publish(bytes([65 + k % 26]) * size, group="big", content_type="application/octet-stream")
    finally:
        pub.close()
    buf, got = bytearray(rest), 0
    s.settimeout(10)
    while got < count:
        data = s.recv(1 << 20)
        assert data, f"closed after {got} messages"
        buf += data
        while len(buf) >= 10:  # 256 KiB binary frames: 2 + 8 length bytes
            ln = struct.unpack(">Q", buf[2:10])[0]
            if len(buf) < 10 + ln:
                break
            assert buf[0] & 0x0F == 2 and ln == size
            del buf[:10 + ln]
            got += 1
    time.sleep(0.5)  # idle: no round runs on this worker now
    st, _, body = http_call(srv.port, "GET", "/stats")
    assert st == 200
    mem = json.loads(body)["memory"]
    assert mem["messages"] == 0, f"{mem['messages']} bytes of written messages still held while idle"
    s.close()
