/* Process-wide admission limits shared by all workers: connections per client
 * IP and new WebSocket upgrades per second. These sit on the accept and
 * handshake paths only, never on the delivery path, so a mutex-protected
 * table and one atomic window counter are cheap enough. */
#ifndef HERALD_ADMIT_H
#define HERALD_ADMIT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct ip_key {
    uint8_t family; /* AF_INET / AF_INET6 */
    uint8_t addr[16];
} ip_key;

void admit_init(void);
void admit_destroy(void);

/* Makes an ip_key from a peer address: IPv4 as is (IPv4-mapped IPv6 too),
 * IPv6 cut to its first v6_prefix bits (--ipv6-prefix). Pure. */
void admit_key(const struct sockaddr_storage *ss, int v6_prefix, ip_key *out);

/* Counts a connection from ip; false (and not counted) when max (> 0) is
 * already reached. */
bool admit_ip_acquire(const ip_key *ip, int max);
void admit_ip_release(const ip_key *ip);

/* One more WebSocket upgrade now; false when rate (> 0) per second is spent. */
bool admit_accept_allow(uint64_t now_ms, int rate);

#endif
