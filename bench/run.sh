#!/usr/bin/env bash
# Measures a release build of Myelin on this machine: start-up time on an
# existing database, idle RSS, and the load generator's phases.
# Usage: bench/run.sh [extra myelin-bench args]
#   e.g. bench/run.sh --phases send --concurrency 10 --seconds 10
# EXTRA_CONFIG, if set, is appended to the server's homeserver.yaml (e.g. a
# `modules:` section; see bench/plugin-overhead.sh).
# The server's pid is passed on, so each phase also reports server CPU time
# per request; the server's warnings and errors are shown at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/myelin-target}"
cargo build --release -p myelin -p myelin-bench
BIN="$CARGO_TARGET_DIR/release"
DIR="$(mktemp -d)"; trap 'kill $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT
PORT=18008
cat > "$DIR/homeserver.yaml" <<YAML
server_name: bench.local
data_directory: "$DIR/data"
listeners: [{port: $PORT, bind_addresses: ["127.0.0.1"], type: http, resources: [{names: [client]}]}]
registration_shared_secret: bench-secret
rc_login:
  address: {per_second: 100000, burst_count: 100000}
  account: {per_second: 100000, burst_count: 100000}
  failed_attempts: {per_second: 100000, burst_count: 100000}
# Synapse's limits on sending, joining and inviting, lifted for the send and
# state-at phases; Myelin does not implement them yet (and warns at start-up).
rc_message: {per_second: 100000, burst_count: 100000}
rc_joins:
  local: {per_second: 100000, burst_count: 100000}
  remote: {per_second: 100000, burst_count: 100000}
rc_invites:
  per_room: {per_second: 100000, burst_count: 100000}
  per_user: {per_second: 100000, burst_count: 100000}
log_config: "$DIR/log.yaml"
${EXTRA_CONFIG:-}
YAML
# Request logging at WARNING, as one would run under load.
printf 'root:\n  level: WARNING\n' > "$DIR/log.yaml"

wait_up() { until curl -sf "http://127.0.0.1:$PORT/_matrix/client/versions" >/dev/null; do sleep 0.001; done; }
"$BIN/myelin" -c "$DIR/homeserver.yaml" >/dev/null 2>&1 & PID=$!; wait_up; kill $PID; wait $PID || true

# Start-up to serving, on the now-existing database.
start=$(date +%s%N)
"$BIN/myelin" -c "$DIR/homeserver.yaml" >"$DIR/server.log" 2>&1 & PID=$!
wait_up
echo "start-up to serving: $(( ($(date +%s%N) - start) / 1000000 )) ms"
sleep 1
echo "idle RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$PID/status)"

"$BIN/myelin-bench" --url "http://127.0.0.1:$PORT" --shared-secret bench-secret --server-pid "$PID" "$@" || rc=$?
echo "RSS after load: $(awk '/VmRSS/ {print $2, $3}' /proc/$PID/status)"
# The unknown-key warning for the rc_* keys above is expected.
if [[ -s "$DIR/server.log" ]]; then
  echo "server log ($(wc -l < "$DIR/server.log") lines, first 20):"
  head -n 20 "$DIR/server.log"
fi
exit "${rc:-0}"
