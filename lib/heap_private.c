/* Private heaps (emma_heap_*): heaps that no thread allocates from by
 * itself.  A private heap is an ordinary heap_t that is on no list of
 * heap.c (so no thread finds, adopts or trims it), with `is_private` set
 * and two lists of its own memory, so that it can drop everything at once:
 *   all_segments  every segment it mapped, full ones and cached ones too
 *                 (linked through segment_t.all_next/all_prev; only its
 *                 user adds or removes segments, so no lock);
 *   huge_blocks   its live huge blocks (through segment_t.next/prev; any
 *                 thread may free one, so the list has a lock, h->lock,
 *                 which no other code uses in a private heap).
 * Allocation and the user's frees take alloc.c's and alloc.h's paths like
 * any heap; other threads' frees reach its pages through the usual
 * thread_free lists.  Destroy unmaps the lists' memory directly: nothing
 * goes to a cache that other heaps could use.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "alloc.h"
#include "observe.h"

#define EMMA_API __attribute__((visibility("default")))
#include "emma.h"

/* spin_lock: internal.h's */
static void huge_list_lock(heap_t *h) { spin_lock(&h->lock); }

/* Private heaps alive, on a list (next_heap, prev_private) for emma_stats;
 * emma_teardown refuses while there is one. */
static _Atomic size_t private_heaps;
static heap_t *private_list;
static _Atomic uint32_t private_list_lock;
/* their huge blocks and bytes, for emma_stats */
static _Atomic size_t private_huge_blocks, private_huge_bytes;

static void count_huge(segment_t *seg, bool add)
{
    size_t bytes = huge_usable(seg, seg->pages[0].start);
    if (add) {
        atomic_fetch_add_explicit(&private_huge_blocks, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&private_huge_bytes, bytes, memory_order_relaxed);
    } else {
        atomic_fetch_sub_explicit(&private_huge_blocks, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&private_huge_bytes, bytes, memory_order_relaxed);
    }
}

size_t private_heap_count(void) { return atomic_load_explicit(&private_heaps, memory_order_acquire); }

static void private_list_add(heap_t *h)
{
    spin_lock(&private_list_lock);
    h->prev_private = NULL;
    h->next_heap = private_list;
    if (private_list)
        private_list->prev_private = h;
    private_list = h;
    atomic_fetch_add_explicit(&private_heaps, 1, memory_order_relaxed);
    spin_unlock(&private_list_lock);
}

static void private_list_remove(heap_t *h)
{
    spin_lock(&private_list_lock);
    if (h->prev_private)
        h->prev_private->next_heap = h->next_heap;
    else
        private_list = h->next_heap;
    if (h->next_heap)
        h->next_heap->prev_private = h->prev_private;
    atomic_fetch_sub_explicit(&private_heaps, 1, memory_order_release);
    spin_unlock(&private_list_lock);
}

void private_heap_stats(struct emma_stats *s)
{
    spin_lock(&private_list_lock);
    for (heap_t *h = private_list; h; h = h->next_heap) {
        size_t dirty = __atomic_load_n(&h->dirty_bytes, __ATOMIC_RELAXED);
        s->private_bytes_free_resident += dirty;
        s->bytes_free_resident += dirty;
        s->private_heaps++;
    }
    spin_unlock(&private_list_lock);
    s->private_huge_blocks = atomic_load_explicit(&private_huge_blocks, memory_order_relaxed);
    s->private_bytes_in_use += atomic_load_explicit(&private_huge_bytes, memory_order_relaxed);
}

/* ------------------------------------------------------------------ */
/* Bookkeeping hooks (segment.c, huge.c) */

void private_segment_added(heap_t *h, segment_t *seg)
{
    seg->flags |= SEG_PRIVATE; /* for emma_stats */
    seg->all_prev = NULL;
    seg->all_next = h->all_segments;
    if (h->all_segments)
        h->all_segments->all_prev = seg;
    h->all_segments = seg;
}

void private_segment_removed(heap_t *h, segment_t *seg)
{
    if (seg->all_prev)
        seg->all_prev->all_next = seg->all_next;
    else
        h->all_segments = seg->all_next;
    if (seg->all_next)
        seg->all_next->all_prev = seg->all_prev;
}

void private_huge_link(heap_t *h, segment_t *seg)
{
    seg->origin = h;
    seg->flags |= SEG_PRIVATE;
    count_huge(seg, true);
    huge_list_lock(h);
    seg->prev = NULL;
    seg->next = h->huge_blocks;
    if (h->huge_blocks)
        h->huge_blocks->prev = seg;
    h->huge_blocks = seg;
    spin_unlock(&h->lock);
}

void private_huge_unlink(segment_t *seg)
{
    heap_t *h = seg->origin;
    count_huge(seg, false);
    huge_list_lock(h);
    if (seg->prev)
        seg->prev->next = seg->next;
    else
        h->huge_blocks = seg->next;
    if (seg->next)
        seg->next->prev = seg->prev;
    spin_unlock(&h->lock);
}

/* A huge block of h: always a fresh mapping (zero), never from a cache. */
void *private_huge_alloc(heap_t *h, size_t size, size_t align)
{
    void *p = huge_alloc_private(size, align);
    if (p)
        private_huge_link(h, segment_of(p));
    return p;
}

/* The heap a block belongs to: a huge block's is its origin if private. */
static heap_t *block_heap(const void *p)
{
    segment_t *seg = segment_of(p);
    if (seg->kind != KIND_HUGE)
        return seg->heap;
    return (seg->flags & SEG_PRIVATE) ? seg->origin : NULL;
}

bool block_is_private(const void *p)
{
    heap_t *h = block_heap(p);
    return h != NULL && h->is_private;
}

/* ------------------------------------------------------------------ */
/* The API */

/* Is h a live private heap?  Looked up on the list, under its lock: reads
 * nothing of h itself, so a destroyed heap, a pointer into anything else or
 * garbage is reported, never dereferenced.  (A handle whose heap was
 * destroyed and whose metadata emma_heap_new has since handed out again is
 * that new heap: not detected.) */
static bool private_heap_live(const heap_t *h)
{
    bool found = false;
    spin_lock(&private_list_lock);
    for (const heap_t *q = private_list; q && !found; q = q->next_heap)
        found = q == h;
    spin_unlock(&private_list_lock);
    return found;
}

/* The heap argument; with boundary checks, one that is not a live private
 * heap (NULL, destroyed, garbage) is a one-line abort. */
static heap_t *heap_arg(emma_heap_t *heap, const char *func)
{
    heap_t *h = (heap_t *)heap;
    if (config_checks && (h == NULL || !private_heap_live(h)))
        emma_fatal(func, "not a live private heap", h);
    return h;
}

static void check_in_heap(heap_t *h, const void *p, const char *func)
{
    if (block_heap(p) != h)
        emma_fatal(func, "pointer belongs to another heap", p);
}

EMMA_API emma_heap_t *emma_heap_new(void)
{
    heap_t *h = heap_new();
    if (!h) {
        os_set_errno(EMMA_ENOMEM);
        return NULL;
    }
    h->is_private = 1;
    private_list_add(h);
    return (emma_heap_t *)h;
}

/* emma_heap_alloc past its fast path: with the same arguments in the same
 * registers, so that the fast path moves none of them. */
static EMMA_NOINLINE void *heap_alloc_slow(emma_heap_t *heap, size_t size, size_t align)
{
    heap_t *h = (heap_t *)heap;
    if (unlikely(!align_ok(align, NULL, "emma_heap_alloc")))
        return NULL;
    return align <= MIN_ALIGN ? alloc_generic(size, MIN_ALIGN, h) : alloc_generic(size, align, h);
}

/* The fast path is heap_alloc's pop behind one bit test of align: a few
 * instructions more than malloc's (which loads its heap from TLS instead). */
EMMA_API void *emma_heap_alloc(emma_heap_t *heap, size_t size, size_t align)
{
    heap_t *h = heap_arg(heap, "emma_heap_alloc");
    if (likely(align_small(align) && size <= DIRECT_MAX)) {
        void *b = page_pop(h->direct[(size + MIN_ALIGN - 1) / MIN_ALIGN]);
        if (likely(b != NULL))
            return b;
    }
    return heap_alloc_slow(heap, size, align);
}

EMMA_API void *emma_heap_alloc_zeroed(emma_heap_t *heap, size_t size, size_t align)
{
    heap_t *h = heap_arg(heap, "emma_heap_alloc_zeroed");
    if (unlikely(!align_ok(align, NULL, "emma_heap_alloc_zeroed")))
        return NULL;
    void *p = heap_alloc_aligned(h, size, align);
    if (p && size <= LARGE_MAX && align <= LARGE_MAX)
        mem_zero(p, size); /* huge blocks are fresh mappings: zero already */
    return p;
}

EMMA_API void emma_heap_dealloc(emma_heap_t *heap, void *ptr, size_t size, size_t align)
{
    heap_t *h = heap_arg(heap, "emma_heap_dealloc");
    if (!ptr)
        return;
    if (config_checks) {
        check_layout(ptr, size, align, "emma_heap_dealloc");
        check_in_heap(h, ptr, "emma_heap_dealloc");
        check_mark_free(ptr, "emma_heap_dealloc");
    }
    heap_free_block(h, ptr, "emma_heap_dealloc");
}

EMMA_API void *emma_heap_realloc(emma_heap_t *heap, void *ptr, size_t old_size, size_t align,
                                 size_t new_size)
{
    heap_t *h = heap_arg(heap, "emma_heap_realloc");
    if (unlikely(!align_ok(align, ptr, "emma_heap_realloc")))
        return NULL;
    if (!ptr)
        return heap_alloc_aligned(h, new_size, align);
    if (config_checks) {
        check_layout(ptr, old_size, align, "emma_heap_realloc");
        check_in_heap(h, ptr, "emma_heap_realloc");
    }
    return realloc_block(h, ptr, new_size, align, "emma_heap_realloc");
}

/* Unmap every huge block of h. */
static void drop_huge_blocks(heap_t *h)
{
    huge_list_lock(h);
    segment_t *seg = h->huge_blocks;
    h->huge_blocks = NULL;
    spin_unlock(&h->lock);
    while (seg) {
        segment_t *next = seg->next;
        atomic_fetch_sub_explicit(&huge_stats_blocks, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&huge_stats_bytes, huge_usable(seg, seg->pages[0].start),
                                  memory_order_relaxed);
        count_huge(seg, false);
        addrmap_clear(seg, seg->reserve_size);
        os_unmap(seg, seg->reserve_size);
        seg = next;
    }
}

EMMA_API void emma_heap_reset(emma_heap_t *heap)
{
    heap_t *h = heap_arg(heap, "emma_heap_reset");
    drop_huge_blocks(h);
    /* Forget every page queue and remote free: each page in use becomes a
     * free page of its segment (still resident, counted dirty), so the
     * next allocations cut them again. */
    atomic_store_explicit(&h->remote_pages, NULL, memory_order_relaxed);
    heap_reset(h);
    mem_zero(h->bins, sizeof h->bins);
    mem_zero(h->parked, sizeof h->parked);
    for (int k = 0; k <= KIND_XLARGE; k++)
        h->segments[k] = NULL;
    for (segment_t *seg = h->all_segments; seg; seg = seg->all_next)
        segment_reset(h, seg);
}

EMMA_API void emma_heap_destroy(emma_heap_t *heap)
{
    if (!heap)
        return;
    heap_t *h = heap_arg(heap, "emma_heap_destroy");
    drop_huge_blocks(h);
    segment_t *seg = h->all_segments;
    while (seg) {
        segment_t *next = seg->all_next;
        segment_unmap(seg);
        seg = next;
    }
    private_list_remove(h);
    heap_delete(h);
}
