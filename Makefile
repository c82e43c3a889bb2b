# Tidemark: `make run` starts the demo on embedded defaults, `make test` runs every check.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# wasm-opt from npm binaryen must come first on PATH (Debian's binaryen 108 breaks the WASM).
export PATH := $(CURDIR)/end2end/node_modules/.bin:$(HOME)/.cargo/bin:$(PATH)
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
export TIDEMARK_BIN := $(TARGET_DIR)/release/tidemark

.PHONY: help setup build run test lint test-rust e2e check-postgres wasm-size

help:
	@echo "make run    build (release) and start Tidemark on http://127.0.0.1:3000"
	@echo "make test   fmt, clippy, Rust tests (SQLite + PostgreSQL), browser tests"
	@echo "make setup  install missing toolchain pieces (idempotent)"

setup:
	@scripts/setup.sh

build: setup
	cargo leptos build --release

run: build
	$(TIDEMARK_BIN) serve

check-postgres:
	@scripts/check-postgres.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p app --no-default-features --features hydrate --target wasm32-unknown-unknown -- -D warnings

test-rust: check-postgres
	cargo test --workspace

e2e: build
	cd end2end && npx playwright test

test: setup check-postgres lint test-rust e2e

# Size of the release WASM (raw and brotli), as reported in closing notes.
wasm-size: build
	@f=target/site/pkg/tidemark_bg.wasm; raw=$$(stat -c %s $$f); \
	br=$$(brotli -c -q 11 $$f | wc -c); \
	echo "tidemark_bg.wasm: $$raw bytes raw, $$br bytes brotli"
