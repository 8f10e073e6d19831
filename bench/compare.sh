#!/usr/bin/env bash
# Measures Myelin and Synapse one after the other with the same load generator,
# phases and settings: idle RSS, myelin-bench's phases, RSS after load.
# Each server gets a fresh SQLite database and logs at WARNING; only one server
# runs at a time, so neither competes with the other for the cores.
#
# Usage: bench/compare.sh [extra myelin-bench args, e.g. --seconds 10]
# Environment:
#   SYNAPSE_VENV     venv holding Synapse (default /var/tmp/synapse-venv;
#                    created and filled from PyPI if Synapse is not in it)
#   SYNAPSE_VERSION  version to install there (default 1.163.2)
#   BUILD=1          rebuild the release binaries even if they exist
#                    (otherwise cargo runs only when a binary is missing)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/myelin-target}"
BIN="$CARGO_TARGET_DIR/release"
if [[ "${BUILD:-0}" == 1 || ! -x "$BIN/myelin" || ! -x "$BIN/myelin-bench" ]]; then
  cargo build --release -p myelin -p myelin-bench
fi

SYNAPSE_VENV="${SYNAPSE_VENV:-/var/tmp/synapse-venv}"
SYNAPSE_VERSION="${SYNAPSE_VERSION:-1.163.2}"
PY="$SYNAPSE_VENV/bin/python"
if ! "$PY" -c 'import synapse' 2>/dev/null; then
  python3 -m venv "$SYNAPSE_VENV"
  "$SYNAPSE_VENV/bin/pip" install -q "matrix-synapse==$SYNAPSE_VERSION"
fi
SYNAPSE_VERSION="$("$PY" -c 'import synapse; print(synapse.__version__)')"

DIR="$(mktemp -d)"
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if (( rc == 0 )); then rm -rf "$DIR"; else echo "kept logs and configs in $DIR" >&2; fi
}
trap cleanup EXIT

rss() { awk '/VmRSS/ {printf "%.1f MiB", $2 / 1024}' "/proc/$1/status"; }
# Waits until the server answers, or fails after $3 seconds (or if it died).
wait_up() {
  local port=$1 pid=$2 limit=$3 start=$SECONDS
  until curl -sf "http://127.0.0.1:$port/_matrix/client/versions" >/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "server (pid $pid) exited before serving" >&2; return 1; }
    (( SECONDS - start < limit )) || { echo "server not up after ${limit}s" >&2; return 1; }
    sleep 0.05
  done
}
# measure NAME PORT PID TIMEOUT: waits for the server, then measures it.
measure() {
  local name=$1 port=$2 pid=$3 limit=$4 start
  shift 4
  start=$(date +%s%N)
  wait_up "$port" "$pid" "$limit"
  echo "== $name (pid $pid)"
  echo "start-up to serving, fresh database: $(( ($(date +%s%N) - start) / 1000000 )) ms"
  sleep 1
  echo "idle RSS: $(rss "$pid")"
  "$BIN/myelin-bench" --url "http://127.0.0.1:$port" --shared-secret bench-secret "$@"
  echo "RSS after load: $(rss "$pid")"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo
}

# --- Myelin, configured as in bench/run.sh -----------------------------------
MPORT=18008
mkdir -p "$DIR/myelin"
cat > "$DIR/myelin/homeserver.yaml" <<YAML
server_name: bench.local
data_directory: "$DIR/myelin/data"
listeners: [{port: $MPORT, bind_addresses: ["127.0.0.1"], type: http, resources: [{names: [client]}]}]
registration_shared_secret: bench-secret
rc_login:
  address: {per_second: 100000, burst_count: 100000}
  account: {per_second: 100000, burst_count: 100000}
  failed_attempts: {per_second: 100000, burst_count: 100000}
log_config: "$DIR/myelin/log.yaml"
YAML
printf 'root:\n  level: WARNING\n' > "$DIR/myelin/log.yaml"
"$BIN/myelin" -c "$DIR/myelin/homeserver.yaml" >"$DIR/myelin/out.log" 2>&1 & PIDS+=($!)
measure "Myelin" "$MPORT" "$!" 30 "$@"

# --- Synapse: generated config with the same overrides -----------------------
SPORT=18009
S="$DIR/synapse"
mkdir -p "$S"
"$PY" -m synapse.app.homeserver --server-name bench.local --config-path "$S/homeserver.yaml" \
  --data-directory "$S" --generate-config --report-stats=no >/dev/null
cat > "$S/log.yaml" <<YAML
version: 1
formatters: {plain: {format: '%(asctime)s %(name)s %(levelname)s %(message)s'}}
handlers: {file: {class: logging.FileHandler, formatter: plain, filename: "$S/homeserver.log"}}
root: {level: WARNING, handlers: [file]}
disable_existing_loggers: false
YAML
"$PY" - "$S" "$SPORT" <<'PY'
import sys, yaml
d, port = sys.argv[1], int(sys.argv[2])
path = f"{d}/homeserver.yaml"
c = yaml.safe_load(open(path))
c["listeners"] = [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                   "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}]
c["registration_shared_secret"] = "bench-secret"
c["rc_login"] = {k: {"per_second": 100000, "burst_count": 100000}
                 for k in ("address", "account", "failed_attempts")}
# Lifted for the send phases and for sync-wake-one's 100 rooms.
def lifted():
    return {"per_second": 100000, "burst_count": 100000}
c["rc_message"] = lifted()
c["rc_room_creation"] = lifted()
c["rc_joins"] = {"local": lifted(), "remote": lifted()}
c["rc_invites"] = {"per_room": lifted(), "per_user": lifted()}
c["database"] = {"name": "sqlite3", "args": {"database": f"{d}/homeserver.db"}}
c["log_config"] = f"{d}/log.yaml"
c["trusted_key_servers"] = []
yaml.safe_dump(c, open(path, "w"))
PY
"$PY" -m synapse.app.homeserver --config-path "$S/homeserver.yaml" >"$S/out.log" 2>&1 & PIDS+=($!)
# A fresh Synapse database runs its background updates before serving.
measure "Synapse $SYNAPSE_VERSION" "$SPORT" "$!" 300 "$@"
