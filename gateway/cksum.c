/* gateway/cksum.c - payload digests: the S3 x-amz-checksum-* algorithms
 * (CRC32, CRC32C, CRC64NVME over erasure/rs.h's ISA-L kernels; SHA-1 and
 * SHA-256 over OpenSSL EVP) and MD5 for ETags (erasure/rs.h's multi-stream
 * MD5, which hashes concurrent uploads together). No HTTP, no S3 errors. */
#include "gateway/sigv4.h"

#include <pthread.h>
#include <strings.h>

#include <openssl/evp.h>

#include "erasure/rs.h"

static const struct {
    const char *name;   /* x-amz-checksum-algorithm value */
    const char *header; /* x-amz-checksum-<algo> */
    size_t size;
} algos[] = {
    [GW_CKSUM_NONE] = {"", NULL, 0},
    [GW_CKSUM_CRC32] = {"CRC32", "x-amz-checksum-crc32", 4},
    [GW_CKSUM_CRC32C] = {"CRC32C", "x-amz-checksum-crc32c", 4},
    [GW_CKSUM_CRC64NVME] = {"CRC64NVME", "x-amz-checksum-crc64nvme", 8},
    [GW_CKSUM_SHA1] = {"SHA1", "x-amz-checksum-sha1", 20},
    [GW_CKSUM_SHA256] = {"SHA256", "x-amz-checksum-sha256", 32},
    [GW_CKSUM_MD5] = {"MD5", NULL, 16},
};
#define NALGOS (sizeof algos / sizeof algos[0])

/* SHA-1 and SHA-256 fetched once: OpenSSL 3 looks an implementation up in
 * its provider store on every use of EVP_sha256() and friends, which cost
 * about a tenth of a small GET's CPU (signature checks hash and HMAC each
 * request). Falls back to the implicit form if a fetch fails. */
static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static const EVP_MD *md_sha1, *md_sha256;

static void md_fetch(void)
{
    EVP_MD *m1 = EVP_MD_fetch(NULL, "SHA1", NULL), *m256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    md_sha1 = m1 ? m1 : EVP_sha1();
    md_sha256 = m256 ? m256 : EVP_sha256();
}

static const EVP_MD *sha256_md(void)
{
    pthread_once(&md_once, md_fetch);
    return md_sha256;
}

static const EVP_MD *algo_md(enum gw_cksum_algo a)
{
    pthread_once(&md_once, md_fetch);
    switch (a) {
    case GW_CKSUM_SHA1:
        return md_sha1;
    case GW_CKSUM_SHA256:
        return md_sha256;
    default:
        return NULL;
    }
}

static bool valid_algo(enum gw_cksum_algo a)
{
    return a > GW_CKSUM_NONE && (size_t)a < NALGOS;
}

int gw_cksum_init(gw_cksum *c, enum gw_cksum_algo algo)
{
    memset(c, 0, sizeof *c);
    if (!valid_algo(algo))
        return CM_EINVAL;
    const EVP_MD *md = algo_md(algo);
    if (algo == GW_CKSUM_MD5) {
        if (!(c->md = rs_md5_new()))
            return CM_ENOMEM;
    } else if (md) {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        if (!ctx)
            return CM_ENOMEM;
        if (!EVP_DigestInit_ex(ctx, md, NULL)) {
            EVP_MD_CTX_free(ctx);
            return CM_ENOMEM;
        }
        c->md = ctx;
    }
    c->algo = algo;
    return 0;
}

int gw_cksum_update(gw_cksum *c, const void *p, size_t n)
{
    switch (c->algo) {
    case GW_CKSUM_CRC32:
        c->crc = rs_crc32((uint32_t)c->crc, p, n);
        return 0;
    case GW_CKSUM_CRC32C:
        c->crc = rs_crc32c((uint32_t)c->crc, p, n);
        return 0;
    case GW_CKSUM_CRC64NVME:
        c->crc = rs_crc64nvme(c->crc, p, n);
        return 0;
    case GW_CKSUM_MD5:
        if (!c->md)
            return CM_EINVAL;
        rs_md5_update(c->md, p, n);
        return 0;
    case GW_CKSUM_SHA1:
    case GW_CKSUM_SHA256:
        if (!c->md || !EVP_DigestUpdate(c->md, p, n))
            return CM_EINVAL;
        return 0;
    default:
        return CM_EINVAL;
    }
}

struct evp_each {
    EVP_MD_CTX *ctx;
    int failed;
};

static void evp_each(void *arg, const void *p, size_t n)
{
    struct evp_each *e = arg;
    if (!e->failed && !EVP_DigestUpdate(e->ctx, p, n))
        e->failed = 1;
}

int gw_cksum_update2(gw_cksum *c, gw_cksum *also, const void *p, size_t n)
{
    if (c->algo == GW_CKSUM_MD5 && c->md && also->md &&
        (also->algo == GW_CKSUM_SHA256 || also->algo == GW_CKSUM_SHA1)) {
        struct evp_each e = {also->md, 0};
        rs_md5_update_each(c->md, p, n, evp_each, &e);
        return e.failed ? CM_EINVAL : 0;
    }
    int rc = gw_cksum_update(c, p, n);
    int rc2 = gw_cksum_update(also, p, n);
    return rc ? rc : rc2;
}

int gw_cksum_final(gw_cksum *c, uint8_t *digest, size_t *n)
{
    int rc = 0;
    size_t size = valid_algo(c->algo) ? algos[c->algo].size : 0;

    switch (c->algo) {
    case GW_CKSUM_CRC32:
    case GW_CKSUM_CRC32C:
        for (int i = 0; i < 4; i++)
            digest[i] = (uint8_t)(c->crc >> (24 - 8 * i));
        break;
    case GW_CKSUM_CRC64NVME:
        for (int i = 0; i < 8; i++)
            digest[i] = (uint8_t)(c->crc >> (56 - 8 * i));
        break;
    case GW_CKSUM_MD5:
        if (c->md)
            rs_md5_final(c->md, digest);
        else
            rc = CM_EINVAL;
        break;
    case GW_CKSUM_SHA1:
    case GW_CKSUM_SHA256: {
        unsigned int len = 0;
        if (!c->md || !EVP_DigestFinal_ex(c->md, digest, &len) || len != size)
            rc = CM_EINVAL;
        break;
    }
    default:
        rc = CM_EINVAL;
    }
    gw_cksum_free(c);
    if (rc == 0)
        *n = size;
    return rc;
}

int gw_cksum_final_b64(gw_cksum *c, char *out)
{
    uint8_t d[GW_CKSUM_MAX_DIGEST];
    size_t n;
    int rc = gw_cksum_final(c, d, &n);
    if (rc == 0)
        cm_base64_encode(d, n, out);
    return rc;
}

void gw_cksum_free(gw_cksum *c)
{
    if (c->md && c->algo == GW_CKSUM_MD5)
        rs_md5_free(c->md);
    else if (c->md)
        EVP_MD_CTX_free(c->md);
    c->md = NULL;
    c->crc = 0;
    c->algo = GW_CKSUM_NONE;
}

int gw_cksum_algo_parse(cm_slice s, enum gw_cksum_algo *out)
{
    static const char prefix[] = "x-amz-checksum-";
    cm_slice name = s;
    if (s.n > sizeof prefix - 1 && strncasecmp((const char *)s.p, prefix, sizeof prefix - 1) == 0)
        name = CM_SLICE(s.p + sizeof prefix - 1, s.n - (sizeof prefix - 1));
    for (size_t a = GW_CKSUM_CRC32; a <= GW_CKSUM_SHA256; a++) {
        if (cm_slice_case_eq_str(name, algos[a].name)) {
            *out = (enum gw_cksum_algo)a;
            return 0;
        }
    }
    return CM_EINVAL;
}

const char *gw_cksum_algo_name(enum gw_cksum_algo a)
{
    return valid_algo(a) ? algos[a].name : "";
}

const char *gw_cksum_header_name(enum gw_cksum_algo a)
{
    return valid_algo(a) ? algos[a].header : NULL;
}

size_t gw_cksum_digest_size(enum gw_cksum_algo a)
{
    return valid_algo(a) ? algos[a].size : 0;
}

int gw_cksum_decode_b64(enum gw_cksum_algo a, cm_slice b64, uint8_t *digest)
{
    uint8_t tmp[GW_CKSUM_MAX_DIGEST + 3];
    size_t n = 0;
    size_t want = gw_cksum_digest_size(a);
    if (!want || b64.n != 4 * ((want + 2) / 3))
        return CM_EINVAL;
    if (cm_base64_decode((const char *)b64.p, b64.n, tmp, &n) || n != want)
        return CM_EINVAL;
    memcpy(digest, tmp, n);
    return 0;
}

int gw_sha256(const void *p, size_t n, uint8_t out[32])
{
    unsigned int len = 0;
    if (!EVP_Digest(p, n, out, &len, sha256_md(), NULL) || len != 32)
        return CM_ENOMEM;
    return 0;
}

const EVP_MD *gw_sha256_md(void)
{
    return sha256_md();
}

int gw_hmac_sha256(const void *key, size_t keylen, const void *p, size_t n, uint8_t out[32])
{
    uint8_t k0[64] = {0}, pad[64], inner[32];
    unsigned int len = 0;
    int rc = CM_ENOMEM;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    if (!ctx)
        return CM_ENOMEM;
    if (keylen > sizeof k0) { /* RFC 2104: a long key is hashed first */
        if (gw_sha256(key, keylen, k0))
            goto out;
    } else if (keylen) {
        memcpy(k0, key, keylen);
    }
    for (size_t i = 0; i < sizeof pad; i++)
        pad[i] = k0[i] ^ 0x36;
    if (!EVP_DigestInit_ex2(ctx, sha256_md(), NULL) || !EVP_DigestUpdate(ctx, pad, sizeof pad) ||
        !EVP_DigestUpdate(ctx, p, n) || !EVP_DigestFinal_ex(ctx, inner, &len) || len != 32)
        goto out;
    for (size_t i = 0; i < sizeof pad; i++)
        pad[i] = k0[i] ^ 0x5c;
    if (!EVP_DigestInit_ex2(ctx, sha256_md(), NULL) || !EVP_DigestUpdate(ctx, pad, sizeof pad) ||
        !EVP_DigestUpdate(ctx, inner, sizeof inner) || !EVP_DigestFinal_ex(ctx, out, &len) ||
        len != 32)
        goto out;
    rc = 0;
out:
    OPENSSL_cleanse(k0, sizeof k0);
    OPENSSL_cleanse(pad, sizeof pad);
    EVP_MD_CTX_free(ctx);
    return rc;
}
