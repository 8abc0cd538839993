/* metadata/list.c - listings with S3 semantics: objects of a bucket
 * (ListObjects: prefix, delimiter, start_after, max_keys) and multipart
 * uploads (ListMultipartUploads: key/upload-id markers). A common prefix is
 * emitted once and the iterator then SEEKS to the first key after its range,
 * so the keys it rolls up are never visited. */
#include "metadata/md_int.h"

#include <stdlib.h>

/* Makes room for one more element in a malloc()ed array. */
static int grow(void **a, size_t *cap, size_t n, size_t elem, size_t first)
{
    void *na;
    size_t ncap;

    if (n < *cap)
        return 0;
    ncap = *cap ? *cap * 2 : first;
    if (!(na = realloc(*a, ncap * elem)))
        return CM_ENOMEM;
    memset((uint8_t *)na + *cap * elem, 0, (ncap - *cap) * elem);
    *a = na;
    *cap = ncap;
    return 0;
}

static bool has_prefix(cm_slice k, cm_slice p)
{
    return k.n >= p.n && (p.n == 0 || memcmp(k.p, p.p, p.n) == 0);
}

/* If key (which starts with prefix) has delim after the prefix, sets *cp to
 * prefix + everything up to and including the first such delim and returns
 * true. */
static bool common_prefix(cm_slice key, cm_slice prefix, cm_slice delim, cm_slice *cp)
{
    const uint8_t *d;

    if (delim.n == 0 || key.n < prefix.n)
        return false;
    d = memmem(key.p + prefix.n, key.n - prefix.n, delim.p, delim.n);
    if (!d)
        return false;
    *cp = CM_SLICE(key.p, (size_t)(d - key.p) + delim.n);
    return true;
}

/* Seeks it to the first key after every key that starts with head + tail
 * (tail escaped when esc). Returns false if there is none. */
static int seek_past(struct md__iter *it, cm_buf *tmp, cm_slice head, cm_slice tail, bool esc,
                     bool *more)
{
    int rc;

    cm_buf_reset(tmp);
    if ((rc = cm_buf_append_slice(tmp, head)) ||
        (rc = esc ? md__key_esc(tmp, tail) : cm_buf_append_slice(tmp, tail)))
        return rc;
    *more = md__key_successor(tmp);
    if (*more)
        md__iter_seek(it, cm_buf_slice(tmp));
    return 0;
}

/* ----------------------------------------------------------------- objects */
int md_object_list(md_db_t *db, const md_list_req *req, md_list_res *out)
{
    struct md__iter *it = NULL;
    cm_buf base = {0}, full = {0}, tmp = {0};
    md_list_res res = {0};
    size_t cap = 0;
    cm_pool *pool = NULL;
    bool more;
    int rc;

    memset(out, 0, sizeof *out);
    if (md__check_bucket(req->bucket))
        return CM_ENOTFOUND;
    if ((rc = md__bucket_exists(db, req->bucket)))
        return rc;
    if (req->max_keys == 0)
        return 0; /* S3: nothing, and IsTruncated false */
    if (!(pool = cm_pool_new()) || !(it = md__iter_new(db))) {
        rc = CM_ENOMEM;
        goto out;
    }
    res.mem = pool;
    if ((rc = md__key_object(&base, req->bucket, CM_SLICE_NULL)) ||
        (rc = md__key_object(&full, req->bucket, req->prefix)))
        goto out;

    /* Start at the prefix, or just after start_after if that is later. */
    if (req->start_after.n && cm_slice_cmp(req->start_after, req->prefix) >= 0) {
        if ((rc = md__key_object(&tmp, req->bucket, req->start_after)))
            goto out;
        md__iter_seek(it, cm_buf_slice(&tmp));
        if (md__iter_valid(it) && cm_slice_eq(md__iter_key(it), cm_buf_slice(&tmp)))
            md__iter_next(it);
    } else {
        md__iter_seek(it, cm_buf_slice(&full));
    }

    while (md__iter_valid(it)) {
        cm_slice k = md__iter_key(it), key, cp;
        md_list_ent *e;

        if (!has_prefix(k, cm_buf_slice(&full)))
            break;
        key = CM_SLICE(k.p + base.n, k.n - base.n);
        if (common_prefix(key, req->prefix, req->delimiter, &cp)) {
            /* A start_after inside this prefix's range means an earlier page
             * already returned it. */
            if (!has_prefix(req->start_after, cp)) {
                if (res.n == req->max_keys) {
                    res.truncated = true;
                    break;
                }
                if ((rc = grow((void **)&res.a, &cap, res.n, sizeof *res.a, 64)))
                    goto out;
                e = &res.a[res.n];
                e->is_prefix = true;
                if ((rc = md__pool_slice(pool, cp, &e->key)))
                    goto out;
                res.n++;
            }
            if ((rc = seek_past(it, &tmp, cm_buf_slice(&base), cp, false, &more)))
                goto out;
            if (!more)
                break;
            continue;
        }
        if (res.n == req->max_keys) {
            res.truncated = true;
            break;
        }
        if ((rc = grow((void **)&res.a, &cap, res.n, sizeof *res.a, 64)))
            goto out;
        e = &res.a[res.n];
        if ((rc = md__pool_slice(pool, key, &e->key)))
            goto out;
        rc = md__obj_decode_pool(md__iter_val(it), pool, &e->obj);
        if (rc == CM_ECORRUPT) {
            cm_log(CM_LOG_ERROR, "metadata: corrupt object record in bucket %s", req->bucket);
            memset(&e->obj, 0, sizeof e->obj);
        } else if (rc) {
            goto out;
        }
        res.n++;
        md__iter_next(it);
    }
    if ((rc = md__iter_status(it)))
        goto out;
    *out = res;
    res.a = NULL;
    res.mem = NULL;
out:
    md_list_res_free(&res);
    md__iter_free(it);
    cm_buf_free(&base);
    cm_buf_free(&full);
    cm_buf_free(&tmp);
    return rc;
}

void md_list_res_free(md_list_res *res)
{
    if (!res)
        return;
    free(res->a);
    cm_pool_free(res->mem);
    memset(res, 0, sizeof *res);
}

/* ----------------------------------------------------------------- uploads */
int md_upload_list(md_db_t *db, const char *bucket, cm_slice prefix, cm_slice delimiter,
                   cm_slice key_marker, cm_slice upload_id_marker, size_t max,
                   md_upload_list_res *out)
{
    struct md__iter *it = NULL;
    cm_buf base = {0}, full = {0}, tmp = {0}, kb = {0};
    md_upload_list_res res = {0};
    size_t cap = 0, pcap = 0, blen;
    cm_pool *pool = NULL;
    bool more;
    int rc;

    memset(out, 0, sizeof *out);
    if (md__check_bucket(bucket))
        return CM_ENOTFOUND;
    if ((rc = md__bucket_exists(db, bucket)))
        return rc;
    if (max == 0)
        return 0;
    if (!(pool = cm_pool_new()) || !(it = md__iter_new(db))) {
        rc = CM_ENOMEM;
        goto out;
    }
    res.mem = pool;
    blen = strlen(bucket);
    if ((rc = md__key_upload_prefix(&base, bucket, CM_SLICE_NULL)) ||
        (rc = md__key_upload_prefix(&full, bucket, prefix)))
        goto out;

    /* Start after the markers: (key, id) > (key_marker, upload_id_marker),
     * or key > key_marker without an id marker. Encoded keys sort the same
     * way, so the later of that and the prefix is where to seek. */
    if (key_marker.n) {
        if (upload_id_marker.n)
            rc = md__key_upload(&tmp, bucket, key_marker, upload_id_marker);
        else if (!(rc = md__key_upload_prefix(&tmp, bucket, key_marker)))
            rc = cm_buf_append_byte(&tmp, 1); /* past key_marker 0x00 <any id> */
        if (rc)
            goto out;
    }
    if (key_marker.n && cm_slice_cmp(cm_buf_slice(&tmp), cm_buf_slice(&full)) > 0) {
        md__iter_seek(it, cm_buf_slice(&tmp));
        if (upload_id_marker.n && md__iter_valid(it) &&
            cm_slice_eq(md__iter_key(it), cm_buf_slice(&tmp)))
            md__iter_next(it);
    } else {
        md__iter_seek(it, cm_buf_slice(&full));
    }

    while (md__iter_valid(it)) {
        cm_slice k = md__iter_key(it), id, key, cp;
        md_upload *u;

        if (!has_prefix(k, cm_buf_slice(&full)))
            break;
        cm_buf_reset(&kb);
        if ((rc = md__key_upload_parse(k, blen, &kb, &id))) {
            if (rc != CM_ECORRUPT)
                goto out;
            cm_log(CM_LOG_ERROR, "metadata: malformed upload key in bucket %s", bucket);
            md__iter_next(it);
            continue;
        }
        key = cm_buf_slice(&kb);
        if (common_prefix(key, prefix, delimiter, &cp)) {
            if (!has_prefix(key_marker, cp)) {
                if (res.n + res.nprefixes == max) {
                    res.truncated = true;
                    break;
                }
                if ((rc = grow((void **)&res.prefixes, &pcap, res.nprefixes, sizeof *res.prefixes,
                               16)) ||
                    (rc = md__pool_slice(pool, cp, &res.prefixes[res.nprefixes])))
                    goto out;
                res.nprefixes++;
            }
            if ((rc = seek_past(it, &tmp, cm_buf_slice(&base), cp, true, &more)))
                goto out;
            if (!more)
                break;
            continue;
        }
        if (res.n + res.nprefixes == max) {
            res.truncated = true;
            break;
        }
        if ((rc = grow((void **)&res.a, &cap, res.n, sizeof *res.a, 16)))
            goto out;
        u = &res.a[res.n];
        if ((rc = md__pool_slice(pool, key, &u->key)) ||
            (rc = md__pool_slice(pool, id, &u->upload_id)))
            goto out;
        rc = md__upload_decode_pool(md__iter_val(it), pool, u);
        if (rc == CM_ECORRUPT) {
            cm_log(CM_LOG_ERROR, "metadata: corrupt upload record in bucket %s", bucket);
            u->ctime_ms = 0;
            memset(&u->tmpl, 0, sizeof u->tmpl);
        } else if (rc) {
            goto out;
        }
        res.n++;
        md__iter_next(it);
    }
    if ((rc = md__iter_status(it)))
        goto out;
    *out = res;
    memset(&res, 0, sizeof res);
out:
    md_upload_list_res_free(&res);
    md__iter_free(it);
    cm_buf_free(&base);
    cm_buf_free(&full);
    cm_buf_free(&tmp);
    cm_buf_free(&kb);
    return rc;
}

void md_upload_list_res_free(md_upload_list_res *res)
{
    if (!res)
        return;
    free(res->a);
    free(res->prefixes);
    cm_pool_free(res->mem);
    memset(res, 0, sizeof *res);
}
