"""Image validation: `pending validation` → `validating` → `ready` | `error` (docs/datagrok-api.md §4.1).

A localhost stand has no registry to check and no amd64 cross-build: the image named in image.json is looked up in
the host daemon, and when it is absent (or image.json is missing or says `image: null`) grokemu builds the package's
Dockerfile folder itself. Builds run one at a time on a worker thread (a build queue) so the scheduler never waits
on Docker; the build output becomes the image's `logs`.
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from grokemu.config import Settings
from grokemu.domain.clock import Clock
from grokemu.domain.errors import NotFound, disk_full
from grokemu.domain.labels import managed_labels
from grokemu.domain.lifecycle import IMAGE_TRANSITIONS, ImageStatus, next_status
from grokemu.domain.model import DockerImage
from grokemu.domain.ports import ImageInfo, Orchestrator, PackageFiles, Store

if TYPE_CHECKING:
    from grokemu.services.registry import RegistryService
    from grokemu.services.spawner import Spawner

log = logging.getLogger(__name__)


def image_labels(settings: Settings, image: DockerImage) -> dict[str, str]:
    return {**managed_labels(settings.instance), "grokemu.package": image.package, "grokemu.image": image.name}


@dataclass(frozen=True)
class _Outcome:
    """A finished validation: the image as checked (ref, docker id, digest found), when its validation began, the
    verdict, the log and the port."""

    image: DockerImage
    started: float
    ok: bool
    logs: str
    port: int | None


class ImageService:
    def __init__(self, store: Store, orchestrator: Orchestrator, clock: Clock, settings: Settings,
                 spawner: Spawner, package_files: PackageFiles, registry: RegistryService | None = None,
                 background: bool = True):
        self._store = store
        self._orchestrator = orchestrator
        self._clock = clock
        self._settings = settings
        self._spawner = spawner
        self._package_files = package_files  # build contexts: the package's current Dockerfile folders
        self._registry = registry
        self._background = background
        self._queue: queue.Queue[str] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._unrecorded: dict[str, _Outcome] = {}  # validation results a full disk held back, by image id
        self._unrecorded_lock = threading.Lock()
        self._recover()

    def _recover(self) -> None:
        """A validation interrupted by a restart starts over."""
        for image in self._store.list_images():
            if image.status is ImageStatus.VALIDATING:
                self._set_status(image, "revalidate", "validation was interrupted by a restart; validating again\n")

    def _set_status(self, image: DockerImage, event: str, logs: str | None = None) -> DockerImage:
        image.status = next_status(IMAGE_TRANSITIONS, image.status, event)
        image.status_since = image.updated_on = self._clock.now()
        if logs is not None:
            image.logs = logs
        self._store.put_image(image)
        self._spawner.activity.changed("image")  # the dashboard's live feed (services/activity.py)
        return image

    # -- the entry points ----------------------------------------------------------------------------------------
    def revalidate(self, image_id: str) -> DockerImage:
        with self._store.transaction():
            image = self._store.get_image(image_id)
            if image is None:
                raise NotFound(f"Docker image {image_id} not found")
            self._set_status(image, "revalidate", "")
        self.wake()
        return image

    def save(self, image_id: str, body: dict) -> DockerImage:
        """`dockerImages.save(image)`: `POST /docker/images/<id>` with the entity (found by running datagrok-api
        1.27.9, docs/datagrok-api.md §0). Images are created by publishing; a save may change the descriptive
        fields `friendlyName` and `description`, everything else is the server's."""
        with self._store.transaction():
            image = self._store.get_image(image_id)
            if image is None:
                raise NotFound(f"Docker image {image_id} not found")
            for key, attr in (("friendlyName", "friendly_name"), ("description", "description")):
                if isinstance(body.get(key), str):
                    setattr(image, attr, body[key][:1024])
            image.updated_on = self._clock.now()
            self._store.put_image(image)
        return image

    def delete(self, image_id: str) -> None:
        """`dockerImages.delete(image)`: `DELETE /docker/images/<id>`. Its containers go with it (removed from
        Docker, their tokens revoked); a later publish of the package creates them again."""
        image = self._store.get_image(image_id)
        if image is None:
            raise NotFound(f"Docker image {image_id} not found")
        for c in self._store.list_containers():
            if c.image_id == image_id:
                self._spawner.forget(c)
        self._store.delete_image(image_id)

    def latest_compatible(self, name: str, version: str | None, content_hash: str | None) -> dict | None:
        return latest_compatible(self._store.list_images(), name, version, content_hash)

    def wake(self) -> None:
        if self._background:
            self.process_pending()

    def process_pending(self) -> None:
        """Claim every pending image (→ validating) and validate it: inline in tests, on the build worker otherwise.
        Results a full disk held back are written first."""
        with self._unrecorded_lock:
            waiting, self._unrecorded = list(self._unrecorded.values()), {}
        for outcome in waiting:
            self._record(outcome, retry=True)
        with self._lock:
            claimed = []
            with self._store.transaction():
                for image in self._store.list_images():
                    if image.status is ImageStatus.PENDING_VALIDATION:
                        if not self._orchestrator.ping():
                            note = "Waiting for the Docker daemon: it is not reachable.\n"
                            if image.logs != note:
                                image.logs = note
                                self._store.put_image(image)
                            continue
                        claimed.append(self._set_status(image, "validate").id)
            for image_id in claimed:
                if self._background:
                    self._queue.put(image_id)
                    self._ensure_worker()
                else:
                    self._validate(image_id)

    def reset(self) -> None:
        """Admin reset: the queued builds go (a build already running finds its image gone and drops its result)."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="grokemu-image-builds", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            image_id = self._queue.get()
            try:
                self._validate(image_id)
            except Exception:
                log.exception("validation of image %s crashed", image_id)

    # -- validation ----------------------------------------------------------------------------------------------
    def _validate(self, image_id: str) -> None:
        image = self._store.get_image(image_id)
        if image is None or image.status is not ImageStatus.VALIDATING:
            return  # deleted or re-published meanwhile; the newer state wins
        started = image.status_since
        try:
            ok, logs, port = self._check(image)
        except Exception as e:  # the daemon went away mid-build, an API error...
            log.exception("validating %s", image.name)
            ok, logs, port = False, f"Validation failed: {e}\n", None
        self._record(_Outcome(image, started, ok, logs, port))

    def _record(self, outcome: _Outcome, retry: bool = False) -> None:
        """Write a validation's result. When the disk under the data directory is full, the result waits in memory
        (the image stays `validating`) and the scheduler writes it once there is room (docs/faults.md §3): the
        build is not lost and not run again."""
        image = outcome.image
        try:
            with self._store.transaction():
                current = self._store.get_image(image.id)
                if current is None or current.status is not ImageStatus.VALIDATING or \
                        current.status_since != outcome.started:
                    return
                current.port = outcome.port
                current.image_ref = image.image_ref
                current.docker_id = image.docker_id
                current.digest = image.digest
                self._set_status(current, "valid" if outcome.ok else "invalid", outcome.logs)
        except Exception as e:
            if disk_full(e) is None:
                raise
            if not retry:  # the scheduler retries every pass: one line, not one per pass
                log.error("the result of validating image %s waits for disk space: %s", image.name, e)
            with self._unrecorded_lock:
                self._unrecorded[image.id] = outcome
            return
        log.info("image %s:%s is %s", current.name, current.version, current.status.value)
        if outcome.ok:
            self._spawner.image_ready(current)

    def _check(self, image: DockerImage) -> tuple[bool, str, int | None]:
        orch = self._orchestrator
        logs: list[str] = []
        info = None
        if image.image_ref:
            self._record_registry_digest(image, image.image_ref, logs)
            info = orch.inspect_image(image.image_ref)
            if info is None and image.digest:
                info = self._pull_from_registry(image.image_ref, logs)
        if info is not None:
            logs.append(f"Found image {image.image_ref} in the Docker daemon ({info.id}).\n")
        elif not image.dockerfile:
            return False, (f"Image {image.image_ref} was not found in the Docker daemon, and the package has no "
                           f"Dockerfile in dockerfiles/{image.docker_dir} to build it from.\n"), None
        else:
            tag = f"datagrok/{image.name}:{image.version}"
            if image.image_ref:
                logs.append(f"Image {image.image_ref} was not found in the Docker daemon; building it.\n")
            # the package's current files, resolved through its database row (a publish swaps versions atomically)
            files = self._package_files.current_dir(self._store.get_package(image.package))
            if files is None or not (files / image.dockerfile_path).is_file():
                return False, "".join(logs) + (f"The package's files for {image.dockerfile_path} are missing; "
                                               "publish the package again.\n"), None
            context = files / image.dockerfile_path
            logs.append(f"Building {tag} from {image.dockerfile_path}\n")
            result = orch.build_image(str(context.parent), tag, image_labels(self._settings, image))
            logs.append(result.logs)
            if not result.ok:
                logs.append(f"Build of {tag} failed.\n")
                return False, "".join(logs), None
            info = orch.inspect_image(tag)
            if info is None:
                return False, "".join(logs) + f"Built image {tag} is missing from the daemon.\n", None
            image.image_ref = tag
        image.docker_id = info.id

        container = next((c for c in self._store.list_containers() if c.image_id == image.id), None)
        configured_port = (container.config.get("port") if container else None)
        exposed = info.exposed_ports
        if len(exposed) > 1:
            logs.append(f"The image exposes {len(exposed)} ports ({', '.join(map(str, exposed))}); Datagrok supports "
                        "exactly one EXPOSE port per container.\n")
            return False, "".join(logs), None
        if not exposed and not configured_port and container is not None and container.is_worker:
            logs.append(f"Image {image.image_ref} is ready; the container is a Celery worker (queue "
                        f"{container.task_queue}): it listens on no port.\n")
            return True, "".join(logs), None
        if not exposed and not configured_port:
            logs.append("The Dockerfile has no EXPOSE port and container.json has no 'port': grokemu cannot tell "
                        "which port the container listens on.\n")
            return False, "".join(logs), None
        port = configured_port or exposed[0]
        logs.append(f"Image {image.image_ref} is ready; the container listens on port {port}.\n")
        return True, "".join(logs), port

    def _record_registry_digest(self, image: DockerImage, ref: str, logs: list[str]) -> None:
        """Images pushed through grokemu's own registry (`grok config add ... --registry localhost:<port>`) are
        recorded with their registry digest. image.json never names the registry host (docs/grok-publish.md §2.4):
        `datagrok/<name>:<tag>` is the repository inside grokemu's registry."""
        if self._registry is None:
            return
        repo, _, tag = ref.rpartition(":")
        if not repo or "/" in tag:
            repo, tag = ref, "latest"
        try:
            found = self._registry.resolve_manifest(repo, tag)
        except Exception:  # a name the registry would reject is simply not in it
            found = None
        image.digest = found[0] if found else ""
        if found:
            logs.append(f"Found {repo}:{tag} in grokemu's registry ({found[0]}).\n")

    def _pull_from_registry(self, ref: str, logs: list[str]) -> ImageInfo | None:
        registry_ref = f"localhost:{self._settings.port}/{ref}"
        logs.append(f"Pulling {registry_ref} into the Docker daemon.\n")
        if not self._orchestrator.pull_image(registry_ref):
            logs.append(f"Pull of {registry_ref} failed.\n")
            return None
        self._orchestrator.tag_image(registry_ref, ref)
        return self._orchestrator.inspect_image(ref)

def _newest_first(images: list[DockerImage]) -> list[DockerImage]:
    return sorted(images, key=lambda i: i.updated_on, reverse=True)


def _major(version: str | None) -> str | None:
    head = (version or "").split(".")[0]
    return head if head.isdigit() else None


def latest_compatible(images: list[DockerImage], name: str, version: str | None,
                      content_hash: str | None) -> dict | None:
    """For `GET /docker/images/<name>/latest-compatible`: a ready image of that name with the same content hash
    (`hashMatch: true`: the CLI reuses it), else the newest ready one of the same major version (`hashMatch:
    false`: the CLI rebuilds, 'Dockerfile folder has changed'), else None (404: the CLI builds locally)."""
    ready = _newest_first([i for i in images if i.name == name and i.status is ImageStatus.READY])
    match = next((i for i in ready if content_hash and i.content_hash == content_hash), None)
    if match:
        return {"image": match.docker_full_name, "version": match.version, "hashMatch": True}
    major = _major(version)
    same_major = [i for i in ready if major is not None and _major(i.version) == major]
    if same_major:
        return {"image": same_major[0].docker_full_name, "version": same_major[0].version, "hashMatch": False}
    return None
