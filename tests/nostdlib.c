/* A program with no libc at all: its own _start, raw syscalls, linked
 * statically (-static -nostdlib) against libemma.a.  It allocates and frees
 * every size class with various alignments, writes and reads the memory,
 * and reports in TAP ("1..1" / "ok 1") through a raw write(2).
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * With thread-local heaps (EMMA_TLS, -DSETUP_TLS=1) the library needs a
 * thread pointer, which a libc would have set up before main: _start does
 * the same here, the way a libc does on x86_64 (TLS variant II): find the
 * PT_TLS program header through the auxiliary vector, copy the TLS image
 * just below the thread pointer, put the TCB (whose first word points to
 * itself) at the thread pointer, and arch_prctl(ARCH_SET_FS).
 * Without TLS the library must need no thread pointer at all: %fs stays 0
 * (any TLS access would fault) and the program must have no PT_TLS.
 *
 * Compiled with -ffreestanding -fno-builtin -fno-stack-protector; includes
 * only the compiler's freestanding headers and emma.h.
 */
#include <stddef.h>
#include <stdint.h>

#include <emma.h>

/* The malloc API, from libemma.a too (no libc headers here). */
void *malloc(size_t size);
void free(void *p);
void *calloc(size_t n, size_t size);
void *realloc(void *p, size_t size);
void *aligned_alloc(size_t align, size_t size);
int posix_memalign(void **memptr, size_t align, size_t size);
size_t malloc_usable_size(void *p);
void free_sized(void *p, size_t size);

#ifndef SETUP_TLS
#define SETUP_TLS 0
#endif

/* ------------------------------------------------------------------ */
/* Raw system calls                                                    */

#define SYS_write 1
#define SYS_arch_prctl 158
#define SYS_exit_group 231
#define ARCH_SET_FS 0x1002

static long sys3(long n, long a, long b, long c)
{
    long r;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(n), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return r;
}

static size_t str_len(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static void out(const char *s)
{
    sys3(SYS_write, 1, (long)s, (long)str_len(s));
}

static void out_num(uint64_t v)
{
    char buf[24];
    int i = 23;
    buf[i] = '\0';
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    out(buf + i);
}

static __attribute__((noreturn)) void finish(int code)
{
    sys3(SYS_exit_group, code, 0, 0);
    for (;;)
        ;
}

static const char *current_step = "start";

static __attribute__((noreturn)) void fail2(const char *what, uint64_t a,
                                            uint64_t b)
{
    out("not ok 1 - libc-free static program: ");
    out(current_step);
    out(": ");
    out(what);
    out(" (");
    out_num(a);
    out(", ");
    out_num(b);
    out(")\n");
    finish(1);
}

#define CHECK(cond, a, b)                                                     \
    do {                                                                      \
        if (!(cond))                                                          \
            fail2(#cond, (uint64_t)(a), (uint64_t)(b));                       \
    } while (0)

/* gcc may emit calls to these even with -ffreestanding.  Weak, so that the
 * library's own copies (if it exports any to the static link) win. */
__attribute__((weak)) void *memset(void *d, int c, size_t n)
{
    unsigned char *p = d;
    while (n--)
        *p++ = (unsigned char)c;
    return d;
}

__attribute__((weak)) void *memcpy(void *d, const void *s, size_t n)
{
    unsigned char *p = d;
    const unsigned char *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

__attribute__((weak)) void *memmove(void *d, const void *s, size_t n)
{
    unsigned char *p = d;
    const unsigned char *q = s;
    if (p < q) {
        while (n--)
            *p++ = *q++;
    } else {
        while (n--)
            p[n] = q[n];
    }
    return d;
}

__attribute__((weak)) int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *p = a, *q = b;
    for (; n; n--, p++, q++)
        if (*p != *q)
            return *p - *q;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Entry point and thread pointer                                      */

typedef struct {
    uint32_t p_type, p_flags;
    uint64_t p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align;
} phdr_t;

#define PT_PHDR 6
#define PT_TLS 7
#define AT_NULL 0
#define AT_PHDR 3
#define AT_PHNUM 5

__attribute__((noreturn, used)) void emma_test_start_c(uintptr_t *sp);

__asm__(".text\n"
        ".global _start\n"
        ".type _start,@function\n"
        "_start:\n"
        "    xor %ebp, %ebp\n"
        "    mov %rsp, %rdi\n"     /* argc, argv..., 0, envp..., 0, auxv */
        "    and $-16, %rsp\n"
        "    call emma_test_start_c\n"
        "    hlt\n");

static unsigned char tls_area[256 << 10] __attribute__((aligned(4096)));

static const phdr_t *find_tls(const phdr_t *ph, size_t phnum, uintptr_t *bias)
{
    const phdr_t *tls = 0;
    *bias = 0; /* ET_EXEC: no load bias unless PT_PHDR says otherwise */
    for (size_t i = 0; i < phnum; i++) {
        if (ph[i].p_type == PT_PHDR)
            *bias = (uintptr_t)ph - ph[i].p_vaddr;
        if (ph[i].p_type == PT_TLS)
            tls = &ph[i];
    }
    return tls;
}

static void setup_thread_pointer(const phdr_t *ph, size_t phnum)
{
    uintptr_t bias;
    const phdr_t *tls = find_tls(ph, phnum, &bias);
    if (!SETUP_TLS) {
        /* a --disable-tls library must not bring TLS along */
        CHECK(tls == 0, tls ? tls->p_memsz : 0, 0);
        return;
    }
    size_t align = tls && tls->p_align > 64 ? tls->p_align : 64;
    size_t memsz = tls ? tls->p_memsz : 0;
    /* the linker places the executable's TLS block at
     * tp - round_up(memsz, p_align) (local-exec offsets) */
    size_t tls_align = tls && tls->p_align ? tls->p_align : 1;
    size_t off = (memsz + tls_align - 1) & ~(tls_align - 1);
    uintptr_t tp = ((uintptr_t)tls_area + off + align - 1) & ~(align - 1);
    CHECK(tp + 512 <= (uintptr_t)tls_area + sizeof tls_area, memsz, align);
    unsigned char *block = (unsigned char *)(tp - off);
    if (tls) {
        const unsigned char *image = (const unsigned char *)(bias + tls->p_vaddr);
        for (size_t i = 0; i < tls->p_filesz; i++)
            block[i] = image[i];
        for (size_t i = tls->p_filesz; i < memsz; i++)
            block[i] = 0;
    }
    /* TCB: tcb (self), dtv, self, ..., stack guard at 0x28 */
    uintptr_t *tcb = (uintptr_t *)tp;
    tcb[0] = tp;
    tcb[1] = 0;
    tcb[2] = tp;
    tcb[5] = 0x5eed5eed5eed5e00ull;
    long r = sys3(SYS_arch_prctl, ARCH_SET_FS, (long)tp, 0);
    CHECK(r == 0, -r, 0);
    uintptr_t self;
    __asm__ volatile("mov %%fs:0, %0" : "=r"(self));
    CHECK(self == tp, self, tp);
}

/* ------------------------------------------------------------------ */
/* The exercise                                                        */

static void pat_fill(unsigned char *p, size_t n, uint64_t seed)
{
    if (n <= (64 << 10)) {
        for (size_t i = 0; i < n; i++)
            p[i] = (unsigned char)((i * 131u) ^ seed ^ (i >> 8));
    } else { /* sparse for big blocks: every 61st byte and the last one */
        for (size_t i = 0; i < n; i += 61)
            p[i] = (unsigned char)((i * 131u) ^ seed ^ (i >> 8));
        p[n - 1] = (unsigned char)seed;
    }
}

static int pat_ok(const unsigned char *p, size_t n, uint64_t seed)
{
    if (n <= (64 << 10)) {
        for (size_t i = 0; i < n; i++)
            if (p[i] != (unsigned char)((i * 131u) ^ seed ^ (i >> 8)))
                return 0;
        return 1;
    }
    for (size_t i = 0; i < n; i += 61)
        if (i != n - 1 && p[i] != (unsigned char)((i * 131u) ^ seed ^ (i >> 8)))
            return 0;
    return p[n - 1] == (unsigned char)seed;
}

static size_t next_size(size_t s)
{
    if (s < 1024)
        return s + 1;
    return s + s / 32;
}

#define NBLK 6

static void exercise(void)
{
    int on_stack = 0;
    void *p[NBLK];

    current_step = "emma_owns";
    CHECK(!emma_owns(&on_stack), 0, 0);
    CHECK(!emma_owns(0), 0, 0);

    current_step = "malloc every size class";
    for (size_t s = 1; s <= ((size_t)1 << 20); s = next_size(s)) {
        for (int k = 0; k < NBLK; k++) {
            p[k] = malloc(s);
            CHECK(p[k] != 0, s, k);
            CHECK(((uintptr_t)p[k] & 15) == 0, s, (uintptr_t)p[k]);
            CHECK(emma_owns(p[k]), s, k);
            CHECK(malloc_usable_size(p[k]) >= s, s, malloc_usable_size(p[k]));
            pat_fill(p[k], s, s + k);
        }
        for (int k = 0; k < NBLK; k++) {
            CHECK(pat_ok(p[k], s, s + k), s, k);
            if (k & 1)
                free(p[k]);
            else
                free_sized(p[k], s);
        }
    }

    current_step = "emma_alloc every size class, many alignments";
    for (size_t s = 1; s <= ((size_t)1 << 20); s = next_size(s)) {
        size_t a = (size_t)1 << (s % 14);
        for (int k = 0; k < 3; k++) {
            p[k] = emma_alloc(s, a);
            CHECK(p[k] != 0, s, a);
            CHECK(((uintptr_t)p[k] & (a - 1)) == 0, s, a);
            CHECK(emma_usable_size(p[k]) >= s, s, a);
            pat_fill(p[k], s, s ^ a ^ (uint64_t)k);
        }
        for (int k = 0; k < 3; k++) {
            CHECK(pat_ok(p[k], s, s ^ a ^ (uint64_t)k), s, a);
            emma_dealloc(p[k], s, a);
        }
    }

    current_step = "alignments 1 B .. 64 MiB";
    for (int sh = 0; sh <= 26; sh++) {
        size_t a = (size_t)1 << sh;
        unsigned char *q = emma_alloc(100, a);
        CHECK(q != 0 && ((uintptr_t)q & (a - 1)) == 0, a, (uintptr_t)q);
        pat_fill(q, 100, 7);
        CHECK(pat_ok(q, 100, 7), a, 0);
        emma_dealloc(q, 100, a);
        q = emma_alloc(a + 1, a);
        CHECK(q != 0 && ((uintptr_t)q & (a - 1)) == 0, a, (uintptr_t)q);
        q[0] = 1;
        q[a] = 2;
        emma_dealloc(q, a + 1, a);
        void *r = 0;
        if (a >= sizeof(void *)) {
            CHECK(posix_memalign(&r, a, 3000) == 0, a, 0);
            CHECK(((uintptr_t)r & (a - 1)) == 0, a, (uintptr_t)r);
            free(r);
        }
        r = aligned_alloc(a, 5000);
        CHECK(r != 0 && ((uintptr_t)r & (a - 1)) == 0, a, (uintptr_t)r);
        free(r);
    }

    current_step = "huge blocks and realloc";
    {
        const size_t huge[] = {2u << 20, (5u << 20) + 3, 33u << 20, 1u << 20,
                               (1u << 20) + 1, 100, 9u << 20};
        unsigned char *q = 0;
        size_t have = 0;
        for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
            unsigned char *b = malloc(huge[i]);
            CHECK(b != 0 && emma_owns(b) && emma_owns(b + huge[i] - 1),
                  huge[i], 0);
            pat_fill(b, huge[i], i);
            CHECK(pat_ok(b, huge[i], i), huge[i], 0);
            free(b);
            q = realloc(q, huge[i]);
            CHECK(q != 0, huge[i], have);
            if (have) {
                size_t keep = have < huge[i] ? have : huge[i];
                CHECK(q[0] == 0x5a && q[keep / 2] == 0x5b && q[keep - 1] == 0x5b,
                      have, huge[i]);
            }
            /* mark the middle and the last byte of this size and of every
             * smaller one (a later shrink keeps those) */
            q[0] = 0x5a;
            for (size_t j = 0; j < sizeof huge / sizeof huge[0]; j++)
                if (huge[j] <= huge[i]) {
                    q[huge[j] / 2] = 0x5b;
                    q[huge[j] - 1] = 0x5b;
                }
            have = huge[i];
        }
        free(q);
    }

    current_step = "zeroed memory";
    for (size_t s = 16; s <= ((size_t)4 << 20); s *= 2) {
        unsigned char *d = malloc(s);
        CHECK(d != 0, s, 0);
        memset(d, 0xee, s);
        free(d);
        unsigned char *z = calloc(1, s);
        CHECK(z != 0, s, 0);
        for (size_t i = 0; i < s; i++)
            CHECK(z[i] == 0, s, i);
        free(z);
        z = emma_alloc_zeroed(s, 64);
        CHECK(z != 0, s, 0);
        for (size_t i = 0; i < s; i++)
            CHECK(z[i] == 0, s, i);
        emma_dealloc(z, s, 64);
    }

    current_step = "errors without errno";
    /* no libc: __errno_location is absent, failures must still be clean */
    CHECK(malloc((size_t)-1) == 0, 0, 0);
    CHECK(calloc((size_t)1 << 40, (size_t)1 << 40) == 0, 0, 0);
    CHECK(emma_alloc((size_t)-1, 16) == 0, 0, 0);
    {
        void *r = (void *)1;
        CHECK(posix_memalign(&r, 24, 10) == 22 /* EINVAL */, 0, 0);
        CHECK(r == (void *)1, 0, 0);
        unsigned char *b = malloc(50);
        CHECK(realloc(b, (size_t)-1 / 2) == 0, 0, 0);
        b[49] = 1;
        free(b);
    }

    current_step = "emma_realloc";
    {
        unsigned char *q = emma_alloc(10, 256);
        size_t cur = 10;
        pat_fill(q, cur, 3);
        for (size_t ns = 20; ns < ((size_t)3 << 20); ns = ns * 3 + 1) {
            unsigned char *r = emma_realloc(q, cur, 256, ns);
            CHECK(r != 0 && ((uintptr_t)r & 255) == 0, cur, ns);
            CHECK(pat_ok(r, cur, 3), cur, ns);
            pat_fill(r, ns, 3);
            q = r;
            cur = ns;
        }
        emma_dealloc(q, cur, 256);
    }

    current_step = "emma_trim and reuse";
    emma_trim();
    for (int i = 0; i < 1000; i++) {
        void *q = malloc((size_t)i * 10);
        CHECK(q != 0, i, 0);
        emma_free(q);
    }
    CHECK(emma_version() != 0 && emma_version()[0] >= '0', 0, 0);
}

void emma_test_start_c(uintptr_t *sp)
{
    uintptr_t argc = sp[0];
    char **envp = (char **)(sp + 1 + argc + 1);
    while (*envp)
        envp++;
    uintptr_t *auxv = (uintptr_t *)(envp + 1);
    const phdr_t *phdr = 0;
    size_t phnum = 0;
    for (; auxv[0] != AT_NULL; auxv += 2) {
        if (auxv[0] == AT_PHDR)
            phdr = (const phdr_t *)auxv[1];
        else if (auxv[0] == AT_PHNUM)
            phnum = auxv[1];
    }
    out("1..1\n");
    current_step = "auxiliary vector";
    CHECK(phdr != 0 && phnum != 0, phnum, 0);
    current_step = "thread pointer";
    setup_thread_pointer(phdr, phnum);
    exercise();
    out(SETUP_TLS ? "ok 1 - libc-free static program, thread pointer set up "
                    "by _start\n"
                  : "ok 1 - libc-free static program, no thread pointer\n");
    finish(0);
}
