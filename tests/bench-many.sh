# shellcheck shell=bash
# The many-files trees of chute's benches, sourced by tests/bench-incremental.sh
# (`make bench`) and tests/bench-browse.sh (`make bench-browse`), so both measure the
# same trees: N random files of 1-3 KiB, 100 to a directory, 10 directories under each
# top one, kept in $BENCH_DIR/many-N and reused while their marker matches. Needs
# `say` from the script that sources it.

# make_many N: the tree of N files in $BENCH_DIR/many-N, generated once. One perl
# process writes them (a fork per file would take an hour at 1,000,000; this writes
# ~1,000,000 in a few minutes, mostly the kernel's file creation); sizes fixed by
# the seed, contents from the kernel's generator. The marker holds the count and
# the total bytes, which no later change alters (change_many keeps sizes).
make_many() {
    local n=$1 tree="$BENCH_DIR/many-$1" marker="$BENCH_DIR/many-$1.ok" want="files=$1 layout=1"
    if [[ -d $tree && -f $marker ]] && [[ $(head -n1 "$marker") == "$want" ]]; then
        say "reusing many-files tree $tree ($want)"
        return
    fi
    say "generating many-files tree $tree ($want)"
    rm -rf "$tree" "$marker"
    mkdir -p "$tree"
    local bytes
    bytes=$(perl -e '
        use strict;
        my ($root, $n) = @ARGV;
        srand(42);
        open(my $rnd, "<:raw", "/dev/urandom") or die "urandom: $!";
        my $total = 0;
        for my $i (0 .. $n - 1) {
            my $dir = sprintf("%s/d%d/s%d", $root, int($i / 1000), int($i / 100) % 10);
            if ($i % 100 == 0) { mkdir("$root/d" . int($i / 1000)); mkdir($dir) or die "$dir: $!"; }
            my $len = 1024 + int(rand(2049));
            read($rnd, my $buf, $len) == $len or die "short read";
            open(my $f, ">:raw", "$dir/f$i.bin") or die "$dir/f$i.bin: $!";
            print $f $buf;
            close($f) or die "$dir/f$i.bin: $!";
            $total += $len;
        }
        print "$total\n";
    ' "$tree" "$n")
    printf '%s\n%s\n' "$want" "$bytes" >"$marker"
}
many_bytes() { sed -n 2p "$BENCH_DIR/many-$1.ok"; }

# change_many N: ~1% of the tree: every 100th file (i % 100 == 50) gets new random
# contents of its own size. Prints "files bytes" rewritten. Repeating it on a tree
# gives the same shape, so the tree stays as its marker says.
change_many() {
    perl -e '
        use strict;
        my ($root, $n) = @ARGV;
        open(my $rnd, "<:raw", "/dev/urandom") or die "urandom: $!";
        my ($files, $bytes) = (0, 0);
        for (my $i = 50; $i < $n; $i += 100) {
            my $p = sprintf("%s/d%d/s%d/f%d.bin", $root, int($i / 1000), int($i / 100) % 10, $i);
            my $len = -s $p or die "$p: $!";
            read($rnd, my $buf, $len) == $len or die "short read";
            open(my $f, "+<:raw", $p) or die "$p: $!";
            print $f $buf;
            close($f) or die "$p: $!";
            $files++; $bytes += $len;
        }
        print "$files $bytes\n";
    ' "$BENCH_DIR/many-$1" "$1"
}
