/* gateway/admin_cli.h - what the files of the `cairn-admin` command share:
 * the signed HTTP call to the admin API and the command table. Each command
 * group lives in admin_cli_<group>.c and is listed in admin_cli.c. */
#ifndef ADMIN_CLI_H
#define ADMIN_CLI_H

#include "common/cm.h"
#include "common/json.h"

typedef struct ca_ctx {
    const char *endpoint;   /* --endpoint, default $CAIRN_ENDPOINT or http://127.0.0.1:9000 */
    const char *access_key; /* $CAIRN_ACCESS_KEY */
    const char *secret_key; /* $CAIRN_SECRET_KEY */
    const char *region;     /* --region, default us-east-1 */
    bool json;              /* --json: machine-readable output */
    long timeout_s;         /* request time limit; 0: 60 s */
} ca_ctx;

/* Sends METHOD endpoint+path (path includes any query; already escaped)
 * with body, signed with SigV4 (root keys). Fills resp with the response
 * body and *status with the HTTP status. Returns 0, or CM_EIO when the
 * server could not be reached (a message is printed). */
int ca_request(ca_ctx *c, const char *method, const char *path, cm_slice body, cm_buf *resp,
               long *status);
/* Calls the admin API and parses a JSON answer: 0 and *doc on 2xx; on an
 * error status prints the server's message to stderr and returns CM_EIO. */
int ca_call_json(ca_ctx *c, const char *method, const char *path, cm_slice body,
                 cm_json_doc **doc);
/* Appends s URI-escaped (for paths and query values). */
void ca_escape(cm_buf *b, const char *s);

/* A command: argv[0] is the command's own name (e.g. "function"). Returns
 * the process exit status (0 ok, 1 failure, 2 usage). */
typedef int (*ca_cmd_fn)(ca_ctx *c, int argc, char **argv);
int ca_cmd_info(ca_ctx *c, int argc, char **argv);
/* Events (admin_cli_events.c): function, target and events commands. */
int ca_cmd_function(ca_ctx *c, int argc, char **argv);
int ca_cmd_target(ca_ctx *c, int argc, char **argv);
int ca_cmd_events(ca_ctx *c, int argc, char **argv);
int ca_cmd_usage(ca_ctx *c, int argc, char **argv); /* admin_cli_usage.c */
/* Access control (admin_cli_users.c): user, policy and limit commands. */
int ca_cmd_user(ca_ctx *c, int argc, char **argv);
int ca_cmd_policy(ca_ctx *c, int argc, char **argv);
int ca_cmd_limit(ca_ctx *c, int argc, char **argv);
/* Data upkeep (admin_cli_upkeep.c): heal, scrub, gc and nodes commands. */
int ca_cmd_heal(ca_ctx *c, int argc, char **argv);
int ca_cmd_scrub(ca_ctx *c, int argc, char **argv);
int ca_cmd_gc(ca_ctx *c, int argc, char **argv);
int ca_cmd_nodes(ca_ctx *c, int argc, char **argv);

#endif
