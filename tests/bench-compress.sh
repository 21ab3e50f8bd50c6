#!/usr/bin/env bash
# What compression saves, against restic on the same tree (issue 20, item 4):
# `make bench-compress` (also run by `make bench`; not part of `make test`; a minute).
#
# Builds a mixed tree once, BENCH_COMPRESS_MIB MiB (default 64) of each of five kinds,
# from what a Debian machine that built chute holds:
#   text    Rust sources and docs of the crates in cargo's registry (~/.cargo/registry/src)
#   logs    syslog-style lines, generated from a fixed seed
#   sqlite  a SQLite database of generated rows (python3's sqlite3)
#   libs    the machine's shared libraries (/usr/lib/<triple>/*.so*)
#   random  the kernel's generator (incompressible)
# then backs it up into empty stores with chute (--compression auto, the default, and
# off) and restic 0.14 (repository version 2, its default compression auto), and
# prints one markdown table: bytes stored (the store directory's size on disk, du -b),
# as a ratio to the tree, with wall time, CPU (user + sys) and peak RSS from
# /usr/bin/time. Each store is restored to check it (chute restore, restic restore;
# diff -r outside the timing).
#
# Settings (environment): BENCH_DIR (default /tmp/chute-bench; the tree is kept and
# reused while its marker matches), BENCH_COMPRESS_MIB, BIN (default
# target/release/chute, built first), CARGO. Needs restic (`make bench-deps`).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/chute-bench}
MIB=${BENCH_COMPRESS_MIB:-64}
CARGO=${CARGO:-cargo}

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'bench-compress: %s\n' "$*" >&2
    exit 1
}

[[ $MIB =~ ^[1-9][0-9]*$ ]] || die "BENCH_COMPRESS_MIB: $MIB is not a number of MiB"
command -v restic >/dev/null || die "missing restic: run make bench-deps as root"
if [[ -z ${BIN:-} ]]; then
    (cd "$ROOT" && "$CARGO" build --release --quiet) || die "cannot build chute"
    BIN=$ROOT/target/release/chute
fi
[[ -x $BIN ]] || die "no binary $BIN"
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
TREE=$BENCH_DIR/mixed
RUN=$(mktemp -d "$BENCH_DIR/compress.XXXXXX")
trap 'rm -rf "$RUN"' EXIT

# The tree: each part is cut at MIB MiB; file order is sorted, so a machine with the
# same registry and libraries makes the same tree.
want="mixed_mib=$MIB layout=1"
if [[ -d $TREE && -f $TREE.ok ]] && [[ $(head -n1 "$TREE.ok") == "$want" ]]; then
    say "reusing mixed tree $TREE ($want)"
else
    say "generating mixed tree $TREE ($want)"
    rm -rf "$TREE" "$TREE.ok"
    mkdir -p "$TREE"
    python3 - "$TREE" "$MIB" "$HOME/.cargo/registry/src" <<'EOF' || die "cannot generate $TREE"
import os, random, shutil, sqlite3, sys, sysconfig

tree, mib, registry = sys.argv[1], int(sys.argv[2]), sys.argv[3]
limit = mib << 20

def copy_files(part, paths):
    """Copies PATHS (sorted) into TREE/PART until the part holds LIMIT bytes."""
    total = 0
    for i, src in enumerate(paths):
        size = os.path.getsize(src)
        if total + size > limit:
            continue
        dst = os.path.join(tree, part, "d%d" % (i // 100), os.path.basename(src))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.exists(dst):
            shutil.copyfile(src, dst)
            total += size
    if total < limit // 2:
        sys.exit("%s: found only %d bytes to copy" % (part, total))

text = sorted(os.path.join(d, f) for d, _, fs in os.walk(registry) for f in fs
              if f.endswith((".rs", ".md", ".toml", ".txt")) and not os.path.islink(os.path.join(d, f)))
copy_files("text", text)
libdir = "/usr/lib/" + (sysconfig.get_config_var("MULTIARCH") or "")
libs = sorted(os.path.join(libdir, f) for f in os.listdir(libdir)
              if ".so" in f and os.path.isfile(os.path.join(libdir, f)) and not os.path.islink(os.path.join(libdir, f)))
copy_files("libs", libs)

rng = random.Random(20)
os.makedirs(os.path.join(tree, "logs"))
hosts = ["pi%d" % i for i in range(8)]
daemons = ["sshd", "cron", "kernel", "systemd", "dhcpcd", "chute", "nginx", "postfix"]
words = "accepted failed session opened closed for user root pi from port started stopped reloading connection timeout".split()
for n in range(max(1, mib // 8)):
    with open(os.path.join(tree, "logs", "syslog.%d" % n), "w") as f:
        written, t = 0, 1700000000 + n * 86400
        while written < limit // max(1, mib // 8):
            t += rng.randint(0, 30)
            line = "%d %s %s[%d]: %s %d.%d.%d.%d\n" % (
                t, rng.choice(hosts), rng.choice(daemons), rng.randint(100, 32000),
                " ".join(rng.choice(words) for _ in range(rng.randint(3, 9))),
                10, rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254))
            f.write(line)
            written += len(line)

os.makedirs(os.path.join(tree, "sqlite"))
db = sqlite3.connect(os.path.join(tree, "sqlite", "app.db"))
db.execute("create table readings (id integer primary key, sensor text, at integer, value real, note text)")
i = 0
while os.path.getsize(os.path.join(tree, "sqlite", "app.db")) < limit:
    rows = [(i + k, "sensor-%d" % rng.randint(0, 50), 1700000000 + (i + k) * 60,
             rng.gauss(20, 5), rng.choice(words) + " " + rng.choice(words)) for k in range(20000)]
    db.executemany("insert into readings values (?, ?, ?, ?, ?)", rows)
    db.commit()
    i += 20000
db.close()

os.makedirs(os.path.join(tree, "random"))
with open(os.path.join(tree, "random", "random.bin"), "wb") as f:
    f.write(os.urandom(limit))
EOF
    printf '%s\n%s\n' "$want" "$(du -sb "$TREE" | cut -f1)" >"$TREE.ok"
fi
TREE_BYTES=$(sed -n 2p "$TREE.ok")
parts=$(for p in "$TREE"/*; do printf '%s %s MiB, ' "${p##*/}" "$(($(du -sb "$p" | cut -f1) >> 20))"; done)

ROWS=""
# timed NAME CMD...: runs CMD under /usr/bin/time; leaves "wall cpu kib" in $RUN/NAME.
timed() {
    local name=$1
    shift
    /usr/bin/time -f '%e %U %S %M' -o "$RUN/$name.time" "$@" >"$RUN/$name.out" 2>"$RUN/$name.err" || {
        tail -n 5 "$RUN/$name.err" >&2
        die "$name failed: $*"
    }
    awk '{ printf "%s %.2f %d\n", $1, $2 + $3, $4 }' "$RUN/$name.time" >"$RUN/$name"
}
# row TOOL NAME STORE: a table row for run NAME, which filled STORE.
row() {
    local stored wall cpu kib
    stored=$(du -sb "$3" | cut -f1)
    read -r wall cpu kib <"$RUN/$2"
    say "$1: $stored bytes stored, $wall s, $cpu CPU-s"
    ROWS+=$(awk -v t="$1" -v s="$stored" -v d="$TREE_BYTES" -v w="$wall" -v c="$cpu" -v k="$kib" \
        'BEGIN { printf "| %s | %.1f | %.3f | %s | %s | %.1f |", t, s / 1048576, s / d, w, c, k / 1024 }')$'\n'
}
check_restore() {
    diff -r -q "$TREE" "$1$TREE" >/dev/null || die "$2: the restored tree differs from $TREE"
}

for mode in auto off; do
    home=$RUN/home-$mode
    mkdir -p "$home"
    chute=(env -i PATH="$PATH" HOME="$home" CHUTE_CONFIG=/dev/null CHUTE_DOMAIN=bench CHUTE_NODE=bench "$BIN")
    "${chute[@]}" init >/dev/null 2>&1
    sync
    timed "chute-$mode" "${chute[@]}" sink -q --compression "$mode" "$TREE"
    row "chute, --compression $mode" "chute-$mode" "$home/.local/share/chute/store"
    "${chute[@]}" restore -q latest --to "$RUN/out-$mode" || die "chute restore ($mode) failed"
    check_restore "$RUN/out-$mode" "chute ($mode)"
    rm -rf "$RUN/out-$mode"
done

export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$RUN/restic-cache
restic --repo "$RUN/restic" init >/dev/null 2>&1 || die "restic init failed"
restic --repo "$RUN/restic" cat config | grep -q '"version": *2' ||
    die "restic made a repository without compression (version 1)"
sync
timed restic-backup restic --repo "$RUN/restic" backup --quiet "$TREE"
row "restic $(restic version | cut -d' ' -f2), compression auto (zstd)" restic-backup "$RUN/restic"
restic --repo "$RUN/restic" restore latest --target "$RUN/out-restic" >/dev/null || die "restic restore failed"
check_restore "$RUN/out-restic" restic

cat <<EOF

## Compression against restic on a mixed tree (issue 20, item 4)

$(date -u +%Y-%m-%d), $(nproc) cores, $(uname -m); \`make bench-compress\` (BENCH_COMPRESS_MIB=$MIB): a tree of $(awk "BEGIN { printf \"%.1f\", $TREE_BYTES / 1048576 }") MiB (${parts%, }), backed up into an empty store by each; stored = du -b of the store; warm page cache; restores checked with diff -r.

| tool | stored MiB | stored / data | wall s | CPU s (user + sys) | peak RSS MiB |
| --- | ---: | ---: | ---: | ---: | ---: |
${ROWS}
EOF
