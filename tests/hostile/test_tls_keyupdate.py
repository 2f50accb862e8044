"""Issue 8, item 5: every byte waiting to be written for a connection counts against its bounds, TLS
records included. Each TLS 1.3 KeyUpdate(update_requested) asks the server for work (a KeyUpdate of its
own): a client that sends them by the hundred thousand and never reads must be closed -- they count
against --client-frame-rate like pings, and their replies against --queue-limit/--write-timeout --
instead of growing the server's memory BIO or eating a worker. A few KeyUpdates are normal.

The client is tls_keyupdate.c (Python's ssl cannot send KeyUpdate), built by CMake next to this suite;
HERALD_TLS_KEYUPDATE names it (CTest sets it).
"""

import os
import socket
import ssl
import subprocess
import time

import pytest

from conftest import herald_bin
from hostile_helpers import SMALL_QUARANTINE, HealthProbe, RssWatch, metric_of, slack
from test_tls import TlsHerald, make_cert   # the integration suite's TLS server runner

WRITE_TIMEOUT = 2


def keyupdate_client():
    path = os.environ.get("HERALD_TLS_KEYUPDATE") or os.path.join(
        os.path.dirname(herald_bin()), "tests", "hostile", "tls_keyupdate")
    assert os.access(path, os.X_OK), (f"the KeyUpdate client is missing: {path} (build the tls_keyupdate "
                                      f"target, or point HERALD_TLS_KEYUPDATE at it)")
    return path


def run_client(port, count, seconds):
    p = subprocess.run([keyupdate_client(), "127.0.0.1", str(port), str(count), str(seconds)],
                       capture_output=True, timeout=seconds + 30)
    out = p.stdout.decode().strip()
    assert p.returncode == 0, f"tls_keyupdate failed ({p.returncode}): {p.stderr.decode()}"
    report = dict(kv.split("=", 1) for kv in out.split())
    return report, out


@pytest.fixture
def tls_server(tmp_path):
    cert, key = make_cert(str(tmp_path))
    servers = []

    def start(*args):
        # SMALL_QUARANTINE: see hostile_helpers; TlsHerald keeps the ASAN_OPTIONS it finds in os.environ
        old = os.environ.get("ASAN_OPTIONS")
        os.environ["ASAN_OPTIONS"] = ":".join(x for x in [old, SMALL_QUARANTINE["ASAN_OPTIONS"]] if x)
        try:
            srv = TlsHerald(["--tls-cert", cert, "--tls-key", key, *args], str(tmp_path), cert)
        finally:
            if old is None:
                del os.environ["ASAN_OPTIONS"]
            else:
                os.environ["ASAN_OPTIONS"] = old
        servers.append(srv)
        return srv
    yield start
    problems = [p for s in servers for p in s.stop()]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def https_healthz_seconds(srv):
    def request(timeout):
        t0 = time.monotonic()
        st, _, body = srv.https("GET", "/healthz", timeout=timeout)
        assert (st, body) == (200, b"ok\n"), (st, body)
        return time.monotonic() - t0
    return request


def test_keyupdate_flood_is_bounded(tls_server):
    srv = tls_server("--write-timeout", WRITE_TIMEOUT, "--queue-limit", "256k")
    before = srv.metrics()
    # Each KeyUpdate is a request of its own, like a ping: --client-frame-rate (100/s by default) must
    # close the flooder within its first second. Its replies back up too (256 KiB queue limit, 2 s write
    # timeout), but how far depends on the kernel's socket buffers, which can hold every reply of a
    # 12 s flood: only the rate limit closes it on every machine, so it is the rate limit we assert.
    # One flooder is closed in milliseconds: flooders follow each other for 2 s, long enough for the
    # health probe to see whether the worker stays responsive meanwhile.
    bound = slack(1.0)
    lines = []
    with RssWatch(srv.pid) as rss, HealthProbe(srv.port, request=https_healthz_seconds(srv)) as probe:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2 and len(lines) < 200:
            report, line = run_client(srv.port, 400000, 12)
            lines.append(line)
            assert report["closed"] == "1", f"the server kept a KeyUpdate flooder open: {line}"
            assert float(report["closed_s"]) < bound, f"closed only after {report['closed_s']}s: {line}"
    print(f"{len(lines)} flooders, the first: {lines[0]}; RSS {rss.baseline_kb} -> peak {rss.peak_kb} kB; "
          f"worst https /healthz {probe.worst * 1000:.0f} ms over {probe.requests} probes")
    # OpenSSL handles post-handshake messages inside SSL_read: a server that lets one SSL_read run
    # while the socket stays fed is stuck there, its other connections starved
    probe.assert_fast(slack(1.0), "KeyUpdate flood")
    # Under ASan the bound is 3x: ASan's allocator fills a per-thread cache per size class the first
    # time a worker allocates in it, and a worker that has handed a connection off (tls.c) uses a few
    # more classes: +1.3 MiB per worker, once (measured: 7.9 MiB growth with the hand-off, 5.3 MiB
    # without; the release build grows ~0.3 MiB either way).
    rss.assert_growth_below(slack(4, 3), "KeyUpdate flood")
    after = srv.metrics()
    limited = metric_of(after, "herald_rate_limited_total") - metric_of(before, "herald_rate_limited_total")
    assert limited == len(lines), (f"{len(lines)} flooders, {limited} closed by --client-frame-rate: "
                                   f"{lines[0]}")
    st, _, body = srv.https("GET", "/healthz")
    assert (st, body) == (200, b"ok\n")


def test_tls_head_trickled_in_split_records_gets_408(tls_server):
    """Slowloris over TLS: the head's first byte comes in one record, then one byte a second, each
    byte's record sent in two halves. A read that completes no record delivers no data; it must not
    reset the head's deadline (--header-timeout from its first byte): 408 and close at ~2 s."""
    srv = tls_server("--header-timeout", "2")
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=slack(10))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = srv.ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")

    def pump_out():
        data = outgoing.read()
        if data:
            sock.sendall(data)
        return data

    while True:  # handshake through memory BIOs
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            pump_out()
            incoming.write(sock.recv(65536))
    pump_out()
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    tls.write(head[:1])
    pump_out()
    t0 = time.monotonic()
    sock.settimeout(0.05)
    answer, closed_at = b"", None
    for b in head[1:12]:  # never the whole head
        tls.write(bytes([b]))
        rec = outgoing.read()
        sock.sendall(rec[:3])          # half a record: the server reads, decrypts nothing
        time.sleep(0.5)
        try:
            sock.sendall(rec[3:])
        except OSError:
            closed_at = time.monotonic()
            break
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            try:
                d = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                d = b""
            if not d:
                closed_at = time.monotonic()
                break
            incoming.write(d)
            try:
                answer += tls.read(65536)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError, ssl.SSLError):
                pass
        if closed_at:
            break
    sock.close()
    assert closed_at is not None, f"still open {time.monotonic() - t0:.1f}s after the first byte"
    took = closed_at - t0
    assert took < slack(3.5), f"closed {took:.2f}s after the head's first byte (--header-timeout 2)"
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]


@pytest.mark.parametrize("count,suite", [(5, "TLS_AES_256_GCM_SHA384"), (70, "TLS_AES_256_GCM_SHA384"),
                                         (5, "TLS_AES_128_GCM_SHA256"), (5, "TLS_CHACHA20_POLY1305_SHA256")])
def test_keyupdates_after_the_handoff_then_data_both_ways(tls_server, count, suite):
    """After the hand-off (tls.c frees the SSL of an idle TLS 1.3 connection and carries its records
    itself), a subscriber's KeyUpdate(update_requested) is followed: the server reads under the
    client's next key and answers with a KeyUpdate of its own, so a ping after the KeyUpdates gets its
    pong, a published message arrives under the new keys, and the client's close_notify ends it.
    70 KeyUpdates arrive as more data-less records than one read takes (64): the ping behind them
    must still be read. Each TLS 1.3 suite the hand-off carries (SHA-384 and SHA-256 key schedules)."""
    srv = tls_server("--write-timeout", WRITE_TIMEOUT)
    p = subprocess.Popen([keyupdate_client(), "127.0.0.1", str(srv.port), "subscribe", "ku", str(count), suite],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = []
        for _ in range(2):
            lines.append(p.stdout.readline().decode().strip())
        assert lines == [f"pong server_keyupdates={count}", "ready"], (
            lines, p.stderr.read().decode() if p.poll() is not None else "")
        srv.publish("after five key updates", group="ku")
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, (out, err)
    assert out.decode().split() == ["msg=after", "five", "key", "updates", "closed=eof"], out
    m = srv.metrics()
    assert metric_of(m, "herald_rate_limited_total") == 0
    deadline = time.monotonic() + 5
    while metric_of(srv.metrics(), "herald_subscribers_open") != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric_of(srv.metrics(), "herald_subscribers_open") == 0


def test_a_few_keyupdates_are_fine(tls_server):
    """A client that updates its keys now and then (50 at once, under the 100/s frame rate) stays."""
    srv = tls_server("--write-timeout", WRITE_TIMEOUT)
    report, line = run_client(srv.port, 50, 3)
    assert report["closed"] == "0", f"a client with 50 KeyUpdates was closed: {line}"
    assert metric_of(srv.metrics(), "herald_rate_limited_total") == 0


def test_keyupdate_replies_stay_bounded_without_rate_limit(tls_server):
    """With --client-frame-rate 0 nothing counts the KeyUpdates: their replies then wait in the kernel's
    socket buffers and in herald, where the 256 KiB queue limit bounds them. herald's memory stays flat
    and its other connections stay served; if the flooder is closed, the close is counted as a slow
    consumer or a write timeout (whether it is depends on the kernel's buffer sizes)."""
    srv = tls_server("--client-frame-rate", "0", "--write-timeout", WRITE_TIMEOUT, "--queue-limit", "256k")
    before = srv.metrics()
    with RssWatch(srv.pid) as rss, HealthProbe(srv.port, request=https_healthz_seconds(srv)) as probe:
        report, line = run_client(srv.port, 400000, 3)
    print(line, f"RSS {rss.baseline_kb} -> peak {rss.peak_kb} kB; worst https /healthz "
          f"{probe.worst * 1000:.0f} ms over {probe.requests} probes")
    assert int(report["sent"]) > 1000, f"the flood never got going: {line}"
    probe.assert_fast(slack(1.0), "KeyUpdate flood without rate limit")
    rss.assert_growth_below(slack(4, 2), "KeyUpdate flood without rate limit")
    after = srv.metrics()
    assert metric_of(after, "herald_rate_limited_total") == metric_of(before, "herald_rate_limited_total")
    closes = sum(metric_of(after, k) - metric_of(before, k)
                 for k in ("herald_slow_consumer_closes_total", "herald_write_timeouts_total"))
    # A close the client saw was counted; the server may also have closed in the flood's last
    # moments, before the client noticed.
    assert int(report["closed"]) <= closes <= 1, f"{closes} counted closes for {line}"
