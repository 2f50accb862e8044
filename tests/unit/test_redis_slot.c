/* Unit tests for Redis Cluster key routing (src/redis_slot.h).
 *
 * Every slot asserted here was read from a real Redis 7.0.15 started with
 * --cluster-enabled yes (`CLUSTER KEYSLOT key`), and every redirection
 * format from that Redis' own MOVED/ASK replies (two nodes, one slot moved,
 * one slot MIGRATING), so the tests pin Redis' behaviour rather than our
 * reading of the spec. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "redis_slot.h"

/* ---- CRC16 ---------------------------------------------------------------- */

static void test_crc16_check_value(void **state)
{
    (void)state;
    /* The catalogued check value of CRC-16/XMODEM. */
    assert_int_equal(redis_crc16("123456789", 9), 0x31C3);
    assert_int_equal(redis_crc16("", 0), 0);
    /* A zero byte leaves a zero-initialised CRC at zero: the init is 0, not
     * 0xFFFF (which would make this the CCITT-FALSE variant). */
    assert_int_equal(redis_crc16("\0\0\0", 3), 0);
}

static void test_crc16_high_bytes(void **state)
{
    (void)state;
    /* Bytes >= 0x80 must be taken as unsigned: 0xff and "\xff" agree with a
     * shift-by-shift computation written out by hand. */
    unsigned crc = 0xff << 8;
    for (int b = 0; b < 8; b++)
        crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    assert_int_equal(redis_crc16("\xff", 1), crc);
}

/* ---- key slots ------------------------------------------------------------ */

typedef struct slot_case {
    const char *key;
    size_t len;
    unsigned slot;
} slot_case;

#define S(k, s) {k, sizeof(k) - 1, s}

/* From `redis-cli -p PORT CLUSTER KEYSLOT <key>` against Redis 7.0.15 (the
 * two binary keys through `printf ... | redis-cli -x`). */
static const slot_case slot_cases[] = {
    S("foo", 12182),
    S("bar", 5061),
    S("hello", 866),
    S("123456789", 12739), /* 0x31C3 & 0x3FFF */
    S("user1000", 3443),
    S("{user1000}.following", 3443),
    S("{user1000}.followers", 3443),
    S("foo{}{bar}", 8363),    /* empty first tag: the whole key */
    S("foo{{bar}}zap", 4015), /* tag is "{bar" */
    S("{bar", 4015),
    S("foo{bar}{zap}", 5061), /* only the first tag: "bar" */
    S("", 0),
    S("{}", 15257),
    S("}{", 12793),
    S("{a", 10276),
    S("a}", 5921),
    S("{}x", 10595),
    S("x{", 3596),
    S("a{b}c", 3300),
    S("b", 3300),
    S("a\xff" "b\0c", 4576),
    S("\x80\xfe{\xc3\xa9}", 10180),
};

static void test_key_slot_known(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof slot_cases / sizeof slot_cases[0]; i++) {
        const slot_case *c = &slot_cases[i];
        unsigned got = redis_key_slot(c->key, c->len);
        if (got != c->slot)
            fail_msg("case %zu (%zu bytes): slot %u, Redis says %u", i, c->len, got, c->slot);
    }
}

static void test_key_slot_tag_rules(void **state)
{
    (void)state;
    /* The slot of a tagged key is the slot of its tag, whatever surrounds it. */
    static const char *const around[] = {"", "x", "{", "}", "{}", "prefix:", ":suffix{zz}"};
    for (size_t i = 0; i < sizeof around / sizeof around[0]; i++) {
        char key[64];
        /* The prefix must not hold a '{' itself, or the tag would start there. */
        if (strchr(around[i], '{'))
            snprintf(key, sizeof key, "{chan-7}%s", around[i]);
        else
            snprintf(key, sizeof key, "%s{chan-7}%s", around[i], around[i]);
        assert_int_equal(redis_key_slot(key, strlen(key)), redis_key_slot("chan-7", 6));
    }
    /* The length bounds the search: a '}' past len does not close the tag. */
    const char *k = "ab{cd}";
    assert_int_equal(redis_key_slot(k, 5), redis_key_slot("ab{cd", 5));
    assert_int_not_equal(redis_key_slot(k, 5), redis_key_slot("cd", 2));
}

static void test_key_slot_range(void **state)
{
    (void)state;
    char key[16];
    for (unsigned i = 0; i < 100000; i++) {
        int n = snprintf(key, sizeof key, "k%u", i);
        assert_true(redis_key_slot(key, (size_t)n) < REDIS_SLOTS);
    }
}

/* ---- redirections --------------------------------------------------------- */

static void expect_redirect(const char *err, redis_redirect_kind kind, unsigned slot, const char *host, int port)
{
    redis_redirect rd;
    if (!redis_parse_redirect(err, strlen(err), &rd))
        fail_msg("\"%s\" rejected", err);
    assert_int_equal(rd.kind, kind);
    assert_int_equal(rd.slot, slot);
    assert_string_equal(rd.host, host);
    assert_int_equal(rd.port, port);
}

static void test_redirect_good(void **state)
{
    (void)state;
    expect_redirect("MOVED 3999 127.0.0.1:6381", REDIS_MOVED, 3999, "127.0.0.1", 6381);
    expect_redirect("ASK 3999 127.0.0.1:6381", REDIS_ASK, 3999, "127.0.0.1", 6381);
    /* Verbatim from Redis 7.0.15 with cluster-announce-ip ::1: IPv6 unbracketed,
     * the port after the last ':'. */
    expect_redirect("MOVED 12182 ::1:17002", REDIS_MOVED, 12182, "::1", 17002);
    expect_redirect("ASK 5061 ::1:17002", REDIS_ASK, 5061, "::1", 17002);
    expect_redirect("MOVED 1 ::1:7000", REDIS_MOVED, 1, "::1", 7000);
    expect_redirect("MOVED 7 fe80::1:2:3:6379", REDIS_MOVED, 7, "fe80::1:2:3", 6379);
    expect_redirect("MOVED 5 redis-3.example.net:6379", REDIS_MOVED, 5, "redis-3.example.net", 6379);
    /* boundaries of slot and port */
    expect_redirect("MOVED 0 h:1", REDIS_MOVED, 0, "h", 1);
    expect_redirect("ASK 16383 h:65535", REDIS_ASK, 16383, "h", 65535);
    /* the longest host that fits (255 bytes) */
    char buf[300], host[256];
    memset(host, 'a', 255);
    host[255] = '\0';
    snprintf(buf, sizeof buf, "MOVED 9 %s:6379", host);
    expect_redirect(buf, REDIS_MOVED, 9, host, 6379);
    /* Empty host: Redis 7 sends exactly this (cluster-preferred-endpoint-type
     * unknown-endpoint) for "the node you are connected to"; the caller
     * substitutes that node's address. */
    expect_redirect("MOVED 12182 :17002", REDIS_MOVED, 12182, "", 17002);
    expect_redirect("ASK 5061 :17002", REDIS_ASK, 5061, "", 17002);
}

static void test_redirect_len_bounds(void **state)
{
    (void)state;
    /* Only len bytes count: the reply text need not be NUL-terminated. */
    const char *s = "MOVED 3999 10.0.0.1:6381garbage";
    redis_redirect rd;
    assert_true(redis_parse_redirect(s, strlen("MOVED 3999 10.0.0.1:6381"), &rd));
    assert_int_equal(rd.port, 6381);
    assert_string_equal(rd.host, "10.0.0.1");
    assert_false(redis_parse_redirect(s, strlen(s), &rd));
    /* cut inside the port, the slot and the keyword */
    assert_true(redis_parse_redirect(s, strlen("MOVED 3999 10.0.0.1:63"), &rd));
    assert_int_equal(rd.port, 63);
    assert_false(redis_parse_redirect(s, strlen("MOVED 3999 10.0.0.1:"), &rd));
    assert_false(redis_parse_redirect(s, strlen("MOVED 39"), &rd));
    assert_false(redis_parse_redirect(s, strlen("MOVED "), &rd));
    assert_false(redis_parse_redirect(s, 3, &rd));
    assert_false(redis_parse_redirect(s, 0, &rd));
}

static void test_redirect_bad(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "ERR x",
        "ERR unknown command 'MOVED'",
        "CLUSTERDOWN Hash slot not served", /* verbatim from Redis */
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "MOVED",
        "MOVED ",
        "ASK",
        "ASK ",
        "moved 1 h:1",
        "ASKING 1 h:1",
        "MOVED1 h:1",
        "MOVED 1 h",           /* no port */
        "MOVED 1 h:",          /* empty port */
        "MOVED 1 h:0",         /* port 0 */
        "MOVED 1 h:65536",     /* port out of range */
        "MOVED 1 h:99999999999999999999999",
        "MOVED 1 h:-1",
        "MOVED 1 h:+1",
        "MOVED 1 h: 1",
        "MOVED 16384 h:1",     /* slot out of range */
        "MOVED 99999999999999999999 h:1",
        "MOVED -1 h:1",
        "MOVED x h:1",
        "MOVED  1 h:1",        /* two spaces */
        "MOVED 1  h:1",        /* host would start with a space */
        "MOVED 1h:1",
        "MOVED 1",
        "MOVED 1 ",
        "MOVED 1 h:7000 ",     /* trailing garbage */
        "MOVED 1 h:7000x",
        "MOVED 1 h:7000\r\n",
        "MOVED 1 h:7000:",
        "MOVED 1 a b:7000",    /* space inside the host */
        /* "?": Redis 7 with cluster-preferred-endpoint-type hostname and
         * no hostname set: no endpoint to follow */
        "MOVED 12182 ?:17002",
        "ASK 5061 ?:17002",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        redis_redirect rd;
        memset(&rd, 0x5a, sizeof rd);
        if (redis_parse_redirect(bad[i], strlen(bad[i]), &rd))
            fail_msg("\"%s\" accepted (host \"%s\" port %d)", bad[i], rd.host, rd.port);
        /* a rejected reply leaves nothing half-filled behind */
        assert_int_equal(rd.kind, REDIS_REDIRECT_NONE);
        assert_int_equal(rd.port, 0);
        assert_string_equal(rd.host, "");
    }
}

static void test_redirect_bad_bytes(void **state)
{
    (void)state;
    redis_redirect rd;
    /* a NUL inside the host */
    static const char nul[] = "MOVED 1 a\0b:7000";
    assert_false(redis_parse_redirect(nul, sizeof nul - 1, &rd));
    /* a host one byte too long for host[256] */
    char buf[300], host[257];
    memset(host, 'a', 256);
    host[256] = '\0';
    snprintf(buf, sizeof buf, "MOVED 9 %s:6379", host);
    assert_false(redis_parse_redirect(buf, strlen(buf), &rd));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc16_check_value),
        cmocka_unit_test(test_crc16_high_bytes),
        cmocka_unit_test(test_key_slot_known),
        cmocka_unit_test(test_key_slot_tag_rules),
        cmocka_unit_test(test_key_slot_range),
        cmocka_unit_test(test_redirect_good),
        cmocka_unit_test(test_redirect_len_bounds),
        cmocka_unit_test(test_redirect_bad),
        cmocka_unit_test(test_redirect_bad_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
