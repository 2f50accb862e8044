/* Configuration: defaults < config file (JSON) < HERALD_* environment < flags.
 * A loaded config is an immutable snapshot; workers read the current one
 * through config_get() at the top of each loop pass, and SIGHUP swaps in a
 * new one (config_reload) without blocking them. */
#ifndef HERALD_CONFIG_H
#define HERALD_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum slow_policy { SLOW_CLOSE = 0, SLOW_DROP_OLDEST } slow_policy;
typedef enum log_format { LOGF_TEXT = 0, LOGF_JSON } log_format;

typedef struct str_list {
    char **v;
    size_t *len;
    size_t n;
} str_list;

typedef struct config {
    uint64_t generation;       /* increases with every reload */
    char *config_path;         /* NULL: no file */
    char *listen;              /* HOST:PORT as given */
    char listen_host[256];
    uint16_t listen_port;
    int workers;
    size_t max_message_size;
    int compression;           /* 1: negotiate permessage-deflate (--compression on) */
    size_t compression_min_size; /* shorter payloads are sent uncompressed */
    size_t queue_limit;
    uint64_t write_timeout_ms;
    slow_policy slow_policy;
    uint64_t ping_interval_ms;
    uint64_t idle_timeout_ms;
    size_t max_header_size;
    int max_groups;
    uint64_t shutdown_timeout_ms;
    uint64_t drain_window_ms;
    str_list publish_keys;
    str_list jwt_secrets;
    uint64_t jwt_leeway_ms;
    str_list allowed_origins;
    int max_conns_per_ip;      /* 0: unlimited */
    int client_frame_rate;     /* frames/s a subscriber may send; 0: unlimited */
    int accept_rate;           /* new WebSocket upgrades/s; 0: unlimited */
    int ipv6_prefix;           /* IPv6 clients share --max-conns-per-ip per /N */
    uint64_t header_timeout_ms; /* a request head must be complete this long after its first byte */
    uint64_t body_timeout_ms;  /* base deadline for a POST body ... */
    size_t body_min_rate;      /* ... plus Content-Length / this many bytes per second */
    uint64_t group_linger_ms;  /* an unused group's record is freed after this */
    int max_live_groups;       /* group records in the process; more: 503 */
    int history;               /* messages kept per group for recovery */
    uint64_t history_ttl_ms;   /* 0: no age limit */
    size_t history_memory;     /* bytes of kept messages, all groups; 0: no limit */
    size_t max_memory;         /* soft RSS ceiling; 0: off */
    char *broker;              /* redis://HOST:PORT[/DB] or NULL */
    char *tls_cert;
    char *tls_key;
    log_format log_format;
    int log_level;
} config;

typedef enum config_result { CONFIG_OK = 0, CONFIG_EXIT = 1, CONFIG_ERROR = -1 } config_result;

/* Builds a config from defaults, the file named by --config (or
 * HERALD_CONFIG), the environment and argv, in that order of precedence
 * (lowest first). --help/--version/--print-config print to out and return
 * CONFIG_EXIT; errors go to err. On success *out_cfg is a new snapshot. */
config_result config_load(int argc, char **argv, char **envp, FILE *out, FILE *err,
                          config **out_cfg);

void config_free(config *c);

/* Prints the effective configuration as JSON (secrets masked). */
void config_print(const config *c, FILE *out);

/* The snapshot in force. */
const config *config_get(void);
void config_set(const config *c);

#endif
