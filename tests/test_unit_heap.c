/* White-box tests of the heap locks (internal.h) and how
 * threads get heaps (heap.c): per-thread heaps and dead-thread adoption
 * with TLS, try-locked shared heaps without.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Linked against libemma_core.la; this program's malloc is glibc's, emma
 * is reached through the emma_* API.
 */
#include "testutil.h"

#include <emma.h>
#include <pthread.h>
#include <sys/wait.h>

#include <unistd.h>

#include "alloc.h"
#include "observe.h"
#include "policy.h"

/* lib/'s yields (os_yield), counted: tests/Makefile.am links this
 * program with --wrap=emma__os_yield. */
void __real_emma__os_yield(void);
void __wrap_emma__os_yield(void);
static _Atomic unsigned long yields;
void __wrap_emma__os_yield(void)
{
    atomic_fetch_add(&yields, 1);
    __real_emma__os_yield();
}

/* ------------------------------------------------------------------ */
/* Spin locks                                                          */

START_TEST(t_spin_lock_basic)
{
    _Atomic uint32_t l = 0;
    ck_assert(spin_trylock(&l));
    ck_assert(!spin_trylock(&l));
    spin_unlock(&l);
    ck_assert(spin_trylock(&l));
    spin_unlock(&l);
    ck_assert_uint_eq(atomic_load(&l), 0);
}
END_TEST

enum { LOCK_THREADS = 4, LOCK_ITERS = 200000 };
static _Atomic uint32_t the_lock;
static volatile long counter; /* plain: only the lock protects it */

static void *lock_worker(void *arg)
{
    for (int i = 0; i < LOCK_ITERS; i++) {
        while (!spin_trylock(&the_lock))
            __builtin_ia32_pause();
        counter = counter + 1;
        spin_unlock(&the_lock);
    }
    return NULL;
}

START_TEST(t_spin_lock_excludes)
{
    pthread_t th[LOCK_THREADS];
    for (int i = 0; i < LOCK_THREADS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, lock_worker, NULL), 0);
    for (int i = 0; i < LOCK_THREADS; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_eq(counter, (long)LOCK_THREADS * LOCK_ITERS);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Heaps                                                               */

#if EMMA_CONFIG_TLS

static void *current_heap_after_alloc(void *arg)
{
    void *p = emma_alloc(100, 16);
    heap_t *h = tls_heap;
    if (arg)
        *(void **)arg = p; /* left allocated, for the caller */
    else
        emma_dealloc(p, 100, 16);
    return h;
}

START_TEST(t_heap_per_thread)
{
    ck_assert_ptr_eq(tls_heap, &heap_empty); /* nothing allocated yet */
    heap_t *mine = current_heap_after_alloc(NULL);
    ck_assert_ptr_ne(mine, &heap_empty);
    ck_assert_ptr_eq(tls_heap, mine);
    ck_assert_uint_eq(atomic_load(&mine->owner), os_gettid());
    pthread_t t;
    void *res;
    ck_assert_int_eq(pthread_create(&t, NULL, current_heap_after_alloc, NULL), 0);
    pthread_join(t, &res);
    ck_assert_ptr_ne(res, &heap_empty);
    ck_assert_ptr_ne(res, mine);
}
END_TEST

/* A dead thread's heap is adopted by the next thread that needs one. */
START_TEST(t_dead_thread_heap_adopted)
{
    (void)current_heap_after_alloc(NULL); /* main has a heap of its own */
    void *left = NULL;
    pthread_t t;
    void *h1, *h2;
    ck_assert_int_eq(pthread_create(&t, NULL, current_heap_after_alloc, &left), 0);
    pthread_join(t, &h1);
    ck_assert_ptr_nonnull(left);
    ck_assert_int_eq(pthread_create(&t, NULL, current_heap_after_alloc, NULL), 0);
    pthread_join(t, &h2);
    ck_assert_msg(h2 == h1,
                  "a new thread got heap %p instead of adopting the dead "
                  "thread's heap %p (PI futexes unavailable?)", h2, h1);
    emma_dealloc(left, 100, 16);
}
END_TEST

static pthread_barrier_t bar;

static void *hold_heap(void *arg)
{
    *(heap_t **)arg = current_heap_after_alloc(NULL);
    pthread_barrier_wait(&bar); /* heap known */
    pthread_barrier_wait(&bar); /* others done */
    return NULL;
}

/* A live thread's heap is never taken; after fork, the heaps of threads
 * that did not survive it are not adopted in the child. */
START_TEST(t_live_heaps_not_adopted)
{
    heap_t *held = NULL;
    pthread_t t, u;
    void *h2;
    pthread_barrier_init(&bar, NULL, 2);
    ck_assert_int_eq(pthread_create(&t, NULL, hold_heap, &held), 0);
    pthread_barrier_wait(&bar);
    ck_assert_int_eq(pthread_create(&u, NULL, current_heap_after_alloc, NULL), 0);
    pthread_join(u, &h2);
    ck_assert_ptr_ne(h2, held);

    (void)current_heap_after_alloc(NULL);
    heap_t *main_heap = tls_heap;
    int go[2];
    ck_assert_int_eq(pipe(go), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        void *hc = NULL;
        char c;
        void *p = emma_alloc(5000, 64); /* the forking thread keeps its heap */
        if (p == NULL || tls_heap != main_heap)
            _exit(1);
        emma_dealloc(p, 5000, 64);
        /* wait until the holder of `held` has exited in the parent: its
         * TID is then gone, so only the fork protocol keeps its heap (which
         * that thread might have been updating when we forked) from being
         * adopted here */
        if (read(go[0], &c, 1) != 1)
            _exit(5);
        if (pthread_create(&u, NULL, current_heap_after_alloc, NULL) != 0)
            _exit(2);
        pthread_join(u, &hc);
        _exit(hc == held ? 3 : hc == main_heap ? 4 : 0);
    }
    pthread_barrier_wait(&bar);
    pthread_join(t, NULL);
    ck_assert_int_eq(write(go[1], "g", 1), 1);
    tu_wait_exit0(pid, "fork child (1: forking thread lost its heap, 3: a heap "
                       "owned at fork time by another thread was adopted, 4: a "
                       "live heap was shared)");
    pthread_barrier_destroy(&bar);
    close(go[0]);
    close(go[1]);
}
END_TEST

static void *alloc_free_exit(void *arg)
{
    (void)arg;
    void *v[2000];
    for (int i = 0; i < 2000; i++)
        v[i] = emma_alloc(16 + (size_t)(i % 50) * 32, 16);
    for (int i = 0; i < 2000; i++)
        emma_dealloc(v[i], 16 + (size_t)(i % 50) * 32, 16);
    return NULL;
}

/* A decay pass nested in the take-over of a dead thread's heap (a page
 * released there is a slow path of that heap, whose owner word names the
 * taker) must not take the taker's own heap, busy at the time, for the
 * heap of a dead thread whose TID the kernel recycled: it was quarantined,
 * and salvaged (pages given back) while its owner used it.  A decay time
 * of 0 makes every slow path run a pass.  No thread dies here, so no heap
 * may be abandoned. */
START_TEST(t_nested_decay_keeps_own_heap)
{
    uint64_t decay = policy_decay_ticks;
    policy_decay_ticks = 0;
    (void)current_heap_after_alloc(NULL);
    heap_t *mine = tls_heap;
    size_t abandoned = atomic_load(&heap_stats_abandoned);
    for (int round = 0; round < 20; round++) {
        pthread_t t;
        ck_assert_int_eq(pthread_create(&t, NULL, alloc_free_exit, NULL), 0);
        pthread_join(t, NULL);
        void *v[200];
        for (int i = 0; i < 200; i++)
            v[i] = emma_alloc(16 + (size_t)i * 40, 16);
        for (int i = 0; i < 200; i++)
            emma_dealloc(v[i], 16 + (size_t)i * 40, 16);
        ck_assert_msg(!atomic_load(&mine->poisoned), "round %d: the caller's own heap was quarantined",
                      round);
    }
    policy_decay_ticks = decay;
    ck_assert_ptr_eq(tls_heap, mine);
    ck_assert_uint_eq(atomic_load(&heap_stats_abandoned), abandoned);
}
END_TEST

#else /* !EMMA_CONFIG_TLS */

START_TEST(t_heap_lock_any)
{
    heap_t *a = heap_lock_any();
    ck_assert_ptr_nonnull(a);
    ck_assert(!heap_trylock(a)); /* it is locked */
    heap_t *b = heap_lock_any();
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_ne(a, b);
    heap_unlock(a);
    heap_unlock(b);
    ck_assert(heap_trylock(a));
    heap_unlock(a);
    /* every heap is on the heap list */
    int fa = 0, fb = 0;
    for (heap_t *h = heap_list_first(); h; h = h->next_heap) {
        fa |= h == a;
        fb |= h == b;
    }
    ck_assert(fa && fb);
}
END_TEST

static void *lock_and_die(void *arg)
{
    *(heap_t **)arg = heap_lock_any(); /* never unlocked */
    return NULL;
}

/* A heap left locked by a dead thread only takes that heap out of use. */
START_TEST(t_heap_stuck_lock_skipped)
{
    heap_t *stuck[8];
    for (int i = 0; i < 8; i++) {
        pthread_t t;
        ck_assert_int_eq(pthread_create(&t, NULL, lock_and_die, &stuck[i]), 0);
        pthread_join(t, NULL);
        ck_assert_ptr_nonnull(stuck[i]);
    }
    for (int i = 0; i < 1000; i++) {
        heap_t *h = heap_lock_any();
        ck_assert_ptr_nonnull(h);
        for (int k = 0; k < 8; k++)
            ck_assert_ptr_ne(h, stuck[k]);
        heap_unlock(h);
        void *p = emma_alloc(64, 16);
        ck_assert_ptr_nonnull(p);
        emma_dealloc(p, 64, 16);
    }
}
END_TEST

static size_t orphans(void)
{
    size_t n = 0;
    for (heap_t *h = heap_list_first(); h; h = h->next_heap)
        n += atomic_load(&h->owner) == HEAP_ORPHAN;
    return n;
}

static size_t heaps(void)
{
    size_t n = 0;
    for (heap_t *h = heap_list_first(); h; h = h->next_heap)
        n++;
    return n;
}

/* Threads that die holding a heap's lock never use the slots up: once
 * every slot's lock is held by a dead thread, the next thread still gets
 * a heap (its slot given a new one) and allocation goes on.  Before,
 * heap_lock_any returned NULL (malloc failed with ENOMEM) from the 257th
 * death on. */
START_TEST(t_heap_slots_never_run_out)
{
    enum { DEAD = HEAP_SLOTS + 40 };
    /* every slot open at once: only the replacements wait (STUCK_ROUNDS) */
    atomic_store(&heap_slot_limit, HEAP_SLOTS);
    for (int i = 0; i < DEAD; i++) {
        heap_t *h = NULL;
        pthread_t t;
        ck_assert_int_eq(pthread_create(&t, NULL, lock_and_die, &h), 0);
        pthread_join(t, NULL);
        ck_assert_msg(h != NULL, "death %d: no heap", i + 1);
    }
    ck_assert_uint_eq(atomic_load(&heap_slot_limit), HEAP_SLOTS);
    ck_assert_uint_ge(orphans(), DEAD - HEAP_SLOTS);
    struct emma_stats st;
    ck_assert_int_eq(emma_stats(&st, sizeof st), 0);
    ck_assert_uint_eq(st.heaps_live, st.heaps - orphans());
    for (int i = 0; i < 1000; i++) {
        void *p = emma_alloc(64 + (size_t)i * 8, 16);
        ck_assert_ptr_nonnull(p);
        emma_dealloc(p, 64 + (size_t)i * 8, 16);
    }
}
END_TEST

/* A heap replaced in its slot whose holder was only slow (here: this
 * thread, holding every slot's lock) goes back into a slot at the next
 * replacement, once its lock is free: no heap is mapped for it. */
START_TEST(t_heap_orphan_back_in_service)
{
    static heap_t *held[HEAP_SLOTS];
    atomic_store(&heap_slot_limit, HEAP_SLOTS);
    for (int i = 0; i < HEAP_SLOTS; i++) {
        held[i] = heap_lock_any();
        ck_assert_ptr_nonnull(held[i]);
    }
    /* every slot taken, by a live thread: the 257th gets a new heap, in
     * place of one of ours */
    heap_t *extra = heap_lock_any();
    ck_assert_ptr_nonnull(extra);
    ck_assert_uint_eq(orphans(), 1);
    heap_t *orphan = NULL;
    for (int i = 0; i < HEAP_SLOTS; i++)
        if (atomic_load(&held[i]->owner) == HEAP_ORPHAN)
            orphan = held[i];
    ck_assert_ptr_nonnull(orphan);
    void *p = heap_alloc(orphan, 100); /* still usable by its holder */
    ck_assert_ptr_nonnull(p);
    heap_unlock(orphan);
    size_t before = heaps();
    heap_t *again = heap_lock_any(); /* every slot still taken */
    ck_assert_ptr_eq(again, orphan);
    ck_assert_uint_eq(heaps(), before);
    ck_assert_uint_eq(orphans(), 1); /* the one it replaced */
    heap_unlock(again);
    emma_dealloc(p, 100, 16);
}
END_TEST

/* A thread that locks `count` heaps and holds them, alive, until told. */
static heap_t *held_at_fork[HEAP_SLOTS];
static int hold_ready[2], hold_release[2];

static void *hold_heaps(void *arg)
{
    unsigned count = *(unsigned *)arg;
    for (unsigned i = 0; i < count; i++)
        held_at_fork[i] = heap_lock_any();
    char c = 1;
    if (write(hold_ready[1], &c, 1) != 1 || read(hold_release[0], &c, 1) != 1)
        abort();
    for (unsigned i = 0; i < count; i++)
        heap_unlock(held_at_fork[i]);
    return NULL;
}

/* The fork child: its heap_lock_any and 1000 allocations never yield nor
 * open a slot, and never hand out a heap locked at the fork. */
static int fork_child_run(unsigned count, unsigned limit)
{
    unsigned long y0 = atomic_load(&yields);
    heap_t *h = heap_lock_any();
    unsigned long y1 = atomic_load(&yields);
    if (!h)
        return 2;
    for (unsigned i = 0; i < count; i++)
        if (h == held_at_fork[i])
            return 3;
    heap_unlock(h);
    if (y1 != y0 || atomic_load(&heap_slot_limit) != limit) {
        fprintf(stderr, "fork child: heap_lock_any yielded %lu times, slots %u -> %u\n", y1 - y0,
                limit, atomic_load(&heap_slot_limit));
        return 4;
    }
    for (int i = 0; i < 1000; i++) {
        size_t size = (size_t)16 << (i % 13); /* 16 B .. 64 KiB */
        void *p = emma_alloc(size, 16);
        if (!p)
            return 5;
        if (i % 3)
            emma_dealloc(p, size, 16);
    }
    if (atomic_load(&yields) != y0 || atomic_load(&heap_slot_limit) != limit) {
        fprintf(stderr, "fork child: 1000 allocations yielded %lu times, slots %u -> %u\n",
                atomic_load(&yields) - y0, limit, atomic_load(&heap_slot_limit));
        return 6;
    }
    /* the heaps held at the fork stay locked and out of the slots they
     * were taken out of, each replaced at most once */
    unsigned replaced = 0;
    for (unsigned i = 0; i < count; i++) {
        if (atomic_load(&held_at_fork[i]->lock) == 0)
            return 7;
        replaced += atomic_load(&held_at_fork[i]->owner) == HEAP_ORPHAN;
    }
    return replaced >= 1 ? 0 : 8;
}

/* A fork child never waits for the heaps that other threads held at the
 * fork: their holders did not survive it, so their locks never come free
 * (and the heaps may be half updated).  Here a live thread holds every
 * slot's heap (`limit` of them) when the process forks.  Before, the
 * child waited as for a live holder: STUCK_ROUNDS rounds of sched_yield
 * (2000) before a slot opened, or REPLACE_ROUNDS (64) once all 256 were
 * open; a program whose threads were cancelled inside malloc saw its
 * children stall for 0.3-21 s on a loaded machine. */
static void fork_child_does_not_wait(unsigned limit)
{
    atomic_store(&heap_slot_limit, limit);
    ck_assert_int_eq(pipe(hold_ready), 0);
    ck_assert_int_eq(pipe(hold_release), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, hold_heaps, &limit), 0);
    char c;
    ck_assert_int_eq(read(hold_ready[0], &c, 1), 1);
    ck_assert_uint_eq(atomic_load(&heap_slot_limit), limit);
    for (unsigned i = 0; i < limit; i++) {
        ck_assert_ptr_nonnull(held_at_fork[i]);
        heap_t *h = atomic_load(&heap_slots[i]);
        ck_assert(h != NULL && atomic_load(&h->lock) != 0); /* every slot's heap is held */
    }
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(fork_child_run(limit, limit));
    tu_wait_exit0(pid, "fork child (2: no heap, 3: got a heap locked at the fork, 4: "
                       "heap_lock_any waited (yielded), 5: allocation failed, 6: allocations "
                       "waited, 7: a heap locked at the fork was unlocked, 8: none replaced)");
    c = 1;
    ck_assert_int_eq(write(hold_release[1], &c, 1), 1);
    pthread_join(t, NULL);
    /* the parent never gave up on them: each is whole and free again */
    for (unsigned i = 0; i < limit; i++) {
        ck_assert_uint_eq(atomic_load(&held_at_fork[i]->owner), 0);
        ck_assert(heap_trylock(held_at_fork[i]));
        heap_unlock(held_at_fork[i]);
    }
}

START_TEST(t_fork_child_skips_held_heaps)
{
    fork_child_does_not_wait(HEAP_SOFT_LIMIT);
}
END_TEST

START_TEST(t_fork_child_skips_held_heaps_all_slots)
{
    fork_child_does_not_wait(HEAP_SLOTS);
}
END_TEST

#endif

int main(void)
{
    const TTest *tests[] = {
        t_spin_lock_basic,
        t_spin_lock_excludes,
#if EMMA_CONFIG_TLS
        t_heap_per_thread,
        t_dead_thread_heap_adopted,
        t_live_heaps_not_adopted,
        t_nested_decay_keeps_own_heap,
#else
        t_heap_lock_any,
        t_heap_stuck_lock_skipped,
        t_heap_slots_never_run_out,
        t_heap_orphan_back_in_service,
        t_fork_child_skips_held_heaps,
        t_fork_child_skips_held_heaps_all_slots,
#endif
        NULL,
    };
    return tu_run_case("unit_heap", "heap", 60, tests);
}
