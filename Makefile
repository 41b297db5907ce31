# Ferryman's two commands are `make run` and `make test`; `make` alone lists every target.
.DEFAULT_GOAL := help
SHELL := bash
.SHELLFLAGS := -euo pipefail -c

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-12s %s\n", $$1, $$2}'

run: ## Serve the quickstart on 127.0.0.1:4000 (SQLite, mock model)
	cargo run --release --bin ferryman -- serve --config examples/quickstart.yaml

test: setup lint test-rust test-python test-node test-proto ## Run every suite (what CI runs)

setup: ## Install test dependencies and start PostgreSQL and Redis if needed
	bash tests/setup.sh

lint: ## cargo fmt --check and clippy -D warnings
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

test-rust: ## Rust unit, store conformance (SQLite, PostgreSQL) and end-to-end suites
	cargo build -p ferryman-server --bin ferryman
	cargo test --workspace

test-python: ## The official openai Python package and buf curl against the real binary
	cargo build -p ferryman-server --bin ferryman
	.venv/bin/pytest -q tests/python

test-node: ## The official openai npm package against the real binary
	cargo build -p ferryman-server --bin ferryman
	node --test tests/node/

test-proto: ## buf lint and format check of proto/
	npx --no-install buf lint
	npx --no-install buf format -d --exit-code

bench: ## The benchmark harness: every lane, LiteLLM's proxy beside, one table (docs/benchmarks.md)
	bash tests/bench/run.sh --runs 3

prices: ## Regenerate server/src/pricing/prices.json from ../shared/reference
	python3 server/scripts/gen_prices.py ../shared/reference/model_prices.json > server/src/pricing/prices.json

.PHONY: help run test setup lint test-rust test-python test-node test-proto bench prices
