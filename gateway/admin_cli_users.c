/* gateway/admin_cli_users.c - the access-control commands of cairn-admin:
 * `user` (add, list, disable, enable, remove), `policy` (set, list, remove)
 * and `limit` (set, list, remove), each a call to the admin API groups of
 * gateway/admin_users.c. Secrets are printed once, by `user add`. */
#include "gateway/admin_cli.h"
#include <stdio.h>
#include <stdlib.h>

/* Calls the API; on 2xx returns 0 with the body in resp (and, with --json,
 * printed as is); otherwise prints the server's message and returns 1. */
static int call(ca_ctx *c, const char *method, const char *path, cm_slice body, cm_buf *resp,
                bool print_json)
{
    long status = 0;
    if (ca_request(c, method, path, body, resp, &status))
        return 1;
    if (status < 200 || status > 299) {
        cm_json_doc *d = NULL;
        const char *msg = NULL;
        if (cm_json_parse(cm_buf_slice(resp), &d) == 0)
            msg = cm_json_get_str(cm_json_root(d), "message");
        if (msg)
            fprintf(stderr, "cairn-admin: %s\n", msg);
        else
            fprintf(stderr, "cairn-admin: HTTP %ld: %.*s\n", status, (int)resp->n,
                    (const char *)resp->p);
        cm_json_doc_free(d);
        return 1;
    }
    if (print_json && c->json)
        fwrite(resp->p, 1, resp->n, stdout);
    return 0;
}

/* Value of --name in argv (NULL if absent); *bad set when it lacks a value. */
static const char *opt(int argc, char **argv, const char *name, bool *bad)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], name)) {
            if (i + 1 >= argc) {
                *bad = true;
                return NULL;
            }
            return argv[i + 1];
        }
    }
    return NULL;
}

/* The first argument after the subcommand that is not an option. */
static const char *positional(int argc, char **argv)
{
    for (int i = 2; i < argc; i++) {
        if (argv[i][0] == '-' && argv[i][1] == '-') {
            i++; /* skip its value */
            continue;
        }
        return argv[i];
    }
    return NULL;
}

static void path_of(cm_buf *p, const char *group, const char *a, const char *b, const char *tail)
{
    cm_buf_reset(p);
    cm_buf_printf(p, "/_cairn/admin/%s", group);
    if (a) {
        cm_buf_append_byte(p, '/');
        ca_escape(p, a);
    }
    if (b) {
        cm_buf_append_byte(p, '/');
        ca_escape(p, b);
    }
    if (tail)
        cm_buf_append_str(p, tail);
}

int ca_cmd_user(ca_ctx *c, int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";
    const char *name = positional(argc, argv);
    cm_buf path = {0}, resp = {0};
    int rc = 2;

    if (!strcmp(sub, "list")) {
        path_of(&path, "users", NULL, NULL, NULL);
        if (!(rc = call(c, "GET", cm_buf_str(&path), CM_SLICE_NULL, &resp, true)) && !c->json) {
            cm_json_doc *d;
            if (cm_json_parse(cm_buf_slice(&resp), &d) == 0) {
                printf("%-24s %-22s %-8s %s\n", "NAME", "ACCESS KEY", "STATUS", "CREATED");
                const cm_json *a = cm_json_get(cm_json_root(d), "users");
                for (const cm_json *u = a ? a->child : NULL; u; u = u->next) {
                    const cm_json *en = cm_json_get(u, "enabled");
                    printf("%-24s %-22s %-8s %s\n", cm_json_get_str(u, "name"),
                           cm_json_get_str(u, "access_key"),
                           en && en->b ? "enabled" : "disabled", cm_json_get_str(u, "created"));
                }
                cm_json_doc_free(d);
            }
        }
    } else if (!strcmp(sub, "add") && name) {
        path_of(&path, "users", name, NULL, NULL);
        if (!(rc = call(c, "POST", cm_buf_str(&path), CM_SLICE_NULL, &resp, true)) && !c->json) {
            cm_json_doc *d;
            if (cm_json_parse(cm_buf_slice(&resp), &d) == 0) {
                const cm_json *r = cm_json_root(d);
                printf("user        %s\naccess key  %s\nsecret key  %s\n",
                       cm_json_get_str(r, "name"), cm_json_get_str(r, "access_key"),
                       cm_json_get_str(r, "secret_key"));
                printf("(the secret key is shown only now)\n");
                cm_json_doc_free(d);
            }
        }
    } else if ((!strcmp(sub, "disable") || !strcmp(sub, "enable")) && name) {
        path_of(&path, "users", name, NULL, !strcmp(sub, "enable") ? "/enable" : "/disable");
        if (!(rc = call(c, "POST", cm_buf_str(&path), CM_SLICE_NULL, &resp, true)) && !c->json)
            printf("user %s %sd\n", name, sub);
    } else if (!strcmp(sub, "remove") && name) {
        path_of(&path, "users", name, NULL, NULL);
        if (!(rc = call(c, "DELETE", cm_buf_str(&path), CM_SLICE_NULL, &resp, true)) && !c->json)
            printf("user %s removed\n", name);
    } else {
        fprintf(stderr, "usage: cairn-admin user add NAME | list | disable NAME | enable NAME | "
                        "remove NAME\n");
    }
    if (resp.p) /* may hold a secret */
        cm_wipe(resp.p, resp.n);
    cm_buf_free(&resp);
    cm_buf_free(&path);
    return rc;
}

int ca_cmd_policy(ca_ctx *c, int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";
    const char *name = positional(argc, argv);
    bool bad = false;
    const char *bucket = opt(argc, argv, "--bucket", &bad);
    cm_buf path = {0}, resp = {0}, body = {0};
    int rc = 2;

    if (!strcmp(sub, "set") && name && bucket && !bad) {
        /* --allow may repeat and may hold a comma-separated list. */
        cm_buf_append_str(&body, "{\"allow\":[");
        int nallow = 0;
        for (int i = 2; i + 1 < argc; i++) {
            if (!strcmp(argv[i], "--allow")) {
                cm_buf_append_str(&body, nallow++ ? "," : "");
                cm_json_cstr(&body, argv[++i]);
            }
        }
        cm_buf_append_str(&body, "]}");
        if (nallow) {
            path_of(&path, "policies", name, bucket, NULL);
            rc = call(c, "PUT", cm_buf_str(&path), cm_buf_slice(&body), &resp, true);
            if (!rc && !c->json)
                printf("policy set: %s on %s\n", name, bucket);
        }
    } else if (!strcmp(sub, "list")) {
        path_of(&path, "policies", name, NULL, NULL);
        if (!(rc = call(c, "GET", cm_buf_str(&path), CM_SLICE_NULL, &resp, true)) && !c->json) {
            cm_json_doc *d;
            if (cm_json_parse(cm_buf_slice(&resp), &d) == 0) {
                printf("%-24s %-40s %s\n", "USER", "BUCKET", "ALLOW");
                const cm_json *a = cm_json_get(cm_json_root(d), "policies");
                for (const cm_json *g = a ? a->child : NULL; g; g = g->next) {
                    const cm_json *al = cm_json_get(g, "allow");
                    printf("%-24s %-40s ", cm_json_get_str(g, "user"),
                           cm_json_get_str(g, "bucket"));
                    for (const cm_json *e = al ? al->child : NULL; e; e = e->next)
                        printf("%s%s", (const char *)e->str.p, e->next ? "," : "");
                    printf("\n");
                }
                cm_json_doc_free(d);
            }
        }
    } else if (!strcmp(sub, "remove") && name && bucket && !bad) {
        path_of(&path, "policies", name, bucket, NULL);
        if (!(rc = call(c, "DELETE", cm_buf_str(&path), CM_SLICE_NULL, &resp, true)) && !c->json)
            printf("policy removed: %s on %s\n", name, bucket);
    }
    if (rc == 2)
        fprintf(stderr, "usage: cairn-admin policy set NAME --bucket B --allow "
                        "read|write|list|admin [--allow ...]\n"
                        "       cairn-admin policy list [NAME]\n"
                        "       cairn-admin policy remove NAME --bucket B\n");
    cm_buf_free(&resp);
    cm_buf_free(&path);
    cm_buf_free(&body);
    return rc;
}

int ca_cmd_limit(ca_ctx *c, int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";
    bool bad = false;
    const char *key = opt(argc, argv, "--access-key", &bad);
    const char *bucket = opt(argc, argv, "--bucket", &bad);
    const char *rps = opt(argc, argv, "--rps", &bad);
    const char *burst = opt(argc, argv, "--burst", &bad);
    cm_buf path = {0}, resp = {0}, body = {0};
    int rc = 2;

    if (!strcmp(sub, "list")) {
        path_of(&path, "limits", NULL, NULL, NULL);
        if (!(rc = call(c, "GET", cm_buf_str(&path), CM_SLICE_NULL, &resp, true)) && !c->json) {
            cm_json_doc *d;
            if (cm_json_parse(cm_buf_slice(&resp), &d) == 0) {
                printf("%-8s %-40s %10s %10s\n", "KIND", "NAME", "RPS", "BURST");
                const cm_json *a = cm_json_get(cm_json_root(d), "limits");
                for (const cm_json *l = a ? a->child : NULL; l; l = l->next)
                    printf("%-8s %-40s %10.0f %10.0f\n", cm_json_get_str(l, "kind"),
                           cm_json_get_str(l, "name"), cm_json_get_num(l, "rps", 0),
                           cm_json_get_num(l, "burst", 0));
                cm_json_doc_free(d);
            }
        }
    } else if ((!strcmp(sub, "set") || !strcmp(sub, "remove")) && !bad && (!key != !bucket)) {
        path_of(&path, "limits", key ? "key" : "bucket", key ? key : bucket, NULL);
        if (!strcmp(sub, "remove")) {
            rc = call(c, "DELETE", cm_buf_str(&path), CM_SLICE_NULL, &resp, true);
        } else if (rps) {
            char *e1 = NULL, *e2 = NULL;
            double r = strtod(rps, &e1), b = burst ? strtod(burst, &e2) : r;
            if (*e1 || (burst && *e2)) {
                fprintf(stderr, "cairn-admin: --rps and --burst take numbers\n");
                rc = 2;
                goto out;
            }
            cm_buf_printf(&body, "{\"rps\":%.0f,\"burst\":%.0f}", r, b);
            rc = call(c, "PUT", cm_buf_str(&path), cm_buf_slice(&body), &resp, true);
        }
        if (!rc && !c->json)
            printf("limit %s: %s %s\n", !strcmp(sub, "set") ? "set" : "removed",
                   key ? "access key" : "bucket", key ? key : bucket);
    }
out:
    if (rc == 2)
        fprintf(stderr, "usage: cairn-admin limit set (--access-key K | --bucket B) --rps N "
                        "[--burst N]\n"
                        "       cairn-admin limit list\n"
                        "       cairn-admin limit remove (--access-key K | --bucket B)\n");
    cm_buf_free(&resp);
    cm_buf_free(&path);
    cm_buf_free(&body);
    return rc;
}
