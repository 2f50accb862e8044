/* Unit tests for admit_key (src/admit.c): how a peer address becomes the key
 * --max-conns-per-ip counts, IPv6 per --ipv6-prefix network. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>

#include "admit.h"

static ip_key key6(const char *addr, int prefix)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    a->sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, addr, &a->sin6_addr), 1);
    ip_key k;
    admit_key(&ss, prefix, &k);
    return k;
}

static ip_key key4(const char *addr)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    a->sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, addr, &a->sin_addr), 1);
    ip_key k;
    admit_key(&ss, 64, &k);
    return k;
}

static bool same(ip_key a, ip_key b) { return memcmp(&a, &b, sizeof a) == 0; }

static void test_ipv6_per_prefix(void **state)
{
    (void)state;
    /* one /64: one key at 64, two at 128 */
    assert_true(same(key6("2001:db8:1:2::1", 64), key6("2001:db8:1:2:ffff::9", 64)));
    assert_false(same(key6("2001:db8:1:2::1", 128), key6("2001:db8:1:2:ffff::9", 128)));
    assert_false(same(key6("2001:db8:1:2::1", 64), key6("2001:db8:1:3::1", 64)));
    /* a prefix that is not a whole byte: /60 keeps 4 bits of the 8th byte */
    assert_true(same(key6("2001:db8:1:20::1", 60), key6("2001:db8:1:2f::1", 60)));
    assert_false(same(key6("2001:db8:1:20::1", 60), key6("2001:db8:1:30::1", 60)));
    /* /0: every IPv6 client is one */
    assert_true(same(key6("2001:db8::1", 0), key6("fe80::1", 0)));
    /* never the same as an IPv4 client */
    assert_false(same(key6("::", 0), key4("0.0.0.0")));
}

static void test_ipv4_and_mapped(void **state)
{
    (void)state;
    assert_true(same(key4("192.0.2.7"), key4("192.0.2.7")));
    assert_false(same(key4("192.0.2.7"), key4("192.0.2.8")));
    /* an IPv4-mapped IPv6 peer is that IPv4 client, never a /64 of them */
    assert_true(same(key6("::ffff:192.0.2.7", 64), key4("192.0.2.7")));
    assert_false(same(key6("::ffff:192.0.2.7", 64), key6("::ffff:192.0.2.8", 64)));
}

static void test_acquire_release(void **state)
{
    (void)state;
    admit_init();
    ip_key a = key6("2001:db8:9::1", 64), b = key6("2001:db8:9::2", 64);
    assert_true(admit_ip_acquire(&a, 2));
    assert_true(admit_ip_acquire(&b, 2));
    assert_false(admit_ip_acquire(&a, 2)); /* the same /64: the third is refused */
    admit_ip_release(&b);
    assert_true(admit_ip_acquire(&a, 2));
    admit_ip_release(&a);
    admit_ip_release(&a);
    admit_destroy();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv6_per_prefix),
        cmocka_unit_test(test_ipv4_and_mapped),
        cmocka_unit_test(test_acquire_release),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
