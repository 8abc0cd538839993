/* gateway/sigv2.c - AWS Signature Version 2, header ("Authorization: AWS
 * AK:sig") and presigned query (AWSAccessKeyId, Expires, Signature) forms,
 * as S3 still accepts them: aws cli v1's `s3 presign` makes such URLs. */
#include "gateway/gw_int.h"
#include "gateway/sigv2.h"
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>

/* Query parameters that are part of the signed resource, in sorted order. */
static const char *const subresources[] = {
    "acl", "cors", "delete", "lifecycle", "location", "logging", "notification", "partNumber",
    "policy", "requestPayment", "response-cache-control", "response-content-disposition",
    "response-content-encoding", "response-content-language", "response-content-type",
    "response-expires", "restore", "tagging", "torrent", "uploadId", "uploads", "versionId",
    "versioning", "versions", "website", NULL};

bool gw_sigv2_present(gw_req *r)
{
    cm_slice a;
    if (gw_hdr(r, "Authorization", &a))
        return a.n > 4 && memcmp(a.p, "AWS ", 4) == 0;
    return gw_param_has(r, "AWSAccessKeyId") && gw_param_has(r, "Signature");
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Builds the string to sign. */
static void string_to_sign(gw_req *r, const char *date_or_expires, cm_buf *out)
{
    cm_slice v;
    cm_buf_append_slice(out, r->method);
    cm_buf_append_byte(out, '\n');
    if (gw_hdr(r, "Content-MD5", &v))
        cm_buf_append_slice(out, v);
    cm_buf_append_byte(out, '\n');
    if (gw_hdr(r, "Content-Type", &v))
        cm_buf_append_slice(out, v);
    cm_buf_append_byte(out, '\n');
    cm_buf_append_str(out, date_or_expires);
    cm_buf_append_byte(out, '\n');
    /* x-amz-* headers: lowercase, sorted, duplicates joined with ',' */
    char **names = calloc(r->nhdrs + 1, sizeof *names);
    size_t n = 0;
    for (size_t i = 0; names && i < r->nhdrs; i++) {
        cm_slice nm = r->hdrs[i].name;
        if (nm.n > 6 && cm_slice_case_eq_str(CM_SLICE(nm.p, 6), "x-amz-")) {
            char *s = cm_slice_strdup(nm);
            for (char *c = s; c && *c; c++)
                if (*c >= 'A' && *c <= 'Z')
                    *c = (char)(*c + 32);
            bool dup = false;
            for (size_t j = 0; j < n; j++)
                if (!strcmp(names[j], s))
                    dup = true;
            if (dup)
                free(s);
            else
                names[n++] = s;
        }
    }
    if (names)
        qsort(names, n, sizeof *names, cmp_str);
    for (size_t j = 0; j < n; j++) {
        cm_buf_printf(out, "%s:", names[j]);
        bool first = true;
        for (size_t i = 0; i < r->nhdrs; i++) {
            if (!cm_slice_case_eq_str(r->hdrs[i].name, names[j]))
                continue;
            cm_slice val = r->hdrs[i].value;
            while (val.n && (*val.p == ' ' || *val.p == '\t')) {
                val.p++;
                val.n--;
            }
            while (val.n && (val.p[val.n - 1] == ' ' || val.p[val.n - 1] == '\t'))
                val.n--;
            if (!first)
                cm_buf_append_byte(out, ',');
            cm_buf_append_slice(out, val);
            first = false;
        }
        cm_buf_append_byte(out, '\n');
        free(names[j]);
    }
    free(names);
    /* resource: /bucket + path as sent, then the signed subresources */
    const char *dom = r->srv->cfg.domain;
    bool vhost = false;
    if (dom && r->bucket[0]) {
        cm_slice p = r->raw_path;
        size_t bl = strlen(r->bucket);
        vhost = !(p.n > bl && p.p[0] == '/' && !memcmp(p.p + 1, r->bucket, bl) &&
                  (p.n == bl + 1 || p.p[bl + 1] == '/'));
    }
    if (vhost) {
        cm_buf_printf(out, "/%s", r->bucket);
    }
    cm_buf_append_slice(out, r->raw_path);
    char sep = '?';
    for (const char *const *s = subresources; *s; s++) {
        cm_slice pv;
        for (size_t i = 0; i < r->nparams; i++) {
            if (!cm_slice_eq_str(r->params[i].name, *s))
                continue;
            pv = r->params[i].value;
            cm_buf_printf(out, "%c%s", sep, *s);
            if (r->params[i].has_value && (pv.n || strcmp(*s, "uploads"))) {
                cm_buf_append_byte(out, '=');
                cm_buf_append_slice(out, pv);
            }
            sep = '&';
            break;
        }
    }
}

int gw_sigv2_auth(gw_req *r, gw_secret_lookup_fn lookup, char *secret, size_t secret_n)
{
    char ak[132] = "", date[64] = "";
    uint8_t want[64];
    size_t wantn = 0;
    cm_slice a, sig;
    bool query = !gw_hdr(r, "Authorization", &a);
    time_t now = time(NULL);
    if (query) {
        cm_slice akq, exp;
        gw_param(r, "AWSAccessKeyId", &akq);
        gw_param(r, "Signature", &sig);
        if (!gw_param(r, "Expires", &exp) || exp.n == 0 || exp.n > 15) {
            gw_error_msg(r, S3E_AccessDenied, "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters");
            return -1;
        }
        snprintf(ak, sizeof ak, "%.*s", (int)(akq.n < 131 ? akq.n : 131), (const char *)akq.p);
        snprintf(date, sizeof date, "%.*s", (int)exp.n, (const char *)exp.p);
        char *end;
        long long e = strtoll(date, &end, 10);
        if (*end || e < 0) {
            gw_error_msg(r, S3E_AccessDenied, "Invalid date (should be seconds since epoch)");
            return -1;
        }
        if (e < (long long)now) {
            gw_error_msg(r, S3E_AccessDenied, "Request has expired");
            return -1;
        }
    } else {
        const uint8_t *colon = memchr(a.p, ':', a.n);
        if (!colon || colon - a.p - 4 <= 0 || colon - a.p - 4 > 131) {
            gw_error_msg(r, S3E_InvalidArgument, "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature");
            return -1;
        }
        snprintf(ak, sizeof ak, "%.*s", (int)(colon - a.p - 4), (const char *)a.p + 4);
        sig = CM_SLICE(colon + 1, a.n - (size_t)(colon + 1 - a.p));
        cm_slice dv;
        time_t t;
        bool has_amz = gw_hdr(r, "x-amz-date", &dv);
        if (!has_amz && !gw_hdr(r, "Date", &dv)) {
            gw_error_msg(r, S3E_AccessDenied, "AWS authentication requires a valid Date or x-amz-date header");
            return -1;
        }
        if (cm_time_parse_http((const char *)dv.p, dv.n, &t)) {
            gw_error_msg(r, S3E_AccessDenied, "AWS authentication requires a valid Date or x-amz-date header");
            return -1;
        }
        if (t > now + 900 || t < now - 900) {
            gw_error(r, S3E_RequestTimeTooSkewed);
            return -1;
        }
        if (!has_amz)
            snprintf(date, sizeof date, "%.*s", (int)(dv.n < 63 ? dv.n : 63), (const char *)dv.p);
    }
    snprintf(r->access_key, sizeof r->access_key, "%s", ak);
    if (!lookup(r, ak, secret, secret_n))
        return -1; /* error set by lookup */
    if (sig.n > 88 || cm_base64_decode((const char *)sig.p, sig.n, want, &wantn) || wantn != 20) {
        gw_error(r, S3E_SignatureDoesNotMatch);
        return -1;
    }
    cm_buf sts = {0};
    string_to_sign(r, date, &sts);
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned ml = 0;
    HMAC(EVP_sha1(), secret, (int)strlen(secret), sts.p, sts.n, mac, &ml);
    if (ml != 20 || CRYPTO_memcmp(mac, want, 20) != 0) {
        gw_error(r, S3E_SignatureDoesNotMatch);
        gw_error_extra(r, "AWSAccessKeyId", CM_SLICE_STR(ak));
        gw_error_extra(r, "StringToSign", cm_buf_slice(&sts));
        gw_error_extra(r, "SignatureProvided", sig);
        cm_buf_free(&sts);
        return -1;
    }
    cm_buf_free(&sts);
    return 0;
}
