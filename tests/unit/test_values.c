/* tests/unit/test_values.c - unit tests of the metadata's value log
 * (metadata/vlog.c and its use by objects.c and db.c): which objects keep
 * their bytes there, reads after reopen, a corrupt value, the collector
 * (moving live values out of mostly dead segments and dropping them, also
 * after a reopen, never a segment with a reservation pending; most
 * segments without an open descriptor), and kill -9 of writers with the unsynced value-log bytes
 * and LevelDB's log lost afterwards (the journal brings them back). TAP. */
#include "metadata/md_int.h"
#include "tests/unit/crash.h"
#include "tests/unit/tap.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_dir[64];

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static int reclaim_ok(void *arg, cm_slice layout)
{
    (void)arg, (void)layout;
    return 0;
}

static md_db_t *open_db(const char *path)
{
    md_db_t *db = NULL;
    if (md_open(path, &db))
        return NULL;
    md_set_reclaim(db, reclaim_ok, NULL);
    return db;
}

/* The bytes of version v of key k: n bytes that differ with both. */
static void fill(uint8_t *p, size_t n, uint32_t k, uint32_t v)
{
    uint64_t x = 0x9e3779b97f4a7c15ull * (k + 1) ^ (uint64_t)v << 32;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        p[i] = (uint8_t)x;
    }
}

static int put_val(md_db_t *db, const char *bucket, const char *key, size_t n, uint32_t k,
                   uint32_t v)
{
    uint8_t buf[8192];
    md_object o = {0};
    fill(buf, n, k, v);
    o.size = n;
    o.mtime_ms = 1700000000000;
    o.etag = CM_SLICE_STR("0123456789abcdef0123456789abcdef");
    o.inline_data = CM_SLICE(buf, n);
    return md_object_put(db, bucket, CM_SLICE_STR(key), &o, 0, NULL, NULL);
}

/* 0 if bucket/key holds version v of k's n bytes. */
static int check_val(md_db_t *db, const char *bucket, const char *key, size_t n, uint32_t k,
                     uint32_t v)
{
    uint8_t want[8192];
    md_object o;
    int rc = md_object_get(db, bucket, CM_SLICE_STR(key), &o);
    if (rc)
        return rc;
    fill(want, n, k, v);
    rc = o.size == n && o.inline_data.n == n && !memcmp(o.inline_data.p, want, n) &&
                 o.vref.len == 0
             ? 0
             : 1;
    md_object_clear(&o);
    return rc;
}

/* The first byte of the raw record: its version. */
static int rec_version(md_db_t *db, const char *bucket, const char *key)
{
    cm_buf k = {0}, v = {0};
    int ver = -1;
    if (!md__key_object(&k, bucket, CM_SLICE_STR(key)) && !md__get(db, cm_buf_slice(&k), &v) &&
        v.n)
        ver = v.p[0];
    cm_buf_free(&k);
    cm_buf_free(&v);
    return ver;
}

static int count_segments(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (!d)
        return -1;
    while ((e = readdir(d)))
        n += !strncmp(e->d_name, "cairn-values.", 13);
    closedir(d);
    return n;
}

/* Descriptors of this process open on value-log segments. */
static int open_segments(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    char p[300], target[512];
    int n = 0;
    while (d && (e = readdir(d))) {
        snprintf(p, sizeof p, "/proc/self/fd/%s", e->d_name);
        ssize_t l = readlink(p, target, sizeof target - 1);
        if (l > 0) {
            target[l] = 0;
            n += strstr(target, "/cairn-values.") != NULL;
        }
    }
    if (d)
        closedir(d);
    return n;
}

static int mkbucket(md_db_t *db, const char *name)
{
    md_bucket b = {0};
    snprintf(b.name, sizeof b.name, "%s", name);
    snprintf(b.region, sizeof b.region, "us-east-1");
    return md_bucket_create(db, &b);
}

static void test_basics(void)
{
    char path[128], seg[200];
    snprintf(path, sizeof path, "%s/basics", g_dir);
    md_db_t *db = open_db(path);
    ok(db != NULL, "open");
    if (!db)
        return;
    is_int(mkbucket(db, "b"), 0, "bucket");
    is_int(put_val(db, "b", "small", MD__VALUE_MIN - 1, 1, 1), 0, "put below the threshold");
    is_int(put_val(db, "b", "at", MD__VALUE_MIN, 2, 1), 0, "put at the threshold");
    is_int(put_val(db, "b", "big", 8000, 3, 1), 0, "put of 8000 bytes");
    is_int(rec_version(db, "b", "small"), 1, "a small object's bytes stay in its record");
    is_int(rec_version(db, "b", "at"), 2, "at the threshold the record refers to the value log");
    is_int(rec_version(db, "b", "big"), 2, "and above it");
    is_int(check_val(db, "b", "small", MD__VALUE_MIN - 1, 1, 1), 0, "small reads back");
    is_int(check_val(db, "b", "at", MD__VALUE_MIN, 2, 1), 0, "at reads back");
    is_int(check_val(db, "b", "big", 8000, 3, 1), 0, "big reads back");

    /* Listings and scans see sizes, not bytes. */
    md_list_req q = {"b", CM_SLICE_NULL, CM_SLICE_NULL, CM_SLICE_NULL, 100};
    md_list_res r;
    is_int(md_object_list(db, &q, &r), 0, "list");
    ok(r.n == 3 && r.a[1].obj.size == 8000, "the listing shows the sizes");
    md_list_res_free(&r);
    md_close(db);
    is_int(count_segments(path), 1, "one segment file");

    db = open_db(path);
    ok(db != NULL, "reopen");
    if (!db)
        return;
    is_int(check_val(db, "b", "big", 8000, 3, 1), 0, "big reads back after a reopen");
    is_int(check_val(db, "b", "at", MD__VALUE_MIN, 2, 1), 0, "at reads back after a reopen");
    md_close(db);

    /* One flipped byte in the segment: the read says corrupt, never wrong bytes. */
    snprintf(seg, sizeof seg, "%s/cairn-values.00000001", path);
    int fd = open(seg, O_RDWR);
    uint8_t c = 0;
    ok(fd >= 0 && pread(fd, &c, 1, MD__VALUE_MIN + 100) == 1, "read a byte of big's value");
    c ^= 0x40;
    ok(fd >= 0 && pwrite(fd, &c, 1, MD__VALUE_MIN + 100) == 1, "flip it");
    if (fd >= 0)
        close(fd);
    db = open_db(path);
    md_object o;
    is_int(md_object_get(db, "b", CM_SLICE_STR("big"), &o), CM_ECORRUPT,
           "a value that does not check out: CM_ECORRUPT");
    is_int(check_val(db, "b", "at", MD__VALUE_MIN, 2, 1), 0, "its neighbour still reads back");
    md_close(db);

    /* A segment cut short (bytes that never reached the disk): also corrupt. */
    ok(truncate(seg, MD__VALUE_MIN + 100) == 0, "cut the segment inside big's value");
    db = open_db(path);
    is_int(md_object_get(db, "b", CM_SLICE_STR("big"), &o), CM_ECORRUPT,
           "a value past the segment's end: CM_ECORRUPT");
    is_int(check_val(db, "b", "at", MD__VALUE_MIN, 2, 1), 0, "the value before it reads back");
    md_close(db);
}

/* test_collector's 400 objects of bucket "c": k<i> deleted when i % 8 is 7
 * and, with evens_gone, every even one but i % 8 == 6 too; the others hold
 * their last version (1 when i % 4, else 0). Returns how many differ. */
static int read_back(md_db_t *db, bool evens_gone)
{
    char key[32];
    int bad = 0;
    for (uint32_t i = 0; i < 400; i++) {
        snprintf(key, sizeof key, "k%03u", i);
        if (i % 8 == 7 || (evens_gone && i % 2 == 0 && i % 8 != 6)) {
            md_object o;
            bad += md_object_get(db, "c", CM_SLICE_STR(key), &o) != CM_ENOTFOUND;
        } else {
            bad += check_val(db, "c", key, 3000, i, i % 4 ? 1 : 0) != 0;
        }
    }
    return bad;
}

static void test_collector(void)
{
    char path[128], key[32];
    uint64_t saved = md__vlog_seg_bytes;
    size_t moved = 0, dropped = 0;
    int bad = 0;

    md__vlog_seg_bytes = 64 * 1024; /* about 21 values of 3000 bytes a segment */
    size_t saved_fds = md__vlog_fds;
    md__vlog_fds = 4; /* most segments without an open descriptor */
    snprintf(path, sizeof path, "%s/collector", g_dir);
    md_db_t *db = open_db(path);
    ok(db != NULL, "open");
    if (!db)
        return;
    mkbucket(db, "c");
    for (uint32_t i = 0; i < 400; i++) {
        snprintf(key, sizeof key, "k%03u", i);
        bad += put_val(db, "c", key, 3000, i, 0) != 0;
    }
    is_int(bad, 0, "400 puts of 3000 bytes");
    int before = count_segments(path);
    ok(before >= 18, "they fill %d segments", before);
    ok(open_segments() <= 4, "with descriptors open on %d of them (at most 4)", open_segments());
    is_int(md__values_gc(db, &moved, &dropped), 0, "a collector pass with nothing dead");
    ok(moved == 0 && dropped == 0, "moves and drops nothing (%zu, %zu)", moved, dropped);

    /* Overwrite 3 of every 4 and delete every 8th: the early segments are
     * mostly dead now. */
    for (uint32_t i = 0; i < 400; i++) {
        snprintf(key, sizeof key, "k%03u", i);
        if (i % 8 == 7)
            bad += md_object_delete(db, "c", CM_SLICE_STR(key), NULL, NULL) != 0;
        else if (i % 4)
            bad += put_val(db, "c", key, 3000, i, 1) != 0;
    }
    is_int(bad, 0, "overwrites and deletes");
    is_int(md__values_gc(db, &moved, &dropped), 0, "a collector pass");
    ok(moved > 0 && dropped >= (size_t)before - 1, "moved %zu values, dropped %zu segments", moved,
       dropped);
    ok(count_segments(path) < 2 * before - (int)dropped + 1, "segment files went away (%d left)",
       count_segments(path));
    bad += read_back(db, false);
    is_int(bad, 0, "every object reads back its last bytes after the pass");
    md_close(db);

    /* After a reopen the collector knows nothing of the old segments: its
     * first pass scans, and deletes of half the rest make work for it. */
    db = open_db(path);
    ok(db != NULL, "reopen");
    if (!db)
        return;
    for (uint32_t i = 0; i < 400; i += 2) {
        snprintf(key, sizeof key, "k%03u", i);
        if (i % 8 != 6)
            bad += md_object_delete(db, "c", CM_SLICE_STR(key), NULL, NULL) != 0;
    }
    is_int(bad, 0, "deletes after the reopen");
    is_int(md__values_gc(db, &moved, &dropped), 0, "a pass after the reopen");
    ok(dropped > 0, "it drops segments (%zu, %zu values moved)", dropped, moved);
    md_close(db);
    db = open_db(path);
    if (db)
        bad += read_back(db, true);
    is_int(bad, 0, "every object reads back after another reopen");
    md_close(db);
    md__vlog_seg_bytes = saved;
    md__vlog_fds = saved_fds;
}

/* Readers while the collector moves values and drops segments: a read
 * never fails and never returns other bytes. */
struct reader {
    md_db_t *db;
    volatile int stop;
    int bad, reads;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    char key[32];
    for (uint32_t n = 0; !r->stop; n++) {
        uint32_t i = n % 200;
        snprintf(key, sizeof key, "r%03u", i);
        r->bad += check_val(r->db, "r", key, 2000, i, 0) != 0;
        r->reads++;
    }
    return NULL;
}

static void test_readers(void)
{
    char path[128], key[32];
    uint64_t saved = md__vlog_seg_bytes;
    int bad = 0;
    size_t moved = 0, dropped = 0, tm = 0, td = 0;

    md__vlog_seg_bytes = 32 * 1024;
    size_t saved_fds = md__vlog_fds;
    md__vlog_fds = 3; /* reads of old segments open them for the read */
    snprintf(path, sizeof path, "%s/readers", g_dir);
    md_db_t *db = open_db(path);
    if (!db)
        return;
    mkbucket(db, "r");
    for (uint32_t i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "r%03u", i);
        bad += put_val(db, "r", key, 2000, i, 0) != 0;
    }
    struct reader rd = {db, 0, 0, 0};
    pthread_t th;
    pthread_create(&th, NULL, reader_main, &rd);
    /* Filler objects written and deleted between the values, so every
     * segment is mostly dead and its values move in each round. */
    for (int round = 0; round < 6; round++) {
        for (uint32_t i = 0; i < 200; i++) {
            snprintf(key, sizeof key, "f%03u", i);
            bad += put_val(db, "r", key, 2000, 1000 + i, (uint32_t)round) != 0;
        }
        for (uint32_t i = 0; i < 200; i++) {
            snprintf(key, sizeof key, "f%03u", i);
            bad += md_object_delete(db, "r", CM_SLICE_STR(key), NULL, NULL) != 0;
        }
        bad += md__values_gc(db, &moved, &dropped) != 0;
        tm += moved;
        td += dropped;
    }
    rd.stop = 1;
    pthread_join(th, NULL);
    is_int(bad, 0, "writes and collector passes");
    ok(tm > 0 && td > 0, "the passes moved %zu values and dropped %zu segments", tm, td);
    is_int(rd.bad, 0, "%d reads meanwhile, each of the right bytes", rd.reads);
    md_close(db);
    md__vlog_seg_bytes = saved;
    md__vlog_fds = saved_fds;
}

/* A value reserved in a segment that stops being active before its record
 * is committed: the collector must not drop that segment meanwhile, even
 * though no record points there yet. */
static void test_pending(void)
{
    char path[128], key[32], seg[200];
    uint64_t saved = md__vlog_seg_bytes;
    size_t moved = 0, dropped = 0;
    uint8_t late[3000];
    int bad = 0;

    md__vlog_seg_bytes = 16 * 1024;
    snprintf(path, sizeof path, "%s/pending", g_dir);
    md_db_t *db = open_db(path);
    if (!db)
        return;
    mkbucket(db, "p");
    bad += put_val(db, "p", "a0", 3000, 1, 0) != 0; /* segment 1 */
    /* The late value, reserved in segment 1 too, its record not yet written. */
    struct md__batch *b = md__batch_new();
    md_value_ref ref;
    fill(late, sizeof late, 77, 0);
    bad += md__batch_value(db, b, CM_SLICE(late, sizeof late), &ref) != 0;
    ok(ref.seg == 1, "the late value is reserved in segment %u", ref.seg);
    /* Fill segment 1 and go on to 2 and 3; then segment 1's only record goes. */
    for (uint32_t i = 1; i < 12; i++) {
        snprintf(key, sizeof key, "a%u", i);
        bad += put_val(db, "p", key, 3000, 1 + i, 0) != 0;
    }
    for (uint32_t i = 0; i < 12; i++) {
        snprintf(key, sizeof key, "a%u", i);
        bad += md_object_delete(db, "p", CM_SLICE_STR(key), NULL, NULL) != 0;
    }
    is_int(bad, 0, "puts and deletes");
    is_int(md__values_gc(db, &moved, &dropped), 0, "a collector pass");
    snprintf(seg, sizeof seg, "%s/cairn-values.00000001", path);
    ok(access(seg, F_OK) == 0, "segment 1 is kept while a reservation in it is pending");
    /* Now the late record, then the batch is freed: the reservation ends. */
    md_object o = {0};
    cm_buf k = {0}, v = {0};
    o.size = sizeof late;
    o.etag = CM_SLICE_STR("0123456789abcdef0123456789abcdef");
    o.vref = ref;
    bad += md__key_object(&k, "p", CM_SLICE_STR("late")) || md__obj_encode(&v, &o);
    md__batch_put(b, cm_buf_slice(&k), cm_buf_slice(&v));
    bad += md__batch_commit(db, b, true) != 0;
    md__batch_free(b);
    cm_buf_free(&k);
    cm_buf_free(&v);
    is_int(bad, 0, "the late record is committed");
    is_int(md__values_gc(db, &moved, &dropped), 0, "another pass");
    ok(moved >= 1 && access(seg, F_OK) != 0, "now segment 1 goes, its value moved (%zu, %zu)",
       moved, dropped);
    is_int(check_val(db, "p", "late", sizeof late, 77, 0), 0, "the late object reads back");
    md_close(db);
    md__vlog_seg_bytes = saved;
}

/* Cuts every value-log segment back to its size at the child's open: what a
 * power loss may leave of bytes written since the last checkpoint. */
static int cut_segments(const char *dir, const char *sizes)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[400];
    int n = 0;
    if (!d)
        return -1;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "cairn-values.", 13))
            continue;
        unsigned long long was = 0;
        const char *at = strstr(sizes, e->d_name);
        if (at)
            sscanf(at + strlen(e->d_name), "=%llu", &was);
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (truncate(p, (off_t)was) == 0)
            n++;
    }
    closedir(d);
    return n;
}

#define NW 4

/* Puts key w<t>-<i % 30> = version i of 2500 bytes and acknowledges it. */
static void *crash_writer(void *arg)
{
    struct crash_writer *w = arg;
    char key[32];
    for (uint32_t i = 0;; i++) {
        snprintf(key, sizeof key, "w%u-%02u", w->t, i % 30);
        if (put_val(w->db, "k", key, 2500, w->t * 100 + i % 30, i))
            _exit(1);
        crash_ack(w, i);
    }
    return NULL;
}

/* NW writers in a child killed after 200 acknowledged puts each; then, with
 * lose, LevelDB's log and the value-log segments are cut back to their sizes
 * at the child's open (the journal, big enough not to wrap, is all that has
 * the writes). Reopened, every key holds its last acknowledged bytes (or
 * those in flight at the kill). */
static void crash(const char *what, bool lose)
{
    char path[128], key[32], log[300], sizes[4096] = "";
    int bad = 0;
    uint32_t acked[NW];
    uint64_t logsize;

    snprintf(path, sizeof path, "%s/crash-%s", g_dir, what);
    {
        md_db_t *db = open_db(path); /* the bucket, and a first segment */
        if (!db)
            return;
        mkbucket(db, "k");
        put_val(db, "k", "first", 2500, 9999, 0);
        md_close(db);
    }
    /* The segments before the child (its new ones begin empty). */
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        struct stat sb;
        char p[400];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        if (!strncmp(e->d_name, "cairn-values.", 13) && !stat(p, &sb))
            snprintf(sizes + strlen(sizes), sizeof sizes - strlen(sizes), "%s=%llu ", e->d_name,
                     (unsigned long long)sb.st_size);
    }
    if (d)
        closedir(d);
    bool killed;
    uint32_t least = crash_run(path, NW, 200, crash_writer, acked, &logsize, &killed);
    ok(killed && least >= 200, "%s: %d writers killed after 200 puts or more each", what, NW);
    if (lose) {
        ok(logsize != UINT64_MAX && crash_newest_log(path, log, sizeof log) &&
               truncate(log, (off_t)logsize) == 0,
           "%s: LevelDB's log cut back to %llu bytes", what, (unsigned long long)logsize);
        ok(cut_segments(path, sizes) > 0, "%s: value-log segments cut back", what);
    }
    md_db_t *db = open_db(path);
    ok(db != NULL, "%s: reopen", what);
    for (uint32_t t = 0; db && t < NW; t++) {
        for (uint32_t j = 0; j < 30; j++) {
            uint32_t a = acked[t];
            uint32_t last = a - (a % 30 >= j ? a % 30 - j : a % 30 + 30 - j);
            snprintf(key, sizeof key, "w%u-%02u", t, j);
            if (check_val(db, "k", key, 2500, t * 100 + j, last) &&
                !(last + 30 == a + 1 && !check_val(db, "k", key, 2500, t * 100 + j, last + 30)))
                bad++;
        }
    }
    bad += !db || check_val(db, "k", "first", 2500, 9999, 0) != 0;
    is_int(bad, 0, "%s: every key holds its last acknowledged bytes", what);
    md_close(db);
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/test_values.XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_basics();
    test_collector();
    test_readers();
    test_pending();
    crash("kill", false);
    crash("lost", true);
    nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return done_testing();
}
