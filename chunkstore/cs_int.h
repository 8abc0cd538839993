/* chunkstore/cs_int.h - internals shared by the chunkstore files: the store
 * struct, decoded segment records (layout.c), placement (placement.c), the
 * shard header and stripe geometry (format.c). Not part of the public API. */
#ifndef CS_INT_H
#define CS_INT_H

#include "chunkstore/cs.h"
#include "erasure/rs.h"

#include <pthread.h>

#define CS__MAX_SHARDS (RS_MAX_K + RS_MAX_M)
#define CS__MAX_BLOCK ((uint32_t)64 << 20) /* largest block_size accepted anywhere */
#define CS__MAX_DRIVES 65535               /* drive indexes are u16 in layouts */
#define CS__CRC_LEN 4                      /* per-block CRC32C trailer */

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

/* ------------------------------------------- store.c: the store and its threads */
/* One unit of work for the store's I/O pool (store.c). Embedded in a
 * caller-owned struct that lives until run_batch() returns. */
struct cs__task {
    struct cs__task *next;         /* pool queue link; guarded by cs__pool.mu */
    struct cs__batch *batch;       /* the caller waiting for it */
    int (*fn)(struct cs__task *t); /* the work: returns 0 or a CM_E* code */
    int rc;                        /* fn's result, valid once batch->left dropped */
};
struct cs__batch {
    int left; /* tasks not finished yet; guarded by cs__pool.mu */
};

/* A fixed set of threads that run blocking syscalls (fdatasync, directory
 * fsync) for many callers at once, so a writer's k+m syncs overlap without
 * creating threads per segment. A caller waiting for its batch runs its own
 * still-queued tasks itself, so progress never depends on the threads. */
#define CS__POOL_MAX 64
struct cs__pool {
    pthread_mutex_t mu;    /* guards everything below and every queued task */
    pthread_cond_t work;   /* signalled: queue not empty, or stop */
    pthread_cond_t done;   /* broadcast: some task finished */
    struct cs__task *head; /* FIFO of tasks not yet started */
    struct cs__task *tail;
    int stop;     /* threads exit once set (queue is empty by then) */
    int nthreads; /* started threads in th[] */
    pthread_t th[CS__POOL_MAX];
};

/* A queued request to rebuild damaged shards of one segment (store.c). */
struct cs__heal_job {
    struct cs__heal_job *next; /* queue link; guarded by cs__healer.mu */
    struct cs_seg seg;         /* segment record (copied from a layout) */
    uint32_t mask;             /* shards known bad (bit i = shard i); the heal finds the rest */
};

/* The background healer: one thread, started on the first job, that
 * rewrites damaged shard files reported by readers. */
#define CS__HEAL_QUEUE_MAX 256 /* jobs beyond this are dropped (the next read re-reports) */
struct cs__healer {
    pthread_mutex_t mu;          /* guards everything below */
    pthread_cond_t work;         /* signalled: job queued, or stop */
    pthread_cond_t idle;         /* broadcast: a job finished */
    struct cs__heal_job *head;   /* FIFO of jobs not started */
    struct cs__heal_job **tailp; /* &last->next, or &head */
    size_t nqueued;
    struct cs__heal_job *active; /* the job being healed, or NULL */
    int stop;                    /* no new jobs; the thread drains the queue and exits */
    int started;                 /* th is running (join at close) */
    pthread_t th;
    uint64_t nhealed, nfailed; /* shards rewritten / jobs given up, since open */
};

/* Segment locks: cs_layout_delete() unlinks a segment's files, and a heal
 * checks the segment still exists and renames its rebuilt files into place,
 * each under the segment's lock, so a heal never resurrects a deleted
 * segment. Striped by segment id. */
#define CS__SEG_LOCKS 64

/* A local store. The geometry, drives and coder are immutable after
 * cs_store_open_local(); the pool, the healer and the segment locks carry
 * their own locks. Readers and writers own all their other mutable state. */
struct cs_store {
    char **drives; /* ndrives malloc()ed directory paths */
    int ndrives;
    int k, m;            /* geometry for new segments */
    uint32_t block_size; /* block size for new segments */
    rs_ctx_t *rs;        /* coder for (k, m); shared, immutable */
    int inited;          /* the locks below are initialised (close destroys them) */
    struct cs__pool pool;
    struct cs__healer heal;
    pthread_mutex_t seg_mu[CS__SEG_LOCKS];
};

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
