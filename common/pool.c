/* common/pool.c - per-request arenas: allocations freed together, cleanups
 * run in reverse order when the pool is freed; and large buffers kept for
 * reuse (cm_bufkeep). */
#include "common/cm.h"
#include <stdlib.h>

#define POOL_BLOCK 4096

struct pool_block {
    struct pool_block *next;
    size_t used, cap;
    _Alignas(16) uint8_t data[];
};

struct pool_cleanup {
    struct pool_cleanup *next;
    void (*fn)(void *);
    void *arg;
};

#define POOL_SPARE_MAX 4 /* blocks a reset pool keeps */

struct cm_pool {
    struct pool_block *blocks;     /* newest first */
    struct pool_cleanup *cleanups; /* newest first */
    struct pool_block *spare;      /* POOL_BLOCK-sized blocks kept by cm_pool_reset */
    int nspare;
};

cm_pool *cm_pool_new(void)
{
    return calloc(1, sizeof(cm_pool));
}

void cm_pool_free(cm_pool *pool)
{
    if (!pool)
        return;
    for (struct pool_cleanup *c = pool->cleanups, *nx; c; c = nx) {
        nx = c->next;
        c->fn(c->arg);
    }
    for (struct pool_block *b = pool->blocks, *nx; b; b = nx) {
        nx = b->next;
        free(b);
    }
    for (struct pool_block *b = pool->spare, *nx; b; b = nx) {
        nx = b->next;
        free(b);
    }
    free(pool);
}

void cm_pool_reset(cm_pool *pool)
{
    for (struct pool_cleanup *c = pool->cleanups, *nx; c; c = nx) {
        nx = c->next;
        c->fn(c->arg);
    }
    pool->cleanups = NULL;
    for (struct pool_block *b = pool->blocks, *nx; b; b = nx) {
        nx = b->next;
        if (b->cap == POOL_BLOCK && pool->nspare < POOL_SPARE_MAX) {
            b->next = pool->spare;
            pool->spare = b;
            pool->nspare++;
        } else {
            free(b);
        }
    }
    pool->blocks = NULL;
}

void *cm_pool_alloc(cm_pool *pool, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct pool_block *b = pool->blocks;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > POOL_BLOCK ? n : POOL_BLOCK;
        struct pool_block *nb = pool->spare;
        if (cap == POOL_BLOCK && nb) {
            pool->spare = nb->next;
            pool->nspare--;
        } else if (!(nb = malloc(sizeof *nb + cap))) {
            return NULL;
        }
        nb->used = 0;
        nb->cap = cap;
        if (b && n > POOL_BLOCK) { /* keep the current block for small allocations */
            nb->next = b->next;
            b->next = nb;
        } else {
            nb->next = b;
            pool->blocks = nb;
        }
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

char *cm_pool_strndup(cm_pool *pool, const void *p, size_t n)
{
    char *s = cm_pool_alloc(pool, n + 1);
    if (s && n)
        memcpy(s, p, n);
    return s;
}

int cm_pool_cleanup_add(cm_pool *pool, void (*fn)(void *), void *arg)
{
    struct pool_cleanup *c = cm_pool_alloc(pool, sizeof *c);
    if (!c)
        return CM_ENOMEM;
    c->fn = fn;
    c->arg = arg;
    c->next = pool->cleanups;
    pool->cleanups = c;
    return 0;
}

int cm_bufkeep_init(cm_bufkeep *k, size_t size, size_t align, int max)
{
    memset(k, 0, sizeof *k);
    if (!(k->kept = calloc(max > 0 ? (size_t)max : 1, sizeof *k->kept)))
        return CM_ENOMEM;
    pthread_mutex_init(&k->mu, NULL);
    k->size = size;
    k->align = align;
    k->max = max;
    return 0;
}

void *cm_bufkeep_get(cm_bufkeep *k)
{
    void *p = NULL;

    pthread_mutex_lock(&k->mu);
    if (k->n > 0)
        p = k->kept[--k->n];
    pthread_mutex_unlock(&k->mu);
    if (!p && posix_memalign(&p, k->align, k->size) != 0)
        p = NULL;
    return p;
}

void cm_bufkeep_put(cm_bufkeep *k, void *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&k->mu);
    if (k->n < k->max) {
        k->kept[k->n++] = p;
        p = NULL;
    }
    pthread_mutex_unlock(&k->mu);
    free(p);
}

void cm_bufkeep_destroy(cm_bufkeep *k)
{
    if (!k->kept)
        return;
    for (int i = 0; i < k->n; i++)
        free(k->kept[i]);
    free(k->kept);
    k->kept = NULL;
    k->n = 0;
    pthread_mutex_destroy(&k->mu);
}
