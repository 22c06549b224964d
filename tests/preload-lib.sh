# shellcheck shell=sh
# Sourced by the preload-*.sh tests.  SPDX-License-Identifier: MIT OR Apache-2.0
#
# Environment (set by tests/Makefile.am): EMMA_SO, the freshly built
# lib/.libs/libemma.so.0, and EMMA_TESTS_BUILDDIR.
# Exit status 77 = skipped (automake), 99 = hard error.

set -u
so=${EMMA_SO:?EMMA_SO is not set: run through make check}
if [ ! -f "$so" ]; then
    echo "SKIP: no shared library $so (built with --disable-shared?)"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/emma-preload.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
export LC_ALL=C

# need PROGRAM: skip the test when PROGRAM is absent.
need() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "SKIP: $1 not found"
        exit 77
    }
}

failures=0

# compare NAME COMMAND...: run COMMAND with and without
# LD_PRELOAD=libemma.so.0; stdout and exit status must be identical.
compare() {
    name=$1
    shift
    "$@" >"$tmp/$name.plain" 2>"$tmp/$name.plain.err" </dev/null
    rc_plain=$?
    LD_PRELOAD=$so "$@" >"$tmp/$name.emma" 2>"$tmp/$name.emma.err" </dev/null
    rc_emma=$?
    if [ "$rc_plain" -ne 0 ]; then
        echo "ERROR: $name: fails even without emma (exit $rc_plain):"
        head -20 "$tmp/$name.plain.err"
        exit 99
    fi
    if [ "$rc_emma" -ne "$rc_plain" ]; then
        echo "FAIL: $name: exit status $rc_emma under LD_PRELOAD=$so, $rc_plain without"
        head -20 "$tmp/$name.emma.err"
        failures=$((failures + 1))
        return 1
    fi
    if ! cmp -s "$tmp/$name.plain" "$tmp/$name.emma"; then
        echo "FAIL: $name: output differs under LD_PRELOAD=$so:"
        diff "$tmp/$name.plain" "$tmp/$name.emma" | head -20
        head -20 "$tmp/$name.emma.err"
        failures=$((failures + 1))
        return 1
    fi
    if [ ! -s "$tmp/$name.plain" ]; then
        echo "ERROR: $name: produced no output"
        exit 99
    fi
    echo "ok: $name ($(wc -c <"$tmp/$name.plain") bytes of identical output)"
    return 0
}

# finish: exit with the verdict of all comparisons.
finish() {
    if [ "$failures" -ne 0 ]; then
        echo "$failures comparison(s) failed"
        exit 1
    fi
    exit 0
}
