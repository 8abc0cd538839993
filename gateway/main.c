/* gateway/main.c - the `cairn` command: parses arguments, finds or makes the
 * root credentials, starts the server and waits for a signal. No S3 logic. */
#include "gateway/gw.h"
#include "common/cm.h"
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage_main(FILE *f)
{
    fprintf(f, "cairn - an S3-compatible object store\n\n"
               "usage: cairn server [options]   run the S3 server (see cairn server --help)\n"
               "       cairn --help             this text\n"
               "       cairn --version          print the version\n");
}

static void usage_server(FILE *f)
{
    fprintf(f,
            "usage: cairn server [options]\n\n"
            "  --data DIR          data directory (default ./data): LevelDB in DIR/meta and, by\n"
            "                      default, shard drives DIR/drive1 .. DIR/driveN\n"
            "  --listen ADDR:PORT  address to serve S3 on (default 127.0.0.1:9000)\n"
            "  --drives P1,P2,...  shard drive directories instead of DIR/driveN\n"
            "  --nodes URL,...     storage nodes (cairn-chunkd) instead of drive directories,\n"
            "                      e.g. http://10.0.0.1:9101,...; slot i is the i-th URL: add\n"
            "                      nodes at the end, never reorder (CAIRN_CLUSTER_SECRET)\n"
            "  --rebuild-metadata  with --nodes and an empty DIR/meta: rebuild the metadata\n"
            "                      from the object manifests on the nodes, then serve\n"
            "  --scrub-rate BYTES  background scrub speed: shard bytes whose CRC32C is\n"
            "                      verified per second (default 16777216; 0 = no scrub)\n"
            "  --scrub-interval S  seconds between scrub passes (default 86400)\n"
            "  --ec K+M            erasure coding: K data + M parity shards (default 4+2)\n"
            "  --block-size BYTES  erasure block size per shard (default 262144)\n"
            "  --inline-max BYTES  objects up to this size live in the metadata record\n"
            "                      (default 65536)\n"
            "  --region R          region reported and expected in signatures (default us-east-1)\n"
            "  --domain D          base domain for virtual-hosted-style requests (BUCKET.D)\n"
            "  --trust-proxy       honour X-Forwarded-Host (behind a reverse proxy)\n"
            "  --public-url URL    the URL clients reach this server by (presigned URLs)\n"
            "  --log-level L       error, warn, info (default) or debug\n"
            "  --events K=V,...    event delivery: retries (8), max-age (s, 86400), backoff\n"
            "                      (ms, 500), backoff-max (ms, 60000), retention (s, 604800),\n"
            "                      workers (4), max-depth (4), timeout (ms, 10000),\n"
            "                      log-max (bytes per function log before it is rotated to\n"
            "                      NAME.log.1, 16777216), window (pending events per\n"
            "                      destination held in memory; the rest wait in the outbox,\n"
            "                      4096)\n"
            "  --no-usage          do not record usage (benchmark comparisons only: the\n"
            "                      usage report then misses these requests)\n"
            "  --usage-fsync       fsync each usage record before answering (group-committed;\n"
            "                      survives power loss; default: written to the kernel before\n"
            "                      answering, which survives kill -9 and any process crash)\n"
            "  --no-access-log     do not write DIR/logs/access.log\n"
            "  --access-log-max-bytes N  rotate the access log at N bytes (64 MiB)\n"
            "  --access-log-max-age S    ... or when it is S seconds old (86400)\n"
            "  --log-delivery-interval S deliver PutBucketLogging lines every S seconds (60)\n"
            "  --usage-fold-ms MS  fold pending usage records every MS ms (1000)\n"
            "  -h, --help          this text\n\n"
            "Root credentials come from CAIRN_ACCESS_KEY and CAIRN_SECRET_KEY; without them a\n"
            "pair is generated on first start, kept in DIR/credentials (mode 0600) and printed.\n");
}

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

/* Reads or creates DIR/credentials ("ACCESS SECRET\n"). */
static int load_credentials(const char *dir, char *ak, size_t akn, char *sk, size_t skn,
                            bool *created)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/credentials", dir);
    FILE *f = fopen(path, "r");
    *created = false;
    if (f) {
        char a[256], s[256];
        int ok = fscanf(f, "%255s %255s", a, s) == 2;
        fclose(f);
        if (!ok)
            return CM_ECORRUPT;
        snprintf(ak, akn, "%s", a);
        snprintf(sk, skn, "%s", s);
        return 0;
    }
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    static const char b64ish[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint8_t rnd[60];
    if (cm_random_bytes(rnd, sizeof rnd))
        return CM_EIO;
    char a[21], s[41];
    memcpy(a, "CAIRN", 5);
    for (int i = 5; i < 20; i++)
        a[i] = alnum[rnd[i] % 36];
    a[20] = 0;
    for (int i = 0; i < 40; i++)
        s[i] = b64ish[rnd[20 + i] % 64];
    s[40] = 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return CM_EIO;
    char line[128];
    int n = snprintf(line, sizeof line, "%s %s\n", a, s);
    int rc = write(fd, line, (size_t)n) == n && fsync(fd) == 0 ? 0 : CM_EIO;
    close(fd);
    cm_wipe(rnd, sizeof rnd);
    snprintf(ak, akn, "%s", a);
    snprintf(sk, skn, "%s", s);
    *created = true;
    return rc;
}

static int cmd_server(int argc, char **argv)
{
    gw_config cfg = {
        .data_dir = "./data",
        .listen = "127.0.0.1:9000",
        .ec_k = 4,
        .ec_m = 2,
        .block_size = 256 * 1024,
        .region = "us-east-1",
        .inline_max = 64 * 1024,
        .scrub_rate = 16ull << 20,
        .scrub_interval_s = 86400,
    };
    enum { O_DATA = 256, O_LISTEN, O_DRIVES, O_EC, O_REGION, O_DOMAIN, O_TRUST, O_PUBURL,
           O_BLOCK, O_INLINE, O_LOGLEVEL, O_NOUSAGE, O_NOALOG, O_ALOGBYTES, O_ALOGAGE,
           O_LOGDELIV, O_FOLDMS, O_EVENTS, O_USAGEFSYNC, O_NODES, O_REBUILD, O_SCRUBRATE,
           O_SCRUBINT };
    static const struct option opts[] = {
        {"data", required_argument, 0, O_DATA},        {"listen", required_argument, 0, O_LISTEN},
        {"drives", required_argument, 0, O_DRIVES},    {"ec", required_argument, 0, O_EC},
        {"region", required_argument, 0, O_REGION},    {"domain", required_argument, 0, O_DOMAIN},
        {"trust-proxy", no_argument, 0, O_TRUST},      {"public-url", required_argument, 0, O_PUBURL},
        {"block-size", required_argument, 0, O_BLOCK}, {"inline-max", required_argument, 0, O_INLINE},
        {"log-level", required_argument, 0, O_LOGLEVEL}, {"help", no_argument, 0, 'h'},
        {"no-usage", no_argument, 0, O_NOUSAGE}, {"no-access-log", no_argument, 0, O_NOALOG},
        {"access-log-max-bytes", required_argument, 0, O_ALOGBYTES},
        {"access-log-max-age", required_argument, 0, O_ALOGAGE},
        {"log-delivery-interval", required_argument, 0, O_LOGDELIV},
        {"usage-fold-ms", required_argument, 0, O_FOLDMS},
        {"usage-fsync", no_argument, 0, O_USAGEFSYNC},
        {"events", required_argument, 0, O_EVENTS},
        {"nodes", required_argument, 0, O_NODES},
        {"rebuild-metadata", no_argument, 0, O_REBUILD},
        {"scrub-rate", required_argument, 0, O_SCRUBRATE},
        {"scrub-interval", required_argument, 0, O_SCRUBINT},
        {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_DATA: cfg.data_dir = optarg; break;
        case O_EVENTS: cfg.events = optarg; break;
        case O_LISTEN: cfg.listen = optarg; break;
        case O_DRIVES: cfg.drives = optarg; break;
        case O_NODES: cfg.nodes = optarg; break;
        case O_REBUILD: cfg.rebuild_metadata = true; break;
        case O_SCRUBRATE: cfg.scrub_rate = strtoull(optarg, NULL, 10); break;
        case O_SCRUBINT: cfg.scrub_interval_s = (unsigned)strtoul(optarg, NULL, 10); break;
        case O_EC:
            if (sscanf(optarg, "%d+%d", &cfg.ec_k, &cfg.ec_m) != 2 || cfg.ec_k < 1 ||
                cfg.ec_m < 0 || cfg.ec_k > 16 || cfg.ec_m > 8) {
                fprintf(stderr, "cairn: --ec wants K+M with 1<=K<=16, 0<=M<=8\n");
                return 2;
            }
            break;
        case O_REGION: cfg.region = optarg; break;
        case O_DOMAIN: cfg.domain = optarg; break;
        case O_TRUST: cfg.trust_proxy = true; break;
        case O_PUBURL: cfg.public_url = optarg; break;
        case O_BLOCK: cfg.block_size = strtoul(optarg, NULL, 10); break;
        case O_INLINE: cfg.inline_max = strtoul(optarg, NULL, 10); break;
        case O_LOGLEVEL:
            cm_log_level = !strcmp(optarg, "error")  ? CM_LOG_ERROR
                           : !strcmp(optarg, "warn") ? CM_LOG_WARN
                           : !strcmp(optarg, "debug") ? CM_LOG_DEBUG
                                                      : CM_LOG_INFO;
            break;
        case O_NOUSAGE: cfg.no_usage = true; break;
        case O_NOALOG: cfg.no_access_log = true; break;
        case O_USAGEFSYNC: cfg.usage_fsync = true; break;
        case O_ALOGBYTES: cfg.access_log_max_bytes = strtoull(optarg, NULL, 10); break;
        case O_ALOGAGE: cfg.access_log_max_age_s = (unsigned)strtoul(optarg, NULL, 10); break;
        case O_LOGDELIV: cfg.log_delivery_s = (unsigned)strtoul(optarg, NULL, 10); break;
        case O_FOLDMS: cfg.usage_fold_ms = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'h': usage_server(stdout); return 0;
        default: usage_server(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cairn server: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (cfg.nodes && cfg.drives) {
        fprintf(stderr, "cairn: --nodes and --drives exclude each other\n");
        return 2;
    }
    if (cfg.rebuild_metadata && !cfg.nodes) {
        fprintf(stderr, "cairn: --rebuild-metadata needs --nodes (the object manifests live on "
                        "the storage nodes)\n");
        return 2;
    }
    if (cfg.scrub_interval_s < 1)
        cfg.scrub_interval_s = 1;
    cfg.cluster_secret = getenv("CAIRN_CLUSTER_SECRET");
    if (cfg.nodes && (!cfg.cluster_secret || !*cfg.cluster_secret)) {
        fprintf(stderr, "cairn: --nodes needs the cluster secret in CAIRN_CLUSTER_SECRET (the "
                        "same as the nodes')\n");
        return 2;
    }
    if (cfg.block_size < 4096 || cfg.block_size > (64u << 20) || cfg.block_size % 64) {
        fprintf(stderr, "cairn: --block-size must be a multiple of 64 in [4096, 64 MiB]\n");
        return 2;
    }
    if (cm_mkdir_p(cfg.data_dir, 0700)) {
        fprintf(stderr, "cairn: cannot create %s: %s\n", cfg.data_dir, strerror(errno));
        return 1;
    }
    char ak[256], sk[256];
    bool created = false;
    const char *eak = getenv("CAIRN_ACCESS_KEY"), *esk = getenv("CAIRN_SECRET_KEY");
    if (eak && *eak && esk && *esk) {
        snprintf(ak, sizeof ak, "%s", eak);
        snprintf(sk, sizeof sk, "%s", esk);
    } else if (load_credentials(cfg.data_dir, ak, sizeof ak, sk, sizeof sk, &created)) {
        fprintf(stderr, "cairn: cannot read or create %s/credentials\n", cfg.data_dir);
        return 1;
    }
    cfg.access_key = ak;
    cfg.secret_key = sk;

    signal(SIGPIPE, SIG_IGN);
    /* A thread per connection would otherwise grow one malloc arena each:
     * memory should be bounded by the stripe buffers in use, not by how many
     * connections came and went. */
    mallopt(M_ARENA_MAX, 8);
    gw_server_t *srv;
    int rc = gw_start(&cfg, &srv);
    if (rc) {
        fprintf(stderr, "cairn: cannot start: %s\n", cm_strerror(rc));
        return 1;
    }
    printf("cairn is serving S3 at http://%s (region %s)\n", cfg.listen, cfg.region);
    printf("  data:       %s (%d+%d erasure coding)\n", cfg.data_dir, cfg.ec_k, cfg.ec_m);
    if (eak && esk && *eak && *esk)
        printf("  access key: %s (from CAIRN_ACCESS_KEY)\n", ak);
    else
        printf("  access key: %s\n  secret key: %s\n  (%s %s/credentials)\n", ak, sk,
               created ? "generated and saved in" : "read from", cfg.data_dir);
    printf("try: AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=... aws --endpoint-url "
           "http://%s s3 ls\n",
           ak, cfg.listen);
    fflush(stdout);
    cm_wipe(sk, sizeof sk);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    while (!stop_flag)
        pause();
    cm_log(CM_LOG_INFO, "stopping");
    gw_stop(srv);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage_main(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage_main(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("cairn 0.1.0\n");
        return 0;
    }
    if (!strcmp(argv[1], "server"))
        return cmd_server(argc - 1, argv + 1);
    fprintf(stderr, "cairn: unknown command '%s'\n", argv[1]);
    usage_main(stderr);
    return 2;
}
