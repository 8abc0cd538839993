/* tests/unit/test_cs_store.c - the local shard store end to end in a temp
 * dir: 6 drives, 4+2. Round trips of awkward sizes, range reads, lost
 * drives, rotten blocks, too many failures, heal on read (rotten blocks, bad
 * headers, lost drives, heal racing delete), multi-segment layouts, delete
 * by layout and by intent, recover, list; plus the private encodings. */
#include "chunkstore/cs_int.h"
#include "common/cm.h"
#include "tests/unit/tap.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
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
            if (f->d_name[0] == '.')
                continue;
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

int main(void)
{
    cs_store_t *cs = NULL, *cs2 = NULL;
    size_t sizes[] = {0, 1, BS - 1, BS, STRIPE, STRIPE + 1, STRIPE * 7 / 2, 20u << 20};
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

    test_encodings();
    test_placement();

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
