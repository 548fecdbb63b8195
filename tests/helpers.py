"""Shared test helpers: package ZIPs as the grok CLI builds them, and the Docker requirement."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import zipfile

import pytest

REQUIRE_DOCKER = os.environ.get("GROKEMU_REQUIRE_DOCKER") == "1"


def package_zip(files: dict[str, bytes | str], duplicates: dict[str, bytes | str] | None = None) -> bytes:
    """A raw ZIP like `grok publish` sends (deflate; duplicate entry names allowed)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about duplicate names; the CLI really sends them
            for name, data in (duplicates or {}).items():
                z.writestr(name, data)
    return buf.getvalue()


def hello_package(name: str = "@acme/grokprobe", version: str = "1.0.0", *, dockerfile: str | None = None,
                  container: dict | str | None = None, image_json: dict | None = None,
                  folder: str = "hello") -> dict[str, bytes | str]:
    files: dict[str, bytes | str] = {
        "package.json": json.dumps({"name": name, "version": version, "description": "probe"}),
        "package.js": "//name: probeInfo\nexport function probeInfo() { return 'ok'; }\n",
        f"dockerfiles/{folder}/Dockerfile": dockerfile or "FROM scratch\nCOPY hello.txt /hello.txt\nEXPOSE 8000\n",
        f"dockerfiles/{folder}/hello.txt": "hello\n",
    }
    if container is not None:
        files[f"dockerfiles/{folder}/container.json"] = container if isinstance(container, str) else json.dumps(container)
    if image_json is not None:
        files[f"dockerfiles/{folder}/image.json"] = json.dumps(image_json)
    return files


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def require(condition: bool, what: str) -> None:
    """Skip when something a test needs is missing, but fail in CI (GROKEMU_REQUIRE_DOCKER=1): docker and e2e
    tests must never silently skip there."""
    if condition:
        return
    if REQUIRE_DOCKER:
        pytest.fail(f"{what} is required (GROKEMU_REQUIRE_DOCKER=1) but missing")
    pytest.skip(f"{what} not available")
