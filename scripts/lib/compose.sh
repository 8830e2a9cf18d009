# shellcheck shell=bash
# Docker mode: the same commands drive docker-compose.yaml when a Docker engine answers.
# Sourced by deploy.sh after common.sh.

# KILN_MODE=native|docker forces a mode; by default docker when `docker info` succeeds and the
# compose plugin is there, native otherwise.
kiln_mode() {
  case "${KILN_MODE:-auto}" in
    native | docker) printf '%s\n' "$KILN_MODE" ;;
    auto)
      if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 &&
        docker compose version >/dev/null 2>&1; then
        echo docker
      else
        echo native
      fi
      ;;
    *) die "KILN_MODE must be native, docker or auto (got '$KILN_MODE')" ;;
  esac
}

compose() {
  (cd "$KILN_ROOT" && docker compose "$@")
}

# _random_secret LENGTH: alphanumeric, safe inside sed and YAML.
_random_secret() {
  head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | cut -c1-"$1"
}

# .env holds the secrets compose interpolates. A first run creates it from .env.example with a
# fresh random JWT secret, so `./deploy.sh dev` works without a manual step.
compose_ensure_env() {
  local env="$KILN_ROOT/.env"
  [[ -f "$env" ]] && return 0
  sed -e "s|^KILN_JWT_SECRET=.*|KILN_JWT_SECRET=$(_random_secret 48)|" \
    -e "s|^KILN_DEFAULT_USER_PASSWORD=.*|KILN_DEFAULT_USER_PASSWORD=$(_random_secret 20)|" \
    -e "s|^KILN_ADMIN_USER_PASSWORD=.*|KILN_ADMIN_USER_PASSWORD=$(_random_secret 20)|" \
    "$KILN_ROOT/.env.example" >"$env"
  chmod 600 "$env"
  ok "created .env from .env.example with random secrets (the passwords are in .env)"
}

# compose_up BUILD(0|1) WAIT(0|1) TIMEOUT PROFILE...
compose_up() {
  local build="$1" wait="$2" timeout="$3" profile args=()
  shift 3
  compose_ensure_env
  for profile in "$@"; do args+=(--profile "$profile"); done
  local up=(up --detach --remove-orphans)
  ((build)) && up+=(--build)
  ((wait)) && up+=(--wait --wait-timeout "$timeout")
  log "docker compose ${args[*]} ${up[*]}"
  compose "${args[@]}" "${up[@]}"
}

compose_infra_up() {
  local wait="$1" timeout="$2" up=(up --detach kafka mongo redis)
  compose_ensure_env
  ((wait)) && up+=(--wait --wait-timeout "$timeout")
  compose "${up[@]}"
}

compose_down() {
  # Every profile, so observability and debug containers stop too; volumes are kept.
  compose --profile '*' down --remove-orphans
}

compose_status() {
  compose --profile '*' ps --all --format 'table {{.Service}}\t{{.State}}\t{{.Health}}\t{{.Ports}}'
}

# compose_logs [NAME] [--no-follow] [-n LINES]
compose_logs() {
  local follow=(--follow) lines=50 names=()
  while (($# > 0)); do
    case "$1" in
      --no-follow) follow=() ;;
      -f | --follow) follow=(--follow) ;;
      -n | --lines)
        require_uint "$1" "${2:-}"
        lines="$2"
        shift
        ;;
      -*) die "logs: unknown option $1" ;;
      *) names+=("$1") ;;
    esac
    shift
  done
  compose --profile '*' logs "${follow[@]}" --tail "$lines" "${names[@]}"
}
