/* Salvage: getting back the memory of quarantined heaps (TLS builds).
 *
 * A thread that dies inside a slow path of its heap (cancelled
 * asynchronously, or a raw SYS_exit from a signal handler) leaves that
 * heap possibly half updated: a page queue half linked, a segment list
 * half moved, a page's free lists half spliced.  heap.c never adopts such
 * a heap (heap_quarantine: it is poisoned), and its queues, its segment
 * lists and its counters are never read again.  Its pages still are: the
 * blocks other threads hold in them stay valid, and their frees still
 * arrive on the pages' remote-free lists.
 *
 * A salvage pass (policy.c: at a decay pass, at most once per decay
 * time, for the quarantined heaps that are new or whose pages received
 * frees since; at every trim, for all) recovers that memory page by page,
 * trusting nothing but what it can check.  It finds a new heap's segments
 * once, through the address map (a segment header whose `heap` names it,
 * read with os_read_safe, since a pooled segment may be unmapped at any
 * moment), and keeps them listed (all_segments, through all_next); for
 * each page of them:
 *   - a free page (or one the dead thread had taken and not set up) has
 *     its memory purged;
 *   - a page in use has its lists checked: every block on its free list,
 *     its collected-frees list and its absent set (sparse.c) must lie in
 *     the part carved so far, at a block boundary, and appear once.
 *     Blocks the dead thread was moving between lists appear twice or
 *     not at all, never as a free block that someone holds, since every
 *     list head and link names a free block at every instruction of the
 *     owner's code.  A page whose every carved block is accounted for is
 *     free: purged, and out of use.  A page whose lists fail the check is
 *     lost for good (PAGE_LOST), and one short of blocks waits for the
 *     frees of the blocks still out (a block the dead thread had in hand
 *     is never freed: its page is lost too, in effect);
 *   - remote frees are taken off the pages that the heap's remote-free
 *     stack names (so that no freer is still pushing onto them) and added
 *     to the page's collected frees.  A page with remote frees that is not
 *     on the stack waits: a freer is about to push it, or, if the dead
 *     thread died collecting (holding collect_lock), it was in its hands
 *     and stays lost.
 * A segment whose every page is free goes to the process-wide pool,
 * purged, for any heap to reuse; a heap with no segment left is reset
 * and goes back into service for the next new thread.  So what a death
 * inside emma loses for good is bounded by the pages the dead thread was
 * changing (the page of the block in its hand, the pages of a collect in
 * progress) and the address space of their segments, not by the memory
 * its heap held; it is counted (emma_stats: bytes_quarantined, which also
 * counts quarantined pages still holding live blocks, and heaps_salvaged).
 *
 * A salvager that itself dies leaves at worst a page half checked, or a
 * segment half given to the pool (lost): the pass's lock names its
 * holder and is taken over from a dead one, and a heap whose list was
 * being changed has its segments found again.  Cost: nothing unless a
 * heap was quarantined; then one system call per segment header in the
 * address map per newly quarantined heaps' pass, and a walk of the lists
 * of a quarantined heap's pages at each pass after frees into them.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "internal.h"
#include "observe.h"
#include "policy.h"

#if EMMA_CONFIG_TLS

/* emma_stats(): quarantined heaps whose memory was all recovered. */
_Atomic size_t salvage_stats_heaps;

/* heap_t.salvage_first: a heap not yet seen by a pass; then one whose
 * segments the pass's walk of the address map is to find. */
#define FIRST_NEW 1
#define FIRST_WALK 2

static _Atomic uint32_t salvage_lock;
static _Atomic size_t pending;      /* heaps with salvage == SALVAGE_ACTIVE */
static _Atomic uint64_t next_pass; /* now_ticks when a pass may run again */

void heap_quarantine(heap_t *h)
{
    atomic_store(&h->poisoned, 1);
    atomic_fetch_add_explicit(&heap_stats_abandoned, 1, memory_order_relaxed);
    h->salvage_first = FIRST_NEW;
    __atomic_store_n(&h->salvage, SALVAGE_ACTIVE, __ATOMIC_RELEASE);
    atomic_fetch_add(&pending, 1);
    atomic_store_explicit(&next_pass, 0, memory_order_relaxed);
}

enum check { PAGE_FREE, PAGE_SHORT, PAGE_BROKEN };

/* The blocks sparse.c took off the free list (their first bytes lie in a
 * purged OS page of a small page); false if page->absent disagrees. */
static bool mark_absent(const page_t *page, block_map_t *map, size_t *count)
{
    if (!page->purged)
        return page->absent == 0;
    uintptr_t base = (uintptr_t)page->start & ~(uintptr_t)(OS_PAGE_SIZE - 1);
    size_t n = 0;
    for (size_t i = 0; i < page->capacity; i++) {
        uintptr_t a = (uintptr_t)page->start + i * page->block_size;
        size_t os_page = (a - base) / OS_PAGE_SIZE;
        if (os_page < 16 && (page->purged & (1u << os_page))) {
            block_map_set(map, i);
            n++;
        }
    }
    *count += n;
    return n == page->absent;
}

/* Is every carved block of page free, some still out, or its state not
 * one the owner's code leaves at any instruction? */
static enum check page_check(segment_t *seg, unsigned idx, page_t *page)
{
    uintptr_t area = (uintptr_t)seg + ((uintptr_t)idx << seg->page_shift);
    uintptr_t end = area + ((uintptr_t)1 << seg->page_shift);
    uintptr_t start = (uintptr_t)page->start;
    size_t bsize = page->block_size;
    if (page->class_idx < 1 || page->class_idx >= CLASS_COUNT ||
        bsize != class_size(page->class_idx) || page->capacity > page->reserved ||
        page->capacity > PAGE_MAX_BLOCKS || start < area || start > end ||
        page->capacity * bsize > end - start)
        return PAGE_BROKEN;
    block_map_t map = {{0}};
    size_t count = 0;
    page_absorb_remote(page); /* (reclaimers keep off a quarantined heap) */
    if (!mark_absent(page, &map, &count) || !page_mark_list(page, page->free, &map, &count) ||
        !page_mark_list(page, page->local_free, &map, &count))
        return PAGE_BROKEN;
    return count == page->capacity ? PAGE_FREE : PAGE_SHORT;
}

/* Take the remote frees of the pages on h's remote-free stack into their
 * collected frees (nobody pushes onto a page while it is on the stack's
 * far side of the exchange; a page that gets new frees is pushed again). */
static void take_remote_frees(heap_t *h)
{
    page_t *page = remote_pages_take(h);
    while (page) {
        page_t *next = remote_pages_next(h, page);
        segment_t *seg = segment_of_page(page);
        heap_t *owner = atomic_load_explicit((_Atomic(heap_t *) *)&seg->heap, memory_order_acquire);
        if (owner != h) {
            if (owner)
                remote_pages_push(owner, page); /* moved before h was quarantined */
            page = next;
            continue;
        }
        block_t *list = tf_head(tf_take(page));
        if (list && page->in_use == 1 && page->capacity <= PAGE_MAX_BLOCKS) {
            /* check the list before splicing it: the end is PAGE_END */
            block_map_t map = {{0}};
            size_t count = 0;
            if (page_mark_list(page, list, &map, &count)) {
                block_t *tail = list;
                for (block_t *b; (b = link_get(tail)) != PAGE_END(page); tail = b)
                    ;
                link_set(tail, page->local_free ? page->local_free : PAGE_END(page));
                page->local_free = list;
                page->used = page->used > count ? page->used - (uint32_t)count : 0; /* stats */
            } else {
                page->in_use = PAGE_LOST;
            }
        }
        page = next;
    }
}

/* One segment of a quarantined heap (under its locks): purge what is
 * free, check what is in use; true if every page is free. */
static bool salvage_segment(segment_t *seg, size_t *purged)
{
    bool all_free = true;
    for (unsigned i = 0; i < seg->page_count && i < 64; i++) {
        if (!segment_page_mapped(seg, i))
            break; /* past a partial segment's mapping: never a page */
        page_t *page = &seg->pages[i];
        uint64_t bit = (uint64_t)1 << i;
        if (page->in_use == 1 && !atomic_load_explicit(&page->thread_free, memory_order_acquire)) {
            switch (page_check(seg, i, page)) {
            case PAGE_FREE:
                page_unhold(page);
                page->in_use = 0;
                page->remote_size = 0;
                page->in_full = 0;
                seg->free_mask |= bit;
                seg->dirty_mask |= bit; /* purged just below */
                break;
            case PAGE_SHORT:
                /* blocks still out: what is free in it need not stay
                 * resident meanwhile (sparse.c; the purged blocks become
                 * absent, which page_check counts) */
                page_thin(page);
                break;
            case PAGE_BROKEN:
                page->in_use = PAGE_LOST;
                break;
            }
        }
        if (page->in_use != 0) {
            all_free = false;
            continue;
        }
        if (!(seg->free_mask & bit)) {
            /* taken from the segment by the dead thread, not set up yet
             * (or given back half way): free, maybe resident */
            seg->free_mask |= bit;
            seg->dirty_mask |= bit;
        }
        if (seg->dirty_mask & bit) {
            *purged += segment_purge_page(seg, i);
            seg->dirty_mask &= ~bit;
        }
    }
    return all_free;
}

/* h has no segment left: back into service, for the next new thread
 * (`poisoned` cleared last: adoption skips a poisoned heap, and takes one
 * whose owner word is 0). */
static void heap_revive(heap_t *h)
{
    heap_reset(h);
    for (unsigned c = 0; c < CLASS_COUNT; c++) {
        h->bins[c].first = h->bins[c].last = NULL;
        h->parked[c].first = h->parked[c].last = NULL;
        h->class_pass[c] = 0;
    }
    for (int k = 0; k <= KIND_XLARGE; k++)
        h->segments[k] = NULL;
    atomic_store(&h->remote_pages, NULL);
    h->collect_next = NULL;
    h->dirty_bytes = h->used_bytes = 0;
    for (unsigned i = 0; i < UNMEASURED_ALL; i++)
        h->unmeasured[i] = NULL;
    h->sparse_checked = 0;
    h->sparse_passes = 0;
    h->active_at = h->liveness_checked = 0;
    h->remote_freed = 0;
    h->busy = 0;
    h->salvage = 0;
    h->all_segments = NULL;
    atomic_store(&h->seg_lock, 0);
    atomic_store(&h->collect_lock, 0);
    atomic_store(&h->owner, 0);
    atomic_store(&h->poisoned, 0);
    atomic_fetch_sub(&pending, 1);
    atomic_fetch_add_explicit(&salvage_stats_heaps, 1, memory_order_relaxed);
}

/* Lock one of a quarantined heap's locks: take it over from a dead owner
 * (even when the kernel has given its TID to us: we never hold these
 * between calls) or one lost in a fork; false if a live thread holds it (a
 * reclaimer that came before the quarantine, or a thread that left emma by
 * siglongjmp holding it, until its next call: heap.c,
 * heap_left_recover): the heap waits for the next pass, since a pass
 * never waits for a live thread. */
static bool lock_quarantined(_Atomic uint32_t *l)
{
    if (gen_lock_try(l, NULL))
        return true;
    uint32_t held = atomic_load(l);
    uint32_t self = gen_word(true);
    return held != 0 && (held & GEN_TID_MASK) == (self & GEN_TID_MASK) &&
           atomic_compare_exchange_strong(l, &held, self);
}

static bool lock_both(heap_t *h)
{
    if (!lock_quarantined(&h->collect_lock))
        return false;
    if (lock_quarantined(&h->seg_lock))
        return true;
    gen_unlock(&h->collect_lock);
    return false;
}

/* Heaps salvaged per pass at most (more wait for the next pass). */
#define PASS_HEAPS 256

/* Find the segments of the heaps in q that are new to salvage (FIRST_WALK)
 * and list them in their all_segments (unused by public heaps otherwise).
 * Every segment header in the address map is read, safely: one whose
 * heap is such a heap is that heap's (nobody else moves or unmaps it); one
 * that cannot be read is not mapped, so it is nobody's. */
static void find_segments(heap_t **q, unsigned nq)
{
    uintptr_t lo, hi;
    if (!addrmap_range(&lo, &hi))
        return;
    for (uintptr_t c = lo; c <= hi; c++) {
        if (addrmap_chunk(c) != CHUNK_HEADER)
            continue;
        segment_t *seg = (segment_t *)(c << SEGMENT_SHIFT);
        heap_t *h;
        if (!os_read_safe(&h, &seg->heap, sizeof h) || !h)
            continue;
        for (unsigned i = 0; i < nq; i++)
            if (q[i] == h && h->salvage_first == FIRST_WALK) {
                seg->all_next = h->all_segments;
                h->all_segments = seg;
                break;
            }
    }
}

/* Salvage the segments listed for h; those left are listed again. */
static size_t salvage_heap(heap_t *h, bool *locked)
{
    size_t purged = 0;
    *locked = lock_both(h);
    if (!*locked)
        return 0;
    segment_t *seg = h->all_segments, *keep = NULL;
    while (seg) {
        segment_t *next = seg->all_next;
        if (seg->heap == h && seg->kind <= KIND_XLARGE) {
            if (salvage_segment(seg, &purged)) {
                segment_salvaged(seg);
            } else {
                seg->all_next = keep;
                keep = seg;
            }
        }
        seg = next;
    }
    h->all_segments = keep;
    gen_unlock(&h->seg_lock);
    gen_unlock(&h->collect_lock);
    return purged;
}

size_t salvage_pass(bool all)
{
    if (atomic_load_explicit(&pending, memory_order_relaxed) == 0)
        return 0;
    uint64_t now = now_ticks();
    if (!all && now < atomic_load_explicit(&next_pass, memory_order_relaxed))
        return 0;
    if (!gen_lock_try(&salvage_lock, NULL))
        return 0;
    atomic_store_explicit(&next_pass, now + policy_decay_ticks, memory_order_relaxed);
    /* The heaps with news: new ones, and those whose pages received
     * frees since the last pass (nothing else can free a page). */
    heap_t *q[PASS_HEAPS];
    unsigned nq = 0;
    bool walk = false;
    for (heap_t *h = heap_list_first(); h && nq < PASS_HEAPS; h = h->next_heap) {
        if (__atomic_load_n(&h->salvage, __ATOMIC_ACQUIRE) != SALVAGE_ACTIVE)
            continue;
        if (!all && h->salvage_first != FIRST_NEW &&
            !atomic_load_explicit(&h->remote_pages, memory_order_relaxed))
            continue;
        if (!lock_both(h))
            continue;
        q[nq++] = h;
        if (h->salvage_first == FIRST_NEW) {
            /* its free pages leave the process-wide count: purged below */
            policy_resident_sub(h->dirty_bytes);
            h->dirty_bytes = 0;
            h->salvage_first = FIRST_WALK;
        }
        if (h->salvage_first == FIRST_WALK) {
            /* new, or a salvager died while its list was changing: the
             * walk finds its segments again (those pooled meanwhile no
             * longer name it) */
            h->all_segments = NULL;
            walk = true;
        }
        take_remote_frees(h);
        gen_unlock(&h->seg_lock);
        gen_unlock(&h->collect_lock);
    }
    if (walk)
        find_segments(q, nq);
    size_t purged = 0;
    for (unsigned i = 0; i < nq; i++) {
        /* FIRST_WALK while its list changes: if we die meanwhile, the
         * next pass rebuilds the list rather than follow a broken one */
        q[i]->salvage_first = FIRST_WALK;
        bool locked;
        purged += salvage_heap(q[i], &locked);
        if (!locked)
            continue; /* FIRST_WALK: the next pass walks for it again */
        q[i]->salvage_first = 0;
        if (!q[i]->all_segments)
            heap_revive(q[i]);
    }
    gen_unlock(&salvage_lock);
    return purged;
}

void salvage_forget(void)
{
    atomic_store(&pending, 0);
    atomic_store(&next_pass, 0);
    atomic_store(&salvage_lock, 0);
}

/* heap.c: heap_left_recover (a pass left half done finds its heaps'
 * segments again, as after a death: FIRST_WALK stays set) */
void salvage_locks_left(uint32_t me) { gen_release_left(&salvage_lock, me, NULL); }

#else /* !EMMA_CONFIG_TLS: heaps are shared, never quarantined */

_Atomic size_t salvage_stats_heaps;
size_t salvage_pass(bool all)
{
    (void)all;
    return 0;
}
void salvage_forget(void) {}

#endif
