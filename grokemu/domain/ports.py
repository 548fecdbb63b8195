"""Ports: what the services need from the outside world. Adapters live in grokemu/adapters/ and are named after
their technology; each passes the same contract tests (tests/contracts/)."""
from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

from grokemu.domain.model import DockerContainer, DockerImage


class Store(Protocol):
    """Entities, packages and sessions. Every method is atomic; `transaction()` groups several."""

    def transaction(self) -> AbstractContextManager: ...

    def get_image(self, image_id: str) -> DockerImage | None: ...
    def list_images(self) -> list[DockerImage]: ...
    def put_image(self, image: DockerImage) -> None: ...
    def delete_image(self, image_id: str) -> None: ...

    def get_container(self, container_id: str) -> DockerContainer | None: ...
    def list_containers(self) -> list[DockerContainer]: ...
    def put_container(self, container: DockerContainer) -> None: ...
    def delete_container(self, container_id: str) -> None: ...

    def get_package(self, name: str) -> dict[str, Any] | None: ...
    def list_packages(self) -> list[dict[str, Any]]: ...
    def put_package(self, record: dict[str, Any]) -> None: ...

    # sessions (services/auth.py decides what is valid; the store only keeps rows)
    def put_session(self, token: str, login: str, created: float, expires: float | None = None,
                    owner: str | None = None) -> None: ...
    def get_session(self, token: str) -> "SessionRecord | None": ...
    def delete_session(self, token: str) -> bool: ...
    def delete_owner_sessions(self, owner: str) -> int: ...
    def delete_container_sessions(self) -> int:
        """Every session that has an owner (a container's USER_API_KEY)."""
    def purge_sessions(self, expired_before: float) -> int:
        """Rows whose `expires` is before the given time (rows without `expires` are kept)."""

    def reset(self) -> None:
        """Drop every entity and package, and every container-owned session; user sessions are kept."""


@dataclass(frozen=True)
class SessionRecord:
    """One session row. `expires` None = no time limit (container tokens; also rows from before sessions had an
    expiry, which AuthService dates from `created`). `owner` = the container id whose USER_API_KEY this is."""

    token: str
    login: str
    created: float
    expires: float | None = None
    owner: str | None = None


@dataclass
class BuildResult:
    ok: bool
    logs: str
    image_id: str = ""


@dataclass
class ImageInfo:
    id: str
    exposed_ports: list[int]
    labels: dict[str, str] = field(default_factory=dict)
    healthcheck: bool = False


@dataclass
class RunSpec:
    """Everything needed to run one plugin container (built by the spawner from container.json)."""

    name: str
    image: str
    container_port: int
    labels: dict[str, str]
    env: dict[str, str]
    nano_cpus: int
    mem_bytes: int
    shm_bytes: int
    gpus: int = 0
    storage_gb: float | None = None
    extra_hosts: dict[str, str] = field(default_factory=dict)


@dataclass
class RunningContainer:
    id: str
    name: str
    labels: dict[str, str]
    state: str  # created | running | exited | dead | ...
    host_port: int | None
    health: str | None = None  # None (no HEALTHCHECK) | starting | healthy | unhealthy
    exit_code: int | None = None
    warnings: list[str] = field(default_factory=list)


class Orchestrator(Protocol):
    """Everything grokemu asks of a container engine. Only adapters/docker_orchestrator.py imports the docker SDK."""

    def ping(self) -> bool: ...

    # images
    def inspect_image(self, ref: str) -> ImageInfo | None: ...
    def build_image(self, context_dir: str, tag: str, labels: dict[str, str]) -> BuildResult: ...
    def pull_image(self, ref: str) -> bool: ...
    def tag_image(self, source: str, target: str) -> None: ...
    def remove_images(self, labels: dict[str, str]) -> int: ...

    # containers
    def run(self, spec: RunSpec) -> RunningContainer: ...
    def inspect(self, container_id: str) -> RunningContainer | None: ...
    def stop(self, container_id: str, timeout: float = 10) -> None: ...
    def remove(self, container_id: str) -> None: ...
    def logs(self, container_id: str, tail: int) -> str: ...
    def list_labelled(self, labels: dict[str, str]) -> Iterable[RunningContainer]: ...
    def app_ready(self, container: RunningContainer) -> bool:
        """Is the app inside accepting requests? The HEALTHCHECK when the image has one, otherwise an answer on
        its published port."""
