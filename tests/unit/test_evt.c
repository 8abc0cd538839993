/* tests/unit/test_evt.c - unit tests of events/: event names and rule
 * matching (table), overlap, ARNs, the stored config round trip, the S3
 * record JSON and CloudEvents headers (golden), the backoff schedule, and
 * the outbox end to end on a temp database (staging in the change's batch,
 * delivery through the function runner, dead letters, replay, change log),
 * and the dispatcher's bounds: the in-memory window with 50,000 events
 * pending for a down target, the circuit breaker (one probe, no rewrites
 * of waiting events), max-age while down, and refills keeping key order;
 * pipelined webhook delivery against a local HTTP server that answers in
 * every framing (chunked, sized, 204, 100 Continue first), closes
 * connections mid-pipeline and fails one event once. TAP. */
#include "common/json.h"
#include "events/evt_int.h"
#include "tests/unit/tap.h"

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static evt_rule mkrule(const char *arn, uint32_t ev, const char *pfx, const char *sfx)
{
    evt_rule r;
    memset(&r, 0, sizeof r);
    snprintf(r.arn, sizeof r.arn, "%s", arn);
    r.events = ev;
    if (pfx) {
        r.has_prefix = true;
        cm_buf_append_str(&r.prefix, pfx);
    }
    if (sfx) {
        r.has_suffix = true;
        cm_buf_append_str(&r.suffix, sfx);
    }
    return r;
}

static void rule_free(evt_rule *r)
{
    cm_buf_free(&r->prefix);
    cm_buf_free(&r->suffix);
}

static void test_names(void)
{
    static const struct {
        const char *name;
        int rc;
        uint32_t mask;
    } t[] = {
        {"s3:ObjectCreated:*", 0, EVT_CREATED_ALL},
        {"s3:ObjectCreated:Put", 0, EVT_CREATED_PUT},
        {"s3:ObjectCreated:Post", 0, EVT_CREATED_POST},
        {"s3:ObjectCreated:Copy", 0, EVT_CREATED_COPY},
        {"s3:ObjectCreated:CompleteMultipartUpload", 0, EVT_CREATED_MPU},
        {"s3:ObjectRemoved:*", 0, EVT_REMOVED_ALL},
        {"s3:ObjectRemoved:Delete", 0, EVT_REMOVED_DELETE},
        {"s3:ObjectRemoved:DeleteMarkerCreated", 0, EVT_REMOVED_MARKER},
        {"ObjectCreated:Put", CM_EINVAL, 0},
        {"s3:ObjectCreated:put", CM_EINVAL, 0},
        {"s3:ObjectRestore:*", CM_EINVAL, 0},
        {"s3:*", CM_EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        uint32_t m = 0;
        int rc = evt_name_parse(CM_SLICE_STR(t[i].name), &m);
        ok(rc == t[i].rc && m == t[i].mask, "event name %s", t[i].name);
    }
    is_str(evt_type_name(EVT_CREATED_MPU), "ObjectCreated:CompleteMultipartUpload",
           "record name of CompleteMultipartUpload");
    is_str(evt_type_name(EVT_CREATED_ALL), "", "a wildcard has no record name");
}

static void test_match(void)
{
    static const struct {
        uint32_t ev;
        const char *pfx, *sfx;
        uint32_t type;
        const char *key;
        bool want;
    } t[] = {
        {EVT_CREATED_ALL, NULL, NULL, EVT_CREATED_PUT, "a", true},
        {EVT_CREATED_ALL, NULL, NULL, EVT_REMOVED_DELETE, "a", false},
        {EVT_CREATED_PUT, NULL, NULL, EVT_CREATED_COPY, "a", false},
        {EVT_REMOVED_ALL, NULL, NULL, EVT_REMOVED_DELETE, "a", true},
        {EVT_CREATED_ALL, "img/", NULL, EVT_CREATED_PUT, "img/x.jpg", true},
        {EVT_CREATED_ALL, "img/", NULL, EVT_CREATED_PUT, "im", false},
        {EVT_CREATED_ALL, "img/", NULL, EVT_CREATED_PUT, "doc/img/x", false},
        {EVT_CREATED_ALL, NULL, ".jpg", EVT_CREATED_PUT, "a.jpg", true},
        {EVT_CREATED_ALL, NULL, ".jpg", EVT_CREATED_PUT, "a.jpeg", false},
        {EVT_CREATED_ALL, NULL, ".jpg", EVT_CREATED_PUT, "jpg", false},
        {EVT_CREATED_ALL, "img/", ".jpg", EVT_CREATED_PUT, "img/.jpg", true},
        {EVT_CREATED_ALL, "img/", ".jpg", EVT_CREATED_PUT, "img/a.png", false},
        {EVT_CREATED_ALL, "", "", EVT_CREATED_PUT, "anything", true},
        {EVT_CREATED_ALL, "a b+", NULL, EVT_CREATED_PUT, "a b+c", true},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        evt_rule r = mkrule("arn:cairn:sqs:us-east-1::q", t[i].ev, t[i].pfx, t[i].sfx);
        ok(evt_rule_match(&r, t[i].type, CM_SLICE_STR(t[i].key)) == t[i].want,
           "match %zu: prefix %s suffix %s key %s -> %d", i, t[i].pfx ? t[i].pfx : "-",
           t[i].sfx ? t[i].sfx : "-", t[i].key, t[i].want);
        rule_free(&r);
    }
}

static void test_overlap(void)
{
    static const struct {
        const char *arn2;
        uint32_t ev1, ev2;
        const char *p1, *s1, *p2, *s2;
        bool want;
    } t[] = {
        {"arn:cairn:sqs:r::q", EVT_CREATED_ALL, EVT_CREATED_PUT, NULL, NULL, NULL, NULL, true},
        {"arn:cairn:sqs:r::q", EVT_CREATED_PUT, EVT_REMOVED_ALL, NULL, NULL, NULL, NULL, false},
        {"arn:cairn:sqs:r::other", EVT_CREATED_ALL, EVT_CREATED_ALL, NULL, NULL, NULL, NULL, false},
        {"arn:cairn:sqs:r::q", EVT_CREATED_ALL, EVT_CREATED_ALL, "a/", NULL, "b/", NULL, false},
        {"arn:cairn:sqs:r::q", EVT_CREATED_ALL, EVT_CREATED_ALL, "a/", NULL, "a/b/", NULL, true},
        {"arn:cairn:sqs:r::q", EVT_CREATED_ALL, EVT_CREATED_ALL, NULL, ".jpg", NULL, ".png", false},
        {"arn:cairn:sqs:r::q", EVT_CREATED_ALL, EVT_CREATED_ALL, NULL, ".jpg", NULL, "x.jpg", true},
        {"arn:cairn:sqs:r::q", EVT_CREATED_ALL, EVT_CREATED_ALL, "a/", ".jpg", "b/", ".jpg", false},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        evt_rule a = mkrule("arn:cairn:sqs:r::q", t[i].ev1, t[i].p1, t[i].s1);
        evt_rule b = mkrule(t[i].arn2, t[i].ev2, t[i].p2, t[i].s2);
        ok(evt_rules_overlap(&a, &b) == t[i].want && evt_rules_overlap(&b, &a) == t[i].want,
           "overlap %zu -> %d", i, t[i].want);
        rule_free(&a);
        rule_free(&b);
    }
}

static void test_arn(void)
{
    static const struct {
        const char *arn;
        int rc;
        enum evt_dest_kind kind;
        const char *name;
    } t[] = {
        {"arn:cairn:lambda:us-east-1::function:thumb", 0, EVT_DEST_FUNCTION, "thumb"},
        {"arn:cairn:lambda:::function:f", 0, EVT_DEST_FUNCTION, "f"},
        {"arn:cairn:sqs:us-east-1::hook", 0, EVT_DEST_TARGET, "hook"},
        {"arn:cairn:sns:eu-west-1::topic.1", 0, EVT_DEST_TARGET, "topic.1"},
        {"arn:aws:sqs:us-east-1::hook", CM_EINVAL, 0, ""},
        {"arn:cairn:lambda:us-east-1::thumb", CM_EINVAL, 0, ""},
        {"arn:cairn:sqs:us-east-1:123:hook", CM_EINVAL, 0, ""},
        {"arn:cairn:sqs:us-east-1::", CM_EINVAL, 0, ""},
        {"arn:cairn:sqs:us-east-1::a/b", CM_EINVAL, 0, ""},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        enum evt_dest_kind k = 0;
        char name[330] = "";
        int rc = evt_arn_parse(t[i].arn, &k, name);
        ok(rc == t[i].rc && (rc || (k == t[i].kind && !strcmp(name, t[i].name))), "arn %s",
           t[i].arn);
    }
}

static void test_config_roundtrip(void)
{
    evt_notify a = {0}, b = {0};
    cm_buf s1 = {0}, s2 = {0};
    evt_rule *r = evt_notify_add(&a);
    snprintf(r->id, sizeof r->id, "img \"rule\"");
    snprintf(r->arn, sizeof r->arn, "arn:cairn:lambda:us-east-1::function:thumb");
    snprintf(r->names[0], sizeof r->names[0], "s3:ObjectCreated:*");
    snprintf(r->names[1], sizeof r->names[1], "s3:ObjectRemoved:Delete");
    r->nnames = 2;
    r->events = EVT_CREATED_ALL | EVT_REMOVED_DELETE;
    r->section = EVT_SEC_FUNCTION;
    r->has_prefix = true;
    cm_buf_append_str(&r->prefix, "img/ é+");
    evt_notify_encode(&a, &s1);
    ok(evt_notify_decode(cm_buf_slice(&s1), &b) == 0 && b.n == 1, "config decodes");
    evt_notify_encode(&b, &s2);
    ok(cm_slice_eq(cm_buf_slice(&s1), cm_buf_slice(&s2)), "config round trip is exact");
    ok(b.n == 1 && b.a[0].events == r->events && b.a[0].section == EVT_SEC_FUNCTION &&
           !b.a[0].has_suffix,
       "rule fields survive");
    evt_notify_clear(&a);
    evt_notify_clear(&b);
    cm_buf_free(&s1);
    cm_buf_free(&s2);
}

static void test_record(void)
{
    evt_change c = {
        .bucket = "photos",
        .key = CM_SLICE_STR("my dir/a+b%c é.jpg"),
        .type = EVT_CREATED_PUT,
        .size = 4096,
        .etag = CM_SLICE_STR("0123456789abcdef0123456789abcdef"),
        .time_ms = 1700000000123LL,
        .region = "us-east-1",
        .principal = "AKID",
        .owner = "owner1",
        .source_ip = "127.0.0.1",
        .request_id = "REQ1",
        .host_id = "cairn-REQ1",
    };
    cm_buf b = {0};
    ok(evt_record_json(&c, "cfg-1", 0x2a, &b) == 0, "record builds");
    is_str(cm_buf_str(&b),
           "{\"Records\":[{\"eventVersion\":\"2.1\",\"eventSource\":\"aws:s3\",\"awsRegion\":"
           "\"us-east-1\",\"eventTime\":\"2023-11-14T22:13:20.123Z\",\"eventName\":"
           "\"ObjectCreated:Put\",\"userIdentity\":{\"principalId\":\"AKID\"},"
           "\"requestParameters\":{\"sourceIPAddress\":\"127.0.0.1\"},\"responseElements\":"
           "{\"x-amz-request-id\":\"REQ1\",\"x-amz-id-2\":\"cairn-REQ1\"},\"s3\":"
           "{\"s3SchemaVersion\":\"1.0\",\"configurationId\":\"cfg-1\",\"bucket\":{\"name\":"
           "\"photos\",\"ownerIdentity\":{\"principalId\":\"owner1\"},\"arn\":"
           "\"arn:aws:s3:::photos\"},\"object\":{\"key\":\"my+dir/a%2Bb%25c+%C3%A9.jpg\","
           "\"size\":4096,\"eTag\":\"0123456789abcdef0123456789abcdef\",\"sequencer\":"
           "\"000000000000002A\"}}}]}",
           "ObjectCreated:Put record (golden)");
    cm_json_doc *d = NULL;
    ok(cm_json_parse(cm_buf_slice(&b), &d) == 0, "record is valid JSON");
    cm_json_doc_free(d);
    cm_buf_reset(&b);
    c.type = EVT_REMOVED_DELETE;
    c.key = CM_SLICE_STR("k");
    evt_record_json(&c, "cfg-1", 0x2b, &b);
    ok(strstr(cm_buf_str(&b), "\"object\":{\"key\":\"k\",\"sequencer\":\"000000000000002B\"}") &&
           strstr(cm_buf_str(&b), "\"eventName\":\"ObjectRemoved:Delete\""),
       "a removal carries key and sequencer only");
    cm_buf_reset(&b);
    evt_cloudevents_headers("photos", CM_SLICE_STR("a b\n%"), EVT_CREATED_COPY, 1700000000123LL,
                            "ID1", &b);
    is_str(cm_buf_str(&b),
           "ce-specversion: 1.0\nce-id: ID1\nce-source: arn:aws:s3:::photos\n"
           "ce-type: com.amazonaws.s3.ObjectCreated:Copy\nce-subject: a b%0A%25\n"
           "ce-time: 2023-11-14T22:13:20.123Z\ncontent-type: application/json\n",
           "CloudEvents binary-mode headers (golden)");
    char sq[17];
    evt_sequencer(1, sq);
    char sq2[17];
    evt_sequencer(0x100, sq2);
    ok(strcmp(sq, sq2) < 0 && strlen(sq) == 16, "sequencers sort as strings");
    cm_buf_free(&b);
}

/* A version 2 record as the release before version 3 wrote it (u32
 * lengths, fixed-width numbers). */
static void encode_v2(const evt__rec *r, cm_buf *out)
{
    cm_buf_put_u8(out, 2);
    cm_buf_put_u8(out, r->dest_kind);
    cm_buf_put_bytes(out, CM_SLICE_STR(r->dest));
    cm_buf_put_bytes(out, CM_SLICE_STR(r->bucket));
    cm_buf_put_bytes(out, cm_buf_slice(&r->key));
    cm_buf_put_u32(out, r->type);
    cm_buf_put_u8(out, (uint8_t)r->depth);
    cm_buf_put_u64(out, (uint64_t)r->created_ms);
    cm_buf_put_u64(out, (uint64_t)r->time_ms);
    cm_buf_put_u64(out, r->evseq);
    cm_buf_put_u32(out, r->attempts);
    cm_buf_put_bytes(out, cm_buf_slice(&r->err));
    cm_buf_put_u64(out, r->size);
    cm_buf_put_bytes(out, cm_buf_slice(&r->etag));
    const char *p = (const char *)r->strs.p;
    for (int i = 0; i < EVT__REC_NSTR; i++) {
        cm_buf_put_bytes(out, CM_SLICE_STR(p));
        p += strlen(p) + 1;
    }
}

/* The outbox record: version 3 keeps the change in compact fields and
 * builds the message at delivery byte-identical to evt_record_json at
 * staging; version 2 (same fields, fixed widths) and version 1 (the
 * message stored) from older releases still decode and deliver the same. */
static void test_outbox_record(void)
{
    char owner[65];
    cm_hex_encode("0123456789abcdef0123456789abcdef", 32, owner);
    evt_change c = {
        .bucket = "photos",
        .key = CM_SLICE_STR("my dir/a+b%c \xc3\xa9.jpg"),
        .type = EVT_CREATED_PUT,
        .size = 4096,
        .etag = CM_SLICE_STR("0123456789abcdef0123456789abcdef"),
        .time_ms = 1700000000123LL,
        .region = "us-east-1",
        .principal = "AKID",
        .owner = owner,
        .source_ip = "127.0.0.1",
        .request_id = "18B0A3C4D5E6F701",
        .host_id = "cairn-18B0A3C4D5E6F701",
        .depth = 2,
    };
    for (int round = 0; round < 4; round++) {
        if (round == 1) { /* a removal with absent strings */
            c.type = EVT_REMOVED_DELETE;
            c.size = 0;
            c.etag = CM_SLICE(NULL, 0);
            c.principal = NULL;
            c.source_ip = NULL;
        } else if (round == 2) { /* what packs, half packs or does not */
            c.type = EVT_CREATED_COPY;
            c.key = CM_SLICE("AB\x00" "cd", 5);
            c.etag = CM_SLICE_STR("0123456789abcdef0123456789abcdef-12");
            c.owner = "aB";
            c.request_id = "cafe";
            c.host_id = "cafe"; /* the request id itself */
            c.principal = "0123";
        } else if (round == 3) { /* hex keys; a host id without the request id */
            c.key = CM_SLICE_STR("DEADBEEF");
            c.etag = CM_SLICE_STR("ABCDEF");
            c.request_id = "";
            c.host_id = "cairn-";
            c.owner = "owner1";
        }
        cm_buf want = {0}, v = {0}, tmp = {0}, v2 = {0}, old = {0};
        evt_record_json(&c, "cfg-1", 0x2a, &want);
        evt__rec r;
        memset(&r, 0, sizeof r);
        r.dest_kind = EVT_DEST_TARGET;
        snprintf(r.dest, sizeof r.dest, "hook");
        snprintf(r.bucket, sizeof r.bucket, "%s", c.bucket);
        cm_buf_append_slice(&r.key, c.key);
        r.type = c.type;
        r.depth = c.depth;
        r.created_ms = round == 3 ? 1699999999000LL : 1700000000999LL; /* before time_ms too */
        r.time_ms = c.time_ms;
        r.evseq = round == 2 ? UINT64_MAX : 0x2a;
        r.attempts = round == 2 ? UINT32_MAX : 0;
        ok(evt__rec_set_change(&r, &c, "cfg-1") == 0, "record set (%d)", round);
        ok(evt__rec_encode(&r, &v) == 0 && v.n && v.p[0] == 3, "record encodes as v3 (%d)", round);
        encode_v2(&r, &old);
        if (round == 0)
            ok(v.n * 10 < old.n * 6, "v3 record: %zu bytes, v2 wrote %zu", v.n, old.n);
        evt__rec d;
        ok(evt__rec_decode(cm_buf_slice(&v), &d) == 0, "v3 record decodes (%d)", round);
        ok(d.created_ms == r.created_ms && d.evseq == r.evseq && d.attempts == r.attempts &&
               d.key.n == r.key.n && !memcmp(d.key.p, r.key.p, r.key.n),
           "v3 record fields (%d)", round);
        if (r.evseq == UINT64_MAX)
            r.evseq = d.evseq = 0x2a; /* the message below is for sequencer 0x2a */
        cm_slice msg = {0};
        ok(evt__rec_message(&d, &tmp, &msg) == 0, "v3 message builds (%d)", round);
        ok(msg.n == want.n && !memcmp(msg.p, want.p, want.n),
           "v3 message byte-identical to staging-time JSON (%d)", round);
        cm_buf_reset(&v);
        evt__rec_encode(&r, &v);
        cm_buf_reset(&old);
        encode_v2(&r, &old);
        ok(evt__rec_encode(&d, &v2) == 0 && v2.n == v.n && !memcmp(v2.p, v.p, v.n),
           "v3 record re-encodes unchanged (%d)", round);
        /* Every truncation is refused, none read past the end. */
        bool refused = true;
        for (size_t n = 0; n < v.n; n++) {
            uint8_t *cut = malloc(n ? n : 1);
            memcpy(cut, v.p, n);
            evt__rec t;
            if (evt__rec_decode(CM_SLICE(cut, n), &t) != CM_ECORRUPT)
                refused = false;
            free(cut);
        }
        ok(refused, "truncated v3 records refused (%d)", round);
        evt__rec_free(&d);
        /* The same event as the release before wrote it. */
        cm_buf_reset(&v2);
        ok(evt__rec_decode(cm_buf_slice(&old), &d) == 0, "v2 record decodes (%d)", round);
        cm_buf_reset(&want);
        evt_record_json(&c, "cfg-1", r.evseq, &want);
        ok(evt__rec_message(&d, &tmp, &msg) == 0 && msg.n == want.n &&
               !memcmp(msg.p, want.p, want.n),
           "v2 record delivers the same message (%d)", round);
        ok(evt__rec_encode(&d, &v2) == 0 && v2.n == v.n && !memcmp(v2.p, v.p, v.n),
           "v2 record re-encodes as the v3 one (%d)", round);
        evt__rec_free(&d);
        evt__rec_free(&r);
        cm_buf_free(&want);
        cm_buf_free(&v);
        cm_buf_free(&v2);
        cm_buf_free(&old);
        cm_buf_free(&tmp);
    }

    /* Strings in forms no encoder writes still decode: a hex-packed
     * destination, a form-3 string with nothing before it is refused. */
    {
        static const uint8_t ok3[] = {3, 2, 1 << 2 | 1, 0xab, 1 << 2, 'b', 0 << 2, 0, 0, 0,
                                      0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
        evt__rec d;
        ok(evt__rec_decode(CM_SLICE(ok3, sizeof ok3), &d) == 0 && !strcmp(d.dest, "ab") &&
               !strcmp(d.bucket, "b"),
           "a hex-packed destination decodes");
        evt__rec_free(&d);
        uint8_t bad3[sizeof ok3];
        memcpy(bad3, ok3, sizeof ok3);
        bad3[2] = 1 << 2 | 3;
        ok(evt__rec_decode(CM_SLICE(bad3, sizeof bad3), &d) == CM_ECORRUPT,
           "a destination that repeats a string before it is refused");
    }

    /* A version 1 record as older releases wrote it. */
    const char *json = "{\"Records\":[{\"legacy\":true}]}";
    cm_buf v = {0}, v2 = {0}, tmp = {0};
    cm_buf_put_u8(&v, 1);
    cm_buf_put_u8(&v, EVT_DEST_FUNCTION);
    cm_buf_put_bytes(&v, CM_SLICE_STR("fn"));
    cm_buf_put_bytes(&v, CM_SLICE_STR("photos"));
    cm_buf_put_bytes(&v, CM_SLICE_STR("k"));
    cm_buf_put_u32(&v, EVT_CREATED_PUT);
    cm_buf_put_u8(&v, 1);
    cm_buf_put_u64(&v, 1700000000999ULL);
    cm_buf_put_u64(&v, 1700000000123ULL);
    cm_buf_put_u64(&v, 7);
    cm_buf_put_u32(&v, 3);
    cm_buf_put_bytes(&v, CM_SLICE_STR("boom"));
    cm_buf_put_bytes(&v, CM_SLICE_STR(json));
    evt__rec d;
    ok(evt__rec_decode(cm_buf_slice(&v), &d) == 0, "v1 record decodes");
    ok(d.ver == 1 && d.attempts == 3 && d.evseq == 7 && !strcmp(d.dest, "fn") &&
           d.dest_kind == EVT_DEST_FUNCTION && d.depth == 1,
       "v1 record fields");
    cm_slice msg = {0};
    ok(evt__rec_message(&d, &tmp, &msg) == 0 && msg.n == strlen(json) &&
           !memcmp(msg.p, json, msg.n),
       "v1 record delivers its stored message");
    d.attempts++;
    ok(evt__rec_encode(&d, &v2) == 0 && v2.n == v.n && v2.p[0] == 1,
       "v1 record re-encodes as v1 (retry update keeps the message)");
    evt__rec d2;
    ok(evt__rec_decode(cm_buf_slice(&v2), &d2) == 0 && d2.attempts == 4 &&
           d2.json.n == strlen(json),
       "updated v1 record decodes");
    evt__rec_free(&d2);
    evt__rec_free(&d);
    v.p[0] = 4;
    ok(evt__rec_decode(cm_buf_slice(&v), &d) == CM_ECORRUPT, "unknown version refused");
    v.p[0] = 2;
    ok(evt__rec_decode(cm_buf_slice(&v), &d) == CM_ECORRUPT, "v1 body under v2 refused");
    cm_buf_free(&v);
    cm_buf_free(&v2);
    cm_buf_free(&tmp);
}

static void test_backoff(void)
{
    evt_config c;
    evt_config_defaults(&c);
    c.backoff_ms = 100;
    c.backoff_max_ms = 1000;
    static const int64_t want[] = {100, 200, 400, 800, 1000, 1000, 1000};
    bool lo = true, hi = true, grows = true;
    for (unsigned a = 1; a <= 7; a++) {
        int64_t d0 = evt_backoff_ms(&c, a, 0), d1 = evt_backoff_ms(&c, a, 0xffffffffu);
        for (uint32_t rnd = 0; rnd < 2000; rnd += 7) {
            int64_t d = evt_backoff_ms(&c, a, rnd * 2654435761u);
            lo &= d >= want[a - 1] / 2;
            hi &= d <= want[a - 1];
        }
        grows &= d0 == want[a - 1] / 2 && d1 <= want[a - 1];
    }
    ok(lo && hi, "backoff lies in [d/2, d] with d = 100 * 2^(n-1) capped at 1000");
    ok(grows, "backoff jitter is bounded by the schedule");
    const char *why = NULL;
    ok(evt_config_parse("retries=3,backoff=50,backoff-max=400,max-depth=2", &c, &why) == 0 &&
           c.max_attempts == 3 && c.backoff_ms == 50 && c.backoff_max_ms == 400 &&
           c.max_depth == 2,
       "--events settings parse");
    ok(evt_config_parse("nope=1", &c, &why) == CM_EINVAL && why, "unknown setting refused");
    ok(evt_config_parse("log-max=65536", &c, &why) == 0 && c.log_max_bytes == 65536,
       "log-max parses");
    ok(evt_config_parse("log-max=10", &c, &why) == CM_EINVAL, "a tiny log-max is refused");
}

/* ------------------------------------------------------------ end to end */
static char g_dir[64];

static int rm_fn(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

struct hook_arg {
    evt_t *e;
    evt_change c;
    evt_staged *st;
};

static int hook(void *arg, md_batch_t *b, const md_object *cur, const md_object *next)
{
    struct hook_arg *h = arg;
    (void)cur;
    h->c.size = next ? next->size : 0;
    h->c.etag = next ? next->etag : CM_SLICE_NULL;
    return evt_stage(h->e, b, &h->c, &h->st);
}

/* The object "foo" (3 bytes, its MD5 as ETag), written now. */
static md_object foo_object(void)
{
    md_object o;
    memset(&o, 0, sizeof o);
    o.size = 3;
    o.mtime_ms = cm_now_ms();
    o.etag = CM_SLICE_STR("acbd18db4cc2f85cedef654fccc4a4d8");
    o.inline_data = CM_SLICE_STR("foo");
    return o;
}

static int put(md_db_t *md, evt_t *e, const char *key, uint32_t type, int depth)
{
    md_object o = foo_object();
    struct hook_arg h = {e, {.bucket = "b", .key = CM_SLICE_STR(key), .type = type,
                             .time_ms = cm_now_ms(), .region = "us-east-1", .principal = "p",
                             .owner = "o", .source_ip = "127.0.0.1", .request_id = "r",
                             .host_id = "h", .depth = depth},
                         NULL};
    md_write_opts wo = {NULL, NULL, hook, &h, 0};
    int rc = type & EVT_CREATED_ALL ? md_object_put_ex(md, "b", CM_SLICE_STR(key), &o, 0, &wo)
                                    : md_object_delete_ex(md, "b", CM_SLICE_STR(key), &wo);
    evt_staged_finish(e, h.st, rc == 0);
    return rc;
}

static size_t count_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[8192];
    size_t n = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

static bool wait_for(evt_t *e, bool (*cond)(evt_t *e, void *arg), void *arg, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        if (cond(e, arg))
            return true;
        usleep(10000);
    }
    return cond(e, arg);
}

static bool no_pending(evt_t *e, void *arg)
{
    (void)arg;
    evt_stats st;
    evt_get_stats(e, &st);
    return st.pending == 0;
}

static bool file_lines(evt_t *e, void *arg)
{
    (void)e;
    char path[128];
    snprintf(path, sizeof path, "%s/out", g_dir);
    return count_lines(path, "\"Records\"") >= *(size_t *)arg;
}

/* A fresh temp dir (dir, 64 bytes) with metadata in dir/meta holding bucket
 * "b", and c set to the defaults for it (no endpoint answers). False (and a
 * skip) when there is no temp dir. */
static bool fixture(char *dir, const char *what, md_db_t **md, evt_config *c)
{
    char path[160];

    snprintf(dir, 64, "/tmp/test_evt.XXXXXX");
    if (!mkdtemp(dir)) {
        skip("no temp dir");
        return false;
    }
    snprintf(path, sizeof path, "%s/meta", dir);
    ok(md_open(path, md) == 0, "metadata opens (%s)", what);
    md_bucket bk = {"b", cm_now_ms(), "us-east-1"};
    md_bucket_create(*md, &bk);
    evt_config_defaults(c);
    c->data_dir = dir;
    c->region = "us-east-1";
    c->endpoint = "http://127.0.0.1:1";
    return true;
}

static void test_end_to_end(void)
{
    md_db_t *md = NULL;
    evt_t *e = NULL;
    evt_config c;
    const char *why = NULL;
    char path[128], exec[256];
    cm_buf b = {0};

    if (!fixture(g_dir, "end to end", &md, &c))
        return;
    c.backoff_ms = 10;
    c.backoff_max_ms = 20;
    c.max_attempts = 3;
    c.workers = 2;
    c.max_depth = 2;
    c.log_max_bytes = 4096;
    ok(evt_start(&c, md, &e) == 0, "events start");
    /* A function log already past log-max: the next run rotates it. */
    snprintf(path, sizeof path, "%s/logs/functions", g_dir);
    ok(cm_mkdir_p(path, 0700) == 0, "function log dir");
    snprintf(path, sizeof path, "%s/logs/functions/bad.log", g_dir);
    FILE *junk = fopen(path, "w");
    for (int i = 0; junk && i < 100; i++)
        fprintf(junk, "old output line %03d ..................................................\n", i);
    if (junk)
        fclose(junk);

    snprintf(exec, sizeof exec, "cat >> %s/out; echo >> %s/out; echo ran $CAIRN_KEY", g_dir,
             g_dir);
    ok(evt_function_put(e, "good", exec, 5, 1, NULL, 0, &why) == 0, "function defined");
    ok(evt_function_put(e, "bad", "echo failing >&2; exit 3", 5, 1, NULL, 0, &why) == 0,
       "failing function defined");
    ok(evt_function_put(e, "bad name", "true", 5, 1, NULL, 0, &why) == CM_EINVAL,
       "bad function name refused");
    ok(evt_target_put(e, "t1", "redis", "redis://127.0.0.1:1/s", &why) == 0, "target defined");
    ok(evt_target_put(e, "t2", "redis", "redis://nohost", &why) == CM_EINVAL,
       "target URL without port/stream refused");

    evt_notify cfg = {0};
    evt_rule *r = evt_notify_add(&cfg);
    snprintf(r->id, sizeof r->id, "all");
    snprintf(r->arn, sizeof r->arn, "arn:cairn:lambda:us-east-1::function:good");
    r->events = EVT_CREATED_ALL | EVT_REMOVED_ALL;
    snprintf(r->names[r->nnames++], sizeof r->names[0], "s3:ObjectCreated:*");
    r = evt_notify_add(&cfg);
    snprintf(r->id, sizeof r->id, "bad");
    snprintf(r->arn, sizeof r->arn, "arn:cairn:lambda:us-east-1::function:bad");
    r->events = EVT_CREATED_PUT;
    r->has_prefix = true;
    cm_buf_append_str(&r->prefix, "fail/");
    ok(evt_notify_put(e, "b", &cfg, &why) == 0, "notification configuration stored");
    snprintf(r->arn, sizeof r->arn, "arn:cairn:lambda:us-east-1::function:nosuch");
    ok(evt_notify_put(e, "b", &cfg, &why) == CM_EINVAL && !strncmp(why, "Unable", 6),
       "unknown destination refused");
    snprintf(r->arn, sizeof r->arn, "arn:cairn:lambda:us-east-1::function:good");
    ok(evt_notify_put(e, "b", &cfg, &why) == CM_EINVAL && strstr(why, "overlap"),
       "overlapping rules refused");
    evt_notify_clear(&cfg);

    ok(put(md, e, "k1", EVT_CREATED_PUT, 0) == 0, "put k1");
    ok(put(md, e, "k1", EVT_REMOVED_DELETE, 0) == 0, "delete k1");
    ok(put(md, e, "k1", EVT_REMOVED_DELETE, 0) == CM_ENOTFOUND, "delete of a missing key");
    ok(put(md, e, "deep", EVT_CREATED_PUT, 2) == 0, "put at the depth limit");
    ok(put(md, e, "fail/x", EVT_CREATED_PUT, 0) == 0, "put fail/x");
    size_t want = 3;
    ok(wait_for(e, file_lines, &want, 30000), "the function got put, delete and fail/x events");
    ok(wait_for(e, no_pending, NULL, 5000), "nothing left pending");
    snprintf(path, sizeof path, "%s/out", g_dir);
    ok(count_lines(path, "ObjectRemoved:Delete") == 1, "exactly one delete event");
    ok(count_lines(path, "\"deep\"") == 0, "the recursion guard dropped the deep event");
    evt_stats st;
    evt_get_stats(e, &st);
    is_int(st.dead, 1, "the failing function's event was dead-lettered");
    is_int(st.dropped_depth, 1, "one event dropped by depth");
    evt_events_json(e, true, 10, &b);
    ok(strstr(cm_buf_str(&b), "exit status 3") && strstr(cm_buf_str(&b), "\"attempts\":3"),
       "dead letter shows attempts and the last error");
    cm_buf_reset(&b);
    snprintf(path, sizeof path, "%s/logs/functions/bad.log", g_dir);
    is_int(count_lines(path, "failing"), 3, "the failing function ran 3 times, output logged");
    is_int(count_lines(path, "old output"), 0, "the oversized log was rotated away");
    snprintf(path, sizeof path, "%s/logs/functions/bad.log.1", g_dir);
    is_int(count_lines(path, "old output"), 100, "... to bad.log.1, whole");
    snprintf(path, sizeof path, "%s/logs/functions/bad.log", g_dir);
    size_t n = 0;
    ok(evt_replay(e, NULL, 0, &n) == 0 && n == 1, "replay moves the dead letter back");
    ok(wait_for(e, no_pending, NULL, 5000), "replayed event handled again");
    is_int(count_lines(path, "failing"), 6, "replay re-ran it");
    evt_get_stats(e, &st);
    is_int(st.dead, 2, "and dead-lettered it again");

    evt_changes_json(e, "b", 0, 100, &b);
    cm_json_doc *d = NULL;
    ok(cm_json_parse(cm_buf_slice(&b), &d) == 0, "change log is JSON");
    const cm_json *ch = cm_json_get(cm_json_root(d), "changes");
    is_int(ch ? ch->n : 0, 4, "change log holds every change (even without a rule)");
    const char *first = ch && ch->child ? cm_json_get_str(ch->child, "sequencer") : NULL;
    cm_buf_reset(&b);
    if (first) {
        evt_changes_json(e, "b", strtoull(first, NULL, 16), 2, &b);
        ok(strstr(cm_buf_str(&b), "ObjectRemoved:Delete") && strstr(cm_buf_str(&b), "\"next\":\""),
           "--since resumes after a sequencer, with paging");
    } else {
        ok(0, "--since resumes after a sequencer");
    }
    cm_json_doc_free(d);
    cm_buf_free(&b);

    /* Restart: definitions and configuration come back from metadata. */
    evt_stop(e);
    e = NULL;
    ok(evt_start(&c, md, &e) == 0, "events restart");
    evt_notify got = {0};
    ok(evt_notify_get(e, "b", &got) == 0 && got.n == 2, "configuration survives a restart");
    evt_notify_clear(&got);
    ok(put(md, e, "k2", EVT_CREATED_PUT, 0) == 0, "put k2 after restart");
    want = 4;
    ok(wait_for(e, file_lines, &want, 30000), "delivered after restart");
    evt_stop(e);
    md_close(md);
    nftw(g_dir, rm_fn, 16, FTW_DEPTH | FTW_PHYS);
}


/* ------------------------------------------------- window and breaker */
/* Stores n pending events for destination (kind, dest) directly in the
 * outbox (non-sync puts: fast), seqs base.., keys "k<i % nkeys>". */
#define FILL_BASE (1ull << 19) /* below the ids a reopened database hands out */
static void fill_outbox(md_db_t *md, uint8_t kind, const char *dest, uint64_t base, size_t n,
                        size_t nkeys, int64_t created_ms)
{
    cm_buf v = {0};
    evt_change c = {.bucket = "b", .type = EVT_CREATED_PUT, .size = 3,
                    .etag = CM_SLICE_STR("acbd18db4cc2f85cedef654fccc4a4d8"),
                    .region = "us-east-1", .principal = "p", .owner = "o",
                    .source_ip = "127.0.0.1", .request_id = "r", .host_id = "h"};
    for (size_t i = 0; i < n; i++) {
        evt__rec r;
        char key[32];
        memset(&r, 0, sizeof r);
        snprintf(key, sizeof key, "k%zu", i % nkeys);
        r.dest_kind = kind;
        snprintf(r.dest, sizeof r.dest, "%s", dest);
        snprintf(r.bucket, sizeof r.bucket, "b");
        cm_buf_append_str(&r.key, key);
        r.type = EVT_CREATED_PUT;
        r.created_ms = created_ms;
        r.time_ms = created_ms;
        r.evseq = base + i;
        evt__rec_set_change(&r, &c, "cfg");
        cm_buf_reset(&v);
        evt__rec_encode(&r, &v);
        md_outbox_update(md, base + i, cm_buf_slice(&v));
        evt__rec_free(&r);
    }
    cm_buf_free(&v);
}

static int count_attempted(void *arg, uint64_t seq, cm_slice v)
{
    evt__rec r;
    (void)seq;
    if (evt__rec_decode(v, &r) == 0) {
        *(size_t *)arg += r.attempts > 0;
        evt__rec_free(&r);
    }
    return 0;
}

static void set_rule(evt_t *e, const char *arn)
{
    const char *why = NULL;
    evt_notify cfg = {0};
    evt_rule *r = evt_notify_add(&cfg);
    snprintf(r->id, sizeof r->id, "w");
    snprintf(r->arn, sizeof r->arn, "%s", arn);
    r->events = EVT_CREATED_ALL;
    snprintf(r->names[r->nnames++], sizeof r->names[0], "s3:ObjectCreated:*");
    ok(evt_notify_put(e, "b", &cfg, &why) == 0, "rule to %s", arn);
    evt_notify_clear(&cfg);
}

static bool all_dead(evt_t *e, void *arg)
{
    evt_stats st;
    evt_get_stats(e, &st);
    return st.dead >= *(size_t *)arg && st.pending == 0;
}

/* One change through *e (it reserves a block of ids), *e stopped (NULL),
 * the metadata in dir reopened into *md and n pending events for dest
 * written to its outbox over nkeys keys, as a restart with a backlog finds
 * them. */
static void backlog(md_db_t **md, evt_t **e, const char *dir, uint8_t kind, const char *dest,
                    size_t n, size_t nkeys)
{
    char path[160];

    put(*md, *e, "first", EVT_CREATED_PUT, 0);
    evt_stop(*e);
    *e = NULL;
    md_close(*md);
    snprintf(path, sizeof path, "%s/meta", dir);
    ok(md_open(path, md) == 0, "metadata reopens");
    fill_outbox(*md, kind, dest, FILL_BASE, n, nkeys, cm_now_ms());
}

static void test_window_down(void)
{
    md_db_t *md = NULL;
    evt_t *e = NULL;
    evt_config c;
    evt_stats st;
    const char *why = NULL;
    char dir[64], path[128];
    const size_t nfill = 50000;

    if (!fixture(dir, "window", &md, &c))
        return;
    c.backoff_ms = 20;
    c.backoff_max_ms = 40;
    c.max_attempts = 1000;
    c.workers = 3;
    ok(evt_start(&c, md, &e) == 0, "events start");
    ok(evt_target_put(e, "down", "redis", "redis://127.0.0.1:1/s", &why) == 0,
       "a target nothing listens for");
    set_rule(e, "arn:cairn:sqs:us-east-1::down");
    /* 50,000 pending events for the down target, then a restart (ids of
     * changes from now on sort after them, as they would). */
    backlog(&md, &e, dir, EVT_DEST_TARGET, "down", nfill, 1000);
    ok(evt_start(&c, md, &e) == 0, "events start with %zu pending", nfill);
    evt_get_stats(e, &st);
    is_int(st.pending, nfill + 1, "all of them count as pending");
    ok(st.resident <= (uint64_t)c.window, "at most a window in memory: %llu <= %d",
       (unsigned long long)st.resident, c.window);
    /* Changes go on while the target is down. */
    size_t maxres = st.resident;
    for (int i = 0; i < 200; i++) {
        char key[16];
        snprintf(key, sizeof key, "new%d", i);
        put(md, e, key, EVT_CREATED_PUT, 0);
        evt_get_stats(e, &st);
        if (st.resident > maxres)
            maxres = st.resident;
    }
    usleep(600 * 1000); /* many backoff periods: probes go out */
    evt_get_stats(e, &st);
    if (st.resident > maxres)
        maxres = st.resident;
    ok(maxres <= (uint64_t)c.window, "still at most a window in memory: %zu", maxres);
    is_int(st.pending, nfill + 201, "new events are pending too (in the outbox)");
    ok(st.probes >= 3, "the breaker sent probes (%llu)", (unsigned long long)st.probes);
    ok(st.failed <= st.probes + (uint64_t)c.workers,
       "only probes were tried (%llu failed, %llu probes)", (unsigned long long)st.failed,
       (unsigned long long)st.probes);
    size_t attempted = 0;
    md_outbox_scan(md, false, 0, count_attempted, &attempted);
    ok(attempted <= (size_t)c.workers,
       "waiting events are not rewritten: %zu records carry attempts", attempted);
    evt_stop(e);
    e = NULL;

    /* Max-age while the target stays down: dead-lettered without attempts,
     * a window at a time. */
    c.max_age_ms = 60000;
    c.window = 1000;
    md_close(md);
    nftw(dir, rm_fn, 16, FTW_DEPTH | FTW_PHYS);
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/meta", dir);
    ok(md_open(path, &md) == 0, "metadata opens (max-age)");
    md_bucket bk = {"b", cm_now_ms(), "us-east-1"};
    md_bucket_create(md, &bk);
    ok(evt_start(&c, md, &e) == 0, "events start");
    ok(evt_target_put(e, "down", "redis", "redis://127.0.0.1:1/s", &why) == 0, "target");
    set_rule(e, "arn:cairn:sqs:us-east-1::down");
    evt_stop(e);
    e = NULL;
    fill_outbox(md, EVT_DEST_TARGET, "down", FILL_BASE, 5000, 50, cm_now_ms() - 3600 * 1000);
    ok(evt_start(&c, md, &e) == 0, "events start with 5000 expired events");
    size_t want = 5000;
    ok(wait_for(e, all_dead, &want, 60000), "all dead-lettered by age while the target is down");
    evt_get_stats(e, &st);
    ok(st.failed <= st.probes + (uint64_t)c.workers, "with only probes tried (%llu)",
       (unsigned long long)st.failed);
    cm_buf b = {0};
    evt_events_json(e, true, 5000, &b);
    ok(strstr(cm_buf_str(&b), "\"attempts\":0") && strstr(cm_buf_str(&b), "target down: "),
       "dead letters say the target was down, attempts untouched");
    cm_buf_free(&b);
    evt_stop(e);
    md_close(md);
    nftw(dir, rm_fn, 16, FTW_DEPTH | FTW_PHYS);
}

/* Change-log entries: version 2 (compact) and version 1 (older releases)
 * list the same in `events changes`, and retention reads the time of both. */
static int hook_log_v1(void *arg, md_batch_t *b, const md_object *cur, const md_object *next)
{
    uint64_t seq = md_batch_seq(b);
    (void)cur;
    (void)next;
    return seq ? md_changelog_add(b, "b", seq, cm_buf_slice(arg)) : CM_EIO;
}

static size_t count_str(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

static void test_changelog(void)
{
    md_db_t *md = NULL;
    evt_t *e = NULL;
    evt_config c;
    char dir[64];
    cm_buf b = {0}, v1 = {0}, want = {0};
    static const char key[] = "k\x00\"\xc3\xa9 ab";
    cm_slice k = CM_SLICE(key, sizeof key - 1);

    if (!fixture(dir, "change log", &md, &c))
        return;
    int64_t week = c.retention_ms;
    /* The entries below are of 2023: no trim while they are listed (the
     * first trim runs as soon as the events start). */
    c.retention_ms = (int64_t)100 * 365 * 24 * 3600 * 1000;
    ok(evt_start(&c, md, &e) == 0, "events start");
    md_object o = foo_object();
    /* As an older release wrote it. */
    cm_buf_put_u8(&v1, 1);
    cm_buf_put_u32(&v1, EVT_CREATED_PUT);
    cm_buf_put_u64(&v1, 1700000000123ULL);
    cm_buf_put_u64(&v1, 3);
    cm_buf_put_bytes(&v1, o.etag);
    cm_buf_put_bytes(&v1, k);
    cm_buf_put_u8(&v1, 0);
    md_write_opts wo = {NULL, NULL, hook_log_v1, &v1, 0};
    ok(md_object_put_ex(md, "b", k, &o, 0, &wo) == 0, "a v1 change-log entry written");
    struct hook_arg h = {e, {.bucket = "b", .key = k, .type = EVT_CREATED_PUT,
                             .time_ms = 1700000000123LL, .region = "us-east-1"},
                         NULL};
    md_write_opts wo2 = {NULL, NULL, hook, &h, 0};
    ok(md_object_put_ex(md, "b", k, &o, 0, &wo2) == 0, "a v2 change-log entry written");
    evt_staged_finish(e, h.st, true);
    h.st = NULL;
    h.c.key = CM_SLICE_STR("now");
    h.c.time_ms = cm_now_ms();
    md_write_opts wo3 = {NULL, NULL, hook, &h, 0};
    ok(md_object_put_ex(md, "b", CM_SLICE_STR("now"), &o, 0, &wo3) == 0, "a recent one");
    evt_staged_finish(e, h.st, true);
    h.st = NULL;
    h.c.type = EVT_REMOVED_DELETE;
    ok(md_object_delete_ex(md, "b", CM_SLICE_STR("now"), &wo3) == 0, "and its removal");
    evt_staged_finish(e, h.st, true);

    cm_buf_append_str(&want, "\"eventName\":\"ObjectCreated:Put\","
                             "\"eventTime\":\"2023-11-14T22:13:20.123Z\",\"key\":");
    cm_json_str(&want, k);
    cm_buf_append_str(&want, ",\"size\":3,\"eTag\":\"acbd18db4cc2f85cedef654fccc4a4d8\"}");
    evt_changes_json(e, "b", 0, 100, &b);
    is_int(count_str(cm_buf_str(&b), cm_buf_str(&want)), 2,
           "v1 and v2 entries of the same change list the same");
    ok(strstr(cm_buf_str(&b), "\"eventName\":\"ObjectRemoved:Delete\"") &&
           strstr(cm_buf_str(&b), "\"key\":\"now\"}"),
       "a removal lists without size and ETag");
    evt_stop(e);
    e = NULL;
    /* Retention (7 days) at the next start drops the 2023 entries of both
     * versions and keeps the recent ones. */
    c.retention_ms = week;
    ok(evt_start(&c, md, &e) == 0, "events start again");
    bool trimmed = false;
    for (int i = 0; i < 500 && !trimmed; i++) {
        cm_buf_reset(&b);
        evt_changes_json(e, "b", 0, 100, &b);
        trimmed = !strstr(cm_buf_str(&b), "2023-11-14");
        if (!trimmed)
            usleep(10000);
    }
    ok(trimmed, "expired v1 and v2 entries trimmed");
    is_int(count_str(cm_buf_str(&b), "\"sequencer\""), 2, "recent entries kept");
    evt_stop(e);
    md_close(md);
    nftw(dir, rm_fn, 16, FTW_DEPTH | FTW_PHYS);
    cm_buf_free(&b);
    cm_buf_free(&v1);
    cm_buf_free(&want);
}

/* md_outbox_update_many: the failed events of one pipelined call are
 * rewritten in one batch; each keeps its own record. */
static int collect_recs(void *arg, uint64_t seq, cm_slice v)
{
    cm_buf *b = arg;
    cm_buf_printf(b, "%llu=%.*s;", (unsigned long long)seq, (int)v.n, (const char *)v.p);
    return 0;
}

static void test_outbox_update_many(void)
{
    md_db_t *md = NULL;
    evt_config c;
    char dir[64];
    cm_buf b = {0};
    if (!fixture(dir, "update many", &md, &c))
        return;
    uint64_t seqs[3] = {7, 9, 8};
    cm_slice recs[3] = {CM_SLICE_STR("a"), CM_SLICE_STR("b"), CM_SLICE_STR("c")};
    ok(md_outbox_update_many(md, seqs, recs, 3) == 0, "three records in one write");
    ok(md_outbox_update_many(md, seqs, recs, 0) == 0, "none: nothing to write");
    recs[0] = CM_SLICE_STR("a2");
    ok(md_outbox_update_many(md, seqs, recs, 1) == 0, "one rewritten");
    md_outbox_scan(md, false, 0, collect_recs, &b);
    is_str(cm_buf_str(&b), "7=a2;8=c;9=b;", "each seq holds its own record");
    md_close(md);
    nftw(dir, rm_fn, 16, FTW_DEPTH | FTW_PHYS);
    cm_buf_free(&b);
}

/* Refills: a small window drains a longer backlog in seq order per key
 * while new changes keep coming. */
static bool drained(evt_t *e, void *arg)
{
    evt_stats st;
    evt_get_stats(e, &st);
    size_t *a = arg; /* a[0] want delivered, a[1] max resident seen, a[2] window */
    if (st.resident > a[1])
        a[1] = st.resident;
    return st.delivered >= a[0] && st.pending == 0;
}

static void test_window_refill(void)
{
    md_db_t *md = NULL;
    evt_t *e = NULL;
    evt_config c;
    const char *why = NULL;
    char dir[64], path[160], exec[300];
    const size_t nfill = 600, nlive = 60;

    if (!fixture(dir, "refill", &md, &c))
        return;
    c.workers = 4;
    c.window = 16;
    ok(evt_start(&c, md, &e) == 0, "events start");
    snprintf(exec, sizeof exec, "printf '%%s\\n' \"$(cat)\" >> %s/out", dir); /* one write */
    ok(evt_function_put(e, "ord", exec, 5, 4, NULL, 0, &why) == 0, "function defined");
    set_rule(e, "arn:cairn:lambda:us-east-1::function:ord");
    backlog(&md, &e, dir, EVT_DEST_FUNCTION, "ord", nfill, 7);
    ok(evt_start(&c, md, &e) == 0, "events start with %zu pending, window %d", nfill, c.window);
    size_t a[3] = {nfill + nlive + 1, 0, (size_t)c.window};
    for (size_t i = 0; i < nlive; i++) {
        char key[16];
        snprintf(key, sizeof key, "live%zu", i % 5);
        put(md, e, key, EVT_CREATED_PUT, 0);
        drained(e, a);
    }
    ok(wait_for(e, drained, a, 90000), "backlog and new events all delivered");
    ok(a[1] <= (size_t)c.window + c.workers, "resident stayed near the window: %zu", a[1]);
    /* Per key, sequencers increase in delivery order. */
    snprintf(path, sizeof path, "%s/out", dir);
    FILE *f = fopen(path, "r");
    char line[8192], last[16][20];
    size_t n = 0, bad = 0;
    memset(last, 0, sizeof last);
    while (f && fgets(line, sizeof line, f)) {
        const char *k = strstr(line, "\"key\":\""), *q = strstr(line, "\"sequencer\":\"");
        if (!k || !q)
            continue;
        k += 7;
        q += 13;
        int slot = k[0] == 'k' ? atoi(k + 1) : k[0] == 'l' ? 8 + atoi(k + 4) : 15;
        if (slot < 0 || slot >= 16)
            continue;
        if (last[slot][0] && strncmp(q, last[slot], 16) <= 0)
            bad++;
        memcpy(last[slot], q, 16);
        n++;
    }
    if (f)
        fclose(f);
    is_int(n, nfill + nlive + 1, "every event delivered once");
    is_int(bad, 0, "in sequencer order per key");
    evt_stop(e);
    md_close(md);
    nftw(dir, rm_fn, 16, FTW_DEPTH | FTW_PHYS);
}


/* ------------------------------------------------ pipelined webhooks */
/* A small HTTP/1.1 server on 127.0.0.1: a thread per connection that
 * parses requests as they come (several may arrive in one read), notes
 * each event's key and sequencer, and answers in turn 100 Continue + a
 * chunked 200, a 204, a 200 with a sized body and a 202 with
 * "Connection: close" after which it closes (requests already sent behind
 * it go unanswered). The first request for key "k7" gets a 500 (the
 * target in trouble), the first for "k3" a 400 (that event refused). */
#define PIPE_MAX 4096
static struct {
    int lfd;
    pthread_mutex_t lk;
    char keys[PIPE_MAX][16];
    uint64_t seqs[PIPE_MAX];
    size_t n;          /* requests answered with 2xx */
    size_t max_batch;  /* most whole requests found in the buffer at once */
    size_t conns;
    bool failed_k7;
    bool refused_k3;
    int proto; /* 0 HTTP, 1 Redis, 2 NATS */
    volatile bool stop;
} g_ps = {.lk = PTHREAD_MUTEX_INITIALIZER};

/* Key and sequencer of the S3 event message in body. */
static void pipe_event(const char *body, size_t blen, char key[16], uint64_t *seq)
{
    const char *k = memmem(body, blen, "\"key\":\"", 7);
    const char *sq = memmem(body, blen, "\"sequencer\":\"", 13);
    key[0] = 0;
    *seq = 0;
    if (k)
        sscanf(k + 7, "%15[^\"]", key);
    if (sq)
        *seq = strtoull(sq + 13, NULL, 16);
}

/* Records a stored event; true every fourth time (the server then closes
 * the connection after answering). With g_ps.lk held. */
static bool pipe_store(const char *key, uint64_t seq)
{
    if (g_ps.n < PIPE_MAX) {
        size_t n = strnlen(key, sizeof g_ps.keys[0] - 1);
        memcpy(g_ps.keys[g_ps.n], key, n);
        g_ps.keys[g_ps.n][n] = 0;
        g_ps.seqs[g_ps.n] = seq;
    }
    return ++g_ps.n % 4 == 0;
}

/* Notes n whole requests found in one read. */
static void pipe_note_batch(size_t n)
{
    pthread_mutex_lock(&g_ps.lk);
    if (n > g_ps.max_batch)
        g_ps.max_batch = n;
    pthread_mutex_unlock(&g_ps.lk);
}

/* Length of the RESP array of bulk strings at p (0: incomplete), and its
 * element el. */
static size_t resp_cmd(const char *p, size_t n, int el, cm_slice *out)
{
    const char *e = p + n, *q = p;
    if (n < 4 || *q != '*')
        return 0;
    char *end;
    long cnt = strtol(q + 1, &end, 10);
    if (end + 2 > e || end[0] != '\r')
        return 0;
    q = end + 2;
    for (long i = 0; i < cnt; i++) {
        if (q >= e || *q != '$')
            return 0;
        long len = strtol(q + 1, &end, 10);
        if (end + 2 > e)
            return 0;
        q = end + 2;
        if (q + len + 2 > e)
            return 0;
        if (i == el)
            *out = CM_SLICE(q, (size_t)len);
        q += len + 2;
    }
    return (size_t)(q - p);
}

/* A Redis server: XADD answered with an id; the first event for "k7" gets
 * an -OOM error (the target in trouble); after every fourth stored event
 * the connection closes (commands behind it go unanswered). */
static void *redis_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    cm_buf in = {0};
    char buf[65536];
    bool closed = false;
    while (!closed) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r <= 0)
            break;
        cm_buf_append(&in, buf, (size_t)r);
        size_t ncmd = 0, len;
        cm_slice json = {0};
        while (!closed && (len = resp_cmd((const char *)in.p, in.n, 4, &json)) > 0) {
            char key[16];
            uint64_t seq;
            const char *ans = "$15\r\n1700000000000-0\r\n";
            ncmd++;
            pipe_event((const char *)json.p, json.n, key, &seq);
            pthread_mutex_lock(&g_ps.lk);
            if (!strcmp(key, "k7") && !g_ps.failed_k7) {
                g_ps.failed_k7 = true;
                ans = "-OOM command not allowed when used memory > 'maxmemory'.\r\n";
            } else {
                closed = pipe_store(key, seq);
            }
            pthread_mutex_unlock(&g_ps.lk);
            if (send(fd, ans, strlen(ans), MSG_NOSIGNAL) < 0)
                closed = true;
            memmove(in.p, in.p + len, in.n - len);
            in.n -= len;
        }
        pipe_note_batch(ncmd);
    }
    close(fd);
    cm_buf_free(&in);
    return NULL;
}

/* A NATS server: INFO, then PUBs are held until a PING, whose PONG stores
 * them; the first PING after an event for "k7" gets an -ERR and a close
 * instead (those PUBs are lost, as a server may lose them). Every other
 * PONG is preceded by a PING of the server's own; after every fourth
 * stored event the connection closes after the PONG. */
static void *nats_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    cm_buf in = {0};
    char buf[65536], keys[PIPE_MAX][16];
    uint64_t seqs[PIPE_MAX];
    size_t held = 0;
    unsigned pings = 0;
    bool closed = false;
    const char *info = "INFO {\"server_id\":\"test\",\"max_payload\":1048576}\r\n";
    if (send(fd, info, strlen(info), MSG_NOSIGNAL) < 0)
        closed = true;
    while (!closed) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r <= 0)
            break;
        cm_buf_append(&in, buf, (size_t)r);
        size_t npub = 0;
        for (;;) {
            const char *p = (const char *)in.p, *nl = in.n ? memchr(p, '\n', in.n) : NULL;
            if (!nl)
                break;
            size_t used = (size_t)(nl + 1 - p);
            if (!strncmp(p, "PUB ", 4)) {
                const char *sp = memrchr(p, ' ', (size_t)(nl - p));
                size_t plen = sp ? strtoul(sp + 1, NULL, 10) : 0;
                if (in.n < used + plen + 2)
                    break;
                if (held < PIPE_MAX)
                    pipe_event(nl + 1, plen, keys[held], &seqs[held]), held++;
                used += plen + 2;
                npub++;
            } else if (!strncmp(p, "PING", 4)) {
                bool fail = false, close_after = false;
                pthread_mutex_lock(&g_ps.lk);
                for (size_t i = 0; i < held && !g_ps.failed_k7; i++)
                    fail |= !strcmp(keys[i], "k7");
                if (fail)
                    g_ps.failed_k7 = true;
                else
                    for (size_t i = 0; i < held; i++)
                        close_after |= pipe_store(keys[i], seqs[i]);
                pthread_mutex_unlock(&g_ps.lk);
                held = 0;
                const char *ans = fail               ? "-ERR 'Permissions Violation'\r\n"
                                  : pings++ % 2 == 0 ? "PING\r\nPONG\r\n"
                                                     : "PONG\r\n";
                if (send(fd, ans, strlen(ans), MSG_NOSIGNAL) < 0 || fail || close_after)
                    closed = true;
            } /* CONNECT, the client's PONG: nothing to do */
            memmove(in.p, in.p + used, in.n - used);
            in.n -= used;
            if (closed)
                break;
        }
        pipe_note_batch(npub);
    }
    close(fd);
    cm_buf_free(&in);
    return NULL;
}

static void *pipe_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    cm_buf in = {0};
    unsigned turn = 0;
    char buf[65536];
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r <= 0)
            break;
        cm_buf_append(&in, buf, (size_t)r);
        size_t nreq = 0;
        bool closed = false;
        for (;;) {
            const char *p = (const char *)in.p;
            const char *he = in.n ? memmem(p, in.n, "\r\n\r\n", 4) : NULL;
            if (!he)
                break;
            const char *cl = strcasestr(p, "Content-Length:");
            size_t blen = cl && cl < he ? strtoul(cl + 15, NULL, 10) : 0;
            size_t total = (size_t)(he + 4 - p) + blen;
            if (in.n < total)
                break;
            nreq++;
            char key[16];
            uint64_t seq;
            pipe_event(he + 4, blen, key, &seq);
            const char *ans;
            pthread_mutex_lock(&g_ps.lk);
            bool fail = !strcmp(key, "k7") && !g_ps.failed_k7;
            bool refuse = !strcmp(key, "k3") && !g_ps.refused_k3;
            if (fail) {
                g_ps.failed_k7 = true;
                ans = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nnope";
            } else if (refuse) {
                g_ps.refused_k3 = true;
                ans = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
            } else {
                if (g_ps.n < PIPE_MAX) {
                    snprintf(g_ps.keys[g_ps.n], sizeof g_ps.keys[0], "%s", key);
                    g_ps.seqs[g_ps.n] = seq;
                }
                g_ps.n++;
                switch (turn++ % 4) {
                case 0:
                    ans = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
                    break;
                case 1:
                    ans = "HTTP/1.1 204 No Content\r\n\r\n";
                    break;
                case 2:
                    ans = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    break;
                default:
                    ans = "HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
                    closed = true;
                }
            }
            pthread_mutex_unlock(&g_ps.lk);
            if (send(fd, ans, strlen(ans), MSG_NOSIGNAL) < 0)
                closed = true;
            memmove(in.p, in.p + total, in.n - total);
            in.n -= total;
            if (closed)
                break;
        }
        pipe_note_batch(nreq);
        if (closed)
            break;
    }
    close(fd);
    cm_buf_free(&in);
    return NULL;
}

static void *pipe_accept(void *arg)
{
    (void)arg;
    while (!g_ps.stop) {
        int fd = accept(g_ps.lfd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_t t;
        pthread_mutex_lock(&g_ps.lk);
        g_ps.conns++;
        pthread_mutex_unlock(&g_ps.lk);
        void *(*fn)(void *) = g_ps.proto == 1 ? redis_conn : g_ps.proto == 2 ? nats_conn : pipe_conn;
        if (pthread_create(&t, NULL, fn, (void *)(intptr_t)fd) == 0)
            pthread_detach(t);
        else
            close(fd);
    }
    return NULL;
}

static bool pipe_got(evt_t *e, void *arg)
{
    evt_stats st;
    evt_get_stats(e, &st);
    return st.delivered >= *(size_t *)arg && st.pending == 0;
}

/* Events for 10 keys to a target of kind at the local server of g_ps.proto,
 * through failures and closed connections: every event arrives, in order
 * per key, pipelined. */
static void test_pipeline(int proto, const char *kind, const char *url_fmt)
{
    md_db_t *md = NULL;
    evt_t *e = NULL;
    evt_config c;
    const char *why = NULL;
    char dir[64], url[128];
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    pthread_t acc;
    const size_t nev = 400, nkeys = 10;

    pthread_mutex_lock(&g_ps.lk);
    g_ps.n = g_ps.max_batch = g_ps.conns = 0;
    g_ps.failed_k7 = g_ps.refused_k3 = false;
    g_ps.proto = proto;
    g_ps.stop = false;
    pthread_mutex_unlock(&g_ps.lk);
    g_ps.lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (g_ps.lfd < 0 || bind(g_ps.lfd, (struct sockaddr *)&sa, sizeof sa) ||
        listen(g_ps.lfd, 16) || getsockname(g_ps.lfd, (struct sockaddr *)&sa, &sl) ||
        pthread_create(&acc, NULL, pipe_accept, NULL)) {
        skip("no loopback listener");
        return;
    }
    if (!fixture(dir, kind, &md, &c))
        return;
    c.backoff_ms = 10;
    c.backoff_max_ms = 20;
    c.workers = 2;
    ok(evt_start(&c, md, &e) == 0, "events start");
    snprintf(url, sizeof url, url_fmt, ntohs(sa.sin_port));
    ok(evt_target_put(e, "hook", kind, url, &why) == 0, "%s target %s", kind, url);
    set_rule(e, "arn:cairn:sqs:us-east-1::hook");
    for (size_t i = 0; i < nev; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%zu", i % nkeys);
        put(md, e, key, EVT_CREATED_PUT, 0);
    }
    size_t want = nev;
    ok(wait_for(e, pipe_got, &want, 60000), "all %zu events delivered", nev);
    evt_stats st;
    evt_get_stats(e, &st);
    is_int(st.dead, 0, "none dead-lettered");
    if (proto == 0)
        ok(st.failed >= 2, "the 500 and the 400 counted as failed attempts (%llu)",
           (unsigned long long)st.failed);
    else
        ok(st.failed >= 1, "the %s error counted as a failed attempt (%llu)", kind,
           (unsigned long long)st.failed);
    pthread_mutex_lock(&g_ps.lk);
    /* At least once: a request behind a close may have been answered
     * never, and so sent again, but every event arrived, and for each key
     * the first arrivals came in sequencer order. */
    size_t n = g_ps.n < PIPE_MAX ? g_ps.n : PIPE_MAX, distinct = 0;
    bool ordered = true;
    for (size_t k = 0; k < nkeys; k++) {
        char key[16];
        uint64_t last = 0;
        snprintf(key, sizeof key, "k%zu", k);
        for (size_t i = 0; i < n; i++) {
            if (strcmp(g_ps.keys[i], key))
                continue;
            if (g_ps.seqs[i] > last) {
                distinct++;
                last = g_ps.seqs[i];
            } else if (g_ps.seqs[i] < last) {
                bool seen = false; /* a resend of one already delivered is fine */
                for (size_t j = 0; j < i && !seen; j++)
                    seen = g_ps.seqs[j] == g_ps.seqs[i];
                ordered &= seen;
            }
        }
    }
    is_int(distinct, nev, "%s: the server got every event", kind);
    ok(ordered, "%s: per key, events arrived in sequencer order", kind);
    ok(g_ps.max_batch > 1, "%s: requests were pipelined (up to %zu at once)", kind, g_ps.max_batch);
    ok(g_ps.conns > 2, "%s: connections closed by the server were replaced (%zu)", kind, g_ps.conns);
    pthread_mutex_unlock(&g_ps.lk);
    evt_stop(e);
    md_close(md);
    g_ps.stop = true;
    shutdown(g_ps.lfd, SHUT_RDWR);
    close(g_ps.lfd);
    pthread_join(acc, NULL);
    nftw(dir, rm_fn, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    cm_log_level = CM_LOG_ERROR;
    test_names();
    test_match();
    test_overlap();
    test_arn();
    test_config_roundtrip();
    test_record();
    test_outbox_record();
    test_backoff();
    test_end_to_end();
    test_changelog();
    test_outbox_update_many();
    test_window_down();
    test_window_refill();
    test_pipeline(0, "webhook", "http://127.0.0.1:%d/hook?x=1");
    test_pipeline(1, "redis", "redis://127.0.0.1:%d/stream");
    test_pipeline(2, "nats", "nats://127.0.0.1:%d/subject");
    return done_testing();
}
