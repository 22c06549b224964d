/* emma: an embeddable, libc-free memory allocator for Linux x86_64.
 *
 * Public API.  Two families:
 *   - the emma_* API: every call carries the size and the alignment of the
 *     block, like a Rust GlobalAlloc, so the allocator can skip work;
 *   - the malloc-compatible API (malloc, free, calloc, ...), declared by
 *     <stdlib.h> and <malloc.h>, exported by libemma as well.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#ifndef EMMA_H
#define EMMA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EMMA_VERSION_MAJOR 0
#define EMMA_VERSION_MINOR 2
#define EMMA_VERSION_PATCH 0
#define EMMA_VERSION_STRING "0.2.0"

#if defined(__GNUC__)
#define EMMA_MALLOC_ATTR __attribute__((malloc, warn_unused_result))
#else
#define EMMA_MALLOC_ATTR
#endif

/* emma_owns() only compares the pointer's address with emma's metadata: it
 * never reads the memory the pointer points to.  Saying so
 * keeps GCC (11 and later) from warning that freshly allocated memory "may
 * be used uninitialized" when such a pointer is passed to them. */
#if defined(__has_attribute)
#if __has_attribute(access) && !defined(__clang__)
#define EMMA_NO_ACCESS_ATTR __attribute__((access(none, 1)))
#endif
#endif
#ifndef EMMA_NO_ACCESS_ATTR
#define EMMA_NO_ACCESS_ATTR
#endif

/* Allocate size bytes aligned to align (a power of two).  Returns NULL if
 * the request cannot be met.  size 0 yields a unique, freeable pointer. */
void *emma_alloc(size_t size, size_t align) EMMA_MALLOC_ATTR;

/* Like emma_alloc, but the memory is zeroed. */
void *emma_alloc_zeroed(size_t size, size_t align) EMMA_MALLOC_ATTR;

/* Release a block obtained from emma with this size and alignment. */
void emma_dealloc(void *ptr, size_t size, size_t align);

/* Resize a block of old_size bytes (aligned to align) to new_size bytes.
 * On failure returns NULL and leaves the block untouched. */
void *emma_realloc(void *ptr, size_t old_size, size_t align, size_t new_size)
    __attribute__((warn_unused_result));

/* Usable size of a block (at least the requested size); 0 for NULL. */
size_t emma_usable_size(const void *ptr);

/* Release a block without knowing its size (any emma or malloc block). */
void emma_free(void *ptr);

/* Nonzero if ptr points into memory managed by this copy of emma (any
 * address inside one of its segments or huge blocks); 0 otherwise.  Safe to
 * call with any pointer value. */
int emma_owns(const void *ptr) EMMA_NO_ACCESS_ATTR;

/* Return the calling thread's unused memory to the kernel. */
void emma_trim(void);

/* Library version as "MAJOR.MINOR.PATCH". */
const char *emma_version(void);

#ifdef __cplusplus
}
#endif

#endif /* EMMA_H */
