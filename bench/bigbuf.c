/* bigbuf: big buffers replaced at random.
 *
 *   bigbuf MODE STEPS LIVE MIN_MIB MAX_MIB [SEED]
 *
 * Keeps LIVE buffers of MIN_MIB..MAX_MIB MiB (uniform) and STEPS times
 * frees a random one and allocates a replacement of a new random size.
 * MODE "sparse": a new buffer is written only at its start, its end and
 * one byte per 256 KiB (a big table filled on demand); "whole": it is
 * zero-filled whole when made, as C++'s `new char[n]()` does (malloc, then
 * memset).  Address space that is never touched costs nothing, so an
 * allocator that reuses freed address space and pages costs no system
 * call and no page fault per step.  One op = one replacement.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "bench.h"

static const char *prog = "bigbuf";
static int whole;

static void make(unsigned char **p, size_t *sz, uint64_t *rng, size_t lo, size_t hi)
{
    *sz = rng_range(rng, lo, hi);
    unsigned char *b = bench_malloc(prog, *sz);
    if (whole) {
        memset(b, 0, *sz);
    } else {
        for (size_t off = 0; off < *sz; off += 256 << 10)
            b[off] = 1;
    }
    uint64_t t = obj_tag(b, *sz);
    memcpy(b, &t, sizeof t);
    b[*sz - 1] = (unsigned char)*sz;
    *p = b;
}

static void check(unsigned char *b, size_t sz)
{
    uint64_t t;
    memcpy(&t, b, sizeof t);
    if (t != obj_tag(b, sz) || b[sz - 1] != (unsigned char)sz)
        bench_fail(prog, "buffer corrupted");
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "sparse";
    unsigned long long steps = (unsigned long long)arg_long(argc, argv, 2, 20000);
    size_t live = (size_t)arg_long(argc, argv, 3, 20);
    size_t lo = (size_t)arg_long(argc, argv, 4, 5) << 20;
    size_t hi = (size_t)arg_long(argc, argv, 5, 25) << 20;
    uint64_t rng = rng_seed((uint64_t)arg_long(argc, argv, 6, 42));
    whole = strcmp(mode, "whole") == 0;
    if (!whole && strcmp(mode, "sparse") != 0)
        bench_fail(prog, "MODE must be sparse or whole");
    if (live == 0 || live > 4096 || lo < 16 || hi < lo)
        bench_fail(prog, "bad LIVE or sizes");
    unsigned char *p[4096];
    size_t sz[4096];
    for (size_t i = 0; i < live; i++)
        make(&p[i], &sz[i], &rng, lo, hi);
    for (unsigned long long n = 0; n < steps; n++) {
        size_t i = (size_t)(rng_next(&rng) % live);
        check(p[i], sz[i]);
        free(p[i]);
        make(&p[i], &sz[i], &rng, lo, hi);
    }
    for (size_t i = 0; i < live; i++) {
        check(p[i], sz[i]);
        free(p[i]);
    }
    report_ops(steps);
    return 0;
}
