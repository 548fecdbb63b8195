"""The Docker daemon going away and coming back (docs/faults.md §4), on the in-memory orchestrator: what the spawner
says while it is gone, and what the reconcile on its return does. No daemon, no sleeping: the tick is called."""
from __future__ import annotations

from dataclasses import replace

import pytest

from grokemu.domain.errors import DOCKER_UNREACHABLE, DockerUnavailable
from grokemu.domain.lifecycle import ContainerStatus as S
from tests.unit.test_spawner import World


@pytest.fixture
def w(tmp_path):
    world = World(tmp_path)
    world.spawner.tick()  # the first tick: the startup reconcile, the daemon seen up
    return world


def labelled(w, cid):
    return w.orch.list_labelled({"grokemu.container": cid})


def started(w, config=None):
    cid = w.add(config or {})
    c = w.spawner.run(cid, "admin", await_start=True)
    assert c.status is S.STARTED
    return cid, c.docker_id


def test_while_the_daemon_is_gone_the_state_says_so_and_a_start_is_a_503(w):
    cid = w.add({"on_demand": True})
    assert w.spawner.docker_state() == {"reachable": True, "since": None, "message": "ok"}
    w.clock.advance(5)
    w.orch.daemon_down()
    w.spawner.tick()
    assert w.spawner.docker_state() == {"reachable": False, "since": w.clock.now(), "message": DOCKER_UNREACHABLE}
    with pytest.raises(DockerUnavailable) as e:
        w.spawner.run(cid, "admin")
    assert e.value.status == 503 and e.value.message == DOCKER_UNREACHABLE
    assert w.get(cid).status is S.USER_STOPPED and w.get(cid).desired_instances == 0  # nothing changed
    with pytest.raises(DockerUnavailable):
        w.spawner.ensure_ready(cid, "admin", timeout=1)  # a fetchProxy call that would start it
    w.orch.daemon_up()
    w.spawner.tick()
    assert w.spawner.docker_state()["reachable"] is True


def test_a_container_the_daemon_stopped_is_run_again_when_it_is_back(w):
    cid, old = started(w)
    w.orch.daemon_down()  # dockerd on SIGTERM stops what runs (exit 143)
    w.spawner.tick()
    assert w.get(cid).status is S.STARTED  # nothing is marked while grokemu cannot see the daemon
    w.orch.daemon_up()
    w.spawner.tick()  # the reconcile: the old container removed, a new one run
    c = w.get(cid)
    assert c.status is S.STARTED and c.desired_instances == 1 and c.docker_id != old, c
    assert [r.id for r in labelled(w, cid)] == [c.docker_id]  # no orphan, no double
    assert w.orch.inspect(old) is None


def test_a_container_docker_restarted_is_readopted_at_its_new_port(w):
    cid, docker_id = started(w)
    port = w.get(cid).port
    w.orch.daemon_down()
    w.spawner.tick()
    w.orch.daemon_up(restart_containers=True)  # a restart policy (or live-restore) kept the same container
    runs = w.orch.run_calls
    w.spawner.tick()
    c = w.get(cid)
    assert c.status is S.STARTED and c.docker_id == docker_id and w.orch.run_calls == runs  # adopted, not rerun
    assert c.port == w.orch.inspect(docker_id).host_port != port  # the proxy follows the new host port
    assert [r.id for r in labelled(w, cid)] == [docker_id]


def test_live_restore_keeps_everything_as_it_was(w):
    cid, docker_id = started(w)
    port = w.get(cid).port
    w.orch.daemon_down(stop_containers=False)
    w.spawner.tick()
    w.orch.daemon_up()
    generation = w.spawner.generation
    w.spawner.tick()
    c = w.get(cid)
    assert (c.status, c.docker_id, c.port) == (S.STARTED, docker_id, port)
    assert w.spawner.generation == generation + 1  # only "Docker is back" was announced


def test_stopped_and_failed_containers_stay_as_they_are(w):
    stopped = w.add({"on_demand": True})
    failed, failed_docker = started(w)
    w.orch.crash(failed_docker, exit_code=3)
    w.spawner.tick()
    assert w.get(failed).status is S.ERROR
    w.orch.daemon_down()
    w.spawner.tick()
    w.orch.daemon_up()
    w.spawner.tick()
    assert w.get(stopped).status is S.USER_STOPPED and w.get(failed).status is S.ERROR
    assert "code 3" in w.get(failed).error
    assert w.orch.list_labelled({"grokemu.managed": "true"}) == []


def test_a_stop_made_while_the_daemon_was_gone_leaves_no_container_behind(w):
    cid, docker_id = started(w)
    w.orch.daemon_down(stop_containers=False)  # its container still runs, grokemu cannot reach it
    w.spawner.tick()
    c = w.spawner.stop(cid, await_stop=True)
    assert c.status is S.USER_STOPPED and not c.docker_id
    assert w.orch.containers[docker_id].running.state == "running"  # still there, out of reach
    w.orch.daemon_up()
    w.spawner.tick()  # the reconcile removes what the stop could not
    assert w.orch.inspect(docker_id) is None and labelled(w, cid) == []
    assert w.get(cid).status is S.USER_STOPPED


def test_a_start_cut_short_by_the_daemon_waits_and_runs_once_it_is_back(w):
    cid = w.add({"on_demand": True})
    real_run = w.orch.run

    def gone_mid_run(spec):
        w.orch.daemon_down()
        return real_run(spec)

    w.orch.run = gone_mid_run
    c = w.spawner.run(cid, "admin")
    assert c.status is S.PENDING_START and c.desired_instances == 1 and not c.error, c  # not `error`: not its fault
    w.orch.run = real_run
    w.spawner.tick()  # still gone: nothing moves
    assert w.get(cid).status is S.PENDING_START
    w.orch.daemon_up()
    w.spawner.tick()
    c = w.get(cid)
    assert c.status is S.STARTED and [r.id for r in labelled(w, cid)] == [c.docker_id]


def test_two_containers_for_one_entity_become_one(w):
    cid, docker_id = started(w)
    spec = w.orch.spec_of(docker_id)
    w.orch.daemon_down(stop_containers=False)
    w.spawner.tick()
    w.orch.daemon_up()
    other = w.orch.run(replace(spec, name=spec.name + "-2"))  # a second one with the same labels
    w.spawner.tick()
    assert [r.id for r in labelled(w, cid)] == [docker_id]  # the one the entity records is kept
    assert w.orch.inspect(other.id) is None and w.get(cid).docker_id == docker_id
