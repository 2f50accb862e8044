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

/* Handshake messages a peer sends after the handshake (KeyUpdate) each ask
 * us for work, like a ping: they are counted into the uint32_t the
 * connection gave as the SSL's app data, which --client-frame-rate limits.
 * Every received handshake message is counted: OpenSSL re-enters its
 * handshake state to read a post-handshake one, so SSL_is_init_finished is
 * false here just when it matters. The connection zeroes the count once
 * its handshake is done (conn_io_read), which leaves the later ones. */
static void tls_on_message(int write_p, int version, int content_type, const void *buf, size_t len,
                           SSL *ssl, void *arg)
{
    (void)version;
    (void)buf;
    (void)len;
    (void)arg;
    uint32_t *count = SSL_get_app_data(ssl);
    if (!write_p && content_type == SSL3_RT_HANDSHAKE && count)
        (*count)++;
}

SSL_CTX *tls_ctx_new(const char *cert_file, const char *key_file)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        tls_log_errors("TLS context");
        return NULL;
    }
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
    if (!rb || !wb || !ssl) {
        BIO_free(rb);
        BIO_free(wb);
        SSL_free(ssl);
        return false;
    }
    SSL_set_bio(ssl, rb, wb);
    SSL_set_app_data(ssl, requests); /* tls_on_message counts into it */
    SSL_set_accept_state(ssl);
    t->ssl = ssl;
    t->ready = false;
    return true;
}

size_t tls_pending(const transport *t) { return BIO_ctrl_pending(SSL_get_wbio(t->ssl)); }

bool tls_buffered(const transport *t) { return SSL_pending(t->ssl) > 0; }

ssize_t tls_read(transport *t, uint8_t *buf, size_t cap, size_t owe_limit)
{
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
    if (!t->ready && SSL_is_init_finished(t->ssl)) {
        t->ready = true;
        uint32_t *requests = SSL_get_app_data(t->ssl);
        if (requests)
            *requests = 0; /* the handshake's own messages ask nothing extra */
    }
    if (over)
        return TRANSPORT_OVER;
    if (r > 0)
        return r;
    switch (SSL_get_error(t->ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return TRANSPORT_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    default:
        return TRANSPORT_ERROR; /* not TLS, bad handshake, or the peer went away */
    }
}

int tls_flush(transport *t)
{
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
    return 1;
}

/* One SSL_write per run of up to TRANSPORT_TLS_STAGE plaintext bytes
 * gathered from many frames, instead of one per frame. */
ssize_t tls_writev(transport *t, const struct iovec *iov, int n)
{
    static _Thread_local uint8_t stage[TRANSPORT_TLS_STAGE];
    int rc = tls_flush(t);
    if (rc <= 0)
        return rc == 0 ? TRANSPORT_AGAIN : TRANSPORT_ERROR;
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
    if (!t->shut) {
        SSL_shutdown(t->ssl); /* close_notify, into the write BIO */
        t->shut = true;
    }
    return tls_flush(t);
}

/* A memory BIO keeps its peak size: an idle connection gets a fresh one. */
void tls_idle(transport *t)
{
    BIO *wb = SSL_get_wbio(t->ssl);
    BUF_MEM *bm = NULL;
    if (BIO_ctrl_pending(wb) || BIO_get_mem_ptr(wb, &bm) <= 0 || !bm || bm->max == 0)
        return;
    BIO *fresh = BIO_new(BIO_s_mem());
    if (fresh)
        SSL_set0_wbio(t->ssl, fresh);
}

void tls_close(transport *t)
{
    SSL_free(t->ssl); /* frees both BIOs; the socket BIO leaves the fd to us */
    t->ssl = NULL;
}
