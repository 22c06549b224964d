/* API conformance of every public function of libemma.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Linked against libemma.la (the shared library), which comes before libc
 * on the link line: malloc & co. in this program are emma's.  The first test
 * proves it through emma_owns().
 */
#define _GNU_SOURCE 1
#include "config.h"
#include "testutil.h"

#include <emma.h>
#include <malloc.h>
#include <stdint.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>

/* Not declared by Debian 12's glibc headers (free_sized and
 * free_aligned_sized are C23 / glibc 2.43); reallocarray is, but only with
 * _DEFAULT_SOURCE, so declare all three ourselves. */
void *reallocarray(void *ptr, size_t nmemb, size_t size);
void free_sized(void *ptr, size_t size);
void free_aligned_sized(void *ptr, size_t alignment, size_t size);

/* Sizes and alignments go through volatiles so that the compiler cannot
 * reason about (or warn on) impossible requests. */
static volatile size_t v_size_max = SIZE_MAX;
static volatile size_t v_ptrdiff_max_1 = (size_t)PTRDIFF_MAX + 1;
static volatile size_t v_ptrdiff_max = (size_t)PTRDIFF_MAX;
static volatile size_t v_half = SIZE_MAX / 2;

#define PAGE ((size_t)4096)
#define MAX_ALIGN_SHIFT 26 /* 64 MiB */

static int aligned(const void *p, size_t a)
{
    return ((uintptr_t)p & (a - 1)) == 0;
}

/* A list of interesting sizes: every size up to 1 KiB, then geometric steps
 * (a few per power of two, with +-1 around each) up to limit. */
static size_t build_sizes(size_t *out, size_t cap, size_t limit)
{
    size_t n = 0;
    for (size_t s = 0; s <= 1024 && n < cap; s++)
        out[n++] = s;
    for (size_t p = 1024; p < limit && n + 12 < cap; p *= 2) {
        for (size_t k = 1; k <= 4; k++) {
            size_t s = p + k * (p / 4);
            out[n++] = s - 1;
            out[n++] = s;
            out[n++] = s + 1;
        }
    }
    return n;
}

/* ================================================================== */
/* malloc-compatible API                                              */

START_TEST(t_malloc_is_emma)
{
    void *p = malloc(10);
    TU_ASSERT((p) != NULL);
    TU_ASSERT_MSG(emma_owns(p), "malloc() did not go through emma");
    free(p);
    p = calloc(3, 7);
    TU_ASSERT_MSG(emma_owns(p), "calloc() did not go through emma");
    free(p);
}
END_TEST

START_TEST(t_malloc_sizes_align_usable)
{
    static size_t sizes[4096];
    static void *ptrs[4096];
    size_t n = build_sizes(sizes, 4096, 3 * TU_MIB);
    for (size_t i = 0; i < n; i++) {
        void *p = malloc(sizes[i]);
        TU_ASSERT_MSG(p != NULL, "malloc(%zu) failed", sizes[i]);
        TU_ASSERT_MSG(aligned(p, 16), "malloc(%zu) = %p not 16-aligned",
                      sizes[i], p);
        TU_ASSERT_MSG(malloc_usable_size(p) >= sizes[i],
                      "malloc_usable_size(malloc(%zu)) = %zu", sizes[i],
                      malloc_usable_size(p));
        TU_ASSERT_MSG(emma_usable_size(p) >= sizes[i],
                      "emma_usable_size(malloc(%zu)) = %zu", sizes[i],
                      emma_usable_size(p));
        /* fill the whole usable size: must not clobber any neighbour */
        tu_fill(p, malloc_usable_size(p), i);
        ptrs[i] = p;
    }
    for (size_t i = 0; i < n; i++) {
        long bad = tu_check(ptrs[i], malloc_usable_size(ptrs[i]), i);
        TU_ASSERT_MSG(bad < 0, "block %zu (size %zu) corrupted at %ld", i,
                      sizes[i], bad);
    }
    for (size_t i = 0; i < n; i++)
        free(ptrs[i]);
}
END_TEST

START_TEST(t_malloc_zero_unique)
{
    enum { N = 1000 };
    static void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = malloc(0);
        TU_ASSERT_MSG(p[i] != NULL, "malloc(0) returned NULL");
        TU_ASSERT(aligned(p[i], 16));
        for (int j = 0; j < i; j++)
            TU_ASSERT_MSG(p[i] != p[j], "malloc(0) returned %p twice", p[i]);
    }
    for (int i = 0; i < N; i++)
        free(p[i]);
}
END_TEST

START_TEST(t_malloc_impossible)
{
    const size_t bad[] = {v_size_max, v_ptrdiff_max_1, v_ptrdiff_max,
                          v_size_max - 4095, v_size_max - 15, v_half + 1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        void *p = malloc(bad[i]);
        TU_ASSERT_MSG(p == NULL, "malloc(%zu) = %p", bad[i], p);
        TU_ASSERT_MSG(errno == ENOMEM, "malloc(%zu): errno %d, want ENOMEM",
                      bad[i], errno);
    }
    /* still works afterwards */
    void *p = malloc(100);
    TU_ASSERT((p) != NULL);
    free(p);
}
END_TEST

START_TEST(t_calloc_overflow)
{
    struct { size_t n, s; } bad[] = {
        {v_size_max, 2}, {2, v_size_max}, {(size_t)1 << 32, (size_t)1 << 32},
        {v_half + 1, 2}, {v_size_max, v_size_max}, {v_size_max, 1},
        {1, v_ptrdiff_max_1}, {v_ptrdiff_max_1 / 16, 16}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        void *p = calloc(bad[i].n, bad[i].s);
        TU_ASSERT_MSG(p == NULL, "calloc(%zu, %zu) = %p", bad[i].n, bad[i].s,
                      p);
        TU_ASSERT_MSG(errno == ENOMEM, "calloc(%zu, %zu): errno %d", bad[i].n,
                      bad[i].s, errno);
    }
    void *p = calloc(0, 5), *q = calloc(5, 0);
    TU_ASSERT((p) != NULL);
    TU_ASSERT((q) != NULL);
    ck_assert_ptr_ne(p, q);
    free(p);
    free(q);
}
END_TEST

/* calloc and emma_alloc_zeroed must zero memory even when it is reused
 * dirty: fill, free, reallocate the same sizes many times. */
START_TEST(t_calloc_zeroes_reused)
{
    static size_t sizes[4096];
    size_t n = build_sizes(sizes, 4096, 3 * TU_MIB);
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < n; i += (i < 1024 ? 7 : 1)) {
            size_t s = sizes[i];
            void *d[4];
            for (int k = 0; k < 4; k++) {
                d[k] = malloc(s);
                TU_ASSERT((d[k]) != NULL);
                memset(d[k], 0xa5, malloc_usable_size(d[k]));
            }
            for (int k = 0; k < 4; k++)
                free(d[k]);
            for (int k = 0; k < 4; k++) {
                d[k] = calloc(1, s);
                TU_ASSERT_MSG(d[k] != NULL, "calloc(1, %zu) failed", s);
                TU_ASSERT_MSG(tu_all_zero(d[k], s),
                              "calloc(1, %zu) returned dirty memory", s);
                memset(d[k], 0x5a, s);
            }
            for (int k = 0; k < 4; k++)
                free(d[k]);
            for (int k = 0; k < 4; k++) {
                size_t a = (size_t)16 << (k * 2);
                d[k] = emma_alloc_zeroed(s, a);
                TU_ASSERT_MSG(d[k] != NULL, "emma_alloc_zeroed(%zu, %zu)", s,
                              a);
                TU_ASSERT(aligned(d[k], a));
                TU_ASSERT_MSG(tu_all_zero(d[k], s),
                              "emma_alloc_zeroed(%zu, %zu) returned dirty "
                              "memory", s, a);
                memset(d[k], 0x3c, s);
            }
            for (int k = 0; k < 4; k++)
                emma_dealloc(d[k], s, (size_t)16 << (k * 2));
        }
    }
    /* calloc(n, s) with n * s spread over elements */
    void *p = malloc(8000);
    memset(p, 0xff, 8000);
    free(p);
    int *q = calloc(2000, sizeof(int));
    TU_ASSERT((q) != NULL);
    TU_ASSERT(tu_all_zero(q, 2000 * sizeof(int)));
    free(q);
}
END_TEST

START_TEST(t_reallocarray)
{
    unsigned char *p = reallocarray(NULL, 10, 10);
    TU_ASSERT((p) != NULL);
    TU_ASSERT(emma_owns(p));
    tu_fill(p, 100, 77);
    errno = 0;
    void *q = reallocarray(p, v_size_max, 2);
    ck_assert_ptr_null(q);
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    q = reallocarray(p, (size_t)1 << 33, (size_t)1 << 33);
    ck_assert_ptr_null(q);
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    q = reallocarray(p, v_ptrdiff_max_1, 1);
    ck_assert_ptr_null(q);
    ck_assert_int_eq(errno, ENOMEM);
    TU_ASSERT_MSG(tu_check(p, 100, 77) < 0,
                  "failed reallocarray modified the block");
    p = reallocarray(p, 1000, 100);
    TU_ASSERT((p) != NULL);
    TU_ASSERT_MSG(tu_check(p, 100, 77) < 0, "reallocarray lost contents");
    free(p);
}
END_TEST

/* realloc across all size classes, into and out of huge sizes. */
START_TEST(t_realloc_keeps_contents)
{
    static size_t sizes[4096];
    size_t n = build_sizes(sizes, 4096, 64 * TU_MIB + 1);
    unsigned char *p = NULL;
    size_t have = 0;
    /* grow step by step */
    for (size_t i = 1; i < n; i++) {
        size_t s = sizes[i];
        if (s > 8 * TU_MIB && (i % 3)) /* keep the big steps few */
            continue;
        p = realloc(p, s);
        TU_ASSERT_MSG(p != NULL, "realloc to %zu failed", s);
        TU_ASSERT(aligned(p, 16));
        TU_ASSERT(malloc_usable_size(p) >= s);
        long bad = tu_check(p, have, 1234);
        TU_ASSERT_MSG(bad < 0, "realloc %zu -> %zu lost byte %ld", have, s,
                      bad);
        tu_fill(p, s, 1234);
        have = s;
    }
    TU_ASSERT(have > 32 * TU_MIB);
    /* shrink step by step, back down to small sizes */
    for (size_t i = n - 1; i > 0; i--) {
        size_t s = sizes[i];
        if (s > 8 * TU_MIB && (i % 3))
            continue;
        if (s >= have)
            continue;
        p = realloc(p, s);
        TU_ASSERT_MSG(p != NULL, "realloc shrink to %zu failed", s);
        TU_ASSERT(malloc_usable_size(p) >= s);
        long bad = tu_check(p, s, 1234);
        TU_ASSERT_MSG(bad < 0, "realloc shrink %zu -> %zu lost byte %ld",
                      have, s, bad);
        have = s;
    }
    free(p);

    /* direct jumps small <-> huge */
    const size_t jumps[] = {24, 40 * TU_MIB, 100, 3 * TU_MIB, 70000,
                            64 * TU_MIB, 1, 2 * TU_MIB, 2 * TU_MIB + 1, 5};
    p = NULL;
    have = 0;
    for (size_t i = 0; i < sizeof jumps / sizeof jumps[0]; i++) {
        size_t s = jumps[i];
        p = realloc(p, s);
        TU_ASSERT_MSG(p != NULL, "realloc to %zu failed", s);
        size_t keep = have < s ? have : s;
        long bad = tu_check(p, keep, 99);
        TU_ASSERT_MSG(bad < 0, "realloc %zu -> %zu lost byte %ld", have, s,
                      bad);
        tu_fill(p, s, 99);
        have = s;
    }
    free(p);
}
END_TEST

START_TEST(t_realloc_failure_keeps_block)
{
    const size_t sizes[] = {1, 100, 5000, 200000, 3 * TU_MIB};
    const size_t bad[] = {v_half, v_size_max, v_ptrdiff_max_1, v_ptrdiff_max,
                          v_size_max - 8};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *p = malloc(sizes[i]);
        TU_ASSERT((p) != NULL);
        tu_fill(p, sizes[i], i);
        for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
            errno = 0;
            void *q = realloc(p, bad[k]);
            TU_ASSERT_MSG(q == NULL, "realloc(%zu bytes, %zu) = %p", sizes[i],
                          bad[k], q);
            TU_ASSERT_MSG(errno == ENOMEM, "realloc(.., %zu): errno %d",
                          bad[k], errno);
            TU_ASSERT_MSG(tu_check(p, sizes[i], i) < 0,
                          "failed realloc modified the block");
            TU_ASSERT(malloc_usable_size(p) >= sizes[i]);
        }
        /* block still usable: grow it for real */
        void *q = realloc(p, sizes[i] * 2);
        TU_ASSERT((q) != NULL);
        TU_ASSERT(tu_check(q, sizes[i], i) < 0);
        free(q);
    }
}
END_TEST

START_TEST(t_realloc_null_and_zero)
{
    void *p = realloc(NULL, 100);
    TU_ASSERT((p) != NULL);
    TU_ASSERT(emma_owns(p));
    TU_ASSERT(malloc_usable_size(p) >= 100);
    /* glibc: realloc(p, 0) frees p and returns NULL */
    void *q = realloc(p, 0);
    ck_assert_ptr_null(q);
    p = realloc(NULL, 0);
    TU_ASSERT((p) != NULL);
    free(p);
    /* realloc to the same size or smaller keeps the data */
    p = malloc(300);
    tu_fill(p, 300, 5);
    p = realloc(p, 300);
    TU_ASSERT(tu_check(p, 300, 5) < 0);
    p = realloc(p, 299);
    TU_ASSERT(tu_check(p, 299, 5) < 0);
    free(p);
}
END_TEST

START_TEST(t_free_null_and_errno)
{
    free(NULL);
    free_sized(NULL, 0);
    free_aligned_sized(NULL, 64, 0);
    emma_free(NULL);
    ck_assert_uint_eq(malloc_usable_size(NULL), 0);
    ck_assert_uint_eq(emma_usable_size(NULL), 0);

    const size_t sizes[] = {0, 8, 100, 4000, 40000, 400000, 4 * TU_MIB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *p = malloc(sizes[i]);
        TU_ASSERT((p) != NULL);
        errno = 4242;
        free(p);
        TU_ASSERT_MSG(errno == 4242, "free(malloc(%zu)) changed errno to %d",
                      sizes[i], errno);
        p = malloc(sizes[i]);
        errno = 4243;
        free_sized(p, sizes[i]);
        TU_ASSERT_MSG(errno == 4243, "free_sized changed errno");
        p = aligned_alloc(256, sizes[i]);
        errno = 4244;
        free_aligned_sized(p, 256, sizes[i]);
        TU_ASSERT_MSG(errno == 4244, "free_aligned_sized changed errno");
        p = emma_alloc(sizes[i], 32);
        errno = 4245;
        emma_dealloc(p, sizes[i], 32);
        TU_ASSERT_MSG(errno == 4245, "emma_dealloc changed errno");
        p = malloc(sizes[i]);
        errno = 4246;
        emma_free(p);
        TU_ASSERT_MSG(errno == 4246, "emma_free changed errno");
    }
}
END_TEST

START_TEST(t_posix_memalign)
{
    const size_t sizes[] = {0, 1, 16, 100, 4096, 5000, 3 * TU_MIB};
    for (int sh = 3; sh <= MAX_ALIGN_SHIFT; sh++) {
        size_t a = (size_t)1 << sh;
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            if (a >= 16 * TU_MIB && i % 3)
                continue;
            void *p = (void *)0x1;
            int rc = posix_memalign(&p, a, sizes[i]);
            TU_ASSERT_MSG(rc == 0, "posix_memalign(%zu, %zu) = %d", a,
                          sizes[i], rc);
            TU_ASSERT_MSG(aligned(p, a), "posix_memalign(%zu, %zu) = %p", a,
                          sizes[i], p);
            TU_ASSERT(emma_owns(p));
            TU_ASSERT(malloc_usable_size(p) >= sizes[i]);
            if (sizes[i]) {
                ((volatile char *)p)[0] = 1;
                ((volatile char *)p)[sizes[i] - 1] = 2;
            }
            free(p);
        }
    }
    /* EINVAL: not a power of two multiple of sizeof(void *) */
    const size_t badal[] = {0, 1, 2, 4, 12, 24, 48, 3, 4097, v_half + 2,
                            v_size_max};
    for (size_t i = 0; i < sizeof badal / sizeof badal[0]; i++) {
        void *p = (void *)0x1234;
        errno = 0;
        int rc = posix_memalign(&p, badal[i], 100);
        TU_ASSERT_MSG(rc == EINVAL, "posix_memalign(align %zu) = %d", badal[i],
                      rc);
        TU_ASSERT_MSG(p == (void *)0x1234,
                      "posix_memalign(align %zu) touched *memptr", badal[i]);
    }
    /* ENOMEM, *memptr untouched too */
    const size_t bigsz[] = {v_size_max, v_ptrdiff_max_1, v_size_max - 4096};
    for (size_t i = 0; i < sizeof bigsz / sizeof bigsz[0]; i++) {
        void *p = (void *)0x1234;
        int rc = posix_memalign(&p, 4096, bigsz[i]);
        TU_ASSERT_MSG(rc == ENOMEM, "posix_memalign(4096, %zu) = %d", bigsz[i],
                      rc);
        TU_ASSERT(p == (void *)0x1234);
        rc = posix_memalign(&p, 64 * TU_MIB, bigsz[i]);
        ck_assert_int_eq(rc, ENOMEM);
        TU_ASSERT(p == (void *)0x1234);
    }
}
END_TEST

START_TEST(t_aligned_alloc_memalign)
{
    const size_t sizes[] = {0, 1, 100, 4096, 70000, 3 * TU_MIB};
    for (int sh = 0; sh <= MAX_ALIGN_SHIFT; sh++) {
        size_t a = (size_t)1 << sh;
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            if (a >= 16 * TU_MIB && i % 2)
                continue;
            void *p = aligned_alloc(a, sizes[i]);
            TU_ASSERT_MSG(p != NULL, "aligned_alloc(%zu, %zu)", a, sizes[i]);
            TU_ASSERT_MSG(aligned(p, a) && aligned(p, 16),
                          "aligned_alloc(%zu, %zu) = %p", a, sizes[i], p);
            TU_ASSERT(malloc_usable_size(p) >= sizes[i]);
            memset(p, 0x11, sizes[i]);
            free(p);
            p = memalign(a, sizes[i]);
            TU_ASSERT_MSG(p != NULL, "memalign(%zu, %zu)", a, sizes[i]);
            TU_ASSERT_MSG(aligned(p, a) && aligned(p, 16),
                          "memalign(%zu, %zu) = %p", a, sizes[i], p);
            TU_ASSERT(malloc_usable_size(p) >= sizes[i]);
            memset(p, 0x22, sizes[i]);
            free(p);
        }
    }
    /* aligned_alloc: an alignment that is not a power of two gives NULL +
     * EINVAL (CONTRACT.md).  memalign follows glibc: such an alignment is
     * rounded up to the next power of two, only an alignment above
     * SIZE_MAX/2 + 1 is EINVAL. */
    const size_t badal[] = {3, 24, 100, 4097, v_half + 2};
    for (size_t i = 0; i < sizeof badal / sizeof badal[0]; i++) {
        errno = 0;
        void *p = aligned_alloc(badal[i], 64);
        TU_ASSERT_MSG(p == NULL && errno == EINVAL,
                      "aligned_alloc(%zu, 64) = %p errno %d", badal[i], p,
                      errno);
    }
    const size_t roundal[] = {3, 24, 100, 4097, 40000};
    for (size_t i = 0; i < sizeof roundal / sizeof roundal[0]; i++) {
        size_t want = 1;
        while (want < roundal[i])
            want <<= 1;
        void *p = memalign(roundal[i], 64);
        TU_ASSERT_MSG(p != NULL && aligned(p, want),
                      "memalign(%zu, 64) = %p, want %zu-aligned", roundal[i],
                      p, want);
        TU_ASSERT(malloc_usable_size(p) >= 64);
        free(p);
    }
    errno = 0;
    ck_assert_ptr_null(memalign(v_half + 2, 64));
    ck_assert_int_eq(errno, EINVAL);
    /* impossible sizes: NULL + ENOMEM, no overflow when rounding */
    const size_t bigsz[] = {v_size_max, v_size_max - 100, v_ptrdiff_max_1};
    for (size_t i = 0; i < sizeof bigsz / sizeof bigsz[0]; i++) {
        for (int sh = 4; sh <= MAX_ALIGN_SHIFT; sh += 11) {
            errno = 0;
            void *p = aligned_alloc((size_t)1 << sh, bigsz[i]);
            TU_ASSERT_MSG(p == NULL && errno == ENOMEM,
                          "aligned_alloc(%zu, %zu) = %p errno %d",
                          (size_t)1 << sh, bigsz[i], p, errno);
            errno = 0;
            p = memalign((size_t)1 << sh, bigsz[i]);
            TU_ASSERT_MSG(p == NULL && errno == ENOMEM,
                          "memalign(%zu, %zu) = %p errno %d", (size_t)1 << sh,
                          bigsz[i], p, errno);
        }
    }
}
END_TEST

START_TEST(t_valloc_pvalloc)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    const size_t sizes[] = {0, 1, 100, 4095, 4096, 4097, 100000, 3 * TU_MIB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *p = valloc(sizes[i]);
        TU_ASSERT_MSG(p != NULL, "valloc(%zu)", sizes[i]);
        TU_ASSERT_MSG(aligned(p, pg), "valloc(%zu) = %p", sizes[i], p);
        TU_ASSERT(malloc_usable_size(p) >= sizes[i]);
        memset(p, 1, sizes[i]);
        free(p);
        p = pvalloc(sizes[i]);
        TU_ASSERT_MSG(p != NULL, "pvalloc(%zu)", sizes[i]);
        TU_ASSERT_MSG(aligned(p, pg), "pvalloc(%zu) = %p", sizes[i], p);
        size_t rounded = (sizes[i] + pg - 1) & ~(pg - 1);
        if (rounded == 0)
            rounded = pg; /* glibc: pvalloc(0) gives one page */
        TU_ASSERT_MSG(malloc_usable_size(p) >= rounded,
                      "pvalloc(%zu): usable %zu < %zu", sizes[i],
                      malloc_usable_size(p), rounded);
        memset(p, 2, rounded);
        free(p);
    }
    const size_t bigsz[] = {v_size_max, v_size_max - 1, v_size_max - pg,
                            v_ptrdiff_max_1};
    for (size_t i = 0; i < sizeof bigsz / sizeof bigsz[0]; i++) {
        errno = 0;
        void *p = valloc(bigsz[i]);
        TU_ASSERT_MSG(p == NULL && errno == ENOMEM, "valloc(%zu) = %p",
                      bigsz[i], p);
        errno = 0;
        p = pvalloc(bigsz[i]); /* rounding up must not wrap around */
        TU_ASSERT_MSG(p == NULL && errno == ENOMEM, "pvalloc(%zu) = %p",
                      bigsz[i], p);
    }
}
END_TEST

START_TEST(t_free_sized_variants)
{
    static size_t sizes[4096];
    size_t n = build_sizes(sizes, 4096, 3 * TU_MIB);
    for (size_t i = 0; i < n; i++) {
        void *p = malloc(sizes[i]);
        TU_ASSERT((p) != NULL);
        free_sized(p, sizes[i]);
        p = calloc(1, sizes[i]);
        TU_ASSERT((p) != NULL);
        free_sized(p, sizes[i]);
        size_t a = (size_t)1 << (i % 14);
        p = aligned_alloc(a, sizes[i]);
        TU_ASSERT((p) != NULL);
        free_aligned_sized(p, a, sizes[i]);
    }
}
END_TEST

/* Many live blocks of mixed sizes: none may overlap another. */
/* A block its thread frees is the next one of its size handed out (while
 * still in the cache), including between other allocations and frees:
 * a structure built while temporaries come and go is laid out densely. */
START_TEST(t_free_then_malloc_reuses)
{
    static const size_t sizes[] = {16, 40, 64, 200, 1000, 3000, 20000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        void *keep = malloc(n);
        void *tmp = malloc(n);
        TU_ASSERT(keep != NULL && tmp != NULL);
        free(tmp);
        void *next = malloc(n);
        ck_assert_ptr_eq(next, tmp);
        /* LIFO: the latest free comes back first */
        free(keep);
        free(next);
        void *a = malloc(n), *b = malloc(n);
        ck_assert_ptr_eq(a, next);
        ck_assert_ptr_eq(b, keep);
        free(a);
        free(b);
    }
}
END_TEST

START_TEST(t_many_live_blocks)
{
    enum { N = 60000 };
    static void *p[N];
    static size_t sz[N];
    uint64_t rng = 88172645463325252ull;
    for (int i = 0; i < N; i++) {
        uint64_t r = tu_rand(&rng);
        sz[i] = (r % 8 == 0) ? (r >> 8) % 20000 : (r >> 8) % 300;
        p[i] = malloc(sz[i]);
        TU_ASSERT((p[i]) != NULL);
        tu_fill(p[i], sz[i], (uint64_t)i);
    }
    /* free a random half, reallocate, then verify everything */
    for (int i = 0; i < N; i++) {
        if (tu_rand(&rng) & 1) {
            TU_ASSERT(tu_check(p[i], sz[i], (uint64_t)i) < 0);
            free(p[i]);
            sz[i] = tu_rand(&rng) % 1000;
            p[i] = malloc(sz[i]);
            TU_ASSERT((p[i]) != NULL);
            tu_fill(p[i], sz[i], (uint64_t)i);
        }
    }
    for (int i = 0; i < N; i++) {
        long bad = tu_check(p[i], sz[i], (uint64_t)i);
        TU_ASSERT_MSG(bad < 0, "block %d (%zu bytes at %p) corrupted at %ld",
                      i, sz[i], p[i], bad);
        free(p[i]);
    }
}
END_TEST

/* ================================================================== */
/* emma_* API                                                         */

START_TEST(t_emma_alloc_alignments)
{
    for (int sh = 0; sh <= MAX_ALIGN_SHIFT; sh++) {
        size_t a = (size_t)1 << sh;
        const size_t sizes[] = {0, 1, a > 1 ? a - 1 : 1, a, a + 1,
                                a + a / 2, 100, 5000, 300000};
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            size_t s = sizes[i];
            if (a >= 16 * TU_MIB && s > a + 1 && i != 1)
                continue;
            void *p = emma_alloc(s, a);
            TU_ASSERT_MSG(p != NULL, "emma_alloc(%zu, %zu) failed", s, a);
            TU_ASSERT_MSG(aligned(p, a), "emma_alloc(%zu, %zu) = %p", s, a,
                          p);
            TU_ASSERT(emma_owns(p));
            TU_ASSERT_MSG(emma_usable_size(p) >= s,
                          "emma_usable_size(emma_alloc(%zu, %zu)) = %zu", s, a,
                          emma_usable_size(p));
            if (s) {
                volatile unsigned char *b = p;
                b[0] = 0xaa;
                b[s - 1] = 0xbb;
                b[s / 2] = 0xcc;
                if (s <= 300000)
                    tu_fill(p, s, s ^ a);
                if (s <= 300000)
                    TU_ASSERT(tu_check(p, s, s ^ a) < 0);
            }
            emma_dealloc(p, s, a);
        }
    }
}
END_TEST

START_TEST(t_emma_alloc_zero_size)
{
    enum { N = 300 };
    static void *p[N];
    for (int i = 0; i < N; i++) {
        size_t a = (size_t)1 << (i % 13);
        p[i] = emma_alloc(0, a);
        TU_ASSERT_MSG(p[i] != NULL, "emma_alloc(0, %zu) = NULL", a);
        TU_ASSERT(aligned(p[i], a));
        for (int j = 0; j < i; j++)
            TU_ASSERT_MSG(p[i] != p[j], "emma_alloc(0, ..) returned %p twice",
                          p[i]);
    }
    for (int i = 0; i < N; i++)
        emma_dealloc(p[i], 0, (size_t)1 << (i % 13));
    void *z = emma_alloc_zeroed(0, 8);
    TU_ASSERT((z) != NULL);
    emma_dealloc(z, 0, 8);
}
END_TEST

START_TEST(t_emma_alloc_impossible)
{
    const size_t bad[] = {v_size_max, v_ptrdiff_max_1, v_ptrdiff_max,
                          v_size_max - 4095, v_half + 1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (int sh = 0; sh <= MAX_ALIGN_SHIFT; sh += 5) {
            TU_ASSERT_MSG(emma_alloc(bad[i], (size_t)1 << sh) == NULL,
                          "emma_alloc(%zu, %zu) != NULL", bad[i],
                          (size_t)1 << sh);
            TU_ASSERT_MSG(emma_alloc_zeroed(bad[i], (size_t)1 << sh) == NULL,
                          "emma_alloc_zeroed(%zu, %zu) != NULL", bad[i],
                          (size_t)1 << sh);
        }
    }
}
END_TEST

START_TEST(t_emma_realloc)
{
    for (int sh = 0; sh <= 22; sh += 3) {
        size_t a = (size_t)1 << sh;
        size_t cur = 1;
        unsigned char *p = emma_alloc(cur, a);
        TU_ASSERT((p) != NULL);
        tu_fill(p, cur, a);
        const size_t steps[] = {7, 64, 1000, 1000, 40000, 3 * TU_MIB,
                                70 * 1000, 2,   9 * TU_MIB, 16, 1, 33};
        for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
            size_t ns = steps[i];
            unsigned char *q = emma_realloc(p, cur, a, ns);
            TU_ASSERT_MSG(q != NULL, "emma_realloc(%zu -> %zu, align %zu)",
                          cur, ns, a);
            TU_ASSERT_MSG(aligned(q, a), "emma_realloc lost alignment %zu", a);
            TU_ASSERT(emma_usable_size(q) >= ns);
            size_t keep = cur < ns ? cur : ns;
            long bad = tu_check(q, keep, a);
            TU_ASSERT_MSG(bad < 0, "emma_realloc %zu -> %zu lost byte %ld",
                          cur, ns, bad);
            tu_fill(q, ns, a);
            p = q;
            cur = ns;
        }
        /* failure leaves the block intact */
        ck_assert_ptr_null(emma_realloc(p, cur, a, v_half));
        ck_assert_ptr_null(emma_realloc(p, cur, a, v_size_max));
        TU_ASSERT(tu_check(p, cur, a) < 0);
        emma_dealloc(p, cur, a);
    }
}
END_TEST

START_TEST(t_emma_free_any)
{
    const size_t sizes[] = {0, 1, 17, 256, 3000, 65536, 500000, 3 * TU_MIB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (int sh = 0; sh <= 16; sh += 4) {
            void *p = emma_alloc(sizes[i], (size_t)1 << sh);
            TU_ASSERT((p) != NULL);
            TU_ASSERT(emma_usable_size(p) >= sizes[i]);
            emma_free(p);
        }
        void *p = malloc(sizes[i]);
        TU_ASSERT(emma_usable_size(p) >= sizes[i]);
        emma_free(p);
        p = memalign(4096, sizes[i]);
        emma_free(p);
        p = calloc(1, sizes[i]);
        emma_free(p);
    }
}
END_TEST

START_TEST(t_emma_owns)
{
    int local = 0;
    static int global_var;
    void *m = malloc(10), *e = emma_alloc(100, 4096), *h = malloc(5 * TU_MIB);
    void *a = emma_alloc(10, 16 * TU_MIB);
    TU_ASSERT(emma_owns(m));
    TU_ASSERT(emma_owns(e));
    TU_ASSERT(emma_owns((char *)e + 99));
    TU_ASSERT(emma_owns(h));
    TU_ASSERT(emma_owns((char *)h + 5 * TU_MIB - 1));
    TU_ASSERT(emma_owns(a));
    ck_assert_int_eq(emma_owns(&local), 0);
    ck_assert_int_eq(emma_owns(&global_var), 0);
    ck_assert_int_eq(emma_owns((void *)emma_owns), 0);
    ck_assert_int_eq(emma_owns(NULL), 0);
    /* any value at all must be safe */
    const uintptr_t odd[] = {1, 4096, 0x7fffffffffffull, 0x800000000000ull,
                             0x8000000000000000ull, UINTPTR_MAX,
                             UINTPTR_MAX - 4095, 0xffff800000000000ull};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++)
        ck_assert_int_eq(emma_owns((void *)odd[i]), 0);
    /* memory mapped behind emma's back is not emma's */
    void *mm = mmap(NULL, 8 * TU_MIB, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    TU_ASSERT(mm != MAP_FAILED);
    ck_assert_int_eq(emma_owns(mm), 0);
    ck_assert_int_eq(emma_owns((char *)mm + 4 * TU_MIB), 0);
    munmap(mm, 8 * TU_MIB);
    free(m);
    emma_dealloc(e, 100, 4096);
    free(h);
    emma_dealloc(a, 10, 16 * TU_MIB);
}
END_TEST

START_TEST(t_emma_trim)
{
    enum { N = 20000 };
    static void *p[N];
    emma_trim(); /* on a fresh thread state too */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            p[i] = malloc((size_t)(i % 500) * 8 + round);
            TU_ASSERT((p[i]) != NULL);
            tu_fill(p[i], (size_t)(i % 500) * 8 + round, i);
        }
        /* free every other block, trim, check the survivors */
        for (int i = 0; i < N; i += 2)
            free(p[i]);
        emma_trim();
        for (int i = 1; i < N; i += 2)
            TU_ASSERT(tu_check(p[i], (size_t)(i % 500) * 8 + round, i) < 0);
        for (int i = 1; i < N; i += 2)
            free(p[i]);
        emma_trim();
        emma_trim();
    }
    void *q = calloc(1, 100000);
    TU_ASSERT(tu_all_zero(q, 100000));
    free(q);
}
END_TEST

START_TEST(t_emma_version)
{
    const char *v = emma_version();
    TU_ASSERT((v) != NULL);
    ck_assert_str_eq(v, EMMA_VERSION_STRING);
    ck_assert_str_eq(v, PACKAGE_VERSION);
    unsigned a, b, c;
    char tail;
    ck_assert_int_eq(sscanf(v, "%u.%u.%u%c", &a, &b, &c, &tail), 3);
    ck_assert_uint_eq(a, EMMA_VERSION_MAJOR);
    ck_assert_uint_eq(b, EMMA_VERSION_MINOR);
    ck_assert_uint_eq(c, EMMA_VERSION_PATCH);
}
END_TEST

/* ================================================================== */
/* Huge blocks: the mapping cache, and no transparent huge pages */

/* A freed huge mapping is reused by the next huge request it can hold
 * (also one asking for a different alignment), from any thread; the block
 * gets what it asked for, and the rest of the mapping stays reserved, so
 * the block grows in place and a later bigger request fits it too. */
START_TEST(t_huge_mapping_reused)
{
    const size_t big = 3 * TU_MIB / 2, small = 5 * TU_MIB / 4, align = 2 * TU_MIB;
    uint8_t *p = emma_alloc(big, align);
    TU_ASSERT(p != NULL && aligned(p, align));
    memset(p, 0x41, big);
    emma_dealloc(p, big, align);
    uint8_t *q = emma_alloc(small, align);
    ck_assert_ptr_eq(q, p);
    TU_ASSERT(emma_usable_size(q) >= small);
    uint8_t *g = emma_realloc(q, small, align, big);
    ck_assert_ptr_eq(g, p);
    emma_dealloc(g, big, align);
    uint8_t *r = emma_alloc(big, align);
    ck_assert_ptr_eq(r, p);
    emma_dealloc(r, big, align);
}
END_TEST

/* The VmFlags line of the mapping holding p in /proc/self/smaps ("" when
 * not found). */
static void vm_flags_of(const void *p, char *out, size_t cap)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int inside = 0;
    out[0] = '\0';
    TU_ASSERT(f != NULL);
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            inside = (uintptr_t)p >= lo && (uintptr_t)p < hi;
        else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(out, cap, "%s", line + 8);
            break;
        }
    }
    fclose(f);
}

/* No huge block is advised to use transparent huge pages, neither a fresh
 * one nor one that realloc grows past 8 MiB (where emma used to advise
 * it): with THP defrag at `madvise` an advised fault may compact memory,
 * and bench realloc-grow ran 1.3x slower, its runs spread by 125 %. */
START_TEST(t_huge_realloc_no_thp)
{
    char flags[256];
    uint8_t *fresh = malloc(32 * TU_MIB);
    TU_ASSERT(fresh != NULL);
    fresh[0] = 1;
    vm_flags_of(fresh, flags, sizeof flags);
    TU_ASSERT_MSG(flags[0] != '\0', "no smaps entry for %p", (void *)fresh);
    TU_ASSERT_MSG(strstr(flags, " hg") == NULL, "fresh block advised: %s", flags);
    free(fresh);

    uint8_t *v = malloc(2 * TU_MIB);
    TU_ASSERT(v != NULL);
    memset(v, 7, 2 * TU_MIB);
    for (size_t n = 4 * TU_MIB; n <= 16 * TU_MIB; n *= 2) {
        v = realloc(v, n);
        TU_ASSERT(v != NULL);
        ck_assert_int_eq(v[n / 2 - 1], 7);
        memset(v + n / 2, 7, n / 2);
    }
    vm_flags_of(v, flags, sizeof flags);
    TU_ASSERT_MSG(flags[0] != '\0', "no smaps entry for %p", (void *)v);
    TU_ASSERT_MSG(strstr(flags, " hg") == NULL, "grown block advised: %s", flags);
    free(v);
}
END_TEST

/* ================================================================== */
/* Out of memory for real (RLIMIT_AS), not just impossible sizes       */

/* Runs in a child with a 256 MiB address-space budget.  Returns 0 or the
 * number of the first broken promise. */
static int oom_child(void)
{
    enum { CAP = 1 << 21 };
    static const size_t sizes[] = {100, 5000, 40000, 300000, 3 << 20};
    void **p = mmap(NULL, CAP * sizeof(void *), PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    size_t *sz = mmap(NULL, CAP * sizeof(size_t), PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || sz == MAP_FAILED)
        return 100;
    void *keep = malloc(64); /* a block to realloc when memory is gone */
    if (!keep)
        return 101;
    memset(keep, 0x5c, 64);
    struct rlimit rl;
    rl.rlim_cur = rl.rlim_max = tu_statm(0) + 256 * TU_MIB;
    if (setrlimit(RLIMIT_AS, &rl) != 0)
        return 102;
    size_t n = 0, nulls = 0;
    /* allocate every kind of block until each kind fails a few times */
    for (size_t i = 0; nulls < 40 && n < CAP; i++) {
        size_t s = sizes[i % 5];
        errno = 0;
        void *q = (i & 1) ? malloc(s) : emma_alloc(s, 16);
        if (!q) {
            if (errno != ENOMEM && (i & 1))
                return 1; /* NULL without ENOMEM */
            nulls++;
            continue;
        }
        memset(q, (int)(n & 0xff), s < 64 ? s : 64);
        p[n] = q;
        sz[n++] = s;
    }
    if (nulls < 40)
        return 2; /* never ran out: the limit did not bite */
    /* memory is exhausted now: every way to ask for a lot fails cleanly */
    errno = 0;
    if (realloc(keep, 64 << 20) != NULL || errno != ENOMEM)
        return 3;
    for (int k = 0; k < 64; k++)
        if (((unsigned char *)keep)[k] != 0x5c)
            return 4; /* the failed realloc damaged the block */
    errno = 0;
    if (calloc(1, 64 << 20) != NULL || errno != ENOMEM)
        return 5;
    if (emma_alloc(64 << 20, 4096) != NULL || emma_alloc_zeroed(64 << 20, 16))
        return 6;
    void *m = (void *)0x1234;
    if (posix_memalign(&m, 64, 64 << 20) != ENOMEM || m != (void *)0x1234)
        return 7;
    errno = 0;
    if (aligned_alloc(1 << 20, 64 << 20) != NULL || errno != ENOMEM)
        return 8;
    /* everything allocated is intact */
    for (size_t i = 0; i < n; i++) {
        unsigned char *b = p[i];
        for (size_t k = 0; k < (sz[i] < 64 ? sz[i] : 64); k++)
            if (b[k] != (unsigned char)(i & 0xff))
                return 9;
    }
    /* give it all back: big requests work again (after a trim if the
     * allocator kept freed memory mapped) */
    for (size_t i = 0; i < n; i++)
        if (i & 1)
            free(p[i]);
        else
            emma_dealloc(p[i], sz[i], 16);
    void *big = malloc(100 << 20);
    if (!big) {
        emma_trim();
        big = malloc(100 << 20);
    }
    if (!big)
        return 10; /* freed memory cannot be used again */
    memset(big, 1, 100 << 20);
    free(big);
    void *small = malloc(100);
    if (!small)
        return 11;
    free(small);
    free(keep);
    return 0;
}

START_TEST(t_out_of_memory)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(oom_child());
    tu_wait_exit0(pid, "out-of-memory child (see oom_child() for the code)");
}
END_TEST

static Suite *api_suite(void)
{
    Suite *s = suite_create("api");
    TCase *m = tcase_create("malloc");
    tcase_set_timeout(m, 120);
    tcase_add_test(m, t_malloc_is_emma);
    tcase_add_test(m, t_malloc_sizes_align_usable);
    tcase_add_test(m, t_malloc_zero_unique);
    tcase_add_test(m, t_malloc_impossible);
    tcase_add_test(m, t_calloc_overflow);
    tcase_add_test(m, t_calloc_zeroes_reused);
    tcase_add_test(m, t_reallocarray);
    tcase_add_test(m, t_realloc_keeps_contents);
    tcase_add_test(m, t_realloc_failure_keeps_block);
    tcase_add_test(m, t_realloc_null_and_zero);
    tcase_add_test(m, t_free_null_and_errno);
    tcase_add_test(m, t_posix_memalign);
    tcase_add_test(m, t_aligned_alloc_memalign);
    tcase_add_test(m, t_valloc_pvalloc);
    tcase_add_test(m, t_free_sized_variants);
    tcase_add_test(m, t_many_live_blocks);
    tcase_add_test(m, t_free_then_malloc_reuses);
    suite_add_tcase(s, m);

    TCase *e = tcase_create("emma");
    tcase_set_timeout(e, 120);
    tcase_add_test(e, t_emma_alloc_alignments);
    tcase_add_test(e, t_emma_alloc_zero_size);
    tcase_add_test(e, t_emma_alloc_impossible);
    tcase_add_test(e, t_emma_realloc);
    tcase_add_test(e, t_emma_free_any);
    tcase_add_test(e, t_emma_owns);
    tcase_add_test(e, t_emma_trim);
    tcase_add_test(e, t_emma_version);
    tcase_add_test(e, t_huge_mapping_reused);
    tcase_add_test(e, t_huge_realloc_no_thp);
    suite_add_tcase(s, e);

    TCase *o = tcase_create("oom");
    tcase_set_timeout(o, 120);
    tcase_add_test(o, t_out_of_memory);
    suite_add_tcase(s, o);
    return s;
}

int main(void)
{
    return tu_run(api_suite());
}
