/* metadata/journal.c - the commit journal: a preallocated file of records
 * written at 4 KiB-aligned offsets with O_DIRECT | O_DSYNC, which makes each
 * group of metadata writes durable with one device write (and flush) instead
 * of LevelDB's log append + fdatasync (a size change, so an ext4 journal
 * commit as well: on this kind of VM about 300 us and 130 us of CPU per sync
 * against 150 us and 55 us). Bytes only: db.c encodes LevelDB batches into
 * record payloads and replays them; see db.c for the protocol around it.
 *
 * Record: header (32 bytes) then payload, padded to 4 KiB:
 *   magic u32 "CJR2", payload length u32, lsn u64, sum u64 (over lsn, length
 *   and payload: md__sum64x4), reserved u64.
 * A "CJR1" record (an older build's: the same with md__sum64) is still
 * replayed.
 * Records follow each other from offset 0; a rewind starts over at 0, so
 * records of earlier laps sit behind the current ones. They are told apart
 * by lsn: every record has the lsn after its predecessor's, and a lap never
 * reuses an lsn (the caller keeps the base in LevelDB). */
#include "metadata/md_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define J_ALIGN 4096
#define J_HDR 32
#define J_MAGIC 0x32524a43u  /* "CJR2" little-endian */
#define J_MAGIC1 0x31524a43u /* "CJR1": md__sum64 */

size_t md__journal_bytes = (size_t)16 << 20; /* a checkpoint per 16 MiB of metadata */

struct md__journal {
    int fd;
    bool direct;   /* opened with O_DIRECT (else buffered with O_DSYNC) */
    size_t size;   /* file size, a multiple of J_ALIGN */
    size_t off;    /* where the next record goes */
    size_t last;   /* where the last appended record starts (SIZE_MAX: none to undo) */
    uint8_t *buf;  /* aligned staging buffer */
    size_t cap;    /* its size */
};

uint64_t md__sum64(uint64_t seed, const uint8_t *p, size_t n)
{
    uint64_t h = seed;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 29;
    }
    uint64_t w = 0;
    if (n > i)
        memcpy(&w, p + i, n - i);
    h = (h ^ w ^ (uint64_t)(n - i)) * 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 32);
}

/* The same mix over four interleaved 8-byte lanes, so that four multiplies
 * are under way at once instead of one (a journal record carries every
 * small object's bytes: 4 KiB took about 1 us with one lane), then the
 * lanes and the tail folded together with md__sum64. */
uint64_t md__sum64x4(uint64_t seed, const uint8_t *p, size_t n)
{
    uint64_t h[4] = {seed, seed ^ 0x9e3779b97f4a7c15ull, seed ^ 0xbf58476d1ce4e5b9ull,
                     seed ^ 0x94d049bb133111ebull};
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        for (int l = 0; l < 4; l++) {
            uint64_t w;
            memcpy(&w, p + i + 8 * l, 8);
            h[l] = (h[l] ^ w) * 0xff51afd7ed558ccdull;
            h[l] ^= h[l] >> 29;
        }
    }
    uint8_t lanes[32];
    memcpy(lanes, h, sizeof lanes);
    return md__sum64(md__sum64(seed ^ n, lanes, sizeof lanes), p + i, n - i);
}

/* A record's check, seeded with lsn and length: md__sum64x4 over the
 * payload ("CJR2"), or md__sum64 ("CJR1"). */
static uint64_t jsum(uint32_t magic, uint64_t lsn, uint32_t len, const uint8_t *p, size_t n)
{
    uint64_t seed = 0x9e3779b97f4a7c15ull ^ lsn ^ ((uint64_t)len << 40);
    return magic == J_MAGIC1 ? md__sum64(seed, p, n) : md__sum64x4(seed, p, n);
}

static size_t round_up(size_t n)
{
    return (n + J_ALIGN - 1) / J_ALIGN * J_ALIGN;
}

static int grow_buf(md__journal *j, size_t need)
{
    if (need <= j->cap)
        return 0;
    size_t cap = round_up(need > 2 * j->cap ? need : 2 * j->cap);
    void *p = NULL;
    if (posix_memalign(&p, J_ALIGN, cap))
        return CM_ENOMEM;
    free(j->buf);
    j->buf = p;
    j->cap = cap;
    return 0;
}

/* Writes zeros up to size and syncs: records later overwrite written blocks
 * (an overwrite of an unwritten extent would need a file system commit). */
static int zero_fill(int fd, size_t from, size_t size)
{
    static const uint8_t zero[65536];
    for (size_t off = from; off < size;) {
        size_t n = size - off < sizeof zero ? size - off : sizeof zero;
        ssize_t w = pwrite(fd, zero, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return errno == ENOSPC ? CM_ENOSPACE : CM_EIO;
        off += (size_t)w;
    }
    return fsync(fd) ? CM_EIO : 0;
}

int md__journal_open(const char *path, md__journal **out)
{
    md__journal *j = calloc(1, sizeof *j);
    size_t size = round_up(md__journal_bytes < 2 * J_ALIGN ? 2 * J_ALIGN : md__journal_bytes);
    struct stat st;
    int rc;

    if (!j)
        return CM_ENOMEM;
    j->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (j->fd < 0 || fstat(j->fd, &st)) {
        rc = CM_EIO;
        goto fail;
    }
    if ((size_t)st.st_size > size) /* a larger file from an earlier setting: use it all */
        size = round_up((size_t)st.st_size);
    if ((size_t)st.st_size < size) {
        if ((rc = zero_fill(j->fd, (size_t)st.st_size, size)))
            goto fail;
        /* The new file's directory entry, for the replay after a power loss. */
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash) {
            *slash = 0;
            (void)cm_fsync_dir(dir); /* best effort, as before the journal existed */
        }
    }
    close(j->fd);
    /* O_DIRECT where the file system has it (tmpfs, for one, may not). */
    j->fd = open(path, O_RDWR | O_DSYNC | O_DIRECT | O_CLOEXEC);
    j->direct = j->fd >= 0;
    if (j->fd < 0)
        j->fd = open(path, O_RDWR | O_DSYNC | O_CLOEXEC);
    if (j->fd < 0) {
        rc = CM_EIO;
        goto fail;
    }
    j->size = size;
    j->last = SIZE_MAX;
    if ((rc = grow_buf(j, 64 * 1024)))
        goto fail;
    *out = j;
    return 0;
fail:
    if (j->fd >= 0)
        close(j->fd);
    free(j);
    return rc;
}

void md__journal_close(md__journal *j)
{
    if (!j)
        return;
    close(j->fd);
    free(j->buf);
    free(j);
}

static int read_at(md__journal *j, size_t off, size_t n)
{
    for (size_t done = 0; done < n;) {
        ssize_t r = pread(j->fd, j->buf + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return CM_EIO;
        done += (size_t)r;
    }
    return 0;
}

int md__journal_replay(md__journal *j, uint64_t base, int (*fn)(void *arg, cm_slice payload),
                       void *arg, uint64_t *next)
{
    uint64_t want = base;
    size_t off = 0;
    int rc = 0;

    while (off + J_ALIGN <= j->size) {
        if ((rc = read_at(j, off, J_ALIGN)))
            break;
        uint32_t len = md__get_le32(j->buf + 4);
        uint64_t lsn = md__get_le64(j->buf + 8);
        size_t total = round_up(J_HDR + (size_t)len);
        uint32_t magic = md__get_le32(j->buf);
        if ((magic != J_MAGIC && magic != J_MAGIC1) || lsn != want || total > j->size - off)
            break; /* the end: zeros, a torn record, or one of an earlier lap */
        if (total > J_ALIGN) {
            if ((rc = grow_buf(j, total)) || (rc = read_at(j, off, total)))
                break;
        }
        if (md__get_le64(j->buf + 16) != jsum(magic, lsn, len, j->buf + J_HDR, len))
            break;
        if ((rc = fn(arg, (cm_slice){j->buf + J_HDR, len})))
            break;
        want++;
        off += total;
    }
    *next = want;
    j->off = off; /* appends go on after the last good record (until a rewind) */
    j->last = SIZE_MAX;
    return rc;
}

bool md__journal_fits(const md__journal *j, size_t payload)
{
    return j->off + round_up(J_HDR + payload) <= j->size;
}

bool md__journal_ever_fits(const md__journal *j, size_t payload)
{
    return round_up(J_HDR + payload) <= j->size;
}

/* Writes j->buf[0, n) at off, durably (O_DSYNC). A file system that takes
 * O_DIRECT at open but refuses the write (EINVAL) gets it buffered. */
static int write_at(md__journal *j, size_t off, size_t n)
{
    for (size_t done = 0; done < n;) {
        ssize_t w = pwrite(j->fd, j->buf + done, n - done, (off_t)(off + done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EINVAL && j->direct) {
            int fl = fcntl(j->fd, F_GETFL);
            if (fl == -1 || fcntl(j->fd, F_SETFL, fl & ~O_DIRECT) == -1)
                return CM_EIO;
            j->direct = false;
            continue;
        }
        if (w <= 0)
            return w < 0 && errno == ENOSPC ? CM_ENOSPACE : CM_EIO;
        done += (size_t)w;
    }
    return 0;
}

int md__journal_append(md__journal *j, uint64_t lsn, cm_slice payload)
{
    size_t total = round_up(J_HDR + payload.n);
    int rc;

    if (j->off + total > j->size)
        return CM_ENOSPACE;
    if ((rc = grow_buf(j, total)))
        return rc;
    md__put_le32(j->buf, J_MAGIC);
    md__put_le32(j->buf + 4, (uint32_t)payload.n);
    md__put_le64(j->buf + 8, lsn);
    md__put_le64(j->buf + 16, jsum(J_MAGIC, lsn, (uint32_t)payload.n, payload.p, payload.n));
    md__put_le64(j->buf + 24, 0);
    memcpy(j->buf + J_HDR, payload.p, payload.n);
    memset(j->buf + J_HDR + payload.n, 0, total - J_HDR - payload.n);
    if ((rc = write_at(j, j->off, total)))
        return rc;
    j->last = j->off;
    j->off += total;
    return 0;
}

int md__journal_unappend(md__journal *j)
{
    if (j->last == SIZE_MAX || j->last >= j->off)
        return CM_EINVAL;
    memset(j->buf, 0, J_ALIGN);
    int rc = write_at(j, j->last, J_ALIGN);
    if (!rc)
        j->off = j->last;
    j->last = SIZE_MAX;
    return rc;
}

void md__journal_rewind(md__journal *j)
{
    j->off = 0;
    j->last = SIZE_MAX;
}
