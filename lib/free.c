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
    size_t step = __atomic_load_n(&policy_remote_step_bytes, __ATOMIC_RELAXED);
    __atomic_store_n(w, c < step ? c : 0, __ATOMIC_RELAXED);
    return c >= step;
}

/* A huge block: to the huge cache, then the policy. */
static EMMA_NOINLINE void free_huge(segment_t *seg, void *p, const char *func)
{
    huge_check_pointer(seg, p, func);
    slow_state st;
    heap_t *h = slow_enter_self(&st);
    huge_free(seg);
    policy_huge_freed(h); /* a decay pass, and the bound with what the cache kept */
    slow_leave_self(h, st);
}

/* The tag a remote free leaves in its block's second word (every block
 * has two): a block whose second word is the tag of its page's current
 * list is likely on that list, freed already.  A different value per page
 * and per list (tf_gen moves whenever a list is taken, internal.h's
 * tf_take), so the tag a block kept from an earlier free does not match
 * once that free was collected; the address of a page descriptor, which
 * no block holds, with the generation in its high half, is no pointer a
 * program keeps.  A match is only a reason to look: data that matches by
 * chance, or a forged tag, costs one walk of the list (remote_listed),
 * never a false report, so the tag needs no secret. */
static inline uintptr_t remote_tag(const page_t *page, uint32_t gen)
{
    return (uintptr_t)page ^ ((uintptr_t)gen << 32);
}

static inline uintptr_t *tag_word(block_t *b) { return (uintptr_t *)b + 1; }

/* The word of a list with b pushed onto the list of word old. */
static inline uintptr_t tf_pushed(uintptr_t old, block_t *b)
{
    return (((old >> TF_SHIFT) + 1) << TF_SHIFT) | (uintptr_t)b;
}

/* Block b carries the tag of its page's list of generation gen: is it on
 * that list?  Walked from the head (at most the count of blocks it holds,
 * each link checked to stay inside the page), and trusted only if the
 * generation has not moved meanwhile: then nobody took the list while we
 * read it (tf_take moves it before it takes the list, x86-64 keeps stores
 * in order and loads in order), so what we read were its links, not data
 * written into blocks handed out since. */
static EMMA_NOINLINE EMMA_COLD bool remote_listed(segment_t *seg, page_t *page, block_t *b,
                                                   uint32_t gen)
{
    uintptr_t w = atomic_load_explicit(&page->thread_free, memory_order_acquire);
    uintptr_t area = (uintptr_t)seg + ((uintptr_t)(page - seg->pages) << seg->page_shift);
    uintptr_t end = area + ((uintptr_t)1 << seg->page_shift) - sizeof(block_t);
    block_t *x = tf_head(w);
    bool found = false;
    for (uint32_t n = tf_count(w); n > 0 && x && !found; n--) {
        if ((uintptr_t)x < area || (uintptr_t)x > end)
            break;
        found = x == b;
        x = (block_t *)((uintptr_t)__atomic_load_n(&x->next, __ATOMIC_RELAXED) ^ link_key());
    }
    atomic_thread_fence(memory_order_acquire);
    return found && atomic_load_explicit(&page->tf_gen, memory_order_relaxed) == gen;
}

bool remote_listed_now(segment_t *seg, page_t *page, block_t *b)
{
    uint32_t gen = atomic_load_explicit(&page->tf_gen, memory_order_relaxed);
    return __atomic_load_n(tag_word(b), __ATOMIC_RELAXED) == remote_tag(page, gen) &&
           remote_listed(seg, page, b, gen);
}

/* The first block of a list: it is the list's last block (for the
 * collect; the stack's push orders it).  Our block pins the page, but
 * reclaim.c may hand its segment to another heap meanwhile: the old
 * owner's collect then forwards it. */
static inline void remote_list_started(segment_t *seg, page_t *page, block_t *b)
{
    page->thread_tail = b;
    remote_pages_push(atomic_load_explicit((_Atomic(heap_t *) *)&seg->heap, memory_order_acquire),
                      page);
}

/* remote_push for a block that carried (`seen`) its page's current tag,
 * a list whose count is full, or a push that lost a race: reported if the
 * block is on the list, else pushed. */
static EMMA_NOINLINE EMMA_COLD void remote_push_slow(segment_t *seg, page_t *page, block_t *b,
                                                      uintptr_t seen, const char *func)
{
    uintptr_t old = atomic_load_explicit(&page->thread_free, memory_order_acquire);
    do {
        uint32_t gen = atomic_load_explicit(&page->tf_gen, memory_order_relaxed);
        uintptr_t tag = remote_tag(page, gen);
        /* more frees than the page has blocks: some block freed twice */
        if ((seen == tag && remote_listed(seg, page, b, gen)) ||
            tf_count(old) >= PAGE_MAX_BLOCKS)
            emma_fatal(func, "double free", b);
        block_t *head = tf_head(old);
        link_set(b, head ? head : PAGE_END(page));
        __atomic_store_n(tag_word(b), tag, __ATOMIC_RELAXED);
    } while (!atomic_compare_exchange_weak_explicit(&page->thread_free, &old, tf_pushed(old, b),
                                                    memory_order_release, memory_order_acquire));
    if (old == 0)
        remote_list_started(seg, page, b);
}

/* Lock-free push of a block freed by a thread that does not own the page,
 * counted in the list's word (types.h: TF_*) and tagged (remote_tag).  A
 * block found on the list already (its tag, then the list) is being freed
 * twice: reported, where the push would make the list a cycle.  The first
 * block to arrive also pushes the page onto its heap's remote_pages
 * stack; a page is on that stack exactly while its thread_free list is
 * non-empty, and only the owner empties both (page.c's
 * heap_collect_remote), with exchanges, so neither stack can suffer ABA.
 * One attempt here, every other case in remote_push_slow (which also
 * stops a count about to overflow: a list of more blocks than a page has
 * holds a block twice, which the owner's collect reports too).  Inline
 * in free_generic, its one caller on the way of every remote free. */
__attribute__((always_inline)) inline void remote_push(segment_t *seg, page_t *page, block_t *b,
                                                       const char *func)
{
    uintptr_t old = atomic_load_explicit(&page->thread_free, memory_order_acquire);
    uintptr_t seen = __atomic_load_n(tag_word(b), __ATOMIC_RELAXED);
    /* after the word: a list taken since carries a newer generation */
    uintptr_t tag = remote_tag(page, atomic_load_explicit(&page->tf_gen, memory_order_relaxed));
    if (unlikely(seen == tag)) {
        remote_push_slow(seg, page, b, seen, func);
        return;
    }
    block_t *head = tf_head(old);
    link_set(b, head ? head : PAGE_END(page));
    __atomic_store_n(tag_word(b), tag, __ATOMIC_RELAXED);
    if (unlikely(!atomic_compare_exchange_strong_explicit(&page->thread_free, &old,
                                                          tf_pushed(old, b), memory_order_release,
                                                          memory_order_relaxed))) {
        remote_push_slow(seg, page, b, seen, func);
        return;
    }
    if (old == 0)
        remote_list_started(seg, page, b);
}

/* A free of a shared heap's block (heap.c) whose heap's lock was taken
 * (never wait), or by a signal handler that interrupted this thread
 * inside emma (which does no policy work): pushed to the page's remote
 * list, which the lock's holder collects when it unlocks. */
static EMMA_NOINLINE void free_shared_busy(heap_t *owner, segment_t *seg, page_t *page, void *p,
                                           size_t size, const char *func)
{
    /* freed just now under the lock, the head of the page's list:
     * remote_push's tag check covers only the remote list */
    if (unlikely(__atomic_load_n(&page->free, __ATOMIC_RELAXED) == (block_t *)p))
        emma_fatal(func, "double free", p);
    remote_push(seg, page, (block_t *)p, func);
    /* the holder may have unlocked before our push: then it did not
     * see the block, and we collect it (or, in a race with its unlock,
     * the next holder does: internal.h, shared_unlock) */
    atomic_thread_fence(memory_order_seq_cst);
    if (!call_interrupted())
        shared_collect(owner);
    if (remote_count(size))
        policy_remote_step();
}

/* A free of a block above SMALL_MAX of another heap's page, not a shared
 * heap's: to the depot (depot.c), else home as any remote free. */
static EMMA_NOINLINE void free_big_home(segment_t *seg, page_t *page, void *p, size_t size,
                                        const char *func)
{
    if (depot_put(seg, page, size, p, func))
        return;
    remote_push(seg, page, (block_t *)p, func);
    if (remote_count(size))
        policy_remote_step();
}

/* The threads' big-block slots.  A malloc+free loop of 128-512 KiB
 * blocks took the shared heap's lock twice per pair, and with threads on
 * every core the lock's line, the page's free list and the yields of the
 * threads that found the lock taken made 4 threads on 2 cores 1.5x slower
 * than glibc (bench tight-big-4t: a third of the time in the kernel,
 * sched_yield, and tgkill probes of the holder).  So a thread keeps the
 * block of each class up to 512 KiB that it freed last, from the shared
 * heap only, in its heap's slot for its next malloc of the class (alloc.c:
 * alloc_big), which takes it without the lock, as mimalloc serves up to
 * 512 KiB from each thread's own pages.
 *
 * Memory stays bounded: a slot is counted at its class's size from its
 * first block until it is emptied, whether its block is in it or out, as
 * held memory (policy_hold: with the pages threads keep emptied, at most
 * an eighth of the bound for the whole process, held to the free-memory
 * bound; emma_stats' bytes_held); a block that finds no room goes to the
 * shared heap as before.  Slots serve malloc and free alternating, not
 * runs of frees: a second big free in a row (or a free that finds its
 * slot full) empties all the thread's slots into the shared heap, and the
 * thread keeps none until its next big malloc (big_cache_run), so that a
 * thread that frees what it holds and idles or exits keeps at most the
 * one block it freed first.  Without that rule, bench idle-bound-exit (16
 * threads free their 16 blocks of 16 KiB-1 MiB and exit) kept 34-35 MiB
 * resident 1.5 s later against 28-30 before the slots; with it 30.2-32.3
 * against 29.1-30.2, idle-bound-idle 29.3-30.7 against 28.9-32.4 (medians
 * of three interleaved sets of runs; NEWS).  Every decay pass (a quarter of the decay time, from any
 * thread's slow path) and every trim empties every slot.  A block in a
 * slot is out for its page: a double free of it is reported here. */
#if EMMA_CONFIG_TLS
enum { PUT_KEPT, PUT_NOT, PUT_FULL };
static int big_cache_put(heap_t *h, page_t *page, void *p, const char *func)
{
    _Atomic(uintptr_t) *slot = big_cache_slot(h, page->class_idx);
    if (!slot)
        return PUT_NOT;
    uintptr_t w = atomic_load_explicit(slot, memory_order_relaxed);
    if (unlikely(w == (uintptr_t)p))
        emma_fatal(func, "double free", p);
    if (w == BIG_CACHE_RESERVED)
        return atomic_compare_exchange_strong_explicit(slot, &w, (uintptr_t)p, memory_order_release,
                                                       memory_order_relaxed)
                   ? PUT_KEPT
                   : PUT_NOT;
    if (w != 0)
        return PUT_FULL;
    size_t size = class_size(page->class_idx);
    if (!policy_hold(size))
        return PUT_NOT;
    if (!atomic_compare_exchange_strong_explicit(slot, &w, (uintptr_t)p, memory_order_release,
                                                 memory_order_relaxed)) {
        policy_unhold(size); /* a signal handler filled it meanwhile */
        return PUT_NOT;
    }
    policy_depot_pinned_grew(); /* the bound, with what is pinned now */
    return PUT_KEPT;
}
#endif

/* Empty slot i of h: the word it held (0, BIG_CACHE_RESERVED or a
 * block, which the caller sends home). */
static uintptr_t big_cache_empty(heap_t *h, unsigned i)
{
    if (atomic_load_explicit(&h->big_cache[i], memory_order_relaxed) == 0)
        return 0;
    uintptr_t w = atomic_exchange_explicit(&h->big_cache[i], 0, memory_order_acquire);
    if (w != 0)
        policy_unhold(class_size(BIG_CACHE_FIRST + 2 * i));
    return w;
}

/* emma_stats: blocks in the slots, per class, added to waiting[] (they
 * are out for their pages, free for the program). */
void big_cache_stats(size_t *waiting)
{
    if (!config_tls)
        return;
    for (heap_t *h = heap_list_first(); h; h = h->next_heap)
        for (unsigned i = 0; i < BIG_CACHE_SLOTS; i++)
            if (atomic_load_explicit(&h->big_cache[i], memory_order_relaxed) > BIG_CACHE_RESERVED)
                waiting[BIG_CACHE_FIRST + 2 * i]++;
}

/* Empty every heap's slots: the blocks go home to the shared heap's
 * remote lists, which its next lock holder collects (the decay pass's
 * reclaim of the shared heap right after this, or shared_unlock). */
void big_cache_drain(void)
{
    if (!config_tls)
        return;
    for (heap_t *h = heap_list_first(); h; h = h->next_heap) {
        for (unsigned i = 0; i < BIG_CACHE_SLOTS; i++) {
            uintptr_t w = big_cache_empty(h, i);
            if (w > BIG_CACHE_RESERVED) {
                segment_t *seg = segment_of((void *)w);
                remote_push(seg, page_of(seg, (void *)w), (block_t *)w, "free");
            }
        }
    }
}

static void free_to_shared(heap_t *owner, segment_t *seg, page_t *page, void *p, size_t size,
                           const char *func);

#if EMMA_CONFIG_TLS
/* A run of frees, the last of p: the calling thread's slots emptied,
 * their blocks freed to the shared heap, and none kept until its next big
 * malloc. */
static EMMA_NOINLINE void big_cache_stop(heap_t *h, void *p, const char *func)
{
    h->big_cache_run = BIG_CACHE_OFF;
    for (unsigned i = 0; i < BIG_CACHE_SLOTS; i++) {
        uintptr_t w = big_cache_empty(h, i);
        if (unlikely(w == (uintptr_t)p))
            emma_fatal(func, "double free", p);
        if (w > BIG_CACHE_RESERVED) {
            segment_t *seg = segment_of((void *)w);
            page_t *page = page_of(seg, (void *)w);
            heap_t *owner = atomic_load_explicit((_Atomic(heap_t *) *)&seg->heap,
                                                 memory_order_relaxed);
            free_to_shared(owner, seg, page, (void *)w, page->remote_size, "free");
        }
    }
}
#endif

/* A free of a block above SMALL_MAX by a thread that does not own its
 * page.  A shared heap's block is freed under that heap's lock, as its
 * owner would (page_free_local_slow enters its slow path; a signal
 * handler that interrupts the push finds the lock taken, by its own
 * thread; a death inside leaves the page as alloc.h's page_push says);
 * the rest out of line, so that this saves no register. */
static EMMA_NOINLINE void free_big_remote(segment_t *seg, page_t *page, void *p, size_t size,
                                          const char *func)
{
    heap_t *owner = atomic_load_explicit((_Atomic(heap_t *) *)&seg->heap, memory_order_relaxed);
    if (!owner || !heap_is_shared(owner)) {
        free_big_home(seg, page, p, size, func);
        return;
    }
#if EMMA_CONFIG_TLS
    heap_t *self = tls_heap;
    if (self != &heap_busy && self != &heap_empty && heap_uses_shared(self) &&
        self->big_cache_run < BIG_CACHE_OFF) {
        /* the second free in a row (or one whose slot is full): a run */
        int r = self->big_cache_run++ ? PUT_FULL : big_cache_put(self, page, p, func);
        if (r == PUT_KEPT)
            return;
        if (r == PUT_FULL)
            big_cache_stop(self, p, func);
    }
#endif
    free_to_shared(owner, seg, page, p, size, func);
}

/* A free of shared heap owner's block: under its lock, else pushed. */
static void free_to_shared(heap_t *owner, segment_t *seg, page_t *page, void *p, size_t size,
                           const char *func)
{
    if (unlikely(call_interrupted() || !shared_trylock(owner))) {
        free_shared_busy(owner, seg, page, p, size, func);
        return;
    }
    heap_free_local(owner, page, p, func);
    shared_unlock(owner);
}

/* A remote free that makes the calling thread due for a remote step: the
 * push, then the step (which may give back the block's page). */
static EMMA_NOINLINE void free_remote_stepping(segment_t *seg, page_t *page, void *p,
                                               const char *func)
{
    remote_push(seg, page, (block_t *)p, func);
    policy_remote_step();
}

/* Everything free_validated() does not do inline: with TLS its caller has
 * already found that the calling thread does not own the block. */
void free_generic(void *p, const char *func)
{
    segment_t *seg = segment_of(p);
    if (header_bad(seg)) {
        check_bad_header(p, func); /* never returns */
        return;
    }
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
    /* (NULL: a pooled segment, the block freed already; so is a thread's
     * preferred slot before its first allocation) */
    if (h == preferred_heap() && h && heap_trylock(h)) {
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
    /* counted first: nothing is live across the push's calls (no frame) */
    if (unlikely(remote_count(size))) {
        free_remote_stepping(seg, page, p, func);
        return;
    }
    remote_push(seg, page, (block_t *)p, func);
}

