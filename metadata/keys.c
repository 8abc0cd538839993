/* metadata/keys.c - key encoding for every record family (layout table in
 * doc/metadata-keys.md), the order-preserving escape used where a binary
 * field is followed by another, successor keys for seeking past a range,
 * name validation and stripe hashing. No LevelDB calls and no values here. */
#include "metadata/md_int.h"

static int put_be32(cm_buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    return cm_buf_append(b, x, 4);
}

static int put_be64(cm_buf *b, uint64_t v)
{
    uint8_t x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (uint8_t)(v >> (56 - 8 * i));
    return cm_buf_append(b, x, 8);
}

int md__check_bucket(const char *bucket)
{
    size_t n;

    if (!bucket)
        return CM_EINVAL;
    n = strnlen(bucket, MD_BUCKET_MAX + 1);
    return n == 0 || n > MD_BUCKET_MAX ? CM_EINVAL : 0;
}

int md__check_key(cm_slice key)
{
    return key.n == 0 || key.n > MD_KEY_MAX || !key.p ? CM_EINVAL : 0;
}

/* kind bucket 0x00 */
static int put_bucket_head(cm_buf *b, char kind, const char *bucket)
{
    int rc;

    cm_buf_reset(b);
    if ((rc = cm_buf_append_byte(b, (uint8_t)kind)) || (rc = cm_buf_append_str(b, bucket)))
        return rc;
    return cm_buf_append_byte(b, 0);
}

int md__key_bucket(cm_buf *b, const char *bucket)
{
    int rc;

    cm_buf_reset(b);
    if ((rc = cm_buf_append_byte(b, MD__K_BUCKET)))
        return rc;
    return cm_buf_append_str(b, bucket);
}

int md__key_object(cm_buf *b, const char *bucket, cm_slice key)
{
    int rc = put_bucket_head(b, MD__K_OBJECT, bucket);

    return rc ? rc : cm_buf_append_slice(b, key);
}

int md__key_esc(cm_buf *b, cm_slice s)
{
    int rc = cm_buf_reserve(b, s.n + 16);

    for (size_t i = 0; !rc && i < s.n; i++) {
        uint8_t c = s.p[i];
        if (c <= 1) {
            uint8_t e[2] = {1, (uint8_t)(c + 1)};
            rc = cm_buf_append(b, e, 2);
        } else {
            rc = cm_buf_append_byte(b, c);
        }
    }
    return rc;
}

int md__key_unesc(cm_reader *r, cm_buf *out)
{
    int rc;
    uint8_t c, d;

    for (;;) {
        if ((rc = cm_get_u8(r, &c)))
            return rc;
        if (c == 0)
            return 0;
        if (c == 1) {
            if ((rc = cm_get_u8(r, &d)))
                return rc;
            if (d != 1 && d != 2)
                return CM_ECORRUPT;
            c = (uint8_t)(d - 1);
        }
        if ((rc = cm_buf_append_byte(out, c)))
            return rc;
    }
}

int md__key_upload_prefix(cm_buf *b, const char *bucket, cm_slice prefix)
{
    int rc = put_bucket_head(b, MD__K_UPLOAD, bucket);

    return rc ? rc : md__key_esc(b, prefix);
}

int md__key_upload(cm_buf *b, const char *bucket, cm_slice key, cm_slice upload_id)
{
    int rc;

    if ((rc = md__key_upload_prefix(b, bucket, key)) || (rc = cm_buf_append_byte(b, 0)))
        return rc;
    return cm_buf_append_slice(b, upload_id);
}

int md__key_upload_parse(cm_slice k, size_t bucket_len, cm_buf *keyout, cm_slice *upload_id)
{
    cm_reader r;
    int rc;

    if (k.n < 2 + bucket_len || k.p[0] != MD__K_UPLOAD || k.p[1 + bucket_len] != 0)
        return CM_ECORRUPT;
    r.p = k.p + 2 + bucket_len;
    r.n = k.n - 2 - bucket_len;
    if ((rc = md__key_unesc(&r, keyout)))
        return rc;
    *upload_id = CM_SLICE(r.p, r.n);
    return 0;
}

int md__key_part_prefix(cm_buf *b, cm_slice upload_id)
{
    int rc;

    cm_buf_reset(b);
    if ((rc = cm_buf_append_byte(b, MD__K_PART)) || (rc = md__key_esc(b, upload_id)))
        return rc;
    return cm_buf_append_byte(b, 0);
}

int md__key_part(cm_buf *b, cm_slice upload_id, uint32_t num)
{
    int rc = md__key_part_prefix(b, upload_id);

    return rc ? rc : put_be32(b, num);
}

int md__key_part_num(cm_slice k, size_t prefix_len, uint32_t *num)
{
    const uint8_t *p = k.p + prefix_len;

    if (k.n != prefix_len + 4)
        return CM_ECORRUPT;
    *num = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    return 0;
}

int md__key_seq(cm_buf *b, char kind, uint64_t seq)
{
    int rc;

    cm_buf_reset(b);
    rc = cm_buf_append_byte(b, (uint8_t)kind);
    return rc ? rc : put_be64(b, seq);
}

int md__key_seq_parse(cm_slice k, char kind, uint64_t *seq)
{
    uint64_t v = 0;

    if (k.n != 9 || k.p[0] != (uint8_t)kind)
        return CM_ECORRUPT;
    for (int i = 1; i < 9; i++)
        v = v << 8 | k.p[i];
    *seq = v;
    return 0;
}

bool md__key_successor(cm_buf *b)
{
    while (b->n > 0 && b->p[b->n - 1] == 0xff)
        b->n--;
    if (b->n == 0)
        return false;
    b->p[b->n - 1]++;
    b->p[b->n] = 0;
    return true;
}

/* FNV-1a over a, a separator, then b. */
uint32_t md__hash(cm_slice a, cm_slice b)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < a.n; i++)
        h = (h ^ a.p[i]) * 16777619u;
    h = (h ^ 0xa5) * 16777619u;
    for (size_t i = 0; i < b.n; i++)
        h = (h ^ b.p[i]) * 16777619u;
    return h ^ (h >> 15);
}
