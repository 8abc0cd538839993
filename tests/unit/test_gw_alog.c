/* tests/unit/test_gw_alog.c - access log lines (access_log.c) against golden
 * strings: field order, escaping of quoted and bare fields, URL-encoded keys,
 * secret query values replaced (also when the name is percent-encoded),
 * numbers, and the anonymous and error forms. */
#include "gateway/gw_int.h"
#include "tests/unit/tap.h"
#include <stdlib.h>

#define S(x) CM_SLICE_STR(x)

/* Formats r's line and checks it against want, where "@" stands for the
 * total-time field (it depends on the clock: digits, maybe after a '-'). */
static void check_line(gw_req *r, const char *want, const char *name)
{
    cm_buf line = {0};
    gw_alog_format(r, &line);
    const char *at = strchr(want, '@');
    const char *got = cm_buf_str(&line);
    size_t pre = (size_t)(at - want), post = strlen(at + 1);
    bool good = line.n > pre + post && memcmp(got, want, pre) == 0 &&
                memcmp(got + line.n - post, at + 1, post) == 0;
    for (size_t i = pre; good && i < line.n - post; i++)
        good = (got[i] >= '0' && got[i] <= '9') || (i == pre && got[i] == '-');
    ok(good, "%s", name);
    if (!good)
        printf("#   got  %s#   want %s", got, want);
    cm_buf_free(&line);
}

int main(void)
{
    gw_server srv;
    memset(&srv, 0, sizeof srv);
    strcpy(srv.owner_id, "0123abcd");

    gw_kv hdrs[] = {
        {S("User-Agent"), S("aws-cli/2 \"q\" back\\slash \x01 tab\t"), true},
        {S("Referer"), S("http://x/?a=b c"), true},
        {S("Authorization"), S("AWS4-HMAC-SHA256 Credential=..."), true},
    };
    gw_req r;
    memset(&r, 0, sizeof r);
    r.srv = &srv;
    r.pool = cm_pool_new();
    r.op = GW_OP_PutObject;
    r.start_ms = 1440938160123LL; /* 2015-08-30 12:36:00.123 */
    r.resp_ms = r.start_ms + 7;
    strcpy(r.id, "0123456789ABCDEF");
    strcpy(r.host_id, "cairn-0123456789ABCDEF");
    strcpy(r.bucket, "bkt");
    strcpy(r.access_key, "AKIDEXAMPLE");
    r.peer = "127.0.0.1";
    r.method = S("PUT");
    r.raw_path = S("/bkt/a%20b/%C3%A9%22");
    r.raw_query = S("x-id=PutObject&X-Amz-%53ignature=abc&plain&Signature=zz&a+b=1");
    r.key = S("a b/\xc3\xa9\"&+");
    r.has_key = true;
    r.hdrs = hdrs;
    r.nhdrs = 3;
    r.host = S("127.0.0.1:9000");
    r.body_n = 4096;
    check_line(&r,
               "0123abcd bkt [30/Aug/2015:12:36:00 +0000] 127.0.0.1 AKIDEXAMPLE 0123456789ABCDEF "
               "REST.PUT.OBJECT a%20b/%C3%A9%22%26%2B \"PUT /bkt/a%20b/%C3%A9%22?x-id=PutObject"
               "&X-Amz-%53ignature=REDACTED&plain&Signature=REDACTED&a+b=1 HTTP/1.1\" 200 - - 4096 "
               "@ 7 \"http://x/?a=b c\" \"aws-cli/2 %22q%22 back%5Cslash %01 tab%09\" - "
               "cairn-0123456789ABCDEF SigV4 - AuthHeader 127.0.0.1:9000 - - -\n",
               "PutObject line");

    /* anonymous GET with an error, no key, awkward host, no headers */
    gw_req e;
    memset(&e, 0, sizeof e);
    e.srv = &srv;
    e.pool = r.pool;
    e.op = GW_OP_GetObject;
    e.start_ms = 253402300799000LL; /* 9999-12-31 23:59:59 */
    strcpy(e.id, "FEDCBA9876543210");
    strcpy(e.host_id, "cairn-FEDCBA9876543210");
    strcpy(e.bucket, "b");
    e.anonymous = true;
    e.method = S("GET");
    e.raw_path = S("/b/k");
    e.key = S("k");
    e.has_key = true;
    e.host = S("h o\"st");
    e.status = 404;
    e.err = S3E_NoSuchKey;
    e.resp_ms = e.start_ms + 12345678901LL;
    e.bytes_out = 18446744073709551615ull;
    check_line(&e,
               "0123abcd b [31/Dec/9999:23:59:59 +0000] - - FEDCBA9876543210 REST.GET.OBJECT k "
               "\"GET /b/k HTTP/1.1\" 404 NoSuchKey 18446744073709551615 - @ 12345678901 \"-\" "
               "\"-\" - cairn-FEDCBA9876543210 - - - h%20o%22st - - -\n",
               "anonymous error line");

    /* an op without a REST name, an empty peer and bucket */
    e.op = GW_OP__COUNT > GW_OP_Admin ? GW_OP_Admin : e.op;
    e.bucket[0] = 0;
    e.has_key = false;
    e.peer = "";
    e.method = S("post");
    e.status = 0;
    e.err = S3E__NONE;
    e.bytes_out = 0;
    e.start_ms = 0;
    e.resp_ms = 1;
    e.host = CM_SLICE_NULL;
    check_line(&e,
               "0123abcd - [01/Jan/1970:00:00:00 +0000] - - FEDCBA9876543210 REST.POST.SERVICE - "
               "\"post /b/k HTTP/1.1\" 200 - - - @ 1 \"-\" \"-\" - cairn-FEDCBA9876543210 - - - - "
               "- - -\n",
               "unnamed op line");
    cm_pool_free(r.pool);
    return done_testing();
}
