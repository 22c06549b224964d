/* Segments: 4 MiB aligned mappings cut into pages, owned by one heap; and
 * giving free pages back to the kernel.
 *
 * Purging policy: a freed page stays resident ("dirty") so it can be reused
 * without page faults, until the heap holds more than PURGE_THRESHOLD of
 * such memory; then all of it is returned with MADV_DONTNEED (one call per
 * run of free pages, never splitting a mapping, so vm.max_map_count is not
 * touched).  A heap keeps one empty segment mapped for reuse and unmaps the
 * others.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "emma_internal.h"

static const uint8_t kind_shift[KIND_COUNT] = {16, 19, 22, 62};
static const uint16_t kind_pages[KIND_COUNT] = {64, 8, 1, 1};

size_t segment_header_size(enum segment_kind kind)
{
    size_t s = sizeof(segment_t) + kind_pages[kind] * sizeof(page_t);
    return (s + 63) & ~(size_t)63;
}

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

static void segment_unmap(segment_t *seg)
{
    registry_clear(seg, SEGMENT_SIZE);
    os_unmap(seg, SEGMENT_SIZE);
}

static segment_t *segment_alloc(heap_t *h, enum segment_kind kind)
{
    segment_t *seg = h->cached;
    if (seg) {
        h->cached = NULL;
    } else {
        seg = os_map_aligned(SEGMENT_SIZE, SEGMENT_SIZE, 0, NULL);
        if (!seg)
            return NULL;
        registry_mark(seg, SEGMENT_SIZE, true);
    }
    seg->heap = h;
    seg->kind = (uint8_t)kind;
    seg->page_shift = kind_shift[kind];
    seg->page_count = kind_pages[kind];
    seg->used_pages = 0;
    seg->free_mask = kind_pages[kind] == 64 ? ~(uint64_t)0 : ((uint64_t)1 << kind_pages[kind]) - 1;
    seg->dirty_mask = 0;
    seg->map_size = SEGMENT_SIZE;
    seg->cookie = (uintptr_t)seg ^ os_secret();
    for (unsigned i = 0; i < seg->page_count; i++) {
        page_t *p = &seg->pages[i];
        p->in_use = 0;
        p->page_idx = (uint8_t)i;
        p->free = p->local_free = NULL;
        p->used = 0;
    }
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
        h->dirty_bytes -= page_bytes(seg);
    }
    seg->used_pages++;
    if (seg->free_mask == 0)
        seglist_remove(h, seg);
    return &seg->pages[i];
}

static void segment_release(heap_t *h, segment_t *seg)
{
    seglist_remove(h, seg);
    h->dirty_bytes -= bit_count(seg->dirty_mask) * page_bytes(seg);
    if (!h->cached) {
        h->cached = seg; /* resident until the next purge */
        return;
    }
    segment_unmap(seg);
}

void segment_page_release(heap_t *h, page_t *page)
{
    segment_t *seg = segment_of_page(page);
    uint64_t bit = (uint64_t)1 << page->page_idx;
    page->in_use = 0;
    page->in_full = 0;
    if (seg->free_mask == 0)
        seglist_push(h, seg);
    seg->free_mask |= bit;
    seg->used_pages--;
    if (page->capacity) {
        seg->dirty_mask |= bit;
        h->dirty_bytes += page_bytes(seg);
    }
    if (seg->used_pages == 0)
        segment_release(h, seg);
    if (h->dirty_bytes > PURGE_THRESHOLD)
        heap_purge(h);
}

/* Return the memory of free pages [first, last] of seg to the kernel. */
static void purge_run(segment_t *seg, unsigned first, unsigned last)
{
    uintptr_t start = (uintptr_t)seg + ((uintptr_t)first << seg->page_shift);
    uintptr_t end = (uintptr_t)seg + ((uintptr_t)(last + 1) << seg->page_shift);
    if (first == 0)
        start += (segment_header_size(seg->kind) + OS_PAGE_SIZE - 1) & ~(OS_PAGE_SIZE - 1);
    if (end > start)
        os_purge((void *)start, end - start);
}

static void segment_purge(segment_t *seg)
{
    uint64_t m = seg->dirty_mask;
    while (m) {
        unsigned first = (unsigned)__builtin_ctzll(m);
        unsigned last = first;
        while (last + 1 < 64 && (m & ((uint64_t)1 << (last + 1))))
            last++;
        purge_run(seg, first, last);
        m &= ~((last == 63 ? ~(uint64_t)0 : (((uint64_t)1 << (last + 1)) - 1)) &
               ~(((uint64_t)1 << first) - 1));
    }
    seg->dirty_mask = 0;
}

void heap_purge(heap_t *h)
{
    for (int k = 0; k <= KIND_LARGE; k++)
        for (segment_t *seg = h->segments[k]; seg; seg = seg->next)
            if (seg->dirty_mask)
                segment_purge(seg);
    if (h->cached) {
        segment_unmap(h->cached);
        h->cached = NULL;
    }
    h->dirty_bytes = 0;
}
