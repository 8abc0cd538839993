/* gateway/authz.c - authorization: which operations each grant kind
 * (read, write, list, admin) permits, and the evaluation of bucket policies
 * (the AWS JSON policy language: Principal, Effect, Action, Resource with
 * wildcards; Deny wins). The op table here is the one in doc/access.md.
 * Authentication is auth.c's; storage of grants and policies is metadata's. */
#include "common/json.h"
#include "gateway/gw_int.h"

#define ANY_GRANT (MD_ALLOW_READ | MD_ALLOW_WRITE | MD_ALLOW_LIST | MD_ALLOW_ADMIN)
#define POLICY_MAX (20 * 1024) /* AWS: bucket policies up to 20 KB */

/* Per operation: the S3 action a bucket policy names, the grant bits any one
 * of which permits it, and whether the resource is the object (else the
 * bucket). Rows left zero are refused to everyone but root. */
static const struct op_rule {
    const char *action;
    uint32_t allow;
    bool object;
} op_rules[GW_OP__COUNT] = {
    [GW_OP_ListBuckets] = {"s3:ListAllMyBuckets", ANY_GRANT, false},
    [GW_OP_CreateBucket] = {"s3:CreateBucket", MD_ALLOW_ADMIN, false},
    [GW_OP_DeleteBucket] = {"s3:DeleteBucket", MD_ALLOW_ADMIN, false},
    [GW_OP_HeadBucket] = {"s3:ListBucket", ANY_GRANT, false},
    [GW_OP_GetBucketLocation] = {"s3:GetBucketLocation", ANY_GRANT, false},
    [GW_OP_GetBucketVersioning] = {"s3:GetBucketVersioning", ANY_GRANT, false},
    [GW_OP_ListObjects] = {"s3:ListBucket", MD_ALLOW_LIST | MD_ALLOW_ADMIN, false},
    [GW_OP_ListObjectsV2] = {"s3:ListBucket", MD_ALLOW_LIST | MD_ALLOW_ADMIN, false},
    [GW_OP_ListObjectVersions] = {"s3:ListBucketVersions", MD_ALLOW_LIST | MD_ALLOW_ADMIN, false},
    [GW_OP_ListMultipartUploads] = {"s3:ListBucketMultipartUploads",
                                    MD_ALLOW_LIST | MD_ALLOW_WRITE | MD_ALLOW_ADMIN, false},
    [GW_OP_GetObject] = {"s3:GetObject", MD_ALLOW_READ | MD_ALLOW_ADMIN, true},
    [GW_OP_HeadObject] = {"s3:GetObject", MD_ALLOW_READ | MD_ALLOW_ADMIN, true},
    [GW_OP_PutObject] = {"s3:PutObject", MD_ALLOW_WRITE | MD_ALLOW_ADMIN, true},
    [GW_OP_CopyObject] = {"s3:PutObject", MD_ALLOW_WRITE | MD_ALLOW_ADMIN, true},
    [GW_OP_DeleteObject] = {"s3:DeleteObject", MD_ALLOW_WRITE | MD_ALLOW_ADMIN, true},
    [GW_OP_DeleteObjects] = {"s3:DeleteObject", MD_ALLOW_WRITE | MD_ALLOW_ADMIN, false},
    [GW_OP_CreateMultipartUpload] = {"s3:PutObject", MD_ALLOW_WRITE | MD_ALLOW_ADMIN, true},
    [GW_OP_UploadPart] = {"s3:PutObject", MD_ALLOW_WRITE | MD_ALLOW_ADMIN, true},
    [GW_OP_UploadPartCopy] = {"s3:PutObject", MD_ALLOW_WRITE | MD_ALLOW_ADMIN, true},
    [GW_OP_CompleteMultipartUpload] = {"s3:PutObject", MD_ALLOW_WRITE | MD_ALLOW_ADMIN, true},
    [GW_OP_AbortMultipartUpload] = {"s3:AbortMultipartUpload", MD_ALLOW_WRITE | MD_ALLOW_ADMIN,
                                    true},
    [GW_OP_ListParts] = {"s3:ListMultipartUploadParts", MD_ALLOW_WRITE | MD_ALLOW_ADMIN, true},
    [GW_OP_PutBucketPolicy] = {"s3:PutBucketPolicy", MD_ALLOW_ADMIN, false},
    [GW_OP_GetBucketPolicy] = {"s3:GetBucketPolicy", MD_ALLOW_ADMIN, false},
    [GW_OP_DeleteBucketPolicy] = {"s3:DeleteBucketPolicy", MD_ALLOW_ADMIN, false},
    [GW_OP_PutBucketCors] = {"s3:PutBucketCORS", MD_ALLOW_ADMIN, false},
    [GW_OP_GetBucketCors] = {"s3:GetBucketCORS", MD_ALLOW_ADMIN, false},
    [GW_OP_DeleteBucketCors] = {"s3:PutBucketCORS", MD_ALLOW_ADMIN, false},
    [GW_OP_GetAcl] = {"s3:GetBucketAcl", MD_ALLOW_READ | MD_ALLOW_ADMIN, false},
    [GW_OP_PutAcl] = {"s3:PutBucketAcl", MD_ALLOW_ADMIN, false},
    [GW_OP_NotImplementedOp] = {"s3:*", ANY_GRANT, false},
};

/* ------------------------------------------------------------- wildcards */
static uint8_t fold(uint8_t c, bool icase)
{
    return icase && c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c;
}

bool gw_wild_match(cm_slice pat, cm_slice s, bool icase)
{
    size_t p = 0, i = 0, star_p = SIZE_MAX, star_i = 0;
    /* Iterative glob with backtracking to the last '*': O(n*m) worst case. */
    while (i < s.n) {
        if (p < pat.n && (pat.p[p] == '?' || fold(pat.p[p], icase) == fold(s.p[i], icase))) {
            p++;
            i++;
        } else if (p < pat.n && pat.p[p] == '*') {
            star_p = p++;
            star_i = i;
        } else if (star_p != SIZE_MAX) {
            p = star_p + 1;
            i = ++star_i;
        } else {
            return false;
        }
    }
    while (p < pat.n && pat.p[p] == '*')
        p++;
    return p == pat.n;
}

/* ------------------------------------------------------- bucket policies */
/* Calls fn on v if it is a string, or on each string of an array; returns
 * false if v is neither or holds a non-string. */
static bool each_str(const cm_json *v, bool (*fn)(void *arg, cm_slice s), void *arg)
{
    if (!v)
        return false;
    if (v->type == CM_JSON_STRING)
        return fn(arg, v->str);
    if (v->type != CM_JSON_ARRAY || v->n == 0)
        return false;
    for (const cm_json *e = v->child; e; e = e->next)
        if (e->type != CM_JSON_STRING || !fn(arg, e->str))
            return false;
    return true;
}

struct check_ctx {
    const char *bucket;
    const char *msg;
};

static bool check_action(void *arg, cm_slice s)
{
    struct check_ctx *c = arg;
    if (cm_slice_eq_str(s, "*") ||
        (s.n > 3 && cm_slice_case_eq_str(CM_SLICE(s.p, 3), "s3:")))
        return true;
    c->msg = "Policy has invalid action";
    return false;
}

static bool check_resource(void *arg, cm_slice s)
{
    struct check_ctx *c = arg;
    static const char arn[] = "arn:aws:s3:::";
    size_t an = sizeof arn - 1, bn = strlen(c->bucket);
    /* The resource must name this bucket (or objects in it). */
    if (s.n >= an + bn && !memcmp(s.p, arn, an) && !memcmp(s.p + an, c->bucket, bn) &&
        (s.n == an + bn || s.p[an + bn] == '/'))
        return true;
    c->msg = "Policy has invalid resource";
    return false;
}

static bool check_principal_str(void *arg, cm_slice s)
{
    (void)arg;
    return s.n > 0;
}

static bool check_principal(const cm_json *p)
{
    if (!p)
        return false;
    if (p->type == CM_JSON_STRING)
        return cm_slice_eq_str(p->str, "*");
    if (p->type != CM_JSON_OBJECT || p->n != 1 || !cm_slice_eq_str(p->child->key, "AWS"))
        return false;
    return each_str(p->child, check_principal_str, NULL);
}

int gw_policy_check(cm_slice json, const char *bucket, const char **msg)
{
    cm_json_doc *doc = NULL;
    struct check_ctx c = {bucket, NULL};
    int rc = -1;

    *msg = "Policies must be valid JSON and the first byte must be '{'";
    size_t i = 0;
    while (i < json.n && (json.p[i] == ' ' || json.p[i] == '\t' || json.p[i] == '\r' ||
                          json.p[i] == '\n'))
        i++;
    if (i == json.n || json.p[i] != '{' || cm_json_parse(json, &doc))
        return -1;
    if (json.n > POLICY_MAX) {
        *msg = "Policies must be less than 20 KB";
        goto out;
    }
    const cm_json *root = cm_json_root(doc), *st = cm_json_get(root, "Statement");
    const cm_json *ver = cm_json_get(root, "Version");
    for (const cm_json *m = root->child; m; m = m->next) {
        if (!cm_slice_eq_str(m->key, "Version") && !cm_slice_eq_str(m->key, "Id") &&
            !cm_slice_eq_str(m->key, "Statement")) {
            *msg = "Unknown field in policy";
            goto out;
        }
    }
    if (ver && (ver->type != CM_JSON_STRING || (!cm_slice_eq_str(ver->str, "2012-10-17") &&
                                                !cm_slice_eq_str(ver->str, "2008-10-17")))) {
        *msg = "The policy must contain a valid version string";
        goto out;
    }
    if (!st || (st->type != CM_JSON_OBJECT && st->type != CM_JSON_ARRAY) ||
        (st->type == CM_JSON_ARRAY && st->n == 0)) {
        *msg = "Missing required field Statement";
        goto out;
    }
    const cm_json *first = st->type == CM_JSON_ARRAY ? st->child : st;
    for (const cm_json *s = first; s; s = st->type == CM_JSON_ARRAY ? s->next : NULL) {
        if (s->type != CM_JSON_OBJECT)
            goto out;
        for (const cm_json *m = s->child; m; m = m->next) {
            static const char *const known[] = {"Sid", "Effect", "Principal", "Action",
                                                "Resource", NULL};
            bool ok = false;
            for (const char *const *k = known; *k; k++)
                ok |= cm_slice_eq_str(m->key, *k);
            if (!ok) {
                /* Condition, NotAction, NotResource, NotPrincipal are not
                 * evaluated: refusing them beats granting more than meant. */
                *msg = "Policy has an unsupported statement element (supported: Sid, Effect, "
                       "Principal, Action, Resource)";
                goto out;
            }
        }
        const char *eff = cm_json_get_str(s, "Effect");
        if (!eff || (strcmp(eff, "Allow") && strcmp(eff, "Deny"))) {
            *msg = "Invalid effect";
            goto out;
        }
        if (!check_principal(cm_json_get(s, "Principal"))) {
            *msg = "Invalid principal in policy";
            goto out;
        }
        c.msg = "Missing required field Action";
        if (!each_str(cm_json_get(s, "Action"), check_action, &c)) {
            *msg = c.msg;
            goto out;
        }
        c.msg = "Missing required field Resource";
        if (!each_str(cm_json_get(s, "Resource"), check_resource, &c)) {
            *msg = c.msg;
            goto out;
        }
    }
    rc = 0;
    *msg = NULL;
out:
    cm_json_doc_free(doc);
    return rc;
}

struct match_ctx {
    cm_slice want;
    const char *user;
    bool icase;
    bool hit;
};

static bool match_one(void *arg, cm_slice pat)
{
    struct match_ctx *m = arg;
    if (gw_wild_match(pat, m->want, m->icase))
        m->hit = true;
    return true;
}

/* A principal string names everyone ("*"), or a user: "NAME" or an ARN
 * ending in ":user/NAME". */
static bool principal_one(void *arg, cm_slice s)
{
    struct match_ctx *m = arg;
    if (cm_slice_eq_str(s, "*")) {
        m->hit = true;
    } else if (m->user) {
        size_t un = strlen(m->user);
        if (cm_slice_eq_str(s, m->user) ||
            (s.n > un + 6 && !memcmp(s.p + s.n - un - 6, ":user/", 6) &&
             !memcmp(s.p + s.n - un, m->user, un)))
            m->hit = true;
    }
    return true;
}

static bool principal_match(const cm_json *p, const char *user)
{
    struct match_ctx m = {CM_SLICE_NULL, user, false, false};
    if (!p)
        return false;
    if (p->type == CM_JSON_STRING)
        principal_one(&m, p->str);
    else if (p->type == CM_JSON_OBJECT)
        each_str(cm_json_get(p, "AWS"), principal_one, &m);
    return m.hit;
}

enum gw_pol_effect gw_policy_eval(cm_slice json, const char *action, cm_slice resource,
                                  const char *user)
{
    cm_json_doc *doc = NULL;
    enum gw_pol_effect eff = GW_POL_NONE;

    if (cm_json_parse(json, &doc))
        return GW_POL_NONE; /* validated when put: cannot happen */
    const cm_json *st = cm_json_get(cm_json_root(doc), "Statement");
    if (!st)
        goto out;
    const cm_json *first = st->type == CM_JSON_ARRAY ? st->child : st;
    for (const cm_json *s = first; s; s = st->type == CM_JSON_ARRAY ? s->next : NULL) {
        if (!principal_match(cm_json_get(s, "Principal"), user))
            continue;
        struct match_ctx am = {CM_SLICE_STR(action), NULL, true, false};
        each_str(cm_json_get(s, "Action"), match_one, &am);
        if (!am.hit)
            continue;
        struct match_ctx rm = {resource, NULL, false, false};
        each_str(cm_json_get(s, "Resource"), match_one, &rm);
        if (!rm.hit)
            continue;
        const char *e = cm_json_get_str(s, "Effect");
        if (e && !strcmp(e, "Deny")) {
            eff = GW_POL_DENY;
            break; /* Deny wins */
        }
        if (e && !strcmp(e, "Allow"))
            eff = GW_POL_ALLOW;
    }
out:
    cm_json_doc_free(doc);
    return eff;
}

/* ----------------------------------------------------------- the decision */
/* The bucket policy's verdict for action on bucket[/key] (NONE when the
 * bucket has no policy). */
static enum gw_pol_effect bucket_policy(gw_req *r, const char *bucket, const char *action,
                                        cm_slice key, bool object)
{
    cm_buf doc = {0}, res = {0};
    enum gw_pol_effect eff = GW_POL_NONE;
    if (md_bucket_doc_get(r->srv->md, MD_DOC_POLICY, bucket, &doc) == 0) {
        cm_buf_printf(&res, "arn:aws:s3:::%s", bucket);
        if (object) {
            cm_buf_append_byte(&res, '/');
            cm_buf_append_slice(&res, key);
        }
        eff = gw_policy_eval(cm_buf_slice(&doc), action, cm_buf_slice(&res),
                             r->anonymous ? NULL : r->user);
    }
    cm_buf_free(&doc);
    cm_buf_free(&res);
    return eff;
}

/* May the requester do rule on bucket[/key]? Users: no policy Deny, and a
 * grant or a policy Allow. Anonymous: a policy Allow and no Deny. */
static bool permitted(gw_req *r, const struct op_rule *rule, const char *bucket, cm_slice key)
{
    uint32_t allow = 0;
    if (!r->anonymous && bucket[0]) {
        uint32_t a1 = 0, a2 = 0;
        md_grant_get(r->srv->md, r->user, bucket, &a1);
        md_grant_get(r->srv->md, r->user, "*", &a2);
        allow = a1 | a2;
    }
    if (!bucket[0]) /* service level (ListBuckets): any signed user */
        return !r->anonymous && (rule->allow == ANY_GRANT);
    enum gw_pol_effect eff = bucket_policy(r, bucket, rule->action, key, rule->object);
    if (eff == GW_POL_DENY)
        return false;
    if (eff == GW_POL_ALLOW)
        return true;
    return (allow & rule->allow) != 0;
}

int gw_authz(gw_req *r)
{
    if (r->root && !r->anonymous)
        return 0;
    if (r->op == GW_OP_Admin || r->op == GW_OP_AdminPublic || r->op == GW_OP_CorsPreflight)
        return 0; /* the admin API checks root itself; the others need no credentials */
    const struct op_rule *rule = &op_rules[r->op];
    if (!rule->action || r->bucket_invalid)
        goto deny;
    if (!permitted(r, rule, r->bucket, r->key))
        goto deny;
    if (r->op == GW_OP_CopyObject || r->op == GW_OP_UploadPartCopy) {
        /* Reading the source needs read on its bucket. */
        char sb[64];
        cm_slice sk;
        static const struct op_rule src_rule = {"s3:GetObject", MD_ALLOW_READ | MD_ALLOW_ADMIN,
                                                true};
        if (!gw_copy_source(r, sb, sizeof sb, &sk))
            return -1; /* a malformed source: its error is set */
        if (!permitted(r, &src_rule, sb, sk))
            goto deny;
    }
    return 0;
deny:
    gw_error(r, S3E_AccessDenied);
    return -1;
}
