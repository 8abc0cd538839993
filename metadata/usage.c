/* metadata/usage.c - usage records under the '$' key prefix: pending request
 * records and storage deltas (written before a response goes out or in the
 * batch of the change), the fold that turns them into hourly counters and
 * storage byte-hours, scans for reports, and bucket logging configurations.
 * Classification and prices live in billing/; this file only stores. */
#include "metadata/md_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* Sub-kinds after the '$' byte (doc/metadata-keys.md). */
#define K_REQ 'R'     /* '$' 'R' seq(be64) -> pending request record */
#define K_DELTA 'D'   /* '$' 'D' seq(be64) -> pending storage delta */
#define K_HOUR 'H'    /* '$' 'H' hour(be64) bucket 00 key 00 op 00 sc -> counters */
#define K_STATE 'S'   /* '$' 'S' bucket -> current bytes, objects, last change */
#define K_BYTEMS 'T'  /* '$' 'T' hour(be64) bucket -> byte-milliseconds in that hour */
#define K_LOGGING 'L' /* '$' 'L' bucket -> bucket logging configuration */
#define K_JOURNAL 'J' /* '$' 'J' n(be64) -> journal.<n> is folded (marker) */

#define HOUR_MS 3600000ll
#define FOLD_MAX 65536 /* records folded per batch */
#define JREC_HDR 8     /* journal record: len u32 le, crc32c u32 le, then len bytes */
#define JREC_MIN 16    /* below any encoded request record */
#define JREC_MAX 1024  /* larger than any valid one (names are bounded) */

/* One fold at a time: the fold is the only writer of 'H', 'S' and 'T'. */
static pthread_mutex_t fold_lk = PTHREAD_MUTEX_INITIALIZER;

typedef unsigned __int128 u128;

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
        v = v << 8 | p[i];
    return v;
}

static int key_head(cm_buf *b, char kind)
{
    uint8_t h[2] = {MD__K_USAGE, (uint8_t)kind};
    cm_buf_reset(b);
    return cm_buf_append(b, h, 2);
}

static int key_seq(cm_buf *b, char kind, uint64_t seq)
{
    int rc = key_head(b, kind);
    return rc ? rc : put_be64(b, seq);
}

static int64_t hour_of(int64_t ms)
{
    return ms >= 0 ? ms / HOUR_MS : (ms - HOUR_MS + 1) / HOUR_MS;
}

/* ------------------------------------------------------- request records */
/* 'R' value: version, ms i64, status u16 (as u32), cls u8, requests u64,
 * billable u64, bytes_in u64, bytes_out i64, bucket, access key, op. */
static int req_encode(cm_buf *v, const md_usage_req *u)
{
    int rc;
    if ((rc = cm_buf_put_u8(v, MD__REC_VERSION)) || (rc = cm_buf_put_u64(v, (uint64_t)u->ms)) ||
        (rc = cm_buf_put_u32(v, u->status)) || (rc = cm_buf_put_u8(v, u->cls)) ||
        (rc = cm_buf_put_u64(v, u->requests)) || (rc = cm_buf_put_u64(v, u->billable)) ||
        (rc = cm_buf_put_u64(v, u->bytes_in)) || (rc = cm_buf_put_u64(v, (uint64_t)u->bytes_out)))
        return rc;
    if ((rc = cm_buf_put_bytes(v, CM_SLICE_STR(u->bucket ? u->bucket : ""))) ||
        (rc = cm_buf_put_bytes(v, CM_SLICE_STR(u->access_key ? u->access_key : ""))))
        return rc;
    return cm_buf_put_bytes(v, CM_SLICE_STR(u->op ? u->op : ""));
}

typedef struct req_dec {
    int64_t ms;
    uint32_t status;
    uint8_t cls;
    uint64_t requests, billable, bytes_in, bytes_out;
    cm_slice bucket, ak, op;
} req_dec;

static int req_decode(cm_slice val, req_dec *d)
{
    cm_reader r = {val.p, val.n};
    uint8_t ver;
    uint64_t ms;
    int rc;
    if ((rc = cm_get_u8(&r, &ver)) || ver != MD__REC_VERSION)
        return CM_ECORRUPT;
    if ((rc = cm_get_u64(&r, &ms)) || (rc = cm_get_u32(&r, &d->status)) ||
        (rc = cm_get_u8(&r, &d->cls)) || (rc = cm_get_u64(&r, &d->requests)) ||
        (rc = cm_get_u64(&r, &d->billable)) || (rc = cm_get_u64(&r, &d->bytes_in)) ||
        (rc = cm_get_u64(&r, &d->bytes_out)) || (rc = cm_get_bytes(&r, &d->bucket)) ||
        (rc = cm_get_bytes(&r, &d->ak)) || (rc = cm_get_bytes(&r, &d->op)))
        return CM_ECORRUPT;
    if (d->bucket.n > MD_BUCKET_MAX || d->ak.n > 132 || d->op.n > 63)
        return CM_ECORRUPT;
    d->ms = (int64_t)ms;
    return 0;
}

static int add_req(md_db_t *db, struct md__batch *b, uint64_t seq, const md_usage_req *u)
{
    cm_buf k = {0}, v = {0};
    int rc;
    (void)db;
    if ((rc = key_seq(&k, K_REQ, seq)) || (rc = req_encode(&v, u)))
        goto out;
    md__batch_put(b, cm_buf_slice(&k), cm_buf_slice(&v));
out:
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

static int add_ldb(md_db_t *db, const md_usage_req *u, bool sync)
{
    struct md__batch *b = md__batch_new();
    uint64_t seq;
    int rc;
    if (!b)
        return CM_ENOMEM;
    if ((rc = md__batch_seq(db, b, &seq)) || (rc = add_req(db, b, seq, u)))
        goto out;
    rc = md__batch_commit(db, b, sync);
out:
    md__batch_free(b);
    return rc;
}

/* ------------------------------------------------------ usage journal
 * Non-sync request records are appended to DIR/usage/journal.<n>, one
 * write(2) of one whole record each, under the shared side of lk: a record
 * is in the kernel (safe from kill -9) when md_usage_add returns. The fold
 * takes lk exclusively only to switch writers to journal.<n+1>; once it has
 * it, no writer still holds the old file, which it then reads, folds in a
 * batch that also puts the marker '$' 'J' n, commits (sync) and unlinks.
 * A journal whose marker exists is already counted and only unlinked. */
struct md__ujournal {
    pthread_rwlock_t lk; /* shared: writers; exclusive: the switch */
    int fd;              /* current journal (O_APPEND); guarded by lk */
    uint64_t n;          /* its number; changed under fold_lk and lk */
    int dfd;             /* the journal directory, fsync'd after unlinks */
    char dir[];          /* DIR/usage */
};

static uint32_t crc_tab[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc_tab[i] = c;
    }
}

/* CRC-32C (Castagnoli), as common/enc.c's, table-driven. */
static uint32_t crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    while (n--)
        crc = crc_tab[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* The CRC covers the length field and the record. */
static uint32_t jrec_crc(const uint8_t *rec)
{
    uint32_t len = md__get_le32(rec);
    return crc32c(crc32c(0, rec, 4), rec + JREC_HDR, len);
}

static int journal_path(const struct md__ujournal *j, uint64_t n, char *out, size_t sz)
{
    int w = snprintf(out, sz, "%s/journal.%llu", j->dir, (unsigned long long)n);
    return w > 0 && (size_t)w < sz ? 0 : CM_EINVAL;
}

static int journal_create(const struct md__ujournal *j, uint64_t n, int *out)
{
    char path[4096];
    int rc, fd;
    if ((rc = journal_path(j, n, path, sizeof path)))
        return rc;
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        cm_log(CM_LOG_ERROR, "metadata: %s: %s", path, strerror(errno));
        return CM_EIO;
    }
    *out = fd;
    return 0;
}

/* Parses "journal.<n>"; false for other names. */
static bool journal_name(const char *name, uint64_t *n)
{
    char *end;
    if (strncmp(name, "journal.", 8) || name[8] < '0' || name[8] > '9')
        return false;
    errno = 0;
    unsigned long long v = strtoull(name + 8, &end, 10);
    if (errno || *end)
        return false;
    *n = v;
    return true;
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The journal numbers below lim in the directory, ascending (malloc()ed). */
static int journal_list(const struct md__ujournal *j, uint64_t lim, uint64_t **out, size_t *nout)
{
    DIR *d = opendir(j->dir);
    uint64_t *a = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    int rc = 0;
    if (!d)
        return CM_EIO;
    while ((e = readdir(d))) {
        uint64_t v;
        if (!journal_name(e->d_name, &v) || v >= lim)
            continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 8;
            uint64_t *na = realloc(a, nc * sizeof *na);
            if (!na) {
                rc = CM_ENOMEM;
                goto out;
            }
            a = na;
            cap = nc;
        }
        a[n++] = v;
    }
    if (n)
        qsort(a, n, sizeof *a, u64_cmp);
    *out = a;
    *nout = n;
    a = NULL;
out:
    free(a);
    closedir(d);
    return rc;
}

static int marker_key(cm_buf *k, uint64_t n)
{
    return key_seq(k, K_JOURNAL, n);
}

int md__usage_open(md_db_t *db, const char *dir)
{
    size_t dl = strlen(dir);
    struct md__ujournal *j = calloc(1, sizeof *j + dl + sizeof "/usage");
    struct md__iter *it = NULL;
    uint64_t *nums = NULL, top = 0;
    size_t nn = 0;
    uint8_t start[2] = {MD__K_USAGE, K_JOURNAL};
    int rc;

    if (!j)
        return CM_ENOMEM;
    pthread_once(&crc_once, crc_init);
    memcpy(j->dir, dir, dl);
    memcpy(j->dir + dl, "/usage", sizeof "/usage");
    j->fd = j->dfd = -1;
    pthread_rwlock_init(&j->lk, NULL);
    if (mkdir(j->dir, 0755) && errno != EEXIST) {
        cm_log(CM_LOG_ERROR, "metadata: mkdir %s: %s", j->dir, strerror(errno));
        rc = CM_EIO;
        goto out;
    }
    j->dfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (j->dfd < 0) {
        rc = CM_EIO;
        goto out;
    }
    /* The new journal's number is above every journal and every marker, so
     * a stale marker can never stand for it. */
    if ((rc = journal_list(j, UINT64_MAX, &nums, &nn)))
        goto out;
    if (nn)
        top = nums[nn - 1];
    if (!(it = md__iter_new(db))) {
        rc = CM_ENOMEM;
        goto out;
    }
    for (md__iter_seek(it, CM_SLICE(start, 2)); md__iter_valid(it); md__iter_next(it)) {
        cm_slice k = md__iter_key(it);
        if (k.n != 10 || k.p[0] != MD__K_USAGE || k.p[1] != K_JOURNAL)
            break;
        if (get_be64(k.p + 2) > top)
            top = get_be64(k.p + 2);
    }
    if ((rc = md__iter_status(it)))
        goto out;
    j->n = top + 1;
    if ((rc = journal_create(j, j->n, &j->fd)))
        goto out;
    db->uj = j;
    j = NULL;
out:
    md__iter_free(it);
    free(nums);
    if (j) {
        if (j->dfd >= 0)
            close(j->dfd);
        pthread_rwlock_destroy(&j->lk);
        free(j);
    }
    return rc;
}

void md__usage_close(md_db_t *db)
{
    struct md__ujournal *j = db->uj;
    struct stat st;
    char path[4096];
    if (!j)
        return;
    db->uj = NULL;
    if (!fstat(j->fd, &st) && st.st_size == 0 && !journal_path(j, j->n, path, sizeof path))
        unlink(path);
    close(j->fd);
    close(j->dfd);
    pthread_rwlock_destroy(&j->lk);
    free(j);
}

/* Appends one record with one write(2). */
static int journal_add(struct md__ujournal *j, const md_usage_req *u)
{
    cm_buf v = {0};
    uint8_t hdr[JREC_HDR] = {0};
    ssize_t w;
    int rc;
    if ((rc = cm_buf_append(&v, hdr, JREC_HDR)) || (rc = req_encode(&v, u)))
        goto out;
    if (v.n - JREC_HDR > JREC_MAX) {
        rc = CM_EINVAL;
        goto out;
    }
    md__put_le32(v.p, (uint32_t)(v.n - JREC_HDR));
    md__put_le32(v.p + 4, jrec_crc(v.p));
    pthread_rwlock_rdlock(&j->lk);
    do {
        w = write(j->fd, v.p, v.n);
    } while (w < 0 && errno == EINTR);
    pthread_rwlock_unlock(&j->lk);
    /* A short write leaves a bad record that the fold skips. */
    rc = w == (ssize_t)v.n ? 0 : CM_EIO;
out:
    cm_buf_free(&v);
    return rc;
}

int md_usage_add(md_db_t *db, const md_usage_req *u, bool sync)
{
    if (!sync && db->uj) {
        int rc = journal_add(db->uj, u);
        if (rc != CM_EIO)
            return rc;
        cm_log(CM_LOG_WARN, "metadata: usage journal write failed; recording in LevelDB");
    }
    return add_ldb(db, u, sync);
}

int md_usage_add_batch(md_batch_t *mb, const md_usage_req *u)
{
    uint64_t seq = md_batch_seq(mb);
    if (!seq)
        return CM_EIO;
    return add_req(mb->db, mb->b, seq, u);
}

/* 'D' value: version, ms i64, dbytes i64, dobjects i64, bucket, and for a
 * change that carries its request record, that record ('R' value) after
 * them: one key, one delete and one read in the fold instead of two. */
static int delta_add(md_batch_t *mb, const char *bucket, int64_t ms, int64_t dbytes,
                     int64_t dobjects, const md_usage_req *u)
{
    cm_buf k = {0}, v = {0};
    uint64_t seq = md_batch_seq(mb);
    int rc;
    if (!seq)
        return CM_EIO;
    if ((rc = key_seq(&k, K_DELTA, seq)) || (rc = cm_buf_put_u8(&v, MD__REC_VERSION)) ||
        (rc = cm_buf_put_u64(&v, (uint64_t)ms)) || (rc = cm_buf_put_u64(&v, (uint64_t)dbytes)) ||
        (rc = cm_buf_put_u64(&v, (uint64_t)dobjects)) ||
        (rc = cm_buf_put_bytes(&v, CM_SLICE_STR(bucket))) || (u && (rc = req_encode(&v, u))))
        goto out;
    md__batch_put(mb->b, cm_buf_slice(&k), cm_buf_slice(&v));
out:
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

int md_usage_storage_delta(md_batch_t *mb, const char *bucket, int64_t ms, int64_t dbytes,
                           int64_t dobjects)
{
    return delta_add(mb, bucket, ms, dbytes, dobjects, NULL);
}

int md_usage_storage_delta_req(md_batch_t *mb, const char *bucket, int64_t ms, int64_t dbytes,
                               int64_t dobjects, const md_usage_req *u)
{
    return delta_add(mb, bucket, ms, dbytes, dobjects, u);
}

/* ------------------------------------------------------------ counters */
/* 'H' value: version, cls u8, requests, billable, bytes_in, bytes_out (u64). */
typedef struct agg {
    cm_buf key;          /* the full 'H' key */
    uint8_t cls;
    uint64_t requests, billable, bytes_in, bytes_out;
} agg;

static int agg_cmp(const void *a, const void *b)
{
    return cm_slice_cmp(cm_buf_slice(&((const agg *)a)->key), cm_buf_slice(&((const agg *)b)->key));
}

static int hour_key(cm_buf *k, int64_t hour, cm_slice bucket, cm_slice ak, cm_slice op,
                    uint8_t sc)
{
    int rc;
    if ((rc = key_head(k, K_HOUR)) || (rc = put_be64(k, (uint64_t)hour)) ||
        (rc = cm_buf_append_slice(k, bucket)) || (rc = cm_buf_append_byte(k, 0)) ||
        (rc = cm_buf_append_slice(k, ak)) || (rc = cm_buf_append_byte(k, 0)) ||
        (rc = cm_buf_append_slice(k, op)) || (rc = cm_buf_append_byte(k, 0)))
        return rc;
    return cm_buf_append_byte(k, sc);
}

static int ctr_decode(cm_slice v, agg *a)
{
    cm_reader r = {v.p, v.n};
    uint8_t ver;
    if (cm_get_u8(&r, &ver) || ver != MD__REC_VERSION || cm_get_u8(&r, &a->cls) ||
        cm_get_u64(&r, &a->requests) || cm_get_u64(&r, &a->billable) ||
        cm_get_u64(&r, &a->bytes_in) || cm_get_u64(&r, &a->bytes_out))
        return CM_ECORRUPT;
    return 0;
}

static int ctr_encode(cm_buf *v, const agg *a)
{
    int rc;
    cm_buf_reset(v);
    if ((rc = cm_buf_put_u8(v, MD__REC_VERSION)) || (rc = cm_buf_put_u8(v, a->cls)) ||
        (rc = cm_buf_put_u64(v, a->requests)) || (rc = cm_buf_put_u64(v, a->billable)) ||
        (rc = cm_buf_put_u64(v, a->bytes_in)))
        return rc;
    return cm_buf_put_u64(v, a->bytes_out);
}

/* Request records being folded: one agg per record until merged. */
typedef struct aggset {
    agg *a;
    size_t n, cap;
} aggset;

static void aggset_free(aggset *s)
{
    for (size_t i = 0; i < s->n; i++)
        cm_buf_free(&s->a[i].key);
    free(s->a);
    memset(s, 0, sizeof *s);
}

/* Sorts the set and sums records of one counter into one entry. */
static void aggset_merge(aggset *s)
{
    size_t w = 0;
    if (s->n < 2)
        return;
    qsort(s->a, s->n, sizeof *s->a, agg_cmp);
    for (size_t i = 1; i < s->n; i++) {
        agg *d = &s->a[w], *e = &s->a[i];
        if (cm_slice_eq(cm_buf_slice(&e->key), cm_buf_slice(&d->key))) {
            d->requests += e->requests;
            d->billable += e->billable;
            d->bytes_in += e->bytes_in;
            d->bytes_out += e->bytes_out; /* corrections are negative: modular sum */
            cm_buf_free(&e->key);
        } else {
            s->a[++w] = *e;
        }
    }
    s->n = w + 1;
}

static int aggset_add(aggset *s, const req_dec *d)
{
    int rc;
    if (s->n == s->cap && s->n >= FOLD_MAX)
        aggset_merge(s); /* bounds memory by distinct counters, not records */
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 256;
        agg *na = realloc(s->a, nc * sizeof *na);
        if (!na)
            return CM_ENOMEM;
        s->a = na;
        s->cap = nc;
    }
    agg *e = &s->a[s->n];
    memset(e, 0, sizeof *e);
    uint8_t sc = (uint8_t)(d->status / 100 <= 9 ? d->status / 100 : 9);
    if ((rc = hour_key(&e->key, hour_of(d->ms), d->bucket, d->ak, d->op, sc))) {
        cm_buf_free(&e->key);
        return rc;
    }
    s->n++;
    e->cls = d->cls;
    e->requests = d->requests;
    e->billable = d->billable;
    e->bytes_in = d->bytes_in;
    e->bytes_out = d->bytes_out;
    return 0;
}

/* Adds the set to the stored 'H' counters in b. */
static int aggset_commit(md_db_t *db, struct md__batch *b, aggset *s)
{
    cm_buf v = {0}, cur = {0};
    int rc = 0;

    aggset_merge(s);
    for (size_t i = 0; i < s->n; i++) {
        agg sum = s->a[i];
        rc = md__get(db, cm_buf_slice(&sum.key), &cur);
        if (rc == 0) {
            agg old;
            if (ctr_decode(cm_buf_slice(&cur), &old) == 0) {
                sum.requests += old.requests;
                sum.billable += old.billable;
                sum.bytes_in += old.bytes_in;
                sum.bytes_out += old.bytes_out;
            }
        } else if (rc != CM_ENOTFOUND) {
            goto out;
        }
        if ((rc = ctr_encode(&v, &sum)))
            goto out;
        md__batch_put(b, cm_buf_slice(&sum.key), cm_buf_slice(&v));
    }
    rc = 0;
out:
    cm_buf_free(&v);
    cm_buf_free(&cur);
    return rc;
}

/* Where a fold of kind's records starts: past the ones folded before, so
 * that it never steps over their deletions again (LevelDB keeps them until
 * a compaction reaches the bottom level; at thousands of changes a second a
 * seek from the start walked hundreds of thousands). *next gets where the
 * one after it may start: w (md__seq_watermark before the iterator was
 * made) if the range was read to its end, else below the first id not
 * read. Never past an id below w that was not seen: that record may still
 * be committed. */
static int fold_seek(md_db_t *db, struct md__iter *it, char kind)
{
    cm_buf k = {0};
    int rc = key_seq(&k, kind, db->fold_from[kind == K_DELTA]);

    if (!rc)
        md__iter_seek(it, cm_buf_slice(&k));
    cm_buf_free(&k);
    return rc;
}

static uint64_t fold_next(uint64_t w, bool ended, uint64_t last)
{
    return ended || last + 1 > w ? w : last + 1;
}

/* Adds up to FOLD_MAX 'R' records to s, deleting them in b. */
static int fold_requests(md_db_t *db, struct md__batch *b, aggset *s, size_t *nfold,
                         uint64_t w, uint64_t *next)
{
    struct md__iter *it = md__iter_new(db);
    size_t n = 0;
    uint64_t last = 0;
    bool ended = true;
    int rc = 0;

    if (!it)
        return CM_ENOMEM;
    if ((rc = fold_seek(db, it, K_REQ)))
        goto out;
    for (; md__iter_valid(it); md__iter_next(it)) {
        cm_slice k = md__iter_key(it);
        req_dec d;
        if (k.n != 10 || k.p[0] != MD__K_USAGE || k.p[1] != K_REQ)
            break;
        if (n == FOLD_MAX) {
            ended = false;
            break;
        }
        md__batch_del(b, k);
        last = get_be64(k.p + 2);
        n++;
        if (req_decode(md__iter_val(it), &d)) {
            cm_log(CM_LOG_WARN, "metadata: dropping a corrupt usage record");
            continue;
        }
        if ((rc = aggset_add(s, &d)))
            goto out;
    }
    if ((rc = md__iter_status(it)))
        goto out;
    *nfold += n;
    *next = fold_next(w, ended, last);
out:
    md__iter_free(it);
    return rc;
}

/* Reads journal n into s. A record that is torn or fails its CRC is
 * skipped byte by byte until a valid record starts again (a torn record is
 * one whose write never returned, so its request got no response). */
static int journal_read(struct md__ujournal *j, uint64_t n, aggset *s, size_t *nfold)
{
    char path[4096];
    cm_buf data = {0};
    uint8_t tmp[16384];
    size_t skipped = 0;
    int fd = -1, rc;

    if ((rc = journal_path(j, n, path, sizeof path)))
        return rc;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        rc = errno == ENOENT ? 0 : CM_EIO;
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, tmp, sizeof tmp);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = CM_EIO;
            goto out;
        }
        if (r == 0)
            break;
        if ((rc = cm_buf_append(&data, tmp, (size_t)r)))
            goto out;
    }
    for (size_t pos = 0; pos + JREC_HDR <= data.n;) {
        const uint8_t *p = data.p + pos;
        uint32_t len = md__get_le32(p);
        req_dec d;
        if (len < JREC_MIN || len > JREC_MAX || len > data.n - pos - JREC_HDR ||
            md__get_le32(p + 4) != jrec_crc(p) ||
            req_decode(CM_SLICE(p + JREC_HDR, len), &d)) {
            pos++;
            skipped++;
            continue;
        }
        if ((rc = aggset_add(s, &d)))
            goto out;
        (*nfold)++;
        pos += JREC_HDR + len;
    }
    if (skipped)
        cm_log(CM_LOG_WARN, "metadata: %s: skipped %zu bytes of torn usage records", path,
               skipped);
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    cm_buf_free(&data);
    return rc;
}

/* Switches writers to a new journal if the current one has records. */
static int journal_switch(struct md__ujournal *j)
{
    struct stat st;
    int fd, old, rc;
    if (fstat(j->fd, &st))
        return CM_EIO;
    if (st.st_size == 0)
        return 0;
    if ((rc = journal_create(j, j->n + 1, &fd)))
        return rc;
    pthread_rwlock_wrlock(&j->lk); /* waits for writers still on the old one */
    old = j->fd;
    j->fd = fd;
    j->n++;
    pthread_rwlock_unlock(&j->lk);
    close(old);
    return 0;
}

/* After the fold of journals is committed: unlinks them, makes the unlinks
 * durable, then deletes every marker whose journal is gone. */
static int journal_cleanup(md_db_t *db, const uint64_t *nums, size_t nn)
{
    struct md__ujournal *j = db->uj;
    struct md__iter *it = NULL;
    struct md__batch *b = NULL;
    uint8_t start[2] = {MD__K_USAGE, K_JOURNAL};
    char path[4096];
    size_t ndel = 0;
    int rc = 0;

    for (size_t i = 0; i < nn; i++)
        if (!journal_path(j, nums[i], path, sizeof path) && unlink(path) && errno != ENOENT)
            return CM_EIO;
    if (fsync(j->dfd))
        return CM_EIO;
    if (!(it = md__iter_new(db)) || !(b = md__batch_new())) {
        rc = CM_ENOMEM;
        goto out;
    }
    for (md__iter_seek(it, CM_SLICE(start, 2)); md__iter_valid(it); md__iter_next(it)) {
        cm_slice k = md__iter_key(it);
        if (k.n != 10 || k.p[0] != MD__K_USAGE || k.p[1] != K_JOURNAL)
            break;
        if ((rc = journal_path(j, get_be64(k.p + 2), path, sizeof path)))
            goto out;
        if (access(path, F_OK) && errno == ENOENT) {
            md__batch_del(b, k);
            ndel++;
        }
    }
    if (!(rc = md__iter_status(it)) && ndel)
        rc = md__batch_commit(db, b, false);
out:
    md__batch_free(b);
    md__iter_free(it);
    return rc;
}

/* Folds the journals before the current one into s, putting their markers
 * in b; *nj gets how many (their numbers in *nums, for journal_cleanup). */
static int fold_journals(md_db_t *db, struct md__batch *b, aggset *s, size_t *nfold,
                         uint64_t **nums, size_t *nj)
{
    struct md__ujournal *j = db->uj;
    cm_buf k = {0};
    int rc;

    *nums = NULL;
    *nj = 0;
    if ((rc = journal_switch(j)) || (rc = journal_list(j, j->n, nums, nj)))
        return rc;
    for (size_t i = 0; i < *nj; i++) {
        if ((rc = marker_key(&k, (*nums)[i])))
            goto out;
        rc = md__exists(db, cm_buf_slice(&k));
        if (rc == 0)
            continue; /* folded before a crash, not yet unlinked */
        if (rc != CM_ENOTFOUND || (rc = journal_read(j, (*nums)[i], s, nfold)))
            goto out;
        md__batch_put(b, cm_buf_slice(&k), CM_SLICE("", 0));
    }
    rc = 0;
out:
    cm_buf_free(&k);
    return rc;
}

/* ------------------------------------------------------------ storage */
/* 'S' value: version, bytes u64, objects u64, last_ms i64.
 * 'T' value: version, byte-ms as u128 (lo u64, hi u64). */
typedef struct st_ent {
    char bucket[MD_BUCKET_MAX + 1];
    md_storage_state s;
    bool dirty;
} st_ent;

typedef struct bms_ent {
    int64_t hour;
    char bucket[MD_BUCKET_MAX + 1];
    u128 bms;
} bms_ent;

static int state_decode(cm_slice v, md_storage_state *s)
{
    cm_reader r = {v.p, v.n};
    uint8_t ver;
    uint64_t last;
    if (cm_get_u8(&r, &ver) || ver != MD__REC_VERSION || cm_get_u64(&r, &s->bytes) ||
        cm_get_u64(&r, &s->objects) || cm_get_u64(&r, &last))
        return CM_ECORRUPT;
    s->last_ms = (int64_t)last;
    return 0;
}

static int state_get(md_db_t *db, const char *bucket, md_storage_state *s)
{
    cm_buf k = {0}, v = {0};
    int rc;
    memset(s, 0, sizeof *s);
    snprintf(s->bucket, sizeof s->bucket, "%s", bucket);
    if ((rc = key_head(&k, K_STATE)) || (rc = cm_buf_append_str(&k, bucket)))
        goto out;
    rc = md__get(db, cm_buf_slice(&k), &v);
    if (rc == 0)
        rc = state_decode(cm_buf_slice(&v), s);
    else if (rc == CM_ENOTFOUND)
        rc = 0;
out:
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

static bms_ent *bms_find(bms_ent **a, size_t *n, size_t *cap, int64_t hour, const char *bucket)
{
    for (size_t i = 0; i < *n; i++)
        if ((*a)[i].hour == hour && !strcmp((*a)[i].bucket, bucket))
            return &(*a)[i];
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        bms_ent *na = realloc(*a, nc * sizeof *na);
        if (!na)
            return NULL;
        *a = na;
        *cap = nc;
    }
    bms_ent *e = &(*a)[(*n)++];
    memset(e, 0, sizeof *e);
    e->hour = hour;
    snprintf(e->bucket, sizeof e->bucket, "%s", bucket);
    return e;
}

/* Adds bytes * [from, to) to the hours it spans. */
static int integrate(bms_ent **a, size_t *n, size_t *cap, const char *bucket, uint64_t bytes,
                     int64_t from, int64_t to)
{
    while (bytes && from < to) {
        int64_t h = hour_of(from), end = (h + 1) * HOUR_MS;
        if (end > to)
            end = to;
        bms_ent *e = bms_find(a, n, cap, h, bucket);
        if (!e)
            return CM_ENOMEM;
        e->bms += (u128)bytes * (u128)(end - from);
        from = end;
    }
    return 0;
}

static int fold_storage(md_db_t *db, struct md__batch *b, aggset *s, size_t *nfold, uint64_t w,
                        uint64_t *next)
{
    struct md__iter *it = md__iter_new(db);
    st_ent *st = NULL;
    bms_ent *bm = NULL;
    size_t nst = 0, capst = 0, nbm = 0, capbm = 0, n = 0;
    cm_buf k = {0}, v = {0};
    uint64_t last = 0;
    bool ended = true;
    int rc = 0;

    if (!it)
        return CM_ENOMEM;
    if ((rc = fold_seek(db, it, K_DELTA)))
        goto out;
    for (; md__iter_valid(it); md__iter_next(it)) {
        cm_slice key = md__iter_key(it);
        if (key.n != 10 || key.p[0] != MD__K_USAGE || key.p[1] != K_DELTA)
            break;
        if (n == FOLD_MAX) {
            ended = false;
            break;
        }
        md__batch_del(b, key);
        last = get_be64(key.p + 2);
        n++;
        cm_slice val = md__iter_val(it), bk;
        cm_reader r = {val.p, val.n};
        uint8_t ver;
        uint64_t ms, db_, do_;
        if (cm_get_u8(&r, &ver) || ver != MD__REC_VERSION || cm_get_u64(&r, &ms) ||
            cm_get_u64(&r, &db_) || cm_get_u64(&r, &do_) || cm_get_bytes(&r, &bk) ||
            bk.n == 0 || bk.n > MD_BUCKET_MAX) {
            cm_log(CM_LOG_WARN, "metadata: dropping a corrupt storage delta");
            continue;
        }
        if (r.n) { /* the change's request record rides along */
            req_dec d;
            if (req_decode(CM_SLICE(r.p, r.n), &d))
                cm_log(CM_LOG_WARN, "metadata: dropping a corrupt usage record");
            else if ((rc = aggset_add(s, &d)))
                goto out;
        }
        char bucket[MD_BUCKET_MAX + 1];
        memcpy(bucket, bk.p, bk.n);
        bucket[bk.n] = 0;
        st_ent *e = NULL;
        for (size_t i = 0; i < nst; i++)
            if (!strcmp(st[i].bucket, bucket))
                e = &st[i];
        if (!e) {
            if (nst == capst) {
                size_t nc = capst ? capst * 2 : 16;
                st_ent *na = realloc(st, nc * sizeof *na);
                if (!na) {
                    rc = CM_ENOMEM;
                    goto out;
                }
                st = na;
                capst = nc;
            }
            e = &st[nst++];
            memset(e, 0, sizeof *e);
            snprintf(e->bucket, sizeof e->bucket, "%s", bucket);
            if ((rc = state_get(db, bucket, &e->s)))
                goto out;
        }
        /* Integrate the old size up to this change. A change stamped before
         * the last one folded (committed out of order by a few ms) counts
         * from the last one: the error is bounded by commit latency. */
        int64_t t = (int64_t)ms;
        if (e->s.last_ms && t > e->s.last_ms &&
            (rc = integrate(&bm, &nbm, &capbm, bucket, e->s.bytes, e->s.last_ms, t)))
            goto out;
        if (t > e->s.last_ms)
            e->s.last_ms = t;
        e->s.bytes += db_; /* two's complement: deltas may be negative */
        e->s.objects += do_;
        if ((int64_t)e->s.bytes < 0)
            e->s.bytes = 0;
        if ((int64_t)e->s.objects < 0)
            e->s.objects = 0;
        e->dirty = true;
    }
    if ((rc = md__iter_status(it)))
        goto out;
    for (size_t i = 0; i < nst; i++) {
        if ((rc = key_head(&k, K_STATE)) || (rc = cm_buf_append_str(&k, st[i].bucket)))
            goto out;
        cm_buf_reset(&v);
        if ((rc = cm_buf_put_u8(&v, MD__REC_VERSION)) || (rc = cm_buf_put_u64(&v, st[i].s.bytes)) ||
            (rc = cm_buf_put_u64(&v, st[i].s.objects)) ||
            (rc = cm_buf_put_u64(&v, (uint64_t)st[i].s.last_ms)))
            goto out;
        md__batch_put(b, cm_buf_slice(&k), cm_buf_slice(&v));
    }
    for (size_t i = 0; i < nbm; i++) {
        cm_buf cur = {0};
        u128 total = bm[i].bms;
        if ((rc = key_head(&k, K_BYTEMS)) || (rc = put_be64(&k, (uint64_t)bm[i].hour)) ||
            (rc = cm_buf_append_str(&k, bm[i].bucket)))
            goto out;
        rc = md__get(db, cm_buf_slice(&k), &cur);
        if (rc == 0) {
            cm_reader r = {cur.p, cur.n};
            uint8_t ver;
            uint64_t lo, hi;
            if (!cm_get_u8(&r, &ver) && !cm_get_u64(&r, &lo) && !cm_get_u64(&r, &hi))
                total += ((u128)hi << 64) | lo;
        }
        cm_buf_free(&cur);
        if (rc && rc != CM_ENOTFOUND)
            goto out;
        cm_buf_reset(&v);
        if ((rc = cm_buf_put_u8(&v, MD__REC_VERSION)) || (rc = cm_buf_put_u64(&v, (uint64_t)total)) ||
            (rc = cm_buf_put_u64(&v, (uint64_t)(total >> 64))))
            goto out;
        md__batch_put(b, cm_buf_slice(&k), cm_buf_slice(&v));
    }
    rc = 0;
    *nfold += n;
    *next = fold_next(w, ended, last);
out:
    free(st);
    free(bm);
    cm_buf_free(&k);
    cm_buf_free(&v);
    md__iter_free(it);
    return rc;
}

int md_usage_fold(md_db_t *db, size_t *out_n)
{
    uint64_t *nums = NULL;
    size_t total = 0, nj = 0;
    bool first = true;
    int rc = 0;

    pthread_mutex_lock(&fold_lk);
    for (;;) {
        struct md__batch *b = md__batch_new();
        aggset s = {0};
        size_t n = 0, nreq = 0;
        /* Read before the fold's iterators are made (see fold_seek). */
        uint64_t w = md__seq_watermark(db), next[2] = {0, 0};
        if (!b) {
            rc = CM_ENOMEM;
            break;
        }
        if (first && db->uj)
            rc = fold_journals(db, b, &s, &n, &nums, &nj);
        if (!rc)
            rc = fold_requests(db, b, &s, &nreq, w, &next[0]);
        n += nreq;
        size_t nst = 0;
        if (!rc)
            rc = fold_storage(db, b, &s, &nst, w, &next[1]);
        n += nst;
        if (!rc)
            rc = aggset_commit(db, b, &s);
        /* Pending LevelDB records alone: not a sync write; the batch is
         * atomic, and if it is lost the records it deletes are still there
         * to fold again. Journals are unlinked after it: sync first. */
        if (!rc && (n || (first && nj)))
            rc = md__batch_commit(db, b, first && nj > 0);
        if (!rc) {
            db->fold_from[0] = next[0];
            db->fold_from[1] = next[1];
        }
        aggset_free(&s);
        md__batch_free(b);
        if (!rc && first && nj)
            rc = journal_cleanup(db, nums, nj);
        first = false;
        total += n;
        if (rc || (nreq < FOLD_MAX && nst < FOLD_MAX))
            break;
    }
    pthread_mutex_unlock(&fold_lk);
    free(nums);
    if (out_n)
        *out_n = total;
    return rc;
}

/* ------------------------------------------------------------- scans */
int md_usage_scan(md_db_t *db, int64_t from_hour, int64_t to_hour, md_usage_fn fn, void *arg)
{
    struct md__iter *it = md__iter_new(db);
    cm_buf k = {0};
    int rc;

    if (!it)
        return CM_ENOMEM;
    if ((rc = key_head(&k, K_HOUR)) || (rc = put_be64(&k, (uint64_t)(from_hour < 0 ? 0 : from_hour))))
        goto out;
    for (md__iter_seek(it, cm_buf_slice(&k)); md__iter_valid(it); md__iter_next(it)) {
        cm_slice key = md__iter_key(it);
        md_usage_ctr c;
        agg a;
        if (key.n < 10 || key.p[0] != MD__K_USAGE || key.p[1] != K_HOUR)
            break;
        memset(&c, 0, sizeof c);
        c.hour = (int64_t)get_be64(key.p + 2);
        if (c.hour >= to_hour)
            break;
        /* bucket 00 key 00 op 00 sc */
        const uint8_t *p = key.p + 10, *end = key.p + key.n;
        const uint8_t *z1 = memchr(p, 0, (size_t)(end - p));
        const uint8_t *z2 = z1 ? memchr(z1 + 1, 0, (size_t)(end - z1 - 1)) : NULL;
        const uint8_t *z3 = z2 ? memchr(z2 + 1, 0, (size_t)(end - z2 - 1)) : NULL;
        if (!z3 || z3 + 2 != end || (size_t)(z1 - p) > MD_BUCKET_MAX ||
            (size_t)(z2 - z1 - 1) >= sizeof c.access_key || (size_t)(z3 - z2 - 1) >= sizeof c.op ||
            ctr_decode(md__iter_val(it), &a)) {
            cm_log(CM_LOG_WARN, "metadata: skipping a corrupt usage counter");
            continue;
        }
        memcpy(c.bucket, p, (size_t)(z1 - p));
        memcpy(c.access_key, z1 + 1, (size_t)(z2 - z1 - 1));
        memcpy(c.op, z2 + 1, (size_t)(z3 - z2 - 1));
        c.status_class = z3[1];
        c.cls = a.cls;
        c.requests = a.requests;
        c.billable = a.billable;
        c.bytes_in = a.bytes_in;
        c.bytes_out = a.bytes_out;
        if ((rc = fn(arg, &c)))
            goto out;
    }
    rc = md__iter_status(it);
out:
    cm_buf_free(&k);
    md__iter_free(it);
    return rc;
}

int md_storage_scan(md_db_t *db, int64_t from_hour, int64_t to_hour, md_storage_fn fn, void *arg)
{
    struct md__iter *it = md__iter_new(db);
    cm_buf k = {0};
    int rc;

    if (!it)
        return CM_ENOMEM;
    if ((rc = key_head(&k, K_BYTEMS)) || (rc = put_be64(&k, (uint64_t)(from_hour < 0 ? 0 : from_hour))))
        goto out;
    for (md__iter_seek(it, cm_buf_slice(&k)); md__iter_valid(it); md__iter_next(it)) {
        cm_slice key = md__iter_key(it), val = md__iter_val(it);
        cm_reader r = {val.p, val.n};
        uint8_t ver;
        uint64_t lo, hi;
        char bucket[MD_BUCKET_MAX + 1];
        if (key.n < 10 || key.p[0] != MD__K_USAGE || key.p[1] != K_BYTEMS)
            break;
        int64_t hour = (int64_t)get_be64(key.p + 2);
        if (hour >= to_hour)
            break;
        if (key.n - 10 > MD_BUCKET_MAX || cm_get_u8(&r, &ver) || cm_get_u64(&r, &lo) ||
            cm_get_u64(&r, &hi))
            continue;
        memcpy(bucket, key.p + 10, key.n - 10);
        bucket[key.n - 10] = 0;
        double bms = (double)hi * 18446744073709551616.0 + (double)lo;
        if ((rc = fn(arg, hour, bucket, bms / (double)HOUR_MS)))
            goto out;
    }
    rc = md__iter_status(it);
out:
    cm_buf_free(&k);
    md__iter_free(it);
    return rc;
}

int md_storage_list(md_db_t *db, md_storage_state **out, size_t *n)
{
    struct md__iter *it = md__iter_new(db);
    md_storage_state *a = NULL;
    size_t cnt = 0, cap = 0;
    uint8_t start[2] = {MD__K_USAGE, K_STATE};
    int rc;

    if (!it)
        return CM_ENOMEM;
    for (md__iter_seek(it, CM_SLICE(start, 2)); md__iter_valid(it); md__iter_next(it)) {
        cm_slice key = md__iter_key(it);
        if (key.n < 3 || key.p[0] != MD__K_USAGE || key.p[1] != K_STATE)
            break;
        if (key.n - 2 > MD_BUCKET_MAX)
            continue;
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 16;
            md_storage_state *na = realloc(a, nc * sizeof *na);
            if (!na) {
                rc = CM_ENOMEM;
                goto out;
            }
            a = na;
            cap = nc;
        }
        md_storage_state *s = &a[cnt];
        memset(s, 0, sizeof *s);
        if (state_decode(md__iter_val(it), s))
            continue;
        memcpy(s->bucket, key.p + 2, key.n - 2);
        s->bucket[key.n - 2] = 0;
        cnt++;
    }
    if ((rc = md__iter_status(it)))
        goto out;
    *out = a;
    *n = cnt;
    a = NULL;
out:
    free(a);
    md__iter_free(it);
    return rc;
}

/* ------------------------------------------------------------ logging */
/* 'L' value: version, target bucket, target prefix. */
int md_logging_put(md_db_t *db, const char *bucket, const md_logging *l)
{
    struct md__batch *b = md__batch_new();
    cm_buf k = {0}, v = {0};
    int rc;
    if (!b)
        return CM_ENOMEM;
    if ((rc = md__check_bucket(bucket)) || (rc = key_head(&k, K_LOGGING)) ||
        (rc = cm_buf_append_str(&k, bucket)))
        goto out;
    if (l) {
        if ((rc = cm_buf_put_u8(&v, MD__REC_VERSION)) ||
            (rc = cm_buf_put_bytes(&v, CM_SLICE_STR(l->target_bucket))) ||
            (rc = cm_buf_put_bytes(&v, CM_SLICE_STR(l->target_prefix))))
            goto out;
        md__batch_put(b, cm_buf_slice(&k), cm_buf_slice(&v));
    } else {
        md__batch_del(b, cm_buf_slice(&k));
    }
    rc = md__batch_commit(db, b, true);
out:
    md__batch_free(b);
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

static int logging_decode(cm_slice v, md_logging *out)
{
    cm_reader r = {v.p, v.n};
    uint8_t ver;
    cm_slice tb, tp;
    if (cm_get_u8(&r, &ver) || ver != MD__REC_VERSION || cm_get_bytes(&r, &tb) ||
        cm_get_bytes(&r, &tp) || tb.n > MD_BUCKET_MAX || tp.n >= sizeof out->target_prefix)
        return CM_ECORRUPT;
    memset(out, 0, sizeof *out);
    memcpy(out->target_bucket, tb.p, tb.n);
    memcpy(out->target_prefix, tp.p, tp.n);
    return 0;
}

int md_logging_get(md_db_t *db, const char *bucket, md_logging *out)
{
    cm_buf k = {0}, v = {0};
    int rc;
    if ((rc = key_head(&k, K_LOGGING)) || (rc = cm_buf_append_str(&k, bucket)) ||
        (rc = md__get(db, cm_buf_slice(&k), &v)))
        goto out;
    rc = logging_decode(cm_buf_slice(&v), out);
out:
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

int md_logging_list(md_db_t *db, md_logging_ent **out, size_t *n)
{
    struct md__iter *it = md__iter_new(db);
    md_logging_ent *a = NULL;
    size_t cnt = 0, cap = 0;
    uint8_t start[2] = {MD__K_USAGE, K_LOGGING};
    int rc;

    if (!it)
        return CM_ENOMEM;
    for (md__iter_seek(it, CM_SLICE(start, 2)); md__iter_valid(it); md__iter_next(it)) {
        cm_slice key = md__iter_key(it);
        if (key.n < 3 || key.p[0] != MD__K_USAGE || key.p[1] != K_LOGGING)
            break;
        if (key.n - 2 > MD_BUCKET_MAX)
            continue;
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 8;
            md_logging_ent *na = realloc(a, nc * sizeof *na);
            if (!na) {
                rc = CM_ENOMEM;
                goto out;
            }
            a = na;
            cap = nc;
        }
        if (logging_decode(md__iter_val(it), &a[cnt].cfg))
            continue;
        memcpy(a[cnt].bucket, key.p + 2, key.n - 2);
        a[cnt].bucket[key.n - 2] = 0;
        cnt++;
    }
    if ((rc = md__iter_status(it)))
        goto out;
    *out = a;
    *n = cnt;
    a = NULL;
out:
    free(a);
    md__iter_free(it);
    return rc;
}
