#!/usr/bin/env bash
# Build the container image of setup/Containerfile (chute serve, FROM scratch) from a
# static chute binary, with podman if it is installed, else buildah.
#
#   cross/image.sh PLATFORM BINARY TAG
#   cross/image.sh linux/arm/v7 target/cross/armv7-unknown-linux-gnueabihf/release/chute chute:armv7
#
# The build context is a temporary folder holding only the binary, never the checkout
# (whose target/ holds gigabytes). A FROM scratch build runs nothing inside the image,
# so it needs no emulator for a foreign platform, and buildah needs no runtime
# (--isolation chroot). CHUTE_IMAGE_FLAGS adds global options to the tool, e.g.
# "--root DIR --runroot DIR --storage-driver vfs" (tests/image.rs uses them).
set -euo pipefail

die() { printf 'cross/image.sh: %s\n' "$*" >&2; exit 1; }
if [ $# -ne 3 ]; then
	echo "usage: cross/image.sh PLATFORM BINARY TAG" >&2
	exit 2
fi
platform=$1 bin=$2 tag=$3
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

[ -f "$bin" ] || die "no binary at $bin"
# An image FROM scratch has no C library: a dynamically linked binary would not start.
# (CHUTE_IMAGE_DYNAMIC_OK=1 is for tests/image.rs, which packs the host's test binary
# to inspect the image, never to run it.)
if [ "${CHUTE_IMAGE_DYNAMIC_OK:-}" != 1 ] && command -v file >/dev/null; then
	case $(file -b "$bin") in
	*"statically linked"* | *"static-pie linked"*) ;;
	*) die "$bin is not statically linked (an image FROM scratch has no libc)" ;;
	esac
fi

read -ra global <<<"${CHUTE_IMAGE_FLAGS:-}"
if command -v podman >/dev/null; then
	tool=(podman "${global[@]}" build)
elif command -v buildah >/dev/null; then
	tool=(buildah "${global[@]}" build --isolation chroot)
else
	die "neither podman nor buildah is installed (as root: apt-get install podman)"
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/chute"
"${tool[@]}" --platform "$platform" -f "$ROOT/setup/Containerfile" -t "$tag" "$ctx"
