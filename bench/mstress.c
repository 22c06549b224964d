/* mstress: many threads, random sizes and lifetimes, migrating objects.
 *
 *   mstress THREADS ROUNDS OPS LOCAL SHARED
 *
 * Runs ROUNDS rounds of THREADS threads (more threads than cores is the
 * point).  Each thread owns an array of LOCAL slots, and all threads share
 * SHARED slots.  Each of a thread's OPS operations is, at random:
 *   55% replace a random local object by a new one of a random size,
 *   20% free a random local object (short lifetime),
 *   25% swap a random local slot with a random shared slot (the object
 *       migrates to whichever thread picks it up later and frees it).
 * Sizes: 70% 16..128 B, 25% up to 2 KiB, 4.5% up to 64 KiB, 0.5% up to
 * 512 KiB.  At the end of a round a thread frees a quarter of its objects
 * and leaves the rest to the thread of the next round that takes over its
 * array (arrays rotate between threads), so objects outlive their threads.
 * ops = THREADS * ROUNDS * OPS.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "bench.h"

#include <pthread.h>
#include <stdatomic.h>

/* Every object starts with its size and a tag derived from it. */
struct hdr {
    size_t size;
    uint64_t tag;
};

static long threads, rounds, ops;
static size_t nlocal, nshared;
static void **locals_of[1024];
static _Atomic(struct hdr *) *shared;

static struct hdr *obj_new(uint64_t *rng)
{
    unsigned r = (unsigned)(rng_next(rng) % 1000);
    size_t sz;
    if (r < 700)
        sz = rng_range(rng, 16, 128);
    else if (r < 950)
        sz = rng_range(rng, 129, 2048);
    else if (r < 995)
        sz = rng_range(rng, 2049, 64 * 1024);
    else
        sz = rng_range(rng, 64 * 1024 + 1, 512 * 1024);
    struct hdr *h = bench_malloc("mstress", sz);
    h->size = sz;
    h->tag = obj_tag(h, sz);
    unsigned char *c = (unsigned char *)h;
    for (size_t off = BENCH_PAGE; off < sz; off += BENCH_PAGE)
        c[off] = 1;
    if (sz > sizeof *h)
        c[sz - 1] = (unsigned char)sz;
    return h;
}

static void obj_free(struct hdr *h)
{
    if (!h)
        return;
    if (h->size < sizeof *h || h->tag != obj_tag(h, h->size) ||
        (h->size > sizeof *h &&
         ((unsigned char *)h)[h->size - 1] != (unsigned char)h->size))
        bench_fail("mstress", "object corrupted");
    free(h);
}

struct targ {
    void **local;
    uint64_t rng;
};

static void *worker(void *argp)
{
    struct targ *a = argp;
    void **local = a->local;
    uint64_t *rng = &a->rng;
    for (long n = 0; n < ops; n++) {
        unsigned r = (unsigned)(rng_next(rng) % 100);
        size_t i = (size_t)(rng_next(rng) % nlocal);
        if (r < 55) {
            obj_free(local[i]);
            local[i] = obj_new(rng);
        } else if (r < 75) {
            obj_free(local[i]);
            local[i] = NULL;
        } else {
            size_t j = (size_t)(rng_next(rng) % nshared);
            local[i] = atomic_exchange_explicit(&shared[j], (struct hdr *)local[i],
                                                memory_order_acq_rel);
        }
    }
    for (size_t i = 0; i < nlocal; i += 4) {
        obj_free(local[i]);
        local[i] = NULL;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    threads = arg_long(argc, argv, 1, 8);
    rounds = arg_long(argc, argv, 2, 10);
    ops = arg_long(argc, argv, 3, 200000);
    nlocal = (size_t)arg_long(argc, argv, 4, 1000);
    nshared = (size_t)arg_long(argc, argv, 5, 1000);
    if (threads < 1)
        threads = 1;
    if (threads > 1024)
        threads = 1024;
    if (nlocal < 1)
        nlocal = 1;
    if (nshared < 1)
        nshared = 1;

    shared = calloc(nshared, sizeof *shared);
    struct targ *args = calloc((size_t)threads, sizeof *args);
    pthread_t *tid = malloc((size_t)threads * sizeof *tid);
    if (!shared || !args || !tid)
        bench_fail("mstress", "out of memory");
    for (long t = 0; t < threads; t++) {
        locals_of[t] = calloc(nlocal, sizeof(void *));
        if (!locals_of[t])
            bench_fail("mstress", "out of memory");
        args[t].rng = rng_seed((uint64_t)t + 1000);
    }
    for (long r = 0; r < rounds; r++) {
        for (long t = 0; t < threads; t++) {
            args[t].local = locals_of[(t + r) % threads];
            if (pthread_create(&tid[t], NULL, worker, &args[t]) != 0)
                bench_fail("mstress", "pthread_create");
        }
        for (long t = 0; t < threads; t++)
            pthread_join(tid[t], NULL);
    }
    for (long t = 0; t < threads; t++) {
        for (size_t i = 0; i < nlocal; i++)
            obj_free(locals_of[t][i]);
        free(locals_of[t]);
    }
    for (size_t j = 0; j < nshared; j++)
        obj_free(atomic_load(&shared[j]));
    free((void *)shared);
    free(args);
    free(tid);
    report_ops((unsigned long long)threads * (unsigned long long)rounds *
               (unsigned long long)ops);
    return 0;
}
