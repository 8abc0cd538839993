/* gateway/admin_cli.c - the `cairn-admin` command: global options, the
 * command table, and signed calls to the running server's admin API
 * (libcurl; SigV4 with the root keys from CAIRN_ACCESS_KEY/_SECRET_KEY). */
#include "gateway/admin_cli.h"
#include <curl/curl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

static const struct {
    const char *name;
    ca_cmd_fn fn;
    const char *help;
} commands[] = {
    {"info", ca_cmd_info, "show what the server is (version, region, erasure coding)"},
    {"function", ca_cmd_function, "functions: add NAME --exec CMD [--timeout S] [--concurrency N] [--env K=V] | list | remove NAME | logs NAME"},
    {"target", ca_cmd_target, "targets: add NAME --webhook|--cloudevents|--redis|--nats|--amqp URL | list | remove NAME"},
    {"events", ca_cmd_events, "events: pending | dead | replay [ID...] | changes --bucket B [--since SEQ] [--limit N]"},
    {"usage", ca_cmd_usage, "usage and cost report (requests, bytes, storage; see usage --help)"},
    {"user", ca_cmd_user, "users and keys: add NAME | list | disable|enable|remove NAME"},
    {"policy", ca_cmd_policy, "grants: set NAME --bucket B --allow KIND | list [NAME] | remove"},
    {"limit", ca_cmd_limit, "rate limits: set (--access-key K | --bucket B) --rps N | list | remove"},
    {"heal", ca_cmd_heal, "walk every object and restore full redundancy [--deep: verify every block's CRC32C]"},
    {"scrub", ca_cmd_scrub, "run one scrub pass now (every block's CRC32C; repairs) | status"},
    {"gc", ca_cmd_gc, "remove the data of deleted/replaced objects still pending (e.g. a node was down)"},
    {"nodes", ca_cmd_nodes, "list the shard stores (storage nodes or drives) and whether they are up"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: cairn-admin [--endpoint URL] [--json] COMMAND [ARGS]\n\n"
               "Talks to a running cairn server's admin API with the root credentials in\n"
               "CAIRN_ACCESS_KEY and CAIRN_SECRET_KEY. --endpoint defaults to $CAIRN_ENDPOINT or\n"
               "http://127.0.0.1:9000. Every command takes --json for machine-readable output.\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].help);
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    cm_buf_append(arg, p, size * n);
    return size * n;
}

void ca_escape(cm_buf *b, const char *s)
{
    cm_uri_encode(b, CM_SLICE_STR(s), true);
}

int ca_request(ca_ctx *c, const char *method, const char *path, cm_slice body, cm_buf *resp,
               long *status)
{
    CURL *h = curl_easy_init();
    if (!h)
        return CM_ENOMEM;
    cm_buf url = {0}, sigv4 = {0}, userpwd = {0}, hdr = {0};
    uint8_t d[32];
    char hex[65];
    unsigned dl = 0;
    EVP_Digest(body.p ? (const void *)body.p : "", body.n, d, &dl, EVP_sha256(), NULL);
    cm_hex_encode(d, 32, hex);
    cm_buf_printf(&url, "%s%s", c->endpoint, path);
    cm_buf_printf(&sigv4, "aws:amz:%s:s3", c->region);
    cm_buf_printf(&userpwd, "%s:%s", c->access_key, c->secret_key);
    cm_buf_printf(&hdr, "x-amz-content-sha256: %s", hex);
    struct curl_slist *hl = curl_slist_append(NULL, cm_buf_str(&hdr));
    hl = curl_slist_append(hl, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_URL, cm_buf_str(&url));
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, cm_buf_str(&sigv4));
    curl_easy_setopt(h, CURLOPT_USERPWD, cm_buf_str(&userpwd));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, c->timeout_s > 0 ? c->timeout_s : 60L);
    if (body.n || !strcmp(method, "POST") || !strcmp(method, "PUT")) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.p ? (const char *)body.p : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)body.n);
    }
    CURLcode cc = curl_easy_perform(h);
    int rc = 0;
    if (cc != CURLE_OK) {
        fprintf(stderr, "cairn-admin: cannot reach %s: %s\n", c->endpoint, curl_easy_strerror(cc));
        rc = CM_EIO;
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    }
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    cm_wipe(userpwd.p, userpwd.n);
    cm_buf_free(&url);
    cm_buf_free(&sigv4);
    cm_buf_free(&userpwd);
    cm_buf_free(&hdr);
    return rc;
}

int ca_call_json(ca_ctx *c, const char *method, const char *path, cm_slice body,
                 cm_json_doc **doc)
{
    cm_buf resp = {0};
    long status = 0;
    int rc = ca_request(c, method, path, body, &resp, &status);
    if (rc) {
        cm_buf_free(&resp);
        return rc;
    }
    cm_json_doc *d = NULL;
    int prc = cm_json_parse(cm_buf_slice(&resp), &d);
    if (status < 200 || status > 299) {
        const cm_json *root = prc ? NULL : cm_json_root(d);
        const char *msg = cm_json_get_str(root, "message");
        const char *code = cm_json_get_str(root, "error");
        if (!code && resp.n) {
            /* an S3 XML error (e.g. bad credentials) */
            fprintf(stderr, "cairn-admin: HTTP %ld: %.*s\n", status, (int)resp.n, (char *)resp.p);
        } else {
            fprintf(stderr, "cairn-admin: %s: %s\n", code ? code : "error",
                    msg ? msg : "request failed");
        }
        cm_json_doc_free(d);
        cm_buf_free(&resp);
        return CM_EIO;
    }
    cm_buf_free(&resp);
    if (prc) {
        fprintf(stderr, "cairn-admin: the server's answer is not JSON\n");
        return CM_EIO;
    }
    *doc = d;
    return 0;
}

int ca_cmd_info(ca_ctx *c, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cm_buf resp = {0};
    long status = 0;
    if (ca_request(c, "GET", "/_cairn/admin/info", CM_SLICE_NULL, &resp, &status))
        return 1;
    if (status != 200) {
        fprintf(stderr, "cairn-admin: HTTP %ld: %.*s\n", status, (int)resp.n, (char *)resp.p);
        cm_buf_free(&resp);
        return 1;
    }
    if (c->json) {
        fwrite(resp.p, 1, resp.n, stdout);
    } else {
        cm_json_doc *d;
        if (cm_json_parse(cm_buf_slice(&resp), &d) == 0) {
            const cm_json *r = cm_json_root(d);
            const cm_json *ec = cm_json_get(r, "ec");
            printf("version  %s\nregion   %s\nerasure  %d+%d\ndata     %s\n",
                   cm_json_get_str(r, "version"), cm_json_get_str(r, "region"),
                   (int)cm_json_get_num(ec, "k", 0), (int)cm_json_get_num(ec, "m", 0),
                   cm_json_get_str(r, "data_dir"));
            cm_json_doc_free(d);
        }
    }
    cm_buf_free(&resp);
    return 0;
}

int main(int argc, char **argv)
{
    ca_ctx c = {0};
    c.endpoint = getenv("CAIRN_ENDPOINT") ? getenv("CAIRN_ENDPOINT") : "http://127.0.0.1:9000";
    c.access_key = getenv("CAIRN_ACCESS_KEY");
    c.secret_key = getenv("CAIRN_SECRET_KEY");
    c.region = "us-east-1";
    int i = 1;
    /* Global options may come before the command; --json may come anywhere. */
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--endpoint") && i + 1 < argc)
            c.endpoint = argv[++i];
        else if (!strcmp(argv[i], "--region") && i + 1 < argc)
            c.region = argv[++i];
        else if (!strcmp(argv[i], "--json"))
            c.json = true;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "cairn-admin: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    /* Strip --json / --endpoint given after the command. */
    int n = 0;
    char **args = calloc((size_t)(argc - i + 1), sizeof *args);
    for (int j = i; j < argc; j++) {
        if (!strcmp(argv[j], "--json"))
            c.json = true;
        else if (!strcmp(argv[j], "--endpoint") && j + 1 < argc)
            c.endpoint = argv[++j];
        else
            args[n++] = argv[j];
    }
    if (!c.access_key || !c.secret_key) {
        fprintf(stderr, "cairn-admin: set CAIRN_ACCESS_KEY and CAIRN_SECRET_KEY to the server's "
                        "root credentials\n");
        free(args);
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = -1;
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
        if (!strcmp(args[0], commands[k].name))
            rc = commands[k].fn(&c, n, args);
    if (rc == -1) {
        fprintf(stderr, "cairn-admin: unknown command '%s'\n", args[0]);
        usage(stderr);
        rc = 2;
    }
    curl_global_cleanup();
    free(args);
    return rc;
}
