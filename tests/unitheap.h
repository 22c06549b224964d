/* Driving a heap directly in white-box tests (test_unit_*.c): blocks taken
 * and given back through the generic paths, the same with and without TLS.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef EMMA_TESTS_UNITHEAP_H
#define EMMA_TESTS_UNITHEAP_H

#include "testutil.h"

#include "alloc.h"

static inline void *take(heap_t *h, size_t size)
{
    void *p = alloc_generic(size, MIN_ALIGN, h);
    TU_ASSERT(p != NULL);
    return p;
}

static inline void give(heap_t *h, void *p)
{
    segment_t *seg = segment_of(p);
    heap_free_local(h, page_of(seg, p), p, "give");
}

static inline page_t *page_holding(void *p) { return page_of(segment_of(p), p); }

#endif
