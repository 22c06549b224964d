/* The memory policy: how much free memory stays resident, for how long,
 * and when it goes back to the kernel, for the whole process.  The layers
 * below (segment.c, huge.c, sparse.c, alloc.c) do the work and report
 * events here; policy.c decides, and reclaim.c takes back what other
 * threads (dead, idle) hold.  Nothing here is on a fast path.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef EMMA_POLICY_H
#define EMMA_POLICY_H

#include "types.h"

/* ------------------------------------------------------------------ */
/* Knobs: plain variables, read on slow paths only, so that options
 * (environment, mallopt-like calls) can set them before or while the
 * program runs.  Defaults in policy.c. */

/* Free memory that may stay resident, process-wide: free pages of every
 * heap, empty segments in the pool and the huge cache, counted in bytes
 * actually touched.  Default 32 MiB. */
EMMA_HIDDEN extern size_t policy_free_bound;
/* How long free memory stays resident before any thread's slow path gives
 * it back, in time-stamp-counter ticks.  Default 2^28 (about 0.1 s at
 * 2.3 GHz). */
EMMA_HIDDEN extern uint64_t policy_decay_ticks;
/* What freed huge blocks may keep resident when the program does not
 * reuse them at once (a warm program may keep up to policy_free_bound).
 * Default 4 MiB. */
EMMA_HIDDEN extern size_t policy_huge_cold_bytes;
/* Blocks above SHARED_MIN come from the shared heaps (internal.h:
 * heap_lock_shared).  Default true; white-box tests that drive one heap
 * with big blocks turn it off. */
EMMA_HIDDEN extern bool policy_shared_heaps;
/* Does h take its big blocks from the shared heaps?  A thread's heap
 * with TLS (without, heaps are shared already, and a dead holder of a
 * shared heap's lock could not be told from a live one); never a private
 * heap, a spare one or a shared one. */
static inline bool heap_uses_shared(const heap_t *h)
{
    return config_tls && policy_shared_heaps && !h->is_private && !h->spare;
}

/* The least time between two sparse passes of a heap (sparse.c), in
 * time-stamp counter ticks: about 20-60 ms on current x86. */
#define PURGE_DELAY ((uint64_t)1 << 26)


/* ------------------------------------------------------------------ */
/* The process-wide count of free but resident bytes. */
EMMA_HIDDEN void policy_resident_add(size_t n);
EMMA_HIDDEN void policy_resident_sub(size_t n);
EMMA_HIDDEN size_t policy_resident(void);

/* Free memory that no other thread can give back, outside that count and
 * under the same bound (policy.c: over_bound holds the count to the bound
 * less these): pages held empty by their owner (page.c: page_retire), at
 * most HELD_MAX, and the pages of blocks waiting in the depot (depot.c),
 * at most DEPOT_PIN_MAX, counted whole.  Each has a budget of its own,
 * process-wide, so that neither multiplies with the number of threads. */
#define HELD_MAX(bound) ((bound) / 8)
#define DEPOT_PIN_MAX(bound) ((bound) / 2)
/* page.c: room for n more bytes of held pages?  Counted if so. */
EMMA_HIDDEN bool policy_hold(size_t n);
EMMA_HIDDEN void policy_unhold(size_t n);
/* depot.c: the same for pages pinned by the depot's blocks */
EMMA_HIDDEN bool policy_depot_pin(size_t n);
EMMA_HIDDEN void policy_depot_unpin(size_t n);
/* held and depot-pinned bytes now, together and each (emma_stats) */
EMMA_HIDDEN size_t policy_pinned(void);
EMMA_HIDDEN size_t policy_held_bytes(void);
EMMA_HIDDEN size_t policy_depot_pinned_bytes(void);
/* After a hold or a pin: the bound, from a slow path of h (a hold), or
 * from a free by a thread that does not own the block (a pin). */
EMMA_HIDDEN void policy_pinned_grew(heap_t *h);
EMMA_HIDDEN void policy_depot_pinned_grew(void);

/* The knobs behind the defaults above, as variables that options.c
 * (EMMA_DECAY_MS, EMMA_FREE_RESIDENT_MAX, EMMA_HUGE_CACHE_MAX, mallopt)
 * may set before or while the program runs; read on slow paths only. */
EMMA_HIDDEN extern size_t policy_free_bound;      /* PURGE_MIN */
EMMA_HIDDEN extern uint64_t policy_decay_ticks;   /* PURGE_DELAY */
EMMA_HIDDEN extern size_t policy_huge_cold_bytes; /* HUGE_CACHE_BYTES */

/* Events.  segment.c: */
EMMA_HIDDEN void policy_page_freed(heap_t *h, uint64_t now); /* a page went back to its segment */
EMMA_HIDDEN void policy_before_map(heap_t *h);       /* a new segment is about to be mapped */
/* page.c: the heap is about to take a fresh page for a class; returns
 * now_ticks(), read once for both. */
EMMA_HIDDEN uint64_t policy_before_fresh_page(heap_t *h);
/* Any slow path: time for a decay pass?  (One clock read when not.) */
EMMA_HIDDEN void policy_tick(heap_t *self);
/* the same for a caller that has read the clock */
EMMA_HIDDEN void policy_tick_at(heap_t *self, uint64_t now);
/* free.c: a huge block went to the huge cache (self: the caller's heap, or
 * NULL): a tick, and the bound. */
EMMA_HIDDEN void policy_huge_freed(heap_t *self);
/* sparse.c: thin this parked page out in this pass? */
EMMA_HIDDEN bool policy_thin_page(heap_t *h, page_t *page);
/* sparse.c: thin out this page of a class no longer allocated? */
EMMA_HIDDEN bool policy_thin_cold(const page_t *page);
/* A mapping failed: release what every cache holds, process-wide; true if
 * anything was released (worth trying again). */
EMMA_HIDDEN bool policy_release_for_retry(heap_t *self);
/* emma_trim() and malloc_trim(): give back everything free, process-wide;
 * returns the bytes given back. */
EMMA_HIDDEN size_t policy_trim(void);

/* segment.c: the pool of empty segments (purge those freed before
 * `before`, and with unmap, unmap them all). */
EMMA_HIDDEN size_t pool_release(uint64_t before, bool unmap);
/* policy.c's shrink: the same, oldest first, until about `limit` bytes
 * are given back (never unmapping); and a heap's free pages likewise
 * (heap_purge_older with a limit). */
EMMA_HIDDEN size_t pool_purge_some(uint64_t before, size_t limit);
EMMA_HIDDEN size_t heap_purge_some(heap_t *h, uint64_t before, bool wait, size_t limit);

/* huge.c: the huge cache (purge resident memory of mappings freed before
 * `before`; unmap those freed before `unmap_before`). */
EMMA_HIDDEN size_t huge_cache_release(uint64_t before, uint64_t unmap_before);
/* Give back up to `excess` bytes of it, oldest first (mappings freed
 * before `before` only), the last mapping in part. */
EMMA_HIDDEN size_t huge_cache_shrink(uint64_t before, size_t excess);
/* emma_stats(): mappings in the huge cache, and what they may hold resident. */
EMMA_HIDDEN void huge_cache_stats(size_t *count, size_t *bytes);

/* salvage.c: quarantine h (its owner died inside a slow path: heap.c,
 * reclaim.c), and recover quarantined heaps' memory, at most once per
 * decay time unless `all` (trim); returns the bytes purged. */
EMMA_HIDDEN void heap_quarantine(heap_t *h);
EMMA_HIDDEN size_t salvage_pass(bool all);
EMMA_HIDDEN void salvage_forget(void);
/* reclaim.c: another heap's memory, from a thread that does not own it
 * (self: the caller's heap, or NULL).  With `all`, everything free goes
 * (trim); else pages free for longer than the decay time. */
EMMA_HIDDEN size_t reclaim_heap(heap_t *self, heap_t *h, uint64_t before, bool all);
/* reclaim.c, for the remote step: what other threads' frees left in h
 * (h->remote_pages), from a thread that does not own it. */
EMMA_HIDDEN size_t reclaim_remote(heap_t *self, heap_t *h, uint64_t now);

/* free.c: a thread that has freed policy_remote_step_bytes into pages of
 * other heaps since its last remote step takes one (policy_remote_step):
 * what those frees emptied becomes free memory in the process-wide count,
 * so that the bound and the decay cover it while its owner idles or after
 * it died.  With TLS a thread counts in its heap (heap->remote_freed),
 * without TLS every thread in policy_remote_anon.  The step is
 * REMOTE_STEP_TOTAL shared out among the heaps there are (policy_heap_added),
 * REMOTE_STEP_MIN at least: what remote frees leave uncounted, every thread
 * together, does not grow with the number of threads (up to 64 heaps; past
 * that by REMOTE_STEP_MIN each). */
#define REMOTE_STEP_TOTAL ((size_t)2 << 20)
#define REMOTE_STEP_MIN ((size_t)32 << 10)
EMMA_HIDDEN extern size_t policy_remote_step_bytes;
/* heap.c: one more heap on the list of heaps */
EMMA_HIDDEN void policy_heap_added(void);
#if !EMMA_CONFIG_TLS
EMMA_HIDDEN extern size_t policy_remote_anon;
#endif
EMMA_HIDDEN void policy_remote_step(void);

/* heap.c, in a fork child: locks held by threads lost in the fork become
 * stale (a new lock generation). */
EMMA_HIDDEN void policy_after_fork(void);
/* teardown.c: every mapping is gone; forget the pool and the huge cache. */
EMMA_HIDDEN void policy_teardown(void);

#endif
