/* metadata/buckets.c - bucket records: create, get, delete (refused while
 * objects or uploads remain) and list. Bucket create/delete take the
 * bucket's stripe lock for writing; object and upload writers hold it for
 * reading, so no record can appear in a bucket being deleted. */
#include "metadata/md_int.h"

#include <stdlib.h>

/* The slot of md_db.bucket_seen that goes with bucket's lock. */
static size_t seen_slot(md_db_t *db, const char *bucket)
{
    return (size_t)(md__bucket_lock(db, bucket) - db->bucket_lk);
}

int md__bucket_exists(md_db_t *db, const char *bucket)
{
    cm_buf k = {0};
    int rc = md__key_bucket(&k, bucket);

    if (rc == 0)
        rc = md__exists(db, cm_buf_slice(&k));
    cm_buf_free(&k);
    return rc;
}

/* Every object write asks under the bucket's read lock; a bucket is found
 * in LevelDB once per lock stripe and then answered from memory (a PUT
 * read LevelDB three times, now twice). Only a holder of the lock may
 * fill the slot: md_bucket_delete clears it after its commit under the
 * write side, so no answer from before the delete can land after it. */
int md__bucket_exists_locked(md_db_t *db, const char *bucket)
{
    size_t i = seen_slot(db, bucket);
    bool seen;
    int rc;

    pthread_mutex_lock(&db->bucket_seen[i].mu);
    seen = !strcmp(db->bucket_seen[i].name, bucket);
    pthread_mutex_unlock(&db->bucket_seen[i].mu);
    if (seen)
        return 0;
    rc = md__bucket_exists(db, bucket);
    if (rc == 0 && strlen(bucket) <= MD_BUCKET_MAX) {
        pthread_mutex_lock(&db->bucket_seen[i].mu);
        strcpy(db->bucket_seen[i].name, bucket);
        pthread_mutex_unlock(&db->bucket_seen[i].mu);
    }
    return rc;
}

/* With the bucket's write lock held: it may be gone once this returns. */
static void forget_bucket(md_db_t *db, const char *bucket)
{
    size_t i = seen_slot(db, bucket);

    pthread_mutex_lock(&db->bucket_seen[i].mu);
    if (!strcmp(db->bucket_seen[i].name, bucket))
        db->bucket_seen[i].name[0] = 0;
    pthread_mutex_unlock(&db->bucket_seen[i].mu);
}

int md_bucket_create(md_db_t *db, const md_bucket *b)
{
    pthread_rwlock_t *lk;
    struct md__batch *wb = NULL;
    cm_buf k = {0}, v = {0};
    int rc;

    if ((rc = md__check_bucket(b->name)))
        return rc;
    if ((rc = md__key_bucket(&k, b->name)) || (rc = md__bucket_encode(&v, b)))
        goto out0;
    if (!(wb = md__batch_new())) {
        rc = CM_ENOMEM;
        goto out0;
    }
    lk = md__bucket_lock(db, b->name);
    pthread_rwlock_wrlock(lk);
    rc = md__exists(db, cm_buf_slice(&k));
    if (rc == 0)
        rc = CM_EEXISTS;
    else if (rc == CM_ENOTFOUND) {
        md__batch_put(wb, cm_buf_slice(&k), cm_buf_slice(&v));
        rc = md__batch_commit(db, wb, true);
    }
    pthread_rwlock_unlock(lk);
out0:
    md__batch_free(wb);
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

int md_bucket_get(md_db_t *db, const char *name, md_bucket *out)
{
    cm_buf k = {0}, v = {0};
    md_bucket t;
    int rc;

    if ((rc = md__check_bucket(name)))
        return rc == CM_EINVAL ? CM_ENOTFOUND : rc;
    if ((rc = md__key_bucket(&k, name)) || (rc = md__get(db, cm_buf_slice(&k), &v)))
        goto out;
    if ((rc = md__bucket_decode(CM_SLICE(k.p + 1, k.n - 1), cm_buf_slice(&v), &t)))
        goto out;
    *out = t;
out:
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

/* 0 if no key starts with prefix, CM_ENOTEMPTY if one does. One seek. */
static int range_empty(md_db_t *db, cm_slice prefix)
{
    struct md__iter *it = md__iter_new(db);
    int rc;

    if (!it)
        return CM_ENOMEM;
    md__iter_seek(it, prefix);
    rc = md__iter_status(it);
    if (rc == 0 && md__iter_valid(it)) {
        cm_slice k = md__iter_key(it);
        if (k.n >= prefix.n && memcmp(k.p, prefix.p, prefix.n) == 0)
            rc = CM_ENOTEMPTY;
    }
    md__iter_free(it);
    return rc;
}

int md_bucket_delete(md_db_t *db, const char *name)
{
    pthread_rwlock_t *lk;
    struct md__batch *wb = NULL;
    cm_buf k = {0}, ko = {0}, ku = {0};
    int rc;

    if ((rc = md__check_bucket(name)))
        return rc == CM_EINVAL ? CM_ENOTFOUND : rc;
    if ((rc = md__key_bucket(&k, name)) || (rc = md__key_object(&ko, name, CM_SLICE_NULL)) ||
        (rc = md__key_upload_prefix(&ku, name, CM_SLICE_NULL)))
        goto out0;
    if (!(wb = md__batch_new())) {
        rc = CM_ENOMEM;
        goto out0;
    }
    lk = md__bucket_lock(db, name);
    pthread_rwlock_wrlock(lk);
    if ((rc = md__exists(db, cm_buf_slice(&k))) || (rc = range_empty(db, cm_buf_slice(&ko))) ||
        (rc = range_empty(db, cm_buf_slice(&ku))))
        goto out;
    md__batch_del(wb, cm_buf_slice(&k));
    if ((rc = md__bucket_docs_del(wb, name))) /* its policy and CORS go with it */
        goto out;
    rc = md__batch_commit(db, wb, true);
    forget_bucket(db, name);
out:
    pthread_rwlock_unlock(lk);
out0:
    md__batch_free(wb);
    cm_buf_free(&k);
    cm_buf_free(&ko);
    cm_buf_free(&ku);
    return rc;
}

int md_bucket_list(md_db_t *db, md_bucket **out, size_t *n)
{
    uint8_t start = MD__K_BUCKET;
    struct md__iter *it = md__iter_new(db);
    md_bucket *a = NULL, *na;
    size_t cnt = 0, cap = 0;
    int rc = 0;

    if (!it)
        return CM_ENOMEM;
    for (md__iter_seek(it, CM_SLICE(&start, 1)); md__iter_valid(it); md__iter_next(it)) {
        cm_slice k = md__iter_key(it);
        if (k.n == 0 || k.p[0] != MD__K_BUCKET)
            break;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            if (!(na = realloc(a, cap * sizeof *a))) {
                rc = CM_ENOMEM;
                goto out;
            }
            a = na;
        }
        if ((rc = md__bucket_decode(CM_SLICE(k.p + 1, k.n - 1), md__iter_val(it), &a[cnt]))) {
            cm_log(CM_LOG_WARN, "metadata: skipping corrupt bucket record");
            rc = 0;
            continue;
        }
        cnt++;
    }
    if ((rc = md__iter_status(it)))
        goto out;
    *out = a;
    *n = cnt;
    a = NULL;
out:
    md__iter_free(it);
    free(a);
    return rc;
}
