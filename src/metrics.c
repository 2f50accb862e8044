#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void metrics_sum(const metrics *const *blocks, size_t n, metrics *out)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < n; i++) {
#define METRICS_SUM(name, type, help)                                                     \
    atomic_store_explicit(&out->name,                                                      \
                          atomic_load_explicit(&out->name, memory_order_relaxed) +         \
                              atomic_load_explicit(&blocks[i]->name, memory_order_relaxed), \
                          memory_order_relaxed);
        METRICS_LIST(METRICS_SUM)
#undef METRICS_SUM
    }
}

static void metrics_append(char *buf, size_t cap, size_t *len, const char *fmt, ...)
{
    if (*len >= cap)
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

size_t metrics_prometheus(const metrics *m, int workers, double uptime, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
#define METRICS_PROM(name, type, help)                                                       \
    {                                                                                        \
        const char *suffix = strcmp(#type, "counter") == 0 ? "_total" : "";                 \
        metrics_append(buf, cap, &len, "# HELP herald_%s%s %s\n# TYPE herald_%s%s %s\n",   \
                       #name, suffix, help, #name, suffix, #type);                           \
        metrics_append(buf, cap, &len, "herald_%s%s %llu\n", #name, suffix,                \
                       (unsigned long long)atomic_load_explicit(&m->name,                    \
                                                                memory_order_relaxed));      \
    }
    METRICS_LIST(METRICS_PROM)
#undef METRICS_PROM
    metrics_append(buf, cap, &len,
                   "# HELP herald_workers Worker threads\n# TYPE herald_workers gauge\n"
                   "herald_workers %d\n"
                   "# HELP herald_uptime_seconds Seconds since start\n"
                   "# TYPE herald_uptime_seconds gauge\nherald_uptime_seconds %.3f\n",
                   workers, uptime);
    return len;
}

size_t metrics_json(const metrics *m, int workers, double uptime, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    metrics_append(buf, cap, &len, "{");
#define METRICS_JSON(name, type, help)                                                     \
    metrics_append(buf, cap, &len, "\"%s\":%llu,", #name,                                  \
                   (unsigned long long)atomic_load_explicit(&m->name, memory_order_relaxed));
    METRICS_LIST(METRICS_JSON)
#undef METRICS_JSON
    metrics_append(buf, cap, &len, "\"workers\":%d,\"uptime_seconds\":%.3f,\"version\":\"%s\"}\n",
                   workers, uptime, HERALD_VERSION);
    return len;
}
