"""scripts/standins/common.sh's decisions (docs/offline-images.md "When they are built"), against tiny FROM scratch
images under throwaway tags: which tags it builds, which it keeps, what it retags and removes."""
from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def image_id(tag: str) -> str | None:
    done = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", tag], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def common(script: str) -> subprocess.CompletedProcess:
    """Run `script` in bash with scripts/lib.sh and scripts/standins/common.sh sourced."""
    body = f'set -euo pipefail; source "{ROOT}/scripts/lib.sh"; source "{ROOT}/scripts/standins/common.sh"; {script}'
    return subprocess.run(["bash", "-c", body], capture_output=True, text=True, timeout=300)


@pytest.fixture
def images(tmp_path):
    """make(label) builds a distinct FROM scratch image (label None: no grokemu.base, like a pulled image) and returns
    its tag; every tag made or named through `tag()` is removed afterwards."""
    run = uuid.uuid4().hex[:8]
    tags: list[str] = []

    def tag(name: str) -> str:
        tags.append(f"grokemu-test/standin-script-{run}:{name}")
        return tags[-1]

    def make(name: str, label: str | None) -> str:
        context = tmp_path / name
        context.mkdir()
        (context / "f").write_text(name)
        lines = ["FROM scratch", "COPY f /f", "LABEL grokemu.test=standin-script"]
        if label is not None:
            lines.append(f"LABEL grokemu.base={label}")
        (context / "Dockerfile").write_text("\n".join(lines) + "\n")
        docker("build", "-q", "-t", tag(name), str(context))
        return tags[-1]

    make.tag = tag
    yield make
    for t in tags:
        subprocess.run(["docker", "image", "rm", "-f", t], capture_output=True)


def test_states(images):
    tags = {"real": images("real", None), "first": images("first", "offline-standin"),
            "second": images("second", "offline-standin-2"), "current": images("current", "offline-standin-3"),
            "absent": images.tag("absent")}
    done = common(" ".join(f'echo "$(standin_state {t})";' for t in tags.values()))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["real", "old", "old", "current", "absent"]


def test_needs_build_only_for_absent_or_older(images):
    real, current, old = images("real", None), images("current", "offline-standin-3"), images("old", "offline-standin-2")
    keep = common(f"needs_build {real} {current}")
    assert keep.returncode == 1, keep.stdout + keep.stderr
    assert "not a grokemu stand-in: kept" in keep.stdout and "already present (offline-standin-3)" in keep.stdout
    rebuild = common(f"needs_build {real} {old}")
    assert rebuild.returncode == 0 and "older grokemu stand-in: rebuilding" in rebuild.stdout
    assert common(f"needs_build {current} {images.tag('nothing')}").returncode == 0


def test_tag_standin_moves_absent_and_older_tags_and_keeps_real_ones(images):
    new = images("new", "offline-standin-3")
    real, old, absent = images("real", None), images("old", "offline-standin-2"), images.tag("absent")
    real_id, old_id = image_id(real), image_id(old)
    done = common(f"tag_standin {new} {real} {old} {absent}")
    assert done.returncode == 0, done.stderr
    assert image_id(old) == image_id(absent) == image_id(new)
    assert image_id(real) == real_id  # a real image is never replaced
    assert image_id(old_id) is None  # the older stand-in, left without tags, is gone
