/* chunkstore/store.c - the local shard store over drive directories: shard
 * paths, the I/O pool, the segment writer (stripe buffer, encode, write
 * under the final names, parallel fdatasync + directory fsync), the reader
 * (CRC32C verify, rebuild from parity, damage reports), the heal thread
 * (rebuild damaged shard files: tmp + fsync + rename), delete, recover,
 * list. Encodings live in layout.c and format.c, placement in placement.c. */
#include "chunkstore/cs_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define CS_PATH_MAX 4096
#define CS_ALIGN 64 /* block buffers are 64-byte aligned for ISA-L's SIMD */
/* A writer asks the kernel to start writing back each shard file once this
 * many bytes of it are dirty, so the final fdatasync finds little to do and
 * the disk works while the object still streams in. */
#define CS_KICK_BYTES ((uint64_t)1 << 20)

static int cm_from_errno(int e)
{
    switch (e) {
    case ENOSPC:
    case EDQUOT:
        return CM_ENOSPACE;
    case ENOENT:
        return CM_ENOTFOUND;
    case ENOMEM:
        return CM_ENOMEM;
    default:
        return CM_EIO;
    }
}

static void id_hex(const uint8_t id[CS_ID_LEN], char out[2 * CS_ID_LEN + 1])
{
    cm_hex_encode(id, CS_ID_LEN, out);
}

/* Writes all of iov at off, retrying short writes and EINTR. */
static int pwritev_all(int fd, struct iovec *iov, int niov, off_t off)
{
    while (niov > 0) {
        ssize_t w = pwritev(fd, iov, niov, off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return cm_from_errno(errno);
        }
        if (w == 0)
            return CM_EIO;
        off += w;
        while (niov > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            niov--;
        }
        if (niov > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* Reads up to the full iov at off; returns bytes read (short at EOF) or -1. */
static ssize_t preadv_full(int fd, struct iovec *iov, int niov, off_t off)
{
    ssize_t total = 0;

    while (niov > 0) {
        ssize_t n = preadv(fd, iov, niov, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            break;
        off += n;
        total += n;
        while (niov > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            niov--;
        }
        if (niov > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return total;
}

/* ------------------------------------------------------------------ pool */

static void *pool_main(void *arg)
{
    struct cs__pool *p = arg;

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

/* Runs the n tasks on the pool and returns when all are done: 0, or the
 * first task's (by index) non-zero rc. The caller runs any of its tasks no
 * thread has picked up yet. */
static int run_batch(cs_store_t *cs, struct cs__task *const *tasks, int n)
{
    struct cs__pool *p = &cs->pool;
    struct cs__batch b = {n};
    int rc = 0;

    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < n; i++) {
        tasks[i]->batch = &b;
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
    while (b.left > 0) {
        struct cs__task *t = NULL, *prev = NULL;
        for (t = p->head; t && t->batch != &b; t = t->next)
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
        b.left--;
    }
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < n && rc == 0; i++)
        rc = tasks[i]->rc;
    return rc;
}

/* ------------------------------------------------------------------ store */

static void heal_stop(cs_store_t *cs);

/* Creates the 256 fan-out directories of a drive and makes their entries
 * durable, once, at open: a writer then never creates a directory, so it
 * never depends on another writer's fsync of the drive directory. Failure
 * is not fatal (a read-only drive still serves reads); writers then create
 * what they need. */
static void make_fanouts(const char *drive)
{
    char path[CS_PATH_MAX];
    int created = 0;

    for (int i = 0; i < 256; i++) {
        snprintf(path, sizeof(path), "%s/%02x", drive, i);
        if (mkdir(path, 0755) == 0) {
            created = 1;
        } else if (errno != EEXIST) {
            cm_log(CM_LOG_WARN, "chunkstore: mkdir %s: %s", path, strerror(errno));
            return;
        }
    }
    if (created && cm_fsync_dir(drive) != 0)
        cm_log(CM_LOG_WARN, "chunkstore: fsync directory %s failed", drive);
}

int cs_store_open_local(const char *const *drives, int ndrives, int k, int m, size_t block_size,
                        cs_store_t **out)
{
    cs_store_t *cs;
    int rc, nthreads;

    if (!drives || ndrives < 1 || ndrives > CS__MAX_DRIVES || k < 1 || k > RS_MAX_K || m < 0 ||
        m > RS_MAX_M || k + m > ndrives || block_size < 1 || block_size > CS__MAX_BLOCK)
        return CM_EINVAL;
    cs = calloc(1, sizeof(*cs));
    if (!cs)
        return CM_ENOMEM;
    cs->k = k;
    cs->m = m;
    cs->block_size = (uint32_t)block_size;
    pthread_mutex_init(&cs->pool.mu, NULL);
    pthread_cond_init(&cs->pool.work, NULL);
    pthread_cond_init(&cs->pool.done, NULL);
    pthread_mutex_init(&cs->heal.mu, NULL);
    pthread_cond_init(&cs->heal.work, NULL);
    pthread_cond_init(&cs->heal.idle, NULL);
    cs->heal.tailp = &cs->heal.head;
    for (int i = 0; i < CS__SEG_LOCKS; i++)
        pthread_mutex_init(&cs->seg_mu[i], NULL);
    cs->inited = 1;
    cs->drives = calloc((size_t)ndrives, sizeof(char *));
    rc = CM_ENOMEM;
    if (!cs->drives)
        goto out;
    cs->ndrives = ndrives;
    for (int i = 0; i < ndrives; i++) {
        size_t n = strlen(drives[i]);
        while (n > 1 && drives[i][n - 1] == '/')
            n--;
        cs->drives[i] = cm_slice_strdup(CM_SLICE(drives[i], n));
        if (!cs->drives[i])
            goto out;
        if ((rc = cm_mkdir_p(cs->drives[i], 0755)) != 0) {
            cm_log(CM_LOG_ERROR, "chunkstore: cannot create drive directory %s", cs->drives[i]);
            goto out;
        }
        make_fanouts(cs->drives[i]);
        rc = CM_ENOMEM;
    }
    cs->rs = rs_ctx_new(k, m);
    if (!cs->rs)
        goto out;
    /* Each finishing writer queues 2(k+m) syncs: enough threads for two
     * writers' worth at once. Fewer (if creation fails) only costs speed. */
    nthreads = 4 * (k + m) < CS__POOL_MAX ? 4 * (k + m) : CS__POOL_MAX;
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
        pthread_mutex_destroy(&cs->pool.mu);
        pthread_cond_destroy(&cs->pool.work);
        pthread_cond_destroy(&cs->pool.done);
        pthread_mutex_destroy(&cs->heal.mu);
        pthread_cond_destroy(&cs->heal.work);
        pthread_cond_destroy(&cs->heal.idle);
        for (int i = 0; i < CS__SEG_LOCKS; i++)
            pthread_mutex_destroy(&cs->seg_mu[i]);
    }
    if (cs->drives)
        for (int i = 0; i < cs->ndrives; i++)
            free(cs->drives[i]);
    free(cs->drives);
    rs_ctx_free(cs->rs);
    free(cs);
}

static pthread_mutex_t *seg_lock(cs_store_t *cs, const uint8_t id[CS_ID_LEN])
{
    return &cs->seg_mu[(id[0] | (unsigned)id[1] << 8) % CS__SEG_LOCKS];
}

int cs__shard_path(const cs_store_t *cs, int drive, const uint8_t id[CS_ID_LEN], int index, int tmp,
                   char *out, size_t n)
{
    char hex[2 * CS_ID_LEN + 1];
    int len;

    if (drive < 0 || drive >= cs->ndrives)
        return CM_EINVAL;
    id_hex(id, hex);
    len =
        snprintf(out, n, "%s/%.2s/%s.%d%s", cs->drives[drive], hex, hex, index, tmp ? ".tmp" : "");
    return len < 0 || (size_t)len >= n ? CM_EINVAL : 0;
}

/* "DRIVE/ab": the fan-out directory of a segment on a drive. */
static int fanout_path(const cs_store_t *cs, int drive, const uint8_t id[CS_ID_LEN], char *out,
                       size_t n)
{
    char hex[2 * CS_ID_LEN + 1];
    int len;

    if (drive < 0 || drive >= cs->ndrives)
        return CM_EINVAL;
    id_hex(id, hex);
    len = snprintf(out, n, "%s/%.2s", cs->drives[drive], hex);
    return len < 0 || (size_t)len >= n ? CM_EINVAL : 0;
}

/* Creates the fan-out directory of id on drive d if needed; *created tells
 * whether this call made it (then the drive directory needs an fsync). */
static int make_fanout(const cs_store_t *cs, int d, const uint8_t id[CS_ID_LEN], int *created)
{
    char path[CS_PATH_MAX];
    int rc;

    *created = 0;
    if ((rc = fanout_path(cs, d, id, path, sizeof(path))) != 0)
        return rc;
    if (mkdir(path, 0755) == 0) {
        *created = 1;
    } else if (errno != EEXIST) {
        rc = cm_from_errno(errno);
        cm_log(CM_LOG_ERROR, "chunkstore: mkdir %s: %s", path, strerror(errno));
        return rc;
    }
    return 0;
}

/* Makes the entries of drive d's fan-out directory of id durable (top: of
 * the drive directory instead, which holds the fan-out directory's entry). */
static int sync_dir(const cs_store_t *cs, int d, const uint8_t id[CS_ID_LEN], int top)
{
    char dir[CS_PATH_MAX];
    int rc;

    if (top)
        snprintf(dir, sizeof(dir), "%s", cs->drives[d]);
    else if ((rc = fanout_path(cs, d, id, dir, sizeof(dir))) != 0)
        return rc;
    if ((rc = cm_fsync_dir(dir)) != 0) {
        cm_log(CM_LOG_ERROR, "chunkstore: fsync directory %s: %s", dir, cm_strerror(rc));
        return rc;
    }
    return 0;
}

/* ----------------------------------------------------------------- writer */

/* Owned by one caller thread; finish() briefly shares it read-only with the
 * pool threads, each of which touches only its own task. */
struct cs_writer {
    cs_store_t *cs;
    struct cs_seg seg;              /* id, geometry, drives; size counts bytes accepted */
    int fds[CS__MAX_SHARDS];        /* the k+m shard files; -1 until created / when closed */
    int created;                    /* fds[] were created (first stripe or finish) */
    uint8_t newdir[CS__MAX_SHARDS]; /* fan-out dir was missing: fsync the drive dir too */
    uint8_t *buf;                   /* k*block_size stripe, then m*block_size parity */
    size_t fill;                    /* bytes buffered in the stripe */
    uint64_t nstripes;              /* stripes written so far */
    uint64_t kicked;                /* file offset up to which writeback was started */
    int failed;                     /* sticky error: only cs_writer_abort() remains */
    int placed;                     /* seg.id and seg.drives are chosen */
};

int cs_writer_open(cs_store_t *cs, cm_buf *out_intent, cs_writer_t **out)
{
    cs_writer_t *w;
    int n = cs->k + cs->m, rc;
    void *mem;

    w = calloc(1, sizeof(*w));
    if (!w)
        return CM_ENOMEM;
    w->cs = cs;
    for (int i = 0; i < CS__MAX_SHARDS; i++)
        w->fds[i] = -1;
    w->seg.type = CS__REC_INTENT;
    w->seg.k = cs->k;
    w->seg.m = cs->m;
    w->seg.block_size = cs->block_size;
    rc = CM_ENOMEM;
    if (posix_memalign(&mem, CS_ALIGN, (size_t)n * cs->block_size) != 0)
        goto out;
    w->buf = mem;
    if ((rc = cm_random_bytes(w->seg.id, CS_ID_LEN)) != 0)
        goto out;
    if ((rc = cs__place(w->seg.id, cs->ndrives, n, w->seg.drives)) != 0)
        goto out;
    w->placed = 1;
    if ((rc = cs__rec_encode(out_intent, &w->seg)) != 0)
        goto out;
    *out = w;
    return 0;
out:
    cs_writer_abort(w);
    return rc;
}

/* Creates the k+m shard files under their final names. Called on the first
 * write, i.e. after the caller recorded the intent: a crash from here on
 * leaves files that the intent names. A torn file is harmless before the
 * layout exists (only finished layouts are read). */
static int create_files(cs_writer_t *w)
{
    char path[CS_PATH_MAX];
    int rc, created;

    for (int i = 0; i < w->seg.k + w->seg.m; i++) {
        int d = w->seg.drives[i];
        if ((rc = cs__shard_path(w->cs, d, w->seg.id, i, 0, path, sizeof(path))) != 0)
            return rc;
        w->fds[i] = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (w->fds[i] < 0 && errno == ENOENT) {
            /* No fan-out directory (the drive was emptied since open).
             * Whoever made it, fsync the drive directory before acking. */
            if ((rc = make_fanout(w->cs, d, w->seg.id, &created)) != 0)
                return rc;
            w->newdir[i] = 1;
            w->fds[i] = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        }
        if (w->fds[i] < 0) {
            rc = cm_from_errno(errno);
            cm_log(CM_LOG_ERROR, "chunkstore: create %s: %s", path, strerror(errno));
            return rc;
        }
    }
    w->created = 1;
    return 0;
}

/* Starts writeback of everything written since the last kick once enough
 * has piled up. Advisory: errors are ignored, the final fdatasync reports
 * them. Measured on ext4 (16 MiB PUTs, 4+2, one disk): the time spent in
 * cs_writer_finish() drops from ~30 to ~11 ms, since the journal commit no
 * longer has to write the whole object's data first. */
static void kick_writeback(cs_writer_t *w)
{
#ifdef SYNC_FILE_RANGE_WRITE
    uint64_t end = cs__stripe_off(w->seg.block_size, w->nstripes);

    if (end - w->kicked < CS_KICK_BYTES)
        return;
    for (int i = 0; i < w->seg.k + w->seg.m; i++)
        sync_file_range(w->fds[i], (off_t)w->kicked, (off_t)(end - w->kicked),
                        SYNC_FILE_RANGE_WRITE);
    w->kicked = end;
#else
    (void)w;
#endif
}

/* Encodes one stripe whose k data blocks of blen bytes start at data (block
 * i at data + i*blen) and writes block + CRC32C to each shard file. */
static int write_stripe(cs_writer_t *w, const uint8_t *data, uint32_t blen)
{
    int k = w->seg.k, n = w->seg.k + w->seg.m, rc;
    uint8_t *blk[CS__MAX_SHARDS];
    uint8_t crc[CS__MAX_SHARDS][CS__CRC_LEN];
    off_t off = (off_t)cs__stripe_off(w->seg.block_size, w->nstripes);

    if (!w->created && (rc = create_files(w)) != 0)
        return rc;
    for (int i = 0; i < k; i++)
        blk[i] = (uint8_t *)data + (size_t)i * blen; /* read only, by rs_encode and pwritev */
    for (int i = k; i < n; i++)
        blk[i] = w->buf + (size_t)i * w->seg.block_size;
    rs_encode(w->cs->rs, blen, blk, blk + k);
    for (int i = 0; i < n; i++) {
        struct iovec iov[2] = {{blk[i], blen}, {crc[i], CS__CRC_LEN}};
        cs__put32(crc[i], rs_crc32c(0, blk[i], blen));
        if ((rc = pwritev_all(w->fds[i], iov, 2, off)) != 0) {
            cm_log(CM_LOG_ERROR, "chunkstore: write shard %d of a segment on drive %s: %s", i,
                   w->cs->drives[w->seg.drives[i]], cm_strerror(rc));
            return rc;
        }
    }
    w->nstripes++;
    kick_writeback(w);
    return 0;
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
            if ((rc = write_stripe(w, q, w->seg.block_size)) != 0)
                return w->failed = rc;
            q += stripe;
            n -= stripe;
            w->seg.size += stripe;
            continue;
        }
        size_t c = stripe - w->fill < n ? stripe - w->fill : n;
        memcpy(w->buf + w->fill, q, c);
        w->fill += c;
        q += c;
        n -= c;
        w->seg.size += c;
        if (w->fill == stripe) {
            if ((rc = write_stripe(w, w->buf, w->seg.block_size)) != 0)
                return w->failed = rc;
            w->fill = 0;
        }
    }
    return 0;
}

/* One durability step of a finishing writer, run on the pool. */
struct sync_task {
    struct cs__task t; /* first: the pool sees only this */
    cs_writer_t *w;
    int i;    /* shard index */
    int what; /* SYNC_FILE, SYNC_FANOUT or SYNC_DRIVE */
};
enum {
    SYNC_FILE,   /* fdatasync the shard file */
    SYNC_FANOUT, /* fsync its fan-out directory: the file's entry */
    SYNC_DRIVE   /* fsync the drive directory: the entry of a fan-out dir we created */
};

static int sync_main(struct cs__task *t)
{
    struct sync_task *st = (struct sync_task *)t;
    cs_writer_t *w = st->w;
    int d = w->seg.drives[st->i], rc;

    if (st->what != SYNC_FILE)
        return sync_dir(w->cs, d, w->seg.id, st->what == SYNC_DRIVE);
    if (fdatasync(w->fds[st->i]) != 0) {
        rc = cm_from_errno(errno);
        cm_log(CM_LOG_ERROR, "chunkstore: fdatasync shard %d on %s: %s", st->i, w->cs->drives[d],
               strerror(errno));
        return rc;
    }
    return 0;
}

static void writer_free(cs_writer_t *w)
{
    for (int i = 0; i < CS__MAX_SHARDS; i++)
        if (w->fds[i] >= 0)
            close(w->fds[i]);
    free(w->buf);
    free(w);
}

int cs_writer_finish(cs_writer_t *w, cm_buf *out_layout)
{
    int k = w->seg.k, n = w->seg.k + w->seg.m, rc;
    struct sync_task st[3 * CS__MAX_SHARDS];
    struct cs__task *tasks[3 * CS__MAX_SHARDS];
    int ntasks = 0;
    struct cs_hdr h;
    uint8_t hdr[CS__HDR_LEN];

    if (w->failed)
        return w->failed;
    /* Reserve now so the final append cannot fail after the files are live. */
    if (cm_buf_reserve(out_layout, CS__REC_FIXED + 2 * (size_t)n) != 0)
        return CM_ENOMEM;
    if (!w->created && (rc = create_files(w)) != 0)
        return w->failed = rc;
    if (w->fill > 0) {
        uint32_t blen = (uint32_t)((w->fill + (size_t)k - 1) / (size_t)k);
        memset(w->buf + w->fill, 0, (size_t)k * blen - w->fill);
        if ((rc = write_stripe(w, w->buf, blen)) != 0)
            return w->failed = rc;
        w->fill = 0;
    }
    memcpy(h.id, w->seg.id, CS_ID_LEN);
    h.k = k;
    h.m = w->seg.m;
    h.block_size = w->seg.block_size;
    h.size = w->seg.size;
    for (int i = 0; i < n; i++) {
        struct iovec iov = {hdr, CS__HDR_LEN};
        h.index = i;
        cs__hdr_encode(&h, hdr);
        if ((rc = pwritev_all(w->fds[i], &iov, 1, 0)) != 0)
            return w->failed = rc;
    }

    /* Durability: every file's data and every directory entry, all syncs
     * in flight at once (the files are on distinct drives; on one disk the
     * journal commits them together). The files were created under their
     * final names, so there is no rename to order after the fdatasync:
     * nothing acknowledges the segment until all of these returned. */
    for (int i = 0; i < n; i++) {
        for (int what = SYNC_FILE; what <= SYNC_DRIVE; what++) {
            if (what == SYNC_DRIVE && !w->newdir[i])
                continue;
            st[ntasks] = (struct sync_task){.t.fn = sync_main, .w = w, .i = i, .what = what};
            tasks[ntasks] = &st[ntasks].t;
            ntasks++;
        }
    }
    if ((rc = run_batch(w->cs, tasks, ntasks)) != 0)
        return w->failed = rc;

    w->seg.type = CS__REC_SEGMENT;
    if ((rc = cs__rec_encode(out_layout, &w->seg)) != 0)
        return w->failed = rc;
    writer_free(w);
    return 0;
}

static void heal_cancel(cs_store_t *cs, const uint8_t id[CS_ID_LEN]);

/* Unlinks both names of every shard of a record; ENOENT is not an error.
 * Holds the segment's lock: see CS__SEG_LOCKS. */
static int delete_seg(cs_store_t *cs, const struct cs_seg *s)
{
    char path[CS_PATH_MAX];
    int rc = 0;

    heal_cancel(cs, s->id);
    pthread_mutex_lock(seg_lock(cs, s->id));
    for (int i = 0; i < s->k + s->m; i++) {
        for (int tmp = 0; tmp <= 1; tmp++) {
            if (cs__shard_path(cs, s->drives[i], s->id, i, tmp, path, sizeof(path)) != 0)
                continue; /* drive not in this store: nothing of ours there */
            if (unlink(path) != 0 && errno != ENOENT) {
                cm_log(CM_LOG_WARN, "chunkstore: unlink %s: %s", path, strerror(errno));
                rc = cm_from_errno(errno);
            }
        }
    }
    pthread_mutex_unlock(seg_lock(cs, s->id));
    return rc;
}

void cs_writer_abort(cs_writer_t *w)
{
    if (!w)
        return;
    for (int i = 0; i < CS__MAX_SHARDS; i++) {
        if (w->fds[i] >= 0)
            close(w->fds[i]);
        w->fds[i] = -1;
    }
    if (w->placed)
        delete_seg(w->cs, &w->seg);
    writer_free(w);
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
        if ((rc2 = delete_seg(cs, &s)) != 0 && rc == 0)
            rc = rc2;
    }
    return rc;
}

/* ----------------------------------------------------------------- reader */

enum { BLK_UNREAD = 0, BLK_GOOD, BLK_BAD };
#define FD_UNOPENED (-1)
#define FD_BAD (-2)

/* Owned by one thread. Buffers hold one stripe of the current segment:
 * k+m blocks of block_size bytes plus a CRC trailer each. */
struct cs_reader {
    cs_store_t *cs;
    struct cs_seg *segs; /* decoded layout, nsegs records */
    size_t nsegs;
    uint64_t pos, end;              /* next object offset to return; end of range */
    size_t iseg;                    /* segment holding pos */
    uint64_t seg_base;              /* object offset where segs[iseg] starts */
    int seg_ready;                  /* fds/rs/buffers below are set up for iseg */
    char idhex[2 * CS_ID_LEN + 1];  /* of segs[iseg], for log lines */
    int fds[CS__MAX_SHARDS];        /* FD_UNOPENED, FD_BAD or an open shard file */
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

static void reader_close_fds(cs_reader_t *r)
{
    for (int i = 0; i < CS__MAX_SHARDS; i++) {
        if (r->fds[i] >= 0)
            close(r->fds[i]);
        r->fds[i] = FD_UNOPENED;
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
           r->idhex, i, d, d < r->cs->ndrives ? r->cs->drives[d] : "unknown", what);
}

static void heal_enqueue(cs_store_t *cs, const struct cs_seg *s, uint32_t mask);

/* Done with segs[r->iseg]: checks that the shards it never opened exist
 * with the right length (a lost parity shard is otherwise noticed only when
 * it is needed, maybe together with a second loss: too late), and queues
 * the segment for healing if anything was wrong. Costs m stat() calls on a
 * healthy segment; the shards that were read were checked by the reads. */
static void leave_segment(cs_reader_t *r)
{
    const struct cs_seg *s = &r->segs[r->iseg];
    uint64_t want = cs__shard_len(s->size, s->k, s->block_size);
    char path[CS_PATH_MAX];
    struct stat st;

    if (!r->seg_ready)
        return;
    r->seg_ready = 0;
    for (int i = 0; i < s->k + s->m; i++) {
        if (r->fds[i] != FD_UNOPENED)
            continue; /* read (checked), or already found bad */
        if (cs__shard_path(r->cs, s->drives[i], s->id, i, 0, path, sizeof(path)) != 0)
            continue; /* drive not in this store */
        if (stat(path, &st) != 0 || (uint64_t)st.st_size != want) {
            r->bad |= 1u << i;
            cm_log(CM_LOG_WARN,
                   "chunkstore: segment %s shard %d on drive %d (%s): missing or of the wrong "
                   "length",
                   r->idhex, i, s->drives[i], r->cs->drives[s->drives[i]]);
        }
    }
    if (r->bad)
        heal_enqueue(r->cs, s, r->bad);
    r->bad = 0;
}

/* Sets up per-segment state for segs[r->iseg]. */
static int enter_segment(cs_reader_t *r)
{
    const struct cs_seg *s = &r->segs[r->iseg];

    reader_close_fds(r);
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

/* Opens shard i of segment s and checks its header against the record.
 * Returns the fd, or -1 with *why saying what is wrong. */
static int open_shard(const cs_store_t *cs, const struct cs_seg *s, int i, const char **why)
{
    char path[CS_PATH_MAX];
    uint8_t hb[CS__HDR_LEN];
    struct iovec iov = {hb, sizeof(hb)};
    struct cs_hdr h;
    int fd;

    if (cs__shard_path(cs, s->drives[i], s->id, i, 0, path, sizeof(path)) != 0) {
        *why = "drive not in this store";
        return -1;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *why = errno == ENOENT ? "no such file" : "cannot open";
        return -1;
    }
    if (preadv_full(fd, &iov, 1, 0) != CS__HDR_LEN || cs__hdr_decode(hb, sizeof(hb), &h) != 0) {
        *why = "bad shard header";
        close(fd);
        return -1;
    }
    if (memcmp(h.id, s->id, CS_ID_LEN) != 0 || h.index != i || h.k != s->k || h.m != s->m ||
        h.block_size != s->block_size || h.size != s->size) {
        *why = "shard header does not match the layout";
        close(fd);
        return -1;
    }
    return fd;
}

/* Returns an open, header-checked fd for shard i, or -1 if it is unusable. */
static int shard_fd(cs_reader_t *r, int i)
{
    const char *why = NULL;
    int fd;

    if (r->fds[i] >= 0)
        return r->fds[i];
    if (r->fds[i] == FD_BAD)
        return -1;
    r->fds[i] = FD_BAD;
    fd = open_shard(r->cs, &r->segs[r->iseg], i, &why);
    if (fd < 0) {
        shard_warn(r, i, why);
        return -1;
    }
    r->fds[i] = fd;
    return fd;
}

/* Reads block i of the current stripe into dst (blen bytes) and checks its
 * CRC32C. Returns 0, or CM_EIO (block unusable; already logged). */
static int fetch_block(cs_reader_t *r, int i, uint8_t *dst)
{
    const struct cs_seg *s = &r->segs[r->iseg];
    uint8_t crc[CS__CRC_LEN];
    struct iovec iov[2] = {{dst, r->blen}, {crc, CS__CRC_LEN}};
    int fd = shard_fd(r, i);
    ssize_t got;

    if (fd < 0)
        return CM_EIO;
    got = preadv_full(fd, iov, 2, (off_t)cs__stripe_off(s->block_size, r->stripe));
    if (got != (ssize_t)r->blen + CS__CRC_LEN) {
        shard_warn(r, i, got < 0 ? strerror(errno) : "shard file is short");
        return CM_EIO;
    }
    if (cs__get32(crc) != rs_crc32c(0, dst, r->blen)) {
        r->bad |= 1u << i;
        /* Report every bad block, not once per shard: each is a distinct rot. */
        cm_log(CM_LOG_WARN,
               "chunkstore: segment %s shard %d stripe %llu: CRC32C mismatch; "
               "using parity",
               r->idhex, i, (unsigned long long)r->stripe);
        return CM_EIO;
    }
    return 0;
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

/* Gets k good blocks of the current stripe and rebuilds the rest. */
static int reconstruct(cs_reader_t *r)
{
    const struct cs_seg *s = &r->segs[r->iseg];
    int n = s->k + s->m, good = 0, erased[CS__MAX_SHARDS] = {0}, nerased = 0, rc;
    uint8_t *blk[CS__MAX_SHARDS] = {0};

    for (int i = 0; i < n; i++)
        good += r->state[i] == BLK_GOOD;
    for (int i = 0; i < n && good < s->k; i++) {
        if (r->state[i] != BLK_UNREAD)
            continue;
        load_into_buf(r, i);
        good += r->state[i] == BLK_GOOD;
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

int cs_reader_open(cs_store_t *cs, cm_slice layout, uint64_t off, uint64_t len, cs_reader_t **out)
{
    cm_reader cur = {layout.p, layout.n};
    cs_reader_t *r;
    uint64_t size;
    size_t nsegs;
    int rc;

    if ((rc = cs_layout_size(layout, &size)) != 0 || (rc = cs_layout_count(layout, &nsegs)) != 0)
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
    for (int i = 0; i < CS__MAX_SHARDS; i++)
        r->fds[i] = FD_UNOPENED;
    r->segs = calloc(nsegs ? nsegs : 1, sizeof(*r->segs));
    if (!r->segs) {
        free(r);
        return CM_ENOMEM;
    }
    for (size_t i = 0; i < nsegs; i++)
        cs__rec_decode(&cur, &r->segs[i]); /* validated by cs_layout_size() */
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

        if (r->state[b] == BLK_UNREAD && boff == 0 && c == r->blen) {
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
    reader_close_fds(r);
    rs_ctx_free(r->rs_own);
    free(r->buf);
    free(r->segs);
    free(r);
}

/* ------------------------------------------------------------------- heal */

static void *heal_main(void *arg);

/* Queues segment s for the heal thread (mask: shards the reader saw bad).
 * Never blocks on I/O: the reader calls it on the request path. */
static void heal_enqueue(cs_store_t *cs, const struct cs_seg *s, uint32_t mask)
{
    struct cs__healer *h = &cs->heal;
    struct cs__heal_job *j;

    pthread_mutex_lock(&h->mu);
    if (h->stop)
        goto out;
    for (j = h->head; j; j = j->next) {
        if (memcmp(j->seg.id, s->id, CS_ID_LEN) == 0) {
            j->mask |= mask;
            goto out;
        }
    }
    /* Being healed already: the heal scrubs every shard, so only damage it
     * was not told about is worth another pass. */
    if (h->active && memcmp(h->active->seg.id, s->id, CS_ID_LEN) == 0 &&
        (mask & ~h->active->mask) == 0)
        goto out;
    if (h->nqueued >= CS__HEAL_QUEUE_MAX) {
        cm_log(CM_LOG_WARN,
               "chunkstore: heal queue full; a damaged segment waits for its next read");
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

/* Drops queued (not started) heals of segment id: it is being deleted. */
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
    h->tailp = &h->head;
    while (*h->tailp)
        h->tailp = &(*h->tailp)->next;
    if (!h->head && !h->active)
        pthread_cond_broadcast(&h->idle);
    pthread_mutex_unlock(&h->mu);
}

void cs_store_heal_wait(cs_store_t *cs)
{
    struct cs__healer *h = &cs->heal;

    pthread_mutex_lock(&h->mu);
    while (h->head || h->active)
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

/* Lets the heal thread finish the queue, then joins it. */
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

/* State of one heal: every shard file of the segment, the rebuilt files
 * being written, and a stripe buffer. Owned by the heal thread. */
struct heal {
    cs_store_t *cs;
    const struct cs_seg *s;
    char idhex[2 * CS_ID_LEN + 1];
    int n;                          /* k+m */
    int src[CS__MAX_SHARDS];        /* existing file with a good header, or -1 */
    int tmp[CS__MAX_SHARDS];        /* "<name>.tmp" being rebuilt (targets only), or -1 */
    uint8_t newdir[CS__MAX_SHARDS]; /* we created the fan-out dir of that target */
    uint32_t targets;               /* shards being rebuilt */
    uint8_t *buf;                   /* k+m blocks + CRC, block i at buf + i*stride */
    size_t stride;
};

/* Makes shard i a target: creates its tmp file and, if the heal is at
 * stripe > 0, copies the blocks before it from the old file (this pass
 * read and CRC-checked them all). */
static int heal_add_target(struct heal *h, int i, uint64_t stripe)
{
    const struct cs_seg *s = h->s;
    char path[CS_PATH_MAX];
    int created, rc;

    if ((rc = make_fanout(h->cs, s->drives[i], s->id, &created)) != 0)
        return rc;
    h->newdir[i] = (uint8_t)created;
    if ((rc = cs__shard_path(h->cs, s->drives[i], s->id, i, 1, path, sizeof(path))) != 0)
        return rc;
    h->tmp[i] = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (h->tmp[i] < 0) {
        rc = cm_from_errno(errno);
        cm_log(CM_LOG_WARN, "chunkstore: heal: create %s: %s", path, strerror(errno));
        return rc;
    }
    h->targets |= 1u << i;
    for (uint64_t off = CS__HDR_LEN, end = cs__stripe_off(s->block_size, stripe); off < end;) {
        size_t c = end - off < h->stride ? (size_t)(end - off) : h->stride;
        struct iovec iov = {h->buf + (size_t)i * h->stride, c};
        if (preadv_full(h->src[i], &iov, 1, (off_t)off) != (ssize_t)c)
            return CM_EIO;
        iov.iov_len = c;
        iov.iov_base = h->buf + (size_t)i * h->stride;
        if ((rc = pwritev_all(h->tmp[i], &iov, 1, (off_t)off)) != 0)
            return rc;
        off += c;
    }
    return 0;
}

/* Reads every stripe of every shard, rebuilds what is missing or rotten
 * and writes the blocks of the target shards into their tmp files. */
static int heal_stripes(struct heal *h, const rs_ctx_t *rs)
{
    const struct cs_seg *s = h->s;
    uint64_t nstripes = cs__nstripes(s->size, s->k, s->block_size);
    uint8_t *blk[CS__MAX_SHARDS], crc[CS__CRC_LEN];
    int erased[CS__MAX_SHARDS], rc;

    for (int i = 0; i < h->n; i++)
        blk[i] = h->buf + (size_t)i * h->stride;
    for (uint64_t st = 0; st < nstripes; st++) {
        uint32_t blen = cs__blen(s->size, s->k, s->block_size, st);
        off_t off = (off_t)cs__stripe_off(s->block_size, st);
        int good = 0, nerased = 0;

        for (int i = 0; i < h->n; i++) {
            struct iovec iov = {blk[i], (size_t)blen + CS__CRC_LEN};
            int ok = h->src[i] >= 0 &&
                     preadv_full(h->src[i], &iov, 1, off) == (ssize_t)blen + CS__CRC_LEN &&
                     cs__get32(blk[i] + blen) == rs_crc32c(0, blk[i], blen);
            if (ok) {
                good++;
                continue;
            }
            erased[nerased++] = i;
            if (!(h->targets & (1u << i)) && s->drives[i] < h->cs->ndrives) {
                cm_log(CM_LOG_WARN, "chunkstore: heal: segment %s shard %d stripe %llu is bad",
                       h->idhex, i, (unsigned long long)st);
                if ((rc = heal_add_target(h, i, st)) != 0)
                    return rc;
            }
        }
        if (good < s->k) {
            cm_log(CM_LOG_WARN,
                   "chunkstore: heal: segment %s stripe %llu has only %d of %d needed blocks",
                   h->idhex, (unsigned long long)st, good, s->k);
            return CM_EIO;
        }
        if (nerased > 0 && (rc = rs_decode(rs, blen, blk, erased, nerased)) != 0)
            return rc;
        for (int i = 0; i < h->n; i++) {
            if (!(h->targets & (1u << i)))
                continue;
            struct iovec iov[2] = {{blk[i], blen}, {crc, CS__CRC_LEN}};
            cs__put32(crc, rs_crc32c(0, blk[i], blen));
            if ((rc = pwritev_all(h->tmp[i], iov, 2, off)) != 0)
                return rc;
        }
    }
    return 0;
}

/* Headers, fdatasync, then, under the segment lock, the check that the
 * segment was not deleted meanwhile and the renames; then directory fsyncs.
 * Returns 0, CM_ENOTFOUND if the segment was deleted, or an I/O error. */
static int heal_commit(struct heal *h)
{
    const struct cs_seg *s = h->s;
    char tmp[CS_PATH_MAX], fin[CS_PATH_MAX];
    struct cs_hdr hd = {.k = s->k, .m = s->m, .block_size = s->block_size, .size = s->size};
    uint8_t hb[CS__HDR_LEN];
    struct stat st;
    uint32_t renamed = 0;
    int rc = 0;

    memcpy(hd.id, s->id, CS_ID_LEN);
    for (int i = 0; i < h->n; i++) {
        struct iovec iov = {hb, CS__HDR_LEN};
        if (!(h->targets & (1u << i)))
            continue;
        hd.index = i;
        cs__hdr_encode(&hd, hb);
        if ((rc = pwritev_all(h->tmp[i], &iov, 1, 0)) != 0)
            return rc;
        if (fdatasync(h->tmp[i]) != 0)
            return cm_from_errno(errno);
    }
    pthread_mutex_lock(seg_lock(h->cs, s->id));
    for (int i = 0; i < h->n; i++) {
        /* cs_layout_delete() unlinks under this lock: a file we read with
         * no links left means the segment is gone, and so must ours be.
         * (Only a delete unlinks a shard; heals are one at a time.) */
        if (h->src[i] >= 0 && (fstat(h->src[i], &st) != 0 || st.st_nlink == 0)) {
            rc = CM_ENOTFOUND;
            break;
        }
    }
    for (int i = 0; i < h->n && rc == 0; i++) {
        if (!(h->targets & (1u << i)))
            continue;
        if ((rc = cs__shard_path(h->cs, s->drives[i], s->id, i, 1, tmp, sizeof(tmp))) != 0 ||
            (rc = cs__shard_path(h->cs, s->drives[i], s->id, i, 0, fin, sizeof(fin))) != 0)
            break;
        if (rename(tmp, fin) != 0) {
            rc = errno == ENOENT ? CM_ENOTFOUND : cm_from_errno(errno); /* deleted: tmp gone */
            break;
        }
        h->targets &= ~(1u << i); /* renamed: no tmp left to remove */
        renamed |= 1u << i;
    }
    pthread_mutex_unlock(seg_lock(h->cs, s->id));
    /* A delete from here on unlinks the new files like any others. */
    for (int i = 0; i < h->n; i++) {
        if (!(renamed & (1u << i)))
            continue;
        if (sync_dir(h->cs, s->drives[i], s->id, 0) != 0 ||
            (h->newdir[i] && sync_dir(h->cs, s->drives[i], s->id, 1) != 0))
            rc = rc ? rc : CM_EIO;
        cm_log(CM_LOG_INFO, "chunkstore: healed segment %s shard %d on drive %d (%s)", h->idhex, i,
               s->drives[i], h->cs->drives[s->drives[i]]);
        pthread_mutex_lock(&h->cs->heal.mu);
        h->cs->heal.nhealed++;
        pthread_mutex_unlock(&h->cs->heal.mu);
    }
    return rc;
}

/* Rebuilds every damaged shard file of segment s from the good ones. A
 * whole-segment scrub: the reader's mask is only where the trouble showed. */
static void heal_segment(cs_store_t *cs, const struct cs__heal_job *job)
{
    const struct cs_seg *s = &job->seg;
    struct heal h = {.cs = cs, .s = s, .n = s->k + s->m};
    const rs_ctx_t *rs = cs->rs;
    rs_ctx_t *rs_own = NULL;
    char path[CS_PATH_MAX];
    const char *why;
    int nsrc = 0, rc = 0;
    void *mem;

    id_hex(s->id, h.idhex);
    for (int i = 0; i < CS__MAX_SHARDS; i++)
        h.src[i] = h.tmp[i] = -1;
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
    for (int i = 0; i < h.n; i++)
        if ((h.src[i] = open_shard(cs, s, i, &why)) >= 0)
            nsrc++;
    if (nsrc < s->k) {
        /* Deleted (by cs_layout_delete, which won), or lost beyond repair. */
        cm_log(CM_LOG_INFO, "chunkstore: heal: segment %s has %d of %d needed shards; not healed",
               h.idhex, nsrc, s->k);
        rc = CM_ENOTFOUND;
        goto out;
    }
    for (int i = 0; i < h.n && rc == 0; i++) {
        if (h.src[i] < 0 && s->drives[i] < cs->ndrives) {
            cm_log(CM_LOG_WARN, "chunkstore: heal: segment %s shard %d: missing or bad header",
                   h.idhex, i);
            rc = heal_add_target(&h, i, 0);
        }
    }
    if (rc == 0)
        rc = heal_stripes(&h, rs);
    if (rc == 0 && h.targets)
        rc = heal_commit(&h);
out:
    for (int i = 0; i < CS__MAX_SHARDS; i++) {
        if (h.tmp[i] >= 0) {
            close(h.tmp[i]);
            if (h.targets & (1u << i) &&
                cs__shard_path(cs, s->drives[i], s->id, i, 1, path, sizeof(path)) == 0)
                unlink(path); /* not renamed into place */
        }
        if (h.src[i] >= 0)
            close(h.src[i]);
    }
    if (rc == CM_ENOTFOUND)
        cm_log(CM_LOG_INFO, "chunkstore: heal: segment %s was deleted meanwhile; nothing healed",
               h.idhex);
    else if (rc != 0)
        cm_log(CM_LOG_WARN, "chunkstore: heal of segment %s failed: %s", h.idhex, cm_strerror(rc));
    if (rc != 0) {
        pthread_mutex_lock(&cs->heal.mu);
        cs->heal.nfailed++;
        pthread_mutex_unlock(&cs->heal.mu);
    }
    free(h.buf);
    rs_ctx_free(rs_own);
}

static void *heal_main(void *arg)
{
    cs_store_t *cs = arg;
    struct cs__healer *h = &cs->heal;

    pthread_mutex_lock(&h->mu);
    for (;;) {
        while (!h->head && !h->stop)
            pthread_cond_wait(&h->work, &h->mu);
        if (!h->head)
            break; /* stopping, queue drained */
        struct cs__heal_job *j = h->head;
        h->head = j->next;
        if (!h->head)
            h->tailp = &h->head;
        h->nqueued--;
        h->active = j;
        pthread_mutex_unlock(&h->mu);
        heal_segment(cs, j);
        pthread_mutex_lock(&h->mu);
        h->active = NULL;
        free(j);
        pthread_cond_broadcast(&h->idle);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* ------------------------------------------------------ recover and list */

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* Parses "<32 hex>.<index>[.tmp]". Returns 0 and fills id/tmp, or -1. */
static int parse_shard_name(const char *name, uint8_t id[CS_ID_LEN], int *tmp)
{
    size_t n = strlen(name), i = 2 * CS_ID_LEN;

    if (n < i + 2 || name[i] != '.')
        return -1;
    for (size_t j = 0; j < i; j++)
        if (!is_hex(name[j]))
            return -1;
    i++;
    if (name[i] < '0' || name[i] > '9')
        return -1;
    while (name[i] >= '0' && name[i] <= '9')
        i++;
    if (name[i] == 0)
        *tmp = 0;
    else if (strcmp(name + i, ".tmp") == 0)
        *tmp = 1;
    else
        return -1;
    return cm_hex_decode(name, 2 * CS_ID_LEN, id) == 0 ? 0 : -1;
}

/* Calls fn(arg, fanout dir fd, entry name) for every shard file on every
 * drive. Unreadable directories make the result CM_EIO; the walk goes on. */
static int walk_shards(cs_store_t *cs, void (*fn)(void *arg, int dfd, const char *name, int *rc),
                       void *arg)
{
    char path[CS_PATH_MAX];
    int rc = 0;

    for (int d = 0; d < cs->ndrives; d++) {
        DIR *top = opendir(cs->drives[d]);
        struct dirent *e;
        if (!top) {
            cm_log(CM_LOG_WARN, "chunkstore: opendir %s: %s", cs->drives[d], strerror(errno));
            rc = CM_EIO;
            continue;
        }
        while ((e = readdir(top)) != NULL) {
            if (!is_hex(e->d_name[0]) || !is_hex(e->d_name[1]) || e->d_name[2] != 0)
                continue;
            snprintf(path, sizeof(path), "%s/%s", cs->drives[d], e->d_name);
            DIR *sub = opendir(path);
            struct dirent *f;
            if (!sub) {
                if (errno != ENOTDIR)
                    rc = CM_EIO;
                continue;
            }
            while ((f = readdir(sub)) != NULL)
                fn(arg, dirfd(sub), f->d_name, &rc);
            closedir(sub);
        }
        closedir(top);
    }
    return rc;
}

static void recover_one(void *arg, int dfd, const char *name, int *rc)
{
    uint8_t id[CS_ID_LEN];
    int tmp;

    (void)arg;
    if (parse_shard_name(name, id, &tmp) != 0 || !tmp)
        return;
    if (unlinkat(dfd, name, 0) != 0 && errno != ENOENT) {
        cm_log(CM_LOG_WARN, "chunkstore: cannot remove leftover %s: %s", name, strerror(errno));
        *rc = CM_EIO;
        return;
    }
    cm_log(CM_LOG_INFO, "chunkstore: removed leftover %s", name);
}

int cs_store_recover(cs_store_t *cs)
{
    return walk_shards(cs, recover_one, NULL);
}

struct id_list {
    uint8_t (*ids)[CS_ID_LEN];
    size_t n, cap;
};

static void list_one(void *arg, int dfd, const char *name, int *rc)
{
    struct id_list *l = arg;
    uint8_t id[CS_ID_LEN];
    int tmp;

    (void)dfd;
    if (parse_shard_name(name, id, &tmp) != 0)
        return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 256;
        void *p = realloc(l->ids, cap * CS_ID_LEN);
        if (!p) {
            *rc = CM_ENOMEM;
            return;
        }
        l->ids = p;
        l->cap = cap;
    }
    memcpy(l->ids[l->n++], id, CS_ID_LEN);
}

static int id_cmp(const void *a, const void *b)
{
    return memcmp(a, b, CS_ID_LEN);
}

int cs_store_list(cs_store_t *cs, void (*fn)(void *arg, const uint8_t id[CS_ID_LEN]), void *arg)
{
    struct id_list l = {0};
    int rc = walk_shards(cs, list_one, &l);

    /* Each id appears once per shard: sort, then report each distinct id. */
    if (l.n > 0)
        qsort(l.ids, l.n, CS_ID_LEN, id_cmp);
    for (size_t i = 0; i < l.n; i++)
        if (i == 0 || memcmp(l.ids[i], l.ids[i - 1], CS_ID_LEN) != 0)
            fn(arg, l.ids[i]);
    free(l.ids);
    return rc;
}
