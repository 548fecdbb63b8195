"""The live replacement `grokemu dev` asks for (services/spawner/live_replace.py `replace_image`): the new build
runs beside the container that serves, the same entity then points at it and the old one is stopped; a new container
that does not come up leaves the old one serving with its key."""
from __future__ import annotations

import pytest

from grokemu.domain.errors import BadRequest, Conflict, ContainerStartFailed, NotFound, Unauthorized
from grokemu.domain.lifecycle import ContainerStatus as S
from tests.unit.test_spawner import World

NEXT = "datagrok/squares-squares:admin"


@pytest.fixture
def w(tmp_path):
    return World(tmp_path, stop_timeout=1.5)


def started(w):
    cid = w.add()
    c = w.spawner.run(cid, "admin", await_start=True)
    return c, w.orch.spec_of(c.docker_id).env["USER_API_KEY"]


def test_the_new_build_takes_over_the_same_entity_and_the_old_container_goes(w):
    old, old_key = started(w)
    new_image = w.orch.add_image(NEXT, [8000])
    c = w.spawner.replace_image(old.id, NEXT)
    assert c.id == old.id and c.status is S.STARTED  # the same entity, started all along
    assert c.docker_id != old.docker_id and c.running_image_id == new_image
    assert c.service_name == f"{old.service_name}-next"  # beside the old one: Docker names are unique
    assert w.get(c.id).docker_id == c.docker_id and w.get(c.id).docker_image == NEXT
    assert w.orch.inspect(old.docker_id) is None and w.orch.stops == [(old.docker_id, 1.5)]  # stopped with grace
    new_key = w.orch.spec_of(c.docker_id).env["USER_API_KEY"]
    assert w.auth.authenticate(new_key) == "admin"
    with pytest.raises(Unauthorized):
        w.auth.authenticate(old_key)  # the replaced container's key died with it
    image = w.store.get_image(c.image_id)  # what the next start and the next validation see
    assert image.docker_id == new_image and image.image_ref == NEXT
    again = w.spawner.replace_image(c.id, NEXT)  # names alternate, so the next replacement fits beside this one
    assert again.service_name == old.service_name and again.docker_id != c.docker_id


def test_a_new_container_that_does_not_start_leaves_the_old_one_serving_with_its_key(w):
    old, old_key = started(w)
    w.orch.add_image(NEXT, [8000])
    w.orch.fail_next_run = "exec format error"
    with pytest.raises(ContainerStartFailed, match="exec format error; the previous one keeps serving"):
        w.spawner.replace_image(old.id, NEXT)
    c = w.get(old.id)
    assert c.status is S.STARTED and c.docker_id == old.docker_id and w.orch.inspect(old.docker_id).state == "running"
    assert w.auth.authenticate(old_key) == "admin"
    assert len(w.orch.list_labelled({"grokemu.container": old.id})) == 1  # no orphan


def test_only_a_build_of_its_own_image_that_the_daemon_has(w):
    old, _ = started(w)
    w.orch.add_image("datagrok/other-image:admin", [8000])
    for bad in ("datagrok/other-image:admin", "datagrok/squares-squares", "datagrok/squares-squares:a/b",
                "evil.example/datagrok/squares-squares:admin", "x" * 400):
        with pytest.raises(BadRequest):
            w.spawner.replace_image(old.id, bad)
    with pytest.raises(BadRequest, match="not in the Docker daemon"):
        w.spawner.replace_image(old.id, "datagrok/squares-squares:missing")
    w.orch.add_image("datagrok/squares-squares:two", [8000, 9000])
    with pytest.raises(BadRequest, match="exposes 2 ports"):
        w.spawner.replace_image(old.id, "datagrok/squares-squares:two")
    with pytest.raises(NotFound):
        w.spawner.replace_image("no-such-container", NEXT)
    assert w.get(old.id).docker_id == old.docker_id and w.orch.stops == []


def test_a_container_that_is_not_started_is_left_for_its_next_start(w):
    cid = w.add({"on_demand": True})
    w.orch.add_image(NEXT, [8000])
    runs = w.orch.run_calls
    assert w.spawner.replace_image(cid, NEXT).status is S.USER_STOPPED
    assert w.orch.run_calls == runs


def test_one_driver_at_a_time(w):
    old, _ = started(w)
    w.orch.add_image(NEXT, [8000])
    lock = w.spawner._lock_for(old.id)
    with lock:  # a start or stop is driving it
        with pytest.raises(Conflict):
            w.spawner.replace_image(old.id, NEXT)
