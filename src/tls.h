/* TLS for the listener (OpenSSL 3). One SSL_CTX is shared by all workers;
 * each connection gets its own SSL in server mode. */
#ifndef HERALD_TLS_H
#define HERALD_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>

/* Loads the certificate chain and key; NULL (after logging why) on failure. */
SSL_CTX *tls_ctx_new(const char *cert_file, const char *key_file);
void tls_ctx_free(SSL_CTX *ctx);

#endif
