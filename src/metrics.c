#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "chan.h"

const uint64_t metrics_lat_bounds_us[METRICS_LAT_BUCKETS - 1] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000,
};

const int metrics_statuses[METRICS_STATUSES] = {400, 401, 403, 404, 405, 408, 411, 413,
                                                426, 429, 431, 500, 501, 503, 505, 0};

void metrics_observe_latency(metrics *m, uint64_t us)
{
    size_t b = 0;
    while (b < METRICS_LAT_BUCKETS - 1 && us > metrics_lat_bounds_us[b])
        b++;
    metrics_add(&m->lat_bucket[b], 1);
    metrics_add(&m->lat_sum_us, us);
}

void metrics_count_status(metrics *m, int status)
{
    size_t i = 0;
    while (i < METRICS_STATUSES - 1 && metrics_statuses[i] != status)
        i++;
    metrics_add(&m->failed_by_status[i], 1);
}

static void metrics_acc(_Atomic uint64_t *dst, const _Atomic uint64_t *src)
{
    atomic_store_explicit(dst,
                          atomic_load_explicit(dst, memory_order_relaxed) +
                              atomic_load_explicit(src, memory_order_relaxed),
                          memory_order_relaxed);
}

void metrics_sum(const metrics *const *blocks, size_t n, metrics *out)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        const metrics *b = blocks[i];
#define METRICS_SUM(name, type, help) metrics_acc(&out->name, &b->name);
        METRICS_LIST(METRICS_SUM)
#undef METRICS_SUM
        for (size_t k = 0; k < METRICS_LAT_BUCKETS; k++)
            metrics_acc(&out->lat_bucket[k], &b->lat_bucket[k]);
        metrics_acc(&out->lat_sum_us, &b->lat_sum_us);
        for (size_t k = 0; k < METRICS_STATUSES; k++)
            metrics_acc(&out->failed_by_status[k], &b->failed_by_status[k]);
        for (size_t k = 0; k < METRICS_AUTH_REASONS; k++)
            metrics_acc(&out->auth_failures[k], &b->auth_failures[k]);
        for (size_t k = 0; k < 2; k++)
            metrics_acc(&out->request_timeouts[k], &b->request_timeouts[k]);
    }
}

static void metrics_append(char *buf, size_t cap, size_t *len, const char *fmt, ...)
{
    if (*len >= cap - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *len, cap - *len, fmt, ap);
    va_end(ap);
    if (n > 0)
        *len += (size_t)n;
    if (*len >= cap)
        *len = cap - 1;
}

#define LOAD(x) ((unsigned long long)atomic_load_explicit(&(x), memory_order_relaxed))

/* 1 before anything was compressed: nothing saved yet. */
static double metrics_deflate_ratio(const metrics *m)
{
    uint64_t in = LOAD(m->deflate_bytes_in);
    return in ? (double)LOAD(m->deflate_bytes_out) / (double)in : 1.0;
}

static void metrics_prom_labeled(const metrics *m, char *buf, size_t cap, size_t *len)
{
    metrics_append(buf, cap, len,
                   "# HELP herald_connections Connections open by state\n"
                   "# TYPE herald_connections gauge\n"
                   "herald_connections{state=\"subscriber\"} %llu\n"
                   "herald_connections{state=\"publisher\"} %llu\n"
                   "herald_connections{state=\"http\"} %llu\n",
                   LOAD(m->subscribers_open), LOAD(m->publishers_open),
                   LOAD(m->connections_open) - LOAD(m->subscribers_open) -
                       LOAD(m->publishers_open));
    metrics_append(buf, cap, len,
                   "# HELP herald_published_by_transport_total Messages published by transport\n"
                   "# TYPE herald_published_by_transport_total counter\n"
                   "herald_published_by_transport_total{transport=\"http\"} %llu\n"
                   "herald_published_by_transport_total{transport=\"ws\"} %llu\n",
                   LOAD(m->published_http), LOAD(m->published_ws));
    metrics_append(buf, cap, len,
                   "# HELP herald_deliveries_by_transport_total Deliveries by transport\n"
                   "# TYPE herald_deliveries_by_transport_total counter\n"
                   "herald_deliveries_by_transport_total{transport=\"ws\"} %llu\n"
                   "herald_deliveries_by_transport_total{transport=\"wss\"} %llu\n"
                   "herald_deliveries_by_transport_total{transport=\"sse\"} %llu\n",
                   LOAD(m->deliveries) - LOAD(m->deliveries_tls) - LOAD(m->deliveries_sse),
                   LOAD(m->deliveries_tls), LOAD(m->deliveries_sse));
    metrics_append(buf, cap, len,
                   "# HELP herald_subscribers_by_transport Subscribers open by transport\n"
                   "# TYPE herald_subscribers_by_transport gauge\n"
                   "herald_subscribers_by_transport{transport=\"ws\"} %llu\n"
                   "herald_subscribers_by_transport{transport=\"sse\"} %llu\n",
                   LOAD(m->subscribers_open) - LOAD(m->sse_open), LOAD(m->sse_open));
    metrics_append(buf, cap, len,
                   "# HELP herald_requests_failed_total Requests refused, by HTTP status\n"
                   "# TYPE herald_requests_failed_total counter\n");
    for (size_t k = 0; k < METRICS_STATUSES; k++) {
        if (metrics_statuses[k])
            metrics_append(buf, cap, len, "herald_requests_failed_total{status=\"%d\"} %llu\n",
                           metrics_statuses[k], LOAD(m->failed_by_status[k]));
        else
            metrics_append(buf, cap, len, "herald_requests_failed_total{status=\"other\"} %llu\n",
                           LOAD(m->failed_by_status[k]));
    }
    metrics_append(buf, cap, len,
                   "# HELP herald_auth_failures_total Refused credentials, by reason\n"
                   "# TYPE herald_auth_failures_total counter\n");
    for (int k = 1; k <= (int)AUTH_FORBIDDEN_GROUP && k < METRICS_AUTH_REASONS; k++)
        metrics_append(buf, cap, len, "herald_auth_failures_total{reason=\"%s\"} %llu\n",
                       auth_result_name((auth_result)k), LOAD(m->auth_failures[k]));
    metrics_append(buf, cap, len,
                   "# HELP herald_request_timeouts_total Requests answered 408, by what was late\n"
                   "# TYPE herald_request_timeouts_total counter\n"
                   "herald_request_timeouts_total{phase=\"head\"} %llu\n"
                   "herald_request_timeouts_total{phase=\"body\"} %llu\n",
                   LOAD(m->request_timeouts[METRICS_PHASE_HEAD]),
                   LOAD(m->request_timeouts[METRICS_PHASE_BODY]));
    metrics_append(buf, cap, len,
                   "# HELP herald_live_groups Group records held (sequencing, history)\n"
                   "# TYPE herald_live_groups gauge\nherald_live_groups %llu\n"
                   "# HELP herald_groups_reclaimed_total Unused group records freed\n"
                   "# TYPE herald_groups_reclaimed_total counter\n"
                   "herald_groups_reclaimed_total %llu\n",
                   (unsigned long long)chan_live(), (unsigned long long)chan_reclaimed());
    metrics_append(buf, cap, len,
                   "# HELP herald_delivery_latency_seconds Publish accepted to frame written\n"
                   "# TYPE herald_delivery_latency_seconds histogram\n");
    unsigned long long cum = 0;
    for (size_t k = 0; k < METRICS_LAT_BUCKETS; k++) {
        cum += LOAD(m->lat_bucket[k]);
        if (k < METRICS_LAT_BUCKETS - 1)
            metrics_append(buf, cap, len,
                           "herald_delivery_latency_seconds_bucket{le=\"%g\"} %llu\n",
                           (double)metrics_lat_bounds_us[k] / 1e6, cum);
        else
            metrics_append(buf, cap, len,
                           "herald_delivery_latency_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
    }
    metrics_append(buf, cap, len,
                   "herald_delivery_latency_seconds_sum %.6f\n"
                   "herald_delivery_latency_seconds_count %llu\n",
                   (double)LOAD(m->lat_sum_us) / 1e6, cum);
}

#define METRICS_MEM_KINDS 8
static const char *const metrics_mem_kinds[METRICS_MEM_KINDS] = {
    "history", "messages", "groups", "queues", "connections", "tls", "inbox", "deflate"};

static void metrics_mem_values(const metrics_memory *mem, uint64_t v[METRICS_MEM_KINDS])
{
    v[0] = mem->history;
    v[1] = mem->messages;
    v[2] = mem->groups;
    v[3] = mem->queues;
    v[4] = mem->connections;
    v[5] = mem->tls;
    v[6] = mem->inbox;
    v[7] = mem->deflate;
}

static void metrics_prom_memory(const metrics_memory *mem, char *buf, size_t cap, size_t *len)
{
    uint64_t v[METRICS_MEM_KINDS];
    metrics_mem_values(mem, v);
    metrics_append(buf, cap, len,
                   "# HELP herald_memory_bytes Memory held by kind (RSS also has code, stacks, slack)\n"
                   "# TYPE herald_memory_bytes gauge\n");
    for (int k = 0; k < METRICS_MEM_KINDS; k++)
        metrics_append(buf, cap, len, "herald_memory_bytes{kind=\"%s\"} %llu\n",
                       metrics_mem_kinds[k], (unsigned long long)v[k]);
    metrics_append(buf, cap, len,
                   "# HELP herald_memory_rss_bytes Resident set size\n"
                   "# TYPE herald_memory_rss_bytes gauge\nherald_memory_rss_bytes %llu\n"
                   "# HELP herald_memory_limit_bytes --max-memory (0: off)\n"
                   "# TYPE herald_memory_limit_bytes gauge\nherald_memory_limit_bytes %llu\n"
                   "# HELP herald_memory_pressure 1 while over the --max-memory mark\n"
                   "# TYPE herald_memory_pressure gauge\nherald_memory_pressure %d\n"
                   "# HELP herald_history_evictions_total Groups whose history the budget dropped\n"
                   "# TYPE herald_history_evictions_total counter\n"
                   "herald_history_evictions_total %llu\n"
                   "# HELP herald_tls_record_errors_total TLS records herald opened itself that "
                   "failed (forged, altered, replayed, malformed): the connection was closed\n"
                   "# TYPE herald_tls_record_errors_total counter\n"
                   "herald_tls_record_errors_total %llu\n",
                   (unsigned long long)mem->rss, (unsigned long long)mem->limit,
                   mem->pressure ? 1 : 0, (unsigned long long)mem->evictions,
                   (unsigned long long)mem->tls_record_errors);
}

/* Per broker connection, and the broker's failovers, redirections and the
 * latency of the fetches that fill a group's history from Redis. */
static void metrics_prom_broker(const broker_info *bi, char *buf, size_t cap, size_t *len)
{
    if (!bi)
        return;
    metrics_append(buf, cap, len,
                   "# HELP herald_broker_link_up 1 per broker connection that is connected\n"
                   "# TYPE herald_broker_link_up gauge\n");
    for (int i = 0; i < bi->nlinks; i++)
        metrics_append(buf, cap, len,
                       "herald_broker_link_up{addr=\"%s\",role=\"%s\",kind=\"%s\"} %d\n",
                       bi->links[i].addr, bi->links[i].role, bi->links[i].kind, bi->links[i].up ? 1 : 0);
    metrics_append(buf, cap, len,
                   "# HELP herald_broker_failovers_total Master changes seen (Sentinel, cluster topology)\n"
                   "# TYPE herald_broker_failovers_total counter\nherald_broker_failovers_total %llu\n"
                   "# HELP herald_broker_redirections_total MOVED/ASK answers from a Redis Cluster\n"
                   "# TYPE herald_broker_redirections_total counter\nherald_broker_redirections_total %llu\n"
                   "# HELP herald_broker_fetch_failures_total History fetches from Redis that failed\n"
                   "# TYPE herald_broker_fetch_failures_total counter\nherald_broker_fetch_failures_total %llu\n"
                   "# HELP herald_broker_fetch_seconds Time to fill a group's history from Redis\n"
                   "# TYPE herald_broker_fetch_seconds histogram\n",
                   bi->failovers, bi->redirections, bi->fetch_failures);
    for (int k = 0; k < BROKER_FETCH_BUCKETS; k++)
        metrics_append(buf, cap, len, "herald_broker_fetch_seconds_bucket{le=\"%g\"} %llu\n",
                       broker_fetch_le[k], bi->fetch_bucket[k]);
    metrics_append(buf, cap, len,
                   "herald_broker_fetch_seconds_bucket{le=\"+Inf\"} %llu\n"
                   "herald_broker_fetch_seconds_sum %.6f\nherald_broker_fetch_seconds_count %llu\n",
                   bi->fetches, (double)bi->fetch_ns_sum / 1e9, bi->fetches);
}

/* /stats: "broker_links":[...] and the counters, in cluster mode only. */
static void metrics_json_broker(const broker_info *bi, char *buf, size_t cap, size_t *len)
{
    if (!bi)
        return;
    metrics_append(buf, cap, len, "\"broker_mode\":\"%s\",\"broker_links\":[", bi->mode);
    for (int i = 0; i < bi->nlinks; i++)
        metrics_append(buf, cap, len, "%s{\"addr\":\"%s\",\"role\":\"%s\",\"kind\":\"%s\",\"up\":%s}",
                       i ? "," : "", bi->links[i].addr, bi->links[i].role, bi->links[i].kind,
                       bi->links[i].up ? "true" : "false");
    metrics_append(buf, cap, len,
                   "],\"broker_failovers\":%llu,\"broker_redirections\":%llu,"
                   "\"broker_topology_refreshes\":%llu,\"broker_fetches\":%llu,"
                   "\"broker_fetch_failures\":%llu,\"broker_fetch_ms_avg\":%.3f,",
                   bi->failovers, bi->redirections, bi->topology_refreshes, bi->fetches, bi->fetch_failures,
                   bi->fetches ? (double)bi->fetch_ns_sum / 1e6 / (double)bi->fetches : 0.0);
}

size_t metrics_prometheus(const metrics *m, const metrics *const *per_worker, int workers,
                          const metrics_memory *mem, const broker_info *bi, double uptime,
                          char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
#define METRICS_PROM(name, type, help)                                                       \
    {                                                                                        \
        const char *suffix = strcmp(#type, "counter") == 0 ? "_total" : "";                 \
        metrics_append(buf, cap, &len, "# HELP herald_%s%s %s\n# TYPE herald_%s%s %s\n",   \
                       #name, suffix, help, #name, suffix, #type);                           \
        metrics_append(buf, cap, &len, "herald_%s%s %llu\n", #name, suffix, LOAD(m->name)); \
    }
    METRICS_LIST(METRICS_PROM)
#undef METRICS_PROM
    metrics_prom_labeled(m, buf, cap, &len);
    metrics_append(buf, cap, &len,
                   "# HELP herald_deflate_ratio Compressed / original payload bytes (permessage-deflate)\n"
                   "# TYPE herald_deflate_ratio gauge\nherald_deflate_ratio %.4f\n",
                   metrics_deflate_ratio(m));
    metrics_prom_memory(mem, buf, cap, &len);
    metrics_append(buf, cap, &len,
                   "# HELP herald_worker_connections Connections owned by each worker\n"
                   "# TYPE herald_worker_connections gauge\n");
    for (int i = 0; i < workers; i++)
        metrics_append(buf, cap, &len, "herald_worker_connections{worker=\"%d\"} %llu\n", i,
                       LOAD(per_worker[i]->connections_open));
    metrics_append(buf, cap, &len,
                   "# HELP herald_worker_busy_seconds_total Time each worker spent working\n"
                   "# TYPE herald_worker_busy_seconds_total counter\n");
    for (int i = 0; i < workers; i++)
        metrics_append(buf, cap, &len, "herald_worker_busy_seconds_total{worker=\"%d\"} %.6f\n",
                       i, (double)LOAD(per_worker[i]->busy_ns) / 1e9);
    metrics_append(buf, cap, &len,
                   "# HELP herald_broker_up 1 when the cluster broker is connected\n"
                   "# TYPE herald_broker_up gauge\nherald_broker_up %d\n",
                   bi && bi->up ? 1 : 0);
    metrics_prom_broker(bi, buf, cap, &len);
    metrics_append(buf, cap, &len,
                   "# HELP herald_workers Worker threads\n# TYPE herald_workers gauge\n"
                   "herald_workers %d\n"
                   "# HELP herald_uptime_seconds Seconds since start\n"
                   "# TYPE herald_uptime_seconds gauge\nherald_uptime_seconds %.3f\n",
                   workers, uptime);
    return len;
}

size_t metrics_json(const metrics *m, int workers, const metrics_memory *mem,
                    const broker_info *bi, double uptime, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    metrics_append(buf, cap, &len, "{");
#define METRICS_JSON(name, type, help) \
    metrics_append(buf, cap, &len, "\"%s\":%llu,", #name, LOAD(m->name));
    METRICS_LIST(METRICS_JSON)
#undef METRICS_JSON
    metrics_append(buf, cap, &len, "\"deflate_ratio\":%.4f,", metrics_deflate_ratio(m));
    metrics_append(buf, cap, &len,
                   "\"request_timeouts_head\":%llu,\"request_timeouts_body\":%llu,"
                   "\"live_groups\":%llu,\"groups_reclaimed\":%llu,",
                   LOAD(m->request_timeouts[METRICS_PHASE_HEAD]),
                   LOAD(m->request_timeouts[METRICS_PHASE_BODY]),
                   (unsigned long long)chan_live(), (unsigned long long)chan_reclaimed());
    uint64_t v[METRICS_MEM_KINDS];
    metrics_mem_values(mem, v);
    metrics_append(buf, cap, &len, "\"memory\":{");
    for (int k = 0; k < METRICS_MEM_KINDS; k++)
        metrics_append(buf, cap, &len, "\"%s\":%llu,", metrics_mem_kinds[k],
                       (unsigned long long)v[k]);
    metrics_append(buf, cap, &len,
                   "\"rss\":%llu,\"limit\":%llu,\"pressure\":%s},\"history_evictions\":%llu,"
                   "\"tls_record_errors\":%llu,",
                   (unsigned long long)mem->rss, (unsigned long long)mem->limit,
                   mem->pressure ? "true" : "false", (unsigned long long)mem->evictions,
                   (unsigned long long)mem->tls_record_errors);
    metrics_json_broker(bi, buf, cap, &len);
    metrics_append(buf, cap, &len,
                   "\"workers\":%d,\"uptime_seconds\":%.3f,\"version\":\"%s\",\"epoch\":\"%s\","
                   "\"broker\":\"%s\"}\n",
                   workers, uptime, HERALD_VERSION, chan_epoch(),
                   !bi ? "none" : bi->up ? "up" : "down");
    return len;
}
