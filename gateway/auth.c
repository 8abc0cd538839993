/* gateway/auth.c - request authentication and payload integrity for the
 * gateway: runs SigV4 (sigv4.h) over a gw_req, looks up the secret, and
 * verifies the body as it streams (signed SHA-256, aws-chunked signatures,
 * Content-MD5, x-amz-checksum-* as headers or trailers). */
#include "gateway/gw_int.h"
#include "gateway/sigv2.h"
#include "gateway/sigv4.h"
#include <stdio.h>
#include <stdlib.h>

struct auth_state {
    sigv4_auth a;
    bool chunked;
    sigv4_stream_t *stream;
    gw_cksum sha;                /* raw body SHA-256 (signed payload mode) */
    bool check_sha;
    gw_cksum md5;                /* decoded body MD5 (ETag, Content-MD5) */
    bool md5_started;            /* md5 set up: at the first body bytes */
    uint8_t md5_digest[16];
    bool has_content_md5;
    uint8_t content_md5[16];
    enum gw_cksum_algo ck_algo;  /* checksum to verify, if any */
    gw_cksum ck;
    bool ck_trailer;             /* value arrives as a trailer */
    cm_slice ck_value;           /* header value (base64) */
    char ck_b64[GW_CKSUM_MAX_B64];
    bool ck_done;
    int (*sink)(gw_req *r, const uint8_t *p, size_t n);
    gw_req *r;
};

/* snprintf(dst, cap, "%s", src) without printf: every request copies its
 * access key and secret. cap > 0. */
static void copy_cstr(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n > cap - 1)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

/* The secret of access key ak into secret (wiped by the caller), and who
 * the requester is (r->root, r->user). False with the error set when the
 * key is unknown or its user is disabled (AWS answers InvalidAccessKeyId
 * for inactive keys too). */
static bool lookup_secret(gw_req *r, const char *ak, char *secret, size_t n)
{
    if (!strcmp(ak, r->srv->access_key)) {
        copy_cstr(secret, n, r->srv->secret_key);
        r->root = true;
        return true;
    }
    int depth;
    if (n >= 41 && gw_evt_session_secret(r->srv, ak, secret, &depth) == 0) {
        /* A function run's session key (events_glue.c): it acts for the
         * owner (admin.c still wants the root key), and what it changes
         * triggers events one level deeper (the recursion guard). */
        r->root = true;
        r->evt_depth = depth + 1;
        return true;
    }
    md_user u;
    int rc = md_user_by_key(r->srv->md, ak, &u);
    if (rc == 0 && u.enabled) {
        snprintf(secret, n, "%s", u.secret);
        snprintf(r->user, sizeof r->user, "%s", u.name);
    }
    cm_wipe(&u, sizeof u);
    if (rc && rc != CM_ENOTFOUND) {
        gw_error(r, S3E_InternalError);
        return false;
    }
    if (rc || !r->user[0]) {
        gw_error(r, S3E_InvalidAccessKeyId);
        gw_error_extra(r, "AWSAccessKeyId", CM_SLICE_STR(ak));
        return false;
    }
    return true;
}

static enum s3_err s3err_by_code(const char *code)
{
    for (int e = 1; e < S3E__COUNT; e++)
        if (!strcmp(gw_s3err_code((enum s3_err)e), code))
            return (enum s3_err)e;
    return S3E_AccessDenied;
}

static void sigv4_fail(gw_req *r, sigv4_auth *a)
{
    enum s3_err e = s3err_by_code(sigv4_err_code(a->err, a->presigned));
    gw_error_msg(r, e, a->errmsg[0] ? a->errmsg : NULL);
    if (a->err == SIGV4_ERR_REGION)
        gw_error_extra(r, "Region", CM_SLICE_STR(r->srv->cfg.region));
    if (a->err == SIGV4_ERR_SKEWED) {
        char now[20];
        cm_time_amz(time(NULL), now);
        gw_error_extra(r, "RequestTime", CM_SLICE_STR(a->amz_date));
        gw_error_extra(r, "ServerTime", CM_SLICE_STR(now));
        gw_error_extra(r, "MaxAllowedSkewMilliseconds", CM_SLICE_STR("900000"));
    }
}

static void hex_bytes(cm_buf *out, cm_slice s)
{
    for (size_t i = 0; i < s.n; i++)
        cm_buf_printf(out, i ? " %02x" : "%02x", s.p[i]);
}

/* The body's bytes as stored: the ETag's MD5 (with also, the payload's
 * SHA-256, when that is over the same bytes), the client's checksum, then
 * the sink. */
static int body_bytes(struct auth_state *st, const uint8_t *p, size_t n, gw_cksum *also)
{
    if (!st->md5_started) {
        gw_cksum_init(&st->md5, GW_CKSUM_MD5);
        st->md5_started = true;
    }
    if (also)
        gw_cksum_update2(&st->md5, also, p, n);
    else
        gw_cksum_update(&st->md5, p, n);
    if (st->ck_algo != GW_CKSUM_NONE)
        gw_cksum_update(&st->ck, p, n);
    if (st->sink && st->sink(st->r, p, n))
        return CM_EINVAL;
    return 0;
}

static int decoded_sink(void *arg, const uint8_t *p, size_t n)
{
    return body_bytes(arg, p, n, NULL);
}

static void build_sigreq(gw_req *r, sigv4_req *sr)
{
    sigv4_header *h = cm_pool_alloc(r->pool, (r->nhdrs + 1) * sizeof *h);
    for (size_t i = 0; i < r->nhdrs; i++) {
        h[i].name = r->hdrs[i].name;
        h[i].value = r->hdrs[i].value;
        if (cm_slice_case_eq_str(h[i].name, "host"))
            h[i].value = r->host;
    }
    memset(sr, 0, sizeof *sr);
    sr->method = r->method;
    sr->path = r->raw_path;
    sr->query = r->raw_query;
    sr->headers = h;
    sr->nheaders = r->nhdrs;
    sr->now = time(NULL);
    sr->region = CM_SLICE_STR(r->srv->cfg.region);
    sr->service = CM_SLICE_STR("s3");
}

/* The host[:port] of --public-url, or an empty slice. */
static cm_slice public_host(gw_req *r)
{
    const char *u = r->srv->cfg.public_url;
    if (!u)
        return CM_SLICE_NULL;
    const char *p = strstr(u, "://");
    p = p ? p + 3 : u;
    size_t n = strcspn(p, "/?#");
    return CM_SLICE(p, n);
}

/* Per-thread cache of the last signing key. The key depends only on
 * (secret, date, region, service), so a connection's thread derives it once
 * a day instead of four HMACs per request. The cache holds secrets: it is
 * wiped when the thread ends. */
struct key_cache {
    char ak[132], date[9], region[64], service[32];
    char secret[160];
    uint8_t key[32];
};
static pthread_key_t key_cache_key;
static pthread_once_t key_cache_once = PTHREAD_ONCE_INIT;

static void key_cache_free(void *p)
{
    cm_wipe(p, sizeof(struct key_cache));
    free(p);
}

static void key_cache_init(void)
{
    pthread_key_create(&key_cache_key, key_cache_free);
}

static int verify_cached(const sigv4_req *sr, sigv4_auth *a, const char *secret, cm_buf *creq,
                         cm_buf *sts, sigv4_seed *seed)
{
    pthread_once(&key_cache_once, key_cache_init);
    struct key_cache *kc = pthread_getspecific(key_cache_key);
    if (!kc && (kc = calloc(1, sizeof *kc)) && pthread_setspecific(key_cache_key, kc)) {
        free(kc);
        kc = NULL;
    }
    if (!kc || strlen(secret) >= sizeof kc->secret)
        return sigv4_verify(sr, a, CM_SLICE_STR(secret), creq, sts, seed);
    if (strcmp(kc->ak, a->access_key) || strcmp(kc->date, a->date) ||
        strcmp(kc->region, a->region) || strcmp(kc->service, a->service) ||
        strcmp(kc->secret, secret)) {
        kc->ak[0] = 0; /* invalid until fully derived */
        if (sigv4_signing_key(CM_SLICE_STR(secret), CM_SLICE_STR(a->date), CM_SLICE_STR(a->region),
                              CM_SLICE_STR(a->service), kc->key))
            return CM_ENOMEM;
        snprintf(kc->date, sizeof kc->date, "%s", a->date);
        snprintf(kc->region, sizeof kc->region, "%s", a->region);
        snprintf(kc->service, sizeof kc->service, "%s", a->service);
        snprintf(kc->secret, sizeof kc->secret, "%s", secret);
        snprintf(kc->ak, sizeof kc->ak, "%s", a->access_key);
    }
    return sigv4_verify_key(sr, a, kc->key, creq, sts, seed);
}

/* Sets up checksum verification from headers; false with an error set. */
static bool setup_checksums(gw_req *r, struct auth_state *st)
{
    int found = 0;
    for (size_t i = 0; i < r->nhdrs; i++) {
        cm_slice n = r->hdrs[i].name;
        enum gw_cksum_algo al;
        if (n.n > 15 && cm_slice_case_eq_str(CM_SLICE(n.p, 15), "x-amz-checksum-") &&
            gw_cksum_algo_parse(n, &al) == 0) {
            uint8_t dig[GW_CKSUM_MAX_DIGEST];
            if (gw_cksum_decode_b64(al, r->hdrs[i].value, dig)) {
                char msg[160];
                snprintf(msg, sizeof msg, "Value for %s header is invalid.",
                         gw_cksum_header_name(al));
                gw_error_msg(r, S3E_InvalidRequest, msg);
                return false;
            }
            st->ck_algo = al;
            st->ck_value = r->hdrs[i].value;
            found++;
        }
    }
    cm_slice tr;
    if (gw_hdr(r, "x-amz-trailer", &tr)) {
        enum gw_cksum_algo al;
        if (gw_cksum_algo_parse(tr, &al)) {
            gw_error_msg(r, S3E_InvalidRequest, "The value specified in the x-amz-trailer header is not supported");
            return false;
        }
        if (!st->chunked || st->a.payload == SIGV4_PAYLOAD_STREAMING) {
            gw_error_msg(r, S3E_InvalidRequest, "x-amz-trailer requires a trailer payload mode");
            return false;
        }
        st->ck_algo = al;
        st->ck_trailer = true;
        found++;
    }
    if (found > 1) {
        gw_error_msg(r, S3E_InvalidRequest, "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.");
        return false;
    }
    if (st->ck_algo != GW_CKSUM_NONE && gw_cksum_init(&st->ck, st->ck_algo)) {
        gw_error(r, S3E_InternalError);
        return false;
    }
    cm_slice cmd5;
    if (gw_hdr(r, "Content-MD5", &cmd5)) {
        uint8_t tmp[24];
        size_t n = 0;
        if (cmd5.n > 24 || cm_base64_decode((const char *)cmd5.p, cmd5.n, tmp, &n) || n != 16) {
            gw_error(r, S3E_InvalidDigest);
            return false;
        }
        memcpy(st->content_md5, tmp, 16);
        st->has_content_md5 = true;
    }
    return true;
}

static int auth_begin(gw_req *r, char *secret, size_t secret_n);

int gw_auth_begin(gw_req *r)
{
    char secret[160];
    int rc = auth_begin(r, secret, sizeof secret);
    cm_wipe(secret, sizeof secret);
    return rc;
}

static int auth_begin(gw_req *r, char *secret, size_t secret_n)
{
    /* From the request's pool (about 1 KiB: a malloc of that size makes
     * glibc consolidate its fast bins every time); gw_auth_free frees what
     * it points to. */
    struct auth_state *st = cm_pool_alloc(r->pool, sizeof *st);
    if (!st) {
        gw_error(r, S3E_InternalError);
        return -1;
    }
    r->auth = st;
    st->r = r;
    if (gw_sigv2_present(r)) {
        /* Legacy Signature Version 2 (e.g. aws cli v1's `s3 presign`). */
        if (gw_sigv2_auth(r, lookup_secret, secret, secret_n))
            return -1;
        return setup_checksums(r, st) ? 0 : -1;
    }
    sigv4_req sr;
    build_sigreq(r, &sr);
    int rc = sigv4_parse(&sr, &st->a);
    if (rc) {
        if (st->a.err == SIGV4_ERR_ANONYMOUS) {
            /* Not an error by itself: authorization (authz.c) decides. */
            r->anonymous = true;
            return setup_checksums(r, st) ? 0 : -1;
        } else {
            sigv4_fail(r, &st->a);
        }
        return -1;
    }
    copy_cstr(r->access_key, sizeof r->access_key, st->a.access_key);
    if (!lookup_secret(r, st->a.access_key, secret, secret_n))
        return -1;
    cm_buf creq = {0}, sts = {0};
    sigv4_seed seed;
    memset(&seed, 0, sizeof seed);
    rc = verify_cached(&sr, &st->a, secret, &creq, &sts, &seed);
    cm_slice pub = public_host(r);
    if (rc && st->a.err == SIGV4_ERR_SIGNATURE && pub.n && !cm_slice_eq(pub, r->host)) {
        /* Behind a proxy that rewrites Host: the client signed the public host. */
        sigv4_req sr2;
        cm_slice saved = r->host;
        r->host = pub;
        build_sigreq(r, &sr2);
        r->host = saved;
        sigv4_auth_free(&st->a);
        memset(&st->a, 0, sizeof st->a);
        if (sigv4_parse(&sr2, &st->a) == 0 &&
            sigv4_verify(&sr2, &st->a, CM_SLICE_STR(secret), NULL, NULL, &seed) == 0)
            rc = 0;
        else
            st->a.err = SIGV4_ERR_SIGNATURE;
    }
    if (rc) {
        char sig[65];
        sigv4_fail(r, &st->a);
        if (st->a.err == SIGV4_ERR_SIGNATURE) {
            cm_buf hb = {0};
            cm_hex_encode(st->a.signature, 32, sig);
            gw_error_extra(r, "AWSAccessKeyId", CM_SLICE_STR(st->a.access_key));
            gw_error_extra(r, "StringToSign", cm_buf_slice(&sts));
            gw_error_extra(r, "SignatureProvided", CM_SLICE_STR(sig));
            hex_bytes(&hb, cm_buf_slice(&sts));
            gw_error_extra(r, "StringToSignBytes", cm_buf_slice(&hb));
            gw_error_extra(r, "CanonicalRequest", cm_buf_slice(&creq));
            cm_buf_reset(&hb);
            hex_bytes(&hb, cm_buf_slice(&creq));
            gw_error_extra(r, "CanonicalRequestBytes", cm_buf_slice(&hb));
            cm_buf_free(&hb);
        }
        cm_buf_free(&creq);
        cm_buf_free(&sts);
        sigv4_seed_wipe(&seed);
        return -1;
    }
    cm_buf_free(&creq);
    cm_buf_free(&sts);
    st->chunked = sigv4_payload_is_chunked(st->a.payload);
    if (st->chunked) {
        st->stream = sigv4_stream_new(st->a.payload, &seed, st->a.decoded_length, decoded_sink, st);
        if (st->a.decoded_length >= 0) {
            r->content_length = (uint64_t)st->a.decoded_length;
            r->has_length = true;
        }
    } else if (st->a.payload == SIGV4_PAYLOAD_SHA256) {
        st->check_sha = true;
        gw_cksum_init(&st->sha, GW_CKSUM_SHA256);
    }
    sigv4_seed_wipe(&seed);
    if (st->chunked && !st->stream) {
        gw_error(r, S3E_InternalError);
        return -1;
    }
    if (!setup_checksums(r, st))
        return -1;
    return 0;
}

int gw_auth_body(gw_req *r, const uint8_t *p, size_t n,
                 int (*sink)(gw_req *r, const uint8_t *p, size_t n))
{
    struct auth_state *st = r->auth;
    if (!st)
        return -1;
    st->sink = sink;
    if (!st->chunked) /* the payload hash is over the stored bytes: both at once */
        return body_bytes(st, p, n, st->check_sha ? &st->sha : NULL) ? -1 : 0;
    if (st->check_sha)
        gw_cksum_update(&st->sha, p, n);
    int rc = sigv4_stream_feed(st->stream, p, n);
    if (rc) {
        if (r->err == S3E__NONE) {
            enum sigv4_err e = sigv4_stream_err(st->stream);
            gw_error(r, e == SIGV4_OK ? S3E_InternalError
                                      : s3err_by_code(sigv4_err_code(e, false)));
        }
        return -1;
    }
    return 0;
}

int gw_auth_end(gw_req *r)
{
    struct auth_state *st = r->auth;
    if (!st)
        return -1;
    if (st->chunked) {
        if (sigv4_stream_finish(st->stream)) {
            gw_error(r, s3err_by_code(sigv4_err_code(sigv4_stream_err(st->stream), false)));
            return -1;
        }
    } else if (st->check_sha) {
        uint8_t d[GW_CKSUM_MAX_DIGEST];
        size_t dn = 0;
        gw_cksum_final(&st->sha, d, &dn);
        if (dn != 32 || memcmp(d, st->a.payload_sha256, 32)) {
            char calc[65], got[65];
            cm_hex_encode(d, 32, calc);
            cm_hex_encode(st->a.payload_sha256, 32, got);
            gw_error(r, S3E_XAmzContentSHA256Mismatch);
            gw_error_extra(r, "ClientComputedContentSHA256", CM_SLICE_STR(got));
            gw_error_extra(r, "S3ComputedContentSHA256", CM_SLICE_STR(calc));
            return -1;
        }
    }
    size_t dn = 0;
    uint8_t d[GW_CKSUM_MAX_DIGEST];
    if (st->md5_started) {
        gw_cksum_final(&st->md5, d, &dn);
        memcpy(st->md5_digest, d, 16);
    } else { /* no body (GET, HEAD, DELETE...): the MD5 of nothing */
        static const uint8_t empty[16] = {0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04,
                                          0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8, 0x42, 0x7e};
        memcpy(st->md5_digest, empty, 16);
    }
    if (st->has_content_md5 && memcmp(st->content_md5, st->md5_digest, 16)) {
        gw_error(r, S3E_BadDigest);
        return -1;
    }
    if (st->ck_algo != GW_CKSUM_NONE) {
        gw_cksum_final_b64(&st->ck, st->ck_b64);
        st->ck_done = true;
        cm_slice want = st->ck_value;
        if (st->ck_trailer &&
            !sigv4_stream_trailer(st->stream, gw_cksum_header_name(st->ck_algo), &want)) {
            gw_error_msg(r, S3E_InvalidRequest, "The x-amz-trailer header named a checksum that the body did not carry.");
            return -1;
        }
        if (!cm_slice_eq_str(want, st->ck_b64)) {
            char msg[160];
            snprintf(msg, sizeof msg, "The %s you specified did not match the calculated checksum.",
                     gw_cksum_algo_name(st->ck_algo));
            gw_error_msg(r, S3E_BadDigest, msg);
            return -1;
        }
    }
    return 0;
}

const uint8_t *gw_auth_md5(gw_req *r)
{
    struct auth_state *st = r->auth;
    return st->md5_digest;
}

bool gw_auth_checksum(gw_req *r, const char **name, const char **value_b64)
{
    struct auth_state *st = r->auth;
    if (!st || !st->ck_done)
        return false;
    *name = gw_cksum_header_name(st->ck_algo);
    *value_b64 = st->ck_b64;
    return true;
}

void gw_auth_free(gw_req *r)
{
    struct auth_state *st = r->auth;
    if (!st)
        return;
    sigv4_stream_free(st->stream);
    sigv4_auth_free(&st->a);
    gw_cksum_free(&st->sha);
    gw_cksum_free(&st->md5);
    gw_cksum_free(&st->ck);
    r->auth = NULL; /* st itself goes with the pool */
}
