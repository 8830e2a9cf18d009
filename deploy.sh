#!/usr/bin/env bash
# Kiln local deployment: infrastructure (Kafka, MongoDB-wire SecantusDB, Redis)
# and the seven services, natively, without Docker. See `./deploy.sh help`.
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

usage() {
  cat <<EOF
Usage: ./deploy.sh <command> [options]

Local Kiln without Docker. Everything generated (jars, venvs, data, logs, pid
files, configs) lives in .kiln/ at the repo root (git-ignored). All servers
listen on 127.0.0.1 only.

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
        infra, then cargo build --workspace --bins (unless --no-build), then start
        the services in the background: ${KILN_SERVICES[*]}
        Each runs as '<bin> --config $KILN_CONFIG' from the repo root; a running
        service is left alone (--restart stops the services first). --wait polls
        http://127.0.0.1:<port>/health/ready of every service until 200.
  down [--keep-infra]
        Stop the services (SIGTERM, 30 s, SIGKILL), then the infra.
  status
        Table of the infra servers and services: pid, running, ready.
  logs [NAME] [--no-follow] [-n LINES]
        Follow a service log or kafka|mongo|redis (all logs when no NAME).
  test [--timeout N]
        infra --wait, then with KILN__KAFKA__BOOTSTRAP_SERVERS, KILN__MONGO__URI and
        KILN__REDIS__URL pointing at it: cargo fmt --check, clippy -D warnings,
        cargo build, cargo test ${KILN_CARGO_TEST_ARGS[*]}
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
  if ((stop)); then
    infra_down
  else
    infra_up "$wait" "$timeout"
  fi
}

cmd_dev() {
  local build=1 profile=debug wait=0 timeout="$KILN_DEFAULT_TIMEOUT" restart=0
  while (($# > 0)); do
    case "$1" in
      --build) build=1 ;;
      --no-build) build=0 ;;
      --release) profile=release ;;
      --restart) restart=1 ;;
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
  infra_up 1 "$timeout"
  if ((build)); then
    cargo_build "$profile"
  fi
  if ((restart)); then
    services_down
  fi
  services_up "$profile"
  if ((wait)); then
    services_wait "$timeout"
  fi
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
  services_down
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

main() {
  local cmd="${1:-help}"
  (($# > 0)) && shift
  case "$cmd" in
    infra) cmd_infra "$@" ;;
    dev) cmd_dev "$@" ;;
    down) cmd_down "$@" ;;
    status) ensure_state_dirs && kiln_status ;;
    logs) kiln_logs "$@" ;;
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
