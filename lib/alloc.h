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
 * thread it interrupted, between two of its instructions, never inside
 * one.  So with TLS the owner's list operations commit with one
 * instruction each, without a LOCK prefix (nothing else on another CPU
 * touches these fields): a cmpxchg on page->free, an add or xadd on
 * page->used.  A pop first counts its block in `used` (so that a handler
 * freeing the page's other blocks cannot retire the page under it), then
 * takes the whole list by swapping its head for PAGE_END, then puts the
 * rest back: a handler that finds the list parked goes to the slow path,
 * and one that allocated and freed the very head meanwhile cannot make the
 * pop take a block twice (no ABA: the list is never read while another
 * pop owns it).  Blocks a handler frees into that page while the pop
 * holds its list are left off it until the page empties (a rare, bounded
 * leak, never a double allocation).  Slow paths mark the heap busy
 * instead (internal.h: slow_enter).  Without TLS the heap lock does all
 * this, and plain loads and stores do. */

/* One-instruction, non-LOCK list and counter operations (see above).
 * page_take_head: if page->free is still *b, swap it for PAGE_END(page)
 * and say so (ZF); else load the head it found into *b.  *b stays in rax,
 * cmpxchg's accumulator, from the pop's first load to its return value,
 * and cmpxchg's ZF is the branch: no copy, no separate test, so the TLS
 * pop has exactly the base pop's instruction count plus the cmpxchg and
 * its jne (the base's test/mov-to-rax pair becomes cmp, the return value
 * needs no move).  page_used_add addresses page->used off the page
 * pointer, so no second pointer is kept live for the retry path.
 *
 * A handler interrupting the pop (rax = b, the page in a register) at
 * each boundary:
 *   before the addl: b may be stale; the cmpxchg then fails (or, if the
 *     head is b again after the handler popped and pushed it, succeeds
 *     and the link is read only after the take, so it is b's current
 *     link: no ABA).  A stale PAGE_END just takes the slow path.
 *   after the addl, before the cmpxchg: `used` counts one block more than
 *     is out, so no handler free can find the page empty and retire it.
 *   after a failed cmpxchg, before the addl -1: the same extra count;
 *     then the retry starts from the head cmpxchg loaded.
 *   after the take, before the store of next: the list is parked
 *     (PAGE_END); a handler's pop goes to the slow path, a handler's push
 *     succeeds onto PAGE_END and is then overwritten by the store (that
 *     block is off the list until the page empties: the documented leak;
 *     if the handler popped it again meanwhile, nothing is lost).
 *   after the store: the pop has committed; the prefetch touches nothing. */
static inline bool page_take_head(page_t *page, block_t **b)
{
    bool ok;
    __asm__ volatile("cmpxchgq %[pg], (%[pg])"
                     : "=@ccz"(ok), "+a"(*b)
                     : [pg] "r"(page)
                     : "memory");
    return ok;
}

static inline void page_used_add(page_t *page, int32_t d)
{
    __asm__ volatile("addl %[d], %c[used](%[pg])"
                     :
                     : [pg] "r"(page), [d] "ri"(d), [used] "i"(offsetof(page_t, used))
                     : "memory");
}

static inline void *page_pop(page_t *page)
{
    block_t *b, *end = PAGE_END(page);
    if (config_tls) {
        b = *(block_t *volatile *)&page->free;
        for (;;) {
            if (unlikely(b == end))
                return NULL;
            page_used_add(page, 1);
            if (likely(page_take_head(page, &b)))
                break;
            page_used_add(page, -1); /* a handler took the list: b is its head now */
        }
        block_t *next = link_get(b);
        *(block_t *volatile *)&page->free = next;
        /* the next block is likely cold (freed long ago, or by another
         * thread), and its link is the first thing the next pop reads */
        __builtin_prefetch(next, 1);
        check_mark_allocated(b);
        return b;
    }
    b = page->free;
    if (unlikely(b == end))
        return NULL;
    block_t *next = link_get(b);
    page->free = next;
    __builtin_prefetch(next, 1);
    page->used++;
    check_mark_allocated(b);
    return b;
}

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
    heap_t *h = heap_get();
    if (!config_tls && unlikely(!h)) {
        os_set_errno(EMMA_ENOMEM);
        return NULL;
    }
    void *p = heap_alloc_aligned(h, size, align);
    heap_put(h);
    return p;
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

/* Free of a block known to belong to a page of h.  A block that is
 * already the head of its page's list is being freed twice: the
 * `free(p); free(p)` that would otherwise hand p out twice (an abort with
 * one line, like the boundary checks; 2 instructions).  With TLS
 * the push commits with one cmpxchg; if a signal handler changed the list
 * between the read of its head and the cmpxchg, the block stays off the
 * list (a leak until its page empties, never a corrupt list), and `used`
 * goes down with one xadd, whose result (`used` before this free, never
 * re-read, so a handler's frees cannot make two frees see the same value)
 * is compared with page->slow_at as it is: types.h. */
static inline void heap_free_local_with(heap_t *h, page_t *page, void *p, const char *func,
                                        void (*slow_block)(heap_t *, void *))
{
    block_t *b = (block_t *)p;
    if (config_tls) {
        block_t *head, *enc;
        uint32_t before;
        (void)enc;
        __asm__ volatile goto("movq (%[pg]), %[head]\n\t"
#if EMMA_CONFIG_HARDENING
                     "movq %[head], %[enc]\n\t"
                     "xorq %[key], %[enc]\n\t"
                     "movq %[enc], (%[b])\n\t"
#else
                     "movq %[head], (%[b])\n\t"
#endif
                     "cmpq %[head], %[b]\n\t"
                     "je %l[twice]\n\t"
                     "cmpxchgq %[b], (%[pg])\n\t"
                     "movl $-1, %k[before]\n\t"
                     "xaddl %k[before], %c[used](%[pg])\n\t"
                     "cmpl %c[slow_at](%[pg]), %k[before]\n\t"
                     "je %l[slow]"
                     : [head] "=&a"(head), [enc] "=&r"(enc), [before] "=&r"(before)
                     : [pg] "r"(page), [b] "r"(b), [used] "i"(offsetof(page_t, used)),
                       [slow_at] "i"(offsetof(page_t, slow_at)), [key] "m"(list_key)
                     : "memory", "cc"
                     : twice, slow);
        return;
    } else {
        if (unlikely(page->free == b))
            goto twice;
        link_set(b, page->free);
        page->free = b;
        if (likely(page->used-- != page->slow_at))
            return;
    }
slow:
    if (slow_block)
        slow_block(h, p); /* the block, not its page: no register to move */
    else
        page_free_local_slow(h, page);
    return;
twice:
    emma_fatal(func, "double free", p);
}

static inline void heap_free_local(heap_t *h, page_t *page, void *p, const char *func)
{
    heap_free_local_with(h, page, p, func, NULL);
}

/* Free of a validated block: with TLS the owner's pages inline, the rest
 * (and everything without TLS) in free_generic. */
static inline void free_validated(void *p, const char *func)
{
#if EMMA_CONFIG_TLS
    segment_t *seg = segment_of(p);
    heap_t *h = tls_heap;
    if (likely(seg->heap == h)) {
        heap_free_local(h, page_of(seg, p), p, func);
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
