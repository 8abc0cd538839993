/* events/rules.c - S3 event names and wildcards, notification rules and
 * their prefix/suffix filters, overlap checks, destination ARNs, and the
 * stored (JSON) form of a bucket's configuration. Pure functions: no
 * storage, no threads. */
#include "common/json.h"
#include "events/evt.h"

#include <stdio.h>
#include <stdlib.h>

static const struct {
    const char *name; /* as in configurations, without "s3:" */
    uint32_t mask;
} names[] = {
    {"ObjectCreated:*", EVT_CREATED_ALL},
    {"ObjectCreated:Put", EVT_CREATED_PUT},
    {"ObjectCreated:Post", EVT_CREATED_POST},
    {"ObjectCreated:Copy", EVT_CREATED_COPY},
    {"ObjectCreated:CompleteMultipartUpload", EVT_CREATED_MPU},
    {"ObjectRemoved:*", EVT_REMOVED_ALL},
    {"ObjectRemoved:Delete", EVT_REMOVED_DELETE},
    {"ObjectRemoved:DeleteMarkerCreated", EVT_REMOVED_MARKER},
};

int evt_name_parse(cm_slice name, uint32_t *out)
{
    if (name.n < 4 || memcmp(name.p, "s3:", 3))
        return CM_EINVAL;
    cm_slice rest = CM_SLICE(name.p + 3, name.n - 3);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (cm_slice_eq_str(rest, names[i].name)) {
            *out = names[i].mask;
            return 0;
        }
    }
    return CM_EINVAL;
}

const char *evt_type_name(uint32_t type)
{
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].mask == type && !strchr(names[i].name, '*'))
            return names[i].name;
    return "";
}

evt_rule *evt_notify_add(evt_notify *cfg)
{
    if (cfg->n >= EVT_MAX_RULES)
        return NULL;
    evt_rule *a = realloc(cfg->a, (cfg->n + 1) * sizeof *a);
    if (!a)
        return NULL;
    cfg->a = a;
    memset(&a[cfg->n], 0, sizeof a[0]);
    return &a[cfg->n++];
}

void evt_notify_clear(evt_notify *cfg)
{
    for (size_t i = 0; i < cfg->n; i++) {
        cm_buf_free(&cfg->a[i].prefix);
        cm_buf_free(&cfg->a[i].suffix);
    }
    free(cfg->a);
    cfg->a = NULL;
    cfg->n = 0;
}

static bool has_suffix(cm_slice s, cm_slice suf)
{
    return suf.n == 0 || (s.n >= suf.n && memcmp(s.p + s.n - suf.n, suf.p, suf.n) == 0);
}

bool evt_rule_match(const evt_rule *rule, uint32_t type, cm_slice key)
{
    if (!(rule->events & type))
        return false;
    if (rule->has_prefix && !cm_slice_has_prefix(key, cm_buf_slice(&rule->prefix)))
        return false;
    if (rule->has_suffix && !has_suffix(key, cm_buf_slice(&rule->suffix)))
        return false;
    return true;
}

bool evt_rules_overlap(const evt_rule *a, const evt_rule *b)
{
    if (strcmp(a->arn, b->arn) || !(a->events & b->events))
        return false;
    cm_slice pa = cm_buf_slice(&a->prefix), pb = cm_buf_slice(&b->prefix);
    cm_slice sa = cm_buf_slice(&a->suffix), sb = cm_buf_slice(&b->suffix);
    bool pfx = cm_slice_has_prefix(pa, pb) || cm_slice_has_prefix(pb, pa);
    bool sfx = has_suffix(sa, sb) || has_suffix(sb, sa);
    return pfx && sfx;
}

static bool valid_name(const char *s, size_t n)
{
    if (n == 0 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

int evt_arn_parse(const char *arn, enum evt_dest_kind *kind, char *name)
{
    const char *p, *region_end, *rest;
    if (strncmp(arn, "arn:cairn:", 10))
        return CM_EINVAL;
    p = arn + 10;
    bool lambda = !strncmp(p, "lambda:", 7);
    bool queue = !strncmp(p, "sqs:", 4) || !strncmp(p, "sns:", 4);
    if (!lambda && !queue)
        return CM_EINVAL;
    p += lambda ? 7 : 4;
    region_end = strchr(p, ':'); /* REGION: */
    if (!region_end || region_end[1] != ':')
        return CM_EINVAL; /* the account field is empty: "::" */
    rest = region_end + 2;
    if (lambda) {
        if (strncmp(rest, "function:", 9))
            return CM_EINVAL;
        rest += 9;
    }
    size_t n = strlen(rest);
    if (!valid_name(rest, n))
        return CM_EINVAL;
    memcpy(name, rest, n + 1);
    *kind = lambda ? EVT_DEST_FUNCTION : EVT_DEST_TARGET;
    return 0;
}

/* ------------------------------------------------------------ stored form */
int evt_notify_encode(const evt_notify *cfg, cm_buf *out)
{
    cm_buf_append_str(out, "{\"rules\":[");
    for (size_t i = 0; i < cfg->n; i++) {
        const evt_rule *r = &cfg->a[i];
        cm_buf_append_str(out, i ? ",{\"id\":" : "{\"id\":");
        cm_json_cstr(out, r->id);
        cm_buf_printf(out, ",\"section\":%d,\"arn\":", (int)r->section);
        cm_json_cstr(out, r->arn);
        cm_buf_append_str(out, ",\"events\":[");
        for (size_t j = 0; j < r->nnames; j++) {
            if (j)
                cm_buf_append_byte(out, ',');
            cm_json_cstr(out, r->names[j]);
        }
        cm_buf_append_byte(out, ']');
        if (r->has_prefix) {
            cm_buf_append_str(out, ",\"prefix\":");
            cm_json_str(out, cm_buf_slice(&r->prefix));
        }
        if (r->has_suffix) {
            cm_buf_append_str(out, ",\"suffix\":");
            cm_json_str(out, cm_buf_slice(&r->suffix));
        }
        cm_buf_append_byte(out, '}');
    }
    return cm_buf_append_str(out, "]}");
}

int evt_notify_decode(cm_slice text, evt_notify *cfg)
{
    cm_json_doc *d = NULL;
    int rc = cm_json_parse(text, &d);
    if (rc)
        return CM_ECORRUPT;
    const cm_json *rules = cm_json_get(cm_json_root(d), "rules");
    for (const cm_json *j = rules ? rules->child : NULL; j && !rc; j = j->next) {
        evt_rule *r = evt_notify_add(cfg);
        const cm_json *ev = cm_json_get(j, "events"), *v;
        if (!r) {
            rc = CM_ENOMEM;
            break;
        }
        const char *id = cm_json_get_str(j, "id"), *arn = cm_json_get_str(j, "arn");
        snprintf(r->id, sizeof r->id, "%s", id ? id : "");
        snprintf(r->arn, sizeof r->arn, "%s", arn ? arn : "");
        r->section = (enum evt_section)(int)cm_json_get_num(j, "section", 0);
        const cm_json *e = ev ? ev->child : NULL;
        for (; e && r->nnames < EVT_MAX_NAMES; e = e->next) {
            uint32_t m = 0;
            if (e->type != CM_JSON_STRING || evt_name_parse(e->str, &m))
                continue;
            snprintf(r->names[r->nnames++], sizeof r->names[0], "%s", (const char *)e->str.p);
            r->events |= m;
        }
        if ((v = cm_json_get(j, "prefix")) && v->type == CM_JSON_STRING) {
            r->has_prefix = true;
            rc = cm_buf_append_slice(&r->prefix, v->str);
        }
        if (!rc && (v = cm_json_get(j, "suffix")) && v->type == CM_JSON_STRING) {
            r->has_suffix = true;
            rc = cm_buf_append_slice(&r->suffix, v->str);
        }
    }
    cm_json_doc_free(d);
    if (rc)
        evt_notify_clear(cfg);
    return rc;
}
