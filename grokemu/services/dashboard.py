"""What the dashboard (`/`, web/ui.py and web/dashboard.py) needs beyond the Datagrok API: one snapshot of every
container and image with the numbers grokemu adds, an image's build context as a ZIP, and Rebuild.

Datagrok's Manage → Dockers view (docs/real-plugins.md; the help page "Creating a docker container", §6) shows
containers above images as cards with a status dot, Logs / Build logs in the context pane, and a context menu that
starts / stops a container, rebuilds an image or downloads its full build context. The snapshot keeps Datagrok's
wire keys (domain/model.py, docs/datagrok-api.md §2) and adds, under `grokemu`, what a demo needs: fetchProxy numbers
(services/activity.py) and when an idle `shutdown_timeout` container will be stopped (services/spawner/watch.py
`_idle`).
"""
from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from grokemu.domain.errors import BadRequest, NotFound
from grokemu.domain.lifecycle import ContainerStatus
from grokemu.domain.model import DockerContainer, DockerImage

if TYPE_CHECKING:
    from grokemu.domain.clock import Clock
    from grokemu.domain.ports import PackageFiles, Store
    from grokemu.services.activity import ActivityTracker
    from grokemu.services.calls import CallService
    from grokemu.services.functions import FunctionRegistry
    from grokemu.services.images import ImageService

# Big texts the cards never show: the pane asks for them (Logs, Build logs) when it is open.
_HEAVY = ("logs", "dockerfile", "lastLogs")


class DashboardService:
    def __init__(self, store: Store, clock: Clock, activity: ActivityTracker, images: ImageService,
                 package_files: PackageFiles, functions: FunctionRegistry | None = None,
                 calls: CallService | None = None, docker: Callable[[], dict[str, Any]] | None = None):
        self._docker = docker  # the daemon as the scheduler last found it (services/spawner/watch.py `docker_state`)
        self._store = store
        self._functions = functions
        self._calls = calls
        self._clock = clock
        self._activity = activity
        self._images = images
        self._package_files = package_files

    # -- the snapshot the page renders --------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        now = self._clock.now()
        containers = sorted(self._store.list_containers(), key=lambda c: c.name)
        images = sorted(self._store.list_images(), key=lambda i: (i.name, i.version))
        return {"now": now, "containers": [self._container(c) for c in containers],
                "images": [self._image(i) for i in images],
                "docker": self._docker() if self._docker else {"reachable": True, "since": None, "message": "ok"}}

    def _container(self, c: DockerContainer) -> dict[str, Any]:
        wire = {k: v for k, v in c.to_wire().items() if k not in _HEAVY}
        wire["grokemu"] = {**self._activity.stats(c.id).to_wire(), "statusSince": c.status_since,
                           "idleAt": self._idle_at(c), "activeHolds": self._activity.active(c.id),
                           # the daemon's id of the image it runs: `grokemu dev` waits for its new build's id here
                           "runningImageId": c.running_image_id or None}
        if c.is_worker:
            wire["grokemu"].update(self._queue(c))
        return wire

    def _queue(self, c: DockerContainer) -> dict[str, Any]:
        """A worker's functions (as callers name them) and its calls: the running ones, then the last finished
        (status, duration, who; services/calls.py keeps `calls_kept` per container)."""
        functions = [{"nqName": f.nq_name, "friendlyName": f.friendly_name or f.name, "description": f.description,
                      "params": [f"{p.property_type} {p.name}" for p in f.params if p.is_input],
                      "outputs": [f"{p.property_type} {p.name}" for p in f.params if not p.is_input]}
                     for f in (self._functions.for_container(c.id) if self._functions else [])]
        calls = (self._calls.running(c.id) + self._calls.recent(c.id)) if self._calls else []
        return {"functions": functions, "calls": calls}

    def _idle_at(self, c: DockerContainer) -> float | None:
        """When the idle reaper will stop this container if nothing uses it meanwhile (the rule of
        ActivityTracker.is_idle): None when it has no shutdown_timeout, is not started, or is held."""
        minutes = c.config.get("shutdown_timeout")
        if minutes is None or c.status is not ContainerStatus.STARTED or self._activity.active(c.id) > 0:
            return None
        last = max(c.last_active or 0, c.status_since, self._activity.last_active(c.id) or 0)
        return last + float(minutes) * 60

    @staticmethod
    def _image(i: DockerImage) -> dict[str, Any]:
        wire = {k: v for k, v in i.to_wire().items() if k not in _HEAVY}
        wire["grokemu"] = {"statusSince": i.status_since, "hasBuildContext": bool(i.dockerfile)}
        return wire

    # -- Download context ---------------------------------------------------------------------------------------
    def _context_files(self, image: DockerImage) -> dict[str, Any]:
        """The image's build context: every regular file of the package's Dockerfile folder (dockerfiles/<dir>/,
        or dockerfiles/ for a root Dockerfile), by path inside that folder."""
        folder = image.dockerfile_path.rsplit("/", 1)[0] + "/"
        files = self._package_files.current_files(self._store.get_package(image.package))
        return {rel[len(folder):]: path for rel, path in files.items() if rel.startswith(folder)}

    def context_zip(self, image_id: str) -> tuple[str, bytes]:
        """(file name, ZIP bytes) of the image's full build context."""
        image = self._get(image_id)
        files = self._context_files(image)
        if "Dockerfile" not in files:
            raise NotFound(f"Image {image.name} has no build context in grokemu: its package has no "
                           f"{image.dockerfile_path} (the image came ready-made from image.json)")
        out = io.BytesIO()  # bounded: a package is at most max_package_unpacked_bytes (docs/security.md)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for rel in sorted(files):
                z.write(files[rel], rel)
        return f"{image.name}-{image.version}-context.zip", out.getvalue()

    # -- Rebuild --------------------------------------------------------------------------------------------------
    def rebuild(self, image_id: str) -> DockerImage:
        """Rebuild from the package's Dockerfile when grokemu has the context, otherwise revalidate (look the image
        up again). Not `GET /api/docker/images/<id>/rebuild`: on the wire that is the older clients' name for
        revalidate (web/api.py), which finds the built image in the daemon and builds nothing."""
        image = self._get(image_id)
        if "Dockerfile" in self._context_files(image):
            with self._store.transaction():
                fresh = self._get(image_id)
                # validation builds when there is no image reference to find (services/images.py `_check`)
                fresh.image_ref = None
                self._store.put_image(fresh)
        return self._images.revalidate(image_id)

    def _get(self, image_id: str) -> DockerImage:
        if not image_id or len(image_id) > 100:
            raise BadRequest("Bad image id")
        image = self._store.get_image(image_id)
        if image is None:
            raise NotFound(f"Docker image {image_id} not found")
        return image
