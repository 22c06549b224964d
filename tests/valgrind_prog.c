/* Run by tests/valgrind.sh under valgrind --tool=memcheck: each mode makes
 * one mistake with emma_* blocks that memcheck must report (or, for "clean"
 * and "foreign", none).  Natively every mode runs without crashing.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include <emma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *volatile sink;

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
        if (hi != lo + 64)
            return 2; /* not neighbours: the test cannot say anything */
        emma_free(hi);
        lo[64 + 8] = 1;
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
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 1;
    }
    puts("done");
    return 0;
}
