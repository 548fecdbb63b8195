"""grok_spawner's part: run plugin containers on the orchestrator as Datagrok does, driven by container.json.

The lifecycle is the transition table in domain/lifecycle.py; this module decides *when* to fire its events.
One container is moved by one driver at a time (a per-container lock: single flight), either on a thread of its
own (a run request, a proxied request, or the scheduler finding work) or inline when tests drive it. A driver
re-reads the entity before every step, so a stop, a replacement or a timeout that lands meanwhile wins.

Time: the stuck-state timeout and idle shutdown read the injected clock (tests move it); waiting for Docker and
for the app inside to answer is real time and uses short real sleeps.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grokemu.config import Settings
from grokemu.domain.clock import Clock
from grokemu.domain.container_config import DEFAULTS
from grokemu.domain.errors import (
    BadRequest,
    Conflict,
    ContainerStartFailed,
    DockerUnavailable,
    GatewayTimeout,
    GrokemuError,
    NotFound,
)
from grokemu.domain.exits import LOG_LINES_SHOWN, explain_exit
from grokemu.domain.lifecycle import (
    CONTAINER_TRANSIENT,
    CONTAINER_TRANSITIONS,
    ContainerStatus,
    ImageStatus,
    next_status,
)
from grokemu.domain.model import DockerContainer, DockerImage
from grokemu.domain.ports import Orchestrator, RunningContainer, Store
from grokemu.services.activity import ActivityTracker
from grokemu.services.run_specs import RunSpecs

if TYPE_CHECKING:
    from grokemu.services.auth import AuthService
    from grokemu.services.broker import BrokerService

log = logging.getLogger(__name__)
S = ContainerStatus
STOPPED = (S.USER_STOPPED, S.SYSTEM_STOPPED)
STARTING_UP = (S.PENDING_START, S.STARTING, S.CHECKING)
STOPPING_DOWN = (S.PENDING_USER_STOP, S.PENDING_SYSTEM_STOP, S.STOPPING)
LOG_LINES_KEPT = 200
NOT_LISTENING = "nothing listens on port"  # the warning on a started container whose port never accepted


class Spawner:
    def __init__(self, store: Store, orchestrator: Orchestrator, clock: Clock, settings: Settings,
                 auth: AuthService, activity: ActivityTracker, run_specs: RunSpecs,
                 background: bool = True, probe_interval: float = 0.02, watch_interval: float = 1.0,
                 broker: BrokerService | None = None):
        self._broker = broker  # a Celery worker is ready when it consumes its queue there
        self._store = store
        self._orchestrator = orchestrator
        self._clock = clock
        self._settings = settings
        self._auth = auth
        self._activity = activity
        self._run_specs = run_specs  # container.json → what the orchestrator runs
        self._background = background
        self._probe_interval = probe_interval
        self._watch_interval = watch_interval
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._changed = threading.Condition()  # notified (and _generation bumped) on every status change
        self._generation = 0
        self._reconciled = False
        self._last_watch = 0.0

    # -- plumbing ----------------------------------------------------------------------------------------------
    def _lock_for(self, cid: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(cid, threading.Lock())

    def _notify(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()
        self._activity.changed("container")  # the dashboard's live feed (services/activity.py)

    def get(self, cid: str) -> DockerContainer:
        return self._get(cid)

    def _get(self, cid: str) -> DockerContainer:
        c = self._store.get_container(cid)
        if c is None:
            raise NotFound(f"Docker container {cid} not found")
        return c

    def _transition(self, cid: str, event: str, expect: tuple | None = None, **changes: Any) -> DockerContainer | None:
        """Fire one lifecycle event; None when the container is gone or no longer in an `expect`ed status."""
        with self._store.transaction():
            c = self._store.get_container(cid)
            if c is None or (expect is not None and c.status not in expect):
                return None
            c.status = next_status(CONTAINER_TRANSITIONS, c.status, event)
            c.status_since = c.updated_on = self._clock.now()
            for key, value in changes.items():
                setattr(c, key, value)
            if c.status not in (S.STARTING, S.CHECKING, S.STARTED):
                c.pipe_key_hash = ""  # the pipe key of a worker dies with its run, like its USER_API_KEY
            self._store.put_container(c)
        if c.status not in (S.STARTING, S.CHECKING, S.STARTED):
            # stopping, stopped, error, vanished, or about to be (re)started: its USER_API_KEY dies now (a start
            # mints a new one in _spec)
            self._auth.revoke_owner(cid)
        log.info("container %s: %s (%s)", c.name, c.status.value, event)
        self._notify()
        return c

    def _require_orchestrator(self) -> Orchestrator:
        if not self._orchestrator.ping():
            raise DockerUnavailable("Docker daemon unreachable: containers cannot be started or stopped")
        return self._orchestrator

    def labels(self, c: DockerContainer | None = None) -> dict[str, str]:
        return self._run_specs.labels(c)

    # -- requests from the API ---------------------------------------------------------------------------------
    def run(self, cid: str, login: str, await_start: bool = False, timeout: float | None = None) -> DockerContainer:
        """`GET /docker/containers/<id>/run`: desiredInstances 1. With await, answer once `started` (or fail)."""
        self._request_start(cid, login)
        if not await_start:
            return self._get(cid)
        c = self._wait(cid, timeout or self._settings.container_status_timeout)
        if c.status is S.ERROR:
            raise ContainerStartFailed(f"Container {c.name} failed to start: {c.error}", c.last_logs[-2000:])
        if c.status is not S.STARTED:
            raise GatewayTimeout(f"Container {c.name} did not start in time (status '{c.status.value}')")
        return c

    def _request_start(self, cid: str, login: str) -> None:
        self._require_orchestrator()
        with self._store.transaction():
            c = self._get(cid)
            image = self._store.get_image(c.image_id)
            if image is None or image.status is not ImageStatus.READY:
                state = image.status.value if image else "missing"
                raise BadRequest(f"Container {c.name} cannot start: its image is not ready ({state})")
            c.desired_instances = 1
            c.started_by = login
            self._store.put_container(c)
            if c.status in STOPPED or c.status in (S.ERROR, S.PENDING_USER_STOP, S.PENDING_SYSTEM_STOP):
                self._transition(cid, "request_start", error="")
        self._kick(cid)

    def stop(self, cid: str, await_stop: bool = False, timeout: float | None = None, by_user: bool = True
             ) -> DockerContainer:
        """`GET /docker/containers/<id>/stop`: desiredInstances 0. `error` answers 400, as Datagrok's router."""
        with self._store.transaction():
            c = self._get(cid)
            if c.status is S.ERROR:
                raise BadRequest(f"Container {c.name} is in error: {c.error or 'no reason recorded'}")
            c.desired_instances = 0
            self._store.put_container(c)
            if c.status in STARTING_UP or c.status is S.STARTED:
                self._transition(cid, "request_user_stop" if by_user else "request_system_stop")
        self._kick(cid)
        if await_stop:
            c = self._wait(cid, timeout or self._settings.container_status_timeout)
        return self._get(cid)

    def save(self, body: dict, login: str) -> DockerContainer:
        """`POST /docker/containers` with an entity: desiredInstances 1 starts it, 0 stops it."""
        cid = body.get("id")
        if not isinstance(cid, str) or not cid:
            raise BadRequest("Saving a DockerContainer needs its 'id' (containers are created by publishing)")
        c = self._get(cid)
        desired = body.get("desiredInstances", c.desired_instances)
        if desired not in (0, 1):
            raise BadRequest(f"desiredInstances must be 0 or 1, got {desired!r}")
        if desired == 1 and (c.desired_instances != 1 or c.status not in (*STARTING_UP, S.STARTED)):
            return self.run(cid, login)
        if desired == 0 and c.status is not S.ERROR and c.status not in STOPPED:
            return self.stop(cid)
        return self._get(cid)

    def logs(self, cid: str, limit: int) -> str:
        c = self._store.get_container(cid)
        if c is None:
            # Not 404: the Dart client turns 404 into an empty string, and CVMTests expects a throw.
            raise BadRequest(f"Docker container {cid} not found")
        if c.docker_id and self._orchestrator.ping():
            text = self._orchestrator.logs(c.docker_id, limit)
            if text:
                return text
        lines = c.last_logs.splitlines(keepends=True)
        return "".join(lines[-limit:] if limit > 0 else lines)

    # -- requests from the proxy -------------------------------------------------------------------------------
    def ensure_ready(self, cid: str, login: str, timeout: float) -> tuple[DockerContainer, float | None]:
        """The container, started; with the cold-start time in ms when this request had to wait for a start.

        404 unknown; 400 stopped and not on_demand, or in error; on_demand stopped (by user or system): start it,
        every concurrent request waiting on the same single start; 504 when not ready within `timeout`."""
        began = time.monotonic()
        c = self._get(cid)
        if c.status is S.STARTED:
            return c, None
        if c.status is S.ERROR:
            raise BadRequest(f"Container {c.name} is in error: {c.error or 'no reason recorded'}")
        on_demand = bool(c.config.get("on_demand"))
        if c.status not in STARTING_UP:
            if not on_demand:
                raise BadRequest(f"Container {c.name} is {c.status.value} and not on_demand: start it first")
            self._request_start(cid, login)
        c = self._wait(cid, timeout)
        if c.status is S.STARTED:
            return c, (time.monotonic() - began) * 1000
        if c.status is S.ERROR:
            raise ContainerStartFailed(f"Container {c.name} failed to start: {c.error}")
        raise GatewayTimeout(f"Container {c.name} was not ready within {timeout:g} s (status '{c.status.value}')")

    @property
    def generation(self) -> int:
        """Bumped on every status change of any container: a reader may cache what it saw until it moves."""
        return self._generation

    @property
    def activity(self) -> ActivityTracker:
        return self._activity

    @property
    def run_specs(self) -> RunSpecs:
        return self._run_specs

    def reset(self) -> None:
        """Admin reset (after the store is emptied): no driver lock is kept, and the generation moves on, so
        whatever a reader cached about a container (the proxy's started-cache) is stale."""
        with self._locks_guard:
            self._locks.clear()
        self._notify()

    # -- events from other services ----------------------------------------------------------------------------
    def image_ready(self, image: DockerImage) -> None:
        """A (re)validated image: replace a container running an older image; start one that is not on_demand."""
        for c in self._store.list_containers():
            if c.image_id != image.id:
                continue
            if c.docker_image != image.docker_full_name and c.status in (*STOPPED, S.ERROR):
                with self._store.transaction():
                    fresh = self._store.get_container(c.id)
                    if fresh:
                        fresh.docker_image = image.docker_full_name
                        self._store.put_container(fresh)
            if c.status in (S.STARTED, S.CHECKING, S.STARTING) and c.running_image_id != image.docker_id:
                self._transition(c.id, "replace", expect=(S.STARTED, S.CHECKING, S.STARTING))
                self._kick(c.id)
            elif not c.config.get("on_demand") and c.status in (*STOPPED, S.ERROR):
                try:
                    self._request_start(c.id, image.updated_by or "admin")
                except GrokemuError as e:
                    log.warning("container %s not started: %s", c.name, e.message)

    def forget(self, container: DockerContainer) -> None:
        """The package no longer has this container: remove it from Docker and from the store."""
        orch = self._orchestrator
        if orch.ping():
            if container.docker_id:
                orch.remove(container.docker_id)
            if orch.keeps_stopped:  # a stopped one is still there (a Swarm service scaled to 0)
                for kept in orch.list_labelled({**self.labels(), "grokemu.container": container.id}):
                    orch.remove(kept.id)
        self._store.delete_container(container.id)
        self._auth.revoke_owner(container.id)
        self._activity.forget(container.id)
        self._notify()

    # -- live replacement (`grokemu dev`) -------------------------------------------------------------------------
    def replace_image(self, cid: str, reference: str) -> DockerContainer:
        """`POST /_grokemu/containers/<id>/replace` {"image": "datagrok/<its image's name>:<tag>"}: run a new build of
        the container's image beside the container that serves and, once the new one is ready, point the same entity
        at it and stop the old one. Requests keep being answered throughout; a new container that does not come up
        is removed and the old one keeps serving (ContainerStartFailed says why). The stop-then-start of a republish
        (`image_ready`) is the path for workers (two would share a queue) and for Swarm. A container that is not
        started is left as it is: its next start runs the image its image entity names."""
        orch = self._require_orchestrator()
        c = self._get(cid)
        image = self._store.get_image(c.image_id)
        if image is None or image.status is not ImageStatus.READY:
            raise BadRequest(f"Container {c.name} has no ready image to replace")
        repository, _, tag = reference.rpartition(":")
        if repository != f"datagrok/{image.name}" or not tag or "/" in tag or len(reference) > 300:
            raise BadRequest(f"'image' must be a tag of this container's image: datagrok/{image.name}:<tag>")
        if c.is_worker or orch.keeps_stopped:
            raise BadRequest(f"Container {c.name} cannot be replaced live (a queue worker, or Swarm): publish again")
        info = orch.inspect_image(reference)
        if info is None:
            raise BadRequest(f"Image {reference} is not in the Docker daemon")
        if len(info.exposed_ports) > 1:
            raise BadRequest(f"Image {reference} exposes {len(info.exposed_ports)} ports; Datagrok supports one")
        if c.status is not S.STARTED:
            return c
        lock = self._lock_for(cid)
        if not lock.acquire(blocking=False):
            raise Conflict(f"Container {c.name} is being started or stopped: try again when it is started")
        try:
            return self._replace_live(c, dataclasses.replace(
                image, image_ref=reference, docker_id=info.id,
                port=c.config.get("port") or (info.exposed_ports[0] if info.exposed_ports else image.port)))
        finally:
            lock.release()

    def _replace_live(self, c: DockerContainer, image: DockerImage) -> DockerContainer:
        orch = self._require_orchestrator()
        spec, warnings = self._run_specs.build(c, image, keep_earlier_token=True)
        base = self._run_specs.docker_name(c)
        spec = dataclasses.replace(spec, name=f"{base}-next" if c.service_name == base else base)
        token = spec.env.get("USER_API_KEY", "")
        try:
            running = orch.run(spec)
        except Exception as e:
            self._auth.revoke(token)
            raise ContainerStartFailed(f"the new container did not start: {getattr(e, 'message', None) or e}; the "
                                  f"previous one keeps serving") from None
        began = time.monotonic()
        while True:
            current = orch.inspect(running.id)
            if current is None or current.state in ("exited", "dead"):
                reason = self._exit_reason(c, current, when="before it was ready") if current else "it vanished"
                orch.remove(running.id)
                self._auth.revoke(token)
                raise ContainerStartFailed(f"the new container failed: {reason}; the previous one keeps serving")
            waited = time.monotonic() - began
            if orch.app_ready(current) or current.health is None and waited >= self._settings.listen_timeout:
                break
            if waited >= self._settings.container_status_timeout:
                orch.remove(running.id)
                self._auth.revoke(token)
                raise GatewayTimeout(f"the new container of {c.name} was not ready in time; the previous one keeps "
                                     f"serving")
            time.sleep(self._probe_interval)
        now = self._clock.now()
        with self._store.transaction():
            fresh = self._store.get_container(c.id)
            if fresh is None or fresh.status is not S.STARTED or fresh.docker_id != c.docker_id:
                orch.remove(running.id)
                self._auth.revoke(token)
                raise Conflict(f"Container {c.name} was stopped or replaced meanwhile")
            old = fresh.docker_id
            fresh.docker_id, fresh.service_name = running.id, spec.name
            fresh.address, fresh.port = running.endpoint()
            fresh.container_port, fresh.running_image_id = spec.container_port, image.docker_id
            fresh.docker_image = image.docker_full_name
            fresh.warnings = warnings + running.warnings
            fresh.updated_on = fresh.last_active = now
            self._store.put_container(fresh)
            stored = self._store.get_image(image.id)
            if stored is not None:  # what the next start and the next validation see
                stored.image_ref, stored.docker_id, stored.port = image.image_ref, image.docker_id, image.port
                self._store.put_image(stored)
            self._auth.hand_over(c.id, token, c.started_by or "admin")
        log.info("container %s: replaced live by %s (%s)", c.name, running.id[:12], image.image_ref)
        self._notify()  # readers that cached the old address (the proxy's started-cache) look again

        def retire() -> None:  # the old one gets its grace; nobody need wait for it
            orch.stop(old, timeout=self._settings.stop_timeout)
            orch.remove(old)

        if self._background:
            threading.Thread(target=retire, name=f"grokemu-retire-{c.id[:8]}", daemon=True).start()
        else:
            retire()
        return fresh

    # -- the drivers -------------------------------------------------------------------------------------------
    def _kick(self, cid: str) -> None:
        if self._background:
            threading.Thread(target=self._drive, args=(cid,), name=f"grokemu-drive-{cid[:8]}", daemon=True).start()
        else:
            self._drive(cid, max_steps=50)

    def _drive(self, cid: str, max_steps: int | None = None) -> None:
        lock = self._lock_for(cid)
        if not lock.acquire(blocking=False):
            return  # another driver is on it: single flight
        try:
            steps = 0
            while self._step(cid):
                steps += 1
                if max_steps is not None:
                    if steps >= max_steps:
                        return
                    continue
                time.sleep(self._probe_interval)
        except Exception:
            log.exception("driving container %s", cid)
        finally:
            lock.release()

    def _step(self, cid: str) -> bool:
        """One step of the lifecycle; True while there is more to do soon."""
        c = self._store.get_container(cid)
        if c is None:
            return False
        if c.status is S.PENDING_START:
            return self._start(c)
        if c.status is S.CHECKING:
            return self._check(c)
        if c.status in STOPPING_DOWN:
            return self._stop(c)
        return False

    def _start(self, c: DockerContainer) -> bool:
        begun = self._transition(c.id, "begin_start", expect=(S.PENDING_START,))
        if begun is None:
            return True
        c = begun
        try:
            orch = self._require_orchestrator()
            if c.docker_id:  # a replacement (its grace first), or a leftover of an earlier run
                orch.stop(c.docker_id, timeout=self._settings.stop_timeout)
                orch.remove(c.docker_id)
            image = self._store.get_image(c.image_id)
            if image is None or image.status is not ImageStatus.READY:
                raise BadRequest(f"image {image.name if image else c.image_id} is not ready")
            spec, warnings = self._run_specs.build(c, image)
            running = orch.run(spec)
        except Exception as e:
            self._auth.revoke_owner(c.id)  # a token minted for a run that did not happen
            self._fail(c.id, f"start failed: {getattr(e, 'message', None) or e}", expect=(S.STARTING,))
            return False
        moved = self._transition(c.id, "container_running", expect=(S.STARTING,), docker_id=running.id,
                                 service_name=spec.name,
                                 address=running.endpoint()[0], port=running.endpoint()[1], container_port=spec.container_port,
                                 docker_image=image.docker_full_name, running_image_id=image.docker_id,
                                 warnings=warnings + running.warnings,
                                 pipe_key_hash=self._run_specs.pipe_key_hash(spec.env["DATAGROK_PIPE_KEY"])
                                 if "DATAGROK_PIPE_KEY" in spec.env else "")
        if moved is None:  # stopped, replaced or timed out while Docker was starting it
            orch.remove(running.id)
            self._auth.revoke_owner(c.id)  # that stop may have come before _spec minted this run's token
            return True
        for warning in moved.warnings:
            log.warning("container %s: %s", moved.name, warning)
        return True

    def _check(self, c: DockerContainer) -> bool:
        orch = self._orchestrator
        running = orch.inspect(c.docker_id) if c.docker_id else None
        if running is None or running.state in ("exited", "dead"):
            reason = self._exit_reason(c, running, when="before it was ready") if running else \
                "the container was removed before it was ready"
            self._fail(c.id, reason, expect=(S.CHECKING,))
            return False
        if c.is_worker:
            # a Celery worker answers no port: it is ready once it consumes its queue (a message published
            # before that would wait, or be lost on a broker restart); one that never does times out in `tick`
            if self._worker_consuming(c):
                self._transition(c.id, "app_ready", expect=(S.CHECKING,), last_active=self._clock.now(),
                                 port=running.host_port or c.port)
                return False
            return True
        if orch.app_ready(running):
            self._transition(c.id, "app_ready", expect=(S.CHECKING,), last_active=self._clock.now(),
                             port=running.host_port or c.port,
                             warnings=[w for w in c.warnings if not w.startswith(NOT_LISTENING)])
            return False
        if running.health is None and self._clock.now() - c.status_since >= self._settings.listen_timeout:
            # Datagrok reports a container started once the orchestrator runs it (docs/real-plugins.md, non-HTTP
            # containers: queue workers listen on nothing). Say so on the entity; fetchProxy answers 502 for it.
            warning = f"{NOT_LISTENING} {c.container_port or running.app_port or '?'} after " \
                      f"{self._settings.listen_timeout:g} s (started anyway: a worker or a non-HTTP app)"
            log.warning("container %s: %s", c.name, warning)
            self._transition(c.id, "app_ready", expect=(S.CHECKING,), last_active=self._clock.now(),
                             port=running.host_port or c.port,
                             warnings=[w for w in c.warnings if not w.startswith(NOT_LISTENING)] + [warning])
            return False
        return True

    def _worker_consuming(self, c: DockerContainer) -> bool:
        return self._broker is not None and self._broker.consumers(c.task_queue, start=True) > 0

    @staticmethod
    def may_not_listen(c: DockerContainer) -> bool:
        """The started container carries the NOT_LISTENING warning (its port never accepted)."""
        return any(w.startswith(NOT_LISTENING) for w in c.warnings)

    def listening(self, c: DockerContainer) -> bool:
        """For a started container that carries the NOT_LISTENING warning: does its port accept now? When it does,
        the warning goes (a slow app that came up after listen_timeout)."""
        if not self.may_not_listen(c):
            return True
        orch = self._orchestrator
        running = orch.inspect(c.docker_id) if c.docker_id else None
        if running is None or not orch.app_ready(running):
            return False
        with self._store.transaction():
            fresh = self._store.get_container(c.id)
            if fresh is not None:
                fresh.warnings = [w for w in fresh.warnings if not w.startswith(NOT_LISTENING)]
                self._store.put_container(fresh)
        self._notify()
        return True

    def _stop(self, c: DockerContainer) -> bool:
        by = "stopped_by_system" if c.status is S.PENDING_SYSTEM_STOP else "stopped_by_user"
        if c.status is S.STOPPING:  # resumed after a restart of grokemu
            by = "stopped_by_system" if c.error == "idle" else "stopped_by_user"
        else:
            begun = self._transition(c.id, "begin_stop", expect=(S.PENDING_USER_STOP, S.PENDING_SYSTEM_STOP),
                                     error="idle" if by == "stopped_by_system" else "")
            if begun is None:
                return True
            c = begun
        logs = c.last_logs
        if c.docker_id and self._orchestrator.ping():
            logs = self._orchestrator.logs(c.docker_id, LOG_LINES_KEPT) or logs
            self._orchestrator.stop(c.docker_id, timeout=self._settings.stop_timeout)
            if not self._orchestrator.keeps_stopped:
                self._orchestrator.remove(c.docker_id)
        stopped = self._transition(c.id, by, expect=(S.STOPPING,), docker_id="", address=None, port=None,
                                   last_logs=logs, error="")
        if stopped is not None and stopped.desired_instances == 1:  # a run request arrived while it was stopping
            self._transition(c.id, "request_start", expect=(S.USER_STOPPED, S.SYSTEM_STOPPED))
            return True
        return False

    def _fail(self, cid: str, reason: str, expect: tuple | None = None, event: str = "fail") -> None:
        c = self._store.get_container(cid)
        if c is None:
            return
        logs = c.last_logs
        if c.docker_id and self._orchestrator.ping():
            logs = self._orchestrator.logs(c.docker_id, LOG_LINES_KEPT) or logs
            self._orchestrator.remove(c.docker_id)  # no orphan: the reason and the logs stay on the entity
        failed = self._transition(cid, event, expect=expect, error=reason, last_logs=logs, docker_id="",
                                  address=None, port=None)
        if failed:
            log.warning("container %s: error: %s", failed.name, reason)

    # -- the scheduler's pass ----------------------------------------------------------------------------------
    def tick(self) -> None:
        if not self._orchestrator.ping():
            return
        if not self._reconciled:
            self.reconcile()
        now = self._clock.now()
        watch = not self._background or time.monotonic() - self._last_watch >= self._watch_interval
        if watch:
            self._last_watch = time.monotonic()
        timeout = self._settings.container_status_timeout
        for c in self._store.list_containers():
            self._flush_activity(c)
            if c.status in CONTAINER_TRANSIENT and now - c.status_since > timeout:
                reason = f"the worker did not consume its queue {c.task_queue} within {timeout:g} s (see its " \
                         f"logs)" if c.is_worker and c.status is S.CHECKING else \
                    f"status '{c.status.value}' held longer than {timeout:g} s"
                self._fail(c.id, reason, expect=(c.status,), event="timeout")
            elif c.status is S.STARTED:
                if watch:
                    self._watch(c)
                if c.desired_instances == 0:
                    self._transition(c.id, "request_user_stop", expect=(S.STARTED,))
                    self._kick(c.id)
                elif self._idle(c, now):
                    self._transition(c.id, "request_system_stop", expect=(S.STARTED,), desired_instances=0)
                    self._kick(c.id)
            elif c.status in STARTING_UP or c.status in STOPPING_DOWN:
                self._kick(c.id)  # no-op when a driver holds it

    def _flush_activity(self, c: DockerContainer) -> None:
        touched = self._activity.last_active(c.id)
        if touched and (c.last_active or 0) < touched:
            with self._store.transaction():
                fresh = self._store.get_container(c.id)
                if fresh:
                    fresh.last_active = touched
                    self._store.put_container(fresh)
            c.last_active = touched

    def _idle(self, c: DockerContainer, now: float) -> bool:
        return self._activity.is_idle(c.id, max(c.last_active or 0, c.status_since), c.config.get("shutdown_timeout"),
                                      now)

    def _watch(self, c: DockerContainer) -> None:
        """A started container that exits on its own becomes `error` (never silently restarted)."""
        running = self._orchestrator.inspect(c.docker_id) if c.docker_id else None
        if running is None:
            self._transition(c.id, "vanished", expect=(S.STARTED,), docker_id="", address=None, port=None,
                             desired_instances=0, error="the container was removed outside grokemu")
        elif running.state in ("exited", "dead"):
            self._fail(c.id, self._exit_reason(c, running), expect=(S.STARTED,))

    def _exit_reason(self, c: DockerContainer, running: RunningContainer, when: str = "") -> str:
        """How an ended container ended, in words (domain/exits.py), with its last log lines."""
        logs = self._orchestrator.logs(running.id, LOG_LINES_SHOWN * 2)
        return explain_exit(running.exit_facts(), c.config.get("memory") or DEFAULTS["memory"], logs or c.last_logs,
                            when)

    def explain_broken(self, cid: str, within: float = 2.0) -> str | None:
        """A proxied request broke off: did the container end? Its reason (and the entity becomes `error` now, not
        at the next watch), or None when its app still accepts connections, or it still runs after `within` real
        seconds: the daemon records the exit a moment after the connection drops, hence the short poll."""
        deadline = time.monotonic() + within
        while True:
            c = self._store.get_container(cid)
            if c is None:
                return None
            if c.status is S.ERROR:
                return c.error
            if c.status is not S.STARTED or not c.docker_id:
                return None
            running = self._orchestrator.inspect(c.docker_id)
            if running is None or running.state in ("exited", "dead"):
                self._watch(c)
                fresh = self._store.get_container(cid)
                return fresh.error if fresh is not None and fresh.error else None
            if time.monotonic() >= deadline or self._orchestrator.app_ready(running):
                return None  # alive: the app itself closed that connection
            time.sleep(0.05)

    # -- leaving with the stand (remove_containers_on_exit) ------------------------------------------------------
    def _resume_path(self) -> Path:
        return Path(self._settings.data_dir) / "resume.json"

    def release_for_exit(self) -> int:
        """grokemu stops and takes what it runs in Docker with it (`docker compose down` then leaves nothing): the
        plugin containers that run are noted in <data>/resume.json first, so the next start runs them again, then
        every labelled container of this instance and its queue network are removed. How many were removed."""
        orch = self._orchestrator
        if not orch.ping():
            return 0
        running = [c.id for c in self._store.list_containers() if c.docker_id and c.status not in STOPPED
                   and c.status is not S.ERROR]
        path = self._resume_path()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(running))
        os.replace(tmp, path)  # whole or not at all: a half-written list would resume nothing
        found = list(orch.list_labelled(self.labels()))
        with ThreadPoolExecutor(max_workers=8) as pool:  # in parallel: compose gives the stop a few seconds only
            list(pool.map(lambda r: orch.remove(r.id), found))
        orch.remove_networks(self.labels())
        log.info("exit: %d containers removed, %d to run again at the next start", len(found), len(running))
        return len(found)

    def _take_resume_list(self) -> set[str]:
        path = self._resume_path()
        try:
            ids = json.loads(path.read_text())
        except (OSError, ValueError):
            return set()
        path.unlink(missing_ok=True)
        return {i for i in ids if isinstance(i, str)} if isinstance(ids, list) else set()

    def reconcile(self) -> None:
        """On startup: re-adopt running labelled containers, stop entities whose container vanished, remove stray
        labelled containers of deleted entities. Nothing is orphaned, nothing duplicated."""
        self._reconciled = True
        orch = self._orchestrator
        containers = {c.id: c for c in self._store.list_containers()}
        adopted: dict[str, str] = {}
        for running in orch.list_labelled(self.labels()):
            if running.labels.get("grokemu.role"):
                continue  # grokemu's own services (the message broker: services/broker.py), not plugin containers
            cid = running.labels.get("grokemu.container", "")
            c = containers.get(cid)
            if c is None or cid in adopted:
                log.info("reconcile: removing stray container %s", running.name)
                orch.remove(running.id)
                continue
            adopted[cid] = running.id
            if running.state in ("exited", "dead"):  # it crashed while grokemu was not watching
                if c.docker_id == running.id and c.status not in STOPPED and c.status is not S.ERROR:
                    self._fail(cid, self._exit_reason(c, running))
                elif orch.keeps_stopped and c.status in STOPPED:
                    pass  # a stopped entity's service, scaled to 0: kept for its next start
                else:
                    orch.remove(running.id)
                    adopted.pop(cid)
                continue
            if c.docker_id == running.id and c.status in (S.CHECKING, S.STARTED, *STOPPING_DOWN, S.PENDING_START,
                                                           S.STARTING):
                continue  # already tracked: the drivers carry on from its recorded status
            ready = self._worker_consuming(c) if c.is_worker else orch.app_ready(running)
            event = "adopt_running" if ready else "adopt_checking"
            self._transition(cid, event, docker_id=running.id, address=running.endpoint()[0], port=running.endpoint()[1],
                             desired_instances=1, last_active=self._clock.now())
        resume = self._take_resume_list()
        for cid, c in containers.items():
            if cid not in adopted and c.status not in STOPPED and c.status is not S.ERROR:
                self._transition(cid, "vanished", docker_id="", address=None, port=None, desired_instances=0)
                if cid in resume:  # grokemu removed it on its way out (release_for_exit): run it again
                    try:
                        self._request_start(cid, c.started_by or "admin")
                    except GrokemuError as e:
                        log.warning("container %s not run again: %s", c.name, e)

    # -- waiting -----------------------------------------------------------------------------------------------
    def _wait(self, cid: str, timeout: float) -> DockerContainer:
        """Until the container settles (started, stopped, error) or `timeout` real seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                seen = self._generation
            # read the store outside the condition's lock: _transition notifies while holding the store's lock
            c = self._get(cid)
            if c.status not in STARTING_UP and c.status not in STOPPING_DOWN:
                return c
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._background:
                return c
            with self._changed:
                if self._generation == seen:
                    self._changed.wait(min(remaining, 0.5))
