"""An in-memory Orchestrator: the fake used by unit and integration tests. It passes the same contract tests as
the Docker adapter (tests/contracts/), so what tests learn from it holds for the daemon.

Builds follow Docker's rules closely enough to fail the same way: the FROM image must exist (`scratch` always
does), every COPY/ADD source must exist in the context, and a `RUN` whose command is `false` or `exit N` (N ≠ 0)
fails. EXPOSE and HEALTHCHECK lines become the image's config.
"""
from __future__ import annotations

import itertools
import shlex
import threading
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from grokemu.domain.errors import NO_GPU_MESSAGE, ContainerStartFailed, DockerUnavailable
from grokemu.domain.ports import BuildResult, ImageInfo, RunningContainer, RunSpec


@dataclass
class _Image:
    id: str
    tags: set[str]
    info: ImageInfo


@dataclass
class _Container:
    running: RunningContainer
    spec: RunSpec
    log: list[str] = field(default_factory=list)


class MemoryOrchestrator:
    keeps_stopped = False

    def __init__(self, reachable: bool = True):
        self.reachable = reachable
        self.images: dict[str, _Image] = {}
        self.containers: dict[str, _Container] = {}
        self.run_calls = 0
        self.log_streams_opened = 0  # test control: a test waits for a follower to attach before the app prints
        self._ports = itertools.count(40000)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # a log line, a stop or a removal: followers look again
        self.fail_next_run: str | None = None  # test control: the next run() raises this message
        # test control: False = nothing accepts on any container's port, and a HEALTHCHECK stays `starting`. A
        # container with a HEALTHCHECK is held in `checking`; one without becomes `started` with a warning after
        # listen_timeout (services/spawner/drivers.py `_check`)
        self.apps_ready = True
        self.fixed_host_port: int | None = None  # test control: publish every container on this port (a test server)
        self.gpu_available = False  # like a laptop's daemon: no GPU runtime
        self.stops: list[tuple[str, float]] = []  # (container id, timeout) of every stop of a running container

    def ping(self) -> bool:
        return self.reachable

    def _daemon(self) -> None:
        """As the Docker adapter: a call while the daemon is gone is DockerUnavailable (503), never a hang."""
        if not self.reachable:
            raise DockerUnavailable("Docker unreachable: [Errno 2] No such file or directory")

    # images ---------------------------------------------------------------------------------------------------
    def add_image(self, ref: str, exposed_ports: list[int], labels: dict[str, str] | None = None,
                  healthcheck: bool = False) -> str:
        image_id = f"sha256:{uuid.uuid4().hex}{uuid.uuid4().hex}"
        with self._lock:
            self.images[image_id] = _Image(image_id, {_norm(ref)},
                                           ImageInfo(image_id, sorted(exposed_ports), labels or {}, healthcheck))
        return image_id

    def _find_image(self, ref: str) -> _Image | None:
        ref = _norm(ref)
        with self._lock:
            return next((i for i in self.images.values() if ref in i.tags or ref == i.id), None)

    def inspect_image(self, ref: str) -> ImageInfo | None:
        found = self._find_image(ref)
        return replace(found.info) if found else None

    def build_image(self, context_dir: str, tag: str, labels: dict[str, str]) -> BuildResult:
        context = Path(context_dir)
        try:
            lines = (context / "Dockerfile").read_text().splitlines()
        except OSError as e:
            return BuildResult(False, f"unable to read Dockerfile: {e}\n")
        log, ports, healthcheck = [], [], False
        for n, raw in enumerate(l.strip() for l in lines):
            if not raw or raw.startswith("#"):
                continue
            instruction, _, rest = raw.partition(" ")
            instruction = instruction.upper()
            log.append(f"Step {n + 1} : {raw}\n")
            if instruction == "FROM":
                base = rest.split()[0]
                if base != "scratch" and self._find_image(base) is None:
                    return BuildResult(False, "".join(log) + f"pull access denied for {base}\n")
            elif instruction in ("COPY", "ADD"):
                sources = [s for s in shlex.split(rest) if not s.startswith("--")][:-1]
                for src in sources:
                    if not (context / src).exists():
                        return BuildResult(False, "".join(log) +
                                           f"COPY failed: file not found in build context: stat {src}\n")
            elif instruction == "RUN":
                words = shlex.split(rest)
                if words[:1] == ["false"] or (words[:1] == ["exit"] and words[1:2] != ["0"]):
                    return BuildResult(False, "".join(log) +
                                       f"The command '/bin/sh -c {rest}' returned a non-zero code: 1\n")
            elif instruction == "EXPOSE":
                ports += [int(p.split("/")[0]) for p in rest.split()]
            elif instruction == "HEALTHCHECK":
                healthcheck = rest.strip().upper() != "NONE"
        image_id = self.add_image(tag, sorted(set(ports)), labels, healthcheck)
        log.append(f"Successfully built {image_id[7:19]}\nSuccessfully tagged {tag}\n")
        return BuildResult(True, "".join(log), image_id)

    def pull_image(self, ref: str) -> bool:
        return self._find_image(ref) is not None

    def tag_image(self, source: str, target: str) -> None:
        found = self._find_image(source)
        if found:
            with self._lock:
                found.tags.add(_norm(target))

    def remove_networks(self, labels: dict[str, str]) -> int:  # noqa: ARG002  (the port's signature)
        return 0  # containers here have no networks

    def remove_images(self, labels: dict[str, str]) -> int:
        with self._lock:
            doomed = [i for i, img in self.images.items() if _matches(img.info.labels, labels)]
            for image_id in doomed:
                del self.images[image_id]
        return len(doomed)

    # containers -----------------------------------------------------------------------------------------------
    def run(self, spec: RunSpec) -> RunningContainer:
        self._daemon()
        with self._lock:
            self.run_calls += 1
            if self.fail_next_run:
                message, self.fail_next_run = self.fail_next_run, None
                raise RuntimeError(message)
            image = self._find_image(spec.image)
            if image is None:
                raise RuntimeError(f"No such image: {spec.image}")
            if spec.gpus and not self.gpu_available:
                raise ContainerStartFailed(NO_GPU_MESSAGE)
            for c in list(self.containers.values()):
                if c.running.name == spec.name:
                    del self.containers[c.running.id]
            container_id = uuid.uuid4().hex * 2
            running = RunningContainer(id=container_id, name=spec.name, labels=dict(spec.labels), state="running",
                                       host_port=self.fixed_host_port or next(self._ports),
                                       health="starting" if image.info.healthcheck else None,
                                       app_ip="10.0.0.2", app_port=spec.container_port, oom_killed=False,
                                       mem_limit=spec.mem_bytes or None)
            self.containers[container_id] = _Container(running, spec, [f"started {spec.name}\n"])
            return replace(running)

    def inspect(self, container_id: str) -> RunningContainer | None:
        self._daemon()
        with self._lock:
            c = self.containers.get(container_id)
            if c is None:
                return None
            running = replace(c.running)
            if running.health is not None and running.state == "running":
                running.health = "healthy" if self.apps_ready else "starting"
            return running

    def stop(self, container_id: str, timeout: float = 10) -> None:  # noqa: ARG002  (the port's signature)
        self._daemon()
        with self._lock:
            c = self.containers.get(container_id)
            if c and c.running.state == "running":
                self.stops.append((container_id, timeout))
                c.running.state = "exited"
                c.running.exit_code = 0
                c.log.append("stopped\n")
                self._changed.notify_all()

    def remove(self, container_id: str) -> None:
        self._daemon()
        with self._lock:
            self.containers.pop(container_id, None)
            self._changed.notify_all()

    def logs(self, container_id: str, tail: int) -> str:
        self._daemon()
        with self._lock:
            c = self.containers.get(container_id)
            lines = c.log if c else []
            return "".join(lines[-tail:] if tail > 0 else lines)

    def stream_logs(self, container_id: str, tail: int | None, follow: bool) -> _MemoryLogStream:
        return _MemoryLogStream(self, container_id, tail, follow)

    def list_labelled(self, labels: dict[str, str]):
        self._daemon()
        with self._lock:
            return [replace(c.running) for c in self.containers.values() if _matches(c.running.labels, labels)]

    def app_ready(self, container: RunningContainer) -> bool:
        with self._lock:
            c = self.containers.get(container.id)
            return bool(c and c.running.state == "running" and self.apps_ready)  # the HEALTHCHECK agrees

    # test controls --------------------------------------------------------------------------------------------
    def crash(self, container_id: str, exit_code: int = 1, log: str = "Traceback: boom\n",
              oom_killed: bool = False) -> None:
        """The container ends by itself; `oom_killed`: as the kernel's OOM killer ends one (code 137)."""
        with self._lock:
            c = self.containers[container_id]
            c.log.append(log)
            c.running.state = "exited"
            c.running.exit_code = 137 if oom_killed else exit_code
            c.running.oom_killed = oom_killed
            self._changed.notify_all()

    def daemon_down(self, stop_containers: bool = True) -> None:
        """The daemon goes away. `stop_containers`: as dockerd on SIGTERM without live-restore, it stops every
        running container first (exit code 143: SIGTERM); otherwise they keep running (live-restore, a SIGKILL)."""
        with self._lock:
            self.reachable = False
            if stop_containers:
                for c in self.containers.values():
                    if c.running.state == "running":
                        c.running.state, c.running.exit_code = "exited", 143
                        c.log.append("terminated by the daemon\n")
            self._changed.notify_all()

    def daemon_up(self, restart_containers: bool = False) -> None:
        """The daemon is back. `restart_containers`: as a restart policy does, it starts the stopped containers again
        (the same container, a new host port)."""
        with self._lock:
            if restart_containers:
                for c in self.containers.values():
                    if c.running.state == "exited":
                        c.running.state, c.running.exit_code = "running", 0
                        if self.fixed_host_port is None:
                            c.running.host_port = next(self._ports)
            self.reachable = True

    def emit(self, container_id: str, text: str) -> None:
        """The app in the container prints `text` (one log entry)."""
        with self._lock:
            self.containers[container_id].log.append(text)
            self._changed.notify_all()

    def spec_of(self, container_id: str) -> RunSpec:
        return self.containers[container_id].spec


class _MemoryLogStream:
    """A container's log entries from `tail` lines before the end, then, when following, each new one as it is
    appended, until the container is no longer running (or gone) and everything has been read."""

    def __init__(self, orch: MemoryOrchestrator, container_id: str, tail: int | None, follow: bool):
        self._orch = orch
        self._id = container_id
        self._follow = follow
        self._closed = False
        with orch._lock:
            self._c = orch.containers.get(container_id)  # kept: what it printed before a removal is still read
            count = len(self._c.log) if self._c else 0
            orch.log_streams_opened += 1
        self._next = 0 if tail is None else max(0, count - max(tail, 0))

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        c = self._c
        with self._orch._changed:
            while True:
                if self._closed or c is None:
                    raise StopIteration
                if self._next < len(c.log):
                    self._next += 1
                    return c.log[self._next - 1].encode()
                gone = self._orch.containers.get(self._id) is not c
                if not self._follow or gone or c.running.state != "running":
                    raise StopIteration
                self._orch._changed.wait()

    def close(self) -> None:
        with self._orch._changed:
            self._closed = True
            self._orch._changed.notify_all()


def _norm(ref: str) -> str:
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last or ref.startswith("sha256:") else f"{ref}:latest"


def _matches(have: dict[str, str], want: dict[str, str]) -> bool:
    return all(have.get(k) == v for k, v in want.items())
