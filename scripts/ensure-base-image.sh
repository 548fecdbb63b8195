#!/usr/bin/env bash
# Make sure the local daemon has an image tagged python:3.12-slim. When it has none (no registry can
# be reached), build an offline stand-in: a debootstrap'ed Debian minbase with python3, imported
# with `docker import`, labelled grokemu.base=offline-standin. Laptops with the real image skip this.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TAG="${GROKEMU_BASE_IMAGE:-python:3.12-slim}"
SUITE="${GROKEMU_BASE_SUITE:-bookworm}"

if docker image inspect "$TAG" >/dev/null 2>&1; then
  say "$TAG already present ($(docker image inspect -f '{{index .Config.Labels "grokemu.base"}}' "$TAG" 2>/dev/null || true))"
  exit 0
fi

# The machine's configured Debian mirror for $SUITE, from deb822 *.sources or one-line *.list files.
debian_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk -v suite="$SUITE" 'BEGIN { RS = ""; FS = "\n" }
      { types = ""; uris = ""; suites = ""; enabled = "yes"
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^[ \t]*#/) continue
          split($i, kv, ":"); key = tolower(kv[1]); val = substr($i, length(kv[1]) + 2)
          gsub(/^[ \t]+|[ \t]+$/, "", val)
          if (key == "types") types = val; else if (key == "uris") uris = val
          else if (key == "suites") suites = val; else if (key == "enabled") enabled = tolower(val)
        }
        if (enabled != "no" && (" " types " ") ~ / deb / && (" " suites " ") ~ (" " suite " ")) {
          split(uris, u, /[ \t]+/); print u[1]; exit
        } }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    # deb [options] URI SUITE COMPONENT...
    sed -E 's/\[[^]]*\]//' "$f" | awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }'
  done
}

MIRROR="${GROKEMU_DEBIAN_MIRROR:-$(debian_mirror | head -n 1)}"
[[ -n "$MIRROR" ]] || die "no Debian mirror for $SUITE in /etc/apt/sources.list{,.d/*}; set GROKEMU_DEBIAN_MIRROR"

command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap

ROOTFS="$(mktemp -d "${TMPDIR:-/var/tmp}/grokemu-rootfs.XXXXXX")"
trap 'rm -rf "$ROOTFS"' EXIT
t0=$(date +%s)
if ! debootstrap --variant=minbase --include=python3 "$SUITE" "$ROOTFS" "$MIRROR" >"$LOGDIR/grokemu-debootstrap.log" 2>&1; then
  tail -n 20 "$LOGDIR/grokemu-debootstrap.log" >&2; die "debootstrap failed (log $LOGDIR/grokemu-debootstrap.log)"
fi
say "debootstrap $SUITE from $MIRROR ($(since "$t0")s)"

# Like the real image: `python` and `python3` on PATH in /usr/local/bin; a smaller image.
ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python"
ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python3"
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/*

t0=$(date +%s)
CHANGES=(--change 'CMD ["python3"]' --change 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
         --change 'ENV LANG=C.UTF-8')
if ! tar -C "$ROOTFS" -c . | docker import "${CHANGES[@]}" --change 'LABEL grokemu.base=offline-standin' \
       - "$TAG" >/dev/null 2>"$LOGDIR/grokemu-import.err"; then
  cat "$LOGDIR/grokemu-import.err" >&2
  say "docker import refused LABEL; importing without it"
  tar -C "$ROOTFS" -c . | docker import "${CHANGES[@]}" - "$TAG" >/dev/null
fi
say "imported $TAG ($(since "$t0")s, $(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%d MB", $1/1e6}'))"

out="$(docker run --rm "$TAG" python -c 'import http.server, sys; print(sys.version.split()[0])')" \
  || die "$TAG does not run python"
say "verified: python $out runs in $TAG"
