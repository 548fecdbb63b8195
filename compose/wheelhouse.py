"""Build compose/wheels/: grokemu's wheel and every wheel it needs, for the Python of the image's base, on the host.

    python compose/wheelhouse.py [--base-image python:3.12-slim]

Containers here cannot reach a package index, so compose/Dockerfile installs from this folder only (compose/install.py).
The base image's Python version and machine are asked from the image itself (`docker run`), so the host's Python may
differ (a laptop's 3.12 image, a 3.11 stand-in). Dependencies are downloaded as binary wheels for that target; pip's
own wheel is added for bases without pip. A stamp skips the download when nothing changed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WHEELS = HERE / "wheels"
STAMP = WHEELS / ".stamp.json"


def target(base_image: str) -> tuple[str, str]:
    """(python version X.Y, machine) of the base image, or of this host when Docker cannot say."""
    probe = "import platform, sys; print('%d.%d %s' % (sys.version_info[0], sys.version_info[1], platform.machine()))"
    try:
        out = subprocess.run(["docker", "run", "--rm", "--entrypoint", "python3", base_image, "-c", probe],
                             capture_output=True, text=True, timeout=120)
        if out.returncode == 0 and out.stdout.split():
            version, machine = out.stdout.split()[:2]
            return version, machine
        print(f"wheelhouse: cannot run {base_image} ({out.stderr.strip()[:200]}); using this host's Python",
              file=sys.stderr)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"wheelhouse: docker unavailable ({e}); using this host's Python", file=sys.stderr)
    import platform

    return f"{sys.version_info[0]}.{sys.version_info[1]}", platform.machine()


def requirements_of(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        [meta] = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        lines = z.read(meta).decode().splitlines()
    return [line.split(":", 1)[1].strip() for line in lines
            if line.startswith("Requires-Dist:") and "extra ==" not in line]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-image", default="python:3.12-slim")
    args = parser.parse_args(argv)
    WHEELS.mkdir(exist_ok=True)
    for old in WHEELS.glob("grokemu-*.whl"):
        old.unlink()
    pip = [sys.executable, "-m", "pip"]
    built = subprocess.run(pip + ["wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(WHEELS), str(ROOT)],
                           capture_output=True)
    if built.returncode != 0:  # setuptools missing from this Python: let pip fetch it into an isolated build env
        subprocess.run(pip + ["wheel", "-q", "--no-deps", "-w", str(WHEELS), str(ROOT)], check=True)
    for leftover in ("build",):
        shutil.rmtree(ROOT / leftover, ignore_errors=True)
    [wheel] = WHEELS.glob("grokemu-*.whl")
    version, machine = target(args.base_image)
    requirements = sorted(requirements_of(wheel)) + ["pip"]
    key = hashlib.sha256(json.dumps([version, machine, requirements]).encode()).hexdigest()
    if STAMP.exists() and json.loads(STAMP.read_text()).get("key") == key:
        print(f"wheelhouse: {WHEELS} up to date for Python {version} on {machine}")
        return 0
    platforms = [f"manylinux{v}_{machine}" for v in ("2014", "_2_17", "_2_28", "_2_34")] + \
                [f"musllinux_1_2_{machine}", "linux_" + machine, "any"]
    cmd = pip + ["download", "-q", "--only-binary=:all:", "--python-version", version, "--implementation", "cp",
                 "-d", str(WHEELS)]
    for p in platforms:
        cmd += ["--platform", p]
    subprocess.run(cmd + requirements, check=True)
    STAMP.write_text(json.dumps({"key": key, "python": version, "machine": machine}))
    print(f"wheelhouse: {len(list(WHEELS.glob('*.whl')))} wheels in {WHEELS} for Python {version} on {machine}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
