/* Pages: carving blocks, the per-class page queues of a heap (bins, and
 * parked sparse pages), a page's slow path when it empties or stops being
 * full, and the owner collecting other threads' frees (pushed by free.c).
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "internal.h"
#include "policy.h"

/* Sizes <= DIRECT_MAX map to direct[] slots lo..hi of class c. */
static void direct_update(heap_t *h, unsigned c)
{
    size_t size = class_size(c);
    if (size > DIRECT_MAX)
        return;
    page_t *page = h->bins[c].first ? h->bins[c].first : &empty_page;
    size_t lo = c == 1 ? 0 : class_size(c - 1) / MIN_ALIGN + 1;
    for (size_t i = lo; i <= size / MIN_ALIGN; i++)
        h->direct[i] = page;
}

/* Link page into q between prev and next (NULL: the queue's ends). */
static void queue_insert(page_queue_t *q, page_t *page, page_t *prev, page_t *next)
{
    page->prev = prev;
    page->next = next;
    if (prev)
        prev->next = page;
    else
        q->first = page;
    if (next)
        next->prev = page;
    else
        q->last = page;
}

static void queue_push_front(page_queue_t *q, page_t *page) { queue_insert(q, page, NULL, q->first); }

static void queue_remove(page_queue_t *q, page_t *page)
{
    if (page->prev)
        page->prev->next = page->next;
    else
        q->first = page->next;
    if (page->next)
        page->next->prev = page->prev;
    else
        q->last = page->prev;
    page->next = page->prev = NULL;
}

void bin_push_front(heap_t *h, page_t *page)
{
    queue_push_front(&h->bins[page->class_idx], page);
    direct_update(h, page->class_idx);
}

/* The page is no longer held by its owner (page_retire): out of the
 * policy's pinned memory. */
void page_unhold(page_t *page)
{
    if (page->held_bytes) {
        policy_unhold(page->held_bytes);
        page->held_bytes = 0;
    }
    if (page->slow_at == SLOW_AT_HELD) {
        page->slow_at = SLOW_AT_EMPTY(page);
        page->sparse_since = 0; /* (heap_release_retired's mark) */
    }
}

void bin_push_back(heap_t *h, page_t *page)
{
    page_queue_t *q = &h->bins[page->class_idx];
    if (q->first && q->first->slow_at == SLOW_AT_HELD)
        page_unhold(q->first); /* no longer alone: may be released */
    queue_insert(q, page, q->last, NULL);
    if (q->first == page)
        direct_update(h, page->class_idx);
}

/* Take a page out of whichever queue of its class holds it. */
void bin_remove(heap_t *h, page_t *page)
{
    if (page->parked) {
        queue_remove(&h->parked[page->class_idx], page);
        page->parked = 0;
        return;
    }
    bool was_first = h->bins[page->class_idx].first == page;
    queue_remove(&h->bins[page->class_idx], page);
    if (was_first)
        direct_update(h, page->class_idx);
}

/* Queue q again from its forward links, without `drop` (prev links and
 * the last page rebuilt): a queue_remove cut short keeps them intact. */
static void queue_relink(page_queue_t *q, page_t *drop)
{
    page_t *prev = NULL;
    for (page_t *page = q->first; page; page = page->next) {
        if (page == drop) {
            if (prev)
                prev->next = page->next;
            else
                q->first = page->next;
            continue;
        }
        page->prev = prev;
        prev = page;
    }
    q->last = prev;
}

/* heap.c: a claimer (reclaim.c) died while it took `drop` out of class
 * c's queues: mend them (drop is left out: a page lost, never handed
 * out twice). */
void bin_repair(heap_t *h, unsigned c, page_t *drop)
{
    queue_relink(&h->bins[c], drop);
    queue_relink(&h->parked[c], drop);
    direct_update(h, c);
}

/* Move a sparse page out of allocation's way.  The most recently parked
 * pages (the fullest) are at the front, where page_unpark looks. */
void page_park(heap_t *h, page_t *page)
{
    bin_remove(h, page);
    queue_push_front(&h->parked[page->class_idx], page);
    page->parked = 1;
}

/* Live blocks (absent ones are free but off the lists). */
static uint32_t page_live(const page_t *page) { return page->used - page->absent; }

/* The fullest of the first UNPARK_SCAN parked pages of class c, back at
 * the front of the class queue; NULL if none is parked. */
#define UNPARK_SCAN 16
page_t *page_unpark(heap_t *h, unsigned c)
{
    page_t *best = NULL;
    unsigned n = 0;
    for (page_t *page = h->parked[c].first; page && n < UNPARK_SCAN; page = page->next, n++)
        if (!best || page_live(page) > page_live(best))
            best = page;
    if (best) {
        bin_remove(h, best);
        bin_push_front(h, best);
    }
    return best;
}

/* At most half of the carved blocks live: leave the page to drain while
 * fuller pages of its class have room (a class the program uses less than
 * it did then fills its fullest pages, and the rest empty out instead of
 * taking back a block here and there; bench frag, peak RSS / peak live:
 * 1.98 with a quarter, 1.79 with half and cold classes thinned out,
 * sparse.c).  A held page (the class's only one, empty) stays where it
 * is, and so does a page of at most PARK_MIN_BLOCKS blocks (64 KiB and
 * more): a free block of it serves the next request of its class whole,
 * while draining it moved memory to the free pages in steps of up to
 * 4 MiB, which the process-wide bound then gave back and the next such
 * request faulted in again (bench churn-mixed: 58k page faults with them
 * parked, 48k without; mimalloc 32k). */
#define PARK_MIN_BLOCKS 8
bool page_should_park(const page_t *page)
{
    return page->reserved > PARK_MIN_BLOCKS && page_live(page) * 2 <= page->capacity &&
           page->slow_at != SLOW_AT_HELD;
}

void page_init(page_t *page, unsigned c)
{
    segment_t *seg = segment_of_page(page);
    size_t bsize = class_size(c);
    uintptr_t area = (uintptr_t)seg + ((uintptr_t)page->page_idx << seg->page_shift);
    uintptr_t end = area + ((uintptr_t)1 << seg->page_shift);
    if (page->page_idx == 0)
        area += segment_header_size(seg->kind);
    /* Every block is aligned to its class's natural alignment: aligned
     * requests are served by picking a suitable class (class_for). */
    size_t a = class_align(c) < MIN_ALIGN ? MIN_ALIGN : class_align(c);
    area = align_up(area, a);
    page->class_idx = (uint8_t)c;
    page->block_size = (uint32_t)bsize;
    page->start = (uint8_t *)area;
    page->reserved = (uint32_t)((end - area) / bsize);
    page->capacity = 0;
    page->free = PAGE_END(page);
    page->local_free = NULL;
    atomic_store_explicit(&page->thread_free, 0, memory_order_relaxed);
    /* blocks of the page's previous use keep their tags: not this use's */
    atomic_store_explicit(&page->tf_gen,
                          atomic_load_explicit(&page->tf_gen, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    page->used = 0;
    page->absent = 0;
    page->scanned_used = 0; /* "never scanned": see policy.c's page_sparse */
    page->sparse_since = 0;
    page->purged = 0;
    atomic_store_explicit(&page->remote_gone, 0, memory_order_relaxed); /* (was freed_at) */
    page->slow_at = SLOW_AT_EMPTY(page);
    page->in_full = 0;
    page->parked = 0;
    page->in_depot = 0; /* (a depot class mended after a death may have lost count) */
    /* not held: a descriptor the segment's previous cut (a smaller header)
     * left among its blocks holds the program's bytes, and a stale count
     * was taken off policy.c's held total when the page was carved
     * (bytes_held wrapped below zero, which dropped the depot's pinned
     * pages from the bound) */
    page->held_bytes = 0;
    page->in_use = 1;
    page->remote_size = (uint32_t)bsize;
    page->next = page->prev = NULL;
}

/* A held page carved more blocks (its owner allocates from it): counted,
 * or, past the budget, no longer held. */
static EMMA_NOINLINE void page_held_grew(page_t *page, size_t n)
{
    if (policy_hold(n))
        page->held_bytes += (uint32_t)n;
    else
        page_unhold(page);
}

/* Carve n more blocks (at most what is left) onto the free list. */
static void page_carve(page_t *page, uint32_t n)
{
    uint32_t left = page->reserved - page->capacity;
    if (n > left)
        n = left;
    uint8_t *first = page->start + (size_t)page->capacity * page->block_size;
    uint8_t *p = first;
    for (uint32_t i = 1; i < n; i++) {
        block_t *b = (block_t *)p;
        p += page->block_size;
        link_set(b, (block_t *)p);
        check_mark_carved(b);
    }
    link_set((block_t *)p, page->free);
    check_mark_carved(p);
    page->free = (block_t *)first;
    page->capacity += n;
    if (unlikely(page->held_bytes))
        page_held_grew(page, (size_t)n * page->block_size);
}

/* Carve more blocks onto the free list: about one OS page worth at a time,
 * so a fresh page costs no more memory than is asked of it. */
void page_extend(page_t *page)
{
    uint32_t n = (uint32_t)(OS_PAGE_SIZE / page->block_size);
    if (n == 0)
        n = 1;
    if (page->capacity == 0 && n < 4)
        n = 4; /* avoid a slow-path trip per block for mid sizes */
    page_carve(page, n);
}

/* A page of class c for h, set up, with its first blocks carved, after
 * the policy's look at h (its clock read serves segment.c too).  A
 * medium or large page that its last use carved for the same class, resident
 * since (segment.c took it dirty: not purged) and with no block purged
 * in use (sparse.c), gets back as many blocks at once: their first words
 * were written by that carving, so this faults nothing in, and the slow
 * path is spared a trip per block that page_extend carves one at a time
 * (blocks of 8 KiB and more; bench tight-medium, batches of 8 blocks of
 * 16-64 KiB: 4 of 8 mallocs of each batch took it; large pages of 1 MiB
 * carve one block at a time past the first 4).  Not for small
 * pages: a page carved far beyond what its class needs now would look
 * sparse to sparse.c. */
page_t *page_fresh(heap_t *h, unsigned c)
{
    uint64_t now = policy_before_fresh_page(h);
    enum segment_kind kind = class_kind(c);
    bool listed = kind == KIND_MEDIUM || kind == KIND_LARGE; /* segment.c's unmeasured pages */
    page_t *page = segment_page_alloc_class(h, kind, listed ? c : 0, now);
    if (!page)
        return NULL;
    uint32_t warm = 0;
    if (listed && page->dirty && page->class_idx == c && !page->absent &&
        !page->purged)
        warm = page->capacity;
    page_init(page, c);
    page_extend(page);
    if (warm > page->capacity)
        page_carve(page, warm - page->capacity);
    return page;
}

/* A page becomes completely free: keep it if it is the only page of its
 * class (the next allocation would want it straight back), else give it
 * back to its segment.  A held page is its owner's alone (no other thread
 * may purge it), so what it holds for good is kept small: up to HOLD_MAX
 * or the blocks of a first carving (page_extend), whichever is more.  A
 * page that took more (a burst of blocks of its class, all freed) is
 * retired with a delay, as mimalloc does: held as well, but the heap's
 * next sparse passes give it back to its segment, where its memory counts
 * as free and policy.c bounds it process-wide, once one finds it empty
 * (heap_release_retired).  Giving it back at once made a class whose
 * blocks are all freed and taken again, batch after batch, release its
 * page, account for it and take one back every time (bench tight-medium,
 * batches of 8 blocks of 16, 32 or 64 KiB: 1.75 times tcmalloc's time).
 * A held page's carved bytes count too, apart, within HELD_MAX for every
 * thread together (page_hold): a thread that idles or exits leaves its
 * held pages under the bound, and their number does not multiply it
 * (bench idlebound, 16 threads: 15 MiB of held medium pages outside any
 * count, before).  A thread's heap holds no page of a class the shared
 * heaps serve (one it took when their lock stayed
 * taken, alloc.c): up to 1 MiB per class and thread otherwise (bench
 * mstress, 8 threads: 15-30 MiB of held pages at the peak); the shared
 * heap holds its own as any heap does. */
#define HOLD_MAX ((size_t)64 << 10)

/* The held page's carved bytes into the policy's pinned memory (policy.h:
 * HELD_MAX process-wide, whatever the number of threads; a page past it
 * goes back to its segment, where the bound reaches it); a private heap's
 * pages are its own business. */
static bool page_hold(heap_t *h, page_t *page, size_t carved)
{
    if (h->is_private || page->held_bytes)
        return true; /* (counted already: page_carve counts what it adds) */
    if (page->dirty > carved)
        carved = page->dirty; /* resident when the page was taken (segment.c) */
    if (!policy_hold(carved))
        return false;
    page->held_bytes = (uint32_t)carved;
    policy_pinned_grew(h);
    return true;
}

/* More carved than a held page keeps for good (page_retire). */
static bool page_held_big(const page_t *page)
{
    return (size_t)page->capacity * page->block_size > HOLD_MAX && page->capacity > 4;
}

static void page_retire(heap_t *h, page_t *page)
{
    page_queue_t *q = &h->bins[page->class_idx];
    segment_t *seg = segment_of_page(page);
    size_t carved = (size_t)page->capacity * page->block_size;
    if (q->first == page && q->last == page && !h->parked[page->class_idx].first &&
        seg->kind != KIND_XLARGE &&
        !(page->block_size >= SHARED_MIN && heap_uses_shared(h)) &&
        page_hold(h, page, carved)) {
        page->slow_at = SLOW_AT_HELD;
        return;
    }
    bin_remove(h, page);
    segment_page_release(h, page);
}

/* sparse.c's pass: the retired pages (page_retire: held, more carved than
 * HOLD_MAX) go back to their segments, each once a pass finds it empty
 * after an earlier pass saw it held (marked in sparse_since, which no held
 * page uses otherwise: held pages are never parked): so at least a pass
 * interval (PURGE_DELAY) after it was retired, and never while its blocks
 * are in use.  The same for a held page that carved that much while held
 * (page_held_grew).  A held page is its class's only page: the first. */
void heap_release_retired(heap_t *h)
{
    for (unsigned c = 1; c < CLASS_COUNT; c++) {
        page_t *page = h->bins[c].first;
        if (!page || page->slow_at != SLOW_AT_HELD || !page_held_big(page))
            continue;
        if (page->sparse_since == 0) {
            page->sparse_since = h->sparse_passes;
            continue;
        }
        page_absorb_remote(page);
        if (page->used == page->absent) {
            bin_remove(h, page);
            segment_page_release(h, page);
        }
    }
}

void page_mark_full(heap_t *h, page_t *page)
{
    page_unhold(page); /* every block out: nothing free in it */
    bin_remove(h, page);
    page->in_full = 1;
    page->slow_at = page->used;
}

void page_free_local_slow(heap_t *h, page_t *page)
{
    slow_state st = slow_enter(h);
    page_absorb_remote(page);
    if (page->in_full) {
        page->in_full = 0;
        page->slow_at = SLOW_AT_EMPTY(page);
        bin_push_back(h, page);
    }
    if (page->used == page->absent)
        page_retire(h, page);
    slow_leave(h, st);
}

#if EMMA_CONFIG_TLS
/* alloc.h's free_validated: page_free_local_slow for the owner, whose
 * thread's heap pointer is still the busy marker; puts h back in it. */
void page_free_local_slow_marked(heap_t *h, page_t *page)
{
    page_free_local_slow(h, page);
    __asm__ volatile("" ::: "memory");
    tls_heap = h;
}
#endif

/* Push page onto heap h's stack of pages with remote frees. */
void remote_pages_push(heap_t *h, page_t *page)
{
    page_t *head = atomic_load_explicit(&h->remote_pages, memory_order_relaxed);
    do {
        page->remote_next = head;
    } while (!atomic_compare_exchange_weak_explicit(&h->remote_pages, &head, page,
                                                    memory_order_release, memory_order_relaxed));
}

/* More blocks freed by other threads than the page has out (a cycle, if a
 * block was pushed twice): some block was freed twice. */
EMMA_NORETURN EMMA_COLD void remote_double_free(const void *p)
{
    emma_fatal("free", "double free (found among other threads' frees)", p);
}

/* The blocks of a remote-free list, without walking it: their number is
 * in its word, its last block in thread_tail (free.c's remote_push),
 * read before the list is taken: a free that finds the list empty
 * afterwards starts a new one and rewrites it. */
static void page_collect_thread_free(heap_t *h, page_t *page)
{
    block_t *tail = page->thread_tail;
    uintptr_t w = tf_take(page);
    block_t *list = tf_head(w);
    uint32_t n = tf_count(w);
    if (!list)
        return; /* cannot happen: a page is on the stack while its list is not empty */
    if (unlikely(n > page->used))
        remote_double_free(list);
    if (page->local_free)
        link_set(tail, page->local_free);
    page->local_free = list;
    page->used -= n;
    page_free_local_slow(h, page);
}

/* The stack of h's pages with remote frees, taken whole by the holder of
 * h->collect_lock.  What it has not done yet is in h->collect_next (the
 * chain through remote_next from there is intact: a page on it is not
 * pushed again until its remote frees are taken), so that if the holder
 * dies (collect_lock is then taken over), the next holder puts them back:
 * at most the page being done is lost with it, not the whole stack. */
page_t *remote_pages_take(heap_t *h)
{
    page_t *pending = h->collect_next;
    while (pending) {
        /* a previous holder died while doing them */
        page_t *next = pending->remote_next;
        remote_pages_push(h, pending);
        pending = next;
    }
    page_t *page = atomic_exchange_explicit(&h->remote_pages, NULL, memory_order_acquire);
    h->collect_next = page;
    return page;
}

/* The next page of the taken stack, noted before this one is done (a
 * re-push of this one, once its frees are taken, rewrites its link). */
page_t *remote_pages_next(heap_t *h, page_t *page)
{
    page_t *next = page->remote_next;
    h->collect_next = next;
    __asm__ volatile("" ::: "memory");
    return next;
}

/* Collect the frees other threads made into h's pages.  A page whose
 * segment changed hands (reclaim.c took over a dead thread's heap) goes on
 * to its new owner.  reclaim.c may hold collect_lock for a moment; then
 * the remote frees wait for the next time. */
void heap_collect_remote(heap_t *h)
{
    if (atomic_load_explicit(&h->remote_pages, memory_order_relaxed) == NULL)
        return;
    if (!gen_lock_try_as(&h->collect_lock, NULL, EMMA_CONFIG_TLS))
        return;
    page_t *page = remote_pages_take(h);
    while (page) {
        page_t *next = remote_pages_next(h, page); /* before the page can be re-pushed */
        heap_t *owner = atomic_load_explicit((_Atomic(heap_t *) *)&segment_of_page(page)->heap,
                                             memory_order_acquire);
        if (owner == h)
            page_collect_thread_free(h, page);
        else
            remote_pages_push(owner, page);
        page = next;
    }
    gen_unlock(&h->collect_lock);
}

/* For trim: give every completely free page back to its segment. */
static void release_empty_in(heap_t *h, page_queue_t *q)
{
    page_t *page = q->first;
    while (page) {
        page_t *next = page->next;
        page_absorb_remote(page);
        if (page->used == page->absent) {
            bin_remove(h, page);
            segment_page_release(h, page);
        }
        page = next;
    }
}

void heap_release_empty_pages(heap_t *h)
{
    for (unsigned c = 1; c < CLASS_COUNT; c++) {
        release_empty_in(h, &h->bins[c]);
        release_empty_in(h, &h->parked[c]);
    }
}
