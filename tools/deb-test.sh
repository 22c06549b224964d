#!/bin/sh
# deb-test.sh: build emma's Debian packages and test them the way a user
# meets them: "apt-get install libemma", "pkg-config --libs emma",
# "man emma_alloc", "emma-run".
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# Run as root on Debian 12 or later, non-interactively; "make deb-test" runs
# it on the source tree.  See usage() below for the steps.  The source tree
# is only read: everything happens in a fresh /tmp/pkg-deb-test.XXXXXX,
# which is removed at the end unless the test failed or --keep was given.
# The system is left as it was found, apart from build tools installed in
# step 0: the packages are purged and the temporary apt source is removed,
# also when a step fails.

# ok() and fail() always succeed, so "test && ok || fail" is safe;
# cleanup() runs from a trap.
# shellcheck disable=SC2015,SC2317
set -eu

usage() {
	cat <<'EOF'
Usage: deb-test.sh [--keep] [SRCDIR]

Build and test emma's Debian packages from SRCDIR (default: the tree this
script is in), as root:
  0. install what the test needs if it is missing (dpkg-dev, debhelper,
     lintian, man-db, pkgconf, build-essential and the Build-Depends);
  1. copy SRCDIR's files (those git tracks or would track) to
     /tmp/pkg-deb-test.XXXXXX/emma-VERSION, make the orig tarball
     (everything but debian/), and build source and binary packages with
     dpkg-buildpackage -us -uc;
  2. lintian --fail-on error,warning on the .changes;
  3. put the .debs in a local apt repository (dpkg-scanpackages), add it as
     an apt source "deb [trusted=yes] file:DIR ./", apt-get update it;
  4. apt-get install -y libemma, exactly as a user would;
  5. check (the packaged copy, even if the README's quick start installed
     another one under /usr/local, which comes first in the default search
     paths): the packages and versions; pkg-config --libs emma is
     -lemma wrapped in --no-as-needed;
     man emma_alloc, emma_dealloc, emma_malloc, emma(7), libemma, emma-run
     render without warnings; a program built with pkg-config (shared and
     static) allocates through emma; the man pages' EXAMPLES build and run;
     emma-run works (and python3 under it, if installed); the installed
     libemma.so.0 has no NEEDED entry, and RELRO and BIND_NOW; libemma
     was compiled and linked with dpkg-buildflags' hardening flags;
  6. apt-get purge the packages, check that no file is left, remove the
     apt source and its lists.

Options:
  --keep   keep /tmp/pkg-deb-test.XXXXXX even when everything passed
  --repo DIR
           "make deb": steps 0 and 1 only, then put the .debs in DIR as a
           local apt repository (Packages, Packages.gz, Release) and print
           the apt source line that installs from it.  Nothing is installed
           or purged; root is needed only to install missing build tools.
  --help   show this help
EOF
}

keep=no
src=
repo=
while [ $# -gt 0 ]; do
	case $1 in
	--keep) keep=yes ;;
	--repo)
		[ $# -ge 2 ] || { echo "deb-test.sh: --repo needs a directory" >&2; exit 2; }
		repo=$2
		shift
		;;
	--help) usage; exit 0 ;;
	-*) echo "deb-test.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
	*) src=$1 ;;
	esac
	shift
done
[ -n "$src" ] || src=$(dirname "$0")/..
src=$(cd "$src" && pwd)

say() { printf '\n=== %s\n' "$*"; }
die() { printf 'deb-test.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || [ -n "$repo" ] ||
	die "must run as root (it installs and purges packages)"
[ -f "$src/debian/control" ] && [ -f "$src/configure.ac" ] ||
	die "$src is not emma's source tree"
command -v apt-get >/dev/null && command -v dpkg >/dev/null ||
	die "needs a Debian system (apt-get, dpkg)"

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C.UTF-8
apt_quiet="-q -o Dpkg::Use-Pty=0"
packages="libemma0 libemma-dev emma-tools"

# --- 0. tools ---------------------------------------------------------------
need=
for pair in dpkg-buildpackage:dpkg-dev dpkg-scanpackages:dpkg-dev \
	dh:debhelper lintian:lintian man:man-db pkg-config:pkgconf \
	cc:build-essential readelf:binutils xz:xz-utils; do
	command -v "${pair%%:*}" >/dev/null 2>&1 || need="$need ${pair#*:}"
done
if [ -n "$need" ]; then
	[ "$(id -u)" -eq 0 ] ||
		die "missing tools; install them first: sudo apt-get install$need"
	say "0. installing tools:$need"
	# shellcheck disable=SC2086
	apt-get $apt_quiet update
	# shellcheck disable=SC2086
	apt-get $apt_quiet install -y --no-install-recommends $need
fi

for p in $packages; do
	[ -z "$repo" ] || break
	if dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q ' installed$'; then
		die "$p is already installed; remove it first (apt-get purge $packages)"
	fi
done

# --- work area and cleanup ------------------------------------------------
work=$(mktemp -d /tmp/pkg-deb-test.XXXXXX)
chmod 755 "$work"          # apt's _apt user must read the repository
list=/etc/apt/sources.list.d/emma-deb-test-${work##*.}.list
installed=no
failures=0

cleanup() {
	status=$?
	trap - EXIT INT TERM
	if [ "$installed" = yes ]; then
		# shellcheck disable=SC2086
		apt-get $apt_quiet purge -y $packages >/dev/null 2>&1 || true
	fi
	rm -f "$list"
	# apt's lists for the temporary source are named after its path.
	rm -f /var/lib/apt/lists/*"$(echo "${work#/}" | tr / _)"* 2>/dev/null || true
	if [ "$status" -eq 0 ] && [ "$keep" = no ]; then
		rm -rf "$work"
	else
		echo "deb-test.sh: work files kept in $work"
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# make_repo DIR: the .debs just built, as a flat apt repository in DIR.
# A Release file lists Packages and Packages.gz, so that apt fetches
# exactly these (without it, apt probes every compression it knows and
# prints an error for each one that is missing).
make_repo() {
	mkdir -p "$1"
	cp "$work"/*.deb "$1/"
	(
		cd "$1"
		dpkg-scanpackages --multiversion . /dev/null 2>/dev/null >Packages
		gzip -9n <Packages >Packages.gz
		{
			echo "Date: $(date -Ru)"
			echo "SHA256:"
			for f in Packages Packages.gz; do
				echo " $(sha256sum $f | cut -d' ' -f1) $(stat -c %s $f) $f"
			done
		} >Release
	)
}

# --- 1. build ---------------------------------------------------------------
upstream=$(sh "$src/build-aux/version.sh")
debversion=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
[ "${debversion%-*}" = "$upstream" ] ||
	die "debian/changelog says $debversion, include/emma.h says $upstream: add a changelog entry (dch -v $upstream-1)"
tree=$work/emma-$upstream

say "1. building emma $debversion from a copy of $src in $work"
mkdir "$tree"
if git -C "$src" rev-parse --show-toplevel >/dev/null 2>&1 &&
	[ "$(git -C "$src" rev-parse --show-toplevel)" = "$src" ]; then
	# Tracked files and new ones git would track; never build products.
	(cd "$src" && git ls-files -z --cached --others --exclude-standard |
		tar --null -T - --ignore-failed-read -cf -) | tar -C "$tree" -xf -
else
	cp -a "$src/." "$tree/"
fi
rm -rf "$tree/.git"

epoch=$(dpkg-parsechangelog -l "$tree/debian/changelog" -S Timestamp)
tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner \
	--mtime="@$epoch" --exclude="emma-$upstream/debian" \
	-cJf "$work/emma_$upstream.orig.tar.xz" "emma-$upstream"

if ! (cd "$tree" && dpkg-checkbuilddeps) >/dev/null 2>&1; then
	[ "$(id -u)" -eq 0 ] || die "missing build dependencies: $(cd "$tree" && dpkg-checkbuilddeps 2>&1)"
	echo "installing the build dependencies"
	# shellcheck disable=SC2086
	apt-get $apt_quiet update
	# shellcheck disable=SC2086
	apt-get $apt_quiet build-dep -y "$tree"
fi

: "${DEB_BUILD_OPTIONS:=parallel=$(nproc)}"
export DEB_BUILD_OPTIONS
if (cd "$tree" && dpkg-buildpackage -us -uc) >"$work/build.log" 2>&1; then
	ok "dpkg-buildpackage -us -uc (log: $work/build.log)"
else
	tail -n 60 "$work/build.log"
	die "dpkg-buildpackage failed; full log in $work/build.log"
fi
changes=$work/emma_${debversion}_$(dpkg --print-architecture).changes
ls "$work"/*.deb "$work"/*.dsc

if [ -n "$repo" ]; then
	mkdir -p "$repo"
	repo=$(cd "$repo" && pwd)
	rm -f "$repo"/libemma*.deb "$repo"/emma-tools*.deb
	make_repo "$repo"
	chmod -R a+rX "$repo"
	say "apt repository: $repo"
	ls "$repo"
	cat <<EOF

To install from it (as root, or with sudo):
  echo "deb [trusted=yes] file:$repo ./" >/etc/apt/sources.list.d/emma.list
  apt-get update
  apt-get install libemma
EOF
	exit 0
fi

# --- 2. lintian -------------------------------------------------------------
say "2. lintian --fail-on error,warning"
# (--show-overrides would make --fail-on count the overridden tags too, so
# the overrides are listed by a second run.)
if lintian --fail-on error,warning --display-info "$changes" \
	>"$work/lintian.log" 2>&1; then
	ok "lintian --fail-on error,warning: passed"
else
	fail "lintian reported errors or warnings"
fi
lintian --show-overrides "$changes" 2>/dev/null | grep '^O: ' >>"$work/lintian.log" || true
grep -v '^running with root privileges' "$work/lintian.log" | sed 's/^/    /'

# --- 3. local repository ----------------------------------------------------
say "3. local apt repository $work/repo"
make_repo "$work/repo"
echo "deb [trusted=yes] file:$work/repo ./" >"$list"
cat "$list"
# Update this source alone: the test needs no network and leaves the other
# sources' lists as they were.
# shellcheck disable=SC2086
apt-get $apt_quiet update -o Dir::Etc::SourceList="$list" \
	-o Dir::Etc::SourceParts=- -o APT::Get::List-Cleanup=0
apt-cache showpkg libemma | sed -n '/^Reverse Provides:/,$p'

# --- 4. install ------------------------------------------------------------
say "4. apt-get install -y libemma"
installed=yes
# shellcheck disable=SC2086
apt-get $apt_quiet install -y libemma

# --- 5. checks --------------------------------------------------------------
say "5. what the user got"
# A copy built from source and installed under /usr/local (the README's
# quick start) comes first in pkg-config's, man's, the shell's and the
# dynamic linker's search paths.  Check the packaged copy explicitly.
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
PKG_CONFIG_LIBDIR=/usr/lib/$arch/pkgconfig:/usr/lib/pkgconfig:/usr/share/pkgconfig
PATH=/usr/bin:/bin:$PATH
MANPATH=/usr/share/man
export PKG_CONFIG_LIBDIR PATH MANPATH
if ls /usr/local/lib/libemma.so* /usr/local/lib/"$arch"/libemma.so* >/dev/null 2>&1 ||
	[ -e /usr/local/bin/emma-run ]; then
	echo "note: emma is also installed under /usr/local (make install); checking the packaged copy (PKG_CONFIG_LIBDIR, PATH, MANPATH and LD_LIBRARY_PATH point at /usr)"
	LD_LIBRARY_PATH=/usr/lib/$arch${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
	export LD_LIBRARY_PATH
	if [ -f /usr/local/include/emma.h ] && ! cmp -s /usr/local/include/emma.h /usr/include/emma.h; then
		echo "note: /usr/local/include/emma.h differs from the package's /usr/include/emma.h, and the compiler reads it first"
	fi
fi
for p in $packages; do
	v=$(dpkg-query -W -f '${Version} ${Status}' "$p" 2>/dev/null || true)
	if [ "$v" = "$debversion install ok installed" ]; then
		ok "$p $debversion installed"
	else
		fail "$p: '$v', expected $debversion installed"
	fi
done

# pkgconf ends its output with a space: compare the words.
libs=$(pkg-config --libs emma 2>&1 | xargs || true)
want_libs="-Wl,--push-state,--no-as-needed -lemma -Wl,--pop-state"
[ "$libs" = "$want_libs" ] && ok "pkg-config --libs emma: $libs" ||
	fail "pkg-config --libs emma printed '$libs', expected $want_libs"
mv=$(pkg-config --modversion emma 2>&1 || true)
[ "$mv" = "$upstream" ] && ok "pkg-config --modversion emma: $mv" ||
	fail "pkg-config --modversion emma printed '$mv', expected $upstream"

# man: the pages may be dropped by a dpkg path-exclude (slim images).
if grep -qs '^path-exclude.*/usr/share/man' /etc/dpkg/dpkg.cfg.d/*; then
	echo "note: dpkg is configured to drop manual pages here (path-exclude in /etc/dpkg/dpkg.cfg.d); checking the package contents instead of man(1)"
	for page in man3/emma_alloc.3.gz man3/emma_dealloc.3.gz man7/emma.7.gz; do
		dpkg-deb -c "$work"/libemma-dev_*.deb | grep -q "/usr/share/man/$page" &&
			ok "libemma-dev ships $page" || fail "libemma-dev lacks $page"
	done
else
	for page in "emma_alloc" "emma_dealloc" "emma_malloc" "7 emma" \
		"libemma" "emma-run" "emma_version"; do
		# shellcheck disable=SC2086 # "7 emma" is two arguments
		if out=$(MANWIDTH=80 man --warnings $page 2>"$work/man.err") &&
			[ ! -s "$work/man.err" ] &&
			printf '%s\n' "$out" | grep -q '^NAME'; then
			ok "man $page: $(printf '%s\n' "$out" | head -n 1 | tr -s ' ')"
		else
			fail "man $page: $(cat "$work/man.err")"
		fi
	done
	man -P cat emma_dealloc 2>/dev/null | grep -q 'emma_dealloc(void \*ptr' &&
		ok "man emma_dealloc shows emma_dealloc's synopsis" ||
		fail "man emma_dealloc does not show emma_dealloc's synopsis"
fi

# Programs, as debian/tests (autopkgtest) builds them.
for t in build-and-run emma-run; do
	mkdir "$work/autopkgtest-$t"
	if AUTOPKGTEST_TMP=$work/autopkgtest-$t sh "$tree/debian/tests/$t" \
		>"$work/autopkgtest-$t.log" 2>&1; then
		ok "debian/tests/$t (autopkgtest):"
	else
		fail "debian/tests/$t (autopkgtest):"
	fi
	sed 's/^/    /' "$work/autopkgtest-$t.log"
done

# The EXAMPLES of the man pages, with the command line they show.
mkdir "$work/examples"
for page in emma_alloc.3 emma_malloc.3; do
	name=${page%.3}
	c=$work/examples/$name.c
	sh "$tree/man/extract-example.sh" "$tree/man/$page" >"$c"
	# shellcheck disable=SC2046
	if cc -o "$work/examples/$name" "$c" $(pkg-config --cflags --libs emma) \
		>"$work/examples/$name.log" 2>&1 &&
		"$work/examples/$name" >>"$work/examples/$name.log" 2>&1; then
		ok "EXAMPLES of $page: cc \$(pkg-config --cflags --libs emma), runs"
	else
		fail "EXAMPLES of $page: $(cat "$work/examples/$name.log")"
	fi
done

# emma-run, and the README's quick start if python3 is here.
v=$(emma-run --version 2>&1 || true)
[ "$v" = "emma-run (emma) $upstream" ] && ok "emma-run --version: $v" ||
	fail "emma-run --version printed '$v'"
if command -v python3 >/dev/null 2>&1; then
	out=$(emma-run python3 -c 'import ctypes as c
e = c.CDLL(None)
e.malloc.restype = c.c_void_p
print(e.emma_owns(c.c_void_p(e.malloc(64))))' 2>&1 || true)
	[ "$out" = 1 ] && ok "emma-run python3: python's malloc is emma's" ||
		fail "emma-run python3: '$out'"
	# The end of the README's quick start: emma's own statistics at exit.
	PYTHONMALLOC=malloc emma-run --stats /usr/bin/python3 -c \
		'd = {i: str(i) * 3 for i in range(10**5)}; print(len(d), "entries")' \
		>"$work/quickstart.out" 2>"$work/quickstart.err" || true
	if grep -qx "100000 entries" "$work/quickstart.out" &&
		grep -q "^emma $upstream statistics (pid [0-9]*)" "$work/quickstart.err" &&
		grep -q "^  mapped .* peak " "$work/quickstart.err"; then
		ok "emma-run --stats python3 (the quick start): $(grep '^  mapped' "$work/quickstart.err" | tr -s ' ')"
	else
		fail "emma-run --stats python3: $(cat "$work/quickstart.out" "$work/quickstart.err")"
	fi
else
	echo "note: python3 not installed, emma-run python3 not tried"
fi

# The installed library: no NEEDED, and hardened linking.
so=/usr/lib/$arch/libemma.so.0
if [ -f "$so" ]; then
	needed=$(readelf -d "$so" | grep NEEDED || true)
	[ -z "$needed" ] && ok "readelf -d $so: no NEEDED entry" ||
		fail "$so has NEEDED entries: $needed"
	readelf -lW "$so" | grep -q GNU_RELRO && ok "$so: RELRO" ||
		fail "$so: no GNU_RELRO segment"
	readelf -d "$so" | grep -Eq 'BIND_NOW|FLAGS.*NOW' && ok "$so: BIND_NOW" ||
		fail "$so: not linked with -z now"
else
	fail "$so is not installed"
fi
# dpkg-buildflags' flags reached every compiler and linker command that
# made libemma (the lines with emma's own -fvisibility=hidden, and the link
# of libemma.so).  blhc is not used: it also judges the test programs,
# which are not shipped.
cflags=$(cd "$tree" && dpkg-buildflags --get CFLAGS)
cppflags=$(cd "$tree" && dpkg-buildflags --get CPPFLAGS)
ldflags=$(cd "$tree" && dpkg-buildflags --get LDFLAGS)
grep 'libtool: compile: .*-fvisibility=hidden' "$work/build.log" >"$work/lib-cc.log" || true
grep 'libtool: link: .* -o \.libs/libemma\.so\.0' "$work/build.log" >"$work/lib-ld.log" || true
missing=
if [ -s "$work/lib-cc.log" ] && [ -s "$work/lib-ld.log" ]; then
	for flag in $cflags $cppflags; do
		grep -qvF -- " $flag " "$work/lib-cc.log" || continue
		missing="$missing $flag"
	done
	for flag in $ldflags; do
		# libtool splits -Wl,-z,relro into -Wl,-z -Wl,relro.
		f2=$(echo "$flag" | sed 's/^-Wl,\([^,]*\),/-Wl,\1 -Wl,/')
		grep -qF -- "$flag" "$work/lib-ld.log" || grep -qF -- "$f2" "$work/lib-ld.log" ||
			missing="$missing $flag"
	done
	[ -z "$missing" ] &&
		ok "libemma was compiled and linked with dpkg-buildflags' flags ($(wc -l <"$work/lib-cc.log") compiler lines)" ||
		fail "libemma's compiler or linker lines lack:$missing"
	# Flags that come later on the command line and cancel a hardening flag.
	if grep -q -- '-fstack-protector-strong.* -fno-stack-protector' "$work/lib-cc.log"; then
		# Accepted deviation, like a lintian override: emma's configure
		# appends -fno-stack-protector because a libc-free library has no
		# __stack_chk_fail to call.  Drop this branch if that changes.
		echo "note: configure appends -fno-stack-protector after dpkg-buildflags' -fstack-protector-strong: libemma.so.0 has no stack protector (accepted, see configure.ac)"
	fi
else
	fail "no compiler/linker lines for libemma in the build log (not a verbose build?)"
fi

# --- 6. purge ---------------------------------------------------------------
say "6. apt-get purge $packages"
# shellcheck disable=SC2086
files=$(dpkg -L $packages 2>/dev/null | sort -u | while read -r f; do
	[ -f "$f" ] || [ -L "$f" ] && echo "$f"; done)
# shellcheck disable=SC2086
apt-get $apt_quiet purge -y $packages
installed=no
left=
for f in $files; do
	[ -e "$f" ] || [ -L "$f" ] && left="$left $f"
done
for p in $packages; do
	st=$(dpkg-query -W -f '${Status}' "$p" 2>/dev/null || true)
	case $st in
	"" | "unknown ok not-installed") ;;
	*) left="$left [$p: $st]" ;;
	esac
done
[ -z "$left" ] && ok "purged; none of the packages' files is left" ||
	fail "left behind after purge:$left"
rm -f "$list"
rm -f /var/lib/apt/lists/*"$(echo "${work#/}" | tr / _)"*
ok "removed the apt source $list"

echo
if [ "$failures" -eq 0 ]; then
	echo "deb-test: PASS (emma $debversion)"
	exit 0
fi
echo "deb-test: FAIL ($failures checks failed)"
exit 1
