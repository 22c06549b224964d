/* White-box tests of huge.c: huge blocks at every alignment, their headers
 * in the address map, realloc in place and by moving, unmapping on free.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Linked against libemma_core.la; this program's malloc is glibc's.
 */
#include "testutil.h"

#include "internal.h"
#include "observe.h"
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
            TU_ASSERT_MSG((uintptr_t)p % a == 0 && (uintptr_t)p % 64 == 0,
                          "huge_alloc(%zu, %zu) = %p", s, a, (void *)p);
            segment_t *seg = segment_of(p);
            /* a small alignment: the block shares the header's page (one
             * page touched for a block whose start is written) */
            if (a <= 256)
                ck_assert_uint_eq((uintptr_t)p - (uintptr_t)seg, 256);
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

/* The OS pages that n bytes from p touch (a huge block starts inside its
 * header's page). */
static long pages_spanned(const void *p, size_t n)
{
    uintptr_t lo = (uintptr_t)p & ~(uintptr_t)(OS_PAGE_SIZE - 1);
    return (long)(((uintptr_t)p + n - lo + OS_PAGE_SIZE - 1) / OS_PAGE_SIZE);
}

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
    TU_ASSERT_MSG(res == pages_spanned(c, 20 * mib), "%ld of %ld pages resident", res,
                  pages_spanned(c, 20 * mib));
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
    TU_ASSERT_MSG(res == pages_spanned(e + 16 * mib, 8 * mib - OS_PAGE_SIZE),
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

/* A zeroed block from a cached mapping whose pages were given back: the
 * bytes of the old block in the header's page, which stays, read as zero
 * too (the block starts in that page). */
START_TEST(t_huge_zeroed_reuse)
{
    const size_t size = (size_t)2 << 20;
    huge_cache_release(UINT64_MAX, UINT64_MAX);
    uint8_t *p = huge_alloc(size, 16, false, NULL);
    TU_ASSERT(p != NULL);
    memset(p, 0xab, size);
    huge_free(segment_of(p));
    huge_cache_release(UINT64_MAX, 0); /* pages given back, mapping kept */
    uint8_t *q = huge_alloc(size, 16, true, NULL);
    TU_ASSERT(q != NULL);
    ck_assert_ptr_eq(q, p);
    for (size_t i = 0; i < size; i += i < OS_PAGE_SIZE ? 1 : OS_PAGE_SIZE)
        TU_ASSERT_MSG(q[i] == 0, "byte %zu of a zeroed block is %d", i, q[i]);
    huge_free(segment_of(q));
    huge_cache_release(UINT64_MAX, UINT64_MAX);
}
END_TEST

/* Many big blocks freed that nothing replaces (bench maps): once the
 * cache is full, and cold, the next ones are not measured nor cached but
 * given back in runs of neighbours, a few munmap calls for all, counted
 * under the bound meanwhile; a shrink gives the run back first. */
START_TEST(t_huge_spill)
{
    enum { N = 96 };
    const size_t size = (size_t)3 << 19;
    huge_cache_release(UINT64_MAX, UINT64_MAX);
    uint64_t t0 = now_ticks();
    while (now_ticks() - t0 <= policy_decay_ticks) /* no reuse lately */
        usleep(10000);
    uint8_t *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = huge_alloc(size, 16, false, NULL);
        TU_ASSERT(p[i] != NULL);
        p[i][0] = (uint8_t)i;
    }
    struct os_counters c0, c1;
    size_t r0 = policy_resident();
    os_counters_read(&c0);
    for (int i = 0; i < N; i++)
        huge_free(segment_of(p[i]));
    os_counters_read(&c1);
    size_t count, bytes;
    huge_cache_stats(&count, &bytes);
    TU_ASSERT_MSG(c1.munmap_calls - c0.munmap_calls <= N / 4, "%zu munmap calls for %d blocks",
                  c1.munmap_calls - c0.munmap_calls, N);
    TU_ASSERT_MSG(policy_resident() - r0 <= policy_free_bound, "%zu bytes counted free",
                  policy_resident() - r0);
    /* the first ones freed fill the cache and stay there; the last one
     * freed waits in the spill, which a shrink gives back first */
    ck_assert_uint_eq(addrmap_lookup(p[0]), CHUNK_HUGE);
    ck_assert_uint_eq(addrmap_lookup(p[N - 1]), CHUNK_HUGE);
    TU_ASSERT(huge_cache_shrink(UINT64_MAX, 1) > 0);
    ck_assert_uint_eq(addrmap_lookup(p[N - 1]), CHUNK_NONE);
    ck_assert_uint_eq(addrmap_lookup(p[0]), CHUNK_HUGE);
    size_t count2, bytes2;
    huge_cache_stats(&count2, &bytes2);
    TU_ASSERT_MSG(count2 < count && bytes2 < bytes, "%zu -> %zu cached", count, count2);
    huge_cache_release(UINT64_MAX, UINT64_MAX);
    ck_assert_uint_eq(addrmap_lookup(p[0]), CHUNK_NONE);
}
END_TEST

/* realloc shrinking a block written whole: the whole segments past its
 * new end are unmapped, their pages with them, not purged first; only the
 * rest of the last segment is purged. */
START_TEST(t_huge_shrink_unmaps_tail)
{
    const size_t mib = (size_t)1 << 20, small = (size_t)100 << 10;
    uint8_t *p = huge_alloc(20 * mib, 16, false, NULL);
    TU_ASSERT(p != NULL);
    tu_fill(p, 20 * mib, 9);
    struct os_counters c0, c1;
    os_counters_read(&c0);
    uint8_t *q = huge_realloc(segment_of(p), p, small, NULL);
    os_counters_read(&c1);
    ck_assert_ptr_eq(q, p);
    TU_ASSERT_MSG(tu_check(q, small, 9) < 0, "contents lost");
    TU_ASSERT_MSG(c1.bytes_purged - c0.bytes_purged < SEGMENT_SIZE, "%zu bytes purged",
                  c1.bytes_purged - c0.bytes_purged);
    ck_assert_uint_eq(c1.munmap_calls - c0.munmap_calls, 1);
    TU_ASSERT(tu_resident_pages(q + SEGMENT_SIZE, 16 * mib) < 0); /* unmapped */
    long left = tu_resident_pages(q + small + OS_PAGE_SIZE, SEGMENT_SIZE - small - 2 * OS_PAGE_SIZE);
    ck_assert_int_eq(left, 0);
    huge_free(segment_of(q));
    huge_cache_release(UINT64_MAX, UINT64_MAX);
}
END_TEST

/* Fresh huge mappings of up to 8 MiB are carved from address space mapped
 * ahead, 32 MiB at a time: one mmap call for several blocks, and a zeroed
 * block reads as zeroes, also where it covers the header of an earlier
 * spare merged with the next one (3 + 7 + 7 + 7 MiB blocks leave 4 MiB of
 * the first spare, which the next, mapped just below, takes in). */
START_TEST(t_huge_spare)
{
    const size_t mib = (size_t)1 << 20;
    const size_t sizes[] = {3 * mib, 7 * mib, 7 * mib, 7 * mib, 7 * mib, 7 * mib};
    enum { N = sizeof sizes / sizeof sizes[0] };
    huge_cache_release(UINT64_MAX, UINT64_MAX);
    struct os_counters c0, c1, c2;
    os_counters_read(&c0);
    uint8_t *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = huge_alloc(sizes[i], 16, i >= 4, NULL);
        TU_ASSERT(p[i] != NULL);
    }
    os_counters_read(&c1);
    TU_ASSERT_MSG(c1.mmap_calls - c0.mmap_calls <= 3, "%zu mmap calls for %d blocks",
                  c1.mmap_calls - c0.mmap_calls, N);
    for (int i = 4; i < N; i++)
        for (size_t k = 0; k < sizes[i]; k++)
            if (p[i][k] != 0)
                ck_abort_msg("byte %zu of zeroed block %d is %d", k, i, p[i][k]);
    for (int i = 0; i < N; i++) {
        memset(p[i], i + 1, sizes[i]);
        huge_free(segment_of(p[i]));
    }
    huge_cache_release(UINT64_MAX, UINT64_MAX);
    os_counters_read(&c2);
    TU_ASSERT_MSG(c2.bytes_mapped <= c0.bytes_mapped, "%zu bytes still mapped, %zu before",
                  c2.bytes_mapped, c0.bytes_mapped);
}
END_TEST

TU_MAIN("unit_huge", "huge", 60, t_huge_blocks, t_huge_cache_best_fit, t_huge_gather,
        t_huge_zeroed_reuse, t_huge_spill, t_huge_shrink_unmaps_tail, t_huge_spare)
