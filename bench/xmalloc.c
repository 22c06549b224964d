/* xmalloc: producer/consumer.  One thread allocates, another frees.
 *
 *   xmalloc PAIRS OPS MINSZ MAXSZ [RING]
 *
 * PAIRS producer/consumer pairs.  Each producer allocates OPS objects of
 * random size in MINSZ..MAXSZ, writes them and pushes them through a
 * bounded single-producer/single-consumer ring of RING pointers (a power of
 * two) to its consumer, which checks and frees them.  Every free is a
 * remote free.  One op = one malloc (in one thread) + one free (in the
 * other); ops = PAIRS * OPS.
 *
 * With two CPUs or more to run on, each pair's producer and consumer are
 * pinned to two different ones (pair i: the i-th two, wrapping around):
 * left to the scheduler, a pair ran on one core in some runs and on two in
 * others, and every allocator was 5-10x faster on one (no cache line
 * crosses cores), so the time was bimodal (run spread 778% in one make
 * bench on a 2-core machine).  Pinned, the workload measures what it is
 * for: blocks and their pages' metadata moving between cores.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#define _GNU_SOURCE /* sched_getaffinity, pthread_setaffinity_np */
#include "bench.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

struct item {
    void *p;
    size_t size;
};

struct pair {
    _Alignas(64) _Atomic size_t head;   /* written by the producer */
    _Alignas(64) _Atomic size_t tail;   /* written by the consumer */
    _Alignas(64) struct item *ring;
    size_t mask;
    uint64_t rng;
};

static unsigned long long ops;
static size_t minsz, maxsz;

static void backoff(unsigned *spins)
{
    if (++*spins < 64) {
        __builtin_ia32_pause();
    } else {
        *spins = 0;
        sched_yield();
    }
}

/* The CPUs this process may run on, in order, and their number. */
static int cpus[CPU_SETSIZE], ncpus;

static void pin(long slot)
{
    if (ncpus < 2)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpus[slot % ncpus], &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0)
        bench_fail("xmalloc", "pthread_setaffinity_np");
}

struct role {
    struct pair *q;
    long slot;
};

static void *producer(void *arg)
{
    const struct role *r = arg;
    pin(r->slot);
    struct pair *q = r->q;
    size_t head = 0, tail_seen = 0;
    for (unsigned long long n = 0; n < ops; n++) {
        size_t sz = rng_range(&q->rng, minsz, maxsz);
        void *p = bench_malloc("xmalloc", sz);
        obj_fill(p, sz);
        unsigned spins = 0;
        while (head - tail_seen > q->mask) {
            tail_seen = atomic_load_explicit(&q->tail, memory_order_acquire);
            if (head - tail_seen > q->mask)
                backoff(&spins);
        }
        q->ring[head & q->mask].p = p;
        q->ring[head & q->mask].size = sz;
        head++;
        atomic_store_explicit(&q->head, head, memory_order_release);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    const struct role *r = arg;
    pin(r->slot);
    struct pair *q = r->q;
    size_t tail = 0, head_seen = 0;
    for (unsigned long long n = 0; n < ops; n++) {
        unsigned spins = 0;
        while (tail == head_seen) {
            head_seen = atomic_load_explicit(&q->head, memory_order_acquire);
            if (tail == head_seen)
                backoff(&spins);
        }
        struct item it = q->ring[tail & q->mask];
        tail++;
        atomic_store_explicit(&q->tail, tail, memory_order_release);
        if (!obj_check(it.p, it.size))
            bench_fail("xmalloc", "object corrupted");
        free(it.p);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long pairs = arg_long(argc, argv, 1, 1);
    ops = (unsigned long long)arg_long(argc, argv, 2, 5000000);
    minsz = (size_t)arg_long(argc, argv, 3, 16);
    maxsz = (size_t)arg_long(argc, argv, 4, 512);
    size_t ringsz = (size_t)arg_long(argc, argv, 5, 1024);
    if (pairs < 1)
        pairs = 1;
    if (ringsz < 2 || (ringsz & (ringsz - 1)) != 0)
        bench_fail("xmalloc", "RING must be a power of two >= 2");

    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) == 0)
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &allowed))
                cpus[ncpus++] = c;

    struct pair *q = aligned_alloc(64, (size_t)pairs * sizeof *q);
    pthread_t *tid = malloc((size_t)pairs * 2 * sizeof *tid);
    struct role *role = malloc((size_t)pairs * 2 * sizeof *role);
    if (!q || !tid || !role)
        bench_fail("xmalloc", "out of memory");
    for (long i = 0; i < pairs; i++) {
        atomic_init(&q[i].head, 0);
        atomic_init(&q[i].tail, 0);
        q[i].ring = malloc(ringsz * sizeof(struct item));
        if (!q[i].ring)
            bench_fail("xmalloc", "out of memory");
        q[i].mask = ringsz - 1;
        q[i].rng = rng_seed((uint64_t)i + 1);
    }
    for (long i = 0; i < pairs; i++) {
        role[2 * i] = (struct role){&q[i], 2 * i + 1};
        role[2 * i + 1] = (struct role){&q[i], 2 * i};
        if (pthread_create(&tid[2 * i], NULL, consumer, &role[2 * i]) != 0 ||
            pthread_create(&tid[2 * i + 1], NULL, producer, &role[2 * i + 1]) != 0)
            bench_fail("xmalloc", "pthread_create");
    }
    for (long i = 0; i < 2 * pairs; i++)
        pthread_join(tid[i], NULL);
    for (long i = 0; i < pairs; i++)
        free(q[i].ring);
    free(q);
    free(tid);
    free(role);
    report_ops((unsigned long long)pairs * ops);
    return 0;
}
