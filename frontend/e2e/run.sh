#!/usr/bin/env bash
# End-to-end test of the web app: starts Kiln's seven built binaries on free ports, isolated by
# their own topic prefix, database and Redis prefix (like tests/system/tests/stack), serves
# frontend/dist, drives headless Debian chromium through app.e2e.js, and stops what it started.
# Needs the local infrastructure (./deploy.sh infra). Screenshots and logs: frontend/test-results/.
set -euo pipefail

FRONTEND="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="$(cd "$FRONTEND/.." && pwd)"
RESULTS="$FRONTEND/test-results"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET" == /* ]] || TARGET="$ROOT/$TARGET"
BIN="$TARGET/debug"
SERVICES=(api saga-orchestrator k8s-worker pod-monitor result-processor event-replay dlq-processor)
CHROMIUM="${KILN_E2E_CHROMIUM:-/usr/bin/chromium}"

say() { printf '[e2e] %s\n' "$*" >&2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [[ ! -x "$CHROMIUM" ]]; then
  say "installing Debian chromium (apt-get)"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium ||
    { $SUDO apt-get update -q && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }
fi

for svc in "${SERVICES[@]}"; do
  if [[ ! -x "$BIN/$svc" ]]; then
    say "building the workspace binaries ($BIN/$svc is missing)"
    (cd "$ROOT" && cargo build --workspace --bins)
    break
  fi
done

cd "$FRONTEND"
[[ -d node_modules ]] || npm ci --no-audit --no-fund
npm run --silent build >/dev/null

# Screenshots of an earlier run (a failure-*.png above all) must not pass for this one.
rm -rf "$RESULTS/screenshots"
mkdir -p "$RESULTS/logs"
id="$(python3 -c 'import uuid; print(uuid.uuid4().hex)')"
prefix="sys${id}_"
# Created by k8s-worker with the modes its sandbox user needs (mktemp -d would be 0700).
work_dir="${TMPDIR:-/tmp}/kiln-e2e-$id"
export KILN__KAFKA__BOOTSTRAP_SERVERS="${KILN__KAFKA__BOOTSTRAP_SERVERS:-127.0.0.1:9092}"
export KILN__MONGO__URI="${KILN__MONGO__URI:-mongodb://127.0.0.1:27017}"
export KILN__REDIS__URL="${KILN__REDIS__URL:-redis://127.0.0.1:6379}"
export KILN__KAFKA__TOPIC_PREFIX="$prefix"
export KILN__KAFKA__PARTITIONS=2
export KILN__MONGO__DATABASE="kiln_e2e_${id}"
export KILN__REDIS__KEY_PREFIX="${prefix}:"
export KILN__RUNTIME__WORK_DIR="$work_dir"
export KILN__LIFECYCLE__DRAIN_TIMEOUT_SECONDS=5
unset RUST_LOG
# The api serves the built app once it knows api.static_dir; older builds do not.
if "$BIN/api" --config "$ROOT/config.toml" --dump-config 2>/dev/null | grep -q 'static_dir'; then
  export KILN__API__STATIC_DIR="$FRONTEND/dist"
fi

pids=()
preview_pid=""
cleanup() {
  local pid
  if [[ -n "$preview_pid" ]]; then kill "$preview_pid" 2>/dev/null || true; fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work_dir"
}
trap cleanup EXIT

declare -A ports
for svc in "${SERVICES[@]}"; do
  ports[$svc]="$(free_port)"
  env_name="$(tr 'a-z-' 'A-Z_' <<<"$svc")"
  (cd "$ROOT" && exec env "KILN__SERVICES__${env_name}__HTTP_ADDR=127.0.0.1:${ports[$svc]}" \
    "$BIN/$svc" --config config.toml >"$RESULTS/logs/$svc.log" 2>&1) &
  pids+=("$!")
done

for i in "${!SERVICES[@]}"; do
  svc="${SERVICES[$i]}"
  deadline=$((SECONDS + 90))
  until curl -sf -o /dev/null "http://127.0.0.1:${ports[$svc]}/health/ready"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      say "$svc exited early; log: $RESULTS/logs/$svc.log"
      tail -n 20 "$RESULTS/logs/$svc.log" >&2
      exit 1
    fi
    if ((SECONDS > deadline)); then
      say "$svc never became ready; log: $RESULTS/logs/$svc.log"
      exit 1
    fi
    sleep 0.2
  done
done
api_url="http://127.0.0.1:${ports[api]}"
say "stack ready (api $api_url, prefix $prefix)"

if curl -sf "$api_url/" 2>/dev/null | grep -q 'id="app"'; then
  base_url="$api_url"
else
  # The api does not serve the app (yet): Vite's preview server serves dist/ and proxies /api.
  port="$(free_port)"
  KILN_API_URL="$api_url" npx vite preview --host 127.0.0.1 --port "$port" --strictPort >"$RESULTS/logs/preview.log" 2>&1 &
  preview_pid=$!
  deadline=$((SECONDS + 30))
  until curl -sf -o /dev/null "http://127.0.0.1:$port/"; do
    ((SECONDS < deadline)) || { say "vite preview did not start"; exit 1; }
    sleep 0.2
  done
  base_url="http://127.0.0.1:$port"
fi

say "running the browser test against $base_url"
KILN_E2E_BASE_URL="$base_url" KILN_E2E_API_URL="$api_url" KILN_E2E_RESULTS="$RESULTS" KILN_E2E_CHROMIUM="$CHROMIUM" \
  node "$FRONTEND/e2e/app.e2e.js"
