/* SPDX-License-Identifier: MIT */
/*
 * The device's threads: created once at open, parked between ops. An op
 * hands the pool n items and a function; the calling thread works as
 * thread 0 beside the workers, each taking the next item from a shared
 * counter until none is left, and the call returns when all are done.
 *
 * Decode calls come back to back (one per layer) and last from tens of
 * microseconds to milliseconds, so a thread that runs out of work spins for
 * a short while before it sleeps on a condition variable: waking a sleeping
 * thread costs about as much as a short call.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu.h"
#include "turbokv_fpenv.h"

#define SPIN_NS 100000 /* 0.1 ms */

struct cpu_pool {
    uint32_t n_threads; /* the caller included */
    pthread_t *workers; /* n_threads - 1 */
    struct worker {
        struct cpu_pool *pool;
        uint32_t id;
    } *ids;
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    atomic_uint_fast64_t generation; /* one more per job; the workers wait for a change */
    atomic_uint next;                /* the next item to take */
    atomic_uint busy;                /* workers still in the current job */
    atomic_int stop;
    /* the current job, written before generation moves */
    uint32_t n_items;
    cpu_pool_fn fn;
    void *arg;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Spins up to SPIN_NS for done(p) to hold; 1 if it did. */
static int spin_until(int (*done)(struct cpu_pool *, uint64_t), struct cpu_pool *p, uint64_t arg)
{
    uint64_t start = now_ns();
    for (uint32_t i = 1;; i++) {
        if (done(p, arg))
            return 1;
        cpu_relax();
        if (i % 256 == 0 && now_ns() - start > SPIN_NS)
            return 0;
    }
}

static int job_posted(struct cpu_pool *p, uint64_t seen)
{
    return atomic_load_explicit(&p->generation, memory_order_acquire) != seen ||
           atomic_load(&p->stop);
}

static int job_done(struct cpu_pool *p, uint64_t unused)
{
    (void)unused;
    return atomic_load_explicit(&p->busy, memory_order_acquire) == 0;
}

static void take_items(struct cpu_pool *p, uint32_t thread)
{
    for (uint32_t i; (i = atomic_fetch_add(&p->next, 1)) < p->n_items;)
        p->fn(p->arg, i, thread);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct cpu_pool *p = w->pool;
    uint64_t seen = 0; /* jobs may be posted before this thread first runs */
    /* the thread inherited the environment of the host's thread that opened
     * the device; it runs only the plugin's work, in the rules' one */
    (void)tkv_fpenv_enter();
    for (;;) {
        if (!spin_until(job_posted, p, seen)) {
            pthread_mutex_lock(&p->lock);
            while (!job_posted(p, seen))
                pthread_cond_wait(&p->wake, &p->lock);
            pthread_mutex_unlock(&p->lock);
        }
        if (atomic_load(&p->stop))
            return NULL;
        seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        take_items(p, w->id);
        if (atomic_fetch_sub_explicit(&p->busy, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->lock);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->lock);
        }
    }
}

static void stop_workers(struct cpu_pool *p, uint32_t n_started)
{
    pthread_mutex_lock(&p->lock);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (uint32_t i = 0; i < n_started; i++)
        pthread_join(p->workers[i], NULL);
}

static void free_pool(struct cpu_pool *p)
{
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p->workers);
    free(p->ids);
    free(p);
}

int cpu_pool_create(uint32_t n_threads, struct cpu_pool **out)
{
    *out = NULL;
    if (n_threads <= 1)
        return TKV_OK;
    struct cpu_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->workers = calloc(n_threads - 1, sizeof *p->workers)) ||
        !(p->ids = calloc(n_threads - 1, sizeof *p->ids))) {
        if (p)
            free(p->workers);
        free(p);
        return CPU_ERROR(TKV_ENOMEM, "open: no memory for a pool of %u threads", n_threads);
    }
    p->n_threads = n_threads;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    for (uint32_t i = 0; i + 1 < n_threads; i++) {
        p->ids[i] = (struct worker){ p, i + 1 };
        int err = pthread_create(&p->workers[i], NULL, worker_main, &p->ids[i]);
        if (err) {
            stop_workers(p, i);
            free_pool(p);
            return CPU_ERROR(TKV_EDEVICE, "open: cannot start thread %u of %u: %s", i + 2,
                             n_threads, strerror(err));
        }
    }
    *out = p;
    return TKV_OK;
}

void cpu_pool_destroy(struct cpu_pool *p)
{
    if (!p)
        return;
    stop_workers(p, p->n_threads - 1);
    free_pool(p);
}

void cpu_pool_run(struct cpu_pool *p, uint32_t n_items, cpu_pool_fn fn, void *arg)
{
    if (!p || n_items <= 1) {
        for (uint32_t i = 0; i < n_items; i++)
            fn(arg, i, 0);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    p->n_items = n_items;
    atomic_store(&p->next, 0);
    atomic_store(&p->busy, p->n_threads - 1);
    pthread_mutex_lock(&p->lock);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    take_items(p, 0);
    if (!spin_until(job_done, p, 0)) {
        pthread_mutex_lock(&p->lock);
        while (!job_done(p, 0))
            pthread_cond_wait(&p->done, &p->lock);
        pthread_mutex_unlock(&p->lock);
    }
}
