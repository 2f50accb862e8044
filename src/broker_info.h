/* What the cluster broker shows of itself on /metrics and /stats: a plain
 * snapshot (broker_snapshot fills it), so the metrics text needs no broker. */
#ifndef HERALD_BROKER_INFO_H
#define HERALD_BROKER_INFO_H

#include <stdbool.h>

#define BROKER_LINKS_MAX 40
#define BROKER_FETCH_BUCKETS 6

/* One connection the broker holds, for /metrics and /stats. */
typedef struct broker_link {
    char addr[264];  /* host:port */
    char role[12];   /* master, sentinel, seed */
    char kind[12];   /* commands, pubsub */
    bool up;
} broker_link;

typedef struct broker_info {
    const char *mode; /* redis, sentinel, cluster */
    bool up;          /* connected and subscribed */
    unsigned long long failovers, redirections, topology_refreshes;
    unsigned long long fetches, fetch_failures, fetch_ns_sum;
    unsigned long long fetch_bucket[BROKER_FETCH_BUCKETS]; /* cumulative counts per le */
    int nlinks;
    broker_link links[BROKER_LINKS_MAX];
} broker_info;

/* Upper bounds of the history-fetch latency buckets, in seconds. */
static const double broker_fetch_le[BROKER_FETCH_BUCKETS] = {0.001, 0.005, 0.025, 0.1, 0.5, 2.5};

#endif
