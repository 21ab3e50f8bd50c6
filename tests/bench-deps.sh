#!/usr/bin/env bash
# What `make bench` needs, on Debian 12 (bookworm): `make bench-deps`, as root.
#
# - apt: time (GNU /usr/bin/time -v), procps (pgrep), restic (bookworm ships 0.14.0),
#   perl (the many-files generator), libsodium-dev and pkg-config (bupstash links
#   libsodium);
# - bupstash from crates.io (`cargo install --locked`, one build job) into
#   BENCH_TOOLS (default ~/.cache/chute-bench), whose bin/ tests/bench.sh puts on
#   PATH. A second run finds it there and builds nothing.
#
# borg is not installed: the bench does not run it (Debian's borgbackup 1.2.4
# would install in seconds if a borg row is ever added).
set -euo pipefail

BENCH_TOOLS=${BENCH_TOOLS:-$HOME/.cache/chute-bench}
CARGO=${CARGO:-cargo}
BUPSTASH_VERSION=0.12.0

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'bench-deps: %s\n' "$*" >&2
    exit 1
}

[[ $(id -u) == 0 ]] || die "run as root (apt-get install): sudo make bench-deps"
say "apt: time procps restic perl libsodium-dev pkg-config"
# A partial failure (a mirror mid-sync for some other architecture) need not stop
# the install: the lists that did download may hold what we need.
apt-get update -qq || say "apt-get update reported errors; trying the install anyway"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    time procps restic perl libsodium-dev pkg-config >/dev/null

if [[ -x $BENCH_TOOLS/bin/bupstash ]] &&
    [[ $("$BENCH_TOOLS/bin/bupstash" version) == "bupstash-$BUPSTASH_VERSION" ]]; then
    say "bupstash $BUPSTASH_VERSION already in $BENCH_TOOLS/bin"
else
    command -v "$CARGO" >/dev/null || die "no $CARGO to build bupstash with (rustup or apt-get install cargo)"
    say "cargo install bupstash $BUPSTASH_VERSION into $BENCH_TOOLS (one build job; minutes)"
    CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} "$CARGO" install --locked --quiet \
        --root "$BENCH_TOOLS" --version "$BUPSTASH_VERSION" bupstash
fi
say "ready: $(restic version | cut -d' ' -f1-2), $("$BENCH_TOOLS/bin/bupstash" version)"
