#!/bin/sh
# lib/libemma.map is exactly the public API; the shared library exports
# exactly that map and needs nothing (no NEEDED entry, only weak undefined
# symbols, none from libc such as __stack_chk_fail/memcpy/memset); libemma.a's
# objects need nothing but the weak __errno_location, and define no global
# name outside the API without the emma__ prefix.
# SPDX-License-Identifier: MIT OR Apache-2.0
set -u
top_srcdir=${EMMA_TOP_SRCDIR:?run through make check}
top_builddir=${EMMA_TOP_BUILDDIR:?run through make check}
so=$top_builddir/lib/.libs/libemma.so.0
ar=$top_builddir/lib/.libs/libemma.a
map=$top_srcdir/lib/libemma.map
NM="nm"
READELF="readelf"
command -v "$NM" >/dev/null 2>&1 || { echo "SKIP: no nm"; exit 77; }
command -v "$READELF" >/dev/null 2>&1 || { echo "SKIP: no readelf"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/emma-symbols.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
export LC_ALL=C
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# The names listed under "global:" in the version script.
sed -n '/global:/,/local:/p' "$map" | sed -e '/global:/d' -e '/local:/d' \
    -e 's/[[:space:]]//g' -e 's/;$//' -e '/^$/d' | sort >"$tmp/map"
[ -s "$tmp/map" ] || { echo "ERROR: no symbols read from $map"; exit 99; }

# ... which must be exactly the public API: the functions declared in
# include/emma.h and the malloc-compatible API of doc/CONTRACT.md.
{
    grep -E '^[a-z].*\bemma_[a-z_]*\(' "$top_srcdir/include/emma.h" |
        grep -oE '\bemma_[a-z_]+\(' | tr -d '('
    printf '%s\n' malloc free calloc realloc reallocarray aligned_alloc \
        posix_memalign memalign valloc pvalloc malloc_usable_size free_sized \
        free_aligned_sized mallinfo2 mallinfo malloc_stats malloc_info mallopt \
        cfree malloc_trim
} | sort -u >"$tmp/api"
if ! cmp -s "$tmp/api" "$tmp/map"; then
    bad "libemma.map is not the public API (< emma.h + malloc API, > map):"
    diff "$tmp/api" "$tmp/map"
else
    echo "ok: libemma.map lists exactly the public API"
fi

if [ -f "$so" ]; then
    "$NM" -D --defined-only "$so" | awk '{ print $NF }' | sed 's/@.*//' |
        sort >"$tmp/exported"
    if ! cmp -s "$tmp/map" "$tmp/exported"; then
        bad "exported symbols of libemma.so.0 differ from libemma.map" \
            "(< map, > exported):"
        diff "$tmp/map" "$tmp/exported"
    else
        echo "ok: exports exactly the $(wc -l <"$tmp/map") symbols of libemma.map"
    fi

    # exported symbols are functions (T), unversioned (LD_PRELOAD must be
    # able to interpose malloc@GLIBC_2.2.5)
    "$NM" -D --defined-only "$so" | awk '$2 != "T" { print }' >"$tmp/nonfunc"
    [ -s "$tmp/nonfunc" ] && { bad "exported non-function symbols:"; cat "$tmp/nonfunc"; }
    if "$READELF" -V "$so" | grep -q 'Version definition'; then
        bad "libemma.so.0 has versioned symbols (breaks LD_PRELOAD interposition)"
    fi

    "$READELF" -d "$so" >"$tmp/dynamic"
    if grep -q '(NEEDED)' "$tmp/dynamic"; then
        bad "libemma.so.0 has NEEDED entries:"
        grep '(NEEDED)' "$tmp/dynamic"
    else
        echo "ok: no NEEDED entry"
    fi
    grep -q '(SONAME).*\[libemma\.so\.0\]' "$tmp/dynamic" ||
        bad "SONAME is not libemma.so.0"
    grep -q '(TEXTREL)' "$tmp/dynamic" && bad "libemma.so.0 has text relocations"

    "$NM" -D --undefined-only "$so" >"$tmp/undef"
    awk '$1 != "w" { print }' "$tmp/undef" >"$tmp/strong"
    if [ -s "$tmp/strong" ]; then
        bad "libemma.so.0 has non-weak undefined symbols:"
        cat "$tmp/strong"
    fi
    for s in __stack_chk_fail memcpy memset memmove memcmp strlen abort \
             __assert_fail malloc free errno __tls_get_addr; do
        if awk '{ print $NF }' "$tmp/undef" | sed 's/@.*//' | grep -qx "$s"; then
            bad "libemma.so.0 imports $s"
        fi
    done
    echo "ok: undefined symbols: $(awk '{ printf "%s(%s) ", $NF, $1 }' "$tmp/undef")"

    # TLS: at most a pointer or two, initial-exec (STATIC_TLS flag)
    tls=$("$READELF" -lW "$so" | awk '$1 == "TLS" { print $6 }')
    if [ -n "$tls" ]; then
        size=$(printf '%d' "$tls")
        [ "$size" -le 64 ] || bad "TLS segment is $size bytes (want a pointer or two)"
        grep -q 'STATIC_TLS' "$tmp/dynamic" ||
            bad "TLS without the STATIC_TLS flag: not initial-exec?"
        echo "ok: TLS segment of $size bytes, initial-exec"
    fi
    if [ "${EMMA_TLS:-}" = no ] && [ -n "$tls" ]; then
        bad "--disable-tls build has a TLS segment"
    fi
    if [ "${EMMA_TLS:-}" = yes ] && [ -z "$tls" ]; then
        bad "--enable-tls build has no TLS segment"
    fi
else
    echo "SKIP: no $so (--disable-shared?): shared-library checks not run"
    skipped=1
fi

if [ -f "$ar" ]; then
    # every undefined symbol of every member must be defined by some member,
    # except the weak __errno_location (and the linker-made GOT symbol)
    "$NM" -A "$ar" 2>/dev/null >"$tmp/arsyms"
    awk '$(NF-1) ~ /^[TDBRVWCGSi]$/ { print $NF }' "$tmp/arsyms" | sort -u >"$tmp/ardef"
    awk '$(NF-1) ~ /^[Uw]$/ { print $(NF-1), $NF }' "$tmp/arsyms" | sort -u >"$tmp/arundef"
    while read -r kind sym; do
        grep -qx "$sym" "$tmp/ardef" && continue
        case "$kind:$sym" in
        w:__errno_location) ;;
        U:_GLOBAL_OFFSET_TABLE_) ;;
        *) bad "libemma.a needs $sym ($kind) from outside" ;;
        esac
    done <"$tmp/arundef"
    echo "ok: libemma.a checked ($(wc -l <"$tmp/arundef") undefined references)"
    # in a static link every global name of libemma.a meets the program's
    # names: only the public API and emma__-prefixed internals are allowed
    awk '$(NF-1) ~ /^[TDBRVWCGS]$/ { print $NF }' "$tmp/arsyms" | sort -u |
        grep -vxF -f "$tmp/map" | grep -v '^emma__' >"$tmp/unprefixed" || true
    if [ -s "$tmp/unprefixed" ]; then
        bad "libemma.a defines global names outside the API without the emma__ prefix:"
        cat "$tmp/unprefixed"
    else
        echo "ok: libemma.a's other global names all start with emma__"
    fi
    if awk '$(NF-1) == "U" && $NF == "__errno_location"' "$tmp/arsyms" | grep -q .; then
        bad "libemma.a references __errno_location strongly (must be weak)"
    fi
else
    echo "SKIP: no $ar (--disable-static?): static-library checks not run"
    skipped=1
fi

# a part that could not run makes the whole test a SKIP (77), not a PASS
[ "$fail" = 0 ] && [ -n "${skipped:-}" ] && exit 77
exit $fail
