"""container.json → RunSpec: which image reference the orchestrator gets (docs/swarm.md, images on several nodes)."""
from __future__ import annotations

from grokemu.adapters.fs_package_files import FsPackageFiles
from grokemu.adapters.sqlite_store import SqliteStore
from grokemu.config import Settings
from grokemu.domain.clock import ManualClock
from grokemu.domain.model import DockerImage
from grokemu.services.auth import AuthService
from grokemu.services.run_specs import RunSpecs

DIGEST = "sha256:" + "ab" * 32


def specs(tmp_path, **settings) -> RunSpecs:
    store = SqliteStore(":memory:")
    s = Settings(data_dir=tmp_path, **settings)
    return RunSpecs(s, store, AuthService({"admin": "admin"}, store, ManualClock()), FsPackageFiles(tmp_path / "p"))


def image(digest: str = DIGEST) -> DockerImage:
    i = DockerImage(name="squares-squares", package="@acme/squares", docker_dir="squares", version="1.0.0")
    i.image_ref, i.docker_id, i.digest = "datagrok/squares-squares:admin", "sha256:" + "cd" * 32, digest
    return i


def test_a_swarm_with_a_registry_runs_images_by_digest_from_it(tmp_path):
    ref = specs(tmp_path, orchestrator="swarm", swarm_registry="stand.lan:8080").image_reference(image())
    assert ref == f"stand.lan:8080/datagrok/squares-squares@{DIGEST}"


def test_otherwise_the_local_image(tmp_path):
    local = image().docker_id
    assert specs(tmp_path, orchestrator="swarm").image_reference(image()) == local  # no registry named
    assert specs(tmp_path, orchestrator="swarm", swarm_registry="s:1").image_reference(image(digest="")) == local
    assert specs(tmp_path, swarm_registry="s:1").image_reference(image()) == local  # the Docker backend
