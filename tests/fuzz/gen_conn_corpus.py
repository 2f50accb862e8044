#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_conn under tests/fuzz/corpus/conn/.

The files are committed; rerun this only to change the seeds. The input
format is described at the top of fuzz_conn.c: segment 0 is a flags byte and
a script of two-byte ops, then one segment per client stream, each after the
separator "\\n~~~\\n".
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import zlib

sys.dont_write_bytecode = True  # no __pycache__ next to the sources
from gen_corpus import close, frame  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SEP = b"\n~~~\n"
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
EPOCH = b"00000000000000e1"  # fuzz_conn fixes the epoch

# flags: configuration (0 base, 1 drop-oldest/timers/per-IP, 2 auth, 3 tight),
# small socket buffers, peer address mode
SMALL = 4
SAME_IP, IP_EACH, IPV6_64, MAPPED = 0, 1 << 3, 2 << 3, 3 << 3
TLS, RAW_LAST, TLS12 = 0x20, 0x40, 0x80

WRITE, READ, PASS, TIME, SHUT, CLOSE, STOP, SYNC, KEYUPDATE, RAW, RELOAD = range(11)
PRESSURE = 4  # RELOAD arg: configurations 4-7 are 0-3 with --max-memory 1k
THEN_PASS = 0x20
# fuzz_conn's fz_time_ms indices
T_100MS, T_1S, T_2S, T_5S, T_10S, T_15S, T_25S, T_30S, T_60S, T_2MIN = 2, 4, 5, 6, 7, 8, 9, 10, 11, 15


def op(kind, slot=0, arg=0, then_pass=False):
    return bytes([slot | (kind & 7) << 2 | (kind & 8) << 3 | (THEN_PASS if then_pass else 0),
                  arg])


def send(slot, n, then_pass=True):
    """WRITE ops for exactly n bytes (0: the rest of the stream)."""
    if n == 0:
        return op(WRITE, slot, 0, then_pass)
    out = b""
    while n > 0:
        if n <= 192:
            k, arg = n, n
        else:
            arg = min(255, 192 + n // 64)
            k = (arg - 192) * 64
        out += op(WRITE, slot, arg, then_pass)
        n -= k
    return out


def sync(rounds=8):
    return op(SYNC, 0, rounds - 1)


def passes(n=1):
    return op(PASS, 0, n - 1)


def seed(flags, ops, *streams):
    data = bytes([flags]) + b"".join(ops)
    assert SEP not in data, "the script must not contain the separator"
    for s in streams:
        assert SEP not in s
        data += SEP + s
    return data


def upgrade(target, extra=b""):
    return (b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY +
            b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n")


def post(target, body, ctype=b"text/plain", extra=b""):
    return (b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Type: " + ctype +
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def get(path, extra=b"", method=b"GET", version=b"1.1"):
    return method + b" " + path + b" HTTP/" + version + b"\r\nHost: x\r\n" + extra + b"\r\n"


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def jwt(claims, secret=b"s3cret"):
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = hmac.new(secret, head + b"." + body, hashlib.sha256).digest()
    return head + b"." + body + b"." + b64url(sig)


def seeds():
    s = {}
    # Subscriber (JSON envelopes, recovery from history) and HTTP publishers;
    # a late subscriber replays from the history, another has the wrong epoch.
    pubs = b"".join(post(b"/publish?group=news", b"hello %d" % i) for i in range(3))
    s["sub_json_since"] = seed(
        0, [send(0, 0), sync(), send(1, 0), sync(), send(2, 0), send(3, 0), sync()],
        upgrade(b"/ws?groups=news,sport&format=json&since=news:0&epoch=" + EPOCH),
        pubs + post(b"/publish?group=sport", b"\x00\x01bin", b"application/octet-stream"),
        upgrade(b"/ws?groups=news&since=news:1&epoch=" + EPOCH + b"&format=msgpack"),
        upgrade(b"/ws?groups=news&since=news:2&epoch=ffffffffffffffff"))
    # Issue 8 item 7: the upgrade, a fragmented text, a ping, a binary and a
    # close in one write; then the same bytes one at a time.
    pub = (upgrade(b"/publish?group=g") + frame(0x1, b"frag-", fin=False) + frame(0x9, b"p1") +
           frame(0x0, b"ment") + frame(0x2, bytes(range(40))) + frame(0x9, b"p2") +
           close(1000, b"done"))
    s["pub_pipelined_close"] = seed(0, [send(0, 0), sync(), send(1, 0), sync()],
                                    upgrade(b"/ws?groups=g"), pub)
    s["pub_byte_splits"] = seed(SMALL, [send(0, 0), sync()] +
                                [op(WRITE, 1, 1, True) for _ in range(len(pub))] + [sync()],
                                upgrade(b"/ws?groups=g"), pub)
    # A broadcast publisher (no group) and a subscriber of nothing (gets all).
    s["broadcast_msgpack"] = seed(
        IP_EACH, [send(0, 0), send(1, 0), sync(), op(READ, 0, 0), sync()],
        upgrade(b"/ws?format=msgpack"),
        upgrade(b"/publish") + frame(0x1, "κόσμε".encode()) + frame(0x2, b"\xff" * 130) +
        frame(0xA, b"unsolicited") + close(1001))
    # Pipelined GETs, HEAD, HTTP/1.0, Connection: close; read back slowly.
    pipe = (get(b"/healthz") * 3 + get(b"/metrics") * 2 + get(b"/stats", method=b"HEAD") +
            get(b"/") + get(b"/index.html", method=b"HEAD") + get(b"/stats") +
            get(b"/healthz", version=b"1.0") + get(b"/healthz", b"Connection: close\r\n"))
    s["pipelined_gets"] = seed(SMALL, [send(0, 0), passes(4)] +
                               [op(READ, 0, 200, True) for _ in range(12)] + [sync()], pipe)
    s["pipelined_metrics_flood"] = seed(SMALL, [send(0, 0), passes(8), op(TIME, 0, T_5S),
                                                op(READ, 0, 255, True), op(TIME, 0, T_10S),
                                                sync(16)],
                                        get(b"/metrics") * 100)
    # POST bodies: split, Expect: 100-continue, binary, bad UTF-8, framing
    # refusals (TE, CL+TE, duplicate CL, body on GET), then a 404 and a 405.
    s["post_bodies"] = seed(0, [send(0, 60), send(0, 7), send(0, 1), send(0, 0), sync(16)],
                            post(b"/publish?group=a", b"split body", b"text/plain; charset=utf-8",
                                 b"Expect: 100-continue\r\n") +
                            post(b"/publish", b"\x80\x81", b"application/octet-stream") +
                            post(b"/publish?group=a", b"{\"k\":1}", b"application/json") +
                            post(b"/publish?group=a", b"", b"text/plain") +
                            post(b"/publish?group=bad%20name", b"x") +
                            post(b"/publish?group=a", b"\xc3\x28", b"text/plain"))
    s["post_refusals"] = seed(IP_EACH, [send(0, 0), send(1, 0), send(2, 0), send(3, 0), sync()],
                              b"POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                              b"\r\n5\r\nhello\r\n0\r\n\r\n",
                              b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                              b"Content-Length: 6\r\n\r\nhello!",
                              get(b"/healthz", b"Content-Length: 38\r\n") +
                              post(b"/publish?group=smuggled", b"x"),
                              get(b"/nope") + get(b"/ws", method=b"POST") +
                              get(b"/publish", method=b"PUT") +
                              b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n")
    # Subscribers sending frames: pings, pong, text, a too-big message,
    # then protocol errors on other connections.
    s["sub_frames_errors"] = seed(
        IP_EACH, [send(0, 0), send(1, 0), send(2, 0), send(3, 0), sync()],
        upgrade(b"/ws?groups=a") + frame(0x9, b"x" * 125) + frame(0xA) + frame(0x1, b"hi") +
        frame(0x2, b"y" * 5000),
        upgrade(b"/ws?groups=a") + frame(0x1, b"unmasked", mask=None),
        upgrade(b"/ws?groups=a") + frame(0x1, b"x", rsv=0x40) + frame(0x9, b"late"),
        upgrade(b"/ws?groups=a") + frame(0x1, b"\xce\xba\xff") + close(1005))
    s["pub_errors"] = seed(
        3, [send(0, 0), send(1, 0), send(2, 0), sync()],
        upgrade(b"/publish?group=t") + frame(0x1, b"a" * 40, fin=False) + frame(0x0, b"b" * 40),
        upgrade(b"/publish?group=t") + frame(0x9, b"p", fin=False) + frame(0x1, b"x"),
        upgrade(b"/publish?group=t") + frame(0x0, b"orphan") + close(999))
    # Slow consumers: a subscriber that never reads while a publisher floods
    # (close policy, then drop-oldest).
    flood = upgrade(b"/publish?group=a") + b"".join(frame(0x2, bytes([i]) * 60) for i in range(40))
    s["slow_consumer_close"] = seed(3 | SMALL | IP_EACH,
                                    [send(0, 0), passes(2), op(READ, 0, 200), send(1, 0),
                                     passes(8), op(READ, 1, 0), passes(8), sync()],
                                    upgrade(b"/ws?groups=a"), flood)
    s["slow_consumer_drop"] = seed(1 | SMALL | IP_EACH,
                                   [send(0, 0), passes(2), op(READ, 0, 200), send(1, 0),
                                    passes(8), op(READ, 1, 0), op(READ, 0, 100, True), sync()],
                                   upgrade(b"/ws?groups=a&format=json"), flood)
    # A publisher that pings and never reads its pongs (issue 8 item 1).
    s["ping_flood"] = seed(SMALL, [send(0, 0), passes(2)] +
                           [op(WRITE, 0, 255, True) for _ in range(8)] +
                           [passes(8), op(READ, 0, 64), sync()],
                           upgrade(b"/publish?group=p") + frame(0x9, b"z" * 125) * 20 +
                           frame(0x9) * 200)
    # Authentication: publish keys, JWT (query and header), origins, accept rate.
    tok = jwt({"exp": 4102444800, "groups": ["news", "live.*"]})
    s["auth"] = seed(
        2 | IP_EACH, [send(0, 0), send(1, 0), sync(), send(2, 0), send(3, 0), sync()],
        upgrade(b"/ws?groups=news,live.x&token=" + tok, b"Origin: https://a.example\r\n"),
        upgrade(b"/publish?group=news", b"Authorization: Bearer k2\r\n") +
        frame(0x1, b"authorized") + close(1000),
        post(b"/publish?group=news", b"nokey") +
        upgrade(b"/ws?groups=other", b"Authorization: Bearer " + tok + b"\r\n"),
        upgrade(b"/ws?groups=news", b"Origin: https://evil.example\r\n") +
        post(b"/publish", b"k", extra=b"Authorization: Bearer k1\r\n"))
    # Timers: pings and idle timeout, header and body deadlines, write timeout.
    s["timers_idle_ping"] = seed(1, [send(0, 0), sync(), op(TIME, 0, T_1S), op(TIME, 0, T_100MS),
                                     op(READ, 0, 0), op(TIME, 0, T_2S), op(TIME, 0, T_2S), sync()],
                                 upgrade(b"/ws?groups=idle"))
    s["timers_slowloris"] = seed(3 | IP_EACH,
                                 [send(0, 10), op(TIME, 0, T_100MS), send(0, 5),
                                  op(TIME, 0, T_2S), send(1, 80), op(TIME, 0, T_2S),
                                  send(2, 3), op(TIME, 0, T_60S), sync()],
                                 get(b"/healthz"),
                                 post(b"/publish?group=s", b"slow body ..."),
                                 get(b"/metrics"))
    s["write_timeout"] = seed(1 | SMALL, [send(0, 0), passes(4), op(TIME, 0, T_2S), sync()],
                              get(b"/metrics") * 30)
    # Shutdown: drain with 1012 over the window, and an immediate 1001.
    s["stop_drain"] = seed(IP_EACH, [send(0, 0), send(1, 0), send(2, 0), sync(),
                                     op(STOP, 0, 1), passes(2), op(TIME, 0, T_1S),
                                     op(READ, 0, 0), op(TIME, 0, T_2S), sync()],
                           upgrade(b"/ws?groups=a,b"), upgrade(b"/publish?group=a"),
                           get(b"/healthz"))
    s["stop_now"] = seed(0, [send(0, 0), send(1, 0), sync(), op(STOP, 0, 0), sync()],
                         upgrade(b"/ws?groups=a"), upgrade(b"/publish") + frame(0x1, b"bye"))
    # Per-IP limit (2 in configuration 1): the third connection gets 429.
    s["per_ip_limit"] = seed(1 | IPV6_64, [send(0, 0), send(1, 0), send(2, 0), sync()],
                             get(b"/healthz"), get(b"/healthz"), get(b"/healthz"))
    # Clients leaving: half-close mid-head, close with data queued.
    s["client_leaves"] = seed(SMALL | MAPPED,
                              [send(0, 20), op(SHUT, 0, 0, True), send(1, 0), passes(2),
                               send(2, 0), passes(4), op(CLOSE, 2, 0, True), op(CLOSE, 1, 0),
                               sync()],
                              get(b"/stats"), upgrade(b"/ws?groups=q"),
                              get(b"/metrics") * 20)
    # Bad heads: too large (431 in configuration 3), HTTP/2.0, garbage,
    # bad groups and since lists, bad handshakes.
    s["bad_heads"] = seed(3 | IP_EACH, [send(0, 0), send(1, 0), send(2, 0), send(3, 0), sync()],
                          get(b"/", b"X-Pad: " + b"p" * 300 + b"\r\n"),
                          b"GET / HTTP/2.0\r\n\r\n" + b"\x16\x03\x01garbage\r\n\r\n",
                          upgrade(b"/ws?groups=a,b,c") + upgrade(b"/ws?groups=a&since=b:1"),
                          get(b"/ws?groups=a", b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                               b"Sec-WebSocket-Version: 8\r\n"))
    s["bad_queries"] = seed(IP_EACH, [send(0, 0), send(1, 0), send(2, 0), send(3, 0), sync()],
                            upgrade(b"/ws?groups=a%2"),
                            upgrade(b"/ws?groups=ok&format=xml"),
                            upgrade(b"/ws?groups=a&since=a:99999999999999999999&epoch=" + EPOCH),
                            upgrade(b"/ws?groups=a&since=a:5&epoch=" + EPOCH) +
                            frame(0x8, b"\x03\xe8" + b"r" * 123))
    # Live-group cap (3 in configuration 3) and the group sweep (configuration 1).
    s["live_groups_cap"] = seed(3 | IP_EACH, [send(0, 0), sync(), send(1, 0), sync()],
                                b"".join(post(b"/publish?group=g%d" % i, b"x") for i in range(5)),
                                upgrade(b"/ws?groups=g0,g9"))
    s["group_sweep"] = seed(1, [send(0, 0), sync(), op(TIME, 0, T_2S), passes(2),
                                op(TIME, 0, T_2S), send(1, 0), sync()],
                            post(b"/publish?group=old", b"1") + post(b"/publish?group=old", b"2"),
                            upgrade(b"/ws?groups=old&since=old:0&epoch=" + EPOCH))
    # TLS: the same machine under TLS 1.3 and 1.2, KeyUpdate requests from a
    # client that never reads (issue 8 item 5), plaintext at the TLS port, and
    # garbage injected into a session.
    s["tls_sub_pub"] = seed(TLS | IP_EACH, [send(0, 0), sync(), send(1, 0), sync(), send(2, 0),
                                            sync()],
                            upgrade(b"/ws?groups=t&format=json"),
                            upgrade(b"/publish?group=t") + frame(0x1, b"over tls") +
                            frame(0x9, b"ping") + frame(0x2, b"\x00" * 300) + close(1000),
                            get(b"/healthz") + get(b"/stats", method=b"HEAD") + get(b"/metrics"))
    s["tls_keyupdate_flood"] = seed(TLS | SMALL, [send(0, 0), sync()] +
                                    [op(KEYUPDATE, 0, 1, True) for _ in range(40)] +
                                    [passes(4), op(READ, 0, 100), sync()],
                                    upgrade(b"/publish?group=k"))
    s["tls12_pipelined"] = seed(TLS | TLS12 | SMALL, [send(0, 0), passes(4)] +
                                [op(READ, 0, 150, True) for _ in range(10)] + [sync()],
                                get(b"/metrics") * 4 + get(b"/") + get(b"/healthz"))
    s["tls_raw_last"] = seed(TLS | RAW_LAST | IP_EACH, [send(3, 0), send(0, 0), sync()],
                             upgrade(b"/ws?groups=x"), b"", b"", get(b"/healthz"))
    up = upgrade(b"/ws?groups=r")
    s["tls_raw_inject"] = seed(TLS | IP_EACH,
                               [send(0, len(up)), send(1, 0), sync(), op(RAW, 0, 10), sync(),
                                op(SHUT, 1, 0), sync()],
                               up + b"\x16\x03\x03\x00\x05hello" + frame(0x1, b"after"),
                               upgrade(b"/ws?groups=r"))
    # Reloads (SIGHUP) mid-connection: tighter limits under a publisher that is
    # assembling a message and a subscriber with history, then memory
    # pressure (new WebSockets refused, history given up, /healthz degraded).
    s["reload_limits"] = seed(IP_EACH, [send(0, 0), send(1, 230), sync(), op(RELOAD, 0, 3),
                                        passes(2), send(1, 0), sync(), op(RELOAD, 0, 1),
                                        send(2, 0), sync()],
                              upgrade(b"/ws?groups=r&since=r:0&epoch=" + EPOCH),
                              upgrade(b"/publish?group=r") + frame(0x1, b"m" * 100, fin=False) +
                              frame(0x0, b"n" * 100) + frame(0x1, b"short"),
                              post(b"/publish?group=r", b"after reload") +
                              get(b"/healthz"))
    s["reload_pressure"] = seed(IP_EACH, [send(0, 0), send(1, 0), sync(),
                                          op(RELOAD, 0, PRESSURE), op(TIME, 0, T_100MS),
                                          send(2, 0), sync(), op(RELOAD, 0, 0),
                                          op(TIME, 0, T_100MS), send(3, 0), sync()],
                                upgrade(b"/ws?groups=p"),
                                b"".join(post(b"/publish?group=p", b"x" * 900) for _ in range(4)),
                                upgrade(b"/ws?groups=p&since=p:0&epoch=" + EPOCH) +
                                get(b"/healthz"),
                                upgrade(b"/ws?groups=p&since=p:2&epoch=" + EPOCH))
    # Server-Sent Events (issue 12): streams of two groups (private id lines) and of one
    # (shared events), text with line breaks, binary, a broadcast; Last-Event-ID resumes,
    # a malformed one, POST and OPTIONS; then a stream that never reads (slow policy).
    sse_pubs = (post(b"/publish?group=a", b"l1\nl2\r\nl3") +
                post(b"/publish?group=b", b"\x00\xff", b"application/octet-stream") +
                post(b"/publish", b"to all") + post(b"/publish?group=a", b""))
    s["sse_events"] = seed(
        IP_EACH, [send(0, 0), send(1, 0), sync(), send(2, 0), sync(), op(TIME, 0, T_1S),
                  send(3, 0), sync(), op(STOP, 0, 1), sync()],
        get(b"/sse?groups=a,b,a"),
        get(b"/sse?groups=a&format=json", b"Origin: https://x.example\r\n"),
        sse_pubs,
        get(b"/sse?groups=a,b", b"Last-Event-ID: " + EPOCH + b"/1,\r\n") +
        get(b"/sse?groups=a,b", b"Last-Event-ID: " + EPOCH + b"/1\r\n"))
    s["sse_requests"] = seed(
        0, [send(0, 0), sync(), send(1, 0), sync(), send(2, 0), sync()],
        get(b"/sse?groups=a", method=b"POST") ,
        get(b"/sse?groups=a", b"Origin: https://x.example\r\n", method=b"OPTIONS") +
        get(b"/sse?groups=a&format=msgpack"),
        get(b"/sse?groups=a&since=a:0&epoch=" + EPOCH, b"Last-Event-ID: x/\r\n") +
        get(b"/sse", b"Last-Event-ID: " + EPOCH + b"/\r\n"))
    s["sse_slow"] = seed(
        SMALL | 1, [send(0, 0), sync(), send(1, 0), passes(4), op(TIME, 0, T_2S), send(2, 0),
                    passes(2), op(READ, 0, 0), sync()],
        get(b"/sse?groups=s,t"),
        b"".join(post(b"/publish?group=s", b"y" * 900) for _ in range(8)),
        get(b"/sse?groups=s", b"Last-Event-ID: " + EPOCH + b"/2\r\n"))
    # permessage-deflate: subscribers with and without the extension (raw and
    # JSON), a publisher sending compressed messages (fragmented text with
    # context takeover, binary, an empty one, then RSV1 on a ping: 1002), an
    # HTTP publish big enough to be compressed; and a bomb (2 MiB of zeros)
    # from a publisher and from a subscriber.
    ext = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    z1 = (c.compress(b'{"id":1,"title":"order shipped"}' * 8) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
    z2 = (c.compress(bytes(range(256)) * 2) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
    zpub = (upgrade(b"/publish?group=z", ext) + frame(0x1, z1[:7], fin=False, rsv=0x40) +
            frame(0x0, z1[7:]) + frame(0x2, z2, rsv=0x40) + frame(0x1, b"", rsv=0x40) +
            frame(0x9, b"p", rsv=0x40))
    s["deflate_pub_sub"] = seed(
        0, [send(0, 0), send(1, 0), send(2, 0), sync(), send(3, 0), sync(), send(4, 0), sync(),
            op(READ, 0, 0), op(READ, 1, 0), sync()],
        upgrade(b"/ws?groups=z", ext), upgrade(b"/ws?groups=z&format=json", ext),
        upgrade(b"/ws?groups=z"), zpub,
        post(b"/publish?group=z", b'{"id":2,"title":"payment received"}' * 20, b"application/json"))
    b = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = (b.compress(bytes(2 << 20)) + b.flush(zlib.Z_SYNC_FLUSH))[:-4]
    s["deflate_bombs"] = seed(
        0, [send(0, 0), send(1, 0), sync(16)],
        upgrade(b"/publish?group=b", ext) + frame(0x2, bomb, rsv=0x40),
        upgrade(b"/ws?groups=b", ext) + frame(0x2, bomb, rsv=0x40))
    # Both transports on one group: deflate WebSocket subscribers (JSON, msgpack) beside an
    # SSE stream of one group (shared events with their id: the highest format), one
    # compressible JSON publish: plain, compressed and SSE frames in one fan-out.
    s["sse_and_deflate"] = seed(
        0, [send(0, 0), send(1, 0), send(2, 0), sync(), send(3, 0), sync(), op(READ, 0, 0),
            op(READ, 1, 0), sync()],
        upgrade(b"/ws?groups=m&format=json", ext), get(b"/sse?groups=m&format=json"),
        upgrade(b"/ws?groups=m&format=msgpack", ext),
        post(b"/publish?group=m", b'{"id":3,"title":"parcel delivered"}' * 20, b"application/json"))
    return s


def main():
    d = os.path.join(HERE, "corpus", "conn")
    os.makedirs(d, exist_ok=True)
    for name, data in seeds().items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
