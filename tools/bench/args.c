#include "args.h"
#include "msg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void args_usage(FILE *out)
{
    fputs(
        "usage: herald-bench [options]\n"
        "  --host ADDR               server address in 127.0.0.0/8 (127.0.0.1)\n"
        "  --port PORT               server port (8080)\n"
        "  --ports P1,P2,...         instead of --port: a cluster of nodes on this host;\n"
        "                            subscriber i connects to P<i mod n>, publishers to P1\n"
        "  --pub-ports-all           with --ports: publisher j connects to P<j mod n>\n"
        "  --subscribers N           subscriber connections; i joins group g<i mod G> (100)\n"
        "  --publishers K            publisher connections; j publishes to g<j mod G> (1)\n"
        "  --groups G                number of groups (1)\n"
        "  --size S                  message size in bytes, >= 24 (128)\n"
        "  --rate R                  aggregate messages/s, paced evenly (1000)\n"
        "  --duration SECS           measured phase (10)\n"
        "  --saturate                publish as fast as deliveries complete ...\n"
        "  --window W                ... with at most W messages outstanding (64)\n"
        "  --idle                    only open subscribers, wait --duration, report server RSS\n"
        "  --source-ips M            bind connections round-robin to 127.0.0.1..127.0.0.M (1)\n"
        "  --connect-concurrency C   max handshakes in flight (256)\n"
        "  --connect-timeout SECS    per connection, connect + handshake (10)\n"
        "  --server-pid PID[,PID..]  report server CPU and RSS from /proc/PID (summed)\n"
        "  --tls                     connect with TLS (wss://), certificate not verified\n"
        "  --deflate                 subscribers offer permessage-deflate (the server must\n"
        "                            accept it) and inflate every compressed message\n"
        "  --payload letters|json    what follows the 24-byte bench header in each\n"
        "                            message: a-z repeated (default), or JSON\n"
        "                            notifications with varying ids, names and times\n"
        "                            (compresses like real traffic)\n"
        "  --format raw|json|msgpack subscribers ask for ?format=: herald's JSON/msgpack\n"
        "                            envelopes are unwrapped to the payload (raw)\n"
        "  --sse                     subscribers read Server-Sent Events (GET /sse?groups=g,\n"
        "                            binary events in base64; --sub-path defaults to /sse;\n"
        "                            not with --deflate or --format)\n"
        "  --threads T               event-loop threads (1)\n"
        "  --json                    one JSON line instead of text\n"
        "  --sub-path PATH           subscriber path (/ws)\n"
        "  --pub-path PATH           publisher path (/publish)\n"
        "  --warmup SECS             publish this long before measuring (0)\n"
        "  --grace SECS              after publishing, wait at most this long for deliveries (2)\n"
        "  --help\n"
        "Exit status: 0 run completed (losses are reported), 1 setup failure, 2 bad arguments.\n",
        out);
}

static int args_bad(const char *opt, const char *val, const char *why)
{
    fprintf(stderr, "herald-bench: bad value for --%s: '%s' (%s)\n", opt, val, why);
    return ARGS_BAD;
}

static int args_u32(const char *opt, const char *val, uint32_t lo, uint32_t hi, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(val, &end, 10);
    if (errno || end == val || *end || val[0] == '-' || v < lo || v > hi) {
        char why[64];
        snprintf(why, sizeof why, "integer %u..%u", lo, hi);
        return args_bad(opt, val, why);
    }
    *out = (uint32_t)v;
    return ARGS_OK;
}

static int args_secs(const char *opt, const char *val, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(val, &end);
    if (errno || end == val || *end || !isfinite(v) || v < lo || v > hi) {
        char why[64];
        snprintf(why, sizeof why, "number %g..%g", lo, hi);
        return args_bad(opt, val, why);
    }
    *out = v;
    return ARGS_OK;
}

static int args_path(const char *opt, const char *val, char *out, size_t cap)
{
    if (val[0] != '/' || strlen(val) >= cap || strpbrk(val, " \r\n\t"))
        return args_bad(opt, val, "an absolute path without spaces");
    strcpy(out, val);
    return ARGS_OK;
}

enum {
    O_HOST = 256, O_PORT, O_SUBS, O_PUBS, O_GROUPS, O_SIZE, O_RATE, O_DURATION, O_SATURATE,
    O_WINDOW, O_IDLE, O_SRCIPS, O_CONCURRENCY, O_CTIMEOUT, O_PID, O_THREADS, O_JSON,
    O_SUBPATH, O_PUBPATH, O_WARMUP, O_GRACE, O_HELP, O_PORTS, O_PUBPORTSALL, O_TLS, O_FORMAT, O_SSE,
    O_DEFLATE, O_PAYLOAD,
};

static const struct option args_opts[] = {
    {"host", required_argument, 0, O_HOST},
    {"port", required_argument, 0, O_PORT},
    {"subscribers", required_argument, 0, O_SUBS},
    {"publishers", required_argument, 0, O_PUBS},
    {"groups", required_argument, 0, O_GROUPS},
    {"size", required_argument, 0, O_SIZE},
    {"rate", required_argument, 0, O_RATE},
    {"duration", required_argument, 0, O_DURATION},
    {"saturate", no_argument, 0, O_SATURATE},
    {"window", required_argument, 0, O_WINDOW},
    {"idle", no_argument, 0, O_IDLE},
    {"source-ips", required_argument, 0, O_SRCIPS},
    {"connect-concurrency", required_argument, 0, O_CONCURRENCY},
    {"connect-timeout", required_argument, 0, O_CTIMEOUT},
    {"server-pid", required_argument, 0, O_PID},
    {"threads", required_argument, 0, O_THREADS},
    {"json", no_argument, 0, O_JSON},
    {"sub-path", required_argument, 0, O_SUBPATH},
    {"pub-path", required_argument, 0, O_PUBPATH},
    {"warmup", required_argument, 0, O_WARMUP},
    {"grace", required_argument, 0, O_GRACE},
    {"help", no_argument, 0, O_HELP},
    {"ports", required_argument, 0, O_PORTS},
    {"pub-ports-all", no_argument, 0, O_PUBPORTSALL},
    {"tls", no_argument, 0, O_TLS},
    {"deflate", no_argument, 0, O_DEFLATE},
    {"payload", required_argument, 0, O_PAYLOAD},
    {"format", required_argument, 0, O_FORMAT},
    {"sse", no_argument, 0, O_SSE},
    {0, 0, 0, 0},
};

static int args_host(const char *val, bench_args *a)
{
    const char *h = strcmp(val, "localhost") == 0 ? "127.0.0.1" : val;
    if (strlen(h) >= sizeof a->host || inet_pton(AF_INET, h, &a->addr) != 1)
        return args_bad("host", val, "an IPv4 address");
    /* this tool only ever loads loopback servers */
    if ((ntohl(a->addr.s_addr) >> 24) != 127)
        return args_bad("host", val, "must be in 127.0.0.0/8");
    strcpy(a->host, h);
    return ARGS_OK;
}

const char *args_format_name(int format)
{
    return format == FMT_JSON ? "json" : format == FMT_MSGPACK ? "msgpack" : "raw";
}

/* "A,B,C": integers lo..hi, at most max of them. */
static int args_u32_list(const char *opt, const char *val, uint32_t lo, uint32_t hi,
                         uint32_t *out, uint32_t max, uint32_t *n)
{
    char item[32];
    *n = 0;
    const char *p = val;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0 || len >= sizeof item || *n == max) {
            char why[64];
            snprintf(why, sizeof why, "comma list of at most %u integers %u..%u", max, lo, hi);
            return args_bad(opt, val, why);
        }
        memcpy(item, p, len);
        item[len] = '\0';
        int rc = args_u32(opt, item, lo, hi, &out[*n]);
        if (rc != ARGS_OK)
            return rc;
        (*n)++;
        if (!comma)
            return ARGS_OK;
        p = comma + 1;
    }
}

int args_parse(int argc, char **argv, bench_args *a)
{
    memset(a, 0, sizeof *a);
    strcpy(a->host, "127.0.0.1");
    a->addr.s_addr = htonl(0x7f000001u);
    a->port = 8080;
    a->subscribers = 100;
    a->publishers = 1;
    a->groups = 1;
    a->size = 128;
    a->rate = 1000;
    a->duration = 10;
    a->grace = 2;
    a->window = 64;
    a->source_ips = 1;
    a->connect_concurrency = 256;
    a->connect_timeout = 10;
    a->threads = 1;
    strcpy(a->sub_path, "/ws");
    strcpy(a->pub_path, "/publish");

    opterr = 0;
    optind = 1;
    int c, rc = ARGS_OK;
    uint32_t u, list[BENCH_MAX_PORTS > BENCH_MAX_PIDS ? BENCH_MAX_PORTS : BENCH_MAX_PIDS];
    bool port_given = false;
    while (rc == ARGS_OK && (c = getopt_long(argc, argv, "", args_opts, NULL)) != -1) {
        const char *v = optarg;
        switch (c) {
        case O_HOST: rc = args_host(v, a); break;
        case O_PORT:
            rc = args_u32("port", v, 1, 65535, &u);
            a->port = (uint16_t)u;
            port_given = true;
            break;
        case O_PORTS:
            rc = args_u32_list("ports", v, 1, 65535, list, BENCH_MAX_PORTS, &a->nports);
            for (uint32_t i = 0; rc == ARGS_OK && i < a->nports; i++)
                a->ports[i] = (uint16_t)list[i];
            break;
        case O_PUBPORTSALL: a->pub_ports_all = true; break;
        case O_TLS: a->tls = true; break;
        case O_SSE: a->sse = true; break;
        case O_DEFLATE: a->deflate = true; break;
        case O_PAYLOAD:
            if (!strcmp(v, "json"))
                a->json_payload = true;
            else if (!strcmp(v, "letters"))
                a->json_payload = false;
            else
                rc = args_bad("payload", v, "json or letters");
            break;
        case O_FORMAT:
            if (strcmp(v, "raw") == 0)
                a->format = FMT_RAW;
            else if (strcmp(v, "json") == 0)
                a->format = FMT_JSON;
            else if (strcmp(v, "msgpack") == 0)
                a->format = FMT_MSGPACK;
            else
                rc = args_bad("format", v, "raw, json or msgpack");
            break;
        case O_SUBS: rc = args_u32("subscribers", v, 0, 1000000, &a->subscribers); break;
        case O_PUBS: rc = args_u32("publishers", v, 0, 100000, &a->publishers); break;
        case O_GROUPS: rc = args_u32("groups", v, 1, 1000000, &a->groups); break;
        case O_SIZE: rc = args_u32("size", v, MSG_HEAD, 16u << 20, &a->size); break;
        case O_RATE: rc = args_secs("rate", v, 0.001, 1e8, &a->rate); break;
        case O_DURATION: rc = args_secs("duration", v, 0, 86400, &a->duration); break;
        case O_SATURATE: a->saturate = true; break;
        case O_WINDOW: rc = args_u32("window", v, 1, 1u << 20, &a->window); break;
        case O_IDLE: a->idle = true; break;
        case O_SRCIPS: rc = args_u32("source-ips", v, 1, 254, &a->source_ips); break;
        case O_CONCURRENCY:
            rc = args_u32("connect-concurrency", v, 1, 1000000, &a->connect_concurrency);
            break;
        case O_CTIMEOUT: rc = args_secs("connect-timeout", v, 0.001, 3600, &a->connect_timeout); break;
        case O_PID:
            rc = args_u32_list("server-pid", v, 1, 0x7fffffff, list, BENCH_MAX_PIDS,
                               &a->nserver_pids);
            for (uint32_t i = 0; rc == ARGS_OK && i < a->nserver_pids; i++)
                a->server_pids[i] = (int)list[i];
            a->server_pid = a->nserver_pids ? a->server_pids[0] : 0;
            break;
        case O_THREADS: rc = args_u32("threads", v, 1, 64, &a->threads); break;
        case O_JSON: a->json = true; break;
        case O_SUBPATH: rc = args_path("sub-path", v, a->sub_path, sizeof a->sub_path); break;
        case O_PUBPATH: rc = args_path("pub-path", v, a->pub_path, sizeof a->pub_path); break;
        case O_WARMUP: rc = args_secs("warmup", v, 0, 3600, &a->warmup); break;
        case O_GRACE: rc = args_secs("grace", v, 0, 3600, &a->grace); break;
        case O_HELP: return ARGS_HELP;
        default:
            fprintf(stderr, "herald-bench: unknown or incomplete option '%s' (see --help)\n",
                    argv[optind - 1]);
            return ARGS_BAD;
        }
    }
    if (rc != ARGS_OK)
        return rc;
    if (optind < argc) {
        fprintf(stderr, "herald-bench: unexpected argument '%s'\n", argv[optind]);
        return ARGS_BAD;
    }
    if (a->nports && port_given) {
        fprintf(stderr, "herald-bench: --port and --ports exclude each other\n");
        return ARGS_BAD;
    }
    if (a->nports) {
        a->port = a->ports[0];
    } else {
        a->ports[0] = a->port;
        a->nports = 1;
    }
    if (a->pub_ports_all && a->nports < 2) {
        fprintf(stderr, "herald-bench: --pub-ports-all needs --ports with several ports\n");
        return ARGS_BAD;
    }
    if (a->sse && a->format != FMT_RAW) {
        fprintf(stderr, "herald-bench: --sse reads raw events only (no --format)\n");
        return ARGS_BAD;
    }
    if (a->sse && a->deflate) {
        fprintf(stderr, "herald-bench: --sse and --deflate exclude each other "
                        "(permessage-deflate is a WebSocket extension; /sse is never compressed)\n");
        return ARGS_BAD;
    }
    if (a->sse && strcmp(a->sub_path, "/ws") == 0)
        strcpy(a->sub_path, "/sse");
    if (a->saturate && a->idle) {
        fprintf(stderr, "herald-bench: --saturate and --idle exclude each other\n");
        return ARGS_BAD;
    }
    if (!a->idle && a->publishers == 0) {
        fprintf(stderr, "herald-bench: --publishers must be >= 1 unless --idle\n");
        return ARGS_BAD;
    }
    if (a->idle && a->subscribers == 0) {
        fprintf(stderr, "herald-bench: --idle needs --subscribers >= 1\n");
        return ARGS_BAD;
    }
    return ARGS_OK;
}
