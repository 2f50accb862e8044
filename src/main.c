/* herald: CLI -> config -> server_run(). */
#include <stdio.h>

#include "config.h"
#include "server.h"

int main(int argc, char **argv)
{
    static config cfg;
    config_defaults(&cfg);
    switch (config_parse(&cfg, argc, argv, stdout, stderr)) {
    case CONFIG_EXIT:
        return 0;
    case CONFIG_ERROR:
        return 2;
    case CONFIG_OK:
        break;
    }
    config_set(&cfg);
    return server_run(&cfg);
}
