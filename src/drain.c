#include "drain.h"

/* Closes one connection for the stop: WebSockets get a close frame after
 * what is already queued for them; idle HTTP connections just go. */
static void drain_shut(conn *c, unsigned code)
{
    if (c->state == CONN_WS)
        conn_close_ws(c, code, code == WS_CLOSE_RESTART ? "service restart" : "server shutdown",
                      true);
    else if (c->state == CONN_HTTP && outq_empty(&c->q) && !c->pend_len)
        conn_destroy(c);
    else if (c->state != CONN_DRAIN)
        conn_close_after_flush(c);
}

void drain_begin(drain *d, conn_env *env, bool restart)
{
    uint64_t now = env->loop->now_ms;
    *d = (drain){.active = true, .restart = restart, .start_ms = now,
                 .deadline_ms = now + env->cfg->shutdown_timeout_ms +
                                (restart ? env->cfg->drain_window_ms : 0)};
    /* Backwards: a destroy moves the last entry into the freed slot. */
    for (uint32_t i = env->nconns; i-- > 0;) {
        conn *c = env->conns[i];
        if (!restart || c->state != CONN_WS)
            drain_shut(c, WS_CLOSE_GOING_AWAY);
        else
            d->total++;
    }
}

void drain_step(drain *d, conn_env *env)
{
    uint64_t window = env->cfg->drain_window_ms, elapsed = env->loop->now_ms - d->start_ms;
    uint64_t due = elapsed >= window || window == 0 ? d->total : d->total * elapsed / window + 1;
    for (uint32_t i = env->nconns; i-- > 0 && d->closed < due;) {
        conn *c = env->conns[i];
        if (c->state == CONN_WS) {
            drain_shut(c, WS_CLOSE_RESTART);
            d->closed++;
        }
    }
    if (elapsed >= window) /* connections that were not counted at the start */
        for (uint32_t i = env->nconns; i-- > 0;)
            if (env->conns[i]->state == CONN_WS)
                drain_shut(env->conns[i], WS_CLOSE_RESTART);
}

void drain_hurry(drain *d, conn_env *env)
{
    d->restart = false;
    for (uint32_t i = env->nconns; i-- > 0;)
        drain_shut(env->conns[i], WS_CLOSE_GOING_AWAY);
}

bool drain_done(const drain *d, const conn_env *env)
{
    return d->active && (env->nconns == 0 || env->loop->now_ms >= d->deadline_ms);
}
