#!/usr/bin/env python3
"""Writes the seed corpora under tests/fuzz/corpus/<target>/.

The files are committed; rerun this only to change the seeds. Input formats:
  fuzz_ws_reader: byte 0 = max_message/chunking selector, byte 1 = chunk
                  seed, then the client byte stream (masked frames).
  fuzz_http:      the raw request bytes.
  fuzz_utf8:      byte 0 = chunk seed, then the text.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def frame(op, payload=b"", fin=True, mask=MASK, rsv=0):
    b0 = (0x80 if fin else 0) | rsv | op
    mbit = 0x80 if mask is not None else 0
    n = len(payload)
    if n <= 125:
        hdr = bytes([b0, mbit | n])
    elif n <= 0xFFFF:
        hdr = bytes([b0, mbit | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([b0, mbit | 127]) + struct.pack(">Q", n)
    if mask is None:
        return hdr + payload
    return hdr + mask + bytes(c ^ mask[i & 3] for i, c in enumerate(payload))


def close(code, reason=b""):
    return frame(0x8, struct.pack(">H", code) + reason)


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def ws_seeds():
    # selector byte: low 3 bits max_message (0 = unlimited, 2 = 10 bytes,
    # 5 = 1000), bits 3-4 chunking (0 whole, 1 bytes, 2 small, 3 mixed)
    kosme = "κόσμε".encode()
    seeds = {
        "text_hello": (0x00, frame(0x1, b"Hello")),
        "binary_126": (0x18, frame(0x2, bytes(range(126)))),
        "text_300": (0x10, frame(0x1, b"a" * 300)),
        "len64_form": (0x00, bytes([0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0, 5]) + MASK
                       + bytes(c ^ MASK[i & 3] for i, c in enumerate(b"12345"))),
        "fragmented_ping": (0x08, frame(0x1, b"frag1 ", fin=False) + frame(0x9, b"ping")
                            + frame(0x0, b"frag2", fin=True)),
        "utf8_split": (0x08, frame(0x1, kosme[:3], fin=False) + frame(0x0, kosme[3:])),
        "close_1000": (0x00, close(1000, b"bye")),
        "close_empty": (0x00, frame(0x8)),
        "pong_then_text": (0x18, frame(0xA, b"p") + frame(0x1, b"after")),
        "max_10_over": (0x02, frame(0x1, b"012345", fin=False) + frame(0x0, b"6789X")),
        "bad_utf8": (0x08, frame(0x1, kosme + b"\xf4\x90\x80\x80edited", fin=False)),
        "unmasked": (0x00, frame(0x1, b"hi", mask=None)),
        "rsv1": (0x00, frame(0x1, b"x", rsv=0x40)),
        "bad_close_code": (0x00, close(1005)),
        "len64_msb": (0x00, bytes([0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1]) + MASK),
        "many_small": (0x18, b"".join(frame(0x1 if i % 2 else 0x2, bytes([65 + i]) * i)
                                      for i in range(12))),
    }
    for name, (sel, stream) in seeds.items():
        write("ws_reader", name, bytes([sel, 0x5A]) + stream)


def http_seeds():
    seeds = {
        "ws_upgrade": b"GET /ws?groups=a%2Cb,c HTTP/1.1\r\nHost: localhost:8080\r\n"
                      b"Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      b"Sec-WebSocket-Version: 13\r\n\r\n",
        "publish_post": b"POST /publish?group=news HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nhello",
        "healthz_lf": b"GET /healthz HTTP/1.1\nHost: x\n\n",
        "http10": b"GET /stats HTTP/1.0\r\n\r\n",
        "obs_fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
        "http2": b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        "pipelined": b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        "incomplete": b"GET /ws?groups=a HTTP/1.1\r\nHost: x\r\nUpgr",
        "query_escapes": b"GET /ws?x=%zz&groupsx=1&groups=a+b%41&group= HTTP/1.1\r\nHost: x\r\n\r\n",
        "content_length": b"POST /publish HTTP/1.1\r\nContent-Length: +12\r\nTransfer-Encoding: chunked\r\n\r\n",
    }
    for name, data in seeds.items():
        write("http", name, data)


def utf8_seeds():
    seeds = {
        "kosme": "κόσμε".encode(),
        "mixed": "Hello-µ@ßöäüàá-UTF-8!! 日本 😀".encode(),
        "surrogate": b"ok\xed\xa0\x80",
        "overlong": b"\xc0\xaf\xe0\x80\xaf\xf0\x80\x80\xaf",
        "above_max": b"\xf4\x90\x80\x80",
        "truncated": b"abc\xe2\x82",
        "impossible": b"\xfe\xff",
        "boundaries": b"\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf",
        "ascii_long": b"The quick brown fox jumps over the lazy dog. " * 4,
    }
    for name, data in seeds.items():
        write("utf8", name, bytes([0x11]) + data)


if __name__ == "__main__":
    ws_seeds()
    http_seeds()
    utf8_seeds()
