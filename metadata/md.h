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

/* Durably records a write intent (an opaque descriptor of data about to be
 * written) and returns its id (> 0) in *out_id. The intent is dropped in the
 * batch that commits the data (md_object_put / md_part_put with that id) or
 * by md_intent_drop(); otherwise md_recover reclaims it. */
int md_intent_add(md_db_t *db, cm_slice intent, uint64_t *out_id);
/* Reclaims the intent's data (through the reclaim fn) and drops it. */
int md_intent_drop(md_db_t *db, uint64_t id);

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
typedef struct md_object {
    uint64_t size;        /* object size in bytes */
    int64_t mtime_ms;     /* last modified, ms since epoch */
    cm_slice etag;        /* without quotes: 32 hex, or 32 hex "-N" */
    md_kv *hdrs;          /* stored headers returned on GET/HEAD, in order */
    size_t nhdrs;
    cm_slice inline_data; /* the bytes, for small objects (layout empty) */
    cm_slice layout;      /* cs layout, for objects stored as shards */
    void *mem;            /* private: owns the bytes of a decoded record */
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

#endif
