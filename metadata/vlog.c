/* metadata/vlog.c - the value log: the bytes of small objects, kept in
 * append-only segment files beside LevelDB (DIR/cairn-values.NNNNNNNN)
 * while their records hold where they are (a md_value_ref). LevelDB then
 * carries records of a few hundred bytes instead of whole objects, and its
 * memtable flushes and compactions stop writing every small object's bytes
 * again at each level (doc/bench.md has the figures).
 *
 * Bytes only, like journal.c: db.c makes each write durable (the value
 * travels in the commit journal's record, is written here buffered, and
 * reaches the disk at the next checkpoint, md__vlog_sync) and objects.c
 * knows which records point where, so it also moves the live values out of
 * a mostly dead segment (md__values_gc) before md__vlog_drop deletes it.
 *
 * Space is handed out by md__vlog_reserve in the active segment, which is
 * a new one at every open and whenever it would pass md__vlog_seg_bytes, so a
 * segment that is not active is never written again except by a journal
 * replay (of writes that were already there). Reserved space whose write
 * never happened (a failed commit) stays a hole: dead bytes like others. */
#include "metadata/md_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define VLOG_PREFIX "cairn-values."

uint64_t md__vlog_seg_bytes = (uint64_t)64 << 20; /* a segment stops growing past this */
size_t md__vlog_fds = 64; /* segments that keep a descriptor open (the newest ones) */

struct vseg {
    uint32_t id;
    int fd;        /* -1: closed (an old segment), opened for each use */
    uint64_t size; /* bytes reserved (the active one) or the file's size */
    uint64_t dead; /* bytes known to be dead (approximate: see md__vlog_dead) */
    bool known;    /* dead is counted since the segment began, or since a scan */
    uint32_t pending; /* reservations whose batch is not yet freed (md__vlog_release) */
    bool dirty;    /* written since the last md__vlog_sync */
    bool fresh;    /* created since the last md__vlog_sync: its directory entry too */
};

struct md__vlog {
    char dir[4096];
    pthread_rwlock_t lk; /* the table: read to use an fd, write to add or drop one */
    pthread_mutex_t mu;  /* reservations, sizes, dead counts, dirty flags */
    struct vseg *segs;   /* by id, ascending */
    size_t n, cap;
    size_t nopen;        /* segments with fd >= 0 */
    uint32_t active;     /* id of the segment reservations go to */
};

uint64_t md__vsum(const uint8_t *p, size_t n)
{
    return md__sum64(0x9e3779b97f4a7c15ull ^ ((uint64_t)n << 32), p, n);
}

static void seg_path(const md__vlog *v, uint32_t id, char *out, size_t cap)
{
    snprintf(out, cap, "%s/" VLOG_PREFIX "%08" PRIu32, v->dir, id);
}

/* With lk held (any way): the segment with this id, or NULL. */
static struct vseg *find(md__vlog *v, uint32_t id)
{
    size_t lo = 0, hi = v->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v->segs[mid].id == id)
            return &v->segs[mid];
        if (v->segs[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* With lk held for writing: opens (creating) segment id and adds it in order. */
static int add_seg(md__vlog *v, uint32_t id, bool create)
{
    char path[4200];
    struct stat st;

    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 16;
        struct vseg *s = realloc(v->segs, cap * sizeof *s);
        if (!s)
            return CM_ENOMEM;
        v->segs = s;
        v->cap = cap;
    }
    seg_path(v, id, path, sizeof path);
    int fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
    if (fd < 0)
        return errno == ENOSPC ? CM_ENOSPACE : CM_EIO;
    if (fstat(fd, &st)) {
        close(fd);
        return CM_EIO;
    }
    size_t at = v->n;
    while (at > 0 && v->segs[at - 1].id > id)
        at--;
    memmove(&v->segs[at + 1], &v->segs[at], (v->n - at) * sizeof *v->segs);
    v->segs[at] = (struct vseg){id, fd, (uint64_t)st.st_size, 0, create, 0, false, create};
    v->n++;
    /* Past md__vlog_fds open descriptors the oldest segment's is closed: a
     * store of many segments must not run out of descriptors, and old
     * segments are read less. */
    if (++v->nopen > md__vlog_fds) {
        for (size_t i = 0; i < v->n; i++) {
            struct vseg *o = &v->segs[i];
            if (o->fd >= 0 && o->id != id && o->id != v->active) {
                close(o->fd);
                o->fd = -1;
                v->nopen--;
                break;
            }
        }
    }
    return 0;
}

/* With lk held: s's descriptor, or one opened for this use (*tmp: the
 * caller closes it). -1 if it cannot be opened. */
static int seg_fd(const md__vlog *v, const struct vseg *s, bool *tmp)
{
    char path[4200];

    *tmp = false;
    if (s->fd >= 0)
        return s->fd;
    seg_path(v, s->id, path, sizeof path);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    *tmp = fd >= 0;
    return fd;
}

int md__vlog_open(const char *dir, md__vlog **out)
{
    md__vlog *v = calloc(1, sizeof *v);
    uint32_t top = 0;
    int rc = 0;

    if (!v)
        return CM_ENOMEM;
    snprintf(v->dir, sizeof v->dir, "%s", dir);
    pthread_rwlock_init(&v->lk, NULL);
    pthread_mutex_init(&v->mu, NULL);
    DIR *d = opendir(dir);
    if (!d) {
        rc = CM_EIO;
        goto fail;
    }
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        char *end;
        if (strncmp(e->d_name, VLOG_PREFIX, sizeof VLOG_PREFIX - 1))
            continue;
        const char *num = e->d_name + sizeof VLOG_PREFIX - 1;
        unsigned long id = strtoul(num, &end, 10);
        if (end == num || *end || id == 0 || id >= UINT32_MAX)
            continue;
        rc = add_seg(v, (uint32_t)id, false);
        top = (uint32_t)id > top ? (uint32_t)id : top;
    }
    closedir(d);
    if (rc)
        goto fail;
    v->active = top + 1; /* created by the first reservation */
    *out = v;
    return 0;
fail:
    md__vlog_close(v);
    return rc;
}

void md__vlog_close(md__vlog *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++)
        if (v->segs[i].fd >= 0)
            close(v->segs[i].fd);
    free(v->segs);
    pthread_rwlock_destroy(&v->lk);
    pthread_mutex_destroy(&v->mu);
    free(v);
}

/* With lk held (any way) and mu: takes n bytes of the active segment if it
 * exists and has room. */
static bool take(md__vlog *v, size_t n, uint32_t *seg, uint64_t *off)
{
    struct vseg *s = find(v, v->active);
    if (!s || (s->size > 0 && s->size + n > md__vlog_seg_bytes))
        return false;
    *seg = s->id;
    *off = s->size;
    s->size += n;
    s->pending++;
    return true;
}

void md__vlog_release(md__vlog *v, uint32_t seg)
{
    pthread_rwlock_rdlock(&v->lk);
    pthread_mutex_lock(&v->mu);
    struct vseg *s = find(v, seg);
    if (s && s->pending)
        s->pending--;
    pthread_mutex_unlock(&v->mu);
    pthread_rwlock_unlock(&v->lk);
}

int md__vlog_reserve(md__vlog *v, size_t n, uint32_t *seg, uint64_t *off)
{
    int rc = 0;

    pthread_rwlock_rdlock(&v->lk);
    pthread_mutex_lock(&v->mu);
    bool done = take(v, n, seg, off);
    pthread_mutex_unlock(&v->mu);
    pthread_rwlock_unlock(&v->lk);
    if (done)
        return 0;
    pthread_rwlock_wrlock(&v->lk); /* a new segment: once per md__vlog_seg_bytes */
    pthread_mutex_lock(&v->mu);
    if (!take(v, n, seg, off)) { /* else another thread added one meanwhile */
        if (find(v, v->active))
            v->active++; /* full */
        if (!(rc = add_seg(v, v->active, true)))
            take(v, n, seg, off);
    }
    pthread_mutex_unlock(&v->mu);
    pthread_rwlock_unlock(&v->lk);
    return rc;
}

int md__vlog_write(md__vlog *v, uint32_t seg, uint64_t off, cm_slice bytes)
{
    int rc = 0;

    pthread_rwlock_rdlock(&v->lk);
    struct vseg *s = find(v, seg);
    if (!s) { /* a replay of a segment whose file is gone: only a hand could do that */
        pthread_rwlock_unlock(&v->lk);
        pthread_rwlock_wrlock(&v->lk);
        if (!(s = find(v, seg)) && !(rc = add_seg(v, seg, true)))
            s = find(v, seg);
        if (s && seg >= v->active)
            v->active = seg + 1;
    }
    bool tmp = false;
    int fd = s ? seg_fd(v, s, &tmp) : -1;
    if (!rc && fd < 0)
        rc = CM_EIO;
    for (size_t done = 0; !rc && done < bytes.n;) {
        ssize_t w = pwrite(fd, bytes.p + done, bytes.n - done, (off_t)(off + done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            rc = w < 0 && errno == ENOSPC ? CM_ENOSPACE : CM_EIO;
        else
            done += (size_t)w;
    }
    if (tmp)
        close(fd);
    if (s) {
        pthread_mutex_lock(&v->mu);
        s->dirty = true;
        if (s->id != v->active && off + bytes.n > s->size)
            s->size = off + bytes.n;
        pthread_mutex_unlock(&v->mu);
    }
    pthread_rwlock_unlock(&v->lk);
    return rc;
}

int md__vlog_sync(md__vlog *v)
{
    bool fresh = false;
    int rc = 0;

    pthread_rwlock_rdlock(&v->lk);
    for (size_t i = 0; i < v->n; i++) {
        struct vseg *s = &v->segs[i];
        pthread_mutex_lock(&v->mu);
        bool dirty = s->dirty;
        s->dirty = false;
        fresh |= s->fresh;
        s->fresh = false;
        pthread_mutex_unlock(&v->mu);
        bool tmp = false;
        int fd = dirty ? seg_fd(v, s, &tmp) : -1;
        bool failed = dirty && (fd < 0 || fdatasync(fd));
        if (tmp)
            close(fd);
        if (failed && !rc) {
            rc = CM_EIO;
            pthread_mutex_lock(&v->mu);
            s->dirty = true; /* still to do */
            pthread_mutex_unlock(&v->mu);
        }
    }
    pthread_rwlock_unlock(&v->lk);
    if (!rc && fresh && cm_fsync_dir(v->dir))
        rc = CM_EIO;
    return rc;
}

int md__vlog_read(md__vlog *v, uint32_t seg, uint64_t off, uint8_t *p, size_t n)
{
    int rc = 0;

    pthread_rwlock_rdlock(&v->lk);
    struct vseg *s = find(v, seg);
    bool tmp = false;
    int fd = s ? seg_fd(v, s, &tmp) : -1;
    if (!s)
        rc = CM_ENOTFOUND;
    else if (fd < 0)
        rc = errno == ENOENT ? CM_ENOTFOUND : CM_EIO;
    for (size_t done = 0; !rc && done < n;) {
        ssize_t r = pread(fd, p + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rc = CM_EIO;
        else if (r == 0)
            rc = CM_ECORRUPT; /* past the end: the write never reached the file */
        else
            done += (size_t)r;
    }
    if (tmp)
        close(fd);
    pthread_rwlock_unlock(&v->lk);
    return rc;
}

void md__vlog_dead(md__vlog *v, uint32_t seg, uint64_t n, bool set)
{
    pthread_rwlock_rdlock(&v->lk);
    pthread_mutex_lock(&v->mu);
    struct vseg *s = find(v, seg);
    if (s && set) {
        s->dead = n;
        s->known = true;
    } else if (s) {
        s->dead += n;
    }
    pthread_mutex_unlock(&v->mu);
    pthread_rwlock_unlock(&v->lk);
}

size_t md__vlog_segments(md__vlog *v, md__vseg_info *out, size_t max)
{
    size_t k = 0;

    pthread_rwlock_rdlock(&v->lk);
    pthread_mutex_lock(&v->mu);
    for (size_t i = 0; i < v->n && k < max; i++) {
        const struct vseg *s = &v->segs[i];
        out[k++] = (md__vseg_info){s->id, s->size, s->dead, s->pending, s->known,
                                   s->id == v->active};
    }
    if (k == max && v->n > max)
        k = v->n; /* tells the caller to ask again with more room */
    pthread_mutex_unlock(&v->mu);
    pthread_rwlock_unlock(&v->lk);
    return k;
}

int md__vlog_drop(md__vlog *v, uint32_t seg)
{
    char path[4200];
    int rc = 0;

    pthread_rwlock_wrlock(&v->lk);
    struct vseg *s = find(v, seg);
    if (!s || seg == v->active) {
        pthread_rwlock_unlock(&v->lk);
        return CM_EINVAL;
    }
    seg_path(v, seg, path, sizeof path);
    if (unlink(path) && errno != ENOENT)
        rc = CM_EIO;
    else {
        if (s->fd >= 0) {
            close(s->fd);
            v->nopen--;
        }
        size_t at = (size_t)(s - v->segs);
        memmove(s, s + 1, (v->n - at - 1) * sizeof *s);
        v->n--;
    }
    pthread_rwlock_unlock(&v->lk);
    if (!rc)
        (void)cm_fsync_dir(v->dir); /* a replay never needs it back (see md__values_gc) */
    return rc;
}
