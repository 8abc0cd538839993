/* gateway/gw.h - the gateway's public face: its configuration and the
 * start/stop of the S3 server. main.c is its only user. */
#ifndef GW_H
#define GW_H

#include <stdbool.h>
#include <stddef.h>

typedef struct gw_config {
    const char *data_dir;     /* DIR: meta/ and (by default) drive1..driveN/ */
    const char *listen;       /* "ADDR:PORT" */
    const char *drives;       /* comma-separated drive directories, or NULL */
    int ec_k, ec_m;           /* erasure geometry */
    size_t block_size;        /* erasure block size in bytes */
    const char *region;
    const char *domain;       /* base domain for virtual-hosted style, or NULL */
    bool trust_proxy;         /* honour X-Forwarded-Host / -Proto */
    const char *public_url;   /* externally visible URL (presigned URLs), or NULL */
    const char *access_key;   /* root credentials */
    const char *secret_key;
    size_t inline_max;        /* largest object kept inline in its record */
    bool no_usage;            /* --no-usage: no usage records (benchmarks only) */
    bool usage_fsync;         /* --usage-fsync: fsync usage records (power-loss safe) */
    bool no_access_log;       /* --no-access-log: no DIR/logs/access.log */
    unsigned usage_fold_ms;   /* how often pending usage records are folded (1000) */
    unsigned log_delivery_s;  /* PutBucketLogging delivery interval (60) */
    unsigned long long access_log_max_bytes; /* rotate at this size (64 MiB) */
    unsigned access_log_max_age_s;           /* ... or this age (86400) */
    const char *events;       /* --events SPEC: event delivery settings (evt_config_parse) */
    const char *nodes;        /* comma-separated storage node URLs (cairn-chunkd), or NULL */
    const char *cluster_secret; /* HMAC key shared with the nodes (CAIRN_CLUSTER_SECRET) */
    bool rebuild_metadata;    /* --rebuild-metadata: refill an empty DIR/meta from the nodes */
    unsigned long long scrub_rate; /* background scrub: shard bytes verified per second (0 off) */
    unsigned scrub_interval_s;     /* pause between scrub passes */
} gw_config;

typedef struct gw_server gw_server_t;

/* Opens metadata and drives, recovers from an interrupted run (reclaims
 * shards of writes that never committed), and starts serving. Returns 0 and
 * *out, or a CM_E* code with a message logged. */
int gw_start(const gw_config *cfg, gw_server_t **out);
/* Stops serving and closes everything. NULL is a no-op. */
void gw_stop(gw_server_t *srv);

#endif
