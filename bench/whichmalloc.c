/* whichmalloc: print the file that provides the malloc this process uses.
 *
 *   whichmalloc
 *
 * The harness runs it under each LD_PRELOAD setting before benchmarking,
 * to make sure the preloaded allocator really replaced malloc (and that
 * plain runs really use glibc's).  Prints "malloc_from PATH", and
 * "emma_owns 1" when the process's emma_owns() claims a fresh malloc block.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    Dl_info info;
    void *(*volatile m)(size_t) = malloc;
    if (dladdr((void *)m, &info) == 0 || info.dli_fname == NULL) {
        printf("malloc_from unknown\n");
        return 1;
    }
    printf("malloc_from %s\n", info.dli_fname);
    int (*owns)(const void *) = (int (*)(const void *))dlsym(RTLD_DEFAULT, "emma_owns");
    if (owns) {
        void *p = malloc(24);
        printf("emma_owns %d\n", owns(p) != 0);
        free(p);
    }
    return 0;
}
