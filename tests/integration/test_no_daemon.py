"""An app built without an orchestrator gets NoDaemon (adapters/no_daemon.py): it answers every request as an app
whose Docker daemon is unreachable does."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest

from grokemu.adapters.memory_orchestrator import MemoryOrchestrator
from grokemu.app import create_app
from grokemu.web.context import app_context
from tests.helpers import hello_package, package_zip

DEV = {"Authorization": "Dev admin"}


def _session(app) -> list:
    """What a caller sees of one session: health, a publish and its image, a run, logs, the dashboard, a reset."""
    client, ctx = app.test_client(), app_context(app)
    token = client.post("/api/users/login/dev", headers=DEV).get_json()["token"]
    auth = {"Authorization": token}
    seen: list = []
    health = client.get("/_grokemu/health", headers=auth).get_json()
    seen.append(health["docker"])
    published = client.post("/api/packages/dev/@acme/grokprobe?debug=true&rebuild=false&dropDb=false",
                            data=package_zip(hello_package(container={"on_demand": True})), headers=DEV)
    seen.append(published.status_code)
    ctx.scheduler.run_once()
    [image] = client.get("/api/docker/images", headers=auth).get_json()
    seen.append((image["status"], image["logs"]))
    [container] = client.get("/api/docker/containers", headers=auth).get_json()
    seen.append(container["status"])
    for path in ("run", "stop", "logs?limit=10"):
        answer = client.get(f"/api/docker/containers/{container['id']}/{path}", headers=auth)
        seen.append((path, answer.status_code, answer.get_json()))
    seen.append(client.get("/", headers=auth).status_code)
    reset = client.post("/_grokemu/reset", headers=auth).get_json()
    seen.append(reset["docker"])
    # the two apps' entities differ only by their random ids
    return json.loads(re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", json.dumps(seen)))


def test_no_orchestrator_answers_as_an_unreachable_daemon(tmp_path, settings, clock):
    unreachable = create_app(dataclasses.replace(settings, data_dir=tmp_path / "a"),
                             orchestrator=MemoryOrchestrator(reachable=False), clock=clock, background=False)
    none = create_app(dataclasses.replace(settings, data_dir=tmp_path / "b"), clock=clock, background=False)
    expected = _session(unreachable)
    assert expected[0]["reachable"] is False and expected[2][0] == "pending validation"
    assert _session(none) == expected


@pytest.mark.parametrize("call", ["build_image", "tag_image", "run", "stop", "remove"])
def test_no_daemon_refuses_what_needs_a_daemon(call):
    from grokemu.adapters.no_daemon import NoDaemon
    from grokemu.domain.errors import DockerUnavailable

    args = {"build_image": ("ctx", "t", {}), "tag_image": ("a", "b"), "run": (None,), "stop": ("c",),
            "remove": ("c",)}[call]
    with pytest.raises(DockerUnavailable) as refused:
        getattr(NoDaemon(), call)(*args)
    assert refused.value.status == 503


def test_no_daemon_has_nothing_in_it():
    from grokemu.adapters.no_daemon import NoDaemon
    from grokemu.domain.ports import Orchestrator

    orch: Orchestrator = NoDaemon()  # conforms to the port (mypy checks this line)
    assert orch.ping() is False and orch.keeps_stopped is False
    assert orch.inspect_image("x") is None and orch.pull_image("x") is False and orch.remove_images({}) == 0
    assert orch.inspect("c") is None and orch.logs("c", 10) == "" and list(orch.list_labelled({})) == []
    assert list(orch.stream_logs("c", None, follow=True)) == []
    assert NoDaemon().remove_networks({"grokemu.instance": "x"}) == 0
