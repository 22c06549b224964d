/* A plugin embedding its own private copy of emma (libemma_core.la linked
 * with -Wl,--exclude-libs,ALL, as a library would link libemma.a), loaded
 * and unloaded over and over by test_unload.  It exports only the unload_*
 * functions below.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include <emma.h>
#include <stdint.h>

int unload_work(unsigned seed);
int unload_teardown(void);
void *unload_alloc(size_t size);
void unload_free(void *p);

/* Allocate and free through this thread's heap (small, medium, large and
 * huge blocks) and through a private heap; 0 if every block read back what
 * was written. */
int unload_work(unsigned seed)
{
    enum { N = 400 };
    void *p[N];
    size_t s[N];
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    int bad = 0;
    for (int i = 0; i < N; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s[i] = i == 0 ? (size_t)3 << 20 : i % 50 == 0 ? 100000 + x % 400000 : 16 + x % 3000;
        p[i] = emma_alloc(s[i], 16);
        if (!p[i])
            return 1;
        ((unsigned char *)p[i])[0] = (unsigned char)i;
        ((unsigned char *)p[i])[s[i] - 1] = (unsigned char)i;
    }
    emma_heap_t *h = emma_heap_new();
    if (!h)
        return 1;
    for (int i = 0; i < N; i++) {
        unsigned char *b = emma_heap_alloc(h, 8 + (size_t)i * 4, 8);
        if (!b)
            return 1;
        b[0] = 1;
    }
    void *big = emma_heap_alloc(h, (size_t)2 << 20, 64);
    if (!big)
        return 1;
    emma_heap_destroy(h);
    for (int i = 0; i < N; i++) {
        unsigned char *b = p[i];
        bad |= b[0] != (unsigned char)i || b[s[i] - 1] != (unsigned char)i;
        if (i & 1)
            emma_free(p[i]);
        else
            emma_dealloc(p[i], s[i], 16);
    }
    return bad;
}

int unload_teardown(void) { return emma_teardown(); }
void *unload_alloc(size_t size) { return emma_alloc(size, 16); }
void unload_free(void *p) { emma_free(p); }
