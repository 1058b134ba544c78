# One entry point for people and CI. Needs: Rust (cargo), Python >= 3.11, make.
# Everything else is installed into .venv from PyPI and crates.io.

VENV    ?= .venv
PY      := $(VENV)/bin/python
BIN     := $(VENV)/bin
DEPS    := $(VENV)/.deps
PYFILES := python tests benchmarks examples

.PHONY: all dev build test test-rust test-python test-fast fuzz-smoke fuzz-long lint lint-rust \
	lint-python stubtest msrv demo bench clean netns-tools

all: test

$(DEPS): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "maturin>=1.9,<2"
	touch $(DEPS)

# Build the extension (release profile: optimised crypto) and install it with the dev tools.
build: $(DEPS)
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --release --extras dev,bench

dev: build

# Lints: Rust needs no build of the extension; Python needs the dev tools (ruff, mypy); the
# stub check imports the built extension.
lint: lint-rust lint-python stubtest

lint-rust:
	cargo fmt --check
	cargo fmt --check --manifest-path fuzz/Cargo.toml
	cargo clippy --all-targets --features python,rustcrypto -- -D warnings

# The dev tools alone (the `dev` and `bench` extras of pyproject.toml: mypy checks the
# benchmarks too), without building the extension.
DEVTOOLS := $(VENV)/.devtools
$(DEVTOOLS): $(DEPS) pyproject.toml
	$(PY) -c "import tomllib; x = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']; print(*x['dev'], *x['bench'], sep='\n')" \
		| xargs $(PY) -m pip install --quiet
	touch $(DEVTOOLS)

lint-python: $(DEVTOOLS)
	$(BIN)/ruff check $(PYFILES)
	$(BIN)/ruff format --check $(PYFILES)
	$(BIN)/mypy

stubtest: build
	$(PY) -m mypy.stubtest argonlink._argonlink

# The declared minimum Rust version (Cargo.toml `rust-version`) still builds the crate. Needs
# rustup, which fetches that toolchain once; skipped, saying so, where it cannot.
MSRV := $(shell sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
msrv:
	@if ! command -v rustup >/dev/null 2>&1; then \
		echo "rustup is not installed: MSRV $(MSRV) not checked"; \
	elif ! rustup toolchain install $(MSRV) --profile minimal >/dev/null 2>&1; then \
		echo "the $(MSRV) toolchain could not be installed: MSRV not checked"; \
	else \
		cargo +$(MSRV) check --lib --features python,rustcrypto --target-dir target/msrv; \
	fi

test-rust:
	cargo test --features rustcrypto
	cargo test --lib --no-default-features --features rustcrypto

# tests/test_netns.py needs iproute2 (ip, tc), nftables (nft) and root, and skips without them.
# Where one is missing, we are root and apt-get exists (CI: Debian), install it; never fail.
NETNS_PACKAGES := iproute2 nftables
netns-tools:
	@if { ! command -v ip >/dev/null 2>&1 || ! command -v nft >/dev/null 2>&1; } \
	    && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing $(NETNS_PACKAGES) for tests/test_netns.py"; \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(NETNS_PACKAGES) >/dev/null 2>&1 \
		  || { apt-get update -qq >/dev/null 2>&1 \
		       && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(NETNS_PACKAGES) >/dev/null 2>&1; }; } \
		|| echo "could not install $(NETNS_PACKAGES): parts of tests/test_netns.py will skip"; \
	fi

test-python: build netns-tools
	$(PY) -m pytest

# The quick loop while developing: Rust unit tests and pytest without the slow and the
# network-namespace tests (markers in pyproject.toml).
test-fast: build
	cargo test --features rustcrypto --lib
	$(PY) -m pytest -m "not slow and not netns"

CARGO_FUZZ_VERSION := 0.13.2

# Ten seconds of each fuzz target from its seeds, about a minute in all (fuzz/smoke.sh);
# installs cargo-fuzz if needed.
fuzz-smoke:
	cargo fuzz --version >/dev/null 2>&1 || cargo install --locked cargo-fuzz --version $(CARGO_FUZZ_VERSION)
	fuzz/smoke.sh

# Ten million executions per target, one after the other (fuzz/long.sh): hours.
fuzz-long:
	cargo fuzz --version >/dev/null 2>&1 || cargo install --locked cargo-fuzz --version $(CARGO_FUZZ_VERSION)
	fuzz/long.sh

# The whole suite: Rust unit tests (both AES-GCM backends), lints, the MSRV, pytest, a fuzz
# smoke run.
test: lint msrv test-rust test-python fuzz-smoke

# The main job: a real two-process transfer on loopback, printing throughput and the hash.
demo: build
	$(PY) examples/transfer.py --size-mib 256

# Every benchmark, then BENCHMARKS.md and benchmarks/results.png (BENCH_ARGS=--quick: shorter).
# spiped is a peer in the comparison: installed from Debian when missing and we are root;
# without it that row is skipped.
bench: build
	@command -v spiped >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null \
		|| apt-get install -y -qq spiped >/dev/null 2>&1 \
		|| { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq spiped >/dev/null 2>&1; } \
		|| echo "spiped could not be installed: its row is skipped"
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) target fuzz/target fuzz/target-long fuzz/target-long-notc
