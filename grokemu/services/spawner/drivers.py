"""The drivers (services/spawner/): one container moved step by step through a start (pending start, starting,
checking, started) or a stop (pending stop, stopping, stopped), by one driver at a time (single flight)."""
from __future__ import annotations

import threading
import time

from grokemu.domain.errors import BadRequest, DockerUnavailable
from grokemu.domain.lifecycle import ImageStatus
from grokemu.domain.model import DockerContainer
from grokemu.services.spawner.core import LOG_LINES_KEPT, NOT_LISTENING, STOPPED, STOPPING_DOWN, E, S, SpawnerCore, log


class Drivers(SpawnerCore):
    """Starts and stops, one step at a time, one driver per container."""

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
                self._transition(cid, E.REQUEST_START, error="")
        self._kick(cid)

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
        begun = self._transition(c.id, E.BEGIN_START, expect=(S.PENDING_START,))
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
        except DockerUnavailable as e:
            # the daemon went away under the start: it is not the container's fault. Wait for the daemon as a
            # pending start (tick does nothing while it is down); the reconcile when it is back runs it.
            self._auth.revoke_owner(c.id)
            self._transition(c.id, E.DAEMON_LOST, expect=(S.STARTING,))
            log.warning("container %s: start put off: %s", c.name, e.message)
            return False
        except Exception as e:
            self._auth.revoke_owner(c.id)  # a token minted for a run that did not happen
            self._fail(c.id, f"start failed: {getattr(e, 'message', None) or e}", expect=(S.STARTING,))
            return False
        moved = self._transition(c.id, E.CONTAINER_RUNNING, expect=(S.STARTING,), docker_id=running.id,
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
                self._transition(c.id, E.APP_READY, expect=(S.CHECKING,), last_active=self._clock.now(),
                                 port=running.host_port or c.port)
                return False
            return True
        if orch.app_ready(running):
            self._transition(c.id, E.APP_READY, expect=(S.CHECKING,), last_active=self._clock.now(),
                             port=running.host_port or c.port,
                             warnings=[w for w in c.warnings if not w.startswith(NOT_LISTENING)])
            return False
        if running.health is None and self._clock.now() - c.status_since >= self._settings.listen_timeout:
            # Datagrok reports a container started once the orchestrator runs it (docs/real-plugins.md, non-HTTP
            # containers: queue workers listen on nothing). Say so on the entity; fetchProxy answers 502 for it.
            warning = f"{NOT_LISTENING} {c.container_port or running.app_port or '?'} after " \
                      f"{self._settings.listen_timeout:g} s (started anyway: a worker or a non-HTTP app)"
            log.warning("container %s: %s", c.name, warning)
            self._transition(c.id, E.APP_READY, expect=(S.CHECKING,), last_active=self._clock.now(),
                             port=running.host_port or c.port,
                             warnings=[w for w in c.warnings if not w.startswith(NOT_LISTENING)] + [warning])
            return False
        return True

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
        by = E.STOPPED_BY_SYSTEM if c.status is S.PENDING_SYSTEM_STOP else E.STOPPED_BY_USER
        if c.status is S.STOPPING:  # resumed after a restart of grokemu
            by = E.STOPPED_BY_SYSTEM if c.error == "idle" else E.STOPPED_BY_USER
        else:
            begun = self._transition(c.id, E.BEGIN_STOP, expect=(S.PENDING_USER_STOP, S.PENDING_SYSTEM_STOP),
                                     error="idle" if by == E.STOPPED_BY_SYSTEM else "")
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
            self._transition(c.id, E.REQUEST_START, expect=(S.USER_STOPPED, S.SYSTEM_STOPPED))
            return True
        return False
