# The two set-up commands: `make run` (the quickstart) and `make test` (everything CI runs).
CARGO ?= cargo

.PHONY: all build run test fmt-check clippy unit e2e conformance bench clean

all: build

build:
	$(CARGO) build --bins

## Run Weir on examples/quickstart with local echo backends (http :8080, https :8443, admin :9901).
run: build
	./examples/quickstart/run.sh

## Format check, clippy with warnings as errors, then every test (unit, integration, e2e).
test: fmt-check clippy
	$(CARGO) build --bins
	$(CARGO) test --workspace --all-targets

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Only the end-to-end tests (real processes and sockets).
e2e:
	$(CARGO) build --bins
	$(CARGO) test -p weir-e2e

clean:
	$(CARGO) clean
