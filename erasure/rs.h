/* erasure/rs.h - Reed-Solomon coding over ISA-L, the checksums built on
 * ISA-L's CRC kernels, and multi-stream MD5 (md5.c). Sees buffers only: no
 * files, no metadata. rs.c is the only file in the project that includes
 * ISA-L headers. */
#ifndef RS_H
#define RS_H

#include <stddef.h>
#include <stdint.h>

#define RS_MAX_K 16
#define RS_MAX_M 8

typedef struct rs_ctx rs_ctx_t;

/* Creates a coder for k data and m parity blocks (1<=k<=RS_MAX_K,
 * 0<=m<=RS_MAX_M). Returns NULL on bad arguments or OOM. Free with
 * rs_ctx_free(). A ctx is immutable after creation: thread-safe. */
rs_ctx_t *rs_ctx_new(int k, int m);
void rs_ctx_free(rs_ctx_t *ctx); /* NULL is a no-op */
int rs_ctx_k(const rs_ctx_t *ctx);
int rs_ctx_m(const rs_ctx_t *ctx);

/* Computes m parity blocks of len bytes from k data blocks of len bytes.
 * data[k] are read; parity[m] are written. Returns 0. Thread-safe. */
int rs_encode(const rs_ctx_t *ctx, size_t len, uint8_t *const *data, uint8_t *const *parity);

/* Rebuilds lost blocks in place. blocks[k+m] point at len-byte buffers
 * (data blocks first, then parity); erased[] lists the nerased indexes
 * whose contents are lost and must be rebuilt (0 <= nerased <= m).
 * Returns 0, or CM_EINVAL if nerased > m. Thread-safe. */
int rs_decode(const rs_ctx_t *ctx, size_t len, uint8_t *const *blocks, const int *erased,
              int nerased);

/* CRC32C (Castagnoli, iSCSI), as used for block checksums and for
 * x-amz-checksum-crc32c. Pass 0 as crc to start; feed the result back to
 * continue. Result is the standard CRC (final xor applied). */
uint32_t rs_crc32c(uint32_t crc, const void *p, size_t n);
/* CRC32 (IEEE 802.3, gzip), for x-amz-checksum-crc32. Same chaining rule. */
uint32_t rs_crc32(uint32_t crc, const void *p, size_t n);
/* CRC-64/NVME (poly 0xad93d23594c93659, reflected, init/xorout ~0), for
 * x-amz-checksum-crc64nvme. Same chaining rule. */
uint64_t rs_crc64nvme(uint64_t crc, const void *p, size_t n);

/* MD5 (RFC 1321), for ETags (md5.c). Concurrent streams share one engine
 * that hashes up to 8 of them at once in SIMD lanes (AVX-512VL or AVX2,
 * picked at run time): past its first 64 KiB a stream copies its bytes into
 * a 2 MiB ring of its own (at most 16 streams at once; more are hashed
 * alone), and whichever thread finds a segment queued by every such stream
 * (or needs its own ring space back, or finishes) hashes all queued
 * segments together. Without AVX2 every stream is hashed on its own thread.
 * One rs_md5_t is used by one thread at a time; different ones from any
 * threads. Not for secrets (bytes sit in the ring until freed). */
typedef struct rs_md5 rs_md5_t;

/* A new running MD5; NULL on OOM. Free with rs_md5_free(). */
rs_md5_t *rs_md5_new(void);
/* Adds n bytes. May block while other streams' segments are hashed. */
void rs_md5_update(rs_md5_t *c, const void *p, size_t n);
/* rs_md5_update, and the same bytes in the same order to each (a second
 * hash), interleaved a 64-byte block at a time while c hashes alone on this
 * thread: two dependency chains run side by side in one core. */
void rs_md5_update_each(rs_md5_t *c, const void *p, size_t n,
                        void (*each)(void *arg, const void *p, size_t n), void *arg);
/* Writes the digest of everything added to out. c may only be freed after. */
void rs_md5_final(rs_md5_t *c, uint8_t out[16]);
/* Frees c, final or not. NULL is a no-op. */
void rs_md5_free(rs_md5_t *c);
/* Test hook: lane kernel for streams created from now on: 2 AVX-512VL,
 * 1 AVX2, 0 none (every stream alone, scalar). Returns 0, or -1 if the
 * CPU lacks it or a stream is active. */
int rs_md5_lanes(int level);

#endif
