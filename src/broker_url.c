#include "broker_url.h"

#include <stdio.h>
#include <string.h>

static bool broker_url_fail(char *err, size_t errlen, const char *why)
{
    snprintf(err, errlen, "%s", why);
    return false;
}

/* Digits only, within [lo, hi]; *p moves past them. */
static bool broker_url_number(const char **p, const char *end, long lo, long hi, long *out)
{
    long v = 0;
    const char *s = *p;
    while (s < end && *s >= '0' && *s <= '9' && v <= hi)
        v = v * 10 + (*s++ - '0');
    if (s == *p || v < lo || v > hi)
        return false;
    *p = s;
    *out = v;
    return true;
}

/* One HOST[:PORT] or [V6][:PORT] between p and end. */
static bool broker_url_addr(const char *p, const char *end, int defport, broker_addr *a)
{
    const char *hs = p, *he;
    if (p < end && *p == '[') {
        he = memchr(p, ']', (size_t)(end - p));
        if (!he)
            return false;
        hs = p + 1;
        p = he + 1;
    } else {
        he = p;
        while (he < end && *he != ':')
            he++;
        p = he;
    }
    if (he == hs || (size_t)(he - hs) > BROKER_URL_HOST_MAX)
        return false;
    /* Host names and addresses only: anything a URL would give another
     * meaning (user info, query, fragment, brackets) is refused here rather
     * than at the first lookup. */
    for (const unsigned char *s = (const unsigned char *)hs; s < (const unsigned char *)he; s++)
        if (*s <= ' ' || *s >= 0x7f || strchr("/,@?#[]", *s))
            return false;
    long port = defport;
    if (p < end) {
        if (*p++ != ':' || !broker_url_number(&p, end, 1, 65535, &port) || p != end)
            return false;
    }
    memcpy(a->host, hs, (size_t)(he - hs));
    a->host[he - hs] = '\0';
    a->port = (int)port;
    return true;
}

bool broker_url_parse(const char *url, broker_url *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    static const struct {
        const char *scheme;
        broker_kind kind;
        int port;
    } schemes[] = {{"redis://", BROKER_REDIS, 6379},
                   {"redis-sentinel://", BROKER_SENTINEL, 26379},
                   {"redis-cluster://", BROKER_CLUSTER, 6379}};
    const char *p = NULL;
    int defport = 0;
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        size_t n = strlen(schemes[i].scheme);
        if (strncmp(url, schemes[i].scheme, n) == 0) {
            p = url + n;
            out->kind = schemes[i].kind;
            defport = schemes[i].port;
        }
    }
    if (!p)
        return broker_url_fail(err, errlen,
                               "must be redis://HOST:PORT[/DB], redis-sentinel://HOST:PORT[,...]/MASTER[/DB] "
                               "or redis-cluster://HOST:PORT[,...]");
    const char *end = p + strlen(p);
    const char *hosts_end = memchr(p, '/', (size_t)(end - p));
    if (!hosts_end)
        hosts_end = end;
    while (p < hosts_end) {
        const char *comma = memchr(p, ',', (size_t)(hosts_end - p));
        const char *e = comma ? comma : hosts_end;
        if (out->naddr == BROKER_URL_HOSTS)
            return broker_url_fail(err, errlen, "too many hosts (at most 16)");
        if (!broker_url_addr(p, e, defport, &out->addr[out->naddr]))
            return broker_url_fail(err, errlen, "bad HOST[:PORT]");
        out->naddr++;
        p = comma ? comma + 1 : e;
        if (comma && p == hosts_end)
            return broker_url_fail(err, errlen, "empty host after ','");
    }
    if (out->naddr == 0)
        return broker_url_fail(err, errlen, "missing host");
    if (out->kind == BROKER_REDIS && out->naddr > 1)
        return broker_url_fail(err, errlen, "redis:// takes one host (use redis-sentinel:// or redis-cluster://)");
    if (out->kind == BROKER_SENTINEL) {
        if (p >= end || *p != '/')
            return broker_url_fail(err, errlen, "missing /MASTER (the name Sentinel monitors)");
        const char *ms = ++p;
        while (p < end && *p != '/')
            p++;
        if (p == ms || (size_t)(p - ms) > BROKER_URL_MASTER_MAX)
            return broker_url_fail(err, errlen, "bad MASTER name");
        for (const char *s = ms; s < p; s++)
            if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
                  *s == '.' || *s == '_' || *s == '-'))
                return broker_url_fail(err, errlen, "bad MASTER name");
        memcpy(out->master, ms, (size_t)(p - ms));
    }
    if (p < end) {
        if (out->kind == BROKER_CLUSTER)
            return broker_url_fail(err, errlen, "Redis Cluster has no databases: no /DB");
        long db;
        p++; /* the '/' */
        if (!broker_url_number(&p, end, 0, 1000000, &db) || p != end)
            return broker_url_fail(err, errlen, "bad database number");
        out->db = (int)db;
    }
    return true;
}
