/* common/enc.c - hex, base64 and URI (RFC 3986) encodings. */
#include "common/cm.h"

uint64_t cm_fnv1a(uint64_t h, const void *p, size_t n)
{
    const uint8_t *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

void cm_hex_encode(const void *p, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *s = p;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[s[i] >> 4];
        out[2 * i + 1] = hex[s[i] & 15];
    }
    out[2 * n] = 0;
}

int cm_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Digit value + 1 by byte, 0 for a non-digit: every request decodes a
 * signature and most a payload hash. */
static const uint8_t hexvals[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,  ['6'] = 7,
    ['7'] = 8,  ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14,
    ['e'] = 15, ['f'] = 16, ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15,
    ['F'] = 16,
};

int cm_hex_decode(const char *hex, size_t hexlen, uint8_t *out)
{
    if (hexlen % 2)
        return CM_EINVAL;
    for (size_t i = 0; i < hexlen / 2; i++) {
        unsigned a = hexvals[(unsigned char)hex[2 * i]], b = hexvals[(unsigned char)hex[2 * i + 1]];
        if (!a || !b)
            return CM_EINVAL;
        out[i] = (uint8_t)((a - 1) << 4 | (b - 1));
    }
    return 0;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t cm_base64_encode(const void *p, size_t n, char *out)
{
    const uint8_t *s = p;
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = b64[(v >> 6) & 63];
        out[o++] = b64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = 0;
    return o;
}

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int cm_base64_decode(const char *s, size_t len, uint8_t *out, size_t *outn)
{
    if (len % 4)
        return CM_EINVAL;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4], pad = 0;
        for (int j = 0; j < 4; j++) {
            int c = (unsigned char)s[i + j];
            if (c == '=' && i + 4 == len && j >= 2) {
                v[j] = 0;
                pad++;
            } else if (pad || (v[j] = b64val(c)) < 0) {
                return CM_EINVAL;
            }
        }
        uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[o++] = (uint8_t)(x >> 16);
        if (pad < 2)
            out[o++] = (uint8_t)(x >> 8);
        if (pad < 1)
            out[o++] = (uint8_t)x;
    }
    *outn = o;
    return 0;
}

int cm_uri_encode(cm_buf *b, cm_slice s, bool encode_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    if (cm_buf_reserve(b, s.n * 3))
        return CM_ENOMEM;
    for (size_t i = 0; i < s.n; i++) {
        uint8_t c = s.p[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~' || (c == '/' && !encode_slash)) {
            b->p[b->n++] = c;
        } else {
            b->p[b->n++] = '%';
            b->p[b->n++] = (uint8_t)hex[c >> 4];
            b->p[b->n++] = (uint8_t)hex[c & 15];
        }
    }
    b->p[b->n] = 0;
    return 0;
}

int cm_uri_decode_into(cm_slice s, bool plus_space, uint8_t *out, size_t *outn)
{
    size_t n = 0;
    int rc = 0;
    for (size_t i = 0; i < s.n; i++) {
        uint8_t c = s.p[i];
        if (c == '%') {
            int h = i + 2 < s.n ? cm_hexval(s.p[i + 1]) : -1;
            int l = i + 2 < s.n ? cm_hexval(s.p[i + 2]) : -1;
            if (h < 0 || l < 0) {
                rc = CM_EINVAL;
                break;
            }
            c = (uint8_t)(h << 4 | l);
            i += 2;
        } else if (c == '+' && plus_space) {
            c = ' ';
        }
        out[n++] = c;
    }
    *outn = n;
    return rc;
}

int cm_uri_decode(cm_buf *b, cm_slice s, bool plus_space)
{
    size_t n;
    if (cm_buf_reserve(b, s.n))
        return CM_ENOMEM;
    int rc = cm_uri_decode_into(s, plus_space, b->p + b->n, &n);
    b->n += n;
    if (rc == 0)
        b->p[b->n] = 0;
    return rc;
}
