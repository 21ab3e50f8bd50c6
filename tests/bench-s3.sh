#!/usr/bin/env bash
# chute against restic on a real S3 cluster (issue 18): `make bench-s3` (not part of
# `make test`; a few minutes and ~8 GB of /tmp at the default size).
#
# Starts a 3-node Garage 2.5.0 cluster on 127.0.0.1 (replication 3, consistent mode,
# lmdb; the binary and the TCP_NODELAY shim `make test-deps` put under
# ~/.cache/chute-test, as tests/util/s3.rs runs them), creates a bucket and a key,
# makes (or reuses) a data set of one large incompressible file plus a few thousand
# files of 1-64 KiB (tests/bench.sh's generator and marker), and measures with
# /usr/bin/time -v the wall time, CPU (user+sys) and peak RSS of:
#   - chute init, sink and restore with --remote s3:http://…/BUCKET/chute,
#   - restic init, backup and restore with -r s3:http://…/BUCKET/restic (the same
#     cluster, the same run),
#   - chute init, sink and restore with --remote DIR (a local directory store),
# and for each run the S3 requests the cluster answered and the CPU its three nodes
# used. Requests are counted from Garage's own request log (one info line per
# request, `garage_api_common::generic_server`, summed over the three nodes, new
# lines since the run began): the admin API's /metrics would be the usual source,
# but the Garage `make test-deps` builds has no `metrics` feature (it answers "built
# without the metrics feature"), and rebuilding it for the bench would cost its
# 6.5-43 minutes. Garage's CPU is utime+stime of its three processes from /proc.
#
# The page cache is dropped before every timed run when root can (as tests/bench.sh
# does); restores are checked with `diff -r` outside the timing; the cluster is
# stopped and its directories removed on exit. A missing tool fails in one line
# before anything runs (`make bench-deps`: restic and time; `make test-deps`: Garage
# and the shim).
#
# Settings (environment):
#   BENCH_DIR          work directory (default /tmp/chute-bench-s3); the data set is
#                      kept there and reused while its marker matches the settings
#   BENCH_S3_MIB       data set size in MiB (default 1024)
#   BENCH_SMALL_FILES  number of small files, 1-64 KiB each (default 3000)
#   BENCH_COLD         0: never drop the page cache (a trial run on a shared machine)
#   CHUTE_TEST_DEPS    where `make test-deps` installed Garage (default ~/.cache/chute-test)
#   CHUTE_TEST_GARAGE_NODELAY  0: stock Garage, without the TCP_NODELAY shim
#   CARGO              cargo to build with (default cargo)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/chute-bench-s3}
BENCH_S3_MIB=${BENCH_S3_MIB:-1024}
BENCH_SMALL_FILES=${BENCH_SMALL_FILES:-3000}
CARGO=${CARGO:-cargo}
DEPS=${CHUTE_TEST_DEPS:-$HOME/.cache/chute-test}
GARAGE_VERSION=2.5.0 # tests/test-deps.sh installs the same
GARAGE=$DEPS/garage-$GARAGE_VERSION/bin/garage
SHIM=$DEPS/nodelay-1.so
SHIM_NOTE="preloaded into Garage (tests/util/nodelay.c)"
if [[ ${CHUTE_TEST_GARAGE_NODELAY:-1} == 0 ]]; then
    SHIM=""
    SHIM_NOTE="not preloaded (stock Garage: CHUTE_TEST_GARAGE_NODELAY=0)"
fi

BUCKET=chute-bench
KEY_ID=GK0123456789abcdef01234567 # Garage wants GK and 24 hex digits
SECRET=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
RPC_SECRET=c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00
REGION=garage
EMPTY_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'bench-s3: %s\n' "$*" >&2
    exit 1
}
calc() { awk "BEGIN { printf \"$1\", ($2) }"; }

[[ $BENCH_S3_MIB =~ ^[0-9]+$ ]] || die "BENCH_S3_MIB must be a number of MiB"
[[ $BENCH_SMALL_FILES =~ ^[0-9]+$ ]] || die "BENCH_SMALL_FILES must be a number"

# --- tools -----------------------------------------------------------------------
missing=()
command -v restic >/dev/null || missing+=("restic (make bench-deps)")
[[ -x /usr/bin/time ]] || missing+=("time (make bench-deps)")
command -v pgrep >/dev/null || missing+=("pgrep (make bench-deps)")
command -v curl >/dev/null || missing+=("curl (apt-get install curl)")
[[ -x $GARAGE ]] || missing+=("garage at $GARAGE (make test-deps)")
[[ -z $SHIM || -f $SHIM ]] || missing+=("the TCP_NODELAY shim at $SHIM (make test-deps)")
if ((${#missing[@]} > 0)); then
    joined=$(printf '%s, ' "${missing[@]}")
    die "missing ${joined%, }"
fi

# --- cleanup: the cluster goes with the script -------------------------------------
GD="" # the cluster's directory
GPIDS=()
cleanup() {
    local p
    for p in "${GPIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${GPIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    if [[ -n $GD ]]; then
        # The request logs stay with the raw outputs (a line per request: small).
        for p in 1 2 3; do
            [[ -d ${RUN:-} && -f $GD/n$p/server.log ]] && cp "$GD/n$p/server.log" "$RUN/garage-n$p.log"
        done
        rm -rf "$GD"
    fi
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- data set and page cache (tests/bench-data.sh) ----------------------------
# shellcheck source=tests/bench-data.sh
source "$ROOT/tests/bench-data.sh"

# --- Garage, 3 nodes ---------------------------------------------------------------
# Node i listens on BASE+10i (S3) and BASE+10i+1 (RPC); BASE is random and the ports
# are checked free, since `make test` may be starting clusters on ephemeral ports.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_base() {
    local base i
    for _ in $(seq 50); do
        base=$((20000 + RANDOM % 10000))
        for i in 1 2 3; do
            if ! port_free $((base + 10 * i)) || ! port_free $((base + 10 * i + 1)); then
                continue 2
            fi
        done
        echo "$base"
        return
    done
    die "no free ports for Garage"
}
gcli() { # NODE ARGS...: the garage CLI on node NODE's config (talks RPC)
    local n=$1
    shift
    timeout 30 "$GARAGE" -c "$GD/n$n/garage.toml" "$@"
}
s3_port() { echo $((BASE + 10 * $1)); }

garage_up() {
    BASE=$(pick_base)
    GD=$(mktemp -d "$BENCH_DIR/garage.XXXXXX")
    local i
    for i in 1 2 3; do
        mkdir -p "$GD/n$i/meta" "$GD/n$i/data"
        cat >"$GD/n$i/garage.toml" <<EOF
metadata_dir = "$GD/n$i/meta"
data_dir = "$GD/n$i/data"
db_engine = "lmdb"
replication_factor = 3
consistency_mode = "consistent"
rpc_bind_addr = "127.0.0.1:$(($(s3_port "$i") + 1))"
rpc_public_addr = "127.0.0.1:$(($(s3_port "$i") + 1))"
rpc_secret = "$RPC_SECRET"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "127.0.0.1:$(s3_port "$i")"
root_domain = ".s3.garage.localhost"
EOF
        chmod 600 "$GD/n$i/garage.toml" # Garage refuses a config others may read
        # Info level: one line per S3 request, which is what the requests are counted from.
        LD_PRELOAD=$SHIM RUST_LOG=garage=info "$GARAGE" -c "$GD/n$i/garage.toml" server \
            >"$GD/n$i/server.log" 2>&1 </dev/null &
        GPIDS+=($!)
    done
    local ids=() id
    for i in 1 2 3; do
        id=""
        for _ in $(seq 300); do
            kill -0 "${GPIDS[$((i - 1))]}" 2>/dev/null || {
                tail -n 20 "$GD/n$i/server.log" >&2
                die "garage node $i exited"
            }
            id=$(gcli "$i" node id -q 2>/dev/null) && [[ $id == *@* ]] && break
            sleep 0.1
        done
        [[ $id == *@* ]] || die "garage node $i did not answer (log: $GD/n$i/server.log)"
        ids+=("$id")
    done
    gcli 1 node connect "${ids[1]}" >/dev/null
    gcli 1 node connect "${ids[2]}" >/dev/null
    for i in 1 2 3; do gcli 1 layout assign -z "z$i" -c 1G "${ids[$((i - 1))]%@*}" >/dev/null; done
    gcli 1 layout apply --version 1 >/dev/null
    gcli 1 bucket create "$BUCKET" >/dev/null
    gcli 1 key import --yes -n bench "$KEY_ID" "$SECRET" >/dev/null
    gcli 1 bucket allow --read --write --owner "$BUCKET" --key bench >/dev/null
    # Ready when every node sees three nodes up and answers a signed HEAD of a missing
    # key with 404 (before it has the layout, bucket and key it answers 503 or 403).
    local n code="" last=""
    for _ in $(seq 600); do
        n=0
        for i in 1 2 3; do
            gcli "$i" health 2>/dev/null | grep -Eq 'Storage nodes up: +3$' || {
                last="node $i does not see 3 nodes up"
                continue
            }
            # Garage requires x-amz-content-sha256 (here: of the empty body).
            code=$(curl -s -o /dev/null -w '%{http_code}' -I --aws-sigv4 "aws:amz:$REGION:s3" \
                -H "x-amz-content-sha256: $EMPTY_SHA256" --user "$KEY_ID:$SECRET" "http://127.0.0.1:$(s3_port "$i")/$BUCKET/readiness-probe") || true
            [[ $code == 404 ]] && n=$((n + 1))
            last="node $i answered a signed HEAD with $code"
        done
        ((n == 3)) && return 0
        sleep 0.1
    done
    die "garage cluster not ready within 60 s ($last; logs under $GD)"
}

# S3 requests in the three nodes' logs: "TOTAL PUT GET LIST HEAD DELETE OTHER" counted
# over the lines after the per-node line counts in $1 ("n1 n2 n3"); LIST is a GET of
# the bucket itself (ListObjects), OTHER is POST (multipart, DeleteObjects) and the rest.
log_lines() { for i in 1 2 3; do printf '%s ' "$(wc -l <"$GD/n$i/server.log")"; done; }
requests_since() {
    local from i
    read -r -a from <<<"$1"
    for i in 1 2 3; do tail -n +"$((from[i - 1] + 1))" "$GD/n$i/server.log"; done |
        sed 's/\x1b\[[0-9;]*m//g' |
        awk -v b="$BUCKET" '
            /::generic_server: / && match($0, /\(key [^)]*\) [A-Z]+ [^ ]+/) {
                split(substr($0, RSTART, RLENGTH), f, " ")
                m = f[3]; t = f[4]; path = t; sub(/\?.*/, "", path)
                if (m == "GET" && (path == "/" b || path == "/" b "/")) k = "LIST"
                else if (m == "PUT" || m == "GET" || m == "HEAD" || m == "DELETE") k = m
                else k = "OTHER"
                c[k]++; n++
            }
            END { printf "%d %d %d %d %d %d %d\n", n, c["PUT"], c["GET"], c["LIST"], c["HEAD"], c["DELETE"], c["OTHER"] }'
}
# utime+stime of the three Garage processes, in clock ticks.
garage_ticks() {
    local p t=0 s fields
    for p in "${GPIDS[@]}"; do
        s=$(cat "/proc/$p/stat") || die "garage process $p is gone"
        s=${s##*) } # fields after the command name; utime and stime are the 12th and 13th
        read -r -a fields <<<"$s"
        t=$((t + fields[11] + fields[12]))
    done
    echo "$t"
}
garage_alive() {
    local i
    for i in 1 2 3; do
        kill -0 "${GPIDS[$((i - 1))]}" 2>/dev/null || {
            tail -n 20 "$GD/n$i/server.log" >&2
            die "garage node $i died"
        }
    done
}

# --- measurement (tests/bench.sh's helpers, plus requests and Garage's CPU) --------
declare -A WALL RSS CPU USR SYS MACHINE REQ GCPU
HZ=$(getconf CLK_TCK)
busy_jiffies() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
time_field() { awk -F': ' -v k="$2" 'index($0, k) { print $2; exit }' "$1"; }

# measure NAME ENV... -- CMD...: one timed run on a cold cache.
measure() {
    local name=$1 envs=()
    shift
    while [[ $1 != -- ]]; do envs+=("$1"); shift; done
    shift
    drop_caches
    local t0 t1 b0 b1 g0 g1 lines status=0
    lines=$(log_lines)
    g0=$(garage_ticks)
    b0=$(busy_jiffies)
    t0=$(date +%s.%N)
    env -i "${envs[@]}" /usr/bin/time -v -o "$RUN/$name.time" "$@" \
        >"$RUN/$name.out" 2>"$RUN/$name.err" || status=$?
    t1=$(date +%s.%N)
    b1=$(busy_jiffies)
    g1=$(garage_ticks)
    if ((status != 0)); then
        tail -n 20 "$RUN/$name.err" >&2
        die "$name failed (status $status): $*"
    fi
    garage_alive
    WALL[$name]=$(calc '%.2f' "$t1 - $t0")
    MACHINE[$name]=$(calc '%.2f' "($b1 - $b0) / $HZ")
    GCPU[$name]=$(calc '%.2f' "($g1 - $g0) / $HZ")
    REQ[$name]=$(requests_since "$lines")
    local f="$RUN/$name.time"
    RSS[$name]=$(time_field "$f" "Maximum resident set size")
    USR[$name]=$(time_field "$f" "User time (seconds)")
    SYS[$name]=$(time_field "$f" "System time (seconds)")
    CPU[$name]=$(calc '%.2f' "${USR[$name]} + ${SYS[$name]}")
    say "$name: ${WALL[$name]} s, ${REQ[$name]%% *} S3 requests"
}

# verify NAME RESTORED_ROOT: the restore must equal the data set, byte for byte.
verify() {
    if ! diff -r --no-dereference "$DATA" "$2$DATA" >"$RUN/$1.diff" 2>&1; then
        head -n 20 "$RUN/$1.diff" >&2
        die "$1: restored tree differs from $DATA (see $RUN/$1.diff)"
    fi
    say "$1: restore identical to the data set"
}

# Bytes in node 1's data directory (each node holds a whole replica at RF=3).
node1_bytes() { du -sb "$GD/n1/data" | cut -f1; }

# =================================================================================
say "building chute (release)"
(cd "$ROOT" && "$CARGO" build --release --quiet) || die "cannot build chute"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/chute"
[[ -x $BIN ]] || die "no binary at $BIN"

mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
DATA="$BENCH_DIR/data"
make_dataset "$BENCH_S3_MIB" BENCH_S3_MIB
GIB=$(calc '%.6f' "$DATA_BYTES / 1073741824")
FILES=$(find "$DATA" -type f | wc -l)
RUN="$BENCH_DIR/run"
rm -rf "$RUN" "$BENCH_DIR"/garage.*
mkdir -p "$RUN"

say "starting a 3-node Garage $GARAGE_VERSION cluster"
garage_up
S3="http://127.0.0.1:$(s3_port 1)/$BUCKET"
say "cluster up; S3 at $S3 (and ports $(s3_port 2), $(s3_port 3))"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
AWS=(AWS_ACCESS_KEY_ID="$KEY_ID" AWS_SECRET_ACCESS_KEY="$SECRET" AWS_DEFAULT_REGION="$REGION")
CHUTE_ENV=(PATH="$PATH" CHUTE_CONFIG=/dev/null CHUTE_DOMAIN=bench CHUTE_NODE=bench)

# --- chute → Garage ----------------------------------------------------------------
HS="$RUN/home-s3"
mkdir -p "$HS"
B0=$(node1_bytes)
measure chute-s3-init "${CHUTE_ENV[@]}" "${AWS[@]}" HOME="$HS" -- "$BIN" init --remote "s3:$S3/chute"
measure chute-s3-sink "${CHUTE_ENV[@]}" "${AWS[@]}" HOME="$HS" -- "$BIN" sink --remote "s3:$S3/chute" "$DATA"
CHUTE_S3_STORED=$(($(node1_bytes) - B0))
measure chute-s3-restore "${CHUTE_ENV[@]}" "${AWS[@]}" HOME="$HS" -- \
    "$BIN" restore latest --remote "s3:$S3/chute" --to "$RUN/out-chute-s3"
verify chute-s3-restore "$RUN/out-chute-s3"
rm -rf "$RUN/out-chute-s3"

# --- restic → Garage (the same cluster, another prefix) ---------------------------
HX="$RUN/home-restic"
mkdir -p "$HX"
RESTIC_VERSION=$(restic version | awk '{ print $2 }')
RESTIC_ENV=(PATH="$PATH" HOME="$HX" "${AWS[@]}" RESTIC_PASSWORD=chute-bench
    RESTIC_REPOSITORY="s3:$S3/restic" RESTIC_CACHE_DIR="$HX/.cache/restic")
# minio-go would otherwise sign for us-east-1; Garage checks the region.
RESTIC_OPT=(-o "s3.region=$REGION")
B0=$(node1_bytes)
measure restic-s3-init "${RESTIC_ENV[@]}" -- restic "${RESTIC_OPT[@]}" init
measure restic-s3-backup "${RESTIC_ENV[@]}" -- restic "${RESTIC_OPT[@]}" backup --quiet "$DATA"
RESTIC_S3_STORED=$(($(node1_bytes) - B0))
measure restic-s3-restore "${RESTIC_ENV[@]}" -- \
    restic "${RESTIC_OPT[@]}" restore --quiet latest --target "$RUN/out-restic-s3"
verify restic-s3-restore "$RUN/out-restic-s3"
rm -rf "$RUN/out-restic-s3"

# --- chute → local directory store --------------------------------------------------
HL="$RUN/home-dir"
mkdir -p "$HL"
measure chute-dir-init "${CHUTE_ENV[@]}" HOME="$HL" -- "$BIN" init --remote "$RUN/dir-store"
measure chute-dir-sink "${CHUTE_ENV[@]}" HOME="$HL" -- "$BIN" sink --remote "$RUN/dir-store" "$DATA"
CHUTE_DIR_STORED=$(du -sb "$RUN/dir-store" | cut -f1)
measure chute-dir-restore "${CHUTE_ENV[@]}" HOME="$HL" -- \
    "$BIN" restore latest --remote "$RUN/dir-store" --to "$RUN/out-chute-dir"
verify chute-dir-restore "$RUN/out-chute-dir"
rm -rf "$RUN/out-chute-dir" "$RUN/dir-store"

# Garage's peak RSS per node over the whole bench (VmHWM), before it is stopped.
GRSS=""
for p in "${GPIDS[@]}"; do
    GRSS+="$(calc '%.1f' "$(awk '/^VmHWM:/ { print $2 }' "/proc/$p/status") / 1024") "
done

# --- report ------------------------------------------------------------------------
mib() { calc '%.1f' "$1 / 1024"; }
row() { # NAME LABEL
    local n=$1 r
    read -r -a r <<<"${REQ[$n]}"
    local others
    others=$(calc '%.2f' "(${MACHINE[$n]} - ${CPU[$n]} - ${GCPU[$n]}) > 0 ? ${MACHINE[$n]} - ${CPU[$n]} - ${GCPU[$n]} : 0")
    local mbps="–" pergib="–"
    if [[ $n == *-sink || $n == *-backup || $n == *-restore ]]; then
        mbps=$(calc '%.1f' "$DATA_BYTES / ${WALL[$n]} / 1e6")
        pergib=$(calc '%.2f' "${CPU[$n]} / $GIB")
    fi
    printf '| %s | %s | %s | %s | %s (%s / %s) | %s | %s | %s | %s / %s / %s / %s / %s / %s | %s |\n' \
        "$2" "${WALL[$n]}" "$mbps" "$(mib "${RSS[$n]}")" "${CPU[$n]}" "${USR[$n]}" "${SYS[$n]}" \
        "$pergib" "${GCPU[$n]}" "${r[0]}" "${r[1]}" "${r[2]}" "${r[3]}" "${r[4]}" "${r[5]}" "${r[6]}" "$others"
}
report() {
    local cpu_model
    cpu_model=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
    cat <<EOF

## chute bench: S3 (3-node Garage) against restic and a local directory

- machine: $(nproc) cores (${cpu_model:-unknown CPU}), $(uname -r); chute $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' + uncommitted src changes'), restic $RESTIC_VERSION, Garage $GARAGE_VERSION
- cluster: 3 Garage nodes on 127.0.0.1 (replication 3, consistent mode, lmdb, zone per node), every client talking to node 1; TCP_NODELAY shim: $SHIM_NOTE; all on this one machine, so Garage's CPU competes with the client's
- data set: $DATA, $DATA_BYTES bytes ($(calc '%.2f' "$GIB") GiB) in $FILES files: one large incompressible file and $BENCH_SMALL_FILES files of 1-64 KiB
- cache: $CACHE
- MB = 10^6 bytes; MB/s = data set bytes / wall seconds; client CPU = user + sys and peak RSS from /usr/bin/time -v; Garage CPU = utime + stime of its three processes over the run (/proc)
- requests: S3 requests the cluster logged during the run (Garage's per-request info line, three nodes summed; /metrics is absent from this Garage build); LIST = GET of the bucket (ListObjects), other = POST and anything else
- other work: "others' CPU s" is what the rest of the machine used during each run (/proc/stat minus client and Garage); load average before / after: $LOAD_BEFORE / $(cut -d' ' -f1-3 /proc/loadavg)
- stored (one replica, node 1's data_dir growth): chute $CHUTE_S3_STORED bytes, restic $RESTIC_S3_STORED bytes; chute directory store $CHUTE_DIR_STORED bytes
- Garage peak RSS per node over the bench (MiB): $GRSS

| run | wall s | MB/s | client peak RSS MiB | client CPU s (user / sys) | client CPU s/GiB | Garage CPU s | S3 requests | PUT / GET / LIST / HEAD / DELETE / other | others' CPU s |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
$(row chute-s3-init "chute init → Garage")
$(row chute-s3-sink "chute sink → Garage")
$(row chute-s3-restore "chute restore ← Garage")
$(row restic-s3-init "restic init → Garage")
$(row restic-s3-backup "restic backup → Garage")
$(row restic-s3-restore "restic restore ← Garage")
$(row chute-dir-init "chute init → local directory")
$(row chute-dir-sink "chute sink → local directory")
$(row chute-dir-restore "chute restore ← local directory")

Raw outputs (time -v reports, stdout, stderr; Garage logs garage-n*.log once the cluster stops): $RUN
EOF
}
report | tee "$BENCH_DIR/results.md"
say "report saved to $BENCH_DIR/results.md"
