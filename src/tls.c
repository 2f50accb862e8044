#include "tls.h"

#include <malloc.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "log.h"

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
