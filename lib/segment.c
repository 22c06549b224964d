/* Segments: 4 MiB aligned mappings cut into pages, owned by one heap;
 * the accounting of free pages that may still be resident ("dirty"), and
 * purging them.
 *
 * A freed page stays resident so it can be reused without page faults;
 * when its memory goes back to the kernel is policy.c's decision, told of
 * every page freed, segment emptied and segment about to be mapped.  A
 * purge is MADV_DONTNEED, one call per run of free pages, never splitting
 * a mapping (so vm.max_map_count is not touched).  Empty segments the
 * policy keeps stay mapped in heap->cached, their dirty pages still counted
 * and purged like any others.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "internal.h"
#include "policy.h"

static const uint8_t kind_shift[KIND_COUNT] = {SMALL_PAGE_SHIFT, MEDIUM_PAGE_SHIFT, LARGE_PAGE_SHIFT,
                                               XLARGE_PAGE_SHIFT, HUGE_PAGE_SHIFT};
static const uint16_t kind_pages[KIND_COUNT] = {
    PAGES_PER_SEGMENT(SMALL_PAGE_SHIFT), PAGES_PER_SEGMENT(MEDIUM_PAGE_SHIFT),
    PAGES_PER_SEGMENT(LARGE_PAGE_SHIFT), PAGES_PER_SEGMENT(XLARGE_PAGE_SHIFT), 1};

size_t segment_header_size(enum segment_kind kind) { return SEGMENT_HEADER_SIZE(kind_pages[kind]); }

segment_t *segment_of_page(page_t *page)
{
    return (segment_t *)((uintptr_t)page & ~(uintptr_t)SEGMENT_MASK);
}

static size_t page_bytes(segment_t *seg) { return (size_t)1 << seg->page_shift; }

static void seglist_push(heap_t *h, segment_t *seg)
{
    segment_t **head = &h->segments[seg->kind];
    seg->prev = NULL;
    seg->next = *head;
    if (*head)
        (*head)->prev = seg;
    *head = seg;
}

static void seglist_remove(heap_t *h, segment_t *seg)
{
    if (seg->prev)
        seg->prev->next = seg->next;
    else
        h->segments[seg->kind] = seg->next;
    if (seg->next)
        seg->next->prev = seg->prev;
    seg->next = seg->prev = NULL;
}

void segment_unmap(segment_t *seg)
{
    addrmap_clear(seg, SEGMENT_SIZE);
    os_unmap(seg, SEGMENT_SIZE);
}

/* Bytes of the segment's old cut that were dirty within [lo, hi). */
static size_t dirty_in_range(segment_t *seg, uintptr_t lo, uintptr_t hi)
{
    size_t sum = 0;
    for (unsigned j = 0; j < seg->page_count; j++) {
        uintptr_t plo = (uintptr_t)j << seg->page_shift, phi = (uintptr_t)(j + 1) << seg->page_shift;
        if (!(seg->dirty_mask & ((uint64_t)1 << j)) || phi <= lo || plo >= hi)
            continue;
        size_t d = seg->pages[j].dirty;
        size_t span = hi - lo;
        sum += d < span ? d : span;
    }
    return sum;
}

/* Cut a segment into pages of `kind`.  A recycled segment may still hold
 * resident memory from its previous cut: the new pages overlapping it are
 * marked dirty, with the bytes accounted to them. */
static void segment_cut(heap_t *h, segment_t *seg, enum segment_kind kind, bool recycled)
{
    unsigned shift = kind_shift[kind], pages = kind_pages[kind];
    uint64_t dirty_mask = 0;
    uint32_t dirty[64];
    for (unsigned i = 0; i < pages; i++) {
        size_t d = 0;
        if (recycled)
            d = dirty_in_range(seg, (uintptr_t)i << shift, (uintptr_t)(i + 1) << shift);
        dirty[i] = (uint32_t)d;
        if (d)
            dirty_mask |= (uint64_t)1 << i;
    }
    seg->heap = h;
    seg->kind = (uint8_t)kind;
    seg->page_shift = (uint8_t)shift;
    seg->page_count = (uint16_t)pages;
    seg->used_pages = 0;
    seg->free_mask = pages == 64 ? ~(uint64_t)0 : ((uint64_t)1 << pages) - 1;
    seg->dirty_mask = dirty_mask;
    seg->map_size = SEGMENT_SIZE;
    seg->cookie = (uintptr_t)seg ^ os_secret();
    for (unsigned i = 0; i < pages; i++) {
        page_t *p = &seg->pages[i];
        p->in_use = 0;
        p->page_idx = (uint8_t)i;
        p->free = p->local_free = NULL;
        p->used = 0;
        p->dirty = dirty[i];
        p->freed_at = now_ticks();
    }
}

static segment_t *segment_alloc(heap_t *h, enum segment_kind kind)
{
    segment_t *seg;
    bool recycled = h->cached_count > 0;
    if (recycled) {
        seg = h->cached[--h->cached_count];
        h->dirty_bytes -= dirty_in_range(seg, 0, SEGMENT_SIZE);
    } else {
        policy_before_map(h);
        seg = os_map_aligned(SEGMENT_SIZE, SEGMENT_SIZE, 0, NULL);
        if (!seg)
            return NULL;
        if (!addrmap_mark(seg, SEGMENT_SIZE, true)) {
            os_unmap(seg, SEGMENT_SIZE);
            return NULL;
        }
        if (h->is_private)
            private_segment_added(h, seg);
    }
    segment_cut(h, seg, kind, recycled);
    h->dirty_bytes += dirty_in_range(seg, 0, SEGMENT_SIZE);
    seglist_push(h, seg);
    return seg;
}

page_t *segment_page_alloc(heap_t *h, enum segment_kind kind)
{
    segment_t *seg = h->segments[kind];
    if (!seg) {
        seg = segment_alloc(h, kind);
        if (!seg)
            return NULL;
    }
    unsigned i = (unsigned)__builtin_ctzll(seg->free_mask);
    uint64_t bit = (uint64_t)1 << i;
    seg->free_mask &= ~bit;
    if (seg->dirty_mask & bit) {
        seg->dirty_mask &= ~bit;
        h->dirty_bytes -= seg->pages[i].dirty;
    }
    seg->used_pages++;
    h->used_bytes += page_bytes(seg);
    if (seg->free_mask == 0)
        seglist_remove(h, seg);
    return &seg->pages[i];
}

/* An empty segment: keep it for reuse (its dirty pages stay counted) or
 * unmap it. */
static void segment_release(heap_t *h, segment_t *seg)
{
    seglist_remove(h, seg);
    if (h->cached_count < SEGMENT_CACHE && policy_keep_empty_segment(h)) {
        h->cached[h->cached_count++] = seg;
        return;
    }
    h->dirty_bytes -= dirty_in_range(seg, 0, SEGMENT_SIZE);
    if (h->is_private)
        private_segment_removed(h, seg);
    segment_unmap(seg);
}

/* Page `page` of seg is no longer in use: a free page, dirty where its
 * blocks were carved. */
static void page_set_free(heap_t *h, segment_t *seg, page_t *page)
{
    uint64_t bit = (uint64_t)1 << page->page_idx;
    page->in_use = 0;
    page->in_full = 0;
    seg->free_mask |= bit;
    seg->used_pages--;
    h->used_bytes -= page_bytes(seg);
    if (page->capacity) {
        /* Only the blocks carved out were ever touched. */
        size_t touched = (size_t)page->capacity * page->block_size;
        page->dirty = (uint32_t)align_up(touched, OS_PAGE_SIZE);
        page->freed_at = now_ticks();
        seg->dirty_mask |= bit;
        h->dirty_bytes += page->dirty;
    }
}

/* emma_heap_reset: every page of seg becomes free, and seg goes back on
 * h's lists (which the caller emptied), kept even when empty.  A segment
 * in h's cache of empty ones stays there. */
void segment_reset(heap_t *h, segment_t *seg)
{
    if (seg->used_pages == 0)
        return;
    for (unsigned i = 0; i < seg->page_count; i++)
        if (seg->pages[i].in_use)
            page_set_free(h, seg, &seg->pages[i]);
    seglist_push(h, seg);
}

void segment_page_release(heap_t *h, page_t *page)
{
    segment_t *seg = segment_of_page(page);
    if (seg->free_mask == 0)
        seglist_push(h, seg);
    page_set_free(h, seg, page);
    if (seg->used_pages == 0)
        segment_release(h, seg);
    policy_page_freed(h);
}

/* Return the memory of free pages [first, last] of seg to the kernel. */
static void purge_run(segment_t *seg, unsigned first, unsigned last)
{
    uintptr_t start = (uintptr_t)seg + ((uintptr_t)first << seg->page_shift);
    uintptr_t end = (uintptr_t)seg + ((uintptr_t)(last + 1) << seg->page_shift);
    if (first == 0)
        start += align_up(segment_header_size(seg->kind), OS_PAGE_SIZE);
    if (end > start)
        os_purge((void *)start, end - start);
}

/* Purge the dirty pages of seg freed before `before` (all of them when
 * before is UINT64_MAX); returns the bytes given back. */
static size_t segment_purge(segment_t *seg, uint64_t before)
{
    uint64_t m = seg->dirty_mask, done = 0;
    size_t bytes = 0;
    for (unsigned i = 0; i < seg->page_count; i++) {
        uint64_t bit = (uint64_t)1 << i;
        if ((m & bit) && (before == UINT64_MAX || seg->pages[i].freed_at < before)) {
            done |= bit;
            bytes += seg->pages[i].dirty;
        }
    }
    for (uint64_t r = done; r;) {
        unsigned first = (unsigned)__builtin_ctzll(r), last = first;
        while (last + 1 < 64 && (r & ((uint64_t)1 << (last + 1))))
            last++;
        purge_run(seg, first, last);
        for (unsigned i = first; i <= last; i++)
            r &= ~((uint64_t)1 << i);
    }
    seg->dirty_mask &= ~done;
    return bytes;
}

static void purge_segments(heap_t *h, uint64_t before)
{
    size_t bytes = 0;
    for (int k = 0; k <= KIND_XLARGE; k++)
        for (segment_t *seg = h->segments[k]; seg; seg = seg->next)
            if (seg->dirty_mask)
                bytes += segment_purge(seg, before);
    for (unsigned i = 0; i < h->cached_count; i++)
        bytes += segment_purge(h->cached[i], before);
    h->dirty_bytes = before == UINT64_MAX || bytes > h->dirty_bytes ? 0 : h->dirty_bytes - bytes;
}

void heap_purge(heap_t *h) { purge_segments(h, UINT64_MAX); }

void heap_purge_older(heap_t *h, uint64_t before) { purge_segments(h, before); }
