#!/bin/sh
# LD_PRELOAD=libemma.so.0 really replaces malloc in an unrelated program,
# including allocations made inside libc (strdup).
# SPDX-License-Identifier: MIT OR Apache-2.0
# shellcheck source=tests/preload-lib.sh
. "${srcdir:-.}/preload-lib.sh"
prog=${EMMA_TESTS_BUILDDIR:?}/preload_owns
[ -x "$prog" ] || { echo "ERROR: $prog not built"; exit 99; }

out=$("$prog") || { echo "ERROR: $prog failed"; exit 99; }
if [ "$out" != "no emma" ]; then
    echo "ERROR: without LD_PRELOAD: '$out', want 'no emma'"
    exit 99
fi
out=$(LD_PRELOAD=$so "$prog") || {
    echo "FAIL: $prog crashed under LD_PRELOAD=$so"
    exit 1
}
if [ "$out" != "malloc 1 strdup 1 realloc 1" ]; then
    echo "FAIL: under LD_PRELOAD=$so: '$out', want 'malloc 1 strdup 1 realloc 1'"
    exit 1
fi
echo "ok: $out"

# a shell pipeline with everything preloaded still works
out=$(LD_PRELOAD=$so sh -c 'seq 1 20000 | sort -rn | head -1') || {
    echo "FAIL: shell pipeline under LD_PRELOAD failed"
    exit 1
}
[ "$out" = 20000 ] || { echo "FAIL: pipeline printed '$out'"; exit 1; }
echo "ok: pipeline"
exit 0
