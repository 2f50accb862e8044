"""SSE and permessage-deflate on the same groups: WebSocket subscribers that negotiated the
extension get compressed frames (once per message and WebSocket format), SSE streams of the same
groups get plain events (permessage-deflate is a WebSocket extension, never applied to /sse, even
when a client sends Sec-WebSocket-Extensions there), live and in history replays."""
import json

from herald_helpers import OP_TEXT, http_call, publish
from sse_client import open_stream
from test_deflate import EXT, PmdRaw, json_payload


def stats(port):
    st, _, body = http_call(port, "GET", "/stats")
    assert st == 200
    return json.loads(body)


def epoch_of(stream):
    return stream.last_id.rsplit("/", 1)[0]


def check_sse(streams, body, ep, offset):
    """Every stream's next event is the plain message (raw text, or its JSON envelope)."""
    for kind, s in streams:
        ev = s.events(1)[0]
        assert ev["event"] == "message"
        if kind == "json":
            env = json.loads(ev["data"])
            assert env["data"] == body.decode() and env["offset"] == offset and env["epoch"] == ep
        else:
            assert ev["data"] == body.decode()


def check_ws(subs, body, offset):
    """Every deflate subscriber's next message is compressed and inflates to its format's frame."""
    for fmt, ws in subs:
        op, comp, wire, data = ws.recv_msg()
        assert comp, f"{fmt}: not compressed"
        assert len(wire) < len(data)
        if fmt == "raw":
            assert op == OP_TEXT and data == body
        elif fmt == "json":
            env = json.loads(data)
            assert env["data"] == body.decode() and env["offset"] == offset
        else:  # msgpack: the text payload is a str field, its bytes verbatim
            assert body in data


def test_deflate_and_sse_subscribers_of_one_group(herald):
    h = herald("--history", "10")
    ext_hdr = [EXT]  # on /sse it must be ignored
    # SSE: one group raw and JSON (shared events carrying their id, the highest formats), and
    # two groups (a private id line per event)
    sse = [("raw", open_stream(h.port, "/sse?groups=m", ext_hdr)),
           ("json", open_stream(h.port, "/sse?groups=m&format=json", ext_hdr)),
           ("raw", open_stream(h.port, "/sse?groups=m,n", ext_hdr))]
    for _, s in sse:
        assert s.status == 200 and "sec-websocket-extensions" not in s.headers
    ep = epoch_of(sse[0][1])
    subs = [(fmt, PmdRaw.open(h.port, "/ws?groups=m" + ("" if fmt == "raw" else f"&format={fmt}")))
            for fmt in ("raw", "json", "msgpack")]
    for _, ws in subs:
        assert ws.ext.startswith("permessage-deflate")

    bodies = [json_payload(3000, seed) for seed in (1, 2)]
    for i, body in enumerate(bodies, 1):
        publish(h.port, body, "m", "application/json")
        check_ws(subs, body, i)
        check_sse(sse, body, ep, i)
    for kind, s in sse:
        # plain text on the wire: a raw stream holds the JSON body's own bytes
        if kind == "raw":
            assert bodies[0][:200] in s.raw
    st = stats(h.port)
    # one compression per message per WebSocket format; none for the SSE formats
    assert st["deflate_messages"] == 3 * len(bodies), st
    assert st["deflate_deliveries"] == 3 * len(bodies), st
    assert st["deliveries_sse"] == 3 * len(bodies), st

    # History replay through both transports: compressed for the deflate WebSocket subscriber,
    # plain for the SSE stream (Last-Event-ID from the first stream's first message)
    replay_ws = PmdRaw.open(h.port, f"/ws?groups=m&format=json&since=m:0&epoch={ep}")
    replay_sse = open_stream(h.port, "/sse?groups=m&format=json",
                             ext_hdr + [("Last-Event-ID", f"{ep}/0")])
    assert replay_sse.status == 200
    for i, body in enumerate(bodies, 1):
        check_ws([("json", replay_ws)], body, i)
        check_sse([("json", replay_sse)], body, ep, i)
    st = stats(h.port)
    assert st["deflate_messages"] == 3 * len(bodies), st  # replays reuse the cached frames
    assert st["deflate_deliveries"] == 3 * len(bodies) + len(bodies), st
    for _, s in sse + [("json", replay_sse)]:
        s.close()
    for _, ws in subs + [("json", replay_ws)]:
        ws.close()
