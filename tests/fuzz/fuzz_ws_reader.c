/* libFuzzer target: the incremental WebSocket frame reader (src/ws.h).
 *
 * Input layout: byte 0 picks max_message and the chunking mode, byte 1 seeds
 * the chunk sizes, the rest is the client byte stream. The stream is fed to
 * one reader in chunks and to another reader whole; both must satisfy the
 * reader's invariants and produce the same logical events:
 *  - a call consumes at most the bytes it was given;
 *  - WS_EV_NONE with input left must have made progress; events without
 *    progress cannot repeat forever;
 *  - DATA points into the bytes consumed by that call, with the opcode of
 *    its message; a message never exceeds max_message;
 *  - TEXT data is a valid UTF-8 prefix after every chunk (fail fast), and the
 *    whole message is valid UTF-8 at MESSAGE_END;
 *  - control payloads are <= 125 bytes; CLOSE has 1005 with no payload or a
 *    valid code with a UTF-8 reason;
 *  - ERROR carries 1002, 1007 or 1009 and the reader stays failed. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "fuzz_ws_reader: invariant failed: %s: ", #cond); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fprintf(stderr, "\n");                                         \
            abort();                                                       \
        }                                                                  \
    } while (0)

typedef struct vec {
    uint8_t *p;
    size_t n, cap;
} vec;

static void vec_put(vec *v, const void *p, size_t n)
{
    if (v->n + n > v->cap) {
        v->cap = (v->n + n) * 2 + 64;
        v->p = realloc(v->p, v->cap);
        if (!v->p)
            abort();
    }
    if (n)
        memcpy(v->p + v->n, p, n);
    v->n += n;
}

typedef struct run {
    ws_reader r;
    uint64_t max;
    vec log; /* serialized logical events */
    vec msg; /* current data message */
    bool in_msg;
    uint8_t msg_op;
    utf8_state utf8; /* independent check of the TEXT data seen so far */
    bool failed;
} run;

static void log_event(run *st, uint8_t type, uint8_t op, unsigned code, const uint8_t *d,
                      size_t n)
{
    uint8_t hdr[12] = {type, op, (uint8_t)(code >> 8), (uint8_t)code};
    memcpy(hdr + 4, &n, sizeof n < 8 ? sizeof n : 8);
    vec_put(&st->log, hdr, sizeof hdr);
    vec_put(&st->log, d, n);
}

static void drive(run *st, uint8_t *p, size_t n)
{
    size_t off = 0;
    int zero_streak = 0;
    while (!st->failed) {
        ws_event ev;
        size_t before = off;
        size_t used = ws_reader_feed(&st->r, p + off, n - off, &ev);
        CHECK(used <= n - off, "consumed %zu of %zu", used, n - off);
        off += used;
        if (ev.type == WS_EV_NONE) {
            if (off == n)
                return;
            CHECK(used > 0, "WS_EV_NONE without progress, %zu bytes left", n - off);
            zero_streak = 0;
            continue;
        }
        zero_streak = used ? 0 : zero_streak + 1;
        CHECK(zero_streak <= 2, "events without progress repeat (type %d)", ev.type);
        switch (ev.type) {
        case WS_EV_DATA:
            CHECK(ev.opcode == WS_OP_TEXT || ev.opcode == WS_OP_BINARY, "DATA opcode %u",
                  ev.opcode);
            if (!st->in_msg) {
                st->in_msg = true;
                st->msg_op = ev.opcode;
                st->msg.n = 0;
                utf8_init(&st->utf8);
            }
            CHECK(ev.opcode == st->msg_op, "DATA opcode changed %u -> %u", st->msg_op,
                  ev.opcode);
            if (ev.len) {
                CHECK(ev.data >= p + before && ev.data + ev.len <= p + before + used,
                      "DATA outside the bytes consumed by this call");
            }
            vec_put(&st->msg, ev.data, ev.len);
            if (st->max)
                CHECK(st->msg.n <= st->max, "message %zu bytes > max_message %llu", st->msg.n,
                      (unsigned long long)st->max);
            if (ev.opcode == WS_OP_TEXT)
                CHECK(utf8_feed(&st->utf8, ev.data, ev.len),
                      "TEXT DATA delivered with invalid UTF-8 (not failing fast)");
            break;
        case WS_EV_MESSAGE_END:
            CHECK(ev.opcode == WS_OP_TEXT || ev.opcode == WS_OP_BINARY, "END opcode %u",
                  ev.opcode);
            if (st->in_msg)
                CHECK(ev.opcode == st->msg_op, "END opcode %u, DATA had %u", ev.opcode,
                      st->msg_op);
            else
                st->msg.n = 0;
            if (ev.opcode == WS_OP_TEXT)
                CHECK(utf8_valid(st->msg.p, st->msg.n), "TEXT message of %zu bytes not UTF-8",
                      st->msg.n);
            log_event(st, WS_EV_MESSAGE_END, ev.opcode, 0, st->msg.p, st->msg.n);
            st->in_msg = false;
            st->msg.n = 0;
            break;
        case WS_EV_PING:
        case WS_EV_PONG:
        case WS_EV_CLOSE:
            CHECK(ev.len <= WS_MAX_CONTROL, "control payload %zu", ev.len);
            CHECK(ev.len == 0 || ev.data != NULL, "control payload without data");
            if (ev.type == WS_EV_CLOSE) {
                if (ev.code == WS_CLOSE_NO_STATUS)
                    CHECK(ev.len == 0, "1005 with a reason");
                else
                    CHECK(ws_close_code_valid(ev.code), "CLOSE with invalid code %u", ev.code);
                CHECK(utf8_valid(ev.data, ev.len), "CLOSE reason not UTF-8");
            }
            log_event(st, (uint8_t)ev.type, 0, ev.type == WS_EV_CLOSE ? ev.code : 0, ev.data,
                      ev.len);
            break;
        case WS_EV_ERROR: {
            CHECK(ev.code == WS_CLOSE_PROTOCOL || ev.code == WS_CLOSE_BAD_DATA ||
                      ev.code == WS_CLOSE_TOO_BIG,
                  "ERROR code %u", ev.code);
            CHECK(st->r.failed, "reader not failed after ERROR");
            log_event(st, WS_EV_ERROR, 0, ev.code, NULL, 0);
            st->failed = true;
            /* stays failed */
            ws_event ev2;
            ws_reader_feed(&st->r, p + off, n - off, &ev2);
            CHECK(ev2.type == WS_EV_ERROR && ev2.code == ev.code,
                  "after ERROR %u the reader gave type %d code %u", ev.code, ev2.type,
                  ev2.code);
            return;
        }
        default:
            CHECK(0, "unknown event type %d", ev.type);
        }
    }
}

static void run_init(run *st, uint64_t max)
{
    memset(st, 0, sizeof *st);
    st->max = max;
    ws_reader_init(&st->r, max);
}

static void run_free(run *st)
{
    free(st->log.p);
    free(st->msg.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    static const uint64_t maxes[8] = {0, 1, 10, 125, 126, 1000, 65536, 0};
    uint64_t max = maxes[data[0] & 7];
    unsigned mode = (data[0] >> 3) & 3; /* 0 whole, 1 bytes, 2 small, 3 mixed */
    uint32_t seed = data[1] * 2654435761u + 1;
    const uint8_t *in = data + 2;
    size_t n = size - 2;

    /* two copies: the reader unmasks in place */
    uint8_t *a = malloc(n ? n : 1), *b = malloc(n ? n : 1);
    if (!a || !b)
        abort();
    if (n) {
        memcpy(a, in, n);
        memcpy(b, in, n);
    }

    run chunked, whole;
    run_init(&chunked, max);
    run_init(&whole, max);

    size_t off = 0;
    do {
        size_t take = n - off;
        if (mode == 1) {
            take = take ? 1 : 0;
        } else if (mode >= 2) {
            seed = seed * 1103515245u + 12345u;
            size_t k = mode == 2 ? 1 + (seed >> 16) % 7 : 1 + (seed >> 16) % 200;
            if (k < take)
                take = k;
        }
        drive(&chunked, a + off, take);
        off += take;
    } while (off < n && !chunked.failed);

    drive(&whole, b, n);

    CHECK(chunked.log.n == whole.log.n &&
              (chunked.log.n == 0 || memcmp(chunked.log.p, whole.log.p, whole.log.n) == 0),
          "chunked feeding (mode %u) and whole feeding disagree", mode);
    CHECK(chunked.failed == whole.failed, "only one run failed");

    run_free(&chunked);
    run_free(&whole);
    free(a);
    free(b);
    return 0;
}
