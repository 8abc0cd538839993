/* events/evt_int.h - what the files of events/ share: the system struct
 * and its lock, the stored outbox record, definitions of functions and
 * targets, and the delivery entry points of targets.c and runner.c.
 * Private to events/ (tests excepted). */
#ifndef EVT_INT_H
#define EVT_INT_H

#include "events/evt.h"

#include <pthread.h>

/* An outbox record ('E' 'Q' seq value; doc/metadata-keys.md), version 3:
 * version u8 (3), dest kind u8, dest, bucket, key (str), type (varint),
 * depth u8, event time ms (varint), created ms - event time (zigzag
 * varint), sequencer (varint), attempts (varint), last error (str), size
 * (varint), etag (str), then config id, region, principal, owner, source
 * ip, request id, host id (str each). varint: unsigned LEB128. str: a
 * varint (stored length << 2 | form), then the stored bytes; form 0 as
 * is, 1 lowercase and 2 uppercase hex digits packed two to a byte, 3 the
 * stored bytes followed by the string before it (queue.c).
 * Versions 1 and 2 (older releases) still decode: u32 lengths and fixed
 * widths for the same fields up to the last error, then
 *   version 1: message JSON (4+n);
 *   version 2: size u64, etag (4+n), the seven strings (4+n each).
 * Compact records (2 or 3) are rewritten as version 3; version 1 delivers
 * with its stored message and re-encodes as version 1. */
#define EVT__REC_NSTR 7 /* config id .. host id */
typedef struct evt__rec {
    uint8_t dest_kind;  /* enum evt_dest_kind */
    char dest[64];
    char bucket[64];
    cm_buf key;
    uint32_t type;
    int depth;
    int64_t created_ms;
    int64_t time_ms;
    uint64_t evseq;     /* the sequencer of the change */
    uint32_t attempts;
    cm_buf err;         /* last delivery error */
    uint8_t ver;        /* 1: json stored; 2 (or 0): compact fields, stored as version 3 */
    cm_buf json;        /* version 1: the stored S3 event message */
    uint64_t size;      /* compact: the change (see evt_change) */
    cm_buf etag;
    cm_buf strs;        /* compact: EVT__REC_NSTR strings, each NUL-terminated */
} evt__rec;

int evt__rec_encode(const evt__rec *r, cm_buf *out);
int evt__rec_decode(cm_slice v, evt__rec *r /* OUT, zeroed */);
void evt__rec_free(evt__rec *r);
/* Compact: stores the change fields of c and config_id in r (the rest of
 * r is set by the caller). */
int evt__rec_set_change(evt__rec *r, const evt_change *c, const char *config_id);
/* The S3 event message of r: for version 1 the stored one (*msg borrowed
 * from r, tmp untouched), for compact records built into tmp (byte-identical
 * to evt_record_json at staging time). 0 or CM_ENOMEM. */
int evt__rec_message(const evt__rec *r, cm_buf *tmp, cm_slice *msg /* OUT */);

/* A change-log entry ('E' 'C' bucket 0x00 seq value), version 2: version
 * u8 (2), type, time ms, size (varint each), etag, key (str each, as in
 * the outbox record), depth u8. Version 1 (older releases) still decodes:
 * type u32, time ms u64, size u64, etag (4+n), key (4+n), depth u8. */

/* A function definition (copied out under the lock for a run). */
typedef struct evt__fn {
    char name[64];
    char *exec;
    int timeout_s;
    int concurrency;
    char **env;          /* "K=V" */
    size_t nenv;
    int running;         /* runs in flight; guarded by evt.lk */
    struct evt__fn *next;
} evt__fn;

/* A target and its circuit breaker (all state fields guarded by evt.lk).
 * Closed (fails == 0): events go as workers pick them. Open (fails > 0,
 * now < down_until): nothing is attempted; waiting events are neither
 * tried nor rewritten. Half-open (fails > 0, down_until passed): one
 * delivery at a time, the probe; its success closes the breaker, its
 * failure opens it again for evt_backoff_ms(fails). */
typedef struct evt__tgt {
    char name[64];
    char kind[16];       /* webhook cloudevents redis nats amqp */
    char *url;
    int64_t down_until;  /* ms: no attempt before (after a failure) */
    unsigned fails;      /* consecutive failures: > 0 means the breaker is not closed */
    int inflight;        /* deliveries to it in progress */
    char last_err[200];  /* the last failure, for events dead-lettered while it is down */
    struct evt__tgt *next;
} evt__tgt;

struct evt__dq;

/* A pending event in memory, in seq order within its destination's queue. */
typedef struct evt__pend {
    struct evt__pend *prev, *next;
    struct evt__dq *dq;  /* the queue it is on */
    uint64_t seq;        /* outbox id */
    evt__rec r;
    int64_t due_ms;      /* not before */
    bool inflight;
    uint64_t tuple;      /* hash of (dest, bucket, key): in-order unit */
} evt__pend;

/* The pending events of one destination, in seq order. Picking looks at
 * the first EVT__LOOKAHEAD of them only, and skips the whole queue while
 * its target's breaker is open or its function runs at its concurrency.
 *
 * Memory is bounded: a queue holds at most evt_config.window events (plus
 * the few whose commit raced a refill). Invariant while `spilled`: every
 * pending event of this destination with seq <= loaded_to is in memory (or
 * about to be handed over by the commit that wrote it), the others wait in
 * the outbox only; a refill scans the outbox from loaded_to when the
 * window drains below half. So the window is always a seq-ordered prefix
 * of the destination's pending events, and per-key order holds. */
#define EVT__LOOKAHEAD 1024
#define EVT__DONE_MAX 64   /* delivered events whose records are deleted in one batch */
#define EVT__DONE_MS 20    /* ... or after this long */
typedef struct evt__dq {
    uint8_t kind;        /* enum evt_dest_kind */
    char name[64];
    evt__pend *head, *tail;
    size_t n;            /* events in memory */
    size_t ninflight;    /* of them, being delivered now */
    bool spilled;        /* some pending events of it are in the outbox only */
    uint64_t loaded_to;  /* while spilled: events with seq <= this are in memory */
    size_t nspill;       /* about how many wait in the outbox only (stats) */
    bool refilling;      /* a worker is scanning the outbox for it (lk not held) */
    evt__pend *incoming; /* events committed during that scan (singly linked) */
    int64_t next_sweep_ms; /* breaker open: next look for events past max-age */
    struct evt__dq *next;
} evt__dq;

typedef struct evt__bcfg {
    char bucket[64];
    evt_notify cfg;
    struct evt__bcfg *next;
} evt__bcfg;

/* The system. lk guards everything below it but bcfgs, which cfg_lk
 * guards (read by every change, so kept off lk); cfg and md are set at
 * start and read unlocked. Never both locks at once; neither is held
 * across I/O. */
struct evt {
    evt_config cfg;
    md_db_t *md;
    pthread_mutex_t lk;
    pthread_cond_t cv;          /* pending list changed, or stopping */
    evt__dq *dqs;               /* one queue per destination with pending events */
    size_t npend;               /* pending events in memory */
    size_t nspill;              /* pending events in the outbox only (sum of dq.nspill) */
    size_t ninflight;           /* pending events a worker is delivering now */
    int nwaiting;               /* workers waiting on cv (a signal with none is wasted) */
    evt__fn *fns;
    evt__tgt *tgts;
    pthread_rwlock_t cfg_lk;    /* guards bcfgs (read on every change: not lk) */
    evt__bcfg *bcfgs;
    bool stopping;
    pthread_t *threads;
    int nthreads;
    int64_t next_trim_ms;
    uint64_t done[EVT__DONE_MAX]; /* delivered events whose outbox records are still to
                                   * be deleted (one batch for many; see done_flush) */
    size_t ndone;
    int64_t done_since_ms;      /* when done[0] was noted */
    uint64_t blocked[4 * EVT__LOOKAHEAD]; /* scratch set of tuples for picking */
    uint32_t blocked_gen[4 * EVT__LOOKAHEAD]; /* entry valid when == gen */
    uint32_t gen;
    evt_stats st;
    char log_dir[4096];         /* DIR/logs/functions */
};

/* A kept-alive connection of one worker to an HTTP, Redis or NATS server
 * (targets.c): reused while it works, reopened once when it does not. */
#define EVT__CONNS 4
typedef struct evt__conn {
    char url[512]; /* the target URL it was opened for; "" when unused */
    int fd;
    cm_buf in;     /* bytes read but not consumed */
} evt__conn;

typedef struct evt__worker {
    evt_t *e;
    int idx;
    void *curl;                  /* https targets: a libcurl handle */
    char *curl_url;              /* webhook URL the handle is set up for (kept between events) */
    void *curl_hdrs;             /* its header list (struct curl_slist) */
    evt__conn conns[EVT__CONNS]; /* HTTP, Redis and NATS connections of this worker */
    unsigned next_conn;          /* slot to reuse when all are taken */
    void *amqp;                  /* kept-alive AMQP connection (channel 1 in confirm mode) */
    char amqp_url[512];          /* the target URL it was opened for */
} evt__worker;

/* A copy of a target for one delivery (strings owned). */
typedef struct evt__tgt_snap {
    char name[64];
    char kind[16];
    char *url;
} evt__tgt_snap;

/* Delivers the n events r[i] (messages msg[i], from evt__rec_message) to
 * target t, in order. rc[i] is 0 when the target acknowledged r[i], an
 * error code when the attempt failed (a message appended to err for the
 * first failure), or EVT__UNTRIED when it was not attempted because an
 * earlier one failed (the target is down: its breaker decides when next).
 * n > 1 only for targets evt__target_pipelines says yes to; at most
 * EVT__BATCH. */
#define EVT__UNTRIED 1
/* rc[i] when the target answered and refused that one event (HTTP 4xx but
 * 408 and 429, an AMQP message returned as unroutable): an attempt that
 * counts, retried on the event's own backoff, while the target's breaker
 * stays closed for the other events. */
#define EVT__REJECTED 2
#define EVT__BATCH 32
void evt__deliver(evt__worker *w, const evt__tgt_snap *t, const evt__rec *const *r,
                  const cm_slice *msg, size_t n, int *rc, cm_buf *err);
/* True if events for a target of kind and url are delivered many at once
 * (pipelined: plain-HTTP webhooks and CloudEvents sinks, Redis, NATS). */
bool evt__target_pipelines(const char *kind, const char *url);
void evt__worker_cleanup(evt__worker *w);
/* Global set-up of the HTTP client; called once by evt_start. */
void evt__targets_init(void);

/* Runs function f for r, msg on its stdin (runner.c): 0 when it exited 0. */
int evt__run(evt_t *e, const evt__fn *f, const evt__rec *r, cm_slice msg, cm_buf *err);

#endif
