/* larson: server-style threads that hand their objects on.
 *
 *   larson THREADS GENERATIONS ROUNDS SLOTS MINSZ MAXSZ
 *
 * The main thread fills THREADS arrays of SLOTS objects.  Each array is
 * then worked on by a chain of GENERATIONS threads: a thread performs
 * ROUNDS replacements (free a random slot's object, allocate a new one of a
 * random size in MINSZ..MAXSZ), then starts its successor, hands it the
 * array and exits.  So most frees release memory that another, possibly
 * already finished, thread allocated: the allocator must handle remote frees
 * and the heaps of exited threads.  The THREADS chains run concurrently.
 * One op = one free + one malloc; ops = THREADS * GENERATIONS * ROUNDS.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "bench.h"

#include <pthread.h>

struct slot {
    void *p;
    size_t size;
};

struct chain {
    struct slot *slots;
    size_t nslots;
    uint64_t rng;
    long gen;
};

static long generations, rounds;
static size_t minsz, maxsz;
static long chains_left;
static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;

static void *worker(void *arg)
{
    struct chain *c = arg;
    for (long r = 0; r < rounds; r++) {
        size_t i = (size_t)(rng_next(&c->rng) % c->nslots);
        struct slot *s = &c->slots[i];
        if (!obj_check(s->p, s->size))
            bench_fail("larson", "object corrupted");
        free(s->p);
        s->size = rng_range(&c->rng, minsz, maxsz);
        s->p = bench_malloc("larson", s->size);
        obj_fill(s->p, s->size);
    }
    if (++c->gen < generations) {
        pthread_attr_t attr;
        pthread_t t;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, worker, c) != 0)
            bench_fail("larson", "pthread_create");
        pthread_attr_destroy(&attr);
    } else {
        pthread_mutex_lock(&done_lock);
        if (--chains_left == 0)
            pthread_cond_signal(&done_cond);
        pthread_mutex_unlock(&done_lock);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long threads = arg_long(argc, argv, 1, 2);
    generations = arg_long(argc, argv, 2, 20);
    rounds = arg_long(argc, argv, 3, 200000);
    size_t nslots = (size_t)arg_long(argc, argv, 4, 1000);
    minsz = (size_t)arg_long(argc, argv, 5, 16);
    maxsz = (size_t)arg_long(argc, argv, 6, 1024);
    if (threads < 1)
        threads = 1;
    if (generations < 1)
        generations = 1;
    if (nslots < 1)
        nslots = 1;

    struct chain *ch = calloc((size_t)threads, sizeof *ch);
    if (!ch)
        bench_fail("larson", "out of memory");
    uint64_t rng = rng_seed(7);
    for (long t = 0; t < threads; t++) {
        ch[t].nslots = nslots;
        ch[t].rng = rng_seed((uint64_t)t + 100);
        ch[t].slots = calloc(nslots, sizeof(struct slot));
        if (!ch[t].slots)
            bench_fail("larson", "out of memory");
        for (size_t i = 0; i < nslots; i++) {
            size_t sz = rng_range(&rng, minsz, maxsz);
            ch[t].slots[i].p = bench_malloc("larson", sz);
            ch[t].slots[i].size = sz;
            obj_fill(ch[t].slots[i].p, sz);
        }
    }
    chains_left = threads;
    for (long t = 0; t < threads; t++) {
        pthread_attr_t attr;
        pthread_t tid;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&tid, &attr, worker, &ch[t]) != 0)
            bench_fail("larson", "pthread_create");
        pthread_attr_destroy(&attr);
    }
    pthread_mutex_lock(&done_lock);
    while (chains_left > 0)
        pthread_cond_wait(&done_cond, &done_lock);
    pthread_mutex_unlock(&done_lock);

    for (long t = 0; t < threads; t++) {
        for (size_t i = 0; i < nslots; i++) {
            if (!obj_check(ch[t].slots[i].p, ch[t].slots[i].size))
                bench_fail("larson", "object corrupted");
            free(ch[t].slots[i].p);
        }
        free(ch[t].slots);
    }
    free(ch);
    report_ops((unsigned long long)threads * (unsigned long long)generations *
               (unsigned long long)rounds);
    return 0;
}
