"""container.json → what the orchestrator runs (a RunSpec): limits, GPU, environment, labels, the container name.

Kept apart from the spawner, which decides *when* a container starts and stops; this module decides *what* runs.
Wire facts: docs/datagrok-api.md §4.1 (container.json keys and defaults) and §2.4 (the injected environment).
"""
from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from grokemu.config import Settings
from grokemu.domain.errors import BadRequest
from grokemu.domain.labels import managed_labels, queue_network
from grokemu.domain.model import DockerContainer, DockerImage
from grokemu.domain.ports import PackageFiles, RunSpec, Store
from grokemu.services.environment import build_environment, find_published_package, package_entities

if TYPE_CHECKING:
    from grokemu.services.auth import AuthService
    from grokemu.services.broker import BrokerService

MB = 1024 * 1024


class RunSpecs:
    def __init__(self, settings: Settings, store: Store, auth: AuthService, package_files: PackageFiles,
                 broker: BrokerService | None = None):
        self._settings = settings
        self._broker = broker  # Celery workers get its address and credentials
        self._store = store
        self._auth = auth
        self._package_files = package_files  # the connections/*.json that container env expressions name

    def labels(self, c: DockerContainer | None = None) -> dict[str, str]:
        labels = managed_labels(self._settings.instance)
        if c is not None:
            labels.update({"grokemu.container": c.id, "grokemu.package": c.package, "grokemu.image": c.image_id,
                           "grokemu.name": c.name})
        return labels

    def docker_name(self, c: DockerContainer) -> str:
        instance = self._settings.instance
        return f"grokemu-{c.name}" if instance == "default" else f"grokemu-{instance}-{c.name}"

    def image_reference(self, image: DockerImage) -> str:
        """What the orchestrator runs. On a swarm whose nodes reach grokemu's registry (`swarm_registry`), an image
        that came through that registry is named by digest there, so whichever node gets the task can pull exactly
        it (docs/swarm.md, "Images on several nodes"); otherwise the image the local daemon holds."""
        if self._settings.orchestrator == "swarm" and self._settings.swarm_registry and image.digest and \
                image.image_ref:
            repository = image.image_ref.rsplit(":", 1)[0] if ":" in image.image_ref.rsplit("/", 1)[-1] \
                else image.image_ref
            return f"{self._settings.swarm_registry}/{repository}@{image.digest}"
        return image.docker_id or image.docker_full_name

    def container_api_url(self) -> str:
        return self._settings.container_api_url or f"http://host.docker.internal:{self._settings.port}/api"

    def pipe_address(self) -> tuple[str, int]:
        """DATAGROK_PIPE_HOST/PORT: grokemu's own port, where containers reach its API (the bridge listener, or its
        address on the stand's network), unless the pipe_host/pipe_port settings say otherwise."""
        api = urlsplit(self.container_api_url())
        return (self._settings.pipe_host or api.hostname or "host.docker.internal",
                self._settings.pipe_port or api.port or self._settings.port)

    def worker_environment(self, c: DockerContainer) -> dict[str, str]:
        """What a Celery worker needs (docs/queue-functions.md §2): the broker, the pipe with this start's own key,
        its one queue, a hostname unique per start, its entry module and its process count."""
        if self._broker is None:
            raise BadRequest(f"Container {c.name} is a queue worker, and this grokemu has no message broker")
        host, port = self.pipe_address()
        cpu = c.config.get("cpu")
        try:
            processes = max(1, int(2 * float(cpu))) if cpu is not None else 1
        except (TypeError, ValueError):
            processes = 1
        return {**self._broker.endpoint().container_env(),
                "DATAGROK_PIPE_HOST": host, "DATAGROK_PIPE_PORT": str(port),
                "DATAGROK_PIPE_KEY": secrets.token_urlsafe(32), "TASK_QUEUE_NAME": c.task_queue,
                "CELERY_HOSTNAME": f"{c.name}-{secrets.token_hex(4)}", "DATAGROK_CELERY_NAME": c.celery_name,
                "WORKERS_PROCESSES": str(processes)}

    @staticmethod
    def pipe_key_hash(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def build(self, c: DockerContainer, image: DockerImage, keep_earlier_token: bool = False
              ) -> tuple[RunSpec, list[str]]:
        """The RunSpec for one start of `c`, with the warnings to show on the container. Mints the container's
        USER_API_KEY (revoked again when the container stops: services/auth.py); `keep_earlier_token` for a live
        replacement, where the running container keeps its key until the new one takes over."""
        cfg = c.config
        warnings = []
        if cfg.get("unknown_keys"):
            warnings.append("container.json keys Datagrok does not model (kept, not applied): "
                            + ", ".join(cfg["unknown_keys"]))
        gpus = int(cfg.get("gpu") or 0)
        if gpus and self._settings.ignore_gpu:
            warnings.append(f"gpu {gpus} requested; running without a GPU (--ignore-gpu)")
            gpus = 0
        files = self._package_files
        env = build_environment(
            api_url=self.container_api_url(), user_token=self._auth.token_for(c.started_by or "admin", owner=c.id,
                                                                   keep_earlier=keep_earlier_token),
            env=cfg.get("env") or {}, own_package=c.package,
            find_package=lambda ref: find_published_package(self._store, files, ref),
            own_entities=package_entities(files, self._store.get_package(c.package)),
            worker=self.worker_environment(c) if c.is_worker else None)

        # Docker reads 0 as "no limit": a tiny cpu/memory that rounds below Docker's minimum is raised to it, with a
        # warning, never left unlimited (Docker refuses memory under 6 MiB; NanoCpus 1e7 is 0.01 CPU).
        def limit(key: str, default: float, scale: float, minimum: int, maximum: float, unit: str) -> int:
            try:
                value = float(cfg.get(key, default) if cfg.get(key) is not None else default)
            except (TypeError, ValueError):
                value = default
            if value != value or value <= 0:  # NaN or not positive (rows written before container.json checks)
                value = default
            wanted = min(value * scale, maximum)
            if wanted < minimum:
                warnings.append(f"container.json '{key}' {cfg.get(key)} is below Docker's minimum; using "
                                f"{minimum / scale:g} {unit}")
                return minimum
            return int(wanted)

        spec = RunSpec(
            name=self.docker_name(c), image=self.image_reference(image),
            container_port=int(image.port or cfg.get("port") or 0), labels=self.labels(c), env=env,
            nano_cpus=limit("cpu", 0.25, 1e9, 10_000_000, 1024e9, "CPU"),
            mem_bytes=limit("memory", 512, MB, 6 * MB, float(2**60), "MB"),
            shm_bytes=limit("shm_size", 64, MB, 1, float(2**60), "MB"), gpus=gpus, storage_gb=cfg.get("storage"),
            extra_hosts={"host.docker.internal": "host-gateway"}, stop_timeout=self._settings.stop_timeout,
            # a worker joins the network of the broker grokemu runs (an existing broker, amqp_url, is reached as
            # configured); host.docker.internal still leads to grokemu's bridge listener from there
            network=queue_network(self._settings.instance) if c.is_worker and not self._settings.amqp_url else "")
        return spec, warnings
