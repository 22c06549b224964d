/* aligned: large aligned allocations.
 *
 *   aligned OPS LIVE MINSZ MAXSZ MAXALIGN
 *
 * A working set of LIVE blocks; OPS times a random one is freed and
 * replaced by a block of log-uniform size in MINSZ..MAXSZ with a random
 * power-of-two alignment in 64..MAXALIGN, requested in turn through
 * posix_memalign, aligned_alloc and memalign.  Every page of a block is
 * written.  The alignment is checked: the number of misaligned blocks is
 * printed as "misaligned N" (with a warning on stderr for the first).  Peak RSS shows what the padding an
 * allocator needs for alignment costs.  One op = one aligned allocation +
 * one free.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "bench.h"

#include <malloc.h>

struct slot {
    void *p;
    size_t size;
};

static unsigned long long misaligned;

static void *aligned_new(uint64_t *rng, size_t lo, size_t hi, size_t maxalign,
                         unsigned long long n, size_t *sizep)
{
    size_t size = rng_logrange(rng, lo, hi);
    size_t align = rng_logrange(rng, 64, maxalign);
    align = (size_t)1 << (63 - __builtin_clzll((unsigned long long)align));
    void *p = NULL;
    switch (n % 3) {
    case 0:
        if (posix_memalign(&p, align, size) != 0)
            p = NULL;
        break;
    case 1:
        p = aligned_alloc(align, size);
        break;
    default:
        p = memalign(align, size);
        break;
    }
    if (!p)
        bench_fail("aligned", "aligned allocation failed");
    if (((uintptr_t)p & (align - 1)) != 0 && misaligned++ == 0)
        fprintf(stderr, "aligned: WARNING: %s(%zu, %zu) returned %p, not aligned\n",
                n % 3 == 0 ? "posix_memalign" : n % 3 == 1 ? "aligned_alloc" : "memalign",
                align, size, p);
    obj_fill(p, size);
    *sizep = size;
    return p;
}

int main(int argc, char **argv)
{
    unsigned long long ops = (unsigned long long)arg_long(argc, argv, 1, 200000);
    size_t live = (size_t)arg_long(argc, argv, 2, 500);
    size_t lo = (size_t)arg_long(argc, argv, 3, 1024);
    size_t hi = (size_t)arg_long(argc, argv, 4, 1L << 20);
    size_t maxalign = (size_t)arg_long(argc, argv, 5, 2L << 20);
    uint64_t rng = rng_seed(3);
    if (live < 1)
        live = 1;
    if (maxalign < 64)
        maxalign = 64;

    struct slot *s = calloc(live, sizeof *s);
    if (!s)
        bench_fail("aligned", "out of memory");
    for (size_t i = 0; i < live; i++)
        s[i].p = aligned_new(&rng, lo, hi, maxalign, i, &s[i].size);
    for (unsigned long long n = 0; n < ops; n++) {
        size_t i = (size_t)(rng_next(&rng) % live);
        if (!obj_check(s[i].p, s[i].size))
            bench_fail("aligned", "object corrupted");
        free(s[i].p);
        s[i].p = aligned_new(&rng, lo, hi, maxalign, n, &s[i].size);
    }
    for (size_t i = 0; i < live; i++) {
        if (!obj_check(s[i].p, s[i].size))
            bench_fail("aligned", "object corrupted");
        free(s[i].p);
    }
    free(s);
    report_ops(ops);
    /* a misaligned block is a bug of the allocator, not a crash: it is
     * reported (the harness flags it) and the run goes on */
    printf("misaligned %llu\n", misaligned);
    return 0;
}
