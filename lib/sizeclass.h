/* Size-class math: which class a size falls in, each class's block size,
 * alignment and segment kind (inline, used by the fast path), and
 * class_for() for aligned requests (sizeclass.c).
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef EMMA_SIZECLASS_H
#define EMMA_SIZECLASS_H

#include "types.h"

/* The last class of small blocks (SMALL_MAX bytes). */
#define CLASS_SMALL_LAST 32

/* Under an address-space limit, once emma maps a share of it (huge.c:
 * space_scarce), blocks above SMALL_MAX take all four classes per
 * doubling instead of every second one: under `ulimit -v` every byte
 * mapped counts, and two classes per doubling round a block up by a sixth
 * on average.  Set once, never cleared: a block of an odd class must keep
 * finding its class (depot.c maps a block size back to it). */
EMMA_HIDDEN extern bool class_fine;
EMMA_HIDDEN void classes_go_fine(void);

/* 16..128 in steps of MIN_ALIGN, then 4 classes per doubling up to
 * SMALL_MAX (internal waste at most 25%), then 2 per doubling up to
 * LARGE_MAX (at most 50%: only the even classes of the 4-per-doubling
 * series are used), or 4 once address space is scarce (class_fine).  Every medium and large class keeps a page per thread
 * that uses it, and those pages' free blocks stay resident: half as many
 * classes, half as many such pages (bench mstress, 8 threads with blocks
 * of 2-512 KiB: peak RSS 169-174 -> 137 MiB).  The rounding costs address
 * space, and memory only where a program writes past what it asked for or
 * a block is reused for a bigger request of its class. */
static inline unsigned class_of_size(size_t size)
{
    if (size <= 128)
        return size == 0 ? 1 : (unsigned)((size + MIN_ALIGN - 1) / MIN_ALIGN);
    unsigned k = log2_floor(size - 1);
    unsigned c = 8 + (k - 7) * 4 + (unsigned)((size - 1 - ((size_t)1 << k)) >> (k - 2)) + 1;
    if (c > CLASS_SMALL_LAST && !__atomic_load_n(&class_fine, __ATOMIC_RELAXED))
        c += c & 1;
    return c;
}

/* class_of_size for DIRECT_MAX < size <= MEDIUM_MAX in one load: every
 * class boundary between 1 and 64 KiB is a multiple of 256 bytes, so
 * (size - 1) / 256 tells the class (alloc.c's 1-64 KiB fast path: 15
 * instructions fewer per malloc than class_of_size's arithmetic). */
#define CLASS_MID_SHIFT 8
EMMA_HIDDEN extern uint8_t class_mid[MEDIUM_MAX >> CLASS_MID_SHIFT]; /* rewritten by classes_go_fine */
static inline unsigned class_of_mid_size(size_t size)
{
    return class_mid[(size - 1) >> CLASS_MID_SHIFT];
}

/* Classes that class_of_size and class_for hand out: all up to SMALL_MAX,
 * the even ones above. */
static inline bool class_in_use(unsigned c) { return c <= CLASS_SMALL_LAST || !(c & 1); }

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
/* class_for as it was before classes_go_fine (the check of a block's
 * layout accepts both: the block may be older). */
EMMA_HIDDEN unsigned class_for_coarse(size_t size, size_t align);

#endif
