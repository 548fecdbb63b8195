"""Entities: DockerImage and DockerContainer as Datagrok models them, plus their wire maps.

Wire keys are the Dart client's property names (camelCase; docs/datagrok-api.md §2).
"""
from __future__ import annotations

import dataclasses
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from grokemu.domain.clock import iso
from grokemu.domain.lifecycle import ContainerStatus, ImageStatus


def new_id() -> str:
    return str(uuid.uuid4())


def remove_scope(package_name: str) -> str:
    """`@acme/grokprobe` → `grokprobe` (datagrok-tools utils.js removeScope: the part after the last `/`)."""
    return package_name.rsplit("/", 1)[-1]


def image_docker_name(package_name: str, docker_dir: str) -> str:
    """The name `grok publish` gives the image: `<pkg>-<dir>`, lowercase, scope removed; a root Dockerfile gets
    the package name alone (datagrok-tools 6.7.5 publish.js:45-79)."""
    base = remove_scope(package_name).lower()
    return base if docker_dir in (".", "") else f"{base}-{docker_dir.lower()}"


def kebab(name: str) -> str:
    """CamelCase / spaces / underscores → kebab-case, as Datlas names containers (`CvmTests` → `cvm-tests`)."""
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1-\2", name)
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1-\2", s)
    s = re.sub(r"[^A-Za-z0-9]+", "-", s)
    return s.strip("-").lower()


def container_name(package_name: str, docker_dir: str) -> str:
    """`kebab(package name)-<dockerfileFolder>` (CVMTests: 'Platform registers package containers as
    kebab(package.name)-<dockerfileFolder>'); a package with a root Dockerfile gets the package name."""
    base = kebab(remove_scope(package_name))
    return base if docker_dir in (".", "") else f"{base}-{docker_dir.lower()}"


def friendly(name: str) -> str:
    """Datagrok normalizes friendly names to first-letter-only capitals (`DBTests` → `Dbtests`)."""
    return name[:1].upper() + name[1:].lower()


@dataclass
class DockerImage:
    name: str  # dockerName: `<pkg>-<dir>`
    package: str  # package.json name, scope included
    docker_dir: str  # folder under dockerfiles/, "." for a root Dockerfile
    version: str  # the tag
    id: str = field(default_factory=new_id)
    friendly_name: str = ""
    description: str = ""
    dockerfile: str = ""  # Dockerfile text
    image_ref: str | None = None  # image named in image.json / container.json; None → grokemu builds it
    status: ImageStatus = ImageStatus.PENDING_VALIDATION
    logs: str = ""
    content_hash: str = ""  # calculateFolderHash of dockerfiles/<dir>, as the CLI sends to latest-compatible
    docker_id: str = ""  # the daemon's image id once validated
    digest: str = ""  # registry digest when it came through grokemu's registry
    port: int | None = None  # the one exposed port
    created_on: float = 0.0
    updated_on: float = 0.0
    updated_by: str = ""
    status_since: float = 0.0
    warnings: list[str] = field(default_factory=list)  # publish warnings: bad function headers (file:line)

    @property
    def dockerfile_path(self) -> str:
        return "dockerfiles/Dockerfile" if self.docker_dir == "." else f"dockerfiles/{self.docker_dir}/Dockerfile"

    @property
    def docker_full_name(self) -> str:
        """`imageRef ?? "datagrok/" + dockerName + ":" + version` (docs/datagrok-api.md §2.2)."""
        return self.image_ref or f"datagrok/{self.name}:{self.version}"

    def to_wire(self) -> dict[str, Any]:
        return {
            "#type": "DockerImage", "id": self.id, "name": self.name, "friendlyName": self.friendly_name,
            "namespace": self.package, "description": self.description, "dockerfile": self.dockerfile,
            "status": self.status.value, "dockerName": self.name, "version": self.version,
            "dockerfilePath": self.dockerfile_path, "dockerFullName": self.docker_full_name,
            "imageRef": self.image_ref, "logs": self.logs, "contentHash": self.content_hash,
            "digest": self.digest or None, "port": self.port, "updatedBy": self.updated_by,
            "createdOn": iso(self.created_on), "updatedOn": iso(self.updated_on),
            "package": {"name": self.package}, "isDeleted": False, "warnings": list(self.warnings),
        }


@dataclass
class DockerContainer:
    name: str  # kebab(package)-<dir>
    package: str
    image_id: str
    id: str = field(default_factory=new_id)
    friendly_name: str = ""
    docker_image: str = ""  # the image reference to run
    status: ContainerStatus = ContainerStatus.USER_STOPPED
    desired_instances: int = 0
    address: str | None = None
    port: int | None = None  # published host port on 127.0.0.1
    container_port: int | None = None  # the port the app listens on inside the container
    last_logs: str = ""
    error: str = ""
    last_active: float | None = None
    config: dict[str, Any] = field(default_factory=dict)  # container.json, normalized (see container_config)
    docker_id: str = ""  # the daemon's container id
    service_name: str = ""  # the orchestrator's name for it (the Docker container name)
    started_by: str = ""  # login whose action started it: its session token becomes USER_API_KEY
    running_image_id: str = ""  # the daemon image id it runs; a newer ready image replaces the container
    warnings: list[str] = field(default_factory=list)  # e.g. storage limit not enforced, unknown container.json keys
    created_on: float = 0.0
    updated_on: float = 0.0
    updated_by: str = ""
    status_since: float = 0.0
    # a Celery worker (its folder has Python functions): the one queue its worker consumes, and its entry module
    task_queue: str = ""
    celery_name: str = ""
    pipe_key_hash: str = ""  # sha256 of DATAGROK_PIPE_KEY of the current start; empty when not running

    @property
    def is_worker(self) -> bool:
        return bool(self.task_queue)

    def to_wire(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "#type": "DockerContainer", "id": self.id, "name": self.name, "friendlyName": self.friendly_name,
            "namespace": self.package, "dockerfile": {"id": self.image_id}, "dockerImage": self.docker_image,
            "serviceName": self.service_name, "status": self.status.value,
            "desiredInstances": self.desired_instances, "address": self.address, "port": self.port,
            "lastLogs": self.last_logs, "errorMessage": self.error or None, "warnings": list(self.warnings),
            "unknownConfigKeys": dict(cfg.get("unknown") or {}), "lastActive": iso(self.last_active),
            "environmentVars": dict(cfg.get("env") or {}),
            "cpu": cfg.get("cpu"), "memory": cfg.get("memory"), "gpu": cfg.get("gpu"),
            "onDemand": cfg.get("on_demand"), "shutdownTimeout": cfg.get("shutdown_timeout"),
            "sharedMemSize": cfg.get("shm_size"), "storage": cfg.get("storage"),
            "updatedBy": self.updated_by, "createdOn": iso(self.created_on), "updatedOn": iso(self.updated_on),
            "package": {"name": self.package}, "isDeleted": False, "taskQueue": self.task_queue or None,
        }


def to_record(entity) -> dict[str, Any]:
    record = dataclasses.asdict(entity)
    record["status"] = entity.status.value
    return record


def image_from_record(record: dict[str, Any]) -> DockerImage:
    return DockerImage(**{**record, "status": ImageStatus(record["status"])})


def container_from_record(record: dict[str, Any]) -> DockerContainer:
    return DockerContainer(**{**record, "status": ContainerStatus(record["status"])})
