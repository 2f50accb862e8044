"""Server-Sent Events transport (issue 12): GET /sse streams the messages of its groups as
text/event-stream events; the event id carries the epoch and every group's offset, so a browser's
Last-Event-ID resumes all groups without gap or duplicate. Driven by an independent raw-socket
SSE client (sse_client.py) and http.client."""

import base64
import hashlib
import hmac
import json
import re
import signal
import time

from herald_helpers import Publisher, http_call, metrics, publish, wait_until
from sse_client import SSEStream, open_stream

ID_RE = re.compile(r"^([0-9a-f]{16})/([0-9,]*)$")


def epoch_of(s):
    m = ID_RE.match(s.last_id)
    assert m, s.last_id
    return m.group(1)


def refused(port, path, headers=()):
    s = SSEStream(port, path, headers)
    try:
        body = s.body_json() if s.status != 200 else None
        return s.status, s.headers, body
    finally:
        s.close()


# ---- format ----------------------------------------------------------------------------------

def test_headers_and_text_events(herald):
    srv = herald("--history", "10")
    s = open_stream(srv.port, "/sse?groups=a,b")
    assert s.headers["content-type"].startswith("text/event-stream")
    assert s.headers["cache-control"] == "no-store"
    assert "content-length" not in s.headers and "transfer-encoding" not in s.headers
    ep = epoch_of(s)
    first = s.last_id
    # the first event: type "joined", every group's position in its id, empty data (dispatched by
    # an EventSource, never as a "message")
    assert s.joined == [{"event": "joined", "data": "", "id": first}], s.joined
    assert s.raw.startswith(f"id: {first}\nevent: joined\ndata: \n\n".encode()), s.raw[:120]
    publish(srv.port, "hello", group="a", content_type="text/plain")
    publish(srv.port, "l1\nl2\r\nl3\rl4\n", group="b", content_type="text/plain")
    publish(srv.port, "to all", content_type="text/plain")
    ev = s.events(3)
    assert ev[0] == {"event": "message", "data": "hello", "id": f"{ep}/1,{first.split(',')[1]}"}
    assert ev[1]["data"] == "l1\nl2\nl3\nl4\n"   # every line break kind becomes LF
    assert ev[1]["id"] == f"{ep}/1,1"
    assert ev[2]["data"] == "to all" and ev[2]["id"] == f"{ep}/1,1"  # a broadcast keeps the position
    # byte-exact: one data line per line, then a blank line
    assert b"data: l1\ndata: l2\ndata: l3\ndata: l4\ndata: \n\n" in s.raw
    # an empty text: one empty data line, which an EventSource dispatches with data ""
    publish(srv.port, "", group="a", content_type="text/plain")
    assert s.events(1)[0]["data"] == ""
    assert s.raw.endswith(b"\ndata: \n\n")
    s.close()


def test_binary_and_json_formats(herald):
    srv = herald()
    raw = open_stream(srv.port, "/sse?groups=g")
    js = open_stream(srv.port, "/sse?groups=g&format=json")
    payload = bytes(range(256))
    publish(srv.port, payload, group="g", content_type="application/octet-stream")
    publish(srv.port, 'say "hi"\n', group="g", content_type="text/plain")
    e = raw.events(2)
    assert e[0]["event"] == "binary" and base64.b64decode(e[0]["data"]) == payload
    assert e[1]["event"] == "message" and e[1]["data"] == 'say "hi"\n'
    j = js.events(2)
    ep = epoch_of(js)
    env = [json.loads(x["data"]) for x in j]
    assert env[0] == {"group": "g", "offset": 1, "epoch": ep, "binary": True,
                      "data": base64.b64encode(payload).decode()}
    assert env[1] == {"group": "g", "offset": 2, "epoch": ep, "data": 'say "hi"\n'}
    assert j[1]["id"] == f"{ep}/2"
    raw.close()
    js.close()


def test_bad_requests(herald):
    srv = herald()
    for path in ["/sse?groups=a&format=msgpack", "/sse?groups=a&format=xml", "/sse?groups=a,,b",
                 "/sse?groups=bad%20name", "/sse?groups=a&since=b:1", "/sse?groups=a&since=a:x",
                 "/sse?groups=a&since=a:1,"]:
        st, _, body = refused(srv.port, path)
        assert st == 400, (path, st)
        assert body["ok"] is False
    st, hdrs, _ = http_call(srv.port, "POST", "/sse?groups=a", body=b"")
    assert st == 405 and "GET" in hdrs["Allow"]
    assert srv.alive()


# ---- resume ----------------------------------------------------------------------------------

def collect(s, n):
    return [(json.loads(e["data"])["group"], json.loads(e["data"])["offset"]) for e in s.events(n)]


def by_group(pairs):
    out = {}
    for g, o in pairs:
        out.setdefault(g, []).append(o)
    return out


def test_last_event_id_resumes_every_group(herald):
    srv = herald("--history", "100")
    p = Publisher(srv.port)
    s = open_stream(srv.port, "/sse?groups=a,b,c&format=json")
    for g in "abab":
        p.publish(g, group=g, content_type="text/plain")
    assert collect(s, 4) == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    s2 = open_stream(srv.port, "/sse?groups=a,b,c&format=json")  # a second stream to take a mid id
    s.close()
    # while the first stream is away: more messages, in all three groups
    for g in "cabca":
        p.publish(g, group=g, content_type="text/plain")
    mid = s2.events(5)[1]["id"]  # after c:1 and a:3
    last = s.last_id
    # the replay goes group by group, each in order: exactly what was missed
    r = open_stream(srv.port, "/sse?groups=a,b,c&format=json", headers=[("Last-Event-ID", last)])
    assert by_group(collect(r, 5)) == {"a": [3, 4], "b": [3], "c": [1, 2]}
    r.silence(0.3)
    p.publish("live", group="b", content_type="text/plain")
    assert collect(r, 1) == [("b", 4)]
    # resuming from an id taken in the middle gives exactly what followed it
    r2 = open_stream(srv.port, "/sse?groups=a,b,c&format=json", headers=[("Last-Event-ID", mid)])
    assert by_group(collect(r2, 4)) == {"a": [4], "b": [3, 4], "c": [2]}
    r2.silence(0.3)
    # and the resumed stream's own id resumes it again, with nothing more to send
    r3 = open_stream(srv.port, "/sse?groups=a,b,c&format=json", headers=[("Last-Event-ID", r.last_id)])
    r3.silence(0.3)
    assert r3.last_id == r.last_id
    for x in (r, r2, r3, s2):
        x.close()
    p.close()


def test_since_in_url_and_last_event_id_precedence(herald):
    srv = herald("--history", "100")
    for i in range(5):
        publish(srv.port, f"m{i}", group="a", content_type="text/plain")
    s = open_stream(srv.port, "/sse?groups=a")
    ep = epoch_of(s)
    s.close()
    r = open_stream(srv.port, f"/sse?groups=a&since=a:2&epoch={ep}")
    assert [e["data"] for e in r.events(3)] == ["m2", "m3", "m4"]
    r.close()
    # the browser's Last-Event-ID wins over the since the page first asked for
    r = open_stream(srv.port, f"/sse?groups=a&since=a:2&epoch={ep}", headers=[("Last-Event-ID", f"{ep}/4")])
    assert [e["data"] for e in r.events(1)] == ["m4"]
    r.silence(0.2)
    r.close()


def test_recovery_failed(herald):
    srv = herald("--history", "2")
    for i in range(6):
        publish(srv.port, f"m{i}", group="a", content_type="text/plain")
    s = open_stream(srv.port, "/sse?groups=a,b")
    ep = epoch_of(s)
    s.close()
    # wrong epoch: every group reports, then the position is the current one
    r = open_stream(srv.port, "/sse?groups=a,b", headers=[("Last-Event-ID", "0000000000000000/3,0")])
    ev = r.events(2)
    assert [e["event"] for e in ev] == ["recovery_failed", "recovery_failed"]
    body = [json.loads(e["data"]) for e in ev]
    assert body[0] == {"type": "recovery_failed", "group": "a", "reason": "epoch", "epoch": ep, "offset": 6}
    assert body[1]["group"] == "b" and body[1]["reason"] == "epoch"
    assert r.last_id == f"{ep}/6,0"
    r.close()
    # too old (history keeps 2), and an offset from the future; an empty entry means "no position"
    r = open_stream(srv.port, "/sse?groups=a,b", headers=[("Last-Event-ID", f"{ep}/1,9")])
    ev = r.events(2)
    assert json.loads(ev[0]["data"])["reason"] == "too_old"
    assert json.loads(ev[1]["data"])["reason"] == "unknown_offset"
    r.close()
    r = open_stream(srv.port, "/sse?groups=a,b", headers=[("Last-Event-ID", f"{ep}/5,")])
    ev = r.events(2)
    assert ev[0]["data"] == "m5" and ev[0]["id"] == f"{ep}/6,"
    assert ev[1]["event"] == "recovery_failed" and json.loads(ev[1]["data"])["group"] == "b"
    r.close()


def test_malformed_last_event_id(herald):
    srv = herald("--history", "10")
    cases = {
        "nothing": "Last-Event-ID must be EPOCH/OFFSETS",
        "/1": "Last-Event-ID must be EPOCH/OFFSETS",
        "e/1,2,3": "Last-Event-ID does not match the groups of this stream",
        "e/1": "Last-Event-ID does not match the groups of this stream",
        "e/1,x": "Last-Event-ID offsets must be digits",
        "e/1,99999999999999999999999": "Last-Event-ID offsets must be digits",
        "e e/1,2": "Last-Event-ID epoch malformed",
        "e" * 65 + "/1,2": "Last-Event-ID epoch malformed",
        "e/" + "1" * 5000: "Last-Event-ID too long",
    }
    for lei, why in cases.items():
        st, _, body = refused(srv.port, "/sse?groups=a,b", headers=[("Last-Event-ID", lei)])
        assert st == 400 and body["error"] == why, (lei, st, body)
    st, _, body = refused(srv.port, "/sse?groups=a,b",
                          headers=[("Last-Event-ID", "e/1,2"), ("Last-Event-ID", "e/1,2")])
    assert st == 400
    # a stream without groups has an empty position
    s = open_stream(srv.port, "/sse", headers=[("Last-Event-ID", epoch_of(open_stream(srv.port, "/sse?groups=a")) + "/")])
    s.close()
    assert srv.alive()


# ---- same rules as /ws -------------------------------------------------------------------------

def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def make_jwt(secret, claims):
    signing = b64u(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64u(json.dumps(claims).encode())
    return signing + "." + b64u(hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest())


def test_auth(herald):
    srv = herald("--jwt-secret", "s3cret")
    good = make_jwt("s3cret", {"exp": int(time.time()) + 300, "groups": ["a"]})
    bad = make_jwt("other", {"exp": int(time.time()) + 300, "groups": ["a"]})
    st, hdrs, body = refused(srv.port, "/sse?groups=a")
    assert st == 401 and "Bearer" in hdrs["www-authenticate"] and body["error"] == "missing"
    assert hdrs["access-control-allow-origin"] == "*"  # a page on another origin can read why
    st, _, _ = refused(srv.port, f"/sse?groups=a&token={bad}")
    assert st == 401
    st, _, _ = refused(srv.port, "/sse?groups=a", headers=[("Authorization", f"Bearer {bad}")])
    assert st == 401
    st, _, _ = refused(srv.port, f"/sse?groups=b&token={good}")
    assert st == 403
    s = open_stream(srv.port, f"/sse?groups=a&token={good}")
    t = open_stream(srv.port, "/sse?groups=a", headers=[("Authorization", f"Bearer {good}")])
    publish(srv.port, "x", group="a", content_type="text/plain")
    assert s.events(1)[0]["data"] == "x" and t.events(1)[0]["data"] == "x"
    s.close()
    t.close()


def test_origin_and_cors(herald):
    srv = herald("--allowed-origins", "https://app.example")
    st, _, body = refused(srv.port, "/sse?groups=a", headers=[("Origin", "https://evil.example")])
    assert st == 403 and body["error"] == "origin not allowed"
    s = open_stream(srv.port, "/sse?groups=a", headers=[("Origin", "https://app.example")])
    assert s.headers["access-control-allow-origin"] == "https://app.example"
    assert s.headers["vary"] == "Origin"
    s.close()
    s = open_stream(srv.port, "/sse?groups=a")  # no Origin (not a browser): allowed, no CORS headers
    assert "access-control-allow-origin" not in s.headers
    s.close()
    st, hdrs, _ = http_call(srv.port, "OPTIONS", "/sse?groups=a",
                            headers={"Origin": "https://app.example",
                                     "Access-Control-Request-Headers": "authorization"})
    assert st == 200
    assert hdrs["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Authorization" in hdrs["Access-Control-Allow-Headers"]
    assert "Last-Event-ID" in hdrs["Access-Control-Allow-Headers"]
    st, _, _ = http_call(srv.port, "OPTIONS", "/sse", headers={"Origin": "https://evil.example"})
    assert st == 403


def test_slow_consumer_close(herald):
    srv = herald("--queue-limit", "65536", "--slow-policy", "close")
    stuck = open_stream(srv.port, "/sse?groups=s", rcvbuf=4096)
    fast = open_stream(srv.port, "/sse?groups=s")
    p = Publisher(srv.port)
    blob = "x" * 32000
    for i in range(200):
        p.publish(blob, group="s", content_type="text/plain")
        fast.events(1)
    wait_until(lambda: metrics(srv.port)["herald_slow_consumer_closes_total"] >= 1, what="slow close")
    # the stuck stream ends after whole events only: every event it got is complete and in order
    got = stuck.read_until_eof()
    assert all(e["data"] == blob for e in got) and len(got) < 200
    assert stuck.raw.endswith(b"\n\n")
    offs = [int(e["id"].split("/")[1]) for e in got]
    assert offs == list(range(1, len(got) + 1))
    p.close()
    fast.close()


def test_slow_consumer_close_last_id_covers_only_whole_events(herald):
    """A slow stream closed with events still queued: the replay's first event (and any other
    id-carrying control queued behind them) goes with them, since an id is cumulative and would
    claim the cut events. Resuming from the last id the client saw gives exactly what it missed."""
    srv = herald("--queue-limit", "65536", "--slow-policy", "close", "--history", "100")
    p = Publisher(srv.port)
    blob = "z" * 32000
    for i in range(100):
        p.publish(blob, group="s", content_type="text/plain")
    probe = open_stream(srv.port, "/sse?groups=other")
    ep = epoch_of(probe)
    probe.close()
    stuck = SSEStream(srv.port, f"/sse?groups=s&since=s:0&epoch={ep}", rcvbuf=4096)
    assert stuck.status == 200
    time.sleep(0.3)  # the replay fills the socket; the rest waits in the queue
    p.publish("live", group="s", content_type="text/plain")
    wait_until(lambda: metrics(srv.port)["herald_slow_consumer_closes_total"] >= 1, what="slow close")
    got = stuck.read_until_eof()
    stuck.close()
    assert got and len(got) < 100
    offs = [int(e["id"].split("/")[1]) for e in got]
    assert offs == list(range(1, len(got) + 1))
    assert stuck.last_id == f"{ep}/{len(got)}"  # no id past the last whole event
    r = SSEStream(srv.port, "/sse?groups=s", headers=[("Last-Event-ID", stuck.last_id)])
    rest = r.events(101 - len(got), timeout=10)
    assert [int(e["id"].split("/")[1]) for e in rest] == list(range(len(got) + 1, 102))
    assert rest[-1]["data"] == "live" and all(e["data"] == blob for e in rest[:-1])
    r.silence(0.3)
    r.close()
    p.close()


def test_slow_consumer_drop_oldest(herald):
    srv = herald("--queue-limit", "65536", "--slow-policy", "drop-oldest")
    stuck = open_stream(srv.port, "/sse?groups=s&format=json", rcvbuf=4096)
    p = Publisher(srv.port)
    blob = "y" * 32000
    for i in range(200):
        p.publish(blob, group="s", content_type="text/plain")
    wait_until(lambda: metrics(srv.port)["herald_messages_dropped_total"] >= 1, what="drops")
    p.publish("last", group="s", content_type="text/plain")
    # reading now: events are whole, ids match their envelopes, the newest arrives
    got = []
    deadline = time.monotonic() + 10
    while not got or json.loads(got[-1]["data"])["data"] != "last":
        assert time.monotonic() < deadline, "last message never arrived"
        stuck._fill(0.5)
        got.extend(stuck._parse())
    for e in got:
        env = json.loads(e["data"])
        assert e["id"].endswith(f"/{env['offset']}")
    offs = [json.loads(e["data"])["offset"] for e in got]
    assert offs == sorted(offs) and len(offs) < 201
    stuck.close()
    p.close()


def test_keepalive_comments_and_no_idle_timeout(herald):
    srv = herald("--ping-interval", "0.2", "--idle-timeout", "0.5")
    s = open_stream(srv.port, "/sse?groups=k")
    s.silence(1.5)  # silent client, past --idle-timeout: still open
    assert not s.eof
    assert s.comments >= 3, s.raw
    publish(srv.port, "still here", group="k", content_type="text/plain")
    assert s.events(1)[0]["data"] == "still here"
    s.close()


def server_socket_option(pid, peer, level, opt):
    """An option of herald's socket whose peer is `peer`, read from a copy of its fd
    (pidfd_getfd(2): herald is our child, so we may)."""
    import ctypes
    import os
    import socket
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                continue
            fd = libc.syscall(438, pidfd, int(name), 0)  # SYS_pidfd_getfd
            assert fd >= 0, f"pidfd_getfd: {os.strerror(ctypes.get_errno())}"
            sk = socket.socket(fileno=fd)
            try:
                if sk.family == socket.AF_INET and sk.type == socket.SOCK_STREAM and \
                        sk.getpeername() == peer:
                    return sk.getsockopt(level, opt)
            except OSError:
                pass  # a listening socket has no peer
            finally:
                sk.close()
    finally:
        os.close(pidfd)
    raise AssertionError(f"no herald socket with peer {peer}")


def test_vanished_peer_is_timed_out_by_the_kernel(herald):
    """Keep-alive comments never fill the socket buffer, so --write-timeout cannot see a peer that
    vanished: the stream's socket gets TCP_USER_TIMEOUT = --write-timeout instead (unacknowledged
    data that old fails the socket). Another HTTP connection keeps the kernel default."""
    import socket
    TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)
    srv = herald("--write-timeout", "7")
    s = open_stream(srv.port, "/sse?groups=v")
    peer = s.sock.getsockname()
    assert server_socket_option(srv.pid, peer, socket.IPPROTO_TCP, TCP_USER_TIMEOUT) == 7000
    s.close()
    h = SSEStream(srv.port, "/healthz")  # any other HTTP connection: untouched
    try:
        assert server_socket_option(srv.pid, h.sock.getsockname(), socket.IPPROTO_TCP,
                                    TCP_USER_TIMEOUT) == 0
    finally:
        h.close()


def test_drain_on_sigterm(herald):
    srv = herald("--drain-window", "0.2")
    s = open_stream(srv.port, "/sse?groups=d")
    p = Publisher(srv.port)
    for i in range(20):
        p.publish(f"m{i}", group="d", content_type="text/plain")
    p.close()
    wait_until(lambda: metrics(srv.port)["herald_deliveries_total"] >= 20, what="deliveries")
    srv.signal(signal.SIGTERM)
    got = s.read_until_eof()
    assert [e["data"] for e in got] == [f"m{i}" for i in range(20)]
    assert srv.wait(10) == 0


def test_drain_flushes_queued_events(herald):
    srv = herald("--drain-window", "0.2")
    s = open_stream(srv.port, "/sse?groups=d", rcvbuf=4096)
    p = Publisher(srv.port)
    for i in range(40):
        p.publish(f"{i:04d}" + "z" * 2000, group="d", content_type="text/plain")
    p.close()
    srv.signal(signal.SIGTERM)
    got = s.read_until_eof()
    assert [e["data"][:4] for e in got] == [f"{i:04d}" for i in range(40)]
    assert srv.wait(10) == 0


def test_metrics_by_transport(herald):
    srv = herald()
    s = open_stream(srv.port, "/sse?groups=m")
    m0 = metrics(srv.port)
    assert m0['herald_subscribers_by_transport{transport="sse"}'] == 1
    assert m0['herald_subscribers_by_transport{transport="ws"}'] == 0
    assert m0["herald_subscribers_open"] == 1
    for i in range(3):
        publish(srv.port, "x", group="m", content_type="text/plain")
    s.events(3)
    m1 = metrics(srv.port)
    assert m1['herald_deliveries_by_transport_total{transport="sse"}'] == 3
    assert m1['herald_deliveries_by_transport_total{transport="ws"}'] == 0
    s.close()
    wait_until(lambda: metrics(srv.port)['herald_subscribers_by_transport{transport="sse"}'] == 0,
               what="gauge back to 0")
    st, _, body = http_call(srv.port, "GET", "/stats")
    assert json.loads(body)["deliveries_sse"] == 3


def test_client_served(herald):
    import os
    srv = herald()
    st, hdrs, body = http_call(srv.port, "GET", "/herald-client.js")
    assert st == 200 and hdrs["Content-Type"].startswith("text/javascript")
    assert hdrs["Access-Control-Allow-Origin"] == "*"
    src = os.path.join(os.path.dirname(__file__), "..", "..", "clients", "js", "src", "index.js")
    with open(src, "rb") as f:
        assert body == f.read()
    st, _, body = http_call(srv.port, "HEAD", "/herald-client.js")
    assert st == 200 and body == b""
    st, _, body = http_call(srv.port, "GET", "/healthz")
    assert body == b"ok\n"


def test_resume_waits_for_the_cluster_epoch(herald):
    """A node restarted in a cluster does not know the cluster's epoch until Redis answers: for its
    first seconds a resume is asked to come back instead of getting a needless recovery_failed
    "epoch": /ws with since gets 503 + Retry-After; /sse (since or Last-Event-ID) an empty stream
    with "retry: 1000" (an EventSource gives up on any status but 200)."""
    import socket
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts, never answers: the broker stays unconfirmed
    try:
        srv = herald("--broker", f"redis://127.0.0.1:{silent.getsockname()[1]}")
        for path, hdrs in [("/sse?groups=a&since=a:1&epoch=e", []),
                           ("/sse?groups=a", [("Last-Event-ID", "e/1")])]:
            s = SSEStream(srv.port, path, hdrs)
            assert s.status == 200 and s.headers["content-type"].startswith("text/event-stream")
            assert s.read_until_eof() == [] and s.raw.endswith(b"retry: 1000\n\n"), s.raw
            assert s.last_id == ""
            s.close()
        st, h, _ = http_call(srv.port, "GET", "/ws?groups=a&since=a:1&epoch=e",
                             headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                      "Sec-WebSocket-Version": "13"})
        assert st == 503 and h["Retry-After"] == "1"
        s = open_stream(srv.port, "/sse?groups=a")  # not resuming: served
        s.close()
    finally:
        silent.close()


def test_resume_in_the_cluster_window_is_still_checked_first(herald):
    """The come-back-later answer is for clients that would be served: a refused origin or a
    missing token gets its refusal during the cluster's first seconds too (/sse and /ws)."""
    import socket
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        srv = herald("--broker", f"redis://127.0.0.1:{silent.getsockname()[1]}",
                     "--allowed-origins", "https://app.example", "--jwt-secret", "s3cret")
        for path, hdrs in [("/sse?groups=a&since=a:1&epoch=e", []),
                           ("/sse?groups=a", [("Last-Event-ID", "e/1")])]:
            st, h, body = refused(srv.port, path, headers=hdrs + [("Origin", "https://evil.example")])
            assert st == 403 and body["error"] == "origin not allowed", (st, body)
            st, h, body = refused(srv.port, path, headers=hdrs)
            assert st == 401, (st, body)
        ws = {"Upgrade": "websocket", "Connection": "Upgrade",
              "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
        st, _, _ = http_call(srv.port, "GET", "/ws?groups=a&since=a:1&epoch=e",
                             headers=dict(ws, Origin="https://evil.example"))
        assert st == 403
        st, _, _ = http_call(srv.port, "GET", "/ws?groups=a&since=a:1&epoch=e", headers=ws)
        assert st == 401
        tok = make_jwt("s3cret", {"exp": int(time.time()) + 60, "groups": ["a"]})
        s = SSEStream(srv.port, "/sse?groups=a&since=a:1&epoch=e", [("Authorization", f"Bearer {tok}")])
        assert s.status == 200 and s.read_until_eof() == [] and s.raw.endswith(b"retry: 1000\n\n")
        s.close()
        st, h, _ = http_call(srv.port, "GET", f"/ws?groups=a&since=a:1&epoch=e&token={tok}", headers=ws)
        assert st == 503 and h["Retry-After"] == "1"
    finally:
        silent.close()


from test_tls import certs, tls_herald  # noqa: E402,F401  (fixtures: a TLS herald)


def test_sse_over_tls(tls_herald):
    srv = tls_herald("--history", "10")
    s = open_stream(srv.port, "/sse?groups=t,u&format=json", ssl_ctx=srv.ctx)
    for i in range(3):
        srv.publish(f"m{i}", group="t")
    assert [json.loads(e["data"])["data"] for e in s.events(3)] == ["m0", "m1", "m2"]
    last = s.last_id
    s.close()
    srv.publish("m3", group="t")
    r = open_stream(srv.port, "/sse?groups=t,u&format=json", headers=[("Last-Event-ID", last)],
                    ssl_ctx=srv.ctx)
    assert [json.loads(e["data"])["data"] for e in r.events(1)] == ["m3"]
    m = srv.metrics()
    assert m['herald_deliveries_by_transport_total{transport="sse"}'] == 4
    assert m['herald_deliveries_by_transport_total{transport="wss"}'] == 0
    r.close()
