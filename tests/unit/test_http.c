/* Unit tests for the HTTP/1.1 request-head parser (src/http.h), RFC 9112.
 *
 * Decisions pinned here (the contract, checked against RFC 9112):
 *  - only CRLF ends a line: a bare LF is refused with 400 (9112 2.2 allows a
 *    recipient to accept it, but a proxy in front that does not would frame
 *    the bytes differently: a smuggling risk);
 *  - obs-fold (a header line starting with SP/HTAB) is rejected with 400
 *    (9112 5.2 lets a server reject it with 400);
 *  - whitespace between a field name and the colon is rejected with 400
 *    (9112 5.1: MUST);
 *  - every string returned points into the caller's buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http.h"

#define STR_EQ(hs, lit)                                                                    \
    do {                                                                                   \
        http_str s_ = (hs);                                                                \
        if (s_.n != strlen(lit) || memcmp(s_.p, (lit), s_.n) != 0)                          \
            fail_msg("%s: got \"%.*s\", expected \"%s\"", #hs, (int)s_.n, s_.p ? s_.p : "", \
                     (lit));                                                               \
    } while (0)

/* Parses a copy of text in an exact-size heap buffer (so ASan sees any
 * over-read) and checks that every returned string lies inside the head.
 * With keep, the caller gets (and frees) the buffer; otherwise it lives until
 * the next call. */
static char *last;

static long parse_n(const char *text, size_t len, size_t max_head, http_request *req, char **keep)
{
    char *buf = malloc(len ? len : 1);
    assert_non_null(buf);
    memcpy(buf, text, len);
    memset(req, 0xA5, sizeof *req);
    long rc = http_parse_request(buf, len, max_head, req);
    if (rc > 0) {
        if ((size_t)rc > len)
            fail_msg("head size %ld > input %zu", rc, len);
        const char *lo = buf, *hi = buf + rc;
#define INSIDE(s)                                                                         \
    if ((s).n && ((s).p < lo || (s).p + (s).n > hi))                                      \
        fail_msg("%s points outside the head", #s);
        INSIDE(req->method_str);
        INSIDE(req->target);
        INSIDE(req->path);
        INSIDE(req->query);
        if (req->nheaders > HTTP_MAX_HEADERS)
            fail_msg("nheaders %zu", req->nheaders);
        for (size_t i = 0; i < req->nheaders; i++) {
            INSIDE(req->headers[i].name);
            INSIDE(req->headers[i].value);
        }
#undef INSIDE
    }
    /* the request's strings stay valid until the next parse */
    free(last);
    last = keep ? NULL : buf;
    if (keep)
        *keep = buf;
    return rc;
}

static long parse(const char *text, size_t max_head, http_request *req, char **keep)
{
    return parse_n(text, strlen(text), max_head, req, keep);
}

static void test_simple_get(void **state)
{
    (void)state;
    const char *t = "GET /ws?groups=a,b HTTP/1.1\r\nHost: example.com\r\n\r\n";
    http_request req;
    char *buf;
    long rc = parse(t, 8192, &req, &buf);
    assert_int_equal(rc, (long)strlen(t));
    assert_int_equal(req.method, HTTP_GET);
    STR_EQ(req.method_str, "GET");
    STR_EQ(req.target, "/ws?groups=a,b");
    STR_EQ(req.path, "/ws");
    STR_EQ(req.query, "groups=a,b");
    assert_int_equal(req.minor_version, 1);
    assert_int_equal(req.nheaders, 1);
    STR_EQ(req.headers[0].name, "Host");
    STR_EQ(req.headers[0].value, "example.com");
    assert_true(req.method_str.p == buf); /* points into the buffer */
    free(buf);

    /* no query */
    rc = parse("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 8192, &req, NULL);
    assert_true(rc > 0);
    STR_EQ(req.path, "/healthz");
    STR_EQ(req.target, "/healthz");
    assert_int_equal(req.query.n, 0);

    /* empty query after '?' */
    rc = parse("GET /ws? HTTP/1.1\r\nHost: x\r\n\r\n", 8192, &req, NULL);
    assert_true(rc > 0);
    STR_EQ(req.path, "/ws");
    assert_int_equal(req.query.n, 0);

    /* no headers at all is syntactically fine (Host is the caller's check) */
    rc = parse("GET / HTTP/1.1\r\n\r\n", 8192, &req, NULL);
    assert_int_equal(rc, 18);
    assert_int_equal(req.nheaders, 0);

    /* HTTP/1.0 parses; minor version reported */
    rc = parse("GET / HTTP/1.0\r\n\r\n", 8192, &req, NULL);
    assert_int_equal(rc, 18);
    assert_int_equal(req.minor_version, 0);
}

static void test_methods(void **state)
{
    (void)state;
    http_request req;
    assert_true(parse("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", 8192, &req, NULL) > 0);
    assert_int_equal(req.method, HTTP_HEAD);
    /* other methods parse (the router answers 405) */
    assert_true(parse("PUT /publish HTTP/1.1\r\nHost: x\r\n\r\n", 8192, &req, NULL) > 0);
    assert_int_equal(req.method, HTTP_OTHER);
    STR_EQ(req.method_str, "PUT");
    assert_true(parse("DELETE /ws HTTP/1.1\r\nHost: x\r\n\r\n", 8192, &req, NULL) > 0);
    assert_int_equal(req.method, HTTP_OTHER);
    STR_EQ(req.method_str, "DELETE");
    /* methods are case-sensitive (RFC 9110 9.1) */
    assert_true(parse("get / HTTP/1.1\r\nHost: x\r\n\r\n", 8192, &req, NULL) > 0);
    assert_int_equal(req.method, HTTP_OTHER);
}

static void test_post_with_headers(void **state)
{
    (void)state;
    const char *head = "POST /publish?group=news HTTP/1.1\r\n"
                       "Host: localhost:8080\r\n"
                       "Content-Type: text/plain; charset=utf-8\r\n"
                       "Content-Length: 5\r\n"
                       "X-Empty:\r\n"
                       "X-Spaces: \t  padded value \t \r\n"
                       "\r\n";
    char text[512];
    snprintf(text, sizeof text, "%shelloGET / HTTP/1.1\r\n", head); /* body + pipelined */
    http_request req;
    long rc = parse(text, 8192, &req, NULL);
    assert_int_equal(rc, (long)strlen(head));
    assert_int_equal(req.method, HTTP_POST);
    STR_EQ(req.path, "/publish");
    STR_EQ(req.query, "group=news");
    assert_int_equal(req.nheaders, 5);
    STR_EQ(req.headers[0].name, "Host");
    STR_EQ(req.headers[0].value, "localhost:8080");
    STR_EQ(req.headers[1].name, "Content-Type");
    STR_EQ(req.headers[1].value, "text/plain; charset=utf-8");
    STR_EQ(req.headers[2].name, "Content-Length");
    STR_EQ(req.headers[2].value, "5");
    STR_EQ(req.headers[3].name, "X-Empty");
    assert_int_equal(req.headers[3].value.n, 0);
    STR_EQ(req.headers[4].name, "X-Spaces");
    STR_EQ(req.headers[4].value, "padded value");
}

static void test_websocket_handshake(void **state)
{
    (void)state;
    const char *t = "GET /chat HTTP/1.1\r\n"
                    "Host: server.example.com\r\n"
                    "Upgrade: websocket\r\n"
                    "Connection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Origin: http://example.com\r\n"
                    "Sec-WebSocket-Protocol: chat, superchat\r\n"
                    "Sec-WebSocket-Version: 13\r\n"
                    "\r\n";
    http_request req;
    assert_int_equal(parse(t, 8192, &req, NULL), (long)strlen(t));
    assert_int_equal(req.nheaders, 7);
    const http_str *v = http_header_get(&req, "sec-websocket-key");
    assert_non_null(v);
    STR_EQ(*v, "dGhlIHNhbXBsZSBub25jZQ==");
    v = http_header_get(&req, "SEC-WEBSOCKET-VERSION");
    assert_non_null(v);
    STR_EQ(*v, "13");
    v = http_header_get(&req, "upgrade");
    assert_non_null(v);
    assert_true(http_has_token(*v, "websocket"));
    v = http_header_get(&req, "Connection");
    assert_non_null(v);
    assert_true(http_has_token(*v, "upgrade"));
    assert_null(http_header_get(&req, "Content-Length"));
    assert_null(http_header_get(&req, "Sec-WebSocket-Ke"));
    assert_null(http_header_get(&req, "Sec-WebSocket-Keys"));
    assert_null(http_header_get(&req, ""));
}

static void test_incomplete_prefixes(void **state)
{
    (void)state;
    static const char *const reqs[] = {
        "GET /ws?groups=a%2Cb HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "POST /publish HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
    };
    for (size_t k = 0; k < sizeof reqs / sizeof reqs[0]; k++) {
        size_t len = strlen(reqs[k]);
        http_request req;
        for (size_t n = 0; n < len; n++) {
            long rc = parse_n(reqs[k], n, 8192, &req, NULL);
            if (rc != 0)
                fail_msg("request %zu, prefix of %zu/%zu bytes: %ld, expected 0", k, n, len, rc);
        }
        assert_int_equal(parse_n(reqs[k], len, 8192, &req, NULL), (long)len);
    }
}

static void test_line_endings(void **state)
{
    (void)state;
    http_request req;
    /* bare LF anywhere: refused (a proxy may not see the same lines) */
    const char *lf = "GET /a?b=c HTTP/1.1\nHost: x\nConnection: close\n\n";
    assert_int_equal(parse(lf, 8192, &req, NULL), -400);
    const char *mixed = "GET / HTTP/1.1\r\nHost: x\nA: 1\r\n\r\n";
    assert_int_equal(parse(mixed, 8192, &req, NULL), -400);
    const char *end = "POST /publish HTTP/1.1\r\nContent-Length: 5\r\n\nabcde";
    assert_int_equal(parse(end, 8192, &req, NULL), -400);

    /* empty lines before the request line are tolerated (RFC 9112 2.2) */
    const char *lead = "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(parse(lead, 8192, &req, NULL), (long)strlen(lead));
    STR_EQ(req.method_str, "GET");

    /* the value never includes the CR */
    const char *crlf = "GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY";
    assert_int_equal(parse(crlf, 8192, &req, NULL), (long)strlen(crlf) - 4);
    STR_EQ(req.headers[0].value, "x");
}

static void test_malformed(void **state)
{
    (void)state;
    http_request req;
    static const char *const bad[] = {
        /* obs-fold */
        "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n",
        /* whitespace before the colon */
        "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost\t: x\r\n\r\n",
        /* whitespace before the first header */
        "GET / HTTP/1.1\r\n Host: x\r\n\r\n",
        /* no colon, empty name, bad name characters */
        "GET / HTTP/1.1\r\nHost x\r\n\r\n",
        "GET / HTTP/1.1\r\n: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHo(st: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHo\"st: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHo\x01st: x\r\n\r\n",
        /* control characters in a value */
        "GET / HTTP/1.1\r\nHost: a\x01z\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\x7fz\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\rz\r\n\r\n",
        /* broken request lines */
        "garbage\r\n\r\n",
        "GET\r\n\r\n",
        "GET /\r\n\r\n",
        "GET / \r\n\r\n",
        "GET / HTTP/1.1 extra\r\n\r\n",
        "GET / FOO/1.1\r\n\r\n",
        "GET / HTTP/1\r\n\r\n",
        "GET / HTTP/1.1x\r\n\r\n",
        "GET / HTTP/x.1\r\n\r\n",
        " GET / HTTP/1.1\r\n\r\n",
        "G(T / HTTP/1.1\r\n\r\n",
        "GET /a\x01 HTTP/1.1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        long rc = parse(bad[i], 8192, &req, NULL);
        if (rc != -400)
            fail_msg("bad request %zu (%s): %ld, expected -400", i, bad[i], rc);
    }
    /* binary garbage (a TLS ClientHello on the plain port) */
    static const char tls[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n";
    assert_int_equal(parse_n(tls, sizeof tls - 1, 8192, &req, NULL), -400);
    /* a NUL byte in the request line */
    static const char nul[] = "GET /a\0b HTTP/1.1\r\n\r\n";
    assert_int_equal(parse_n(nul, sizeof nul - 1, 8192, &req, NULL), -400);
}

static void test_version(void **state)
{
    (void)state;
    http_request req;
    assert_int_equal(parse("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 8192, &req, NULL), -505);
    assert_int_equal(parse("GET / HTTP/3.0\r\nHost: x\r\n\r\n", 8192, &req, NULL), -505);
    assert_int_equal(parse("GET / HTTP/0.9\r\nHost: x\r\n\r\n", 8192, &req, NULL), -505);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 8192, &req, NULL), 27);
}

static void test_too_large(void **state)
{
    (void)state;
    http_request req;
    char buf[20000];
    /* complete head over the limit */
    int n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: %0200d\r\n\r\n", 0);
    assert_int_equal(parse(buf, 100, &req, NULL), -431);
    assert_int_equal(parse(buf, (size_t)n - 1, &req, NULL), -431);
    /* exactly at the limit is fine */
    assert_int_equal(parse(buf, (size_t)n, &req, NULL), n);
    /* incomplete and already over the limit: no point waiting */
    assert_int_equal(parse_n(buf, 150, 100, &req, NULL), -431);
    assert_int_equal(parse_n(buf, 101, 100, &req, NULL), -431);
    assert_int_equal(parse_n(buf, 99, 100, &req, NULL), 0);
    /* a huge request line with no newline at all */
    memset(buf, 'a', 9000);
    memcpy(buf, "GET /", 5);
    assert_int_equal(parse_n(buf, 9000, 8192, &req, NULL), -431);
}

static void test_too_many_headers(void **state)
{
    (void)state;
    http_request req;
    char buf[8192];
    for (int count = HTTP_MAX_HEADERS; count <= HTTP_MAX_HEADERS + 1; count++) {
        size_t o = (size_t)snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\n");
        for (int i = 0; i < count; i++)
            o += (size_t)snprintf(buf + o, sizeof buf - o, "X-H%d: %d\r\n", i, i);
        o += (size_t)snprintf(buf + o, sizeof buf - o, "\r\n");
        long rc = parse(buf, 8192, &req, NULL);
        if (count == HTTP_MAX_HEADERS) {
            assert_int_equal(rc, (long)o);
            assert_int_equal(req.nheaders, HTTP_MAX_HEADERS);
            STR_EQ(req.headers[HTTP_MAX_HEADERS - 1].name, "X-H63");
        } else {
            assert_int_equal(rc, -431);
        }
    }
}

static long qget(const char *q, const char *key, char *out, size_t cap)
{
    http_str s = {q, strlen(q)};
    return http_query_get(s, key, out, cap);
}

static void test_query_get(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(qget("groups=a,b", "groups", out, sizeof out), 3);
    assert_string_equal(out, "a,b");
    assert_int_equal(qget("groups=a%2Cb", "groups", out, sizeof out), 3);
    assert_string_equal(out, "a,b");
    assert_int_equal(qget("groups=a%2cb", "groups", out, sizeof out), 3);
    assert_string_equal(out, "a,b");
    assert_int_equal(qget("x=1&group=news&y=2", "group", out, sizeof out), 4);
    assert_string_equal(out, "news");
    assert_int_equal(qget("x=1&group=last", "group", out, sizeof out), 4);
    assert_string_equal(out, "last");
    /* '+' is not a space here (not form encoding) */
    assert_int_equal(qget("group=a+b", "group", out, sizeof out), 3);
    assert_string_equal(out, "a+b");
    assert_int_equal(qget("group=%41%42%43", "group", out, sizeof out), 3);
    assert_string_equal(out, "ABC");
    /* empty value */
    assert_int_equal(qget("group=&x=1", "group", out, sizeof out), 0);
    assert_string_equal(out, "");
    assert_int_equal(qget("group=", "group", out, sizeof out), 0);
    /* absent */
    assert_int_equal(qget("x=1&y=2", "group", out, sizeof out), -1);
    assert_int_equal(qget("", "group", out, sizeof out), -1);
    assert_int_equal(qget("groups=a", "group", out, sizeof out), -1);
    assert_int_equal(qget("xgroup=a", "group", out, sizeof out), -1);
    assert_int_equal(qget("x=group", "group", out, sizeof out), -1);
    /* a key that is a prefix/suffix of another key */
    assert_int_equal(qget("groupsx=1&groups=a", "groups", out, sizeof out), 1);
    assert_string_equal(out, "a");
    assert_int_equal(qget("xgroups=1&groups=b", "groups", out, sizeof out), 1);
    assert_string_equal(out, "b");
    assert_int_equal(qget("groups=a&groupsx=1", "groups", out, sizeof out), 1);
    assert_string_equal(out, "a");
    /* malformed escapes */
    assert_int_equal(qget("groups=%zz", "groups", out, sizeof out), -2);
    assert_int_equal(qget("groups=a%2", "groups", out, sizeof out), -2);
    assert_int_equal(qget("groups=a%", "groups", out, sizeof out), -2);
    assert_int_equal(qget("groups=%g1", "groups", out, sizeof out), -2);
    assert_int_equal(qget("groups=%2&x=1", "groups", out, sizeof out), -2);
    /* a bad escape elsewhere does not matter */
    assert_int_equal(qget("x=%zz&groups=ok", "groups", out, sizeof out), 2);
    assert_string_equal(out, "ok");
    /* capacity: the value plus its NUL must fit */
    assert_int_equal(qget("g=abc", "g", out, 4), 3);
    assert_string_equal(out, "abc");
    assert_int_equal(qget("g=abc", "g", out, 3), -2);
    assert_int_equal(qget("g=%41%42%43", "g", out, 4), 3);
    assert_int_equal(qget("g=%41%42%43", "g", out, 3), -2);
    /* the query string is not NUL-terminated in real use */
    static const char q[] = "group=abcdef";
    http_str s = {q, 9}; /* "group=abc" */
    assert_int_equal(http_query_get(s, "group", out, sizeof out), 3);
    assert_string_equal(out, "abc");
    http_str s2 = {"g=%4142", 4}; /* "g=%4" */
    assert_int_equal(http_query_get(s2, "g", out, sizeof out), -2);
}

static void test_has_token(void **state)
{
    (void)state;
#define TOK(v, t) http_has_token((http_str){(v), strlen(v)}, (t))
    assert_true(TOK("Upgrade", "upgrade"));
    assert_true(TOK("upgrade", "Upgrade"));
    assert_true(TOK("keep-alive, Upgrade", "upgrade"));
    assert_true(TOK("keep-alive,Upgrade", "upgrade"));
    assert_true(TOK("Upgrade, keep-alive", "upgrade"));
    assert_true(TOK("  Upgrade  ,  x ", "upgrade"));
    assert_true(TOK("a,,upgrade,", "upgrade"));
    assert_true(TOK("a,\tUPGRADE\t", "upgrade"));
    assert_true(TOK("websocket", "websocket"));
    assert_true(TOK("WebSocket", "websocket"));
    assert_false(TOK("", "upgrade"));
    assert_false(TOK(",", "upgrade"));
    assert_false(TOK("upgraded", "upgrade"));
    assert_false(TOK("x-upgrade", "upgrade"));
    assert_false(TOK("upgrad", "upgrade"));
    assert_false(TOK("keep-alive, Upgrade2", "upgrade"));
    assert_false(TOK("keep-alive upgrade", "upgrade"));
    assert_false(TOK("close", "keep-alive"));
    /* not NUL-terminated: only n bytes count */
    http_str v = {"keep-alive, upgradeX", 19};
    assert_true(http_has_token(v, "upgrade"));
    http_str w = {"keep-alive, upgrade", 17};
    assert_false(http_has_token(w, "upgrade"));
#undef TOK
}

/* Parses a head and returns http_body_framing's verdict (len in *len). */
static long framing(const char *head, unsigned long long *len)
{
    http_request req;
    long rc = http_parse_request(head, strlen(head), 8192, &req);
    if (rc <= 0)
        fail_msg("head did not parse (%ld): %s", rc, head);
    return http_body_framing(&req, len);
}

static void test_body_framing(void **state)
{
    (void)state;
    unsigned long long n = 99;
    assert_int_equal(framing("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(framing("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &n), 1);
    assert_int_equal(n, 0);
    assert_int_equal(framing("POST /p HTTP/1.1\r\nContent-Length: 12\r\n\r\n", &n), 1);
    assert_int_equal(n, 12);
    /* a body on GET/HEAD: its bytes would be read as the next request */
    assert_int_equal(framing("GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", &n), -400);
    assert_int_equal(framing("HEAD / HTTP/1.1\r\ncontent-length: 1\r\n\r\n", &n), -400);
    assert_int_equal(framing("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &n), -400);
    /* ambiguous lengths */
    assert_int_equal(framing("POST /p HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n", &n),
                     -400);
    assert_int_equal(framing("POST /p HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\n", &n), -400);
    assert_int_equal(framing("POST /p HTTP/1.1\r\nContent-Length: +2\r\n\r\n", &n), -400);
    assert_int_equal(framing("POST /p HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
                             &n), -400);
    assert_int_equal(framing("POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                             &n), -400);
    /* transfer codings: chunked needs a length first (411), the rest are not implemented */
    assert_int_equal(framing("POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &n), -411);
    assert_int_equal(framing("POST /p HTTP/1.1\r\nTransfer-Encoding: CHUNKED\r\n\r\n", &n), -411);
    assert_int_equal(framing("POST /p HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", &n), -501);
    assert_int_equal(framing("POST /p HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", &n), -501);
}

static void test_content_length(void **state)
{
    (void)state;
    unsigned long long v;
#define CL(s) http_parse_content_length((http_str){(s), strlen(s)}, &v)
    assert_true(CL("0"));
    assert_int_equal(v, 0);
    assert_true(CL("5"));
    assert_int_equal(v, 5);
    assert_true(CL("1048576"));
    assert_int_equal(v, 1048576);
    assert_true(CL("007"));
    assert_int_equal(v, 7);
    assert_true(CL("9999999999999999999"));
    assert_true(v == 9999999999999999999ULL);
    assert_false(CL(""));
    assert_false(CL("+5"));
    assert_false(CL("-5"));
    assert_false(CL("-0"));
    assert_false(CL("1 2"));
    assert_false(CL("1\t2"));
    assert_false(CL("12a"));
    assert_false(CL("0x10"));
    assert_false(CL("1.0"));
    assert_false(CL("5,5")); /* a list is not a length here */
    assert_false(CL("18446744073709551616"));   /* 2^64 */
    assert_false(CL("99999999999999999999"));
    assert_false(CL("123456789012345678901234567890"));
    /* only n bytes count */
    http_str s = {"12x", 2};
    assert_true(http_parse_content_length(s, &v));
    assert_int_equal(v, 12);
#undef CL
}

static void test_header_get_and_str_eq(void **state)
{
    (void)state;
    http_request req;
    const char *t = "GET / HTTP/1.1\r\nHOST: a\r\ncontent-TYPE: text/plain\r\nX-Dup: 1\r\n"
                    "X-Dup: 2\r\n\r\n";
    assert_true(parse(t, 8192, &req, NULL) > 0);
    const http_str *v = http_header_get(&req, "host");
    assert_non_null(v);
    STR_EQ(*v, "a");
    v = http_header_get(&req, "Content-Type");
    assert_non_null(v);
    STR_EQ(*v, "text/plain");
    v = http_header_get(&req, "x-dup");
    assert_non_null(v);
    STR_EQ(*v, "1"); /* the first one */
    assert_null(http_header_get(&req, "Hos"));
    assert_null(http_header_get(&req, "Hostx"));

    assert_true(http_str_eq((http_str){"Hello", 5}, "hELLO"));
    assert_false(http_str_eq((http_str){"Hello", 4}, "hello"));
    assert_false(http_str_eq((http_str){"Hello", 5}, "hell"));
    assert_true(http_str_eq((http_str){"", 0}, ""));

    assert_string_equal(http_reason(200), "OK");
    assert_string_equal(http_reason(404), "Not Found");
    assert_string_equal(http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(http_reason(101), "Switching Protocols");
    assert_string_equal(http_reason(799), "Unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_post_with_headers),
        cmocka_unit_test(test_websocket_handshake),
        cmocka_unit_test(test_incomplete_prefixes),
        cmocka_unit_test(test_line_endings),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_too_many_headers),
        cmocka_unit_test(test_query_get),
        cmocka_unit_test(test_has_token),
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_body_framing),
        cmocka_unit_test(test_header_get_and_str_eq),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    free(last);
    return failed;
}
