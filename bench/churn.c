/* churn: single-thread working set replaced at random.
 *
 *   churn OPS LIVE MINSZ MAXSZ [DIST [SEED]]
 *
 * Fills LIVE slots, then OPS times picks a random slot, frees its object
 * and puts a new one of a random size there.  DIST is "uniform" (sizes
 * uniform in MINSZ..MAXSZ) or "mixed" (a skewed distribution up to MAXSZ:
 * 80% in MINSZ..256, 15% up to 8 KiB, 4.5% up to 128 KiB, 0.5% up to
 * MAXSZ), the shape of a typical program's requests.  One op = one free +
 * one malloc.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "bench.h"

/* Built a second time as churn_emma (-DCHURN_EMMA, linked with libemma):
 * the same workload through the emma API, argument 7 choosing the heap:
 * "thread" (emma_alloc/emma_dealloc: the thread's heap) or "private"
 * (emma_heap_alloc/emma_heap_dealloc on one private heap), for comparing
 * the two paths' instructions per op (README, private heaps). */
#ifdef CHURN_EMMA
#include <emma.h>
static emma_heap_t *heap;
static void *churn_alloc(const char *prog, size_t sz)
{
    void *p = heap ? emma_heap_alloc(heap, sz, 16) : emma_alloc(sz, 16);
    if (p == NULL)
        bench_fail(prog, "allocation returned NULL");
    return p;
}
static void churn_free(void *p, size_t sz)
{
    if (heap)
        emma_heap_dealloc(heap, p, sz, 16);
    else
        emma_dealloc(p, sz, 16);
}
#else
#define churn_alloc bench_malloc
#define churn_free(p, sz) free(p)
#endif

struct slot {
    void *p;
    size_t size;
};

static size_t pick_size(uint64_t *rng, int mixed, size_t lo, size_t hi)
{
    if (!mixed)
        return rng_range(rng, lo, hi);
    unsigned r = (unsigned)(rng_next(rng) % 1000);
    size_t a, b;
    if (r < 800) {
        a = lo; b = 256;
    } else if (r < 950) {
        a = 257; b = 8192;
    } else if (r < 995) {
        a = 8193; b = 128 * 1024;
    } else {
        a = 128 * 1024 + 1; b = hi;
    }
    if (b > hi)
        b = hi;
    if (a > b)
        a = lo;
    return rng_range(rng, a, b);
}

int main(int argc, char **argv)
{
    unsigned long long ops = (unsigned long long)arg_long(argc, argv, 1, 10000000);
    size_t live = (size_t)arg_long(argc, argv, 2, 10000);
    size_t lo = (size_t)arg_long(argc, argv, 3, 16);
    size_t hi = (size_t)arg_long(argc, argv, 4, 512);
    int mixed = argc > 5 && strcmp(argv[5], "mixed") == 0;
    uint64_t rng = rng_seed((uint64_t)arg_long(argc, argv, 6, 42));
    const char *prog = "churn";
#ifdef CHURN_EMMA
    if (argc > 7 && strcmp(argv[7], "private") == 0)
        heap = emma_heap_new();
    else if (argc > 7 && strcmp(argv[7], "thread") != 0)
        bench_fail(prog, "argument 7 is thread or private");
#endif

    if (live == 0)
        live = 1;
    struct slot *slots = calloc(live, sizeof *slots);
    if (!slots)
        bench_fail(prog, "cannot allocate slot table");
    for (size_t i = 0; i < live; i++) {
        size_t sz = pick_size(&rng, mixed, lo, hi);
        slots[i].p = churn_alloc(prog, sz);
        slots[i].size = sz;
        obj_fill(slots[i].p, sz);
    }
    for (unsigned long long n = 0; n < ops; n++) {
        size_t i = (size_t)(rng_next(&rng) % live);
        if (!obj_check(slots[i].p, slots[i].size))
            bench_fail(prog, "object corrupted");
        churn_free(slots[i].p, slots[i].size);
        size_t sz = pick_size(&rng, mixed, lo, hi);
        slots[i].p = churn_alloc(prog, sz);
        slots[i].size = sz;
        obj_fill(slots[i].p, sz);
    }
    for (size_t i = 0; i < live; i++) {
        if (!obj_check(slots[i].p, slots[i].size))
            bench_fail(prog, "object corrupted");
        churn_free(slots[i].p, slots[i].size);
    }
    free(slots);
    report_ops(ops);
    return 0;
}
