/* GET /sse, the request side of a Server-Sent Events subscriber (proto
 * layer; the stream's framing is conn_sse.h). */
#ifndef HERALD_CONN_SSE_ROUTE_H
#define HERALD_CONN_SSE_ROUTE_H

#include "http.h"

struct conn;

/* GET /sse (and its CORS preflight): validates, answers 200 and subscribes. */
void conn_sse_route(struct conn *c, const http_request *req);

/* The stream's start once the cluster hold is over (delivery_check_held) or
 * was never needed: a fresh group's position is its last offset only when
 * this node follows the group (chan_ready), else it stays unknown; then the
 * first event carries the stream's starting id. Once per stream. */
void conn_sse_begin(struct conn *c);

#endif
