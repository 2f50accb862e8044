/* Unit tests for the query grammar of the HTTP routes (src/query.c): comma
 * lists, groups=, group=, since= lists, epoch=, format= and 0/1 flags. The
 * refusal texts are part of the HTTP interface, so they are pinned here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "query.h"

#define BAD_NAME "invalid group name (1-128 bytes of A-Z a-z 0-9 . _ : -)"
#define BAD_SINCE "since entries must be group:offset for requested groups"
#define BAD_RESUME "malformed since or epoch parameter"

/* The entries of a list joined with '|', or "-" when it has none. */
static const char *entries(const char *list, long n)
{
    static char out[256];
    size_t k = 0, count = 0;
    query_list it = query_list_start(list, n);
    const char *e;
    size_t len;
    while (query_list_next(&it, &e, &len)) {
        assert_true(k + len + 1 < sizeof out);
        if (count++)
            out[k++] = '|';
        memcpy(out + k, e, len);
        k += len;
        /* An entry lies inside the list and never holds a separator. */
        assert_true(e >= list && e + len <= list + n);
        assert_null(memchr(e, ',', len));
    }
    out[k] = '\0';
    return count ? out : "-";
}

static long L(const char *s)
{
    return (long)strlen(s);
}

static void test_list_entries(void **state)
{
    (void)state;
    assert_string_equal(entries("a,b", 3), "a|b");
    assert_string_equal(entries("a", 1), "a");
    /* Empty entries count, wherever they are. */
    assert_string_equal(entries("", 0), "");
    assert_string_equal(entries("a,", 2), "a|");
    assert_string_equal(entries(",a", 2), "|a");
    assert_string_equal(entries("a,,b", 4), "a||b");
    assert_string_equal(entries(",", 1), "|");
    /* Absent or malformed: no entries at all. */
    assert_string_equal(entries("x", -1), "-");
    assert_string_equal(entries("x", -2), "-");
    /* The length rules, not a NUL: a decoded %00 is an ordinary byte and
     * the list stops at n even inside a longer buffer. */
    assert_string_equal(entries("a,b,c", 3), "a|b");
    query_list it = query_list_start("a\0b", 3);
    const char *e;
    size_t len;
    assert_true(query_list_next(&it, &e, &len));
    assert_int_equal(len, 3);
    assert_false(query_list_next(&it, &e, &len));
    assert_false(query_list_next(&it, &e, &len)); /* stays done */
}

static void test_groups_check(void **state)
{
    (void)state;
    assert_null(query_groups_check("a,b", 3, 64));
    assert_null(query_groups_check("x", -1, 64)); /* absent: no groups, fine */
    assert_string_equal(query_groups_check("x", -2, 64), "malformed groups parameter");
    /* Group names may hold ':' '.' '_' '-'. */
    assert_null(query_groups_check("a:b,c.d,e_f,g-h,AZ09", L("a:b,c.d,e_f,g-h,AZ09"), 64));
    /* Empty entries are no names: empty list, trailing, leading, double comma. */
    assert_string_equal(query_groups_check("", 0, 64), BAD_NAME);
    assert_string_equal(query_groups_check("a,", 2, 64), BAD_NAME);
    assert_string_equal(query_groups_check(",a", 2, 64), BAD_NAME);
    assert_string_equal(query_groups_check("a,,b", 4, 64), BAD_NAME);
    /* Bytes outside the name alphabet, a decoded NUL included. */
    assert_string_equal(query_groups_check("a b", 3, 64), BAD_NAME);
    assert_string_equal(query_groups_check("a/b", 3, 64), BAD_NAME);
    assert_string_equal(query_groups_check("a\0", 2, 64), BAD_NAME);
    assert_string_equal(query_groups_check("\xc3\xa9", 2, 64), BAD_NAME);
    /* 128 bytes is the longest name. */
    char longest[130];
    memset(longest, 'n', sizeof longest);
    assert_null(query_groups_check(longest, 128, 64));
    assert_string_equal(query_groups_check(longest, 129, 64), BAD_NAME);
}

static void test_groups_count(void **state)
{
    (void)state;
    assert_null(query_groups_check("a,b", 3, 2));
    assert_string_equal(query_groups_check("a,b,c", 5, 2), "too many groups");
    /* Duplicates count toward the limit. */
    assert_null(query_groups_check("a,a", 3, 2));
    assert_string_equal(query_groups_check("a,a,a", 5, 2), "too many groups");
    /* In order, each entry's name first: a bad name within the limit says
     * so, one past it is "too many". */
    assert_string_equal(query_groups_check("a,b,!", 5, 2), BAD_NAME);
    assert_string_equal(query_groups_check("a,b,c,!", 7, 2), "too many groups");
    assert_string_equal(query_groups_check("!,b,c", 5, 1), BAD_NAME);
    /* A limit of 1. */
    assert_null(query_groups_check("a", 1, 1));
    assert_string_equal(query_groups_check("a,b", 3, 1), "too many groups");
}

static void test_group_check(void **state)
{
    (void)state;
    assert_null(query_group_check("x", -1)); /* absent: everyone */
    assert_null(query_group_check("a:b", 3));
    assert_string_equal(query_group_check("x", -2), BAD_NAME);
    assert_string_equal(query_group_check("", 0), BAD_NAME);
    assert_string_equal(query_group_check("a,b", 3), BAD_NAME); /* one group, not a list */
}

static void test_list_has(void **state)
{
    (void)state;
    assert_true(query_list_has("a,bc,d", 6, "bc", 2));
    assert_true(query_list_has("a,bc,d", 6, "a", 1));
    assert_true(query_list_has("a,bc,d", 6, "d", 1));
    assert_false(query_list_has("a,bc,d", 6, "b", 1)); /* a prefix is not the entry */
    assert_false(query_list_has("a,bc,d", 6, "bcd", 3));
    assert_false(query_list_has("a,bc,d", 6, "a,bc", 4));
    assert_true(query_list_has("a,", 2, "", 0)); /* the empty last entry */
    assert_false(query_list_has("a", 1, "", 0));
    assert_false(query_list_has("a", -1, "a", 1));
    assert_true(query_list_has("x:y,z", 5, "x:y", 3));
}

static void test_list_distinct(void **state)
{
    (void)state;
    const char *names[4];
    size_t lens[4];
    const char *list = "b,a,b,c,a";
    assert_int_equal(query_list_distinct(list, L(list), names, lens, 4), 3);
    assert_ptr_equal(names[0], list);
    assert_ptr_equal(names[1], list + 2);
    assert_ptr_equal(names[2], list + 6);
    assert_true(lens[0] == 1 && lens[1] == 1 && lens[2] == 1);
    /* At most max, the first ones seen. */
    assert_int_equal(query_list_distinct(list, L(list), names, lens, 2), 2);
    assert_ptr_equal(names[1], list + 2);
    assert_int_equal(query_list_distinct("a,ab,a", 6, names, lens, 4), 2);
    assert_int_equal(lens[1], 2);
    assert_int_equal(query_list_distinct("a", -1, names, lens, 4), 0);
    assert_int_equal(query_list_distinct("a", 1, names, lens, 0), 0);
}

static void test_since_entry(void **state)
{
    (void)state;
    size_t nl = 99;
    uint64_t off = 99;
    assert_true(query_since_entry("a:5", 3, &nl, &off));
    assert_int_equal(nl, 1);
    assert_int_equal(off, 5);
    /* The last ':' splits: names may hold ':'. */
    assert_true(query_since_entry("a:b:7", 5, &nl, &off));
    assert_int_equal(nl, 3);
    assert_int_equal(off, 7);
    assert_true(query_since_entry("a::5", 4, &nl, &off));
    assert_int_equal(nl, 2);
    assert_true(query_since_entry("a:007", 5, &nl, &off));
    assert_int_equal(off, 7);
    assert_true(query_since_entry("a:0", 3, &nl, &off));
    assert_int_equal(off, 0);
    assert_true(query_since_entry("a:18446744073709551615", 22, &nl, &off));
    assert_true(off == UINT64_MAX);
    assert_true(query_since_entry("a:000018446744073709551615", 26, &nl, &off));
    assert_true(off == UINT64_MAX);
    /* Refused: nothing is written then. */
    nl = 99;
    off = 99;
    assert_false(query_since_entry("a", 1, &nl, &off));          /* no offset */
    assert_false(query_since_entry("a:", 2, &nl, &off));         /* empty offset */
    assert_false(query_since_entry(":5", 2, &nl, &off));         /* empty name */
    assert_false(query_since_entry("", 0, &nl, &off));
    assert_false(query_since_entry(":", 1, &nl, &off));
    assert_false(query_since_entry("a:5:", 4, &nl, &off));       /* the last ':' ends it */
    assert_false(query_since_entry("a:5x", 4, &nl, &off));
    assert_false(query_since_entry("a:-1", 4, &nl, &off));
    assert_false(query_since_entry("a:+1", 4, &nl, &off));
    assert_false(query_since_entry("a: 1", 4, &nl, &off));
    assert_false(query_since_entry("a:0x10", 6, &nl, &off));
    assert_false(query_since_entry("a:1\0", 4, &nl, &off));
    assert_false(query_since_entry("a:18446744073709551616", 22, &nl, &off)); /* 2^64 */
    assert_false(query_since_entry("a:99999999999999999999", 22, &nl, &off));
    assert_int_equal(nl, 99);
    assert_int_equal(off, 99);
}

static query_since_result find(const char *since, const char *g, uint64_t *off)
{
    *off = 424242;
    return query_since_find(since, L(since), g, strlen(g), off);
}

static void test_since_find(void **state)
{
    (void)state;
    uint64_t off;
    assert_int_equal(find("a:5,b:7", "b", &off), QUERY_SINCE_FOUND);
    assert_int_equal(off, 7);
    assert_int_equal(find("a:5,b:7", "a", &off), QUERY_SINCE_FOUND);
    assert_int_equal(off, 5);
    assert_int_equal(find("a:5,b:7", "c", &off), QUERY_SINCE_NONE);
    assert_int_equal(off, 424242); /* untouched */
    assert_int_equal(find("ab:5", "a", &off), QUERY_SINCE_NONE);
    /* ':' in names. */
    assert_int_equal(find("x:y:3,x:4", "x:y", &off), QUERY_SINCE_FOUND);
    assert_int_equal(off, 3);
    assert_int_equal(find("x:y:3,x:4", "x", &off), QUERY_SINCE_FOUND);
    assert_int_equal(off, 4);
    /* A duplicate: the first entry wins. */
    assert_int_equal(find("a:1,a:2", "a", &off), QUERY_SINCE_FOUND);
    assert_int_equal(off, 1);
    /* A malformed entry before the match, or when nothing matches. */
    assert_int_equal(find("a,b:7", "b", &off), QUERY_SINCE_BAD);
    assert_int_equal(find("a:x,b:7", "b", &off), QUERY_SINCE_BAD);
    assert_int_equal(find("b:7,", "c", &off), QUERY_SINCE_BAD);
    assert_int_equal(find("", "a", &off), QUERY_SINCE_BAD);
    /* After the match nothing is read (query_resume_check reads it all). */
    assert_int_equal(find("b:7,", "b", &off), QUERY_SINCE_FOUND);
    assert_int_equal(off, 7);
    /* No since at all. */
    assert_int_equal(query_since_find("a:1", -1, "a", 1, &off), QUERY_SINCE_NONE);
    assert_int_equal(query_since_find("a:1", -2, "a", 1, &off), QUERY_SINCE_NONE);
    /* An empty name never matches: no entry has one. */
    assert_int_equal(find("a:1", "", &off), QUERY_SINCE_NONE);
}

static const char *resume(const char *since, const char *list)
{
    return query_resume_check(since, since ? L(since) : -1, -1, list, list ? L(list) : -1);
}

static void test_resume_check(void **state)
{
    (void)state;
    assert_null(resume(NULL, "a,b"));
    assert_null(resume(NULL, NULL));
    assert_null(resume("a:1", "a,b"));
    assert_null(resume("b:2,a:1", "a,b"));
    assert_null(resume("a:1,a:2", "a"));           /* duplicates are allowed */
    assert_null(resume("x:y:0", "x:y"));
    assert_null(resume("a:18446744073709551615", "a"));
    /* Unreadable since or epoch. */
    assert_string_equal(query_resume_check("", -2, -1, "a", 1), BAD_RESUME);
    assert_string_equal(query_resume_check("", -1, -2, "a", 1), BAD_RESUME);
    assert_string_equal(query_resume_check("a:1", 3, -2, "a", 1), BAD_RESUME);
    /* Entries that are not group:offset for a requested group. */
    assert_string_equal(resume("a:1", NULL), BAD_SINCE);     /* no groups= */
    assert_string_equal(resume("c:1", "a,b"), BAD_SINCE);    /* not requested */
    assert_string_equal(resume("a:1,c:1", "a,b"), BAD_SINCE);
    assert_string_equal(resume("x:1", "x:y"), BAD_SINCE);    /* "x" is not "x:y" */
    assert_string_equal(resume("", "a"), BAD_SINCE);
    assert_string_equal(resume("a", "a"), BAD_SINCE);        /* missing offset */
    assert_string_equal(resume("a:", "a"), BAD_SINCE);
    assert_string_equal(resume(":1", "a"), BAD_SINCE);
    assert_string_equal(resume("a:1,", "a"), BAD_SINCE);     /* trailing comma */
    assert_string_equal(resume(",a:1", "a"), BAD_SINCE);
    assert_string_equal(resume("a:1x", "a"), BAD_SINCE);     /* not numeric */
    assert_string_equal(resume("a:-1", "a"), BAD_SINCE);
    assert_string_equal(resume("a:18446744073709551616", "a"), BAD_SINCE); /* overflow */
    /* A malformed entry after a good one is still found. */
    assert_string_equal(resume("a:1,b", "a,b"), BAD_SINCE);
    /* An empty group entry cannot be named either (the name is non-empty). */
    assert_string_equal(resume(":1", "a,"), BAD_SINCE);
}

static void test_epoch_is(void **state)
{
    (void)state;
    assert_true(query_epoch_is("E1", 2, "E1"));
    assert_false(query_epoch_is("E1", -1, "E1")); /* absent */
    assert_false(query_epoch_is("E1", -2, "E1"));
    assert_false(query_epoch_is("E", 1, "E1"));
    assert_false(query_epoch_is("E12", 3, "E1"));
    assert_false(query_epoch_is("E1\0x", 4, "E1")); /* a decoded NUL is no end */
    assert_false(query_epoch_is("e1", 2, "E1"));
    assert_true(query_epoch_is("", 0, ""));
}

static void test_format(void **state)
{
    (void)state;
    assert_int_equal(query_format_parse("", -1), QUERY_FORMAT_RAW);
    assert_int_equal(query_format_parse("raw", 3), QUERY_FORMAT_RAW);
    assert_int_equal(query_format_parse("json", 4), QUERY_FORMAT_JSON);
    assert_int_equal(query_format_parse("msgpack", 7), QUERY_FORMAT_MSGPACK);
    assert_int_equal(query_format_parse("", 0), QUERY_FORMAT_BAD);
    assert_int_equal(query_format_parse("JSON", 4), QUERY_FORMAT_BAD);
    assert_int_equal(query_format_parse("json\0x", 6), QUERY_FORMAT_BAD);
    assert_int_equal(query_format_parse("jso", 3), QUERY_FORMAT_BAD);
    assert_int_equal(query_format_parse("raw ", 4), QUERY_FORMAT_BAD);
    assert_int_equal(query_format_parse("json", -2), QUERY_FORMAT_BAD);
}

static void test_flag(void **state)
{
    (void)state;
    assert_int_equal(query_flag("", -1), 0);
    assert_int_equal(query_flag("0", 1), 0);
    assert_int_equal(query_flag("1", 1), 1);
    assert_int_equal(query_flag("", 0), -1);
    assert_int_equal(query_flag("2", 1), -1);
    assert_int_equal(query_flag("01", 2), -1);
    assert_int_equal(query_flag("true", 4), -1);
    assert_int_equal(query_flag("1", -2), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_entries), cmocka_unit_test(test_groups_check),
        cmocka_unit_test(test_groups_count), cmocka_unit_test(test_group_check),
        cmocka_unit_test(test_list_has),     cmocka_unit_test(test_list_distinct),
        cmocka_unit_test(test_since_entry),  cmocka_unit_test(test_since_find),
        cmocka_unit_test(test_resume_check), cmocka_unit_test(test_epoch_is),
        cmocka_unit_test(test_format),       cmocka_unit_test(test_flag),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
