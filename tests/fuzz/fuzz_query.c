/* libFuzzer target: the query grammar of the HTTP routes (src/query.h).
 *
 * Byte 0 picks max_groups (bits 0-2: 1-8) and, for the group list and the
 * since list, whether each is passed as read, absent (-1) or malformed (-2)
 * (bits 3-4, 5-6). The rest is split at '\n' into a group list, a since
 * list, a name and a value, each an exact-size heap copy (ASan sees any read
 * past one). Every query_ function runs on them and is checked against a
 * reference written here independently (memchr/memrchr splitting, offsets
 * compared as decimal text):
 *  - a list's entries tile it exactly: in order, separated by single commas,
 *    none holding a comma, none outside it; an absent list has none;
 *  - groups=/group= checks give exactly the reference's verdict and text;
 *  - every entry is found by query_list_has; the distinct entries are
 *    distinct, first occurrences, in order, and cover the list when room;
 *  - a since entry accepted has name:digits split at the last ':' and the
 *    offset the digits say; one refused breaks a rule;
 *  - since lookups (of the name and of every entry's name) and the since /
 *    epoch check agree with the reference;
 *  - format=, 0/1 flags and epoch comparison agree with plain comparisons. */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query.h"

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "fuzz_query: invariant failed: %s\n", #cond);   \
            abort();                                                         \
        }                                                                    \
    } while (0)

#define BAD_NAME "invalid group name (1-128 bytes of A-Z a-z 0-9 . _ : -)"
#define MAX_ENTRIES 16384

typedef struct ref_entry {
    const char *p;
    size_t n;
} ref_entry;

/* Splits with memchr; returns the entry count (0 for an absent list). */
static size_t ref_split(const char *s, long n, ref_entry *out)
{
    if (n < 0)
        return 0;
    size_t k = 0;
    const char *p = s, *end = s + n;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        CHECK(k < MAX_ENTRIES);
        out[k].p = p;
        out[k++].n = (size_t)((comma ? comma : end) - p);
        if (!comma)
            return k;
        p = comma + 1;
    }
}

static bool ref_name_ok(const char *p, size_t n)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-";
    if (n < 1 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] == '\0' || !strchr(alphabet, p[i]))
            return false;
    return true;
}

/* name:digits at the last ':'; the offset is returned as its digits without
 * leading zeros ("0" for zero), compared as text with what query_ computes. */
static bool ref_since_entry(const char *p, size_t n, size_t *name_len, char digits[32])
{
    const char *colon = memrchr(p, ':', n);
    if (!colon || colon == p || colon + 1 == p + n)
        return false;
    const char *d = colon + 1, *end = p + n;
    for (const char *q = d; q < end; q++)
        if (*q < '0' || *q > '9')
            return false;
    while (d + 1 < end && *d == '0')
        d++;
    size_t dl = (size_t)(end - d);
    if (dl > 20 || (dl == 20 && memcmp(d, "18446744073709551615", 20) > 0))
        return false;
    memcpy(digits, d, dl);
    digits[dl] = '\0';
    *name_len = (size_t)(colon - p);
    return true;
}

static bool same_offset(uint64_t off, const char *digits)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, off);
    return strcmp(buf, digits) == 0;
}

static ref_entry list_e[MAX_ENTRIES], since_e[MAX_ENTRIES];

static bool ref_has(size_t k, const char *name, size_t len)
{
    for (size_t i = 0; i < k; i++)
        if (list_e[i].n == len && memcmp(list_e[i].p, name, len) == 0)
            return true;
    return false;
}

static void check_list(const char *s, long n, const ref_entry *ref, size_t k)
{
    query_list it = query_list_start(s, n);
    const char *e;
    size_t len, i = 0;
    const char *next = s;
    while (query_list_next(&it, &e, &len)) {
        CHECK(i < k);
        CHECK(e == next && e == ref[i].p && len == ref[i].n);
        CHECK(e + len <= s + n);
        CHECK(!memchr(e, ',', len));
        if (e + len < s + n)
            CHECK(e[len] == ',');
        next = e + len + 1;
        i++;
    }
    CHECK(i == k);
    CHECK(!query_list_next(&it, &e, &len));
}

/* The whole check of groups= in one pass over the reference entries. */
static const char *ref_groups_check(long n, size_t k, int max)
{
    if (n == -2)
        return "malformed groups parameter";
    for (size_t i = 0; i < k; i++) {
        if (!ref_name_ok(list_e[i].p, list_e[i].n))
            return BAD_NAME;
        if ((int)i + 1 > max)
            return "too many groups";
    }
    return NULL;
}

static bool same_reason(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static void check_distinct(const char *s, long n, size_t k)
{
    const char *names[64];
    size_t lens[64];
    size_t max = 1 + (size_t)(n > 0 ? (unsigned char)s[0] : 0) % 64;
    size_t d = query_list_distinct(s, n, names, lens, max);
    CHECK(d <= max && d <= k);
    size_t j = 0; /* names[] are the first occurrences, in list order */
    for (size_t i = 0; i < k && j < d; i++) {
        bool seen = false;
        for (size_t m = 0; m < j && !seen; m++)
            seen = lens[m] == list_e[i].n && memcmp(names[m], list_e[i].p, lens[m]) == 0;
        if (seen)
            continue;
        CHECK(names[j] == list_e[i].p && lens[j] == list_e[i].n);
        j++;
    }
    CHECK(j == d);
    if (d < max) /* room left: every entry is one of them */
        for (size_t i = 0; i < k; i++) {
            bool found = false;
            for (size_t m = 0; m < d && !found; m++)
                found = lens[m] == list_e[i].n && memcmp(names[m], list_e[i].p, lens[m]) == 0;
            CHECK(found);
        }
}

static query_since_result ref_find(size_t ks, const char *g, size_t glen, char digits[32])
{
    for (size_t i = 0; i < ks; i++) {
        size_t nl;
        if (!ref_since_entry(since_e[i].p, since_e[i].n, &nl, digits))
            return QUERY_SINCE_BAD;
        if (nl == glen && memcmp(since_e[i].p, g, glen) == 0)
            return QUERY_SINCE_FOUND;
    }
    return QUERY_SINCE_NONE;
}

static void check_find(const char *since, long sl, size_t ks, const char *g, size_t glen)
{
    char digits[32];
    uint64_t off = 0x5eed;
    query_since_result want = ref_find(ks, g, glen, digits);
    query_since_result got = query_since_find(since, sl, g, glen, &off);
    CHECK(got == want);
    if (got == QUERY_SINCE_FOUND)
        CHECK(same_offset(off, digits));
    else
        CHECK(off == 0x5eed);
}

static char *copy(const uint8_t *p, size_t n)
{
    char *c = malloc(n ? n : 1);
    if (n)
        memcpy(c, p, n);
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > MAX_ENTRIES - 1) /* every byte a comma still fits the tables */
        return 0;
    uint8_t sel = data[0];
    int max_groups = 1 + (sel & 7);
    static const long modes[4] = {0, -1, -2, 0};
    data++;
    size--;

    /* Fields: list, since, name, value. */
    const uint8_t *f[4] = {data, data + size, data + size, data + size};
    size_t fl[4] = {size, 0, 0, 0};
    for (int i = 0; i < 3; i++) {
        const uint8_t *nl = memchr(f[i], '\n', fl[i]);
        if (!nl)
            break;
        f[i + 1] = nl + 1;
        fl[i + 1] = (size_t)(f[i] + fl[i] - (nl + 1));
        fl[i] = (size_t)(nl - f[i]);
    }
    char *list = copy(f[0], fl[0]), *since = copy(f[1], fl[1]), *name = copy(f[2], fl[2]);
    char *value = copy(f[3], fl[3]);
    long ln = modes[(sel >> 3) & 3] ? modes[(sel >> 3) & 3] : (long)fl[0];
    long sl = modes[(sel >> 5) & 3] ? modes[(sel >> 5) & 3] : (long)fl[1];
    long el = sel & 0x80 ? -2 : (long)fl[3];
    long nn = (long)fl[2], vn = (long)fl[3];

    /* Lists. */
    size_t k = ref_split(list, ln, list_e);
    size_t ks = ref_split(since, sl, since_e);
    check_list(list, ln, list_e, k);
    check_list(since, sl, since_e, ks);
    CHECK(same_reason(query_groups_check(list, ln, max_groups), ref_groups_check(ln, k, max_groups)));
    CHECK(same_reason(query_group_check(name, nn), ref_name_ok(name, fl[2]) ? NULL : BAD_NAME));
    CHECK(query_group_check(name, -1) == NULL);
    CHECK(same_reason(query_group_check(name, -2), BAD_NAME));
    for (size_t i = 0; i < k; i++)
        CHECK(query_list_has(list, ln, list_e[i].p, list_e[i].n));
    CHECK(query_list_has(list, ln, name, fl[2]) == ref_has(k, name, fl[2]));
    check_distinct(list, ln, k);

    /* since entries, lookups and the whole check. */
    bool since_bad = false;
    for (size_t i = 0; i < ks; i++) {
        size_t nl, rnl;
        uint64_t off = 0;
        char digits[32];
        bool ok = query_since_entry(since_e[i].p, since_e[i].n, &nl, &off);
        CHECK(ok == ref_since_entry(since_e[i].p, since_e[i].n, &rnl, digits));
        if (ok) {
            CHECK(nl == rnl && same_offset(off, digits));
            check_find(since, sl, ks, since_e[i].p, nl);
        }
        if (!ok || !ref_has(k, since_e[i].p, rnl))
            since_bad = true;
    }
    const char *want = sl == -2 || el == -2 ? "malformed since or epoch parameter"
                       : since_bad ? "since entries must be group:offset for requested groups"
                                   : NULL;
    CHECK(same_reason(query_resume_check(since, sl, el, list, ln), want));
    check_find(since, sl, ks, name, fl[2]);
    for (size_t i = 0; i < k && i < 16; i++)
        check_find(since, sl, ks, list_e[i].p, list_e[i].n);

    /* format=, flags, epoch. */
    query_format fmt = query_format_parse(value, vn);
    query_format want_fmt = vn == 3 && !memcmp(value, "raw", 3)       ? QUERY_FORMAT_RAW
                            : vn == 4 && !memcmp(value, "json", 4)    ? QUERY_FORMAT_JSON
                            : vn == 7 && !memcmp(value, "msgpack", 7) ? QUERY_FORMAT_MSGPACK
                                                                      : QUERY_FORMAT_BAD;
    CHECK(fmt == want_fmt);
    CHECK(query_format_parse(value, -1) == QUERY_FORMAT_RAW);
    CHECK(query_format_parse(value, -2) == QUERY_FORMAT_BAD);
    int flag = query_flag(value, vn);
    CHECK(flag == (vn == 1 && value[0] == '0' ? 0 : vn == 1 && value[0] == '1' ? 1 : -1));
    CHECK(query_flag(value, -1) == 0);
    char *cur = malloc(fl[2] + 1);
    memcpy(cur, name, fl[2]);
    cur[fl[2]] = '\0';
    size_t curlen = strlen(cur);
    CHECK(query_epoch_is(value, vn, cur) == (fl[3] == curlen && memcmp(value, cur, curlen) == 0));
    CHECK(!query_epoch_is(value, -1, cur) && !query_epoch_is(value, -2, cur));

    free(cur);
    free(list);
    free(since);
    free(name);
    free(value);
    return 0;
}
