/* Feasibility probe (issue 10, not part of herald's build): can a server
 * finish a TLS 1.3 handshake with OpenSSL 3.0, free the SSL object, and keep
 * talking with nothing but its traffic secrets and record counts?
 *
 * A client SSL and a server SSL handshake over a socketpair. The server
 * learns its traffic secrets from the keylog callback and counts the
 * application-key records it wrote and read through the message callback.
 * After one request/response through OpenSSL it frees its SSL and then, with
 * its own AEAD record code: sends a record the client's SSL_read must
 * accept, decrypts a record the client's SSL_write made, follows a client
 * KeyUpdate (update_requested: answers with its own), and exchanges data
 * under the new keys both ways. Exit status 0 when everything held.
 *
 * Why: an idle TLS connection costs ~15 KiB in OpenSSL 3.0 (the SSL object
 * alone is 7.6 KB), so issue 10's 4 KiB per idle TLS connection needs the
 * SSL object gone after the handshake (no kernel TLS here). This checks the
 * mechanism on this OpenSSL; it is not herald code.
 *
 *   make -C bench/tls_handoff run     (builds, makes a P-256 certificate, runs
 *                                      the three TLS 1.3 suites) */
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fcntl.h>

typedef struct dir {
    uint8_t secret[48];
    uint8_t key[32];
    uint8_t iv[12];
    uint64_t seq;
} dir;

/* What a connection would keep instead of its SSL object. */
typedef struct handoff {
    const EVP_CIPHER *aead;
    const EVP_MD *md;
    uint8_t keylen, hashlen;
    dir rd, wr;
} handoff;

static handoff H;
static int have_secrets;
static int fin_r, fin_w;  /* Finished seen in that direction */
static long recs_r, recs_w;

static void die(const char *what)
{
    fprintf(stderr, "probe: FAIL: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static int hexval(int c) { return c <= '9' ? c - '0' : (c | 32) - 'a' + 10; }

static void keylog(const SSL *ssl, const char *line)
{
    (void)ssl;
    dir *d = NULL;
    if (!strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24))
        d = &H.wr;
    else if (!strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24))
        d = &H.rd;
    if (!d)
        return;
    const char *hex = strrchr(line, ' ') + 1;
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n && i < sizeof d->secret; i++)
        d->secret[i] = (uint8_t)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
    have_secrets++;
}

/* Counts records under the application keys: every record header after the
 * direction's Finished. (OpenSSL 3.0 reports a record's header before the
 * message it carries, in both directions, so the Finished's own record is
 * not counted.) */
static void on_msg(int write_p, int version, int type, const void *buf, size_t len, SSL *ssl,
                   void *arg)
{
    (void)version, (void)ssl, (void)arg;
    const uint8_t *p = buf;
    if (type == SSL3_RT_HANDSHAKE && len && p[0] == 20) {
        if (write_p)
            fin_w = 1;
        else
            fin_r = 1;
    }
    if (type == SSL3_RT_HEADER) {
        if (write_p && fin_w)
            recs_w++;
        if (!write_p && fin_r)
            recs_r++;
    }
}

static void expand_label(const EVP_MD *md, const uint8_t *secret, size_t slen, const char *label,
                         uint8_t *out, size_t olen)
{
    uint8_t info[2 + 1 + 255 + 1];
    size_t ll = 6 + strlen(label), n = 0;
    info[n++] = (uint8_t)(olen >> 8);
    info[n++] = (uint8_t)olen;
    info[n++] = (uint8_t)ll;
    memcpy(info + n, "tls13 ", 6);
    memcpy(info + n + 6, label, strlen(label));
    n += ll;
    info[n++] = 0; /* empty context */
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *k = EVP_KDF_CTX_new(kdf);
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
    OSSL_PARAM ps[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)EVP_MD_get0_name(md), 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, slen),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, n),
        OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode), OSSL_PARAM_construct_end()};
    if (!k || EVP_KDF_derive(k, out, olen, ps) != 1)
        die("HKDF-Expand-Label");
    EVP_KDF_CTX_free(k);
    EVP_KDF_free(kdf);
}

static void dir_keys(dir *d)
{
    expand_label(H.md, d->secret, H.hashlen, "key", d->key, H.keylen);
    expand_label(H.md, d->secret, H.hashlen, "iv", d->iv, 12);
}

static void dir_update(dir *d)
{
    uint8_t next[48];
    expand_label(H.md, d->secret, H.hashlen, "traffic upd", next, H.hashlen);
    memcpy(d->secret, next, H.hashlen);
    dir_keys(d);
    d->seq = 0;
}

static void nonce(const dir *d, uint8_t out[12])
{
    memcpy(out, d->iv, 12);
    for (int i = 0; i < 8; i++)
        out[11 - i] ^= (uint8_t)(d->seq >> (8 * i));
}

/* One TLSPlaintext -> TLSCiphertext; returns the record's length. */
static size_t seal(dir *d, uint8_t type, const uint8_t *p, size_t n, uint8_t *rec)
{
    uint8_t iv[12];
    size_t inner = n + 1, len = inner + 16;
    rec[0] = 23, rec[1] = 3, rec[2] = 3, rec[3] = (uint8_t)(len >> 8), rec[4] = (uint8_t)len;
    uint8_t *buf = malloc(inner);
    memcpy(buf, p, n);
    buf[n] = type;
    nonce(d, iv);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int ol;
    if (!EVP_EncryptInit_ex(c, H.aead, NULL, d->key, iv) ||
        !EVP_EncryptUpdate(c, NULL, &ol, rec, 5) ||
        !EVP_EncryptUpdate(c, rec + 5, &ol, buf, (int)inner) ||
        !EVP_EncryptFinal_ex(c, rec + 5 + ol, &ol) ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, rec + 5 + inner))
        die("seal");
    EVP_CIPHER_CTX_free(c);
    free(buf);
    d->seq++;
    return 5 + len;
}

/* Opens one whole record in place; returns the inner type, *n the length. */
static int open_rec(dir *d, uint8_t *rec, size_t *n)
{
    size_t len = (size_t)rec[3] << 8 | rec[4];
    uint8_t iv[12];
    nonce(d, iv);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int ol, ok = EVP_DecryptInit_ex(c, H.aead, NULL, d->key, iv) &&
                 EVP_DecryptUpdate(c, NULL, &ol, rec, 5) &&
                 EVP_DecryptUpdate(c, rec + 5, &ol, rec + 5, (int)(len - 16)) &&
                 EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, 16, rec + 5 + len - 16) &&
                 EVP_DecryptFinal_ex(c, rec + 5 + ol, &ol) > 0;
    EVP_CIPHER_CTX_free(c);
    if (!ok)
        die("open: authentication failed (wrong key or sequence number)");
    d->seq++;
    size_t m = len - 16;
    while (m && rec[5 + m - 1] == 0) /* padding */
        m--;
    *n = m - 1;
    return rec[5 + m - 1];
}

static void read_full(int fd, uint8_t *p, size_t n)
{
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0)
            die("read");
        p += r, n -= (size_t)r;
    }
}

static void write_full(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t r = write(fd, p, n);
        if (r <= 0)
            die("write");
        p += r, n -= (size_t)r;
    }
}

static int read_rec(int fd, uint8_t *rec)
{
    read_full(fd, rec, 5);
    read_full(fd, rec + 5, (size_t)rec[3] << 8 | rec[4]);
    return 1;
}

static void client_expect(SSL *cl, const char *want)
{
    char buf[256];
    int r;
    while ((r = SSL_read(cl, buf, sizeof buf - 1)) <= 0)
        if (SSL_get_error(cl, r) != SSL_ERROR_WANT_READ)
            die("client SSL_read");
    buf[r] = 0;
    if (strcmp(buf, want))
        die("client read something else");
    printf("probe: client read \"%s\"\n", buf);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method()), *cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(sctx, TLS1_3_VERSION);
    SSL_CTX_set_num_tickets(sctx, 0);
    if (argc > 3)
        SSL_CTX_set_ciphersuites(cctx, argv[3]);
    SSL_CTX_set_keylog_callback(sctx, keylog);
    SSL_CTX_set_msg_callback(sctx, on_msg);
    if (SSL_CTX_use_certificate_chain_file(sctx, argv[1]) != 1 ||
        SSL_CTX_use_PrivateKey_file(sctx, argv[2], SSL_FILETYPE_PEM) != 1)
        die("certificate");
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    SSL *srv = SSL_new(sctx), *cl = SSL_new(cctx);
    SSL_set_fd(srv, sv[0]);
    SSL_set_fd(cl, sv[1]);
    SSL_set_accept_state(srv);
    SSL_set_connect_state(cl);
    for (int i = 0; i < 100 && !(SSL_is_init_finished(srv) && SSL_is_init_finished(cl)); i++) {
        SSL_do_handshake(cl);
        SSL_do_handshake(srv);
    }
    /* one request and one answer through OpenSSL, as herald's upgrade does */
    char buf[256];
    SSL_write(cl, "GET /ws", 7);
    int r;
    while ((r = SSL_read(srv, buf, sizeof buf)) <= 0)
        if (SSL_get_error(srv, r) != SSL_ERROR_WANT_READ)
            die("server SSL_read");
    SSL_write(srv, "101", 3);
    client_expect(cl, "101");
    if (have_secrets != 2)
        die("keylog gave no traffic secrets");
    const SSL_CIPHER *ciph = SSL_get_current_cipher(srv);
    const char *name = SSL_CIPHER_get_name(ciph);
    H.md = SSL_CIPHER_get_handshake_digest(ciph);
    H.hashlen = (uint8_t)EVP_MD_get_size(H.md);
    H.aead = strstr(name, "CHACHA") ? EVP_chacha20_poly1305()
             : strstr(name, "AES_128") ? EVP_aes_128_gcm() : EVP_aes_256_gcm();
    H.keylen = (uint8_t)EVP_CIPHER_get_key_length(H.aead);
    dir_keys(&H.rd);
    dir_keys(&H.wr);
    H.rd.seq = (uint64_t)recs_r;
    H.wr.seq = (uint64_t)recs_w;
    printf("probe: %s %s, application records so far: read %ld, written %ld\n",
           SSL_get_version(srv), name, recs_r, recs_w);
    SSL_free(srv); /* socket stays open: SSL_set_fd's BIO does not close it */
    printf("probe: server SSL freed; per-connection state kept: %zu bytes\n", sizeof(handoff));
    fcntl(sv[0], F_SETFL, 0);

    uint8_t rec[1024];
    const char *m1 = "frame after handoff";
    size_t n = seal(&H.wr, 23, (const uint8_t *)m1, strlen(m1), rec);
    write_full(sv[0], rec, n);
    client_expect(cl, m1);

    SSL_write(cl, "pong", 4);
    read_rec(sv[0], rec);
    int t = open_rec(&H.rd, rec, &n);
    if (t != 23 || n != 4 || memcmp(rec + 5, "pong", 4))
        die("server did not get the client's data");
    printf("probe: server read \"pong\" with its own record code\n");

    /* client KeyUpdate, update_requested */
    if (!SSL_key_update(cl, SSL_KEY_UPDATE_REQUESTED) || SSL_write(cl, "after update", 12) != 12)
        die("client key update");
    read_rec(sv[0], rec);
    t = open_rec(&H.rd, rec, &n);
    if (t != 22 || n != 5 || rec[5] != 24 || rec[9] != 1)
        die("expected KeyUpdate(update_requested)");
    dir_update(&H.rd);
    uint8_t ku[5] = {24, 0, 0, 1, 0}; /* KeyUpdate(update_not_requested), under the old key */
    n = seal(&H.wr, 22, ku, 5, rec);
    write_full(sv[0], rec, n);
    dir_update(&H.wr);
    read_rec(sv[0], rec);
    t = open_rec(&H.rd, rec, &n);
    if (t != 23 || n != 12 || memcmp(rec + 5, "after update", 12))
        die("data under the client's new key");
    printf("probe: followed the client's KeyUpdate and answered with ours\n");
    const char *m2 = "frame under new keys";
    n = seal(&H.wr, 23, (const uint8_t *)m2, strlen(m2), rec);
    write_full(sv[0], rec, n);
    client_expect(cl, m2);
    printf("probe: PASS\n");
    SSL_free(cl);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    return 0;
}
