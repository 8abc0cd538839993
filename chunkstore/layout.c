/* chunkstore/layout.c - encoding of layouts (sequences of finished segment
 * records) and intents (one record naming a segment being written), and the
 * public functions that only look at layout bytes: size, count, append.
 * The record table is in cs_int.h and doc/shard-format.md. */
#include "chunkstore/cs_int.h"

int cs__rec_encode(cm_buf *b, const struct cs_seg *s)
{
    uint8_t rec[CS__REC_FIXED + 2 * CS__MAX_SHARDS];
    int n = s->k + s->m;

    rec[0] = s->type;
    memcpy(rec + 1, s->id, CS_ID_LEN);
    cs__put64(rec + 17, s->size);
    cs__put32(rec + 25, s->block_size);
    rec[29] = (uint8_t)s->k;
    rec[30] = (uint8_t)s->m;
    for (int i = 0; i < n; i++)
        cs__put16(rec + CS__REC_FIXED + 2 * i, s->drives[i]);
    return cm_buf_append(b, rec, CS__REC_FIXED + 2 * (size_t)n) ? CM_ENOMEM : 0;
}

int cs__rec_decode(cm_reader *r, struct cs_seg *out)
{
    struct cs_seg s;
    const uint8_t *p = r->p;
    size_t len;

    if (r->n < CS__REC_FIXED)
        return CM_ECORRUPT;
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

/* Walks a layout made only of segment records; sums sizes and counts. */
static int layout_scan(cm_slice layout, uint64_t *size, size_t *count)
{
    cm_reader r = {layout.p, layout.n};
    struct cs_seg s;
    uint64_t total = 0;
    size_t nseg = 0;
    int rc;

    while (r.n > 0) {
        if ((rc = cs__rec_decode(&r, &s)) != 0)
            return rc;
        if (s.type != CS__REC_SEGMENT)
            return CM_ECORRUPT;
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
    int rc = layout_scan(layout, &size, &count);

    if (rc == 0)
        *out = size;
    return rc;
}

int cs_layout_count(cm_slice layout, size_t *out)
{
    uint64_t size;
    size_t count;
    int rc = layout_scan(layout, &size, &count);

    if (rc == 0)
        *out = count;
    return rc;
}

int cs_layout_append(cm_buf *out, cm_slice layout)
{
    uint64_t size;
    size_t count;
    int rc = layout_scan(layout, &size, &count);

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
    int rc;

    for (size_t n = 0; r.n > 0; n++) {
        if ((rc = cs__rec_decode(&r, &s)) != 0)
            return rc;
        if (s.type != CS__REC_SEGMENT)
            return CM_ECORRUPT;
        if (n == i) {
            *off = pos;
            *len = s.size;
            return 0;
        }
        pos += s.size;
    }
    return CM_ENOTFOUND;
}
