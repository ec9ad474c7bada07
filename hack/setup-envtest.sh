#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver, kubectl, etcd) from the Go module
# proxy and prints the directory that holds them: the value for KUBEBUILDER_ASSETS.
#
# There is no prebuilt-binary download on these machines, so we compile:
#   - k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces ~33 staging
#     modules (k8s.io/api, k8s.io/apiserver, ...) with ./staging paths. A throwaway
#     wrapper module that requires k8s.io/kubernetes and replaces each staging module
#     with its published v0.X.Y release builds cmd/kube-apiserver and cmd/kubectl.
#   - go.etcd.io/etcd/server/v3 is etcd's main package; it builds the same way.
#
# Binaries are cached per version under ${APPQUOTA_CACHE_DIR:-$XDG_CACHE_HOME/appquota},
# so every clone on the machine shares them. Only progress goes to stderr; stdout is
# exactly the directory.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache_root=${APPQUOTA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/appquota}
assets="$cache_root/envtest/k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}"

log() { printf 'setup-envtest: %s\n' "$*" >&2; }

complete() {
  [[ -x "$assets/kube-apiserver" && -x "$assets/kubectl" && -x "$assets/etcd" ]]
}

if complete; then
  echo "$assets"
  exit 0
fi

mkdir -p "$cache_root"
# Two clones building at once would race on the same directory: serialise them.
exec 9>"$cache_root/.envtest.lock"
if ! flock -n 9; then
  log "another build holds $cache_root/.envtest.lock; waiting for it"
  flock 9
fi
if complete; then
  echo "$assets"
  exit 0
fi

work=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOWORK=off

# step NAME LOGFILE CMD...: run a build step, and on failure say which one and show its output.
step() {
  local name=$1 logfile=$2
  shift 2
  log "$name"
  if ! "$@" >"$logfile" 2>&1; then
    log "FAILED: $name"
    log "command: $*"
    tail -n 60 "$logfile" >&2
    exit 1
  fi
}

build_kubernetes() {
  local mod="$work/kubernetes"
  mkdir -p "$mod"
  cd "$mod"
  step "kubernetes: init wrapper module" "$work/k8s-init.log" go mod init appquota.local/build-kubernetes
  step "kubernetes: fetch k8s.io/kubernetes@${KUBERNETES_VERSION}" "$work/k8s-get.log" \
    go mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}"
  local gomod
  gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' "$work/k8s-get.log")
  # Every "k8s.io/x => ./staging/src/k8s.io/x" becomes "k8s.io/x => k8s.io/x v0.X.Y".
  local staging
  staging=$(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$gomod")
  if [[ -z "$staging" ]]; then
    log "FAILED: found no staging replacements in $gomod"
    exit 1
  fi
  log "kubernetes: replacing $(wc -w <<<"$staging") staging modules with ${KUBERNETES_STAGING_VERSION}"
  local args=(-require "k8s.io/kubernetes@${KUBERNETES_VERSION}")
  for m in $staging; do
    args+=(-replace "$m=$m@${KUBERNETES_STAGING_VERSION}")
  done
  go mod edit "${args[@]}"
  cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  step "kubernetes: resolve dependencies" "$work/k8s-tidy.log" go mod tidy
  local v=${KUBERNETES_VERSION#v} pkg=k8s.io/component-base/version
  local minor=${v#*.}
  minor=${minor%%.*}
  # Without these the binaries report v0.0.0-master and clients warn about skew.
  local ldflags="-s -w -X $pkg.gitVersion=${KUBERNETES_VERSION} -X $pkg.gitMajor=${v%%.*} -X $pkg.gitMinor=${minor} -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  step "kubernetes: build kube-apiserver and kubectl (about 10 minutes on 2 cores, cold)" "$work/k8s-build.log" \
    go build -trimpath -tags tools -ldflags "$ldflags" -o "$work/out/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
}

build_etcd() {
  local mod="$work/etcd"
  mkdir -p "$mod"
  cd "$mod"
  step "etcd: init wrapper module" "$work/etcd-init.log" go mod init appquota.local/build-etcd
  cat >tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  step "etcd: fetch go.etcd.io/etcd/server/v3@${ETCD_VERSION}" "$work/etcd-get.log" \
    go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
  step "etcd: resolve dependencies" "$work/etcd-tidy.log" go mod tidy
  step "etcd: build etcd ${ETCD_VERSION} (about 2 minutes, cold)" "$work/etcd-build.log" \
    go build -trimpath -ldflags "-s -w" -o "$work/out/etcd" go.etcd.io/etcd/server/v3
}

mkdir -p "$work/out"
build_etcd
build_kubernetes

for b in kube-apiserver kubectl etcd; do
  [[ -x "$work/out/$b" ]] || { log "FAILED: $b was not produced"; exit 1; }
done
# check NAME WANT CMD...: the binary must report exactly the pinned version.
check() {
  local name=$1 want=$2 got
  shift 2
  got=$("$@" 2>&1 | head -n 1) || true
  if [[ "$got" != "$want" ]]; then
    log "FAILED: $name reports '$got', want '$want'"
    exit 1
  fi
}
check kube-apiserver "Kubernetes ${KUBERNETES_VERSION}" "$work/out/kube-apiserver" --version
check kubectl "Client Version: ${KUBERNETES_VERSION}" "$work/out/kubectl" version --client
check etcd "etcd Version: ${ETCD_VERSION#v}" "$work/out/etcd" --version
mkdir -p "$(dirname "$assets")"
rm -rf "$assets.tmp"
mv "$work/out" "$assets.tmp"
mv "$assets.tmp" "$assets"
log "built into $assets"
echo "$assets"
