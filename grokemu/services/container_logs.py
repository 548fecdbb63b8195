"""A container's logs for a person at a terminal: `grokemu logs NAME [-f] [--tail N]` through
`GET /_grokemu/logs?container=NAME` (web/admin.py). Datagrok's own `GET /api/docker/containers/<id>/logs` stays
as the JS client needs it (services/spawner/service.py `logs`); this one finds the container by any name a person types
(domain/names.py), streams instead of building one string, and follows.

Following: the orchestrator's log stream (Orchestrator.stream_logs) is read on a pump thread into a small bounded
queue, so the reader can be told, once per IDLE_TICK without output, "nothing new" (an empty chunk): the server
uses that moment to see whether its caller is still there (server/takeover.py `answer_on_stream`), instead of
waiting in a read until the container prints again. Memory is bounded by the queue (QUEUE_CHUNKS chunks; Docker's
are at most 16 KiB, one log line or part of one), and a caller that reads slowly holds the pump back, not memory.
A follow ends when the stream ends (Docker ends it when the container stops), or when the entity has stopped or
been replaced for STOP_GRACE_TICKS ticks (a Swarm service scaled to 0 keeps its stream open), or when the reader
closes it. A container that ended by itself gets one last line saying how (domain/exits.py), marked `[grokemu]`.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Generator, Iterator

from grokemu.domain.container_config import DEFAULTS
from grokemu.domain.exits import how_it_ended
from grokemu.domain.lifecycle import ContainerStatus as S
from grokemu.domain.model import DockerContainer
from grokemu.domain.names import resolve_container
from grokemu.domain.ports import LogStream, Orchestrator, Store

log = logging.getLogger(__name__)

IDLE_TICK = 1.0  # s without output after which a follower is handed an empty chunk
STOP_GRACE_TICKS = 2  # idle ticks a follow goes on after the entity stopped (the last lines are still arriving)
QUEUE_CHUNKS = 64  # chunks read ahead of a follower
STOPPED = (S.USER_STOPPED, S.SYSTEM_STOPPED, S.ERROR)
_END = object()


class ContainerLogs:
    def __init__(self, store: Store, orchestrator: Orchestrator, *, tick: float = IDLE_TICK):
        self._store = store
        self._orchestrator = orchestrator
        self._tick = tick

    def find(self, name: str) -> DockerContainer:
        """The container `name` means (domain/names.py): UnknownContainer (404), AmbiguousContainer (400)."""
        containers = self._store.list_containers()
        found = resolve_container(name, [c.to_wire() for c in containers],
                                  [i.to_wire() for i in self._store.list_images()])
        return next(c for c in containers if c.id == found["id"])

    def stream(self, container: DockerContainer, tail: int | None, follow: bool) -> Generator[bytes, None, None]:
        """Its last `tail` lines (None: all), then, when `follow`, new output as it comes, with an empty chunk after
        each IDLE_TICK of silence. A container with nothing running has the logs kept on the entity, and no more."""
        orch = self._orchestrator
        if not container.docker_id or not orch.ping():
            lines = container.last_logs.splitlines(keepends=True)
            if tail is not None:
                lines = lines[len(lines) - tail:] if tail else []
            yield "".join(lines).encode()
            yield self._how_it_ended(container)
            return
        source = orch.stream_logs(container.docker_id, tail, follow)
        if follow:
            yield from self._follow(container, source)
            return
        try:
            yield b""  # the answer starts before the first line is in
            yield from source
        finally:
            source.close()

    def _follow(self, container: DockerContainer, source: LogStream) -> Iterator[bytes]:
        chunks: queue.Queue = queue.Queue(maxsize=QUEUE_CHUNKS)
        done = threading.Event()

        def put(item) -> bool:
            while not done.is_set():
                try:
                    chunks.put(item, timeout=self._tick)
                    return True
                except queue.Full:
                    continue
            return False

        def pump() -> None:
            try:
                for chunk in source:
                    if chunk and not put(chunk):
                        return
            except Exception as e:  # noqa: BLE001 - a broken stream ends the follow; the reader sees the end
                log.debug("log stream of %s ended: %r", container.name, e)
            finally:
                put(_END)

        threading.Thread(target=pump, name=f"grokemu-logs-{container.name}", daemon=True).start()
        stopped_for = 0
        try:
            yield b""  # the answer starts before the first line is in
            while True:
                try:
                    item = chunks.get(timeout=self._tick)
                except queue.Empty:
                    yield b""
                    stopped_for = stopped_for + 1 if self._stopped(container) else 0
                    if stopped_for >= STOP_GRACE_TICKS:
                        return
                    continue
                if item is _END:
                    yield self._how_it_ended(container)
                    return
                yield item
        finally:
            done.set()
            source.close()

    def _how_it_ended(self, container: DockerContainer) -> bytes:
        """`[grokemu] the container was killed for running out of memory: ...` for one in error, or one whose
        stream ended because it exited by itself; nothing for a stop or a container still running."""
        now = self._store.get_container(container.id)
        if now is None:
            return b""
        if now.status is S.ERROR and now.error:
            reason = now.error.splitlines()[0]
        elif now.status is S.STARTED and container.docker_id and now.docker_id == container.docker_id:
            running = self._orchestrator.inspect(container.docker_id)  # not yet seen by the spawner's watch
            if running is None or running.state not in ("exited", "dead"):
                return b""
            reason = "the container " + how_it_ended(running.exit_facts(), now.config.get("memory") or
                                                     DEFAULTS["memory"])
        else:
            return b""
        return f"[grokemu] {reason}\n".encode()

    def _stopped(self, container: DockerContainer) -> bool:
        now = self._store.get_container(container.id)
        return now is None or now.docker_id != container.docker_id or now.status in STOPPED
