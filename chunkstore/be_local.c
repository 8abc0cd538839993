/* chunkstore/be_local.c - the local backend of cs_backend.h: one directory
 * per drive, and every file system call of the chunkstore. Shard files live
 * at DRIVE/ab/<32 hex id>.<index> (a heal writes "<name>.tmp" and renames
 * it into place), blobs at DRIVE/meta/ab/<32 hex id>. The erasure engine
 * (store.c) sees only the ops table; the formats are in format.c, cs_int.h
 * and doc/shard-format.md. */
#include "chunkstore/cs_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define LB_PATH_MAX 4096
#define LB_IOV_MAX 8 /* iovecs per append/read (the engine uses 2) */
/* A writer asks the kernel to start writing back each shard file once this
 * many bytes of it are dirty, so the final fdatasync finds little to do and
 * the disk works while the object still streams in. Measured on ext4 (16
 * MiB PUTs, 4+2, one disk): the time spent in cs_writer_finish() drops from
 * ~30 to ~11 ms, since the journal commit no longer has to write the whole
 * object's data first. */
#define LB_KICK_BYTES ((uint64_t)1 << 20)
/* Shard data goes to disk with O_DIRECT, in LB_ALIGN-aligned pieces at
 * LB_ALIGN-aligned offsets. Buffered writes copy every byte into newly
 * allocated page-cache pages, which cost about 1.5-3 CPU-seconds per GiB
 * here (the largest cost of a large PUT); direct writes about a tenth of
 * that. Two ways in:
 *   - in place: an append with CS__APPEND_ROOM whose buffer address is
 *     congruent to its file offset modulo LB_ALIGN (the engine's stripe
 *     buffers, cs_int.h) is written straight from the caller's buffer. Only
 *     its unaligned tail (< LB_ALIGN bytes) is copied, into the handle's
 *     carry; the next append puts the carry in the headroom just before its
 *     block and writes both from there.
 *   - staged: any other append (heals, whole stripes from the caller's
 *     buffer) is copied into an aligned stage of LB_STAGE bytes, written
 *     whole.
 * The bytes that do not fill an aligned block (the rest of the first block
 * after the header, and the tail at commit) are written through the page
 * cache, as is everything on a file system without O_DIRECT. */
#define LB_ALIGN ((uint64_t)4096)
#define LB_STAGE ((size_t)512 << 10)
/* Stages kept for reuse when their writer finishes (4 MiB): reused memory
 * needs no page faults, and the process does not keep what it freed in
 * malloc's per-thread arenas. Writers of new objects write in place and
 * take no stage, so a few are enough for heals and the odd whole-stripe
 * write. */
#define LB_STAGES_KEPT 8

/* The backend: immutable after open except the stages kept for reuse and
 * the staged counter (thread-safe themselves), so every op is thread-safe. */
struct local {
    struct cs__be be; /* first: the engine holds &be */
    int ndirs;
    char **dirs;                  /* ndirs malloc()ed drive directories, no trailing '/' */
    cm_bufkeep stages;            /* LB_STAGE bytes each, LB_ALIGN-aligned */
    atomic_uint_least64_t staged; /* bytes copied into stages by closed handles (tests) */
};

static const struct cs__be_ops local_ops;

ssize_t (*cs__seam_direct_pwrite)(int fd, const void *p, size_t n, off_t off) = pwrite;

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

/* Writes all of iov at off, retrying short writes and EINTR. */
static int pwritev_all(int fd, const struct iovec *in, int niov, off_t off)
{
    struct iovec v[LB_IOV_MAX], *iov = v;

    if (niov > LB_IOV_MAX)
        return CM_EINVAL;
    memcpy(v, in, (size_t)niov * sizeof(*in));
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

/* Reads up to the full iov at off; returns bytes read (short at EOF) or a
 * CM_E* code. */
static ssize_t preadv_full(int fd, const struct iovec *in, int niov, off_t off)
{
    struct iovec v[LB_IOV_MAX], *iov = v;
    ssize_t total = 0;

    if (niov > LB_IOV_MAX)
        return CM_EINVAL;
    memcpy(v, in, (size_t)niov * sizeof(*in));
    while (niov > 0) {
        ssize_t n = preadv(fd, iov, niov, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return cm_from_errno(errno);
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

/* ----------------------------------------------------------------- paths */

static int fit(int len, size_t n)
{
    return len < 0 || (size_t)len >= n ? CM_EINVAL : 0;
}

static int shard_path(const struct local *l, int d, const uint8_t id[CS_ID_LEN], int index,
                      int tmp, char *out, size_t n)
{
    char hex[2 * CS_ID_LEN + 1];

    if (d < 0 || d >= l->ndirs)
        return CM_EINVAL;
    cm_hex_encode(id, CS_ID_LEN, hex);
    return fit(snprintf(out, n, "%s/%.2s/%s.%d%s", l->dirs[d], hex, hex, index, tmp ? ".tmp" : ""),
               n);
}

/* "DRIVE/ab": the fan-out directory of a segment on a drive. */
static int fanout_path(const struct local *l, int d, const uint8_t id[CS_ID_LEN], char *out,
                       size_t n)
{
    char hex[2 * CS_ID_LEN + 1];

    if (d < 0 || d >= l->ndirs)
        return CM_EINVAL;
    cm_hex_encode(id, CS_ID_LEN, hex);
    return fit(snprintf(out, n, "%s/%.2s", l->dirs[d], hex), n);
}

/* "DRIVE/meta/ab/<32 hex>[.tmp]" (what = 2), "DRIVE/meta/ab" (1), "DRIVE/meta" (0). */
static int blob_path(const struct local *l, int d, const uint8_t id[CS_ID_LEN], int what,
                     int tmp, char *out, size_t n)
{
    char hex[2 * CS_ID_LEN + 1];

    if (d < 0 || d >= l->ndirs)
        return CM_EINVAL;
    cm_hex_encode(id, CS_ID_LEN, hex);
    if (what == 0)
        return fit(snprintf(out, n, "%s/meta", l->dirs[d]), n);
    if (what == 1)
        return fit(snprintf(out, n, "%s/meta/%.2s", l->dirs[d], hex), n);
    return fit(snprintf(out, n, "%s/meta/%.2s/%s%s", l->dirs[d], hex, hex, tmp ? ".tmp" : ""), n);
}

int cs__be_local_shard_path(const struct cs__be *be, int drive, const uint8_t id[CS_ID_LEN],
                            int index, int tmp, char *out, size_t n)
{
    if (!be || be->ops != &local_ops)
        return CM_EINVAL;
    return shard_path((const struct local *)be, drive, id, index, tmp, out, n);
}

uint64_t cs__be_local_staged(struct cs__be *be)
{
    if (!be || be->ops != &local_ops)
        return 0;
    return atomic_load_explicit(&((struct local *)be)->staged, memory_order_relaxed);
}

int cs__be_local_blob_path(const struct cs__be *be, int drive, const uint8_t id[CS_ID_LEN],
                           char *out, size_t n)
{
    if (!be || be->ops != &local_ops)
        return CM_EINVAL;
    return blob_path((const struct local *)be, drive, id, 2, 0, out, n);
}

/* mkdir; *created says whether this call made it. EEXIST is fine. */
static int make_dir(const char *path, int *created)
{
    *created = 0;
    if (mkdir(path, 0755) == 0) {
        *created = 1;
        return 0;
    }
    if (errno == EEXIST)
        return 0;
    cm_log(CM_LOG_ERROR, "chunkstore: mkdir %s: %s", path, strerror(errno));
    return cm_from_errno(errno);
}

static int sync_dir(const char *dir)
{
    int rc = cm_fsync_dir(dir);

    if (rc != 0)
        cm_log(CM_LOG_ERROR, "chunkstore: fsync directory %s: %s", dir, cm_strerror(rc));
    return rc;
}

/* Creates the 256 fan-out directories of a drive and makes their entries
 * durable, once, at open: a writer then never creates a directory, so it
 * never depends on another writer's fsync of the drive directory. Failure
 * is not fatal (a read-only drive still serves reads); writers then create
 * what they need. */
static void make_fanouts(const char *drive)
{
    char path[LB_PATH_MAX];
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

/* ----------------------------------------------------------------- writes */

/* A shard being written. heal = 0: the final name, created by the first
 * append or the commit (O_EXCL). heal = 1: "<name>.tmp", renamed at commit.
 * Direct I/O holds back the bytes of the last unaligned block written so
 * far, either in the stage (slen) or in the carry (clen), never both. */
struct lw {
    struct local *l;
    int d, index, heal;
    uint8_t id[CS_ID_LEN];
    int fd;            /* -1 until created */
    int newdir;        /* this handle created the fan-out dir: fsync the drive dir too */
    int committed;     /* w_commit returned 0 */
    uint64_t kicked;   /* file offset up to which writeback was started */
    uint64_t end;      /* highest offset written through fd (for lw_kick) */
    int dfd;           /* the same file opened O_DIRECT, -1 when not used */
    uint8_t *stage;    /* NULL, or LB_STAGE bytes, LB_ALIGN-aligned (first staged append) */
    uint64_t sbase;    /* file offset of stage[0] (aligned) */
    size_t slen;       /* bytes staged */
    uint64_t cbase;    /* file offset of carry[0] (aligned) */
    size_t clen;       /* bytes carried (< LB_ALIGN), not written yet */
    uint64_t staged;   /* bytes copied into the stage (added to l->staged at close) */
    uint8_t carry[LB_ALIGN];
};

static int lw_open(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], int index, int heal,
                   void **out)
{
    struct local *l = (struct local *)be;
    struct lw *w;

    if (d < 0 || d >= l->ndirs)
        return CM_EINVAL;
    if (!(w = calloc(1, sizeof(*w))))
        return CM_ENOMEM;
    w->l = l;
    w->d = d;
    w->index = index;
    w->heal = heal;
    memcpy(w->id, id, CS_ID_LEN);
    w->fd = w->dfd = -1;
    *out = w;
    return 0;
}

/* Creates the file. A new segment's shard is created under its final name
 * only now, i.e. after the caller recorded the intent: a crash from here on
 * leaves files that the intent names. A torn file is harmless before the
 * layout exists (only finished layouts are read). */
static int lw_create(struct lw *w)
{
    char path[LB_PATH_MAX], dir[LB_PATH_MAX];
    int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (w->heal ? O_TRUNC : O_EXCL), rc, created;

    if ((rc = shard_path(w->l, w->d, w->id, w->index, w->heal, path, sizeof(path))) != 0)
        return rc;
    w->fd = open(path, flags, 0644);
    if (w->fd < 0 && errno == ENOENT) {
        /* No fan-out directory (the drive was emptied since open). Whoever
         * made it, fsync the drive directory before acknowledging. */
        if ((rc = fanout_path(w->l, w->d, w->id, dir, sizeof(dir))) != 0 ||
            (rc = make_dir(dir, &created)) != 0)
            return rc;
        w->newdir = 1;
        w->fd = open(path, flags, 0644);
    }
    if (w->fd < 0) {
        rc = cm_from_errno(errno);
        cm_log(CM_LOG_ERROR, "chunkstore: create %s: %s", path, strerror(errno));
        return rc == CM_ENOTFOUND ? CM_EIO : rc;
    }
    /* Direct I/O where the file system has it; the page cache otherwise. */
    w->dfd = open(path, O_WRONLY | O_CLOEXEC | O_DIRECT);
    return 0;
}

/* Stops using direct I/O for this file (the rest goes through w->fd). */
static void lw_undirect(struct lw *w)
{
    if (w->dfd >= 0)
        close(w->dfd);
    w->dfd = -1;
    cm_bufkeep_put(&w->l->stages, w->stage);
    w->stage = NULL;
}

/* Writes n bytes at p to file offset off, all three LB_ALIGN-aligned,
 * direct; through the page cache if this file system refuses direct I/O
 * after all (EINVAL) or writes short. */
static int lw_pwrite_direct(struct lw *w, const uint8_t *p, size_t n, uint64_t off)
{
    struct iovec v = {(void *)p, n};
    ssize_t r = cs__seam_direct_pwrite(w->dfd, p, n, (off_t)off);

    if (r == (ssize_t)n)
        return 0;
    if (r < 0 && errno != EINVAL)
        return cm_from_errno(errno);
    return pwritev_all(w->fd, &v, 1, (off_t)off);
}

/* Writes the carried bytes through the page cache. */
static int lw_flush_carry(struct lw *w)
{
    struct iovec v = {w->carry, w->clen};
    int rc = w->clen ? pwritev_all(w->fd, &v, 1, (off_t)w->cbase) : 0;

    w->clen = 0;
    return rc;
}

/* Writes out the staged bytes: the aligned part direct, an unaligned rest
 * (only at the end, or before a write that does not continue the stage)
 * through the page cache. */
static int lw_drain(struct lw *w)
{
    size_t al = w->slen & ~(size_t)(LB_ALIGN - 1);
    int rc = 0;

    if (al && (rc = lw_pwrite_direct(w, w->stage, al, w->sbase)) != 0)
        return rc;
    if (w->slen > al) {
        struct iovec v = {w->stage + al, w->slen - al};
        if ((rc = pwritev_all(w->fd, &v, 1, (off_t)(w->sbase + al))) != 0)
            return rc;
    }
    w->sbase += w->slen;
    w->slen = 0;
    return 0;
}

/* Appends through the stage: bytes before the first aligned offset go
 * through the page cache, the rest is staged and written in whole stages.
 * A write that does not continue the held-back bytes first writes them
 * out; carried bytes that it continues move into the stage. Without a
 * stage (out of memory) the append goes through the page cache. */
static int lw_append_staged(struct lw *w, uint64_t off, const struct iovec *iov, int niov)
{
    int rc;

    if (!w->stage && !(w->stage = cm_bufkeep_get(&w->l->stages))) {
        if ((rc = lw_flush_carry(w)) != 0)
            return rc;
        return pwritev_all(w->fd, iov, niov, (off_t)off);
    }
    if (w->clen) {
        if (w->cbase + w->clen == off) {
            memcpy(w->stage, w->carry, w->clen);
            w->sbase = w->cbase;
            w->slen = w->clen;
            w->clen = 0;
        } else if ((rc = lw_flush_carry(w)) != 0) {
            return rc;
        }
    }
    if (w->slen && off != w->sbase + w->slen && (rc = lw_drain(w)) != 0)
        return rc;
    for (int i = 0; i < niov; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t n = iov[i].iov_len;
        while (n) {
            if (!w->slen) {
                uint64_t head = (LB_ALIGN - off % LB_ALIGN) % LB_ALIGN;
                if (head) { /* up to the next aligned offset: page cache */
                    struct iovec v = {(void *)p, head < n ? (size_t)head : n};
                    if ((rc = pwritev_all(w->fd, &v, 1, (off_t)off)) != 0)
                        return rc;
                    p += v.iov_len;
                    n -= v.iov_len;
                    off += v.iov_len;
                    continue;
                }
                w->sbase = off;
            }
            size_t c = LB_STAGE - w->slen < n ? LB_STAGE - w->slen : n;
            memcpy(w->stage + w->slen, p, c);
            w->staged += c;
            w->slen += c;
            p += c;
            n -= c;
            off += c;
            if (w->slen == LB_STAGE && (rc = lw_drain(w)) != 0)
                return rc;
        }
    }
    return 0;
}

/* Appends n bytes at p (p congruent to off modulo LB_ALIGN, with
 * CS__APPEND_HEADROOM scratch bytes before it) in place: the held-back
 * bytes that this append continues are copied into the headroom (they
 * start at an aligned offset and are fewer than LB_ALIGN, so they start
 * at an aligned address there), everything up to the last aligned offset
 * is written direct from p's buffer, and the rest is carried. */
static int lw_append_room(struct lw *w, uint64_t off, uint8_t *p, size_t n)
{
    uint64_t base;
    size_t al;
    int rc;

    if (w->slen) { /* a staged append came before */
        if (w->sbase + w->slen == off) {
            al = w->slen & ~(size_t)(LB_ALIGN - 1);
            if (al && (rc = lw_pwrite_direct(w, w->stage, al, w->sbase)) != 0)
                return rc;
            w->cbase = w->sbase + al;
            w->clen = w->slen - al;
            memcpy(w->carry, w->stage + al, w->clen);
            w->sbase += w->slen;
            w->slen = 0;
        } else if ((rc = lw_drain(w)) != 0) {
            return rc;
        }
    }
    if (w->clen && w->cbase + w->clen != off && (rc = lw_flush_carry(w)) != 0)
        return rc;
    if (w->clen) {
        p -= w->clen;
        memcpy(p, w->carry, w->clen);
        n += w->clen;
        base = w->cbase;
        w->clen = 0;
    } else {
        uint64_t head = (LB_ALIGN - off % LB_ALIGN) % LB_ALIGN;
        if (head) { /* up to the next aligned offset (the first block): page cache */
            struct iovec v = {p, head < n ? (size_t)head : n};
            if ((rc = pwritev_all(w->fd, &v, 1, (off_t)off)) != 0)
                return rc;
            p += v.iov_len;
            n -= v.iov_len;
            off += v.iov_len;
        }
        base = off;
    }
    al = n & ~(size_t)(LB_ALIGN - 1);
    if (al && (rc = lw_pwrite_direct(w, p, al, base)) != 0)
        return rc;
    w->cbase = base + al;
    w->clen = n - al;
    memcpy(w->carry, p + al, w->clen);
    return 0;
}

/* Starts writeback of everything written since the last kick once enough
 * has piled up. Advisory: errors are ignored, the fdatasync reports them. */
static void lw_kick(struct lw *w)
{
#ifdef SYNC_FILE_RANGE_WRITE
    if (w->end - w->kicked < LB_KICK_BYTES)
        return;
    sync_file_range(w->fd, (off_t)w->kicked, (off_t)(w->end - w->kicked), SYNC_FILE_RANGE_WRITE);
    w->kicked = w->end;
#else
    (void)w;
#endif
}

static int lw_append(void *h, uint64_t off, const struct iovec *iov, int niov, unsigned flags)
{
    struct lw *w = h;
    uint64_t len = 0;
    int rc;

    if (w->fd < 0 && (rc = lw_create(w)) != 0)
        return rc;
    if (w->dfd < 0)
        rc = pwritev_all(w->fd, iov, niov, (off_t)off);
    else if ((flags & CS__APPEND_ROOM) && niov == 1 &&
             (uintptr_t)iov[0].iov_base % LB_ALIGN == off % LB_ALIGN)
        rc = lw_append_room(w, off, iov[0].iov_base, iov[0].iov_len);
    else
        rc = lw_append_staged(w, off, iov, niov);
    if (rc != 0) {
        cm_log(CM_LOG_ERROR, "chunkstore: write shard %d on drive %s: %s", w->index,
               w->l->dirs[w->d], cm_strerror(rc));
        return rc;
    }
    if (w->dfd >= 0)
        return 0;
    for (int i = 0; i < niov; i++)
        len += iov[i].iov_len;
    if (off + len > w->end)
        w->end = off + len;
    lw_kick(w);
    return 0;
}

/* Header, fdatasync, (heal: rename into place,) fsync of the fan-out
 * directory and, if this handle created it, of the drive directory. */
static int lw_commit(void *h, const uint8_t hdr[64])
{
    struct lw *w = h;
    struct iovec iov = {(void *)hdr, CS__HDR_LEN};
    char path[LB_PATH_MAX], fin[LB_PATH_MAX];
    int rc;

    if (w->fd < 0 && (rc = lw_create(w)) != 0)
        return rc;
    if (w->dfd >= 0) {
        if ((w->slen && (rc = lw_drain(w)) != 0) || (rc = lw_flush_carry(w)) != 0) {
            cm_log(CM_LOG_ERROR, "chunkstore: write shard %d on drive %s: %s", w->index,
                   w->l->dirs[w->d], cm_strerror(rc));
            return rc;
        }
        lw_undirect(w);
    }
    if ((rc = pwritev_all(w->fd, &iov, 1, 0)) != 0) {
        cm_log(CM_LOG_ERROR, "chunkstore: write header of shard %d on drive %s: %s", w->index,
               w->l->dirs[w->d], cm_strerror(rc));
        return rc;
    }
    if (fdatasync(w->fd) != 0) {
        rc = cm_from_errno(errno);
        cm_log(CM_LOG_ERROR, "chunkstore: fdatasync shard %d on %s: %s", w->index,
               w->l->dirs[w->d], strerror(errno));
        return rc == CM_ENOTFOUND ? CM_EIO : rc;
    }
    if (w->heal) {
        if ((rc = shard_path(w->l, w->d, w->id, w->index, 1, path, sizeof(path))) != 0 ||
            (rc = shard_path(w->l, w->d, w->id, w->index, 0, fin, sizeof(fin))) != 0)
            return rc;
        if (rename(path, fin) != 0) {
            rc = cm_from_errno(errno); /* ENOENT: the tmp was removed by a delete */
            cm_log(CM_LOG_WARN, "chunkstore: rename %s: %s", path, strerror(errno));
            return rc;
        }
    }
    w->committed = 1; /* the data is under its final name: never remove a healed copy */
    if ((rc = fanout_path(w->l, w->d, w->id, path, sizeof(path))) != 0 ||
        (rc = sync_dir(path)) != 0)
        return rc;
    if (w->newdir && (rc = sync_dir(w->l->dirs[w->d])) != 0)
        return rc;
    return 0;
}

static void lw_close(void *h, int remove)
{
    struct lw *w = h;
    char path[LB_PATH_MAX];

    if (!w)
        return;
    atomic_fetch_add_explicit(&w->l->staged, w->staged, memory_order_relaxed);
    lw_undirect(w);
    if (w->fd >= 0) {
        close(w->fd);
        /* Only files this handle created: an O_EXCL failure is someone else's. */
        if (remove && !(w->heal && w->committed) &&
            shard_path(w->l, w->d, w->id, w->index, w->heal && !w->committed, path,
                       sizeof(path)) == 0 &&
            unlink(path) != 0 && errno != ENOENT)
            cm_log(CM_LOG_WARN, "chunkstore: unlink %s: %s", path, strerror(errno));
    }
    free(w);
}

/* ------------------------------------------------------------------ reads */

struct lr {
    int fd;
    int hdr_rc;               /* 0: hdr holds the 64 header bytes; else why not */
    uint8_t hdr[CS__HDR_LEN];
};

static int lr_open(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], int index, void **out)
{
    struct local *l = (struct local *)be;
    char path[LB_PATH_MAX];
    struct iovec iov;
    struct lr *r;
    ssize_t got;
    int rc;

    if ((rc = shard_path(l, d, id, index, 0, path, sizeof(path))) != 0)
        return rc;
    if (!(r = calloc(1, sizeof(*r))))
        return CM_ENOMEM;
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        rc = cm_from_errno(errno);
        free(r);
        return rc;
    }
    iov = (struct iovec){r->hdr, CS__HDR_LEN};
    got = preadv_full(r->fd, &iov, 1, 0);
    r->hdr_rc = got == CS__HDR_LEN ? 0 : got < 0 ? (int)got : CM_ECORRUPT;
    *out = r;
    return 0;
}

static ssize_t lr_read(void *h, uint64_t off, const struct iovec *iov, int niov)
{
    return preadv_full(((struct lr *)h)->fd, iov, niov, (off_t)off);
}

static int lr_header(void *h, uint8_t hdr[64])
{
    struct lr *r = h;

    if (r->hdr_rc == 0)
        memcpy(hdr, r->hdr, CS__HDR_LEN);
    return r->hdr_rc;
}

static void lr_close(void *h)
{
    struct lr *r = h;

    if (!r)
        return;
    close(r->fd);
    free(r);
}

static int l_stat(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], int index, uint64_t *len)
{
    char path[LB_PATH_MAX];
    struct stat st;
    int rc;

    if ((rc = shard_path((struct local *)be, d, id, index, 0, path, sizeof(path))) != 0)
        return rc;
    if (stat(path, &st) != 0)
        return cm_from_errno(errno);
    *len = (uint64_t)st.st_size;
    return 0;
}

/* Reads the whole shard and checks every block's CRC32C. A header that
 * does not decode leaves the blocks unchecked (the caller compares hdr
 * with its record and finds the shard bad anyway). */
static int l_verify(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], int index,
                    struct cs__verify *out)
{
    struct cs__verify v;
    struct cs_hdr h;
    struct stat st;
    uint8_t *buf = NULL;
    void *rh;
    int rc;

    memset(&v, 0, sizeof(v));
    if ((rc = lr_open(be, d, id, index, &rh)) != 0)
        return rc;
    struct lr *r = rh;
    if (fstat(r->fd, &st) != 0) {
        rc = cm_from_errno(errno);
        goto out;
    }
    v.len = (uint64_t)st.st_size;
    if (r->hdr_rc != 0 || cs__hdr_decode(r->hdr, CS__HDR_LEN, &h) != 0) {
        if (r->hdr_rc == 0)
            memcpy(v.hdr, r->hdr, CS__HDR_LEN);
        goto done;
    }
    memcpy(v.hdr, r->hdr, CS__HDR_LEN);
    if (!(buf = malloc((size_t)h.block_size + CS__CRC_LEN))) {
        rc = CM_ENOMEM;
        goto out;
    }
    for (uint64_t s = 0, n = cs__nstripes(h.size, h.k, h.block_size); s < n; s++) {
        uint32_t blen = cs__blen(h.size, h.k, h.block_size, s);
        struct iovec iov = {buf, (size_t)blen + CS__CRC_LEN};
        ssize_t got = preadv_full(r->fd, &iov, 1, (off_t)cs__stripe_off(h.block_size, s));
        if (got < 0) {
            rc = (int)got;
            goto out;
        }
        if (got != (ssize_t)blen + CS__CRC_LEN ||
            cs__get32(buf + blen) != rs_crc32c(0, buf, blen)) {
            if (v.bad_blocks++ == 0)
                v.first_bad = s;
        }
    }
done:
    *out = v;
    rc = 0;
out:
    free(buf);
    lr_close(rh);
    return rc;
}

static int l_remove(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], int index)
{
    char path[LB_PATH_MAX];
    int rc = 0;

    for (int tmp = 0; tmp <= 1; tmp++) {
        if (shard_path((struct local *)be, d, id, index, tmp, path, sizeof(path)) != 0)
            return CM_EINVAL;
        if (unlink(path) != 0 && errno != ENOENT) {
            cm_log(CM_LOG_WARN, "chunkstore: unlink %s: %s", path, strerror(errno));
            rc = cm_from_errno(errno);
        }
    }
    return rc;
}

/* --------------------------------------------------------- list, recover */

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* Parses "<32 hex>.<index>[.tmp]". Returns 0 and fills id/index/tmp, or -1. */
static int parse_shard_name(const char *name, uint8_t id[CS_ID_LEN], int *index, int *tmp)
{
    size_t n = strlen(name), i = 2 * CS_ID_LEN;
    int v = 0;

    if (n < i + 2 || name[i] != '.')
        return -1;
    for (size_t j = 0; j < i; j++)
        if (!is_hex(name[j]))
            return -1;
    i++;
    if (name[i] < '0' || name[i] > '9')
        return -1;
    while (name[i] >= '0' && name[i] <= '9') {
        if (v > CS__MAX_SHARDS)
            return -1;
        v = v * 10 + (name[i] - '0');
        i++;
    }
    if (name[i] == 0)
        *tmp = 0;
    else if (strcmp(name + i, ".tmp") == 0)
        *tmp = 1;
    else
        return -1;
    *index = v;
    return cm_hex_decode(name, 2 * CS_ID_LEN, id) == 0 ? 0 : -1;
}

/* Parses "<32 hex>[.tmp]" (blob names). */
static int parse_blob_name(const char *name, uint8_t id[CS_ID_LEN], int *tmp)
{
    size_t n = strlen(name);

    if (n == 2 * CS_ID_LEN)
        *tmp = 0;
    else if (n == 2 * CS_ID_LEN + 4 && strcmp(name + 2 * CS_ID_LEN, ".tmp") == 0)
        *tmp = 1;
    else
        return -1;
    for (size_t j = 0; j < 2 * CS_ID_LEN; j++)
        if (!is_hex(name[j]))
            return -1;
    return cm_hex_decode(name, 2 * CS_ID_LEN, id) == 0 ? 0 : -1;
}

/* Calls fn(arg, dir fd, entry name, &rc) for every entry of every fan-out
 * directory "top/ab". A missing top is fine if missing_ok; other unreadable
 * directories make the result CM_EIO and the walk goes on. */
static int walk_fanouts(const char *top, int missing_ok,
                        void (*fn)(void *arg, int dfd, const char *name, int *rc), void *arg)
{
    char path[LB_PATH_MAX];
    DIR *dir = opendir(top);
    struct dirent *e;
    int rc = 0;

    if (!dir) {
        if (missing_ok && errno == ENOENT)
            return 0;
        cm_log(CM_LOG_WARN, "chunkstore: opendir %s: %s", top, strerror(errno));
        return CM_EIO;
    }
    while ((e = readdir(dir)) != NULL) {
        if (!is_hex(e->d_name[0]) || !is_hex(e->d_name[1]) || e->d_name[2] != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", top, e->d_name);
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
    closedir(dir);
    return rc;
}

struct list_arg {
    void (*shard)(void *arg, const uint8_t id[CS_ID_LEN], int index);
    void (*blob)(void *arg, const uint8_t id[CS_ID_LEN]);
    void *arg;
};

static void list_shard(void *arg, int dfd, const char *name, int *rc)
{
    struct list_arg *a = arg;
    uint8_t id[CS_ID_LEN];
    int index, tmp;

    (void)dfd;
    (void)rc;
    if (parse_shard_name(name, id, &index, &tmp) == 0 && !tmp)
        a->shard(a->arg, id, index);
}

static int l_list(struct cs__be *be, int d,
                  void (*fn)(void *arg, const uint8_t id[CS_ID_LEN], int index), void *arg)
{
    struct local *l = (struct local *)be;
    struct list_arg a = {.shard = fn, .arg = arg};

    if (d < 0 || d >= l->ndirs)
        return CM_EINVAL;
    return walk_fanouts(l->dirs[d], 0, list_shard, &a);
}

static void recover_one(void *arg, int dfd, const char *name, int *rc)
{
    uint8_t id[CS_ID_LEN];
    int index, tmp;

    if (arg ? parse_blob_name(name, id, &tmp) != 0 : parse_shard_name(name, id, &index, &tmp) != 0)
        return;
    if (!tmp)
        return;
    if (unlinkat(dfd, name, 0) != 0 && errno != ENOENT) {
        cm_log(CM_LOG_WARN, "chunkstore: cannot remove leftover %s: %s", name, strerror(errno));
        *rc = CM_EIO;
        return;
    }
    cm_log(CM_LOG_INFO, "chunkstore: removed leftover %s", name);
}

static int l_recover(struct cs__be *be, int d)
{
    struct local *l = (struct local *)be;
    char meta[LB_PATH_MAX];
    uint8_t zero[CS_ID_LEN] = {0};
    int rc, rc2;

    if (d < 0 || d >= l->ndirs)
        return CM_EINVAL;
    rc = walk_fanouts(l->dirs[d], 0, recover_one, NULL);
    if (blob_path(l, d, zero, 0, 0, meta, sizeof(meta)) == 0 &&
        (rc2 = walk_fanouts(meta, 1, recover_one, meta)) != 0 && rc == 0)
        rc = rc2;
    return rc;
}

/* ------------------------------------------------------------------ blobs */

/* Writes "<blob>.tmp", fdatasyncs it, renames it into place and fsyncs the
 * directory (creating DRIVE/meta and DRIVE/meta/ab on first use). */
static int l_blob_put(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], const void *p,
                      size_t n)
{
    struct local *l = (struct local *)be;
    char meta[LB_PATH_MAX], dir[LB_PATH_MAX], tmp[LB_PATH_MAX], fin[LB_PATH_MAX];
    struct iovec iov = {(void *)p, n};
    int fd, rc, created;

    if ((rc = blob_path(l, d, id, 0, 0, meta, sizeof(meta))) != 0 ||
        (rc = blob_path(l, d, id, 1, 0, dir, sizeof(dir))) != 0 ||
        (rc = blob_path(l, d, id, 2, 1, tmp, sizeof(tmp))) != 0 ||
        (rc = blob_path(l, d, id, 2, 0, fin, sizeof(fin))) != 0)
        return rc;
    if ((rc = make_dir(meta, &created)) != 0 || (created && (rc = sync_dir(l->dirs[d])) != 0))
        return rc;
    if ((rc = make_dir(dir, &created)) != 0 || (created && (rc = sync_dir(meta)) != 0))
        return rc;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = cm_from_errno(errno);
        cm_log(CM_LOG_ERROR, "chunkstore: create %s: %s", tmp, strerror(errno));
        return rc == CM_ENOTFOUND ? CM_EIO : rc;
    }
    if ((rc = pwritev_all(fd, &iov, 1, 0)) == 0 && fdatasync(fd) != 0)
        rc = cm_from_errno(errno);
    close(fd);
    if (rc == 0 && rename(tmp, fin) != 0)
        rc = cm_from_errno(errno);
    if (rc != 0) {
        cm_log(CM_LOG_ERROR, "chunkstore: write %s: %s", fin, cm_strerror(rc));
        unlink(tmp);
        return rc == CM_ENOTFOUND ? CM_EIO : rc;
    }
    return sync_dir(dir);
}

static int l_blob_get(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], cm_buf *out)
{
    char path[LB_PATH_MAX];
    struct stat st;
    int fd, rc;

    if ((rc = blob_path((struct local *)be, d, id, 2, 0, path, sizeof(path))) != 0)
        return rc;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return cm_from_errno(errno);
    if (fstat(fd, &st) != 0) {
        rc = cm_from_errno(errno);
    } else if ((uint64_t)st.st_size > CS__MF_HDR + (uint64_t)CS__MF_MAX) {
        rc = CM_ECORRUPT;
    } else if (cm_buf_reserve(out, (size_t)st.st_size) != 0) {
        rc = CM_ENOMEM;
    } else {
        struct iovec iov = {out->p + out->n, (size_t)st.st_size};
        ssize_t got = preadv_full(fd, &iov, 1, 0);
        if (got < 0) {
            rc = (int)got;
        } else {
            out->n += (size_t)got;
            out->p[out->n] = 0; /* cm_buf keeps a NUL after the bytes */
            rc = 0;
        }
    }
    close(fd);
    return rc == CM_ENOTFOUND ? CM_EIO : rc;
}

static int l_blob_remove(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN])
{
    char path[LB_PATH_MAX];
    int rc = 0;

    for (int tmp = 0; tmp <= 1; tmp++) {
        if (blob_path((struct local *)be, d, id, 2, tmp, path, sizeof(path)) != 0)
            return CM_EINVAL;
        if (unlink(path) != 0 && errno != ENOENT) {
            cm_log(CM_LOG_WARN, "chunkstore: unlink %s: %s", path, strerror(errno));
            rc = cm_from_errno(errno);
        }
    }
    return rc;
}

static void list_blob(void *arg, int dfd, const char *name, int *rc)
{
    struct list_arg *a = arg;
    uint8_t id[CS_ID_LEN];
    int tmp;

    (void)dfd;
    (void)rc;
    if (parse_blob_name(name, id, &tmp) == 0 && !tmp)
        a->blob(a->arg, id);
}

static int l_blob_list(struct cs__be *be, int d,
                       void (*fn)(void *arg, const uint8_t id[CS_ID_LEN]), void *arg)
{
    struct local *l = (struct local *)be;
    struct list_arg a = {.blob = fn, .arg = arg};
    char meta[LB_PATH_MAX];
    uint8_t zero[CS_ID_LEN] = {0};
    int rc;

    if ((rc = blob_path(l, d, zero, 0, 0, meta, sizeof(meta))) != 0)
        return rc;
    return walk_fanouts(meta, 1, list_blob, &a);
}

/* ------------------------------------------------------------ the backend */

static int l_ndrives(struct cs__be *be)
{
    return ((struct local *)be)->ndirs;
}

static const char *l_drive_name(struct cs__be *be, int d)
{
    struct local *l = (struct local *)be;

    return d >= 0 && d < l->ndirs ? l->dirs[d] : "?";
}

static int l_drive_up(struct cs__be *be, int d)
{
    (void)be;
    (void)d;
    return 1; /* a broken directory shows as I/O errors, not as "down" */
}

static uint64_t l_epoch(struct cs__be *be)
{
    (void)be;
    return 0;
}

static void l_close(struct cs__be *be)
{
    struct local *l = (struct local *)be;

    if (!l)
        return;
    if (l->dirs)
        for (int i = 0; i < l->ndirs; i++)
            free(l->dirs[i]);
    free(l->dirs);
    cm_bufkeep_destroy(&l->stages);
    free(l);
}

static const struct cs__be_ops local_ops = {
    .name = "local",
    .parallel = 0,
    .ndrives = l_ndrives,
    .drive_name = l_drive_name,
    .drive_up = l_drive_up,
    .epoch = l_epoch,
    .w_open = lw_open,
    .w_append = lw_append,
    .w_commit = lw_commit,
    .w_close = lw_close,
    .r_open = lr_open,
    .r_read = lr_read,
    .r_header = lr_header,
    .r_close = lr_close,
    .stat = l_stat,
    .verify = l_verify,
    .remove = l_remove,
    .list = l_list,
    .recover = l_recover,
    .blob_put = l_blob_put,
    .blob_get = l_blob_get,
    .blob_remove = l_blob_remove,
    .blob_list = l_blob_list,
    .close = l_close,
};

int cs__be_local_open(const char *const *dirs, int ndirs, struct cs__be **out)
{
    struct local *l;
    int rc = CM_ENOMEM;

    if (!dirs || ndirs < 1 || ndirs > CS__MAX_DRIVES)
        return CM_EINVAL;
    if (!(l = calloc(1, sizeof(*l))))
        return CM_ENOMEM;
    l->be.ops = &local_ops;
    if (cm_bufkeep_init(&l->stages, LB_STAGE, LB_ALIGN, LB_STAGES_KEPT) != 0)
        goto out;
    if (!(l->dirs = calloc((size_t)ndirs, sizeof(char *))))
        goto out;
    l->ndirs = ndirs;
    for (int i = 0; i < ndirs; i++) {
        size_t n = strlen(dirs[i]);
        while (n > 1 && dirs[i][n - 1] == '/')
            n--;
        if (!(l->dirs[i] = cm_slice_strdup(CM_SLICE(dirs[i], n))))
            goto out;
        if ((rc = cm_mkdir_p(l->dirs[i], 0755)) != 0) {
            cm_log(CM_LOG_ERROR, "chunkstore: cannot create drive directory %s", l->dirs[i]);
            goto out;
        }
        make_fanouts(l->dirs[i]);
        rc = CM_ENOMEM;
    }
    *out = &l->be;
    return 0;
out:
    l_close(&l->be);
    return rc;
}
