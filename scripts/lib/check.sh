# shellcheck shell=bash
# `./deploy.sh check`: the static checks (no infrastructure needed) and `./deploy.sh types`.
# Sourced by deploy.sh after common.sh and validate.sh.

# The dependency audit. cargo-audit and cargo-deny's advisories check need the RustSec advisory
# database from GitHub, which some machines (this project's CI among them) cannot reach; the
# audit runs when the tool is installed and says plainly when it was skipped.
_check_audit() {
  if command -v cargo-audit >/dev/null 2>&1; then
    cargo audit
  elif command -v cargo-deny >/dev/null 2>&1 && [[ -f "$KILN_ROOT/deny.toml" ]]; then
    cargo deny check
  else
    warn "dependency audit SKIPPED: neither cargo-audit nor cargo-deny is installed" \
      "(cargo install --locked cargo-audit; it also needs network access to the RustSec advisory database)"
  fi
}

_frontend_npm() {
  local dir="$KILN_ROOT/frontend"
  command -v npm >/dev/null 2>&1 || die "npm not found (needed for frontend/)"
  if [[ ! -d "$dir/node_modules" ]]; then
    (cd "$dir" && npm ci --no-audit --no-fund) || return 1
  fi
  (cd "$dir" && npm run --silent "$@")
}

# kiln_check: fmt, clippy, audit, frontend lint + typecheck, deployment schemas. Runs every step,
# then fails when one did.
kiln_check() {
  local failed=() step
  cd "$KILN_ROOT" || return 1
  command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust via rustup)"
  log "[fmt] cargo fmt --all -- --check"
  cargo fmt --all -- --check || failed+=(fmt)
  log "[clippy] cargo clippy --workspace --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets -- -D warnings || failed+=(clippy)
  log "[audit]"
  _check_audit || failed+=(audit)
  if [[ -f frontend/package.json ]]; then
    log "[frontend] npm run lint && npm run check"
    { _frontend_npm lint && _frontend_npm check; } || failed+=(frontend)
  else
    warn "frontend/package.json not found: frontend lint and typecheck skipped"
  fi
  log "[schemas]"
  kiln_validate || failed+=(schemas)
  if ((${#failed[@]} > 0)); then
    for step in "${failed[@]}"; do err "check failed: $step"; done
    return 1
  fi
  ok "check passed: fmt, clippy, audit, frontend, schemas"
}

# kiln_types: frontend/src/lib/api/schema.d.ts from docs/openapi.json.
kiln_types() {
  [[ -f "$KILN_ROOT/frontend/package.json" ]] || die "frontend/package.json not found"
  [[ -f "$KILN_ROOT/docs/openapi.json" ]] ||
    die "docs/openapi.json not found (write it first with ./deploy.sh openapi)"
  _frontend_npm gen:api
  ok "frontend API types regenerated from docs/openapi.json"
}
