/* metadata/md.h - the metadata store: buckets, objects, multipart uploads,
 * write intents and garbage, kept in LevelDB. Knows nothing of HTTP, S3 XML
 * or shard files: object data locations are opaque "layout" bytes, and
 * reclaiming them is a callback the owner installs.
 *
 * Durability: every mutating call commits one LevelDB write batch with
 * sync=true before returning 0. Keys are ordered so that listing a prefix is
 * a range scan (see doc/metadata-keys.md).
 * Thread-safety: an md_db_t may be used from many threads at once; changes
 * to the same object key are serialised inside. */
#ifndef MD_H
#define MD_H

#include "common/cm.h"

typedef struct md_db md_db_t;

#define MD_BUCKET_MAX 63
#define MD_KEY_MAX 1024

/* Opens (creating if needed) the LevelDB database in dir. Returns 0 and
 * *out or a CM_E* code. Free with md_close(). */
int md_open(const char *dir, md_db_t **out);
void md_close(md_db_t *db); /* NULL is a no-op */

/* Installs the function that frees data no record refers to any more
 * (overwritten or deleted objects, replaced or aborted parts, intents of
 * writes that never committed). Called after the commit that orphaned the
 * layout, from the committing thread; md forgets the garbage record once fn
 * returns 0 (on error it is kept and retried by md_recover). */
typedef int (*md_reclaim_fn)(void *arg, cm_slice layout);
void md_set_reclaim(md_db_t *db, md_reclaim_fn fn, void *arg);

/* Runs reclaim on every remaining garbage record and on EVERY write intent
 * (call only at start, before serving: no write is in flight then).
 * *out_n (may be NULL) receives the number of layouts reclaimed. */
int md_recover(md_db_t *db, size_t *out_n);
/* The same while serving: reclaims every garbage record, and the intents
 * with ids below intents_below (take md_seq_mark() before serving: intents
 * older than that belong to a previous run, so no write of ours is behind
 * them). *out_done / *out_left (either may be NULL) receive how many were
 * reclaimed and how many are kept because reclaim failed (a storage node
 * is down): call again later. It also collects the value log's segments
 * that are at most half alive (their live bytes move on; see vlog.c). */
int md_gc(md_db_t *db, uint64_t intents_below, size_t *out_done, size_t *out_left);
/* Every id handed out from now on is >= the value returned. */
uint64_t md_seq_mark(md_db_t *db);

/* Durably records a write intent (an opaque descriptor of data about to be
 * written) and returns its id (> 0) in *out_id. The intent is dropped in the
 * batch that commits the data (md_object_put / md_part_put with that id) or
 * by md_intent_drop(); otherwise md_recover reclaims it. */
int md_intent_add(md_db_t *db, cm_slice intent, uint64_t *out_id);
/* Reclaims the intent's data (through the reclaim fn) and drops it. If the
 * reclaim fails, the intent is turned into a garbage record (retried by
 * md_gc and md_recover) and the reclaim's error is returned. */
int md_intent_drop(md_db_t *db, uint64_t id);

/* The settings (buckets, users and keys, grants, limits, bucket policies and
 * CORS, notification and logging configurations, functions, targets) as one
 * byte string, appended to out: for a copy kept away from this store
 * (settings.c has the encoding). import writes such a string back in one
 * batch (it overwrites same-named records and adds the rest); CM_ECORRUPT
 * without writing anything if it does not decode or names other records.
 * *out_n (may be NULL) receives the number of records written. */
int md_settings_export(md_db_t *db, cm_buf *out);
int md_settings_import(md_db_t *db, cm_slice in, size_t *out_n);

/* ---------------------------------------------------------------- buckets */
typedef struct md_bucket {
    char name[MD_BUCKET_MAX + 1];
    int64_t ctime_ms;
    char region[32];
} md_bucket;

int md_bucket_create(md_db_t *db, const md_bucket *b);       /* CM_EEXISTS */
int md_bucket_get(md_db_t *db, const char *name, md_bucket *out); /* CM_ENOTFOUND */
/* CM_ENOTFOUND, or CM_ENOTEMPTY while it holds objects or uploads. */
int md_bucket_delete(md_db_t *db, const char *name);
/* All buckets in name order. *out is malloc()ed (free with free()). */
int md_bucket_list(md_db_t *db, md_bucket **out, size_t *n);

/* ---------------------------------------------------------------- objects */
typedef struct md_kv {
    cm_slice name;  /* lowercase header name, e.g. "content-type", "x-amz-meta-a" */
    cm_slice value;
} md_kv;

/* An object record. For writes, the caller fills the slices with its own
 * memory. Records read from the store own their bytes: release them with
 * md_object_clear(). */
/* Where the bytes of a small object sit in the metadata's value log. */
typedef struct md_value_ref {
    uint32_t seg, len;
    uint64_t off, sum; /* sum: md__vsum of the bytes */
} md_value_ref;

typedef struct md_object {
    uint64_t size;        /* object size in bytes */
    int64_t mtime_ms;     /* last modified, ms since epoch */
    cm_slice etag;        /* without quotes: 32 hex, or 32 hex "-N" */
    md_kv *hdrs;          /* stored headers returned on GET/HEAD, in order */
    size_t nhdrs;
    cm_slice inline_data; /* the bytes, for small objects (layout empty) */
    cm_slice layout;      /* cs layout, for objects stored as shards */
    void *mem;            /* private: owns the bytes of a decoded record */
    md_value_ref vref;    /* private: where a stored record keeps its inline bytes
                           * in the value log (len 0: in the record); readers of
                           * md_object_get see inline_data and a zero vref */
} md_object;

void md_object_clear(md_object *o); /* frees owned bytes; zeroes o */
/* Finds a stored header by lowercase name; returns 0 and *out or CM_ENOTFOUND. */
int md_object_hdr(const md_object *o, const char *name, cm_slice *out);

/* Called with the object's current record (NULL if there is none) while its
 * key is locked; return 0 to go on or a CM_E* code to abort the change (the
 * code is returned by the mutating call). */
typedef int (*md_precond_fn)(void *arg, const md_object *cur);

/* The write batch of a change being committed, handed to hooks so that
 * records that must commit with the change (event outbox, change log,
 * usage counters) land in the same batch. Opaque. */
typedef struct md_batch md_batch_t;

/* Called under the key lock after the precondition passed, with the current
 * record (NULL if none) and the new one (NULL for a delete). May add records
 * to b through the md_* appenders that take an md_batch_t; returns 0 or a
 * CM_E* code that aborts the change. */
typedef int (*md_hook_fn)(void *arg, md_batch_t *b, const md_object *cur, const md_object *next);

typedef struct md_write_opts {
    md_precond_fn precond; /* may be NULL */
    void *precond_arg;
    md_hook_fn hook;       /* may be NULL */
    void *hook_arg;
    uint64_t intent2;      /* another intent dropped in the same batch (0: none), e.g.
                            * the object manifest's, besides the call's intent_id */
} md_write_opts;

/* A fresh sequence number for a record added by a hook: unique, increasing
 * in commit order for changes to the same key, and across restarts. */
uint64_t md_batch_seq(md_batch_t *b);

/* Creates or replaces bucket/key. In one batch: the record, the drop of
 * intent_id (0 for none), and a garbage record for the replaced object's
 * layout (reclaimed after the commit). CM_ENOTFOUND if the bucket does not
 * exist. precond may be NULL. */
int md_object_put(md_db_t *db, const char *bucket, cm_slice key, const md_object *obj,
                  uint64_t intent_id, md_precond_fn precond, void *arg);
/* The same with a hook (opts may be NULL). */
int md_object_put_ex(md_db_t *db, const char *bucket, cm_slice key, const md_object *obj,
                     uint64_t intent_id, const md_write_opts *opts);
int md_object_delete_ex(md_db_t *db, const char *bucket, cm_slice key,
                        const md_write_opts *opts);
/* Reads bucket/key into *out (owned; md_object_clear it). CM_ENOTFOUND. */
int md_object_get(md_db_t *db, const char *bucket, cm_slice key, md_object *out);
/* Deletes bucket/key; its layout becomes garbage. CM_ENOTFOUND if absent
 * (precond still sees NULL first). */
int md_object_delete(md_db_t *db, const char *bucket, cm_slice key, md_precond_fn precond,
                     void *arg);

/* Listing, in key order, with S3 semantics for prefix, delimiter and
 * start_after (exclusive). With a delimiter, keys that share prefix +
 * anything + delimiter are rolled into one common-prefix entry and the scan
 * seeks past them (never iterates them). A start_after inside a common
 * prefix's range that equals or lies within it skips that prefix. max_keys
 * counts keys and common prefixes together. */
typedef struct md_list_req {
    const char *bucket;
    cm_slice prefix;
    cm_slice delimiter; /* n == 0 for none */
    cm_slice start_after;
    size_t max_keys;
} md_list_req;

typedef struct md_list_ent {
    cm_slice key;      /* the key, or the common prefix */
    bool is_prefix;    /* true for a common prefix (obj is empty) */
    md_object obj;     /* size, mtime, etag, hdrs (no inline data, no layout) */
} md_list_ent;

typedef struct md_list_res {
    md_list_ent *a;
    size_t n;
    bool truncated;    /* more entries follow the last one returned */
    void *mem;         /* private */
} md_list_res;

/* Visits object records in (bucket, key) order, starting strictly after
 * (after_bucket, after_key) (after_bucket NULL: from the first), at most
 * max of them, each whole (layout included, and inline data that sits in
 * the record itself: bytes in the value log are not read; valid during the
 * call only). *more is set when records remain after the last one
 * visited. fn's nonzero return stops the scan and is returned. For walks
 * over the whole store (heal, scrub): cheap to resume in batches. */
typedef int (*md_scan_fn)(void *arg, const char *bucket, cm_slice key, const md_object *obj);
int md_object_scan(md_db_t *db, const char *after_bucket, cm_slice after_key, size_t max,
                   md_scan_fn fn, void *arg, bool *more);
/* The record codec, for copies kept outside LevelDB (object manifests on
 * storage nodes). encode appends to b; decode copies: release with
 * md_object_clear(). */
int md_object_encode(cm_buf *b, const md_object *o);
int md_object_decode(cm_slice v, md_object *out);

/* CM_ENOTFOUND if the bucket does not exist. Free with md_list_res_free(). */
int md_object_list(md_db_t *db, const md_list_req *req, md_list_res *out);
void md_list_res_free(md_list_res *res);

/* -------------------------------------------------------------- multipart */
typedef struct md_upload {
    cm_slice key;
    cm_slice upload_id;
    int64_t ctime_ms;
    md_object tmpl;    /* headers given at CreateMultipartUpload (hdrs only) */
    void *mem;         /* private */
} md_upload;

typedef struct md_part {
    uint32_t num;      /* 1..10000 */
    uint64_t size;
    int64_t mtime_ms;
    cm_slice etag;     /* 32 hex, no quotes */
    cm_slice cksum;    /* "algo:base64" or empty */
    cm_slice layout;   /* cs layout of the part's data (parts are never inline) */
} md_part;

/* Creates an upload; tmpl->hdrs are kept for the final object. */
int md_upload_create(md_db_t *db, const char *bucket, cm_slice key, cm_slice upload_id,
                     const md_object *tmpl);
/* Reads an upload (owned: md_upload_clear). CM_ENOTFOUND. */
int md_upload_get(md_db_t *db, const char *bucket, cm_slice key, cm_slice upload_id,
                  md_upload *out);
void md_upload_clear(md_upload *u);
/* Stores a part (replacing one with the same number, whose layout becomes
 * garbage), dropping intent_id in the same batch. CM_ENOTFOUND if the upload
 * does not exist (the intent is then left to the caller). */
int md_part_put(md_db_t *db, const char *bucket, cm_slice key, cm_slice upload_id,
                const md_part *part, uint64_t intent_id);
/* Parts with num > after, in order, at most max. *out is one malloc()ed block
 * (free with free(); the slices point inside it). */
int md_part_list(md_db_t *db, const char *bucket, cm_slice key, cm_slice upload_id,
                 uint32_t after, size_t max, md_part **out, size_t *n, bool *truncated);
/* In one batch: puts obj at bucket/key (precond as for md_object_put), drops
 * the upload and all its parts; the layouts of parts not listed in keep[]
 * and of a replaced object become garbage. CM_ENOTFOUND if no such upload. */
int md_upload_complete(md_db_t *db, const char *bucket, cm_slice key, cm_slice upload_id,
                       const md_object *obj, const uint32_t *keep, size_t nkeep,
                       md_precond_fn precond, void *arg);
int md_upload_complete_ex(md_db_t *db, const char *bucket, cm_slice key, cm_slice upload_id,
                          const md_object *obj, const uint32_t *keep, size_t nkeep,
                          const md_write_opts *opts);
/* Drops the upload and its parts; all part layouts become garbage. */
int md_upload_abort(md_db_t *db, const char *bucket, cm_slice key, cm_slice upload_id);

/* Uploads of a bucket in (key, upload id) order, with prefix, optional
 * delimiter (common prefixes as in md_object_list, returned with
 * is_prefix-like semantics through out_prefixes), after the marker pair. */
typedef struct md_upload_list_res {
    md_upload *a;      /* uploads (tmpl hdrs included) */
    size_t n;
    cm_slice *prefixes; /* common prefixes */
    size_t nprefixes;
    bool truncated;
    void *mem;         /* private */
} md_upload_list_res;
int md_upload_list(md_db_t *db, const char *bucket, cm_slice prefix, cm_slice delimiter,
                   cm_slice key_marker, cm_slice upload_id_marker, size_t max,
                   md_upload_list_res *out);
void md_upload_list_res_free(md_upload_list_res *res);

/* ------------------------------------------------- access (creds.c, policy.c)
 * Users and their keys, per-user grants, bucket policies, CORS
 * configurations and rate limits. Secrets are stored in the clear because
 * SigV4 verification needs the plain secret: the server keeps the database
 * directory at mode 0700 (doc/access.md).
 * Callers must cm_wipe() every md_user they read once done with it. */
#define MD_USER_NAME_MAX 64
#define MD_ACCESS_KEY_MAX 32
#define MD_SECRET_MAX 64

typedef struct md_user {
    char name[MD_USER_NAME_MAX + 1];         /* [A-Za-z0-9._@+=-], 1..64 bytes */
    char access_key[MD_ACCESS_KEY_MAX + 1];  /* unique among users */
    char secret[MD_SECRET_MAX + 1];          /* plain secret (never logged) */
    bool enabled;                            /* false: the key is refused */
    int64_t ctime_ms;                        /* created, ms since epoch */
} md_user;

/* Validates a user name: 0 or CM_EINVAL. */
int md_user_check_name(const char *name);
/* Creates a user. CM_EEXISTS if the name or the access key is taken,
 * CM_EINVAL on a bad name, key or secret. Thread-safe. */
int md_user_create(md_db_t *db, const md_user *u);
/* Reads a user by name / by access key into *out. CM_ENOTFOUND. */
int md_user_get(md_db_t *db, const char *name, md_user *out);
int md_user_by_key(md_db_t *db, const char *access_key, md_user *out);
/* Sets the enabled flag. CM_ENOTFOUND. */
int md_user_set_enabled(md_db_t *db, const char *name, bool enabled);
/* Removes the user, its key and all its grants in one batch. CM_ENOTFOUND. */
int md_user_delete(md_db_t *db, const char *name);
/* All users in name order, secrets left empty. *out is malloc()ed (free()). */
int md_user_list(md_db_t *db, md_user **out, size_t *n);

/* What a grant allows on a bucket (bits; doc/access.md has the op table). */
#define MD_ALLOW_READ 0x1u   /* GetObject, HeadObject */
#define MD_ALLOW_WRITE 0x2u  /* Put/Copy/Delete objects, multipart uploads */
#define MD_ALLOW_LIST 0x4u   /* ListObjects*, ListMultipartUploads, HeadBucket */
#define MD_ALLOW_ADMIN 0x8u  /* all of the above and bucket configuration */

typedef struct md_grant {
    char user[MD_USER_NAME_MAX + 1];
    char bucket[MD_BUCKET_MAX + 1];  /* a bucket name, or "*" for every bucket */
    uint32_t allow;                  /* MD_ALLOW_* bits */
} md_grant;

/* Sets (replaces) the user's grant on bucket; allow == 0 removes it.
 * CM_ENOTFOUND if the user does not exist (or, for allow == 0, the grant). */
int md_grant_set(md_db_t *db, const char *user, const char *bucket, uint32_t allow);
/* The allow bits of user on bucket (0 when none). */
int md_grant_get(md_db_t *db, const char *user, const char *bucket, uint32_t *out);
/* Grants of one user (user != NULL) or of all, in (user, bucket) order.
 * *out is malloc()ed (free()). */
int md_grant_list(md_db_t *db, const char *user, md_grant **out, size_t *n);

/* Opaque per-bucket documents: the bucket policy (JSON) and the CORS
 * configuration (XML), validated by the gateway before they are put.
 * get fills *out (reset first) or returns CM_ENOTFOUND. */
enum md_bucket_doc { MD_DOC_POLICY = 'p', MD_DOC_CORS = 'c' };
int md_bucket_doc_put(md_db_t *db, enum md_bucket_doc kind, const char *bucket, cm_slice doc);
int md_bucket_doc_get(md_db_t *db, enum md_bucket_doc kind, const char *bucket, cm_buf *out);
int md_bucket_doc_delete(md_db_t *db, enum md_bucket_doc kind, const char *bucket);

/* Rate limits: a token bucket per access key or per bucket. */
enum md_limit_kind { MD_LIMIT_KEY = 'k', MD_LIMIT_BUCKET = 'b' };
typedef struct md_limit {
    enum md_limit_kind kind;
    char name[129];  /* the access key (the root's may be 128 bytes) or the bucket */
    uint32_t rps;    /* sustained requests per second, > 0 */
    uint32_t burst;  /* bucket size, >= 1 */
} md_limit;

int md_limit_set(md_db_t *db, const md_limit *l);  /* creates or replaces */
int md_limit_delete(md_db_t *db, enum md_limit_kind kind, const char *name); /* CM_ENOTFOUND */
/* Every limit, keys first. *out is malloc()ed (free()). */
int md_limit_list(md_db_t *db, md_limit **out, size_t *n);

/* ----------------------------------------------------------------- events */
/* Records of the events part (events/): configuration blobs, the durable
 * outbox of events waiting for delivery, dead letters and the per-bucket
 * change log. Values are opaque bytes to metadata; events/ encodes them.
 * Keys: doc/metadata-keys.md ('E' family). Thread-safe like the rest. */

/* Kinds of configuration blob, each keyed by a name. */
enum md_evt_kind {
    MD_EVT_NOTIFY = 'N',   /* a bucket's notification configuration (name = bucket) */
    MD_EVT_FUNCTION = 'F', /* a function definition (name = function name) */
    MD_EVT_TARGET = 'T',   /* a delivery target definition (name = target name) */
};

/* Stores (replacing) the blob of kind/name with one sync write. name is a
 * C string of 1..255 bytes. Returns 0, CM_EINVAL or an I/O error. */
int md_evt_conf_put(md_db_t *db, enum md_evt_kind kind, const char *name, cm_slice val);
/* Deletes kind/name; CM_ENOTFOUND if it was absent. */
int md_evt_conf_delete(md_db_t *db, enum md_evt_kind kind, const char *name);
/* Calls fn for every blob of kind in name order; fn's slices are valid
 * during the call only, name is NUL-terminated. A non-zero return of fn
 * stops the scan and is returned. */
typedef int (*md_evt_conf_fn)(void *arg, const char *name, cm_slice val);
int md_evt_conf_scan(md_db_t *db, enum md_evt_kind kind, md_evt_conf_fn fn, void *arg);

/* Outbox. Appends a pending event (id seq, from md_batch_seq) to the batch
 * of a change, from inside its hook: it commits with the change or not at
 * all. Returns 0 or CM_ENOMEM. */
int md_outbox_add(md_batch_t *b, uint64_t seq, cm_slice rec);
/* Appends a change-log entry of bucket (id seq) to the batch of a change. */
int md_changelog_add(md_batch_t *b, const char *bucket, uint64_t seq, cm_slice rec);

/* Forgets a delivered event (non-sync: a lost delete means a redelivery). */
int md_outbox_done(md_db_t *db, uint64_t seq);
/* The same for n events (seqs borrowed) in one batch that rides with the
 * next group of sync writes (returns before it is written). */
int md_outbox_done_many(md_db_t *db, const uint64_t *seqs, size_t n);
/* Rewrites a pending event in place (attempt count; non-sync). */
int md_outbox_update(md_db_t *db, uint64_t seq, cm_slice rec);
/* The same for n events (seqs[i] with recs[i]) in one non-sync batch.
 * Inputs borrowed. 0 or an I/O error. */
int md_outbox_update_many(md_db_t *db, const uint64_t *seqs, const cm_slice *recs, size_t n);
/* In one sync batch: drops pending seq and stores rec as dead letter seq. */
int md_outbox_bury(md_db_t *db, uint64_t seq, cm_slice rec);
/* The same for n events (seqs[i] with recs[i]) in one sync batch; events
 * no longer pending are skipped. Inputs borrowed. 0 or an I/O error. */
int md_outbox_bury_many(md_db_t *db, const uint64_t *seqs, const cm_slice *recs, size_t n);
/* In one sync batch: drops dead letter seq and stores rec as pending seq.
 * CM_ENOTFOUND if there is no such dead letter. */
int md_outbox_revive(md_db_t *db, uint64_t seq, cm_slice rec);
/* Reads pending (dead = false) or dead-lettered event seq into out
 * (malloc()ed; cm_buf_free). CM_ENOTFOUND. */
int md_outbox_get(md_db_t *db, bool dead, uint64_t seq, cm_buf *out);

/* Calls fn for pending (dead = false) or dead events with seq > after, in
 * seq order. fn's rec is valid during the call only; a non-zero return
 * stops the scan and is returned (use 1 to stop without an error). */
typedef int (*md_seq_fn)(void *arg, uint64_t seq, cm_slice rec);
int md_outbox_scan(md_db_t *db, bool dead, uint64_t after, md_seq_fn fn, void *arg);
/* The same over the change log of bucket. */
int md_changelog_scan(md_db_t *db, const char *bucket, uint64_t after, md_seq_fn fn, void *arg);
/* Retention: for each bucket's change log in seq order, deletes leading
 * entries while expired(arg, rec) says true, then skips to the next bucket.
 * *out_n (may be NULL) receives the number of entries deleted. */
typedef bool (*md_expired_fn)(void *arg, cm_slice rec);
int md_changelog_trim(md_db_t *db, md_expired_fn expired, void *arg, size_t *out_n);

/* ---------------------------------------------------------- usage (usage.c)
 * Usage metering storage (doc/metadata-keys.md, doc/billing.md). A request
 * record is written before the request's response is queued (md_usage_add,
 * or md_usage_add_batch in the batch of the change it made), so a crash of
 * the process loses no answered request. md_usage_fold turns pending records into
 * hourly counters keyed (hour, bucket, access key, operation, status class)
 * and integrates storage deltas into byte-hours; it is the only writer of
 * counters and is serialised inside. All calls are thread-safe. */
typedef struct md_usage_req {
    int64_t ms;             /* when, ms since epoch (selects the hour) */
    const char *bucket;     /* "" when the request names none */
    const char *access_key; /* "" for anonymous requests */
    const char *op;         /* operation name, < 64 bytes */
    uint8_t cls;            /* billing class code (opaque here) */
    uint16_t status;        /* HTTP status */
    uint64_t requests;      /* 1, or 0 for a correction */
    uint64_t billable;      /* 0 or 1 */
    uint64_t bytes_in;      /* decoded request body bytes */
    int64_t bytes_out;      /* response body bytes; negative in a correction */
} md_usage_req;

/* Writes one pending request record: without sync, appended to the usage
 * journal DIR/usage/journal.<n> with one write(2) (in the kernel on return;
 * no lock but a shared rwlock); with sync, in its own LevelDB batch, fsync'd
 * (the writer joins LevelDB's group commit). 0 or a CM_E* code. */
int md_usage_add(md_db_t *db, const md_usage_req *u, bool sync);
/* Adds a pending request record to a change's batch (from a write hook). */
int md_usage_add_batch(md_batch_t *b, const md_usage_req *u);
/* Adds a storage delta of bucket (bytes and objects, may be negative) at ms
 * to a change's batch (from a write hook). */
int md_usage_storage_delta(md_batch_t *b, const char *bucket, int64_t ms, int64_t dbytes,
                           int64_t dobjects);
/* Both in one record: the storage delta and the request record of the
 * change (a PUT's), which the fold counts as md_usage_add_batch's. */
int md_usage_storage_delta_req(md_batch_t *b, const char *bucket, int64_t ms, int64_t dbytes,
                               int64_t dobjects, const md_usage_req *u);
/* Folds every pending record (journals before the current one, after
 * switching writers to a new one, and LevelDB records) into counters and
 * storage state (atomic batches; a folded journal leaves a marker in its
 * batch so it is never counted twice). *out_n (may be NULL) gets the number
 * of records folded. */
int md_usage_fold(md_db_t *db, size_t *out_n);

typedef struct md_usage_ctr {
    int64_t hour;                    /* hours since the epoch */
    char bucket[MD_BUCKET_MAX + 1];
    char access_key[133];
    char op[64];
    uint8_t status_class;            /* 2 for 2xx ... 5 for 5xx */
    uint8_t cls;                     /* as recorded */
    uint64_t requests, billable, bytes_in, bytes_out;
} md_usage_ctr;
/* Calls fn for each counter with from_hour <= hour < to_hour, in key order
 * (hour, bucket, key, op, status class); a non-zero return stops the scan and
 * is returned. Counters only: fold first for an exact view. */
typedef int (*md_usage_fn)(void *arg, const md_usage_ctr *c);
int md_usage_scan(md_db_t *db, int64_t from_hour, int64_t to_hour, md_usage_fn fn, void *arg);

/* A bucket's folded storage: bytes and objects now, and when they last
 * changed (the byte-hours after last_ms are bytes * elapsed time). */
typedef struct md_storage_state {
    char bucket[MD_BUCKET_MAX + 1];
    uint64_t bytes, objects;
    int64_t last_ms;
} md_storage_state;
/* Every bucket's state in name order. *out is malloc()ed (free()). */
int md_storage_list(md_db_t *db, md_storage_state **out, size_t *n);
/* Calls fn with the byte-hours stored per (hour, bucket) for from_hour <=
 * hour < to_hour, integrated up to each bucket's last change. */
typedef int (*md_storage_fn)(void *arg, int64_t hour, const char *bucket, double byte_hours);
int md_storage_scan(md_db_t *db, int64_t from_hour, int64_t to_hour, md_storage_fn fn, void *arg);

/* Bucket logging (PutBucketLogging): where a bucket's access log lines go. */
typedef struct md_logging {
    char target_bucket[MD_BUCKET_MAX + 1];
    char target_prefix[MD_KEY_MAX + 1];
} md_logging;
typedef struct md_logging_ent {
    char bucket[MD_BUCKET_MAX + 1];  /* the logged bucket */
    md_logging cfg;
} md_logging_ent;
/* Sets bucket's configuration, or removes it when l is NULL. */
int md_logging_put(md_db_t *db, const char *bucket, const md_logging *l);
int md_logging_get(md_db_t *db, const char *bucket, md_logging *out); /* CM_ENOTFOUND */
/* Every configuration. *out is malloc()ed (free()). */
int md_logging_list(md_db_t *db, md_logging_ent **out, size_t *n);

#endif
