/* TLS for the listener (OpenSSL 3). One SSL_CTX is shared by all workers;
 * each connection gets its own SSL in server mode. */
#ifndef HERALD_TLS_H
#define HERALD_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

/* Loads the certificate chain and key; NULL (after logging why) on failure. */
SSL_CTX *tls_ctx_new(const char *cert_file, const char *key_file);
void tls_ctx_free(SSL_CTX *ctx);

/* Routes OpenSSL's allocations through counting wrappers so the memory view
 * can report TLS state (per-connection SSL objects, buffers). Must run
 * before OpenSSL allocates anything (first thing in main); false if too late. */
bool tls_count_memory(void);

/* Bytes OpenSSL holds now (0 when counting is off). */
uint64_t tls_memory(void);

/* Records that failed after a hand-off (bad tag, malformed, unexpected
 * message): connections closed for it, process-wide. */
uint64_t tls_record_errors(void);

#endif
