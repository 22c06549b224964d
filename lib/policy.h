/* The memory policy: how much free memory stays resident, for how long,
 * and when it goes back to the kernel.  The layers below (segment.c,
 * huge.c, sparse.c, alloc.c) do the work and report events here; policy.c
 * decides.  Nothing here is on a fast path.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef EMMA_POLICY_H
#define EMMA_POLICY_H

#include "types.h"

/* A heap returns its free pages to the kernel once they exceed
 * max(PURGE_MIN, used_bytes / PURGE_FRACTION). */
#define PURGE_MIN ((size_t)8 << 20)
#define PURGE_FRACTION 8
/* How long a page stays free before it may be purged, in time-stamp
 * counter ticks: about 20-60 ms on current x86 (1-3 GHz TSC).  Also the
 * least time between two sparse passes, and how long a freed huge mapping
 * stays cached. */
#define PURGE_DELAY ((uint64_t)1 << 26)
/* What the freed huge mappings of one heap may hold resident. */
#define HUGE_CACHE_BYTES ((size_t)32 << 20)

/* The knobs behind the defaults above, as variables that options.c
 * (EMMA_DECAY_MS, EMMA_FREE_RESIDENT_MAX, EMMA_HUGE_CACHE_MAX, mallopt)
 * may set before or while the program runs; read on slow paths only. */
EMMA_HIDDEN extern size_t policy_free_bound;      /* PURGE_MIN */
EMMA_HIDDEN extern uint64_t policy_decay_ticks;   /* PURGE_DELAY */
EMMA_HIDDEN extern size_t policy_huge_cold_bytes; /* HUGE_CACHE_BYTES */

/* Events.  segment.c: */
EMMA_HIDDEN void policy_page_freed(heap_t *h);       /* a page went back to its segment */
EMMA_HIDDEN bool policy_keep_empty_segment(heap_t *h); /* keep it mapped (true) or unmap */
EMMA_HIDDEN void policy_before_map(heap_t *h);       /* a new segment is about to be mapped */
/* alloc.c: the heap is about to take a fresh page for a class. */
EMMA_HIDDEN void policy_before_fresh_page(heap_t *h);
/* sparse.c: thin this parked page out in this pass? */
EMMA_HIDDEN bool policy_thin_page(heap_t *h, page_t *page);
/* huge.c: may a freed mapping holding `weight` resident bytes be cached
 * (old entries expire as a side effect)?  Is the cache too big to take it
 * without dropping an entry? */
EMMA_HIDDEN bool policy_huge_cacheable(heap_t *h, size_t weight);
EMMA_HIDDEN bool policy_huge_cache_full(const heap_t *h, size_t weight);
/* emma_trim(): give back everything that can go. */
EMMA_HIDDEN void policy_trim(void);

#endif
