#include "admit.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct ip_entry {
    struct ip_entry *next;
    ip_key key;
    uint32_t count;
} ip_entry;

#define LIMITS_BUCKETS 4096

static pthread_mutex_t admit_lock = PTHREAD_MUTEX_INITIALIZER;
static ip_entry *admit_table[LIMITS_BUCKETS];
static _Atomic uint64_t admit_window; /* second << 32 | upgrades in it */

void admit_init(void) { atomic_store(&admit_window, 0); }

void admit_destroy(void)
{
    pthread_mutex_lock(&admit_lock);
    for (size_t i = 0; i < LIMITS_BUCKETS; i++) {
        ip_entry *e = admit_table[i];
        while (e) {
            ip_entry *n = e->next;
            free(e);
            e = n;
        }
        admit_table[i] = NULL;
    }
    pthread_mutex_unlock(&admit_lock);
}

void admit_key(const struct sockaddr_storage *ss, int v6_prefix, ip_key *out)
{
    memset(out, 0, sizeof *out);
    out->family = (uint8_t)ss->ss_family;
    if (ss->ss_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr;
        /* An IPv4-mapped address is one IPv4 client, never a prefix. */
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a, mapped, 12) == 0) {
            out->family = AF_INET;
            memcpy(out->addr, a + 12, 4);
            return;
        }
        /* One subscriber line usually gets a whole /64: counting /128s would
         * let one client open a connection per address it owns. */
        int bits = v6_prefix < 0 ? 0 : v6_prefix > 128 ? 128 : v6_prefix;
        memcpy(out->addr, a, (size_t)(bits + 7) / 8);
        if (bits % 8)
            out->addr[bits / 8] &= (uint8_t)(0xFF00u >> (bits % 8));
    } else if (ss->ss_family == AF_INET) {
        memcpy(out->addr, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    }
}

static uint32_t admit_hash(const ip_key *k)
{
    uint32_t h = 2166136261u ^ k->family;
    for (int i = 0; i < 16; i++)
        h = (h ^ k->addr[i]) * 16777619u;
    return h & (LIMITS_BUCKETS - 1);
}

bool admit_ip_acquire(const ip_key *ip, int max)
{
    bool ok = true;
    uint32_t b = admit_hash(ip);
    pthread_mutex_lock(&admit_lock);
    ip_entry *e = admit_table[b];
    while (e && memcmp(&e->key, ip, sizeof *ip) != 0)
        e = e->next;
    if (!e) {
        e = calloc(1, sizeof *e);
        if (e) {
            e->key = *ip;
            e->next = admit_table[b];
            admit_table[b] = e;
        }
    }
    if (!e || (max > 0 && e->count >= (uint32_t)max))
        ok = false;
    else
        e->count++;
    pthread_mutex_unlock(&admit_lock);
    return ok;
}

void admit_ip_release(const ip_key *ip)
{
    uint32_t b = admit_hash(ip);
    pthread_mutex_lock(&admit_lock);
    ip_entry **pp = &admit_table[b];
    while (*pp && memcmp(&(*pp)->key, ip, sizeof *ip) != 0)
        pp = &(*pp)->next;
    if (*pp && --(*pp)->count == 0) {
        ip_entry *e = *pp;
        *pp = e->next;
        free(e);
    }
    pthread_mutex_unlock(&admit_lock);
}

bool admit_accept_allow(uint64_t now_ms, int rate)
{
    if (rate <= 0)
        return true;
    uint64_t sec = now_ms / 1000;
    uint64_t cur = atomic_load_explicit(&admit_window, memory_order_relaxed);
    for (;;) {
        uint64_t next = (cur >> 32) == (sec & 0xFFFFFFFFu) ? cur + 1 : ((sec & 0xFFFFFFFFu) << 32) | 1;
        if ((next & 0xFFFFFFFFu) > (uint64_t)rate)
            return false;
        if (atomic_compare_exchange_weak_explicit(&admit_window, &cur, next,
                                                  memory_order_relaxed, memory_order_relaxed))
            return true;
    }
}
