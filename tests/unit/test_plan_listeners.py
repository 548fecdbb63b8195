"""`grokemu up`'s network topology as one function (bootstrap.py plan_listeners): where it listens beside its own
address and what containers are told, for each way grokemu can run, against fakes of the orchestrator's network
facts."""
from __future__ import annotations

import dataclasses

import pytest

from grokemu.bootstrap import ListenerPlan, ServeError, plan_listeners
from grokemu.config import load_settings


class Bridge:
    """The Docker backend on the host without a docker_network: the bridge gateway is where containers reach it."""

    def __init__(self, gateway="172.17.0.1"):
        self.gateway = gateway

    def bridge_gateway(self):
        return self.gateway


class Networks(Bridge):
    """The Docker backend with a docker_network; `me` is grokemu's own container (None: grokemu on the host)."""

    def __init__(self, me=None, fail=None):
        super().__init__()
        self.me, self.fail, self.ensured = me, fail, []

    def ensure_network(self, labels):
        if self.fail:
            raise RuntimeError(self.fail)
        self.ensured.append(labels)
        return {"IPAM": {"Config": [{"Gateway": "172.30.0.1"}]}}

    def network_gateway(self, attrs):
        return attrs["IPAM"]["Config"][0]["Gateway"]

    def own_container(self):
        return self.me

    def join_network(self, container):
        assert container is self.me
        return "172.30.0.5", ["172.30.0.1"]


class Swarm(Bridge):
    def __init__(self, problem):
        super().__init__()
        self.problem = problem

    def swarm_problem(self):
        return self.problem


@pytest.fixture
def base(tmp_path):
    return load_settings(overrides={"data_dir": str(tmp_path), "instance": "plan"})


def test_on_the_host_it_also_listens_on_the_bridge_gateway(base):
    assert plan_listeners(base, Bridge(), docker_ok=True) == ListenerPlan(extra_hosts=("172.17.0.1",))


def test_without_docker_or_with_a_given_container_api_url_it_listens_on_its_own_address_only(base):
    assert plan_listeners(base, Bridge(), docker_ok=False) == ListenerPlan()
    given = dataclasses.replace(base, container_api_url="http://example.invalid:9/api")
    assert plan_listeners(given, Bridge(), docker_ok=True) == ListenerPlan()
    # the gateway is its own address already: bound once
    assert plan_listeners(dataclasses.replace(base, host="172.17.0.1"), Bridge(), docker_ok=True) == ListenerPlan()


def test_an_orchestrator_without_a_bridge_adds_nothing(base):
    assert plan_listeners(base, object(), docker_ok=True) == ListenerPlan()


def test_docker_network_on_the_host_listens_on_its_gateway_and_gives_containers_that_address(base):
    orch = Networks()
    plan = plan_listeners(dataclasses.replace(base, docker_network="plugins"), orch, docker_ok=True)
    assert plan == ListenerPlan(extra_hosts=("172.30.0.1",), api_host="172.30.0.1")
    assert orch.ensured == [{"grokemu.instance": "plan"}]


def test_docker_network_in_a_container_joins_it_and_tells_the_host_by_its_peers(base):
    plan = plan_listeners(dataclasses.replace(base, docker_network="plugins"), Networks(me="grokemu-ctr"), True)
    assert plan == ListenerPlan(host_peers=("172.30.0.1",), api_host="172.30.0.5", guard_names=("172.30.0.5",))


def test_a_network_that_cannot_be_had_stops_serving_with_the_reason(base):
    with pytest.raises(ServeError, match="cannot use Docker network 'plugins': no such driver"):
        plan_listeners(dataclasses.replace(base, docker_network="plugins"), Networks(fail="no such driver"), True)
    with pytest.raises(ServeError, match="has none"):
        plan_listeners(dataclasses.replace(base, docker_network="plugins"), Bridge(), True)


def test_an_unusable_swarm_is_exit_code_2_with_its_problem(base):
    swarm = dataclasses.replace(base, orchestrator="swarm")
    with pytest.raises(ServeError, match="docker swarm init") as refused:
        plan_listeners(swarm, Swarm("run `docker swarm init`"), docker_ok=True)
    assert refused.value.code == 2
    assert plan_listeners(swarm, Swarm(None), docker_ok=True) == ListenerPlan(extra_hosts=("172.17.0.1",))
