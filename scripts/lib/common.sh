# shellcheck shell=bash
# shellcheck disable=SC2034 # variables are used by the other scripts/lib files.
# Shared helpers for deploy.sh: paths, logging, pid files, waiting, packages.
# Sourced by deploy.sh (which sets `set -euo pipefail`); never executed directly.

# ---------------------------------------------------------------------------
# Paths. KILN_ROOT is the repo root (set by deploy.sh, else derived from this
# file's location), so the scripts work from any cwd. Everything generated
# lives under $KILN_STATE (.kiln/, git-ignored).
# ---------------------------------------------------------------------------
KILN_ROOT="${KILN_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)}"
KILN_STATE="$KILN_ROOT/.kiln"
KILN_INFRA_DIR="$KILN_STATE/infra"
KILN_LOG_DIR="$KILN_STATE/logs"
KILN_RUN_DIR="$KILN_STATE/run"
KILN_BIN_DIR="$KILN_STATE/bin"
KILN_TEMPLATES="$KILN_ROOT/scripts/infra"

# ---------------------------------------------------------------------------
# Pinned versions and fixed local endpoints (127.0.0.1 only, never localhost).
# Bump KILN_KAFKA_VERSION together with <kafka.version> in scripts/infra/kafka-pom.xml.
# ---------------------------------------------------------------------------
KILN_KAFKA_VERSION="4.1.1"
KILN_SECANTUS_SPEC="secantusdb==0.7.0b3"
KILN_HOST="127.0.0.1"
KILN_KAFKA_PORT=9092
KILN_KAFKA_CONTROLLER_PORT=9093
KILN_MONGO_PORT=27017
KILN_REDIS_PORT=6379
KILN_KAFKA_BOOTSTRAP="$KILN_HOST:$KILN_KAFKA_PORT"
# The same options as config.toml's default (see the comment there).
KILN_MONGO_URI="mongodb://$KILN_HOST:$KILN_MONGO_PORT/?directConnection=true&retryWrites=false&maxPoolSize=4&serverMonitoringMode=poll"
KILN_REDIS_URL="redis://$KILN_HOST:$KILN_REDIS_PORT/"

KILN_DEFAULT_TIMEOUT=120

# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------
if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then
  _C_RED=$'\033[31m' _C_GRN=$'\033[32m' _C_YEL=$'\033[33m' _C_BLU=$'\033[34m' _C_BLD=$'\033[1m' _C_OFF=$'\033[0m'
else
  _C_RED='' _C_GRN='' _C_YEL='' _C_BLU='' _C_BLD='' _C_OFF=''
fi

log()  { printf '%s==>%s %s\n' "$_C_BLU" "$_C_OFF" "$*"; }
ok()   { printf '%s ok%s %s\n' "$_C_GRN" "$_C_OFF" "$*"; }
warn() { printf '%swarn:%s %s\n' "$_C_YEL" "$_C_OFF" "$*" >&2; }
err()  { printf '%serror:%s %s\n' "$_C_RED" "$_C_OFF" "$*" >&2; }
die()  { err "$*"; exit 1; }
bold() { printf '%s%s%s' "$_C_BLD" "$*" "$_C_OFF"; }

# Print the last N lines of a log file to stderr, framed.
log_tail() {
  local file="$1" n="${2:-30}"
  if [[ -s "$file" ]]; then
    # The first errors are often more telling than the end of a stack trace.
    if grep -qE '(ERROR|FATAL|Error:|Exception:)' "$file"; then
      printf -- '----- first errors in %s -----\n' "$file" >&2
      grep -m 5 -E '(ERROR|FATAL|Error:|Exception:)' "$file" | cut -c1-400 >&2
    fi
    printf -- '----- last %s lines of %s -----\n' "$n" "$file" >&2
    tail -n "$n" "$file" >&2
    printf -- '----- end of %s -----\n' "$file" >&2
  else
    printf -- '(log %s is empty or missing)\n' "$file" >&2
  fi
}

ensure_state_dirs() {
  mkdir -p "$KILN_STATE" "$KILN_INFRA_DIR" "$KILN_LOG_DIR" "$KILN_RUN_DIR" "$KILN_BIN_DIR"
}

# Keep one previous log around, start a fresh one.
rotate_log() {
  local file="$1"
  if [[ -s "$file" ]]; then
    mv -f "$file" "$file.prev"
  fi
  : >"$file"
}

# Validate a positive integer option value.
require_uint() {
  local name="$1" value="${2:-}"
  [[ "$value" =~ ^[0-9]+$ ]] || die "$name expects a non-negative integer, got '${value}'"
}

now_s() { date +%s; }

# ---------------------------------------------------------------------------
# Processes and pid files
# ---------------------------------------------------------------------------

# pid_cmdline PID -> the process's command line, args separated by spaces.
pid_cmdline() {
  local pid="$1"
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline"
}

# pid_matches PID PATTERN: PID is alive (not a zombie) and its command line
# contains PATTERN (fixed string; empty pattern = any command).
pid_matches() {
  local pid="$1" pattern="${2:-}" cmd state
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  state="$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"
  [[ "$state" != "Z" ]] || return 1
  [[ -z "$pattern" ]] && return 0
  cmd="$(pid_cmdline "$pid" 2>/dev/null)" || return 1
  [[ "$cmd" == *"$pattern"* ]]
}

# pidfile_pid FILE PATTERN: prints the pid recorded in FILE when that process
# is alive and matches PATTERN; otherwise removes the stale file and fails.
pidfile_pid() {
  local file="$1" pattern="${2:-}" pid
  [[ -f "$file" ]] || return 1
  pid="$(head -n1 "$file" 2>/dev/null | tr -dc '0-9')"
  if [[ -n "$pid" ]] && pid_matches "$pid" "$pattern"; then
    printf '%s\n' "$pid"
    return 0
  fi
  rm -f "$file"
  return 1
}

# spawn_detached PIDFILE LOGFILE CWD CMD...: starts CMD in its own session
# (immune to the caller's terminal/SIGHUP), stdout+stderr appended to LOGFILE,
# and records the *real* pid of CMD in PIDFILE (the helper shell writes its own
# pid and then execs CMD, so the pid survives the exec). Prints the pid.
spawn_detached() {
  local pidfile="$1" logfile="$2" cwd="$3"
  shift 3
  rm -f "$pidfile"
  # shellcheck disable=SC2016 # $$ / $0 / $1 are expanded by the inner shell.
  setsid -f bash -c 'cd "$1" || exit 1; echo $$ >"$0"; shift; exec "$@"' \
    "$pidfile" "$cwd" "$@" >>"$logfile" 2>&1 </dev/null
  local i
  for ((i = 0; i < 100; i++)); do
    if [[ -s "$pidfile" ]]; then
      cat "$pidfile"
      return 0
    fi
    sleep 0.05
  done
  err "could not start: $*"
  return 1
}

# stop_pid NAME PID GRACE_SECONDS: SIGTERM, wait up to GRACE, then SIGKILL.
stop_pid() {
  local name="$1" pid="$2" grace="${3:-30}" waited=0
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null; do
    if ((waited >= grace * 10)); then
      warn "$name (pid $pid) did not exit within ${grace}s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
      break
    fi
    # A zombie child of ours would never go away by itself; it is gone for us.
    [[ "$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)" == "Z" ]] && break
    sleep 0.1
    waited=$((waited + 1))
  done
  return 0
}

# stop_pidfile NAME PIDFILE PATTERN GRACE: idempotent stop via a pid file.
stop_pidfile() {
  local name="$1" file="$2" pattern="$3" grace="${4:-30}" pid
  if pid="$(pidfile_pid "$file" "$pattern")"; then
    log "stopping $name (pid $pid)"
    stop_pid "$name" "$pid" "$grace"
    rm -f "$file"
    ok "$name stopped"
  else
    ok "$name not running"
  fi
}

# tcp_open HOST PORT: something accepts TCP connections there.
tcp_open() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# ---------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------
_SUDO=""
_apt_updated=0

_sudo_init() {
  if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      _SUDO="sudo"
    else
      die "not root and sudo is not available: cannot install packages"
    fi
  fi
}

# apt_install PKG...: installs with apt-get, running `apt-get update` only if
# the first attempt fails.
apt_install() {
  (($# > 0)) || return 0
  command -v apt-get >/dev/null 2>&1 || die "missing packages ($*) and apt-get is not available"
  _sudo_init
  log "installing Debian packages: $*"
  if ! $_SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; then
    if ((_apt_updated == 0)); then
      log "apt-get install failed; running apt-get update and retrying"
      $_SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
      _apt_updated=1
      $_SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
    else
      return 1
    fi
  fi
}

# ensure_commands CMD:PKG ...: installs PKG for each CMD that is not on PATH.
ensure_commands() {
  local spec cmd pkg missing=()
  for spec in "$@"; do
    cmd="${spec%%:*}"
    pkg="${spec#*:}"
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  # de-duplicate
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  apt_install "${missing[@]}"
}

kiln_java() {
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    printf '%s\n' "$JAVA_HOME/bin/java"
  else
    command -v java
  fi
}
