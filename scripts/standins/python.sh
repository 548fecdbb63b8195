# The python stand-in (sourced by scripts/ensure-base-image.sh after common.sh; docs/offline-images.md): Debian
# $SUITE's python3 with pip, gcc and a wheelhouse at /wheels that pip and uv use with no index.
# shellcheck shell=bash

# python_wheelhouse DIR: every wheel of standins/wheelhouse.txt and their dependencies, for CPython 3.11 (bookworm's
# python3) on x86_64 glibc, downloaded by the host (it reaches PyPI; containers cannot). Binary wheels only: nothing
# is built, neither here nor in the image.
python_wheelhouse() {
  local dir="$1" t0 reqs="$REPO/scripts/standins/wheelhouse.txt"
  t0=$(date +%s)
  # shellcheck disable=SC2046  # one flag pair per platform
  if ! host_pip download -q -d "$dir" --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
       $(manylinux_platforms) -r "$reqs" >"$LOGDIR/grokemu-wheelhouse.log" 2>&1; then
    grep -v '^WARNING: Location' "$LOGDIR/grokemu-wheelhouse.log" | tail -n 20 >&2
    die "pip download of the wheelhouse failed (log $LOGDIR/grokemu-wheelhouse.log)"
  fi
  say "wheelhouse: $(find "$dir" -name '*.whl' | wc -l) wheels, $(du -sm "$dir" | cut -f1) MB ($(since "$t0")s)"
}

# build_python WHEELS TAG...: the stand-in from the shared base rootfs and the wheelhouse at WHEELS, tagged TAG...
build_python() {
  local wheels="$1" dir="$WORK/python" build="grokemu-standin/python:build-$$"; shift
  # gcc and libc6-dev: the grok CLI's generated worker Dockerfile apt-get installs them, which offline only works
  # when they are already there (apt-get update fails with a warning, the install is then a no-op).
  chroot_install "$dir" python python3 python3-pip gcc libc6-dev ca-certificates netbase
  cp -a "$wheels" "$dir/wheels"
  # The official image lets pip install into the system Python; Debian's PEP 668 marker would refuse it.
  rm -f "$dir"/usr/lib/python3*/EXTERNALLY-MANAGED
  # Like the official image: `python` and `python3` in /usr/local/bin.
  ln -sf /usr/bin/python3 "$dir/usr/local/bin/python"
  ln -sf /usr/bin/python3 "$dir/usr/local/bin/python3"
  # uv (copied in from the uv image by Dockerfiles) reads this system-wide config: the wheelhouse, no index.
  mkdir -p "$dir/etc/uv"
  printf 'no-index = true\nfind-links = ["/wheels"]\n' >"$dir/etc/uv/uv.toml"
  finish_rootfs "$dir"
  import_rootfs "$dir" "$build" 'CMD ["python3"]' 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    'ENV LANG=C.UTF-8' 'ENV PIP_NO_INDEX=1' 'ENV PIP_FIND_LINKS=/wheels' 'ENV PIP_ROOT_USER_ACTION=ignore' \
    'ENV PIP_DISABLE_PIP_VERSION_CHECK=1'
  rm -rf "$dir"
  local out
  # The wheelhouse is complete when pip resolves the whole list from it, with no network.
  out="$(docker run --rm --network none -v "$REPO/scripts/standins/wheelhouse.txt:/tmp/wheelhouse.txt:ro" "$build" \
         sh -c 'pip install -q --dry-run -r /tmp/wheelhouse.txt && python -c "import sys; print(sys.version.split()[0])"')" \
    || die "$build: pip cannot install the wheelhouse offline"
  say "verified: python $out, pip installs the wheelhouse with no network"
  tag_standin "$build" "$@"
  docker image rm "$build" >/dev/null
}
