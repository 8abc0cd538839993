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
        if ((rc = md__obj_encode(&v, obj)))
            goto out;
        md__batch_put(b, cm_buf_slice(&k), cm_buf_slice(&v));
    } else {
        md__batch_del(b, cm_buf_slice(&k));
    }
    /* A record rewritten in place (e.g. a metadata-only copy onto itself)
     * keeps its layout: that is not garbage. */
    if (have && o.layout.n && !(obj && cm_slice_eq(o.layout, obj->layout)))
        rc = md__garbage_add(db, b, g, o.layout);
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
    if ((rc = md__bucket_exists(db, bucket)) ||
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
    if ((rc = md__key_object(&k, bucket, key)) || (rc = md__get(db, cm_buf_slice(&k), &v)))
        goto out;
    if ((rc = md__obj_decode(cm_buf_slice(&v), true, out)) == CM_ECORRUPT)
        cm_log(CM_LOG_ERROR, "metadata: corrupt object record in bucket %s", bucket);
out:
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

uint64_t md_batch_seq(md_batch_t *mb)
{
    uint64_t id = 0;
    if (md__seq_next(mb->db, &id))
        return 0;
    return id;
}

int md_object_encode(cm_buf *b, const md_object *o)
{
    cm_buf rec = {0};
    int rc = md__obj_encode(&rec, o); /* it writes from the start of its buffer */

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
        const uint8_t *nul = memchr(key.p + 1, 0, key.n - 1);
        if (!nul)
            continue;
        if (seen == max) {
            *more = true;
            break;
        }
        char bucket[MD_BUCKET_MAX + 1];
        size_t bl = (size_t)(nul - (key.p + 1));
        if (bl > MD_BUCKET_MAX)
            continue;
        memcpy(bucket, key.p + 1, bl);
        bucket[bl] = 0;
        md_object o;
        if (md__obj_decode(md__iter_val(it), false, &o)) {
            cm_log(CM_LOG_ERROR, "metadata: corrupt object record in bucket %s", bucket);
            continue;
        }
        cm_slice okey = CM_SLICE(nul + 1, key.n - (size_t)(nul + 1 - key.p));
        seen++;
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
