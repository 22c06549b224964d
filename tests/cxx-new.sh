#!/bin/sh
# A C++ program that uses only new/delete, linked the way the README says,
# g++ app.cc $(pkg-config --cflags --libs emma), under the toolchain's
# default --as-needed: libemma.so.0 must be among its NEEDED entries, and
# new must return emma's memory with std::bad_alloc and new_handler
# semantics unchanged (tests/cxx_new.cc).  Skipped (77) without g++.
# SPDX-License-Identifier: MIT OR Apache-2.0
set -u
top_srcdir=${EMMA_TOP_SRCDIR:?run through make check}
top_builddir=${EMMA_TOP_BUILDDIR:?run through make check}
CXX=${CXX_FOR_TEST:-g++}
command -v "$CXX" >/dev/null 2>&1 || { echo "SKIP: no $CXX (apt install g++)"; exit 77; }
libdir=$top_builddir/lib/.libs
[ -f "$libdir/libemma.so.0" ] || { echo "SKIP: no shared library (--disable-shared?)"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/emma-cxx.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# The Libs line of the emma.pc that "make install" installs, with ${libdir}
# pointing at the build tree.
libs=$(sed -n 's/^Libs: *//p' "$top_builddir/emma.pc" | sed "s|\${libdir}|$libdir|g")
[ -n "$libs" ] || { echo "ERROR: no Libs line in $top_builddir/emma.pc"; exit 99; }
echo "pkg-config --libs emma (build tree): $libs"

# shellcheck disable=SC2086 # $libs is a list of words
if ! "$CXX" -O2 -Wall -o "$tmp/cxx_new" "$top_srcdir/tests/cxx_new.cc" \
	-I"$top_srcdir/include" $libs >"$tmp/build.log" 2>&1; then
	cat "$tmp/build.log"
	echo "ERROR: $CXX could not build tests/cxx_new.cc"
	exit 99
fi
if readelf -d "$tmp/cxx_new" | grep -q 'NEEDED.*\[libemma\.so\.0\]'; then
	echo "ok: libemma.so.0 is NEEDED"
else
	bad "libemma.so.0 is not NEEDED by a program linked with '$libs':"
	readelf -d "$tmp/cxx_new" | grep NEEDED
fi
# It must come before libstdc++ and libc, whose symbols it overrides.
order=$(readelf -d "$tmp/cxx_new" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' | tr '\n' ' ')
case $order in
libemma.so.0\ *) echo "ok: NEEDED order: $order" ;;
*) bad "libemma.so.0 is not the first NEEDED entry: $order" ;;
esac
out=$(LD_LIBRARY_PATH=$libdir "$tmp/cxx_new" 2>&1)
st=$?
if [ "$st" -eq 0 ] && [ "$out" = "new comes from emma" ]; then
	echo "ok: $out"
else
	bad "cxx_new exited $st: $out"
fi

# For the record: what plain -lemma gives under this toolchain's defaults.
# shellcheck disable=SC2086
if "$CXX" -O2 -o "$tmp/plain" "$top_srcdir/tests/cxx_new.cc" -L"$libdir" -lemma \
	>/dev/null 2>&1; then
	if readelf -d "$tmp/plain" | grep -q 'NEEDED.*libemma'; then
		echo "note: plain -lemma keeps libemma.so.0 here (no --as-needed by default)"
	else
		echo "note: plain -lemma drops libemma.so.0 here (--as-needed by default): the wrapper is needed"
	fi
fi
exit $fail
