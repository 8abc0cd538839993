/* chunkstore/layout.c - encoding of layouts (sequences of finished segment
 * and manifest records) and intents (one record naming a segment or a
 * manifest being written), and the public functions that only look at
 * layout bytes: size, count, append, segment. The record tables are in
 * cs_int.h and doc/shard-format.md. */
#include "chunkstore/cs_int.h"

int cs__rec_encode(cm_buf *b, const struct cs_seg *s)
{
    uint8_t rec[CS__REC_FIXED + 2 * CS__MAX_SHARDS];
    size_t len;

    rec[0] = s->type;
    memcpy(rec + 1, s->id, CS_ID_LEN);
    if (cs__rec_is_seg(s)) {
        int n = s->k + s->m;
        cs__put64(rec + 17, s->size);
        cs__put32(rec + 25, s->block_size);
        rec[29] = (uint8_t)s->k;
        rec[30] = (uint8_t)s->m;
        for (int i = 0; i < n; i++)
            cs__put16(rec + CS__REC_FIXED + 2 * i, s->drives[i]);
        len = CS__REC_FIXED + 2 * (size_t)n;
    } else {
        cs__put32(rec + 17, s->body_len);
        cs__put32(rec + 21, s->body_crc);
        rec[25] = (uint8_t)s->ncopies;
        for (int i = 0; i < s->ncopies; i++)
            cs__put16(rec + CS__MREC_FIXED + 2 * i, s->drives[i]);
        len = CS__MREC_FIXED + 2 * (size_t)s->ncopies;
    }
    return cm_buf_append(b, rec, len) ? CM_ENOMEM : 0;
}

/* Manifest and manifest-intent records. */
static int mrec_decode(cm_reader *r, struct cs_seg *out)
{
    struct cs_seg s;
    const uint8_t *p = r->p;
    size_t len;

    if (r->n < CS__MREC_FIXED)
        return CM_ECORRUPT;
    memset(&s, 0, sizeof(s));
    s.type = p[0];
    memcpy(s.id, p + 1, CS_ID_LEN);
    s.body_len = cs__get32(p + 17);
    s.body_crc = cs__get32(p + 21);
    s.ncopies = p[25];
    if (s.ncopies < 1 || s.ncopies > CS__MAX_SHARDS || s.body_len > CS__MF_MAX)
        return CM_ECORRUPT;
    if (s.type == CS__REC_MINTENT && (s.body_len != 0 || s.body_crc != 0))
        return CM_ECORRUPT;
    len = CS__MREC_FIXED + 2 * (size_t)s.ncopies;
    if (r->n < len)
        return CM_ECORRUPT;
    for (int i = 0; i < s.ncopies; i++) {
        s.drives[i] = cs__get16(p + CS__MREC_FIXED + 2 * i);
        for (int j = 0; j < i; j++)
            if (s.drives[j] == s.drives[i])
                return CM_ECORRUPT; /* copies live on distinct drives */
    }
    r->p += len;
    r->n -= len;
    *out = s;
    return 0;
}

int cs__rec_decode(cm_reader *r, struct cs_seg *out)
{
    struct cs_seg s;
    const uint8_t *p = r->p;
    size_t len;

    if (r->n < 1)
        return CM_ECORRUPT;
    if (p[0] == CS__REC_MANIFEST || p[0] == CS__REC_MINTENT)
        return mrec_decode(r, out);
    if (r->n < CS__REC_FIXED)
        return CM_ECORRUPT;
    memset(&s, 0, sizeof(s));
    s.type = p[0];
    if (s.type != CS__REC_SEGMENT && s.type != CS__REC_INTENT)
        return CM_ECORRUPT;
    memcpy(s.id, p + 1, CS_ID_LEN);
    s.size = cs__get64(p + 17);
    s.block_size = cs__get32(p + 25);
    s.k = p[29];
    s.m = p[30];
    if (s.k < 1 || s.k > RS_MAX_K || s.m > RS_MAX_M || s.block_size < 1 ||
        s.block_size > CS__MAX_BLOCK)
        return CM_ECORRUPT;
    if (s.type == CS__REC_INTENT && s.size != 0)
        return CM_ECORRUPT;
    len = CS__REC_FIXED + 2 * (size_t)(s.k + s.m);
    if (r->n < len)
        return CM_ECORRUPT;
    for (int i = 0; i < s.k + s.m; i++)
        s.drives[i] = cs__get16(p + CS__REC_FIXED + 2 * i);
    r->p += len;
    r->n -= len;
    *out = s;
    return 0;
}

/* Walks a layout made only of segment and manifest records; sums segment
 * sizes and counts segments (manifests carry no object bytes). */
int cs__layout_scan(cm_slice layout, uint64_t *size, size_t *count)
{
    cm_reader r = {layout.p, layout.n};
    struct cs_seg s;
    uint64_t total = 0;
    size_t nseg = 0;
    int rc;

    while (r.n > 0) {
        if ((rc = cs__rec_decode(&r, &s)) != 0)
            return rc;
        if (s.type == CS__REC_MANIFEST)
            continue;
        if (s.type != CS__REC_SEGMENT)
            return CM_ECORRUPT; /* an intent is not a layout */
        if (total + s.size < total)
            return CM_ECORRUPT;
        total += s.size;
        nseg++;
    }
    *size = total;
    *count = nseg;
    return 0;
}

int cs_layout_size(cm_slice layout, uint64_t *out)
{
    uint64_t size;
    size_t count;
    int rc = cs__layout_scan(layout, &size, &count);

    if (rc == 0)
        *out = size;
    return rc;
}

int cs_layout_count(cm_slice layout, size_t *out)
{
    uint64_t size;
    size_t count;
    int rc = cs__layout_scan(layout, &size, &count);

    if (rc == 0)
        *out = count;
    return rc;
}

int cs_layout_append(cm_buf *out, cm_slice layout)
{
    uint64_t size;
    size_t count;
    int rc = cs__layout_scan(layout, &size, &count);

    if (rc != 0)
        return rc;
    if (layout.n == 0)
        return 0;
    return cm_buf_append(out, layout.p, layout.n) ? CM_ENOMEM : 0;
}

int cs_layout_segment(cm_slice layout, size_t i, uint64_t *off, uint64_t *len)
{
    cm_reader r = {layout.p, layout.n};
    struct cs_seg s;
    uint64_t pos = 0;
    size_t n = 0;
    int rc;

    while (r.n > 0) {
        if ((rc = cs__rec_decode(&r, &s)) != 0)
            return rc;
        if (s.type == CS__REC_MANIFEST)
            continue;
        if (s.type != CS__REC_SEGMENT)
            return CM_ECORRUPT;
        if (n == i) {
            *off = pos;
            *len = s.size;
            return 0;
        }
        pos += s.size;
        n++;
    }
    return CM_ENOTFOUND;
}
