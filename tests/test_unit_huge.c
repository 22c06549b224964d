/* White-box tests of huge.c: huge blocks at every alignment, their headers
 * in the address map, realloc in place and by moving, unmapping on free.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Linked against libemma_core.la; this program's malloc is glibc's.
 */
#include "testutil.h"

#include "internal.h"
#include "policy.h"

START_TEST(t_huge_blocks)
{
    const size_t sizes[] = {0, 1, LARGE_MAX + 1, 3 << 20, SEGMENT_SIZE,
                            SEGMENT_SIZE + 1, 33 << 20};
    for (size_t a = 16; a <= ((size_t)64 << 20); a *= 4) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            size_t s = sizes[i];
            uint8_t *p = huge_alloc(s, a, false, NULL);
            TU_ASSERT_MSG(p != NULL, "huge_alloc(%zu, %zu)", s, a);
            TU_ASSERT_MSG((uintptr_t)p % a == 0 && (uintptr_t)p % OS_PAGE_SIZE == 0,
                          "huge_alloc(%zu, %zu) = %p", s, a, (void *)p);
            segment_t *seg = segment_of(p);
            ck_assert_int_eq(seg->kind, KIND_HUGE);
            ck_assert_ptr_eq(page_of(seg, p), &seg->pages[0]);
            ck_assert_ptr_eq(seg->pages[0].start, p);
            ck_assert_uint_eq(seg->cookie, (uintptr_t)seg ^ os_secret());
            TU_ASSERT(huge_usable(seg, p) >= s);
            ck_assert_uint_eq(addrmap_lookup(p), CHUNK_HUGE); /* marked apart from segments */
            if (s > 1) {
                ck_assert_uint_ne(addrmap_lookup(p + s - 1), CHUNK_NONE);
                tu_fill(p + s - 4096 * (s > 4096), s > 4096 ? 4096 : s, s);
            }
            p[0] = 0x11;
            /* grow and shrink keep the block's start contents */
            size_t ns = s * 3 + (5 << 20);
            uint8_t *q = huge_realloc(seg, p, ns, NULL);
            TU_ASSERT_MSG(q != NULL, "huge_realloc(%zu -> %zu)", s, ns);
            TU_ASSERT((uintptr_t)q % a == 0);
            ck_assert_int_eq(q[0], 0x11);
            if (s > 1)
                TU_ASSERT(tu_check(q + s - 4096 * (s > 4096), s > 4096 ? 4096 : s, s) < 0);
            segment_t *qs = segment_of(q);
            TU_ASSERT(huge_usable(qs, q) >= ns);
            ck_assert_uint_ne(addrmap_lookup(q + ns - 1), CHUNK_NONE);
            q[ns - 1] = 1;
            uint8_t *r = huge_realloc(qs, q, LARGE_MAX + 100, NULL);
            TU_ASSERT((r) != NULL);
            ck_assert_int_eq(r[0], 0x11);
            segment_t *rs = segment_of(r);
            TU_ASSERT(huge_usable(rs, r) >= LARGE_MAX + 100);
            size_t end_off = (size_t)(r - (uint8_t *)rs) + huge_usable(rs, r);
            huge_free(rs); /* to the huge cache, still mapped */
            huge_cache_release(UINT64_MAX, UINT64_MAX);
            ck_assert_uint_eq(addrmap_lookup(r), CHUNK_NONE);
            TU_ASSERT_MSG(tu_resident_pages((uint8_t *)rs + end_off - 4096, 4096) < 0,
                          "huge block still mapped after huge_free");
        }
    }
    ck_assert_ptr_null(huge_alloc(SIZE_MAX, 16, false, NULL));
    ck_assert_ptr_null(huge_alloc(MAX_REQUEST + 1, 16, false, NULL));
    ck_assert_ptr_null(huge_alloc(1 << 20, SIZE_MAX / 2 + 1, false, NULL));
}
END_TEST

/* Blocks that are huge for their alignment only (bench aligned: 2 MiB
 * aligned, 1 KiB-1 MiB): a small one takes the cached mapping that had a
 * small block (best fit), not the most resident one, and a block reusing
 * a longer mapping keeps its short tail written whole resident (issue 14:
 * the tail was given back, and the next longer block faulted it in). */
START_TEST(t_huge_cache_best_fit)
{
    const size_t align = (size_t)2 << 20, big = (size_t)900 << 10, small = (size_t)100 << 10;
    uint8_t *a = huge_alloc(big, align, false, NULL), *b = huge_alloc(small, align, false, NULL);
    TU_ASSERT(a != NULL && b != NULL);
    memset(a, 0x5a, big);
    memset(b, 0x5a, small);
    segment_t *sa = segment_of(a), *sb = segment_of(b);
    huge_free(sa);
    huge_free(sb);
    uint8_t *c = huge_alloc((size_t)50 << 10, align, false, NULL);
    TU_ASSERT(c != NULL);
    TU_ASSERT_MSG(segment_of(c) == sb, "a 50 KiB block took the mapping of the %s one",
                  segment_of(c) == sa ? "900 KiB" : "neither");
    uint8_t *d = huge_alloc(small, align, false, NULL);
    TU_ASSERT(d != NULL);
    ck_assert_ptr_eq(segment_of(d), sa);
    /* the 800 KiB past d's end, written whole by a, stay resident */
    long tail = tu_resident_pages(d + small + OS_PAGE_SIZE, big - small - 2 * OS_PAGE_SIZE);
    TU_ASSERT_MSG(tail == (long)((big - small - 2 * OS_PAGE_SIZE) / OS_PAGE_SIZE),
                  "%ld pages of the short tail resident", tail);
    huge_free(segment_of(c));
    huge_free(segment_of(d));
    huge_cache_release(UINT64_MAX, UINT64_MAX);
}
END_TEST

static long minor_faults(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

/* Big blocks written whole and replaced (bench/bigbuf whole): a block
 * whose reused mapping falls short takes the resident pages of other
 * cached mappings (moved, not faulted in), keeps its contents when realloc
 * moves it later, and the whole segments past a short block in a long
 * cached mapping stay cached, resident, for the next request (issue 14). */
START_TEST(t_huge_gather)
{
    const size_t mib = (size_t)1 << 20;
    size_t cold = policy_huge_cold_bytes;
    policy_huge_cold_bytes = policy_free_bound; /* as while blocks are reused */
    huge_cache_release(UINT64_MAX, UINT64_MAX);
    uint8_t *a = huge_alloc(12 * mib, 16, false, NULL), *b = huge_alloc(10 * mib, 16, false, NULL);
    TU_ASSERT(a != NULL && b != NULL);
    memset(a, 1, 12 * mib);
    memset(b, 2, 10 * mib);
    huge_free(segment_of(a));
    huge_free(segment_of(b));
    long f0 = minor_faults();
    uint8_t *c = huge_alloc(20 * mib, 16, false, NULL);
    long faults = minor_faults() - f0;
    TU_ASSERT(c != NULL);
    long res = tu_resident_pages(c, 20 * mib);
    TU_ASSERT_MSG(res == (long)(20 * mib / OS_PAGE_SIZE), "%ld of %zu pages resident", res,
                  20 * mib / OS_PAGE_SIZE);
    /* 8 MiB came from b: without it, 2048 pages faulted in */
    TU_ASSERT_MSG(faults < 512, "%ld page faults for a 20 MiB block", faults);
    tu_fill(c, 20 * mib, 7);
    segment_t *cs = segment_of(c);
    uint8_t *d = huge_realloc(cs, c, 60 * mib, NULL); /* past its reserve: moves */
    TU_ASSERT(d != NULL);
    TU_ASSERT_MSG(tu_check(d, 20 * mib, 7) < 0, "contents lost at %ld", tu_check(d, 20 * mib, 7));
    memset(d + 20 * mib, 3, 40 * mib);
    huge_free(segment_of(d));
    /* a 12 MiB block in the 28 MiB mapping of a 24 MiB one: the 12 MiB
     * past its segments stay cached, resident */
    huge_cache_release(UINT64_MAX, UINT64_MAX);
    uint8_t *e = huge_alloc(24 * mib, 16, false, NULL);
    TU_ASSERT(e != NULL);
    memset(e, 4, 24 * mib);
    huge_free(segment_of(e));
    uint8_t *f = huge_alloc(12 * mib, 16, false, NULL);
    ck_assert_ptr_eq(f, e);
    size_t count, bytes;
    huge_cache_stats(&count, &bytes);
    ck_assert_uint_eq(count, 1);
    TU_ASSERT_MSG(bytes >= 8 * mib, "%zu bytes cached", bytes);
    res = tu_resident_pages(e + 16 * mib, 8 * mib - OS_PAGE_SIZE);
    TU_ASSERT_MSG(res == (long)((8 * mib - OS_PAGE_SIZE) / OS_PAGE_SIZE),
                  "%ld pages of the split tail resident", res);
    f0 = minor_faults();
    uint8_t *g = huge_alloc(7 * mib, 16, false, NULL);
    faults = minor_faults() - f0;
    ck_assert_ptr_eq(g, e + 16 * mib);
    TU_ASSERT_MSG(faults < 128, "%ld page faults for a 7 MiB block", faults);
    ck_assert_int_eq(g[7 * mib - 1], 4);
    huge_free(segment_of(f));
    huge_free(segment_of(g));
    huge_cache_release(UINT64_MAX, UINT64_MAX);
    policy_huge_cold_bytes = cold;
}
END_TEST

TU_MAIN("unit_huge", "huge", 60, t_huge_blocks, t_huge_cache_best_fit, t_huge_gather)
