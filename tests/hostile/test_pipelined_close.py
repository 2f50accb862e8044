"""Issue 8, item 7: a client that pipelines its upgrade request, messages, a ping and a close gets every
reply the protocol owes it, in order, before the socket closes: the 101, the pong, the close echo. The
same bytes are split into two writes at every offset (inside the head, inside frames, between them),
so the server sees every way they can fall across reads.
"""

import time

import pytest

from herald_helpers import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS, accept_for,
                            build_frame, close_payload, read_response, ws_request_bytes)
from hostile_helpers import SANITIZED, connect, scaled, slack

GROUP = "pipelined"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
MASK = b"\x11\x22\x33\x44"


def frames(i):
    """A fragmented text, a ping, a binary message and a close 1000; payloads carry i so that each
    connection's replies and messages are told apart (same length for every i)."""
    return (build_frame(OP_TEXT, b"hel", fin=False, mask_key=MASK)
            + build_frame(OP_CONT, b"lo-%04d" % i, mask_key=MASK)
            + build_frame(OP_PING, b"ping-%04d" % i, mask_key=MASK)
            + build_frame(OP_BINARY, b"\x00\x01bin-%04d" % i, mask_key=MASK)
            + build_frame(OP_CLOSE, close_payload(1000), mask_key=MASK))


def replies_until_eof(ws, timeout):
    """Every frame the server sends until it closes the connection."""
    out = []
    while True:
        f = ws.recv_frame(timeout)
        if f is None:
            return out
        out.append(f)


def expect_pong_then_close(ws, ping, what):
    got = replies_until_eof(ws, slack(5))
    kinds = [(f.opcode, f.payload if f.opcode == OP_PONG else f.close_code) for f in got]
    assert kinds == [(OP_PONG, ping), (OP_CLOSE, 1000)], f"{what}: got {got}, expected the pong then close 1000"


def run_split(port, i, split):
    data = ws_request_bytes(path=f"/publish?group={GROUP}", host=f"127.0.0.1:{port}", key=KEY) + frames(i)
    s = connect(port, timeout=slack(5))
    try:
        s.sendall(data[:split])
        time.sleep(0.002)               # let the first part be read on its own
        s.sendall(data[split:])
        resp, rest = read_response(s, timeout=slack(5))
        what = f"split at byte {split} of {len(data)}"
        assert resp.status == 101, f"{what}: {resp!r}"
        assert resp.header("sec-websocket-accept") == accept_for(KEY), f"{what}: {resp!r}"
        expect_pong_then_close(RawWS(s, rest), b"ping-%04d" % i, what)
    finally:
        s.close()
    return len(data)


def test_pipelined_upgrade_messages_ping_close_at_every_split(herald):
    srv = herald()
    sub = RawWS.connect(srv.port, f"/ws?groups={GROUP}")
    try:
        total = run_split(srv.port, 0, 0)        # everything in one write
        step = 3 if SANITIZED else 1
        splits = list(range(1, total, step)) + [total]
        for i, split in enumerate(splits, start=1):
            run_split(srv.port, i, split)
        for i in range(len(splits) + 1):
            assert sub.recv_message(slack(5)) == (OP_TEXT, b"hello-%04d" % i), f"text of connection {i}"
            assert sub.recv_message(slack(5)) == (OP_BINARY, b"\x00\x01bin-%04d" % i), f"binary of connection {i}"
    finally:
        sub.close()


@pytest.mark.parametrize("path", [f"/publish?group={GROUP}", f"/ws?groups={GROUP}"], ids=["publisher", "subscriber"])
def test_ping_and_close_in_one_read(herald, path):
    srv = herald()
    for i in range(scaled(20)):
        ws = RawWS.connect(srv.port, path)
        try:
            ws.send(build_frame(OP_PING, b"last words %d" % i) + build_frame(OP_CLOSE, close_payload(1000)))
            expect_pong_then_close(ws, b"last words %d" % i, f"round {i}")
        finally:
            ws.close()


