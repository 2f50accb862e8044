/* Process-level lifecycle: listeners, worker threads, signals, shutdown. */
#ifndef HERALD_SERVER_H
#define HERALD_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "worker.h"

typedef struct ssl_ctx_st SSL_CTX;

typedef struct server {
    const config *cfg;
    SSL_CTX *tls;       /* NULL: cleartext listener */
    worker *workers;
    int nworkers;
    uint16_t port;
    uint64_t start_ms;
    atomic_bool mem_pressure;  /* over the --max-memory mark */
    delivery_hub hub;          /* every worker's delivery (worker_init fills it) */
} server;

/* Runs until SIGTERM/SIGINT; returns the process exit status. argv is kept
 * for SIGHUP, which reloads the configuration from the same sources. */
int server_run(const config *cfg, int argc, char **argv);

/* What each worker gets from this server (worker_init). */
worker_deps server_worker_deps(server *s);

/* Renders the summed metrics of all workers. */
size_t server_metrics_text(server *s, char *buf, size_t cap, int json);

#endif
