#!/usr/bin/env bash
# How chute's cost per GiB grows with the size of a snapshot (issue 17.3 and 17.4):
# `make bench-scale` (not part of `make test`; minutes).
#
# For each size in BENCH_SCALE_MIB (default "1024 4096"; `make bench-scale` and
# `make bench` pass "1024 4096 16384") it generates one
# incompressible file of that size and measures, with /usr/bin/time, the wall time
# and the CPU seconds (user+sys) of:
#   - chute sink to a local store (the client is the whole cost),
#   - chute sink through chute serve on loopback (client and server),
#   - chute restore through chute serve (client and server),
# then, once, a restore through chute serve of BENCH_SCALE_FILES small files (default
# 20,000, 1-4 KiB), counting the ranged GETs the server logged. It prints one
# markdown table with CPU-s per GiB: the figure to compare between sizes, since CPU
# time is far less disturbed than wall time by other work on the machine (the load
# average is shown). Restores are checked with cmp/diff outside the timing.
#
# Settings (environment): BENCH_DIR (default /tmp/chute-bench-scale; data sets are
# kept and reused), BENCH_SCALE_MIB, BENCH_SCALE_FILES, BIN (default
# target/release/chute, built first), CARGO.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/chute-bench-scale}
SIZES=${BENCH_SCALE_MIB:-1024 4096}
FILES=${BENCH_SCALE_FILES:-20000}
CARGO=${CARGO:-cargo}

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'bench-scale: %s\n' "$*" >&2
    exit 1
}
calc() { awk "BEGIN { printf \"$1\", ($2) }"; }

if [[ -z ${BIN:-} ]]; then
    (cd "$ROOT" && "$CARGO" build --release --quiet) || die "cannot build chute"
    BIN=$ROOT/target/release/chute
fi
[[ -x $BIN ]] || die "no binary $BIN"
mkdir -p "$BENCH_DIR"
RUN=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
ENVS=(PATH="$PATH" CHUTE_CONFIG=/dev/null CHUTE_DOMAIN=bench CHUTE_NODE=bench)

SERVER_PID=""
cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$RUN"
}
trap cleanup EXIT

# timed NAME HOME CMD...: runs CMD under /usr/bin/time; leaves "wall cpu" in $RUN/NAME.
timed() {
    local name=$1 home=$2
    shift 2
    env -i "${ENVS[@]}" HOME="$home" /usr/bin/time -f '%e %U %S' -o "$RUN/$name.time" \
        "$@" >"$RUN/$name.out" 2>"$RUN/$name.err" || {
        tail -n 5 "$RUN/$name.err" >&2
        die "$name failed: $*"
    }
    awk '{ printf "%s %.2f\n", $1, $2 + $3 }' "$RUN/$name.time" >"$RUN/$name"
    say "$name: $(cat "$RUN/$name") (wall s, cpu s)"
}

# start_server NAME STORE HOME: chute serve under /usr/bin/time; sets SERVER_URL.
start_server() {
    local name=$1 store=$2 home=$3 allow
    allow=$(env -i "${ENVS[@]}" HOME="$home" "$BIN" key auth)
    : >"$RUN/$name.err"
    env -i "${ENVS[@]}" HOME="$RUN/home-server" /usr/bin/time -f '%e %U %S' -o "$RUN/$name.time" \
        "$BIN" serve --listen 127.0.0.1:0 --store "$store" --allow "$allow" --log-requests 2>"$RUN/$name.err" &
    TIME_PID=$!
    SERVER_URL=""
    for _ in $(seq 100); do
        SERVER_URL=$(sed -n 's|.*listening on \(http://[^/ ]*\).*|\1|p' "$RUN/$name.err" | head -n1)
        [[ -n $SERVER_URL ]] && break
        sleep 0.1
    done
    [[ -n $SERVER_URL ]] || die "chute serve did not start: $(cat "$RUN/$name.err")"
    SERVER_PID=$(pgrep -P "$TIME_PID" | head -n1)
}

stop_server() {
    local name=$1
    kill -TERM "$SERVER_PID"
    wait "$TIME_PID" || die "chute serve failed: $(tail -n 5 "$RUN/$name.err")"
    SERVER_PID=""
    awk '{ printf "%s %.2f\n", $1, $2 + $3 }' "$RUN/$name.time" >"$RUN/$name"
}

cpu() { cut -d' ' -f2 "$RUN/$1"; }
wall() { cut -d' ' -f1 "$RUN/$1"; }
per_gib() { calc '%.2f' "$1 * 1024 / $2"; }

ROWS=""
for mib in $SIZES; do
    [[ $mib =~ ^[0-9]+$ ]] || die "BENCH_SCALE_MIB: $mib is not a number of MiB"
    data=$BENCH_DIR/data-$mib
    if [[ ! -f $data/large.bin || $(stat -c %s "$data/large.bin") -ne $((mib << 20)) ]]; then
        say "generating $data ($mib MiB)"
        mkdir -p "$data"
        head -c $((mib << 20)) /dev/urandom >"$data/large.bin"
    fi
    sync
    hl=$RUN/home-local-$mib
    mkdir -p "$hl"
    env -i "${ENVS[@]}" HOME="$hl" "$BIN" init >/dev/null 2>&1
    timed "local-sink-$mib" "$hl" "$BIN" sink "$data"
    rm -rf "$hl/.local/share/chute/store"

    hr=$RUN/home-remote-$mib
    mkdir -p "$hr" "$RUN/home-server"
    env -i "${ENVS[@]}" HOME="$hr" "$BIN" init >/dev/null 2>&1
    start_server "server-sink-$mib" "$RUN/store-$mib" "$hr"
    timed "http-sink-$mib" "$hr" "$BIN" sink --remote "$SERVER_URL" "$data"
    stop_server "server-sink-$mib"
    start_server "server-restore-$mib" "$RUN/store-$mib" "$hr"
    timed "http-restore-$mib" "$hr" "$BIN" restore latest --remote "$SERVER_URL" --to "$RUN/out"
    stop_server "server-restore-$mib"
    cmp "$data/large.bin" "$RUN/out$data/large.bin" || die "restore of $mib MiB differs"
    rm -rf "$RUN/out" "$RUN/store-$mib"

    ROWS+="| $mib MiB | $(wall "local-sink-$mib") | $(per_gib "$(cpu "local-sink-$mib")" "$mib") "
    ROWS+="| $(wall "http-sink-$mib") | $(per_gib "$(cpu "http-sink-$mib")" "$mib") + $(per_gib "$(cpu "server-sink-$mib")" "$mib") "
    ROWS+="| $(wall "http-restore-$mib") | $(per_gib "$(cpu "http-restore-$mib")" "$mib") + $(per_gib "$(cpu "server-restore-$mib")" "$mib") |"$'\n'
done

# Many small files: how many ranged reads a restore through serve makes.
small=$BENCH_DIR/small-$FILES
if [[ ! -f $small/.done ]]; then
    say "generating $FILES small files under $small"
    rm -rf "$small"
    mkdir -p "$small"
    awk -v n="$FILES" 'BEGIN { srand(17); for (i = 0; i < n; i++) print i, 1024 + int(rand() * 3072) }' |
        while read -r i n; do
            d=$small/d$((i / 500))
            [[ -d $d ]] || mkdir -p "$d"
            head -c "$n" /dev/urandom >"$d/f$i"
        done
    touch "$small/.done"
fi
hs=$RUN/home-small
mkdir -p "$hs"
env -i "${ENVS[@]}" HOME="$hs" "$BIN" init >/dev/null 2>&1
start_server server-small-sink "$RUN/store-small" "$hs"
timed http-small-sink "$hs" "$BIN" sink --remote "$SERVER_URL" "$small"
stop_server server-small-sink
start_server server-small "$RUN/store-small" "$hs"
timed http-small-restore "$hs" "$BIN" restore latest --remote "$SERVER_URL" --to "$RUN/out-small"
stop_server server-small
diff -r "$small" "$RUN/out-small$small" >/dev/null || die "restore of the small files differs"
GETS=$(grep -c '"GET [^" ]*/0"' "$RUN/server-small.err" || true)

cat <<EOF

## chute cost per GiB by snapshot size ($(basename "$BIN"), load average $(cut -d' ' -f1-3 /proc/loadavg))

CPU-s/GiB is user+sys; "a + b" is client + server. Compare CPU figures between
sizes: wall times move with whatever else the machine runs.

| size | local sink wall s | local sink CPU-s/GiB | sink → serve wall s | CPU-s/GiB | restore ← serve wall s | CPU-s/GiB |
|---|---|---|---|---|---|---|
$ROWS
Restore through chute serve of $FILES small files: $GETS ranged GETs,
$(wall http-small-restore) s wall, $(cpu http-small-restore) + $(cpu server-small) CPU-s (client + server).
EOF
