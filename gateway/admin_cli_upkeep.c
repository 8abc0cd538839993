/* gateway/admin_cli_upkeep.c - `cairn-admin heal | scrub | gc | nodes`:
 * keeping the stored data whole, through /_cairn/admin/{heal,scrub,gc,nodes}. */
#include "gateway/admin_cli.h"
#include <stdio.h>
#include <stdlib.h>

/* Sends the request; prints the JSON answer with --json, else hands the
 * parsed document to the caller. Returns 0 and *doc (NULL with --json). */
static int call(ca_ctx *c, const char *method, const char *path, cm_json_doc **doc)
{
    *doc = NULL;
    if (c->json) {
        cm_buf resp = {0};
        long status = 0;
        if (ca_request(c, method, path, CM_SLICE_NULL, &resp, &status))
            return 1;
        fwrite(resp.p, 1, resp.n, stdout);
        cm_buf_free(&resp);
        return status / 100 == 2 ? 0 : 1;
    }
    return ca_call_json(c, method, path, CM_SLICE_NULL, doc) ? 1 : 0;
}

static unsigned long long num(const cm_json *o, const char *k)
{
    return (unsigned long long)cm_json_get_num(o, k, 0);
}

static void print_walk(const cm_json *r, const char *what)
{
    printf("%s: %llu objects, %llu segments, %llu shards checked\n", what, num(r, "objects"),
           num(r, "segments"), num(r, "shards_checked"));
    printf("  missing %llu, corrupt %llu, healed %llu, not healed %llu\n",
           num(r, "shards_missing"), num(r, "shards_corrupt"), num(r, "shards_healed"),
           num(r, "shards_failed"));
    printf("  manifests %llu (rewritten %llu), bytes verified %llu\n", num(r, "manifests"),
           num(r, "manifests_healed"), num(r, "bytes_verified"));
}

int ca_cmd_heal(ca_ctx *c, int argc, char **argv)
{
    bool deep = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--deep")) {
            deep = true;
        } else if (!strcmp(argv[i], "--help")) {
            printf("usage: cairn-admin heal [--deep] [--json]\n\n"
                   "Walks every object and rebuilds missing or damaged shards (and object\n"
                   "manifests) from the good ones. --deep also verifies every block's CRC32C.\n"
                   "Exit status 1 if some shards could not be healed (a node is down).\n");
            return 0;
        } else {
            fprintf(stderr, "cairn-admin heal: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    c->timeout_s = 7 * 86400L;
    cm_json_doc *d;
    int rc = call(c, "POST", deep ? "/_cairn/admin/heal?deep=1" : "/_cairn/admin/heal", &d);
    if (rc || !d)
        return rc;
    const cm_json *r = cm_json_root(d);
    print_walk(r, "heal");
    rc = num(r, "shards_failed") ? 1 : 0;
    cm_json_doc_free(d);
    return rc;
}

int ca_cmd_scrub(ca_ctx *c, int argc, char **argv)
{
    bool status = argc > 1 && !strcmp(argv[1], "status");
    if (argc > 1 && !status) {
        printf("usage: cairn-admin scrub [status] [--json]\n\n"
               "Without arguments: runs one scrub pass now (every block of every shard\n"
               "verified where it lives; corrupt or missing shards rebuilt). status: the\n"
               "background scrub's settings and totals.\n");
        return strcmp(argv[1], "--help") ? 2 : 0;
    }
    c->timeout_s = 7 * 86400L;
    cm_json_doc *d;
    int rc = call(c, status ? "GET" : "POST", "/_cairn/admin/scrub", &d);
    if (rc || !d)
        return rc;
    const cm_json *r = cm_json_root(d);
    if (status) {
        const cm_json *run = cm_json_get(r, "running");
        printf("scrub: rate %llu B/s, every %llu s, %llu passes%s\n", num(r, "rate"),
               num(r, "interval"), num(r, "passes"), run && run->b ? ", running now" : "");
    }
    print_walk(r, status ? "totals" : "scrub");
    rc = !status && num(r, "shards_failed") ? 1 : 0;
    cm_json_doc_free(d);
    return rc;
}

int ca_cmd_gc(ca_ctx *c, int argc, char **argv)
{
    if (argc > 1) {
        printf("usage: cairn-admin gc [--json]\n\n"
               "Removes now the data of deleted or replaced objects whose removal is still\n"
               "pending (e.g. because a storage node was down). Exit status 1 if some remains.\n");
        return strcmp(argv[1], "--help") ? 2 : 0;
    }
    cm_json_doc *d;
    int rc = call(c, "POST", "/_cairn/admin/gc", &d);
    if (rc || !d)
        return rc;
    const cm_json *r = cm_json_root(d);
    printf("gc: %llu reclaimed, %llu still pending\n", num(r, "reclaimed"), num(r, "pending"));
    rc = num(r, "pending") ? 1 : 0;
    cm_json_doc_free(d);
    return rc;
}

int ca_cmd_nodes(ca_ctx *c, int argc, char **argv)
{
    if (argc > 1) {
        printf("usage: cairn-admin nodes [--json]\n");
        return strcmp(argv[1], "--help") ? 2 : 0;
    }
    cm_json_doc *d;
    int rc = call(c, "GET", "/_cairn/admin/nodes", &d);
    if (rc || !d)
        return rc;
    const cm_json *r = cm_json_root(d);
    printf("%-5s %-4s %s\n", "SLOT", "UP", "WHERE");
    for (const cm_json *e = r ? r->child : NULL; e; e = e->next) {
        const cm_json *up = cm_json_get(e, "up");
        printf("%-5llu %-4s %s\n", num(e, "slot"), up && up->b ? "yes" : "no",
               cm_json_get_str(e, "url"));
    }
    cm_json_doc_free(d);
    return 0;
}
