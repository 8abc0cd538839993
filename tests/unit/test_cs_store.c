/* tests/unit/test_cs_store.c - the chunkstore end to end in a temp dir: 6
 * drives, 4+2. Round trips of awkward sizes, range reads, lost drives,
 * rotten blocks, too many failures, heal on read (rotten blocks, bad
 * headers, lost drives, heal racing delete), multi-segment layouts, delete
 * by layout and by intent, recover, list; manifests, cs_layout_check,
 * degraded writes, placement around down drives; the engine over a
 * fault-injecting parallel backend (be_local wrapped: batched I/O, drives
 * down, deferred heals, epoch); the local backend's fallbacks from
 * O_DIRECT to buffered writes (a ramfs that refuses O_DIRECT, and direct
 * writes that fail with EINVAL or write short); the in-place direct writes
 * of stripe-buffer blocks over many block sizes, against shard images
 * built from the data; plus the private encodings. */
#include "chunkstore/cs_int.h"
#include "common/cm.h"
#include "tests/unit/tap.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NDRIVES 6
#define K 4
#define M 2
#define BS ((size_t)64 << 10)
#define STRIPE (K * BS)

static char root[256];
static char drive_path[8][300];
static const char *drives[8];

static _Thread_local uint64_t rng_state = 0x243f6a8885a308d3ULL; /* per reader thread */
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(rng() >> 56);
}

/* An object written to the store, with the bytes we expect back. */
struct obj {
    size_t size;
    uint8_t *data;
    cm_buf layout;
};

/* Writes data in irregular pieces (so both the buffered and the
 * whole-stripe paths run) and returns the layout in o->layout. */
static int put(cs_store_t *cs, struct obj *o)
{
    cm_buf intent = {0};
    cs_writer_t *w;
    size_t off = 0;
    int rc = cs_writer_open(cs, &intent, &w);

    if (rc != 0)
        return rc;
    while (off < o->size) {
        size_t c = 1 + rng() % (2 * STRIPE + 3);
        if (c > o->size - off)
            c = o->size - off;
        if ((rc = cs_writer_write(w, o->data + off, c)) != 0)
            goto fail;
        off += c;
    }
    if ((rc = cs_writer_finish(w, &o->layout)) != 0)
        goto fail;
    cm_buf_free(&intent);
    return 0;
fail:
    cs_writer_abort(w);
    cm_buf_free(&intent);
    return rc;
}

/* Reads [off, off+len) with reads of chunk bytes into out. Returns 0 or the
 * first error; a short total is CM_EIO. */
static int get(cs_store_t *cs, cm_slice layout, uint64_t off, uint64_t len, size_t chunk,
               uint8_t *out)
{
    cs_reader_t *r;
    size_t got = 0;
    int rc = cs_reader_open(cs, layout, off, len, &r);

    if (rc != 0)
        return rc;
    for (;;) {
        size_t want = chunk;
        if (want > len - got)
            want = len - got;
        ssize_t n = cs_reader_read(r, out + got, want ? want : 1);
        if (n < 0) {
            rc = (int)n;
            break;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    cs_reader_close(r);
    if (rc == 0 && got != len)
        rc = CM_EIO;
    return rc;
}

/* Whole object in a few read sizes plus random ranges; 1 if all exact. */
static int check_obj(cs_store_t *cs, const struct obj *o, int nranges)
{
    uint8_t *buf = malloc(o->size + 1);
    static const size_t chunks[] = {1 << 20, 1000, (size_t)BS};
    int good = 1;

    for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]) && good; c++) {
        if (c > 0 && o->size > 4 * STRIPE && chunks[c] < 4096)
            continue; /* tiny reads over big objects: slow, covered on small ones */
        memset(buf, 0xee, o->size + 1);
        int rc = get(cs, cm_buf_slice(&o->layout), 0, o->size, chunks[c], buf);
        if (rc != 0 || (o->size > 0 && memcmp(buf, o->data, o->size) != 0)) {
            printf("#   size %zu chunk %zu: rc %d\n", o->size, chunks[c], rc);
            good = 0;
        }
    }
    for (int i = 0; i < nranges && good && o->size > 0; i++) {
        uint64_t off = rng() % o->size, len = rng() % (o->size - off + 1);
        if (i % 3 == 0 && len > 3 * BS)
            len = rng() % (3 * BS); /* many short ranges too */
        int rc = get(cs, cm_buf_slice(&o->layout), off, len, 1 + rng() % (BS + 17), buf);
        if (rc != 0 || memcmp(buf, o->data + off, len) != 0) {
            printf("#   size %zu range %llu+%llu: rc %d\n", o->size, (unsigned long long)off,
                   (unsigned long long)len, rc);
            good = 0;
        }
    }
    free(buf);
    return good;
}

/* Counts regular files under a drive's fan-out dirs (optionally only .tmp). */
static int count_files(const char *drive, int only_tmp)
{
    char path[600];
    DIR *top = opendir(drive), *sub;
    struct dirent *e, *f;
    int n = 0;

    if (!top)
        return 0;
    while ((e = readdir(top)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", drive, e->d_name);
        if (!(sub = opendir(path)))
            continue;
        while ((f = readdir(sub)) != NULL) {
            size_t l = strlen(f->d_name);
            struct stat st;
            if (f->d_name[0] == '.')
                continue;
            if (fstatat(dirfd(sub), f->d_name, &st, 0) != 0 || !S_ISREG(st.st_mode))
                continue; /* DRIVE/meta holds directories */
            if (!only_tmp || (l > 4 && strcmp(f->d_name + l - 4, ".tmp") == 0))
                n++;
        }
        closedir(sub);
    }
    closedir(top);
    return n;
}

static int count_all_files(int only_tmp)
{
    int n = 0;
    for (int d = 0; d < NDRIVES; d++)
        n += count_files(drives[d], only_tmp);
    return n;
}

/* Removes every shard file on one drive (the drive "died"); rmdirs: the
 * fan-out directories too (the drive was replaced by an empty one). */
static void wipe_drive_ex(int d, int rmdirs)
{
    char path[600], file[900];
    DIR *top = opendir(drives[d]), *sub;
    struct dirent *e, *f;

    while (top && (e = readdir(top)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", drives[d], e->d_name);
        if (!(sub = opendir(path)))
            continue;
        while ((f = readdir(sub)) != NULL) {
            if (f->d_name[0] == '.')
                continue;
            snprintf(file, sizeof(file), "%s/%s", path, f->d_name);
            unlink(file);
        }
        closedir(sub);
        if (rmdirs)
            rmdir(path);
    }
    if (top)
        closedir(top);
}

static void wipe_drive(int d)
{
    wipe_drive_ex(d, 0);
}

static struct cs_seg first_seg(const cm_buf *layout)
{
    cm_reader r = {layout->p, layout->n};
    struct cs_seg s;
    memset(&s, 0, sizeof(s));
    cs__rec_decode(&r, &s);
    return s;
}

/* XORs one byte at file offset off of shard i of the layout's first segment. */
static int flip_byte(cs_store_t *cs, const cm_buf *layout, int shard, off_t off)
{
    struct cs_seg s = first_seg(layout);
    char path[600];
    uint8_t b;
    int fd, rc = -1;

    if (cs__shard_path(cs, s.drives[shard], s.id, shard, 0, path, sizeof(path)) != 0)
        return -1;
    fd = open(path, O_RDWR);
    if (fd < 0)
        return -1;
    if (pread(fd, &b, 1, off) == 1) {
        b ^= 0x5a;
        rc = pwrite(fd, &b, 1, off) == 1 ? 0 : -1;
    }
    close(fd);
    return rc;
}

static int shard_exists(cs_store_t *cs, const struct cs_seg *s, int shard, int tmp)
{
    char path[600];
    struct stat st;
    if (cs__shard_path(cs, s->drives[shard], s->id, shard, tmp, path, sizeof(path)) != 0)
        return 0;
    return stat(path, &st) == 0;
}

static off_t shard_size(cs_store_t *cs, const struct cs_seg *s, int shard)
{
    char path[600];
    struct stat st;
    if (cs__shard_path(cs, s->drives[shard], s->id, shard, 0, path, sizeof(path)) != 0 ||
        stat(path, &st) != 0)
        return -1;
    return st.st_size;
}

/* Reads a whole shard file of the layout's first segment (malloc()ed). */
static uint8_t *shard_read(cs_store_t *cs, const cm_buf *layout, int shard, size_t *n)
{
    struct cs_seg s = first_seg(layout);
    char path[600];
    uint8_t *p = NULL;
    struct stat st;
    int fd;

    *n = 0;
    if (cs__shard_path(cs, s.drives[shard], s.id, shard, 0, path, sizeof(path)) != 0 ||
        (fd = open(path, O_RDONLY)) < 0)
        return NULL;
    if (fstat(fd, &st) == 0 && (p = malloc((size_t)st.st_size + 1)) != NULL &&
        pread(fd, p, (size_t)st.st_size, 0) == st.st_size)
        *n = (size_t)st.st_size;
    close(fd);
    return p;
}

/* 1 if shard i of the layout's first segment holds exactly want[0..n). */
static int shard_is(cs_store_t *cs, const cm_buf *layout, int shard, const uint8_t *want, size_t n)
{
    size_t got;
    uint8_t *p = shard_read(cs, layout, shard, &got);
    int same = p && want && got == n && memcmp(p, want, n) == 0;
    free(p);
    return same;
}

/* 1 if every shard of every segment of the layout exists with its length. */
static int layout_intact(cs_store_t *cs, const cm_buf *layout)
{
    cm_reader r = {layout->p, layout->n};
    struct cs_seg s;

    while (r.n > 0) {
        if (cs__rec_decode(&r, &s) != 0)
            return 0;
        for (int i = 0; i < s.k + s.m; i++)
            if (shard_size(cs, &s, i) != (off_t)cs__shard_len(s.size, s.k, s.block_size))
                return 0;
    }
    return 1;
}

static uint64_t nhealed(cs_store_t *cs)
{
    uint64_t n = 0;
    cs_store_heal_stats(cs, &n, NULL);
    return n;
}

static void test_encodings(void)
{
    struct cs_hdr h = {.index = 5, .k = 4, .m = 2, .block_size = 1 << 20, .size = 123456789};
    struct cs_hdr h2;
    uint8_t hb[CS__HDR_LEN];

    memset(h.id, 0xab, CS_ID_LEN);
    cs__hdr_encode(&h, hb);
    ok(memcmp(hb, "CAIRNSH1", 8) == 0, "shard header starts with the magic");
    ok(cs__hdr_decode(hb, sizeof(hb), &h2) == 0 && h2.index == 5 && h2.k == 4 && h2.m == 2 &&
           h2.block_size == (1u << 20) && h2.size == 123456789 &&
           memcmp(h2.id, h.id, CS_ID_LEN) == 0,
       "shard header round trip");
    int all_bad = 1;
    for (int i = 0; i < CS__HDR_LEN; i++) {
        hb[i] ^= 0x01;
        all_bad &= cs__hdr_decode(hb, sizeof(hb), &h2) == CM_ECORRUPT;
        hb[i] ^= 0x01;
    }
    ok(all_bad, "any flipped header bit is CM_ECORRUPT");
    is_int(cs__hdr_decode(hb, CS__HDR_LEN - 1, &h2), CM_ECORRUPT, "short header is CM_ECORRUPT");

    /* Geometry: the short last stripe is not padded to whole blocks. */
    is_int(cs__nstripes(0, 4, 100), 0, "0 bytes: no stripes");
    is_int(cs__nstripes(400, 4, 100), 1, "one full stripe");
    is_int(cs__nstripes(401, 4, 100), 2, "one full stripe plus one byte");
    is_int(cs__blen(401, 4, 100, 1), 1, "1-byte last stripe has 1-byte blocks");
    is_int(cs__blen(350, 4, 100, 0), 88, "350-byte stripe has ceil(350/4)-byte blocks");
    is_int(cs__shard_len(0, 4, 100), CS__HDR_LEN, "empty segment: header only");
    is_int(cs__shard_len(401, 4, 100), CS__HDR_LEN + 104 + 5, "shard length of 401 bytes");

    /* Layout records: round trip, truncation, bad fields. */
    struct cs_seg s = {.type = CS__REC_SEGMENT,
                       .size = 99,
                       .block_size = 4096,
                       .k = 4,
                       .m = 2,
                       .drives = {5, 0, 3, 1, 2, 4}};
    struct cs_seg s2;
    cm_buf b = {0};
    memset(s.id, 0x11, CS_ID_LEN);
    cs__rec_encode(&b, &s);
    is_int(b.n, CS__REC_FIXED + 12, "4+2 segment record is 43 bytes");
    cm_reader r = {b.p, b.n};
    ok(cs__rec_decode(&r, &s2) == 0 && r.n == 0 && s2.size == 99 && s2.k == 4 && s2.m == 2 &&
           s2.drives[0] == 5 && s2.drives[5] == 4 && s2.block_size == 4096,
       "segment record round trip");
    int trunc_bad = 1;
    for (size_t n = 0; n < b.n; n++) {
        uint64_t sz;
        trunc_bad &= cs_layout_size(CM_SLICE(b.p, n), &sz) == (n == 0 ? 0 : CM_ECORRUPT);
    }
    ok(trunc_bad, "every truncated layout is CM_ECORRUPT");
    b.p[29] = 0; /* k = 0 */
    uint64_t sz;
    is_int(cs_layout_size(cm_buf_slice(&b), &sz), CM_ECORRUPT, "k=0 record is CM_ECORRUPT");
    b.p[29] = 4;
    b.p[0] = 0x7f;
    is_int(cs_layout_size(cm_buf_slice(&b), &sz), CM_ECORRUPT, "unknown record type rejected");
    b.p[0] = CS__REC_INTENT;
    is_int(cs_layout_size(cm_buf_slice(&b), &sz), CM_ECORRUPT, "intent with a size rejected");
    cm_buf_free(&b);
    ok(cs_layout_size(CM_SLICE_NULL, &sz) == 0 && sz == 0, "empty layout has size 0");
}

static void test_placement(void)
{
    uint8_t id[CS_ID_LEN];
    uint16_t a[6], b[6];
    int hits[16] = {0}, distinct = 1, same = 1;

    for (int t = 0; t < 2000; t++) {
        fill_random(id, sizeof(id));
        cs__place(id, 16, 6, a);
        cs__place(id, 16, 6, b);
        same &= memcmp(a, b, sizeof(a)) == 0;
        for (int i = 0; i < 6; i++) {
            hits[a[i]]++;
            for (int j = 0; j < i; j++)
                distinct &= a[i] != a[j];
        }
        /* Rendezvous: the chosen drives are the 6 best scores, best first. */
        for (int i = 1; i < 6; i++)
            same &= cs__place_score(id, a[i - 1]) >= cs__place_score(id, a[i]);
    }
    ok(same, "placement is deterministic and ordered by score");
    ok(distinct, "placement picks distinct drives");
    int spread = 1;
    for (int d = 0; d < 16; d++)
        spread &= hits[d] > 2000 * 6 / 16 * 8 / 10 && hits[d] < 2000 * 6 / 16 * 12 / 10;
    ok(spread, "placement spreads evenly over 16 drives (within 20%%)");

    /* Adding a drive moves a shard only onto the new drive. */
    int stable = 1;
    for (int t = 0; t < 500; t++) {
        fill_random(id, sizeof(id));
        cs__place(id, 10, 6, a);
        cs__place(id, 11, 6, b);
        for (int i = 0, j = 0; i < 6; i++) {
            if (b[i] == 10)
                continue;
            stable &= b[i] == a[j++];
        }
    }
    ok(stable, "adding a drive keeps the other choices");
    is_int(cs__place(id, 5, 6, a), CM_EINVAL, "fewer drives than shards is CM_EINVAL");
}

struct list_ctx {
    int n;
};
static void count_id(void *arg, const uint8_t id[CS_ID_LEN])
{
    (void)id;
    ((struct list_ctx *)arg)->n++;
}

struct thr_arg {
    cs_store_t *cs;
    const struct obj *o;
    int ok;
};
static void *reader_thread(void *p)
{
    struct thr_arg *a = p;
    a->ok = check_obj(a->cs, a->o, 10);
    return NULL;
}

/* ------------------------------------------------ placement with down drives */

static void test_place_up(void)
{
    uint8_t id[CS_ID_LEN], up[16];
    uint16_t a[6], b[6], all[16], want[16];
    int match = 1, no_down = 1, nulls = 1, allup = 1, fills = 0;

    for (int t = 0; t < 2000; t++) {
        int nup = 0, j = 0;
        fill_random(id, sizeof(id));
        for (int d = 0; d < 16; d++)
            nup += up[d] = rng() % 3 != 0 || t % 50 == 0;
        cs__place(id, 16, 16, all); /* every drive, best first */
        for (int i = 0; i < 16; i++)
            if (up[all[i]])
                want[j++] = all[i];
        for (int i = 0; i < 16; i++)
            if (!up[all[i]])
                want[j++] = all[i];
        cs__place_up(id, 16, 6, up, a);
        match &= memcmp(a, want, sizeof(a)) == 0;
        for (int i = 0; i < 6 && i < nup; i++)
            no_down &= up[a[i]];
        fills += nup < 6;
        cs__place(id, 16, 6, b);
        cs__place_up(id, 16, 6, NULL, a);
        nulls &= memcmp(a, b, sizeof(a)) == 0;
        memset(up, 1, sizeof(up));
        cs__place_up(id, 16, 6, up, a);
        allup &= memcmp(a, b, sizeof(a)) == 0;
    }
    ok(match, "placement skips down drives: the best up drives in rendezvous order, then the "
              "best down ones");
    ok(no_down, "no down drive is chosen while enough drives are up");
    ok(fills > 0, "(%d cases had fewer up drives than shards)", fills);
    ok(nulls && allup, "all drives up (or no flags): the same choice as before");
    memset(up, 0, sizeof(up));
    ok(cs__place_up(id, 16, 6, up, a) == 0 && memcmp(a, all, sizeof(a)) == 0,
       "all drives down: the best ones, in rendezvous order");
    is_int(cs__place_up(id, 5, 6, NULL, a), CM_EINVAL, "fewer drives than shards is CM_EINVAL");
}

/* ------------------------------------------------------------- manifests */

/* Counts blob files (DRIVE/meta/ab/...) on the first ndr drives of dv. */
static int count_blobs(const char *const *dv, int ndr, int only_tmp)
{
    char meta[600];
    int n = 0;

    for (int d = 0; d < ndr; d++) {
        snprintf(meta, sizeof(meta), "%s/meta", dv[d]);
        n += count_files(meta, only_tmp);
    }
    return n;
}

static struct cs_seg decode_one(cm_slice s)
{
    cm_reader r = {s.p, s.n};
    struct cs_seg seg;
    memset(&seg, 0, sizeof(seg));
    if (cs__rec_decode(&r, &seg) != 0 || r.n != 0)
        seg.type = 0;
    return seg;
}

struct scan_ctx {
    int n, stop_at;
    cm_buf body, rec;
};
static int scan_cb(void *arg, cm_slice body, cm_slice record)
{
    struct scan_ctx *c = arg;
    c->n++;
    cm_buf_reset(&c->body);
    cm_buf_reset(&c->rec);
    cm_buf_append(&c->body, body.p, body.n);
    cm_buf_append(&c->rec, record.p, record.n);
    return c->stop_at == c->n ? 7 : 0;
}

/* XORs one byte of a blob file. */
static int flip_blob(cs_store_t *cs, int d, const uint8_t id[CS_ID_LEN], off_t off)
{
    char path[600];
    uint8_t b;
    int fd, rc = -1;

    if (cs__blob_path(cs, d, id, path, sizeof(path)) != 0 || (fd = open(path, O_RDWR)) < 0)
        return -1;
    if (pread(fd, &b, 1, off) == 1) {
        b ^= 0x5a;
        rc = pwrite(fd, &b, 1, off) == 1 ? 0 : -1;
    }
    close(fd);
    return rc;
}

static int blob_exists(cs_store_t *cs, int d, const uint8_t id[CS_ID_LEN])
{
    char path[600];
    return cs__blob_path(cs, d, id, path, sizeof(path)) == 0 && access(path, F_OK) == 0;
}

static void test_manifests(cs_store_t *cs, const struct obj *o)
{
    cm_buf intent = {0}, lay = {0}, multi = {0};
    cs_manifest_t *mf = NULL;
    uint8_t body[3000];
    struct cs_seg mi, ml;
    struct list_ctx lc = {0};
    struct scan_ctx sc = {0};
    uint64_t sz = 1;
    size_t cnt = 1;
    int all;

    fill_random(body, sizeof(body));
    is_int(cs_manifest_open(cs, &intent, &mf), 0, "manifest: open");
    is_int(count_blobs(drives, NDRIVES, 0), 0, "manifest: nothing written at open");
    mi = decode_one(cm_buf_slice(&intent));
    ok(mi.type == CS__REC_MINTENT && mi.ncopies == M + 1 && mi.drives[0] != mi.drives[1] &&
           mi.drives[1] != mi.drives[2] && mi.drives[0] != mi.drives[2],
       "manifest: the intent names m+1 = 3 distinct drives");
    is_int(cs_layout_size(cm_buf_slice(&intent), &sz), CM_ECORRUPT,
           "manifest: an intent is not a layout");
    is_int(cs_manifest_commit(mf, CM_SLICE(body, sizeof(body)), &lay), 0, "manifest: commit");
    ml = decode_one(cm_buf_slice(&lay));
    ok(ml.type == CS__REC_MANIFEST && memcmp(ml.id, mi.id, CS_ID_LEN) == 0 &&
           ml.body_len == sizeof(body) && ml.ncopies == 3 &&
           memcmp(ml.drives, mi.drives, sizeof(ml.drives)) == 0,
       "manifest: the record names the intent's id and drives, with the body's length");
    all = 1;
    for (int i = 0; i < 3; i++)
        all &= blob_exists(cs, ml.drives[i], ml.id);
    ok(all && count_blobs(drives, NDRIVES, 0) == 3 && count_blobs(drives, NDRIVES, 1) == 0,
       "manifest: one blob file on each of the 3 drives, no .tmp");
    ok(cs_layout_size(cm_buf_slice(&lay), &sz) == 0 && sz == 0 &&
           cs_layout_count(cm_buf_slice(&lay), &cnt) == 0 && cnt == 0,
       "manifest: a manifest record alone is an empty layout");

    /* A layout with a segment, the manifest, and the segment again. */
    cs_layout_append(&multi, cm_buf_slice(&o->layout));
    ok(cs_layout_append(&multi, cm_buf_slice(&lay)) == 0, "manifest: cs_layout_append copies it");
    cs_layout_append(&multi, cm_buf_slice(&o->layout));
    struct obj twice = {.size = 2 * o->size, .layout = multi};
    uint64_t soff = 0, slen = 0;
    twice.data = malloc(twice.size);
    memcpy(twice.data, o->data, o->size);
    memcpy(twice.data + o->size, o->data, o->size);
    ok(cs_layout_size(cm_buf_slice(&multi), &sz) == 0 && sz == twice.size &&
           cs_layout_count(cm_buf_slice(&multi), &cnt) == 0 && cnt == 2,
       "manifest: size and count ignore the manifest record");
    ok(cs_layout_segment(cm_buf_slice(&multi), 1, &soff, &slen) == 0 && soff == o->size &&
           slen == o->size &&
           cs_layout_segment(cm_buf_slice(&multi), 2, &soff, &slen) == CM_ENOTFOUND,
       "manifest: cs_layout_segment skips it");
    ok(check_obj(cs, &twice, 10), "manifest: a reader skips it");
    free(twice.data);

    lc.n = 0;
    is_int(cs_store_list_manifests(cs, count_id, &lc), 0, "manifest: list");
    is_int(lc.n, 1, "manifest: list shows one manifest");
    is_int(cs_manifest_scan(cs, scan_cb, &sc), 0, "manifest: scan");
    struct cs_seg ms = decode_one(cm_buf_slice(&sc.rec));
    int same_drives = ms.ncopies == 3;
    for (int i = 0; i < 3 && same_drives; i++)
        same_drives = ms.drives[i] == ml.drives[0] || ms.drives[i] == ml.drives[1] ||
                      ms.drives[i] == ml.drives[2];
    ok(sc.n == 1 && sc.body.n == sizeof(body) && memcmp(sc.body.p, body, sizeof(body)) == 0,
       "manifest: scan returns the body");
    ok(ms.type == CS__REC_MANIFEST && memcmp(ms.id, ml.id, CS_ID_LEN) == 0 && same_drives &&
           ms.body_crc == ml.body_crc && ms.body_len == ml.body_len,
       "manifest: scan's record names the three drives that hold it");

    /* A rotten copy: scan skips it; a check rewrites it; a lost copy too. */
    ok(flip_blob(cs, ml.drives[0], ml.id, 40) == 0, "manifest: corrupt copy 0");
    sc.n = 0;
    cm_buf_reset(&sc.body);
    ok(cs_manifest_scan(cs, scan_cb, &sc) == 0 && sc.n == 1 && sc.body.n == sizeof(body) &&
           memcmp(sc.body.p, body, sizeof(body)) == 0,
       "manifest: scan reads a good copy past a rotten one");
    struct cs_check_stats st = {0};
    is_int(cs_layout_check(cs, cm_buf_slice(&lay), 0, &st), 0, "manifest: check");
    ok(st.manifests == 1 && st.manifests_healed == 1 && st.shards_failed == 0,
       "manifest: check rewrites the rotten copy");
    memset(&st, 0, sizeof(st));
    cs_layout_check(cs, cm_buf_slice(&lay), 0, &st);
    ok(st.manifests == 1 && st.manifests_healed == 0, "manifest: a second check finds nothing");
    char bpath[600];
    cs__blob_path(cs, ml.drives[2], ml.id, bpath, sizeof(bpath));
    unlink(bpath);
    memset(&st, 0, sizeof(st));
    cs_layout_check(cs, cm_buf_slice(&multi), 1, &st);
    ok(st.manifests == 1 && st.manifests_healed == 1 && blob_exists(cs, ml.drives[2], ml.id) &&
           st.segments == 2 && st.shards_corrupt == 0 && st.shards_missing == 0,
       "manifest: check of a whole layout restores a lost copy");

    /* Delete: the layout's manifest copies go with its segments. */
    cm_buf keep = {0};
    struct obj o2 = {.size = o->size, .data = o->data};
    ok(put(cs, &o2) == 0, "manifest: put another segment");
    cm_buf_append(&keep, o2.layout.p, o2.layout.n);
    cm_buf_append(&keep, lay.p, lay.n);
    is_int(cs_layout_delete(cs, cm_buf_slice(&keep)), 0, "manifest: delete segment + manifest");
    lc.n = 0;
    cs_store_list_manifests(cs, count_id, &lc);
    ok(lc.n == 0 && count_blobs(drives, NDRIVES, 0) == 0, "manifest: its copies are gone");
    struct cs_seg s2 = first_seg(&o2.layout);
    all = 1;
    for (int i = 0; i < K + M; i++)
        all &= !shard_exists(cs, &s2, i, 0);
    ok(all, "manifest: and so is the segment");
    is_int(cs_layout_delete(cs, cm_buf_slice(&keep)), 0, "manifest: deleting twice is fine");
    cm_buf_free(&keep);
    cm_buf_free(&o2.layout);

    /* A crash after commit, before the metadata: the intent reclaims it. */
    cm_buf_reset(&intent);
    cm_buf_reset(&lay);
    ok(cs_manifest_open(cs, &intent, &mf) == 0 &&
           cs_manifest_commit(mf, CM_SLICE(body, 10), &lay) == 0 &&
           count_blobs(drives, NDRIVES, 0) == 3,
       "manifest: committed (crash before the metadata)");
    is_int(cs_layout_delete(cs, cm_buf_slice(&intent)), 0, "manifest: delete by its intent");
    is_int(count_blobs(drives, NDRIVES, 0), 0, "manifest: the intent reclaims every copy");

    /* Abort before commit; a commit that fails (two of three drives cannot
     * take blobs) and its abort. */
    cm_buf_reset(&intent);
    ok(cs_manifest_open(cs, &intent, &mf) == 0, "manifest: open another");
    cs_manifest_abort(mf);
    cs_manifest_abort(NULL);
    is_int(count_blobs(drives, NDRIVES, 0), 0, "manifest: abort before commit leaves nothing");
    cm_buf_reset(&intent);
    cm_buf_reset(&lay);
    cs_manifest_open(cs, &intent, &mf);
    mi = decode_one(cm_buf_slice(&intent));
    char metap[2][400], cmd[2048];
    for (int i = 0; i < 2; i++) {
        snprintf(metap[i], sizeof(metap[i]), "%s/meta", drives[mi.drives[i]]);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s' && touch '%s'", metap[i], metap[i]);
        if (system(cmd) != 0)
            printf("# %s failed\n", cmd);
    }
    int crc = cs_manifest_commit(mf, CM_SLICE(body, 100), &lay);
    ok(crc != 0 && lay.n == 0, "manifest: commit with 1 of 3 copies durable fails (%s)",
       cm_strerror(crc));
    ok(blob_exists(cs, mi.drives[2], mi.id), "manifest: the one good copy is there");
    cs_manifest_abort(mf);
    ok(!blob_exists(cs, mi.drives[2], mi.id), "manifest: abort removes it");
    for (int i = 0; i < 2; i++)
        unlink(metap[i]);

    /* One copy of three failing: the commit succeeds, the heal adds it
     * back once the drive is repaired. */
    cm_buf_reset(&intent);
    cm_buf_reset(&lay);
    cs_manifest_open(cs, &intent, &mf);
    mi = decode_one(cm_buf_slice(&intent));
    snprintf(metap[0], sizeof(metap[0]), "%s/meta", drives[mi.drives[1]]);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && touch '%s'", metap[0], metap[0]);
    if (system(cmd) != 0)
        printf("# %s failed\n", cmd);
    is_int(cs_manifest_commit(mf, CM_SLICE(body, 100), &lay), 0,
           "manifest: commit with 2 of 3 copies durable succeeds");
    cs_store_heal_wait(cs);
    ok(!blob_exists(cs, mi.drives[1], mi.id), "manifest: the missing copy cannot heal yet");
    unlink(metap[0]);
    memset(&st, 0, sizeof(st));
    cs_layout_check(cs, cm_buf_slice(&lay), 0, &st);
    ok(st.manifests_healed == 1 && blob_exists(cs, mi.drives[1], mi.id),
       "manifest: after the repair a check writes the third copy");

    /* recover removes .tmp leftovers of blob writes; scan stops on request.
     * (recover runs before serving: no heal may be writing meanwhile.) */
    cs_store_heal_wait(cs);
    snprintf(bpath, sizeof(bpath), "%s/meta/00/00000000000000000000000000000000.tmp", drives[0]);
    snprintf(metap[0], sizeof(metap[0]), "%s/meta", drives[0]);
    mkdir(metap[0], 0755); /* (no manifest may have landed on drive 0 yet) */
    snprintf(metap[0], sizeof(metap[0]), "%s/meta/00", drives[0]);
    mkdir(metap[0], 0755);
    { int fd = open(bpath, O_CREAT | O_WRONLY, 0644); close(fd); }
    ok(count_blobs(drives, NDRIVES, 1) == 1 && cs_store_recover(cs) == 0 &&
           count_blobs(drives, NDRIVES, 1) == 0,
       "manifest: recover removes a leftover .tmp blob");
    cm_buf lay2 = {0};
    cs_manifest_open(cs, &intent, &mf);
    cs_manifest_commit(mf, CM_SLICE(body, 5), &lay2);
    sc.n = 0;
    sc.stop_at = 1;
    is_int(cs_manifest_scan(cs, scan_cb, &sc), 7, "manifest: fn's nonzero return stops the scan");
    is_int(sc.n, 1, "manifest: after one call");
    cs_layout_delete(cs, cm_buf_slice(&lay));
    cs_layout_delete(cs, cm_buf_slice(&lay2));
    is_int(count_blobs(drives, NDRIVES, 0), 0, "manifest: all gone");
    cm_buf_reset(&intent);
    cs_manifest_open(cs, &intent, &mf);
    is_int(cs_manifest_commit(mf, CM_SLICE(body, (size_t)CS__MF_MAX + 1), &lay2), CM_ETOOBIG,
           "manifest: a body over 16 MiB is CM_ETOOBIG");
    cs_manifest_abort(mf);

    /* The decoder validates manifest records. */
    uint8_t rec[CS__MREC_FIXED + 6];
    memcpy(rec, lay2.p, sizeof(rec));
    rec[25] = 0;
    ok(cs_layout_size(CM_SLICE(rec, sizeof(rec)), &sz) == CM_ECORRUPT,
       "manifest: 0 copies rejected");
    memcpy(rec, lay2.p, sizeof(rec));
    rec[CS__MREC_FIXED + 2] = rec[CS__MREC_FIXED];
    rec[CS__MREC_FIXED + 3] = rec[CS__MREC_FIXED + 1];
    ok(cs_layout_size(CM_SLICE(rec, sizeof(rec)), &sz) == CM_ECORRUPT,
       "manifest: two copies on one drive rejected");
    memcpy(rec, lay2.p, sizeof(rec));
    ok(cs_layout_size(CM_SLICE(rec, sizeof(rec) - 1), &sz) == CM_ECORRUPT,
       "manifest: truncated record rejected");
    rec[0] = CS__REC_MINTENT;
    ok(decode_one(CM_SLICE(rec, sizeof(rec))).type == 0,
       "manifest: an intent with a length rejected");

    cm_buf_free(&intent);
    cm_buf_free(&lay);
    cm_buf_free(&lay2);
    cm_buf_free(&multi);
    cm_buf_free(&sc.body);
    cm_buf_free(&sc.rec);
}

/* ---------------------------------------------------------- layout check */

static void test_check(cs_store_t *cs, const uint8_t *data)
{
    struct obj o = {.size = STRIPE * 7 / 2, .data = (uint8_t *)data};
    struct cs_check_stats st = {0};
    uint8_t *orig[K + M];
    size_t orig_n[K + M];
    char path[600];
    int all;

    ok(put(cs, &o) == 0, "check: put 3.5 stripes");
    for (int j = 0; j < K + M; j++)
        orig[j] = shard_read(cs, &o.layout, j, &orig_n[j]);
    struct cs_seg s = first_seg(&o.layout);
    uint64_t slen = cs__shard_len(o.size, K, BS);

    is_int(cs_layout_check(cs, cm_buf_slice(&o.layout), 0, &st), 0, "check: healthy segment");
    ok(st.segments == 1 && st.shards_checked == K + M && st.shards_missing == 0 &&
           st.shards_corrupt == 0 && st.shards_healed == 0 && st.shards_failed == 0 &&
           st.bytes_verified == 0,
       "check: finds nothing on a healthy segment");

    /* One shard lost, another with a rotten block. */
    cs__shard_path(cs, s.drives[2], s.id, 2, 0, path, sizeof(path));
    ok(unlink(path) == 0, "check: delete shard 2");
    ok(flip_byte(cs, &o.layout, 4, (off_t)cs__stripe_off(BS, 1) + 77) == 0,
       "check: corrupt a block of shard 4");
    memset(&st, 0, sizeof(st));
    is_int(cs_layout_check(cs, cm_buf_slice(&o.layout), 0, &st), 0, "check: deep = 0");
    ok(st.shards_checked == K + M && st.shards_missing == 1 && st.shards_corrupt == 0,
       "check: finds the missing shard (a stat does not read blocks)");
    ok(st.shards_healed == 2 && st.shards_failed == 0,
       "check: the heal's scrub rebuilds both shards");
    all = 1;
    for (int j = 0; j < K + M; j++)
        all &= shard_is(cs, &o.layout, j, orig[j], orig_n[j]);
    ok(all && count_all_files(1) == 0, "check: every shard has its original bytes, no .tmp");

    /* A rotten block only: deep mode finds it. */
    ok(flip_byte(cs, &o.layout, 0, (off_t)cs__stripe_off(BS, 3) + 5) == 0,
       "check: corrupt a block of shard 0");
    memset(&st, 0, sizeof(st));
    cs_layout_check(cs, cm_buf_slice(&o.layout), 0, &st);
    ok(st.shards_corrupt == 0 && st.shards_healed == 0, "check: deep = 0 does not see block rot");
    memset(&st, 0, sizeof(st));
    is_int(cs_layout_check(cs, cm_buf_slice(&o.layout), 1, &st), 0, "check: deep = 1");
    ok(st.shards_checked == K + M && st.shards_corrupt == 1 && st.shards_missing == 0 &&
           st.shards_healed == 1 && st.shards_failed == 0,
       "check: deep mode finds the rotten block and heals it");
    is_int(st.bytes_verified, (K + M) * slen, "check: bytes_verified counts every shard byte");
    ok(shard_is(cs, &o.layout, 0, orig[0], orig_n[0]), "check: shard 0 has its bytes back");
    memset(&st, 0, sizeof(st));
    cs_layout_check(cs, cm_buf_slice(&o.layout), 1, &st);
    ok(st.shards_checked == K + M && st.shards_corrupt == 0 && st.shards_missing == 0 &&
           st.shards_healed == 0 && st.shards_failed == 0,
       "check: a second deep check finds nothing");

    /* A bad header and a short shard: deep = 0 finds both. */
    ok(flip_byte(cs, &o.layout, 1, 20) == 0, "check: corrupt the header of shard 1");
    cs__shard_path(cs, s.drives[5], s.id, 5, 0, path, sizeof(path));
    ok(truncate(path, (off_t)slen - 1) == 0, "check: truncate shard 5 by a byte");
    memset(&st, 0, sizeof(st));
    cs_layout_check(cs, cm_buf_slice(&o.layout), 0, &st);
    ok(st.shards_corrupt == 2 && st.shards_healed == 2, "check: bad header and short shard healed");
    all = 1;
    for (int j = 0; j < K + M; j++)
        all &= shard_is(cs, &o.layout, j, orig[j], orig_n[j]);
    ok(all, "check: all six shards are back to their bytes");

    /* A deep check racing the heal a read queued for the same shard: the
     * shard is healed once (by either), and never counted as failed. */
    int races_ok = 1;
    uint8_t *rbuf = malloc(o.size);
    for (int t = 0; t < 10; t++) {
        struct cs_check_stats rs = {0};
        flip_byte(cs, &o.layout, t % (K + M), (off_t)cs__stripe_off(BS, t % 3) + 9);
        if (get(cs, cm_buf_slice(&o.layout), 0, o.size, 1 << 20, rbuf) != 0 ||
            memcmp(rbuf, data, o.size) != 0)
            races_ok = 0;
        if (t % 2)
            usleep(200);
        cs_layout_check(cs, cm_buf_slice(&o.layout), 1, &rs);
        cs_store_heal_wait(cs);
        races_ok &= rs.shards_failed == 0 && rs.shards_healed <= 1 &&
                    shard_is(cs, &o.layout, t % (K + M), orig[t % (K + M)], orig_n[t % (K + M)]);
    }
    free(rbuf);
    ok(races_ok, "check: 10 deep checks racing a read's heal of the same shard: healed once, "
                 "never counted as failed");

    /* Accumulates; a corrupt layout or an intent is an error. */
    struct cs_check_stats acc = {0};
    cs_layout_check(cs, cm_buf_slice(&o.layout), 0, &acc);
    cs_layout_check(cs, cm_buf_slice(&o.layout), 0, &acc);
    ok(acc.segments == 2 && acc.shards_checked == 2 * (K + M), "check: counts add up over calls");
    cm_buf junk = {0}, intent = {0};
    cm_buf_append(&junk, o.layout.p, o.layout.n - 1);
    is_int(cs_layout_check(cs, cm_buf_slice(&junk), 0, &acc), CM_ECORRUPT,
           "check: a corrupt layout is CM_ECORRUPT");
    cs_writer_t *w;
    cs_writer_open(cs, &intent, &w);
    is_int(cs_layout_check(cs, cm_buf_slice(&intent), 0, &acc), CM_ECORRUPT,
           "check: an intent is not a layout");
    cs_writer_abort(w);
    /* A deleted segment: everything missing, nothing rebuilt, no file appears. */
    cs_layout_delete(cs, cm_buf_slice(&o.layout));
    memset(&st, 0, sizeof(st));
    cs_layout_check(cs, cm_buf_slice(&o.layout), 0, &st);
    ok(st.shards_missing == K + M && st.shards_healed == 0 && st.shards_failed == K + M &&
           count_all_files(0) == 0,
       "check: a deleted segment is reported, not resurrected");
    for (int j = 0; j < K + M; j++)
        free(orig[j]);
    cm_buf_free(&junk);
    cm_buf_free(&intent);
    cm_buf_free(&o.layout);
}

/* ------------------------------------------------ degraded writes (local) */

/* Replaces drive d's directory by a regular file (broken = 1), or puts it back. */
static void break_drive(int d, int broken)
{
    char bak[600];

    snprintf(bak, sizeof(bak), "%s.bak", drives[d]);
    if (broken) {
        if (rename(drives[d], bak) != 0)
            printf("# rename %s failed\n", drives[d]);
        int fd = open(drives[d], O_CREAT | O_WRONLY, 0644);
        close(fd);
    } else {
        unlink(drives[d]);
        if (rename(bak, drives[d]) != 0)
            printf("# rename %s back failed\n", bak);
    }
}

static void test_degraded_local(cs_store_t *cs, const uint8_t *data)
{
    struct obj o = {.size = 2 * STRIPE + 100, .data = (uint8_t *)data};
    struct cs_check_stats st = {0};
    int present = 0;

    cs_store_heal_wait(cs);
    break_drive(3, 1);
    is_int(put(cs, &o), 0, "degraded: a PUT with one drive unwritable succeeds (k+1 shards)");
    struct cs_seg s = first_seg(&o.layout);
    int names_3 = 0;
    for (int i = 0; i < K + M; i++) {
        names_3 |= s.drives[i] == 3;
        present += shard_exists(cs, &s, i, 0);
    }
    ok(names_3 && present == K + M - 1,
       "degraded: the layout names all six drives, five shards exist");
    ok(check_obj(cs, &o, 5), "degraded: the object reads back exactly");
    cs_store_heal_wait(cs);

    /* Two drives broken: below k+1, the PUT fails and leaves nothing. */
    break_drive(5, 1);
    struct obj o2 = {.size = STRIPE + 1, .data = (uint8_t *)data};
    int rc = put(cs, &o2);
    ok(rc != 0, "degraded: with two drives unwritable a 4+2 PUT fails (%s)", cm_strerror(rc));
    cs_store_heal_wait(cs);
    break_drive(5, 0);
    break_drive(3, 0);
    is_int(count_all_files(0), K + M - 1, "degraded: the failed PUT left no file behind");

    /* After the repair, a check (or a read) heals the missing shard. */
    is_int(cs_layout_check(cs, cm_buf_slice(&o.layout), 0, &st), 0, "degraded: check after repair");
    ok(st.shards_missing == 1 && st.shards_healed == 1 && layout_intact(cs, &o.layout),
       "degraded: the missing shard is rebuilt");
    ok(check_obj(cs, &o, 3), "degraded: reads back exactly");

    /* A read alone finds it too. */
    char path[600];
    cs__shard_path(cs, s.drives[1], s.id, 1, 0, path, sizeof(path));
    unlink(path);
    ok(check_obj(cs, &o, 1), "degraded: reads with a shard lost");
    cs_store_heal_wait(cs);
    ok(layout_intact(cs, &o.layout), "degraded: and the read's heal restores it");
    cs_layout_delete(cs, cm_buf_slice(&o.layout));
    cm_buf_free(&o.layout);
    cm_buf_free(&o2.layout);
}

/* --------------------------------------- a fault-injecting parallel backend */

/* Wraps be_local: parallel = 1 (as the node backend), drives that can be
 * "down" (drive_up 0, every request CM_EUNAVAIL), writes that fail, a
 * settable epoch, and counters of requests in flight. */
struct fault_be {
    struct cs__be be; /* first */
    struct cs__be *in;
    _Atomic int down[8];   /* drive unreachable */
    _Atomic int wfail[8];  /* appends and commits fail with CM_EUNAVAIL (drive_up stays 1) */
    _Atomic uint64_t epoch;
    _Atomic int slow_us;   /* sleep in every r_read/w_append */
    _Atomic int inflight, max_inflight;
};
struct fault_h {
    struct fault_be *f;
    int d;
    void *in;
};

static struct fault_be *FB(struct cs__be *be)
{
    return (struct fault_be *)be;
}
static int f_ndrives(struct cs__be *be)
{
    return FB(be)->in->ops->ndrives(FB(be)->in);
}
static const char *f_drive_name(struct cs__be *be, int d)
{
    return FB(be)->in->ops->drive_name(FB(be)->in, d);
}
static int f_drive_up(struct cs__be *be, int d)
{
    return !FB(be)->down[d];
}
static uint64_t f_epoch(struct cs__be *be)
{
    return FB(be)->epoch;
}
static void f_enter(struct fault_be *f)
{
    int n = ++f->inflight, m = f->max_inflight;
    while (n > m && !atomic_compare_exchange_weak(&f->max_inflight, &m, n))
        ;
    if (f->slow_us)
        usleep((useconds_t)f->slow_us);
}
static void f_leave(struct fault_be *f)
{
    f->inflight--;
}
static int f_w_open(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], int index, int heal,
                    void **h)
{
    struct fault_h *fh;
    int rc;

    if (FB(be)->down[d])
        return CM_EUNAVAIL;
    if (!(fh = calloc(1, sizeof(*fh))))
        return CM_ENOMEM;
    fh->f = FB(be);
    fh->d = d;
    if ((rc = FB(be)->in->ops->w_open(FB(be)->in, d, id, index, heal, &fh->in)) != 0) {
        free(fh);
        return rc;
    }
    *h = fh;
    return 0;
}
static int f_w_append(void *h, uint64_t off, const struct iovec *iov, int niov, unsigned flags)
{
    struct fault_h *fh = h;
    int rc;

    if (fh->f->down[fh->d] || fh->f->wfail[fh->d])
        return CM_EUNAVAIL;
    f_enter(fh->f);
    rc = fh->f->in->ops->w_append(fh->in, off, iov, niov, flags);
    f_leave(fh->f);
    return rc;
}
static int f_w_commit(void *h, const uint8_t hdr[64])
{
    struct fault_h *fh = h;

    if (fh->f->down[fh->d] || fh->f->wfail[fh->d])
        return CM_EUNAVAIL;
    return fh->f->in->ops->w_commit(fh->in, hdr);
}
static void f_w_close(void *h, int remove)
{
    struct fault_h *fh = h;

    fh->f->in->ops->w_close(fh->in, remove);
    free(fh);
}
static int f_r_open(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], int index, void **h)
{
    struct fault_h *fh;
    int rc;

    if (FB(be)->down[d])
        return CM_EUNAVAIL;
    if (!(fh = calloc(1, sizeof(*fh))))
        return CM_ENOMEM;
    fh->f = FB(be);
    fh->d = d;
    if ((rc = FB(be)->in->ops->r_open(FB(be)->in, d, id, index, &fh->in)) != 0) {
        free(fh);
        return rc;
    }
    *h = fh;
    return 0;
}
static ssize_t f_r_read(void *h, uint64_t off, const struct iovec *iov, int niov)
{
    struct fault_h *fh = h;
    ssize_t rc;

    if (fh->f->down[fh->d])
        return CM_EUNAVAIL;
    f_enter(fh->f);
    rc = fh->f->in->ops->r_read(fh->in, off, iov, niov);
    f_leave(fh->f);
    return rc;
}
static int f_r_header(void *h, uint8_t hdr[64])
{
    struct fault_h *fh = h;

    if (fh->f->down[fh->d])
        return CM_EUNAVAIL;
    return fh->f->in->ops->r_header(fh->in, hdr);
}
static void f_r_close(void *h)
{
    struct fault_h *fh = h;

    fh->f->in->ops->r_close(fh->in);
    free(fh);
}
#define F_FWD(call)                                                                                \
    do {                                                                                           \
        if (FB(be)->down[d])                                                                       \
            return CM_EUNAVAIL;                                                                    \
        return FB(be)->in->ops->call;                                                              \
    } while (0)
static int f_stat(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], int index, uint64_t *len)
{
    F_FWD(stat(FB(be)->in, d, id, index, len));
}
static int f_verify(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], int index,
                    struct cs__verify *out)
{
    F_FWD(verify(FB(be)->in, d, id, index, out));
}
static int f_remove(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], int index)
{
    F_FWD(remove(FB(be)->in, d, id, index));
}
static int f_list(struct cs__be *be, int d,
                  void (*fn)(void *arg, const uint8_t id[CS_ID_LEN], int index), void *arg)
{
    F_FWD(list(FB(be)->in, d, fn, arg));
}
static int f_recover(struct cs__be *be, int d)
{
    F_FWD(recover(FB(be)->in, d));
}
static int f_blob_put(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], const void *p,
                      size_t n)
{
    F_FWD(blob_put(FB(be)->in, d, id, p, n));
}
static int f_blob_get(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], cm_buf *out)
{
    F_FWD(blob_get(FB(be)->in, d, id, out));
}
static int f_blob_remove(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN])
{
    F_FWD(blob_remove(FB(be)->in, d, id));
}
static int f_blob_list(struct cs__be *be, int d,
                       void (*fn)(void *arg, const uint8_t id[CS_ID_LEN]), void *arg)
{
    F_FWD(blob_list(FB(be)->in, d, fn, arg));
}
static void f_close(struct cs__be *be)
{
    FB(be)->in->ops->close(FB(be)->in);
    free(be);
}
static const struct cs__be_ops fault_ops = {
    .name = "fault",
    .parallel = 1,
    .ndrives = f_ndrives,
    .drive_name = f_drive_name,
    .drive_up = f_drive_up,
    .epoch = f_epoch,
    .w_open = f_w_open,
    .w_append = f_w_append,
    .w_commit = f_w_commit,
    .w_close = f_w_close,
    .r_open = f_r_open,
    .r_read = f_r_read,
    .r_header = f_r_header,
    .r_close = f_r_close,
    .stat = f_stat,
    .verify = f_verify,
    .remove = f_remove,
    .list = f_list,
    .recover = f_recover,
    .blob_put = f_blob_put,
    .blob_get = f_blob_get,
    .blob_remove = f_blob_remove,
    .blob_list = f_blob_list,
    .close = f_close,
};

/* 1 if shard i of s exists (with its full length) under the wrapped local backend. */
static int f_shard_ok(struct fault_be *f, const struct cs_seg *s, int i)
{
    char path[600];
    struct stat st;
    return cs__be_local_shard_path(f->in, s->drives[i], s->id, i, 0, path, sizeof(path)) == 0 &&
           stat(path, &st) == 0 &&
           (uint64_t)st.st_size == cs__shard_len(s->size, s->k, s->block_size);
}

static int f_count_shards(struct fault_be *f, const struct cs_seg *s)
{
    int n = 0;
    for (int i = 0; i < s->k + s->m; i++)
        n += f_shard_ok(f, s, i);
    return n;
}

/* Waits (up to 5 s) until the store's heal count passes n. */
static int wait_healed(cs_store_t *cs, uint64_t n)
{
    for (int i = 0; i < 500; i++) {
        if (nhealed(cs) > n)
            return 1;
        usleep(10000);
    }
    return 0;
}

static void test_parallel_backend(const uint8_t *data)
{
    static char fpath[NDRIVES][300];
    const char *fdirs[NDRIVES];
    struct cs__be *in = NULL;
    struct fault_be *f;
    cs_store_t *fcs = NULL;
    int rc, all;

    for (int d = 0; d < NDRIVES; d++) {
        snprintf(fpath[d], sizeof(fpath[d]), "%s/f%d", root, d);
        fdirs[d] = fpath[d];
    }
    if (cs__be_local_open(fdirs, NDRIVES, &in) != 0 || !(f = calloc(1, sizeof(*f)))) {
        ok(0, "parallel: open the wrapped local backend");
        return;
    }
    f->be.ops = &fault_ops;
    f->in = in;
    rc = cs__store_open_be(&f->be, K, M, BS, &fcs);
    is_int(rc, 0, "parallel: open the engine over a parallel backend");
    if (rc != 0)
        return;
    ok(cs_store_distributed(fcs) == 1 && cs_store_ndrives(fcs) == NDRIVES &&
           cs_store_drive_up(fcs, 2) == 1 && cs_store_drive_up(fcs, 6) == 0 &&
           cs_store_epoch(fcs) == 0 && strcmp(cs_store_drive_name(fcs, 1), fdirs[1]) == 0 &&
           cs_store_drive_name(fcs, NDRIVES) == NULL,
       "parallel: distributed, 6 drives, names, up, epoch");

    /* Round trips: batched appends and batched reads. */
    size_t sizes[] = {0, 1, BS + 3, STRIPE * 5 / 2 + 7};
    struct obj o[4];
    all = 1;
    for (int i = 0; i < 4; i++) {
        o[i] = (struct obj){.size = sizes[i], .data = (uint8_t *)data};
        all &= put(fcs, &o[i]) == 0 && check_obj(fcs, &o[i], 20);
    }
    ok(all, "parallel: round trips read back exactly, whole and in ranges");

    /* Every stripe's appends, and every stripe's data reads, go out at once. */
    f->slow_us = 20000;
    f->max_inflight = 0;
    struct obj p1 = {.size = STRIPE, .data = (uint8_t *)data};
    ok(put(fcs, &p1) == 0, "parallel: a one-stripe PUT with slow drives");
    int wmax = f->max_inflight;
    ok(wmax >= K + M - 1, "parallel: the stripe's appends were in flight together (%d at once)",
       wmax);
    f->max_inflight = 0;
    uint8_t *buf = malloc(STRIPE);
    rc = get(fcs, cm_buf_slice(&p1.layout), 0, STRIPE, STRIPE, buf);
    ok(rc == 0 && memcmp(buf, data, STRIPE) == 0, "parallel: read it back");
    ok(f->max_inflight >= K - 1, "parallel: the k data reads were in flight together (%d at once)",
       (int)f->max_inflight);
    f->slow_us = 0;

    /* A drive down: reads rebuild from parity; the heal waits for it. */
    struct cs_seg s3 = first_seg(&o[3].layout);
    uint64_t h0 = nhealed(fcs);
    f->down[s3.drives[1]] = 1;
    ok(cs_store_drive_up(fcs, s3.drives[1]) == 0, "parallel: drive marked down");
    ok(check_obj(fcs, &o[3], 10), "parallel: reads exactly with a data shard's drive down");
    cs_store_heal_wait(fcs); /* returns: the deferred heal does not count */
    is_int(nhealed(fcs), h0, "parallel: nothing healed while the drive is down");

    /* Writes with a drive down at open: placed last, written as a failed
     * shard, healed once the drive is back (epoch change). */
    int dd = s3.drives[1];
    struct obj w1 = {.size = STRIPE * 2 + 5, .data = (uint8_t *)data};
    ok(put(fcs, &w1) == 0, "parallel: a PUT with a drive down succeeds");
    struct cs_seg sw = first_seg(&w1.layout);
    ok(sw.drives[K + M - 1] == dd, "parallel: the down drive got the last (parity) shard");
    is_int(f_count_shards(f, &sw), K + M - 1, "parallel: five shards written");
    ok(check_obj(fcs, &w1, 5), "parallel: reads back exactly");
    cs_store_heal_wait(fcs);
    ok(!f_shard_ok(f, &sw, K + M - 1), "parallel: the heal is deferred while the drive is down");
    f->down[dd] = 0;
    f->epoch++;
    ok(wait_healed(fcs, h0), "parallel: the drive is back: the deferred heal runs");
    cs_store_heal_wait(fcs);
    ok(f_count_shards(f, &sw) == K + M, "parallel: the missing shard is written");
    cs_layout_check(fcs, cm_buf_slice(&o[3].layout), 0, &(struct cs_check_stats){0});
    ok(f_count_shards(f, &s3) == K + M, "parallel: the read segment is whole too");

    /* Two drives down: a 4+2 writer cannot start. */
    f->down[0] = f->down[1] = 1;
    cm_buf intent = {0};
    cs_writer_t *w = NULL;
    is_int(cs_writer_open(fcs, &intent, &w), CM_EUNAVAIL,
           "parallel: with two drives down cs_writer_open is CM_EUNAVAIL");
    is_int(intent.n, 0, "parallel: and no intent is returned");
    f->down[0] = f->down[1] = 0;

    /* A drive failing mid-write: dropped, the write goes on, healed later. */
    uint64_t h1 = nhealed(fcs);
    rc = cs_writer_open(fcs, &intent, &w);
    struct cs_seg si = first_seg(&intent);
    rc = rc ? rc : cs_writer_write(w, data, STRIPE + 10);
    f->wfail[si.drives[2]] = 1;
    rc = rc ? rc : cs_writer_write(w, data + STRIPE + 10, STRIPE);
    cm_buf lay = {0};
    rc = rc ? rc : cs_writer_finish(w, &lay);
    is_int(rc, 0, "parallel: a shard failing mid-write is dropped, the write succeeds");
    struct obj mid = {.size = 2 * STRIPE + 10, .data = (uint8_t *)data, .layout = lay};
    ok(check_obj(fcs, &mid, 5), "parallel: reads back exactly");
    cs_store_heal_wait(fcs);
    ok(!f_shard_ok(f, &si, 2), "parallel: its heal waits while writes there fail");
    f->wfail[si.drives[2]] = 0;
    f->epoch++;
    ok(wait_healed(fcs, h1), "parallel: retried after the epoch changed");
    cs_store_heal_wait(fcs);
    struct cs_seg sm = first_seg(&mid.layout);
    ok(f_count_shards(f, &sm) == K + M, "parallel: shard 2 is written");
    cm_buf_reset(&intent);

    /* Two shards failing mid-write: the writer fails with CM_EUNAVAIL and
     * abort removes what was written. */
    rc = cs_writer_open(fcs, &intent, &w);
    si = first_seg(&intent);
    rc = rc ? rc : cs_writer_write(w, data, STRIPE);
    f->wfail[si.drives[0]] = f->wfail[si.drives[4]] = 1;
    if (rc == 0)
        rc = cs_writer_write(w, data, STRIPE);
    if (rc == 0)
        rc = cs_writer_finish(w, &lay);
    is_int(rc, CM_EUNAVAIL, "parallel: two shards failing: the write fails with CM_EUNAVAIL");
    cs_writer_abort(w);
    f->wfail[si.drives[0]] = f->wfail[si.drives[4]] = 0;
    is_int(f_count_shards(f, &si), 0, "parallel: abort removed every shard");
    cm_buf_reset(&intent);

    /* Check and delete with a drive down. */
    struct cs_seg s2 = first_seg(&o[2].layout);
    f->down[s2.drives[3]] = 1;
    struct cs_check_stats st = {0};
    is_int(cs_layout_check(fcs, cm_buf_slice(&o[2].layout), 1, &st), 0,
           "parallel: check with a drive down");
    ok(st.shards_checked == K + M - 1 && st.shards_failed == 1 && st.shards_healed == 0 &&
           st.bytes_verified == (K + M - 1) * cs__shard_len(o[2].size, K, BS),
       "parallel: the unreachable shard counts as failed");
    is_int(cs_layout_delete(fcs, cm_buf_slice(&o[2].layout)), CM_EUNAVAIL,
           "parallel: delete with a drive down is CM_EUNAVAIL");
    ok(f_count_shards(f, &s2) == 1 && f_shard_ok(f, &s2, 3),
       "parallel: everything else was deleted");
    struct list_ctx lc = {0};
    is_int(cs_store_list(fcs, count_id, &lc), CM_EUNAVAIL,
           "parallel: list with a drive down is CM_EUNAVAIL");
    is_int(cs_store_recover(fcs), 0, "parallel: recover skips the unreachable drive");
    f->down[s2.drives[3]] = 0;
    is_int(cs_layout_delete(fcs, cm_buf_slice(&o[2].layout)), 0,
           "parallel: the retried delete succeeds");
    is_int(f_count_shards(f, &s2), 0, "parallel: and the last shard is gone");

    /* Manifests: one copy's drive down; healed when it is back. */
    cs_manifest_t *mf;
    uint64_t h2 = nhealed(fcs);
    cm_buf mlay = {0};
    cm_buf_reset(&intent);
    rc = cs_manifest_open(fcs, &intent, &mf);
    struct cs_seg mi = decode_one(cm_buf_slice(&intent));
    f->down[mi.drives[0]] = 1;
    rc = rc ? rc : cs_manifest_commit(mf, CM_SLICE(data, 777), &mlay);
    is_int(rc, 0, "parallel: a manifest commit with one of three drives down succeeds");
    struct scan_ctx sc = {0};
    ok(cs_manifest_scan(fcs, scan_cb, &sc) == CM_EUNAVAIL && sc.n == 1 && sc.body.n == 777 &&
           memcmp(sc.body.p, data, 777) == 0,
       "parallel: scan with a drive down finds it (and says CM_EUNAVAIL)");
    f->down[mi.drives[0]] = 0;
    f->epoch++;
    ok(wait_healed(fcs, h2), "parallel: the missing copy is written when the drive is back");
    lc.n = 0;
    ok(cs_store_list_manifests(fcs, count_id, &lc) == 0 && lc.n == 1, "parallel: one manifest");
    is_int(cs_layout_delete(fcs, cm_buf_slice(&mlay)), 0, "parallel: delete it");

    /* A drive down at close: its deferred heal is dropped, close returns. */
    struct obj last = {.size = 1000, .data = (uint8_t *)data};
    f->down[4] = 1;
    ok(put(fcs, &last) == 0, "parallel: a PUT with a drive down (heal deferred)");
    for (int i = 0; i < 4; i++) {
        cs_layout_delete(fcs, cm_buf_slice(&o[i].layout));
        cm_buf_free(&o[i].layout);
    }
    cs_layout_delete(fcs, cm_buf_slice(&p1.layout));
    cs_layout_delete(fcs, cm_buf_slice(&mid.layout));
    cs_layout_delete(fcs, cm_buf_slice(&w1.layout));
    cs_store_close(fcs);
    ok(1, "parallel: close with a deferred heal returns");
    free(buf);
    cm_buf_free(&p1.layout);
    cm_buf_free(&mid.layout);
    cm_buf_free(&w1.layout);
    cm_buf_free(&last.layout);
    cm_buf_free(&mlay);
    cm_buf_free(&intent);
    cm_buf_free(&sc.body);
    cm_buf_free(&sc.rec);
}

/* ------------------------------------------- direct I/O and its fallbacks */
/* be_local writes shard data with O_DIRECT and falls back to the page cache
 * when opening with O_DIRECT fails or a direct write returns EINVAL or a
 * short count. Either way the shard files must come out exactly as direct
 * writes make them. */

/* Opens a 4+2 store over NDRIVES drives root/<name>0.. (paths in p, dv). */
static int open_store_at(const char *name, char p[NDRIVES][300], const char *dv[NDRIVES],
                         cs_store_t **out)
{
    for (int d = 0; d < NDRIVES; d++) {
        snprintf(p[d], 300, "%s/%s%d", root, name, d);
        dv[d] = p[d];
    }
    return cs_store_open_local(dv, NDRIVES, K, M, BS, out);
}

/* 1 if every shard of the layout (one segment) has its length and passes a
 * deep check (header and every block's CRC32C) with nothing to heal. */
static int shards_valid(cs_store_t *cs, const cm_buf *layout, uint64_t size)
{
    struct cs_check_stats st = {0};

    return layout_intact(cs, layout) && cs_layout_check(cs, cm_buf_slice(layout), 1, &st) == 0 &&
           st.shards_checked == K + M && st.shards_missing == 0 && st.shards_corrupt == 0 &&
           st.shards_healed == 0 && st.shards_failed == 0 &&
           st.bytes_verified == (K + M) * cs__shard_len(size, K, BS);
}

/* 1 if shard i of layouts a and b (one segment each, same data) hold the
 * same bytes after the header (which names the segment). */
static int shards_same(cs_store_t *cs, const cm_buf *a, const cm_buf *b)
{
    int same = 1;

    for (int j = 0; j < K + M && same; j++) {
        size_t na, nb;
        uint8_t *pa = shard_read(cs, a, j, &na), *pb = shard_read(cs, b, j, &nb);
        same = pa && pb && na == nb && na >= CS__HDR_LEN &&
               memcmp(pa + CS__HDR_LEN, pb + CS__HDR_LEN, na - CS__HDR_LEN) == 0;
        free(pa);
        free(pb);
    }
    return same;
}

/* 1 if this process can open a file in dir with O_DIRECT; 0 if the file
 * system refuses (EINVAL); -1 on another error. */
static int takes_odirect(const char *dir)
{
    char path[400];
    int fd, rc;

    snprintf(path, sizeof(path), "%s/odirect-probe", dir);
    if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644)) < 0)
        return -1;
    close(fd);
    fd = open(path, O_WRONLY | O_DIRECT);
    rc = fd >= 0 ? 1 : errno == EINVAL ? 0 : -1;
    if (fd >= 0)
        close(fd);
    unlink(path);
    return rc;
}

/* Stands in for pwrite() on direct-I/O stages (cs__seam_direct_pwrite). */
enum { DP_PASS, DP_EINVAL, DP_EINVAL_ODD, DP_SHORT, DP_EIO };
static atomic_int dp_mode, dp_calls, dp_faults;

static ssize_t dp_pwrite(int fd, const void *p, size_t n, off_t off)
{
    int c = atomic_fetch_add(&dp_calls, 1);

    switch (atomic_load(&dp_mode)) {
    case DP_EINVAL_ODD: /* every other stage refused: direct and buffered mixed */
        if (c % 2 == 0)
            break;
        /* fall through */
    case DP_EINVAL: /* the file system refuses direct writes after all */
        atomic_fetch_add(&dp_faults, 1);
        errno = EINVAL;
        return -1;
    case DP_SHORT: /* nothing written, the first aligned half written, all */
        if (c % 3 == 2)
            break;
        atomic_fetch_add(&dp_faults, 1);
        return c % 3 == 0 ? 0 : pwrite(fd, p, (n / 2) & ~(size_t)4095, off);
    case DP_EIO:
        atomic_fetch_add(&dp_faults, 1);
        errno = EIO;
        return -1;
    }
    return pwrite(fd, p, n, off);
}

/* Sizes: shards of 69 bytes (no aligned block: all through the page
 * cache), exactly 4096, three stripes, and ~1.6 MiB (three full stages and
 * a tail). */
static const size_t fb_sizes[] = {1, 16112, 3 * STRIPE + 5, 24 * STRIPE + 12345};
#define NFB (sizeof(fb_sizes) / sizeof(fb_sizes[0]))

static void test_direct_fallback(const uint8_t *data)
{
    static const struct {
        int mode;
        const char *name;
    } modes[] = {{DP_EINVAL, "direct writes refused (EINVAL)"},
                 {DP_EINVAL_ODD, "every other direct write refused"},
                 {DP_SHORT, "direct writes short (0 bytes or half)"}};
    static char fpath[NDRIVES][300];
    const char *fdv[NDRIVES];
    struct obj ref[NFB], o[NFB];
    cs_store_t *fcs = NULL;
    int all, rc, nfiles;

    if (open_store_at("fb", fpath, fdv, &fcs) != 0) {
        ok(0, "fallback: open a store");
        return;
    }
    if (takes_odirect(fpath[0]) != 1) {
        skip("fallback: the temp dir refuses O_DIRECT, so no direct write to fail");
        cs_store_close(fcs);
        return;
    }
    cs__seam_direct_pwrite = dp_pwrite;
    atomic_store(&dp_mode, DP_PASS);
    atomic_store(&dp_calls, 0);
    all = 1;
    for (size_t i = 0; i < NFB; i++) {
        ref[i] = (struct obj){.size = fb_sizes[i], .data = (uint8_t *)data};
        all &= put(fcs, &ref[i]) == 0 && shards_valid(fcs, &ref[i].layout, ref[i].size);
    }
    ok(all && atomic_load(&dp_calls) > 0, "fallback: reference puts with direct writes (%d)",
       atomic_load(&dp_calls));

    for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
        int put_ok = 1, read_ok = 1, valid = 1, same = 1;
        atomic_store(&dp_mode, modes[m].mode);
        atomic_store(&dp_faults, 0);
        for (size_t i = 0; i < NFB; i++) {
            o[i] = (struct obj){.size = fb_sizes[i], .data = (uint8_t *)data};
            if (put(fcs, &o[i]) != 0) {
                put_ok = 0;
                continue;
            }
            read_ok &= check_obj(fcs, &o[i], 5);
            valid &= shards_valid(fcs, &o[i].layout, o[i].size);
            same &= shards_same(fcs, &o[i].layout, &ref[i].layout);
        }
        ok(put_ok && atomic_load(&dp_faults) > 0, "fallback, %s: %d faults, every put succeeds",
           modes[m].name, atomic_load(&dp_faults));
        ok(read_ok, "fallback, %s: every object reads back exactly", modes[m].name);
        ok(valid, "fallback, %s: shard lengths, headers and block CRCs are right", modes[m].name);
        ok(same, "fallback, %s: shard files hold the bytes direct writes gave", modes[m].name);
        for (size_t i = 0; i < NFB; i++) {
            cs_layout_delete(fcs, cm_buf_slice(&o[i].layout));
            cm_buf_free(&o[i].layout);
        }
    }

    /* Any other error is an error, not a reason to fall back. */
    atomic_store(&dp_mode, DP_EIO);
    atomic_store(&dp_faults, 0);
    struct obj bad = {.size = fb_sizes[NFB - 1], .data = (uint8_t *)data};
    rc = put(fcs, &bad);
    ok(rc != 0 && atomic_load(&dp_faults) > 0,
       "fallback: a direct write failing with EIO fails the put (%s)", cm_strerror(rc));
    cm_buf_free(&bad.layout);
    atomic_store(&dp_mode, DP_PASS);
    cs__seam_direct_pwrite = pwrite;

    for (size_t i = 0; i < NFB; i++) {
        cs_layout_delete(fcs, cm_buf_slice(&ref[i].layout));
        cm_buf_free(&ref[i].layout);
    }
    nfiles = 0;
    for (int d = 0; d < NDRIVES; d++)
        nfiles += count_files(fpath[d], 0);
    is_int(nfiles, 0, "fallback: nothing left on the drives (the failed put removed its files)");
    cs_store_close(fcs);
}

/* A file system without O_DIRECT, for real: a ramfs (no direct_IO; opening
 * with O_DIRECT gives EINVAL), mounted in a private mount namespace of a
 * child process (a user namespace too when not root). Skipped where
 * namespaces or the mount are not allowed. The child continues this TAP
 * stream and hands its counters back through a pipe. */
static int write_str(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC), rc = -1;

    if (fd >= 0) {
        rc = write(fd, s, strlen(s)) == (ssize_t)strlen(s) ? 0 : -1;
        close(fd);
    }
    return rc;
}

/* Mounts a fresh ramfs on dir, visible to this process only. Needs a
 * single-threaded caller (unshare). Returns NULL or why not. */
static const char *enter_ramfs(const char *dir)
{
    char map[64];
    unsigned uid = (unsigned)geteuid(), gid = (unsigned)getegid();

    if (uid != 0) {
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
            return "no user namespace";
        snprintf(map, sizeof(map), "0 %u 1", uid);
        if (write_str("/proc/self/setgroups", "deny") != 0 ||
            write_str("/proc/self/uid_map", map) != 0)
            return "cannot map the user id";
        snprintf(map, sizeof(map), "0 %u 1", gid);
        if (write_str("/proc/self/gid_map", map) != 0)
            return "cannot map the group id";
    } else if (unshare(CLONE_NEWNS) != 0) {
        return "no mount namespace";
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        return "cannot make the mounts private";
    if (mount("ramfs", dir, "ramfs", 0, NULL) != 0)
        return "cannot mount a ramfs";
    return NULL;
}

/* Stands in for pwrite() on direct-I/O stages: counts calls (there must be
 * none when O_DIRECT cannot be opened). */
static ssize_t count_pwrite(int fd, const void *p, size_t n, off_t off)
{
    atomic_fetch_add(&dp_calls, 1);
    return pwrite(fd, p, n, off);
}

static void ramfs_child(void)
{
    static char rpath[NDRIVES][300];
    const char *rdv[NDRIVES], *why;
    char mnt[300], msg[200];
    struct obj o[NFB];
    cs_store_t *rcs = NULL;
    uint8_t *data = malloc(fb_sizes[NFB - 1]);
    int all = 1, r;

    snprintf(mnt, sizeof(mnt), "%s/ramfs", root);
    if ((why = enter_ramfs(mnt)) != NULL) {
        snprintf(msg, sizeof(msg), "no O_DIRECT: %s here", why);
        skip(msg);
        free(data);
        return;
    }
    if ((r = takes_odirect(mnt)) != 0) {
        skip(r > 0 ? "no O_DIRECT: this kernel's ramfs takes O_DIRECT"
                   : "no O_DIRECT: ramfs probe failed");
        free(data);
        return;
    }
    ok(1, "no O_DIRECT: a ramfs that refuses it (EINVAL)");
    fill_random(data, fb_sizes[NFB - 1]);
    if (open_store_at("ramfs/d", rpath, rdv, &rcs) != 0) {
        ok(0, "no O_DIRECT: open a store on the ramfs");
        free(data);
        return;
    }
    cs__seam_direct_pwrite = count_pwrite;
    atomic_store(&dp_calls, 0);
    for (size_t i = 0; i < NFB; i++) {
        o[i] = (struct obj){.size = fb_sizes[i], .data = data};
        all &= put(rcs, &o[i]) == 0;
    }
    ok(all, "no O_DIRECT: every put succeeds");
    is_int(atomic_load(&dp_calls), 0, "no O_DIRECT: no direct write was tried");
    all = 1;
    for (size_t i = 0; i < NFB; i++)
        all &= check_obj(rcs, &o[i], 5);
    ok(all, "no O_DIRECT: every object reads back exactly");
    all = 1;
    for (size_t i = 0; i < NFB; i++)
        all &= shards_valid(rcs, &o[i].layout, o[i].size);
    ok(all, "no O_DIRECT: shard lengths, headers and block CRCs are right");

    /* A heal writes through the same fallback ("<name>.tmp", renamed). */
    const struct obj *big = &o[NFB - 1];
    struct cs_seg s = first_seg(&big->layout);
    struct cs_check_stats st = {0};
    size_t n0;
    uint8_t *orig = shard_read(rcs, &big->layout, 1, &n0);
    char path[600];
    cs__shard_path(rcs, s.drives[1], s.id, 1, 0, path, sizeof(path));
    ok(orig && unlink(path) == 0 && cs_layout_check(rcs, cm_buf_slice(&big->layout), 0, &st) == 0 &&
           st.shards_healed == 1 && shard_is(rcs, &big->layout, 1, orig, n0),
       "no O_DIRECT: a lost shard is healed to its original bytes");
    free(orig);
    for (size_t i = 0; i < NFB; i++) {
        cs_layout_delete(rcs, cm_buf_slice(&o[i].layout));
        cm_buf_free(&o[i].layout);
    }
    cs__seam_direct_pwrite = pwrite;
    cs_store_close(rcs);
    free(data);
}

/* Runs ramfs_child() in a child process. Call while single-threaded. */
static void test_no_odirect(void)
{
    char mnt[300];
    int fds[2], cnt[2], st = 0;
    ssize_t got = 0;
    pid_t pid;

    snprintf(mnt, sizeof(mnt), "%s/ramfs", root);
    if (mkdir(mnt, 0755) != 0 || pipe(fds) != 0) {
        ok(0, "no O_DIRECT: set up");
        return;
    }
    fflush(stdout);
    if ((pid = fork()) == 0) {
        close(fds[0]);
        ramfs_child();
        cnt[0] = tap__n;
        cnt[1] = tap__fail;
        fflush(stdout); /* skip() does not flush, and _exit() drops stdio buffers */
        _exit(write(fds[1], cnt, sizeof(cnt)) == sizeof(cnt) ? 0 : 1);
    }
    close(fds[1]);
    if (pid > 0) {
        while (got < (ssize_t)sizeof(cnt)) {
            ssize_t r = read(fds[0], (char *)cnt + got, sizeof(cnt) - (size_t)got);
            if (r <= 0)
                break;
            got += r;
        }
        waitpid(pid, &st, 0);
    }
    close(fds[0]);
    if (pid > 0 && got == (ssize_t)sizeof(cnt) && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        tap__n = cnt[0]; /* the child's ok lines continued our numbering */
        tap__fail = cnt[1];
    } else {
        ok(0, "no O_DIRECT: the child process failed (status %d)", st);
    }
}

/* ---- the in-place write path: store.c lays each stripe buffer out so
 * that every block sits at an address congruent to its file offset modulo
 * 4096 (cs_int.h, the slot table), and be_local writes it with O_DIRECT
 * from there, carrying only unaligned tails. Block sizes from 1 byte to
 * ~300 KB put blocks and CRCs at many phases of a 4 KiB page; sizes give
 * short last stripes of every kind (1 byte, fewer bytes than k, a partial
 * block). Each object is written twice: in pieces smaller than a stripe
 * (the in-place path only: nothing may be staged) and with put()'s
 * irregular pieces (whole stripes from the caller's buffer, staged, mixed
 * with in-place stripes on the same shard files). Every shard file must
 * equal an image built here from the data alone: header, then per stripe
 * the block (parity by rs_encode over plain buffers) and its CRC32C. */

/* 1 if the shard files of the layout (one segment) are exactly the images
 * of data; prints the first difference. */
static int shards_are_images(cs_store_t *cs, const cm_buf *layout, const uint8_t *data,
                             uint64_t size, uint32_t bs, const rs_ctx_t *rs)
{
    struct cs_seg s = first_seg(layout);
    size_t len = (size_t)cs__shard_len(size, K, bs);
    uint8_t *img[K + M], *blk[K + M];
    int same = s.size == size && s.block_size == bs;

    for (int j = 0; j < K + M; j++) {
        struct cs_hdr h = {.index = j, .k = K, .m = M, .block_size = bs, .size = size};
        memcpy(h.id, s.id, CS_ID_LEN);
        img[j] = malloc(len);
        blk[j] = malloc(bs);
        cs__hdr_encode(&h, img[j]);
    }
    for (uint64_t st = 0, ns = cs__nstripes(size, K, bs); st < ns; st++) {
        uint32_t blen = cs__blen(size, K, bs, st);
        uint64_t base = st * K * bs, off = cs__stripe_off(bs, st);
        for (int i = 0; i < K; i++) {
            uint64_t from = base + (uint64_t)i * blen;
            size_t c = from >= size ? 0 : size - from < blen ? (size_t)(size - from) : blen;
            memset(blk[i], 0, blen);
            memcpy(blk[i], data + from, c);
        }
        rs_encode(rs, blen, blk, blk + K);
        for (int j = 0; j < K + M; j++) {
            memcpy(img[j] + off, blk[j], blen);
            cs__put32(img[j] + off + blen, rs_crc32c(0, blk[j], blen));
        }
    }
    for (int j = 0; j < K + M; j++) {
        size_t n;
        uint8_t *got = shard_read(cs, layout, j, &n);
        if (same && (!got || n != len || memcmp(got, img[j], len) != 0)) {
            size_t at = 0;
            while (got && at < n && at < len && got[at] == img[j][at])
                at++;
            printf("#   block size %u, size %llu: shard %d is %zu bytes (want %zu), first "
                   "difference at %zu\n",
                   bs, (unsigned long long)size, j, n, len, at);
            same = 0;
        }
        free(got);
        free(img[j]);
        free(blk[j]);
    }
    return same;
}

/* Writes o in pieces of 1..maxpiece bytes. Returns 0 or the error. */
static int put_pieces(cs_store_t *cs, struct obj *o, size_t maxpiece)
{
    cm_buf intent = {0};
    cs_writer_t *w;
    int rc = cs_writer_open(cs, &intent, &w);

    for (size_t off = 0; rc == 0 && off < o->size;) {
        size_t c = 1 + rng() % maxpiece;
        if (c > o->size - off)
            c = o->size - off;
        rc = cs_writer_write(w, o->data + off, c);
        off += c;
    }
    rc = rc ? rc : cs_writer_finish(w, &o->layout);
    if (rc != 0)
        cs_writer_abort(w);
    cm_buf_free(&intent);
    return rc;
}

static void test_inplace(const uint8_t *data, size_t datalen)
{
    static const uint32_t bsizes[] = {1, 3, 64, 1000, 4092, 4096, 4100, 12345, 65540, 300000};
    static char ipath[NDRIVES][300];
    const char *idv[NDRIVES];
    rs_ctx_t *rs = rs_ctx_new(K, M);
    int direct;

    for (int d = 0; d < NDRIVES; d++) {
        snprintf(ipath[d], sizeof(ipath[d]), "%s/ip%d", root, d);
        idv[d] = ipath[d];
    }
    cs__seam_direct_pwrite = count_pwrite;
    for (size_t b = 0; b < sizeof(bsizes) / sizeof(bsizes[0]); b++) {
        uint32_t bs = bsizes[b];
        size_t stripe = (size_t)K * bs, ns = ((size_t)1 << 20) / stripe;
        cs_store_t *ics = NULL;
        int inplace_ok = 1, mixed_ok = 1, reads_ok = 1, nobj = 0;
        uint64_t staged0;

        ns = ns < 3 ? 3 : ns > 3000 ? 3000 : ns;
        size_t sizes[] = {1, 2, stripe - 1, stripe, stripe + 1, stripe + 3, stripe * 3 / 2 + 1,
                          ns * stripe + stripe * 2 / 3 + 5};
        if (cs_store_open_local(idv, NDRIVES, K, M, bs, &ics) != 0) {
            ok(0, "in place, block size %u: open a store", bs);
            continue;
        }
        direct = takes_odirect(ipath[0]) == 1;
        staged0 = cs__be_local_staged(ics->be);
        atomic_store(&dp_calls, 0);
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            struct obj o = {.size = sizes[i], .data = (uint8_t *)data};
            if (o.size == 0 || o.size > datalen)
                continue;
            nobj++;
            inplace_ok &= put_pieces(ics, &o, stripe > 1 ? stripe - 1 : 1) == 0 &&
                          shards_are_images(ics, &o.layout, o.data, o.size, bs, rs);
            reads_ok &= check_obj(ics, &o, 3);
            cs_layout_delete(ics, cm_buf_slice(&o.layout));
            cm_buf_free(&o.layout);
        }
        ok(inplace_ok && reads_ok,
           "in place, block size %u: %d objects in pieces under a stripe: shard files exact, "
           "read back exact",
           bs, nobj);
        if (direct)
            ok(cs__be_local_staged(ics->be) == staged0 && atomic_load(&dp_calls) > 0,
               "in place, block size %u: %d direct writes, no byte staged (%llu)", bs,
               atomic_load(&dp_calls),
               (unsigned long long)(cs__be_local_staged(ics->be) - staged0));
        else
            skip("in place: the temp dir refuses O_DIRECT");
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            struct obj o = {.size = sizes[i], .data = (uint8_t *)data};
            if (o.size == 0 || o.size > datalen)
                continue;
            mixed_ok &= put(ics, &o) == 0 &&
                        shards_are_images(ics, &o.layout, o.data, o.size, bs, rs) &&
                        check_obj(ics, &o, 2);
            cs_layout_delete(ics, cm_buf_slice(&o.layout));
            cm_buf_free(&o.layout);
        }
        ok(mixed_ok, "in place, block size %u: whole stripes from the caller's buffer mixed in: "
                     "shard files exact, read back exact",
           bs);
        cs_store_close(ics);
    }
    cs__seam_direct_pwrite = pwrite;
    rs_ctx_free(rs);
}

int main(void)
{
    cs_store_t *cs = NULL, *cs2 = NULL;
    /* 4 x 4028: shard files of exactly 4096 bytes (64 + 4028 + 4), the
     * direct-I/O alignment; one byte per shard more or fewer around it. */
    size_t sizes[] = {0,           1,     BS - 1,    BS,        STRIPE,
                      STRIPE + 1,  16112, 16112 - 4, 16112 + 4, STRIPE * 7 / 2,
                      20u << 20};
    enum { NOBJ = sizeof(sizes) / sizeof(sizes[0]) };
    struct obj objs[NOBJ];
    int rc, all;

    cm_log_level = CM_LOG_ERROR; /* expected WARN lines would clutter TAP output */
    snprintf(root, sizeof(root), "%s/cs-test-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    for (int d = 0; d < 8; d++) {
        snprintf(drive_path[d], sizeof(drive_path[d]), "%s/d%d", root, d);
        drives[d] = drive_path[d];
    }

    test_no_odirect(); /* first: it forks, and unshare wants one thread */
    test_encodings();
    test_placement();
    test_place_up();

    is_int(cs_store_open_local(drives, 5, K, M, BS, &cs), CM_EINVAL, "k+m > ndrives rejected");
    is_int(cs_store_open_local(drives, NDRIVES, 0, M, BS, &cs), CM_EINVAL, "k=0 rejected");
    is_int(cs_store_open_local(drives, NDRIVES, K, M, 0, &cs), CM_EINVAL, "block size 0 rejected");
    rc = cs_store_open_local(drives, NDRIVES, K, M, BS, &cs);
    is_int(rc, 0, "open store: 6 drives, 4+2, 64 KiB blocks");
    if (rc != 0)
        return done_testing();

    /* ---- round trips */
    for (int i = 0; i < NOBJ; i++) {
        objs[i].size = sizes[i];
        objs[i].data = malloc(sizes[i] + 1);
        objs[i].layout = (cm_buf){0};
        fill_random(objs[i].data, sizes[i]);
        rc = put(cs, &objs[i]);
        uint64_t lsz = 1;
        size_t cnt = 0;
        ok(rc == 0 && cs_layout_size(cm_buf_slice(&objs[i].layout), &lsz) == 0 && lsz == sizes[i] &&
               cs_layout_count(cm_buf_slice(&objs[i].layout), &cnt) == 0 && cnt == 1,
           "put %zu bytes: layout size and count", sizes[i]);
        struct cs_seg s = first_seg(&objs[i].layout);
        int lens_ok = 1;
        for (int j = 0; j < K + M; j++)
            lens_ok &= shard_size(cs, &s, j) == (off_t)cs__shard_len(sizes[i], K, BS);
        ok(lens_ok, "size %zu: every shard file is %llu bytes (no padding to a block)", sizes[i],
           (unsigned long long)cs__shard_len(sizes[i], K, BS));
        ok(check_obj(cs, &objs[i], 30), "size %zu reads back whole and in 30 random ranges",
           sizes[i]);
    }
    is_int(count_all_files(1), 0, "no .tmp files after finish");
    struct list_ctx lc = {0};
    is_int(cs_store_list(cs, count_id, &lc), 0, "list succeeds");
    is_int(lc.n, NOBJ, "list reports each segment once");

    /* ---- range errors */
    cs_reader_t *rd = NULL;
    const struct obj *big = &objs[NOBJ - 1];
    is_int(cs_reader_open(cs, cm_buf_slice(&big->layout), big->size, 1, &rd), CM_ERANGE,
           "range past the end is CM_ERANGE");
    is_int(cs_reader_open(cs, cm_buf_slice(&big->layout), big->size + 1, 0, &rd), CM_ERANGE,
           "offset past the end is CM_ERANGE");
    is_int(cs_reader_open(cs, cm_buf_slice(&big->layout), 1, UINT64_MAX, &rd), CM_ERANGE,
           "overflowing range is CM_ERANGE");
    rc = cs_reader_open(cs, cm_buf_slice(&big->layout), big->size, 0, &rd);
    uint8_t one;
    ok(rc == 0 && cs_reader_read(rd, &one, 1) == 0, "empty range at the end reads 0 bytes");
    cs_reader_close(rd);
    cs_reader_close(NULL);

    /* ---- concurrent readers of one store */
    pthread_t th[4];
    struct thr_arg ta[4];
    for (int i = 0; i < 4; i++) {
        ta[i] = (struct thr_arg){cs, &objs[NOBJ - 1 - (i % 3)], 0};
        pthread_create(&th[i], NULL, reader_thread, &ta[i]);
    }
    all = 1;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        all &= ta[i].ok;
    }
    ok(all, "4 concurrent readers read exactly");

    /* ---- rotten blocks are rebuilt from parity on read, and the heal
     * thread then rewrites the bad shard files: byte-identical to what the
     * writer wrote (encoding is deterministic). */
    uint8_t *orig[K + M];
    size_t orig_n[K + M];
    for (int j = 0; j < K + M; j++)
        orig[j] = shard_read(cs, &big->layout, j, &orig_n[j]);
    uint64_t healed0 = nhealed(cs);
    off_t s3 = (off_t)cs__stripe_off(BS, 3);
    ok(flip_byte(cs, &big->layout, 1, s3 + 100) == 0, "corrupt a byte of data shard 1 stripe 3");
    ok(check_obj(cs, big, 10), "20 MiB object reads back exactly with a rotten data block");
    cs_store_heal_wait(cs);
    ok(shard_is(cs, &big->layout, 1, orig[1], orig_n[1]), "heal: shard 1 is back to its bytes");
    is_int(nhealed(cs) - healed0, 1, "heal: one shard file rewritten");
    is_int(count_all_files(1), 0, "heal: no .tmp file left");

    /* Two rotten blocks in one stripe: data shard 0's CRC and parity shard
     * 5. The reader needs only one parity block (4), so shard 5's rot is
     * found by the heal's scrub, not by the reader. */
    ok(flip_byte(cs, &big->layout, 0, s3 + BS) == 0 && flip_byte(cs, &big->layout, 5, s3 + 7) == 0,
       "corrupt the CRC of data shard 0 and a byte of parity shard 5, stripe 3");
    ok(check_obj(cs, big, 10), "reads back exactly with two rotten blocks in one stripe");
    cs_store_heal_wait(cs);
    ok(shard_is(cs, &big->layout, 0, orig[0], orig_n[0]) &&
           shard_is(cs, &big->layout, 5, orig[5], orig_n[5]),
       "heal: shards 0 and 5 are back to their bytes (the scrub found 5)");

    /* Three rotten blocks in a stripe: unreadable, and not healable. */
    ok(flip_byte(cs, &big->layout, 1, s3 + 100) == 0 &&
           flip_byte(cs, &big->layout, 0, s3 + BS) == 0,
       "corrupt data shards 1 and 0 in stripe 3 again");
    ok(flip_byte(cs, &big->layout, 4, s3 + 5) == 0, "corrupt parity shard 4 stripe 3");
    uint8_t *tmpbuf = malloc(big->size);
    rc = get(cs, cm_buf_slice(&big->layout), 3 * STRIPE, STRIPE, BS, tmpbuf);
    ok(rc != 0 || memcmp(tmpbuf, big->data + 3 * STRIPE, STRIPE) == 0,
       "three rotten blocks in a stripe: never wrong bytes");
    is_int(rc, CM_EIO, "three rotten blocks in a stripe: CM_EIO");
    rc = get(cs, cm_buf_slice(&big->layout), 4 * STRIPE, STRIPE, BS, tmpbuf);
    ok(rc == 0 && memcmp(tmpbuf, big->data + 4 * STRIPE, STRIPE) == 0,
       "the next stripe still reads");
    cs_store_heal_wait(cs);
    ok(!shard_is(cs, &big->layout, 0, orig[0], orig_n[0]) &&
           shard_is(cs, &big->layout, 2, orig[2], orig_n[2]) &&
           shard_is(cs, &big->layout, 3, orig[3], orig_n[3]) && count_all_files(1) == 0,
       "an impossible heal changes nothing and leaves no .tmp file");
    /* Put the bytes back (xor again) and check the object is whole again. */
    flip_byte(cs, &big->layout, 1, s3 + 100);
    flip_byte(cs, &big->layout, 0, s3 + BS);
    flip_byte(cs, &big->layout, 4, s3 + 5);
    ok(check_obj(cs, big, 3), "healed by hand: reads back exactly");

    /* A bad header makes the whole shard unusable, not the object; the heal
     * rewrites it. */
    ok(flip_byte(cs, &big->layout, 2, 40) == 0, "corrupt the header of data shard 2");
    ok(check_obj(cs, big, 5), "reads back exactly with a bad shard header");
    cs_store_heal_wait(cs);
    all = 1;
    for (int j = 0; j < K + M; j++)
        all &= shard_is(cs, &big->layout, j, orig[j], orig_n[j]);
    ok(all, "heal: the bad header is rewritten; all six shards have their original bytes");

    /* A truncated parity shard is never read while the data is healthy; the
     * reader's length check at the end of the segment reports it. */
    struct cs_seg sb = first_seg(&big->layout);
    char tpath[600];
    cs__shard_path(cs, sb.drives[4], sb.id, 4, 0, tpath, sizeof(tpath));
    ok(truncate(tpath, (off_t)orig_n[4] / 2) == 0, "truncate parity shard 4 to half");
    rc = get(cs, cm_buf_slice(&big->layout), 0, 1000, 1000, tmpbuf);
    ok(rc == 0 && memcmp(tmpbuf, big->data, 1000) == 0, "a 1000-byte read needs no parity");
    cs_store_heal_wait(cs);
    ok(shard_is(cs, &big->layout, 4, orig[4], orig_n[4]), "heal: the short parity shard is whole");
    for (int j = 0; j < K + M; j++)
        free(orig[j]);

    /* ---- a store with other geometry reads layouts it did not write */
    rc = cs_store_open_local(drives, 8, 3, 3, 4096, &cs2);
    is_int(rc, 0, "open a second store: 8 drives, 3+3, 4 KiB blocks");
    all = 1;
    for (int i = 0; i < NOBJ && rc == 0; i++)
        all &= check_obj(cs2, &objs[i], 3);
    ok(rc == 0 && all, "3+3 store reads every 4+2 layout exactly");
    struct obj o8 = {.size = 100000};
    o8.data = malloc(o8.size);
    fill_random(o8.data, o8.size);
    ok(rc == 0 && put(cs2, &o8) == 0 && check_obj(cs2, &o8, 20),
       "3+3 over 8 drives: round trip of 100000 bytes");
    struct cs_seg s8 = first_seg(&o8.layout);
    ok(s8.k == 3 && s8.m == 3, "layout records 3+3");
    ok(check_obj(cs, &o8, 5), "the 4+2 store reads the 3+3 layout");
    is_int(cs_layout_delete(cs2, cm_buf_slice(&o8.layout)), 0, "delete the 3+3 object");
    int gone = 1;
    for (int j = 0; j < 6; j++)
        gone &= !shard_exists(cs2, &s8, j, 0);
    ok(gone, "its six shard files are gone");
    free(o8.data);
    cm_buf_free(&o8.layout);

    /* ---- multi-segment layouts */
    cm_buf multi = {0};
    struct obj cat = {0};
    int parts[] = {NOBJ - 2, 0, 2, NOBJ - 3, 1}; /* 3.5 stripes, empty, block-1, ... */
    all = 1;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        all &= cs_layout_append(&multi, cm_buf_slice(&objs[parts[i]].layout)) == 0;
        cat.size += objs[parts[i]].size;
    }
    cat.data = malloc(cat.size);
    for (size_t i = 0, off = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        memcpy(cat.data + off, objs[parts[i]].data, objs[parts[i]].size);
        off += objs[parts[i]].size;
    }
    cat.layout = multi;
    uint64_t msz = 0;
    size_t mcnt = 0;
    ok(all && cs_layout_size(cm_buf_slice(&multi), &msz) == 0 && msz == cat.size &&
           cs_layout_count(cm_buf_slice(&multi), &mcnt) == 0 && mcnt == 5,
       "appended layout: 5 segments, sizes add up");
    ok(check_obj(cs, &cat, 60), "5-segment layout reads whole and in random ranges");
    size_t b1 = objs[parts[0]].size;
    rc = get(cs, cm_buf_slice(&multi), b1 - 10, 20, 7, tmpbuf);
    ok(rc == 0 && memcmp(tmpbuf, cat.data + b1 - 10, 20) == 0,
       "20 bytes across the first segment boundary");
    cm_buf junk = {0};
    cm_buf_append(&junk, "\x01garbage", 8);
    is_int(cs_layout_append(&multi, cm_buf_slice(&junk)), CM_ECORRUPT,
           "appending a corrupt layout is refused");
    is_int(multi.n, cat.layout.n, "and leaves the output unchanged");
    cm_buf_free(&junk);

    /* ---- two dead drives: everything still reads, and is healed: drive 1
     * loses its files, drive 4 its fan-out directories too. */
    cs_store_heal_wait(cs);
    wipe_drive(1);
    wipe_drive_ex(4, 1);
    all = 1;
    for (int i = 0; i < NOBJ; i++)
        all &= check_obj(cs, &objs[i], 10);
    ok(all, "with drives 1 and 4 wiped every object reads back exactly");
    ok(check_obj(cs, &cat, 10), "and so does the 5-segment layout");
    cs_store_heal_wait(cs);
    all = 1;
    for (int i = 1; i < NOBJ; i++) /* objs[0] is empty: never read, never healed */
        all &= layout_intact(cs, &objs[i].layout);
    ok(all, "heal: every shard on drives 1 and 4 is back, with its length");

    /* ---- now two OTHER drives die: only the healed shards make it work */
    wipe_drive(0);
    wipe_drive(2);
    all = 1;
    for (int i = 0; i < NOBJ; i++)
        all &= check_obj(cs, &objs[i], 5);
    ok(all, "then with drives 0 and 2 wiped every object still reads back exactly");
    ok(check_obj(cs, &cat, 5), "and so does the 5-segment layout");
    cs_store_heal_wait(cs);
    all = 1;
    for (int i = 1; i < NOBJ; i++)
        all &= layout_intact(cs, &objs[i].layout);
    ok(all, "heal: drives 0 and 2 are whole again");

    /* ---- three dead drives: an error, never wrong bytes. The third is the
     * one holding the 1-byte object's only data block (unless already dead). */
    wipe_drive(1);
    wipe_drive(4);
    struct cs_seg s1 = first_seg(&objs[1].layout);
    int third = s1.drives[0] == 1 || s1.drives[0] == 4 ? 2 : s1.drives[0];
    wipe_drive(third);
    rc = get(cs, cm_buf_slice(&big->layout), 0, big->size, 1 << 20, tmpbuf);
    is_int(rc, CM_EIO, "with 3 drives wiped a read fails with CM_EIO");
    rc = get(cs, cm_buf_slice(&objs[1].layout), 0, 1, 1, tmpbuf);
    is_int(rc, CM_EIO, "even for a 1-byte object");
    rc = get(cs, cm_buf_slice(&objs[0].layout), 0, 0, 1, tmpbuf);
    is_int(rc, 0, "a 0-byte object needs no shards");
    cs_store_heal_wait(cs);
    ok(!layout_intact(cs, &big->layout) && count_all_files(1) == 0,
       "an impossible heal rebuilds nothing and leaves no .tmp file");

    /* ---- delete by layout */
    cs_store_heal_wait(cs);
    all = 1;
    for (int i = 0; i < NOBJ; i++)
        all &= cs_layout_delete(cs, cm_buf_slice(&objs[i].layout)) == 0;
    ok(all, "cs_layout_delete of every layout succeeds (missing files are fine)");
    is_int(count_all_files(0), 0, "no shard files remain");
    is_int(cs_layout_delete(cs, cm_buf_slice(&objs[3].layout)), 0, "deleting twice is fine");

    char junkpath[1600];

    /* ---- intents: delete a segment that never finished */
    cm_buf intent = {0}, lay = {0};
    cs_writer_t *w = NULL;
    rc = cs_writer_open(cs, &intent, &w);
    is_int(rc, 0, "open a writer");
    is_int(count_all_files(0), 0, "no file exists before the first write (intent first)");
    uint64_t isz;
    is_int(cs_layout_size(cm_buf_slice(&intent), &isz), CM_ECORRUPT, "an intent is not a layout");
    rc = cs_writer_write(w, big->data, STRIPE * 3 / 2);
    struct cs_seg si = first_seg(&intent);
    ok(rc == 0 && si.type == CS__REC_INTENT && shard_exists(cs, &si, 0, 0) &&
           shard_exists(cs, &si, 5, 0) && count_all_files(1) == 0,
       "a partial write leaves shard files under their final names, no .tmp");
    is_int(count_all_files(0), K + M, "k+m files exist");
    is_int(cs_layout_delete(cs, cm_buf_slice(&intent)), 0, "cs_layout_delete(intent)");
    is_int(count_all_files(0), 0, "the partial segment's files are gone");
    cs_writer_abort(w);

    /* ...and one that finished but whose record was never committed */
    cm_buf_reset(&intent);
    rc = cs_writer_open(cs, &intent, &w);
    rc = rc ? rc : cs_writer_write(w, big->data, 12345);
    rc = rc ? rc : cs_writer_finish(w, &lay);
    ok(rc == 0 && count_all_files(0) == K + M, "finished segment has k+m files");
    is_int(cs_layout_delete(cs, cm_buf_slice(&intent)), 0, "delete it by its intent");
    is_int(count_all_files(0), 0, "its files are gone");
    cm_buf_free(&lay);

    /* ---- abort removes what was written */
    cm_buf_reset(&intent);
    rc = cs_writer_open(cs, &intent, &w);
    rc = rc ? rc : cs_writer_write(w, big->data, STRIPE + 5);
    ok(rc == 0 && count_all_files(0) == K + M, "writer in progress has k+m files");
    cs_writer_abort(w);
    is_int(count_all_files(0), 0, "cs_writer_abort removes them");
    cs_writer_abort(NULL);

    /* ---- recover removes .tmp leftovers (of heals, or of writers before
     * they wrote final names) and nothing else. A crashed writer's files
     * carry final names: its intent, not recover, reclaims them. */
    struct obj keep = {.size = 5000};
    keep.data = malloc(keep.size);
    fill_random(keep.data, keep.size);
    rc = put(cs, &keep);
    cm_buf_reset(&intent);
    rc = rc ? rc : cs_writer_open(cs, &intent, &w);
    rc = rc ? rc : cs_writer_write(w, big->data, STRIPE * 2);
    struct cs_seg sk = first_seg(&keep.layout);
    char from[700], to[700];
    for (int j = 0; j < K + M; j++) {
        /* old-style leftovers: copies of keep's shards under another id, .tmp */
        struct cs_seg so = sk;
        so.id[CS_ID_LEN - 1] ^= 0xff;
        cs__shard_path(cs, sk.drives[j], sk.id, j, 0, from, sizeof(from));
        cs__shard_path(cs, so.drives[j], so.id, j, 1, to, sizeof(to));
        snprintf(junkpath, sizeof(junkpath), "cp '%s' '%s'", from, to);
        rc = rc ? rc : system(junkpath);
    }
    snprintf(junkpath, sizeof(junkpath), "%s/zz-not-ours.tmp", drives[0]);
    int jfd = open(junkpath, O_CREAT | O_WRONLY, 0644);
    close(jfd);
    ok(rc == 0 && count_all_files(1) == K + M, "k+m leftover .tmp shard files");
    is_int(cs_store_recover(cs), 0, "cs_store_recover");
    is_int(count_all_files(1), 0, "no .tmp shard files remain");
    is_int(count_all_files(0), 2 * (K + M),
           "the finished and the unfinished segment's files remain");
    ok(access(junkpath, F_OK) == 0, "files that are not shards are left alone");
    ok(check_obj(cs, &keep, 5), "the finished segment still reads");
    is_int(cs_layout_delete(cs, cm_buf_slice(&intent)), 0,
           "the intent reclaims the crashed writer");
    cs_writer_abort(w);
    is_int(count_all_files(0), K + M, "only the finished segment's files remain");
    lc.n = 0;
    cs_store_list(cs, count_id, &lc);
    is_int(lc.n, 1, "list shows one segment");
    cs_layout_delete(cs, cm_buf_slice(&keep.layout));
    free(keep.data);
    cm_buf_free(&keep.layout);
    cm_buf_free(&intent);
    unlink(junkpath);

    /* ---- empty writer: header-only shards */
    struct obj empty = {0};
    ok(put(cs, &empty) == 0 && check_obj(cs, &empty, 1), "zero-byte segment round trip");
    cs_layout_delete(cs, cm_buf_slice(&empty.layout));
    cm_buf_free(&empty.layout);

    /* ---- a drive emptied of its fan-out directories while the store is
     * open (replaced under a running server): a writer recreates them. */
    wipe_drive_ex(3, 1);
    struct obj redo = {.size = STRIPE + 3, .data = big->data};
    ok(put(cs, &redo) == 0 && check_obj(cs, &redo, 3) && layout_intact(cs, &redo.layout),
       "writes work after a drive lost its fan-out directories");
    cs_layout_delete(cs, cm_buf_slice(&redo.layout));
    cm_buf_free(&redo.layout);

    /* ---- a heal racing a delete: the delete wins, whenever it comes (before
     * the heal starts, while it reads, around its rename); nothing is left. */
    all = 1;
    int nraces = 40;
    for (int t = 0; t < nraces; t++) {
        struct obj o = {.size = 3 * STRIPE + 11, .data = big->data};
        char spath[600];
        all &= put(cs, &o) == 0;
        struct cs_seg so = first_seg(&o.layout);
        cs__shard_path(cs, so.drives[t % (K + M)], so.id, t % (K + M), 0, spath, sizeof(spath));
        unlink(spath);
        rc = get(cs, cm_buf_slice(&o.layout), 0, o.size, 1 << 20, tmpbuf);
        all &= rc == 0 && memcmp(tmpbuf, o.data, o.size) == 0;
        if (t % 4)
            usleep((useconds_t)(rng() % 3000));
        all &= cs_layout_delete(cs, cm_buf_slice(&o.layout)) == 0;
        cs_store_heal_wait(cs);
        for (int j = 0; j < K + M; j++)
            all &= !shard_exists(cs, &so, j, 0) && !shard_exists(cs, &so, j, 1);
        cm_buf_free(&o.layout);
    }
    ok(all, "%d reads that queue a heal, each followed by a delete: no file survives", nraces);
    is_int(count_all_files(0), 0, "the store is empty");

    /* ---- manifests, layout checks, degraded writes, a parallel backend */
    struct obj mo = {.size = STRIPE + 77, .data = big->data};
    ok(put(cs, &mo) == 0, "put an object for the manifest tests");
    test_manifests(cs, &mo);
    cs_layout_delete(cs, cm_buf_slice(&mo.layout));
    cm_buf_free(&mo.layout);
    is_int(count_all_files(0), 0, "the store is empty again");
    test_check(cs, big->data);
    test_degraded_local(cs, big->data);
    is_int(count_all_files(0) + count_blobs(drives, NDRIVES, 0), 0,
           "the store is empty at the end");
    test_parallel_backend(big->data);
    test_direct_fallback(big->data);
    test_inplace(big->data, big->size);

    for (int i = 0; i < NOBJ; i++) {
        free(objs[i].data);
        cm_buf_free(&objs[i].layout);
    }
    free(cat.data);
    cm_buf_free(&multi);
    free(tmpbuf);
    cs_store_close(cs2);
    cs_store_close(cs);
    cs_store_close(NULL);

    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", root);
    return done_testing();
}
