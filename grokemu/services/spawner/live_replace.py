"""Live replacement (`grokemu dev`, services/spawner/): a new build of a started container's image is run beside it
and takes its place once ready; the old one keeps serving until then, and after a failure."""
from __future__ import annotations

import dataclasses
import threading
import time

from grokemu.domain.errors import BadRequest, Conflict, ContainerStartFailed, GatewayTimeout
from grokemu.domain.lifecycle import ImageStatus
from grokemu.domain.model import DockerContainer, DockerImage
from grokemu.services.spawner.core import S, SpawnerCore, log


class LiveReplacer(SpawnerCore):
    """`replace_image`: the swap `grokemu dev` asks for."""

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
