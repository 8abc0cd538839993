/* chunkstore/cs_int.h - internals shared by the chunkstore files: the store
 * struct, decoded segment records (layout.c), placement (placement.c), the
 * shard header and stripe geometry (format.c). Not part of the public API. */
#ifndef CS_INT_H
#define CS_INT_H

#include "chunkstore/cs.h"
#include "erasure/rs.h"

#define CS__MAX_SHARDS (RS_MAX_K + RS_MAX_M)
#define CS__MAX_BLOCK ((uint32_t)64 << 20) /* largest block_size accepted anywhere */
#define CS__MAX_DRIVES 65535               /* drive indexes are u16 in layouts */
#define CS__CRC_LEN 4                      /* per-block CRC32C trailer */

/* A local store. Immutable after cs_store_open_local(), hence thread-safe
 * without locks; readers and writers own all their mutable state. */
struct cs_store {
    char **drives; /* ndrives malloc()ed directory paths */
    int ndrives;
    int k, m;            /* geometry for new segments */
    uint32_t block_size; /* block size for new segments */
    rs_ctx_t *rs;        /* coder for (k, m); shared, immutable */
};

/* ------------------------------------------------------------ layout.c */
/* Record types (first byte of each layout/intent record). A new encoding
 * gets a new type byte, so old layouts stay readable. */
#define CS__REC_SEGMENT 0x01 /* finished segment: part of a layout */
#define CS__REC_INTENT 0x02  /* segment being written: size is 0 */

/* A decoded record. Layout record encoding (little-endian):
 *
 *   OFFSET  SIZE      DESCRIPTION
 *   0       1         type: CS__REC_SEGMENT or CS__REC_INTENT
 *   1       16        segment id
 *   17      8         segment size in bytes (0 in an intent)
 *   25      4         block size in bytes
 *   29      1         k (data shards)
 *   30      1         m (parity shards)
 *   31      2*(k+m)   drive index of shard 0, 1, ..., k+m-1 (u16 each)
 */
struct cs_seg {
    uint8_t type;
    uint8_t id[CS_ID_LEN];
    uint64_t size;
    uint32_t block_size;
    int k, m;
    uint16_t drives[CS__MAX_SHARDS];
};
#define CS__REC_FIXED 31

/* Appends one encoded record. Returns 0 or CM_ENOMEM. */
int cs__rec_encode(cm_buf *b, const struct cs_seg *s);
/* Decodes and validates one record from r (advanced past it). Returns 0,
 * or CM_ECORRUPT on truncation, unknown type, or out-of-range fields. */
int cs__rec_decode(cm_reader *r, struct cs_seg *out);

/* --------------------------------------------------------- placement.c */
/* Chooses n distinct drives out of ndrives for a segment id by rendezvous
 * (highest random weight) hashing: out[i] is the drive of shard i, in
 * decreasing score order. Deterministic. Returns 0 or CM_EINVAL. */
int cs__place(const uint8_t id[CS_ID_LEN], int ndrives, int n, uint16_t *out);
/* The rendezvous score of (id, drive); exposed for tests. */
uint64_t cs__place_score(const uint8_t id[CS_ID_LEN], uint32_t drive);

/* ------------------------------------------------------------ format.c */
/* Shard file header: see format.c and doc/shard-format.md for the table. */
#define CS__HDR_LEN 64
#define CS__HDR_MAGIC "CAIRNSH1"
#define CS__HDR_VERSION 1

struct cs_hdr {
    uint8_t id[CS_ID_LEN];
    int index; /* shard index, 0..k+m-1 */
    int k, m;
    uint32_t block_size;
    uint64_t size; /* segment size in bytes */
};

void cs__hdr_encode(const struct cs_hdr *h, uint8_t out[CS__HDR_LEN]);
/* Returns 0, or CM_ECORRUPT for bad magic, version, CRC or field ranges. */
int cs__hdr_decode(const uint8_t *p, size_t n, struct cs_hdr *out);

/* Stripe geometry. A segment of size bytes is split into stripes of
 * k*block_size bytes; the last stripe may be short (r bytes), and then each
 * of its k+m blocks is ceil(r/k) bytes. In every stripe, data block i holds
 * stripe bytes [i*blen, (i+1)*blen). */
uint64_t cs__nstripes(uint64_t size, int k, uint32_t block_size);
/* Block length of stripe s (s < nstripes). */
uint32_t cs__blen(uint64_t size, int k, uint32_t block_size, uint64_t s);
/* File offset of stripe s's block in every shard file. */
static inline uint64_t cs__stripe_off(uint32_t block_size, uint64_t s)
{
    return CS__HDR_LEN + s * ((uint64_t)block_size + CS__CRC_LEN);
}
/* Expected shard file length for a finished segment. */
uint64_t cs__shard_len(uint64_t size, int k, uint32_t block_size);

/* ----------------------------------------------------- little-endian */
static inline void cs__put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void cs__put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void cs__put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t cs__get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}
static inline uint32_t cs__get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t cs__get64(const uint8_t *p)
{
    return (uint64_t)cs__get32(p) | (uint64_t)cs__get32(p + 4) << 32;
}

/* ------------------------------------------------------------- store.c */
/* Writes "DRIVE/ab/<32 hex id>.<index>[.tmp]" into out (size n). Returns 0,
 * or CM_EINVAL if the drive index is unknown or the path does not fit. */
int cs__shard_path(const cs_store_t *cs, int drive, const uint8_t id[CS_ID_LEN], int index, int tmp,
                   char *out, size_t n);

#endif
