/* Noticing that we are the child of a fork(), without pthread_atfork.
 *
 * One page is mapped with MADV_WIPEONFORK: the kernel hands a forked child
 * that page filled with zeros, while the parent (and vfork/CLONE_VM
 * children, which share memory) keep seeing the value we stored.  So a load
 * tells a child apart from its parent, and no syscall is needed.  On
 * kernels without MADV_WIPEONFORK (before 4.14) we fall back to comparing
 * getpid() with the pid recorded at start-up, which is right for fork but
 * would misfire in a vfork child (those must only exec anyway).
 *
 * What the child does about it is the caller's business (heap.c): heaps of
 * threads that did not survive the fork are never adopted, because their
 * owners may have been in the middle of updating them.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "internal.h"

/* FORK_STATE_OK (internal.h): parent, or child already recovered */
#define FORK_STATE_RECOVERING 1u
#define FORK_STATE_CHILD 0u     /* what the wiped page reads in a child */

_Atomic(_Atomic uint32_t *) fork_wipe_word;
static _Atomic int32_t recorded_pid;

void fork_init(void)
{
    if (atomic_load_explicit(&fork_wipe_word, memory_order_acquire))
        return;
    atomic_store(&recorded_pid, os_getpid());
    uint32_t *page = os_map(OS_PAGE_SIZE);
    if (!page)
        return;
    if (!os_wipe_on_fork(page, OS_PAGE_SIZE)) {
        os_unmap(page, OS_PAGE_SIZE);
        return; /* getpid fallback */
    }
    _Atomic uint32_t *w = (_Atomic uint32_t *)page;
    atomic_store(w, FORK_STATE_OK);
    _Atomic uint32_t *expected = NULL;
    if (!atomic_compare_exchange_strong(&fork_wipe_word, &expected, w))
        os_unmap(page, OS_PAGE_SIZE);
}

bool fork_detected(void)
{
    _Atomic uint32_t *w = atomic_load_explicit(&fork_wipe_word, memory_order_acquire);
    if (w)
        return atomic_load_explicit(w, memory_order_acquire) != FORK_STATE_OK;
    int32_t pid = atomic_load(&recorded_pid);
    return pid != 0 && pid != os_getpid();
}

/* Run recover() once in this child; other threads of the child that notice
 * the fork meanwhile wait until it is done.  Signals are blocked while this
 * thread recovers: a handler that allocated meanwhile would find the
 * recovery under way (policy.c's locks ask for it) and wait for itself. */
void fork_recover(void (*recover)(void))
{
    uint64_t mask;
    _Atomic uint32_t *w = atomic_load_explicit(&fork_wipe_word, memory_order_acquire);
    if (!w) {
        int32_t pid = atomic_load(&recorded_pid), now = os_getpid();
        os_signals_block(&mask);
        if (pid != now && atomic_compare_exchange_strong(&recorded_pid, &pid, now))
            recover();
        os_signals_restore(&mask);
        return;
    }
    os_signals_block(&mask);
    uint32_t expected = FORK_STATE_CHILD;
    if (atomic_compare_exchange_strong(w, &expected, FORK_STATE_RECOVERING)) {
        recover();
        atomic_store_explicit(w, FORK_STATE_OK, memory_order_release);
        os_signals_restore(&mask);
        return;
    }
    os_signals_restore(&mask);
    while (atomic_load_explicit(w, memory_order_acquire) == FORK_STATE_RECOVERING)
        os_yield();
}

/* emma_teardown: unmap the page; the next thread heap maps it again. */
void fork_teardown(void)
{
    _Atomic uint32_t *w = atomic_exchange(&fork_wipe_word, NULL);
    if (w)
        os_unmap((void *)w, OS_PAGE_SIZE);
    atomic_store(&recorded_pid, 0);
}
