#!/bin/sh
# gcc (driver, cc1, as, ld) under LD_PRELOAD=libemma.so.0 produces the same
# assembly and the same program as without.
# SPDX-License-Identifier: MIT OR Apache-2.0
# shellcheck source=tests/preload-lib.sh
. "${srcdir:-.}/preload-lib.sh"
need gcc

# a C file with enough code to make cc1 allocate
{
    echo '#include <stdio.h>'
    echo '#include <stdlib.h>'
    echo '#include <string.h>'
    i=0
    while [ $i -lt 150 ]; do
        cat <<C
struct s$i { int a[$((i % 7 + 1))]; double d; const char *name; };
static int f$i(int x) {
    struct s$i v; memset(&v, 0, sizeof v);
    v.a[0] = x * $i; v.d = x / 3.0; v.name = "f$i";
    for (int k = 0; k < $((i % 5 + 2)); k++) v.a[0] += (x >> k) ^ $i;
    return v.a[0] + (int)v.d + (int)strlen(v.name);
}
C
        i=$((i + 1))
    done
    echo 'int main(void) { long t = 0; char *p = malloc(1000);'
    i=0
    while [ $i -lt 150 ]; do
        echo "  t += f$i($i + (int)t % 13);"
        i=$((i + 1))
    done
    echo '  snprintf(p, 1000, "%ld", t); puts(p); free(p); return 0; }'
} >"$tmp/prog.c"

compare gcc-asm gcc -O2 -S -o - "$tmp/prog.c"
compare gcc-asm-O0 gcc -O0 -g0 -S -o - "$tmp/prog.c"
gcc -O2 -o "$tmp/prog-plain" "$tmp/prog.c" || exit 99
LD_PRELOAD=$so gcc -O2 -o "$tmp/prog-emma" "$tmp/prog.c" || {
    echo "FAIL: gcc under LD_PRELOAD could not build the program"
    exit 1
}
if ! cmp -s "$tmp/prog-plain" "$tmp/prog-emma"; then
    echo "FAIL: gcc under LD_PRELOAD linked a different executable"
    failures=$((failures + 1))
fi
compare prog-run "$tmp/prog-emma"
finish
