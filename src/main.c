/* herald: CLI -> config -> server_run(). */
#include <stdio.h>

#include "config.h"
#include "log.h"
#include "server.h"
#include "tls.h"
#include "ws.h"

extern char **environ;

int main(int argc, char **argv)
{
    /* Before anything can make OpenSSL allocate: the memory view counts it. */
    bool tls_counted = tls_count_memory();
    config *cfg = NULL;
    switch (config_load(argc, argv, environ, stdout, stderr, &cfg)) {
    case CONFIG_EXIT:
        return 0;
    case CONFIG_ERROR:
        return 2;
    case CONFIG_OK:
        break;
    }
    log_configure((log_level)cfg->log_level, cfg->log_format == LOGF_JSON);
    config_set(cfg);
    if (!tls_counted)
        log_msg(LOG_WARN, "OpenSSL memory is not counted (allocator already in use)");
    /* The first accept key loads OpenSSL's default provider (SHA-1 through
     * EVP): about 2 MiB of libcrypto pages. Paid here, before any client, it
     * is startup memory, not memory the first clients appear to cost. */
    char warm[WS_ACCEPT_LEN + 1];
    ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, warm);
    int status = server_run(cfg, argc, argv);
    config_free((config *)config_get());
    return status;
}
