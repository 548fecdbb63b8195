# The uv stand-in (sourced by scripts/ensure-base-image.sh after common.sh; docs/offline-images.md): an image of
# just /uv and /uvx, as the official one, for Dockerfiles' `COPY --from=ghcr.io/astral-sh/uv:latest /uv ...`.
# shellcheck shell=bash

# uv_binaries DIR: /uv and /uvx from PyPI's uv wheel (its .data/scripts). The musllinux wheel's binaries are
# static, like the official image's, so they run on any base.
uv_binaries() {
  local dir="$1" t0
  t0=$(date +%s)
  mkdir -p "$dir/wheel"
  if ! host_pip download -q -d "$dir/wheel" --no-deps --only-binary=:all: --python-version 3.11 \
       --platform musllinux_1_1_x86_64 uv >"$LOGDIR/grokemu-uv-download.log" 2>&1; then
    grep -v '^WARNING: Location' "$LOGDIR/grokemu-uv-download.log" | tail -n 20 >&2; die "pip download uv failed"
  fi
  python3 - "$dir" <<'PY'
import pathlib, sys, zipfile
out = pathlib.Path(sys.argv[1])
wheel = next((out / "wheel").glob("uv-*.whl"))
with zipfile.ZipFile(wheel) as z:
    for name in ("uv", "uvx"):
        member = next(m for m in z.namelist() if m.endswith(f".data/scripts/{name}"))
        target = out / "root" / name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(z.read(member))
        target.chmod(0o755)
PY
  say "uv binaries from $(basename "$(ls "$dir"/wheel/uv-*.whl)") ($(since "$t0")s)"
}

# build_uv DIR TAG...: the image of DIR/root (uv, uvx), tagged TAG...
build_uv() {
  local dir="$1" build="grokemu-standin/uv:build-$$" out; shift
  import_rootfs "$dir/root" "$build" 'ENTRYPOINT ["/uv"]' 'ENV PATH=/'
  out="$(docker run --rm --network none "$build" --version)" || die "$build: /uv does not run"
  say "verified: $out"
  tag_standin "$build" "$@"
  docker image rm "$build" >/dev/null
}
