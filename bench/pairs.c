/* pairs: producer/consumer pairs that go idle (or exit).
 *
 *   pairs MODE PAIRS ITEMS MAXSZ [WAIT_MS [SEED]]
 *
 * PAIRS pairs of threads (default 16).  Each producer mallocs ITEMS blocks
 * (default 50,000) of 16..MAXSZ bytes (default 65536), one in eight of
 * 16 B..256 KiB instead, each written whole.  A quarter of them
 * go into the producer's own ring of 256 slots, replacing (freeing) the
 * block in a random slot; the rest go through a bounded queue (4096
 * blocks) to the pair's consumer, which frees each one once 64 newer ones
 * have arrived and, at one block in three, mallocs and frees a block of
 * 16..4096 bytes of its own.  At the end both free all they still hold.
 * Then every worker waits on a condition variable (MODE idle) or exits
 * (MODE exit), so that everything the pairs allocated is free.
 *
 * A thread that churns small objects (4,000 live, 16 B..16 KiB,
 * log-uniform, as idlebig's "active" threads) makes its objects before
 * `rss_base`, the RSS before the pairs start, and then waits.  Readings,
 * as growth over `rss_base` (0 if negative), in bytes: `rss_added_0s`
 * once every worker is idle (or gone), `rss_added_1s` after WAIT_MS
 * (default 1000) in which nothing runs, `rss_added_active` after WAIT_MS
 * more in which the churn thread replaces its objects at random, and
 * `rss_added_trim` after malloc_trim(0) when the allocator has its own
 * (an allocator without one, whose malloc_trim would be glibc's, skips
 * that reading and prints a note saying so).  One op = one block a
 * producer made.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#define _GNU_SOURCE
#include "bench.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>

#define RING 256
#define HOLD 64
#define QUEUE 4096
#define CHURN_LIVE 4000

static const char *prog = "pairs";

struct item {
    void *p;
    size_t size;
};

struct pair {
    struct item slot[QUEUE];
    size_t head, tail;
    int done;
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    uint64_t seed;
};

static unsigned items;
static size_t maxsz;
static int idle_mode;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static unsigned idle_workers;
static int quit;
static atomic_int churn_go, churn_stop;
static atomic_ullong churn_ops;

static void *make(uint64_t *rng, size_t *size)
{
    size_t sz = rng_range(rng, 16, maxsz);
    if (rng_range(rng, 0, 7) == 0)
        sz = rng_range(rng, 16, 256 << 10);
    void *p = bench_malloc(prog, sz);
    memset(p, 0x5a, sz);
    obj_fill(p, sz);
    *size = sz;
    return p;
}

static void drop(struct item *it)
{
    if (it->p && !obj_check(it->p, it->size))
        bench_fail(prog, "block corrupted");
    free(it->p);
    it->p = NULL;
}

/* The end of a worker: idle until main says quit, or exit. */
static void finish(void)
{
    pthread_mutex_lock(&mu);
    idle_workers++;
    pthread_cond_broadcast(&cv);
    while (idle_mode && !quit)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static void *producer(void *arg)
{
    struct pair *q = arg;
    uint64_t rng = rng_seed(q->seed);
    struct item ring[RING] = {{0}};
    for (unsigned i = 0; i < items; i++) {
        struct item it;
        it.p = make(&rng, &it.size);
        if (rng_range(&rng, 0, 3) == 0) {
            size_t k = rng_range(&rng, 0, RING - 1);
            drop(&ring[k]);
            ring[k] = it;
            continue;
        }
        pthread_mutex_lock(&q->mu);
        while (q->tail - q->head == QUEUE)
            pthread_cond_wait(&q->not_full, &q->mu);
        q->slot[q->tail++ % QUEUE] = it;
        pthread_cond_signal(&q->not_empty);
        pthread_mutex_unlock(&q->mu);
    }
    for (unsigned k = 0; k < RING; k++)
        drop(&ring[k]);
    pthread_mutex_lock(&q->mu);
    q->done = 1;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
    finish();
    return NULL;
}

static void *consumer(void *arg)
{
    struct pair *q = arg;
    uint64_t rng = rng_seed(q->seed ^ 0x5555);
    struct item hold[HOLD] = {{0}};
    unsigned h = 0;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (q->tail == q->head && !q->done)
            pthread_cond_wait(&q->not_empty, &q->mu);
        if (q->tail == q->head) {
            pthread_mutex_unlock(&q->mu);
            break;
        }
        struct item it = q->slot[q->head++ % QUEUE];
        pthread_cond_signal(&q->not_full);
        pthread_mutex_unlock(&q->mu);
        drop(&hold[h]);
        hold[h] = it;
        h = (h + 1) % HOLD;
        if (rng_range(&rng, 0, 2) == 0) {
            struct item own;
            own.size = rng_range(&rng, 16, 4096);
            own.p = bench_malloc(prog, own.size);
            obj_fill(own.p, own.size);
            drop(&own);
        }
    }
    for (unsigned k = 0; k < HOLD; k++)
        drop(&hold[k]);
    finish();
    return NULL;
}

/* One other thread: its objects are made before rss_base; it replaces
 * them only between churn_go and churn_stop. */
static void *churn(void *arg)
{
    uint64_t rng = rng_seed((uint64_t)(uintptr_t)arg);
    static struct item live[CHURN_LIVE];
    for (int i = 0; i < CHURN_LIVE; i++) {
        live[i].size = rng_logrange(&rng, 16, 16384);
        live[i].p = bench_malloc(prog, live[i].size);
        obj_fill(live[i].p, live[i].size);
    }
    pthread_mutex_lock(&mu);
    idle_workers++; /* main waits for this before rss_base */
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    while (!atomic_load(&churn_go))
        sleep_ms(1);
    unsigned long long n = 0;
    while (!atomic_load_explicit(&churn_stop, memory_order_relaxed)) {
        size_t i = (size_t)(rng_next(&rng) % CHURN_LIVE);
        drop(&live[i]);
        live[i].size = rng_logrange(&rng, 16, 16384);
        live[i].p = bench_malloc(prog, live[i].size);
        obj_fill(live[i].p, live[i].size);
        n++;
    }
    atomic_store(&churn_ops, n);
    /* keep the objects until main says quit: they are in rss_base */
    pthread_mutex_lock(&mu);
    while (!quit)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < CHURN_LIVE; i++)
        drop(&live[i]);
    return NULL;
}

static void reading(const char *key, size_t base)
{
    size_t r = rss_now();
    printf("%s %zu\n", key, r > base ? r - base : 0);
    fflush(stdout);
}

/* malloc_trim, if the allocator malloc comes from has its own: with a
 * preloaded allocator without one, the symbol found is glibc's, which
 * would only trim glibc's (unused) heap. */
static int (*own_malloc_trim(const char **where))(size_t)
{
    void *t = dlsym(RTLD_DEFAULT, "malloc_trim");
    void *m = dlsym(RTLD_DEFAULT, "malloc");
    Dl_info ti, mi;
    *where = "nowhere";
    if (!t)
        return NULL;
    if (!m || !dladdr(t, &ti) || !dladdr(m, &mi))
        return NULL;
    *where = ti.dli_fname ? ti.dli_fname : "?";
    if (ti.dli_fbase != mi.dli_fbase)
        return NULL;
    return (int (*)(size_t))t;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "idle";
    unsigned npairs = (unsigned)arg_long(argc, argv, 2, 16);
    items = (unsigned)arg_long(argc, argv, 3, 50000);
    maxsz = (size_t)arg_long(argc, argv, 4, 65536);
    long wait_ms = arg_long(argc, argv, 5, 1000);
    uint64_t seed = (uint64_t)arg_long(argc, argv, 6, 42);
    idle_mode = strcmp(mode, "idle") == 0;
    if (!idle_mode && strcmp(mode, "exit") != 0)
        bench_fail(prog, "MODE must be idle or exit");
    if (npairs == 0 || npairs > 256)
        bench_fail(prog, "PAIRS must be 1..256");
    if (maxsz < 16)
        bench_fail(prog, "MAXSZ must be at least 16");

    struct pair *qs = calloc(npairs, sizeof *qs);
    pthread_t *tid = calloc(2 * (size_t)npairs, sizeof *tid);
    if (!qs || !tid)
        bench_fail(prog, "cannot allocate the pairs");
    memset(qs, 0, npairs * sizeof *qs); /* resident before rss_base */
    pthread_t ct;
    if (pthread_create(&ct, NULL, churn, (void *)(uintptr_t)(seed + 7777)) != 0)
        bench_fail(prog, "pthread_create failed");
    pthread_mutex_lock(&mu);
    while (idle_workers < 1)
        pthread_cond_wait(&cv, &mu);
    idle_workers = 0;
    pthread_mutex_unlock(&mu);
    size_t base = rss_now();
    printf("rss_base %zu\n", base);

    for (unsigned i = 0; i < npairs; i++) {
        pthread_mutex_init(&qs[i].mu, NULL);
        pthread_cond_init(&qs[i].not_empty, NULL);
        pthread_cond_init(&qs[i].not_full, NULL);
        qs[i].seed = seed * 1000003u + i;
        if (pthread_create(&tid[2 * i], NULL, producer, &qs[i]) != 0 ||
            pthread_create(&tid[2 * i + 1], NULL, consumer, &qs[i]) != 0)
            bench_fail(prog, "pthread_create failed");
    }
    pthread_mutex_lock(&mu);
    while (idle_workers < 2 * npairs)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    if (!idle_mode)
        for (unsigned i = 0; i < 2 * npairs; i++)
            pthread_join(tid[i], NULL);

    reading("rss_added_0s", base);
    sleep_ms(wait_ms);
    reading("rss_added_1s", base);
    atomic_store(&churn_go, 1);
    sleep_ms(wait_ms);
    atomic_store(&churn_stop, 1);
    reading("rss_added_active", base);
    const char *where;
    int (*trim)(size_t) = own_malloc_trim(&where);
    if (trim) {
        trim(0);
        reading("rss_added_trim", base);
    } else {
        printf("note: the allocator has no malloc_trim of its own (found in %s): "
               "rss_added_trim skipped\n", where);
        fflush(stdout);
    }

    pthread_mutex_lock(&mu);
    quit = 1; /* idle workers and the churn thread leave */
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (unsigned i = 0; idle_mode && i < 2 * npairs; i++)
        pthread_join(tid[i], NULL);
    pthread_join(ct, NULL);
    for (unsigned i = 0; i < npairs; i++) {
        pthread_mutex_destroy(&qs[i].mu);
        pthread_cond_destroy(&qs[i].not_empty);
        pthread_cond_destroy(&qs[i].not_full);
    }
    free(qs);
    free(tid);
    printf("churn_ops %llu\n", (unsigned long long)atomic_load(&churn_ops));
    report_ops((unsigned long long)npairs * items);
    return 0;
}
