/* frag: fragmentation under a drifting size distribution.
 *
 *   frag SCALE_MB PHASES [PHASE_FACTOR [SEED]]
 *
 * Objects are allocated one after another, each with a lifetime measured in
 * bytes allocated after it (a clock that advances by the size of every
 * allocation), so the live volume stays near the same level whatever the
 * object sizes:
 *   70% short-lived  (0 .. SCALE/8),
 *   25% medium       (SCALE/8 .. SCALE),
 *    5% long-lived   (SCALE .. 2*SCALE).
 * Sizes come from a window that changes every phase (PHASE_FACTOR*SCALE
 * bytes allocated per phase): 16..256 B, 32..512 B, ... up to 1..16 KiB and
 * back down, so consecutive phases share half their sizes while survivors
 * of earlier phases pin memory of other sizes.  rng_logrange picks one of
 * the window's five octaves, then a size in it; the top octave is the upper
 * bound alone, so one size in five is exactly that power of two.  The
 * program tracks the bytes it holds (requested sizes, plus its own
 * bookkeeping array) and prints "peak_live BYTES"; the harness divides the
 * peak RSS by it.  One op = one malloc + (eventually) one free.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "bench.h"

struct obj {
    struct obj *next;
    size_t size;
};

/* Size ranges of the phases: a window that slides up by doubling and back
 * down, so that consecutive phases share half of their sizes. */
static const size_t ranges[][2] = {
    {16, 256}, {32, 512}, {64, 1024}, {128, 2048}, {256, 4096}, {512, 8192},
    {1024, 16384}, {512, 8192}, {256, 4096}, {128, 2048}, {64, 1024}, {32, 512},
};
#define NRANGES (sizeof ranges / sizeof ranges[0])

#define WHEEL (1u << 16)

static struct obj **wheel;
static size_t live, peak;
static unsigned gshift;

static void release(struct obj *o)
{
    while (o) {
        struct obj *n = o->next;
        size_t sz = o->size;
        if (sz < sizeof *o ||
            (sz > sizeof *o && ((unsigned char *)o)[sz - 1] != (unsigned char)(sz ^ 0x5a)))
            bench_fail("frag", "object corrupted");
        live -= sz;
        free(o);
        o = n;
    }
}

int main(int argc, char **argv)
{
    size_t scale = (size_t)arg_long(argc, argv, 1, 256) << 20;
    long phases = arg_long(argc, argv, 2, 16);
    long factor = arg_long(argc, argv, 3, 2);
    uint64_t rng = rng_seed((uint64_t)arg_long(argc, argv, 4, 1));
    if (scale < (1u << 20))
        scale = 1u << 20;

    /* bucket granularity: the wheel must span the longest lifetime */
    gshift = 0;
    while (((size_t)WHEEL << gshift) <= 2 * scale + (2 * scale >> 3))
        gshift++;
    wheel = calloc(WHEEL, sizeof *wheel);
    if (!wheel)
        bench_fail("frag", "out of memory");
    live = peak = WHEEL * sizeof *wheel;

    size_t clock = 0;           /* bytes allocated so far */
    size_t done_bucket = 0;     /* buckets < this one are freed */
    unsigned long long ops = 0;
    for (long ph = 0; ph < phases; ph++) {
        size_t lo = ranges[ph % NRANGES][0], hi = ranges[ph % NRANGES][1];
        size_t end = clock + (size_t)factor * scale;
        while (clock < end) {
            size_t sz = rng_logrange(&rng, lo, hi);
            unsigned r = (unsigned)(rng_next(&rng) % 100);
            size_t life;
            if (r < 70)
                life = rng_range(&rng, 0, scale / 8);
            else if (r < 95)
                life = rng_range(&rng, scale / 8, scale);
            else
                life = rng_range(&rng, scale, 2 * scale);
            struct obj *o = bench_malloc("frag", sz);
            o->size = sz;
            for (size_t off = BENCH_PAGE; off < sz; off += BENCH_PAGE)
                ((unsigned char *)o)[off] = 1;
            if (sz > sizeof *o)
                ((unsigned char *)o)[sz - 1] = (unsigned char)(sz ^ 0x5a);
            live += sz;
            if (live > peak)
                peak = live;
            ops++;
            clock += sz;
            size_t b = (clock + life) >> gshift;
            o->next = wheel[b % WHEEL];
            wheel[b % WHEEL] = o;
            /* free everything whose bucket the clock has passed */
            size_t now = clock >> gshift;
            while (done_bucket < now) {
                struct obj *list = wheel[done_bucket % WHEEL];
                wheel[done_bucket % WHEEL] = NULL;
                release(list);
                done_bucket++;
            }
        }
    }
    for (size_t i = 0; i < WHEEL; i++)
        release(wheel[i]);
    free(wheel);
    report_ops(ops);
    printf("peak_live %zu\n", peak);
    return 0;
}
