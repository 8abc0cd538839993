/* erasure/md5.c - MD5 (RFC 1321) for ETags, several streams at a time.
 * Concurrent uploads share one engine: each stream copies its bytes into a
 * small ring of segments, and whichever thread finds enough streams with
 * queued segments hashes them all together, one stream per 32-bit lane of
 * AVX-512VL or AVX2 registers (MD5 is serial within a stream, so lanes can
 * only come from different streams). A scalar C compression function covers
 * the first bytes of a stream, tails, and CPUs without AVX2. Buffers only:
 * no files, no metadata, no third-party headers. */
#include "erasure/rs.h"

#include <immintrin.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define LANES 8              /* streams per kernel call (32-bit lanes of a ymm register) */
#define SEG (64 * 1024)      /* bytes per queued segment (multiple of 64) */
#define NSEG 32              /* segments per stream ring (2 MiB: covers scheduling skew) */
#define MAX_MULTI (2 * LANES) /* streams in multi-buffer mode at once; more hash alone */
#define ROUND_MAX 128        /* blocks per kernel call, so new streams join soon */
#define SOLO_BYTES (64 * 1024) /* a stream hashes this much alone before it joins */

/* One running MD5. The owner thread feeds and finishes it; the engine's
 * combiner reads queued segments and updates h meanwhile. */
struct rs_md5 {
    uint32_t h[4];     /* chaining value: the engine's while queued or in a lane */
    uint64_t len;      /* bytes fed */
    uint8_t tail[64];  /* solo mode: partial block */
    size_t ntail;
    int solo;          /* refused multi-buffer mode: stays on its own thread */
    uint8_t *ring;     /* multi-buffer mode: NSEG segments of SEG bytes, else NULL */
    unsigned wseg;     /* owner: segment being filled, never a queued one */
    size_t fill;       /* owner: bytes in segment wseg */
    /* Fields below are protected by eng.mu. */
    size_t seglen[NSEG]; /* bytes of each queued segment (multiple of 64) */
    unsigned qhead;    /* oldest queued segment */
    unsigned nq;       /* queued segments, qhead .. qhead+nq-1 (mod NSEG) */
    size_t qoff;       /* bytes of segment qhead already hashed */
    int in_lane;       /* a combiner holds this stream in a lane */
    int on_ready;      /* linked in eng.ready */
    int cancel;        /* owner is freeing it: the combiner lets go */
    struct rs_md5 *next; /* eng.ready link */
};

typedef void md5_x8_fn(uint32_t st[4][LANES], const uint8_t *const p[LANES], size_t nblocks);

/* The shared engine. mu protects every field here and the stream fields
 * marked above; at most one thread (the combiner, busy = 1) runs kernels,
 * with mu released while it does. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;           /* a segment was hashed, a lane let go, or the combiner left */
    struct rs_md5 *ready, *ready_tail; /* streams with queued segments, not in a lane (FIFO) */
    int nready;
    int nactive;                 /* streams in multi-buffer mode */
    int busy;                    /* a combiner runs */
    pthread_once_t once;
    md5_x8_fn *kernel;           /* NULL: no AVX2, every stream stays solo */
} eng = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0, 0, 0,
         PTHREAD_ONCE_INIT, NULL};

static const uint8_t zero_block[64];

static inline uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ------------------------------------------------------------ scalar */

/* The round functions are written so that the fewest operations wait for
 * b, the word the step before produced (the chain that bounds a stream's
 * speed): G's two halves have no bit in common, so its OR is an add and
 * the half without b joins a early; H's and F's (c, d) parts come first. */
#define ROTL(x, s) (((x) << (s)) | ((x) >> (32 - (s))))
#define F(b, c, d) ((d) ^ ((b) & ((c) ^ (d))))
#define H(b, c, d) ((b) ^ ((c) ^ (d)))
#define I(b, c, d) ((c) ^ ((b) | ~(d)))
/* a = b + rotl(a + FN(b, c, d) + w[g] + k, s) */
#define STEP(FN, a, b, c, d, g, k, s)                                                              \
    do {                                                                                           \
        a += w[g] + (uint32_t)(k);                                                                 \
        a += FN(b, c, d);                                                                          \
        a = ROTL(a, s) + b;                                                                        \
    } while (0)
/* G(b, c, d) = (b & d) | (c & ~d), as an add. */
#define STEP_G(a, b, c, d, g, k, s)                                                                \
    do {                                                                                           \
        a += w[g] + (uint32_t)(k) + ((c) & ~(d));                                                  \
        a += (b) & (d);                                                                            \
        a = ROTL(a, s) + b;                                                                        \
    } while (0)

/* The 64 steps of one block over a, b, c, d and the message words w[0..15]. */
#define MD5_STEPS \
    STEP(F, a, b, c, d, 0, 0xd76aa478, 7); STEP(F, d, a, b, c, 1, 0xe8c7b756, 12); \
    STEP(F, c, d, a, b, 2, 0x242070db, 17); STEP(F, b, c, d, a, 3, 0xc1bdceee, 22); \
    STEP(F, a, b, c, d, 4, 0xf57c0faf, 7); STEP(F, d, a, b, c, 5, 0x4787c62a, 12); \
    STEP(F, c, d, a, b, 6, 0xa8304613, 17); STEP(F, b, c, d, a, 7, 0xfd469501, 22); \
    STEP(F, a, b, c, d, 8, 0x698098d8, 7); STEP(F, d, a, b, c, 9, 0x8b44f7af, 12); \
    STEP(F, c, d, a, b, 10, 0xffff5bb1, 17); STEP(F, b, c, d, a, 11, 0x895cd7be, 22); \
    STEP(F, a, b, c, d, 12, 0x6b901122, 7); STEP(F, d, a, b, c, 13, 0xfd987193, 12); \
    STEP(F, c, d, a, b, 14, 0xa679438e, 17); STEP(F, b, c, d, a, 15, 0x49b40821, 22); \
    STEP_G(a, b, c, d, 1, 0xf61e2562, 5); STEP_G(d, a, b, c, 6, 0xc040b340, 9); \
    STEP_G(c, d, a, b, 11, 0x265e5a51, 14); STEP_G(b, c, d, a, 0, 0xe9b6c7aa, 20); \
    STEP_G(a, b, c, d, 5, 0xd62f105d, 5); STEP_G(d, a, b, c, 10, 0x02441453, 9); \
    STEP_G(c, d, a, b, 15, 0xd8a1e681, 14); STEP_G(b, c, d, a, 4, 0xe7d3fbc8, 20); \
    STEP_G(a, b, c, d, 9, 0x21e1cde6, 5); STEP_G(d, a, b, c, 14, 0xc33707d6, 9); \
    STEP_G(c, d, a, b, 3, 0xf4d50d87, 14); STEP_G(b, c, d, a, 8, 0x455a14ed, 20); \
    STEP_G(a, b, c, d, 13, 0xa9e3e905, 5); STEP_G(d, a, b, c, 2, 0xfcefa3f8, 9); \
    STEP_G(c, d, a, b, 7, 0x676f02d9, 14); STEP_G(b, c, d, a, 12, 0x8d2a4c8a, 20); \
    STEP(H, a, b, c, d, 5, 0xfffa3942, 4); STEP(H, d, a, b, c, 8, 0x8771f681, 11); \
    STEP(H, c, d, a, b, 11, 0x6d9d6122, 16); STEP(H, b, c, d, a, 14, 0xfde5380c, 23); \
    STEP(H, a, b, c, d, 1, 0xa4beea44, 4); STEP(H, d, a, b, c, 4, 0x4bdecfa9, 11); \
    STEP(H, c, d, a, b, 7, 0xf6bb4b60, 16); STEP(H, b, c, d, a, 10, 0xbebfbc70, 23); \
    STEP(H, a, b, c, d, 13, 0x289b7ec6, 4); STEP(H, d, a, b, c, 0, 0xeaa127fa, 11); \
    STEP(H, c, d, a, b, 3, 0xd4ef3085, 16); STEP(H, b, c, d, a, 6, 0x04881d05, 23); \
    STEP(H, a, b, c, d, 9, 0xd9d4d039, 4); STEP(H, d, a, b, c, 12, 0xe6db99e5, 11); \
    STEP(H, c, d, a, b, 15, 0x1fa27cf8, 16); STEP(H, b, c, d, a, 2, 0xc4ac5665, 23); \
    STEP(I, a, b, c, d, 0, 0xf4292244, 6); STEP(I, d, a, b, c, 7, 0x432aff97, 10); \
    STEP(I, c, d, a, b, 14, 0xab9423a7, 15); STEP(I, b, c, d, a, 5, 0xfc93a039, 21); \
    STEP(I, a, b, c, d, 12, 0x655b59c3, 6); STEP(I, d, a, b, c, 3, 0x8f0ccc92, 10); \
    STEP(I, c, d, a, b, 10, 0xffeff47d, 15); STEP(I, b, c, d, a, 1, 0x85845dd1, 21); \
    STEP(I, a, b, c, d, 8, 0x6fa87e4f, 6); STEP(I, d, a, b, c, 15, 0xfe2ce6e0, 10); \
    STEP(I, c, d, a, b, 6, 0xa3014314, 15); STEP(I, b, c, d, a, 13, 0x4e0811a1, 21); \
    STEP(I, a, b, c, d, 4, 0xf7537e82, 6); STEP(I, d, a, b, c, 11, 0xbd3af235, 10); \
    STEP(I, c, d, a, b, 2, 0x2ad7d2bb, 15); STEP(I, b, c, d, a, 9, 0xeb86d391, 21);

static void md5_blocks_scalar(uint32_t h[4], const uint8_t *p, size_t nblocks)
{
    uint32_t w[16];
    for (; nblocks > 0; nblocks--, p += 64) {
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
        for (int i = 0; i < 16; i++)
            w[i] = get_le32(p + 4 * i);
        MD5_STEPS;
        h[0] += a;
        h[1] += b;
        h[2] += c;
        h[3] += d;
    }
}

#undef ROTL
#undef F
#undef H
#undef I
#undef STEP
#undef STEP_G

/* ------------------------------------------------------------ 8 lanes */

/* Loads word i (0..15) of the current block of every lane: w[i] lane j =
 * word i of q[j]. An 8x8 transpose of 32-bit words per half block. */
#define LOAD_WORDS(w, q)                                                                           \
    do {                                                                                           \
        for (int half = 0; half < 2; half++) {                                                     \
            __m256i r0 = _mm256_loadu_si256((const __m256i *)(q[0] + 32 * half));                  \
            __m256i r1 = _mm256_loadu_si256((const __m256i *)(q[1] + 32 * half));                  \
            __m256i r2 = _mm256_loadu_si256((const __m256i *)(q[2] + 32 * half));                  \
            __m256i r3 = _mm256_loadu_si256((const __m256i *)(q[3] + 32 * half));                  \
            __m256i r4 = _mm256_loadu_si256((const __m256i *)(q[4] + 32 * half));                  \
            __m256i r5 = _mm256_loadu_si256((const __m256i *)(q[5] + 32 * half));                  \
            __m256i r6 = _mm256_loadu_si256((const __m256i *)(q[6] + 32 * half));                  \
            __m256i r7 = _mm256_loadu_si256((const __m256i *)(q[7] + 32 * half));                  \
            __m256i t0 = _mm256_unpacklo_epi32(r0, r1), t1 = _mm256_unpackhi_epi32(r0, r1);        \
            __m256i t2 = _mm256_unpacklo_epi32(r2, r3), t3 = _mm256_unpackhi_epi32(r2, r3);        \
            __m256i t4 = _mm256_unpacklo_epi32(r4, r5), t5 = _mm256_unpackhi_epi32(r4, r5);        \
            __m256i t6 = _mm256_unpacklo_epi32(r6, r7), t7 = _mm256_unpackhi_epi32(r6, r7);        \
            __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);        \
            __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);        \
            __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);        \
            __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);        \
            __m256i *o = w + 8 * half;                                                             \
            o[0] = _mm256_permute2x128_si256(u0, u4, 0x20);                                        \
            o[1] = _mm256_permute2x128_si256(u1, u5, 0x20);                                        \
            o[2] = _mm256_permute2x128_si256(u2, u6, 0x20);                                        \
            o[3] = _mm256_permute2x128_si256(u3, u7, 0x20);                                        \
            o[4] = _mm256_permute2x128_si256(u0, u4, 0x31);                                        \
            o[5] = _mm256_permute2x128_si256(u1, u5, 0x31);                                        \
            o[6] = _mm256_permute2x128_si256(u2, u6, 0x31);                                        \
            o[7] = _mm256_permute2x128_si256(u3, u7, 0x31);                                        \
        }                                                                                          \
    } while (0)

/* Kernel body shared by the AVX-512VL and AVX2 variants, which differ in
 * FN (the round functions) and ROTL. Lanes whose p[j] is NULL hash a zero
 * block over and over; their state is garbage and never stored back by
 * the caller. */
#define MD5_X8_BODY                                                                                \
    const uint8_t *q[LANES];                                                                       \
    size_t step[LANES];                                                                            \
    __m256i w[16];                                                                                 \
    for (int j = 0; j < LANES; j++) {                                                              \
        q[j] = p[j] ? p[j] : zero_block;                                                           \
        step[j] = p[j] ? 64 : 0;                                                                   \
    }                                                                                              \
    __m256i a = _mm256_loadu_si256((const __m256i *)st[0]);                                        \
    __m256i b = _mm256_loadu_si256((const __m256i *)st[1]);                                        \
    __m256i c = _mm256_loadu_si256((const __m256i *)st[2]);                                        \
    __m256i d = _mm256_loadu_si256((const __m256i *)st[3]);                                        \
    for (; nblocks > 0; nblocks--) {                                                               \
        __m256i a0 = a, b0 = b, c0 = c, d0 = d;                                                    \
        LOAD_WORDS(w, q);                                                                          \
        MD5_STEPS;                                                                                 \
        a = _mm256_add_epi32(a, a0);                                                               \
        b = _mm256_add_epi32(b, b0);                                                               \
        c = _mm256_add_epi32(c, c0);                                                               \
        d = _mm256_add_epi32(d, d0);                                                               \
        for (int j = 0; j < LANES; j++)                                                            \
            q[j] += step[j];                                                                       \
    }                                                                                              \
    _mm256_storeu_si256((__m256i *)st[0], a);                                                      \
    _mm256_storeu_si256((__m256i *)st[1], b);                                                      \
    _mm256_storeu_si256((__m256i *)st[2], c);                                                      \
    _mm256_storeu_si256((__m256i *)st[3], d);

#define ADD(x, y) _mm256_add_epi32(x, y)
#define STEP(FN, a, b, c, d, g, k, s)                                                              \
    do {                                                                                           \
        a = ADD(a, ADD(w[g], _mm256_set1_epi32((int)(k))));                                        \
        a = ADD(ROTL(ADD(a, FN(b, c, d)), s), b);                                                  \
    } while (0)
#define STEP_G(a, b, c, d, g, k, s) STEP(G, a, b, c, d, g, k, s) /* G is one instruction here */

/* AVX-512VL: one vpternlogd per round function, one vprold per rotate. */
#define F(b, c, d) _mm256_ternarylogic_epi32(b, c, d, 0xca)
#define G(b, c, d) _mm256_ternarylogic_epi32(b, c, d, 0xe4)
#define H(b, c, d) _mm256_ternarylogic_epi32(b, c, d, 0x96)
#define I(b, c, d) _mm256_ternarylogic_epi32(b, c, d, 0x39)
#define ROTL(x, s) _mm256_rol_epi32(x, s)
__attribute__((target("avx2,avx512f,avx512vl"))) static void
md5_x8_avx512(uint32_t st[4][LANES], const uint8_t *const p[LANES], size_t nblocks)
{
    MD5_X8_BODY
}
#undef F
#undef G
#undef H
#undef I
#undef ROTL

/* AVX2: the same with and/or/xor and shift pairs. */
#define XOR(x, y) _mm256_xor_si256(x, y)
#define F(b, c, d) XOR(d, _mm256_and_si256(b, XOR(c, d)))
#define G(b, c, d) XOR(c, _mm256_and_si256(d, XOR(b, c)))
#define H(b, c, d) XOR(XOR(b, c), d)
#define I(b, c, d) XOR(c, _mm256_or_si256(b, XOR(d, _mm256_set1_epi32(-1))))
#define ROTL(x, s) _mm256_or_si256(_mm256_slli_epi32(x, s), _mm256_srli_epi32(x, 32 - (s)))
__attribute__((target("avx2"))) static void md5_x8_avx2(uint32_t st[4][LANES],
                                                        const uint8_t *const p[LANES],
                                                        size_t nblocks)
{
    MD5_X8_BODY
}
#undef XOR
#undef F
#undef G
#undef H
#undef I
#undef ROTL
#undef ADD
#undef STEP
#undef STEP_G

/* ------------------------------------------------------------ engine */

static void pick_kernel(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512f"))
        eng.kernel = md5_x8_avx512;
    else if (__builtin_cpu_supports("avx2"))
        eng.kernel = md5_x8_avx2;
}

int rs_md5_lanes(int level)
{
    pthread_once(&eng.once, pick_kernel);
    pthread_mutex_lock(&eng.mu);
    int rc = 0;
    if (eng.nactive)
        rc = -1;
    else if (level == 0)
        eng.kernel = NULL;
    else if (level == 1 && __builtin_cpu_supports("avx2"))
        eng.kernel = md5_x8_avx2;
    else if (level == 2 && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512f"))
        eng.kernel = md5_x8_avx512;
    else
        rc = -1;
    pthread_mutex_unlock(&eng.mu);
    return rc;
}

/* Streams the combiner waits for before it starts: all active ones, up to
 * a full set of lanes. eng.mu held. */
static int lanes_wanted(void)
{
    return eng.nactive < LANES ? eng.nactive : LANES;
}

static void ready_push(struct rs_md5 *s)
{
    s->next = NULL;
    if (eng.ready_tail)
        eng.ready_tail->next = s;
    else
        eng.ready = s;
    eng.ready_tail = s;
    s->on_ready = 1;
    eng.nready++;
}

static struct rs_md5 *ready_pop(void)
{
    struct rs_md5 *s = eng.ready;
    if (s) {
        eng.ready = s->next;
        if (!eng.ready)
            eng.ready_tail = NULL;
        s->on_ready = 0;
        eng.nready--;
    }
    return s;
}

static void ready_remove(struct rs_md5 *s)
{
    struct rs_md5 **pp = &eng.ready, *prev = NULL;
    while (*pp && *pp != s) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = s->next;
    if (eng.ready_tail == s)
        eng.ready_tail = prev;
    s->on_ready = 0;
    eng.nready--;
}

/* Whether self's owner must still wait: more than maxq segments queued, or
 * self still in a lane when it wants none queued. eng.mu held. */
static int must_wait(const struct rs_md5 *self, unsigned maxq)
{
    return self && (self->nq > maxq || (maxq == 0 && self->in_lane));
}

/* Hashes queued segments of every ready stream, LANES at a time, until self
 * has at most maxq queued (self may be NULL) and fewer streams have work
 * than lanes_wanted(). Called and returns with eng.mu held and busy = 0;
 * drops the lock around each kernel call. */
static void combine(struct rs_md5 *self, unsigned maxq)
{
    struct rs_md5 *lane[LANES] = {0};
    uint32_t st[4][LANES];
    const uint8_t *p[LANES];

    eng.busy = 1;
    for (;;) {
        int nlane = 0;
        for (int j = 0; j < LANES; j++) {
            if (!lane[j] && (lane[j] = ready_pop()) != NULL)
                lane[j]->in_lane = 1;
            nlane += lane[j] != NULL;
        }
        if (nlane == 0)
            break;
        if (!must_wait(self, maxq) && nlane + eng.nready < lanes_wanted())
            break;
        size_t nb = ROUND_MAX;
        for (int j = 0; j < LANES; j++) {
            struct rs_md5 *s = lane[j];
            p[j] = NULL;
            if (!s)
                continue;
            size_t left = (s->seglen[s->qhead] - s->qoff) / 64;
            if (left < nb)
                nb = left;
            p[j] = s->ring + (size_t)s->qhead * SEG + s->qoff;
            for (int i = 0; i < 4; i++)
                st[i][j] = s->h[i];
        }
        pthread_mutex_unlock(&eng.mu);
        eng.kernel(st, p, nb);
        pthread_mutex_lock(&eng.mu);
        int woke = 0;
        for (int j = 0; j < LANES; j++) {
            struct rs_md5 *s = lane[j];
            if (!s)
                continue;
            for (int i = 0; i < 4; i++)
                s->h[i] = st[i][j];
            s->qoff += nb * 64;
            if (s->qoff == s->seglen[s->qhead]) {
                s->qoff = 0;
                s->qhead = (s->qhead + 1) % NSEG;
                s->nq--;
                woke = 1;
            }
            if (s->nq == 0 || s->cancel) {
                s->in_lane = 0;
                lane[j] = NULL;
                woke = 1;
            }
        }
        if (woke)
            pthread_cond_broadcast(&eng.cv);
    }
    /* Streams left in lanes go back to the front of the ready list. */
    for (int j = LANES - 1; j >= 0; j--) {
        struct rs_md5 *s = lane[j];
        if (!s)
            continue;
        s->in_lane = 0;
        s->next = eng.ready;
        eng.ready = s;
        if (!eng.ready_tail)
            eng.ready_tail = s;
        s->on_ready = 1;
        eng.nready++;
    }
    eng.busy = 0;
    pthread_cond_broadcast(&eng.cv);
}

/* Waits (combining when nobody else does) until s has at most maxq queued
 * segments, and is out of any lane if maxq is 0. eng.mu held. */
static void wait_queue(struct rs_md5 *s, unsigned maxq)
{
    while (must_wait(s, maxq)) {
        if (!eng.busy) {
            combine(s, maxq);
        } else if (!s->in_lane && s->nq > 0) {
            /* The combiner is busy with other streams: rather than idle,
             * hash the oldest own segment alone (one lane). */
            if (s->on_ready)
                ready_remove(s);
            s->in_lane = 1;
            uint32_t st[4][LANES];
            const uint8_t *p[LANES] = {s->ring + (size_t)s->qhead * SEG + s->qoff};
            size_t nb = (s->seglen[s->qhead] - s->qoff) / 64;
            for (int i = 0; i < 4; i++)
                st[i][0] = s->h[i];
            pthread_mutex_unlock(&eng.mu);
            eng.kernel(st, p, nb);
            pthread_mutex_lock(&eng.mu);
            for (int i = 0; i < 4; i++)
                s->h[i] = st[i][0];
            s->qoff = 0;
            s->qhead = (s->qhead + 1) % NSEG;
            s->nq--;
            s->in_lane = 0;
            if (s->nq > 0)
                ready_push(s);
        } else {
            pthread_cond_wait(&eng.cv, &eng.mu);
        }
    }
}

/* Queues the owner's current segment (its whole 64-byte blocks) and moves
 * to the next one, waiting if the ring is full. */
static void queue_segment(struct rs_md5 *s, size_t len)
{
    pthread_mutex_lock(&eng.mu);
    s->seglen[s->wseg] = len;
    s->nq++;
    if (!s->in_lane && !s->on_ready)
        ready_push(s);
    s->wseg = (s->wseg + 1) % NSEG;
    s->fill = 0;
    if (s->nq == NSEG)
        wait_queue(s, NSEG - 1); /* the next segment to fill is the oldest queued one */
    else if (!eng.busy && eng.nready >= lanes_wanted())
        combine(NULL, 0);
    pthread_mutex_unlock(&eng.mu);
}

rs_md5_t *rs_md5_new(void)
{
    pthread_once(&eng.once, pick_kernel);
    struct rs_md5 *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->h[0] = 0x67452301;
    s->h[1] = 0xefcdab89;
    s->h[2] = 0x98badcfe;
    s->h[3] = 0x10325476;
    return s;
}

/* Solo mode: tops up the partial block in tail from p[0, n) and hashes it
 * once full. Returns the bytes it took; s->ntail is 0 when it was hashed. */
static size_t tail_fill(struct rs_md5 *s, const uint8_t *p, size_t n)
{
    size_t c = 64 - s->ntail < n ? 64 - s->ntail : n;
    memcpy(s->tail + s->ntail, p, c);
    s->ntail += c;
    if (s->ntail == 64) {
        md5_blocks_scalar(s->h, s->tail, 1);
        s->ntail = 0;
    }
    return c;
}

/* Solo mode: hashes on the calling thread, a partial block kept in tail. */
static void solo_update(struct rs_md5 *s, const uint8_t *p, size_t n)
{
    if (s->ntail) {
        size_t c = tail_fill(s, p, n);
        p += c;
        n -= c;
        if (s->ntail)
            return;
    }
    md5_blocks_scalar(s->h, p, n / 64);
    p += n / 64 * 64;
    n %= 64;
    memcpy(s->tail, p, n);
    s->ntail = n;
}

/* solo_update that also passes the bytes, in order, to each: whole blocks
 * one at a time right after MD5 compressed them, so that a second hash's
 * instructions fill the gaps of MD5's dependency chain (SHA-256 of 4 KiB
 * beside MD5: 6.4 us instead of 7.7 us one after the other). */
static void solo_update_each(struct rs_md5 *s, const uint8_t *p, size_t n,
                             void (*each)(void *arg, const void *p, size_t n), void *arg)
{
    if (s->ntail) {
        size_t c = tail_fill(s, p, n);
        each(arg, p, c);
        p += c;
        n -= c;
        if (s->ntail)
            return;
    }
    for (; n >= 64; p += 64, n -= 64) {
        md5_blocks_scalar(s->h, p, 1);
        each(arg, p, 64);
    }
    memcpy(s->tail, p, n);
    s->ntail = n;
    if (n)
        each(arg, p, n);
}

/* Moves s into multi-buffer mode, its partial block starting the ring; it
 * stays solo when MAX_MULTI streams are in already (bounds the memory) or
 * on OOM. */
static void go_multi(struct rs_md5 *s)
{
    void *mem;
    pthread_mutex_lock(&eng.mu);
    int room = eng.nactive < MAX_MULTI;
    eng.nactive += room;
    pthread_mutex_unlock(&eng.mu);
    if (room && posix_memalign(&mem, 64, (size_t)NSEG * SEG) == 0) {
        s->ring = mem;
        memcpy(s->ring, s->tail, s->ntail);
        s->fill = s->ntail;
        s->ntail = 0;
        return;
    }
    if (room) { /* out of memory */
        pthread_mutex_lock(&eng.mu);
        eng.nactive--;
        pthread_mutex_unlock(&eng.mu);
    }
    s->solo = 1;
}

/* Whether a stream that has had len bytes in all hashes on its own thread
 * (no lane kernel, refused multi-buffer mode, or still short). */
static int stays_solo(const struct rs_md5 *s, uint64_t len)
{
    return !eng.kernel || s->solo || len <= SOLO_BYTES;
}

void rs_md5_update(rs_md5_t *s, const void *p, size_t n)
{
    const uint8_t *q = p;

    s->len += n;
    if (!s->ring) {
        if (stays_solo(s, s->len)) {
            solo_update(s, q, n);
            return;
        }
        go_multi(s);
        if (!s->ring) {
            solo_update(s, q, n);
            return;
        }
    }
    while (n > 0) {
        size_t c = SEG - s->fill < n ? SEG - s->fill : n;
        memcpy(s->ring + (size_t)s->wseg * SEG + s->fill, q, c);
        s->fill += c;
        q += c;
        n -= c;
        if (s->fill == SEG)
            queue_segment(s, SEG);
    }
}

void rs_md5_update_each(rs_md5_t *s, const void *p, size_t n,
                        void (*each)(void *arg, const void *p, size_t n), void *arg)
{
    if (!s->ring && stays_solo(s, s->len + n)) {
        s->len += n;
        solo_update_each(s, p, n, each, arg);
        return;
    }
    rs_md5_update(s, p, n); /* hashed in lanes, or about to be */
    each(arg, p, n);
}

/* Leaves multi-buffer mode: every queued segment hashed (or dropped when
 * cancel), the stream out of the engine, the bytes not yet queued back in
 * solo form (tail). */
static void leave_multi(struct rs_md5 *s, int cancel)
{
    pthread_mutex_lock(&eng.mu);
    if (cancel) {
        s->cancel = 1;
        if (s->on_ready)
            ready_remove(s);
        while (s->in_lane)
            pthread_cond_wait(&eng.cv, &eng.mu);
    } else {
        wait_queue(s, 0);
    }
    eng.nactive--;
    /* Fewer streams may now be enough for a waiting set: let them look. */
    if (!eng.busy && eng.nready && eng.nready >= lanes_wanted())
        combine(NULL, 0);
    pthread_mutex_unlock(&eng.mu);
}

void rs_md5_final(rs_md5_t *s, uint8_t out[16])
{
    if (s->ring) {
        /* Earlier bytes came in whole blocks, so fill % 64 is the tail. */
        const uint8_t *seg = s->ring + (size_t)s->wseg * SEG;
        size_t whole = s->fill / 64 * 64, rem = s->fill - whole;
        if (whole)
            queue_segment(s, whole); /* leaves the partial block where it is */
        leave_multi(s, 0);
        memcpy(s->tail, seg + whole, rem);
        s->ntail = rem;
        free(s->ring);
        s->ring = NULL;
    }
    uint8_t pad[128];
    size_t n = s->ntail, npad = n < 56 ? 64 : 128;
    uint64_t bits = s->len * 8;
    memcpy(pad, s->tail, n);
    pad[n] = 0x80;
    memset(pad + n + 1, 0, npad - n - 1);
    for (int i = 0; i < 8; i++)
        pad[npad - 8 + i] = (uint8_t)(bits >> (8 * i));
    md5_blocks_scalar(s->h, pad, npad / 64);
    for (int i = 0; i < 4; i++) {
        out[4 * i] = (uint8_t)s->h[i];
        out[4 * i + 1] = (uint8_t)(s->h[i] >> 8);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 3] = (uint8_t)(s->h[i] >> 24);
    }
    s->ntail = 0;
}

void rs_md5_free(rs_md5_t *s)
{
    if (!s)
        return;
    if (s->ring) {
        leave_multi(s, 1);
        free(s->ring);
    }
    free(s);
}
