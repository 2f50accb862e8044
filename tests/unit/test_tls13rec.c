/* Unit tests for the TLS 1.3 record layer (src/tls13rec.c). The RFC 8448
 * section 3 trace pins key/IV derivation and record protection; records
 * for the other cases are sealed here with EVP directly (raw_seal), so the
 * reader is checked against an independent writer, not only against
 * itself. We play the server: the read direction is the client's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "tls13rec.h"

static size_t unhex(const char *s, uint8_t *out)
{
    size_t n = 0;
    while (*s) {
        if (*s == ' ' || *s == '\n') {
            s++;
            continue;
        }
        unsigned v;
        assert_int_equal(sscanf(s, "%2x", &v), 1);
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

/* RFC 8448 section 3 (Simple 1-RTT Handshake). */
#define C_AP_SECRET "9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5"
#define S_AP_SECRET "a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643"
#define C_AP_KEY "17422dda596ed5d9acd890e3c63f5051"
#define C_AP_IV "5b78923dee08579033e523d9"
#define S_AP_KEY "9f02283b6c9c07efc26bb9f2ac92e356"
#define S_AP_IV "cf782b88dd83549aadf1e984"
/* {client} send application_data record (seq 0): payload 00 01 .. 31 */
#define C_APP_REC                                                                                  \
    "1703030043a23f7054b62c94d0affafe8228ba55cbefacea42f914aa66bcab3f2b9819a8a5b46b395bd54a9a2044" \
    "1e2b62974e1f5a6292a2977014bd1e3deae63aeebb21694915e4"
/* {server} send application_data record (seq 1, after the NewSessionTicket): the same payload */
#define S_APP_REC                                                                                  \
    "17030300432e937e11ef4ac740e538ad36005fc4a46932fc3225d05f82aa1b36e30efaf97d90e6dffc602dcb501a" \
    "59a8fcc49c4bf2e5f0a21c0047c2abf332540dd032e167c2955d"
/* {client} send alert record (seq 1): close_notify */
#define C_ALERT_REC "1703030013c9872760655666b74d7ff1153efd6db6d0b0e3"

static void rfc_state(tls13rec *r)
{
    uint8_t cs[32], ss[32];
    unhex(C_AP_SECRET, cs);
    unhex(S_AP_SECRET, ss);
    assert_true(tls13rec_init(r, TLS13REC_AES_128_GCM_SHA256, cs, 0, ss, 0, 32));
}

static void test_rfc8448_derive(void **state)
{
    (void)state;
    uint8_t secret[32], key[32], iv[12], want_key[16], want_iv[12];
    unhex(C_AP_SECRET, secret);
    assert_true(tls13rec_derive(TLS13REC_AES_128_GCM_SHA256, secret, key, iv));
    unhex(C_AP_KEY, want_key);
    unhex(C_AP_IV, want_iv);
    assert_memory_equal(key, want_key, 16);
    assert_memory_equal(iv, want_iv, 12);
    unhex(S_AP_SECRET, secret);
    assert_true(tls13rec_derive(TLS13REC_AES_128_GCM_SHA256, secret, key, iv));
    unhex(S_AP_KEY, want_key);
    unhex(S_AP_IV, want_iv);
    assert_memory_equal(key, want_key, 16);
    assert_memory_equal(iv, want_iv, 12);
    assert_false(tls13rec_derive(0, secret, key, iv));
    assert_false(tls13rec_derive(7, secret, key, iv));
}

static void test_rfc8448_records(void **state)
{
    (void)state;
    tls13rec r;
    rfc_state(&r);
    uint8_t rec[128], payload[50];
    for (int i = 0; i < 50; i++)
        payload[i] = (uint8_t)i;
    /* the client's data record opens to the payload */
    size_t n = unhex(C_APP_REC, rec);
    tls13rec_msg m;
    assert_int_equal(tls13rec_open(&r, rec, n, &m), (long)n);
    assert_int_equal(m.kind, TLS13REC_DATA);
    assert_int_equal(m.len, 50);
    assert_memory_equal(m.data, payload, 50);
    assert_int_equal(r.rd.seq, 1);
    /* our record at seq 1 is the server's, byte for byte */
    uint8_t out[128], want[128];
    size_t wn = unhex(S_APP_REC, want);
    r.wr.seq = 1;
    struct iovec v[2] = {{payload, 20}, {payload + 20, 30}};
    assert_int_equal(tls13rec_seal(&r, 23, v, 2, 50, out), wn);
    assert_memory_equal(out, want, wn);
    assert_int_equal(r.wr.seq, 2);
    /* and the client's close_notify at seq 1 */
    n = unhex(C_ALERT_REC, rec);
    assert_int_equal(n, 24);
    assert_int_equal(tls13rec_open(&r, rec, n, &m), 24);
    assert_int_equal(m.kind, TLS13REC_CLOSE);
    tls13rec_wipe(&r);
}

/* ---- an independent writer: EVP straight, any inner plaintext ------------- */

static const EVP_CIPHER *cipher_of(int suite)
{
    return suite == TLS13REC_AES_128_GCM_SHA256   ? EVP_aes_128_gcm()
           : suite == TLS13REC_AES_256_GCM_SHA384 ? EVP_aes_256_gcm()
                                                  : EVP_chacha20_poly1305();
}

/* Seals inner (content, type and padding as given) with d's key at d->seq. */
static size_t raw_seal(int suite, tls13rec_dir *d, const uint8_t *inner, size_t n, uint8_t *out)
{
    size_t len = n + 16;
    out[0] = 23, out[1] = 3, out[2] = 3, out[3] = (uint8_t)(len >> 8), out[4] = (uint8_t)len;
    uint8_t nonce[12];
    memcpy(nonce, d->iv, 12);
    for (int i = 0; i < 8; i++)
        nonce[11 - i] ^= (uint8_t)(d->seq >> (8 * i));
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int ol, fl;
    assert_int_equal(EVP_EncryptInit_ex(c, cipher_of(suite), NULL, d->key, nonce), 1);
    assert_int_equal(EVP_EncryptUpdate(c, NULL, &ol, out, 5), 1);
    assert_int_equal(EVP_EncryptUpdate(c, out + 5, &ol, inner, (int)n), 1);
    assert_int_equal(EVP_EncryptFinal_ex(c, out + 5 + ol, &fl), 1);
    assert_int_equal(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, out + 5 + n), 1);
    EVP_CIPHER_CTX_free(c);
    d->seq++;
    return 5 + len;
}

/* A server and the client facing it (directions swapped), fresh secrets. */
static void pair(int suite, tls13rec *srv, tls13rec *cli)
{
    uint8_t a[48], b[48];
    for (int i = 0; i < 48; i++)
        a[i] = (uint8_t)(i * 7 + suite), b[i] = (uint8_t)(i * 13 + 1);
    size_t sl = tls13rec_secret_len(suite);
    assert_true(tls13rec_init(srv, suite, a, 5, b, 3, sl));
    assert_true(tls13rec_init(cli, suite, b, 3, a, 5, sl));
}

static uint8_t big[70000];

static void roundtrip(int suite)
{
    tls13rec srv, cli;
    pair(suite, &srv, &cli);
    static uint8_t wire[80000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 31 + 7);
    /* server -> client: many pieces, split into records of 2^14 */
    struct iovec v[5] = {{big, 100}, {big + 100, 0}, {big + 100, 20000}, {big + 20100, 1}, {big + 20101, 19899}};
    size_t taken, n = tls13rec_seal_data(&srv, v, 5, 65536, wire, sizeof wire, &taken);
    assert_int_equal(taken, 40000);
    assert_int_equal(n, 40000 + 3 * TLS13REC_OVERHEAD);
    size_t at = 0, got = 0;
    while (at < n) {
        tls13rec_msg m;
        long k = tls13rec_open(&cli, wire + at, n - at, &m);
        assert_true(k > 0);
        assert_int_equal(m.kind, TLS13REC_DATA);
        assert_memory_equal(m.data, big + got, m.len);
        got += m.len;
        at += (size_t)k;
    }
    assert_int_equal(got, 40000);
    /* the client asks for a KeyUpdate: its own key turns, ours after our reply */
    uint8_t inner[6] = {24, 0, 0, 1, 1, 22};
    uint8_t rec[64];
    size_t rn = raw_seal(suite, &cli.wr, inner, sizeof inner, rec);
    assert_true(tls13rec_update(&cli, &cli.wr));
    tls13rec_msg m;
    assert_int_equal(tls13rec_open(&srv, rec, rn, &m), (long)rn);
    assert_int_equal(m.kind, TLS13REC_KEY_UPDATE);
    assert_true(m.requested);
    assert_int_equal(srv.rd.seq, 0);
    rn = tls13rec_seal_key_update(&srv, rec);
    assert_int_equal(rn, 5 + 5 + 1 + 16);
    assert_int_equal(srv.wr.seq, 0);
    assert_int_equal(tls13rec_open(&cli, rec, rn, &m), (long)rn);
    assert_int_equal(m.kind, TLS13REC_KEY_UPDATE);
    assert_false(m.requested);
    /* data both ways under the new keys */
    struct iovec one = {(void *)"after", 5};
    rn = tls13rec_seal(&srv, 23, &one, 1, 5, rec);
    assert_int_equal(tls13rec_open(&cli, rec, rn, &m), (long)rn);
    assert_int_equal(m.len, 5);
    assert_memory_equal(m.data, "after", 5);
    rn = tls13rec_seal(&cli, 23, &one, 1, 5, rec);
    assert_int_equal(tls13rec_open(&srv, rec, rn, &m), (long)rn);
    assert_memory_equal(m.data, "after", 5);
    /* our close_notify */
    rn = tls13rec_seal_close_notify(&srv, rec);
    assert_int_equal(tls13rec_open(&cli, rec, rn, &m), (long)rn);
    assert_int_equal(m.kind, TLS13REC_CLOSE);
}

static void test_roundtrip_aes128(void **s) { (void)s; roundtrip(TLS13REC_AES_128_GCM_SHA256); }
static void test_roundtrip_aes256(void **s) { (void)s; roundtrip(TLS13REC_AES_256_GCM_SHA384); }
static void test_roundtrip_chacha(void **s) { (void)s; roundtrip(TLS13REC_CHACHA20_POLY1305_SHA256); }

static long open_inner(tls13rec *srv, tls13rec *cli, const uint8_t *inner, size_t n, tls13rec_msg *m)
{
    static uint8_t rec[TLS13REC_MAX_RECORD + 64];
    size_t rn = raw_seal(srv->suite, &cli->wr, inner, n, rec);
    return tls13rec_open(srv, rec, rn, m);
}

static void test_inner_types_and_padding(void **state)
{
    (void)state;
    tls13rec srv, cli;
    pair(TLS13REC_AES_128_GCM_SHA256, &srv, &cli);
    tls13rec_msg m;
    /* data with padding: the zeros go, the data's own zeros stay */
    uint8_t padded[] = {'a', 0, 'b', 0, 23, 0, 0, 0, 0};
    assert_true(open_inner(&srv, &cli, padded, sizeof padded, &m) > 0);
    assert_int_equal(m.kind, TLS13REC_DATA);
    assert_int_equal(m.len, 4);
    assert_memory_equal(m.data, "a\0b\0", 4);
    /* empty application data is allowed */
    uint8_t empty[] = {23};
    assert_true(open_inner(&srv, &cli, empty, 1, &m) > 0);
    assert_int_equal(m.kind, TLS13REC_DATA);
    assert_int_equal(m.len, 0);
    /* user_canceled is ignored, other alerts end it */
    uint8_t canceled[] = {1, 90, 21};
    assert_true(open_inner(&srv, &cli, canceled, 3, &m) > 0);
    assert_int_equal(m.kind, TLS13REC_IGNORED);
    uint8_t fatal[] = {2, 20, 21};
    assert_int_equal(open_inner(&srv, &cli, fatal, 3, &m), TLS13REC_ERR_ALERT);
    uint8_t long_alert[] = {1, 0, 0, 21};
    assert_int_equal(open_inner(&srv, &cli, long_alert, 4, &m), TLS13REC_ERR_TYPE);
    uint8_t empty_alert[] = {21};
    assert_int_equal(open_inner(&srv, &cli, empty_alert, 1, &m), TLS13REC_ERR_TYPE);
    /* no content type at all, and unknown ones */
    uint8_t zeros[8] = {0};
    assert_int_equal(open_inner(&srv, &cli, zeros, 8, &m), TLS13REC_ERR_TYPE);
    uint8_t ccs[] = {1, 20};
    assert_int_equal(open_inner(&srv, &cli, ccs, 2, &m), TLS13REC_ERR_TYPE);
    uint8_t unknown[] = {'x', 99};
    assert_int_equal(open_inner(&srv, &cli, unknown, 2, &m), TLS13REC_ERR_TYPE);
    /* handshake: one whole KeyUpdate, nothing else */
    uint8_t nst[] = {4, 0, 0, 1, 0, 22};
    assert_int_equal(open_inner(&srv, &cli, nst, sizeof nst, &m), TLS13REC_ERR_HANDSHAKE);
    uint8_t ku_bad_value[] = {24, 0, 0, 1, 2, 22};
    assert_int_equal(open_inner(&srv, &cli, ku_bad_value, sizeof ku_bad_value, &m), TLS13REC_ERR_HANDSHAKE);
    uint8_t ku_long[] = {24, 0, 0, 2, 0, 0, 22};
    assert_int_equal(open_inner(&srv, &cli, ku_long, sizeof ku_long, &m), TLS13REC_ERR_HANDSHAKE);
    uint8_t two_ku[] = {24, 0, 0, 1, 0, 24, 0, 0, 1, 0, 22};
    assert_int_equal(open_inner(&srv, &cli, two_ku, sizeof two_ku, &m), TLS13REC_ERR_HANDSHAKE);
    uint8_t ku_half[] = {24, 0, 0, 22};
    assert_int_equal(open_inner(&srv, &cli, ku_half, sizeof ku_half, &m), TLS13REC_ERR_HANDSHAKE);
}

static void test_forged_and_malformed(void **state)
{
    (void)state;
    tls13rec srv, cli;
    pair(TLS13REC_CHACHA20_POLY1305_SHA256, &srv, &cli);
    tls13rec_msg m;
    uint8_t rec[64], inner[] = {'h', 'i', 23};
    size_t rn = raw_seal(srv.suite, &cli.wr, inner, 3, rec);
    /* truncated: how many bytes are needed */
    assert_int_equal(tls13rec_open(&srv, rec, 0, &m), 0);
    assert_int_equal(m.need, 5);
    assert_int_equal(tls13rec_open(&srv, rec, 4, &m), 0);
    assert_int_equal(m.need, 5);
    assert_int_equal(tls13rec_open(&srv, rec, rn - 1, &m), 0);
    assert_int_equal(m.need, rn);
    /* every single flipped bit in the header, body or tag fails */
    for (size_t i = 0; i < rn; i++) {
        uint8_t copy[64];
        memcpy(copy, rec, rn);
        copy[i] ^= 0x10;
        long k = tls13rec_open(&srv, copy, rn, &m);
        assert_true(k < 0 || k == 0);
        assert_int_equal(srv.rd.seq, 5); /* nothing consumed */
    }
    /* the wrong sequence number (a dropped or replayed record) fails */
    uint8_t keep[64];
    memcpy(keep, rec, rn); /* opening decrypts in place, even when it fails */
    srv.rd.seq = 6;
    assert_int_equal(tls13rec_open(&srv, rec, rn, &m), TLS13REC_ERR_DECRYPT);
    memcpy(rec, keep, rn);
    srv.rd.seq = 5;
    assert_int_equal(tls13rec_open(&srv, rec, rn, &m), (long)rn);
    assert_memory_equal(m.data, "hi", 2);
    assert_int_equal(tls13rec_open(&srv, keep, rn, &m), TLS13REC_ERR_DECRYPT); /* replay */
    /* outer type and version */
    uint8_t hdr[5] = {22, 3, 3, 0, 20};
    assert_int_equal(tls13rec_open(&srv, hdr, 5, &m), TLS13REC_ERR_HEADER);
    hdr[0] = 21;
    assert_int_equal(tls13rec_open(&srv, hdr, 1, &m), TLS13REC_ERR_HEADER);
    hdr[0] = 23, hdr[2] = 1;
    assert_int_equal(tls13rec_open(&srv, hdr, 5, &m), TLS13REC_ERR_HEADER);
    /* lengths: below type + tag, above 2^14 + 256 */
    uint8_t l16[5] = {23, 3, 3, 0, 16};
    assert_int_equal(tls13rec_open(&srv, l16, 5, &m), TLS13REC_ERR_LENGTH);
    uint8_t lbig[5] = {23, 3, 3, (16384 + 257) >> 8, (16384 + 257) & 255};
    assert_int_equal(tls13rec_open(&srv, lbig, 5, &m), TLS13REC_ERR_LENGTH);
    /* an inner plaintext over 2^14 + 1 (authentic, but too long) */
    static uint8_t huge[16386];
    memset(huge, 'x', sizeof huge);
    huge[sizeof huge - 1] = 23;
    assert_int_equal(open_inner(&srv, &cli, huge, sizeof huge, &m), TLS13REC_ERR_OVERFLOW);
    /* exactly 2^14 of data is fine */
    assert_int_equal(open_inner(&srv, &cli, huge + 1, sizeof huge - 1, &m), TLS13REC_HEADER + 16385 + 16);
    assert_int_equal(m.len, 16384);
}

static void test_sequence_limits_and_rekey(void **state)
{
    (void)state;
    tls13rec srv, cli;
    pair(TLS13REC_AES_256_GCM_SHA384, &srv, &cli);
    uint8_t rec[256];
    tls13rec_msg m;
    struct iovec v = {(void *)"x", 1};
    srv.wr.seq = UINT64_MAX;
    assert_int_equal(tls13rec_seal(&srv, 23, &v, 1, 1, rec), 0);
    size_t taken;
    assert_int_equal(tls13rec_seal_data(&srv, &v, 1, 100, rec, sizeof rec, &taken), 0);
    srv.rd.seq = UINT64_MAX;
    uint8_t any[40] = {23, 3, 3, 0, 20};
    assert_int_equal(tls13rec_open(&srv, any, 25, &m), TLS13REC_ERR_SEQ);
    /* at the rekey mark our key turns before the data: the peer follows */
    pair(TLS13REC_AES_256_GCM_SHA384, &srv, &cli);
    srv.wr.seq = TLS13REC_REKEY_AFTER;
    cli.rd.seq = TLS13REC_REKEY_AFTER;
    size_t n = tls13rec_seal_data(&srv, &v, 1, 100, rec, sizeof rec, &taken);
    assert_int_equal(taken, 1);
    assert_int_equal(n, (5 + TLS13REC_OVERHEAD) + (1 + TLS13REC_OVERHEAD));
    assert_int_equal(srv.wr.seq, 1);
    long k = tls13rec_open(&cli, rec, n, &m);
    assert_int_equal(k, 5 + TLS13REC_OVERHEAD);
    assert_int_equal(m.kind, TLS13REC_KEY_UPDATE);
    assert_false(m.requested);
    assert_int_equal(tls13rec_open(&cli, rec + k, n - (size_t)k, &m), (long)(1 + TLS13REC_OVERHEAD));
    assert_memory_equal(m.data, "x", 1);
    /* no room: nothing sealed, nothing taken */
    assert_int_equal(tls13rec_seal_data(&srv, &v, 1, 100, rec, TLS13REC_OVERHEAD, &taken), 0);
    assert_int_equal(taken, 0);
}

static void test_bad_setup(void **state)
{
    (void)state;
    tls13rec r;
    uint8_t s[48] = {1};
    assert_false(tls13rec_init(&r, TLS13REC_AES_128_GCM_SHA256, s, 0, s, 0, 48));
    assert_false(tls13rec_init(&r, TLS13REC_AES_256_GCM_SHA384, s, 0, s, 0, 32));
    assert_false(tls13rec_init(&r, 0, s, 0, s, 0, 32));
    assert_int_equal(tls13rec_suite_of(0x1301), TLS13REC_AES_128_GCM_SHA256);
    assert_int_equal(tls13rec_suite_of(0x1302), TLS13REC_AES_256_GCM_SHA384);
    assert_int_equal(tls13rec_suite_of(0x1303), TLS13REC_CHACHA20_POLY1305_SHA256);
    assert_int_equal(tls13rec_suite_of(0x1304), 0); /* CCM stays with OpenSSL */
    assert_int_equal(tls13rec_secret_len(TLS13REC_AES_256_GCM_SHA384), 48);
    assert_int_equal(tls13rec_secret_len(9), 0);
    assert_true(tls13rec_init(&r, TLS13REC_AES_128_GCM_SHA256, s, 0, s, 0, 32));
    tls13rec_wipe(&r);
    static const uint8_t zero[sizeof r];
    assert_memory_equal(&r, zero, sizeof r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc8448_derive),
        cmocka_unit_test(test_rfc8448_records),
        cmocka_unit_test(test_roundtrip_aes128),
        cmocka_unit_test(test_roundtrip_aes256),
        cmocka_unit_test(test_roundtrip_chacha),
        cmocka_unit_test(test_inner_types_and_padding),
        cmocka_unit_test(test_forged_and_malformed),
        cmocka_unit_test(test_sequence_limits_and_rekey),
        cmocka_unit_test(test_bad_setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
