/* events/evt.h - bucket notifications and functions: S3 event names and
 * rule matching (rules.c), the S3 event record and CloudEvents mapping
 * (record.c), the durable outbox and its dispatcher threads (queue.c),
 * delivery targets (targets.c) and the function runner (runner.c).
 * Uses metadata/ for storage; knows nothing of HTTP requests or S3 XML. */
#ifndef EVT_H
#define EVT_H

#include "common/cm.h"
#include "metadata/md.h"

/* ------------------------------------------------------------ event names */
/* One bit per S3 event type. */
enum evt_type {
    EVT_CREATED_PUT = 1u << 0,    /* ObjectCreated:Put */
    EVT_CREATED_POST = 1u << 1,   /* ObjectCreated:Post */
    EVT_CREATED_COPY = 1u << 2,   /* ObjectCreated:Copy */
    EVT_CREATED_MPU = 1u << 3,    /* ObjectCreated:CompleteMultipartUpload */
    EVT_REMOVED_DELETE = 1u << 4, /* ObjectRemoved:Delete */
    EVT_REMOVED_MARKER = 1u << 5, /* ObjectRemoved:DeleteMarkerCreated */
};
#define EVT_CREATED_ALL 0x0fu
#define EVT_REMOVED_ALL 0x30u

/* Parses an S3 event name as used in notification configurations
 * ("s3:ObjectCreated:Put", "s3:ObjectCreated:*", "s3:ObjectRemoved:*" ...)
 * into a mask of enum evt_type bits. Returns 0 and *out, or CM_EINVAL for
 * a name S3 does not know (or one cairn never emits). Thread-safe. */
int evt_name_parse(cm_slice name, uint32_t *out /* OUT */);
/* The record name of one type bit without "s3:" ("ObjectCreated:Put");
 * "" for anything else. Static string. */
const char *evt_type_name(uint32_t type);

/* -------------------------------------------------- notification config */
#define EVT_MAX_RULES 100
#define EVT_MAX_NAMES 12 /* event names per rule */

enum evt_section { EVT_SEC_TOPIC, EVT_SEC_QUEUE, EVT_SEC_FUNCTION };

/* One rule of a bucket's notification configuration, as put. */
typedef struct evt_rule {
    char id[256];                /* Id, or a generated one; configurationId in records */
    enum evt_section section;    /* which XML element it came from */
    char arn[320];               /* destination ARN as given */
    char names[EVT_MAX_NAMES][64]; /* event names as given, for Get */
    size_t nnames;
    uint32_t events;             /* union of the names' masks */
    cm_buf prefix, suffix;       /* filter values (binary-safe; empty: none) */
    bool has_prefix, has_suffix;
} evt_rule;

typedef struct evt_notify {
    evt_rule *a; /* malloc()ed; free with evt_notify_clear */
    size_t n;
} evt_notify;

/* Appends a zeroed rule to cfg and returns it (NULL on OOM or when cfg
 * holds EVT_MAX_RULES already). */
evt_rule *evt_notify_add(evt_notify *cfg);
/* Frees every rule and zeroes cfg. */
void evt_notify_clear(evt_notify *cfg);
/* True if rule applies to an event of type (one bit) on key. */
bool evt_rule_match(const evt_rule *rule, uint32_t type, cm_slice key);
/* True if two rules would both fire for some event and name one
 * destination (same ARN, a common event type, prefixes of which one
 * starts the other, suffixes of which one ends the other). */
bool evt_rules_overlap(const evt_rule *a, const evt_rule *b);

/* Destinations named by ARNs. */
enum evt_dest_kind { EVT_DEST_FUNCTION = 1, EVT_DEST_TARGET = 2 };
/* Parses arn:cairn:lambda:REGION::function:NAME (a function) or
 * arn:cairn:sqs:REGION::NAME / arn:cairn:sns:REGION::NAME (a target) into
 * kind and name (out >= 64 bytes). CM_EINVAL if arn is neither. */
int evt_arn_parse(const char *arn, enum evt_dest_kind *kind, char *name /* OUT */);

/* Stored form of a configuration (JSON). Decode fills an empty cfg. */
int evt_notify_encode(const evt_notify *cfg, cm_buf *out);
int evt_notify_decode(cm_slice text, evt_notify *cfg /* OUT */);

/* --------------------------------------------------------------- records */
/* A change to an object, as the gateway describes it to the hook. All
 * pointers are borrowed for the duration of the call. */
typedef struct evt_change {
    const char *bucket;
    cm_slice key;
    uint32_t type;            /* one enum evt_type bit */
    uint64_t size;            /* new object's size (0 for removals) */
    cm_slice etag;            /* new object's ETag, no quotes (empty for removals) */
    int64_t time_ms;          /* when the change happened */
    const char *region;
    const char *principal;    /* access key (userIdentity.principalId) */
    const char *owner;        /* bucket owner's canonical id */
    const char *source_ip;
    const char *request_id;   /* x-amz-request-id */
    const char *host_id;      /* x-amz-id-2 */
    int depth;                /* 0 for a user's request, d+1 for a function run at d */
} evt_change;

/* Formats seq as the record's sequencer (16 uppercase hex digits) into
 * out (>= 17 bytes). Sequencers of one key increase with its changes. */
void evt_sequencer(uint64_t seq, char *out /* OUT */);
/* Appends the S3 event message ({"Records":[{...}]}) for change c,
 * delivered for rule config_id, with sequencer seq. Key URL-encoded as S3
 * does (space as '+'). Returns 0 or CM_ENOMEM. Thread-safe. */
int evt_record_json(const evt_change *c, const char *config_id, uint64_t seq, cm_buf *out);
/* Appends the CloudEvents 1.0 binary-mode headers ("name: value" lines,
 * each ending in "\n") of an event: ce-specversion, ce-id (id), ce-source
 * (bucket ARN), ce-type (com.amazonaws.s3.<event name>), ce-subject (key),
 * ce-time, content-type. */
int evt_cloudevents_headers(const char *bucket, cm_slice key, uint32_t type, int64_t time_ms,
                            const char *id, cm_buf *out);

/* ------------------------------------------------------------ the system */
typedef struct evt evt_t;

/* Presigns a GET of bucket/key valid for expires seconds: appends the URL
 * to url. Supplied by the gateway (events/ does not speak SigV4). */
typedef int (*evt_presign_fn)(void *arg, const char *bucket, cm_slice key, int expires,
                              cm_buf *url);
/* Makes credentials for one function run at depth: writes an access key
 * and secret (NUL-terminated, <= 127 chars each) the gateway will accept,
 * and whose writes it reports with evt_change.depth = depth + 1. */
typedef int (*evt_session_fn)(void *arg, int depth, char *ak /* OUT */, char *sk /* OUT */);

typedef struct evt_config {
    const char *data_dir;    /* function logs go to DIR/logs/functions/NAME.log */
    const char *region;
    const char *endpoint;    /* CAIRN_ENDPOINT for functions */
    int max_attempts;        /* deliveries before dead-lettering (default 8); only real
                              * attempts count: events waiting behind a down target's
                              * open breaker gain none (the probe does) */
    int64_t max_age_ms;      /* dead-letter when older (default 24 h), also while waiting
                              * behind a down target, without an attempt */
    int backoff_ms;          /* first retry delay (default 500 ms) */
    int backoff_max_ms;      /* cap (default 60 s) */
    int64_t retention_ms;    /* change log retention (default 7 days) */
    int workers;             /* delivery threads (default 4) */
    int max_depth;           /* recursion guard: events at this depth are dropped (4) */
    int delivery_timeout_ms; /* network targets (default 10 s) */
    int64_t log_max_bytes;   /* a function's log is rotated to NAME.log.1 past this (16 MiB) */
    int window;              /* pending events held in memory per destination (4096); the
                              * rest wait in the outbox and are loaded in seq order */
    evt_presign_fn presign;
    evt_session_fn session;
    void (*depth_fn)(void *arg, uint64_t n); /* told the outbox depth when it changes */
    void *cb_arg;            /* passed to presign, session and depth_fn */
} evt_config;

/* Fills the defaults above (strings NULL). */
void evt_config_defaults(evt_config *cfg);
/* Applies "key=value,..." overrides: retries, max-age (s), backoff (ms),
 * backoff-max (ms), retention (s), workers, max-depth, timeout (ms),
 * log-max (bytes), window (events, 16..1000000).
 * CM_EINVAL with *why set (static) on an unknown key or bad value. */
int evt_config_parse(const char *spec, evt_config *cfg, const char **why);
/* Retry delay before attempt+1 after `attempt` failures (>= 1): base *
 * 2^(attempt-1) capped at backoff_max, with jitter from rnd: the result
 * lies in [d/2, d]. Pure; thread-safe. */
int64_t evt_backoff_ms(const evt_config *cfg, unsigned attempt, uint32_t rnd);

/* Loads definitions, notification configurations and the first window of
 * pending events of each destination, and starts the delivery threads. cfg is copied (its strings must outlive
 * the system). Returns 0 and *out or a CM_E* code. */
int evt_start(const evt_config *cfg, md_db_t *md, evt_t **out);
/* Stops the threads (waiting for deliveries in flight, killing function
 * runs) and frees everything. NULL is a no-op. Pending events stay stored. */
void evt_stop(evt_t *e);

/* Events staged by one change, to be handed to the dispatcher once the
 * change committed. Opaque. */
typedef struct evt_staged evt_staged;
/* Called from an md_hook_fn: appends the change-log entry and one outbox
 * record per matching rule (skipped, and logged, at depth >= max_depth) to
 * b. *staged receives what to hand over after the commit (NULL if nothing).
 * Returns 0 or a CM_E* code (which aborts the change). Thread-safe. */
int evt_stage(evt_t *e, md_batch_t *b, const evt_change *c, evt_staged **staged /* OUT */);
/* After the md call: committed says whether the change committed. Frees
 * staged (NULL is a no-op) and wakes the dispatcher. */
void evt_staged_finish(evt_t *e, evt_staged *staged, bool committed);

/* Notification configuration of a bucket. Put validates (destinations
 * exist, no overlap), stores and takes effect at once; on CM_EINVAL *why
 * says why (static S3 message). An empty cfg removes the configuration.
 * Get fills cfg (empty if none). Thread-safe. */
int evt_notify_put(evt_t *e, const char *bucket, const evt_notify *cfg, const char **why);
int evt_notify_get(evt_t *e, const char *bucket, evt_notify *cfg /* OUT */);

/* Functions and targets (admin API). Names: 1..63 of [A-Za-z0-9_.-].
 * env holds "K=V" strings. CM_EINVAL with *why (static) on bad input. */
int evt_function_put(evt_t *e, const char *name, const char *exec, int timeout_s,
                     int concurrency, const char *const *env, size_t nenv, const char **why);
/* target url: webhook/cloudevents http(s)://..., redis://H:P/STREAM,
 * nats://H:P/SUBJECT, amqp://[USER:PASS@]H:P/EXCHANGE; kind one of
 * "webhook" "cloudevents" "redis" "nats" "amqp". */
int evt_target_put(evt_t *e, const char *name, const char *kind, const char *url,
                   const char **why);
/* CM_ENOTFOUND if absent. */
int evt_function_remove(evt_t *e, const char *name);
int evt_target_remove(evt_t *e, const char *name);
/* Appends a JSON array of definitions ({"name":..,"exec":..} / {"name":..,
 * "kind":..,"url":..}) to out. */
int evt_function_list_json(evt_t *e, cm_buf *out);
int evt_target_list_json(evt_t *e, cm_buf *out);
/* Appends the last max bytes of the function's log to out (empty if none).
 * CM_ENOTFOUND if there is no such function. */
int evt_function_log(evt_t *e, const char *name, size_t max, cm_buf *out);

/* Appends a JSON array of pending (dead = false) or dead-lettered events:
 * {"id","destination","bucket","key","eventName","sequencer","attempts",
 * "created","lastError"}. At most limit entries. */
int evt_events_json(evt_t *e, bool dead, size_t limit, cm_buf *out);
/* Moves dead letters back to the outbox (ids[n]; n == 0: all of them) with
 * a fresh attempt count. *out_n receives how many were replayed. */
int evt_replay(evt_t *e, const uint64_t *ids, size_t n, size_t *out_n /* OUT */);
/* Appends {"bucket":..,"changes":[{sequencer,eventName,key,size,eTag,
 * eventTime}],"next":SEQ|null} for the bucket's change log after since
 * (a sequencer; 0 from the start), at most limit entries. */
int evt_changes_json(evt_t *e, const char *bucket, uint64_t since, size_t limit, cm_buf *out);

/* Counters for tests and metrics. */
typedef struct evt_stats {
    uint64_t delivered, failed, dead, dropped_depth;
    uint64_t pending;  /* waiting for delivery (in memory or in the outbox only) */
    uint64_t resident; /* of those, held in memory (bounded by the window) */
    uint64_t probes;   /* deliveries tried as a down target's probe */
    uint64_t calls;    /* calls to targets and functions (one may carry many events) */
} evt_stats;
void evt_get_stats(evt_t *e, evt_stats *out /* OUT */);

#endif
