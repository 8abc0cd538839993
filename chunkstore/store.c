/* chunkstore/store.c - the erasure engine over a shard-store backend
 * (cs_backend.h): the I/O pool, the segment writer (stripe buffer, encode,
 * appends, parallel commits, degraded writes), the reader (CRC32C verify,
 * rebuild from parity, damage reports), the heal thread and synchronous
 * checks, manifests, delete, recover, list. It makes no file system or
 * network call itself: be_local.c (drive directories) and be_node.c
 * (storage nodes) do the I/O. Encodings live in layout.c and format.c,
 * placement in placement.c. */
#include "chunkstore/cs_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <time.h>

#define CS_ALIGN 64 /* block buffers are 64-byte aligned for ISA-L's SIMD */

static void id_hex(const uint8_t id[CS_ID_LEN], char out[2 * CS_ID_LEN + 1])
{
    cm_hex_encode(id, CS_ID_LEN, out);
}

static int nbits(uint32_t x)
{
    return __builtin_popcount(x);
}

static const char *drive_name(const cs_store_t *cs, int d)
{
    return d < cs->ndrives ? cs->be->ops->drive_name(cs->be, d) : "not in this store";
}

static int drive_up(const cs_store_t *cs, int d)
{
    return d < cs->ndrives && cs->be->ops->drive_up(cs->be, d);
}

/* ------------------------------------------------------------------ pool */

static void *pool_main(void *arg)
{
    struct cs__pool *p = arg;

    pthread_setname_np(pthread_self(), "cs-pool"); /* in top -H, perf, gdb */
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stop)
            pthread_cond_wait(&p->work, &p->mu);
        if (!p->head)
            break; /* stop, and nothing left */
        struct cs__task *t = p->head;
        p->head = t->next;
        if (!p->head)
            p->tail = NULL;
        pthread_mutex_unlock(&p->mu);
        t->rc = t->fn(t);
        pthread_mutex_lock(&p->mu);
        t->batch->left--;
        pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Queues the n tasks of batch *bp on the pool; batch_wait() collects them.
 * Tasks and *bp must stay in place until then. */
static void batch_submit(cs_store_t *cs, struct cs__task **tasks, int n, struct cs__batch *bp)
{
    struct cs__pool *p = &cs->pool;

    bp->left = n;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < n; i++) {
        tasks[i]->batch = bp;
        tasks[i]->next = NULL;
        if (p->tail)
            p->tail->next = tasks[i];
        else
            p->head = tasks[i];
        p->tail = tasks[i];
    }
    if (n > 1)
        pthread_cond_broadcast(&p->work);
    else
        pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
}

/* Waits for a submitted batch, running its still-queued tasks itself.
 * Returns 0 or the first task's (by index) non-zero rc. */
static int batch_wait(cs_store_t *cs, struct cs__task **tasks, int n, struct cs__batch *bp)
{
    struct cs__pool *p = &cs->pool;
    int rc = 0;

    pthread_mutex_lock(&p->mu);
    while (bp->left > 0) {
        struct cs__task *t = NULL, *prev = NULL;
        for (t = p->head; t && t->batch != bp; t = t->next)
            prev = t;
        if (!t) {
            pthread_cond_wait(&p->done, &p->mu);
            continue;
        }
        if (prev)
            prev->next = t->next;
        else
            p->head = t->next;
        if (p->tail == t)
            p->tail = prev;
        pthread_mutex_unlock(&p->mu);
        t->rc = t->fn(t);
        pthread_mutex_lock(&p->mu);
        bp->left--;
    }
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < n && rc == 0; i++)
        rc = tasks[i]->rc;
    return rc;
}

/* Runs the n tasks on the pool and returns when all are done: 0, or the
 * first task's (by index) non-zero rc; every task's own result is in its
 * rc. The caller runs any of its tasks no thread has picked up yet, so a
 * busy pool delays a batch but never deadlocks it. */
static int run_batch(cs_store_t *cs, struct cs__task **tasks, int n)
{
    struct cs__batch b;

    batch_submit(cs, tasks, n, &b);
    return batch_wait(cs, tasks, n, &b);
}

/* Runs n independent shard requests: all at once on the pool for a
 * parallel backend (nodes), one after another on the calling thread
 * otherwise (local drives, where a loop is as fast). Results in t->rc. */
static void run_io(cs_store_t *cs, struct cs__task **tasks, int n)
{
    if (cs->parallel && n > 1) {
        run_batch(cs, tasks, n);
        return;
    }
    for (int i = 0; i < n; i++)
        tasks[i]->rc = tasks[i]->fn(tasks[i]);
}

/* ------------------------------------------------------------------ store */

static void heal_stop(cs_store_t *cs);

static int geometry_ok(int k, int m, size_t block_size)
{
    return k >= 1 && k <= RS_MAX_K && m >= 0 && m <= RS_MAX_M && block_size >= 1 &&
           block_size <= CS__MAX_BLOCK;
}

int cs__store_open_be(struct cs__be *be, int k, int m, size_t block_size, cs_store_t **out)
{
    pthread_condattr_t ca;
    cs_store_t *cs;
    int rc, nthreads;

    if (!geometry_ok(k, m, block_size)) {
        be->ops->close(be);
        return CM_EINVAL;
    }
    cs = calloc(1, sizeof(*cs));
    if (!cs) {
        be->ops->close(be);
        return CM_ENOMEM;
    }
    cs->be = be;
    cs->ndrives = be->ops->ndrives(be);
    cs->parallel = be->ops->parallel;
    cs->k = k;
    cs->m = m;
    cs->block_size = (uint32_t)block_size;
    pthread_mutex_init(&cs->pool.mu, NULL);
    pthread_cond_init(&cs->pool.work, NULL);
    pthread_cond_init(&cs->pool.done, NULL);
    pthread_mutex_init(&cs->heal.mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* deferred heals wait on cm_mono_ns() */
    pthread_cond_init(&cs->heal.work, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&cs->heal.idle, NULL);
    cs->heal.tailp = &cs->heal.head;
    for (int i = 0; i < CS__SEG_LOCKS; i++)
        pthread_mutex_init(&cs->seg_mu[i], NULL);
    cs->inited = 1;
    rc = CM_ENOMEM;
    cs->slot = cs__slot_len((uint32_t)block_size);
    if (cm_bufkeep_init(&cs->bufs, (size_t)(k + m) * cs->slot, CS__SLOT_ALIGN, CS__BUFS_KEPT) != 0)
        goto out;
    rc = CM_EINVAL;
    if (cs->ndrives < 1 || cs->ndrives > CS__MAX_DRIVES || k + m > cs->ndrives)
        goto out;
    rc = CM_ENOMEM;
    cs->rs = rs_ctx_new(k, m);
    if (!cs->rs)
        goto out;
    /* Local: each finishing writer queues k+m commits; enough threads for
     * a few writers' worth at once. Nodes: every stripe of every request is
     * a batch of network round trips, so many more threads (they mostly
     * wait). Fewer (if creation fails) only costs speed. */
    if (cs->parallel)
        nthreads = 8 * (k + m) > 64 ? 8 * (k + m) : 64;
    else
        nthreads = 4 * (k + m) < 64 ? 4 * (k + m) : 64;
    if (nthreads > CS__POOL_MAX)
        nthreads = CS__POOL_MAX;
    for (int i = 0; i < nthreads; i++) {
        if (pthread_create(&cs->pool.th[i], NULL, pool_main, &cs->pool) != 0)
            break;
        cs->pool.nthreads++;
    }
    *out = cs;
    return 0;
out:
    cs_store_close(cs);
    return rc;
}

int cs_store_open_local(const char *const *drives, int ndrives, int k, int m, size_t block_size,
                        cs_store_t **out)
{
    struct cs__be *be;
    int rc;

    if (!drives || ndrives < 1 || ndrives > CS__MAX_DRIVES || !geometry_ok(k, m, block_size) ||
        k + m > ndrives)
        return CM_EINVAL;
    if ((rc = cs__be_local_open(drives, ndrives, &be)) != 0)
        return rc;
    return cs__store_open_be(be, k, m, block_size, out);
}

int cs_store_open_nodes(const char *const *urls, int nurls, const char *secret, int k, int m,
                        size_t block_size, cs_store_t **out)
{
    struct cs__be *be;
    int rc;

    if (!urls || !secret || nurls < 1 || nurls > CS__MAX_DRIVES ||
        !geometry_ok(k, m, block_size) || k + m > nurls)
        return CM_EINVAL;
    if ((rc = cs__be_node_open(urls, nurls, secret, &be)) != 0)
        return rc;
    return cs__store_open_be(be, k, m, block_size, out);
}

void cs_store_close(cs_store_t *cs)
{
    if (!cs)
        return;
    if (cs->inited) {
        heal_stop(cs);
        pthread_mutex_lock(&cs->pool.mu);
        cs->pool.stop = 1;
        pthread_cond_broadcast(&cs->pool.work);
        pthread_mutex_unlock(&cs->pool.mu);
        for (int i = 0; i < cs->pool.nthreads; i++)
            pthread_join(cs->pool.th[i], NULL);
        if (cs->heal.nqueued > 0)
            cm_log(CM_LOG_INFO, "chunkstore: %zu queued heal(s) dropped at close (waiting for a "
                                "drive, or over nodes); the next heal walk finds them",
                   cs->heal.nqueued);
        while (cs->heal.head) {
            struct cs__heal_job *j = cs->heal.head;
            cs->heal.head = j->next;
            free(j);
        }
        pthread_mutex_destroy(&cs->pool.mu);
        pthread_cond_destroy(&cs->pool.work);
        pthread_cond_destroy(&cs->pool.done);
        pthread_mutex_destroy(&cs->heal.mu);
        pthread_cond_destroy(&cs->heal.work);
        pthread_cond_destroy(&cs->heal.idle);
        for (int i = 0; i < CS__SEG_LOCKS; i++)
            pthread_mutex_destroy(&cs->seg_mu[i]);
        cm_bufkeep_destroy(&cs->bufs);
    }
    if (cs->be)
        cs->be->ops->close(cs->be);
    rs_ctx_free(cs->rs);
    free(cs);
}

int cs_store_distributed(const cs_store_t *cs)
{
    return cs->parallel != 0;
}

int cs_store_ndrives(const cs_store_t *cs)
{
    return cs->ndrives;
}

const char *cs_store_drive_name(const cs_store_t *cs, int d)
{
    return d >= 0 && d < cs->ndrives ? cs->be->ops->drive_name(cs->be, d) : NULL;
}

int cs_store_drive_up(const cs_store_t *cs, int d)
{
    return d >= 0 && drive_up(cs, d);
}

uint64_t cs_store_epoch(const cs_store_t *cs)
{
    return cs->be->ops->epoch(cs->be);
}

int cs__shard_path(const cs_store_t *cs, int drive, const uint8_t id[CS_ID_LEN], int index, int tmp,
                   char *out, size_t n)
{
    return cs__be_local_shard_path(cs->be, drive, id, index, tmp, out, n);
}

int cs__blob_path(const cs_store_t *cs, int drive, const uint8_t id[CS_ID_LEN], char *out,
                  size_t n)
{
    return cs__be_local_blob_path(cs->be, drive, id, out, n);
}

static pthread_mutex_t *seg_lock(cs_store_t *cs, const uint8_t id[CS_ID_LEN])
{
    return &cs->seg_mu[(id[0] | (unsigned)id[1] << 8) % CS__SEG_LOCKS];
}

/* Chooses n drives for id (up drives first, see cs__place_up) into out;
 * *down gets the mask of positions placed on drives that are down. */
static int place(cs_store_t *cs, const uint8_t id[CS_ID_LEN], int n, uint16_t *out,
                 uint32_t *down)
{
    uint8_t *up = malloc((size_t)cs->ndrives);
    int all = 1, rc;

    if (!up)
        return CM_ENOMEM;
    for (int d = 0; d < cs->ndrives; d++) {
        up[d] = cs->be->ops->drive_up(cs->be, d) != 0;
        all &= up[d];
    }
    rc = cs__place_up(id, cs->ndrives, n, all ? NULL : up, out);
    *down = 0;
    for (int i = 0; rc == 0 && i < n; i++)
        if (!up[out[i]])
            *down |= 1u << i;
    free(up);
    return rc;
}

/* Returns NULL if shard i's header bytes hb match record s, else why not. */
static const char *hdr_mismatch(const struct cs_seg *s, int i, const uint8_t *hb)
{
    struct cs_hdr h;

    if (cs__hdr_decode(hb, CS__HDR_LEN, &h) != 0)
        return "bad shard header";
    if (memcmp(h.id, s->id, CS_ID_LEN) != 0 || h.index != i || h.k != s->k || h.m != s->m ||
        h.block_size != s->block_size || h.size != s->size)
        return "shard header does not match the layout";
    return NULL;
}

/* Opens shard i of s for reading and checks its header against the record
 * (local: free after the open; node: one request). Returns 0 and *out, or
 * CM_ENOTFOUND, CM_EUNAVAIL, CM_ECORRUPT (bad or mismatched header), ... */
static int open_checked(cs_store_t *cs, const struct cs_seg *s, int i, void **out)
{
    const struct cs__be_ops *ops = cs->be->ops;
    uint8_t hb[CS__HDR_LEN];
    void *h;
    int rc;

    if ((rc = ops->r_open(cs->be, s->drives[i], s->id, i, &h)) != 0)
        return rc;
    if ((rc = ops->r_header(h, hb)) == 0 && hdr_mismatch(s, i, hb))
        rc = CM_ECORRUPT;
    if (rc != 0) {
        ops->r_close(h);
        return rc;
    }
    *out = h;
    return 0;
}

/* ----------------------------------------------------------------- writer */

/* One block + CRC32C appended to one shard, as a pool task. */
struct append_task {
    struct cs__task t; /* first: the pool sees only this */
    void *h;
    const struct cs__be_ops *ops;
    uint8_t *blk;  /* room: in a stripe buffer slot (cs_int.h); else read only */
    int room;      /* blk is in a slot: CRC goes after it, CS__APPEND_ROOM */
    uint32_t blen;
    uint64_t off;
};

/* The appends of one stripe in flight while the next stripe fills. */
struct stripe_io {
    struct append_task at[CS__MAX_SHARDS];
    struct cs__task *tasks[CS__MAX_SHARDS];
    int shard[CS__MAX_SHARDS]; /* at[j] appends to shard shard[j] */
    int nt;
    int busy; /* submitted, not yet waited for */
    struct cs__batch b;
};

/* Owned by one caller thread; pool tasks briefly share it, each touching
 * only its own shard's handle. */
struct cs_writer {
    cs_store_t *cs;
    struct cs_seg seg;             /* id, geometry, drives; size counts bytes accepted */
    void *h[CS__MAX_SHARDS];       /* live shards' write handles; NULL before open, once dropped */
    uint32_t dead;                 /* shards dropped: failed, or placed on a drive that was down */
    int dead_rc;                   /* first error that dropped a shard */
    int unavail;                   /* a shard was dropped because its drive was unreachable */
    int need;                      /* live shards needed to go on: k+1 (k when m = 0) */
    int opened;                    /* handles were opened (first stripe or finish) */
    uint8_t *buf;                  /* stripe buffer: k+m slots (cs_int.h), data then parity */
    uint8_t *bufs[2];              /* buf is one of these; [1] from the first stripe in flight */
    struct stripe_io io;           /* the appends of the other buffer's stripe */
    size_t fill;                   /* bytes buffered in the stripe */
    uint64_t nstripes;             /* stripes written so far */
    int failed;                    /* sticky error: only cs_writer_abort() remains */
    int placed;                    /* seg.id and seg.drives are chosen */
    char idhex[2 * CS_ID_LEN + 1]; /* for log lines */
};

static void heal_enqueue(cs_store_t *cs, const struct cs_seg *s, uint32_t mask);

/* Drops shard i from the writer after an error: no more appends to it;
 * what it wrote is removed (best effort: a heal replaces it anyway). */
static void drop_shard(cs_writer_t *w, int i, int rc, const char *what)
{
    int d = w->seg.drives[i];

    cm_log(CM_LOG_ERROR,
           "chunkstore: segment %s shard %d on drive %d (%s): %s failed: %s; going on without it",
           w->idhex, i, d, drive_name(w->cs, d), what, cm_strerror(rc));
    if (w->h[i]) {
        w->cs->be->ops->w_close(w->h[i], 1);
        w->h[i] = NULL;
    }
    w->dead |= 1u << i;
    if (!w->dead_rc)
        w->dead_rc = rc;
    if (rc == CM_EUNAVAIL)
        w->unavail = 1;
}

/* 0 while enough shards are alive, else the writer's error. */
static int writer_alive(cs_writer_t *w)
{
    int n = w->seg.k + w->seg.m, live = n - nbits(w->dead);

    if (live >= w->need)
        return 0;
    cm_log(CM_LOG_ERROR, "chunkstore: segment %s: only %d of %d shards writable, %d needed",
           w->idhex, live, n, w->need);
    return w->unavail ? CM_EUNAVAIL : w->dead_rc ? w->dead_rc : CM_EUNAVAIL;
}

int cs_writer_open(cs_store_t *cs, cm_buf *out_intent, cs_writer_t **out)
{
    cs_writer_t *w;
    int n = cs->k + cs->m, rc;
    void *mem;

    w = calloc(1, sizeof(*w));
    if (!w)
        return CM_ENOMEM;
    w->cs = cs;
    w->seg.type = CS__REC_INTENT;
    w->seg.k = cs->k;
    w->seg.m = cs->m;
    w->seg.block_size = cs->block_size;
    w->need = cs->m > 0 ? cs->k + 1 : cs->k;
    rc = CM_ENOMEM;
    if (!(mem = cm_bufkeep_get(&cs->bufs)))
        goto out;
    w->buf = w->bufs[0] = mem;
    if ((rc = cm_random_bytes(w->seg.id, CS_ID_LEN)) != 0)
        goto out;
    id_hex(w->seg.id, w->idhex);
    if ((rc = place(cs, w->seg.id, n, w->seg.drives, &w->dead)) != 0)
        goto out;
    w->dead_rc = w->dead ? CM_EUNAVAIL : 0;
    w->unavail = w->dead != 0;
    if ((rc = writer_alive(w)) != 0)
        goto out; /* nothing written, no intent: fail before the caller records one */
    w->placed = 1;
    if ((rc = cs__rec_encode(out_intent, &w->seg)) != 0)
        goto out;
    *out = w;
    return 0;
out:
    w->placed = 0;
    cs_writer_abort(w);
    return rc;
}

/* Opens the write handles of the live shards. Called on the first stripe
 * or at finish, i.e. after the caller recorded the intent (a backend may
 * create the shard at open or at the first append). */
static int open_handles(cs_writer_t *w)
{
    const struct cs__be_ops *ops = w->cs->be->ops;
    int rc;

    w->opened = 1;
    for (int i = 0; i < w->seg.k + w->seg.m; i++) {
        if (w->dead & (1u << i))
            continue;
        rc = ops->w_open(w->cs->be, w->seg.drives[i], w->seg.id, i, 0, &w->h[i]);
        if (rc != 0) {
            w->h[i] = NULL;
            drop_shard(w, i, rc, "open");
        }
    }
    return writer_alive(w);
}

/* A block in a slot goes out with its CRC as one iovec, with the slot's
 * headroom offered to the backend; a block in the caller's buffer (read
 * only) with the CRC as a second iovec. */
static int append_main(struct cs__task *t)
{
    struct append_task *a = (struct append_task *)t;
    uint8_t crc[CS__CRC_LEN];
    uint32_t c = rs_crc32c(0, a->blk, a->blen);

    if (a->room) {
        struct iovec iov = {a->blk, (size_t)a->blen + CS__CRC_LEN};
        cs__put32(a->blk + a->blen, c);
        return a->ops->w_append(a->h, a->off, &iov, 1, CS__APPEND_ROOM);
    }
    struct iovec iov[2] = {{a->blk, a->blen}, {crc, CS__CRC_LEN}};
    cs__put32(crc, c);
    return a->ops->w_append(a->h, a->off, iov, 2, 0);
}

/* Drops the shards whose append of the last stripe failed. Returns 0 or
 * writer_alive()'s error. */
static int stripe_results(cs_writer_t *w)
{
    struct stripe_io *io = &w->io;

    for (int j = 0; j < io->nt; j++)
        if (io->at[j].t.rc != 0 && !(w->dead & (1u << io->shard[j])))
            drop_shard(w, io->shard[j], io->at[j].t.rc, "write");
    io->nt = 0;
    return writer_alive(w);
}

/* Waits for the stripe in flight, if any, then stripe_results(). */
static int stripe_wait(cs_writer_t *w)
{
    struct stripe_io *io = &w->io;

    if (!io->busy)
        return 0;
    batch_wait(w->cs, io->tasks, io->nt, &io->b);
    io->busy = 0;
    return stripe_results(w);
}

/* Where the k+m blocks of the stripe being filled (stripe w->nstripes) sit
 * in stripe buffer buf: blk[i] in slot i (cs_int.h). */
static void stripe_blocks(const cs_writer_t *w, uint8_t *buf, uint8_t **blk)
{
    size_t at = cs__slot_blk(w->seg.block_size, w->nstripes);

    for (int i = 0; i < w->seg.k + w->seg.m; i++)
        blk[i] = buf + (size_t)i * w->cs->slot + at;
}

/* Encodes one stripe and appends block + CRC32C to each live shard, after
 * the stripe in flight (if any) is done. data NULL: the k data blocks of
 * blen bytes are in w->buf's slots; else they start at data (block i at
 * data + i*blen, the caller's buffer, read only). Parity goes to w->buf's
 * slots either way. Blocks of CS__PAR_APPEND bytes or more go to the k+m
 * shards at once on the pool (local drives write those with direct I/O,
 * which waits for the disk); smaller local blocks one after another. With
 * async set (data must be NULL), the appends stay in flight while the
 * caller fills the other buffer, which becomes w->buf: receiving and
 * hashing the next stripe overlap the disk writes of this one. */
static int write_stripe(cs_writer_t *w, const uint8_t *data, uint32_t blen, int async)
{
    int k = w->seg.k, n = w->seg.k + w->seg.m, rc, nt = 0;
    const struct cs__be_ops *ops = w->cs->be->ops;
    uint8_t *blk[CS__MAX_SHARDS];
    struct stripe_io *io = &w->io;
    uint64_t off = cs__stripe_off(w->seg.block_size, w->nstripes);
    int par;

    if ((rc = stripe_wait(w)) != 0)
        return rc;
    if (!w->opened && (rc = open_handles(w)) != 0)
        return rc;
    stripe_blocks(w, w->buf, blk);
    if (data)
        for (int i = 0; i < k; i++)
            blk[i] = (uint8_t *)data + (size_t)i * blen; /* read only: rs_encode, the appends */
    rs_encode(w->cs->rs, blen, blk, blk + k);
    for (int i = 0; i < n; i++) {
        if (w->dead & (1u << i))
            continue;
        io->at[nt] = (struct append_task){.t.fn = append_main,
                                          .h = w->h[i],
                                          .ops = ops,
                                          .blk = blk[i],
                                          .room = !data || i >= k,
                                          .blen = blen,
                                          .off = off};
        io->tasks[nt] = &io->at[nt].t;
        io->shard[nt] = i;
        nt++;
    }
    io->nt = nt;
    w->nstripes++;
    par = blen >= CS__PAR_APPEND && nt > 1;
    if (par && async && !w->bufs[1])
        w->bufs[1] = cm_bufkeep_get(&w->cs->bufs); /* NULL: this stripe is written at once */
    if (par && async && w->bufs[1]) {
        batch_submit(w->cs, io->tasks, nt, &io->b);
        io->busy = 1;
        w->buf = w->buf == w->bufs[0] ? w->bufs[1] : w->bufs[0];
        return 0;
    }
    if (par)
        run_batch(w->cs, io->tasks, nt);
    else
        run_io(w->cs, io->tasks, nt);
    return stripe_results(w);
}

/* Copies n bytes (at most what the stripe still takes) to their places in
 * w->buf: stripe byte x goes to data block x / block_size. */
static void stripe_fill(cs_writer_t *w, const uint8_t *p, size_t n)
{
    size_t bs = w->seg.block_size;
    uint8_t *base = w->buf + cs__slot_blk(w->seg.block_size, w->nstripes);

    while (n > 0) {
        size_t i = w->fill / bs, o = w->fill % bs, c = bs - o < n ? bs - o : n;
        memcpy(base + i * w->cs->slot + o, p, c);
        w->fill += c;
        p += c;
        n -= c;
    }
}

/* Turns the fill bytes of a short last stripe, placed in blocks of
 * block_size bytes (stripe byte x in block x / block_size), into k blocks
 * of blen bytes (x in block x / blen, as cs__blen() says) zero-padded to
 * k*blen. In place: byte x's address grows with x both before and after,
 * and blen <= block_size puts it at the same or a higher address after, so
 * moving from the last byte down never overwrites one that has yet to move. */
static void stripe_shrink(cs_writer_t *w, uint32_t blen)
{
    uint8_t *blk[CS__MAX_SHARDS];
    size_t bs = w->seg.block_size;

    stripe_blocks(w, w->buf, blk);
    for (int i = w->seg.k - 1; i >= 0; i--) {
        size_t lo = (size_t)i * blen, hi = lo + blen, end = w->fill < hi ? w->fill : hi;
        if (end < lo)
            end = lo;
        memset(blk[i] + (end - lo), 0, hi - end);
        while (end > lo) { /* [x, end): the part of one source block */
            size_t x = (end - 1) / bs * bs;
            if (x < lo)
                x = lo;
            memmove(blk[i] + (x - lo), blk[x / bs] + x % bs, end - x);
            end = x;
        }
    }
}

int cs_writer_write(cs_writer_t *w, const void *p, size_t n)
{
    const uint8_t *q = p;
    size_t stripe = (size_t)w->seg.k * w->seg.block_size;
    int rc;

    if (w->failed)
        return w->failed;
    while (n > 0) {
        if (w->fill == 0 && n >= stripe) {
            /* Whole stripe in the caller's buffer: encode and write from there. */
            if ((rc = write_stripe(w, q, w->seg.block_size, 0)) != 0)
                return w->failed = rc;
            q += stripe;
            n -= stripe;
            w->seg.size += stripe;
            continue;
        }
        size_t c = stripe - w->fill < n ? stripe - w->fill : n;
        stripe_fill(w, q, c);
        q += c;
        n -= c;
        w->seg.size += c;
        if (w->fill == stripe) {
            if ((rc = write_stripe(w, NULL, w->seg.block_size, 1)) != 0)
                return w->failed = rc;
            w->fill = 0;
        }
    }
    return 0;
}

/* One shard's commit (header + durability), as a pool task. */
struct commit_task {
    struct cs__task t; /* first */
    void *h;
    const struct cs__be_ops *ops;
    uint8_t hdr[CS__HDR_LEN];
};

static int commit_main(struct cs__task *t)
{
    struct commit_task *c = (struct commit_task *)t;

    return c->ops->w_commit(c->h, c->hdr);
}

static void writer_free(cs_writer_t *w)
{
    stripe_wait(w); /* nothing may still write from the buffers */
    for (int i = 0; i < CS__MAX_SHARDS; i++)
        if (w->h[i])
            w->cs->be->ops->w_close(w->h[i], 0);
    cm_bufkeep_put(&w->cs->bufs, w->bufs[0]);
    cm_bufkeep_put(&w->cs->bufs, w->bufs[1]);
    free(w);
}

int cs_writer_finish(cs_writer_t *w, cm_buf *out_layout)
{
    int k = w->seg.k, n = w->seg.k + w->seg.m, rc, nt = 0;
    struct commit_task ct[CS__MAX_SHARDS];
    struct cs__task *tasks[CS__MAX_SHARDS];
    struct cs_hdr h;

    if (w->failed)
        return w->failed;
    /* Reserve now so the final append cannot fail after the shards are live. */
    if (cm_buf_reserve(out_layout, CS__REC_FIXED + 2 * (size_t)n) != 0)
        return CM_ENOMEM;
    if (!w->opened && (rc = open_handles(w)) != 0)
        return w->failed = rc;
    if (w->fill > 0) {
        uint32_t blen = (uint32_t)((w->fill + (size_t)k - 1) / (size_t)k);
        stripe_shrink(w, blen);
        if ((rc = write_stripe(w, NULL, blen, 0)) != 0)
            return w->failed = rc;
        w->fill = 0;
    }
    if ((rc = stripe_wait(w)) != 0)
        return w->failed = rc;

    /* Durability: every shard's commit (local: header, fdatasync, directory
     * fsync; node: the same on the node) in flight at once on the pool, for
     * both backends. Nothing acknowledges the segment before they return. */
    memcpy(h.id, w->seg.id, CS_ID_LEN);
    h.k = k;
    h.m = w->seg.m;
    h.block_size = w->seg.block_size;
    h.size = w->seg.size;
    for (int i = 0; i < n; i++) {
        if (w->dead & (1u << i))
            continue;
        ct[nt] = (struct commit_task){.t.fn = commit_main, .h = w->h[i], .ops = w->cs->be->ops};
        h.index = i;
        cs__hdr_encode(&h, ct[nt].hdr);
        tasks[nt] = &ct[nt].t;
        nt++;
    }
    run_batch(w->cs, tasks, nt);
    for (int i = 0, j = 0; i < n; i++) {
        if (w->dead & (1u << i))
            continue;
        if (ct[j].t.rc != 0)
            drop_shard(w, i, ct[j].t.rc, "commit");
        j++;
    }
    if ((rc = writer_alive(w)) != 0)
        return w->failed = rc;

    w->seg.type = CS__REC_SEGMENT;
    if ((rc = cs__rec_encode(out_layout, &w->seg)) != 0)
        return w->failed = rc;
    if (w->dead) {
        cm_log(CM_LOG_WARN,
               "chunkstore: segment %s written with %d of %d shards; the missing ones are queued "
               "for healing",
               w->idhex, n - nbits(w->dead), n);
        heal_enqueue(w->cs, &w->seg, w->dead);
    }
    writer_free(w);
    return 0;
}

static int delete_rec(cs_store_t *cs, const struct cs_seg *s);

void cs_writer_abort(cs_writer_t *w)
{
    if (!w)
        return;
    stripe_wait(w); /* before the handles close */
    for (int i = 0; i < CS__MAX_SHARDS; i++) {
        if (w->h[i])
            w->cs->be->ops->w_close(w->h[i], 0);
        w->h[i] = NULL;
    }
    if (w->placed)
        delete_rec(w->cs, &w->seg); /* best effort: the intent retries it */
    writer_free(w);
}

/* ----------------------------------------------------------------- delete */

static void heal_cancel(cs_store_t *cs, const uint8_t id[CS_ID_LEN]);

/* Removes one shard or manifest copy, as a pool task. */
struct rm_task {
    struct cs__task t; /* first */
    cs_store_t *cs;
    const struct cs_seg *s;
    int i;
};

static int rm_main(struct cs__task *t)
{
    struct rm_task *r = (struct rm_task *)t;
    struct cs__be *be = r->cs->be;
    int d = r->s->drives[r->i];

    if (cs__rec_is_seg(r->s))
        return be->ops->remove(be, d, r->s->id, r->i);
    return be->ops->blob_remove(be, d, r->s->id);
}

/* Removes every shard (or manifest copy) of a record; missing ones are not
 * an error, an unreachable drive is CM_EUNAVAIL (after removing the rest).
 * Holds the record's lock: see CS__SEG_LOCKS. */
static int delete_rec(cs_store_t *cs, const struct cs_seg *s)
{
    struct rm_task rt[CS__MAX_SHARDS];
    struct cs__task *tasks[CS__MAX_SHARDS];
    char hex[2 * CS_ID_LEN + 1];
    int n = cs__rec_ndrives(s), nt = 0, rc = 0;

    heal_cancel(cs, s->id);
    for (int i = 0; i < n; i++) {
        if (s->drives[i] >= cs->ndrives)
            continue; /* drive not in this store: nothing of ours there */
        rt[nt] = (struct rm_task){.t.fn = rm_main, .cs = cs, .s = s, .i = i};
        tasks[nt] = &rt[nt].t;
        nt++;
    }
    pthread_mutex_lock(seg_lock(cs, s->id));
    run_io(cs, tasks, nt);
    pthread_mutex_unlock(seg_lock(cs, s->id));
    for (int j = 0; j < nt; j++) {
        int e = rt[j].t.rc;
        if (e == 0 || e == CM_ENOTFOUND)
            continue;
        id_hex(s->id, hex);
        cm_log(CM_LOG_WARN, "chunkstore: delete %s %s %d on drive %d (%s): %s",
               cs__rec_is_seg(s) ? "segment" : "manifest", hex, rt[j].i,
               s->drives[rt[j].i], drive_name(cs, s->drives[rt[j].i]), cm_strerror(e));
        if (rc == 0 || e == CM_EUNAVAIL)
            rc = e;
    }
    return rc;
}

int cs_layout_delete(cs_store_t *cs, cm_slice layout_or_intent)
{
    cm_reader r = {layout_or_intent.p, layout_or_intent.n};
    struct cs_seg s;
    int rc = 0, rc2;

    /* Validate everything first: never act on half of a corrupt layout. */
    while (r.n > 0)
        if ((rc = cs__rec_decode(&r, &s)) != 0)
            return rc;
    r = (cm_reader){layout_or_intent.p, layout_or_intent.n};
    while (r.n > 0) {
        cs__rec_decode(&r, &s);
        if ((rc2 = delete_rec(cs, &s)) != 0 && (rc == 0 || rc2 == CM_EUNAVAIL))
            rc = rc2;
    }
    return rc;
}

/* ----------------------------------------------------------------- reader */

enum { BLK_UNREAD = 0, BLK_GOOD, BLK_BAD };
enum {
    SH_UNOPENED = 0, /* not touched yet in this segment */
    SH_OPEN,         /* open, header not checked yet (it is, after the first read) */
    SH_OK,           /* open, header matches the record */
    SH_BAD           /* unusable for the rest of the segment */
};
/* What read_block() found. */
enum { RB_OK = 0, RB_CRC, RB_SHARD, RB_QUIET };

/* Owned by one thread; pool tasks of one batch touch only their own
 * shard's h[i] and sh[i] and their own block of buf. Buffers hold one
 * stripe of the current segment: k+m blocks of block_size bytes plus a CRC
 * trailer each. */
struct cs_reader {
    cs_store_t *cs;
    struct cs_seg *segs; /* the layout's segment records, nsegs of them */
    size_t nsegs;
    uint64_t pos, end;              /* next object offset to return; end of range */
    size_t iseg;                    /* segment holding pos */
    uint64_t seg_base;              /* object offset where segs[iseg] starts */
    int seg_ready;                  /* handles/rs/buffers below are set up for iseg */
    char idhex[2 * CS_ID_LEN + 1];  /* of segs[iseg], for log lines */
    void *h[CS__MAX_SHARDS];        /* backend read handles, or NULL */
    uint8_t sh[CS__MAX_SHARDS];     /* SH_* per shard */
    uint8_t warned[CS__MAX_SHARDS]; /* logged this shard's trouble already */
    uint32_t bad;                   /* shards of segs[iseg] found damaged: heal at exit */
    const rs_ctx_t *rs;             /* coder for the segment's (k, m) */
    rs_ctx_t *rs_own;               /* non-NULL if rs was created for this reader */
    uint8_t *buf;                   /* stripe buffer, bufcap bytes */
    size_t bufcap, stride;          /* block i at buf + i*stride */
    uint64_t stripe;                /* stripe described by state[]; UINT64_MAX none */
    uint32_t blen;                  /* its block length */
    uint8_t state[CS__MAX_SHARDS];  /* BLK_* per block of that stripe */
};

static void reader_close_handles(cs_reader_t *r)
{
    for (int i = 0; i < CS__MAX_SHARDS; i++) {
        if (r->h[i])
            r->cs->be->ops->r_close(r->h[i]);
        r->h[i] = NULL;
        r->sh[i] = SH_UNOPENED;
        r->warned[i] = 0;
    }
}

static void shard_warn(cs_reader_t *r, int i, const char *what)
{
    const struct cs_seg *s = &r->segs[r->iseg];
    int d = s->drives[i];

    if (d < r->cs->ndrives)
        r->bad |= 1u << i; /* a shard on a drive we do not have cannot be healed here */
    if (r->warned[i])
        return;
    r->warned[i] = 1;
    cm_log(CM_LOG_WARN, "chunkstore: segment %s shard %d on drive %d (%s): %s; using parity",
           r->idhex, i, d, drive_name(r->cs, d), what);
}

/* A stat of one shard, as a pool task. */
struct stat_task {
    struct cs__task t; /* first */
    cs_store_t *cs;
    const struct cs_seg *s;
    int i;
    uint64_t len;
};

static int stat_main(struct cs__task *t)
{
    struct stat_task *st = (struct stat_task *)t;

    return st->cs->be->ops->stat(st->cs->be, st->s->drives[st->i], st->s->id, st->i, &st->len);
}

/* Done with segs[r->iseg]: checks that the shards it never opened exist
 * with the right length (a lost parity shard is otherwise noticed only when
 * it is needed, maybe together with a second loss: too late), and queues
 * the segment for healing if anything was wrong. Costs m stats on a healthy
 * segment (one batch over nodes); the shards that were read were checked by
 * the reads. */
static void leave_segment(cs_reader_t *r)
{
    const struct cs_seg *s = &r->segs[r->iseg];
    uint64_t want = cs__shard_len(s->size, s->k, s->block_size);
    struct stat_task st[CS__MAX_SHARDS];
    struct cs__task *tasks[CS__MAX_SHARDS];
    int nt = 0;

    if (!r->seg_ready)
        return;
    r->seg_ready = 0;
    for (int i = 0; i < s->k + s->m; i++) {
        if (r->sh[i] != SH_UNOPENED)
            continue; /* read (checked), or already found bad */
        if (s->drives[i] >= r->cs->ndrives)
            continue; /* drive not in this store */
        if (!drive_up(r->cs, s->drives[i])) {
            r->bad |= 1u << i;
            continue;
        }
        st[nt] = (struct stat_task){.t.fn = stat_main, .cs = r->cs, .s = s, .i = i};
        tasks[nt] = &st[nt].t;
        nt++;
    }
    run_io(r->cs, tasks, nt);
    for (int j = 0; j < nt; j++) {
        int i = st[j].i;
        if (st[j].t.rc == 0 && st[j].len == want)
            continue;
        r->bad |= 1u << i;
        cm_log(CM_LOG_WARN, "chunkstore: segment %s shard %d on drive %d (%s): %s", r->idhex, i,
               s->drives[i], drive_name(r->cs, s->drives[i]),
               st[j].t.rc == 0 ? "of the wrong length"
               : st[j].t.rc == CM_ENOTFOUND ? "missing"
                                            : cm_strerror(st[j].t.rc));
    }
    if (r->bad)
        heal_enqueue(r->cs, s, r->bad);
    r->bad = 0;
}

/* Sets up per-segment state for segs[r->iseg]. */
static int enter_segment(cs_reader_t *r)
{
    const struct cs_seg *s = &r->segs[r->iseg];

    reader_close_handles(r);
    r->bad = 0;
    id_hex(s->id, r->idhex);
    if (s->k == r->cs->k && s->m == r->cs->m) {
        r->rs = r->cs->rs;
    } else if (!r->rs_own || rs_ctx_k(r->rs_own) != s->k || rs_ctx_m(r->rs_own) != s->m) {
        rs_ctx_free(r->rs_own);
        r->rs_own = rs_ctx_new(s->k, s->m);
        if (!r->rs_own)
            return CM_ENOMEM;
        r->rs = r->rs_own;
    } else {
        r->rs = r->rs_own;
    }
    r->stride = ((size_t)s->block_size + CS__CRC_LEN + CS_ALIGN - 1) & ~(size_t)(CS_ALIGN - 1);
    r->stripe = UINT64_MAX;
    r->seg_ready = 1;
    return 0;
}

/* Allocates the stripe buffer for the current segment on first need. */
static int ensure_buf(cs_reader_t *r)
{
    const struct cs_seg *s = &r->segs[r->iseg];
    size_t need = (size_t)(s->k + s->m) * r->stride;
    void *mem;

    if (r->bufcap >= need)
        return 0;
    free(r->buf);
    r->buf = NULL;
    r->bufcap = 0;
    if (posix_memalign(&mem, CS_ALIGN, need) != 0)
        return CM_ENOMEM;
    r->buf = mem;
    r->bufcap = need;
    return 0;
}

/* Reads block i of the current stripe into dst (blen bytes) and checks the
 * shard's header (after its first read: free for both backends then) and
 * the block's CRC32C. Touches only r->h[i] and r->sh[i], so reads of
 * distinct shards may run at once. Returns RB_OK, RB_CRC (block rotten),
 * RB_SHARD (shard unusable or short; *why says why) or RB_QUIET (known bad). */
static int read_block(cs_reader_t *r, int i, uint8_t *dst, const char **why)
{
    const struct cs_seg *s = &r->segs[r->iseg];
    const struct cs__be_ops *ops = r->cs->be->ops;
    uint8_t crc[CS__CRC_LEN], hb[CS__HDR_LEN];
    struct iovec iov[2] = {{dst, r->blen}, {crc, CS__CRC_LEN}};
    int d = s->drives[i], rc;
    ssize_t got;

    if (r->sh[i] == SH_BAD)
        return RB_QUIET;
    if (r->sh[i] == SH_UNOPENED) {
        r->sh[i] = SH_BAD;
        if (d >= r->cs->ndrives) {
            *why = "drive not in this store";
            return RB_SHARD;
        }
        if (!ops->drive_up(r->cs->be, d)) {
            *why = "drive is down";
            return RB_SHARD;
        }
        if ((rc = ops->r_open(r->cs->be, d, s->id, i, &r->h[i])) != 0) {
            r->h[i] = NULL;
            *why = rc == CM_ENOTFOUND ? "no such shard" : cm_strerror(rc);
            return RB_SHARD;
        }
        r->sh[i] = SH_OPEN;
    }
    got = ops->r_read(r->h[i], cs__stripe_off(s->block_size, r->stripe), iov, 2);
    if (got < 0) {
        r->sh[i] = SH_BAD;
        *why = got == CM_ENOTFOUND ? "no such shard" : cm_strerror((int)got);
        return RB_SHARD;
    }
    if (r->sh[i] == SH_OPEN) {
        rc = ops->r_header(r->h[i], hb);
        *why = rc != 0 ? (rc == CM_ENOTFOUND ? "no such shard" : "bad shard header")
                       : hdr_mismatch(s, i, hb);
        if (*why) {
            r->sh[i] = SH_BAD;
            return RB_SHARD;
        }
        r->sh[i] = SH_OK;
    }
    if (got != (ssize_t)r->blen + CS__CRC_LEN) {
        *why = "shard is short";
        return RB_SHARD;
    }
    if (cs__get32(crc) != rs_crc32c(0, dst, r->blen))
        return RB_CRC;
    return RB_OK;
}

/* Logs and records what read_block() found; returns 0 if the block is good. */
static int note_block(cs_reader_t *r, int i, int res, const char *why)
{
    switch (res) {
    case RB_OK:
        return 0;
    case RB_CRC:
        r->bad |= 1u << i;
        /* Report every bad block, not once per shard: each is a distinct rot. */
        cm_log(CM_LOG_WARN,
               "chunkstore: segment %s shard %d stripe %llu: CRC32C mismatch; "
               "using parity",
               r->idhex, i, (unsigned long long)r->stripe);
        return CM_EIO;
    case RB_SHARD:
        shard_warn(r, i, why);
        return CM_EIO;
    default:
        return CM_EIO;
    }
}

/* Reads block i of the current stripe into dst. Returns 0, or CM_EIO
 * (block unusable; already logged). */
static int fetch_block(cs_reader_t *r, int i, uint8_t *dst)
{
    const char *why = NULL;

    return note_block(r, i, read_block(r, i, dst, &why), why);
}

/* One block read into the stripe buffer, as a pool task. */
struct rd_task {
    struct cs__task t; /* first */
    cs_reader_t *r;
    int i;
    const char *why;
};

static int rd_main(struct cs__task *t)
{
    struct rd_task *a = (struct rd_task *)t;

    return read_block(a->r, a->i, a->r->buf + (size_t)a->i * a->r->stride, &a->why);
}

/* Reads blocks idx[0..n) of the current stripe into the stripe buffer (all
 * at once over nodes) and sets their states. */
static void load_blocks(cs_reader_t *r, const int *idx, int n)
{
    struct rd_task rt[CS__MAX_SHARDS];
    struct cs__task *tasks[CS__MAX_SHARDS];

    for (int j = 0; j < n; j++) {
        rt[j] = (struct rd_task){.t.fn = rd_main, .r = r, .i = idx[j]};
        tasks[j] = &rt[j].t;
    }
    run_io(r->cs, tasks, n);
    for (int j = 0; j < n; j++)
        r->state[idx[j]] = note_block(r, idx[j], rt[j].t.rc, rt[j].why) == 0 ? BLK_GOOD : BLK_BAD;
}

static void set_stripe(cs_reader_t *r, uint64_t stripe)
{
    const struct cs_seg *s = &r->segs[r->iseg];

    if (r->stripe == stripe)
        return;
    r->stripe = stripe;
    r->blen = cs__blen(s->size, s->k, s->block_size, stripe);
    memset(r->state, BLK_UNREAD, sizeof(r->state));
}

/* Reads block i of the current stripe into the stripe buffer. */
static void load_into_buf(cs_reader_t *r, int i)
{
    r->state[i] = fetch_block(r, i, r->buf + (size_t)i * r->stride) == 0 ? BLK_GOOD : BLK_BAD;
}

/* Gets k good blocks of the current stripe and rebuilds the rest. Local:
 * one block at a time (data first, then parity) until k are good. Nodes:
 * as many unread blocks as are missing, as one batch, until k are good. */
static int reconstruct(cs_reader_t *r)
{
    const struct cs_seg *s = &r->segs[r->iseg];
    int n = s->k + s->m, good = 0, erased[CS__MAX_SHARDS] = {0}, nerased = 0, rc;
    uint8_t *blk[CS__MAX_SHARDS] = {0};

    for (int i = 0; i < n; i++)
        good += r->state[i] == BLK_GOOD;
    if (!r->cs->parallel) {
        for (int i = 0; i < n && good < s->k; i++) {
            if (r->state[i] != BLK_UNREAD)
                continue;
            load_into_buf(r, i);
            good += r->state[i] == BLK_GOOD;
        }
    } else {
        while (good < s->k) {
            int idx[CS__MAX_SHARDS], ni = 0;
            for (int i = 0; i < n && ni < s->k - good; i++)
                if (r->state[i] == BLK_UNREAD)
                    idx[ni++] = i;
            if (ni == 0)
                break;
            load_blocks(r, idx, ni);
            good = 0;
            for (int i = 0; i < n; i++)
                good += r->state[i] == BLK_GOOD;
        }
    }
    if (good < s->k) {
        cm_log(CM_LOG_ERROR,
               "chunkstore: segment %s stripe %llu: only %d of %d needed blocks "
               "readable",
               r->idhex, (unsigned long long)r->stripe, good, s->k);
        return CM_EIO;
    }
    for (int i = 0; i < n; i++) {
        blk[i] = r->buf + (size_t)i * r->stride;
        if (r->state[i] != BLK_GOOD)
            erased[nerased++] = i;
    }
    if ((rc = rs_decode(r->rs, r->blen, blk, erased, nerased)) != 0)
        return rc;
    for (int i = 0; i < n; i++)
        r->state[i] = BLK_GOOD;
    return 0;
}

/* Nodes: reads every unread data block of the current stripe that the rest
 * of the range needs, from block b on, as one batch into the stripe buffer. */
static void prefetch_data(cs_reader_t *r, int b, uint64_t stripe_start)
{
    const struct cs_seg *s = &r->segs[r->iseg];
    uint64_t want = r->end - r->seg_base; /* end of the range, segment-relative */
    int idx[CS__MAX_SHARDS], n = 0, last;

    if (want > s->size)
        want = s->size;
    want -= stripe_start;
    if (want > (uint64_t)s->k * r->blen)
        want = (uint64_t)s->k * r->blen;
    last = (int)((want - 1) / r->blen);
    for (int i = b; i <= last && i < s->k; i++)
        if (r->state[i] == BLK_UNREAD)
            idx[n++] = i;
    load_blocks(r, idx, n);
}

int cs_reader_open(cs_store_t *cs, cm_slice layout, uint64_t off, uint64_t len, cs_reader_t **out)
{
    cm_reader cur = {layout.p, layout.n};
    cs_reader_t *r;
    uint64_t size;
    size_t nsegs;
    int rc;

    if ((rc = cs__layout_scan(layout, &size, &nsegs)) != 0)
        return rc;
    if (off > size || len > size - off)
        return CM_ERANGE;
    r = calloc(1, sizeof(*r));
    if (!r)
        return CM_ENOMEM;
    r->cs = cs;
    r->pos = off;
    r->end = off + len;
    r->stripe = UINT64_MAX;
    r->segs = calloc(nsegs ? nsegs : 1, sizeof(*r->segs));
    if (!r->segs) {
        free(r);
        return CM_ENOMEM;
    }
    for (size_t i = 0; i < nsegs;) {
        cs__rec_decode(&cur, &r->segs[i]); /* validated by cs__layout_scan() */
        if (r->segs[i].type == CS__REC_SEGMENT)
            i++; /* manifest records carry no object bytes */
    }
    r->nsegs = nsegs;
    *out = r;
    return 0;
}

ssize_t cs_reader_read(cs_reader_t *r, void *buf, size_t n)
{
    uint8_t *dst = buf;
    size_t done = 0;
    int rc;

    while (done < n && r->pos < r->end) {
        while (r->pos - r->seg_base >= r->segs[r->iseg].size) {
            leave_segment(r);
            r->seg_base += r->segs[r->iseg].size;
            r->iseg++;
        }
        if (!r->seg_ready && (rc = enter_segment(r)) != 0)
            goto fail;

        const struct cs_seg *s = &r->segs[r->iseg];
        uint64_t spos = r->pos - r->seg_base;
        uint64_t stripe_bytes = (uint64_t)s->k * s->block_size;
        uint64_t within = spos % stripe_bytes;
        set_stripe(r, spos / stripe_bytes);
        int b = (int)(within / r->blen);
        uint32_t boff = (uint32_t)(within % r->blen);
        uint64_t c = r->blen - boff;
        if (c > s->size - spos)
            c = s->size - spos;
        if (c > r->end - r->pos)
            c = r->end - r->pos;
        if (c > n - done)
            c = n - done;

        if (r->state[b] == BLK_UNREAD && r->cs->parallel) {
            /* Nodes: the data blocks this range needs, all at once. */
            if ((rc = ensure_buf(r)) != 0)
                goto fail;
            prefetch_data(r, b, spos - within);
        } else if (r->state[b] == BLK_UNREAD && boff == 0 && c == r->blen) {
            /* The caller wants this whole block: read it straight into buf. */
            if (fetch_block(r, b, dst + done) == 0) {
                done += c;
                r->pos += c;
                continue;
            }
            r->state[b] = BLK_BAD;
        }
        if (r->state[b] != BLK_GOOD) {
            if ((rc = ensure_buf(r)) != 0)
                goto fail;
            if (r->state[b] == BLK_UNREAD)
                load_into_buf(r, b);
            if (r->state[b] != BLK_GOOD && (rc = reconstruct(r)) != 0)
                goto fail;
        }
        memcpy(dst + done, r->buf + (size_t)b * r->stride + boff, c);
        done += c;
        r->pos += c;
    }
    return (ssize_t)done;
fail:
    /* Hand back what was read; the next call retries and reports the error. */
    return done > 0 ? (ssize_t)done : rc;
}

void cs_reader_close(cs_reader_t *r)
{
    if (!r)
        return;
    if (r->iseg < r->nsegs)
        leave_segment(r);
    reader_close_handles(r);
    rs_ctx_free(r->rs_own);
    free(r->buf);
    free(r->segs);
    free(r);
}

/* ------------------------------------------------------------ heal queue */

static void *heal_main(void *arg);

/* Queues record s for the heal thread (mask: shards or copies seen bad).
 * Never blocks on I/O: readers and writers call it on the request path. */
static void heal_enqueue(cs_store_t *cs, const struct cs_seg *s, uint32_t mask)
{
    struct cs__healer *h = &cs->heal;
    struct cs__heal_job *j;

    pthread_mutex_lock(&h->mu);
    if (h->stop)
        goto out;
    for (j = h->head; j; j = j->next) {
        if (memcmp(j->seg.id, s->id, CS_ID_LEN) == 0) {
            if (mask & ~j->mask)
                j->deferred = 0; /* new damage: worth a try now */
            j->mask |= mask;
            goto out;
        }
    }
    /* Being healed already: the heal scrubs every shard, so only damage it
     * was not told about is worth another pass. */
    for (struct cs__heal_active *a = h->active; a; a = a->next)
        if (memcmp(a->id, s->id, CS_ID_LEN) == 0 && (mask & ~a->mask) == 0)
            goto out;
    if (h->nqueued >= CS__HEAL_QUEUE_MAX) {
        uint64_t now = cm_mono_ns();
        if (h->full_logged_ns == 0 || now - h->full_logged_ns > 10 * CS__HEAL_RETRY_NS) {
            h->full_logged_ns = now;
            cm_log(CM_LOG_WARN, "chunkstore: heal queue full; damaged segments wait for their "
                                "next read or heal walk");
        }
        goto out;
    }
    if (!(j = calloc(1, sizeof(*j))))
        goto out;
    j->seg = *s;
    j->mask = mask;
    if (!h->started) {
        if (pthread_create(&h->th, NULL, heal_main, cs) != 0) {
            cm_log(CM_LOG_WARN, "chunkstore: cannot start the heal thread");
            free(j);
            goto out;
        }
        h->started = 1;
    }
    *h->tailp = j;
    h->tailp = &j->next;
    h->nqueued++;
    pthread_cond_signal(&h->work);
out:
    pthread_mutex_unlock(&h->mu);
}

static void queue_fix_tail(struct cs__healer *h)
{
    h->tailp = &h->head;
    while (*h->tailp)
        h->tailp = &(*h->tailp)->next;
}

/* Drops queued (not started) heals of id: it is being deleted. */
static void heal_cancel(cs_store_t *cs, const uint8_t id[CS_ID_LEN])
{
    struct cs__healer *h = &cs->heal;

    pthread_mutex_lock(&h->mu);
    for (struct cs__heal_job **pp = &h->head; *pp;) {
        struct cs__heal_job *j = *pp;
        if (memcmp(j->seg.id, id, CS_ID_LEN) != 0) {
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        h->nqueued--;
        free(j);
    }
    queue_fix_tail(h);
    pthread_cond_broadcast(&h->idle);
    pthread_mutex_unlock(&h->mu);
}

/* 1 while a job that is not waiting for a drive is queued or a heal runs. */
static int heal_busy(const struct cs__healer *h)
{
    if (h->active || h->nwaiting)
        return 1;
    for (const struct cs__heal_job *j = h->head; j; j = j->next)
        if (!j->deferred)
            return 1;
    return 0;
}

void cs_store_heal_wait(cs_store_t *cs)
{
    struct cs__healer *h = &cs->heal;

    pthread_mutex_lock(&h->mu);
    while (heal_busy(h))
        pthread_cond_wait(&h->idle, &h->mu);
    pthread_mutex_unlock(&h->mu);
}

void cs_store_heal_stats(cs_store_t *cs, uint64_t *healed, uint64_t *failed)
{
    pthread_mutex_lock(&cs->heal.mu);
    if (healed)
        *healed = cs->heal.nhealed;
    if (failed)
        *failed = cs->heal.nfailed;
    pthread_mutex_unlock(&cs->heal.mu);
}

/* Lets the heal thread finish its heal in progress and (local stores) the
 * ready jobs, then joins it; cs_store_close() frees what is left. */
static void heal_stop(cs_store_t *cs)
{
    struct cs__healer *h = &cs->heal;
    int started;

    pthread_mutex_lock(&h->mu);
    h->stop = 1;
    started = h->started;
    pthread_cond_signal(&h->work);
    pthread_mutex_unlock(&h->mu);
    if (started)
        pthread_join(h->th, NULL);
}

/* Registers a heal of id, with h->mu held (waiting while another heal of
 * it runs: two heals of one segment would write the same shards). */
static void heal_begin_locked(struct cs__healer *h, struct cs__heal_active *a,
                              const uint8_t id[CS_ID_LEN], uint32_t mask)
{
    memcpy(a->id, id, CS_ID_LEN);
    a->mask = mask;
    for (;;) {
        struct cs__heal_active *o = h->active;
        while (o && memcmp(o->id, id, CS_ID_LEN) != 0)
            o = o->next;
        if (!o)
            break;
        h->nwaiting++; /* still busy for cs_store_heal_wait() */
        pthread_cond_wait(&h->idle, &h->mu);
        h->nwaiting--;
    }
    a->next = h->active;
    h->active = a;
}

static void heal_end(cs_store_t *cs, struct cs__heal_active *a, uint32_t healed, int failed)
{
    struct cs__healer *h = &cs->heal;

    pthread_mutex_lock(&h->mu);
    for (struct cs__heal_active **pp = &h->active; *pp; pp = &(*pp)->next) {
        if (*pp == a) {
            *pp = a->next;
            break;
        }
    }
    h->nhealed += (uint64_t)nbits(healed);
    if (failed)
        h->nfailed++;
    pthread_cond_broadcast(&h->idle);
    pthread_mutex_unlock(&h->mu);
}

/* ------------------------------------------------------------------- heal */

/* What one heal did (bit i = shard or copy i). */
struct heal_res {
    int rc;            /* 0, or why the heal gave up (nothing committed then) */
    uint32_t healed;   /* rewritten and committed */
    uint32_t failed;   /* could not be rewritten (not for lack of a drive) */
    uint32_t deferred; /* on drives that are down or unreachable: try again later */
};

/* State of one segment heal: a read handle per good shard, a heal-mode
 * write handle per target, and a stripe buffer. Owned by the healing
 * thread; pool tasks touch only their own shard's slots. */
struct heal {
    cs_store_t *cs;
    const struct cs_seg *s;
    char idhex[2 * CS_ID_LEN + 1];
    int n;                   /* k+m */
    void *src[CS__MAX_SHARDS]; /* read handle of a shard with a good header, or NULL */
    void *dst[CS__MAX_SHARDS]; /* write handle (heal = 1) of a target, or NULL */
    uint32_t targets;        /* shards being rebuilt: dst[i] is open */
    uint32_t deferred;       /* unreachable shards: retry later */
    uint32_t failed;         /* targets that could not be written */
    uint8_t *buf;            /* k+m blocks + CRC, block i at buf + i*stride */
    size_t stride;
};

/* Gives up on target i after a write error. */
static void target_fail(struct heal *h, int i, int rc, const char *what)
{
    int d = h->s->drives[i];

    cm_log(CM_LOG_WARN, "chunkstore: heal: segment %s shard %d on drive %d (%s): %s: %s%s",
           h->idhex, i, d, drive_name(h->cs, d), what, cm_strerror(rc),
           rc == CM_EUNAVAIL ? "; will retry" : "");
    if (h->dst[i])
        h->cs->be->ops->w_close(h->dst[i], 1);
    h->dst[i] = NULL;
    h->targets &= ~(1u << i);
    if (rc == CM_EUNAVAIL)
        h->deferred |= 1u << i;
    else
        h->failed |= 1u << i;
}

/* Makes shard i a target: opens its heal-mode handle and, if the heal is at
 * stripe > 0, copies the blocks before it from the old shard (this pass
 * read and CRC-checked them all). */
static void heal_add_target(struct heal *h, int i, uint64_t stripe)
{
    const struct cs_seg *s = h->s;
    const struct cs__be_ops *ops = h->cs->be->ops;
    int rc;

    if ((rc = ops->w_open(h->cs->be, s->drives[i], s->id, i, 1, &h->dst[i])) != 0) {
        h->dst[i] = NULL;
        target_fail(h, i, rc, "open");
        return;
    }
    h->targets |= 1u << i;
    for (uint64_t off = CS__HDR_LEN, end = cs__stripe_off(s->block_size, stripe); off < end;) {
        size_t c = end - off < h->stride ? (size_t)(end - off) : h->stride;
        struct iovec iov = {h->buf + (size_t)i * h->stride, c};
        ssize_t got = ops->r_read(h->src[i], off, &iov, 1);
        if (got != (ssize_t)c) {
            target_fail(h, i, got < 0 ? (int)got : CM_EIO, "copy of its good blocks");
            return;
        }
        if ((rc = ops->w_append(h->dst[i], off, &iov, 1, 0)) != 0) {
            target_fail(h, i, rc, "write");
            return;
        }
        off += c;
    }
}

/* Opens shard i for the heal, as a pool task. */
struct hopen_task {
    struct cs__task t; /* first */
    struct heal *h;
    int i;
};

static int hopen_main(struct cs__task *t)
{
    struct hopen_task *o = (struct hopen_task *)t;

    return open_checked(o->h->cs, o->h->s, o->i, &o->h->src[o->i]);
}

/* Reads block + CRC of shard i (stripe st, blen) into its slot, as a pool
 * task; rc CM_ECORRUPT for a short block or a CRC mismatch. */
struct hread_task {
    struct cs__task t; /* first */
    struct heal *h;
    int i;
    uint64_t st;
    uint32_t blen;
};

static int hread_main(struct cs__task *t)
{
    struct hread_task *a = (struct hread_task *)t;
    struct heal *h = a->h;
    uint8_t *blk = h->buf + (size_t)a->i * h->stride;
    struct iovec iov = {blk, (size_t)a->blen + CS__CRC_LEN};
    ssize_t got = h->cs->be->ops->r_read(h->src[a->i], cs__stripe_off(h->s->block_size, a->st),
                                         &iov, 1);

    if (got < 0)
        return (int)got;
    if (got != (ssize_t)a->blen + CS__CRC_LEN ||
        cs__get32(blk + a->blen) != rs_crc32c(0, blk, a->blen))
        return CM_ECORRUPT;
    return 0;
}

/* Appends a rebuilt block + CRC to target i, as a pool task. */
struct hwrite_task {
    struct cs__task t; /* first */
    struct heal *h;
    int i;
    uint64_t off;
    uint32_t blen;
};

static int hwrite_main(struct cs__task *t)
{
    struct hwrite_task *a = (struct hwrite_task *)t;
    uint8_t *blk = a->h->buf + (size_t)a->i * a->h->stride, crc[CS__CRC_LEN];
    struct iovec iov[2] = {{blk, a->blen}, {crc, CS__CRC_LEN}};

    cs__put32(crc, rs_crc32c(0, blk, a->blen));
    return a->h->cs->be->ops->w_append(a->h->dst[a->i], a->off, iov, 2, 0);
}

/* Reads every stripe of every shard, rebuilds what is missing or rotten
 * and appends the blocks of the target shards. Returns 0, CM_EIO (a stripe
 * has fewer than k good blocks) or CM_EUNAVAIL (and because drives were
 * unreachable: retry later). */
static int heal_stripes(struct heal *h, const rs_ctx_t *rs)
{
    const struct cs_seg *s = h->s;
    uint64_t nstripes = cs__nstripes(s->size, s->k, s->block_size);
    uint8_t *blk[CS__MAX_SHARDS];
    struct hread_task rt[CS__MAX_SHARDS];
    struct hwrite_task wt[CS__MAX_SHARDS];
    struct cs__task *tasks[CS__MAX_SHARDS];
    int erased[CS__MAX_SHARDS], rc;

    for (int i = 0; i < h->n; i++)
        blk[i] = h->buf + (size_t)i * h->stride;
    for (uint64_t st = 0; st < nstripes; st++) {
        uint32_t blen = cs__blen(s->size, s->k, s->block_size, st);
        uint64_t off = cs__stripe_off(s->block_size, st);
        uint32_t ok = 0;
        int good = 0, nerased = 0, nt = 0;

        for (int i = 0; i < h->n; i++) {
            if (!h->src[i])
                continue;
            rt[nt] = (struct hread_task){
                .t.fn = hread_main, .h = h, .i = i, .st = st, .blen = blen};
            tasks[nt] = &rt[nt].t;
            nt++;
        }
        run_io(h->cs, tasks, nt);
        for (int j = 0; j < nt; j++) {
            int i = rt[j].i;
            if (rt[j].t.rc == 0) {
                ok |= 1u << i;
                continue;
            }
            if (rt[j].t.rc == CM_EUNAVAIL) {
                /* Gone mid-heal: not a source any more, and unknown. */
                h->cs->be->ops->r_close(h->src[i]);
                h->src[i] = NULL;
                if (!(h->targets & (1u << i)))
                    h->deferred |= 1u << i;
                continue;
            }
            if (!(h->targets & (1u << i)) && !(h->failed & (1u << i))) {
                cm_log(CM_LOG_WARN, "chunkstore: heal: segment %s shard %d stripe %llu is bad",
                       h->idhex, i, (unsigned long long)st);
                heal_add_target(h, i, st);
            }
        }
        for (int i = 0; i < h->n; i++) {
            if (ok & (1u << i))
                good++;
            else
                erased[nerased++] = i;
        }
        if (good < s->k) {
            cm_log(CM_LOG_WARN,
                   "chunkstore: heal: segment %s stripe %llu has only %d of %d needed blocks%s",
                   h->idhex, (unsigned long long)st, good, s->k,
                   h->deferred ? " (some drives unreachable)" : "");
            return h->deferred ? CM_EUNAVAIL : CM_EIO;
        }
        if (nerased > 0 && (rc = rs_decode(rs, blen, blk, erased, nerased)) != 0)
            return rc;
        nt = 0;
        for (int i = 0; i < h->n; i++) {
            if (!(h->targets & (1u << i)))
                continue;
            wt[nt] = (struct hwrite_task){
                .t.fn = hwrite_main, .h = h, .i = i, .off = off, .blen = blen};
            tasks[nt] = &wt[nt].t;
            nt++;
        }
        run_io(h->cs, tasks, nt);
        for (int j = 0; j < nt; j++)
            if (wt[j].t.rc != 0)
                target_fail(h, wt[j].i, wt[j].t.rc, "write");
    }
    return 0;
}

/* A heal-mode commit (header, durability, atomic replace), as a pool task. */
struct hcommit_task {
    struct cs__task t; /* first */
    struct heal *h;
    int i;
    uint8_t hdr[CS__HDR_LEN];
};

static int hcommit_main(struct cs__task *t)
{
    struct hcommit_task *c = (struct hcommit_task *)t;

    return c->h->cs->be->ops->w_commit(c->h->dst[c->i], c->hdr);
}

/* Under the segment lock: checks the segment was not deleted meanwhile
 * (every source shard still exists: cs_layout_delete() removes them under
 * this lock, so one that vanished means the segment is gone, and so must
 * ours be), then commits the targets. Returns 0 and *healed, or
 * CM_ENOTFOUND if the segment was deleted. */
static int heal_commit(struct heal *h, uint32_t *healed)
{
    const struct cs_seg *s = h->s;
    struct cs_hdr hd = {.k = s->k, .m = s->m, .block_size = s->block_size, .size = s->size};
    struct stat_task st[CS__MAX_SHARDS];
    struct hcommit_task ct[CS__MAX_SHARDS];
    struct cs__task *tasks[CS__MAX_SHARDS];
    int nt = 0, exists = 0, rc = 0;

    *healed = 0;
    memcpy(hd.id, s->id, CS_ID_LEN);
    for (int i = 0; i < h->n; i++) {
        if (!h->src[i])
            continue; /* (a target with a source: its old shard is still in place) */
        st[nt] = (struct stat_task){.t.fn = stat_main, .cs = h->cs, .s = s, .i = i};
        tasks[nt] = &st[nt].t;
        nt++;
    }
    pthread_mutex_lock(seg_lock(h->cs, s->id));
    run_io(h->cs, tasks, nt);
    for (int j = 0; j < nt; j++) {
        if (st[j].t.rc == CM_ENOTFOUND)
            rc = CM_ENOTFOUND;
        else if (st[j].t.rc == 0)
            exists = 1;
    }
    if (rc == 0 && !exists)
        rc = CM_EUNAVAIL; /* no source answered: try again later */
    if (rc == 0) {
        nt = 0;
        for (int i = 0; i < h->n; i++) {
            if (!(h->targets & (1u << i)))
                continue;
            ct[nt] = (struct hcommit_task){.t.fn = hcommit_main, .h = h, .i = i};
            hd.index = i;
            cs__hdr_encode(&hd, ct[nt].hdr);
            tasks[nt] = &ct[nt].t;
            nt++;
        }
        run_io(h->cs, tasks, nt);
        for (int j = 0; j < nt; j++) {
            int i = ct[j].i;
            if (ct[j].t.rc != 0) {
                target_fail(h, i, ct[j].t.rc, "commit");
                continue;
            }
            h->cs->be->ops->w_close(h->dst[i], 0);
            h->dst[i] = NULL;
            h->targets &= ~(1u << i);
            *healed |= 1u << i;
        }
    }
    pthread_mutex_unlock(seg_lock(h->cs, s->id));
    /* A delete from here on removes the new shards like any others. */
    for (int i = 0; i < h->n; i++)
        if (*healed & (1u << i))
            cm_log(CM_LOG_INFO, "chunkstore: healed segment %s shard %d on drive %d (%s)",
                   h->idhex, i, s->drives[i], drive_name(h->cs, s->drives[i]));
    return rc;
}

/* Rebuilds every damaged shard of segment s from the good ones. A whole-
 * segment scrub: mask (shards known bad) is only where the trouble showed.
 * Shards on drives that are down are left for later (res->deferred). */
static void heal_segment(cs_store_t *cs, const struct cs_seg *s, uint32_t mask,
                         struct heal_res *res)
{
    struct heal h = {.cs = cs, .s = s, .n = s->k + s->m};
    const rs_ctx_t *rs = cs->rs;
    rs_ctx_t *rs_own = NULL;
    struct hopen_task ot[CS__MAX_SHARDS];
    struct cs__task *tasks[CS__MAX_SHARDS];
    uint32_t down = 0, mine = 0;
    int nsrc = 0, nt = 0, rc = 0;
    void *mem;

    memset(res, 0, sizeof(*res));
    id_hex(s->id, h.idhex);
    for (int i = 0; i < h.n; i++) {
        if (s->drives[i] >= cs->ndrives)
            continue; /* a shard on a drive we do not have cannot be healed here */
        mine |= 1u << i;
        if (!drive_up(cs, s->drives[i]))
            down |= 1u << i;
    }
    mask &= mine;
    if (mask && (mask & ~down) == 0) {
        res->deferred = mask; /* nothing to do until those drives are back */
        return;
    }
    h.deferred = mask & down;
    if (s->k != cs->k || s->m != cs->m) {
        rs = rs_own = rs_ctx_new(s->k, s->m);
        if (!rs_own) {
            rc = CM_ENOMEM;
            goto out;
        }
    }
    h.stride = ((size_t)s->block_size + CS__CRC_LEN + CS_ALIGN - 1) & ~(size_t)(CS_ALIGN - 1);
    if (posix_memalign(&mem, CS_ALIGN, (size_t)h.n * h.stride) != 0) {
        rc = CM_ENOMEM;
        goto out;
    }
    h.buf = mem;
    for (int i = 0; i < h.n; i++) {
        if (!(mine & ~down & (1u << i)))
            continue;
        ot[nt] = (struct hopen_task){.t.fn = hopen_main, .h = &h, .i = i};
        tasks[nt] = &ot[nt].t;
        nt++;
    }
    run_io(cs, tasks, nt);
    for (int j = 0; j < nt; j++) {
        if (ot[j].t.rc == 0)
            nsrc++;
        else if (ot[j].t.rc == CM_EUNAVAIL)
            h.deferred |= 1u << ot[j].i;
    }
    if (nsrc < s->k) {
        /* Deleted (by cs_layout_delete, which won), lost beyond repair, or
         * too many drives unreachable right now. */
        cm_log(CM_LOG_INFO, "chunkstore: heal: segment %s has %d of %d needed shards; %s",
               h.idhex, nsrc, s->k, h.deferred ? "will retry" : "not healed");
        rc = h.deferred ? CM_EUNAVAIL : CM_ENOTFOUND;
        goto out;
    }
    for (int j = 0; j < nt; j++) {
        int i = ot[j].i;
        if (ot[j].t.rc == 0 || ot[j].t.rc == CM_EUNAVAIL)
            continue;
        cm_log(CM_LOG_WARN, "chunkstore: heal: segment %s shard %d: %s", h.idhex, i,
               ot[j].t.rc == CM_ENOTFOUND ? "missing" : "bad header");
        heal_add_target(&h, i, 0);
    }
    if ((rc = heal_stripes(&h, rs)) == 0 && h.targets)
        rc = heal_commit(&h, &res->healed);
out:
    for (int i = 0; i < CS__MAX_SHARDS; i++) {
        if (h.dst[i])
            cs->be->ops->w_close(h.dst[i], 1); /* not committed: remove what it wrote */
        if (h.src[i])
            cs->be->ops->r_close(h.src[i]);
    }
    if (rc == CM_EUNAVAIL) {
        /* Too few sources reachable: try the whole job again later. */
        res->deferred = h.deferred | mask | h.targets | h.failed;
        rc = 0;
    } else {
        res->deferred = h.deferred;
        res->failed = h.failed | (rc != 0 ? h.targets : 0);
    }
    if (rc == CM_ENOTFOUND)
        cm_log(CM_LOG_INFO, "chunkstore: heal: segment %s was deleted meanwhile; nothing healed",
               h.idhex);
    else if (rc != 0)
        cm_log(CM_LOG_WARN, "chunkstore: heal of segment %s failed: %s", h.idhex, cm_strerror(rc));
    res->rc = rc;
    free(h.buf);
    rs_ctx_free(rs_own);
}

/* ------------------------------------------------------------- manifests */

/* Checks a manifest blob (CS__MF_* table in cs_int.h) of id; on success
 * *body points into p and *crc is the body's CRC32C. */
static int mf_parse(const uint8_t *p, size_t n, const uint8_t id[CS_ID_LEN], cm_slice *body,
                    uint32_t *crc)
{
    uint32_t len;

    if (n < CS__MF_HDR || memcmp(p, CS__MF_MAGIC, 8) != 0 ||
        cs__get32(p + 32) != rs_crc32c(0, p, 32) || memcmp(p + 8, id, CS_ID_LEN) != 0)
        return CM_ECORRUPT;
    len = cs__get32(p + 24);
    if (len > CS__MF_MAX || n - CS__MF_HDR != len || cs__get32(p + 28) != rs_crc32c(0, p + 36, len))
        return CM_ECORRUPT;
    *body = CM_SLICE(p + CS__MF_HDR, len);
    *crc = cs__get32(p + 28);
    return 0;
}

/* Builds the blob of a manifest body (malloc()ed into *out). */
static int mf_build(const uint8_t id[CS_ID_LEN], cm_slice body, cm_buf *out)
{
    uint8_t hdr[CS__MF_HDR];

    memcpy(hdr, CS__MF_MAGIC, 8);
    memcpy(hdr + 8, id, CS_ID_LEN);
    cs__put32(hdr + 24, (uint32_t)body.n);
    cs__put32(hdr + 28, rs_crc32c(0, body.p, body.n));
    cs__put32(hdr + 32, rs_crc32c(0, hdr, 32));
    if (cm_buf_reserve(out, CS__MF_HDR + body.n) != 0)
        return CM_ENOMEM;
    cm_buf_append(out, hdr, CS__MF_HDR);
    cm_buf_append(out, body.p, body.n);
    return 0;
}

/* blob_put / blob_get of one copy, as a pool task. get: rc CM_ECORRUPT if
 * the copy does not parse (or does not match the record's CRC). */
struct blob_task {
    struct cs__task t; /* first */
    cs_store_t *cs;
    const struct cs_seg *s;
    int i;
    cm_slice in; /* put: the blob */
    cm_buf out;  /* get: the blob read */
};

static int bput_main(struct cs__task *t)
{
    struct blob_task *b = (struct blob_task *)t;

    return b->cs->be->ops->blob_put(b->cs->be, b->s->drives[b->i], b->s->id, b->in.p, b->in.n);
}

static int bget_main(struct cs__task *t)
{
    struct blob_task *b = (struct blob_task *)t;
    cm_slice body;
    uint32_t crc;
    int rc = b->cs->be->ops->blob_get(b->cs->be, b->s->drives[b->i], b->s->id, &b->out);

    if (rc != 0)
        return rc;
    if (mf_parse(b->out.p, b->out.n, b->s->id, &body, &crc) != 0 ||
        (b->s->type == CS__REC_MANIFEST && (crc != b->s->body_crc || body.n != b->s->body_len)))
        return CM_ECORRUPT;
    return 0;
}

/* Checks every copy of manifest s and rewrites the missing or bad ones
 * from a good one, under the record's lock after re-reading the good copy
 * (a delete in between removed it: nothing is rewritten then). */
static void heal_manifest(cs_store_t *cs, const struct cs_seg *s, struct heal_res *res)
{
    struct blob_task bt[CS__MAX_SHARDS], pt[CS__MAX_SHARDS];
    struct cs__task *tasks[CS__MAX_SHARDS];
    char hex[2 * CS_ID_LEN + 1];
    uint32_t bad = 0;
    int n = s->ncopies, nt = 0, good = -1, rc = 0;

    memset(res, 0, sizeof(*res));
    memset(bt, 0, sizeof(bt));
    id_hex(s->id, hex);
    for (int i = 0; i < n; i++) {
        if (s->drives[i] >= cs->ndrives)
            continue;
        if (!drive_up(cs, s->drives[i])) {
            res->deferred |= 1u << i;
            continue;
        }
        bt[nt] = (struct blob_task){.t.fn = bget_main, .cs = cs, .s = s, .i = i};
        tasks[nt] = &bt[nt].t;
        nt++;
    }
    run_io(cs, tasks, nt);
    for (int j = 0; j < nt; j++) {
        int i = bt[j].i;
        if (bt[j].t.rc == 0) {
            if (good < 0)
                good = j;
        } else if (bt[j].t.rc == CM_EUNAVAIL) {
            res->deferred |= 1u << i;
        } else {
            cm_log(CM_LOG_WARN, "chunkstore: manifest %s copy %d on drive %d (%s): %s", hex, i,
                   s->drives[i], drive_name(cs, s->drives[i]),
                   bt[j].t.rc == CM_ENOTFOUND ? "missing" : cm_strerror(bt[j].t.rc));
            bad |= 1u << i;
        }
    }
    if (bad && good < 0) {
        cm_log(CM_LOG_WARN, "chunkstore: manifest %s: no good copy%s", hex,
               res->deferred ? " reachable; will retry" : "; not healed");
        if (!res->deferred) {
            res->failed = bad;
            res->rc = CM_ENOTFOUND;
        } else {
            res->deferred |= bad;
        }
        goto out;
    }
    if (!bad)
        goto out;
    pthread_mutex_lock(seg_lock(cs, s->id));
    cm_buf_reset(&bt[good].out);
    if ((rc = bget_main(&bt[good].t)) != 0) {
        /* Deleted meanwhile (or just lost): write nothing. */
        pthread_mutex_unlock(seg_lock(cs, s->id));
        cm_log(CM_LOG_INFO, "chunkstore: heal: manifest %s is gone; nothing healed", hex);
        res->rc = rc;
        res->failed = bad;
        goto out;
    }
    nt = 0;
    for (int i = 0; i < n; i++) {
        if (!(bad & (1u << i)))
            continue;
        pt[nt] = (struct blob_task){.t.fn = bput_main, .cs = cs, .s = s, .i = i,
                                    .in = cm_buf_slice(&bt[good].out)};
        tasks[nt] = &pt[nt].t;
        nt++;
    }
    run_io(cs, tasks, nt);
    pthread_mutex_unlock(seg_lock(cs, s->id));
    for (int j = 0; j < nt; j++) {
        int i = pt[j].i;
        if (pt[j].t.rc == 0) {
            res->healed |= 1u << i;
            cm_log(CM_LOG_INFO, "chunkstore: healed manifest %s copy %d on drive %d (%s)", hex, i,
                   s->drives[i], drive_name(cs, s->drives[i]));
        } else if (pt[j].t.rc == CM_EUNAVAIL) {
            res->deferred |= 1u << i;
        } else {
            res->failed |= 1u << i;
        }
    }
out:
    for (int j = 0; j < CS__MAX_SHARDS; j++)
        cm_buf_free(&bt[j].out);
}

/* Runs one heal of record s, registered as a (see heal_begin_locked). */
static void heal_do(cs_store_t *cs, struct cs__heal_active *a, const struct cs_seg *s,
                    uint32_t mask, struct heal_res *res)
{
    if (cs__rec_is_seg(s))
        heal_segment(cs, s, mask, res);
    else
        heal_manifest(cs, s, res);
    heal_end(cs, a, res->healed, res->rc != 0 || res->failed != 0);
}

/* Runs one heal of record s now, on the calling thread, never at the same
 * time as another heal of it. */
static void heal_run(cs_store_t *cs, const struct cs_seg *s, uint32_t mask, struct heal_res *res)
{
    struct cs__heal_active a;

    pthread_mutex_lock(&cs->heal.mu);
    heal_begin_locked(&cs->heal, &a, s->id, mask);
    pthread_mutex_unlock(&cs->heal.mu);
    heal_do(cs, &a, s, mask, res);
}

/* The first job to run now: not deferred, due, or deferred before the
 * backend's epoch changed. While stopping, deferred jobs never run, and
 * over nodes none do (each is a scrub over the network: a closing store
 * leaves them to the next heal walk). */
static struct cs__heal_job *heal_pick(cs_store_t *cs, uint64_t now, uint64_t epoch,
                                      uint64_t *next_due)
{
    struct cs__healer *h = &cs->heal;
    struct cs__heal_job **pp, *j;

    *next_due = UINT64_MAX;
    if (h->stop && cs->parallel)
        return NULL;
    for (pp = &h->head; (j = *pp) != NULL; pp = &j->next) {
        if (!j->deferred || (!h->stop && (j->due_ns <= now || j->epoch != epoch))) {
            *pp = j->next;
            queue_fix_tail(h);
            h->nqueued--;
            return j;
        }
        if (j->due_ns < *next_due)
            *next_due = j->due_ns;
    }
    return NULL;
}

static void *heal_main(void *arg)
{
    cs_store_t *cs = arg;
    struct cs__healer *h = &cs->heal;
    struct cs__heal_active a;
    struct heal_res res;

    pthread_mutex_lock(&h->mu);
    for (;;) {
        uint64_t now = cm_mono_ns(), epoch = cs->be->ops->epoch(cs->be), due;
        struct cs__heal_job *j = heal_pick(cs, now, epoch, &due);
        if (!j) {
            if (h->stop)
                break; /* stopping, nothing ready */
            if (due == UINT64_MAX) {
                pthread_cond_wait(&h->work, &h->mu);
            } else {
                /* Wake at the next due job, or in a second to look at the epoch. */
                struct timespec ts;
                if (due > now + CS__HEAL_RETRY_NS)
                    due = now + CS__HEAL_RETRY_NS;
                ts.tv_sec = (time_t)(due / 1000000000);
                ts.tv_nsec = (long)(due % 1000000000);
                pthread_cond_timedwait(&h->work, &h->mu, &ts);
            }
            continue;
        }
        /* Active before the lock drops: cs_store_heal_wait() never sees
         * the job in neither place. */
        heal_begin_locked(h, &a, j->seg.id, j->mask);
        pthread_mutex_unlock(&h->mu);
        heal_do(cs, &a, &j->seg, j->mask, &res);
        pthread_mutex_lock(&h->mu);
        if (res.deferred && !h->stop) {
            /* A drive is down: keep the job (merged into a newer one for the
             * same id, if any) and try again later. */
            struct cs__heal_job *o = h->head;
            while (o && memcmp(o->seg.id, j->seg.id, CS_ID_LEN) != 0)
                o = o->next;
            if (o) {
                o->mask |= res.deferred;
                free(j);
            } else if (h->nqueued < CS__HEAL_QUEUE_MAX) {
                j->mask = res.deferred;
                j->deferred = 1;
                j->due_ns = cm_mono_ns() + CS__HEAL_RETRY_NS;
                j->epoch = epoch;
                j->next = NULL;
                *h->tailp = j;
                h->tailp = &j->next;
                h->nqueued++;
            } else {
                free(j);
            }
        } else {
            free(j);
        }
        pthread_cond_broadcast(&h->idle);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* ------------------------------------------------------------------ check */

enum { CHK_OK = 0, CHK_MISSING, CHK_CORRUPT, CHK_UNREACHABLE };

/* Checks one shard where it lives, as a pool task: deep = 0 stats it and
 * checks its header, deep = 1 has the backend verify every block. */
struct chk_task {
    struct cs__task t; /* first */
    cs_store_t *cs;
    const struct cs_seg *s;
    int i, deep;
    int verdict;    /* CHK_* */
    uint64_t bytes; /* deep: shard bytes verified */
};

static int chk_main(struct cs__task *t)
{
    struct chk_task *c = (struct chk_task *)t;
    const struct cs__be_ops *ops = c->cs->be->ops;
    const struct cs_seg *s = c->s;
    uint64_t want = cs__shard_len(s->size, s->k, s->block_size), len = 0;
    int d = s->drives[c->i], rc;

    if (c->deep) {
        struct cs__verify v;
        if ((rc = ops->verify(c->cs->be, d, s->id, c->i, &v)) == 0) {
            c->bytes = v.len;
            if (v.len != want || v.bad_blocks != 0 || hdr_mismatch(s, c->i, v.hdr))
                rc = CM_ECORRUPT;
        }
    } else if ((rc = ops->stat(c->cs->be, d, s->id, c->i, &len)) == 0) {
        void *h;
        if (len != want)
            rc = CM_ECORRUPT;
        else if ((rc = open_checked(c->cs, s, c->i, &h)) == 0)
            ops->r_close(h);
    }
    c->verdict = rc == 0                ? CHK_OK
                 : rc == CM_ENOTFOUND   ? CHK_MISSING
                 : rc == CM_EUNAVAIL    ? CHK_UNREACHABLE
                                        : CHK_CORRUPT; /* bad bytes, or unreadable ones */
    return rc;
}

static void check_segment(cs_store_t *cs, const struct cs_seg *s, int deep,
                          struct cs_check_stats *acc)
{
    struct chk_task ct[CS__MAX_SHARDS];
    struct cs__task *tasks[CS__MAX_SHARDS];
    char hex[2 * CS_ID_LEN + 1];
    uint32_t bad = 0, later = 0;
    int n = s->k + s->m, nt = 0;

    acc->segments++;
    for (int i = 0; i < n; i++) {
        if (s->drives[i] >= cs->ndrives) {
            acc->shards_failed++; /* not ours to check */
            continue;
        }
        if (!drive_up(cs, s->drives[i])) {
            later |= 1u << i;
            continue;
        }
        ct[nt] = (struct chk_task){.t.fn = chk_main, .cs = cs, .s = s, .i = i, .deep = deep};
        tasks[nt] = &ct[nt].t;
        nt++;
    }
    run_io(cs, tasks, nt);
    id_hex(s->id, hex);
    for (int j = 0; j < nt; j++) {
        int i = ct[j].i;
        switch (ct[j].verdict) {
        case CHK_OK:
            acc->shards_checked++;
            break;
        case CHK_MISSING:
            acc->shards_checked++;
            acc->shards_missing++;
            bad |= 1u << i;
            break;
        case CHK_CORRUPT:
            acc->shards_checked++;
            acc->shards_corrupt++;
            bad |= 1u << i;
            break;
        default:
            later |= 1u << i;
            break;
        }
        if (deep)
            acc->bytes_verified += ct[j].bytes;
        if (ct[j].verdict != CHK_OK)
            cm_log(CM_LOG_WARN, "chunkstore: check: segment %s shard %d on drive %d (%s): %s",
                   hex, i, s->drives[i], drive_name(cs, s->drives[i]),
                   ct[j].verdict == CHK_MISSING   ? "missing"
                   : ct[j].verdict == CHK_CORRUPT ? "corrupt"
                                                  : "unreachable");
    }
    if (bad) {
        /* The heal scrubs the whole segment. A bad shard it neither rewrote
         * nor failed on was found good: another heal of this segment (a
         * reader's, which heal_run waited for) got there first. */
        struct heal_res res;
        uint32_t left;
        heal_run(cs, s, bad, &res);
        left = res.rc != 0 ? bad & ~res.healed : (res.failed | res.deferred) & bad;
        acc->shards_healed += (uint64_t)nbits(res.healed);
        acc->shards_failed += (uint64_t)nbits(left);
        later |= res.deferred & ~bad;
        if (res.deferred & bad)
            heal_enqueue(cs, s, res.deferred & bad);
    }
    acc->shards_failed += (uint64_t)nbits(later);
    if (later)
        heal_enqueue(cs, s, later); /* the heal thread retries when the drives are back */
}

static void check_manifest(cs_store_t *cs, const struct cs_seg *s, struct cs_check_stats *acc)
{
    struct heal_res res;

    acc->manifests++;
    heal_run(cs, s, 0, &res);
    acc->manifests_healed += (uint64_t)nbits(res.healed);
    acc->shards_failed += (uint64_t)nbits(res.failed | res.deferred);
    for (int i = 0; i < s->ncopies; i++)
        if (s->drives[i] >= cs->ndrives)
            acc->shards_failed++;
    if (res.deferred)
        heal_enqueue(cs, s, res.deferred);
}

int cs_layout_check(cs_store_t *cs, cm_slice layout, int deep, struct cs_check_stats *acc)
{
    cm_reader r = {layout.p, layout.n};
    struct cs_seg s;
    uint64_t size;
    size_t count;
    int rc;

    if ((rc = cs__layout_scan(layout, &size, &count)) != 0)
        return rc;
    while (r.n > 0) {
        cs__rec_decode(&r, &s); /* validated above */
        if (s.type == CS__REC_SEGMENT)
            check_segment(cs, &s, deep, acc);
        else
            check_manifest(cs, &s, acc);
    }
    return 0;
}

/* ------------------------------------------------------------- manifests */

/* A manifest being written: owned by one caller. */
struct cs_manifest {
    cs_store_t *cs;
    struct cs_seg rec; /* id, copies, drives; CS__REC_MINTENT until committed */
    uint32_t down;     /* copies placed on drives that were down */
};

int cs_manifest_open(cs_store_t *cs, cm_buf *out_intent, cs_manifest_t **out)
{
    cs_manifest_t *mf = calloc(1, sizeof(*mf));
    int copies = cs->m + 1 < cs->ndrives ? cs->m + 1 : cs->ndrives, rc;

    if (!mf)
        return CM_ENOMEM;
    mf->cs = cs;
    mf->rec.type = CS__REC_MINTENT;
    mf->rec.ncopies = copies;
    if ((rc = cm_random_bytes(mf->rec.id, CS_ID_LEN)) != 0 ||
        (rc = place(cs, mf->rec.id, copies, mf->rec.drives, &mf->down)) != 0 ||
        (rc = cs__rec_encode(out_intent, &mf->rec)) != 0) {
        free(mf);
        return rc;
    }
    *out = mf;
    return 0;
}

int cs_manifest_commit(cs_manifest_t *mf, cm_slice body, cm_buf *out_layout)
{
    cs_store_t *cs = mf->cs;
    struct blob_task pt[CS__MAX_SHARDS];
    struct cs__task *tasks[CS__MAX_SHARDS];
    char hex[2 * CS_ID_LEN + 1];
    cm_buf blob = {0};
    uint32_t ok = 0, all = 0;
    int n = mf->rec.ncopies, need = n < 2 ? n : 2, nt = 0, rc, first = 0, unavail = mf->down != 0;

    if (body.n > CS__MF_MAX)
        return CM_ETOOBIG;
    if (cm_buf_reserve(out_layout, CS__MREC_FIXED + 2 * (size_t)n) != 0)
        return CM_ENOMEM;
    if ((rc = mf_build(mf->rec.id, body, &blob)) != 0)
        return rc;
    id_hex(mf->rec.id, hex);
    for (int i = 0; i < n; i++) {
        all |= 1u << i;
        if (mf->down & (1u << i))
            continue;
        pt[nt] = (struct blob_task){
            .t.fn = bput_main, .cs = cs, .s = &mf->rec, .i = i, .in = cm_buf_slice(&blob)};
        tasks[nt] = &pt[nt].t;
        nt++;
    }
    run_batch(cs, tasks, nt); /* every copy at once, for both backends */
    for (int j = 0; j < nt; j++) {
        int i = pt[j].i, e = pt[j].t.rc;
        if (e == 0) {
            ok |= 1u << i;
            continue;
        }
        cm_log(CM_LOG_ERROR, "chunkstore: manifest %s copy %d on drive %d (%s): %s", hex, i,
               mf->rec.drives[i], drive_name(cs, mf->rec.drives[i]), cm_strerror(e));
        if (!first)
            first = e;
        if (e == CM_EUNAVAIL)
            unavail = 1;
    }
    cm_buf_free(&blob);
    if (nbits(ok) < need) {
        cm_log(CM_LOG_ERROR, "chunkstore: manifest %s: %d of %d copies written, %d needed", hex,
               nbits(ok), n, need);
        return unavail ? CM_EUNAVAIL : first ? first : CM_EUNAVAIL;
    }
    mf->rec.type = CS__REC_MANIFEST;
    mf->rec.body_len = (uint32_t)body.n;
    mf->rec.body_crc = rs_crc32c(0, body.p, body.n);
    if ((rc = cs__rec_encode(out_layout, &mf->rec)) != 0) {
        mf->rec.type = CS__REC_MINTENT;
        return rc;
    }
    if (ok != all) {
        cm_log(CM_LOG_WARN,
               "chunkstore: manifest %s written with %d of %d copies; the missing ones are "
               "queued for healing",
               hex, nbits(ok), n);
        heal_enqueue(cs, &mf->rec, all & ~ok);
    }
    free(mf);
    return 0;
}

void cs_manifest_abort(cs_manifest_t *mf)
{
    if (!mf)
        return;
    delete_rec(mf->cs, &mf->rec); /* best effort: the intent retries it */
    free(mf);
}

/* (id, drive) pairs found by listing drives. */
struct ent {
    uint8_t id[CS_ID_LEN];
    uint16_t d;
};
struct ent_list {
    struct ent *a;
    size_t n, cap;
    uint16_t d;  /* the drive being listed */
    int nomem;   /* an append failed */
};

static void ent_add(void *arg, const uint8_t id[CS_ID_LEN])
{
    struct ent_list *l = arg;

    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 256;
        void *p = realloc(l->a, cap * sizeof(*l->a));
        if (!p) {
            l->nomem = 1;
            return;
        }
        l->a = p;
        l->cap = cap;
    }
    memcpy(l->a[l->n].id, id, CS_ID_LEN);
    l->a[l->n++].d = l->d;
}

static void ent_add_shard(void *arg, const uint8_t id[CS_ID_LEN], int index)
{
    (void)index;
    ent_add(arg, id);
}

static int ent_cmp(const void *a, const void *b)
{
    const struct ent *x = a, *y = b;
    int c = memcmp(x->id, y->id, CS_ID_LEN);

    return c ? c : (x->d > y->d) - (x->d < y->d);
}

/* Lists one drive's shards (blobs = 0) or blobs into its own list, as a
 * pool task. */
struct list_task {
    struct cs__task t; /* first */
    cs_store_t *cs;
    int blobs;
    struct ent_list l;
};

static int list_main(struct cs__task *t)
{
    struct list_task *lt = (struct list_task *)t;
    struct cs__be *be = lt->cs->be;
    int rc = lt->blobs ? be->ops->blob_list(be, lt->l.d, ent_add, &lt->l)
                       : be->ops->list(be, lt->l.d, ent_add_shard, &lt->l);

    return rc ? rc : lt->l.nomem ? CM_ENOMEM : 0;
}

/* Lists every drive (all at once over nodes) and returns the sorted pairs
 * in *out (malloc()ed). Unreachable drives are logged and skipped: the
 * result is then CM_EUNAVAIL, with the pairs of the others. */
static int list_all(cs_store_t *cs, int blobs, struct ent_list *out)
{
    struct list_task *lt = calloc((size_t)cs->ndrives, sizeof(*lt));
    struct cs__task **tasks = calloc((size_t)cs->ndrives, sizeof(*tasks));
    int rc = 0;

    memset(out, 0, sizeof(*out));
    if (!lt || !tasks) {
        free(lt);
        free(tasks);
        return CM_ENOMEM;
    }
    for (int d = 0; d < cs->ndrives; d++) {
        lt[d] = (struct list_task){.t.fn = list_main, .cs = cs, .blobs = blobs};
        lt[d].l.d = (uint16_t)d;
        tasks[d] = &lt[d].t;
    }
    run_io(cs, tasks, cs->ndrives);
    for (int d = 0; d < cs->ndrives; d++) {
        struct ent_list *l = &lt[d].l;
        int e = lt[d].t.rc;
        if (e != 0) {
            cm_log(CM_LOG_WARN, "chunkstore: list drive %d (%s): %s", d, drive_name(cs, d),
                   cm_strerror(e));
            if (rc == 0 || e == CM_EUNAVAIL)
                rc = e;
        }
        if (l->n > 0 && out->n + l->n > out->cap) {
            void *p = realloc(out->a, (out->n + l->n) * sizeof(*out->a));
            if (!p) {
                rc = CM_ENOMEM;
            } else {
                out->a = p;
                out->cap = out->n + l->n;
            }
        }
        if (l->n > 0 && out->n + l->n <= out->cap) {
            memcpy(out->a + out->n, l->a, l->n * sizeof(*l->a));
            out->n += l->n;
        }
        free(l->a);
    }
    free(lt);
    free(tasks);
    if (out->n > 0)
        qsort(out->a, out->n, sizeof(*out->a), ent_cmp);
    return rc;
}

/* The settings blob's fixed id: all 0xff (a random manifest id never is). */
static const uint8_t settings_id[CS_ID_LEN] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                               0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

/* Drops the settings blob from a sorted blob list. */
static void drop_settings(struct ent_list *l)
{
    size_t j = 0;
    for (size_t i = 0; i < l->n; i++)
        if (memcmp(l->a[i].id, settings_id, CS_ID_LEN) != 0)
            l->a[j++] = l->a[i];
    l->n = j;
}

int cs_manifest_scan(cs_store_t *cs, int (*fn)(void *arg, cm_slice body, cm_slice record),
                     void *arg)
{
    struct ent_list l;
    cm_buf blob = {0}, rec = {0};
    char hex[2 * CS_ID_LEN + 1];
    int rc = list_all(cs, 1, &l), stop = 0;

    drop_settings(&l);

    for (size_t i = 0, e; i < l.n && !stop; i = e) {
        struct cs_seg s;
        cm_slice body = CM_SLICE_NULL;
        uint32_t crc = 0;
        int found = 0;

        for (e = i; e < l.n && memcmp(l.a[e].id, l.a[i].id, CS_ID_LEN) == 0; e++)
            ;
        memset(&s, 0, sizeof(s));
        s.type = CS__REC_MANIFEST;
        memcpy(s.id, l.a[i].id, CS_ID_LEN);
        for (size_t j = i; j < e && s.ncopies < CS__MAX_SHARDS; j++)
            s.drives[s.ncopies++] = l.a[j].d;
        for (size_t j = i; j < e && !found; j++) {
            cm_buf_reset(&blob);
            if (cs->be->ops->blob_get(cs->be, l.a[j].d, s.id, &blob) == 0 &&
                mf_parse(blob.p, blob.n, s.id, &body, &crc) == 0)
                found = 1;
        }
        if (!found) {
            id_hex(s.id, hex);
            cm_log(CM_LOG_WARN, "chunkstore: manifest %s: no readable copy on %d drive(s)", hex,
                   s.ncopies);
            continue;
        }
        s.body_len = (uint32_t)body.n;
        s.body_crc = crc;
        cm_buf_reset(&rec);
        if (cs__rec_encode(&rec, &s) != 0) {
            rc = CM_ENOMEM;
            break;
        }
        if ((stop = fn(arg, body, cm_buf_slice(&rec))) != 0)
            rc = stop;
    }
    free(l.a);
    cm_buf_free(&blob);
    cm_buf_free(&rec);
    return rc;
}

/* Calls fn once per distinct id in a sorted list. */
static void each_id(const struct ent_list *l, void (*fn)(void *arg, const uint8_t id[CS_ID_LEN]),
                    void *arg)
{
    for (size_t i = 0; i < l->n; i++)
        if (i == 0 || memcmp(l->a[i].id, l->a[i - 1].id, CS_ID_LEN) != 0)
            fn(arg, l->a[i].id);
}

int cs_store_list_manifests(cs_store_t *cs, void (*fn)(void *arg, const uint8_t id[CS_ID_LEN]),
                            void *arg)
{
    struct ent_list l;
    int rc = list_all(cs, 1, &l);

    drop_settings(&l);
    each_id(&l, fn, arg);
    free(l.a);
    return rc;
}

/* ------------------------------------------------------------- settings */

/* The drives that hold the settings blob: the first CS__MAX_SHARDS. */
static void settings_rec(const cs_store_t *cs, struct cs_seg *s)
{
    memset(s, 0, sizeof(*s));
    s->type = CS__REC_MINTENT; /* not a manifest record: no body CRC to match */
    memcpy(s->id, settings_id, CS_ID_LEN);
    s->ncopies = cs->ndrives < CS__MAX_SHARDS ? cs->ndrives : CS__MAX_SHARDS;
    for (int i = 0; i < s->ncopies; i++)
        s->drives[i] = (uint16_t)i;
}

int cs_store_settings_put(cs_store_t *cs, cm_slice body, int *out_copies)
{
    struct blob_task pt[CS__MAX_SHARDS];
    struct cs__task *tasks[CS__MAX_SHARDS];
    struct cs_seg s;
    cm_buf blob = {0};
    int nt = 0, ok = 0, rc;

    if (body.n > CS__MF_MAX)
        return CM_ETOOBIG;
    settings_rec(cs, &s);
    if ((rc = mf_build(settings_id, body, &blob)) != 0)
        return rc;
    for (int i = 0; i < s.ncopies; i++) {
        if (!drive_up(cs, s.drives[i]))
            continue;
        pt[nt] = (struct blob_task){
            .t.fn = bput_main, .cs = cs, .s = &s, .i = i, .in = cm_buf_slice(&blob)};
        tasks[nt] = &pt[nt].t;
        nt++;
    }
    run_batch(cs, tasks, nt);
    for (int j = 0; j < nt; j++)
        ok += pt[j].t.rc == 0;
    cm_buf_free(&blob);
    if (out_copies)
        *out_copies = ok;
    return ok > 0 ? 0 : CM_EUNAVAIL;
}

int cs_store_settings_get(cs_store_t *cs, int (*fn)(void *arg, cm_slice body), void *arg)
{
    struct blob_task bt[CS__MAX_SHARDS];
    struct cs__task *tasks[CS__MAX_SHARDS];
    struct cs_seg s;
    int nt = 0, rc = 0;

    settings_rec(cs, &s);
    memset(bt, 0, sizeof(bt));
    for (int i = 0; i < s.ncopies; i++) {
        if (!drive_up(cs, s.drives[i]))
            continue;
        bt[nt] = (struct blob_task){.t.fn = bget_main, .cs = cs, .s = &s, .i = i};
        tasks[nt] = &bt[nt].t;
        nt++;
    }
    run_batch(cs, tasks, nt);
    for (int j = 0; j < nt && rc == 0; j++) {
        cm_slice body;
        uint32_t crc;
        if (bt[j].t.rc == 0 && mf_parse(bt[j].out.p, bt[j].out.n, settings_id, &body, &crc) == 0)
            rc = fn(arg, body);
    }
    for (int j = 0; j < nt; j++)
        cm_buf_free(&bt[j].out);
    return rc;
}

/* ------------------------------------------------------ recover and list */

int cs_store_recover(cs_store_t *cs)
{
    int rc = 0;

    for (int d = 0; d < cs->ndrives; d++) {
        int e = cs->be->ops->recover(cs->be, d);
        if (e == CM_EUNAVAIL) {
            cm_log(CM_LOG_WARN, "chunkstore: recover: drive %d (%s) unreachable; skipped", d,
                   drive_name(cs, d));
        } else if (e != 0 && rc == 0) {
            rc = e;
        }
    }
    return rc;
}

int cs_store_list(cs_store_t *cs, void (*fn)(void *arg, const uint8_t id[CS_ID_LEN]), void *arg)
{
    struct ent_list l;
    int rc = list_all(cs, 0, &l);

    /* Each id appears once per shard: sorted, each distinct id once. */
    each_id(&l, fn, arg);
    free(l.a);
    return rc;
}
