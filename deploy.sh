#!/usr/bin/env bash
# Kiln local deployment: infrastructure (Kafka, MongoDB, Redis), the seven services and the web
# app, through docker compose when a Docker engine answers, natively otherwise. See `./deploy.sh help`.
# The work is done by scripts/lib/*.sh; this file only dispatches.
set -euo pipefail

KILN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"

# shellcheck source=scripts/lib/common.sh
source "$KILN_ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/infra.sh
source "$KILN_ROOT/scripts/lib/infra.sh"
# shellcheck source=scripts/lib/services.sh
source "$KILN_ROOT/scripts/lib/services.sh"
# shellcheck source=scripts/lib/test.sh
source "$KILN_ROOT/scripts/lib/test.sh"
# shellcheck source=scripts/lib/compose.sh
source "$KILN_ROOT/scripts/lib/compose.sh"
# shellcheck source=scripts/lib/observability.sh
source "$KILN_ROOT/scripts/lib/observability.sh"
# shellcheck source=scripts/lib/validate.sh
source "$KILN_ROOT/scripts/lib/validate.sh"
# shellcheck source=scripts/lib/check.sh
source "$KILN_ROOT/scripts/lib/check.sh"

usage() {
  cat <<EOF
Usage: ./deploy.sh <command> [options]

Local Kiln. Mode: docker when 'docker info' succeeds and the compose plugin is
installed (then dev/infra/down/status/logs drive docker-compose.yaml), native
otherwise; KILN_MODE=native|docker forces one (now: $(kiln_mode)). Natively,
everything generated (jars, venvs, data, logs, pid files, configs) lives in
.kiln/ at the repo root (git-ignored). All servers listen on 127.0.0.1 only.

Commands:
  infra [--wait|--no-wait] [--timeout N]
        Install what is missing (first run: Debian packages, Kafka $KILN_KAFKA_VERSION jars
        from Maven Central, $KILN_SECANTUS_SPEC from PyPI), then start what is not
        running yet and wait until it answers (default; timeout ${KILN_DEFAULT_TIMEOUT}s):
          Kafka (KRaft)  $KILN_KAFKA_BOOTSTRAP
          MongoDB wire   $KILN_MONGO_URI
          Redis          $KILN_REDIS_URL
  infra --stop
        Stop the three servers (SIGTERM, then SIGKILL).

  dev [--build|--no-build] [--release] [--restart] [--wait] [--timeout N]
      [--observability] [--debug]
        infra, then cargo build --workspace --bins and the web app (npm run build in
        frontend/, served by api from frontend/dist) unless --no-build, then start
        the services in the background: ${KILN_SERVICES[*]}
        Each runs as '<bin> --config $KILN_CONFIG' from the repo root; a running
        service is left alone (--restart stops the services first). --wait polls
        http://127.0.0.1:<port>/health/ready of every service until 200.
        --observability: natively Prometheus (Debian package) on :$KILN_PROMETHEUS_PORT and an
        OTel collector built from Go modules (OTLP :4318, spans to its log; the services
        export to it); Jaeger and Grafana are skipped natively and it says so.
        --debug: natively nothing extra (Kafka UI needs Docker; use kafka-topics and
        kafka-consumer-groups below).
        Docker mode: docker compose up -d [--build] [--wait] with the profiles
        'observability' (collector, Jaeger, Prometheus, Grafana) and 'debug' (Kafka UI).
  down [--keep-infra]
        Stop the services (SIGTERM, 30 s, SIGKILL), native Prometheus and collector, then the infra.
        Docker mode: docker compose down (all profiles; volumes are kept).
  status
        Table of the infra servers and services: pid, running, ready (docker compose ps).
  logs [NAME] [--no-follow] [-n LINES]
        Follow a service log or kafka|mongo|redis|prometheus|otel-collector (all logs when no NAME).
  check
        Static checks, no infra: cargo fmt --check, clippy -D warnings, dependency audit
        (cargo-audit or cargo-deny when installed, else a stated skip), frontend lint and
        svelte-check (when frontend/package.json exists), and 'validate'.
  validate
        Schema validation of docker-compose.yaml (compose-go), every Kubernetes manifest
        (kustomize + kubernetes-validate --strict), the Prometheus rules (promtool) and
        both OTel collector configs (the collector built from Go modules).
  openapi [PATH]
        Write the API's OpenAPI document (generated from the code by 'api --openapi'; no
        infrastructure needed) to PATH (default docs/openapi.json).
  types
        Frontend API types from docs/openapi.json (cd frontend && npm run gen:api).
  test [--timeout N]
        infra --wait, then with KILN__KAFKA__BOOTSTRAP_SERVERS, KILN__MONGO__URI and
        KILN__REDIS__URL pointing at it: cargo fmt --check, clippy -D warnings,
        schema validation ('validate'), cargo build, cargo test ${KILN_CARGO_TEST_ARGS[*]}
        (stops at the first failure; the infra is left running).
  kafka-topics ARGS...
        Kafka TopicCommand against $KILN_KAFKA_BOOTSTRAP, e.g.
          ./deploy.sh kafka-topics --list
          ./deploy.sh kafka-topics --create --topic demo --partitions 3
  kafka-consumer-groups ARGS...
        Kafka ConsumerGroupCommand, e.g. ./deploy.sh kafka-consumer-groups --list
  help
        This text.

Also: after the first 'infra', .kiln/bin/kafka-topics and .kiln/bin/kafka-consumer-groups
are standalone wrappers (--bootstrap-server defaults to $KILN_KAFKA_BOOTSTRAP).

Service ports: api 8080, saga-orchestrator 9101, k8s-worker 9102, pod-monitor 9103,
result-processor 9104, event-replay 9105, dlq-processor 9106.
Logs: .kiln/logs/<name>.log   Pid files: .kiln/run/<name>.pid
EOF
}

cmd_infra() {
  local wait=1 timeout="$KILN_DEFAULT_TIMEOUT" stop=0
  while (($# > 0)); do
    case "$1" in
      --wait) wait=1 ;;
      --no-wait) wait=0 ;;
      --timeout)
        require_uint --timeout "${2:-}"
        timeout="$2"
        shift
        ;;
      --timeout=*)
        timeout="${1#--timeout=}"
        require_uint --timeout "$timeout"
        ;;
      --stop) stop=1 ;;
      -h | --help) usage; return 0 ;;
      *) die "infra: unknown option $1" ;;
    esac
    shift
  done
  ensure_state_dirs
  if [[ "$(kiln_mode)" == docker ]]; then
    if ((stop)); then compose stop kafka mongo redis; else compose_infra_up "$wait" "$timeout"; fi
    return
  fi
  if ((stop)); then
    infra_down
  else
    infra_up "$wait" "$timeout"
  fi
}

cmd_dev() {
  local build=1 profile=debug wait=0 timeout="$KILN_DEFAULT_TIMEOUT" restart=0 observability=0 debug=0
  while (($# > 0)); do
    case "$1" in
      --build) build=1 ;;
      --no-build) build=0 ;;
      --release) profile=release ;;
      --restart) restart=1 ;;
      --observability) observability=1 ;;
      --debug) debug=1 ;;
      --wait) wait=1 ;;
      --timeout)
        require_uint --timeout "${2:-}"
        timeout="$2"
        shift
        ;;
      --timeout=*)
        timeout="${1#--timeout=}"
        require_uint --timeout "$timeout"
        ;;
      -h | --help) usage; return 0 ;;
      *) die "dev: unknown option $1" ;;
    esac
    shift
  done
  ensure_state_dirs
  if [[ "$(kiln_mode)" == docker ]]; then
    local profiles=()
    ((observability)) && profiles+=(observability)
    ((debug)) && profiles+=(debug)
    compose_up "$build" "$wait" "$timeout" "${profiles[@]+"${profiles[@]}"}"
    compose_status
    return
  fi
  infra_up 1 "$timeout"
  if ((build)); then
    cargo_build "$profile"
    web_build
  fi
  if ((restart)); then
    services_down
  fi
  ((observability)) && observability_collector_up
  services_up "$profile"
  if ((wait)); then
    services_wait "$timeout"
  fi
  ((observability)) && observability_native_up
  ((debug)) && warn "--debug natively: Kafka UI SKIPPED (no native package); use ./deploy.sh kafka-topics and kafka-consumer-groups"
  cat <<EOF

$(bold "Kiln is up:") http://127.0.0.1:8080/
  status:  ./deploy.sh status
  logs:    ./deploy.sh logs [service]      (files in .kiln/logs/)
  stop:    ./deploy.sh down                (--keep-infra to leave Kafka/Mongo/Redis running)
EOF
}

cmd_down() {
  local keep_infra=0
  while (($# > 0)); do
    case "$1" in
      --keep-infra) keep_infra=1 ;;
      -h | --help) usage; return 0 ;;
      *) die "down: unknown option $1" ;;
    esac
    shift
  done
  ensure_state_dirs
  if [[ "$(kiln_mode)" == docker ]]; then
    compose_down
    return
  fi
  services_down
  observability_native_down
  if ((keep_infra)); then
    ok "infra left running"
  else
    infra_down
  fi
}

cmd_test() {
  local timeout="$KILN_DEFAULT_TIMEOUT"
  while (($# > 0)); do
    case "$1" in
      --timeout)
        require_uint --timeout "${2:-}"
        timeout="$2"
        shift
        ;;
      --timeout=*)
        timeout="${1#--timeout=}"
        require_uint --timeout "$timeout"
        ;;
      -h | --help) usage; return 0 ;;
      *) die "test: unknown option $1" ;;
    esac
    shift
  done
  ensure_state_dirs
  kiln_test "$timeout"
}

cmd_openapi() {
  local out="${1:-docs/openapi.json}"
  [[ "$out" == /* ]] || out="$KILN_ROOT/$out"
  mkdir -p "$(dirname "$out")"
  (cd "$KILN_ROOT" && cargo run --quiet -p api --bin api -- --openapi) >"$out.tmp"
  mv "$out.tmp" "$out"
  ok "OpenAPI document written to $out"
}

main() {
  local cmd="${1:-help}"
  (($# > 0)) && shift
  case "$cmd" in
    infra) cmd_infra "$@" ;;
    dev) cmd_dev "$@" ;;
    down) cmd_down "$@" ;;
    status)
      if [[ "$(kiln_mode)" == docker ]]; then compose_status; else ensure_state_dirs && kiln_status && observability_status; fi
      ;;
    logs)
      if [[ "$(kiln_mode)" == docker ]]; then compose_logs "$@"; else kiln_logs "$@"; fi
      ;;
    check) ensure_state_dirs && kiln_check ;;
    validate) ensure_state_dirs && kiln_validate ;;
    openapi) cmd_openapi "$@" ;;
    types) kiln_types ;;
    test) cmd_test "$@" ;;
    kafka-topics) ensure_state_dirs && kafka_cli kafka-topics "$@" ;;
    kafka-consumer-groups) ensure_state_dirs && kafka_cli kafka-consumer-groups "$@" ;;
    help | -h | --help) usage ;;
    *)
      err "unknown command: $cmd"
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
