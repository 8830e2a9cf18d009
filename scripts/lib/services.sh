# shellcheck shell=bash
# The seven Kiln services, run natively in the background from the repo root.
# Sourced by deploy.sh after common.sh and infra.sh.

KILN_SERVICES=(api saga-orchestrator k8s-worker pod-monitor result-processor event-replay dlq-processor)
KILN_CONFIG="${KILN_CONFIG:-config.toml}"
KILN_SERVICE_STOP_GRACE="${KILN_STOP_GRACE:-30}"

service_port() {
  case "$1" in
    api) echo 8080 ;;
    saga-orchestrator) echo 9101 ;;
    k8s-worker) echo 9102 ;;
    pod-monitor) echo 9103 ;;
    result-processor) echo 9104 ;;
    event-replay) echo 9105 ;;
    dlq-processor) echo 9106 ;;
    *) return 1 ;;
  esac
}

is_service() {
  local s
  for s in "${KILN_SERVICES[@]}"; do [[ "$s" == "$1" ]] && return 0; done
  return 1
}

service_pidfile() { printf '%s\n' "$KILN_RUN_DIR/$1.pid"; }
service_log() { printf '%s\n' "$KILN_LOG_DIR/$1.log"; }
# Matches "<target>/<profile>/<svc> --config ..." whatever the profile.
service_pid_pattern() { printf '/%s --config\n' "$1"; }

service_pid() {
  pidfile_pid "$(service_pidfile "$1")" "$(service_pid_pattern "$1")"
}

service_health_url() { printf 'http://%s:%s/health/ready\n' "$KILN_HOST" "$(service_port "$1")"; }

# Prints the HTTP status of /health/ready (000 when nothing answers).
service_health_code() {
  curl -s -o /dev/null -w '%{http_code}' --connect-timeout 1 --max-time 2 "$(service_health_url "$1")" 2>/dev/null || true
}

cargo_target_dir() {
  local dir="${CARGO_TARGET_DIR:-$KILN_ROOT/target}"
  [[ "$dir" == /* ]] || dir="$KILN_ROOT/$dir"
  printf '%s\n' "$dir"
}

# Point the services at the local infra unless the caller overrides it.
export_infra_env() {
  export KILN__KAFKA__BOOTSTRAP_SERVERS="${KILN__KAFKA__BOOTSTRAP_SERVERS:-$KILN_KAFKA_BOOTSTRAP}"
  export KILN__MONGO__URI="${KILN__MONGO__URI:-$KILN_MONGO_URI}"
  export KILN__REDIS__URL="${KILN__REDIS__URL:-$KILN_REDIS_URL}"
}

# cargo_build PROFILE(debug|release)
cargo_build() {
  local profile="$1" args=(build --workspace --bins)
  command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust via rustup)"
  [[ "$profile" == release ]] && args+=(--release)
  log "cargo ${args[*]}"
  (cd "$KILN_ROOT" && cargo "${args[@]}")
}

# web_build: the web app's static build in frontend/dist, which api serves (api.static_dir).
# Best effort: without npm or on a failed build the API still runs, and this says so.
web_build() {
  local dir="$KILN_ROOT/frontend"
  [[ -f "$dir/package.json" ]] || return 0
  if ! command -v npm >/dev/null 2>&1; then
    warn "npm not found: web app not built (api serves the API only)"
    return 0
  fi
  log "building the web app (frontend/: npm run build)"
  if ! { [[ -d "$dir/node_modules" ]] || (cd "$dir" && npm ci --no-audit --no-fund); } ||
    ! (cd "$dir" && npm run --silent build); then
    warn "web app build failed: api serves the API only (see the npm output above)"
  fi
}

# services_up PROFILE
services_up() {
  local profile="$1" bindir svc pid bin logf missing=()
  bindir="$(cargo_target_dir)/$profile"
  for svc in "${KILN_SERVICES[@]}"; do
    service_pid "$svc" >/dev/null && continue
    [[ -x "$bindir/$svc" ]] || missing+=("$svc")
  done
  if ((${#missing[@]} > 0)); then
    die "missing binaries in ${bindir#"$KILN_ROOT"/}: ${missing[*]} (run ./deploy.sh dev --build)"
  fi
  [[ -f "$KILN_ROOT/$KILN_CONFIG" || -f "$KILN_CONFIG" ]] || warn "config file $KILN_CONFIG not found (services may fail to start)"
  export_infra_env
  # k8s-worker starts the runner of the same build as the services.
  export KILN__RUNTIME__RUNNER_PATH="${KILN__RUNTIME__RUNNER_PATH:-$bindir/kiln-runner}"
  for svc in "${KILN_SERVICES[@]}"; do
    if pid="$(service_pid "$svc")"; then
      ok "$svc already running (pid $pid; left alone: use --restart to pick up a new build)"
      continue
    fi
    bin="$bindir/$svc"
    logf="$(service_log "$svc")"
    rotate_log "$logf"
    pid="$(spawn_detached "$(service_pidfile "$svc")" "$logf" "$KILN_ROOT" "$bin" --config "$KILN_CONFIG")"
    log "started $svc (pid $pid, :$(service_port "$svc"), log ${logf#"$KILN_ROOT"/})"
  done
}

# services_wait TIMEOUT: every service answers 200 on /health/ready.
services_wait() {
  local timeout="$1" deadline svc code pending
  deadline=$(($(now_s) + timeout))
  pending=("${KILN_SERVICES[@]}")
  log "waiting up to ${timeout}s for /health/ready of ${#pending[@]} services"
  while ((${#pending[@]} > 0)); do
    local still=()
    for svc in "${pending[@]}"; do
      code="$(service_health_code "$svc")"
      if [[ "$code" == 200 ]]; then
        ok "$svc ready ($(service_health_url "$svc"))"
        continue
      fi
      if ! service_pid "$svc" >/dev/null; then
        err "$svc is not running (it exited during startup)"
        log_tail "$(service_log "$svc")" 30
        return 1
      fi
      still+=("$svc")
    done
    pending=("${still[@]+"${still[@]}"}")
    ((${#pending[@]} == 0)) && break
    if (($(now_s) >= deadline)); then
      for svc in "${pending[@]}"; do
        err "$svc not ready before timeout (last /health/ready status: $(service_health_code "$svc"))"
        log_tail "$(service_log "$svc")" 30
      done
      return 1
    fi
    sleep 1
  done
}

# services_down: SIGTERM all, wait up to the grace period, then SIGKILL.
services_down() {
  local svc pid pids=() names=() i waited=0
  for svc in "${KILN_SERVICES[@]}"; do
    if pid="$(service_pid "$svc")"; then
      log "stopping $svc (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      names+=("$svc")
    fi
  done
  if ((${#pids[@]} == 0)); then
    ok "no service running"
    return 0
  fi
  # Stop in parallel: total wait is bounded by the grace period, not 7x it.
  while ((waited < KILN_SERVICE_STOP_GRACE * 10)); do
    local alive=0
    for pid in "${pids[@]}"; do
      pid_matches "$pid" && alive=1
    done
    ((alive)) || break
    sleep 0.1
    waited=$((waited + 1))
  done
  for i in "${!pids[@]}"; do
    if pid_matches "${pids[$i]}" "$(service_pid_pattern "${names[$i]}")"; then
      warn "${names[$i]} (pid ${pids[$i]}) did not exit within ${KILN_SERVICE_STOP_GRACE}s, sending SIGKILL"
      kill -KILL "${pids[$i]}" 2>/dev/null || true
    fi
    rm -f "$(service_pidfile "${names[$i]}")"
    ok "${names[$i]} stopped"
  done
}

# ---------------------------------------------------------------------------
# status / logs
# ---------------------------------------------------------------------------

kiln_status() {
  local name pid state ready fmt="%-18s %-8s %-8s %-9s %-6s %s\n"
  # shellcheck disable=SC2059 # fmt is a constant format string.
  printf "$fmt" NAME KIND PID STATE READY ENDPOINT
  for name in "${KILN_INFRA_NAMES[@]}"; do
    if pid="$(infra_pid "$name")"; then state=running; else pid="-" state=stopped; fi
    if "${name}_ready"; then
      ready=yes
      [[ "$state" == stopped ]] && state=external
    else
      ready=no
    fi
    local endpoint
    case "$name" in
      kafka) endpoint="$KILN_KAFKA_BOOTSTRAP" ;;
      mongo) endpoint="$KILN_MONGO_URI" ;;
      redis) endpoint="$KILN_REDIS_URL" ;;
    esac
    # shellcheck disable=SC2059
    printf "$fmt" "$name" infra "$pid" "$state" "$ready" "$endpoint"
  done
  for name in "${KILN_SERVICES[@]}"; do
    if pid="$(service_pid "$name")"; then state=running; else pid="-" state=stopped; fi
    local code
    code="$(service_health_code "$name")"
    if [[ "$code" == 200 ]]; then ready=yes; elif [[ "$code" == 000 ]]; then ready=no; else ready="$code"; fi
    # shellcheck disable=SC2059
    printf "$fmt" "$name" service "$pid" "$state" "$ready" "$(service_health_url "$name")"
  done
}

# kiln_logs [NAME] [--no-follow] [-n LINES]
kiln_logs() {
  local follow=1 lines=50 name="" files=()
  while (($# > 0)); do
    case "$1" in
      --no-follow) follow=0 ;;
      -f | --follow) follow=1 ;;
      -n | --lines)
        require_uint "$1" "${2:-}"
        lines="$2"
        shift
        ;;
      -*) die "logs: unknown option $1" ;;
      *)
        [[ -z "$name" ]] || die "logs: only one name at a time"
        name="$1"
        ;;
    esac
    shift
  done
  if [[ -n "$name" ]]; then
    is_service "$name" || [[ " ${KILN_INFRA_NAMES[*]} prometheus otel-collector " == *" $name "* ]] ||
      die "logs: unknown name '$name' (one of: ${KILN_INFRA_NAMES[*]} ${KILN_SERVICES[*]} prometheus otel-collector)"
    files=("$KILN_LOG_DIR/$name.log")
    [[ -f "${files[0]}" ]] || die "no log yet: ${files[0]#"$KILN_ROOT"/}"
  else
    local f
    shopt -s nullglob
    for f in "$KILN_LOG_DIR"/*.log; do
      [[ "$f" == *-install.log ]] || files+=("$f")
    done
    shopt -u nullglob
    ((${#files[@]} > 0)) || die "no logs yet in ${KILN_LOG_DIR#"$KILN_ROOT"/}"
  fi
  if ((follow)); then
    exec tail -n "$lines" -F "${files[@]}"
  else
    tail -n "$lines" "${files[@]}"
  fi
}
