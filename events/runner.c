/* events/runner.c - the function runner: one `sh -c COMMAND` per event
 * (posix_spawn, its own process group), the event JSON on stdin, a clean
 * environment with CAIRN_* variables, per-run credentials and a presigned
 * GET URL of the object; output appended to DIR/logs/functions/NAME.log;
 * killed at its timeout. Exit 0 acknowledges the event. */
#include "events/evt_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int env_add(char ***env, size_t *n, const char *k, const char *v, size_t vn)
{
    char **a = realloc(*env, (*n + 2) * sizeof *a);
    if (!a)
        return CM_ENOMEM;
    *env = a;
    size_t kl = strlen(k);
    char *s = malloc(kl + vn + 2);
    if (!s)
        return CM_ENOMEM;
    memcpy(s, k, kl);
    s[kl] = '=';
    memcpy(s + kl + 1, v, vn);
    s[kl + 1 + vn] = 0;
    a[(*n)++] = s;
    a[*n] = NULL;
    return 0;
}

static int env_adds(char ***env, size_t *n, const char *k, const char *v)
{
    return env_add(env, n, k, v ? v : "", v ? strlen(v) : 0);
}

static void env_free(char **env, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (env[i])
            cm_wipe(env[i], strlen(env[i]));
        free(env[i]);
    }
    free(env);
}

/* The environment of a run: a few of the server's own variables (never
 * its credentials), the CAIRN_* description of the event, per-run AWS
 * credentials, then the function's --env pairs. */
static int build_env(evt_t *e, const evt__fn *f, const evt__rec *r, char ***out, size_t *nout)
{
    static const char *const keep[] = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ",
                                       "PYTHONPATH", NULL};
    char **env = NULL, ak[128] = "", sk[128] = "", depth[16];
    size_t n = 0;
    cm_buf url = {0};
    int rc = 0;

    for (const char *const *k = keep; *k && !rc; k++)
        if (getenv(*k))
            rc = env_adds(&env, &n, *k, getenv(*k));
    if (!rc && e->cfg.presign)
        rc = e->cfg.presign(e->cfg.cb_arg, r->bucket, cm_buf_slice(&r->key), 900, &url);
    if (!rc && e->cfg.session)
        rc = e->cfg.session(e->cfg.cb_arg, r->depth, ak, sk);
    snprintf(depth, sizeof depth, "%d", r->depth);
    if (!rc)
        rc = env_adds(&env, &n, "CAIRN_ENDPOINT", e->cfg.endpoint);
    if (!rc)
        rc = env_adds(&env, &n, "CAIRN_BUCKET", r->bucket);
    if (!rc)
        rc = env_add(&env, &n, "CAIRN_KEY", (const char *)r->key.p, r->key.n);
    if (!rc)
        rc = env_adds(&env, &n, "CAIRN_EVENT_NAME", evt_type_name(r->type));
    if (!rc)
        rc = env_adds(&env, &n, "CAIRN_OBJECT_URL", cm_buf_str(&url));
    if (!rc)
        rc = env_adds(&env, &n, "CAIRN_EVENT_DEPTH", depth);
    if (!rc)
        rc = env_adds(&env, &n, "CAIRN_FUNCTION", f->name);
    if (!rc && ak[0]) {
        rc = env_adds(&env, &n, "AWS_ACCESS_KEY_ID", ak);
        if (!rc)
            rc = env_adds(&env, &n, "AWS_SECRET_ACCESS_KEY", sk);
        if (!rc)
            rc = env_adds(&env, &n, "AWS_ENDPOINT_URL", e->cfg.endpoint);
        if (!rc)
            rc = env_adds(&env, &n, "AWS_DEFAULT_REGION", e->cfg.region);
        if (!rc)
            rc = env_adds(&env, &n, "AWS_REGION", e->cfg.region);
    }
    for (size_t i = 0; !rc && i < f->nenv; i++) {
        char *eq = strchr(f->env[i], '=');
        char k[256];
        snprintf(k, sizeof k, "%.*s", (int)(eq - f->env[i]), f->env[i]);
        rc = env_adds(&env, &n, k, eq + 1);
    }
    cm_wipe(sk, sizeof sk);
    cm_buf_free(&url);
    if (rc) {
        env_free(env, n);
        return rc;
    }
    *out = env;
    *nout = n;
    return 0;
}

static void log_line(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_line(int fd, const char *fmt, ...)
{
    char buf[1024], t[32];
    va_list ap;
    cm_time_iso8601_ms(cm_now_ms(), t);
    int n = snprintf(buf, sizeof buf, "[%s cairn] ", t);
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof buf - 1)
        n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    if (write(fd, buf, (size_t)n) < 0)
        return;
}

/* Keeps a function's log bounded: once NAME.log is past the limit it
 * becomes NAME.log.1 (replacing the previous one) and a new NAME.log starts.
 * Runs still writing to the old file finish there. One rotation at a time. */
static void rotate_log(const evt_t *e, const char *path)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    char old[4210];
    struct stat st;

    if (e->cfg.log_max_bytes <= 0)
        return;
    pthread_mutex_lock(&mu);
    if (stat(path, &st) == 0 && st.st_size >= e->cfg.log_max_bytes) {
        snprintf(old, sizeof old, "%s.1", path);
        if (rename(path, old) != 0)
            cm_log(CM_LOG_WARN, "events: cannot rotate %s: %s", path, strerror(errno));
    }
    pthread_mutex_unlock(&mu);
}

int evt__run(evt_t *e, const evt__fn *f, const evt__rec *r, cm_slice msg, cm_buf *err)
{
    char path[4200], sq[17];
    char **env = NULL;
    size_t nenv = 0;
    int logfd = -1, in[2] = {-1, -1}, rc = CM_EIO, status = 0;
    pid_t pid = -1;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    bool fa_ok = false, at_ok = false;

    if (cm_mkdir_p(e->log_dir, 0700)) {
        cm_buf_printf(err, "cannot create %s", e->log_dir);
        return CM_EIO;
    }
    snprintf(path, sizeof path, "%s/%s.log", e->log_dir, f->name);
    rotate_log(e, path);
    if ((logfd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) < 0) {
        cm_buf_printf(err, "cannot open %s: %s", path, strerror(errno));
        return CM_EIO;
    }
    if ((rc = build_env(e, f, r, &env, &nenv))) {
        cm_buf_printf(err, "cannot prepare the run: %s", cm_strerror(rc));
        goto out;
    }
    rc = CM_EIO;
    if (pipe2(in, O_CLOEXEC)) {
        cm_buf_printf(err, "pipe: %s", strerror(errno));
        goto out;
    }
    evt_sequencer(r->evseq, sq);
    log_line(logfd, "run %s %s %s/%.*s sequencer %s depth %d", f->name, evt_type_name(r->type),
             r->bucket, (int)(r->key.n > 300 ? 300 : r->key.n), (const char *)r->key.p, sq,
             r->depth);
    posix_spawn_file_actions_init(&fa);
    fa_ok = true;
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, logfd, 1);
    posix_spawn_file_actions_adddup2(&fa, logfd, 2);
    posix_spawnattr_init(&at);
    at_ok = true;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &all);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {"sh", "-c", f->exec, NULL};
    int se = posix_spawn(&pid, "/bin/sh", &fa, &at, argv, env);
    close(in[0]);
    in[0] = -1;
    if (se) {
        pid = -1;
        cm_buf_printf(err, "cannot start /bin/sh: %s", strerror(se));
        log_line(logfd, "cannot start: %s", strerror(se));
        goto out;
    }
    /* Feed stdin without blocking past the deadline; a run that does not
     * read it just sees EOF later. */
    int64_t deadline = cm_now_ms() + (int64_t)f->timeout_s * 1000;
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    size_t off = 0;
    while (off < msg.n && cm_now_ms() < deadline) {
        ssize_t w = write(in[1], msg.p + off, msg.n - off);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EAGAIN) {
            struct pollfd pf = {in[1], POLLOUT, 0};
            poll(&pf, 1, 50);
            if (waitpid(pid, &status, WNOHANG) == pid) {
                pid = -pid; /* already reaped */
                break;
            }
            continue;
        }
        if (w < 0 && errno == EPIPE) {
            /* It closed stdin. SIGPIPE is blocked in delivery threads:
             * take the pending one so it never reaches the process. */
            sigset_t pipe_set;
            struct timespec zero = {0, 0};
            sigemptyset(&pipe_set);
            sigaddset(&pipe_set, SIGPIPE);
            sigtimedwait(&pipe_set, NULL, &zero);
        }
        break;
    }
    close(in[1]);
    in[1] = -1;
    bool timed_out = false;
    while (pid > 0) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            cm_buf_printf(err, "waitpid: %s", strerror(errno));
            pid = -1;
            goto out;
        }
        if (__atomic_load_n(&e->stopping, __ATOMIC_RELAXED) || cm_now_ms() >= deadline) {
            timed_out = !__atomic_load_n(&e->stopping, __ATOMIC_RELAXED);
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        usleep(5000);
    }
    pid = -1;
    if (timed_out) {
        cm_buf_printf(err, "timed out after %d s", f->timeout_s);
        log_line(logfd, "killed: timed out after %d s", f->timeout_s);
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        log_line(logfd, "exit 0");
        rc = 0;
    } else if (WIFEXITED(status)) {
        cm_buf_printf(err, "exit status %d", WEXITSTATUS(status));
        log_line(logfd, "exit %d", WEXITSTATUS(status));
    } else {
        cm_buf_printf(err, "killed by signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        log_line(logfd, "killed by signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
out:
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    if (at_ok)
        posix_spawnattr_destroy(&at);
    if (in[0] >= 0)
        close(in[0]);
    if (in[1] >= 0)
        close(in[1]);
    if (logfd >= 0)
        close(logfd);
    if (env)
        env_free(env, nenv);
    return rc;
}
