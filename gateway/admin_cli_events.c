/* gateway/admin_cli_events.c - the `cairn-admin function|target|events`
 * commands: define functions and delivery targets, read function logs, and
 * list, replay and follow events through the admin API (admin_events.c).
 * Table output by default, the server's JSON with --json. */
#include "gateway/admin_cli.h"
#include <stdio.h>
#include <stdlib.h>

/* Runs a call and shows its answer with show() (table output). */
static int call(ca_ctx *c, const char *method, const char *path, cm_slice body,
                void (*show)(const cm_json *root))
{
    cm_json_doc *d = NULL;
    if (ca_call_json(c, method, path, body, &d))
        return 1;
    if (show)
        show(cm_json_root(d));
    cm_json_doc_free(d);
    return 0;
}

/* With --json the raw answer is printed; ca_request gives us the bytes. */
static int call_raw(ca_ctx *c, const char *method, const char *path, cm_slice body,
                    void (*show)(const cm_json *root))
{
    if (!c->json)
        return call(c, method, path, body, show);
    cm_buf resp = {0};
    long status = 0;
    if (ca_request(c, method, path, body, &resp, &status)) {
        cm_buf_free(&resp);
        return 1;
    }
    fwrite(resp.p, 1, resp.n, stdout);
    if (resp.n && resp.p[resp.n - 1] != '\n')
        putchar('\n');
    cm_buf_free(&resp);
    return status >= 200 && status < 300 ? 0 : 1;
}

static const char *str(const cm_json *j, const char *k)
{
    const char *s = cm_json_get_str(j, k);
    return s ? s : "";
}

static void show_ok(const cm_json *root)
{
    (void)root;
    printf("ok\n");
}

/* ------------------------------------------------------------- function */
static void show_functions(const cm_json *root)
{
    const cm_json *a = cm_json_get(root, "functions");
    printf("%-20s %-8s %-5s %s\n", "NAME", "TIMEOUT", "CONC", "EXEC");
    for (const cm_json *f = a ? a->child : NULL; f; f = f->next)
        printf("%-20s %-8d %-5d %s\n", str(f, "name"), (int)cm_json_get_num(f, "timeout", 0),
               (int)cm_json_get_num(f, "concurrency", 0), str(f, "exec"));
}

static void show_log(const cm_json *root)
{
    fputs(str(root, "log"), stdout);
}

static int usage_fn(void)
{
    fprintf(stderr, "usage: cairn-admin function add NAME --exec 'COMMAND' [--timeout S] "
                    "[--concurrency N] [--env K=V ...]\n"
                    "       cairn-admin function list | remove NAME | logs NAME\n");
    return 2;
}

int ca_cmd_function(ca_ctx *c, int argc, char **argv)
{
    cm_buf path = {0}, body = {0};
    int rc;
    if (argc < 2)
        return usage_fn();
    const char *sub = argv[1];
    if (!strcmp(sub, "list") && argc == 2)
        return call_raw(c, "GET", "/_cairn/admin/functions", CM_SLICE_NULL, show_functions);
    if (argc < 3)
        return usage_fn();
    cm_buf_append_str(&path, "/_cairn/admin/functions/");
    ca_escape(&path, argv[2]);
    if (!strcmp(sub, "add")) {
        const char *exec = NULL;
        long timeout = 60, conc = 1;
        cm_buf env = {0};
        for (int i = 3; i < argc; i++) {
            if (i + 1 >= argc)
                goto bad;
            if (!strcmp(argv[i], "--exec"))
                exec = argv[++i];
            else if (!strcmp(argv[i], "--timeout"))
                timeout = strtol(argv[++i], NULL, 10);
            else if (!strcmp(argv[i], "--concurrency"))
                conc = strtol(argv[++i], NULL, 10);
            else if (!strcmp(argv[i], "--env")) {
                if (env.n)
                    cm_buf_append_byte(&env, ',');
                cm_json_cstr(&env, argv[++i]);
            } else {
            bad:
                cm_buf_free(&env);
                cm_buf_free(&path);
                return usage_fn();
            }
        }
        if (!exec) {
            cm_buf_free(&env);
            cm_buf_free(&path);
            return usage_fn();
        }
        cm_buf_append_str(&body, "{\"exec\":");
        cm_json_cstr(&body, exec);
        cm_buf_printf(&body, ",\"timeout\":%ld,\"concurrency\":%ld,\"env\":[%s]}", timeout, conc,
                      cm_buf_str(&env));
        cm_buf_free(&env);
        rc = call_raw(c, "PUT", cm_buf_str(&path), cm_buf_slice(&body), show_ok);
    } else if (!strcmp(sub, "remove") && argc == 3) {
        rc = call_raw(c, "DELETE", cm_buf_str(&path), CM_SLICE_NULL, show_ok);
    } else if (!strcmp(sub, "logs") && argc == 3) {
        cm_buf_append_str(&path, "/logs");
        rc = call_raw(c, "GET", cm_buf_str(&path), CM_SLICE_NULL, show_log);
    } else {
        rc = usage_fn();
    }
    cm_buf_free(&path);
    cm_buf_free(&body);
    return rc;
}

/* --------------------------------------------------------------- target */
static void show_targets(const cm_json *root)
{
    const cm_json *a = cm_json_get(root, "targets");
    printf("%-20s %-12s %s\n", "NAME", "KIND", "URL");
    for (const cm_json *t = a ? a->child : NULL; t; t = t->next)
        printf("%-20s %-12s %s\n", str(t, "name"), str(t, "kind"), str(t, "url"));
}

static int usage_tgt(void)
{
    fprintf(stderr, "usage: cairn-admin target add NAME --webhook URL | --cloudevents URL | "
                    "--redis redis://HOST:PORT/STREAM | --nats nats://HOST:PORT/SUBJECT | "
                    "--amqp amqp://HOST:PORT/EXCHANGE\n"
                    "       cairn-admin target list | remove NAME\n");
    return 2;
}

int ca_cmd_target(ca_ctx *c, int argc, char **argv)
{
    cm_buf path = {0}, body = {0};
    int rc;
    if (argc < 2)
        return usage_tgt();
    if (!strcmp(argv[1], "list") && argc == 2)
        return call_raw(c, "GET", "/_cairn/admin/targets", CM_SLICE_NULL, show_targets);
    if (argc < 3)
        return usage_tgt();
    cm_buf_append_str(&path, "/_cairn/admin/targets/");
    ca_escape(&path, argv[2]);
    if (!strcmp(argv[1], "add") && argc == 5 && !strncmp(argv[3], "--", 2)) {
        cm_buf_printf(&body, "{\"kind\":");
        cm_json_cstr(&body, argv[3] + 2);
        cm_buf_append_str(&body, ",\"url\":");
        cm_json_cstr(&body, argv[4]);
        cm_buf_append_byte(&body, '}');
        rc = call_raw(c, "PUT", cm_buf_str(&path), cm_buf_slice(&body), show_ok);
    } else if (!strcmp(argv[1], "remove") && argc == 3) {
        rc = call_raw(c, "DELETE", cm_buf_str(&path), CM_SLICE_NULL, show_ok);
    } else {
        rc = usage_tgt();
    }
    cm_buf_free(&path);
    cm_buf_free(&body);
    return rc;
}

/* --------------------------------------------------------------- events */
static void show_events(const cm_json *root)
{
    const cm_json *a = cm_json_get(root, "events");
    printf("%-10s %-22s %-24s %-8s %s\n", "ID", "DESTINATION", "EVENT", "ATTEMPTS", "BUCKET/KEY");
    for (const cm_json *x = a ? a->child : NULL; x; x = x->next) {
        printf("%-10.0f %-22s %-24s %-8d %s/%s\n", cm_json_get_num(x, "id", 0),
               str(x, "destination"), str(x, "eventName"), (int)cm_json_get_num(x, "attempts", 0),
               str(x, "bucket"), str(x, "key"));
        if (*str(x, "lastError"))
            printf("           last error: %s\n", str(x, "lastError"));
    }
}

static void show_replay(const cm_json *root)
{
    printf("replayed %d\n", (int)cm_json_get_num(root, "replayed", 0));
}

static void show_changes(const cm_json *root)
{
    const cm_json *a = cm_json_get(root, "changes");
    printf("%-17s %-40s %-25s %s\n", "SEQUENCER", "EVENT", "TIME", "KEY");
    for (const cm_json *x = a ? a->child : NULL; x; x = x->next)
        printf("%-17s %-40s %-25s %s\n", str(x, "sequencer"), str(x, "eventName"),
               str(x, "eventTime"), str(x, "key"));
    if (*str(root, "next"))
        printf("(more: --since %s)\n", str(root, "next"));
}

static int usage_ev(void)
{
    fprintf(stderr, "usage: cairn-admin events pending | dead | replay [ID...] |\n"
                    "       changes --bucket B [--since SEQUENCER] [--limit N]\n");
    return 2;
}

int ca_cmd_events(ca_ctx *c, int argc, char **argv)
{
    cm_buf path = {0}, body = {0};
    int rc;
    if (argc < 2)
        return usage_ev();
    if ((!strcmp(argv[1], "pending") || !strcmp(argv[1], "dead")) && argc == 2) {
        cm_buf_printf(&path, "/_cairn/admin/events/%s", argv[1]);
        rc = call_raw(c, "GET", cm_buf_str(&path), CM_SLICE_NULL, show_events);
    } else if (!strcmp(argv[1], "replay")) {
        cm_buf_append_str(&body, "{\"ids\":[");
        for (int i = 2; i < argc; i++) {
            char *end;
            unsigned long long id = strtoull(argv[i], &end, 10);
            if (*end || !id) {
                cm_buf_free(&body);
                return usage_ev();
            }
            cm_buf_printf(&body, "%s%llu", i > 2 ? "," : "", id);
        }
        cm_buf_append_str(&body, "]}");
        rc = call_raw(c, "POST", "/_cairn/admin/events/replay", cm_buf_slice(&body), show_replay);
    } else if (!strcmp(argv[1], "changes")) {
        const char *bucket = NULL, *since = NULL, *limit = NULL;
        for (int i = 2; i < argc; i++) {
            if (i + 1 >= argc)
                return usage_ev();
            if (!strcmp(argv[i], "--bucket"))
                bucket = argv[++i];
            else if (!strcmp(argv[i], "--since"))
                since = argv[++i];
            else if (!strcmp(argv[i], "--limit"))
                limit = argv[++i];
            else
                return usage_ev();
        }
        if (!bucket)
            return usage_ev();
        cm_buf_append_str(&path, "/_cairn/admin/events/changes?bucket=");
        ca_escape(&path, bucket);
        /* parameters in canonical (sorted) order: bucket, limit, since */
        if (limit) {
            cm_buf_append_str(&path, "&limit=");
            ca_escape(&path, limit);
        }
        if (since) {
            cm_buf_append_str(&path, "&since=");
            ca_escape(&path, since);
        }
        rc = call_raw(c, "GET", cm_buf_str(&path), CM_SLICE_NULL, show_changes);
    } else {
        rc = usage_ev();
    }
    cm_buf_free(&path);
    cm_buf_free(&body);
    return rc;
}
