#!/usr/bin/env bash
# What a sandboxed spam filter costs: the `send` phase (10 senders, one room
# of 20 members) without plugins, then with plugins/spam-filter enabled,
# in one run, on fresh SQLite databases.
# Usage: bench/plugin-overhead.sh [extra myelin-bench args]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/myelin-target}"
cargo build --release --target wasm32-wasip2 -p spam-filter
WASM="$CARGO_TARGET_DIR/wasm32-wasip2/release/spam_filter.wasm"
ARGS=(--phases send --concurrency 10 --seconds 10 "$@")

echo "=== without plugins"
bash bench/run.sh "${ARGS[@]}"
echo "=== with spam-filter"
EXTRA_CONFIG="modules:
  - module: \"$WASM\"
    config:
      banned_words: [viagra, casino, \"free crypto\"]
      banned_patterns: ['bit\\.ly/\\w+', '(?i)click here']
      blocked_users: ['@spam*:bench.local']
      blocked_servers: ['*.evil.example']
      invites_per_hour: 100
    grants: {kv: {quota_kib: 256}}" bash bench/run.sh "${ARGS[@]}"
