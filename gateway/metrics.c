/* gateway/metrics.c - Prometheus metrics: process-wide lock-free counters
 * fed by gw_observe (requests by operation and status, latency histograms,
 * bytes), and the text exposition served at GET /_cairn/metrics with
 * storage per bucket (from the folded usage state), the event queue depth
 * and drive health. */
#include "gateway/gw_int.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define NSTATUS 600
static const double bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NB (sizeof bounds / sizeof bounds[0])

/* All updated with relaxed atomics; a scrape may see a request in one
 * counter and not yet in another, as Prometheus allows. */
static uint64_t nreq[GW_OP__COUNT][NSTATUS];
static uint64_t hist[GW_OP__COUNT][NB + 1]; /* per bucket, not cumulative; last is +Inf */
static uint64_t sum_us[GW_OP__COUNT];
static uint64_t bytes_in_total, bytes_out_total;
static uint64_t event_depth;

void gw_metrics_request(enum gw_op op, int status, uint64_t bytes_in, uint64_t bytes_out,
                        double seconds)
{
    if ((unsigned)op >= GW_OP__COUNT)
        return;
    if (status < 100 || status >= NSTATUS)
        status = 0;
    __atomic_fetch_add(&nreq[op][status], 1, __ATOMIC_RELAXED);
    size_t b = 0;
    while (b < NB && seconds > bounds[b])
        b++;
    __atomic_fetch_add(&hist[op][b], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&sum_us[op], (uint64_t)(seconds > 0 ? seconds * 1e6 : 0),
                       __ATOMIC_RELAXED);
    __atomic_fetch_add(&bytes_in_total, bytes_in, __ATOMIC_RELAXED);
    __atomic_fetch_add(&bytes_out_total, bytes_out, __ATOMIC_RELAXED);
}

void gw_metrics_set_event_queue_depth(uint64_t n)
{
    __atomic_store_n(&event_depth, n, __ATOMIC_RELAXED);
}

/* A label value with \, " and newline escaped. */
static void label(cm_buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            cm_buf_printf(b, "\\%c", *s);
        else if (*s == '\n')
            cm_buf_append_str(b, "\\n");
        else
            cm_buf_append_byte(b, (uint8_t)*s);
    }
}

static void drives(gw_server *srv, cm_buf *b)
{
    const gw_config *c = &srv->cfg;
    char path[4096];
    cm_buf_append_str(b, "# HELP cairn_drive_up Whether a shard drive directory is usable "
                         "(1) or not (0).\n# TYPE cairn_drive_up gauge\n");
    int n = 0;
    const char *p = c->drives && c->drives[0] ? c->drives : NULL;
    int want = c->ec_k + c->ec_m;
    for (int i = 0;; i++) {
        if (p) {
            if (!*p)
                break;
            size_t len = strcspn(p, ",");
            snprintf(path, sizeof path, "%.*s", (int)len, p);
            p += len + (p[len] == ',');
        } else {
            if (i >= want)
                break;
            snprintf(path, sizeof path, "%s/drive%d", c->data_dir, i + 1);
        }
        struct stat st;
        int up = stat(path, &st) == 0 && S_ISDIR(st.st_mode) && access(path, W_OK | X_OK) == 0;
        cm_buf_append_str(b, "cairn_drive_up{drive=\"");
        label(b, path);
        cm_buf_printf(b, "\"} %d\n", up);
        if (++n >= 64)
            break;
    }
}

void gw_metrics_render(gw_server *srv, cm_buf *b)
{
    cm_buf_append_str(b, "# HELP cairn_requests_total Requests answered, by operation and "
                         "HTTP status.\n# TYPE cairn_requests_total counter\n");
    for (int op = 0; op < GW_OP__COUNT; op++)
        for (int s = 0; s < NSTATUS; s++) {
            uint64_t v = __atomic_load_n(&nreq[op][s], __ATOMIC_RELAXED);
            if (v)
                cm_buf_printf(b, "cairn_requests_total{op=\"%s\",status=\"%d\"} %llu\n",
                              gw_ops[op].name, s, (unsigned long long)v);
        }
    cm_buf_append_str(b, "# HELP cairn_request_duration_seconds Time from the request's "
                         "first byte to its end, by operation.\n"
                         "# TYPE cairn_request_duration_seconds histogram\n");
    for (int op = 0; op < GW_OP__COUNT; op++) {
        uint64_t cum = 0, h[NB + 1];
        for (size_t i = 0; i <= NB; i++)
            cum += h[i] = __atomic_load_n(&hist[op][i], __ATOMIC_RELAXED);
        if (!cum)
            continue;
        cum = 0;
        for (size_t i = 0; i < NB; i++) {
            cum += h[i];
            cm_buf_printf(b, "cairn_request_duration_seconds_bucket{op=\"%s\",le=\"%g\"} %llu\n",
                          gw_ops[op].name, bounds[i], (unsigned long long)cum);
        }
        cum += h[NB];
        cm_buf_printf(b, "cairn_request_duration_seconds_bucket{op=\"%s\",le=\"+Inf\"} %llu\n",
                      gw_ops[op].name, (unsigned long long)cum);
        cm_buf_printf(b, "cairn_request_duration_seconds_sum{op=\"%s\"} %.6f\n", gw_ops[op].name,
                      (double)__atomic_load_n(&sum_us[op], __ATOMIC_RELAXED) / 1e6);
        cm_buf_printf(b, "cairn_request_duration_seconds_count{op=\"%s\"} %llu\n",
                      gw_ops[op].name, (unsigned long long)cum);
    }
    cm_buf_printf(b,
                  "# HELP cairn_bytes_in_total Request body bytes received.\n"
                  "# TYPE cairn_bytes_in_total counter\ncairn_bytes_in_total %llu\n"
                  "# HELP cairn_bytes_out_total Response body bytes sent.\n"
                  "# TYPE cairn_bytes_out_total counter\ncairn_bytes_out_total %llu\n",
                  (unsigned long long)__atomic_load_n(&bytes_in_total, __ATOMIC_RELAXED),
                  (unsigned long long)__atomic_load_n(&bytes_out_total, __ATOMIC_RELAXED));
    /* Storage per bucket, from the usage state (folded first: exact). */
    md_storage_state *st = NULL;
    md_bucket *bk = NULL;
    size_t nst = 0, nbk = 0;
    md_usage_fold(srv->md, NULL);
    if (md_storage_list(srv->md, &st, &nst))
        nst = 0;
    if (md_bucket_list(srv->md, &bk, &nbk))
        nbk = 0;
    static const char *what[2] = {"objects", "bytes"};
    for (int w = 0; w < 2; w++) {
        cm_buf_printf(b, "# HELP cairn_bucket_%s Stored %s per bucket.\n"
                         "# TYPE cairn_bucket_%s gauge\n",
                      what[w], what[w], what[w]);
        for (size_t i = 0; i < nbk; i++) {
            uint64_t v = 0;
            for (size_t j = 0; j < nst; j++)
                if (!strcmp(st[j].bucket, bk[i].name))
                    v = w ? st[j].bytes : st[j].objects;
            cm_buf_printf(b, "cairn_bucket_%s{bucket=\"", what[w]);
            label(b, bk[i].name);
            cm_buf_printf(b, "\"} %llu\n", (unsigned long long)v);
        }
    }
    free(st);
    free(bk);
    gw_upkeep_metrics(srv, b);
    cm_buf_printf(b,
                  "# HELP cairn_event_queue_depth Events waiting in the outbox.\n"
                  "# TYPE cairn_event_queue_depth gauge\ncairn_event_queue_depth %llu\n",
                  (unsigned long long)__atomic_load_n(&event_depth, __ATOMIC_RELAXED));
    drives(srv, b);
}
