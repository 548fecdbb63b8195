# Shared helpers for scripts/ensure-*.sh (sourced, not run).
# shellcheck shell=bash

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOGDIR="${GROKEMU_CI_LOGS:-/tmp}"
mkdir -p "$LOGDIR"

say() { echo "[$(basename "$0" .sh)] $*"; }
die() { echo "[$(basename "$0" .sh)] ERROR: $*" >&2; exit 1; }

# Seconds since an epoch timestamp, for "took Ns" messages.
since() { echo $(( $(date +%s) - $1 )); }

export DEBIAN_FRONTEND=noninteractive
# Another apt/dpkg may be running (e.g. a background install on a dev machine): wait for its lock.
APT_GET=(apt-get -q -y -o DPkg::Lock::Timeout=600)

# `apt-get update` at most once per 6 hours across all scripts (stamp file), retrying while
# another apt holds the lists lock (DPkg::Lock::Timeout does not cover that lock).
apt_update_once() {
  local stamp="${TMPDIR:-/tmp}/grokemu-apt-updated"
  if [[ -n "$(find "$stamp" -mmin -360 2>/dev/null)" ]]; then return 0; fi
  local t0 deadline
  t0=$(date +%s); deadline=$(( t0 + 600 ))
  until "${APT_GET[@]}" update >"$LOGDIR/grokemu-apt-update.log" 2>&1; do
    if grep -q 'Could not get lock' "$LOGDIR/grokemu-apt-update.log" && (( $(date +%s) < deadline )); then
      sleep 5; continue
    fi
    tail -n 20 "$LOGDIR/grokemu-apt-update.log" >&2; die "apt-get update failed"
  done
  touch "$stamp"
  say "apt-get update done ($(since "$t0")s)"
}

deb_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

# apt_install PKG...: install those of PKG that are not installed yet.
apt_install() {
  local missing=() p t0
  for p in "$@"; do deb_installed "$p" || missing+=("$p"); done
  (( ${#missing[@]} )) || return 0
  apt_update_once
  t0=$(date +%s)
  if ! "${APT_GET[@]}" install "${missing[@]}" >"$LOGDIR/grokemu-apt-install.log" 2>&1; then
    tail -n 20 "$LOGDIR/grokemu-apt-install.log" >&2; die "apt-get install ${missing[*]} failed"
  fi
  say "installed ${missing[*]} ($(since "$t0")s)"
}
