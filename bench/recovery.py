#!/usr/bin/python3
"""Recovery time of a gap (issue 9): from a node's memory vs from Redis.

One redis-server and two herald nodes on 127.0.0.1 (`--broker redis://... --history H`), all
started here and stopped by PID at the end. For every repetition, on a fresh group G:

  1. a holder subscriber joins G on node A (so A follows G and keeps its history in memory),
  2. a WebSocket publisher on A sends GAP + LEAD messages; the holder reads them all (so they are
     sequenced, in Redis's stream and in A's history) and learns the epoch,
  3. a client connects with `?groups=G&since=G:LEAD&epoch=E` and reads GAP replayed messages:
     (a) to A, which followed G: the replay comes from A's memory;
     (b) to B, which never had a subscriber of G: B subscribes, reads G's last offset and stream
         (GET + XRANGE) and replays from that (the 101 is held until then).
     (a) and (b) alternate which goes first.

Measured: time from the TCP connect of that client to its first and to its last replayed message
(the upgrade is part of it); each replayed message is checked (offset order, no gap, no
duplicate, no recovery_failed). Medians over the repetitions, as a markdown table.

The timed client is a minimal blocking WebSocket reader on a plain socket (no asyncio): Python's
`websockets` spends tens of microseconds of client CPU per message, which for 1,000 messages would
be larger than the difference being measured. It only reads unmasked server frames and checks them.
"""
import argparse
import base64
import json
import os
import signal
import socket
import statistics
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness  # noqa: E402  (Server, Redis, PortPool, rel: the same process handling as bench/run.sh)


class WSError(Exception):
    pass


class WS:
    """A blocking WebSocket client on 127.0.0.1: handshake, masked text frames out, frames in."""

    def __init__(self, port, path, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise WSError(f"closed during the handshake: {buf[:200]!r}")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise WSError(f"no upgrade: {head[:200]!r}")
        self.buf, self.pos = bytearray(rest), 0

    def text_frame(self, payload):
        data = payload.encode()
        n = len(data)
        mask = os.urandom(4)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
        m = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(data, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")
        return head + mask + masked

    def frames(self):
        """Yields (opcode, payload bytes) of complete frames as they arrive."""
        while True:
            buf, pos = self.buf, self.pos
            while len(buf) - pos >= 2:
                b0, b1 = buf[pos], buf[pos + 1]
                n, hdr = b1 & 0x7F, 2
                if n == 126:
                    if len(buf) - pos < 4:
                        break
                    n, hdr = struct.unpack_from("!H", buf, pos + 2)[0], 4
                elif n == 127:
                    if len(buf) - pos < 10:
                        break
                    n, hdr = struct.unpack_from("!Q", buf, pos + 2)[0], 10
                if b1 & 0x80 or not b0 & 0x80:
                    raise WSError("masked or fragmented frame from the server")
                if len(buf) - pos < hdr + n:
                    break
                payload = bytes(buf[pos + hdr:pos + hdr + n])
                pos += hdr + n
                self.pos = pos
                if b0 & 0x0F == 8:
                    raise WSError(f"closed by the server: {payload[:2].hex()} {payload[2:100]!r}")
                yield b0 & 0x0F, payload
            del buf[:self.pos]
            self.pos = 0
            chunk = self.sock.recv(262144)
            if not chunk:
                raise WSError("connection closed")
            self.buf += chunk

    def close(self):
        try:  # close frame, status 1000, masked with a zero key (valid: the key is any 4 bytes)
            self.sock.sendall(b"\x88\x82\x00\x00\x00\x00\x03\xe8")
        except OSError:
            pass
        self.sock.close()


def payload_of(k, size):
    return f"{k:08d}".ljust(size, "x")


def fill_group(a_port, group, total, size):
    """Holder on A + publisher on A; returns (holder, epoch) once the holder saw offset `total`."""
    holder = WS(a_port, f"/ws?groups={group}&format=json")
    pub = WS(a_port, f"/publish?group={group}")
    pub.sock.sendall(b"".join(pub.text_frame(payload_of(k, size)) for k in range(1, total + 1)))
    epoch, want = None, 1
    for op, p in holder.frames():
        d = json.loads(p)
        if d.get("offset") != want or d.get("data") != payload_of(want, size):
            raise WSError(f"holder: expected offset {want}, got {str(d)[:120]}")
        epoch = d["epoch"]
        if want == total:
            break
        want += 1
    pub.close()
    return holder, epoch


def timed_recovery(port, group, since, epoch, gap, size):
    """Connect with since=group:since and read `gap` replayed messages: (t_first, t_last) in s."""
    t0 = time.perf_counter()
    c = WS(port, f"/ws?groups={group}&since={group}:{since}&epoch={epoch}")
    want, t_first = since + 1, None
    try:
        for op, p in c.frames():
            if t_first is None:
                t_first = time.perf_counter() - t0
            if p != payload_of(want, size).encode():
                raise WSError(f"expected message {want}, got {p[:100]!r}")
            if want == since + gap:
                return t_first, time.perf_counter() - t0
            want += 1
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=20, help="repetitions of each case (20)")
    ap.add_argument("--gap", type=int, default=1000, help="messages to recover (1000)")
    ap.add_argument("--lead", type=int, default=100, help="messages before the gap (100): since=G:LEAD")
    ap.add_argument("--history", type=int, default=2000, help="herald --history on both nodes (2000)")
    ap.add_argument("--size", type=int, default=128, help="payload bytes (128)")
    ap.add_argument("--workers", type=int, default=2, help="herald --workers per node (2)")
    ap.add_argument("--json", help="also write the samples to this file")
    a = ap.parse_args()
    if a.gap + a.lead > a.history or a.size < 8 or a.reps < 1 or a.gap < 1:
        ap.error("need gap + lead <= history, size >= 8, reps >= 1, gap >= 1")
    for b in (harness.HERALD, harness.REDIS):
        if not os.path.exists(b):
            sys.exit(f"recovery: {b} missing (build with `make build`; redis-server: Debian package)")

    def on_term(signum, frame):  # the `finally` below stops what was started, by PID
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    load0 = open("/proc/loadavg").read().strip()
    workdir = tempfile.mkdtemp(prefix="herald-recovery-")
    ports = harness.PortPool()
    redis = harness.Redis(ports.get(), workdir)
    nodes = []
    samples = {"memory": [], "redis": []}
    try:
        redis.start()
        url = f"redis://127.0.0.1:{redis.port}"
        for _ in range(2):
            n = harness.Server("herald", ports.get(), workdir, workers=a.workers,
                               extra=["--broker", url, "--history", str(a.history)])
            nodes.append(n)
            n.start()
            bad = n.wait_healthz_ok(15)
            if bad is not None:
                raise RuntimeError(f"node :{n.port} /healthz not ok: {bad}")
        A, B = nodes
        total = a.lead + a.gap
        for i in range(a.reps):
            g = f"rec{os.getpid()}x{i}"
            holder, epoch = fill_group(A.port, g, total, a.size)
            try:
                order = [("memory", A), ("redis", B)]
                if i % 2:
                    order.reverse()
                for case, node in order:
                    samples[case].append(timed_recovery(node.port, g, a.lead, epoch, a.gap, a.size))
            finally:
                holder.close()
            print(f"rep {i + 1}: memory {samples['memory'][-1][1] * 1e3:.2f} ms, "
                  f"redis {samples['redis'][-1][1] * 1e3:.2f} ms", file=sys.stderr, flush=True)
            time.sleep(0.05)
    finally:
        for n in reversed(nodes):
            n.stop()
        redis.stop()
    load1 = open("/proc/loadavg").read().strip()

    def ms(v):
        return f"{v * 1e3:.2f} ms"
    med = {c: (statistics.median(x[0] for x in s), statistics.median(x[1] for x in s))
           for c, s in samples.items()}
    cmd = " ".join(["bench/recovery.py"] + sys.argv[1:])
    print(f"`{cmd}`: {a.gap:,}-message gap ({a.size} B each), since=G:{a.lead}, {a.reps} repetitions "
          f"per case, alternating; herald `--workers {a.workers} --broker redis://127.0.0.1:PORT --history "
          f"{a.history}` ×2, one `redis-server`; load before {load0.split()[0]}, after {load1.split()[0]}.\n")
    print("| recovery of the gap | connect → first replayed message (median) | connect → last replayed message "
          "(median) | last: min / max | ratio (median last) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for case, label in (("memory", "(a) from memory: node A followed the group"),
                        ("redis", "(b) from Redis: node B never followed the group (SUBSCRIBE, GET, XRANGE)")):
        lasts = [x[1] for x in samples[case]]
        print(f"| {label} | {ms(med[case][0])} | {ms(med[case][1])} | {ms(min(lasts))} / {ms(max(lasts))} | "
              f"{med[case][1] / med['memory'][1]:.2f}× |")
    print(f"\nCommands as run: `{harness.rel(redis.command())}`; "
          + "; ".join(f"`{harness.rel(n.command())}`" for n in nodes))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "load_before": load0, "load_after": load1, "samples_s": samples,
                       "herald_cmds": [harness.rel(n.command()) for n in nodes],
                       "redis_cmd": harness.rel(redis.command())}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
