/* Huge blocks (> 1 MiB, or alignment > 1 MiB): one mapping each, with a
 * one-page header at its 4 MiB aligned start so free() finds it by masking
 * like any other block.  The block starts one OS page in (or at the
 * alignment asked for); an alignment above 4 MiB puts the block exactly
 * 4 MiB above the header.  realloc moves pages with mremap, never copies.
 * Any thread may free a huge block.  With TLS, a block freed by the thread
 * that allocated it is kept in a small per-heap cache for a while (the next
 * huge request of about that size reuses the mapping, resident pages and
 * all); otherwise it is unmapped on the spot.
 * A block that realloc grows past THP_MIN is advised to use transparent
 * huge pages: a growing buffer is filled from the front, so 2 MiB pages
 * waste at most one page's worth and save hundreds of page faults each.
 * Fresh blocks are not advised (a big calloc may be used sparsely).
 * How much the cache holds and for how long is policy.c's decision.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "internal.h"
#include "observe.h"
#include "policy.h"

#define THP_MIN ((size_t)8 << 20)

static size_t round_pages(size_t n) { return align_up(n, OS_PAGE_SIZE); }

/* Offset of the block from the header for a given alignment. */
static size_t huge_offset(size_t align)
{
    if (align <= OS_PAGE_SIZE)
        return OS_PAGE_SIZE;
    return align < SEGMENT_SIZE ? align : SEGMENT_SIZE;
}

/* False (and nothing marked) when the address map cannot be made: the
 * caller gives the mapping back instead of handing out memory emma would
 * not recognise. */
static bool huge_init(segment_t *seg, size_t map_size, size_t offset, size_t map_align)
{
    seg->heap = NULL; /* keeps huge blocks off the free fast path */
    seg->origin = config_tls ? (heap_t *)tls_heap_or_null() : NULL;
    seg->kind = KIND_HUGE;
    seg->flags = 0;
    seg->page_shift = HUGE_PAGE_SHIFT;
    seg->page_count = 1;
    seg->used_pages = 1;
    seg->free_mask = seg->dirty_mask = 0;
    seg->map_size = map_size;
    seg->cookie = (uintptr_t)seg ^ os_secret();
    seg->next = seg->prev = NULL;
    page_t *page = &seg->pages[0];
    page->in_use = 1;
    page->class_idx = CLASS_HUGE;
    page->start = (uint8_t *)seg + offset;
    page->used = 1;
    page->block_size = 0; /* see huge_usable */
    page->reserved = log2_floor(map_align); /* kept by realloc */
    page->free = page->local_free = NULL;
    return addrmap_mark_huge(seg, map_size);
}

/* ------------------------------------------------------------------ */
/* The per-heap cache of freed huge mappings (TLS builds only: the owner
 * thread alone touches it, so it needs no lock). */

/* What a cached mapping may hold resident: its header page and the last
 * block's pages (the gap an alignment left between them was never
 * touched). */
static size_t cache_weight(segment_t *seg)
{
    return OS_PAGE_SIZE + (size_t)((uint8_t *)seg + seg->map_size - seg->pages[0].start);
}

static void cache_drop(heap_t *h, unsigned i)
{
    segment_t *seg = h->huge_cache[i];
    h->huge_cached_bytes -= cache_weight(seg);
    h->huge_cache[i] = h->huge_cache[--h->huge_cache_count];
    addrmap_clear(seg, seg->map_size);
    os_unmap(seg, seg->map_size);
}

/* Unmap cached mappings freed before `before` (all: UINT64_MAX). */
void huge_cache_expire(heap_t *h, uint64_t before)
{
    for (unsigned i = 0; i < h->huge_cache_count;) {
        if (before == UINT64_MAX || h->huge_cache[i]->pages[0].freed_at < before)
            cache_drop(h, i);
        else
            i++;
    }
}

static bool cache_put(segment_t *seg)
{
    heap_t *h = tls_heap_or_null();
    if (!config_tls || !h || seg->origin != h || !policy_huge_cacheable(h, cache_weight(seg)))
        return false;
    while (h->huge_cache_count &&
           (h->huge_cache_count == HUGE_CACHE || policy_huge_cache_full(h, cache_weight(seg))))
        cache_drop(h, 0);
    if (seg->flags & SEG_THP) {
        /* the next user of this mapping may touch it sparsely */
        os_advise_huge_pages(seg, seg->map_size, false);
        seg->flags &= (uint16_t)~SEG_THP;
    }
    seg->pages[0].in_use = 0;
    seg->pages[0].freed_at = now_ticks();
    h->huge_cache[h->huge_cache_count++] = seg;
    h->huge_cached_bytes += cache_weight(seg);
    return true;
}

/* The smallest cached mapping of between need and twice need bytes.  It is
 * used whole: trimming it would cost a syscall now and make it too small
 * for the next, larger request. */
static segment_t *cache_take(size_t need)
{
    heap_t *h = tls_heap_or_null();
    if (!config_tls || !h)
        return NULL;
    unsigned best = HUGE_CACHE;
    for (unsigned i = 0; i < h->huge_cache_count; i++) {
        size_t have = h->huge_cache[i]->map_size;
        if (have >= need && have / 2 <= need &&
            (best == HUGE_CACHE || have < h->huge_cache[best]->map_size))
            best = i;
    }
    if (best == HUGE_CACHE)
        return NULL;
    segment_t *seg = h->huge_cache[best];
    h->huge_cached_bytes -= cache_weight(seg);
    h->huge_cache[best] = h->huge_cache[--h->huge_cache_count];
    return seg;
}

/* emma_stats(): huge blocks in use and their usable bytes. */
_Atomic size_t huge_stats_blocks, huge_stats_bytes;

static void *huge_counted(segment_t *seg)
{
    atomic_fetch_add_explicit(&huge_stats_blocks, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&huge_stats_bytes, huge_usable(seg, seg->pages[0].start),
                              memory_order_relaxed);
    return seg->pages[0].start;
}

void *huge_alloc(size_t size, size_t align, bool zero)
{
    if (size > MAX_REQUEST || align > MAX_REQUEST / 2)
        return NULL;
    size_t offset = huge_offset(align);
    size_t map_size = offset + round_pages(size == 0 ? 1 : size);
    if (!zero && align <= SEGMENT_SIZE) {
        segment_t *seg = cache_take(map_size);
        if (seg && huge_init(seg, seg->map_size, offset, SEGMENT_SIZE))
            return huge_counted(seg);
    }
    /* The header must be 4 MiB aligned and the block `align` aligned. */
    size_t map_align = align > SEGMENT_SIZE ? align : SEGMENT_SIZE;
    size_t header_pos = align > SEGMENT_SIZE ? SEGMENT_SIZE : 0;
    segment_t *seg = os_map_aligned(map_size, map_align, header_pos, NULL);
    if (!seg)
        return NULL;
    if (!huge_init(seg, map_size, offset, map_align)) {
        os_unmap(seg, map_size);
        return NULL;
    }
    return huge_counted(seg);
}

void huge_free(segment_t *seg)
{
    atomic_fetch_sub_explicit(&huge_stats_blocks, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&huge_stats_bytes, huge_usable(seg, seg->pages[0].start),
                              memory_order_relaxed);
    if (unlikely(seg->flags & SEG_PRIVATE))
        private_huge_unlink(seg); /* and unmapped: never cached */
    else if (cache_put(seg))
        return;
    size_t size = seg->map_size;
    addrmap_clear(seg, size);
    os_unmap(seg, size);
}

size_t huge_usable(segment_t *seg, const void *p)
{
    return (size_t)((uint8_t *)seg + seg->map_size - (const uint8_t *)p);
}

/* Grow or shrink in place or by moving page tables.  NULL when the kernel
 * refuses, with the block untouched. */
void *huge_realloc(segment_t *seg, void *p, size_t new_size)
{
    size_t offset = (size_t)((uint8_t *)p - (uint8_t *)seg);
    if (new_size > MAX_REQUEST - offset)
        return NULL;
    size_t old_map = seg->map_size;
    /* at least one page: the block must stay inside its mapping */
    size_t new_map = offset + round_pages(new_size == 0 ? 1 : new_size);
    if (new_map == old_map)
        return p;
    heap_t *private = seg->flags & SEG_PRIVATE ? seg->origin : NULL;
    if (private)
        private_huge_unlink(seg); /* linked again at its new address */
    addrmap_clear(seg, old_map);
    size_t map_align = (size_t)1 << seg->pages[0].reserved;
    size_t header_pos = map_align > SEGMENT_SIZE ? SEGMENT_SIZE : 0;
    segment_t *moved = os_remap(seg, old_map, new_map, map_align, header_pos);
    if (!moved) {
        addrmap_mark_huge(seg, old_map);
        if (private)
            private_huge_link(private, seg);
        return NULL;
    }
    moved->map_size = new_map;
    atomic_fetch_add_explicit(&huge_stats_bytes, new_map - old_map, memory_order_relaxed);
    if (new_map > old_map && new_map >= THP_MIN && !(moved->flags & SEG_THP) &&
        os_advise_huge_pages(moved, new_map, true))
        moved->flags |= SEG_THP;
    moved->cookie = (uintptr_t)moved ^ os_secret();
    moved->pages[0].start = (uint8_t *)moved + offset;
    addrmap_mark_huge(moved, new_map);
    if (private)
        private_huge_link(private, moved);
    return moved->pages[0].start;
}
