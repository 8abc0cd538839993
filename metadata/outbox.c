/* metadata/outbox.c - the event outbox ('E' 'Q' seq), dead letters
 * ('E' 'D' seq) and the per-bucket change log ('E' 'C' bucket 0x00 seq).
 * Pending events and change-log entries are appended by hooks to the batch
 * of the change that causes them; everything else here is the dispatcher's
 * bookkeeping. Values are opaque (events/ encodes them). */
#include "metadata/md_int.h"

#include <stdlib.h>

static int put_be64(cm_buf *b, uint64_t v)
{
    uint8_t x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (uint8_t)(v >> (56 - 8 * i));
    return cm_buf_append(b, x, 8);
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/* 'E' kind seq(be64) */
static int seq_key(cm_buf *b, char kind, uint64_t seq)
{
    int rc;
    cm_buf_reset(b);
    if ((rc = cm_buf_append_byte(b, MD__K_EVENTS)) || (rc = cm_buf_append_byte(b, (uint8_t)kind)))
        return rc;
    return put_be64(b, seq);
}

/* 'E' 'C' bucket 0x00 [seq(be64)] */
static int log_key(cm_buf *b, const char *bucket, bool with_seq, uint64_t seq)
{
    int rc;
    if ((rc = md__check_bucket(bucket)))
        return rc;
    cm_buf_reset(b);
    if ((rc = cm_buf_append_byte(b, MD__K_EVENTS)) || (rc = cm_buf_append_byte(b, 'C')) ||
        (rc = cm_buf_append_str(b, bucket)) || (rc = cm_buf_append_byte(b, 0)))
        return rc;
    return with_seq ? put_be64(b, seq) : 0;
}

int md_outbox_add(md_batch_t *mb, uint64_t seq, cm_slice rec)
{
    cm_buf k = {0};
    int rc = seq_key(&k, 'Q', seq);
    if (!rc)
        md__batch_put(mb->b, cm_buf_slice(&k), rec);
    cm_buf_free(&k);
    return rc;
}

int md_changelog_add(md_batch_t *mb, const char *bucket, uint64_t seq, cm_slice rec)
{
    cm_buf k = {0};
    int rc = log_key(&k, bucket, true, seq);
    if (!rc)
        md__batch_put(mb->b, cm_buf_slice(&k), rec);
    cm_buf_free(&k);
    return rc;
}

/* One batch of up to two operations: delete (dk) and put (pk, val). */
static int commit2(md_db_t *db, const cm_buf *dk, const cm_buf *pk, cm_slice val, bool sync)
{
    struct md__batch *b = md__batch_new();
    int rc;
    if (!b)
        return CM_ENOMEM;
    if (dk)
        md__batch_del(b, cm_buf_slice(dk));
    if (pk)
        md__batch_put(b, cm_buf_slice(pk), val);
    rc = md__batch_commit(db, b, sync);
    md__batch_free(b);
    return rc;
}

int md_outbox_done(md_db_t *db, uint64_t seq)
{
    cm_buf k = {0};
    int rc = seq_key(&k, 'Q', seq);
    if (!rc)
        rc = commit2(db, &k, NULL, CM_SLICE_NULL, false);
    cm_buf_free(&k);
    return rc;
}

/* A batch of pending events' records: rewritten to recs[i], or (recs NULL)
 * deleted. *out is NULL when n is 0. */
static int pending_batch(const uint64_t *seqs, const cm_slice *recs, size_t n,
                         struct md__batch **out)
{
    struct md__batch *b;
    cm_buf k = {0};
    int rc = 0;

    *out = NULL;
    if (!n)
        return 0;
    if (!(b = md__batch_new()))
        return CM_ENOMEM;
    for (size_t i = 0; i < n && !rc; i++) {
        if ((rc = seq_key(&k, 'Q', seqs[i])))
            break;
        if (recs)
            md__batch_put(b, cm_buf_slice(&k), recs[i]);
        else
            md__batch_del(b, cm_buf_slice(&k));
    }
    cm_buf_free(&k);
    if (rc)
        md__batch_free(b);
    else
        *out = b;
    return rc;
}

int md_outbox_done_many(md_db_t *db, const uint64_t *seqs, size_t n)
{
    struct md__batch *b;
    int rc = pending_batch(seqs, NULL, n, &b);

    if (rc || !b)
        return rc;
    /* With the next group of sync writes: a LevelDB write of their own
     * would wait behind that group's log sync (LevelDB queues writers). */
    return md__batch_commit_later(db, b);
}

int md_outbox_update(md_db_t *db, uint64_t seq, cm_slice rec)
{
    cm_buf k = {0};
    int rc = seq_key(&k, 'Q', seq);
    if (!rc)
        rc = commit2(db, NULL, &k, rec, false);
    cm_buf_free(&k);
    return rc;
}

int md_outbox_update_many(md_db_t *db, const uint64_t *seqs, const cm_slice *recs, size_t n)
{
    struct md__batch *b;
    int rc = pending_batch(seqs, recs, n, &b);

    if (rc || !b)
        return rc;
    rc = md__batch_commit(db, b, false);
    md__batch_free(b);
    return rc;
}

/* Moves seq from family `from` to family `to` with value rec. */
static int move(md_db_t *db, char from, char to, uint64_t seq, cm_slice rec)
{
    cm_buf fk = {0}, tk = {0};
    int rc;
    if ((rc = seq_key(&fk, from, seq)) || (rc = seq_key(&tk, to, seq)))
        goto out;
    if ((rc = md__exists(db, cm_buf_slice(&fk))))
        goto out;
    rc = commit2(db, &fk, &tk, rec, true);
out:
    cm_buf_free(&fk);
    cm_buf_free(&tk);
    return rc;
}

int md_outbox_bury(md_db_t *db, uint64_t seq, cm_slice rec)
{
    return move(db, 'Q', 'D', seq, rec);
}

int md_outbox_bury_many(md_db_t *db, const uint64_t *seqs, const cm_slice *recs, size_t n)
{
    struct md__batch *b;
    cm_buf fk = {0}, tk = {0};
    size_t moved = 0;
    int rc = 0;

    if (!n)
        return 0;
    if (!(b = md__batch_new()))
        return CM_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if ((rc = seq_key(&fk, 'Q', seqs[i])) || (rc = seq_key(&tk, 'D', seqs[i])))
            goto out;
        if ((rc = md__exists(db, cm_buf_slice(&fk)))) {
            if (rc != CM_ENOTFOUND)
                goto out;
            rc = 0; /* delivered or moved meanwhile */
            continue;
        }
        md__batch_del(b, cm_buf_slice(&fk));
        md__batch_put(b, cm_buf_slice(&tk), recs[i]);
        moved++;
    }
    if (moved)
        rc = md__batch_commit(db, b, true);
out:
    md__batch_free(b);
    cm_buf_free(&fk);
    cm_buf_free(&tk);
    return rc;
}

int md_outbox_revive(md_db_t *db, uint64_t seq, cm_slice rec)
{
    return move(db, 'D', 'Q', seq, rec);
}

int md_outbox_get(md_db_t *db, bool dead, uint64_t seq, cm_buf *out)
{
    cm_buf k = {0};
    int rc = seq_key(&k, dead ? 'D' : 'Q', seq);
    if (!rc)
        rc = md__get(db, cm_buf_slice(&k), out);
    cm_buf_free(&k);
    return rc;
}

/* Scans keys pfx seq(be64) with seq > after. */
static int scan_seq(md_db_t *db, cm_buf *start, uint64_t after, md_seq_fn fn, void *arg)
{
    size_t pn = start->n;
    cm_slice pfx;
    struct md__iter *it;
    int rc;

    if (after == UINT64_MAX)
        return 0;
    if ((rc = put_be64(start, after + 1)))
        return rc;
    if (!(it = md__iter_new(db)))
        return CM_ENOMEM;
    pfx = CM_SLICE(start->p, pn);
    rc = 0;
    for (md__iter_seek(it, cm_buf_slice(start)); md__iter_valid(it); md__iter_next(it)) {
        cm_slice k = md__iter_key(it);
        if (!cm_slice_has_prefix(k, pfx))
            break;
        if (k.n != pn + 8)
            continue;
        if ((rc = fn(arg, get_be64(k.p + pn), md__iter_val(it))))
            break;
    }
    if (!rc)
        rc = md__iter_status(it);
    md__iter_free(it);
    return rc;
}

int md_outbox_scan(md_db_t *db, bool dead, uint64_t after, md_seq_fn fn, void *arg)
{
    cm_buf k = {0};
    int rc;
    cm_buf_append_byte(&k, MD__K_EVENTS);
    rc = cm_buf_append_byte(&k, dead ? 'D' : 'Q');
    if (!rc)
        rc = scan_seq(db, &k, after, fn, arg);
    cm_buf_free(&k);
    return rc;
}

int md_changelog_scan(md_db_t *db, const char *bucket, uint64_t after, md_seq_fn fn, void *arg)
{
    cm_buf k = {0};
    int rc = log_key(&k, bucket, false, 0);
    if (!rc)
        rc = scan_seq(db, &k, after, fn, arg);
    cm_buf_free(&k);
    return rc;
}

int md_changelog_trim(md_db_t *db, md_expired_fn expired, void *arg, size_t *out_n)
{
    uint8_t pfx[2] = {MD__K_EVENTS, 'C'};
    struct md__iter *it = md__iter_new(db);
    struct md__batch *b = md__batch_new();
    cm_buf seek = {0};
    size_t n = 0, pending = 0;
    int rc = 0;

    if (!it || !b) {
        rc = CM_ENOMEM;
        goto out;
    }
    md__iter_seek(it, CM_SLICE(pfx, 2));
    while (md__iter_valid(it)) {
        cm_slice k = md__iter_key(it);
        if (!cm_slice_has_prefix(k, CM_SLICE(pfx, 2)))
            break;
        if (k.n >= 11 && expired(arg, md__iter_val(it))) {
            md__batch_del(b, k);
            n++;
            if (++pending == 1000) {
                if ((rc = md__batch_commit(db, b, false)))
                    goto out;
                md__batch_free(b);
                if (!(b = md__batch_new())) {
                    rc = CM_ENOMEM;
                    goto out;
                }
                pending = 0;
            }
            md__iter_next(it);
            continue;
        }
        /* The first entry kept: skip the rest of this bucket's log. */
        const uint8_t *z = memchr(k.p + 2, 0, k.n - 2);
        if (!z)
            break;
        cm_buf_reset(&seek);
        cm_buf_append(&seek, k.p, (size_t)(z - k.p) + 1);
        if (!md__key_successor(&seek))
            break;
        md__iter_seek(it, cm_buf_slice(&seek));
    }
    rc = md__iter_status(it);
    if (!rc && pending)
        rc = md__batch_commit(db, b, false);
out:
    md__iter_free(it);
    md__batch_free(b);
    cm_buf_free(&seek);
    if (out_n)
        *out_n = n;
    return rc;
}
