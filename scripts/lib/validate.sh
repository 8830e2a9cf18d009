# shellcheck shell=bash
# Schema validation of the deployment files, offline: `./deploy.sh test` and `./deploy.sh check`.
# Sourced by deploy.sh after common.sh and observability.sh.
#
#   docker-compose.yaml    scripts/compose-check: compose-go, the loader of `docker compose` itself
#                          (interpolation, compose-spec JSON schema, consistency), every profile on;
#                          works without a Docker engine or the compose plugin.
#   k8s/platform overlays  `kubectl kustomize` (or kustomize from its Go module) renders each
#                          overlay; kubernetes-validate (PyPI, ships
#   k8s/executors/*.yaml   the Kubernetes JSON schemas) checks every object, --strict: unknown fields
#                          fail too.
#   Prometheus rules       promtool (Debian package prometheus) checks the alert rules and the
#                          native scrape config.
#   Collector configs      `otelcol-kiln validate` (the collector of scripts/otelcol, the compose
#                          image's version, built once from Go modules) on both collector configs.

KILN_KUBE_VERSION="1.34.0"
KILN_KUBEVAL_SPEC="kubernetes-validate==1.37.0"
KILN_KUBEVAL_VENV="$KILN_STATE/venvs/kubernetes-validate"
KILN_KUSTOMIZE_VERSION="v5.7.1"

_compose_check_bin() {
  local bin="$KILN_BIN_DIR/compose-check" src="$KILN_ROOT/scripts/compose-check"
  command -v go >/dev/null 2>&1 || die "go not found: needed to build scripts/compose-check"
  if [[ ! -x "$bin" || "$src/main.go" -nt "$bin" || "$src/go.mod" -nt "$bin" ]]; then
    (cd "$src" && go build -o "$bin" .) >&2 || return 1
  fi
  printf '%s\n' "$bin"
}

validate_compose() {
  local bin env
  bin="$(_compose_check_bin)" || return 1
  # .env.example with a placeholder secret: the file must load with exactly what it documents.
  env="$(mktemp)"
  sed -e 's|^KILN_JWT_SECRET=.*|KILN_JWT_SECRET=placeholder-secret-for-schema-validation-only|' \
    -e 's|^KILN_DEFAULT_USER_PASSWORD=.*|&placeholder|' \
    -e 's|^KILN_ADMIN_USER_PASSWORD=.*|&placeholder|' \
    "$KILN_ROOT/.env.example" >"$env"
  local rc=0
  "$bin" -env-file "$env" "$KILN_ROOT/docker-compose.yaml" || rc=1
  "$bin" -env-file "$env" -profile observability -profile debug "$KILN_ROOT/docker-compose.yaml" || rc=1
  rm -f "$env"
  return "$rc"
}

_kubeval_bin() {
  local bin="$KILN_KUBEVAL_VENV/bin/kubernetes-validate"
  if [[ ! -x "$bin" ]] || ! "$KILN_KUBEVAL_VENV/bin/pip" show -q kubernetes-validate >/dev/null 2>&1; then
    python3 -m venv "$KILN_KUBEVAL_VENV" >&2 || return 1
    "$KILN_KUBEVAL_VENV/bin/pip" install -q "$KILN_KUBEVAL_SPEC" >&2 || return 1
  fi
  printf '%s\n' "$bin"
}

# _kustomize DIR: the rendered overlay; kubectl's built-in kustomize, else kustomize itself built
# from its Go module (slower the first time).
_kustomize() {
  # The restrictor flag: the base's ConfigMap is the repository's config.toml itself.
  if command -v kubectl >/dev/null 2>&1; then
    kubectl kustomize --load-restrictor LoadRestrictionsNone "$1"
  else
    go run "sigs.k8s.io/kustomize/kustomize/v5@$KILN_KUSTOMIZE_VERSION" build \
      --load-restrictor LoadRestrictionsNone "$1"
  fi
}

validate_manifests() {
  local kubeval out rc=0 overlay f
  kubeval="$(_kubeval_bin)" || return 1
  out="$(mktemp -d)"
  for overlay in "$KILN_ROOT"/k8s/platform/overlays/*/; do
    overlay="${overlay%/}"
    f="$out/$(basename "$overlay").yaml"
    if ! _kustomize "$overlay" >"$f"; then
      err "kustomize failed for ${overlay#"$KILN_ROOT"/}"
      rc=1
      continue
    fi
    log "$(grep -c '^kind:' "$f") objects in overlay $(basename "$overlay")"
  done
  shopt -s nullglob
  local files=("$out"/*.yaml "$KILN_ROOT"/k8s/executors/*.yaml)
  shopt -u nullglob
  if ((${#files[@]} == 0)); then
    err "no manifests found"
    rc=1
  elif ! "$kubeval" --strict --quiet --no-warn -k "$KILN_KUBE_VERSION" "${files[@]}"; then
    rc=1
  fi
  rm -rf "$out"
  return "$rc"
}

validate_prometheus() {
  command -v promtool >/dev/null 2>&1 || apt_install prometheus >&2 || return 1
  promtool check rules "$KILN_ROOT/observability/prometheus/alerts.yml" &&
    promtool check config "$(_prometheus_native_config)"
}

validate_collector() {
  otelcol_build >&2 || return 1
  local config rc=0
  for config in otel-collector.yaml otel-collector.native.yaml; do
    if "$KILN_OTELCOL_BIN" validate --config "$KILN_ROOT/observability/$config"; then
      echo "observability/$config: valid"
    else
      rc=1
    fi
  done
  return "$rc"
}

# kiln_validate: every validator, all run even when one fails.
kiln_validate() {
  local rc=0
  log "docker-compose.yaml (compose-go)"
  validate_compose || rc=1
  log "Kubernetes manifests (kustomize + kubernetes-validate --strict, Kubernetes $KILN_KUBE_VERSION)"
  validate_manifests || rc=1
  log "Prometheus rules and config (promtool)"
  validate_prometheus || rc=1
  log "OpenTelemetry collector configs (otelcol-kiln validate)"
  validate_collector || rc=1
  return "$rc"
}
