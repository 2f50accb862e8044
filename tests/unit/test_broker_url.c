/* Unit tests for the --broker URL parser (src/broker_url.h): the three
 * schemes with their defaults, several hosts, [IPv6]:port, /DB and /MASTER,
 * and a one-line reason for every malformed URL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "broker_url.h"

static broker_url parse_ok(const char *url)
{
    broker_url u;
    char err[256] = "";
    if (!broker_url_parse(url, &u, err, sizeof err))
        fail_msg("\"%s\" rejected: %s", url, err);
    return u;
}

/* Rejected, with a reason containing want. */
static void expect_bad(const char *url, const char *want)
{
    broker_url u;
    char err[256] = "";
    if (broker_url_parse(url, &u, err, sizeof err))
        fail_msg("\"%s\" accepted", url);
    if (!strstr(err, want))
        fail_msg("\"%s\": reason \"%s\", expected it to say \"%s\"", url, err, want);
}

static void expect_addr(const broker_url *u, int i, const char *host, int port)
{
    assert_true(i < u->naddr);
    assert_string_equal(u->addr[i].host, host);
    assert_int_equal(u->addr[i].port, port);
}

/* ---- redis:// ------------------------------------------------------------- */

static void test_redis_single(void **state)
{
    (void)state;
    broker_url u = parse_ok("redis://127.0.0.1");
    assert_int_equal(u.kind, BROKER_REDIS);
    assert_int_equal(u.naddr, 1);
    expect_addr(&u, 0, "127.0.0.1", 6379);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.master, "");

    u = parse_ok("redis://localhost:6380");
    expect_addr(&u, 0, "localhost", 6380);

    u = parse_ok("redis://redis.example.net:1/15");
    expect_addr(&u, 0, "redis.example.net", 1);
    assert_int_equal(u.db, 15);

    u = parse_ok("redis://h:65535/0");
    expect_addr(&u, 0, "h", 65535);
    assert_int_equal(u.db, 0);

    u = parse_ok("redis://h/1000000");
    expect_addr(&u, 0, "h", 6379);
    assert_int_equal(u.db, 1000000);
}

static void test_redis_ipv6(void **state)
{
    (void)state;
    broker_url u = parse_ok("redis://[::1]");
    expect_addr(&u, 0, "::1", 6379);
    u = parse_ok("redis://[::1]:7000/3");
    expect_addr(&u, 0, "::1", 7000);
    assert_int_equal(u.db, 3);
    u = parse_ok("redis://[fe80::1%eth0]:6380");
    expect_addr(&u, 0, "fe80::1%eth0", 6380);
}

static void test_host_max(void **state)
{
    (void)state;
    char url[512], host[BROKER_URL_HOST_MAX + 2];
    memset(host, 'h', BROKER_URL_HOST_MAX);
    host[BROKER_URL_HOST_MAX] = '\0';
    snprintf(url, sizeof url, "redis://%s:1", host);
    broker_url u = parse_ok(url);
    expect_addr(&u, 0, host, 1);

    host[BROKER_URL_HOST_MAX] = 'h';
    host[BROKER_URL_HOST_MAX + 1] = '\0';
    snprintf(url, sizeof url, "redis://%s:1", host);
    expect_bad(url, "bad HOST[:PORT]");
    snprintf(url, sizeof url, "redis://[%s]:1", host);
    expect_bad(url, "bad HOST[:PORT]");
}

/* ---- redis-sentinel:// ------------------------------------------------------ */

static void test_sentinel(void **state)
{
    (void)state;
    broker_url u = parse_ok("redis-sentinel://s1/mymaster");
    assert_int_equal(u.kind, BROKER_SENTINEL);
    assert_int_equal(u.naddr, 1);
    expect_addr(&u, 0, "s1", 26379);
    assert_string_equal(u.master, "mymaster");
    assert_int_equal(u.db, 0);

    u = parse_ok("redis-sentinel://s1:5000,s2,[::1]:5002,10.0.0.4/Master_1.a-b/2");
    assert_int_equal(u.naddr, 4);
    expect_addr(&u, 0, "s1", 5000);
    expect_addr(&u, 1, "s2", 26379);
    expect_addr(&u, 2, "::1", 5002);
    expect_addr(&u, 3, "10.0.0.4", 26379);
    assert_string_equal(u.master, "Master_1.a-b");
    assert_int_equal(u.db, 2);

    char url[512], master[BROKER_URL_MASTER_MAX + 2];
    memset(master, 'm', BROKER_URL_MASTER_MAX);
    master[BROKER_URL_MASTER_MAX] = '\0';
    snprintf(url, sizeof url, "redis-sentinel://s/%s", master);
    u = parse_ok(url);
    assert_string_equal(u.master, master);
    master[BROKER_URL_MASTER_MAX] = 'm';
    master[BROKER_URL_MASTER_MAX + 1] = '\0';
    snprintf(url, sizeof url, "redis-sentinel://s/%s", master);
    expect_bad(url, "bad MASTER name");
}

/* ---- redis-cluster:// ------------------------------------------------------- */

static void test_cluster(void **state)
{
    (void)state;
    broker_url u = parse_ok("redis-cluster://n1");
    assert_int_equal(u.kind, BROKER_CLUSTER);
    assert_int_equal(u.naddr, 1);
    expect_addr(&u, 0, "n1", 6379);

    u = parse_ok("redis-cluster://127.0.0.1:7000,127.0.0.1:7001,[::1]:7002,n4");
    assert_int_equal(u.naddr, 4);
    expect_addr(&u, 0, "127.0.0.1", 7000);
    expect_addr(&u, 1, "127.0.0.1", 7001);
    expect_addr(&u, 2, "::1", 7002);
    expect_addr(&u, 3, "n4", 6379);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.master, "");
}

static void test_host_count(void **state)
{
    (void)state;
    char url[1024];
    size_t n = (size_t)snprintf(url, sizeof url, "redis-cluster://");
    for (int i = 0; i < BROKER_URL_HOSTS; i++)
        n += (size_t)snprintf(url + n, sizeof url - n, "%sh%d:%d", i ? "," : "", i, 7000 + i);
    broker_url u = parse_ok(url);
    assert_int_equal(u.naddr, BROKER_URL_HOSTS);
    expect_addr(&u, BROKER_URL_HOSTS - 1, "h15", 7015);

    snprintf(url + n, sizeof url - n, ",h16:7016");
    expect_bad(url, "too many hosts");

    /* the same for sentinels, before /MASTER */
    n = (size_t)snprintf(url, sizeof url, "redis-sentinel://");
    for (int i = 0; i <= BROKER_URL_HOSTS; i++)
        n += (size_t)snprintf(url + n, sizeof url - n, "%ss%d", i ? "," : "", i);
    snprintf(url + n, sizeof url - n, "/m");
    expect_bad(url, "too many hosts");
}

/* ---- malformed URLs --------------------------------------------------------- */

static void test_bad_scheme(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "127.0.0.1:6379", "redis:/h", "redis:h", "REDIS://h", "rediss://h", "http://h",
        "redis-sentinel:/h/m", "redis-cluster:h", " redis://h", "redis-sentinels://h/m",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_bad(bad[i], "must be redis://");
}

static void test_bad_hosts(void **state)
{
    (void)state;
    expect_bad("redis://", "missing host");
    expect_bad("redis:///0", "missing host");
    expect_bad("redis-cluster://", "missing host");
    expect_bad("redis-sentinel:///m", "missing host");

    expect_bad("redis-cluster://a,", "empty host after ','");
    expect_bad("redis-sentinel://a,b,/m", "empty host after ','");
    expect_bad("redis-cluster://,a", "bad HOST[:PORT]");
    expect_bad("redis-cluster://a,,b", "bad HOST[:PORT]");

    static const char *const bad[] = {
        "redis://:6379",       /* empty host */
        "redis://[]:6379",     /* empty IPv6 host */
        "redis://[::1",        /* unclosed bracket */
        "redis://[::1]x",      /* junk after the bracket */
        "redis://[::1]:",      /* empty port */
        "redis://::1",         /* IPv6 without brackets */
        "redis://h:",          /* empty port */
        "redis://h:0",         /* port 0 */
        "redis://h:65536",     /* port out of range */
        "redis://h:99999999999999999999999",
        "redis://h:-1",
        "redis://h:+1",
        "redis://h:6379x",     /* trailing junk after the port */
        "redis://h:6379:1",
        "redis://h: 6379",
        "redis://h x",         /* space in the host */
        "redis://h\tx",
        "redis://h\x7fx",
        "redis://user@h",      /* no credentials in the URL */
        "redis://user:pw@h",
        "redis-cluster://a:1,b:0",
        "redis-cluster://a:1,[::1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_bad(bad[i], "bad HOST[:PORT]");
}

static void test_bad_kind_rules(void **state)
{
    (void)state;
    expect_bad("redis://a,b", "redis:// takes one host");
    expect_bad("redis://a:1,b:2/0", "redis:// takes one host");

    expect_bad("redis-sentinel://s", "missing /MASTER");
    expect_bad("redis-sentinel://s1,s2:26380", "missing /MASTER");
    expect_bad("redis-sentinel://s/", "bad MASTER name");
    expect_bad("redis-sentinel://s//0", "bad MASTER name");
    expect_bad("redis-sentinel://s/my master", "bad MASTER name");
    expect_bad("redis-sentinel://s/my:master", "bad MASTER name");
    expect_bad("redis-sentinel://s/m@x", "bad MASTER name");
    expect_bad("redis-sentinel://s/m\xc3\xa9", "bad MASTER name");
    expect_bad("redis-sentinel://s/m,x", "bad MASTER name");

    expect_bad("redis-cluster://n/0", "no /DB");
    expect_bad("redis-cluster://n/", "no /DB");
    expect_bad("redis-cluster://n1,n2/x", "no /DB");
}

static void test_bad_db(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "redis://h/",          "redis://h/x",          "redis://h/-1",
        "redis://h/+1",        "redis://h/1000001",    "redis://h/99999999999999999999",
        "redis://h/1/",        "redis://h/1/2",        "redis://h/1 ",
        "redis://h/1?x=1",     "redis://h:1/1x",       "redis-sentinel://s/m/",
        "redis-sentinel://s/m/x", "redis-sentinel://s/m/1/", "redis-sentinel://s/m/1000001",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_bad(bad[i], "bad database number");
}

static void test_err_buffer(void **state)
{
    (void)state;
    /* A short buffer gets a truncated, terminated reason; none at all is fine. */
    broker_url u;
    char err[8];
    memset(err, 'x', sizeof err);
    assert_false(broker_url_parse("redis://a,b", &u, err, sizeof err));
    assert_int_equal(strlen(err), sizeof err - 1);
    assert_false(broker_url_parse("redis://a,b", &u, NULL, 0));
    /* a failed parse after a good one leaves nothing of the good one behind */
    u = parse_ok("redis-sentinel://s:1/m/3");
    assert_false(broker_url_parse("redis-sentinel://s:1/", &u, err, sizeof err));
    assert_int_equal(u.db, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redis_single),   cmocka_unit_test(test_redis_ipv6),
        cmocka_unit_test(test_host_max),       cmocka_unit_test(test_sentinel),
        cmocka_unit_test(test_cluster),        cmocka_unit_test(test_host_count),
        cmocka_unit_test(test_bad_scheme),     cmocka_unit_test(test_bad_hosts),
        cmocka_unit_test(test_bad_kind_rules), cmocka_unit_test(test_bad_db),
        cmocka_unit_test(test_err_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
