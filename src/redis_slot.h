/* Redis Cluster's key routing, pure: the slot of a key (CRC16/XMODEM of the
 * key, or of its {hash tag}, mod 16384) and the redirections a node answers
 * with ("MOVED 3999 127.0.0.1:6381", "ASK 3999 127.0.0.1:6381"). Debian's
 * hiredis (0.14) has no cluster support, and this is all of it we need. */
#ifndef HERALD_REDIS_SLOT_H
#define HERALD_REDIS_SLOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REDIS_SLOTS 16384

uint16_t redis_crc16(const void *data, size_t len);
unsigned redis_key_slot(const char *key, size_t len);

typedef enum redis_redirect_kind { REDIS_REDIRECT_NONE, REDIS_MOVED, REDIS_ASK } redis_redirect_kind;

typedef struct redis_redirect {
    redis_redirect_kind kind;
    unsigned slot;
    char host[256]; /* "": the node that answered (Redis 7's unknown-endpoint) */
    int port;
} redis_redirect;

/* Parses an error reply's text; kind NONE (and false) when it is no
 * well-formed redirection, or names no usable endpoint ("?"). An empty host
 * means the node that sent it. */
bool redis_parse_redirect(const char *err, size_t len, redis_redirect *out);

#endif
