/* metadata/uploads.c - multipart uploads and their parts: create, get, part
 * put (replacing a part makes its old layout garbage), part list, complete
 * (object put + upload and parts dropped in one batch) and abort. Listing of
 * uploads lives in list.c. */
#include "metadata/md_int.h"

#include <stdlib.h>

#define UPLOAD_ID_MAX 1024 /* upload ids are ours (gateway-made); this is a sanity bound */
#define PART_MAX 10000

static int check_upload(const char *bucket, cm_slice key, cm_slice upload_id)
{
    if (md__check_bucket(bucket) || md__check_key(key) || upload_id.n == 0 ||
        upload_id.n > UPLOAD_ID_MAX)
        return CM_EINVAL;
    return 0;
}

int md_upload_create(md_db_t *db, const char *bucket, cm_slice key, cm_slice upload_id,
                     const md_object *tmpl)
{
    pthread_rwlock_t *blk, *ulk;
    struct md__batch *b = NULL;
    cm_buf k = {0}, v = {0};
    int rc;

    if ((rc = check_upload(bucket, key, upload_id)))
        return md__check_bucket(bucket) ? CM_ENOTFOUND : rc;
    if ((rc = md__key_upload(&k, bucket, key, upload_id)) ||
        (rc = md__upload_encode(&v, cm_now_ms(), tmpl)))
        goto out0;
    if (!(b = md__batch_new())) {
        rc = CM_ENOMEM;
        goto out0;
    }
    blk = md__bucket_lock(db, bucket);
    ulk = md__upload_lock(db, upload_id);
    pthread_rwlock_rdlock(blk);
    pthread_rwlock_wrlock(ulk);
    if ((rc = md__bucket_exists_locked(db, bucket)))
        goto out;
    rc = md__exists(db, cm_buf_slice(&k));
    if (rc == 0)
        rc = CM_EEXISTS;
    if (rc != CM_ENOTFOUND)
        goto out;
    md__batch_put(b, cm_buf_slice(&k), cm_buf_slice(&v));
    rc = md__batch_commit(db, b, true);
out:
    pthread_rwlock_unlock(ulk);
    pthread_rwlock_unlock(blk);
out0:
    md__batch_free(b);
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

int md_upload_get(md_db_t *db, const char *bucket, cm_slice key, cm_slice upload_id, md_upload *out)
{
    cm_buf k = {0}, v = {0};
    md_upload u = {0};
    cm_pool *pool = NULL;
    int rc;

    if (check_upload(bucket, key, upload_id))
        return CM_ENOTFOUND;
    if ((rc = md__key_upload(&k, bucket, key, upload_id)) ||
        (rc = md__get(db, cm_buf_slice(&k), &v)))
        goto out;
    if (!(pool = cm_pool_new())) {
        rc = CM_ENOMEM;
        goto out;
    }
    if ((rc = md__pool_slice(pool, key, &u.key)) ||
        (rc = md__pool_slice(pool, upload_id, &u.upload_id)) ||
        (rc = md__upload_decode_pool(cm_buf_slice(&v), pool, &u)))
        goto out;
    u.mem = pool;
    pool = NULL;
    *out = u;
out:
    cm_pool_free(pool);
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

void md_upload_clear(md_upload *u)
{
    if (!u)
        return;
    cm_pool_free(u->mem);
    memset(u, 0, sizeof *u);
}

static pthread_mutex_t *part_lock(md_db_t *db, cm_slice upload_id, uint32_t num)
{
    uint8_t be[4] = {(uint8_t)(num >> 24), (uint8_t)(num >> 16), (uint8_t)(num >> 8), (uint8_t)num};

    return &db->key_lk[md__hash(upload_id, CM_SLICE(be, 4)) % MD__NKEYLOCK];
}

int md_part_put(md_db_t *db, const char *bucket, cm_slice key, cm_slice upload_id,
                const md_part *part, uint64_t intent_id)
{
    pthread_rwlock_t *ulk;
    pthread_mutex_t *plk;
    struct md__batch *b = NULL;
    md__garbage g = {0};
    cm_buf uk = {0}, pk = {0}, ik = {0}, cur = {0}, v = {0};
    md_part old;
    int rc;

    if ((rc = check_upload(bucket, key, upload_id)))
        return md__check_bucket(bucket) || md__check_key(key) ? CM_ENOTFOUND : rc;
    if (part->num < 1 || part->num > PART_MAX)
        return CM_EINVAL;
    if ((rc = md__key_upload(&uk, bucket, key, upload_id)) ||
        (rc = md__key_part(&pk, upload_id, part->num)) || (rc = md__part_encode(&v, part)))
        goto out0;
    if (!(b = md__batch_new())) {
        rc = CM_ENOMEM;
        goto out0;
    }
    md__batch_put(b, cm_buf_slice(&pk), cm_buf_slice(&v));
    if (intent_id) {
        if ((rc = md__key_seq(&ik, MD__K_INTENT, intent_id)))
            goto out0;
        md__batch_del(b, cm_buf_slice(&ik));
    }
    ulk = md__upload_lock(db, upload_id);
    plk = part_lock(db, upload_id, part->num);
    pthread_rwlock_rdlock(ulk);
    pthread_mutex_lock(plk);
    if ((rc = md__exists(db, cm_buf_slice(&uk))))
        goto out;
    rc = md__get(db, cm_buf_slice(&pk), &cur);
    if (rc == 0) {
        if (md__part_decode(cm_buf_slice(&cur), &old) == 0) {
            if (old.layout.n && !cm_slice_eq(old.layout, part->layout))
                rc = md__garbage_add(db, b, &g, old.layout);
        } else {
            cm_log(CM_LOG_ERROR, "metadata: corrupt part record replaced; its data leaks");
        }
    } else if (rc == CM_ENOTFOUND) {
        rc = 0;
    }
    if (rc == 0)
        rc = md__batch_commit(db, b, true);
out:
    pthread_mutex_unlock(plk);
    pthread_rwlock_unlock(ulk);
    if (rc == 0)
        md__garbage_reclaim(db, &g);
out0:
    cm_buf_free(&g.keys);
    cm_buf_free(&g.layouts);
    md__batch_free(b);
    cm_buf_free(&uk);
    cm_buf_free(&pk);
    cm_buf_free(&ik);
    cm_buf_free(&cur);
    cm_buf_free(&v);
    return rc;
}

int md_part_list(md_db_t *db, const char *bucket, cm_slice key, cm_slice upload_id, uint32_t after,
                 size_t max, md_part **out, size_t *n, bool *truncated)
{
    struct md__iter *it = NULL;
    cm_buf uk = {0}, pk = {0}, raw = {0};
    size_t cnt = 0;
    bool more = false;
    md_part *a = NULL;
    int rc;

    if (check_upload(bucket, key, upload_id))
        return CM_ENOTFOUND;
    if ((rc = md__key_upload(&uk, bucket, key, upload_id)) ||
        (rc = md__exists(db, cm_buf_slice(&uk))))
        goto out;
    if ((rc = md__key_part_prefix(&pk, upload_id)))
        goto out;
    if (max == 0 || after >= PART_MAX)
        goto done;
    if (!(it = md__iter_new(db))) {
        rc = CM_ENOMEM;
        goto out;
    }
    {
        size_t plen = pk.n;
        uint32_t from = after + 1;
        uint8_t be[4] = {(uint8_t)(from >> 24), (uint8_t)(from >> 16), (uint8_t)(from >> 8),
                         (uint8_t)from};
        if ((rc = cm_buf_append(&pk, be, 4)))
            goto out;
        /* Pass 1: num, length and value of each part, into raw. */
        for (md__iter_seek(it, cm_buf_slice(&pk)); md__iter_valid(it); md__iter_next(it)) {
            cm_slice k = md__iter_key(it), v = md__iter_val(it);
            uint32_t num;
            md_part p;
            if (k.n < plen || memcmp(k.p, pk.p, plen))
                break;
            if (md__key_part_num(k, plen, &num) || md__part_decode(v, &p)) {
                cm_log(CM_LOG_ERROR, "metadata: skipping corrupt part record");
                continue;
            }
            if (cnt == max) {
                more = true;
                break;
            }
            if ((rc = cm_buf_put_u32(&raw, num)) || (rc = cm_buf_put_bytes(&raw, v)))
                goto out;
            cnt++;
        }
        if ((rc = md__iter_status(it)))
            goto out;
    }
    if (cnt) {
        /* Pass 2: one block, the array first, then the bytes it points to. */
        size_t asz = cnt * sizeof *a;
        cm_reader r;
        if (!(a = malloc(asz + raw.n))) {
            rc = CM_ENOMEM;
            goto out;
        }
        memcpy((uint8_t *)a + asz, raw.p, raw.n);
        r = (cm_reader){(uint8_t *)a + asz, raw.n};
        for (size_t i = 0; i < cnt; i++) {
            cm_slice v;
            memset(&a[i], 0, sizeof a[i]);
            if ((rc = cm_get_u32(&r, &a[i].num)) || (rc = cm_get_bytes(&r, &v)) ||
                (rc = md__part_decode(v, &a[i])))
                goto out;
        }
    }
done:
    *out = a;
    *n = cnt;
    *truncated = more;
    a = NULL;
    rc = 0;
out:
    free(a);
    md__iter_free(it);
    cm_buf_free(&uk);
    cm_buf_free(&pk);
    cm_buf_free(&raw);
    return rc;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

/* Drops the upload record and every part (with the batch it fills); part
 * layouts not in keep (sorted) become garbage. Every kept number must exist:
 * CM_EINVAL otherwise. */
static int drop_upload(md_db_t *db, struct md__batch *b, md__garbage *g, cm_slice uk,
                       cm_slice upload_id, const uint32_t *keep, size_t nkeep)
{
    struct md__iter *it = md__iter_new(db);
    cm_buf pk = {0};
    size_t nkept = 0;
    int rc;

    if (!it)
        return CM_ENOMEM;
    if ((rc = md__key_part_prefix(&pk, upload_id)))
        goto out;
    for (md__iter_seek(it, cm_buf_slice(&pk)); md__iter_valid(it); md__iter_next(it)) {
        cm_slice k = md__iter_key(it);
        uint32_t num;
        md_part p;
        if (k.n < pk.n || memcmp(k.p, pk.p, pk.n))
            break;
        md__batch_del(b, k);
        if (md__key_part_num(k, pk.n, &num)) {
            cm_log(CM_LOG_ERROR, "metadata: dropping malformed part key");
            continue;
        }
        if (nkeep && bsearch(&num, keep, nkeep, sizeof *keep, cmp_u32)) {
            nkept++;
            continue;
        }
        if (md__part_decode(md__iter_val(it), &p)) {
            cm_log(CM_LOG_ERROR, "metadata: corrupt part record dropped; its data leaks");
            continue;
        }
        if (p.layout.n && (rc = md__garbage_add(db, b, g, p.layout)))
            goto out;
    }
    if ((rc = md__iter_status(it)))
        goto out;
    if (nkept != nkeep)
        rc = CM_EINVAL; /* a kept part does not exist */
    else
        md__batch_del(b, uk);
out:
    md__iter_free(it);
    cm_buf_free(&pk);
    return rc;
}

/* Complete (obj != NULL) or abort (obj == NULL). */
static int upload_finish(md_db_t *db, const char *bucket, cm_slice key, cm_slice upload_id,
                         const md_object *obj, const uint32_t *keep, size_t nkeep,
                         const md_write_opts *opts)
{
    pthread_rwlock_t *blk, *ulk;
    pthread_mutex_t *klk;
    struct md__batch *b = NULL;
    md__garbage g = {0};
    cm_buf uk = {0};
    uint32_t *sorted = NULL;
    size_t ns = 0;
    int rc;

    if (check_upload(bucket, key, upload_id))
        return CM_ENOTFOUND;
    if ((rc = md__key_upload(&uk, bucket, key, upload_id)))
        goto out0;
    if (nkeep) {
        if (!(sorted = malloc(nkeep * sizeof *sorted))) {
            rc = CM_ENOMEM;
            goto out0;
        }
        memcpy(sorted, keep, nkeep * sizeof *sorted);
        qsort(sorted, nkeep, sizeof *sorted, cmp_u32);
        for (size_t i = 0; i < nkeep; i++) /* drop duplicates */
            if (i == 0 || sorted[i] != sorted[ns - 1])
                sorted[ns++] = sorted[i];
    }
    if (!(b = md__batch_new())) {
        rc = CM_ENOMEM;
        goto out0;
    }
    blk = md__bucket_lock(db, bucket);
    ulk = md__upload_lock(db, upload_id);
    klk = md__key_lock(db, bucket, key);
    pthread_rwlock_rdlock(blk);
    pthread_rwlock_wrlock(ulk);
    pthread_mutex_lock(klk);
    if ((rc = md__exists(db, cm_buf_slice(&uk))) ||
        (rc = drop_upload(db, b, &g, cm_buf_slice(&uk), upload_id, sorted, ns)))
        goto out;
    if (obj && (rc = md__object_stage(db, b, &g, bucket, key, obj, opts)))
        goto out;
    rc = md__batch_commit(db, b, true);
out:
    pthread_mutex_unlock(klk);
    pthread_rwlock_unlock(ulk);
    pthread_rwlock_unlock(blk);
    if (rc == 0)
        md__garbage_reclaim(db, &g);
out0:
    cm_buf_free(&g.keys);
    cm_buf_free(&g.layouts);
    md__batch_free(b);
    cm_buf_free(&uk);
    free(sorted);
    return rc;
}

int md_upload_complete_ex(md_db_t *db, const char *bucket, cm_slice key, cm_slice upload_id,
                          const md_object *obj, const uint32_t *keep, size_t nkeep,
                          const md_write_opts *opts)
{
    if (!obj)
        return CM_EINVAL;
    return upload_finish(db, bucket, key, upload_id, obj, keep, nkeep, opts);
}

int md_upload_complete(md_db_t *db, const char *bucket, cm_slice key, cm_slice upload_id,
                       const md_object *obj, const uint32_t *keep, size_t nkeep,
                       md_precond_fn precond, void *arg)
{
    md_write_opts o = {precond, arg, NULL, NULL, 0};
    return md_upload_complete_ex(db, bucket, key, upload_id, obj, keep, nkeep, &o);
}

int md_upload_abort(md_db_t *db, const char *bucket, cm_slice key, cm_slice upload_id)
{
    return upload_finish(db, bucket, key, upload_id, NULL, NULL, 0, NULL);
}
