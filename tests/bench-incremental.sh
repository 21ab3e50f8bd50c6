# shellcheck shell=bash
# chute's incremental bench: sourced by the end of tests/bench.sh (`make bench`), whose
# helpers (measure, start_server, stop_server, record, calc, check, ...), work
# directory ($RUN, $BENCH_DIR), data set ($DATA) and environments it reuses.
#
# The incremental cases of issue 4, for chute on a local store, chute through a
# loopback `chute serve`, and restic on a local repository, on the same data in the
# same run:
#   a. no-change re-run: a second backup of a copy of the data set right after the first;
#   b. ~1% change: 10 MiB overwritten in place in the large file (five 2 MiB pieces),
#      15 small files appended to and 15 only touched, then a third backup;
# and the many-files cases of issue 17 (client RAM flat in the number of files), with
# bupstash on a local repository as a fourth tool:
#   c. for each count N in BENCH_FILES, a tree of N random files of 1-3 KiB, 100 to a
#      directory, 10 directories under each top one; per tool, one after the other
#      (so one store exists at a time): a full backup, a no-change re-run, a third
#      backup after ~1% of the files (every 100th) got new random contents of the same
#      size, a restore of it to an empty directory (checked with diff -r -q outside
#      the timing) and a check of the store (chute verify --all, restic check,
#      bupstash list-contents of every item: each reads the metadata of every
#      snapshot but not the data). Each tool sees the same work: the 1% rewrite of
#      one tool's turn leaves a tree of the same shape for the next.
#      After each backup: the store's size as a ratio to the tree's bytes and, for
#      chute, the new snapshot's bytes per file by object kind (see chute_kinds).
# Every timed phase runs on a cold page cache like the rest of the bench; the
# no-change re-runs of a and b are timed once more right after, warm, since a re-run
# usually follows recent use of the files. Bytes: chute's "sent" from its summary
# line, restic's data_added from `backup --json`, and the growth of each store on
# disk. Targets are informational (PASS/FAIL); only a failed command or a differing
# restore fails the bench.
#
# Settings (environment):
#   BENCH_FILES  the counts of case c (default "50000 200000 1000000"; the old
#                BENCH_MANY_FILES still names one); each tree is kept in
#                $BENCH_DIR/many-N and reused while its marker matches
if ! declare -F measure >/dev/null || [[ -z ${RUN:-} ]]; then
    echo "bench-incremental.sh is sourced by tests/bench.sh; run make bench" >&2
    exit 2
fi

BENCH_FILES=${BENCH_FILES:-${BENCH_MANY_FILES:-50000 200000 1000000}}
read -ra COUNTS <<<"$BENCH_FILES"
((${#COUNTS[@]} > 0)) || die "BENCH_FILES is empty"
for n in "${COUNTS[@]}"; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "BENCH_FILES: $n is not a number of files"; done
command -v bupstash >/dev/null || die "missing bupstash: run make bench-deps as root"
BUPSTASH_VERSION=$(bupstash version)

# Targets from the issue (wall seconds, cold cache).
NOCHANGE_LARGE_S=0.1 # no-change re-run of the ~1 GiB set
NOCHANGE_MANY_S=0.3  # no-change re-run of the 50k files
SINK_MANY_S=1.2      # full sink of the 50k files
RESTORE_MANY_S=3     # restore of the 50k files
# Issue 17 (client RSS ≤ $CLIENT_RSS_MIB and server ≤ $SERVER_RSS_MIB from bench.sh).
FLAT=0.10             # client peak RSS within ±10% of the smallest count's
STORE_RATIO=1.05      # store ≤ 1.05× the data after the three snapshots (at 50,000)
NOCHANGE_GROWTH=1048576 # a no-change snapshot of the largest count adds < 1 MiB

# --- data ------------------------------------------------------------------------
# The 1 GiB cases change their data, so they work on a copy: the kept data set stays
# as its marker says.
INC="$RUN/incr"
INC_DATA="$INC/data"

source "$ROOT/tests/bench-many.sh" # make_many, many_bytes, change_many

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

# bmeasure NAME HOME REPO ARGS...: one timed bupstash phase (key and send log in HOME).
bmeasure() {
    local name=$1 home=$2 repo=$3 before
    shift 3
    before=$(store_bytes_or0 "$repo")
    measure "$name" PATH="$PATH" HOME="$home" BUPSTASH_REPOSITORY="$repo" \
        BUPSTASH_KEY="$home/bupstash.key" -- bupstash "$@"
    if [[ $1 == put ]]; then GROWTH[$name]=$(($(store_bytes_or0 "$repo") - before)); fi
}
bupstash_setup() { # HOME REPO
    mkdir -p "$1"
    env -i PATH="$PATH" HOME="$1" bupstash init -r "$2" >/dev/null
    env -i PATH="$PATH" HOME="$1" bupstash new-key -o "$1/bupstash.key" >/dev/null
}

# chute_kinds NAME STORE NEW_FILES NEW_BYTES: the newest snapshot's bytes by object
# kind, into KINDS[NAME] as "part0 index chunks manifest". Part 0 and index.json are
# read off the store's layout (see src/store/mod.rs); the split of part 0 is derived,
# since no chute command prints the manifest's length (it is in the sealed header):
# every file here is smaller than the chunker's minimum (256 KiB), so each new or
# changed file is one new chunk of its size + 46 sealed bytes, random contents
# never deduplicate, and the rest of part 0 is the manifest's segments.
declare -A KINDS
chute_kinds() {
    local name=$1 store=$2 nfiles=$3 bytes=$4 index blob part0 chunks
    index=$(find "$store" -mindepth 5 -maxdepth 5 -name index.json -printf '%T@ %p\n' | sort -n | tail -n1 | cut -d' ' -f2-)
    [[ -n $index ]] || die "$name: no committed snapshot in $store"
    blob=$(dirname "$index")
    part0=$(find "$blob/0" -type f ! -name '.tmp-*' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
    chunks=$((bytes + 46 * nfiles))
    KINDS[$name]="$part0 $(stat -c %s "$index") $chunks $((part0 - chunks))"
}
ratio() { RATIO[$1]=$(calc '%.3f' "$(store_bytes_or0 "$2") / $3"); } # NAME STORE DATA_BYTES
declare -A RATIO

store_bytes_or0() { if [[ -e $1 ]]; then store_bytes "$1"; else echo 0; fi; }
new_home() { mkdir -p "$1" && env -i "${CHUTE_ENV[@]}" HOME="$1" "$BIN" init >/dev/null 2>&1; }
# A local store must be made by `chute init --remote DIR` before a sink writes to it.
new_store() { env -i "${CHUTE_ENV[@]}" HOME="$1" "$BIN" init --remote "$2" >/dev/null 2>&1; } # HOME STORE
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
if [[ $BENCH_PARTS == all ]]; then
    cp -a "$DATA" "$INC_DATA"

    # --- a + b: the ~1 GiB set, re-run unchanged, then with ~1% changed --------------
    IL="$INC/home-local" IH="$INC/home-http" IR="$INC/restic-repo"
    IL_STORE="$INC/store-local" IH_STORE="$INC/store-http"
    new_home "$IL"
    new_store "$IL" "$IL_STORE"
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
fi

# --- c: many small files, at each count --------------------------------------------
declare -A CHANGED # N: "files bytes" the 1% change rewrote
OUT="$INC/out"
# after_sink NAME STORE N NEW_FILES NEW_BYTES: store ratio, and for chute the kinds.
after_sink() {
    ratio "$1" "$2" "$(many_bytes "$3")"
    if [[ -n ${4:-} ]]; then chute_kinds "$1" "$2" "$4" "$5"; fi
}
many_chute() { # N local|http
    local n=$1 v=$2 t="$BENCH_DIR/many-$1" home="$INC/home-$1-$2" store="$INC/store-$1-$2" p="f$1-$2" cf cb
    new_home "$home"
    if [[ $v == local ]]; then new_store "$home" "$store"; fi
    cmeasure "$p-full" "$store" "$v" "$home" -- sink @URL "$t"
    after_sink "$p-full" "$store" "$n" "$n" "$(many_bytes "$n")"
    cmeasure "$p-nochange" "$store" "$v" "$home" -- sink @URL "$t"
    after_sink "$p-nochange" "$store" "$n" 0 0
    read -r cf cb < <(change_many "$n")
    CHANGED[$n]="$cf $cb"
    cmeasure "$p-change" "$store" "$v" "$home" -- sink @URL "$t"
    after_sink "$p-change" "$store" "$n" "$cf" "$cb"
    cmeasure "$p-restore" "$store" "$v" "$home" -- restore latest @URL --to "$OUT"
    check_restore "$p-restore" "$OUT" "$t"
    cmeasure "$p-verify" "$store" "$v" "$home" -- verify --all @URL
    rm -rf "$store" "$home"
}
many_restic() { # N
    local n=$1 t="$BENCH_DIR/many-$1" repo="$INC/restic-$1" p="f$1-restic"
    restic_run "$repo" init --quiet
    rmeasure "$p-full" "$repo" backup --json "$t"
    after_sink "$p-full" "$repo" "$n"
    rmeasure "$p-nochange" "$repo" backup --json "$t"
    after_sink "$p-nochange" "$repo" "$n"
    change_many "$n" >/dev/null
    rmeasure "$p-change" "$repo" backup --json "$t"
    after_sink "$p-change" "$repo" "$n"
    rmeasure "$p-restore" "$repo" restore --quiet latest --target "$OUT"
    check_restore "$p-restore" "$OUT" "$t"
    rmeasure "$p-verify" "$repo" check
    rm -rf "$repo" "$HX/.cache/restic"
}
many_bupstash() { # N
    local n=$1 t="$BENCH_DIR/many-$1" repo="$INC/bupstash-$1" home="$INC/home-$1-bupstash" p="f$1-bupstash"
    bupstash_setup "$home" "$repo"
    bmeasure "$p-full" "$home" "$repo" put -q "$t"
    after_sink "$p-full" "$repo" "$n"
    bmeasure "$p-nochange" "$home" "$repo" put -q "$t"
    after_sink "$p-nochange" "$repo" "$n"
    change_many "$n" >/dev/null
    bmeasure "$p-change" "$home" "$repo" put -q "$t"
    after_sink "$p-change" "$repo" "$n"
    # bupstash restores a snapshot's contents into the directory it is given.
    mkdir -p "$OUT$t"
    bmeasure "$p-restore" "$home" "$repo" restore --into "$OUT$t" "id=$(tail -n1 "$RUN/$p-change.out")"
    check_restore "$p-restore" "$OUT" "$t"
    # No check command: listing every item's contents reads and authenticates each
    # snapshot's index (its metadata), as verify --all and restic check read theirs.
    # shellcheck disable=SC2016 # expanded by that shell
    measure "$p-verify" PATH="$PATH" HOME="$home" BUPSTASH_REPOSITORY="$repo" \
        BUPSTASH_KEY="$home/bupstash.key" -- sh -c '
        ids=$(bupstash list --format=jsonl1 | sed -n "s/^{\"id\":\"\([0-9a-f]*\)\".*/\1/p")
        [ -n "$ids" ] || exit 1
        for id in $ids; do bupstash list-contents "id=$id" >/dev/null || exit 1; done'
    no_split "$p-verify" # the sampler saw the shell, not bupstash
    rm -rf "$repo" "$home"
}

mapfile -t SORTED < <(printf '%s\n' "${COUNTS[@]}" | sort -n)
NMIN=${SORTED[0]} NMAX=${SORTED[-1]}
for n in "${COUNTS[@]}"; do
    make_many "$n"
    say "many files: $n ($(many_bytes "$n") bytes)"
    many_chute "$n" local
    many_chute "$n" http
    many_restic "$n"
    many_bupstash "$n"
done
rm -rf "$INC"

# --- report ------------------------------------------------------------------------
bytes_cell() { # NAME: "sent (MiB) / store growth (MiB)", – for what is not known
    local sent="–"
    if [[ -z ${GROWTH[$1]:-} ]]; then
        echo "–"
        return
    fi
    [[ -n ${SENT[$1]:-} ]] && sent=$(calc '%.2f' "${SENT[$1]} / 1048576")
    printf '%s / %s' "$sent" "$(calc '%.2f' "${GROWTH[$1]} / 1048576")"
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

# shellcheck disable=SC2153 # FILES is tests/bench.sh's count of data set files
incremental_report() {
    local chute_runs=() n t SET
    SET="$(calc '%.2f' "$GIB") GiB"
    for n in "${!WALL[@]}"; do
        case $n in inc-local-* | inc-http-*) chute_runs+=("$n") ;; esac
    done
    mapfile -t chute_runs < <(printf '%s\n' "${chute_runs[@]}" | sort)
    cat <<EOF

### Incremental runs (issue 4)

- a, b: a copy of the data set above ($DATA_BYTES bytes, $FILES files); b overwrites 10 MiB of the large file in place (five 2 MiB pieces), appends 100 bytes to 15 small files and touches 15 more
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

| target (informational) | measured | target | verdict |
| --- | ---: | ---: | :---: |
$(itarget inc-local-nochange "no-change re-run, $SET, local" "$NOCHANGE_LARGE_S")
$(itarget inc-http-nochange "no-change re-run, $SET, HTTP" "$NOCHANGE_LARGE_S")
$(itarget inc-local-nochange-warm "no-change re-run, $SET, local (warm)" "$NOCHANGE_LARGE_S")
$(itarget inc-http-nochange-warm "no-change re-run, $SET, HTTP (warm)" "$NOCHANGE_LARGE_S")
$(for t in local http; do
        ahead "inc-$t-nochange" inc-restic-nochange "no-change re-run, $SET, $t,"
        ahead "inc-$t-changed" inc-restic-changed "1% changed, $SET, $t,"
    done)
$(for n in "${chute_runs[@]}"; do check "client RSS, $n" "$(mib "${RSS[$n]}") MiB" "≤ $CLIENT_RSS_MIB MiB" "${RSS[$n]} <= $CLIENT_RSS_MIB * 1024"; done)
EOF
}

TOOLS=(local http restic bupstash)
PHASES=(full nochange change restore verify)
declare -A TOOL_LABEL=([local]="chute → local store" [http]="chute → chute serve"
    [restic]="restic $RESTIC_VERSION (local repo)" [bupstash]="$BUPSTASH_VERSION (local repo)")
declare -A PHASE_LABEL=([full]="full backup" [nochange]="no-change backup"
    [change]="~1% changed backup" [restore]="restore" [verify]="store check")

frow() { # N TOOL PHASE
    local n="f$1-$2-$3" s=${SRV[f$1-$2-$3]:-} srss="–" scpu="–"
    if [[ -n $s ]]; then srss=$(rss_cell "$s") scpu=$(cpu_cell "$s"); fi
    printf '| %s files, %s: %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "${PHASE_LABEL[$3]}" \
        "${TOOL_LABEL[$2]}" "${WALL[$n]}" "$(rss_cell "$n")" "$srss" "$(cpu_cell "$n")" "$scpu" \
        "$(bytes_cell "$n")" "${RATIO[$n]:-–}"
}
krow() { # N TOOL PHASE: a chute snapshot's bytes per file by object kind
    local n="f$1-$2-$3" part0 index chunks manifest
    read -r part0 index chunks manifest <<<"${KINDS[$n]}"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "${TOOL_LABEL[$2]}" "${PHASE_LABEL[$3]}" \
        "$(calc '%.1f' "$part0 / $1")" "$(calc '%.1f' "$chunks / $1")" \
        "$(calc '%.1f' "$manifest / $1")" "$(calc '%.2f' "$index / $1")" "${RATIO[$n]}"
}
flat() { # TOOL PHASE N: client RSS at N within ±FLAT of the smallest count's
    local a=${RSS[f$NMIN-$1-$2]} b=${RSS[f$3-$1-$2]}
    check "client RSS flat, ${TOOL_LABEL[$1]}, ${PHASE_LABEL[$2]}, $3 vs $NMIN files" \
        "$(mib "$b") vs $(mib "$a") MiB" "±$(calc '%.0f' "$FLAT * 100")%" \
        "$b >= $a * (1 - $FLAT) && $b <= $a * (1 + $FLAT)"
}

# The rows of many_report's target table, one line each (an empty line would end it).
many_targets() {
    local n t ph ratio_n=$NMIN
    for n in "${COUNTS[@]}"; do [[ $n == 50000 ]] && ratio_n=50000; done
    for n in "${COUNTS[@]}"; do for t in local http; do for ph in "${PHASES[@]}"; do
        check "client RSS, $n files, ${TOOL_LABEL[$t]}, ${PHASE_LABEL[$ph]}" "$(mib "${RSS[f$n-$t-$ph]}") MiB" "≤ $CLIENT_RSS_MIB MiB" "${RSS[f$n-$t-$ph]} <= $CLIENT_RSS_MIB * 1024"
    done; done; done
    for n in "${SORTED[@]:1}"; do for t in local http; do for ph in "${PHASES[@]}"; do flat "$t" "$ph" "$n"; done; done; done
    for n in "${COUNTS[@]}"; do for ph in "${PHASES[@]}"; do
        check "server RSS, $n files, ${PHASE_LABEL[$ph]}" "$(mib "${RSS[srv-f$n-http-$ph]}") MiB" "≤ $SERVER_RSS_MIB MiB" "${RSS[srv-f$n-http-$ph]} <= $SERVER_RSS_MIB * 1024"
    done; done
    for t in local http; do
        check "store after 3 snapshots, $ratio_n files, ${TOOL_LABEL[$t]}" "${RATIO[f$ratio_n-$t-change]}× data" "≤ $STORE_RATIO×" "${RATIO[f$ratio_n-$t-change]} <= $STORE_RATIO"
    done
    for t in local http; do
        check "no-change snapshot of $NMAX files adds, ${TOOL_LABEL[$t]}" "$(calc '%.3f' "${GROWTH[f$NMAX-$t-nochange]} / 1048576") MiB" "< 1 MiB" "${GROWTH[f$NMAX-$t-nochange]} < $NOCHANGE_GROWTH"
    done
    for n in "${COUNTS[@]}"; do [[ $n == 50000 ]] || continue; for t in local http; do
        itarget "f$n-$t-full" "full sink, $n files, $t (issue 4)" "$SINK_MANY_S"
        itarget "f$n-$t-nochange" "no-change re-run, $n files, $t (issue 4)" "$NOCHANGE_MANY_S"
        itarget "f$n-$t-restore" "restore, $n files, $t (issue 4)" "$RESTORE_MANY_S"
    done; done
    for n in "${COUNTS[@]}"; do for t in local http; do for ph in full nochange change restore; do
        ahead "f$n-$t-$ph" "f$n-restic-$ph" "${PHASE_LABEL[$ph]}, $n files, $t,"
    done; done; done
}

many_report() {
    local n t ph MANY_RUNS=()
    for n in "${!WALL[@]}"; do [[ $n == f[0-9]* ]] && MANY_RUNS+=("$n"); done
    cat <<EOF

### Many small files (issues 4 and 17)

- trees: $(for n in "${COUNTS[@]}"; do printf '%s files of 1-3 KiB (%s bytes), ' "$n" "$(many_bytes "$n")"; done)100 files a directory, 10 of those under each top directory, in $BENCH_DIR/many-N; the ~1% change rewrites every 100th file with new random bytes of its size ($(for n in "${COUNTS[@]}"; do printf '%s: %s files, %s bytes; ' "$n" "${CHANGED[$n]% *}" "${CHANGED[$n]#* }"; done)the same for every tool)
- per tool and count: full backup, no-change backup, ~1% changed backup, restore of that to an empty directory (diff -r outside the timing), then the store check (chute verify --all, restic check, bupstash list-contents of every item); each on a cold page cache; each chute serve row has a server of its own for that phase
- bytes: sent (chute's summary line; restic's data_added) / growth of the store on disk, MiB (2^20); store / data: the store's size on disk after that backup over the tree's bytes
- the bupstash check runs in a shell loop: its peak RSS is the largest bupstash's and its CPU the sum (from /usr/bin/time), no anon / file split
- load average now: $(cut -d' ' -f1-3 /proc/loadavg); other work during these timed phases$(busy_note "${MANY_RUNS[@]}")

| run | wall s | client peak RSS MiB (anon / file) | server peak RSS MiB (anon / file) | client CPU s (user / sys) | server CPU s (user / sys) | sent or added / store growth MiB | store / data |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
$(for n in "${COUNTS[@]}"; do for ph in "${PHASES[@]}"; do for t in "${TOOLS[@]}"; do frow "$n" "$t" "$ph"; done; done; done)

chute's bytes per file by object kind, for the snapshot each backup wrote (part 0
and index.json from the store's layout; part 0's split is derived: each new file
is one chunk of its size + 46 sealed bytes, the rest is manifest segments; an exact
split needs a chute command that prints the manifest length from the sealed header):

| files | store | snapshot | part 0 B/file | sealed chunks B/file | manifest segments B/file | index.json B/file | store / data after |
| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |
$(for n in "${COUNTS[@]}"; do for t in local http; do for ph in full nochange change; do krow "$n" "$t" "$ph"; done; done; done)

| target (informational, issue 17 unless marked) | measured | target | verdict |
| --- | ---: | ---: | :---: |
$(many_targets)
EOF
}

{
    if [[ $BENCH_PARTS == all ]]; then incremental_report; fi
    many_report
} | tee -a "$BENCH_DIR/results.md"
say "incremental report appended to $BENCH_DIR/results.md"
