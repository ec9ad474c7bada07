#!/usr/bin/env bash
# Prints the path of a redis-server binary: the value for REDIS_SERVER.
#
# redis-server is found on PATH (or where Debian puts it); when it is missing, it is
# installed from Debian's redis-server package with apt-get. Tests never use the
# package's own service on port 6379: internal/engine starts its own redis-server on a
# free loopback port, without persistence, in a temporary directory, and stops it.
# Only progress goes to stderr; stdout is exactly the path.
set -euo pipefail

log() { printf 'setup-redis: %s\n' "$*" >&2; }

find_redis() {
  local p
  if p=$(command -v redis-server); then
    echo "$p"
  elif [[ -x /usr/bin/redis-server ]]; then
    echo /usr/bin/redis-server
  else
    return 1
  fi
}

# check PATH: the binary must run; an install that left a broken one should say so here,
# not in a test's timeout.
check() {
  local out
  if ! out=$("$1" --version 2>&1); then
    log "FAILED: $1 --version: $out"
    exit 1
  fi
  log "$out"
}

if bin=$(find_redis); then
  echo "$bin"
  exit 0
fi

if ! command -v apt-get >/dev/null; then
  log "FAILED: redis-server is not on PATH and there is no apt-get to install it; install Redis (7 or later) and put redis-server on PATH, or set REDIS_SERVER"
  exit 1
fi
sudo=()
if [[ $(id -u) != 0 ]]; then
  if ! command -v sudo >/dev/null; then
    log "FAILED: redis-server is not on PATH, and installing it with apt-get needs root (no sudo here); run: apt-get install redis-server"
    exit 1
  fi
  sudo=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
# Wait for another apt or dpkg run (a second clone's setup, unattended upgrades) rather
# than failing on its lock.
apt=("${sudo[@]}" apt-get -y -q --no-install-recommends -o DPkg::Lock::Timeout=300)
logfile=$(mktemp)
trap 'rm -f "$logfile"' EXIT
log "redis-server is not on PATH: installing Debian's redis-server package with apt-get"
if ! "${apt[@]}" install redis-server >"$logfile" 2>&1; then
  # A fresh container has no package lists, or stale ones naming removed versions.
  log "apt-get install failed; running apt-get update and trying again"
  if ! "${apt[@]}" update >"$logfile" 2>&1 || ! "${apt[@]}" install redis-server >"$logfile" 2>&1; then
    log "FAILED: apt-get could not install redis-server:"
    tail -n 30 "$logfile" >&2
    exit 1
  fi
fi
if ! bin=$(find_redis); then
  log "FAILED: the redis-server package is installed but no redis-server binary was found"
  exit 1
fi
check "$bin"
log "installed $bin (the package's own service, if it runs, is not what tests use)"
echo "$bin"
