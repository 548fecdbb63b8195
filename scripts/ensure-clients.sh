#!/usr/bin/env bash
# Install the real clients the tests drive: the grok CLI (datagrok-tools 6.7.5), datagrok-api 1.27.9,
# ws, playwright-core (no browser download) and axe-core (dashboard accessibility checks) into ${GROKEMU_TOOLS:-<repo>/.tools}; Debian's
# chromium, skopeo, docker-registry, docker-compose, debootstrap; and the `oras` Python package.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TOOLS="${GROKEMU_TOOLS:-$REPO/.tools}"
GROK_VERSION=6.7.5
API_VERSION=1.27.9
PACKAGE_JSON='{
  "private": true,
  "dependencies": {
    "datagrok-tools": "'$GROK_VERSION'",
    "datagrok-api": "'$API_VERSION'",
    "ws": "^8",
    "playwright-core": "1.65.1",
    "axe-core": "4.10.3"
  },
  "overrides": { "datagrok-api": "'$API_VERSION'" }
}'

# --- (a) npm clients -------------------------------------------------------------------------------
npm_ready() {
  [[ "$(cat "$TOOLS/package.json" 2>/dev/null)" == "$PACKAGE_JSON" ]] || return 1
  [[ "$("$TOOLS/node_modules/.bin/grok" --version 2>/dev/null | tail -n 1)" == *"$GROK_VERSION"* ]] || return 1
  local m
  for m in datagrok-api ws playwright-core axe-core; do [[ -f "$TOOLS/node_modules/$m/package.json" ]] || return 1; done
  [[ "$(node -p "require('$TOOLS/node_modules/datagrok-api/package.json').version")" == "$API_VERSION" ]]
}
if npm_ready; then
  say "npm clients already in $TOOLS"
else
  command -v npm >/dev/null 2>&1 || die "npm not found (Node 20 expected on PATH)"
  mkdir -p "$TOOLS"
  printf '%s\n' "$PACKAGE_JSON" >"$TOOLS/package.json"
  t0=$(date +%s)
  # datagrok-tools 6.7.5 wants datagrok-api 1.27.11, which the registry lacks: the override pins 1.27.9.
  # Puppeteer/Playwright must not download browsers (no network for that); the system chromium is used.
  if ! (cd "$TOOLS" && PUPPETEER_SKIP_DOWNLOAD=true PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 \
        npm install --no-audit --no-fund --ignore-scripts >"$LOGDIR/grokemu-npm.log" 2>&1); then
    tail -n 20 "$LOGDIR/grokemu-npm.log" >&2; die "npm install failed (log $LOGDIR/grokemu-npm.log)"
  fi
  npm_ready || die "grok --version is not $GROK_VERSION after npm install"
  say "npm clients installed in $TOOLS ($(since "$t0")s)"
fi

# --- (b) Debian packages ---------------------------------------------------------------------------
DEBS=(chromium skopeo docker-registry docker-compose debootstrap)
missing=0; for p in "${DEBS[@]}"; do deb_installed "$p" || missing=1; done
if (( missing )); then apt_install "${DEBS[@]}"; else say "debian packages already installed"; fi

# --- (c) Python oras -------------------------------------------------------------------------------
PY="${PYTHON:-python3}"
if "$PY" -c 'import oras' 2>/dev/null; then
  say "python oras already installed"
else
  t0=$(date +%s)
  "$PY" -m pip install -q oras >"$LOGDIR/grokemu-pip-oras.log" 2>&1 \
    || { tail -n 20 "$LOGDIR/grokemu-pip-oras.log" >&2; die "pip install oras failed"; }
  say "pip installed oras ($(since "$t0")s)"
fi

# --- versions --------------------------------------------------------------------------------------
ver() { "$@" 2>/dev/null | head -n 1 || true; }
say "grok $(ver "$TOOLS/node_modules/.bin/grok" --version) ($TOOLS/node_modules/.bin/grok);" \
    "datagrok-api $(node -p "require('$TOOLS/node_modules/datagrok-api/package.json').version");" \
    "playwright-core $(node -p "require('$TOOLS/node_modules/playwright-core/package.json').version"); node $(node --version)"
say "$(ver chromium --version); $(ver skopeo --version); registry $(dpkg-query -W -f='${Version}' docker-registry);" \
    "$(ver docker-compose version --short | sed 's/^/docker-compose /'); debootstrap $(dpkg-query -W -f='${Version}' debootstrap);" \
    "oras $("$PY" -c 'import importlib.metadata as m; print(m.version("oras"))')"
