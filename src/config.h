/* Configuration: defaults, then command-line flags. The parsed config is an
 * immutable snapshot; workers read it through config_get(). */
#ifndef HERALD_CONFIG_H
#define HERALD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum slow_policy { SLOW_CLOSE = 0, SLOW_DROP_OLDEST } slow_policy;

typedef struct config {
    char listen_host[256];
    uint16_t listen_port;
    int workers;
    size_t max_message_size;
    size_t queue_limit;
    uint64_t write_timeout_ms;
    slow_policy slow_policy;
    uint64_t ping_interval_ms;
    uint64_t idle_timeout_ms;
    size_t max_header_size;
    int max_groups;
    uint64_t shutdown_timeout_ms;
} config;

typedef enum config_result { CONFIG_OK = 0, CONFIG_EXIT = 1, CONFIG_ERROR = -1 } config_result;

void config_defaults(config *c);

/* Parses argv into c. Prints --help/--version to out (CONFIG_EXIT) and errors
 * to err (CONFIG_ERROR). */
config_result config_parse(config *c, int argc, char **argv, FILE *out, FILE *err);

/* The snapshot in force; set once before workers start. */
const config *config_get(void);
void config_set(const config *c);

#endif
