/* cache: allocator-induced false sharing.
 *
 *   cache thrash|scratch THREADS ITERS REPS OBJSIZE
 *
 * thrash (active false sharing): each thread ITERS times allocates an
 * OBJSIZE-byte object, writes every byte of it REPS times, and frees it.  An
 * allocator that places small objects of different threads in one cache
 * line makes the cores fight over that line.
 *
 * scratch (passive false sharing): the main thread allocates THREADS
 * objects of OBJSIZE bytes back to back and hands one to each thread, which
 * frees it first and then runs the thrash loop.  An allocator that lets a
 * thread reuse a block freed into it from another thread's line inherits the
 * sharing.  One op = one malloc + one free + REPS*OBJSIZE byte updates;
 * ops = THREADS * ITERS.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "bench.h"

#include <pthread.h>

static long iters, reps;
static size_t objsize;

struct arg {
    void *handed;   /* scratch: object allocated by main, freed here */
};

static void *worker(void *argp)
{
    struct arg *a = argp;
    if (a->handed)
        free(a->handed);
    for (long i = 0; i < iters; i++) {
        volatile unsigned char *p = bench_malloc("cache", objsize);
        for (long r = 0; r < reps; r++)
            for (size_t j = 0; j < objsize; j++)
                p[j]++;
        free((void *)p);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "thrash") != 0 && strcmp(argv[1], "scratch") != 0)) {
        fprintf(stderr, "usage: cache thrash|scratch THREADS ITERS REPS OBJSIZE\n");
        return 64;
    }
    int scratch = strcmp(argv[1], "scratch") == 0;
    long threads = arg_long(argc, argv, 2, 2);
    iters = arg_long(argc, argv, 3, 1000);
    reps = arg_long(argc, argv, 4, 10000);
    objsize = (size_t)arg_long(argc, argv, 5, 8);
    if (threads < 1)
        threads = 1;
    if (objsize < 1)
        objsize = 1;

    pthread_t *tid = malloc((size_t)threads * sizeof *tid);
    struct arg *args = calloc((size_t)threads, sizeof *args);
    if (!tid || !args)
        bench_fail("cache", "out of memory");
    if (scratch)
        for (long t = 0; t < threads; t++) {
            args[t].handed = bench_malloc("cache", objsize);
            memset(args[t].handed, 0, objsize);
        }
    for (long t = 0; t < threads; t++)
        if (pthread_create(&tid[t], NULL, worker, &args[t]) != 0)
            bench_fail("cache", "pthread_create");
    for (long t = 0; t < threads; t++)
        pthread_join(tid[t], NULL);
    free(tid);
    free(args);
    report_ops((unsigned long long)threads * (unsigned long long)iters);
    return 0;
}
