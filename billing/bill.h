/* billing/bill.h - usage metering: the classification of operations into
 * billing classes (Cloudflare R2's, doc/billing.md), the billing rules by
 * status, recording of request usage, the background fold of pending
 * records into counters, price sheets and the usage report. Knows operation
 * names and HTTP statuses, never HTTP requests; stores through metadata/. */
#ifndef BILL_H
#define BILL_H

#include "common/cm.h"
#include "metadata/md.h"

/* ------------------------------------------------------ classification */
enum bill_class {
    BILL_NONE = 0, /* not metered (cairn's own /_cairn endpoints) */
    BILL_A = 1,    /* writes, lists, bucket configuration changes */
    BILL_B = 2,    /* reads, heads, configuration reads */
    BILL_FREE = 3, /* deletes and aborts */
};

/* The class of an S3 operation by name (e.g. "PutObject"). Names not in the
 * table are Class A (conservative: an unknown operation is billed as a
 * mutation). "Admin"/"AdminPublic" are BILL_NONE. Thread-safe. */
enum bill_class bill_op_class(const char *op);
/* "A", "B", "free" or "none". */
const char *bill_class_name(enum bill_class c);
/* Whether a request of class c answered with status is billed: never for
 * free operations, 401/403 (authentication and authorization failures) or
 * 5xx; every other status (412, 400 BadDigest, 404...) is billed. */
bool bill_billable(enum bill_class c, int status);

/* ------------------------------------------------------------ recording */
/* What the gateway knows about a finished (or about to be answered)
 * request. Strings are borrowed for the call. */
typedef struct bill_event {
    int64_t ms;             /* when the request was answered */
    const char *bucket;     /* "" when none */
    const char *access_key; /* "" for anonymous */
    const char *op;         /* operation name */
    int status;             /* HTTP status */
    uint64_t bytes_in;      /* decoded request body bytes */
    int64_t bytes_out;      /* response body bytes (negative: a correction) */
    bool correction;        /* true: adjusts bytes of an already counted request */
} bill_event;

/* Fills *out from ev: class, billable, requests (0 for a correction).
 * Strings in *out borrow ev's. */
void bill_event_to_md(const bill_event *ev, md_usage_req *out);
/* Records ev durably (sync) or not; returns 0 or a CM_E* code. Events of
 * BILL_NONE operations are ignored (0). Thread-safe. */
int bill_record(md_db_t *md, const bill_event *ev, bool sync);
/* Records ev inside the write batch of a change (from an md_hook_fn). */
int bill_record_batch(md_batch_t *b, const bill_event *ev);
/* The same together with the change's storage delta of bucket (bytes and
 * objects, may be 0) at ms, as one record. */
int bill_record_batch_delta(md_batch_t *b, const bill_event *ev, const char *bucket, int64_t ms,
                            int64_t dbytes, int64_t dobjects);

/* The folder: a thread that folds pending records into counters every
 * interval_ms. Returns 0 and *out, or a CM_E* code. */
typedef struct bill_meter bill_meter_t;
int bill_meter_start(md_db_t *md, unsigned interval_ms, bill_meter_t **out);
/* Stops the thread after one last fold. NULL is a no-op. */
void bill_meter_stop(bill_meter_t *m);

/* ---------------------------------------------------------- price sheet */
typedef struct bill_prices {
    char name[128];              /* shown in reports */
    char currency[16];
    char source[256];            /* where the prices come from */
    double class_a_per_million;  /* per million billable Class A requests */
    double class_b_per_million;
    double storage_per_gb_month;
    double egress_per_gb;        /* per GB of response bytes */
    double ingress_per_gb;       /* per GB of request bytes */
    double gb_bytes;             /* bytes in a GB (1e9) */
    double month_hours;          /* hours in a billing month (720: 30 days) */
} bill_prices;

/* The default sheet: Cloudflare R2 Standard storage's published prices. */
void bill_prices_default(bill_prices *out);
/* Parses a price sheet: a JSON object or "key = value" lines ('#' starts a
 * comment); keys as the bill_prices fields. Unset fields keep the default
 * sheet's values; unknown keys and bad numbers are CM_EINVAL with a message
 * in err (errsz bytes). */
int bill_prices_parse(cm_slice text, bill_prices *out, char *err, size_t errsz);

/* --------------------------------------------------------------- report */
#define BILL_BY_HOUR 0x01u
#define BILL_BY_DAY 0x02u
#define BILL_BY_BUCKET 0x04u
#define BILL_BY_KEY 0x08u
#define BILL_BY_OP 0x10u
#define BILL_BY_DEFAULT (BILL_BY_HOUR | BILL_BY_BUCKET | BILL_BY_KEY | BILL_BY_OP)

typedef struct bill_query {
    int64_t from_ms;        /* inclusive; INT64_MIN for no bound */
    int64_t to_ms;          /* exclusive; INT64_MAX for no bound */
    const char *bucket;     /* NULL: all */
    const char *access_key; /* NULL: all ("" selects anonymous requests) */
    unsigned by;            /* BILL_BY_* bits; 0 means BILL_BY_DEFAULT */
    int64_t now_ms;         /* storage is extrapolated up to min(to, now) */
} bill_query;

/* Parses "hour", "day", "bucket", "access-key", "operation" (comma lists
 * allowed) into BILL_BY_* bits; CM_EINVAL on an unknown word. */
int bill_by_parse(const char *s, unsigned *out);
/* Parses an ISO 8601 UTC time "YYYY-MM-DD[THH[:MM[:SS[.fff]]]][Z]" into ms. */
int bill_time_parse(const char *s, int64_t *out_ms);

/* Folds pending records, then appends the report as one JSON document to
 * out: {"query":..., "prices":..., "rows":[...], "storage":[...],
 * "totals":{...}} (doc/billing.md). Counters are grouped by the query's
 * dimensions and always by class and status class; a counter's hour is in
 * range when from <= its start < to. Returns 0 or a CM_E* code. */
int bill_report_json(md_db_t *md, const bill_query *q, const bill_prices *p, cm_buf *out);

#endif
