/* events/record.c - the S3 event message (Records[], eventVersion 2.1) and
 * its CloudEvents 1.0 binary-mode headers, the sequencer format, and the
 * retry schedule. Pure functions: no storage, no threads, no I/O. */
#include "common/json.h"
#include "events/evt.h"

#include <stdio.h>

void evt_sequencer(uint64_t seq, char *out)
{
    snprintf(out, 17, "%016llX", (unsigned long long)seq);
}

/* URL-encodes a key the way S3 event records carry it: unreserved
 * characters and '/' as is, space as '+', everything else %XX. */
static int key_encode(cm_buf *b, cm_slice key)
{
    static const char hex[] = "0123456789ABCDEF";
    int rc = cm_buf_reserve(b, key.n * 3);
    for (size_t i = 0; !rc && i < key.n; i++) {
        uint8_t c = key.p[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~' || c == '/') {
            rc = cm_buf_append_byte(b, c);
        } else if (c == ' ') {
            rc = cm_buf_append_byte(b, '+');
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            rc = cm_buf_append(b, e, 3);
        }
    }
    return rc;
}

int evt_record_json(const evt_change *c, const char *config_id, uint64_t seq, cm_buf *out)
{
    char t[32], sq[17];
    cm_buf k = {0};
    int rc;

    cm_time_iso8601_ms(c->time_ms, t);
    evt_sequencer(seq, sq);
    if ((rc = key_encode(&k, c->key)))
        goto out;
    cm_buf_append_str(out, "{\"Records\":[{\"eventVersion\":\"2.1\",\"eventSource\":\"aws:s3\","
                           "\"awsRegion\":");
    cm_json_cstr(out, c->region);
    cm_buf_printf(out, ",\"eventTime\":\"%s\",\"eventName\":", t);
    cm_json_cstr(out, evt_type_name(c->type));
    cm_buf_append_str(out, ",\"userIdentity\":{\"principalId\":");
    cm_json_cstr(out, c->principal);
    cm_buf_append_str(out, "},\"requestParameters\":{\"sourceIPAddress\":");
    cm_json_cstr(out, c->source_ip);
    cm_buf_append_str(out, "},\"responseElements\":{\"x-amz-request-id\":");
    cm_json_cstr(out, c->request_id);
    cm_buf_append_str(out, ",\"x-amz-id-2\":");
    cm_json_cstr(out, c->host_id);
    cm_buf_append_str(out, "},\"s3\":{\"s3SchemaVersion\":\"1.0\",\"configurationId\":");
    cm_json_cstr(out, config_id);
    cm_buf_append_str(out, ",\"bucket\":{\"name\":");
    cm_json_cstr(out, c->bucket);
    cm_buf_append_str(out, ",\"ownerIdentity\":{\"principalId\":");
    cm_json_cstr(out, c->owner);
    cm_buf_printf(out, "},\"arn\":\"arn:aws:s3:::%s\"},\"object\":{\"key\":", c->bucket);
    cm_json_str(out, cm_buf_slice(&k));
    if (c->type & EVT_CREATED_ALL) {
        cm_buf_printf(out, ",\"size\":%llu,\"eTag\":", (unsigned long long)c->size);
        cm_json_str(out, c->etag);
    }
    rc = cm_buf_printf(out, ",\"sequencer\":\"%s\"}}}]}", sq);
out:
    cm_buf_free(&k);
    return rc < 0 ? rc : 0;
}

int evt_cloudevents_headers(const char *bucket, cm_slice key, uint32_t type, int64_t time_ms,
                            const char *id, cm_buf *out)
{
    char t[32];
    cm_time_iso8601_ms(time_ms, t);
    cm_buf_printf(out, "ce-specversion: 1.0\nce-id: %s\nce-source: arn:aws:s3:::%s\n"
                       "ce-type: com.amazonaws.s3.%s\nce-subject: ",
                  id, bucket, evt_type_name(type));
    /* A header value cannot carry CR, LF or NUL: percent-encode those. */
    for (size_t i = 0; i < key.n; i++) {
        uint8_t c = key.p[i];
        if (c == '\r' || c == '\n' || c == 0 || c == '%' || c >= 0x80)
            cm_buf_printf(out, "%%%02X", c);
        else
            cm_buf_append_byte(out, c);
    }
    return cm_buf_printf(out, "\nce-time: %s\ncontent-type: application/json\n", t) < 0
               ? CM_ENOMEM
               : 0;
}

int64_t evt_backoff_ms(const evt_config *cfg, unsigned attempt, uint32_t rnd)
{
    int64_t d = cfg->backoff_ms > 0 ? cfg->backoff_ms : 1;
    for (unsigned i = 1; i < attempt && d < cfg->backoff_max_ms; i++)
        d *= 2;
    if (d > cfg->backoff_max_ms)
        d = cfg->backoff_max_ms;
    if (d < 2)
        return d;
    return d / 2 + (int64_t)(rnd % (uint32_t)(d - d / 2 + 1));
}
