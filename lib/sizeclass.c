/* Size classes for aligned requests.  Blocks of a class are aligned to the
 * largest power of two dividing the class size (page.c lays pages out that
 * way), so an aligned request just picks the first class that is big
 * enough and aligned enough; power-of-two classes every four classes bound
 * the waste by a factor of two.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "sizeclass.h"

/* class_of_size's arithmetic as a constant expression, for the table */
#define CM_K(s) (63 - __builtin_clzll((unsigned long long)(s) - 1))
#define CM_RAW(s) (8 + (CM_K(s) - 7) * 4 + (int)(((s) - 1 - (1ull << CM_K(s))) >> (CM_K(s) - 2)) + 1)
#define CM_CLASS(s) (CM_RAW(s) > CLASS_SMALL_LAST ? CM_RAW(s) + (CM_RAW(s) & 1) : CM_RAW(s))
/* entry i: sizes (256 i, 256 (i + 1)], the class of the largest (only
 * entries past DIRECT_MAX / 256 are used) */
#define CM1(i) CM_CLASS(((i) + 1) << CLASS_MID_SHIFT)
#define CM4(i) CM1(i), CM1((i) + 1), CM1((i) + 2), CM1((i) + 3)
#define CM16(i) CM4(i), CM4((i) + 4), CM4((i) + 8), CM4((i) + 12)
#define CM64(i) CM16(i), CM16((i) + 16), CM16((i) + 32), CM16((i) + 48)
_Static_assert(MEDIUM_MAX >> CLASS_MID_SHIFT == 256, "class_mid has 256 entries");
_Static_assert(DIRECT_MAX % (1 << CLASS_MID_SHIFT) == 0, "DIRECT_MAX on an entry's edge");
uint8_t class_mid[MEDIUM_MAX >> CLASS_MID_SHIFT] = {CM64(0), CM64(64), CM64(128), CM64(192)};

bool class_fine;

/* Every entry to its fine class (a reader racing with the rewrite gets
 * the old class or the new one: both fit every size of the entry), then
 * the flag: set once, by whichever thread's slow path finds address space
 * scarce first (another doing the same at once writes the same bytes). */
void classes_go_fine(void)
{
    if (__atomic_load_n(&class_fine, __ATOMIC_RELAXED))
        return;
    for (unsigned i = DIRECT_MAX >> CLASS_MID_SHIFT; i < (MEDIUM_MAX >> CLASS_MID_SHIFT); i++)
        __atomic_store_n(&class_mid[i], (uint8_t)CM_RAW(((size_t)i + 1) << CLASS_MID_SHIFT),
                         __ATOMIC_RELAXED);
    __atomic_store_n(&class_fine, true, __ATOMIC_RELEASE);
}

/* Class for (size, align) with size <= LARGE_MAX and align <= LARGE_MAX,
 * align a power of two. */
static unsigned class_aligned(unsigned c, size_t align)
{
    while (class_align(c) < align)
        c++;
    return c;
}

unsigned class_for(size_t size, size_t align)
{
    if (align <= MIN_ALIGN)
        return class_of_size(size);
    return class_aligned(class_of_size(size < align ? align : size), align);
}

unsigned class_for_coarse(size_t size, size_t align)
{
    unsigned c = class_of_size(size < align ? align : size);
    if (c > CLASS_SMALL_LAST)
        c += c & 1; /* the next even class: all four series' edges fit */
    return align <= MIN_ALIGN ? c : class_aligned(c, align);
}
