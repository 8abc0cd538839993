/* common/json.h - JSON for the admin API, event records and reports: an
 * escaping writer over cm_buf and a strict parser into a read-only tree.
 * Part of common (libc only). */
#ifndef CM_JSON_H
#define CM_JSON_H

#include "common/cm.h"

/* Appends s as a JSON string literal (quoted, escaped). */
int cm_json_str(cm_buf *b, cm_slice s);
int cm_json_cstr(cm_buf *b, const char *s); /* NULL writes "" */

enum cm_json_type { CM_JSON_NULL, CM_JSON_BOOL, CM_JSON_NUMBER, CM_JSON_STRING, CM_JSON_ARRAY,
                    CM_JSON_OBJECT };

/* A parsed value. Strings are NUL-terminated (str.p) after decoding. */
typedef struct cm_json {
    enum cm_json_type type;
    cm_slice key;          /* member name inside an object */
    cm_slice str;          /* CM_JSON_STRING */
    double num;            /* CM_JSON_NUMBER */
    bool b;                /* CM_JSON_BOOL */
    struct cm_json *child; /* first element / member */
    struct cm_json *next;  /* next sibling */
    size_t n;              /* number of children */
} cm_json;

typedef struct cm_json_doc cm_json_doc;

/* Parses text (RFC 8259; nesting up to 64). Returns 0 and *out, CM_EINVAL
 * on malformed input, CM_ENOMEM. Free with cm_json_doc_free. */
int cm_json_parse(cm_slice text, cm_json_doc **out);
const cm_json *cm_json_root(const cm_json_doc *d);
void cm_json_doc_free(cm_json_doc *d); /* NULL is a no-op */
/* Member lookup in an object; NULL if absent or obj is not an object. */
const cm_json *cm_json_get(const cm_json *obj, const char *key);
const char *cm_json_get_str(const cm_json *obj, const char *key);
double cm_json_get_num(const cm_json *obj, const char *key, double dflt);

#endif
