#!/usr/bin/env bash
# Opt-in suite against a REAL kube-apiserver (etcd 3.5 + kube-apiserver built from Go modules, KWOK
# as the fake kubelet), for the Kubernetes runtime's `#[ignore]`d tests. Not part of ./deploy.sh test:
# a cold build takes far longer than the unit suites (see docs/kubernetes.md for measured figures).
#
#   scripts/kube-e2e.sh build   # compile etcd, kube-apiserver and kwok into .kiln/kube-e2e/bin (cached)
#   scripts/kube-e2e.sh up      # start them on 127.0.0.1, write .kiln/kube-e2e/kubeconfig
#   scripts/kube-e2e.sh test    # cargo test the ignored kube_e2e tests against it
#   scripts/kube-e2e.sh down    # stop what `up` started
#   scripts/kube-e2e.sh         # all of the above
#
# Needs Go >= 1.26 and the Go module proxy; nothing is downloaded except Go modules.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
STATE="$ROOT/.kiln/kube-e2e"
BIN="$STATE/bin"
K8S_VERSION="${KILN_E2E_K8S_VERSION:-1.34.2}"
ETCD_VERSION="${KILN_E2E_ETCD_VERSION:-3.5.21}"
KWOK_VERSION="${KILN_E2E_KWOK_VERSION:-0.8.0}"
API_PORT="${KILN_E2E_API_PORT:-16443}"
ETCD_PORT="${KILN_E2E_ETCD_PORT:-12379}"
TOKEN="kiln-e2e-$(date +%s)-$$"

log() { printf '[kube-e2e] %s\n' "$*" >&2; }

build() {
  mkdir -p "$BIN" "$STATE/src"
  local start=$SECONDS
  if [[ ! -x "$BIN/etcd" ]]; then
    log "building etcd v$ETCD_VERSION"
    local d="$STATE/src/etcd"
    mkdir -p "$d" && cd "$d"
    [[ -f go.mod ]] || go mod init kiln.local/etcd >/dev/null 2>&1
    cat >main.go <<'EOF'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
    go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null
    go mod tidy >/dev/null
    go build -o "$BIN/etcd" .
    log "etcd built after $((SECONDS - start)) s"
  fi
  if [[ ! -x "$BIN/kube-apiserver" ]]; then
    log "building kube-apiserver v$K8S_VERSION"
    local d="$STATE/src/k8s"
    mkdir -p "$d" && cd "$d"
    [[ -f go.mod ]] || go mod init kiln.local/k8s >/dev/null 2>&1
    go mod edit -require="k8s.io/kubernetes@v$K8S_VERSION"
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
    # kubernetes requires its staging modules at v0.0.0 and replaces them with ./staging: point
    # each at its published v0.<minor>.<patch> instead.
    for m in $(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod"); do
      go mod edit -replace="$m=$m@v0.${K8S_VERSION#1.}"
    done
    printf 'package tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' >tools.go
    go mod tidy >/dev/null 2>&1
    go build -o "$BIN/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
    log "kube-apiserver built after $((SECONDS - start)) s"
  fi
  if [[ ! -x "$BIN/kwok" ]]; then
    log "building kwok v$KWOK_VERSION"
    GOBIN="$BIN" go install "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
    log "kwok built after $((SECONDS - start)) s"
  fi
  log "build done in $((SECONDS - start)) s"
}

wait_for() { # url, seconds
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    curl -fsk -H "Authorization: Bearer $(cat "$STATE/token")" "$1" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "timed out waiting for $1" && return 1
}

up() {
  down # a second `up` would otherwise leave the first one's processes running
  mkdir -p "$STATE/run" && cd "$STATE/run"
  [[ -f sa.key ]] || { openssl genrsa -out sa.key 2048 2>/dev/null && openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null; }
  echo "$TOKEN" >"$STATE/token"
  echo "$TOKEN,kiln-e2e-admin,1,\"system:masters\"" >tokens.csv
  rm -rf etcd-data
  "$BIN/etcd" --data-dir etcd-data --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" --listen-peer-urls http://127.0.0.1:12380 \
    >etcd.log 2>&1 &
  echo $! >etcd.pid
  "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 --secure-port="$API_PORT" --cert-dir=certs --token-auth-file=tokens.csv \
    --authorization-mode=RBAC --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file=sa.pub --service-account-signing-key-file=sa.key \
    --service-cluster-ip-range=10.96.0.0/24 --disable-admission-plugins=ServiceAccount \
    --etcd-compaction-interval=10s \
    >apiserver.log 2>&1 &
  echo $! >apiserver.pid
  wait_for "https://127.0.0.1:$API_PORT/readyz" 60
  cat >"$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: "https://127.0.0.1:$API_PORT", insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: "$TOKEN"}
contexts:
- name: e2e
  context: {cluster: e2e, user: admin}
current-context: e2e
EOF
  # KWOK's own "fast" stages (from its module source): nodes become Ready, pods on them Running,
  # deleted pods go away. Terminal phases are set by the tests through the status subresource.
  local stages
  stages="$(go env GOMODCACHE)/sigs.k8s.io/kwok@v$KWOK_VERSION/kustomize/stage"
  for f in node/fast/node-initialize pod/fast/pod-ready pod/fast/pod-delete; do
    cat "$stages/$f.yaml" && echo "---"
  done >stages.yaml
  "$BIN/kwok" --kubeconfig "$STATE/kubeconfig" --manage-all-nodes=true --config stages.yaml >kwok.log 2>&1 &
  echo $! >kwok.pid
  # The executor namespace, RBAC and policies exactly as shipped (also a server-side schema check),
  # the platform's two service accounts, and one fake node for KWOK.
  local k=(kubectl --kubeconfig "$STATE/kubeconfig")
  "${k[@]}" create namespace kiln --dry-run=client -o yaml | "${k[@]}" apply -f - >/dev/null
  "${k[@]}" apply --server-side -f "$ROOT/k8s/executors/" >/dev/null
  "${k[@]}" -n kiln apply -f "$ROOT/k8s/platform/base/service-accounts.yaml" >/dev/null
  printf 'apiVersion: v1\nkind: Node\nmetadata:\n  name: kwok-node-0\n  annotations: {kwok.x-k8s.io/node: fake}\n' |
    "${k[@]}" apply -f - >/dev/null
  log "apiserver ready at https://127.0.0.1:$API_PORT (kubeconfig $STATE/kubeconfig)"
}

down() {
  local p
  for p in kwok apiserver etcd; do
    if [[ -f "$STATE/run/$p.pid" ]]; then
      kill "$(cat "$STATE/run/$p.pid")" 2>/dev/null || true
      rm -f "$STATE/run/$p.pid"
    fi
  done
}

run_tests() {
  cd "$ROOT"
  KILN_E2E_KUBECONFIG="$STATE/kubeconfig" cargo test -p k8s-worker -p pod-monitor -- --ignored kube_e2e
}

case "${1:-all}" in
  build) build ;;
  up) up ;;
  test) run_tests ;;
  down) down ;;
  all)
    build
    trap down EXIT
    up
    run_tests
    ;;
  *) echo "usage: $0 [build|up|test|down]" >&2 && exit 2 ;;
esac
