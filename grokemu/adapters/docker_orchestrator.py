"""The Orchestrator port on the host Docker daemon, through the docker SDK. The only module that imports `docker`.

Containers publish their one port on 127.0.0.1 with an ephemeral host port (docs/design.md decision 4) and carry
grokemu's labels so a restart can re-adopt them and nothing is orphaned. With a `network` (the `docker_network`
setting: grokemu in the compose stand, where 127.0.0.1 is grokemu's own container) they publish nothing: they run on
that Docker network and grokemu reaches them at their address on it (`RunningContainer.endpoint`).
"""
from __future__ import annotations

import ipaddress
import logging
import math
import socket
import threading
from collections.abc import Callable

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import DeviceRequest

from grokemu.domain.errors import NO_GPU_MESSAGE, ContainerStartFailed, DockerUnavailable
from grokemu.domain.ports import BuildResult, ImageInfo, RunningContainer, RunSpec

log = logging.getLogger(__name__)

NETWORK_LABEL = "grokemu.network"  # the docker_network a container was run on (its address there is the app's)
APP_PORT_LABEL = "grokemu.app_port"  # the port the app listens on inside, when nothing is published


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool | None:
    """True when a TCP connection to host:port is accepted, False when it is refused, None when the address cannot
    be reached at all (no route to a container network, as on Docker Desktop)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except ConnectionRefusedError:
        return False
    except OSError:
        return None


def backend_accepts(host: str, port: int, timeout: float = 0.3) -> bool:
    """Through the published port when the container's own address is unreachable. Docker's userland proxy accepts
    at once, then closes the connection when the app inside refuses it; when the app accepted, the connection stays
    open. So: bytes or silence within `timeout` = the app accepted (a database or an HTTP server waiting for a
    request); an immediate close = nothing listens. Without a userland proxy, a refusal is a refusal."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            try:
                return bool(sock.recv(1))
            except TimeoutError:
                return True
    except OSError:
        return False


def http_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something on host:port answers an HTTP request with any status.

    A TCP connect is not enough: Docker's userland proxy accepts on the published port before the app inside
    listens, then closes the connection. So send `HEAD /` and wait for the first bytes of a reply."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"HEAD / HTTP/1.0\r\nHost: localhost\r\nUser-Agent: grokemu-probe\r\n\r\n")
            return bool(sock.recv(1))
    except OSError:
        return False


class DockerOrchestrator:
    keeps_stopped = False  # a stopped container is removed; the next start runs a new one

    def __init__(self, base_url: str | None = None, timeout: float = 120, network: str | None = None):
        self.network = network or None  # run containers on this network, publishing nothing (docker_network)
        self._base_url = base_url
        self._timeout = timeout
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._network_lock = threading.Lock()
        self._storage_opt_supported: bool | None = None

    @property
    def client(self) -> docker.DockerClient:
        # Connect lazily so grokemu starts (and serves what does not need Docker) while the daemon is down.
        with self._lock:
            if self._client is None:
                try:
                    # types-docker says int; docker-py hands the timeout to requests, which takes seconds as a float
                    self._client = (docker.DockerClient(base_url=self._base_url,
                                                        timeout=self._timeout)  # type: ignore[arg-type]
                                    if self._base_url
                                    else docker.from_env(timeout=self._timeout))  # type: ignore[arg-type]
                except DockerException as e:
                    raise DockerUnavailable(f"Docker daemon unreachable: {e}") from None
            return self._client

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except (DockerException, DockerUnavailable, OSError):
            with self._lock:
                self._client = None
            return False

    def bridge_gateway(self) -> str | None:
        """The host's address on Docker's default bridge: where `host.docker.internal` (host-gateway) points."""
        try:
            config = self.client.networks.get("bridge").attrs["IPAM"]["Config"] or []
        except (DockerException, KeyError, DockerUnavailable):
            return None
        for entry in config:
            if entry.get("Gateway"):
                return entry["Gateway"]
            if entry.get("Subnet") and ":" not in entry["Subnet"]:
                # Engines that leave Gateway out use the subnet's first address (docker0 is 172.17.0.1/16).
                return str(next(ipaddress.ip_network(entry["Subnet"], strict=False).hosts()))
        return None

    # the shared network (docker_network) --------------------------------------------------------------------------
    def ensure_network(self, labels: dict[str, str]) -> dict:
        """Create `self.network` (a bridge network carrying `labels`) unless it exists; its attributes."""
        name = self._shared_network()
        try:
            return self.client.networks.get(name).attrs
        except NotFound:
            pass
        try:
            return self.client.networks.create(name, driver="bridge", labels=labels, check_duplicate=True).attrs
        except APIError as e:
            if e.status_code == 409:  # created meanwhile (another grokemu, compose)
                return self.client.networks.get(name).attrs
            raise

    def _shared_network(self) -> str:
        if self.network is None:
            raise ValueError("no shared network: the docker_network setting is empty")
        return self.network

    @staticmethod
    def network_gateway(attrs: dict) -> str | None:
        for entry in (attrs.get("IPAM") or {}).get("Config") or []:
            if entry.get("Gateway"):
                return entry["Gateway"].split("/")[0]
            if entry.get("Subnet") and ":" not in entry["Subnet"]:
                return str(next(ipaddress.ip_network(entry["Subnet"], strict=False).hosts()))
        return None

    def own_container(self):
        """grokemu's own container when it runs in one on this daemon (the compose stand), else None."""
        import os

        if not os.path.exists("/.dockerenv"):
            return None
        try:
            return self.client.containers.get(socket.gethostname())
        except (DockerException, DockerUnavailable):
            return None

    def join_network(self, container) -> tuple[str | None, list[str]]:
        """Connect grokemu's own container to `self.network` (unless it is on it already). Its address there, and
        the gateways of every network it is on (the host's side: where the published port's traffic comes from)."""
        container.reload()
        networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        if self.network not in networks:
            self.client.networks.get(self._shared_network()).connect(container)
            container.reload()
            networks = container.attrs["NetworkSettings"]["Networks"]
        gateways = [n.get("Gateway") for n in networks.values() if n.get("Gateway")]
        return (networks.get(self.network) or {}).get("IPAddress") or None, gateways

    # images ---------------------------------------------------------------------------------------------------
    def inspect_image(self, ref: str) -> ImageInfo | None:
        try:
            attrs = self.client.api.inspect_image(ref)
        except (ImageNotFound, NotFound):
            return None
        except APIError as e:
            if e.status_code == 404:
                return None
            raise
        config = attrs.get("Config") or {}
        ports = sorted(int(p.split("/")[0]) for p in (config.get("ExposedPorts") or {}))
        return ImageInfo(id=attrs["Id"], exposed_ports=ports, labels=config.get("Labels") or {},
                         healthcheck=bool((config.get("Healthcheck") or {}).get("Test")))

    def build_image(self, context_dir: str, tag: str, labels: dict[str, str],
                    on_output: Callable[[str], None] | None = None) -> BuildResult:
        """Build `context_dir` as `tag`; `on_output` gets the build output as it comes (`grokemu dev` streams it)."""
        lines: list[str] = []
        image_id = ""
        try:
            for chunk in self.client.api.build(path=context_dir, tag=tag, labels=labels, rm=True, forcerm=True,
                                               decode=True):
                if "stream" in chunk:
                    lines.append(chunk["stream"])
                    if on_output is not None:
                        on_output(chunk["stream"])
                if "aux" in chunk and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
                if "error" in chunk:
                    lines.append(chunk["error"].rstrip("\n") + "\n")
                    if on_output is not None:
                        on_output(lines[-1])
                    return BuildResult(ok=False, logs="".join(lines))
        except (APIError, DockerException) as e:
            lines.append(f"{e}\n")
            return BuildResult(ok=False, logs="".join(lines))
        return BuildResult(ok=True, logs="".join(lines), image_id=image_id)

    def pull_image(self, ref: str) -> bool:
        try:
            self.client.images.pull(ref)
            return True
        except (APIError, DockerException) as e:
            log.info("pull of %s failed: %s", ref, e)
            return False

    def tag_image(self, source: str, target: str) -> None:
        repository, _, tag = target.rpartition(":")
        if not repository or "/" in tag:
            repository, tag = target, "latest"
        self.client.api.tag(source, repository, tag)

    def remove_image(self, ref: str, untagged_only: bool = False) -> bool:
        """Remove one image by reference or id, never forced (an image a container uses stays): a reference loses
        only that tag. `untagged_only`: only when no tag names it any more (a build that a newer one replaced; the
        same layers may carry someone else's tag). False when nothing was removed."""
        try:
            if untagged_only and (self.client.api.inspect_image(ref).get("RepoTags") or []):
                return False
            self.client.api.remove_image(ref)
            return True
        except (ImageNotFound, NotFound):
            return False
        except APIError as e:
            log.info("image %s not removed: %s", ref, e)
            return False

    def remove_images(self, labels: dict[str, str]) -> int:
        removed = 0
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        for image in self.client.images.list(filters=filters):
            if image.id is None:  # never for an image the daemon lists
                continue
            try:
                self.client.images.remove(image.id, force=True)
                removed += 1
            except APIError as e:
                log.warning("could not remove image %s: %s", image.id, e)
        return removed

    # containers -----------------------------------------------------------------------------------------------
    def run(self, spec: RunSpec) -> RunningContainer:
        kwargs = dict(
            name=spec.name, labels=spec.labels, environment=spec.env, detach=True,
            ports=None if self.network else {f"{spec.container_port}/tcp": ("127.0.0.1", None)},  # loopback only
            nano_cpus=spec.nano_cpus, mem_limit=spec.mem_bytes, shm_size=spec.shm_bytes,
            extra_hosts=spec.extra_hosts or None,
        )
        if self.network:
            # nothing published: the app's address on the network and its port (labels: read back by inspect)
            kwargs.update(network=self.network, labels={**spec.labels, NETWORK_LABEL: self.network,
                                                        APP_PORT_LABEL: str(spec.container_port)})
        elif spec.network:
            self._ensure_own_network(spec.network, spec.labels)
            kwargs["network"] = spec.network
        warnings: list[str] = []
        if spec.gpus:
            kwargs["device_requests"] = [DeviceRequest(count=spec.gpus, capabilities=[["gpu"]])]
        if spec.storage_gb and self._storage_opt_supported is not False:
            kwargs["storage_opt"] = {"size": f"{int(spec.storage_gb)}G"}
        try:
            container = self._create_and_start(spec.image, kwargs)
        except APIError as e:
            if "storage_opt" in kwargs and "storage" in str(e).lower():
                # overlay2 supports a size limit only on xfs with pquota: say so, never ignore it silently.
                self._storage_opt_supported = False
                kwargs.pop("storage_opt")
                container = self._create_and_start(spec.image, kwargs)
            else:
                raise
        if spec.storage_gb and "storage_opt" not in kwargs:
            warnings.append(f"storage {spec.storage_gb} GB not enforced: the Docker storage driver does not "
                            "support a per-container disk size")
        info = self._describe(container.attrs) if container.attrs else None
        running = self.inspect(container.id) or info
        if running is None:
            raise ContainerStartFailed(f"container {spec.name} was created but cannot be inspected")
        running.warnings = warnings
        return running

    def _ensure_own_network(self, name: str, labels: dict[str, str]) -> None:
        """RunSpec.network: a bridge network carrying grokemu's labels (so reset removes it), created once."""
        with self._network_lock:  # Docker may accept two networks of one name: create it once
            if self.client.networks.list(names=[name]):
                return
            own = {k: v for k, v in labels.items() if k in ("grokemu.managed", "grokemu.instance")}
            self.client.networks.create(name, driver="bridge", labels=own)

    def remove_networks(self, labels: dict[str, str]) -> int:
        removed = 0
        for network in self.client.networks.list(filters={"label": [f"{k}={v}" for k, v in labels.items()]}):
            if network.name == self.network:
                continue  # the stand's shared network is the stand's own to remove
            try:
                network.remove()
                removed += 1
            except (APIError, NotFound) as e:
                log.info("network %s not removed: %s", network.name, e)
        return removed

    def _create_and_start(self, image: str, kwargs: dict):
        try:
            container = self.client.containers.create(image, **kwargs)
        except APIError as e:
            if e.status_code == 409:  # a container of that name is left over: replace it
                self.client.containers.get(kwargs["name"]).remove(force=True)
                container = self.client.containers.create(image, **kwargs)
            else:
                raise
        try:
            container.start()
        except APIError as e:
            container.remove(force=True)  # never leave a created-but-unstartable container behind
            msg = str(e.explanation or e)
            if "capabilities: [[gpu]]" in msg or "nvidia" in msg.lower():
                raise ContainerStartFailed(NO_GPU_MESSAGE, msg) from None
            raise
        return container

    def inspect(self, container_id: str) -> RunningContainer | None:
        try:
            attrs = self.client.api.inspect_container(container_id)
        except (NotFound, APIError) as e:
            if isinstance(e, NotFound) or getattr(e, "status_code", None) == 404:
                return None
            raise
        return self._describe(attrs)

    @staticmethod
    def _describe(attrs: dict) -> RunningContainer:
        state = attrs.get("State") or {}
        host_port = None
        for bindings in ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).values():
            for b in bindings or []:
                if b.get("HostIp") in ("127.0.0.1", "") and b.get("HostPort"):
                    host_port = int(b["HostPort"])
        health = (state.get("Health") or {}).get("Status")
        return RunningContainer(id=attrs["Id"], name=attrs.get("Name", "").lstrip("/"),
                                labels=(attrs.get("Config") or {}).get("Labels") or {},
                                state=state.get("Status", "unknown"), host_port=host_port, health=health,
                                exit_code=state.get("ExitCode"), app_ip=_container_ip(attrs),
                                app_port=_container_port(attrs), oom_killed=bool(state.get("OOMKilled")),
                                mem_limit=(attrs.get("HostConfig") or {}).get("Memory") or None,
                                status_message=state.get("Error") or "")

    def stop(self, container_id: str, timeout: float = 10) -> None:
        try:
            # the Engine API takes whole seconds: round a fraction up, never to "no grace"
            self.client.api.stop(container_id, timeout=max(0, math.ceil(timeout)))
        except NotFound:
            pass

    def remove(self, container_id: str) -> None:
        try:
            self.client.api.remove_container(container_id, force=True)
        except NotFound:
            pass
        except APIError as e:
            if e.status_code not in (404, 409):  # 409: removal already in progress
                raise

    def logs(self, container_id: str, tail: int) -> str:
        try:
            data = self.client.api.logs(container_id, stdout=True, stderr=True, tail=max(tail, 0) or "all")
        except NotFound:
            return ""
        return data.decode("utf-8", "replace")

    def stream_logs(self, container_id: str, tail: int | None, follow: bool):
        # docker-py's CancellableStream: its close() shuts the socket, so a follower blocked in a read ends; the
        # read itself has no timeout (docker-py lifts it for log streams), so a quiet container is not cut.
        try:
            return self.client.api.logs(container_id, stdout=True, stderr=True, stream=True, follow=follow,
                                        tail="all" if tail is None else max(tail, 0))
        except NotFound:
            return EmptyLogStream()

    def app_ready(self, container: RunningContainer) -> bool:
        """Readiness as Datagrok reports it (docs/real-plugins.md, "Non-HTTP containers"): the HEALTHCHECK verdict
        when the image has one; otherwise a connection accepted on the app's own address and port. No HTTP answer is
        needed (PostgreSQL servers answer none). The published port is not asked first: its docker-proxy accepts
        before the app listens, and an accepted connection on the app's own address means the first proxied request
        is not refused."""
        if container.state != "running":
            return False
        if container.health is not None:  # the image has a HEALTHCHECK: Docker's verdict decides
            return container.health == "healthy"
        if container.app_ip and container.app_port:
            accepted = port_accepts(container.app_ip, container.app_port)
            if accepted is not None:
                return accepted
        if not container.host_port:
            return False
        return backend_accepts("127.0.0.1", container.host_port)

    def list_labelled(self, labels: dict[str, str]):
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        for attrs in self.client.api.containers(all=True, filters=filters):
            info = self.inspect(attrs["Id"])
            if info:
                yield info


def _container_ip(attrs: dict) -> str | None:
    settings = attrs.get("NetworkSettings") or {}
    network = ((attrs.get("Config") or {}).get("Labels") or {}).get(NETWORK_LABEL)
    if network and ((settings.get("Networks") or {}).get(network) or {}).get("IPAddress"):
        return settings["Networks"][network]["IPAddress"]  # run on the docker_network: its address there
    if settings.get("IPAddress"):
        return settings["IPAddress"]
    for network in (settings.get("Networks") or {}).values():
        if (network or {}).get("IPAddress"):
            return network["IPAddress"]
    return None


def _container_port(attrs: dict) -> int | None:
    """The one port the container publishes, as seen inside (the `8000/tcp` key of its port map)."""
    labelled = ((attrs.get("Config") or {}).get("Labels") or {}).get(APP_PORT_LABEL, "")
    if labelled.isdigit():  # run on the docker_network, publishing nothing
        return int(labelled)
    ports = ((attrs.get("NetworkSettings") or {}).get("Ports") or {}) or \
        ((attrs.get("HostConfig") or {}).get("PortBindings") or {})
    for key in ports:
        number, _, proto = key.partition("/")
        if proto in ("tcp", "") and number.isdigit():
            return int(number)
    return None


class EmptyLogStream:
    """The logs of a container the daemon does not know: nothing."""

    def __iter__(self):
        return iter(())

    def close(self) -> None:
        pass
