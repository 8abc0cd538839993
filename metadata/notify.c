/* metadata/notify.c - configuration blobs of the events part: bucket
 * notification configurations, function and target definitions ('E' 'N' /
 * 'E' 'F' / 'E' 'T' name). The bytes are opaque here; events/ encodes them.
 * The outbox and change log live in outbox.c. */
#include "metadata/md_int.h"

#include <stdlib.h>

static int conf_key(cm_buf *b, enum md_evt_kind kind, const char *name)
{
    size_t n = name ? strnlen(name, 256) : 0;
    int rc;

    if (n == 0 || n > 255 || (kind != MD_EVT_NOTIFY && kind != MD_EVT_FUNCTION &&
                              kind != MD_EVT_TARGET))
        return CM_EINVAL;
    cm_buf_reset(b);
    if ((rc = cm_buf_append_byte(b, MD__K_EVENTS)) || (rc = cm_buf_append_byte(b, (uint8_t)kind)))
        return rc;
    return cm_buf_append(b, name, n);
}

int md_evt_conf_put(md_db_t *db, enum md_evt_kind kind, const char *name, cm_slice val)
{
    struct md__batch *b = NULL;
    cm_buf k = {0};
    int rc;

    if ((rc = conf_key(&k, kind, name)))
        goto out;
    if (!(b = md__batch_new())) {
        rc = CM_ENOMEM;
        goto out;
    }
    md__batch_put(b, cm_buf_slice(&k), val);
    rc = md__batch_commit(db, b, true);
out:
    md__batch_free(b);
    cm_buf_free(&k);
    return rc;
}

int md_evt_conf_delete(md_db_t *db, enum md_evt_kind kind, const char *name)
{
    struct md__batch *b = NULL;
    cm_buf k = {0};
    int rc;

    if ((rc = conf_key(&k, kind, name)) || (rc = md__exists(db, cm_buf_slice(&k))))
        goto out;
    if (!(b = md__batch_new())) {
        rc = CM_ENOMEM;
        goto out;
    }
    md__batch_del(b, cm_buf_slice(&k));
    rc = md__batch_commit(db, b, true);
out:
    md__batch_free(b);
    cm_buf_free(&k);
    return rc;
}

int md_evt_conf_scan(md_db_t *db, enum md_evt_kind kind, md_evt_conf_fn fn, void *arg)
{
    uint8_t pfx[2] = {MD__K_EVENTS, (uint8_t)kind};
    struct md__iter *it = md__iter_new(db);
    char name[256];
    int rc = 0;

    if (!it)
        return CM_ENOMEM;
    for (md__iter_seek(it, CM_SLICE(pfx, 2)); md__iter_valid(it); md__iter_next(it)) {
        cm_slice k = md__iter_key(it);
        if (!cm_slice_has_prefix(k, CM_SLICE(pfx, 2)))
            break;
        if (k.n < 3 || k.n - 2 > 255)
            continue;
        memcpy(name, k.p + 2, k.n - 2);
        name[k.n - 2] = 0;
        if ((rc = fn(arg, name, md__iter_val(it))))
            break;
    }
    if (!rc)
        rc = md__iter_status(it);
    md__iter_free(it);
    return rc;
}
