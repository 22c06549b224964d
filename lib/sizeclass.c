/* Size classes for aligned requests.  Blocks of a class are aligned to the
 * largest power of two dividing the class size (page.c lays pages out that
 * way), so an aligned request just picks the first class that is big
 * enough and aligned enough; power-of-two classes every four classes bound
 * the waste by a factor of two.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "sizeclass.h"

/* Class for (size, align) with size <= LARGE_MAX and align <= LARGE_MAX,
 * align a power of two. */
unsigned class_for(size_t size, size_t align)
{
    if (align <= MIN_ALIGN)
        return class_of_size(size);
    if (size < align)
        size = align;
    unsigned c = class_of_size(size);
    while (class_align(c) < align)
        c++;
    return c;
}
