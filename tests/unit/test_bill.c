/* tests/unit/test_bill.c - unit tests of billing/ and metadata/usage.c: the
 * class table and billing rules, price sheets, time and --by parsing, exact
 * counting through record -> fold -> scan (with corrections), storage
 * byte-hours from object commits, the JSON report, records surviving a
 * SIGKILL of the writing process (sync records and the usage journal), and
 * a journal fold interrupted between its commit and the unlink, and where
 * a fold starts. TAP. */
#include "billing/bill.h"
#include "common/json.h"
#include "metadata/md_int.h"
#include "tests/unit/tap.h"

#include <dirent.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_dir[64];

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static void test_classes(void)
{
    static const struct {
        const char *op;
        enum bill_class c;
    } cases[] = {
        {"PutObject", BILL_A},        {"CopyObject", BILL_A},
        {"ListObjectsV2", BILL_A},    {"ListBuckets", BILL_A},
        {"CreateBucket", BILL_A},     {"UploadPart", BILL_A},
        {"CompleteMultipartUpload", BILL_A}, {"PutBucketLogging", BILL_A},
        {"GetObject", BILL_B},        {"HeadObject", BILL_B},
        {"HeadBucket", BILL_B},       {"GetBucketLocation", BILL_B},
        {"DeleteObject", BILL_FREE},  {"DeleteBucket", BILL_FREE},
        {"AbortMultipartUpload", BILL_FREE}, {"DeleteObjects", BILL_FREE},
        {"Admin", BILL_NONE},         {"AdminPublic", BILL_NONE},
        {"SomethingNew", BILL_A},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        is_int(bill_op_class(cases[i].op), cases[i].c, "class of %s is %s", cases[i].op,
               bill_class_name(cases[i].c));
    ok(bill_billable(BILL_A, 200), "2xx Class A is billed");
    ok(bill_billable(BILL_B, 404), "404 Class B is billed");
    ok(bill_billable(BILL_A, 412), "412 is billed in its class");
    ok(bill_billable(BILL_A, 400), "400 (BadDigest) is billed in its class");
    ok(bill_billable(BILL_B, 304), "304 is billed");
    ok(!bill_billable(BILL_A, 403), "403 (auth failure) is not billed");
    ok(!bill_billable(BILL_B, 401), "401 is not billed");
    ok(!bill_billable(BILL_A, 500), "500 is not billed");
    ok(!bill_billable(BILL_A, 503), "503 SlowDown is not billed");
    ok(!bill_billable(BILL_FREE, 204), "free operations are never billed");
}

static void test_prices(void)
{
    bill_prices p;
    char err[160] = "";
    bill_prices_default(&p);
    ok(p.class_a_per_million == 4.50 && p.class_b_per_million == 0.36 &&
           p.storage_per_gb_month == 0.015 && p.egress_per_gb == 0,
       "the default sheet has R2's prices");
    ok(strstr(p.source, "developers.cloudflare.com/r2/pricing") != NULL,
       "the default sheet names its source");
    const char *kv = "# my sheet\nname = \"test\"\nclass_a_per_million = 5\n"
                     "class_b_per_million=0.4 # comment\negress_per_gb = 0.09\n";
    is_int(bill_prices_parse(CM_SLICE_STR(kv), &p, err, sizeof err), 0, "key = value sheet");
    ok(p.class_a_per_million == 5 && p.class_b_per_million == 0.4 && p.egress_per_gb == 0.09 &&
           p.storage_per_gb_month == 0.015 && !strcmp(p.name, "test"),
       "values set, unset ones default");
    const char *js = "{\"name\":\"j\",\"class_a_per_million\":1.5,\"month_hours\":730}";
    is_int(bill_prices_parse(CM_SLICE_STR(js), &p, err, sizeof err), 0, "JSON sheet");
    ok(p.class_a_per_million == 1.5 && p.month_hours == 730, "JSON values set");
    is_int(bill_prices_parse(CM_SLICE_STR("bogus = 1\n"), &p, err, sizeof err), CM_EINVAL,
           "unknown key refused");
    ok(strstr(err, "bogus") != NULL, "message names the key: %s", err);
    is_int(bill_prices_parse(CM_SLICE_STR("class_a_per_million = -1\n"), &p, err, sizeof err),
           CM_EINVAL, "negative price refused");
    is_int(bill_prices_parse(CM_SLICE_STR("class_a_per_million = x\n"), &p, err, sizeof err),
           CM_EINVAL, "non-number refused");
    is_int(bill_prices_parse(CM_SLICE_STR("{\"a\":"), &p, err, sizeof err), CM_EINVAL,
           "bad JSON refused");
}

static void test_parse(void)
{
    int64_t ms = 0;
    unsigned by = 0;
    is_int(bill_time_parse("2024-05-01T10:00:00Z", &ms), 0, "ISO time");
    is_int(ms, 1714557600000LL, "ISO time value");
    is_int(bill_time_parse("2024-05-01", &ms), 0, "date only");
    is_int(ms, 1714521600000LL, "date value");
    is_int(bill_time_parse("2024-05-01T10Z", &ms), 0, "hour only");
    is_int(bill_time_parse("2024-05-01T10:00:00.250Z", &ms), 0, "with ms");
    is_int(ms, 1714557600250LL, "ms value");
    ok(bill_time_parse("2024-13-01", &ms) != 0, "month 13 refused");
    ok(bill_time_parse("yesterday", &ms) != 0, "words refused");
    is_int(bill_by_parse("hour", &by), 0, "--by hour");
    is_int(by, BILL_BY_HOUR, "hour bit");
    is_int(bill_by_parse("bucket,operation", &by), 0, "--by list");
    is_int(by, BILL_BY_BUCKET | BILL_BY_OP, "list bits");
    ok(bill_by_parse("weekday", &by) != 0, "unknown --by refused");
}

/* ------------------------------------------------------------ counting */
typedef struct sums {
    uint64_t req, bill, in, out;
    size_t nctr;
} sums;

static int sum_fn(void *arg, const md_usage_ctr *c)
{
    sums *s = arg;
    s->req += c->requests;
    s->bill += c->billable;
    s->in += c->bytes_in;
    s->out += c->bytes_out;
    s->nctr++;
    return 0;
}

static sums scan_all(md_db_t *db)
{
    sums s = {0};
    md_usage_scan(db, 0, INT64_MAX, sum_fn, &s);
    return s;
}

static bill_event ev_make(const char *op, int status, uint64_t in, int64_t out, int64_t ms)
{
    bill_event e = {.ms = ms, .bucket = "bk", .access_key = "AK1", .op = op, .status = status,
                    .bytes_in = in, .bytes_out = out};
    return e;
}

struct hook_arg {
    const char *bucket;
};

static int delta_hook(void *arg, md_batch_t *b, const md_object *cur, const md_object *next)
{
    struct hook_arg *h = arg;
    int64_t db = (int64_t)(next ? next->size : 0) - (int64_t)(cur ? cur->size : 0);
    int64_t dn = (next ? 1 : 0) - (cur ? 1 : 0);
    return md_usage_storage_delta(b, h->bucket, cm_now_ms(), db, dn);
}

/* Creates bucket name and the write options whose hook records storage
 * deltas for it. */
static void delta_bucket(md_db_t *db, const char *name, struct hook_arg *ha, md_write_opts *o)
{
    md_bucket b = {.ctime_ms = 1, .region = "us-east-1"};
    snprintf(b.name, sizeof b.name, "%s", name);
    md_bucket_create(db, &b);
    ha->bucket = name;
    *o = (md_write_opts){NULL, NULL, delta_hook, ha, 0};
}

static void test_counting(void)
{
    char path[128];
    md_db_t *db = NULL;
    int64_t t0 = 1714557600000LL; /* 2024-05-01T10:00Z */
    snprintf(path, sizeof path, "%s/count", g_dir);
    if (!ok(md_open(path, &db) == 0, "open"))
        return;
    int nput = 0, nget = 0;
    for (int i = 0; i < 300; i++) {
        bill_event e = ev_make(i % 3 ? "GetObject" : "PutObject", i % 10 == 0 ? 404 : 200,
                               i % 3 ? 0 : 1000, i % 3 ? 4096 : 0, t0 + i * 1000);
        if (bill_record(db, &e, i % 2 == 0)) {
            ok(0, "record %d", i);
            break;
        }
        if (i % 3)
            nget++;
        else
            nput++;
    }
    bill_event fail = ev_make("PutObject", 403, 10, 300, t0);
    bill_record(db, &fail, true);
    bill_event adm = ev_make("Admin", 200, 5, 5, t0);
    bill_record(db, &adm, true);
    /* A GET cut short: 4096 counted, 1000 sent. */
    bill_event corr = ev_make("GetObject", 200, 0, 1000 - 4096, t0);
    corr.correction = true;
    bill_record(db, &corr, false);

    sums before = scan_all(db);
    is_int(before.req, 0, "nothing counted before the fold");
    size_t n = 0;
    is_int(md_usage_fold(db, &n), 0, "fold");
    is_int(n, 302, "every pending record folded (Admin is not recorded)");
    sums s = scan_all(db);
    is_int(s.req, 301, "requests: 300 + the 403 (Admin not metered)");
    is_int(s.bill, 300, "billable: all but the 403");
    is_int(s.in, (uint64_t)nput * 1000 + 10, "bytes in exact");
    is_int(s.out, (uint64_t)nget * 4096 + 300 - 3096, "bytes out exact, with the correction");
    is_int(md_usage_fold(db, &n), 0, "second fold");
    is_int(n, 0, "nothing left to fold");
    sums s2 = scan_all(db);
    ok(s2.req == s.req && s2.out == s.out, "a second fold changes nothing");
    /* More records add to the existing counters. */
    bill_event more = ev_make("GetObject", 200, 0, 10, t0);
    bill_record(db, &more, false);
    md_usage_fold(db, NULL);
    s2 = scan_all(db);
    is_int(s2.req, s.req + 1, "later records add to counters");
    is_int(s2.nctr, s.nctr, "into the same counter rows");

    /* The report: totals equal what was recorded; filters work. */
    bill_prices p;
    bill_prices_default(&p);
    bill_query q = {.from_ms = INT64_MIN, .to_ms = INT64_MAX, .now_ms = t0 + 3600000};
    cm_buf out = {0};
    is_int(bill_report_json(db, &q, &p, &out), 0, "report");
    cm_json_doc *d = NULL;
    if (ok(cm_json_parse(cm_buf_slice(&out), &d) == 0, "report is JSON")) {
        const cm_json *t = cm_json_get(cm_json_root(d), "totals");
        is_int((uint64_t)cm_json_get_num(t, "requests", -1), 302, "report total requests");
        is_int((uint64_t)cm_json_get_num(t, "class_a", -1), (uint64_t)nput,
               "report Class A billable");
        double want = (double)nput / 1e6 * 4.50 + (double)(nget + 1) / 1e6 * 0.36;
        double got = cm_json_get_num(t, "request_cost", -1);
        ok(got > want - 1e-6 && got < want + 1e-6, "request cost %.6f == %.6f", got, want);
    }
    cm_json_doc_free(d);
    cm_buf_reset(&out);
    q.access_key = "nobody";
    bill_report_json(db, &q, &p, &out);
    ok(strstr((const char *)out.p, "\"requests\":0,") != NULL, "filter by unknown key: zero");
    cm_buf_reset(&out);
    q.access_key = NULL;
    q.from_ms = t0 + 3600000;
    bill_report_json(db, &q, &p, &out);
    ok(strstr((const char *)out.p, "\"requests\":0,") != NULL, "from after the data: zero");
    cm_buf_free(&out);

    /* Storage: deltas from object commits. */
    struct hook_arg ha;
    md_write_opts o;
    delta_bucket(db, "st", &ha, &o);
    md_object obj = {.size = 1000, .mtime_ms = 1, .etag = CM_SLICE_STR("e"),
                     .inline_data = CM_SLICE("x", 1)};
    md_object_put_ex(db, "st", CM_SLICE_STR("a"), &obj, 0, &o);
    obj.size = 500;
    md_object_put_ex(db, "st", CM_SLICE_STR("b"), &obj, 0, &o);
    obj.size = 200;
    md_object_put_ex(db, "st", CM_SLICE_STR("a"), &obj, 0, &o); /* replaces 1000 */
    md_object_delete_ex(db, "st", CM_SLICE_STR("b"), &o);
    md_usage_fold(db, NULL);
    md_storage_state *st = NULL;
    size_t nst = 0;
    md_storage_list(db, &st, &nst);
    bool found = false;
    for (size_t i = 0; i < nst; i++) {
        if (!strcmp(st[i].bucket, "st")) {
            found = true;
            is_int(st[i].bytes, 200, "bucket bytes after put/replace/delete");
            is_int(st[i].objects, 1, "bucket objects");
        }
    }
    ok(found, "storage state of the bucket");
    free(st);

    /* Logging configuration round trip. */
    md_logging lg = {.target_bucket = "st", .target_prefix = "logs/"}, lg2;
    is_int(md_logging_put(db, "bk", &lg), 0, "logging put");
    is_int(md_logging_get(db, "bk", &lg2), 0, "logging get");
    ok(!strcmp(lg2.target_prefix, "logs/"), "prefix kept");
    is_int(md_logging_put(db, "bk", NULL), 0, "logging removed");
    is_int(md_logging_get(db, "bk", &lg2), CM_ENOTFOUND, "gone");
    md_close(db);

    /* Counters persist across reopen. */
    db = NULL;
    md_open(path, &db);
    sums s3 = scan_all(db);
    is_int(s3.req, s2.req, "counters persist across reopen");
    md_close(db);
}

/* A fold starts past the records it folded before (LevelDB keeps their
 * deletions until a compaction, and walking them made every fold slower
 * than the last), but never past a record whose batch took its id before
 * an earlier one committed and commits after the fold. */
static uint64_t bucket_bytes(md_db_t *db, const char *bucket)
{
    md_storage_state *st = NULL;
    size_t nst = 0;
    uint64_t bytes = UINT64_MAX;
    md_storage_list(db, &st, &nst);
    for (size_t i = 0; i < nst; i++)
        if (!strcmp(st[i].bucket, bucket))
            bytes = st[i].bytes;
    free(st);
    return bytes;
}

/* Opens a database in g_dir/sub with bucket and its delta hook; NULL if
 * it cannot. */
static md_db_t *open_delta(const char *sub, const char *bucket, struct hook_arg *ha,
                           md_write_opts *o)
{
    char path[128];
    md_db_t *db = NULL;
    snprintf(path, sizeof path, "%s/%s", g_dir, sub);
    if (!ok(md_open(path, &db) == 0, "open %s", sub))
        return NULL;
    delta_bucket(db, bucket, ha, o);
    return db;
}

static void test_fold_from(void)
{
    struct hook_arg ha;
    md_write_opts o;
    md_db_t *db = open_delta("foldfrom", "ff", &ha, &o);
    if (!db)
        return;
    md_object obj = {.size = 10, .mtime_ms = 1, .etag = CM_SLICE_STR("e"),
                     .inline_data = CM_SLICE("x", 1)};
    char key[32];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "k%03d", i);
        md_object_put_ex(db, "ff", CM_SLICE_STR(key), &obj, 0, &o);
    }
    size_t n = 0;
    is_int(md_usage_fold(db, &n), 0, "fold of 200 deltas");
    is_int(n, 200, "all folded");
    uint64_t next_id = db->seq_next;
    ok(db->fold_from[1] == next_id, "the next fold starts at the next id (%llu, %llu)",
       (unsigned long long)db->fold_from[1], (unsigned long long)next_id);
    is_int(bucket_bytes(db, "ff"), 2000, "200 x 10 bytes");

    /* A batch takes its id and is held open while a later one commits
     * and a fold runs. */
    struct md__batch *held = md__batch_new();
    md_batch_t mb = {db, held};
    is_int(md_usage_storage_delta(&mb, "ff", cm_now_ms(), 7, 1), 0, "held delta staged");
    uint64_t held_id = db->seq_next - 1;
    md_object_put_ex(db, "ff", CM_SLICE_STR("later"), &obj, 0, &o);
    is_int(md_usage_fold(db, &n), 0, "fold while one batch is held");
    is_int(n, 1, "the committed delta folded");
    ok(db->fold_from[1] <= held_id, "the next fold starts at or before the held id");
    is_int(md__batch_commit(db, held, true), 0, "held batch commits after the fold");
    md__batch_free(held);
    is_int(md_usage_fold(db, &n), 0, "fold after it");
    is_int(n, 1, "the late delta is folded");
    is_int(bucket_bytes(db, "ff"), 2017, "and counted");
    is_int(md_usage_fold(db, &n), 0, "fold again");
    is_int(n, 0, "nothing folded twice");
    /* A queued write nobody waits for would hold nothing once queued. */
    struct md__batch *later = md__batch_new();
    md_batch_t ml = {db, later};
    md_usage_storage_delta(&ml, "ff", cm_now_ms(), 5, 1);
    is_int(md__batch_commit_later(db, later), CM_EINVAL, "a held id is never written later");
    is_int(md_usage_fold(db, &n), 0, "fold after the refused write");
    ok(n == 0 && bucket_bytes(db, "ff") == 2017, "nothing of it counted");
    md_close(db);
}

/* A PUT's request record rides in its storage delta's record: the fold
 * counts both, also when the delta is zero (an overwrite of the same
 * size). */
static int put_hook(void *arg, md_batch_t *b, const md_object *cur, const md_object *next)
{
    struct hook_arg *h = arg;
    int64_t db = (int64_t)(next ? next->size : 0) - (int64_t)(cur ? cur->size : 0);
    int64_t dn = (next ? 1 : 0) - (cur ? 1 : 0);
    bill_event ev = ev_make("PutObject", 200, next ? next->size : 0, 0, cm_now_ms());
    ev.bucket = h->bucket;
    return bill_record_batch_delta(b, &ev, h->bucket, cm_now_ms(), db, dn);
}

static void test_put_record(void)
{
    struct hook_arg ha;
    md_write_opts o;
    md_db_t *db = open_delta("putrec", "pr", &ha, &o);
    if (!db)
        return;
    o.hook = put_hook;
    md_object obj = {.size = 300, .mtime_ms = 1, .etag = CM_SLICE_STR("e"),
                     .inline_data = CM_SLICE("x", 1)};
    md_object_put_ex(db, "pr", CM_SLICE_STR("a"), &obj, 0, &o);
    md_object_put_ex(db, "pr", CM_SLICE_STR("b"), &obj, 0, &o);
    md_object_put_ex(db, "pr", CM_SLICE_STR("a"), &obj, 0, &o); /* same size: delta 0 */
    size_t n = 0;
    is_int(md_usage_fold(db, &n), 0, "fold");
    is_int(n, 3, "three records, one per PUT");
    sums s = scan_all(db);
    is_int(s.req, 3, "three PUT requests counted");
    is_int(s.in, 900, "their bytes in");
    is_int(bucket_bytes(db, "pr"), 600, "and the bucket's bytes: two objects of 300");
    md_close(db);
}

/* A child writes N sync records and is SIGKILLed without closing: every
 * record whose write returned is counted after reopen. */
static void test_kill(void)
{
    char path[128];
    int fds[2];
    snprintf(path, sizeof path, "%s/kill", g_dir);
    if (pipe(fds))
        return;
    pid_t pid = fork();
    if (pid == 0) {
        md_db_t *db = NULL;
        close(fds[0]);
        if (md_open(path, &db))
            _exit(1);
        for (int i = 0;; i++) {
            bill_event e = ev_make("GetObject", 200, 0, 7, cm_now_ms());
            if (bill_record(db, &e, true))
                _exit(1);
            if (i % 50 == 0)
                md_usage_fold(db, NULL); /* folds racing the kill */
            if (write(fds[1], "x", 1) != 1)
                _exit(1);
        }
    }
    close(fds[1]);
    char buf[256];
    uint64_t acked = 0;
    while (acked < 500) {
        ssize_t n = read(fds[0], buf, sizeof buf);
        if (n <= 0)
            break;
        acked += (uint64_t)n;
    }
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    /* Acknowledgements still in the pipe were also durable. */
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) > 0)
        acked += (uint64_t)n;
    close(fds[0]);
    md_db_t *db = NULL;
    if (!ok(md_open(path, &db) == 0, "reopen after SIGKILL"))
        return;
    md_usage_fold(db, NULL);
    sums s = scan_all(db);
    ok(s.req >= acked && s.req <= acked + 1,
       "after SIGKILL: %llu counted, %llu acknowledged (at most one more in flight)",
       (unsigned long long)s.req, (unsigned long long)acked);
    is_int(s.out, s.req * 7, "bytes of every counted request");
    md_close(db);
}


/* Number of journal files in DIR/usage. */
static int count_journals(const char *path)
{
    char d[160];
    int n = 0;
    snprintf(d, sizeof d, "%s/usage", path);
    DIR *dp = opendir(d);
    if (!dp)
        return -1;
    for (struct dirent *e; (e = readdir(dp));)
        if (!strncmp(e->d_name, "journal.", 8))
            n++;
    closedir(dp);
    return n;
}

/* Non-sync records go to the journal: a child writes them (with folds
 * racing) and is SIGKILLed; reopening folds every acknowledged record
 * exactly once. */
static void test_journal_kill(void)
{
    char path[128];
    int fds[2];
    snprintf(path, sizeof path, "%s/jkill", g_dir);
    if (pipe(fds))
        return;
    pid_t pid = fork();
    if (pid == 0) {
        md_db_t *db = NULL;
        close(fds[0]);
        if (md_open(path, &db))
            _exit(1);
        for (int i = 0;; i++) {
            bill_event e = ev_make("GetObject", 200, 3, 7, cm_now_ms());
            if (bill_record(db, &e, false))
                _exit(1);
            if (i % 997 == 0)
                md_usage_fold(db, NULL); /* folds racing the kill */
            if (write(fds[1], "x", 1) != 1)
                _exit(1);
        }
    }
    close(fds[1]);
    char buf[4096];
    uint64_t acked = 0;
    while (acked < 5000) {
        ssize_t n = read(fds[0], buf, sizeof buf);
        if (n <= 0)
            break;
        acked += (uint64_t)n;
    }
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) > 0)
        acked += (uint64_t)n;
    close(fds[0]);
    ok(count_journals(path) >= 1, "journal files left by the killed writer");
    md_db_t *db = NULL;
    if (!ok(md_open(path, &db) == 0, "reopen after SIGKILL (journal)"))
        return;
    size_t nf = 0;
    is_int(md_usage_fold(db, &nf), 0, "fold the journals");
    sums s = scan_all(db);
    ok(s.req >= acked && s.req <= acked + 1,
       "journal after SIGKILL: %llu counted, %llu acknowledged (at most one more in flight)",
       (unsigned long long)s.req, (unsigned long long)acked);
    is_int(s.out, s.req * 7, "bytes out of every counted request");
    is_int(s.in, s.req * 3, "bytes in of every counted request");
    is_int(count_journals(path), 1, "folded journals unlinked (the current one stays)");
    md_usage_fold(db, &nf);
    is_int(nf, 0, "a second fold folds nothing");
    md_close(db);
    db = NULL;
    md_open(path, &db);
    md_usage_fold(db, NULL);
    sums s2 = scan_all(db);
    is_int(s2.req, s.req, "reopen and fold again: counted once");
    md_close(db);
}

/* A fold that committed (counters and marker) but died before unlinking
 * its journal: simulated by putting a copy of the journal back. The next
 * open sees the marker and unlinks it without counting it again. */
static void test_journal_marker(void)
{
    char path[128], jdir[160], src[512], dst[256];
    md_db_t *db = NULL;
    snprintf(path, sizeof path, "%s/jmark", g_dir);
    snprintf(jdir, sizeof jdir, "%s/usage", path);
    if (!ok(md_open(path, &db) == 0, "open (marker)"))
        return;
    for (int i = 0; i < 100; i++) {
        bill_event e = ev_make("HeadObject", 200, 0, 0, cm_now_ms());
        bill_record(db, &e, false);
    }
    /* The one journal: copy it aside before the fold. */
    DIR *dp = opendir(jdir);
    src[0] = 0;
    for (struct dirent *e; dp && (e = readdir(dp));)
        if (!strncmp(e->d_name, "journal.", 8))
            snprintf(src, sizeof src, "%s/%s", jdir, e->d_name);
    if (dp)
        closedir(dp);
    snprintf(dst, sizeof dst, "%s/saved", path);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", src, dst);
    ok(src[0] && system(cmd) == 0, "journal saved");
    size_t nf = 0;
    md_usage_fold(db, &nf);
    is_int(nf, 100, "100 journal records folded");
    is_int(scan_all(db).req, 100, "counted");
    ok(access(src, F_OK) != 0, "folded journal unlinked");
    md_close(db);

    /* Crash between commit and unlink: the journal is back and its marker
     * is still there. Put the marker back as the fold left it. */
    if (rename(dst, src) != 0) {
        ok(0, "restore journal");
        return;
    }
    db = NULL;
    md_open(path, &db);
    /* The marker was deleted after the unlink: write it back as the
     * commit left it ('$' 'J' n(be64), doc/billing.md). */
    uint64_t jn = strtoull(strrchr(src, '.') + 1, NULL, 10);
    uint8_t mk[10] = {MD__K_USAGE, 'J'};
    for (int i = 0; i < 8; i++)
        mk[2 + i] = (uint8_t)(jn >> (56 - 8 * i));
    struct md__batch *mb = md__batch_new();
    md__batch_put(mb, CM_SLICE(mk, 10), CM_SLICE("", 0));
    is_int(md__batch_commit(db, mb, false), 0, "marker of the restored journal");
    md__batch_free(mb);
    md_usage_fold(db, &nf);
    is_int(nf, 0, "a marked journal is not folded again");
    is_int(scan_all(db).req, 100, "still 100 after the interrupted fold");
    ok(access(src, F_OK) != 0, "the marked journal is unlinked");
    md_close(db);

    /* Without a marker (crash before the commit) it is folded. */
    db = NULL;
    md_open(path, &db);
    for (int i = 0; i < 5; i++) {
        bill_event e = ev_make("HeadObject", 200, 0, 0, cm_now_ms());
        bill_record(db, &e, false);
    }
    md_close(db); /* no fold: the journal stays */
    db = NULL;
    md_open(path, &db);
    md_usage_fold(db, &nf);
    is_int(nf, 5, "an unmarked journal is folded at the next open");
    is_int(scan_all(db).req, 105, "105 counted");
    md_close(db);
}

/* Writers on 8 threads while another folds (switching journals under
 * them): every record is counted exactly once. */
#define JT_THREADS 8
#define JT_RECS 3000
static md_db_t *g_jdb;
static volatile int g_jstop;

static void *jt_writer(void *arg)
{
    (void)arg;
    for (int i = 0; i < JT_RECS; i++) {
        bill_event e = ev_make("GetObject", i % 7 ? 200 : 404, 1, 2, cm_now_ms());
        if (bill_record(g_jdb, &e, i % 500 == 0))
            return (void *)1;
    }
    return NULL;
}

static void *jt_folder(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&g_jstop, __ATOMIC_RELAXED))
        md_usage_fold(g_jdb, NULL);
    return NULL;
}

static void test_journal_threads(void)
{
    char path[128];
    pthread_t w[JT_THREADS], f;
    int bad = 0;
    snprintf(path, sizeof path, "%s/jthreads", g_dir);
    if (!ok(md_open(path, &g_jdb) == 0, "open (threads)"))
        return;
    pthread_create(&f, NULL, jt_folder, NULL);
    for (int i = 0; i < JT_THREADS; i++)
        pthread_create(&w[i], NULL, jt_writer, NULL);
    for (int i = 0; i < JT_THREADS; i++) {
        void *r;
        pthread_join(w[i], &r);
        bad += r != NULL;
    }
    __atomic_store_n(&g_jstop, 1, __ATOMIC_RELAXED);
    pthread_join(f, NULL);
    is_int(bad, 0, "every record written");
    md_usage_fold(g_jdb, NULL);
    sums s = scan_all(g_jdb);
    is_int(s.req, (uint64_t)JT_THREADS * JT_RECS, "concurrent writers and folds: exact requests");
    is_int(s.in + s.out, (uint64_t)JT_THREADS * JT_RECS * 3, "exact bytes");
    md_close(g_jdb);
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/test_bill.XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    cm_log_level = CM_LOG_ERROR;
    test_classes();
    test_prices();
    test_parse();
    test_counting();
    test_fold_from();
    test_put_record();
    test_kill();
    test_journal_kill();
    test_journal_marker();
    test_journal_threads();
    nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return done_testing();
}
