/* tests/unit/test_md.c - unit tests of metadata/: key encoding order, record
 * codecs, buckets, objects (precondition, garbage, intents, recovery),
 * listings (prefix, delimiter, start_after, paging, seeking past common
 * prefixes), multipart uploads, reopen, concurrent sync puts, and failing
 * group writes of the committer (log write errors, a full disk). TAP. */
#include "metadata/md_int.h"
#include "tests/unit/crash.h"
#include "tests/unit/tap.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char g_dir[64];  /* temp dir holding the databases */
static char g_path[96]; /* the main database */

/* ------------------------------------------------------------ reclaim log */
static struct {
    pthread_mutex_t lk;
    char *a[4096];
    size_t n;
    int fail; /* reclaim returns CM_EIO while set */
} rl = {PTHREAD_MUTEX_INITIALIZER, {0}, 0, 0};

static int rec_fn(void *arg, cm_slice layout)
{
    (void)arg;
    if (rl.fail)
        return CM_EIO;
    pthread_mutex_lock(&rl.lk);
    if (rl.n < sizeof rl.a / sizeof rl.a[0])
        rl.a[rl.n++] = cm_slice_strdup(layout);
    pthread_mutex_unlock(&rl.lk);
    return 0;
}

static void rl_reset(void)
{
    for (size_t i = 0; i < rl.n; i++)
        free(rl.a[i]);
    rl.n = 0;
}

static int rl_count(const char *layout)
{
    int c = 0;
    for (size_t i = 0; i < rl.n; i++)
        c += strcmp(rl.a[i], layout) == 0;
    return c;
}

/* ---------------------------------------------------------------- helpers */
static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static md_db_t *reopen(md_db_t *db)
{
    md_db_t *n = NULL;
    md_close(db);
    if (md_open(g_path, &n))
        return NULL;
    md_set_reclaim(n, rec_fn, NULL);
    return n;
}

static md_object mkobj(const char *etag, uint64_t size, const char *layout, const char *inl)
{
    /* Shared by threads: initialised once, never written. */
    static md_kv hdrs[2] = {
        {{(const uint8_t *)"content-type", 12}, {(const uint8_t *)"text/plain", 10}},
        {{(const uint8_t *)"x-amz-meta-a", 12}, {(const uint8_t *)"b", 1}}};
    md_object o = {0};
    o.size = size;
    o.mtime_ms = 1700000000123;
    o.etag = CM_SLICE_STR(etag);
    o.hdrs = hdrs;
    o.nhdrs = 2;
    o.layout = layout ? CM_SLICE_STR(layout) : CM_SLICE_NULL;
    o.inline_data = inl ? CM_SLICE_STR(inl) : CM_SLICE_NULL;
    return o;
}

static int put(md_db_t *db, const char *bucket, const char *key, const char *layout)
{
    md_object o = mkobj("d41d8cd98f00b204e9800998ecf8427e", 3, layout, layout ? NULL : "abc");
    return md_object_put(db, bucket, CM_SLICE_STR(key), &o, 0, NULL, NULL);
}

static int mkbucket(md_db_t *db, const char *name)
{
    md_bucket b = {0};
    snprintf(b.name, sizeof b.name, "%s", name);
    snprintf(b.region, sizeof b.region, "us-east-1");
    b.ctime_ms = 42;
    return md_bucket_create(db, &b);
}

static int sgn(int x)
{
    return (x > 0) - (x < 0);
}

/* Renders a listing as "k1,k2/,..." ('|' ends it when truncated). */
static char *render(const md_list_res *r)
{
    static char s[8192];
    size_t o = 0;
    s[0] = 0;
    for (size_t i = 0; i < r->n && o < sizeof s - 2048; i++)
        o += (size_t)snprintf(s + o, sizeof s - o, "%s%.*s", i ? "," : "", (int)r->a[i].key.n,
                              (const char *)r->a[i].key.p);
    if (r->truncated)
        snprintf(s + o, sizeof s - o, "|");
    return s;
}

static const char *list(md_db_t *db, const char *bucket, const char *prefix, const char *delim,
                        const char *after, size_t max)
{
    md_list_req q = {bucket, CM_SLICE_STR(prefix), CM_SLICE_STR(delim), CM_SLICE_STR(after), max};
    md_list_res r;
    const char *s;
    if (md_object_list(db, &q, &r))
        return "ERROR";
    s = render(&r);
    md_list_res_free(&r);
    return s;
}

/* -------------------------------------------------------------- key codec */
static void test_keys(void)
{
    static uint8_t k1024a[1024], k1024b[1024], k1024c[1024];
    cm_slice keys[20];
    size_t n = 0;
    cm_buf a = {0}, b = {0}, t = {0};
    int bad = 0;

    memset(k1024a, 'z', sizeof k1024a);
    memset(k1024b, 0xff, sizeof k1024b);
    memset(k1024c, 0xff, sizeof k1024c);
    k1024c[1023] = 0;
    keys[n++] = CM_SLICE("\x00", 1);
    keys[n++] = CM_SLICE("\x00\x00", 2);
    keys[n++] = CM_SLICE("\x00\x01", 2);
    keys[n++] = CM_SLICE("\x01", 1);
    keys[n++] = CM_SLICE("\x01\x00", 2);
    keys[n++] = CM_SLICE("\x02", 1);
    keys[n++] = CM_SLICE("a", 1);
    keys[n++] = CM_SLICE("a\x00", 2);
    keys[n++] = CM_SLICE("a\0b", 3);
    keys[n++] = CM_SLICE("a-b", 3);
    keys[n++] = CM_SLICE("a/b", 3);
    keys[n++] = CM_SLICE_STR("\xc3\xa9t\xc3\xa9");        /* été */
    keys[n++] = CM_SLICE_STR("\xe6\x97\xa5\xe6\x9c\xac"); /* 日本 */
    keys[n++] = CM_SLICE("\xff", 1);
    keys[n++] = CM_SLICE("\xff\x00", 2);
    keys[n++] = CM_SLICE(k1024a, 1024);
    keys[n++] = CM_SLICE(k1024b, 1024);
    keys[n++] = CM_SLICE(k1024c, 1024);

    /* Object keys: same order as the raw bytes; never across buckets. */
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++) {
            md__key_object(&a, "a", keys[i]);
            md__key_object(&b, "a", keys[j]);
            if (sgn(cm_slice_cmp(cm_buf_slice(&a), cm_buf_slice(&b))) !=
                sgn(cm_slice_cmp(keys[i], keys[j])))
                bad++;
            md__key_object(&b, "a-b", keys[j]);
            if (cm_slice_cmp(cm_buf_slice(&a), cm_buf_slice(&b)) >= 0)
                bad++;
            cm_buf_reset(&t);
            md__key_object(&t, "a", CM_SLICE_NULL);
            if (cm_slice_has_prefix(cm_buf_slice(&b), cm_buf_slice(&t)))
                bad++;
        }
    }
    is_int(bad, 0, "object keys sort as byte strings within a bucket, never across buckets");

    /* Upload keys: (key, upload id) order, even with 0x00/0x01 in keys. */
    bad = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++) {
            for (int x = 0; x < 2; x++) {
                cm_slice ida = x ? CM_SLICE("id2", 3) : CM_SLICE("id1", 3);
                cm_slice idb = CM_SLICE("id1", 3);
                int want = cm_slice_cmp(keys[i], keys[j]);
                if (want == 0)
                    want = cm_slice_cmp(ida, idb);
                md__key_upload(&a, "a", keys[i], ida);
                md__key_upload(&b, "a", keys[j], idb);
                if (sgn(cm_slice_cmp(cm_buf_slice(&a), cm_buf_slice(&b))) != sgn(want))
                    bad++;
            }
        }
        /* round trip */
        cm_slice id;
        md__key_upload(&a, "a", keys[i], CM_SLICE("\x00id", 3));
        cm_buf_reset(&t);
        if (md__key_upload_parse(cm_buf_slice(&a), 1, &t, &id) ||
            !cm_slice_eq(cm_buf_slice(&t), keys[i]) || !cm_slice_eq(id, CM_SLICE("\x00id", 3)))
            bad++;
    }
    is_int(bad, 0, "upload keys sort by (key, upload id) and round-trip");

    /* Escaped prefixes match exactly the keys that have the raw prefix. */
    bad = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++) {
            md__key_upload_prefix(&a, "a", keys[i]);
            md__key_upload(&b, "a", keys[j], CM_SLICE("u", 1));
            if (cm_slice_has_prefix(cm_buf_slice(&b), cm_buf_slice(&a)) !=
                cm_slice_has_prefix(keys[j], keys[i]))
                bad++;
        }
    }
    is_int(bad, 0, "escaped upload prefix matches iff the raw key has the prefix");

    cm_reader r = {(const uint8_t *)"a\x01\x03", 3};
    cm_buf_reset(&t);
    is_int(md__key_unesc(&r, &t), CM_ECORRUPT, "bad escape is CM_ECORRUPT");
    r = (cm_reader){(const uint8_t *)"abc", 3};
    is_int(md__key_unesc(&r, &t), CM_ECORRUPT, "unterminated escape is CM_ECORRUPT");

    /* Part and seq keys sort numerically. */
    md__key_part(&a, CM_SLICE("u", 1), 255);
    md__key_part(&b, CM_SLICE("u", 1), 256);
    ok(cm_slice_cmp(cm_buf_slice(&a), cm_buf_slice(&b)) < 0, "part 255 sorts before 256");
    md__key_seq(&a, MD__K_INTENT, 0xff);
    md__key_seq(&b, MD__K_INTENT, 0x100);
    ok(cm_slice_cmp(cm_buf_slice(&a), cm_buf_slice(&b)) < 0, "seq 255 sorts before 256");
    uint64_t seq = 0;
    ok(md__key_seq_parse(cm_buf_slice(&b), MD__K_INTENT, &seq) == 0 && seq == 0x100,
       "seq key parses");

    /* Successor with carry. */
    cm_buf_reset(&a);
    cm_buf_append(&a, "O\x61\x00p\xff\xff", 6);
    ok(md__key_successor(&a) && a.n == 4 && memcmp(a.p, "O\x61\x00q", 4) == 0,
       "successor strips 0xff and increments");
    cm_buf_reset(&a);
    cm_buf_append(&a, "O\x61\x00\xff", 4);
    ok(md__key_successor(&a) && a.n == 3 && memcmp(a.p, "O\x61\x01", 3) == 0,
       "successor carries into the bucket separator");

    cm_buf_free(&a);
    cm_buf_free(&b);
    cm_buf_free(&t);
}

/* ------------------------------------------------------------------ codec */
static void test_codec(void)
{
    md_object o = mkobj("0123456789abcdef0123456789abcdef", 12345, "LAYOUT", "inline!");
    md_object d = {0};
    cm_buf v = {0};
    int bad = 0;

    ok(md__obj_encode(&v, &o) == 0, "encode object");
    ok(md__obj_decode(cm_buf_slice(&v), true, &d) == 0, "decode object");
    ok(d.size == 12345 && d.mtime_ms == 1700000000123 && cm_slice_eq(d.etag, o.etag) &&
           d.nhdrs == 2 && cm_slice_eq_str(d.hdrs[1].value, "b") &&
           cm_slice_eq_str(d.inline_data, "inline!") && cm_slice_eq_str(d.layout, "LAYOUT"),
       "fields round-trip");
    cm_slice ct;
    ok(md_object_hdr(&d, "content-type", &ct) == 0 && cm_slice_eq_str(ct, "text/plain"),
       "md_object_hdr finds a header");
    is_int(md_object_hdr(&d, "etag", &ct), CM_ENOTFOUND, "md_object_hdr: absent header");
    md_object_clear(&d);
    for (size_t i = 0; i < v.n; i++) {
        if (md__obj_decode(CM_SLICE(v.p, i), true, &d) != CM_ECORRUPT)
            bad++;
        md_object_clear(&d);
    }
    is_int(bad, 0, "every truncation of a record is CM_ECORRUPT");
    v.p[0] = 9;
    is_int(md__obj_decode(cm_buf_slice(&v), false, &d), CM_ECORRUPT, "unknown version");
    /* A header count far beyond the bytes must not allocate or crash. */
    uint8_t evil[] = {1, 0, 0, 0, 0, 0, 0, 0, 0,    0,    0,    0,   0,
                      0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff};
    is_int(md__obj_decode(CM_SLICE(evil, sizeof evil), true, &d), CM_ECORRUPT,
           "absurd header count");
    /* Random bytes: decode returns, never crashes (ASan watches). */
    srand(7);
    for (int i = 0; i < 2000; i++) {
        uint8_t junk[64];
        size_t n = (size_t)(rand() % 64);
        for (size_t j = 0; j < n; j++)
            junk[j] = (uint8_t)rand();
        if (n)
            junk[0] = 1;
        if (md__obj_decode(CM_SLICE(junk, n), true, &d) == 0)
            md_object_clear(&d);
    }
    ok(1, "random bytes decode without crashing");

    md_bucket bk = {0}, bo;
    snprintf(bk.region, sizeof bk.region, "eu-west-1");
    bk.ctime_ms = -5;
    md__bucket_encode(&v, &bk);
    ok(md__bucket_decode(CM_SLICE("bkt", 3), cm_buf_slice(&v), &bo) == 0 &&
           !strcmp(bo.name, "bkt") && !strcmp(bo.region, "eu-west-1") && bo.ctime_ms == -5,
       "bucket record round-trips");
    is_int(md__bucket_decode(CM_SLICE("bkt", 3), CM_SLICE(v.p, v.n - 1), &bo), CM_ECORRUPT,
           "truncated bucket record");
    cm_buf_free(&v);
}

/* ---------------------------------------------------------------- buckets */
static md_db_t *test_buckets(md_db_t *db)
{
    md_bucket b, *all = NULL;
    size_t n = 0;

    is_int(mkbucket(db, "zeta"), 0, "create bucket zeta");
    is_int(mkbucket(db, "alpha"), 0, "create bucket alpha");
    is_int(mkbucket(db, "alpha"), CM_EEXISTS, "create existing bucket: CM_EEXISTS");
    is_int(md_bucket_get(db, "alpha", &b), 0, "get bucket");
    ok(!strcmp(b.name, "alpha") && !strcmp(b.region, "us-east-1") && b.ctime_ms == 42,
       "bucket fields");
    is_int(md_bucket_get(db, "nope", &b), CM_ENOTFOUND, "get missing bucket");
    is_int(md_bucket_list(db, &all, &n), 0, "list buckets");
    ok(n == 2 && !strcmp(all[0].name, "alpha") && !strcmp(all[1].name, "zeta"),
       "buckets in name order");
    free(all);
    is_int(put(db, "nope", "k", NULL), CM_ENOTFOUND, "put into missing bucket: CM_ENOTFOUND");

    /* "a" holds an object; "a-b" must still delete (no cross-bucket leak). */
    mkbucket(db, "a");
    mkbucket(db, "a-b");
    is_int(put(db, "a", "x", NULL), 0, "put a/x");
    is_int(md_bucket_delete(db, "a"), CM_ENOTEMPTY, "delete bucket with object: CM_ENOTEMPTY");
    is_int(md_bucket_delete(db, "a-b"), 0, "delete empty bucket a-b beside a");
    is_int(md_object_delete(db, "a", CM_SLICE_STR("x"), NULL, NULL), 0, "delete a/x");
    is_int(md_upload_create(db, "a", CM_SLICE_STR("up"), CM_SLICE_STR("U1"), NULL), 0,
           "create upload in a");
    is_int(md_bucket_delete(db, "a"), CM_ENOTEMPTY, "delete bucket with upload: CM_ENOTEMPTY");
    is_int(md_upload_abort(db, "a", CM_SLICE_STR("up"), CM_SLICE_STR("U1")), 0, "abort upload");
    is_int(md_bucket_delete(db, "a"), 0, "delete bucket a once empty");
    is_int(md_bucket_get(db, "a", &b), CM_ENOTFOUND, "deleted bucket is gone");
    is_int(md_bucket_delete(db, "a"), CM_ENOTFOUND, "delete missing bucket: CM_ENOTFOUND");

    /* Object writes answer "does the bucket exist" from memory once they
     * found it: a deleted bucket must not be answered so, nor another
     * bucket that shares its lock stripe. */
    mkbucket(db, "gone");
    is_int(put(db, "gone", "k", NULL), 0, "put gone/k (the bucket is now known)");
    is_int(md_object_delete(db, "gone", CM_SLICE_STR("k"), NULL, NULL), 0, "delete gone/k");
    is_int(md_bucket_delete(db, "gone"), 0, "delete bucket gone");
    is_int(put(db, "gone", "k", NULL), CM_ENOTFOUND, "put into the deleted bucket: CM_ENOTFOUND");
    is_int(md_upload_create(db, "gone", CM_SLICE_STR("up"), CM_SLICE_STR("U2"), NULL),
           CM_ENOTFOUND, "upload into the deleted bucket: CM_ENOTFOUND");
    char twin[16] = "";
    for (int i = 0; i < 10000 && !twin[0]; i++) {
        char name[16];
        snprintf(name, sizeof name, "twin%d", i);
        if (md__bucket_lock(db, name) == md__bucket_lock(db, "alpha"))
            snprintf(twin, sizeof twin, "%s", name);
    }
    ok(twin[0] != 0, "a bucket name on alpha's lock stripe: %s", twin);
    is_int(put(db, "alpha", "k", NULL), 0, "put alpha/k (alpha is now known)");
    is_int(put(db, twin, "k", NULL), CM_ENOTFOUND, "put into %s (never created): CM_ENOTFOUND",
           twin);
    mkbucket(db, "gone");
    is_int(put(db, "gone", "k", NULL), 0, "put into gone once created again");
    is_int(md_object_delete(db, "gone", CM_SLICE_STR("k"), NULL, NULL), 0, "delete gone/k");
    is_int(md_object_delete(db, "alpha", CM_SLICE_STR("k"), NULL, NULL), 0, "delete alpha/k");
    is_int(md_bucket_delete(db, "gone"), 0, "delete bucket gone again");
    return db;
}

/* ---------------------------------------------------------------- objects */
static int precond_none_match(void *arg, const md_object *cur)
{
    (void)arg;
    return cur ? CM_EPRECOND : 0;
}

static int precond_seen;
static int precond_fail(void *arg, const md_object *cur)
{
    precond_seen = cur ? 2 : 1;
    return *(int *)arg;
}

static md_db_t *test_objects(md_db_t *db)
{
    md_object o = mkobj("00000000000000000000000000000001", 100, "L1", NULL), g;
    uint64_t i1, i2, i3, i4;
    size_t n;

    mkbucket(db, "obj");
    rl_reset();
    is_int(md_object_put(db, "obj", CM_SLICE_STR("k"), &o, 0, NULL, NULL), 0, "put k (L1)");
    is_int(md_object_get(db, "obj", CM_SLICE_STR("k"), &g), 0, "get k");
    ok(g.size == 100 && cm_slice_eq_str(g.layout, "L1") && g.nhdrs == 2 &&
           cm_slice_eq_str(g.hdrs[0].name, "content-type") && g.inline_data.n == 0,
       "k reads back");
    md_object_clear(&g);
    is_int(rl.n, 0, "no reclaim on first put");

    o.layout = CM_SLICE_STR("L2");
    is_int(md_object_put(db, "obj", CM_SLICE_STR("k"), &o, 0, NULL, NULL), 0, "overwrite (L2)");
    ok(rl.n == 1 && rl_count("L1") == 1, "old layout L1 reclaimed exactly once");
    is_int(md_object_put(db, "obj", CM_SLICE_STR("k"), &o, 0, NULL, NULL), 0,
           "rewrite with the same layout");
    is_int(rl.n, 1, "same layout is not garbage");

    int code = CM_EPRECOND;
    md_object o3 = mkobj("00000000000000000000000000000003", 1, "L3", NULL);
    is_int(md_intent_add(db, CM_SLICE_STR("I-L3"), &i1), 0, "intent added");
    ok(i1 > 0, "intent id > 0");
    precond_seen = 0;
    is_int(md_object_put(db, "obj", CM_SLICE_STR("k"), &o3, i1, precond_fail, &code), CM_EPRECOND,
           "precond abort returns its code");
    is_int(precond_seen, 2, "precond saw the current record");
    md_object_get(db, "obj", CM_SLICE_STR("k"), &g);
    ok(cm_slice_eq_str(g.layout, "L2") && g.size == 100, "precond abort changed nothing");
    md_object_clear(&g);
    is_int(rl.n, 1, "precond abort reclaimed nothing");
    is_int(md_object_put(db, "obj", CM_SLICE_STR("new"), &o3, 0, precond_none_match, NULL), 0,
           "If-None-Match put of a new key");
    is_int(md_object_put(db, "obj", CM_SLICE_STR("new"), &o3, 0, precond_none_match, NULL),
           CM_EPRECOND, "If-None-Match put of an existing key");
    is_int(rl.n, 1, "still nothing reclaimed");

    /* Delete: precond sees NULL for absent keys first. */
    code = 0;
    precond_seen = 0;
    is_int(md_object_delete(db, "obj", CM_SLICE_STR("absent"), precond_fail, &code), CM_ENOTFOUND,
           "delete absent key: CM_ENOTFOUND");
    is_int(precond_seen, 1, "precond saw NULL");
    is_int(md_object_delete(db, "obj", CM_SLICE_STR("k"), NULL, NULL), 0, "delete k");
    ok(rl.n == 2 && rl_count("L2") == 1, "deleted object's layout L2 reclaimed once");
    is_int(md_object_get(db, "obj", CM_SLICE_STR("k"), &g), CM_ENOTFOUND, "k is gone");
    is_int(md_object_delete(db, "obj", CM_SLICE_STR("new"), NULL, NULL), 0, "delete new");
    is_int(rl_count("L3"), 1, "L3 reclaimed");

    /* Inline objects produce no garbage. */
    rl_reset();
    put(db, "obj", "inl", NULL);
    put(db, "obj", "inl", NULL);
    md_object_get(db, "obj", CM_SLICE_STR("inl"), &g);
    ok(cm_slice_eq_str(g.inline_data, "abc") && g.layout.n == 0, "inline data reads back");
    md_object_clear(&g);
    md_object_delete(db, "obj", CM_SLICE_STR("inl"), NULL, NULL);
    is_int(rl.n, 0, "inline overwrite/delete reclaims nothing");

    /* Key limits. */
    static uint8_t big[MD_KEY_MAX + 1];
    memset(big, 0xff, sizeof big);
    is_int(md_object_put(db, "obj", CM_SLICE(big, MD_KEY_MAX), &o, 0, NULL, NULL), 0,
           "1024-byte key");
    is_int(md_object_put(db, "obj", CM_SLICE(big, MD_KEY_MAX + 1), &o, 0, NULL, NULL), CM_EINVAL,
           "1025-byte key: CM_EINVAL");
    is_int(md_object_put(db, "obj", CM_SLICE_NULL, &o, 0, NULL, NULL), CM_EINVAL,
           "empty key: CM_EINVAL");
    md_object_delete(db, "obj", CM_SLICE(big, MD_KEY_MAX), NULL, NULL);

    /* Intents: i1 still pending (the aborted put); i2 committed with a put;
     * i3 dropped; i4 pending. A failing reclaim leaves garbage for recovery. */
    rl_reset();
    md_intent_add(db, CM_SLICE_STR("I-2"), &i2);
    md_intent_add(db, CM_SLICE_STR("I-3"), &i3);
    md_intent_add(db, CM_SLICE_STR("I-4"), &i4);
    ok(i1 < i2 && i2 < i3 && i3 < i4, "intent ids increase");
    o = mkobj("00000000000000000000000000000002", 5, "I-2", NULL);
    is_int(md_object_put(db, "obj", CM_SLICE_STR("withintent"), &o, i2, NULL, NULL), 0,
           "put drops intent i2");
    is_int(md_intent_drop(db, i3), 0, "drop intent i3");
    ok(rl.n == 1 && rl_count("I-3") == 1, "dropped intent reclaimed");
    is_int(md_intent_drop(db, i3), CM_ENOTFOUND, "drop again: CM_ENOTFOUND");
    rl.fail = 1;
    int lvl = cm_log_level;
    cm_log_level = CM_LOG_ERROR; /* the failing reclaim warns; expected */
    o.layout = CM_SLICE_STR("G-kept");
    md_object_put(db, "obj", CM_SLICE_STR("gk"), &o, 0, NULL, NULL);
    o.layout = CM_SLICE_STR("G-new");
    is_int(md_object_put(db, "obj", CM_SLICE_STR("gk"), &o, 0, NULL, NULL), 0,
           "put succeeds although reclaim fails");
    rl.fail = 0;
    cm_log_level = lvl;

    db = reopen(db);
    ok(db != NULL, "reopen");
    rl_reset();
    rl.fail = 1;
    cm_log_level = CM_LOG_ERROR;
    is_int(md_recover(db, &n), 0, "md_recover with a failing reclaim is not an error");
    is_int(n, 0, "... and reclaims nothing");
    rl.fail = 0;
    cm_log_level = lvl;
    is_int(md_recover(db, &n), 0, "md_recover");
    is_int(n, 3, "recovered 3 layouts");
    ok(rl_count("I-L3") == 1 && rl_count("I-4") == 1 && rl_count("G-kept") == 1 &&
           rl_count("I-2") == 0,
       "pending intents and kept garbage reclaimed; committed one not");
    rl_reset();
    is_int(md_recover(db, &n), 0, "md_recover again");
    is_int(n, 0, "nothing left to recover");
    uint64_t i5;
    md_intent_add(db, CM_SLICE_STR("I-5"), &i5);
    ok(i5 > i4, "ids stay unique across a restart");
    md_intent_drop(db, i5);

    /* While serving: md_gc retries garbage, and intents only below the
     * mark (earlier runs); an intent whose drop could not reclaim becomes
     * garbage, so md_gc retries it too. */
    uint64_t mark = md_seq_mark(db), i6, i7;
    size_t done = 0, left = 0;
    md_intent_add(db, CM_SLICE_STR("I-6"), &i6);
    md_intent_add(db, CM_SLICE_STR("I-7"), &i7);
    ok(i6 >= mark, "intents after the mark have ids >= it");
    rl_reset();
    rl.fail = 1;
    cm_log_level = CM_LOG_ERROR;
    is_int(md_intent_drop(db, i6), CM_EIO, "drop with a failing reclaim reports it");
    is_int(md_gc(db, mark, &done, &left), 0, "md_gc with a failing reclaim is not an error");
    ok(done == 0 && left == 1, "... keeps the failed drop as garbage (and skips I-7)");
    rl.fail = 0;
    cm_log_level = lvl;
    is_int(md_gc(db, mark, &done, &left), 0, "md_gc");
    ok(done == 1 && left == 0 && rl_count("I-6") == 1 && rl_count("I-7") == 0,
       "the failed drop is reclaimed; the running intent I-7 is not");
    is_int(md_intent_drop(db, i6), CM_ENOTFOUND, "the failed drop left no intent behind");
    rl_reset();
    md_intent_drop(db, i7);
    ok(rl_count("I-7") == 1, "I-7 dropped normally");
    rl_reset();
    md_object_get(db, "obj", CM_SLICE_STR("withintent"), &g);
    ok(cm_slice_eq_str(g.layout, "I-2"), "object survives reopen");
    md_object_clear(&g);
    return db;
}

/* ---------------------------------------------------------------- listing */
static void test_list(md_db_t *db)
{
    const char *keys[] = {"a", "b/1", "b/2", "b/c/3", "c", "d/1", "d/2", "e"};
    md_list_req q;
    md_list_res r;

    mkbucket(db, "lst");
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        put(db, "lst", keys[i], NULL);

    is_str(list(db, "lst", "", "", "", 1000), "a,b/1,b/2,b/c/3,c,d/1,d/2,e", "list all");
    is_str(list(db, "lst", "b/", "", "", 1000), "b/1,b/2,b/c/3", "prefix b/");
    is_str(list(db, "lst", "", "/", "", 1000), "a,b/,c,d/,e", "delimiter /");
    is_str(list(db, "lst", "b/", "/", "", 1000), "b/1,b/2,b/c/", "prefix b/ delimiter /");
    is_str(list(db, "lst", "", "/", "b/1", 1000), "c,d/,e", "start_after inside b/ skips it");
    is_str(list(db, "lst", "", "/", "b/", 1000), "c,d/,e", "start_after == b/ skips it");
    is_str(list(db, "lst", "", "/", "b", 1000), "b/,c,d/,e", "start_after b keeps b/");
    is_str(list(db, "lst", "", "", "b/2", 1000), "b/c/3,c,d/1,d/2,e", "start_after b/2");
    is_str(list(db, "lst", "b/", "", "a", 1000), "b/1,b/2,b/c/3", "start_after before prefix");
    is_str(list(db, "lst", "b/", "", "c", 1000), "", "start_after beyond prefix");
    is_str(list(db, "lst", "", "/", "", 2), "a,b/|", "max_keys 2 counts keys and prefixes");
    is_str(list(db, "lst", "", "/", "", 5), "a,b/,c,d/,e", "exactly max_keys: not truncated");
    is_str(list(db, "lst", "", "/", "", 1), "a|", "max_keys 1");
    is_str(list(db, "lst", "", "/", "d/", 1), "e", "last page not truncated");
    is_str(list(db, "lst", "zz", "", "", 10), "", "no match");
    is_str(list(db, "lst", "", "c/", "", 10), "a,b/1,b/2,b/c/,c,d/1,d/2,e", "multi-byte delimiter");
    is_str(list(db, "lst", "", "/", "", 0), "", "max_keys 0: nothing, not truncated");

    /* Pagination by max_keys=1 and 2 returns every entry exactly once. */
    const char *want[2] = {"a,b/,c,d/,e", "a,b/1,b/2,b/c/3,c,d/1,d/2,e"};
    for (int d = 0; d < 2; d++) {
        for (size_t page = 1; page <= 2; page++) {
            char acc[512] = "", after[64] = "";
            int pages = 0, ok_trunc = 1;
            for (;;) {
                q = (md_list_req){"lst", CM_SLICE_NULL, d ? CM_SLICE_NULL : CM_SLICE_STR("/"),
                                  CM_SLICE_STR(after), page};
                if (md_object_list(db, &q, &r))
                    break;
                for (size_t i = 0; i < r.n; i++)
                    snprintf(acc + strlen(acc), sizeof acc - strlen(acc), "%s%.*s", *acc ? "," : "",
                             (int)r.a[i].key.n, (const char *)r.a[i].key.p);
                pages++;
                if (r.n)
                    snprintf(after, sizeof after, "%.*s", (int)r.a[r.n - 1].key.n,
                             (const char *)r.a[r.n - 1].key.p);
                bool t = r.truncated;
                if (t && r.n != page)
                    ok_trunc = 0;
                md_list_res_free(&r);
                if (!t || pages > 20)
                    break;
            }
            is_str(acc, want[d], "paged by %zu (%s): every entry once", page,
                   d ? "no delimiter" : "delimiter /");
            ok(ok_trunc, "truncated only on full pages");
        }
    }

    /* Entries carry metadata, no inline data. */
    q = (md_list_req){"lst", CM_SLICE_STR("a"), CM_SLICE_NULL, CM_SLICE_NULL, 10};
    md_object_list(db, &q, &r);
    ok(r.n == 1 && !r.a[0].is_prefix && r.a[0].obj.size == 3 &&
           cm_slice_eq_str(r.a[0].obj.etag, "d41d8cd98f00b204e9800998ecf8427e") &&
           r.a[0].obj.nhdrs == 2 && cm_slice_eq_str(r.a[0].obj.hdrs[1].name, "x-amz-meta-a") &&
           r.a[0].obj.inline_data.n == 0 && r.a[0].obj.mtime_ms == 1700000000123,
       "entry has size, mtime, etag and hdrs, no inline data");
    md_list_res_free(&r);
    q = (md_list_req){"none", CM_SLICE_NULL, CM_SLICE_NULL, CM_SLICE_NULL, 10};
    is_int(md_object_list(db, &q, &r), CM_ENOTFOUND, "list missing bucket: CM_ENOTFOUND");

    /* Binary keys and 0xff delimiters: the successor must carry. */
    mkbucket(db, "bin");
    md_object o = mkobj("e", 1, NULL, "x");
    const cm_slice bk[] = {CM_SLICE("p\3771", 3),    CM_SLICE("p\377\3772", 4),
                           CM_SLICE("p\xff\xff", 3), CM_SLICE("q", 1),
                           CM_SLICE("\xff\xff", 2),  CM_SLICE("\x00", 1),
                           CM_SLICE("\x00\xff", 2)};
    for (size_t i = 0; i < sizeof bk / sizeof bk[0]; i++)
        md_object_put(db, "bin", bk[i], &o, 0, NULL, NULL);
    q = (md_list_req){"bin", CM_SLICE_NULL, CM_SLICE("\xff", 1), CM_SLICE_NULL, 100};
    md_object_list(db, &q, &r);
    ok(r.n == 5 && cm_slice_eq(r.a[0].key, CM_SLICE("\x00", 1)) && !r.a[0].is_prefix &&
           cm_slice_eq(r.a[1].key, CM_SLICE("\x00\xff", 2)) && r.a[1].is_prefix &&
           cm_slice_eq(r.a[2].key, CM_SLICE("p\xff", 2)) && r.a[2].is_prefix &&
           cm_slice_eq(r.a[3].key, CM_SLICE("q", 1)) && !r.a[3].is_prefix &&
           cm_slice_eq(r.a[4].key, CM_SLICE("\xff", 1)) && r.a[4].is_prefix && !r.truncated,
       "0xff delimiter: key \\0, prefixes \\0\\xff and p\\xff, key q, prefix \\xff");
    md_list_res_free(&r);
    q.delimiter = CM_SLICE_NULL;
    md_object_list(db, &q, &r);
    bool sorted = r.n == 7;
    for (size_t i = 1; i < r.n; i++)
        sorted = sorted && cm_slice_cmp(r.a[i - 1].key, r.a[i].key) < 0;
    ok(sorted, "binary keys list in byte order");
    md_list_res_free(&r);
}

/* Listing one page must not iterate keys rolled into a common prefix or
 * outside the prefix: counted by the iterator step counter. */
static void test_list_seeks(md_db_t *db)
{
    struct md__batch *b;
    cm_buf k = {0}, v = {0};
    md_object o = mkobj("0123456789abcdef0123456789abcdef", 10, NULL, "0123456789");
    char name[32];
    uint64_t s0;
    int rc = 0;

    mkbucket(db, "big");
    md__obj_encode(&v, &o);
    for (int i = 0; i < 200000 && rc == 0; i += 10000) {
        b = md__batch_new();
        for (int j = i; j < i + 10000; j++) {
            snprintf(name, sizeof name, "m/%07d", j);
            md__key_object(&k, "big", CM_SLICE_STR(name));
            md__batch_put(b, cm_buf_slice(&k), cm_buf_slice(&v));
        }
        rc = md__batch_commit(db, b, false);
        md__batch_free(b);
    }
    is_int(rc, 0, "loaded 200000 keys under m/");
    put(db, "big", "a/1", NULL);
    put(db, "big", "a/2", NULL);
    put(db, "big", "n/1", NULL);
    put(db, "big", "z", NULL);

    s0 = md__nsteps(db);
    is_str(list(db, "big", "", "/", "", 1000), "a/,m/,n/,z", "delimiter over 200k keys");
    ok(md__nsteps(db) - s0 < 20, "rolled-up keys not iterated (%llu steps)",
       (unsigned long long)(md__nsteps(db) - s0));
    s0 = md__nsteps(db);
    is_str(list(db, "big", "n/", "", "", 1000), "n/1", "prefix n/ after 200k keys");
    ok(md__nsteps(db) - s0 < 10, "other prefix ranges not iterated (%llu steps)",
       (unsigned long long)(md__nsteps(db) - s0));
    s0 = md__nsteps(db);
    is_str(list(db, "big", "", "/", "m/0000005", 1000), "n/,z", "start_after inside m/");
    ok(md__nsteps(db) - s0 < 10, "start_after inside a prefix: skipped by seek (%llu steps)",
       (unsigned long long)(md__nsteps(db) - s0));
    s0 = md__nsteps(db);
    is_str(list(db, "big", "m/", "", "m/0150000", 3), "m/0150001,m/0150002,m/0150003|",
           "a page in the middle of 200k keys");
    ok(md__nsteps(db) - s0 < 10, "page costs a seek and a few steps (%llu steps)",
       (unsigned long long)(md__nsteps(db) - s0));
    s0 = md__nsteps(db);
    is_int(md_bucket_delete(db, "big"), CM_ENOTEMPTY, "delete big bucket: CM_ENOTEMPTY");
    ok(md__nsteps(db) - s0 < 5, "emptiness check seeks");
    cm_buf_free(&k);
    cm_buf_free(&v);
}

/* -------------------------------------------------------------- multipart */
static md_part mkpart(uint32_t num, const char *layout)
{
    md_part p = {0};
    p.num = num;
    p.size = 5u << 20;
    p.mtime_ms = 77;
    p.etag = CM_SLICE_STR("0123456789abcdef0123456789abcdef");
    p.cksum = CM_SLICE_STR("crc32c:AAAAAA==");
    p.layout = CM_SLICE_STR(layout);
    return p;
}

static md_db_t *test_multipart(md_db_t *db)
{
    cm_slice key = CM_SLICE_STR("mp"), id = CM_SLICE_STR("UP-1");
    md_object tmpl = mkobj("", 0, NULL, NULL), g;
    md_upload u;
    md_part p, *parts;
    size_t n;
    bool trunc;
    uint64_t intent;

    mkbucket(db, "mpb");
    rl_reset();
    is_int(md_upload_create(db, "nob", key, id, &tmpl), CM_ENOTFOUND, "upload in missing bucket");
    is_int(md_upload_create(db, "mpb", key, id, &tmpl), 0, "create upload");
    is_int(md_upload_create(db, "mpb", key, id, &tmpl), CM_EEXISTS, "create twice: CM_EEXISTS");
    is_int(md_upload_get(db, "mpb", key, id, &u), 0, "get upload");
    ok(cm_slice_eq_str(u.key, "mp") && cm_slice_eq_str(u.upload_id, "UP-1") && u.tmpl.nhdrs == 2 &&
           cm_slice_eq_str(u.tmpl.hdrs[0].value, "text/plain") && u.ctime_ms > 0,
       "upload fields");
    md_upload_clear(&u);

    md_intent_add(db, CM_SLICE_STR("P1"), &intent);
    p = mkpart(1, "P1");
    is_int(md_part_put(db, "mpb", key, id, &p, intent), 0, "part 1");
    p = mkpart(2, "P2");
    is_int(md_part_put(db, "mpb", key, id, &p, 0), 0, "part 2");
    p = mkpart(3, "P3");
    is_int(md_part_put(db, "mpb", key, id, &p, 0), 0, "part 3");
    p = mkpart(2, "P2b");
    is_int(md_part_put(db, "mpb", key, id, &p, 0), 0, "replace part 2");
    ok(rl.n == 1 && rl_count("P2") == 1, "replaced part's layout reclaimed once");
    is_int(md_part_put(db, "mpb", key, CM_SLICE_STR("UP-X"), &p, 0), CM_ENOTFOUND,
           "part of missing upload: CM_ENOTFOUND");
    p = mkpart(0, "P0");
    is_int(md_part_put(db, "mpb", key, id, &p, 0), CM_EINVAL, "part 0: CM_EINVAL");

    is_int(md_part_list(db, "mpb", key, id, 0, 2, &parts, &n, &trunc), 0, "list parts");
    ok(n == 2 && trunc && parts[0].num == 1 && parts[1].num == 2 &&
           cm_slice_eq_str(parts[1].layout, "P2b") && parts[1].size == 5u << 20 &&
           cm_slice_eq_str(parts[0].cksum, "crc32c:AAAAAA==") && parts[0].mtime_ms == 77,
       "parts 1, 2 (truncated)");
    free(parts);
    is_int(md_part_list(db, "mpb", key, id, 2, 2, &parts, &n, &trunc), 0, "list parts after 2");
    ok(n == 1 && !trunc && parts[0].num == 3, "part 3, not truncated");
    free(parts);
    is_int(md_part_list(db, "mpb", key, CM_SLICE_STR("UP-X"), 0, 10, &parts, &n, &trunc),
           CM_ENOTFOUND, "parts of missing upload");

    /* A replaced object and the unused part 3 become garbage. */
    md_object old = mkobj("1", 1, "OLD", NULL);
    md_object_put(db, "mpb", key, &old, 0, NULL, NULL);
    md_object fin = mkobj("0123456789abcdef0123456789abcdef-2", 10u << 20, "FINAL", NULL);
    uint32_t keep[] = {2, 1}, bad_keep[] = {1, 4};
    rl_reset();
    is_int(md_upload_complete(db, "mpb", key, id, &fin, bad_keep, 2, NULL, NULL), CM_EINVAL,
           "complete with a missing part: CM_EINVAL");
    int code = CM_EPRECOND;
    is_int(md_upload_complete(db, "mpb", key, id, &fin, keep, 2, precond_fail, &code), CM_EPRECOND,
           "complete with failing precond");
    ok(rl.n == 0 && md_upload_get(db, "mpb", key, id, &u) == 0, "failed completes change nothing");
    md_upload_clear(&u);
    is_int(md_upload_complete(db, "mpb", key, id, &fin, keep, 2, NULL, NULL), 0, "complete");
    ok(rl.n == 2 && rl_count("P3") == 1 && rl_count("OLD") == 1,
       "unused part and replaced object reclaimed");
    md_object_get(db, "mpb", key, &g);
    ok(cm_slice_eq_str(g.layout, "FINAL") && g.size == 10u << 20, "completed object");
    md_object_clear(&g);
    is_int(md_upload_get(db, "mpb", key, id, &u), CM_ENOTFOUND, "upload gone");
    is_int(md_part_list(db, "mpb", key, id, 0, 10, &parts, &n, &trunc), CM_ENOTFOUND, "parts gone");
    is_int(md_upload_complete(db, "mpb", key, id, &fin, keep, 2, NULL, NULL), CM_ENOTFOUND,
           "complete again: CM_ENOTFOUND");

    /* Abort. */
    rl_reset();
    cm_slice id2 = CM_SLICE_STR("UP-2");
    md_upload_create(db, "mpb", key, id2, NULL);
    p = mkpart(1, "A1");
    md_part_put(db, "mpb", key, id2, &p, 0);
    p = mkpart(9, "A9");
    md_part_put(db, "mpb", key, id2, &p, 0);
    is_int(md_upload_abort(db, "mpb", key, id2), 0, "abort");
    ok(rl.n == 2 && rl_count("A1") == 1 && rl_count("A9") == 1, "aborted parts reclaimed");
    is_int(md_upload_abort(db, "mpb", key, id2), CM_ENOTFOUND, "abort again: CM_ENOTFOUND");

    /* Upload listing. */
    mkbucket(db, "ul");
    const char *uk[][2] = {{"x/1", "i1"}, {"x/1", "i2"}, {"x/2", "i1"}, {"y", "i1"}, {"k", "i1"}};
    for (size_t i = 0; i < sizeof uk / sizeof uk[0]; i++)
        md_upload_create(db, "ul", CM_SLICE_STR(uk[i][0]), CM_SLICE_STR(uk[i][1]), NULL);
    md_upload_create(db, "ul", CM_SLICE("k\x00z", 3), CM_SLICE_STR("i1"), NULL);
    md_upload_create(db, "ul", CM_SLICE("k\x01", 2), CM_SLICE_STR("i1"), NULL);
    md_upload_create(db, "ul", CM_SLICE("k\x00", 2), CM_SLICE_STR("i1"), NULL);

    md_upload_list_res r;
    char s[512];
#define RENDER_U(r)                                                                                \
    do {                                                                                           \
        s[0] = 0;                                                                                  \
        for (size_t i_ = 0; i_ < (r).n; i_++)                                                      \
            for (size_t j_ = 0; j_ < (r).a[i_].key.n; j_++) {                                      \
                uint8_t c_ = (r).a[i_].key.p[j_];                                                  \
                snprintf(s + strlen(s), sizeof s - strlen(s), c_ < 32 ? "\\%d" : "%c", c_);        \
                if (j_ + 1 == (r).a[i_].key.n)                                                     \
                    snprintf(s + strlen(s), sizeof s - strlen(s), ":%.*s,",                        \
                             (int)(r).a[i_].upload_id.n, (const char *)(r).a[i_].upload_id.p);     \
            }                                                                                      \
        for (size_t i_ = 0; i_ < (r).nprefixes; i_++)                                              \
            snprintf(s + strlen(s), sizeof s - strlen(s), "[%.*s]", (int)(r).prefixes[i_].n,       \
                     (const char *)(r).prefixes[i_].p);                                            \
        if ((r).truncated)                                                                         \
            snprintf(s + strlen(s), sizeof s - strlen(s), "|");                                    \
    } while (0)

    md_upload_list(db, "ul", CM_SLICE_NULL, CM_SLICE_NULL, CM_SLICE_NULL, CM_SLICE_NULL, 100, &r);
    RENDER_U(r);
    is_str(s, "k:i1,k\\0:i1,k\\0z:i1,k\\1:i1,x/1:i1,x/1:i2,x/2:i1,y:i1,",
           "uploads in (key, id) order, binary keys too");
    ok(r.n && r.a[0].tmpl.nhdrs == 0, "upload entries carry tmpl");
    md_upload_list_res_free(&r);
    md_upload_list(db, "ul", CM_SLICE_NULL, CM_SLICE_STR("/"), CM_SLICE_NULL, CM_SLICE_NULL, 100,
                   &r);
    RENDER_U(r);
    is_str(s, "k:i1,k\\0:i1,k\\0z:i1,k\\1:i1,y:i1,[x/]", "uploads with delimiter");
    md_upload_list_res_free(&r);
    md_upload_list(db, "ul", CM_SLICE_STR("x/"), CM_SLICE_NULL, CM_SLICE_STR("x/1"), CM_SLICE_NULL,
                   100, &r);
    RENDER_U(r);
    is_str(s, "x/2:i1,", "key_marker alone: keys after it");
    md_upload_list_res_free(&r);
    md_upload_list(db, "ul", CM_SLICE_STR("x/"), CM_SLICE_NULL, CM_SLICE_STR("x/1"),
                   CM_SLICE_STR("i1"), 100, &r);
    RENDER_U(r);
    is_str(s, "x/1:i2,x/2:i1,", "key_marker + upload_id_marker");
    md_upload_list_res_free(&r);
    md_upload_list(db, "ul", CM_SLICE_NULL, CM_SLICE_STR("/"), CM_SLICE_STR("x/1"),
                   CM_SLICE_STR("i1"), 100, &r);
    RENDER_U(r);
    is_str(s, "y:i1,", "key_marker inside a common prefix skips it");
    md_upload_list_res_free(&r);
    md_upload_list(db, "ul", CM_SLICE_NULL, CM_SLICE_NULL, CM_SLICE("k\x00", 2), CM_SLICE_NULL, 2,
                   &r);
    RENDER_U(r);
    is_str(s, "k\\0z:i1,k\\1:i1,|", "binary key_marker, max 2, truncated");
    md_upload_list_res_free(&r);
    return db;
}

/* -------------------------------------------------------------- threads */
#define NTHREADS 16
#define NPUTS 150

static md_db_t *g_db;
static int g_won;

static void *put_thread(void *arg)
{
    long t = (long)arg;
    char key[32];
    md_object o = mkobj("0123456789abcdef0123456789abcdef", 100, NULL,
                        "small object body, inline in the metadata record");
    for (int i = 0; i < NPUTS; i++) {
        snprintf(key, sizeof key, "t%02ld/%04d", t, i);
        if (md_object_put(g_db, "conc", CM_SLICE_STR(key), &o, 0, NULL, NULL))
            return (void *)1;
    }
    if (md_object_put(g_db, "conc", CM_SLICE_STR("race"), &o, 0, precond_none_match, NULL) == 0)
        __atomic_fetch_add(&g_won, 1, __ATOMIC_RELAXED);
    return NULL;
}

static void test_threads(md_db_t *db)
{
    pthread_t th[NTHREADS];
    uint64_t t0, t1;
    int fails = 0;

    mkbucket(db, "conc");
    g_db = db;
    t0 = cm_mono_ns();
    for (long i = 0; i < NTHREADS; i++)
        pthread_create(&th[i], NULL, put_thread, (void *)i);
    for (int i = 0; i < NTHREADS; i++) {
        void *rv;
        pthread_join(th[i], &rv);
        fails += rv != NULL;
    }
    t1 = cm_mono_ns();
    is_int(fails, 0, "%d threads x %d sync puts", NTHREADS, NPUTS);
    is_int(g_won, 1, "concurrent If-None-Match puts: exactly one wins");
    printf("# sync md_object_put, %d threads: %.0f ops/s\n", NTHREADS,
           (double)(NTHREADS * (NPUTS + 1)) * 1e9 / (double)(t1 - t0));
    md_list_req q = {"conc", CM_SLICE_NULL, CM_SLICE_NULL, CM_SLICE_NULL, 100000};
    md_list_res r;
    md_object_list(db, &q, &r);
    is_int(r.n, NTHREADS * NPUTS + 1, "every put is listed");
    md_list_res_free(&r);
}

/* --------------------------------------------------------- crash safety */
/* A child writes objects (intent, then put dropping it) until it is killed
 * with SIGKILL mid-stream; the store must reopen with every acknowledged
 * object intact and at most the one in-flight intent left to recover. Runs
 * first, before this process touches LevelDB (fork and LevelDB's background
 * thread do not mix). */
static void test_crash(void)
{
    char path[128], key[32], lay[32];
    md_db_t *db = NULL;
    int pipefd[2], st, bad = 0;
    uint32_t acked = 0;
    size_t n = 0;
    pid_t pid;

    snprintf(path, sizeof path, "%s/crash", g_dir);
    if (pipe(pipefd))
        return;
    pid = fork();
    if (pid == 0) {
        md_bucket b = {0};
        uint64_t id;
        close(pipefd[0]);
        if (md_open(path, &db))
            _exit(1);
        snprintf(b.name, sizeof b.name, "crash");
        md_bucket_create(db, &b);
        for (uint32_t i = 0;; i++) {
            snprintf(key, sizeof key, "c/%08u", i);
            snprintf(lay, sizeof lay, "C%u", i);
            md_object o = mkobj("e", i, lay, NULL);
            if (md_intent_add(db, CM_SLICE_STR(lay), &id) ||
                md_object_put(db, "crash", CM_SLICE_STR(key), &o, id, NULL, NULL))
                _exit(1);
            if (write(pipefd[1], &i, sizeof i) != sizeof i) /* acknowledged */
                _exit(1);
        }
    }
    close(pipefd[1]);
    while (acked < 200 && read(pipefd[0], &acked, sizeof acked) == sizeof acked)
        ;
    kill(pid, SIGKILL);
    while (read(pipefd[0], &acked, sizeof acked) == sizeof acked)
        ; /* the last acknowledgement the child wrote */
    waitpid(pid, &st, 0);
    close(pipefd[0]);
    ok(WIFSIGNALED(st) && acked >= 200, "writer killed mid-stream after %u puts", acked);

    is_int(md_open(path, &db), 0, "reopen after SIGKILL");
    if (!db)
        return;
    md_set_reclaim(db, rec_fn, NULL);
    rl_reset();
    is_int(md_recover(db, &n), 0, "recover after SIGKILL");
    ok(n <= 1, "at most the in-flight intent is left (%zu)", n);
    for (uint32_t i = 0; i <= acked; i++) {
        md_object o;
        snprintf(key, sizeof key, "c/%08u", i);
        snprintf(lay, sizeof lay, "C%u", i);
        if (md_object_get(db, "crash", CM_SLICE_STR(key), &o) || !cm_slice_eq_str(o.layout, lay) ||
            o.size != i)
            bad++;
        md_object_clear(&o);
    }
    is_int(bad, 0, "every acknowledged put survived");
    rl_reset();
    md_close(db);
}

/* ------------------------------------------------------- commit errors */
/* Failing group writes of the committer, made real beneath LevelDB rather
 * than through a seam. LevelDB (1.23) appends each group to its log with
 * write(2) on one descriptor and then fdatasync(2)s it; the test finds that
 * descriptor in /proc/self/fd and points it elsewhere with dup2():
 *  - a pipe whose buffer is full stalls the committer inside a write, so
 *    later writers queue up behind it (a relay then copies the stalled
 *    bytes into the real log, so that write lands where LevelDB put it);
 *  - a read-only descriptor of the same log fails write(2) with EBADF while
 *    fdatasync(2) still succeeds;
 *  - /dev/full fails write(2) with ENOSPC, as a full disk does.
 * What must hold: every writer of a failed group gets an error; nothing
 * hangs; writes acknowledged before the failure survive a reopen; and the
 * store refuses writes until it is reopened (see committer_main). */

/* One raw sync write of key -> "v" through the committer. */
struct cw {
    md_db_t *db;
    char key[16];
    int rc;
    int done; /* atomic: rc is set */
};

static int raw_put(md_db_t *db, const char *key, size_t vlen, bool sync)
{
    static const char val[1024];
    struct md__batch *b = md__batch_new();
    int rc;

    if (!b)
        return CM_ENOMEM;
    md__batch_put(b, CM_SLICE_STR(key), CM_SLICE(val, vlen < sizeof val ? vlen : sizeof val));
    rc = md__batch_commit(db, b, sync);
    md__batch_free(b);
    return rc;
}

static void *commit_thread(void *arg)
{
    struct cw *w = arg;

    w->rc = raw_put(w->db, w->key, 1, true);
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Finds the one "*.log" file directly under dir that this process has open
 * (LevelDB's write-ahead log): its descriptor, or -1; its path in out. */
static int wal_fd(const char *dir, char *out, size_t n)
{
    char real[PATH_MAX], link[PATH_MAX + 1], p[300];
    struct dirent *e;
    DIR *d;
    int fd = -1, found = 0;
    size_t rn;

    if (!realpath(dir, real) || !(d = opendir("/proc/self/fd")))
        return -1;
    rn = strlen(real);
    while ((e = readdir(d)) != NULL) {
        snprintf(p, sizeof p, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(p, link, sizeof link - 1);
        if (len <= 0)
            continue;
        link[len] = 0;
        if ((size_t)len > rn + 5 && (size_t)len < n && !strncmp(link, real, rn) &&
            link[rn] == '/' && !strchr(link + rn + 1, '/') && !strcmp(link + len - 4, ".log")) {
            fd = atoi(e->d_name);
            memcpy(out, link, (size_t)len + 1);
            found++;
        }
    }
    closedir(d);
    return found == 1 ? fd : -1;
}

/* Waits (up to 10 s) until the committer has queued requests waiting and
 * has taken groups groups since open. */
static int wait_commit(md_db_t *db, size_t queued, uint64_t groups)
{
    for (int i = 0; i < 10000; i++) {
        size_t q;
        uint64_t g;
        md__commit_stats(db, &q, &g);
        if (q == queued && g == groups)
            return 1;
        usleep(1000);
    }
    return 0;
}

static md_db_t *commit_reopen(md_db_t *db, const char *path)
{
    md_db_t *n = NULL;
    md_close(db);
    return md_open(path, &n) ? NULL : n;
}

#define NQUEUED 7

static void test_commit_errors(void)
{
    char path[128], logpath[PATH_MAX], key[32], junk[4096] = {0}, buf[4096];
    struct cw x = {0}, w[NQUEUED];
    pthread_t tx, tw[NQUEUED];
    md_db_t *db = NULL;
    size_t q, filled = 0, skipped = 0;
    uint64_t g0;
    int p[2], logfd, saved, ro, all, relay_ok = 1, acked = 0, post[64] = {0};
    ssize_t r;

    snprintf(path, sizeof path, "%s/commit", g_dir);
    is_int(md_open(path, &db), 0, "commit errors: open a fresh store");
    if (!db)
        return;
    all = 1;
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "zpre%02d", i);
        all &= raw_put(db, key, 100, true) == 0;
    }
    ok(all, "commit errors: 20 sync writes before any fault");
    if ((logfd = wal_fd(path, logpath, sizeof logpath)) < 0 || pipe(p) != 0) {
        skip("LevelDB's log descriptor not found in /proc/self/fd");
        md_close(db);
        return;
    }
    alarm(120); /* a hang below kills the test rather than stalling make check */

    /* 1. The committer stalls in X's log write (a full pipe stands in for
     * the log), and NQUEUED writers queue behind it. */
    fcntl(p[1], F_SETFL, O_NONBLOCK);
    while ((r = write(p[1], junk, sizeof junk)) > 0)
        filled += (size_t)r;
    fcntl(p[1], F_SETFL, 0);
    saved = dup(logfd);
    dup2(p[1], logfd);
    close(p[1]);
    md__commit_stats(db, &q, &g0);
    x.db = db;
    snprintf(x.key, sizeof x.key, "zx");
    pthread_create(&tx, NULL, commit_thread, &x);
    ok(wait_commit(db, 0, g0 + 1), "commit errors: the committer takes X and stalls in its write");
    for (int i = 0; i < NQUEUED; i++) {
        w[i] = (struct cw){.db = db};
        snprintf(w[i].key, sizeof w[i].key, "zw%d", i);
        pthread_create(&tw[i], NULL, commit_thread, &w[i]);
    }
    ok(wait_commit(db, NQUEUED, g0 + 1) && !__atomic_load_n(&x.done, __ATOMIC_ACQUIRE),
       "commit errors: %d writers queue behind it", NQUEUED);

    /* 2. The log becomes read-only (write(2) fails, fdatasync(2) works),
     * then the relay lets X's write finish into the real log: X succeeds,
     * and the next group, all NQUEUED writers, fails in LevelDB. */
    ro = open(logpath, O_RDONLY | O_CLOEXEC);
    dup2(ro, logfd);
    close(ro);
    while ((r = read(p[0], buf, sizeof buf)) > 0) { /* EOF: X's write returned */
        size_t off = 0;
        if (skipped < filled) {
            off = filled - skipped < (size_t)r ? filled - skipped : (size_t)r;
            skipped += off;
        }
        if ((size_t)r > off && write(saved, buf + off, (size_t)r - off) != r - (ssize_t)off)
            relay_ok = 0;
    }
    close(p[0]);
    pthread_join(tx, NULL);
    all = 1;
    for (int i = 0; i < NQUEUED; i++) {
        pthread_join(tw[i], NULL);
        all &= w[i].rc == CM_EIO;
    }
    ok(relay_ok && x.rc == 0, "commit errors: X, stalled before the fault, succeeds");
    ok(all, "commit errors: each of the %d queued writers gets CM_EIO", NQUEUED);
    ok(wait_commit(db, 0, g0 + 2), "commit errors: they failed as one group, none left");

    /* 3. The fault is gone: writes are still refused (the log's state is
     * unknown to LevelDB's log writer), reads work. */
    dup2(saved, logfd);
    close(saved);
    is_int(raw_put(db, "zafter", 1, true), CM_EIO, "commit errors: a later sync write is refused");
    is_int(raw_put(db, "zafter", 1, false), CM_EIO, "commit errors: a later async write too");
    is_int(md__exists(db, CM_SLICE_STR("zx")), 0, "commit errors: reads work; X is there");
    is_int(md__exists(db, CM_SLICE_STR("zw3")), CM_ENOTFOUND,
           "commit errors: a failed write is not");
    for (int i = 0; i < 64; i++) { /* 64 KiB: past the log's 32 KiB blocks */
        snprintf(key, sizeof key, "zpost%02d", i);
        post[i] = raw_put(db, key, 1024, true) == 0;
        acked += post[i];
    }
    is_int(acked, 0, "commit errors: 64 more writes are all refused");

    /* 4. Reopened, the store has everything acknowledged and nothing else,
     * and takes writes again. */
    db = commit_reopen(db, path);
    ok(db != NULL, "commit errors: reopen");
    if (!db)
        goto out;
    all = md__exists(db, CM_SLICE_STR("zx")) == 0;
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "zpre%02d", i);
        all &= md__exists(db, CM_SLICE_STR(key)) == 0;
    }
    int lost = 0;
    for (int i = 0; i < 64; i++) {
        snprintf(key, sizeof key, "zpost%02d", i);
        lost += post[i] && md__exists(db, CM_SLICE_STR(key)) != 0;
        all &= md__exists(db, CM_SLICE_STR(key)) == (post[i] ? 0 : CM_ENOTFOUND);
    }
    ok(all, "commit errors: after reopen every acknowledged write is there");
    if (lost)
        printf("#   %d of %d acknowledged writes lost\n", lost, acked);
    all = md__exists(db, CM_SLICE_STR("zafter")) == CM_ENOTFOUND;
    for (int i = 0; i < NQUEUED; i++)
        all &= md__exists(db, CM_SLICE_STR(w[i].key)) == CM_ENOTFOUND;
    ok(all, "commit errors: and no failed or refused one");
    is_int(raw_put(db, "znew", 1, true), 0, "commit errors: writes work again after reopen");

    /* 5. A full disk: the write fails with CM_ENOSPACE, and so does every
     * later one until the store is reopened. */
    int full = open("/dev/full", O_WRONLY | O_CLOEXEC);
    if (full < 0 || (logfd = wal_fd(path, logpath, sizeof logpath)) < 0) {
        skip("no /dev/full");
        if (full >= 0)
            close(full);
        goto out;
    }
    saved = dup(logfd);
    dup2(full, logfd);
    close(full);
    is_int(raw_put(db, "zfull", 1, true), CM_ENOSPACE,
           "disk full: the write fails with CM_ENOSPACE");
    dup2(saved, logfd);
    close(saved);
    is_int(raw_put(db, "zfull2", 1, true), CM_ENOSPACE, "disk full: later writes keep failing");
    db = commit_reopen(db, path);
    ok(db && md__exists(db, CM_SLICE_STR("znew")) == 0 &&
           md__exists(db, CM_SLICE_STR("zfull")) == CM_ENOTFOUND,
       "disk full: reopened, the store has what was acknowledged");
    ok(db && raw_put(db, "zfull3", 1, true) == 0, "disk full: and takes writes again");
out:
    alarm(0);
    md_close(db);
}

/* Settings export/import: buckets (and other settings) move to a fresh
 * store; objects do not; foreign or corrupt input writes nothing. */
static void test_settings(md_db_t *db)
{
    char path[600];
    md_db_t *db2 = NULL;
    md_bucket *all = NULL, *all2 = NULL;
    size_t n = 0, n2 = 0, nrec = 0;
    cm_buf ex = {0};
    md_object o;

    is_int(md_settings_export(db, &ex), 0, "settings export");
    ok(ex.n > 0, "settings export is not empty");
    snprintf(path, sizeof path, "%s/db-settings", g_dir);
    is_int(md_open(path, &db2), 0, "open a fresh store");
    if (!db2)
        return;
    is_int(md_settings_import(db2, CM_SLICE("\x03\x00\x00\x00Oab\x00\x00\x00\x00", 11), NULL),
           CM_ECORRUPT, "import refuses an object record");
    is_int(md_settings_import(db2, CM_SLICE(ex.p, ex.n - 1), NULL), CM_ECORRUPT,
           "import refuses a truncated snapshot");
    is_int(md_bucket_list(db2, &all2, &n2), 0, "list after refused imports");
    is_int(n2, 0, "refused imports wrote nothing");
    free(all2);
    is_int(md_settings_import(db2, cm_buf_slice(&ex), &nrec), 0, "import the snapshot");
    md_bucket_list(db, &all, &n);
    md_bucket_list(db2, &all2, &n2);
    is_int(n2, n, "every bucket is back");
    int same = n == n2;
    for (size_t i = 0; same && i < n; i++)
        same = !strcmp(all[i].name, all2[i].name) && all[i].ctime_ms == all2[i].ctime_ms;
    ok(same, "bucket names and creation times are the same");
    ok(nrec >= n, "import counted its records");
    ok(md_object_get(db2, "lst", CM_SLICE_STR("a"), &o) == CM_ENOTFOUND, "objects are not settings");
    free(all);
    free(all2);
    cm_buf_free(&ex);
    md_close(db2);
}

/* ------------------------------------------------------------ journal */
/* Commits sync writes (key j<t>-<i % 50> = v<i>) and acknowledges each. */
static void *journal_writer(void *arg)
{
    struct crash_writer *w = arg;
    char key[32], val[32];
    for (uint32_t i = 0;; i++) {
        struct md__batch *b = md__batch_new();
        snprintf(key, sizeof key, "j%u-%02u", w->t, i % 50);
        snprintf(val, sizeof val, "v%u", i);
        md__batch_put(b, CM_SLICE_STR(key), CM_SLICE_STR(val));
        if (md__batch_commit(w->db, b, true))
            _exit(1);
        md__batch_free(b);
        crash_ack(w, i);
    }
    return NULL;
}

/* A child runs nw writer threads (journal_writer) and is killed with
 * SIGKILL after each has 300 acknowledged writes. With several writers
 * the committer's groups hold writes of several threads, and with a small
 * journal checkpoints fall between them. With lose set, LevelDB's log is then cut back to its size
 * when the child had opened the store (what a power loss may leave:
 * LevelDB's own log is no longer synced per write), so only the journal
 * has the writes. Reopened, every key holds its last acknowledged value
 * (or the one in flight at the kill). */
static void journal_crash(const char *what, size_t jbytes, bool lose, int nw)
{
    char path[128], key[32], log[300];
    int bad = 0;
    uint32_t acked[CRASH_WRITERS_MAX];
    uint64_t logsize;
    md_db_t *db = NULL;
    size_t saved = md__journal_bytes;
    bool killed;

    snprintf(path, sizeof path, "%s/journal-%s", g_dir, what);
    md__journal_bytes = jbytes; /* the child inherits it */
    uint32_t least = crash_run(path, nw, 300, journal_writer, acked, &logsize, &killed);
    ok(killed && least >= 300, "%s: %d writers killed after %u sync writes or more each", what,
       nw, least);
    if (lose) {
        ok(logsize != UINT64_MAX && crash_newest_log(path, log, sizeof log) &&
               truncate(log, (off_t)logsize) == 0,
           "%s: LevelDB's log cut back to %llu bytes", what, (unsigned long long)logsize);
    }
    is_int(md_open(path, &db), 0, "%s: reopen", what);
    for (int t = 0; db && t < nw; t++) {
        for (uint32_t j = 0; j < 50; j++) {
            cm_buf v = {0};
            uint32_t a = acked[t];
            uint32_t last = a - (a % 50 >= j ? a % 50 - j : a % 50 + 50 - j);
            char want[32], inflight[32];
            snprintf(key, sizeof key, "j%d-%02u", t, j);
            snprintf(want, sizeof want, "v%u", last);
            snprintf(inflight, sizeof inflight, "v%u", last + 50);
            if (md__get(db, CM_SLICE_STR(key), &v) ||
                (!cm_slice_eq_str(cm_buf_slice(&v), want) &&
                 !(last + 50 == a + 1 && cm_slice_eq_str(cm_buf_slice(&v), inflight))))
                bad++;
            cm_buf_free(&v);
        }
    }
    is_int(bad, 0, "%s: every key holds its last acknowledged value", what);
    md_close(db);
    md__journal_bytes = saved;
}

/* Record formats: a "CJR1" record (an older build's, checked with
 * md__sum64) is still replayed; a "CJR2" record (md__sum64x4) with one
 * byte changed anywhere in its payload ends the replay before it. */
struct jseen {
    size_t n;
    cm_buf last;
};

static int jseen_fn(void *arg, cm_slice payload)
{
    struct jseen *s = arg;
    s->n++;
    cm_buf_reset(&s->last);
    return cm_buf_append_slice(&s->last, payload);
}

static void test_journal_format(void)
{
    char path[128];
    uint8_t payload[1000], blk[4096] = {0};
    md__journal *j = NULL;
    struct jseen seen = {0};
    uint64_t next = 0;

    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)(i * 13 + 1);
    snprintf(path, sizeof path, "%s/journal-format", g_dir);
    if (!ok(md__journal_open(path, &j) == 0, "format: open a journal"))
        return;
    /* lsn 7 as an old build wrote it, by hand. */
    uint64_t seed = 0x9e3779b97f4a7c15ull ^ 7 ^ ((uint64_t)sizeof payload << 40);
    memcpy(blk, "CJR1", 4);
    blk[4] = (uint8_t)(sizeof payload & 0xff);
    blk[5] = (uint8_t)(sizeof payload >> 8);
    blk[8] = 7;
    uint64_t sum = md__sum64(seed, payload, sizeof payload);
    for (int i = 0; i < 8; i++)
        blk[16 + i] = (uint8_t)(sum >> (8 * i));
    memcpy(blk + 32, payload, sizeof payload);
    int fd = open(path, O_WRONLY);
    ok(fd >= 0 && pwrite(fd, blk, sizeof blk, 0) == (ssize_t)sizeof blk, "format: a CJR1 record");
    if (fd >= 0)
        close(fd);
    md__journal_close(j);
    j = NULL;
    md__journal_open(path, &j);
    is_int(md__journal_replay(j, 7, jseen_fn, &seen, &next), 0, "format: replay");
    ok(seen.n == 1 && next == 8 && cm_slice_eq(cm_buf_slice(&seen.last),
                                               CM_SLICE(payload, sizeof payload)),
       "format: the CJR1 record is replayed with its bytes");
    /* Then new records after it, one with a byte changed on disk. */
    is_int(md__journal_append(j, 8, CM_SLICE(payload, sizeof payload)), 0, "format: lsn 8");
    is_int(md__journal_append(j, 9, CM_SLICE(payload, sizeof payload)), 0, "format: lsn 9");
    md__journal_close(j);
    j = NULL;
    fd = open(path, O_RDWR);
    uint8_t b = 0, magic[4] = {0};
    ok(fd >= 0 && pread(fd, magic, 4, 4096) == 4 && !memcmp(magic, "CJR2", 4),
       "format: new records are CJR2");
    /* One byte in the middle of lsn 9's payload (its last lane-aligned part). */
    ok(fd >= 0 && pread(fd, &b, 1, 8192 + 32 + 517) == 1, "format: read a byte of lsn 9");
    b ^= 0x20;
    ok(fd >= 0 && pwrite(fd, &b, 1, 8192 + 32 + 517) == 1, "format: change it");
    if (fd >= 0)
        close(fd);
    md__journal_open(path, &j);
    seen.n = 0;
    is_int(md__journal_replay(j, 7, jseen_fn, &seen, &next), 0, "format: replay again");
    ok(seen.n == 2 && next == 9, "format: the changed record ends the replay (%zu records)",
       seen.n);
    md__journal_close(j);
    cm_buf_free(&seen.last);
}

static void test_journal(void)
{
    /* Big enough not to wrap: the replay alone brings the writes back. */
    journal_crash("lost-log", (size_t)8 << 20, true, 1);
    /* 64 KiB: about every 16 writes a checkpoint and a rewind, so stale
     * records of earlier laps sit behind the current ones; replaying one
     * would put an older value back. */
    journal_crash("laps", 64 * 1024, false, 1);
    /* The same with 6 writers: groups of several writers, around the
     * checkpoints of a small journal and with LevelDB's log lost. */
    journal_crash("laps-6", 64 * 1024, false, 6);
    journal_crash("lost-log-6", (size_t)8 << 20, true, 6);

    /* A group larger than the whole journal is written by LevelDB with
     * sync instead (after a checkpoint); journaled writes go on after it. */
    char path[128], key[16];
    size_t saved = md__journal_bytes;
    md_db_t *db = NULL;
    cm_buf big = {0}, v = {0};
    int bad = 0;
    md__journal_bytes = 64 * 1024;
    snprintf(path, sizeof path, "%s/journal-big", g_dir);
    for (int i = 0; i < 100 * 1024; i++)
        cm_buf_append_byte(&big, (uint8_t)(i * 7));
    if (md_open(path, &db) == 0) {
        struct md__batch *b = md__batch_new();
        md__batch_put(b, CM_SLICE_STR("big"), cm_buf_slice(&big));
        is_int(md__batch_commit(db, b, true), 0, "big: a 100 KiB write with a 64 KiB journal");
        md__batch_free(b);
        for (int i = 0; i < 40; i++) {
            snprintf(key, sizeof key, "s%02d", i);
            bad += raw_put(db, key, 100, true) != 0;
        }
        md_close(db);
        db = NULL;
    }
    is_int(md_open(path, &db), 0, "big: reopen");
    bad += !db || md__get(db, CM_SLICE_STR("big"), &v) ||
           !cm_slice_eq(cm_buf_slice(&v), cm_buf_slice(&big));
    for (int i = 0; db && i < 40; i++) {
        snprintf(key, sizeof key, "s%02d", i);
        bad += md__exists(db, CM_SLICE_STR(key)) != 0;
    }
    is_int(bad, 0, "big: it and the 40 journaled writes after it are there");
    md_close(db);
    cm_buf_free(&big);
    cm_buf_free(&v);
    md__journal_bytes = saved;
    test_journal_format();
}

int main(void)
{
    md_db_t *db = NULL;
    md_bucket *all;
    size_t n;
    md_object g;

    snprintf(g_dir, sizeof g_dir, "/tmp/test_md.XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(g_path, sizeof g_path, "%s/db", g_dir);
    test_crash();
    test_journal();
    test_keys();
    test_codec();
    is_int(md_open(g_path, &db), 0, "md_open");
    if (!db)
        return done_testing();
    md_db_t *db2 = NULL;
    is_int(md_open(g_path, &db2), CM_EUNAVAIL, "a second open of the same store: unavailable");
    md_set_reclaim(db, rec_fn, NULL);
    db = test_buckets(db);
    db = test_objects(db);
    if (!db)
        return done_testing();
    test_list(db);
    test_list_seeks(db);
    db = test_multipart(db);
    test_threads(db);
    test_settings(db);
    test_commit_errors();

    db = reopen(db);
    ok(db != NULL, "reopen after everything");
    is_int(md_bucket_list(db, &all, &n), 0, "buckets after reopen");
    is_int(n, 9, "all buckets survive");
    free(all);
    is_str(list(db, "lst", "", "/", "", 1000), "a,b/,c,d/,e", "listing survives reopen");
    ok(md_object_get(db, "mpb", CM_SLICE_STR("mp"), &g) == 0 && cm_slice_eq_str(g.layout, "FINAL"),
       "completed object survives reopen");
    md_object_clear(&g);
    md_upload_list_res r;
    md_upload_list(db, "ul", CM_SLICE_NULL, CM_SLICE_NULL, CM_SLICE_NULL, CM_SLICE_NULL, 100, &r);
    is_int(r.n, 8, "uploads survive reopen");
    md_upload_list_res_free(&r);
    rl_reset();
    is_int(md_recover(db, &n), 0, "recover after reopen");
    is_int(n, 0, "no garbage or intents left behind");
    md_close(db);

    rl_reset();
    nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return done_testing();
}
