/* billing/report.c - the usage report: folds pending records, scans hourly
 * counters and storage byte-hours in a time range, groups them by the asked
 * dimensions (always also by class and status class), prices them under a
 * price sheet and writes one JSON document. Formatting as table or CSV is
 * the CLI's (gateway/admin_cli_usage.c). */
#include "billing/bill.h"
#include "common/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define HOUR_MS 3600000ll

int bill_time_parse(const char *s, int64_t *out_ms)
{
    struct tm tm;
    int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0, ms = 0, n = 0;
    const char *p = s;

    memset(&tm, 0, sizeof tm);
    if (sscanf(p, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10)
        return CM_EINVAL;
    p += n;
    if (*p == 'T' || *p == ' ') {
        p++;
        if (sscanf(p, "%2d%n", &h, &n) != 1 || n != 2)
            return CM_EINVAL;
        p += 2;
        if (*p == ':') {
            if (sscanf(p + 1, "%2d%n", &mi, &n) != 1 || n != 2)
                return CM_EINVAL;
            p += 3;
            if (*p == ':') {
                if (sscanf(p + 1, "%2d%n", &sec, &n) != 1 || n != 2)
                    return CM_EINVAL;
                p += 3;
                if (*p == '.') {
                    int digits = 0;
                    for (p++; *p >= '0' && *p <= '9'; p++, digits++)
                        if (digits < 3)
                            ms = ms * 10 + (*p - '0');
                    for (; digits < 3; digits++)
                        ms *= 10;
                }
            }
        }
    }
    if (*p == 'Z')
        p++;
    else if (!strcmp(p, "+00:00"))
        p += 6;
    if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return CM_EINVAL;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    *out_ms = (int64_t)timegm(&tm) * 1000 + ms;
    return 0;
}

int bill_by_parse(const char *s, unsigned *out)
{
    static const struct {
        const char *w;
        unsigned bit;
    } words[] = {{"hour", BILL_BY_HOUR},      {"day", BILL_BY_DAY},
                 {"bucket", BILL_BY_BUCKET},  {"access-key", BILL_BY_KEY},
                 {"access_key", BILL_BY_KEY}, {"key", BILL_BY_KEY},
                 {"operation", BILL_BY_OP},   {"op", BILL_BY_OP}};
    unsigned by = 0;
    while (*s) {
        size_t n = strcspn(s, ",");
        bool found = false;
        for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
            if (strlen(words[i].w) == n && !strncmp(words[i].w, s, n)) {
                by |= words[i].bit;
                found = true;
            }
        }
        if (!found)
            return CM_EINVAL;
        s += n;
        if (*s == ',')
            s++;
    }
    *out = by;
    return 0;
}

/* ---------------------------------------------------------- grouping */
typedef struct row {
    char *gkey;               /* group key: period \1 bucket \1 key \1 op \1 class \1 sc */
    char period[32];
    char bucket[MD_BUCKET_MAX + 1];
    char access_key[133];
    char op[64];
    uint8_t cls, sc;
    uint64_t requests, billable, bytes_in, bytes_out;
    double byte_hours;        /* storage rows */
} row;

typedef struct rows {
    row *a;
    size_t n, cap;
} rows;

typedef struct scan_ctx {
    const bill_query *q;
    unsigned by;
    rows r;
    int rc;
} scan_ctx;

static void fmt_period(unsigned by, int64_t hour, char *out, size_t n)
{
    time_t t = (time_t)(hour * 3600);
    struct tm tm;
    gmtime_r(&t, &tm);
    if (by & BILL_BY_HOUR)
        strftime(out, n, "%Y-%m-%dT%H:00:00Z", &tm);
    else if (by & BILL_BY_DAY)
        strftime(out, n, "%Y-%m-%d", &tm);
    else
        snprintf(out, n, "*");
}

static row *rows_add(rows *r)
{
    if (r->n == r->cap) {
        size_t nc = r->cap ? r->cap * 2 : 64;
        row *na = realloc(r->a, nc * sizeof *na);
        if (!na)
            return NULL;
        r->a = na;
        r->cap = nc;
    }
    row *e = &r->a[r->n++];
    memset(e, 0, sizeof *e);
    return e;
}

static void rows_free(rows *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->a[i].gkey);
    free(r->a);
    memset(r, 0, sizeof *r);
}

static int set_gkey(row *e)
{
    int n = asprintf(&e->gkey, "%s\001%s\001%s\001%s\001%u\001%u", e->period, e->bucket,
                     e->access_key, e->op, e->cls, e->sc);
    return n < 0 ? CM_ENOMEM : 0;
}

static int on_ctr(void *arg, const md_usage_ctr *c)
{
    scan_ctx *s = arg;
    const bill_query *q = s->q;
    if (q->bucket && strcmp(q->bucket, c->bucket))
        return 0;
    if (q->access_key && strcmp(q->access_key, c->access_key))
        return 0;
    row *e = rows_add(&s->r);
    if (!e)
        return CM_ENOMEM;
    fmt_period(s->by, c->hour, e->period, sizeof e->period);
    snprintf(e->bucket, sizeof e->bucket, "%s", s->by & BILL_BY_BUCKET ? c->bucket : "*");
    snprintf(e->access_key, sizeof e->access_key, "%s",
             s->by & BILL_BY_KEY ? (c->access_key[0] ? c->access_key : "-") : "*");
    snprintf(e->op, sizeof e->op, "%s", s->by & BILL_BY_OP ? c->op : "*");
    e->cls = c->cls;
    e->sc = c->status_class;
    e->requests = c->requests;
    e->billable = c->billable;
    e->bytes_in = c->bytes_in;
    e->bytes_out = c->bytes_out;
    return set_gkey(e);
}

static int add_storage(scan_ctx *s, int64_t hour, const char *bucket, double bh)
{
    const bill_query *q = s->q;
    if (q->bucket && strcmp(q->bucket, bucket))
        return 0;
    if (bh <= 0)
        return 0;
    row *e = rows_add(&s->r);
    if (!e)
        return CM_ENOMEM;
    fmt_period(s->by, hour, e->period, sizeof e->period);
    snprintf(e->bucket, sizeof e->bucket, "%s", s->by & BILL_BY_BUCKET ? bucket : "*");
    snprintf(e->access_key, sizeof e->access_key, "*");
    snprintf(e->op, sizeof e->op, "*");
    e->byte_hours = bh;
    return set_gkey(e);
}

static int on_storage(void *arg, int64_t hour, const char *bucket, double bh)
{
    return add_storage(arg, hour, bucket, bh);
}

static int row_cmp(const void *a, const void *b)
{
    return strcmp(((const row *)a)->gkey, ((const row *)b)->gkey);
}

/* Sorts by group key and merges equal keys in place. */
static void rows_merge(rows *r)
{
    size_t w = 0;
    if (!r->n)
        return;
    qsort(r->a, r->n, sizeof *r->a, row_cmp);
    for (size_t i = 1; i < r->n; i++) {
        row *d = &r->a[w], *x = &r->a[i];
        if (!strcmp(d->gkey, x->gkey)) {
            d->requests += x->requests;
            d->billable += x->billable;
            d->bytes_in += x->bytes_in;
            d->bytes_out += x->bytes_out;
            d->byte_hours += x->byte_hours;
            free(x->gkey);
            x->gkey = NULL;
        } else {
            r->a[++w] = *x;
        }
    }
    r->n = w + 1;
}

static const char *sc_name(uint8_t sc)
{
    static const char *names[] = {"0xx", "1xx", "2xx", "3xx", "4xx", "5xx",
                                  "6xx", "7xx", "8xx", "9xx"};
    return names[sc <= 9 ? sc : 0];
}

static double req_cost(const bill_prices *p, uint8_t cls, uint64_t billable, uint64_t in,
                       uint64_t out)
{
    double c = 0;
    if (cls == BILL_A)
        c += (double)billable * p->class_a_per_million / 1e6;
    else if (cls == BILL_B)
        c += (double)billable * p->class_b_per_million / 1e6;
    c += (double)out / p->gb_bytes * p->egress_per_gb;
    c += (double)in / p->gb_bytes * p->ingress_per_gb;
    return c;
}

static void json_time(cm_buf *b, int64_t ms, bool bounded)
{
    if (!bounded) {
        cm_buf_append_str(b, "null");
        return;
    }
    char t[32];
    cm_time_iso8601_ms(ms, t);
    cm_json_cstr(b, t);
}

int bill_report_json(md_db_t *md, const bill_query *q, const bill_prices *p, cm_buf *out)
{
    scan_ctx s = {.q = q, .by = q->by ? q->by : BILL_BY_DEFAULT};
    md_storage_state *st = NULL;
    size_t nst = 0;
    int rc;
    bool from_b = q->from_ms != INT64_MIN, to_b = q->to_ms != INT64_MAX;
    int64_t from_h = from_b ? (q->from_ms >= 0 ? q->from_ms / HOUR_MS : 0) : 0;
    int64_t to_h = to_b ? (q->to_ms + HOUR_MS - 1) / HOUR_MS : INT64_MAX;

    if ((rc = md_usage_fold(md, NULL)))
        return rc;
    if ((rc = md_usage_scan(md, from_h, to_h, on_ctr, &s)))
        goto out;
    /* Storage has no access key: a report for one key leaves it out. */
    if (!q->access_key) {
        if ((rc = md_storage_scan(md, from_h, to_h, on_storage, &s)) ||
            (rc = md_storage_list(md, &st, &nst)))
            goto out;
        /* Extrapolate each bucket's current size from its last change. */
        int64_t end = q->now_ms;
        if (to_b && to_h * HOUR_MS < end)
            end = to_h * HOUR_MS;
        for (size_t i = 0; i < nst; i++) {
            int64_t t = st[i].last_ms;
            if (t < from_h * HOUR_MS)
                t = from_h * HOUR_MS;
            while (st[i].bytes && t < end) {
                int64_t h = t / HOUR_MS, e = (h + 1) * HOUR_MS;
                if (e > end)
                    e = end;
                double bh = (double)st[i].bytes * (double)(e - t) / (double)HOUR_MS;
                if ((rc = add_storage(&s, h, st[i].bucket, bh)))
                    goto out;
                t = e;
            }
        }
    }
    rows_merge(&s.r);

    /* ------------------------------------------------------ the document */
    uint64_t t_req = 0, t_bill = 0, t_a = 0, t_b = 0, t_free = 0, t_in = 0, t_out = 0;
    double t_bh = 0, c_req = 0, c_sto = 0, c_egr = 0;
    cm_buf_append_str(out, "{\"query\":{\"from\":");
    json_time(out, q->from_ms, from_b);
    cm_buf_append_str(out, ",\"to\":");
    json_time(out, q->to_ms, to_b);
    cm_buf_append_str(out, ",\"bucket\":");
    if (q->bucket)
        cm_json_cstr(out, q->bucket);
    else
        cm_buf_append_str(out, "null");
    cm_buf_append_str(out, ",\"access_key\":");
    if (q->access_key)
        cm_json_cstr(out, q->access_key);
    else
        cm_buf_append_str(out, "null");
    cm_buf_append_str(out, ",\"by\":[");
    {
        static const char *names[] = {"hour", "day", "bucket", "access-key", "operation"};
        bool first = true;
        for (int i = 0; i < 5; i++) {
            if (!(s.by & (1u << i)) || (i == 1 && (s.by & BILL_BY_HOUR)))
                continue;
            cm_buf_printf(out, "%s\"%s\"", first ? "" : ",", names[i]);
            first = false;
        }
    }
    cm_buf_append_str(out, "]},\"prices\":{\"name\":");
    cm_json_cstr(out, p->name);
    cm_buf_append_str(out, ",\"currency\":");
    cm_json_cstr(out, p->currency);
    cm_buf_append_str(out, ",\"source\":");
    cm_json_cstr(out, p->source);
    cm_buf_printf(out,
                  ",\"class_a_per_million\":%.10g,\"class_b_per_million\":%.10g,"
                  "\"storage_per_gb_month\":%.10g,\"egress_per_gb\":%.10g,"
                  "\"ingress_per_gb\":%.10g,\"gb_bytes\":%.10g,\"month_hours\":%.10g},",
                  p->class_a_per_million, p->class_b_per_million, p->storage_per_gb_month,
                  p->egress_per_gb, p->ingress_per_gb, p->gb_bytes, p->month_hours);
    cm_buf_append_str(out, "\"rows\":[");
    bool first = true;
    for (size_t i = 0; i < s.r.n; i++) {
        row *e = &s.r.a[i];
        if (e->cls == 0 && e->byte_hours > 0)
            continue; /* storage rows below */
        double c = req_cost(p, e->cls, e->billable, e->bytes_in, e->bytes_out);
        uint64_t a = e->cls == BILL_A ? e->billable : 0, b = e->cls == BILL_B ? e->billable : 0;
        cm_buf_append_str(out, first ? "\n{\"period\":" : ",\n{\"period\":");
        first = false;
        cm_json_cstr(out, e->period);
        cm_buf_append_str(out, ",\"bucket\":");
        cm_json_cstr(out, e->bucket);
        cm_buf_append_str(out, ",\"access_key\":");
        cm_json_cstr(out, e->access_key);
        cm_buf_append_str(out, ",\"operation\":");
        cm_json_cstr(out, e->op);
        cm_buf_printf(out,
                      ",\"class\":\"%s\",\"status_class\":\"%s\",\"requests\":%llu,"
                      "\"billable_requests\":%llu,\"class_a\":%llu,\"class_b\":%llu,"
                      "\"bytes_in\":%llu,\"bytes_out\":%llu,\"cost\":%.6f}",
                      bill_class_name((enum bill_class)e->cls), sc_name(e->sc),
                      (unsigned long long)e->requests, (unsigned long long)e->billable,
                      (unsigned long long)a, (unsigned long long)b,
                      (unsigned long long)e->bytes_in, (unsigned long long)e->bytes_out, c);
        t_req += e->requests;
        t_bill += e->billable;
        t_a += a;
        t_b += b;
        t_free += e->cls == BILL_FREE ? e->requests : 0;
        t_in += e->bytes_in;
        t_out += e->bytes_out;
        c_req += req_cost(p, e->cls, e->billable, 0, 0);
        c_egr += req_cost(p, 0, 0, e->bytes_in, e->bytes_out);
    }
    cm_buf_append_str(out, "],\n\"storage\":[");
    first = true;
    for (size_t i = 0; i < s.r.n; i++) {
        row *e = &s.r.a[i];
        if (!(e->cls == 0 && e->byte_hours > 0))
            continue;
        double gbm = e->byte_hours / p->gb_bytes / p->month_hours;
        double c = gbm * p->storage_per_gb_month;
        cm_buf_append_str(out, first ? "\n{\"period\":" : ",\n{\"period\":");
        first = false;
        cm_json_cstr(out, e->period);
        cm_buf_append_str(out, ",\"bucket\":");
        cm_json_cstr(out, e->bucket);
        cm_buf_printf(out, ",\"byte_hours\":%.3f,\"gb_months\":%.12f,\"cost\":%.6f}",
                      e->byte_hours, gbm, c);
        t_bh += e->byte_hours;
        c_sto += c;
    }
    cm_buf_append_str(out, "],\n\"buckets_now\":[");
    first = true;
    for (size_t i = 0; i < nst; i++) {
        if (q->bucket && strcmp(q->bucket, st[i].bucket))
            continue;
        cm_buf_append_str(out, first ? "{\"bucket\":" : ",{\"bucket\":");
        first = false;
        cm_json_cstr(out, st[i].bucket);
        cm_buf_printf(out, ",\"bytes\":%llu,\"objects\":%llu}", (unsigned long long)st[i].bytes,
                      (unsigned long long)st[i].objects);
    }
    double t_gbm = t_bh / p->gb_bytes / p->month_hours;
    cm_buf_printf(out,
                  "],\n\"totals\":{\"requests\":%llu,\"billable_requests\":%llu,"
                  "\"class_a\":%llu,\"class_b\":%llu,\"free\":%llu,\"bytes_in\":%llu,"
                  "\"bytes_out\":%llu,\"byte_hours\":%.3f,\"gb_months\":%.12f,"
                  "\"request_cost\":%.6f,\"storage_cost\":%.6f,\"transfer_cost\":%.6f,"
                  "\"cost\":%.6f}}\n",
                  (unsigned long long)t_req, (unsigned long long)t_bill,
                  (unsigned long long)t_a, (unsigned long long)t_b, (unsigned long long)t_free,
                  (unsigned long long)t_in, (unsigned long long)t_out, t_bh, t_gbm, c_req, c_sto,
                  c_egr, c_req + c_sto + c_egr);
    rc = 0;
out:
    rows_free(&s.r);
    free(st);
    return rc;
}
