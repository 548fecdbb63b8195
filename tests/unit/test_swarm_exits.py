"""How the Swarm adapter reads an ended task (adapters/swarm_orchestrator.py `inspect`), against canned API answers
shaped like the daemon's (GET /services/<id>, /tasks, /containers/<id>/json): no swarm needed."""
from __future__ import annotations

from docker.errors import NotFound

from grokemu.adapters.swarm_orchestrator import SwarmOrchestrator
from grokemu.domain.exits import explain_exit

MB = 1024 * 1024


class FakeApi:
    def __init__(self, task_status: dict, containers: dict):
        self.task_status = task_status
        self.containers = containers

    def inspect_service(self, service_id):
        return {"ID": service_id, "Spec": {"Name": "grokemu-x", "Labels": {"grokemu.port": "5353"},
                                           "Mode": {"Replicated": {"Replicas": 1}},
                                           "TaskTemplate": {"Resources": {"Limits": {"MemoryBytes": 64 * MB}}}}}

    def tasks(self, filters):
        return [{"ID": "t1", "Version": {"Index": 7}, "Status": self.task_status}]

    def inspect_container(self, container_id):
        if container_id not in self.containers:
            raise NotFound("gone")
        return self.containers[container_id]


class FakeClient:
    def __init__(self, api):
        self.api = api


def orchestrator(task_status, containers=None):
    orch = SwarmOrchestrator()
    orch._client = FakeClient(FakeApi(task_status, containers or {}))
    return orch


def failed_task(code, container_id="c1"):
    return {"State": "failed", "Err": f"task: non-zero exit ({code})",
            "ContainerStatus": {"ContainerID": container_id, "ExitCode": code}}


def test_an_oom_killed_task_whose_container_is_on_this_node_says_so():
    orch = orchestrator(failed_task(137), {"c1": {"State": {"OOMKilled": True, "ExitCode": 137}}})
    running = orch.inspect("svc")
    assert (running.state, running.exit_code, running.oom_killed, running.mem_limit) == ("exited", 137, True, 64 * MB)
    assert explain_exit(running.exit_facts()) == \
        "the container was killed for running out of memory: its limit is 64 MB (container.json `memory`)"


def test_a_task_whose_container_is_gone_says_out_of_memory_or_sigkill():
    running = orchestrator(failed_task(137)).inspect("svc")
    assert running.oom_killed is None and running.status_message == "task: non-zero exit (137)"
    assert explain_exit(running.exit_facts()) == \
        "the container was killed (code 137: out of memory or SIGKILL; its memory limit is 64 MB, container.json " \
        "`memory`)"


def test_a_crashed_task_gives_its_code():
    orch = orchestrator(failed_task(3), {"c1": {"State": {"OOMKilled": False, "ExitCode": 3}}})
    assert explain_exit(orch.inspect("svc").exit_facts()) == "the container exited with code 3"


def test_a_running_task_has_no_exit_story():
    orch = orchestrator({"State": "running", "ContainerStatus": {"ContainerID": "c1"}},
                        {"c1": {"State": {}, "NetworkSettings": {"Networks": {}}}})
    running = orch.inspect("svc")
    assert running.state == "running" and running.oom_killed is None and running.status_message == ""
