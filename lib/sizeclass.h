/* Size-class math: which class a size falls in, each class's block size,
 * alignment and segment kind (inline, used by the fast path), and
 * class_for() for aligned requests (sizeclass.c).
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef EMMA_SIZECLASS_H
#define EMMA_SIZECLASS_H

#include "types.h"

/* 16..128 in steps of MIN_ALIGN, then 4 classes per doubling up to
 * LARGE_MAX (internal waste at most 25%). */
static inline unsigned class_of_size(size_t size)
{
    if (size <= 128)
        return size == 0 ? 1 : (unsigned)((size + MIN_ALIGN - 1) / MIN_ALIGN);
    unsigned k = log2_floor(size - 1);
    return 8 + (k - 7) * 4 + (unsigned)((size - 1 - ((size_t)1 << k)) >> (k - 2)) + 1;
}

static inline size_t class_size(unsigned c)
{
    if (c <= 8)
        return (size_t)c * MIN_ALIGN;
    unsigned g = (c - 9) / 4, i = (c - 9) % 4;
    return ((size_t)1 << (7 + g)) + ((size_t)(i + 1) << (5 + g));
}

/* Largest power of two dividing the class size: every block of the class
 * is aligned to it. */
static inline size_t class_align(unsigned c)
{
    size_t s = class_size(c);
    return s & (~s + 1);
}

static inline enum segment_kind class_kind(unsigned c)
{
    size_t s = class_size(c);
    return s <= SMALL_MAX    ? KIND_SMALL
           : s <= MEDIUM_MAX ? KIND_MEDIUM
           : s <= LARGE_PAGE_MAX ? KIND_LARGE
                                 : KIND_XLARGE;
}

EMMA_HIDDEN unsigned class_for(size_t size, size_t align);

#endif
