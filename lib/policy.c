/* The memory policy: the one place that decides when free memory goes
 * back to the kernel (constants in policy.h).  The layers below report
 * events and ask questions; policy.c answers, and calls their purge
 * functions (segment.c's heap_purge*, huge.c's huge_cache_expire,
 * sparse.c's sparse_pass) when it is time.
 *
 *   free pages    stay resident until the heap's dirty memory exceeds
 *                 max(PURGE_MIN, used_bytes / PURGE_FRACTION); past that
 *                 soft limit, pages free for longer than PURGE_DELAY go
 *                 (checked at most every PURGE_DELAY / 4); past four times
 *                 the limit, or when a new segment is about to be mapped,
 *                 all of them go.
 *   empty segments are kept mapped while the heap's cache has room.
 *   huge mappings freed by their allocating thread are cached up to
 *                 HUGE_CACHE_BYTES, for PURGE_DELAY.
 *   sparse pages  are thinned out (sparse.c) at most every PURGE_DELAY,
 *                 when the heap is about to take a fresh page, and only
 *                 once they look sparse in two passes in a row.
 *   emma_trim()   gives back everything free.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "internal.h"
#include "policy.h"

/* Knobs (policy.h): the defaults, unless options.c sets them. */
size_t policy_free_bound = PURGE_MIN;
uint64_t policy_decay_ticks = PURGE_DELAY;
size_t policy_huge_cold_bytes = HUGE_CACHE_BYTES;

static size_t purge_threshold(const heap_t *h)
{
    size_t t = h->used_bytes / PURGE_FRACTION;
    return t > policy_free_bound ? t : policy_free_bound;
}

void policy_page_freed(heap_t *h)
{
    size_t soft = purge_threshold(h);
    if (h->dirty_bytes <= soft)
        return;
    if (h->dirty_bytes > 4 * soft) {
        heap_purge(h);
        return;
    }
    /* a page freed a moment ago is likely wanted again soon */
    uint64_t now = now_ticks();
    if (now - h->purge_checked < policy_decay_ticks / 4)
        return;
    h->purge_checked = now;
    heap_purge_older(h, now - policy_decay_ticks);
    huge_cache_expire(h, now - policy_decay_ticks);
}

bool policy_keep_empty_segment(heap_t *h)
{
    (void)h;
    return true; /* as many as heap->cached holds */
}

/* New memory while more than the allowance of free pages stays resident:
 * those pages are of other kinds (the one asked for has none free), so the
 * program has moved on to other sizes; let them go now. */
void policy_before_map(heap_t *h)
{
    if (h->dirty_bytes > purge_threshold(h))
        heap_purge(h);
}

void policy_before_fresh_page(heap_t *h)
{
    uint64_t now = now_ticks();
    if (now - h->sparse_checked < policy_decay_ticks)
        return;
    h->sparse_checked = now;
    sparse_pass(h);
}

/* Worth a scan: at most a quarter used, and a quarter of it freed since the
 * last scan. */
static bool page_sparse(const page_t *page)
{
    if (page->slow_mark == SLOW_MARK_HELD || page->in_full ||
        atomic_load_explicit(&page->thread_free, memory_order_relaxed) != NULL)
        return false;
    uint32_t freed = page->scanned_used - page->used; /* wraps when never scanned */
    size_t free_bytes = (size_t)(page->capacity - page->used) * page->block_size;
    return freed >= page->capacity / 4 && free_bytes >= 4 * OS_PAGE_SIZE &&
           free_bytes * 4 >= 3 * (size_t)page->capacity * page->block_size;
}

/* A page is thinned out only once SPARSE_PASSES + 1 passes in a row found
 * it sparse: a page the program is about to take back would only fault
 * its memory back. */
#define SPARSE_PASSES 1
bool policy_thin_page(heap_t *h, page_t *page)
{
    if (!page_sparse(page)) {
        page->sparse_since = 0;
        return false;
    }
    if (page->sparse_since == 0) {
        page->sparse_since = h->sparse_passes;
        return false;
    }
    return h->sparse_passes - page->sparse_since >= SPARSE_PASSES;
}

bool policy_huge_cacheable(heap_t *h, size_t weight)
{
    if (weight > policy_huge_cold_bytes)
        return false;
    huge_cache_expire(h, now_ticks() - policy_decay_ticks);
    return true;
}

bool policy_huge_cache_full(const heap_t *h, size_t weight)
{
    return h->huge_cached_bytes + weight > policy_huge_cold_bytes;
}

static void trim_heap(heap_t *h)
{
    slow_state st = slow_enter(h);
    heap_collect_remote(h);
    heap_release_empty_pages(h);
    heap_purge(h);
    huge_cache_expire(h, UINT64_MAX);
    slow_leave(h, st);
}

/* With TLS the calling thread's heap; without, every heap not in use. */
void policy_trim(void)
{
#if EMMA_CONFIG_TLS
    if (tls_heap != &heap_empty && tls_heap != &heap_busy)
        trim_heap(tls_heap);
#else
    for (heap_t *h = heap_list_first(); h; h = h->next_heap) {
        if (heap_trylock(h)) {
            trim_heap(h);
            heap_unlock(h);
        }
    }
#endif
}
