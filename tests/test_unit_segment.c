/* White-box tests of segments, pages and huge blocks (segment.c, page.c,
 * huge.c): pointer-to-segment and pointer-to-page mapping, page layout,
 * block carving, page release and purging.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Linked against libemma_core.la; this program's malloc is glibc's.
 */
#include "testutil.h"

#include <sys/mman.h>

#include "internal.h"

static size_t page_area(segment_t *seg) { return (size_t)1 << seg->page_shift; }

static uint8_t *page_base(segment_t *seg, page_t *page)
{
    return (uint8_t *)seg + ((size_t)page->page_idx << seg->page_shift);
}

START_TEST(t_segment_geometry)
{
    /* that headers fit in the first page with room for blocks is a
     * _Static_assert in lib/types.h; here the run-time table agrees */
    ck_assert_uint_eq(segment_header_size(KIND_SMALL),
                      SEGMENT_HEADER_SIZE(PAGES_PER_SEGMENT(SMALL_PAGE_SHIFT)));
    ck_assert_uint_eq(segment_header_size(KIND_XLARGE), SEGMENT_HEADER_SIZE(1));
    /* segment_of: every address of a segment maps to its start */
    uint8_t *seg = (uint8_t *)((uintptr_t)7 << SEGMENT_SHIFT);
    ck_assert_ptr_eq(segment_of(seg + 1), seg);
    ck_assert_ptr_eq(segment_of(seg + 16), seg);
    ck_assert_ptr_eq(segment_of(seg + SEGMENT_SIZE - 1), seg);
    /* "p - 1": a block starting exactly at the next boundary belongs here
     * (huge blocks aligned to 4 MiB keep their header 4 MiB below) */
    ck_assert_ptr_eq(segment_of(seg + SEGMENT_SIZE), seg);
    ck_assert_ptr_eq(segment_of(seg + SEGMENT_SIZE + 16), seg + SEGMENT_SIZE);
}
END_TEST

/* For every class: take a page of the class's kind, lay it out, carve all
 * of its blocks, and check layout and pointer -> segment/page mapping. */
START_TEST(t_pages_every_class)
{
    heap_t *h = heap_new();
    TU_ASSERT((h) != NULL);
    for (unsigned c = 1; c < CLASS_COUNT; c++) {
        enum segment_kind kind = class_kind(c);
        page_t *page = segment_page_alloc(h, kind);
        TU_ASSERT_MSG(page != NULL, "no page for class %u", c);
        segment_t *seg = segment_of_page(page);
        ck_assert_uint_eq((uintptr_t)seg & SEGMENT_MASK, 0);
        ck_assert_int_eq(seg->kind, kind);
        ck_assert_ptr_eq(seg->heap, h);
        ck_assert_uint_lt(page->page_idx, seg->page_count);
        ck_assert_uint_eq(addrmap_lookup((uint8_t *)seg + 64), CHUNK_HEADER);
        ck_assert_uint_eq(seg->cookie, (uintptr_t)seg ^ os_secret());

        page_init(page, c);
        TU_ASSERT(page->in_use);
        ck_assert_uint_eq(page->block_size, class_size(c));
        ck_assert_uint_eq(page->class_idx, c);
        uint8_t *lo = page_base(seg, page), *hi = lo + page_area(seg);
        if (page->page_idx == 0)
            lo += segment_header_size(seg->kind);
        TU_ASSERT_MSG(page->start >= lo, "class %u: blocks overlap the header", c);
        size_t a = class_align(c) < MIN_ALIGN ? MIN_ALIGN : class_align(c);
        TU_ASSERT_MSG((uintptr_t)page->start % a == 0,
                      "class %u: first block %p not %zu-aligned", c,
                      (void *)page->start, a);
        TU_ASSERT_MSG(page->reserved >= 1, "class %u: no block fits", c);
        TU_ASSERT_MSG(page->start + (size_t)page->reserved * page->block_size <= hi,
                      "class %u: blocks run past the page", c);
        /* no room left for one more block */
        TU_ASSERT(page->start + (size_t)(page->reserved + 1) * page->block_size > hi);

        /* carve everything */
        uint32_t carved = 0, rounds = 0;
        while (page->capacity < page->reserved) {
            uint32_t before = page->capacity;
            page_extend(page);
            TU_ASSERT_MSG(page->capacity > before, "page_extend made no progress");
            TU_ASSERT(page->capacity <= page->reserved);
            rounds++;
        }
        /* the free list holds exactly the carved blocks, each once */
        static uint8_t seen[(4u << 20) / 16];
        memset(seen, 0, page->reserved);
        for (block_t *b = page->free; b; b = b->next) {
            uint8_t *p = (uint8_t *)b;
            TU_ASSERT_MSG(p >= page->start &&
                              p < page->start + (size_t)page->reserved * page->block_size,
                          "class %u: free block %p outside the page", c, (void *)p);
            size_t idx = (size_t)(p - page->start) / page->block_size;
            TU_ASSERT_MSG((size_t)(p - page->start) % page->block_size == 0,
                          "class %u: misplaced block", c);
            TU_ASSERT_MSG(!seen[idx], "class %u: block %zu listed twice", c, idx);
            seen[idx] = 1;
            carved++;
            /* the fast path's mapping back to segment and page */
            TU_ASSERT_MSG(segment_of(p) == seg && page_of(seg, p) == page,
                          "class %u: block %p maps to segment %p page %p", c,
                          (void *)p, (void *)segment_of(p),
                          (void *)page_of(seg, p));
            TU_ASSERT_MSG(segment_of(p + page->block_size - 1) == seg &&
                              page_of(seg, p + page->block_size - 1) == page,
                          "class %u: end of block %p maps elsewhere", c,
                          (void *)p);
            TU_ASSERT(addrmap_lookup(p) == CHUNK_HEADER);
        }
        ck_assert_uint_eq(carved, page->reserved);
        ck_assert_uint_eq(page->capacity, page->reserved);
        (void)rounds;

        page->free = NULL;
        segment_page_release(h, page);
        TU_ASSERT(!page->in_use);
    }
    heap_purge(h);
}
END_TEST

/* Page allocation within a segment: distinct pages, then a new segment. */
START_TEST(t_segment_pages_distinct)
{
    heap_t *h = heap_new();
    TU_ASSERT((h) != NULL);
    const unsigned npages[] = {64, 8, 4, 1};
    const size_t kind_size[] = {32, 20000, 300000, 900000};
    for (int k = KIND_SMALL; k <= KIND_XLARGE; k++) {
        page_t *pages[130];
        unsigned n = 2 * npages[k] + 1;
        for (unsigned i = 0; i < n; i++) {
            pages[i] = segment_page_alloc(h, (enum segment_kind)k);
            TU_ASSERT((pages[i]) != NULL);
            page_init(pages[i], class_of_size(kind_size[k]));
            for (unsigned j = 0; j < i; j++)
                TU_ASSERT_MSG(pages[i] != pages[j], "page handed out twice");
        }
        /* exactly enough segments */
        unsigned segs = 0;
        for (unsigned i = 0; i < n; i++) {
            int first = 1;
            for (unsigned j = 0; j < i; j++)
                if (segment_of_page(pages[j]) == segment_of_page(pages[i]))
                    first = 0;
            segs += (unsigned)first;
        }
        ck_assert_uint_eq(segs, (n + npages[k] - 1) / npages[k]);
        for (unsigned i = 0; i < n; i++)
            segment_page_release(h, pages[i]);
        /* and the heap still hands out pages afterwards */
        page_t *again = segment_page_alloc(h, (enum segment_kind)k);
        TU_ASSERT((again) != NULL);
        TU_ASSERT(!again->in_use);
        page_init(again, class_of_size(kind_size[k]));
        segment_page_release(h, again);
    }
    heap_purge(h);
}
END_TEST

/* A purge gives the memory of free pages back (and unmaps the cached
 * segment), without unmapping segments still in use. */
START_TEST(t_purge_releases_memory)
{
    heap_t *h = heap_new();
    TU_ASSERT((h) != NULL);
    page_t *keep = segment_page_alloc(h, KIND_MEDIUM);
    page_init(keep, class_of_size(30000));
    page_extend(keep);
    page_t *p[7];
    for (int i = 0; i < 7; i++) {
        p[i] = segment_page_alloc(h, KIND_MEDIUM);
        page_init(p[i], class_of_size(30000));
        while (p[i]->capacity < p[i]->reserved)
            page_extend(p[i]);
        memset(p[i]->start, 0x5a, (size_t)p[i]->reserved * p[i]->block_size);
    }
    segment_t *seg = segment_of_page(keep);
    for (int i = 0; i < 7; i++)
        segment_page_release(h, p[i]);
    heap_purge(h);
    for (int i = 0; i < 7; i++) {
        if (segment_of_page(p[i]) != seg)
            continue;
        unsigned char vec[128];
        uint8_t *base = page_base(seg, p[i]);
        if (p[i]->page_idx == 0)
            continue;
        ck_assert_int_eq(mincore(base, (size_t)512 << 10, vec), 0);
        for (int k = 0; k < 128; k++)
            TU_ASSERT_MSG(!(vec[k] & 1), "purged page still resident");
    }
    /* the page in use is untouched */
    TU_ASSERT(keep->in_use);
    ck_assert_uint_eq(addrmap_lookup(keep->start), CHUNK_HEADER);
}
END_TEST

/* A heap that must map a new segment while more than its allowance of free
 * pages is still resident (pages of another kind, freed a moment ago, so
 * not old enough for the aged purge) gives those pages back first. */
START_TEST(t_new_segment_purges_free_pages)
{
    enum { N = 320 }; /* 20 MiB of small pages: above the 8 MiB allowance */
    heap_t *h = heap_new();
    TU_ASSERT(h != NULL);
    page_t *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = segment_page_alloc(h, KIND_SMALL);
        TU_ASSERT(p[i] != NULL);
        page_init(p[i], class_of_size(1024));
        while (p[i]->capacity < p[i]->reserved)
            page_extend(p[i]);
        memset(p[i]->start, 0x5a, (size_t)p[i]->reserved * p[i]->block_size);
    }
    /* one page per segment stays in use, so no segment goes to the cache */
    for (int i = 0; i < N; i++)
        if (p[i]->page_idx != 0)
            segment_page_release(h, p[i]);
    TU_ASSERT_MSG(h->dirty_bytes > ((size_t)16 << 20), "free pages purged too early: %zu",
                  h->dirty_bytes);
    page_t *medium = segment_page_alloc(h, KIND_MEDIUM);
    TU_ASSERT(medium != NULL);
    ck_assert_uint_eq(h->dirty_bytes, 0);
    for (int i = 0; i < N; i++) {
        if (p[i]->page_idx == 0)
            continue;
        unsigned char vec[16];
        ck_assert_int_eq(mincore(p[i]->start, (size_t)16 * OS_PAGE_SIZE, vec), 0);
        for (int k = 0; k < 16; k++)
            TU_ASSERT_MSG(!(vec[k] & 1), "free page %d still resident", i);
    }
}
END_TEST

START_TEST(t_huge_blocks)
{
    const size_t sizes[] = {0, 1, LARGE_MAX + 1, 3 << 20, SEGMENT_SIZE,
                            SEGMENT_SIZE + 1, 33 << 20};
    for (size_t a = 16; a <= ((size_t)64 << 20); a *= 4) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            size_t s = sizes[i];
            uint8_t *p = huge_alloc(s, a, false);
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
            uint8_t *q = huge_realloc(seg, p, ns);
            TU_ASSERT_MSG(q != NULL, "huge_realloc(%zu -> %zu)", s, ns);
            TU_ASSERT((uintptr_t)q % a == 0);
            ck_assert_int_eq(q[0], 0x11);
            if (s > 1)
                TU_ASSERT(tu_check(q + s - 4096 * (s > 4096), s > 4096 ? 4096 : s, s) < 0);
            segment_t *qs = segment_of(q);
            TU_ASSERT(huge_usable(qs, q) >= ns);
            ck_assert_uint_ne(addrmap_lookup(q + ns - 1), CHUNK_NONE);
            q[ns - 1] = 1;
            uint8_t *r = huge_realloc(qs, q, LARGE_MAX + 100);
            TU_ASSERT((r) != NULL);
            ck_assert_int_eq(r[0], 0x11);
            segment_t *rs = segment_of(r);
            TU_ASSERT(huge_usable(rs, r) >= LARGE_MAX + 100);
            size_t end_off = (size_t)(r - (uint8_t *)rs) + huge_usable(rs, r);
            huge_free(rs);
            ck_assert_uint_eq(addrmap_lookup(r), CHUNK_NONE);
            unsigned char v;
            TU_ASSERT_MSG(mincore((uint8_t *)rs + end_off - 4096, 4096, &v) != 0,
                          "huge block still mapped after huge_free");
        }
    }
    ck_assert_ptr_null(huge_alloc(SIZE_MAX, 16, false));
    ck_assert_ptr_null(huge_alloc(MAX_REQUEST + 1, 16, false));
    ck_assert_ptr_null(huge_alloc(1 << 20, SIZE_MAX / 2 + 1, false));
}
END_TEST

int main(void)
{
    const TTest *tests[] = {
        t_segment_geometry,
        t_pages_every_class,
        t_segment_pages_distinct,
        t_purge_releases_memory,
        t_new_segment_purges_free_pages,
        t_huge_blocks,
        NULL,
    };
    return tu_run_case("unit_segment", "segment", 60, tests);
}
