/* Formatted output without libc: a small buffer flushed with write(2)
 * through the OS layer.  For the statistics table, the start-up line of
 * EMMA_VERBOSE, option warnings, malloc_stats and malloc_info.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "observe.h"

void out_init(struct outbuf *o, int fd)
{
    o->fd = fd;
    o->failed = false;
    o->error = 0;
    o->n = 0;
}

bool out_flush(struct outbuf *o)
{
    size_t done = 0;
    while (done < o->n && !o->failed) {
        long r = os_write(o->fd, o->buf + done, o->n - done);
        if (r == -4) /* EINTR */
            continue;
        if (r <= 0) {
            o->failed = true;
            o->error = r < 0 ? (int)-r : 5; /* EIO for a write of nothing */
        }
        else
            done += (size_t)r;
    }
    o->n = 0;
    return !o->failed;
}

static void out_char(struct outbuf *o, char c)
{
    if (o->n == sizeof o->buf)
        out_flush(o);
    o->buf[o->n++] = c;
}

void out_str(struct outbuf *o, const char *s)
{
    for (; *s; s++)
        out_char(o, *s);
}

void out_u64_width(struct outbuf *o, uint64_t v, unsigned width)
{
    char tmp[24];
    unsigned n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (unsigned i = n; i < width; i++)
        out_char(o, ' ');
    while (n)
        out_char(o, tmp[--n]);
}

void out_u64(struct outbuf *o, uint64_t v) { out_u64_width(o, v, 0); }

void out_bytes(struct outbuf *o, uint64_t v)
{
    static const char unit[] = "KMGT";
    int u = -1;
    while (u < 3 && v && (v & 1023) == 0) {
        v >>= 10;
        u++;
    }
    out_u64(o, v);
    if (u >= 0)
        out_char(o, unit[u]);
}

void out_human(struct outbuf *o, uint64_t v, unsigned width)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    unsigned u = 0;
    uint64_t whole = v, tenths = 0;
    while (whole >= 1024 && u < 4) {
        tenths = (whole % 1024) * 10 / 1024;
        whole /= 1024;
        u++;
    }
    /* "1023 B" or "12.3 MiB": the number right-aligned so that the units
     * line up in a column of `width` */
    unsigned digits = 1;
    for (uint64_t x = whole; x >= 10; x /= 10)
        digits++;
    unsigned len = digits + (u ? 2 : 0) + 1 + (unsigned)(u ? 3 : 1);
    for (unsigned i = len; i < width; i++)
        out_char(o, ' ');
    out_u64(o, whole);
    if (u) {
        out_char(o, '.');
        out_char(o, (char)('0' + tenths));
    }
    out_char(o, ' ');
    out_str(o, unit[u]);
}
