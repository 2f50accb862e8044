/* herald-bench: load generator and latency meter for WebSocket broadcast
 * servers exposing GET /ws?groups=G (subscriber) and GET /publish?group=G
 * (publisher). The main thread only coordinates: it moves the run through
 * its phases, each bounded in time, while worker threads do all I/O. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "args.h"
#include "bench.h"
#include "procstat.h"
#include "report.h"
#include "worker.h"

static void main_sleep_ns(int64_t ns)
{
    if (ns <= 0)
        return;
    struct timespec ts = {ns / 1000000000LL, ns % 1000000000LL};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* --server-pid may name several processes (cluster nodes): CPU and RSS are
 * summed; false if any of them cannot be read. */
static bool main_server_cpu(const bench_args *a, double *sec)
{
    double sum = 0, v;
    for (uint32_t i = 0; i < a->nserver_pids; i++) {
        if (!procstat_cpu(a->server_pids[i], &v))
            return false;
        sum += v;
    }
    *sec = sum;
    return true;
}

static bool main_server_rss(const bench_args *a, long *kb)
{
    long sum = 0, v;
    for (uint32_t i = 0; i < a->nserver_pids; i++) {
        if (!procstat_rss_kb(a->server_pids[i], &v))
            return false;
        sum += v;
    }
    *kb = sum;
    return true;
}

static void main_set_phase(bench_run *run, int ph)
{
    atomic_store_explicit(&run->phase, ph, memory_order_release);
}

/* Waits until every worker has acted on phase ph (and, for connect phases,
 * finished connecting), or until the deadline. */
static bool main_wait_workers(bench_run *run, int ph, bool connect, int64_t deadline)
{
    for (;;) {
        bool all = true;
        for (uint32_t i = 0; i < run->nworkers; i++) {
            worker *w = &run->workers[i];
            if (atomic_load(&w->exited))
                continue;
            if (connect ? atomic_load(&w->connect_done) != ph : atomic_load(&w->phase_seen) < ph)
                all = false;
        }
        if (all)
            return true;
        if (bench_now() >= deadline)
            return false;
        main_sleep_ns(2000000);
    }
}

static uint64_t main_sum(bench_run *run, size_t offset)
{
    uint64_t s = 0;
    for (uint32_t i = 0; i < run->nworkers; i++) {
        _Atomic uint64_t *f = (_Atomic uint64_t *)((char *)&run->workers[i].st + offset);
        s += atomic_load_explicit(f, memory_order_relaxed);
    }
    return s;
}

#define SUM(run, field) main_sum(run, offsetof(worker_stats, field))

/* RLIMIT_NOFILE up to the hard limit; false if it cannot cover need. */
static bool main_raise_nofile(uint64_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return false;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        fprintf(stderr,
                "herald-bench: need about %llu file descriptors, RLIMIT_NOFILE allows %llu "
                "(hard limit %llu)\n",
                (unsigned long long)need, (unsigned long long)rl.rlim_cur,
                (unsigned long long)rl.rlim_max);
        return false;
    }
    return true;
}

/* --payload json: notifications as an app would publish them (ids, names,
 * timestamps and titles vary; keys repeat), cut to n bytes. Fixed seed: every
 * run and every server gets the same bytes. */
static void main_json_filler(uint8_t *out, uint32_t n)
{
    static const char *const words[] = {"order", "shipped", "your", "package", "arrives",
        "tomorrow", "payment", "received", "invoice", "account", "updated", "new", "message",
        "from", "team", "review", "requested", "build", "passed", "deploy", "ready", "failed"};
    uint64_t x = 0x9e3779b97f4a7c15ull;
    char rec[320];
    uint32_t k = 0;
    while (k < n) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int len = snprintf(rec, sizeof rec,
                           "{\"id\":\"n-%06u\",\"user\":{\"id\":%u,\"name\":\"user%u\"},"
                           "\"created_at\":\"2026-12-%02uT%02u:%02u:%02uZ\",\"read\":%s,"
                           "\"title\":\"%s %s %s %s\"},",
                           (unsigned)(x % 1000000), (unsigned)(x >> 20) % 100000,
                           (unsigned)(x >> 40) % 1000, 1 + (unsigned)(x >> 8) % 28,
                           (unsigned)(x >> 16) % 24, (unsigned)(x >> 24) % 60,
                           (unsigned)(x >> 32) % 60, (x >> 5) & 1 ? "true" : "false",
                           words[(x >> 3) % 22], words[(x >> 11) % 22], words[(x >> 19) % 22],
                           words[(x >> 27) % 22]);
        for (int i = 0; i < len && k < n; i++)
            out[k++] = (uint8_t)rec[i];
    }
}

static bool main_setup(bench_run *run, const bench_args *a)
{
    memset(run, 0, sizeof *run);
    run->a = a;
    if (a->tls) {
        /* a local benchmark target with a self-signed certificate: no
         * verification, no SNI, no session resumption */
        run->tls_ctx = SSL_CTX_new(TLS_client_method());
        if (!run->tls_ctx) {
            fprintf(stderr, "herald-bench: SSL_CTX_new failed\n");
            return false;
        }
        SSL_CTX_set_verify(run->tls_ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_min_proto_version(run->tls_ctx, TLS1_2_VERSION);
        SSL_CTX_set_session_cache_mode(run->tls_ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(run->tls_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
        /* writes resume from wherever the publisher buffer's head moved to;
         * idle connections give their record buffers back (no frames flow) */
        SSL_CTX_set_mode(run->tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                           SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                           (a->idle ? SSL_MODE_RELEASE_BUFFERS : 0));
        /* one recv per batch of records instead of two per record */
        SSL_CTX_set_read_ahead(run->tls_ctx, 1);
    }
    run->key_seed = bench_mix64((uint64_t)bench_now() ^ ((uint64_t)getpid() << 32));
    run->sat_timeout_ns = (int64_t)((a->grace > 0.2 ? a->grace : 0.2) * 1e9);
    run->filler = malloc(a->size);
    run->group_live = calloc(a->groups, sizeof *run->group_live);
    run->group_expect = calloc(a->groups, sizeof *run->group_expect);
    run->pub_by_id = calloc(a->publishers ? a->publishers : 1, sizeof *run->pub_by_id);
    run->nworkers = a->threads;
    run->workers = calloc(a->threads, sizeof *run->workers);
    if (!run->filler || !run->group_live || !run->group_expect || !run->pub_by_id || !run->workers) {
        fprintf(stderr, "herald-bench: out of memory\n");
        return false;
    }
    if (a->json_payload)
        main_json_filler(run->filler, a->size);
    else
        for (uint32_t i = 0; i < a->size; i++)
            run->filler[i] = (uint8_t)('a' + i % 26);
    for (uint32_t i = 0; i < a->threads; i++)
        if (!worker_init(&run->workers[i], run, i))
            return false;
    return true;
}

static void main_teardown(bench_run *run)
{
    if (run->workers)
        for (uint32_t i = 0; i < run->nworkers; i++)
            worker_free(&run->workers[i]);
    free(run->workers);
    if (run->tls_ctx)
        SSL_CTX_free(run->tls_ctx);
    free(run->filler);
    free((void *)run->group_live);
    free(run->group_expect);
    free(run->pub_by_id);
}

static const char *main_first_error(bench_run *run)
{
    for (uint32_t i = 0; i < run->nworkers; i++)
        if (run->workers[i].first_err[0])
            return run->workers[i].first_err;
    return NULL;
}

int main(int argc, char **argv)
{
    bench_args a;
    int rc = args_parse(argc, argv, &a);
    if (rc == ARGS_HELP) {
        args_usage(stdout);
        return 0;
    }
    if (rc != ARGS_OK)
        return 2;
    signal(SIGPIPE, SIG_IGN);

    uint64_t conns = (uint64_t)a.subscribers + (a.idle ? 0 : a.publishers);
    if (!main_raise_nofile(conns + 3ull * a.threads + 16))
        return 1;
    bench_result res = {.a = &a};
    double cpu0 = 0, cpu1 = 0;
    if (a.server_pid) {
        if (!main_server_cpu(&a, &cpu0) || !main_server_rss(&a, &res.rss_before_kb)) {
            fprintf(stderr, "herald-bench: cannot read /proc/PID of --server-pid\n");
            return 1;
        }
    }

    bench_run run;
    if (!main_setup(&run, &a)) {
        main_teardown(&run);
        return 1;
    }
    for (uint32_t i = 0; i < run.nworkers; i++) {
        if (pthread_create(&run.workers[i].th, NULL, worker_main, &run.workers[i]) != 0) {
            fprintf(stderr, "herald-bench: cannot start thread %u\n", i);
            /* threads already started follow the phase to the end */
            run.nworkers = i;
            main_set_phase(&run, PH_CLOSE);
            for (uint32_t k = 0; k < i; k++)
                pthread_join(run.workers[k].th, NULL);
            main_teardown(&run);
            return 1;
        }
    }

    /* every connection has its own deadline; this bound only guards against
     * a bug keeping a worker from ever reporting */
    int64_t t_connect0 = bench_now();
    int64_t connect_bound = (int64_t)((a.connect_timeout + 5) * 1e9) *
                            (int64_t)(conns / a.connect_concurrency + 2);
    main_set_phase(&run, PH_CONNECT_SUBS);
    bool setup_ok = main_wait_workers(&run, PH_CONNECT_SUBS, true, t_connect0 + connect_bound);
    for (uint32_t g = 0; g < a.groups; g++)
        run.group_expect[g] = atomic_load(&run.group_live[g]);
    if (setup_ok && !a.idle) {
        main_set_phase(&run, PH_CONNECT_PUBS);
        setup_ok = main_wait_workers(&run, PH_CONNECT_PUBS, true, bench_now() + connect_bound);
    }
    res.connect_seconds = (double)(bench_now() - t_connect0) / 1e9;
    res.sub_ok = SUM(&run, sub_ok);
    res.pub_ok = SUM(&run, pub_ok);
    if (!setup_ok)
        fprintf(stderr, "herald-bench: connect phase did not finish in time\n");
    else if (a.subscribers > 0 && res.sub_ok == 0)
        setup_ok = false;
    else if (!a.idle && res.pub_ok == 0)
        setup_ok = false;

    int64_t t_run0 = 0, t_run1 = 0;
    if (setup_ok && a.idle) {
        if (a.server_pid)
            main_server_cpu(&a, &cpu0);
        t_run0 = bench_now();
        main_set_phase(&run, PH_RUN);
        main_sleep_ns((int64_t)(a.duration * 1e9));
        t_run1 = bench_now();
    } else if (setup_ok) {
        run.t_pub0 = bench_now();
        if (a.warmup > 0) {
            main_set_phase(&run, PH_WARMUP);
            main_sleep_ns((int64_t)(a.warmup * 1e9));
        }
        if (a.server_pid)
            main_server_cpu(&a, &cpu0);
        t_run0 = bench_now();
        main_set_phase(&run, PH_RUN);
        main_sleep_ns((int64_t)(a.duration * 1e9));
        t_run1 = bench_now();
        main_set_phase(&run, PH_GRACE);
        /* wait for stragglers: until all expected deliveries are in, or the
         * grace period is over (counts are final once workers stopped publishing) */
        int64_t grace_end = t_run1 + (int64_t)(a.grace * 1e9);
        main_wait_workers(&run, PH_GRACE, false, grace_end);
        while (bench_now() < grace_end && SUM(&run, delivered) < SUM(&run, expected))
            main_sleep_ns(2000000);
    }
    if (setup_ok && a.server_pid) {
        res.have_cpu = main_server_cpu(&a, &cpu1);
        res.server_cpu = cpu1 - cpu0;
        res.have_rss = main_server_rss(&a, &res.rss_kb);
    }
    main_set_phase(&run, PH_CLOSE);
    for (uint32_t i = 0; i < run.nworkers; i++)
        pthread_join(run.workers[i].th, NULL);

    hist lat;
    hist_init(&lat);
    for (uint32_t i = 0; i < run.nworkers; i++)
        hist_merge(&lat, &run.workers[i].lat);
    res.lat = &lat;
    res.failed = SUM(&run, failed);
    res.fail_connect = SUM(&run, fail_connect);
    res.fail_handshake = SUM(&run, fail_handshake);
    res.fail_timeout = SUM(&run, fail_timeout);
    res.first_error = main_first_error(&run);
    if (!setup_ok) {
        fprintf(stderr, "herald-bench: setup failed: %llu of %llu connections failed (first: %s)\n",
                (unsigned long long)res.failed, (unsigned long long)conns,
                res.first_error ? res.first_error : "none");
        main_teardown(&run);
        return 1;
    }
    res.published = SUM(&run, published);
    res.expected = SUM(&run, expected);
    res.delivered = SUM(&run, delivered);
    res.lost = res.expected > res.delivered ? res.expected - res.delivered : 0;
    res.duplicated = SUM(&run, duplicated);
    res.out_of_order = SUM(&run, out_of_order);
    res.unexpected = SUM(&run, unexpected);
    res.invalid = SUM(&run, invalid);
    res.size_mismatch = SUM(&run, size_mismatch);
    res.skipped = SUM(&run, skipped);
    res.timed_out = SUM(&run, timed_out);
    res.disconnects = SUM(&run, disconnects);
    res.protocol_errors = SUM(&run, protocol_errors);
    res.pings = SUM(&run, pings);
    res.sub_bytes = SUM(&run, sub_bytes);
    int64_t last = 0;
    for (uint32_t i = 0; i < run.nworkers; i++) {
        int64_t l = atomic_load(&run.workers[i].st.last_delivery_ns);
        if (l > last)
            last = l;
    }
    /* deliveries still arriving after publishing stopped belong to the run */
    int64_t span = (last > t_run1 ? last : t_run1) - t_run0;
    res.measured_seconds = (double)span / 1e9;
    res.deliveries_per_sec = span > 0 ? (double)res.delivered * 1e9 / (double)span : 0;
    res.client_cpu = procstat_self_cpu();
    if (a.json)
        report_json(stdout, &res);
    else
        report_text(stdout, &res);
    fflush(stdout);
    main_teardown(&run);
    return 0;
}
