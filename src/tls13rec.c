#include "tls13rec.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <pthread.h>
#include <string.h>

#define CT_ALERT 21
#define CT_HANDSHAKE 22
#define CT_APPDATA 23
#define HS_KEY_UPDATE 24
#define ALERT_CLOSE_NOTIFY 0
#define ALERT_USER_CANCELED 90
#define MAX_INNER (TLS13REC_MAX_PLAIN + 1) /* content + type + padding */

/* Fetched once: an implicit fetch per EVP_CipherInit would take a lock and
 * a lookup per record. */
static EVP_CIPHER *rec_ciphers[4];
static EVP_KDF *rec_hkdf;
static pthread_once_t rec_once = PTHREAD_ONCE_INIT;
static pthread_key_t rec_key;

/* One cipher context per suite and thread, not two per connection: a
 * context costs ~1 KB with its key schedule, and re-keying it per record is
 * cheap next to encrypting the record (bench/tls13rec measures both ways). */
typedef struct rec_thread {
    EVP_CIPHER_CTX *ctx[4];
} rec_thread;
static _Thread_local rec_thread *rec_mine;

static void rec_thread_free(void *p)
{
    rec_thread *t = p;
    for (int i = 0; i < 4; i++)
        EVP_CIPHER_CTX_free(t->ctx[i]);
    OPENSSL_free(t);
}

static void rec_init_once(void)
{
    rec_ciphers[TLS13REC_AES_128_GCM_SHA256] = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
    rec_ciphers[TLS13REC_AES_256_GCM_SHA384] = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    rec_ciphers[TLS13REC_CHACHA20_POLY1305_SHA256] = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
    rec_hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    pthread_key_create(&rec_key, rec_thread_free); /* frees a worker's contexts when it ends */
}

static bool suite_ok(int suite)
{
    return suite >= TLS13REC_AES_128_GCM_SHA256 && suite <= TLS13REC_CHACHA20_POLY1305_SHA256;
}

int tls13rec_suite_of(uint16_t code)
{
    switch (code) {
    case 0x1301:
        return TLS13REC_AES_128_GCM_SHA256;
    case 0x1302:
        return TLS13REC_AES_256_GCM_SHA384;
    case 0x1303:
        return TLS13REC_CHACHA20_POLY1305_SHA256;
    default:
        return 0; /* the CCM suites stay with OpenSSL */
    }
}

size_t tls13rec_secret_len(int suite)
{
    return !suite_ok(suite) ? 0 : suite == TLS13REC_AES_256_GCM_SHA384 ? 48 : 32;
}

static size_t key_len(int suite) { return suite == TLS13REC_AES_128_GCM_SHA256 ? 16 : 32; }

static EVP_CIPHER_CTX *rec_ctx(int suite)
{
    pthread_once(&rec_once, rec_init_once);
    if (!rec_mine) {
        rec_mine = OPENSSL_zalloc(sizeof *rec_mine);
        if (!rec_mine)
            return NULL;
        pthread_setspecific(rec_key, rec_mine);
    }
    EVP_CIPHER_CTX **c = &rec_mine->ctx[suite];
    if (!*c && rec_ciphers[suite]) {
        *c = EVP_CIPHER_CTX_new();
        if (*c && EVP_CipherInit_ex(*c, rec_ciphers[suite], NULL, NULL, NULL, 1) != 1) {
            EVP_CIPHER_CTX_free(*c);
            *c = NULL;
        }
    }
    return *c;
}

/* HKDF-Expand-Label(secret, label, "", out_len) of RFC 8446 section 7.1. */
static bool expand_label(int suite, const uint8_t *secret, const char *label, uint8_t *out,
                         size_t out_len)
{
    pthread_once(&rec_once, rec_init_once);
    uint8_t info[2 + 1 + 6 + 16 + 1];
    size_t ll = strlen(label), n = 0;
    if (!rec_hkdf || ll > 16)
        return false;
    info[n++] = (uint8_t)(out_len >> 8);
    info[n++] = (uint8_t)out_len;
    info[n++] = (uint8_t)(6 + ll);
    memcpy(info + n, "tls13 ", 6);
    memcpy(info + n + 6, label, ll);
    n += 6 + ll;
    info[n++] = 0; /* empty context */
    EVP_KDF_CTX *k = EVP_KDF_CTX_new(rec_hkdf);
    if (!k)
        return false;
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
    OSSL_PARAM ps[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
                                         suite == TLS13REC_AES_256_GCM_SHA384 ? "SHA384" : "SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret,
                                          tls13rec_secret_len(suite)),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, n),
        OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
        OSSL_PARAM_construct_end(),
    };
    bool ok = EVP_KDF_derive(k, out, out_len, ps) == 1;
    EVP_KDF_CTX_free(k);
    return ok;
}

bool tls13rec_derive(int suite, const uint8_t *secret, uint8_t *key, uint8_t iv[12])
{
    return suite_ok(suite) && expand_label(suite, secret, "key", key, key_len(suite)) &&
           expand_label(suite, secret, "iv", iv, 12);
}

static bool dir_set(int suite, tls13rec_dir *d, const uint8_t *secret, uint64_t seq)
{
    size_t sl = tls13rec_secret_len(suite);
    memcpy(d->secret, secret, sl);
    d->seq = seq;
    return tls13rec_derive(suite, d->secret, d->key, d->iv);
}

bool tls13rec_init(tls13rec *r, int suite, const uint8_t *rd_secret, uint64_t rd_seq,
                   const uint8_t *wr_secret, uint64_t wr_seq, size_t secret_len)
{
    memset(r, 0, sizeof *r);
    if (!suite_ok(suite) || secret_len != tls13rec_secret_len(suite))
        return false;
    r->suite = (uint8_t)suite;
    if (dir_set(suite, &r->rd, rd_secret, rd_seq) && dir_set(suite, &r->wr, wr_secret, wr_seq))
        return true;
    tls13rec_wipe(r);
    return false;
}

bool tls13rec_update(const tls13rec *r, tls13rec_dir *d)
{
    uint8_t next[48];
    size_t sl = tls13rec_secret_len(r->suite);
    bool ok = sl && expand_label(r->suite, d->secret, "traffic upd", next, sl) &&
              dir_set(r->suite, d, next, 0);
    OPENSSL_cleanse(next, sizeof next);
    return ok;
}

/* The per-record nonce: the IV xor the sequence number, right-aligned. */
static void nonce_of(const tls13rec_dir *d, uint8_t out[12])
{
    memcpy(out, d->iv, 12);
    for (int i = 0; i < 8; i++)
        out[11 - i] ^= (uint8_t)(d->seq >> (8 * i));
}

static void header(uint8_t *out, size_t len)
{
    out[0] = CT_APPDATA;
    out[1] = 3;
    out[2] = 3;
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}

size_t tls13rec_seal(tls13rec *r, uint8_t type, const struct iovec *iov, int n, size_t len,
                     uint8_t *out)
{
    if (len > TLS13REC_MAX_PLAIN || r->wr.seq == UINT64_MAX || !suite_ok(r->suite))
        return 0;
    EVP_CIPHER_CTX *c = rec_ctx(r->suite);
    if (!c)
        return 0;
    size_t clen = len + 1 + TLS13REC_TAG;
    header(out, clen);
    uint8_t nonce[12];
    nonce_of(&r->wr, nonce);
    int ol;
    size_t at = TLS13REC_HEADER;
    if (EVP_CipherInit_ex(c, NULL, NULL, r->wr.key, nonce, 1) != 1 ||
        EVP_CipherUpdate(c, NULL, &ol, out, TLS13REC_HEADER) != 1)
        return 0;
    /* Straight from the caller's pieces: no staging copy of the plaintext. */
    size_t left = len;
    for (int i = 0; i < n && left; i++) {
        size_t k = iov[i].iov_len < left ? iov[i].iov_len : left;
        if (k == 0)
            continue;
        if (EVP_CipherUpdate(c, out + at, &ol, iov[i].iov_base, (int)k) != 1)
            return 0;
        at += (size_t)ol;
        left -= k;
    }
    if (left)
        return 0; /* the pieces hold less than len */
    if (EVP_CipherUpdate(c, out + at, &ol, &type, 1) != 1)
        return 0;
    at += (size_t)ol;
    if (EVP_CipherFinal_ex(c, out + at, &ol) != 1)
        return 0;
    at += (size_t)ol;
    if (at != TLS13REC_HEADER + len + 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, TLS13REC_TAG, out + at) != 1)
        return 0;
    r->wr.seq++;
    return TLS13REC_HEADER + clen;
}

size_t tls13rec_seal_key_update(tls13rec *r, uint8_t *out)
{
    uint8_t ku[5] = {HS_KEY_UPDATE, 0, 0, 1, 0}; /* update_not_requested */
    struct iovec v = {ku, sizeof ku};
    size_t n = tls13rec_seal(r, CT_HANDSHAKE, &v, 1, sizeof ku, out);
    /* The KeyUpdate itself goes under the old key; what follows, the new. */
    if (n && !tls13rec_update(r, &r->wr))
        return 0;
    return n;
}

size_t tls13rec_seal_close_notify(tls13rec *r, uint8_t *out)
{
    uint8_t alert[2] = {1, ALERT_CLOSE_NOTIFY}; /* level warning, as TLS 1.2 peers expect */
    struct iovec v = {alert, sizeof alert};
    return tls13rec_seal(r, CT_ALERT, &v, 1, sizeof alert, out);
}

size_t tls13rec_seal_data(tls13rec *r, const struct iovec *iov, int n, size_t max, uint8_t *out,
                          size_t cap, size_t *taken)
{
    size_t at = 0, took = 0;
    struct iovec cur[64];
    int i = 0;
    size_t off = 0; /* into iov[i] */
    *taken = 0;
    while (took < max && i < n) {
        if (r->wr.seq >= TLS13REC_REKEY_AFTER) {
            if (cap - at < 5 + TLS13REC_OVERHEAD)
                break;
            size_t k = tls13rec_seal_key_update(r, out + at);
            if (!k)
                return 0;
            at += k;
        }
        /* The next record's pieces: up to 2^14 bytes from iov[i] on. */
        size_t want = max - took < TLS13REC_MAX_PLAIN ? max - took : TLS13REC_MAX_PLAIN;
        if (cap - at <= TLS13REC_OVERHEAD)
            break;
        if (want > cap - at - TLS13REC_OVERHEAD)
            want = cap - at - TLS13REC_OVERHEAD;
        size_t len = 0;
        int m = 0;
        while (len < want && i < n && m < (int)(sizeof cur / sizeof cur[0])) {
            size_t avail = iov[i].iov_len - off, k = avail < want - len ? avail : want - len;
            cur[m++] = (struct iovec){(uint8_t *)iov[i].iov_base + off, k};
            len += k;
            off += k;
            if (off == iov[i].iov_len) {
                i++;
                off = 0;
            }
        }
        if (len == 0)
            continue; /* only empty pieces here */
        size_t k = tls13rec_seal(r, CT_APPDATA, cur, m, len, out + at);
        if (!k)
            return 0;
        at += k;
        took += len;
    }
    *taken = took;
    return at;
}

long tls13rec_open(tls13rec *r, uint8_t *buf, size_t n, tls13rec_msg *m)
{
    memset(m, 0, sizeof *m);
    if (n >= 1 && buf[0] != CT_APPDATA)
        return TLS13REC_ERR_HEADER; /* no cleartext alerts or change_cipher_spec after the handshake */
    if (n >= 3 && (buf[1] != 3 || buf[2] != 3))
        return TLS13REC_ERR_HEADER;
    if (n < TLS13REC_HEADER) {
        m->need = TLS13REC_HEADER;
        return 0;
    }
    size_t len = (size_t)buf[3] << 8 | buf[4];
    if (len < 1 + TLS13REC_TAG || len > TLS13REC_MAX_CIPHER)
        return TLS13REC_ERR_LENGTH;
    if (n < TLS13REC_HEADER + len) {
        m->need = TLS13REC_HEADER + len;
        return 0;
    }
    if (r->rd.seq == UINT64_MAX)
        return TLS13REC_ERR_SEQ;
    if (!suite_ok(r->suite))
        return TLS13REC_ERR_CRYPTO;
    EVP_CIPHER_CTX *c = rec_ctx(r->suite);
    if (!c)
        return TLS13REC_ERR_CRYPTO;
    uint8_t nonce[12];
    nonce_of(&r->rd, nonce);
    uint8_t *p = buf + TLS13REC_HEADER;
    size_t inner = len - TLS13REC_TAG;
    int ol, fl;
    if (EVP_CipherInit_ex(c, NULL, NULL, r->rd.key, nonce, 0) != 1 ||
        EVP_CipherUpdate(c, NULL, &ol, buf, TLS13REC_HEADER) != 1 ||
        EVP_CipherUpdate(c, p, &ol, p, (int)inner) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, TLS13REC_TAG, p + inner) != 1)
        return TLS13REC_ERR_CRYPTO;
    if (EVP_CipherFinal_ex(c, p + ol, &fl) != 1)
        return TLS13REC_ERR_DECRYPT;
    r->rd.seq++;
    if (inner > MAX_INNER)
        return TLS13REC_ERR_OVERFLOW;
    /* The content type is the last non-zero byte; zeros after it are padding. */
    while (inner > 0 && p[inner - 1] == 0)
        inner--;
    if (inner == 0)
        return TLS13REC_ERR_TYPE;
    uint8_t type = p[--inner];
    long used = (long)(TLS13REC_HEADER + len);
    switch (type) {
    case CT_APPDATA:
        m->kind = TLS13REC_DATA;
        m->data = p;
        m->len = inner;
        return used;
    case CT_ALERT:
        if (inner != 2)
            return TLS13REC_ERR_TYPE;
        if (p[1] == ALERT_CLOSE_NOTIFY) {
            m->kind = TLS13REC_CLOSE;
            return used;
        }
        if (p[1] == ALERT_USER_CANCELED) { /* a close_notify should follow */
            m->kind = TLS13REC_IGNORED;
            return used;
        }
        return TLS13REC_ERR_ALERT;
    case CT_HANDSHAKE:
        /* A KeyUpdate precedes a key change, so it ends its record (RFC 8446
         * section 5.1): one whole message, nothing before or after it. */
        if (inner != 5 || p[0] != HS_KEY_UPDATE || p[1] != 0 || p[2] != 0 || p[3] != 1 || p[4] > 1)
            return TLS13REC_ERR_HANDSHAKE;
        if (!tls13rec_update(r, &r->rd))
            return TLS13REC_ERR_CRYPTO;
        m->kind = TLS13REC_KEY_UPDATE;
        m->requested = p[4] == 1;
        return used;
    default:
        return TLS13REC_ERR_TYPE;
    }
}

void tls13rec_wipe(tls13rec *r) { OPENSSL_cleanse(r, sizeof *r); }
