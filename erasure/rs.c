/* erasure/rs.c - Reed-Solomon encode/decode over ISA-L (Cauchy matrix) and the
 * CRC32C / CRC32 wrappers over ISA-L's CRC kernels. The only file in the
 * project that includes ISA-L headers. CRC-64/NVME lives in crc64.c. */
#include "erasure/rs.h"
#include "common/cm.h"

#include <isa-l/crc.h>
#include <isa-l/erasure_code.h>
#include <stdlib.h>

/* ISA-L takes lengths as int: feed it at most this many bytes per call. */
#define RS_CHUNK ((size_t)1 << 30)

/* Immutable after rs_ctx_new(): shared freely between threads. */
struct rs_ctx {
    int k, m;
    uint8_t mat[(RS_MAX_K + RS_MAX_M) * RS_MAX_K]; /* (k+m) x k, top k rows identity */
    uint8_t tbls[32 * RS_MAX_K * RS_MAX_M];        /* expanded parity rows */
};

rs_ctx_t *rs_ctx_new(int k, int m)
{
    rs_ctx_t *ctx;

    if (k < 1 || k > RS_MAX_K || m < 0 || m > RS_MAX_M)
        return NULL;
    ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return NULL;
    ctx->k = k;
    ctx->m = m;
    gf_gen_cauchy1_matrix(ctx->mat, k + m, k);
    if (m > 0)
        ec_init_tables(k, m, &ctx->mat[k * k], ctx->tbls);
    return ctx;
}

void rs_ctx_free(rs_ctx_t *ctx)
{
    free(ctx);
}

int rs_ctx_k(const rs_ctx_t *ctx)
{
    return ctx->k;
}

int rs_ctx_m(const rs_ctx_t *ctx)
{
    return ctx->m;
}

/* ec_encode_data() in RS_CHUNK pieces; src/dst are advanced copies. */
static void encode_chunked(size_t len, int k, int rows, const uint8_t *tbls, uint8_t *const *src,
                           uint8_t *const *dst)
{
    uint8_t *s[RS_MAX_K], *d[RS_MAX_K + RS_MAX_M];
    size_t done = 0;

    while (done < len) {
        size_t n = len - done < RS_CHUNK ? len - done : RS_CHUNK;
        for (int i = 0; i < k; i++)
            s[i] = src[i] + done;
        for (int i = 0; i < rows; i++)
            d[i] = dst[i] + done;
        /* ISA-L's prototypes are not const-correct; it only reads tbls and s. */
        ec_encode_data((int)n, k, rows, (unsigned char *)tbls, s, d);
        done += n;
    }
}

int rs_encode(const rs_ctx_t *ctx, size_t len, uint8_t *const *data, uint8_t *const *parity)
{
    if (ctx->m == 0 || len == 0)
        return 0;
    encode_chunked(len, ctx->k, ctx->m, ctx->tbls, data, parity);
    return 0;
}

int rs_decode(const rs_ctx_t *ctx, size_t len, uint8_t *const *blocks, const int *erased,
              int nerased)
{
    int k = ctx->k, n = ctx->k + ctx->m;
    uint8_t lost[RS_MAX_K + RS_MAX_M] = {0};
    uint8_t b[RS_MAX_K * RS_MAX_K], inv[RS_MAX_K * RS_MAX_K];
    uint8_t coef[RS_MAX_K * RS_MAX_M];
    uint8_t tbls[32 * RS_MAX_K * RS_MAX_M];
    uint8_t *src[RS_MAX_K], *dst[RS_MAX_M];
    int nsrc = 0;

    if (nerased < 0 || nerased > ctx->m)
        return CM_EINVAL;
    for (int i = 0; i < nerased; i++) {
        if (erased[i] < 0 || erased[i] >= n || lost[erased[i]])
            return CM_EINVAL;
        lost[erased[i]] = 1;
    }
    if (nerased == 0 || len == 0)
        return 0;

    /* The first k surviving rows of the generator matrix, and their blocks. */
    for (int i = 0; i < n && nsrc < k; i++) {
        if (lost[i])
            continue;
        memcpy(&b[nsrc * k], &ctx->mat[i * k], (size_t)k);
        src[nsrc++] = blocks[i];
    }
    if (gf_invert_matrix(b, inv, k) != 0)
        return CM_EIO; /* cannot happen for a Cauchy matrix */

    /* Row r of the decode matrix maps the k survivors to erased block e:
     * a data block is row e of the inverse; a parity block is its generator
     * row times the inverse. */
    for (int r = 0; r < nerased; r++) {
        int e = erased[r];
        if (e < k) {
            memcpy(&coef[r * k], &inv[e * k], (size_t)k);
        } else {
            for (int j = 0; j < k; j++) {
                uint8_t s = 0;
                for (int l = 0; l < k; l++)
                    s ^= gf_mul(ctx->mat[e * k + l], inv[l * k + j]);
                coef[r * k + j] = s;
            }
        }
        dst[r] = blocks[e];
    }
    ec_init_tables(k, nerased, coef, tbls);
    encode_chunked(len, k, nerased, tbls, src, dst);
    return 0;
}

uint32_t rs_crc32c(uint32_t crc, const void *p, size_t n)
{
    /* crc32_iscsi works on the raw register: pre/post-invert ourselves. */
    const uint8_t *q = p;
    uint32_t reg = ~crc;

    while (n > 0) {
        size_t c = n < RS_CHUNK ? n : RS_CHUNK;
        reg = crc32_iscsi((unsigned char *)q, (int)c, reg);
        q += c;
        n -= c;
    }
    return ~reg;
}

uint32_t rs_crc32(uint32_t crc, const void *p, size_t n)
{
    /* crc32_gzip_refl applies the init and final inversions itself. */
    return crc32_gzip_refl(crc, p, n);
}
