/* Helpers shared by emma's benchmark programs.
 *
 * Every program takes its parameters as positional arguments (so the
 * harness can shrink them in quick mode), and prints on stdout lines of the
 * form "key value", at least "ops N": the number of operations it performed,
 * which the harness uses for instructions-per-operation, and "seconds T":
 * the wall time from start-up to that line, for a person running the
 * program by hand (the harness measures time itself, with bench/runner).  Objects carry a
 * tag in their first bytes that is checked before they are freed, so an
 * allocator that hands out overlapping blocks makes the program fail (exit
 * status 2) instead of producing a fast, wrong result.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#ifndef EMMA_BENCH_H
#define EMMA_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_PAGE 4096u

/* xorshift64*: small, fast, good enough to pick sizes and slots. */
static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static inline uint64_t rng_seed(uint64_t n)
{
    /* splitmix64 step, so that seeds 1, 2, 3... give unrelated streams */
    uint64_t z = n + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z ? z : 1;
}

/* Uniform in [lo, hi] (inclusive). */
static inline size_t rng_range(uint64_t *s, size_t lo, size_t hi)
{
    if (hi <= lo)
        return lo;
    return lo + (size_t)(rng_next(s) % (uint64_t)(hi - lo + 1));
}

/* Log-uniform in [lo, hi]: every power-of-two band is equally likely. */
static inline size_t rng_logrange(uint64_t *s, size_t lo, size_t hi)
{
    if (hi <= lo)
        return lo;
    int blo = 63 - __builtin_clzll((unsigned long long)lo);
    int bhi = 63 - __builtin_clzll((unsigned long long)hi);
    int b = blo + (int)(rng_next(s) % (uint64_t)(bhi - blo + 1));
    size_t base = (size_t)1 << b;
    size_t top = (base << 1) - 1;
    if (base < lo)
        base = lo;
    if (top > hi)
        top = hi;
    return rng_range(s, base, top);
}

static inline long arg_long(int argc, char **argv, int i, long def)
{
    if (i < argc && argv[i][0] != '\0') {
        char *end;
        long v = strtol(argv[i], &end, 0);
        if (*end == '\0')
            return v;
        fprintf(stderr, "%s: bad numeric argument '%s'\n", argv[0], argv[i]);
        exit(64);
    }
    return def;
}

static inline void bench_fail(const char *prog, const char *what)
{
    fprintf(stderr, "%s: FAILED: %s\n", prog, what);
    fflush(stderr);
    exit(2);
}

/* Tag of an object: depends on its address and its size, so reuse of a
 * live block, or a block too small for its size, is detected. */
static inline uint64_t obj_tag(const void *p, size_t size)
{
    return ((uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ULL) ^ (uint64_t)size;
}

/* Write the tag at the start (and a byte at the end and in every page in
 * between, as a program initialising its object would). */
static inline void obj_fill(void *p, size_t size)
{
    unsigned char *c = (unsigned char *)p;
    if (size >= sizeof(uint64_t)) {
        uint64_t t = obj_tag(p, size);
        memcpy(c, &t, sizeof t);
    } else if (size > 0) {
        c[0] = (unsigned char)size;
    }
    for (size_t off = BENCH_PAGE; off < size; off += BENCH_PAGE)
        c[off] = (unsigned char)off;
    if (size > 0 && size != sizeof(uint64_t)) /* an 8-byte block is all tag */
        c[size - 1] = (unsigned char)size;
}

static inline int obj_check(const void *p, size_t size)
{
    const unsigned char *c = (const unsigned char *)p;
    if (size >= sizeof(uint64_t)) {
        uint64_t t;
        memcpy(&t, c, sizeof t);
        if (t != obj_tag(p, size))
            return 0;
    } else if (size > 0 && c[0] != (unsigned char)size) {
        return 0;
    }
    return size == 0 || size == sizeof(uint64_t) || c[size - 1] == (unsigned char)size;
}

static inline void *bench_malloc(const char *prog, size_t size)
{
    void *p = malloc(size);
    if (p == NULL)
        bench_fail(prog, "malloc returned NULL");
    if (((uintptr_t)p & 15u) != 0 && size >= 16)
        bench_fail(prog, "malloc result not 16-byte aligned");
    return p;
}

static struct timespec bench_t0;

__attribute__((constructor)) static void bench_start_clock(void)
{
    clock_gettime(CLOCK_MONOTONIC, &bench_t0);
}

/* A list of blocks one thread makes for another to free (producer,
 * handoff): each block begins with its tag (obj_fill), link and size. */
struct blk {
    uint64_t tag;
    struct blk *next;
    size_t size;
};

struct batch {
    struct blk *head;
    size_t bytes;             /* to make */
    unsigned long long count; /* made */
    uint64_t seed;
};

/* Make b->bytes of blocks of lo..hi bytes onto b's list. */
static inline void batch_make(const char *prog, struct batch *b, size_t lo, size_t hi)
{
    uint64_t rng = rng_seed(b->seed);
    for (size_t bytes = 0; bytes < b->bytes;) {
        size_t sz = rng_range(&rng, lo, hi);
        struct blk *k = bench_malloc(prog, sz);
        obj_fill(k, sz);
        k->size = sz;
        k->next = b->head;
        b->head = k;
        bytes += sz;
        b->count++;
    }
}

static inline void report_ops(unsigned long long ops)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("ops %llu\n", ops);
    printf("seconds %.3f\n", (double)(t1.tv_sec - bench_t0.tv_sec) +
                                 (double)(t1.tv_nsec - bench_t0.tv_nsec) / 1e9);
    fflush(stdout);
}

/* Resident set size of this process in bytes (/proc/self/statm), for the
 * programs that report memory at the points a user looks ("rss_idle",
 * "rss_exit"...): the harness collects every "rss_* BYTES" line. */
static inline size_t rss_now(void)
{
    unsigned long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return (size_t)resident * BENCH_PAGE;
}

static inline void report_rss(const char *key)
{
    printf("%s %zu\n", key, rss_now());
    fflush(stdout);
}

static inline void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

#endif /* EMMA_BENCH_H */
