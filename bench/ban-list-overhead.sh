#!/usr/bin/env bash
# What following a ban list costs: the `send` phase (10 senders, one room of
# 20 members) without plugins and with plugins/ban-list following a policy
# room of RULES rules, alternating ROUNDS times on one release server
# (SQLite) whose `modules:` is swapped by the admin reload endpoint.
# Usage: bench/ban-list-overhead.sh [extra myelin-bench args]
#   RULES (default 200: 3/4 literal user IDs, the rest user and server
#   globs), ROUNDS (default 3), REFRESH (the plugin's refresh_seconds,
#   default 5), WITH_AUTO_ACCEPT=1 to load plugins/auto-accept-invite
#   alongside (issue 9's "both loaded" figure).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/myelin-target}"
RULES="${RULES:-200}"
ROUNDS="${ROUNDS:-3}"
REFRESH="${REFRESH:-5}"
cargo build --release -p myelin -p myelin-bench
cargo build --release --target wasm32-wasip2 -p ban-list -p auto-accept-invite
BIN="$CARGO_TARGET_DIR/release"
WASM="$CARGO_TARGET_DIR/wasm32-wasip2/release/ban_list.wasm"
AUTO_ACCEPT=
if [[ "${WITH_AUTO_ACCEPT:-0}" == 1 ]]; then
  AUTO_ACCEPT="  - module: \"$CARGO_TARGET_DIR/wasm32-wasip2/release/auto_accept_invite.wasm\"
    grants: {actions: true}
    limits: {timeout_ms: 1000}"
fi
DIR="$(mktemp -d)"; PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$DIR"' EXIT
PORT=18009
URL="http://127.0.0.1:$PORT"
SECRET=bench-secret
cat > "$DIR/homeserver.yaml" <<YAML
server_name: bench.local
data_directory: "$DIR/data"
listeners: [{port: $PORT, bind_addresses: ["127.0.0.1"], type: http, resources: [{names: [client]}]}]
registration_shared_secret: $SECRET
rc_login:
  address: {per_second: 100000, burst_count: 100000}
  account: {per_second: 100000, burst_count: 100000}
  failed_attempts: {per_second: 100000, burst_count: 100000}
rc_message: {per_second: 100000, burst_count: 100000}
rc_joins:
  local: {per_second: 100000, burst_count: 100000}
  remote: {per_second: 100000, burst_count: 100000}
rc_invites:
  per_room: {per_second: 100000, burst_count: 100000}
  per_user: {per_second: 100000, burst_count: 100000}
log_config: "$DIR/log.yaml"
YAML
printf 'root:\n  level: WARNING\n' > "$DIR/log.yaml"
echo "modules: []" > "$DIR/modules.yaml"

"$BIN/myelin" -c "$DIR/homeserver.yaml" -c "$DIR/modules.yaml" >"$DIR/server.log" 2>&1 & PID=$!
until curl -sf "$URL/_matrix/client/versions" >/dev/null; do sleep 0.01; done

# The moderator, a server admin (for the reload endpoint), by shared secret.
nonce=$(curl -sf "$URL/_synapse/admin/v1/register" | jq -r .nonce)
mac=$(printf '%s\0%s\0%s\0%s' "$nonce" moderator moderator-password admin \
  | openssl dgst -sha1 -hmac "$SECRET" | awk '{print $NF}')
TOKEN=$(curl -sf -X POST "$URL/_synapse/admin/v1/register" -H 'content-type: application/json' \
  -d "{\"nonce\":\"$nonce\",\"username\":\"moderator\",\"password\":\"moderator-password\",\"admin\":true,\"mac\":\"$mac\"}" \
  | jq -r .access_token)
auth=(-H "authorization: Bearer $TOKEN" -H 'content-type: application/json')
ROOM=$(curl -sf -X POST "$URL/_matrix/client/v3/createRoom" "${auth[@]}" -d '{"name":"ban list"}' | jq -r .room_id)
ROOM_ENC=$(jq -rn --arg r "$ROOM" '$r|@uri')
for i in $(seq 1 "$RULES"); do
  if (( i % 4 != 0 )); then
    kind=user; entity="@spammer-$i:evil-$i.example"
  elif (( i % 8 == 0 )); then
    kind=server; entity="*.evil-$i.example"
  else
    kind=user; entity="@bot-$i-*:evil.example"
  fi
  curl -sf -X PUT "$URL/_matrix/client/v3/rooms/$ROOM_ENC/state/m.policy.rule.$kind/rule-$i" "${auth[@]}" \
    -d "{\"entity\":\"$entity\",\"recommendation\":\"m.ban\",\"reason\":\"bench rule $i\"}" >/dev/null
done
echo "policy room $ROOM with $RULES rules"

reload() {
  curl -sf -X POST "$URL/_myelin/admin/v1/plugins/reload" "${auth[@]}" -d '{}' >/dev/null
}
bench() {
  "$BIN/myelin-bench" --url "$URL" --shared-secret "$SECRET" --server-pid "$PID" \
    --phases send --concurrency 10 --seconds 10 "$@"
}
for round in $(seq 1 "$ROUNDS"); do
  echo "=== round $round: without plugins"
  echo "modules: []" > "$DIR/modules.yaml"; reload
  bench "$@"
  echo "=== round $round: with ban-list${AUTO_ACCEPT:+ and auto-accept-invite}"
  cat > "$DIR/modules.yaml" <<YAML
modules:
  - module: "$WASM"
    config: {policy_rooms: ["$ROOM"], refresh_seconds: $REFRESH}
    grants: {queries: true}
$AUTO_ACCEPT
YAML
  reload
  bench "$@"
done
if [[ -s "$DIR/server.log" ]]; then
  echo "server log ($(wc -l < "$DIR/server.log") lines, first 20):"
  head -n 20 "$DIR/server.log"
fi
