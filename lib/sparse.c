/* Giving back the free OS pages inside sparse pages ("thinning" them).
 *
 * Size classes keep pages apart, so when a program uses a size less than
 * it did, the survivors of that size keep whole pages half empty: they are
 * not free, so purging free pages does not help.  When policy.c says so
 * (at most every PURGE_DELAY, when the heap is about to take a fresh page)
 * a pass scans the parked pages (at most half used, and left out of
 * allocation while fuller pages have room: alloc.c), and every OS page
 * inside the ones policy.c picks that holds only free blocks goes back to
 * the kernel.  Pages still in their class queue are not, while allocation
 * is refilling them (scanning their free lists would cost more than it
 * saves); but when their class is cold (no alloc_class for a whole pass
 * interval: sparse_pass), all but the first are.
 *
 * A free block's link lives in its first bytes, and a purged OS page reads
 * back as zeroes.  So a small block (under two OS pages) whose first bytes
 * lie in a purged OS page leaves the free list: it becomes "absent", still
 * counted in page->used, and comes back only with the whole page (the page
 * is released when used == absent), or when allocation reaches the page
 * again with nothing else free (page_revive).  A bigger block keeps its
 * first OS page and stays on the list; only its other OS pages are purged.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "internal.h"
#include "policy.h"

static uintptr_t os_page_down(uintptr_t a) { return a & ~(uintptr_t)(OS_PAGE_SIZE - 1); }
static uintptr_t os_page_up(uintptr_t a) { return align_up(a, OS_PAGE_SIZE); }

static size_t block_index(const page_t *page, uintptr_t a)
{
    return (size_t)(a - (uintptr_t)page->start) / page->block_size;
}

/* page_mark_list for the first `cap` blocks of the page */
static bool mark_list_upto(const page_t *page, uint32_t cap, block_t *b, block_map_t *map,
                           size_t *count)
{
    uintptr_t lo = (uintptr_t)page->start;
    uintptr_t hi = lo + (size_t)cap * page->block_size;
    if (!b)
        return true; /* local_free empty */
    for (block_t *end = PAGE_END(page); b != end; b = link_get(b)) {
        uintptr_t a = (uintptr_t)b;
        if (a < lo || a >= hi || (a - lo) % page->block_size != 0 || ++*count > cap)
            return false;
        size_t i = block_index(page, a);
        if (block_map_get(map, i))
            return false;
        block_map_set(map, i);
    }
    return true;
}

bool page_mark_list(const page_t *page, block_t *b, block_map_t *map, size_t *count)
{
    return mark_list_upto(page, page->capacity, b, map, count);
}

/* Is the OS page at `a` covered by free blocks only (and keeps no link a
 * big block needs)? */
static bool os_page_purgeable(const page_t *page, const block_map_t *free_map, uintptr_t a, bool big)
{
    size_t first = block_index(page, a);
    size_t last = block_index(page, a + OS_PAGE_SIZE - 1);
    for (size_t i = first; i <= last; i++)
        if (!block_map_get(free_map, i))
            return false;
    if (big) {
        /* keep the first OS page of a block: it holds the list link */
        uintptr_t head = (uintptr_t)page->start + last * page->block_size;
        if (head >= a)
            return false;
    }
    return true;
}

static size_t os_page_index(const page_t *page, uintptr_t a)
{
    return (a - os_page_down((uintptr_t)page->start)) / OS_PAGE_SIZE;
}

/* Purge the purgeable OS pages of page, in runs.  Returns the number of
 * OS pages purged; for a page of small blocks (at most 16 OS pages, the
 * only kind that gets absent blocks) *gone gets one bit per purged page,
 * by os_page_index. */
static size_t purge_free_os_pages(const page_t *page, uint32_t cap, const block_map_t *free_map,
                                  bool big, uint16_t *gone)
{
    uintptr_t lo = os_page_up((uintptr_t)page->start);
    uintptr_t hi = os_page_down((uintptr_t)page->start + (size_t)cap * page->block_size);
    uintptr_t run = 0;
    size_t n = 0;
    for (uintptr_t a = lo; a <= hi; a += OS_PAGE_SIZE) {
        bool purge = a < hi && os_page_purgeable(page, free_map, a, big);
        if (purge) {
            if (!big)
                *gone |= (uint16_t)(1u << os_page_index(page, a));
            n++;
            if (!run)
                run = a;
        } else if (run) {
            os_purge((void *)run, a - run);
            run = 0;
        }
    }
    return n;
}

/* Rebuild the free list without the blocks whose link was purged (their
 * first bytes lie in an OS page of `gone`). */
/* A free list (ending in PAGE_END, in address order) of the blocks among
 * the first cap that map marks, but those whose first bytes lie in an OS
 * page of `gone` (purged: their links would read back as zeroes): *left_out
 * counts those, *kept the others; *tail gets the list's last block (NULL
 * when it is empty). */
static block_t *list_from_map(const page_t *page, uint32_t cap, const block_map_t *map, uint16_t gone,
                              block_t **tail, uint32_t *kept, uint32_t *left_out)
{
    block_t *head = PAGE_END(page);
    *tail = NULL;
    *kept = *left_out = 0;
    for (size_t i = cap; i-- > 0;) {
        if (!block_map_get(map, i))
            continue;
        uintptr_t a = (uintptr_t)page->start + i * page->block_size;
        if (gone & (1u << os_page_index(page, a))) {
            ++*left_out;
            continue;
        }
        block_t *b = (block_t *)a;
        link_set(b, head);
        head = b;
        if (!*tail)
            *tail = b;
        ++*kept;
    }
    return head;
}

static void relink(page_t *page, const block_map_t *free_map, uint16_t gone)
{
    block_t *tail;
    uint32_t kept, absent;
    block_t *head = list_from_map(page, page->capacity, free_map, gone, &tail, &kept, &absent);
    page->free = head;
    page->local_free = NULL;
    page->purged |= gone;
    page->absent += absent;
    page->used += absent;
    page->slow_at = SLOW_AT_EMPTY(page);
}

/* Put the absent blocks back on the free list (their memory faults back
 * in as they are used, as a fresh page's would). */
void page_revive(page_t *page)
{
    block_t *head = page->free;
    uint32_t n = 0;
    for (size_t i = page->capacity; i-- > 0;) {
        uintptr_t a = (uintptr_t)page->start + i * page->block_size;
        if (!(page->purged & (1u << os_page_index(page, a))))
            continue;
        block_t *b = (block_t *)a;
        link_set(b, head);
        head = b;
        n++;
    }
    page->free = head;
    page->used -= n;
    page->absent = 0;
    page->purged = 0;
    page->slow_at = SLOW_AT_EMPTY(page);
    page->scanned_used = page->used;
    page->sparse_since = 0;
}

void page_thin(page_t *page)
{
    block_map_t free_map = {{0}};
    size_t count = 0;
    uint16_t gone = 0;
    bool big = page->block_size > SMALL_MAX; /* pages beyond `purged`'s 16 OS pages */
    page->scanned_used = page->used;
    if (page->capacity > PAGE_MAX_BLOCKS || !page_mark_list(page, page->free, &free_map, &count) ||
        !page_mark_list(page, page->local_free, &free_map, &count))
        return;
    /* a big block keeps its link, so its free list stays as it is */
    if (purge_free_os_pages(page, page->capacity, &free_map, big, &gone) == 0 || big)
        return;
    relink(page, &free_map, gone);
    page->scanned_used = page->used;
}

size_t page_thin_remote(page_t *page, remote_list_t *l)
{
    /* Blocks carved before the list was taken: every block on it was
     * handed out before it was freed, so its page's capacity covered it
     * then (the owner may carve more meanwhile, above this). */
    uint32_t cap = PEEK(page->capacity);
    bool big = page->block_size > SMALL_MAX;
    block_map_t map = {{0}};
    size_t count = 0;
    uint16_t gone = 0;
    l->gone_bits = 0;
    l->gone_count = 0;
    if (cap > PAGE_MAX_BLOCKS || !mark_list_upto(page, cap, l->head, &map, &count) ||
        count != l->count)
        return 0; /* not a list of this page's blocks: left to the owner's checks */
    size_t n = purge_free_os_pages(page, cap, &map, big, &gone);
    if (n == 0 || big)
        return n * OS_PAGE_SIZE; /* a big block keeps its link, so the list stays */
    /* the list anew without the blocks whose link was purged */
    block_t *tail;
    uint32_t left;
    block_t *head = list_from_map(page, cap, &map, gone, &tail, &left, &l->gone_count);
    l->head = left ? head : NULL;
    l->tail = tail;
    l->count = left;
    l->gone_bits = gone;
    return n * OS_PAGE_SIZE;
}

void heap_thin_all(heap_t *h)
{
    for (unsigned c = 1; c < CLASS_COUNT; c++) {
        page_queue_t *queues[2] = {&h->bins[c], &h->parked[c]};
        for (int q = 0; q < 2; q++)
            for (page_t *page = queues[q]->first; page; page = page->next) {
                page_absorb_remote(page);
                if (page->used != page->absent)
                    page_thin(page);
            }
    }
}

/* One pass over the parked pages of every class, and over the pages of
 * the classes that are no longer allocated.  A class that took no block
 * through alloc_class (alloc.c) since before the previous pass is cold:
 * allocation has not reached its pages but the first for a whole pass
 * interval, so their free blocks are memory the program does not use (a
 * size the program has moved away from: its survivors pin pages that fill
 * up with free blocks, whatever their share of live ones).  The first page
 * is left alone: direct sizes are popped from it without alloc_class. */
void sparse_pass(heap_t *h)
{
    if (++h->sparse_passes == 0)
        h->sparse_passes = 1; /* 0 means "not seen sparse" */
    for (unsigned c = 1; c < CLASS_COUNT; c++) {
        for (page_t *page = h->parked[c].first; page; page = page->next)
            if (policy_thin_page(h, page))
                page_thin(page);
        if (h->sparse_passes - h->class_pass[c] < 2 || !h->bins[c].first)
            continue;
        for (page_t *page = h->bins[c].first->next; page; page = page->next)
            if (policy_thin_cold(page))
                page_thin(page);
    }
    heap_release_retired(h);
}
