#!/usr/bin/env bash
# Installs what a fresh Debian machine with rustup lacks for building and testing
# bitbylaw gateway. Idempotent: every step checks first. Sourced by test.sh and sandbox.sh.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# Rust targets for the filters (Kong loads wasm32-wasip1) and for the core
# crate's in-wasm tests (wasm32-unknown-unknown under wasm-bindgen-test).
installed_targets=$(rustup target list --installed)
for t in wasm32-wasip1 wasm32-unknown-unknown; do
  grep -qx "$t" <<<"$installed_targets" || rustup target add "$t"
done

command -v redis-server >/dev/null 2>&1 || apt_install redis-server
command -v node >/dev/null 2>&1 || apt_install nodejs
command -v cc >/dev/null 2>&1 || apt_install build-essential
# Test service-account keys for the Google fake are generated, never committed.
command -v openssl >/dev/null 2>&1 || apt_install openssl
# promtool checks and unit-tests the alert rules (docker/prometheus/); Debian ships it in the
# `prometheus` package, which also enables a Prometheus server: the tests need only the tool.
if ! command -v promtool >/dev/null 2>&1; then
  apt_install prometheus
  if [ -d /run/systemd/system ]; then as_root systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
fi

# wasm-bindgen-test-runner must match the wasm-bindgen version in Cargo.lock.
want=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print; exit}' Cargo.lock)
have=$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $2}' || true)
if [ -n "$want" ] && [ "$want" != "$have" ]; then
  # Not --locked: one of the CLI's pinned dependencies is not on crates.io any more.
  cargo install -q wasm-bindgen-cli --version "$want"
fi
