/* gateway/observe.c - what happens after each request: the hook where usage
 * counting, the access log and metrics see every request once, with its
 * operation, status, bytes in and out and duration. */
#include "gateway/gw_int.h"

void gw_observe(gw_req *r)
{
    if (cm_log_level >= CM_LOG_DEBUG)
        cm_log(CM_LOG_DEBUG, "%s %s %.*s %d in=%llu out=%llu %lldms%s", r->id,
               r->op < GW_OP__COUNT ? gw_ops[r->op].name : "-", (int)r->method.n,
               (const char *)r->method.p, r->status ? r->status : 200,
               (unsigned long long)r->body_n, (unsigned long long)r->bytes_out,
               (long long)(cm_now_ms() - r->start_ms), r->completed ? "" : " (incomplete)");
}
