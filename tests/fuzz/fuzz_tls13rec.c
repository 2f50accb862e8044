/* libFuzzer target for the TLS 1.3 record layer (src/tls13rec.c).
 *
 * Byte 0 picks the suite and the mode:
 *  - raw: the rest is a byte stream from the peer, fed in pieces whose sizes
 *    come from the input; open must ask for more, fail, or consume a record,
 *    never read past what it was given (ASan) or loop;
 *  - sealed: the rest is a list of inner plaintexts (a length byte, then
 *    that many bytes whose last is the content type, zeros allowed), each
 *    sealed by a peer with the right keys, so the fuzzer reaches everything
 *    after authentication: padding, content types, alerts, KeyUpdates (the
 *    peer then turns its key, and a requested one is answered and checked),
 *    then echoed back through tls13rec_seal_data and opened by the peer. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tls13rec.h"

static void pair(int suite, tls13rec *srv, tls13rec *cli)
{
    uint8_t a[48], b[48];
    for (int i = 0; i < 48; i++)
        a[i] = (uint8_t)(i * 7 + 1), b[i] = (uint8_t)(i * 11 + 2);
    size_t sl = tls13rec_secret_len(suite);
    if (!tls13rec_init(srv, suite, a, 0, b, 0, sl) || !tls13rec_init(cli, suite, b, 0, a, 0, sl))
        abort();
}

static uint8_t buf[2 * TLS13REC_MAX_RECORD];

static void raw(tls13rec *srv, const uint8_t *p, size_t n)
{
    size_t have = 0;
    while (n) {
        size_t k = 1 + p[0] % 64;
        p++, n--;
        if (k > n)
            k = n;
        if (have + k > sizeof buf)
            return;
        memcpy(buf + have, p, k);
        have += k, p += k, n -= k;
        for (;;) {
            tls13rec_msg m;
            long r = tls13rec_open(srv, buf, have, &m);
            if (r < 0)
                return;
            if (r == 0) {
                if (m.need <= have || m.need > TLS13REC_MAX_RECORD)
                    abort();
                break;
            }
            memmove(buf, buf + r, have - (size_t)r);
            have -= (size_t)r;
        }
    }
}

static void sealed(tls13rec *srv, tls13rec *cli, const uint8_t *p, size_t n)
{
    static uint8_t rec[TLS13REC_MAX_RECORD + 64], back[2 * TLS13REC_MAX_RECORD];
    while (n >= 2) {
        size_t k = p[0];
        p++, n--;
        if (k == 0 || k > n)
            k = n;
        uint8_t type = p[k - 1];
        struct iovec v = {(void *)p, k - 1};
        size_t rn = tls13rec_seal(cli, type, &v, 1, k - 1, rec);
        if (!rn)
            abort();
        /* What the reader must find: with a zero type byte, the data's
         * trailing zeros are padding and its last other byte the type. */
        size_t content = k - 1;
        uint8_t eff = type;
        if (type == 0) {
            while (content && p[content - 1] == 0)
                content--;
            eff = content ? p[content - 1] : 0;
            content = content ? content - 1 : 0;
        }
        /* a KeyUpdate turns the sender's key after its record */
        if (eff == 22 && content == 5 && p[0] == 24 && p[1] == 0 && p[2] == 0 && p[3] == 1 &&
            p[4] <= 1 && !tls13rec_update(cli, &cli->wr))
            abort();
        tls13rec_msg m;
        long r = tls13rec_open(srv, rec, rn, &m);
        if (r == TLS13REC_ERR_TYPE || r == TLS13REC_ERR_ALERT || r == TLS13REC_ERR_HANDSHAKE)
            return; /* refused: the connection would close */
        if (r != (long)rn)
            abort(); /* a well-formed record under the right key must open */
        if (m.kind == TLS13REC_DATA) {
            if (m.len != content || memcmp(m.data, p, m.len))
                abort();
            /* echo it back in records of our own */
            struct iovec e = {m.data, m.len};
            size_t taken, bn = tls13rec_seal_data(srv, &e, 1, m.len, back, sizeof back, &taken);
            size_t at = 0;
            if (m.len && (taken != m.len || !bn))
                abort();
            while (at < bn) {
                tls13rec_msg b;
                long br = tls13rec_open(cli, back + at, bn - at, &b);
                if (br <= 0 || (b.kind != TLS13REC_DATA && b.kind != TLS13REC_KEY_UPDATE))
                    abort();
                at += (size_t)br;
            }
        } else if (m.kind == TLS13REC_KEY_UPDATE && m.requested) {
            size_t bn = tls13rec_seal_key_update(srv, back);
            tls13rec_msg b;
            if (!bn || tls13rec_open(cli, back, bn, &b) != (long)bn || b.kind != TLS13REC_KEY_UPDATE)
                abort();
        } else if (m.kind == TLS13REC_CLOSE) {
            return;
        }
        p += k, n -= k;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int suite = 1 + data[0] % 3;
    tls13rec srv, cli;
    pair(suite, &srv, &cli);
    if (data[0] & 0x80)
        sealed(&srv, &cli, data + 1, size - 1);
    else
        raw(&srv, data + 1, size - 1);
    tls13rec_wipe(&srv);
    tls13rec_wipe(&cli);
    return 0;
}
