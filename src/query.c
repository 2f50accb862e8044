#include "query.h"

#include <string.h>

#include "names.h"

query_list query_list_start(const char *list, long n)
{
    return (query_list){list, n < 0 ? 0 : (size_t)n, 0, n < 0};
}

bool query_list_next(query_list *it, const char **entry, size_t *len)
{
    if (it->done)
        return false;
    size_t s = it->pos, i = s;
    while (i < it->n && it->p[i] != ',')
        i++;
    *entry = it->p + s;
    *len = i - s;
    /* A list ending in ',' has an empty last entry: the end is reached only
     * by running into it, not by a separator before it. */
    if (i == it->n)
        it->done = true;
    else
        it->pos = i + 1;
    return true;
}

const char *query_groups_check(const char *list, long n, int max_groups)
{
    if (n < -1)
        return "malformed groups parameter";
    query_list it = query_list_start(list, n);
    const char *e;
    size_t len;
    int count = 0;
    while (query_list_next(&it, &e, &len)) {
        if (!group_name_valid(e, len))
            return "invalid group name (1-128 bytes of A-Z a-z 0-9 . _ : -)";
        if (++count > max_groups)
            return "too many groups";
    }
    return NULL;
}

const char *query_group_check(const char *name, long n)
{
    if (n == -1 || (n >= 0 && group_name_valid(name, (size_t)n)))
        return NULL;
    return "invalid group name (1-128 bytes of A-Z a-z 0-9 . _ : -)";
}

bool query_list_has(const char *list, long n, const char *name, size_t len)
{
    query_list it = query_list_start(list, n);
    const char *e;
    size_t el;
    while (query_list_next(&it, &e, &el))
        if (el == len && memcmp(e, name, len) == 0)
            return true;
    return false;
}

size_t query_list_distinct(const char *list, long n, const char **names, size_t *lens,
                           size_t max)
{
    query_list it = query_list_start(list, n);
    const char *e;
    size_t len, k = 0;
    while (k < max && query_list_next(&it, &e, &len)) {
        bool dup = false;
        for (size_t j = 0; j < k && !dup; j++)
            dup = lens[j] == len && memcmp(names[j], e, len) == 0;
        if (!dup) {
            names[k] = e;
            lens[k++] = len;
        }
    }
    return k;
}

bool query_since_entry(const char *e, size_t len, size_t *name_len, uint64_t *off)
{
    const char *colon = NULL;
    for (size_t k = 0; k < len; k++)
        if (e[k] == ':')
            colon = e + k;
    if (!colon || colon == e || colon + 1 == e + len)
        return false;
    uint64_t v = 0;
    for (const char *p = colon + 1; p < e + len; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *name_len = (size_t)(colon - e);
    *off = v;
    return true;
}

query_since_result query_since_find(const char *since, long n, const char *g, size_t glen,
                                    uint64_t *off)
{
    query_list it = query_list_start(since, n);
    const char *e;
    size_t len, nl;
    uint64_t v;
    while (query_list_next(&it, &e, &len)) {
        if (!query_since_entry(e, len, &nl, &v))
            return QUERY_SINCE_BAD;
        if (nl == glen && memcmp(e, g, glen) == 0) {
            *off = v;
            return QUERY_SINCE_FOUND;
        }
    }
    return QUERY_SINCE_NONE;
}

const char *query_resume_check(const char *since, long sl, long el, const char *list, long n)
{
    if (sl < -1 || el < -1)
        return "malformed since or epoch parameter";
    query_list it = query_list_start(since, sl);
    const char *e;
    size_t len, nl;
    uint64_t v;
    while (query_list_next(&it, &e, &len))
        if (!query_since_entry(e, len, &nl, &v) || !query_list_has(list, n, e, nl))
            return "since entries must be group:offset for requested groups";
    return NULL;
}

bool query_epoch_is(const char *epoch, long el, const char *cur)
{
    return el >= 0 && (size_t)el == strlen(cur) && memcmp(epoch, cur, (size_t)el) == 0;
}

query_format query_format_parse(const char *v, long n)
{
    /* Decoded lengths are compared too: "json%00x" decodes to a string
     * strcmp would call "json". */
    if (n == -1 || (n == 3 && memcmp(v, "raw", 3) == 0))
        return QUERY_FORMAT_RAW;
    if (n == 4 && memcmp(v, "json", 4) == 0)
        return QUERY_FORMAT_JSON;
    if (n == 7 && memcmp(v, "msgpack", 7) == 0)
        return QUERY_FORMAT_MSGPACK;
    return QUERY_FORMAT_BAD;
}

int query_flag(const char *v, long n)
{
    if (n == -1 || (n == 1 && v[0] == '0'))
        return 0;
    return n == 1 && v[0] == '1' ? 1 : -1;
}
