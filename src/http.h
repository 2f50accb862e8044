/* HTTP/1.1 request-head parser in the picohttpparser style: no I/O, no
 * allocation, every string points into the caller's buffer. */
#ifndef HERALD_HTTP_H
#define HERALD_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#define HTTP_MAX_HEADERS 64

typedef struct http_str {
    const char *p;
    size_t n;
} http_str;

typedef struct http_header {
    http_str name;
    http_str value; /* surrounding whitespace trimmed */
} http_header;

typedef enum http_method { HTTP_OTHER = 0, HTTP_GET, HTTP_POST, HTTP_HEAD } http_method;

typedef struct http_request {
    http_method method;
    http_str method_str;
    http_str target; /* as sent */
    http_str path;   /* target up to '?' */
    http_str query;  /* after '?', without it; n == 0 when absent */
    int minor_version; /* HTTP/1.x */
    http_header headers[HTTP_MAX_HEADERS];
    size_t nheaders;
} http_request;

/* Parses the request line and headers of buf[0..len).
 * Returns the size of the head (through the blank line) when complete,
 * 0 when more bytes are needed (and the head is still under max_head bytes),
 * or a negative HTTP status: -400 malformed, -431 head larger than max_head or
 * too many headers, -505 not HTTP/1.x, -501 unsupported. */
long http_parse_request(const char *buf, size_t len, size_t max_head, http_request *req);

/* Case-insensitive header lookup; NULL when absent. */
const http_str *http_header_get(const http_request *req, const char *name);

/* How many times a header appears (case-insensitive name). */
size_t http_header_count(const http_request *req, const char *name);

/* True when a comma-separated header value contains token (case-insensitive). */
bool http_has_token(http_str value, const char *token);

/* Finds key in a query string (a=1&b=2) and percent-decodes its value into
 * out (NUL-terminated). Returns the decoded length, -1 when the key is absent,
 * -2 when the value is malformed or does not fit in cap-1 bytes. */
long http_query_get(http_str query, const char *key, char *out, size_t cap);

/* Parses a decimal Content-Length; false on anything else (signs, spaces
 * inside, overflow). */
bool http_parse_content_length(http_str v, unsigned long long *out);

/* How the body of a parsed request is framed (RFC 9112 6.3), decided before
 * anything else so that no byte of one request is ever read as another:
 * returns 0 when there is no body (*len = 0), 1 for a Content-Length body
 * (*len set; 0 is allowed), or a negative status: -400 for ambiguous framing
 * (Content-Length repeated, invalid, or together with Transfer-Encoding; any
 * body on GET or HEAD), -411 for a chunked body (we need the length first),
 * -501 for any other transfer coding. */
long http_body_framing(const http_request *req, unsigned long long *len);

/* Case-insensitive comparison of an http_str with a C string. */
bool http_str_eq(http_str s, const char *c);

/* Standard reason phrase for a status code ("Unknown" otherwise). */
const char *http_reason(int status);

#endif
