#!/usr/bin/env bash
# Build a static, stripped `chute` for a Raspberry Pi on a Debian 12 x86_64 machine.
#
#   cross/build.sh armv7   # Pi 2/3/4, Zero 2 in 32-bit mode: armv7-unknown-linux-gnueabihf
#   cross/build.sh armv6   # Pi Zero / Zero W / 1 (and every later Pi): arm-unknown-linux-gnueabi
#   cross/build.sh aarch64 # Pi 3/4/5, Zero 2 with the 64-bit OS: aarch64-unknown-linux-gnu
#
# Why Debian's toolchain and not rustup: rustup cannot download targets here. Debian's
# rustc-web 1.85 ships std's source (rust-web-src): every target rebuilds std with
# -Zbuild-std, in Thumb-2 on armv7 and without the backtrace symbolizer.
# It is only ever called by absolute path, per command, so rustup's stable stays the
# host's default. See shared/ARM32.md for the facts this script rests on.
#
# The first run installs the apt packages (pinned); later runs skip that. Output goes to target/cross/ so that Debian's cargo
# never shares a target dir with rustup's cargo.
#
# Environment:
#   CHUTE_OPT_LEVEL   override the measured opt-level (s) for an experiment
#   CHUTE_SKIP_QEMU=1 do not run the binary under qemu at the end
set -euo pipefail

# The one Debian rustc-web version whose amd64 compiler and std source match each other.
# bookworm-security carries 1.96 for amd64 only: never let apt pick it.
RUST_VERSION=1.85.0+dfsg3-1~deb12u3
RUST_MINOR=1.85
MUSL_VERSION=1.2.3-1 # Debian 12's musl, for the aarch64 build
MAX_BYTES=2097152 # 2 MiB: the size budget for the armv7 and aarch64 release binaries

# opt-level, measured on chute itself (commit 9f313cb), armv7, with the Cargo.toml
# release profile (lto, codegen-units=1, panic=abort, strip). Speed: tests/ceiling.rs
# (64 MiB, one core) under qemu-arm -cpu cortex-a7, s and 3 three runs each on a shared 2-core
# machine, so only large differences count (and qemu is not a Pi).
#   opt-level   size (bytes)   seal (MB/s)   seal+hmac+chunker (MB/s)
#   3           1,861,664      73-106        38-50
#   s           1,656,872      65-81         39-44
#   z           1,542,184      13            12
# "s" is 11% smaller than 3 at the same speed within the noise, and leaves ~430 KiB
# of the 2 MiB budget where 3 leaves ~230 KiB. "z" is 7% smaller again but seals
# (XChaCha20-Poly1305) 4-6x slower, and on a Pi's slow cores sink is CPU-bound
# on exactly that. (An earlier probe of the bare dependencies agreed: 1.36/1.23/1.19
# MB, and z made the AEAD ~7x slower.)
OPT_LEVEL=${CHUTE_OPT_LEVEL:-s}

die() { printf 'cross/build.sh: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }

usage() {
	echo "usage: cross/build.sh armv7|armv6|aarch64" >&2
	exit 2
}

[ $# -eq 1 ] || usage
ARCH=$1
case $ARCH in
armv7)
	TRIPLE=armv7-unknown-linux-gnueabihf
	GNU=arm-linux-gnueabihf
	QEMU_CPU_NAME=cortex-a7
	QEMU=qemu-arm-static
	PACKAGES=(
		"rustc-web=$RUST_VERSION" "cargo-web=$RUST_VERSION"
		"libstd-rust-web-dev=$RUST_VERSION" "libstd-rust-web-$RUST_MINOR=$RUST_VERSION"
		"rust-web-src=$RUST_VERSION"
		gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user-static file
	)
	;;
armv6)
	# Debian's armhf glibc is ARMv7/Thumb-2 (SIGILL on an ARMv6 core); armel's is
	# ARMv5TE, so the soft-float target with std rebuilt from source runs everywhere.
	TRIPLE=arm-unknown-linux-gnueabi
	GNU=arm-linux-gnueabi
	QEMU_CPU_NAME=arm1176
	QEMU=qemu-arm-static
	PACKAGES=(
		"rustc-web=$RUST_VERSION" "cargo-web=$RUST_VERSION"
		"libstd-rust-web-dev=$RUST_VERSION" "libstd-rust-web-$RUST_MINOR=$RUST_VERSION"
		"rust-web-src=$RUST_VERSION"
		gcc-arm-linux-gnueabi libc6-dev-armel-cross qemu-user-static file
	)
	;;
aarch64)
	# The 64-bit Raspberry Pi OS, with musl as the C library: static glibc made
	# 2,435,456 bytes (its getaddrinfo alone drags in NSS and dlopen, ~730 KB of
	# a C hello-world on arm64), over the 2 MiB budget; musl made 1,771,032 at
	# 685d76a. Std is rebuilt from rust-web-src as for the other targets; musl's
	# libc.a and start files come from Debian's musl-dev:arm64 (musl_sysroot below).
	# Tested as a Pi 4 (cortex-a72, as on the BCM2711: NEON, no ARMv8 crypto
	# extensions); a Pi 5's cortex-a76 adds the SHA-2 instructions sha2 detects
	# at run time.
	TRIPLE=aarch64-unknown-linux-musl
	GNU=aarch64-linux-gnu
	QEMU_CPU_NAME=cortex-a72
	QEMU=qemu-aarch64-static
	PACKAGES=(
		"rustc-web=$RUST_VERSION" "cargo-web=$RUST_VERSION"
		"libstd-rust-web-dev=$RUST_VERSION" "libstd-rust-web-$RUST_MINOR=$RUST_VERSION"
		"rust-web-src=$RUST_VERSION"
		gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static file
	)
	;;
*) usage ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [ ! -f Cargo.toml ] || [ ! -f Cargo.lock ]; then
	die "run from a chute checkout (no Cargo.toml/Cargo.lock in $ROOT)"
fi

TARGET_DIR=$ROOT/target/cross
TRIPLE_ENV=$(printf '%s' "$TRIPLE" | tr 'a-z-' 'A-Z_') # ARMV7_UNKNOWN_LINUX_GNUEABIHF
TRIPLE_CC=${TRIPLE//-/_}                               # armv7_unknown_linux_gnueabihf
BIN=$TARGET_DIR/$TRIPLE/release/chute

# --- privileges -----------------------------------------------------------------------
as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		die "need root to run: $* (or install it by hand)"
	fi
}

APT_UPDATED=
apt_update() {
	[ -z "$APT_UPDATED" ] || return 0
	say "apt-get update"
	# The bookworm-security armhf index may fail with "File has unexpected size":
	# tolerate it here; what matters is checked next (the pinned version resolves).
	as_root apt-get update -q || printf 'cross/build.sh: warning: apt-get update reported errors; continuing\n' >&2
	APT_UPDATED=1
}

# "installed at the right version" for pkg or pkg=version
is_installed() {
	local name=${1%%=*} want='' got
	[ "$name" = "$1" ] || want=${1#*=}
	got=$(dpkg-query -W -f='${db:Status-Abbrev}|${Version}' "$name" 2>/dev/null) || return 1
	case $got in
	[ih]"i |"*) ;; # wanted installed or held, and installed
	*) return 1 ;;
	esac
	[ -z "$want" ] || [ "${got#*|}" = "$want" ]
}

# "apt can offer exactly this version" for pkg=version (pkg may carry :arch)
version_resolves() {
	local name=${1%%=*} want=${1#*=}
	apt-cache madison "$name" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$want"
}

# --- 1. apt packages --------------------------------------------------------------------
install_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		is_installed "$p" || missing+=("$p")
	done
	if [ ${#missing[@]} -eq 0 ]; then
		say "apt packages present (rustc-web $RUST_VERSION)"
	else
		apt_update
		for p in "${missing[@]}"; do
			case $p in
			*=*) version_resolves "$p" || die "apt cannot find $p (check /etc/apt/sources.list has bookworm main)" ;;
			esac
		done
		say "apt-get install ${missing[*]}"
		as_root env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -q --no-install-recommends --allow-downgrades "${missing[@]}"
	fi
	# Hold the pinned compiler: an `apt-get upgrade` to bookworm-security's 1.96 would
	# split the host compiler from the 1.85 ARM std and break every later build.
	local held want=() name
	held=$(apt-mark showhold 2>/dev/null || true)
	for p in "${PACKAGES[@]}"; do
		case $p in
		*=*)
			name=${p%%=*}
			grep -qxF "$name" <<<"$held" || want+=("$name")
			;;
		esac
	done
	if [ ${#want[@]} -gt 0 ]; then
		say "apt-mark hold ${want[*]} (keep rustc-web at $RUST_VERSION)"
		as_root apt-mark hold "${want[@]}" >/dev/null
	fi

	local v
	v=$(/usr/bin/rustc --version) || die "/usr/bin/rustc does not run"
	case $v in
	"rustc $RUST_MINOR."*) ;;
	*) die "/usr/bin/rustc is '$v', need $RUST_MINOR (apt-get install rustc-web=$RUST_VERSION)" ;;
	esac
}

# musl for aarch64: Debian's musl-dev:arm64 holds libc.a and the start files. It is
# downloaded and unpacked, never installed (as ARM32.md says of foreign std packages),
# into a private directory the linker searches first; the gcc cross compiler adds
# crtbegin/crtend and libgcc, whose unwinder (libgcc_eh) stands in for the
# libunwind.a Rust's musl targets link (Rust's own copy ships only with rustup's
# prebuilt std). The link is then musl's, start files included (rustc passes
# -nostartfiles and -nodefaultlibs for a self-contained musl link).
MUSL_SYSROOT=
musl_sysroot() {
	MUSL_SYSROOT=$TARGET_DIR/musl-$TRIPLE
	[ -f "$MUSL_SYSROOT/libc.a" ] && [ -f "$MUSL_SYSROOT/.version-$MUSL_VERSION-2" ] && return 0
	local pkg="musl-dev:arm64=$MUSL_VERSION" tmp gccdir
	if ! dpkg --print-foreign-architectures | grep -qx arm64; then
		say "dpkg --add-architecture arm64 (to download musl-dev:arm64; nothing arm64 is installed)"
		as_root dpkg --add-architecture arm64
		APT_UPDATED=
	fi
	version_resolves "$pkg" || apt_update
	version_resolves "$pkg" || die "apt cannot find $pkg"
	tmp=$(mktemp -d)
	say "apt-get download $pkg"
	(cd "$tmp" && apt-get download -q "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
	dpkg-deb -x "$tmp"/musl-dev_*_arm64.deb "$tmp/root" || die "cannot unpack $pkg"
	gccdir=$("$GNU-gcc" -print-file-name=crtbegin.o)
	gccdir=${gccdir%/*}
	rm -rf "$MUSL_SYSROOT"
	mkdir -p "$MUSL_SYSROOT"
	cp "$tmp"/root/usr/lib/aarch64-linux-musl/{crt1.o,crti.o,crtn.o,libc.a} "$MUSL_SYSROOT/"
	cp "$gccdir"/{crtbegin.o,crtend.o,libgcc.a} "$MUSL_SYSROOT/"
	cp "$gccdir/libgcc_eh.a" "$MUSL_SYSROOT/libunwind.a"
	# GCC 12's unwinder calls glibc's _dl_find_object: see cross/dl_find_object.c.
	"$GNU-gcc" -O2 -c "$ROOT/cross/dl_find_object.c" -o "$tmp/dl_find_object.o"
	"$GNU-ar" rs "$MUSL_SYSROOT/libunwind.a" "$tmp/dl_find_object.o"
	touch "$MUSL_SYSROOT/.version-$MUSL_VERSION-2"
	rm -rf "$tmp"
}

# --- 2. build -----------------------------------------------------------------------------
# Exported so that test-arm.sh can source this file and run `cargo test` with the same
# settings. Everything is scoped to the ARM triple or to this process: rustup's cargo in
# another shell is unaffected.
cross_env() {
	local rustflags="-C target-feature=+crt-static"
	# armv7: chute, its crates and std in Thumb-2, as Rust's own thumbv7neon target
	# does: chute in Thumb-2 made 1,767,464 bytes where ARM code was 2,132,008
	# (commit 1fa9caa), for ~8% slower sink and ~5% slower restore of 64 MiB on one
	# thread under qemu cortex-a7 (not measured on a Pi). rustc 1.85 calls the feature
	# unstable and warns; it is LLVM's ARM feature. Linked by gold with identical code
	# folding (--icf=all: functions with the same machine code kept once, mostly
	# monomorphized copies): 2,087,256 bytes where GNU ld made 2,099,544 (commit after
	# cd0d428). The whole integration suite runs on this binary under qemu.
	[ "$ARCH" = armv7 ] && rustflags="$rustflags -C target-feature=+thumb-mode -C link-arg=-fuse-ld=gold -C link-arg=-Wl,--icf=all"
	# aarch64: musl's libc.a and start files first (musl_sysroot); libgcc last, for
	# what its unwinder needs.
	[ "$ARCH" = aarch64 ] && rustflags="$rustflags -L $MUSL_SYSROOT -C link-arg=-lgcc"
	export "CARGO_TARGET_${TRIPLE_ENV}_LINKER=$GNU-gcc"
	export "CARGO_TARGET_${TRIPLE_ENV}_RUSTFLAGS=$rustflags"
	export "CARGO_TARGET_${TRIPLE_ENV}_RUNNER=$QEMU -cpu $QEMU_CPU_NAME"
	export "CC_${TRIPLE_CC}=$GNU-gcc" "AR_${TRIPLE_CC}=$GNU-ar"
	export CARGO_PROFILE_RELEASE_OPT_LEVEL=$OPT_LEVEL
	# A global RUSTFLAGS would replace the target-scoped flags above (and so drop
	# +crt-static and Thumb-2): the cross build must not see it.
	unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_BUILD_TARGET
	# Every target rebuilds std from Debian's rust-web-src (-Zbuild-std, an unstable
	# cargo feature), with no std features: that drops the "backtrace" feature cargo
	# turns on by default (gimli, addr2line, miniz_oxide and a demangler: a panic
	# still prints its message and location, only without a symbolized backtrace),
	# and on armv7 it builds std in Thumb-2 too, where Debian's prebuilt armhf std is
	# ARM code. armv7: 1,730,872 bytes where the prebuilt std made 2,091,352 (commit
	# 4218d8b).
	export RUSTC_BOOTSTRAP=1
	BUILD_STD=("-Zbuild-std=std,panic_abort" "-Zbuild-std-features=")
}

# Debian's cargo with Debian's rustc, by absolute path. Without RUSTC, Debian's cargo
# would find rustup's rustc on PATH and fail with E0514. --locked: cargo 1.85 must
# never rewrite the Cargo.lock that rustup's cargo also uses.
debian_cargo() {
	RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc /usr/bin/cargo "$@"
}

build() {
	say "building chute for $TRIPLE (opt-level=$OPT_LEVEL, static, stripped)"
	local start=$SECONDS
	debian_cargo build --locked --release --bin chute \
		--target "$TRIPLE" --target-dir "$TARGET_DIR" "${BUILD_STD[@]}"
	say "build took $((SECONDS - start)) s"
}

check_binary() {
	[ -x "$BIN" ] || die "no binary at $BIN"
	local desc size
	desc=$(file -b "$BIN")
	size=$(stat -c %s "$BIN")
	echo
	echo "binary: $BIN"
	echo "file:   $desc"
	echo "size:   $size bytes"
	case $desc in
	*"statically linked"*) ;;
	*) die "binary is not statically linked" ;;
	esac
	case $desc in
	*"not stripped"*) die "binary is not stripped" ;;
	esac
	if [ "$ARCH" != armv6 ] && [ "$size" -gt "$MAX_BYTES" ]; then
		die "$ARCH binary is $size bytes, over the $MAX_BYTES-byte (2 MiB) budget"
	fi
	if [ "$ARCH" = armv6 ] && [ "$size" -gt "$MAX_BYTES" ]; then
		# Expected: the soft-float std is bigger. Worth knowing, not worth failing.
		printf 'cross/build.sh: note: armv6 binary is over 2 MiB (%s bytes)\n' "$size" >&2
	fi
	if [ "${CHUTE_SKIP_QEMU:-}" != 1 ]; then
		say "$QEMU -cpu $QEMU_CPU_NAME chute --help"
		"$QEMU" -cpu "$QEMU_CPU_NAME" "$BIN" --help ||
			die "the binary did not run under $QEMU -cpu $QEMU_CPU_NAME (status $?)"
		say "ok: runs under qemu ($QEMU_CPU_NAME)"
	fi
}

install_packages
[ "$ARCH" != aarch64 ] || musl_sysroot
cross_env
# test-arm.sh sources this file for the environment and stops here.
if [ "${CHUTE_CROSS_ENV_ONLY:-}" = 1 ]; then return 0; fi
build
check_binary
