/* White-box tests of sparse.c: the free OS pages inside sparse pages go
 * back to the kernel without losing a live block or handing out a purged
 * one twice.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Linked against libemma_core.la; this program's malloc is glibc's.  The
 * heap is driven directly (alloc_generic, heap_free_local), so the tests
 * behave the same with and without TLS.
 */
#include "unitheap.h"
#include "policy.h"

#include <sys/mman.h>

static bool resident(const void *p) { return tu_resident_pages(p, 1) == 1; }

/* Park the sparse pages behind each class's first page, as allocation
 * does when it passes over them (only parked pages are thinned out). */
static void park_sparse_pages(heap_t *h)
{
    for (unsigned c = 1; c < CLASS_COUNT; c++) {
        page_t *page = h->bins[c].first ? h->bins[c].first->next : NULL;
        while (page) {
            page_t *next = page->next;
            if (page_should_park(page))
                page_park(h, page);
            page = next;
        }
    }
}

/* n sparse passes, each as if a purge delay had passed since the last
 * (run as policy.c runs them before a heap takes a fresh page); with
 * `hot`, as if every class took blocks through alloc_class in between
 * (else a class is cold after one pass: sparse.c). */
static void sparse_passes_as(heap_t *h, int n, bool hot)
{
    for (int pass = 0; pass < n; pass++) {
        if (hot)
            for (unsigned c = 1; c < CLASS_COUNT; c++)
                h->class_pass[c] = h->sparse_passes;
        h->sparse_checked = now_ticks() - 2 * PURGE_DELAY;
        policy_before_fresh_page(h);
    }
}

static void sparse_passes(heap_t *h, int n) { sparse_passes_as(h, n, true); }

/* Two passes: a page is thinned out the second time it is seen sparse. */
static void force_thin(heap_t *h)
{
    park_sparse_pages(h);
    sparse_passes(h, 2);
}

/* Fill `n` blocks of `size`, returning them in order of allocation. */
static void **fill(heap_t *h, size_t size, size_t n)
{
    void **v = calloc(n, sizeof *v);
    TU_ASSERT(v != NULL);
    for (size_t i = 0; i < n; i++) {
        v[i] = take(h, size);
        tu_fill(v[i], size, (uint64_t)(uintptr_t)v[i]);
    }
    return v;
}

/* A fresh heap h with three pages' worth of blocks of `size`, all
 * allocated (v[0..n-1]); victim is a page other than the one the class
 * allocates from. */
typedef struct {
    heap_t *h;
    void **v;
    size_t n;
    size_t per_page; /* blocks of `size` a page holds, about */
    page_t *victim;
} scene_t;

static scene_t fill_three_pages(size_t size)
{
    bool small = class_kind(class_of_size(size)) == KIND_SMALL;
    size_t page_bytes = small ? (size_t)64 << 10 : (size_t)512 << 10;
    scene_t sc;
    sc.h = heap_new();
    TU_ASSERT(sc.h != NULL);
    sc.per_page = page_bytes / size;
    sc.n = 3 * sc.per_page;
    sc.v = fill(sc.h, size, sc.n);
    sc.victim = page_holding(sc.v[sc.per_page + sc.per_page / 2]);
    TU_ASSERT(sc.victim != sc.h->bins[class_of_size(size)].first);
    return sc;
}

/* Take n more blocks of `size`, each filled with `byte`; returns them and
 * the number that came from `page`. */
static void **take_more(heap_t *h, size_t size, size_t n, int byte, page_t *page,
                        size_t *from_page)
{
    void **v = calloc(n, sizeof *v);
    TU_ASSERT(v != NULL);
    *from_page = 0;
    for (size_t i = 0; i < n; i++) {
        v[i] = take(h, size);
        memset(v[i], byte, size);
        *from_page += page_holding(v[i]) == page;
    }
    return v;
}

/* Fail if a block appears twice in v[0..n-1]. */
static void assert_distinct(void **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            TU_ASSERT_MSG(v[i] != v[j], "block %p handed out twice", v[i]);
}

static void give_all(heap_t *h, void **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v[i])
            give(h, v[i]);
    free(v);
}

/* Free every block of victim but the first one (returned); the freed ones
 * are cleared in v and, if `freed` is given, listed there. */
static void *free_all_but_one(heap_t *h, void **v, size_t n, page_t *victim, void **freed,
                              size_t *nfreed)
{
    void *survivor = NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (page_holding(v[i]) != victim)
            continue;
        if (!survivor) {
            survivor = v[i];
            continue;
        }
        give(h, v[i]);
        if (freed)
            freed[k] = v[i];
        k++;
        v[i] = NULL;
    }
    if (nfreed)
        *nfreed = k;
    return survivor;
}

/* Small blocks: a sparse page loses its free OS pages; its live blocks
 * keep their contents; blocks whose link was purged are never handed out;
 * when the last live block goes the page goes back to its segment. */
START_TEST(t_thin_small_blocks)
{
    const size_t size = 512;
    scene_t sc = fill_three_pages(size);
    /* keep the blocks of one OS page in the middle of the sc.victim, free the
     * rest of the sc.victim */
    uintptr_t keep_lo = ((uintptr_t)sc.victim->start + OS_PAGE_SIZE * 5) & ~(uintptr_t)(OS_PAGE_SIZE - 1);
    uintptr_t keep_hi = keep_lo + OS_PAGE_SIZE;
    size_t kept = 0;
    for (size_t i = 0; i < sc.n; i++) {
        if (page_holding(sc.v[i]) != sc.victim)
            continue;
        uintptr_t a = (uintptr_t)sc.v[i];
        if (a + size > keep_lo && a < keep_hi) {
            kept++;
            continue;
        }
        give(sc.h, sc.v[i]);
        sc.v[i] = NULL;
    }
    TU_ASSERT(kept > 0);
    ck_assert_uint_eq(sc.victim->used, kept);
    uint32_t capacity = sc.victim->capacity;

    force_thin(sc.h);
    TU_ASSERT_MSG(sc.victim->absent > 0, "nothing purged from a page %u/%u used", (unsigned)kept,
                  (unsigned)capacity);
    ck_assert_uint_eq(sc.victim->used, kept + sc.victim->absent);
    /* the OS pages without live blocks are gone, the live ones intact */
    size_t gone = 0;
    for (uintptr_t a = ((uintptr_t)sc.victim->start + OS_PAGE_SIZE - 1) & ~(uintptr_t)(OS_PAGE_SIZE - 1);
         a + OS_PAGE_SIZE <= (uintptr_t)sc.victim->start + (size_t)capacity * size; a += OS_PAGE_SIZE) {
        bool live = a + OS_PAGE_SIZE > keep_lo - size && a < keep_hi;
        if (!live && !resident((void *)a))
            gone++;
    }
    TU_ASSERT_MSG(gone >= 8, "only %zu OS pages given back", gone);
    for (size_t i = 0; i < sc.n; i++)
        if (sc.v[i])
            ck_assert_int_lt(tu_check(sc.v[i], size, (uint64_t)(uintptr_t)sc.v[i]), 0);

    /* every block handed out now is distinct from the live ones and usable */
    size_t extra_n = 2 * sc.per_page, unused;
    void **extra = take_more(sc.h, size, extra_n, 0x77, sc.victim, &unused);
    for (size_t i = 0; i < extra_n; i++)
        for (size_t j = 0; j < sc.n; j++)
            TU_ASSERT_MSG(extra[i] != sc.v[j], "live block %p handed out again", extra[i]);
    assert_distinct(extra, extra_n);
    for (size_t i = 0; i < sc.n; i++)
        if (sc.v[i])
            ck_assert_int_lt(tu_check(sc.v[i], size, (uint64_t)(uintptr_t)sc.v[i]), 0);
    give_all(sc.h, extra, extra_n);

    /* the last live block of the sc.victim releases it, absent blocks and all */
    for (size_t i = 0; i < sc.n; i++) {
        if (sc.v[i] && page_holding(sc.v[i]) == sc.victim) {
            give(sc.h, sc.v[i]);
            sc.v[i] = NULL;
        }
    }
    TU_ASSERT_MSG(!sc.victim->in_use, "page with only absent blocks left kept (used %u absent %u)",
                  sc.victim->used, sc.victim->absent);
    give_all(sc.h, sc.v, sc.n);
}
END_TEST

/* When allocation comes back to a thinned-out page with nothing else free,
 * its absent blocks are handed out again rather than a fresh page. */
START_TEST(t_thin_revive)
{
    const size_t size = 1024;
    scene_t sc = fill_three_pages(size);
    void *survivor = free_all_but_one(sc.h, sc.v, sc.n, sc.victim, NULL, NULL);
    force_thin(sc.h);
    uint32_t absent = sc.victim->absent;
    TU_ASSERT(absent > 0);
    ck_assert_uint_eq(sc.victim->used, 1 + absent);
    /* allocate until the sc.victim has handed out every block it has */
    size_t extra_n = 4 * sc.per_page, from_victim;
    void **extra = take_more(sc.h, size, extra_n, 0x44, sc.victim, &from_victim);
    for (size_t i = 0; i < extra_n; i++)
        TU_ASSERT(extra[i] != survivor);
    assert_distinct(extra, extra_n);
    ck_assert_uint_eq(sc.victim->absent, 0);
    ck_assert_uint_eq(sc.victim->used, sc.victim->capacity);
    ck_assert_uint_eq(from_victim, sc.victim->capacity - 1);
    ck_assert_int_lt(tu_check(survivor, size, (uint64_t)(uintptr_t)survivor), 0);
    give_all(sc.h, extra, extra_n);
    give_all(sc.h, sc.v, sc.n);
}
END_TEST

/* Blocks of two OS pages or more stay on the free list: only their tail
 * pages are purged, so they are reused at the cost of page faults. */
START_TEST(t_thin_big_blocks)
{
    const size_t size = 16384;
    policy_shared_heaps = false; /* the blocks in sc.h, not the shared heap */
    scene_t sc = fill_three_pages(size);
    void *freed_blocks[64];
    size_t freed;
    void *survivor = free_all_but_one(sc.h, sc.v, sc.n, sc.victim, freed_blocks, &freed);
    force_thin(sc.h);
    ck_assert_uint_eq(sc.victim->absent, 0);
    ck_assert_int_lt(tu_check(survivor, size, (uint64_t)(uintptr_t)survivor), 0);
    size_t heads = 0, tails_gone = 0;
    for (size_t i = 0; i < freed; i++) {
        uint8_t *b = freed_blocks[i];
        heads += resident(b);
        for (size_t off = OS_PAGE_SIZE; off < size; off += OS_PAGE_SIZE)
            tails_gone += !resident(b + off);
    }
    ck_assert_uint_eq(heads, freed);
    TU_ASSERT_MSG(tails_gone >= freed * (size / OS_PAGE_SIZE - 1) / 2,
                  "only %zu tail pages of %zu free blocks given back", tails_gone, freed);
    /* every one of them is handed out again before any fresh page */
    size_t extra_n = 2 * sc.per_page, back;
    void **extra = take_more(sc.h, size, extra_n, 0x33, sc.victim, &back);
    ck_assert_uint_eq(back, freed);
    ck_assert_int_lt(tu_check(survivor, size, (uint64_t)(uintptr_t)survivor), 0);
    give_all(sc.h, extra, extra_n);
    give_all(sc.h, sc.v, sc.n);
}
END_TEST

/* A page that is still mostly used is left alone, even when whole OS
 * pages of it are free. */
START_TEST(t_thin_skips_dense_pages)
{
    const size_t size = 256;
    scene_t sc = fill_three_pages(size);
    /* free the first 40% of the sc.victim's blocks, a contiguous run */
    size_t limit = sc.victim->capacity * 2 / 5, k = 0;
    for (size_t i = 0; i < sc.n; i++)
        if (page_holding(sc.v[i]) == sc.victim && (size_t)((uint8_t *)sc.v[i] - sc.victim->start) / size < limit) {
            give(sc.h, sc.v[i]);
            sc.v[i] = NULL;
            k++;
        }
    ck_assert_uint_eq(k, limit);
    force_thin(sc.h);
    ck_assert_uint_eq(sc.victim->absent, 0);
    /* past three quarters free, the same page is sparse */
    for (size_t i = 0; i < sc.n; i++)
        if (sc.v[i] && page_holding(sc.v[i]) == sc.victim &&
            (size_t)((uint8_t *)sc.v[i] - sc.victim->start) / size < sc.victim->capacity * 3 / 4) {
            give(sc.h, sc.v[i]);
            sc.v[i] = NULL;
        }
    /* sparse now, but still in its class queue (allocation may refill
     * it): left alone */
    sparse_passes(sc.h, 3);
    ck_assert_uint_eq(sc.victim->absent, 0);
    /* once parked, it is thinned out */
    force_thin(sc.h);
    TU_ASSERT(sc.victim->parked);
    TU_ASSERT(sc.victim->absent > 0);
    for (size_t i = 0; i < sc.n; i++)
        if (sc.v[i])
            ck_assert_int_lt(tu_check(sc.v[i], size, (uint64_t)(uintptr_t)sc.v[i]), 0);
    give_all(sc.h, sc.v, sc.n);
}
END_TEST

/* A class no longer allocated (no alloc_class for a whole pass interval):
 * its pages are thinned out wherever they are and however full, but for
 * the one allocation pops from; their live blocks stay intact. */
START_TEST(t_thin_cold_class)
{
    const size_t size = 256;
    scene_t sc = fill_three_pages(size);
    /* a run of 40% of the blocks freed in the page of the first block,
     * then in the victim: both back in the class queue, the victim second */
    page_t *pages[2] = {page_holding(sc.v[0]), sc.victim};
    TU_ASSERT(pages[0] != sc.victim);
    for (int k = 0; k < 2; k++) {
        size_t limit = pages[k]->capacity * 2 / 5;
        for (size_t i = 0; i < sc.n; i++)
            if (sc.v[i] && page_holding(sc.v[i]) == pages[k] &&
                (size_t)((uint8_t *)sc.v[i] - pages[k]->start) / size < limit) {
                give(sc.h, sc.v[i]);
                sc.v[i] = NULL;
            }
    }
    page_t *first = sc.h->bins[class_of_size(size)].first;
    TU_ASSERT(first != sc.victim);
    sparse_passes_as(sc.h, 1, true); /* in use until now */
    ck_assert_uint_eq(sc.victim->absent, 0);
    sparse_passes_as(sc.h, 1, false); /* one interval without allocation */
    TU_ASSERT(!sc.victim->parked);
    TU_ASSERT_MSG(sc.victim->absent > 0, "a cold page %u/%u used was not thinned out",
                  (unsigned)sc.victim->used, (unsigned)sc.victim->capacity);
    ck_assert_uint_eq(first->absent, 0);
    for (size_t i = 0; i < sc.n; i++)
        if (sc.v[i])
            ck_assert_int_lt(tu_check(sc.v[i], size, (uint64_t)(uintptr_t)sc.v[i]), 0);
    give_all(sc.h, sc.v, sc.n);
}
END_TEST

TU_MAIN("unit_sparse", "sparse", 60, t_thin_small_blocks, t_thin_revive, t_thin_big_blocks, t_thin_skips_dense_pages,
        t_thin_cold_class)
