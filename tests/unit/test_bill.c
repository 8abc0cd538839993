/* tests/unit/test_bill.c - unit tests of billing/ and metadata/usage.c: the
 * class table and billing rules, price sheets, time and --by parsing, exact
 * counting through record -> fold -> scan (with corrections), storage
 * byte-hours from object commits, the JSON report, and records surviving a
 * SIGKILL of the writing process. TAP. */
#include "billing/bill.h"
#include "common/json.h"
#include "tests/unit/tap.h"

#include <ftw.h>
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
    md_bucket b = {.name = "st", .ctime_ms = 1, .region = "us-east-1"};
    md_bucket_create(db, &b);
    struct hook_arg ha = {"st"};
    md_write_opts o = {NULL, NULL, delta_hook, &ha};
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
    test_kill();
    nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return done_testing();
}
