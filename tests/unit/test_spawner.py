"""The spawner against the in-memory orchestrator and a manual clock: no daemon, no sleeping."""
from __future__ import annotations

import json
import threading

import pytest

from grokemu.adapters.memory_orchestrator import MemoryOrchestrator
from grokemu.adapters.fs_package_files import FsPackageFiles
from grokemu.adapters.sqlite_store import SqliteStore
from grokemu.config import Settings
from grokemu.domain.clock import ManualClock
from grokemu.domain.container_config import parse_container_json
from grokemu.domain.errors import BadRequest, NotFound
from grokemu.domain.lifecycle import ContainerStatus as S, ImageStatus
from grokemu.domain.model import DockerContainer, DockerImage
from grokemu.services.activity import ActivityTracker
from grokemu.services.auth import AuthService
from grokemu.services.run_specs import RunSpecs
from grokemu.services.spawner import Spawner

MB = 1024 * 1024


class World:
    def __init__(self, tmp_path, background=False, **settings):
        self.clock = ManualClock()
        self.store = SqliteStore(":memory:")
        self.orch = MemoryOrchestrator()
        self.settings = Settings(data_dir=tmp_path, port=8080, container_status_timeout=300, **settings)
        self.auth = AuthService({"admin": "admin"}, self.store, self.clock)
        self.spawner = self.new_spawner(background)

    def new_spawner(self, background=False):
        run_specs = RunSpecs(self.settings, self.store, self.auth, FsPackageFiles(self.settings.data_dir / "packages"))
        return Spawner(self.store, self.orch, self.clock, self.settings, self.auth, ActivityTracker(self.clock),
                       run_specs, background=background)

    def add(self, config=None, port=8000, name="squares-squares", package="@grokemu/squares", healthcheck=False):
        image = DockerImage(name=name, package=package, docker_dir="squares", version="1.0.0",
                            status=ImageStatus.READY, port=port, image_ref=f"datagrok/{name}:1.0.0")
        image.docker_id = self.orch.add_image(image.image_ref, [port], healthcheck=healthcheck)
        self.store.put_image(image)
        c = DockerContainer(name=name, package=package, image_id=image.id,
                            config=parse_container_json(json.dumps(config or {})))
        self.store.put_container(c)
        return c.id

    def get(self, cid):
        return self.store.get_container(cid)


@pytest.fixture
def w(tmp_path):
    return World(tmp_path)


def test_run_goes_pending_starting_checking_started(w):
    cid = w.add({"cpu": 0.5, "memory": 256, "shm_size": 128, "env": {"MODE": "test"}})
    seen = []
    w.store_put = w.store.put_container
    w.store.put_container = lambda c: (seen.append(c.status.value), w.store_put(c))[1]
    c = w.spawner.run(cid, "admin", await_start=True)
    assert c.status is S.STARTED and c.desired_instances == 1
    assert seen[-4:] == ["pending start", "starting", "checking", "started"]
    spec = w.orch.spec_of(c.docker_id)
    assert spec.nano_cpus == 500_000_000 and spec.mem_bytes == 256 * MB and spec.shm_bytes == 128 * MB
    assert spec.env["MODE"] == "test" and spec.env["DATAGROK_API_URL"] == "http://host.docker.internal:8080/api"
    assert w.auth.authenticate(spec.env["USER_API_KEY"]) == "admin"
    assert list(spec.env)[:2] == ["DATAGROK_API_URL", "USER_API_KEY"]  # container.json env comes last
    assert spec.labels["grokemu.container"] == cid and spec.labels["grokemu.instance"] == "default"
    assert spec.container_port == 8000 and spec.extra_hosts == {"host.docker.internal": "host-gateway"}
    assert c.address == "127.0.0.1" and c.port == w.orch.inspect(c.docker_id).host_port


def test_defaults_when_container_json_is_silent(w):
    c = w.spawner.run(w.add(), "admin", await_start=True)
    spec = w.orch.spec_of(c.docker_id)
    assert (spec.nano_cpus, spec.mem_bytes, spec.shm_bytes, spec.gpus, spec.storage_gb) == (
        250_000_000, 512 * MB, 64 * MB, 0, 21)


def test_stuck_start_times_out_by_the_clock(w):
    w.orch.apps_ready = False
    cid = w.add(healthcheck=True)  # a HEALTHCHECK that never passes holds `checking` until the status timeout
    c = w.spawner.run(cid, "admin")
    assert w.get(cid).status is S.CHECKING
    docker_id = w.get(cid).docker_id
    w.clock.advance(299)
    w.spawner.tick()
    assert w.get(cid).status is S.CHECKING
    w.clock.advance(2)
    w.spawner.tick()
    c = w.get(cid)
    assert c.status is S.ERROR and "held longer than 300 s" in c.error
    assert w.orch.inspect(docker_id) is None  # no orphan left in Docker
    assert "started" in c.last_logs  # the container's last log lines are kept


def test_stop_by_user_and_stop_in_error(w):
    cid = w.add()
    c = w.spawner.run(cid, "admin", await_start=True)
    stopped = w.spawner.stop(cid, await_stop=True)
    assert stopped.status is S.USER_STOPPED and stopped.desired_instances == 0 and stopped.port is None
    assert w.orch.inspect(c.docker_id) is None
    w.orch.fail_next_run = "boom"
    w.spawner.run(cid, "admin")
    assert w.get(cid).status is S.ERROR and "boom" in w.get(cid).error
    with pytest.raises(BadRequest):
        w.spawner.stop(cid)  # Datagrok's router answers 400 for `error`


def test_crash_becomes_error_with_logs_not_restarted(w):
    cid = w.add()
    c = w.spawner.run(cid, "admin", await_start=True)
    w.orch.crash(c.docker_id, exit_code=3, log="Traceback: ZeroDivisionError\n")
    runs = w.orch.run_calls
    w.spawner.tick()
    c = w.get(cid)
    assert c.status is S.ERROR and "code 3" in c.error and "ZeroDivisionError" in c.last_logs
    w.spawner.tick()
    assert w.orch.run_calls == runs


def test_idle_shutdown_and_open_socket_keeps_it_up(w):
    cid = w.add({"shutdown_timeout": 1, "on_demand": True})
    w.spawner.run(cid, "admin", await_start=True)
    with w.spawner.activity.hold(cid):
        w.clock.advance(600)
        w.spawner.tick()
        assert w.get(cid).status is S.STARTED
    w.clock.advance(59)
    w.spawner.tick()
    assert w.get(cid).status is S.STARTED
    w.spawner.activity.touch(cid)
    w.clock.advance(59)
    w.spawner.tick()
    assert w.get(cid).status is S.STARTED and w.get(cid).last_active == w.clock.now() - 59
    w.clock.advance(2)
    w.spawner.tick()
    assert w.get(cid).status is S.SYSTEM_STOPPED


def test_no_shutdown_timeout_means_never_idle(w):
    cid = w.add()
    w.spawner.run(cid, "admin", await_start=True)
    w.clock.advance(10 * 24 * 3600)
    w.spawner.tick()
    assert w.get(cid).status is S.STARTED


def test_reconcile_adopts_stops_and_removes_strays(w):
    kept, gone = w.add(name="a-kept"), w.add(name="b-gone")
    stray = w.add(name="c-stray")
    for cid in (kept, gone, stray):
        w.spawner.run(cid, "admin", await_start=True)
    w.orch.remove(w.get(gone).docker_id)  # vanished while grokemu was down
    stray_docker = w.get(stray).docker_id
    w.store.delete_container(stray)  # entity deleted while its container ran
    fresh = w.new_spawner()
    fresh.tick()
    assert w.get(kept).status is S.STARTED and w.orch.inspect(w.get(kept).docker_id).state == "running"
    assert w.get(gone).status is S.SYSTEM_STOPPED
    assert w.orch.inspect(stray_docker) is None
    assert len(w.orch.list_labelled({"grokemu.managed": "true"})) == 1  # no duplicate, no orphan


def test_leaving_with_the_stand_removes_everything_and_the_next_start_runs_the_running_ones_again(w):
    """remove_containers_on_exit (the compose stand): on the way out every labelled container goes and the running
    ones are noted; the next grokemu runs exactly those again, and nothing else."""
    running, stopped, lazy = w.add(name="a-running"), w.add(name="b-stopped"), w.add(name="c-idle")
    for cid in (running, stopped):
        w.spawner.run(cid, "admin", await_start=True)
    w.spawner.stop(stopped, await_stop=True)
    assert w.get(running).status is S.STARTED and w.get(stopped).status is S.USER_STOPPED
    before = w.get(running).docker_id
    assert w.spawner.release_for_exit() == 1
    assert w.orch.list_labelled({"grokemu.managed": "true"}) == []  # nothing left in Docker
    assert json.loads((w.settings.data_dir / "resume.json").read_text()) == [running]
    fresh = w.new_spawner()
    for _ in range(6):
        fresh.tick()
    assert w.get(running).status is S.STARTED and w.get(running).docker_id not in ("", before)
    assert w.get(stopped).status is S.USER_STOPPED and w.get(lazy).status is not S.STARTED
    assert len(w.orch.list_labelled({"grokemu.managed": "true"})) == 1
    assert not (w.settings.data_dir / "resume.json").exists()  # used once: a later restart adopts as usual


def test_image_ready_starts_unless_on_demand_and_replaces_old_image(w):
    auto, lazy = w.add(name="auto"), w.add({"on_demand": True}, name="lazy")
    for cid in (auto, lazy):
        w.spawner.image_ready(w.store.get_image(w.get(cid).image_id))
    assert w.get(auto).status is S.STARTED and w.get(lazy).status is S.USER_STOPPED
    old = w.get(auto).docker_id
    image = w.store.get_image(w.get(auto).image_id)
    image.docker_id = w.orch.add_image("datagrok/auto:1.0.1", [8000])
    w.store.put_image(image)
    w.spawner.image_ready(image)
    c = w.get(auto)
    assert c.status is S.STARTED and c.docker_id != old and c.running_image_id == image.docker_id
    assert w.orch.inspect(old) is None


def test_ignore_gpu_runs_without_and_says_so(tmp_path):
    w = World(tmp_path, ignore_gpu=True)
    c = w.spawner.run(w.add({"gpu": 1}), "admin", await_start=True)
    assert w.orch.spec_of(c.docker_id).gpus == 0
    assert any("without a GPU" in x for x in c.warnings)


def test_unknown_keys_are_reported(w):
    c = w.spawner.run(w.add({"timeout_minutes": 30}), "admin", await_start=True)
    assert any("timeout_minutes" in x for x in c.warnings)
    assert c.to_wire()["unknownConfigKeys"] == {"timeout_minutes": 30}


def test_ensure_ready_rules(w):
    with pytest.raises(NotFound):
        w.spawner.ensure_ready("00000000-0000-0000-0000-000000000000", "admin", 5)
    plain = w.add(name="plain")
    with pytest.raises(BadRequest, match="not on_demand"):
        w.spawner.ensure_ready(plain, "admin", 5)
    lazy = w.add({"on_demand": True}, name="lazy")
    c, cold_ms = w.spawner.ensure_ready(lazy, "admin", 5)
    assert c.status is S.STARTED and cold_ms is not None and cold_ms >= 0
    c, cold_ms = w.spawner.ensure_ready(lazy, "admin", 5)
    assert cold_ms is None  # warm


def test_logs_of_unknown_container_is_an_error_not_404(w):
    with pytest.raises(BadRequest):
        w.spawner.logs("nope", 10)


def test_single_flight_cold_start_with_threads(tmp_path):
    w = World(tmp_path, background=True)
    lazy = w.add({"on_demand": True})
    results, errors = [], []

    def request():
        try:
            results.append(w.spawner.ensure_ready(lazy, "admin", 10)[0].status)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=request) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert errors == [] and results == [S.STARTED] * 50
    assert w.orch.run_calls == 1


# -- issue 13: readiness of containers that do not speak HTTP ----------------------------------------------------------
def test_a_port_that_never_accepts_is_started_with_a_warning_after_listen_timeout(w):
    w.orch.apps_ready = False  # a queue worker: nothing listens, no HEALTHCHECK
    cid = w.add()
    w.spawner.run(cid, "admin")
    assert w.get(cid).status is S.CHECKING
    w.clock.advance(w.settings.listen_timeout - 1)
    w.spawner.tick()
    assert w.get(cid).status is S.CHECKING
    w.clock.advance(2)
    w.spawner.tick()
    c = w.get(cid)
    assert c.status is S.STARTED and any(x.startswith("nothing listens on port 8000") for x in c.warnings)
    assert not w.spawner.listening(c)
    w.orch.apps_ready = True  # it came up late: the warning goes
    assert w.spawner.listening(c)
    assert not any(x.startswith("nothing listens") for x in w.get(cid).warnings)


def test_a_healthcheck_decides_and_an_accepting_port_starts_at_once(w):
    cid = w.add(healthcheck=True)
    assert w.spawner.run(cid, "admin", await_start=True).status is S.STARTED
    other = w.add(name="db-db")
    c = w.spawner.run(other, "admin", await_start=True)
    assert c.status is S.STARTED and c.warnings == []


def test_oom_kill_is_explained_with_the_limit_and_the_last_lines(w):
    cid = w.add({"memory": 64})
    c = w.spawner.run(cid, "admin", await_start=True)
    w.orch.crash(c.docker_id, log="allocating 400 MB\n", oom_killed=True)
    w.spawner.tick()
    c = w.get(cid)
    assert c.status is S.ERROR
    assert c.error.startswith("the container was killed for running out of memory: its limit is 64 MB "
                              "(container.json `memory`)")
    assert "last log lines:\n" in c.error and c.error.endswith("  allocating 400 MB")


def test_a_signal_is_explained(w):
    cid = w.add()
    c = w.spawner.run(cid, "admin", await_start=True)
    w.orch.crash(c.docker_id, exit_code=137, log="")
    w.spawner.tick()
    assert w.get(cid).error.splitlines()[0] == "the container was killed by signal SIGKILL (9)"


def test_explain_broken_fails_an_ended_container_at_once(w):
    cid = w.add({"memory": 64})
    c = w.spawner.run(cid, "admin", await_start=True)
    looks = []
    inspect = w.orch.inspect
    w.orch.inspect = lambda docker_id: (looks.append(docker_id), inspect(docker_id))[1]
    assert w.spawner.explain_broken(cid, within=600) is None  # its app accepts: alive, answered without waiting
    assert looks == [c.docker_id]
    w.orch.apps_ready = False  # running, not accepting: it may be ending; after `within` it is not blamed
    assert w.spawner.explain_broken(cid, within=0) is None and w.get(cid).status is S.STARTED
    w.orch.inspect = inspect
    w.orch.crash(c.docker_id, oom_killed=True)
    reason = w.spawner.explain_broken(cid)
    assert "out of memory: its limit is 64 MB" in reason
    assert w.get(cid).status is S.ERROR and w.get(cid).error == reason


def test_stop_timeout_is_the_grace_of_every_stop(tmp_path):
    w = World(tmp_path, stop_timeout=1.5)
    cid = w.add({"shutdown_timeout": 1, "on_demand": True})
    first = w.spawner.run(cid, "admin", await_start=True).docker_id
    w.spawner.stop(cid, await_stop=True)  # by a user
    second = w.spawner.run(cid, "admin", await_start=True).docker_id
    w.clock.advance(61)
    w.spawner.tick()  # idle shutdown
    assert w.get(cid).status is S.SYSTEM_STOPPED
    third = w.spawner.run(cid, "admin", await_start=True).docker_id
    image = w.store.get_image(w.get(cid).image_id)
    image.docker_id = w.orch.add_image("datagrok/squares-squares:1.0.1", [8000])
    w.store.put_image(image)
    w.spawner.image_ready(image)  # a replacement stops the old container first
    assert w.get(cid).status is S.STARTED and w.get(cid).docker_id != third
    assert w.orch.stops == [(first, 1.5), (second, 1.5), (third, 1.5)]
    assert w.orch.spec_of(w.get(cid).docker_id).stop_timeout == 1.5  # Swarm's stop_grace_period


def test_stop_timeout_defaults_to_dockers_ten_seconds(w):
    cid = w.add()
    docker_id = w.spawner.run(cid, "admin", await_start=True).docker_id
    w.spawner.stop(cid, await_stop=True)
    assert w.orch.stops == [(docker_id, 10.0)]
