/* Heaps: creating them, and handing one to each thread.
 *
 * With TLS, a thread's first allocation finds it a heap: a heap whose owner
 * thread has died is adopted, otherwise a new one is made.  Liveness is
 * asked of the kernel without libc: each heap's owner word holds its
 * owner's TID, which is exactly the form of a locked PI futex, so
 * FUTEX_TRYLOCK_PI on it fails with ESRCH once that thread is gone (and
 * EDEADLK when the TID has been recycled for the very thread asking).
 * Where PI futexes are missing (ENOSYS) or forbidden (EPERM, or a seccomp
 * filter, which could kill us for trying) the owner is looked up with
 * tgkill(pid, tid, 0) instead: ESRCH means no such thread in our process.
 *
 * A heap is never adopted while `busy` says its owner died inside a slow
 * path, or once `poisoned` (it belonged to a thread that did not survive a
 * fork): such heaps might be half-updated, and leaking them beats
 * corrupting memory.
 *
 * Every heap ever made is on one push-only list (heap_list_first), for
 * adoption, fork recovery and emma_trim.
 *
 * Without TLS the same heaps are shared: each has a spin lock, a thread
 * try-locks them starting from one picked by its stack address, and never
 * waits for one particular heap, so a lock left held by a dead thread (or
 * by a thread that vanished in a fork) only takes that heap out of use;
 * once every slot stays taken, a slot gets another heap (slot_replace).
 * A fork child never waits for the heaps locked when it recovers
 * (mark_fork_held): their holders vanished in the fork, or are its own.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "internal.h"
#include "observe.h"
#include "policy.h"

/* The page every empty direct-table slot names: its list is always empty. */
page_t empty_page = {.free = PAGE_END(&empty_page)};

heap_t heap_empty = {
    .direct = {[0 ... DIRECT_COUNT - 1] = &empty_page},
};

uintptr_t list_key; /* internal.h: link_get/link_set */

static _Atomic(heap_t *) heap_list; /* every heap, push-only */

heap_t *heap_list_first(void) { return atomic_load_explicit(&heap_list, memory_order_acquire); }

void heap_reset(heap_t *h)
{
    for (size_t i = 0; i < DIRECT_COUNT; i++)
        h->direct[i] = &empty_page;
}

static void heap_list_push(heap_t *h)
{
    heap_t *head = atomic_load_explicit(&heap_list, memory_order_relaxed);
    do {
        h->next_heap = head;
    } while (!atomic_compare_exchange_weak_explicit(&heap_list, &head, h, memory_order_release,
                                                    memory_order_relaxed));
    policy_heap_added();
}

/* emma_stats(): dead threads' heaps adopted, heaps given up for good. */
_Atomic size_t heap_stats_reclaimed, heap_stats_abandoned;

void heap_delete(heap_t *h) { os_unmap(h, HEAP_MAP_SIZE); }

#if EMMA_CONFIG_TLS
static void spare_heaps_forget(void);
#else
/* In a fork child, each slot's heap if it was locked when the child
 * recovered (mark_fork_held), else NULL. */
static _Atomic(heap_t *) fork_held[HEAP_SLOTS];
#endif
static void shared_heaps_forget(void);

/* emma_teardown: unmap every heap's metadata and forget them all (their
 * memory is gone already); the calling thread starts afresh. */
void heap_teardown(void)
{
    heap_t *h = atomic_exchange(&heap_list, NULL);
    while (h) {
        heap_t *next = h->next_heap;
        heap_delete(h);
        h = next;
    }
    shared_heaps_forget(); /* unmapped with the rest just now */
#if EMMA_CONFIG_TLS
    tls_heap = &heap_empty;
    spare_heaps_forget();
#else
    for (unsigned i = 0; i < HEAP_SLOTS; i++) {
        atomic_store(&heap_slots[i], NULL);
        atomic_store(&fork_held[i], NULL);
    }
    atomic_store(&heap_slot_limit, HEAP_SOFT_LIMIT);
#endif
}

heap_t *heap_new(void) { return heap_map(0); }

heap_t *heap_map(size_t extra)
{
    /* The first heap: if no constructor read the options (musl, a
     * -nostdlib program), read them now. */
    options_init_lazy();
    if (config_hardening && !list_key)
        list_key = os_secret(); /* the same value in every thread */
    heap_t *h = os_map(HEAP_MAP_SIZE + extra);
    if (!h)
        return NULL;
    heap_reset(h);
    return h;
}

/* The shared heaps (internal.h: heap_lock_shared): made on demand, each
 * behind a try-lock. */
_Atomic(heap_t *) shared_heaps[SHARED_HEAPS];

heap_t *heap_lock_shared(unsigned i, bool probe)
{
    heap_t *h = atomic_load_explicit(&shared_heaps[i], memory_order_acquire);
    if (h) {
        if (!(probe ? gen_lock_try_as(&h->lock, NULL, EMMA_CONFIG_TLS) : shared_trylock(h)))
            return NULL;
        if (likely(!h->busy))
            return h; /* a dead holder outside a slow path left it whole */
        /* taken over from a holder that died (or was lost in a fork)
         * inside a slow path: maybe half updated.  Never used again (kept
         * locked); with TLS salvage.c recovers its pages. */
#if EMMA_CONFIG_TLS
        heap_quarantine(h);
#endif
    }
    heap_t *fresh = heap_new();
    if (!fresh)
        return NULL;
    fresh->spare = SPARE_SHARED;
    atomic_store(&fresh->lock, gen_word(EMMA_CONFIG_TLS));
    if (atomic_compare_exchange_strong(&shared_heaps[i], &h, fresh)) {
        heap_list_push(fresh);
        return fresh;
    }
    heap_delete(fresh);
    return h && shared_trylock(h) ? h : NULL;
}

void shared_collect(heap_t *h)
{
    /* a few rounds: frees keep coming while others allocate, and a taken
     * collect_lock (a reclaimer's) would make this spin */
    for (unsigned k = 0; k < 4 && shared_trylock(h); k++) {
        slow_state st = slow_enter(h);
        heap_collect_remote(h);
        slow_leave(h, st);
        /* an exchange, a full barrier: the load below is not done before
         * the lock is seen free (free.c pushes, then tries the lock) */
        atomic_exchange_explicit(&h->lock, 0, memory_order_seq_cst);
        if (atomic_load_explicit(&h->remote_pages, memory_order_seq_cst) == NULL)
            return;
    }
}

/* emma_teardown: the shared heaps were unmapped with the rest. */
static void shared_heaps_forget(void)
{
    for (unsigned i = 0; i < SHARED_HEAPS; i++)
        atomic_store(&shared_heaps[i], NULL);
}

#if EMMA_CONFIG_TLS

__thread heap_t *tls_heap __attribute__((tls_model("initial-exec"))) = &heap_empty;
__thread heap_t *tls_slow_heap __attribute__((tls_model("initial-exec")));
__thread heap_t *tls_left_heap __attribute__((tls_model("initial-exec")));

/* What tls_heap names while the thread is in a slow path of its heap: no
 * page in its direct table, and never the owner of a block. */
heap_t heap_busy = {
    .direct = {[0 ... DIRECT_COUNT - 1] = &empty_page},
};

/* ------------------------------------------------------------------ */
/* Leaving emma by siglongjmp.  A signal handler that interrupted emma and
 * jumps out of it abandons the interrupted call where it stood: its heap
 * maybe half updated, its locks held by a thread that lives on.  The
 * thread's stack tells: a frame is gone once the stack pointer is back
 * above it.  A handler nested in the frame runs below it, under the
 * signal frame (at least 1 KiB on x86_64: the red zone, the saved
 * registers and FPU state), or on the alternate signal stack; so a frame
 * whose recorded stack pointer lies less than FRAME_SLACK below ours, on
 * the same stack, is gone, and so is one on the signal stack while we run
 * on the thread's own (no handler uses the signal stack then).  On the
 * signal stack, a frame on the thread's stack may be the one the handler
 * interrupted: never taken for gone.  A call made from deeper than the
 * frame after the jump does not see it yet (it allocates from a spare
 * heap); the next one from the caller's own depth does.  The signal
 * stack's range costs a system call, made only here: when the thread
 * finds itself inside a slow path, or a spare heap held by itself. */
#define FRAME_SLACK 512
#define FUTEX_TID_MASK 0x3fffffffu

bool frame_left(uintptr_t sp)
{
    uintptr_t here = stack_pointer(), lo, hi;
    bool on_signal_stack = os_on_altstack(&lo, &hi);
    bool sp_on_signal_stack = sp >= lo && sp < hi;
    if (!on_signal_stack)
        return sp_on_signal_stack || here + FRAME_SLACK >= sp;
    /* on the signal stack: only a frame on it too can be told gone */
    return sp_on_signal_stack && here + FRAME_SLACK >= sp;
}

/* Spare heaps, for signal handlers that interrupted a slow path of their
 * thread's heap: shared, each behind a try-lock naming its holder, made on
 * demand.  A handler never waits: it takes the first free one, or gets
 * NULL.  One whose holder left it by siglongjmp (its own thread, with the
 * holder's frame gone), or died or was lost in a fork while using it, is
 * quarantined (salvage.c recovers its pages, then it serves new threads as
 * a normal heap) and replaced. */
#define SPARE_HEAPS 8
static _Atomic(heap_t *) spare_heaps[SPARE_HEAPS];

/* A lock word this thread left held in a frame it jumped out of. */
static bool left_held(_Atomic uint32_t *l, uint32_t me)
{
    return atomic_load_explicit(l, memory_order_relaxed) == me;
}

static bool spare_trylock(heap_t *h)
{
    if (gen_lock_try(&h->lock, NULL)) {
        if (!h->busy)
            return true;
        /* taken over from a holder that died using it */
    } else {
        uint32_t me = gen_word(true);
        if (atomic_load_explicit(&h->lock, memory_order_relaxed) != me || !frame_left(h->busy_sp))
            return false;
        /* left by siglongjmp: its other locks too, for salvage.c */
        if (left_held(&h->collect_lock, me))
            gen_unlock(&h->collect_lock);
        if (left_held(&h->seg_lock, me))
            gen_unlock(&h->seg_lock);
    }
    h->spare = 0; /* a normal heap once salvaged */
    heap_quarantine(h);
    return false;
}

/* Try spare heap i: locked, or NULL (after replacing it if its holder is
 * gone). */
static heap_t *spare_try(unsigned i)
{
    heap_t *h = atomic_load_explicit(&spare_heaps[i], memory_order_acquire);
    if (h && spare_trylock(h))
        return h;
    if (h && !atomic_load_explicit(&h->poisoned, memory_order_relaxed))
        return NULL; /* in use */
    heap_t *fresh = heap_new();
    if (!fresh)
        return NULL;
    fresh->spare = 1;
    atomic_store(&fresh->lock, gen_word(true));
    if (atomic_compare_exchange_strong(&spare_heaps[i], &h, fresh)) {
        heap_list_push(fresh);
        return fresh;
    }
    os_unmap(fresh, HEAP_MAP_SIZE);
    return h && spare_trylock(h) ? h : NULL;
}

heap_t *heap_lock_spare(void)
{
    for (unsigned i = 0; i < SPARE_HEAPS; i++) {
        heap_t *h = spare_try(i);
        if (h) {
            h->busy = 1;
            h->busy_sp = stack_pointer();
            return h;
        }
    }
    return NULL;
}

void heap_unlock_spare(heap_t *h)
{
    h->busy = 0;
    gen_unlock(&h->lock);
}

bool heap_left_recover(void)
{
    heap_t *left = tls_left_heap;
    if (!left || !frame_left(left->busy_sp))
        return false;
    /* The outermost slow path's frame is gone, and with it every deeper
     * one: whatever this thread holds, it holds for nobody. */
    tls_left_heap = NULL;
    tls_slow_heap = NULL;
    uint32_t me = gen_word(true), tid = me & GEN_TID_MASK;
    heap_t *own = NULL;
    for (heap_t *h = heap_list_first(); h; h = h->next_heap) {
        if (h->spare == 1 || h->is_private)
            continue;
        bool poisoned = atomic_load(&h->poisoned);
        if (left_held(&h->claim, me)) {
            if (!poisoned)
                claim_mend(h); /* as for a claimer that died */
            gen_unlock(&h->claim);
        }
        if (left_held(&h->collect_lock, me))
            gen_unlock(&h->collect_lock);
        if (left_held(&h->seg_lock, me))
            gen_unlock(&h->seg_lock);
        if (poisoned)
            continue; /* salvage.c's already */
        if (heap_is_shared(h)) {
            if (left_held(&h->lock, me)) {
                /* half updated, maybe: replaced, as after a death */
                heap_quarantine(h);
                for (unsigned i = 0; i < SHARED_HEAPS; i++) {
                    heap_t *was = h;
                    atomic_compare_exchange_strong(&shared_heaps[i], &was, NULL);
                }
            }
            continue;
        }
        if ((atomic_load(&h->owner) & FUTEX_TID_MASK) != tid)
            continue;
        if (h->busy)
            heap_quarantine(h); /* its slow path was left half done */
        else if (h->owner_tls == &tls_heap)
            own = h;
    }
    policy_locks_left(me);
    tls_heap = own ? own : &heap_empty;
    return true;
}

#if EMMA_CONFIG_TLS
/* emma_teardown: the signal handlers' spare heaps are on heap_list and
 * were unmapped with the rest; forget them, else the next handler after a
 * teardown would use unmapped metadata. */
static void spare_heaps_forget(void)
{
    for (unsigned i = 0; i < SPARE_HEAPS; i++)
        atomic_store(&spare_heaps[i], NULL);
}
#endif

static _Atomic int pi_usable = -1; /* -1 unknown, 0 no, 1 yes */

static bool pi_futex_usable(void)
{
    int u = atomic_load_explicit(&pi_usable, memory_order_relaxed);
    if (u < 0) {
        u = os_seccomp_active() ? 0 : 1;
        atomic_store(&pi_usable, u);
    }
    return u == 1;
}

/* Take the owner word from the dead owner whose TID bits it holds. */
static bool take_owner_word(heap_t *h, uint32_t dead, uint32_t tid)
{
    /* The kernel may have set FUTEX_WAITERS before finding the owner dead:
     * compare TID bits only, and let exactly one taker win. */
    uint32_t now = atomic_load(&h->owner);
    if ((now & FUTEX_TID_MASK) != (dead & FUTEX_TID_MASK))
        return false;
    return atomic_compare_exchange_strong(&h->owner, &now, tid);
}

/* Try to take over h, owned (per its word) by some thread: true if that
 * thread is dead and the heap is now ours.  A word naming the caller's
 * own TID names a dead thread whose TID the kernel gave the caller only
 * when the caller has no heap (`fresh`, a new thread): a reclaimer's
 * word names it for its own heap, and for the heaps it is taking over,
 * and a decay pass nested in such a take-over (a page released there)
 * would otherwise take the caller's own heap, busy, for a dead one. */
static bool heap_try_adopt(heap_t *h, uint32_t tid, bool fresh)
{
    uint32_t w = atomic_load_explicit(&h->owner, memory_order_acquire);
    if (w == 0) {
        return atomic_compare_exchange_strong(&h->owner, &w, tid);
    }
    if ((w & FUTEX_TID_MASK) == tid) {
        if (!fresh)
            return false;
        atomic_store(&h->owner, tid); /* our TID was the dead owner's */
        return true;
    }
    /* Sandboxes allow tgkill (abort needs it), not always PI futexes. */
    if (!pi_futex_usable())
        return os_thread_gone(w & FUTEX_TID_MASK) && take_owner_word(h, w, tid);
    switch (os_futex_trylock_pi(&h->owner)) {
    case OS_PI_TAKEN:
        return atomic_load(&h->owner) == tid; /* word was free */
    case OS_PI_SELF:
        if (!fresh)
            return false;
        atomic_store(&h->owner, tid); /* our TID was the dead owner's */
        return true;
    case OS_PI_UNSUPPORTED:
        atomic_store(&pi_usable, 0);
        return os_thread_gone(w & FUTEX_TID_MASK) && take_owner_word(h, w, tid);
    case OS_PI_OWNER_DEAD:
        return take_owner_word(h, w, tid);
    case OS_PI_BUSY:
        break;
    }
    return false; /* alive (EAGAIN/EBUSY) or unknown */
}

/* In a fork child: every heap owned at fork time is poisoned; only the
 * forking thread survives, and it keeps using its heap through its TLS
 * pointer (poison only forbids adoption). */
static void poison_owned_heaps(void)
{
    for (heap_t *h = heap_list_first(); h; h = h->next_heap)
        if (atomic_load(&h->owner) != 0 && !atomic_exchange(&h->poisoned, 1))
            atomic_fetch_add_explicit(&heap_stats_abandoned, 1, memory_order_relaxed);
    policy_after_fork();
}

/* A lock has been waited on for long: are we a fork child? */
void heap_check_fork_slow(void)
{
    if (fork_detected())
        fork_recover(poison_owned_heaps);
}

/* reclaim.c: take over h if its owner is dead (false if alive, or if it
 * died inside a slow path: then h is poisoned, as heap_acquire_for_thread
 * does). */
bool heap_take_if_dead(heap_t *h, uint32_t tid)
{
    if (!heap_try_adopt(h, tid, false))
        return false;
    if (h->busy) {
        heap_quarantine(h);
        return false;
    }
    atomic_fetch_add_explicit(&heap_stats_reclaimed, 1, memory_order_relaxed);
    return true;
}

heap_t *heap_acquire_for_thread(void)
{
    fork_init();
    if (fork_detected())
        fork_recover(poison_owned_heaps);
    uint32_t tid = os_gettid();
    for (heap_t *h = heap_list_first(); h; h = h->next_heap) {
        if (atomic_load(&h->poisoned) || h->spare)
            continue;
        if (!heap_try_adopt(h, tid, true))
            continue;
        if (h->busy) {
            /* Its owner died inside a slow path: the heap may be half
             * updated.  Quarantine it: never adopted; the blocks others
             * hold in it stay valid, their frees go to its pages' remote
             * lists, and salvage.c recovers its pages. */
            heap_quarantine(h);
            continue;
        }
        atomic_fetch_add_explicit(&heap_stats_reclaimed, 1, memory_order_relaxed);
        __atomic_store_n(&h->owner_tls, &tls_heap, __ATOMIC_RELEASE);
        tls_heap = h;
        return h;
    }
    heap_t *h = heap_new();
    if (!h)
        return NULL;
    atomic_store(&h->owner, tid);
    h->owner_tls = &tls_heap;
    heap_list_push(h);
    tls_heap = h;
    return h;
}

/* The owner waits for a claim on its heap (reclaim.c: a claimer holds it
 * for a walk of the heap's queues and a few system calls) by taking the
 * claim's lock word and dropping it at once; a claimer that died holding
 * it is found out as any lock holder is (policy.c: gen_lock_wait_stale),
 * and the class queue it was editing is mended (bin_repair). */
void heap_claim_wait(heap_t *h)
{
    bool taken_over = gen_lock_wait_stale(&h->claim);
    if (taken_over)
        claim_mend(h);
    gen_unlock(&h->claim);
}

#else /* !EMMA_CONFIG_TLS */

#define STUCK_ROUNDS 2000
/* Rounds with every one of the HEAP_SLOTS slots taken before a slot gets
 * another heap (slot_replace): fewer than STUCK_ROUNDS, since that costs
 * no lock taken from anybody, and each yield may give the core away for
 * milliseconds on a loaded machine (2000 rounds took seconds there). */
#define REPLACE_ROUNDS 64
#define PREFERRED_SPINS 16

_Atomic(heap_t *) heap_slots[HEAP_SLOTS];
_Atomic unsigned heap_slot_limit = HEAP_SOFT_LIMIT;

heap_t *heap_acquire_for_thread(void) { return NULL; }

/* In a fork child (recovery, once): only the forking thread survived,
 * so a slot heap locked now was locked at the fork by a thread that is
 * lost, its lock never to come free, and the heap maybe half updated;
 * or since, by a thread of the child (this one, in a slow path of its
 * heap, which takes the policy's locks and so recovers; a thread the
 * child started).  Those cannot be told apart, so each is noted in
 * fork_held: heap_lock_any gives the slot of a noted heap found locked
 * another heap at once (slot_replace), as it would after waiting
 * STUCK_ROUNDS for a heap whose holder might be alive, and never
 * touches its state while its lock is held (for good, if its holder is
 * lost); a noted heap found unlocked had a live holder, and is whole.
 * Nothing is written to the heaps: each write would copy a page of the
 * parent's (with its page fault), for every heap. */
static void mark_fork_held(void)
{
    for (unsigned i = 0; i < HEAP_SLOTS; i++) {
        heap_t *h = atomic_load_explicit(&heap_slots[i], memory_order_acquire);
        if (h && atomic_load_explicit(&h->lock, memory_order_relaxed) != 0)
            atomic_store_explicit(&fork_held[i], h, memory_order_relaxed);
    }
    policy_after_fork();
}

void heap_check_fork_slow(void)
{
    if (fork_detected())
        fork_recover(mark_fork_held);
}

bool heap_take_if_dead(heap_t *h, uint32_t tid)
{
    (void)h;
    (void)tid;
    return false;
}


/* The heap in slot i, made (and returned locked) if the slot is empty;
 * NULL with *no_memory set when it is empty and cannot be made. */
static heap_t *slot_heap(unsigned i, bool *locked, bool *no_memory)
{
    heap_t *h = atomic_load_explicit(&heap_slots[i], memory_order_acquire);
    *locked = false;
    if (h)
        return h;
    fork_init(); /* so that heap_lock_any can tell a fork child */
    heap_t *fresh = heap_new();
    if (!fresh) {
        *no_memory = true;
        return NULL;
    }
    atomic_store(&fresh->lock, 1);
    if (!atomic_compare_exchange_strong(&heap_slots[i], &h, fresh)) {
        heap_delete(fresh);
        return h;
    }
    heap_list_push(fresh);
    *locked = true;
    return fresh;
}

/* A slot whose heap was locked at a fork child's recovery
 * (mark_fork_held) and still is: heap NULL if none seen. */
typedef struct lost_slot {
    heap_t *heap;
    unsigned i;
} lost_slot;

/* Slot i's heap, locked, or NULL: taken (noted in *lost if it was
 * locked at a fork child's recovery: not spun on), or not made
 * (*no_memory). */
static heap_t *try_slot(unsigned i, unsigned spins, bool *no_memory, lost_slot *lost)
{
    bool locked;
    heap_t *h = slot_heap(i, &locked, no_memory);
    if (!h || locked)
        return h;
    if (!spin_trylock(&h->lock)) {
        if (unlikely(atomic_load_explicit(&fork_held[i], memory_order_relaxed) == h)) {
            if (!lost->heap)
                *lost = (lost_slot){h, i};
            return NULL;
        }
        for (unsigned k = 0;; k++) {
            if (k >= spins)
                return NULL;
            __builtin_ia32_pause();
            if (spin_trylock(&h->lock))
                break;
        }
    }
    if (unlikely(atomic_load_explicit(&fork_held[i], memory_order_relaxed) == h))
        atomic_store_explicit(&fork_held[i], NULL, memory_order_relaxed); /* was live */
    return h;
}

/* A heap replaced in its slot (slot_replace below) is an orphan: owner
 * word HEAP_ORPHAN (slot heaps have 0 there without TLS).  It stays on
 * the heap list: its blocks stay valid, the frees of those by any thread
 * go to its pages' remote lists, and when its lock comes free (its holder
 * was only slow: preempted, or in a long signal handler) emma_trim and
 * the decay passes collect and purge it like any heap (reclaim.c), and
 * the next replacement takes it back into a slot. */
/* An orphan whose lock has come free, locked and no longer an orphan, or
 * NULL.  Loads only, no system call: the heap list is walked only when
 * every slot has stayed taken for REPLACE_ROUNDS rounds. */
static heap_t *orphan_take(void)
{
    for (heap_t *h = heap_list_first(); h; h = h->next_heap) {
        if (atomic_load_explicit(&h->owner, memory_order_relaxed) != HEAP_ORPHAN ||
            !heap_trylock(h))
            continue;
        uint32_t o = HEAP_ORPHAN;
        if (atomic_compare_exchange_strong(&h->owner, &o, 0))
            return h;
        heap_unlock(h); /* another replacement took it meanwhile */
    }
    return NULL;
}

/* Slot i's heap `stuck` has stayed locked (with every other slot) for
 * REPLACE_ROUNDS rounds: its holder may have died holding the lock (a
 * thread ended by a raw SYS_exit or pthread_exit in a signal handler, or
 * cancelled asynchronously, inside emma; or one that did not survive a
 * fork).  Without TLS nothing tells a dead holder from a slow one: the
 * lock word cannot name its holder (a thread's TID costs a system call
 * per lock without a thread pointer to keep it in, gettid 300-500 ns
 * here against 50 ns for a malloc+free of 4000 bytes), and a cache of
 * TIDs by stack address would name a new thread that reuses a dead one's
 * stack (or a coroutine's stack run by another thread) with the dead
 * TID.  So the lock is never taken from its holder: the slot gets
 * another heap (an orphan whose lock has come free, or a new one), and
 * `stuck` becomes an orphan, never touched again while its lock is held.
 * Returns the slot's new heap, locked; NULL (and *no_memory) if it
 * cannot be made, or NULL if another thread changed the slot meanwhile. */
static heap_t *slot_replace(unsigned i, heap_t *stuck, bool *no_memory)
{
    heap_t *fresh = orphan_take();
    bool made = false;
    if (!fresh) {
        fresh = heap_new();
        if (!fresh) {
            *no_memory = true;
            return NULL;
        }
        atomic_store(&fresh->lock, 1);
        made = true;
    }
    if (!atomic_compare_exchange_strong(&heap_slots[i], &stuck, fresh)) {
        if (made) {
            heap_delete(fresh);
        } else {
            atomic_store(&fresh->owner, HEAP_ORPHAN);
            heap_unlock(fresh);
        }
        return NULL;
    }
    if (made)
        heap_list_push(fresh);
    atomic_store(&stuck->owner, HEAP_ORPHAN);
    atomic_store_explicit(&fork_held[i], NULL, memory_order_relaxed);
    return fresh;
}

/* Lock the thread's preferred heap, or else any other.  When every heap
 * stays busy for long we assume some locks will never be released (their
 * holders died, or did not survive a fork): one more slot opens, up to
 * HEAP_SLOTS, and past that the thread's preferred slot gets another heap
 * (slot_replace), so nobody waits forever on a lock that will not come
 * free, and deaths never use the slots up.  In a fork child the heaps
 * locked at its recovery (mark_fork_held) are not waited for: when no
 * other heap is free, the slot of the first such heap still locked gets
 * another heap at once.  NULL (the caller reports ENOMEM) rather than
 * waiting only when a heap is needed and cannot be mapped. */
heap_t *heap_lock_any(void)
{
    bool no_memory = false;
    lost_slot lost = {NULL, 0};
    unsigned limit = atomic_load_explicit(&heap_slot_limit, memory_order_relaxed);
    unsigned pref = preferred_slot(limit);
    heap_t *h = try_slot(pref, PREFERRED_SPINS, &no_memory, &lost);
    if (h)
        return h;
    heap_check_fork(); /* a load or two, unless we are a fork child */
    for (unsigned round = 0; !no_memory; round++) {
        limit = atomic_load_explicit(&heap_slot_limit, memory_order_relaxed);
        for (unsigned i = 1; i <= limit; i++) {
            h = try_slot((pref + i) % limit, 0, &no_memory, &lost);
            if (h)
                return h;
        }
        if (lost.heap && !no_memory) {
            /* only heaps locked at the fork, or busy: no waiting */
            h = slot_replace(lost.i, lost.heap, &no_memory);
            if (h)
                return h;
            lost.heap = NULL; /* the slot changed meanwhile: look again */
            continue;
        }
        if (round >= (limit < HEAP_SLOTS ? STUCK_ROUNDS : REPLACE_ROUNDS)) {
            round = 0;
            if (limit < HEAP_SLOTS) {
                atomic_compare_exchange_strong(&heap_slot_limit, &limit, limit + 1);
                continue;
            }
            pref = preferred_slot(limit);
            h = try_slot(pref, 0, &no_memory, &lost);
            if (h)
                return h;
            heap_t *stuck = atomic_load_explicit(&heap_slots[pref], memory_order_acquire);
            if (stuck && (h = slot_replace(pref, stuck, &no_memory)) != NULL)
                return h;
            continue;
        }
        os_yield();
    }
    return NULL;
}

#endif
