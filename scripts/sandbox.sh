#!/usr/bin/env bash
# The main job, locally: builds the filters and the worker, then runs the
# sandbox — gateway mode (Kong stand-in) with kong.yaml and the real filters in
# front of the real worker, with stateful fakes of Advoware, EspoCRM, Google
# Calendar and 3CX on loopback. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
scripts/build-filters.sh >/dev/null
cargo build -q -p bitbylaw-worker -p bitbylaw-sandbox
exec target/debug/bitbylaw-sandbox "$@"
