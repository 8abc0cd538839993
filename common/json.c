/* common/json.c - a small JSON writer (into cm_buf) and a strict parser into
 * an arena-backed tree, for the admin API, event records and reports. */
#include "common/cm.h"
#include "common/json.h"
#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------------ writer */
int cm_json_str(cm_buf *b, cm_slice s)
{
    static const char hex[] = "0123456789abcdef";
    if (cm_buf_reserve(b, s.n + 2))
        return CM_ENOMEM;
    cm_buf_append_byte(b, '"');
    for (size_t i = 0; i < s.n; i++) {
        uint8_t c = s.p[i];
        if (c == '"' || c == '\\') {
            cm_buf_append_byte(b, '\\');
            cm_buf_append_byte(b, c);
        } else if (c == '\n') {
            cm_buf_append_str(b, "\\n");
        } else if (c == '\r') {
            cm_buf_append_str(b, "\\r");
        } else if (c == '\t') {
            cm_buf_append_str(b, "\\t");
        } else if (c < 0x20 || c == 0x7f) {
            char e[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
            cm_buf_append_str(b, e);
        } else {
            cm_buf_append_byte(b, c);
        }
    }
    return cm_buf_append_byte(b, '"');
}

int cm_json_cstr(cm_buf *b, const char *s) { return cm_json_str(b, CM_SLICE_STR(s ? s : "")); }

/* ------------------------------------------------------------ parser */
struct json_arena {
    struct json_arena *next;
    size_t used, cap;
    _Alignas(16) uint8_t data[];
};

struct cm_json_doc {
    struct json_arena *arena;
    cm_json *root;
};

static void *jalloc(cm_json_doc *d, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct json_arena *a = d->arena;
    if (!a || a->cap - a->used < n) {
        size_t cap = n > 8192 ? n : 8192;
        a = malloc(sizeof *a + cap);
        if (!a)
            return NULL;
        a->used = 0;
        a->cap = cap;
        a->next = d->arena;
        d->arena = a;
    }
    void *p = a->data + a->used;
    a->used += n;
    memset(p, 0, n);
    return p;
}

struct jp {
    const uint8_t *p, *end;
    cm_json_doc *d;
    int depth;
};

static void ws(struct jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int put_utf8(uint8_t *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xc0 | cp >> 6);
        o[1] = (uint8_t)(0x80 | (cp & 63));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xe0 | cp >> 12);
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 63));
        o[2] = (uint8_t)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (uint8_t)(0xf0 | cp >> 18);
    o[1] = (uint8_t)(0x80 | ((cp >> 12) & 63));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 63));
    o[3] = (uint8_t)(0x80 | (cp & 63));
    return 4;
}

static int parse_string(struct jp *j, cm_slice *out)
{
    const uint8_t *s = ++j->p; /* past the quote */
    size_t n = 0;
    while (j->p < j->end && *j->p != '"') {
        if (*j->p == '\\')
            j->p++;
        j->p++;
        n++;
    }
    if (j->p >= j->end)
        return CM_EINVAL;
    uint8_t *o = jalloc(j->d, n * 4 + 1), *w = o;
    if (!o)
        return CM_ENOMEM;
    for (const uint8_t *q = s; q < j->p; q++) {
        if (*q < 0x20)
            return CM_EINVAL;
        if (*q != '\\') {
            *w++ = *q;
            continue;
        }
        q++;
        switch (*q) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '/': *w++ = '/'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'n': *w++ = '\n'; break;
        case 'r': *w++ = '\r'; break;
        case 't': *w++ = '\t'; break;
        case 'u': {
            if (j->p - q < 5)
                return CM_EINVAL;
            uint32_t cp = 0;
            for (int i = 1; i <= 4; i++) {
                int h = cm_hexval(q[i]);
                if (h < 0)
                    return CM_EINVAL;
                cp = cp << 4 | (uint32_t)h;
            }
            q += 4;
            if (cp >= 0xd800 && cp < 0xdc00 && j->p - q >= 7 && q[1] == '\\' && q[2] == 'u') {
                uint32_t lo = 0;
                for (int i = 3; i <= 6; i++) {
                    int h = cm_hexval(q[i]);
                    if (h < 0)
                        return CM_EINVAL;
                    lo = lo << 4 | (uint32_t)h;
                }
                if (lo >= 0xdc00 && lo < 0xe000) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    q += 6;
                }
            }
            w += put_utf8(w, cp);
            break;
        }
        default:
            return CM_EINVAL;
        }
    }
    *w = 0;
    j->p++; /* closing quote */
    *out = CM_SLICE(o, (size_t)(w - o));
    return 0;
}

static int parse_value(struct jp *j, cm_json **out);

static int parse_value(struct jp *j, cm_json **out)
{
    ws(j);
    if (j->p >= j->end || ++j->depth > 64)
        return CM_EINVAL;
    cm_json *v = jalloc(j->d, sizeof *v);
    if (!v)
        return CM_ENOMEM;
    int rc = 0;
    uint8_t c = *j->p;
    if (c == '{' || c == '[') {
        v->type = c == '{' ? CM_JSON_OBJECT : CM_JSON_ARRAY;
        j->p++;
        ws(j);
        cm_json **tail = &v->child;
        if (j->p < j->end && *j->p == (c == '{' ? '}' : ']')) {
            j->p++;
        } else {
            for (;;) {
                cm_slice key = CM_SLICE_NULL;
                ws(j);
                if (c == '{') {
                    if (j->p >= j->end || *j->p != '"' || (rc = parse_string(j, &key)))
                        return rc ? rc : CM_EINVAL;
                    ws(j);
                    if (j->p >= j->end || *j->p != ':')
                        return CM_EINVAL;
                    j->p++;
                }
                cm_json *item;
                if ((rc = parse_value(j, &item)))
                    return rc;
                item->key = key;
                *tail = item;
                tail = &item->next;
                v->n++;
                ws(j);
                if (j->p < j->end && *j->p == ',') {
                    j->p++;
                    continue;
                }
                if (j->p < j->end && *j->p == (c == '{' ? '}' : ']')) {
                    j->p++;
                    break;
                }
                return CM_EINVAL;
            }
        }
    } else if (c == '"') {
        v->type = CM_JSON_STRING;
        if ((rc = parse_string(j, &v->str)))
            return rc;
    } else if (c == 't' && j->end - j->p >= 4 && !memcmp(j->p, "true", 4)) {
        v->type = CM_JSON_BOOL;
        v->b = true;
        j->p += 4;
    } else if (c == 'f' && j->end - j->p >= 5 && !memcmp(j->p, "false", 5)) {
        v->type = CM_JSON_BOOL;
        j->p += 5;
    } else if (c == 'n' && j->end - j->p >= 4 && !memcmp(j->p, "null", 4)) {
        v->type = CM_JSON_NULL;
        j->p += 4;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        char tmp[64];
        size_t n = 0;
        while (j->p < j->end && n < sizeof tmp - 1 &&
               (strchr("+-.eE", *j->p) || (*j->p >= '0' && *j->p <= '9')))
            tmp[n++] = (char)*j->p++;
        tmp[n] = 0;
        char *e;
        v->type = CM_JSON_NUMBER;
        v->num = strtod(tmp, &e);
        if (*e)
            return CM_EINVAL;
        v->str = CM_SLICE(NULL, 0);
    } else {
        return CM_EINVAL;
    }
    j->depth--;
    *out = v;
    return 0;
}

int cm_json_parse(cm_slice text, cm_json_doc **out)
{
    cm_json_doc *d = calloc(1, sizeof *d);
    if (!d)
        return CM_ENOMEM;
    struct jp j = {text.p, text.p + text.n, d, 0};
    int rc = parse_value(&j, &d->root);
    ws(&j);
    if (!rc && j.p != j.end)
        rc = CM_EINVAL;
    if (rc) {
        cm_json_doc_free(d);
        return rc;
    }
    *out = d;
    return 0;
}

const cm_json *cm_json_root(const cm_json_doc *d) { return d ? d->root : NULL; }

void cm_json_doc_free(cm_json_doc *d)
{
    if (!d)
        return;
    for (struct json_arena *a = d->arena, *nx; a; a = nx) {
        nx = a->next;
        free(a);
    }
    free(d);
}

const cm_json *cm_json_get(const cm_json *obj, const char *key)
{
    if (!obj || obj->type != CM_JSON_OBJECT)
        return NULL;
    for (const cm_json *c = obj->child; c; c = c->next)
        if (cm_slice_eq_str(c->key, key))
            return c;
    return NULL;
}

const char *cm_json_get_str(const cm_json *obj, const char *key)
{
    const cm_json *v = cm_json_get(obj, key);
    return v && v->type == CM_JSON_STRING ? (const char *)v->str.p : NULL;
}

double cm_json_get_num(const cm_json *obj, const char *key, double dflt)
{
    const cm_json *v = cm_json_get(obj, key);
    return v && v->type == CM_JSON_NUMBER ? v->num : dflt;
}
