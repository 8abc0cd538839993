/* events/queue.c - the durable outbox and its dispatcher: staging events
 * into the batch of the change that causes them, the in-memory queue of
 * pending events (in seq order, in order per destination and key), the
 * delivery threads with backoff and dead-lettering, change-log retention,
 * and the stored definitions of functions, targets and bucket configs.
 * Delivery itself lives in targets.c and runner.c. */
#include "common/json.h"
#include "events/evt_int.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- records */
/* The compact fields of outbox records (version 3) and change-log entries
 * (version 2): unsigned LEB128 varints, and strings as a varint header
 * (stored length << 2 | form) followed by the stored bytes. Forms:
 *   0  the bytes as they are;
 *   1  an even run of lowercase hex digits, stored packed (half the bytes);
 *   2  the same in uppercase;
 *   3  the stored bytes followed by the string before it in the record
 *      (the host id "cairn-" + request id stores "cairn-" only).
 * The encoder takes the shortest form; any string may take any form. */
static int put_varint(cm_buf *b, uint64_t v)
{
    uint8_t x[10];
    size_t n = 0;
    while (v >= 0x80) {
        x[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    x[n++] = (uint8_t)v;
    return cm_buf_append(b, x, n);
}

static int get_varint(cm_reader *rd, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (!rd->n)
            return CM_ECORRUPT;
        uint8_t c = *rd->p++;
        rd->n--;
        if (shift == 63 && c > 1)
            return CM_ECORRUPT;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return CM_ECORRUPT;
}

static int get_varint32(cm_reader *rd, uint32_t *out)
{
    uint64_t v;
    if (get_varint(rd, &v) || v > UINT32_MAX)
        return CM_ECORRUPT;
    *out = (uint32_t)v;
    return 0;
}

/* 1 if s is all lowercase hex digits, 2 if all uppercase (digits alone
 * count as lowercase), 0 otherwise. */
static int hex_case(cm_slice s)
{
    bool lower = false, upper = false;
    for (size_t i = 0; i < s.n; i++) {
        uint8_t c = s.p[i];
        if (c >= 'a' && c <= 'f')
            lower = true;
        else if (c >= 'A' && c <= 'F')
            upper = true;
        else if (c < '0' || c > '9')
            return 0;
    }
    return lower && upper ? 0 : upper ? 2 : 1;
}

/* Appends string s in its shortest form; prev is the string before it in
 * the record (empty if none). */
static int put_str(cm_buf *b, cm_slice s, cm_slice prev)
{
    int hc = s.n >= 2 && s.n % 2 == 0 ? hex_case(s) : 0;
    bool tail = prev.n && s.n >= prev.n && !memcmp(s.p + s.n - prev.n, prev.p, prev.n);
    if (tail && (!hc || s.n - prev.n <= s.n / 2)) {
        size_t n = s.n - prev.n;
        if (put_varint(b, (uint64_t)n << 2 | 3) || cm_buf_append(b, s.p, n))
            return CM_ENOMEM;
        return 0;
    }
    if (hc) {
        size_t n = s.n / 2;
        if (put_varint(b, (uint64_t)n << 2 | (unsigned)hc) || cm_buf_reserve(b, n))
            return CM_ENOMEM;
        for (size_t i = 0; i < n; i++)
            b->p[b->n++] = (uint8_t)(cm_hexval(s.p[2 * i]) << 4 | cm_hexval(s.p[2 * i + 1]));
        b->p[b->n] = 0;
        return 0;
    }
    if (put_varint(b, (uint64_t)s.n << 2) || (s.n && cm_buf_append(b, s.p, s.n)))
        return CM_ENOMEM;
    return 0;
}

/* A string read by get_str: its form, stored bytes and decoded length. */
typedef struct str_in {
    unsigned form;
    cm_slice raw;
    size_t n;
} str_in;

/* Reads a string's header and stored bytes; nprev is the length of the
 * string before it (the decoded length of form 3 depends on it). */
static int get_str(cm_reader *rd, size_t nprev, str_in *s)
{
    uint64_t h;
    if (get_varint(rd, &h) || (h >> 2) > rd->n)
        return CM_ECORRUPT;
    s->form = (unsigned)(h & 3);
    s->raw = CM_SLICE(rd->p, (size_t)(h >> 2));
    rd->p += s->raw.n;
    rd->n -= s->raw.n;
    s->n = s->form == 0 ? s->raw.n : s->form == 3 ? s->raw.n + nprev : 2 * s->raw.n;
    return 0;
}

/* Writes the s->n decoded bytes of s to dst; prev as for put_str. */
static void str_write(const str_in *s, const uint8_t *prev, uint8_t *dst)
{
    static const char lo[] = "0123456789abcdef", up[] = "0123456789ABCDEF";
    const char *digits = s->form == 2 ? up : lo;
    switch (s->form) {
    case 1:
    case 2:
        for (size_t i = 0; i < s->raw.n; i++) {
            dst[2 * i] = (uint8_t)digits[s->raw.p[i] >> 4];
            dst[2 * i + 1] = (uint8_t)digits[s->raw.p[i] & 15];
        }
        break;
    case 3:
        if (s->raw.n)
            memcpy(dst, s->raw.p, s->raw.n);
        if (s->n > s->raw.n)
            memmove(dst + s->raw.n, prev, s->n - s->raw.n);
        break;
    default:
        if (s->n)
            memcpy(dst, s->raw.p, s->n);
    }
}

/* Reads a string into out (cap bytes, NUL-terminated; no NUL inside). */
static int get_cstr(cm_reader *rd, char *out, size_t cap)
{
    str_in s;
    if (get_str(rd, 0, &s) || s.form == 3 || s.n >= cap)
        return CM_ECORRUPT;
    str_write(&s, NULL, (uint8_t *)out);
    out[s.n] = 0;
    return memchr(out, 0, s.n) ? CM_ECORRUPT : 0;
}

/* Reads a string and appends it to out; prev_off is where the string
 * before it starts in out (its length nprev), for form 3. */
static int get_buf(cm_reader *rd, cm_buf *out, size_t prev_off, size_t nprev)
{
    str_in s;
    if (get_str(rd, nprev, &s) || (s.form == 3 && nprev > out->n - prev_off))
        return CM_ECORRUPT;
    if (cm_buf_reserve(out, s.n))
        return CM_ENOMEM;
    str_write(&s, out->p + prev_off, out->p + out->n);
    out->n += s.n;
    out->p[out->n] = 0;
    return 0;
}

static uint64_t zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static int64_t unzigzag(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

/* Version 1 (older releases): u32 lengths, the stored JSON message. */
static int rec_encode_v1(const evt__rec *r, cm_buf *out)
{
    int rc = 0;
    rc |= cm_buf_put_u8(out, 1);
    rc |= cm_buf_put_u8(out, r->dest_kind);
    rc |= cm_buf_put_bytes(out, CM_SLICE_STR(r->dest));
    rc |= cm_buf_put_bytes(out, CM_SLICE_STR(r->bucket));
    rc |= cm_buf_put_bytes(out, cm_buf_slice(&r->key));
    rc |= cm_buf_put_u32(out, r->type);
    rc |= cm_buf_put_u8(out, (uint8_t)r->depth);
    rc |= cm_buf_put_u64(out, (uint64_t)r->created_ms);
    rc |= cm_buf_put_u64(out, (uint64_t)r->time_ms);
    rc |= cm_buf_put_u64(out, r->evseq);
    rc |= cm_buf_put_u32(out, r->attempts);
    rc |= cm_buf_put_bytes(out, cm_buf_slice(&r->err));
    rc |= cm_buf_put_bytes(out, cm_buf_slice(&r->json));
    return rc ? CM_ENOMEM : 0;
}

int evt__rec_encode(const evt__rec *r, cm_buf *out)
{
    if (r->ver == 1)
        return rec_encode_v1(r, out);
    int rc = 0;
    cm_slice none = CM_SLICE_NULL, prev = none;
    rc |= cm_buf_put_u8(out, 3);
    rc |= cm_buf_put_u8(out, r->dest_kind);
    rc |= put_str(out, CM_SLICE_STR(r->dest), none);
    rc |= put_str(out, CM_SLICE_STR(r->bucket), none);
    rc |= put_str(out, cm_buf_slice(&r->key), none);
    rc |= put_varint(out, r->type);
    rc |= cm_buf_put_u8(out, (uint8_t)r->depth);
    rc |= put_varint(out, (uint64_t)r->time_ms);
    rc |= put_varint(out, zigzag(r->created_ms - r->time_ms));
    rc |= put_varint(out, r->evseq);
    rc |= put_varint(out, r->attempts);
    rc |= put_str(out, cm_buf_slice(&r->err), none);
    rc |= put_varint(out, r->size);
    rc |= put_str(out, cm_buf_slice(&r->etag), none);
    const char *p = (const char *)r->strs.p, *end = p + r->strs.n;
    for (int i = 0; i < EVT__REC_NSTR; i++) {
        cm_slice s = CM_SLICE("", 0);
        if (p && p < end) {
            s = CM_SLICE(p, strlen(p));
            p += s.n + 1;
        }
        rc |= put_str(out, s, prev);
        prev = s;
    }
    return rc ? CM_ENOMEM : 0;
}

/* Appends s NUL-terminated to strs (s NULL: ""). */
static int strs_add(cm_buf *strs, const char *s)
{
    return cm_buf_append(strs, s ? s : "", (s ? strlen(s) : 0) + 1) ? CM_ENOMEM : 0;
}

int evt__rec_set_change(evt__rec *r, const evt_change *c, const char *config_id)
{
    r->ver = 2;
    r->size = c->size;
    cm_buf_reset(&r->etag);
    cm_buf_reset(&r->strs);
    if (cm_buf_append_slice(&r->etag, c->etag) || strs_add(&r->strs, config_id) ||
        strs_add(&r->strs, c->region) || strs_add(&r->strs, c->principal) ||
        strs_add(&r->strs, c->owner) || strs_add(&r->strs, c->source_ip) ||
        strs_add(&r->strs, c->request_id) || strs_add(&r->strs, c->host_id))
        return CM_ENOMEM;
    return 0;
}

int evt__rec_message(const evt__rec *r, cm_buf *tmp, cm_slice *msg)
{
    if (r->ver == 1) {
        *msg = cm_buf_slice(&r->json);
        return 0;
    }
    const char *s[EVT__REC_NSTR];
    const char *p = (const char *)r->strs.p, *end = p + r->strs.n;
    for (int i = 0; i < EVT__REC_NSTR; i++) {
        if (p && p < end) {
            s[i] = p;
            p += strlen(p) + 1;
        } else {
            s[i] = "";
        }
    }
    evt_change c = {
        .bucket = r->bucket,
        .key = cm_buf_slice(&r->key),
        .type = r->type,
        .size = r->size,
        .etag = cm_buf_slice(&r->etag),
        .time_ms = r->time_ms,
        .region = s[1],
        .principal = s[2],
        .owner = s[3],
        .source_ip = s[4],
        .request_id = s[5],
        .host_id = s[6],
        .depth = r->depth,
    };
    cm_buf_reset(tmp);
    int rc = evt_record_json(&c, s[0], r->evseq, tmp);
    *msg = cm_buf_slice(tmp);
    return rc;
}

/* Versions 1 and 2: a u32-length string into out (cap bytes, NUL-terminated). */
static int get_str32(cm_reader *rd, char *out, size_t cap)
{
    cm_slice s;
    int rc = cm_get_bytes(rd, &s);
    if (rc)
        return rc;
    if (s.n >= cap || memchr(s.p, 0, s.n))
        return CM_ECORRUPT;
    memcpy(out, s.p, s.n);
    out[s.n] = 0;
    return 0;
}

/* Version 3: the compact fields (above). */
static int rec_decode_v3(cm_reader *rd, evt__rec *r)
{
    uint8_t kind, depth;
    uint64_t t, dc, size;
    int rc;
    if (cm_get_u8(rd, &kind) || get_cstr(rd, r->dest, sizeof r->dest) ||
        get_cstr(rd, r->bucket, sizeof r->bucket))
        return CM_ECORRUPT;
    if ((rc = get_buf(rd, &r->key, 0, 0)))
        return rc;
    if (get_varint32(rd, &r->type) || cm_get_u8(rd, &depth) || get_varint(rd, &t) ||
        get_varint(rd, &dc) || get_varint(rd, &r->evseq) || get_varint32(rd, &r->attempts))
        return CM_ECORRUPT;
    if ((rc = get_buf(rd, &r->err, 0, 0)))
        return rc;
    if (get_varint(rd, &size))
        return CM_ECORRUPT;
    if ((rc = get_buf(rd, &r->etag, 0, 0)))
        return rc;
    size_t prev_off = 0, nprev = 0;
    for (int i = 0; i < EVT__REC_NSTR; i++) {
        size_t off = r->strs.n;
        if ((rc = get_buf(rd, &r->strs, prev_off, nprev)))
            return rc;
        if (memchr(r->strs.p + off, 0, r->strs.n - off))
            return CM_ECORRUPT;
        if (cm_buf_append_byte(&r->strs, 0))
            return CM_ENOMEM;
        prev_off = off;
        nprev = r->strs.n - 1 - off;
    }
    r->ver = 2;
    r->dest_kind = kind;
    r->depth = depth;
    r->time_ms = (int64_t)t;
    r->created_ms = r->time_ms + unzigzag(dc);
    r->size = size;
    return 0;
}

int evt__rec_decode(cm_slice v, evt__rec *r)
{
    cm_reader rd = {v.p, v.n};
    uint8_t ver = 0, kind = 0, depth = 0;
    uint64_t created = 0, t = 0;
    cm_slice key, err, json = {0}, etag = {0}, str[EVT__REC_NSTR];
    int rc;

    memset(r, 0, sizeof *r);
    if ((rc = cm_get_u8(&rd, &ver)) || ver < 1 || ver > 3)
        return CM_ECORRUPT;
    if (ver == 3) {
        if ((rc = rec_decode_v3(&rd, r)))
            evt__rec_free(r);
        return rc;
    }
    if ((rc = cm_get_u8(&rd, &kind)) || (rc = get_str32(&rd, r->dest, sizeof r->dest)) ||
        (rc = get_str32(&rd, r->bucket, sizeof r->bucket)) || (rc = cm_get_bytes(&rd, &key)) ||
        (rc = cm_get_u32(&rd, &r->type)) || (rc = cm_get_u8(&rd, &depth)) ||
        (rc = cm_get_u64(&rd, &created)) || (rc = cm_get_u64(&rd, &t)) ||
        (rc = cm_get_u64(&rd, &r->evseq)) || (rc = cm_get_u32(&rd, &r->attempts)) ||
        (rc = cm_get_bytes(&rd, &err)))
        return CM_ECORRUPT;
    if (ver == 1) {
        if (cm_get_bytes(&rd, &json))
            return CM_ECORRUPT;
    } else {
        if (cm_get_u64(&rd, &r->size) || cm_get_bytes(&rd, &etag))
            return CM_ECORRUPT;
        for (int i = 0; i < EVT__REC_NSTR; i++)
            if (cm_get_bytes(&rd, &str[i]) || memchr(str[i].p, 0, str[i].n))
                return CM_ECORRUPT;
    }
    r->ver = ver;
    r->dest_kind = kind;
    r->depth = depth;
    r->created_ms = (int64_t)created;
    r->time_ms = (int64_t)t;
    if (cm_buf_append_slice(&r->key, key) || cm_buf_append_slice(&r->err, err) ||
        cm_buf_append_slice(&r->json, json) || cm_buf_append_slice(&r->etag, etag))
        goto oom;
    for (int i = 0; ver == 2 && i < EVT__REC_NSTR; i++)
        if (cm_buf_append_slice(&r->strs, str[i]) || cm_buf_append_byte(&r->strs, 0))
            goto oom;
    return 0;
oom:
    evt__rec_free(r);
    return CM_ENOMEM;
}

void evt__rec_free(evt__rec *r)
{
    cm_buf_free(&r->key);
    cm_buf_free(&r->err);
    cm_buf_free(&r->json);
    cm_buf_free(&r->etag);
    cm_buf_free(&r->strs);
}

/* ---------------------------------------------------------------- config */
void evt_config_defaults(evt_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_attempts = 8;
    cfg->max_age_ms = 24 * 3600 * 1000LL;
    cfg->backoff_ms = 500;
    cfg->backoff_max_ms = 60000;
    cfg->retention_ms = 7 * 24 * 3600 * 1000LL;
    cfg->workers = 4;
    cfg->max_depth = 4;
    cfg->delivery_timeout_ms = 10000;
    cfg->log_max_bytes = 16LL << 20;
    cfg->window = 4096;
}

int evt_config_parse(const char *spec, evt_config *cfg, const char **why)
{
    const char *p = spec;
    while (p && *p) {
        size_t n = strcspn(p, ",");
        char item[96], *eq, *end;
        if (n >= sizeof item) {
            *why = "setting too long";
            return CM_EINVAL;
        }
        memcpy(item, p, n);
        item[n] = 0;
        p += n + (p[n] == ',');
        if (!n)
            continue;
        if (!(eq = strchr(item, '='))) {
            *why = "settings are key=value";
            return CM_EINVAL;
        }
        *eq = 0;
        long long v = strtoll(eq + 1, &end, 10);
        if (end == eq + 1 || *end || v < 0 || v > 100000000000LL) {
            *why = "bad number";
            return CM_EINVAL;
        }
        if (!strcmp(item, "retries") && v >= 1)
            cfg->max_attempts = (int)v;
        else if (!strcmp(item, "max-age") && v >= 1)
            cfg->max_age_ms = v * 1000;
        else if (!strcmp(item, "backoff") && v >= 1 && v <= 3600000)
            cfg->backoff_ms = (int)v;
        else if (!strcmp(item, "backoff-max") && v >= 1 && v <= 86400000)
            cfg->backoff_max_ms = (int)v;
        else if (!strcmp(item, "retention") && v >= 1)
            cfg->retention_ms = v * 1000;
        else if (!strcmp(item, "workers") && v >= 1 && v <= 64)
            cfg->workers = (int)v;
        else if (!strcmp(item, "max-depth") && v >= 1 && v <= 64)
            cfg->max_depth = (int)v;
        else if (!strcmp(item, "timeout") && v >= 100 && v <= 600000)
            cfg->delivery_timeout_ms = (int)v;
        else if (!strcmp(item, "log-max") && v >= 4096)
            cfg->log_max_bytes = v;
        else if (!strcmp(item, "window") && v >= 16 && v <= 1000000)
            cfg->window = (int)v;
        else {
            *why = "unknown setting or value out of range (retries, max-age, backoff, "
                   "backoff-max, retention, workers, max-depth, timeout, log-max, window)";
            return CM_EINVAL;
        }
    }
    if (cfg->backoff_max_ms < cfg->backoff_ms)
        cfg->backoff_max_ms = cfg->backoff_ms;
    return 0;
}

/* ------------------------------------------------------------ definitions */
static void fn_free(evt__fn *f)
{
    if (!f)
        return;
    free(f->exec);
    for (size_t i = 0; i < f->nenv; i++)
        free(f->env[i]);
    free(f->env);
    free(f);
}

static void tgt_free(evt__tgt *t)
{
    if (t) {
        free(t->url);
        free(t);
    }
}

static bool valid_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
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

static void fn_json(const evt__fn *f, cm_buf *b)
{
    cm_buf_append_str(b, "{\"name\":");
    cm_json_cstr(b, f->name);
    cm_buf_append_str(b, ",\"exec\":");
    cm_json_cstr(b, f->exec);
    cm_buf_printf(b, ",\"timeout\":%d,\"concurrency\":%d,\"env\":[", f->timeout_s,
                  f->concurrency);
    for (size_t i = 0; i < f->nenv; i++) {
        if (i)
            cm_buf_append_byte(b, ',');
        cm_json_cstr(b, f->env[i]);
    }
    cm_buf_append_str(b, "]}");
}

static void tgt_json(const evt__tgt *t, cm_buf *b)
{
    cm_buf_append_str(b, "{\"name\":");
    cm_json_cstr(b, t->name);
    cm_buf_append_str(b, ",\"kind\":");
    cm_json_cstr(b, t->kind);
    cm_buf_append_str(b, ",\"url\":");
    cm_json_cstr(b, t->url);
    cm_buf_append_byte(b, '}');
}

static evt__fn *fn_new(const char *name, const char *exec, int timeout_s, int concurrency,
                       const char *const *env, size_t nenv)
{
    evt__fn *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    snprintf(f->name, sizeof f->name, "%s", name);
    f->exec = strdup(exec);
    f->timeout_s = timeout_s;
    f->concurrency = concurrency;
    f->env = calloc(nenv + 1, sizeof *f->env);
    if (!f->exec || !f->env) {
        fn_free(f);
        return NULL;
    }
    for (size_t i = 0; i < nenv; i++) {
        if (!(f->env[i] = strdup(env[i]))) {
            fn_free(f);
            return NULL;
        }
        f->nenv++;
    }
    return f;
}

static evt__fn *fn_find(evt_t *e, const char *name)
{
    for (evt__fn *f = e->fns; f; f = f->next)
        if (!strcmp(f->name, name))
            return f;
    return NULL;
}

static evt__tgt *tgt_find(evt_t *e, const char *name)
{
    for (evt__tgt *t = e->tgts; t; t = t->next)
        if (!strcmp(t->name, name))
            return t;
    return NULL;
}

int evt_function_put(evt_t *e, const char *name, const char *exec, int timeout_s,
                     int concurrency, const char *const *env, size_t nenv, const char **why)
{
    cm_buf b = {0};
    evt__fn *f, **pp;
    int rc;

    if (!valid_name(name)) {
        *why = "a function name is 1-63 characters of A-Z a-z 0-9 . _ -";
        return CM_EINVAL;
    }
    if (!exec || !*exec) {
        *why = "--exec COMMAND is required";
        return CM_EINVAL;
    }
    if (timeout_s < 1 || timeout_s > 86400 || concurrency < 1 || concurrency > 256) {
        *why = "timeout must be 1..86400 s and concurrency 1..256";
        return CM_EINVAL;
    }
    for (size_t i = 0; i < nenv; i++) {
        const char *eq = strchr(env[i], '=');
        if (!eq || eq == env[i]) {
            *why = "--env takes K=V";
            return CM_EINVAL;
        }
    }
    if (!(f = fn_new(name, exec, timeout_s, concurrency, env, nenv)))
        return CM_ENOMEM;
    fn_json(f, &b);
    if ((rc = md_evt_conf_put(e->md, MD_EVT_FUNCTION, name, cm_buf_slice(&b)))) {
        fn_free(f);
        goto out;
    }
    pthread_mutex_lock(&e->lk);
    for (pp = &e->fns; *pp; pp = &(*pp)->next) {
        if (!strcmp((*pp)->name, name)) {
            evt__fn *old = *pp;
            f->running = old->running;
            f->next = old->next;
            *pp = f;
            fn_free(old);
            f = NULL;
            break;
        }
    }
    if (f) {
        f->next = e->fns;
        e->fns = f;
    }
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->lk);
out:
    cm_buf_free(&b);
    return rc;
}

static bool url_ok(const char *kind, const char *url)
{
    if (!strcmp(kind, "webhook") || !strcmp(kind, "cloudevents"))
        return !strncmp(url, "http://", 7) || !strncmp(url, "https://", 8);
    char scheme[16];
    snprintf(scheme, sizeof scheme, "%s://", kind);
    if (strncmp(url, scheme, strlen(scheme)))
        return false;
    const char *hp = url + strlen(scheme), *slash = strchr(hp, '/');
    return slash && slash > hp && slash[1] && strchr(hp, ':') && strchr(hp, ':') < slash;
}

int evt_target_put(evt_t *e, const char *name, const char *kind, const char *url,
                   const char **why)
{
    static const char *const kinds[] = {"webhook", "cloudevents", "redis", "nats", "amqp"};
    cm_buf b = {0};
    evt__tgt *t, **pp;
    bool known = false;
    int rc;

    if (!valid_name(name)) {
        *why = "a target name is 1-63 characters of A-Z a-z 0-9 . _ -";
        return CM_EINVAL;
    }
    for (size_t i = 0; kind && i < sizeof kinds / sizeof kinds[0]; i++)
        known |= !strcmp(kind, kinds[i]);
    if (!known) {
        *why = "the kind is one of webhook, cloudevents, redis, nats, amqp";
        return CM_EINVAL;
    }
    if (!url || !url_ok(kind, url) || strlen(url) > 2000) {
        *why = "bad URL: webhook/cloudevents http(s)://..., redis://HOST:PORT/STREAM, "
               "nats://HOST:PORT/SUBJECT, amqp://HOST:PORT/EXCHANGE";
        return CM_EINVAL;
    }
    if (!(t = calloc(1, sizeof *t)) || !(t->url = strdup(url))) {
        tgt_free(t);
        return CM_ENOMEM;
    }
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->kind, sizeof t->kind, "%s", kind);
    tgt_json(t, &b);
    if ((rc = md_evt_conf_put(e->md, MD_EVT_TARGET, name, cm_buf_slice(&b)))) {
        tgt_free(t);
        goto out;
    }
    pthread_mutex_lock(&e->lk);
    for (pp = &e->tgts; *pp; pp = &(*pp)->next) {
        if (!strcmp((*pp)->name, name)) {
            evt__tgt *old = *pp;
            t->inflight = old->inflight; /* a new definition starts with a closed breaker */
            t->next = old->next;
            *pp = t;
            tgt_free(old);
            t = NULL;
            break;
        }
    }
    if (t) {
        t->next = e->tgts;
        e->tgts = t;
    }
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->lk);
out:
    cm_buf_free(&b);
    return rc;
}

int evt_function_remove(evt_t *e, const char *name)
{
    int rc = valid_name(name) ? md_evt_conf_delete(e->md, MD_EVT_FUNCTION, name) : CM_ENOTFOUND;
    if (rc)
        return rc;
    pthread_mutex_lock(&e->lk);
    for (evt__fn **pp = &e->fns; *pp; pp = &(*pp)->next) {
        if (!strcmp((*pp)->name, name)) {
            evt__fn *f = *pp;
            *pp = f->next;
            fn_free(f);
            break;
        }
    }
    pthread_mutex_unlock(&e->lk);
    return 0;
}

int evt_target_remove(evt_t *e, const char *name)
{
    int rc = valid_name(name) ? md_evt_conf_delete(e->md, MD_EVT_TARGET, name) : CM_ENOTFOUND;
    if (rc)
        return rc;
    pthread_mutex_lock(&e->lk);
    for (evt__tgt **pp = &e->tgts; *pp; pp = &(*pp)->next) {
        if (!strcmp((*pp)->name, name)) {
            evt__tgt *t = *pp;
            *pp = t->next;
            tgt_free(t);
            break;
        }
    }
    pthread_mutex_unlock(&e->lk);
    return 0;
}

int evt_function_list_json(evt_t *e, cm_buf *out)
{
    pthread_mutex_lock(&e->lk);
    cm_buf_append_byte(out, '[');
    for (evt__fn *f = e->fns; f; f = f->next) {
        if (f != e->fns)
            cm_buf_append_byte(out, ',');
        fn_json(f, out);
    }
    pthread_mutex_unlock(&e->lk);
    return cm_buf_append_byte(out, ']');
}

int evt_target_list_json(evt_t *e, cm_buf *out)
{
    pthread_mutex_lock(&e->lk);
    cm_buf_append_byte(out, '[');
    for (evt__tgt *t = e->tgts; t; t = t->next) {
        if (t != e->tgts)
            cm_buf_append_byte(out, ',');
        tgt_json(t, out);
    }
    pthread_mutex_unlock(&e->lk);
    return cm_buf_append_byte(out, ']');
}

int evt_function_log(evt_t *e, const char *name, size_t max, cm_buf *out)
{
    char path[4200];
    pthread_mutex_lock(&e->lk);
    bool have = valid_name(name) && fn_find(e, name);
    pthread_mutex_unlock(&e->lk);
    if (!have)
        return CM_ENOTFOUND;
    snprintf(path, sizeof path, "%s/%s.log", e->log_dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    if (fseek(f, 0, SEEK_END) == 0) {
        long sz = ftell(f);
        if (sz > (long)max)
            fseek(f, sz - (long)max, SEEK_SET);
        else
            fseek(f, 0, SEEK_SET);
    }
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        cm_buf_append(out, buf, n);
    fclose(f);
    return 0;
}

/* Loading at start. */
static int load_fn(void *arg, const char *name, cm_slice val)
{
    evt_t *e = arg;
    cm_json_doc *d = NULL;
    if (cm_json_parse(val, &d)) {
        cm_log(CM_LOG_WARN, "events: function %s: unreadable definition", name);
        return 0;
    }
    const cm_json *j = cm_json_root(d), *env = cm_json_get(j, "env");
    const char *envs[256];
    size_t n = 0;
    for (const cm_json *x = env ? env->child : NULL; x && n < 256; x = x->next)
        if (x->type == CM_JSON_STRING)
            envs[n++] = (const char *)x->str.p;
    const char *exec = cm_json_get_str(j, "exec");
    evt__fn *f = exec ? fn_new(name, exec, (int)cm_json_get_num(j, "timeout", 60),
                               (int)cm_json_get_num(j, "concurrency", 1), envs, n)
                      : NULL;
    if (f) {
        f->next = e->fns;
        e->fns = f;
    }
    cm_json_doc_free(d);
    return 0;
}

static int load_tgt(void *arg, const char *name, cm_slice val)
{
    evt_t *e = arg;
    cm_json_doc *d = NULL;
    if (cm_json_parse(val, &d))
        return 0;
    const cm_json *j = cm_json_root(d);
    const char *kind = cm_json_get_str(j, "kind"), *url = cm_json_get_str(j, "url");
    evt__tgt *t = kind && url ? calloc(1, sizeof *t) : NULL;
    if (t && (t->url = strdup(url))) {
        snprintf(t->name, sizeof t->name, "%s", name);
        snprintf(t->kind, sizeof t->kind, "%s", kind);
        t->next = e->tgts;
        e->tgts = t;
    } else {
        free(t);
    }
    cm_json_doc_free(d);
    return 0;
}

static int load_notify(void *arg, const char *name, cm_slice val)
{
    evt_t *e = arg;
    evt__bcfg *c = calloc(1, sizeof *c);
    if (!c)
        return CM_ENOMEM;
    snprintf(c->bucket, sizeof c->bucket, "%s", name);
    if (evt_notify_decode(val, &c->cfg)) {
        cm_log(CM_LOG_WARN, "events: bucket %s: unreadable notification configuration", name);
        free(c);
        return 0;
    }
    c->next = e->bcfgs;
    e->bcfgs = c;
    return 0;
}

/* -------------------------------------------------------- bucket configs */
static evt__bcfg *bcfg_find(evt_t *e, const char *bucket)
{
    for (evt__bcfg *c = e->bcfgs; c; c = c->next)
        if (!strcmp(c->bucket, bucket))
            return c;
    return NULL;
}

static int rule_copy(evt_rule *dst, const evt_rule *src)
{
    *dst = *src;
    memset(&dst->prefix, 0, sizeof dst->prefix);
    memset(&dst->suffix, 0, sizeof dst->suffix);
    if (cm_buf_append_slice(&dst->prefix, cm_buf_slice(&src->prefix)) ||
        cm_buf_append_slice(&dst->suffix, cm_buf_slice(&src->suffix)))
        return CM_ENOMEM;
    return 0;
}

static int notify_copy(evt_notify *dst, const evt_notify *src)
{
    for (size_t i = 0; i < src->n; i++) {
        evt_rule *r = evt_notify_add(dst);
        if (!r || rule_copy(r, &src->a[i])) {
            evt_notify_clear(dst);
            return CM_ENOMEM;
        }
    }
    return 0;
}

int evt_notify_put(evt_t *e, const char *bucket, const evt_notify *cfg, const char **why)
{
    cm_buf b = {0};
    evt__bcfg *c = NULL;
    int rc = 0;

    pthread_mutex_lock(&e->lk);
    for (size_t i = 0; i < cfg->n && !rc; i++) {
        enum evt_dest_kind kind;
        char name[330];
        if (evt_arn_parse(cfg->a[i].arn, &kind, name) ||
            (kind == EVT_DEST_FUNCTION ? !fn_find(e, name) : !tgt_find(e, name))) {
            *why = "Unable to validate the following destination configurations";
            rc = CM_EINVAL;
        }
        for (size_t j = 0; j < i && !rc; j++) {
            if (evt_rules_overlap(&cfg->a[i], &cfg->a[j])) {
                *why = "Configurations overlap. Configurations on the same bucket cannot share "
                       "a common event type.";
                rc = CM_EINVAL;
            }
            if (!rc && cfg->a[i].id[0] && !strcmp(cfg->a[i].id, cfg->a[j].id)) {
                *why = "Configuration Ids must be unique.";
                rc = CM_EINVAL;
            }
        }
    }
    pthread_mutex_unlock(&e->lk);
    if (rc)
        return rc;
    if (cfg->n) {
        if (!(c = calloc(1, sizeof *c)) || notify_copy(&c->cfg, cfg)) {
            free(c);
            return CM_ENOMEM;
        }
        snprintf(c->bucket, sizeof c->bucket, "%s", bucket);
        evt_notify_encode(cfg, &b);
        rc = md_evt_conf_put(e->md, MD_EVT_NOTIFY, bucket, cm_buf_slice(&b));
    } else {
        rc = md_evt_conf_delete(e->md, MD_EVT_NOTIFY, bucket);
        if (rc == CM_ENOTFOUND)
            rc = 0;
    }
    cm_buf_free(&b);
    if (rc) {
        if (c)
            evt_notify_clear(&c->cfg);
        free(c);
        return rc;
    }
    pthread_rwlock_wrlock(&e->cfg_lk);
    for (evt__bcfg **pp = &e->bcfgs; *pp; pp = &(*pp)->next) {
        if (!strcmp((*pp)->bucket, bucket)) {
            evt__bcfg *old = *pp;
            *pp = old->next;
            evt_notify_clear(&old->cfg);
            free(old);
            break;
        }
    }
    if (c) {
        c->next = e->bcfgs;
        e->bcfgs = c;
    }
    pthread_rwlock_unlock(&e->cfg_lk);
    return 0;
}

int evt_notify_get(evt_t *e, const char *bucket, evt_notify *cfg)
{
    int rc = 0;
    pthread_rwlock_rdlock(&e->cfg_lk);
    evt__bcfg *c = bcfg_find(e, bucket);
    if (c)
        rc = notify_copy(cfg, &c->cfg);
    pthread_rwlock_unlock(&e->cfg_lk);
    return rc;
}

/* --------------------------------------------------------------- staging */
struct evt_staged {
    evt__pend *a[EVT_MAX_RULES];
    size_t n;
};

static uint64_t tuple_hash(const evt__rec *r)
{
    uint64_t h = CM_FNV1A_INIT;
    h = cm_fnv1a(h, &r->dest_kind, 1);
    h = cm_fnv1a(h, r->dest, strlen(r->dest) + 1);
    h = cm_fnv1a(h, r->bucket, strlen(r->bucket) + 1);
    h = cm_fnv1a(h, r->key.p, r->key.n);
    return h ? h : 1;
}

static void pend_free(evt__pend *p)
{
    if (p) {
        evt__rec_free(&p->r);
        free(p);
    }
}

/* Change-log entry of c (version 2; evt_int.h). */
static int log_entry(const evt_change *c, cm_buf *out)
{
    int rc = 0;
    cm_slice none = CM_SLICE_NULL;
    rc |= cm_buf_put_u8(out, 2);
    rc |= put_varint(out, c->type);
    rc |= put_varint(out, (uint64_t)c->time_ms);
    rc |= put_varint(out, c->size);
    rc |= put_str(out, c->etag, none);
    rc |= put_str(out, c->key, none);
    rc |= cm_buf_put_u8(out, (uint8_t)(c->depth > 255 ? 255 : c->depth));
    return rc ? CM_ENOMEM : 0;
}

/* A decoded change-log entry; etag and key point into tmp or the entry. */
typedef struct log_ent {
    uint32_t type;
    int64_t time_ms;
    uint64_t size;
    cm_slice etag, key;
} log_ent;

/* Decodes a change-log entry of version 1 or 2 (only the time when
 * time_only). Version 2 strings are unpacked into tmp. 0 or CM_ECORRUPT. */
static int log_decode(cm_slice v, bool time_only, cm_buf *tmp, log_ent *out /* OUT */)
{
    cm_reader rd = {v.p, v.n};
    uint8_t ver;
    uint64_t t;
    if (cm_get_u8(&rd, &ver))
        return CM_ECORRUPT;
    if (ver == 1) {
        if (cm_get_u32(&rd, &out->type) || cm_get_u64(&rd, &t) ||
            (!time_only && (cm_get_u64(&rd, &out->size) || cm_get_bytes(&rd, &out->etag) ||
                            cm_get_bytes(&rd, &out->key))))
            return CM_ECORRUPT;
        out->time_ms = (int64_t)t;
        return 0;
    }
    if (ver != 2 || get_varint32(&rd, &out->type) || get_varint(&rd, &t))
        return CM_ECORRUPT;
    out->time_ms = (int64_t)t;
    if (time_only)
        return 0;
    cm_buf_reset(tmp);
    if (get_varint(&rd, &out->size) || get_buf(&rd, tmp, 0, 0))
        return CM_ECORRUPT;
    size_t ne = tmp->n;
    if (get_buf(&rd, tmp, 0, 0))
        return CM_ECORRUPT;
    out->etag = CM_SLICE(tmp->p, ne);
    out->key = CM_SLICE(tmp->p + ne, tmp->n - ne);
    return 0;
}

int evt_stage(evt_t *e, md_batch_t *b, const evt_change *c, evt_staged **staged)
{
    evt_staged *st = NULL;
    cm_buf v = {0};
    uint64_t seq;
    int rc;

    *staged = NULL;
    if (!(seq = md_batch_seq(b)))
        return CM_EIO;
    if ((rc = log_entry(c, &v)) || (rc = md_changelog_add(b, c->bucket, seq, cm_buf_slice(&v))))
        goto out;
    /* Which rules fire: copied out under the lock, built outside it. */
    struct {
        enum evt_dest_kind kind;
        char dest[330];
        char id[256];
    } hits[8];
    size_t nhits = 0;
    pthread_rwlock_rdlock(&e->cfg_lk);
    evt__bcfg *bc = bcfg_find(e, c->bucket);
    for (size_t i = 0; bc && i < bc->cfg.n && nhits < 8; i++) {
        const evt_rule *r = &bc->cfg.a[i];
        if (!evt_rule_match(r, c->type, c->key) ||
            evt_arn_parse(r->arn, &hits[nhits].kind, hits[nhits].dest))
            continue;
        snprintf(hits[nhits].id, sizeof hits[nhits].id, "%s", r->id);
        nhits++;
    }
    pthread_rwlock_unlock(&e->cfg_lk);
    if (nhits && c->depth >= e->cfg.max_depth) {
        pthread_mutex_lock(&e->lk);
        e->st.dropped_depth += nhits;
        pthread_mutex_unlock(&e->lk);
        cm_log(CM_LOG_WARN,
               "events: recursion guard: %s on %s/%.*s at depth %d triggers nothing (limit %d)",
               evt_type_name(c->type), c->bucket, (int)(c->key.n > 200 ? 200 : c->key.n),
               (const char *)c->key.p, c->depth, e->cfg.max_depth);
        goto out;
    }
    if (!nhits)
        goto out;
    if (!(st = calloc(1, sizeof *st))) {
        rc = CM_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < nhits; i++) {
        evt__pend *p = calloc(1, sizeof *p);
        if (!p) {
            rc = CM_ENOMEM;
            goto out;
        }
        st->a[st->n++] = p;
        evt__rec *r = &p->r;
        r->dest_kind = (uint8_t)hits[i].kind;
        snprintf(r->dest, sizeof r->dest, "%s", hits[i].dest);
        snprintf(r->bucket, sizeof r->bucket, "%s", c->bucket);
        r->type = c->type;
        r->depth = c->depth;
        r->created_ms = cm_now_ms();
        r->time_ms = c->time_ms;
        r->evseq = seq;
        if ((rc = cm_buf_append_slice(&r->key, c->key)) ||
            (rc = evt__rec_set_change(r, c, hits[i].id)))
            goto out;
        if (!(p->seq = md_batch_seq(b))) {
            rc = CM_EIO;
            goto out;
        }
        p->tuple = tuple_hash(r);
        cm_buf_reset(&v);
        if ((rc = evt__rec_encode(r, &v)) || (rc = md_outbox_add(b, p->seq, cm_buf_slice(&v))))
            goto out;
    }
    *staged = st;
    st = NULL;
out:
    if (st) {
        for (size_t i = 0; i < st->n; i++)
            pend_free(st->a[i]);
        free(st);
    }
    cm_buf_free(&v);
    return rc;
}

/* The queue of p's destination, created on first use. With lk held. */
static evt__dq *dq_get(evt_t *e, const evt__rec *r)
{
    for (evt__dq *q = e->dqs; q; q = q->next)
        if (q->kind == r->dest_kind && !strcmp(q->name, r->dest))
            return q;
    evt__dq *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->kind = r->dest_kind;
    memcpy(q->name, r->dest, sizeof q->name);
    q->next = e->dqs;
    e->dqs = q;
    return q;
}

static size_t window_of(const evt_t *e)
{
    return e->cfg.window > 0 ? (size_t)e->cfg.window : 4096;
}

/* Inserts p into q in seq order (usually at the tail). With lk held. False,
 * and p not taken, if q holds an event with p's seq already. */
static bool pend_insert(evt_t *e, evt__dq *q, evt__pend *p)
{
    evt__pend *after = q->tail;
    while (after && after->seq > p->seq)
        after = after->prev;
    if (after && after->seq == p->seq)
        return false;
    p->dq = q;
    p->prev = after;
    p->next = after ? after->next : q->head;
    if (p->next)
        p->next->prev = p;
    else
        q->tail = p;
    if (after)
        after->next = p;
    else
        q->head = p;
    q->n++;
    e->npend++;
    return true;
}

static void pend_unlink(evt_t *e, evt__pend *p)
{
    evt__dq *q = p->dq;
    if (p->prev)
        p->prev->next = p->next;
    else
        q->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        q->tail = p->prev;
    q->n--;
    e->npend--;
}

/* p stays in the outbox only: a refill loads it. With lk held; frees p. */
static void pend_spill(evt_t *e, evt__dq *q, evt__pend *p)
{
    q->nspill++;
    e->nspill++;
    pend_free(p);
}

/* Hands a committed pending event to its queue (takes ownership of p).
 * With lk held. Keeps the window (evt__dq): an event past a full window,
 * or past loaded_to of a spilled queue, stays in the outbox only; one
 * committed while a refill scans goes to `incoming`, sorted out after. */
static void pend_offer(evt_t *e, evt__pend *p)
{
    evt__dq *q = dq_get(e, &p->r);
    if (!q) { /* stored: delivered after a restart */
        cm_log(CM_LOG_ERROR, "events: out of memory queueing an event");
        pend_free(p);
        return;
    }
    if (q->refilling) {
        p->next = q->incoming;
        q->incoming = p;
        return;
    }
    if (q->spilled && p->seq > q->loaded_to) {
        pend_spill(e, q, p);
        return;
    }
    if (!q->spilled && q->n >= window_of(e) && q->tail && p->seq > q->tail->seq) {
        q->spilled = true;
        q->loaded_to = q->tail->seq;
        pend_spill(e, q, p);
        return;
    }
    if (!pend_insert(e, q, p))
        pend_free(p);
}

/* A replayed dead letter keeps its (old) seq: into the window if there is
 * room, else the next refill rescans the outbox from just before it
 * (events met again that are in memory already are skipped by seq). */
static void pend_offer_old(evt_t *e, evt__pend *p)
{
    evt__dq *q = dq_get(e, &p->r);
    if (q && !q->refilling && q->n >= window_of(e)) {
        if (!q->spilled || p->seq - 1 < q->loaded_to)
            q->loaded_to = p->seq - 1;
        q->spilled = true;
        pend_spill(e, q, p);
        return;
    }
    pend_offer(e, p);
}

/* True if every event of st goes to a webhook or broker target that a
 * worker is delivering to right now, with fewer events waiting there than
 * those workers take next (a batch each for a target that pipelines, one
 * otherwise): each such worker takes the next events when it is done
 * (it picks again before it waits), so waking another costs a wake-up per
 * event for nothing. An event waits at most one delivery that way: the
 * next one finds the queue longer and wakes a worker. Functions, which may
 * run long, always wake one. With lk held, before the events are offered. */
static bool busy_take(evt_t *e, const evt_staged *st)
{
    for (size_t i = 0; i < st->n; i++) {
        const evt__pend *p = st->a[i];
        if (p->r.dest_kind != EVT_DEST_TARGET)
            return false;
        const evt__dq *q = NULL;
        for (q = e->dqs; q; q = q->next)
            if (q->kind == p->r.dest_kind && !strcmp(q->name, p->r.dest))
                break;
        if (!q || q->ninflight == 0)
            return false;
        /* A worker delivering to a pipelining target takes up to a batch
         * next time round; others, one event. */
        const evt__tgt *t = tgt_find(e, p->r.dest);
        size_t take = t && evt__target_pipelines(t->kind, t->url) ? EVT__BATCH : 1;
        if (q->n - q->ninflight >= take * q->ninflight)
            return false;
    }
    return st->n > 0;
}

/* True if some event of st is for a destination that may be tried now
 * (not a target whose breaker is open or whose probe is out). With lk held. */
static bool staged_ready(evt_t *e, const evt_staged *st, int64_t now)
{
    for (size_t i = 0; i < st->n; i++) {
        const evt__pend *p = st->a[i];
        if (p->r.dest_kind != EVT_DEST_TARGET)
            return true;
        const evt__tgt *t = tgt_find(e, p->r.dest);
        if (!t || !t->fails || (t->down_until <= now && !t->inflight))
            return true;
    }
    return false;
}

void evt_staged_finish(evt_t *e, evt_staged *st, bool committed)
{
    if (!st)
        return;
    if (committed) {
        pthread_mutex_lock(&e->lk);
        /* One event: one worker, if one is idle and the event may go now
         * (a target whose breaker is open is retried by the workers' timed
         * wait; a busy worker picks the event up before it waits again). */
        bool wake = e->nwaiting > 0 && staged_ready(e, st, cm_now_ms()) && !busy_take(e, st);
        for (size_t i = 0; i < st->n; i++)
            pend_offer(e, st->a[i]);
        size_t depth = e->npend + e->nspill;
        if (wake)
            pthread_cond_signal(&e->cv);
        pthread_mutex_unlock(&e->lk);
        if (e->cfg.depth_fn)
            e->cfg.depth_fn(e->cfg.cb_arg, depth);
    } else {
        for (size_t i = 0; i < st->n; i++)
            pend_free(st->a[i]);
    }
    free(st);
}

/* Destination kind and name of a stored record, without decoding the rest
 * (name >= 64 bytes). False if unreadable. */
static bool rec_dest(cm_slice v, uint8_t *kind, char *name)
{
    cm_reader rd = {v.p, v.n};
    uint8_t ver;
    cm_slice d;
    if (cm_get_u8(&rd, &ver) || cm_get_u8(&rd, kind))
        return false;
    if (ver == 3)
        return get_cstr(&rd, name, 64) == 0;
    if (cm_get_bytes(&rd, &d) || d.n >= 64)
        return false;
    memcpy(name, d.p, d.n);
    name[d.n] = 0;
    return true;
}

static evt__dq *dq_find(evt_t *e, uint8_t kind, const char *name)
{
    for (evt__dq *q = e->dqs; q; q = q->next)
        if (q->kind == kind && !strcmp(q->name, name))
            return q;
    return NULL;
}

/* At start (no workers yet): fills each destination's window in seq order
 * and counts the rest, which stay in the outbox only. */
static int load_pending(void *arg, uint64_t seq, cm_slice v)
{
    evt_t *e = arg;
    uint8_t kind;
    char name[64];
    evt__dq *q;
    if (rec_dest(v, &kind, name) && (q = dq_find(e, kind, name)) && q->spilled) {
        q->nspill++;
        e->nspill++;
        return 0;
    }
    evt__pend *p = calloc(1, sizeof *p);
    if (!p)
        return CM_ENOMEM;
    if (evt__rec_decode(v, &p->r)) {
        cm_log(CM_LOG_WARN, "events: skipping unreadable outbox record %llu",
               (unsigned long long)seq);
        free(p);
        return 0;
    }
    p->seq = seq;
    p->tuple = tuple_hash(&p->r);
    pend_offer(e, p);
    return 0;
}

static void done_flush(evt_t *e);

/* ------------------------------------------------------------- the window */
struct refill_ctx {
    const evt__dq *q;       /* kind and name only (fixed for its life) */
    size_t budget, n;
    evt__pend *head, *tail; /* loaded, in seq order */
    uint64_t last;          /* the last seq looked at */
    bool full;              /* stopped at the budget, not at the end */
};

static int refill_one(void *arg, uint64_t seq, cm_slice v)
{
    struct refill_ctx *rc = arg;
    uint8_t kind;
    char name[64];
    if (rc->n >= rc->budget) {
        rc->full = true;
        return 1;
    }
    rc->last = seq;
    if (!rec_dest(v, &kind, name) || kind != rc->q->kind || strcmp(name, rc->q->name))
        return 0;
    evt__pend *p = calloc(1, sizeof *p);
    if (!p)
        return CM_ENOMEM;
    if (evt__rec_decode(v, &p->r)) {
        free(p);
        return 0;
    }
    p->seq = seq;
    p->tuple = tuple_hash(&p->r);
    if (rc->tail)
        rc->tail->next = p;
    else
        rc->head = p;
    rc->tail = p;
    rc->n++;
    return 0;
}

/* A spilled queue whose window drained below half, or NULL. With lk held. */
static evt__dq *refill_due(evt_t *e)
{
    for (evt__dq *q = e->dqs; q; q = q->next)
        if (q->spilled && !q->refilling && q->n < window_of(e) / 2)
            return q;
    return NULL;
}

/* Loads q's next events from the outbox (seq > loaded_to, in order) until
 * its window is full. Called and returns with lk held; the scan runs
 * without it, and what commits meanwhile waits on q->incoming. */
static void refill(evt_t *e, evt__dq *q)
{
    q->refilling = true;
    done_flush(e); /* the scan must not meet delivered events again */
    struct refill_ctx rc = {q, window_of(e) - q->n, 0, NULL, NULL, q->loaded_to, false};
    if (q->n >= window_of(e))
        rc.budget = 0;
    pthread_mutex_unlock(&e->lk);
    int r = md_outbox_scan(e->md, false, rc.last, refill_one, &rc);
    pthread_mutex_lock(&e->lk);
    size_t added = 0;
    while (rc.head) {
        evt__pend *p = rc.head;
        rc.head = p->next;
        if (pend_insert(e, q, p))
            added++;
        else
            pend_free(p);
    }
    added = added < q->nspill ? added : q->nspill;
    q->nspill -= added;
    e->nspill -= added;
    q->loaded_to = rc.last;
    if (r == 0 && !rc.full) { /* the end of the outbox: all of q is in memory */
        e->nspill -= q->nspill;
        q->nspill = 0;
        q->spilled = false;
    } else if (r != 0 && r != 1) {
        cm_log(CM_LOG_ERROR, "events: cannot load pending events of %s: %s", q->name,
               cm_strerror(r));
    }
    q->refilling = false;
    evt__pend *in = q->incoming;
    q->incoming = NULL;
    while (in) {
        evt__pend *p = in;
        in = in->next;
        pend_offer(e, p);
    }
}

/* Max-age while a target stays down: its waiting events are dead-lettered
 * without an attempt (their attempt count is left as it is; the last
 * error names the target's). Looks at each open breaker's window at most
 * once a second. Called and returns with lk held; true if it dropped lk. */
static bool sweep_expired(evt_t *e, int64_t now)
{
    for (evt__dq *q = e->dqs; q; q = q->next) {
        if (q->kind != EVT_DEST_TARGET || !q->n || now < q->next_sweep_ms)
            continue;
        evt__tgt *t = tgt_find(e, q->name);
        if (!t || !t->fails)
            continue;
        q->next_sweep_ms = now + 1000;
        size_t n = 0;
        for (evt__pend *p = q->head; p; p = p->next)
            n += !p->inflight && now - p->r.created_ms >= e->cfg.max_age_ms;
        if (!n)
            continue;
        evt__pend **a = malloc(n * sizeof *a);
        uint64_t *seqs = malloc(n * sizeof *seqs);
        cm_slice *recs = calloc(n, sizeof *recs);
        cm_buf *vals = calloc(n, sizeof *vals);
        if (!a || !seqs || !recs || !vals) {
            free(a);
            free(seqs);
            free(recs);
            free(vals);
            return false;
        }
        char why[256];
        snprintf(why, sizeof why, "target down: %s", t->last_err);
        size_t k = 0;
        for (evt__pend *p = q->head, *nx; p && k < n; p = nx) {
            nx = p->next;
            if (p->inflight || now - p->r.created_ms < e->cfg.max_age_ms)
                continue;
            pend_unlink(e, p);
            a[k++] = p;
        }
        pthread_mutex_unlock(&e->lk);
        for (size_t i = 0; i < k; i++) {
            cm_buf_reset(&a[i]->r.err);
            cm_buf_append_str(&a[i]->r.err, why);
            evt__rec_encode(&a[i]->r, &vals[i]);
            seqs[i] = a[i]->seq;
            recs[i] = cm_buf_slice(&vals[i]);
        }
        int rc = md_outbox_bury_many(e->md, seqs, recs, k);
        if (rc)
            cm_log(CM_LOG_ERROR, "events: cannot dead-letter %zu expired events of %s: %s", k,
                   q->name, cm_strerror(rc));
        else
            cm_log(CM_LOG_WARN, "events: dead-lettered %zu events for %s older than max-age (%s)",
                   k, q->name, why);
        pthread_mutex_lock(&e->lk);
        for (size_t i = 0; i < k; i++) {
            cm_buf_free(&vals[i]);
            if (rc && pend_insert(e, q, a[i])) /* still pending: keep it */
                continue;
            pend_free(a[i]);
        }
        if (!rc) {
            e->st.dead += k;
            q->next_sweep_ms = 0; /* the refilled window may hold more */
        }
        free(a);
        free(seqs);
        free(recs);
        free(vals);
        return true;
    }
    return false;
}

/* ------------------------------------------------------------ dispatcher */
/* Set of tuples blocked during one queue's scan: open addressing over
 * e->blocked, entries valid when stamped with the current generation. */
static bool blocked_test_add(evt_t *e, uint64_t t)
{
    size_t m = sizeof e->blocked / sizeof e->blocked[0] - 1;
    for (size_t i = t & m;; i = (i + 1) & m) {
        if (e->blocked_gen[i] != e->gen) {
            e->blocked_gen[i] = e->gen;
            e->blocked[i] = t;
            return false;
        }
        if (e->blocked[i] == t)
            return true;
    }
}

/* Picks the first pending event that may go now: due, not in flight, its
 * destination ready, and no earlier event of its (destination, key)
 * pending. A target whose breaker is not closed is ready only for one
 * delivery at a time (the probe) once its backoff passed. *wait_ms gets
 * how long until something might be ready. With lk held. Cost: the number
 * of destinations plus the lookahead of the ready ones, however long the
 * backlog. */
static evt__pend *pick(evt_t *e, int64_t now, int64_t *wait_ms)
{
    *wait_ms = 60000;
    for (evt__dq *q = e->dqs; q; q = q->next) {
        if (!q->n)
            continue;
        if (q->kind == EVT_DEST_FUNCTION) {
            evt__fn *f = fn_find(e, q->name);
            if (f && f->running >= f->concurrency)
                continue; /* a run ending wakes us */
        } else {
            evt__tgt *t = tgt_find(e, q->name);
            if (t && t->fails && t->down_until > now) { /* open */
                if (t->down_until - now < *wait_ms)
                    *wait_ms = t->down_until - now;
                continue;
            }
            if (t && t->fails && t->inflight)
                continue; /* half-open, its probe is out: the prober picks again after */
        }
        if (++e->gen == 0) { /* wrapped: forget every stamp */
            memset(e->blocked_gen, 0, sizeof e->blocked_gen);
            e->gen = 1;
        }
        size_t seen = 0;
        for (evt__pend *p = q->head; p && seen < EVT__LOOKAHEAD; p = p->next, seen++) {
            if (blocked_test_add(e, p->tuple) || p->inflight)
                continue;
            if (p->due_ms > now) {
                if (p->due_ms - now < *wait_ms)
                    *wait_ms = p->due_ms - now;
                continue;
            }
            return p;
        }
    }
    return NULL;
}

static bool log_expired(void *arg, cm_slice rec)
{
    int64_t cutoff = *(int64_t *)arg;
    log_ent le;
    if (log_decode(rec, true, NULL, &le))
        return true;
    return le.time_ms < cutoff;
}

/* Deletes the outbox records of the delivered events noted in e->done, in
 * one non-sync batch (a delete lost in a crash means a redelivery, as for
 * one). Called and returns with lk held; drops it for the write. */
static void done_flush(evt_t *e)
{
    uint64_t a[EVT__DONE_MAX];
    size_t n = e->ndone;
    if (!n)
        return;
    memcpy(a, e->done, n * sizeof a[0]);
    e->ndone = 0;
    pthread_mutex_unlock(&e->lk);
    int rc = md_outbox_done_many(e->md, a, n);
    if (rc)
        cm_log(CM_LOG_WARN, "events: cannot forget %zu delivered events: %s", n, cm_strerror(rc));
    pthread_mutex_lock(&e->lk);
}

/* Notes delivered event seq for done_flush. With lk held; may drop it. */
static void done_note(evt_t *e, uint64_t seq, int64_t now)
{
    if (e->ndone == EVT__DONE_MAX)
        done_flush(e);
    if (!e->ndone)
        e->done_since_ms = now;
    e->done[e->ndone++] = seq;
    if (e->ndone == EVT__DONE_MAX || now - e->done_since_ms >= EVT__DONE_MS)
        done_flush(e);
}

/* Runs function p->r.dest for p (not in flight for anyone else); 0 when
 * it acknowledged the event. */
static int deliver_fn(evt__worker *w, evt__pend *p, cm_buf *err)
{
    evt_t *e = w->e;
    int rc;
    evt__fn *snap = NULL;
    pthread_mutex_lock(&e->lk);
    evt__fn *f = fn_find(e, p->r.dest);
    if (f)
        snap = fn_new(f->name, f->exec, f->timeout_s, f->concurrency,
                      (const char *const *)f->env, f->nenv);
    pthread_mutex_unlock(&e->lk);
    if (!f) {
        cm_buf_printf(err, "no function named %s", p->r.dest);
        return CM_ENOTFOUND;
    }
    cm_buf tmp = {0};
    cm_slice msg;
    rc = !snap ? CM_ENOMEM : evt__rec_message(&p->r, &tmp, &msg);
    if (rc && snap)
        cm_buf_printf(err, "cannot build the event message: %s", cm_strerror(rc));
    else
        rc = evt__run(e, snap, &p->r, msg, err);
    cm_buf_free(&tmp);
    fn_free(snap);
    pthread_mutex_lock(&e->lk);
    if ((f = fn_find(e, p->r.dest)) && f->running > 0)
        f->running--;
    pthread_mutex_unlock(&e->lk);
    return rc;
}

/* Delivers the n events b[] (in flight for this worker only, all for one
 * target) in one call to the target: rc[i] as evt__deliver sets it. */
static void deliver_tgt(evt__worker *w, evt__pend *const *b, size_t n, int *rc, cm_buf *err)
{
    evt_t *e = w->e;
    evt__tgt_snap t = {{0}, {0}, NULL};
    pthread_mutex_lock(&e->lk);
    evt__tgt *tg = tgt_find(e, b[0]->r.dest);
    if (tg) {
        memcpy(t.name, tg->name, sizeof t.name);
        memcpy(t.kind, tg->kind, sizeof t.kind);
        t.url = strdup(tg->url);
    }
    pthread_mutex_unlock(&e->lk);
    if (!tg) {
        cm_buf_printf(err, "no target named %s", b[0]->r.dest);
        for (size_t i = 0; i < n; i++)
            rc[i] = CM_ENOTFOUND;
        return;
    }
    cm_buf tmp[EVT__BATCH];
    cm_slice msg[EVT__BATCH];
    const evt__rec *r[EVT__BATCH];
    int brc = t.url ? 0 : CM_ENOMEM;
    memset(tmp, 0, sizeof tmp);
    for (size_t i = 0; i < n && !brc; i++) {
        r[i] = &b[i]->r;
        brc = evt__rec_message(&b[i]->r, &tmp[i], &msg[i]);
    }
    if (brc) {
        cm_buf_printf(err, "cannot build the event message: %s", cm_strerror(brc));
        for (size_t i = 0; i < n; i++)
            rc[i] = brc;
    } else {
        evt__deliver(w, &t, r, msg, n, rc, err);
    }
    for (size_t i = 0; i < n; i++)
        cm_buf_free(&tmp[i]);
    free(t.url);
}

/* After pick() returned p: p and, when its destination is a target that
 * takes many events at once and its breaker is closed, the next events of
 * p's queue that may go now, each the first pending one of its key (pick's
 * scan goes on where it stopped, with the same blocked tuples). Into b[];
 * returns how many; *piped tells whether the target pipelines. With lk
 * held. */
static size_t pick_batch(evt_t *e, evt__pend *p, int64_t now, evt__pend **b, bool *piped)
{
    size_t n = 0;
    b[n++] = p;
    *piped = false;
    if (p->r.dest_kind != EVT_DEST_TARGET)
        return n;
    const evt__tgt *t = tgt_find(e, p->r.dest);
    *piped = t && evt__target_pipelines(t->kind, t->url);
    if (!t || t->fails || !*piped)
        return n;
    size_t seen = 0;
    for (evt__pend *x = p->next; x && n < EVT__BATCH && seen < EVT__LOOKAHEAD;
         x = x->next, seen++) {
        if (blocked_test_add(e, x->tuple) || x->inflight || x->due_ms > now)
            continue;
        b[n++] = x;
    }
    return n;
}

static void *worker_main(void *arg)
{
    evt__worker *w = arg;
    evt_t *e = w->e;
    cm_buf err = {0}, vals[EVT__BATCH] = {{0}};
    sigset_t pipe_set;

    pthread_setname_np(pthread_self(), "events"); /* in top -H, perf, gdb */
    /* A function that closes its stdin early must not SIGPIPE the server. */
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);
    pthread_mutex_lock(&e->lk);
    while (!e->stopping) {
        int64_t now = cm_now_ms(), wait_ms = 0;
        if (w->idx == 0 && now >= e->next_trim_ms) {
            e->next_trim_ms = now + 600000;
            int64_t cutoff = now - e->cfg.retention_ms;
            size_t ntrim = 0;
            pthread_mutex_unlock(&e->lk);
            md_changelog_trim(e->md, log_expired, &cutoff, &ntrim);
            if (ntrim)
                cm_log(CM_LOG_INFO, "events: trimmed %zu change-log entries", ntrim);
            pthread_mutex_lock(&e->lk);
            continue;
        }
        evt__dq *rq = refill_due(e);
        if (rq) {
            refill(e, rq);
            continue;
        }
        if (sweep_expired(e, now))
            continue;
        evt__pend *p = pick(e, now, &wait_ms);
        if (!p && e->ndone) { /* idle: forget what was delivered before waiting */
            done_flush(e);
            continue;
        }
        if (!p) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t ns = ts.tv_nsec + (wait_ms % 1000) * 1000000;
            ts.tv_sec += wait_ms / 1000 + ns / 1000000000;
            ts.tv_nsec = ns % 1000000000;
            e->nwaiting++;
            pthread_cond_timedwait(&e->cv, &e->lk, &ts);
            e->nwaiting--;
            continue;
        }
        evt__pend *b[EVT__BATCH];
        int rc[EVT__BATCH];
        uint64_t ok_seq[EVT__BATCH];
        bool piped;
        size_t nb = pick_batch(e, p, now, b, &piped), nok = 0;
        for (size_t i = 0; i < nb; i++) {
            b[i]->inflight = true;
            b[i]->dq->ninflight++;
        }
        e->ninflight += nb;
        e->st.calls++;
        if (p->r.dest_kind == EVT_DEST_FUNCTION) {
            evt__fn *f = fn_find(e, p->r.dest);
            if (f)
                f->running++; /* claimed under lk: concurrency holds */
        } else {
            evt__tgt *t = tgt_find(e, p->r.dest);
            if (t) {
                t->inflight += (int)nb; /* claimed under lk: one probe at a time */
                e->st.probes += t->fails > 0;
            }
        }
        pthread_mutex_unlock(&e->lk);

        cm_buf_reset(&err);
        if (p->r.dest_kind == EVT_DEST_FUNCTION)
            rc[0] = deliver_fn(w, p, &err);
        else
            deliver_tgt(w, b, nb, rc, &err);
        now = cm_now_ms();
        bool bury[EVT__BATCH], failed = false, acked = false;
        /* The failed events' records: rewritten (attempts, last error) in
         * one batch, dead letters moved in another (sync), whatever the
         * number of events the call carried. */
        uint64_t useq[EVT__BATCH], bseq[EVT__BATCH];
        cm_slice urec[EVT__BATCH], brec[EVT__BATCH];
        size_t nu = 0, nbury = 0;
        for (size_t i = 0; i < nb; i++) {
            evt__pend *x = b[i];
            bury[i] = false;
            acked |= rc[i] == 0;
            if (!rc[i] || rc[i] == EVT__UNTRIED)
                continue;
            failed |= rc[i] != CM_ENOTFOUND && rc[i] != EVT__REJECTED;
            x->r.attempts++;
            cm_buf_reset(&x->r.err);
            cm_buf_append_slice(&x->r.err, cm_buf_slice(&err));
            bury[i] = (int)x->r.attempts >= e->cfg.max_attempts ||
                      now - x->r.created_ms >= e->cfg.max_age_ms;
            cm_buf *xv = &vals[nu + nbury];
            cm_buf_reset(xv);
            evt__rec_encode(&x->r, xv);
            if (bury[i]) {
                cm_log(CM_LOG_WARN, "events: dead-lettered event %llu for %s after %u attempts: %s",
                       (unsigned long long)x->seq, x->r.dest, x->r.attempts, cm_buf_str(&err));
                bseq[nbury] = x->seq;
                brec[nbury++] = cm_buf_slice(xv);
            } else {
                cm_log(CM_LOG_INFO, "events: delivery of %llu to %s failed (attempt %u): %s",
                       (unsigned long long)x->seq, x->r.dest, x->r.attempts, cm_buf_str(&err));
                useq[nu] = x->seq;
                urec[nu++] = cm_buf_slice(xv);
            }
        }
        md_outbox_update_many(e->md, useq, urec, nu);
        md_outbox_bury_many(e->md, bseq, brec, nbury);

        pthread_mutex_lock(&e->lk);
        bool recovered = false; /* a probe succeeded: the target's backlog may all go */
        int64_t down_until = 0;
        if (p->r.dest_kind == EVT_DEST_TARGET) {
            /* One breaker step per call to the target, however many events
             * it carried: a failure opens it, success alone closes it. */
            evt__tgt *t = tgt_find(e, p->r.dest);
            if (t)
                t->inflight = t->inflight > (int)nb ? t->inflight - (int)nb : 0;
            if (t && failed) {
                t->fails++;
                t->down_until = now + evt_backoff_ms(&e->cfg, t->fails, (uint32_t)random());
                down_until = t->down_until;
                snprintf(t->last_err, sizeof t->last_err, "%s", cm_buf_str(&err));
            } else if (t && acked) {
                recovered = t->fails > 0;
                t->fails = 0;
                t->down_until = 0;
            }
        }
        /* Every event of the batch is settled before done_note may drop lk:
         * none may be picked again, or freed, while another worker could. */
        for (size_t i = 0; i < nb; i++) {
            evt__pend *x = b[i];
            x->inflight = false;
            e->ninflight--;
            x->dq->ninflight--;
            if (rc[i] == EVT__UNTRIED) {
                if (x->due_ms < down_until)
                    x->due_ms = down_until;
            } else if (!rc[i] || bury[i]) {
                if (rc[i])
                    e->st.dead++;
                else
                    e->st.delivered++, ok_seq[nok++] = x->seq;
                pend_unlink(e, x);
                pend_free(x);
            } else {
                e->st.failed++;
                /* A target failure: this event stays the probe, tried again
                 * when the breaker half-opens. One the target refused (or
                 * any, when the breaker stayed closed) waits its own backoff. */
                x->due_ms = down_until && rc[i] != EVT__REJECTED
                                ? down_until
                                : now + evt_backoff_ms(&e->cfg, x->r.attempts,
                                                       (uint32_t)random());
            }
        }
        for (size_t i = 0; i < nok; i++)
            done_note(e, ok_seq[i], now); /* may drop lk */
        /* This worker picks again before it waits, so what this delivery
         * unblocked (the next event of its key, a function slot) is taken
         * care of. Wake others only for work beyond that: a recovered
         * target's backlog, or more events pending than the workers on them
         * and this one's next pick (a batch, for a pipelining target) take. */
        if (recovered)
            pthread_cond_broadcast(&e->cv);
        else if (e->nwaiting > 0 && e->npend > e->ninflight + (piped ? EVT__BATCH : 1))
            pthread_cond_signal(&e->cv);
        if (e->cfg.depth_fn) {
            size_t depth = e->npend + e->nspill;
            pthread_mutex_unlock(&e->lk);
            e->cfg.depth_fn(e->cfg.cb_arg, depth);
            pthread_mutex_lock(&e->lk);
        }
    }
    pthread_mutex_unlock(&e->lk);
    evt__worker_cleanup(w);
    cm_buf_free(&err);
    for (size_t i = 0; i < EVT__BATCH; i++)
        cm_buf_free(&vals[i]);
    free(w);
    return NULL;
}

/* ------------------------------------------------------------ start, stop */
int evt_start(const evt_config *cfg, md_db_t *md, evt_t **out)
{
    evt_t *e = calloc(1, sizeof *e);
    int rc;
    if (!e)
        return CM_ENOMEM;
    e->cfg = *cfg;
    e->md = md;
    pthread_mutex_init(&e->lk, NULL);
    pthread_cond_init(&e->cv, NULL);
    pthread_rwlock_init(&e->cfg_lk, NULL);
    snprintf(e->log_dir, sizeof e->log_dir, "%s/logs/functions",
             cfg->data_dir ? cfg->data_dir : ".");
    if ((rc = md_evt_conf_scan(md, MD_EVT_FUNCTION, load_fn, e)) ||
        (rc = md_evt_conf_scan(md, MD_EVT_TARGET, load_tgt, e)) ||
        (rc = md_evt_conf_scan(md, MD_EVT_NOTIFY, load_notify, e)) ||
        (rc = md_outbox_scan(md, false, 0, load_pending, e)))
        goto fail;
    if (e->npend + e->nspill)
        cm_log(CM_LOG_INFO, "events: %zu events pending delivery (%zu loaded)",
               e->npend + e->nspill, e->npend);
    if (cfg->depth_fn)
        cfg->depth_fn(cfg->cb_arg, e->npend + e->nspill);
    srandom((unsigned)cm_mono_ns());
    evt__targets_init();
    e->threads = calloc((size_t)cfg->workers, sizeof *e->threads);
    if (!e->threads) {
        rc = CM_ENOMEM;
        goto fail;
    }
    for (int i = 0; i < cfg->workers; i++) {
        evt__worker *w = calloc(1, sizeof *w);
        if (!w) {
            rc = CM_ENOMEM;
            goto fail;
        }
        w->e = e;
        w->idx = i;
        for (int j = 0; j < EVT__CONNS; j++)
            w->conns[j].fd = -1;
        if (pthread_create(&e->threads[i], NULL, worker_main, w)) {
            free(w);
            rc = CM_ENOMEM;
            goto fail;
        }
        e->nthreads++;
    }
    *out = e;
    return 0;
fail:
    evt_stop(e);
    return rc;
}

void evt_stop(evt_t *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&e->lk);
    __atomic_store_n(&e->stopping, true, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->lk);
    for (int i = 0; i < e->nthreads; i++)
        pthread_join(e->threads[i], NULL);
    free(e->threads);
    pthread_mutex_lock(&e->lk);
    done_flush(e);
    pthread_mutex_unlock(&e->lk);
    while (e->dqs) {
        evt__dq *q = e->dqs;
        e->dqs = q->next;
        while (q->head) {
            evt__pend *p = q->head;
            pend_unlink(e, p);
            pend_free(p);
        }
        while (q->incoming) {
            evt__pend *p = q->incoming;
            q->incoming = p->next;
            pend_free(p);
        }
        free(q);
    }
    while (e->fns) {
        evt__fn *f = e->fns;
        e->fns = f->next;
        fn_free(f);
    }
    while (e->tgts) {
        evt__tgt *t = e->tgts;
        e->tgts = t->next;
        tgt_free(t);
    }
    while (e->bcfgs) {
        evt__bcfg *c = e->bcfgs;
        e->bcfgs = c->next;
        evt_notify_clear(&c->cfg);
        free(c);
    }
    pthread_rwlock_destroy(&e->cfg_lk);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->lk);
    free(e);
}

void evt_get_stats(evt_t *e, evt_stats *out)
{
    pthread_mutex_lock(&e->lk);
    *out = e->st;
    out->pending = e->npend + e->nspill;
    out->resident = e->npend;
    pthread_mutex_unlock(&e->lk);
}

/* ------------------------------------------------------------ admin views */
struct list_ctx {
    cm_buf *out;
    size_t n, limit;
};

static int list_one(void *arg, uint64_t seq, cm_slice v)
{
    struct list_ctx *lc = arg;
    evt__rec r;
    char sq[17], t[32];
    if (lc->n >= lc->limit)
        return 1;
    if (evt__rec_decode(v, &r))
        return 0;
    evt_sequencer(r.evseq, sq);
    cm_time_iso8601_ms(r.created_ms, t);
    cm_buf_printf(lc->out, "%s{\"id\":%llu,\"destination\":", lc->n ? "," : "",
                  (unsigned long long)seq);
    cm_buf_printf(lc->out, "\"%s:%s\",\"bucket\":", r.dest_kind == EVT_DEST_FUNCTION ? "function"
                                                                                    : "target",
                  r.dest);
    cm_json_cstr(lc->out, r.bucket);
    cm_buf_append_str(lc->out, ",\"key\":");
    cm_json_str(lc->out, cm_buf_slice(&r.key));
    cm_buf_printf(lc->out, ",\"eventName\":\"%s\",\"sequencer\":\"%s\",\"attempts\":%u,"
                           "\"created\":\"%s\",\"lastError\":",
                  evt_type_name(r.type), sq, r.attempts, t);
    cm_json_str(lc->out, cm_buf_slice(&r.err));
    cm_buf_append_byte(lc->out, '}');
    lc->n++;
    evt__rec_free(&r);
    return 0;
}

int evt_events_json(evt_t *e, bool dead, size_t limit, cm_buf *out)
{
    struct list_ctx lc = {out, 0, limit ? limit : 1000};
    if (!dead) { /* delivered events are not pending: their deletes go out first */
        pthread_mutex_lock(&e->lk);
        done_flush(e);
        pthread_mutex_unlock(&e->lk);
    }
    cm_buf_append_byte(out, '[');
    int rc = md_outbox_scan(e->md, dead, 0, list_one, &lc);
    cm_buf_append_byte(out, ']');
    return rc == 1 ? 0 : rc;
}

struct replay_ctx {
    uint64_t *ids;
    size_t n, cap;
};

static int collect_dead(void *arg, uint64_t seq, cm_slice v)
{
    struct replay_ctx *rc = arg;
    (void)v;
    if (rc->n == rc->cap) {
        size_t cap = rc->cap ? rc->cap * 2 : 64;
        uint64_t *a = realloc(rc->ids, cap * sizeof *a);
        if (!a)
            return CM_ENOMEM;
        rc->ids = a;
        rc->cap = cap;
    }
    rc->ids[rc->n++] = seq;
    return 0;
}

int evt_replay(evt_t *e, const uint64_t *ids, size_t n, size_t *out_n)
{
    struct replay_ctx all = {0};
    size_t done = 0;
    int rc = 0;
    if (n == 0) {
        if ((rc = md_outbox_scan(e->md, true, 0, collect_dead, &all)))
            goto out;
        ids = all.ids;
        n = all.n;
    }
    for (size_t i = 0; i < n; i++) {
        cm_buf v = {0};
        evt__pend *p = calloc(1, sizeof *p);
        if (!p) {
            rc = CM_ENOMEM;
            break;
        }
        int r2 = md_outbox_get(e->md, true, ids[i], &v);
        if (!r2)
            r2 = evt__rec_decode(cm_buf_slice(&v), &p->r);
        cm_buf_reset(&v);
        if (!r2) {
            p->r.attempts = 0;
            p->r.created_ms = cm_now_ms(); /* a fresh age for the replay */
            cm_buf_reset(&p->r.err);
            r2 = evt__rec_encode(&p->r, &v);
        }
        if (!r2)
            r2 = md_outbox_revive(e->md, ids[i], cm_buf_slice(&v));
        cm_buf_free(&v);
        if (r2) {
            pend_free(p);
            if (r2 != CM_ENOTFOUND && r2 != CM_ECORRUPT) {
                rc = r2;
                break;
            }
            continue;
        }
        p->seq = ids[i];
        p->tuple = tuple_hash(&p->r);
        pthread_mutex_lock(&e->lk);
        pend_offer_old(e, p);
        pthread_cond_broadcast(&e->cv);
        pthread_mutex_unlock(&e->lk);
        done++;
    }
out:
    free(all.ids);
    *out_n = done;
    return rc;
}

struct changes_ctx {
    cm_buf *out;
    size_t n, limit;
    uint64_t last;
    bool more;
    cm_buf tmp; /* unpacked strings of the entry being listed */
};

static int change_one(void *arg, uint64_t seq, cm_slice v)
{
    struct changes_ctx *cc = arg;
    log_ent le;
    char sq[17], ts[32];
    if (cc->n >= cc->limit) {
        cc->more = true;
        return 1;
    }
    if (log_decode(v, false, &cc->tmp, &le))
        return 0;
    evt_sequencer(seq, sq);
    cm_time_iso8601_ms(le.time_ms, ts);
    cm_buf_printf(cc->out, "%s{\"sequencer\":\"%s\",\"eventName\":\"%s\",\"eventTime\":\"%s\","
                           "\"key\":",
                  cc->n ? "," : "", sq, evt_type_name(le.type), ts);
    cm_json_str(cc->out, le.key);
    if (le.type & EVT_CREATED_ALL) {
        cm_buf_printf(cc->out, ",\"size\":%llu,\"eTag\":", (unsigned long long)le.size);
        cm_json_str(cc->out, le.etag);
    }
    cm_buf_append_byte(cc->out, '}');
    cc->n++;
    cc->last = seq;
    return 0;
}

int evt_changes_json(evt_t *e, const char *bucket, uint64_t since, size_t limit, cm_buf *out)
{
    struct changes_ctx cc = {out, 0, limit ? limit : 1000, 0, false, {0}};
    char sq[17];
    cm_buf_append_str(out, "{\"bucket\":");
    cm_json_cstr(out, bucket);
    cm_buf_append_str(out, ",\"changes\":[");
    int rc = md_changelog_scan(e->md, bucket, since, change_one, &cc);
    cm_buf_free(&cc.tmp);
    if (rc == 1)
        rc = 0;
    evt_sequencer(cc.last, sq);
    if (cc.more)
        cm_buf_printf(out, "],\"next\":\"%s\"}", sq);
    else
        cm_buf_append_str(out, "],\"next\":null}");
    return rc;
}
