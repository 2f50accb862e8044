#!/usr/bin/env python3
"""A deliberately faulty broadcast server for herald-bench's own tests.

Speaks just enough RFC 6455 (stdlib only) to accept the two endpoints every
benchmarked server exposes: GET /ws?groups=G (subscriber) and
GET /publish?group=G (publisher). Each binary message a publisher sends goes
to the subscribers of its group, with faults injected per subscriber
according to that subscriber's own message counter k (1, 2, ...):

  --drop-every N      k % N == 0: not delivered
  --dup-every N       k % N == 0: delivered twice in a row
  --reorder-every N   k % N == 0: held back and delivered after the next one
                      from the same publisher
  --fragment-every N  k % N == 0: sent as three fragments, a ping in between
  --split-every N     k % N == 0: written in four pieces with pauses (partial reads)
  --ping              ping every subscriber once it is connected
  --kick-after N      the first subscriber gets close 1008 after its Nth message;
                      later messages for it count as dropped

It counts what it did (the ground truth the test compares herald-bench's
report with) and writes the counts as JSON to --stats-file on SIGTERM.
"""
import argparse
import asyncio
import base64
import hashlib
import json
import signal
import socket
import struct
import sys
import time
import urllib.parse

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

stats = {
    "subscribers": 0, "publishers": 0, "published": 0, "routed": 0, "dropped": 0,
    "duplicated": 0, "reordered": 0, "fragmented": 0, "split": 0, "pings_sent": 0,
    "pongs_ok": 0, "pongs_bad": 0, "client_closes": 0, "unmasked_frames": 0, "kicked": 0,
}
groups = {}  # name -> set of Subscriber
opts = None


def frame(opcode, payload, fin=True):
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = struct.pack("!BB", b0, n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 126, n)
    else:
        head = struct.pack("!BBQ", b0, 127, n)
    return head + payload


def seq_of(payload):
    """(publisher, seq) of a bench message: u32 magic, u32 publisher, u64 seq."""
    if len(payload) < 24:
        return None
    return struct.unpack_from("<IQ", payload, 4)


async def read_frame(reader):
    """One client frame: (fin, opcode, payload). Clients must mask."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    if b1 & 0x80:
        mask = await reader.readexactly(4)
    else:
        stats["unmasked_frames"] += 1
        mask = b"\0\0\0\0"
    data = bytearray(await reader.readexactly(n))
    for i in range(n):
        data[i] ^= mask[i & 3]
    return bool(b0 & 0x80), b0 & 0x0F, bytes(data)


class Subscriber:
    def __init__(self, writer):
        self.writer = writer
        self.queue = asyncio.Queue()
        self.k = 0
        self.held = None
        self.held_at = 0.0
        self.ping_payload = None
        self.kick_at = 0       # kick after this many messages (0 = never)
        self.kicked = False

    def put(self, payload):
        self.k += 1
        k = self.k
        item = [frame(0x2, payload)]
        if opts.fragment_every and k % opts.fragment_every == 0 and len(payload) > 15:
            stats["fragmented"] += 1
            item = [frame(0x2, payload[:5], fin=False), frame(0x9, b"frag"),
                    frame(0x0, payload[5:15], fin=False), frame(0x0, payload[15:])]
            stats["pings_sent"] += 1
        if opts.split_every and k % opts.split_every == 0:
            stats["split"] += 1
            item = ["split"] + item
        self.queue.put_nowait(item)

    def route(self, payload):
        k = self.k + 1
        stats["routed"] += 1
        if self.kicked:
            stats["dropped"] += 1
            return
        if self.kick_at and k > self.kick_at:
            self.kicked = True
            stats["kicked"] += 1
            stats["dropped"] += 1
            self.queue.put_nowait([frame(0x8, struct.pack("!H", 1008) + b"slow consumer")])
            return
        src = seq_of(payload)
        same = self.held is not None and src and seq_of(self.held)[0] == src[0]
        if opts.drop_every and k % opts.drop_every == 0:
            self.k += 1
            stats["dropped"] += 1
            if same:
                self.flush_held()  # nothing newer from its publisher went first
            return
        if (opts.reorder_every and k % opts.reorder_every == 0 and self.held is None):
            self.k += 1
            self.held = payload
            self.held_at = time.monotonic()
            return
        self.put(payload)
        if opts.dup_every and k % opts.dup_every == 0:
            stats["duplicated"] += 1
            self.queue.put_nowait([frame(0x2, payload)])
        # the held message goes out after the next one of the same publisher:
        # a per-publisher inversion, which is what herald-bench can see
        if same:
            if src[1] > seq_of(self.held)[1]:
                stats["reordered"] += 1
            self.queue.put_nowait([frame(0x2, self.held)])
            self.held = None

    def flush_held(self):
        if self.held is not None:
            self.queue.put_nowait([frame(0x2, self.held)])
            self.held = None


async def sub_writer(sub):
    w = sub.writer
    while True:
        item = await sub.queue.get()
        if item is None:
            return
        split = item and item[0] == "split"
        data = b"".join(item[1:] if split else item)
        try:
            if split:
                for a, b in ((0, 1), (1, 3), (3, 20), (20, len(data))):
                    if a < len(data):
                        w.write(data[a:b])
                        await w.drain()
                        await asyncio.sleep(0.002)
            else:
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            return


async def held_flusher():
    """A held message with nothing after it goes out late (not reordered)."""
    while True:
        await asyncio.sleep(0.05)
        now = time.monotonic()
        for subs in groups.values():
            for s in subs:
                if s.held is not None and now - s.held_at > 0.2:
                    s.flush_held()


async def handshake(reader, writer):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    hdrs = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    url = urllib.parse.urlsplit(target)
    query = urllib.parse.parse_qs(url.query)
    key = hdrs.get("sec-websocket-key", "")
    ok = (method == "GET" and hdrs.get("upgrade", "").lower() == "websocket"
          and len(base64.b64decode(key + "==")[:16]) == 16
          and hdrs.get("sec-websocket-version") == "13"
          and url.path in ("/ws", "/publish"))
    if not ok:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        return None, None
    accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
    await writer.drain()
    if url.path == "/ws":
        return "sub", query.get("groups", [""])[0].split(",")
    return "pub", query.get("group", [""])[0]


async def serve(reader, writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sub = None
    task = None
    try:
        kind, what = await handshake(reader, writer)
        if kind is None:
            return
        if kind == "sub":
            stats["subscribers"] += 1
            sub = Subscriber(writer)
            if opts.kick_after and stats["subscribers"] == 1:
                sub.kick_at = opts.kick_after
            for g in what:
                groups.setdefault(g, set()).add(sub)
            task = asyncio.ensure_future(sub_writer(sub))
            if opts.ping:
                sub.ping_payload = b"p%d" % stats["subscribers"]
                stats["pings_sent"] += 1
                sub.queue.put_nowait([frame(0x9, sub.ping_payload)])
        else:
            stats["publishers"] += 1
        parts = []
        while True:
            fin, op, data = await read_frame(reader)
            if op == 0x8:
                stats["client_closes"] += 1
                echo = frame(0x8, data[:2])
                if sub is None:
                    writer.write(echo)
                elif not sub.kicked:  # a kicked one already got our close
                    sub.queue.put_nowait([echo])  # after what is queued
                await writer.drain()
                break
            if op == 0xA:
                if sub and data in (sub.ping_payload, b"frag"):
                    stats["pongs_ok"] += 1
                else:
                    stats["pongs_bad"] += 1
                continue
            if op == 0x9:
                writer.write(frame(0xA, data))
                continue
            parts.append(data)
            if not fin:
                continue
            msg, parts = b"".join(parts), []
            if kind == "pub":
                stats["published"] += 1
                for s in list(groups.get(what, ())):
                    s.route(msg)
    except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError):
        pass
    finally:
        if sub is not None:
            if not sub.kicked:  # a kicked one stays: its messages count as dropped
                for subs in groups.values():
                    subs.discard(sub)
            sub.queue.put_nowait(None)
            if task:
                try:
                    await asyncio.wait_for(task, 1)
                except (asyncio.TimeoutError, Exception):
                    pass
        writer.close()


async def main():
    global opts
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--drop-every", type=int, default=0)
    p.add_argument("--dup-every", type=int, default=0)
    p.add_argument("--reorder-every", type=int, default=0)
    p.add_argument("--fragment-every", type=int, default=0)
    p.add_argument("--split-every", type=int, default=0)
    p.add_argument("--ping", action="store_true")
    p.add_argument("--kick-after", type=int, default=0)
    p.add_argument("--stats-file", required=True)
    opts = p.parse_args()
    server = await asyncio.start_server(serve, "127.0.0.1", opts.port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print("fake: listening on 127.0.0.1:%d" % port, file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    flusher = asyncio.ensure_future(held_flusher())
    await stop.wait()
    flusher.cancel()
    server.close()
    with open(opts.stats_file, "w") as f:
        json.dump(stats, f)


if __name__ == "__main__":
    asyncio.run(main())
