#!/usr/bin/env bash
# palisade's whole test suite, from a fresh machine: installs what the tests need (Debian
# packages, the tansu broker), then runs every test once in the dev profile.
#
#   tests/run.sh            # what CI runs (.ci/run calls exactly this)
#
# Environment:
#   CARGO_TARGET_DIR   reuse a build cache (CI keeps one outside the clone)
#   PALISADE_SKIP_SETUP=1  skip the installs (you have them already)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s (%s)\n' "$*" "$(date +%H:%M:%S)"; }

if [[ "${PALISADE_SKIP_SETUP:-0}" != 1 ]]; then
  # Build tools: mold links faster; pkg-config + libssl-dev for librdkafka's TLS; make/gcc
  # for the bundled librdkafka. The real Prometheus, promtool, Alertmanager and amtool, and
  # docker-compose (which validates deploy/docker-compose.yml without an engine), for the
  # observability and alerting tests (tests/it/observability.rs, alerting.rs).
  need=()
  for pkg in mold pkg-config libssl-dev make gcc g++ curl prometheus prometheus-alertmanager docker-compose; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if ((${#need[@]})); then
    log "installing Debian packages: ${need[*]}"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  # The Kafka-compatible broker for the end-to-end test. Slow to build (~20 min on 2 cores):
  # installed once, then found on PATH.
  if ! command -v tansu >/dev/null 2>&1 && [[ ! -x "$HOME/.cargo/bin/tansu" ]]; then
    log "installing the tansu broker (cargo install, one time)"
    cargo install tansu --version 0.6.0 --locked --features dynostore
  fi
fi
export PATH="$HOME/.cargo/bin:$PATH"

if command -v mold >/dev/null 2>&1; then
  export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C link-arg=-fuse-ld=mold"
fi

log "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

log "tests"
# Benches are compiled by clippy above but not run here: they are timed runs, in release.
cargo test --locked --no-fail-fast --lib --bins --tests -- --test-threads 2
