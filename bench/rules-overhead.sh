#!/usr/bin/env bash
# What third-party rules cost on the send path: the `send` phase (10
# senders, one room of 20 members) without plugins; with one plugin whose
# `check_event_allowed` replaces every message's content (the event is then
# built and signed again); with `on_new_event` fanned out to three plugins;
# and with the first-party auto-accept-invite plugin. Fresh SQLite
# databases, one release server per run.
# Usage: bench/rules-overhead.sh [extra myelin-bench args]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/myelin-target}"
cargo build --release --target wasm32-wasip2 -p test-rules -p auto-accept-invite
WASM_DIR="$CARGO_TARGET_DIR/wasm32-wasip2/release"
# Three copies under three names: a plugin is named after its file.
COPIES="$(mktemp -d)"; trap 'rm -rf "$COPIES"' EXIT
for name in rules_a rules_b rules_c; do cp "$WASM_DIR/test_rules.wasm" "$COPIES/$name.wasm"; done
ARGS=(--phases send --concurrency 10 --seconds 10 "$@")

echo "=== without plugins"
bash bench/run.sh "${ARGS[@]}"

echo "=== check_event_allowed replacing every message"
EXTRA_CONFIG="modules:
  - module: \"$WASM_DIR/test_rules.wasm\"
    config: {replace_all: true, register: [check_event_allowed]}" bash bench/run.sh "${ARGS[@]}"

echo "=== on_new_event in three plugins"
EXTRA_CONFIG="modules:
  - module: \"$COPIES/rules_a.wasm\"
    config: {register: [on_new_event]}
  - module: \"$COPIES/rules_b.wasm\"
    config: {register: [on_new_event]}
  - module: \"$COPIES/rules_c.wasm\"
    config: {register: [on_new_event]}" bash bench/run.sh "${ARGS[@]}"

echo "=== auto-accept-invite"
EXTRA_CONFIG="modules:
  - module: \"$WASM_DIR/auto_accept_invite.wasm\"
    grants: {actions: true}
    limits: {timeout_ms: 1000}" bash bench/run.sh "${ARGS[@]}"
