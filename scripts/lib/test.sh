# shellcheck shell=bash
# `./deploy.sh test`: the full local check against the local infra.
# Sourced by deploy.sh after common.sh, infra.sh and services.sh.

# Arguments of the `cargo test` step: change them here, or for one run with
# KILN_TEST_ARGS="--workspace -- --test-threads=1" ./deploy.sh test
KILN_CARGO_TEST_ARGS=(--workspace -- --test-threads=2)
if [[ -n "${KILN_TEST_ARGS:-}" ]]; then
  read -r -a KILN_CARGO_TEST_ARGS <<<"$KILN_TEST_ARGS"
fi

_TEST_NAMES=()
_TEST_RESULTS=()
_TEST_TIMES=()

# _test_step NAME CMD...: run one step, record the result; fails when CMD fails.
_test_step() {
  local name="$1" started rc=0
  shift
  log "[$name] $*"
  started="$(now_s)"
  "$@" || rc=$?
  _TEST_NAMES+=("$name")
  _TEST_TIMES+=("$(($(now_s) - started))s")
  if ((rc == 0)); then
    _TEST_RESULTS+=(PASS)
  else
    _TEST_RESULTS+=("FAIL (exit $rc)")
  fi
  return "$rc"
}

_test_summary() {
  local t0="$1" failed="$2" i all=(infra fmt clippy schemas build frontend test e2e) name seen
  printf '\n%s\n' "$(bold "== kiln test summary ==")"
  for name in "${all[@]}"; do
    seen=0
    for i in "${!_TEST_NAMES[@]}"; do
      if [[ "${_TEST_NAMES[$i]}" == "$name" ]]; then
        printf '  %-8s %-15s %s\n' "$name" "${_TEST_RESULTS[$i]}" "${_TEST_TIMES[$i]}"
        seen=1
      fi
    done
    ((seen)) || printf '  %-8s %s\n' "$name" "not run"
  done
  printf '  total   %ss (infra is left running; ./deploy.sh down stops it)\n' "$(($(now_s) - t0))"
  if [[ -n "$failed" ]]; then
    printf '%sFAIL%s: step %s failed\n' "$_C_RED" "$_C_OFF" "$failed"
    return 1
  fi
  printf '%sPASS%s: infra, fmt, clippy, schemas, build, frontend, test and e2e all passed\n' "$_C_GRN" "$_C_OFF"
}

# Topics left by earlier test runs (each test uses its own random prefix) slow the broker down;
# delete them before a new run. Best effort: a failure here fails no test.
_delete_test_topics() {
  local pattern='(t|sys)[0-9a-f]{32}_.*'
  if "$KILN_BIN_DIR/kafka-topics" --list 2>/dev/null | grep -Eq "^${pattern}$"; then
    log "deleting topics of test runs"
    "$KILN_BIN_DIR/kafka-topics" --delete --topic "$pattern" >/dev/null 2>&1 || true
  fi
}

# Topics and databases the tests created (not every test can clean up after itself: a failed
# one stops before it does). Before a run, so the broker starts light; after it, so a dev stack
# on the same servers does not carry ~1 000 topics (the broker slows) and dozens of databases.
_delete_test_leftovers() {
  _delete_test_topics
  timeout 60 "$MONGO_VENV/bin/python" "$KILN_TEMPLATES/mongo_drop_test_dbs.py" "$KILN_MONGO_URI" ||
    warn "test databases were not dropped"
}

# The web app (frontend/): clean install from the lockfile, lint, type check, unit tests, build.
_test_frontend() {
  command -v npm >/dev/null 2>&1 || die "npm not found (Node.js 20+ is needed for frontend/)"
  (
    cd "$KILN_ROOT/frontend" &&
      npm ci --no-audit --no-fund &&
      npm run lint &&
      npm run check &&
      npm test &&
      npm run build
  )
}

# Browser tests against the binaries built above (frontend/e2e/run.sh starts and stops them);
# installs Debian's chromium when missing. Strict: a page whose API route is missing fails.
# Screenshots: frontend/test-results/screenshots/.
_test_e2e() {
  [[ -x /usr/bin/chromium ]] || apt_install chromium
  KILN_E2E_STRICT=1 "$KILN_ROOT/frontend/e2e/run.sh"
}

# kiln_test TIMEOUT
kiln_test() {
  local timeout="$1" t0 failed=""
  t0="$(now_s)"
  # A separate process, so `set -e` applies inside it (it would not inside `if`).
  if ! _test_step infra "$KILN_ROOT/deploy.sh" infra --wait --timeout "$timeout"; then
    _test_summary "$t0" infra
    return 1
  fi
  export_infra_env
  _delete_test_leftovers
  command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust via rustup)"
  cd "$KILN_ROOT" || return 1
  # A CI clone builds once: incremental state would only add gigabytes to its disk.
  if [[ "${CI:-}" == "true" ]]; then
    export CARGO_INCREMENTAL=0
  fi
  # Stop at the first failing step.
  if ! _test_step fmt cargo fmt --all -- --check; then
    failed="fmt"
  elif ! _test_step clippy cargo clippy --workspace --all-targets -- -D warnings; then
    failed="clippy"
  elif ! _test_step schemas kiln_validate; then
    failed="schemas"
  # Binaries and test executables in one build, with the features `cargo test` resolves (dev-
  # dependencies enable extra features): built apart, dependencies compile twice and the
  # target directory doubles.
  elif ! _test_step build cargo build --workspace --bins --tests; then
    failed="build"
  elif ! _test_step frontend _test_frontend; then
    failed="frontend"
  elif ! _test_step test cargo test "${KILN_CARGO_TEST_ARGS[@]}"; then
    failed="test"
  elif ! _test_step e2e _test_e2e; then
    failed="e2e"
  fi
  _delete_test_leftovers
  _test_summary "$t0" "$failed"
}
