#!/bin/sh
# "make check" for the man pages.
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# - every page renders without a single warning: mandoc -Tlint -W warning and
#   groff -ww, whichever are installed (skipped, exit 77, if neither is);
# - every .TH names "emma $PACKAGE_VERSION", so the pages follow configure.ac;
# - every alias page is exactly one ".so man3/<page>" line naming a real page;
# - every exported symbol in lib/libemma.map is documented: each emma_*
#   function has a page of its name (or a .so alias of one) whose NAME lists
#   it and which has a ".SS name()" for it; the others are in the SYNOPSIS
#   of emma_malloc.3;
# - every emma page named in a cross-reference exists.
# The EXAMPLES programs are compiled and run as separate tests (Makefile.am).
#
# Environment: srcdir (set by automake), top_srcdir, PACKAGE_VERSION.
set -u
srcdir=${srcdir:-.}
top_srcdir=${top_srcdir:-$srcdir/..}
map=$top_srcdir/lib/libemma.map
fail=0

problem() {
	echo "FAIL: $*"
	fail=1
}

have() {
	command -v "$1" >/dev/null 2>&1
}

pages=$(cd "$srcdir" && ls -- *.1 *.3 *.7 2>/dev/null)
[ -n "$pages" ] || { echo "no man pages in $srcdir"; exit 99; }

real_pages=
for p in $pages; do
	f=$srcdir/$p
	first=$(sed -n 1p "$f")
	case $first in
	.so\ *)
		[ "$(wc -l <"$f")" -eq 1 ] || problem "$p: an alias page must be one .so line"
		target=${first#.so }
		tfile=$srcdir/$(basename "$target")
		case $target in
		man[1-9]/*.[1-9]) ;;
		*) problem "$p: .so target '$target' is not of the form manN/page.N" ;;
		esac
		[ -f "$tfile" ] || problem "$p: .so target $target does not exist"
		[ "${target%%/*}" = "man${target##*.}" ] || problem "$p: .so target $target is in the wrong section directory"
		continue
		;;
	esac
	real_pages="$real_pages $p"
	th=$(grep '^\.TH ' "$f")
	case $th in
	*"\"emma ${PACKAGE_VERSION:-}\""*) ;;
	*) problem "$p: .TH does not name \"emma ${PACKAGE_VERSION:-?}\": $th" ;;
	esac
	sect=$(printf '%s\n' "$th" | awk '{print $3}')
	[ "$sect" = "${p##*.}" ] || problem "$p: .TH section $sect does not match the file name"
done

# Documented interface == exported interface.
if [ -f "$map" ]; then
	syms=$(sed -n 's/^[[:space:]]*\([a-z_][a-z0-9_]*\);[[:space:]]*$/\1/p' "$map")
	[ -n "$syms" ] || problem "no symbols found in $map"
	synopsis_malloc=$(sed -n '/^\.SH SYNOPSIS/,/^\.SH/p' "$srcdir/emma_malloc.3")
	for s in $syms; do
		case $s in
		emma_*)
			# its own page, or an alias of the page that documents it
			if [ ! -f "$srcdir/$s.3" ]; then
				problem "$s is exported but has no page $s.3"
				continue
			fi
			doc=$s.3
			first=$(sed -n 1p "$srcdir/$s.3")
			case $first in .so\ *) doc=$(basename "${first#.so }") ;; esac
			sed -n '/^\.SH NAME/,/^\.SH/p' "$srcdir/$doc" | grep -q "\\<$s\\>" ||
				problem "$s is exported but not in the NAME section of $doc"
			grep -q "^\.SS $s()\$" "$srcdir/$doc" ||
				problem "$s is exported but has no .SS $s() in $doc"
			;;
		*)
			printf '%s\n' "$synopsis_malloc" | grep -q "[ *]$s(" ||
				problem "$s is exported but not in the SYNOPSIS of emma_malloc.3"
			;;
		esac
	done
else
	echo "note: $map not found, symbol coverage not checked"
fi

# Every environment variable emma reads (lib/options.c's table) has a tag
# in emma(7)'s ENVIRONMENT section, and no ENVIRONMENT section names one
# emma does not read.
opts=$top_srcdir/lib/options.c
if [ -f "$opts" ]; then
	vars=$(sed -n 's/^ *{"\(EMMA_[A-Z_]*\)", OPT_.*/\1/p' "$opts")
	[ -n "$vars" ] || problem "no EMMA_* variables found in $opts"
	envsec=$(sed -n '/^\.SH ENVIRONMENT/,/^\.SH /p' "$srcdir/emma.7")
	for v in $vars; do
		printf '%s\n' "$envsec" | grep -q "^\.B $v\$" ||
			problem "$v is read by emma but has no .B $v tag in emma(7) ENVIRONMENT"
	done
	for p in $real_pages; do
		for v in $(sed -n '/^\.SH ENVIRONMENT/,/^\.SH /p' "$srcdir/$p" |
			grep -o 'EMMA_[A-Z_]*' | sed 's/_$//' | sort -u); do
			printf '%s\n' $vars | grep -qx "$v" ||
				problem "$p's ENVIRONMENT names $v, which emma does not read"
		done
	done
else
	echo "note: $opts not found, environment variables not checked"
fi

# Cross-references to emma's own pages must resolve.
for p in $real_pages; do
	refs=$(grep -o '^\.BR emma[a-z_\\-]* ([1-9])' "$srcdir/$p" |
		sed 's/^\.BR //; s/\\-/-/g; s/ (\([1-9]\))$/.\1/')
	for r in $refs; do
		[ -f "$srcdir/$r" ] || problem "$p refers to $r, which does not exist"
	done
done

# Lint every page, aliases included, from a tree laid out as installed
# (man1/, man3/, man7/), so that the ".so manN/page.N" links resolve as
# they will for man(1).
tree=$(mktemp -d "${TMPDIR:-/tmp}/emma-man.XXXXXX") || exit 99
trap 'rm -rf "$tree"' EXIT
for p in $pages; do
	mkdir -p "$tree/man${p##*.}" && cp "$srcdir/$p" "$tree/man${p##*.}/" || exit 99
done
linted=0
for p in $pages; do
	f=man${p##*.}/$p
	if have mandoc; then
		# mandoc advises symlinks over .so; the one-line .so alias is
		# the convention here (dh_installman turns it into a symlink),
		# so that one message, and only on alias pages, is accepted.
		out=$(cd "$tree" && mandoc -Tlint -W warning "$f" 2>&1 |
			grep -v "^mandoc: $f:1:2: WARNING: \.so is fragile, better use ln(1): so man[1-9]/[^ ]*\$")
		[ -z "$out" ] || problem "mandoc -Tlint -W warning $p:
$out"
		linted=1
	fi
	if have groff; then
		# -t: the pages with a table say so in their first line ('\" t).
		out=$(cd "$tree" && LC_ALL=C groff -t -ww -man -z "$f" 2>&1)
		[ -z "$out" ] || problem "groff -ww -man $p:
$out"
		# Render as man(1) does on an 80-column terminal: the formatter
		# must not complain about lines it cannot break, for instance.
		out=$(cd "$tree" && LC_ALL=C.UTF-8 groff -t -ww -man -Tutf8 -rLL=78n "$f" 2>&1 >/dev/null)
		[ -z "$out" ] || problem "groff -Tutf8 $p:
$out"
		# No line wider than the terminal: the formatter cannot break the
		# lines of examples (.EX), so they must be short in the source.
		# (Real pages only: an alias renders its target.)
		case " $real_pages " in *" $p "*) ;; *) continue ;; esac
		out=$(cd "$tree" && LC_ALL=C groff -t -man -Tascii -rLL=78n -P-c -P-b -P-u "$f" 2>/dev/null |
			awk 'length > 80 { print "  " length " columns: " $0 }')
		[ -z "$out" ] || problem "$p has lines wider than 80 columns:
$out"
		linted=1
	fi
done

if [ "$fail" -ne 0 ]; then
	exit 1
fi
if [ "$linted" -eq 0 ]; then
	echo "SKIP: neither mandoc nor groff is installed; pages not linted"
	exit 77
fi
echo "ok: $(echo "$pages" | wc -w) pages ($(echo "$real_pages" | wc -w) real, the others aliases) lint clean"
exit 0
