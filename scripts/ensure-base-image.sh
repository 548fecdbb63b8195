#!/usr/bin/env bash
# Make sure the local daemon has the base images grokemu's samples, tests and the grok CLI's generated workers use.
# Where a tag is missing (no registry can be reached here) build an offline stand-in for it (docs/offline-images.md):
#   python:3.12-slim and python:3.11-slim-bookworm  Debian's python3 + pip + a wheelhouse at /wheels (no index)
#   ghcr.io/astral-sh/uv:latest                      /uv and /uvx from PyPI's uv wheel
#   rabbitmq:4.0.5-management                        Debian's rabbitmq-server, official-image entrypoint contract
# A tag that holds a real image is kept; one holding an older grokemu stand-in is rebuilt. Laptops skip all this.
# Tags can be overridden (GROKEMU_BASE_IMAGE, GROKEMU_BOOKWORM_IMAGE, GROKEMU_UV_IMAGE, GROKEMU_BROKER_IMAGE),
# e.g. to try a change under throwaway tags.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$REPO/scripts/standins/common.sh"
source "$REPO/scripts/standins/python.sh"
source "$REPO/scripts/standins/uv.sh"
source "$REPO/scripts/standins/rabbitmq.sh"

PYTHON_TAGS=("${GROKEMU_BASE_IMAGE:-python:3.12-slim}" "${GROKEMU_BOOKWORM_IMAGE:-python:3.11-slim-bookworm}")
UV_TAG="${GROKEMU_UV_IMAGE:-ghcr.io/astral-sh/uv:latest}"
BROKER_TAG="${GROKEMU_BROKER_IMAGE:-rabbitmq:4.0.5-management}"

T0=$(date +%s)
build_python=0 build_uv=0 build_broker=0
needs_build "${PYTHON_TAGS[@]}" && build_python=1
needs_build "$UV_TAG" && build_uv=1
needs_build "$BROKER_TAG" && build_broker=1
if (( !build_python && !build_uv && !build_broker )); then
  say "nothing to build ($(since "$T0")s)"; exit 0
fi

# The host's downloads run while debootstrap does.
pids=()
if (( build_python )); then python_wheelhouse "$WORK/wheels" & pids+=($!); fi
if (( build_uv )); then uv_binaries "$WORK/uv" & pids+=($!); fi
if (( build_python || build_broker )); then base_rootfs; fi
for pid in "${pids[@]}"; do wait "$pid" || die "a download failed (see above)"; done

# The two Debian stand-ins install their packages at the same time (each in its own copy of the rootfs).
pids=()
if (( build_uv )); then build_uv "$WORK/uv" "$UV_TAG"; fi
if (( build_python )); then build_python "$WORK/wheels" "${PYTHON_TAGS[@]}" & pids+=($!); fi
if (( build_broker )); then build_rabbitmq "$BROKER_TAG" & pids+=($!); fi
for pid in "${pids[@]}"; do wait "$pid" || die "a stand-in failed to build (see above)"; done
say "done ($(since "$T0")s)"
