# Tidemark: `make run` starts the demo on embedded defaults, `make test` runs every check.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# wasm-opt from npm binaryen must come first on PATH (Debian's binaryen 108 breaks the WASM).
export PATH := $(CURDIR)/end2end/node_modules/.bin:$(HOME)/.cargo/bin:$(PATH)
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
export TIDEMARK_BIN := $(TARGET_DIR)/release/tidemark

.PHONY: help setup build run test lint test-rust e2e check-postgres wasm-size bench-ssr

help:
	@echo "make run    build (release) and start the demo on http://127.0.0.1:3000"
	@echo "make test   fmt, clippy, Rust tests (SQLite + PostgreSQL), browser tests"
	@echo "make setup  install missing toolchain pieces (idempotent)"

setup:
	@scripts/setup.sh

build: setup
	cargo leptos build --release

# The demo: sandbox cluster, generated repository and accounts under ./data/demo (kept across runs).
run: build
	$(TIDEMARK_BIN) demo

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

test: setup check-postgres lint test-rust e2e wasm-size bench-ssr

# Size of the release WASM (raw and brotli), as reported in closing notes; fails above 400 KB.
wasm-size: build
	@f=target/site/pkg/tidemark.wasm; raw=$$(stat -c %s $$f); \
	br=$$(brotli -c -q 11 $$f | wc -c); \
	echo "tidemark.wasm: $$raw bytes raw, $$br bytes brotli (limit 400000)"; \
	[ "$$br" -le 400000 ] || { echo "the release WASM is over 400 KB brotli" >&2; exit 1; }

# SSR of the Applications page at 10,000 applications under wrk, against a static handler.
bench-ssr: build
	SSR_SECONDS=$${SSR_SECONDS:-5} cargo bench -p server --bench ssr_pages
