#!/usr/bin/python3
"""herald soak run (`make soak`, issues 8 and 13): minutes of mixed normal and hostile load against the
ASan build, then three verdicts: RSS flat after warm-up, zero loss for normal subscribers, no
sanitizer report (and a clean exit on SIGTERM).

Processes (all on 127.0.0.1, every load bounded and self-stopping at the deadline):
  main    starts two herald processes (plain, and TLS on a second listener: herald's TLS listener
          serves https/wss only), samples their VmRSS and /metrics every 5 s, collects the results
          of the two load processes, stops the servers, prints the summary and the verdict.
  normal  (a) 200 plain + 20 TLS subscribers (format=json) on 20 + 4 groups, two HTTP keep-alive
          publishers, one WebSocket publisher per group, broadcasts, an https and a wss publisher:
          ~225 msg/s. Every subscriber checks every message of its groups (and the broadcasts):
          offsets consecutive, each publisher's sequence consecutive, same bytes at the same offset
          for every subscriber. Publishing stops at the deadline, then the subscribers must catch
          up: lost = published - received.
  chaos   (b) churn: short-lived subscribers (some recovering with since=), a publisher that
          names a new group ~200 times a second (group reclamation), replays and offset checks on
          those groups; (c) hostile: ping floods that never read, slow readers, pipelined
          GET /metrics that is never read, slowloris heads and bodies, bad frames, garbage, abrupt
          RSTs, idle sockets, and on the TLS listener: stalled handshakes, partial ClientHellos,
          handshakes that then say nothing, wss subscribers that never read, pipelined https.

The driver and the servers share two cores: the load generators use asyncio and raw frames (no
per-message coroutine), rates are paced, floods are pre-built chunks and block on TCP back-pressure
instead of spinning.

Verdict windows: warm-up = the first fifth (at least 40 s), reference = the next fifth, tail = the
last half; RSS passes when max(tail) <= max(reference) + max(10 %, 8 MiB) (see RSS_MARGIN_MIN_KB).

usage: soak.py [--seconds N (SOAK_SECONDS, 600)] [--bin PATH (build-asan/herald)]
               [--seed N (SOAK_SEED, random; printed)] [extra herald args...]
"""

import argparse
import asyncio
import base64
import collections
import json
import os
import random
import re
import resource
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

from herald_helpers import (HOST, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,  # noqa: E402
                            accept_for, build_frame, close_payload, parse_prometheus, parse_server_frame, take_frames,
                            ws_request_bytes)

NORMAL_GROUPS = [f"soak.g{i:02d}" for i in range(20)]
TLS_GROUPS = [f"soak.t{i}" for i in range(4)]
SERVER_ARGS = ["--history", "50", "--history-ttl", "30", "--group-linger", "5"]
# ASan keeps freed blocks in a quarantine (256 MB by default): the RSS would then measure the
# quarantine filling up, not what herald holds on to. 8 MB as in tests/integration/test_slow.py:
# a use-after-free is still caught while the block is among the last 8 MB freed.
ASAN_EXTRA = "quarantine_size_mb=8"

SAMPLE_EVERY = 5.0
DRAIN_SECONDS = 30.0          # after publishing stops: time the subscribers get to catch up
# RSS verdict: after the warm-up (first fifth), the max over the last half must not exceed the max
# over the second fifth by more than max(10 %, 8 MiB). Why that much: the ASan allocator keeps most
# freed memory mapped, so RSS follows the high-water mark of the live set, and the live set
# legitimately moves with the random hostile mix: a slow reader may pin up to --queue-limit = 4 MiB
# of frames before it is closed (four run at once, often overlapping), 8 MB of quarantine refills,
# and history plus group records of the distinct-group traffic breathe with --history-ttl. Over
# 5 s samples that is a band of ~5-7 MiB (see the curve in the summary), so 8 MiB; 10 % only
# matters above 80 MiB. Sensitivity of the default run (~6 minutes from the reference window to
# the end): a leak of ~600 B per accepted connection (~40/s), ~60 B per published message (~400/s)
# or ~120 B per distinct group (200/s) grows past 8 MiB.
RSS_MARGIN_FRACTION = 0.10
RSS_MARGIN_MIN_KB = 8 * 1024
MIN_WARMUP = 40.0

MiB = 1024 * 1024


def wall():
    return time.time()


def mono():
    return time.monotonic()


# ==========================================================================================
# message bodies: "P|<publisher>|<group or *>|<seq>|<wall time>|<padding>"
# ==========================================================================================

_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.;-_\"\\/{}" \
            "\u00e9\u00fc\u20ac\u4e2d\U0001f600\n\t"


def make_pads(rng):
    sizes = [0, 1, 7, 30, 60, 100, 200, 300, 500, 700, 1000, 1400, 2000, 4000, 9000]
    text = [("".join(rng.choice(_ALPHABET) for _ in range(n))).encode() for n in sizes]
    text.append(("x" * 65536).encode())
    binary = [rng.randbytes(n) for n in sizes] + [rng.randbytes(65536)]
    return text, binary


def body_for(rng, pads, pub, group, seq, binary):
    text_pads, bin_pads = pads
    r = rng.random()
    if r < 0.005:
        pad = (bin_pads if binary else text_pads)[-1]          # 64 KiB now and then
    else:
        pad = rng.choice((bin_pads if binary else text_pads)[:-1])
    return b"P|%s|%s|%d|%.6f|" % (pub.encode(), (group or "*").encode(), seq, wall()) + pad


# ==========================================================================================
# normal load
# ==========================================================================================

class NormalState:
    def __init__(self):
        self.errors = collections.Counter()
        self.samples = []
        self.crc = {}                        # (group, offset) -> crc of the payload
        self.published = collections.Counter()   # (pub, group) -> messages accepted
        self.published_by = collections.Counter()
        self.pub_server = {}                     # publisher -> "plain" | "tls" (broadcasts stay on one server)
        self.deliveries = 0
        self.skipped = 0                         # messages jumped over by a later sequence number
        self.slow = []                           # worst latencies above 1 s: (s, t, sub, group, pub, seq, size)
        self.t0 = wall()
        self.lat_hist = collections.Counter()    # latency in ms -> count
        self.lag_events = 0
        self.stopping = False

    def error(self, kind, detail):
        self.errors[kind] += 1
        if len(self.samples) < 30:
            self.samples.append(f"{kind}: {detail}")


class SubProto(asyncio.Protocol):
    """A subscriber that checks every message (format=json envelopes)."""

    def __init__(self, st, name, groups, host_hdr, server):
        self.st = st
        self.name = name
        self.server = server
        self.groups = set(groups)
        self.path = "/ws?groups=" + ",".join(groups) + "&format=json"
        self.host_hdr = host_hdr
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.buf = bytearray()
        self.upgraded = False
        self.loop = asyncio.get_running_loop()
        self.ready = self.loop.create_future()
        self.done = self.loop.create_future()
        self.transport = None
        self.last_off = {}
        self.last_seq = {}
        self.received = 0
        self.epoch = None
        self.frag = None
        self.closing = False
        self.close_code = None

    # -- plumbing
    def connection_made(self, transport):
        self.transport = transport
        transport.write(ws_request_bytes(path=self.path, host=self.host_hdr, key=self.key))

    def connection_lost(self, exc):
        if not self.closing:
            self.st.error("disconnected", f"{self.name}: connection lost ({exc or 'EOF'}), close code "
                          f"{self.close_code}, after {self.received} messages")
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"{self.name}: closed during the handshake"))
        if not self.done.done():
            self.done.set_result(True)

    def data_received(self, data):
        self.buf += data
        if not self.upgraded:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = bytes(self.buf[:i]).decode("latin-1")
            del self.buf[:i + 4]
            lines = head.split("\r\n")
            ok = lines[0].startswith("HTTP/1.1 101")
            accept = [ln.split(":", 1)[1].strip() for ln in lines[1:]
                      if ln.lower().startswith("sec-websocket-accept:")]
            if not ok or accept != [accept_for(self.key)]:
                self.ready.set_exception(ConnectionError(f"{self.name}: handshake answered {lines[0]!r}"))
                self.closing = True
                self.transport.abort()
                return
            self.upgraded = True
            self.ready.set_result(True)
        while True:
            try:
                f, used = parse_server_frame(self.buf)
            except AssertionError as e:
                self.st.error("bad_server_frame", f"{self.name}: {e}")
                self.transport.abort()
                return
            if f is None:
                return
            del self.buf[:used]
            self.on_frame(f)

    def on_frame(self, f):
        op = f.opcode
        if op == OP_PING:
            self.transport.write(build_frame(OP_PONG, f.payload))
        elif op == OP_PONG:
            pass
        elif op == OP_CLOSE:
            self.close_code = f.close_code
            if not self.closing:
                self.st.error("server_close", f"{self.name}: close {f.close_code} {f.close_reason!r}")
                self.closing = True
                self.transport.write(build_frame(OP_CLOSE, f.payload[:2]))
            self.transport.close()
        elif op in (OP_TEXT, OP_BINARY):
            if self.frag is not None:
                self.st.error("bad_server_frame", f"{self.name}: new message inside a fragmented one")
            if f.fin:
                self.on_message(op, f.payload)
            else:
                self.frag = (op, [f.payload])
        elif op == OP_CONT:
            if self.frag is None:
                self.st.error("bad_server_frame", f"{self.name}: continuation without a start")
                return
            self.frag[1].append(f.payload)
            if f.fin:
                op0, parts = self.frag
                self.frag = None
                self.on_message(op0, b"".join(parts))

    # -- the checks
    def on_message(self, op, payload):
        st = self.st
        if op != OP_TEXT:
            st.error("format", f"{self.name}: binary frame with format=json")
            return
        try:
            env = json.loads(payload)
            g, off, ep, data = env["group"], env["offset"], env["epoch"], env["data"]
        except (ValueError, KeyError, TypeError) as e:
            st.error("format", f"{self.name}: not an envelope ({e}): {payload[:100]!r}")
            return
        if self.epoch is None:
            self.epoch = ep
        elif ep != self.epoch:
            st.error("epoch", f"{self.name}: epoch {ep} after {self.epoch}")
        raw = base64.b64decode(data) if env.get("binary") else data.encode("utf-8", "surrogatepass")
        if g is not None and g not in self.groups:
            st.error("foreign_group", f"{self.name}: message for {g}")
            return
        lo = self.last_off.get(g)
        if lo is not None and off != lo + 1:
            st.error("duplicate_or_reorder" if off <= lo else "offset_gap",
                     f"{self.name}: group {g} offset {off} after {lo}")
        self.last_off[g] = off
        parts = raw.split(b"|", 5)
        try:
            pub, bgroup, seq, t = parts[1].decode(), parts[2].decode(), int(parts[3]), float(parts[4])
        except (IndexError, ValueError):
            st.error("foreign_payload", f"{self.name}: group {g} offset {off}: not from a normal publisher: "
                     f"{raw[:80]!r}")
            return
        if bgroup != (g or "*"):
            st.error("payload", f"{self.name}: payload for {bgroup} delivered as {g}")
        pk = (pub, g)
        ls = self.last_seq.get(pk, 0)
        if seq != ls + 1:
            st.error("duplicate_or_reorder" if seq <= ls else "lost",
                     f"{self.name}: {pub}->{g} seq {seq} after {ls}")
            if seq > ls + 1:
                st.skipped += seq - ls - 1
        if seq > ls:
            self.last_seq[pk] = seq
        c = zlib.crc32(raw)
        prev = st.crc.setdefault((g, off), c)
        if prev != c:
            st.error("payload_mismatch", f"{self.name}: group {g} offset {off} differs between subscribers")
        self.received += 1
        st.deliveries += 1
        now = wall()
        lat = max(0.0, now - t)
        st.lat_hist[int(lat * 1000)] += 1
        if lat > 1.0:
            st.slow.append((round(lat, 2), round(now - st.t0, 1), self.name, g, pub, seq, len(raw)))
            st.slow.sort(reverse=True)
            del st.slow[12:]

    def missing(self):
        """Messages published to this subscriber's groups (and broadcasts) not received yet."""
        n = 0
        for (pub, g), count in self.st.published.items():
            if (g is None and self.st.pub_server[pub] == self.server) or g in self.groups:
                n += max(0, count - self.last_seq.get((pub, g), 0))
        return n

    def expected(self):
        return sum(c for (pub, g), c in self.st.published.items()
                   if (g is None and self.st.pub_server[pub] == self.server) or g in self.groups)

    async def close(self):
        self.closing = True
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(build_frame(OP_CLOSE, close_payload(1000)))
        try:
            await asyncio.wait_for(asyncio.shield(self.done), 5)
        except asyncio.TimeoutError:
            self.transport.abort()


async def paced(st, rate, first):
    """Yields the time of each tick, `rate` per second from `first`, until the run stops. A
    driver more than a second late counts a lag event and skips ahead instead of bursting."""
    period, nxt = 1.0 / rate, first
    while not st.stopping:
        now = mono()
        if nxt > now:
            await asyncio.sleep(nxt - now)
            continue
        if now - nxt > 1.0:
            st.lag_events += 1
            nxt = now
        nxt += period
        yield now


async def read_http_response(reader, timeout):
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    cl = 0
    for ln in lines[1:]:
        if ln.lower().startswith("content-length:"):
            cl = int(ln.split(":", 1)[1])
    body = await asyncio.wait_for(reader.readexactly(cl), timeout) if cl else b""
    return status, body


class HttpPublisher:
    """POST /publish on one keep-alive connection, paced."""

    def __init__(self, st, rng, pads, name, port, groups, rate, ssl_ctx=None, broadcast_every=0.0,
                 binary_share=0.1):
        self.st, self.rng, self.pads = st, rng, pads
        self.name, self.port, self.groups, self.rate = name, port, groups, rate
        self.ssl_ctx = ssl_ctx
        st.pub_server[name] = "tls" if ssl_ctx else "plain"
        self.broadcast_every = broadcast_every
        self.binary_share = binary_share
        self.seq = collections.Counter()
        self.reader = self.writer = None

    async def connect(self):
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, self.port, ssl=self.ssl_ctx,
                                    server_hostname=HOST if self.ssl_ctx else None), 20)

    async def publish(self, group):
        seq = self.seq[group] + 1
        binary = self.rng.random() < self.binary_share
        body = body_for(self.rng, self.pads, self.name, group, seq, binary)
        ctype = "application/octet-stream" if binary else self.rng.choice(
            ["text/plain; charset=utf-8", "application/json", "text/plain"])
        path = "/publish" + (f"?group={group}" if group else "")
        req = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nContent-Type: {ctype}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        try:
            self.writer.write(req)
            await asyncio.wait_for(self.writer.drain(), 30)
            status, resp = await read_http_response(self.reader, 30)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ssl.SSLError) as e:
            self.st.error("publisher_dropped", f"{self.name}: keep-alive publish connection failed "
                          f"({type(e).__name__}: {e}); message {group}#{seq} may or may not be published")
            self.writer.close()
            await self.connect()
            return
        if status != 200:
            self.st.error("publish_refused", f"{self.name}: POST {path} -> {status} {resp[:100]!r}")
            return
        self.seq[group] = seq
        self.st.published[(self.name, group)] += 1
        self.st.published_by[self.name] += 1

    async def run(self):
        next_bc = mono() + self.broadcast_every if self.broadcast_every else None
        async for now in paced(self.st, self.rate, mono()):
            if next_bc is not None and now >= next_bc:
                next_bc += self.broadcast_every
                await self.publish(None)
            else:
                await self.publish(self.rng.choice(self.groups))
        self.writer.close()


class WsPublisher:
    """GET /publish?group=G (WebSocket), paced; masked text and binary frames, some fragmented."""

    def __init__(self, st, rng, pads, name, port, group, rate, ssl_ctx=None):
        self.st, self.rng, self.pads = st, rng, pads
        self.name, self.port, self.group, self.rate = name, port, group, rate
        self.ssl_ctx = ssl_ctx
        st.pub_server[name] = "tls" if ssl_ctx else "plain"
        self.seq = 0
        self.closing = False

    async def connect(self):
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, self.port, ssl=self.ssl_ctx,
                                    server_hostname=HOST if self.ssl_ctx else None), 20)
        key = base64.b64encode(os.urandom(16)).decode()
        path = "/publish" + (f"?group={self.group}" if self.group else "")
        self.writer.write(ws_request_bytes(path=path, host=f"{HOST}:{self.port}", key=key))
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 20)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"{self.name}: upgrade answered {head[:40]!r}")
        self.rtask = asyncio.create_task(self.read_loop())

    async def read_loop(self):
        buf = bytearray()
        try:
            while True:
                d = await self.reader.read(65536)
                if not d:
                    break
                buf += d
                for f in take_frames(buf):
                    if f.opcode == OP_PING:
                        self.writer.write(build_frame(OP_PONG, f.payload))
                    elif f.opcode == OP_CLOSE:
                        if not self.closing:
                            self.st.error("publisher_dropped", f"{self.name}: server closed the publisher "
                                          f"({f.close_code} {f.close_reason!r})")
                        return
                    elif f.opcode != OP_PONG:
                        self.st.error("publisher_got_data", f"{self.name}: {f!r}")
        except (OSError, AssertionError, ssl.SSLError) as e:
            if not self.closing:
                self.st.error("publisher_dropped", f"{self.name}: {type(e).__name__}: {e}")
            return
        if not self.closing:
            self.st.error("publisher_dropped", f"{self.name}: EOF")

    async def run(self):
        async for _ in paced(self.st, self.rate, mono() + self.rng.random() / self.rate):
            if self.rtask.done():
                break
            binary = self.rng.random() < 0.3
            seq = self.seq + 1
            body = body_for(self.rng, self.pads, self.name, self.group, seq, binary)
            op = OP_BINARY if binary else OP_TEXT
            if self.rng.random() < 0.1 and len(body) > 40:
                # fragmented, with a ping in the middle; cut between whole UTF-8 sequences is not
                # required: validity is checked on the whole message
                cut = self.rng.randrange(1, len(body))
                data = (build_frame(op, body[:cut], fin=False) + build_frame(OP_PING, b"mid") +
                        build_frame(OP_CONT, body[cut:]))
            else:
                data = build_frame(op, body)
            try:
                self.writer.write(data)
                await asyncio.wait_for(self.writer.drain(), 30)
            except (OSError, asyncio.TimeoutError, ssl.SSLError) as e:
                self.st.error("publisher_dropped", f"{self.name}: write failed ({type(e).__name__})")
                break
            self.seq = seq
            self.st.published[(self.name, self.group)] += 1
            self.st.published_by[self.name] += 1

    async def close(self):
        self.closing = True
        try:
            self.writer.write(build_frame(OP_CLOSE, close_payload(1000)))
            await asyncio.wait_for(self.rtask, 5)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            pass
        self.writer.close()


def percentile(hist, p):
    total = sum(hist.values())
    if not total:
        return None
    want = total * p
    acc = 0
    for ms in sorted(hist):
        acc += hist[ms]
        if acc >= want:
            return ms
    return max(hist)


async def normal_main(cfg):
    rng = random.Random(cfg["seed"])
    pads = make_pads(rng)
    st = NormalState()
    st.t0 = cfg["t_end"] - cfg["seconds"]
    loop = asyncio.get_running_loop()
    t_end = mono() + (cfg["t_end"] - wall())
    ctx = ssl.create_default_context(cafile=cfg["cafile"])
    port, tport = cfg["port"], cfg["tls_port"]

    subs = []
    for i in range(200):
        gs = [NORMAL_GROUPS[i % 20]]
        if i % 2:
            gs.append(NORMAL_GROUPS[(i * 7 + 3) % 20])
        subs.append(SubProto(st, f"sub{i}", sorted(set(gs)), f"{HOST}:{port}", "plain"))
    tls_subs = []
    for i in range(20):
        gs = sorted({TLS_GROUPS[i % 4], TLS_GROUPS[(i * 3 + 1) % 4]})
        tls_subs.append(SubProto(st, f"tls-sub{i}", gs, f"{HOST}:{tport}", "tls"))

    async def open_sub(s, tls):
        await loop.create_connection(lambda: s, HOST, tport if tls else port,
                                     ssl=ctx if tls else None, server_hostname=HOST if tls else None)
        await asyncio.wait_for(s.ready, 20)

    for k in range(0, len(subs), 20):
        await asyncio.gather(*(open_sub(s, False) for s in subs[k:k + 20]))
    await asyncio.gather(*(open_sub(s, True) for s in tls_subs))
    every = subs + tls_subs

    pubs = [HttpPublisher(st, rng, pads, "h0", port, NORMAL_GROUPS, 60, broadcast_every=1.0),
            HttpPublisher(st, rng, pads, "h1", port, NORMAL_GROUPS, 60, binary_share=0.2),
            HttpPublisher(st, rng, pads, "th", tport, TLS_GROUPS, 20, ssl_ctx=ctx)]
    wpubs = [WsPublisher(st, rng, pads, f"w{i:02d}", port, g, 4) for i, g in enumerate(NORMAL_GROUPS)]
    wpubs.append(WsPublisher(st, rng, pads, "wb", port, None, 0.5))
    wpubs.append(WsPublisher(st, rng, pads, "tw", tport, TLS_GROUPS[0], 5, ssl_ctx=ctx))
    for p in pubs:
        await p.connect()
    for p in wpubs:
        await p.connect()
    t_start = mono()
    tasks = [asyncio.create_task(p.run()) for p in pubs + wpubs]
    while mono() < t_end and not all(t.done() for t in tasks):
        await asyncio.sleep(min(1.0, max(0.0, t_end - mono())))
    st.stopping = True
    t_stop = mono()
    await asyncio.gather(*tasks, return_exceptions=True)
    for t in tasks:
        if t.exception() is not None:
            st.error("publisher_crashed", "".join(traceback.format_exception(t.exception()))[-600:])
    # publishing stopped: give the subscribers time to catch up
    drain_deadline = mono() + DRAIN_SECONDS
    while mono() < drain_deadline and any(s.missing() for s in every):
        await asyncio.sleep(0.5)
    drain_s = mono() - t_stop
    missing = {s.name: s.missing() for s in every if s.missing()}
    expected = sum(s.expected() for s in every)
    for p in wpubs:
        await p.close()
    for s in every:
        s.closing = True
    await asyncio.gather(*(s.close() for s in every))
    lost = sum(missing.values()) + st.skipped
    if missing:
        worst = sorted(missing.items(), key=lambda kv: -kv[1])[:5]
        st.error("lost", f"{sum(missing.values())} messages still missing after {DRAIN_SECONDS:.0f} s of "
                 f"drain; worst: {worst}")
    return {
        "subscribers": len(subs), "tls_subscribers": len(tls_subs),
        "groups": len(NORMAL_GROUPS), "tls_groups": len(TLS_GROUPS),
        "published": sum(st.published.values()),
        "published_by": dict(st.published_by),
        "broadcasts": sum(c for (p, g), c in st.published.items() if g is None),
        "expected_deliveries": expected, "deliveries": st.deliveries, "lost": lost,
        "publish_seconds": round(t_stop - t_start, 1), "drain_seconds": round(drain_s, 1),
        "errors": dict(st.errors), "error_samples": st.samples, "lag_events": st.lag_events,
        "latency_ms": {"p50": percentile(st.lat_hist, 0.5), "p99": percentile(st.lat_hist, 0.99),
                       "p999": percentile(st.lat_hist, 0.999),
                       "max": max(st.lat_hist) if st.lat_hist else None,
                       "over_1s": sum(n for ms, n in st.lat_hist.items() if ms >= 1000),
                       "worst": st.slow},
    }


# ==========================================================================================
# chaos: churn and hostile clients
# ==========================================================================================

class ChaosState:
    def __init__(self):
        self.started = collections.Counter()
        self.outcomes = collections.defaultdict(collections.Counter)
        self.anomalies = collections.Counter()       # odd server behaviour, reported
        self.violations = collections.Counter()      # broken promises to well-behaved clients: fail
        self.samples = []
        self.churn = collections.Counter()
        self.stopping = False
        self.recent = {}           # group -> (offset, epoch, mono time) last seen by a churn subscriber
        self.epoch = None
        self.distinct = collections.deque()     # (name, published at mono, unique body)
        self.known_offsets = collections.deque()  # (name, offset, mono) learned by a replay

    def sample(self, kind, detail):
        if len(self.samples) < 40:
            self.samples.append(f"{kind}: {detail}")

    def anomaly(self, kind, detail):
        self.anomalies[kind] += 1
        self.sample("anomaly " + kind, detail)

    def violation(self, kind, detail):
        self.violations[kind] += 1
        self.sample("VIOLATION " + kind, detail)


class ClosedByServer(Exception):
    pass


class Raw:
    """A non-blocking socket driven with loop.sock_* (exact control over reads: slow readers)."""

    def __init__(self, sock):
        self.s = sock
        self.buf = bytearray()
        self.eof = False
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, port, rcvbuf=None, sndbuf=None, timeout=10):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(s, (HOST, port)), timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            s.close()
            raise
        return cls(s)

    async def send(self, data, timeout=10):
        try:
            await asyncio.wait_for(self.loop.sock_sendall(self.s, data), timeout)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise ClosedByServer(type(e).__name__)

    async def fill(self, n=65536, timeout=10):
        try:
            d = await asyncio.wait_for(self.loop.sock_recv(self.s, n), timeout)
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    async def read_head(self, timeout=10):
        deadline = mono() + timeout
        while b"\r\n\r\n" not in self.buf:
            if self.eof or not await self.fill(timeout=max(0.01, deadline - mono())):
                return None, b""
        i = self.buf.find(b"\r\n\r\n")
        head = bytes(self.buf[:i])
        del self.buf[:i + 4]
        try:
            return int(head.split(b" ", 2)[1]), head
        except (IndexError, ValueError):
            return -1, head

    async def frame(self, timeout=10):
        deadline = mono() + timeout
        while True:
            f, used = parse_server_frame(self.buf)
            if f is not None:
                del self.buf[:used]
                return f
            if self.eof or not await self.fill(timeout=max(0.01, deadline - mono())):
                return None

    async def until_close(self, timeout=10):
        """Read frames until the server's close frame (its code) or EOF (None); pings answered."""
        deadline = mono() + timeout
        while True:
            f = await self.frame(max(0.01, deadline - mono()))
            if f is None:
                return None
            if f.opcode == OP_CLOSE:
                return f.close_code if f.close_code is not None else 1005
            if f.opcode == OP_PING:
                try:
                    await self.send(build_frame(OP_PONG, f.payload), 2)
                except (ClosedByServer, asyncio.TimeoutError, OSError):
                    pass

    async def drain_until_eof(self, timeout=5):
        deadline = mono() + timeout
        while not self.eof:
            self.buf.clear()
            if not await self.fill(timeout=max(0.01, deadline - mono())):
                break

    def rst(self):
        try:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.s.close()

    def close(self):
        self.s.close()


async def ws_upgrade(port, path, rcvbuf=None, pipelined=b"", timeout=10):
    c = await Raw.open(port, rcvbuf=rcvbuf, timeout=timeout)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        await c.send(ws_request_bytes(path=path, host=f"{HOST}:{port}", key=key) + pipelined, timeout)
        status, head = await c.read_head(timeout)
        if status != 101:
            raise ConnectionError(f"upgrade {path} answered {status}: {head[:80]!r}")
        return c
    except BaseException:
        c.close()
        raise


def rst_transport(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class Chaos:
    def __init__(self, cfg):
        self.cfg = cfg
        self.port = cfg["port"]
        self.tport = cfg["tls_port"]
        self.rng = random.Random(cfg["seed"] + 1)
        self.st = ChaosState()
        self.ctx = ssl.create_default_context(cafile=cfg["cafile"])
        self.run_id = "%x" % (cfg["seed"] & 0xffffff)

    # ---------------------------------------------------------------- spawning
    async def spawner(self, kind, fn, concurrency, interval, life):
        tasks = set()
        while not self.st.stopping:
            if len(tasks) < concurrency:
                t = asyncio.create_task(self.one(kind, fn, life))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            await asyncio.sleep(interval * self.rng.uniform(0.5, 1.5))
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def one(self, kind, fn, life):
        st = self.st
        st.started[kind] += 1
        try:
            outcome = await asyncio.wait_for(fn(), life)
        except asyncio.CancelledError:
            if st.stopping:
                st.outcomes[kind]["stopped at the end"] += 1
                return
            raise
        except asyncio.TimeoutError:
            outcome = "ran to its time limit"
        except ClosedByServer as e:
            outcome = f"closed by server ({e})"
        except AssertionError as e:      # the server broke the framing rules (herald_helpers checks)
            st.anomaly("server_frame", f"{kind}: {e}")
            outcome = "bad frame from server"
        except (ConnectionError, OSError, ssl.SSLError, asyncio.IncompleteReadError) as e:
            msg = str(e)
            outcome = f"{type(e).__name__}" + (f": {msg[:60]}" if "answered" in msg else "")
        except Exception as e:  # a bug in this driver: report, keep going
            st.anomaly("driver_bug", f"{kind}: {''.join(traceback.format_exception(e))[-800:]}")
            outcome = "driver error"
        st.outcomes[kind][outcome] += 1

    # ---------------------------------------------------------------- churn subscribers
    async def churn_sub(self, tls=False):
        rng, st = self.rng, self.st
        pool = TLS_GROUPS if tls else NORMAL_GROUPS
        groups = rng.sample(pool, rng.choice([1, 1, 2, 3]))
        since = {}
        if not tls and st.recent and rng.random() < 0.4:
            now = mono()
            cands = [(g, v) for g, v in st.recent.items() if now - v[2] < 2.0]
            if cands:
                g, (off, ep, _) = rng.choice(cands)
                since[g] = off
                if g not in groups:
                    groups.append(g)
        path = "/ws?groups=" + ",".join(groups) + "&format=json"
        if since:
            path += "&since=" + ",".join(f"{g}:{o}" for g, o in since.items()) + f"&epoch={st.epoch}"
        life = rng.uniform(0.3, 4.0)
        if tls:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, self.tport, ssl=self.ctx, server_hostname=HOST), 20)
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(ws_request_bytes(path=path, host=f"{HOST}:{self.tport}", key=key))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
            if not head.startswith(b"HTTP/1.1 101"):
                writer.close()
                raise ConnectionError(f"upgrade answered {head[:30]!r}")
            buf = bytearray()

            async def next_frame(timeout):
                while True:
                    f, used = parse_server_frame(buf)
                    if f is not None:
                        del buf[:used]
                        return f
                    d = await asyncio.wait_for(reader.read(65536), timeout)
                    if not d:
                        return None
                    buf.extend(d)

            def send(data):
                writer.write(data)
        else:
            c = await ws_upgrade(self.port, path)
            next_frame = c.frame

            def send(data):
                try:
                    c.s.send(data)    # small control frames (pongs)
                except OSError:
                    pass

        expect = {g: o + 1 for g, o in since.items()}
        last = {}
        n = 0
        ended_by_server = False
        try:
            end = mono() + life
            while mono() < end:
                try:
                    f = await next_frame(max(0.01, end - mono()))
                except asyncio.TimeoutError:
                    break
                if f is None:
                    ended_by_server = True
                    st.violation("churn_dropped", f"server closed a churn subscriber ({path})")
                    break
                if f.opcode == OP_PING:
                    send(build_frame(OP_PONG, f.payload))
                    continue
                if f.opcode == OP_CLOSE:
                    ended_by_server = True
                    st.violation("churn_dropped", f"server closed a churn subscriber with {f.close_code}")
                    break
                if f.opcode != OP_TEXT or not f.fin:
                    continue
                env = json.loads(f.payload)
                if env.get("type") == "recovery_failed":
                    g = env.get("group")
                    st.churn["recovery_failed:" + str(env.get("reason"))] += 1
                    if env.get("reason") != "too_old":
                        st.violation("recovery", f"since={g}:{since.get(g)} answered {env}")
                    expect.pop(g, None)
                    continue
                g, off = env["group"], env["offset"]
                if not tls:                       # the TLS server has an epoch of its own
                    st.epoch = st.epoch or env["epoch"]
                if g in expect:
                    if off != expect[g]:
                        st.violation("recovery", f"since={g}:{since[g]}: first message has offset {off}")
                    else:
                        st.churn["recovered"] += 1
                    del expect[g]
                elif g in last and off != last[g] + 1:
                    st.violation("churn_gap", f"{g}: offset {off} after {last[g]} ({path})")
                last[g] = off
                n += 1
                if g is not None and not tls:
                    st.recent[g] = (off, env["epoch"], mono())
        finally:
            st.churn["messages"] += n
            how = "server" if ended_by_server else rng.choice(["close", "close", "abort", "rst"])
            st.churn["end:" + how] += 1
            if tls:
                if how == "close":
                    try:
                        writer.write(build_frame(OP_CLOSE, close_payload(1000)))
                        await asyncio.wait_for(reader.read(), 3)
                    except (OSError, asyncio.TimeoutError, ssl.SSLError):
                        pass
                    writer.close()
                elif how == "rst":
                    rst_transport(writer)
                else:
                    writer.transport.abort()
            else:
                if how == "close":
                    try:
                        await c.send(build_frame(OP_CLOSE, close_payload(1000)), 3)
                        await c.until_close(3)
                    except (ClosedByServer, OSError, asyncio.TimeoutError, AssertionError):
                        pass
                    c.close()
                elif how == "rst":
                    c.rst()
                else:
                    c.close()
        return "ok" if not ended_by_server else "dropped by server"

    # ---------------------------------------------------------------- distinct groups
    async def distinct_publisher(self):
        """A new group name per publish, ~200/s, over keep-alive connections that each live for 1 to
        60 publishes (short-lived clients naming per-user or per-document groups, issue 13)."""
        st, rng = self.st, self.rng
        rate, n = 200.0, 0
        nxt = mono()
        reader = writer = None
        per_conn = 0
        while not st.stopping:
            now = mono()
            if nxt > now:
                await asyncio.sleep(nxt - now)
                continue
            if now - nxt > 1.0:
                st.churn["distinct_lag"] += 1
                nxt = now
            nxt += 1.0 / rate
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, self.port)
                per_conn = 0
                conn_limit = rng.randint(1, 60)
                st.churn["distinct_connections"] += 1
            n += 1
            per_conn += 1
            name = f"soak.d.{self.run_id}.{n}"
            body = b"distinct %d %s" % (n, rng.randbytes(rng.choice([1, 16, 100, 400])).hex().encode())
            last = per_conn >= conn_limit
            req = (f"POST /publish?group={name} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                   f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if last else "") +
                   "\r\n").encode() + body
            try:
                writer.write(req)
                status, _ = await read_http_response(reader, 30)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
                st.anomaly("distinct_publisher", f"keep-alive connection failed: {type(e).__name__}")
                writer.close()
                writer = None
                continue
            st.churn[f"distinct_publish:{status}"] += 1
            if status == 200:
                st.distinct.append((name, mono(), body))
                while st.distinct and mono() - st.distinct[0][1] > 120:
                    st.distinct.popleft()
            if last:
                writer.close()
                writer = None
        if writer is not None:
            writer.close()

    async def churn_wspub(self):
        """A short-lived WebSocket publisher: a new group, a few messages, then close (or vanish)."""
        self.st.churn["wspub_n"] += 1
        name = f"soak.w.{self.run_id}.{self.st.churn['wspub_n']}"
        c = await ws_upgrade(self.port, f"/publish?group={name}")
        try:
            for i in range(self.rng.randint(1, 5)):
                await c.send(build_frame(OP_TEXT, b"wspub %d" % i))
            if self.rng.random() < 0.7:
                await c.send(build_frame(OP_CLOSE, close_payload(1000)))
                code = await c.until_close(5)
                return f"close {code}"
            return "vanished"
        finally:
            c.close()

    async def distinct_replay(self):
        """A distinct group a few seconds after its only publish (history kept 30 s): since=G:0 replays
        the message, or, when the group started above its bucket's floor (docs/interface.md: a first
        offset need not be 1), answers too_old with the last offset L; then since=G:L-1 must
        replay it."""
        st, rng = self.st, self.rng
        now = mono()
        cands = [d for d in list(st.distinct)[-3000:] if 1.0 < now - d[1] < 20.0]
        if not cands or not st.epoch:
            await asyncio.sleep(0.5)
            return "nothing to do yet"
        name, t, body = rng.choice(cands)
        outcome = "since=0 replayed"
        since = 0
        for attempt in range(2):
            c = await ws_upgrade(self.port, f"/ws?groups={name}&format=json&since={name}:{since}&epoch={st.epoch}")
            try:
                while True:
                    f = await c.frame(5)
                    if f is None:
                        st.violation("replay", f"{name} since={since}: nothing within 5 s "
                                     f"({mono() - t:.1f} s after publish)")
                        return "no replay"
                    if f.opcode == OP_TEXT:
                        env = json.loads(f.payload)
                        if env.get("group") is not None:
                            break
            finally:
                c.rst() if rng.random() < 0.3 else c.close()
            if env.get("type") == "recovery_failed":
                last = env.get("offset") or 0
                if attempt == 0 and env.get("reason") == "too_old" and last > 1:
                    since = last - 1
                    outcome = "since=0 too_old (first offset above 1), since=last-1 replayed"
                    continue
                st.violation("replay", f"{name} since={since} ({mono() - t:.1f} s after publish): {env}")
                return "recovery_failed"
            break
        if env["group"] != name or env["data"].encode() != body or (since and env["offset"] != since + 1):
            st.violation("replay", f"{name} since={since}: replayed {env!r:.160}")
            return "wrong replay"
        st.known_offsets.append((name, env["offset"], t))
        while len(st.known_offsets) > 2000:
            st.known_offsets.popleft()
        return outcome

    async def reclaimed_offset(self):
        """A group reclaimed long ago (history expired, no subscriber, linger over) gets a new
        publish: its offset must be larger than every offset it had before (same epoch)."""
        st = self.st
        now = mono()
        if not st.known_offsets or now - st.known_offsets[0][2] < 50:
            await asyncio.sleep(1)
            return "nothing to do yet"
        name, off, _ = st.known_offsets.popleft()
        c = await ws_upgrade(self.port, f"/ws?groups={name}&format=json")
        try:
            reader, writer = await asyncio.open_connection(HOST, self.port)
            try:
                body = b"again"
                writer.write((f"POST /publish?group={name} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                              "Content-Type: text/plain\r\nConnection: close\r\n\r\n").encode() + body)
                status, _ = await read_http_response(reader, 10)
            finally:
                writer.close()
            if status != 200:
                return f"publish {status}"
            while True:
                f = await c.frame(5)
                if f is None:
                    st.violation("offset_reuse", f"{name}: no delivery")
                    return "no delivery"
                if f.opcode == OP_TEXT:
                    env = json.loads(f.payload)
                    if env.get("group") == name:
                        break
            if env["epoch"] == st.epoch and env["offset"] <= off:
                st.violation("offset_reuse", f"{name}: offset {env['offset']} after a reclaim, "
                             f"had {off} before (epoch {env['epoch']})")
                return "offset repeated"
            return "offset grew"
        finally:
            c.close()

    # ---------------------------------------------------------------- hostile, plain listener
    def _ping_chunk(self):
        rng = self.rng
        frames = []
        for _ in range(400):
            frames.append(build_frame(OP_PING, rng.randbytes(125) if rng.random() < 0.3 else b""))
        return b"".join(frames)

    async def ping_flood(self):
        """Pings as fast as TCP takes them, never reading (publisher or subscriber role)."""
        pub = self.rng.random() < 0.6
        path = "/publish?group=soak.h.flood" if pub else "/ws?groups=soak.h.flood"
        c = await ws_upgrade(self.port, path, rcvbuf=4096)
        chunk = self._ping_chunk()
        sent, t0 = 0, mono()
        try:
            # paced at ~2 MB/s so that the driver does not burn a core (the server closes a
            # flooder within seconds: --client-frame-rate, then the closing handshake's deadline)
            while sent < 32 * MiB and mono() - t0 < 20:
                try:
                    await c.send(chunk, timeout=5)
                except asyncio.TimeoutError:
                    return "server stopped reading"
                sent += len(chunk)
                await asyncio.sleep(0.01)
            return "still accepting pings after 32 MiB" if sent >= 32 * MiB else "still accepting pings after 20 s"
        except ClosedByServer:
            return f"closed by server after {'<5' if mono() - t0 < 5 else '5-10' if mono() - t0 < 10 else '>10'} s"
        finally:
            c.rst()

    async def slow_reader(self):
        """Subscribed to every normal group, tiny receive buffer, a few bytes now and then."""
        rng = self.rng
        path = "/ws?groups=" + ",".join(NORMAL_GROUPS) + rng.choice(["", "&format=json"])
        c = await ws_upgrade(self.port, path, rcvbuf=2048)
        t0 = mono()
        try:
            while mono() - t0 < 45:
                await asyncio.sleep(rng.uniform(0.25, 1.0))
                try:
                    d = await asyncio.wait_for(c.loop.sock_recv(c.s, rng.choice([1, 1, 16, 100])), 5)
                except ConnectionResetError:
                    d = b""
                except asyncio.TimeoutError:
                    continue
                if not d:
                    return f"closed by server after {mono() - t0:.0f} s"
            # what the kernel buffers hold hides a close: read it all at full speed to see
            try:
                await c.drain_until_eof(timeout=5)
            except asyncio.TimeoutError:
                pass
            return "closed by server (seen when drained)" if c.eof else "still open after 45 s"
        finally:
            c.rst() if rng.random() < 0.5 else c.close()

    async def pipelined_metrics(self, port=None, tls=False):
        """Thousands of GET /metrics in one go, never reading the answers."""
        rng = self.rng
        n = rng.choice([500, 2000, 4000])
        req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * n
        hold = rng.uniform(5, 15)
        if tls:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, self.tport, ssl=self.ctx, server_hostname=HOST), 20)
            try:
                writer.write(req)
                try:
                    await asyncio.wait_for(writer.drain(), hold)
                    await asyncio.sleep(hold)
                    return f"{n} requests sent"
                except asyncio.TimeoutError:
                    return "server stopped reading"
            finally:
                rst_transport(writer)
        c = await Raw.open(self.port, rcvbuf=4096)
        try:
            try:
                await c.send(req, timeout=hold)
            except asyncio.TimeoutError:
                return "server stopped reading"
            await asyncio.sleep(hold)
            return f"{n} requests sent"
        finally:
            c.rst() if rng.random() < 0.5 else c.close()

    async def pipelined_reader(self):
        """300 pipelined GET /healthz read back at a steady pace: every answer must come."""
        n = 300
        c = await Raw.open(self.port, rcvbuf=16384)
        try:
            reqs = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * (n - 1) + \
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            send = asyncio.create_task(c.send(reqs, timeout=60))
            got = bytearray()
            t0 = mono()
            while mono() - t0 < 60:
                await asyncio.sleep(0.02)
                try:
                    d = await asyncio.wait_for(c.loop.sock_recv(c.s, 4096), 10)
                except ConnectionResetError:
                    d = b""
                except asyncio.TimeoutError:
                    break
                if not d:
                    break
                got += d
            send.cancel()
            await asyncio.gather(send, return_exceptions=True)
            answers = got.count(b"HTTP/1.1 200")
            if answers != n:
                self.st.anomaly("pipelined_reader", f"{answers} of {n} pipelined answers")
                return "incomplete"
            return "all answered"
        finally:
            c.close()

    async def slowloris(self):
        """A request head or body trickled one byte at a time: the server must give up on it."""
        rng = self.rng
        variant = rng.choice(["head", "head", "body", "upgrade"])
        if variant == "body":
            body = b"x" * 4000
            data = (b"POST /publish?group=soak.h.loris HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body))
            prefix, trickle = data, body
        elif variant == "upgrade":
            prefix, trickle = b"", ws_request_bytes(path="/ws?groups=soak.h.loris") + b"X-Pad: " + b"a" * 4000
        else:
            prefix, trickle = b"", (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" +
                                    b"".join(b"X-H%d: v\r\n" % i for i in range(200)))
        c = await Raw.open(self.port)
        t0 = mono()
        try:
            if prefix:
                await c.send(prefix)
            reader = asyncio.create_task(c.fill(timeout=60))
            i = 0
            while not reader.done() and i < len(trickle) and mono() - t0 < 40:
                try:
                    await c.send(trickle[i:i + 1], timeout=5)
                except (ClosedByServer, asyncio.TimeoutError):
                    break
                i += 1
                await asyncio.wait({reader}, timeout=rng.uniform(0.5, 1.5))
            if not reader.done():
                await asyncio.wait({reader}, timeout=2)
            el = mono() - t0
            if not reader.done():
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                if el > 35:
                    self.st.anomaly("slowloris", f"{variant}: still open after {el:.0f} s")
                return f"{variant}: still open after {el:.0f} s"
            try:
                reader.result()
            except Exception:
                pass
            resp = bytes(c.buf[:12])
            status = resp[9:12].decode("latin-1") if resp.startswith(b"HTTP/1.1 ") else "EOF"
            return f"{variant}: {status} after {'<12' if el < 12 else '12-20' if el < 20 else '>20'} s"
        finally:
            c.close()

    BAD = [
        # (name, bytes after the upgrade, expected close codes)
        ("unmasked", lambda r: build_frame(OP_TEXT, b"hello", mask=False), {1002}),
        ("bad_utf8", lambda r: build_frame(OP_TEXT, b"ok \xc3\x28 no"), {1007}),
        ("bad_utf8_fragmented", lambda r: build_frame(OP_TEXT, b"caf\xc3", fin=False) +
         build_frame(OP_CONT, b"\xff"), {1007}),
        ("oversize", lambda r: build_frame(OP_BINARY, b"", length=2 * MiB, len_form=64) +
         r.randbytes(65536), {1009}),
        ("huge_length", lambda r: build_frame(OP_BINARY, b"", length=(1 << 63) - 1, len_form=64), {1002, 1009}),
        ("rsv1", lambda r: build_frame(OP_TEXT, b"x", rsv=4), {1002}),
        ("reserved_opcode", lambda r: build_frame(0x3, b"x"), {1002}),
        ("fragmented_ping", lambda r: build_frame(OP_PING, b"x", fin=False), {1002}),
        ("long_ping", lambda r: build_frame(OP_PING, b"p" * 126), {1002}),
        ("orphan_continuation", lambda r: build_frame(OP_CONT, b"x"), {1002}),
        ("text_inside_fragment", lambda r: build_frame(OP_TEXT, b"a", fin=False) + build_frame(OP_TEXT, b"b"), {1002}),
        ("close_1_byte", lambda r: build_frame(OP_CLOSE, b"\x03"), {1002}),
        ("close_bad_code", lambda r: build_frame(OP_CLOSE, close_payload(1005)), {1002}),
        ("close_bad_reason", lambda r: build_frame(OP_CLOSE, b"\x03\xe8\xff\xfe"), {1007}),
        ("random_frames", lambda r: r.randbytes(r.randrange(1, 3000)), None),
    ]

    async def bad_frames(self):
        rng = self.rng
        name, make, want = rng.choice(self.BAD)
        pub = rng.random() < 0.5
        path = "/publish?group=soak.h.bad" if pub else "/ws?groups=soak.h.bad"
        c = await ws_upgrade(self.port, path)
        try:
            try:
                await c.send(make(rng), timeout=5)
            except ClosedByServer:
                pass                      # closed while we were still sending (oversize): fine
            except asyncio.TimeoutError:
                self.st.anomaly("bad_frames", f"{name}: the server stopped reading")
                return f"{name}: server stopped reading"
            code = await c.until_close(15)
            if want is not None and code not in want:
                self.st.anomaly("bad_frames", f"{name} ({'publisher' if pub else 'subscriber'}): close "
                                f"{code}, expected {sorted(want)}")
            if want is None:
                return "random frames: " + ("close" if code else "EOF")
            return f"close {code}"
        finally:
            c.rst() if rng.random() < 0.3 else c.close()

    async def pipelined_upgrade(self):
        """Upgrade, fragmented text, ping, binary and close in one write: 101, pong and the close
        reply must all come back (issue 8 item 7)."""
        frames = (build_frame(OP_TEXT, b"pipe-", fin=False) + build_frame(OP_CONT, b"lined") +
                  build_frame(OP_PING, b"pp") + build_frame(OP_BINARY, b"\x00\x01") +
                  build_frame(OP_CLOSE, close_payload(1000)))
        try:
            c = await ws_upgrade(self.port, "/publish?group=soak.h.pipe", pipelined=frames)
        except ConnectionError as e:
            self.st.anomaly("pipelined_upgrade", f"no 101: {e}")
            return "no 101"
        try:
            got_pong = False
            while True:
                f = await c.frame(10)
                if f is None:
                    self.st.anomaly("pipelined_upgrade", f"EOF without close reply (pong {got_pong})")
                    return "no close reply"
                if f.opcode == OP_PONG and f.payload == b"pp":
                    got_pong = True
                if f.opcode == OP_CLOSE:
                    if not got_pong:
                        self.st.anomaly("pipelined_upgrade", "close reply without the pong")
                        return "no pong"
                    return "101, pong, close"
        finally:
            c.close()

    async def garbage(self):
        rng = self.rng
        kind = rng.choice(["raw", "http_prefix", "after_upgrade"])
        junk = rng.randbytes(rng.randrange(1, 8192))
        if kind == "after_upgrade":
            c = await ws_upgrade(self.port, rng.choice(["/ws?groups=soak.h.junk", "/publish?group=soak.h.junk"]))
        else:
            c = await Raw.open(self.port)
            if kind == "http_prefix":
                # a POST names a hostile group: junk that happens to end the head (herald takes a bare
                # LF as a line end) would otherwise broadcast to the normal subscribers
                junk = rng.choice([b"GET / HTTP/1.1\r\n", b"POST /publish?group=soak.h.junk HTTP/1.1\r\n"
                                   b"Content-Length: 5\r\n",
                                   b"GET /ws?groups=a HTTP/1.1\r\nUpgrade: websocket\r\n"]) + junk
        try:
            try:
                await c.send(junk, timeout=5)
            except (ClosedByServer, asyncio.TimeoutError):
                pass
            try:
                await c.fill(timeout=rng.uniform(1, 5))
            except asyncio.TimeoutError:
                return f"{kind}: no answer yet"
            if kind == "after_upgrade":
                return f"{kind}: " + ("frame" if c.buf else "EOF")
            return f"{kind}: " + (c.buf[9:12].decode("latin-1") if c.buf.startswith(b"HTTP/1.1 ") else
                                  "EOF" if not c.buf else "other")
        finally:
            c.rst() if rng.random() < 0.5 else c.close()

    async def rst(self):
        rng = self.rng
        kind = rng.choice(["connect", "half_head", "sub_with_queue", "pub_half_frame", "post_half_body"])
        if kind == "sub_with_queue":
            c = await ws_upgrade(self.port, "/ws?groups=" + ",".join(NORMAL_GROUPS), rcvbuf=4096)
            await asyncio.sleep(rng.uniform(0.5, 3))
        elif kind == "pub_half_frame":
            c = await ws_upgrade(self.port, "/publish?group=soak.h.rst")
            await c.send(build_frame(OP_TEXT, b"x" * 5000)[:2500])
            await asyncio.sleep(rng.uniform(0, 0.5))
        else:
            c = await Raw.open(self.port)
            if kind == "half_head":
                await c.send(b"GET /metrics HTTP/1.1\r\nHo")
            elif kind == "post_half_body":
                await c.send(b"POST /publish?group=soak.h.rst HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                             + b"y" * 400)
            await asyncio.sleep(rng.uniform(0, 0.5))
        c.rst()
        return kind

    async def idle(self, port=None):
        """Connect and say nothing: the server must drop it (header / idle timeouts)."""
        c = await Raw.open(port or self.port)
        t0 = mono()
        try:
            while mono() - t0 < 80:
                try:
                    if not await c.fill(timeout=80):
                        break
                except asyncio.TimeoutError:
                    break
                c.buf.clear()
            el = mono() - t0
            if el >= 79:
                self.st.anomaly("idle", f"{'TLS' if port else 'plain'}: a silent connection still open after 80 s")
                return "still open after 80 s"
            return f"closed by server after {'<15' if el < 15 else '15-65' if el < 65 else '>65'} s"
        finally:
            c.close()

    # ---------------------------------------------------------------- hostile, TLS listener
    async def tls_partial_hello(self):
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = self.ctx.wrap_bio(inc, out, server_hostname=HOST)
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = out.read()
        c = await Raw.open(self.tport)
        t0 = mono()
        try:
            await c.send(hello[:self.rng.randrange(1, len(hello))])
            try:
                await c.drain_until_eof(timeout=70)
            except asyncio.TimeoutError:
                pass
            el = mono() - t0
            return "still open after 70 s" if not c.eof else \
                f"closed by server after {'<15' if el < 15 else '15-65' if el < 65 else '>65'} s"
        finally:
            c.rst() if self.rng.random() < 0.5 else c.close()

    async def tls_handshake_stall(self):
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, self.tport, ssl=self.ctx, server_hostname=HOST), 20)
        t0 = mono()
        try:
            if self.rng.random() < 0.5:
                writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")   # half a head, then nothing
            try:
                while await asyncio.wait_for(reader.read(65536), 70):
                    pass
            except asyncio.TimeoutError:
                return "still open after 70 s"
            el = mono() - t0
            return f"closed by server after {'<15' if el < 15 else '15-65' if el < 65 else '>65'} s"
        finally:
            rst_transport(writer)

    async def tls_sub_noread(self):
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, self.tport, ssl=self.ctx, server_hostname=HOST, limit=4096), 20)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(ws_request_bytes(path="/ws?groups=" + ",".join(TLS_GROUPS), host=f"{HOST}:{self.tport}",
                                          key=key))
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
            writer.transport.pause_reading()
            await asyncio.sleep(self.rng.uniform(10, 30))
            return "held"
        finally:
            rst_transport(writer)

    async def tls_garbage(self):
        c = await Raw.open(self.tport)
        try:
            junk = self.rng.choice([b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                                    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]) + self.rng.randbytes(self.rng.randrange(1, 4000))
            try:
                await c.send(junk, timeout=5)
            except (ClosedByServer, asyncio.TimeoutError):
                pass
            try:
                await c.drain_until_eof(timeout=5)
            except asyncio.TimeoutError:
                return "no answer within 5 s"
            return "closed by server" if c.eof else "open"
        finally:
            c.rst() if self.rng.random() < 0.5 else c.close()

    async def tls_rst(self):
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, self.tport, ssl=self.ctx, server_hostname=HOST), 20)
        kind = self.rng.choice(["after_handshake", "half_request", "sub"])
        if kind == "half_request":
            writer.write(b"POST /publish?group=soak.h.trst HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
            await asyncio.sleep(0.2)
        elif kind == "sub":
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(ws_request_bytes(path="/ws?groups=" + ",".join(TLS_GROUPS), host=f"{HOST}:{self.tport}",
                                          key=key))
            await asyncio.sleep(self.rng.uniform(0.2, 2))
        rst_transport(writer)
        return kind

    # ---------------------------------------------------------------- main
    async def main(self, t_end_wall):
        t_end = mono() + (t_end_wall - wall())
        S = self.spawner
        jobs = [
            self.distinct_publisher(),
            S("churn_sub", self.churn_sub, 25, 0.07, 10),
            S("churn_wss", lambda: self.churn_sub(tls=True), 3, 0.5, 30),
            S("churn_wspub", self.churn_wspub, 2, 0.5, 15),
            S("distinct_replay", self.distinct_replay, 2, 0.3, 15),
            S("reclaimed_offset", self.reclaimed_offset, 1, 1.0, 15),
            S("ping_flood", self.ping_flood, 1, 3.0, 30),
            S("slow_reader", self.slow_reader, 4, 2.0, 60),
            S("pipelined_metrics", self.pipelined_metrics, 1, 4.0, 40),
            S("pipelined_reader", self.pipelined_reader, 1, 10.0, 70),
            S("slowloris", self.slowloris, 6, 1.0, 60),
            S("bad_frames", self.bad_frames, 3, 0.2, 20),
            S("pipelined_upgrade", self.pipelined_upgrade, 1, 1.0, 15),
            S("garbage", self.garbage, 2, 0.3, 15),
            S("rst", self.rst, 3, 0.2, 15),
            S("idle", self.idle, 3, 5.0, 90),
            S("tls_idle", lambda: self.idle(self.tport), 3, 5.0, 90),
            S("tls_partial_hello", self.tls_partial_hello, 3, 3.0, 80),
            S("tls_handshake_stall", self.tls_handshake_stall, 3, 3.0, 80),
            S("tls_sub_noread", self.tls_sub_noread, 2, 3.0, 60),
            S("tls_pipelined_metrics", lambda: self.pipelined_metrics(tls=True), 1, 5.0, 40),
            S("tls_garbage", self.tls_garbage, 1, 1.0, 15),
            S("tls_rst", self.tls_rst, 1, 0.5, 30),
        ]
        tasks = [asyncio.create_task(j) for j in jobs]
        while mono() < t_end:
            await asyncio.sleep(min(1.0, max(0.0, t_end - mono())))
            for t in tasks:
                if t.done() and t.exception() is not None:
                    self.st.anomaly("driver_bug", "".join(traceback.format_exception(t.exception()))[-800:])
                    tasks.remove(t)
                    break
        self.st.stopping = True
        done, pending = await asyncio.wait(tasks, timeout=20)
        for t in pending:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        st = self.st
        return {
            "started": dict(st.started),
            "outcomes": {k: dict(v) for k, v in st.outcomes.items()},
            "churn": dict(st.churn),
            "anomalies": dict(st.anomalies),
            "violations": dict(st.violations),
            "samples": st.samples,
        }


def child_main(role, cfg_path, out_path):
    with open(cfg_path) as f:
        cfg = json.load(f)
    try:
        if role == "normal":
            res = asyncio.run(normal_main(cfg))
        else:
            res = asyncio.run(Chaos(cfg).main(cfg["t_end"]))
    except BaseException as e:
        res = {"crashed": "".join(traceback.format_exception(e))[-3000:]}
    ru = resource.getrusage(resource.RUSAGE_SELF)
    res["cpu_s"] = round(ru.ru_utime + ru.ru_stime, 1)
    with open(out_path, "w") as f:
        json.dump(res, f)
    return 0


# ==========================================================================================
# main: servers, sampling, verdict
# ==========================================================================================

def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for ln in f:
                if ln.startswith("VmRSS:"):
                    return int(ln.split()[1])
    except OSError:
        pass
    return None


def cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


class Server:
    """Uniform view of the conftest Herald and the test_tls TlsHerald."""

    def __init__(self, label, h, fetch):
        self.label, self.h, self.fetch = label, h, fetch
        self.samples = []          # (t, rss kb, connections_open, queued bytes)
        self.mem_max = {}          # herald_memory_bytes{kind} -> max seen (issue 13's memory view)

    @property
    def pid(self):
        return self.h.pid

    def metrics(self, timeout=10):
        return parse_prometheus(self.fetch("/metrics", timeout).decode())[0]


def rss_windows(seconds):
    """(warm-up end, reference window end, tail start). The brief's fifths: warm-up = first fifth,
    reference = second fifth, tail = last half. A short run (< 200 s) stretches the warm-up to
    MIN_WARMUP: history of the distinct groups lives --history-ttl (30 s), then --group-linger (5 s),
    then the sweep finds it (<= 3.2 s / workers): before that the group table is still filling."""
    warm = max(0.2 * seconds, MIN_WARMUP)
    ref_end = warm + 0.2 * seconds
    return warm, ref_end, max(0.5 * seconds, ref_end)


def rss_verdict(label, samples, seconds):
    pts = [(t, kb) for t, kb, *_ in samples if kb is not None]
    warm, ref_end, tail_start = rss_windows(seconds)
    ref = [kb for t, kb in pts if warm <= t < ref_end]
    tail = [kb for t, kb in pts if t >= tail_start]
    if not ref or not tail:
        return False, f"{label}: not enough RSS samples ({len(pts)})"
    ref_max, tail_max = max(ref), max(tail)
    margin = max(RSS_MARGIN_FRACTION * ref_max, RSS_MARGIN_MIN_KB)
    ok = tail_max <= ref_max + margin
    return ok, (f"{label}: max {ref_max / 1024:.1f} MiB over {warm:.0f}-{ref_end:.0f} s, "
                f"max {tail_max / 1024:.1f} MiB over {tail_start:.0f}-{seconds:.0f} s, allowed "
                f"{(ref_max + margin) / 1024:.1f} MiB (+{margin / 1024:.1f}) -> {'flat' if ok else 'GREW'}")


def slope_kib_per_min(samples, seconds):
    tail_start = rss_windows(seconds)[2]
    pts = [(t, kb) for t, kb, *_ in samples if kb is not None and t >= tail_start]
    if len(pts) < 3:
        return None
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mk = sum(k for _, k in pts) / n
    den = sum((t - mt) ** 2 for t, _ in pts)
    return 60 * sum((t - mt) * (k - mk) for t, k in pts) / den if den else None


CLOSES = re.compile(r"close|timeout|error|fail|limit|drop|reject|refus|slow|protocol|loris|flood|overflow|"
                    r"abort|reset|expired|too_")
GROUPS_MEM = re.compile(r"reclaim|evict|live_|_live|groups|history|memory|queued_bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 600)))
    ap.add_argument("--bin", default=os.path.join(REPO, "build-asan", "herald"))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED", 0)) or None)
    ap.add_argument("--role", choices=["normal", "chaos"], help=argparse.SUPPRESS)
    ap.add_argument("--cfg", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args, extra = ap.parse_known_args()
    if args.role:
        return child_main(args.role, args.cfg, args.out)

    seconds = args.seconds
    if seconds < 60:
        print("soak: FAIL: --seconds must be at least 60 (40 s warm-up, then a reference window and a tail)")
        return 2
    seed = args.seed or random.randrange(1, 1 << 30)
    os.environ["HERALD_BIN"] = os.path.abspath(args.bin)
    os.environ["ASAN_OPTIONS"] = ":".join(x for x in [os.environ.get("ASAN_OPTIONS", ""), ASAN_EXTRA] if x)
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    from conftest import Herald, binary_is_sanitized          # noqa: E402 (pytest needed only here)
    from herald_helpers import http_call                       # noqa: E402
    from test_tls import TlsHerald, make_cert                   # noqa: E402

    tmp = tempfile.mkdtemp(prefix="herald-soak-")
    herald_args = SERVER_ARGS + extra
    print(f"soak: {seconds:.0f} s, seed {seed}, {args.bin} ({'ASan' if binary_is_sanitized(args.bin) else 'NOT sanitized'}),"
          f" --workers 2 {' '.join(herald_args)}; work dir {tmp}", flush=True)
    failures = []
    servers = []
    children = []
    try:
        try:
            plain = Herald(herald_args, workers=2, tmpdir=tmp)
            servers.append(Server("plain", plain,
                                  lambda p, t: http_call(plain.port, "GET", p, timeout=t)[2]))
            cert, key = make_cert(tmp)
            tls = TlsHerald(["--tls-cert", cert, "--tls-key", key] + herald_args, tmp, cert, workers=2)
            servers.append(Server("tls", tls, lambda p, t: tls.https("GET", p, timeout=t)[2]))
        except BaseException as e:     # pytest.fail raises an exception outside BaseException's Exception
            print(f"soak: FAIL: herald did not start: {e}")
            return 1

        t0 = wall()
        t_end = t0 + seconds
        cfg = {"port": plain.port, "tls_port": tls.port, "cafile": cert, "t_end": t_end, "seed": seed,
               "seconds": seconds}
        cfg_path = os.path.join(tmp, "cfg.json")
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        for role in ("normal", "chaos"):
            out = os.path.join(tmp, f"{role}.json")
            p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--role", role, "--cfg", cfg_path,
                                  "--out", out], stdin=subprocess.DEVNULL)
            children.append((role, p, out))

        # ---- sampling
        probes, health_fail = [], 0
        cpu0 = {s.label: cpu_s(s.pid) for s in servers}
        died = None
        next_sample = t0
        last_print = t0
        while True:
            now = wall()
            if now >= t_end:
                break
            if now < next_sample:
                time.sleep(min(next_sample - now, 0.5))
                continue
            next_sample += SAMPLE_EVERY
            t = now - t0
            for s in servers:
                kb = rss_kb(s.pid)
                conns = queued = None
                h0 = mono()
                try:
                    m = s.metrics(timeout=10)
                    conns, queued = m.get("herald_connections_open"), m.get("herald_queued_bytes")
                    for k, v in m.items():
                        if k.startswith("herald_memory_bytes{"):
                            kind = k.split('"')[1]
                            s.mem_max[kind] = max(s.mem_max.get(kind, 0), v)
                    probes.append(mono() - h0)
                except Exception:
                    health_fail += 1
                s.samples.append((round(t, 1), kb, conns, queued))
            for s in servers:
                if not s.h.alive():
                    died = f"{s.label} herald exited during the run (status {s.h.proc.returncode})"
            if died:
                break
            if now - last_print >= 60:
                last_print = now
                print(f"soak: {t:5.0f} s  " + "  ".join(
                    f"{s.label} RSS {s.samples[-1][1] / 1024:.1f} MiB conns {s.samples[-1][2] or 0:.0f}"
                    for s in servers if s.samples[-1][1]), flush=True)
        if died:
            failures.append(died)

        # ---- results of the load processes
        results = {}
        for role, p, out in children:
            try:
                p.wait(timeout=max(5, t_end - wall()) + DRAIN_SECONDS + 90)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                failures.append(f"{role} load process did not finish (killed)")
            try:
                with open(out) as f:
                    results[role] = json.load(f)
            except (OSError, ValueError):
                results[role] = {"crashed": f"no result (exit status {p.returncode})"}
        children = []

        # ---- quiet server: every client is gone, connections must go back to zero
        quiet = {}
        for s in servers:
            deadline = mono() + 30
            conns = None
            while mono() < deadline:
                try:
                    conns = s.metrics().get("herald_connections_open")
                except Exception:
                    conns = None
                if conns is not None and conns <= 1:
                    break
                time.sleep(1)
            quiet[s.label] = conns
        final = {}
        for s in servers:
            try:
                final[s.label] = s.metrics()
            except Exception as e:
                final[s.label] = {}
                failures.append(f"{s.label}: /metrics failed at the end ({e})")
        rss_end = {s.label: rss_kb(s.pid) for s in servers}
        cpu = {s.label: (cpu_s(s.pid) or 0) - (cpu0[s.label] or 0) for s in servers}

        # ---- stop: SIGTERM, exit status, sanitizer reports (conftest / test_tls checks)
        for s in servers:
            problems = s.h.stop()
            if problems:
                failures.append(f"{s.label} herald: " + problems[0])
                print(f"--- {s.label} herald problems ---\n" + "\n".join(problems), flush=True)
        servers_done = servers
        servers = []

        # ---- verdicts
        normal = results.get("normal", {})
        chaos = results.get("chaos", {})
        for role, r in results.items():
            if "crashed" in r:
                failures.append(f"{role} load process crashed")
                print(f"--- {role} load process ---\n{r['crashed']}")
        if normal and "crashed" not in normal:
            if normal["lost"]:
                failures.append(f"{normal['lost']} messages lost for normal subscribers")
            if normal["errors"]:
                failures.append("normal path: " + ", ".join(f"{k} {v}" for k, v in sorted(normal["errors"].items())))
        if chaos.get("violations"):
            failures.append("churn/recovery: " + ", ".join(f"{k} {v}" for k, v in sorted(chaos["violations"].items())))
        rss_lines = []
        for s in servers_done:
            ok, line = rss_verdict(s.label, s.samples, seconds)
            rss_lines.append(line)
            if not ok:
                failures.append(f"RSS of the {s.label} herald grew after warm-up")
        for label, conns in quiet.items():
            if conns is None or conns > 1:
                failures.append(f"{label}: {conns} connections still open 30 s after every client left")

        # ---- summary
        print()
        print("== soak summary ==")
        print(f"duration {seconds:.0f} s (samples every {SAMPLE_EVERY:.0f} s), seed {seed}, both servers: --workers 2 "
              f"{' '.join(herald_args)}, ASAN_OPTIONS {os.environ['ASAN_OPTIONS']}")
        for s in servers_done:
            pts = [f"{t:.0f}s:{kb / 1024:.1f}" for t, kb, *_ in s.samples if kb]
            print(f"RSS MiB {s.label} (t:MiB): " + " ".join(pts))
            conns = [int(c) for _, _, c, _ in s.samples if c is not None]
            if conns:
                print(f"  open connections {s.label}: min {min(conns)} max {max(conns)}; "
                      f"end of load RSS {rss_end[s.label] / 1024 if rss_end[s.label] else 0:.1f} MiB; "
                      f"CPU {cpu[s.label]:.0f} s; slope over last half "
                      f"{slope_kib_per_min(s.samples, seconds) or 0:+.0f} KiB/min")
        for ln in rss_lines:
            print("RSS check " + ln)
        for s in servers_done:
            if s.mem_max:
                print(f"memory by kind, max over the run ({s.label}, /metrics herald_memory_bytes): " +
                      ", ".join(f"{k} {v / MiB:.2f} MiB" for k, v in sorted(s.mem_max.items())))
        print("CPU seconds: " + ", ".join(f"herald {k} {v:.0f}" for k, v in cpu.items()) + ", " +
              ", ".join(f"driver {role} {r.get('cpu_s', '?')}" for role, r in results.items()) +
              f" (over {seconds:.0f} s on {os.cpu_count()} CPUs)")
        probes.sort()
        if probes:
            print(f"/metrics probes every {SAMPLE_EVERY:.0f} s: {len(probes)}, median {probes[len(probes) // 2] * 1000:.0f} ms, "
                  f"p90 {probes[int(len(probes) * 0.9)] * 1000:.0f} ms, slowest {probes[-1] * 1000:.0f} ms, "
                  f"{health_fail} failed")
        if normal and "crashed" not in normal:
            lat = normal["latency_ms"]
            print(f"normal: {normal['subscribers']} subscribers on {normal['groups']} groups + "
                  f"{normal['tls_subscribers']} wss on {normal['tls_groups']}; published {normal['published']} "
                  f"({normal['broadcasts']} broadcasts) in {normal['publish_seconds']} s by "
                  + ", ".join(f"{k} {v}" for k, v in sorted(normal["published_by"].items())))
            print(f"  deliveries expected {normal['expected_deliveries']}, received {normal['deliveries']}, "
                  f"lost {normal['lost']}; caught up {normal['drain_seconds']} s after the last publish; "
                  f"latency p50 {lat['p50']} ms p99 {lat['p99']} ms p99.9 {lat['p999']} ms max {lat['max']} ms; "
                  f"publisher lag events {normal['lag_events']}")
            if lat.get("worst"):
                print(f"  {lat['over_1s']} deliveries took over 1 s; worst (latency s, at t s, subscriber, group, "
                      f"publisher, seq, bytes): " + "; ".join(str(tuple(w)) for w in lat["worst"][:6]))
            if normal["errors"]:
                print("  errors: " + ", ".join(f"{k} {v}" for k, v in sorted(normal["errors"].items())))
                for smp in normal["error_samples"][:15]:
                    print("    " + smp)
        if chaos and "crashed" not in chaos:
            ch = chaos["churn"]
            print(f"churn: {chaos['started'].get('churn_sub', 0)} ws + {chaos['started'].get('churn_wss', 0)} wss "
                  f"subscribers churned (" + ", ".join(f"{k[4:]} {v}" for k, v in sorted(ch.items())
                                                       if k.startswith("end:")) +
                  f"), {ch.get('messages', 0)} messages checked, since= recoveries {ch.get('recovered', 0)} ok" +
                  ("" if not any(k.startswith("recovery_failed") for k in ch) else ", ") +
                  ", ".join(f"{k} {v}" for k, v in sorted(ch.items()) if k.startswith("recovery_failed")))
            dist = {k.split(":")[1]: v for k, v in ch.items() if k.startswith("distinct_publish:")}
            print(f"  distinct groups published: {dist} over {ch.get('distinct_connections', 0)} connections "
                  f"(lag events {ch.get('distinct_lag', 0)}); short-lived ws publishers "
                  f"{chaos['outcomes'].get('churn_wspub', {})}; "
                  f"replays {chaos['outcomes'].get('distinct_replay', {})}; "
                  f"reclaimed offsets {chaos['outcomes'].get('reclaimed_offset', {})}")
            hostile = {k: v for k, v in chaos["started"].items() if not k.startswith("churn") and
                       k not in ("distinct_replay", "reclaimed_offset")}
            print(f"hostile connections: {sum(hostile.values())} ("
                  + ", ".join(f"{k} {v}" for k, v in sorted(hostile.items())) + ")")
            for k in sorted(hostile):
                oc = chaos["outcomes"].get(k, {})
                print(f"  {k}: " + ", ".join(f"{o} {n}" for o, n in sorted(oc.items(), key=lambda kv: -kv[1])))
            if chaos["anomalies"]:
                print("anomalies (reported, not failing): " +
                      ", ".join(f"{k} {v}" for k, v in sorted(chaos["anomalies"].items())))
            for smp in chaos["samples"][:20]:
                print("    " + smp)
        for label, m in final.items():
            keys = ["herald_connections_accepted_total", "herald_messages_published_total",
                    "herald_deliveries_total", "herald_messages_dropped_total"]
            print(f"metrics {label}: " + ", ".join(f"{k[7:]} {int(m[k])}" for k in keys if k in m))
            skip = ("herald_delivery_latency", "herald_broker", "herald_bytes_")
            closes = {k: v for k, v in m.items() if v and CLOSES.search(k.split("{")[0]) and not k.startswith(skip)}
            print("  closes and refusals by kind: " +
                  (", ".join(f"{k[7:]} {int(v)}" for k, v in sorted(closes.items())) or "none"))
            other = {k: v for k, v in m.items() if GROUPS_MEM.search(k.split("{")[0]) and k not in closes and
                     not k.startswith(skip)}
            if other:
                print("  groups and memory: " + ", ".join(f"{k[7:]} {int(v)}" for k, v in sorted(other.items())))
        if failures:
            print("failures:")
            for f_ in failures:
                print("  - " + f_)
            print(f"herald stderr, configuration and load results kept in {tmp}")
            print(f"soak: FAIL: {failures[0]}")
            return 1
        shutil.rmtree(tmp, ignore_errors=True)
        print("soak: PASS")
        return 0
    finally:
        for role, p, out in children:
            if p.poll() is None:
                p.kill()
                p.wait()
        for s in servers:
            try:
                s.h.proc.kill()
                s.h.proc.wait()
            except Exception:
                pass


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("soak: FAIL: interrupted")
        sys.exit(130)
    except Exception:
        traceback.print_exc()
        print("soak: FAIL: error in the soak driver (traceback above)")
        sys.exit(1)
