/* Unit tests for the option loader (src/config.c): defaults, the
 * file < HERALD_* environment < flag precedence, value parsing with the
 * errors it prints, --help/--version/--print-config, and config_free on
 * every path (the suite runs under LeakSanitizer in `make test-asan`).
 * Every call gets an explicit envp and memory streams, so the real
 * environment and terminal never leak into a result. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

/* ---- harness ------------------------------------------------------------------ */

/* The outcome of one config_load call. Kept in a file-level slot so the
 * teardown frees it even when an assertion longjmps out of a test. */
typedef struct run {
    config_result rc;
    config *cfg;
    char *out, *err;
    size_t outlen, errlen;
} run;

static run R;
static char *tmp_paths[8];
static size_t ntmp;

static void run_clear(void)
{
    config_free(R.cfg);
    free(R.out);
    free(R.err);
    memset(&R, 0, sizeof R);
}

static int teardown(void **state)
{
    (void)state;
    run_clear();
    for (size_t i = 0; i < ntmp; i++) {
        unlink(tmp_paths[i]);
        free(tmp_paths[i]);
    }
    ntmp = 0;
    return 0;
}

/* argv is NULL-terminated and starts after the program name. */
static run *load(char **envp, char **args)
{
    run_clear();
    char *argv[64] = {"herald"};
    int argc = 1;
    while (args[argc - 1]) {
        assert_true(argc < 63);
        argv[argc] = args[argc - 1];
        argc++;
    }
    argv[argc] = NULL;
    FILE *out = open_memstream(&R.out, &R.outlen);
    FILE *err = open_memstream(&R.err, &R.errlen);
    assert_non_null(out);
    assert_non_null(err);
    R.cfg = NULL;
    R.rc = config_load(argc, argv, envp, out, err, &R.cfg);
    fclose(out);
    fclose(err);
    /* The contract: *out_cfg is set only on CONFIG_OK. */
    if (R.rc != CONFIG_OK)
        assert_null(R.cfg);
    else
        assert_non_null(R.cfg);
    return &R;
}

static char *no_env[] = {NULL};

#define ARGS(...) ((char *[]){__VA_ARGS__, NULL})
#define LOAD(envp, ...) load((envp), ARGS(__VA_ARGS__))
#define LOAD0(envp) load((envp), (char *[]){NULL})

static void expect_ok(void)
{
    if (R.rc != CONFIG_OK)
        fail_msg("config_load failed: %s", R.err ? R.err : "");
    assert_int_equal(R.errlen, 0);
    assert_int_equal(R.outlen, 0);
}

/* An error names what was wrong: every needle must be in the message. */
static void expect_error(const char *needle1, const char *needle2)
{
    assert_int_equal(R.rc, CONFIG_ERROR);
    assert_null(R.cfg);
    assert_int_equal(R.outlen, 0);
    assert_non_null(R.err);
    if (needle1 && !strstr(R.err, needle1))
        fail_msg("error message lacks \"%s\": %s", needle1, R.err);
    if (needle2 && !strstr(R.err, needle2))
        fail_msg("error message lacks \"%s\": %s", needle2, R.err);
    assert_true(strncmp(R.err, "herald: ", 8) == 0);
}

/* A temporary JSON config file, removed by the teardown. */
static const char *cfg_file(const char *text)
{
    char tmpl[] = "/tmp/herald-test-config-XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    assert_true(ntmp < sizeof tmp_paths / sizeof tmp_paths[0]);
    tmp_paths[ntmp] = strdup(tmpl);
    assert_non_null(tmp_paths[ntmp]);
    return tmp_paths[ntmp++];
}

static char *flag_eq(char *buf, size_t n, const char *flag, const char *val)
{
    snprintf(buf, n, "%s=%s", flag, val);
    return buf;
}

static json_t *parse_out(void)
{
    json_error_t je;
    json_t *j = json_loads(R.out ? R.out : "", 0, &je);
    if (!j)
        fail_msg("--print-config output is not JSON (%s, line %d): %s", je.text, je.line,
                 R.out ? R.out : "");
    assert_true(json_is_object(j));
    return j;
}

/* ---- defaults ----------------------------------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    LOAD0(no_env);
    expect_ok();
    const config *c = R.cfg;
    assert_null(c->config_path);
    assert_string_equal(c->listen, "127.0.0.1:8080");
    assert_string_equal(c->listen_host, "127.0.0.1");
    assert_int_equal(c->listen_port, 8080);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(c->workers, cpus > 0 ? (cpus > 64 ? 64 : cpus) : 1);
    assert_int_equal(c->max_message_size, 1 << 20);
    assert_int_equal(c->queue_limit, 4 << 20);
    assert_int_equal(c->write_timeout_ms, 10000);
    assert_int_equal(c->slow_policy, SLOW_CLOSE);
    assert_int_equal(c->ping_interval_ms, 25000);
    assert_int_equal(c->idle_timeout_ms, 60000);
    assert_int_equal(c->max_header_size, 8192);
    assert_int_equal(c->max_groups, 64);
    assert_int_equal(c->max_conns_per_ip, 0);
    assert_int_equal(c->client_frame_rate, 100);
    assert_int_equal(c->accept_rate, 0);
    assert_int_equal(c->ipv6_prefix, 64);
    assert_int_equal(c->header_timeout_ms, 10000);
    assert_int_equal(c->body_timeout_ms, 10000);
    assert_int_equal(c->body_min_rate, 16384);
    assert_int_equal(c->group_linger_ms, 30000);
    assert_int_equal(c->max_live_groups, 1000000);
    assert_int_equal(c->history, 0);
    assert_int_equal(c->history_ttl_ms, 300000);
    assert_int_equal(c->history_memory, 64 << 20);
    assert_int_equal(c->max_memory, 0);
    assert_int_equal(c->shutdown_timeout_ms, 5000);
    assert_int_equal(c->drain_window_ms, 2000);
    assert_int_equal(c->jwt_leeway_ms, 30000);
    assert_int_equal(c->publish_keys.n, 0);
    assert_int_equal(c->jwt_secrets.n, 0);
    assert_int_equal(c->allowed_origins.n, 0);
    assert_null(c->broker);
    assert_null(c->tls_cert);
    assert_null(c->tls_key);
    assert_int_equal(c->log_format, LOGF_TEXT);
    assert_int_equal(c->log_level, LOG_INFO);

    /* A NULL envp is the same as an empty one. */
    LOAD0(NULL);
    expect_ok();
    assert_int_equal(R.cfg->queue_limit, 4 << 20);
}

/* ---- precedence ----------------------------------------------------------------- */

static void test_precedence_scalars(void **state)
{
    (void)state;
    const char *path = cfg_file("{\"queue-limit\": \"1m\", \"max-groups\": 10,\n"
                                " \"slow-policy\": \"drop-oldest\", \"ping-interval\": 5}\n");
    char *env[] = {"HERALD_QUEUE_LIMIT=2m", "HERALD_MAX_GROUPS=20", NULL};

    LOAD(no_env, "--config", (char *)path);
    expect_ok();
    assert_string_equal(R.cfg->config_path, path);
    assert_int_equal(R.cfg->queue_limit, 1 << 20);   /* file over default */
    assert_int_equal(R.cfg->max_groups, 10);
    assert_int_equal(R.cfg->slow_policy, SLOW_DROP_OLDEST);
    assert_int_equal(R.cfg->ping_interval_ms, 5000);

    LOAD(env, "--config", (char *)path);
    expect_ok();
    assert_int_equal(R.cfg->queue_limit, 2 << 20);   /* env over file */
    assert_int_equal(R.cfg->max_groups, 20);
    assert_int_equal(R.cfg->slow_policy, SLOW_DROP_OLDEST);

    LOAD(env, "--config", (char *)path, "--queue-limit", "3m");
    expect_ok();
    assert_int_equal(R.cfg->queue_limit, 3 << 20);   /* flag over env */
    assert_int_equal(R.cfg->max_groups, 20);         /* env still over file */
    assert_int_equal(R.cfg->ping_interval_ms, 5000); /* file still over default */

    /* The order of the flags on the command line does not change precedence:
     * a --config after the flag still loses to it. */
    LOAD(env, "--queue-limit", "3m", "--config", (char *)path);
    expect_ok();
    assert_int_equal(R.cfg->queue_limit, 3 << 20);
}

static void test_herald_config_env(void **state)
{
    (void)state;
    const char *a = cfg_file("{\"max-groups\": 11}");
    const char *b = cfg_file("{\"max-groups\": 22}");
    char var[128];
    snprintf(var, sizeof var, "HERALD_CONFIG=%s", a);
    char *env[] = {var, NULL};

    LOAD0(env);
    expect_ok();
    assert_string_equal(R.cfg->config_path, a);
    assert_int_equal(R.cfg->max_groups, 11);

    /* --config wins over HERALD_CONFIG: only b is read. */
    LOAD(env, "--config", (char *)b);
    expect_ok();
    assert_string_equal(R.cfg->config_path, b);
    assert_int_equal(R.cfg->max_groups, 22);

    /* An empty HERALD_CONFIG means no file. */
    char *empty[] = {"HERALD_CONFIG=", NULL};
    LOAD0(empty);
    expect_ok();
    assert_null(R.cfg->config_path);
}

static void test_precedence_lists(void **state)
{
    (void)state;
    const char *path = cfg_file("{\"publish-key\": [\"a\", \"b\"],\n"
                                " \"allowed-origins\": \"https://a.example , https://b.example\"}");

    LOAD(no_env, "--config", (char *)path);
    expect_ok();
    assert_int_equal(R.cfg->publish_keys.n, 2);
    assert_string_equal(R.cfg->publish_keys.v[0], "a");
    assert_string_equal(R.cfg->publish_keys.v[1], "b");
    assert_int_equal(R.cfg->publish_keys.len[1], 1);
    /* Comma strings are split and trimmed. */
    assert_int_equal(R.cfg->allowed_origins.n, 2);
    assert_string_equal(R.cfg->allowed_origins.v[0], "https://a.example");
    assert_string_equal(R.cfg->allowed_origins.v[1], "https://b.example");

    /* The environment replaces the file's list (it does not append), and
     * HERALD_PUBLISH_KEY takes a comma list; empty items are skipped. */
    char *env[] = {"HERALD_PUBLISH_KEY=c,,d,", NULL};
    LOAD(env, "--config", (char *)path);
    expect_ok();
    assert_int_equal(R.cfg->publish_keys.n, 2);
    assert_string_equal(R.cfg->publish_keys.v[0], "c");
    assert_string_equal(R.cfg->publish_keys.v[1], "d");

    /* Flags replace both; repeats of a flag append. */
    LOAD(env, "--config", (char *)path, "--publish-key", "e", "--publish-key=f",
         "--allowed-origins", "https://x.example,https://y.example", "--allowed-origins",
         "https://z.example");
    expect_ok();
    assert_int_equal(R.cfg->publish_keys.n, 2);
    assert_string_equal(R.cfg->publish_keys.v[0], "e");
    assert_string_equal(R.cfg->publish_keys.v[1], "f");
    assert_int_equal(R.cfg->allowed_origins.n, 3);
    assert_string_equal(R.cfg->allowed_origins.v[2], "https://z.example");

    /* A key is taken whole on the command line, commas included. */
    LOAD(no_env, "--jwt-secret", "s,1");
    expect_ok();
    assert_int_equal(R.cfg->jwt_secrets.n, 1);
    assert_string_equal(R.cfg->jwt_secrets.v[0], "s,1");
    assert_int_equal(R.cfg->jwt_secrets.len[0], 3);

    /* An empty HERALD_PUBLISH_KEY sets nothing: the file's keys stay. */
    char *empty[] = {"HERALD_PUBLISH_KEY=", NULL};
    LOAD(empty, "--config", (char *)path);
    expect_ok();
    assert_int_equal(R.cfg->publish_keys.n, 2);
}

/* An empty --allowed-origins would mean "any origin": a value that is
 * merely empty (a stray comma, an empty item) is an error, and an empty
 * variable sets nothing, so the file's list stays. An empty --publish-key
 * or --broker is an error too. */
static void test_empty_allowed_origins_is_refused(void **state)
{
    (void)state;
    const char *path = cfg_file("{\"allowed-origins\": [\"https://a.example\"]}");
    char *env[] = {"HERALD_ALLOWED_ORIGINS=", NULL};
    LOAD(env, "--config", (char *)path);
    expect_ok();
    assert_int_equal(R.cfg->allowed_origins.n, 1);

    LOAD(no_env, "--config", (char *)path, "--allowed-origins", " , ");
    expect_error("invalid value ' , ' for --allowed-origins", NULL);

    const char *empty_item = cfg_file("{\"allowed-origins\": [\"\"]}");
    LOAD(no_env, "--config", (char *)empty_item);
    assert_int_equal(R.rc, CONFIG_ERROR);

    LOAD(no_env, "--publish-key", "");
    expect_error("invalid value '' for --publish-key", NULL);
    LOAD(no_env, "--broker=");
    expect_error("invalid value '' for --broker", NULL);
}

/* ---- value parsing -------------------------------------------------------------- */

typedef struct size_case {
    const char *flag, *val;
    long long want; /* -1: rejected */
} size_case;

static void test_sizes(void **state)
{
    (void)state;
    static const size_case cases[] = {
        {"--queue-limit", "1", 1},
        {"--queue-limit", "1k", 1024},
        {"--queue-limit", "1K", 1024},
        {"--queue-limit", "3m", 3ll << 20},
        {"--queue-limit", "3M", 3ll << 20},
        {"--queue-limit", "2g", 2ll << 30},
        {"--queue-limit", "2G", 2ll << 30},
        {"--queue-limit", "+2k", 2048}, /* strtoull takes a sign */
        {"--queue-limit", "1024g", 1ll << 40},
        {"--queue-limit", "1025g", -1},
        {"--queue-limit", "1099511627777", -1},
        {"--queue-limit", "0", -1},
        {"--queue-limit", "0k", -1},
        {"--queue-limit", "-1", -1},
        {"--queue-limit", "-1k", -1},
        {"--queue-limit", " 1k", -1},
        {"--queue-limit", "1k ", -1},
        {"--queue-limit", "1kb", -1},
        {"--queue-limit", "1t", -1},
        {"--queue-limit", "1.5m", -1},
        {"--queue-limit", "0x10", -1},
        {"--queue-limit", "k", -1},
        {"--queue-limit", "", -1},
        {"--queue-limit", "lots", -1},
        {"--queue-limit", "18446744073709551616", -1},
        {"--queue-limit", "18014398509481984k", -1}, /* v * 1024 would wrap */
        {"--max-header-size", "255", -1},
        {"--max-header-size", "256", 256},
        {"--max-header-size", "1m", 1 << 20},
        {"--max-header-size", "1025k", -1},
        {"--max-message-size", "1g", 1 << 30},
        {"--max-message-size", "1025m", -1},
        {"--history-memory", "0", 0},
        {"--max-memory", "0", 0},
        {"--max-memory", "1048576g", 1ll << 50},
        {"--max-memory", "1048577g", -1},
        {"--body-min-rate", "0", -1},
        {"--body-min-rate", "1", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const size_case *k = &cases[i];
        LOAD(no_env, (char *)k->flag, (char *)k->val);
        if (k->want < 0) {
            char msg[128];
            snprintf(msg, sizeof msg, "invalid value '%s' for %s", k->val, k->flag);
            expect_error(msg, NULL);
            continue;
        }
        if (R.rc != CONFIG_OK)
            fail_msg("%s %s rejected: %s", k->flag, k->val, R.err);
        size_t got = !strcmp(k->flag, "--queue-limit")      ? R.cfg->queue_limit
                     : !strcmp(k->flag, "--max-header-size")  ? R.cfg->max_header_size
                     : !strcmp(k->flag, "--max-message-size") ? R.cfg->max_message_size
                     : !strcmp(k->flag, "--history-memory")   ? R.cfg->history_memory
                     : !strcmp(k->flag, "--max-memory")       ? R.cfg->max_memory
                                                             : R.cfg->body_min_rate;
        if (got != (size_t)k->want)
            fail_msg("%s %s: got %zu, want %lld", k->flag, k->val, got, k->want);
    }

    /* The environment parses the same way and names the variable. */
    char *env[] = {"HERALD_QUEUE_LIMIT=8m", NULL};
    LOAD0(env);
    expect_ok();
    assert_int_equal(R.cfg->queue_limit, 8 << 20);
    char *bad[] = {"HERALD_QUEUE_LIMIT=8mb", NULL};
    LOAD0(bad);
    expect_error("invalid value '8mb' in HERALD_QUEUE_LIMIT", NULL);
}

typedef struct sec_case {
    const char *flag, *val;
    long long want_ms; /* -1: rejected */
} sec_case;

static void test_seconds(void **state)
{
    (void)state;
    static const sec_case cases[] = {
        {"--write-timeout", "1", 1000},
        {"--write-timeout", "1.5", 1500},
        {"--write-timeout", "0.001", 1},
        {"--write-timeout", "0.0026", 3}, /* rounded to the nearest ms */
        {"--write-timeout", "1e2", 100000},
        {"--write-timeout", "31536000", 31536000000ll}, /* a year is the ceiling */
        {"--write-timeout", "31536001", -1},
        {"--write-timeout", "0", -1}, /* must be > 0 */
        {"--write-timeout", "0.0004", -1},
        {"--write-timeout", "-1", -1},
        {"--write-timeout", "10s", -1},
        {"--write-timeout", "inf", -1},
        {"--write-timeout", "nan", -1},
        {"--write-timeout", "", -1},
        {"--write-timeout", "ten", -1},
        {"--ping-interval", "0", -1},
        {"--idle-timeout", "0", -1},
        {"--header-timeout", "0", -1},
        {"--body-timeout", "0", -1},
        {"--group-linger", "0", -1},
        {"--idle-timeout", "0.25", 250},
        /* These allow 0. */
        {"--jwt-leeway", "0", 0},
        {"--history-ttl", "0", 0},
        {"--shutdown-timeout", "0", 0},
        {"--drain-window", "0", 0},
        {"--drain-window", "-0.5", -1},
        {"--history-ttl", "3600", 3600000},
        /* Accepted today through strtod's leniency (unlike sizes, which
         * refuse leading blanks): a leading blank and hex floats. */
        {"--write-timeout", " 2", 2000},
        {"--write-timeout", "0x10", 16000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const sec_case *k = &cases[i];
        LOAD(no_env, (char *)k->flag, (char *)k->val);
        if (k->want_ms < 0) {
            char msg[128];
            snprintf(msg, sizeof msg, "invalid value '%s' for %s", k->val, k->flag);
            expect_error(msg, NULL);
            continue;
        }
        if (R.rc != CONFIG_OK)
            fail_msg("%s %s rejected: %s", k->flag, k->val, R.err);
        const config *c = R.cfg;
        uint64_t got = !strcmp(k->flag, "--write-timeout")    ? c->write_timeout_ms
                       : !strcmp(k->flag, "--idle-timeout")     ? c->idle_timeout_ms
                       : !strcmp(k->flag, "--jwt-leeway")       ? c->jwt_leeway_ms
                       : !strcmp(k->flag, "--history-ttl")      ? c->history_ttl_ms
                       : !strcmp(k->flag, "--shutdown-timeout") ? c->shutdown_timeout_ms
                                                                : c->drain_window_ms;
        if (got != (uint64_t)k->want_ms)
            fail_msg("%s %s: got %llu ms, want %lld", k->flag, k->val, (unsigned long long)got,
                     k->want_ms);
    }
    char *bad[] = {"HERALD_WRITE_TIMEOUT=abc", NULL};
    LOAD0(bad);
    expect_error("invalid value 'abc' in HERALD_WRITE_TIMEOUT", NULL);
}

static void test_ints(void **state)
{
    (void)state;
    LOAD(no_env, "--workers", "1", "--max-groups", "4096", "--ipv6-prefix", "128", "--history",
         "1000000", "--max-conns-per-ip", "0", "--client-frame-rate", "0", "--accept-rate", "50",
         "--max-live-groups", "1");
    expect_ok();
    assert_int_equal(R.cfg->workers, 1);
    assert_int_equal(R.cfg->max_groups, 4096);
    assert_int_equal(R.cfg->ipv6_prefix, 128);
    assert_int_equal(R.cfg->history, 1000000);
    assert_int_equal(R.cfg->max_conns_per_ip, 0);
    assert_int_equal(R.cfg->client_frame_rate, 0);
    assert_int_equal(R.cfg->accept_rate, 50);
    assert_int_equal(R.cfg->max_live_groups, 1);

    LOAD(no_env, "--workers", "64");
    expect_ok();
    assert_int_equal(R.cfg->workers, 64);

    /* Accepted today through strtol's leniency (unlike sizes, which refuse
     * leading blanks): a sign, and a leading blank, also in a port. */
    LOAD(no_env, "--workers", " +3", "--listen", "127.0.0.1: 80");
    expect_ok();
    assert_int_equal(R.cfg->workers, 3);
    assert_int_equal(R.cfg->listen_port, 80);

    static const char *const bad[][2] = {
        {"--workers", "0"},       {"--workers", "65"},         {"--workers", "2x"},
        {"--workers", ""},        {"--workers", "1k"},         {"--workers", "4294967297"},
        {"--max-groups", "0"},    {"--ipv6-prefix", "129"},    {"--ipv6-prefix", "-1"},
        {"--history", "1000001"}, {"--max-live-groups", "0"},  {"--accept-rate", "-5"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        LOAD(no_env, (char *)bad[i][0], (char *)bad[i][1]);
        char msg[128];
        snprintf(msg, sizeof msg, "invalid value '%s' for %s", bad[i][1], bad[i][0]);
        expect_error(msg, NULL);
    }
}

static void test_enums(void **state)
{
    (void)state;
    LOAD(no_env, "--slow-policy", "drop-oldest", "--log-format", "json", "--log-level", "debug");
    expect_ok();
    assert_int_equal(R.cfg->slow_policy, SLOW_DROP_OLDEST);
    assert_int_equal(R.cfg->log_format, LOGF_JSON);
    assert_int_equal(R.cfg->log_level, LOG_DEBUG);

    LOAD(no_env, "--slow-policy", "close", "--log-format", "text", "--log-level", "error");
    expect_ok();
    assert_int_equal(R.cfg->slow_policy, SLOW_CLOSE);
    assert_int_equal(R.cfg->log_format, LOGF_TEXT);
    assert_int_equal(R.cfg->log_level, LOG_ERROR);

    char *env[] = {"HERALD_LOG_LEVEL=warn", "HERALD_SLOW_POLICY=drop-oldest", NULL};
    LOAD0(env);
    expect_ok();
    assert_int_equal(R.cfg->log_level, LOG_WARN);
    assert_int_equal(R.cfg->slow_policy, SLOW_DROP_OLDEST);

    /* Exact, case-sensitive names only. */
    static const char *const bad[][2] = {
        {"--slow-policy", "Drop-Oldest"}, {"--slow-policy", "drop_oldest"},
        {"--slow-policy", "drop"},        {"--slow-policy", "1"},
        {"--slow-policy", ""},            {"--log-format", "JSON"},
        {"--log-level", "verbose"},       {"--log-level", "warning"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        LOAD(no_env, (char *)bad[i][0], (char *)bad[i][1]);
        char msg[128];
        snprintf(msg, sizeof msg, "invalid value '%s' for %s", bad[i][1], bad[i][0]);
        expect_error(msg, NULL);
    }
    char *benv[] = {"HERALD_LOG_LEVEL=verbose", NULL};
    LOAD0(benv);
    expect_error("invalid value 'verbose' in HERALD_LOG_LEVEL", NULL);
}

static void test_listen(void **state)
{
    (void)state;
    LOAD(no_env, "--listen", "0.0.0.0:0");
    expect_ok();
    assert_string_equal(R.cfg->listen, "0.0.0.0:0");
    assert_string_equal(R.cfg->listen_host, "0.0.0.0");
    assert_int_equal(R.cfg->listen_port, 0);

    LOAD(no_env, "--listen=[::1]:9000");
    expect_ok();
    assert_string_equal(R.cfg->listen, "[::1]:9000");
    assert_string_equal(R.cfg->listen_host, "::1");
    assert_int_equal(R.cfg->listen_port, 9000);

    LOAD(no_env, "--listen", "localhost:65535");
    expect_ok();
    assert_string_equal(R.cfg->listen_host, "localhost");
    assert_int_equal(R.cfg->listen_port, 65535);

    char host255[300], host256[300];
    memset(host255, 'h', 255);
    strcpy(host255 + 255, ":1");
    memset(host256, 'h', 256);
    strcpy(host256 + 256, ":1");
    LOAD(no_env, "--listen", host255);
    expect_ok();
    assert_int_equal(strlen(R.cfg->listen_host), 255);

    const char *const bad[] = {"localhost", ":80", "h:",    "h:65536", "h:-1",
                               "h:8o",      "[::1]", "", host256};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        LOAD(no_env, "--listen", (char *)bad[i]);
        char msg[400];
        snprintf(msg, sizeof msg, "invalid value '%s' for --listen", bad[i]);
        expect_error(msg, NULL);
    }
}

static void test_tls_pair(void **state)
{
    (void)state;
    LOAD(no_env, "--tls-cert", "/etc/c.pem");
    expect_error("--tls-cert and --tls-key go together", NULL);
    LOAD(no_env, "--tls-key", "/etc/k.pem");
    expect_error("--tls-cert and --tls-key go together", NULL);

    /* The pair may come from different sources. */
    const char *path = cfg_file("{\"tls-cert\": \"/etc/c.pem\"}");
    LOAD(no_env, "--config", (char *)path, "--tls-key", "/etc/k.pem");
    expect_ok();
    assert_string_equal(R.cfg->tls_cert, "/etc/c.pem");
    assert_string_equal(R.cfg->tls_key, "/etc/k.pem");
}

/* No option is a boolean: --print-config is an action and takes no value. */
static void test_no_boolean_options(void **state)
{
    (void)state;
    LOAD(no_env, "--print-config=true");
    expect_error("unknown option '--print-config=true'", NULL);
    const char *path = cfg_file("{\"max-groups\": true}");
    LOAD(no_env, "--config", (char *)path);
    expect_error("invalid value for \"max-groups\"", path);
}

/* ---- argv errors ----------------------------------------------------------------- */

static void test_unknown_option(void **state)
{
    (void)state;
    LOAD(no_env, "--no-such-flag", "1");
    expect_error("unknown option '--no-such-flag'", NULL);
    LOAD(no_env, "--queue-limit", "1m", "--no-such=3");
    expect_error("unknown option '--no-such=3'", NULL);
    LOAD(no_env, "--queue_limit", "1m"); /* env spelling is not a flag */
    expect_error("unknown option '--queue_limit'", NULL);
    LOAD(no_env, "--QUEUE-LIMIT", "1m");
    expect_error("unknown option '--QUEUE-LIMIT'", NULL);
    LOAD(no_env, "--");
    expect_error("unknown option '--'", NULL);
    char longname[200] = "--";
    memset(longname + 2, 'x', 150);
    longname[152] = '\0';
    LOAD(no_env, longname);
    expect_error("unknown option '--xxxx", NULL);
    LOAD(no_env, "-q");
    expect_error("unexpected argument '-q'", NULL);
    LOAD(no_env, "stray");
    expect_error("unexpected argument 'stray'", NULL);
}

static void test_missing_value(void **state)
{
    (void)state;
    LOAD(no_env, "--queue-limit");
    expect_error("option '--queue-limit' needs a value", NULL);
    LOAD(no_env, "--config");
    expect_error("option '--config' needs a value", NULL);
    LOAD(no_env, "--publish-key");
    expect_error("option '--publish-key' needs a value", NULL);
    /* The next argument is the value, whatever it looks like. */
    LOAD(no_env, "--listen", "--workers", "2");
    expect_error("invalid value '--workers' for --listen", NULL);
    LOAD(no_env, "--queue-limit=");
    expect_error("invalid value '' for --queue-limit", NULL);
}

/* A scalar given twice: the last one wins (each source and across the
 * command line); a list given twice: both (tested above). */
static void test_flag_twice(void **state)
{
    (void)state;
    LOAD(no_env, "--queue-limit", "1m", "--queue-limit=2m");
    expect_ok();
    assert_int_equal(R.cfg->queue_limit, 2 << 20);

    LOAD(no_env, "--listen", "127.0.0.1:1", "--listen", "127.0.0.2:2");
    expect_ok();
    assert_string_equal(R.cfg->listen, "127.0.0.2:2");
    assert_int_equal(R.cfg->listen_port, 2);

    LOAD(no_env, "--broker", "redis://a:1", "--broker", "redis://b:2", "--tls-cert", "x",
         "--tls-cert", "y", "--tls-key", "k");
    expect_ok();
    assert_string_equal(R.cfg->broker, "redis://b:2");
    assert_string_equal(R.cfg->tls_cert, "y");

    /* --config twice: only the last file is read. */
    const char *a = cfg_file("{\"max-groups\": 1}");
    const char *b = cfg_file("{\"max-groups\": 2}");
    LOAD(no_env, "--config", (char *)a, "--config", (char *)b);
    expect_ok();
    assert_string_equal(R.cfg->config_path, b);
    assert_int_equal(R.cfg->max_groups, 2);
    const char *broken = cfg_file("{");
    LOAD(no_env, "--config", (char *)broken, "--config", (char *)b);
    expect_ok();

    /* The same variable twice in envp: the last one wins. */
    char *env[] = {"HERALD_MAX_GROUPS=5", "HERALD_MAX_GROUPS=6", NULL};
    LOAD0(env);
    expect_ok();
    assert_int_equal(R.cfg->max_groups, 6);
}

/* ---- the config file --------------------------------------------------------------- */

static void test_file_values(void **state)
{
    (void)state;
    const char *path = cfg_file("{\n"
                                "  \"listen\": \"127.0.0.1:0\",\n"
                                "  \"workers\": 2.0,\n"
                                "  \"queue-limit\": 1048576,\n"
                                "  \"max-message-size\": \"64k\",\n"
                                "  \"write-timeout\": 0.25,\n"
                                "  \"idle-timeout\": \"90\",\n"
                                "  \"jwt-secret\": \"one-secret\",\n"
                                "  \"publish-key\": [],\n"
                                "  \"log-level\": \"warn\",\n"
                                "  \"broker\": \"redis://127.0.0.1:6379\"\n"
                                "}\n");
    /* --config= names an empty path, which cannot be read. */
    LOAD(no_env, "--config=", "--listen", "127.0.0.1:1");
    expect_error("herald: config file : ", NULL);

    char flag[256];
    LOAD(no_env, flag_eq(flag, sizeof flag, "--config", path));
    expect_ok();
    const config *c = R.cfg;
    assert_string_equal(c->listen, "127.0.0.1:0");
    assert_int_equal(c->workers, 2); /* a JSON real with no fraction is an integer */
    assert_int_equal(c->queue_limit, 1 << 20);
    assert_int_equal(c->max_message_size, 64 << 10);
    assert_int_equal(c->write_timeout_ms, 250);
    assert_int_equal(c->idle_timeout_ms, 90000);
    assert_int_equal(c->jwt_secrets.n, 1); /* a single string is a one-item list */
    assert_string_equal(c->jwt_secrets.v[0], "one-secret");
    assert_int_equal(c->publish_keys.n, 0);
    assert_int_equal(c->log_level, LOG_WARN);
    assert_string_equal(c->broker, "redis://127.0.0.1:6379");
}

typedef struct file_case {
    const char *json;
    const char *needle;
} file_case;

static void test_file_errors(void **state)
{
    (void)state;
    LOAD(no_env, "--config", "/tmp/herald-test-config-does-not-exist.json");
    expect_error("config file /tmp/herald-test-config-does-not-exist.json", NULL);

    static const file_case cases[] = {
        {"", "(line "},
        {"{", "(line 1)"},
        {"{\"queue-limit\": \"1m\",\n \"workers\": }", "(line 2)"},
        {"{\"queue-limit\": \"1m\",}", "(line 1)"},
        {"[\"queue-limit\"]", "the top level must be an object"},
        {"\"queue-limit\"", "(line 1)"}, /* jansson itself wants an object or array */
        {"{\"bogus\": 1}", "unknown key \"bogus\""},
        {"{\"queue_limit\": \"1m\"}", "unknown key \"queue_limit\""},
        {"{\"config\": \"/etc/other.json\"}", "unknown key \"config\""},
        {"{\"print-config\": true}", "unknown key \"print-config\""},
        {"{\"queue-limit\": true}", "invalid value for \"queue-limit\""},
        {"{\"queue-limit\": null}", "invalid value for \"queue-limit\""},
        {"{\"queue-limit\": {}}", "invalid value for \"queue-limit\""},
        {"{\"queue-limit\": 0}", "invalid value for \"queue-limit\""},
        {"{\"queue-limit\": -1}", "invalid value for \"queue-limit\""},
        {"{\"queue-limit\": 1.5}", "invalid value for \"queue-limit\""},
        {"{\"workers\": [2]}", "invalid value for \"workers\""},
        {"{\"workers\": 2.5}", "invalid value for \"workers\""},
        {"{\"listen\": 8080}", "invalid value for \"listen\""},
        {"{\"slow-policy\": 1}", "invalid value for \"slow-policy\""},
        {"{\"write-timeout\": 0}", "invalid value for \"write-timeout\""},
        {"{\"broker\": \"\"}", "invalid value for \"broker\""},
        {"{\"publish-key\": [1]}", "\"publish-key\" must list non-empty strings"},
        {"{\"publish-key\": [\"\"]}", "\"publish-key\" must list non-empty strings"},
        {"{\"jwt-secret\": [\"ok\", null]}", "\"jwt-secret\" must list non-empty strings"},
        {"{\"publish-key\": true}", "invalid value for \"publish-key\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = cfg_file(cases[i].json);
        LOAD(no_env, "--config", (char *)path);
        if (R.rc != CONFIG_ERROR)
            fail_msg("config file %s was accepted", cases[i].json);
        char where[128];
        snprintf(where, sizeof where, "config file %s: ", path);
        expect_error(where, cases[i].needle);
        /* Reuse the slot: at most a few files live at once. */
        unlink(tmp_paths[--ntmp]);
        free(tmp_paths[ntmp]);
    }

    /* A file error is an error even when the environment and flags are fine. */
    const char *path = cfg_file("{\"bogus\": 1}");
    char var[128];
    snprintf(var, sizeof var, "HERALD_CONFIG=%s", path);
    char *env[] = {var, "HERALD_QUEUE_LIMIT=1m", NULL};
    LOAD(env, "--queue-limit", "2m");
    expect_error("unknown key \"bogus\"", NULL);
}

/* ---- the environment ------------------------------------------------------------------ */

static void test_env(void **state)
{
    (void)state;
    /* Unknown HERALD_* variables, lower-case names, entries without '=' and
     * actions are ignored (the environment carries unrelated variables). */
    char *env[] = {"HERALD_NO_SUCH_OPTION=1",
                   "herald_queue_limit=1k",
                   "HERALD_QUEUE_LIMIT",
                   "HERALD_PRINT_CONFIG=1",
                   "HERALD_HELP=1",
                   "HERALD_HISTORY_TTL=7",
                   "XHERALD_MAX_GROUPS=3",
                   "HERALD_MAX_GROUPSX=3",
                   "PATH=/usr/bin",
                   NULL};
    LOAD0(env);
    expect_ok();
    assert_int_equal(R.cfg->queue_limit, 4 << 20);
    assert_int_equal(R.cfg->max_groups, 64);
    /* HERALD_HISTORY_TTL sets history-ttl, not history. */
    assert_int_equal(R.cfg->history_ttl_ms, 7000);
    assert_int_equal(R.cfg->history, 0);

    /* Every option has its variable: dashes become underscores. */
    char *all[] = {"HERALD_LISTEN=127.0.0.1:7000", "HERALD_WORKERS=3",
                   "HERALD_MAX_MESSAGE_SIZE=2k", "HERALD_MAX_CONNS_PER_IP=9",
                   "HERALD_IPV6_PREFIX=48", "HERALD_JWT_SECRET=j1,j2",
                   "HERALD_ALLOWED_ORIGINS=https://o.example", "HERALD_TLS_CERT=c",
                   "HERALD_TLS_KEY=k", "HERALD_LOG_FORMAT=json", NULL};
    LOAD0(all);
    expect_ok();
    assert_int_equal(R.cfg->listen_port, 7000);
    assert_int_equal(R.cfg->workers, 3);
    assert_int_equal(R.cfg->max_message_size, 2048);
    assert_int_equal(R.cfg->max_conns_per_ip, 9);
    assert_int_equal(R.cfg->ipv6_prefix, 48);
    assert_int_equal(R.cfg->jwt_secrets.n, 2);
    assert_string_equal(R.cfg->jwt_secrets.v[1], "j2");
    assert_int_equal(R.cfg->allowed_origins.n, 1);
    assert_string_equal(R.cfg->tls_cert, "c");
    assert_int_equal(R.cfg->log_format, LOGF_JSON);
}

/* ---- actions ---------------------------------------------------------------------------- */

static bool help_lists(const char *help, const char *name)
{
    char pat[96];
    snprintf(pat, sizeof pat, "\n  --%s ", name);
    if (strstr(help, pat))
        return true;
    snprintf(pat, sizeof pat, "\n  --%s\n", name);
    return strstr(help, pat) != NULL;
}

static void test_help_lists_every_option(void **state)
{
    (void)state;
    /* The option table, as --print-config sees it. */
    LOAD(no_env, "--print-config");
    json_t *keys = parse_out();
    size_t nkeys = json_object_size(keys);
    assert_true(nkeys >= 30);

    LOAD(no_env, "--help");
    assert_int_equal(R.rc, CONFIG_EXIT);
    assert_int_equal(R.errlen, 0);
    assert_true(strncmp(R.out, "herald " HERALD_VERSION "\nusage: herald [options]\n",
                        strlen("herald " HERALD_VERSION "\nusage: herald [options]\n")) == 0);
    const char *key;
    json_t *v;
    json_object_foreach(keys, key, v) {
        if (!help_lists(R.out, key))
            fail_msg("--help does not list --%s", key);
    }
    assert_true(help_lists(R.out, "print-config"));
    assert_non_null(strstr(R.out, "\n  --help, --version\n"));
    assert_non_null(strstr(R.out, "k, m and g suffixes"));
    assert_non_null(strstr(R.out, "HERALD_<NAME>"));
    /* ... and nothing else: one "  --" line per option, plus the actions. */
    size_t lines = 0;
    for (const char *p = R.out; (p = strstr(p, "\n  --")); p++)
        lines++;
    assert_int_equal(lines, nkeys + 2);
    json_decref(keys);

    /* -h is --help; help wins over anything else on the line, checked or
     * not (it is found before any value is parsed). */
    char *before = strdup(R.out);
    assert_non_null(before);
    char *env[] = {"HERALD_QUEUE_LIMIT=garbage", NULL};
    LOAD(env, "--no-such-flag", "--config", "/nonexistent", "-h");
    assert_int_equal(R.rc, CONFIG_EXIT);
    assert_string_equal(R.out, before);
    assert_int_equal(R.errlen, 0);
    free(before);
}

/* An option's value is a value, even when it reads like an action. */
static void test_option_values_are_not_actions(void **state)
{
    (void)state;
    LOAD(no_env, "--publish-key", "-h");
    expect_ok();
    assert_int_equal(R.cfg->publish_keys.n, 1);
    assert_string_equal(R.cfg->publish_keys.v[0], "-h");
    LOAD(no_env, "--jwt-secret", "--version");
    expect_ok();
    assert_int_equal(R.cfg->jwt_secrets.n, 1);
    assert_string_equal(R.cfg->jwt_secrets.v[0], "--version");
    /* and the action itself still works after a valued option */
    LOAD(no_env, "--workers", "2", "--version");
    assert_int_equal(R.rc, CONFIG_EXIT);
}

static void test_version(void **state)
{
    (void)state;
    LOAD(no_env, "--version");
    assert_int_equal(R.rc, CONFIG_EXIT);
    assert_string_equal(R.out, "herald " HERALD_VERSION "\n");
    assert_int_equal(R.errlen, 0);
    /* First action wins. */
    LOAD(no_env, "--version", "--help");
    assert_string_equal(R.out, "herald " HERALD_VERSION "\n");
}

static void test_print_config(void **state)
{
    (void)state;
    LOAD(no_env, "--publish-key", "pk-s3cret-1", "--publish-key", "pk-s3cret-2", "--jwt-secret",
         "jwt-t0psecret", "--queue-limit", "8m", "--write-timeout", "1.5", "--slow-policy",
         "drop-oldest", "--allowed-origins", "https://a.example", "--print-config", "--log-level",
         "warn");
    assert_int_equal(R.rc, CONFIG_EXIT);
    assert_int_equal(R.errlen, 0);
    assert_null(strstr(R.out, "s3cret"));
    assert_null(strstr(R.out, "t0psecret"));
    json_t *j = parse_out();
    json_t *pk = json_object_get(j, "publish-key");
    assert_true(json_is_array(pk));
    assert_int_equal(json_array_size(pk), 2); /* the count shows, the keys do not */
    assert_string_equal(json_string_value(json_array_get(pk, 0)), "********");
    json_t *js = json_object_get(j, "jwt-secret");
    assert_int_equal(json_array_size(js), 1);
    assert_string_equal(json_string_value(json_array_get(js, 0)), "********");
    /* Origins are not secret. */
    json_t *ao = json_object_get(j, "allowed-origins");
    assert_string_equal(json_string_value(json_array_get(ao, 0)), "https://a.example");
    /* Types: sizes and counts are integers in bytes, seconds are numbers. */
    assert_true(json_is_integer(json_object_get(j, "queue-limit")));
    assert_int_equal(json_integer_value(json_object_get(j, "queue-limit")), 8 << 20);
    assert_true(json_is_integer(json_object_get(j, "workers")));
    assert_true(json_is_real(json_object_get(j, "write-timeout")));
    assert_true(json_real_value(json_object_get(j, "write-timeout")) == 1.5);
    assert_string_equal(json_string_value(json_object_get(j, "slow-policy")), "drop-oldest");
    assert_string_equal(json_string_value(json_object_get(j, "log-level")), "warn");
    assert_string_equal(json_string_value(json_object_get(j, "listen")), "127.0.0.1:8080");
    assert_true(json_is_null(json_object_get(j, "broker")));
    assert_true(json_is_null(json_object_get(j, "config")));
    json_decref(j);

    /* A bad value after --print-config is still an error, and nothing is printed. */
    LOAD(no_env, "--print-config", "--queue-limit", "nope");
    expect_error("invalid value 'nope' for --queue-limit", NULL);

    /* config_print on a loaded config prints what --print-config prints. */
    const char *path = cfg_file("{\"history\": 100, \"jwt-secret\": [\"abc\"]}");
    LOAD(no_env, "--config", (char *)path, "--print-config");
    assert_int_equal(R.rc, CONFIG_EXIT);
    char *printed = strdup(R.out);
    assert_non_null(printed);
    LOAD(no_env, "--config", (char *)path);
    expect_ok();
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    config_print(R.cfg, f);
    fclose(f);
    int same = strcmp(buf, printed) == 0;
    if (!same)
        fprintf(stderr, "config_print:\n%s\n--print-config:\n%s\n", buf, printed);
    free(buf);
    free(printed);
    assert_true(same);
}

/* What --print-config prints loads back as a config file (after dropping the
 * keys a file cannot hold: the masked secrets, nulls and "config") and
 * yields the same configuration. */
static void test_print_config_round_trip(void **state)
{
    (void)state;
    LOAD(no_env, "--listen", "[::1]:0", "--workers", "3", "--queue-limit", "3m",
         "--write-timeout", "0.125", "--history-ttl", "0", "--allowed-origins",
         "https://a.example,https://b.example", "--log-format", "json", "--broker",
         "redis://127.0.0.1:6379/2", "--print-config");
    assert_int_equal(R.rc, CONFIG_EXIT);
    char *first = strdup(R.out);
    assert_non_null(first);
    json_t *j = parse_out();
    json_object_del(j, "config");
    json_object_del(j, "publish-key");
    json_object_del(j, "jwt-secret");
    json_object_del(j, "tls-cert");
    json_object_del(j, "tls-key");
    char *text = json_dumps(j, 0);
    json_decref(j);
    assert_non_null(text);
    const char *path = cfg_file(text);
    free(text);

    LOAD(no_env, "--config", (char *)path, "--print-config");
    assert_int_equal(R.rc, CONFIG_EXIT);
    json_t *a = NULL, *b = NULL;
    json_error_t je;
    a = json_loads(first, 0, &je);
    b = parse_out();
    assert_non_null(a);
    json_object_set_new(a, "config", json_string(path));
    int equal = json_equal(a, b);
    if (!equal)
        fprintf(stderr, "first:\n%s\nround trip:\n%s\n", first, R.out);
    json_decref(a);
    json_decref(b);
    free(first);
    assert_true(equal);
}

/* ---- lifetime ---------------------------------------------------------------------------- */

static void test_free_and_snapshot(void **state)
{
    (void)state;
    config_free(NULL);

    /* Two loads are independent snapshots; config_set/config_get publish one. */
    config *a = NULL, *b = NULL;
    char *args_a[] = {"herald", "--publish-key", "a", "--listen", "127.0.0.1:1", NULL};
    char *args_b[] = {"herald", "--publish-key", "b", NULL};
    FILE *sink = fopen("/dev/null", "w");
    assert_non_null(sink);
    assert_int_equal(config_load(5, args_a, no_env, sink, sink, &a), CONFIG_OK);
    assert_int_equal(config_load(3, args_b, no_env, sink, sink, &b), CONFIG_OK);
    fclose(sink);
    assert_ptr_not_equal(a, b);
    assert_string_equal(a->publish_keys.v[0], "a");
    assert_string_equal(b->publish_keys.v[0], "b");
    const config *before = config_get();
    config_set(a);
    assert_ptr_equal(config_get(), a);
    config_set(b);
    assert_ptr_equal(config_get(), b);
    config_set(before);
    config_free(a);
    config_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_defaults, teardown),
        cmocka_unit_test_teardown(test_precedence_scalars, teardown),
        cmocka_unit_test_teardown(test_herald_config_env, teardown),
        cmocka_unit_test_teardown(test_precedence_lists, teardown),
        cmocka_unit_test_teardown(test_empty_allowed_origins_is_refused, teardown),
        cmocka_unit_test_teardown(test_sizes, teardown),
        cmocka_unit_test_teardown(test_seconds, teardown),
        cmocka_unit_test_teardown(test_ints, teardown),
        cmocka_unit_test_teardown(test_enums, teardown),
        cmocka_unit_test_teardown(test_listen, teardown),
        cmocka_unit_test_teardown(test_tls_pair, teardown),
        cmocka_unit_test_teardown(test_no_boolean_options, teardown),
        cmocka_unit_test_teardown(test_unknown_option, teardown),
        cmocka_unit_test_teardown(test_missing_value, teardown),
        cmocka_unit_test_teardown(test_flag_twice, teardown),
        cmocka_unit_test_teardown(test_file_values, teardown),
        cmocka_unit_test_teardown(test_file_errors, teardown),
        cmocka_unit_test_teardown(test_env, teardown),
        cmocka_unit_test_teardown(test_help_lists_every_option, teardown),
        cmocka_unit_test_teardown(test_option_values_are_not_actions, teardown),
        cmocka_unit_test_teardown(test_version, teardown),
        cmocka_unit_test_teardown(test_print_config, teardown),
        cmocka_unit_test_teardown(test_print_config_round_trip, teardown),
        cmocka_unit_test_teardown(test_free_and_snapshot, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
