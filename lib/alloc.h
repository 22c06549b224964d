/* The inline fast paths of allocation and free: pop a block off the
 * page the direct table names, push a freed block back onto its page when
 * the calling thread owns it.  Everything else goes to alloc_generic
 * (alloc.c) or free_generic (free.c).  Included by the API files and by
 * the few files that call the fast paths themselves (alloc.c, free.c).
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef EMMA_ALLOC_H
#define EMMA_ALLOC_H

#include "internal.h"

/* ------------------------------------------------------------------ */
/* Async-signal safety (TLS).  A signal handler that allocates runs on the
 * thread it interrupted, between two of its instructions.  The owner's
 * fast paths (alloc_block, free_validated) switch tls_heap to heap_busy
 * around their list operation, as the slow paths do (internal.h:
 * slow_enter): a handler that finds heap_busy allocates from a spare heap
 * and frees through the remote lists, so nothing else touches the
 * interrupted heap's lists, and the pop and the push are plain loads and
 * stores.  Cost: a lea of heap_busy and two stores per call, 2
 * instructions per malloc+free more than without signal safety (the
 * lists' code is shorter than before it).  A pop that took the whole list
 * with one non-LOCK cmpxchg and a push that committed with one was as
 * short in instructions but made tight loops 15-20% slower.
 *
 * A thread that dies between two of these instructions (cancelled
 * asynchronously, or a raw SYS_exit from a handler) leaves a consistent
 * heap: a pop unlinks its block before counting it, a push uncounts its
 * block before linking it, so at worst one block is neither on the list
 * nor counted (gone until its page is emptied and reused; never handed out
 * twice).  The volatile stores keep that order.  Without TLS the heap lock
 * does all this. */
static inline void *page_pop(page_t *page)
{
    block_t *b;
    /* loaded into rax, the return register: no move at the end */
    __asm__ volatile("movq %[f], %[b]" : [b] "=a"(b) : [f] "m"(page->free));
    if (unlikely(b == PAGE_END(page)))
        return NULL;
    block_t *next = link_get(b);
    *(block_t *volatile *)&page->free = next;
    /* the next block is likely cold (freed long ago, or by another
     * thread), and its link is the first thing the next pop reads */
    __builtin_prefetch(next, 1);
    __asm__ volatile("addl $1, %c[used](%[pg])"
                     :
                     : [pg] "r"(page), [used] "i"(offsetof(page_t, used))
                     : "memory");
    check_mark_allocated(b);
    return b;
}

#if EMMA_CONFIG_TLS
/* Pop a block off the page in *slot, a page of h, the calling thread's own
 * heap (tls_heap), behind the busy marker: alloc_block's direct-table
 * page, and alloc.c's first page of a class queue for sizes past the
 * direct table (`maybe_none`: the queue may be empty).  The page is read
 * behind the marker too: a signal handler that ran between that read and
 * the marker could have emptied and released it, or handed it to another
 * class. */
static inline __attribute__((always_inline)) void *owner_pop(heap_t *h, page_t *const *slot,
                                                              bool maybe_none)
{
    tls_heap = &heap_busy;
    __asm__ volatile("" ::: "memory");
    page_t *page = *slot;
    void *b = maybe_none && !page ? NULL : page_pop(page);
    __asm__ volatile("" ::: "memory");
    tls_heap = h;
    return b;
}
#endif

/* malloc-style allocation with the default alignment. */
static inline void *heap_alloc(heap_t *h, size_t size)
{
    if (likely(size <= DIRECT_MAX)) {
        void *b = page_pop(h->direct[(size + MIN_ALIGN - 1) / MIN_ALIGN]);
        if (likely(b != NULL))
            return b;
    }
    return alloc_generic(size, MIN_ALIGN, h);
}

/* Allocation from h with any alignment. */
static inline void *heap_alloc_aligned(heap_t *h, size_t size, size_t align)
{
    return likely(align <= MIN_ALIGN) ? heap_alloc(h, size) : alloc_generic(size, align, h);
}

/* malloc-style allocation through the calling thread's heap. */
static inline void *alloc_block(size_t size, size_t align)
{
#if EMMA_CONFIG_TLS
    heap_t *h = tls_heap;
    if (likely(size <= DIRECT_MAX && align <= MIN_ALIGN)) {
        void *b = owner_pop(h, &h->direct[(size + MIN_ALIGN - 1) / MIN_ALIGN], false);
        if (likely(b != NULL))
            return b;
    }
    return alloc_generic(size, align, h);
#else
    heap_t *h = heap_get();
    if (!config_tls && unlikely(!h)) {
        os_set_errno(EMMA_ENOMEM);
        return NULL;
    }
    void *p = heap_alloc_aligned(h, size, align);
    heap_put(h);
    return p;
#endif
}

/* The emma_* API's alignment argument: a power of two, else EINVAL (or,
 * with boundary checks, a fatal error). */
static inline bool align_ok(size_t align, const void *ptr, const char *func)
{
    if (likely(align != 0 && (align & (align - 1)) == 0))
        return true;
    if (config_checks)
        emma_fatal(func, "alignment is not a power of two", ptr);
    os_set_errno(EMMA_EINVAL);
    return false;
}

/* align is 1, 2, 4, 8 or 16 (a power of two no larger than MIN_ALIGN), the
 * common case of the emma_* API, told with one bit test: half of
 * align_ok's instructions on the way to heap_alloc. */
static inline bool align_small(size_t align)
{
    _Static_assert(MIN_ALIGN == 16, "the mask has bits 1, 2, 4, 8 and 16");
    return align <= MIN_ALIGN && ((0x10116u >> align) & 1u) != 0;
}

/* Push block b onto its page's list and return `used` as it was before
 * (one xadd: compared with page->slow_at as it is, types.h).  A block that
 * is already the head of its page's list is being freed twice: the
 * `free(p); free(p)` that would otherwise hand p out twice (an abort with
 * one line, like the boundary checks; 2 instructions). */
static inline uint32_t page_push(page_t *page, block_t *b, const char *func)
{
    block_t *head = page->free;
    if (unlikely(head == b))
        emma_fatal(func, "double free", b);
    uint32_t before = (uint32_t)-1;
    __asm__ volatile("xaddl %[before], %c[used](%[pg])"
                     : [before] "+r"(before)
                     : [pg] "r"(page), [used] "i"(offsetof(page_t, used))
                     : "memory");
    link_set(b, head);
    *(block_t *volatile *)&page->free = b;
    return before;
}

/* Free of a block known to belong to a page of h, by its user (a private
 * heap, or without TLS under h's lock). */
static inline void heap_free_local_with(heap_t *h, page_t *page, void *p, const char *func,
                                        void (*slow_block)(heap_t *, void *))
{
    if (likely(page_push(page, (block_t *)p, func) != page->slow_at))
        return;
    if (slow_block)
        slow_block(h, p); /* the block, not its page: no register to move */
    else
        page_free_local_slow(h, page);
}

static inline void heap_free_local(heap_t *h, page_t *page, void *p, const char *func)
{
    heap_free_local_with(h, page, p, func, NULL);
}

/* Free of a validated block: with TLS the owner's pages inline, behind
 * the busy marker (see page_pop), the rest (and everything without TLS) in
 * free_generic. */
static inline void free_validated(void *p, const char *func)
{
#if EMMA_CONFIG_TLS
    segment_t *seg = segment_of(p);
    heap_t *h = tls_heap;
    if (likely(seg->heap == h)) {
        page_t *page = page_of(seg, p);
        tls_heap = &heap_busy;
        __asm__ volatile("" ::: "memory");
        /* the slow path runs behind the marker too (and drops it): a
         * handler that ran between the push and it (emma_trim) could
         * release the page */
        if (unlikely(page_push(page, (block_t *)p, func) == page->slow_at)) {
            page_free_local_slow_marked(h, page);
            return;
        }
        __asm__ volatile("" ::: "memory");
        tls_heap = h;
        return;
    }
#endif
    free_generic(p, func);
}

/* free() and friends: validation (--enable-boundary-checks), then free. */
static inline void free_block(void *p, const char *func)
{
    if (config_checks) {
        check_pointer(p, func);
        check_mark_free(p, func);
    }
    free_validated(p, func);
}

/* Free with the caller's idea of the block's layout (emma_dealloc,
 * free_sized, free_aligned_sized): checked against the block with
 * --enable-boundary-checks, ignored otherwise. */
static inline void free_layout(void *p, size_t size, size_t align, const char *func)
{
    if (!p)
        return;
    if (config_checks)
        check_layout(p, size, align, func);
    free_block(p, func);
}

/* Free of a validated block by the user of (private) heap h: its own
 * pages inline, others' and huge blocks in free_generic. */
static inline void heap_free_block(heap_t *h, void *p, const char *func)
{
    segment_t *seg = segment_of(p);
    if (likely(seg->heap == h))
        heap_free_local(h, page_of(seg, p), p, func);
    else
        free_generic(p, func);
}

#endif
