# snapmend: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test lint unit crds deps build bench

# Installs what the tests need (containerd, runc, kubectl check, static libc) when missing.
deps:
	bash scripts/install-test-deps.sh

build:
	$(CARGO) build --workspace --all-targets

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The test command: lint, then every unit, integration and end-to-end test.
# The binaries are built first: end-to-end tests run the real snapmend-operator and
# snapmend-node-helper, and `cargo test` only builds binaries of packages with integration tests.
# The crash tests abort the helper at chosen points: only test builds have that knob.
# tests/src/kubelet/scenario.rs (TEST_FEATURES) rebuilds the binaries with the same features
# when a test is run alone; under `make test` SNAPMEND_TEST_BINS_BUILT says they are built.
TEST_FEATURES := --features snapmend-node-helper/fault-injection

test: deps lint
	$(CARGO) build --workspace --bins $(TEST_FEATURES)
	SNAPMEND_TEST_BINS_BUILT=1 $(CARGO) test --workspace --no-fail-fast $(TEST_FEATURES)

# Regenerate the CRD YAML from the Rust types.
crds:
	SNAPMEND_UPDATE_CRDS=1 $(CARGO) test -p snapmend-crds --test crd_yaml_matches_types

demo: deps
	$(CARGO) build --release --workspace --bins
	./target/release/snapmend-demo

bench: deps
	bash bench/run.sh
