/* common/buf.c - growable byte buffers (cm_buf) and the little-endian field
 * writers and readers that record codecs are built from. */
#include "common/cm.h"
#include <stdio.h>
#include <stdlib.h>

int cm_buf_reserve(cm_buf *b, size_t extra)
{
    if (b->n + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        return CM_ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

int cm_buf_append(cm_buf *b, const void *p, size_t n)
{
    if (cm_buf_reserve(b, n))
        return CM_ENOMEM;
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

int cm_buf_append_str(cm_buf *b, const char *s) { return cm_buf_append(b, s, strlen(s)); }
int cm_buf_append_slice(cm_buf *b, cm_slice s) { return cm_buf_append(b, s.p, s.n); }
int cm_buf_append_byte(cm_buf *b, uint8_t c) { return cm_buf_append(b, &c, 1); }

int cm_buf_printf(cm_buf *b, const char *fmt, ...)
{
    va_list ap;
    char tmp[256];
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return CM_EINVAL;
    if ((size_t)n < sizeof tmp)
        return cm_buf_append(b, tmp, (size_t)n);
    if (cm_buf_reserve(b, (size_t)n))
        return CM_ENOMEM;
    va_start(ap, fmt);
    vsnprintf((char *)b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
    return 0;
}

void cm_buf_reset(cm_buf *b)
{
    b->n = 0;
    if (b->p)
        b->p[0] = 0;
}

void cm_buf_free(cm_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

int cm_buf_put_u8(cm_buf *b, uint8_t v) { return cm_buf_append(b, &v, 1); }

int cm_buf_put_u32(cm_buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return cm_buf_append(b, x, 4);
}

int cm_buf_put_u64(cm_buf *b, uint64_t v)
{
    uint8_t x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (uint8_t)(v >> (8 * i));
    return cm_buf_append(b, x, 8);
}

int cm_buf_put_bytes(cm_buf *b, cm_slice s)
{
    if (s.n > UINT32_MAX)
        return CM_ETOOBIG;
    int rc = cm_buf_put_u32(b, (uint32_t)s.n);
    return rc ? rc : cm_buf_append(b, s.p, s.n);
}

int cm_get_u8(cm_reader *r, uint8_t *out)
{
    if (r->n < 1)
        return CM_ECORRUPT;
    *out = r->p[0];
    r->p++;
    r->n--;
    return 0;
}

int cm_get_u32(cm_reader *r, uint32_t *out)
{
    if (r->n < 4)
        return CM_ECORRUPT;
    *out = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
           (uint32_t)r->p[3] << 24;
    r->p += 4;
    r->n -= 4;
    return 0;
}

int cm_get_u64(cm_reader *r, uint64_t *out)
{
    if (r->n < 8)
        return CM_ECORRUPT;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | r->p[i];
    *out = v;
    r->p += 8;
    r->n -= 8;
    return 0;
}

int cm_get_bytes(cm_reader *r, cm_slice *out)
{
    uint32_t n;
    if (cm_get_u32(r, &n) || r->n < n)
        return CM_ECORRUPT;
    *out = CM_SLICE(r->p, n);
    r->p += n;
    r->n -= n;
    return 0;
}
