# The two set-up commands: `make run` (the quickstart) and `make test` (everything CI runs).
CARGO ?= cargo

.PHONY: all build run test fmt-check clippy e2e conformance chart-test soak fuzz bench clean

all: build

build:
	$(CARGO) build --bins

## Run Weir on examples/quickstart with local echo backends (http :8080, https :8443, admin :9901).
run: build
	./examples/quickstart/run.sh

## Format check, clippy with warnings as errors, then every test (unit, integration, e2e),
## a 20 s soak, and each fuzz target for FUZZ_SECONDS.
test: fmt-check clippy
	$(CARGO) build --bins
	$(CARGO) test --workspace --all-targets
	$(MAKE) conformance
	$(MAKE) chart-test
	$(MAKE) soak SOAK_SECONDS=20
	$(MAKE) fuzz

fmt-check:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Only the end-to-end tests (real processes and sockets).
e2e:
	$(CARGO) build --bins
	$(CARGO) test -p weir-e2e

## Gateway API v1.6.1 conformance, then the Gateway API Inference Extension v1.6.0 suite, replayed
## in file mode (reads the vendored e2e/conformance/upstream/); writes both tables to
## docs/CONFORMANCE.md; fails if a claimed test fails or supportedFeatures differs from what passes.
conformance:
	$(CARGO) build --bins
	./target/debug/weir-conformance --markdown docs/CONFORMANCE.md

## Helm chart and Dockerfile checks (no cluster, no Docker): lint, render + assert, schemas, hadolint.
chart-test:
	charts/tests/run.sh

## Bounded soak (SOAK_SECONDS, default 180): load on loopback while routes, endpoints and
## certificates churn and a backend restarts; reports requests, errors by kind, RSS and open
## descriptors at start and end, and fails on an error where none may be, or on growth.
SOAK_SECONDS ?= 180
soak:
	$(CARGO) build --bins
	SOAK_SECONDS=$(SOAK_SECONDS) ./target/debug/weir-soak

## Fuzz targets (fuzz/, docs/FUZZING.md): build them (nightly + cargo-fuzz, no sanitizer, in
## target/fuzz), then run each for FUZZ_SECONDS from its seeds; a crash fails and leaves its
## input in fuzz/artifacts/TARGET/. `make fuzz FUZZ_TARGETS=path_normalise FUZZ_SECONDS=600`.
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_TARGETS="$(FUZZ_TARGETS)" FUZZ_TOOLCHAIN=$(FUZZ_TOOLCHAIN) \
		FUZZ_SANITIZER=$(FUZZ_SANITIZER) fuzz/run.sh

FUZZ_SECONDS ?= 25
FUZZ_TARGETS ?= yaml_to_snapshot path_normalise request_match
FUZZ_TOOLCHAIN ?= nightly
FUZZ_SANITIZER ?= none

## Side-by-side benchmark: Weir vs nginx vs HAProxy on loopback (installs wrk, h2load, nginx,
## haproxy from Debian if missing). BENCH_QUICK=1 for a smoke run; see bench/README.md.
bench:
	CARGO=$(CARGO) ./bench/run.sh

clean:
	$(CARGO) clean
