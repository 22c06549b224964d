/* The generic allocation paths behind alloc.h's inline fast path: finding
 * or making a page with a free block, huge requests, calloc, realloc and
 * usable size; and the memory copy/zero primitives.  Free is in free.c.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "alloc.h"
#include "policy.h"

/* gcc may still emit calls to memcpy/memset for plain loops; these use the
 * string instructions directly, which modern x86 cores run at full speed. */
void mem_copy(void *dst, const void *src, size_t n)
{
    __asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}

void mem_zero(void *dst, size_t n)
{
    __asm__ volatile("rep stosb" : "+D"(dst), "+c"(n) : "a"(0) : "memory");
}

/* A block from page, making room on its free list if it has any: collected
 * remote frees, blocks not carved yet, or blocks sparse.c purged. */
static void *page_take(page_t *page)
{
    if (page->free != PAGE_END(page))
        return page_pop(page);
    if (page->local_free) {
        page->free = page->local_free;
        page->local_free = NULL;
        return page_pop(page);
    }
    if (page->capacity < page->reserved) {
        page_extend(page);
        return page_pop(page);
    }
    page_absorb_remote(page); /* blocks others purged off its remote frees */
    if (page->absent) {
        /* its class needs blocks again: cheaper than a fresh page */
        page_revive(page);
        return page_pop(page);
    }
    return NULL;
}

/* Take a block of class c from h: from the first page in the class queue
 * that has one, moving exhausted pages out of the queue and sparse ones to
 * the parked queue as we pass them (so that allocation refills the fuller
 * pages and a sparse page can drain and be released); then from the
 * fullest recently parked page; else from a fresh page. */
static inline __attribute__((always_inline)) void *alloc_class(heap_t *h, unsigned c)
{
    h->class_pass[c] = h->sparse_passes; /* the class is in use (sparse.c) */
    page_t *page = h->bins[c].first;
    while (page) {
        page_t *next = page->next;
        if (page_should_park(page)) {
            page_park(h, page);
        } else {
            void *b = page_take(page);
            if (b)
                return b;
            page_mark_full(h, page);
        }
        page = next;
    }
    while ((page = page_unpark(h, c)) != NULL) {
        void *b = page_take(page);
        if (b)
            return b;
        page_mark_full(h, page);
    }
    if (class_size(c) >= DEPOT_MIN) {
        void *b = depot_take(h, c);
        if (b)
            return b;
    }
    page = page_fresh(h, c);
    if (!page)
        return NULL;
    bin_push_front(h, page);
    return page_pop(page);
}

/* A block of class c (above SHARED_MIN) for h's thread from the first
 * shared heap whose lock is free, or NULL (every one stayed taken, or no
 * memory): then the caller takes it from its own heap.  A lock found
 * taken is tried SHARED_TRIES times, with a yield in between (its holder
 * is likely waiting for a CPU: with 8 threads on 2 cores, falling back at
 * once took 3-7% of mstress's big blocks from the threads' own pages,
 * 15-50 MiB of them at the peak), probing the holder from the second try
 * on (heap.c). */
#define SHARED_TRIES 4
static EMMA_NOINLINE void *alloc_shared(heap_t *h, unsigned c)
{
    for (unsigned i = 0; i < SHARED_HEAPS * SHARED_TRIES; i++) {
        heap_t *s = heap_lock_shared(i % SHARED_HEAPS, i >= SHARED_HEAPS);
        if (!s) {
            if (i % SHARED_HEAPS == SHARED_HEAPS - 1 && i + 1 < SHARED_HEAPS * SHARED_TRIES)
                os_yield();
            continue;
        }
        slow_state st = slow_enter(s);
        s->borrower = h; /* policy.c: its free pages, if s maps memory */
        heap_collect_remote(s);
        void *b = alloc_class(s, c);
        s->borrower = NULL;
        slow_leave(s, st);
        shared_unlock(s);
        return b;
    }
    return NULL;
}

/* Big blocks come from the shared heaps (policy.h), but in a signal
 * handler that interrupted a slow path (it may hold a shared heap's
 * seg_lock, policy.c). */
static bool alloc_shares(const heap_t *h) { return heap_uses_shared(h) && !slow_interrupted(); }

#define CLASS_FINE_SHARE 64

/* Allocation from h, inside its slow path (or under its lock). */
static void *alloc_in(heap_t *h, size_t size, size_t align)
{
    if (align <= MIN_ALIGN && size <= LARGE_MAX) {
        /* The class queue's first page: the fast path of sizes above the
         * direct table, and a second look for direct sizes (a heap just
         * acquired for the thread may have blocks where heap_empty had none);
         * alloc_generic looked at the shared heap's for big sizes. */
        if (size < SHARED_MIN || !alloc_shares(h)) {
            page_t *first = h->bins[class_of_size(size)].first;
            void *b = first ? page_pop(first) : NULL;
            if (b)
                return b;
        }
    }
    if (unlikely(size > MAX_REQUEST))
        return NULL;
    policy_tick(h); /* huge blocks too: they drive the decay like any slow path */
    if (size > LARGE_MAX || align > LARGE_MAX)
        return unlikely(h->is_private) ? private_huge_alloc(h, size, align)
                                       : huge_alloc(size, align, false, h);
    if (size >= SHARED_MIN && align <= MIN_ALIGN && !h->is_private) {
        void *p = huge_alloc_exact(size, h); /* under ulimit -v only */
        if (p)
            return p;
    }
    heap_collect_remote(h);
    /* under a limit, past a 64th of it mapped: four classes per doubling
     * (sizeclass.h; bench oomcap-big-small, 16 B-64 KiB blocks once 1-7
     * MiB ones were freed, under ulimit -v 256M: see NEWS) */
    if (unlikely(!class_fine) && size > SMALL_MAX && !h->is_private && space_scarce(CLASS_FINE_SHARE))
        classes_go_fine();
    unsigned c = class_for(size, align);
    if (class_size(c) >= SHARED_MIN && alloc_shares(h)) {
        void *b = alloc_shared(h, c);
        if (b)
            return b;
    }
    return alloc_class(h, c);
}

#if EMMA_CONFIG_TLS
/* A signal handler that interrupted a slow path of this thread's heap:
 * allocate from a spare heap, never from the interrupted one. */
static void *alloc_spare(size_t size, size_t align)
{
    heap_t *s = heap_lock_spare();
    if (!s)
        return NULL;
    heap_t *saved = tls_slow_heap;
    tls_slow_heap = NULL; /* no huge cache: its owner may be mid-update */
    void *p = alloc_in(s, size, align);
    tls_slow_heap = saved;
    heap_unlock_spare(s);
    return p;
}
#endif

/* alloc_generic, after its first look at the shared heap. */
static EMMA_NOINLINE void *alloc_slow(size_t size, size_t align, heap_t *h)
{
    void *p;
#if EMMA_CONFIG_TLS
    if (unlikely(h == &heap_busy)) {
        if (!heap_left_recover()) {
            p = alloc_spare(size, align);
            goto out;
        }
        h = tls_heap; /* left by siglongjmp: the thread's heap again */
    }
    if (unlikely(h == &heap_empty)) {
        tls_heap = &heap_busy; /* a handler meanwhile takes a spare heap */
        h = heap_acquire_for_thread();
        if (!h) {
            tls_heap = &heap_empty;
            os_set_errno(EMMA_ENOMEM);
            return NULL;
        }
    }
#endif
    slow_state st = slow_enter(h);
    p = alloc_in(h, size, align);
    slow_leave(h, st);
#if EMMA_CONFIG_TLS
out:
#endif
    if (unlikely(!p))
        os_set_errno(EMMA_ENOMEM);
    return p;
}

#if EMMA_CONFIG_TLS
/* A big block: the one this thread keeps of its class (free.c:
 * big_cache_put), else from the first page of its class in the first
 * shared heap, if its lock is free: before (and without) the slow path of the
 * thread's heap (whose clock read alone costs 50 ns in some virtual
 * machines).  A signal handler that interrupts it finds the lock taken,
 * by its own thread; a death inside leaves the page as alloc.h's page_pop
 * says.  Not for heap_busy (a handler that interrupted a slow path, which
 * may hold the shared lock) nor heap_empty (the thread's first
 * allocation). */
static EMMA_NOINLINE void *alloc_big(size_t size, heap_t *h)
{
    if (h != &heap_busy && h != &heap_empty && heap_uses_shared(h)) {
        if (h->big_cache_run)
            h->big_cache_run = 0; /* free.c: big_cache_stop */
        _Atomic(uintptr_t) *slot = big_cache_slot(h, class_of_size(size));
        uintptr_t w = slot ? atomic_load_explicit(slot, memory_order_relaxed) : 0;
        if (w > BIG_CACHE_RESERVED &&
            atomic_compare_exchange_strong_explicit(slot, &w, BIG_CACHE_RESERVED,
                                                    memory_order_acquire, memory_order_relaxed)) {
            check_mark_allocated((void *)w);
            return (void *)w;
        }
        heap_t *s = heap_shared(0);
        if (s && shared_trylock(s)) {
            page_t *first = s->bins[class_of_size(size)].first;
            void *b = first ? page_pop(first) : NULL;
            shared_unlock(s);
            if (b)
                return b;
        }
    }
    return alloc_slow(size, MIN_ALIGN, h);
}
#endif

void *alloc_generic(size_t size, size_t align, heap_t *h)
{
#if EMMA_CONFIG_TLS
    if (likely(align <= MIN_ALIGN)) {
        /* 1-64 KiB: the first page of the class queue, as the direct
         * table's page for smaller sizes, behind the same busy marker
         * (alloc.h: alloc_block), for the thread's own heap only (a
         * private heap's user comes here too, through heap_alloc: it takes
         * alloc_slow's way).  heap_empty and heap_busy have no pages.
         * Without it every such malloc took alloc_slow's way in and out
         * (bench/tight 1 N 16384,32768,65536 8, callgrind: about 80
         * instructions more per malloc+free).  Tested first: the big
         * sizes' way costs far more than the test. */
        if (size - (DIRECT_MAX + 1) < SHARED_MIN - (DIRECT_MAX + 1)) {
            if (h == tls_heap) {
                void *b = owner_pop(h, &h->bins[class_of_mid_size(size)].first, true);
                if (b)
                    return b;
            }
        } else if (unlikely(size - SHARED_MIN <= LARGE_MAX - SHARED_MIN)) {
            return alloc_big(size, h);
        }
    }
#endif
    return alloc_slow(size, align, h);
}

size_t usable_size(const void *p)
{
    segment_t *seg = segment_of(p);
    if (header_bad(seg))
        check_bad_header(p, "malloc_usable_size"); /* never returns */
    if (seg->kind == KIND_HUGE)
        return huge_usable(seg, p);
    return page_of(seg, p)->block_size;
}

void *alloc_zeroed(size_t size, size_t align)
{
    if (size > LARGE_MAX || align > LARGE_MAX) {
        slow_state st;
        heap_t *h = slow_enter_self(&st);
        policy_tick(h);
        void *p = size > MAX_REQUEST ? NULL : huge_alloc(size, align, true, h);
        slow_leave_self(h, st);
        if (!p)
            os_set_errno(EMMA_ENOMEM);
        return p; /* fresh mappings are zero: touch nothing */
    }
    void *p = alloc_block(size, align); /* alloc.h: the fast path, signal-safe */
    if (p)
        mem_zero(p, size);
    return p;
}

#define SHRINK_IN_PLACE_MIN ((size_t)64 << 10)

/* Resize p (already validated) to new_size bytes aligned to align: in
 * private heap h (called by h's user), or for h NULL moving it, if it must
 * move, to the calling thread's heap. */
void *realloc_block(heap_t *h, void *p, size_t new_size, size_t align, const char *func)
{
    if (new_size > MAX_REQUEST) {
        os_set_errno(EMMA_ENOMEM);
        return NULL;
    }
    segment_t *seg = segment_of(p);
    if (header_bad(seg))
        check_bad_header(p, func); /* never returns */
    bool want_huge = new_size > LARGE_MAX || align > LARGE_MAX;
    size_t old_usable;
    if (seg->kind == KIND_HUGE) {
        huge_check_pointer(seg, p, func);
        /* shrinking to a size still worth its own mapping: in place, the
         * tail given back */
        if (want_huge || (align <= OS_PAGE_SIZE && new_size >= SHRINK_IN_PLACE_MIN)) {
            slow_state st;
            heap_t *self = slow_enter_self(&st);
            void *q = huge_realloc(seg, p, new_size, self);
            slow_leave_self(self, st);
            if (!q)
                os_set_errno(EMMA_ENOMEM);
            return q;
        }
        old_usable = huge_usable(seg, p);
    } else {
        page_t *page = page_of(seg, p);
        if (!want_huge && class_for(new_size, align) == page->class_idx)
            return p;
        old_usable = page->block_size;
    }
    void *q = h ? heap_alloc_aligned(h, new_size, align) : alloc_block(new_size, align);
    if (!q)
        return NULL;
    mem_copy(q, p, old_usable < new_size ? old_usable : new_size);
    if (config_checks)
        check_mark_free(p, func);
    if (h)
        heap_free_block(h, p, func);
    else
        free_validated(p, func);
    return q;
}
