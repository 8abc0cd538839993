/* tests/unit/test_authz.c - access control without a server: wildcard
 * matching, bucket policy checking and evaluation (the allow/deny matrix),
 * CORS rule matching, the token bucket, and the metadata records for users,
 * grants, documents and limits in a temp LevelDB. */
#include "gateway/gw_int.h"
#include "tests/unit/tap.h"
#include <stdlib.h>
#include <unistd.h>

#define S(x) CM_SLICE_STR(x)

static void test_wild(void)
{
    ok(gw_wild_match(S("*"), S(""), false), "* matches empty");
    ok(gw_wild_match(S("arn:aws:s3:::b/*"), S("arn:aws:s3:::b/x/y"), false), "prefix wildcard");
    ok(!gw_wild_match(S("arn:aws:s3:::b/*"), S("arn:aws:s3:::b"), false), "bucket is not b/*");
    ok(gw_wild_match(S("arn:aws:s3:::b/pub*"), S("arn:aws:s3:::b/public/a"), false), "pub*");
    ok(!gw_wild_match(S("arn:aws:s3:::b/pub*"), S("arn:aws:s3:::b/private"), false), "not pub*");
    ok(gw_wild_match(S("a*b*c"), S("axxbyybzc"), false), "backtracking");
    ok(!gw_wild_match(S("a*b*c"), S("axxbyy"), false), "backtracking fails");
    ok(gw_wild_match(S("a?c"), S("abc"), false), "? one byte");
    ok(!gw_wild_match(S("a?c"), S("ac"), false), "? not zero bytes");
    ok(gw_wild_match(S("s3:get*"), S("s3:GetObject"), true), "icase action");
    ok(!gw_wild_match(S("s3:get*"), S("s3:GetObject"), false), "case-sensitive");
    ok(gw_wild_match(S("http://*.example.com"), S("http://a.example.com"), false), "origin *");
}

static const char *pol_public =
    "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Sid\":\"pub\",\"Effect\":\"Allow\","
    "\"Principal\":\"*\",\"Action\":[\"s3:GetObject\"],\"Resource\":\"arn:aws:s3:::b/public/*\"},"
    "{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":[\"*\"]},\"Action\":\"s3:ListBucket\","
    "\"Resource\":\"arn:aws:s3:::b\"},"
    "{\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":\"s3:*\","
    "\"Resource\":\"arn:aws:s3:::b/public/secret*\"},"
    "{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::123:user/alice\"},"
    "\"Action\":\"s3:PutObject\",\"Resource\":\"arn:aws:s3:::b/up/*\"}]}";

static void test_policy(void)
{
    const char *msg;
    ok(gw_policy_check(S(pol_public), "b", &msg) == 0, "valid policy accepted");
    ok(gw_policy_check(S(pol_public), "other", &msg) != 0 && strstr(msg, "resource"),
       "resource of another bucket refused");
    static const struct {
        const char *doc;
        const char *why;
    } bad[] = {
        {"", "empty"},
        {"[]", "not an object"},
        {"{\"Statement\":[]}", "no statements"},
        {"{\"Statement\":{\"Effect\":\"Maybe\",\"Principal\":\"*\",\"Action\":\"s3:GetObject\","
         "\"Resource\":\"arn:aws:s3:::b/*\"}}", "bad effect"},
        {"{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"iam:Foo\","
         "\"Resource\":\"arn:aws:s3:::b/*\"}}", "non-s3 action"},
        {"{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"s3:GetObject\"}}",
         "no resource"},
        {"{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"s3:GetObject\","
         "\"Resource\":\"arn:aws:s3:::b/*\",\"Condition\":{}}}", "condition"},
        {"{\"Statement\":{\"Effect\":\"Allow\",\"Action\":\"s3:GetObject\","
         "\"Resource\":\"arn:aws:s3:::b/*\"}}", "no principal"},
        {"{\"Version\":\"2099-01-01\",\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\","
         "\"Action\":\"s3:GetObject\",\"Resource\":\"arn:aws:s3:::b/*\"}}", "bad version"},
        {"{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"s3:GetObject\","
         "\"Resource\":\"arn:aws:s3:::bb/*\"}}", "bucket name prefix"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ok(gw_policy_check(S(bad[i].doc), "b", &msg) != 0 && msg, "refused: %s", bad[i].why);

    /* The evaluation matrix. */
    static const struct {
        const char *action, *resource, *user;
        enum gw_pol_effect want;
    } m[] = {
        {"s3:GetObject", "arn:aws:s3:::b/public/a.txt", NULL, GW_POL_ALLOW},
        {"s3:GetObject", "arn:aws:s3:::b/private/a.txt", NULL, GW_POL_NONE},
        {"s3:GetObject", "arn:aws:s3:::b/public/secret.txt", NULL, GW_POL_DENY},
        {"s3:PutObject", "arn:aws:s3:::b/public/a.txt", NULL, GW_POL_NONE},
        {"s3:ListBucket", "arn:aws:s3:::b", NULL, GW_POL_ALLOW},
        {"s3:PutObject", "arn:aws:s3:::b/up/x", NULL, GW_POL_NONE},
        {"s3:PutObject", "arn:aws:s3:::b/up/x", "alice", GW_POL_ALLOW},
        {"s3:PutObject", "arn:aws:s3:::b/up/x", "bob", GW_POL_NONE},
        {"s3:getobject", "arn:aws:s3:::b/public/a", "bob", GW_POL_ALLOW},
        {"s3:DeleteObject", "arn:aws:s3:::b/public/secret", "alice", GW_POL_DENY},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        is_int(gw_policy_eval(S(pol_public), m[i].action, S(m[i].resource), m[i].user),
               m[i].want, "eval %s %s by %s", m[i].action, m[i].resource,
               m[i].user ? m[i].user : "anonymous");
    const char *one = "{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\","
                      "\"Action\":\"*\",\"Resource\":[\"arn:aws:s3:::b\",\"arn:aws:s3:::b/*\"]}}";
    ok(gw_policy_check(S(one), "b", &msg) == 0, "single statement object accepted");
    is_int(gw_policy_eval(S(one), "s3:PutObject", S("arn:aws:s3:::b/k"), NULL), GW_POL_ALLOW,
           "Action * allows");
}

static void test_cors(void)
{
    gw_cors_rule r;
    memset(&r, 0, sizeof r);
    r.origins[r.norigins++] = S("http://*.example.com");
    r.origins[r.norigins++] = S("http://127.0.0.1:8000");
    r.methods[r.nmethods++] = S("GET");
    r.methods[r.nmethods++] = S("PUT");
    r.headers[r.nheaders++] = S("content-*");
    r.headers[r.nheaders++] = S("x-amz-meta-a");
    ok(gw_cors_rule_match(&r, S("http://a.example.com"), S("GET"), S("")), "wildcard origin");
    ok(gw_cors_rule_match(&r, S("http://127.0.0.1:8000"), S("PUT"), S("Content-Type")),
       "exact origin, allowed header (case-insensitive)");
    ok(!gw_cors_rule_match(&r, S("http://127.0.0.1:8001"), S("GET"), S("")), "other port");
    ok(!gw_cors_rule_match(&r, S("https://a.example.com"), S("GET"), S("")), "other scheme");
    ok(!gw_cors_rule_match(&r, S("http://a.example.com"), S("DELETE"), S("")), "method");
    ok(!gw_cors_rule_match(&r, S("http://a.example.com"), S("PUT"), S("content-type, x-foo")),
       "one header not allowed");
    ok(gw_cors_rule_match(&r, S("http://a.example.com"), S("PUT"),
                          S("content-type , X-Amz-Meta-A")), "header list");
    r.headers[r.nheaders++] = S("*");
    ok(gw_cors_rule_match(&r, S("http://a.example.com"), S("PUT"), S("x-foo")), "header *");
}

static void test_tb(void)
{
    gw_tb tb = {0, 0};
    uint64_t t = 1000000000ull;
    int n = 0;
    for (int i = 0; i < 10; i++)
        n += gw_tb_take(&tb, 2, 3, t);
    is_int(n, 3, "burst of 3 at one instant");
    ok(!gw_tb_take(&tb, 2, 3, t + 400000000ull), "0.8 tokens after 400 ms: empty");
    ok(gw_tb_take(&tb, 2, 3, t + 500000000ull), "1 token after 500 ms");
    n = 0;
    for (int i = 0; i < 10; i++)
        n += gw_tb_take(&tb, 2, 3, t + 60000000000ull);
    is_int(n, 3, "refill capped at burst");
}

static void test_md(void)
{
    char dir[] = "/tmp/test_authz.XXXXXX";
    md_db_t *db = NULL;
    ok(mkdtemp(dir) != NULL, "temp dir");
    ok(md_open(dir, &db) == 0, "open metadata");
    md_user u = {0}, g = {0};
    snprintf(u.name, sizeof u.name, "alice");
    snprintf(u.access_key, sizeof u.access_key, "CKALICE");
    snprintf(u.secret, sizeof u.secret, "s3cr3t/+x");
    u.enabled = true;
    u.ctime_ms = 42;
    is_int(md_user_create(db, &u), 0, "create user");
    is_int(md_user_create(db, &u), CM_EEXISTS, "same name again");
    md_user u2 = u;
    snprintf(u2.name, sizeof u2.name, "bob");
    is_int(md_user_create(db, &u2), CM_EEXISTS, "same key, other name");
    snprintf(u2.access_key, sizeof u2.access_key, "CKBOB");
    is_int(md_user_create(db, &u2), 0, "create bob");
    snprintf(u2.name, sizeof u2.name, "bad/name");
    is_int(md_user_create(db, &u2), CM_EINVAL, "bad name");
    is_int(md_user_by_key(db, "CKALICE", &g), 0, "by key");
    is_str(g.secret, "s3cr3t/+x", "secret round trip");
    ok(g.enabled && g.ctime_ms == 42, "fields round trip");
    is_int(md_user_set_enabled(db, "alice", false), 0, "disable");
    md_user_get(db, "alice", &g);
    ok(!g.enabled, "disabled");
    is_int(md_user_set_enabled(db, "nobody", false), CM_ENOTFOUND, "disable unknown");
    md_bucket b = {.ctime_ms = 1};
    snprintf(b.name, sizeof b.name, "bk");
    md_bucket_create(db, &b);
    is_int(md_grant_set(db, "alice", "bk", MD_ALLOW_READ | MD_ALLOW_LIST), 0, "grant");
    is_int(md_grant_set(db, "alice", "*", MD_ALLOW_WRITE), 0, "grant *");
    is_int(md_grant_set(db, "nobody", "bk", MD_ALLOW_READ), CM_ENOTFOUND, "grant unknown user");
    uint32_t a = 0;
    md_grant_get(db, "alice", "bk", &a);
    is_int(a, MD_ALLOW_READ | MD_ALLOW_LIST, "grant read back");
    md_grant_get(db, "bob", "bk", &a);
    is_int(a, 0, "no grant");
    md_grant *ga = NULL;
    size_t n = 0;
    is_int(md_grant_list(db, NULL, &ga, &n), 0, "list grants");
    is_int(n, 2, "two grants");
    free(ga);
    md_user *ua = NULL;
    is_int(md_user_list(db, &ua, &n), 0, "list users");
    ok(n == 2 && !strcmp(ua[0].name, "alice") && ua[0].secret[0] == 0, "list hides secrets");
    free(ua);
    is_int(md_user_delete(db, "alice"), 0, "remove alice");
    is_int(md_user_by_key(db, "CKALICE", &g), CM_ENOTFOUND, "key gone");
    is_int(md_grant_list(db, "alice", &ga, &n), 0, "grants of removed user");
    is_int(n, 0, "grants removed with the user");
    free(ga);

    cm_buf doc = {0};
    is_int(md_bucket_doc_put(db, MD_DOC_POLICY, "nob", S("{}")), CM_ENOTFOUND, "doc: no bucket");
    is_int(md_bucket_doc_put(db, MD_DOC_POLICY, "bk", S("{\"a\":1}")), 0, "doc put");
    is_int(md_bucket_doc_get(db, MD_DOC_CORS, "bk", &doc), CM_ENOTFOUND, "kinds are separate");
    is_int(md_bucket_doc_get(db, MD_DOC_POLICY, "bk", &doc), 0, "doc get");
    ok(cm_slice_eq_str(cm_buf_slice(&doc), "{\"a\":1}"), "doc round trip");
    is_int(md_bucket_doc_delete(db, MD_DOC_POLICY, "bk"), 0, "doc delete");
    is_int(md_bucket_doc_delete(db, MD_DOC_POLICY, "bk"), CM_ENOTFOUND, "doc delete again");
    md_bucket_doc_put(db, MD_DOC_POLICY, "bk", S("{}"));
    md_bucket_doc_put(db, MD_DOC_CORS, "bk", S("<x/>"));
    is_int(md_bucket_delete(db, "bk"), 0, "delete the bucket");
    md_bucket_create(db, &b);
    ok(md_bucket_doc_get(db, MD_DOC_POLICY, "bk", &doc) == CM_ENOTFOUND &&
           md_bucket_doc_get(db, MD_DOC_CORS, "bk", &doc) == CM_ENOTFOUND,
       "a bucket created again does not inherit the old policy or CORS");
    cm_buf_free(&doc);

    md_limit l = {.kind = MD_LIMIT_BUCKET, .rps = 5, .burst = 10};
    snprintf(l.name, sizeof l.name, "bk");
    is_int(md_limit_set(db, &l), 0, "limit bucket");
    l.kind = MD_LIMIT_KEY;
    snprintf(l.name, sizeof l.name, "CKBOB");
    is_int(md_limit_set(db, &l), 0, "limit key");
    l.rps = 0;
    is_int(md_limit_set(db, &l), CM_EINVAL, "rps 0 refused");
    md_limit *la = NULL;
    is_int(md_limit_list(db, &la, &n), 0, "list limits");
    ok(n == 2 && la[0].kind == MD_LIMIT_KEY && la[1].kind == MD_LIMIT_BUCKET && la[1].burst == 10,
       "keys first, fields round trip");
    free(la);
    is_int(md_limit_delete(db, MD_LIMIT_KEY, "CKBOB"), 0, "limit remove");
    is_int(md_limit_delete(db, MD_LIMIT_KEY, "CKBOB"), CM_ENOTFOUND, "limit remove again");
    md_close(db);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ok(system(cmd) == 0, "cleanup");
}

/* gw_authz over a real metadata store: the grant table of doc/access.md. */
static void test_authz_table(void)
{
    char dir[] = "/tmp/test_authz_t.XXXXXX";
    gw_server srv;
    memset(&srv, 0, sizeof srv);
    ok(mkdtemp(dir) && md_open(dir, &srv.md) == 0, "open metadata for gw_authz");
    md_bucket b = {.ctime_ms = 1};
    snprintf(b.name, sizeof b.name, "bk");
    md_bucket_create(srv.md, &b);
    static const char *const kinds[] = {"read", "write", "list", "admin", "none"};
    static const uint32_t bits[] = {MD_ALLOW_READ, MD_ALLOW_WRITE, MD_ALLOW_LIST,
                                    MD_ALLOW_ADMIN, 0};
    for (int i = 0; i < 5; i++) {
        md_user u = {.enabled = true};
        snprintf(u.name, sizeof u.name, "%s", kinds[i]);
        snprintf(u.access_key, sizeof u.access_key, "CK%s", kinds[i]);
        snprintf(u.secret, sizeof u.secret, "x");
        md_user_create(srv.md, &u);
        if (bits[i])
            md_grant_set(srv.md, u.name, "bk", bits[i]);
    }
    static const struct {
        enum gw_op op;
        const char *want; /* per kind: read write list admin none; 1 allowed */
    } m[] = {
        {GW_OP_GetObject, "10010"},       {GW_OP_HeadObject, "10010"},
        {GW_OP_PutObject, "01010"},       {GW_OP_DeleteObject, "01010"},
        {GW_OP_DeleteObjects, "01010"},   {GW_OP_CreateMultipartUpload, "01010"},
        {GW_OP_UploadPart, "01010"},      {GW_OP_CompleteMultipartUpload, "01010"},
        {GW_OP_AbortMultipartUpload, "01010"}, {GW_OP_ListParts, "01010"},
        {GW_OP_ListObjects, "00110"},     {GW_OP_ListObjectsV2, "00110"},
        {GW_OP_ListObjectVersions, "00110"}, {GW_OP_ListMultipartUploads, "01110"},
        {GW_OP_HeadBucket, "11110"},      {GW_OP_GetBucketLocation, "11110"},
        {GW_OP_CreateBucket, "00010"},    {GW_OP_DeleteBucket, "00010"},
        {GW_OP_PutBucketPolicy, "00010"}, {GW_OP_GetBucketPolicy, "00010"},
        {GW_OP_PutBucketCors, "00010"},   {GW_OP_DeleteBucketCors, "00010"},
    };
    for (size_t j = 0; j < sizeof m / sizeof m[0]; j++) {
        char got[6] = "";
        for (int i = 0; i < 5; i++) {
            gw_req r;
            memset(&r, 0, sizeof r);
            r.srv = &srv;
            r.op = m[j].op;
            snprintf(r.bucket, sizeof r.bucket, "bk");
            r.key = S("k");
            r.has_key = true;
            snprintf(r.user, sizeof r.user, "%s", kinds[i]);
            got[i] = gw_authz(&r) == 0 ? '1' : '0';
            if (got[i] == '0' && r.err != S3E_AccessDenied)
                got[i] = '?';
        }
        is_str(got, m[j].want, "%s: read write list admin none", gw_ops[m[j].op].name);
    }
    gw_req r;
    memset(&r, 0, sizeof r);
    r.srv = &srv;
    r.op = GW_OP_GetObject;
    r.anonymous = true;
    snprintf(r.bucket, sizeof r.bucket, "bk");
    ok(gw_authz(&r) == -1 && r.err == S3E_AccessDenied, "anonymous without a policy: denied");
    md_bucket_doc_put(srv.md, MD_DOC_POLICY, "bk",
                      S("{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\","
                        "\"Action\":\"s3:GetObject\",\"Resource\":\"arn:aws:s3:::bk/*\"}}"));
    r.err = S3E__NONE;
    r.status = 0;
    r.key = S("k");
    ok(gw_authz(&r) == 0, "anonymous with a public-read policy: allowed");
    r.op = GW_OP_PutObject;
    ok(gw_authz(&r) == -1, "anonymous PUT with a public-read policy: denied");
    memset(&r, 0, sizeof r);
    r.srv = &srv;
    r.root = true;
    r.op = GW_OP_DeleteBucket;
    snprintf(r.bucket, sizeof r.bucket, "bk");
    ok(gw_authz(&r) == 0, "root may do anything");
    md_close(srv.md);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ok(system(cmd) == 0, "cleanup");
}

int main(void)
{
    test_wild();
    test_policy();
    test_cors();
    test_tb();
    test_md();
    test_authz_table();
    return done_testing();
}
