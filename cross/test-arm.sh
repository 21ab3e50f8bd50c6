#!/usr/bin/env bash
# Run chute's tests against an ARM build, under qemu-user.
#
#   cross/test-arm.sh [armv7|armv6|aarch64]      (default armv7)
#
# 1. builds the ARM binary (cross/build.sh);
# 2. runs the integration tests on the host with rustup's cargo, pointed at the ARM
#    binary through CHUTE_TEST_BIN and CHUTE_TEST_RUNNER (tests/ helpers honour both:
#    qemu-user without binfmt cannot exec an ARM binary by itself, exit status 127);
# 3. builds the unit tests for ARM with Debian's cargo and runs them under qemu
#    (CARGO_TARGET_<TRIPLE>_RUNNER). Doctests are skipped under --target on 1.85.
set -euo pipefail

ARCH=${1:-armv7}
case $ARCH in
armv7 | armv6 | aarch64) ;;
*)
	echo "usage: cross/test-arm.sh [armv7|armv6|aarch64]" >&2
	exit 2
	;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
say() { printf '==> %s\n' "$*"; }
start=$SECONDS

# --- 1. the binary -------------------------------------------------------------------
cross/build.sh "$ARCH"
# The binary and its qemu (with the CPU model) as build.sh names them.
{
	read -r BIN
	read -r RUNNER
} < <(CHUTE_CROSS_ENV_ONLY=1 bash -c 'source cross/build.sh "$1" >/dev/null && printf "%s\n%s\n" "$BIN" "$QEMU -cpu $QEMU_CPU_NAME"' _ "$ARCH")

# --- 2. integration tests on the host, against the ARM binary ----------------------------
shopt -s nullglob
itests=(tests/*.rs)
if [ ${#itests[@]} -eq 0 ]; then
	say "no integration tests in tests/: skipped"
else
	if ! grep -rqs CHUTE_TEST_BIN tests/; then
		printf 'cross/test-arm.sh: warning: nothing in tests/ reads CHUTE_TEST_BIN, so the run below tests the HOST binary, not the ARM one\n' >&2
	fi
	say "integration tests (host cargo) with CHUTE_TEST_BIN=$BIN CHUTE_TEST_RUNNER=\"$RUNNER\""
	# Plain rustup cargo with the same flags as `make test`, so target/release is reused
	# rather than rebuilt; only the two variables differ. The S3 client's tests drive the
	# host-built library against real servers, not the binary: `make test` ran them.
	CHUTE_TEST_BIN=$BIN CHUTE_TEST_RUNNER=$RUNNER cargo test --locked --release --test '*' -- --skip s3_client
fi

# --- 3. unit tests built for ARM, run under qemu -------------------------------------------
# In a subshell: build.sh's environment (opt-level, RUSTC_BOOTSTRAP, ...) stays
# out of step 2 and of the caller.
(
	# shellcheck source=cross/build.sh
	CHUTE_CROSS_ENV_ONLY=1 source cross/build.sh "$ARCH" >/dev/null
	if [ -f src/lib.rs ]; then what=(--lib); else what=(--bins); fi
	# The test harness needs libtest and unwinding: let cargo pick the default set of
	# std crates. And cargo always builds a test harness with unwinding, so with the
	# release profile's panic=abort it would build std twice, and rustc stops at two
	# copies of core (E0152 "duplicate lang item"): unwind throughout.
	BUILD_STD=(-Zbuild-std)
	export CARGO_PROFILE_RELEASE_PANIC=unwind
	say "unit tests (${what[*]}) for $TRIPLE under $RUNNER"
	debian_cargo test --locked --release "${what[@]}" \
		--target "$TRIPLE" --target-dir "$TARGET_DIR" "${BUILD_STD[@]}"
)

# shellcheck disable=SC2031 # the subshell above sourced build.sh; these are ours
say "ARM tests passed for $ARCH in $((SECONDS - start)) s"
