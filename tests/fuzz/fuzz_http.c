/* libFuzzer target: the HTTP/1.1 request-head parser (src/http.h).
 *
 * Parses the input with max_head 8192 from an exact-size heap copy (ASan
 * catches any read past it) and checks:
 *  - the result is a head size <= input and <= max_head, 0 (only while under
 *    the limit), or -400/-431/-501/-505;
 *  - every returned string lies inside the head; path/query split target at
 *    the first '?'; header names are non-empty tokens; values are trimmed and
 *    contain no CR/LF;
 *  - re-parsing exactly the head gives the same size, one byte less is
 *    incomplete, and a max_head one below the head size gives -431;
 *  - http_header_get finds every header by name in any case;
 *  - http_has_token and http_parse_content_length agree with simple
 *    reference implementations;
 *  - http_query_get on the query (and on the raw input) returns -1, -2 or a
 *    length that fits, NUL-terminated, matching a reference decoder. */
#include <ctype.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

#define MAX_HEAD 8192

#define CHECK(cond, ...)                                                 \
    do {                                                                 \
        if (!(cond)) {                                                   \
            fprintf(stderr, "fuzz_http: invariant failed: %s: ", #cond); \
            fprintf(stderr, __VA_ARGS__);                                \
            fprintf(stderr, "\n");                                       \
            abort();                                                     \
        }                                                                \
    } while (0)

static bool inside(http_str s, const char *lo, const char *hi)
{
    return s.n == 0 || (s.p >= lo && s.p + s.n <= hi);
}

static bool tchar(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool ows(char c) { return c == ' ' || c == '\t'; }

/* Reference: comma-separated list contains token (case-insensitive). */
static bool ref_has_token(http_str v, const char *token)
{
    size_t tl = strlen(token), i = 0;
    while (i <= v.n) {
        size_t s = i;
        while (i < v.n && v.p[i] != ',')
            i++;
        size_t e = i;
        while (s < e && ows(v.p[s]))
            s++;
        while (e > s && ows(v.p[e - 1]))
            e--;
        if (e - s == tl && tl) {
            bool eq = true; /* byte by byte: values may contain NUL */
            for (size_t k = 0; k < tl; k++)
                if (tolower((unsigned char)v.p[s + k]) != tolower((unsigned char)token[k]))
                    eq = false;
            if (eq)
                return true;
        }
        i++;
    }
    return false;
}

static int hexv(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Reference query lookup: first item whose name is exactly key. */
static long ref_query_get(http_str q, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key), i = 0;
    while (i < q.n) {
        size_t s = i;
        while (i < q.n && q.p[i] != '&')
            i++;
        size_t e = i++;
        size_t eq = s;
        while (eq < e && q.p[eq] != '=')
            eq++;
        if (eq - s != kl || memcmp(q.p + s, key, kl) != 0)
            continue;
        size_t o = 0;
        for (size_t k = eq < e ? eq + 1 : e; k < e; k++) {
            char c = q.p[k];
            if (c == '%') {
                if (k + 2 >= e || hexv(q.p[k + 1]) < 0 || hexv(q.p[k + 2]) < 0)
                    return -2;
                c = (char)(hexv(q.p[k + 1]) << 4 | hexv(q.p[k + 2]));
                k += 2;
            }
            if (o + 1 >= cap)
                return -2;
            out[o++] = c;
        }
        if (cap == 0)
            return -2;
        out[o] = '\0';
        return (long)o;
    }
    return -1;
}

static void check_query(http_str q, const char *key)
{
    static const size_t caps[] = {1, 4, 129};
    for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
        char out[129], ref[129];
        memset(out, 0x5A, sizeof out);
        long rc = http_query_get(q, key, out, caps[c]);
        long want = ref_query_get(q, key, ref, caps[c]);
        CHECK(rc == -1 || rc == -2 || (rc >= 0 && (size_t)rc < caps[c]), "query rc %ld", rc);
        CHECK(rc == want, "http_query_get(\"%.*s\", \"%s\", cap %zu) = %ld, reference %ld",
              (int)q.n, q.p, key, caps[c], rc, want);
        if (rc >= 0) {
            CHECK(out[rc] == '\0', "decoded value not NUL-terminated");
            CHECK(memcmp(out, ref, (size_t)rc) == 0, "decoded value differs from reference");
        }
    }
}

static void check_content_length(http_str v)
{
    unsigned long long got = 0;
    bool ok = http_parse_content_length(v, &got);
    bool digits = v.n > 0;
    unsigned long long want = 0;
    bool overflow = false;
    for (size_t i = 0; i < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') {
            digits = false;
            break;
        }
        unsigned d = (unsigned)(v.p[i] - '0');
        if (want > (~0ULL - d) / 10)
            overflow = true;
        want = want * 10 + d;
    }
    if (ok)
        CHECK(digits && !overflow && got == want, "Content-Length \"%.*s\" -> %llu", (int)v.n,
              v.p, got);
    else /* rejecting more than 19 digits is a documented-enough bound */
        CHECK(!digits || overflow || v.n > 19, "valid Content-Length \"%.*s\" rejected",
              (int)v.n, v.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    if (!buf)
        abort();
    if (size)
        memcpy(buf, data, size);

    /* the raw input as a query string exercises the decoder directly */
    http_str raw = {buf, size < 600 ? size : 600};
    check_query(raw, "group");
    check_query(raw, "groups");
    check_content_length((http_str){buf, size < 40 ? size : 40});

    http_request req;
    long rc = http_parse_request(buf, size, MAX_HEAD, &req);
    CHECK(rc > 0 || rc == 0 || rc == -400 || rc == -431 || rc == -501 || rc == -505,
          "unexpected result %ld", rc);
    if (rc == 0)
        CHECK(size <= MAX_HEAD, "incomplete with %zu bytes > max_head", size);
    if (rc <= 0) {
        free(buf);
        return 0;
    }

    size_t head = (size_t)rc;
    CHECK(head <= size && head <= MAX_HEAD, "head %zu, input %zu", head, size);
    const char *lo = buf, *hi = buf + head;
    CHECK(req.method_str.n > 0 && inside(req.method_str, lo, hi), "method_str");
    for (size_t i = 0; i < req.method_str.n; i++)
        CHECK(tchar((unsigned char)req.method_str.p[i]), "method char");
    CHECK(req.target.n > 0 && inside(req.target, lo, hi), "target");
    CHECK(inside(req.path, lo, hi) && inside(req.query, lo, hi), "path/query");
    CHECK(req.path.p == req.target.p && req.path.n <= req.target.n, "path is not target's start");
    CHECK(memchr(req.path.p, '?', req.path.n) == NULL, "path contains '?'");
    if (req.path.n < req.target.n) {
        CHECK(req.target.p[req.path.n] == '?', "target continues after path without '?'");
        CHECK(req.path.n + 1 + req.query.n == req.target.n, "query is not the rest of target");
        CHECK(req.query.n == 0 || req.query.p == req.target.p + req.path.n + 1, "query start");
    } else {
        CHECK(req.query.n == 0, "query without '?'");
    }
    CHECK(req.minor_version >= 0 && req.minor_version <= 9, "minor_version %d", req.minor_version);
    if (req.method == HTTP_GET)
        CHECK(http_str_eq(req.method_str, "GET") && req.method_str.p[0] == 'G', "GET");
    CHECK(req.nheaders <= HTTP_MAX_HEADERS, "nheaders %zu", req.nheaders);

    for (size_t i = 0; i < req.nheaders; i++) {
        http_str nm = req.headers[i].name, v = req.headers[i].value;
        CHECK(nm.n > 0 && inside(nm, lo, hi) && inside(v, lo, hi), "header %zu bounds", i);
        for (size_t k = 0; k < nm.n; k++)
            CHECK(tchar((unsigned char)nm.p[k]), "header name char 0x%02x",
                  (unsigned char)nm.p[k]);
        for (size_t k = 0; k < v.n; k++)
            CHECK(v.p[k] != '\r' && v.p[k] != '\n' && v.p[k] != '\0', "CR/LF/NUL in value");
        if (v.n)
            CHECK(!ows(v.p[0]) && !ows(v.p[v.n - 1]), "value not trimmed");

        /* lookup by name, in another case */
        char name[256];
        if (nm.n < sizeof name) {
            for (size_t k = 0; k < nm.n; k++)
                name[k] = (char)((k & 1) ? toupper((unsigned char)nm.p[k])
                                         : tolower((unsigned char)nm.p[k]));
            name[nm.n] = '\0';
            const http_str *got = http_header_get(&req, name);
            CHECK(got != NULL, "header %.*s not found", (int)nm.n, nm.p);
            CHECK(got >= &req.headers[0].value && got <= &req.headers[i].value,
                  "lookup returned a later header or foreign pointer");
        }
        static const char *const toks[] = {"upgrade", "websocket", "close", "keep-alive"};
        for (size_t t = 0; t < sizeof toks / sizeof toks[0]; t++)
            CHECK(http_has_token(v, toks[t]) == ref_has_token(v, toks[t]),
                  "http_has_token(\"%.*s\", %s)", (int)v.n, v.p, toks[t]);
        check_content_length(v);
    }

    /* query lookups, including a key taken from the query itself */
    check_query(req.query, "group");
    check_query(req.query, "groups");
    if (req.query.n) {
        char key[64];
        size_t k = 0;
        while (k < req.query.n && k < sizeof key - 1 && req.query.p[k] != '=' &&
               req.query.p[k] != '&' && req.query.p[k] != '\0') {
            key[k] = req.query.p[k];
            k++;
        }
        key[k] = '\0';
        if (k > 0)
            check_query(req.query, key);
    }

    /* consistency of the head boundary */
    http_request again;
    CHECK(http_parse_request(buf, head, MAX_HEAD, &again) == rc, "head alone parses differently");
    long part = http_parse_request(buf, head - 1, MAX_HEAD, &again);
    CHECK(part == 0, "head minus one byte gives %ld, not 0", part);
    CHECK(http_parse_request(buf, size, head - 1, &again) == -431,
          "head of %zu bytes with max_head %zu not rejected with 431", head, head - 1);

    free(buf);
    return 0;
}
