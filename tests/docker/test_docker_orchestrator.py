"""The Docker adapter against the real daemon: the same contract as the in-memory fake."""
from __future__ import annotations

import subprocess
import uuid

import pytest

from grokemu.adapters.docker_orchestrator import DockerOrchestrator
from tests.contracts.orchestrator import OrchestratorContract
from tests.helpers import require

pytestmark = pytest.mark.docker


class TestDockerOrchestrator(OrchestratorContract):
    @pytest.fixture
    def orch(self):
        return DockerOrchestrator()

    @pytest.fixture
    def labels(self, orch):
        labels = {"grokemu.test": uuid.uuid4().hex}
        yield labels
        for c in orch.list_labelled(labels):
            orch.remove(c.id)
        orch.remove_images(labels)

    @pytest.fixture
    def base_image(self, orch, tmp_path, labels):
        found = subprocess.run(["docker", "image", "inspect", "python:3.12-slim"], capture_output=True)
        require(found.returncode == 0, "the python:3.12-slim image (scripts/ensure-base-image.sh)")
        tag, result = self.build(orch, tmp_path, 'FROM python:3.12-slim\nEXPOSE 8000\n'
                                 'CMD ["python3", "-m", "http.server", "8000"]\n', labels)
        assert result.ok, result.logs
        return tag

    def test_storage_limit_is_applied_or_reported(self, orch, base_image, labels):
        running = orch.run(self.spec(base_image, labels, storage_gb=21))
        try:
            attrs = orch.client.api.inspect_container(running.id)
            applied = (attrs["HostConfig"].get("StorageOpt") or {}).get("size")
            assert applied == "21G" or any("storage 21" in w for w in running.warnings)
        finally:
            orch.remove(running.id)

    def test_published_on_loopback_only(self, orch, base_image, labels):
        running = orch.run(self.spec(base_image, labels))
        try:
            bindings = orch.client.api.inspect_container(running.id)["HostConfig"]["PortBindings"]["8000/tcp"]
            assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]
        finally:
            orch.remove(running.id)
