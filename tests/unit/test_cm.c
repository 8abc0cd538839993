/* tests/unit/test_cm.c - the common library: slices, buffers, codecs,
 * hex/base64/URI encodings, times, pools. */
#include "common/cm.h"
#include "tests/unit/tap.h"
#include <stdlib.h>

static void test_buf_codec(void)
{
    cm_buf b = {0};
    cm_buf_put_u8(&b, 7);
    cm_buf_put_u32(&b, 0xdeadbeef);
    cm_buf_put_u64(&b, 0x0102030405060708ull);
    cm_buf_put_bytes(&b, CM_SLICE("a\0b", 3));
    cm_reader rd = {b.p, b.n};
    uint8_t u8;
    uint32_t u32;
    uint64_t u64;
    cm_slice s;
    ok(cm_get_u8(&rd, &u8) == 0 && u8 == 7, "u8 round trip");
    ok(cm_get_u32(&rd, &u32) == 0 && u32 == 0xdeadbeef, "u32 round trip");
    ok(cm_get_u64(&rd, &u64) == 0 && u64 == 0x0102030405060708ull, "u64 round trip");
    ok(cm_get_bytes(&rd, &s) == 0 && s.n == 3 && memcmp(s.p, "a\0b", 3) == 0,
       "bytes round trip keeps NUL");
    is_int(cm_get_u8(&rd, &u8), CM_ECORRUPT, "underrun is CM_ECORRUPT");
    cm_reader bad = {b.p + 13, 5}; /* length prefix says 3, only 1 byte follows */
    is_int(cm_get_bytes(&bad, &s), CM_ECORRUPT, "short bytes field is CM_ECORRUPT");
    cm_buf_reset(&b);
    cm_buf_printf(&b, "%s-%d", "x", 42);
    is_str(cm_buf_str(&b), "x-42", "printf appends");
    char big[600];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = 0;
    cm_buf_printf(&b, "%s", big);
    is_int(b.n, 4 + 599, "printf grows past its stack buffer");
    cm_buf_free(&b);
}

static void test_encodings(void)
{
    char hex[64], b64[64];
    uint8_t out[64];
    size_t n;
    cm_hex_encode("\x01\xab\xff", 3, hex);
    is_str(hex, "01abff", "hex encode");
    ok(cm_hex_decode("01ABff", 6, out) == 0 && memcmp(out, "\x01\xab\xff", 3) == 0,
       "hex decode mixed case");
    is_int(cm_hex_decode("0g", 2, out), CM_EINVAL, "bad hex digit");
    int bad = 0;
    for (int a = 0; a < 256; a++) {
        for (int b = 0; b < 256; b++) {
            char h[2] = {(char)a, (char)b};
            int va = cm_hexval(a), vb = cm_hexval(b);
            uint8_t o = 0;
            int rc = cm_hex_decode(h, 2, &o);
            bad += va < 0 || vb < 0 ? rc != CM_EINVAL : rc != 0 || o != (va << 4 | vb);
        }
    }
    is_int(bad, 0, "hex decode of every byte pair agrees with cm_hexval");
    static const struct {
        const char *in, *out;
    } b64v[] = {{"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="},
                {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof b64v / sizeof b64v[0]; i++) {
        cm_base64_encode(b64v[i].in, strlen(b64v[i].in), b64);
        is_str(b64, b64v[i].out, "base64 encode '%s'", b64v[i].in);
        ok(cm_base64_decode(b64v[i].out, strlen(b64v[i].out), out, &n) == 0 &&
               n == strlen(b64v[i].in) && memcmp(out, b64v[i].in, n) == 0,
           "base64 decode '%s'", b64v[i].out);
    }
    is_int(cm_base64_decode("Zg=", 3, out, &n), CM_EINVAL, "base64 bad length");
    is_int(cm_base64_decode("Z=g=", 4, out, &n), CM_EINVAL, "base64 pad in the middle");
    cm_buf b = {0};
    cm_uri_encode(&b, CM_SLICE_STR("a b/c+d%é~"), false);
    is_str(cm_buf_str(&b), "a%20b/c%2Bd%25%C3%A9~", "uri encode keeps slash");
    cm_buf_reset(&b);
    cm_uri_encode(&b, CM_SLICE_STR("a/b"), true);
    is_str(cm_buf_str(&b), "a%2Fb", "uri encode slash");
    cm_buf_reset(&b);
    ok(cm_uri_decode(&b, CM_SLICE_STR("a%20b+c%2f"), true) == 0 &&
           strcmp(cm_buf_str(&b), "a b c/") == 0,
       "uri decode with plus as space");
    cm_buf_reset(&b);
    ok(cm_uri_decode(&b, CM_SLICE_STR("a+b"), false) == 0 && strcmp(cm_buf_str(&b), "a+b") == 0,
       "uri decode keeps plus in paths");
    cm_buf_reset(&b);
    is_int(cm_uri_decode(&b, CM_SLICE_STR("abc%2"), false), CM_EINVAL, "truncated escape");
    cm_buf_reset(&b);
    is_int(cm_uri_decode(&b, CM_SLICE_STR("%zz"), false), CM_EINVAL, "bad escape");
    cm_buf_free(&b);
    uint8_t d[16];
    size_t dn = 99;
    ok(cm_uri_decode_into(CM_SLICE_STR("a%2Fb+c%e2%82%ac"), true, d, &dn) == 0 && dn == 8 &&
           memcmp(d, "a/b c\xe2\x82\xac", 8) == 0,
       "decode into a buffer");
    ok(cm_uri_decode_into(CM_SLICE_STR("a+b"), false, d, &dn) == 0 && dn == 3 &&
           memcmp(d, "a+b", 3) == 0,
       "decode into: '+' kept without plus_space");
    is_int(cm_uri_decode_into(CM_SLICE_STR("ab%4"), false, d, &dn), CM_EINVAL,
           "decode into: truncated escape");
    is_int(dn, 2, "decode into: bytes before the bad escape");
}

static void test_times(void)
{
    char s[32];
    time_t t;
    cm_time_rfc1123(1440938160, s);
    is_str(s, "Sun, 30 Aug 2015 12:36:00 GMT", "rfc1123");
    cm_time_amz(1440938160, s);
    is_str(s, "20150830T123600Z", "amz date");
    cm_time_iso8601_ms(1440938160123LL, s);
    is_str(s, "2015-08-30T12:36:00.123Z", "iso8601 with ms");
    ok(cm_time_parse_amz("20150830T123600Z", 16, &t) == 0 && t == 1440938160, "parse amz date");
    ok(cm_time_parse_amz("20150830T1236000", 16, &t) != 0, "reject amz date without Z");
    ok(cm_time_parse_http("Sun, 30 Aug 2015 12:36:00 GMT", 29, &t) == 0 && t == 1440938160,
       "parse rfc1123");
    ok(cm_time_parse_http("2015-08-30T12:36:00.000Z", 24, &t) == 0 && t == 1440938160,
       "parse iso8601");
    ok(cm_time_parse_http("yesterday", 9, &t) != 0, "reject garbage date");
}

/* The formatters and the x-amz-date parser against libc's, which they
 * replace for years 1000-9999: same text, same time, same refusals. */
static void test_times_vs_libc(void)
{
    uint64_t x = 88172645463325252ull;
    int bad_fmt = 0, bad_parse = 0;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        /* times spread over years ~900-10100, and near the epoch */
        int64_t t = i % 2 ? (int64_t)(x % 290000000000ull) - 32000000000LL
                          : (int64_t)(x % 200000000ull) - 100000000LL;
        char a[64], b[64];
        struct tm tm;
        time_t tt = (time_t)t;
        gmtime_r(&tt, &tm);
        cm_time_amz(tt, a);
        strftime(b, 32, "%Y%m%dT%H%M%SZ", &tm);
        bad_fmt += strcmp(a, b) != 0;
        cm_time_rfc1123(tt, a);
        strftime(b, 32, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        bad_fmt += strcmp(a, b) != 0;
        int64_t ms = t * 1000 + (int64_t)(x >> 50) % 1000;
        cm_time_iso8601_ms(ms, a);
        if (ms >= 0) {
            char tmp[24];
            strftime(tmp, sizeof tmp, "%Y-%m-%dT%H:%M:%S", &tm);
            snprintf(b, 32, "%s.%03dZ", tmp, (int)(ms % 1000));
            bad_fmt += strcmp(a, b) != 0;
        }
        /* x-amz-date strings with each field often out of range */
        char s[17];
        snprintf(s, sizeof s, "%04u%02u%02uT%02u%02u%02uZ", (unsigned)(x % 10000),
                 (unsigned)(x >> 14) % 14, (unsigned)(x >> 18) % 33, (unsigned)(x >> 24) % 25,
                 (unsigned)(x >> 30) % 61, (unsigned)(x >> 36) % 63);
        time_t got = 0, want = 0;
        int rc = cm_time_parse_amz(s, 16, &got);
        memset(&tm, 0, sizeof tm);
        const char *end = strptime(s, "%Y%m%dT%H%M%S", &tm);
        int wrc = end && strcmp(end, "Z") == 0 ? 0 : CM_EINVAL;
        if (!wrc)
            want = timegm(&tm);
        bad_parse += rc != wrc || (!rc && got != want);
    }
    is_int(bad_fmt, 0, "time formatting matches strftime");
    is_int(bad_parse, 0, "x-amz-date parsing matches strptime + timegm");
}

static void count_cleanup(void *arg)
{
    (*(int *)arg)++;
}

static void test_slices_pool(void)
{
    ok(cm_slice_cmp(CM_SLICE_STR("a"), CM_SLICE_STR("ab")) < 0, "shorter sorts first");
    ok(cm_slice_cmp(CM_SLICE("\xff", 1), CM_SLICE_STR("a")) > 0, "bytes compare unsigned");
    ok(cm_slice_case_eq_str(CM_SLICE_STR("Content-Type"), "content-type"), "case-insensitive eq");
    ok(cm_slice_has_prefix(CM_SLICE_STR("photos/2024"), CM_SLICE_STR("photos/")), "prefix");
    cm_pool *p = cm_pool_new();
    int called = 0;
    char *a = cm_pool_alloc(p, 10);
    char *big = cm_pool_alloc(p, 100000);
    char *c = cm_pool_strndup(p, "hello", 5);
    ok(a && big && c && strcmp(c, "hello") == 0, "pool allocations");
    memset(big, 1, 100000);
    cm_pool_cleanup_add(p, count_cleanup, &called);
    cm_pool_cleanup_add(p, count_cleanup, &called);
    cm_pool_free(p);
    is_int(called, 2, "pool cleanups ran");
    /* reset: cleanups run once, memory comes back zeroed and is reused */
    p = cm_pool_new();
    called = 0;
    a = cm_pool_alloc(p, 100);
    memset(a, 7, 100);
    big = cm_pool_alloc(p, 100000);
    memset(big, 7, 100000);
    for (int i = 0; i < 100; i++)
        memset(cm_pool_alloc(p, 200), 7, 200); /* several blocks */
    cm_pool_cleanup_add(p, count_cleanup, &called);
    cm_pool_reset(p);
    is_int(called, 1, "pool reset ran the cleanup");
    char *a2 = cm_pool_alloc(p, 100);
    bool zero = a2 != NULL;
    for (int i = 0; zero && i < 100; i++)
        zero = a2[i] == 0;
    ok(zero, "pool reset: allocations zeroed again");
    char *big2 = cm_pool_alloc(p, 100000);
    ok(big2 && big2[99999] == 0, "pool reset: large allocations after a reset");
    cm_pool_reset(p);
    cm_pool_free(p);
    is_int(called, 1, "pool cleanups ran once across reset and free");
    uint8_t r1[16], r2[16];
    cm_random_bytes(r1, 16);
    cm_random_bytes(r2, 16);
    ok(memcmp(r1, r2, 16) != 0, "random bytes differ");
    is_str(cm_strerror(CM_ENOTFOUND), "not found", "strerror");
}

static void test_bufkeep(void)
{
    cm_bufkeep k;
    is_int(cm_bufkeep_init(&k, 8192, 4096, 2), 0, "bufkeep: init");
    void *a = cm_bufkeep_get(&k), *b = cm_bufkeep_get(&k), *c = cm_bufkeep_get(&k);
    ok(a && b && c && a != b && b != c && a != c, "bufkeep: three distinct buffers");
    ok(((uintptr_t)a | (uintptr_t)b | (uintptr_t)c) % 4096 == 0, "bufkeep: aligned");
    memset(c, 7, 8192); /* the whole size is usable */
    cm_bufkeep_put(&k, a);
    cm_bufkeep_put(&k, b);
    cm_bufkeep_put(&k, c); /* over max: freed */
    cm_bufkeep_put(&k, NULL);
    is_int(k.n, 2, "bufkeep: keeps at most max");
    void *d = cm_bufkeep_get(&k), *e = cm_bufkeep_get(&k);
    ok((d == a || d == b) && (e == a || e == b) && d != e, "bufkeep: kept buffers are reused");
    cm_bufkeep_put(&k, d);
    cm_bufkeep_put(&k, e);
    cm_bufkeep_destroy(&k);
    is_int(k.n, 0, "bufkeep: destroy frees the kept ones");
}

int main(void)
{
    test_buf_codec();
    test_encodings();
    test_times();
    test_times_vs_libc();
    test_slices_pool();
    test_bufkeep();
    return done_testing();
}
