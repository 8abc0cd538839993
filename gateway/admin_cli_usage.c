/* gateway/admin_cli_usage.c - `cairn-admin usage`: asks the server for the
 * usage report (JSON, computed and priced server-side) and prints it as a
 * table, CSV or the JSON itself. A --prices file is sent as the request
 * body and parsed by the server. Part of cairn-admin: common + curl only. */
#include "gateway/admin_cli.h"

#include <stdio.h>
#include <stdlib.h>

static void usage_help(FILE *f)
{
    fprintf(f, "usage: cairn-admin usage [--from ISO] [--to ISO] [--bucket B] [--access-key K]\n"
               "                         [--by hour|day|bucket|access-key|operation[,...]]\n"
               "                         [--format table|csv|json] [--prices FILE] [--json]\n\n"
               "Requests per class, operation and status class, bytes in and out, storage\n"
               "byte-hours and GB-months, and their cost. Times are UTC (2024-05-01T10:00Z);\n"
               "an hour is included when it starts in [from, to). Without --by, rows are per\n"
               "hour, bucket, access key and operation. Without --prices the default sheet\n"
               "(Cloudflare R2's published prices) is used. See doc/billing.md.\n");
}

static void csv_field(const char *s)
{
    if (strpbrk(s, ",\"\n\r")) {
        putchar('"');
        for (; *s; s++) {
            if (*s == '"')
                putchar('"');
            putchar(*s);
        }
        putchar('"');
    } else {
        fputs(s, stdout);
    }
}

static const char *str(const cm_json *o, const char *k)
{
    const char *s = cm_json_get_str(o, k);
    return s ? s : "";
}

static unsigned long long u64(const cm_json *o, const char *k)
{
    return (unsigned long long)cm_json_get_num(o, k, 0);
}

static void print_csv(const cm_json *root)
{
    const cm_json *rows = cm_json_get(root, "rows"), *st = cm_json_get(root, "storage");
    printf("period,bucket,access_key,operation,class,status_class,requests,billable_requests,"
           "class_a,class_b,bytes_in,bytes_out,byte_hours,gb_months,cost\n");
    for (const cm_json *e = rows ? rows->child : NULL; e; e = e->next) {
        static const char *cols[] = {"period", "bucket", "access_key", "operation", "class",
                                     "status_class"};
        for (size_t i = 0; i < 6; i++) {
            csv_field(str(e, cols[i]));
            putchar(',');
        }
        printf("%llu,%llu,%llu,%llu,%llu,%llu,0,0,%.6f\n", u64(e, "requests"),
               u64(e, "billable_requests"), u64(e, "class_a"), u64(e, "class_b"),
               u64(e, "bytes_in"), u64(e, "bytes_out"), cm_json_get_num(e, "cost", 0));
    }
    for (const cm_json *e = st ? st->child : NULL; e; e = e->next) {
        csv_field(str(e, "period"));
        putchar(',');
        csv_field(str(e, "bucket"));
        printf(",*,*,storage,*,0,0,0,0,0,0,%.3f,%.12f,%.6f\n", cm_json_get_num(e, "byte_hours", 0),
               cm_json_get_num(e, "gb_months", 0), cm_json_get_num(e, "cost", 0));
    }
}

static void print_table(const cm_json *root)
{
    const cm_json *rows = cm_json_get(root, "rows"), *st = cm_json_get(root, "storage");
    const cm_json *t = cm_json_get(root, "totals"), *p = cm_json_get(root, "prices");
    printf("%-20s %-20s %-22s %-24s %-5s %-4s %10s %10s %14s %14s %12s\n", "PERIOD", "BUCKET",
           "ACCESS KEY", "OPERATION", "CLASS", "STAT", "REQUESTS", "BILLABLE", "BYTES IN",
           "BYTES OUT", "COST");
    for (const cm_json *e = rows ? rows->child : NULL; e; e = e->next)
        printf("%-20s %-20s %-22s %-24s %-5s %-4s %10llu %10llu %14llu %14llu %12.6f\n",
               str(e, "period"), str(e, "bucket"), str(e, "access_key"), str(e, "operation"),
               str(e, "class"), str(e, "status_class"), u64(e, "requests"),
               u64(e, "billable_requests"), u64(e, "bytes_in"), u64(e, "bytes_out"),
               cm_json_get_num(e, "cost", 0));
    if (st && st->child) {
        printf("\n%-20s %-20s %18s %16s %12s\n", "PERIOD", "BUCKET", "BYTE-HOURS", "GB-MONTHS",
               "COST");
        for (const cm_json *e = st->child; e; e = e->next)
            printf("%-20s %-20s %18.1f %16.9f %12.6f\n", str(e, "period"), str(e, "bucket"),
                   cm_json_get_num(e, "byte_hours", 0), cm_json_get_num(e, "gb_months", 0),
                   cm_json_get_num(e, "cost", 0));
    }
    printf("\ntotal: %llu requests (%llu billable: %llu class A, %llu class B; %llu free), "
           "%llu bytes in, %llu bytes out, %.9f GB-months\n",
           u64(t, "requests"), u64(t, "billable_requests"), u64(t, "class_a"), u64(t, "class_b"),
           u64(t, "free"), u64(t, "bytes_in"), u64(t, "bytes_out"),
           cm_json_get_num(t, "gb_months", 0));
    printf("cost:  %.6f %s (requests %.6f, storage %.6f, transfer %.6f)\n",
           cm_json_get_num(t, "cost", 0), str(p, "currency"), cm_json_get_num(t, "request_cost", 0),
           cm_json_get_num(t, "storage_cost", 0), cm_json_get_num(t, "transfer_cost", 0));
    printf("prices: %s; %s\n", str(p, "name"), str(p, "source"));
}

int ca_cmd_usage(ca_ctx *c, int argc, char **argv)
{
    const char *from = NULL, *to = NULL, *bucket = NULL, *key = NULL, *by = NULL;
    const char *format = c->json ? "json" : "table", *prices = NULL;
    cm_buf path = {0}, body = {0}, resp = {0};
    long status = 0;
    int ret = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = !strcmp(a, "--from")         ? &from
                           : !strcmp(a, "--to")         ? &to
                           : !strcmp(a, "--bucket")     ? &bucket
                           : !strcmp(a, "--access-key") ? &key
                           : !strcmp(a, "--by")         ? &by
                           : !strcmp(a, "--format")     ? &format
                           : !strcmp(a, "--prices")     ? &prices
                                                        : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage_help(stdout);
            return 0;
        }
        if (!dst || i + 1 >= argc) {
            fprintf(stderr, "cairn-admin usage: bad argument '%s'\n", a);
            usage_help(stderr);
            return 2;
        }
        *dst = argv[++i];
    }
    if (c->json)
        format = "json";
    if (strcmp(format, "table") && strcmp(format, "csv") && strcmp(format, "json")) {
        fprintf(stderr, "cairn-admin usage: --format wants table, csv or json\n");
        return 2;
    }
    if (prices) {
        FILE *f = fopen(prices, "rb");
        char tmp[4096];
        size_t n;
        if (!f) {
            fprintf(stderr, "cairn-admin usage: cannot read %s\n", prices);
            return 1;
        }
        while ((n = fread(tmp, 1, sizeof tmp, f)) > 0 && body.n < (1u << 20))
            cm_buf_append(&body, tmp, n);
        fclose(f);
        if (!body.n)
            cm_buf_append_str(&body, "# empty\n");
    }
    cm_buf_append_str(&path, "/_cairn/admin/usage?");
    /* In sorted order: libcurl's SigV4 signs the query as given. */
    const char *names[] = {"access_key", "bucket", "by", "from", "to"};
    const char *vals[] = {key, bucket, by, from, to};
    for (int i = 0; i < 5; i++) {
        if (!vals[i])
            continue;
        cm_buf_printf(&path, "%s=", names[i]);
        ca_escape(&path, vals[i]);
        cm_buf_append_byte(&path, '&');
    }
    path.p[--path.n] = 0; /* the trailing '&' or '?' */
    if (ca_request(c, prices ? "POST" : "GET", cm_buf_str(&path), cm_buf_slice(&body), &resp,
                   &status))
        goto out;
    cm_json_doc *d = NULL;
    int prc = cm_json_parse(cm_buf_slice(&resp), &d);
    if (status != 200) {
        const cm_json *root = prc ? NULL : cm_json_root(d);
        const char *msg = cm_json_get_str(root, "message");
        if (msg)
            fprintf(stderr, "cairn-admin usage: %s\n", msg);
        else
            fprintf(stderr, "cairn-admin usage: HTTP %ld: %.*s\n", status, (int)resp.n,
                    (const char *)resp.p);
        cm_json_doc_free(d);
        goto out;
    }
    if (prc) {
        fprintf(stderr, "cairn-admin usage: the server's answer is not JSON\n");
        goto out;
    }
    if (!strcmp(format, "json"))
        fwrite(resp.p, 1, resp.n, stdout);
    else if (!strcmp(format, "csv"))
        print_csv(cm_json_root(d));
    else
        print_table(cm_json_root(d));
    cm_json_doc_free(d);
    ret = 0;
out:
    cm_buf_free(&path);
    cm_buf_free(&body);
    cm_buf_free(&resp);
    return ret;
}
