/* gateway/gw_int.h - what the gateway's files share: the request and the
 * server context, the operation table, error and XML helpers, handler
 * prototypes. Private to gateway/; gateway/gw.h is the public face. */
#ifndef GW_INT_H
#define GW_INT_H

#include "billing/bill.h"
#include "chunkstore/cs.h"
#include "common/cm.h"
#include "gateway/gw.h"
#include "metadata/md.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define GW_XML_MAX (1u << 20)            /* largest XML request body we buffer */
#define GW_MAX_OBJECT (5ull << 40)       /* 5 TiB */
#define GW_MAX_PUT (5ull << 30)          /* single PUT / part: 5 GiB */
#define GW_MIN_PART (5u << 20)           /* 5 MiB, all but the last part */
#define GW_MAX_PARTS 10000
#define GW_META_MAX 2048                 /* x-amz-meta-* total bytes */

/* ------------------------------------------------------------- the server */
struct gw_server {
    gw_config cfg;        /* copied at start; strings owned by the caller of gw_start */
    md_db_t *md;
    cs_store_t *cs;
    size_t inline_max;    /* objects up to this size are stored in the record */
    char owner_id[65];    /* canonical id of the root owner (hex) */
    char owner_name[64];
    void *http;           /* http.c's daemon */
    pthread_mutex_t refs_lock; /* guards refs and deferred */
    struct gw_ref *refs;  /* layouts being read: hash -> count */
    size_t nrefs, caprefs;
    struct gw_deferred *deferred; /* garbage whose data is still being read */
    char secret_key[128]; /* root credentials (never logged) */
    char access_key[128];
    struct gw_obs *obs;   /* usage meter, access log, log delivery (observe.c) */
    struct gw_ratelimit *rl; /* rate limit settings and token buckets (ratelimit.c) */
    struct evt *evt;      /* bucket notifications and functions (events_glue.c) */
    char evt_endpoint[256]; /* URL functions reach this server by */
    struct gw_upkeep *up; /* heal walks, scrub, garbage retries (upkeep.c) */
    uint64_t intents_mark; /* intents below this id are from an earlier run */
};
typedef struct gw_server gw_server;

/* ------------------------------------------------------------- operations */
enum gw_body_kind { GW_BODY_NONE, GW_BODY_XML, GW_BODY_STREAM };

typedef struct gw_req gw_req;

enum gw_op {
#define OP(name, body, begin, data, end, abort) GW_OP_##name,
#include "gateway/ops.def"
#undef OP
    GW_OP__COUNT
};

typedef struct gw_op_def {
    const char *name;
    enum gw_body_kind body;
    int (*begin)(gw_req *r);                                /* 0 or an S3 error already set */
    int (*data)(gw_req *r, const uint8_t *p, size_t n);     /* decoded body bytes */
    void (*end)(gw_req *r);                                 /* build the response */
    void (*abort)(gw_req *r);                               /* body failed checks: undo */
} gw_op_def;
extern const gw_op_def gw_ops[GW_OP__COUNT];

/* ----------------------------------------------------------------- errors */
enum s3_err {
    S3E__NONE = 0,
#define S3E(name, status, msg) S3E_##name,
#include "gateway/s3_errors.def"
#undef S3E
    S3E__COUNT
};
int gw_s3err_status(enum s3_err e);
const char *gw_s3err_code(enum s3_err e);
const char *gw_s3err_message(enum s3_err e);
/* The only translation from internal CM_E* codes to S3 errors. */
enum s3_err gw_s3err_from_cm(int cm_err, enum s3_err not_found);

/* ---------------------------------------------------------------- request */
typedef struct gw_kv {
    cm_slice name;
    cm_slice value;
    bool has_value; /* for query params: "?acl" has none */
} gw_kv;

typedef ssize_t (*gw_stream_fn)(void *ctx, uint64_t pos, uint8_t *buf, size_t max);

struct gw_req {
    cm_pool *pool;        /* lives as long as the request */
    gw_server *srv;
    char id[20];          /* x-amz-request-id */
    char host_id[48];     /* x-amz-id-2 */
    enum gw_op op;
    int64_t start_ms;

    /* what the client sent */
    cm_slice method;
    cm_slice raw_path;    /* still percent-encoded, no query */
    cm_slice raw_query;   /* no '?' */
    gw_kv *hdrs;          /* request headers as received */
    size_t nhdrs;
    gw_kv *params;        /* decoded query parameters, in order */
    size_t nparams;
    cm_slice host;        /* effective host (X-Forwarded-Host if trusted) */
    const char *peer;     /* client address */

    /* addressing */
    char bucket[64];      /* "" when the request names no bucket */
    bool bucket_invalid;  /* the name can never be a bucket (too long, bad escape) */
    cm_slice key;         /* decoded key; n == 0 when none */
    bool has_key;

    /* authentication */
    bool anonymous;
    bool root;            /* signed with the root credentials */
    char user[65];        /* the user whose key signed the request ("" for root/anonymous) */
    char access_key[132];
    int evt_depth;        /* recursion depth of events this request causes (auth.c) */
    void *auth;           /* auth.c state (payload verification) */

    /* body */
    bool has_length;
    uint64_t content_length;   /* Content-Length (or x-amz-decoded-content-length) */
    uint64_t body_n;           /* decoded body bytes seen so far */
    cm_buf body;               /* XML bodies */
    void *op_ctx;              /* handler's state for STREAM ops */

    /* the response */
    int status;
    enum s3_err err;           /* set => error response */
    const char *err_msg;       /* overrides the default message */
    cm_buf err_extra;          /* extra XML elements inside <Error> */
    cm_buf resp_hdrs;          /* "Name\0Value\0" pairs */
    cm_buf resp_body;
    cm_slice resp_ref;         /* set: the body instead of resp_body, borrowed from
                                  what the request owns (an inline object's data);
                                  cleared by gw_error_render */
    const char *content_type;  /* of resp_body; default application/xml when body is set */
    gw_stream_fn stream;       /* streamed body (GET) instead of resp_body */
    void *stream_ctx;
    uint64_t stream_len;
    void (*stream_free)(void *ctx);
    bool head_only;            /* HEAD: headers as for GET, no body */
    uint64_t bytes_out;        /* response body bytes handed to the connection */
    bool completed;            /* the response went out whole */

    /* usage (observe.c) */
    bool accounted;            /* its usage record is durable (gw_account) */
    bool acct_in_batch;        /* ... it was written in the object's commit batch */
    int64_t acct_out;          /* response bytes that record counted */
    int64_t resp_ms;           /* when the response was queued */
    void *evt;                 /* the event the next commit causes (events_glue.c) */
};

/* Called once per request after its response went out (or the client went
 * away): usage counting, access log, metrics (observe.c). */
void gw_observe(gw_req *r);
/* Called by http.c right before a response is queued: writes the request's
 * usage record durably (group-committed with concurrent requests) so that
 * an answered request survives a kill -9. Idempotent. */
void gw_account(gw_req *r);
/* The md_hook_fn of every object commit (arg: the gw_req, whose bucket is
 * the object's): adds the storage delta and, for PutObject, the request's
 * usage record to the change's batch. Events add their outbox record here. */
int gw_commit_hook(void *arg, md_batch_t *b, const md_object *cur, const md_object *next);
/* Start and stop of the usage meter, access log and log delivery
 * (observe.c; called by server.c). */
int gw_observe_start(gw_server *srv);
void gw_observe_stop(gw_server *srv);

/* Metrics (metrics.c): process-wide counters, lock-free. */
void gw_metrics_request(enum gw_op op, int status, uint64_t bytes_in, uint64_t bytes_out,
                        double seconds);
/* The event queue depth shown as cairn_event_queue_depth (0 until set). */
void gw_metrics_set_event_queue_depth(uint64_t n);
/* Appends the Prometheus text exposition to out. */
void gw_metrics_render(gw_server *srv, cm_buf *out);

/* Access log (access_log.c): S3 server access log lines in DIR/logs. */
typedef struct gw_alog gw_alog;
/* Opens dir/access.log for appending; rotates it to access.log.TIMESTAMP
 * when it reaches max_bytes or is older than max_age_s, keeping keep old
 * files. Returns 0 and *out or a CM_E* code. */
int gw_alog_open(const char *dir, uint64_t max_bytes, unsigned max_age_s, unsigned keep,
                 gw_alog **out);
void gw_alog_close(gw_alog *l); /* NULL is a no-op */
/* Appends r's log line (with '\n') to line. Never secrets: no
 * Authorization header, and X-Amz-Signature/-Security-Token values are
 * replaced in the request URI. */
void gw_alog_format(gw_req *r, cm_buf *line);
/* Writes one line (one write(2), rotating first when due). Thread-safe. */
void gw_alog_write(gw_alog *l, cm_slice line);

/* Bucket logging (s3_logging.c): PutBucketLogging/GetBucketLogging and
 * delivery of a bucket's log lines as objects into its target bucket. */
void gw_put_bucket_logging(gw_req *r);
void gw_get_bucket_logging(gw_req *r);
typedef struct gw_logship gw_logship;
int gw_logship_start(gw_server *srv, unsigned interval_s, gw_logship **out);
/* Delivers what is pending, then stops. NULL is a no-op. */
void gw_logship_stop(gw_logship *ls);
/* Queues a log line of bucket for delivery if its logging is enabled. */
void gw_logship_add(gw_logship *ls, const char *bucket, cm_slice line);
/* Delivers every pending line now (tests, shutdown). */
void gw_logship_flush(gw_logship *ls);
/* The server's delivery state, NULL before gw_observe_start (observe.c). */
gw_logship *gw_logship_of(gw_server *srv);

/* Events (events_glue.c, s3_notify.c, admin_events.c). Start/stop of the
 * events part (server.c). Object handlers bracket each md commit with
 * gw_evt_begin(r, EVT_* type, key) and gw_evt_end(r, rc); gw_commit_hook
 * calls gw_evt_hook, which stages the change's outbox and change-log
 * records in its batch. */
int gw_evt_start(gw_server *srv);
void gw_evt_stop(gw_server *srv);
void gw_evt_begin(gw_req *r, uint32_t type, cm_slice key);
int gw_evt_hook(gw_req *r, md_batch_t *b, const md_object *cur, const md_object *next);
void gw_evt_end(gw_req *r, int rc);
/* Forgets a deleted bucket's notification configuration. */
void gw_evt_bucket_deleted(gw_server *srv, const char *bucket);
/* Session keys given to function runs: 0 and the secret (>= 41 bytes) and
 * the run's depth when ak is a valid, unexpired one; CM_ENOTFOUND if not. */
int gw_evt_session_secret(gw_server *srv, const char *ak, char *sk /* OUT */,
                          int *depth /* OUT */);
void gw_put_bucket_notification(gw_req *r);
void gw_get_bucket_notification(gw_req *r);
void gw_admin_functions(gw_req *r, cm_slice rest);
void gw_admin_targets(gw_req *r, cm_slice rest);
void gw_admin_events(gw_req *r, cm_slice rest);

/* Admin group "usage" (admin_usage.c): the usage report. */
void gw_admin_usage(gw_req *r, cm_slice rest);

/* Request helpers (http.c / router.c). Header lookup is case-insensitive;
 * returns true and *out when present. */
bool gw_hdr(const gw_req *r, const char *name, cm_slice *out);
/* NUL-terminated copy of a header from the pool, or NULL if absent. */
const char *gw_hdr_str(gw_req *r, const char *name);
bool gw_param(const gw_req *r, const char *name, cm_slice *out);
bool gw_param_has(const gw_req *r, const char *name);
const char *gw_param_str(gw_req *r, const char *name);

/* Readers pin the layout they stream so that an overwrite or delete that
 * commits meanwhile defers freeing its data until the last reader is done
 * (server.c). Thread-safe. */
void gw_layout_ref(gw_server *srv, cm_slice layout);
void gw_layout_unref(gw_server *srv, cm_slice layout);

/* The HTTP daemon (http.c). */
int gw_http_start(gw_server *srv, const char *listen_addr);
void gw_http_stop(gw_server *srv);

/* Names r->op from method, host, path, query and headers (router.c);
 * -1 with an error set when the request cannot be routed. */
int gw_route(gw_req *r);

/* Response helpers. */
void gw_set_hdr(gw_req *r, const char *name, const char *value);
void gw_set_hdr_slice(gw_req *r, const char *name, cm_slice value);
/* Sets an S3 error response (status from the table). Keeps the first one. */
void gw_error(gw_req *r, enum s3_err e);
void gw_error_msg(gw_req *r, enum s3_err e, const char *msg);
/* Adds <Name>value</Name> (escaped) to the error body. */
void gw_error_extra(gw_req *r, const char *name, cm_slice value);
/* Renders the <Error> document for r into r->resp_body. */
void gw_error_render(gw_req *r);

/* ------------------------------------------------------------ XML (xml.c) */
/* Response writer: appends to a cm_buf; text is escaped. */
void gw_xml_start(cm_buf *b, const char *root);           /* <?xml ...?><root xmlns=...> */
void gw_xml_open(cm_buf *b, const char *name);
void gw_xml_close(cm_buf *b, const char *name);
void gw_xml_elem(cm_buf *b, const char *name, const char *text);
void gw_xml_elem_slice(cm_buf *b, const char *name, cm_slice text);
void gw_xml_elem_u64(cm_buf *b, const char *name, uint64_t v);
void gw_xml_elem_time(cm_buf *b, const char *name, int64_t ms); /* ISO 8601 with ms */
void gw_xml_escape(cm_buf *b, cm_slice text);

/* Request parsing: a tiny DOM over libxml2. Parse returns NULL on
 * malformed XML (caller answers MalformedXML). Nodes and text are owned by
 * the document; free with gw_xml_doc_free. */
typedef struct gw_xnode gw_xnode;
struct gw_xnode {
    const char *name;      /* local name, namespace ignored */
    cm_slice text;         /* concatenated text content of this element */
    gw_xnode *child;       /* first child element */
    gw_xnode *next;        /* next sibling element */
};
gw_xnode *gw_xml_parse(cm_slice body, void **doc_out);
void gw_xml_doc_free(void *doc);
gw_xnode *gw_xml_child(gw_xnode *n, const char *name);   /* first child named */

/* --------------------------------------------------------- auth (auth.c) */
/* Authenticates the request from its headers/query (called once headers are
 * in). Sets r->err on failure. Sets up payload verification for the body. */
int gw_auth_begin(gw_req *r);
/* Feeds raw body bytes; decoded payload is passed to sink. */
int gw_auth_body(gw_req *r, const uint8_t *p, size_t n,
                 int (*sink)(gw_req *r, const uint8_t *p, size_t n));
/* End of body: verifies payload hash, chunk signatures, Content-MD5 and
 * x-amz-checksum-*. 0 or an error set on r. */
int gw_auth_end(gw_req *r);
/* After gw_auth_end succeeded: the body's MD5 (16 bytes) and, when the
 * client sent or asked for one, its checksum header name and base64 value. */
const uint8_t *gw_auth_md5(gw_req *r);
bool gw_auth_checksum(gw_req *r, const char **name, const char **value_b64);
/* Releases auth state (called when the request ends). */
void gw_auth_free(gw_req *r);

/* --------------------------------------------------- handlers (s3_*.c) */
void gw_list_buckets(gw_req *r);
void gw_create_bucket(gw_req *r);
void gw_head_bucket(gw_req *r);
void gw_delete_bucket(gw_req *r);
void gw_get_bucket_location(gw_req *r);
void gw_get_bucket_versioning(gw_req *r);
void gw_list_objects(gw_req *r);
void gw_list_objects_v2(gw_req *r);
void gw_list_object_versions(gw_req *r);
void gw_list_multipart_uploads(gw_req *r);
void gw_delete_objects(gw_req *r);
int gw_put_object_begin(gw_req *r);
int gw_put_object_data(gw_req *r, const uint8_t *p, size_t n);
void gw_put_object_end(gw_req *r);
void gw_put_object_abort(gw_req *r);
void gw_get_object(gw_req *r);
void gw_delete_object(gw_req *r);
void gw_copy_object(gw_req *r);
void gw_create_multipart_upload(gw_req *r);
int gw_upload_part_begin(gw_req *r);
int gw_upload_part_data(gw_req *r, const uint8_t *p, size_t n);
void gw_upload_part_end(gw_req *r);
void gw_upload_part_abort(gw_req *r);
void gw_upload_part_copy(gw_req *r);
void gw_complete_multipart_upload(gw_req *r);
void gw_abort_multipart_upload(gw_req *r);
void gw_list_parts(gw_req *r);
void gw_op_notimpl(gw_req *r);
void gw_get_acl(gw_req *r);
void gw_put_acl(gw_req *r);

/* ------------------------------- access control (authz.c, s3_policy.c,
 * s3_cors.c, ratelimit.c, admin_users.c); the rules are in doc/access.md */
/* Decides whether the requester (root, a user, or anonymous) may run r->op
 * on r->bucket/r->key: user grants, then the bucket policy. Returns 0, or
 * -1 with AccessDenied set. Called once authentication succeeded. */
int gw_authz(gw_req *r);
/* Glob match of s against pat: '*' matches any run, '?' one byte. */
bool gw_wild_match(cm_slice pat, cm_slice s, bool icase);
/* Checks a bucket policy document for bucket. 0, or -1 and *msg (static). */
int gw_policy_check(cm_slice json, const char *bucket, const char **msg);
/* Evaluates a stored bucket policy for action ("s3:GetObject") on resource
 * ("arn:aws:s3:::b/k") by user (NULL: anonymous). Deny wins over Allow. */
enum gw_pol_effect { GW_POL_NONE, GW_POL_ALLOW, GW_POL_DENY };
enum gw_pol_effect gw_policy_eval(cm_slice json, const char *action, cm_slice resource,
                                  const char *user);
void gw_put_bucket_policy(gw_req *r);
void gw_get_bucket_policy(gw_req *r);
void gw_delete_bucket_policy(gw_req *r);
void gw_put_bucket_cors(gw_req *r);
void gw_get_bucket_cors(gw_req *r);
void gw_delete_bucket_cors(gw_req *r);
void gw_cors_preflight(gw_req *r);
/* Appends "Name\0Value\0" Access-Control-* pairs to out when r carries an
 * Origin that the bucket's CORS configuration allows for r's method
 * (http.c adds them to every response, errors included). */
void gw_cors_headers(gw_req *r, cm_buf *out);
/* One CORS rule, parsed (pointers into the parsed document). */
typedef struct gw_cors_rule {
    cm_slice origins[16], methods[8], headers[16], expose[16];
    size_t norigins, nmethods, nheaders, nexpose;
    long max_age;               /* -1 when absent */
} gw_cors_rule;
/* Does rule allow origin, method and every header of the comma-separated
 * request_headers list (may be empty)? */
bool gw_cors_rule_match(const gw_cors_rule *rule, cm_slice origin, cm_slice method,
                        cm_slice request_headers);

/* Token bucket: tokens refill at rps per second up to burst. */
typedef struct gw_tb {
    double tokens;
    uint64_t last_ns;   /* monotonic time of the last refill */
} gw_tb;
/* Takes one token at time now_ns; false when empty. Not locked. */
bool gw_tb_take(gw_tb *tb, double rps, double burst, uint64_t now_ns);
/* Loads the limits from metadata (at start and after every change). */
int gw_ratelimit_reload(gw_server *srv);
void gw_ratelimit_free(gw_server *srv);
/* Takes a token from the requester's key and the bucket's limits; -1 with
 * SlowDown set when one is empty. Thread-safe. */
int gw_ratelimit_check(gw_req *r);
/* Admin groups "users", "policies", "limits" (admin_users.c). */
void gw_admin_users(gw_req *r, cm_slice rest);
void gw_admin_policies(gw_req *r, cm_slice rest);
void gw_admin_limits(gw_req *r, cm_slice rest);

/* cairn's own API (admin.c): /_cairn/health, /_cairn/metrics and the
 * root-only JSON admin API under /_cairn/admin/GROUP/... . Each group's
 * handler lives in the file of the part it administers and is listed in
 * admin.c's table. rest is the path after /_cairn/admin/GROUP (decoded). */
void gw_admin(gw_req *r);
void gw_admin_public(gw_req *r);

/* upkeep.c: heal walks, background scrub, garbage retries, and their admin
 * endpoints (/_cairn/admin/heal, scrub, gc, nodes). */
int gw_upkeep_start(gw_server *srv);
void gw_upkeep_stop(gw_server *srv); /* NULL or not started: no-op */
void gw_upkeep_metrics(gw_server *srv, cm_buf *b);
void gw_admin_heal(gw_req *r, cm_slice rest);
void gw_admin_scrub(gw_req *r, cm_slice rest);
void gw_admin_gc(gw_req *r, cm_slice rest);
void gw_admin_nodes(gw_req *r, cm_slice rest);

/* True when the object's bytes live in its record: its layout names no
 * segment (over storage nodes it still carries the manifest's record). */
static inline bool gw_obj_inline(const md_object *o)
{
    size_t n = 0;
    return o->layout.n == 0 || (cs_layout_count(o->layout, &n) == 0 && n == 0);
}

/* manifest.c: object manifests on storage nodes (no-ops over local drives).
 * attach: writes obj's manifest (after a durable intent) and points
 * obj->layout at its layout plus the manifest's record; commit with
 * md_write_opts.intent2 = mf->intent_id. done: after the commit (commit_rc
 * != 0 removes the manifest); frees mf's buffers. */
typedef struct gw_manifest {
    cm_buf layout;
    cm_buf intent;
    uint64_t intent_id;
} gw_manifest;
int gw_manifest_attach(gw_server *srv, const char *bucket, cm_slice key, md_object *obj,
                       gw_manifest *mf);
void gw_manifest_done(gw_server *srv, gw_manifest *mf, int commit_rc);
/* attach for the object of request r; on failure logs, drops data_intent
 * (the object's data intent, 0 for none), sets r's S3 error and returns
 * the code. */
int gw_manifest_attach_req(gw_req *r, md_object *obj, gw_manifest *mf, uint64_t data_intent);
/* Fills an empty metadata store from the settings snapshot and the
 * manifests on the nodes. */
int gw_rebuild_metadata(gw_server *srv);
/* Writes the settings snapshot to the nodes if the settings changed since
 * *last_hash (updated on success). No-op over local drives. */
void gw_settings_sync(gw_server *srv, uint64_t *last_hash);
typedef void (*gw_admin_fn)(gw_req *r, cm_slice rest);
void gw_admin_info(gw_req *r, cm_slice rest);
/* Sets a JSON response: status and the body in b (taken over: b is reset). */
void gw_json_reply(gw_req *r, int status, cm_buf *b);
/* A JSON error response {"error": code, "message": msg, "request_id": id}. */
void gw_json_error(gw_req *r, int status, const char *code, const char *msg);

/* Shared by object handlers (s3_objects.c). */
/* Checks that r->bucket exists; sets NoSuchBucket and returns false if not. */
bool gw_bucket_exists(gw_req *r);
/* Builds the stored headers of a new object from the request (Content-Type,
 * Cache-Control, Content-Disposition, Content-Encoding, Content-Language,
 * Expires, x-amz-meta-*, x-amz-website-redirect-location...). Returns false
 * with an error set (MetadataTooLarge). Slices point into r->pool. */
bool gw_object_hdrs_from_req(gw_req *r, md_kv **out, size_t *n);
/* Writes a streamed body into the chunkstore/inline buffer (the object
 * writer shared by PutObject and UploadPart). */
typedef struct gw_objw gw_objw;
gw_objw *gw_objw_new(gw_req *r, bool allow_inline);
int gw_objw_write(gw_objw *w, const uint8_t *p, size_t n);
/* Finishes: fills inline data or layout (+ intent id) into obj. */
int gw_objw_finish(gw_objw *w, md_object *obj, uint64_t *intent_id);
void gw_objw_abort(gw_objw *w);
/* Write preconditions (If-Match / If-None-Match: *) as an md_precond_fn;
 * false with an error set on a bad header. */
bool gw_write_cond(gw_req *r, md_precond_fn *fn, void **arg);
/* Sets the error for a failed commit made with gw_write_cond's arg. */
void gw_write_commit_error(gw_req *r, int rc, void *cond_arg);
/* GET/HEAD conditionals (pfx "") or CopyObject/UploadPartCopy source
 * conditionals (pfx "x-amz-copy-source-") against o. 0 to go on; -1 with
 * the error set (NotModified for GET, PreconditionFailed). */
int gw_read_conditions(gw_req *r, const md_object *o, const char *pfx);
/* x-amz-copy-source -> bucket, key (pool). false with an error set. */
bool gw_copy_source(gw_req *r, char *bucket, size_t bsz, cm_slice *key);
/* Streams src bytes [off, off+len) into w, computing their MD5. */
bool gw_copy_data(gw_req *r, const md_object *src, uint64_t off, uint64_t len, gw_objw *w,
                  uint8_t md5_out[16]);
/* versionId absent or "null" (unversioned buckets); false with
 * InvalidArgument set otherwise. */
bool gw_version_ok(gw_req *r);
/* Formats an ETag with quotes into out (>= 80 bytes). */
void gw_etag_quote(cm_slice etag, char *out);
/* Owner id and display name used wherever an owner appears. */
void gw_xml_owner(gw_req *r, cm_buf *b, const char *elem);
/* Storage class string for listings. */
#define GW_STORAGE_CLASS "STANDARD"

#endif
