#!/usr/bin/env bash
# The single-core crypto ceiling (tests/ceiling.rs: seal, HMAC, chunker per MiB) of
# an ARM build, under qemu-user. The figures compare builds and CPU models with each
# other; they are not what a Pi does (qemu translates every instruction).
#
#   cross/ceiling.sh armv7|armv6|aarch64 [QEMU_CPU]     (CHUTE_CEILING_MIB, default 64)
#
# Builds the integration crate for the target with Debian's cargo (std rebuilt with
# unwinding, as cross/test-arm.sh does for the unit tests, whose std it shares) and
# runs only the ignored ceiling test under qemu with the given CPU model (default:
# build.sh's, cortex-a7 / arm1176 / cortex-a72). It builds in target/cross/ceiling:
# its unwinding build once replaced the release binary whose size build.sh checks.
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	echo "usage: cross/ceiling.sh armv7|armv6|aarch64 [QEMU_CPU]" >&2
	exit 2
fi
ARCH=$1
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=cross/build.sh
CHUTE_CROSS_ENV_ONLY=1 source cross/build.sh "$ARCH" >/dev/null
cpu=${2:-$QEMU_CPU_NAME}
BUILD_STD=(-Zbuild-std)
export CARGO_PROFILE_RELEASE_PANIC=unwind
# The integration crate's executable (deps/tests-HASH), not the chute binary it
# also builds: cargo reports the two in no fixed order.
test_bin=$(debian_cargo test --locked --release --test tests --no-run --message-format=json \
	--target "$TRIPLE" --target-dir "$TARGET_DIR/ceiling" "${BUILD_STD[@]}" |
	sed -n 's/.*"executable":"\([^"]*\/deps\/tests-[^"]*\)".*/\1/p' | tail -n 1)
[ -n "$test_bin" ] || die "no test binary built"
echo "==> $QEMU -cpu $cpu ${test_bin##*/} --ignored ceiling:: (CHUTE_CEILING_MIB=${CHUTE_CEILING_MIB:=64})"
CHUTE_CEILING_MIB=$CHUTE_CEILING_MIB "$QEMU" -cpu "$cpu" "$test_bin" --ignored --nocapture --test-threads 1 ceiling::
