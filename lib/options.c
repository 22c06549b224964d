/* Run-time options from the environment, read without libc.
 *
 * Where the environment comes from:
 *   1. glibc's dynamic loader (and glibc's static start-up code) calls every
 *      DT_INIT_ARRAY function with (argc, argv, envp).  emma's constructor
 *      (api_malloc.c) passes envp here if it is where the initial stack puts
 *      it, right after argv's terminating NULL: musl calls constructors with
 *      no arguments at all, so the registers hold whatever they held, and
 *      only that exact relation makes them trustworthy.
 *   2. Otherwise (musl, a dlopen after setenv, a -nostdlib program whose
 *      _start runs no constructors) the first heap emma creates reads
 *      /proc/self/environ with raw open/read: the environment the process
 *      was started with.
 *   3. With neither (no constructor call, no /proc: a chroot, early boot),
 *      every option keeps its default.
 * Options are read once.  A bad value gets one line on stderr and the
 * default, never a crash.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "observe.h"
#include "policy.h"

struct emma_options emma_opt;
uint8_t vg_running;

void vg_detect(void)
{
#if EMMA_CONFIG_VALGRIND
    vg_running = RUNNING_ON_VALGRIND ? 1 : 0;
#endif
}

/* 0 not read, 1 being read, 2 read */
static _Atomic uint32_t options_state;
static const char *options_source = "nowhere (defaults)";

/* ------------------------------------------------------------------ */
/* Values */

static bool parse_u64(const char *s, uint64_t *out, const char **end)
{
    uint64_t v = 0;
    if (*s < '0' || *s > '9')
        return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    *end = s;
    return true;
}

/* A byte count: digits, then optionally k/K, m/M, g/G or t/T (powers of 1024),
 * optionally followed by "B" or "iB". */
static bool parse_bytes(const char *s, uint64_t *out)
{
    const char *e;
    uint64_t v;
    if (!parse_u64(s, &v, &e))
        return false;
    unsigned shift = 0;
    switch (*e) {
    case 'k': case 'K': shift = 10; e++; break;
    case 'm': case 'M': shift = 20; e++; break;
    case 'g': case 'G': shift = 30; e++; break;
    case 't': case 'T': shift = 40; e++; break;
    default: break;
    }
    if (shift && e[0] == 'i' && e[1] == 'B')
        e += 2;
    else if (shift && e[0] == 'B')
        e++;
    if (*e)
        return false;
    if (shift && v > (UINT64_MAX >> shift))
        return false;
    *out = v << shift;
    return true;
}

static bool parse_plain(const char *s, uint64_t *out)
{
    const char *e;
    return parse_u64(s, out, &e) && *e == '\0';
}

enum opt_kind { OPT_BOOL, OPT_MS, OPT_BYTES };

struct opt_desc {
    const char *name;
    enum opt_kind kind;
    uint64_t max;
    const char *what; /* what a good value is, for the warning */
};

#define OPT_COUNT 5
static const struct opt_desc opt_table[OPT_COUNT] = {
    {"EMMA_SHOW_STATS", OPT_BOOL, 1, "0 or 1"},
    {"EMMA_VERBOSE", OPT_BOOL, 1, "0 or 1"},
    {"EMMA_DECAY_MS", OPT_MS, 600000, "a number of milliseconds from 0 to 600000"},
    {"EMMA_FREE_RESIDENT_MAX", OPT_BYTES, (uint64_t)1 << 40,
     "a number of bytes up to 1T (suffix K, M, G or T allowed)"},
    {"EMMA_HUGE_CACHE_MAX", OPT_BYTES, (uint64_t)1 << 40,
     "a number of bytes up to 1T (suffix K, M, G or T allowed)"},
};

/* ------------------------------------------------------------------ */
/* The memory policy's knobs (policy.h) in the options' units. */

static uint64_t ticks_per_ms;

static uint64_t tsc_per_ms(void)
{
    if (!ticks_per_ms)
        ticks_per_ms = os_tsc_per_ms();
    return ticks_per_ms;
}

static uint64_t opt_get(unsigned i)
{
    switch (i) {
    case 0: return emma_opt.show_stats;
    case 1: return emma_opt.verbose;
    case 2: return policy_decay_ticks / tsc_per_ms();
    case 3: return policy_free_bound;
    default: return policy_huge_cold_bytes;
    }
}

static void opt_set(unsigned i, uint64_t v)
{
    switch (i) {
    case 0: emma_opt.show_stats = (uint8_t)v; break;
    case 1: emma_opt.verbose = (uint8_t)v; break;
    case 2: policy_decay_ticks = v * tsc_per_ms(); break;
    case 3: policy_free_bound = (size_t)v; break;
    default: policy_huge_cold_bytes = (size_t)v; break;
    }
}

/* mallopt(M_TRIM_THRESHOLD, v): glibc reads a negative v as "never
 * trim", here the largest bound EMMA_FREE_RESIDENT_MAX accepts. */
void options_set_free_bound(long long v)
{
    opt_set(3, v < 0 ? opt_table[3].max : (uint64_t)v);
}

static void put_value(struct outbuf *o, unsigned i, uint64_t v)
{
    if (opt_table[i].kind == OPT_BYTES)
        out_bytes(o, v);
    else
        out_u64(o, v);
}

/* Each string of a NULL-terminated list, in turn. */
static void out_strs(struct outbuf *o, const char *const *list)
{
    for (; *list; list++)
        out_str(o, *list);
}

static bool name_is(const char *entry, size_t len, const char *name, const char **value)
{
    size_t n = 0;
    while (name[n]) {
        if (n >= len || entry[n] != name[n])
            return false;
        n++;
    }
    if (n >= len || entry[n] != '=')
        return false;
    *value = entry + n + 1;
    return true;
}

/* One NUL-terminated NAME=VALUE entry. */
static void option_entry(const char *entry, size_t len)
{
    if (len < 5 || entry[0] != 'E' || entry[1] != 'M' || entry[2] != 'M' || entry[3] != 'A' ||
        entry[4] != '_')
        return;
    for (unsigned i = 0; i < OPT_COUNT; i++) {
        const char *value;
        if (!name_is(entry, len, opt_table[i].name, &value))
            continue;
        uint64_t v;
        bool ok = opt_table[i].kind == OPT_BYTES ? parse_bytes(value, &v) : parse_plain(value, &v);
        if (ok && v <= opt_table[i].max) {
            opt_set(i, v);
            return;
        }
        struct outbuf o;
        out_init(&o, 2);
        out_strs(&o, (const char *const[]){"emma: ", entry, ": not ", opt_table[i].what,
                                           "; using ", NULL});
        put_value(&o, i, opt_get(i));
        out_str(&o, "\n");
        out_flush(&o);
        return;
    }
}

/* ------------------------------------------------------------------ */
/* Sources */

static void options_from_envp(char **envp)
{
    for (; *envp; envp++) {
        const char *e = *envp;
        size_t n = 0;
        while (e[n])
            n++;
        option_entry(e, n);
    }
}

/* /proc/self/environ, NUL-separated, read in pieces.  Entries longer than
 * the line buffer are not ours (every option is short) and are skipped. */
static bool options_from_proc(void)
{
    int fd = os_open_read("/proc/self/environ");
    if (fd < 0)
        return false;
    char chunk[1024], entry[256];
    size_t len = 0;
    bool too_long = false;
    long r;
    while ((r = os_read(fd, chunk, sizeof chunk)) > 0) {
        for (long i = 0; i < r; i++) {
            char c = chunk[i];
            if (c == '\0') {
                if (!too_long) {
                    entry[len] = '\0';
                    option_entry(entry, len);
                }
                len = 0;
                too_long = false;
            } else if (len + 1 < sizeof entry) {
                entry[len++] = c;
            } else {
                too_long = true;
            }
        }
    }
    os_close(fd);
    return true;
}

static void verbose_line(void)
{
    struct outbuf o;
    out_init(&o, 2);
    out_strs(&o, (const char *const[]){"emma " EMMA_VERSION_STRING ": thread-local heaps ",
                                       config_tls ? "yes" : "no", ", boundary checks ",
                                       config_checks ? "yes" : "no", ", hardening ",
                                       config_hardening ? "yes" : "no", ", valgrind support ",
                                       EMMA_CONFIG_VALGRIND ? "yes" : "no", "; options from ",
                                       options_source, ":", NULL});
    for (unsigned i = 0; i < OPT_COUNT; i++) {
        out_strs(&o, (const char *const[]){" ", opt_table[i].name, "=", NULL});
        put_value(&o, i, opt_get(i));
    }
    out_str(&o, "\n");
    out_flush(&o);
}

static bool options_claim(void)
{
    uint32_t expected = 0;
    return atomic_load_explicit(&options_state, memory_order_acquire) == 0 &&
           atomic_compare_exchange_strong(&options_state, &expected, 1);
}

/* EMMA_SHOW_STATS: coreutils' cat, ls and sort close stderr before exit()
 * runs emma's fini-array function, so the statistics go to a close-on-exec
 * copy of stderr made now: numbered 1000 or above, out of the way of
 * programs that expect the lowest free descriptors, or 10 or above where
 * RLIMIT_NOFILE is lower.  With stderr closed already, none: nothing is
 * printed (fd 2 may be a file the program opens later). */
static void stats_fd_open(void)
{
    int fd = os_dup_cloexec(2, 1000);
    if (fd < 0)
        fd = os_dup_cloexec(2, 10);
    emma_opt.stats_fd = fd < 0 ? 0 : fd;
}

static void options_done(void)
{
    vg_detect();
    if (emma_opt.show_stats)
        stats_fd_open();
    if (emma_opt.verbose)
        verbose_line();
    atomic_store_explicit(&options_state, 2, memory_order_release);
}

void options_init(int argc, char **argv, char **envp)
{
    if (!options_claim())
        return;
    /* glibc: envp follows argv's NULL; anything else is not trusted */
    if (argc >= 0 && argc < (1 << 24) && argv && envp && envp == argv + argc + 1 &&
        ((uintptr_t)envp & 7) == 0) {
        options_source = "the loader";
        options_from_envp(envp);
    } else if (options_from_proc()) {
        options_source = "/proc/self/environ";
    }
    options_done();
}

void options_init_lazy(void)
{
    if (likely(atomic_load_explicit(&options_state, memory_order_acquire) != 0))
        return;
    if (!options_claim())
        return;
    if (options_from_proc())
        options_source = "/proc/self/environ";
    options_done();
}
