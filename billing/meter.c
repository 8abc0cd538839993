/* billing/meter.c - recording request usage (turning a bill_event into a
 * pending metadata record, durably or inside a change's batch) and the
 * folder thread that periodically folds pending records into counters.
 * Reports live in report.c; the class table in classify.c. */
#include "billing/bill.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

void bill_event_to_md(const bill_event *ev, md_usage_req *out)
{
    enum bill_class c = bill_op_class(ev->op);
    memset(out, 0, sizeof *out);
    out->ms = ev->ms;
    out->bucket = ev->bucket ? ev->bucket : "";
    out->access_key = ev->access_key ? ev->access_key : "";
    out->op = ev->op;
    out->cls = (uint8_t)c;
    out->status = (uint16_t)(ev->status > 0 && ev->status < 1000 ? ev->status : 0);
    out->requests = ev->correction ? 0 : 1;
    out->billable = !ev->correction && bill_billable(c, ev->status) ? 1 : 0;
    out->bytes_in = ev->bytes_in;
    out->bytes_out = ev->bytes_out;
}

int bill_record(md_db_t *md, const bill_event *ev, bool sync)
{
    md_usage_req u;
    if (bill_op_class(ev->op) == BILL_NONE)
        return 0;
    bill_event_to_md(ev, &u);
    return md_usage_add(md, &u, sync);
}

int bill_record_batch(md_batch_t *b, const bill_event *ev)
{
    md_usage_req u;
    if (bill_op_class(ev->op) == BILL_NONE)
        return 0;
    bill_event_to_md(ev, &u);
    return md_usage_add_batch(b, &u);
}

int bill_record_batch_delta(md_batch_t *b, const bill_event *ev, const char *bucket, int64_t ms,
                            int64_t dbytes, int64_t dobjects)
{
    md_usage_req u;
    if (bill_op_class(ev->op) == BILL_NONE)
        return dbytes || dobjects ? md_usage_storage_delta(b, bucket, ms, dbytes, dobjects) : 0;
    bill_event_to_md(ev, &u);
    return md_usage_storage_delta_req(b, bucket, ms, dbytes, dobjects, &u);
}

/* The folder thread. stop and the condition are guarded by lk. */
struct bill_meter {
    md_db_t *md;
    unsigned interval_ms;
    pthread_t thread;
    pthread_mutex_t lk;
    pthread_cond_t cv;
    bool stop; /* guarded by lk */
};

static void *fold_main(void *arg)
{
    bill_meter_t *m = arg;
    pthread_mutex_lock(&m->lk);
    while (!m->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += m->interval_ms / 1000;
        ts.tv_nsec += (long)(m->interval_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&m->cv, &m->lk, &ts);
        pthread_mutex_unlock(&m->lk);
        int rc = md_usage_fold(m->md, NULL);
        if (rc)
            cm_log(CM_LOG_WARN, "usage: folding counters failed: %s", cm_strerror(rc));
        pthread_mutex_lock(&m->lk);
    }
    pthread_mutex_unlock(&m->lk);
    return NULL;
}

int bill_meter_start(md_db_t *md, unsigned interval_ms, bill_meter_t **out)
{
    bill_meter_t *m = calloc(1, sizeof *m);
    if (!m)
        return CM_ENOMEM;
    m->md = md;
    m->interval_ms = interval_ms ? interval_ms : 1000;
    pthread_mutex_init(&m->lk, NULL);
    pthread_cond_init(&m->cv, NULL);
    if (pthread_create(&m->thread, NULL, fold_main, m)) {
        pthread_mutex_destroy(&m->lk);
        pthread_cond_destroy(&m->cv);
        free(m);
        return CM_ENOMEM;
    }
    *out = m;
    return 0;
}

void bill_meter_stop(bill_meter_t *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lk);
    m->stop = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->lk);
    pthread_join(m->thread, NULL);
    md_usage_fold(m->md, NULL);
    pthread_mutex_destroy(&m->lk);
    pthread_cond_destroy(&m->cv);
    free(m);
}
