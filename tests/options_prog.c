/* Run by tests/options.sh with EMMA_* variables set: allocates, frees, and
 * prints "done" on stdout; "stats" also prints a few emma_stats() figures
 * ("free_resident N", "huge_cached N", "huge_cached_bytes N") after the
 * frees; "closeerr" closes stderr before returning, as coreutils' cat, ls
 * and sort do at exit; "fd2 FILE", run with stderr closed, opens FILE (which
 * becomes descriptor 2) and writes one line to it.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include <emma.h>
#include <fcntl.h>
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
        fflush(stdout);
    }
    if (argc > 2 && strcmp(argv[1], "fd2") == 0) {
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd != 2 || write(fd, "user data\n", 10) != 10)
            return 1;
    }
    /* write, not stdio: stdout's buffer would be a block still live at
     * exit (options.sh checks the statistics of a program that freed all) */
    if (write(1, "done\n", 5) != 5)
        return 1;
    if (argc > 1 && strcmp(argv[1], "closeerr") == 0 && close(2) != 0)
        return 1;
    return 0;
}
