#!/bin/sh
# perl under LD_PRELOAD=libemma.so.0 gives the same output as without.
# SPDX-License-Identifier: MIT OR Apache-2.0
# shellcheck source=tests/preload-lib.sh
. "${srcdir:-.}/preload-lib.sh"
need perl

cat >"$tmp/work.pl" <<'PL'
use strict;
use warnings;
use Digest::MD5 qw(md5_hex);
my %h;
my $x = 1;
for my $i (0 .. 199999) {
    $x = ($x * 1103515245 + 12345) % 2147483648;
    my $k = sprintf("key%08x", $x);
    $h{$k} = [$i, "v" x (1 + $x % 40), { n => $x % 977 }];
}
my @k = sort keys %h;
my $ctx = Digest::MD5->new;
$ctx->add(join(",", $_, $h{$_}[0], length $h{$_}[1], $h{$_}[2]{n})) for @k;
print scalar(@k), " ", $ctx->hexdigest, "\n";
delete @h{@k[grep { $_ % 3 } 0 .. $#k]};
print scalar(keys %h), "\n";
my $s = "";
$s .= "line $_\n" for 1 .. 100000;
my @m = ($s =~ /line (\d*7)\n/g);
print scalar(@m), " ", md5_hex($s), "\n";
my @big = map { "x" x (1000 + $_ * 997 % 200000) } 1 .. 500;
my $t = 0; $t += length for @big;
print "$t\n";
my @sorted = sort { $a->[1] <=> $b->[1] or $a->[0] cmp $b->[0] }
             map { [$_, $h{$_}[2]{n}] } keys %h;
print join(" ", map { $_->[0] } @sorted[0 .. 9]), "\n";
PL

export PERL_HASH_SEED=0 PERL_PERTURB_KEYS=0
compare perl perl "$tmp/work.pl"
finish
