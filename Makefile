# chute: everything a developer or a Pi owner runs goes through here.
CARGO ?= cargo

.PHONY: all build test check bench

all: build

build:
	$(CARGO) build --release

# The one command README names and .ci/run calls.
test:
	$(CARGO) test --release

check:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(MAKE) test
