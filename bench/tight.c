/* tight: glibc-bench style tight malloc/free loops of fixed small sizes.
 *
 *   tight THREADS PAIRS SIZES [BATCH]
 *
 * Each of THREADS threads performs PAIRS malloc+free pairs: it allocates
 * BATCH blocks of one size, writes to each, then frees them in allocation
 * order, cycling through the comma-separated SIZES list (e.g. "16,32,64,128")
 * from one batch to the next.  BATCH 1 is the classic p = malloc(n); free(p)
 * loop.  One op = one malloc + one free; ops = THREADS * PAIRS.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "bench.h"

#include <pthread.h>

#define MAX_SIZES 16
#define MAX_BATCH 4096

static size_t sizes[MAX_SIZES];
static int nsizes;
static unsigned long long pairs;
static size_t batch;

static void *worker(void *arg)
{
    (void)arg;
    void **ptrs = malloc(batch * sizeof *ptrs);
    if (!ptrs)
        bench_fail("tight", "cannot allocate pointer array");
    unsigned long long done = 0;
    int si = 0;
    while (done < pairs) {
        size_t n = batch;
        if (pairs - done < n)
            n = (size_t)(pairs - done);
        size_t sz = sizes[si];
        if (++si == nsizes)
            si = 0;
        for (size_t i = 0; i < n; i++) {
            unsigned char *p = bench_malloc("tight", sz);
            p[0] = (unsigned char)i;
            p[sz - 1] = (unsigned char)i;
            ptrs[i] = p;
        }
        for (size_t i = 0; i < n; i++) {
            unsigned char *p = ptrs[i];
            if (p[0] != (unsigned char)i || p[sz - 1] != (unsigned char)i)
                bench_fail("tight", "object corrupted");
            free(p);
        }
        done += n;
    }
    free(ptrs);
    return NULL;
}

int main(int argc, char **argv)
{
    long threads = arg_long(argc, argv, 1, 1);
    pairs = (unsigned long long)arg_long(argc, argv, 2, 10000000);
    const char *list = argc > 3 ? argv[3] : "16,32,64,128";
    batch = (size_t)arg_long(argc, argv, 4, 1);
    if (threads < 1)
        threads = 1;
    if (batch < 1)
        batch = 1;
    if (batch > MAX_BATCH)
        batch = MAX_BATCH;
    for (const char *s = list; *s && nsizes < MAX_SIZES;) {
        char *end;
        unsigned long v = strtoul(s, &end, 0);
        if (end == s || v == 0)
            bench_fail("tight", "bad size list");
        sizes[nsizes++] = v;
        s = *end == ',' ? end + 1 : end;
    }
    if (nsizes == 0)
        bench_fail("tight", "empty size list");

    pthread_t *tid = malloc((size_t)threads * sizeof *tid);
    if (!tid)
        bench_fail("tight", "out of memory");
    if (threads == 1) {
        worker(NULL);
    } else {
        for (long t = 0; t < threads; t++)
            if (pthread_create(&tid[t], NULL, worker, NULL) != 0)
                bench_fail("tight", "pthread_create");
        for (long t = 0; t < threads; t++)
            pthread_join(tid[t], NULL);
    }
    free(tid);
    report_ops((unsigned long long)threads * pairs);
    return 0;
}
