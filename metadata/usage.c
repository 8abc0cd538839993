/* metadata/usage.c - usage records under the '$' key prefix: pending request
 * records and storage deltas (written before a response goes out or in the
 * batch of the change), the fold that turns them into hourly counters and
 * storage byte-hours, scans for reports, and bucket logging configurations.
 * Classification and prices live in billing/; this file only stores. */
#include "metadata/md_int.h"

#include <stdio.h>
#include <stdlib.h>

/* Sub-kinds after the '$' byte (doc/metadata-keys.md). */
#define K_REQ 'R'     /* '$' 'R' seq(be64) -> pending request record */
#define K_DELTA 'D'   /* '$' 'D' seq(be64) -> pending storage delta */
#define K_HOUR 'H'    /* '$' 'H' hour(be64) bucket 00 key 00 op 00 sc -> counters */
#define K_STATE 'S'   /* '$' 'S' bucket -> current bytes, objects, last change */
#define K_BYTEMS 'T'  /* '$' 'T' hour(be64) bucket -> byte-milliseconds in that hour */
#define K_LOGGING 'L' /* '$' 'L' bucket -> bucket logging configuration */

#define HOUR_MS 3600000ll
#define FOLD_MAX 65536 /* records folded per batch */

/* One fold at a time: the fold is the only writer of 'H', 'S' and 'T'. */
static pthread_mutex_t fold_lk = PTHREAD_MUTEX_INITIALIZER;

typedef unsigned __int128 u128;

static int put_be64(cm_buf *b, uint64_t v)
{
    uint8_t x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (uint8_t)(v >> (56 - 8 * i));
    return cm_buf_append(b, x, 8);
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static int key_head(cm_buf *b, char kind)
{
    uint8_t h[2] = {MD__K_USAGE, (uint8_t)kind};
    cm_buf_reset(b);
    return cm_buf_append(b, h, 2);
}

static int key_seq(cm_buf *b, char kind, uint64_t seq)
{
    int rc = key_head(b, kind);
    return rc ? rc : put_be64(b, seq);
}

static int64_t hour_of(int64_t ms)
{
    return ms >= 0 ? ms / HOUR_MS : (ms - HOUR_MS + 1) / HOUR_MS;
}

/* ------------------------------------------------------- request records */
/* 'R' value: version, ms i64, status u16 (as u32), cls u8, requests u64,
 * billable u64, bytes_in u64, bytes_out i64, bucket, access key, op. */
static int req_encode(cm_buf *v, const md_usage_req *u)
{
    int rc;
    if ((rc = cm_buf_put_u8(v, MD__REC_VERSION)) || (rc = cm_buf_put_u64(v, (uint64_t)u->ms)) ||
        (rc = cm_buf_put_u32(v, u->status)) || (rc = cm_buf_put_u8(v, u->cls)) ||
        (rc = cm_buf_put_u64(v, u->requests)) || (rc = cm_buf_put_u64(v, u->billable)) ||
        (rc = cm_buf_put_u64(v, u->bytes_in)) || (rc = cm_buf_put_u64(v, (uint64_t)u->bytes_out)))
        return rc;
    if ((rc = cm_buf_put_bytes(v, CM_SLICE_STR(u->bucket ? u->bucket : ""))) ||
        (rc = cm_buf_put_bytes(v, CM_SLICE_STR(u->access_key ? u->access_key : ""))))
        return rc;
    return cm_buf_put_bytes(v, CM_SLICE_STR(u->op ? u->op : ""));
}

typedef struct req_dec {
    int64_t ms;
    uint32_t status;
    uint8_t cls;
    uint64_t requests, billable, bytes_in, bytes_out;
    cm_slice bucket, ak, op;
} req_dec;

static int req_decode(cm_slice val, req_dec *d)
{
    cm_reader r = {val.p, val.n};
    uint8_t ver;
    uint64_t ms;
    int rc;
    if ((rc = cm_get_u8(&r, &ver)) || ver != MD__REC_VERSION)
        return CM_ECORRUPT;
    if ((rc = cm_get_u64(&r, &ms)) || (rc = cm_get_u32(&r, &d->status)) ||
        (rc = cm_get_u8(&r, &d->cls)) || (rc = cm_get_u64(&r, &d->requests)) ||
        (rc = cm_get_u64(&r, &d->billable)) || (rc = cm_get_u64(&r, &d->bytes_in)) ||
        (rc = cm_get_u64(&r, &d->bytes_out)) || (rc = cm_get_bytes(&r, &d->bucket)) ||
        (rc = cm_get_bytes(&r, &d->ak)) || (rc = cm_get_bytes(&r, &d->op)))
        return CM_ECORRUPT;
    if (d->bucket.n > MD_BUCKET_MAX || d->ak.n > 132 || d->op.n > 63)
        return CM_ECORRUPT;
    d->ms = (int64_t)ms;
    return 0;
}

static int add_req(md_db_t *db, struct md__batch *b, uint64_t seq, const md_usage_req *u)
{
    cm_buf k = {0}, v = {0};
    int rc;
    (void)db;
    if ((rc = key_seq(&k, K_REQ, seq)) || (rc = req_encode(&v, u)))
        goto out;
    md__batch_put(b, cm_buf_slice(&k), cm_buf_slice(&v));
out:
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

int md_usage_add(md_db_t *db, const md_usage_req *u, bool sync)
{
    struct md__batch *b = md__batch_new();
    uint64_t seq;
    int rc;
    if (!b)
        return CM_ENOMEM;
    if ((rc = md__seq_next(db, &seq)) || (rc = add_req(db, b, seq, u)))
        goto out;
    rc = md__batch_commit(db, b, sync);
out:
    md__batch_free(b);
    return rc;
}

int md_usage_add_batch(md_batch_t *mb, const md_usage_req *u)
{
    uint64_t seq = md_batch_seq(mb);
    if (!seq)
        return CM_EIO;
    return add_req(mb->db, mb->b, seq, u);
}

/* 'D' value: version, ms i64, dbytes i64, dobjects i64, bucket. */
int md_usage_storage_delta(md_batch_t *mb, const char *bucket, int64_t ms, int64_t dbytes,
                           int64_t dobjects)
{
    cm_buf k = {0}, v = {0};
    uint64_t seq = md_batch_seq(mb);
    int rc;
    if (!seq)
        return CM_EIO;
    if ((rc = key_seq(&k, K_DELTA, seq)) || (rc = cm_buf_put_u8(&v, MD__REC_VERSION)) ||
        (rc = cm_buf_put_u64(&v, (uint64_t)ms)) || (rc = cm_buf_put_u64(&v, (uint64_t)dbytes)) ||
        (rc = cm_buf_put_u64(&v, (uint64_t)dobjects)) ||
        (rc = cm_buf_put_bytes(&v, CM_SLICE_STR(bucket))))
        goto out;
    md__batch_put(mb->b, cm_buf_slice(&k), cm_buf_slice(&v));
out:
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

/* ------------------------------------------------------------ counters */
/* 'H' value: version, cls u8, requests, billable, bytes_in, bytes_out (u64). */
typedef struct agg {
    cm_buf key;          /* the full 'H' key */
    uint8_t cls;
    uint64_t requests, billable, bytes_in, bytes_out;
} agg;

static int agg_cmp(const void *a, const void *b)
{
    return cm_slice_cmp(cm_buf_slice(&((const agg *)a)->key), cm_buf_slice(&((const agg *)b)->key));
}

static int hour_key(cm_buf *k, int64_t hour, cm_slice bucket, cm_slice ak, cm_slice op,
                    uint8_t sc)
{
    int rc;
    if ((rc = key_head(k, K_HOUR)) || (rc = put_be64(k, (uint64_t)hour)) ||
        (rc = cm_buf_append_slice(k, bucket)) || (rc = cm_buf_append_byte(k, 0)) ||
        (rc = cm_buf_append_slice(k, ak)) || (rc = cm_buf_append_byte(k, 0)) ||
        (rc = cm_buf_append_slice(k, op)) || (rc = cm_buf_append_byte(k, 0)))
        return rc;
    return cm_buf_append_byte(k, sc);
}

static int ctr_decode(cm_slice v, agg *a)
{
    cm_reader r = {v.p, v.n};
    uint8_t ver;
    if (cm_get_u8(&r, &ver) || ver != MD__REC_VERSION || cm_get_u8(&r, &a->cls) ||
        cm_get_u64(&r, &a->requests) || cm_get_u64(&r, &a->billable) ||
        cm_get_u64(&r, &a->bytes_in) || cm_get_u64(&r, &a->bytes_out))
        return CM_ECORRUPT;
    return 0;
}

static int ctr_encode(cm_buf *v, const agg *a)
{
    int rc;
    cm_buf_reset(v);
    if ((rc = cm_buf_put_u8(v, MD__REC_VERSION)) || (rc = cm_buf_put_u8(v, a->cls)) ||
        (rc = cm_buf_put_u64(v, a->requests)) || (rc = cm_buf_put_u64(v, a->billable)) ||
        (rc = cm_buf_put_u64(v, a->bytes_in)))
        return rc;
    return cm_buf_put_u64(v, a->bytes_out);
}

/* Folds up to FOLD_MAX 'R' records into 'H' counters in b. */
static int fold_requests(md_db_t *db, struct md__batch *b, size_t *nfold)
{
    struct md__iter *it = md__iter_new(db);
    agg *a = NULL;
    size_t n = 0, cap = 0, nu = 0;
    cm_buf v = {0}, cur = {0};
    uint8_t start[2] = {MD__K_USAGE, K_REQ};
    int rc = 0;

    if (!it)
        return CM_ENOMEM;
    for (md__iter_seek(it, CM_SLICE(start, 2)); md__iter_valid(it) && n < FOLD_MAX;
         md__iter_next(it)) {
        cm_slice k = md__iter_key(it);
        req_dec d;
        if (k.n != 10 || k.p[0] != MD__K_USAGE || k.p[1] != K_REQ)
            break;
        md__batch_del(b, k);
        if (req_decode(md__iter_val(it), &d)) {
            cm_log(CM_LOG_WARN, "metadata: dropping a corrupt usage record");
            continue;
        }
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 256;
            agg *na = realloc(a, nc * sizeof *na);
            if (!na) {
                rc = CM_ENOMEM;
                goto out;
            }
            a = na;
            cap = nc;
        }
        agg *e = &a[n];
        memset(e, 0, sizeof *e);
        uint8_t sc = (uint8_t)(d.status / 100 <= 9 ? d.status / 100 : 9);
        if ((rc = hour_key(&e->key, hour_of(d.ms), d.bucket, d.ak, d.op, sc))) {
            cm_buf_free(&e->key);
            goto out;
        }
        n++;
        e->cls = d.cls;
        e->requests = d.requests;
        e->billable = d.billable;
        e->bytes_in = d.bytes_in;
        e->bytes_out = d.bytes_out; /* corrections are negative: modular sum */
    }
    if ((rc = md__iter_status(it)))
        goto out;
    if (n)
        qsort(a, n, sizeof *a, agg_cmp);
    for (size_t i = 0; i < n;) {
        agg sum = a[i];
        size_t j = i + 1;
        for (; j < n && cm_slice_eq(cm_buf_slice(&a[j].key), cm_buf_slice(&sum.key)); j++) {
            sum.requests += a[j].requests;
            sum.billable += a[j].billable;
            sum.bytes_in += a[j].bytes_in;
            sum.bytes_out += a[j].bytes_out;
        }
        rc = md__get(db, cm_buf_slice(&sum.key), &cur);
        if (rc == 0) {
            agg old;
            if (ctr_decode(cm_buf_slice(&cur), &old) == 0) {
                sum.requests += old.requests;
                sum.billable += old.billable;
                sum.bytes_in += old.bytes_in;
                sum.bytes_out += old.bytes_out;
            }
        } else if (rc != CM_ENOTFOUND) {
            goto out;
        }
        if ((rc = ctr_encode(&v, &sum)))
            goto out;
        md__batch_put(b, cm_buf_slice(&sum.key), cm_buf_slice(&v));
        nu++;
        i = j;
    }
    rc = 0;
    *nfold += n;
out:
    for (size_t i = 0; i < n; i++)
        cm_buf_free(&a[i].key);
    free(a);
    cm_buf_free(&v);
    cm_buf_free(&cur);
    md__iter_free(it);
    (void)nu;
    return rc;
}

/* ------------------------------------------------------------ storage */
/* 'S' value: version, bytes u64, objects u64, last_ms i64.
 * 'T' value: version, byte-ms as u128 (lo u64, hi u64). */
typedef struct st_ent {
    char bucket[MD_BUCKET_MAX + 1];
    md_storage_state s;
    bool dirty;
} st_ent;

typedef struct bms_ent {
    int64_t hour;
    char bucket[MD_BUCKET_MAX + 1];
    u128 bms;
} bms_ent;

static int state_decode(cm_slice v, md_storage_state *s)
{
    cm_reader r = {v.p, v.n};
    uint8_t ver;
    uint64_t last;
    if (cm_get_u8(&r, &ver) || ver != MD__REC_VERSION || cm_get_u64(&r, &s->bytes) ||
        cm_get_u64(&r, &s->objects) || cm_get_u64(&r, &last))
        return CM_ECORRUPT;
    s->last_ms = (int64_t)last;
    return 0;
}

static int state_get(md_db_t *db, const char *bucket, md_storage_state *s)
{
    cm_buf k = {0}, v = {0};
    int rc;
    memset(s, 0, sizeof *s);
    snprintf(s->bucket, sizeof s->bucket, "%s", bucket);
    if ((rc = key_head(&k, K_STATE)) || (rc = cm_buf_append_str(&k, bucket)))
        goto out;
    rc = md__get(db, cm_buf_slice(&k), &v);
    if (rc == 0)
        rc = state_decode(cm_buf_slice(&v), s);
    else if (rc == CM_ENOTFOUND)
        rc = 0;
out:
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

static bms_ent *bms_find(bms_ent **a, size_t *n, size_t *cap, int64_t hour, const char *bucket)
{
    for (size_t i = 0; i < *n; i++)
        if ((*a)[i].hour == hour && !strcmp((*a)[i].bucket, bucket))
            return &(*a)[i];
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        bms_ent *na = realloc(*a, nc * sizeof *na);
        if (!na)
            return NULL;
        *a = na;
        *cap = nc;
    }
    bms_ent *e = &(*a)[(*n)++];
    memset(e, 0, sizeof *e);
    e->hour = hour;
    snprintf(e->bucket, sizeof e->bucket, "%s", bucket);
    return e;
}

/* Adds bytes * [from, to) to the hours it spans. */
static int integrate(bms_ent **a, size_t *n, size_t *cap, const char *bucket, uint64_t bytes,
                     int64_t from, int64_t to)
{
    while (bytes && from < to) {
        int64_t h = hour_of(from), end = (h + 1) * HOUR_MS;
        if (end > to)
            end = to;
        bms_ent *e = bms_find(a, n, cap, h, bucket);
        if (!e)
            return CM_ENOMEM;
        e->bms += (u128)bytes * (u128)(end - from);
        from = end;
    }
    return 0;
}

static int fold_storage(md_db_t *db, struct md__batch *b, size_t *nfold)
{
    struct md__iter *it = md__iter_new(db);
    st_ent *st = NULL;
    bms_ent *bm = NULL;
    size_t nst = 0, capst = 0, nbm = 0, capbm = 0, n = 0;
    cm_buf k = {0}, v = {0};
    uint8_t start[2] = {MD__K_USAGE, K_DELTA};
    int rc = 0;

    if (!it)
        return CM_ENOMEM;
    for (md__iter_seek(it, CM_SLICE(start, 2)); md__iter_valid(it) && n < FOLD_MAX;
         md__iter_next(it)) {
        cm_slice key = md__iter_key(it);
        if (key.n != 10 || key.p[0] != MD__K_USAGE || key.p[1] != K_DELTA)
            break;
        md__batch_del(b, key);
        n++;
        cm_slice val = md__iter_val(it), bk;
        cm_reader r = {val.p, val.n};
        uint8_t ver;
        uint64_t ms, db_, do_;
        if (cm_get_u8(&r, &ver) || ver != MD__REC_VERSION || cm_get_u64(&r, &ms) ||
            cm_get_u64(&r, &db_) || cm_get_u64(&r, &do_) || cm_get_bytes(&r, &bk) ||
            bk.n == 0 || bk.n > MD_BUCKET_MAX) {
            cm_log(CM_LOG_WARN, "metadata: dropping a corrupt storage delta");
            continue;
        }
        char bucket[MD_BUCKET_MAX + 1];
        memcpy(bucket, bk.p, bk.n);
        bucket[bk.n] = 0;
        st_ent *e = NULL;
        for (size_t i = 0; i < nst; i++)
            if (!strcmp(st[i].bucket, bucket))
                e = &st[i];
        if (!e) {
            if (nst == capst) {
                size_t nc = capst ? capst * 2 : 16;
                st_ent *na = realloc(st, nc * sizeof *na);
                if (!na) {
                    rc = CM_ENOMEM;
                    goto out;
                }
                st = na;
                capst = nc;
            }
            e = &st[nst++];
            memset(e, 0, sizeof *e);
            snprintf(e->bucket, sizeof e->bucket, "%s", bucket);
            if ((rc = state_get(db, bucket, &e->s)))
                goto out;
        }
        /* Integrate the old size up to this change. A change stamped before
         * the last one folded (committed out of order by a few ms) counts
         * from the last one: the error is bounded by commit latency. */
        int64_t t = (int64_t)ms;
        if (e->s.last_ms && t > e->s.last_ms &&
            (rc = integrate(&bm, &nbm, &capbm, bucket, e->s.bytes, e->s.last_ms, t)))
            goto out;
        if (t > e->s.last_ms)
            e->s.last_ms = t;
        e->s.bytes += db_; /* two's complement: deltas may be negative */
        e->s.objects += do_;
        if ((int64_t)e->s.bytes < 0)
            e->s.bytes = 0;
        if ((int64_t)e->s.objects < 0)
            e->s.objects = 0;
        e->dirty = true;
    }
    if ((rc = md__iter_status(it)))
        goto out;
    for (size_t i = 0; i < nst; i++) {
        if ((rc = key_head(&k, K_STATE)) || (rc = cm_buf_append_str(&k, st[i].bucket)))
            goto out;
        cm_buf_reset(&v);
        if ((rc = cm_buf_put_u8(&v, MD__REC_VERSION)) || (rc = cm_buf_put_u64(&v, st[i].s.bytes)) ||
            (rc = cm_buf_put_u64(&v, st[i].s.objects)) ||
            (rc = cm_buf_put_u64(&v, (uint64_t)st[i].s.last_ms)))
            goto out;
        md__batch_put(b, cm_buf_slice(&k), cm_buf_slice(&v));
    }
    for (size_t i = 0; i < nbm; i++) {
        cm_buf cur = {0};
        u128 total = bm[i].bms;
        if ((rc = key_head(&k, K_BYTEMS)) || (rc = put_be64(&k, (uint64_t)bm[i].hour)) ||
            (rc = cm_buf_append_str(&k, bm[i].bucket)))
            goto out;
        rc = md__get(db, cm_buf_slice(&k), &cur);
        if (rc == 0) {
            cm_reader r = {cur.p, cur.n};
            uint8_t ver;
            uint64_t lo, hi;
            if (!cm_get_u8(&r, &ver) && !cm_get_u64(&r, &lo) && !cm_get_u64(&r, &hi))
                total += ((u128)hi << 64) | lo;
        }
        cm_buf_free(&cur);
        if (rc && rc != CM_ENOTFOUND)
            goto out;
        cm_buf_reset(&v);
        if ((rc = cm_buf_put_u8(&v, MD__REC_VERSION)) || (rc = cm_buf_put_u64(&v, (uint64_t)total)) ||
            (rc = cm_buf_put_u64(&v, (uint64_t)(total >> 64))))
            goto out;
        md__batch_put(b, cm_buf_slice(&k), cm_buf_slice(&v));
    }
    rc = 0;
    *nfold += n;
out:
    free(st);
    free(bm);
    cm_buf_free(&k);
    cm_buf_free(&v);
    md__iter_free(it);
    return rc;
}

int md_usage_fold(md_db_t *db, size_t *out_n)
{
    size_t total = 0;
    int rc = 0;

    pthread_mutex_lock(&fold_lk);
    for (;;) {
        struct md__batch *b = md__batch_new();
        size_t n = 0;
        if (!b) {
            rc = CM_ENOMEM;
            break;
        }
        rc = fold_requests(db, b, &n);
        if (!rc)
            rc = fold_storage(db, b, &n);
        /* Not a sync write: the batch is atomic, and if it is lost the
         * pending records it deletes are still there to fold again. */
        if (!rc && n)
            rc = md__batch_commit(db, b, false);
        md__batch_free(b);
        total += n;
        if (rc || n < FOLD_MAX)
            break;
    }
    pthread_mutex_unlock(&fold_lk);
    if (out_n)
        *out_n = total;
    return rc;
}

/* ------------------------------------------------------------- scans */
int md_usage_scan(md_db_t *db, int64_t from_hour, int64_t to_hour, md_usage_fn fn, void *arg)
{
    struct md__iter *it = md__iter_new(db);
    cm_buf k = {0};
    int rc;

    if (!it)
        return CM_ENOMEM;
    if ((rc = key_head(&k, K_HOUR)) || (rc = put_be64(&k, (uint64_t)(from_hour < 0 ? 0 : from_hour))))
        goto out;
    for (md__iter_seek(it, cm_buf_slice(&k)); md__iter_valid(it); md__iter_next(it)) {
        cm_slice key = md__iter_key(it);
        md_usage_ctr c;
        agg a;
        if (key.n < 10 || key.p[0] != MD__K_USAGE || key.p[1] != K_HOUR)
            break;
        memset(&c, 0, sizeof c);
        c.hour = (int64_t)get_be64(key.p + 2);
        if (c.hour >= to_hour)
            break;
        /* bucket 00 key 00 op 00 sc */
        const uint8_t *p = key.p + 10, *end = key.p + key.n;
        const uint8_t *z1 = memchr(p, 0, (size_t)(end - p));
        const uint8_t *z2 = z1 ? memchr(z1 + 1, 0, (size_t)(end - z1 - 1)) : NULL;
        const uint8_t *z3 = z2 ? memchr(z2 + 1, 0, (size_t)(end - z2 - 1)) : NULL;
        if (!z3 || z3 + 2 != end || (size_t)(z1 - p) > MD_BUCKET_MAX ||
            (size_t)(z2 - z1 - 1) >= sizeof c.access_key || (size_t)(z3 - z2 - 1) >= sizeof c.op ||
            ctr_decode(md__iter_val(it), &a)) {
            cm_log(CM_LOG_WARN, "metadata: skipping a corrupt usage counter");
            continue;
        }
        memcpy(c.bucket, p, (size_t)(z1 - p));
        memcpy(c.access_key, z1 + 1, (size_t)(z2 - z1 - 1));
        memcpy(c.op, z2 + 1, (size_t)(z3 - z2 - 1));
        c.status_class = z3[1];
        c.cls = a.cls;
        c.requests = a.requests;
        c.billable = a.billable;
        c.bytes_in = a.bytes_in;
        c.bytes_out = a.bytes_out;
        if ((rc = fn(arg, &c)))
            goto out;
    }
    rc = md__iter_status(it);
out:
    cm_buf_free(&k);
    md__iter_free(it);
    return rc;
}

int md_storage_scan(md_db_t *db, int64_t from_hour, int64_t to_hour, md_storage_fn fn, void *arg)
{
    struct md__iter *it = md__iter_new(db);
    cm_buf k = {0};
    int rc;

    if (!it)
        return CM_ENOMEM;
    if ((rc = key_head(&k, K_BYTEMS)) || (rc = put_be64(&k, (uint64_t)(from_hour < 0 ? 0 : from_hour))))
        goto out;
    for (md__iter_seek(it, cm_buf_slice(&k)); md__iter_valid(it); md__iter_next(it)) {
        cm_slice key = md__iter_key(it), val = md__iter_val(it);
        cm_reader r = {val.p, val.n};
        uint8_t ver;
        uint64_t lo, hi;
        char bucket[MD_BUCKET_MAX + 1];
        if (key.n < 10 || key.p[0] != MD__K_USAGE || key.p[1] != K_BYTEMS)
            break;
        int64_t hour = (int64_t)get_be64(key.p + 2);
        if (hour >= to_hour)
            break;
        if (key.n - 10 > MD_BUCKET_MAX || cm_get_u8(&r, &ver) || cm_get_u64(&r, &lo) ||
            cm_get_u64(&r, &hi))
            continue;
        memcpy(bucket, key.p + 10, key.n - 10);
        bucket[key.n - 10] = 0;
        double bms = (double)hi * 18446744073709551616.0 + (double)lo;
        if ((rc = fn(arg, hour, bucket, bms / (double)HOUR_MS)))
            goto out;
    }
    rc = md__iter_status(it);
out:
    cm_buf_free(&k);
    md__iter_free(it);
    return rc;
}

int md_storage_list(md_db_t *db, md_storage_state **out, size_t *n)
{
    struct md__iter *it = md__iter_new(db);
    md_storage_state *a = NULL;
    size_t cnt = 0, cap = 0;
    uint8_t start[2] = {MD__K_USAGE, K_STATE};
    int rc;

    if (!it)
        return CM_ENOMEM;
    for (md__iter_seek(it, CM_SLICE(start, 2)); md__iter_valid(it); md__iter_next(it)) {
        cm_slice key = md__iter_key(it);
        if (key.n < 3 || key.p[0] != MD__K_USAGE || key.p[1] != K_STATE)
            break;
        if (key.n - 2 > MD_BUCKET_MAX)
            continue;
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 16;
            md_storage_state *na = realloc(a, nc * sizeof *na);
            if (!na) {
                rc = CM_ENOMEM;
                goto out;
            }
            a = na;
            cap = nc;
        }
        md_storage_state *s = &a[cnt];
        memset(s, 0, sizeof *s);
        if (state_decode(md__iter_val(it), s))
            continue;
        memcpy(s->bucket, key.p + 2, key.n - 2);
        s->bucket[key.n - 2] = 0;
        cnt++;
    }
    if ((rc = md__iter_status(it)))
        goto out;
    *out = a;
    *n = cnt;
    a = NULL;
out:
    free(a);
    md__iter_free(it);
    return rc;
}

/* ------------------------------------------------------------ logging */
/* 'L' value: version, target bucket, target prefix. */
int md_logging_put(md_db_t *db, const char *bucket, const md_logging *l)
{
    struct md__batch *b = md__batch_new();
    cm_buf k = {0}, v = {0};
    int rc;
    if (!b)
        return CM_ENOMEM;
    if ((rc = md__check_bucket(bucket)) || (rc = key_head(&k, K_LOGGING)) ||
        (rc = cm_buf_append_str(&k, bucket)))
        goto out;
    if (l) {
        if ((rc = cm_buf_put_u8(&v, MD__REC_VERSION)) ||
            (rc = cm_buf_put_bytes(&v, CM_SLICE_STR(l->target_bucket))) ||
            (rc = cm_buf_put_bytes(&v, CM_SLICE_STR(l->target_prefix))))
            goto out;
        md__batch_put(b, cm_buf_slice(&k), cm_buf_slice(&v));
    } else {
        md__batch_del(b, cm_buf_slice(&k));
    }
    rc = md__batch_commit(db, b, true);
out:
    md__batch_free(b);
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

static int logging_decode(cm_slice v, md_logging *out)
{
    cm_reader r = {v.p, v.n};
    uint8_t ver;
    cm_slice tb, tp;
    if (cm_get_u8(&r, &ver) || ver != MD__REC_VERSION || cm_get_bytes(&r, &tb) ||
        cm_get_bytes(&r, &tp) || tb.n > MD_BUCKET_MAX || tp.n >= sizeof out->target_prefix)
        return CM_ECORRUPT;
    memset(out, 0, sizeof *out);
    memcpy(out->target_bucket, tb.p, tb.n);
    memcpy(out->target_prefix, tp.p, tp.n);
    return 0;
}

int md_logging_get(md_db_t *db, const char *bucket, md_logging *out)
{
    cm_buf k = {0}, v = {0};
    int rc;
    if ((rc = key_head(&k, K_LOGGING)) || (rc = cm_buf_append_str(&k, bucket)) ||
        (rc = md__get(db, cm_buf_slice(&k), &v)))
        goto out;
    rc = logging_decode(cm_buf_slice(&v), out);
out:
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

int md_logging_list(md_db_t *db, md_logging_ent **out, size_t *n)
{
    struct md__iter *it = md__iter_new(db);
    md_logging_ent *a = NULL;
    size_t cnt = 0, cap = 0;
    uint8_t start[2] = {MD__K_USAGE, K_LOGGING};
    int rc;

    if (!it)
        return CM_ENOMEM;
    for (md__iter_seek(it, CM_SLICE(start, 2)); md__iter_valid(it); md__iter_next(it)) {
        cm_slice key = md__iter_key(it);
        if (key.n < 3 || key.p[0] != MD__K_USAGE || key.p[1] != K_LOGGING)
            break;
        if (key.n - 2 > MD_BUCKET_MAX)
            continue;
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 8;
            md_logging_ent *na = realloc(a, nc * sizeof *na);
            if (!na) {
                rc = CM_ENOMEM;
                goto out;
            }
            a = na;
            cap = nc;
        }
        if (logging_decode(md__iter_val(it), &a[cnt].cfg))
            continue;
        memcpy(a[cnt].bucket, key.p + 2, key.n - 2);
        a[cnt].bucket[key.n - 2] = 0;
        cnt++;
    }
    if ((rc = md__iter_status(it)))
        goto out;
    *out = a;
    *n = cnt;
    a = NULL;
out:
    free(a);
    md__iter_free(it);
    return rc;
}
