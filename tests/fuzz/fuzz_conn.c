/* libFuzzer target: the whole connection state machine, in-process.
 *
 * Each input builds a fresh server with one worker (no thread: the harness
 * calls worker_run_pass itself), up to four client connections adopted from
 * socketpairs (the server ends non-blocking; optionally with minimal socket
 * buffers so that writes back up), and plays a script against it: HTTP heads,
 * upgrades to subscriber or publisher, frames, closes, pipelining, POST
 * bodies, arbitrary splits of each client's bytes across reads, arbitrary
 * read (= write capacity) on the client side, timers, shutdown.
 *
 * Input layout (segments separated by FZ_SEP = "\n~~~\n"):
 *   segment 0: byte 0 = flags, then the script, two bytes per op;
 *   segment k (1..4): the byte stream client k-1 sends, in order.
 * flags: bits 0-1 configuration (fz_argv below); bit 2 minimal socket
 *   buffers; bits 3-4 peer addresses (one IPv4, one IPv4 each, one IPv6 /64,
 *   IPv4-mapped IPv6 each); bit 5 TLS: the server gets a certificate and the
 *   clients are OpenSSL clients on memory BIOs (the streams are their
 *   plaintext); bit 6 with TLS: the last slot sends its stream raw anyway;
 *   bit 7 with TLS: clients offer TLS 1.2 at most.
 * An op is [op][arg]: op bits 0-1 the client slot, bits 2-4 and 6 the kind,
 * bit 5 "then run one loop pass". A client connects at the first op that
 * names it.
 *   0 WRITE  send the next n bytes of the slot's stream (arg 0: all the rest;
 *            1-192: n = arg; above: (arg-192)*64); what the socket does not
 *            take stays for a later write (over TLS: the ciphertext)
 *   1 READ   read up to n bytes back (arg 0: all there is; 1-192: arg;
 *            above: (arg-192)*256); not reading is what fills the server's
 *            queue
 *   2 PASS   (arg & 7) + 1 loop passes
 *   3 TIME   the worker's clock jumps fz_time_ms[arg & 15] ms, then one pass
 *   4 SHUT   the client shuts its write side (close_notify, then EOF)
 *   5 CLOSE  the client closes its socket
 *   6 STOP   worker_request_stop(restart = arg & 1) (SIGTERM / SIGINT)
 *   7 SYNC   up to (arg & 15) + 1 rounds of: every client reads all, one pass
 *   8 KEYUPDATE  TLS 1.3 KeyUpdate, update_requested = arg & 1
 *   9 RAW    the next n bytes (arg 0: the rest) straight to the socket, past
 *            TLS: from then on the client writes raw and is not checked
 *   10 RELOAD  the configuration in force becomes number arg & 7 (as SIGHUP
 *            does): 0-3 are those of the flags, 4-7 the same with
 *            --max-memory 1k (memory pressure from the next tick on)
 *   11-15    nothing (but bit 5 still runs a pass)
 * When the script ends, every client sends the rest of its stream and reads
 * everything until nothing moves, shuts its write side (same), and closes.
 *
 * Invariants checked besides the sanitizers (abort on failure):
 *  - what the server writes on each connection is a sequence of well-formed
 *    HTTP/1.1 responses (Content-Length bodies; nothing after one that says
 *    Connection: close); after a 200 text/event-stream (/sse) only LF-ended
 *    comments and events that start with their id line and hold only
 *    id/data/event fields (never compressed: no deflate on /sse); and after a
 *    101 only well-formed server frames: FIN set, no RSV bits but RSV1 on data
 *    frames after a 101 that accepted permessage-deflate (those must inflate,
 *    smaller than what they carry, to UTF-8 for text), unmasked, known opcode,
 *    minimal length encoding,
 *    control payloads <= 125, text payloads valid UTF-8, close frames with a
 *    valid code and UTF-8 reason, and nothing after the close frame;
 *  - TLS clients never fail on what the server sends (alerts aside): the
 *    records stay intact whatever the write capacity;
 *  - once every client has closed its socket (and a long time has passed),
 *    no connection is left;
 *  - after cleanup the open-connection, subscriber, publisher and queued-bytes
 *    gauges are back to zero; LeakSanitizer sees nothing left behind, and the
 *    heap does not keep growing from input to input (memory still reachable
 *    after teardown, summed over inputs, stays under FZ_RETAIN_MAX).
 *
 * Time: the harness defines clock_gettime so that the monotonic clocks run
 * ahead of the real ones by a per-input offset (TIME ops add to it; reset for
 * every input). herald reads them only through clock_gettime, and libFuzzer's
 * own timing uses the system clock, which is left alone. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <zlib.h>

#include "admit.h"
#include "chan.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "ref_utf8.h"
#include "server.h"
#include "tls.h"
#include "worker.h"

#define CHECK(cond, ...)                                                 \
    do {                                                                 \
        if (!(cond)) {                                                   \
            fprintf(stderr, "fuzz_conn: invariant failed: %s: ", #cond); \
            fprintf(stderr, __VA_ARGS__);                                \
            fprintf(stderr, "\n");                                       \
            abort();                                                     \
        }                                                                \
    } while (0)

#define FZ_SLOTS 4
#define FZ_SEP "\n~~~\n"
#define FZ_SEP_LEN 5
#define FZ_ROUNDS 4096       /* bound on the closing phases (each round moves bytes) */
#define FZ_HEAD_MAX 4096     /* longest response head the server may write */
#define FZ_PAYLOAD_KEEP (1u << 20)
#define FZ_RETAIN_MAX (64u << 20)

/* ASan's heap counter (weak: a build without ASan just skips the check). */
size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));

/* flags (byte 0) */
#define FZ_SMALL_BUFFERS 0x04
#define FZ_TLS 0x20       /* the server speaks TLS; clients are OpenSSL clients */
#define FZ_RAW_LAST 0x40  /* ... except the last slot, which sends its bytes raw */
#define FZ_TLS12 0x80     /* clients offer TLS 1.2 at most */

/* ---- virtual monotonic clock ---------------------------------------------- */

static uint64_t fz_skew_ns;

int clock_gettime(clockid_t id, struct timespec *ts)
{
    long r = syscall(SYS_clock_gettime, id, ts);
    bool mono = id == CLOCK_MONOTONIC || id == CLOCK_MONOTONIC_COARSE ||
                id == CLOCK_MONOTONIC_RAW || id == CLOCK_BOOTTIME;
    if (r == 0 && mono && fz_skew_ns) {
        uint64_t ns = (uint64_t)ts->tv_sec * 1000000000u + (uint64_t)ts->tv_nsec + fz_skew_ns;
        ts->tv_sec = (time_t)(ns / 1000000000u);
        ts->tv_nsec = (long)(ns % 1000000000u);
    }
    return (int)r;
}

/* ---- configurations --------------------------------------------------------- */

/* Small limits so that inputs of a few KiB reach them. The listen address is
 * not used: the harness gives the worker its own listener. Each is loaded
 * twice: as is (0-3), and with --max-memory 1k (4-7: under memory pressure as
 * soon as a tick samples the RSS), for RELOAD ops. */
#define FZ_CONFIGS 4
static const char *const fz_argv[FZ_CONFIGS][32] = {
    {"herald", "--workers", "1", "--listen", "127.0.0.1:0", "--log-level", "error",
     "--max-message-size", "4k", "--queue-limit", "16k", "--history", "4",
     "--history-memory", "8k", "--max-header-size", "2k", "--max-groups", "8",
     "--client-frame-rate", "50", NULL},
    {"herald", "--workers", "1", "--listen", "127.0.0.1:0", "--log-level", "error",
     "--max-message-size", "1k", "--queue-limit", "2k", "--slow-policy", "drop-oldest",
     "--history", "4", "--history-ttl", "1", "--max-conns-per-ip", "2", "--ping-interval", "1",
     "--idle-timeout", "3", "--write-timeout", "1", "--client-frame-rate", "0",
     "--group-linger", "1", NULL},
    {"herald", "--workers", "1", "--listen", "127.0.0.1:0", "--log-level", "error",
     "--max-message-size", "4k", "--queue-limit", "16k", "--history", "2",
     "--publish-key", "k1", "--publish-key", "k2", "--jwt-secret", "s3cret",
     "--allowed-origins", "https://a.example", "--accept-rate", "3", NULL},
    {"herald", "--workers", "1", "--listen", "127.0.0.1:0", "--log-level", "error",
     "--max-message-size", "64", "--queue-limit", "512", "--history", "1",
     "--max-header-size", "256", "--max-groups", "2", "--client-frame-rate", "5",
     "--max-live-groups", "3", "--header-timeout", "1", "--body-timeout", "1",
     "--body-min-rate", "64", NULL},
};

static const uint32_t fz_time_ms[16] = {1,    10,    100,   250,   1000,  2100,  5100,  10100,
                                        15000, 25100, 30100, 60100, 3,     50,    500,   120000};

/* ---- output oracle ------------------------------------------------------------ */

enum { OR_HEAD, OR_BODY, OR_ENDED, OR_WS, OR_WS_CLOSED, OR_SSE };

typedef struct oracle {
    int mode;
    int slot;
    uint8_t head[FZ_HEAD_MAX];
    size_t head_len;
    uint64_t body_left;
    bool body_start;     /* no body byte seen yet (a HEAD answer has none) */
    bool close_after;    /* the current response said Connection: close */
    /* WebSocket frames */
    uint8_t hdr[10];
    uint8_t hdr_have, hdr_need;
    uint8_t op;
    uint64_t plen, ppos;
    uint8_t *pay;
    size_t pay_have, pay_cap;
    /* Server-Sent Events: the start of the current line, and the event */
    char line[16];
    size_t line_len;
    bool ev_open;        /* a field line seen since the last blank line */
    bool ev_id;          /* ... and the event's first line was its id */
    bool deflate;        /* the 101 accepted permessage-deflate */
    bool rsv1;           /* the current frame is compressed */
} oracle;

/* A compressed frame (RFC 7692) must inflate (after the 00 00 ff ff tail) to
 * at most limit bytes; its plain payload goes to *out (malloc'd). */
static bool fz_inflate(const uint8_t *p, size_t n, uint8_t **out, size_t *out_len)
{
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    z_stream zs = {0};
    if (inflateInit2(&zs, -15) != Z_OK)
        return false;
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    bool ok = buf != NULL, ended = false;
    for (int part = 0; ok && !ended && part < 2; part++) {
        zs.next_in = (Bytef *)(uintptr_t)(part ? tail : p);
        zs.avail_in = (uInt)(part ? sizeof tail : n);
        for (;;) {
            if (len == cap) {
                uint8_t *b = cap < (64u << 20) ? realloc(buf, cap * 2) : NULL;
                if (!(ok = b != NULL))
                    break;
                buf = b;
                cap *= 2;
            }
            zs.next_out = buf + len;
            zs.avail_out = (uInt)(cap - len);
            int rc = inflate(&zs, Z_SYNC_FLUSH);
            len = cap - zs.avail_out;
            if (rc == Z_STREAM_END) {
                ended = true;
                break;
            }
            if (!(ok = rc == Z_OK || rc == Z_BUF_ERROR))
                break;
            if (zs.avail_out > 0) /* all input used, all output out */
                break;
        }
    }
    inflateEnd(&zs);
    if (!ok) {
        free(buf);
        return false;
    }
    *out = buf;
    *out_len = len;
    return true;
}

static bool fz_utf8_ok(const uint8_t *p, size_t n)
{
    bool complete;
    return ref_first_bad(p, n, &complete) == n && complete;
}

static bool fz_close_code_ok(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* A complete response head is in o->head. */
static void or_head_done(oracle *o)
{
    const char *h = (const char *)o->head;
    size_t n = o->head_len;
    CHECK(n >= 13 && memcmp(h, "HTTP/1.1 ", 9) == 0 && h[9] >= '1' && h[9] <= '5' &&
              h[10] >= '0' && h[10] <= '9' && h[11] >= '0' && h[11] <= '9' && h[12] == ' ',
          "client %d: not an HTTP/1.1 status line: %.40s", o->slot, h);
    int status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
    o->head[n] = '\0'; /* room kept: head_len < FZ_HEAD_MAX */
    if (status == 101) {
        o->mode = OR_WS;
        o->deflate = strstr(h, "\r\nSec-WebSocket-Extensions: permessage-deflate; "
                               "server_no_context_takeover") != NULL;
        o->hdr_have = 0;
        o->hdr_need = 2;
        return;
    }
    o->head_len = 0;
    if (status == 100) {
        o->mode = OR_HEAD;
        return;
    }
    if (status == 200 && strstr(h, "\r\nContent-Type: text/event-stream")) {
        /* /sse: the body is the stream, until the connection ends */
        CHECK(!strstr(h, "\r\nContent-Length: ") && strstr(h, "\r\nConnection: close\r\n"),
              "client %d: event stream with a length or kept alive", o->slot);
        o->mode = OR_SSE;
        o->line_len = 0;
        o->ev_open = false;
        return;
    }
    const char *cl = strstr(h, "\r\nContent-Length: ");
    CHECK(cl, "client %d: %d response without Content-Length", o->slot, status);
    char *end;
    unsigned long long len = strtoull(cl + 18, &end, 10);
    CHECK(end != cl + 18 && end[0] == '\r', "client %d: bad Content-Length", o->slot);
    o->close_after = strstr(h, "\r\nConnection: close\r\n") != NULL;
    o->body_left = len;
    o->body_start = true;
    o->mode = len ? OR_BODY : (o->close_after ? OR_ENDED : OR_HEAD);
}

static void or_frame_done(oracle *o)
{
    size_t n = o->pay_have;
    bool whole = o->plen == n;
    if (o->rsv1 && whole) {
        uint8_t *plain = NULL;
        size_t pn = 0;
        CHECK(fz_inflate(o->pay, n, &plain, &pn), "client %d: compressed frame of %zu bytes "
              "does not inflate", o->slot, n);
        CHECK(pn > n, "client %d: compressed frame no smaller than its payload", o->slot);
        if (o->op == 0x1)
            CHECK(fz_utf8_ok(plain, pn), "client %d: compressed text is not UTF-8", o->slot);
        free(plain);
    } else if (o->op == 0x1 && whole) {
        CHECK(fz_utf8_ok(o->pay, n), "client %d: text frame of %zu bytes is not UTF-8", o->slot,
              n);
    }
    if (o->op == 0x8) {
        CHECK(n != 1, "client %d: close frame with a 1-byte payload", o->slot);
        if (n >= 2) {
            unsigned code = (unsigned)o->pay[0] << 8 | o->pay[1];
            CHECK(fz_close_code_ok(code), "client %d: close code %u", o->slot, code);
            CHECK(fz_utf8_ok(o->pay + 2, n - 2), "client %d: close reason is not UTF-8",
                  o->slot);
        }
        o->mode = OR_WS_CLOSED;
    }
    o->hdr_have = 0;
    o->hdr_need = 2;
    o->pay_have = 0;
}

static void or_frame_header(oracle *o)
{
    uint8_t b0 = o->hdr[0], b1 = o->hdr[1];
    if (o->hdr_have == 2) {
        CHECK(b0 & 0x80, "client %d: server frame without FIN (0x%02x)", o->slot, b0);
        CHECK(!(b0 & 0x30), "client %d: server frame with RSV2/RSV3 (0x%02x)", o->slot, b0);
        o->op = b0 & 0x0F;
        o->rsv1 = b0 & 0x40;
        CHECK(!o->rsv1 || (o->deflate && (o->op == 0x1 || o->op == 0x2)),
              "client %d: RSV1 without permessage-deflate or on a control frame (0x%02x)",
              o->slot, b0);
        CHECK(o->op == 0x1 || o->op == 0x2 || o->op == 0x8 || o->op == 0x9 || o->op == 0xA,
              "client %d: server frame opcode %u", o->slot, o->op);
        CHECK(!(b1 & 0x80), "client %d: masked server frame", o->slot);
        unsigned l7 = b1 & 0x7F;
        CHECK(o->op < 0x8 || l7 <= 125, "client %d: control frame of length code %u", o->slot,
              l7);
        o->hdr_need = l7 == 126 ? 4 : l7 == 127 ? 10 : 2;
        if (o->hdr_need > 2)
            return;
    }
    if (o->hdr_have < o->hdr_need)
        return;
    unsigned l7 = b1 & 0x7F;
    uint64_t len = l7;
    if (l7 == 126) {
        len = (uint64_t)o->hdr[2] << 8 | o->hdr[3];
        CHECK(len >= 126, "client %d: 16-bit length %llu not minimal", o->slot,
              (unsigned long long)len);
    } else if (l7 == 127) {
        len = 0;
        for (int i = 2; i < 10; i++)
            len = len << 8 | o->hdr[i];
        CHECK(len > 0xFFFF && !(len >> 63), "client %d: 64-bit length %llu", o->slot,
              (unsigned long long)len);
    }
    o->plen = len;
    o->ppos = 0;
    o->pay_have = 0;
    if (len == 0)
        or_frame_done(o);
}

static void or_ws(oracle *o, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        CHECK(o->mode != OR_WS_CLOSED, "client %d: %zu bytes after the close frame", o->slot,
              n - i);
        if (o->hdr_have < o->hdr_need) {
            o->hdr[o->hdr_have++] = p[i++];
            or_frame_header(o);
            continue;
        }
        uint64_t left = o->plen - o->ppos;
        size_t k = n - i < left ? n - i : (size_t)left;
        if ((o->op == 0x1 || o->op == 0x8 || o->rsv1) && o->plen <= FZ_PAYLOAD_KEEP) {
            if (o->pay_have + k > o->pay_cap) {
                size_t cap = o->pay_cap ? o->pay_cap : 256;
                while (cap < o->pay_have + k)
                    cap *= 2;
                o->pay = realloc(o->pay, cap);
                CHECK(o->pay, "out of memory");
                o->pay_cap = cap;
            }
            memcpy(o->pay + o->pay_have, p + i, k);
            o->pay_have += k;
        }
        o->ppos += k;
        i += k;
        if (o->ppos == o->plen)
            or_frame_done(o);
    }
}

/* An event stream line is complete (its first bytes in o->line): herald
 * writes LF-ended lines, comments, and events whose first line is their id
 * followed by known fields only. */
static void or_sse_line(oracle *o)
{
    const char *l = o->line;
    size_t n = o->line_len;
    if (n == 0) {
        o->ev_open = false;
        return;
    }
    if (l[0] == ':')
        return; /* keep-alive comment (between events, or after an id line whose event
                 * drop-oldest took while the line was being written) */
    bool id = n >= 4 && memcmp(l, "id: ", 4) == 0;
    bool data = n >= 6 && memcmp(l, "data: ", 6) == 0;
    bool event = n >= 7 && memcmp(l, "event: ", 7) == 0;
    if (n >= 7 && memcmp(l, "retry: ", 7) == 0 && !o->ev_open)
        return; /* a cluster node asking to come back (conn_sse_retry_later) */
    CHECK(id || data || event, "client %d: event stream line '%.*s'", o->slot, (int)n, l);
    if (!o->ev_open) {
        o->ev_open = true;
        o->ev_id = id;
    }
    CHECK(o->ev_id, "client %d: an event that does not start with its id", o->slot);
}

static void or_sse(oracle *o, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        /* CR only: a text message may hold U+0000, which is data to SSE too */
        CHECK(p[i] != '\r', "client %d: CR in the event stream", o->slot);
        if (p[i] == '\n') {
            or_sse_line(o);
            o->line_len = 0;
        } else if (o->line_len < sizeof o->line) {
            o->line[o->line_len++] = (char)p[i];
        } else {
            o->line_len = sizeof o->line; /* only the start matters */
        }
    }
}

/* Feeds bytes the server wrote to this client. */
static void or_feed(oracle *o, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        switch (o->mode) {
        case OR_HEAD:
            CHECK(o->head_len < FZ_HEAD_MAX - 1, "client %d: response head over %d bytes",
                  o->slot, FZ_HEAD_MAX);
            o->head[o->head_len++] = p[i++];
            if (o->head_len >= 4 && memcmp(o->head + o->head_len - 4, "\r\n\r\n", 4) == 0)
                or_head_done(o);
            break;
        case OR_BODY:
            /* Bodies (JSON, text, metrics, HTML) never start with 'H': one
             * that does is the next response, after a HEAD answer. */
            if (o->body_start && p[i] == 'H' && !o->close_after) {
                o->mode = OR_HEAD;
                break;
            }
            o->body_start = false;
            {
                size_t k = n - i < o->body_left ? n - i : (size_t)o->body_left;
                i += k;
                o->body_left -= k;
            }
            if (o->body_left == 0)
                o->mode = o->close_after ? OR_ENDED : OR_HEAD;
            break;
        case OR_ENDED:
            CHECK(0, "client %d: %zu bytes after a Connection: close response", o->slot, n - i);
            break;
        case OR_SSE:
            or_sse(o, p + i, n - i);
            return;
        default:
            or_ws(o, p + i, n - i);
            return;
        }
    }
}

/* ---- the harness ---------------------------------------------------------------- */

typedef struct client {
    int fd; /* our end: -1 before the connection and after CLOSE */
    bool opened, write_dead;
    const uint8_t *data;
    size_t len, off;
    /* TLS: the client's SSL on memory BIOs; its ciphertext waits in ct until
     * the socket takes it. */
    SSL *ssl;
    bool hs_done;
    bool tls_off; /* the session is over (or never was): no more TLS I/O */
    bool raw;     /* writes bypass TLS (RAW op, or the raw last slot) */
    size_t owed;  /* plaintext bytes WRITE ops asked for that SSL has not taken yet */
    uint8_t *ct;
    size_t ct_len, ct_cap;
    bool check; /* the output oracle applies */
    oracle o;
} client;

static struct {
    config *cfg[2 * FZ_CONFIGS];
    int lfd;
    SSL_CTX *tls_server, *tls_client[2]; /* client: up to TLS 1.3 / TLS 1.2 only */
    SSL_SESSION *tls_session;            /* TLS 1.3 clients resume it */
    server srv;
    worker_deps deps;
    worker w;
    bool stopped;
    uint8_t flags;
    client cl[FZ_SLOTS];
    uint8_t buf[65536];
    bool trace; /* FUZZ_CONN_TRACE=1: log ops and what each client reads and writes */
    uint64_t inputs, retained; /* heap left behind by inputs, summed (FZ_RETAIN_MAX) */
} F;

static void fz_trace_bytes(int slot, const char *what, const uint8_t *p, size_t n)
{
    fprintf(stderr, "  [%d] %s %zu:", slot, what, n);
    for (size_t i = 0; i < n && i < 160; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
            fputc(p[i], stderr);
        else
            fprintf(stderr, "\\x%02x", p[i]);
    }
    fprintf(stderr, "%s\n", n > 160 ? "..." : "");
}

/* A throwaway P-256 key and self-signed certificate, through files because
 * tls_ctx_new takes paths. */
static SSL_CTX *fz_tls_server_ctx(void)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    CHECK(key && x, "cannot make a test key");
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3650L * 86400);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    CHECK(X509_sign(x, key, EVP_sha256()) > 0, "cannot sign the test certificate");
    char cert_path[] = "/tmp/fuzz_conn_cert.XXXXXX", key_path[] = "/tmp/fuzz_conn_key.XXXXXX";
    int cfd = mkstemp(cert_path), kfd = mkstemp(key_path);
    CHECK(cfd >= 0 && kfd >= 0, "mkstemp: %s", strerror(errno));
    FILE *cf = fdopen(cfd, "w"), *kf = fdopen(kfd, "w");
    CHECK(cf && kf && PEM_write_X509(cf, x) == 1 &&
              PEM_write_PrivateKey(kf, key, NULL, NULL, 0, NULL, NULL) == 1,
          "cannot write the test certificate");
    fclose(cf);
    fclose(kf);
    SSL_CTX *ctx = tls_ctx_new(cert_path, key_path);
    unlink(cert_path);
    unlink(key_path);
    X509_free(x);
    EVP_PKEY_free(key);
    CHECK(ctx, "tls_ctx_new refused the test certificate");
    return ctx;
}

/* One full TLS 1.3 handshake in memory, for a session ticket: clients that
 * resume skip the certificate (parsing it and checking its signature are
 * most of a handshake's cost), so TLS inputs run several times faster. */
static SSL_SESSION *fz_tls_first_session(void)
{
    SSL *cl = SSL_new(F.tls_client[0]), *sv = SSL_new(F.tls_server);
    BIO *a, *b;
    CHECK(cl && sv && BIO_new_bio_pair(&a, 0, &b, 0) == 1, "SSL_new");
    SSL_set_bio(cl, a, a);
    SSL_set_bio(sv, b, b);
    SSL_set_connect_state(cl);
    SSL_set_accept_state(sv);
    uint8_t byte;
    for (int i = 0; i < 20 && !SSL_get0_peer_certificate(cl); i++) {
        SSL_do_handshake(cl);
        SSL_do_handshake(sv);
    }
    for (int i = 0; i < 4; i++) { /* the tickets follow the handshake */
        SSL_write(sv, "", 0);
        SSL_read(cl, &byte, 1);
    }
    SSL_SESSION *sess = SSL_get1_session(cl);
    CHECK(sess && SSL_SESSION_is_resumable(sess), "no resumable TLS session");
    SSL_shutdown(cl); /* freed without it, the session would be spoiled */
    SSL_free(cl);
    SSL_free(sv);
    ERR_clear_error();
    return sess;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN); /* as server_run does: a vanished peer is EPIPE */
    const char *t = getenv("FUZZ_CONN_TRACE");
    F.trace = t && *t && *t != '0';
    log_configure(LOG_ERROR, false);
    static char *no_env[] = {NULL};
    for (int i = 0; i < 2 * FZ_CONFIGS; i++) {
        const char *argv_i[40];
        int n = 0;
        for (; fz_argv[i % FZ_CONFIGS][n]; n++)
            argv_i[n] = fz_argv[i % FZ_CONFIGS][n];
        if (i >= FZ_CONFIGS) {
            argv_i[n++] = "--max-memory";
            argv_i[n++] = "1k";
        }
        argv_i[n] = NULL;
        config_result r = config_load(n, (char **)argv_i, no_env, stdout, stderr, &F.cfg[i]);
        CHECK(r == CONFIG_OK, "configuration %d does not load", i);
    }
    /* The worker's listener: a real one nobody connects to (each input's
     * worker gets a duplicate, which worker_cleanup closes). */
    F.lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(F.lfd >= 0 && bind(F.lfd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
              listen(F.lfd, 1) == 0,
          "cannot listen on 127.0.0.1: %s", strerror(errno));
    F.tls_server = fz_tls_server_ctx();
    for (int i = 0; i < 2; i++) {
        F.tls_client[i] = SSL_CTX_new(TLS_client_method());
        CHECK(F.tls_client[i], "SSL_CTX_new");
        SSL_CTX_set_verify(F.tls_client[i], SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_session_cache_mode(F.tls_client[i], SSL_SESS_CACHE_OFF);
        if (i == 1)
            SSL_CTX_set_max_proto_version(F.tls_client[i], TLS1_2_VERSION);
    }
    F.tls_session = fz_tls_first_session();
    /* No more tickets: a client decodes the server's certificate again for
     * every ticket it stores, which would undo the saving. */
    SSL_CTX_set_num_tickets(F.tls_server, 0);
    return 0;
}

static void fz_pass(void)
{
    if (!F.stopped && !worker_run_pass(&F.w, 0))
        F.stopped = true; /* the worker thread would have left its loop */
}

static void fz_peer(int slot, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    unsigned mode = (F.flags >> 3) & 3;
    if (mode < 2) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)(40000 + slot));
        in->sin_addr.s_addr = htonl(0x7F000001u + (mode ? (uint32_t)slot : 0));
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)(40000 + slot));
        uint8_t *a = in6->sin6_addr.s6_addr;
        if (mode == 2) { /* 2001:db8::<slot>:1, one /64 */
            a[0] = 0x20, a[1] = 0x01, a[2] = 0x0d, a[3] = 0xb8;
            a[13] = (uint8_t)slot;
            a[15] = 1;
        } else { /* ::ffff:10.0.0.<slot> */
            a[10] = a[11] = 0xff;
            a[12] = 10;
            a[15] = (uint8_t)slot;
        }
    }
}

static client *fz_client(int slot)
{
    client *c = &F.cl[slot];
    if (c->opened)
        return c;
    c->opened = true;
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0,
          "socketpair: %s", strerror(errno));
    if (F.flags & FZ_SMALL_BUFFERS) { /* the kernel rounds up to its minimum (a few KiB) */
        int one = 1;
        for (int i = 0; i < 2; i++) {
            setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &one, sizeof one);
            setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &one, sizeof one);
        }
    }
    c->fd = sv[0];
    c->check = true;
    if (F.flags & FZ_TLS) {
        if (slot == FZ_SLOTS - 1 && (F.flags & FZ_RAW_LAST)) {
            c->raw = true; /* plaintext at a TLS server */
            c->check = false;
        } else {
            BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
            c->ssl = SSL_new(F.tls_client[(F.flags & FZ_TLS12) ? 1 : 0]);
            CHECK(rb && wb && c->ssl, "SSL_new");
            SSL_set_bio(c->ssl, rb, wb);
            SSL_set_connect_state(c->ssl);
            if (!(F.flags & FZ_TLS12)) /* TLS 1.2 clients do full handshakes */
                SSL_set_session(c->ssl, F.tls_session);
        }
    }
    struct sockaddr_storage peer;
    fz_peer(slot, &peer);
    worker_adopt(&F.w, sv[1], &peer); /* owns sv[1] from here, even on failure */
    return c;
}

/* Writes bytes to the socket; returns how many it took. */
static size_t fz_send(client *c, const uint8_t *p, size_t n)
{
    if (c->fd < 0 || c->write_dead || n == 0)
        return 0;
    ssize_t r = write(c->fd, p, n);
    if (r < 0) {
        if (errno != EAGAIN && errno != EINTR)
            c->write_dead = true; /* EPIPE: the server closed */
        return 0;
    }
    if (F.trace)
        fz_trace_bytes((int)(c - F.cl), c->ssl ? "sent" : "wrote", p, (size_t)r);
    return (size_t)r;
}

static bool fz_tls(const client *c) { return c->ssl && !c->tls_off && !c->raw; }

/* TLS: moves the client's new ciphertext behind what waits, and writes what
 * the socket takes. */
static size_t fz_tls_push(client *c)
{
    BIO *wb = SSL_get_wbio(c->ssl);
    size_t n;
    while ((n = BIO_ctrl_pending(wb)) > 0) {
        if (c->ct_len + n > c->ct_cap) {
            c->ct_cap = (c->ct_len + n) * 2;
            c->ct = realloc(c->ct, c->ct_cap);
            CHECK(c->ct, "out of memory");
        }
        int r = BIO_read(wb, c->ct + c->ct_len, (int)n);
        CHECK(r > 0, "BIO_read");
        c->ct_len += (size_t)r;
    }
    size_t k = fz_send(c, c->ct, c->ct_len);
    memmove(c->ct, c->ct + k, c->ct_len - k);
    c->ct_len -= k;
    return k;
}

/* A TLS error on the client side. Alerts the server sent are its right;
 * any other error means it wrote records the client cannot parse. */
static void fz_tls_error(client *c, const char *what)
{
    unsigned long e, first = 0;
    bool alert = false;
    while ((e = ERR_get_error())) {
        if (!first)
            first = e;
        alert |= ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) >= SSL_AD_REASON_OFFSET;
    }
    char why[256];
    ERR_error_string_n(first, why, sizeof why);
    CHECK(alert || !first, "client %d: %s failed on what the server sent: %s", (int)(c - F.cl),
          what, why);
    c->tls_off = true;
    c->check = false; /* the session is over; plaintext after it is not ours to see */
}

/* TLS: hands SSL the plaintext owed, once the handshake is done. */
static void fz_tls_write(client *c)
{
    if (!c->hs_done || c->tls_off || c->write_dead || !c->owed)
        return;
    ERR_clear_error();
    int r = SSL_write(c->ssl, c->data + c->off, (int)c->owed);
    if (r > 0) {
        c->off += (size_t)r;
        c->owed -= (size_t)r;
    } else if (SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
        c->write_dead = true;
    }
}

/* TLS: the handshake, then every record the server sent, into the oracle. */
static void fz_tls_progress(client *c)
{
    ERR_clear_error();
    if (!c->hs_done) {
        int r = SSL_do_handshake(c->ssl);
        if (r == 1) {
            c->hs_done = true;
            if (F.trace)
                fprintf(stderr, "  [%d] %s handshake done%s\n", (int)(c - F.cl),
                        SSL_get_version(c->ssl), SSL_session_reused(c->ssl) ? " (resumed)" : "");
        } else {
            int e = SSL_get_error(c->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                fz_tls_error(c, "handshake");
                return;
            }
        }
    }
    fz_tls_write(c);
    while (c->hs_done && !c->tls_off) {
        int r = SSL_read(c->ssl, F.buf, sizeof F.buf);
        if (r > 0) {
            if (F.trace)
                fz_trace_bytes((int)(c - F.cl), "read", F.buf, (size_t)r);
            or_feed(&c->o, F.buf, (size_t)r);
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_ZERO_RETURN) { /* close_notify: the server is done */
            c->tls_off = true;
            c->check = false;
        } else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            fz_tls_error(c, "SSL_read");
        }
        break;
    }
    fz_tls_push(c);
}

/* Sends up to n bytes of the stream (0: all the rest); over TLS, n more bytes
 * of plaintext, as soon as the handshake is done. Returns the bytes the socket
 * took. */
static size_t fz_write(client *c, size_t n)
{
    size_t left = c->len - c->off;
    if (n == 0 || n > left)
        n = left;
    if (c->ssl && !c->raw && c->tls_off)
        return 0;
    if (!fz_tls(c)) {
        size_t k = fz_send(c, c->data + c->off, n);
        c->off += k;
        return k;
    }
    c->owed = c->owed + n < left ? c->owed + n : left;
    if (c->hs_done)
        fz_tls_write(c);
    else
        fz_tls_progress(c); /* starts the handshake; the plaintext follows it */
    return fz_tls_push(c);
}

/* Reads up to want bytes from the socket (0: all there is). */
static size_t fz_read(client *c, size_t want)
{
    size_t got = 0;
    while (c->fd >= 0 && (want == 0 || got < want)) {
        size_t n = sizeof F.buf;
        if (want && want - got < n)
            n = want - got;
        ssize_t r = read(c->fd, F.buf, n);
        if (r <= 0)
            break; /* nothing now, EOF, or reset */
        got += (size_t)r;
        if (fz_tls(c)) {
            CHECK(BIO_write(SSL_get_rbio(c->ssl), F.buf, (int)r) == (int)r, "BIO_write");
            continue;
        }
        if (F.trace)
            fz_trace_bytes((int)(c - F.cl), "read", F.buf, (size_t)r);
        if (c->check)
            or_feed(&c->o, F.buf, (size_t)r);
    }
    if (fz_tls(c))
        fz_tls_progress(c);
    return got;
}

static size_t fz_read_all(void)
{
    size_t got = 0;
    for (int i = 0; i < FZ_SLOTS; i++)
        got += fz_read(&F.cl[i], 0);
    return got;
}

/* The client stops writing: close_notify over TLS, then EOF. */
static void fz_shut(client *c)
{
    if (fz_tls(c) && c->hs_done && !c->write_dead) {
        SSL_shutdown(c->ssl);
        fz_tls_push(c);
    }
    if (c->fd >= 0)
        shutdown(c->fd, SHUT_WR);
    c->write_dead = true;
}

static void fz_close(client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static const char *const fz_kind_names[16] = {
    "WRITE", "READ", "PASS", "TIME", "SHUT", "CLOSE", "STOP", "SYNC",
    "KEYUPDATE", "RAW", "RELOAD", "NOP", "NOP", "NOP", "NOP", "NOP"};

static void fz_op(uint8_t op, uint8_t arg)
{
    int slot = op & 3;
    unsigned kind = ((op >> 2) & 7) | ((op >> 3) & 8);
    if (F.trace)
        fprintf(stderr, "op %s slot %d arg %u%s (conns %u)\n", fz_kind_names[kind], slot, arg,
                op & 0x20 ? " +pass" : "", F.w.env.nconns);
    switch (kind) {
    case 0:
        fz_write(fz_client(slot), arg <= 192 ? arg : (size_t)(arg - 192) * 64);
        break;
    case 1:
        fz_read(fz_client(slot), arg <= 192 ? arg : (size_t)(arg - 192) * 256);
        break;
    case 2:
        for (int i = 0; i <= (arg & 7); i++)
            fz_pass();
        break;
    case 3:
        fz_skew_ns += (uint64_t)fz_time_ms[arg & 15] * 1000000u;
        fz_pass();
        break;
    case 4:
        fz_shut(fz_client(slot));
        break;
    case 5:
        fz_close(fz_client(slot));
        break;
    case 6:
        worker_request_stop(&F.w, arg & 1);
        break;
    case 7:
        for (int i = 0; i <= (arg & 15); i++) {
            size_t got = fz_read_all();
            fz_pass();
            if (!got && i)
                break;
        }
        break;
    case 8: { /* TLS 1.3 KeyUpdate, asking the server to update too (arg & 1) */
        client *c = fz_client(slot);
        if (fz_tls(c) && c->hs_done && !c->write_dead &&
            SSL_key_update(c->ssl, (arg & 1) ? SSL_KEY_UPDATE_REQUESTED
                                             : SSL_KEY_UPDATE_NOT_REQUESTED) == 1) {
            SSL_do_handshake(c->ssl);
            fz_tls_push(c);
        }
        ERR_clear_error();
        break;
    }
    case 9: { /* raw stream bytes, past TLS if any: the session is garbage after */
        client *c = fz_client(slot);
        size_t n = arg ? arg : c->len - c->off;
        if (n > c->len - c->off)
            n = c->len - c->off;
        if (c->ssl) {
            c->raw = true;
            c->check = false;
        }
        c->off += fz_send(c, c->data + c->off, n);
        break;
    }
    case 10: /* SIGHUP: what server_reload does once the new snapshot is loaded */
        F.srv.cfg = F.cfg[arg & 7];
        config_set(F.srv.cfg);
        break;
    default:
        break;
    }
    if (op & 0x20)
        fz_pass();
}

/* After the script: the rest of every stream goes out, then EOF, then every
 * client goes away. Each phase runs while bytes move (bounded). */
static void fz_finish(void)
{
    if (F.trace)
        fprintf(stderr, "finish (conns %u)\n", F.w.env.nconns);
    for (int round = 0, quiet = 0; round < FZ_ROUNDS && quiet < 2 && !F.stopped; round++) {
        size_t moved = 0;
        for (int i = 0; i < FZ_SLOTS; i++) {
            client *c = &F.cl[i];
            if (!c->opened && c->len)
                c = fz_client(i);
            if (c->opened)
                moved += fz_write(c, 0);
        }
        moved += fz_read_all();
        fz_pass();
        quiet = moved ? 0 : quiet + 1;
    }
    for (int i = 0; i < FZ_SLOTS; i++)
        if (F.cl[i].opened)
            fz_shut(&F.cl[i]);
    for (int round = 0, quiet = 0;
         round < FZ_ROUNDS && quiet < 2 && !F.stopped && F.w.env.nconns; round++) {
        size_t moved = fz_read_all();
        fz_pass();
        quiet = moved ? 0 : quiet + 1;
    }
    for (int i = 0; i < FZ_SLOTS; i++)
        fz_close(&F.cl[i]);
    for (int k = 0; k < 4 && !F.stopped && F.w.env.nconns; k++)
        fz_pass();
    if (!F.stopped && F.w.env.nconns) { /* whatever waits for a deadline */
        fz_skew_ns += 3600ull * 1000000000u;
        for (int k = 0; k < 4 && !F.stopped && F.w.env.nconns; k++)
            fz_pass();
    }
    CHECK(F.stopped || F.w.env.nconns == 0,
          "%u connection(s) left after every client closed and an hour passed", F.w.env.nconns);
}

/* Splits the input into the script and the client streams. */
static void fz_parse(const uint8_t *data, size_t size, const uint8_t **script, size_t *slen)
{
    const uint8_t *end = data + size, *p = data;
    const uint8_t *sep = memmem(p, size, FZ_SEP, FZ_SEP_LEN);
    *script = p;
    *slen = sep ? (size_t)(sep - p) : size;
    for (int i = 0; i < FZ_SLOTS && sep; i++) {
        p = sep + FZ_SEP_LEN;
        sep = memmem(p, (size_t)(end - p), FZ_SEP, FZ_SEP_LEN);
        F.cl[i].data = p;
        F.cl[i].len = sep && i < FZ_SLOTS - 1 ? (size_t)(sep - p) : (size_t)(end - p);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    for (int i = 0; i < FZ_SLOTS; i++) {
        F.cl[i] = (client){.fd = -1, .data = (const uint8_t *)""};
        F.cl[i].o.slot = i;
    }
    size_t heap0 =
        __sanitizer_get_current_allocated_bytes ? __sanitizer_get_current_allocated_bytes() : 0;
    const uint8_t *script;
    size_t slen;
    fz_parse(data, size, &script, &slen);
    F.flags = script[0];
    F.stopped = false;
    fz_skew_ns = 0;

    const config *cfg = F.cfg[F.flags & 3];
    config_set(cfg);
    admit_init();
    CHECK(chan_init(true), "chan_init"); /* no broker: this node numbers messages */
    chan_set_epoch("00000000000000e1");  /* not random: inputs replay exactly */
    F.srv = (server){.cfg = cfg, .workers = &F.w, .nworkers = 1, .start_ms = loop_clock_ms(),
                     .tls = (F.flags & FZ_TLS) ? F.tls_server : NULL};
    int lfd = fcntl(F.lfd, F_DUPFD_CLOEXEC, 0);
    CHECK(lfd >= 0, "dup: %s", strerror(errno));
    F.deps = server_worker_deps(&F.srv);
    CHECK(worker_init(&F.w, &F.deps, 0, lfd) == 0, "worker_init: %s", strerror(errno));

    for (size_t i = 1; i + 1 < slen; i += 2)
        fz_op(script[i], script[i + 1]);
    fz_finish();

    worker_cleanup(&F.w);
    const metrics *m = &F.w.m;
    CHECK(m->connections_open == 0 && m->subscribers_open == 0 && m->publishers_open == 0 &&
              m->queued_bytes == 0,
          "gauges not back to zero: connections %llu subscribers %llu publishers %llu "
          "queued_bytes %llu",
          (unsigned long long)m->connections_open, (unsigned long long)m->subscribers_open,
          (unsigned long long)m->publishers_open, (unsigned long long)m->queued_bytes);
    chan_destroy();
    admit_destroy();
    for (int i = 0; i < FZ_SLOTS; i++) {
        if (F.cl[i].ssl) /* as if shut down: keeps the shared session resumable */
            SSL_set_shutdown(F.cl[i].ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        SSL_free(F.cl[i].ssl);
        free(F.cl[i].ct);
        free(F.cl[i].o.pay);
    }
    /* The first inputs warm up OpenSSL's and libc's lazy state: not counted. */
    if (heap0 && ++F.inputs > 16) {
        size_t heap1 = __sanitizer_get_current_allocated_bytes();
        if (F.trace)
            fprintf(stderr, "heap: %+lld bytes\n", (long long)heap1 - (long long)heap0);
        if (heap1 > heap0)
            F.retained += heap1 - heap0;
        CHECK(F.retained < FZ_RETAIN_MAX,
              "%llu bytes of heap kept after teardown over %llu inputs: memory grows from "
              "input to input",
              (unsigned long long)F.retained, (unsigned long long)F.inputs);
    }
    return 0;
}
