/* One private copy of emma inside a shared object (built twice, as
 * libtwocopy_a and libtwocopy_b, with COPY=a / COPY=b).  The copy is linked
 * from libemma_core.la with -Wl,--exclude-libs,ALL, so the object exports
 * only the COPY_* wrappers below, never emma_*.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include <emma.h>

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define API(name) CAT(COPY, CAT(_, name))

void *API(alloc)(size_t size, size_t align);
void API(dealloc)(void *p, size_t size, size_t align);
void API(free)(void *p);
int API(owns)(const void *p);
size_t API(usable)(const void *p);

void *API(alloc)(size_t size, size_t align) { return emma_alloc(size, align); }
void API(dealloc)(void *p, size_t size, size_t align) { emma_dealloc(p, size, align); }
void API(free)(void *p) { emma_free(p); }
int API(owns)(const void *p) { return emma_owns(p); }
size_t API(usable)(const void *p) { return emma_usable_size(p); }
