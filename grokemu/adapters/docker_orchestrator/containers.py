"""DockerOrchestrator (adapters/docker_orchestrator/): the Orchestrator port's container calls, on top of the image
and network calls it inherits: run one publishing its port on loopback (or on the shared network), inspect, stop,
remove, logs, readiness, and the labelled ones."""
from __future__ import annotations

import math

from docker.errors import APIError, NotFound
from docker.types import DeviceRequest

from grokemu.adapters.docker_orchestrator.daemon import translates_daemon_errors
from grokemu.adapters.docker_orchestrator.images import ImageCalls
from grokemu.adapters.docker_orchestrator.networks import NetworkCalls
from grokemu.adapters.docker_orchestrator.probes import backend_accepts, port_accepts
from grokemu.domain.errors import NO_GPU_MESSAGE, ContainerStartFailed
from grokemu.domain.ports import RunningContainer, RunSpec

NETWORK_LABEL = "grokemu.network"  # the docker_network a container was run on (its address there is the app's)
APP_PORT_LABEL = "grokemu.app_port"  # the port the app listens on inside, when nothing is published


@translates_daemon_errors
class DockerOrchestrator(ImageCalls, NetworkCalls):
    keeps_stopped = False  # a stopped container is removed; the next start runs a new one

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

    def _create_and_start(self, image: str, kwargs: dict):
        try:
            container = self.slow_client.containers.create(image, **kwargs)
        except APIError as e:
            if e.status_code == 409:  # a container of that name is left over: replace it
                self.client.containers.get(kwargs["name"]).remove(force=True)
                container = self.slow_client.containers.create(image, **kwargs)
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
            self.slow_client.api.stop(container_id, timeout=max(0, math.ceil(timeout)))
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

    def list_labelled(self, labels: dict[str, str]) -> list[RunningContainer]:
        # a list, not a generator: the daemon going away mid-listing is raised here (translates_daemon_errors)
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        found = (self.inspect(attrs["Id"]) for attrs in self.client.api.containers(all=True, filters=filters))
        return [info for info in found if info]


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
