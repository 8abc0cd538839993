/* gateway/observe.c - what sees every request once: gw_account writes its
 * usage record before the response is queued (durable, group-committed),
 * gw_observe afterwards corrects bytes of a response cut short, feeds
 * metrics and writes the access log line; the commit hook adds storage
 * deltas (and PutObject's usage record) to object batches. */
#include "gateway/gw_int.h"

#include <stdlib.h>

/* Per-server state; created by gw_observe_start, immutable afterwards. */
struct gw_obs {
    bill_meter_t *meter;  /* NULL with --no-usage */
    gw_alog *alog;        /* NULL with --no-access-log */
    gw_logship *ship;     /* bucket log delivery */
    bool usage;           /* usage records are written */
};

static bool metered(const gw_req *r)
{
    return r->srv->obs && r->srv->obs->usage && r->op != GW_OP_Admin &&
           r->op != GW_OP_AdminPublic;
}

/* The operation name for usage: a request that failed routing keeps op 0
 * (ListBuckets); it is counted as "Unrouted" instead. */
static const char *usage_op(const gw_req *r)
{
    if (r->op == GW_OP_ListBuckets &&
        (r->bucket[0] || r->has_key || !cm_slice_eq_str(r->method, "GET")))
        return "Unrouted";
    return r->op < GW_OP__COUNT ? gw_ops[r->op].name : "Unrouted";
}

static int status_of(const gw_req *r)
{
    return r->status ? r->status : 200;
}

/* Response body bytes the client is meant to get. */
static int64_t intended_out(const gw_req *r)
{
    if (r->head_only)
        return 0;
    if (r->stream && r->err == S3E__NONE)
        return (int64_t)r->stream_len;
    return (int64_t)(r->resp_ref.p ? r->resp_ref.n : r->resp_body.n);
}

static void fill_event(const gw_req *r, bill_event *ev, int64_t ms, int64_t out)
{
    memset(ev, 0, sizeof *ev);
    ev->ms = ms;
    ev->bucket = r->bucket;
    ev->access_key = r->anonymous ? "" : r->access_key;
    ev->op = usage_op(r);
    ev->status = status_of(r);
    ev->bytes_in = r->body_n;
    ev->bytes_out = out;
}

void gw_account(gw_req *r)
{
    if (r->accounted)
        return;
    r->resp_ms = cm_now_ms();
    if (!metered(r))
        return;
    int64_t out = intended_out(r);
    r->accounted = true;
    r->acct_out = out;
    if (r->acct_in_batch && r->err == S3E__NONE && status_of(r) < 300)
        return; /* committed with the object (gw_commit_hook) */
    bill_event ev;
    fill_event(r, &ev, r->resp_ms, out);
    /* Written to the kernel (LevelDB's log) before the response is queued:
     * survives kill -9. --usage-fsync also fsyncs it (group commit with
     * concurrent requests): survives power loss. doc/billing.md. */
    int rc = bill_record(r->srv->md, &ev, r->srv->cfg.usage_fsync);
    if (rc) {
        r->accounted = false;
        cm_log(CM_LOG_ERROR, "%s: usage record not written: %s", r->id, cm_strerror(rc));
    }
}

int gw_commit_hook(void *arg, md_batch_t *b, const md_object *cur, const md_object *next)
{
    gw_req *r = arg;
    int64_t now = cm_now_ms();
    int64_t db = (int64_t)(next ? next->size : 0) - (int64_t)(cur ? cur->size : 0);
    int64_t dn = (next ? 1 : 0) - (cur ? 1 : 0);
    int rc;

    /* PutObject answers 200 with no body once this batch commits: its usage
     * record rides in the batch, in the record of its storage delta, and
     * costs no extra sync. If the batch fails, the error response is
     * recorded by gw_account as usual. */
    if (r->op == GW_OP_PutObject && r->srv && r->srv->obs && r->srv->obs->usage) {
        bill_event ev;
        fill_event(r, &ev, now, 0);
        ev.status = 200;
        if ((rc = bill_record_batch_delta(b, &ev, r->bucket, now, db, dn)))
            return rc;
        r->acct_in_batch = true;
    } else if ((db || dn) && (rc = md_usage_storage_delta(b, r->bucket, now, db, dn))) {
        return rc;
    }
    /* events: the outbox and change-log records of this change. */
    return gw_evt_hook(r, b, cur, next);
}

void gw_observe(gw_req *r)
{
    struct gw_obs *o = r->srv->obs;
    int64_t now = cm_now_ms();
    if (!r->resp_ms)
        r->resp_ms = now;
    gw_metrics_request(r->op, status_of(r), r->body_n, r->bytes_out,
                       (double)(now - r->start_ms) / 1000.0);
    if (cm_log_level >= CM_LOG_DEBUG)
        cm_log(CM_LOG_DEBUG, "%s %s %.*s %d in=%llu out=%llu %lldms%s", r->id,
               r->op < GW_OP__COUNT ? gw_ops[r->op].name : "-", (int)r->method.n,
               (const char *)r->method.p, status_of(r), (unsigned long long)r->body_n,
               (unsigned long long)r->bytes_out, (long long)(now - r->start_ms),
               r->completed ? "" : " (incomplete)");
    if (!o || r->op == GW_OP_Admin || r->op == GW_OP_AdminPublic)
        return;
    if (metered(r)) {
        bill_event ev;
        int rc = 0;
        if (!r->accounted) {
            /* No response was queued (the client left mid-request): nothing
             * was answered, so a lost record breaks no promise; no sync. */
            fill_event(r, &ev, now, (int64_t)r->bytes_out);
            rc = bill_record(r->srv->md, &ev, false);
        } else if ((int64_t)r->bytes_out != r->acct_out) {
            /* The response was cut short: correct the bytes counted. */
            fill_event(r, &ev, r->resp_ms, (int64_t)r->bytes_out - r->acct_out);
            ev.correction = true;
            rc = bill_record(r->srv->md, &ev, false);
        }
        if (rc)
            cm_log(CM_LOG_ERROR, "%s: usage record not written: %s", r->id, cm_strerror(rc));
    }
    if (o->alog || (o->ship && r->bucket[0])) {
        cm_buf line = {0};
        cm_buf_reserve(&line, 1023); /* most lines fit: one malloc, not five */
        gw_alog_format(r, &line);
        if (o->alog)
            gw_alog_write(o->alog, cm_buf_slice(&line));
        if (o->ship && r->bucket[0] && !r->bucket_invalid)
            gw_logship_add(o->ship, r->bucket, cm_buf_slice(&line));
        cm_buf_free(&line);
    }
}

gw_logship *gw_logship_of(gw_server *srv)
{
    return srv->obs ? srv->obs->ship : NULL;
}

int gw_observe_start(gw_server *srv)
{
    const gw_config *c = &srv->cfg;
    struct gw_obs *o = calloc(1, sizeof *o);
    char dir[4096];
    int rc;

    if (!o)
        return CM_ENOMEM;
    o->usage = !c->no_usage;
    if (o->usage && (rc = bill_meter_start(srv->md, c->usage_fold_ms, &o->meter)))
        goto fail;
    if (!c->no_access_log) {
        snprintf(dir, sizeof dir, "%s/logs", c->data_dir);
        if ((rc = gw_alog_open(dir, c->access_log_max_bytes ? c->access_log_max_bytes : 64 << 20,
                               c->access_log_max_age_s ? c->access_log_max_age_s : 86400, 10,
                               &o->alog))) {
            cm_log(CM_LOG_ERROR, "cannot open the access log in %s: %s", dir, cm_strerror(rc));
            goto fail;
        }
    }
    if ((rc = gw_logship_start(srv, c->log_delivery_s ? c->log_delivery_s : 60, &o->ship)))
        goto fail;
    srv->obs = o;
    return 0;
fail:
    bill_meter_stop(o->meter);
    gw_alog_close(o->alog);
    free(o);
    return rc;
}

void gw_observe_stop(gw_server *srv)
{
    struct gw_obs *o = srv->obs;
    if (!o)
        return;
    gw_logship_stop(o->ship);
    bill_meter_stop(o->meter);
    gw_alog_close(o->alog);
    srv->obs = NULL;
    free(o);
}
