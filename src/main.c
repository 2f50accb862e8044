/* herald: CLI -> config -> server_run(). */
#include <stdio.h>

#include "config.h"
#include "log.h"
#include "server.h"

extern char **environ;

int main(int argc, char **argv)
{
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
    int status = server_run(cfg, argc, argv);
    config_free((config *)config_get());
    return status;
}
