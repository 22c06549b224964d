/* White-box tests of segments (segment.c, with page.c's carving and
 * policy.c's purge decisions): pointer-to-segment and pointer-to-page
 * mapping, page layout, block carving, page release and purging.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Linked against libemma_core.la; this program's malloc is glibc's.
 */
#include "testutil.h"

#include <sys/mman.h>

#include "internal.h"
#include "policy.h"

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
        for (block_t *b = page->free; b != PAGE_END(page); b = link_get(b)) {
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
        uint8_t *base = page_base(seg, p[i]);
        if (p[i]->page_idx == 0)
            continue;
        TU_ASSERT_MSG(tu_resident_pages(base, (size_t)512 << 10) == 0, "purged page still resident");
    }
    /* the page in use is untouched */
    TU_ASSERT(keep->in_use);
    ck_assert_uint_eq(addrmap_lookup(keep->start), CHUNK_HEADER);
}
END_TEST

/* n small pages of h, every block written, then all released but the
 * first page of each segment (so that no segment goes to the pool). */
static void written_pages_released(heap_t *h, page_t **p, int n)
{
    for (int i = 0; i < n; i++) {
        p[i] = segment_page_alloc(h, KIND_SMALL);
        TU_ASSERT(p[i] != NULL);
        page_init(p[i], class_of_size(1024));
        while (p[i]->capacity < p[i]->reserved)
            page_extend(p[i]);
        memset(p[i]->start, 0x5a, (size_t)p[i]->reserved * p[i]->block_size);
    }
    for (int i = 0; i < n; i++)
        if (p[i]->page_idx != 0)
            segment_page_release(h, p[i]);
}

/* A heap that must map a new segment while more than its allowance of free
 * pages is still resident (pages of another kind, freed a moment ago, so
 * not old enough for the aged purge) gives those pages back first. */
START_TEST(t_new_segment_purges_free_pages)
{
    enum { N = 320 }; /* 20 MiB of small pages: above the 8 MiB allowance */
    heap_t *h = heap_new();
    TU_ASSERT(h != NULL);
    page_t *p[N];
    written_pages_released(h, p, N);
    TU_ASSERT_MSG(h->dirty_bytes > ((size_t)16 << 20), "free pages purged too early: %zu",
                  h->dirty_bytes);
    page_t *medium = segment_page_alloc(h, KIND_MEDIUM);
    TU_ASSERT(medium != NULL);
    ck_assert_uint_eq(h->dirty_bytes, 0);
    for (int i = 0; i < N; i++) {
        if (p[i]->page_idx == 0)
            continue;
        TU_ASSERT_MSG(tu_resident_pages(p[i]->start, (size_t)16 * OS_PAGE_SIZE) == 0,
                      "free page %d still resident", i);
    }
}
END_TEST

/* Free pages past 1.5 times the process-wide bound are given back at
 * once, however young they are: releasing 60 MiB of written pages leaves
 * at most 1.5 times the bound resident, and most of the pages purged; the
 * next decay pass brings it down to the bound. */
START_TEST(t_over_bound_purges_free_pages)
{
    enum { N = 960 }; /* 60 MiB of small pages: above 1.5 x the 32 MiB bound */
    heap_t *h = heap_new();
    TU_ASSERT(h != NULL);
    static page_t *p[N];
    written_pages_released(h, p, N);
    TU_ASSERT_MSG(policy_resident() <= policy_free_bound + policy_free_bound / 2,
                  "%zu bytes free and resident", policy_resident());
    int gone = 0;
    for (int i = 0; i < N; i++)
        if (p[i]->page_idx != 0)
            gone += tu_resident_pages(p[i]->start + 15 * OS_PAGE_SIZE, OS_PAGE_SIZE) == 0;
    TU_ASSERT_MSG(gone >= N / 5, "only %d of %d free pages purged", gone, N);
    /* the decay time later, a slow path's decay pass takes the rest */
    uint64_t t0 = now_ticks();
    while (now_ticks() - t0 <= 2 * policy_decay_ticks)
        __builtin_ia32_pause();
    policy_tick(h);
    TU_ASSERT_MSG(policy_resident() <= policy_free_bound,
                  "%zu bytes free and resident after a decay pass", policy_resident());
}
END_TEST

/* A shrink over the bound gives back what is over its target and no more
 * (issue 14, bench churn-mixed: every page older than the age at hand went,
 * and shrinks meant to reach 30 MiB ended at 14-29 MiB); a limited purge
 * stops after the page that reaches its limit.  The decay time is made
 * long, so that neither a decay pass nor the soft shrink (memory free for
 * half the decay time) takes anything however slowly this runs. */
START_TEST(t_shrink_stops_at_target)
{
    enum { N = 960 }; /* 60 MiB of small pages: the bound is passed many times */
    uint64_t decay = policy_decay_ticks;
    uint64_t now = now_ticks(), very_long = (uint64_t)1 << 38; /* about 2 minutes */
    policy_decay_ticks = very_long < now / 2 ? very_long : now / 2; /* now - decay: no wrap */
    heap_t *h = heap_new();
    TU_ASSERT(h != NULL);
    static page_t *p[N];
    written_pages_released(h, p, N);
    size_t r = policy_resident(), b = policy_free_bound;
    TU_ASSERT_MSG(r <= b, "%zu bytes free and resident, bound %zu", r, b);
    size_t least = b - b / 16 - ((size_t)1 << SMALL_PAGE_SHIFT); /* the target, less a page */
    TU_ASSERT_MSG(r >= least, "%zu bytes free and resident: a shrink went below %zu", r, least);
    size_t d = h->dirty_bytes, limit = (size_t)1 << 20;
    size_t n = heap_purge_some(h, UINT64_MAX, true, limit);
    TU_ASSERT_MSG(n >= limit && n < limit + ((size_t)1 << SMALL_PAGE_SHIFT),
                  "a purge limited to %zu bytes gave back %zu", limit, n);
    ck_assert_uint_eq(h->dirty_bytes, d - n);
    policy_decay_ticks = decay;
}
END_TEST

/* The pool's list as a holder that died (or was lost in a fork) may have
 * left it, mended: every segment once, in order, and nothing that is not
 * a mapped segment of emma's. */
START_TEST(t_pool_list_mended)
{
    heap_t *h = heap_new();
    TU_ASSERT(h != NULL);
    segment_t *seg[3];
    for (int i = 0; i < 3; i++) {
        page_t *page = segment_page_alloc(h, KIND_XLARGE);
        TU_ASSERT(page != NULL);
        seg[i] = segment_of_page(page);
        for (int j = 0; j < i; j++)
            TU_ASSERT_MSG(seg[j] != seg[i], "xlarge pages %d and %d share a segment", j, i);
    }
    /* a mapping that is not a segment, and an address no longer mapped */
    size_t span = 3 * SEGMENT_SIZE;
    uint8_t *m = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(m, MAP_FAILED);
    segment_t *plain = (segment_t *)align_up((uintptr_t)m, SEGMENT_SIZE);
    memset(plain, 0x5a, OS_PAGE_SIZE);
    segment_t *gone = (segment_t *)((uint8_t *)plain + SEGMENT_SIZE);
    ck_assert_int_eq(munmap(gone, SEGMENT_SIZE), 0);
    segment_t *list[] = {seg[0], seg[1], seg[1], plain, NULL, seg[2], gone,
                         (segment_t *)((uint8_t *)seg[2] + 64), seg[0], seg[2]};
    unsigned n = pool_mend(list, sizeof list / sizeof list[0]);
    ck_assert_uint_eq(n, 3);
    for (int i = 0; i < 3; i++)
        ck_assert_ptr_eq(list[i], seg[i]);
    /* an intact list stays as it is */
    ck_assert_uint_eq(pool_mend(list, 3), 3);
    ck_assert_ptr_eq(list[2], seg[2]);
    munmap(m, (size_t)((uint8_t *)gone - m));
    munmap((uint8_t *)gone + SEGMENT_SIZE, (size_t)(m + span - ((uint8_t *)gone + SEGMENT_SIZE)));
}
END_TEST

/* Bytes of page's carved blocks resident now, as segment.c measures them. */
static size_t carved_resident(page_t *page)
{
    size_t carved = align_up((size_t)page->capacity * page->block_size, OS_PAGE_SIZE);
    uint8_t *from = (uint8_t *)align_up((uintptr_t)page->start, OS_PAGE_SIZE);
    long n = tu_resident_pages(from, carved);
    TU_ASSERT(n >= 0);
    return (size_t)n * OS_PAGE_SIZE;
}

/* A page of class c from page_fresh, every block carved, and one byte of
 * each written (sparse) or all of them (whole). */
static page_t *medium_page(heap_t *h, unsigned c, bool whole)
{
    page_t *page = page_fresh(h, c);
    TU_ASSERT(page != NULL);
    while (page->capacity < page->reserved)
        page_extend(page);
    if (whole)
        memset(page->start, 0x5a, (size_t)page->capacity * page->block_size);
    else
        for (uint32_t i = 0; i < page->capacity; i++)
            page->start[(size_t)i * page->block_size] = 0x5a;
    return page;
}

/* What h counts for the free pages of seg: their page->dirty. */
static size_t counted_in(segment_t *seg)
{
    size_t n = 0;
    for (unsigned i = 0; i < seg->page_count; i++)
        if (seg->dirty_mask & ((uint64_t)1 << i))
            n += seg->pages[i].dirty;
    return n;
}

/* page is on one of h's lists (medium, large) */
static bool unmeasured_has(heap_t *h, page_t *page)
{
    for (unsigned i = 0; i < UNMEASURED_ALL; i++)
        if (h->unmeasured[i] == page)
            return true;
    return false;
}

/* sparse, a page with one byte of each block written, released: h
 * counts it at its carved extent, more than is resident, and lists it;
 * what is resident of it. */
static size_t release_sparse(heap_t *h, page_t *sparse, size_t extent)
{
    size_t d0 = h->dirty_bytes;
    segment_page_release(h, sparse);
    size_t r = carved_resident(sparse);
    TU_ASSERT_MSG(r > 0 && r <= extent / 4, "%zu of %zu bytes resident: not sparse", r, extent);
    ck_assert_uint_eq(h->dirty_bytes - d0, extent);
    TU_ASSERT(unmeasured_has(h, sparse));
    return r;
}

/* Free medium pages (segment.c, "unmeasured"): the last UNMEASURED_PAGES
 * a heap released are counted at their carved extent, without a system
 * call, and measured when newer releases push them out; whatever an
 * earlier use of the page left measured, the count never falls below
 * what is resident now.  A class takes its own page back first, with as
 * many blocks carved as before; a segment going to the pool leaves no
 * page on the list. */
START_TEST(t_unmeasured_medium_pages)
{
    heap_t *h = heap_new();
    TU_ASSERT(h != NULL);
    unsigned c64 = class_of_size((size_t)64 << 10), c16 = class_of_size((size_t)16 << 10);
    page_t *keep = medium_page(h, c64, false); /* page 0: the segment stays out of the pool */
    segment_t *seg = segment_of_page(keep);
    page_t *sparse = medium_page(h, c64, false);
    page_t *other[UNMEASURED_PAGES];
    for (int i = 0; i < UNMEASURED_PAGES; i++) {
        other[i] = medium_page(h, c16, false);
        TU_ASSERT(segment_of_page(other[i]) == seg && other[i]->page_idx != 0);
    }
    TU_ASSERT(segment_of_page(sparse) == seg && sparse->page_idx != 0);
    size_t extent = align_up((size_t)sparse->capacity * sparse->block_size, OS_PAGE_SIZE);
    uint32_t carved = sparse->capacity;

    /* released: counted at its extent, more than is there */
    size_t d0 = h->dirty_bytes;
    size_t r = release_sparse(h, sparse, extent);
    /* pushed out by newer releases: measured */
    for (int i = 0; i < UNMEASURED_PAGES; i++)
        segment_page_release(h, other[i]);
    TU_ASSERT(!unmeasured_has(h, sparse));
    ck_assert_uint_eq(sparse->dirty, r);
    ck_assert_uint_eq(counted_in(seg), h->dirty_bytes - d0);

    /* a class takes its own page back first (the others wait on the list,
     * of another class), warm: its blocks carved at once */
    page_t *again = page_fresh(h, c64);
    ck_assert_ptr_eq(again, sparse);
    ck_assert_uint_eq(again->capacity, carved);
    for (int i = 0; i < UNMEASURED_PAGES; i++) {
        ck_assert_ptr_eq(page_fresh(h, c16), other[UNMEASURED_PAGES - 1 - i]);
        TU_ASSERT(!unmeasured_has(h, other[UNMEASURED_PAGES - 1 - i]));
    }
    /* written whole this time, released again, then pushed out: counted
     * at what is resident now, not at the earlier measure */
    memset(again->start, 0x5a, (size_t)again->capacity * again->block_size);
    segment_page_release(h, again);
    r = carved_resident(again);
    TU_ASSERT_MSG(r >= extent - OS_PAGE_SIZE, "%zu of %zu bytes resident after a memset", r, extent);
    TU_ASSERT(again->dirty >= r);
    for (int i = 0; i < UNMEASURED_PAGES; i++)
        segment_page_release(h, other[i]);
    TU_ASSERT(!unmeasured_has(h, again));
    ck_assert_uint_eq(again->dirty, carved_resident(again));
    TU_ASSERT(again->dirty >= r);
    ck_assert_uint_eq(counted_in(seg), h->dirty_bytes - d0);

    /* the segment empties: to the pool, none of its pages left listed */
    segment_page_release(h, keep);
    for (int i = 0; i < UNMEASURED_PAGES; i++)
        TU_ASSERT(h->unmeasured[i] == NULL || segment_of_page(h->unmeasured[i]) != seg);
    ck_assert_uint_eq(h->dirty_bytes, d0);
}
END_TEST

/* Free large pages (1 MiB; blocks of 128-512 KiB, the shared heap's in a
 * program): as the medium ones, on a list of their own,
 * UNMEASURED_LARGE_PAGES long (bench/tight 1 N 131072,262144,524288 8
 * cycles about 7 of them).  Fails if a release asks the kernel (counted
 * at what is resident, not the extent) or a measure is reused. */
START_TEST(t_unmeasured_large_pages)
{
    heap_t *h = heap_new();
    TU_ASSERT(h != NULL);
    enum { N = UNMEASURED_LARGE_PAGES };
    unsigned c128 = class_of_size((size_t)128 << 10), c256 = class_of_size((size_t)256 << 10);
    TU_ASSERT(class_kind(c128) == KIND_LARGE && class_kind(c256) == KIND_LARGE);
    /* a sparse page of 128 KiB blocks, 2N of 256 KiB; page 0 of each
     * segment is kept in use: no segment goes to the pool */
    page_t *keep[N], *other[2 * N], *sparse = NULL;
    unsigned nk = 0, no = 0;
    while (no < 2 * N) {
        page_t *p = medium_page(h, sparse ? c256 : c128, false);
        TU_ASSERT(segment_of_page(p)->kind == KIND_LARGE);
        TU_ASSERT(segment_of_page(p)->pages[0].in_use);
        if (p->page_idx == 0) {
            TU_ASSERT(nk < N);
            keep[nk++] = p;
        } else if (!sparse) {
            sparse = p;
        } else {
            other[no++] = p;
        }
    }
    size_t extent = align_up((size_t)sparse->capacity * sparse->block_size, OS_PAGE_SIZE);

    /* released: counted at its extent, more than is there */
    size_t d0 = h->dirty_bytes;
    size_t r = release_sparse(h, sparse, extent);
    /* pushed out by N newer releases: measured; they are counted at
     * their extent */
    size_t others = 0;
    for (unsigned i = 0; i < N; i++) {
        others += align_up((size_t)other[i]->capacity * other[i]->block_size, OS_PAGE_SIZE);
        segment_page_release(h, other[i]);
    }
    TU_ASSERT(!unmeasured_has(h, sparse));
    ck_assert_uint_eq(sparse->dirty, r);
    ck_assert_uint_eq(h->dirty_bytes - d0, r + others);

    /* their class takes them back, newest first, warm: as many blocks
     * carved as before */
    uint32_t carved = other[0]->capacity;
    for (unsigned i = 0; i < N; i++) {
        page_t *p = page_fresh(h, c256);
        ck_assert_ptr_eq(p, other[N - 1 - i]);
        TU_ASSERT(!unmeasured_has(h, p));
        ck_assert_uint_eq(p->capacity, carved);
    }
    ck_assert_uint_eq(h->dirty_bytes - d0, r);

    /* one written whole, released, pushed out: counted at what is
     * resident now, not at its extent nor an earlier measure */
    page_t *again = other[0];
    extent = align_up((size_t)again->capacity * again->block_size, OS_PAGE_SIZE);
    memset(again->start, 0x5a, (size_t)again->capacity * again->block_size);
    segment_page_release(h, again);
    TU_ASSERT(unmeasured_has(h, again));
    for (unsigned i = N; i < 2 * N; i++)
        segment_page_release(h, other[i]);
    TU_ASSERT(!unmeasured_has(h, again));
    size_t ra = carved_resident(again);
    TU_ASSERT_MSG(ra >= extent - OS_PAGE_SIZE, "%zu of %zu bytes resident after a memset", ra, extent);
    ck_assert_uint_eq(again->dirty, ra);

    /* the segments empty: to the pool, no page left listed */
    for (unsigned i = 1; i < N; i++)
        segment_page_release(h, other[i]);
    for (unsigned i = 0; i < nk; i++)
        segment_page_release(h, keep[i]);
    for (unsigned i = 0; i < UNMEASURED_ALL; i++)
        TU_ASSERT(h->unmeasured[i] == NULL);
    ck_assert_uint_eq(h->dirty_bytes, d0);
}
END_TEST

TU_MAIN("unit_segment", "segment", 60, t_segment_geometry, t_pages_every_class, t_segment_pages_distinct, t_purge_releases_memory, t_new_segment_purges_free_pages,
        t_over_bound_purges_free_pages, t_shrink_stops_at_target, t_pool_list_mended,
        t_unmeasured_medium_pages, t_unmeasured_large_pages)
