#include "report.h"

#include <string.h>

static const char *report_mode(const bench_args *a)
{
    return a->idle ? "idle" : a->saturate ? "saturate" : "rate";
}

static double report_ms(const hist *h, double q)
{
    return (double)hist_quantile(h, q) / 1e6;
}

static double report_cpu_per_1k(const bench_result *r)
{
    return r->delivered ? r->server_cpu * 1e6 / ((double)r->delivered / 1000.0) : 0;
}

void report_text(FILE *out, const bench_result *r)
{
    const bench_args *a = r->a;
    fprintf(out, "herald-bench %s: %u subscribers, %u publishers, %u groups, %u B",
            report_mode(a), a->subscribers, a->idle ? 0 : a->publishers, a->groups, a->size);
    if (!a->idle) {
        if (a->saturate)
            fprintf(out, ", window %u", a->window);
        else
            fprintf(out, ", %g msg/s", a->rate);
    }
    fprintf(out, ", %g s, %u thread%s", a->duration, a->threads, a->threads == 1 ? "" : "s");
    if (a->tls)
        fprintf(out, ", TLS");
    if (a->format != FMT_RAW)
        fprintf(out, ", format %s", args_format_name(a->format));
    if (a->deflate)
        fprintf(out, ", permessage-deflate");
    if (a->nports > 1)
        fprintf(out, ", %u nodes", a->nports);
    fputc('\n', out);
    fprintf(out, "connections   ok %llu (%llu subscribers, %llu publishers)  failed %llu"
                 " (connect %llu, handshake %llu, timeout %llu)  in %.3f s\n",
            (unsigned long long)(r->sub_ok + r->pub_ok), (unsigned long long)r->sub_ok,
            (unsigned long long)r->pub_ok, (unsigned long long)r->failed,
            (unsigned long long)r->fail_connect, (unsigned long long)r->fail_handshake,
            (unsigned long long)r->fail_timeout, r->connect_seconds);
    if (!a->idle) {
        fprintf(out, "published     %llu  (not sent, publisher backed up: %llu)\n",
                (unsigned long long)r->published, (unsigned long long)r->skipped);
        fprintf(out, "deliveries    expected %llu  delivered %llu  lost %llu  duplicated %llu"
                     "  out-of-order %llu\n",
                (unsigned long long)r->expected, (unsigned long long)r->delivered,
                (unsigned long long)r->lost, (unsigned long long)r->duplicated,
                (unsigned long long)r->out_of_order);
        fprintf(out, "throughput    %.0f deliveries/s over %.3f s\n", r->deliveries_per_sec,
                r->measured_seconds);
        if (r->delivered)
            fprintf(out, "wire          %.1f bytes read per delivery (frames, control frames too)\n",
                    (double)r->sub_bytes / (double)r->delivered);
        fprintf(out, "latency ms    p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n",
                report_ms(r->lat, 0.5), report_ms(r->lat, 0.9), report_ms(r->lat, 0.99),
                report_ms(r->lat, 0.999), (double)r->lat->max / 1e6);
    }
    if (r->unexpected || r->invalid || r->size_mismatch || r->timed_out || r->disconnects ||
        r->protocol_errors)
        fprintf(out, "anomalies     unexpected %llu  invalid %llu  size-mismatch %llu"
                     "  window-timeouts %llu  disconnects %llu  protocol-errors %llu\n",
                (unsigned long long)r->unexpected, (unsigned long long)r->invalid,
                (unsigned long long)r->size_mismatch, (unsigned long long)r->timed_out,
                (unsigned long long)r->disconnects, (unsigned long long)r->protocol_errors);
    if (r->have_cpu && !a->idle)
        fprintf(out, "server cpu    %.3f s  (%.2f us per 1,000 deliveries)\n", r->server_cpu,
                report_cpu_per_1k(r));
    if (r->have_rss) {
        fprintf(out, "server rss    %ld KiB (before connecting: %ld KiB", r->rss_kb, r->rss_before_kb);
        if (r->sub_ok)
            fprintf(out, ", %.0f B per subscriber",
                    (double)(r->rss_kb - r->rss_before_kb) * 1024.0 / (double)r->sub_ok);
        fprintf(out, ")\n");
    }
    fprintf(out, "client cpu    %.3f s\n", r->client_cpu);
    if (r->first_error && r->first_error[0])
        fprintf(out, "first error   %s\n", r->first_error);
}

static void report_json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(out, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(out, "\\u%04x", ch);
        else
            fputc(ch, out);
    }
    fputc('"', out);
}

void report_json(FILE *out, const bench_result *r)
{
    const bench_args *a = r->a;
    const hist *h = r->lat;
    fprintf(out, "{\"mode\":\"%s\",\"subscribers\":%u,\"publishers\":%u,\"groups\":%u,\"size\":%u,"
                 "\"rate\":%g,\"window\":%u,\"duration\":%g,\"threads\":%u,"
                 "\"format\":\"%s\",\"tls\":%s,\"deflate\":%s,\"nodes\":%u,",
            report_mode(a), a->subscribers, a->idle ? 0 : a->publishers, a->groups, a->size,
            a->saturate || a->idle ? 0 : a->rate, a->saturate ? a->window : 0, a->duration, a->threads,
            args_format_name(a->format), a->tls ? "true" : "false", a->deflate ? "true" : "false",
            a->nports);
    fprintf(out, "\"connections_ok\":%llu,\"connections_failed\":%llu,\"connect_seconds\":%.6f,"
                 "\"subscribers_ok\":%llu,\"publishers_ok\":%llu,",
            (unsigned long long)(r->sub_ok + r->pub_ok), (unsigned long long)r->failed,
            r->connect_seconds, (unsigned long long)r->sub_ok, (unsigned long long)r->pub_ok);
    fprintf(out, "\"published\":%llu,\"expected\":%llu,\"delivered\":%llu,\"lost\":%llu,"
                 "\"duplicated\":%llu,\"out_of_order\":%llu,\"deliveries_per_sec\":%.1f,"
                 "\"measured_seconds\":%.6f,",
            (unsigned long long)r->published, (unsigned long long)r->expected,
            (unsigned long long)r->delivered, (unsigned long long)r->lost,
            (unsigned long long)r->duplicated, (unsigned long long)r->out_of_order,
            r->deliveries_per_sec, r->measured_seconds);
    fprintf(out, "\"p50_ms\":%.4f,\"p90_ms\":%.4f,\"p99_ms\":%.4f,\"p999_ms\":%.4f,\"max_ms\":%.4f,",
            report_ms(h, 0.5), report_ms(h, 0.9), report_ms(h, 0.99), report_ms(h, 0.999),
            (double)h->max / 1e6);
    if (r->have_cpu && !a->idle)
        fprintf(out, "\"server_cpu_seconds\":%.4f,\"server_cpu_us_per_1k\":%.4f,", r->server_cpu,
                report_cpu_per_1k(r));
    else if (r->have_cpu)
        fprintf(out, "\"server_cpu_seconds\":%.4f,\"server_cpu_us_per_1k\":null,", r->server_cpu);
    else
        fprintf(out, "\"server_cpu_seconds\":null,\"server_cpu_us_per_1k\":null,");
    if (r->have_rss)
        fprintf(out, "\"server_rss_kb\":%ld,\"server_rss_before_kb\":%ld,"
                     "\"server_rss_per_conn_bytes\":%.1f,",
                r->rss_kb, r->rss_before_kb,
                r->sub_ok ? (double)(r->rss_kb - r->rss_before_kb) * 1024.0 / (double)r->sub_ok
                          : 0.0);
    else
        fprintf(out, "\"server_rss_kb\":null,\"server_rss_before_kb\":null,"
                     "\"server_rss_per_conn_bytes\":null,");
    fprintf(out, "\"subscriber_bytes_in\":%llu,\"wire_bytes_per_delivery\":",
            (unsigned long long)r->sub_bytes);
    if (r->delivered)
        fprintf(out, "%.1f,", (double)r->sub_bytes / (double)r->delivered);
    else
        fprintf(out, "null,");
    fprintf(out, "\"skipped\":%llu,\"window_timeouts\":%llu,\"unexpected\":%llu,\"invalid\":%llu,"
                 "\"size_mismatch\":%llu,\"disconnects\":%llu,\"protocol_errors\":%llu,"
                 "\"pings_answered\":%llu,\"connect_failures\":{\"connect\":%llu,\"handshake\":%llu,"
                 "\"timeout\":%llu},\"client_cpu_seconds\":%.4f,\"first_error\":",
            (unsigned long long)r->skipped, (unsigned long long)r->timed_out,
            (unsigned long long)r->unexpected, (unsigned long long)r->invalid,
            (unsigned long long)r->size_mismatch, (unsigned long long)r->disconnects,
            (unsigned long long)r->protocol_errors, (unsigned long long)r->pings,
            (unsigned long long)r->fail_connect, (unsigned long long)r->fail_handshake,
            (unsigned long long)r->fail_timeout, r->client_cpu);
    if (r->first_error && r->first_error[0])
        report_json_string(out, r->first_error);
    else
        fputs("null", out);
    fputs("}\n", out);
}
