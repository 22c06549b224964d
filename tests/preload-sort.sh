#!/bin/sh
# sort(1) under LD_PRELOAD=libemma.so.0 gives the same output as without.
# SPDX-License-Identifier: MIT OR Apache-2.0
# shellcheck source=tests/preload-lib.sh
. "${srcdir:-.}/preload-lib.sh"
need sort
need awk

# ~100k deterministic pseudo-random lines of varying length
awk 'BEGIN { x = 12345;
  for (i = 0; i < 100000; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    n = x % 60; s = "";
    for (j = 0; j < n; j += 8) s = s sprintf("%08x", (x * (j + 3)) % 4294967291);
    printf "%d %s %d\n", x % 100000, s, i
  } }' >"$tmp/input"

compare sort-plain sort "$tmp/input"
compare sort-numeric sort -n -k1,1 -k3,3n "$tmp/input"
compare sort-unique sort -u -k2,2 "$tmp/input"
compare sort-reverse sort -r "$tmp/input"
# small buffer and two threads: temporary files, merges, threads
compare sort-parallel sort --parallel=2 -S 256K -T "$tmp" "$tmp/input"
finish
