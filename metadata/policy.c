/* metadata/policy.c - per-bucket documents stored as opaque bytes: the
 * bucket policy (JSON, key 'p' bucket) and the CORS configuration (XML, key
 * 'c' bucket). The gateway validates and interprets them; this file only
 * stores them, refusing documents for buckets that do not exist. */
#include "metadata/md_int.h"

#include <stdlib.h>

static int doc_key(cm_buf *b, enum md_bucket_doc kind, const char *bucket)
{
    cm_buf_reset(b);
    if (kind != MD_DOC_POLICY && kind != MD_DOC_CORS)
        return CM_EINVAL;
    int rc = cm_buf_put_u8(b, (uint8_t)kind);
    return rc ? rc : cm_buf_append_str(b, bucket);
}

int md__bucket_docs_del(struct md__batch *b, const char *bucket)
{
    static const enum md_bucket_doc kinds[] = {MD_DOC_POLICY, MD_DOC_CORS};
    cm_buf k = {0};
    int rc = 0;

    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0] && !rc; i++)
        if (!(rc = doc_key(&k, kinds[i], bucket)))
            md__batch_del(b, cm_buf_slice(&k));
    cm_buf_free(&k);
    return rc;
}

int md_bucket_doc_put(md_db_t *db, enum md_bucket_doc kind, const char *bucket, cm_slice doc)
{
    pthread_rwlock_t *lk;
    struct md__batch *wb;
    cm_buf k = {0};
    int rc;

    if ((rc = md__check_bucket(bucket)))
        return rc == CM_EINVAL ? CM_ENOTFOUND : rc;
    if ((rc = doc_key(&k, kind, bucket))) {
        cm_buf_free(&k);
        return rc;
    }
    if (!(wb = md__batch_new())) {
        cm_buf_free(&k);
        return CM_ENOMEM;
    }
    /* Read lock: the bucket cannot be deleted between the check and the put. */
    lk = md__bucket_lock(db, bucket);
    pthread_rwlock_rdlock(lk);
    if (!(rc = md__bucket_exists_locked(db, bucket))) {
        md__batch_put(wb, cm_buf_slice(&k), doc);
        rc = md__batch_commit(db, wb, true);
    }
    pthread_rwlock_unlock(lk);
    md__batch_free(wb);
    cm_buf_free(&k);
    return rc;
}

int md_bucket_doc_get(md_db_t *db, enum md_bucket_doc kind, const char *bucket, cm_buf *out)
{
    cm_buf k = {0}, v = {0};
    int rc;

    if (md__check_bucket(bucket))
        return CM_ENOTFOUND;
    if (!(rc = doc_key(&k, kind, bucket)) && !(rc = md__get(db, cm_buf_slice(&k), &v))) {
        cm_buf_reset(out);
        rc = cm_buf_append_slice(out, cm_buf_slice(&v));
    }
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

int md_bucket_doc_delete(md_db_t *db, enum md_bucket_doc kind, const char *bucket)
{
    struct md__batch *wb;
    cm_buf k = {0};
    int rc;

    if (md__check_bucket(bucket))
        return CM_ENOTFOUND;
    if (!(wb = md__batch_new()))
        return CM_ENOMEM;
    if (!(rc = doc_key(&k, kind, bucket)) && !(rc = md__exists(db, cm_buf_slice(&k)))) {
        md__batch_del(wb, cm_buf_slice(&k));
        rc = md__batch_commit(db, wb, true);
    }
    md__batch_free(wb);
    cm_buf_free(&k);
    return rc;
}
