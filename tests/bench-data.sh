# shellcheck shell=bash
# The data set and the page cache, shared by tests/bench.sh and tests/bench-s3.sh,
# which source this after defining say, die, BENCH_DIR, DATA and BENCH_SMALL_FILES.
#
# make_dataset MIB NAME: one incompressible file and BENCH_SMALL_FILES files of
# 1-64 KiB (100 to a directory, sizes fixed by the seed) in DATA, MIB MiB in all
# (NAME is the setting that gave MIB, for the error); kept and reused while
# BENCH_DIR/data.ok names the same settings. Sets DATA_BYTES.
#
# CACHE says whether timed runs start cold; drop_caches drops the page cache
# when they do (root, a writable /proc/sys, and BENCH_COLD not 0).

make_dataset() {
    local mib=$1 name=$2
    local marker="$BENCH_DIR/data.ok"
    local want="size_mib=$mib small_files=$BENCH_SMALL_FILES"
    if [[ -d $DATA && -f $marker ]] && [[ $(head -n1 "$marker") == "$want" ]]; then
        DATA_BYTES=$(sed -n 2p "$marker")
        say "reusing data set $DATA ($want)"
        return
    fi
    say "generating data set $DATA ($want)"
    rm -rf "$DATA" "$marker"
    mkdir -p "$DATA/small"
    RANDOM=42
    local i n small=0 dir
    for ((i = 0; i < BENCH_SMALL_FILES; i++)); do
        dir="$DATA/small/d$((i / 100))"
        ((i % 100 == 0)) && mkdir -p "$dir"
        n=$((1024 + (RANDOM * 32768 + RANDOM) % (63 * 1024 + 1)))
        head -c "$n" /dev/urandom >"$dir/f$i.bin"
        small=$((small + n))
    done
    local large=$((mib * 1048576 - small))
    ((large > 0)) || die "$name=$mib is smaller than the small files ($small bytes)"
    # The kernel's generator: incompressible, and ~250 MB/s here, fast enough.
    head -c "$large" /dev/urandom >"$DATA/large.bin"
    DATA_BYTES=$((small + large))
    printf '%s\n%s\n' "$want" "$DATA_BYTES" >"$marker"
}

CACHE="cold: page cache dropped before each timed run"
if [[ ${BENCH_COLD:-1} == 0 ]]; then
    CACHE="warm: BENCH_COLD=0 (page cache left alone)"
elif ! { sync && echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
    CACHE="warm: could not drop the page cache (needs root and a writable /proc/sys)"
fi
drop_caches() {
    [[ $CACHE == cold* ]] || return 0
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
}
