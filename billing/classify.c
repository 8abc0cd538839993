/* billing/classify.c - which billing class each S3 operation is in (the
 * table follows Cloudflare R2's published classification; doc/billing.md
 * lists it with the source), the billing rules by HTTP status, and price
 * sheets (the default R2 sheet and the parser). No storage here. */
#include "billing/bill.h"
#include "common/json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* R2 lists: Class A: ListBuckets, PutBucket, ListObjects, PutObject,
 * CopyObject, CompleteMultipartUpload, CreateMultipartUpload,
 * ListMultipartUploads, UploadPart, UploadPartCopy, ListParts,
 * PutBucketEncryption, PutBucketCors, PutBucketLifecycleConfiguration.
 * Class B: HeadBucket, HeadObject, GetObject, UsageSummary,
 * GetBucketEncryption, GetBucketLocation, GetBucketCors,
 * GetBucketLifecycleConfiguration. Free: DeleteObject, DeleteBucket,
 * AbortMultipartUpload. Operations R2 does not list follow the same rule
 * (marked "ext"): lists and configuration changes A, configuration reads B,
 * deletes free. */
static const struct {
    const char *op;
    enum bill_class cls;
} table[] = {
    {"ListBuckets", BILL_A},
    {"CreateBucket", BILL_A}, /* R2: PutBucket */
    {"ListObjects", BILL_A},
    {"ListObjectsV2", BILL_A}, /* R2: ListObjects */
    {"ListObjectVersions", BILL_A}, /* ext: a listing */
    {"PutObject", BILL_A},
    {"CopyObject", BILL_A},
    {"CompleteMultipartUpload", BILL_A},
    {"CreateMultipartUpload", BILL_A},
    {"ListMultipartUploads", BILL_A},
    {"UploadPart", BILL_A},
    {"UploadPartCopy", BILL_A},
    {"ListParts", BILL_A},
    {"PutBucketEncryption", BILL_A},
    {"PutBucketCors", BILL_A},
    {"PutBucketLifecycleConfiguration", BILL_A},
    {"PutBucketLogging", BILL_A},                  /* ext: configuration change */
    {"PutBucketNotificationConfiguration", BILL_A}, /* ext */
    {"PutBucketPolicy", BILL_A},                   /* ext */
    {"PutBucketVersioning", BILL_A},               /* ext */
    {"PutBucketTagging", BILL_A},                  /* ext */
    {"PutObjectTagging", BILL_A},                  /* ext */
    {"PutBucketAcl", BILL_A},                      /* ext */
    {"PutObjectAcl", BILL_A},                      /* ext */
    {"HeadBucket", BILL_B},
    {"HeadObject", BILL_B},
    {"GetObject", BILL_B},
    {"UsageSummary", BILL_B},
    {"GetBucketEncryption", BILL_B},
    {"GetBucketLocation", BILL_B},
    {"GetBucketCors", BILL_B},
    {"GetBucketLifecycleConfiguration", BILL_B},
    {"GetBucketVersioning", BILL_B},               /* ext: configuration read */
    {"GetBucketLogging", BILL_B},                  /* ext */
    {"GetBucketNotificationConfiguration", BILL_B}, /* ext */
    {"GetBucketPolicy", BILL_B},                   /* ext */
    {"GetBucketPolicyStatus", BILL_B},             /* ext */
    {"GetBucketTagging", BILL_B},                  /* ext */
    {"GetObjectTagging", BILL_B},                  /* ext */
    {"GetBucketAcl", BILL_B},                      /* ext */
    {"GetObjectAcl", BILL_B},                      /* ext */
    {"Options", BILL_B},                           /* ext: CORS preflight, a read */
    {"OptionsObject", BILL_B},                     /* ext */
    {"PreflightRequest", BILL_B},                  /* ext */
    {"DeleteObject", BILL_FREE},
    {"DeleteBucket", BILL_FREE},
    {"AbortMultipartUpload", BILL_FREE},
    {"DeleteObjects", BILL_FREE},                  /* ext: a delete */
    {"DeleteBucketCors", BILL_FREE},               /* ext */
    {"DeleteBucketPolicy", BILL_FREE},             /* ext */
    {"DeleteBucketTagging", BILL_FREE},            /* ext */
    {"DeleteObjectTagging", BILL_FREE},            /* ext */
    {"DeleteBucketLifecycle", BILL_FREE},          /* ext */
    {"DeleteBucketEncryption", BILL_FREE},         /* ext */
    {"Admin", BILL_NONE},
    {"AdminPublic", BILL_NONE},
};

enum bill_class bill_op_class(const char *op)
{
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(table[i].op, op))
            return table[i].cls;
    return BILL_A;
}

const char *bill_class_name(enum bill_class c)
{
    switch (c) {
    case BILL_A: return "A";
    case BILL_B: return "B";
    case BILL_FREE: return "free";
    default: return "none";
    }
}

bool bill_billable(enum bill_class c, int status)
{
    if (c != BILL_A && c != BILL_B)
        return false;
    if (status == 401 || status == 403)
        return false; /* authentication or authorization failed */
    if (status >= 500)
        return false; /* our fault */
    return true;      /* 2xx, 3xx and other 4xx (412, BadDigest...) */
}

/* ------------------------------------------------------------- prices */
void bill_prices_default(bill_prices *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "Cloudflare R2 Standard storage (default sheet)");
    snprintf(p->currency, sizeof p->currency, "USD");
    snprintf(p->source, sizeof p->source,
             "R2's published prices, https://developers.cloudflare.com/r2/pricing/ "
             "(free tier not applied)");
    p->class_a_per_million = 4.50;
    p->class_b_per_million = 0.36;
    p->storage_per_gb_month = 0.015;
    p->egress_per_gb = 0;
    p->ingress_per_gb = 0;
    p->gb_bytes = 1e9;
    p->month_hours = 720;
}

static const struct {
    const char *key;
    size_t off;  /* offset of a double field, or of a string field */
    size_t size; /* 0 for doubles, else the string field's size */
} fields[] = {
    {"name", offsetof(bill_prices, name), sizeof(((bill_prices *)0)->name)},
    {"currency", offsetof(bill_prices, currency), sizeof(((bill_prices *)0)->currency)},
    {"source", offsetof(bill_prices, source), sizeof(((bill_prices *)0)->source)},
    {"class_a_per_million", offsetof(bill_prices, class_a_per_million), 0},
    {"class_b_per_million", offsetof(bill_prices, class_b_per_million), 0},
    {"storage_per_gb_month", offsetof(bill_prices, storage_per_gb_month), 0},
    {"egress_per_gb", offsetof(bill_prices, egress_per_gb), 0},
    {"ingress_per_gb", offsetof(bill_prices, ingress_per_gb), 0},
    {"gb_bytes", offsetof(bill_prices, gb_bytes), 0},
    {"month_hours", offsetof(bill_prices, month_hours), 0},
};

/* Sets one field from text (a number or a string). */
static int set_field(bill_prices *p, cm_slice key, cm_slice val, bool is_str, char *err,
                     size_t errsz)
{
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (!cm_slice_eq_str(key, fields[i].key))
            continue;
        char *dst = (char *)p + fields[i].off;
        if (fields[i].size) {
            size_t n = val.n < fields[i].size - 1 ? val.n : fields[i].size - 1;
            memcpy(dst, val.p, n);
            dst[n] = 0;
            return 0;
        }
        char tmp[64], *end;
        if (is_str || val.n == 0 || val.n >= sizeof tmp)
            goto bad;
        memcpy(tmp, val.p, val.n);
        tmp[val.n] = 0;
        errno = 0;
        double d = strtod(tmp, &end);
        if (*end || errno || !isfinite(d) || d < 0)
            goto bad;
        if ((!strcmp(fields[i].key, "gb_bytes") || !strcmp(fields[i].key, "month_hours")) && d <= 0)
            goto bad;
        memcpy(dst, &d, sizeof d);
        return 0;
    bad:
        snprintf(err, errsz, "price sheet: %s wants a non-negative number", fields[i].key);
        return CM_EINVAL;
    }
    snprintf(err, errsz, "price sheet: unknown key '%.*s'", (int)(key.n > 64 ? 64 : key.n),
             (const char *)key.p);
    return CM_EINVAL;
}

static cm_slice trim(cm_slice s)
{
    while (s.n && (s.p[0] == ' ' || s.p[0] == '\t' || s.p[0] == '\r'))
        s = CM_SLICE(s.p + 1, s.n - 1);
    while (s.n && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\t' || s.p[s.n - 1] == '\r'))
        s.n--;
    return s;
}

int bill_prices_parse(cm_slice text, bill_prices *out, char *err, size_t errsz)
{
    bill_prices p;
    int rc = 0;
    cm_slice t = trim(text);

    bill_prices_default(&p);
    snprintf(p.source, sizeof p.source, "price sheet file");
    while (t.n && (t.p[0] == '\n'))
        t = trim(CM_SLICE(t.p + 1, t.n - 1));
    if (t.n && t.p[0] == '{') {
        cm_json_doc *d = NULL;
        if (cm_json_parse(t, &d)) {
            snprintf(err, errsz, "price sheet: not valid JSON");
            return CM_EINVAL;
        }
        const cm_json *root = cm_json_root(d);
        if (root->type != CM_JSON_OBJECT) {
            snprintf(err, errsz, "price sheet: want a JSON object");
            rc = CM_EINVAL;
        }
        for (const cm_json *m = root->child; !rc && m; m = m->next) {
            char num[64];
            cm_slice v;
            if (m->type == CM_JSON_STRING) {
                v = m->str;
            } else if (m->type == CM_JSON_NUMBER) {
                snprintf(num, sizeof num, "%.17g", m->num);
                v = CM_SLICE_STR(num);
            } else {
                snprintf(err, errsz, "price sheet: bad value for '%.*s'", (int)m->key.n,
                         (const char *)m->key.p);
                rc = CM_EINVAL;
                break;
            }
            rc = set_field(&p, m->key, v, m->type == CM_JSON_STRING, err, errsz);
        }
        cm_json_doc_free(d);
    } else {
        const uint8_t *s = text.p, *end = text.p + text.n;
        int line = 0;
        while (!rc && s < end) {
            const uint8_t *nl = memchr(s, '\n', (size_t)(end - s));
            cm_slice l = CM_SLICE(s, (size_t)((nl ? nl : end) - s));
            s = nl ? nl + 1 : end;
            line++;
            const uint8_t *hash = memchr(l.p, '#', l.n);
            if (hash)
                l.n = (size_t)(hash - l.p);
            l = trim(l);
            if (!l.n)
                continue;
            const uint8_t *eq = memchr(l.p, '=', l.n);
            if (!eq) {
                snprintf(err, errsz, "price sheet line %d: want key = value", line);
                rc = CM_EINVAL;
                break;
            }
            cm_slice k = trim(CM_SLICE(l.p, (size_t)(eq - l.p)));
            cm_slice v = trim(CM_SLICE(eq + 1, l.n - (size_t)(eq - l.p) - 1));
            bool str = v.n >= 2 && v.p[0] == '"' && v.p[v.n - 1] == '"';
            if (str)
                v = CM_SLICE(v.p + 1, v.n - 2);
            bool is_num_field = true;
            for (size_t i = 0; i < 3; i++)
                if (cm_slice_eq_str(k, fields[i].key))
                    is_num_field = false;
            rc = set_field(&p, k, v, str && is_num_field, err, errsz);
        }
    }
    if (rc == 0)
        *out = p;
    return rc;
}
