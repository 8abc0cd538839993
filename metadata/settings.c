/* metadata/settings.c - the settings as one byte string: every record that
 * is configuration rather than object data, work in flight or history, so
 * that a copy kept elsewhere (on the storage nodes) can restore it when the
 * metadata directory is lost. Included: buckets ('B'), users and keys ('u',
 * 'k'), grants ('g'), rate limits ('l'), bucket policies ('p') and CORS
 * ('c'), notification configurations, functions and targets ('E' 'N'/'F'/
 * 'T'), bucket logging configurations ('$' 'L'). Not included: objects,
 * uploads and parts, intents, garbage, the event outbox and change log,
 * usage counters.
 *
 * Encoding: (key, value)* as cm_buf_put_bytes pairs (u32 LE length, bytes),
 * in key order. */
#include "metadata/md_int.h"

static const char *const prefixes[] = {"B", "u", "k", "g", "l", "p", "c", "EN", "EF", "ET", "$L"};

int md_settings_export(md_db_t *db, cm_buf *out)
{
    struct md__iter *it = md__iter_new(db);
    int rc = 0;

    if (!it)
        return CM_ENOMEM;
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0] && rc == 0; i++) {
        cm_slice pfx = CM_SLICE_STR(prefixes[i]);
        for (md__iter_seek(it, pfx); md__iter_valid(it); md__iter_next(it)) {
            cm_slice k = md__iter_key(it), v = md__iter_val(it);
            if (k.n < pfx.n || memcmp(k.p, pfx.p, pfx.n) != 0)
                break;
            if (cm_buf_put_bytes(out, k) || cm_buf_put_bytes(out, v)) {
                rc = CM_ENOMEM;
                break;
            }
        }
        if (rc == 0)
            rc = md__iter_status(it);
    }
    md__iter_free(it);
    return rc;
}

static int allowed(cm_slice k)
{
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        size_t n = strlen(prefixes[i]);
        if (k.n > n && memcmp(k.p, prefixes[i], n) == 0)
            return 1;
    }
    return 0;
}

int md_settings_import(md_db_t *db, cm_slice in, size_t *out_n)
{
    cm_reader r = {in.p, in.n};
    struct md__batch *b;
    size_t n = 0;
    int rc = 0;

    /* Validate everything before writing anything. */
    while (r.n > 0) {
        cm_slice k, v;
        if (cm_get_bytes(&r, &k) || cm_get_bytes(&r, &v) || !allowed(k))
            return CM_ECORRUPT;
    }
    if (!(b = md__batch_new()))
        return CM_ENOMEM;
    r = (cm_reader){in.p, in.n};
    while (r.n > 0) {
        cm_slice k, v;
        cm_get_bytes(&r, &k);
        cm_get_bytes(&r, &v);
        md__batch_put(b, k, v);
        n++;
    }
    rc = md__batch_commit(db, b, true);
    md__batch_free(b);
    if (rc == 0 && out_n)
        *out_n = n;
    return rc;
}
