/* metadata/objects.c - object records: put (with precondition, intent drop
 * and garbage for the replaced layout in one sync batch), get, delete, and
 * the helpers on md_object. Listing lives in list.c; the record format in
 * codec.c. */
#include "metadata/md_int.h"

#include <stdlib.h>

void md_object_clear(md_object *o)
{
    if (!o)
        return;
    free(o->mem);
    memset(o, 0, sizeof *o);
}

int md_object_hdr(const md_object *o, const char *name, cm_slice *out)
{
    for (size_t i = 0; i < o->nhdrs; i++) {
        if (cm_slice_eq_str(o->hdrs[i].name, name)) {
            *out = o->hdrs[i].value;
            return 0;
        }
    }
    return CM_ENOTFOUND;
}

int md__object_stage(md_db_t *db, struct md__batch *b, md__garbage *g, const char *bucket,
                     cm_slice key, const md_object *obj, const md_write_opts *opts)
{
    md_precond_fn precond = opts ? opts->precond : NULL;
    void *arg = opts ? opts->precond_arg : NULL;
    cm_buf k = {0}, cur = {0}, v = {0};
    md_object o = {0};
    bool have;
    int rc;

    if ((rc = md__key_object(&k, bucket, key)))
        goto out;
    rc = md__get(db, cm_buf_slice(&k), &cur);
    if (rc && rc != CM_ENOTFOUND)
        goto out;
    have = rc == 0;
    if (have && (rc = md__obj_decode(cm_buf_slice(&cur), false, &o)))
        goto out;
    if (precond && (rc = precond(arg, have ? &o : NULL)))
        goto out;
    if (!obj && !have) {
        rc = CM_ENOTFOUND;
        goto out;
    }
    if (opts && opts->hook) {
        md_batch_t mb = {db, b};
        if ((rc = opts->hook(opts->hook_arg, &mb, have ? &o : NULL, obj)))
            goto out;
    }
    if (opts && opts->intent2) {
        cm_buf ik = {0};
        if ((rc = md__key_seq(&ik, MD__K_INTENT, opts->intent2)))
            goto out;
        md__batch_del(b, cm_buf_slice(&ik));
        cm_buf_free(&ik);
    }
    if (obj) {
        md_object rec = *obj;
        rec.vref = (md_value_ref){0};
        if (rec.inline_data.n >= MD__VALUE_MIN && !rec.layout.n) {
            if ((rc = md__batch_value(db, b, rec.inline_data, &rec.vref)))
                goto out;
            rec.inline_data = CM_SLICE_NULL;
        }
        if ((rc = md__obj_encode(&v, &rec)))
            goto out;
        md__batch_put(b, cm_buf_slice(&k), cm_buf_slice(&v));
    } else {
        md__batch_del(b, cm_buf_slice(&k));
    }
    /* A record rewritten in place (e.g. a metadata-only copy onto itself)
     * keeps its layout: that is not garbage. */
    if (have && o.layout.n && !(obj && cm_slice_eq(o.layout, obj->layout)))
        rc = md__garbage_add(db, b, g, o.layout);
    /* The replaced bytes in the value log are dead (counted before the
     * commit: should it fail, the collector's scan finds them alive). */
    if (!rc && have && o.vref.len)
        md__vlog_dead(md__values(db), o.vref.seg, o.vref.len, false);
out:
    md_object_clear(&o);
    cm_buf_free(&k);
    cm_buf_free(&cur);
    cm_buf_free(&v);
    return rc;
}

/* put (obj != NULL) or delete (obj == NULL) of one object. */
static int object_change(md_db_t *db, const char *bucket, cm_slice key, const md_object *obj,
                         uint64_t intent_id, const md_write_opts *opts)
{
    pthread_rwlock_t *blk;
    pthread_mutex_t *klk;
    struct md__batch *b = NULL;
    md__garbage g = {0};
    cm_buf ik = {0};
    int rc;

    if ((rc = md__check_bucket(bucket)))
        return rc == CM_EINVAL ? CM_ENOTFOUND : rc;
    if ((rc = md__check_key(key)))
        return rc;
    if (!(b = md__batch_new()))
        return CM_ENOMEM;
    if (intent_id) {
        if ((rc = md__key_seq(&ik, MD__K_INTENT, intent_id)))
            goto out0;
        md__batch_del(b, cm_buf_slice(&ik));
    }
    blk = md__bucket_lock(db, bucket);
    klk = md__key_lock(db, bucket, key);
    pthread_rwlock_rdlock(blk);
    pthread_mutex_lock(klk);
    if ((rc = md__bucket_exists_locked(db, bucket)) ||
        (rc = md__object_stage(db, b, &g, bucket, key, obj, opts)))
        goto out;
    rc = md__batch_commit(db, b, true);
out:
    pthread_mutex_unlock(klk);
    pthread_rwlock_unlock(blk);
    if (rc == 0)
        md__garbage_reclaim(db, &g);
out0:
    cm_buf_free(&g.keys);
    cm_buf_free(&g.layouts);
    cm_buf_free(&ik);
    md__batch_free(b);
    return rc;
}

int md_object_put_ex(md_db_t *db, const char *bucket, cm_slice key, const md_object *obj,
                     uint64_t intent_id, const md_write_opts *opts)
{
    if (!obj)
        return CM_EINVAL;
    return object_change(db, bucket, key, obj, intent_id, opts);
}

int md_object_put(md_db_t *db, const char *bucket, cm_slice key, const md_object *obj,
                  uint64_t intent_id, md_precond_fn precond, void *arg)
{
    md_write_opts o = {precond, arg, NULL, NULL, 0};
    return md_object_put_ex(db, bucket, key, obj, intent_id, &o);
}

int md_object_delete_ex(md_db_t *db, const char *bucket, cm_slice key,
                        const md_write_opts *opts)
{
    return object_change(db, bucket, key, NULL, 0, opts);
}

int md_object_delete(md_db_t *db, const char *bucket, cm_slice key, md_precond_fn precond,
                     void *arg)
{
    md_write_opts o = {precond, arg, NULL, NULL, 0};
    return md_object_delete_ex(db, bucket, key, &o);
}

int md_object_get(md_db_t *db, const char *bucket, cm_slice key, md_object *out)
{
    cm_buf k = {0}, v = {0};
    int rc;

    if (md__check_bucket(bucket) || md__check_key(key))
        return CM_ENOTFOUND;
    if ((rc = md__key_object(&k, bucket, key)))
        goto out;
    /* A value the collector moves away between the record's read and the
     * value's (its old segment already dropped) is read again where the
     * record now says. */
    for (int tries = 0; tries < 4; tries++) {
        uint8_t *room = NULL;
        if ((rc = md__get(db, cm_buf_slice(&k), &v)))
            break;
        size_t vlen = md__obj_value_len(cm_buf_slice(&v));
        rc = md__obj_decode_room(cm_buf_slice(&v), true, vlen, out, &room);
        if (rc == CM_ECORRUPT)
            cm_log(CM_LOG_ERROR, "metadata: corrupt object record in bucket %s", bucket);
        if (rc || !out->vref.len)
            break;
        if (!room || vlen != out->vref.len) {
            rc = CM_ECORRUPT;
        } else if (!(rc = md__value_read(db, &out->vref, room))) {
            out->inline_data = CM_SLICE(room, out->vref.len);
            out->vref = (md_value_ref){0};
            break;
        }
        md_object_clear(out);
        if (rc != CM_ENOTFOUND)
            break;
    }
out:
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

uint64_t md_batch_seq(md_batch_t *mb)
{
    uint64_t id = 0;
    if (md__batch_seq(mb->db, mb->b, &id))
        return 0;
    return id;
}

int md_object_encode(cm_buf *b, const md_object *o)
{
    cm_buf rec = {0};
    md_object t = *o;
    t.vref = (md_value_ref){0}; /* only records in this store refer to its value log */
    int rc = md__obj_encode(&rec, &t); /* it writes from the start of its buffer */

    if (rc == 0)
        rc = cm_buf_append_slice(b, cm_buf_slice(&rec));
    cm_buf_free(&rec);
    return rc;
}

int md_object_decode(cm_slice v, md_object *out)
{
    memset(out, 0, sizeof *out);
    return md__obj_decode(v, true, out);
}

/* Splits an object record's key ('O' bucket 0x00 key) into bucket (NUL-
 * terminated) and key (a slice into k). False if it is not well formed. */
static bool split_object_key(cm_slice k, char bucket[MD_BUCKET_MAX + 1], cm_slice *key)
{
    const uint8_t *nul = k.n > 1 ? memchr(k.p + 1, 0, k.n - 1) : NULL;
    size_t bl = nul ? (size_t)(nul - (k.p + 1)) : 0;

    if (!nul || bl > MD_BUCKET_MAX)
        return false;
    memcpy(bucket, k.p + 1, bl);
    bucket[bl] = 0;
    *key = CM_SLICE(nul + 1, k.n - (size_t)(nul + 1 - k.p));
    return true;
}

int md_object_scan(md_db_t *db, const char *after_bucket, cm_slice after_key, size_t max,
                   md_scan_fn fn, void *arg, bool *more)
{
    struct md__iter *it = md__iter_new(db);
    uint8_t start = MD__K_OBJECT;
    cm_buf k = {0};
    size_t seen = 0;
    int rc = 0;

    *more = false;
    if (!it)
        return CM_ENOMEM;
    if (after_bucket) {
        if ((rc = md__key_object(&k, after_bucket, after_key)))
            goto out;
        md__iter_seek(it, cm_buf_slice(&k));
        if (md__iter_valid(it) && cm_slice_eq(md__iter_key(it), cm_buf_slice(&k)))
            md__iter_next(it); /* strictly after */
    } else {
        md__iter_seek(it, CM_SLICE(&start, 1));
    }
    for (; md__iter_valid(it); md__iter_next(it)) {
        cm_slice key = md__iter_key(it);
        if (key.n < 2 || key.p[0] != MD__K_OBJECT)
            break;
        char bucket[MD_BUCKET_MAX + 1];
        cm_slice okey;
        if (!split_object_key(key, bucket, &okey))
            continue;
        if (seen == max) {
            *more = true;
            break;
        }
        md_object o;
        if (md__obj_decode(md__iter_val(it), false, &o)) {
            cm_log(CM_LOG_ERROR, "metadata: corrupt object record in bucket %s", bucket);
            continue;
        }
        seen++;
        o.vref = (md_value_ref){0}; /* scans do not read value-log bytes */
        rc = fn(arg, bucket, okey, &o);
        md_object_clear(&o);
        if (rc)
            break;
    }
    if (!rc)
        rc = md__iter_status(it);
out:
    cm_buf_free(&k);
    md__iter_free(it);
    return rc;
}

/* ------------------------------------------------------------ value-log collector */
/* The value-log reference at the end of a version-2 record, without a full
 * decode (the scan reads every record). False if there is none. */
static bool peek_ref(cm_slice v, uint32_t *seg, uint32_t *len)
{
    if (!md__obj_value_len(v))
        return false;
    *seg = md__get_le32(v.p + v.n - 24);
    *len = md__get_le32(v.p + v.n - 20);
    return true;
}

/* A segment as one collector pass sees it. */
struct gc_seg {
    md__vseg_info info;
    uint64_t live; /* bytes that records point to */
    bool victim;   /* to be emptied and dropped */
};

static struct gc_seg *seg_of(struct gc_seg *segs, size_t n, uint32_t id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (segs[mid].info.id == id)
            return &segs[mid];
        if (segs[mid].info.id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Moves one record's value out of segment seg into the active one, under
 * the record's locks, if the record still points there. *moved counts it. */
static int move_value(md_db_t *db, cm_slice rkey, uint32_t seg, size_t *moved)
{
    char bucket[MD_BUCKET_MAX + 1];
    cm_slice key;
    md_object o = {0};
    cm_buf cur = {0}, v = {0};
    struct md__batch *b = NULL;
    uint8_t *bytes = NULL;
    int rc;

    if (!split_object_key(rkey, bucket, &key))
        return 0;
    pthread_rwlock_t *blk = md__bucket_lock(db, bucket);
    pthread_mutex_t *klk = md__key_lock(db, bucket, key);
    pthread_rwlock_rdlock(blk);
    pthread_mutex_lock(klk);
    rc = md__get(db, rkey, &cur);
    if (rc == CM_ENOTFOUND) { /* deleted since the scan */
        rc = 0;
        goto out;
    }
    if (rc || (rc = md__obj_decode(cm_buf_slice(&cur), false, &o)))
        goto out;
    if (o.vref.len == 0 || o.vref.seg != seg)
        goto out; /* rewritten since the scan */
    if (!(bytes = malloc(o.vref.len)) || !(b = md__batch_new())) {
        rc = CM_ENOMEM;
        goto out;
    }
    if ((rc = md__value_read(db, &o.vref, bytes)) ||
        (rc = md__batch_value(db, b, CM_SLICE(bytes, o.vref.len), &o.vref)) ||
        (rc = md__obj_encode(&v, &o)))
        goto out;
    md__batch_put(b, rkey, cm_buf_slice(&v));
    if (!(rc = md__batch_commit(db, b, true)))
        (*moved)++;
out:
    pthread_mutex_unlock(klk);
    pthread_rwlock_unlock(blk);
    md_object_clear(&o);
    md__batch_free(b);
    free(bytes);
    cm_buf_free(&cur);
    cm_buf_free(&v);
    return rc;
}

/* Calls fn for every object record; stops at its first error. */
static int each_record(md_db_t *db, int (*fn)(void *arg, cm_slice k, cm_slice v), void *arg)
{
    struct md__iter *it = md__iter_new(db);
    uint8_t start = MD__K_OBJECT;
    int rc = 0;

    if (!it)
        return CM_ENOMEM;
    for (md__iter_seek(it, CM_SLICE(&start, 1)); !rc && md__iter_valid(it); md__iter_next(it)) {
        cm_slice k = md__iter_key(it);
        if (k.n < 2 || k.p[0] != MD__K_OBJECT)
            break;
        rc = fn(arg, k, md__iter_val(it));
    }
    if (!rc)
        rc = md__iter_status(it);
    md__iter_free(it);
    return rc;
}

struct gc_pass {
    md_db_t *db;
    struct gc_seg *segs;
    size_t n;
    size_t moved;
    int failed; /* first move failure */
};

static int count_live(void *arg, cm_slice k, cm_slice v)
{
    struct gc_pass *p = arg;
    uint32_t seg, len;
    struct gc_seg *s;
    (void)k;
    if (peek_ref(v, &seg, &len) && (s = seg_of(p->segs, p->n, seg)))
        s->live += len;
    return 0;
}

static int move_live(void *arg, cm_slice k, cm_slice v)
{
    struct gc_pass *p = arg;
    uint32_t seg, len;
    struct gc_seg *s;
    if (!peek_ref(v, &seg, &len) || !(s = seg_of(p->segs, p->n, seg)) || !s->victim)
        return 0;
    int rc = move_value(p->db, k, seg, &p->moved);
    if (rc) {
        cm_log(CM_LOG_ERROR, "metadata: value log: cannot move a value out of segment %u: %s",
               seg, cm_strerror(rc));
        s->victim = false; /* kept */
        md__vlog_dead(md__values(p->db), seg, 0, true); /* not tried again until more dies */
        if (!p->failed)
            p->failed = rc;
    }
    return 0;
}

static pthread_mutex_t gc_lk = PTHREAD_MUTEX_INITIALIZER; /* one pass at a time */

int md__values_gc(md_db_t *db, size_t *moved, size_t *dropped)
{
    md__vlog *vl = md__values(db);
    struct gc_pass p = {db, NULL, 0, 0, 0};
    md__vseg_info *info = NULL;
    size_t nvict = 0, ndrop = 0, cap;
    bool scan = false;
    int rc = 0;

    pthread_mutex_lock(&gc_lk);
    cap = md__vlog_segments(vl, NULL, 0);
    if (cap && (!(info = calloc(cap, sizeof *info)) || !(p.segs = calloc(cap, sizeof *p.segs)))) {
        rc = CM_ENOMEM;
        goto out;
    }
    p.n = md__vlog_segments(vl, info, cap);
    p.n = p.n < cap ? p.n : cap; /* segments added since are new: not for this pass */
    for (size_t i = 0; i < p.n; i++) {
        p.segs[i].info = info[i];
        /* A segment with pending reservations may get records yet. */
        if (info[i].pending)
            p.segs[i].info.active = true;
        scan |= !p.segs[i].info.active && (!info[i].known || 2 * info[i].dead >= info[i].size);
    }
    if (!scan)
        goto out;
    /* Pass 1: the live bytes of every segment. Victims: segments no longer
     * written that are at most half alive; the others learn their dead. */
    if ((rc = each_record(db, count_live, &p)))
        goto out;
    for (size_t i = 0; i < p.n; i++) {
        struct gc_seg *s = &p.segs[i];
        if (s->info.active)
            continue;
        md__vlog_dead(vl, s->info.id, s->info.size > s->live ? s->info.size - s->live : 0, true);
        s->victim = 2 * s->live <= s->info.size;
        nvict += s->victim;
    }
    if (!nvict)
        goto out;
    /* Pass 2: move the victims' live values; make that durable (after the
     * checkpoint no journal record refers to a victim), then drop them. */
    if ((rc = each_record(db, move_live, &p)) || (rc = md__checkpoint(db)))
        goto out;
    for (size_t i = 0; i < p.n; i++) {
        if (!p.segs[i].victim)
            continue;
        int drc = md__vlog_drop(vl, p.segs[i].info.id);
        if (drc)
            rc = rc ? rc : drc;
        else
            ndrop++;
    }
    if (p.moved || ndrop)
        cm_log(CM_LOG_INFO, "metadata: value log: moved %zu values, dropped %zu segments",
               p.moved, ndrop);
    if (!rc)
        rc = p.failed;
out:
    pthread_mutex_unlock(&gc_lk);
    free(info);
    free(p.segs);
    if (moved)
        *moved = p.moved;
    if (dropped)
        *dropped = ndrop;
    return rc;
}
