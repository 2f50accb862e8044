/* --broker URLs, pure:
 *   redis://HOST[:PORT][/DB]                                  one Redis
 *   redis-sentinel://HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB]  the master Sentinel names
 *   redis-cluster://HOST[:PORT][,HOST[:PORT]...]              a Redis Cluster (seed nodes)
 * Ports default to 6379 (26379 for sentinels); a host may be [IPv6]. */
#ifndef HERALD_BROKER_URL_H
#define HERALD_BROKER_URL_H

#include <stdbool.h>
#include <stddef.h>

#define BROKER_URL_HOSTS 16
#define BROKER_URL_HOST_MAX 255
#define BROKER_URL_MASTER_MAX 127

typedef enum broker_kind { BROKER_REDIS, BROKER_SENTINEL, BROKER_CLUSTER } broker_kind;

typedef struct broker_addr {
    char host[BROKER_URL_HOST_MAX + 1];
    int port;
} broker_addr;

typedef struct broker_url {
    broker_kind kind;
    int naddr;
    broker_addr addr[BROKER_URL_HOSTS];
    char master[BROKER_URL_MASTER_MAX + 1];
    int db;
} broker_url;

/* false with a one-line reason in err on anything malformed. */
bool broker_url_parse(const char *url, broker_url *out, char *err, size_t errlen);

#endif
