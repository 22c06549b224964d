/* realloc_grow: vectors growing by realloc.
 *
 *   realloc_grow MAXBYTES REPS VECTORS [SMALLVECS]
 *
 * REPS times: VECTORS vectors grow side by side by doubling, from 64 bytes
 * to MAXBYTES (hundreds of MiB in full mode), each step followed by writing
 * one byte in every new page (as filling the vector would fault them in)
 * and checking that the old contents moved along; then they are freed.
 * Growing two or more vectors side by side keeps an allocator from always
 * extending in place.  Then SMALLVECS small vectors grow side by side by
 * 1.5x from 16 bytes to 64 KiB (strings and small arrays being appended
 * to).  One op = one realloc call.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "bench.h"

struct vec {
    unsigned char *p;
    size_t cap;
};

static unsigned long long nrealloc;

static void grow(struct vec *v, size_t newcap, size_t touch_step)
{
    size_t old = v->cap;
    unsigned char *p = realloc(v->p, newcap);
    nrealloc++;
    if (!p)
        bench_fail("realloc_grow", "realloc returned NULL");
    if (old) {
        uint64_t t;
        memcpy(&t, p, sizeof t);
        if (t != (uint64_t)old || p[old - 1] != (unsigned char)old)
            bench_fail("realloc_grow", "contents lost by realloc");
    }
    for (size_t off = old; off < newcap; off += touch_step)
        p[off] = 0x5a;
    uint64_t t = newcap;
    memcpy(p, &t, sizeof t);
    p[newcap - 1] = (unsigned char)newcap;
    v->p = p;
    v->cap = newcap;
}

int main(int argc, char **argv)
{
    size_t maxbytes = (size_t)arg_long(argc, argv, 1, 256L << 20);
    long reps = arg_long(argc, argv, 2, 4);
    long nvec = arg_long(argc, argv, 3, 2);
    long nsmall = arg_long(argc, argv, 4, 2000);
    if (nvec < 1)
        nvec = 1;
    if (maxbytes < 64)
        maxbytes = 64;

    struct vec *v = calloc((size_t)nvec, sizeof *v);
    struct vec *s = calloc(nsmall > 0 ? (size_t)nsmall : 1, sizeof *s);
    if (!v || !s)
        bench_fail("realloc_grow", "out of memory");
    for (long r = 0; r < reps; r++) {
        for (size_t cap = 64; cap <= maxbytes; cap *= 2)
            for (long k = 0; k < nvec; k++)
                grow(&v[k], cap, BENCH_PAGE);
        for (long k = 0; k < nvec; k++) {
            free(v[k].p);
            v[k].p = NULL;
            v[k].cap = 0;
        }
        for (size_t cap = 16; cap <= 65536; cap += cap / 2)
            for (long k = 0; k < nsmall; k++)
                grow(&s[k], cap, 64);
        for (long k = 0; k < nsmall; k++) {
            free(s[k].p);
            s[k].p = NULL;
            s[k].cap = 0;
        }
    }
    free(v);
    free(s);
    report_ops(nrealloc);
    return 0;
}
