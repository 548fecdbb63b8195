"""Ports: what the services need from the outside world. Adapters live in grokemu/adapters/ and are named after
their technology; each passes the same contract tests (tests/contracts/)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from grokemu.domain.exits import ExitFacts
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
    def get_session(self, token: str) -> SessionRecord | None: ...
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
    # A network of its own to run on instead of the default bridge (created, labelled like the container, when
    # missing): the broker and its workers share one, so other containers on the machine cannot reach the broker.
    # Ignored where every container runs on one network already (docker_network, Swarm).
    network: str = ""
    stop_timeout: float = 10.0  # seconds between SIGTERM and SIGKILL (Swarm: the service's stop_grace_period)


@dataclass
class RunningContainer:
    id: str
    name: str
    labels: dict[str, str]
    state: str  # created | running | exited | dead | ...
    host_port: int | None
    health: str | None = None  # None (no HEALTHCHECK) | starting | healthy | unhealthy
    exit_code: int | None = None
    # how it ended, as the engine says (domain/exits.py): OOMKilled (None: not known), the memory limit applied
    # (bytes), the engine's own message (Docker State.Error, a Swarm task's Err)
    oom_killed: bool | None = None
    mem_limit: int | None = None
    status_message: str = ""
    warnings: list[str] = field(default_factory=list)
    # the app's own address: the container's IP on its network and the port it listens on inside (not the
    # published host port, whose docker-proxy accepts before the app listens)
    app_ip: str | None = None
    app_port: int | None = None

    def exit_facts(self) -> ExitFacts:
        return ExitFacts(exit_code=self.exit_code, oom_killed=self.oom_killed, mem_limit=self.mem_limit,
                         message=self.status_message)

    def endpoint(self) -> tuple[str | None, int | None]:
        """Where grokemu sends proxied requests: 127.0.0.1 and the published port, or, on a shared Docker network
        (the `docker_network` setting: nothing published), the app's own address and port on it."""
        if self.host_port:
            return "127.0.0.1", self.host_port
        return self.app_ip, self.app_port


class LogStream(Protocol):
    """A container's log output as it comes, in chunks of bytes (stdout and stderr interleaved, as `docker logs`
    prints them). Iteration ends at the end of the logs, or, when following, once the container has stopped or is
    gone. `close()` may be called from another thread: an iteration waiting for output then ends."""

    def __iter__(self) -> Iterator[bytes]: ...
    def close(self) -> None: ...


class Orchestrator(Protocol):
    """Everything grokemu asks of a container engine. Only the adapters (docker_orchestrator/ and
    swarm_orchestrator.py, which builds on it) import the docker SDK."""

    # True when `stop` leaves the container in place to be started again (Swarm: the service scaled to 0), so the
    # spawner does not remove it after a stop; False when a stopped container is removed (Docker)
    keeps_stopped: bool

    def ping(self) -> bool: ...

    # images
    def inspect_image(self, ref: str) -> ImageInfo | None: ...
    def build_image(self, context_dir: str, tag: str, labels: dict[str, str]) -> BuildResult: ...
    def pull_image(self, ref: str) -> bool: ...
    def tag_image(self, source: str, target: str) -> None: ...
    def remove_images(self, labels: dict[str, str]) -> int: ...

    def remove_networks(self, labels: dict[str, str]) -> int:
        """Remove the networks grokemu created with these labels (RunSpec.network); how many."""
        ...

    # containers
    def run(self, spec: RunSpec) -> RunningContainer: ...
    def inspect(self, container_id: str) -> RunningContainer | None: ...
    def stop(self, container_id: str, timeout: float = 10) -> None: ...
    def remove(self, container_id: str) -> None: ...
    def logs(self, container_id: str, tail: int) -> str: ...
    def stream_logs(self, container_id: str, tail: int | None, follow: bool) -> LogStream:
        """The last `tail` lines (None: all of them; 0: none), then, when `follow`, new output until the container
        stops; an unknown container gives an empty stream."""
    def list_labelled(self, labels: dict[str, str]) -> Iterable[RunningContainer]: ...
    def app_ready(self, container: RunningContainer) -> bool:
        """Is the app inside ready? The HEALTHCHECK verdict when the image has one; otherwise whether the app's own
        address and port accept a connection (no HTTP answer needed: databases and queue workers speak none).
        The spawner decides what a port that never accepts means (services/spawner/drivers.py `_check`)."""


class FrameChannel(Protocol):
    """One side of a WebSocket carrying call frames (the client's call socket, a worker's pipe): sends are
    thread-safe, and raise OSError once the peer is gone."""

    def send_text(self, text: str) -> None: ...
    def send_binary(self, data: bytes) -> None: ...


# -- the message broker (queue functions) ----------------------------------------------------------------------------

# (call id, event type, body): `accepted` | `progress` | `log` | `call`, as the worker publishes them on calls_fanout
CallEventHandler = Callable[[str, str, Any], None]


class Broker(Protocol):
    """What grokemu asks of the AMQP broker its Celery workers consume from (adapters/amqp_broker.py, kombu).
    Every method raises BrokerUnavailable when the broker cannot be reached."""

    def publish_task(self, queue: str, task: str, call_id: str, call: dict[str, Any]) -> None:
        """The message Datagrok's server sends a worker: body {"args": [<FuncCall>], "kwargs": {}}, headers task/id/lang."""
    def revoke(self, call_id: str) -> None:
        """Celery's revoke with terminate (the pidbox broadcast), so a waiting task is dropped and a running one ends."""
    def consumers(self, queue: str) -> int:
        """How many workers consume `queue` (0 when it does not exist yet)."""
    def listen(self, handler: CallEventHandler) -> None:
        """Consume the workers' `calls_fanout` exchange on a thread of its own, reconnecting, until `close`."""
    def wait_listening(self, timeout: float) -> bool:
        """True once the calls_fanout consumer is bound (a call published before would lose its `accepted`)."""
    def close(self) -> None: ...


# -- registry storage ---------------------------------------------------------------------------------------------------

class ShortRead(Exception):
    """A blob store's `append_upload` got fewer bytes than announced (the client went away)."""


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...


class BlobStore(Protocol):
    """Content-addressed blobs, upload sessions, and per-repository links and tags: what services/registry/ asks of
    its storage (laid out like distribution's storage driver; adapters/fs_blobs.py is the filesystem one). Callers
    pass validated names, digests and tags (domain/references.py); a store still refuses anything unsafe with
    ValueError. Lookups of something absent answer None / False rather than raising."""

    def clear(self) -> None: ...

    # blobs
    def blob_path(self, digest: str) -> Path: ...
    def blob_size(self, digest: str) -> int | None: ...
    def read_blob(self, digest: str) -> bytes | None: ...
    def put_blob_bytes(self, digest: str, data: bytes) -> None: ...
    def delete_blob(self, digest: str) -> int:
        """Bytes freed (0 when it was already gone)."""
    def iter_blobs(self) -> Iterator[tuple[str, int]]: ...

    # upload sessions
    def create_upload(self, repo: str, now: float) -> str: ...
    def upload_info(self, upload_id: str) -> dict | None:
        """{"repo", "started", "updated", "size"} or None for an unknown session."""
    def touch_upload(self, upload_id: str, now: float) -> None: ...
    def append_upload(self, upload_id: str, stream: IO[bytes], hasher: Hasher, length: int | None = None) -> int:
        """Append and feed `hasher`; the new size. Raises ShortRead (and keeps the old size) on a short body."""
    def hash_upload(self, upload_id: str, hasher: Hasher) -> None: ...
    def commit_upload(self, upload_id: str, digest: str) -> None: ...
    def delete_upload(self, upload_id: str) -> bool: ...
    def iter_uploads(self) -> Iterator[tuple[str, dict | None]]:
        """(upload id, info) per session; (name, None) for old debris."""
    def remove_upload_entry(self, name: str) -> None: ...
    def sweep_debris(self) -> int: ...

    # repositories: layer links, manifest links, tags
    def link_layer(self, repo: str, digest: str, now: float) -> None: ...
    def layer_linked(self, repo: str, digest: str) -> bool: ...
    def unlink_layer(self, repo: str, digest: str) -> bool: ...
    def iter_layer_links(self, repo: str) -> Iterator[tuple[str, float]]: ...
    def link_manifest(self, repo: str, digest: str, media_type: str, now: float) -> None: ...
    def manifest_link(self, repo: str, digest: str) -> dict | None: ...
    def unlink_manifest(self, repo: str, digest: str) -> bool: ...
    def iter_manifest_links(self, repo: str) -> Iterator[tuple[str, dict]]: ...
    def set_tag(self, repo: str, tag: str, digest: str) -> None: ...
    def get_tag(self, repo: str, tag: str) -> str | None: ...
    def delete_tag(self, repo: str, tag: str) -> bool: ...
    def tags(self, repo: str) -> dict[str, str]: ...
    def linked_since(self, digest: str, since: float) -> bool: ...
    def repo_exists(self, repo: str) -> bool: ...
    def repositories(self) -> list[str]: ...
    def prune_empty_dirs(self) -> None: ...


class PackageFiles(Protocol):
    """The published packages' files, rooted once at `<data>/packages` (adapters/fs_package_files.py). `record` is a
    package's database row: every reader resolves the current version through it."""

    @property
    def root(self) -> Path: ...
    def current_dir(self, record: Mapping[str, Any] | None) -> Path | None: ...
    def files_dir(self, package_name: str, record: Mapping[str, Any] | None) -> Path: ...
    def current_files(self, record: Mapping[str, Any] | None) -> dict[str, Path]: ...
    def connection_files(self, record: Mapping[str, Any] | None) -> dict[str, bytes]: ...
    def staging_dir(self) -> Path: ...
    def new_version(self, package_name: str, tree: Path) -> AbstractContextManager[str]: ...
    def sweep(self, records: Iterable[Mapping[str, Any]]) -> int: ...
    def reset(self) -> None: ...
