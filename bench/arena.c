/* arena: build a tree of small nodes, walk it, drop it all, repeat.
 *
 *   arena MODE NODES ROUNDS
 *
 * Each round builds a random tree of NODES nodes of 24..120 bytes (each
 * node hangs under a random earlier one), sums it, and drops it.  How it is
 * dropped is the MODE; the program is compiled once per allocator API:
 *
 *   arena_emma  (links libemma)   destroy  emma_heap_new / emma_heap_alloc /
 *                                          emma_heap_destroy per round
 *                                 reset    one emma heap, emma_heap_reset
 *                                 free     emma_heap_alloc, emma_heap_dealloc
 *                                          of every node (walking the tree)
 *                                 malloc   the thread's heap: malloc, free
 *                                          of every node
 *   arena_mi    (links mimalloc)  destroy  mi_heap_new / mi_heap_malloc /
 *                                          mi_heap_destroy per round
 *                                 free     mi_heap_malloc, mi_free of every
 *                                          node
 *                                 malloc   mi_malloc, mi_free of every node
 *   arena_libc  (glibc)           malloc   malloc, free of every node
 *
 * One op = one node allocated (and dropped); ops = NODES * ROUNDS.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "bench.h"

#if defined(ARENA_EMMA)
#include <emma.h>
typedef emma_heap_t heap_t;
#define HEAP_NEW() emma_heap_new()
#define HEAP_ALLOC(h, n) emma_heap_alloc((h), (n), 8)
#define HEAP_FREE(h, p, n) emma_heap_dealloc((h), (p), (n), 8)
#define HEAP_DESTROY(h) emma_heap_destroy(h)
#define HEAP_RESET(h) emma_heap_reset(h)
#define HAVE_RESET 1
#elif defined(ARENA_MIMALLOC)
#include <mimalloc.h>
typedef mi_heap_t heap_t;
#define HEAP_NEW() mi_heap_new()
#define HEAP_ALLOC(h, n) mi_heap_malloc((h), (n))
#define HEAP_FREE(h, p, n) mi_free(p)
#define HEAP_DESTROY(h) mi_heap_destroy(h)
#define HAVE_RESET 0
#undef malloc
#undef free
#define malloc mi_malloc
#define free mi_free
#else
typedef void heap_t;
#define HEAP_NEW() ((heap_t *)0)
#define NO_HEAPS 1
#define HAVE_RESET 0
#endif

typedef struct node {
    struct node *child, *sibling;
    uint32_t size;
    uint32_t value;
} node_t;

enum mode { M_DESTROY, M_RESET, M_FREE, M_MALLOC };

static heap_t *heap;
static enum mode mode;

static node_t *node_new(size_t size)
{
    node_t *n;
#ifdef NO_HEAPS
    n = malloc(size);
#else
    n = mode == M_MALLOC ? malloc(size) : HEAP_ALLOC(heap, size);
#endif
    if (!n)
        bench_fail("arena", "allocation failed");
    return n;
}

static void node_free(node_t *n)
{
#ifdef NO_HEAPS
    free(n);
#else
    if (mode == M_MALLOC)
        free(n);
    else
        HEAP_FREE(heap, n, n->size);
#endif
}

/* Sum the tree, checking every node; with `drop`, free each node. */
static uint64_t walk(node_t *n, int drop)
{
    uint64_t s = 0;
    while (n) {
        node_t *next = n->sibling;
        if (((const unsigned char *)n)[n->size - 1] != (unsigned char)n->value)
            bench_fail("arena", "node corrupted");
        s += n->value + walk(n->child, drop);
        if (drop)
            node_free(n);
        n = next;
    }
    return s;
}

int main(int argc, char **argv)
{
    const char *m = argc > 1 ? argv[1] : "destroy";
    long nodes = arg_long(argc, argv, 2, 100000);
    long rounds = arg_long(argc, argv, 3, 50);
    if (!strcmp(m, "destroy"))
        mode = M_DESTROY;
    else if (!strcmp(m, "reset"))
        mode = M_RESET;
    else if (!strcmp(m, "free"))
        mode = M_FREE;
    else if (!strcmp(m, "malloc"))
        mode = M_MALLOC;
    else
        bench_fail("arena", "MODE is destroy, reset, free or malloc");
#ifdef NO_HEAPS
    if (mode != M_MALLOC)
        bench_fail("arena", "this build has no heaps: MODE must be malloc");
#endif
    if (mode == M_RESET && !HAVE_RESET)
        bench_fail("arena", "this allocator has no heap reset");
    if (nodes < 1 || rounds < 0)
        bench_fail("arena", "NODES >= 1, ROUNDS >= 0");
    /* picking parents needs the nodes by number: one array, made once */
    node_t **all = malloc((size_t)nodes * sizeof *all);
    if (!all)
        bench_fail("arena", "cannot allocate the node index");
    uint64_t rng = rng_seed(42), total = 0;
    if (mode == M_RESET || mode == M_FREE)
        heap = HEAP_NEW();
    for (long r = 0; r < rounds; r++) {
        if (mode == M_DESTROY)
            heap = HEAP_NEW();
        if (mode != M_MALLOC && !heap)
            bench_fail("arena", "no heap");
        for (long i = 0; i < nodes; i++) {
            size_t size = 24 + 8 * (size_t)(rng_next(&rng) % 13);
            node_t *n = node_new(size);
            n->child = n->sibling = NULL;
            n->size = (uint32_t)size;
            n->value = (uint32_t)(rng_next(&rng) >> 40);
            ((unsigned char *)n)[size - 1] = (unsigned char)n->value;
            all[i] = n;
            if (i > 0) {
                node_t *p = all[rng_next(&rng) % (uint64_t)i];
                n->sibling = p->child;
                p->child = n;
            }
        }
        int drop = mode == M_FREE || mode == M_MALLOC;
        total += walk(all[0], drop);
#ifndef NO_HEAPS
        if (mode == M_DESTROY)
            HEAP_DESTROY(heap);
#if HAVE_RESET
        if (mode == M_RESET)
            HEAP_RESET(heap);
#endif
#endif
    }
#ifndef NO_HEAPS
    if (heap && mode != M_DESTROY)
        HEAP_DESTROY(heap);
#endif
    free(all);
    printf("sum %llu\n", (unsigned long long)(total & 0xffffffffffffull));
    report_ops((unsigned long long)nodes * (unsigned long long)rounds);
    return 0;
}
