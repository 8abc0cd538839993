/* gateway/s3_notify.c - PutBucketNotificationConfiguration and
 * GetBucketNotificationConfiguration (?notification): the S3 XML of
 * Topic/Queue/CloudFunction(Lambda) configurations to and from the rules of
 * the events part (events/evt.h), which validates and stores them. */
#include "events/evt.h"
#include "gateway/gw_int.h"
#include <stdio.h>

static const struct {
    const char *elem; /* configuration element */
    const char *arn;  /* its ARN element */
    enum evt_section sec;
} sections[] = {
    {"TopicConfiguration", "Topic", EVT_SEC_TOPIC},
    {"QueueConfiguration", "Queue", EVT_SEC_QUEUE},
    {"CloudFunctionConfiguration", "CloudFunction", EVT_SEC_FUNCTION},
    {"LambdaFunctionConfiguration", "CloudFunction", EVT_SEC_FUNCTION},
};

/* Parses one configuration element into rule; false with an error set. */
static bool parse_rule(gw_req *r, gw_xnode *c, size_t si, evt_rule *rule)
{
    gw_xnode *arn = gw_xml_child(c, sections[si].arn);
    if (!arn && !strcmp(sections[si].elem, "LambdaFunctionConfiguration"))
        arn = gw_xml_child(c, "LambdaFunctionArn");
    gw_xnode *id = gw_xml_child(c, "Id");
    rule->section = sections[si].sec;
    if (!arn || arn->text.n == 0 || arn->text.n >= sizeof rule->arn) {
        gw_error(r, S3E_MalformedXML);
        return false;
    }
    memcpy(rule->arn, arn->text.p, arn->text.n);
    if (id && id->text.n) {
        if (id->text.n >= sizeof rule->id) {
            gw_error_msg(r, S3E_InvalidArgument, "The Id is too long.");
            return false;
        }
        memcpy(rule->id, id->text.p, id->text.n);
    } else {
        uint8_t rnd[12];
        char b64[24];
        cm_random_bytes(rnd, sizeof rnd);
        cm_base64_encode(rnd, sizeof rnd, b64);
        snprintf(rule->id, sizeof rule->id, "%s", b64);
    }
    for (gw_xnode *x = c->child; x; x = x->next) {
        if (!strcmp(x->name, "Event")) {
            uint32_t m;
            if (evt_name_parse(x->text, &m)) {
                gw_error_msg(r, S3E_InvalidArgument,
                             "The event is not supported for notifications");
                gw_error_extra(r, "ArgumentName", CM_SLICE_STR("Event"));
                gw_error_extra(r, "ArgumentValue", x->text);
                return false;
            }
            if (rule->nnames == EVT_MAX_NAMES) {
                gw_error_msg(r, S3E_InvalidArgument, "Too many events in one configuration.");
                return false;
            }
            snprintf(rule->names[rule->nnames++], sizeof rule->names[0], "%.*s",
                     (int)x->text.n, (const char *)x->text.p);
            rule->events |= m;
        } else if (!strcmp(x->name, "Filter")) {
            gw_xnode *k = gw_xml_child(x, "S3Key");
            for (gw_xnode *fr = k ? k->child : NULL; fr; fr = fr->next) {
                if (strcmp(fr->name, "FilterRule"))
                    continue;
                gw_xnode *n = gw_xml_child(fr, "Name"), *v = gw_xml_child(fr, "Value");
                bool pfx = n && cm_slice_case_eq_str(n->text, "prefix");
                bool sfx = n && cm_slice_case_eq_str(n->text, "suffix");
                if (!n || !v || (!pfx && !sfx)) {
                    gw_error_msg(r, S3E_InvalidArgument,
                                 "filter rule name must be either prefix or suffix");
                    return false;
                }
                if ((pfx && rule->has_prefix) || (sfx && rule->has_suffix) ||
                    v->text.n > MD_KEY_MAX) {
                    gw_error_msg(r, S3E_InvalidArgument,
                                 "Cannot specify more than one prefix or suffix rule in a filter.");
                    return false;
                }
                cm_buf *dst = pfx ? &rule->prefix : &rule->suffix;
                cm_buf_append_slice(dst, v->text);
                if (pfx)
                    rule->has_prefix = true;
                else
                    rule->has_suffix = true;
            }
        }
    }
    if (!rule->nnames) {
        gw_error(r, S3E_MalformedXML);
        return false;
    }
    return true;
}

void gw_put_bucket_notification(gw_req *r)
{
    evt_notify cfg = {0};
    void *doc = NULL;
    const char *why = NULL;

    if (!gw_bucket_exists(r))
        return;
    gw_xnode *root = gw_xml_parse(cm_buf_slice(&r->body), &doc);
    if (!root || strcmp(root->name, "NotificationConfiguration")) {
        gw_error(r, S3E_MalformedXML);
        goto out;
    }
    for (gw_xnode *c = root->child; c; c = c->next) {
        size_t si;
        for (si = 0; si < sizeof sections / sizeof sections[0]; si++)
            if (!strcmp(c->name, sections[si].elem))
                break;
        if (si == sizeof sections / sizeof sections[0]) {
            if (!strcmp(c->name, "EventBridgeConfiguration"))
                continue; /* not supported here; accepted and ignored */
            gw_error(r, S3E_MalformedXML);
            goto out;
        }
        evt_rule *rule = evt_notify_add(&cfg);
        if (!rule) {
            gw_error_msg(r, S3E_InvalidArgument, "Too many notification configurations.");
            goto out;
        }
        if (!parse_rule(r, c, si, rule))
            goto out;
    }
    int rc = evt_notify_put(r->srv->evt, r->bucket, &cfg, &why);
    if (rc == CM_EINVAL) {
        gw_error_msg(r, S3E_InvalidArgument, why);
    } else if (rc) {
        gw_error(r, gw_s3err_from_cm(rc, S3E_InternalError));
    }
out:
    evt_notify_clear(&cfg);
    gw_xml_doc_free(doc);
}

void gw_get_bucket_notification(gw_req *r)
{
    evt_notify cfg = {0};
    if (!gw_bucket_exists(r))
        return;
    if (evt_notify_get(r->srv->evt, r->bucket, &cfg)) {
        gw_error(r, S3E_InternalError);
        return;
    }
    cm_buf *b = &r->resp_body;
    gw_xml_start(b, "NotificationConfiguration");
    for (size_t i = 0; i < cfg.n; i++) {
        const evt_rule *ru = &cfg.a[i];
        size_t si = ru->section == EVT_SEC_TOPIC ? 0 : ru->section == EVT_SEC_QUEUE ? 1 : 2;
        gw_xml_open(b, sections[si].elem);
        gw_xml_elem(b, "Id", ru->id);
        gw_xml_elem(b, sections[si].arn, ru->arn);
        for (size_t j = 0; j < ru->nnames; j++)
            gw_xml_elem(b, "Event", ru->names[j]);
        if (ru->has_prefix || ru->has_suffix) {
            gw_xml_open(b, "Filter");
            gw_xml_open(b, "S3Key");
            if (ru->has_prefix) {
                gw_xml_open(b, "FilterRule");
                gw_xml_elem(b, "Name", "Prefix");
                gw_xml_elem_slice(b, "Value", cm_buf_slice(&ru->prefix));
                gw_xml_close(b, "FilterRule");
            }
            if (ru->has_suffix) {
                gw_xml_open(b, "FilterRule");
                gw_xml_elem(b, "Name", "Suffix");
                gw_xml_elem_slice(b, "Value", cm_buf_slice(&ru->suffix));
                gw_xml_close(b, "FilterRule");
            }
            gw_xml_close(b, "S3Key");
            gw_xml_close(b, "Filter");
        }
        gw_xml_close(b, sections[si].elem);
    }
    gw_xml_close(b, "NotificationConfiguration");
    evt_notify_clear(&cfg);
}
