#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static _Atomic(const config *) config_current;

const config *config_get(void) { return atomic_load_explicit(&config_current, memory_order_acquire); }

void config_set(const config *c) { atomic_store_explicit(&config_current, c, memory_order_release); }

void config_defaults(config *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->listen_host, "127.0.0.1");
    c->listen_port = 8080;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    c->workers = n > 0 ? (int)(n > 64 ? 64 : n) : 1;
    c->max_message_size = 1u << 20;
    c->queue_limit = 4u << 20;
    c->write_timeout_ms = 10000;
    c->slow_policy = SLOW_CLOSE;
    c->ping_interval_ms = 25000;
    c->idle_timeout_ms = 60000;
    c->max_header_size = 8192;
    c->max_groups = 64;
    c->shutdown_timeout_ms = 5000;
}

static void config_usage(FILE *out)
{
    fprintf(out,
        "usage: herald [options]\n"
        "\n"
        "A WebSocket broadcast server. Subscribers: GET /ws?groups=a,b (WebSocket).\n"
        "Publishers: POST /publish?group=G (body = message) or GET /publish?group=G\n"
        "(WebSocket, every message it sends is published). Without a group: to all.\n"
        "Also: GET /healthz, /metrics (Prometheus), /stats (JSON), / (status page).\n"
        "\n"
        "options:\n"
        "  --listen HOST:PORT         address to listen on (default 127.0.0.1:8080;\n"
        "                             port 0 picks a free port)\n"
        "  --workers N                worker threads, one event loop each\n"
        "                             (default: number of CPUs)\n"
        "  --max-message-size BYTES   largest message accepted from a publisher;\n"
        "                             larger: HTTP 413 / close 1009 (default 1m)\n"
        "  --queue-limit BYTES        bytes queued for one connection before the slow\n"
        "                             policy applies (default 4m). Queues hold shared\n"
        "                             references to frames, so this bounds how far a\n"
        "                             client may lag (4 maximum-size messages, or\n"
        "                             ~30,000 small ones: seconds of a busy stream)\n"
        "                             and so the memory a stuck client can pin\n"
        "  --slow-policy close|drop-oldest\n"
        "                             past the queue limit: close the connection with\n"
        "                             1008 (default), or drop its oldest unsent\n"
        "                             messages and count them\n"
        "  --write-timeout SECONDS    close a connection whose queued data makes no\n"
        "                             write progress this long (default 10)\n"
        "  --ping-interval SECONDS    ping a client silent this long (default 25)\n"
        "  --idle-timeout SECONDS     close a client silent this long (default 60)\n"
        "  --max-header-size BYTES    largest HTTP request head; larger: 431\n"
        "                             (default 8k)\n"
        "  --max-groups N             groups one subscriber may join (default 64)\n"
        "  --shutdown-timeout SECONDS on SIGTERM/SIGINT, time allowed to flush queued\n"
        "                             messages and close connections (default 5)\n"
        "  --help                     this text\n"
        "  --version                  print the version\n"
        "\n"
        "Sizes accept k and m suffixes (1024-based); seconds accept fractions.\n");
}

static bool config_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    if (!*s || *s == '-')
        return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return false;
    unsigned long long mul = 1;
    if (*end == 'k' || *end == 'K')
        mul = 1024, end++;
    else if (*end == 'm' || *end == 'M')
        mul = 1024 * 1024, end++;
    if (*end || v > (1ull << 40) / mul)
        return false;
    *out = (size_t)(v * mul);
    return true;
}

static bool config_seconds(const char *s, uint64_t *ms)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < 0 || v > 86400.0 * 365)
        return false;
    *ms = (uint64_t)(v * 1000.0 + 0.5);
    return true;
}

static bool config_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

static bool config_listen(const char *s, config *c)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof c->listen_host)
        return false;
    int port;
    if (!config_int(colon + 1, 0, 65535, &port))
        return false;
    size_t hl = (size_t)(colon - s);
    if (s[0] == '[' && hl >= 2 && s[hl - 1] == ']') { /* [::1]:8080 */
        s++;
        hl -= 2;
    }
    memcpy(c->listen_host, s, hl);
    c->listen_host[hl] = '\0';
    c->listen_port = (uint16_t)port;
    return true;
}

/* Applies one option; returns false when its value is invalid. */
static bool config_apply(config *c, const char *name, const char *v)
{
    if (!strcmp(name, "listen"))
        return config_listen(v, c);
    if (!strcmp(name, "workers"))
        return config_int(v, 1, 64, &c->workers);
    if (!strcmp(name, "max-message-size"))
        return config_size(v, &c->max_message_size) && c->max_message_size > 0 &&
               c->max_message_size <= (1u << 30);
    if (!strcmp(name, "queue-limit"))
        return config_size(v, &c->queue_limit) && c->queue_limit > 0;
    if (!strcmp(name, "write-timeout"))
        return config_seconds(v, &c->write_timeout_ms) && c->write_timeout_ms > 0;
    if (!strcmp(name, "slow-policy")) {
        if (!strcmp(v, "close"))
            c->slow_policy = SLOW_CLOSE;
        else if (!strcmp(v, "drop-oldest"))
            c->slow_policy = SLOW_DROP_OLDEST;
        else
            return false;
        return true;
    }
    if (!strcmp(name, "ping-interval"))
        return config_seconds(v, &c->ping_interval_ms) && c->ping_interval_ms > 0;
    if (!strcmp(name, "idle-timeout"))
        return config_seconds(v, &c->idle_timeout_ms) && c->idle_timeout_ms > 0;
    if (!strcmp(name, "max-header-size"))
        return config_size(v, &c->max_header_size) && c->max_header_size >= 256 &&
               c->max_header_size <= (1u << 20);
    if (!strcmp(name, "max-groups"))
        return config_int(v, 1, 4096, &c->max_groups);
    if (!strcmp(name, "shutdown-timeout"))
        return config_seconds(v, &c->shutdown_timeout_ms);
    return false;
}

static const char *const config_valued[] = {
    "listen", "workers", "max-message-size", "queue-limit", "write-timeout", "slow-policy",
    "ping-interval", "idle-timeout", "max-header-size", "max-groups", "shutdown-timeout", NULL,
};

config_result config_parse(config *c, int argc, char **argv, FILE *out, FILE *err)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            config_usage(out);
            return CONFIG_EXIT;
        }
        if (!strcmp(a, "--version")) {
            fprintf(out, "herald %s\n", HERALD_VERSION);
            return CONFIG_EXIT;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(err, "herald: unexpected argument '%s' (see --help)\n", a);
            return CONFIG_ERROR;
        }
        char name[64];
        const char *val = NULL, *eq = strchr(a + 2, '=');
        size_t nl = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (nl >= sizeof name) {
            fprintf(err, "herald: unknown option '%s' (see --help)\n", a);
            return CONFIG_ERROR;
        }
        memcpy(name, a + 2, nl);
        name[nl] = '\0';
        bool known = false;
        for (int k = 0; config_valued[k]; k++)
            known |= !strcmp(config_valued[k], name);
        if (!known) {
            fprintf(err, "herald: unknown option '--%s' (see --help)\n", name);
            return CONFIG_ERROR;
        }
        if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            fprintf(err, "herald: option '--%s' needs a value (see --help)\n", name);
            return CONFIG_ERROR;
        }
        if (!config_apply(c, name, val)) {
            fprintf(err, "herald: invalid value '%s' for --%s (see --help)\n", val, name);
            return CONFIG_ERROR;
        }
    }
    return CONFIG_OK;
}
