/* chunkstore/cs_int.h - internals shared by the chunkstore files: the store
 * struct, decoded segment and manifest records (layout.c), placement
 * (placement.c), the shard header and stripe geometry (format.c), the local
 * backend's paths (be_local.c). The backend interface is cs_backend.h. Not
 * part of the public API. */
#ifndef CS_INT_H
#define CS_INT_H

#include "chunkstore/cs.h"
#include "chunkstore/cs_backend.h"
#include "erasure/rs.h"

#include <pthread.h>

#define CS__MAX_SHARDS (RS_MAX_K + RS_MAX_M)
#define CS__MAX_BLOCK ((uint32_t)64 << 20) /* largest block_size accepted anywhere */
#define CS__MAX_DRIVES 65535               /* drive indexes are u16 in layouts */
#define CS__CRC_LEN 4                      /* per-block CRC32C trailer */
#define CS__BUFS_KEPT 16 /* stripe buffers a store keeps for reuse when writers finish */
#define CS__PAR_APPEND ((uint32_t)64 << 10) /* blocks at least this large: appended in parallel */

/* ------------------------------------------------------------ layout.c */
/* Record types (first byte of each layout/intent record). A new encoding
 * gets a new type byte, so old layouts stay readable. */
#define CS__REC_SEGMENT 0x01  /* finished segment: part of a layout */
#define CS__REC_INTENT 0x02   /* segment being written: size is 0 */
#define CS__REC_MANIFEST 0x03 /* committed manifest blob: part of a layout, no bytes */
#define CS__REC_MINTENT 0x04  /* manifest being written: length and CRC are 0 */

/* A decoded record. Segment and intent records (little-endian):
 *
 *   OFFSET  SIZE      DESCRIPTION
 *   0       1         type: CS__REC_SEGMENT or CS__REC_INTENT
 *   1       16        segment id
 *   17      8         segment size in bytes (0 in an intent)
 *   25      4         block size in bytes
 *   29      1         k (data shards)
 *   30      1         m (parity shards)
 *   31      2*(k+m)   drive index of shard 0, 1, ..., k+m-1 (u16 each)
 *
 * Manifest and manifest-intent records:
 *
 *   OFFSET  SIZE      DESCRIPTION
 *   0       1         type: CS__REC_MANIFEST or CS__REC_MINTENT
 *   1       16        manifest id
 *   17      4         body length in bytes (0 in an intent)
 *   21      4         CRC32C of the body (0 in an intent)
 *   25      1         copies c (1..CS__MAX_SHARDS)
 *   26      2*c       drive index of copy 0, 1, ..., c-1 (u16 each)
 */
struct cs_seg {
    uint8_t type;
    uint8_t id[CS_ID_LEN];
    uint64_t size;       /* segment: size in bytes; manifests: 0 */
    uint32_t block_size; /* segment only */
    int k, m;            /* segment only (0 in manifest records) */
    int ncopies;         /* manifest only: drives[0..ncopies) hold a copy */
    uint32_t body_len;   /* manifest only: body length */
    uint32_t body_crc;   /* manifest only: CRC32C of the body */
    uint16_t drives[CS__MAX_SHARDS];
};
#define CS__REC_FIXED 31
#define CS__MREC_FIXED 26

/* 1 for the record types that name a segment's shards (segment, intent). */
static inline int cs__rec_is_seg(const struct cs_seg *s)
{
    return s->type == CS__REC_SEGMENT || s->type == CS__REC_INTENT;
}
/* Number of drives the record names: k+m shards, or the manifest copies. */
static inline int cs__rec_ndrives(const struct cs_seg *s)
{
    return cs__rec_is_seg(s) ? s->k + s->m : s->ncopies;
}

/* Manifest blob (what blob_put stores; the record names its copies):
 *
 *   OFFSET  SIZE  DESCRIPTION
 *   0       8     magic "CAIRNMF1"
 *   8       16    manifest id
 *   24      4     body length n
 *   28      4     CRC32C of the body
 *   32      4     CRC32C of bytes 0..31
 *   36      n     body
 */
#define CS__MF_MAGIC "CAIRNMF1"
#define CS__MF_HDR 36
#define CS__MF_MAX ((uint32_t)16 << 20) /* largest manifest body accepted */

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

/* A fixed set of threads that run blocking I/O (local: fdatasync and
 * directory fsync of finishing writers; nodes: every shard request of a
 * stripe) for many callers at once, without creating threads per request.
 * A caller waiting for its batch runs its own still-queued tasks itself, so
 * progress never depends on the threads (tasks never wait for a batch). */
#define CS__POOL_MAX 128
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

/* A queued request to rebuild damaged shards of one segment, or missing
 * copies of one manifest (store.c). */
struct cs__heal_job {
    struct cs__heal_job *next; /* queue link; guarded by cs__healer.mu */
    struct cs_seg seg;         /* segment or manifest record (copied from a layout) */
    uint32_t mask;             /* shards/copies known bad (bit i); the heal finds the rest */
    int deferred;              /* waits for a drive that is down: run at due_ns or new epoch */
    uint64_t due_ns;           /* deferred: cm_mono_ns() of the next try */
    uint64_t epoch;            /* deferred: backend epoch when it was deferred */
};

/* One heal in progress (by the heal thread or a caller of cs_layout_check):
 * two heals of the same id never run at once. On the healer's stack. */
struct cs__heal_active {
    struct cs__heal_active *next; /* guarded by cs__healer.mu */
    uint8_t id[CS_ID_LEN];
    uint32_t mask; /* what it was asked to heal */
};

/* The background healer: one thread, started on the first job, that
 * rewrites damaged shards reported by readers, degraded writes and checks.
 * A job whose target drive is down is deferred (retried every
 * CS__HEAL_RETRY_NS or when the backend's epoch changes), not dropped. */
#define CS__HEAL_QUEUE_MAX 4096 /* jobs beyond this are dropped (a read or heal walk re-reports) */
#define CS__HEAL_RETRY_NS ((uint64_t)1000000000)
struct cs__healer {
    pthread_mutex_t mu;            /* guards everything below */
    pthread_cond_t work;           /* signalled: job queued, or stop (CLOCK_MONOTONIC) */
    pthread_cond_t idle;           /* broadcast: a job finished or was cancelled */
    struct cs__heal_job *head;     /* FIFO of jobs not started */
    struct cs__heal_job **tailp;   /* &last->next, or &head */
    size_t nqueued;                /* jobs in the queue, deferred ones included */
    struct cs__heal_active *active; /* heals running now */
    int nwaiting;                  /* heals waiting for another heal of the same id */
    int stop;                      /* no new jobs; the thread drains ready jobs and exits */
    int started;                   /* th is running (join at close) */
    pthread_t th;
    uint64_t nhealed, nfailed; /* shards rewritten / jobs given up, since open */
    uint64_t full_logged_ns;   /* when "heal queue full" was last logged (rate limit) */
};

/* Segment locks: cs_layout_delete() removes a segment's shards (or a
 * manifest's copies), and a heal checks the segment still exists and
 * commits its rebuilt shards, each under the segment's lock, so a heal
 * never resurrects a deleted segment. Striped by segment id. */
#define CS__SEG_LOCKS 64

/* A store: the erasure engine over one backend. The geometry, backend and
 * coder are immutable after open; the pool, the healer and the segment
 * locks carry their own locks. Readers and writers own all their other
 * mutable state. */
struct cs_store {
    struct cs__be *be; /* owned; closed by cs_store_close() */
    int ndrives;       /* be->ops->ndrives(be) */
    int parallel;      /* be->ops->parallel: shard I/O of a request runs as pool batches */
    int k, m;          /* geometry for new segments */
    uint32_t block_size; /* block size for new segments */
    rs_ctx_t *rs;        /* coder for (k, m); shared, immutable */
    int inited;          /* the locks below are initialised (close destroys them) */
    struct cs__pool pool;
    struct cs__healer heal;
    pthread_mutex_t seg_mu[CS__SEG_LOCKS];
    size_t slot;     /* bytes per block in a writer's stripe buffer: see cs__slot_len() */
    cm_bufkeep bufs; /* stripe buffers kept for reuse: (k+m)*slot, CS__SLOT_ALIGN-aligned */
};

/* Opens the engine over backend be with geometry (k, m, block_size); takes
 * ownership of be (closed on failure too). cs_store_open_local() and
 * cs_store_open_nodes() are this over be_local and be_node; tests use it
 * over a fault-injecting wrapper. Returns 0 and *out, or a CM_E* code. */
int cs__store_open_be(struct cs__be *be, int k, int m, size_t block_size, cs_store_t **out);

/* Appends one encoded record (any type). Returns 0 or CM_ENOMEM. */
int cs__rec_encode(cm_buf *b, const struct cs_seg *s);
/* Decodes and validates one record from r (advanced past it). Returns 0,
 * or CM_ECORRUPT on truncation, unknown type, or out-of-range fields. */
int cs__rec_decode(cm_reader *r, struct cs_seg *out);
/* Validates a layout (segment and manifest records only) and returns the
 * number of segment records and their total size. CM_ECORRUPT otherwise. */
int cs__layout_scan(cm_slice layout, uint64_t *size, size_t *nsegs);

/* --------------------------------------------------------- placement.c */
/* Chooses n distinct drives out of ndrives for a segment id by rendezvous
 * (highest random weight) hashing: out[i] is the drive of shard i, in
 * decreasing score order. Deterministic. Returns 0 or CM_EINVAL. */
int cs__place(const uint8_t id[CS_ID_LEN], int ndrives, int n, uint16_t *out);
/* Like cs__place, but drives with up[d] == 0 come last: out holds the best
 * n up drives in rendezvous order and, if fewer than n are up, then the
 * best down drives (in score order). up is ndrives flags; NULL = all up.
 * Returns 0 or CM_EINVAL. */
int cs__place_up(const uint8_t id[CS_ID_LEN], int ndrives, int n, const uint8_t *up,
                 uint16_t *out);
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

/* A writer's stripe buffer (store.c) holds the k+m blocks of one stripe in
 * k+m slots of cs__slot_len(block_size) bytes each, the first at the
 * buffer's start (CS__SLOT_ALIGN-aligned). In the slot of block i of stripe
 * s, with phase = cs__stripe_off(block_size, s) % CS__SLOT_ALIGN:
 *
 *   OFFSET IN SLOT                  SIZE                 DESCRIPTION
 *   0                               CS__APPEND_HEADROOM  scratch for w_append (CS__APPEND_ROOM)
 *   CS__APPEND_HEADROOM             phase                unused
 *   CS__APPEND_HEADROOM+phase       blen                 the block (data or parity)
 *   CS__APPEND_HEADROOM+phase+blen  4                    its CRC32C (written at append)
 *   ...                             (rest)               unused, up to a multiple of 4096
 *
 * So the block sits at an address congruent to its file offset modulo
 * 4096, with the headroom before it and its CRC right after it, and goes to
 * the backend as one iovec that be_local writes with O_DIRECT in place.
 * Blocks are therefore not 64-byte aligned (ISA-L and CRC32C do not need
 * it). Nothing here is on disk: the shard format is the same either way. */
#define CS__SLOT_ALIGN ((size_t)4096)
static inline size_t cs__slot_len(uint32_t block_size)
{
    return (CS__APPEND_HEADROOM + (CS__SLOT_ALIGN - 1) + block_size + CS__CRC_LEN +
            CS__SLOT_ALIGN - 1) &
           ~(CS__SLOT_ALIGN - 1);
}
/* Offset in its slot of every block of stripe s (the table above). */
static inline size_t cs__slot_blk(uint32_t block_size, uint64_t s)
{
    return CS__APPEND_HEADROOM + (size_t)(cs__stripe_off(block_size, s) % CS__SLOT_ALIGN);
}

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
/* Writes "DRIVE/ab/<32 hex id>.<index>[.tmp]" into out (size n) for a store
 * over the local backend (for tests and tools). Returns 0, or CM_EINVAL if
 * the store is not local, the drive index is unknown or the path does not
 * fit. */
int cs__shard_path(const cs_store_t *cs, int drive, const uint8_t id[CS_ID_LEN], int index, int tmp,
                   char *out, size_t n);
/* Same for a blob: "DRIVE/meta/ab/<32 hex id>". */
int cs__blob_path(const cs_store_t *cs, int drive, const uint8_t id[CS_ID_LEN], char *out,
                  size_t n);

/* ---------------------------------------------------------- be_local.c */
/* The paths of the local backend (CM_EINVAL if be is not be_local). */
int cs__be_local_shard_path(const struct cs__be *be, int drive, const uint8_t id[CS_ID_LEN],
                            int index, int tmp, char *out, size_t n);
int cs__be_local_blob_path(const struct cs__be *be, int drive, const uint8_t id[CS_ID_LEN],
                           char *out, size_t n);
/* Bytes be_local copied into its direct-I/O stages (appends it could not
 * write in place: see be_local.c) by write handles closed so far; 0 if be
 * is not be_local. For tests. Thread-safe. */
uint64_t cs__be_local_staged(struct cs__be *be);
/* TEST SEAM: the pwrite() of every direct write (be_local.c
 * lw_pwrite_direct: a full stage, or the aligned part of an in-place
 * append), pwrite itself unless a test changes it. No file system a test
 * can reach makes an aligned O_DIRECT write return EINVAL or a short count,
 * so test_cs_store.c points this at a function that does, to reach the
 * buffered fallback. Set only while no writer is open. One indirect call per
 * direct write. */
extern ssize_t (*cs__seam_direct_pwrite)(int fd, const void *p, size_t n, off_t off);

#endif
