/* Helper for preload-effective.sh: not linked with emma.  Prints whether
 * malloc'd memory belongs to an emma found in the global scope (there is
 * one only under LD_PRELOAD=libemma.so.0).
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#define _GNU_SOURCE 1
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    int (*owns)(const void *) =
        (int (*)(const void *))dlsym(RTLD_DEFAULT, "emma_owns");
    void *p = malloc(10);
    int p_owned = owns ? owns(p) != 0 : 0;
    char *s = strdup("through libc"); /* allocated inside libc */
    void *q = realloc(p, 100000);
    if (!owns) {
        printf("no emma\n");
    } else {
        printf("malloc %d strdup %d realloc %d\n", p_owned, owns(s) != 0,
               owns(q) != 0);
    }
    free(s);
    free(q);
    return 0;
}
