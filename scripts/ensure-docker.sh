#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`: install docker.io if dockerd is missing,
# start dockerd in the background (log: ${GROKEMU_CI_LOGS:-/tmp}/dockerd.log), wait up to 60 s.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# tests/e2e/test_daemon_restart.py gives its private dockerd a bridge of its own with `ip` (iproute2)
if ! command -v ip >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then apt_install iproute2; fi

if docker info >/dev/null 2>&1; then say "docker engine already running"; exit 0; fi

command -v dockerd >/dev/null 2>&1 || apt_install docker.io
command -v docker >/dev/null 2>&1 || die "docker client missing after installing docker.io"

t0=$(date +%s)
LOG="$LOGDIR/dockerd.log"
if pgrep -x dockerd >/dev/null 2>&1; then
  say "dockerd already starting (pid $(pgrep -x dockerd | head -n 1)); waiting"
else
  # A pid file left by a daemon that died with its machine/container stops dockerd from starting.
  rm -f /var/run/docker.pid
  setsid nohup dockerd >>"$LOG" 2>&1 </dev/null &
fi
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    say "dockerd started ($(since "$t0")s, log $LOG, storage $(docker info -f '{{.Driver}}'))"
    exit 0
  fi
  sleep 1
done
tail -n 30 "$LOG" >&2
die "docker info still fails after 60 s (log $LOG)"
