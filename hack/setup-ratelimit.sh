#!/usr/bin/env bash
# Builds envoyproxy/ratelimit's service (src/service_cmd) from the Go module proxy
# and prints the binary's path: the value for RATELIMIT_BIN.
#
# Its go.mod has no replace or exclude directives, so `go install module/pkg@version`
# builds it with exactly the dependency versions its own go.mod and go.sum pin, the
# same graph as its Dockerfile's build, without a wrapper module.
#
# The binary is cached per version under ${APPQUOTA_CACHE_DIR:-$XDG_CACHE_HOME/appquota},
# so every clone on the machine shares it. Only progress goes to stderr; stdout is
# exactly the path.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache_root=${APPQUOTA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/appquota}
dir="$cache_root/ratelimit/${RATELIMIT_VERSION}"
bin="$dir/ratelimit"
pkg=github.com/envoyproxy/ratelimit/src/service_cmd

log() { printf 'setup-ratelimit: %s\n' "$*" >&2; }

if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache_root"
# Two clones building at once would race on the same directory: serialise them.
exec 9>"$cache_root/.ratelimit.lock"
if ! flock -n 9; then
  log "another build holds $cache_root/.ratelimit.lock; waiting for it"
  flock 9
fi
if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi

work=$(mktemp -d "$cache_root/.build-ratelimit.XXXXXX")
trap 'rm -rf "$work"' EXIT
# -mod=mod (from the caller's GOFLAGS) is refused by `go install pkg@version`, and a
# go.work around the caller's directory must not leak in.
export GOFLAGS=-buildvcs=false GOWORK=off CGO_ENABLED=0 GOBIN="$work/bin"

start=$SECONDS
log "build ${pkg}@${RATELIMIT_VERSION} (a few minutes on 2 cores, cold)"
if ! go install -trimpath -ldflags "-s -w" "${pkg}@${RATELIMIT_VERSION}" >"$work/build.log" 2>&1; then
  log "FAILED: go install ${pkg}@${RATELIMIT_VERSION}"
  tail -n 60 "$work/build.log" >&2
  exit 1
fi
[[ -x "$work/bin/service_cmd" ]] || { log "FAILED: service_cmd was not produced"; exit 1; }
# The build records its main module; it must be exactly the pinned one.
want=$(printf 'mod\tgithub.com/envoyproxy/ratelimit\t%s' "$RATELIMIT_VERSION")
if ! go version -m "$work/bin/service_cmd" | grep -qF "$want"; then
  log "FAILED: the binary does not report github.com/envoyproxy/ratelimit ${RATELIMIT_VERSION}:"
  go version -m "$work/bin/service_cmd" | head -n 5 >&2
  exit 1
fi
mkdir -p "$dir"
mv "$work/bin/service_cmd" "$bin.tmp"
mv "$bin.tmp" "$bin"
log "built into $bin in $((SECONDS - start))s"
echo "$bin"
