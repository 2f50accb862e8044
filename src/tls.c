#include "tls.h"

#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <openssl/bio.h>
#include <openssl/buffer.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "tls13rec.h"
#include "transport.h"

/* Records without data (KeyUpdates, tickets) one read takes before it
 * yields: SSL_MODE_AUTO_RETRY is off (tls_ctx_new), so SSL_read returns
 * after each of them. */
#define TLS_RECORDS_PER_READ 64

/* malloc_usable_size is what the allocator really set aside, so the count
 * matches what a free gives back. */
static _Atomic uint64_t tls_bytes;

static void *tls_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    void *p = malloc(n);
    if (p)
        atomic_fetch_add_explicit(&tls_bytes, malloc_usable_size(p), memory_order_relaxed);
    return p;
}

static void tls_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    if (p)
        atomic_fetch_sub_explicit(&tls_bytes, malloc_usable_size(p), memory_order_relaxed);
    free(p);
}

static void *tls_realloc(void *p, size_t n, const char *file, int line)
{
    if (n == 0) { /* OpenSSL passes 0 through: a free */
        tls_free(p, file, line);
        return NULL;
    }
    size_t old = p ? malloc_usable_size(p) : 0;
    void *q = realloc(p, n);
    if (!q)
        return NULL; /* p is untouched */
    atomic_fetch_sub_explicit(&tls_bytes, old, memory_order_relaxed);
    atomic_fetch_add_explicit(&tls_bytes, malloc_usable_size(q), memory_order_relaxed);
    return q;
}

bool tls_count_memory(void)
{
    return CRYPTO_set_mem_functions(tls_malloc, tls_realloc, tls_free) == 1;
}

uint64_t tls_memory(void) { return atomic_load_explicit(&tls_bytes, memory_order_relaxed); }

static void tls_log_errors(const char *what)
{
    unsigned long e;
    char buf[256];
    while ((e = ERR_get_error())) {
        ERR_error_string_n(e, buf, sizeof buf);
        log_msg(LOG_ERROR, "%s: %s", what, buf);
    }
}

/* ---- per-connection state beside the SSL, and after it --------------------
 *
 * An idle TLS connection through OpenSSL 3.0 costs ~15 KB, 7.6 KB of it the
 * SSL object, and this machine has no kernel TLS. So once a TLS 1.3
 * handshake is done and OpenSSL holds nothing for the connection (no bytes
 * to write, none decrypted or half-read), herald keeps only the traffic
 * secrets (the keylog callback hands them over), the number of records
 * each side has protected with them (counted through the message callback)
 * and the keys derived from them, frees the SSL, and protects the records
 * itself (tls13rec.c). TLS 1.2, and a TLS 1.3 connection that has not yet
 * reached such a moment, stay with OpenSSL. */
typedef struct tls_conn {
    uint32_t *requests;  /* the connection's post-handshake message count */
    tls13rec rec;        /* secrets from the keylog; keys once handed over */
    uint64_t recs_r;     /* records under the application keys, before the hand-off */
    uint64_t recs_w;
    uint8_t *in;         /* ciphertext of records not yet opened, only while there is some */
    uint8_t *plain;      /* plaintext the reader had no room for, only while there is some */
    uint8_t *out;        /* sealed records the socket did not take, only while there are some */
    uint32_t in_len;
    uint32_t plain_off, plain_len;
    uint32_t out_off, out_len, out_cap;
    uint8_t secret_len[2]; /* [0] read (client), [1] write (server); 0 until the keylog gave it */
    bool fin_r : 1;        /* the Finished of that direction went by: later records count */
    bool fin_w : 1;
    bool stay : 1;         /* a KeyUpdate went through OpenSSL, or no usable suite: no hand-off */
    bool peer_closed : 1;  /* close_notify received */
    bool failed : 1;       /* a bad record, or a socket error: no more I/O */
} tls_conn;

/* The hand-off is on unless HERALD_TLS_HANDOFF=0 (read once, at startup):
 * the switch lets one binary measure both ways. */
static bool tls_handoff_on = true;

static uint64_t tls_rec_errors_n;
uint64_t tls_record_errors(void) { return __atomic_load_n(&tls_rec_errors_n, __ATOMIC_RELAXED); }

/* Handshake messages a peer sends after the handshake (KeyUpdate) each ask
 * us for work, like a ping: they are counted into the uint32_t the
 * connection gave, which --client-frame-rate limits. Every received
 * handshake message is counted: OpenSSL re-enters its handshake state to
 * read a post-handshake one, so SSL_is_init_finished is false here just
 * when it matters. The connection zeroes the count once its handshake is
 * done (tls_read), which leaves the later ones.
 *
 * For the hand-off the same callback counts the records protected with the
 * application keys: each record's header is reported before the message it
 * carries, so the records after a direction's Finished are those. */
static void tls_on_message(int write_p, int version, int content_type, const void *buf, size_t len,
                           SSL *ssl, void *arg)
{
    (void)version;
    (void)arg;
    tls_conn *h = SSL_get_app_data(ssl);
    if (!h)
        return;
    const uint8_t *p = buf;
    if (content_type == SSL3_RT_HEADER) {
        if (write_p && h->fin_w)
            h->recs_w++;
        else if (!write_p && h->fin_r)
            h->recs_r++;
        return;
    }
    if (content_type != SSL3_RT_HANDSHAKE || len == 0)
        return;
    if (!write_p && h->requests)
        (*h->requests)++;
    if (p[0] == SSL3_MT_FINISHED) {
        if (write_p)
            h->fin_w = true;
        else
            h->fin_r = true;
    } else if (p[0] == SSL3_MT_KEY_UPDATE) {
        h->stay = true; /* the keylog does not report updated secrets */
        OPENSSL_cleanse(&h->rec, sizeof h->rec);
    }
}

static int tls_hex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* NSS key log lines: "LABEL <client random> <secret>". Only the first
 * application traffic secrets are kept. */
static void tls_keylog(const SSL *ssl, const char *line)
{
    tls_conn *h = SSL_get_app_data(ssl);
    int which;
    if (!h)
        return;
    if (!strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24))
        which = 0;
    else if (!strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24))
        which = 1;
    else
        return;
    const char *hex = strrchr(line, ' ') + 1;
    size_t n = strlen(hex);
    uint8_t *dst = which ? h->rec.wr.secret : h->rec.rd.secret;
    if (n != 64 && n != 96)
        return;
    for (size_t i = 0; i < n / 2; i++) {
        int a = tls_hex((unsigned char)hex[2 * i]), b = tls_hex((unsigned char)hex[2 * i + 1]);
        if (a < 0 || b < 0) {
            OPENSSL_cleanse(dst, sizeof h->rec.rd.secret);
            return;
        }
        dst[i] = (uint8_t)(a << 4 | b);
    }
    h->secret_len[which] = (uint8_t)(n / 2);
}

SSL_CTX *tls_ctx_new(const char *cert_file, const char *key_file)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        tls_log_errors("TLS context");
        return NULL;
    }
    const char *env = getenv("HERALD_TLS_HANDOFF");
    tls_handoff_on = !(env && !strcmp(env, "0"));
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* RELEASE_BUFFERS gives the 16 KiB record buffers back while a connection
     * is idle: most subscribers are idle most of the time. PARTIAL_WRITE and
     * MOVING_WRITE_BUFFER let a flush hand OpenSSL one large staging buffer
     * and retry from wherever it stopped. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* With auto-retry SSL_read loops over post-handshake records (KeyUpdate)
     * until the socket is empty: one client could hold a worker inside it.
     * conn_io_read takes a bounded number per event instead. */
    SSL_CTX_clear_mode(ctx, SSL_MODE_AUTO_RETRY);
    SSL_CTX_set_msg_callback(ctx, tls_on_message);
    if (tls_handoff_on)
        SSL_CTX_set_keylog_callback(ctx, tls_keylog);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        tls_log_errors(cert_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        tls_log_errors(key_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

void tls_ctx_free(SSL_CTX *ctx) { SSL_CTX_free(ctx); }

/* One connection's TLS: reads come straight from the socket; writes go to a
 * memory BIO, so encrypting never blocks and queued plaintext is taken at
 * once (tls_writev), and what the socket did not take waits there, counted
 * by tls_pending against the connection's queue limit. */
bool tls_open(transport *t, SSL_CTX *ctx, uint32_t *requests)
{
    BIO *rb = BIO_new_socket(t->fd, BIO_NOCLOSE), *wb = BIO_new(BIO_s_mem());
    SSL *ssl = SSL_new(ctx);
    tls_conn *h = OPENSSL_zalloc(sizeof *h); /* OpenSSL's allocator: counted in tls_memory */
    if (!rb || !wb || !ssl || !h) {
        BIO_free(rb);
        BIO_free(wb);
        SSL_free(ssl);
        OPENSSL_free(h);
        return false;
    }
    h->requests = requests;
    SSL_set_bio(ssl, rb, wb);
    SSL_set_app_data(ssl, h); /* tls_on_message and tls_keylog fill it */
    SSL_set_accept_state(ssl);
    t->ssl = ssl;
    t->tls = true;
    t->ready = false;
    return true;
}

static void tls_conn_free(tls_conn *h)
{
    if (!h)
        return;
    OPENSSL_free(h->in);
    OPENSSL_clear_free(h->plain, h->plain_len);
    OPENSSL_free(h->out);
    OPENSSL_clear_free(h, sizeof *h); /* the secrets and keys */
}

/* ---- after the hand-off: the records, without OpenSSL's SSL ---------------- */

static size_t rec_pending(const tls_conn *h) { return h->out_len - h->out_off; }

/* Sealed records wait here only while the socket is full. */
static bool rec_keep(tls_conn *h, const uint8_t *p, size_t n)
{
    if (h->out_off == h->out_len)
        h->out_off = h->out_len = 0;
    if (h->out_len + n > h->out_cap) {
        size_t cap = h->out_cap ? h->out_cap : 256;
        while (cap < h->out_len + n)
            cap *= 2;
        if (cap > UINT32_MAX)
            return false;
        uint8_t *q = OPENSSL_realloc(h->out, cap);
        if (!q)
            return false;
        h->out = q;
        h->out_cap = (uint32_t)cap;
    }
    memcpy(h->out + h->out_len, p, n);
    h->out_len += (uint32_t)n;
    return true;
}

/* 1 all out (the buffer is gone), 0 socket full, -1 error. */
static int rec_flush(transport *t)
{
    tls_conn *h = t->rec;
    while (h->out_off < h->out_len) {
        ssize_t r = write(t->fd, h->out + h->out_off, h->out_len - h->out_off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        }
        h->out_off += (uint32_t)r;
    }
    OPENSSL_free(h->out);
    h->out = NULL;
    h->out_off = h->out_len = h->out_cap = 0;
    return 1;
}

/* Buffers that come and go with partial records are sized in powers of
 * two, so an allocator that keeps size classes apart (ASan's, jemalloc's)
 * reuses a few classes instead of touching one per odd size. */
static size_t rec_round(size_t n)
{
    size_t r = 64;
    while (r < n)
        r *= 2;
    return r;
}

static bool rec_whole_record(const tls_conn *h)
{
    return h->in_len >= TLS13REC_HEADER &&
           h->in_len >= TLS13REC_HEADER + ((size_t)h->in[3] << 8 | h->in[4]);
}

static void rec_failed(tls_conn *h)
{
    if (!h->failed)
        __atomic_fetch_add(&tls_rec_errors_n, 1, __ATOMIC_RELAXED);
    h->failed = true;
}

/* Copies what fits into buf; the rest of a record's plaintext waits. */
static bool rec_deliver(tls_conn *h, const uint8_t *p, size_t n, uint8_t *buf, size_t cap, size_t *got)
{
    size_t k = n < cap - *got ? n : cap - *got;
    memcpy(buf + *got, p, k);
    *got += k;
    if (k == n)
        return true;
    h->plain = OPENSSL_malloc(rec_round(n - k));
    if (!h->plain)
        return false;
    memcpy(h->plain, p + k, n - k);
    h->plain_off = 0;
    h->plain_len = (uint32_t)(n - k);
    return true;
}

static ssize_t rec_read(transport *t, uint8_t *buf, size_t cap, size_t owe_limit)
{
    /* Room for a partial record and a whole one after it. */
    static _Thread_local uint8_t stage[2 * TLS13REC_MAX_RECORD];
    tls_conn *h = t->rec;
    size_t got = 0, owed_before = rec_pending(h);
    if (h->plain) {
        size_t k = h->plain_len - h->plain_off < cap ? h->plain_len - h->plain_off : cap;
        memcpy(buf, h->plain + h->plain_off, k);
        h->plain_off += (uint32_t)k;
        got = k;
        if (h->plain_off == h->plain_len) {
            OPENSSL_clear_free(h->plain, h->plain_len);
            h->plain = NULL;
            h->plain_off = h->plain_len = 0;
        }
        if (got == cap || h->plain)
            return (ssize_t)got;
    }
    size_t have = h->in_len, off = 0;
    if (have) {
        memcpy(stage, h->in, have);
        OPENSSL_free(h->in);
        h->in = NULL;
        h->in_len = 0;
    }
    bool over = false, again = false;
    /* Records without data bound the socket reads of one call (as with
     * OpenSSL); the records already read are all opened (at most a stage's
     * worth), so none is left whole in the buffer where epoll cannot see it. */
    int quiet = 0;
    while (!h->failed && !h->peer_closed) {
        while (got < cap && !over) {
            tls13rec_msg m;
            long k = tls13rec_open(&h->rec, stage + off, have - off, &m);
            if (k == 0)
                break;
            if (k < 0) {
                rec_failed(h);
                break;
            }
            off += (size_t)k;
            if (m.kind == TLS13REC_DATA) {
                if (m.len == 0)
                    quiet++;
                else if (!rec_deliver(h, m.data, m.len, buf, cap, &got))
                    rec_failed(h);
                OPENSSL_cleanse(m.data, m.len);
            } else if (m.kind == TLS13REC_CLOSE) {
                h->peer_closed = true;
            } else {
                quiet++;
                if (m.kind == TLS13REC_KEY_UPDATE && h->requests)
                    (*h->requests)++; /* asks for work, like a ping: --client-frame-rate */
                if (m.kind == TLS13REC_KEY_UPDATE && m.requested) {
                    uint8_t ku[5 + TLS13REC_OVERHEAD];
                    size_t n = tls13rec_seal_key_update(&h->rec, ku);
                    if (!n || !rec_keep(h, ku, n))
                        rec_failed(h);
                }
                size_t owed = rec_pending(h);
                over = owed > owed_before && owed > owe_limit;
            }
            if (h->failed || h->peer_closed)
                break;
        }
        if (got || over || quiet >= TLS_RECORDS_PER_READ || again || h->failed || h->peer_closed)
            break;
        if (off) {
            memmove(stage, stage + off, have - off);
            have -= off;
            off = 0;
        }
        ssize_t r = read(t->fd, stage + have, sizeof stage - have);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                again = true;
                continue; /* opens nothing new: ends the loop */
            }
            h->failed = true; /* the peer is gone: not a record error */
            break;
        }
        if (r == 0) {
            /* End of stream without close_notify (a truncation attack looks
             * the same): an error, as OpenSSL reports it. */
            h->failed = true;
            break;
        }
        have += (size_t)r;
    }
    if (have > off) { /* records not opened yet wait, until they are */
        h->in = OPENSSL_malloc(rec_round(have - off));
        if (!h->in)
            return TRANSPORT_ERROR;
        memcpy(h->in, stage + off, have - off);
        h->in_len = (uint32_t)(have - off);
    }
    if (over)
        return TRANSPORT_OVER;
    if (got)
        return (ssize_t)got;
    if (h->failed)
        return TRANSPORT_ERROR;
    if (h->peer_closed)
        return 0;
    return TRANSPORT_AGAIN;
}

/* Gathered frames sealed straight into per-thread records (up to
 * TRANSPORT_TLS_STAGE of plaintext per call), written at once; what the
 * socket does not take waits in the connection's buffer. */
static ssize_t rec_writev(transport *t, const struct iovec *iov, int n)
{
    static _Thread_local uint8_t sealed[TRANSPORT_TLS_STAGE +
                                        (TRANSPORT_TLS_STAGE / TLS13REC_MAX_PLAIN + 2) *
                                            (TLS13REC_OVERHEAD + 5)];
    tls_conn *h = t->rec;
    int rc = rec_flush(t);
    if (rc <= 0)
        return rc == 0 ? TRANSPORT_AGAIN : TRANSPORT_ERROR;
    if (h->failed || t->shut)
        return TRANSPORT_ERROR;
    size_t taken;
    size_t len = tls13rec_seal_data(&h->rec, iov, n, TRANSPORT_TLS_STAGE, sealed, sizeof sealed,
                                    &taken);
    if (len == 0 || taken == 0) {
        rec_failed(h);
        return TRANSPORT_ERROR;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t r = write(t->fd, sealed + done, len - done);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return TRANSPORT_ERROR;
        }
        done += (size_t)r;
    }
    if (done < len && !rec_keep(h, sealed + done, len - done))
        return TRANSPORT_ERROR;
    return (ssize_t)taken;
}

/* ---- the hand-off ----------------------------------------------------------- */

/* OpenSSL holds nothing of this connection that the records would need:
 * the handshake (and its tickets) is written out, no plaintext waits
 * decrypted, no record is half read, no KeyUpdate went through it (the
 * keylog only gives the first secrets), and both directions' secrets and
 * Finished messages were seen. */
static bool tls_can_hand_off(const transport *t, const tls_conn *h)
{
    SSL *s = t->ssl;
    return tls_handoff_on && !h->stay && t->ready && !t->shut && h->fin_r && h->fin_w &&
           h->secret_len[0] && h->secret_len[0] == h->secret_len[1] &&
           SSL_version(s) == TLS1_3_VERSION && SSL_is_init_finished(s) && SSL_get_shutdown(s) == 0 &&
           BIO_ctrl_pending(SSL_get_wbio(s)) == 0 && SSL_pending(s) == 0 && !SSL_has_pending(s) &&
           strcmp(SSL_rstate_string(s), "RH") == 0 &&
           SSL_get_key_update_type(s) == SSL_KEY_UPDATE_NONE;
}

static void tls_hand_off(transport *t)
{
    tls_conn *h = SSL_get_app_data(t->ssl);
    if (!h || !tls_can_hand_off(t, h))
        return;
    const SSL_CIPHER *c = SSL_get_current_cipher(t->ssl);
    int suite = c ? tls13rec_suite_of(SSL_CIPHER_get_protocol_id(c)) : 0;
    uint8_t rs[48], ws[48];
    memcpy(rs, h->rec.rd.secret, sizeof rs);
    memcpy(ws, h->rec.wr.secret, sizeof ws);
    bool ok = suite && tls13rec_secret_len(suite) == h->secret_len[0] &&
              tls13rec_init(&h->rec, suite, rs, h->recs_r, ws, h->recs_w, h->secret_len[0]);
    OPENSSL_cleanse(rs, sizeof rs);
    OPENSSL_cleanse(ws, sizeof ws);
    if (!ok) {
        h->stay = true; /* CCM suites, or out of memory: OpenSSL carries on */
        return;
    }
    SSL_set_app_data(t->ssl, NULL);
    SSL_free(t->ssl); /* the socket BIO leaves the fd open */
    t->rec = h;
    t->handed = true;
}

/* ---- the transport functions: OpenSSL's SSL, or the records after it ----- */

size_t tls_pending(const transport *t)
{
    return t->handed ? rec_pending(t->rec) : BIO_ctrl_pending(SSL_get_wbio(t->ssl));
}

/* After the hand-off: plaintext, or whole records, waiting; or an end the
 * connection has not read yet (data came before it). */
bool tls_buffered(const transport *t)
{
    if (t->handed)
        return t->rec->plain || t->rec->failed || t->rec->peer_closed || rec_whole_record(t->rec);
    return SSL_pending(t->ssl) > 0;
}

ssize_t tls_read(transport *t, uint8_t *buf, size_t cap, size_t owe_limit)
{
    if (t->handed)
        return rec_read(t, buf, cap, owe_limit);
    size_t pending = tls_pending(t);
    BIO *rb = SSL_get_rbio(t->ssl);
    int r;
    bool over = false;
    /* A bounded number of records per call, so a flood of records without
     * data neither stalls the worker inside OpenSSL nor crawls at one record
     * per loop pass. */
    for (int records = 0;; records++) {
        uint64_t got = BIO_number_read(rb);
        ERR_clear_error();
        r = SSL_read(t->ssl, buf, cap > INT_MAX ? INT_MAX : (int)cap);
        size_t now = tls_pending(t);
        over = now > pending && now > owe_limit;
        if (r > 0 || SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_READ ||
            BIO_number_read(rb) == got || records == TLS_RECORDS_PER_READ || over)
            break;
    }
    tls_conn *h = SSL_get_app_data(t->ssl);
    if (!t->ready && SSL_is_init_finished(t->ssl)) {
        t->ready = true;
        if (h && h->requests)
            *h->requests = 0; /* the handshake's own messages ask nothing extra */
        if (h && SSL_version(t->ssl) != TLS1_3_VERSION) {
            h->stay = true; /* TLS 1.2 stays with OpenSSL: its secrets are not ours to keep */
            OPENSSL_cleanse(&h->rec, sizeof h->rec);
        }
    }
    if (over)
        return TRANSPORT_OVER;
    ssize_t res;
    if (r > 0) {
        res = r;
    } else {
        switch (SSL_get_error(t->ssl, r)) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:
            res = TRANSPORT_AGAIN;
            break;
        case SSL_ERROR_ZERO_RETURN:
            return 0;
        default:
            return TRANSPORT_ERROR; /* not TLS, bad handshake, or the peer went away */
        }
    }
    tls_hand_off(t);
    return res;
}

int tls_flush(transport *t)
{
    if (t->handed)
        return rec_flush(t);
    /* What the socket takes is consumed from the BIO through a sink: a
     * copy, cheap next to AES. */
    static _Thread_local uint8_t sink[16384];
    BIO *wb = SSL_get_wbio(t->ssl);
    char *p;
    long n;
    while ((n = BIO_get_mem_data(wb, &p)) > 0) {
        ssize_t r = write(t->fd, p, (size_t)n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        }
        for (ssize_t left = r; left > 0;) {
            int k = BIO_read(wb, sink, left > (ssize_t)sizeof sink ? (int)sizeof sink : (int)left);
            if (k <= 0)
                return -1;
            left -= k;
        }
    }
    tls_hand_off(t); /* everything OpenSSL wrote is out: a moment to let go of it */
    return 1;
}

/* One SSL_write per run of up to TRANSPORT_TLS_STAGE plaintext bytes
 * gathered from many frames, instead of one per frame. */
ssize_t tls_writev(transport *t, const struct iovec *iov, int n)
{
    static _Thread_local uint8_t stage[TRANSPORT_TLS_STAGE];
    if (t->handed)
        return rec_writev(t, iov, n);
    int rc = tls_flush(t);
    if (rc <= 0)
        return rc == 0 ? TRANSPORT_AGAIN : TRANSPORT_ERROR;
    if (t->handed)
        return rec_writev(t, iov, n);
    if (!t->ready)
        return TRANSPORT_NOT_READY; /* a refusal can be queued before the ClientHello */
    size_t len = 0;
    for (int i = 0; i < n && len < sizeof stage; i++) {
        size_t k = iov[i].iov_len < sizeof stage - len ? iov[i].iov_len : sizeof stage - len;
        memcpy(stage + len, iov[i].iov_base, k);
        len += k;
    }
    ERR_clear_error();
    int r = SSL_write(t->ssl, stage, (int)len);
    if (r <= 0) {
        int e = SSL_get_error(t->ssl, r);
        return (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? TRANSPORT_NOT_READY
                                                                        : TRANSPORT_ERROR;
    }
    if (tls_flush(t) < 0)
        return TRANSPORT_ERROR;
    return r;
}

int tls_shutdown(transport *t)
{
    if (t->handed) {
        if (!t->shut) {
            uint8_t alert[2 + TLS13REC_OVERHEAD];
            size_t n = tls13rec_seal_close_notify(&t->rec->rec, alert);
            t->shut = true;
            if (!n || !rec_keep(t->rec, alert, n))
                return -1;
        }
        return rec_flush(t);
    }
    if (!t->shut) {
        SSL_shutdown(t->ssl); /* close_notify, into the write BIO */
        t->shut = true;
    }
    return tls_flush(t);
}

/* A memory BIO keeps its peak size: an idle connection gets a fresh one.
 * An idle TLS 1.3 connection still on OpenSSL (its last read stopped inside
 * a record, say) is handed off here. */
void tls_idle(transport *t)
{
    if (t->handed)
        return; /* its buffers exist only while they hold something */
    BIO *wb = SSL_get_wbio(t->ssl);
    BUF_MEM *bm = NULL;
    if (BIO_ctrl_pending(wb) == 0)
        tls_hand_off(t);
    if (t->handed || BIO_ctrl_pending(wb) || BIO_get_mem_ptr(wb, &bm) <= 0 || !bm || bm->max == 0)
        return;
    BIO *fresh = BIO_new(BIO_s_mem());
    if (fresh)
        SSL_set0_wbio(t->ssl, fresh);
}

void tls_close(transport *t)
{
    if (t->handed) {
        tls_conn_free(t->rec);
    } else {
        tls_conn *h = SSL_get_app_data(t->ssl);
        SSL_free(t->ssl); /* frees both BIOs; the socket BIO leaves the fd to us */
        tls_conn_free(h);
    }
    t->ssl = NULL;
    t->tls = t->handed = false;
}
