#include "http.h"

#include <string.h>
#include <strings.h>

/* RFC 9110 token characters. */
static bool http_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Finds the end of the line starting at p: returns the position of '\n' or
 * NULL. The content ends before an optional '\r'. */
static const char *http_line_end(const char *p, const char *end, const char **content_end)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl)
        return NULL;
    /* NULL content end: a bare LF. RFC 9112 2.2 lets a recipient accept it,
     * but a proxy in front that does not would see another head: refused. */
    *content_end = (nl > p && nl[-1] == '\r') ? nl - 1 : NULL;
    return nl;
}

static long http_parse_request_line(const char *p, const char *e, http_request *req)
{
    const char *s = p;
    while (p < e && http_tchar((unsigned char)*p))
        p++;
    if (p == s || p >= e || *p != ' ')
        return -400;
    req->method_str = (http_str){s, (size_t)(p - s)};
    req->method = HTTP_OTHER;
    if (req->method_str.n == 3 && memcmp(s, "GET", 3) == 0)
        req->method = HTTP_GET;
    else if (req->method_str.n == 4 && memcmp(s, "POST", 4) == 0)
        req->method = HTTP_POST;
    else if (req->method_str.n == 4 && memcmp(s, "HEAD", 4) == 0)
        req->method = HTTP_HEAD;
    p++;
    s = p;
    while (p < e && (unsigned char)*p > ' ' && *p != 0x7F)
        p++;
    if (p == s || p >= e || *p != ' ')
        return -400;
    req->target = (http_str){s, (size_t)(p - s)};
    const char *q = memchr(s, '?', (size_t)(p - s));
    req->path = (http_str){s, (size_t)((q ? q : p) - s)};
    req->query = q ? (http_str){q + 1, (size_t)(p - q - 1)} : (http_str){p, 0};
    p++;
    if (e - p != 8 || memcmp(p, "HTTP/", 5) != 0)
        return -400;
    if (p[5] < '0' || p[5] > '9' || p[6] != '.' || p[7] < '0' || p[7] > '9')
        return -400;
    if (p[5] != '1')
        return -505;
    req->minor_version = p[7] - '0';
    return 0;
}

static long http_parse_header_line(const char *p, const char *e, http_request *req)
{
    const char *s = p;
    while (p < e && http_tchar((unsigned char)*p))
        p++;
    if (p == s || p >= e || *p != ':')
        return -400; /* also rejects obs-fold and whitespace before ':' */
    if (req->nheaders >= HTTP_MAX_HEADERS)
        return -431;
    http_header *h = &req->headers[req->nheaders++];
    h->name = (http_str){s, (size_t)(p - s)};
    p++;
    for (const char *c = p; c < e; c++) {
        unsigned char ch = (unsigned char)*c;
        if ((ch < 0x20 && ch != '\t') || ch == 0x7F)
            return -400;
    }
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    h->value = (http_str){p, (size_t)(e - p)};
    return 0;
}

long http_parse_request(const char *buf, size_t len, size_t max_head, http_request *req)
{
    const char *p = buf, *end = buf + len, *ce;
    req->nheaders = 0;
    /* Tolerate empty lines before the request line (RFC 9112 2.2). */
    while (p < end && (*p == '\r' || *p == '\n') && (size_t)(p - buf) < 4)
        p++;
    const char *nl = http_line_end(p, end, &ce);
    if (!nl)
        return len >= max_head ? -431 : 0;
    if (!ce)
        return -400;
    long rc = http_parse_request_line(p, ce, req);
    if (rc < 0)
        return rc;
    p = nl + 1;
    for (;;) {
        if ((size_t)(p - buf) > max_head)
            return -431;
        nl = http_line_end(p, end, &ce);
        if (!nl)
            return len >= max_head ? -431 : 0;
        if (!ce)
            return -400;
        if (ce == p) { /* blank line: end of head */
            size_t head = (size_t)(nl + 1 - buf);
            return head > max_head ? -431 : (long)head;
        }
        rc = http_parse_header_line(p, ce, req);
        if (rc < 0)
            return rc;
        p = nl + 1;
    }
}

bool http_str_eq(http_str s, const char *c)
{
    size_t n = strlen(c);
    return s.n == n && strncasecmp(s.p, c, n) == 0;
}

const http_str *http_header_get(const http_request *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (http_str_eq(req->headers[i].name, name))
            return &req->headers[i].value;
    return NULL;
}

size_t http_header_count(const http_request *req, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < req->nheaders; i++)
        n += http_str_eq(req->headers[i].name, name);
    return n;
}

bool http_has_token(http_str v, const char *token)
{
    size_t i = 0;
    while (i < v.n) {
        while (i < v.n && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == ','))
            i++;
        size_t s = i;
        while (i < v.n && v.p[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v.p[e - 1] == ' ' || v.p[e - 1] == '\t'))
            e--;
        if (e > s && http_str_eq((http_str){v.p + s, e - s}, token))
            return true;
    }
    return false;
}

static int http_hex(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static long http_decode(const char *p, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '%') {
            if (i + 2 >= n)
                return -2;
            int hi = http_hex(p[i + 1]), lo = http_hex(p[i + 2]);
            if (hi < 0 || lo < 0)
                return -2;
            c = (char)(hi << 4 | lo);
            i += 2;
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

long http_query_get(http_str q, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key), i = 0;
    while (i <= q.n && q.n) {
        size_t s = i;
        while (i < q.n && q.p[i] != '&')
            i++;
        const char *item = q.p + s;
        size_t ilen = i - s;
        const char *eq = memchr(item, '=', ilen);
        size_t nlen = eq ? (size_t)(eq - item) : ilen;
        if (nlen == klen && memcmp(item, key, klen) == 0) {
            if (!eq)
                return http_decode(item, 0, out, cap);
            return http_decode(eq + 1, ilen - nlen - 1, out, cap);
        }
        i++;
    }
    return -1;
}

bool http_parse_content_length(http_str v, unsigned long long *out)
{
    unsigned long long n = 0;
    if (v.n == 0 || v.n > 19)
        return false;
    for (size_t i = 0; i < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return false;
        n = n * 10 + (unsigned)(v.p[i] - '0');
    }
    *out = n;
    return true;
}

long http_body_framing(const http_request *req, unsigned long long *len)
{
    const http_str *cl = NULL, *te = NULL;
    *len = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        const http_header *h = &req->headers[i];
        if (http_str_eq(h->name, "content-length")) {
            if (cl)
                return -400; /* even equal copies: a proxy may have kept the other */
            cl = &h->value;
        } else if (http_str_eq(h->name, "transfer-encoding")) {
            if (te)
                return -400;
            te = &h->value;
        }
    }
    bool bodiless = req->method == HTTP_GET || req->method == HTTP_HEAD;
    if (te)
        return (cl || bodiless) ? -400 : http_str_eq(*te, "chunked") ? -411 : -501;
    if (!cl)
        return 0;
    if (!http_parse_content_length(*cl, len) || (bodiless && *len > 0))
        return -400;
    return 1;
}

const char *http_reason(int status)
{
    switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}
