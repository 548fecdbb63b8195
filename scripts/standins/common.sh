# Helpers for the offline stand-in images (sourced by scripts/ensure-base-image.sh; docs/offline-images.md).
# shellcheck shell=bash

# The label every stand-in carries; bump it when what a stand-in holds changes, so older ones get rebuilt.
STANDIN_LABEL=offline-standin-3
SUITE="${GROKEMU_BASE_SUITE:-bookworm}"

# standin_state TAG: "absent", "current" (this version's stand-in), "old" (an older grokemu stand-in: rebuild) or
# "real" (an image without our label, e.g. pulled from its registry: always kept).
standin_state() {
  local label
  if ! label="$(docker image inspect -f '{{index .Config.Labels "grokemu.base"}}' "$1" 2>/dev/null)"; then
    echo absent; return
  fi
  case "$label" in
    "$STANDIN_LABEL") echo current ;;
    offline-standin*) echo old ;;
    *) echo real ;;
  esac
}

# needs_build TAG...: true when any TAG must be (re)built; says why for each.
needs_build() {
  local tag state any=1
  for tag in "$@"; do
    state="$(standin_state "$tag")"
    case "$state" in
      absent) say "$tag absent: building a stand-in"; any=0 ;;
      old) say "$tag is an older grokemu stand-in: rebuilding"; any=0 ;;
      current) say "$tag already present ($STANDIN_LABEL)" ;;
      real) say "$tag already present (not a grokemu stand-in: kept)" ;;
    esac
  done
  return $any
}

# tag_standin IMAGE TAG...: point each TAG that is absent or holds a stand-in (older, or current when a pair of tags
# shares one image and only one needed it) at IMAGE; a real image is kept. A stand-in left without tags is removed
# (that fails harmlessly while a container or a child image still uses it).
tag_standin() {
  local image="$1" tag state old; shift
  for tag in "$@"; do
    state="$(standin_state "$tag")"
    [[ $state == absent || $state == old || $state == current ]] || continue
    old="$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)"
    docker tag "$image" "$tag"
    if [[ -n $old && $old != "$(docker image inspect -f '{{.Id}}' "$image")" ]] \
       && [[ "$(docker image inspect -f '{{len .RepoTags}}' "$old" 2>/dev/null)" == 0 ]]; then
      docker image rm "$old" >/dev/null 2>&1 || true
    fi
    say "tagged $tag"
  done
}

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

# Scratch space for this run, removed on exit.
WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/grokemu-standins.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# base_rootfs: a debootstrap'ed $SUITE minbase with fresh package lists at $BASE_DIR, made once per run and shared
# by the stand-ins (each copies it: one download instead of one per image).
BASE_DIR="$WORK/base"
base_rootfs() {
  local dir="$BASE_DIR" mirror t0
  if [[ -f $dir/.grokemu-ready ]]; then return; fi
  mirror="${GROKEMU_DEBIAN_MIRROR:-$(debian_mirror | head -n 1)}"
  [[ -n "$mirror" ]] || die "no Debian mirror for $SUITE in /etc/apt/sources.list{,.d/*}; set GROKEMU_DEBIAN_MIRROR"
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
  t0=$(date +%s)
  if ! debootstrap --variant=minbase "$SUITE" "$dir" "$mirror" >"$LOGDIR/grokemu-debootstrap.log" 2>&1; then
    tail -n 20 "$LOGDIR/grokemu-debootstrap.log" >&2; die "debootstrap failed (log $LOGDIR/grokemu-debootstrap.log)"
  fi
  # Services must not start inside the chroot while packages install.
  printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"; chmod +x "$dir/usr/sbin/policy-rc.d"
  cp -L /etc/resolv.conf "$dir/etc/resolv.conf"
  chroot "$dir" apt-get -q -y update >>"$LOGDIR/grokemu-debootstrap.log" 2>&1 \
    || { tail -n 20 "$LOGDIR/grokemu-debootstrap.log" >&2; die "apt-get update in the rootfs failed"; }
  touch "$dir/.grokemu-ready"
  say "debootstrap $SUITE minbase from $mirror ($(since "$t0")s)"
}

# chroot_install DIR NAME PKG...: apt-get install PKG (no recommends) into a copy of the base rootfs at DIR
# (base_rootfs first).
chroot_install() {
  local dir="$1" name="$2" t0 log; shift 2
  log="$LOGDIR/grokemu-standin-$name.log"
  t0=$(date +%s)
  [[ -f $BASE_DIR/.grokemu-ready ]] || die "chroot_install before base_rootfs"
  cp -a "$BASE_DIR" "$dir"
  if ! chroot "$dir" apt-get -q -y install --no-install-recommends "$@" >"$log" 2>&1; then
    tail -n 20 "$log" >&2; die "apt-get install $* in the $name rootfs failed (log $log)"
  fi
  say "$name rootfs: installed $* ($(since "$t0")s)"
}

# finish_rootfs DIR: what no image should carry from the build. Package lists go too, as in the official images:
# offline, a Dockerfile's `apt-get update` then only warns, and installing what is already there still succeeds.
finish_rootfs() {
  local dir="$1"
  rm -f "$dir/usr/sbin/policy-rc.d" "$dir/.grokemu-ready"
  : >"$dir/etc/resolv.conf"
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/tmp/*
}

# import_rootfs DIR TAG CHANGE...: `docker import` DIR as TAG with the stand-in label and Dockerfile-style CHANGEs.
import_rootfs() {
  local dir="$1" tag="$2" t0 args=(); shift 2
  local change
  for change in "$@" "LABEL grokemu.base=$STANDIN_LABEL"; do args+=(--change "$change"); done
  t0=$(date +%s)
  if ! tar -C "$dir" -c . | docker import "${args[@]}" - "$tag" >/dev/null 2>"$LOGDIR/grokemu-import.err"; then
    cat "$LOGDIR/grokemu-import.err" >&2; die "docker import of $tag failed"
  fi
  say "imported $tag ($(since "$t0")s, $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%d MB", $1/1e6}'))"
}

# host_pip ARG...: the host's pip (it reaches PyPI; containers cannot), installed from Debian when missing.
host_pip() {
  if ! python3 -m pip --version >/dev/null 2>&1; then apt_install python3-pip; fi
  python3 -m pip "$@"
}

# The platforms the bookworm stand-in (glibc 2.36, x86_64) accepts: pip does not widen a manylinux_2_Y tag itself.
manylinux_platforms() {
  local y
  for y in $(seq 36 -1 5); do printf -- '--platform manylinux_2_%s_x86_64 ' "$y"; done
  printf -- '--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64'
}
