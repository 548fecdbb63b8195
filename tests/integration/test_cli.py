from __future__ import annotations

import hashlib
import io
import subprocess
import sys

from grokemu.adapters.fs_blobs import FsBlobStore
from grokemu.domain.clock import ManualClock
from grokemu.services.registry import RegistryService


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "grokemu", *args], capture_output=True, text=True, timeout=60, **kw)


def test_version_and_help():
    assert run("--version").stdout.startswith("grokemu ")
    helped = run("up", "--help").stdout
    assert "--data-dir" in helped and "precedence" in helped


def test_registry_gc_command(tmp_path):
    clock = ManualClock(start=1_000.0)  # long ago: nothing is inside gc's grace period any more
    registry = RegistryService(FsBlobStore(tmp_path / "registry"), clock)
    upload = registry.start_upload("datagrok/x")
    digest = "sha256:" + hashlib.sha256(b"orphan").hexdigest()
    registry.finish_upload("datagrok/x", upload.upload_id, digest, io.BytesIO(b"orphan"))
    dry = run("registry", "gc", "--data-dir", str(tmp_path), "--dry-run")
    assert dry.returncode == 0 and "registry gc:" in dry.stdout
    out = run("registry", "gc", "--data-dir", str(tmp_path))
    assert out.returncode == 0 and "'blobs_removed': 1" in out.stdout, out.stdout + out.stderr


def test_bad_setting_exits_2(tmp_path):
    out = run("up", "--data-dir", str(tmp_path), env={"GROKEMU_PORT": "nope", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 2 and "'port'" in out.stderr
