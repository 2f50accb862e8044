#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* ---- the snapshot ---------------------------------------------------------- */

static _Atomic(const config *) config_current;

const config *config_get(void) { return atomic_load_explicit(&config_current, memory_order_acquire); }

void config_set(const config *c) { atomic_store_explicit(&config_current, c, memory_order_release); }

/* ---- option table ---------------------------------------------------------- */

typedef enum opt_type { OPT_LISTEN, OPT_INT, OPT_SIZE, OPT_SECONDS, OPT_ENUM, OPT_STR, OPT_LIST } opt_type;

typedef struct opt {
    const char *name;
    opt_type type;
    size_t offset;
    long long lo, hi;          /* INT/SIZE bounds; SECONDS: lo = 1 means must be > 0 */
    const char *const *enums;  /* ENUM values, index = stored int */
    bool reloadable;
    bool secret;
    const char *help;
} opt;

#define OFF(f) offsetof(config, f)
static const char *const slow_names[] = {"close", "drop-oldest", NULL};
static const char *const onoff_names[] = {"off", "on", NULL};
static const char *const logf_names[] = {"text", "json", NULL};
static const char *const level_names[] = {"debug", "info", "warn", "error", NULL};

static const opt opts[] = {
    {"config", OPT_STR, OFF(config_path), 0, 0, NULL, false, false,
     "FILE  JSON config file (keys are these option names); SIGHUP reloads it"},
    {"listen", OPT_LISTEN, OFF(listen), 0, 0, NULL, false, false,
     "HOST:PORT  address to listen on (default 127.0.0.1:8080; port 0 picks one)"},
    {"workers", OPT_INT, OFF(workers), 1, 64, NULL, false, false,
     "N  worker threads, one event loop each (default: number of CPUs)"},
    {"max-message-size", OPT_SIZE, OFF(max_message_size), 1, 1 << 30, NULL, true, false,
     "BYTES  largest message a publisher may send; larger: HTTP 413 / close 1009\n"
     "      (default 1m)"},
    {"compression", OPT_ENUM, OFF(compression), 0, 0, onoff_names, true, false,
     "on|off  accept permessage-deflate (RFC 7692) when a client offers it: each\n"
     "      message is compressed once and the frame shared by every subscriber\n"
     "      that negotiated it (default on)"},
    {"compression-min-size", OPT_SIZE, OFF(compression_min_size), 0, 1 << 30, NULL, true, false,
     "BYTES  payloads shorter than this are sent uncompressed (default 128)"},
    {"queue-limit", OPT_SIZE, OFF(queue_limit), 1, 1ll << 40, NULL, true, false,
     "BYTES  bytes queued for one connection before the slow policy applies\n"
     "      (default 4m; private frames such as pongs count their whole allocation,\n"
     "      TLS records waiting to be written count too). Queues hold shared\n"
     "      references to frames, so this bounds how far a client may lag (4\n"
     "      maximum-size messages or ~30,000 small ones: seconds of a busy stream)\n"
     "      and the memory a stuck client can pin"},
    {"slow-policy", OPT_ENUM, OFF(slow_policy), 0, 0, slow_names, true, false,
     "close|drop-oldest  past the queue limit: close with 1008 (default), or drop\n"
     "      the oldest unsent messages and count them"},
    {"write-timeout", OPT_SECONDS, OFF(write_timeout_ms), 1, 0, NULL, true, false,
     "SECONDS  close a connection whose queued data makes no write progress this\n"
     "      long (default 10)"},
    {"ping-interval", OPT_SECONDS, OFF(ping_interval_ms), 1, 0, NULL, true, false,
     "SECONDS  ping a client that has been silent this long (default 25)"},
    {"idle-timeout", OPT_SECONDS, OFF(idle_timeout_ms), 1, 0, NULL, true, false,
     "SECONDS  close a client silent this long (default 60)"},
    {"max-header-size", OPT_SIZE, OFF(max_header_size), 256, 1 << 20, NULL, true, false,
     "BYTES  largest HTTP request head; larger: 431 (default 8k)"},
    {"max-groups", OPT_INT, OFF(max_groups), 1, 4096, NULL, true, false,
     "N  groups one subscriber may join (entries of groups=, a repeated name\n"
     "      counting each time); more: 400 (default 64)"},
    {"max-conns-per-ip", OPT_INT, OFF(max_conns_per_ip), 0, 10000000, NULL, true, false,
     "N  open connections allowed per client IP; more: 429 (default 0 = no limit)"},
    {"client-frame-rate", OPT_INT, OFF(client_frame_rate), 0, 10000000, NULL, true, false,
     "N  frames per second a subscriber may send (1 s burst); more: close 1008\n"
     "      (default 100; 0 = no limit). For publishers only control frames\n"
     "      (ping, pong) count: their data frames are not limited"},
    {"accept-rate", OPT_INT, OFF(accept_rate), 0, 10000000, NULL, true, false,
     "N  new WebSocket upgrades per second; more: 503 with Retry-After\n"
     "      (default 0 = no limit)"},
    {"ipv6-prefix", OPT_INT, OFF(ipv6_prefix), 0, 128, NULL, true, false,
     "N  IPv6 clients count against --max-conns-per-ip per /N network (default 64:\n"
     "      one site usually owns a whole /64; 128 = per address)"},
    {"header-timeout", OPT_SECONDS, OFF(header_timeout_ms), 1, 0, NULL, true, false,
     "SECONDS  a request head must be complete this long after its first byte,\n"
     "      however the bytes trickle in; else 408 and close (default 10)"},
    {"body-timeout", OPT_SECONDS, OFF(body_timeout_ms), 1, 0, NULL, true, false,
     "SECONDS  a POST body must arrive within this plus Content-Length divided by\n"
     "      --body-min-rate after its head; else 408 and close (default 10)"},
    {"body-min-rate", OPT_SIZE, OFF(body_min_rate), 1, 1ll << 40, NULL, true, false,
     "BYTES  slowest body upload rate allowed, per second (default 16k)"},
    {"group-linger", OPT_SECONDS, OFF(group_linger_ms), 1, 0, NULL, true, false,
     "SECONDS  a group with no subscribers and no kept history is forgotten after\n"
     "      this long without a publish (default 30); offsets never repeat"},
    {"max-live-groups", OPT_INT, OFF(max_live_groups), 1, 100000000, NULL, true, false,
     "N  groups known to the process at once; a publish or subscription that would\n"
     "      add one more: 503 with Retry-After (default 1000000)"},
    {"publish-key", OPT_LIST, OFF(publish_keys), 0, 0, NULL, true, true,
     "KEY  require Authorization: Bearer KEY on /publish (repeatable; default none)"},
    {"jwt-secret", OPT_LIST, OFF(jwt_secrets), 0, 0, NULL, true, true,
     "SECRET  require a valid HS256/384/512 JWT on /ws and /sse, as ?token= or\n"
     "      Authorization: Bearer (repeatable, for rotation; default none)"},
    {"jwt-leeway", OPT_SECONDS, OFF(jwt_leeway_ms), 0, 0, NULL, true, false,
     "SECONDS  clock skew allowed on exp/nbf (default 30)"},
    {"allowed-origins", OPT_LIST, OFF(allowed_origins), 0, 0, NULL, true, false,
     "ORIGINS  comma list of browser origins allowed to open WebSockets and /sse;\n"
     "      others: 403 (default: any)"},
    {"history", OPT_INT, OFF(history), 0, 1000000, NULL, true, false,
     "N  messages kept per group so reconnecting clients can recover what they\n"
     "      missed (/ws?...&since=g:OFFSET&epoch=E; default 0 = none)"},
    {"history-ttl", OPT_SECONDS, OFF(history_ttl_ms), 0, 0, NULL, true, false,
     "SECONDS  also forget history older than this, so abandoned groups age out\n"
     "      (default 300; 0 = keep until evicted by --history-memory)"},
    {"history-memory", OPT_SIZE, OFF(history_memory), 0, 1ll << 40, NULL, true, false,
     "BYTES  memory for kept messages of all groups together; past it the history\n"
     "      of the least recently published groups is dropped first, and recovering\n"
     "      into it answers recovery_failed too_old (default 64m; 0 = no limit)"},
    {"max-memory", OPT_SIZE, OFF(max_memory), 0, 1ll << 50, NULL, true, false,
     "BYTES  soft ceiling on the process's resident memory: near it new connections\n"
     "      get 503, the largest queues meet the slow policy, history shrinks, and\n"
     "      /healthz says degraded (default 0 = off)"},
    {"broker", OPT_STR, OFF(broker), 0, 0, NULL, false, false,
     "URL  run as one node of a cluster; publishes on any node reach subscribers\n"
     "      on every node, history lives in Redis (default: single node). URL:\n"
     "      redis://HOST:PORT[/DB]  one Redis\n"
     "      redis-sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB]  the master\n"
     "        Sentinel names, followed across failovers\n"
     "      redis-cluster://HOST:PORT[,HOST:PORT...]  a Redis Cluster (7+): groups\n"
     "        spread over its masters by slot, sharded Pub/Sub"},
    {"tls-cert", OPT_STR, OFF(tls_cert), 0, 0, NULL, false, false,
     "FILE  PEM certificate chain: serve https:// and wss://"},
    {"tls-key", OPT_STR, OFF(tls_key), 0, 0, NULL, false, false, "FILE  PEM private key"},
    {"shutdown-timeout", OPT_SECONDS, OFF(shutdown_timeout_ms), 0, 0, NULL, true, false,
     "SECONDS  on SIGTERM/SIGINT, time allowed for flushing and closing (default 5)"},
    {"drain-window", OPT_SECONDS, OFF(drain_window_ms), 0, 0, NULL, true, false,
     "SECONDS  on SIGTERM, spread the 1012 closes over this window so clients do\n"
     "      not all reconnect at once (default 2; SIGINT closes at once with 1001)"},
    {"log-format", OPT_ENUM, OFF(log_format), 0, 0, logf_names, true, false,
     "text|json  log line format (default text)"},
    {"log-level", OPT_ENUM, OFF(log_level), 0, 0, level_names, true, false,
     "debug|info|warn|error  (default info)"},
};
#define NOPTS (sizeof opts / sizeof opts[0])

static void config_defaults(config *c)
{
    memset(c, 0, sizeof *c);
    c->listen = strdup("127.0.0.1:8080");
    strcpy(c->listen_host, "127.0.0.1");
    c->listen_port = 8080;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    c->workers = n > 0 ? (int)(n > 64 ? 64 : n) : 1;
    c->max_message_size = 1u << 20;
    c->compression = 1;
    c->compression_min_size = 128;
    c->queue_limit = 4u << 20;
    c->write_timeout_ms = 10000;
    c->ping_interval_ms = 25000;
    c->idle_timeout_ms = 60000;
    c->max_header_size = 8192;
    c->max_groups = 64;
    c->client_frame_rate = 100;
    c->ipv6_prefix = 64;
    c->header_timeout_ms = 10000;
    c->body_timeout_ms = 10000;
    c->body_min_rate = 16384;
    c->group_linger_ms = 30000;
    c->max_live_groups = 1000000;
    c->history_ttl_ms = 300000;
    c->history_memory = 64u << 20;
    c->shutdown_timeout_ms = 5000;
    c->drain_window_ms = 2000;
    c->jwt_leeway_ms = 30000;
    c->log_level = LOG_INFO;
}

static void list_clear(str_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    free(l->len);
    memset(l, 0, sizeof *l);
}

static bool list_add(str_list *l, const char *s, size_t n)
{
    char **v = realloc(l->v, sizeof *v * (l->n + 1));
    if (!v)
        return false;
    l->v = v;
    size_t *len = realloc(l->len, sizeof *len * (l->n + 1));
    if (!len)
        return false;
    l->len = len;
    if (!(l->v[l->n] = strndup(s, n)))
        return false;
    l->len[l->n++] = n;
    return true;
}

void config_free(config *c)
{
    if (!c)
        return;
    free(c->config_path);
    free(c->listen);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->broker);
    list_clear(&c->publish_keys);
    list_clear(&c->jwt_secrets);
    list_clear(&c->allowed_origins);
    free(c);
}

/* ---- value parsers ---------------------------------------------------------- */

static bool parse_size(const char *s, long long lo, long long hi, size_t *out)
{
    char *end;
    errno = 0;
    if (!*s || *s == '-' || isspace((unsigned char)*s))
        return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return false;
    unsigned long long mul = 1;
    if (*end == 'k' || *end == 'K')
        mul = 1024, end++;
    else if (*end == 'm' || *end == 'M')
        mul = 1024 * 1024, end++;
    else if (*end == 'g' || *end == 'G')
        mul = 1024 * 1024 * 1024, end++;
    if (*end || v > (unsigned long long)hi / mul || v * mul < (unsigned long long)lo)
        return false;
    *out = (size_t)(v * mul);
    return true;
}

static bool parse_seconds(const char *s, bool positive, uint64_t *ms)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < 0 || v > 86400.0 * 365)
        return false;
    if (positive && v * 1000.0 < 1.0)
        return false;
    *ms = (uint64_t)(v * 1000.0 + 0.5);
    return true;
}

static bool parse_int(const char *s, long long lo, long long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

static bool parse_listen(const char *s, config *c)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof c->listen_host)
        return false;
    int port;
    if (!parse_int(colon + 1, 0, 65535, &port))
        return false;
    size_t hl = (size_t)(colon - s);
    const char *h = s;
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') { /* [::1]:8080 */
        h++;
        hl -= 2;
    }
    memcpy(c->listen_host, h, hl);
    c->listen_host[hl] = '\0';
    c->listen_port = (uint16_t)port;
    free(c->listen);
    return (c->listen = strdup(s)) != NULL;
}

/* Sources apply in precedence order; a list set by a higher source replaces
 * what lower sources gave, and repeats within one source append. */
typedef struct source_state {
    bool list_touched[NOPTS];
} source_state;

static bool opt_apply(config *c, const opt *o, const char *v, source_state *st)
{
    void *f = (char *)c + o->offset;
    switch (o->type) {
    case OPT_LISTEN:
        return parse_listen(v, c);
    case OPT_INT:
        return parse_int(v, o->lo, o->hi, f);
    case OPT_SIZE:
        return parse_size(v, o->lo, o->hi, f);
    case OPT_SECONDS:
        return parse_seconds(v, o->lo == 1, f);
    case OPT_ENUM:
        for (int i = 0; o->enums[i]; i++)
            if (!strcmp(o->enums[i], v)) {
                *(int *)f = i;
                return true;
            }
        return false;
    case OPT_STR: {
        char **p = f;
        if (!*v)
            return false;
        free(*p);
        return (*p = strdup(v)) != NULL;
    }
    case OPT_LIST: {
        str_list *l = f;
        size_t idx = (size_t)(o - opts);
        if (st && !st->list_touched[idx]) {
            list_clear(l);
            st->list_touched[idx] = true;
        }
        /* allowed-origins takes comma lists; keys and secrets are taken whole. */
        if (strcmp(o->name, "allowed-origins") != 0)
            return *v && list_add(l, v, strlen(v));
        /* An empty list means "any origin": it must never come from a value
         * that was merely empty (an unset variable, a stray comma). */
        const char *p = v;
        size_t added = 0;
        while (*p) {
            const char *e = strchr(p, ',');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            while (n && isspace((unsigned char)*p))
                p++, n--;
            while (n && isspace((unsigned char)p[n - 1]))
                n--;
            if (n && !list_add(l, p, n))
                return false;
            added += n > 0;
            p = e ? e + 1 : p + strlen(p);
        }
        return added > 0;
    }
    }
    return false;
}

static const opt *opt_find(const char *name)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (!strcmp(opts[i].name, name))
            return &opts[i];
    return NULL;
}

/* ---- sources ----------------------------------------------------------------- */

static bool config_apply_file(config *c, const char *path, FILE *err)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        fprintf(err, "herald: config file %s: %s (line %d)\n", path, je.text, je.line);
        return false;
    }
    if (!json_is_object(root)) {
        fprintf(err, "herald: config file %s: the top level must be an object\n", path);
        json_decref(root);
        return false;
    }
    source_state st = {0};
    const char *key;
    json_t *val;
    bool ok = true;
    json_object_foreach(root, key, val) {
        const opt *o = opt_find(key);
        if (!o || !strcmp(key, "config")) {
            fprintf(err, "herald: config file %s: unknown key \"%s\"\n", path, key);
            ok = false;
            break;
        }
        char buf[64];
        const char *s = NULL;
        if (json_is_string(val)) {
            s = json_string_value(val);
        } else if (json_is_integer(val)) {
            snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(val));
            s = buf;
        } else if (json_is_real(val)) {
            snprintf(buf, sizeof buf, "%.17g", json_real_value(val));
            s = buf;
        } else if (json_is_array(val) && o->type == OPT_LIST) {
            size_t i;
            json_t *item;
            if (!st.list_touched[o - opts]) {
                list_clear((str_list *)((char *)c + o->offset));
                st.list_touched[o - opts] = true;
            }
            json_array_foreach(val, i, item) {
                if (!json_is_string(item) || !opt_apply(c, o, json_string_value(item), &st)) {
                    fprintf(err, "herald: config file %s: \"%s\" must list non-empty strings\n",
                            path, key);
                    ok = false;
                    break;
                }
            }
            if (!ok)
                break;
            continue;
        }
        if (!s || !opt_apply(c, o, s, &st)) {
            fprintf(err, "herald: config file %s: invalid value for \"%s\"\n", path, key);
            ok = false;
            break;
        }
    }
    json_decref(root);
    return ok;
}

static bool config_apply_env(config *c, char **envp, FILE *err)
{
    source_state st = {0};
    for (size_t i = 0; i < NOPTS; i++) {
        const opt *o = &opts[i];
        if (!strcmp(o->name, "config"))
            continue; /* read earlier, to find the file */
        char var[64] = "HERALD_";
        size_t k = 7;
        for (const char *p = o->name; *p && k < sizeof var - 1; p++)
            var[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        var[k] = '\0';
        const char *v = NULL;
        for (char **e = envp; e && *e; e++)
            if (!strncmp(*e, var, k) && (*e)[k] == '=')
                v = *e + k + 1;
        if (!v || (o->type == OPT_LIST && !*v))
            continue; /* an empty list variable sets nothing (as if unset) */
        if (o->type == OPT_LIST && strcmp(o->name, "allowed-origins") != 0) {
            /* HERALD_PUBLISH_KEY=k1,k2: several keys in one variable. */
            bool ok = true;
            const char *p = v;
            while (ok && *p) {
                const char *e = strchr(p, ',');
                size_t n = e ? (size_t)(e - p) : strlen(p);
                char *one = strndup(p, n);
                ok = one && (n == 0 || opt_apply(c, o, one, &st));
                free(one);
                p = e ? e + 1 : p + n;
            }
            if (ok)
                continue;
        } else if (opt_apply(c, o, v, &st)) {
            continue;
        }
        fprintf(err, "herald: invalid value '%s' in %s (see --help)\n", v, var);
        return false;
    }
    return true;
}

static void config_usage(FILE *out)
{
    fprintf(out,
            "herald " HERALD_VERSION "\n"
            "usage: herald [options]\n"
            "\n"
            "A WebSocket broadcast server. Subscribers: GET /ws?groups=a,b (WebSocket)\n"
            "or GET /sse?groups=a,b (Server-Sent Events, same rules as /ws).\n"
            "Publishers: POST /publish?group=G (body = message) or GET /publish?group=G\n"
            "(WebSocket, every message it sends is published). Without a group: to all.\n"
            "Also: GET /healthz, /metrics (Prometheus), /stats (JSON), / (status page),\n"
            "/herald-client.js (the JavaScript client).\n"
            "\n"
            "Every option can also come from the environment (HERALD_<NAME>, e.g.\n"
            "HERALD_QUEUE_LIMIT=8m) or the config file; flags win over the environment,\n"
            "which wins over the file. SIGHUP reloads the file (keys, secrets, origins and\n"
            "limits apply to new requests at once; listen, workers and TLS need a restart).\n"
            "\n"
            "options:\n");
    for (size_t i = 0; i < NOPTS; i++) {
        const char *h = opts[i].help;
        const char *sp = strchr(h, ' ');
        fprintf(out, "  --%s %.*s\n      %s\n", opts[i].name, (int)(sp - h), h, sp + 2);
    }
    fprintf(out, "  --print-config\n      print the effective configuration as JSON and exit\n"
                 "  --help, --version\n"
                 "\n"
                 "Sizes accept k, m and g suffixes (1024-based); seconds accept fractions.\n");
}

config_result config_load(int argc, char **argv, char **envp, FILE *out, FILE *err,
                          config **out_cfg)
{
    config *c = malloc(sizeof *c);
    if (!c)
        return CONFIG_ERROR;
    config_defaults(c);
    bool print = false;
    /* First pass: the actions, and where the file is. */
    const char *path = NULL;
    for (char **e = envp; e && *e; e++)
        if (!strncmp(*e, "HERALD_CONFIG=", 14) && (*e)[14])
            path = *e + 14;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            config_usage(out);
            config_free(c);
            return CONFIG_EXIT;
        }
        if (!strcmp(argv[i], "--version")) {
            fprintf(out, "herald %s\n", HERALD_VERSION);
            config_free(c);
            return CONFIG_EXIT;
        }
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            path = argv[i + 1];
        else if (!strncmp(argv[i], "--config=", 9))
            path = argv[i] + 9;
        /* Every other --name without '=' takes the next argument as its value:
         * a key that happens to read "--version" is a key, not an action. */
        if (!strncmp(argv[i], "--", 2) && !strchr(argv[i], '=') && strcmp(argv[i], "--print-config") != 0)
            i++;
    }
    if (path && (!(c->config_path = strdup(path)) || !config_apply_file(c, path, err)))
        goto fail;
    if (!config_apply_env(c, envp, err))
        goto fail;
    source_state st = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--print-config")) {
            print = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(err, "herald: unexpected argument '%s' (see --help)\n", a);
            goto fail;
        }
        char name[64];
        const char *eq = strchr(a + 2, '='), *val;
        size_t nl = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        const opt *o = NULL;
        if (nl < sizeof name) {
            memcpy(name, a + 2, nl);
            name[nl] = '\0';
            o = opt_find(name);
        }
        if (!o) {
            fprintf(err, "herald: unknown option '%s' (see --help)\n", a);
            goto fail;
        }
        if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            fprintf(err, "herald: option '--%s' needs a value (see --help)\n", name);
            goto fail;
        }
        if (!strcmp(name, "config"))
            continue;
        if (!opt_apply(c, o, val, &st)) {
            fprintf(err, "herald: invalid value '%s' for --%s (see --help)\n", val, name);
            goto fail;
        }
    }
    if (!c->tls_cert != !c->tls_key) {
        fprintf(err, "herald: --tls-cert and --tls-key go together\n");
        goto fail;
    }
    if (print) {
        config_print(c, out);
        config_free(c);
        return CONFIG_EXIT;
    }
    *out_cfg = c;
    return CONFIG_OK;
fail:
    config_free(c);
    return CONFIG_ERROR;
}

void config_print(const config *c, FILE *out)
{
    json_t *o = json_object();
    for (size_t i = 0; i < NOPTS; i++) {
        const opt *p = &opts[i];
        const void *f = (const char *)c + p->offset;
        json_t *v = NULL;
        switch (p->type) {
        case OPT_LISTEN:
        case OPT_STR: {
            const char *s = *(char *const *)f;
            v = s ? json_string(s) : json_null();
            break;
        }
        case OPT_INT:
            v = json_integer(*(const int *)f);
            break;
        case OPT_SIZE:
            v = json_integer((json_int_t) * (const size_t *)f);
            break;
        case OPT_SECONDS:
            v = json_real((double)*(const uint64_t *)f / 1000.0);
            break;
        case OPT_ENUM:
            v = json_string(p->enums[*(const int *)f]);
            break;
        case OPT_LIST: {
            const str_list *l = f;
            v = json_array();
            for (size_t k = 0; k < l->n; k++)
                json_array_append_new(v, json_string(p->secret ? "********" : l->v[k]));
            break;
        }
        }
        json_object_set_new(o, p->name, v);
    }
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s)
        fprintf(out, "%s\n", s);
    free(s);
    json_decref(o);
}
