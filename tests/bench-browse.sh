#!/usr/bin/env bash
# Peak RSS of looking inside snapshots (issue 20, item 1): `make bench-browse` (also
# run by `make bench`; not part of `make test`).
#
# For each count N in BENCH_BROWSE_FILES (default "1000000"), on the many-files tree
# of the other benches (tests/bench-many.sh: N random files of 1-3 KiB, 100 to a
# directory), it makes two snapshots on a local store: a full sink, then ~1% of the
# files rewritten (every 100th) and a second sink. Then it measures with
# /usr/bin/time the wall time and peak RSS of:
#   - ls latest (every path), ls --long latest, ls --json latest, and ls of one
#     top directory (a thousandth of the tree);
#   - find of one name across both snapshots, and of a glob matching 1% of the names;
#   - diff of the two snapshots (the ~1% content changes), text and --json;
#   - stats of the latest snapshot and of both (distinct chunks counted once).
# Each output goes to a file whose lines are counted and checked against what the
# tree must give (a wrong count fails the bench, as a failed command does). The
# target from the issue, peak RSS ≤ 32 MiB at 1,000,000 files, is printed as
# PASS/FAIL. Prints one markdown table.
#
# Settings (environment): BENCH_DIR (default /tmp/chute-bench; trees are kept and
# reused), BENCH_BROWSE_FILES, BIN (default target/release/chute, built first), CARGO.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/chute-bench}
COUNTS=${BENCH_BROWSE_FILES:-1000000}
CARGO=${CARGO:-cargo}
RSS_MIB=32

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'bench-browse: %s\n' "$*" >&2
    exit 1
}

if [[ -z ${BIN:-} ]]; then
    (cd "$ROOT" && "$CARGO" build --release --quiet) || die "cannot build chute"
    BIN=$ROOT/target/release/chute
fi
[[ -x $BIN ]] || die "no binary $BIN"
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
source "$ROOT/tests/bench-many.sh"
RUN=$(mktemp -d "$BENCH_DIR/browse.XXXXXX")
trap 'rm -rf "$RUN"' EXIT

# chute HOME ARGS...: chute as the bench's node, with nothing from the caller's setup.
chute() {
    local home=$1
    shift
    env -i PATH="$PATH" HOME="$home" CHUTE_CONFIG=/dev/null CHUTE_DOMAIN=bench CHUTE_NODE=bench "$BIN" "$@"
}

ROWS=""
WORST=0
# measure N NAME WANT HOME ARGS...: times `chute ARGS` (stdout to a file), checks that
# it printed WANT lines, and adds a row to the table.
measure() {
    local n=$1 name=$2 want=$3 home=$4 out
    shift 4
    out=$RUN/$name.out
    /usr/bin/time -f '%e %M' -o "$RUN/$name.time" \
        env -i PATH="$PATH" HOME="$home" CHUTE_CONFIG=/dev/null CHUTE_DOMAIN=bench CHUTE_NODE=bench \
        "$BIN" "$@" >"$out" 2>"$RUN/$name.err" || {
        tail -n 5 "$RUN/$name.err" >&2
        die "$name failed: chute $*"
    }
    local lines wall kib
    lines=$(wc -l <"$out")
    [[ $lines -eq $want ]] || die "$name: chute $* printed $lines lines, not $want"
    read -r wall kib <"$RUN/$name.time"
    ((kib > WORST)) && WORST=$kib
    say "$name at $n files: $wall s, $((kib / 1024)) MiB"
    ROWS+=$(printf '| %s | `chute %s` | %s | %s | %.1f |' "$n" "$*" "$lines" "$wall" "$(awk "BEGIN { print $kib / 1024 }")")$'\n'
}

for n in $COUNTS; do
    [[ $n =~ ^[1-9][0-9]*$ && $n -ge 1000 ]] || die "BENCH_BROWSE_FILES: $n is not a number of files ≥ 1000"
    make_many "$n"
    tree=$BENCH_DIR/many-$n
    home=$RUN/home-$n
    mkdir -p "$home"
    chute "$home" init >/dev/null 2>&1
    say "two snapshots of $tree"
    chute "$home" sink -q "$tree"
    change_many "$n" >/dev/null
    chute "$home" sink -q "$tree"
    read -r first second < <(chute "$home" list --json | python3 -c '
import json, sys
print(" ".join(s["id"] for s in json.load(sys.stdin)))')
    [[ -n $second ]] || die "no second snapshot"
    tops=$(((n + 999) / 1000))    # d0..: 1,000 files and 10 directories each
    dirs=$((tops + (n + 99) / 100)) # and s0..s9 below them, 100 files each
    paths=$((1 + dirs + n))         # with the root itself
    changed=$(((n + 49) / 100))     # every 100th file from the 50th
    measure "$n" ls-"$n" "$paths" "$home" ls latest
    measure "$n" ls-long-"$n" "$paths" "$home" ls --long latest
    measure "$n" ls-json-"$n" "$paths" "$home" ls --json latest
    measure "$n" ls-dir-"$n" 1011 "$home" ls latest "$tree/d0"
    measure "$n" find-one-"$n" 2 "$home" find "f$((n - 1)).bin"
    measure "$n" find-1pct-"$n" $((2 * changed)) "$home" find '*50.bin'
    measure "$n" diff-"$n" $((changed + 1)) "$home" diff "$first" "$second"
    measure "$n" diff-json-"$n" $((changed + 1)) "$home" diff --json "$first" "$second"
    measure "$n" stats-latest-"$n" 3 "$home" stats latest
    measure "$n" stats-all-"$n" 3 "$home" stats
    ROWS=${ROWS//"$first"/A}
    ROWS=${ROWS//"$second"/B}
    ROWS=${ROWS//"$tree"/TREE}
    rm -rf "$home"
done

if ((WORST <= RSS_MIB * 1024)); then verdict=PASS; else verdict=FAIL; fi
cat <<EOF

## Looking inside snapshots: peak RSS (issue 20, item 1)

$(date -u +%Y-%m-%d), $(nproc) cores, $(uname -m), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); \`make bench-browse\` (BENCH_BROWSE_FILES="$COUNTS"); a local store holding two snapshots of the tree (full, then ~1% of the files rewritten); A and B are the two snapshots' ids, TREE the tree's path; wall time and peak RSS from /usr/bin/time; output lines checked.

| files | command | lines out | wall s | peak RSS MiB |
| ---: | --- | ---: | ---: | ---: |
${ROWS}
Target: peak RSS ≤ $RSS_MIB MiB for each command: $verdict (largest $(awk "BEGIN { printf \"%.1f\", $WORST / 1024 }") MiB).
EOF
