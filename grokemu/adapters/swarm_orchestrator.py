"""The Orchestrator port on Docker Swarm, through the docker SDK's services API: one service per DockerContainer.

Mapping (docs/swarm.md):
- desiredInstances ↔ replicas: `run` creates the service (or scales an existing one of that name back to 1) and waits
  for a running task; `stop` scales it to 0 and waits for its task to end; `remove` deletes the service.
- cpu / memory → the service's resource limits; `shm_size` → a tmpfs at /dev/shm of that size; gpu → a generic
  resource `gpu` (a node must advertise it) or the same "no GPU" error as the Docker backend; restart policy `none`,
  so a crash becomes `error` with the task's logs.
- Networking, never published beyond the machine (docs/design.md decision 4): every service joins one network and
  publishes no port. With grokemu on the host of a single-node swarm that is a bridge network of scope `swarm`, whose
  task addresses the host reaches directly; with grokemu inside the swarm (compose/grokemu-stack.yml) it is an
  attachable overlay, and services are reached by name. The spawner gets the address in `RunningContainer.app_ip`.

Images come from the host daemon on a single node, or (several nodes) from grokemu's own registry by digest.
Images are built and inspected as on the Docker backend (the base class).
"""
from __future__ import annotations

import logging
import time
from typing import Any

from docker.errors import APIError, NotFound
from docker.types import CancellableStream, EndpointSpec, Mount, Resources, RestartPolicy, ServiceMode

from grokemu.adapters.docker_orchestrator import DockerOrchestrator, EmptyLogStream
from grokemu.domain.errors import NO_GPU_MESSAGE, ContainerStartFailed
from grokemu.domain.ports import RunningContainer, RunSpec

log = logging.getLogger(__name__)

PORT_LABEL = "grokemu.port"  # the app's port inside the task: services publish none
NETWORK_LABELS = {"grokemu.managed": "true", "grokemu.network": "true"}
# Swarm task states (docker/swarmkit api/types.proto) as the container states the spawner knows
_STARTING = {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
_RUNNING = {"running"}
NOT_A_MANAGER = ("This Docker daemon is not a swarm manager: run `docker swarm init` (or join it to a swarm as a "
                 "manager), or start grokemu with --orchestrator docker")


class SwarmUnavailable(ContainerStartFailed):
    status = 503


class SwarmOrchestrator(DockerOrchestrator):
    keeps_stopped = True  # a stopped service stays, scaled to 0; the next start scales it back to 1

    def __init__(self, network: str = "grokemu", network_driver: str = "bridge", base_url: str | None = None,
                 timeout: float = 120, start_timeout: float = 120, in_swarm: bool = False):
        super().__init__(base_url=base_url, timeout=timeout)
        self.network_name = network
        self._network_driver = network_driver  # bridge (one node, grokemu on the host) or overlay (grokemu inside)
        self._start_timeout = start_timeout
        self._in_swarm = in_swarm  # grokemu runs as a service on the same network: reach services by name

    # -- the swarm itself ------------------------------------------------------------------------------------------
    def swarm_problem(self) -> str | None:
        """None when this daemon can create services; otherwise what the user must do."""
        try:
            swarm = self.client.info().get("Swarm") or {}
        except (APIError, OSError) as e:
            return f"Docker daemon unreachable: {e}"
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            return NOT_A_MANAGER
        return None

    def _require_manager(self) -> None:
        problem = self.swarm_problem()
        if problem:
            raise SwarmUnavailable(problem)

    def ensure_swarm_network(self):
        """The one network every plugin service joins (created once, labelled as grokemu's)."""
        found = self.client.networks.list(names=[self.network_name])
        for network in found:
            if network.name == self.network_name:
                return network
        options: dict[str, Any] = {"driver": self._network_driver, "scope": "swarm", "labels": dict(NETWORK_LABELS)}
        if self._network_driver == "overlay":
            options["attachable"] = True
        log.info("creating swarm network %s (%s)", self.network_name, self._network_driver)
        return self.client.networks.create(self.network_name, **options)

    # -- services --------------------------------------------------------------------------------------------------
    def run(self, spec: RunSpec) -> RunningContainer:
        self._require_manager()
        self.ensure_swarm_network()
        env = [f"{k}={v}" for k, v in spec.env.items()]
        resources = Resources(cpu_limit=spec.nano_cpus or None, mem_limit=spec.mem_bytes or None,
                              generic_resources={"gpu": spec.gpus} if spec.gpus else None)
        mounts = [Mount(target="/dev/shm", source="", type="tmpfs", tmpfs_size=spec.shm_bytes)] if spec.shm_bytes \
            else []
        labels = {**spec.labels, PORT_LABEL: str(spec.container_port)}
        hosts = {name: self._host_address(target) for name, target in (spec.extra_hosts or {}).items()}
        hosts = {k: v for k, v in hosts.items() if v}
        warnings: list[str] = []
        if spec.storage_gb:
            warnings.append(f"storage {spec.storage_gb} GB not enforced: Swarm services have no per-task disk size")
        service_spec = dict(name=spec.name, labels=labels, container_labels=labels, env=env, resources=resources,
                            mounts=mounts, restart_policy=RestartPolicy(condition="none"),
                            networks=[self.network_name], mode=ServiceMode("replicated", replicas=1),
                            # DNS round robin, no virtual IP: the service name resolves to its task (no IPVS needed,
                            # which some kernels lack) and nothing is published on the ingress network
                            endpoint_spec=EndpointSpec(mode="dnsrr"), hosts=hosts or None,
                            # what a scale to 0 (stop) gives the task between SIGTERM and SIGKILL, in nanoseconds
                            stop_grace_period=int(spec.stop_timeout * 1e9))
        existing = self._service_named(spec.name)
        earlier = frozenset(t["ID"] for t in self._tasks(existing.id)) if existing is not None else frozenset()
        try:
            if existing is not None:
                # scaled to 0 by an earlier stop: the same service scales back to 1, running this start's spec
                # (image and environment, with the new USER_API_KEY)
                existing.update(image=spec.image, **service_spec)
                service = existing
            else:
                service = self.client.services.create(spec.image, **service_spec)
        except APIError as e:
            raise ContainerStartFailed(f"Swarm refused the service {spec.name}: {e.explanation or e}") from None
        try:
            running = self._wait_running(service.id, spec, earlier)
        except BaseException:
            self.remove(service.id)  # never leave a service that did not start
            raise
        running.warnings = warnings
        return running

    def _host_address(self, target: str) -> str | None:
        # `host-gateway` is a `docker run` feature. A task reaches the host at the default bridge's gateway, where
        # grokemu already listens for containers (its bridge listener): the host answers for all its own addresses
        return self.bridge_gateway() if target == "host-gateway" else target

    def _wait_running(self, service_id: str, spec: RunSpec, earlier: frozenset) -> RunningContainer:
        deadline = time.monotonic() + self._start_timeout
        while True:
            task = self._latest_task(service_id, ignore=earlier)
            if task is not None:
                state = task["Status"].get("State")
                err = task["Status"].get("Err") or task["Status"].get("Message") or ""
                if state in _RUNNING:
                    running = self.inspect(service_id)
                    if running is not None and running.state == "running" and (running.app_ip or self._in_swarm):
                        return running
                elif state not in _STARTING:
                    raise ContainerStartFailed(self._explain(spec, state, err))
                elif "no suitable node" in err:
                    raise ContainerStartFailed(self._explain(spec, state, err))
            if time.monotonic() > deadline:
                raise ContainerStartFailed(f"Swarm did not run a task of {spec.name} within {self._start_timeout:g} s"
                                           + (f" (last state: {state}: {err})" if task else ""))
            time.sleep(0.1)

    @staticmethod
    def _explain(spec: RunSpec, state: str, err: str) -> str:
        lowered = err.lower()
        # a limit above what a node has: the scheduler says "no suitable node", or the node's engine refuses the
        # task ("Range of CPUs is from 0.01 to 2.00", "Minimum memory limit allowed is 6MB")
        if "no suitable node" in lowered or "range of cpus" in lowered or "memory limit" in lowered:
            if spec.gpus and "gpu" in lowered or spec.gpus and "insufficient" in lowered:
                return NO_GPU_MESSAGE + f" (Swarm: {err})"
            return (f"No swarm node can run {spec.name} with its limits (cpu {spec.nano_cpus / 1e9:g}, memory "
                    f"{spec.mem_bytes // 2**20} MB): {err}")
        if "no such image" in lowered or "pull access denied" in lowered or "manifest unknown" in lowered:
            return (f"The swarm node cannot get the image {spec.image}: {err}. On several nodes, publish through "
                    f"grokemu's registry (grok publish with --registry) so every node can pull it")
        return f"Swarm task of {spec.name} ended {state}: {err or 'no reason given'}"

    def _service_named(self, name: str):
        for service in self.client.services.list(filters={"name": name}):
            if service.name == name:
                return service
        return None

    def _tasks(self, service_id: str) -> list[dict]:
        try:
            return self.client.api.tasks(filters={"service": service_id})
        except (NotFound, APIError):
            return []

    def _latest_task(self, service_id: str, ignore: frozenset = frozenset()) -> dict | None:
        """The service's newest task, leaving out `ignore` (the tasks an earlier run left: a start waits for its own)."""
        try:
            tasks = [t for t in self.client.api.tasks(filters={"service": service_id}) if t["ID"] not in ignore]
        except (NotFound, APIError):
            return None
        if not tasks:
            return None
        return max(tasks, key=lambda t: (t.get("Version", {}).get("Index", 0), t.get("CreatedAt", "")))

    def inspect(self, container_id: str) -> RunningContainer | None:
        try:
            service = self.client.api.inspect_service(container_id)
        except (NotFound, APIError) as e:
            if isinstance(e, NotFound) or getattr(e, "status_code", None) == 404:
                return None
            raise
        spec = service.get("Spec") or {}
        labels = spec.get("Labels") or {}
        replicas = ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0)
        task = self._latest_task(service["ID"])
        state, health, ip = "exited", None, None
        status = (task or {}).get("Status") or {}
        container_status = status.get("ContainerStatus") or {}
        exit_code = container_status.get("ExitCode")
        oom_killed = None  # the task does not say; its container, when still on this node, does
        if task is not None and replicas:
            task_state = status.get("State")
            state = "running" if task_state in _RUNNING else "created" if task_state in _STARTING else "exited"
            if container_status.get("ContainerID") and state == "running":
                health, ip = self._task_container(container_status["ContainerID"])
        if state == "exited" and container_status.get("ContainerID"):
            oom_killed = self._task_container_oom(container_status["ContainerID"])
        limits = ((spec.get("TaskTemplate") or {}).get("Resources") or {}).get("Limits") or {}
        port = labels.get(PORT_LABEL)
        address = spec.get("Name") if self._in_swarm and state == "running" else ip
        return RunningContainer(id=service["ID"], name=spec.get("Name", ""), labels=labels, state=state,
                                host_port=None, health=health, exit_code=exit_code, app_ip=address,
                                app_port=int(port) if port and port.isdigit() else None, oom_killed=oom_killed,
                                mem_limit=limits.get("MemoryBytes") or None,
                                status_message=status.get("Err") or "" if state == "exited" else "")

    def _task_container_oom(self, container_id: str) -> bool | None:
        """State.OOMKilled of an ended task's container on this node; None when it is gone or elsewhere."""
        try:
            attrs = self.client.api.inspect_container(container_id)
        except (NotFound, APIError):
            return None
        return bool((attrs.get("State") or {}).get("OOMKilled"))

    def _task_container(self, container_id: str) -> tuple[str | None, str | None]:
        """(health, address on the plugin network) of a task's container on this node; (None, None) when the task
        runs on another node (then grokemu, inside the swarm, reaches the service by name)."""
        try:
            attrs = self.client.api.inspect_container(container_id)
        except (NotFound, APIError):
            return None, None
        health = ((attrs.get("State") or {}).get("Health") or {}).get("Status")
        networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
        ip = (networks.get(self.network_name) or {}).get("IPAddress") or None
        return health, ip

    def stop(self, container_id: str, timeout: float = 10) -> None:
        """Scale to 0 and wait (at most `timeout` + a margin) until its task has ended."""
        try:
            service = self.client.services.get(container_id)
            service.scale(0)
        except (NotFound, APIError) as e:
            if isinstance(e, NotFound) or getattr(e, "status_code", None) == 404:
                return
            raise
        deadline = time.monotonic() + timeout + 10
        while time.monotonic() < deadline:
            task = self._latest_task(container_id)
            if task is None or task["Status"].get("State") not in _RUNNING | _STARTING:
                return
            time.sleep(0.1)

    def remove(self, container_id: str) -> None:
        try:
            self.client.api.remove_service(container_id)
        except (NotFound, APIError) as e:
            if isinstance(e, NotFound) or getattr(e, "status_code", None) == 404:
                return
            raise
        self._wait_gone(container_id)

    def _wait_gone(self, service_id: str, timeout: float = 20) -> None:
        """A removed service's task containers go away shortly after; a new service of the same name must not race
        the old one's task for the name."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = self.client.api.containers(all=True, filters={"label": f"com.docker.swarm.service.id={service_id}"})
            if not left:
                return
            time.sleep(0.1)

    def logs(self, container_id: str, tail: int) -> str:
        try:
            chunks = self.client.api.service_logs(container_id, stdout=True, stderr=True, tail=str(tail or "all"),
                                                  timestamps=False)
            data = b"".join(chunks) if not isinstance(chunks, bytes) else chunks
        except (NotFound, APIError):
            return ""
        return data.decode("utf-8", "replace")

    def stream_logs(self, container_id: str, tail: int | None, follow: bool):
        # docker-py's service_logs returns a bare generator that cannot be cancelled from another thread: the same
        # request it makes (/services/<id>/logs; plugin services have no TTY, so the output is multiplexed), wrapped
        # in its CancellableStream as container logs are. A followed service scaled to 0 keeps its log stream open;
        # the log service ends the follow when the entity stops (services/container_logs.py).
        api: Any = self.client.api  # its private request helpers are not in types-docker
        params = {"details": False, "follow": follow, "stdout": True, "stderr": True, "timestamps": False,
                  "tail": "all" if tail is None else max(tail, 0)}
        try:
            response = api._get(api._url("/services/{0}/logs", container_id), params=params, stream=True)
            api._raise_for_status(response)
        except (NotFound, APIError):
            return EmptyLogStream()
        return CancellableStream(api._multiplexed_response_stream_helper(response), response)

    def list_labelled(self, labels: dict[str, str]):
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        for service in self.client.api.services(filters=filters):
            info = self.inspect(service["ID"])
            if info:
                yield info

    def app_ready(self, container: RunningContainer) -> bool:
        if container.state != "running":
            return False
        return super().app_ready(container)
