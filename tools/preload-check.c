/* Checks that the malloc of this process is emma's, in a program that was
 * NOT linked with libemma: run it under emma-run (LD_PRELOAD).
 * Used by tools/test-emma-run.sh and tools/deb-test.sh.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

int
main(void)
{
    int (*owns)(const void *);
    const char *(*version)(void);
    void *p, *q;

    /* Looked up at run time: this program knows nothing of emma. */
    *(void **) &owns = dlsym(RTLD_DEFAULT, "emma_owns");
    *(void **) &version = dlsym(RTLD_DEFAULT, "emma_version");
    if (owns == NULL || version == NULL) {
        fputs("preload-check: emma is not loaded in this process\n", stderr);
        return 1;
    }
    p = malloc(100);
    q = calloc(1000, 1000);
    if (p == NULL || q == NULL || !owns(p) || !owns(q)) {
        fputs("preload-check: malloc does not come from emma\n", stderr);
        return 1;
    }
    free(q);
    free(p);
    printf("malloc comes from emma %s\n", version());
    return 0;
}
