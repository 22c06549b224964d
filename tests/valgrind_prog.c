/* Run by tests/valgrind.sh under valgrind --tool=memcheck: each mode makes
 * one mistake with emma_* blocks that memcheck must report (or, for "clean"
 * and "foreign", none).  Natively every mode runs without crashing.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include <emma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *volatile sink;

static emma_heap_t *volatile keep_heap; /* a heap alive at exit */

static unsigned log2c(size_t c) { return 63u - (unsigned)__builtin_clzl(c); }

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "clean";
    if (strcmp(mode, "clean") == 0) {
        char *p = emma_alloc(100, 16);
        memset(p, 1, 100);
        p = emma_realloc(p, 100, 16, 5000);
        memset(p + 100, 2, 4900);
        char *z = emma_alloc_zeroed(300, 64);
        if (z[299] != 0 || p[4999] != 2)
            return 1;
        emma_dealloc(z, 300, 64);
        emma_free(p);
        char *h = emma_alloc(3 << 20, 16); /* huge */
        h[(3 << 20) - 1] = 1;
        emma_free(h);
    } else if (strcmp(mode, "leak") == 0) {
        /* Not the first block of its page: emma's page descriptor points
         * at that one, so memcheck would call it "still reachable". */
        void *first = emma_alloc(4000, 16);
        sink = emma_alloc(4000, 16);
        sink = NULL; /* definitely lost */
        emma_free(first);
    } else if (strcmp(mode, "leak-first") == 0) {
        /* The only block of its size class, the first emma hands out from
         * a fresh page: reported lost as well (under memcheck emma keeps a
         * page's first block, which its page descriptor points at, to
         * itself). */
        sink = emma_alloc(3000, 16);
        sink = NULL;
    } else if (strcmp(mode, "leak-alone") == 0) {
        /* A block alone in its page: the first 512 KiB block (with the red
         * zone) of a segment, whose first 1 MiB page also holds its
         * header, emma_*'s and a fresh private heap's, leaked. */
        sink = emma_alloc((512 << 10) - 16, 16);
        emma_heap_t *h = emma_heap_new();
        sink = emma_heap_alloc(h, (512 << 10) - 16, 16);
        sink = NULL;
        keep_heap = h;
    } else if (strcmp(mode, "leak-classes") == 0) {
        /* The first block of every size class from 32 bytes to 1 MiB
         * (each from a fresh page, with memcheck's 16-byte red zone),
         * emma_* and a private heap's, 118 blocks leaked: none is "still
         * reachable", those whose page has room for one block too (a
         * segment's first page, which holds its header). */
        emma_heap_t *h = emma_heap_new();
        for (size_t c = 32; c <= (1 << 20); c += c < 128 ? 16 : (size_t)1 << (log2c(c) - 2)) {
            sink = emma_alloc(c - 16, 16);
            sink = emma_heap_alloc(h, c - 16, 16);
        }
        sink = NULL;
        keep_heap = h;
    } else if (strcmp(mode, "huge-leak") == 0) {
        /* A huge block (a mapping of its own, whose header points at it),
         * leaked: "definitely lost" too (under memcheck emma hides that
         * header word from the leak checker while the block is live). */
        sink = emma_alloc(5 << 20, 16);
        sink = NULL;
    } else if (strcmp(mode, "huge-live") == 0) {
        /* Live huge blocks stay reachable (only the 5 MiB one is lost) and
         * cause no false report: written to the end of their usable room,
         * moved by realloc, one freed and its cached mapping reused, the
         * cache read by emma_trim, a private heap's too. */
        static char *volatile live, *volatile live2;
        char *a = emma_alloc(3 << 20, 16);
        memset(a, 1, emma_usable_size(a));
        emma_free(a);
        emma_trim();
        live = emma_alloc(3 << 20, 16); /* the cached mapping, likely */
        memset(live, 2, emma_usable_size(live));
        live = emma_realloc(live, 3 << 20, 16, 6 << 20);
        memset(live + (3 << 20), 3, emma_usable_size(live) - (3 << 20));
        emma_heap_t *h = emma_heap_new();
        live2 = emma_heap_alloc(h, 2 << 20, 16);
        memset(live2, 4, emma_usable_size(live2));
        keep_heap = h;
        sink = emma_alloc(5 << 20, 16);
        sink = NULL; /* definitely lost */
        emma_trim();
        if (live[0] != 2 || live[(6 << 20) - 1] != 3 || live2[(2 << 20) - 1] != 4)
            return 1;
    } else if (strcmp(mode, "use-after-free") == 0) {
        char *p = emma_alloc(200, 16);
        emma_free(p);
        p[100] = 1;
    } else if (strcmp(mode, "uninit") == 0) {
        char *p = emma_alloc(200, 16);
        if (p[50] == 42) /* never written */
            puts("42");
        emma_free(p);
    } else if (strcmp(mode, "overflow") == 0) {
        /* Two neighbours of one size class; the second is freed, so a
         * write past the end of the first lands in a free block. */
        char *a = emma_alloc(64, 16), *b = emma_alloc(64, 16);
        char *lo = a < b ? a : b, *hi = a < b ? b : a;
        if (hi < lo + 64 || hi > lo + 80) /* 80: with memcheck's red zone */
            return 2; /* not neighbours: the test cannot say anything */
        emma_free(hi);
        lo[64 + 8] = 1;
        emma_free(lo);
    } else if (strcmp(mode, "overflow-live") == 0) {
        /* Both neighbours live: a write running off the end of the first
         * block must be reported before it reaches the second (the red
         * zone), although the second is addressable. */
        char *a = emma_alloc(64, 16), *b = emma_alloc(64, 16);
        char *lo = a < b ? a : b, *hi = a < b ? b : a;
        if (hi < lo + 64 || hi > lo + 80 || emma_usable_size(lo) < 64)
            return 2;
        for (char *q = lo; q < hi + 8; q++)
            *(volatile char *)q = 7;
        emma_free(hi);
        emma_free(lo);
    } else if (strcmp(mode, "double-free") == 0) {
        char *p = emma_alloc(48, 16);
        emma_free(p);
        emma_free(p);
    } else if (strcmp(mode, "foreign") == 0) {
        /* Under valgrind, malloc is valgrind's: emma_free hands the block
         * back to it instead of reading emma headers that do not exist. */
        char *p = malloc(100);
        memset(p, 3, 100);
        emma_free(p);
    } else if (strcmp(mode, "heap-clean") == 0) {
        /* A private heap's blocks alive are fine to use: no false report,
         * through realloc, emma_free, reset and a huge block. */
        emma_heap_t *h = emma_heap_new();
        char *p = emma_heap_alloc(h, 100, 16);
        memset(p, 1, 100);
        p = emma_heap_realloc(h, p, 100, 16, 5000);
        memset(p + 100, 2, 4900);
        char *z = emma_heap_alloc_zeroed(h, 300, 64);
        char *big = emma_heap_alloc(h, 3 << 20, 16);
        big[(3 << 20) - 1] = 5;
        char *f = emma_heap_alloc(h, 40, 16);
        memset(f, 4, emma_usable_size(f)); /* the whole usable room */
        if (z[299] != 0 || p[4999] != 2 || p[0] != 1 || big[(3 << 20) - 1] != 5 || f[39] != 4)
            return 1;
        emma_free(f);
        emma_heap_dealloc(h, z, 300, 64);
        emma_heap_dealloc(h, p, 5000, 16);
        for (int round = 0; round < 3; round++) {
            char *a[100];
            for (int i = 0; i < 100; i++) {
                a[i] = emma_heap_alloc(h, 24 + (size_t)i * 8, 16);
                memset(a[i], i, 24 + (size_t)i * 8);
            }
            for (int i = 0; i < 100; i++)
                if (a[i][23] != i)
                    return 1;
            emma_heap_reset(h);
        }
        emma_heap_destroy(h);
    } else if (strcmp(mode, "heap-use-after-reset") == 0) {
        emma_heap_t *h = emma_heap_new();
        char *p = emma_heap_alloc(h, 200, 16);
        memset(p, 1, 200);
        emma_heap_reset(h);
        p[100] = 1;
        emma_heap_destroy(h);
    } else if (strcmp(mode, "heap-overflow-live") == 0) {
        /* overflow-live with a private heap's blocks (their red zone) */
        emma_heap_t *h = emma_heap_new();
        char *a = emma_heap_alloc(h, 64, 16), *b = emma_heap_alloc(h, 64, 16);
        char *lo = a < b ? a : b, *hi = a < b ? b : a;
        if (hi < lo + 64 || hi > lo + 80 || emma_usable_size(lo) < 64)
            return 2;
        for (char *q = lo; q < hi + 8; q++)
            *(volatile char *)q = 7;
        emma_heap_dealloc(h, hi, 64, 16);
        emma_heap_dealloc(h, lo, 64, 16);
        emma_heap_destroy(h);
    } else if (strcmp(mode, "heap-leak-first") == 0) {
        /* leak-first with a private heap: its only 3000-byte block, the
         * first of a fresh page, lost while the heap lives */
        emma_heap_t *h = emma_heap_new();
        sink = emma_heap_alloc(h, 3000, 16);
        sink = NULL;
        keep_heap = h;
    } else if (strcmp(mode, "heap-use-after-dealloc") == 0) {
        emma_heap_t *h = emma_heap_new();
        char *p = emma_heap_alloc(h, 200, 16);
        emma_heap_dealloc(h, p, 200, 16);
        p[100] = 1;
        emma_heap_destroy(h);
    } else if (strcmp(mode, "heap-uninit") == 0) {
        emma_heap_t *h = emma_heap_new();
        char *p = emma_heap_alloc(h, 200, 16);
        if (p[50] == 42) /* never written */
            puts("42");
        emma_heap_destroy(h);
    } else if (strcmp(mode, "heap-double-free") == 0) {
        emma_heap_t *h = emma_heap_new();
        char *p = emma_heap_alloc(h, 48, 16);
        emma_heap_dealloc(h, p, 48, 16);
        emma_heap_dealloc(h, p, 48, 16);
        emma_heap_destroy(h);
    } else if (strcmp(mode, "heap-leak") == 0) {
        /* a block lost while its heap lives (not the first of its page) */
        emma_heap_t *h = emma_heap_new();
        void *first = emma_heap_alloc(h, 4000, 16);
        sink = emma_heap_alloc(h, 4000, 16);
        sink = NULL; /* definitely lost */
        emma_heap_dealloc(h, first, 4000, 16);
        keep_heap = h;
    } else if (strcmp(mode, "heap-destroy") == 0) {
        /* blocks dropped by emma_heap_destroy are not leaks */
        emma_heap_t *h = emma_heap_new();
        for (int i = 0; i < 1000; i++)
            sink = emma_heap_alloc(h, 16 + (size_t)i % 2000, 16);
        sink = emma_heap_alloc(h, 2 << 20, 16);
        sink = NULL;
        emma_heap_destroy(h);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 1;
    }
    puts("done");
    return 0;
}
