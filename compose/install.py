"""Install grokemu from a wheelhouse inside an image build, with whatever pip there is (standard library only).

    python3 install.py WHEELHOUSE REQUIREMENT...

- The real python:3.12-slim has pip: `python3 -m pip`.
- The offline stand-in (docs/offline-images.md) has Debian's pip; a base with neither pip nor ensurepip (older
  stand-ins) runs pip from its own wheel in the wheelhouse (a wheel is importable: `python3 pip-X.whl/pip install`).
First `--no-index` (offline); when the wheelhouse lacks a wheel for this Python and the index is reachable (a laptop
with internet), pip fetches what is missing.
"""
import glob
import os
import subprocess
import sys


def main() -> int:
    wheels, requirements = sys.argv[1], sys.argv[2:] or ["grokemu"]
    has_pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0
    if has_pip:
        pip = [sys.executable, "-m", "pip"]
    else:
        found = sorted(glob.glob(os.path.join(wheels, "pip-*.whl")))
        if not found:
            print("install.py: this image has no pip and the wheelhouse has no pip wheel "
                  "(build it with `python compose/wheelhouse.py`)", file=sys.stderr)
            return 1
        pip = [sys.executable, os.path.join(found[-1], "pip")]
    # --break-system-packages: Debian's python3 is "externally managed" (PEP 668); this image is ours alone.
    base = pip + ["install", "--no-cache-dir", "--disable-pip-version-check", "--root-user-action=ignore",
                  "--break-system-packages", "--find-links", wheels]
    if subprocess.run(base + ["--no-index", *requirements]).returncode == 0:
        return 0
    print("install.py: the wheelhouse does not cover this Python; trying the package index", flush=True)
    return subprocess.run(base + requirements).returncode


if __name__ == "__main__":
    sys.exit(main())
