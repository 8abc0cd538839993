/* metadata/db.c - the only file that includes <leveldb/c.h>: opens and closes
 * the database (block cache, bloom filter), runs gets, write batches and
 * iterators, and maps LevelDB's error strings to CM_E* codes. No record
 * formats and no key layout here. */
#include "metadata/md_int.h"

#include <errno.h>
#include <leveldb/c.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>

#define CACHE_BYTES ((size_t)64 << 20)  /* block cache */
#define WRITE_BUFFER ((size_t)64 << 20) /* memtable size before a flush: fewer, larger
                                        * level-0 tables, less compaction per write */
#define BLOOM_BITS 10                   /* bits per key of the bloom filter */
#define BLOCK_BYTES ((size_t)32 << 10)  /* table block size: inline objects of a few KiB
                                        * would fill LevelDB's default 4 KiB blocks with
                                        * one entry each; bigger blocks cut what memtable
                                        * flushes and compactions spend per entry (PUT
                                        * 4 KiB: ~8% less CPU per request, doc/bench.md) */
#define GROUP_BYTES ((size_t)1 << 20)   /* a sync group stops growing past this */

/* One durable write waiting for the committer. */
struct commit_req {
    leveldb_writebatch_t *b;
    size_t bytes; /* approximate batch size, for the group limit */
    const cm_buf *vals; /* value-log writes (md__batch_value's encoding), or NULL */
    int rc;       /* the group's result */
    sem_t done;   /* posted by the committer */
    bool later;   /* md__batch_commit_later: nobody waits; the committer frees it and b */
    bool ckpt;    /* md__checkpoint: a checkpoint after the group */
    struct commit_req *next;
};

/* The committer: durable (sync) writes are queued and one thread writes each
 * queued group as one LevelDB batch with one log sync, then posts every
 * writer's own semaphore. LevelDB groups concurrent writers itself, but its
 * followers sleep on condition variables of the DB mutex and, once woken,
 * contend for that mutex again; here a writer sleeps once, is woken once, and
 * never waits for the DB mutex. Writes without sync go to LevelDB directly. */
struct committer {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* work arrived, or stop */
    struct commit_req *head, *tail;
    bool idle; /* the thread waits on cv */
    bool stop;
    bool started;
    uint64_t ngroups; /* groups taken since open (md__commit_stats, for tests) */
    pthread_t th;
};

/* Handles owned by one open database; immutable after md__ldb_open except
 * the committer's queue (under c.mu), its merged batch (its own) and failed
 * (atomic, set once). */
struct md__ldb {
    int failed; /* 0, or the CM_E* code of the first failed write: see ldb_write */
    leveldb_t *db;
    leveldb_options_t *opts;
    leveldb_cache_t *cache;
    leveldb_filterpolicy_t *bloom;
    leveldb_readoptions_t *ropts;
    leveldb_writeoptions_t *wsync;  /* sync = true: every mutation */
    leveldb_writeoptions_t *wasync; /* sync = false: forgetting reclaimed garbage */
    leveldb_writebatch_t *group;    /* the committer's merged batch */
    struct committer c;
    /* The commit journal (NULL: LevelDB syncs its own log). Used by the
     * committer thread only, and by open and close around it. */
    md__journal *jr;
    uint64_t lsn;                   /* the next record's */
    cm_buf jpay;                    /* a group encoded for the journal */
    md__vlog *vlog;                 /* the value log (vlog.c), in the same directory */
};

static int checkpoint(struct md__ldb *l);

struct md__iter {
    leveldb_iterator_t *it;
    md_db_t *db;
};

/* Maps a LevelDB status string ("Corruption: ...") to a CM_E* code and
 * frees it. Returns 0 if there was no error. */
static int map_err(char *err, const char *what)
{
    int rc;

    if (!err)
        return 0;
    if (!strncmp(err, "Corruption", 10))
        rc = CM_ECORRUPT;
    else if (!strncmp(err, "NotFound", 8))
        rc = CM_ENOTFOUND;
    else if (!strncmp(err, "Invalid argument", 16))
        rc = CM_EINVAL;
    else if (strstr(err, "No space"))
        rc = CM_ENOSPACE;
    else if (!strncmp(err, "IO error: lock ", 15))
        rc = CM_EUNAVAIL; /* the LOCK file is held by another process (LevelDB's
                           * wording; "lock" elsewhere may be part of a path) */
    else
        rc = CM_EIO;
    cm_log(CM_LOG_ERROR, "metadata: %s: %s", what, err);
    leveldb_free(err);
    return rc;
}

static void committer_stop(struct md__ldb *l);

/* Makes later writes fail with rc (the first failure wins); see ldb_write. */
static void fail_writes(struct md__ldb *l, int rc)
{
    int none = 0;
    if (__atomic_compare_exchange_n(&l->failed, &none, rc, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE))
        cm_log(CM_LOG_ERROR, "metadata: refusing writes until the database is reopened "
                             "(a restart)");
}

/* Writes b, unless an earlier write failed: then returns that failure's code
 * without calling LevelDB, until the database is closed and reopened.
 *
 * Why: LevelDB (1.23) refuses later writes by itself only after a failed log
 * sync. After a failed log append (ENOSPC, EIO, ...) it goes on writing the
 * same log, but its log writer has already counted the lost record's bytes,
 * so every later record sits at the wrong place relative to the log's 32 KiB
 * blocks. Those writes succeed and read back while the database stays open;
 * at the next open the log reader finds them corrupt and drops them without
 * an error (paranoid_checks is off): without this check, 36 of the 64
 * sync writes that tests/unit/test_md.c makes after one failed group write
 * were acknowledged and then gone after a reopen. Reopening replays the log
 * up to the failure and starts a new log, so restarting once the fault is
 * fixed is the way back. Reads are not affected.
 *
 * The check is not atomic with LevelDB's write: a non-sync write already
 * inside LevelDB when a sync group fails can still land after the failure
 * and be lost at the next open, as a crash could lose it anyway (that is
 * what sync = false accepts). */
static int ldb_write(struct md__ldb *l, const leveldb_writeoptions_t *wo, leveldb_writebatch_t *b)
{
    int rc = __atomic_load_n(&l->failed, __ATOMIC_ACQUIRE);
    char *err = NULL;

    if (rc)
        return rc;
    leveldb_write(l->db, wo, b, &err);
    if ((rc = map_err(err, "write")))
        fail_writes(l, rc);
    return rc;
}

static void ldb_free(struct md__ldb *l)
{
    if (!l)
        return;
    committer_stop(l);
    if (l->jr && l->db && !__atomic_load_n(&l->failed, __ATOMIC_ACQUIRE))
        checkpoint(l); /* the next open has nothing to replay */
    md__journal_close(l->jr);
    md__vlog_close(l->vlog);
    cm_buf_free(&l->jpay);
    if (l->group)
        leveldb_writebatch_destroy(l->group);
    if (l->db)
        leveldb_close(l->db);
    if (l->opts)
        leveldb_options_destroy(l->opts);
    if (l->cache)
        leveldb_cache_destroy(l->cache);
    if (l->bloom)
        leveldb_filterpolicy_destroy(l->bloom);
    if (l->ropts)
        leveldb_readoptions_destroy(l->ropts);
    if (l->wsync)
        leveldb_writeoptions_destroy(l->wsync);
    if (l->wasync)
        leveldb_writeoptions_destroy(l->wasync);
    free(l);
}

/* ------------------------------------------------------------ journal
 * With a journal, every write goes through the committer, and each group
 * is first appended to the journal (durable on return), then written to
 * LevelDB without sync; readers see it only after it is durable. LevelDB's
 * own log reaches the disk at checkpoints: when the journal is full, a
 * sync write of the key "#journal" (the lsn the journal's records start
 * from after it) makes everything before it durable, and the journal
 * starts over at offset 0.
 *
 * At open, the records from that lsn on are written to LevelDB again, in
 * order. That is correct whatever part of them LevelDB kept (after kill -9
 * all of it, after a power loss any subset): every key they touch ends at
 * its last journaled value, and no write bypasses the journal, so nothing
 * later can be undone by the replay. A group that the journal took but
 * LevelDB refused has its record made unreadable before the writers hear
 * of the error, so a failed write stays failed after a restart.
 *
 * Payload: per operation u8 (1 put, 0 delete), the key, and for a put the
 * value, each as cm_buf_put_bytes writes it (u32 LE length + bytes). A
 * group's value-log writes come first, each as u8 2, segment u32 LE, offset
 * u64 LE and the bytes: md__batch_value has already written them to the
 * value log (buffered, before the record is journaled, so a checkpoint's
 * sync of the value log covers every value its records refer to); a replay
 * writes them again, to the same place. */
static const char JOURNAL_KEY[] = "#journal"; /* MD__K_META */

/* The encoder's state: the payload, and the first append's failure. */
struct jenc {
    cm_buf *b;
    int rc;
};

static void enc_put(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
    struct jenc *e = arg;
    if (!e->rc)
        e->rc = cm_buf_put_u8(e->b, 1) || cm_buf_put_bytes(e->b, CM_SLICE(k, kn)) ||
                        cm_buf_put_bytes(e->b, CM_SLICE(v, vn))
                    ? CM_ENOMEM
                    : 0;
}

static void enc_del(void *arg, const char *k, size_t kn)
{
    struct jenc *e = arg;
    if (!e->rc)
        e->rc = cm_buf_put_u8(e->b, 0) || cm_buf_put_bytes(e->b, CM_SLICE(k, kn)) ? CM_ENOMEM
                                                                                   : 0;
}

/* Writes one value-log write of a journal record (after its op byte). */
static int replay_value(struct md__ldb *l, cm_reader *r)
{
    uint32_t seg;
    uint64_t off;
    cm_slice v;
    int rc;

    if ((rc = cm_get_u32(r, &seg)) || (rc = cm_get_u64(r, &off)) || (rc = cm_get_bytes(r, &v)))
        return rc;
    return md__vlog_write(l->vlog, seg, off, v);
}

/* Makes a group's value-log bytes durable when it is not journaled (they
 * were written, buffered, by md__batch_value). */
static int group_values_sync(struct md__ldb *l, const struct commit_req *g)
{
    for (const struct commit_req *r = g; r; r = r->next)
        if (r->vals && r->vals->n)
            return md__vlog_sync(l->vlog);
    return 0;
}

/* Replays one journal record into LevelDB (without sync). */
static int replay_one(void *arg, cm_slice payload)
{
    struct md__ldb *l = arg;
    leveldb_writebatch_t *b = leveldb_writebatch_create();
    cm_reader r = {payload.p, payload.n};
    int rc = b ? 0 : CM_ENOMEM;

    while (!rc && r.n) {
        uint8_t op = 0;
        cm_slice k, v;
        if ((rc = cm_get_u8(&r, &op)))
            break;
        if (op == 2) {
            rc = replay_value(l, &r);
            continue;
        }
        if ((rc = cm_get_bytes(&r, &k)) || (op == 1 && (rc = cm_get_bytes(&r, &v))) ||
            (op > 1 && (rc = CM_ECORRUPT)))
            break;
        if (op == 1)
            leveldb_writebatch_put(b, (const char *)k.p, k.n, (const char *)v.p, v.n);
        else
            leveldb_writebatch_delete(b, (const char *)k.p, k.n);
    }
    if (!rc)
        rc = ldb_write(l, l->wasync, b);
    if (b)
        leveldb_writebatch_destroy(b);
    return rc;
}

/* Makes everything written to LevelDB durable (a sync write of the journal
 * key) and starts the journal over. */
static int checkpoint(struct md__ldb *l)
{
    leveldb_writebatch_t *b = leveldb_writebatch_create();
    uint8_t v[8];
    int rc;

    if (!b)
        return CM_ENOMEM;
    if ((rc = md__vlog_sync(l->vlog))) { /* values the records since the last one wrote */
        leveldb_writebatch_destroy(b);
        return rc;
    }
    for (int i = 0; i < 8; i++)
        v[i] = (uint8_t)(l->lsn >> (56 - 8 * i));
    leveldb_writebatch_put(b, JOURNAL_KEY, sizeof JOURNAL_KEY - 1, (const char *)v, 8);
    rc = ldb_write(l, l->wsync, b);
    leveldb_writebatch_destroy(b);
    if (!rc)
        md__journal_rewind(l->jr);
    return rc;
}

/* Writes group g (merged batch b): journal (with its value-log bytes), then
 * LevelDB without sync (see above). */
static int journal_write(struct md__ldb *l, leveldb_writebatch_t *b, const struct commit_req *g)
{
    int rc = __atomic_load_n(&l->failed, __ATOMIC_ACQUIRE);

    if (rc)
        return rc;
    struct jenc enc = {&l->jpay, 0};
    cm_buf_reset(&l->jpay);
    for (const struct commit_req *r = g; r && !enc.rc; r = r->next)
        if (r->vals && r->vals->n && cm_buf_append(&l->jpay, r->vals->p, r->vals->n))
            enc.rc = CM_ENOMEM;
    if (!enc.rc)
        leveldb_writebatch_iterate(b, &enc, enc_put, enc_del);
    if (enc.rc)
        return enc.rc;
    if (!md__journal_ever_fits(l->jr, l->jpay.n)) { /* too big for it: LevelDB syncs */
        if (!(rc = checkpoint(l)) && !(rc = group_values_sync(l, g)))
            rc = ldb_write(l, l->wsync, b);
        return rc;
    }
    if (!md__journal_fits(l->jr, l->jpay.n) && (rc = checkpoint(l)))
        return rc;
    if ((rc = md__journal_append(l->jr, l->lsn, cm_buf_slice(&l->jpay)))) {
        cm_log(CM_LOG_ERROR, "metadata: journal write: %s", cm_strerror(rc));
        fail_writes(l, rc);
        return rc;
    }
    l->lsn++;
    if ((rc = ldb_write(l, l->wasync, b)) && md__journal_unappend(l->jr))
        cm_log(CM_LOG_ERROR, "metadata: cannot undo the journal record of a failed write; "
                             "it may reappear after a restart");
    return rc;
}

/* At open: replays the journal's records from the lsn LevelDB holds, then
 * checkpoints (so the journal is empty for the new writes). */
static int journal_start(struct md__ldb *l, const char *dir)
{
    char path[4096], *err = NULL;
    size_t vlen = 0;
    uint64_t base = 1;
    size_t n = 0;
    int rc;

    snprintf(path, sizeof path, "%s/cairn-journal", dir);
    if ((rc = md__journal_open(path, &l->jr)))
        return rc;
    char *v = leveldb_get(l->db, l->ropts, JOURNAL_KEY, sizeof JOURNAL_KEY - 1, &vlen, &err);
    if ((rc = map_err(err, "get")))
        return rc;
    if (v && vlen == 8) {
        base = 0;
        for (int i = 0; i < 8; i++)
            base = base << 8 | (uint8_t)v[i];
    }
    leveldb_free(v);
    if ((rc = md__journal_replay(l->jr, base, replay_one, l, &l->lsn)))
        return rc;
    n = (size_t)(l->lsn - base);
    if (n)
        cm_log(CM_LOG_INFO, "metadata: replayed %zu journal records", n);
    return checkpoint(l);
}

/* Takes the queued requests, up to GROUP_BYTES (at least one). */
static struct commit_req *take_group(struct committer *c)
{
    struct commit_req *first = c->head, *last = first;
    size_t bytes = first->bytes;

    while (last->next && bytes + last->next->bytes <= GROUP_BYTES) {
        last = last->next;
        bytes += last->bytes;
    }
    c->head = last->next;
    if (!c->head)
        c->tail = NULL;
    last->next = NULL;
    return first;
}

static void *committer_main(void *arg)
{
    struct md__ldb *l = arg;
    struct committer *c = &l->c;

    pthread_setname_np(pthread_self(), "md-commit"); /* in top -H, perf, gdb */
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->head && !c->stop) {
            c->idle = true;
            pthread_cond_wait(&c->cv, &c->mu);
            c->idle = false;
        }
        if (!c->head)
            break; /* stop, and nothing is left */
        struct commit_req *g = take_group(c);
        c->ngroups++;
        pthread_mutex_unlock(&c->mu);

        leveldb_writebatch_t *b = g->b;
        bool sync = false, ckpt = false;
        for (struct commit_req *r = g; r; r = r->next) {
            sync |= !r->later;
            ckpt |= r->ckpt;
        }
        if (g->next) {
            leveldb_writebatch_clear(l->group);
            for (struct commit_req *r = g; r; r = r->next)
                leveldb_writebatch_append(l->group, r->b);
            b = l->group;
        }
        int rc = l->jr ? journal_write(l, b, g) : sync ? group_values_sync(l, g) : 0;
        if (!rc && !l->jr)
            rc = ldb_write(l, sync ? l->wsync : l->wasync, b);
        int crc = 0; /* the checkpoint's result, for md__checkpoint */
        if (ckpt)
            crc = rc ? rc : l->jr ? checkpoint(l) : md__vlog_sync(l->vlog);
        struct commit_req *next;
        for (struct commit_req *r = g; r; r = next) {
            next = r->next; /* r is gone once posted */
            if (r->later) {
                leveldb_writebatch_destroy(r->b);
                free(r);
                continue;
            }
            r->rc = r->ckpt ? crc : rc;
            sem_post(&r->done);
        }
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static int committer_start(struct md__ldb *l)
{
    struct committer *c = &l->c;

    if (!(l->group = leveldb_writebatch_create()))
        return CM_ENOMEM;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (pthread_create(&c->th, NULL, committer_main, l)) {
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        return CM_ENOMEM;
    }
    c->started = true;
    return 0;
}

/* Lets the committer finish what is queued, then joins it. */
static void committer_stop(struct md__ldb *l)
{
    struct committer *c = &l->c;

    if (!c->started)
        return;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->th, NULL);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    c->started = false;
}

/* Queues r for the committer and wakes it if it waits. With c->mu held. */
static void enqueue(struct committer *c, struct commit_req *r)
{
    if (c->tail)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    if (c->idle)
        pthread_cond_signal(&c->cv);
}

/* A durable write through the committer (vals: its value-log writes or
 * NULL; ckpt: a checkpoint after its group). */
static int committer_write(struct md__ldb *l, leveldb_writebatch_t *b, size_t bytes,
                           const cm_buf *vals, bool ckpt)
{
    struct committer *c = &l->c;
    struct commit_req r = {.b = b, .bytes = bytes, .vals = vals, .ckpt = ckpt};

    pthread_mutex_lock(&c->mu);
    if (c->stop) { /* closing: nothing more is written */
        pthread_mutex_unlock(&c->mu);
        cm_log(CM_LOG_ERROR, "metadata: write while the database is closing");
        return CM_EIO;
    }
    sem_init(&r.done, 0, 0);
    enqueue(c, &r);
    pthread_mutex_unlock(&c->mu);
    while (sem_wait(&r.done) && errno == EINTR)
        ;
    sem_destroy(&r.done);
    return r.rc;
}

void md__commit_stats(md_db_t *db, size_t *queued, uint64_t *groups)
{
    struct committer *c = &db->ldb->c;
    size_t n = 0;

    pthread_mutex_lock(&c->mu);
    for (struct commit_req *r = c->head; r; r = r->next)
        n++;
    *queued = n;
    *groups = c->ngroups;
    pthread_mutex_unlock(&c->mu);
}

int md__ldb_open(const char *dir, struct md__ldb **out)
{
    char *err = NULL;
    int rc;
    struct md__ldb *l = calloc(1, sizeof *l);

    if (!l)
        return CM_ENOMEM;
    l->opts = leveldb_options_create();
    l->cache = leveldb_cache_create_lru(CACHE_BYTES);
    l->bloom = leveldb_filterpolicy_create_bloom(BLOOM_BITS);
    l->ropts = leveldb_readoptions_create();
    l->wsync = leveldb_writeoptions_create();
    l->wasync = leveldb_writeoptions_create();
    if (!l->opts || !l->cache || !l->bloom || !l->ropts || !l->wsync || !l->wasync) {
        rc = CM_ENOMEM;
        goto out;
    }
    leveldb_options_set_create_if_missing(l->opts, 1);
    leveldb_options_set_cache(l->opts, l->cache);
    leveldb_options_set_filter_policy(l->opts, l->bloom);
    leveldb_options_set_write_buffer_size(l->opts, WRITE_BUFFER);
    leveldb_options_set_max_open_files(l->opts, 1000);
    leveldb_options_set_compression(l->opts, leveldb_snappy_compression);
    leveldb_options_set_block_size(l->opts, BLOCK_BYTES);
    leveldb_writeoptions_set_sync(l->wsync, 1);
    leveldb_writeoptions_set_sync(l->wasync, 0);

    l->db = leveldb_open(l->opts, dir, &err);
    if ((rc = map_err(err, dir)))
        goto out;
    if (!l->db) {
        rc = CM_EIO;
        goto out;
    }
    if ((rc = md__vlog_open(dir, &l->vlog)))
        goto out;
    if (md__journal_bytes && (rc = journal_start(l, dir)))
        goto out;
    if ((rc = committer_start(l)))
        goto out;
    *out = l;
    l = NULL;
out:
    ldb_free(l);
    return rc;
}

void md__ldb_close(struct md__ldb *l)
{
    ldb_free(l);
}

int md__get(md_db_t *db, cm_slice key, cm_buf *out)
{
    char *err = NULL;
    size_t vlen = 0;
    int rc;
    char *v = leveldb_get(db->ldb->db, db->ldb->ropts, (const char *)key.p, key.n, &vlen, &err);

    if ((rc = map_err(err, "get")))
        return rc;
    if (!v)
        return CM_ENOTFOUND;
    cm_buf_reset(out);
    rc = cm_buf_append(out, v, vlen);
    leveldb_free(v);
    return rc;
}

int md__exists(md_db_t *db, cm_slice key)
{
    cm_buf v = {0};
    int rc = md__get(db, key, &v);

    cm_buf_free(&v);
    return rc;
}

/* A write batch, its approximate size (the committer's group limit) and its
 * value-log writes (md__batch_value). */
struct md__batch {
    leveldb_writebatch_t *wb;
    size_t bytes;
    cm_buf vals;
    md__vlog *vlog; /* where vals' space is reserved (set by the first) */
    md_db_t *hdb;   /* set while b holds an id (md__batch_seq) */
    uint64_t hseq;  /* the first id it was given */
    struct md__batch *hprev, *hnext; /* hdb->held */
};

/* Releases the value-log reservations of b's writes: once it is freed, its
 * records are in LevelDB (or never will be). */
static void release_values(struct md__batch *b)
{
    cm_reader r = {b->vals.p, b->vals.n};
    uint8_t op;
    uint32_t seg;
    uint64_t off;
    cm_slice v;

    while (b->vlog && r.n && !cm_get_u8(&r, &op) && op == 2 && !cm_get_u32(&r, &seg) &&
           !cm_get_u64(&r, &off) && !cm_get_bytes(&r, &v))
        md__vlog_release(b->vlog, seg);
}

struct md__batch *md__batch_new(void)
{
    struct md__batch *b = malloc(sizeof *b);

    if (!b)
        return NULL;
    b->bytes = 0;
    b->vals = (cm_buf){0};
    b->vlog = NULL;
    b->hdb = NULL;
    if (!(b->wb = leveldb_writebatch_create())) {
        free(b);
        return NULL;
    }
    return b;
}

void md__batch_free(struct md__batch *b)
{
    if (!b)
        return;
    leveldb_writebatch_destroy(b->wb);
    release_values(b);
    if (b->hdb) { /* its ids are no longer held (md__batch_seq) */
        md_db_t *db = b->hdb;
        pthread_mutex_lock(&db->hold_lk);
        *(b->hprev ? &b->hprev->hnext : &db->held) = b->hnext;
        *(b->hnext ? &b->hnext->hprev : &db->held_tail) = b->hprev;
        pthread_mutex_unlock(&db->hold_lk);
    }
    cm_buf_free(&b->vals);
    free(b);
}

void md__batch_put(struct md__batch *b, cm_slice key, cm_slice val)
{
    leveldb_writebatch_put(b->wb, (const char *)key.p, key.n, (const char *)val.p, val.n);
    b->bytes += key.n + val.n + 8;
}

void md__batch_del(struct md__batch *b, cm_slice key)
{
    leveldb_writebatch_delete(b->wb, (const char *)key.p, key.n);
    b->bytes += key.n + 8;
}

int md__batch_commit(md_db_t *db, struct md__batch *b, bool sync)
{
    /* With a journal, every write is journaled (see journal_write). */
    if (sync || db->ldb->jr)
        return committer_write(db->ldb, b->wb, b->bytes, &b->vals, false);
    return ldb_write(db->ldb, db->ldb->wasync, b->wb);
}

int md__batch_seq(md_db_t *db, struct md__batch *b, uint64_t *out)
{
    int rc;

    /* The id is taken under the lock that links b, so no id below the
     * watermark is ever handed out to a batch not yet linked. */
    pthread_mutex_lock(&db->hold_lk);
    if (!(rc = md__seq_next(db, out)) && !b->hdb) {
        b->hdb = db;
        b->hseq = *out;
        b->hnext = NULL;
        b->hprev = db->held_tail;
        *(db->held_tail ? &db->held_tail->hnext : &db->held) = b;
        db->held_tail = b;
    }
    pthread_mutex_unlock(&db->hold_lk);
    return rc;
}

uint64_t md__seq_watermark(md_db_t *db)
{
    pthread_mutex_lock(&db->hold_lk);
    uint64_t w = db->held ? db->held->hseq : __atomic_load_n(&db->seq_next, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&db->hold_lk);
    return w;
}

int md__checkpoint(md_db_t *db)
{
    struct md__batch *b = md__batch_new();
    int rc;

    if (!b)
        return CM_ENOMEM;
    rc = committer_write(db->ldb, b->wb, 0, NULL, true);
    md__batch_free(b);
    return rc;
}

md__vlog *md__values(md_db_t *db)
{
    return db->ldb->vlog;
}

int md__batch_value(md_db_t *db, struct md__batch *b, cm_slice bytes, md_value_ref *ref)
{
    uint32_t seg;
    uint64_t off;
    int rc;

    if (bytes.n == 0 || bytes.n > UINT32_MAX)
        return CM_EINVAL;
    if ((rc = md__vlog_reserve(db->ldb->vlog, bytes.n, &seg, &off)))
        return rc;
    /* The bytes go to the segment now, from the caller's thread (nothing
     * refers to them before the commit); the journal record has them too,
     * for a replay after a power loss. */
    size_t was = b->vals.n;
    if ((rc = md__vlog_write(db->ldb->vlog, seg, off, bytes)) ||
        (rc = cm_buf_put_u8(&b->vals, 2)) || (rc = cm_buf_put_u32(&b->vals, seg)) ||
        (rc = cm_buf_put_u64(&b->vals, off)) || (rc = cm_buf_put_bytes(&b->vals, bytes))) {
        b->vals.n = was;
        md__vlog_release(db->ldb->vlog, seg);
        return rc;
    }
    b->vlog = db->ldb->vlog;
    b->bytes += bytes.n + 17;
    *ref = (md_value_ref){seg, (uint32_t)bytes.n, off, md__vsum(bytes.p, bytes.n)};
    return 0;
}

int md__value_read(md_db_t *db, const md_value_ref *ref, uint8_t *room)
{
    int rc = md__vlog_read(db->ldb->vlog, ref->seg, ref->off, room, ref->len);

    if (!rc && md__vsum(room, ref->len) != ref->sum)
        rc = CM_ECORRUPT;
    if (rc == CM_ECORRUPT)
        cm_log(CM_LOG_ERROR, "metadata: value log segment %u: %u bytes at %llu do not check out",
               ref->seg, ref->len, (unsigned long long)ref->off);
    return rc;
}

int md__batch_commit_later(md_db_t *db, struct md__batch *b)
{
    struct md__ldb *l = db->ldb;
    struct committer *c = &l->c;
    struct commit_req *r = calloc(1, sizeof *r);
    int rc = __atomic_load_n(&l->failed, __ATOMIC_ACQUIRE);

    /* Value-log writes are never "later", nor records keyed by a held id
     * (md__batch_seq): nothing would hold it until the committer wrote it. */
    if (!r || rc || b->vals.n || b->hdb) {
        free(r);
        rc = !r ? CM_ENOMEM : rc ? rc : CM_EINVAL;
        md__batch_free(b);
        return rc;
    }
    r->b = b->wb;
    r->bytes = b->bytes;
    r->later = true;
    free(b); /* its write batch now belongs to r (it has no value-log writes) */
    pthread_mutex_lock(&c->mu);
    if (c->stop) {
        pthread_mutex_unlock(&c->mu);
        leveldb_writebatch_destroy(r->b);
        free(r);
        return CM_EIO;
    }
    enqueue(c, r);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

struct md__iter *md__iter_new(md_db_t *db)
{
    struct md__iter *it = malloc(sizeof *it);

    if (!it)
        return NULL;
    it->db = db;
    it->it = leveldb_create_iterator(db->ldb->db, db->ldb->ropts);
    if (!it->it) {
        free(it);
        return NULL;
    }
    return it;
}

void md__iter_free(struct md__iter *it)
{
    if (!it)
        return;
    leveldb_iter_destroy(it->it);
    free(it);
}

static void count_step(struct md__iter *it)
{
    __atomic_fetch_add(&it->db->nsteps, 1, __ATOMIC_RELAXED);
}

void md__iter_seek(struct md__iter *it, cm_slice key)
{
    count_step(it);
    leveldb_iter_seek(it->it, (const char *)key.p, key.n);
}

void md__iter_seek_last(struct md__iter *it)
{
    count_step(it);
    leveldb_iter_seek_to_last(it->it);
}

bool md__iter_valid(const struct md__iter *it)
{
    return leveldb_iter_valid(it->it) != 0;
}

void md__iter_next(struct md__iter *it)
{
    count_step(it);
    leveldb_iter_next(it->it);
}

void md__iter_prev(struct md__iter *it)
{
    count_step(it);
    leveldb_iter_prev(it->it);
}

cm_slice md__iter_key(const struct md__iter *it)
{
    size_t n = 0;
    const char *p = leveldb_iter_key(it->it, &n);

    return CM_SLICE(p, n);
}

cm_slice md__iter_val(const struct md__iter *it)
{
    size_t n = 0;
    const char *p = leveldb_iter_value(it->it, &n);

    return CM_SLICE(p, n);
}

int md__iter_status(const struct md__iter *it)
{
    char *err = NULL;

    leveldb_iter_get_error(it->it, &err);
    return map_err(err, "iterator");
}

/* ------------------------------------------------------------ store level */
/* Opening and closing an md_db, ids, intents, garbage and recovery: the
 * parts of md.h that belong to no record family. */

int md_open(const char *dir, md_db_t **out)
{
    md_db_t *db;
    int rc;

    if (!dir || !out)
        return CM_EINVAL;
    if (!(db = calloc(1, sizeof *db)))
        return CM_ENOMEM;
    pthread_mutex_init(&db->seq_lk, NULL);
    pthread_mutex_init(&db->hold_lk, NULL);
    for (int i = 0; i < MD__NRWLOCK; i++) {
        pthread_rwlock_init(&db->bucket_lk[i], NULL);
        pthread_rwlock_init(&db->upload_lk[i], NULL);
        pthread_mutex_init(&db->bucket_seen[i].mu, NULL);
    }
    for (int i = 0; i < MD__NKEYLOCK; i++)
        pthread_mutex_init(&db->key_lk[i], NULL);
    if ((rc = md__ldb_open(dir, &db->ldb)) || (rc = md__seq_load(db)) ||
        (rc = md__usage_open(db, dir)))
        goto out;
    *out = db;
    db = NULL;
out:
    md_close(db);
    return rc;
}

void md_close(md_db_t *db)
{
    if (!db)
        return;
    md__usage_close(db);
    md__ldb_close(db->ldb);
    pthread_mutex_destroy(&db->seq_lk);
    pthread_mutex_destroy(&db->hold_lk);
    for (int i = 0; i < MD__NRWLOCK; i++) {
        pthread_rwlock_destroy(&db->bucket_lk[i]);
        pthread_rwlock_destroy(&db->upload_lk[i]);
        pthread_mutex_destroy(&db->bucket_seen[i].mu);
    }
    for (int i = 0; i < MD__NKEYLOCK; i++)
        pthread_mutex_destroy(&db->key_lk[i]);
    free(db);
}

void md_set_reclaim(md_db_t *db, md_reclaim_fn fn, void *arg)
{
    db->reclaim = fn;
    db->reclaim_arg = arg;
}

pthread_rwlock_t *md__bucket_lock(md_db_t *db, const char *bucket)
{
    return &db->bucket_lk[md__hash(CM_SLICE_STR(bucket), CM_SLICE_NULL) % MD__NRWLOCK];
}

pthread_rwlock_t *md__upload_lock(md_db_t *db, cm_slice upload_id)
{
    return &db->upload_lk[md__hash(upload_id, CM_SLICE("U", 1)) % MD__NRWLOCK];
}

pthread_mutex_t *md__key_lock(md_db_t *db, const char *bucket, cm_slice key)
{
    return &db->key_lk[md__hash(CM_SLICE_STR(bucket), key) % MD__NKEYLOCK];
}

/* ids: the '#seq' record holds a reservation: every id ever handed out is
 * below it. Raising it takes one sync write per MD__SEQ_BLOCK ids. */
static const cm_slice seq_key = {(const uint8_t *)"#seq", 4};

/* Finds the largest id of kind ('I' or 'G') in the store; 0 if none. */
static int seq_max(md_db_t *db, char kind, uint64_t *out)
{
    uint8_t next = (uint8_t)(kind + 1);
    struct md__iter *it = md__iter_new(db);
    int rc = 0;

    *out = 0;
    if (!it)
        return CM_ENOMEM;
    md__iter_seek(it, CM_SLICE(&next, 1));
    if (md__iter_valid(it))
        md__iter_prev(it);
    else
        md__iter_seek_last(it);
    if (md__iter_valid(it)) {
        cm_slice k = md__iter_key(it);
        if (k.n > 0 && k.p[0] == (uint8_t)kind && md__key_seq_parse(k, kind, out))
            cm_log(CM_LOG_WARN, "metadata: malformed %c key of %zu bytes", kind, k.n);
    }
    rc = md__iter_status(it);
    md__iter_free(it);
    return rc;
}

int md__seq_load(md_db_t *db)
{
    cm_buf v = {0};
    cm_reader r;
    uint64_t hw = 0, maxi, maxg, next;
    int rc = md__get(db, seq_key, &v);

    if (rc == 0) {
        r = (cm_reader){v.p, v.n};
        if (cm_get_u64(&r, &hw)) {
            cm_log(CM_LOG_WARN, "metadata: corrupt #seq record; ids restart above I/G keys");
            hw = 0;
        }
    } else if (rc != CM_ENOTFOUND) {
        goto out;
    }
    if ((rc = seq_max(db, MD__K_INTENT, &maxi)) || (rc = seq_max(db, MD__K_GARBAGE, &maxg)))
        goto out;
    next = hw;
    if (maxi >= next)
        next = maxi + 1;
    if (maxg >= next)
        next = maxg + 1;
    if (next == 0)
        next = 1;
    db->seq_next = next;
    db->seq_hw = next; /* the first id handed out raises the reservation */
    rc = 0;
out:
    cm_buf_free(&v);
    return rc;
}

int md__seq_next(md_db_t *db, uint64_t *out)
{
    uint64_t id = __atomic_fetch_add(&db->seq_next, 1, __ATOMIC_RELAXED);
    struct md__batch *b;
    cm_buf v = {0};
    int rc = 0;

    if (id < __atomic_load_n(&db->seq_hw, __ATOMIC_ACQUIRE)) {
        *out = id;
        return 0;
    }
    pthread_mutex_lock(&db->seq_lk);
    if (id >= db->seq_hw) {
        uint64_t hw = id + MD__SEQ_BLOCK;
        if (!(b = md__batch_new())) {
            rc = CM_ENOMEM;
            goto out;
        }
        if (!(rc = cm_buf_put_u64(&v, hw))) {
            md__batch_put(b, seq_key, cm_buf_slice(&v));
            rc = md__batch_commit(db, b, true);
        }
        md__batch_free(b);
        if (rc == 0)
            __atomic_store_n(&db->seq_hw, hw, __ATOMIC_RELEASE);
    }
out:
    pthread_mutex_unlock(&db->seq_lk);
    cm_buf_free(&v);
    if (rc == 0)
        *out = id;
    return rc;
}

int md__garbage_add(md_db_t *db, struct md__batch *b, md__garbage *g, cm_slice layout)
{
    cm_buf k = {0};
    uint64_t id;
    int rc;

    if ((rc = md__seq_next(db, &id)) || (rc = md__key_seq(&k, MD__K_GARBAGE, id)))
        goto out;
    if ((rc = cm_buf_append_slice(&g->keys, cm_buf_slice(&k))) ||
        (rc = cm_buf_put_bytes(&g->layouts, layout)))
        goto out;
    md__batch_put(b, cm_buf_slice(&k), layout);
    g->n++;
out:
    cm_buf_free(&k);
    return rc;
}

void md__garbage_reclaim(md_db_t *db, md__garbage *g)
{
    cm_reader r = {g->layouts.p, g->layouts.n};
    struct md__batch *b = NULL;
    size_t ndel = 0;
    cm_slice layout;
    int rc;

    if (g->n == 0 || !db->reclaim)
        goto out; /* left for md_recover */
    if (!(b = md__batch_new()))
        goto out;
    for (size_t i = 0; i < g->n; i++) {
        if (cm_get_bytes(&r, &layout))
            break; /* our own buffer; cannot happen */
        rc = db->reclaim(db->reclaim_arg, layout);
        if (rc) {
            /* CM_EUNAVAIL: the owner deferred it (data still being read) */
            cm_log(rc == CM_EUNAVAIL ? CM_LOG_DEBUG : CM_LOG_WARN,
                   "metadata: reclaim not done (%s); kept for recovery", cm_strerror(rc));
            continue;
        }
        md__batch_del(b, CM_SLICE(g->keys.p + 9 * i, 9));
        ndel++;
    }
    if (ndel && (rc = md__batch_commit(db, b, false)))
        cm_log(CM_LOG_WARN, "metadata: dropping garbage records: %s", cm_strerror(rc));
out:
    md__batch_free(b);
    cm_buf_free(&g->keys);
    cm_buf_free(&g->layouts);
    g->n = 0;
}

int md_intent_add(md_db_t *db, cm_slice intent, uint64_t *out_id)
{
    struct md__batch *b = NULL;
    cm_buf k = {0};
    uint64_t id;
    int rc;

    if ((rc = md__seq_next(db, &id)) || (rc = md__key_seq(&k, MD__K_INTENT, id)))
        goto out;
    if (!(b = md__batch_new())) {
        rc = CM_ENOMEM;
        goto out;
    }
    md__batch_put(b, cm_buf_slice(&k), intent);
    if ((rc = md__batch_commit(db, b, true)))
        goto out;
    *out_id = id;
out:
    md__batch_free(b);
    cm_buf_free(&k);
    return rc;
}

int md_intent_drop(md_db_t *db, uint64_t id)
{
    struct md__batch *b = NULL;
    cm_buf k = {0}, v = {0};
    int rc;

    if ((rc = md__key_seq(&k, MD__K_INTENT, id)) || (rc = md__get(db, cm_buf_slice(&k), &v)))
        goto out;
    if (!db->reclaim)
        goto out; /* nothing can free the data yet: md_recover will */
    int rrc = db->reclaim(db->reclaim_arg, cm_buf_slice(&v));
    if (!(b = md__batch_new())) {
        rc = CM_ENOMEM;
        goto out;
    }
    md__batch_del(b, cm_buf_slice(&k));
    if (rrc) {
        /* Not freed (a storage node is down): the intent becomes a garbage
         * record, which md_gc retries while serving (intents of this run
         * are never retried before the next start). */
        md__garbage g = {0};
        rc = md__garbage_add(db, b, &g, cm_buf_slice(&v));
        cm_buf_free(&g.keys);
        cm_buf_free(&g.layouts);
        if (rc)
            goto out;
    }
    if ((rc = md__batch_commit(db, b, true)) == 0)
        rc = rrc;
out:
    md__batch_free(b);
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

/* Reclaims and forgets every record of one kind. A failing reclaim leaves
 * its record for the next md_recover (logged, not an error: a storage node
 * being down must not keep the server from starting). */
static int recover_kind(md_db_t *db, char kind, uint64_t below, size_t *n, size_t *left)
{
    uint8_t start = (uint8_t)kind;
    struct md__iter *it = md__iter_new(db);
    struct md__batch *b = md__batch_new();
    size_t ndel = 0, nfail = 0;
    int rc = 0;

    if (!it || !b) {
        rc = CM_ENOMEM;
        goto out;
    }
    for (md__iter_seek(it, CM_SLICE(&start, 1)); md__iter_valid(it); md__iter_next(it)) {
        cm_slice k = md__iter_key(it);
        uint64_t seq;
        if (k.n == 0 || k.p[0] != start)
            break;
        if (md__key_seq_parse(k, kind, &seq)) {
            cm_log(CM_LOG_WARN, "metadata: skipping malformed %c key", kind);
            continue;
        }
        if (seq >= below)
            continue; /* an intent of a write that may still be running */
        if ((rc = db->reclaim(db->reclaim_arg, md__iter_val(it)))) {
            cm_log(CM_LOG_DEBUG, "metadata: reclaim of %c%llu failed: %s", kind,
                   (unsigned long long)seq, cm_strerror(rc));
            nfail++;
            continue;
        }
        md__batch_del(b, k);
        ndel++;
    }
    if (nfail)
        cm_log(CM_LOG_WARN, "metadata: %zu %s records could not be reclaimed; kept for later",
               nfail, kind == MD__K_INTENT ? "intent" : "garbage");
    if (left)
        *left += nfail;
    if ((rc = md__iter_status(it)))
        goto out;
    if (ndel && (rc = md__batch_commit(db, b, true)) == 0)
        *n += ndel;
out:
    md__iter_free(it);
    md__batch_free(b);
    return rc;
}

int md_recover(md_db_t *db, size_t *out_n)
{
    size_t n = 0;
    int rc, rc2;

    if (!db->reclaim)
        return CM_EINVAL;
    rc = recover_kind(db, MD__K_GARBAGE, UINT64_MAX, &n, NULL);
    rc2 = recover_kind(db, MD__K_INTENT, UINT64_MAX, &n, NULL);
    if (out_n)
        *out_n = n;
    return rc ? rc : rc2;
}

uint64_t md_seq_mark(md_db_t *db)
{
    return __atomic_load_n(&db->seq_next, __ATOMIC_RELAXED);
}

int md_gc(md_db_t *db, uint64_t intents_below, size_t *out_done, size_t *out_left)
{
    size_t n = 0, left = 0;
    int rc, rc2;

    if (!db->reclaim)
        return CM_EINVAL;
    rc = recover_kind(db, MD__K_GARBAGE, UINT64_MAX, &n, &left);
    rc2 = recover_kind(db, MD__K_INTENT, intents_below, &n, &left);
    int rc3 = md__values_gc(db, NULL, NULL); /* mostly dead value-log segments */
    if (out_done)
        *out_done = n;
    if (out_left)
        *out_left = left;
    return rc ? rc : rc2 ? rc2 : rc3;
}
