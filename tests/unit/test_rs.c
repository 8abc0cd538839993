/* tests/unit/test_rs.c - Reed-Solomon round trips over every erasure pattern
 * of size <= m for small geometries, argument checks, known-answer values
 * plus chaining for CRC32C, CRC32 and CRC-64/NVME, and the multi-stream MD5
 * against OpenSSL (every kernel, odd lengths and splits, many threads). */
#include "erasure/rs.h"
#include "common/cm.h"
#include "tests/unit/tap.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>

/* Small deterministic PRNG so failures reproduce (xorshift64*). */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(rng() >> 56);
}

/* Encodes random data, then for every subset of at most m block indexes
 * overwrites those blocks with garbage, decodes, and compares all k+m
 * blocks. Returns the number of patterns that failed; *npat counts them. */
static int check_geometry(int k, int m, size_t len, int *npat)
{
    int n = k + m, bad = 0;
    rs_ctx_t *ctx = rs_ctx_new(k, m);
    uint8_t *orig[RS_MAX_K + RS_MAX_M], *work[RS_MAX_K + RS_MAX_M];

    *npat = 0;
    if (!ctx)
        return 1;
    for (int i = 0; i < n; i++) {
        orig[i] = malloc(len);
        work[i] = malloc(len);
        if (i < k)
            fill_random(orig[i], len);
    }
    rs_encode(ctx, len, orig, orig + k);

    for (unsigned mask = 0; mask < (1u << n); mask++) {
        int erased[RS_MAX_K + RS_MAX_M], ne = 0;
        for (int i = 0; i < n; i++)
            if (mask & (1u << i))
                erased[ne++] = i;
        if (ne > m)
            continue;
        (*npat)++;
        for (int i = 0; i < n; i++) {
            memcpy(work[i], orig[i], len);
            if (mask & (1u << i))
                fill_random(work[i], len);
        }
        int rc = rs_decode(ctx, len, work, erased, ne);
        int same = rc == 0;
        for (int i = 0; i < n && same; i++)
            same = memcmp(work[i], orig[i], len) == 0;
        if (!same) {
            printf("# k=%d m=%d mask=%#x rc=%d: mismatch\n", k, m, mask, rc);
            bad++;
        }
    }
    for (int i = 0; i < n; i++) {
        free(orig[i]);
        free(work[i]);
    }
    rs_ctx_free(ctx);
    return bad;
}

static void test_geometries(void)
{
    static const int geo[][2] = {{4, 2}, {3, 3}, {2, 1}, {6, 3}, {1, 1}, {5, 0}, {10, 4}, {4, 4}};
    static const size_t lens[] = {1, 31, 4096 + 7};

    for (size_t g = 0; g < sizeof(geo) / sizeof(geo[0]); g++) {
        for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++) {
            int npat, bad = check_geometry(geo[g][0], geo[g][1], lens[l], &npat);
            ok(bad == 0 && npat > 0, "k=%d m=%d len=%zu: %d erasure patterns decode exactly",
               geo[g][0], geo[g][1], lens[l], npat);
        }
    }
}

static void test_parity_is_not_trivial(void)
{
    /* A decode that never touched the buffers would pass the pattern test
     * only if the garbage equalled the original; make sure parity differs
     * from data and that flipping one data byte changes every parity block. */
    rs_ctx_t *ctx = rs_ctx_new(4, 2);
    uint8_t d[4][64], p[2][64], p2[2][64];
    uint8_t *dp[4] = {d[0], d[1], d[2], d[3]}, *pp[2] = {p[0], p[1]}, *pp2[2] = {p2[0], p2[1]};

    fill_random(&d[0][0], sizeof(d));
    rs_encode(ctx, 64, dp, pp);
    d[2][10] ^= 1;
    rs_encode(ctx, 64, dp, pp2);
    ok(memcmp(p[0], p2[0], 64) != 0 && memcmp(p[1], p2[1], 64) != 0,
       "one flipped data bit changes every parity block");
    ok(memcmp(p[0], p[1], 64) != 0, "parity blocks differ from each other");
    rs_ctx_free(ctx);
}

static void test_args(void)
{
    rs_ctx_t *ctx = rs_ctx_new(4, 2);
    uint8_t buf[6][8] = {{0}};
    uint8_t *bp[6] = {buf[0], buf[1], buf[2], buf[3], buf[4], buf[5]};
    int three[3] = {0, 1, 2}, dup[2] = {1, 1}, out[1] = {6};

    ok(rs_ctx_new(0, 2) == NULL, "k=0 rejected");
    ok(rs_ctx_new(RS_MAX_K + 1, 2) == NULL, "k>RS_MAX_K rejected");
    ok(rs_ctx_new(4, RS_MAX_M + 1) == NULL, "m>RS_MAX_M rejected");
    ok(rs_ctx_new(4, -1) == NULL, "m<0 rejected");
    ok(ctx && rs_ctx_k(ctx) == 4 && rs_ctx_m(ctx) == 2, "k and m getters");
    is_int(rs_decode(ctx, 8, bp, three, 3), CM_EINVAL, "nerased > m is CM_EINVAL");
    is_int(rs_decode(ctx, 8, bp, dup, 2), CM_EINVAL, "duplicate erasure is CM_EINVAL");
    is_int(rs_decode(ctx, 8, bp, out, 1), CM_EINVAL, "erasure index out of range is CM_EINVAL");
    is_int(rs_decode(ctx, 8, bp, NULL, 0), 0, "nothing erased is a no-op");
    rs_ctx_free(ctx);
    rs_ctx_free(NULL);
    ok(1, "rs_ctx_free(NULL) is a no-op");
}

static void test_crc(void)
{
    static const char check[] = "123456789";
    uint8_t big[100003];
    size_t split[] = {0, 1, 7, 8, 9, 4096, 50000, sizeof(big)};

    is_int(rs_crc32c(0, check, 9), 0xE3069283u, "CRC32C(\"123456789\") = 0xE3069283");
    is_int(rs_crc32(0, check, 9), 0xCBF43926u, "CRC32(\"123456789\") = 0xCBF43926");
    ok(rs_crc64nvme(0, check, 9) == 0xAE8B14860A799888ULL,
       "CRC-64/NVME(\"123456789\") = 0xAE8B14860A799888");
    is_int(rs_crc32c(0, "", 0), 0, "CRC32C of nothing is 0");
    ok(rs_crc64nvme(0, "", 0) == 0, "CRC-64/NVME of nothing is 0");
    /* RFC 3720 B.4: 32 bytes of zeros -> 0x8A9136AA, of 0xff -> 0x62A8AB43. */
    memset(big, 0, 32);
    is_int(rs_crc32c(0, big, 32), 0x8A9136AAu, "CRC32C of 32 zero bytes (RFC 3720)");
    memset(big, 0xff, 32);
    is_int(rs_crc32c(0, big, 32), 0x62A8AB43u, "CRC32C of 32 0xff bytes (RFC 3720)");

    fill_random(big, sizeof(big));
    uint32_t c32c = rs_crc32c(0, big, sizeof(big)), c32 = rs_crc32(0, big, sizeof(big));
    uint64_t c64 = rs_crc64nvme(0, big, sizeof(big));
    int chain_ok = 1;
    for (size_t i = 0; i < sizeof(split) / sizeof(split[0]); i++) {
        size_t s = split[i];
        chain_ok &= rs_crc32c(rs_crc32c(0, big, s), big + s, sizeof(big) - s) == c32c;
        chain_ok &= rs_crc32(rs_crc32(0, big, s), big + s, sizeof(big) - s) == c32;
        chain_ok &= rs_crc64nvme(rs_crc64nvme(0, big, s), big + s, sizeof(big) - s) == c64;
    }
    ok(chain_ok, "CRC32C, CRC32, CRC-64/NVME chain across any split");

    /* Byte-at-a-time tail vs slice-by-8 body must agree at every length. */
    int tail_ok = 1;
    for (size_t n = 0; n < 40; n++) {
        uint64_t c = 0;
        for (size_t i = 0; i < n; i++)
            c = rs_crc64nvme(c, big + i, 1);
        tail_ok &= c == rs_crc64nvme(0, big, n);
    }
    ok(tail_ok, "CRC-64/NVME bytewise equals slice-by-8 for lengths 0..39");
}

/* ------------------------------------------------------------ MD5 */

static void ref_md5(const uint8_t *p, size_t n, uint8_t out[16])
{
    unsigned int len = 0;
    EVP_Digest(p, n, out, &len, EVP_md5(), NULL);
}

/* Per-thread PRNG for the threaded tests (xorshift64*). */
static uint64_t rng_r(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dULL;
}

/* What rs_md5_update_each passed on: a second SHA-256 and a byte count. */
struct each_seen {
    EVP_MD_CTX *sha;
    size_t n;
};

static void each_fn(void *arg, const void *p, size_t n)
{
    struct each_seen *e = arg;
    EVP_DigestUpdate(e->sha, p, n);
    e->n += n;
}

/* Hashes p[0..n) fed in pieces of random sizes up to maxpiece (1 if 0);
 * returns 1 if the digest equals OpenSSL's. With each, through
 * rs_md5_update_each, whose second hash must also see every byte in order. */
static int md5_matches(const uint8_t *p, size_t n, size_t maxpiece, uint64_t *seed, bool each)
{
    uint8_t got[16], want[16], sgot[32], swant[32];
    unsigned int len = 0;
    struct each_seen e = {EVP_MD_CTX_new(), 0};
    rs_md5_t *c = rs_md5_new();
    int good = 1;
    if (!c || !e.sha || !EVP_DigestInit_ex(e.sha, EVP_sha256(), NULL))
        good = 0;
    for (size_t off = 0; good && off < n;) {
        size_t piece = maxpiece ? 1 + (size_t)(rng_r(seed) % maxpiece) : n - off;
        if (piece > n - off)
            piece = n - off;
        if (each)
            rs_md5_update_each(c, p + off, piece, each_fn, &e);
        else
            rs_md5_update(c, p + off, piece);
        off += piece;
    }
    if (good) {
        rs_md5_final(c, got);
        ref_md5(p, n, want);
        good = memcmp(got, want, 16) == 0;
    }
    if (good && each) {
        EVP_DigestFinal_ex(e.sha, sgot, &len);
        EVP_Digest(p, n, swant, &len, EVP_sha256(), NULL);
        good = e.n == n && memcmp(sgot, swant, 32) == 0;
    }
    rs_md5_free(c);
    EVP_MD_CTX_free(e.sha);
    return good;
}

struct md5_job {
    const uint8_t *data; /* shared random bytes */
    size_t max;          /* bytes available */
    uint64_t seed;
    int objects;         /* streams hashed one after another */
    int bad;             /* OUT: mismatches */
};

/* One thread: objects of random sizes (some a few bytes, some over a MiB),
 * random piece sizes, every fifth stream freed half way without final. */
static void *md5_thread(void *arg)
{
    struct md5_job *j = arg;
    for (int o = 0; o < j->objects; o++) {
        size_t off = (size_t)(rng_r(&j->seed) % 4096);
        size_t n = (size_t)(rng_r(&j->seed) % (j->max - off));
        if (o % 3 == 0)
            n %= 200;
        size_t piece = 1 + (size_t)(rng_r(&j->seed) % 70000);
        if (o % 5 == 4) {
            rs_md5_t *c = rs_md5_new();
            for (size_t d = 0; c && d < n / 2; d += piece)
                rs_md5_update(c, j->data + off + d, piece < n / 2 - d ? piece : n / 2 - d);
            rs_md5_free(c);
            continue;
        }
        j->bad += !md5_matches(j->data + off, n, piece, &j->seed, o % 2 == 1);
    }
    return NULL;
}

static void test_md5_level(int level, const char *name, uint8_t *big, size_t nbig)
{
    static const size_t lens[] = {0,        1,         3,         55,         56,
                                  57,       63,        64,        65,         127,
                                  128,      1000,      65535,     65536,      65537,
                                  65536 + 64, 131071,  200000,    262144,     262144 + 65,
                                  327680 + 1, 1048576 + 13, 3000001};
    static const size_t pieces[] = {0, 1, 63, 64, 65, 4097, 65536, 100000};
    uint64_t seed = 0x1234567 + (uint64_t)level;
    int good = 1;

    if (rs_md5_lanes(level) != 0) {
        skip(name);
        return;
    }
    for (int each = 0; each < 2; each++) {
        good = 1;
        for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++) {
            if (lens[l] > nbig)
                continue;
            for (size_t q = 0; q < sizeof(pieces) / sizeof(pieces[0]); q++) {
                if (pieces[q] == 1 && lens[l] > 70000)
                    continue; /* byte by byte only for short inputs */
                if (!md5_matches(big + l, lens[l], pieces[q], &seed, each)) {
                    printf("# %s: len %zu piece %zu differs%s\n", name, lens[l], pieces[q],
                           each ? " (with a second hash)" : "");
                    good = 0;
                }
            }
        }
        if (each)
            ok(good, "MD5 (%s) and a SHA-256 interleaved with it equal OpenSSL's for odd "
                     "lengths and splits", name);
        else
            ok(good, "MD5 (%s) equals OpenSSL for odd lengths and splits", name);
    }

    enum { NT = 20 }; /* more than the engine takes in multi-buffer mode */
    pthread_t th[NT];
    struct md5_job jobs[NT];
    int bad = 0, started = 0;
    for (int i = 0; i < NT; i++) {
        jobs[i] = (struct md5_job){big, nbig, 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1) + level,
                                   i % 2 ? 12 : 6, 0};
        started += pthread_create(&th[i], NULL, md5_thread, &jobs[i]) == 0;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        bad += jobs[i].bad;
    }
    ok(started == NT && bad == 0, "MD5 (%s): %d threads hashing together agree with OpenSSL", name,
       NT);
}

static void test_md5(void)
{
    static const struct {
        const char *in, *hex;
    } kat[] = {
        /* RFC 1321, A.5 */
        {"", "d41d8cd98f00b204e9800998ecf8427e"},
        {"a", "0cc175b9c0f1b6a831c399e269772661"},
        {"abc", "900150983cd24fb0d6963f7d28e17f72"},
        {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
        {"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"},
        {"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
         "57edf4a22be3c955ac49da2e2107b67a"},
    };
    size_t nbig = 4u << 20;
    uint8_t *big = malloc(nbig);

    for (size_t i = 0; i < sizeof(kat) / sizeof(kat[0]); i++) {
        uint8_t d[16];
        char hex[33];
        rs_md5_t *c = rs_md5_new();
        rs_md5_update(c, kat[i].in, strlen(kat[i].in));
        rs_md5_final(c, d);
        rs_md5_free(c);
        for (int b = 0; b < 16; b++)
            snprintf(hex + 2 * b, 3, "%02x", d[b]);
        is_str(hex, kat[i].hex, "MD5(\"%.20s\") (RFC 1321)", kat[i].in);
    }
    rs_md5_free(NULL);
    if (!big) {
        skip("no memory");
        return;
    }
    fill_random(big, nbig);
    test_md5_level(0, "scalar", big, nbig);
    test_md5_level(1, "AVX2 lanes", big, nbig);
    test_md5_level(2, "AVX-512VL lanes", big, nbig);
    free(big);
}

int main(void)
{
    test_md5();
    test_crc();
    test_args();
    test_parity_is_not_trivial();
    test_geometries();
    return done_testing();
}
