/* The generic free paths behind alloc.h's inline fast path: huge blocks
 * (huge.c), blocks of pages the calling thread does not own (pushed
 * lock-free onto the page's thread_free list, and counted for policy.c's
 * remote steps), and without TLS, the owner heap's lock.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "alloc.h"
#include "policy.h"

/* n more bytes freed into another heap's page: true when the calling
 * thread is due for a remote step (policy.h).  It counts in its heap
 * (threads without one, and signal handlers that interrupted their thread
 * inside emma, share heap_empty's and heap_busy's word; without TLS every thread
 * shares one word).  Plain loads and stores, no atomic read-modify-write:
 * a racing update of a shared word loses a count, and the step comes a
 * little later. */
static inline bool remote_count(size_t n)
{
#if EMMA_CONFIG_TLS
    size_t *w = &tls_heap->remote_freed;
#else
    size_t *w = &policy_remote_anon;
#endif
    size_t c = __atomic_load_n(w, __ATOMIC_RELAXED) + n;
    __atomic_store_n(w, c < REMOTE_STEP ? c : 0, __ATOMIC_RELAXED);
    return c >= REMOTE_STEP;
}

/* A huge block: to the huge cache, then the policy. */
static EMMA_NOINLINE void free_huge(segment_t *seg, void *p, const char *func)
{
    if (unlikely(!seg->pages[0].in_use)) /* in the huge cache */
        emma_fatal(func, "double free", p);
    slow_state st;
    heap_t *h = slow_enter_self(&st);
    huge_free(seg);
    policy_huge_freed(h); /* a decay pass, and the bound with what the cache kept */
    slow_leave_self(h, st);
}

/* Lock-free push of a block freed by a thread that does not own the page.
 * The first block to arrive also pushes the page onto its heap's
 * remote_pages stack; a page is on that stack exactly while its
 * thread_free list is non-empty, and only the owner empties both (page.c's
 * heap_collect_remote), with exchanges, so neither stack can suffer ABA. */
static inline void remote_push(segment_t *seg, page_t *page, block_t *b, const char *func)
{
    block_t *old = atomic_load_explicit(&page->thread_free, memory_order_relaxed);
    do {
        if (unlikely(old == b)) /* freed twice in a row: a cycle otherwise */
            emma_fatal(func, "double free", b);
        link_set(b, old ? old : PAGE_END(page));
    } while (!atomic_compare_exchange_weak_explicit(&page->thread_free, &old, b,
                                                    memory_order_release, memory_order_relaxed));
    if (old != NULL)
        return;
    /* Our block pins the page, but reclaim.c may hand its segment to
     * another heap meanwhile: the old owner's collect then forwards it. */
    remote_pages_push(atomic_load_explicit((_Atomic(heap_t *) *)&seg->heap, memory_order_acquire),
                      page);
}

void page_free_remote(segment_t *seg, page_t *page, block_t *b, const char *func)
{
    remote_push(seg, page, b, func);
}

/* A remote free of a block above SMALL_MAX: to the depot (depot.c), else
 * home as any remote free. */
static EMMA_NOINLINE void free_big_remote(segment_t *seg, page_t *page, void *p, size_t size,
                                          const char *func)
{
    if (depot_put(seg, page, size, p, func))
        return;
    page_free_remote(seg, page, (block_t *)p, func);
    if (remote_count(size))
        policy_remote_step();
}

/* Everything free_validated() does not do inline: with TLS its caller has
 * already found that the calling thread does not own the block. */
void free_generic(void *p, const char *func)
{
    segment_t *seg = segment_of(p);
    if (seg->kind == KIND_HUGE) {
        free_huge(seg, p, func);
        return;
    }
    page_t *page = page_of(seg, p);
#if !EMMA_CONFIG_TLS
    /* Only the heap this thread prefers is worth locking: another thread's
     * heap is likely in use, and fighting over its lock and its free list
     * (producer/consumer) costs more than one push on the remote list. */
    heap_t *h = seg->heap;
    if (h == preferred_heap() && heap_trylock(h)) {
        heap_free_local(h, page, p, func);
        heap_unlock(h);
        return;
    }
#endif
    /* A page given back to its segment, or a segment in policy.c's pool
     * (no heap to push the page to): freed already.  Read from the line
     * the push writes (remote_size, 0 unless in use), never from the
     * owner's line, which its every malloc writes: reading it cost each
     * free a transfer of that line between the cores, and the owner's
     * next malloc another (bench xmalloc, producer and consumer on two
     * cores: free's median 420-450 cycles, 310-350 without). */
    uint32_t size = page->remote_size;
    if (unlikely(size == 0))
        emma_fatal(func, "double free", p);
    if (unlikely(size >= DEPOT_MIN)) {
        free_big_remote(seg, page, p, size, func); /* a tail call: no frame here */
        return;
    }
    remote_push(seg, page, (block_t *)p, func); /* inline: one call site */
    if (unlikely(remote_count(size)))
        policy_remote_step();
}

