/* Run by tests/options.sh with EMMA_* variables set: allocates, frees, and
 * prints "done" on stdout; "stats" also prints a few emma_stats() figures
 * ("free_resident N", "huge_cached N", "huge_cached_bytes N") after the
 * frees; "closeerr" closes stderr before returning, as coreutils' cat, ls
 * and sort do at exit.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include <emma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    enum { N = 1000 };
    static void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = malloc(20000); /* 20 MB of 20 KB blocks in 512 KiB pages */
        memset(p[i], 1, 20000);
    }
    for (int i = 0; i < N; i++)
        free(p[i]);
    void *h = malloc(3 << 20); /* a huge block, freed into the huge cache */
    memset(h, 1, 3 << 20);
    free(h);
    if (argc > 1 && strcmp(argv[1], "stats") == 0) {
        struct emma_stats s;
        if (emma_stats(&s, sizeof s) != 0)
            return 1;
        printf("free_resident %zu\nhuge_cached %zu\nhuge_cached_bytes %zu\n",
               s.bytes_free_resident, s.huge_cached, s.huge_cached_bytes);
    }
    puts("done");
    if (argc > 1 && strcmp(argv[1], "closeerr") == 0 && close(2) != 0)
        return 1;
    return 0;
}
