"""Write rounds (src/coalesce.h, conn_flush_dirty): a worker writes its dirty sockets oldest first in
slices of at most 1 ms, reading its sockets and inbox between slices, so messages published while a
round runs join the queues of sockets it has not reached yet. Whatever the interleaving, every
subscriber gets every message once and in order; a server that keeps up never holds a round."""

import resource
import selectors
import socket
import struct
import time

from herald_helpers import Publisher, metrics, read_response, sub_path, wait_until, ws_request_bytes

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


def test_a_burst_to_many_subscribers_arrives_whole_and_in_order(herald):
    raise_nofile(N_SUBS + 256)
    srv = herald(nofile=N_SUBS + 256)
    before = metrics(srv.port)
    subs = [subscribe(srv.port, "burst") for _ in range(N_SUBS)]
    got = [[] for _ in subs]
    bufs = [bytearray(rest) for _, rest in subs]
    pub = Publisher(srv.port)
    try:
        # published back to back while the subscribers are not read: rounds over 750 sockets
        # per worker run while later messages arrive
        for k in range(N_MSGS):
            pub.publish(f"m{k:03d}", group="burst", content_type="text/plain")
    finally:
        pub.close()
    sel = selectors.DefaultSelector()
    for i, (s, _) in enumerate(subs):
        sel.register(s, selectors.EVENT_READ, i)
    pending = N_SUBS
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1.0):
            i = key.data
            data = key.fileobj.recv(65536)
            assert data, f"subscriber {i} was closed after {len(got[i])} messages"
            bufs[i] += data
            fr, bufs[i] = frames(bufs[i])
            got[i] += [p.decode() for op, p in fr if op == 1]
            if len(got[i]) >= N_MSGS:
                sel.unregister(key.fileobj)
                pending -= 1
    want = [f"m{k:03d}" for k in range(N_MSGS)]
    short = [i for i, g in enumerate(got) if g != want]
    assert not short, (f"{len(short)} of {N_SUBS} subscribers did not get the {N_MSGS} messages in "
                       f"order; first: {got[short[0]][:5]}... ({len(got[short[0]])} messages)")
    after = metrics(srv.port)
    assert after["herald_deliveries_total"] - before["herald_deliveries_total"] == N_SUBS * N_MSGS
    assert after["herald_write_rounds_total"] > before["herald_write_rounds_total"]
    for s, _ in subs:
        s.close()


def test_a_server_that_keeps_up_never_holds(herald):
    srv = herald()
    subs = [subscribe(srv.port, "calm") for _ in range(20)]
    bufs = [bytearray(rest) for _, rest in subs]
    got = [[] for _ in subs]
    rounds0 = metrics(srv.port)["herald_write_rounds_total"]
    pub = Publisher(srv.port)
    try:
        for k in range(30):
            pub.publish(f"c{k}", group="calm", content_type="text/plain")
            time.sleep(0.01)
    finally:
        pub.close()

    def all_read():
        for i, (s, _) in enumerate(subs):
            try:
                bufs[i] += s.recv(65536)
            except BlockingIOError:
                pass
            fr, bufs[i] = frames(bufs[i])
            got[i] += [p.decode() for op, p in fr if op == 1]
        return all(len(g) >= 30 for g in got)
    wait_until(all_read, timeout=10, what="30 messages on each of 20 subscribers")
    assert all(g == [f"c{k}" for k in range(30)] for g in got)
    m = metrics(srv.port)
    # each message was written in a round of its own (the publisher waits for each reply)
    assert m["herald_write_rounds_total"] - rounds0 >= 30
    assert m["herald_write_holds_total"] == 0
    for s, _ in subs:
        s.close()
