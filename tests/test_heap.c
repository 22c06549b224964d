/* Private heaps (emma_heap_*) and emma_teardown through the public API.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * The program links libemma.la, so its malloc (and Check's) is emma's too.
 * The memory figures (RSS, /proc/self/maps lines) are read with raw
 * open/read into static buffers, so that measuring allocates nothing.
 */
#define _GNU_SOURCE 1
#include "config.h"
#include "testutil.h"

#include <emma.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <time.h>

/* ------------------------------------------------------------------ */
/* Measuring without allocating */

static char procbuf[1 << 20];

static size_t read_proc(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_msg(fd >= 0, "open %s", path);
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, procbuf + n, sizeof procbuf - 1 - n);
        ck_assert_msg(r >= 0, "read %s", path);
        if (r == 0)
            break;
        n += (size_t)r;
        ck_assert_msg(n < sizeof procbuf - 1, "%s too long", path);
    }
    close(fd);
    procbuf[n] = '\0';
    return n;
}

/* Lines of /proc/self/maps: the number of mappings. */
static long maps_count(void)
{
    size_t n = read_proc("/proc/self/maps");
    long lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += procbuf[i] == '\n';
    return lines;
}

/* Resident bytes, from /proc/self/statm (no stdio, no malloc). */
static size_t rss_now(void)
{
    read_proc("/proc/self/statm");
    unsigned long size = 0, res = 0;
    const char *s = procbuf;
    while (*s >= '0' && *s <= '9')
        size = size * 10 + (unsigned long)(*s++ - '0');
    s++;
    while (*s >= '0' && *s <= '9')
        res = res * 10 + (unsigned long)(*s++ - '0');
    return (size_t)res * 4096;
}

/* A random size with every size range represented: tiny, small, medium,
 * large and (one in 64) huge. */
static size_t some_size(uint64_t *rng)
{
    uint64_t r = tu_rand(rng);
    switch (r % 64) {
    case 0:
        return (size_t)(1 << 20) + (size_t)(r >> 40) % (3 << 20);
    case 1:
    case 2:
        return 65536 + (size_t)(r >> 32) % (1 << 20);
    case 3:
    case 4:
    case 5:
        return 8192 + (size_t)(r >> 32) % 57344;
    default:
        return (size_t)(r >> 32) % 1024;
    }
}

/* ------------------------------------------------------------------ */
/* Every function */

START_TEST(t_heap_api)
{
    emma_heap_t *h = emma_heap_new();
    ck_assert_ptr_nonnull(h);
    enum { N = 600 };
    static void *p[N];
    static size_t sz[N], al[N];
    uint64_t rng = 12345;
    for (int i = 0; i < N; i++) {
        sz[i] = some_size(&rng);
        al[i] = (size_t)1 << (tu_rand(&rng) % 13); /* 1 .. 4096 */
        if (i % 97 == 0)
            al[i] = (size_t)2 << 20; /* above LARGE_MAX: a huge block */
        if (i % 3 == 0) {
            p[i] = emma_heap_alloc_zeroed(h, sz[i], al[i]);
            ck_assert_ptr_nonnull(p[i]);
            TU_ASSERT_MSG(tu_all_zero(p[i], sz[i]), "block %d of %zu bytes not zeroed", i, sz[i]);
        } else {
            p[i] = emma_heap_alloc(h, sz[i], al[i]);
            ck_assert_ptr_nonnull(p[i]);
        }
        TU_ASSERT(((uintptr_t)p[i] & (al[i] - 1)) == 0);
        TU_ASSERT(emma_owns(p[i]));
        TU_ASSERT(emma_usable_size(p[i]) >= sz[i]);
        tu_fill(p[i], sz[i], (uintptr_t)p[i]);
    }
    /* resize a third, free a third with emma_heap_dealloc */
    for (int i = 0; i < N; i++) {
        TU_ASSERT_MSG(tu_check(p[i], sz[i], (uintptr_t)p[i]) < 0, "block %d overwritten", i);
        if (i % 3 == 1) {
            size_t ns = some_size(&rng);
            void *q = emma_heap_realloc(h, p[i], sz[i], al[i], ns);
            ck_assert_ptr_nonnull(q);
            TU_ASSERT(((uintptr_t)q & (al[i] - 1)) == 0);
            size_t keep = ns < sz[i] ? ns : sz[i];
            TU_ASSERT_MSG(tu_check(q, keep, (uintptr_t)p[i]) < 0, "realloc lost data of %d", i);
            p[i] = q;
            sz[i] = ns;
            tu_fill(p[i], sz[i], (uintptr_t)p[i]);
        } else if (i % 3 == 2) {
            emma_heap_dealloc(h, p[i], sz[i], al[i]);
            p[i] = NULL;
        }
    }
    for (int i = 0; i < N; i++)
        if (p[i])
            TU_ASSERT_MSG(tu_check(p[i], sz[i], (uintptr_t)p[i]) < 0, "block %d overwritten", i);
    /* NULL in, NULL out, like emma_realloc; dealloc of NULL is nothing */
    void *q = emma_heap_realloc(h, NULL, 0, 16, 100);
    ck_assert_ptr_nonnull(q);
    emma_heap_dealloc(h, q, 100, 16);
    emma_heap_dealloc(h, NULL, 5, 8);
    /* bad alignment: NULL and EINVAL (checked builds abort instead) */
    if (!EMMA_CONFIG_CHECKS) {
        errno = 0;
        ck_assert_ptr_null(emma_heap_alloc(h, 16, 3));
        ck_assert_int_eq(errno, EINVAL);
    }
    /* too big: NULL and ENOMEM, the heap keeps working */
    errno = 0;
    ck_assert_ptr_null(emma_heap_alloc(h, SIZE_MAX / 2, 16));
    ck_assert_int_eq(errno, ENOMEM);
    void *keep = p[0];
    emma_heap_destroy(h);
    /* the memory is gone: emma no longer knows the address */
    ck_assert_int_eq(emma_owns(keep), 0);
    emma_heap_destroy(NULL);
}
END_TEST

/* Blocks of the thread's heap are not disturbed by a private heap's life
 * and death, and the two never share memory. */
START_TEST(t_heap_separate)
{
    enum { N = 2000 };
    static void *m[N], *b[N];
    emma_heap_t *h = emma_heap_new();
    ck_assert_ptr_nonnull(h);
    for (int i = 0; i < N; i++) {
        size_t s = 16 + (size_t)(i % 50) * 24;
        m[i] = malloc(s);
        b[i] = emma_heap_alloc(h, s, 16);
        ck_assert_ptr_nonnull(m[i]);
        ck_assert_ptr_nonnull(b[i]);
        tu_fill(m[i], s, (uintptr_t)m[i]);
        tu_fill(b[i], s, (uintptr_t)b[i]);
    }
    for (int i = 0; i < N; i += 2) /* emma_free and free take both kinds */
        emma_free(b[i]);
    emma_heap_destroy(h);
    for (int i = 0; i < N; i++) {
        size_t s = 16 + (size_t)(i % 50) * 24;
        TU_ASSERT_MSG(emma_owns(m[i]), "malloc block %d lost", i);
        TU_ASSERT_MSG(tu_check(m[i], s, (uintptr_t)m[i]) < 0, "malloc block %d overwritten", i);
        free(m[i]);
    }
}
END_TEST

/* ------------------------------------------------------------------ */
/* Frees from other threads, while the heap's user keeps allocating */

enum { XT_THREADS = 3, XT_PER = 20000 };
static _Atomic(void *) xt_slots[XT_THREADS][256];
static atomic_int xt_done;
static atomic_long xt_errors;

/* A block handed to a freer holds its size in its first word, then the
 * pattern of its address. */
static void *xt_freer(void *arg)
{
    int t = (int)(intptr_t)arg;
    long freed = 0;
    while (freed < XT_PER) {
        for (int k = 0; k < 256; k++) {
            void *p = atomic_exchange(&xt_slots[t][k], NULL);
            if (!p)
                continue;
            size_t s;
            memcpy(&s, p, sizeof s);
            if (!emma_owns(p) || emma_usable_size(p) < s ||
                tu_check((char *)p + 8, s - 8, (uintptr_t)p) >= 0)
                atomic_fetch_add(&xt_errors, 1);
            if (freed & 1)
                emma_dealloc(p, s, 8);
            else
                emma_free(p);
            freed++;
        }
    }
    atomic_fetch_add(&xt_done, 1);
    return NULL;
}

START_TEST(t_heap_remote_free)
{
    emma_heap_t *h = emma_heap_new();
    ck_assert_ptr_nonnull(h);
    pthread_t th[XT_THREADS];
    for (int t = 0; t < XT_THREADS; t++)
        ck_assert_int_eq(pthread_create(&th[t], NULL, xt_freer, (void *)(intptr_t)t), 0);
    long made[XT_THREADS] = {0};
    void *own[64] = {0};
    uint64_t rng = 7;
    while (atomic_load(&xt_done) < XT_THREADS) {
        for (int t = 0; t < XT_THREADS; t++) {
            if (made[t] >= XT_PER)
                continue;
            int k = (int)(tu_rand(&rng) % 256);
            if (atomic_load(&xt_slots[t][k]))
                continue;
            size_t s = 16 + (size_t)(tu_rand(&rng) % 2000);
            void *p = emma_heap_alloc(h, s / 2, 8);
            ck_assert_ptr_nonnull(p);
            p = emma_heap_realloc(h, p, s / 2, 8, s); /* grown in the heap */
            ck_assert_ptr_nonnull(p);
            memcpy(p, &s, sizeof s);
            tu_fill((char *)p + 8, s - 8, (uintptr_t)p);
            atomic_store(&xt_slots[t][k], p);
            made[t]++;
        }
        /* the user frees some of its own, too */
        int j = (int)(tu_rand(&rng) % 64);
        if (own[j])
            emma_heap_dealloc(h, own[j], 48, 16);
        own[j] = emma_heap_alloc(h, 48, 16);
        ck_assert_ptr_nonnull(own[j]);
    }
    for (int t = 0; t < XT_THREADS; t++)
        ck_assert_int_eq(pthread_join(th[t], NULL), 0);
    ck_assert_int_eq(atomic_load(&xt_errors), 0);
    emma_heap_destroy(h); /* with `own` blocks still in it */
}
END_TEST

/* ------------------------------------------------------------------ */
/* Destroy gives back every byte; reset keeps the memory */

/* Fill h with about `mib` MiB of mixed blocks, every byte touched. */
static void fill_heap(emma_heap_t *h, size_t mib, uint64_t seed)
{
    size_t total = 0;
    uint64_t rng = seed;
    while (total < mib * TU_MIB) {
        size_t s = some_size(&rng);
        void *p = emma_heap_alloc(h, s, 16);
        TU_ASSERT(p != NULL);
        memset(p, 0x5a, s);
        total += s;
        if (tu_rand(&rng) % 4 == 0)
            emma_heap_dealloc(h, p, s, 16);
    }
}

START_TEST(t_heap_destroy_returns_all)
{
    /* warm up this thread's heap and emma's own state (the address map's
     * pages that note the heap's segments stay, as emma's own memory) */
    free(malloc(100));
    emma_heap_t *w = emma_heap_new();
    fill_heap(w, 48, 100);
    emma_heap_destroy(w);
    for (int round = 0; round < 3; round++) {
        long maps0 = maps_count();
        size_t rss0 = rss_now();
        emma_heap_t *h = emma_heap_new();
        TU_ASSERT(h != NULL);
        fill_heap(h, 48, 100 + (uint64_t)round);
        long maps1 = maps_count();
        size_t rss1 = rss_now();
        emma_heap_destroy(h);
        long maps2 = maps_count();
        size_t rss2 = rss_now();
        fprintf(stderr, "# round %d: maps %ld -> %ld -> %ld, RSS %zu KiB -> %zu KiB -> %zu KiB\n",
                round, maps0, maps1, maps2, rss0 >> 10, rss1 >> 10, rss2 >> 10);
        ck_assert_msg(rss1 > rss0 + 32 * TU_MIB, "the heap's memory was not resident");
        ck_assert_msg(maps2 == maps0, "mappings: %ld before emma_heap_new, %ld after destroy",
                      maps0, maps2);
        /* one page of slack: the stack of this very function */
        ck_assert_msg(rss2 <= rss0 + 16 * 1024,
                      "RSS: %zu KiB before emma_heap_new, %zu KiB after destroy", rss0 >> 10,
                      rss2 >> 10);
    }
}
END_TEST

START_TEST(t_heap_reset_reuses)
{
    emma_heap_t *h = emma_heap_new();
    ck_assert_ptr_nonnull(h);
    fill_heap(h, 24, 5);
    /* small blocks only from here: they come from kept segments */
    enum { N = 20000 };
    for (int i = 0; i < N; i++) {
        void *p = emma_heap_alloc(h, 64, 16);
        ck_assert_ptr_nonnull(p);
        memset(p, 1, 64);
    }
    long maps0 = maps_count();
    size_t rss0 = rss_now();
    for (int round = 0; round < 5; round++) {
        emma_heap_reset(h);
        long maps1 = maps_count();
        size_t rss1 = rss_now();
        /* the memory stays: huge blocks (one mapping each) are the only
         * mappings that go, and resident pages stay resident */
        ck_assert_msg(maps1 <= maps0, "reset added mappings: %ld -> %ld", maps0, maps1);
        fill_heap(h, 16, 5);
        for (int i = 0; i < N; i++) {
            void *p = emma_heap_alloc(h, 64, 16);
            ck_assert_ptr_nonnull(p);
            memset(p, 2, 64);
        }
        size_t rss2 = rss_now();
        fprintf(stderr, "# reset round %d: maps %ld -> %ld, RSS %zu -> %zu -> %zu KiB\n", round,
                maps0, maps1, rss0 >> 10, rss1 >> 10, rss2 >> 10);
        /* the second fill is smaller than the first: no new memory */
        ck_assert_msg(rss2 <= rss0 + TU_MIB, "RSS grew over resets: %zu -> %zu KiB", rss0 >> 10,
                      rss2 >> 10);
        ck_assert_msg(maps_count() <= maps0 + 2, "mappings grew over resets");
    }
    emma_heap_destroy(h);
    /* after a reset the heap's blocks come from the memory it had: every
     * block of the second round lies in a 4 MiB segment of the first */
    h = emma_heap_new();
    ck_assert_ptr_nonnull(h);
    static uintptr_t seg[N];
    for (int i = 0; i < N; i++) {
        void *p = emma_heap_alloc(h, 64, 16);
        ck_assert_ptr_nonnull(p);
        seg[i] = (uintptr_t)p >> 22;
    }
    emma_heap_reset(h);
    for (int i = 0; i < N; i++) {
        uintptr_t s = (uintptr_t)emma_heap_alloc(h, 64, 16) >> 22;
        int found = 0;
        for (int k = 0; k < N && !found; k++)
            found = seg[k] == s;
        TU_ASSERT_MSG(found, "block %d after reset is not in the memory kept", i);
    }
    emma_heap_destroy(h);
}
END_TEST

/* Many heaps alive at once, destroyed in another order. */
enum { MANY_HEAPS = 64 };

static void many_heaps_round(void)
{
    static emma_heap_t *hs[MANY_HEAPS];
    for (int i = 0; i < MANY_HEAPS; i++) {
        hs[i] = emma_heap_new();
        ck_assert_ptr_nonnull(hs[i]);
        for (int k = 0; k < 100; k++)
            ck_assert_ptr_nonnull(emma_heap_alloc(hs[i], (size_t)(16 + k * 8), 16));
    }
    for (int i = 0; i < MANY_HEAPS; i += 2)
        emma_heap_destroy(hs[i]);
    for (int i = 1; i < MANY_HEAPS; i += 2)
        emma_heap_destroy(hs[i]);
}

/* Counted from the second round: the first may have made the address map
 * grow (a 64 KiB leaf per 128 GiB of address space emma ever used, kept
 * until teardown), when the heaps happened to cross into a range it had
 * not covered yet (a flake at the rate of address-space layout). */
START_TEST(t_heap_many)
{
    many_heaps_round();
    long maps0 = maps_count();
    many_heaps_round();
    ck_assert_int_eq(maps_count(), maps0);
}
END_TEST

/* emma_stats counts private heaps apart (and within the totals). */
START_TEST(t_heap_stats)
{
    struct emma_stats s0, s1, s2;
    ck_assert_int_eq(emma_stats(&s0, sizeof s0), 0);
    emma_heap_t *h = emma_heap_new();
    ck_assert_ptr_nonnull(h);
    for (int i = 0; i < 1000; i++)
        ck_assert_ptr_nonnull(emma_heap_alloc(h, 100, 16));
    void *big = emma_heap_alloc(h, (size_t)3 << 20, 16);
    ck_assert_ptr_nonnull(big);
    ck_assert_int_eq(emma_stats(&s1, sizeof s1), 0);
    ck_assert_uint_eq(s1.private_heaps, s0.private_heaps + 1);
    ck_assert_uint_eq(s1.private_huge_blocks, s0.private_huge_blocks + 1);
    ck_assert_uint_ge(s1.private_segments, s0.private_segments + 1);
    /* 1000 blocks of 112 bytes and the huge block's usable size */
    ck_assert_uint_ge(s1.private_bytes_in_use, s0.private_bytes_in_use + 1000 * 100 + (3 << 20));
    ck_assert_uint_le(s1.private_bytes_in_use, s1.bytes_in_use);
    ck_assert_uint_le(s1.private_segments, s1.segments);
    emma_heap_destroy(h);
    ck_assert_int_eq(emma_stats(&s2, sizeof s2), 0);
    ck_assert_uint_eq(s2.private_heaps, s0.private_heaps);
    ck_assert_uint_eq(s2.private_huge_blocks, s0.private_huge_blocks);
    ck_assert_uint_eq(s2.private_segments, s0.private_segments);
    ck_assert_uint_eq(s2.private_bytes_in_use, s0.private_bytes_in_use);
    ck_assert_uint_eq(s2.huge_blocks, s0.huge_blocks);
}
END_TEST

/* ------------------------------------------------------------------ */
/* emma_teardown with live blocks: refused, nothing changes */

START_TEST(t_teardown_busy)
{
    void *p = emma_alloc(100, 16);
    ck_assert_ptr_nonnull(p);
    memset(p, 7, 100);
    long maps0 = maps_count();
    errno = 0;
    ck_assert_int_eq(emma_teardown(), -1);
    ck_assert_int_eq(errno, EBUSY);
    ck_assert_int_eq(maps_count(), maps0);
    ck_assert(emma_owns(p));
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(((unsigned char *)p)[i], 7);
    emma_dealloc(p, 100, 16);
    /* a live private heap block also counts as live */
    emma_heap_t *h = emma_heap_new();
    ck_assert_ptr_nonnull(h);
    void *b = emma_heap_alloc(h, 32, 16);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(emma_teardown(), -1);
    emma_heap_dealloc(h, b, 32, 16);
    /* and so does a private heap with no block at all (emma_teardown(3)):
     * tearing down would unmap it under its handle */
    errno = 0;
    ck_assert_int_eq(emma_teardown(), -1);
    ck_assert_int_eq(errno, EBUSY);
    emma_heap_reset(h);
    errno = 0;
    ck_assert_int_eq(emma_teardown(), -1);
    ck_assert_int_eq(errno, EBUSY);
    emma_heap_destroy(h);
}
END_TEST

#if !EMMA_CONFIG_CHECKS
/* Without boundary checks, emma_realloc of a private heap's block is
 * undefined (emma_heap_new(3)); this version moves a block that does not
 * fit into the calling thread's heap, where the private heap's destroy
 * leaves it alone. */
START_TEST(t_heap_realloc_moves_out)
{
    emma_heap_t *h = emma_heap_new();
    ck_assert_ptr_nonnull(h);
    unsigned char *p = emma_heap_alloc(h, 40, 16);
    ck_assert_ptr_nonnull(p);
    memset(p, 9, 40);
    unsigned char *q = emma_realloc(p, 40, 16, 4000);
    ck_assert_ptr_nonnull(q);
    ck_assert_ptr_ne(q, p);
    emma_heap_destroy(h);
    ck_assert(emma_owns(q));
    for (int i = 0; i < 40; i++)
        ck_assert_int_eq(q[i], 9);
    memset(q, 1, 4000);
    emma_dealloc(q, 4000, 16);
}
END_TEST
#endif

/* ------------------------------------------------------------------ */
/* A block freed after its heap was destroyed (boundary checks) */

#if EMMA_CONFIG_CHECKS
static void *stale;

static void expect_one_line_abort(void (*fn)(void), const char *want_sub)
{
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        dup2(pfd[1], 2);
        close(pfd[0]);
        fn();
        _exit(0);
    }
    close(pfd[1]);
    static char got[4096];
    size_t len = 0;
    ssize_t r;
    while ((r = read(pfd[0], got + len, sizeof got - 1 - len)) > 0)
        len += (size_t)r;
    got[len] = '\0';
    close(pfd[0]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "child did not abort: \"%s\"", got);
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += got[i] == '\n';
    ck_assert_msg(lines == 1 && got[len - 1] == '\n', "want one line, got \"%s\"", got);
    ck_assert_msg(strstr(got, want_sub) != NULL, "\"%s\" does not say \"%s\"", got, want_sub);
}

static void free_stale(void) { emma_free(stale); }
static void dealloc_stale(void) { emma_dealloc(stale, 40, 16); }
static void heap_dealloc_other(void)
{
    emma_heap_t *a = emma_heap_new(), *b = emma_heap_new();
    void *p = emma_heap_alloc(a, 40, 16);
    emma_heap_dealloc(b, p, 40, 16);
}
/* A heap handle that is not a live heap: destroyed, or never one. */
static void destroy_twice(void)
{
    emma_heap_t *a = emma_heap_new();
    emma_heap_destroy(a);
    emma_heap_destroy(a);
}
static void alloc_after_destroy(void)
{
    emma_heap_t *a = emma_heap_new();
    (void)emma_heap_alloc(a, 40, 16);
    emma_heap_destroy(a);
    (void)emma_heap_alloc(a, 40, 16);
}
static void reset_garbage(void)
{
    /* unmapped: reading it would be a SIGSEGV, not the line */
    emma_heap_reset((emma_heap_t *)(uintptr_t)0x1000);
}
static void dealloc_to_block(void)
{
    emma_heap_t *a = emma_heap_new();
    void *p = emma_heap_alloc(a, 4096, 16);
    memset(p, 0xff, 4096); /* a block that looks like anything */
    emma_heap_dealloc((emma_heap_t *)p, p, 4096, 16);
}
static void alloc_null_heap(void) { (void)emma_heap_alloc_zeroed(NULL, 40, 16); }

START_TEST(t_heap_bad_handle)
{
    expect_one_line_abort(destroy_twice,
                          "emma: emma_heap_destroy: not a live private heap (");
    expect_one_line_abort(alloc_after_destroy,
                          "emma: emma_heap_alloc: not a live private heap (");
    expect_one_line_abort(reset_garbage,
                          "emma: emma_heap_reset: not a live private heap (");
    expect_one_line_abort(dealloc_to_block,
                          "emma: emma_heap_dealloc: not a live private heap (");
    expect_one_line_abort(alloc_null_heap,
                          "emma: emma_heap_alloc_zeroed: not a live private heap (");
}
END_TEST

static void realloc_private(void)
{
    emma_heap_t *a = emma_heap_new();
    void *p = emma_heap_alloc(a, 40, 16);
    void *q = emma_realloc(p, 40, 16, 4000);
    (void)q;
}

START_TEST(t_heap_free_after_destroy)
{
    emma_heap_t *h = emma_heap_new();
    ck_assert_ptr_nonnull(h);
    stale = emma_heap_alloc(h, 40, 16);
    ck_assert_ptr_nonnull(stale);
    emma_heap_destroy(h);
    expect_one_line_abort(free_stale, "emma: emma_free: pointer was not allocated by emma");
    expect_one_line_abort(dealloc_stale, "emma: emma_dealloc: pointer was not allocated by emma");
    /* the same for a huge block */
    h = emma_heap_new();
    stale = emma_heap_alloc(h, 3 << 20, 16);
    ck_assert_ptr_nonnull(stale);
    emma_heap_destroy(h);
    expect_one_line_abort(free_stale, "emma: emma_free: pointer was not allocated by emma");
    /* a block handed to the wrong heap, or to emma_realloc */
    expect_one_line_abort(heap_dealloc_other,
                          "emma: emma_heap_dealloc: pointer belongs to another heap");
    expect_one_line_abort(realloc_private,
                          "emma: emma_realloc: block of a private heap (");
}
END_TEST
#endif

/* ------------------------------------------------------------------ */
/* fork while other threads are inside calls on private heaps (issue 11:
 * no deadlock after fork, whatever the child interrupted) */

#define FORK_HEAPS 4
#define FORK_WORKERS 3
#define FORK_KEEP 48

static emma_heap_t *fork_heaps[FORK_HEAPS];
/* the heaps' threading contract: one thread at a time uses a heap */
static pthread_mutex_t fork_heap_mutex[FORK_HEAPS];
static atomic_int fork_stop;

/* Rounds on a random heap: allocate (every size range, a huge block now
 * and then), free some with emma_heap_dealloc and some with emma_free,
 * resize, then reset the heap or free the rest; plus heaps made and
 * destroyed (the list of private heaps) and statistics read (its lock). */
static void *fork_worker(void *arg)
{
    uint64_t rng = 0x5eed0000u + (uint64_t)(uintptr_t)arg;
    void *p[FORK_KEEP];
    size_t sz[FORK_KEEP];
    while (!atomic_load(&fork_stop)) {
        unsigned i = (unsigned)(tu_rand(&rng) % FORK_HEAPS);
        pthread_mutex_lock(&fork_heap_mutex[i]);
        emma_heap_t *h = fork_heaps[i];
        for (unsigned k = 0; k < FORK_KEEP; k++) {
            sz[k] = some_size(&rng);
            p[k] = emma_heap_alloc(h, sz[k], k % 7 == 0 ? 64 : 16);
            TU_ASSERT(p[k] != NULL);
            memset(p[k], (int)k, sz[k] < 256 ? sz[k] : 256);
        }
        for (unsigned k = 0; k < FORK_KEEP; k += 3) {
            size_t n = some_size(&rng);
            void *q = emma_heap_realloc(h, p[k], sz[k], k % 7 == 0 ? 64 : 16, n);
            TU_ASSERT(q != NULL);
            p[k] = q;
            sz[k] = n;
        }
        if (tu_rand(&rng) % 4 == 0) {
            emma_heap_reset(h);
        } else {
            for (unsigned k = 0; k < FORK_KEEP; k++) {
                if (k % 5 == 0)
                    emma_free(p[k]);
                else
                    emma_heap_dealloc(h, p[k], sz[k], k % 7 == 0 ? 64 : 16);
            }
        }
        pthread_mutex_unlock(&fork_heap_mutex[i]);
        if (tu_rand(&rng) % 8 == 0) {
            emma_heap_t *t = emma_heap_new();
            TU_ASSERT(t != NULL);
            TU_ASSERT(emma_heap_alloc(t, 100, 16) != NULL);
            emma_heap_destroy(t);
            struct emma_stats st;
            emma_stats(&st, sizeof st);
        }
    }
    return NULL;
}

/* The child: every heap allocates, frees, resets and is destroyed; a
 * fresh heap too.  Exit status 0 when all went well; a hang meets the
 * alarm (SIGALRM). */
static void fork_child(unsigned round)
{
    alarm(10); /* the last child starts before 6 s: reported before 19 s */
    uint64_t rng = 0xc41dull + round;
    for (unsigned i = 0; i < FORK_HEAPS; i++) {
        emma_heap_t *h = fork_heaps[i];
        void *p[64];
        size_t sz[64];
        for (unsigned pass = 0; pass < 2; pass++) {
            for (unsigned k = 0; k < 64; k++) {
                sz[k] = k == 0 ? (size_t)3 << 20 : some_size(&rng) + 1;
                p[k] = emma_heap_alloc(h, sz[k], 16);
                if (!p[k])
                    _exit(2);
                memset(p[k], (int)(k + 1), sz[k] < 512 ? sz[k] : 512);
                ((unsigned char *)p[k])[sz[k] - 1] = (unsigned char)(k + 1);
            }
            for (unsigned k = 0; k < 64; k++) {
                const unsigned char *c = p[k];
                if (c[0] != (unsigned char)(k + 1) || c[sz[k] - 1] != (unsigned char)(k + 1))
                    _exit(3);
                if (k % 2)
                    emma_heap_dealloc(h, p[k], sz[k], 16);
            }
            emma_heap_reset(h);
        }
        emma_heap_destroy(h);
    }
    emma_heap_t *h = emma_heap_new();
    if (!h || !emma_heap_alloc(h, 5000, 16))
        _exit(4);
    emma_heap_destroy(h);
    void *q = emma_alloc(100, 16);
    if (!q)
        _exit(5);
    emma_free(q);
    _exit(0);
}

START_TEST(t_heap_fork)
{
    for (unsigned i = 0; i < FORK_HEAPS; i++) {
        fork_heaps[i] = emma_heap_new();
        ck_assert_ptr_nonnull(fork_heaps[i]);
        pthread_mutex_init(&fork_heap_mutex[i], NULL);
    }
    pthread_t th[FORK_WORKERS];
    for (uintptr_t t = 0; t < FORK_WORKERS; t++)
        ck_assert_int_eq(pthread_create(&th[t], NULL, fork_worker, (void *)t), 0);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned forks = 0;
    for (; forks < 300; forks++) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (forks >= 20 && now.tv_sec - t0.tv_sec >= 6)
            break; /* a loaded machine: fewer forks, within the timeout */
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0)
            fork_child(forks);
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "fork %u: child %s %d", forks, WIFEXITED(status) ? "exited" : "killed by signal",
                      WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        usleep(tu_rand(&(uint64_t){forks + 1}) % 500);
    }
    atomic_store(&fork_stop, 1);
    for (unsigned t = 0; t < FORK_WORKERS; t++)
        pthread_join(th[t], NULL);
    for (unsigned i = 0; i < FORK_HEAPS; i++)
        emma_heap_destroy(fork_heaps[i]);
    fprintf(stderr, "t_heap_fork: %u forks, every child used and destroyed every heap\n", forks);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("heap");
    TCase *t = tcase_create("private heaps");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, t_heap_api);
    tcase_add_test(t, t_heap_separate);
    tcase_add_test(t, t_heap_remote_free);
    tcase_add_test(t, t_heap_destroy_returns_all);
    tcase_add_test(t, t_heap_reset_reuses);
    tcase_add_test(t, t_heap_many);
    tcase_add_test(t, t_heap_stats);
    tcase_add_test(t, t_teardown_busy);
#if EMMA_CONFIG_CHECKS
    tcase_add_test(t, t_heap_free_after_destroy);
    tcase_add_test(t, t_heap_bad_handle);
#else
    tcase_add_test(t, t_heap_realloc_moves_out);
#endif
    suite_add_tcase(s, t);
    TCase *f = tcase_create("fork");
    tcase_set_timeout(f, 19);
    tcase_add_test(f, t_heap_fork);
    suite_add_tcase(s, f);
    return tu_run(s);
}
