/* idlebound: free memory left resident when every thread idles or exits.
 *
 *   idlebound THREADS STEPS MODE IDLE_MS [SEED]
 *
 * THREADS workers each run STEPS steps over a pool of 16 live blocks of
 * 16 KiB..1 MiB (three in four under 272 KiB): a step replaces one block,
 * touching each of its OS pages, and a quarter of the blocks replaced are
 * handed through a shared queue to be freed by whichever worker comes
 * next (remote frees).  Then every worker frees all it holds, the queue
 * is drained, and the workers exit (MODE exit) or block on a condition
 * variable (MODE idle).  Main, which allocates nothing meanwhile, waits
 * IDLE_MS and reports `rss_idle`; then malloc_trim(0) and `rss_trimmed`
 * (what stays once everything free is given back: the program's own).
 * Their difference is the free memory the allocator keeps resident while
 * nothing runs: emma bounds it process-wide (32 MiB by default, emma(7)),
 * whatever the number of threads.  One op = one step.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "bench.h"

#include <malloc.h>
#include <pthread.h>

#define POOL 16
#define QUEUE 4096

static unsigned threads, steps;
static int idle_mode;
static uint64_t seed;
static void *queue[QUEUE];
static unsigned q_head, q_tail;
static pthread_mutex_t q_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static unsigned freed_workers, idle_workers;
static int quit;

static void q_push(void *p)
{
    pthread_mutex_lock(&q_mu);
    if (q_head - q_tail < QUEUE) {
        queue[q_head++ % QUEUE] = p;
        p = NULL;
    }
    pthread_mutex_unlock(&q_mu);
    free(p);
}

static void *q_pop(void)
{
    void *p = NULL;
    pthread_mutex_lock(&q_mu);
    if (q_head != q_tail)
        p = queue[q_tail++ % QUEUE];
    pthread_mutex_unlock(&q_mu);
    return p;
}

static void *worker(void *arg)
{
    uint64_t s = rng_seed(seed + (uint64_t)(uintptr_t)arg);
    void *live[POOL] = {0};
    for (unsigned i = 0; i < steps; i++) {
        unsigned k = (unsigned)rng_range(&s, 0, POOL - 1);
        if (live[k]) {
            if (rng_range(&s, 0, 3) == 0)
                q_push(live[k]);
            else
                free(live[k]);
        }
        size_t sz = rng_range(&s, 0, 3) ? rng_range(&s, 16384, 16384 + 262144)
                                         : rng_range(&s, 16384, 1048575);
        live[k] = bench_malloc("idlebound", sz);
        for (size_t o = 0; o < sz; o += BENCH_PAGE)
            ((volatile char *)live[k])[o] = 1;
        free(q_pop());
    }
    for (unsigned k = 0; k < POOL; k++)
        free(live[k]);
    /* every worker has freed its own: drain what others handed over */
    pthread_mutex_lock(&mu);
    freed_workers++;
    pthread_cond_broadcast(&cv);
    while (freed_workers < threads)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    void *p;
    while ((p = q_pop()) != NULL)
        free(p);
    pthread_mutex_lock(&mu);
    idle_workers++;
    pthread_cond_broadcast(&cv);
    while (idle_mode && !quit)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *prog = "idlebound";
    threads = (unsigned)arg_long(argc, argv, 1, 16);
    steps = (unsigned)arg_long(argc, argv, 2, 2000);
    idle_mode = argc > 3 && strcmp(argv[3], "idle") == 0;
    long idle_ms = arg_long(argc, argv, 4, 1500);
    seed = (uint64_t)arg_long(argc, argv, 5, 42);
    if (threads == 0 || threads > 1024)
        bench_fail(prog, "THREADS must be 1..1024");
    pthread_t *tid = calloc(threads, sizeof *tid);
    if (!tid)
        bench_fail(prog, "cannot allocate thread table");
    report_rss("rss_start");
    for (unsigned i = 0; i < threads; i++)
        if (pthread_create(&tid[i], NULL, worker, (void *)(uintptr_t)i) != 0)
            bench_fail(prog, "pthread_create failed");
    if (idle_mode) {
        pthread_mutex_lock(&mu);
        while (idle_workers < threads)
            pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
    } else {
        for (unsigned i = 0; i < threads; i++)
            pthread_join(tid[i], NULL);
    }
    sleep_ms(idle_ms);
    size_t idle = rss_now();
    malloc_trim(0);
    size_t trimmed = rss_now();
    printf("rss_idle %zu\nrss_trimmed %zu\nrss_free %zu\n", idle, trimmed,
           idle > trimmed ? idle - trimmed : 0);
    fflush(stdout);
    pthread_mutex_lock(&mu);
    quit = 1; /* idle workers leave */
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (unsigned i = 0; idle_mode && i < threads; i++)
        pthread_join(tid[i], NULL);
    free(tid);
    report_ops((unsigned long long)threads * steps);
    return 0;
}
