"""Spawner, the facade the API, the proxy and the other services call (services/spawner/): its parts are below it,
in the classes it is built from."""
from __future__ import annotations

import time

from grokemu.domain.errors import BadRequest, ContainerStartFailed, GatewayTimeout, GrokemuError
from grokemu.domain.model import DockerContainer, DockerImage
from grokemu.services.spawner.core import STARTING_UP, STOPPED, E, S, log
from grokemu.services.spawner.live_replace import LiveReplacer
from grokemu.services.spawner.watch import Watcher


class Spawner(Watcher, LiveReplacer):
    """Runs plugin containers as grok_spawner does (the package's docstring); built from its parts: core.py,
    drivers.py, reconcile.py, watch.py, live_replace.py."""

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
                self._transition(cid, E.REQUEST_USER_STOP if by_user else E.REQUEST_SYSTEM_STOP)
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
                self._transition(c.id, E.REPLACE, expect=(S.STARTED, S.CHECKING, S.STARTING))
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
