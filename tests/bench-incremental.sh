# shellcheck shell=bash
# chute's incremental bench: sourced by the end of tests/bench.sh (`make bench`), whose
# helpers (measure, start_server, stop_server, record, calc, check, ...), work
# directory ($RUN, $BENCH_DIR), data set ($DATA) and environments it reuses.
#
# The incremental cases of issue 4, each for chute on a local store, chute through a
# loopback `chute serve`, and restic on a local repository, on the same data in the
# same run:
#   a. no-change re-run: a second backup of a copy of the data set right after the first;
#   b. ~1% change: 10 MiB overwritten in place in the large file (five 2 MiB pieces),
#      15 small files appended to and 15 only touched, then a third backup;
#   c. many files: BENCH_MANY_FILES (default 50000) random files of 1-3 KiB, 100 to a
#      directory, 10 directories under each of the top ones; a full backup, a no-change
#      re-run and a restore to an empty directory (checked with diff -r -q outside
#      the timing).
# Every timed phase runs on a cold page cache like the rest of the bench; the
# no-change re-runs are timed once more right after, warm, since a re-run usually
# follows recent use of the files. Bytes: chute's "sent" from its summary line,
# restic's data_added from `backup --json`, and the growth of each store on disk.
# Targets are informational (PASS/FAIL); only a failed command or a differing restore
# fails the bench.
#
# Settings (environment):
#   BENCH_MANY_FILES  number of files of case c (default 50000); the tree is kept in
#                     $BENCH_DIR/many and reused while its marker matches
if ! declare -F measure >/dev/null || [[ -z ${RUN:-} ]]; then
    echo "bench-incremental.sh is sourced by tests/bench.sh; run make bench" >&2
    exit 2
fi

BENCH_MANY_FILES=${BENCH_MANY_FILES:-50000}
[[ $BENCH_MANY_FILES =~ ^[0-9]+$ ]] || die "BENCH_MANY_FILES must be a number"

# Targets from the issue (wall seconds, cold cache).
NOCHANGE_LARGE_S=0.1 # no-change re-run of the ~1 GiB set
NOCHANGE_MANY_S=0.3  # no-change re-run of the 50k files
SINK_MANY_S=1.2      # full sink of the 50k files
RESTORE_MANY_S=3     # restore of the 50k files

# --- data ------------------------------------------------------------------------
# The 1 GiB cases change their data, so they work on a copy: the kept data set stays
# as its marker says.
INC="$RUN/incr"
INC_DATA="$INC/data"
MANY="$BENCH_DIR/many"

make_many() {
    local marker="$BENCH_DIR/many.ok" want="files=$BENCH_MANY_FILES"
    if [[ -d $MANY && -f $marker ]] && [[ $(head -n1 "$marker") == "$want" ]]; then
        say "reusing many-files tree $MANY ($want)"
        return
    fi
    say "generating many-files tree $MANY ($want)"
    rm -rf "$MANY" "$marker"
    mkdir -p "$MANY"
    # One process (a fork per file would take minutes); sizes fixed by the seed,
    # contents from the kernel's generator.
    perl -e '
        use strict;
        my ($root, $n) = @ARGV;
        srand(42);
        open(my $rnd, "<:raw", "/dev/urandom") or die "urandom: $!";
        for my $i (0 .. $n - 1) {
            my $dir = sprintf("%s/d%d/s%d", $root, int($i / 1000), int($i / 100) % 10);
            if ($i % 100 == 0) { mkdir("$root/d" . int($i / 1000)); mkdir($dir) or die "$dir: $!"; }
            my $len = 1024 + int(rand(2049));
            read($rnd, my $buf, $len) == $len or die "short read";
            open(my $f, ">:raw", "$dir/f$i.bin") or die "$dir/f$i.bin: $!";
            print $f $buf;
            close($f) or die "$dir/f$i.bin: $!";
        }
    ' "$MANY" "$BENCH_MANY_FILES"
    printf '%s\n' "$want" >"$marker"
}

# ~1% of the data set: five 2 MiB pieces of the large file rewritten in place, 15
# small files grown by 100 bytes, 15 more touched (new mtime, same bytes).
change_data() {
    local large="$INC_DATA/large.bin" size k mib
    size=$(stat -c %s "$large")
    for k in 0 1 2 3 4; do
        mib=$((size * (2 * k + 1) / 10 / 1048576))
        dd if=/dev/urandom of="$large" bs=1M count=2 seek="$mib" conv=notrunc status=none
    done
    local files=() f
    mapfile -t files < <(find "$INC_DATA/small" -type f | sort | head -n 30)
    ((${#files[@]} == 30)) || die "change_data: fewer than 30 small files to change"
    for f in "${files[@]:0:15}"; do head -c 100 /dev/urandom >>"$f"; done
    touch "${files[@]:15:15}"
}

# --- bookkeeping -----------------------------------------------------------------
declare -A SENT GROWTH SRV
# Bytes in chute's "sent 1.2 MiB to ..." or restic's JSON summary (data_added).
chute_sent() {
    sed -n 's/.*; sent \([0-9.]*\) \([KMGT]\{0,1\}i\{0,1\}B\) to .*/\1 \2/p' "$RUN/$1.out" |
        awk '{ m = 1; if ($2 == "KiB") m = 1024; else if ($2 == "MiB") m = 1048576;
               else if ($2 == "GiB") m = 1073741824; else if ($2 == "TiB") m = 1099511627776;
               printf "%.0f", $1 * m }'
}
restic_added() {
    grep '"message_type":"summary"' "$RUN/$1.out" | sed -n 's/.*"data_added":\([0-9]*\).*/\1/p'
}

# cmeasure NAME STORE http|local HOME -- ARGS...: one timed chute phase from HOME; over
# http through a server of its own on STORE (so its figures are the phase's). @URL in
# ARGS stands for --remote and the server's URL or the store directory.
cmeasure() {
    local name=$1 store=$2 http=$3 home=$4
    shift 4
    [[ ${1:-} == -- ]] && shift
    local before args=() a
    before=$(store_bytes_or0 "$store")
    if [[ $http == http ]]; then
        start_server "srv-$name" "$store" --allow "$(allow_of "$home")"
        for a in "$@"; do [[ $a == @URL ]] && args+=(--remote "$SERVER_URL") || args+=("$a"); done
        measure "$name" "${CHUTE_ENV[@]}" HOME="$home" -- "$BIN" "${args[@]}"
        stop_server "srv-$name"
        SRV[$name]="srv-$name"
    else
        for a in "$@"; do [[ $a == @URL ]] && args+=(--remote "$store") || args+=("$a"); done
        measure "$name" "${CHUTE_ENV[@]}" HOME="$home" -- "$BIN" "${args[@]}"
    fi
    if [[ ${args[0]} == sink ]]; then
        SENT[$name]=$(chute_sent "$name")
        GROWTH[$name]=$(($(store_bytes_or0 "$store") - before))
    fi
}

# Runs cmeasure with page-cache drops switched off: the warm re-runs.
warm() {
    local saved
    saved=$(declare -f drop_caches)
    drop_caches() { :; }
    "$@"
    eval "$saved"
}

rmeasure() { # NAME REPO CMD...: one timed restic phase
    local name=$1 repo=$2 before
    shift 2
    before=$(store_bytes_or0 "$repo")
    measure "$name" PATH="$PATH" HOME="$HX" RESTIC_PASSWORD=chute-bench \
        RESTIC_REPOSITORY="$repo" RESTIC_CACHE_DIR="$HX/.cache/restic" -- restic "$@"
    if [[ $1 == backup ]]; then
        SENT[$name]=$(restic_added "$name")
        GROWTH[$name]=$(($(store_bytes_or0 "$repo") - before))
    fi
}
restic_run() { # REPO ARGS...: an untimed restic command
    local repo=$1
    shift
    env -i PATH="$PATH" HOME="$HX" RESTIC_PASSWORD=chute-bench \
        RESTIC_REPOSITORY="$repo" RESTIC_CACHE_DIR="$HX/.cache/restic" restic "$@" >/dev/null
}

store_bytes_or0() { if [[ -e $1 ]]; then store_bytes "$1"; else echo 0; fi; }
new_home() { mkdir -p "$1" && env -i "${CHUTE_ENV[@]}" HOME="$1" "$BIN" init >/dev/null 2>&1; }
allow_of() { env -i "${CHUTE_ENV[@]}" HOME="$1" "$BIN" key auth; }

# chute_setup HOME STORE http|local PATH: an untimed first sink.
chute_setup() {
    local home=$1 store=$2 http=$3 path=$4
    if [[ $http == http ]]; then
        start_server "srv-setup" "$store" --allow "$(allow_of "$home")"
        env -i "${CHUTE_ENV[@]}" HOME="$home" "$BIN" sink --remote "$SERVER_URL" "$path" >/dev/null
        stop_server "srv-setup"
    else
        env -i "${CHUTE_ENV[@]}" HOME="$home" "$BIN" sink --remote "$store" "$path" >/dev/null
    fi
}

check_restore() { # NAME ROOT TREE
    if ! diff -r -q --no-dereference "$3" "$2$3" >"$RUN/$1.diff" 2>&1; then
        head -n 20 "$RUN/$1.diff" >&2
        die "$1: restored tree differs from $3 (see $RUN/$1.diff)"
    fi
    say "$1: restore identical to $3"
    rm -rf "$2"
}

# =================================================================================
say "incremental cases (issue 4)"
rm -rf "$INC"
mkdir -p "$INC"
cp -a "$DATA" "$INC_DATA"
make_many
MANY_BYTES=$(find "$MANY" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
MANY_DIRS=$(find "$MANY" -type d | wc -l)

# --- a + b: the ~1 GiB set, re-run unchanged, then with ~1% changed --------------
IL="$INC/home-local" IH="$INC/home-http" IR="$INC/restic-repo"
IL_STORE="$INC/store-local" IH_STORE="$INC/store-http"
new_home "$IL"
new_home "$IH"
restic_run "$IR" init --quiet
say "incremental: first backups of $INC_DATA (untimed)"
chute_setup "$IL" "$IL_STORE" local "$INC_DATA"
chute_setup "$IH" "$IH_STORE" http "$INC_DATA"
restic_run "$IR" backup --quiet "$INC_DATA"

cmeasure inc-local-nochange "$IL_STORE" local "$IL" -- sink @URL "$INC_DATA"
warm cmeasure inc-local-nochange-warm "$IL_STORE" local "$IL" -- sink @URL "$INC_DATA"
cmeasure inc-http-nochange "$IH_STORE" http "$IH" -- sink @URL "$INC_DATA"
warm cmeasure inc-http-nochange-warm "$IH_STORE" http "$IH" -- sink @URL "$INC_DATA"
rmeasure inc-restic-nochange "$IR" backup --json "$INC_DATA"
warm rmeasure inc-restic-nochange-warm "$IR" backup --json "$INC_DATA"

change_data
cmeasure inc-local-changed "$IL_STORE" local "$IL" -- sink @URL "$INC_DATA"
cmeasure inc-http-changed "$IH_STORE" http "$IH" -- sink @URL "$INC_DATA"
rmeasure inc-restic-changed "$IR" backup --json "$INC_DATA"
rm -rf "$INC_DATA" "$IL_STORE" "$IH_STORE" "$IR"

# --- c: many small files -----------------------------------------------------------
ML="$INC/home-many-local" MH="$INC/home-many-http" MR="$INC/restic-many"
ML_STORE="$INC/store-many-local" MH_STORE="$INC/store-many-http"
new_home "$ML"
new_home "$MH"
restic_run "$MR" init --quiet

cmeasure many-local-sink "$ML_STORE" local "$ML" -- sink @URL "$MANY"
cmeasure many-http-sink "$MH_STORE" http "$MH" -- sink @URL "$MANY"
rmeasure many-restic-sink "$MR" backup --json "$MANY"

cmeasure many-local-nochange "$ML_STORE" local "$ML" -- sink @URL "$MANY"
warm cmeasure many-local-nochange-warm "$ML_STORE" local "$ML" -- sink @URL "$MANY"
cmeasure many-http-nochange "$MH_STORE" http "$MH" -- sink @URL "$MANY"
warm cmeasure many-http-nochange-warm "$MH_STORE" http "$MH" -- sink @URL "$MANY"
rmeasure many-restic-nochange "$MR" backup --json "$MANY"
warm rmeasure many-restic-nochange-warm "$MR" backup --json "$MANY"

cmeasure many-local-restore "$ML_STORE" local "$ML" -- restore latest @URL --to "$INC/out-local"
check_restore many-local-restore "$INC/out-local" "$MANY"
cmeasure many-http-restore "$MH_STORE" http "$MH" -- restore latest @URL --to "$INC/out-http"
check_restore many-http-restore "$INC/out-http" "$MANY"
rmeasure many-restic-restore "$MR" restore --quiet latest --target "$INC/out-restic"
check_restore many-restic-restore "$INC/out-restic" "$MANY"
rm -rf "$ML_STORE" "$MH_STORE" "$MR"

# --- report ------------------------------------------------------------------------
bytes_cell() { # NAME: "sent (MiB) / store growth (MiB)"
    if [[ -z ${SENT[$1]:-} ]]; then
        echo "–"
    else
        printf '%s / %s' "$(calc '%.2f' "${SENT[$1]} / 1048576")" "$(calc '%.2f' "${GROWTH[$1]} / 1048576")"
    fi
}
irow() { # NAME LABEL
    local n=$1 s=${SRV[$1]:-} srss="–" scpu="–"
    if [[ -n $s ]]; then srss=$(rss_cell "$s") scpu=$(cpu_cell "$s"); fi
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$2" "${WALL[$n]}" "$(rss_cell "$n")" "$srss" \
        "$(cpu_cell "$n")" "$scpu" "$(bytes_cell "$n")"
}
itarget() { # NAME LABEL LIMIT_S: a wall-time target
    check "$2" "${WALL[$1]} s" "≤ $3 s" "${WALL[$1]} <= $3"
}
ahead() { # CHUTE RESTIC LABEL
    check "$3 ahead of restic" "${WALL[$1]} s" "< ${WALL[$2]} s" "${WALL[$1]} < ${WALL[$2]}"
}

incremental_report() {
    local chute_runs=() n t SET
    SET="$(calc '%.2f' "$GIB") GiB"
    for n in "${!WALL[@]}"; do
        case $n in inc-local-* | inc-http-* | many-local-* | many-http-*) chute_runs+=("$n") ;; esac
    done
    mapfile -t chute_runs < <(printf '%s\n' "${chute_runs[@]}" | sort)
    cat <<EOF

### Incremental runs (issue 4)

- a, b: a copy of the data set above ($DATA_BYTES bytes, $FILES files); b overwrites 10 MiB of the large file in place (five 2 MiB pieces), appends 100 bytes to 15 small files and touches 15 more
- c: $BENCH_MANY_FILES files of 1-3 KiB ($MANY_BYTES bytes) in $MANY_DIRS directories ($MANY: 100 files a directory, 10 of those under each top directory)
- every row runs on a cold page cache like the rest of the bench, except those marked warm (the same command again right after, nothing dropped); each HTTP row has its own loopback chute serve, whose figures are the server's
- bytes: chute's "sent" from its summary line and restic's data_added from backup --json, then how much the store (or repository) grew on disk, in MiB (2^20)
- load average now: $(cut -d' ' -f1-3 /proc/loadavg)

| run | wall s | client peak RSS MiB (anon / file) | server peak RSS MiB (anon / file) | client CPU s (user / sys) | server CPU s (user / sys) | sent or added / store growth MiB |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
$(irow inc-local-nochange "a. no-change re-run, $SET: chute → local store")
$(irow inc-local-nochange-warm "a. no-change re-run, $SET: chute → local store (warm)")
$(irow inc-http-nochange "a. no-change re-run, $SET: chute → chute serve")
$(irow inc-http-nochange-warm "a. no-change re-run, $SET: chute → chute serve (warm)")
$(irow inc-restic-nochange "a. no-change re-run, $SET: restic backup")
$(irow inc-restic-nochange-warm "a. no-change re-run, $SET: restic backup (warm)")
$(irow inc-local-changed "b. 1% changed, $SET: chute → local store")
$(irow inc-http-changed "b. 1% changed, $SET: chute → chute serve")
$(irow inc-restic-changed "b. 1% changed, $SET: restic backup")
$(irow many-local-sink "c. $BENCH_MANY_FILES files, full: chute → local store")
$(irow many-http-sink "c. $BENCH_MANY_FILES files, full: chute → chute serve")
$(irow many-restic-sink "c. $BENCH_MANY_FILES files, full: restic backup")
$(irow many-local-nochange "c. $BENCH_MANY_FILES files, no change: chute → local store")
$(irow many-local-nochange-warm "c. $BENCH_MANY_FILES files, no change: chute → local store (warm)")
$(irow many-http-nochange "c. $BENCH_MANY_FILES files, no change: chute → chute serve")
$(irow many-http-nochange-warm "c. $BENCH_MANY_FILES files, no change: chute → chute serve (warm)")
$(irow many-restic-nochange "c. $BENCH_MANY_FILES files, no change: restic backup")
$(irow many-restic-nochange-warm "c. $BENCH_MANY_FILES files, no change: restic backup (warm)")
$(irow many-local-restore "c. $BENCH_MANY_FILES files, restore: chute ← local store")
$(irow many-http-restore "c. $BENCH_MANY_FILES files, restore: chute ← chute serve")
$(irow many-restic-restore "c. $BENCH_MANY_FILES files, restore: restic restore")

| target (informational) | measured | target | verdict |
| --- | ---: | ---: | :---: |
$(itarget inc-local-nochange "no-change re-run, $SET, local" "$NOCHANGE_LARGE_S")
$(itarget inc-http-nochange "no-change re-run, $SET, HTTP" "$NOCHANGE_LARGE_S")
$(itarget inc-local-nochange-warm "no-change re-run, $SET, local (warm)" "$NOCHANGE_LARGE_S")
$(itarget inc-http-nochange-warm "no-change re-run, $SET, HTTP (warm)" "$NOCHANGE_LARGE_S")
$(itarget many-local-nochange "no-change re-run, $BENCH_MANY_FILES files, local" "$NOCHANGE_MANY_S")
$(itarget many-http-nochange "no-change re-run, $BENCH_MANY_FILES files, HTTP" "$NOCHANGE_MANY_S")
$(itarget many-local-nochange-warm "no-change re-run, $BENCH_MANY_FILES files, local (warm)" "$NOCHANGE_MANY_S")
$(itarget many-http-nochange-warm "no-change re-run, $BENCH_MANY_FILES files, HTTP (warm)" "$NOCHANGE_MANY_S")
$(itarget many-local-sink "full sink, $BENCH_MANY_FILES files, local" "$SINK_MANY_S")
$(itarget many-http-sink "full sink, $BENCH_MANY_FILES files, HTTP" "$SINK_MANY_S")
$(itarget many-local-restore "restore, $BENCH_MANY_FILES files, local" "$RESTORE_MANY_S")
$(itarget many-http-restore "restore, $BENCH_MANY_FILES files, HTTP" "$RESTORE_MANY_S")
$(for t in local http; do
        ahead "inc-$t-nochange" inc-restic-nochange "no-change re-run, $SET, $t,"
        ahead "inc-$t-changed" inc-restic-changed "1% changed, $SET, $t,"
        ahead "many-$t-sink" many-restic-sink "full sink, $BENCH_MANY_FILES files, $t,"
        ahead "many-$t-nochange" many-restic-nochange "no-change re-run, $BENCH_MANY_FILES files, $t,"
        ahead "many-$t-restore" many-restic-restore "restore, $BENCH_MANY_FILES files, $t,"
    done)
$(for n in "${chute_runs[@]}"; do check "client RSS, $n" "$(mib "${RSS[$n]}") MiB" "≤ $CLIENT_RSS_MIB MiB" "${RSS[$n]} <= $CLIENT_RSS_MIB * 1024"; done)
EOF
}

incremental_report | tee -a "$BENCH_DIR/results.md"
say "incremental report appended to $BENCH_DIR/results.md"
