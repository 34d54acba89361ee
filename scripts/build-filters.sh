#!/usr/bin/env bash
# Builds the proxy-wasm filters (and the test fixtures) for Kong:
# ${CARGO_TARGET_DIR:-target}/wasm32-wasip1/release/{advoware_auth,webhook_guard}.wasm
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --target wasm32-wasip1 \
  -p advoware-auth -p webhook-guard -p noop-filter -p probe-filter
ls -l "${CARGO_TARGET_DIR:-target}"/wasm32-wasip1/release/*.wasm
