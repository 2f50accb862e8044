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

/* Renders the summed metrics of all workers. */
size_t server_metrics_text(server *s, char *buf, size_t cap, int json);

/* The embedded status page (generated at build time from web/). */
extern const unsigned char status_page_html[];
extern const unsigned int status_page_html_len;
/* clients/js/src/index.js, embedded the same way (GET /herald-client.js). */
extern const unsigned char herald_client_js[];
extern const unsigned int herald_client_js_len;

#endif
