"""The Docker adapter against the real daemon: the same contract as the in-memory fake."""
from __future__ import annotations


import pytest

from grokemu.adapters.docker_orchestrator import DockerOrchestrator
from tests.contracts.orchestrator import DaemonContract, wait_for

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

    def test_a_kill_is_a_signal_not_an_oom(self, orch, base_image, labels):
        running = orch.run(self.spec(base_image, labels))
        try:
            orch.client.api.kill(running.id, signal="SIGKILL")
            assert wait_for(lambda: orch.inspect(running.id).state == "exited")
            ended = orch.inspect(running.id)
            assert (ended.state, ended.oom_killed, ended.exit_code) == ("exited", False, 137)
        finally:
            orch.remove(running.id)

    def test_stop_rounds_a_fraction_up_never_to_no_grace(self, orch, base_image, labels):
        calls = []
        real = orch.slow_client.api.stop
        orch.slow_client.api.stop = lambda container_id, timeout: (calls.append(timeout), real(container_id, timeout))
        running = orch.run(self.spec(base_image, labels))
        try:
            orch.stop(running.id, timeout=0.5)
            assert calls == [1] and orch.inspect(running.id).state == "exited"
        finally:
            del orch.slow_client.api.stop
            orch.remove(running.id)

    def test_a_spec_network_of_its_own_is_made_once_joined_and_removed_with_the_instance(self, orch, base_image):
        """RunSpec.network (the broker and its workers): created labelled as the instance's, shared by the containers
        that name it, unreachable from the default bridge, and removed by remove_networks once they are gone."""
        import uuid

        from grokemu.domain.labels import managed_labels, queue_network

        instance = f"nettest-{uuid.uuid4().hex[:6]}"
        labels, network = managed_labels(instance), queue_network(instance)
        started = []
        try:
            for _ in range(2):
                started.append(orch.run(self.spec(base_image, labels, network=network)))
            [made] = orch.client.networks.list(names=[network])
            assert made.attrs["Labels"] == labels
            for running in started:
                attached = orch.client.api.inspect_container(running.id)["NetworkSettings"]["Networks"]
                assert list(attached) == [network]
                assert orch.inspect(running.id).app_ip == attached[network]["IPAddress"]
            assert orch.remove_networks(managed_labels(f"{instance}-other")) == 0  # another instance's: none
        finally:
            for running in started:
                orch.remove(running.id)
        assert orch.remove_networks(labels) == 1
        assert orch.client.networks.list(names=[network]) == []
