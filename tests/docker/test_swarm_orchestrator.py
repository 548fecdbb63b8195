"""The Swarm adapter against a real single-node swarm: the same contract as the Docker adapter and the fake, plus
the service mapping checked in `docker service inspect` (docs/swarm.md)."""
from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from grokemu.adapters.swarm_orchestrator import NOT_A_MANAGER, SwarmOrchestrator
from grokemu.domain.errors import GrokemuError
from tests.contracts.orchestrator import DaemonContract

pytestmark = pytest.mark.docker


def service_inspect(service_id: str) -> dict:
    out = subprocess.run(["docker", "service", "inspect", service_id], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]


class TestSwarmOrchestrator(DaemonContract):
    @pytest.fixture
    def orch(self, swarm):
        return SwarmOrchestrator(network=f"grokemu-test-{uuid.uuid4().hex[:6]}")

    @pytest.fixture(autouse=True)
    def network_removed(self, orch):
        yield
        subprocess.run(["docker", "network", "rm", orch.network_name], capture_output=True)

    def test_service_carries_the_mapping(self, orch, base_image, labels):
        """One service per container: grokemu's labels, cpu/memory limits, /dev/shm tmpfs, restart none, replicas
        1 while running and 0 after stop, no published port."""
        running = orch.run(self.spec(base_image, labels, nano_cpus=500_000_000, mem_bytes=96 * 2**20,
                                     shm_bytes=32 * 2**20))
        try:
            spec = service_inspect(running.id)["Spec"]
            assert spec["Labels"]["grokemu.test"] == labels["grokemu.test"]
            template = spec["TaskTemplate"]
            assert template["Resources"]["Limits"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 96 * 2**20}
            [shm] = [m for m in template["ContainerSpec"]["Mounts"] if m["Target"] == "/dev/shm"]
            assert shm["Type"] == "tmpfs" and shm["TmpfsOptions"]["SizeBytes"] == 32 * 2**20
            assert template["RestartPolicy"]["Condition"] == "none"
            assert spec["Mode"]["Replicated"]["Replicas"] == 1
            assert not (spec.get("EndpointSpec") or {}).get("Ports")
            assert "HELLO=world" in template["ContainerSpec"]["Env"]
            orch.stop(running.id)
            assert service_inspect(running.id)["Spec"]["Mode"]["Replicated"]["Replicas"] == 0
        finally:
            orch.remove(running.id)

    def test_a_stopped_service_scales_back_to_one_with_the_new_spec(self, orch, base_image, labels):
        first = orch.run(self.spec(base_image, labels, name="grokemu-contract-again", env={"TOKEN": "one"}))
        try:
            orch.stop(first.id)
            assert service_inspect(first.id)["Spec"]["Mode"]["Replicated"]["Replicas"] == 0
            again = orch.run(self.spec(base_image, labels, name="grokemu-contract-again", env={"TOKEN": "two"}))
            assert again.id == first.id and again.state == "running"  # the same service, scaled to 1
            spec = service_inspect(first.id)["Spec"]
            assert spec["Mode"]["Replicated"]["Replicas"] == 1
            assert "TOKEN=two" in spec["TaskTemplate"]["ContainerSpec"]["Env"]
        finally:
            orch.remove(first.id)

    def test_a_crashed_task_is_not_restarted(self, orch, base_image, labels):
        running = orch.run(self.spec(base_image, labels, env={"X": "1"}))
        try:
            subprocess.run(["docker", "kill", _task_container(running.id)], capture_output=True, timeout=30)
            from tests.contracts.orchestrator import wait_for

            assert wait_for(lambda: orch.inspect(running.id).state == "exited")
            assert orch.inspect(running.id).state == "exited"  # restart policy none: not restarted
        finally:
            orch.remove(running.id)

    def test_limits_no_node_can_satisfy_fail_clearly(self, orch, base_image, labels):
        with pytest.raises(GrokemuError, match="No swarm node can run"):
            orch.run(self.spec(base_image, labels, nano_cpus=1024 * 10**9))
        assert list(orch.list_labelled(labels)) == []

    def test_unknown_image_fails_clearly(self, orch, labels):
        with pytest.raises(GrokemuError, match="cannot get the image|ended"):
            orch.run(self.spec(f"grokemu-contract/none-{uuid.uuid4().hex[:6]}:1", labels))
        assert list(orch.list_labelled(labels)) == []


def _task_container(service_id: str) -> str:
    out = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.swarm.service.id={service_id}"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.split()[0]


def test_not_a_manager_says_what_to_do(monkeypatch):
    orch = SwarmOrchestrator()
    monkeypatch.setattr(type(orch.client), "info", lambda self: {"Swarm": {"LocalNodeState": "inactive"}},
                        raising=False)
    assert orch.swarm_problem() == NOT_A_MANAGER and "docker swarm init" in NOT_A_MANAGER
