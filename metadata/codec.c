/* metadata/codec.c - value encoding of bucket, object, upload and part
 * records: a version byte, little-endian fixed fields and u32-length byte
 * strings. Decoding never trusts the bytes: an underrun, unknown version or
 * absurd count is CM_ECORRUPT; bytes after the known fields are ignored (a
 * later version may append). Formats are tabled in doc/metadata-keys.md. */
#include "metadata/md_int.h"

#include <stdlib.h>

/* ------------------------------------------------------------------ helpers */
static int put_hdrs(cm_buf *b, const md_kv *h, size_t n)
{
    int rc;

    if (n > UINT32_MAX)
        return CM_ETOOBIG;
    if ((rc = cm_buf_put_u32(b, (uint32_t)n)))
        return rc;
    for (size_t i = 0; i < n; i++)
        if ((rc = cm_buf_put_bytes(b, h[i].name)) || (rc = cm_buf_put_bytes(b, h[i].value)))
            return rc;
    return 0;
}

/* Reads the header count and checks it against the bytes left (each header
 * takes at least 8), so a corrupt count cannot ask for a huge allocation. */
static int get_nhdrs(cm_reader *r, uint32_t *n)
{
    int rc = cm_get_u32(r, n);

    if (rc)
        return rc;
    return *n > r->n / 8 ? CM_ECORRUPT : 0;
}

static int get_hdrs(cm_reader *r, md_kv *h, uint32_t n)
{
    int rc;

    for (uint32_t i = 0; i < n; i++)
        if ((rc = cm_get_bytes(r, &h[i].name)) || (rc = cm_get_bytes(r, &h[i].value)))
            return rc;
    return 0;
}

static int get_version(cm_reader *r)
{
    uint8_t ver;
    int rc = cm_get_u8(r, &ver);

    if (rc)
        return rc;
    return ver == MD__REC_VERSION ? 0 : CM_ECORRUPT;
}

int md__pool_slice(cm_pool *pool, cm_slice s, cm_slice *out)
{
    uint8_t *p;

    if (s.n == 0) {
        *out = CM_SLICE_NULL;
        return 0;
    }
    if (!(p = cm_pool_alloc(pool, s.n)))
        return CM_ENOMEM;
    memcpy(p, s.p, s.n);
    *out = CM_SLICE(p, s.n);
    return 0;
}

static int pool_hdrs(cm_pool *pool, md_object *o)
{
    md_kv *h;
    int rc;

    if (o->nhdrs == 0) {
        o->hdrs = NULL;
        return 0;
    }
    if (!(h = cm_pool_alloc(pool, o->nhdrs * sizeof *h)))
        return CM_ENOMEM;
    for (size_t i = 0; i < o->nhdrs; i++)
        if ((rc = md__pool_slice(pool, o->hdrs[i].name, &h[i].name)) ||
            (rc = md__pool_slice(pool, o->hdrs[i].value, &h[i].value)))
            return rc;
    o->hdrs = h;
    return 0;
}

/* ------------------------------------------------------------------ objects */
/* Object record, version 1:
 *   OFFSET  SIZE  DESCRIPTION
 *   0       1     version (1)
 *   1       8     size, bytes (u64 LE)
 *   9       8     mtime, ms since epoch (i64 LE)
 *   17      4+n   etag
 *   ...     4     number of headers
 *   ...     8+n   per header: name (4+n), value (4+n)
 *   ...     4+n   inline data
 *   ...     4+n   layout
 * Version 2 (an object whose bytes are in the value log, vlog.c) is version
 * 1 with empty inline data, then the value reference:
 *   ...     4     segment (u32 LE)
 *   ...     4     length (u32 LE)
 *   ...     8     offset in the segment (u64 LE)
 *   ...     8     md__vsum of the bytes (u64 LE)
 * A version-1 reader refuses it rather than serve an empty object. */
int md__obj_encode(cm_buf *b, const md_object *o)
{
    bool ref = o->vref.len > 0 && !o->inline_data.n;
    int rc;

    cm_buf_reset(b);
    if ((rc = cm_buf_put_u8(b, ref ? MD__OBJ_VERSION_REF : MD__REC_VERSION)) ||
        (rc = cm_buf_put_u64(b, o->size)) || (rc = cm_buf_put_u64(b, (uint64_t)o->mtime_ms)) ||
        (rc = cm_buf_put_bytes(b, o->etag)) || (rc = put_hdrs(b, o->hdrs, o->nhdrs)) ||
        (rc = cm_buf_put_bytes(b, o->inline_data)) || (rc = cm_buf_put_bytes(b, o->layout)))
        return rc;
    if (ref && ((rc = cm_buf_put_u32(b, o->vref.seg)) || (rc = cm_buf_put_u32(b, o->vref.len)) ||
                (rc = cm_buf_put_u64(b, o->vref.off)) || (rc = cm_buf_put_u64(b, o->vref.sum))))
        return rc;
    return 0;
}

/* Reads the fields before the headers; leaves r at the first header.
 * *ver gets the record's version (1 or 2). */
static int obj_head(cm_reader *r, md_object *o, uint32_t *nhdrs, uint8_t *ver)
{
    uint64_t mtime;
    int rc;

    if ((rc = cm_get_u8(r, ver)))
        return rc;
    if (*ver != MD__REC_VERSION && *ver != MD__OBJ_VERSION_REF)
        return CM_ECORRUPT;
    if ((rc = cm_get_u64(r, &o->size)) || (rc = cm_get_u64(r, &mtime)) ||
        (rc = cm_get_bytes(r, &o->etag)) || (rc = get_nhdrs(r, nhdrs)))
        return rc;
    o->mtime_ms = (int64_t)mtime;
    return 0;
}

int md__obj_decode_room(cm_slice v, bool copy, size_t room, md_object *o, uint8_t **roomp)
{
    md_object t = {0};
    cm_reader r = {v.p, v.n};
    uint32_t nh;
    size_t hsz, all;
    uint8_t *mem = NULL, ver;
    int rc;

    if ((rc = obj_head(&r, &t, &nh, &ver)))
        return rc;
    hsz = (size_t)nh * sizeof(md_kv);
    all = hsz + (copy ? v.n : 0) + room;
    if (all > 0 && !(mem = malloc(all)))
        return CM_ENOMEM;
    if (copy) {
        memcpy(mem + hsz, v.p, v.n);
        r.p = mem + hsz;
        r.n = v.n;
        if ((rc = obj_head(&r, &t, &nh, &ver)))
            goto out;
    }
    t.hdrs = nh ? (md_kv *)mem : NULL;
    t.nhdrs = nh;
    if ((rc = get_hdrs(&r, t.hdrs, nh)) || (rc = cm_get_bytes(&r, &t.inline_data)) ||
        (rc = cm_get_bytes(&r, &t.layout)))
        goto out;
    if (ver == MD__OBJ_VERSION_REF &&
        ((rc = cm_get_u32(&r, &t.vref.seg)) || (rc = cm_get_u32(&r, &t.vref.len)) ||
         (rc = cm_get_u64(&r, &t.vref.off)) || (rc = cm_get_u64(&r, &t.vref.sum)) ||
         (rc = t.vref.len && !t.inline_data.n ? 0 : CM_ECORRUPT)))
        goto out;
    if (roomp)
        *roomp = room ? mem + hsz + (copy ? v.n : 0) : NULL;
    t.mem = mem;
    mem = NULL;
    *o = t;
out:
    free(mem);
    return rc;
}

size_t md__obj_value_len(cm_slice v)
{
    /* Version 2 ends with the reference; its length is 20 bytes from the end. */
    if (v.n < 1 + 24 || v.p[0] != MD__OBJ_VERSION_REF)
        return 0;
    return md__get_le32(v.p + v.n - 20);
}

int md__obj_decode(cm_slice v, bool copy, md_object *o)
{
    return md__obj_decode_room(v, copy, 0, o, NULL);
}

int md__obj_decode_pool(cm_slice v, cm_pool *pool, md_object *o)
{
    md_object t = {0};
    cm_reader r = {v.p, v.n};
    uint32_t nh;
    uint8_t ver;
    int rc;

    if ((rc = obj_head(&r, &t, &nh, &ver)))
        return rc;
    if (nh && !(t.hdrs = cm_pool_alloc(pool, (size_t)nh * sizeof(md_kv))))
        return CM_ENOMEM;
    t.nhdrs = nh;
    if ((rc = get_hdrs(&r, t.hdrs, nh)))
        return rc;
    /* The headers now borrow from v; copy them and the etag into the pool
     * (pool_hdrs replaces the array, the borrowed one is simply left). */
    if ((rc = md__pool_slice(pool, t.etag, &t.etag)) || (rc = pool_hdrs(pool, &t)))
        return rc;
    *o = t;
    return 0;
}

/* ------------------------------------------------------------------ buckets */
/* Bucket record, version 1 (the name is the key):
 *   OFFSET  SIZE  DESCRIPTION
 *   0       1     version (1)
 *   1       8     ctime, ms since epoch (i64 LE)
 *   9       4+n   region (n < 32) */
int md__bucket_encode(cm_buf *b, const md_bucket *bk)
{
    int rc;

    cm_buf_reset(b);
    if ((rc = cm_buf_put_u8(b, MD__REC_VERSION)) ||
        (rc = cm_buf_put_u64(b, (uint64_t)bk->ctime_ms)) ||
        (rc =
             cm_buf_put_bytes(b, CM_SLICE(bk->region, strnlen(bk->region, sizeof bk->region - 1)))))
        return rc;
    return 0;
}

int md__bucket_decode(cm_slice name, cm_slice v, md_bucket *out)
{
    cm_reader r = {v.p, v.n};
    uint64_t ctime;
    cm_slice region;
    int rc;

    if (name.n == 0 || name.n > MD_BUCKET_MAX || memchr(name.p, 0, name.n))
        return CM_ECORRUPT;
    if ((rc = get_version(&r)) || (rc = cm_get_u64(&r, &ctime)) || (rc = cm_get_bytes(&r, &region)))
        return rc;
    if (region.n >= sizeof out->region || memchr(region.p, 0, region.n))
        return CM_ECORRUPT;
    memset(out, 0, sizeof *out);
    memcpy(out->name, name.p, name.n);
    out->ctime_ms = (int64_t)ctime;
    if (region.n)
        memcpy(out->region, region.p, region.n);
    return 0;
}

/* ------------------------------------------------------------------ uploads */
/* Upload record, version 1 (bucket, key and upload id are the key):
 *   OFFSET  SIZE  DESCRIPTION
 *   0       1     version (1)
 *   1       8     ctime, ms since epoch (i64 LE)
 *   9       4     number of headers
 *   13      8+n   per header: name (4+n), value (4+n) */
int md__upload_encode(cm_buf *b, int64_t ctime_ms, const md_object *tmpl)
{
    int rc;

    cm_buf_reset(b);
    if ((rc = cm_buf_put_u8(b, MD__REC_VERSION)) || (rc = cm_buf_put_u64(b, (uint64_t)ctime_ms)))
        return rc;
    return tmpl ? put_hdrs(b, tmpl->hdrs, tmpl->nhdrs) : cm_buf_put_u32(b, 0);
}

int md__upload_decode_pool(cm_slice v, cm_pool *pool, md_upload *u)
{
    cm_reader r = {v.p, v.n};
    uint64_t ctime;
    uint32_t nh;
    md_object t = {0};
    int rc;

    if ((rc = get_version(&r)) || (rc = cm_get_u64(&r, &ctime)) || (rc = get_nhdrs(&r, &nh)))
        return rc;
    if (nh && !(t.hdrs = cm_pool_alloc(pool, (size_t)nh * sizeof(md_kv))))
        return CM_ENOMEM;
    t.nhdrs = nh;
    if ((rc = get_hdrs(&r, t.hdrs, nh)) || (rc = pool_hdrs(pool, &t)))
        return rc;
    u->ctime_ms = (int64_t)ctime;
    u->tmpl = t;
    return 0;
}

/* -------------------------------------------------------------------- parts */
/* Part record, version 1 (upload id and part number are the key):
 *   OFFSET  SIZE  DESCRIPTION
 *   0       1     version (1)
 *   1       8     size, bytes (u64 LE)
 *   9       8     mtime, ms since epoch (i64 LE)
 *   17      4+n   etag
 *   ...     4+n   checksum ("algo:base64" or empty)
 *   ...     4+n   layout */
int md__part_encode(cm_buf *b, const md_part *p)
{
    int rc;

    cm_buf_reset(b);
    if ((rc = cm_buf_put_u8(b, MD__REC_VERSION)) || (rc = cm_buf_put_u64(b, p->size)) ||
        (rc = cm_buf_put_u64(b, (uint64_t)p->mtime_ms)) || (rc = cm_buf_put_bytes(b, p->etag)) ||
        (rc = cm_buf_put_bytes(b, p->cksum)) || (rc = cm_buf_put_bytes(b, p->layout)))
        return rc;
    return 0;
}

int md__part_decode(cm_slice v, md_part *p)
{
    cm_reader r = {v.p, v.n};
    uint64_t mtime;
    int rc;

    if ((rc = get_version(&r)) || (rc = cm_get_u64(&r, &p->size)) ||
        (rc = cm_get_u64(&r, &mtime)) || (rc = cm_get_bytes(&r, &p->etag)) ||
        (rc = cm_get_bytes(&r, &p->cksum)) || (rc = cm_get_bytes(&r, &p->layout)))
        return rc;
    p->mtime_ms = (int64_t)mtime;
    return 0;
}
