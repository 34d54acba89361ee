#!/usr/bin/env bash
# The full test suite, from a fresh clone on a fresh machine: installs what is
# missing, builds the .wasm filters, then runs every test (native, through the
# proxy-wasm host, against real redis-server and the stateful fakes, and the
# core crate's tests inside wasm).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
scripts/build-filters.sh
cargo build -p bitbylaw-worker   # the end-to-end tests run the real binary
export BITBYLAW_REQUIRE_WASM=1
cargo test --workspace --no-fail-fast
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
  cargo test --target wasm32-unknown-unknown -p bitbylaw-core --test wasm
