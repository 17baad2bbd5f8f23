#!/usr/bin/env bash
# Property-based testing of the HTTP surface with schemathesis, an independent
# tool that reads GET /api/openapi.json and generates requests from it.
#
# Starts a controller for the run (a free port, a throwaway database, NATS
# namespace and data directory), installs schemathesis into a virtualenv if it is
# missing, runs it with the API key set (so the keyed routes are exercised) and
# checks every answer for server errors, then stops the controller and removes
# what it created. Exits non-zero when schemathesis reports a failure.
#
# The two Server-Sent Events routes (/events, /logs/stream) are left out: a
# stream stays open until its build finishes, and schemathesis reads whole
# bodies. The integration test `openapi` covers them with a short read.
#
#   scripts/schemathesis.sh [more schemathesis run options]
#
# Settings (environment):
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 300)
#   SCHEMATHESIS_CHECKS        checks to run (default not_a_server_error)
#   SCHEMATHESIS_SEED          seed, to replay a run
#   SCHEMATHESIS_VENV          virtualenv to use or create (default target/schemathesis-venv)
#   FREEAGENT_BIN              controller binary (default: cargo build --release)
#   TEST_DATABASE_URL          Postgres server, no database (default postgres://postgres@127.0.0.1:5432)
#   NATS_URL                   NATS with JetStream (default nats://127.0.0.1:4222)
set -euo pipefail
cd "$(dirname "$0")/.."

pg=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}
nats=${NATS_URL:-nats://127.0.0.1:4222}
venv=$(realpath -m "${SCHEMATHESIS_VENV:-target/schemathesis-venv}")
run_id="$(date +%s)_$$"
database="fa_schemathesis_$run_id"
namespace="st_$run_id"
data_dir=$(mktemp -d)
report_dir="$data_dir/report"

if [ ! -x "$venv/bin/schemathesis" ]; then
  echo "==> installing schemathesis into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet schemathesis
fi
"$venv/bin/schemathesis" --version

bin=${FREEAGENT_BIN:-}
if [ -z "$bin" ]; then
  echo "==> building the controller"
  cargo build --release --quiet --bin freeagent
  bin=target/release/freeagent
fi
bin=$(realpath "$bin")

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
server=""

# Deletes the namespace's JetStream streams (NATS protocol, no client needed).
delete_streams() {
  python3 - "$nats" "$namespace" <<'PY' || true
import socket, sys, urllib.parse
url = urllib.parse.urlparse(sys.argv[1])
ns = sys.argv[2].upper()
s = socket.create_connection((url.hostname or "127.0.0.1", url.port or 4222), timeout=5)
s.recv(4096)  # INFO
msg = b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.cleanup 1\r\n'
for stream in (f"{ns}_JOBS", f"{ns}_EVENTS"):
    msg += f"PUB $JS.API.STREAM.DELETE.{stream} _INBOX.cleanup 0\r\n\r\n".encode()
s.sendall(msg + b"PING\r\n")
buf = b""
while buf.count(b"MSG ") < 2 and b"-ERR" not in buf:
    chunk = s.recv(4096)
    if not chunk:
        break
    buf += chunk
s.close()
PY
}

cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  psql "$pg/postgres" -q -c "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" >/dev/null 2>&1 || true
  delete_streams
  rm -rf "$data_dir"
}
trap cleanup EXIT

echo "==> controller on 127.0.0.1:$port (database $database, namespace $namespace)"
# Webhook deliveries are switched off: generated webhook URLs must never be called.
# Long polls are capped at one second so that generated ?wait= values stay cheap.
# The failed-authentication limit is off: generated requests fail authentication
# by design, and 429s from one address would otherwise answer most of the run.
DATABASE_URL="$pg/$database" NATS_URL="$nats" FREEAGENT_NAMESPACE="$namespace" \
  FREEAGENT_DATA_DIR="$data_dir" HOST=127.0.0.1 PORT="$port" CONTROLLER_API_KEY="$key" \
  FREEAGENT_WEBHOOK_INTERVAL_MS=86400000 FREEAGENT_MAX_POLL_WAIT_SECS=1 FREEAGENT_AUTH_FAILURES_PER_MINUTE=0 \
  RUST_LOG=warn \
  "$bin" serve >"$data_dir/controller.log" 2>&1 &
server=$!
for _ in $(seq 1 150); do
  if curl -sf "http://127.0.0.1:$port/health" >/dev/null; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then
    cat "$data_dir/controller.log" >&2
    exit 1
  fi
  sleep 0.2
done

echo "==> schemathesis"
status=0
# From the data directory, where schemathesis keeps its own state.
cd "$data_dir"
"$venv/bin/schemathesis" run "http://127.0.0.1:$port/api/openapi.json" \
  --exclude-path-regex '/(events|logs/stream)$' \
  --checks "${SCHEMATHESIS_CHECKS:-not_a_server_error}" \
  --header "X-API-Key: $key" \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-300}" \
  ${SCHEMATHESIS_SEED:+--seed "$SCHEMATHESIS_SEED"} \
  --request-timeout 20 \
  --suppress-health-check all \
  --report har --report-dir "$report_dir" \
  "$@" || status=$?

requests=$(python3 - "$report_dir" <<'PY'
import collections, glob, json, sys
statuses = collections.Counter()
for path in glob.glob(sys.argv[1] + "/har-*.json"):
    for entry in json.load(open(path))["log"]["entries"]:
        statuses[entry["response"]["status"]] += 1
print(f"{sum(statuses.values())} requests; statuses {dict(sorted(statuses.items()))}; "
      f"5xx: {sum(n for s, n in statuses.items() if s >= 500)}")
PY
)
echo "==> $requests"
if grep -q "panicked" "$data_dir/controller.log"; then
  echo "the controller panicked:" >&2
  grep -A3 "panicked" "$data_dir/controller.log" >&2
  status=1
fi
exit "$status"
