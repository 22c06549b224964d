/* producer: small blocks made by some threads and freed by another.
 *
 *   producer MODE MIB [PRODUCERS [WAIT_MS [SEED]]]
 *
 * MODE "exit": one thread allocates MIB MiB of small blocks (16..256 B)
 * and exits; main frees them all.  MODE "idle": the same, but the producer
 * stays alive, blocked, while main frees.  MODE "reclaim": PRODUCERS
 * threads (default 8) each allocate MIB/PRODUCERS MiB and hand the blocks
 * through a queue to one reclaimer thread that only frees; every thread
 * exits.  After WAIT_MS the program reports `rss_freed` (everything is
 * free), then calls malloc_trim(0) (and emma_trim() when the allocator has
 * it) and reports `rss_trim`.  One op = one block.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#define _GNU_SOURCE
#include "bench.h"

#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>

static const char *prog = "producer";

/* MODE idle: the producer waits here until main has freed its blocks. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int produced, released;
static int keep_alive;

/* MODE reclaim: a queue of finished chunks of blocks. */
#define CHUNK 4096
static struct blk *_Atomic queue;
static atomic_int producers_left;

static void push_chunk(struct blk *first, struct blk *last)
{
    struct blk *old = atomic_load(&queue);
    do {
        last->next = old;
    } while (!atomic_compare_exchange_weak(&queue, &old, first));
}

static void *produce(void *arg)
{
    struct batch *b = arg;
    batch_make(prog, b, sizeof(struct blk) + 8, 256);
    if (keep_alive) {
        pthread_mutex_lock(&mu);
        produced = 1;
        pthread_cond_broadcast(&cv);
        while (!released)
            pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

static unsigned long long free_list(struct blk *k)
{
    unsigned long long n = 0;
    while (k) {
        struct blk *next = k->next;
        if (!obj_check(k, k->size))
            bench_fail(prog, "block corrupted");
        free(k);
        k = next;
        n++;
    }
    return n;
}

/* reclaim mode: producers push chunks of CHUNK blocks as they go. */
static void *produce_chunks(void *arg)
{
    struct batch *b = arg;
    uint64_t rng = rng_seed(b->seed);
    size_t bytes = 0;
    while (bytes < b->bytes) {
        struct blk *first = NULL, *last = NULL;
        for (unsigned i = 0; i < CHUNK && bytes < b->bytes; i++) {
            size_t sz = rng_range(&rng, sizeof(struct blk) + 8, 256);
            struct blk *k = bench_malloc(prog, sz);
            obj_fill(k, sz);
            k->size = sz;
            k->next = first;
            if (!first)
                last = k;
            first = k;
            bytes += sz;
            b->count++;
        }
        if (first)
            push_chunk(first, last);
    }
    atomic_fetch_sub(&producers_left, 1);
    return NULL;
}

static void *reclaimer(void *arg)
{
    unsigned long long *freed = arg;
    for (;;) {
        int left = atomic_load(&producers_left);
        struct blk *all = atomic_exchange(&queue, NULL);
        if (all)
            *freed += free_list(all);
        else if (left == 0)
            break;
        else
            sched_yield();
    }
    return NULL;
}

static void trim_all(void)
{
    void (*et)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "emma_trim");
    malloc_trim(0);
    if (et)
        et();
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "exit";
    size_t total = (size_t)arg_long(argc, argv, 2, 1024) << 20;
    unsigned nprod = (unsigned)arg_long(argc, argv, 3, 8);
    long wait_ms = arg_long(argc, argv, 4, 1000);
    uint64_t seed = (uint64_t)arg_long(argc, argv, 5, 42);
    unsigned long long ops = 0;

    if (strcmp(mode, "exit") == 0 || strcmp(mode, "idle") == 0) {
        keep_alive = strcmp(mode, "idle") == 0;
        struct batch b = {NULL, total, 0, seed};
        pthread_t t;
        if (pthread_create(&t, NULL, produce, &b) != 0)
            bench_fail(prog, "pthread_create failed");
        if (keep_alive) {
            pthread_mutex_lock(&mu);
            while (!produced)
                pthread_cond_wait(&cv, &mu);
            pthread_mutex_unlock(&mu);
        } else {
            pthread_join(t, NULL);
        }
        ops = free_list(b.head);
        if (ops != b.count)
            bench_fail(prog, "lost blocks");
        sleep_ms(wait_ms);
        report_rss("rss_freed");
        trim_all();
        report_rss("rss_trim");
        if (keep_alive) {
            pthread_mutex_lock(&mu);
            released = 1;
            pthread_cond_broadcast(&cv);
            pthread_mutex_unlock(&mu);
            pthread_join(t, NULL);
        }
    } else if (strcmp(mode, "reclaim") == 0) {
        if (nprod == 0 || nprod > 256)
            bench_fail(prog, "PRODUCERS must be 1..256");
        struct batch *b = calloc(nprod, sizeof *b);
        pthread_t *t = calloc(nprod, sizeof *t);
        pthread_t r;
        if (!b || !t)
            bench_fail(prog, "cannot allocate tables");
        atomic_store(&producers_left, (int)nprod);
        if (pthread_create(&r, NULL, reclaimer, &ops) != 0)
            bench_fail(prog, "pthread_create failed");
        for (unsigned i = 0; i < nprod; i++) {
            b[i].bytes = total / nprod;
            b[i].seed = seed + i;
            if (pthread_create(&t[i], NULL, produce_chunks, &b[i]) != 0)
                bench_fail(prog, "pthread_create failed");
        }
        unsigned long long made = 0;
        for (unsigned i = 0; i < nprod; i++) {
            pthread_join(t[i], NULL);
            made += b[i].count;
        }
        pthread_join(r, NULL);
        if (ops != made)
            bench_fail(prog, "lost blocks");
        free(b);
        free(t);
        sleep_ms(wait_ms);
        report_rss("rss_freed");
        trim_all();
        report_rss("rss_trim");
    } else {
        bench_fail(prog, "MODE must be exit, idle or reclaim");
    }
    report_ops(ops);
    return 0;
}
