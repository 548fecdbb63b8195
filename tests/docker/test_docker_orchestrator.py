"""The Docker adapter against the real daemon: the same contract as the in-memory fake."""
from __future__ import annotations


import pytest

from grokemu.adapters.docker_orchestrator import DockerOrchestrator
from tests.contracts.orchestrator import DaemonContract

pytestmark = pytest.mark.docker


class TestDockerOrchestrator(DaemonContract):
    @pytest.fixture
    def orch(self):
        return DockerOrchestrator()

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
