/* pool: a thread pool that goes idle, then exits.
 *
 *   pool THREADS TASKS NODE_MIB BIGS BIGMIN_MIB BIGMAX_MIB IDLE_MS [SEED]
 *
 * THREADS workers take TASKS tasks from a shared counter.  A task builds a
 * linked structure of NODE_MIB MiB of small nodes (24..256 B), allocates
 * BIGS buffers of BIGMIN_MIB..BIGMAX_MIB MiB and writes them whole, then
 * checks and frees all of it (the shape of a parser or a request handler
 * that builds and drops big temporary structures).  When the tasks are
 * done the workers wait, idle, on a condition variable; after IDLE_MS the
 * program reports `rss_idle`, then tells the workers to exit, joins them,
 * waits IDLE_MS again and reports `rss_exit`: the memory a user sees held
 * by an idle pool, and after it is gone.  One op = one task.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "bench.h"

#include <pthread.h>
#include <stdatomic.h>

struct node {
    uint64_t tag;
    struct node *next;
    size_t size;
};

static unsigned threads, tasks, bigs;
static size_t node_bytes, big_lo, big_hi;
static uint64_t seed;
static atomic_uint next_task;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static unsigned idle_workers;
static int quit;
static const char *prog = "pool";

static void run_task(unsigned t)
{
    uint64_t rng = rng_seed(seed * 1000003u + t);
    struct node *head = NULL;
    for (size_t bytes = 0; bytes < node_bytes;) {
        size_t sz = rng_range(&rng, sizeof(struct node) + 8, 256);
        struct node *n = bench_malloc(prog, sz);
        obj_fill(n, sz);
        n->next = head;
        n->size = sz;
        head = n;
        bytes += sz;
    }
    void *big[64];
    size_t bsz[64];
    unsigned nb = bigs < 64 ? bigs : 64;
    for (unsigned i = 0; i < nb; i++) {
        bsz[i] = rng_range(&rng, big_lo, big_hi);
        big[i] = bench_malloc(prog, bsz[i]);
        memset(big[i], (int)(i + 1), bsz[i]);
        obj_fill(big[i], bsz[i]);
    }
    for (unsigned i = 0; i < nb; i++) {
        if (!obj_check(big[i], bsz[i]))
            bench_fail(prog, "buffer corrupted");
        free(big[i]);
    }
    while (head) {
        struct node *n = head;
        head = n->next;
        if (!obj_check(n, n->size))
            bench_fail(prog, "node corrupted");
        free(n);
    }
}

static void *worker(void *arg)
{
    (void)arg;
    unsigned t;
    while ((t = atomic_fetch_add(&next_task, 1)) < tasks)
        run_task(t);
    pthread_mutex_lock(&mu);
    idle_workers++;
    pthread_cond_broadcast(&cv);
    while (!quit)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return NULL;
}

int main(int argc, char **argv)
{
    threads = (unsigned)arg_long(argc, argv, 1, 16);
    tasks = (unsigned)arg_long(argc, argv, 2, 32);
    node_bytes = (size_t)arg_long(argc, argv, 3, 40) << 20;
    bigs = (unsigned)arg_long(argc, argv, 4, 3);
    big_lo = (size_t)arg_long(argc, argv, 5, 6) << 20;
    big_hi = (size_t)arg_long(argc, argv, 6, 24) << 20;
    long idle_ms = arg_long(argc, argv, 7, 1000);
    seed = (uint64_t)arg_long(argc, argv, 8, 42);
    if (threads == 0 || threads > 1024)
        bench_fail(prog, "THREADS must be 1..1024");

    pthread_t *tid = calloc(threads, sizeof *tid);
    if (!tid)
        bench_fail(prog, "cannot allocate thread table");
    for (unsigned i = 0; i < threads; i++)
        if (pthread_create(&tid[i], NULL, worker, NULL) != 0)
            bench_fail(prog, "pthread_create failed");
    pthread_mutex_lock(&mu);
    while (idle_workers < threads)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);

    sleep_ms(idle_ms);
    report_rss("rss_idle");
    pthread_mutex_lock(&mu);
    quit = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (unsigned i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    free(tid);
    sleep_ms(idle_ms);
    report_rss("rss_exit");
    report_ops(tasks);
    return 0;
}
