/* gateway/sigv4.c - AWS SigV4 request authentication, server side: parsing
 * the Authorization header or presigned query, the canonical request (S3
 * rules: the path is re-encoded, never normalised), string to sign, signing
 * key and constant-time comparison. aws-chunked bodies are sigv4_stream.c;
 * secret lookup and S3 error rendering belong to the gateway's auth.c. */
#include "gateway/sigv4.h"

#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define MAX_SIGNED_HEADERS_LEN 4096
#define MAX_TOKEN_LEN 8192

/* ----------------------------------------------------------------- errors */

static const struct {
    const char *code;
    int status;
} err_tab[SIGV4_ERR__COUNT] = {
    [SIGV4_OK] = {"", 200},
    [SIGV4_ERR_ANONYMOUS] = {"AccessDenied", 403},
    [SIGV4_ERR_UNSUPPORTED] = {"InvalidArgument", 400},
    [SIGV4_ERR_MULTIPLE_AUTH] = {"InvalidArgument", 400},
    [SIGV4_ERR_HEADER_MALFORMED] = {"AuthorizationHeaderMalformed", 400},
    [SIGV4_ERR_QUERY_MALFORMED] = {"AuthorizationQueryParametersError", 400},
    [SIGV4_ERR_REGION] = {"AuthorizationHeaderMalformed", 400},
    [SIGV4_ERR_MISSING_DATE] = {"AccessDenied", 403},
    [SIGV4_ERR_BAD_DATE] = {"AccessDenied", 403},
    [SIGV4_ERR_SKEWED] = {"RequestTimeTooSkewed", 403},
    [SIGV4_ERR_EXPIRED] = {"AccessDenied", 403},
    [SIGV4_ERR_NOT_YET_VALID] = {"AccessDenied", 403},
    [SIGV4_ERR_CONTENT_SHA256] = {"InvalidArgument", 400},
    [SIGV4_ERR_MISSING_LENGTH] = {"MissingContentLength", 411},
    [SIGV4_ERR_SIGNATURE] = {"SignatureDoesNotMatch", 403},
    [SIGV4_ERR_CHUNK_FORMAT] = {"InvalidRequest", 400},
    [SIGV4_ERR_INCOMPLETE_BODY] = {"IncompleteBody", 400},
};

const char *sigv4_err_code(enum sigv4_err e, bool presigned)
{
    if ((int)e < 0 || e >= SIGV4_ERR__COUNT)
        return "InternalError";
    if (e == SIGV4_ERR_REGION && presigned)
        return "AuthorizationQueryParametersError";
    return err_tab[e].code;
}

int sigv4_err_status(enum sigv4_err e)
{
    if ((int)e < 0 || e >= SIGV4_ERR__COUNT)
        return 500;
    return err_tab[e].status;
}

static int fail(sigv4_auth *a, enum sigv4_err e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(sigv4_auth *a, enum sigv4_err e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->errmsg, sizeof a->errmsg, fmt, ap);
    va_end(ap);
    a->err = e;
    return CM_EAUTH;
}

bool sigv4_payload_is_chunked(enum sigv4_payload m)
{
    return m == SIGV4_PAYLOAD_STREAMING || m == SIGV4_PAYLOAD_STREAMING_TRAILER ||
           m == SIGV4_PAYLOAD_UNSIGNED_TRAILER;
}

/* ---------------------------------------------------------------- helpers */

static bool is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static cm_slice trim(cm_slice s)
{
    while (s.n && is_ws(s.p[0])) {
        s.p++;
        s.n--;
    }
    while (s.n && is_ws(s.p[s.n - 1]))
        s.n--;
    return s;
}

static bool is_hex(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool all_hex(cm_slice s)
{
    for (size_t i = 0; i < s.n; i++)
        if (!is_hex(s.p[i]))
            return false;
    return true;
}

/* Copies s into a fixed buffer of size cap (NUL-terminated); false if it
 * does not fit. */
static bool copy_str(char *dst, size_t cap, cm_slice s)
{
    if (s.n >= cap)
        return false;
    memcpy(dst, s.p, s.n);
    dst[s.n] = 0;
    return true;
}

static bool printable(cm_slice s)
{
    for (size_t i = 0; i < s.n; i++)
        if (s.p[i] <= ' ' || s.p[i] >= 0x7f)
            return false;
    return true;
}

/* First header named name (case-insensitive); *count gets how many. */
static bool find_header(const sigv4_req *req, const char *name, cm_slice *value, int *count)
{
    int c = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        if (cm_slice_case_eq_str(req->headers[i].name, name)) {
            if (c++ == 0)
                *value = req->headers[i].value;
        }
    }
    if (count)
        *count = c;
    return c > 0;
}

/* Splits s at the first sep: *head before it, s after it. False if absent. */
static bool split(cm_slice *s, uint8_t sep, cm_slice *head)
{
    const uint8_t *q = s->n ? memchr(s->p, sep, s->n) : NULL;
    if (!q) {
        *head = *s;
        *s = CM_SLICE_NULL;
        return false;
    }
    *head = CM_SLICE(s->p, (size_t)(q - s->p));
    s->n -= (size_t)(q - s->p) + 1;
    s->p = q + 1;
    return true;
}

/* Appends raw (a path or a query name/value as sent) in canonical form:
 * every valid %XX is decoded, then every byte outside the RFC 3986
 * unreserved set is written as uppercase %XX. In a path a literal '/' stays
 * (an encoded %2F stays encoded); in a query '+' means a space. A '%' not
 * followed by two hex digits is taken as a literal '%'. */
static int canon_encode(cm_buf *b, cm_slice raw, bool path)
{
    static const char hex[] = "0123456789ABCDEF";
    if (cm_buf_reserve(b, raw.n * 3))
        return CM_ENOMEM;
    for (size_t i = 0; i < raw.n; i++) {
        uint8_t c = raw.p[i];
        if (c == '/' && path) {
            b->p[b->n++] = '/';
            continue;
        }
        if (c == '%' && i + 2 < raw.n && cm_hexval(raw.p[i + 1]) >= 0 && cm_hexval(raw.p[i + 2]) >= 0) {
            c = (uint8_t)(cm_hexval(raw.p[i + 1]) << 4 | cm_hexval(raw.p[i + 2]));
            i += 2;
        } else if (c == '+' && !path) {
            c = ' ';
        }
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            b->p[b->n++] = c;
        } else {
            b->p[b->n++] = '%';
            b->p[b->n++] = (uint8_t)hex[c >> 4];
            b->p[b->n++] = (uint8_t)hex[c & 15];
        }
    }
    b->p[b->n] = 0;
    return 0;
}

/* Percent-decodes a query name or value ('+' is a space) into b (reset
 * first). A malformed escape is kept literally. */
static int query_decode(cm_buf *b, cm_slice raw)
{
    cm_buf_reset(b);
    if (cm_buf_reserve(b, raw.n + 1))
        return CM_ENOMEM;
    for (size_t i = 0; i < raw.n; i++) {
        uint8_t c = raw.p[i];
        if (c == '%' && i + 2 < raw.n && cm_hexval(raw.p[i + 1]) >= 0 && cm_hexval(raw.p[i + 2]) >= 0) {
            c = (uint8_t)(cm_hexval(raw.p[i + 1]) << 4 | cm_hexval(raw.p[i + 2]));
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        b->p[b->n++] = c;
    }
    b->p[b->n] = 0;
    return 0;
}

static int hmac256(const uint8_t *key, size_t keylen, const void *p, size_t n, uint8_t out[32])
{
    return gw_hmac_sha256(key, keylen, p, n, out);
}

/* --------------------------------------------------------------- parsing */

/* "AK/20150830/us-east-1/s3/aws4_request". The access key may itself hold
 * '/', so the scope is taken from the right. */
static int parse_credential(const sigv4_req *req, sigv4_auth *a, cm_slice cred, enum sigv4_err bad)
{
    cm_slice part[4];
    size_t end = cred.n;
    const char *what = a->presigned ? "Error parsing the X-Amz-Credential parameter"
                                    : "The authorization header is malformed";
    for (int i = 3; i >= 0; i--) {
        size_t j = end;
        while (j > 0 && cred.p[j - 1] != '/')
            j--;
        if (j == 0)
            return fail(a, bad,
                        "%s; the Credential is mal-formed; expecting "
                        "\"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".",
                        what);
        part[i] = CM_SLICE(cred.p + j, end - j);
        end = j - 1;
    }
    cm_slice ak = CM_SLICE(cred.p, end);
    if (!ak.n || !printable(ak) || !copy_str(a->access_key, sizeof a->access_key, ak))
        return fail(a, bad, "%s; the Credential is mal-formed; bad access key id.", what);
    bool date_ok = part[0].n == 8;
    for (size_t i = 0; date_ok && i < 8; i++)
        date_ok = part[0].p[i] >= '0' && part[0].p[i] <= '9';
    if (!date_ok || !copy_str(a->date, sizeof a->date, part[0]))
        return fail(a, bad, "%s; invalid credential date \"%.*s\".", what,
                    (int)(part[0].n > 16 ? 16 : part[0].n), (const char *)part[0].p);
    if (!part[1].n || !printable(part[1]) || !copy_str(a->region, sizeof a->region, part[1]))
        return fail(a, bad, "%s; the Credential is mal-formed; bad region.", what);
    if (!part[2].n || !printable(part[2]) || !copy_str(a->service, sizeof a->service, part[2]))
        return fail(a, bad, "%s; the Credential is mal-formed; bad service.", what);
    if (req->service.n && !cm_slice_eq(part[2], req->service))
        return fail(a, bad, "%s; incorrect service \"%s\". This endpoint belongs to \"%.*s\".",
                    what, a->service, (int)req->service.n, (const char *)req->service.p);
    if (!cm_slice_eq_str(part[3], "aws4_request"))
        return fail(a, bad, "%s; incorrect terminal \"%.*s\". This endpoint uses \"aws4_request\".",
                    what, (int)(part[3].n > 32 ? 32 : part[3].n), (const char *)part[3].p);
    /* "date/region/service/aws4_request": at most 8+1+63+1+31+13 bytes */
    char *o = a->scope;
    const char *const parts[] = {a->date, "/", a->region, "/", a->service, "/aws4_request"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        size_t n = strlen(parts[i]);
        memcpy(o, parts[i], n);
        o += n;
    }
    *o = 0;
    return 0;
}

/* "host;x-amz-date": lowercase header names, ';'-separated, host included. */
static int parse_signed_headers(sigv4_auth *a, cm_slice sh, enum sigv4_err bad)
{
    bool host = false;
    cm_slice rest = sh, name;
    if (!sh.n || sh.n > MAX_SIGNED_HEADERS_LEN)
        return fail(a, bad, "SignedHeaders is missing or too long.");
    for (bool more = true; more;) {
        more = split(&rest, ';', &name);
        if (!name.n)
            return fail(a, bad, "SignedHeaders has an empty header name.");
        for (size_t i = 0; i < name.n; i++) {
            uint8_t c = name.p[i];
            if (c <= ' ' || c >= 0x7f || (c >= 'A' && c <= 'Z') || c == ':')
                return fail(a, bad, "SignedHeaders must be lowercase header names.");
        }
        if (cm_slice_eq_str(name, "host"))
            host = true;
    }
    if (!host)
        return fail(a, bad, "SignedHeaders must include host.");
    free(a->signed_headers);
    a->signed_headers = cm_slice_strdup(sh);
    return a->signed_headers ? 0 : CM_ENOMEM;
}

static int parse_signature(sigv4_auth *a, cm_slice sig, enum sigv4_err bad)
{
    if (sig.n != 64 || cm_hex_decode((const char *)sig.p, sig.n, a->signature))
        return fail(a, bad, "%s must be 64 hexadecimal digits.",
                    a->presigned ? "X-Amz-Signature" : "Signature");
    return 0;
}

static int parse_header_auth(const sigv4_req *req, sigv4_auth *a, cm_slice v)
{
    const enum sigv4_err bad = SIGV4_ERR_HEADER_MALFORMED;
    static const char algo[] = SIGV4_ALGORITHM;
    cm_slice cred = CM_SLICE_NULL, sh = CM_SLICE_NULL, sig = CM_SLICE_NULL;
    bool have_cred = false, have_sh = false, have_sig = false;
    int rc;

    v = trim(v);
    if (!(v.n > sizeof algo - 1 && memcmp(v.p, algo, sizeof algo - 1) == 0 &&
          (v.p[sizeof algo - 1] == ' ' || v.p[sizeof algo - 1] == '\t'))) {
        if (v.n >= 4 && memcmp(v.p, "AWS ", 4) == 0)
            return fail(a, SIGV4_ERR_UNSUPPORTED,
                        "The authorization mechanism you have provided is not supported. "
                        "Please use AWS4-HMAC-SHA256.");
        if (v.n >= 5 && memcmp(v.p, "AWS4-", 5) == 0)
            return fail(a, SIGV4_ERR_UNSUPPORTED,
                        "The authorization mechanism you have provided is not supported. "
                        "Please use AWS4-HMAC-SHA256.");
        return fail(a, SIGV4_ERR_UNSUPPORTED, "Unsupported Authorization Type");
    }
    cm_slice rest = CM_SLICE(v.p + sizeof algo - 1, v.n - (sizeof algo - 1)), comp;
    for (bool more = true; more;) {
        more = split(&rest, ',', &comp);
        comp = trim(comp);
        if (!comp.n)
            return fail(a, bad, "The authorization header is malformed; empty component.");
        cm_slice key;
        if (!split(&comp, '=', &key))
            return fail(a, bad,
                        "The authorization header is malformed; a component is not key=value.");
        key = trim(key);
        comp = trim(comp);
        bool *seen;
        cm_slice *dst;
        if (cm_slice_eq_str(key, "Credential")) {
            seen = &have_cred;
            dst = &cred;
        } else if (cm_slice_eq_str(key, "SignedHeaders")) {
            seen = &have_sh;
            dst = &sh;
        } else if (cm_slice_eq_str(key, "Signature")) {
            seen = &have_sig;
            dst = &sig;
        } else {
            return fail(a, bad,
                        "The authorization header is malformed; unknown component \"%.*s\".",
                        (int)(key.n > 32 ? 32 : key.n), (const char *)key.p);
        }
        if (*seen)
            return fail(a, bad, "The authorization header is malformed; repeated component.");
        *seen = true;
        *dst = comp;
    }
    if (!have_cred || !have_sh || !have_sig)
        return fail(a, bad,
                    "The authorization header is malformed; it must contain Credential, "
                    "SignedHeaders and Signature.");
    if ((rc = parse_credential(req, a, cred, bad)) || (rc = parse_signed_headers(a, sh, bad)) ||
        (rc = parse_signature(a, sig, bad)))
        return rc;

    /* The request time: x-amz-date, else Date. */
    cm_slice d;
    int n = 0;
    if (find_header(req, "x-amz-date", &d, &n)) {
        d = trim(d);
        if (n > 1 || cm_time_parse_amz((const char *)d.p, d.n, &a->t))
            return fail(a, SIGV4_ERR_BAD_DATE,
                        "AWS authentication requires a valid Date or x-amz-date header");
    } else if (find_header(req, "date", &d, &n)) {
        d = trim(d);
        if (n > 1 || cm_time_parse_http((const char *)d.p, d.n, &a->t))
            return fail(a, SIGV4_ERR_BAD_DATE,
                        "AWS authentication requires a valid Date or x-amz-date header");
    } else {
        return fail(a, SIGV4_ERR_MISSING_DATE,
                    "AWS authentication requires a valid Date or x-amz-date header");
    }
    cm_time_amz(a->t, a->amz_date);

    cm_slice tok;
    if (find_header(req, "x-amz-security-token", &tok, &n)) {
        tok = trim(tok);
        if (n > 1 || tok.n > MAX_TOKEN_LEN)
            return fail(a, SIGV4_ERR_HEADER_MALFORMED, "Invalid x-amz-security-token.");
        if (!(a->security_token = cm_slice_strdup(tok)))
            return CM_ENOMEM;
    }
    return 0;
}

/* Iterates over name=value pairs of a raw query string. */
static bool query_next(cm_slice *q, cm_slice *name, cm_slice *value)
{
    cm_slice param;
    do {
        if (!q->p)
            return false;
        split(q, '&', &param); /* after the last one q->p is NULL */
    } while (!param.n);
    if (!split(&param, '=', name))
        *value = CM_SLICE_NULL;
    else
        *value = param;
    return true;
}

static bool query_has(cm_slice q, const char *name)
{
    cm_slice n, v;
    while (query_next(&q, &n, &v))
        if (cm_slice_eq_str(n, name))
            return true;
    return false;
}

enum { QP_ALGO, QP_CRED, QP_DATE, QP_EXPIRES, QP_SH, QP_SIG, QP_TOKEN, QP_SHA, QP_N };
static const char *const qp_names[QP_N] = {
    "X-Amz-Algorithm",     "X-Amz-Credential", "X-Amz-Date",           "X-Amz-Expires",
    "X-Amz-SignedHeaders", "X-Amz-Signature",  "X-Amz-Security-Token", "X-Amz-Content-Sha256",
};

static int parse_query_auth(const sigv4_req *req, sigv4_auth *a, cm_buf *qv, cm_buf *payload)
{
    const enum sigv4_err bad = SIGV4_ERR_QUERY_MALFORMED;
    cm_buf val[QP_N] = {{0}};
    bool seen[QP_N] = {0};
    cm_slice q = req->query, n, v;
    int rc = 0;

    a->presigned = true;
    while (query_next(&q, &n, &v)) {
        if ((rc = query_decode(qv, n)))
            goto out;
        for (int i = 0; i < QP_N; i++) {
            if (!cm_slice_eq_str(cm_buf_slice(qv), qp_names[i]))
                continue;
            if (seen[i]) {
                rc = fail(a, bad, "%s appears more than once.", qp_names[i]);
                goto out;
            }
            seen[i] = true;
            if ((rc = query_decode(&val[i], v)))
                goto out;
        }
    }
    if (!seen[QP_ALGO] || !seen[QP_CRED] || !seen[QP_DATE] || !seen[QP_EXPIRES] || !seen[QP_SH] ||
        !seen[QP_SIG]) {
        rc = fail(a, bad,
                  "Query-string authentication version 4 requires the X-Amz-Algorithm, "
                  "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and "
                  "X-Amz-Expires parameters.");
        goto out;
    }
    if (!cm_slice_eq_str(cm_buf_slice(&val[QP_ALGO]), SIGV4_ALGORITHM)) {
        rc = fail(a, bad, "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"");
        goto out;
    }
    if ((rc = parse_credential(req, a, cm_buf_slice(&val[QP_CRED]), bad)) ||
        (rc = parse_signed_headers(a, cm_buf_slice(&val[QP_SH]), bad)) ||
        (rc = parse_signature(a, cm_buf_slice(&val[QP_SIG]), bad)))
        goto out;

    cm_slice d = cm_buf_slice(&val[QP_DATE]);
    if (cm_time_parse_amz((const char *)d.p, d.n, &a->t)) {
        rc = fail(a, bad, "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"");
        goto out;
    }
    cm_time_amz(a->t, a->amz_date);

    cm_slice e = cm_buf_slice(&val[QP_EXPIRES]);
    if (e.n && e.p[0] == '-' && e.n > 1 && e.p[1] >= '0' && e.p[1] <= '9') {
        rc = fail(a, bad, "X-Amz-Expires must be non-negative");
        goto out;
    }
    int64_t exp = 0;
    bool exp_ok = e.n > 0 && e.n <= 18;
    for (size_t i = 0; exp_ok && i < e.n; i++) {
        exp_ok = e.p[i] >= '0' && e.p[i] <= '9';
        exp = exp * 10 + (e.p[i] - '0');
    }
    if (!exp_ok) {
        rc = fail(a, bad, "X-Amz-Expires should be a number");
        goto out;
    }
    if (exp > SIGV4_MAX_EXPIRES) {
        rc = fail(a, bad, "X-Amz-Expires must be less than a week (in seconds) that is 604800");
        goto out;
    }
    a->expires = exp;

    if (seen[QP_TOKEN]) {
        if (val[QP_TOKEN].n > MAX_TOKEN_LEN) {
            rc = fail(a, bad, "Invalid X-Amz-Security-Token.");
            goto out;
        }
        if (!(a->security_token = cm_slice_strdup(cm_buf_slice(&val[QP_TOKEN])))) {
            rc = CM_ENOMEM;
            goto out;
        }
    }
    if (seen[QP_SHA] && (rc = cm_buf_append_slice(payload, cm_buf_slice(&val[QP_SHA]))))
        goto out;
    if (seen[QP_SHA] && !payload->n)
        rc = cm_buf_append_str(payload, "-"); /* present but empty: invalid, not absent */
out:
    for (int i = 0; i < QP_N; i++)
        cm_buf_free(&val[i]);
    return rc;
}

static int parse_payload(const sigv4_req *req, sigv4_auth *a, cm_slice qsha)
{
    static const struct {
        const char *value;
        enum sigv4_payload mode;
    } modes[] = {
        {"UNSIGNED-PAYLOAD", SIGV4_PAYLOAD_UNSIGNED},
        {"STREAMING-AWS4-HMAC-SHA256-PAYLOAD", SIGV4_PAYLOAD_STREAMING},
        {"STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", SIGV4_PAYLOAD_STREAMING_TRAILER},
        {"STREAMING-UNSIGNED-PAYLOAD-TRAILER", SIGV4_PAYLOAD_UNSIGNED_TRAILER},
    };
    cm_slice v = qsha;
    int n = 0;
    bool have = qsha.n > 0;

    if (!have && find_header(req, "x-amz-content-sha256", &v, &n)) {
        v = trim(v);
        have = true;
        if (n > 1)
            v = CM_SLICE_NULL; /* duplicates: invalid */
    }
    if (!have) {
        a->payload_defaulted = true;
        if (a->presigned) {
            a->payload = SIGV4_PAYLOAD_UNSIGNED;
            strcpy(a->payload_hash, "UNSIGNED-PAYLOAD");
        } else {
            a->payload = SIGV4_PAYLOAD_SHA256;
            strcpy(a->payload_hash, EMPTY_SHA256);
            cm_hex_decode(EMPTY_SHA256, 64, a->payload_sha256);
        }
        return 0;
    }
    if (v.n == 64 && all_hex(v)) {
        a->payload = SIGV4_PAYLOAD_SHA256;
        copy_str(a->payload_hash, sizeof a->payload_hash, v);
        cm_hex_decode((const char *)v.p, 64, a->payload_sha256);
        return 0;
    }
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        if (cm_slice_eq_str(v, modes[i].value)) {
            a->payload = modes[i].mode;
            strcpy(a->payload_hash, modes[i].value);
            return 0;
        }
    }
    if (cm_slice_has_prefix(v, CM_SLICE_STR("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD")))
        return fail(a, SIGV4_ERR_UNSUPPORTED,
                    "The authorization mechanism you have provided is not supported. "
                    "Please use AWS4-HMAC-SHA256.");
    return fail(a, SIGV4_ERR_CONTENT_SHA256,
                "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                "STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, "
                "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid sha256 value.");
}

static int parse_decoded_length(const sigv4_req *req, sigv4_auth *a)
{
    cm_slice v;
    int n = 0;
    a->decoded_length = -1;
    if (find_header(req, "x-amz-decoded-content-length", &v, &n)) {
        v = trim(v);
        bool ok = n == 1 && v.n > 0 && v.n <= 18;
        int64_t len = 0;
        for (size_t i = 0; ok && i < v.n; i++) {
            ok = v.p[i] >= '0' && v.p[i] <= '9';
            len = len * 10 + (v.p[i] - '0');
        }
        if (ok)
            a->decoded_length = len;
    }
    if (sigv4_payload_is_chunked(a->payload) && a->decoded_length < 0)
        return fail(a, SIGV4_ERR_MISSING_LENGTH,
                    "You must provide the Content-Length HTTP header "
                    "(x-amz-decoded-content-length for aws-chunked bodies).");
    return 0;
}

int sigv4_parse(const sigv4_req *req, sigv4_auth *out)
{
    cm_buf qv = {0}, qsha = {0};
    cm_slice authz = CM_SLICE_NULL;
    int nauth = 0, rc;

    memset(out, 0, sizeof *out);
    out->decoded_length = -1;
    find_header(req, "authorization", &authz, &nauth);
    bool query = query_has(req->query, "X-Amz-Algorithm");
    if (nauth && query)
        return fail(out, SIGV4_ERR_MULTIPLE_AUTH,
                    "Only one auth mechanism allowed; only the X-Amz-Algorithm query "
                    "parameter, Signature query string parameter or the Authorization header "
                    "should be specified");
    if (!nauth && !query)
        return fail(out, SIGV4_ERR_ANONYMOUS, "Anonymous request");
    if (nauth > 1)
        return fail(out, SIGV4_ERR_HEADER_MALFORMED,
                    "The authorization header is malformed; it appears more than once.");

    if (nauth)
        rc = parse_header_auth(req, out, authz);
    else
        rc = parse_query_auth(req, out, &qv, &qsha);
    if (rc)
        goto out;

    if (memcmp(out->date, out->amz_date, 8) != 0) {
        rc = fail(out, out->presigned ? SIGV4_ERR_QUERY_MALFORMED : SIGV4_ERR_HEADER_MALFORMED,
                  "%s; Invalid credential date \"%s\". Date is not the same as X-Amz-Date: "
                  "\"%.8s\".",
                  out->presigned ? "Error parsing the X-Amz-Credential parameter"
                                 : "The authorization header is malformed",
                  out->date, out->amz_date);
        goto out;
    }
    if (req->region.n && !cm_slice_eq_str(req->region, out->region)) {
        rc = fail(out, SIGV4_ERR_REGION, "%s; the region '%s' is wrong; expecting '%.*s'",
                  out->presigned ? "Error parsing the X-Amz-Credential parameter"
                                 : "The authorization header is malformed",
                  out->region, (int)req->region.n, (const char *)req->region.p);
        goto out;
    }
    if (!out->presigned) {
        if (out->t > req->now + SIGV4_MAX_SKEW || req->now > out->t + SIGV4_MAX_SKEW) {
            rc = fail(out, SIGV4_ERR_SKEWED,
                      "The difference between the request time and the current time is too "
                      "large.");
            goto out;
        }
    } else {
        if (out->t > req->now + SIGV4_MAX_SKEW) {
            rc = fail(out, SIGV4_ERR_NOT_YET_VALID, "Request is not valid yet");
            goto out;
        }
        if (req->now > out->t + out->expires) {
            rc = fail(out, SIGV4_ERR_EXPIRED, "Request has expired");
            goto out;
        }
    }
    if ((rc = parse_payload(req, out, cm_buf_slice(&qsha))) ||
        (rc = parse_decoded_length(req, out)))
        goto out;
out:
    cm_buf_free(&qv);
    cm_buf_free(&qsha);
    return rc;
}

void sigv4_auth_free(sigv4_auth *a)
{
    if (!a)
        return;
    free(a->signed_headers);
    free(a->security_token);
    memset(a, 0, sizeof *a);
}

/* ---------------------------------------------------- canonical request */

typedef struct qpair {
    size_t noff, nlen, voff, vlen; /* encoded name and value in the scratch buffer */
} qpair;

static int qpair_cmp(const uint8_t *base, const qpair *x, const qpair *y)
{
    int c = cm_slice_cmp(CM_SLICE(base + x->noff, x->nlen), CM_SLICE(base + y->noff, y->nlen));
    if (c)
        return c;
    return cm_slice_cmp(CM_SLICE(base + x->voff, x->vlen), CM_SLICE(base + y->voff, y->vlen));
}

/* Stable insertion-merge sort over an array of pairs (query strings are
 * short; keeps the sort reentrant, which qsort's comparator cannot be). */
static void qpair_sort(const uint8_t *base, qpair *a, qpair *tmp, size_t n)
{
    if (n < 2)
        return;
    if (n <= 8) {
        for (size_t i = 1; i < n; i++) {
            qpair k = a[i];
            size_t j = i;
            while (j > 0 && qpair_cmp(base, &a[j - 1], &k) > 0) {
                a[j] = a[j - 1];
                j--;
            }
            a[j] = k;
        }
        return;
    }
    size_t h = n / 2;
    qpair_sort(base, a, tmp, h);
    qpair_sort(base, a + h, tmp, n - h);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n)
        tmp[k++] = qpair_cmp(base, &a[j], &a[i]) < 0 ? a[j++] : a[i++];
    while (i < h)
        tmp[k++] = a[i++];
    while (j < n)
        tmp[k++] = a[j++];
    memcpy(a, tmp, n * sizeof *a);
}

static int canonical_query(const sigv4_req *req, const sigv4_auth *auth, cm_buf *out)
{
    cm_buf scratch = {0};
    qpair *pairs = NULL, *tmp = NULL;
    size_t npairs = 0, cap = 0;
    cm_slice q = req->query, n, v;
    int rc = 0;

    while (query_next(&q, &n, &v)) {
        if (auth->presigned && cm_slice_eq_str(n, "X-Amz-Signature"))
            continue;
        if (npairs == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            qpair *np = realloc(pairs, ncap * sizeof *np);
            if (!np) {
                rc = CM_ENOMEM;
                goto out;
            }
            pairs = np;
            cap = ncap;
        }
        qpair *p = &pairs[npairs++];
        p->noff = scratch.n;
        if ((rc = canon_encode(&scratch, n, false)))
            goto out;
        p->nlen = scratch.n - p->noff;
        p->voff = scratch.n;
        if ((rc = canon_encode(&scratch, v, false)))
            goto out;
        p->vlen = scratch.n - p->voff;
    }
    if (npairs) {
        if (!(tmp = malloc(npairs * sizeof *tmp))) {
            rc = CM_ENOMEM;
            goto out;
        }
        qpair_sort(scratch.p, pairs, tmp, npairs);
    }
    for (size_t i = 0; i < npairs; i++) {
        if ((i && (rc = cm_buf_append_byte(out, '&'))) ||
            (rc = cm_buf_append(out, scratch.p + pairs[i].noff, pairs[i].nlen)) ||
            (rc = cm_buf_append_byte(out, '=')) ||
            (rc = cm_buf_append(out, scratch.p + pairs[i].voff, pairs[i].vlen)))
            goto out;
    }
out:
    free(pairs);
    free(tmp);
    cm_buf_free(&scratch);
    return rc;
}

/* Appends a header value trimmed, with runs of whitespace collapsed. */
static int append_trimall(cm_buf *out, cm_slice v)
{
    v = trim(v);
    if (cm_buf_reserve(out, v.n))
        return CM_ENOMEM;
    bool space = false;
    for (size_t i = 0; i < v.n; i++) {
        if (is_ws(v.p[i])) {
            space = true;
            continue;
        }
        if (space)
            out->p[out->n++] = ' ';
        space = false;
        out->p[out->n++] = v.p[i];
    }
    out->p[out->n] = 0;
    return 0;
}

static int canonical_headers(const sigv4_req *req, const sigv4_auth *auth, cm_buf *out)
{
    cm_slice rest = CM_SLICE_STR(auth->signed_headers), name;
    int rc;
    for (bool more = rest.n > 0; more;) {
        more = split(&rest, ';', &name);
        if ((rc = cm_buf_append_slice(out, name)) || (rc = cm_buf_append_byte(out, ':')))
            return rc;
        bool first = true;
        for (size_t i = 0; i < req->nheaders; i++) {
            cm_slice hn = req->headers[i].name;
            if (hn.n != name.n || strncasecmp((const char *)hn.p, (const char *)name.p, hn.n))
                continue;
            if ((!first && (rc = cm_buf_append_byte(out, ','))) ||
                (rc = append_trimall(out, req->headers[i].value)))
                return rc;
            first = false;
        }
        if ((rc = cm_buf_append_byte(out, '\n')))
            return rc;
    }
    return 0;
}

int sigv4_canonical_request(const sigv4_req *req, const sigv4_auth *auth, cm_buf *out)
{
    int rc;
    if ((rc = cm_buf_append_slice(out, req->method)) || (rc = cm_buf_append_byte(out, '\n')))
        return rc;
    if (req->path.n)
        rc = canon_encode(out, req->path, true);
    else
        rc = cm_buf_append_byte(out, '/');
    if (rc || (rc = cm_buf_append_byte(out, '\n')) || (rc = canonical_query(req, auth, out)) ||
        (rc = cm_buf_append_byte(out, '\n')) || (rc = canonical_headers(req, auth, out)) ||
        (rc = cm_buf_append_byte(out, '\n')) ||
        (rc = cm_buf_append_str(out, auth->signed_headers ? auth->signed_headers : "")) ||
        (rc = cm_buf_append_byte(out, '\n')) || (rc = cm_buf_append_str(out, auth->payload_hash)))
        return rc;
    return 0;
}

int sigv4_string_to_sign(const sigv4_auth *auth, cm_slice creq, cm_buf *out)
{
    uint8_t h[32];
    char hex[65];
    int rc;
    if ((rc = gw_sha256(creq.p, creq.n, h)))
        return rc;
    cm_hex_encode(h, 32, hex);
    if ((rc = cm_buf_append_str(out, SIGV4_ALGORITHM "\n")) ||
        (rc = cm_buf_append_str(out, auth->amz_date)) || (rc = cm_buf_append_byte(out, '\n')) ||
        (rc = cm_buf_append_str(out, auth->scope)) || (rc = cm_buf_append_byte(out, '\n')))
        return rc;
    return cm_buf_append(out, hex, 64);
}

int sigv4_sign(const uint8_t key[32], cm_slice sts, uint8_t sig[32])
{
    return hmac256(key, 32, sts.p, sts.n, sig);
}

int sigv4_signing_key(cm_slice secret, cm_slice date, cm_slice region, cm_slice service,
                      uint8_t key[32])
{
    uint8_t k0[4 + 1024], k[32];
    int rc = CM_EINVAL;
    if (secret.n > sizeof k0 - 4)
        return CM_EINVAL;
    memcpy(k0, "AWS4", 4);
    memcpy(k0 + 4, secret.p, secret.n);
    if ((rc = hmac256(k0, 4 + secret.n, date.p, date.n, k)) ||
        (rc = hmac256(k, 32, region.p, region.n, k)) ||
        (rc = hmac256(k, 32, service.p, service.n, k)) ||
        (rc = hmac256(k, 32, "aws4_request", 12, k)))
        goto out;
    memcpy(key, k, 32);
out:
    cm_wipe(k0, sizeof k0);
    cm_wipe(k, sizeof k);
    return rc;
}

int sigv4_verify_key(const sigv4_req *req, sigv4_auth *auth, const uint8_t key[32],
                     cm_buf *creq_out, cm_buf *sts_out, sigv4_seed *seed)
{
    cm_buf creq_own = {0}, sts_own = {0};
    uint8_t sig[32];
    int rc;

    if (!auth->signed_headers)
        return CM_EINVAL;
    /* Built in place when the caller's buffers are empty (auth.c's always
     * are), else in our own and appended; sized once for common requests. */
    cm_buf *creq = creq_out && !creq_out->n ? creq_out : &creq_own;
    cm_buf *sts = sts_out && !sts_out->n ? sts_out : &sts_own;
    if ((rc = cm_buf_reserve(creq, 1023)) || (rc = cm_buf_reserve(sts, 255)) ||
        (rc = sigv4_canonical_request(req, auth, creq)) ||
        (rc = sigv4_string_to_sign(auth, cm_buf_slice(creq), sts)) ||
        (rc = sigv4_sign(key, cm_buf_slice(sts), sig))) {
        if (creq == creq_out) /* as if nothing had been appended */
            cm_buf_reset(creq_out);
        if (sts == sts_out)
            cm_buf_reset(sts_out);
        goto out;
    }
    if ((creq_out && creq != creq_out &&
         (rc = cm_buf_append_slice(creq_out, cm_buf_slice(creq)))) ||
        (sts_out && sts != sts_out && (rc = cm_buf_append_slice(sts_out, cm_buf_slice(sts)))))
        goto out;
    if (CRYPTO_memcmp(sig, auth->signature, 32) != 0) {
        rc = fail(auth, SIGV4_ERR_SIGNATURE,
                  "The request signature we calculated does not match the signature you "
                  "provided. Check your key and signing method.");
        goto out;
    }
    if (seed) {
        memcpy(seed->key, key, 32);
        memcpy(seed->signature, sig, 32);
        memcpy(seed->amz_date, auth->amz_date, sizeof seed->amz_date);
        memcpy(seed->scope, auth->scope, sizeof seed->scope);
    }
out:
    cm_buf_free(&creq_own);
    cm_buf_free(&sts_own);
    return rc;
}

int sigv4_verify(const sigv4_req *req, sigv4_auth *auth, cm_slice secret, cm_buf *creq, cm_buf *sts,
                 sigv4_seed *seed)
{
    uint8_t key[32];
    int rc = sigv4_signing_key(secret, CM_SLICE_STR(auth->date), CM_SLICE_STR(auth->region),
                               CM_SLICE_STR(auth->service), key);
    if (rc == 0)
        rc = sigv4_verify_key(req, auth, key, creq, sts, seed);
    cm_wipe(key, sizeof key);
    return rc;
}

void sigv4_seed_wipe(sigv4_seed *seed)
{
    if (seed)
        cm_wipe(seed, sizeof *seed);
}
