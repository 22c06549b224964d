/* idlebig: one thread frees a big buffer and goes idle (or exits).
 *
 *   idlebig MODE SIZE_MIB WAIT_MS [ACTIVE_THREADS [SEED]]
 *
 * MODE is "active", "quiet" or "exit".  With "active", ACTIVE_THREADS
 * threads (default 2) first run a steady small-object churn (a fixed set
 * of 4,000 live objects of 16 B..16 KiB replaced at random) for WAIT_MS, so
 * their own memory has settled; then `rss_base` is read, one more thread
 * mallocs a SIZE_MIB MiB buffer, writes it whole, frees it and waits idle
 * on a condition variable (with "exit" it exits instead) while the others
 * keep churning for WAIT_MS; then `rss_idle` is read, and `rss_added`
 * is rss_idle - rss_base (0 if negative): what the idle thread's free left
 * resident.  "quiet" and "exit" have no other thread doing anything.
 * One op = one churn step (at least 1).
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "bench.h"

#include <pthread.h>
#include <stdatomic.h>

#define LIVE 4000

static const char *prog = "idlebig";
static atomic_int stop_churn;
static atomic_ullong churn_ops;
static size_t big_size;
static int big_exits;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int big_done, release_big;

static void *churn(void *arg)
{
    uint64_t rng = rng_seed((uint64_t)(uintptr_t)arg);
    void *p[LIVE];
    size_t sz[LIVE];
    for (int i = 0; i < LIVE; i++) {
        sz[i] = rng_logrange(&rng, 16, 16384);
        p[i] = bench_malloc(prog, sz[i]);
        obj_fill(p[i], sz[i]);
    }
    unsigned long long n = 0;
    while (!atomic_load_explicit(&stop_churn, memory_order_relaxed)) {
        size_t i = (size_t)(rng_next(&rng) % LIVE);
        if (!obj_check(p[i], sz[i]))
            bench_fail(prog, "object corrupted");
        free(p[i]);
        sz[i] = rng_logrange(&rng, 16, 16384);
        p[i] = bench_malloc(prog, sz[i]);
        obj_fill(p[i], sz[i]);
        n++;
    }
    for (int i = 0; i < LIVE; i++)
        free(p[i]);
    atomic_fetch_add(&churn_ops, n);
    return NULL;
}

static void *big(void *arg)
{
    (void)arg;
    char *b = bench_malloc(prog, big_size);
    memset(b, 0x5a, big_size);
    obj_fill(b, big_size);
    if (!obj_check(b, big_size))
        bench_fail(prog, "buffer corrupted");
    free(b);
    pthread_mutex_lock(&mu);
    big_done = 1;
    pthread_cond_broadcast(&cv);
    while (!big_exits && !release_big)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "active";
    big_size = (size_t)arg_long(argc, argv, 2, 24) << 20;
    long wait_ms = arg_long(argc, argv, 3, 1000);
    int active = strcmp(mode, "active") == 0;
    big_exits = strcmp(mode, "exit") == 0;
    if (!active && !big_exits && strcmp(mode, "quiet") != 0)
        bench_fail(prog, "MODE must be active, quiet or exit");
    unsigned nchurn = active ? (unsigned)arg_long(argc, argv, 4, 2) : 0;
    uint64_t seed = (uint64_t)arg_long(argc, argv, 5, 42);

    pthread_t ct[64];
    if (nchurn > 64)
        nchurn = 64;
    for (unsigned i = 0; i < nchurn; i++)
        if (pthread_create(&ct[i], NULL, churn, (void *)(uintptr_t)(seed + i)) != 0)
            bench_fail(prog, "pthread_create failed");
    if (nchurn)
        sleep_ms(wait_ms);
    size_t base = rss_now();
    printf("rss_base %zu\n", base);
    pthread_t bt;
    if (pthread_create(&bt, NULL, big, NULL) != 0)
        bench_fail(prog, "pthread_create failed");
    pthread_mutex_lock(&mu);
    while (!big_done)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    if (big_exits)
        pthread_join(bt, NULL);
    sleep_ms(wait_ms);
    size_t idle = rss_now();
    printf("rss_idle %zu\nrss_added %zu\n", idle, idle > base ? idle - base : 0);
    atomic_store(&stop_churn, 1);
    for (unsigned i = 0; i < nchurn; i++)
        pthread_join(ct[i], NULL);
    if (!big_exits) {
        pthread_mutex_lock(&mu);
        release_big = 1;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
        pthread_join(bt, NULL);
    }
    unsigned long long ops = atomic_load(&churn_ops);
    report_ops(ops ? ops : 1);
    return 0;
}
