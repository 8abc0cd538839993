/* metadata/md_int.h - internals shared by the files of metadata/: the md_db
 * struct and its locks, the LevelDB wrapper (db.c), key encoding (keys.c) and
 * record codecs (codec.c). Not for use outside metadata/ (tests excepted).
 * No file but db.c sees <leveldb/c.h>; the handles here are opaque. */
#ifndef MD_INT_H
#define MD_INT_H

#include "metadata/md.h"

#include <pthread.h>

/* ------------------------------------------------------------ key prefixes */
/* One byte opens every key; see doc/metadata-keys.md for the full layout. */
#define MD__K_META '#'    /* '#' name -> internal state (the sequence reservation) */
#define MD__K_BUCKET 'B'  /* 'B' bucket -> bucket record */
#define MD__K_GARBAGE 'G' /* 'G' seq(be64) -> layout to reclaim */
#define MD__K_INTENT 'I'  /* 'I' seq(be64) -> intent bytes */
#define MD__K_OBJECT 'O'  /* 'O' bucket 0x00 key -> object record */
#define MD__K_PART 'P'    /* 'P' esc(upload_id) 0x00 partnum(be32) -> part record */
#define MD__K_UPLOAD 'U'  /* 'U' bucket 0x00 esc(key) 0x00 upload_id -> upload record */
#define MD__K_USAGE '$'   /* '$' kind ... -> usage records (usage.c): 'R'/'D' seq(be64)
                           * pending request records / storage deltas, 'H' hourly
                           * counters, 'S' bucket storage state, 'T' byte-ms per hour,
                           * 'L' bucket logging configuration, 'J' n(be64) marker:
                           * usage journal n is folded */
#define MD__K_EVENTS 'E'  /* 'E' kind byte ... -> events records (notify.c, outbox.c):
                           * 'E' 'N' bucket -> notification config, 'E' 'F' name -> function,
                           * 'E' 'T' name -> target, 'E' 'Q' seq(be64) -> pending event,
                           * 'E' 'D' seq(be64) -> dead-lettered event,
                           * 'E' 'C' bucket 0x00 seq(be64) -> change-log entry */

#define MD__SEQ_BLOCK ((uint64_t)1 << 20) /* ids reserved per durable '#seq' write */
#define MD__NKEYLOCK 1024                 /* stripes for object keys and parts */
#define MD__NRWLOCK 64                    /* stripes for buckets and uploads */

struct md__ldb; /* the LevelDB handles; defined in db.c */
struct md__iter;
struct md__batch;

/* The store. Locks are striped by hash and always taken in this order:
 * bucket rwlock -> upload rwlock -> key mutex (never two of one kind).
 *  - bucket_lk[h(bucket)]: read by anything that needs the bucket to stay
 *    (object put/delete, upload create/complete/abort), written by bucket
 *    create/delete.
 *  - upload_lk[h(upload_id)]: read by md_part_put, written by upload
 *    create/complete/abort, so parts never appear after their upload went.
 *  - key_lk[h(bucket, key)] / key_lk[h(upload_id, partnum)]: serialises the
 *    read-check-write of one object record or one part record.
 * No lock is held across anything but the one sync write it protects, and
 * never a global one: LevelDB group-commits concurrent sync writes. */
struct md_db {
    struct md__ldb *ldb;
    md_reclaim_fn reclaim; /* set before use by md_set_reclaim; read unlocked */
    void *reclaim_arg;
    uint64_t seq_next;      /* atomic: next id to hand out */
    uint64_t seq_hw;        /* atomic: ids < seq_hw are covered by the durable '#seq' */
    pthread_mutex_t seq_lk; /* serialises raising seq_hw */
    /* Batches holding an id from md__batch_seq until they are freed, in the
     * order of those ids (the head has the smallest): every record keyed by
     * a smaller id than the head's is committed or never will be. */
    pthread_mutex_t hold_lk;
    struct md__batch *held, *held_tail;
    uint64_t fold_from[2];  /* usage.c, under its fold lock: where the next fold seeks */
    uint64_t nsteps;        /* atomic: iterator seeks + steps, for tests */
    pthread_rwlock_t bucket_lk[MD__NRWLOCK];
    /* Per bucket lock: the last bucket md__bucket_exists found there ("":
     * none). Cleared by md_bucket_delete under that lock's write side, so
     * a reader holding the read side can trust it. */
    struct {
        pthread_mutex_t mu;
        char name[MD_BUCKET_MAX + 1];
    } bucket_seen[MD__NRWLOCK];
    pthread_rwlock_t upload_lk[MD__NRWLOCK];
    pthread_mutex_t key_lk[MD__NKEYLOCK];
    struct md__ujournal *uj; /* usage journal (usage.c); NULL before md__usage_open */
};

/* ------------------------------------------------------------------ db.c */
int md__ldb_open(const char *dir, struct md__ldb **out);
void md__ldb_close(struct md__ldb *l);

/* Reads key into *out (malloc()ed copy, free with free(); *out->p is NULL
 * only if n == 0). CM_ENOTFOUND if absent. */
int md__get(md_db_t *db, cm_slice key, cm_buf *out);
/* Returns 0 if key exists, CM_ENOTFOUND if not, or another CM_E* code. */
int md__exists(md_db_t *db, cm_slice key);

/* Write batches: collect puts and deletes, commit them atomically. */
struct md__batch *md__batch_new(void);    /* NULL on OOM */
void md__batch_free(struct md__batch *b); /* NULL is a no-op */
void md__batch_put(struct md__batch *b, cm_slice key, cm_slice val);
void md__batch_del(struct md__batch *b, cm_slice key);
int md__batch_commit(md_db_t *db, struct md__batch *b, bool sync);
/* A new id (md__seq_next) for a record in b: b holds it, and the ids after
 * it, until md__batch_free (so its commit is over, or never happens). */
int md__batch_seq(md_db_t *db, struct md__batch *b, uint64_t *out);
/* The smallest id still held, or the next id if none is: a record keyed by
 * an id below it that an iterator made after this call does not see was
 * never committed. */
uint64_t md__seq_watermark(md_db_t *db);
/* Hands b (owned from now on, freed when written) to the committer, which
 * writes it with the next group of sync writes, or alone when it has
 * nothing else to do (without sync; with the journal on, journaled like
 * every write, see db.c); returns without waiting. For writes that may be
 * lost in a crash, in part too, and should cost no write of their own
 * while sync writes flow: deletes of delivered events, each of which is
 * on its own. CM_EIO if the database is closing
 * or has refused writes, CM_EINVAL if b has value-log writes or holds an
 * id from md__batch_seq (b freed in every case). */
int md__batch_commit_later(md_db_t *db, struct md__batch *b);
/* The commit journal (journal.c): records of bytes at aligned offsets of a
 * preallocated file, each made durable by one O_DIRECT | O_DSYNC write. */
typedef struct md__journal md__journal;
extern size_t md__journal_bytes; /* the file's size when created (tests make it small) */
/* Opens (creating and zero-filling) the journal at path. */
int md__journal_open(const char *path, md__journal **out);
void md__journal_close(md__journal *j); /* NULL is a no-op */
/* Calls fn for each record from offset 0 whose lsn is base, base+1, ...,
 * stopping at the first that is not (or is torn); *next gets the lsn after
 * the last one passed to fn. Appends go on after it. */
int md__journal_replay(md__journal *j, uint64_t base, int (*fn)(void *arg, cm_slice payload),
                       void *arg, uint64_t *next);
/* Whether a payload of n bytes fits after the current records, and at all. */
bool md__journal_fits(const md__journal *j, size_t n);
bool md__journal_ever_fits(const md__journal *j, size_t n);
/* Appends one record durably; CM_ENOSPACE if it does not fit. */
int md__journal_append(md__journal *j, uint64_t lsn, cm_slice payload);
/* Makes the last appended record unreadable (a replay stops before it). */
int md__journal_unappend(md__journal *j);
/* The next append goes to offset 0 (older records stay behind it). */
void md__journal_rewind(md__journal *j);

/* The value log (vlog.c): object bytes in segment files beside LevelDB,
 * pointed to by records (md_value_ref). Bytes only; db.c makes writes
 * durable, objects.c collects dead segments (md__values_gc). */
typedef struct md__vlog md__vlog;
extern uint64_t md__vlog_seg_bytes; /* a segment's size limit (tests make it small) */
extern size_t md__vlog_fds;         /* segments that keep a descriptor open (64) */
typedef struct md__vseg_info {
    uint32_t id;
    uint64_t size; /* bytes reserved or written */
    uint64_t dead; /* bytes known dead (approximate) */
    uint32_t pending; /* reservations not yet released */
    bool known;    /* dead is counted since the segment began or was scanned */
    bool active;   /* reservations go there: never dropped */
} md__vseg_info;
/* Opens the segments in dir; the first reservation starts a new one. */
int md__vlog_open(const char *dir, md__vlog **out);
void md__vlog_close(md__vlog *v); /* NULL is a no-op */
/* Reserves n bytes in the active segment (moving to a new one when full).
 * The reservation is pending until md__vlog_release: until then the
 * collector leaves the segment alone, since a record that will point there
 * may not be in LevelDB yet. */
int md__vlog_reserve(md__vlog *v, size_t n, uint32_t *seg, uint64_t *off);
void md__vlog_release(md__vlog *v, uint32_t seg);
/* Writes bytes at (seg, off), buffered; creates the segment if it is gone. */
int md__vlog_write(md__vlog *v, uint32_t seg, uint64_t off, cm_slice bytes);
/* fdatasync of every segment written since the last call (and of the
 * directory after a segment was created). */
int md__vlog_sync(md__vlog *v);
/* Reads n bytes at (seg, off): CM_ENOTFOUND if the segment was dropped,
 * CM_ECORRUPT past its end. */
int md__vlog_read(md__vlog *v, uint32_t seg, uint64_t off, uint8_t *p, size_t n);
/* Counts n more dead bytes in seg, or (set) makes n its count, known from
 * a full scan. */
void md__vlog_dead(md__vlog *v, uint32_t seg, uint64_t n, bool set);
/* Copies up to max segments' state, ascending by id; returns how many
 * there are (more than max: call again with more room). */
size_t md__vlog_segments(md__vlog *v, md__vseg_info *out, size_t max);
/* Deletes a segment that is not the active one. */
int md__vlog_drop(md__vlog *v, uint32_t seg);
/* A 64-bit check of bytes (multiply-xorshift over 8-byte words, started
 * from seed): detects torn, stale and flipped bytes, not made to resist
 * tampering. The journal's records and the value log use it (journal.c). */
uint64_t md__sum64(uint64_t seed, const uint8_t *p, size_t n);
/* Another 64-bit check of the same kind, four lanes at a time (faster on
 * kilobytes; its values differ from md__sum64's). */
uint64_t md__sum64x4(uint64_t seed, const uint8_t *p, size_t n);
/* The check value stored in a md_value_ref. */
uint64_t md__vsum(const uint8_t *p, size_t n);

/* The database's value log (db.c owns it). */
md__vlog *md__values(md_db_t *db);
/* Reserves room for bytes in the value log and adds their write to b: the
 * commit of b makes them durable with the rest (journaled, or synced before
 * LevelDB's write without a journal). *ref says where they will be. The
 * reservation is released by md__batch_free (after the commit, if any). */
int md__batch_value(md_db_t *db, struct md__batch *b, cm_slice bytes, md_value_ref *ref);
/* Asks the committer for a checkpoint (everything durable in LevelDB and
 * the value log, the journal started over) and waits for it. */
int md__checkpoint(md_db_t *db);

/* For tests: how many sync writes wait in the committer's queue now and how
 * many groups it has taken since open. Takes the committer's mutex. */
void md__commit_stats(md_db_t *db, size_t *queued, uint64_t *groups);

/* Iterators over an implicit snapshot taken at creation. Key and value
 * slices are valid until the next move or md__iter_free. Every seek and
 * step counts in db->nsteps. */
struct md__iter *md__iter_new(md_db_t *db); /* NULL on OOM */
void md__iter_free(struct md__iter *it);    /* NULL is a no-op */
void md__iter_seek(struct md__iter *it, cm_slice key);
void md__iter_seek_last(struct md__iter *it);
bool md__iter_valid(const struct md__iter *it);
void md__iter_next(struct md__iter *it);
void md__iter_prev(struct md__iter *it);
cm_slice md__iter_key(const struct md__iter *it);
cm_slice md__iter_val(const struct md__iter *it);
int md__iter_status(const struct md__iter *it); /* 0 or the iterator's error */

/* --------------------------------------------------------------- usage.c */
/* Opens the usage journal DIR/usage/journal.<N> (N above every journal and
 * fold marker already there) for md_usage_add; older journals are folded by
 * the next md_usage_fold. Called by md_open once the store is open. */
int md__usage_open(md_db_t *db, const char *dir);
/* Closes the journal (unlinking it if nothing was written); no-op without one. */
void md__usage_close(md_db_t *db);

/* ------------------------------------------------------------------ keys.c */
/* Each builder resets b and writes the full key into it. */
int md__key_bucket(cm_buf *b, const char *bucket);
int md__key_object(cm_buf *b, const char *bucket, cm_slice key);
int md__key_upload(cm_buf *b, const char *bucket, cm_slice key, cm_slice upload_id);
/* 'U' bucket 0x00 esc(prefix): every upload whose key starts with prefix. */
int md__key_upload_prefix(cm_buf *b, const char *bucket, cm_slice prefix);
int md__key_part(cm_buf *b, cm_slice upload_id, uint32_t num);
int md__key_part_prefix(cm_buf *b, cm_slice upload_id); /* 'P' esc(id) 0x00 */
int md__key_seq(cm_buf *b, char kind, uint64_t seq);    /* 'I' or 'G' */
/* Appends esc(s): 0x00 -> 01 01, 0x01 -> 01 02, others as is. Order-preserving
 * and prefix-free once followed by 0x00, so an escaped field can be followed
 * by more fields and still sort by its own bytes first. */
int md__key_esc(cm_buf *b, cm_slice s);
/* Decodes one escaped field from r up to its 0x00 terminator (consumed),
 * appending the raw bytes to out. CM_ECORRUPT on a bad escape or no end. */
int md__key_unesc(cm_reader *r, cm_buf *out);
/* Parses a 'U' key (with the bucket part already known to match). Slices
 * into key for the upload id; the object key is appended to keyout. */
int md__key_upload_parse(cm_slice k, size_t bucket_len, cm_buf *keyout, cm_slice *upload_id);
/* Parses 'P' ... partnum; CM_ECORRUPT if k is not a well-formed part key. */
int md__key_part_num(cm_slice k, size_t prefix_len, uint32_t *num);
/* Parses 'I'/'G' seq keys. */
int md__key_seq_parse(cm_slice k, char kind, uint64_t *seq);
/* Turns b into the least byte string greater than every string it prefixes
 * (strips trailing 0xff bytes, then increments the last byte). Returns false
 * if b was all 0xff (no such string; b is left empty). */
bool md__key_successor(cm_buf *b);
/* Validation of names and keys: CM_EINVAL when out of bounds. */
int md__check_bucket(const char *bucket);
int md__check_key(cm_slice key);
/* Stripe index for a byte string pair (h(a) mixed with h(b)). */
uint32_t md__hash(cm_slice a, cm_slice b);

/* ------------------------------------------------------------------ codec.c */
#define MD__REC_VERSION 1
#define MD__OBJ_VERSION_REF 2 /* an object record with a value-log reference */

int md__obj_encode(cm_buf *b, const md_object *o);
/* Decodes an object record. With copy, o->mem is one malloc()ed block
 * holding the header array and a copy of v, so o owns every byte; without
 * copy o->mem holds only the header array and the slices borrow from v.
 * Either way release with md_object_clear(). CM_ECORRUPT on bad bytes. */
int md__obj_decode(cm_slice v, bool copy, md_object *o);
/* The length of the value-log bytes an encoded object record refers to (0:
 * none, or not a well-formed reference: the decode tells). */
size_t md__obj_value_len(cm_slice v);
/* The same with room extra bytes at the end of o->mem (*roomp points at
 * them; NULL when room is 0), for the bytes of a value-log reference. */
int md__obj_decode_room(cm_slice v, bool copy, size_t room, md_object *o, uint8_t **roomp);
/* Decodes for a listing: size, mtime, etag and hdrs copied into pool (inline
 * data and layout left empty). */
int md__obj_decode_pool(cm_slice v, cm_pool *pool, md_object *o);

int md__bucket_encode(cm_buf *b, const md_bucket *bk);
int md__bucket_decode(cm_slice name, cm_slice v, md_bucket *out);

int md__upload_encode(cm_buf *b, int64_t ctime_ms, const md_object *tmpl);
/* Fills ctime and tmpl (hdrs) of u, copying them into pool. */
int md__upload_decode_pool(cm_slice v, cm_pool *pool, md_upload *u);

int md__part_encode(cm_buf *b, const md_part *p);
/* Borrows from v; p->num is left alone (it lives in the key). */
int md__part_decode(cm_slice v, md_part *p);

/* Copies s into pool; CM_ENOMEM. Empty slices come back {NULL, 0}. */
int md__pool_slice(cm_pool *pool, cm_slice s, cm_slice *out);

/* --------------------------------------------------------- objects.c etc. */
/* Hands out a new id (unique across restarts). */
int md__seq_next(md_db_t *db, uint64_t *out);
/* Reads the '#seq' reservation and the largest I/G id at open. */
int md__seq_load(md_db_t *db);

/* Pending garbage of one mutation: layouts recorded as 'G' seq in its batch,
 * reclaimed by md__garbage_reclaim after the commit. */
typedef struct md__garbage {
    cm_buf keys;    /* concatenated 9-byte 'G' keys */
    cm_buf layouts; /* concatenated u32 length + layout bytes */
    size_t n;
} md__garbage;

/* Adds a 'G' record for layout to batch b and remembers it in g. */
int md__garbage_add(md_db_t *db, struct md__batch *b, md__garbage *g, cm_slice layout);
/* After commit: runs reclaim on each layout and deletes its 'G' record
 * (non-sync) when reclaim returns 0. Frees g's buffers. */
void md__garbage_reclaim(md_db_t *db, md__garbage *g);

/* With bucket/key's key lock held: reads the current record, runs precond
 * on it, and adds to b the put of obj (or the delete, if obj is NULL) plus a
 * garbage record for the current layout when it is not obj's. Deleting an
 * absent key gives CM_ENOTFOUND (after precond saw NULL). */
int md__object_stage(md_db_t *db, struct md__batch *b, md__garbage *g, const char *bucket,
                     cm_slice key, const md_object *obj, const md_write_opts *opts);

/* Objects at least this big keep their bytes in the value log rather than
 * in their record. Measured (doc/bench.md): at 512 bytes PUT still costs
 * less CPU with the bytes in the value log and GET no more. */
#define MD__VALUE_MIN 512
/* Reads o's value-log bytes (o->vref) into room; CM_ECORRUPT if they do not
 * check out. */
int md__value_read(md_db_t *db, const md_value_ref *ref, uint8_t *room);
/* One pass of the value log's collector: finds the live bytes of every
 * segment (a scan of the object records), moves the live values out of
 * segments at most half alive into the active one, checkpoints, and drops
 * the emptied segments. *moved / *dropped may be NULL. */
int md__values_gc(md_db_t *db, size_t *moved, size_t *dropped);

/* What hooks see as md_batch_t: the batch of the change and its db. */
struct md_batch {
    md_db_t *db;
    struct md__batch *b;
};

/* Lock helpers (lock order above). */
pthread_rwlock_t *md__bucket_lock(md_db_t *db, const char *bucket);
pthread_rwlock_t *md__upload_lock(md_db_t *db, cm_slice upload_id);
pthread_mutex_t *md__key_lock(md_db_t *db, const char *bucket, cm_slice key);

/* Returns 0 if the bucket exists, CM_ENOTFOUND if not. */
int md__bucket_exists(md_db_t *db, const char *bucket);
/* The same, answered from memory once found, for a holder of the bucket's
 * lock (either side). */
int md__bucket_exists_locked(md_db_t *db, const char *bucket);
/* Little-endian fields in fixed-size headers (the usage and commit journals). */
static inline void md__put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t md__get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void md__put_le64(uint8_t *p, uint64_t v)
{
    md__put_le32(p, (uint32_t)v);
    md__put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint64_t md__get_le64(const uint8_t *p)
{
    return (uint64_t)md__get_le32(p) | (uint64_t)md__get_le32(p + 4) << 32;
}

/* Adds to b the deletes of the bucket's policy and CORS records (policy.c). */
int md__bucket_docs_del(struct md__batch *b, const char *bucket);

static inline uint64_t md__nsteps(md_db_t *db)
{
    return __atomic_load_n(&db->nsteps, __ATOMIC_RELAXED);
}

#endif
