/* The memory policy: the one place that decides when free memory goes
 * back to the kernel, for the whole process (knobs in policy.h).
 *
 *   accounting   every free byte that may be resident (free pages of every
 *                heap, empty segments in the pool, the huge cache, the
 *                tails kept past live huge blocks), counted in bytes
 *                actually touched, is in one process-wide count.  Free
 *                memory other threads cannot give back is counted apart,
 *                each within a budget (policy.h: pages held empty by
 *                their owner, pages the depot's blocks keep in use), and
 *                the count is held to the bound less it (count_bound).
 *   bound        policy_free_bound (32 MiB) is a hard limit: a slow path
 *                that takes the count past it gives memory back at once,
 *                longest free first, process-wide (over_bound), so at most
 *                the bound stays resident once it returns, and that is
 *                what is left when every thread goes idle, whatever the
 *                number of threads and the timing.  Past three quarters
 *                of it, what has been free for half the decay time or
 *                longer goes (a soft shrink, now and then).
 *   decay        memory free for longer than policy_decay_ticks (about
 *                0.1 s) goes back at the next decay pass.  A pass runs at
 *                most every quarter of that, driven by whichever thread's
 *                slow path comes first (a page freed or taken, a huge
 *                block allocated or freed, a heap's free list running
 *                dry): it purges the pool, the huge cache and every heap
 *                (another thread's heap only if its lock is free), and
 *                takes over what dead threads hold and what idle threads'
 *                pages received from remote frees (reclaim.c).  No thread
 *                of its own: a process where no thread allocates keeps
 *                what it had.
 *   remote frees a thread freeing blocks into other threads' pages counts
 *                their bytes and takes a remote step every
 *                policy_remote_step_bytes (2 MiB shared out among the
 *                heaps): a decay pass if due, then the pages those frees
 *                emptied go back to their segments, counted, whatever
 *                their owner does, alive or exited (reclaim.c), and the
 *                bound applies.  So remote frees into an idle or exited
 *                thread's pages are under the bound when the freeing call
 *                returns, with no thread allocating.
 *   huge blocks  a freed huge mapping stays mapped in one process-wide
 *                cache (huge.c); what it may keep resident is
 *                policy_huge_cold_bytes (4 MiB) until the program reuses
 *                cached mappings, then whatever room the bound leaves
 *                besides the other free memory (the cache makes room for
 *                a freed block by purging its oldest pages first); a block
 *                reusing a longer mapping keeps the pages past its end if
 *                few are resident, up to a quarter of the bound in all,
 *                within the bound.
 *   sparse pages are thinned out (sparse.c) at most every PURGE_DELAY,
 *                when the heap is about to take a fresh page, and only
 *                once they look sparse in two passes in a row; so are the
 *                pages (but the first) of a class no longer allocated.
 *   trim         emma_trim()/malloc_trim() give back everything free in
 *                every heap, the pool and the huge cache, from any thread.
 *   no memory    when the kernel refuses a mapping, the same trim runs
 *                and the mapping is tried once more.
 *
 * Costs: one clock read (rdtsc) per slow path; a spin lock per page taken
 * from or given back to a segment (heap->seg_lock), per segment taken from
 * the pool and per huge block; on a remote free, two loads, an add and a
 * store (the count); the owner's malloc/free fast paths are untouched.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "internal.h"
#include "policy.h"

size_t policy_free_bound = (size_t)32 << 20;
uint64_t policy_decay_ticks = (uint64_t)1 << 28;
size_t policy_huge_cold_bytes = (size_t)4 << 20;
bool policy_shared_heaps = true;

static _Atomic size_t resident;     /* free but resident bytes, process-wide */
static _Atomic uint64_t next_pass;  /* now_ticks when a decay pass may run */

void policy_resident_add(size_t n) { atomic_fetch_add_explicit(&resident, n, memory_order_relaxed); }

void policy_resident_sub(size_t n) { atomic_fetch_sub_explicit(&resident, n, memory_order_relaxed); }

size_t policy_resident(void)
{
    size_t r = atomic_load_explicit(&resident, memory_order_relaxed);
    return r > SIZE_MAX / 2 ? 0 : r; /* a subtraction seen before its addition */
}

/* Pinned memory (policy.h): held pages, and pages the depot's blocks pin.
 * A budget is checked before the addition: racing threads may pass it by
 * what they add at once, a page each. */
static _Atomic size_t held_total;
static _Atomic size_t depot_pinned;

static bool budget_take(_Atomic size_t *c, size_t n, size_t max)
{
    if (atomic_load_explicit(c, memory_order_relaxed) + n > max)
        return false;
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
    return true;
}

bool policy_hold(size_t n) { return budget_take(&held_total, n, HELD_MAX(policy_free_bound)); }

void policy_unhold(size_t n) { atomic_fetch_sub_explicit(&held_total, n, memory_order_relaxed); }

bool policy_depot_pin(size_t n)
{
    return budget_take(&depot_pinned, n, DEPOT_PIN_MAX(policy_free_bound));
}

void policy_depot_unpin(size_t n) { atomic_fetch_sub_explicit(&depot_pinned, n, memory_order_relaxed); }

size_t policy_held_bytes(void) { return atomic_load_explicit(&held_total, memory_order_relaxed); }

size_t policy_depot_pinned_bytes(void)
{
    return atomic_load_explicit(&depot_pinned, memory_order_relaxed);
}

size_t policy_pinned(void)
{
    size_t r = atomic_load_explicit(&held_total, memory_order_relaxed) +
               atomic_load_explicit(&depot_pinned, memory_order_relaxed);
    return r > SIZE_MAX / 2 ? 0 : r;
}

/* The bound for the count: policy_free_bound less what is pinned (the
 * budgets keep that to 5/8 of it, but for races: never less than a
 * quarter of it). */
static size_t count_bound(void)
{
    size_t bound = policy_free_bound, p = policy_pinned(), most = bound - bound / 4;
    return bound - (p < most ? p : most);
}

/* Every heap but self: what has been free since before `before` (all,
 * with `all`). */
static size_t reclaim_others(heap_t *self, uint64_t before, bool all)
{
    /* a shared heap (heap.c: the caller holds it) takes nothing over */
    heap_t *taker = self && self->spare ? NULL : self;
    size_t n = 0;
    for (heap_t *h = heap_list_first(); h; h = h->next_heap)
        if (h != self)
            n += reclaim_heap(taker, h, before, all);
    return n;
}

/* A private heap (heap_private.c) takes no part in the policy: its free
 * pages are not counted, nothing else's memory is handed to it, and it is
 * purged only by emma_heap_reset/_destroy; its slow paths still drive the
 * process's decay passes. */
static heap_t *public_heap(heap_t *h) { return h && h->is_private ? NULL : h; }

/* Another thread's heap, purged without its owner: what has been free
 * since before `before`; returns the free bytes left there because its
 * lock was taken.  With TLS only the heap's seg_lock is try-locked (as
 * reclaim.c does for a live owner); a spare heap and a heap without owner
 * are left to the decay pass, which locks them whole (a signal handler
 * that interrupted us may take them).  Without TLS the heap's lock is
 * try-locked first, as reclaim.c does.  A poisoned heap (its owner died
 * in a slow path, or was lost in a fork) is never touched. */
static size_t purge_other(heap_t *h, uint64_t before, size_t limit)
{
    size_t d = __atomic_load_n(&h->dirty_bytes, __ATOMIC_RELAXED);
    if (d == 0 || atomic_load_explicit(&h->poisoned, memory_order_relaxed))
        return 0;
#if EMMA_CONFIG_TLS
    if (heap_is_shared(h)) {
        /* used under its lock, as a heap without TLS */
        if (!shared_trylock(h))
            return d;
        slow_state st = slow_enter(h);
        size_t n = heap_purge_some(h, before, true, limit);
        slow_leave(h, st);
        shared_unlock(h);
        return n == 0 && before == UINT64_MAX ? d : 0;
    }
    if (h->spare || atomic_load_explicit(&h->owner, memory_order_relaxed) == 0)
        return 0;
    size_t n = heap_purge_some(h, before, false, limit);
#else
    if (!heap_trylock(h))
        return d;
    size_t n = heap_purge_some(h, before, true, limit);
    heap_unlock(h);
#endif
    return n == 0 && before == UINT64_MAX ? d : 0; /* everything asked: none given, locked */
}

/* Free bytes no shrink can give back: those of poisoned heaps. */
static size_t poisoned_bytes(void)
{
    size_t n = 0;
    for (heap_t *h = heap_list_first(); h; h = h->next_heap)
        if (atomic_load_explicit(&h->poisoned, memory_order_relaxed))
            n += __atomic_load_n(&h->dirty_bytes, __ATOMIC_RELAXED);
    return n;
}

/* How far the process-wide count is over `target` (0: not over). */
static size_t over(size_t target)
{
    size_t r = policy_resident();
    return r > target ? r - target : 0;
}

/* One shrink: what has been free longest first, process-wide (the pool,
 * this thread's heap, the huge cache, every other heap: pages free for
 * longer than an age that shrinks step by step down to min_age, 0 being
 * everything), until `target` and no further: each place gives back only
 * what is still over it, page by page (giving back every page older than
 * the age at hand took a shrink meant to go from 33 to 30 MiB down to
 * 14-26 MiB, and a program that frees and allocates at random faulted the
 * difference in again: bench churn-mixed 61-64k page faults, 58k now).
 * Returns the free bytes of heaps it found locked when it asked for
 * everything. */
static size_t shrink(heap_t *self, size_t target, uint64_t min_age)
{
    uint64_t now = now_ticks();
    for (uint64_t age = policy_decay_ticks / 2;; age /= 2) {
        uint64_t before = age ? now - age : UINT64_MAX;
        size_t locked = 0;
        if (over(target))
            pool_purge_some(before, over(target));
        if (self && over(target))
            heap_purge_some(self, before, true, over(target));
        if (over(target))
            huge_cache_shrink(before, over(target));
        for (heap_t *h = heap_list_first(); h && over(target); h = h->next_heap)
            if (h != self)
                locked += purge_other(h, before, over(target));
        if (policy_resident() <= target || age <= min_age)
            return locked;
        if (age < policy_decay_ticks / 1024)
            age = 1; /* next: everything */
    }
}

/* The levels, for a bound b (policy_free_bound, 32 MiB by default):
 *
 *   soft   past SOFT_LEVEL (three quarters of b, 24 MiB) the slow path
 *          that noticed gives back what has been free for half the decay
 *          time or longer, down to SOFT_TARGET (half of b), process-wide
 *          (other threads' heaps included: a thread that frees and goes
 *          idle may be the last to run for a long time).  What was freed
 *          since is what a program that frees and allocates at random
 *          (bench churn-mixed, aligned) takes again soon, and purging it
 *          made half of their page faults; it goes at the next decay pass
 *          if it stays free.  A soft shrink is not tried again before a
 *          while (next_shrink), so that a thread freeing page after page
 *          does not walk every heap at each.
 *   hard   past b itself everything may go, longest free first, down to
 *          HARD_TARGET (b less a sixteenth, 30 MiB: what was freed last
 *          stays, and the next hard shrink waits for 2 MiB more), and nothing holds
 *          the check off: so once a slow path returns, at most b stays
 *          resident, and that is what is left when every thread goes idle.
 *          One thread shrinks at a time; one that finds another at it
 *          leaves a request, which the other serves before it stops (the
 *          request comes after the requester's pages were counted, so
 *          nothing freed is missed).  A heap found locked is tried again
 *          after a yield, a few times; what even that cannot give back (a
 *          heap whose lock stays taken, a poisoned heap) is `stuck`, and
 *          only memory freed beyond it makes the next shrink, so that a
 *          stuck heap does not make every slow path shrink; the next decay
 *          pass forgets what was stuck on a lock.
 *
 * The huge cache fits itself under b when a block is freed (huge.c,
 * cache_put: oldest cached pages first), so a big block freed rarely
 * makes a hard shrink. */
#define SOFT_LEVEL(b) ((b) - (b) / 4)
#define SOFT_TARGET(b) ((b) / 2)
#define HARD_TARGET(b) ((b) - (b) / 16)
#define SHRINK_TRIES 8
static _Atomic uint32_t shrink_lock;
static _Atomic uint32_t shrink_wanted;
static _Atomic size_t shrink_stuck;
static _Atomic uint64_t next_shrink; /* a soft shrink: when to try again */

/* The soft levels go by policy_free_bound itself, the hard one by what
 * the pinned memory leaves of it (count_bound): pinned memory makes the
 * hard limit come sooner, not the soft shrinks, whose purges of memory
 * freed lately a program allocating at random faults back in (bench
 * mstress, with soft levels from the reduced bound: 57k page faults,
 * 37k before the pinned memory was counted, 45-51k now). */
static size_t soft_level(size_t bound)
{
    size_t soft = SOFT_LEVEL(policy_free_bound);
    return soft < bound ? soft : bound; /* past the bound, the hard limit */
}

static void over_bound(heap_t *self)
{
    size_t bound = count_bound();
    size_t soft = soft_level(bound), soft_target = SOFT_TARGET(policy_free_bound);
    if (soft_target > soft - soft / 3)
        soft_target = soft - soft / 3;
    if (policy_resident() <= soft || slow_interrupted())
        return;
    size_t stuck = atomic_load_explicit(&shrink_stuck, memory_order_relaxed);
    size_t r = policy_resident();
    if (r <= soft + stuck)
        return;
    if (r <= bound + stuck) {
        uint64_t now = now_ticks();
        if (now < atomic_load_explicit(&next_shrink, memory_order_relaxed))
            return;
        shrink(self, soft_target + stuck, policy_decay_ticks / 2);
        if (policy_resident() > soft + stuck)
            atomic_store_explicit(&next_shrink, now + policy_decay_ticks / 8,
                                  memory_order_relaxed);
        return;
    }
    atomic_store(&shrink_wanted, 1);
    while (atomic_load(&shrink_wanted) && gen_lock_try(&shrink_lock, NULL)) {
        atomic_store(&shrink_wanted, 0);
        stuck = atomic_load_explicit(&shrink_stuck, memory_order_relaxed);
        for (unsigned k = 0; policy_resident() > bound + stuck; k++) {
            stuck = poisoned_bytes();
            size_t locked = shrink(self, HARD_TARGET(bound) + stuck, 0);
            if (locked == 0 || policy_resident() <= bound + stuck || k == SHRINK_TRIES) {
                stuck += locked;
                break;
            }
            os_yield(); /* let the holder of that heap's lock finish */
        }
        atomic_store_explicit(&shrink_stuck, stuck, memory_order_relaxed);
        gen_unlock(&shrink_lock);
    }
}

/* The decay pass. */
static EMMA_NOINLINE void decay_pass(heap_t *self, uint64_t now)
{
    fork_init(); /* so that our locks can tell a fork (heap_check_fork) */
    uint64_t aged = now - policy_decay_ticks;
    huge_cache_release(aged, now - 16 * policy_decay_ticks);
    depot_release(aged);
    big_cache_drain(); /* before the heaps: the shared heap collects them */
    pool_release(aged, false);
    if (self)
        heap_purge_older(self, aged, true);
    reclaim_others(self, aged, false);
    salvage_pass(false);
    /* what a lock kept from the last hard shrink has had its chance */
    atomic_store_explicit(&shrink_stuck, poisoned_bytes(),
                          memory_order_relaxed);
}

/* A clock read costs 24 ns in some virtual machines (rdtsc): a slow path
 * that has read it passes it on (bench tight-medium read it six times per
 * page taken and given back, half of emma's time). */
void policy_tick_at(heap_t *self, uint64_t now)
{
    if (slow_interrupted())
        return; /* a signal handler: the interrupted code may hold our locks */
    self = public_heap(self);
    if (self)
        self->active_at = now;
    uint64_t next = atomic_load_explicit(&next_pass, memory_order_relaxed);
    if (now >= next &&
        atomic_compare_exchange_strong(&next_pass, &next, now + policy_decay_ticks / 4))
        decay_pass(self, now); /* else not yet, or another thread runs it */
}

void policy_tick(heap_t *self) { policy_tick_at(self, now_ticks()); }

void policy_page_freed(heap_t *h, uint64_t now)
{
    policy_tick_at(h, now);
    over_bound(public_heap(h));
}

void policy_huge_freed(heap_t *self)
{
    policy_tick(self);
    over_bound(public_heap(self));
}

void policy_pinned_grew(heap_t *h) { over_bound(public_heap(h)); }

void policy_depot_pinned_grew(void)
{
    if (call_interrupted() || policy_resident() <= soft_level(count_bound()))
        return;
    slow_state st;
    heap_t *h = slow_enter_self(&st);
    over_bound(public_heap(h));
    slow_leave_self(h, st);
}

/* The remote step (free.c, policy.h): every other heap that remote frees
 * reached gives up what they emptied (reclaim.c: pages emptied entirely
 * go back to their segments, counted), then the bound applies.  A thread
 * that only frees gets a heap for it, as one that allocates would. */
#if !EMMA_CONFIG_TLS
size_t policy_remote_anon;
#endif

size_t policy_remote_step_bytes = REMOTE_STEP_TOTAL;
static _Atomic size_t heap_count;

void policy_heap_added(void)
{
    size_t n = atomic_fetch_add_explicit(&heap_count, 1, memory_order_relaxed) + 1;
    size_t step = REMOTE_STEP_TOTAL / n;
    __atomic_store_n(&policy_remote_step_bytes, step > REMOTE_STEP_MIN ? step : REMOTE_STEP_MIN,
                     __ATOMIC_RELAXED);
}

void policy_remote_step(void)
{
    if (call_interrupted())
        return;
#if EMMA_CONFIG_TLS
    if (tls_heap == &heap_empty) {
        tls_heap = &heap_busy; /* a handler meanwhile takes a spare heap */
        if (!heap_acquire_for_thread()) {
            tls_heap = &heap_empty;
            return;
        }
    }
#endif
    slow_state st;
    heap_t *self = slow_enter_self(&st);
    policy_tick(self);
    uint64_t now = now_ticks();
    for (heap_t *h = heap_list_first(); h; h = h->next_heap)
        if (h != self && atomic_load_explicit(&h->remote_pages, memory_order_relaxed))
            reclaim_remote(self, h, now);
    over_bound(self);
    slow_leave_self(self, st);
}

/* A heap about to map a new segment has no free page of the kind it needs
 * (and the pool has no empty segment): its free pages are of other kinds,
 * so the program has moved on to other sizes.  If they are more than
 * BEFORE_MAP_MIN or an eighth of its pages in use, let them go now rather
 * than add to the peak (this only ever gives back sooner than the bound). */
#define BEFORE_MAP_MIN ((size_t)8 << 20)
static void purge_moved_on(heap_t *h)
{
    size_t t = h->used_bytes / 8;
    if (h->dirty_bytes > (t > BEFORE_MAP_MIN ? t : BEFORE_MAP_MIN))
        heap_purge(h);
}

/* The same for the other heap(s) the thread allocates from: a shared
 * heap mapping for a thread's big blocks looks at that thread's heap (its
 * caller's, whose slow path we are in), a thread's heap at the shared
 * heaps (if their lock is free): the program moving from small sizes to
 * big ones or back moves from one to the other (bench frag, as its size
 * window slides up past 8 KiB: 19 MiB of free small pages left resident
 * at the peak, 1.83 -> 2.1 times the peak live bytes). */
void policy_before_map(heap_t *h)
{
    if (h->is_private)
        return;
    purge_moved_on(h);
    if (heap_is_shared(h)) {
        if (h->borrower)
            purge_moved_on(h->borrower);
    } else if (heap_uses_shared(h)) {
        for (unsigned i = 0; i < SHARED_HEAPS; i++) {
            heap_t *s = heap_shared(i);
            if (!s || !__atomic_load_n(&s->dirty_bytes, __ATOMIC_RELAXED) || !shared_trylock(s))
                continue;
            slow_state st = slow_enter(s);
            purge_moved_on(s);
            slow_leave(s, st);
            shared_unlock(s);
        }
    }
    over_bound(h);
}

/* The shared heaps' sparse passes, from a thread's heap about to take a
 * fresh page: a shared heap takes fresh pages only while its classes are
 * in demand, and the pages of a size the program has moved away from
 * would otherwise never be thinned (bench frag, as its size window slides
 * below 8 KiB: 45 MiB of free blocks in shared pages of 8-16 KiB blocks,
 * sampled at the peak without this). */
static void sparse_shared(uint64_t now)
{
    for (unsigned i = 0; i < SHARED_HEAPS; i++) {
        heap_t *s = heap_shared(i);
        if (!s || now - __atomic_load_n(&s->sparse_checked, __ATOMIC_RELAXED) < PURGE_DELAY ||
            !shared_trylock(s))
            continue;
        slow_state st = slow_enter(s);
        s->sparse_checked = now;
        sparse_pass(s);
        slow_leave(s, st);
        shared_unlock(s);
    }
}

uint64_t policy_before_fresh_page(heap_t *h)
{
    uint64_t now = now_ticks();
    policy_tick_at(h, now);
    if (now - h->sparse_checked < PURGE_DELAY)
        return now;
    h->sparse_checked = now;
    sparse_pass(h);
    if (heap_uses_shared(h))
        sparse_shared(now);
    return now;
}

/* Worth a scan: at most a quarter of it live (absent blocks, purged by an
 * earlier scan, are free), and a quarter of the blocks it held at its last
 * scan (4 KiB at least) freed since.  A quarter of its capacity, as before,
 * is more than a page scanned at an eighth used can ever free: such pages
 * were thinned once and then kept every OS page their dying survivors
 * left empty (bench frag at load 6-9: peak RSS 124.4 -> 120.9 MiB; on a
 * quiet machine the same, 127-131 MiB: passes go by the clock). */
static bool page_sparse(const page_t *page)
{
    if (page->slow_at == SLOW_AT_HELD || page->in_full ||
        atomic_load_explicit(&page->thread_free, memory_order_relaxed) != 0)
        return false;
    uint32_t freed = page->scanned_used - page->used; /* wraps when never scanned */
    size_t free_bytes = (size_t)(page->capacity - (page->used - page->absent)) * page->block_size;
    return freed >= page->scanned_used / 4 && (size_t)freed * page->block_size >= OS_PAGE_SIZE &&
           free_bytes >= 4 * OS_PAGE_SIZE &&
           free_bytes * 4 >= 3 * (size_t)page->capacity * page->block_size;
}

/* A page is thinned out only once SPARSE_PASSES + 1 passes in a row found
 * it sparse: a page the program is about to take back would only fault
 * its memory back. */
#define SPARSE_PASSES 1
bool policy_thin_page(heap_t *h, page_t *page)
{
    if (!page_sparse(page)) {
        page->sparse_since = 0;
        return false;
    }
    if (page->sparse_since == 0) {
        page->sparse_since = h->sparse_passes;
        return false;
    }
    return h->sparse_passes - page->sparse_since >= SPARSE_PASSES;
}

/* A page of a cold class (sparse.c): worth a scan when blocks covering at
 * least COLD_MIN_FREED bytes were freed since its last one (a page that
 * is never scanned shows a wrapped count).  No two-pass wait: the class
 * being cold is the evidence that the page is not about to be used. */
#define COLD_MIN_FREED (4 * OS_PAGE_SIZE)
bool policy_thin_cold(const page_t *page)
{
    if (page->slow_at == SLOW_AT_HELD || page->in_full ||
        atomic_load_explicit(&page->thread_free, memory_order_relaxed) != 0)
        return false;
    uint32_t freed = page->scanned_used - page->used;
    return (size_t)freed * page->block_size >= COLD_MIN_FREED;
}

/* Everything free, process-wide: the caller's heap (self, which it owns),
 * every other heap it can lock or take over, the pool and the huge cache
 * (both unmapped: a failed mapping may be short of address space). */
static size_t trim_all(heap_t *self, bool thin)
{
    size_t n = 0;
    depot_release(UINT64_MAX); /* before the heaps: their pages may empty */
    big_cache_drain();
    if (self) {
        slow_state st = slow_enter(self);
        heap_collect_remote(self);
        heap_release_empty_pages(self);
        if (thin)
            heap_thin_all(self);
        n += heap_purge(self);
        slow_leave(self, st);
    }
    n += reclaim_others(self, UINT64_MAX, true);
    n += salvage_pass(true);
    n += pool_release(UINT64_MAX, true);
    n += huge_cache_release(UINT64_MAX, UINT64_MAX);
    return n;
}

/* emma_trim(), malloc_trim(): the calling thread's heap is marked busy
 * meanwhile (a thread without one too), so that a signal handler that
 * interrupts the trim allocates from a spare heap and, like one that
 * interrupted any slow path, does not trim: the interrupted code may hold
 * the locks a trim waits for. */
size_t policy_trim(void)
{
    if (call_interrupted())
        return 0;
#if EMMA_CONFIG_TLS
    if (tls_heap == &heap_empty) {
        tls_heap = &heap_busy;
        __asm__ volatile("" ::: "memory");
        size_t n = trim_all(NULL, true);
        __asm__ volatile("" ::: "memory");
        tls_heap = &heap_empty;
        return n;
    }
#endif
    slow_state st;
    heap_t *self = slow_enter_self(&st);
    size_t n = trim_all(self, true);
    slow_leave_self(self, st);
    return n;
}

/* Once per failed mapping; the caller tries once more if it helped.  A
 * heap in the middle of a slow path (busy, e.g. collecting its remote
 * frees) is still consistent at the points that map memory. */
bool policy_release_for_retry(heap_t *self)
{
    return !slow_interrupted() && trim_all(public_heap(self), false) > 0;
}

/* ------------------------------------------------------------------ */
/* The policy's locks and fork */

_Atomic uint32_t lock_generation = 1;

/* emma_stats(): locks taken over from a holder that died or was lost in a
 * fork. */
_Atomic size_t locks_recovered;

static uint32_t gen_field(uint32_t g) { return g % ((1u << (32 - GEN_TID_BITS)) - 1) + 1; }

static uint32_t named_word(uint32_t g, uint32_t tid)
{
    return gen_field(g) << GEN_TID_BITS | (tid & GEN_TID_MASK);
}

#if EMMA_CONFIG_TLS
/* The thread's named lock word, and the lock generation it was made in
 * (its TID read once): a fork child's forking thread has a new TID, and
 * the recovery that advances the generation runs before any lock is
 * taken.  The shared heap (heap.c) takes a named lock at every big
 * allocation and free: the word is kept whole, and the system call is
 * out of line, so that gen_word saves no register (32 -> 9 instructions);
 * internal.h's gen_trylock_as reads the word inline (gen_word_now). */
__thread uint32_t tls_lock_word __attribute__((tls_model("initial-exec")));
__thread uint32_t tls_lock_word_gen __attribute__((tls_model("initial-exec")));
static EMMA_NOINLINE uint32_t self_word_read(uint32_t g)
{
    tls_lock_word = named_word(g, os_gettid());
    tls_lock_word_gen = g;
    return tls_lock_word;
}
static inline uint32_t self_word(uint32_t g)
{
    if (likely(tls_lock_word_gen == g && tls_lock_word != 0))
        return tls_lock_word;
    return self_word_read(g);
}
#else
static uint32_t self_word(uint32_t g) { return named_word(g, os_gettid()); }
#endif
static uint32_t self_tid(uint32_t g) { return self_word(g) & GEN_TID_MASK; }

uint32_t gen_word(bool named)
{
    uint32_t g = atomic_load_explicit(&lock_generation, memory_order_relaxed);
    return named ? self_word(g) : gen_field(g) << GEN_TID_BITS;
}

/* A lock whose holder is gone taken over: held in an older generation (the
 * holder did not survive a fork), or, with `probe`, named by a thread that
 * no longer exists in this process (it died holding it).  A holder with
 * our own TID is alive (we interrupted it in a signal handler), or it is a
 * dead thread whose TID the kernel gave to us: we cannot tell, and wait. */
static bool gen_take_stale(_Atomic uint32_t *l, bool named, bool probe)
{
    uint32_t g = atomic_load_explicit(&lock_generation, memory_order_relaxed);
    uint32_t held = atomic_load_explicit(l, memory_order_relaxed);
    if (held == 0)
        return false;
    if (held >> GEN_TID_BITS == gen_field(g)) {
        uint32_t tid = held & GEN_TID_MASK;
        if (!probe || tid == 0 || tid == (self_tid(g) & GEN_TID_MASK) || !os_thread_gone(tid))
            return false;
    }
    if (!atomic_compare_exchange_strong_explicit(l, &held, gen_word(named), memory_order_acquire,
                                                 memory_order_relaxed))
        return false;
    atomic_fetch_add_explicit(&locks_recovered, 1, memory_order_relaxed);
    return true;
}

/* Probe a waited-for holder's liveness every this many yields. */
#define PROBE_EVERY 8

enum gen_waited { GEN_TAKEN, GEN_TAKEN_OVER, GEN_HELD_BY_SELF };

/* With `give_up`, a wait for one holder ends after this many time-stamp
 * counter ticks (about 0.2 s): a live holder keeps these locks for
 * microseconds, unless it left emma by siglongjmp holding one (heap.c:
 * heap_left_recover releases it at that thread's next call). */
#define GIVE_UP_TICKS ((uint64_t)1 << 29)

/* Wait for l.  A lock named by the calling thread itself is held by the
 * code a signal handler interrupted (or by a dead thread whose TID is now
 * ours): waiting would never end, so with `give_up` we return
 * GEN_HELD_BY_SELF without the lock; also when one live holder keeps it
 * for GIVE_UP_TICKS. */
static enum gen_waited gen_wait(_Atomic uint32_t *l, bool named, bool give_up)
{
    uint32_t holder = 0;
    uint64_t since = 0;
    for (unsigned k = 0;; k++) {
        if (k < 64) {
            if (gen_trylock_as(l, named))
                return GEN_TAKEN;
            __builtin_ia32_pause();
            continue;
        }
        heap_check_fork(); /* a load, unless we are a fork child */
        if (gen_trylock_as(l, named))
            return GEN_TAKEN;
        bool probe = k % PROBE_EVERY == 0;
        if (gen_take_stale(l, named, probe))
            return GEN_TAKEN_OVER;
        if (probe && give_up) {
            uint32_t held = atomic_load_explicit(l, memory_order_relaxed);
            if (held != 0 && held == gen_word(true))
                return GEN_HELD_BY_SELF;
            uint64_t now = now_ticks();
            if (held != holder) {
                holder = held;
                since = now;
            } else if (now - since > GIVE_UP_TICKS) {
                return GEN_HELD_BY_SELF;
            }
        }
        os_yield();
    }
}

bool gen_lock_wait_as(_Atomic uint32_t *l, void (*forget)(void), bool named)
{
    switch (gen_wait(l, named, named)) {
    case GEN_TAKEN_OVER:
        if (forget)
            forget();
        return true;
    case GEN_TAKEN:
        return true;
    case GEN_HELD_BY_SELF:
        break;
    }
    return false;
}

bool gen_lock_wait_stale(_Atomic uint32_t *l) { return gen_wait(l, true, false) == GEN_TAKEN_OVER; }

void gen_release_left(_Atomic uint32_t *l, uint32_t me, void (*forget)(void))
{
    if (atomic_load_explicit(l, memory_order_relaxed) != me)
        return;
    if (forget)
        forget();
    atomic_fetch_add_explicit(&locks_recovered, 1, memory_order_relaxed);
    gen_unlock(l);
}

void policy_locks_left(uint32_t me)
{
    gen_release_left(&shrink_lock, me, NULL);
    segment_locks_left(me);
    huge_locks_left(me);
    depot_locks_left(me);
#if EMMA_CONFIG_TLS
    salvage_locks_left(me);
#endif
}

/* Without waiting: taken, or held by a thread lost in a fork or dead
 * (taken over, then forget() drops what the lost holder may have left
 * half done), else false.  Probing costs a system call, only when the
 * lock is taken; the callers' alternative (mapping, unmapping) costs
 * more. */
bool gen_lock_try_as(_Atomic uint32_t *l, void (*forget)(void), bool named)
{
    if (gen_trylock_as(l, named))
        return true;
    if (!gen_take_stale(l, named, true))
        return false;
    if (forget)
        forget();
    return true;
}

/* In a fork child (heap.c's recovery, run once): a lock held now in the
 * current generation was held by a thread that did not survive the fork;
 * waiters take such locks over (gen_lock_wait). */
void policy_after_fork(void)
{
    atomic_fetch_add(&lock_generation, 1);
    atomic_store(&next_pass, 0);
    atomic_store(&next_shrink, 0);
    atomic_store(&shrink_stuck, 0);
}

/* teardown.c, after unmapping every segment and huge mapping: the pool and
 * the huge cache held some of them. */
void policy_teardown(void)
{
    salvage_forget();
    depot_forget();
    pool_forget();
    cache_forget();
    huge_tails_forget();
    atomic_store(&resident, 0);
    atomic_store(&held_total, 0);
    atomic_store(&depot_pinned, 0);
    atomic_store(&next_pass, 0);
    atomic_store(&next_shrink, 0);
    atomic_store(&shrink_stuck, 0);
}
