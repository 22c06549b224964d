/* The inline fast paths of allocation and free: pop a block off the
 * page the direct table names, push a freed block back onto its page when
 * the calling thread owns it.  Everything else goes to alloc_generic
 * (alloc.c) or free_generic (free.c).  Included by the API files and by
 * the few files that call the fast paths themselves (alloc.c, free.c).
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef EMMA_ALLOC_H
#define EMMA_ALLOC_H

#include "internal.h"

static inline void *page_pop(page_t *page)
{
    block_t *b = page->free;
    if (likely(b != NULL)) {
        page->free = b->next;
        /* the next block is likely cold (freed long ago, or by another
         * thread), and its link is the first thing the next pop reads */
        __builtin_prefetch(b->next, 1);
        page->used++;
        check_mark_allocated(b);
    }
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
    return alloc_generic(h, size, MIN_ALIGN);
}

/* Allocation from h with any alignment. */
static inline void *heap_alloc_aligned(heap_t *h, size_t size, size_t align)
{
    return likely(align <= MIN_ALIGN) ? heap_alloc(h, size) : alloc_generic(h, size, align);
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

/* Free of a block known to belong to a page of h. */
static inline void heap_free_local(heap_t *h, page_t *page, void *p)
{
    block_t *b = (block_t *)p;
    b->next = page->free;
    page->free = b;
    if (unlikely(--page->used == page->slow_mark))
        page_free_local_slow(h, page);
}

/* Free of a validated block: with TLS the owner's pages inline, the rest
 * (and everything without TLS) in free_generic. */
static inline void free_validated(void *p)
{
#if EMMA_CONFIG_TLS
    segment_t *seg = segment_of(p);
    heap_t *h = tls_heap;
    if (likely(seg->heap == h)) {
        heap_free_local(h, page_of(seg, p), p);
        return;
    }
#endif
    free_generic(p);
}

/* free() and friends: validation (--enable-boundary-checks), then free. */
static inline void free_block(void *p, const char *func)
{
    if (config_checks) {
        check_pointer(p, func);
        check_mark_free(p);
    }
    free_validated(p);
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
static inline void heap_free_block(heap_t *h, void *p)
{
    segment_t *seg = segment_of(p);
    if (likely(seg->heap == h))
        heap_free_local(h, page_of(seg, p), p);
    else
        free_generic(p);
}

#endif
