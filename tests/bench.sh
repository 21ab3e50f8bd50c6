#!/usr/bin/env bash
# chute's throughput bench: `make bench` (not part of `make test`).
#
# On one generated data set (one large incompressible file plus a few thousand small
# files), measures with /usr/bin/time -v the wall time, peak RSS and CPU (user+sys)
# of:
#   - chute sink and restore through `chute serve` on loopback (client and server),
#   - chute sink and restore on the default local store,
#   - restic backup and restore on a local repository (the comparison the issue sets),
#   - bupstash put and restore on a local repository (issue 17's wall and CPU targets),
#   - keeping a store (the maintenance issue): on four snapshots of the data set, each
#     with a fresh churn file of 1/8 its size, chute verify --all (no download; on the
#     local store and through chute serve) and --read-data against restic check and
#     check --read-data, and forgetting the two oldest then pruning (chute forget +
#     prune --grace 0, restic forget --prune),
# then runs the single-core crypto ceiling of the same build (tests/ceiling.rs) and
# prints one markdown report with the issue's targets marked PASS/FAIL, and last the
# incremental and many-files cases (tests/bench-incremental.sh: 50,000 to 1,000,000
# files of 1-3 KiB with chute, restic and bupstash). The targets are informational:
# the script fails only if a command fails or a restore differs, or, before
# anything runs, if a tool is missing (`make bench-deps` installs them).
#
# The page cache is dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every
# timed phase when the kernel lets us (root, writable /proc/sys); otherwise the runs
# are warm-cache and the report says so. Restores are checked with `diff -r`
# outside the timing. Peak RSS is split into anonymous and file-backed pages by
# sampling /proc (sink reads sources through memory maps, which count in RSS).
# Other work on the machine skews every figure: the report shows the load average.
#
# Settings (environment):
#   BENCH_DIR         work directory (default /tmp/chute-bench); the data set is
#                     kept there and reused while its marker matches the settings
#   BENCH_SIZE_MIB    data set size in MiB (default 1024; `make bench` passes 4096)
#   BENCH_FILES       file counts of the many-files cases (tests/bench-incremental.sh)
#   BENCH_TOOLS       where `make bench-deps` put bupstash (default ~/.cache/chute-bench)
#   BENCH_SMALL_FILES number of small files, 1-64 KiB each (default 3000)
#   CHUTE_CEILING_MIB bytes per ceiling figure in MiB (default 1024)
#   BENCH_COLD        0: never drop the page cache (a trial run on a shared machine)
#   BENCH_PARTS       all (default), or many: only the many-files cases (case c of
#                     tests/bench-incremental.sh), for the long 1,000,000-file run
#   CARGO             cargo to build with (default cargo)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/chute-bench}
BENCH_SIZE_MIB=${BENCH_SIZE_MIB:-1024}
BENCH_SMALL_FILES=${BENCH_SMALL_FILES:-3000}
BENCH_PARTS=${BENCH_PARTS:-all}
CARGO=${CARGO:-cargo}

# Targets from the issue.
SINK_VS_RESTIC=2       # sink throughput ≥ 2× restic backup
SINK_VS_CEILING=0.5    # sink throughput ≥ 50% of the single-core seal+HMAC ceiling
SINK_VS_BUPSTASH=0.6   # local sink wall ≤ 0.6× bupstash put (issue 17)
HTTP_VS_LOCAL_PCT=10   # sink through chute serve within 10% of the local sink's wall (issue 17)
CPU_PER_GIB=1.6        # CPU seconds (user+sys, client+server) per GiB
CLIENT_RSS_MIB=32
SERVER_RSS_MIB=16

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'bench: %s\n' "$*" >&2
    exit 1
}
# awk arithmetic: calc FORMAT EXPR
calc() { awk "BEGIN { printf \"$1\", ($2) }"; }

[[ $BENCH_SIZE_MIB =~ ^[0-9]+$ ]] || die "BENCH_SIZE_MIB must be a number of MiB"
[[ $BENCH_SMALL_FILES =~ ^[0-9]+$ ]] || die "BENCH_SMALL_FILES must be a number"

# --- server bookkeeping and cleanup ---------------------------------------------
TIME_PID=""   # /usr/bin/time wrapping the running server
SERVER_PID="" # the chute serve process itself
SERVER_URL=""
SAMPLER_PID=""

cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n $TIME_PID ]] && kill -0 "$TIME_PID" 2>/dev/null; then
        # time exits once its child has; give the server a moment to finish.
        for _ in $(seq 50); do kill -0 "$TIME_PID" 2>/dev/null || break; sleep 0.1; done
        kill -TERM "$TIME_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. tools --------------------------------------------------------------------
# Every tool a row needs must be there: a missing one fails the bench in one line
# rather than leaving its rows out. `make bench-deps` installs them (Debian 12).
BENCH_TOOLS=${BENCH_TOOLS:-$HOME/.cache/chute-bench}
PATH="$BENCH_TOOLS/bin:$PATH"
check_tools() {
    local missing=()
    command -v restic >/dev/null || missing+=(restic)
    command -v bupstash >/dev/null || missing+=(bupstash)
    [[ -x /usr/bin/time ]] || missing+=(time)
    command -v pgrep >/dev/null || missing+=(pgrep)
    command -v perl >/dev/null || missing+=(perl)
    ((${#missing[@]} == 0)) || die "missing ${missing[*]} (looked in PATH and $BENCH_TOOLS/bin): run make bench-deps as root"
}

# --- data set and page cache (tests/bench-data.sh) ----------------------------
# shellcheck source=tests/bench-data.sh
source "$ROOT/tests/bench-data.sh"

# --- measurement helpers ---------------------------------------------------------
declare -A WALL RSS CPU USR SYS ANON FILE MACHINE
HZ=$(getconf CLK_TCK)

# Busy jiffies of the whole machine (everything but idle and iowait), so each phase
# can say how much CPU went to processes other than the ones measured.
busy_jiffies() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# Fields of a /usr/bin/time -v report.
time_field() { awk -F': ' -v k="$2" 'index($0, k) { print $2; exit }' "$1"; }

# record NAME: reads $RUN/NAME.time into RSS (KiB) and CPU (s), and the sampler's
# $RUN/NAME.rss into ANON and FILE (KiB).
record() {
    local f="$RUN/$1.time"
    RSS[$1]=$(time_field "$f" "Maximum resident set size")
    USR[$1]=$(time_field "$f" "User time (seconds)")
    SYS[$1]=$(time_field "$f" "System time (seconds)")
    CPU[$1]=$(calc '%.2f' "${USR[$1]} + ${SYS[$1]}")
    ANON[$1]="?" FILE[$1]="?"
    if [[ -s $RUN/$1.rss ]]; then read -r "ANON[$1]" "FILE[$1]" <"$RUN/$1.rss"; fi
}

no_split() { ANON[$1]="?" FILE[$1]="?"; } # NAME: the sampler's split does not apply

# rss_sampler PARENT OUT: /usr/bin/time reports only the peak of the sum, and sink
# reads files through memory maps, so this splits it: every 50 ms it reads RssAnon
# and RssFile of PARENT's child from /proc and, when the child exits, writes the
# largest of each to OUT. Builtins only (no fork per sample), so it costs next to
# no CPU; a peak shorter than 50 ms can be missed.
rss_sampler() {
    local parent=$1 out=$2 pid="" anon=0 file=0 k v _ tick
    exec {tick}<> <(:)
    while [[ -z $pid ]] && kill -0 "$parent" 2>/dev/null; do
        pid=$(pgrep -P "$parent" | head -n1) || true
        [[ -n $pid ]] || read -rt 0.01 -u "$tick" _ || true
    done
    while [[ -n $pid && -r /proc/$pid/status ]]; do
        while read -r k v _; do
            case $k in
            RssAnon:) ((v > anon)) && anon=$v ;;
            RssFile:) ((v > file)) && file=$v ;;
            esac
        done </proc/"$pid"/status 2>/dev/null || true
        read -rt 0.05 -u "$tick" _ || true
    done
    echo "$anon $file" >"$out"
}

# measure NAME ENV... -- CMD...: one timed phase on a cold cache.
measure() {
    local name=$1 envs=()
    shift
    while [[ $1 != -- ]]; do envs+=("$1"); shift; done
    shift
    drop_caches
    local t0 t1 b0 b1 pid sampler status=0
    b0=$(busy_jiffies)
    t0=$(date +%s.%N)
    env -i "${envs[@]}" /usr/bin/time -v -o "$RUN/$name.time" "$@" \
        >"$RUN/$name.out" 2>"$RUN/$name.err" &
    pid=$!
    rss_sampler "$pid" "$RUN/$name.rss" &
    sampler=$!
    wait "$pid" || status=$?
    t1=$(date +%s.%N)
    b1=$(busy_jiffies)
    wait "$sampler" || true
    if ((status != 0)); then
        cat "$RUN/$name.err" >&2
        die "$name failed (status $status): $*"
    fi
    WALL[$name]=$(calc '%.2f' "$t1 - $t0")
    MACHINE[$name]=$(calc '%.2f' "($b1 - $b0) / $HZ")
    record "$name"
    say "$name: ${WALL[$name]} s ($(tail -n1 "$RUN/$name.out"))"
}

# start_server NAME STORE [SERVE ARGS...]
start_server() {
    local name=$1 store=$2
    shift 2
    env -i "${CHUTE_ENV[@]}" HOME="$RUN/home-server" \
        /usr/bin/time -v -o "$RUN/$name.time" \
        "$BIN" serve --listen 127.0.0.1:0 --store "$store" "$@" 2>"$RUN/$name.err" &
    TIME_PID=$!
    SERVER_URL=""
    for _ in $(seq 100); do
        # The shell behind & may not have created the log yet.
        if [[ -f $RUN/$name.err ]]; then
            SERVER_URL=$(sed -n 's|.*listening on \(http://[^/ ]*\).*|\1|p' "$RUN/$name.err" | head -n1)
        fi
        [[ -n $SERVER_URL ]] && break
        kill -0 "$TIME_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z $SERVER_URL ]]; then
        cat "$RUN/$name.err" >&2
        die "chute serve did not start"
    fi
    SERVER_PID=$(pgrep -P "$TIME_PID" | head -n1)
    [[ -n $SERVER_PID ]] || die "cannot find the chute serve process under /usr/bin/time ($TIME_PID)"
    rss_sampler "$TIME_PID" "$RUN/$name.rss" &
    SAMPLER_PID=$!
}

# stop_server NAME: SIGTERM (chute serve exits cleanly on it), then read its figures.
stop_server() {
    local name=$1
    kill -TERM "$SERVER_PID"
    local status=0
    wait "$TIME_PID" || status=$?
    SERVER_PID="" TIME_PID=""
    wait "$SAMPLER_PID" || true
    if ((status != 0)); then
        tail -n 20 "$RUN/$name.err" >&2
        die "chute serve exited with status $status"
    fi
    record "$name"
}

# verify NAME RESTORED_ROOT: the restore must equal the data set, byte for byte.
verify() {
    if ! diff -r --no-dereference "$DATA" "$2$DATA" >"$RUN/$1.diff" 2>&1; then
        head -n 20 "$RUN/$1.diff" >&2
        die "$1: restored tree differs from $DATA (see $RUN/$1.diff)"
    fi
    say "$1: restore identical to the data set"
}

store_bytes() { du -sb "$1" | cut -f1; }

# --- 9. report -------------------------------------------------------------------
mbps() { calc '%.1f' "$DATA_BYTES / ${WALL[$1]} / 1e6"; }
mib() { calc '%.1f' "$1 / 1024"; }
per_gib() { calc '%.2f' "($1) / $GIB"; }
verdict() { awk "BEGIN { print (($1) ? \"PASS\" : \"FAIL\") }"; }

# RSS "total (anon / file)" and CPU "total (user / sys)" cells of one process.
rss_cell() { printf '%s (%s / %s)' "$(mib "${RSS[$1]}")" "$(mib_or "${ANON[$1]}")" "$(mib_or "${FILE[$1]}")"; }
cpu_cell() { printf '%s (%s / %s)' "${CPU[$1]}" "${USR[$1]}" "${SYS[$1]}"; }
mib_or() { if [[ $1 == "?" ]]; then echo "?"; else mib "$1"; fi; }

# CPU seconds the rest of the machine used during phase NAME (SERVER's counted as ours;
# its lifetime is a little longer than the phase, so this errs low).
others() {
    local ours=${CPU[$1]}
    if [[ -n ${2:-} ]]; then ours="$ours + ${CPU[$2]}"; fi
    calc '%.2f' "(${MACHINE[$1]} - ($ours)) > 0 ? ${MACHINE[$1]} - ($ours) : 0"
}

row() { # NAME LABEL [SERVER]
    local n=$1 srv=${3:-} srss="–" scpu="–" total=${CPU[$1]}
    if [[ -n $srv ]]; then
        srss=$(rss_cell "$srv")
        scpu=$(cpu_cell "$srv")
        total="${CPU[$n]} + ${CPU[$srv]}"
    fi
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$2" "${WALL[$n]}" "$(mbps "$n")" \
        "$(rss_cell "$n")" "$srss" "$(cpu_cell "$n")" "$scpu" "$(per_gib "$total")" "$(others "$n" "$srv")"
}
cpu_total() { if [[ -n ${2:-} ]]; then per_gib "${CPU[$1]} + ${CPU[$2]}"; else per_gib "${CPU[$1]}"; fi; }

check() { # LABEL MEASURED TARGET CONDITION
    printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$(verdict "$4")"
}

# A warning when other processes took more than 5% of the machine during the phases.
busy_note() { # NAME...: the phases to sum
    local n others=0 wall=0
    for n in "$@"; do
        others=$(calc '%.2f' "$others + $(others "$n" "$(server_of "$n")")")
        wall=$(calc '%.2f' "$wall + ${WALL[$n]}")
    done
    awk -v o="$others" -v w="$wall" -v c="$(nproc)" 'BEGIN {
        if (o > 0.05 * w * c) printf " — **the machine was busy (others used %.1f of %.1f CPU s): figures are skewed**", o, w * c
        else printf " (others used %.1f of %.1f CPU s)", o, w * c }'
}
declare -A SRV # NAME: the server measured beside phase NAME (tests/bench-incremental.sh)
server_of() { case $1 in http-sink) echo server-sink ;; http-restore) echo server-restore ;; *) echo "${SRV[$1]:-}" ;; esac; }

# =================================================================================
check_tools
case $BENCH_PARTS in all | many) ;; *) die "BENCH_PARTS: $BENCH_PARTS is neither all nor many" ;; esac

say "building chute (release)"
(cd "$ROOT" && "$CARGO" build --release --quiet)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/chute"
[[ -x $BIN ]] || die "no binary at $BIN"

mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
DATA="$BENCH_DIR/data"
if [[ $BENCH_PARTS == all ]]; then
    make_dataset "$BENCH_SIZE_MIB" BENCH_SIZE_MIB
    GIB=$(calc '%.6f' "$DATA_BYTES / 1073741824")
    FILES=$(find "$DATA" -type f | wc -l)
fi

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
RUN="$BENCH_DIR/run"
rm -rf "$RUN"
mkdir -p "$RUN"
# Each tool gets its own HOME; nothing reads the real one or /etc/chute/chute.conf.
CHUTE_ENV=(PATH="$PATH" CHUTE_CONFIG=/dev/null CHUTE_DOMAIN=bench CHUTE_NODE=bench)

if [[ $BENCH_PARTS == many ]]; then
    RESTIC_VERSION=$(restic version | awk '{ print $2 }')
    HX="$RUN/home-restic"
    mkdir -p "$HX"
    : >"$BENCH_DIR/results.md"
    # shellcheck source=/dev/null # checked on its own
    source "$ROOT/tests/bench-incremental.sh"
    exit 0
fi

# --- 8. single-core ceiling ------------------------------------------------------
say "single-core crypto ceiling (tests/ceiling.rs)"
# Built first so that the timed run is the measurement alone; env -i keeps what cargo
# and rustup need to find the toolchain and the build.
(cd "$ROOT" && "$CARGO" test --release --quiet --test tests --no-run 2>"$RUN/ceiling-build.err") || {
    cat "$RUN/ceiling-build.err" >&2
    die "cannot build tests/ceiling.rs"
}
CARGO_ENV=(PATH="$PATH" HOME="$HOME")
for v in CARGO_HOME RUSTUP_HOME RUSTUP_TOOLCHAIN CARGO_TARGET_DIR CHUTE_CEILING_MIB; do
    if [[ -n ${!v:-} ]]; then CARGO_ENV+=("$v=${!v}"); fi
done
cd "$ROOT"
measure ceiling "${CARGO_ENV[@]}" -- \
    "$CARGO" test --release --quiet --test tests -- --ignored --nocapture ceiling::
ceiling() { awk -v k="$1" '$1 == "CEILING" && $2 == k { print $3 }' "$RUN/ceiling.out"; }
C_SEAL=$(ceiling seal)
C_HMAC=$(ceiling hmac)
C_CDC=$(ceiling chunker)
C_CEIL=$(ceiling seal+hmac)
C_ALL=$(ceiling seal+hmac+chunker)
C_SINKSTEP=$(ceiling copy+hmac+seal)
C_OPEN=$(ceiling open)
C_OPENID=$(ceiling open+id)
[[ -n $C_CEIL ]] || die "no ceiling figures in $RUN/ceiling.out"

# --- 5. chute through chute serve on loopback ------------------------------------
HR="$RUN/home-remote"
mkdir -p "$HR" "$RUN/home-server"
env -i "${CHUTE_ENV[@]}" HOME="$HR" "$BIN" init >/dev/null 2>&1
# The server admits the node by its request-signing key, as a peer would.
ALLOW=$(env -i "${CHUTE_ENV[@]}" HOME="$HR" "$BIN" key auth)
start_server server-sink "$RUN/server-store" --allow "$ALLOW"
measure http-sink "${CHUTE_ENV[@]}" HOME="$HR" -- "$BIN" sink --remote "$SERVER_URL" "$DATA"
stop_server server-sink
HTTP_STORE=$(store_bytes "$RUN/server-store")
start_server server-restore "$RUN/server-store" --allow "$ALLOW"
measure http-restore "${CHUTE_ENV[@]}" HOME="$HR" -- \
    "$BIN" restore latest --remote "$SERVER_URL" --to "$RUN/out-http"
stop_server server-restore
verify http-restore "$RUN/out-http"
rm -rf "$RUN/out-http" "$RUN/server-store"

# --- 6. chute on the default local store -----------------------------------------
HL="$RUN/home-local"
mkdir -p "$HL"
env -i "${CHUTE_ENV[@]}" HOME="$HL" "$BIN" init >/dev/null 2>&1
measure local-sink "${CHUTE_ENV[@]}" HOME="$HL" -- "$BIN" sink "$DATA"
LOCAL_STORE=$(store_bytes "$HL/.local/share/chute/store")
measure local-restore "${CHUTE_ENV[@]}" HOME="$HL" -- "$BIN" restore latest --to "$RUN/out-local"
verify local-restore "$RUN/out-local"
rm -rf "$RUN/out-local" "$HL/.local/share/chute/store"

# --- 7. restic on the same data --------------------------------------------------
HX="$RUN/home-restic"
mkdir -p "$HX"
RESTIC_ENV=(PATH="$PATH" HOME="$HX" RESTIC_PASSWORD=chute-bench
    RESTIC_REPOSITORY="$RUN/restic-repo" RESTIC_CACHE_DIR="$HX/.cache/restic")
RESTIC_VERSION=$(restic version | awk '{ print $2 }')
env -i "${RESTIC_ENV[@]}" restic init --quiet >/dev/null
measure restic-backup "${RESTIC_ENV[@]}" -- restic backup --quiet "$DATA"
RESTIC_STORE=$(store_bytes "$RUN/restic-repo")
measure restic-restore "${RESTIC_ENV[@]}" -- restic restore --quiet latest --target "$RUN/out-restic"
verify restic-restore "$RUN/out-restic"
rm -rf "$RUN/out-restic" "$RUN/restic-repo"

# --- 7b. bupstash on the same data ------------------------------------------------
HB="$RUN/home-bupstash"
mkdir -p "$HB"
BUPSTASH_ENV=(PATH="$PATH" HOME="$HB" BUPSTASH_REPOSITORY="$RUN/bupstash-repo"
    BUPSTASH_KEY="$HB/bupstash.key")
BUPSTASH_VERSION=$(bupstash version)
env -i "${BUPSTASH_ENV[@]}" bupstash init >/dev/null
env -i "${BUPSTASH_ENV[@]}" bupstash new-key -o "$HB/bupstash.key" >/dev/null
measure bupstash-put "${BUPSTASH_ENV[@]}" -- bupstash put -q "$DATA"
BUPSTASH_STORE=$(store_bytes "$RUN/bupstash-repo")
# bupstash restores an item's contents into the directory it is given.
mkdir -p "$RUN/out-bupstash$DATA"
measure bupstash-restore "${BUPSTASH_ENV[@]}" -- \
    bupstash restore --into "$RUN/out-bupstash$DATA" "id=$(tail -n1 "$RUN/bupstash-put.out")"
verify bupstash-restore "$RUN/out-bupstash"
rm -rf "$RUN/out-bupstash" "$RUN/bupstash-repo"

# --- 10. keeping a store: verify and prune against restic check and forget --prune --
HM="$RUN/home-maint"
CHURN="$RUN/churn"
MAINT_STORE="$HM/.local/share/chute/store"
mkdir -p "$HM" "$CHURN"
env -i "${CHUTE_ENV[@]}" HOME="$HM" "$BIN" init >/dev/null 2>&1
RESTIC_M=(PATH="$PATH" HOME="$HX" RESTIC_PASSWORD=chute-bench
    RESTIC_REPOSITORY="$RUN/restic-maint" RESTIC_CACHE_DIR="$HX/.cache/restic")
env -i "${RESTIC_M[@]}" restic init --quiet >/dev/null
say "maintenance: four snapshots of the data set plus churn, with chute and restic"
for i in 1 2 3 4; do
    head -c "$((BENCH_SIZE_MIB * 1048576 / 8))" /dev/urandom >"$CHURN/churn.bin"
    env -i "${CHUTE_ENV[@]}" HOME="$HM" "$BIN" sink "$DATA" "$CHURN" >/dev/null
    env -i "${RESTIC_M[@]}" restic backup --quiet "$DATA" "$CHURN" >/dev/null
done
measure chute-verify "${CHUTE_ENV[@]}" HOME="$HM" -- "$BIN" verify --all
# The same check through chute serve on loopback, serving that store: the server
# answers each window's storage challenge by reading it (an HMAC-SHA256 of every
# byte checked: the CPU is the server's, shown in its own row). Each verify run
# here spends one of the four challenges a snapshot records.
ALLOW_M=$(env -i "${CHUTE_ENV[@]}" HOME="$HM" "$BIN" key auth)
start_server server-verify "$MAINT_STORE" --allow "$ALLOW_M"
measure chute-verify-http "${CHUTE_ENV[@]}" HOME="$HM" -- "$BIN" verify --all --remote "$SERVER_URL"
stop_server server-verify
measure chute-verify-read "${CHUTE_ENV[@]}" HOME="$HM" -- "$BIN" verify --all --read-data
measure restic-check "${RESTIC_M[@]}" -- restic check
measure restic-check-read "${RESTIC_M[@]}" -- restic check --read-data
CHUTE_MAINT_BEFORE=$(store_bytes "$MAINT_STORE")
RESTIC_MAINT_BEFORE=$(store_bytes "$RUN/restic-maint")
measure chute-forget "${CHUTE_ENV[@]}" HOME="$HM" -- "$BIN" forget --keep-last 2
measure chute-prune "${CHUTE_ENV[@]}" HOME="$HM" -- "$BIN" prune --grace 0
measure restic-forget-prune "${RESTIC_M[@]}" -- restic forget --keep-last 2 --prune
CHUTE_MAINT_AFTER=$(store_bytes "$MAINT_STORE")
RESTIC_MAINT_AFTER=$(store_bytes "$RUN/restic-maint")
CHUTE_PRUNE_SUMMARY=$(grep '^reclaimed ' "$RUN/chute-prune.out" || true)
env -i "${CHUTE_ENV[@]}" HOME="$HM" "$BIN" restore latest --to "$RUN/out-maint" >/dev/null
verify chute-maint-restore "$RUN/out-maint"
rm -rf "$RUN/out-maint" "$HM/.local/share/chute/store" "$RUN/restic-maint" "$CHURN"

report() {
    local hs ls hr lr rb cpu_model
    hs=$(mbps http-sink) ls=$(mbps local-sink) hr=$(mbps http-restore)
    lr=$(mbps local-restore) rb=$(mbps restic-backup)
    cpu_model=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
    local hcpu lcpu hrcpu lrcpu
    hcpu=$(cpu_total http-sink server-sink) lcpu=$(cpu_total local-sink)
    hrcpu=$(cpu_total http-restore server-restore) lrcpu=$(cpu_total local-restore)
    local half
    half=$(calc '%.1f' "$C_CEIL * $SINK_VS_CEILING")

    cat <<EOF

## chute bench

- machine: $(nproc) cores (${cpu_model:-unknown CPU}), $(uname -r); chute $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' + uncommitted src changes'), restic $RESTIC_VERSION, $BUPSTASH_VERSION
- data set: $DATA, $DATA_BYTES bytes ($(calc '%.2f' "$GIB") GiB) in $FILES files: one large incompressible file and $BENCH_SMALL_FILES files of 1-64 KiB
- cache: $CACHE
- MB = 10^6 bytes; MB/s = data set bytes / wall seconds; CPU = user + sys and peak RSS from /usr/bin/time -v; the anon / file split of RSS is the peak of each, sampled every 50 ms from /proc (file = pages of memory-mapped files, counted in RSS)
- other work: "others' CPU s" is what the rest of the machine used during each phase (from /proc/stat); load average before / after: $LOAD_BEFORE / $(cut -d' ' -f1-3 /proc/loadavg)$(busy_note ceiling http-sink http-restore local-sink local-restore restic-backup restic-restore bupstash-put bupstash-restore)
- stored: chute over HTTP $HTTP_STORE bytes, chute local $LOCAL_STORE bytes, restic $RESTIC_STORE bytes, bupstash $BUPSTASH_STORE bytes

| run | wall s | MB/s | client peak RSS MiB (anon / file) | server peak RSS MiB (anon / file) | client CPU s (user / sys) | server CPU s (user / sys) | CPU s/GiB (client+server) | others' CPU s |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
$(row http-sink "chute sink → chute serve (loopback)" server-sink)
$(row http-restore "chute restore ← chute serve (loopback)" server-restore)
$(row local-sink "chute sink → local store")
$(row local-restore "chute restore ← local store")
$(row restic-backup "restic backup (local repo)")
$(row restic-restore "restic restore (local repo)")
$(row bupstash-put "bupstash put (local repo)")
$(row bupstash-restore "bupstash restore (local repo)")
| ceiling, one thread: seal (XChaCha20-Poly1305, 1 MiB) | | $C_SEAL | | | | | | |
| ceiling, one thread: chunk id (HMAC-SHA256) | | $C_HMAC | | | | | | |
| ceiling, one thread: chunker (FastCDC cut) | | $C_CDC | | | | | | |
| **ceiling, one thread: seal + HMAC** | | **$C_CEIL** | | | | | | $(others ceiling) |
| ceiling, one thread: seal + HMAC + chunker | | $C_ALL | | | | | | |
| ceiling, one thread: sink's copy + HMAC + seal | | $C_SINKSTEP | | | | | | |
| ceiling, one thread: restore's open (before the id check) | | $C_OPEN | | | | | | |
| ceiling, one thread: restore's open + id check | | $C_OPENID | | | | | | |

| target (informational) | measured | target | verdict |
| --- | ---: | ---: | :---: |
$(check "HTTP sink ≥ 2× restic backup" "$hs MB/s" "≥ $(calc '%.1f' "$rb * $SINK_VS_RESTIC") MB/s" "$hs >= $rb * $SINK_VS_RESTIC")
$(check "local sink ≥ 2× restic backup" "$ls MB/s" "≥ $(calc '%.1f' "$rb * $SINK_VS_RESTIC") MB/s" "$ls >= $rb * $SINK_VS_RESTIC")
$(check "local sink wall ≤ $SINK_VS_BUPSTASH× bupstash put" "${WALL[local-sink]} s" "≤ $(calc '%.2f' "${WALL[bupstash-put]} * $SINK_VS_BUPSTASH") s" "${WALL[local-sink]} <= ${WALL[bupstash-put]} * $SINK_VS_BUPSTASH")
$(check "HTTP sink wall within $HTTP_VS_LOCAL_PCT% of local sink" "${WALL[http-sink]} s" "≤ $(calc '%.2f' "${WALL[local-sink]} * (1 + $HTTP_VS_LOCAL_PCT / 100)") s" "${WALL[http-sink]} <= ${WALL[local-sink]} * (1 + $HTTP_VS_LOCAL_PCT / 100)")
$(check "HTTP sink CPU (client+server) ≤ bupstash put" "$hcpu s/GiB" "≤ $(cpu_total bupstash-put) s/GiB" "$hcpu <= $(cpu_total bupstash-put)")
$(check "local sink CPU ≤ bupstash put" "$lcpu s/GiB" "≤ $(cpu_total bupstash-put) s/GiB" "$lcpu <= $(cpu_total bupstash-put)")
$(check "HTTP sink ≥ 50% of seal+HMAC ceiling" "$hs MB/s" "≥ $half MB/s" "$hs >= $half")
$(check "local sink ≥ 50% of seal+HMAC ceiling" "$ls MB/s" "≥ $half MB/s" "$ls >= $half")
$(check "HTTP sink CPU (client+server)" "$hcpu s/GiB" "≤ $CPU_PER_GIB s/GiB" "$hcpu <= $CPU_PER_GIB")
$(check "local sink CPU" "$lcpu s/GiB" "≤ $CPU_PER_GIB s/GiB" "$lcpu <= $CPU_PER_GIB")
$(check "HTTP restore CPU (client+server)" "$hrcpu s/GiB" "≤ $CPU_PER_GIB s/GiB" "$hrcpu <= $CPU_PER_GIB")
$(check "local restore CPU" "$lrcpu s/GiB" "≤ $CPU_PER_GIB s/GiB" "$lrcpu <= $CPU_PER_GIB")
$(check "HTTP restore ≥ HTTP sink" "$hr MB/s" "≥ $hs MB/s" "$hr >= $hs")
$(check "local restore ≥ local sink" "$lr MB/s" "≥ $ls MB/s" "$lr >= $ls")
$(check "client RSS, HTTP sink" "$(mib "${RSS[http-sink]}") MiB" "≤ $CLIENT_RSS_MIB MiB" "${RSS[http-sink]} <= $CLIENT_RSS_MIB * 1024")
$(check "client RSS, HTTP restore" "$(mib "${RSS[http-restore]}") MiB" "≤ $CLIENT_RSS_MIB MiB" "${RSS[http-restore]} <= $CLIENT_RSS_MIB * 1024")
$(check "client RSS, local sink" "$(mib "${RSS[local-sink]}") MiB" "≤ $CLIENT_RSS_MIB MiB" "${RSS[local-sink]} <= $CLIENT_RSS_MIB * 1024")
$(check "client RSS, local restore" "$(mib "${RSS[local-restore]}") MiB" "≤ $CLIENT_RSS_MIB MiB" "${RSS[local-restore]} <= $CLIENT_RSS_MIB * 1024")
$(check "server RSS, during sink" "$(mib "${RSS[server-sink]}") MiB" "≤ $SERVER_RSS_MIB MiB" "${RSS[server-sink]} <= $SERVER_RSS_MIB * 1024")
$(check "server RSS, during restore" "$(mib "${RSS[server-restore]}") MiB" "≤ $SERVER_RSS_MIB MiB" "${RSS[server-restore]} <= $SERVER_RSS_MIB * 1024")

### Keeping a store (four snapshots: the data set plus a new churn file of 1/8 its size each)

- chute verify downloads only the manifests and spends a storage challenge on every window (the store reads each window to answer a Poly1305 tag keyed by a nonce it has never seen, so it must still hold the bytes); restic check reads its index and tree structure, check --read-data every pack
- forgetting the two oldest snapshots: chute store $CHUTE_MAINT_BEFORE → $CHUTE_MAINT_AFTER bytes (reclaimed $((CHUTE_MAINT_BEFORE - CHUTE_MAINT_AFTER)); prune said: ${CHUTE_PRUNE_SUMMARY:-?}); restic repository $RESTIC_MAINT_BEFORE → $RESTIC_MAINT_AFTER bytes (reclaimed $((RESTIC_MAINT_BEFORE - RESTIC_MAINT_AFTER)))

| run | wall s | peak RSS MiB (anon / file) | CPU s (user / sys) |
| --- | ---: | ---: | ---: |
$(mrow chute-verify "chute verify --all (no download)")
$(mrow chute-verify-http "chute verify --all (no download) → chute serve")
| chute serve answering that verify (server side) | – | $(rss_cell server-verify) | $(cpu_cell server-verify) |
$(mrow restic-check "restic check")
$(mrow chute-verify-read "chute verify --all --read-data")
$(mrow restic-check-read "restic check --read-data")
$(mrow chute-forget "chute forget --keep-last 2")
$(mrow chute-prune "chute prune --grace 0")
$(mrow restic-forget-prune "restic forget --keep-last 2 --prune")

| target (informational) | measured | target | verdict |
| --- | ---: | ---: | :---: |
$(check "verify faster than restic check" "${WALL[chute-verify]} s" "< ${WALL[restic-check]} s" "${WALL[chute-verify]} < ${WALL[restic-check]}")
$(check "verify through chute serve faster than restic check" "${WALL[chute-verify-http]} s" "< ${WALL[restic-check]} s" "${WALL[chute-verify-http]} < ${WALL[restic-check]}")
$(check "server RSS, during verify" "$(mib "${RSS[server-verify]}") MiB" "≤ $SERVER_RSS_MIB MiB" "${RSS[server-verify]} <= $SERVER_RSS_MIB * 1024")
$(check "verify --read-data faster than restic check --read-data" "${WALL[chute-verify-read]} s" "< ${WALL[restic-check-read]} s" "${WALL[chute-verify-read]} < ${WALL[restic-check-read]}")
$(check "forget + prune faster than restic forget --prune" "$(calc '%.2f' "${WALL[chute-forget]} + ${WALL[chute-prune]}") s" "< ${WALL[restic-forget-prune]} s" "${WALL[chute-forget]} + ${WALL[chute-prune]} < ${WALL[restic-forget-prune]}")
$(for n in chute-verify chute-verify-read chute-prune; do check "client RSS, $n" "$(mib "${RSS[$n]}") MiB" "≤ $CLIENT_RSS_MIB MiB" "${RSS[$n]} <= $CLIENT_RSS_MIB * 1024"; done)

Raw outputs (time -v reports, stdout, stderr, server logs): $RUN
EOF
}

mrow() { # NAME LABEL
    printf '| %s | %s | %s | %s |\n' "$2" "${WALL[$1]}" "$(rss_cell "$1")" "$(cpu_cell "$1")"
}

report | tee "$BENCH_DIR/results.md"
say "report saved to $BENCH_DIR/results.md"
# shellcheck source=/dev/null # checked on its own
source "$ROOT/tests/bench-incremental.sh" # the incremental and many-files cases
