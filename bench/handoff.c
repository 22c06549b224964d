/* handoff: blocks made by worker threads, freed by main, which then idles
 * or does small unrelated work.
 *
 *   handoff MODE WORK [MIB [THREADS [SEED]]]
 *
 * THREADS threads (default 4) each allocate MIB/THREADS MiB (MIB default
 * 68) of small blocks (64..512 B, written) and hand them to main; with
 * MODE "exit" they exit, with "idle" they stay alive, blocked on a
 * condition variable, until the end.  Main frees every block.  With WORK
 * "busy" main then runs a steady small-object churn (a fixed set of 1,000
 * live objects of 16..256 B replaced at random, made before `rss_base`)
 * until the last reading; with "quiet" it only sleeps.  Readings, as
 * growth over `rss_base` (RSS before the workers started; 0 if negative):
 * `rss_added_0s` right after the frees, `rss_added_1s` and `rss_added_3s`
 * 1 s and 3 s later: what the remote frees left resident.  One op = one
 * block handed over.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "bench.h"

#include <pthread.h>

#define LIVE 1000

static const char *prog = "handoff";

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static unsigned produced;
static int released, keep_alive;

static void *produce(void *arg)
{
    struct batch *b = arg;
    batch_make(prog, b, 64, 512);
    pthread_mutex_lock(&mu);
    produced++;
    pthread_cond_broadcast(&cv);
    while (keep_alive && !released)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return NULL;
}

/* Main's own small objects, replaced at random. */
static uint64_t rng;
static void *live[LIVE];
static size_t live_size[LIVE];

static void churn_for(long ms, int busy)
{
    if (!busy) {
        sleep_ms(ms);
        return;
    }
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        for (int k = 0; k < 1000; k++) {
            size_t i = (size_t)(rng_next(&rng) % LIVE);
            if (!obj_check(live[i], live_size[i]))
                bench_fail(prog, "object corrupted");
            free(live[i]);
            live_size[i] = rng_range(&rng, 16, 256);
            live[i] = bench_malloc(prog, live_size[i]);
            obj_fill(live[i], live_size[i]);
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >= ms)
            return;
    }
}

static void reading(const char *key, size_t base)
{
    size_t r = rss_now();
    printf("%s %zu\n", key, r > base ? r - base : 0);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "exit";
    const char *work = argc > 2 ? argv[2] : "busy";
    size_t total = (size_t)arg_long(argc, argv, 3, 68) << 20;
    unsigned n = (unsigned)arg_long(argc, argv, 4, 4);
    uint64_t seed = (uint64_t)arg_long(argc, argv, 5, 42);
    keep_alive = strcmp(mode, "idle") == 0;
    if (!keep_alive && strcmp(mode, "exit") != 0)
        bench_fail(prog, "MODE must be exit or idle");
    int busy = strcmp(work, "busy") == 0;
    if (!busy && strcmp(work, "quiet") != 0)
        bench_fail(prog, "WORK must be busy or quiet");
    if (n == 0 || n > 256)
        bench_fail(prog, "THREADS must be 1..256");

    rng = rng_seed(seed);
    for (int i = 0; i < LIVE; i++) {
        live_size[i] = rng_range(&rng, 16, 256);
        live[i] = bench_malloc(prog, live_size[i]);
        obj_fill(live[i], live_size[i]);
    }
    size_t base = rss_now();
    printf("rss_base %zu\n", base);

    struct batch b[256];
    pthread_t t[256];
    for (unsigned i = 0; i < n; i++) {
        b[i] = (struct batch){NULL, total / n, 0, seed + 1 + i};
        if (pthread_create(&t[i], NULL, produce, &b[i]) != 0)
            bench_fail(prog, "pthread_create failed");
    }
    pthread_mutex_lock(&mu);
    while (produced < n)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    if (!keep_alive)
        for (unsigned i = 0; i < n; i++)
            pthread_join(t[i], NULL);

    unsigned long long ops = 0;
    for (unsigned i = 0; i < n; i++) {
        for (struct blk *k = b[i].head, *next; k; k = next) {
            next = k->next;
            if (!obj_check(k, k->size))
                bench_fail(prog, "block corrupted");
            free(k);
            ops++;
        }
    }
    reading("rss_added_0s", base);
    churn_for(1000, busy);
    reading("rss_added_1s", base);
    churn_for(2000, busy);
    reading("rss_added_3s", base);

    if (keep_alive) {
        pthread_mutex_lock(&mu);
        released = 1;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
        for (unsigned i = 0; i < n; i++)
            pthread_join(t[i], NULL);
    }
    for (int i = 0; i < LIVE; i++)
        free(live[i]);
    report_ops(ops);
    return 0;
}
